//! The test definition: scenarios (load types), load shape, SLOs, safety
//! limits and timeouts.
//!
//! One YAML file (`locustfiles/scenarios.yaml`) is read by the master: its
//! locustfile defines one Locust user class per scenario and sends the
//! parsed document to every worker inside `spawn.parsed_options` (key
//! `tokenswarm_config`), so a worker needs nothing but the master's
//! address. `tokenswarm check FILE` and `tokenswarm run FILE --host URL`
//! read the same file directly. This module owns the typed shape of that
//! document, its limits, defaults and validation; it knows nothing of
//! msgpack, YAML files on disk or HTTP. [`schema`] turns the limits and
//! defaults into the JSON Schema that the master validates with (see there
//! for why).
//!
//! Typed at the edge: durations are `Duration`s from the moment a document
//! is read (bounded by [`crate::units::MAX_SECONDS`]); token counts, rates
//! and user counts are bounded by the limits in [`schema`]. In the document,
//! units are in the field names: token counts are integers, times are `_s`
//! (seconds, float) or `_ms` (milliseconds, float).

pub mod schema;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::serde_seconds;

/// The whole test definition, as in `scenarios.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// Schema version; only 1 exists.
    #[serde(default = "one")]
    pub v: u32,
    pub scenarios: Vec<Scenario>,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub timeouts: Timeouts,
}

fn one() -> u32 {
    1
}

/// Which wire API a scenario speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// OpenAI `/v1/chat/completions`.
    OpenaiChat,
    /// OpenAI legacy `/v1/completions`.
    OpenaiCompletions,
    /// Anthropic `/v1/messages`.
    Anthropic,
    /// Google Gemini `/v1beta/models/{model}:streamGenerateContent?alt=sse`.
    Gemini,
}

impl Provider {
    pub const ALL: [&'static str; 4] = ["openai-chat", "openai-completions", "anthropic", "gemini"];

    /// The endpoint used when a scenario names none. `{model}` in an
    /// endpoint (this default or a scenario's own) is replaced by the
    /// scenario's model, path-encoded (`llm::request::url`).
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Provider::OpenaiChat => "/v1/chat/completions",
            Provider::OpenaiCompletions => "/v1/completions",
            Provider::Anthropic => "/v1/messages",
            Provider::Gemini => "/v1beta/models/{model}:streamGenerateContent?alt=sse",
        }
    }
}

/// How a closed-loop user waits between its requests (Locust's wait_time).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Wait {
    /// Next request right after the previous one ends.
    #[default]
    None,
    /// A fixed pause after each request.
    Constant {
        #[serde(with = "serde_seconds")]
        seconds: Duration,
    },
    /// A uniform random pause in `[min_s, max_s]`.
    Between {
        #[serde(rename = "min_s", with = "serde_seconds")]
        min: Duration,
        #[serde(rename = "max_s", with = "serde_seconds")]
        max: Duration,
    },
    /// Start a request every `seconds` at most (Locust's constant_pacing).
    Pacing {
        #[serde(with = "serde_seconds")]
        seconds: Duration,
    },
}

/// One load type: a Locust user class on the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The Locust user class name and the request name in Locust's table.
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    pub provider: Provider,
    /// Path (or absolute URL) of the endpoint; provider default when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub model: String,
    /// Total prompt length in tokens, prefix included.
    pub prompt_length: u64,
    /// Leading prompt tokens shared by every request of this scenario.
    #[serde(default)]
    pub prefix_length: u64,
    /// Requested output length in tokens (`max_tokens`).
    pub output_length: u64,
    /// Name of the environment variable holding the API key (never the key).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// The instruction that ends each synthetic prompt, to make the server
    /// write at least `output_length` tokens (`llm::prompt::TASK` when
    /// absent; tokenflood's run suites set their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra top-level JSON body fields (e.g. `ignore_eos`, `min_tokens`).
    #[serde(default)]
    pub extra_body: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub wait: Wait,
    /// Multi-turn sessions: absent, every request stands alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// Prompts drawn from a file (`crate::dataset`) instead of synthetic
    /// ones; `prompt_length` is then the mean prompt length expected (for
    /// the master's token estimate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
}

