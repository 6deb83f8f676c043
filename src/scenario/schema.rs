//! The test definition's schema as data, and the walker that checks a
//! document against it.
//!
//! Why data: the master (Python, `locustfiles/tokenswarm_master/config.py`)
//! must reject exactly what every worker rejects, with the same words,
//! before a run starts. So the rules live here once, as a JSON Schema built
//! from this crate's limits and `Default`s; `tokenswarm schema` prints it
//! and the output is committed as `locustfiles/tokenswarm_master/schema.json`
//! (a test fails when the two differ). Both sides then run the same small
//! walker over the same file: `check` here, `_walk` in `config.py`. A
//! shared corpus (`tests/fixtures/schema_corpus/`) pins identical verdicts
//! and messages. Rules that relate two fields are code, mirrored in both
//! (`super::cross_field_rules` and `_cross_field_rules`).
//!
//! The walker understands this subset of JSON Schema, and nothing else:
//! `type` (a name or a list, `"null"` allowed), `properties`, `required`,
//! `additionalProperties` (`false`, `true` or a schema), `items`,
//! `minItems`/`maxItems`, `minLength`/`maxLength` (in characters),
//! `pattern` (only the patterns below), `enum`, `minimum`, `maximum`,
//! `exclusiveMinimum`, and a tagged union (`oneOf` with `x-tag`). Our own
//! keywords: `x-expected` (what would be valid: the end of every message),
//! `x-tag-expected`, `x-location` (`"path"` or `"label"` with `x-label`:
//! where messages inside this object say they are) and `default`.
//!
//! Walk order, identical on both sides: null allowed?; tagged union; type;
//! bounds; for an object, unknown keys in document order, then missing
//! required keys in name order, then present keys in name order; for an
//! array, its size, then its items in order. The first problem is reported.

use std::sync::LazyLock;

use serde_json::{Value as Json, json};
use serde_yaml::Value;

use super::{Arrival, ConfigError, LoadConfig, LoadMode, Provider, Safety, Timeouts};
use crate::units::MAX_SECONDS;

/// At most this many scenarios (Locust user classes) in one test.
pub const MAX_SCENARIOS: u64 = 1_000;
/// A scenario weight; with [`MAX_SCENARIOS`] their sum fits a `u32`.
pub const MAX_WEIGHT: u64 = 1_000_000;
/// Prompt tokens of one request. A prompt is built in memory (about two
/// bytes a token), so `prompt_length: 1e12` used to abort the worker on a
/// failed allocation; 10 M covers the longest context windows served today.
pub const MAX_PROMPT_TOKENS: u64 = 10_000_000;
/// Output tokens requested by one request (`max_tokens`).
pub const MAX_OUTPUT_TOKENS: u64 = 1_000_000;
/// Open-loop phases in one test.
pub const MAX_PHASES: u64 = 10_000;
/// Cluster arrival rate of a phase, requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Gamma shape of open-loop arrivals.
pub const MAX_BURSTINESS: f64 = 1_000.0;
/// In-flight requests per worker (open loop).
pub const MAX_IN_FLIGHT: u64 = 1_000_000;
/// Requests in the error-rate window (it is allocated up front).
pub const MAX_ERROR_WINDOW: u64 = 1_000_000;
/// A token budget; larger means "no budget".
pub const MAX_TOKEN_BUDGET: u64 = 1_000_000_000_000_000;
/// An SLO in milliseconds: [`MAX_SECONDS`] in ms.
pub const MAX_SLO_MS: f64 = MAX_SECONDS * 1_000.0;
/// Characters in a scenario name, model, endpoint, or variable name.
pub const MAX_NAME_CHARS: u64 = 100;
pub const MAX_MODEL_CHARS: u64 = 256;
pub const MAX_ENDPOINT_CHARS: u64 = 2_048;
/// The master's phase clock (Unix seconds), up to the year 5138.
pub const MAX_UNIX_S: f64 = 1e11;

