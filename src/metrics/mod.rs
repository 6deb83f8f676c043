//! Metrics: turns request outcomes into report windows.
//!
//! The [`Recorder`] is a cheap, cloneable handle. Users call
//! [`Recorder::record`] when a request ends; the worker calls
//! [`Recorder::take`] every report interval (and once more on stop or
//! quit) and receives everything recorded since the previous call, exactly
//! once: recording and taking happen under one lock, so a request lands in
//! exactly one window. This module decides the numbers; `locust::wire`
//! decides the bytes.

pub mod llm;
pub mod report;
pub mod request;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::outcome::Outcome;
use crate::scenario::{Scenario, Slo};
use llm::{Divergence, ScenarioLlm};
use report::{LlmReport, RequestEntry, StatsError};
use request::EntryAcc;

/// The HTTP method of every LLM request entry.
pub const METHOD: &str = "POST";

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One report window, ready for the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub entries: Vec<RequestEntry>,
    pub total: RequestEntry,
    pub errors: BTreeMap<String, StatsError>,
    pub llm: Option<LlmReport>,
}

#[derive(Debug)]
struct ScenarioAcc {
    name: String,
    request: EntryAcc,
    llm: ScenarioLlm,
    /// Warned once about token divergence already.
    warned: bool,
}

#[derive(Debug)]
struct State {
    window_start: f64,
    slo: Slo,
    scenarios: Vec<ScenarioAcc>,
    errors: BTreeMap<String, StatsError>,
}

/// What a caller may need to act on after recording a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordNote {
    /// Set the first time this scenario's token counts diverge by >10 %.
    pub divergence_warning: Option<String>,
}

/// Shared handle to the current window.
#[derive(Debug, Clone)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
}

