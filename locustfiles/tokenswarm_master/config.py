"""Builds and validates the `TestConfig` document sent to workers.

Workers own the schema: `src/scenario` defines the types, limits and
defaults, and `tokenswarm schema` writes them as JSON Schema to
`schema.json` beside this file (a Rust test fails when the committed file is
stale). The master validates with that file, before a run starts, so that it
rejects exactly what every worker would reject. `_walk` below is the same
walker as `check` in `src/scenario/schema.rs` (same keywords, same order,
same messages); the rules that relate two fields are code, mirrored in
`_cross_field_rules`. tests/fixtures/schema_corpus pins identical verdicts
and messages on both sides. Messages read "where: field `x` has value v;
what is valid".
"""

import copy
import json
import math
import os
import re

import yaml

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")
with open(SCHEMA_PATH, encoding="utf-8") as _f:
    SCHEMA = json.load(_f)

_PROPS = SCHEMA["properties"]
_SCENARIO = _PROPS["scenarios"]["items"]
MODES = tuple(_PROPS["load"]["properties"]["mode"]["enum"])
ARRIVALS = tuple(_PROPS["load"]["properties"]["arrival"]["enum"])
PROVIDERS = tuple(_SCENARIO["properties"]["provider"]["enum"])
NAME_PATTERN = _SCENARIO["properties"]["name"]["pattern"]

RENDER_MAX_CHARS = 120


class ConfigError(ValueError):
    """A configuration problem: where it is, which field, its value, what is valid.

    `value` is rendered with `_render` (as the workers do) unless
    `rendered` is set; an empty rendered value means the field is missing."""

    def __init__(self, location, field, value, expected, rendered=False):
        value = value if rendered else _render(value)
        self.location, self.field, self.value, self.expected = location, field, value, expected
        if not field:
            text = f"{location}: {expected}"
        elif value == "":
            text = f"{location}: field `{field}` is missing; {expected}"
        else:
            text = f"{location}: field `{field}` has value {value}; {expected}"
        super().__init__(text)


class OptionError(ConfigError):
    """A problem with a command-line option or the file itself (master only,
    no worker counterpart): the value is shown as Python's repr."""

    def __init__(self, location, field, value, expected):
        super().__init__(location, field, repr(value), expected, rendered=True)


