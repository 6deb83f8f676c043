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
