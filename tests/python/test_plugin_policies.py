"""Master-side run policies: token budgets are cluster totals enforced on
the merged counts, and cancellations at the end of a run do not turn the
exit code into a failure (decided on the failure kind), and the master's
failures table is bounded per scenario."""

import types

from tokenswarm_master.aggregate import FailureRows
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


def test_only_cancellations_decides_on_the_kind_not_the_text():
    assert only_cancellations({"cancelled": 7}, 7)
    assert not only_cancellations({"cancelled": 7, "http_500": 1}, 8)
    # a failure no llm report classified is not known to be a cancellation
    assert not only_cancellations({"cancelled": 7}, 8)
    assert not only_cancellations({}, 0)
    assert only_cancellations({"cancelled": 2, "timeout": 0}, 2)


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


def row(name, error, kind, n=1, first=1.0, last=2.0):
    return {"method": "POST", "name": name, "error": error, "kind": kind,
            "occurrences": n, "first_seen": first, "last_seen": last}


def test_failure_rows_are_capped_per_scenario_across_workers_and_counts_are_kept():
    rows = FailureRows(cap=4)
    total, table = 0, {}
    # Two workers, each sending distinct random summaries of two kinds.
    for report in range(50):
        errors = {}
        for i in range(6):
            kind = f"http_{500 + i}" if i % 2 else "error_event"
            text = f"{kind}: random {report}-{i}"
            errors[f"POST.Chat.{text}"] = row("Chat", text, kind, n=i + 1)
            total += i + 1
        rows.fold(errors)
        for key, r in errors.items():  # what Locust's merge then does
            table[key] = table.get(key, 0) + r["occurrences"]
    assert len(table) <= 4 + 2, table
    assert "POST.Chat.http_status: other" in table and "POST.Chat.error_event: other" in table
    assert sum(table.values()) == total


def test_failure_rows_keep_admitted_rows_and_workers_overflow_rows():
    rows = FailureRows(cap=1)
    e = {"POST.A.timeout: x": row("A", "timeout: x", "timeout"),
         "POST.A.timeout: other": row("A", "timeout: other", "timeout", n=5, first=0.5, last=9.0)}
    rows.fold(e)
    assert e == {"POST.A.timeout: x": row("A", "timeout: x", "timeout"),
                 "POST.A.timeout: other": row("A", "timeout: other", "timeout", n=5, first=0.5, last=9.0)}
    e = {"POST.A.timeout: y": row("A", "timeout: y", "timeout", n=2, first=0.1, last=3.0),
         "POST.A.timeout: other": row("A", "timeout: other", "timeout", n=5, first=0.5, last=9.0),
         "POST.B.timeout: y": row("B", "timeout: y", "timeout")}
    rows.fold(e)
    assert e["POST.A.timeout: other"]["occurrences"] == 7
    assert (e["POST.A.timeout: other"]["first_seen"], e["POST.A.timeout: other"]["last_seen"]) == (0.1, 9.0)
    assert "POST.A.timeout: y" not in e and "POST.B.timeout: y" in e  # the cap is per scenario
    rows.reset()
    e = {"POST.A.timeout: y": row("A", "timeout: y", "timeout")}
    rows.fold(e)
    assert "POST.A.timeout: y" in e
