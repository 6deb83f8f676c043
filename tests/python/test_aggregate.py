"""Unit tests of the master-side merge of workers' `llm` reports."""

import os
import types

import llm_reports
import pytest

from conftest import REPO
from tokenswarm_master import config, render
from tokenswarm_master.aggregate import Aggregator, Dist

BASE = 1_700_000_000


def merged():
    agg = Aggregator()
    agg.started_at = BASE  # the run started at BASE; reports end at BASE + 10
    for rep in llm_reports.all_reports(BASE):
        assert agg.merge_report(rep, now=BASE + llm_reports.RUN_SPAN_S)
    return agg


def test_whole_run_rates_divide_by_the_run_not_by_completion_seconds():
    """Long streams that all end in one second must not look 10x faster."""
    agg = Aggregator()
    agg.started_at = BASE
    rep = {"v": 1, "scenarios": {"Long": {"requests": 4, "good": 4, "output_tokens": 6000,
                                          "out_tokens_per_sec": {BASE + 21: 6000}, "good_per_sec": {BASE + 21: 4}}}}
    assert agg.merge_report(rep, now=BASE + 22)
    doc = render.document(state_for(agg), now=BASE + 30)
    assert doc["total"]["out_tps_total"] == pytest.approx(6000 / 22, abs=1e-3)
    assert doc["total"]["goodput_rps"] == pytest.approx(4 / 22, abs=1e-3)


def state_for(agg, slo=None):
    return types.SimpleNamespace(aggregator=agg, slo=slo or {}, warnings=[], abort=None, config_error=None)


@pytest.mark.parametrize("name", ["ChatShort", "ChatLong", "Total"])
def test_merge_gives_exact_counts_sums_and_percentiles(name):
    want = llm_reports.expected(BASE)[name]
    doc = render.document(state_for(merged()), now=BASE + 100)
    got = doc["total"] if name == "Total" else doc["scenarios"][name]
    for key in ("requests", "failures", "good", "input_tokens", "output_tokens", "cached_tokens", "output_divergent"):
        assert got[key] == want[key], key
    for m, w in want["metrics"].items():
        g = got["metrics"][m]
        assert g["count"] == w["count"], m
        for key in ("min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms"):
            assert g[key] == pytest.approx(w[key]), (m, key)
    agg = merged()
    d = agg.total if name == "Total" else agg.scenarios[name]
    for m, w in want["metrics"].items():
        assert d.metrics[m].sum == w["sum_us"]
    assert got["out_tps_total"] == want["out_tps_total"]
    assert got["goodput_rps"] == want["goodput_rps"]
    assert got["goodput_pct"] == want["goodput_pct"]


def test_known_values_spelled_out():
    """The same merge, with hand-checked numbers (not just self-consistency)."""
    doc = render.document(state_for(merged()), now=BASE + 100)
    short = doc["scenarios"]["ChatShort"]
    assert (short["requests"], short["failures"], short["good"]) == (9, 1, 5)
    assert short["failure_kinds"] == {"http_429": 1}
    ttft = short["metrics"]["ttft"]  # samples 50 60 70 80 90 100 110 1200
    assert (ttft["count"], ttft["p50_ms"], ttft["p90_ms"], ttft["max_ms"]) == (8, 80.0, 1200.0, 1200.0)
    total = doc["total"]
    assert total["requests"] == 9 + 2 + 3  # ChatLong: 2 ok on worker 0, 1 ok + 2 failed on worker 1
    assert total["failure_kinds"] == {"error_event": 2, "http_429": 1}
    assert total["output_tokens"] == 8 * 64 + 3 * 256


def test_reset_clears_everything():
    agg = merged()
    agg.sample(BASE + 3, 4)
    agg.reset()
    doc = render.document(state_for(agg), now=BASE)
    assert doc["scenarios"] == {} and doc["total"]["requests"] == 0
    assert doc["total"]["metrics"]["ttft"]["p50_ms"] is None
    assert len(agg.history) == 0 and agg.reports == 0
    agg.sample(BASE + 4, 4)
    agg.reset(keep_history=True)  # what "Reset stats" does
    assert len(agg.history) == 1


def test_other_versions_are_ignored():
    agg = Aggregator()
    assert not agg.merge_report({"v": 2, "scenarios": {}})
    assert not agg.merge_report([1, 2])
    assert agg.ignored == 2 and agg.reports == 0