/// Where a dataset scenario's prompts come from and how they are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The file, on the master (relative paths: to the scenarios file), or
    /// on every worker with `shared_storage`.
    pub path: String,
    #[serde(default)]
    pub format: DatasetFormat,
    /// Seeds the sampling order (the same on every worker).
    #[serde(default)]
    pub seed: u64,
    /// Each request's `max_tokens`.
    #[serde(default)]
    pub output: OutputLength,
    /// Workers read `path` themselves (shared storage) instead of the
    /// master shipping the file's text in `content`.
    #[serde(default)]
    pub shared_storage: bool,
    /// The file's text, set by the master (at most
    /// [`schema::MAX_SHIPPED_DATASET_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Dataset file formats (`crate::dataset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// One JSON object a line: `{"prompt": ..}` or `{"messages": [..]}`,
    /// optionally `"output_length"`.
    #[default]
    Jsonl,
    /// ShareGPT: `{"conversations": [{"from", "value"}, ..]}` records, as a
    /// JSON array or one a line.
    Sharegpt,
}

impl DatasetFormat {
    pub const ALL: [&'static str; 2] = ["jsonl", "sharegpt"];
}

/// How a dataset request's output length is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputLength {
    /// The scenario's `output_length`.
    #[default]
    Fixed,
    /// The record's own (`output_length`; ShareGPT: the words of the reply).
    Dataset,
    /// Uniform in `[min, max]` tokens, seeded per request.
    Uniform { min: u64, max: u64 },
}

/// A multi-turn chat session (one closed-loop iteration or one open-loop
/// arrival): turn 1 sends the scenario's prompt; each later turn sends the
/// whole conversation so far (every earlier prompt *and the server's
/// answers*) plus a new user message, so a server's prefix cache can reuse
/// everything but the newest message, as real chat traffic lets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Requests per session, at least 2 (1 is a plain scenario).
    pub turns: u32,
    /// Tokens of each later turn's new user message; absent:
    /// `prompt_length - prefix_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_length: Option<u64>,
    /// Pause between the end of one turn and the next (the user reading and
    /// typing): `none`, `constant` or `between`.
    #[serde(default)]
    pub think_time: Wait,
    /// Name of a header that carries an id unique to the session (e.g.
    /// `x-session-id`), for routers that keep a session on one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_header: Option<String>,
}

/// Most turns a session may have: the conversation is held in memory and
/// resent each turn, so its size grows with the square of the turns.
pub const MAX_TURNS: u32 = 64;

impl Session {
    /// Tokens of the new user message of turns 2 and later.
    pub fn turn_length(&self, s: &Scenario) -> u64 {
        self.turn_length
            .unwrap_or(s.prompt_length.saturating_sub(s.prefix_length))
    }
}

impl Scenario {
    /// The output tokens each request should get (0 for dataset prompts
    /// whose output length varies: no divergence check).
    pub fn target_output_tokens(&self) -> u64 {
        match &self.dataset {
            Some(d) if d.output != OutputLength::Fixed => 0,
            _ => self.output_length,
        }
    }

    /// Requests per iteration: the session's turns, or 1.
    pub fn turns(&self) -> u32 {
        self.session.as_ref().map_or(1, |s| s.turns)
    }

    /// The prompt tokens turn `turn` (0-based) should send: the first
    /// prompt, then per earlier turn its answer and a new message.
    /// Dataset prompts have no target (0: no divergence check).
    pub fn target_prompt_tokens(&self, turn: u32) -> u64 {
        if self.dataset.is_some() {
            return 0;
        }
        match &self.session {
            None => self.prompt_length,
            Some(sess) => self.prompt_length.saturating_add(
                u64::from(turn).saturating_mul(self.output_length.saturating_add(sess.turn_length(self))),
            ),
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// Closed loop (users) or open loop (arrival rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    #[default]
    Closed,
    Open,
}

impl LoadMode {
    pub const ALL: [&'static str; 2] = ["closed", "open"];
}

/// Inter-arrival time distribution in open-loop mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    Constant,
    #[default]
    Poisson,
    Gamma,
}

impl Arrival {
    pub const ALL: [&'static str; 3] = ["constant", "poisson", "gamma"];
}

/// One open-loop phase: `rate` req/s (cluster total), reached by a linear
/// ramp of `ramp_s` seconds from the previous phase's rate, then held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub rate: f64,
    #[serde(rename = "duration_s", with = "serde_seconds")]
    pub duration: Duration,
    #[serde(rename = "ramp_s", default, with = "serde_seconds")]
    pub ramp: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    #[serde(default)]
    pub mode: LoadMode,
    /// Open loop: rate phases, cluster totals.
    #[serde(default)]
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub arrival: Arrival,
    /// Gamma shape parameter (1 = Poisson; <1 burstier; >1 smoother).
    #[serde(default = "default_burstiness")]
    pub burstiness: f64,
    /// Cap on in-flight requests per worker in open-loop mode.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Open loop: when the phases began (Unix seconds), set by the master
    /// at test start so that every worker, including one that joins late,
    /// follows the same phase clock. Absent: each worker starts its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix_s: Option<f64>,
}

fn default_burstiness() -> f64 {
    1.0
}
fn default_max_in_flight() -> u32 {
    10_000
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            mode: LoadMode::Closed,
            phases: Vec::new(),
            arrival: Arrival::Poisson,
            burstiness: default_burstiness(),
            max_in_flight: default_max_in_flight(),
            start_unix_s: None,
        }
    }
}

