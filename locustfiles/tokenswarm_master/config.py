"""Builds and validates the `TestConfig` document sent to workers.

Workers deserialize it with `deny_unknown_fields` (see `src/scenario.rs`),
so a typo here would only surface on every worker as a rejected spawn. We
therefore check the same rules on the master, before a run starts, and
report problems as "where: field `x` has value v; what is valid" — the
same shape as the Rust `ConfigError`.
"""

import copy
import math
import re

import yaml

PROVIDERS = ("openai-chat", "openai-completions", "anthropic")
MODES = ("closed", "open")
ARRIVALS = ("constant", "poisson", "gamma")
WAIT_KINDS = {"none": (), "constant": ("seconds",), "pacing": ("seconds",), "between": ("min_s", "max_s")}

SCENARIO_FIELDS = {
    "name", "weight", "provider", "endpoint", "model", "prompt_length", "prefix_length",
    "output_length", "api_key_env", "temperature", "headers", "extra_body", "wait",
}
TOP_FIELDS = {"v", "scenarios", "load", "slo", "safety", "timeouts"}
LOAD_FIELDS = {"mode", "phases", "arrival", "burstiness", "max_in_flight"}
PHASE_FIELDS = {"rate", "duration_s", "ramp_s"}
SLO_FIELDS = {"ttft_ms", "tpot_ms", "e2e_ms"}
SAFETY_FIELDS = {"warmup", "error_limit", "error_window", "input_token_budget", "output_token_budget"}
TIMEOUT_FIELDS = {"connect_s", "first_token_s", "total_s"}


class ConfigError(ValueError):
    """A configuration problem: where it is, which field, its value, what is valid."""

    def __init__(self, location, field, value, expected):
        self.location, self.field, self.value, self.expected = location, field, value, expected
        super().__init__(f"{location}: field `{field}` has value {value!r}; {expected}")


