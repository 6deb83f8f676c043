"""Capacity search: the highest load a target serves within its SLOs.

The question users bring ("what rate can this server hold within my
SLOs?") is answered by raising the load step by step and measuring SLO
attainment at each step: users in closed-loop mode, the cluster arrival rate
in open-loop mode. Each step is held for `hold_s`; its first `settle_s` are
not measured (users starting, queues forming, the warm-up request). The
search stops at the first step whose attainment (good requests over all
requests completed in its measuring window) is below the target fraction,
and reports the highest step that held, its goodput, and the whole curve.

"Good" is the workers' own verdict (`good_per_sec` in the `llm` reports: a
success that meets every SLO set, `meets` in src/metrics/llm.rs), so the
search and the goodput figures can never disagree; at least one SLO must be
set, or the search would only measure errors. Requests per second come from
the same reports' `stats_total.num_reqs_per_sec` (every request, failures
included). Both are keyed by the Unix second each request completed, so a
step's numbers are exact however late the reports arrive: a step is judged
`grace_s` after its window ends (workers report every 3 s), while the next
step already runs, and the last steps once the workers' final reports are in
(`poll(final=True)` after the flush at test stop).

Selected with `--llm-capacity START:STEP:MAX:HOLD_S[:SETTLE_S]` (llm.py then
defines the `CapacityShape` load shape), or by importing `CapacityShape` in
a locustfile (its `spec` attribute is the default). In open-loop mode the
rate ladder becomes the run's phases (one phase per step, no ramp), so the
workers' phase clock and the search share one timeline; the user count is
then only the split of the rate across workers (`-u`, at least one user per
worker). Clocks: windows are cut on the master's clock and completions are
stamped on the workers'; the settle time also absorbs a skew of a second or
so between machines.

`Spec` and `Search` are pure (time is passed in) and unit-tested; the
shape is the thin Locust-facing part.
"""

import logging
import math
import time

from locust import LoadTestShape

from .config import OptionError

logger = logging.getLogger("tokenswarm")

DEFAULT_ATTAINMENT = 0.95
#: Seconds after a step's window ends before it is judged mid-run: the
#: workers' 3 s report interval plus delivery.
REPORT_GRACE_S = 5.0
MAX_STEPS = 1000
OPTION = "--llm-capacity"
FORMAT = "START:STEP:MAX:HOLD_S[:SETTLE_S], e.g. \"2:2:32:30\" (users or req/s, seconds)"


class CapacityError(ValueError):
    """The search cannot start (message names the option and value)."""


class Spec:
    """The ladder: values start, start+step, ... up to max, each held hold_s
    seconds of which the first settle_s are not measured."""

    def __init__(self, start, step, stop, hold_s, settle_s=None, attainment=DEFAULT_ATTAINMENT, text=""):
        self.start, self.step, self.stop = start, step, stop
        self.hold_s = hold_s
        self.settle_s = hold_s / 4 if settle_s is None else settle_s
        self.attainment = attainment
        self.text = text or f"{start:g}:{step:g}:{stop:g}:{hold_s:g}:{self.settle_s:g}"

    def values(self, mode):
        """The step values for `mode` (users are whole numbers)."""
        n = int(math.floor((self.stop - self.start) / self.step + 1e-9)) + 1
        vals = [self.start + i * self.step for i in range(n)]
        if mode == "closed":
            if any(not float(v).is_integer() for v in (self.start, self.step)):
                raise OptionError("option", OPTION, self.text,
                                  "closed-loop steps are user counts: use whole numbers for START and STEP")
            return [int(v) for v in vals]
        return [round(float(v), 6) for v in vals]


def _number(text, field, spec_text):
    try:
        x = float(text)
    except ValueError:
        raise OptionError("option", OPTION, spec_text, f"{field} ({text!r}) must be a number; use {FORMAT}") from None
    if not math.isfinite(x):
        raise OptionError("option", OPTION, spec_text, f"{field} must be finite; use {FORMAT}")
    return x