/// The scenario name rule: it becomes a Python class name on the master.
pub const NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// A path or a full http(s) URL.
pub const ENDPOINT_PATTERN: &str = "^(/|https?://)";
/// An environment variable name: anything but `=`.
pub const ENV_VAR_PATTERN: &str = "^[^=]+$";
/// A prompt's task sentence: printable ASCII without `"` or `\`, so it goes
/// into every JSON body as it is, with no escaping per request.
pub const TASK_PATTERN: &str = "^[ !#-\\[\\]-~]+$";
/// Characters in a task sentence.
pub const MAX_TASK_CHARS: u64 = 1_000;
/// An HTTP header name (RFC 9110 token characters).
pub const HEADER_PATTERN: &str = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
/// A dataset file the master ships inside the test definition: the spawn
/// message carries it to every worker, and a worker accepts no string over
/// 1 MiB from the master (`locust::wire::MAX_STRING_BYTES`). Larger files
/// need `shared_storage`.
pub const MAX_SHIPPED_DATASET_BYTES: u64 = 1_000_000;
/// A dataset file a worker reads itself (`shared_storage`).
pub const MAX_DATASET_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Characters in a dataset path.
pub const MAX_PATH_CHARS: u64 = 4_096;
/// A sampling seed: JSON integers are exact up to 2^53.
pub const MAX_SEED: u64 = 1 << 53;
/// Characters in a header name.
pub const MAX_HEADER_CHARS: u64 = 256;

/// [`TASK_PATTERN`]: printable ASCII without `"` or `\`, not empty.
pub fn is_task_text(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\')
}

/// RFC 9110 `tchar`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c)
}

/// The patterns [`check`] implements; the Python side uses `re.search`.
fn pattern_matches(pattern: &str, s: &str) -> Option<bool> {
    Some(match pattern {
        NAME_PATTERN => {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        ENDPOINT_PATTERN => s.starts_with('/') || s.starts_with("http://") || s.starts_with("https://"),
        ENV_VAR_PATTERN => !s.is_empty() && !s.contains('='),
        HEADER_PATTERN => !s.is_empty() && s.chars().all(is_token_char),
        TASK_PATTERN => is_task_text(s),
        _ => return None,
    })
}

fn integer(min: u64, max: u64, expected: String) -> Json {
    json!({"type": "integer", "minimum": min, "maximum": max, "x-expected": expected})
}

fn number(min: f64, max: f64, exclusive_min: bool, expected: String) -> Json {
    let mut n = json!({"type": "number", "maximum": max, "x-expected": expected});
    n[if exclusive_min { "exclusiveMinimum" } else { "minimum" }] = json!(min);
    n
}

fn string(max_chars: u64, pattern: Option<&str>, expected: &str) -> Json {
    let mut s = json!({"type": "string", "minLength": 1, "maxLength": max_chars, "x-expected": expected});
    if let Some(p) = pattern {
        s["pattern"] = json!(p);
    }
    s
}

fn one_of(values: &[&str]) -> Json {
    json!({"type": "string", "enum": values, "x-expected": format!("valid values: {}", values.join(", "))})
}

fn nullable(mut node: Json) -> Json {
    let t = node["type"].clone();
    node["type"] = json!([t, "null"]);
    node
}

fn with_default(mut node: Json, default: Json) -> Json {
    node["default"] = default;
    node
}

fn object(props: Vec<(&str, Json)>, required: &[&str]) -> Json {
    let names: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
    let properties: serde_json::Map<String, Json> = props.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let mut o = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
        "x-expected": "must be a mapping",
    });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    debug_assert!(required.iter().all(|r| names.contains(r)));
    o
}

/// A section's fields with the defaults of its Rust `Default`.
fn section<T: serde::Serialize>(defaults: &T, props: Vec<(&str, Json)>) -> Json {
    let d = serde_json::to_value(defaults).unwrap_or_default();
    let props = props
        .into_iter()
        .map(|(k, v)| match d.get(k) {
            Some(default) => (k, with_default(v, default.clone())),
            None => (k, v),
        })
        .collect();
    let mut o = object(props, &[]);
    o["x-location"] = json!("path");
    with_default(o, d)
}

fn seconds(min_exclusive: bool, expected: &str) -> Json {
    number(
        0.0,
        MAX_SECONDS,
        min_exclusive,
        format!("{expected}, at most {MAX_SECONDS:.0}"),
    )
}

