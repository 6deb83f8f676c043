//! Plain-data reports that leave the metrics module: one Locust request
//! entry per (name, method), Locust's error records, and the versioned `llm`
//! report. They derive `Serialize` with exactly the field names the Locust
//! master and `locustfiles/llm.py` read; `locust::wire` does the encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// Percentiles are resolved to 1 / `PERCENTILE_SCALE` of a per cent
/// (p99.9999): the master's Python uses the same resolution
/// (`PERCENTILE_SCALE` in locustfiles/tokenswarm_master/aggregate.py, as a
/// fraction there).
pub const PERCENTILE_SCALE: u128 = 10_000;

/// One latency distribution in microseconds, buckets at 3 significant digits.
/// `Deserialize` reads the same shape back (the shared percentile fixture,
/// tests/fixtures/percentiles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
    /// Sessions: what a perfect prefix cache would have served (0 for
    /// scenarios without sessions).
    pub ideal_cached_tokens: u64,
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

impl HistReport {
    /// Adds `other`'s samples: the merge the master's Python does too
    /// (bucket counts add, sums add, min/max combine).
    pub fn merge(&mut self, other: &HistReport) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (k, n) in &other.hist {
            let c = self.hist.entry(*k).or_default();
            *c = c.saturating_add(*n);
        }
    }

    /// The `p`-th percentile (0 < p <= 100) in microseconds: the smallest
    /// bucket whose cumulative count reaches `ceil(p/100 * count)` (at
    /// least 1), clamped to the exact min and max. None when empty.
    ///
    /// The rank is integer arithmetic on `p` resolved to 0.0001 % (see
    /// [`PERCENTILE_SCALE`]): a float product makes p99.9 of 1000 samples
    /// rank 1000 (`99.9 / 100 * 1000 > 999`) and p7 of 100 rank 8, and
    /// loses counts beyond 2^53. The master's Python (`Dist.percentile`)
    /// uses the same rule; tests/fixtures/percentiles pins both.
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // `as` saturates: NaN and negatives become 0 (rank 1), above 100 % the max.
        let scaled = (p * PERCENTILE_SCALE as f64).round() as u128;
        let rank = (scaled * u128::from(self.count))
            .div_ceil(100 * PERCENTILE_SCALE)
            .max(1);
        let mut seen = 0u128;
        for (v, n) in &self.hist {
            seen += u128::from(*n);
            if seen >= rank {
                return Some((*v).max(self.min).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Mean in microseconds (exact: from the sum). None when empty.
    pub fn mean_us(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles of merged reports equal those of one report holding all
    /// samples, and the rank rule picks the expected buckets.
    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        let make = |vals: &[u64]| {
            let mut h = HistReport::default();
            for &v in vals {
                h.merge(&HistReport {
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    hist: BTreeMap::from([(v, 1)]),
                });
            }
            h
        };
        let all: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let mut a = make(&all[..37]);
        a.merge(&make(&all[37..]));
        let b = make(&all);
        assert_eq!(a, b);
        assert_eq!(b.percentile_us(50.0), Some(50_000));
        assert_eq!(b.percentile_us(99.0), Some(99_000));
        assert_eq!(b.percentile_us(100.0), Some(100_000));
        assert_eq!(b.mean_us(), Some(50_500.0));
        assert_eq!(HistReport::default().percentile_us(50.0), None);
    }
}