def _render_full(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_render_full(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_render_full(k)}: {_render_full(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v), ensure_ascii=False)


def _render(v):
    """A value as messages show it (`render` in src/scenario/schema.rs)."""
    full = _render_full(v)
    return full if len(full) <= RENDER_MAX_CHARS else full[: RENDER_MAX_CHARS - 3] + "..."


def _search(pattern, text):
    """JSON Schema `pattern` semantics: `$` ends the text (Python's `$`
    would also match before a final newline)."""
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def is_valid_name(name):
    """The scenario name rule of the schema (a Python class name, ASCII)."""
    return isinstance(name, str) and _search(NAME_PATTERN, name)


def load_yaml(path):
    """Reads the scenarios file; YAML syntax errors become ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise OptionError("scenarios file", "path", str(path), f"cannot be read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise OptionError("scenarios file", "yaml", str(path), f"is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise OptionError("scenarios file", "(document)", type(doc).__name__, "must be a mapping with `scenarios:`")
    return doc


def scenario_names(doc):
    """Names of the scenarios in a raw document (for defining user classes)."""
    return [s.get("name") for s in doc.get("scenarios") or [] if isinstance(s, dict)]


# ------------------------------------------------------------------ walker


def _join(path):
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + seg
    return out


def _fail(at, value, expected, missing=False):
    location, field, _ = at
    return ConfigError(location, _join(field), "" if missing else _render(value), expected, rendered=True)


def _child(at, seg):
    location, field, full = at
    return location, field + [seg], full + [seg]


def _expected(node):
    return node.get("x-expected", "is not valid")


def _types(node):
    t = node.get("type")
    if isinstance(t, str):
        return [t]
    return list(t) if isinstance(t, list) else []


def _finite(x):
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _has_type(t, v):
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
    return False


def _branch(node, v):
    tag = node["x-tag"]
    t = v.get(tag)
    for b in node["oneOf"]:
        if isinstance(t, str) and b["properties"][tag]["enum"][0] == t:
            return b
    return None


def _walk(node, v, at):
    """Raises the first problem of `v` against `node` (`walk` in schema.rs)."""
    ts = _types(node)
    if v is None and "null" in ts:
        return
    if "x-tag" in node and "oneOf" in node:
        if not isinstance(v, dict):
            raise _fail(at, v, _expected(node))
        branch = _branch(node, v)
        if branch is None:
            raise _fail(_child(at, node["x-tag"]), v.get(node["x-tag"]), node.get("x-tag-expected", ""))
        return _walk(branch, v, at)
    if ts and not any(_has_type(t, v) for t in ts):
        raise _fail(at, v, _expected(node))
    if "enum" in node and not any(isinstance(v, str) and a == v for a in node["enum"]):
        raise _fail(at, v, _expected(node))
    if isinstance(v, str):
        n = len(v)
        if n < node.get("minLength", 0) or n > node.get("maxLength", math.inf) or (
                "pattern" in node and not _search(node["pattern"], v)):
            raise _fail(at, v, _expected(node))
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        x = v
        if ("minimum" in node and x < node["minimum"]) or (
                "exclusiveMinimum" in node and x <= node["exclusiveMinimum"]) or (
                "maximum" in node and x > node["maximum"]):
            raise _fail(at, v, _expected(node))
    elif isinstance(v, list):
        if len(v) < node.get("minItems", 0) or len(v) > node.get("maxItems", math.inf):
            raise _fail(at, v, _expected(node))
        if "items" in node:
            for i, x in enumerate(v):
                _walk(node["items"], x, _child(at, i))
    elif isinstance(v, dict):
        location, field, full = at
        where = node.get("x-location")
        if where == "path":
            at = (_join(full), [], full)
        elif where == "label":
            prefix, key = node["x-label"]
            name = v.get(key)
            at = (f"{prefix} {_render(name)}" if isinstance(name, str) else _join(full), [], full)
        props = node.get("properties", {})
        additional = node.get("additionalProperties")
        for k, x in v.items():
            name = k if isinstance(k, str) else _render(k)
            if name in props:
                continue
            if additional is False:
                raise _fail(_child(at, name), x, f"unknown field; valid fields: {', '.join(sorted(props))}")
            if isinstance(additional, dict):
                _walk(additional, x, _child(at, name))
        for r in sorted(node.get("required", [])):
            if r not in v:
                raise _fail(_child(at, r), None, _expected(props[r]) if r in props else "is required", missing=True)
        for name in sorted(props):
            if name in v:
                _walk(props[name], v[name], _child(at, name))


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _cross_field_rules(doc):
    """Rules relating two fields (`cross_field_rules` in src/scenario/mod.rs)."""
    seen = set()
    for s in doc.get("scenarios") or []:
        name = s.get("name")
        at = f"scenario {_render(name)}"
        if name in seen:
            raise ConfigError(at, "name", name, "scenario names must be unique")
        seen.add(name)
        prompt, prefix = s.get("prompt_length"), s.get("prefix_length")
        if prefix is not None and _num(prefix) >= _num(prompt):
            raise ConfigError(at, "prefix_length", prefix,
                              f"must be less than prompt_length ({_render(prompt)}) so each request has a unique part")
        think = (s.get("session") or {}).get("think_time")
        for field, wait in (("wait", s.get("wait")), ("session.think_time", think)):
            wait = wait or {}
            if wait.get("kind") == "between" and _num(wait.get("min_s")) > _num(wait.get("max_s")):
                raise ConfigError(at, field, f"min_s={_render(wait.get('min_s'))}, max_s={_render(wait.get('max_s'))}",
                                  "need min_s <= max_s", rendered=True)
    for s in doc.get("scenarios") or []:
        at = f"scenario {_render(s.get('name'))}"
        dataset = s.get("dataset")
        if dataset is None:
            continue
        if s.get("session") is not None:
            raise ConfigError(at, "dataset", dataset.get("path"),
                              "dataset prompts are single requests: leave out `session` or `dataset`")
        output = dataset.get("output") or {}
        if output.get("kind") == "uniform" and _num(output.get("min")) > _num(output.get("max")):
            raise ConfigError(at, "dataset.output", f"min={_render(output.get('min'))}, max={_render(output.get('max'))}",
                              "need min <= max", rendered=True)
    load = doc.get("load") or {}
    phases = load.get("phases") or []
    if load.get("mode") == "open" and not phases:
        raise ConfigError("load", "phases", "[]", "open-loop mode needs at least one phase {rate, duration_s}",
                          rendered=True)
    for i, p in enumerate(phases):
        ramp, duration = p.get("ramp_s"), p.get("duration_s")
        if ramp is not None and _num(ramp) > _num(duration):
            raise ConfigError(f"load.phases[{i}]", "ramp_s", ramp,
                              f"use 0 <= ramp_s <= duration_s ({_render(duration)})")


def _complete(node, v):
    """`v` with the schema's defaults filled in and numbers as floats, so a
    strict decoder on the worker never sees an integer where it expects f64."""
    if v is None:
        return v
    if "x-tag" in node and isinstance(v, dict):
        branch = _branch(node, v)
        return _complete(branch, v) if branch else v
    if "number" in _types(node) and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, list) and "items" in node:
        return [_complete(node["items"], x) for x in v]
    if isinstance(v, dict) and "properties" in node:
        out = dict(v)
        for name, sub in node["properties"].items():
            # A null default means "absent": it is not sent (the worker's
            # serde reads a missing field as None, the same).
            if name not in out and sub.get("default") is not None:
                default = sub["default"]
                if isinstance(default, dict):
                    default = {k: x for k, x in default.items() if x is not None}
                out[name] = copy.deepcopy(default)
            if name in out:
                out[name] = _complete(sub, out[name])
        return out
    return v


def validate(doc):
    """Checks a full document against `schema.json` and the cross-field rules.

    Returns the document with defaults filled in, so workers and the
    master's token estimate see the same values."""
    _walk(SCHEMA, doc, ("config", [], []))
    _cross_field_rules(doc)
    return _complete(SCHEMA, copy.deepcopy(doc))


# ---------------------------------------------------------------- overrides


def _blank(v):
    return v is None or (isinstance(v, str) and v.strip() == "")


def _as_float(option, v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise OptionError("option", option, v, "use a number") from None
    if not math.isfinite(x):
        raise OptionError("option", option, v, "use a finite number")
    return x


def _as_int(option, v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise OptionError("option", option, v, "use a whole number") from None
    if not x.is_integer():
        raise OptionError("option", option, v, "use a whole number")
    return int(x)


def _as_bool(option, v):
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise OptionError("option", option, v, "use true or false")


def parse_phases(text, option="--llm-rate-phases"):
    """Parses "rate:duration_s[:ramp_s],..." into phase dicts."""
    phases = []
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        fields = part.split(":")
        if len(fields) not in (2, 3):
            raise OptionError(
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
        raise OptionError(name, "(section)", section, "must be a mapping")
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
            raise OptionError("option", "--llm-mode", v, f"valid values: {', '.join(MODES)}")
        load["mode"] = str(v).strip()
    if not _blank(v := get("llm_rate_phases")):
        load["phases"] = parse_phases(v)
    if not _blank(v := get("llm_arrival")):
        if str(v).strip() not in ARRIVALS:
            raise OptionError("option", "--llm-arrival", v, f"valid values: {', '.join(ARRIVALS)}")
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
    """YAML file + overrides -> validated TestConfig dict, datasets shipped."""
    cfg = validate(apply_overrides(load_yaml(path), opts))
    ship_datasets(cfg, os.path.dirname(os.path.abspath(path)))
    return cfg


# ---------------------------------------------------------------- datasets

#: The most dataset bytes the master ships (`MAX_SHIPPED_DATASET_BYTES` in
#: src/scenario/schema.rs): the text rides in every spawn message.
MAX_SHIPPED_DATASET_BYTES = _SCENARIO["properties"]["dataset"]["properties"]["content"]["maxLength"]


def ship_datasets(cfg, base_dir):
    """Puts each dataset file's text in `dataset.content` (workers parse it:
    src/dataset.rs), unless workers read it themselves (`shared_storage`).
    Relative paths are relative to the scenarios file."""
    for s in cfg["scenarios"]:
        d = s.get("dataset")
        if not d or d.get("shared_storage") or d.get("content") is not None:
            continue
        at, path = f"scenario {_render(s['name'])}", d["path"]
        full = path if os.path.isabs(path) else os.path.join(base_dir, path)
        try:
            with open(full, "rb") as f:
                data = f.read(MAX_SHIPPED_DATASET_BYTES + 1)
        except OSError as e:
            raise ConfigError(at, "dataset.path", path, f"cannot be read ({e.strerror}; looked at {full})") from e
        if len(data) > MAX_SHIPPED_DATASET_BYTES:
            raise ConfigError(at, "dataset.path", path,
                              f"is over {MAX_SHIPPED_DATASET_BYTES} bytes, the most the master ships to workers; "
                              "put it where every worker can read it and set dataset.shared_storage: true")
        try:
            d["content"] = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(at, "dataset.path", path, f"is not UTF-8 text (byte {e.start})") from e


# ----------------------------------------------------------- token estimate


def planned_requests(phases):
    """Requests an open-loop run sends: each phase ramps linearly from the
    previous phase's rate over ramp_s, then holds its rate (the integral of
    `RateSchedule` in src/load/arrivals.rs; the schema corpus pins both)."""
    total, prev = 0.0, 0.0
    for p in phases:
        ramp = min(max(p.get("ramp_s", 0.0), 0.0), p["duration_s"])
        total += (prev + p["rate"]) / 2 * ramp + p["rate"] * (p["duration_s"] - ramp)
        prev = p["rate"]
    return total


def token_estimate(cfg):
    """(requests, input tokens, output tokens) planned by an open-loop run;
    arrivals are split between scenarios by weight, as workers do."""
    n = planned_requests(cfg["load"]["phases"])
    weights = sum(s["weight"] for s in cfg["scenarios"])
    # an arrival of a session scenario is a whole session
    per = [(s["weight"] / weights, session_tokens(s)) for s in cfg["scenarios"]]
    reqs = sum(n * w * t[0] for w, t in per)
    inp = sum(n * w * t[1] for w, t in per)
    out = sum(n * w * t[2] for w, t in per)
    return round(reqs), round(inp), round(out)


def session_tokens(s):
    """(requests, input tokens, output tokens) of one arrival of scenario
    `s` (defaults filled in): one request, or a session's turns, each
    resending the conversation (`Scenario::target_prompt_tokens` in
    src/scenario/mod.rs)."""
    sess = s.get("session")
    if not sess:
        return 1, s["prompt_length"], s["output_length"]
    turns = sess["turns"]
    grow = s["output_length"] + (sess.get("turn_length") or s["prompt_length"] - s.get("prefix_length", 0))
    inp = sum(s["prompt_length"] + k * grow for k in range(turns))
    return turns, inp, turns * s["output_length"]


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