impl Recorder {
    /// A recorder for these scenarios (indexed as given) and SLOs.
    pub fn new(scenarios: &[Scenario], slo: Slo) -> Self {
        let now = unix_now();
        let scenarios = scenarios
            .iter()
            .map(|s| ScenarioAcc {
                name: s.name.clone(),
                request: EntryAcc::new(&s.name, METHOD, now),
                llm: ScenarioLlm::new(s.prompt_length, s.output_length),
                warned: false,
            })
            .collect();
        Recorder {
            state: Arc::new(Mutex::new(State {
                window_start: now,
                slo,
                scenarios,
                errors: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters half-written
        // in a way that matters more than losing the run; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one finished request of scenario `index`.
    pub fn record(&self, index: usize, outcome: &Outcome, lag: Option<Duration>) -> RecordNote {
        let now = unix_now();
        let mut st = self.lock();
        let slo = st.slo;
        let Some(sc) = st.scenarios.get_mut(index) else {
            return RecordNote::default();
        };
        let response_ms = outcome.total.as_secs_f64() * 1e3;
        sc.request
            .log(now, response_ms, outcome.content_length, outcome.failure.is_some());
        let div = sc.llm.record(outcome, &slo, now as u64, lag);
        let mut note = RecordNote::default();
        if (div != Divergence::default()) && !sc.warned {
            sc.warned = true;
            let target = |p: bool| if p { "prompt" } else { "output" };
            let which = if div.prompt { target(true) } else { target(false) };
            note.divergence_warning = Some(format!(
                "{which} tokens reported by the server differ from the scenario's target by more than 10% \
                 (prompt: server {} vs target {}; output: server {} vs target {}); check the model's tokenizer \
                 and whether the server honours max_tokens",
                outcome.usage.input_tokens.map_or("?".into(), |v| v.to_string()),
                sc.llm_target_prompt(),
                outcome.usage.output_tokens.map_or("?".into(), |v| v.to_string()),
                sc.llm_target_output(),
            ));
        }
        if let Some(f) = &outcome.failure {
            let name = sc.name.clone();
            let text = f.summary();
            let key = format!("{METHOD}.{name}.{text}");
            let e = st.errors.entry(key).or_insert_with(|| StatsError {
                method: METHOD.into(),
                name,
                error: text.to_string(),
                occurrences: 0,
                first_seen: now,
                last_seen: now,
            });
            e.occurrences += 1;
            e.last_seen = now;
        }
        note
    }

    /// Records the scheduler's lateness for scenario `index` (see
    /// `load::LagSink`); it reaches the master with the next request.
    pub fn record_lag(&self, index: usize, lag: Duration) {
        if let Some(sc) = self.lock().scenarios.get_mut(index) {
            sc.llm.record_lag(lag);
        }
    }

    /// Open loop: `n` arrivals of scenario `index` were due but never sent.
    pub fn record_unsent(&self, index: usize, n: u64) {
        if let Some(sc) = self.lock().scenarios.get_mut(index) {
            sc.llm.record_unsent(n);
        }
    }

    /// Everything recorded since the last call; starts a new window.
    pub fn take(&self) -> Window {
        let now = unix_now();
        let mut st = self.lock();
        let start = std::mem::replace(&mut st.window_start, now);
        let mut total = EntryAcc::new("Aggregated", "", start);
        let mut entries = Vec::new();
        let mut llm = BTreeMap::new();
        for sc in &mut st.scenarios {
            let acc = std::mem::replace(&mut sc.request, EntryAcc::new(&sc.name, METHOD, now));
            if !acc.is_empty() {
                let entry = acc.into_entry();
                total.absorb(&entry);
                entries.push(entry);
            }
            if let Some(r) = sc.llm.take() {
                llm.insert(sc.name.clone(), r);
            }
        }
        let errors = std::mem::take(&mut st.errors);
        Window {
            entries,
            total: total.into_entry(),
            errors,
            llm: (!llm.is_empty()).then_some(LlmReport { v: 1, scenarios: llm }),
        }
    }
}

impl ScenarioAcc {
    fn llm_target_prompt(&self) -> u64 {
        self.llm.target_prompt()
    }
    fn llm_target_output(&self) -> u64 {
        self.llm.target_output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, FailureKind};
    use crate::scenario::TestConfig;

    fn config() -> TestConfig {
        TestConfig::from_yaml(
            "scenarios:\n  - {name: A, provider: openai-chat, model: m, prompt_length: 10, output_length: 4}\n  - {name: B, provider: anthropic, model: m, prompt_length: 10, output_length: 4}\n",
        )
        .unwrap()
    }

    #[test]
    fn each_request_lands_in_exactly_one_window_and_total_sums_entries() {
        let cfg = config();
        let rec = Recorder::new(&cfg.scenarios, Slo::default());
        let ok = Outcome {
            total: Duration::from_millis(20),
            content_length: 7,
            ..Outcome::default()
        };
        let bad = Outcome {
            total: Duration::from_millis(40),
            failure: Some(Failure {
                kind: FailureKind::Truncated,
                message: "stream truncated".into(),
            }),
            ..Outcome::default()
        };
        rec.record(0, &ok, None);
        rec.record(1, &bad, None);
        rec.record(1, &bad, None);
        let w1 = rec.take();
        rec.record(0, &ok, None);
        let w2 = rec.take();
        let w3 = rec.take();
        assert_eq!(w1.entries.len(), 2);
        assert_eq!((w1.total.num_requests, w1.total.num_failures), (3, 2));
        assert_eq!(w1.errors.values().map(|e| e.occurrences).sum::<u64>(), 2);
        assert_eq!(w1.errors.values().next().unwrap().error, "stream truncated");
        assert_eq!(w2.total.num_requests, 1);
        assert!(w3.entries.is_empty() && w3.llm.is_none() && w3.total.num_requests == 0);
        let llm = w1.llm.unwrap();
        assert_eq!(llm.scenarios["B"].failure_kinds["truncated"], 2);
    }

    #[test]
    fn recording_from_many_threads_loses_nothing() {
        let cfg = config();
        let rec = Recorder::new(&cfg.scenarios, Slo::default());
        let mut taken = 0;
        std::thread::scope(|s| {
            for t in 0..4 {
                let rec = rec.clone();
                s.spawn(move || {
                    for _ in 0..5_000 {
                        rec.record(t % 2, &Outcome::default(), None);
                    }
                });
            }
            for _ in 0..50 {
                taken += rec.take().total.num_requests;
            }
        });
        taken += rec.take().total.num_requests;
        assert_eq!(taken, 20_000);
    }
}