def load_yaml(path):
    """Reads the scenarios file; YAML syntax errors become ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("scenarios file", "path", str(path), f"cannot be read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError("scenarios file", "yaml", str(path), f"is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError("scenarios file", "(document)", type(doc).__name__, "must be a mapping with `scenarios:`")
    return doc


def scenario_names(doc):
    """Names of the scenarios in a raw document (for defining user classes)."""
    return [s.get("name") for s in doc.get("scenarios") or [] if isinstance(s, dict)]


def _unknown(location, data, allowed):
    if not isinstance(data, dict):
        raise ConfigError(location, "(section)", data, "must be a mapping")
    for key in data:
        if key not in allowed:
            raise ConfigError(location, key, data[key], f"unknown field; valid fields: {', '.join(sorted(allowed))}")


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _positive(location, field, x, what="use a positive number"):
    if not (_num(x) and x > 0):
        raise ConfigError(location, field, x, what)


def validate(doc):
    """Checks a full document against the rules of `src/scenario.rs`.

    Returns the document with defaults filled in, so workers and the
    master's token estimate see the same values."""
    doc = copy.deepcopy(doc)
    _unknown("config", doc, TOP_FIELDS)
    doc.setdefault("v", 1)
    if doc["v"] != 1:
        raise ConfigError("config", "v", doc["v"], "only schema version 1 exists")
    scenarios = doc.get("scenarios")
    if not isinstance(scenarios, list) or not scenarios:
        raise ConfigError("config", "scenarios", scenarios, "define at least one scenario")
    seen = set()
    for s in scenarios:
        _validate_scenario(s, seen)
    load = doc.setdefault("load", {})
    _unknown("load", load, LOAD_FIELDS)
    load.setdefault("mode", "closed")
    load.setdefault("phases", [])
    load.setdefault("arrival", "poisson")
    load.setdefault("burstiness", 1.0)
    load.setdefault("max_in_flight", 10_000)
    if load["mode"] not in MODES:
        raise ConfigError("load", "mode", load["mode"], f"valid values: {', '.join(MODES)}")
    if load["arrival"] not in ARRIVALS:
        raise ConfigError("load", "arrival", load["arrival"], f"valid values: {', '.join(ARRIVALS)}")
    if not isinstance(load["phases"], list):
        raise ConfigError("load", "phases", load["phases"], "must be a list of {rate, duration_s, ramp_s}")
    if load["mode"] == "open" and not load["phases"]:
        raise ConfigError("load", "phases", [], "open-loop mode needs at least one phase {rate, duration_s}")
    for i, p in enumerate(load["phases"]):
        at = f"load.phases[{i}]"
        _unknown(at, p, PHASE_FIELDS)
        p.setdefault("ramp_s", 0.0)
        if not (_num(p.get("rate")) and p["rate"] >= 0):
            raise ConfigError(at, "rate", p.get("rate"), "use a non-negative requests/second figure")
        _positive(at, "duration_s", p.get("duration_s"), "use a positive number of seconds")
        if not (_num(p["ramp_s"]) and 0 <= p["ramp_s"] <= p["duration_s"]):
            raise ConfigError(at, "ramp_s", p["ramp_s"], "use 0 <= ramp_s <= duration_s")
    _positive("load", "burstiness", load["burstiness"], "use a positive gamma shape (1 = Poisson)")
    if not (_int(load["max_in_flight"]) and load["max_in_flight"] > 0):
        raise ConfigError("load", "max_in_flight", load["max_in_flight"], "use a positive integer")
    slo = doc.setdefault("slo", {})
    _unknown("slo", slo, SLO_FIELDS)
    for field in sorted(SLO_FIELDS):
        if slo.get(field) is not None:
            _positive("slo", field, slo[field], "use a positive number of milliseconds, or leave it out")
    safety = doc.setdefault("safety", {})
    _unknown("safety", safety, SAFETY_FIELDS)
    safety.setdefault("warmup", True)
    safety.setdefault("error_limit", 0.3)
    safety.setdefault("error_window", 30)
    if not isinstance(safety["warmup"], bool):
        raise ConfigError("safety", "warmup", safety["warmup"], "use true or false")
    if not (_num(safety["error_limit"]) and 0 <= safety["error_limit"] <= 1):
        raise ConfigError("safety", "error_limit", safety["error_limit"], "use a fraction between 0 and 1 (0 disables)")
    if not (_int(safety["error_window"]) and safety["error_window"] > 0):
        raise ConfigError("safety", "error_window", safety["error_window"], "use a positive number of requests")
    for field in ("input_token_budget", "output_token_budget"):
        v = safety.get(field)
        if v is not None and not (_int(v) and v >= 0):
            raise ConfigError("safety", field, v, "use a non-negative whole number of tokens, or leave it out")
    timeouts = doc.setdefault("timeouts", {})
    _unknown("timeouts", timeouts, TIMEOUT_FIELDS)
    for field, default in (("connect_s", 10.0), ("first_token_s", 120.0), ("total_s", 600.0)):
        timeouts.setdefault(field, default)
        _positive("timeouts", field, timeouts[field], "use a positive number of seconds")
    _floats(doc)
    return doc


FLOAT_FIELDS = {"load": ("burstiness",), "slo": tuple(SLO_FIELDS), "safety": ("error_limit",),
                "timeouts": tuple(TIMEOUT_FIELDS)}


def _floats(doc):
    """Sends float fields as floats (YAML `1000` is an int), so a strict
    decoder on the worker never sees an integer where it expects f64."""
    for section, fields in FLOAT_FIELDS.items():
        for f in fields:
            if doc[section].get(f) is not None:
                doc[section][f] = float(doc[section][f])
    for p in doc["load"]["phases"]:
        for f in PHASE_FIELDS:
            p[f] = float(p[f])
    for s in doc["scenarios"]:
        if s.get("temperature") is not None:
            s["temperature"] = float(s["temperature"])
        for f in ("seconds", "min_s", "max_s"):
            if f in (s.get("wait") or {}):
                s["wait"][f] = float(s["wait"][f])


