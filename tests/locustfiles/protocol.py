"""A minimal master locustfile for protocol tests: two user classes, one of
which (Mystery) the scenarios sent to workers do not define, so that tests
can check the worker's unknown-class report. The real master locustfile is
locustfiles/llm.py."""

import os

from locust import User, events, task


class ChatShort(User):
    @task
    def noop(self):
        pass


if os.environ.get("TS_WITH_MYSTERY"):

    class Mystery(User):
        @task
        def noop(self):
            pass


@events.test_start.add_listener
def send_config(environment, **_kwargs):
    environment.parsed_options.tokenswarm_config = {
        "v": 1,
        "cluster_users": environment.runner.target_user_count,
        "scenarios": [
            {"name": "ChatShort", "provider": "openai-chat", "model": "m", "prompt_length": 16, "output_length": 4}
        ],
        "safety": {"warmup": False},
    }
