//! tokenflood's two input files, as tokenflood documents them: the run
//! suite (phases, load types, percentiles, budgets, error limit, task,
//! token set) and the endpoint spec (provider, model, base URL, key
//! variable, deployment, extra headers). This module owns their typed
//! shape, their validation and their translation into tokenswarm's own
//! [`TestConfig`]; also the check that a tokenswarm scenarios file has a
//! run suite's shape ([`plan_from_scenarios`], for `tokenswarm run
//! SCENARIOS.yaml --host URL`). It sends nothing and reads no file.
//!
//! Every field of both formats is accepted; an unknown one is an error that
//! names it and lists the valid ones (serde's `deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::{Arrival, LoadConfig, LoadMode, Phase, Provider, Safety, Scenario, Slo, TestConfig};

/// A problem in one of the two files, naming the field, the value and what
/// would be valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SpecError {
    /// `run suite` or `endpoint spec`.
    pub file: &'static str,
    pub message: String,
}

fn run_err(message: String) -> SpecError {
    SpecError {
        file: "run suite",
        message,
    }
}

fn ep_err(message: String) -> SpecError {
    SpecError {
        file: "endpoint spec",
        message,
    }
}

/// The task sentence tokenflood appends to every prompt (when the run suite
/// names none).
pub const DEFAULT_TASK: &str = "Task: Count up to 10000 naming each individual number like this: 1 2 3 4";

/// One load type: token counts and a sampling weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadType {
    pub prompt_length: u64,
    #[serde(default)]
    pub prefix_length: u64,
    pub output_length: u64,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub task: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSet {
    pub tokens: Vec<String>,
}

/// tokenflood's run suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSuite {
    pub name: String,
    /// One phase per rate, requests per second.
    pub requests_per_second_rates: Vec<f64>,
    /// Length of every phase, seconds.
    pub test_length_in_seconds: f64,
    pub load_types: Vec<LoadType>,
    #[serde(default = "default_percentiles")]
    pub percentiles: Vec<f64>,
    #[serde(default)]
    pub input_token_budget: Option<u64>,
    #[serde(default)]
    pub output_token_budget: Option<u64>,
    /// Fraction of the last 30 requests that may fail.
    #[serde(default = "default_error_limit")]
    pub error_limit: f64,
    #[serde(default)]
    pub task: Option<TaskSpec>,
    #[serde(default)]
    pub token_set: Option<TokenSet>,
}

fn default_percentiles() -> Vec<f64> {
    vec![50.0, 90.0, 99.0]
}

fn default_error_limit() -> f64 {
    0.3
}

/// The providers tokenswarm can speak, as tokenflood (litellm) names them.
pub const PROVIDERS: [&str; 5] = ["openai", "hosted_vllm", "azure", "anthropic", "gemini"];

/// tokenflood's endpoint spec (litellm's completion parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub provider: String,
    pub model: String,
    /// Base URL up to and including the API version path (`.../v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// litellm's other name for `base_url` (the seed's Azure example).
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub api_key_env_var: Option<String>,
    /// Azure deployment name.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Azure `api-version` query value.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub extra_headers: BTreeMap<String, String>,
}

/// How prompts are filled: tokenswarm's prompt builder uses the letters
/// `A`..`Z`, which is tokenflood's default token set.
fn default_tokens() -> Vec<String> {
    (b'A'..=b'Z').map(|c| format!(" {}", c as char)).collect()
}

fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &'static str) -> Result<T, SpecError> {
    serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {} column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        let what = e.to_string();
        let what = what.split(" at line ").next().unwrap_or_default();
        SpecError {
            file,
            message: format!("{at}{what}"),
        }
    })
}