def test_percentiles_are_clamped_to_observed_range():
    d = Dist()
    # 1_995 µs rounds to bucket 2_000, above the true max of 1_995
    d.merge({"count": 2, "sum": 2_990, "min": 995, "max": 1_995, "hist": {995: 1, 2_000: 1}})
    assert d.percentile(0.99) == 1_995
    assert d.percentile(0.01) == 995


def test_string_bucket_keys_merge_like_ints():
    d = Dist()
    d.merge({"count": 1, "sum": 5, "min": 5, "max": 5, "hist": {"5": 1}})
    d.merge({"count": 1, "sum": 5, "min": 5, "max": 5, "hist": {5: 1}})
    assert d.hist == {5: 2}


def test_current_rate_uses_the_ten_seconds_ending_two_seconds_ago():
    agg = Aggregator()
    agg.merge_report({"v": 1, "scenarios": {"A": {"requests": 1, "out_tokens_per_sec": {100: 50, 109: 50, 110: 999}}}})
    assert agg.total.current_rate("out_tokens_per_sec", now=112) == 10.0


def test_rows_and_csv_carry_the_merged_numbers():
    state = state_for(merged(), slo={"ttft_ms": 100.0})
    state.warnings = [{"scenario": "ChatShort", "message": "output tokens 10 % off"}]
    state.abort = {"reason": "error limit", "worker": "w1"}
    doc = render.document(state, now=BASE + 100)
    rows = render.table_rows(doc)
    assert len({r["name"] for r in rows}) == len(rows), "row names are React keys: unique"
    ttft = next(r for r in rows if r["scenario"] == "ChatShort" and r["metric"] == "TTFT")
    assert (ttft["p50"], ttft["max"]) == ("80.00", "1,200.00")
    assert any(r["metric"] == "ABORTED" and "error limit" in r["value"] for r in rows)
    assert any(r["metric"] == "Warning" and "10 % off" in r["value"] for r in rows)
    assert any(r["metric"] == "Token divergence" for r in rows)
    text = render.csv_text(doc)
    assert text.splitlines()[-1].startswith("Aggregated,14,3,8,")


def test_phases_parse_and_token_estimate():
    assert config.parse_phases("200:30,400:30:10") == [
        {"rate": 200.0, "duration_s": 30.0, "ramp_s": 0.0}, {"rate": 400.0, "duration_s": 30.0, "ramp_s": 10.0}]
    # 200*30 + (200+400)/2*10 + 400*20 = 6000 + 3000 + 8000
    assert config.planned_requests(config.parse_phases("200:30,400:30:10")) == 17000
    with pytest.raises(config.ConfigError, match="rate:duration_s"):
        config.parse_phases("200")


def test_overrides_validate_with_option_value_and_valid_values():
    doc = config.load_yaml(os.path.join(REPO, "locustfiles", "scenarios.yaml"))
    opts = types.SimpleNamespace(llm_mode="sideways")
    with pytest.raises(config.ConfigError) as e:
        config.apply_overrides(doc, opts)
    assert "--llm-mode" in str(e.value) and "sideways" in str(e.value) and "closed, open" in str(e.value)
    opts = types.SimpleNamespace(llm_mode="open", llm_rate_phases="10:10", llm_slo_ttft_ms="250",
                                 llm_warmup="false", llm_output_token_budget="100")
    cfg = config.validate(config.apply_overrides(doc, opts))
    assert cfg["load"]["phases"] == [{"rate": 10.0, "duration_s": 10.0, "ramp_s": 0.0}]
    assert cfg["slo"]["ttft_ms"] == 250.0 and cfg["safety"]["warmup"] is False
    message, ok = config.check_budget(cfg)
    assert not ok and "output" in message and "100" in message


def test_unknown_and_invalid_fields_are_named():
    base = {"scenarios": [{"name": "A", "provider": "openai-chat", "model": "m", "prompt_length": 10,
                           "output_length": 5}]}
    assert config.validate(base)["load"]["mode"] == "closed"
    bad = {**base, "slo": {"ttft": 5}}
    with pytest.raises(config.ConfigError, match="ttft_ms"):
        config.validate(bad)
    bad = {"scenarios": [{**base["scenarios"][0], "provider": "antropic"}]}
    with pytest.raises(config.ConfigError, match="openai-chat"):
        config.validate(bad)
    bad = {"scenarios": [{**base["scenarios"][0], "prefix_length": 10}]}
    with pytest.raises(config.ConfigError, match="prefix_length"):
        config.validate(bad)