def parse_spec(text, attainment=None):
    """`--llm-capacity` and `--llm-capacity-attainment` into a Spec; raises
    OptionError naming the option, the value and what is valid."""
    text = str(text).strip()
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise OptionError("option", OPTION, text, f"use {FORMAT}")
    names = ("START", "STEP", "MAX", "HOLD_S", "SETTLE_S")
    start, step, stop, hold, *settle = (_number(p, names[i], text) for i, p in enumerate(parts))
    settle = settle[0] if settle else None
    if start <= 0 or step <= 0:
        raise OptionError("option", OPTION, text, "START and STEP must be > 0")
    if stop < start:
        raise OptionError("option", OPTION, text, f"MAX ({stop:g}) must be at least START ({start:g})")
    if (stop - start) / step + 1 > MAX_STEPS:
        raise OptionError("option", OPTION, text, f"at most {MAX_STEPS} steps; raise STEP or lower MAX")
    if hold <= 0 or hold > 86_400:
        raise OptionError("option", OPTION, text, "HOLD_S must be in (0, 86400] seconds")
    spec = Spec(start, step, stop, hold, settle, text=text)
    # completions are counted in whole seconds: 2 s leave at least one whole second however the step is cut
    if spec.settle_s < 0 or spec.hold_s - spec.settle_s < 2:
        raise OptionError("option", OPTION, text,
                          "SETTLE_S must be >= 0 and leave at least 2 s of each step to measure (HOLD_S - SETTLE_S >= 2)")
    if attainment not in (None, ""):
        try:
            a = float(attainment)
        except (TypeError, ValueError):
            a = float("nan")
        if not (0 < a <= 1):
            raise OptionError("option", "--llm-capacity-attainment", attainment,
                              "use a fraction in (0, 1], e.g. 0.95 for 95 % of requests within the SLOs")
        spec.attainment = a
    return spec


def ladder_phases(spec):
    """Open loop: one rate phase per step (the run's `load.phases`)."""
    return [{"rate": float(v), "duration_s": float(spec.hold_s), "ramp_s": 0.0} for v in spec.values("open")]


def _per_second(m):
    """A per-second map from a report (msgpack keys may be ints or strings)."""
    out = {}
    for k, v in (m or {}).items():
        try:
            out[int(k)] = int(v or 0)
        except (TypeError, ValueError):
            continue
    return out


