//! The run aggregate sink: every request of a standalone run, kept as
//! tokenswarm's per-scenario LLM histograms ([`ScenarioLlm`]) in one cell
//! per (phase, load type), merged at the end into per-phase, per-load-type
//! and whole-run tables with the suite's percentiles ([`Table`]).
//!
//! Memory is fixed by the plan (phases x load types cells, each a set of
//! hdr histograms), not by the number of requests; the live TTFT median of
//! the progress line uses the last [`RECENT`] values only. This module
//! writes no file; `results` renders its tables.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::metrics::llm::ScenarioLlm;
use crate::metrics::report::{HistReport, ScenarioReport};
use crate::metrics::{OutcomeSink, RecordNote, RequestRecord};
use crate::scenario::{Scenario, Slo};

/// TTFT values kept for the progress line's median.
pub const RECENT: usize = 256;
/// Per-request divergence warnings printed before they are only counted.
pub const DIVERGENCE_WARNINGS: u64 = 5;

/// Which phase a request belongs to, from when it was due. Phases may
/// differ in length (tokenswarm's own scenarios file); a ramp is part of
/// its phase, as in `load::arrivals`.
#[derive(Debug)]
pub struct PhaseClock {
    origin: OnceLock<Instant>,
    /// Each phase's length (at least one phase).
    lengths: Vec<Duration>,
}

impl PhaseClock {
    pub fn new(lengths: Vec<Duration>) -> PhaseClock {
        let lengths = if lengths.is_empty() {
            vec![Duration::ZERO]
        } else {
            lengths
        };
        PhaseClock {
            origin: OnceLock::new(),
            lengths,
        }
    }

    /// Sets the instant the first phase starts (once; later calls are ignored).
    pub fn start(&self, at: Instant) {
        let _ = self.origin.set(at);
    }

    pub fn origin(&self) -> Option<Instant> {
        self.origin.get().copied()
    }

    /// The phase (0-based) of something due at `t`; None before the first
    /// phase started (warm-up). Past the end: the last phase.
    pub fn phase_at(&self, t: Instant) -> Option<usize> {
        let origin = *self.origin.get()?;
        if t < origin {
            return None;
        }
        let since = t.duration_since(origin);
        let mut end = Duration::ZERO;
        for (i, l) in self.lengths.iter().enumerate() {
            end += *l;
            if since < end {
                return Some(i);
            }
        }
        Some(self.lengths.len() - 1)
    }

    pub fn phases(&self) -> usize {
        self.lengths.len()
    }

    /// The length of phase `i` (0-based).
    pub fn length(&self, i: usize) -> Duration {
        self.lengths.get(i).copied().unwrap_or_default()
    }

    /// All phases together.
    pub fn total(&self) -> Duration {
        self.lengths.iter().sum()
    }
}

/// Signed and absolute token differences from the target, over successful
/// requests with server usage.
#[derive(Debug, Clone, Copy, Default)]
struct DivSums {
    n: u64,
    abs: u64,
    rel: f64,
}

impl DivSums {
    fn add(&mut self, actual: u64, target: u64) {
        self.n = self.n.saturating_add(1);
        let d = actual.abs_diff(target);
        self.abs = self.abs.saturating_add(d);
        if target > 0 {
            self.rel += d as f64 / target as f64;
        }
    }

    fn merge(&mut self, o: &DivSums) {
        self.n = self.n.saturating_add(o.n);
        self.abs = self.abs.saturating_add(o.abs);
        self.rel += o.rel;
    }
}

struct Cell {
    llm: ScenarioLlm,
    prompt: DivSums,
    output: DivSums,
}

struct State {
    /// `[phase + 1][class]`; row 0 is the warm-up.
    cells: Vec<Vec<Cell>>,
    recent_ttft_us: VecDeque<u64>,
    sent: u64,
    failed: u64,
    diverging: u64,
}

/// The run aggregate; one per standalone run.
pub struct RunAggregate {
    clock: std::sync::Arc<PhaseClock>,
    names: Vec<String>,
    targets: Vec<(u64, u64)>,
    slo: Slo,
    state: Mutex<State>,
}

