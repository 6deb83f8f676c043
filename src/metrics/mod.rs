//! Metrics: turns request outcomes into report windows.
//!
//! The [`Recorder`] is a cheap, cloneable handle. Users call
//! [`Recorder::record`] when a request ends; the worker calls
//! [`Recorder::take`] every report interval (and once more on stop or
//! quit) and receives everything recorded since the previous call, exactly
//! once: recording and taking happen under one lock, so a request lands in
//! exactly one window. This module decides the numbers; `locust::wire`
//! decides the bytes.
//!
//! Failures are keyed in Locust's failures table by their stable summary
//! (`outcome::Failure::summary`). A server can still vary what goes into a
//! summary per request (a random error `type`), so each scenario admits at
//! most [`MAX_FAILURE_KEYS`] distinct summaries over the recorder's life;
//! later new ones are counted under `"{group}: other"`
//! (`FailureKind::group`). A worker thus sends at most `MAX_FAILURE_KEYS`
//! plus one row per kind group per scenario, however hostile the target,
//! and every failure is still counted exactly once.
//!
//! # Sessions: one entry per turn
//! A scenario with a multi-turn `session` is recorded as one entry per turn,
//! named [`turn_name`] (`"Chat turn 2"`), in Locust's table and in the `llm`
//! report alike: each turn is its own request with its own prompt length,
//! so TTFT, input and cached tokens are reported per turn, and the token
//! targets (the divergence check) are the turn's own
//! (`Scenario::target_prompt_tokens`). Each turn's report also carries
//! `ideal_cached_tokens`, what a perfect prefix cache would have served
//! (see `crate::llm::session`), beside the server's `cached_tokens`.

pub mod export;
pub mod llm;
pub mod prometheus;
pub mod report;
pub mod request;
pub mod sink;

pub use sink::{OutcomeSink, RequestRecord, SessionTurn};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::outcome::{Failure, Outcome};
use crate::scenario::{Scenario, Slo};
use llm::{Divergence, ScenarioLlm};
use report::{LlmReport, RequestEntry, StatsError};
use request::EntryAcc;

/// The HTTP method of every LLM request entry.
pub const METHOD: &str = "POST";

/// Distinct failure summaries one scenario may put in the failures table;
/// past it, new summaries go to `"{group}: other"` (see the module docs).
pub const MAX_FAILURE_KEYS: usize = 32;

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
    /// Failure summaries admitted to the table (at most `MAX_FAILURE_KEYS`);
    /// kept across windows, since the master keeps its rows for the run.
    failure_keys: BTreeSet<String>,
}

/// The entry name of turn `turn` (0-based) of a session scenario.
pub fn turn_name(scenario: &str, turn: u32) -> String {
    format!("{scenario} turn {}", turn.saturating_add(1))
}

