//! LLM metrics of one scenario over one report window: latency
//! distributions in microseconds (hdrhistogram, 3 significant figures),
//! token counts, failure kinds and per-second token maps.
//!
//! Histograms are allocated once per scenario and reset after each report,
//! so the hot path (`record`) only increments counters.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::report::{HistReport, ScenarioReport};
use crate::outcome::Outcome;
use crate::scenario::Slo;

/// Highest latency a histogram holds: one hour. Longer values are clamped
/// (and still counted), which no request with sane timeouts reaches.
const MAX_US: u64 = 3_600_000_000;

/// Rounds to 3 significant digits (the `llm` report's bucket keys).
pub fn bucket3(v: u64) -> u64 {
    if v < 1_000 {
        return v;
    }
    let mut p = 1u64;
    while v / p >= 1_000 {
        p *= 10;
    }
    (v + p / 2) / p * p
}

/// One latency distribution: an hdr histogram plus exact count/sum/min/max.
#[derive(Debug, Clone)]
struct Dist {
    hist: Histogram<u64>,
    sum: u64,
    min: u64,
    max: u64,
}

impl Dist {
    fn new() -> Self {
        Dist {
            // 1 µs .. 1 h at 3 significant figures cannot fail to construct.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn record_us(&mut self, us: u64) {
        let v = us.clamp(1, MAX_US);
        self.hist.saturating_record(v);
        self.sum += us;
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    /// Records `n` samples of `us` (a summarised tail of ITL gaps).
    fn record_us_n(&mut self, us: u64, n: u64) {
        if n == 0 {
            return;
        }
        let v = us.clamp(1, MAX_US);
        self.hist.saturating_record_n(v, n);
        self.sum = self.sum.saturating_add(us.saturating_mul(n));
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn take(&mut self) -> Option<HistReport> {
        let count = self.hist.len();
        if count == 0 {
            return None;
        }
        let mut hist = BTreeMap::new();
        for it in self.hist.iter_recorded() {
            let v = self.hist.median_equivalent(it.value_iterated_to());
            *hist.entry(bucket3(v)).or_default() += it.count_at_value();
        }
        let report = HistReport {
            count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            hist,
        };
        self.hist.reset();
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
        Some(report)
    }
}

/// Names of the latency metrics, in report order.
pub const METRICS: [&str; 7] = ["ttft", "ttfa", "tpot", "itl", "e2e", "queue", "lag"];

/// Accumulates one scenario's LLM results between reports.
#[derive(Debug, Clone)]
pub struct ScenarioLlm {
    counts: ScenarioReport,
    dists: [Dist; 7],
}

/// Whether a request's token counts diverge from the scenario's targets by
/// more than 10 % (checked on successful requests with server usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Divergence {
    pub prompt: bool,
    pub output: bool,
}

fn diverges(actual: u64, target: u64) -> bool {
    target > 0 && (actual as f64 - target as f64).abs() > 0.10 * target as f64
}

impl ScenarioLlm {
    pub fn new(target_prompt_tokens: u64, target_output_tokens: u64) -> Self {
        ScenarioLlm {
            counts: ScenarioReport {
                target_prompt_tokens,
                target_output_tokens,
                ..ScenarioReport::default()
            },
            dists: std::array::from_fn(|_| Dist::new()),
        }
    }

    /// Records one finished request completed at Unix second `now_s`;
    /// `lag` is the scheduler's lateness (open loop only).
    pub fn record(&mut self, o: &Outcome, slo: &Slo, now_s: u64, lag: Option<Duration>) -> Divergence {
        let c = &mut self.counts;
        c.requests += 1;
        let input = o.usage.input_tokens.unwrap_or(0);
        let output = o.output_tokens();
        // Token counts come from the server: saturate rather than overflow.
        c.input_tokens = c.input_tokens.saturating_add(input);
        c.output_tokens = c.output_tokens.saturating_add(output);
        c.cached_tokens = c.cached_tokens.saturating_add(o.usage.cached_tokens.unwrap_or(0));
        c.reasoning_tokens = c.reasoning_tokens.saturating_add(o.usage.reasoning_tokens.unwrap_or(0));
        if output > 0 {
            let n = c.out_tokens_per_sec.entry(now_s).or_default();
            *n = n.saturating_add(output);
        }
        if input > 0 {
            let n = c.in_tokens_per_sec.entry(now_s).or_default();
            *n = n.saturating_add(input);
        }
        if o.output_tokens_estimated() && output > 0 {
            c.estimated_output += 1;
        }
        let [ttft, ttfa, tpot, itl, e2e, queue, lag_d] = &mut self.dists;
        if let Some(d) = o.ttft {
            ttft.record(d);
        }
        if let Some(d) = o.ttfa {
            ttfa.record(d);
        }
        // E2E, TPOT and ITL describe whole answers: a stream cut short
        // (cancelled, truncated, timed out) would understate them. TTFT and
        // TTFA are complete once the first token arrived, so they count.
        let tpot_v = o.tpot();
        if o.failure.is_none() {
            if let Some(d) = tpot_v {
                tpot.record(d);
            }
            for gap in &o.itl_us {
                itl.record_us(u64::from(*gap));
            }
            // Gaps beyond the client's cap: the max once, the mean of the
            // rest for each of them, so count and max stay exact (the sum
            // within rounding).
            let tail = o.itl_tail;
            if tail.count > 0 {
                let max = u64::from(tail.max_us);
                itl.record_us(max);
                let rest = tail.count - 1;
                if let Some(mean) = tail.sum_us.saturating_sub(max).checked_div(rest) {
                    itl.record_us_n(mean, rest);
                }
            }
            if let Some(d) = o.e2e {
                e2e.record(d);
            }
        }
        queue.record(o.queue);
        if let Some(d) = lag {
            lag_d.record(d);
        }
        let mut div = Divergence::default();
        match &o.failure {
            Some(f) => {
                c.failures += 1;
                *c.failure_kinds.entry(f.kind().label()).or_default() += 1;
            }
            None => {
                if meets(slo, o, tpot_v) {
                    c.good += 1;
                    *c.good_per_sec.entry(now_s).or_default() += 1;
                }
                if let Some(input) = o.usage.input_tokens {
                    div.prompt = diverges(input, c.target_prompt_tokens);
                }
                if let Some(out) = o.usage.output_tokens {
                    div.output = diverges(out, c.target_output_tokens);
                }
                c.prompt_divergent += u64::from(div.prompt);
                c.output_divergent += u64::from(div.output);
            }
        }
        div
    }

    /// Records how late the scheduler dispatched one request (open loop) or
    /// started one user (closed loop) against its plan.
    pub fn record_lag(&mut self, lag: Duration) {
        self.dists[6].record(lag);
    }

    /// Sessions: the tokens a perfect prefix cache would have served one
    /// turn (`crate::llm::session`), beside the server's `cached_tokens`.
    pub fn record_ideal_cached(&mut self, n: u64) {
        self.counts.ideal_cached_tokens = self.counts.ideal_cached_tokens.saturating_add(n);
    }

    /// Open loop: arrivals that fell due but were never sent (the run
    /// stopped while they waited for the in-flight cap).
    pub fn record_unsent(&mut self, n: u64) {
        self.counts.unsent += n;
    }

    /// The window's report, or None when nothing was recorded; resets.
    pub fn take(&mut self) -> Option<ScenarioReport> {
        // Lag and unsent arrivals can come without any finished request
        // (a worker whose requests all hang): they are reported too.
        if self.counts.requests == 0 && self.counts.unsent == 0 && self.dists[6].hist.is_empty() {
            return None;
        }
        let fresh = ScenarioReport {
            target_prompt_tokens: self.counts.target_prompt_tokens,
            target_output_tokens: self.counts.target_output_tokens,
            ..ScenarioReport::default()
        };
        let mut report = std::mem::replace(&mut self.counts, fresh);
        for (name, dist) in METRICS.iter().zip(self.dists.iter_mut()) {
            if let Some(h) = dist.take() {
                report.metrics.insert(name, h);
            }
        }
        Some(report)
    }
}

/// Goodput rule (as vLLM's `--goodput`): a successful request is good when
/// it meets every SLO set; a request with one output token has TPOT 0.
fn meets(slo: &Slo, o: &Outcome, tpot: Option<Duration>) -> bool {
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    slo.ttft_ms.is_none_or(|limit| o.ttft.is_some() && ms(o.ttft) <= limit)
        && slo.tpot_ms.is_none_or(|limit| ms(tpot) <= limit)
        && slo.e2e_ms.is_none_or(|limit| o.e2e.is_some() && ms(o.e2e) <= limit)
}

impl ScenarioLlm {
    pub fn target_prompt(&self) -> u64 {
        self.counts.target_prompt_tokens
    }
    pub fn target_output(&self) -> u64 {
        self.counts.target_output_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, FailureKind, Usage};

    fn ok(ttft_ms: u64, e2e_ms: u64, out: u64) -> Outcome {
        Outcome {
            ttft: Some(Duration::from_millis(ttft_ms)),
            ttfa: Some(Duration::from_millis(ttft_ms)),
            e2e: Some(Duration::from_millis(e2e_ms)),
            itl_us: vec![10_000; out.saturating_sub(1) as usize],
            output_chunks: out,
            usage: Usage {
                input_tokens: Some(100),
                output_tokens: Some(out),
                cached_tokens: Some(32),
                reasoning_tokens: None,
            },
            ..Outcome::default()
        }
    }

    #[test]
    fn bucket3_keeps_three_significant_digits() {
        assert_eq!(bucket3(999), 999);
        assert_eq!(bucket3(12_345), 12_300);
        assert_eq!(bucket3(12_355), 12_400);
        assert_eq!(bucket3(1_000_499), 1_000_000);
    }

    #[test]
    fn records_tokens_latencies_and_goodput_against_slos() {
        // Two successes (one too slow for the TTFT SLO) and one failure.
        let slo = Slo {
            ttft_ms: Some(100.0),
            ..Slo::default()
        };
        let mut s = ScenarioLlm::new(100, 64);
        s.record(&ok(50, 680, 64), &slo, 7, None);
        s.record(&ok(150, 780, 64), &slo, 8, None);
        let failed = Outcome {
            failure: Some(Failure::new(FailureKind::HttpStatus(429), "HTTP 429", "")),
            ..Outcome::default()
        };
        s.record(&failed, &slo, 8, None);
        let r = s.take().unwrap();
        assert_eq!((r.requests, r.failures, r.good), (3, 1, 1));
        assert_eq!((r.input_tokens, r.output_tokens, r.cached_tokens), (200, 128, 64));
        assert_eq!(r.failure_kinds, BTreeMap::from([("http_429".to_string(), 1)]));
        assert_eq!(r.out_tokens_per_sec, BTreeMap::from([(7, 64), (8, 64)]));
        let ttft = &r.metrics["ttft"];
        assert_eq!(
            (ttft.count, ttft.sum, ttft.min, ttft.max),
            (2, 200_000, 50_000, 150_000)
        );
        assert_eq!(ttft.hist, BTreeMap::from([(50_000, 1), (150_000, 1)]));
        // TPOT = (680-50)/63 = 10 ms exactly for the first request.
        assert_eq!(r.metrics["tpot"].min, 10_000);
        assert_eq!(r.metrics["itl"].count, 126);
        assert!(s.take().is_none(), "take resets the window");
    }

    #[test]
    fn itl_tail_beyond_the_client_cap_keeps_count_and_max() {
        let mut s = ScenarioLlm::new(100, 64);
        let mut o = ok(50, 680, 64);
        o.itl_tail = crate::outcome::ItlTail {
            count: 1000,
            sum_us: 999 * 10_000 + 90_000,
            max_us: 90_000,
        };
        s.record(&o, &Slo::default(), 7, None);
        let itl = &s.take().unwrap().metrics["itl"];
        assert_eq!(itl.count, 63 + 1000);
        assert_eq!(itl.max, 90_000);
        assert_eq!(itl.sum, 63 * 10_000 + 999 * 10_000 + 90_000);
    }

    #[test]
    fn divergence_over_ten_percent_is_flagged() {
        let mut s = ScenarioLlm::new(100, 64);
        let d = s.record(&ok(1, 2, 50), &Slo::default(), 1, None);
        assert_eq!(
            d,
            Divergence {
                prompt: false,
                output: true
            }
        );
        let r = s.take().unwrap();
        assert_eq!((r.prompt_divergent, r.output_divergent), (0, 1));
    }
}