/// A divergence warning for the terminal.
fn warning(r: &RequestRecord<'_>, name: &str, target: (u64, u64)) -> String {
    let u = r.outcome.usage;
    format!(
        "request {} ({name}): tokens differ from the target by more than 10 % \
         (prompt {} vs {}, output {} vs {})",
        r.request_id(),
        u.input_tokens.map_or("?".into(), |v| v.to_string()),
        target.0,
        u.output_tokens.map_or("?".into(), |v| v.to_string()),
        target.1
    )
}

impl RunAggregate {
    pub fn new(scenarios: &[Scenario], slo: Slo, clock: std::sync::Arc<PhaseClock>) -> RunAggregate {
        let cells = (0..=clock.phases())
            .map(|_| {
                scenarios
                    .iter()
                    .map(|s| Cell {
                        llm: ScenarioLlm::new(s.prompt_length, s.output_length),
                        prompt: DivSums::default(),
                        output: DivSums::default(),
                    })
                    .collect()
            })
            .collect();
        RunAggregate {
            clock,
            names: scenarios.iter().map(|s| s.name.clone()).collect(),
            targets: scenarios.iter().map(|s| (s.prompt_length, s.output_length)).collect(),
            slo,
            state: Mutex::new(State {
                cells,
                recent_ttft_us: VecDeque::with_capacity(RECENT),
                sent: 0,
                failed: 0,
                diverging: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (load requests ended, failed, median TTFT of the last [`RECENT`]
    /// in ms); warm-up requests are not counted.
    pub fn live(&self) -> (u64, u64, Option<f64>) {
        let st = self.lock();
        let mut v: Vec<u64> = st.recent_ttft_us.iter().copied().collect();
        v.sort_unstable();
        let p50 = (!v.is_empty()).then(|| v[(v.len() - 1) / 2] as f64 / 1e3);
        (st.sent, st.failed, p50)
    }

    /// Successful requests whose tokens diverged by more than 10 %.
    pub fn diverging(&self) -> u64 {
        self.lock().diverging
    }

    /// Ends the run: the tables, per phase (with their load types), and
    /// the warm-up's.
    pub fn finish(&self, percentiles: &[f64]) -> Tables {
        let mut st = self.lock();
        let mut reports: Vec<Vec<(ScenarioReport, DivSums, DivSums)>> = Vec::new();
        for row in &mut st.cells {
            reports.push(
                row.iter_mut()
                    .map(|c| (c.llm.take().unwrap_or_default(), c.prompt, c.output))
                    .collect(),
            );
        }
        let table = |parts: &[&(ScenarioReport, DivSums, DivSums)], seconds: f64| {
            Table::from_reports(parts, percentiles, seconds)
        };
        let warmup = {
            let parts: Vec<_> = reports[0].iter().collect();
            table(&parts, 0.0)
        };
        let mut phases = Vec::new();
        let mut all = Vec::new();
        for (i, row) in reports[1..].iter().enumerate() {
            let length_s = self.clock.length(i).as_secs_f64();
            let parts: Vec<_> = row.iter().collect();
            all.extend(parts.iter().copied());
            let load_types = self
                .names
                .iter()
                .zip(row)
                .map(|(n, r)| (n.clone(), table(&[r], length_s)))
                .collect();
            phases.push((table(&parts, length_s), load_types));
        }
        let total = table(&all, self.clock.total().as_secs_f64());
        Tables { warmup, phases, total }
    }
}

impl OutcomeSink for RunAggregate {
    fn record(&self, r: &RequestRecord<'_>) -> RecordNote {
        let phase = if r.warmup {
            None
        } else {
            self.clock.phase_at(r.scheduled)
        };
        let row = phase.map_or(0, |p| p + 1);
        let o = r.outcome;
        let mut st = self.lock();
        if !r.warmup {
            st.sent = st.sent.saturating_add(1);
            if o.failure.is_some() {
                st.failed = st.failed.saturating_add(1);
            }
        }
        if let Some(t) = o.ttft {
            if st.recent_ttft_us.len() == RECENT {
                st.recent_ttft_us.pop_front();
            }
            st.recent_ttft_us
                .push_back(u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
        }
        let Some(cell) = st.cells.get_mut(row).and_then(|c| c.get_mut(r.class)) else {
            return RecordNote::default();
        };
        let now_s = crate::metrics::unix_now() as u64;
        let div = cell.llm.record(o, &self.slo, now_s, None);
        let target = self.targets[r.class];
        if o.failure.is_none() {
            if let Some(i) = o.usage.input_tokens {
                cell.prompt.add(i, target.0);
            }
            if let Some(out) = o.usage.output_tokens {
                cell.output.add(out, target.1);
            }
        }
        let mut note = RecordNote::default();
        if div.prompt || div.output {
            st.diverging = st.diverging.saturating_add(1);
            if st.diverging <= DIVERGENCE_WARNINGS {
                note.divergence_warning = Some(warning(r, &self.names[r.class], target));
            }
        }
        note
    }
}

/// Latency statistics of one metric, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct LatencyStats {
    pub count: u64,
    pub mean: Option<f64>,
    /// Percentile label (`p50`, `p99.9`) -> value.
    pub percentiles: BTreeMap<String, Option<f64>>,
    pub max: Option<f64>,
}

/// The label of percentile `p`: `p50`, `p99.9`.
pub fn percentile_label(p: f64) -> String {
    let s = format!("{p}");
    format!("p{s}")
}

impl LatencyStats {
    fn from_hist(h: &HistReport, percentiles: &[f64]) -> LatencyStats {
        let ms = |us: u64| us as f64 / 1e3;
        LatencyStats {
            count: h.count,
            mean: h.mean_us().map(|v| v / 1e3),
            percentiles: percentiles
                .iter()
                .map(|&p| (percentile_label(p), h.percentile_us(p).map(ms)))
                .collect(),
            max: (h.count > 0).then(|| ms(h.max)),
        }
    }

    /// The value of percentile `p`, ms.
    pub fn at(&self, p: f64) -> Option<f64> {
        self.percentiles.get(&percentile_label(p)).copied().flatten()
    }
}

/// Token divergence from the targets over successful requests with usage.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Divergence {
    pub requests: u64,
    /// Mean |server - target| tokens.
    pub prompt_abs: Option<f64>,
    /// Mean |server - target| / target.
    pub prompt_rel: Option<f64>,
    pub output_abs: Option<f64>,
    pub output_rel: Option<f64>,
}

/// One table: a phase, a load type within a phase, the warm-up or the run.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Table {
    pub requests: u64,
    pub failures: u64,
    pub error_rate: f64,
    /// Requests ended per second of the phase (the warm-up: 0).
    pub achieved_rate: f64,
    /// Successful requests meeting every SLO, per second.
    pub goodput: f64,
    /// Send -> last token (E2E), successful requests.
    pub latency_ms: LatencyStats,
    pub ttft_ms: LatencyStats,
    pub tpot_ms: LatencyStats,
    pub itl_ms: LatencyStats,
    /// Open loop: send - scheduled arrival.
    pub queue_ms: LatencyStats,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub divergence: Divergence,
    pub failure_kinds: BTreeMap<String, u64>,
}

impl Table {
    fn from_reports(parts: &[&(ScenarioReport, DivSums, DivSums)], percentiles: &[f64], seconds: f64) -> Table {
        let mut t = Table::default();
        let mut hists: BTreeMap<&str, HistReport> = BTreeMap::new();
        let (mut prompt, mut output) = (DivSums::default(), DivSums::default());
        let mut good = 0u64;
        for (r, p, o) in parts {
            t.requests += r.requests;
            t.failures += r.failures;
            good += r.good;
            t.input_tokens = t.input_tokens.saturating_add(r.input_tokens);
            t.output_tokens = t.output_tokens.saturating_add(r.output_tokens);
            t.cached_tokens = t.cached_tokens.saturating_add(r.cached_tokens);
            for (k, n) in &r.failure_kinds {
                *t.failure_kinds.entry(k.clone()).or_default() += n;
            }
            for (name, h) in &r.metrics {
                hists.entry(name).or_default().merge(h);
            }
            prompt.merge(p);
            output.merge(o);
        }
        let stats = |name: &str| LatencyStats::from_hist(&hists.get(name).cloned().unwrap_or_default(), percentiles);
        t.latency_ms = stats("e2e");
        t.ttft_ms = stats("ttft");
        t.tpot_ms = stats("tpot");
        t.itl_ms = stats("itl");
        t.queue_ms = stats("queue");
        if t.requests > 0 {
            t.error_rate = t.failures as f64 / t.requests as f64;
        }
        if seconds > 0.0 {
            t.achieved_rate = t.requests as f64 / seconds;
            t.goodput = good as f64 / seconds;
        }
        let mean = |v: f64, n: u64| (n > 0).then(|| v / n as f64);
        t.divergence = Divergence {
            requests: prompt.n.max(output.n),
            prompt_abs: mean(prompt.abs as f64, prompt.n),
            prompt_rel: mean(prompt.rel, prompt.n),
            output_abs: mean(output.abs as f64, output.n),
            output_rel: mean(output.rel, output.n),
        };
        t
    }
}

/// Everything the summary and the plot need.
#[derive(Debug, Clone)]
pub struct Tables {
    pub warmup: Table,
    /// Per phase: the phase's table and its load types' tables.
    pub phases: Vec<(Table, BTreeMap<String, Table>)>,
    pub total: Table,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, Usage};

    fn scen(name: &str) -> Scenario {
        crate::scenario::TestConfig::from_yaml(&format!(
            "scenarios:\n  - {{name: {name}, provider: openai-chat, model: m, prompt_length: 100, output_length: 10}}\n"
        ))
        .unwrap()
        .scenarios
        .remove(0)
    }

    /// Requests land in the phase they were due in (warm-up apart), and
    /// the phase and run tables add up, with divergence averaged.
    /// Phases of different lengths (issue 14): a request belongs to the
    /// phase whose span holds its due time; past the end, the last phase;
    /// before the start, the warm-up (None).
    #[test]
    fn phases_of_different_lengths_split_at_their_own_boundaries() {
        let clock = PhaseClock::new(vec![Duration::from_secs(1), Duration::from_secs(3)]);
        let origin = Instant::now();
        assert_eq!(clock.phase_at(origin), None, "not started yet");
        clock.start(origin);
        let at = |ms: u64| clock.phase_at(origin + Duration::from_millis(ms));
        assert_eq!(
            (at(0), at(999), at(1000), at(3999), at(9000)),
            (Some(0), Some(0), Some(1), Some(1), Some(1))
        );
        assert_eq!(
            (clock.length(1), clock.total()),
            (Duration::from_secs(3), Duration::from_secs(4))
        );
    }

    #[test]
    fn requests_are_tabled_by_phase_and_load_type() {
        let clock = std::sync::Arc::new(PhaseClock::new(vec![Duration::from_secs(10); 2]));
        let agg = RunAggregate::new(&[scen("a"), scen("b")], Slo::default(), clock.clone());
        let origin = Instant::now();
        clock.start(origin);
        let ok = |ttft_ms: u64, out: u64| Outcome {
            ttft: Some(Duration::from_millis(ttft_ms)),
            e2e: Some(Duration::from_millis(ttft_ms * 2)),
            usage: Usage {
                input_tokens: Some(100),
                output_tokens: Some(out),
                ..Usage::default()
            },
            ..Outcome::default()
        };
        let rec = |class, at: Duration, warmup, o: &Outcome| {
            agg.record(&RequestRecord {
                class,
                scenario: "x",
                seq: 1,
                scheduled: origin + at,
                warmup,
                outcome: o,
                turn: None,
            })
        };
        rec(0, Duration::ZERO, true, &ok(5, 10));
        rec(0, Duration::from_secs(1), false, &ok(10, 10));
        rec(1, Duration::from_secs(2), false, &ok(20, 10));
        let note = rec(1, Duration::from_secs(12), false, &ok(30, 20));
        assert!(note.divergence_warning.is_some(), "20 vs 10 output tokens");
        let t = agg.finish(&[50.0, 100.0]);
        assert_eq!(t.warmup.requests, 1);
        assert_eq!(
            (t.phases[0].0.requests, t.phases[1].0.requests, t.total.requests),
            (2, 1, 3)
        );
        assert_eq!(t.phases[0].1["b"].requests, 1);
        assert_eq!(t.phases[0].0.ttft_ms.at(100.0), Some(20.0));
        assert_eq!(t.total.ttft_ms.at(50.0), Some(20.0));
        assert_eq!(t.phases[0].0.achieved_rate, 0.2);
        assert_eq!(t.phases[1].0.divergence.output_abs, Some(10.0));
        assert_eq!(t.phases[1].0.divergence.output_rel, Some(1.0));
        assert_eq!(agg.diverging(), 1);
        assert_eq!(percentile_label(99.9), "p99.9");
    }
}
