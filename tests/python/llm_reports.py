"""Deterministic `llm` reports (schema v1, docs/contracts.md) and the numbers
their merge must give, computed independently from the raw samples.

Latency samples are whole milliseconds with at most 3 significant digits,
so the workers' bucket keys (µs rounded to 3 significant digits) equal the
samples and nearest-rank percentiles over the samples are exact.
"""

import math

SCENARIO_TARGETS = {"ChatShort": (512, 64), "ChatLong": (2048, 256)}


def bucket3(v):
    """The Rust worker's bucket key (src/metrics/llm.rs::bucket3)."""
    if v < 1000:
        return v
    p = 1
    while v // p >= 1000:
        p *= 10
    return (v + p // 2) // p * p


def dist(values_ms):
    us = [int(v * 1000) for v in values_ms]
    hist = {}
    for v in us:
        hist[bucket3(v)] = hist.get(bucket3(v), 0) + 1
    return {"count": len(us), "sum": sum(us), "min": min(us), "max": max(us), "hist": hist}


def scenario(name, base, ttft, e2e, tpot, itl, failures=0, good=None, failure_kind="http_429", out_divergent=0):
    """One scenario window: len(ttft) successes plus `failures` failures,
    completed over two seconds starting at Unix second `base`."""
    ok = len(ttft)
    prompt, output = SCENARIO_TARGETS[name]
    good = ok if good is None else good
    half = ok // 2
    return {
        "requests": ok + failures, "failures": failures, "good": good,
        "input_tokens": ok * prompt, "output_tokens": ok * output, "cached_tokens": ok * prompt // 2,
        "reasoning_tokens": 0, "estimated_output": 0,
        "target_prompt_tokens": prompt, "target_output_tokens": output,
        "prompt_divergent": 0, "output_divergent": out_divergent,
        "failure_kinds": {failure_kind: failures} if failures else {},
        "metrics": {"ttft": dist(ttft), "ttfa": dist(ttft), "tpot": dist(tpot), "itl": dist(itl), "e2e": dist(e2e),
                    "queue": dist([1] * (ok + failures))},
        "out_tokens_per_sec": {base: half * output, base + 1: (ok - half) * output},
        "in_tokens_per_sec": {base: half * prompt, base + 1: (ok - half) * prompt},
        "good_per_sec": {base: min(good, half), base + 1: good - min(good, half)},
    }


def worker_reports(worker, base):
    """The reports fake worker number `worker` (0 or 1) sends, in order."""
    if worker == 0:
        return [
            {"v": 1, "scenarios": {
                "ChatShort": scenario("ChatShort", base, [50, 60, 70, 80], [500, 600, 700, 800],
                                      [10, 10, 11, 12], [9, 10, 11, 12, 13], failures=1, good=3)}},
            {"v": 1, "scenarios": {
                "ChatLong": scenario("ChatLong", base + 2, [200, 250], [2500, 3000], [20, 25], [19, 21, 30])}},
        ]
    return [
        {"v": 1, "scenarios": {
            "ChatShort": scenario("ChatShort", base + 1, [90, 100, 110, 1200], [900, 950, 990, 2000],
                                  [13, 14, 15, 40], [14, 15, 16, 45], good=2, out_divergent=1),
            "ChatLong": scenario("ChatLong", base + 1, [300], [3500], [30], [29, 31], failures=2,
                                 failure_kind="error_event")}},
    ]


def all_reports(base):
    return worker_reports(0, base) + worker_reports(1, base)


def _nearest_rank(values, p):
    s = sorted(values)
    return s[max(1, math.ceil(p * len(s))) - 1]


RUN_SPAN_S = 10


def expected(base):
    """Merged summary per scenario and "Total", from the raw windows."""
    raw = {}
    for rep in all_reports(base):
        for name, r in rep["scenarios"].items():
            for key in (name, "Total"):
                raw.setdefault(key, []).append(r)
    out = {}
    for key, windows in raw.items():
        e = {k: sum(w[k] for w in windows) for k in ("requests", "failures", "good", "input_tokens",
                                                      "output_tokens", "cached_tokens", "output_divergent")}
        e["metrics"] = {}
        for m in ("ttft", "tpot", "itl", "e2e"):
            samples = [k for w in windows for k, n in w["metrics"][m]["hist"].items() for _ in range(n)]
            e["metrics"][m] = {
                "count": len(samples),
                "sum_us": sum(w["metrics"][m]["sum"] for w in windows),
                "min_ms": min(samples) / 1000, "max_ms": max(samples) / 1000,
                "p50_ms": _nearest_rank(samples, 0.5) / 1000, "p90_ms": _nearest_rank(samples, 0.9) / 1000,
                "p99_ms": _nearest_rank(samples, 0.99) / 1000,
            }
        # Whole-run rates divide by the run's span (run start to last
        # report), as Locust's total RPS does: RUN_SPAN_S in the tests.
        span = RUN_SPAN_S
        e["out_tps_total"] = round(e["output_tokens"] / span, 3)
        e["goodput_rps"] = round(e["good"] / span, 3)
        e["goodput_pct"] = round(100 * e["good"] / e["requests"], 2)
        out[key] = e
    return out