/// Service level objectives for goodput; a request is good when it succeeds
/// and meets every SLO that is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    #[serde(default)]
    pub e2e_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    /// One request per scenario must succeed before load starts.
    #[serde(default = "yes")]
    pub warmup: bool,
    /// Stop when more than this fraction of the last `error_window`
    /// requests failed (0 disables).
    #[serde(default = "default_error_limit")]
    pub error_limit: f64,
    #[serde(default = "default_error_window")]
    pub error_window: u32,
    #[serde(default)]
    pub input_token_budget: Option<u64>,
    #[serde(default)]
    pub output_token_budget: Option<u64>,
}

fn yes() -> bool {
    true
}
fn default_error_limit() -> f64 {
    0.3
}
fn default_error_window() -> u32 {
    30
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            warmup: true,
            error_limit: default_error_limit(),
            error_window: default_error_window(),
            input_token_budget: None,
            output_token_budget: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(rename = "connect_s", default = "default_connect", with = "serde_seconds")]
    pub connect: Duration,
    #[serde(rename = "first_token_s", default = "default_first_token", with = "serde_seconds")]
    pub first_token: Duration,
    #[serde(rename = "total_s", default = "default_total", with = "serde_seconds")]
    pub total: Duration,
}

fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_first_token() -> Duration {
    Duration::from_secs(120)
}
fn default_total() -> Duration {
    Duration::from_secs(600)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            first_token: default_first_token(),
            total: default_total(),
        }
    }
}

/// A configuration error that names where it is and what would be valid.
/// `value` is the offending value as [`schema::render`] writes it, empty
/// when the field is missing. A document that does not parse (YAML syntax)
/// has no single value to name: `field` is empty then and `expected` holds
/// the parser's own words. The master's `config.ConfigError` prints the
/// same text for the same document (tests/fixtures/schema_corpus).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// e.g. `scenario "ChatShort"`, `load` or `load.phases[1]`.
    pub location: String,
    pub field: String,
    pub value: String,
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.location, self.expected)
        } else if self.value.is_empty() {
            write!(
                f,
                "{}: field `{}` is missing; {}",
                self.location, self.field, self.expected
            )
        } else {
            write!(
                f,
                "{}: field `{}` has value {}; {}",
                self.location, self.field, self.value, self.expected
            )
        }
    }
}

fn err(location: impl Into<String>, field: &str, value: String, expected: String) -> ConfigError {
    ConfigError {
        location: location.into(),
        field: field.into(),
        value,
        expected,
    }
}