def _validate_scenario(s, seen):
    if not isinstance(s, dict):
        raise ConfigError("scenarios", "(item)", s, "each scenario must be a mapping")
    at = f"scenario {s.get('name')!r}"
    _unknown(at, s, SCENARIO_FIELDS)
    for field in ("name", "provider", "model", "prompt_length", "output_length"):
        if field not in s:
            raise ConfigError(at, field, None, "is required")
    name = s["name"]
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
        raise ConfigError(at, "name", name,
                          "use letters, digits and _, not starting with a digit (it becomes a Python class name)")
    if name in seen:
        raise ConfigError(at, "name", name, "scenario names must be unique")
    seen.add(name)
    s.setdefault("weight", 1)
    if not (_int(s["weight"]) and s["weight"] > 0):
        raise ConfigError(at, "weight", s["weight"], "use a positive integer")
    if s["provider"] not in PROVIDERS:
        raise ConfigError(at, "provider", s["provider"], f"valid values: {', '.join(PROVIDERS)}")
    if not (isinstance(s["model"], str) and s["model"]):
        raise ConfigError(at, "model", s["model"], "name the model the server serves")
    for field in ("prompt_length", "output_length"):
        if not (_int(s[field]) and s[field] > 0):
            raise ConfigError(at, field, s[field], "use a positive token count")
    s.setdefault("prefix_length", 0)
    if not (_int(s["prefix_length"]) and 0 <= s["prefix_length"] < s["prompt_length"]):
        raise ConfigError(
            at, "prefix_length", s["prefix_length"],
            f"must be 0 <= prefix_length < prompt_length ({s['prompt_length']}) so each request has a unique part",
        )
    ep = s.get("endpoint")
    if ep is not None and not (isinstance(ep, str) and (ep.startswith("/") or re.match(r"https?://", ep))):
        raise ConfigError(at, "endpoint", ep, "use a path starting with / or a full http(s) URL")
    var = s.get("api_key_env")
    if var is not None and not (isinstance(var, str) and var and "=" not in var):
        raise ConfigError(at, "api_key_env", var, "name an environment variable, e.g. OPENAI_API_KEY")
    t = s.get("temperature")
    if t is not None and not (_num(t) and 0 <= t <= 2):
        raise ConfigError(at, "temperature", t, "use a value between 0 and 2")
    for field in ("headers", "extra_body"):
        if field in s and not isinstance(s[field], dict):
            raise ConfigError(at, field, s[field], "must be a mapping")
    wait = s.get("wait")
    if wait is not None:
        if not isinstance(wait, dict) or wait.get("kind") not in WAIT_KINDS:
            kind = wait.get("kind") if isinstance(wait, dict) else wait
            raise ConfigError(at, "wait.kind", kind, f"valid values: {', '.join(WAIT_KINDS)}")
        _unknown(f"{at} wait", wait, {"kind", *WAIT_KINDS[wait["kind"]]})
        for field in WAIT_KINDS[wait["kind"]]:
            if not (_num(wait.get(field)) and wait[field] >= 0):
                raise ConfigError(at, f"wait.{field}", wait.get(field), "use a non-negative number of seconds")
        if wait["kind"] == "between" and wait["min_s"] > wait["max_s"]:
            raise ConfigError(at, "wait", f"min_s={wait['min_s']}, max_s={wait['max_s']}", "need 0 <= min_s <= max_s")


# ---------------------------------------------------------------- overrides


def _blank(v):
    return v is None or (isinstance(v, str) and v.strip() == "")


