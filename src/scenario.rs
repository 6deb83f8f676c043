//! The test definition: scenarios (load types), load shape, SLOs, safety
//! limits and timeouts.
//!
//! One YAML file (`locustfiles/scenarios.yaml`) is read by both sides: the
//! master's locustfile defines one Locust user class per scenario and sends
//! the parsed document to every worker inside `spawn.parsed_options`
//! (key `tokenswarm_config`), so a worker needs nothing but the master's
//! address. This module owns the typed shape of that document and its
//! validation; it knows nothing of msgpack, YAML files on disk or HTTP.
//!
//! Units are in the field names: token counts are integers, times are
//! `_s` (seconds, float) or `_ms` (milliseconds, float).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

impl Provider {
    pub const ALL: [&'static str; 3] = ["openai-chat", "openai-completions", "anthropic"];

    /// The endpoint used when a scenario names none.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Provider::OpenaiChat => "/v1/chat/completions",
            Provider::OpenaiCompletions => "/v1/completions",
            Provider::Anthropic => "/v1/messages",
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
    Constant { seconds: f64 },
    /// A uniform random pause in `[min_s, max_s]`.
    Between { min_s: f64, max_s: f64 },
    /// Start a request every `seconds` at most (Locust's constant_pacing).
    Pacing { seconds: f64 },
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
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra top-level JSON body fields (e.g. `ignore_eos`, `min_tokens`).
    #[serde(default)]
    pub extra_body: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub wait: Wait,
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

/// Inter-arrival time distribution in open-loop mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    Constant,
    #[default]
    Poisson,
    Gamma,
}

/// One open-loop phase: `rate` req/s (cluster total), reached by a linear
/// ramp of `ramp_s` seconds from the previous phase's rate, then held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub rate: f64,
    pub duration_s: f64,
    #[serde(default)]
    pub ramp_s: f64,
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
    #[serde(default = "default_connect_s")]
    pub connect_s: f64,
    #[serde(default = "default_first_token_s")]
    pub first_token_s: f64,
    #[serde(default = "default_total_s")]
    pub total_s: f64,
}

fn default_connect_s() -> f64 {
    10.0
}
fn default_first_token_s() -> f64 {
    120.0
}
fn default_total_s() -> f64 {
    600.0
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_s: default_connect_s(),
            first_token_s: default_first_token_s(),
            total_s: default_total_s(),
        }
    }
}

/// A configuration error that names where it is and what would be valid.
/// A document that does not parse (unknown field, wrong type) has no single
/// value to name: `field` and `value` are empty then and `expected` holds the
/// parser's own words, which name the field path and what it expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// e.g. `scenario "ChatShort"` or `load`.
    pub location: String,
    pub field: String,
    pub value: String,
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.location, self.expected)
        } else {
            write!(
                f,
                "{}: field `{}` has value {}; {}",
                self.location, self.field, self.value, self.expected
            )
        }
    }
}

