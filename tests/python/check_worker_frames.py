"""Decodes frames written by tokenswarm (Rust) with Locust's own code.

Called by `tests/wire_golden.rs` with a directory of `<name>.msgpack` files.
Each frame is unpacked by `locust.rpc.protocol.Message.unserialize` (the
master's decoder), then checked the way the master uses it: the stats frame
is fed to Locust's real distributed-stats listener, so a wrong key, type or
unit fails here exactly as it would on a master. Exits non-zero on failure.
"""

import os
import sys

from locust.env import Environment
from locust.rpc.protocol import Message
from locust.stats import setup_distributed_stats_event_listeners


def load(directory, name):
    with open(os.path.join(directory, f"{name}.msgpack"), "rb") as f:
        return Message.unserialize(f.read())


def main(directory):
    ready = load(directory, "client_ready")
    assert ready.type == "client_ready" and ready.data == "2.47.0" and ready.node_id == "vm_1", ready

    hb = load(directory, "heartbeat")
    assert hb.data["state"] == "running", hb.data
    assert isinstance(hb.data["current_cpu_usage"], float) and hb.data["current_cpu_usage"] == 12.5
    assert hb.data["current_memory_usage"] == 1048576

    sc = load(directory, "spawning_complete")
    assert sc.data == {"user_classes_count": {"ChatShort": 3, "Msgs": 1}, "user_count": 4}, sc.data

    for name in ("spawning", "client_stopped", "quit"):
        m = load(directory, name)
        assert m.type == name and m.data is None, m

    exc = load(directory, "exception")
    assert exc.data == {"msg": "unknown user class 'X'", "traceback": ""}, exc.data

    custom = load(directory, "custom")
    assert custom.type == "tokenswarm_warning" and custom.data == {"scenario": "ChatShort", "message": "m"}

    stats = load(directory, "stats")
    data = stats.data
    for key in ("stats", "stats_total", "errors", "user_classes_count", "user_count", "llm"):
        assert key in data, key
    hist = data["llm"]["scenarios"]["ChatShort"]["metrics"]["ttft"]["hist"]
    assert all(isinstance(k, int) for k in hist), hist
    env = Environment(events=None)
    setup_distributed_stats_event_listeners(env.events, env.stats)
    env.events.worker_report.fire(client_id="vm_1", data=data)
    entry = env.stats.get("ChatShort", "POST")
    assert entry.num_requests == 3 and entry.num_failures == 1, (entry.num_requests, entry.num_failures)
    assert env.stats.total.num_requests == 3 and env.stats.total.num_failures == 1
    assert entry.get_response_time_percentile(0.5) == 20, entry.response_times
    assert abs(entry.total_response_time - 72.5) < 1e-9, entry.total_response_time
    assert entry.max_response_time == 40.0 and entry.min_response_time == 12.5
    errors = list(env.stats.errors.values())
    assert len(errors) == 1 and errors[0].occurrences == 1 and errors[0].error == "http_500: HTTP 500 Internal Server Error", errors
    assert [e["kind"] for e in data["errors"].values()] == ["http_500"], data["errors"]
    print("ok: all frames decode as the master expects")


if __name__ == "__main__":
    main(sys.argv[1])
