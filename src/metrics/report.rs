//! Plain-data reports that leave the metrics module: one Locust request
//! entry per (name, method), Locust's error records, and the versioned `llm`
//! report. They derive `Serialize` with exactly the field names the Locust
//! master and `locustfiles/llm.py` read; `locust::wire` does the encoding.

use std::collections::BTreeMap;

use serde::Serialize;

/// Locust's `StatsEntryDict`: one window of one (name, method) entry.
/// Times are Locust's float milliseconds; map keys are integers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestEntry {
    pub name: String,
    pub method: String,
    pub last_request_timestamp: Option<f64>,
    pub start_time: f64,
    pub num_requests: u64,
    pub num_none_requests: u64,
    pub num_failures: u64,
    pub total_response_time: f64,
    pub max_response_time: f64,
    pub min_response_time: Option<f64>,
    pub total_content_length: u64,
    /// Rounded response time (ms, Locust's buckets) -> count.
    pub response_times: BTreeMap<u64, u64>,
    /// Unix second -> requests completed in it.
    pub num_reqs_per_sec: BTreeMap<u64, u64>,
    /// Unix second -> failures in it.
    pub num_fail_per_sec: BTreeMap<u64, u64>,
}

/// Locust's `StatsErrorDict`, plus `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsError {
    pub method: String,
    pub name: String,
    /// The failure's stable summary (or `"{group}: other"` past the cap).
    pub error: String,
    /// `FailureKind::label` of the failures in this row (of the first one,
    /// for an overflow row); Locust ignores it, the master plugin reads it.
    pub kind: String,
    pub occurrences: u64,
    pub first_seen: f64,
    pub last_seen: f64,
}

/// One latency distribution in microseconds, buckets at 3 significant digits.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct HistReport {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    pub hist: BTreeMap<u64, u64>,
}

/// LLM results of one scenario over one report window (deltas).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ScenarioReport {
    pub requests: u64,
    pub failures: u64,
    pub good: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated_output: u64,
    pub target_prompt_tokens: u64,
    pub target_output_tokens: u64,
    pub prompt_divergent: u64,
    pub output_divergent: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    /// Open loop: arrivals due but never sent because the run stopped
    /// while they waited for `max_in_flight`; not Locust requests.
    pub unsent: u64,
    /// "ttft", "ttfa", "tpot", "itl", "e2e", "queue", "lag" -> distribution.
    pub metrics: BTreeMap<&'static str, HistReport>,
    pub out_tokens_per_sec: BTreeMap<u64, u64>,
    pub in_tokens_per_sec: BTreeMap<u64, u64>,
    pub good_per_sec: BTreeMap<u64, u64>,
}

/// The `llm` key of the stats message (schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmReport {
    pub v: u32,
    pub scenarios: BTreeMap<String, ScenarioReport>,
}
