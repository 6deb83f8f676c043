"""Merges the workers' `llm` reports (schema v1, see docs/contracts.md).

Each worker sends deltas since its previous report, so merging is plain
addition: counts, sums, histogram buckets and per-second maps add up; min
and max combine. Percentiles are read from the merged histogram (bucket
keys are µs values rounded to 3 significant digits, so they are within
0.05 % of the true value) and clamped to the observed [min, max], because
a rounded bucket can lie just outside the real range.

The aggregator keeps no Locust objects, so it is unit-testable on its own.
"""

import threading
import time
from collections import deque

METRICS = ("ttft", "ttfa", "tpot", "itl", "e2e", "queue", "lag")
COUNTERS = (
    "requests", "failures", "good", "input_tokens", "output_tokens", "cached_tokens",
    # sessions: what a perfect prefix cache would have served (src/llm/session.rs)
    "ideal_cached_tokens",
    "reasoning_tokens", "estimated_output", "prompt_divergent", "output_divergent",
    # open loop: arrivals due but never sent (the run stopped at the cap)
    "unsent",
)
PER_SEC = ("out_tokens_per_sec", "in_tokens_per_sec", "good_per_sec")
#: Seconds of history kept for the "current" figures (Locust's current_rps
#: uses the same 10 s window ending 2 s ago, since the newest second is
#: still incomplete).
CURRENT_WINDOW = 10
CURRENT_LAG = 2
#: Distinct failure rows one scenario may have in the master's failures
#: table, as `MAX_FAILURE_KEYS` in src/metrics/mod.rs caps each worker.
MAX_FAILURE_KEYS = 32
#: Percentile fractions are resolved to 1 / PERCENTILE_SCALE (p99.9999), as
#: `PERCENTILE_SCALE` in src/metrics/report.rs (per cent there).
PERCENTILE_SCALE = 1_000_000