/// A pause: `wait` (every kind) or a session's `think_time` (no pacing:
/// that paces whole sessions, in `wait`).
fn pause(pacing: bool) -> Json {
    let secs = || seconds(false, "use a non-negative number of seconds");
    let variant = |kind: &str, fields: Vec<(&str, Json)>| {
        let mut props = vec![("kind", json!({"enum": [kind]}))];
        let mut required = vec!["kind"];
        for (name, node) in fields {
            props.push((name, node));
            required.push(name);
        }
        object(props, &required)
    };
    let mut variants = vec![
        variant("none", vec![]),
        variant("constant", vec![("seconds", secs())]),
        variant("between", vec![("min_s", secs()), ("max_s", secs())]),
    ];
    let tag_expected = if pacing {
        variants.push(variant("pacing", vec![("seconds", secs())]));
        "valid values: none, constant, between, pacing"
    } else {
        "valid values: none, constant, between (pacing applies to whole sessions: set it in `wait`)"
    };
    with_default(
        json!({
            "type": "object",
            "x-tag": "kind",
            "x-tag-expected": tag_expected,
            "x-expected": "must be a mapping with `kind`",
            "oneOf": variants,
        }),
        json!({"kind": "none"}),
    )
}

fn wait() -> Json {
    pause(true)
}

fn dataset() -> Json {
    let tokens = || {
        integer(
            1,
            MAX_OUTPUT_TOKENS,
            format!("use a positive token count, at most {MAX_OUTPUT_TOKENS}"),
        )
    };
    let variant = |kind: &str, fields: Vec<(&str, Json)>| {
        let mut props = vec![("kind", json!({"enum": [kind]}))];
        let mut required = vec!["kind"];
        for (name, node) in fields {
            props.push((name, node));
            required.push(name);
        }
        object(props, &required)
    };
    let output = with_default(
        json!({
            "type": "object",
            "x-tag": "kind",
            "x-tag-expected": "valid values: fixed, dataset, uniform",
            "x-expected": "must be a mapping with `kind`",
            "oneOf": [
                variant("fixed", vec![]),
                variant("dataset", vec![]),
                variant("uniform", vec![("min", tokens()), ("max", tokens())]),
            ],
        }),
        json!({"kind": "fixed"}),
    );
    let d = object(
        vec![
            (
                "path",
                string(
                    MAX_PATH_CHARS,
                    None,
                    "name the dataset file (relative: to the scenarios file)",
                ),
            ),
            (
                "format",
                with_default(one_of(&super::DatasetFormat::ALL), json!("jsonl")),
            ),
            (
                "seed",
                with_default(
                    integer(0, MAX_SEED, format!("use a whole number from 0 to {MAX_SEED}")),
                    json!(0),
                ),
            ),
            ("output", output),
            (
                "shared_storage",
                with_default(
                    json!({"type": "boolean", "x-expected": "use true or false"}),
                    json!(false),
                ),
            ),
            (
                "content",
                with_default(
                    nullable(json!({
                        "type": "string",
                        "maxLength": MAX_SHIPPED_DATASET_BYTES,
                        "x-expected": format!(
                            "the master ships at most {MAX_SHIPPED_DATASET_BYTES} bytes; \
                             use shared_storage for larger files"
                        ),
                    })),
                    Json::Null,
                ),
            ),
        ],
        &["path"],
    );
    with_default(nullable(d), Json::Null)
}

fn session() -> Json {
    let max_turns = u64::from(super::MAX_TURNS);
    let s = object(
        vec![
            (
                "turns",
                integer(
                    2,
                    max_turns,
                    format!("use 2 to {max_turns} turns (leave `session` out for single requests)"),
                ),
            ),
            (
                "turn_length",
                with_default(
                    nullable(integer(
                        1,
                        MAX_PROMPT_TOKENS,
                        format!(
                            "use a positive token count, at most {MAX_PROMPT_TOKENS} \
                             (absent: prompt_length - prefix_length)"
                        ),
                    )),
                    Json::Null,
                ),
            ),
            ("think_time", pause(false)),
            (
                "affinity_header",
                with_default(
                    nullable(string(
                        MAX_HEADER_CHARS,
                        Some(HEADER_PATTERN),
                        "use an HTTP header name, e.g. x-session-id",
                    )),
                    Json::Null,
                ),
            ),
        ],
        &["turns"],
    );
    with_default(nullable(s), Json::Null)
}

