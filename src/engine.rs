//! The engine: one test run on this worker, from the first `spawn` to
//! `stop`. It wires the parts together and owns none of their logic:
//! [`crate::load::Controller`] decides when requests start,
//! [`crate::llm::LlmClient`] sends them and measures, [`Recorder`] counts
//! them, [`crate::load::safety`] watches the error rate.
//!
//! Life of a run:
//! 1. [`Engine::start`] prepares every scenario (URL, API key from the
//!    environment, prompt prefix) and the HTTP client; a bad setup is an
//!    error the worker reports to the master.
//! 2. With warm-up on, one request per scenario runs first; load starts only
//!    when every one succeeded. A failed warm-up sends
//!    [`EngineEvent::Abort`], and the master stops the run.
//! 3. Each `spawn` step is applied to the controller; [`Engine::spawn_done`]
//!    says when its users have all started.
//! 4. [`Engine::stop`] lets in-flight requests finish within the master's
//!    `stop_timeout`, then cancels them. Every request, warm-up and
//!    cancelled ones included, is recorded exactly once.
//!
//! A scenario with a `session` runs a whole session per iteration (closed
//! loop) or arrival (open loop): its turns one after another, each
//! resending the conversation ([`crate::llm::session`]), with the think
//! time between them, recorded per turn. A failed turn ends its session
//! (the conversation has no answer to continue from). Think time ends at
//! once when the request's cancel token fires; a session started before a
//! stop goes on within the stop grace like any in-flight request. The
//! warm-up sends turn 1 only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dataset::Prompts;
use crate::llm::answer::AnswerText;
use crate::llm::request::{Role, messages_body};
use crate::llm::session::Conversation;
use crate::llm::{LlmClient, PreparedScenario};
use crate::load::safety::ErrorWindow;
use crate::load::saturation::{self, SaturationFeed};
use crate::load::{Controller, LagSink, LoadPlan, Task};
use crate::metrics::{OutcomeSink, Recorder, RequestRecord, SessionTurn};
use crate::outcome::FailureKind;
use crate::scenario::{LoadMode, TestConfig, Wait};

/// Something the worker loop must tell the master.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// Shown on the master once per scenario (token divergence).
    Warning { scenario: String, message: String },
    /// The run must stop: the master shows the reason and stops everyone.
    Abort { reason: String },
    /// A Locust `exception` message.
    Exception { msg: String, traceback: String },
    /// This worker cannot keep up: its timings are not valid (once per run;
    /// see [`crate::load::saturation`]).
    Saturated { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The error names the scenario itself.
    #[error("{source}")]
    Scenario {
        scenario: String,
        source: crate::llm::LlmError,
    },
    #[error(
        "the master sent no target host: start it with --host http://SERVER:PORT (or fill in Host in the web UI), \
         or give scenario {scenario:?} an absolute endpoint URL"
    )]
    NoHost { scenario: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(crate::llm::LlmError),
    #[error("scenario {scenario:?}: {source}")]
    Dataset {
        scenario: String,
        source: crate::dataset::DatasetError,
    },
}

/// Run-wide settings the worker knows but the test definition does not.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The target base URL from the master's `--host`.
    pub host: String,
    /// Seeds this worker's random streams; distinct per worker.
    pub seed: u64,
    /// The master's `stop_timeout`: how long in-flight requests may finish.
    pub stop_timeout: Duration,
    /// The worker operator's bounds on hosts and key variables.
    pub allow: crate::llm::AllowList,
    /// Sinks of every request besides the Locust window (`--requests-out`,
    /// `--metrics-addr`, the standalone aggregate).
    pub sinks: crate::metrics::sink::Sinks,
    /// This worker's place in the cluster when the run starts (dataset
    /// shares are drawn by it from the first request, warm-up included).
    pub slot: crate::load::cluster::ClusterSlot,
}