class Search:
    """The state of one capacity search (time passed in, no I/O)."""

    def __init__(self, spec, mode, grace_s=REPORT_GRACE_S):
        self.spec, self.mode, self.grace_s = spec, mode, grace_s
        self.values = spec.values(mode)
        self.unit = "users" if mode == "closed" else "req/s"
        self.t0 = None
        self.requests, self.good = {}, {}
        self.steps = []
        self.done = False
        self.reason = None

    def begin(self, now):
        self.t0 = float(now)

    def step_index(self, now):
        return int((now - self.t0) // self.spec.hold_s) if self.t0 is not None else 0

    def step_bounds(self, i):
        start = self.t0 + i * self.spec.hold_s
        return start, start + self.spec.hold_s

    def window(self, i):
        """Completion seconds measured for step i: [first, end)."""
        start, end = self.step_bounds(i)
        return math.ceil(start + self.spec.settle_s), math.floor(end)

    def fold(self, data):
        """Adds one worker report (`data` of Locust's worker_report)."""
        if self.t0 is None or not isinstance(data, dict):
            return
        first = self.window(len(self.steps))[0] if len(self.steps) < len(self.values) else None
        total = data.get("stats_total") or {}
        for sec, n in _per_second(total.get("num_reqs_per_sec")).items():
            if first is not None and sec >= first:
                self.requests[sec] = self.requests.get(sec, 0) + n
        llm = data.get("llm") or {}
        for r in (llm.get("scenarios") or {}).values() if isinstance(llm, dict) else ():
            for sec, n in _per_second((r or {}).get("good_per_sec")).items():
                if first is not None and sec >= first:
                    self.good[sec] = self.good.get(sec, 0) + n

    def _judge(self, i):
        a, b = self.window(i)
        req = sum(self.requests.get(s, 0) for s in range(a, b))
        good = sum(self.good.get(s, 0) for s in range(a, b))
        attainment = good / req if req else None
        held = attainment is not None and attainment >= self.spec.attainment
        self.steps.append({
            "step": i + 1, "value": self.values[i], "start_unix_s": round(self.step_bounds(i)[0], 3),
            "window_s": b - a, "requests": req, "good": good,
            "attainment": None if attainment is None else round(attainment, 4),
            "goodput_rps": round(good / (b - a), 3) if b > a else 0.0,
            "request_rps": round(req / (b - a), 3) if b > a else 0.0,
            "held": held,
        })
        # seconds before the next window are no longer needed
        if i + 1 < len(self.values):
            nxt = self.window(i + 1)[0]
            for m in (self.requests, self.good):
                for s in [s for s in m if s < nxt]:
                    del m[s]
        if not held:
            self.done = True
            why = "no request completed in its window" if attainment is None else \
                f"attainment {attainment:.1%} < {self.spec.attainment:.1%}"
            self.reason = f"step {i + 1} ({self.values[i]:g} {self.unit}) did not hold: {why}"

    def poll(self, now, final=False):
        """Judges every step whose reports are in; True when the search is
        over (a step failed, or every step was judged). `final`: the run is
        over and the workers' last reports are merged, so no grace; a step
        the run cut short is not judged."""
        while not self.done and self.t0 is not None and len(self.steps) < len(self.values):
            i = len(self.steps)
            _, b = self.window(i)
            step_end = self.step_bounds(i)[1]
            if final and now < step_end:
                self.done = True
                self.reason = f"the run ended during step {i + 1} ({self.values[i]:g} {self.unit}), before the search did"
                break
            if not final and now < b + self.grace_s:
                break
            self._judge(i)
        if not self.done and len(self.steps) == len(self.values):
            self.done = True
            self.reason = f"every step held, up to {self.values[-1]:g} {self.unit}: raise MAX to find the limit"
        if final:
            self.done = True
            self.reason = self.reason or "the run ended before the first step was judged"
        return self.done

    def result(self):
        held = [s for s in self.steps if s["held"]]
        # the highest step that held below the first that did not
        best = None
        for s in self.steps:
            if not s["held"]:
                break
            best = s
        failed = next((s for s in self.steps if not s["held"]), None)
        return {
            "mode": self.mode, "unit": self.unit, "spec": self.spec.text,
            "attainment_target": self.spec.attainment, "hold_s": self.spec.hold_s, "settle_s": self.spec.settle_s,
            "values": list(self.values), "done": self.done, "reason": self.reason,
            "held": best, "failed": failed, "steps_held": len(held), "curve": list(self.steps),
        }


def summary_line(result):
    """One line for logs and the console."""
    unit = result["unit"]
    if result["held"]:
        h = result["held"]
        text = (f"capacity: {h['value']:g} {unit} held (attainment {h['attainment']:.1%}, "
                f"goodput {h['goodput_rps']:g} req/s)")
    else:
        text = "capacity: no step held"
    return f"{text}; {result['reason'] or 'search running'}"


class CapacityShape(LoadTestShape):
    """The capacity-search load shape (see the module doc).

    `spec` is used when `--llm-capacity` is blank; `attainment` likewise for
    `--llm-capacity-attainment`. The search itself is created by the
    tokenswarm plugin (`environment.tokenswarm`), which knows the mode and
    checks the configuration."""

    spec = None
    attainment = None

    def tick(self):
        env = self.runner.environment
        if self.runner.shape_last_tick is None:
            self._search = None  # the first tick of a (new) shape run
        state = getattr(env, "tokenswarm", None)
        if state is None:
            logger.error("tokenswarm: CapacityShape needs the tokenswarm plugin (tokenswarm_master.plugin.setup)")
            return None
        now = time.time()
        search = getattr(self, "_search", None)
        if search is None:
            try:
                search = state.new_capacity_search(self)
            except (CapacityError, OptionError) as e:
                logger.error(f"tokenswarm: {e}")
                env.process_exit_code = 1
                return None
            search.begin(now)
            self._search = search
            logger.info(f"tokenswarm: capacity search over {search.values} {search.unit}, "
                        f"{search.spec.hold_s:g} s a step ({search.spec.settle_s:g} s settling), "
                        f"target attainment {search.spec.attainment:.0%}")
        if search.poll(now):
            logger.info(f"tokenswarm: {summary_line(search.result())}")
            return None
        i = search.step_index(now)
        if i >= len(search.values):
            return None  # the last steps are judged once the final reports are in
        if search.mode == "closed":
            users = search.values[i]
        else:
            opts = env.parsed_options
            users = max(1, int(getattr(opts, "num_users", 0) or 0), self.runner.worker_count)
        return users, float(max(users, 1))