/// The rules that relate two fields, on a document that passed the schema
/// (so every type is right). Mirrored by `_cross_field_rules` in
/// `locustfiles/tokenswarm_master/config.py`, in the same order.
fn cross_field_rules(doc: &serde_yaml::Value) -> Result<(), ConfigError> {
    use schema::render;
    use serde_yaml::Value;
    let null = Value::Null;
    let get = |v: &'_ Value, k: &str| -> Value { v.get(k).cloned().unwrap_or(Value::Null) };
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut seen = std::collections::HashSet::new();
    for s in doc.get("scenarios").and_then(Value::as_sequence).into_iter().flatten() {
        let name = get(s, "name");
        let at = format!("scenario {}", render(&name));
        if !seen.insert(name.as_str().unwrap_or_default().to_string()) {
            return Err(err(&at, "name", render(&name), "scenario names must be unique".into()));
        }
        let prompt = get(s, "prompt_length");
        let prefix = s.get("prefix_length").unwrap_or(&null);
        if !prefix.is_null() && num(prefix) >= num(&prompt) {
            return Err(err(
                &at,
                "prefix_length",
                render(prefix),
                format!(
                    "must be less than prompt_length ({}) so each request has a unique part",
                    render(&prompt)
                ),
            ));
        }
        let think = get(&get(s, "session"), "think_time");
        for (field, wait) in [("wait", get(s, "wait")), ("session.think_time", think)] {
            if wait.get("kind").and_then(Value::as_str) == Some("between") {
                let (min, max) = (get(&wait, "min_s"), get(&wait, "max_s"));
                if num(&min) > num(&max) {
                    return Err(err(
                        &at,
                        field,
                        format!("min_s={}, max_s={}", render(&min), render(&max)),
                        "need min_s <= max_s".into(),
                    ));
                }
            }
        }
    }
    for s in doc.get("scenarios").and_then(Value::as_sequence).into_iter().flatten() {
        let at = format!("scenario {}", render(&get(s, "name")));
        let dataset = get(s, "dataset");
        if dataset.is_null() {
            continue;
        }
        if !get(s, "session").is_null() {
            return Err(err(
                &at,
                "dataset",
                render(&get(&dataset, "path")),
                "dataset prompts are single requests: leave out `session` or `dataset`".into(),
            ));
        }
        let output = get(&dataset, "output");
        if output.get("kind").and_then(Value::as_str) == Some("uniform") {
            let (min, max) = (get(&output, "min"), get(&output, "max"));
            if num(&min) > num(&max) {
                return Err(err(
                    &at,
                    "dataset.output",
                    format!("min={}, max={}", render(&min), render(&max)),
                    "need min <= max".into(),
                ));
            }
        }
    }
    let load = get(doc, "load");
    let phases = load
        .get("phases")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    if load.get("mode").and_then(Value::as_str) == Some("open") && phases.is_empty() {
        return Err(err(
            "load",
            "phases",
            "[]".into(),
            "open-loop mode needs at least one phase {rate, duration_s}".into(),
        ));
    }
    for (i, p) in phases.iter().enumerate() {
        let (ramp, duration) = (get(p, "ramp_s"), get(p, "duration_s"));
        if !ramp.is_null() && num(&ramp) > num(&duration) {
            return Err(err(
                format!("load.phases[{i}]"),
                "ramp_s",
                render(&ramp),
                format!("use 0 <= ramp_s <= duration_s ({})", render(&duration)),
            ));
        }
    }
    Ok(())
}