impl RunSuite {
    pub fn from_yaml(text: &str) -> Result<RunSuite, SpecError> {
        let s: RunSuite = parse_yaml(text, "run suite")?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(run_err(format!(
                "field `name` has value {:?}; use 1 to 64 letters, digits, '_', '-' or '.' (it names the results folder)",
                self.name
            )));
        }
        if self.requests_per_second_rates.is_empty() {
            return Err(run_err(
                "field `requests_per_second_rates` is empty; give at least one rate in requests per second".into(),
            ));
        }
        for r in &self.requests_per_second_rates {
            if !(r.is_finite() && *r > 0.0 && *r <= 1_000_000.0) {
                return Err(run_err(format!(
                    "field `requests_per_second_rates` has value {r}; each rate must be a number in (0, 1000000] requests per second"
                )));
            }
        }
        let len = self.test_length_in_seconds;
        if !(len.is_finite() && len > 0.0 && len <= 1_000_000.0) {
            return Err(run_err(format!(
                "field `test_length_in_seconds` has value {len}; use a number of seconds in (0, 1000000]"
            )));
        }
        if self.load_types.is_empty() {
            return Err(run_err(
                "field `load_types` is empty; define at least one load type".into(),
            ));
        }
        for (i, lt) in self.load_types.iter().enumerate() {
            let at = format!("load_types[{i}]");
            if lt.prompt_length == 0 {
                return Err(run_err(format!(
                    "{at}: field `prompt_length` has value 0; use at least 1 token"
                )));
            }
            if lt.prefix_length > lt.prompt_length {
                return Err(run_err(format!(
                    "{at}: field `prefix_length` has value {}; it must be at most prompt_length ({})",
                    lt.prefix_length, lt.prompt_length
                )));
            }
            if lt.output_length == 0 {
                return Err(run_err(format!(
                    "{at}: field `output_length` has value 0; use at least 1 token"
                )));
            }
            if !(lt.weight.is_finite() && lt.weight > 0.0 && lt.weight <= 1_000_000.0) {
                return Err(run_err(format!(
                    "{at}: field `weight` has value {}; use a positive number up to 1000000",
                    lt.weight
                )));
            }
        }
        for p in &self.percentiles {
            if !(p.is_finite() && *p > 0.0 && *p <= 100.0) {
                return Err(run_err(format!(
                    "field `percentiles` has value {p}; each percentile must be in (0, 100]"
                )));
            }
            // Percentiles are read at 0.0001 % resolution (report::PERCENTILE_SCALE).
            let scaled = p * crate::metrics::report::PERCENTILE_SCALE as f64;
            if (scaled - scaled.round()).abs() > 1e-6 {
                return Err(run_err(format!(
                    "field `percentiles` has value {p}; use at most 4 decimal places (e.g. 99.9999)"
                )));
            }
        }
        if !(self.error_limit.is_finite() && (0.0..=1.0).contains(&self.error_limit)) {
            return Err(run_err(format!(
                "field `error_limit` has value {}; use a fraction in [0, 1] (0 disables the check)",
                self.error_limit
            )));
        }
        if let Some(t) = &self.task {
            let max = crate::scenario::schema::MAX_TASK_CHARS as usize;
            if t.task.trim().is_empty() || t.task.len() > max || !crate::scenario::schema::is_task_text(&t.task) {
                return Err(run_err(format!(
                    "field `task.task` has value {:?}; give the task sentence in up to 1,000 characters \
                     of printable ASCII without quotes or backslashes",
                    t.task.chars().take(80).collect::<String>()
                )));
            }
        }
        if let Some(ts) = &self.token_set {
            let mut got = ts.tokens.clone();
            got.sort();
            got.dedup();
            if got != default_tokens() {
                return Err(run_err(format!(
                    "field `token_set.tokens` has {} tokens {:?}; only the 26 one-token strings ' A' .. ' Z' are supported \
                     (tokenswarm's prompt builder uses exactly those)",
                    ts.tokens.len(),
                    ts.tokens.iter().take(5).collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }

    /// The name of load type `i` (a scenario name: letters, digits, `_`).
    pub fn load_type_name(i: usize) -> String {
        format!("load_type_{}", i + 1)
    }

    /// Requests the phases schedule in all, on average.
    pub fn expected_requests(&self) -> f64 {
        self.requests_per_second_rates.iter().sum::<f64>() * self.test_length_in_seconds
    }

    /// (input, output) tokens the run is expected to use: the scheduled
    /// requests at the weighted mean token counts, plus one warm-up request
    /// per load type. Rounded up.
    pub fn token_estimate(&self) -> (u64, u64) {
        self.token_estimate_for(self.expected_requests())
    }

    /// [`RunSuite::token_estimate`] for `n` scheduled requests (phases of
    /// other shapes: [`expected_requests_of`]).
    pub fn token_estimate_for(&self, n: f64) -> (u64, u64) {
        let total_w: f64 = self.load_types.iter().map(|l| l.weight).sum();
        let mean = |f: fn(&LoadType) -> u64| -> f64 {
            self.load_types.iter().map(|l| l.weight * f(l) as f64).sum::<f64>() / total_w
        };
        let warm = |f: fn(&LoadType) -> u64| -> f64 { self.load_types.iter().map(|l| f(l) as f64).sum() };
        let input = n * mean(|l| l.prompt_length) + warm(|l| l.prompt_length);
        let output = n * mean(|l| l.output_length) + warm(|l| l.output_length);
        (input.ceil() as u64, output.ceil() as u64)
    }
}

impl EndpointSpec {
    pub fn from_yaml(text: &str) -> Result<EndpointSpec, SpecError> {
        let s: EndpointSpec = parse_yaml(text, "endpoint spec")?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), SpecError> {
        if !PROVIDERS.contains(&self.provider.as_str()) {
            let hint = match self.provider.as_str() {
                "bedrock" | "sagemaker" | "sagemaker_chat" => " (AWS request signing is not implemented)",
                _ => "",
            };
            return Err(ep_err(format!(
                "field `provider` has value {:?}; supported: {}{hint}",
                self.provider,
                PROVIDERS.join(", ")
            )));
        }
        if self.model.trim().is_empty() {
            return Err(ep_err("field `model` is empty; name the model to request".into()));
        }
        if self.base_url.is_some() && self.api_base.is_some() {
            return Err(ep_err(
                "both `base_url` and `api_base` are set; they are the same setting, give one".into(),
            ));
        }
        if self.provider == "azure" {
            for (field, v) in [("deployment", &self.deployment), ("api_version", &self.api_version)] {
                if v.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(ep_err(format!(
                        "field `{field}` is missing; provider azure needs `deployment` and `api_version`"
                    )));
                }
            }
            if self.base().is_none() {
                return Err(ep_err(
                    "field `api_base` (or `base_url`) is missing; provider azure needs https://NAME.openai.azure.com/"
                        .into(),
                ));
            }
        } else if self.provider == "hosted_vllm" && self.base().is_none() {
            return Err(ep_err(
                "field `base_url` is missing; provider hosted_vllm needs the server's URL, e.g. http://127.0.0.1:8000/v1".into(),
            ));
        }
        if let Some(var) = &self.api_key_env_var {
            let ok = !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ep_err(format!(
                    "field `api_key_env_var` has value {var:?}; name an environment variable (letters, digits, '_')"
                )));
            }
        }
        Ok(())
    }

    fn base(&self) -> Option<&str> {
        self.base_url
            .as_deref()
            .or(self.api_base.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The environment variable holding the key: `api_key_env_var`, else
    /// the provider's usual one (none for hosted_vllm).
    pub fn key_env(&self) -> Option<String> {
        if let Some(v) = &self.api_key_env_var {
            return Some(v.clone());
        }
        match self.provider.as_str() {
            "openai" => Some("OPENAI_API_KEY".into()),
            "azure" => Some("AZURE_API_KEY".into()),
            "anthropic" => Some("ANTHROPIC_API_KEY".into()),
            "gemini" => Some("GEMINI_API_KEY".into()),
            _ => None,
        }
    }

    /// The full URL requests go to.
    pub fn url(&self) -> String {
        let base = |default: &str| self.base().unwrap_or(default).trim_end_matches('/').to_string();
        match self.provider.as_str() {
            "azure" => format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                base(""),
                self.deployment.as_deref().unwrap_or_default().trim(),
                self.api_version.as_deref().unwrap_or_default().trim()
            ),
            "anthropic" => format!("{}/messages", base("https://api.anthropic.com/v1")),
            "gemini" => format!(
                "{}/models/{}:streamGenerateContent?alt=sse",
                base("https://generativelanguage.googleapis.com/v1beta"),
                crate::llm::request::path_segment(self.model.trim())
            ),
            _ => format!("{}/chat/completions", base("https://api.openai.com/v1")),
        }
    }

    /// Whether the key goes in an `api-key` header (Azure) rather than
    /// the provider's own (`Authorization: Bearer`, `x-api-key`).
    fn key_in_api_key_header(&self) -> bool {
        self.provider == "azure"
    }

    /// The wire API.
    pub fn wire_provider(&self) -> Provider {
        match self.provider.as_str() {
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            _ => Provider::OpenaiChat,
        }
    }
}

/// A standalone run: the two files translated into tokenswarm's test
/// definition, plus what only standalone needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub suite: RunSuite,
    pub config: TestConfig,
    /// The target's base URL for scenarios with a relative endpoint
    /// (tokenswarm's own format with `--host`); empty for tokenflood's.
    pub host: String,
    /// The URL of the first load type (printed, probed for network latency).
    pub url: String,
    pub provider: String,
    pub model: String,
}

/// Translates the two files. Reads the Azure key from the environment
/// (it travels as a header); other keys are read when the run starts.
pub fn plan(suite: RunSuite, endpoint: EndpointSpec) -> Result<Plan, SpecError> {
    let url = endpoint.url();
    let mut headers = endpoint.extra_headers.clone();
    let mut api_key_env = endpoint.key_env();
    if endpoint.key_in_api_key_header()
        && let Some(var) = api_key_env.take()
    {
        let key = std::env::var(&var).ok().filter(|k| !k.is_empty()).ok_or_else(|| {
            ep_err(format!(
                "environment variable {var} (api_key_env_var, or azure's default AZURE_API_KEY) is not set; export it with the API key"
            ))
        })?;
        headers.insert("api-key".into(), key);
    }
    let total_w: f64 = suite.load_types.iter().map(|l| l.weight).sum();
    let scenarios = suite
        .load_types
        .iter()
        .enumerate()
        .map(|(i, lt)| Scenario {
            name: RunSuite::load_type_name(i),
            // Integer shares of 1,000,000 keep fractional weights' ratios.
            weight: ((lt.weight / total_w) * 1_000_000.0).round().max(1.0) as u32,
            provider: endpoint.wire_provider(),
            endpoint: Some(url.clone()),
            model: endpoint.model.clone(),
            prompt_length: lt.prompt_length,
            prefix_length: lt.prefix_length,
            output_length: lt.output_length,
            api_key_env: api_key_env.clone(),
            temperature: None,
            headers: headers.clone(),
            extra_body: BTreeMap::new(),
            wait: Default::default(),
            session: None,
            dataset: None,
            task: Some(
                suite
                    .task
                    .as_ref()
                    .map_or(DEFAULT_TASK, |t| t.task.as_str())
                    .to_string(),
            ),
        })
        .collect();
    let len = suite.test_length_in_seconds;
    let config = TestConfig {
        v: 1,
        scenarios,
        load: LoadConfig {
            mode: LoadMode::Open,
            phases: suite
                .requests_per_second_rates
                .iter()
                .map(|&rate| Phase {
                    rate,
                    duration: crate::units::seconds_saturating(len),
                    ramp: std::time::Duration::ZERO,
                })
                .collect(),
            arrival: Arrival::Poisson,
            ..LoadConfig::default()
        },
        slo: Slo::default(),
        safety: Safety {
            warmup: true,
            error_limit: suite.error_limit,
            error_window: 30,
            input_token_budget: suite.input_token_budget,
            output_token_budget: suite.output_token_budget,
        },
        timeouts: Default::default(),
    };
    config
        .validate()
        .map_err(|e| ep_err(format!("the translated test definition is invalid: {e}")))?;
    Ok(Plan {
        suite,
        host: String::new(),
        url,
        provider: endpoint.provider.clone(),
        model: endpoint.model.clone(),
        config,
    })
}

/// A standalone run of tokenswarm's own scenarios file (`tokenswarm run
/// SCENARIOS.yaml --host URL`): it must be open loop with phases of one
/// length and no ramps (the run suite's shape); `name` names the results.
/// Requests open-loop `phases` schedule on average: each phase's rate
/// integrated over its length, its ramp moving linearly from the previous
/// phase's rate (0 before the first), as `load::arrivals` schedules them.
pub fn expected_requests_of(phases: &[Phase]) -> f64 {
    let mut prev = 0.0;
    let mut n = 0.0;
    for p in phases {
        let d = p.duration.as_secs_f64();
        let ramp = p.ramp.as_secs_f64().clamp(0.0, d);
        n += ramp * (prev + p.rate) / 2.0 + (d - ramp) * p.rate;
        prev = p.rate;
    }
    n
}

pub fn plan_from_scenarios(config: TestConfig, host: &str, name: &str) -> Result<Plan, SpecError> {
    let sc_err = |message: String| SpecError {
        file: "scenarios file",
        message,
    };
    if config.load.mode != LoadMode::Open || config.load.phases.is_empty() {
        return Err(sc_err(
            "field `load.mode` must be `open` with `load.phases` for a standalone run \
             (e.g. load: {mode: open, phases: [{rate: 1, duration_s: 10}, {rate: 2, duration_s: 10}]})"
                .into(),
        ));
    }
    // Phases may differ in length and ramp: the run's clock and estimate
    // take them from `config.load.phases`; the suite keeps the first
    // phase's length for display only.
    let length = config.load.phases[0].duration;
    let first = &config.scenarios[0];
    let url = crate::llm::request::url(first, host)
        .map_err(|e| sc_err(e.to_string()))?
        .to_string();
    let mut clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    if clean.is_empty() {
        clean = "scenarios".into();
    }
    let suite = RunSuite {
        name: clean,
        requests_per_second_rates: config.load.phases.iter().map(|p| p.rate).collect(),
        test_length_in_seconds: length.as_secs_f64(),
        load_types: config
            .scenarios
            .iter()
            .map(|s| LoadType {
                prompt_length: s.prompt_length,
                prefix_length: s.prefix_length,
                output_length: s.output_length,
                weight: f64::from(s.weight.max(1)),
            })
            .collect(),
        percentiles: default_percentiles(),
        input_token_budget: config.safety.input_token_budget,
        output_token_budget: config.safety.output_token_budget,
        error_limit: config.safety.error_limit,
        task: None,
        token_set: None,
    };
    suite.validate()?;
    Ok(Plan {
        suite,
        host: host.to_string(),
        url,
        provider: format!("{:?}", first.provider),
        model: first.model.clone(),
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIPPLE: &str = include_str!("../../examples/tokenflood/run_suite.yml");

    /// The seed's run suite parses with every field, and its phases and
    /// weights become an open-loop test of the same shape.
    #[test]
    fn the_seed_ripple_suite_becomes_two_open_loop_phases() {
        let s = RunSuite::from_yaml(RIPPLE).unwrap();
        assert_eq!(s.name, "ripple");
        assert_eq!(s.requests_per_second_rates, [1.0, 2.0]);
        assert_eq!(s.percentiles, [50.0, 90.0, 99.0]);
        assert_eq!(
            (s.input_token_budget, s.output_token_budget),
            (Some(100_000), Some(10_000))
        );
        let e = EndpointSpec::from_yaml(
            "provider: hosted_vllm\nmodel: m\nbase_url: http://127.0.0.1:8000/v1\napi_key_env_var: null\ndeployment: null\nextra_headers: {}\n",
        )
        .unwrap();
        let p = plan(s, e).unwrap();
        let c = &p.config;
        assert_eq!(c.load.mode, LoadMode::Open);
        assert_eq!(c.load.phases.len(), 2);
        assert_eq!(
            (c.load.phases[1].rate, c.load.phases[1].duration.as_secs_f64()),
            (2.0, 10.0)
        );
        assert_eq!(c.scenarios.len(), 2);
        assert_eq!(c.scenarios[0].weight, c.scenarios[1].weight);
        assert_eq!(
            c.scenarios[0].endpoint.as_deref(),
            Some("http://127.0.0.1:8000/v1/chat/completions")
        );
        assert_eq!(c.scenarios[1].prefix_length, 568);
        assert_eq!(c.scenarios[0].api_key_env, None);
        // 30 requests * mean 576 prompt tokens + 2 warm-ups.
        assert_eq!(p.suite.token_estimate(), (30 * 576 + 512 + 640, 30 * 22 + 32 + 12));
        // the suite's task ends every prompt
        assert_eq!(c.scenarios[0].task.as_deref(), Some(DEFAULT_TASK));
    }

    /// A suite's own task reaches the scenarios; one that would need JSON
    /// escaping is refused, naming the field.
    #[test]
    fn the_suite_task_is_used_and_checked() {
        let e = || EndpointSpec::from_yaml("provider: openai\nmodel: m\nbase_url: http://127.0.0.1:1/v1\n").unwrap();
        let own = RIPPLE.replace(DEFAULT_TASK, "Task: List every prime below 100000");
        let p = plan(RunSuite::from_yaml(&own).unwrap(), e()).unwrap();
        assert!(
            p.config
                .scenarios
                .iter()
                .all(|s| s.task.as_deref() == Some("Task: List every prime below 100000"))
        );
        let bad = RIPPLE.replace(DEFAULT_TASK, "Say \\\"hi\\\"");
        let m = RunSuite::from_yaml(&bad).unwrap_err().to_string();
        assert!(m.contains("task.task") && m.contains("without quotes"), "{m}");
    }

    /// An unknown field is refused, naming it and the valid fields.
    #[test]
    fn unknown_fields_name_the_field_and_the_valid_ones() {
        let e = RunSuite::from_yaml(&format!("{RIPPLE}\nrequests_per_minute: 3\n")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("requests_per_minute") && m.contains("test_length_in_seconds"),
            "{m}"
        );
        let e = EndpointSpec::from_yaml("provider: openai\nmodel: m\nregion: eu\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("region") && m.contains("api_key_env_var"), "{m}");
    }

    /// Unsupported providers name the supported ones; azure builds the
    /// deployment URL and sends the key as `api-key`.
    #[test]
    fn providers_map_to_urls_keys_and_errors() {
        for bad in ["bedrock", "sagemaker_chat", "cohere", "vertex_ai"] {
            let m = EndpointSpec::from_yaml(&format!("provider: {bad}\nmodel: m\n"))
                .unwrap_err()
                .to_string();
            assert!(
                m.contains(bad) && m.contains("openai, hosted_vllm, azure, anthropic, gemini"),
                "{m}"
            );
        }
        let g = EndpointSpec::from_yaml("provider: gemini\nmodel: gemini-2.5-flash\n").unwrap();
        assert_eq!(
            g.url(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            (g.key_env().as_deref(), g.wire_provider()),
            (Some("GEMINI_API_KEY"), Provider::Gemini)
        );
        let g =
            EndpointSpec::from_yaml("provider: gemini\nmodel: m\nbase_url: http://127.0.0.1:8000/v1beta/\n").unwrap();
        assert_eq!(
            g.url(),
            "http://127.0.0.1:8000/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        let a = EndpointSpec::from_yaml(
            "provider: azure\ndeployment: gpt-4o\nmodel: gpt-4o\napi_version: 2024-06-01\napi_base: https://x.openai.azure.com/\n",
        )
        .unwrap();
        assert_eq!(
            a.url(),
            "https://x.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(a.key_env().as_deref(), Some("AZURE_API_KEY"));
        let m = EndpointSpec::from_yaml("provider: azure\nmodel: m\napi_base: https://x/\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("deployment"), "{m}");
        let o = EndpointSpec::from_yaml("provider: openai\nmodel: gpt-4o-mini\n").unwrap();
        assert_eq!(o.url(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(o.key_env().as_deref(), Some("OPENAI_API_KEY"));
        let an = EndpointSpec::from_yaml("provider: anthropic\nmodel: c\napi_key_env_var: MY_KEY\n").unwrap();
        assert_eq!(an.url(), "https://api.anthropic.com/v1/messages");
        assert_eq!(
            (an.key_env().as_deref(), an.wire_provider()),
            (Some("MY_KEY"), Provider::Anthropic)
        );
        let m = EndpointSpec::from_yaml("provider: hosted_vllm\nmodel: m\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("base_url"), "{m}");
    }

    /// extra_headers go on every load type; azure's key is read from
    /// `api_key_env_var` into an `api-key` header (no bearer variable), and
    /// an unset variable is an error naming it.
    #[test]
    fn extra_headers_and_the_azure_key_header() {
        let suite = RunSuite::from_yaml(RIPPLE).unwrap();
        let e = EndpointSpec::from_yaml(
            "provider: openai\nmodel: m\nbase_url: http://h/v1\nextra_headers: {x-model-route: blue}\n",
        )
        .unwrap();
        let p = plan(suite.clone(), e).unwrap();
        assert!(p.config.scenarios.iter().all(|s| s.headers["x-model-route"] == "blue"));
        assert_eq!(p.config.scenarios[0].api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        // PATH is set in every test environment; it stands in for a key.
        let az =
            "provider: azure\nmodel: m\ndeployment: d\napi_version: v\napi_base: https://x/\napi_key_env_var: PATH\n";
        let p = plan(suite.clone(), EndpointSpec::from_yaml(az).unwrap()).unwrap();
        let s = &p.config.scenarios[0];
        assert_eq!(s.headers["api-key"], std::env::var("PATH").unwrap());
        assert_eq!(s.api_key_env, None);
        let unset = az.replace("PATH", "TOKENSWARM_TEST_SURELY_UNSET_42");
        let m = plan(suite, EndpointSpec::from_yaml(&unset).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("TOKENSWARM_TEST_SURELY_UNSET_42 ") && m.contains("not set"),
            "{m}"
        );
    }

    /// The estimate integrates each phase's rate over its own length, a
    /// ramp at the mean of the previous and its own rate (0 before the
    /// first phase): 0->2 over 2 s (2) + 2 x 2 s (4) + 2->4 over 1 s (3)
    /// + 4 x 4 s (16) = 25.
    #[test]
    fn expected_requests_integrate_ramps_and_lengths() {
        let ph = |rate: f64, d: u64, r: u64| Phase {
            rate,
            duration: std::time::Duration::from_secs(d),
            ramp: std::time::Duration::from_secs(r),
        };
        assert_eq!(expected_requests_of(&[ph(2.0, 4, 2), ph(4.0, 5, 1)]), 25.0);
        let suite = RunSuite::from_yaml(RIPPLE).unwrap();
        let p = plan(suite, EndpointSpec::from_yaml("provider: openai\nmodel: m\n").unwrap()).unwrap();
        assert_eq!(expected_requests_of(&p.config.load.phases), p.suite.expected_requests());
    }

    /// Values out of range name the field, the value and the valid range.
    #[test]
    fn bad_values_name_field_value_and_range() {
        let cases = [
            ("- 1.0\n- 2.0", "- 1.0\n- -2.0", "requests_per_second_rates"),
            (
                "test_length_in_seconds: 10",
                "test_length_in_seconds: 0",
                "test_length_in_seconds",
            ),
            ("error_limit: 0.3", "error_limit: 1.5", "error_limit"),
            ("  - ' Z'", "  - ' Z'\n  - ' the'", "token_set.tokens"),
            // Finer than the aggregates' 0.0001 % resolution would be rounded.
            ("- 99\n", "- 99.99995\n", "at most 4 decimal places"),
        ];
        for (from, to, field) in cases {
            assert!(RIPPLE.contains(from), "{from}");
            let m = RunSuite::from_yaml(&RIPPLE.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(m.contains(field), "{field}: {m}");
        }
    }
}