def _as_float(option, v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError("option", option, v, "use a number") from None
    if not math.isfinite(x):
        raise ConfigError("option", option, v, "use a finite number")
    return x


def _as_int(option, v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError("option", option, v, "use a whole number") from None
    if not x.is_integer():
        raise ConfigError("option", option, v, "use a whole number")
    return int(x)


def _as_bool(option, v):
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ConfigError("option", option, v, "use true or false")


def parse_phases(text, option="--llm-rate-phases"):
    """Parses "rate:duration_s[:ramp_s],..." into phase dicts."""
    phases = []
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        fields = part.split(":")
        if len(fields) not in (2, 3):
            raise ConfigError(
                "option", option, text,
                f"phase {i + 1} ({part!r}) must be rate:duration_s or rate:duration_s:ramp_s, e.g. \"200:30,400:30:5\"",
            )
        rate, duration = (_as_float(option, f) for f in fields[:2])
        ramp = _as_float(option, fields[2]) if len(fields) == 3 else 0.0
        phases.append({"rate": rate, "duration_s": duration, "ramp_s": ramp})
    return phases


def _section(doc, name):
    section = doc.setdefault(name, {})
    if not isinstance(section, dict):
        raise ConfigError(name, "(section)", section, "must be a mapping")
    return section


def apply_overrides(doc, opts):
    """Applies the --llm-* options that are set (non-blank) to a raw document.

    `opts` is Locust's parsed_options (argparse namespace); values may be
    strings when they came from the web form, so everything is converted
    here, naming the option on failure."""
    doc = copy.deepcopy(doc)
    get = lambda name: getattr(opts, name, None)  # noqa: E731
    load, slo, safety = (_section(doc, name) for name in ("load", "slo", "safety"))
    if not _blank(v := get("llm_mode")):
        if str(v).strip() not in MODES:
            raise ConfigError("option", "--llm-mode", v, f"valid values: {', '.join(MODES)}")
        load["mode"] = str(v).strip()
    if not _blank(v := get("llm_rate_phases")):
        load["phases"] = parse_phases(v)
    if not _blank(v := get("llm_arrival")):
        if str(v).strip() not in ARRIVALS:
            raise ConfigError("option", "--llm-arrival", v, f"valid values: {', '.join(ARRIVALS)}")
        load["arrival"] = str(v).strip()
    if not _blank(v := get("llm_burstiness")):
        load["burstiness"] = _as_float("--llm-burstiness", v)
    if not _blank(v := get("llm_max_in_flight")):
        load["max_in_flight"] = _as_int("--llm-max-in-flight", v)
    for option, field in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e", "e2e_ms")):
        if not _blank(v := get(f"llm_slo_{option}_ms")):
            slo[field] = _as_float(f"--llm-slo-{option}-ms", v)
    if not _blank(v := get("llm_error_limit")):
        safety["error_limit"] = _as_float("--llm-error-limit", v)
    if not _blank(v := get("llm_warmup")):
        safety["warmup"] = _as_bool("--llm-warmup", v)
    for kind in ("input", "output"):
        if not _blank(v := get(f"llm_{kind}_token_budget")):
            safety[f"{kind}_token_budget"] = _as_int(f"--llm-{kind}-token-budget", v)
    return doc


def build(path, opts):
    """YAML file + overrides -> validated TestConfig dict."""
    return validate(apply_overrides(load_yaml(path), opts))


# ----------------------------------------------------------- token estimate


def planned_requests(phases):
    """Requests an open-loop run sends: each phase ramps linearly from the
    previous phase's rate over ramp_s, then holds its rate."""
    total, prev = 0.0, 0.0
    for p in phases:
        ramp = p.get("ramp_s", 0.0)
        total += (prev + p["rate"]) / 2 * ramp + p["rate"] * (p["duration_s"] - ramp)
        prev = p["rate"]
    return total


def token_estimate(cfg):
    """(requests, input tokens, output tokens) planned by an open-loop run;
    requests are split between scenarios by weight, as workers do."""
    n = planned_requests(cfg["load"]["phases"])
    weights = sum(s["weight"] for s in cfg["scenarios"])
    inp = sum(n * s["weight"] / weights * s["prompt_length"] for s in cfg["scenarios"])
    out = sum(n * s["weight"] / weights * s["output_length"] for s in cfg["scenarios"])
    return round(n), round(inp), round(out)


def check_budget(cfg):
    """Returns (message, ok). Only open-loop runs have a known size."""
    if cfg["load"]["mode"] != "open":
        return None, True
    n, inp, out = token_estimate(cfg)
    msg = f"token estimate: {n} requests, {inp} input tokens, {out} output tokens"
    safety = cfg["safety"]
    for kind, est in (("input", inp), ("output", out)):
        budget = safety.get(f"{kind}_token_budget")
        if budget is not None and est > budget:
            return (
                f"{msg}; refusing to start: estimated {kind} tokens {est} exceed "
                f"--llm-{kind}-token-budget / safety.{kind}_token_budget = {budget}"
            ), False
    return msg, True