#[derive(Debug)]
struct State {
    window_start: f64,
    slo: Slo,
    /// One per entry: a scenario, or one turn of a session scenario.
    scenarios: Vec<ScenarioAcc>,
    /// Per scenario (config order): its first entry and its number of turns.
    slots: Vec<(usize, u32)>,
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
        let mut accs = Vec::new();
        let mut slots = Vec::new();
        for s in scenarios {
            let turns = s.turns();
            slots.push((accs.len(), turns));
            for turn in 0..turns {
                let name = if s.session.is_some() {
                    turn_name(&s.name, turn)
                } else {
                    s.name.clone()
                };
                accs.push(ScenarioAcc {
                    request: EntryAcc::new(&name, METHOD, now),
                    name,
                    llm: ScenarioLlm::new(s.target_prompt_tokens(turn), s.target_output_tokens()),
                    warned: false,
                    failure_keys: BTreeSet::new(),
                });
            }
        }
        Recorder {
            state: Arc::new(Mutex::new(State {
                window_start: now,
                slo,
                scenarios: accs,
                slots,
                errors: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters half-written
        // in a way that matters more than losing the run; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one finished request of scenario `index` (of its first
    /// turn, for a session scenario).
    pub fn record(&self, index: usize, outcome: &Outcome, lag: Option<Duration>) -> RecordNote {
        self.record_entry(index, 0, outcome, lag, None)
    }

    /// Records turn `turn` (0-based) of a session of scenario `index`, and
    /// what a perfect prefix cache would have served it.
    pub fn record_turn(&self, index: usize, turn: u32, outcome: &Outcome, ideal_cached_tokens: u64) -> RecordNote {
        self.record_entry(index, turn, outcome, None, Some(ideal_cached_tokens))
    }

    fn record_entry(
        &self,
        index: usize,
        turn: u32,
        outcome: &Outcome,
        lag: Option<Duration>,
        ideal_cached: Option<u64>,
    ) -> RecordNote {
        let now = unix_now();
        let mut st = self.lock();
        let slo = st.slo;
        let Some(entry) = st.entry(index, turn) else {
            return RecordNote::default();
        };
        let sc = &mut st.scenarios[entry];
        if let Some(n) = ideal_cached {
            sc.llm.record_ideal_cached(n);
        }
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
            let (text, kind) = admit_failure_key(&mut sc.failure_keys, f);
            let key = format!("{METHOD}.{name}.{text}");
            let e = st.errors.entry(key).or_insert_with(|| StatsError {
                method: METHOD.into(),
                name,
                error: text,
                kind,
                occurrences: 0,
                first_seen: now,
                last_seen: now,
            });
            e.occurrences = e.occurrences.saturating_add(1);
            e.last_seen = now;
        }
        note
    }

    /// Records the scheduler's lateness for scenario `index` (see
    /// `load::LagSink`); it reaches the master with the next request.
    pub fn record_lag(&self, index: usize, lag: Duration) {
        let mut st = self.lock();
        if let Some(entry) = st.entry(index, 0) {
            st.scenarios[entry].llm.record_lag(lag);
        }
    }

    /// Open loop: `n` arrivals of scenario `index` were due but never sent.
    pub fn record_unsent(&self, index: usize, n: u64) {
        let mut st = self.lock();
        if let Some(entry) = st.entry(index, 0) {
            st.scenarios[entry].llm.record_unsent(n);
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

impl State {
    /// The entry of turn `turn` of scenario `index`, if both exist.
    fn entry(&self, index: usize, turn: u32) -> Option<usize> {
        let &(first, turns) = self.slots.get(index)?;
        (turn < turns).then(|| first + turn as usize)
    }
}

/// The failures-table row of `f`, as (text, kind): its summary and kind
/// label while the scenario has room for it (or already admitted it), else
/// its group's overflow row.
fn admit_failure_key(admitted: &mut BTreeSet<String>, f: &Failure) -> (String, String) {
    let summary = f.summary();
    if admitted.contains(summary) || admitted.len() < MAX_FAILURE_KEYS {
        if !admitted.contains(summary) {
            admitted.insert(summary.to_string());
        }
        return (summary.to_string(), f.kind().label());
    }
    let group = f.kind().group();
    (format!("{group}: other"), group.to_string())
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
    use crate::outcome::FailureKind;
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
            failure: Some(Failure::new(
                FailureKind::Truncated,
                "stream truncated",
                "after 3 events",
            )),
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
        let row = w1.errors.values().next().unwrap();
        assert_eq!(
            (row.error.as_str(), row.kind.as_str()),
            ("truncated: stream truncated", "truncated")
        );
        assert_eq!(w2.total.num_requests, 1);
        assert!(w3.entries.is_empty() && w3.llm.is_none() && w3.total.num_requests == 0);
        let llm = w1.llm.unwrap();
        assert_eq!(llm.scenarios["B"].failure_kinds["truncated"], 2);
    }

    /// Regression test for issue 13 (7,778 failure rows in 6 s): 10,000
    /// failures of random text (random error types, random causes, random
    /// statuses, unique content-type parameters) make at most the cap of
    /// rows per scenario plus one overflow row per kind group, and every
    /// failure is counted exactly once.
    #[test]
    fn random_failure_text_makes_a_bounded_number_of_rows_and_exact_counts() {
        use rand::{Rng, SeedableRng};
        let cfg = config();
        let rec = Recorder::new(&cfg.scenarios, Slo::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let word = |rng: &mut rand::rngs::StdRng, n: usize| -> String {
            (0..n).map(|_| char::from(rng.random_range(b'a'..=b'z'))).collect()
        };
        // Rows merged across windows, as the master's failures table does.
        let mut table: BTreeMap<String, u64> = BTreeMap::new();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        let mut failures = 0u64;
        const N: u64 = 10_000;
        for i in 0..N {
            let detail = word(&mut rng, 300);
            let f = match i % 4 {
                0 => Failure::with_cause(
                    FailureKind::ErrorEvent,
                    "error event in stream",
                    &word(&mut rng, 8),
                    &detail,
                ),
                1 => Failure::new(
                    FailureKind::HttpStatus(rng.random_range(100..1000)),
                    "HTTP status",
                    &detail,
                ),
                2 => Failure::with_cause(
                    FailureKind::InvalidResponse,
                    "response is not text/event-stream",
                    &format!("text/{}", word(&mut rng, 6)),
                    &detail,
                ),
                _ => Failure::with_cause(
                    FailureKind::Connect,
                    "request not sent",
                    &format!("refused {} req_{:x}", rng.random::<u64>(), rng.random::<u64>()),
                    &detail,
                ),
            };
            assert!(f.detail().len() <= crate::outcome::DETAIL_MAX_BYTES);
            let o = Outcome {
                failure: Some(f),
                ..Outcome::default()
            };
            rec.record((i % 2) as usize, &o, None);
            if i % 997 == 0 || i == N - 1 {
                let w = rec.take();
                failures += w.total.num_failures;
                for e in w.errors.into_values() {
                    *table.entry(format!("{}.{}", e.name, e.error)).or_default() += e.occurrences;
                }
                for r in w.llm.into_iter().flat_map(|l| l.scenarios.into_values()) {
                    for (k, n) in r.failure_kinds {
                        *kinds.entry(k).or_default() += n;
                    }
                }
            }
        }
        const GROUPS: usize = 8;
        for name in ["A", "B"] {
            let rows = table.keys().filter(|k| k.starts_with(&format!("{name}."))).count();
            assert!(rows <= MAX_FAILURE_KEYS + GROUPS, "{name}: {rows} rows");
            assert!(rows > MAX_FAILURE_KEYS, "the cap was reached: {rows} rows");
        }
        assert!(table.keys().any(|k| k.ends_with("http_status: other")), "{table:?}");
        assert_eq!(table.values().sum::<u64>(), N);
        assert_eq!(kinds.values().sum::<u64>(), N);
        assert_eq!(failures, N);
        // The ids and numbers in the Connect cause (scenario B's) were
        // normalised away: one row.
        assert_eq!(
            table
                .keys()
                .filter(|k| k.contains("connect: request not sent"))
                .collect::<Vec<_>>(),
            ["B.connect: request not sent: refused <n> <id>"]
        );
    }

    #[test]
    fn a_cause_admitted_before_the_cap_keeps_its_own_row() {
        let cfg = config();
        let rec = Recorder::new(&cfg.scenarios, Slo::default());
        let fail = |cause: &str| Outcome {
            failure: Some(Failure::with_cause(
                FailureKind::ErrorEvent,
                "error event in stream",
                cause,
                "",
            )),
            ..Outcome::default()
        };
        rec.record(0, &fail("overloaded"), None);
        for i in 0..100 {
            rec.record(
                0,
                &fail(&format!("kind{}", "x".repeat(i % 20) + &"y".repeat(i / 20))),
                None,
            );
        }
        rec.record(0, &fail("overloaded"), None);
        let errors = rec.take().errors;
        let row = &errors["POST.A.error_event: error event in stream: overloaded"];
        assert_eq!((row.occurrences, row.kind.as_str()), (2, "error_event"));
        let other = &errors["POST.A.error_event: other"];
        assert_eq!(other.kind, "error_event");
        assert_eq!(errors.len(), MAX_FAILURE_KEYS + 1);
        assert_eq!(errors.values().map(|e| e.occurrences).sum::<u64>(), 102);
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