fn err(location: impl Into<String>, field: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError {
        location: location.into(),
        field: field.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// The longest wait or phase accepted: about 11.6 days. Longer values are
/// typos, and would overflow the monotonic clock's arithmetic.
const MAX_SECONDS: f64 = 1_000_000.0;

fn positive_finite(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl TestConfig {
    /// Parses a YAML document and validates it.
    pub fn from_yaml(text: &str) -> Result<TestConfig, ConfigError> {
        let cfg: TestConfig = serde_yaml::from_str(text).map_err(|e| ConfigError {
            location: match e.location() {
                Some(l) => format!("scenarios file, line {} column {}", l.line(), l.column()),
                None => "scenarios file".into(),
            },
            field: String::new(),
            value: String::new(),
            // serde_yaml appends the position, which the location holds.
            expected: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field that serde's types cannot: ranges, relations,
    /// uniqueness. The first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.v != 1 {
            return Err(err("config", "v", self.v, "only schema version 1 exists"));
        }
        if self.scenarios.is_empty() {
            return Err(err("config", "scenarios", "[]", "define at least one scenario"));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.scenarios {
            let at = format!("scenario {:?}", s.name);
            let starts_ok = s.name.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !starts_ok || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(
                    &at,
                    "name",
                    format!("{:?}", s.name),
                    "use letters, digits and _, not starting with a digit (it becomes a Python class name)",
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(err(
                    &at,
                    "name",
                    format!("{:?}", s.name),
                    "scenario names must be unique",
                ));
            }
            if s.weight == 0 {
                return Err(err(&at, "weight", 0, "use a positive integer"));
            }
            if s.model.is_empty() {
                return Err(err(&at, "model", "\"\"", "name the model the server serves"));
            }
            if s.prompt_length == 0 {
                return Err(err(&at, "prompt_length", 0, "use a positive token count"));
            }
            if s.prefix_length >= s.prompt_length {
                return Err(err(
                    &at,
                    "prefix_length",
                    s.prefix_length,
                    &format!(
                        "must be less than prompt_length ({}) so each request has a unique part",
                        s.prompt_length
                    ),
                ));
            }
            if s.output_length == 0 {
                return Err(err(&at, "output_length", 0, "use a positive token count"));
            }
            if let Some(endpoint) = &s.endpoint
                && !(endpoint.starts_with('/') || endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                return Err(err(
                    &at,
                    "endpoint",
                    format!("{endpoint:?}"),
                    "use a path starting with / or a full http(s) URL",
                ));
            }
            if let Some(var) = &s.api_key_env
                && (var.is_empty() || var.contains('='))
            {
                return Err(err(
                    &at,
                    "api_key_env",
                    format!("{var:?}"),
                    "name an environment variable, e.g. OPENAI_API_KEY",
                ));
            }
            if let Some(t) = s.temperature
                && !(0.0..=2.0).contains(&t)
            {
                return Err(err(&at, "temperature", t, "use a value between 0 and 2"));
            }
            match s.wait {
                Wait::None => {}
                Wait::Constant { seconds } | Wait::Pacing { seconds } => {
                    if !(seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&seconds)) {
                        return Err(err(
                            &at,
                            "wait.seconds",
                            seconds,
                            "use a number of seconds between 0 and 1000000",
                        ));
                    }
                }
                Wait::Between { min_s, max_s } => {
                    if !(min_s.is_finite()
                        && max_s.is_finite()
                        && 0.0 <= min_s
                        && min_s <= max_s
                        && max_s <= MAX_SECONDS)
                    {
                        return Err(err(
                            &at,
                            "wait",
                            format!("min_s={min_s}, max_s={max_s}"),
                            "need 0 <= min_s <= max_s <= 1000000",
                        ));
                    }
                }
            }
        }
        let load = &self.load;
        if load.mode == LoadMode::Open && load.phases.is_empty() {
            return Err(err(
                "load",
                "phases",
                "[]",
                "open-loop mode needs at least one phase {rate, duration_s}",
            ));
        }
        for (i, p) in load.phases.iter().enumerate() {
            let at = format!("load.phases[{i}]");
            if !(p.rate.is_finite() && p.rate >= 0.0) {
                return Err(err(&at, "rate", p.rate, "use a non-negative requests/second figure"));
            }
            if !(positive_finite(p.duration_s) && p.duration_s <= MAX_SECONDS) {
                return Err(err(
                    &at,
                    "duration_s",
                    p.duration_s,
                    "use a positive number of seconds, at most 1000000",
                ));
            }
            if !(p.ramp_s.is_finite() && p.ramp_s >= 0.0 && p.ramp_s <= p.duration_s) {
                return Err(err(&at, "ramp_s", p.ramp_s, "use 0 <= ramp_s <= duration_s"));
            }
        }
        if !positive_finite(load.burstiness) {
            return Err(err(
                "load",
                "burstiness",
                load.burstiness,
                "use a positive gamma shape (1 = Poisson)",
            ));
        }
        if load.max_in_flight == 0 {
            return Err(err("load", "max_in_flight", 0, "use a positive integer"));
        }
        for (field, v) in [
            ("ttft_ms", self.slo.ttft_ms),
            ("tpot_ms", self.slo.tpot_ms),
            ("e2e_ms", self.slo.e2e_ms),
        ] {
            if let Some(v) = v
                && !positive_finite(v)
            {
                return Err(err(
                    "slo",
                    field,
                    v,
                    "use a positive number of milliseconds, or leave it out",
                ));
            }
        }
        let sf = &self.safety;
        if !(sf.error_limit.is_finite() && (0.0..=1.0).contains(&sf.error_limit)) {
            return Err(err(
                "safety",
                "error_limit",
                sf.error_limit,
                "use a fraction between 0 and 1 (0 disables)",
            ));
        }
        if sf.error_window == 0 {
            return Err(err("safety", "error_window", 0, "use a positive number of requests"));
        }
        for (field, v) in [
            ("connect_s", self.timeouts.connect_s),
            ("first_token_s", self.timeouts.first_token_s),
            ("total_s", self.timeouts.total_s),
        ] {
            if !positive_finite(v) {
                return Err(err("timeouts", field, v, "use a positive number of seconds"));
            }
        }
        Ok(())
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
        assert_eq!(c.scenarios[0].wait, Wait::Between { min_s: 0.5, max_s: 1.0 });
        assert_eq!(c.load.phases[1].ramp_s, 5.0);
        assert_eq!(c.safety.error_window, 30);
        assert_eq!(c.timeouts.connect_s, 10.0);
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
    fn open_loop_without_phases_is_rejected() {
        let bad = GOOD.replace(
            "phases: [{rate: 200, duration_s: 30}, {rate: 400, duration_s: 30, ramp_s: 5}]",
            "phases: []",
        );
        let e = TestConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("phases"), "{e}");
    }
}