impl TestConfig {
    /// Parses a YAML document and validates it.
    pub fn from_yaml(text: &str) -> Result<TestConfig, ConfigError> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
            location: match e.location() {
                Some(l) => format!("scenarios file, line {} column {}", l.line(), l.column()),
                None => "scenarios file".into(),
            },
            field: String::new(),
            value: String::new(),
            // serde_yaml appends the position, which the location holds.
            expected: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        TestConfig::from_value(doc)
    }

    /// Validates a document as the master sent it (JSON-like data).
    pub fn from_json(doc: serde_json::Value) -> Result<TestConfig, ConfigError> {
        let doc = serde_yaml::to_value(doc).map_err(|e| ConfigError {
            location: "config".into(),
            field: String::new(),
            value: String::new(),
            expected: format!("cannot be read: {e}"),
        })?;
        TestConfig::from_value(doc)
    }

    /// Checks a parsed document against the schema and the cross-field
    /// rules, then converts it to the typed config.
    pub fn from_value(doc: serde_yaml::Value) -> Result<TestConfig, ConfigError> {
        schema::check(&doc)?;
        cross_field_rules(&doc)?;
        // The schema admitted it, so this fails only if the schema and the
        // types disagree (the corpus test guards that).
        serde_yaml::from_value(doc).map_err(|e| ConfigError {
            location: "config".into(),
            field: String::new(),
            value: String::new(),
            expected: format!("does not match this worker's types: {e}"),
        })
    }

    /// Checks a typed config (e.g. built in code) by the same rules as a
    /// document: the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let doc = serde_yaml::to_value(self).map_err(|e| ConfigError {
            location: "config".into(),
            field: String::new(),
            value: String::new(),
            expected: format!("cannot be written: {e}"),
        })?;
        schema::check(&doc)?;
        cross_field_rules(&doc)
    }

    pub fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    pub fn scenario_names(&self) -> Vec<&str> {
        self.scenarios.iter().map(|s| s.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
scenarios:
  - name: ChatShort
    provider: openai-chat
    model: m
    prompt_length: 128
    prefix_length: 64
    output_length: 32
    wait: {kind: between, min_s: 0.5, max_s: 1.0}
  - name: Msgs
    weight: 2
    provider: anthropic
    model: m
    prompt_length: 10
    output_length: 5
load:
  mode: open
  phases: [{rate: 200, duration_s: 30}, {rate: 400, duration_s: 30, ramp_s: 5}]
slo: {ttft_ms: 500}
"#;

    #[test]
    fn parses_a_full_document_with_defaults() {
        let c = TestConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.scenarios.len(), 2);
        assert_eq!(c.scenarios[1].weight, 2);
        assert_eq!(
            c.scenarios[0].wait,
            Wait::Between {
                min: Duration::from_millis(500),
                max: Duration::from_secs(1)
            }
        );
        assert_eq!(c.load.phases[1].ramp, Duration::from_secs(5));
        assert_eq!(c.safety.error_window, 30);
        assert_eq!(c.timeouts.connect, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_scenario_field_and_value() {
        let bad = GOOD.replace("prefix_length: 64", "prefix_length: 128");
        let e = TestConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(
            e.contains("ChatShort") && e.contains("prefix_length") && e.contains("128"),
            "{e}"
        );
    }

    #[test]
    fn unknown_provider_lists_valid_ones() {
        let bad = GOOD.replace("provider: anthropic", "provider: antropic");
        let e = TestConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("antropic") && e.contains("openai-chat"), "{e}");
    }

    #[test]
    fn sessions_parse_and_bad_ones_name_the_field() {
        let doc = GOOD.replace(
            "    wait: {kind: between, min_s: 0.5, max_s: 1.0}",
            "    session: {turns: 3, think_time: {kind: constant, seconds: 0.5}, affinity_header: x-session-id}",
        );
        let c = TestConfig::from_yaml(&doc).unwrap();
        let s = &c.scenarios[0];
        assert_eq!(s.turns(), 3);
        assert_eq!(c.scenarios[1].turns(), 1);
        // 128 + 2 * (32 answer + 64 new message)
        assert_eq!(s.target_prompt_tokens(2), 128 + 2 * (32 + 64));
        for (from, to, field) in [
            ("turns: 3", "turns: 1", "session.turns"),
            ("turns: 3", "turns: 3, turn_length: 0", "session.turn_length"),
            (
                "kind: constant, seconds: 0.5",
                "kind: pacing, seconds: 1",
                "session.think_time.kind",
            ),
            ("x-session-id", "'x session'", "session.affinity_header"),
        ] {
            let e = TestConfig::from_yaml(&doc.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("ChatShort"), "{e}");
        }
    }

    #[test]
    fn open_loop_without_phases_is_rejected() {
        let bad = GOOD.replace(
            "phases: [{rate: 200, duration_s: 30}, {rate: 400, duration_s: 30, ramp_s: 5}]",
            "phases: []",
        );
        let e = TestConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("phases"), "{e}");
    }

    /// Issue 13: a master (or anyone on the master link) sending
    /// `prompt_length: 1e12` gets a clear error, not an allocation abort.
    #[test]
    fn wire_documents_are_bounded_like_files() {
        let doc = serde_json::json!({"scenarios": [{"name": "A", "provider": "openai-chat", "model": "m",
            "prompt_length": 1_000_000_000_000u64, "output_length": 5}]});
        let e = TestConfig::from_json(doc).unwrap_err().to_string();
        assert!(e.contains("prompt_length") && e.contains("10000000"), "{e}");
    }

    /// The serde helpers bound durations even without the schema walk.
    #[test]
    fn durations_are_bounded_at_deserialization() {
        let phase = serde_json::json!({"rate": 1.0, "duration_s": 1e30});
        let e = serde_json::from_value::<Phase>(phase).unwrap_err().to_string();
        assert!(e.contains("1000000"), "{e}");
        let mut c = TestConfig::from_yaml(GOOD).unwrap();
        c.scenarios[0].wait = Wait::Constant {
            seconds: Duration::from_secs(2_000_000),
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("wait.seconds") && e.contains("2000000"), "{e}");
    }
}