fn scenario() -> Json {
    let tokens = |max: u64| integer(1, max, format!("use a positive token count, at most {max}"));
    let mut s = object(
        vec![
            (
                "name",
                string(
                    MAX_NAME_CHARS,
                    Some(NAME_PATTERN),
                    "use letters, digits and _, not starting with a digit (it becomes a Python class name), \
                     at most 100 characters",
                ),
            ),
            (
                "weight",
                with_default(
                    integer(1, MAX_WEIGHT, format!("use a positive integer, at most {MAX_WEIGHT}")),
                    json!(super::default_weight()),
                ),
            ),
            ("provider", one_of(&Provider::ALL)),
            (
                "endpoint",
                with_default(
                    nullable(string(
                        MAX_ENDPOINT_CHARS,
                        Some(ENDPOINT_PATTERN),
                        "use a path starting with / or a full http(s) URL",
                    )),
                    Json::Null,
                ),
            ),
            (
                "model",
                string(
                    MAX_MODEL_CHARS,
                    None,
                    "name the model the server serves (1 to 256 characters)",
                ),
            ),
            ("prompt_length", tokens(MAX_PROMPT_TOKENS)),
            (
                "prefix_length",
                with_default(
                    integer(
                        0,
                        MAX_PROMPT_TOKENS,
                        "use a whole number of tokens less than prompt_length".into(),
                    ),
                    json!(0),
                ),
            ),
            ("output_length", tokens(MAX_OUTPUT_TOKENS)),
            (
                "api_key_env",
                with_default(
                    nullable(string(
                        MAX_NAME_CHARS,
                        Some(ENV_VAR_PATTERN),
                        "name an environment variable, e.g. OPENAI_API_KEY",
                    )),
                    Json::Null,
                ),
            ),
            (
                "temperature",
                with_default(
                    nullable(number(0.0, 2.0, false, "use a value between 0 and 2".into())),
                    Json::Null,
                ),
            ),
            (
                "task",
                nullable(string(
                    MAX_TASK_CHARS,
                    Some(TASK_PATTERN),
                    "use up to 1,000 characters of printable ASCII without quotes or backslashes",
                )),
            ),
            (
                "headers",
                with_default(
                    json!({
                        "type": "object",
                        "additionalProperties": {"type": "string", "x-expected": "use a string header value"},
                        "x-expected": "must be a mapping of header names to strings",
                    }),
                    json!({}),
                ),
            ),
            (
                "extra_body",
                with_default(
                    json!({"type": "object", "additionalProperties": true, "x-expected": "must be a mapping"}),
                    json!({}),
                ),
            ),
            ("wait", wait()),
            ("session", session()),
            ("dataset", dataset()),
        ],
        &["name", "provider", "model", "prompt_length", "output_length"],
    );
    s["x-location"] = json!("label");
    s["x-label"] = json!(["scenario", "name"]);
    s
}

fn load() -> Json {
    let mut phase = object(
        vec![
            (
                "rate",
                number(
                    0.0,
                    MAX_RATE,
                    false,
                    format!("use a non-negative requests/second figure, at most {MAX_RATE:.0}"),
                ),
            ),
            ("duration_s", seconds(true, "use a positive number of seconds")),
            (
                "ramp_s",
                with_default(seconds(false, "use 0 <= ramp_s <= duration_s"), json!(0.0)),
            ),
        ],
        &["rate", "duration_s"],
    );
    phase["x-location"] = json!("path");
    section(
        &LoadConfig::default(),
        vec![
            ("mode", one_of(&LoadMode::ALL)),
            (
                "phases",
                json!({
                    "type": "array",
                    "maxItems": MAX_PHASES,
                    "items": phase,
                    "x-expected": format!("must be a list of at most {MAX_PHASES} {{rate, duration_s, ramp_s}}"),
                }),
            ),
            ("arrival", one_of(&Arrival::ALL)),
            (
                "burstiness",
                number(
                    0.0,
                    MAX_BURSTINESS,
                    true,
                    format!("use a positive gamma shape (1 = Poisson), at most {MAX_BURSTINESS:.0}"),
                ),
            ),
            (
                "max_in_flight",
                integer(
                    1,
                    MAX_IN_FLIGHT,
                    format!("use a positive integer, at most {MAX_IN_FLIGHT}"),
                ),
            ),
            (
                "start_unix_s",
                nullable(number(
                    0.0,
                    MAX_UNIX_S,
                    false,
                    "a Unix time in seconds (the master sets it)".into(),
                )),
            ),
        ],
    )
}

