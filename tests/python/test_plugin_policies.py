"""Master-side run policies: token budgets are cluster totals enforced on
the merged counts, and cancellations at the end of a run do not turn the
exit code into a failure."""

import types

from tokenswarm_master.plugin import budget_reached, only_cancellations


def cfg(inp=None, out=None):
    return {"safety": {"input_token_budget": inp, "output_token_budget": out}}


def test_no_budget_never_trips():
    assert budget_reached(cfg(), {"input_tokens": 10**9, "output_tokens": 10**9}) is None


def test_output_budget_trips_when_reached_and_names_the_numbers():
    assert budget_reached(cfg(out=1000), {"input_tokens": 5, "output_tokens": 999}) is None
    msg = budget_reached(cfg(out=1000), {"input_tokens": 5, "output_tokens": 1000})
    assert "1000 output tokens" in msg and "--llm-output-token-budget" in msg and "is 1000" in msg


def test_input_budget_is_checked_too():
    msg = budget_reached(cfg(inp=50), {"input_tokens": 70, "output_tokens": 0})
    assert msg.startswith("token budget reached: 70 input tokens")


def err(text):
    return types.SimpleNamespace(error=text, occurrences=1)


def test_only_cancellations():
    assert only_cancellations([err("cancelled while streaming"), err("cancelled before the response")])
    assert not only_cancellations([err("cancelled while streaming"), err("HTTP 500 Internal Server Error: x")])
    assert not only_cancellations([])


class FlushRunner:
    """Stands in for Locust's MasterRunner: clients with states, and a
    send_message that lets chosen workers answer as a tokenswarm worker does."""

    def __init__(self, states, answering, state):
        self.clients = types.SimpleNamespace(
            all=[types.SimpleNamespace(id=i, state=s) for i, s in states.items()]
        )
        self.answering, self.state, self.sent = answering, state, []

    def send_message(self, kind, data, client_id):
        self.sent.append((kind, client_id))
        if client_id in self.answering:
            self.state.flushed.add(client_id)


def test_flush_asks_only_running_workers_and_returns_the_silent_ones():
    from locust.runners import STATE_INIT, STATE_RUNNING, STATE_SPAWNING, STATE_STOPPED

    from tokenswarm_master.plugin import flush_workers

    state = types.SimpleNamespace(flushed=set())
    runner = FlushRunner(
        {"a": STATE_RUNNING, "b": STATE_SPAWNING, "c": STATE_STOPPED, "d": STATE_INIT, "e": STATE_RUNNING},
        answering={"a", "b"},
        state=state,
    )
    missing = flush_workers(runner, state, wait_s=0.2)
    assert sorted(c for _, c in runner.sent) == ["a", "b", "e"]
    assert all(k == "tokenswarm_flush" for k, _ in runner.sent)
    assert missing == {"e"}


def test_flush_after_a_normal_stop_sends_nothing():
    from locust.runners import STATE_INIT

    from tokenswarm_master.plugin import flush_workers

    state = types.SimpleNamespace(flushed=set())
    runner = FlushRunner({"a": STATE_INIT}, answering=set(), state=state)
    assert flush_workers(runner, state, wait_s=5.0) == set()
    assert runner.sent == []