class Dist:
    """A latency distribution in µs: exact count/sum/min/max plus buckets."""

    __slots__ = ("count", "sum", "min", "max", "hist")

    def __init__(self):
        self.count = 0
        self.sum = 0
        self.min = None
        self.max = None
        self.hist = {}

    def merge(self, d):
        """Adds one reported distribution {count, sum, min, max, hist}."""
        count = int(d.get("count", 0))
        if count <= 0:
            return
        self.count += count
        self.sum += d.get("sum", 0)
        lo, hi = d.get("min"), d.get("max")
        if lo is not None:
            self.min = lo if self.min is None else min(self.min, lo)
        if hi is not None:
            self.max = hi if self.max is None else max(self.max, hi)
        for k, n in (d.get("hist") or {}).items():
            k = int(k)
            self.hist[k] = self.hist.get(k, 0) + n

    def percentile(self, p):
        """Value (µs) at fraction p: the smallest bucket whose cumulative
        count reaches ceil(p * count), clamped to [min, max].

        The rank is integer arithmetic on p resolved to 1e-6 (p99.9999), as
        `HistReport::percentile_us` in Rust does: a float product would make
        p99.9 of 1000 samples rank 1000 (99.9 / 100 * 1000 > 999) and loses
        counts beyond 2^53. tests/fixtures/percentiles pins both sides."""
        if not self.hist:
            return None
        rank = max(1, -(-round(p * PERCENTILE_SCALE) * sum(self.hist.values()) // PERCENTILE_SCALE))
        seen = 0
        for k in sorted(self.hist):
            seen += self.hist[k]
            if seen >= rank:
                break
        if self.min is not None:
            k = max(k, self.min)
        if self.max is not None:
            k = min(k, self.max)
        return k

    def avg(self):
        return self.sum / self.count if self.count else None


class ScenarioAgg:
    """Everything merged for one scenario (or the total)."""

    def __init__(self):
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.failure_kinds = {}
        self.metrics = {m: Dist() for m in METRICS}
        self.per_sec = {k: {} for k in PER_SEC}
        self.targets = (0, 0)

    def merge(self, r):
        for k in COUNTERS:
            self.counts[k] += int(r.get(k, 0) or 0)
        for kind, n in (r.get("failure_kinds") or {}).items():
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + n
        for name, d in (r.get("metrics") or {}).items():
            self.metrics.setdefault(name, Dist()).merge(d)
        for key in PER_SEC:
            target = self.per_sec[key]
            for sec, n in (r.get(key) or {}).items():
                sec = int(sec)
                target[sec] = target.get(sec, 0) + n
        if r.get("target_prompt_tokens") or r.get("target_output_tokens"):
            self.targets = (r.get("target_prompt_tokens", 0), r.get("target_output_tokens", 0))

    def span_s(self):
        """Seconds from the first to the last second with any completion."""
        secs = [s for m in self.per_sec.values() for s in m]
        return (max(secs) - min(secs) + 1) if secs else 0

    def total_rate(self, key, span_s=None):
        """Per second over `span_s` (the run's duration, as Locust's total
        RPS); without it, over the seconds that saw completions, which
        overstates the rate of long streams that end close together."""
        span = self.span_s() if span_s is None else span_s
        return sum(self.per_sec[key].values()) / span if span else 0.0

    def current_rate(self, key, now):
        """Mean per second over the 10 complete seconds ending 2 s ago."""
        end = int(now) - CURRENT_LAG
        m = self.per_sec[key]
        return sum(m.get(s, 0) for s in range(end - CURRENT_WINDOW, end)) / CURRENT_WINDOW


def kind_group(kind):
    """The group of a failure kind label (`FailureKind::group` in Rust):
    every `http_<status>` is `http_status`, other labels are their own."""
    kind = str(kind or "")
    if kind.startswith("http_"):
        return "http_status"
    return kind or "unknown"


class FailureRows:
    """Bounds the master's failures table per scenario.

    Each worker admits at most MAX_FAILURE_KEYS summaries per scenario, but
    different workers can admit different ones (a server that varies its
    error text per request), so the master's table could still hold
    workers x cap rows. The master keeps its own admitted set per scenario
    for the run: a row it has not admitted once the set is full is renamed
    to its group's overflow row (`"<group>: other"`, `kind` = the group,
    the same text workers use), so the table holds at most
    MAX_FAILURE_KEYS + one row per kind group per scenario and every
    occurrence is still counted. Rows are dicts as workers send them
    (Locust's StatsErrorDict plus `kind`)."""

    def __init__(self, cap=MAX_FAILURE_KEYS):
        self.cap = cap
        self.admitted = {}

    def reset(self):
        self.admitted = {}

    def row_text(self, name, error, kind):
        """(error text, kind) this row is counted under."""
        group = kind_group(kind)
        overflow = f"{group}: other"
        if error == overflow:
            return error, kind
        seen = self.admitted.setdefault(name, set())
        if error in seen:
            return error, kind
        if len(seen) < self.cap:
            seen.add(error)
            return error, kind
        return overflow, group

    def fold(self, errors):
        """Rewrites one report's `errors` dict (key -> row) in place."""
        if not isinstance(errors, dict):
            return
        for key in list(errors):
            row = errors[key]
            if not isinstance(row, dict):
                continue
            name, method = row.get("name"), row.get("method")
            text, kind = self.row_text(name, row.get("error"), row.get("kind"))
            if text == row.get("error"):
                continue
            del errors[key]
            new_key = f"{method}.{name}.{text}"
            into = errors.get(new_key)
            if into is None:
                errors[new_key] = {**row, "error": text, "kind": kind}
            else:
                into["occurrences"] = into.get("occurrences", 0) + row.get("occurrences", 0)
                firsts = [t for t in (into.get("first_seen"), row.get("first_seen")) if t is not None]
                lasts = [t for t in (into.get("last_seen"), row.get("last_seen")) if t is not None]
                into["first_seen"] = min(firsts) if firsts else None
                into["last_seen"] = max(lasts) if lasts else None


class Aggregator:
    """Per-scenario and total merge of worker reports, plus chart history.

    Listeners run in gevent greenlets of one thread, but the lock keeps the
    aggregator safe for plain threads too (e.g. unit tests)."""

    def __init__(self, history_len=86_400):
        self._lock = threading.Lock()
        self.history = deque(maxlen=history_len)
        self.reset()

    def reset(self, keep_history=False):
        """Clears merged numbers; "Reset stats" keeps the chart history (as
        Locust keeps its charts), a new run clears it too."""
        with self._lock:
            self.scenarios = {}
            self.total = ScenarioAgg()
            self.reports = 0
            self.ignored = 0
            # The run (or the stats since "Reset stats") started here; rates
            # over the whole run divide by the time up to the last report.
            self.started_at = time.time()
            self.last_report_at = None
            # (received_at, scenario, ttft dist dict) for windowed percentiles
            self._recent = deque()
            if not keep_history:
                self.history.clear()

    def merge_report(self, llm, now=None):
        """Merges one worker's `llm` value; returns False when it is not a
        v1 report (ignored, counted in `ignored`)."""
        if not isinstance(llm, dict) or llm.get("v") != 1 or not isinstance(llm.get("scenarios"), dict):
            self.ignored += 1
            return False
        now = time.time() if now is None else now
        with self._lock:
            self.reports += 1
            self.last_report_at = now
            for name, r in llm["scenarios"].items():
                self.scenarios.setdefault(name, ScenarioAgg()).merge(r)
                self.total.merge(r)
                ttft = (r.get("metrics") or {}).get("ttft")
                if ttft:
                    self._recent.append((now, name, ttft))
        return True

    def run_span_s(self, now=None):
        """Seconds from the start of the run (or the last reset) to the last
        worker report (now when none came yet); at least 1."""
        end = self.last_report_at or (time.time() if now is None else now)
        return max(1.0, end - self.started_at)

    def current_ttft(self, now, window=CURRENT_WINDOW):
        """TTFT distributions of reports received in the last `window` s,
        per scenario and under None for the total (for live charts)."""
        with self._lock:
            while self._recent and self._recent[0][0] < now - window:
                self._recent.popleft()
            out = {}
            for _, name, d in self._recent:
                out.setdefault(name, Dist()).merge(d)
                out.setdefault(None, Dist()).merge(d)
            return out

    def sample(self, now, user_count):
        """Appends one history point (called once per second while running)."""
        recent = self.current_ttft(now)
        point = {"time": int(now), "user_count": user_count, "scenarios": {}}
        names = sorted(self.scenarios) + [None]
        for name in names:
            agg = self.total if name is None else self.scenarios[name]
            d = recent.get(name)
            point["scenarios"]["Total" if name is None else name] = {
                "ttft_p50_ms": _ms(d.percentile(0.5)) if d else None,
                "ttft_p95_ms": _ms(d.percentile(0.95)) if d else None,
                "out_tps": round(agg.current_rate("out_tokens_per_sec", now), 2),
            }
        self.history.append(point)
        return point


def _ms(us):
    return None if us is None else round(us / 1000.0, 3)