/// The JSON Schema of the test definition (what `tokenswarm schema` prints).
pub fn schema() -> Json {
    let ms = || {
        nullable(number(
            0.0,
            MAX_SLO_MS,
            true,
            format!("use a positive number of milliseconds, at most {MAX_SLO_MS:.0}, or leave it out"),
        ))
    };
    let budget = || {
        nullable(integer(
            0,
            MAX_TOKEN_BUDGET,
            format!("use a non-negative whole number of tokens, at most {MAX_TOKEN_BUDGET}, or leave it out"),
        ))
    };
    let timeout = || seconds(true, "use a positive number of seconds");
    let mut root = object(
        vec![
            (
                "v",
                with_default(integer(1, 1, "only schema version 1 exists".into()), json!(1)),
            ),
            (
                "scenarios",
                json!({
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_SCENARIOS,
                    "items": scenario(),
                    "x-expected": format!("define at least one scenario, at most {MAX_SCENARIOS}"),
                }),
            ),
            ("load", load()),
            (
                "slo",
                section(
                    &super::Slo::default(),
                    vec![("ttft_ms", ms()), ("tpot_ms", ms()), ("e2e_ms", ms())],
                ),
            ),
            (
                "safety",
                section(
                    &Safety::default(),
                    vec![
                        ("warmup", json!({"type": "boolean", "x-expected": "use true or false"})),
                        (
                            "error_limit",
                            number(0.0, 1.0, false, "use a fraction between 0 and 1 (0 disables)".into()),
                        ),
                        (
                            "error_window",
                            integer(
                                1,
                                MAX_ERROR_WINDOW,
                                format!("use a positive number of requests, at most {MAX_ERROR_WINDOW}"),
                            ),
                        ),
                        ("input_token_budget", budget()),
                        ("output_token_budget", budget()),
                    ],
                ),
            ),
            (
                "timeouts",
                section(
                    &Timeouts::default(),
                    vec![
                        ("connect_s", timeout()),
                        ("first_token_s", timeout()),
                        ("total_s", timeout()),
                    ],
                ),
            ),
        ],
        &["scenarios"],
    );
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["title"] = json!("tokenswarm test definition");
    root["description"] = json!(
        "Generated by `tokenswarm schema` from src/scenario; do not edit. \
         Cross-field rules (unique names, prefix_length < prompt_length, wait and think_time min_s <= max_s, \
         dataset without session, dataset uniform min <= max, \
         open loop needs phases, ramp_s <= duration_s) are code on both sides."
    );
    root
}

/// The schema as committed: pretty JSON and a final newline.
pub fn emit() -> String {
    let mut text = serde_json::to_string_pretty(&*SCHEMA).unwrap_or_default();
    text.push('\n');
    text
}

static SCHEMA: LazyLock<Json> = LazyLock::new(schema);

/// One step of a path into the document.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn join(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where a message says it is: a location (`config`, `load`,
/// `scenario "Chat"`, `load.phases[1]`) and the field path inside it.
#[derive(Debug, Clone)]
struct At {
    location: String,
    field: Vec<Seg>,
    full: Vec<Seg>,
}

impl At {
    fn child(&self, seg: Seg) -> At {
        let mut a = self.clone();
        a.field.push(seg.clone());
        a.full.push(seg);
        a
    }

    fn fail(&self, value: Option<&Value>, expected: &str) -> ConfigError {
        ConfigError {
            location: self.location.clone(),
            field: join(&self.field),
            value: value.map(render).unwrap_or_default(),
            expected: expected.to_string(),
        }
    }
}