/// One request of the load: send it, measure it, record it, check safety.
struct LlmTask {
    client: LlmClient,
    scenarios: Vec<PreparedScenario>,
    /// The Locust window first, then any sinks the caller added.
    sinks: Vec<Arc<dyn OutcomeSink>>,
    next_seq: AtomicU64,
    /// Per scenario: its dataset prompts, if it draws from one.
    datasets: Vec<Option<Prompts>>,
    /// This worker's cluster slot, `index << 32 | count`, for dataset shares.
    slot: AtomicU64,
    open_loop: bool,
    error_window: Option<Mutex<ErrorWindow>>,
    aborted: AtomicBool,
    events: mpsc::Sender<EngineEvent>,
}

impl LlmTask {
    /// Sends one request of scenario `class`, records it, returns whether it
    /// succeeded (and the failure text when not).
    async fn request(
        &self,
        class: usize,
        scheduled: Instant,
        cancel: &CancellationToken,
        warmup: bool,
    ) -> Result<(), String> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let p = &self.scenarios[class];
        let mut outcome = match self.datasets.get(class).and_then(Option::as_ref) {
            None => self.client.execute(p, seq, cancel).await,
            Some(prompts) => {
                let slot = self.slot.load(Ordering::Relaxed);
                let record = prompts.next((slot >> 32) as u32, slot as u32);
                let max_tokens = crate::dataset::output_tokens(p.scenario(), record, seq);
                let messages: Vec<(Role, &str)> = record.messages.iter().map(|(r, t)| (*r, t.as_str())).collect();
                match messages_body(p.scenario(), &messages, max_tokens) {
                    Ok(body) => self.client.execute_body(p, seq, body, max_tokens, cancel).await,
                    Err(e) => {
                        self.abort(e.to_string()).await;
                        return Err(e.to_string());
                    }
                }
            }
        };
        if self.open_loop {
            outcome.queue = started.saturating_duration_since(scheduled);
        }
        let record = RequestRecord {
            class,
            scenario: self.scenarios[class].name(),
            seq,
            scheduled,
            warmup,
            outcome: &outcome,
            turn: None,
        };
        self.after(&record).await
    }

    /// Hands one finished request to every sink, then warns and checks the
    /// error rate; returns whether it succeeded (the failure text if not).
    async fn after(&self, record: &RequestRecord<'_>) -> Result<(), String> {
        let mut warnings = Vec::new();
        for sink in &self.sinks {
            if let Some(message) = sink.record(record).divergence_warning {
                warnings.push(message);
            }
        }
        let outcome = record.outcome;
        for message in warnings {
            let scenario = record.scenario.to_string();
            let _ = self.events.send(EngineEvent::Warning { scenario, message }).await;
        }
        match &outcome.failure {
            None => {
                self.check_errors(false).await;
                Ok(())
            }
            Some(f) => {
                if f.kind() != FailureKind::Cancelled {
                    self.check_errors(true).await;
                }
                Err(f.message())
            }
        }
    }

    /// Runs one session of scenario `class`: its turns in order, think time
    /// between them; ends early on a failed turn or cancellation.
    async fn session(&self, class: usize, scheduled: Instant, cancel: &CancellationToken) {
        let p = &self.scenarios[class];
        let s = p.scenario();
        let Some(sess) = &s.session else { return };
        let first_seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let session_id = reqwest::header::HeaderValue::try_from(format!("{first_seq:016x}")).ok();
        let mut conversation = Conversation::new();
        let mut think = ThinkTime::new(sess.think_time, first_seq);
        for turn in 0..sess.turns {
            if turn > 0 {
                let pause = think.next();
                if !pause.is_zero() {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            let seq = if turn == 0 {
                first_seq
            } else {
                self.next_seq.fetch_add(1, Ordering::Relaxed)
            };
            let text = if turn == 0 {
                p.prompt().build(seq)
            } else {
                p.turn_prompt(seq)
            };
            conversation.ask(text);
            let ideal = conversation.ideal_cached(s);
            let body = match conversation.body(s) {
                Ok(b) => b,
                Err(e) => {
                    self.abort(e.to_string()).await;
                    return;
                }
            };
            let mut answer = AnswerText::new(s.provider);
            let started = Instant::now();
            let mut outcome = self
                .client
                .execute_turn(p, seq, body, session_id.clone(), &mut answer, cancel)
                .await;
            if self.open_loop && turn == 0 {
                outcome.queue = started.saturating_duration_since(scheduled);
            }
            let record = RequestRecord {
                class,
                scenario: p.name(),
                seq,
                scheduled,
                warmup: false,
                outcome: &outcome,
                turn: Some(SessionTurn {
                    turn,
                    ideal_cached_tokens: ideal,
                }),
            };
            if self.after(&record).await.is_err() {
                return;
            }
            conversation.answer(s, answer.into_text(), &outcome);
        }
    }

    async fn check_errors(&self, failed: bool) {
        let Some(window) = &self.error_window else { return };
        let trip = window.lock().unwrap_or_else(|e| e.into_inner()).record(failed);
        if let Some(trip) = trip {
            self.abort(trip.to_string()).await;
        }
    }

    /// Sends one abort per run, however many requests see the trip.
    async fn abort(&self, reason: String) {
        if !self.aborted.swap(true, Ordering::SeqCst) {
            let _ = self.events.send(EngineEvent::Abort { reason }).await;
        }
    }
}

impl Task for LlmTask {
    async fn run(&self, class: usize, scheduled: Instant, cancel: CancellationToken) {
        if self.scenarios[class].scenario().session.is_some() {
            self.session(class, scheduled, &cancel).await;
        } else {
            let _ = self.request(class, scheduled, &cancel, false).await;
        }
    }
}

/// A cluster slot in one atomic word: `index << 32 | count`.
fn pack_slot(slot: crate::load::cluster::ClusterSlot) -> u64 {
    (u64::from(slot.index()) << 32) | u64::from(slot.count())
}

/// Draws a session's think times (seeded per session).
struct ThinkTime {
    wait: Wait,
    rng: rand::rngs::StdRng,
}

impl ThinkTime {
    fn new(wait: Wait, seed: u64) -> ThinkTime {
        ThinkTime {
            wait,
            rng: rand::SeedableRng::seed_from_u64(seed),
        }
    }

    fn next(&mut self) -> Duration {
        match self.wait {
            Wait::None | Wait::Pacing { .. } => Duration::ZERO,
            Wait::Constant { seconds } => seconds,
            Wait::Between { min, max } => {
                if max > min {
                    rand::Rng::random_range(&mut self.rng, min..=max)
                } else {
                    min
                }
            }
        }
    }
}

/// Scheduler lateness goes to the scenario's `lag` distribution and to the
/// saturation probe.
struct RecorderLag(Recorder, Arc<SaturationFeed>);

impl LagSink for RecorderLag {
    fn record_lag(&self, class: usize, lag: Duration) {
        self.0.record_lag(class, lag);
        self.1.record_start(lag);
    }

    fn record_unsent(&self, class: usize, n: u64) {
        self.0.record_unsent(class, n);
        self.1.record_unsent(n);
    }
}

/// Where the run is between `spawn` and load.
enum RunPhase {
    /// Warm-up requests in flight; the latest targets wait for them.
    WarmingUp {
        handle: JoinHandle<Result<(), String>>,
        targets: BTreeMap<String, u32>,
        cluster_users: u32,
    },
    /// Warm-up failed: no load starts; the master was told to stop.
    Failed,
    /// Load runs; `step` resolves when the latest ramp step has started all its users.
    Running { step: Option<JoinHandle<()>> },
}

pub struct Engine {
    controller: Controller<LlmTask>,
    task: Arc<LlmTask>,
    recorder: Recorder,
    phase: RunPhase,
    /// Cancels warm-up requests when the run stops early.
    warmup_cancel: CancellationToken,
    /// Ends the saturation probe with the engine.
    _probe: tokio_util::sync::DropGuard,
}

impl Engine {
    /// Prepares a run; must be called inside the tokio runtime.
    pub fn start(
        config: TestConfig,
        ctx: RunContext,
        events: mpsc::Sender<EngineEvent>,
    ) -> Result<Engine, EngineError> {
        let sinks = ctx.sinks.0.clone();
        Engine::start_with_sinks(config, ctx, events, sinks)
    }

    /// Like [`Engine::start`], with more sinks after the Locust window
    /// (the standalone aggregate, request logs, Prometheus).
    pub fn start_with_sinks(
        config: TestConfig,
        ctx: RunContext,
        events: mpsc::Sender<EngineEvent>,
        extra_sinks: Vec<Arc<dyn OutcomeSink>>,
    ) -> Result<Engine, EngineError> {
        let recorder = Recorder::new(&config.scenarios, config.slo);
        let open_loop = config.load.mode == LoadMode::Open;
        let concurrency = if open_loop {
            config.load.max_in_flight as usize
        } else {
            1024
        };
        let client = LlmClient::new(&config.timeouts, concurrency).map_err(EngineError::Client)?;
        let scenarios = config
            .scenarios
            .iter()
            .map(|s| {
                let absolute = s.endpoint.as_deref().is_some_and(|e| e.contains("://"));
                if ctx.host.trim().is_empty() && !absolute {
                    return Err(EngineError::NoHost {
                        scenario: s.name.clone(),
                    });
                }
                PreparedScenario::with_allow(s, &ctx.host, &ctx.allow).map_err(|source| EngineError::Scenario {
                    scenario: s.name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let datasets = config
            .scenarios
            .iter()
            .map(|s| {
                s.dataset
                    .as_ref()
                    .map(|d| {
                        Prompts::load(d).map_err(|source| EngineError::Dataset {
                            scenario: s.name.clone(),
                            source,
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let task = Arc::new(LlmTask {
            client,
            scenarios,
            datasets,
            slot: AtomicU64::new(pack_slot(ctx.slot)),
            sinks: std::iter::once(Arc::new(recorder.clone()) as Arc<dyn OutcomeSink>)
                .chain(extra_sinks)
                .collect(),
            next_seq: AtomicU64::new(ctx.seed.rotate_left(32) & 0xffff_ffff_0000_0000),
            open_loop,
            error_window: ErrorWindow::from_safety(&config.safety).map(Mutex::new),
            aborted: AtomicBool::new(false),
            events: events.clone(),
        });
        let feed = Arc::new(SaturationFeed::default());
        let probe_cancel = CancellationToken::new();
        saturation::spawn_probe(feed.clone(), probe_cancel.clone(), move |reason| {
            tokio::spawn(async move {
                let _ = events.send(EngineEvent::Saturated { reason }).await;
            });
        });
        let plan = LoadPlan::from_config(&config, ctx.seed, ctx.stop_timeout);
        let controller = Controller::with_lag_sink(task.clone(), plan, Arc::new(RecorderLag(recorder.clone(), feed)));
        let warmup_cancel = CancellationToken::new();
        let phase = if config.safety.warmup {
            RunPhase::WarmingUp {
                handle: tokio::spawn(warm_up(task.clone(), warmup_cancel.clone())),
                targets: BTreeMap::new(),
                cluster_users: 0,
            }
        } else {
            RunPhase::Running { step: None }
        };
        Ok(Engine {
            controller,
            task,
            recorder,
            phase,
            warmup_cancel,
            _probe: probe_cancel.drop_guard(),
        })
    }

    /// Applies one ramp step of absolute per-class targets.
    pub fn apply(&mut self, targets: &BTreeMap<String, u32>, cluster_users: u32) {
        match &mut self.phase {
            RunPhase::WarmingUp {
                targets: t,
                cluster_users: c,
                ..
            } => {
                *t = targets.clone();
                *c = cluster_users;
            }
            RunPhase::Failed => {}
            RunPhase::Running { step } => {
                let waiter = self.controller.apply(targets, cluster_users);
                *step = Some(tokio::spawn(async move {
                    let _ = waiter.wait().await;
                }));
            }
        }
    }

    /// Places this worker among the cluster's (see `load::cluster`).
    pub fn set_slot(&self, slot: crate::load::cluster::ClusterSlot) {
        self.task.slot.store(pack_slot(slot), Ordering::Relaxed);
        self.controller.set_slot(slot);
    }

    pub fn user_counts(&self) -> BTreeMap<String, u32> {
        self.controller.user_counts()
    }

    /// True when the latest step has started all its users. Also moves the
    /// run from warm-up to load once the warm-up has succeeded.
    pub fn spawn_done(&mut self) -> bool {
        if let RunPhase::WarmingUp { handle, .. } = &self.phase {
            if !handle.is_finished() {
                return false;
            }
            let RunPhase::WarmingUp {
                handle,
                targets,
                cluster_users,
            } = std::mem::replace(&mut self.phase, RunPhase::Running { step: None })
            else {
                unreachable!("matched above");
            };
            // The handle has finished: this does not block.
            let result = futures_util::FutureExt::now_or_never(handle).and_then(Result::ok);
            match result {
                Some(Ok(())) => self.apply(&targets, cluster_users),
                _ => {
                    self.phase = RunPhase::Failed;
                    return false;
                }
            }
        }
        match &self.phase {
            RunPhase::Running { step: Some(h) } => h.is_finished(),
            RunPhase::Running { step: None } => true,
            _ => false,
        }
    }

    /// True once the warm-up is over and load has been applied (the first
    /// [`Engine::spawn_done`] after a successful warm-up does it).
    pub fn load_started(&self) -> bool {
        matches!(self.phase, RunPhase::Running { .. })
    }

    /// Open loop: the last phase has ended and no more arrivals will come.
    pub fn is_schedule_finished(&self) -> bool {
        self.controller.is_schedule_finished()
    }

    /// True once warm-up failed: no load will start.
    pub fn warmup_failed(&self) -> bool {
        matches!(self.phase, RunPhase::Failed)
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.controller.in_flight()
    }

    /// The metrics handle; outlives the engine until the final report.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Stops the run: in-flight requests get `grace`, then are cancelled
    /// (and recorded as cancelled). Returns when every request has ended.
    pub async fn stop(self, grace: Duration) {
        let Engine {
            controller,
            task,
            phase,
            warmup_cancel,
            ..
        } = self;
        if let RunPhase::WarmingUp { handle, .. } = phase {
            let cancel = warmup_cancel.clone();
            let timer = tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                cancel.cancel();
            });
            let _ = handle.await;
            timer.abort();
        }
        controller.stop(grace).await;
        drop(task);
    }
}

/// One request per scenario, all at once; the first failure is the reason.
async fn warm_up(task: Arc<LlmTask>, cancel: CancellationToken) -> Result<(), String> {
    let mut handles = Vec::new();
    for class in 0..task.scenarios.len() {
        let (task, cancel) = (task.clone(), cancel.clone());
        handles.push(tokio::spawn(async move {
            let r = task.request(class, Instant::now(), &cancel, true).await;
            (class, r)
        }));
    }
    let mut first_error = None;
    for h in handles {
        if let Ok((class, Err(msg))) = h.await
            && first_error.is_none()
        {
            first_error = Some(format!(
                "warm-up request of scenario {:?} failed, so no load was started: {msg}; \
                 check the target (--host), the endpoint and the model name",
                task.scenarios[class].name()
            ));
        }
    }
    match first_error {
        None => Ok(()),
        // The run was stopped during warm-up: not a failure of the target.
        Some(reason) if cancel.is_cancelled() => Err(reason),
        Some(reason) => {
            task.abort(reason.clone()).await;
            Err(reason)
        }
    }
}