fn expected(node: &Json) -> &str {
    node.get("x-expected").and_then(Json::as_str).unwrap_or("is not valid")
}

fn types(node: &Json) -> Vec<&str> {
    match node.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    }
}

fn has_type(t: &str, v: &Value) -> bool {
    match (t, v) {
        ("object", Value::Mapping(_))
        | ("array", Value::Sequence(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("null", Value::Null) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(n)) => n.as_f64().is_some_and(f64::is_finite),
        _ => false,
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => render(other),
    }
}

/// Checks `doc` against the schema; the first problem, as a message.
pub(super) fn check(doc: &Value) -> Result<(), ConfigError> {
    let at = At {
        location: "config".into(),
        field: Vec::new(),
        full: Vec::new(),
    };
    walk(&SCHEMA, doc, at)
}

fn walk(node: &Json, v: &Value, mut at: At) -> Result<(), ConfigError> {
    let ts = types(node);
    if v.is_null() && ts.contains(&"null") {
        return Ok(());
    }
    if let (Some(tag), Some(branches)) = (node.get("x-tag").and_then(Json::as_str), node.get("oneOf")) {
        let Value::Mapping(m) = v else {
            return Err(at.fail(Some(v), expected(node)));
        };
        let tag_value = m.get(tag);
        let branch = branches.as_array().into_iter().flatten().find(|b| {
            let want = &b["properties"][tag]["enum"][0];
            matches!((want, tag_value), (Json::String(w), Some(Value::String(t))) if w == t)
        });
        let Some(branch) = branch else {
            let tag_expected = node.get("x-tag-expected").and_then(Json::as_str).unwrap_or("");
            return Err(at
                .child(Seg::Key(tag.into()))
                .fail(tag_value.or(Some(&Value::Null)), tag_expected));
        };
        return walk(branch, v, at);
    }
    if !ts.is_empty() && !ts.iter().any(|t| has_type(t, v)) {
        return Err(at.fail(Some(v), expected(node)));
    }
    if let Some(allowed) = node.get("enum").and_then(Json::as_array)
        && !allowed
            .iter()
            .any(|a| matches!((a, v), (Json::String(a), Value::String(s)) if a == s))
    {
        return Err(at.fail(Some(v), expected(node)));
    }
    match v {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            let too_short = node.get("minLength").and_then(Json::as_u64).is_some_and(|n| chars < n);
            let too_long = node.get("maxLength").and_then(Json::as_u64).is_some_and(|n| chars > n);
            let mismatch = node
                .get("pattern")
                .and_then(Json::as_str)
                .is_some_and(|p| pattern_matches(p, s) != Some(true));
            if too_short || too_long || mismatch {
                return Err(at.fail(Some(v), expected(node)));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let below = node.get("minimum").and_then(Json::as_f64).is_some_and(|m| x < m);
            let at_or_below = node
                .get("exclusiveMinimum")
                .and_then(Json::as_f64)
                .is_some_and(|m| x <= m);
            let above = node.get("maximum").and_then(Json::as_f64).is_some_and(|m| x > m);
            if below || at_or_below || above {
                return Err(at.fail(Some(v), expected(node)));
            }
        }
        Value::Sequence(items) => {
            let n = items.len() as u64;
            let few = node.get("minItems").and_then(Json::as_u64).is_some_and(|m| n < m);
            let many = node.get("maxItems").and_then(Json::as_u64).is_some_and(|m| n > m);
            if few || many {
                return Err(at.fail(Some(v), expected(node)));
            }
            if let Some(item) = node.get("items") {
                for (i, x) in items.iter().enumerate() {
                    walk(item, x, at.child(Seg::Index(i)))?;
                }
            }
        }
        Value::Mapping(m) => {
            match node.get("x-location").and_then(Json::as_str) {
                Some("path") => {
                    at.location = join(&at.full);
                    at.field.clear();
                }
                Some("label") => {
                    let label = node.get("x-label").and_then(Json::as_array);
                    let prefix = label.and_then(|l| l.first()).and_then(Json::as_str).unwrap_or("");
                    let key = label.and_then(|l| l.get(1)).and_then(Json::as_str).unwrap_or("");
                    at.location = match m.get(key) {
                        Some(name @ Value::String(_)) => format!("{prefix} {}", render(name)),
                        _ => join(&at.full),
                    };
                    at.field.clear();
                }
                _ => {}
            }
            let empty = serde_json::Map::new();
            let props = node.get("properties").and_then(Json::as_object).unwrap_or(&empty);
            let additional = node.get("additionalProperties");
            for (k, x) in m {
                let name = key_text(k);
                if props.contains_key(&name) {
                    continue;
                }
                match additional {
                    Some(Json::Bool(false)) => {
                        let mut valid: Vec<&str> = props.keys().map(String::as_str).collect();
                        valid.sort_unstable();
                        let msg = format!("unknown field; valid fields: {}", valid.join(", "));
                        return Err(at.child(Seg::Key(name)).fail(Some(x), &msg));
                    }
                    Some(schema @ Json::Object(_)) => walk(schema, x, at.child(Seg::Key(name)))?,
                    _ => {}
                }
            }
            let mut required: Vec<&str> = node
                .get("required")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .collect();
            required.sort_unstable();
            for r in required {
                if m.get(r).is_none() {
                    let msg = props.get(r).map_or("is required", expected);
                    return Err(at.child(Seg::Key(r.into())).fail(None, msg));
                }
            }
            let mut names: Vec<&String> = props.keys().collect();
            names.sort_unstable();
            for name in names {
                if let Some(x) = m.get(name.as_str()) {
                    walk(&props[name], x, at.child(Seg::Key(name.clone())))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// How a value appears in a message, the same on both sides (`_render` in
/// config.py): JSON-like, floats as Python's `repr`, long texts cut.
pub fn render(v: &Value) -> String {
    let full = render_full(v);
    if full.chars().count() > RENDER_MAX_CHARS {
        let cut: String = full.chars().take(RENDER_MAX_CHARS - 3).collect();
        format!("{cut}...")
    } else {
        full
    }
}

/// Longest value rendering in a message.
const RENDER_MAX_CHARS: usize = 120;

fn render_full(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                float_repr(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Sequence(items) => format!("[{}]", items.iter().map(render_full).collect::<Vec<_>>().join(", ")),
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, x)| format!("{}: {}", render_full(k), render_full(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => format!("!{} {}", t.tag, render_full(&t.value)),
    }
}

/// A float as Python's `repr` writes it: shortest round-trip digits, fixed
/// notation for decimal exponents -4 to 15, else `d.ddde+XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = if digits.is_empty() { "0".to_string() } else { digits };
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let decpt = exp + 1;
    let n = digits.len() as i32;
    let body = if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            format!("0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt < n {
            format!("{}.{}", &digits[..decpt as usize], &digits[decpt as usize..])
        } else {
            format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
        }
    } else {
        let rest = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}{rest}e{esign}{:02}", &digits[..1], exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_as_python_repr() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (2_000_000.0, "2000000.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e30, "1e+30"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1234.5, "1234.5"),
            (-2.5, "-2.5"),
            (1e-300, "1e-300"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn every_pattern_in_the_schema_is_implemented() {
        fn visit(node: &Json, found: &mut Vec<String>) {
            match node {
                Json::Object(m) => {
                    if let Some(Json::String(p)) = m.get("pattern") {
                        found.push(p.clone());
                    }
                    m.values().for_each(|v| visit(v, found));
                }
                Json::Array(items) => items.iter().for_each(|v| visit(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        visit(&schema(), &mut found);
        assert_eq!(found.len(), 5, "{found:?}");
        for p in found {
            assert!(pattern_matches(&p, "x").is_some(), "{p} has no implementation");
        }
    }

    #[test]
    fn every_field_states_what_is_valid() {
        fn visit(node: &Json, path: &str) {
            let Json::Object(m) = node else { return };
            if m.contains_key("type") {
                assert!(m.contains_key("x-expected"), "{path} has no x-expected");
            }
            for (k, v) in m {
                visit(v, &format!("{path}/{k}"));
            }
        }
        visit(&schema(), "");
    }
}
