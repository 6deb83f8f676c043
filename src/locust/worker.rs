//! The driver of the worker's protocol: performs what [`super::state`]
//! decides.
//!
//! One task owns the connection, the run and the protocol state; every
//! event (a master message, a timer, a finished ramp step or stop, a
//! signal) goes through [`Machine::step`], and the resulting [`Action`]s
//! are performed here, in order. Users never touch the socket: they record
//! into the run's metrics and send [`EngineEvent`]s.
//!
//! The driver is generic over a [`Connector`] (how to reach the master)
//! and a [`RunEngine`] (what a run is), so its tests use channels and a
//! fake run; [`run`] plugs in TCP and [`Engine`].
//!
//! Losing the master (a send error, a `reconnect`, or no heartbeat reply for
//! [`MASTER_SILENCE`]) ends the run, rebuilds the connection, registers again,
//! sends what was measured but not yet reported, and waits for the next
//! spawn, as a fresh worker.
//! After `master_timeout` without a registered master the worker gives up.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until};
use tracing::{debug, error, info, warn};

use super::process::ProcessUsage;
use super::state::{Action, Event, Machine, State};
use super::transport::{Connector, TcpConnector, Transport, TransportError};
use super::wire::{MasterMsg, Spawn, StatsPayload, WorkerMsg};
use crate::engine::{Engine, EngineEvent, RunContext};
use crate::load::cluster::ClusterSlot;
use crate::metrics::Recorder;
use crate::scenario::TestConfig;

/// Locust's heartbeat interval, both ways.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Locust's worker report interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(3);
/// No heartbeat reply for this long means the master is gone. Locust's
/// Python worker waits 60 s; a restarted master is noticed at once anyway
/// (it answers our heartbeat with `reconnect`).
pub const MASTER_SILENCE: Duration = Duration::from_secs(20);
/// `client_ready` is re-sent this often until the master acks it.
const READY_RETRY: Duration = Duration::from_secs(5);
/// After the final stats, the socket stays open this long before exit.
const LINGER: Duration = Duration::from_millis(300);
/// Events from users waiting for the loop; when full, users wait.
const EVENT_CAPACITY: usize = 1024;
/// How often a ramp step in progress is checked for completion.
const SPAWN_CHECK: Duration = Duration::from_millis(50);

/// How to reach the master.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub master_host: String,
    pub master_port: u16,
    /// Give up after this long without a registered master.
    pub master_timeout: Duration,
    /// Routing identity; `<hostname>_<random hex>` when None.
    pub node_id: Option<String>,
    /// Hosts and key variables the master may use (`--allow-host`, `--allow-key-env`).
    pub allow: crate::llm::AllowList,
    /// Sinks added to every run (`--requests-out`, `--metrics-addr`).
    pub sinks: crate::metrics::sink::Sinks,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "no Locust master answered at {endpoint} for {waited_s:.0} s ({last_error}); \
         check that `locust --master` runs there and the port is reachable, or raise --master-timeout"
    )]
    MasterLost {
        endpoint: String,
        waited_s: f64,
        last_error: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// One test run as the driver sees it: [`Engine`] in production, a fake in
/// tests. Created by the first `spawn` of a run, stopped by `stop`/`quit`.
pub trait RunEngine: Sized + Send + 'static {
    /// Prepares the run; the error text is shown on the master.
    fn start(config: TestConfig, ctx: RunContext, events: mpsc::Sender<EngineEvent>) -> Result<Self, String>;
    /// Applies one ramp step of absolute per-class targets.
    fn apply(&mut self, targets: &BTreeMap<String, u32>, cluster_users: u32);
    /// Places this worker among the cluster's before a step is applied.
    fn set_slot(&mut self, slot: ClusterSlot);
    /// True when the latest step has started all its users.
    fn spawn_done(&mut self) -> bool;
    fn user_counts(&self) -> BTreeMap<String, u32>;
    /// The run's metrics; they outlive the run until the final report.
    fn recorder(&self) -> Recorder;
    /// Stops the run within `grace`; resolves when every request has ended.
    fn stop(self, grace: Duration) -> impl Future<Output = ()> + Send + 'static;
}

impl RunEngine for Engine {
    fn start(config: TestConfig, ctx: RunContext, events: mpsc::Sender<EngineEvent>) -> Result<Self, String> {
        Engine::start(config, ctx, events).map_err(|e| e.to_string())
    }

    fn apply(&mut self, targets: &BTreeMap<String, u32>, cluster_users: u32) {
        Engine::apply(self, targets, cluster_users);
    }

    fn set_slot(&mut self, slot: ClusterSlot) {
        Engine::set_slot(self, slot);
    }

    fn spawn_done(&mut self) -> bool {
        Engine::spawn_done(self)
    }

    fn user_counts(&self) -> BTreeMap<String, u32> {
        Engine::user_counts(self)
    }

    fn recorder(&self) -> Recorder {
        Engine::recorder(self)
    }

    fn stop(self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        Engine::stop(self, grace)
    }
}

/// Why a session with one master connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// `quit` or a signal: the final messages are sent; exit.
    Exit,
    /// The connection is gone or must be rebuilt; reconnect.
    Lost(String),
}

/// How registration ended: the message that ended it is stepped next.
struct Registered<T> {
    conn: T,
    /// `ack`, or a `quit` that came before it.
    first: MasterMsg,
}

/// `<hostname>_<32 hex digits>`, like Locust's Python worker.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tokenswarm".into());
    format!("{host}_{:032x}", rand::random::<u128>())
}

/// A seed for this worker's random streams (arrivals, waits): distinct per
/// node id, so two workers never replay the same arrival sequence.
fn seed_from(node_id: &str) -> u64 {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the worker until the master says `quit`, `shutdown` resolves (a
/// signal), or the master stays unreachable for `master_timeout`.
pub async fn run(opts: WorkerOptions, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    drive::<Engine, _>(&TcpConnector, opts, shutdown).await
}

/// [`run`] with any connector and run type (tests use channels and fakes).
pub async fn drive<E: RunEngine, C: Connector>(
    connector: &C,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let node_id = opts.node_id.clone().unwrap_or_else(default_node_id);
    let endpoint = format!("tcp://{}:{}", opts.master_host, opts.master_port);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut worker = Worker::<E>::new(seed_from(&node_id), opts.allow.clone());
    worker.sinks = opts.sinks.clone();
    info!(node_id, endpoint, "tokenswarm worker starting");
    let mut last_contact = Instant::now();
    loop {
        let registered = tokio::select! {
            r = register(connector, &opts, &endpoint, &node_id, last_contact + opts.master_timeout) => r?,
            // Reconnecting + signal: nothing to tell anyone.
            _ = &mut shutdown => return Ok(()),
        };
        info!(endpoint, "registered with the master");
        let Registered { mut conn, first } = registered;
        let end = worker.session(&mut conn, first, shutdown.as_mut()).await;
        last_contact = worker.last_master_heartbeat;
        match end {
            SessionEnd::Exit => {
                conn.linger(LINGER).await;
                return Ok(());
            }
            SessionEnd::Lost(reason) => {
                warn!("lost the master ({reason}); resetting and reconnecting");
                worker.reset().await;
            }
        }
    }
}

/// Connects and sends `client_ready` until the master acks, or `deadline`.
/// Other messages before the ack belong to a master that does not know us
/// yet and are dropped, except `quit`.
async fn register<C: Connector>(
    connector: &C,
    opts: &WorkerOptions,
    endpoint: &str,
    node_id: &str,
    deadline: Instant,
) -> Result<Registered<C::Conn>, WorkerError> {
    let mut last_error = String::from("no attempt finished");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(WorkerError::MasterLost {
                endpoint: endpoint.to_string(),
                waited_s: opts.master_timeout.as_secs_f64(),
                last_error,
            });
        }
        let attempt_timeout = (deadline - now).min(READY_RETRY);
        let mut conn = match connector
            .connect(&opts.master_host, opts.master_port, node_id, attempt_timeout)
            .await
        {
            Ok(c) => c,
            Err(TransportError::Identity(id)) => return Err(TransportError::Identity(id).into()),
            Err(e) => {
                debug!("connect attempt failed: {e}");
                last_error = e.to_string();
                sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()))).await;
                continue;
            }
        };
        // Send client_ready and wait for ack, re-sending every READY_RETRY.
        loop {
            if let Err(e) = conn.send(&WorkerMsg::ClientReady).await {
                last_error = e.to_string();
                break;
            }
            let retry_at = (Instant::now() + READY_RETRY).min(deadline);
            let answer = loop {
                tokio::select! {
                    m = conn.recv() => match m {
                        Some(Ok(msg @ (MasterMsg::Ack { .. } | MasterMsg::Quit))) => break Some(Some(msg)),
                        Some(Ok(other)) => debug!("ignoring {other:?} before ack"),
                        Some(Err(e)) => warn!("undecodable message from the master: {e}"),
                        None => break None,
                    },
                    _ = sleep_until(retry_at) => break Some(None),
                }
            };
            match answer {
                Some(Some(first)) => return Ok(Registered { conn, first }),
                // No ack yet: send client_ready again on the same connection.
                Some(None) if Instant::now() < deadline => continue,
                Some(None) => {
                    last_error = "the master did not acknowledge client_ready".into();
                    break;
                }
                None => {
                    last_error = "connection closed before ack".into();
                    break;
                }
            }
        }
    }
}

/// The worker across sessions: the protocol state and the things the
/// actions act on.
struct Worker<E> {
    state: State,
    /// The running test; `None` when idle or stopping.
    engine: Option<E>,
    /// The current run's metrics; outlives the engine until the final report.
    recorder: Option<Recorder>,
    /// A stop in progress: users winding down within `stop_timeout`.
    stopping: Option<JoinHandle<()>>,
    stop_timeout: Duration,
    events_tx: mpsc::Sender<EngineEvent>,
    events_rx: mpsc::Receiver<EngineEvent>,
    last_master_heartbeat: Instant,
    usage: ProcessUsage,
    seed: u64,
    /// Runs started by this worker; varies the seed from run to run.
    runs: u64,
    allow: crate::llm::AllowList,
    /// The worker index from the latest `ack` (spreads starts across workers).
    index: Option<i64>,
    /// Sinks added to every run besides the Locust window.
    sinks: crate::metrics::sink::Sinks,
}

/// Resolves when the stop in progress has finished; pending when none is.
async fn wait_stopping(stopping: &mut Option<JoinHandle<()>>) {
    match stopping.as_mut() {
        Some(handle) => {
            let _ = handle.await;
            *stopping = None;
        }
        None => std::future::pending().await,
    }
}

/// What performing one action led to.
enum Performed {
    Done,
    /// Step this event next (the run could not start).
    Then(Event),
    End(SessionEnd),
}

impl<E: RunEngine> Worker<E> {
    fn new(seed: u64, allow: crate::llm::AllowList) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        Worker {
            state: State::initial(),
            engine: None,
            recorder: None,
            stopping: None,
            stop_timeout: Duration::ZERO,
            events_tx,
            events_rx,
            last_master_heartbeat: Instant::now(),
            usage: ProcessUsage::new(),
            seed,
            runs: 0,
            allow,
            index: None,
            sinks: Default::default(),
        }
    }

    /// Ends the run after the master was lost: a new master knows nothing
    /// of it, so users stop at once (in-flight requests are recorded as
    /// cancelled). What was measured but not yet reported stays in the
    /// recorder and is sent once registered again: nothing measured is
    /// dropped.
    async fn reset(&mut self) {
        self.wind_down(Duration::ZERO).await;
        while self.events_rx.try_recv().is_ok() {}
        self.state = State::Reconnecting;
    }

    /// Stops the engine, or finishes a stop in progress, within `grace`.
    async fn wind_down(&mut self, grace: Duration) {
        if let Some(engine) = self.engine.take() {
            engine.stop(grace).await;
        }
        if let Some(handle) = self.stopping.take() {
            let _ = handle.await;
        }
    }

    fn user_counts(&self) -> BTreeMap<String, u32> {
        self.engine.as_ref().map(E::user_counts).unwrap_or_default()
    }

    /// A stats message with everything recorded since the last one.
    fn stats_message(&self) -> WorkerMsg {
        let window = match &self.recorder {
            Some(r) => r.take(),
            None => Recorder::new(&[], Default::default()).take(),
        };
        let user_classes_count = self.user_counts();
        let user_count = user_classes_count.values().fold(0u32, |a, b| a.saturating_add(*b));
        debug!(
            requests = window.total.num_requests,
            failures = window.total.num_failures,
            "stats window"
        );
        WorkerMsg::Stats(Box::new(StatsPayload {
            stats: window.entries,
            stats_total: window.total,
            errors: window.errors,
            user_classes_count,
            user_count,
            llm: window.llm,
        }))
    }

    async fn session<T: Transport>(
        &mut self,
        conn: &mut T,
        first: MasterMsg,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> SessionEnd {
        self.last_master_heartbeat = Instant::now();
        self.note(&first);
        if let Some(end) = self.step(conn, Event::Master(first)).await {
            return end;
        }
        let mut heartbeat = interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report = interval(REPORT_INTERVAL);
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        report.tick().await;
        let mut spawn_check = interval(SPAWN_CHECK);
        spawn_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let spawning = matches!(self.state, State::Spawning { .. });
            let event = tokio::select! {
                m = conn.recv() => match m {
                    None => Event::ConnectionLost("the connection closed".into()),
                    Some(Err(e)) => {
                        warn!("undecodable message from the master: {e}");
                        Event::Undecodable(e.to_string())
                    }
                    Some(Ok(msg)) => {
                        self.note(&msg);
                        Event::Master(msg)
                    }
                },
                _ = heartbeat.tick() => {
                    if self.last_master_heartbeat.elapsed() > MASTER_SILENCE {
                        warn!("no heartbeat from the master for {} s", MASTER_SILENCE.as_secs());
                        Event::HeartbeatTimeout
                    } else {
                        Event::HeartbeatTick
                    }
                }
                _ = report.tick() => Event::ReportTick,
                _ = spawn_check.tick(), if spawning => {
                    if !self.engine.as_mut().is_some_and(E::spawn_done) {
                        continue;
                    }
                    Event::SpawnComplete
                }
                Some(ev) = self.events_rx.recv() => match self.forward_event(conn, ev).await {
                    Ok(()) => continue,
                    Err(e) => Event::ConnectionLost(e.to_string()),
                },
                _ = wait_stopping(&mut self.stopping) => Event::StopComplete,
                _ = &mut shutdown => {
                    info!("signal received: sending final stats and telling the master we quit");
                    Event::Signal
                }
            };
            if let Some(end) = self.step(conn, event).await {
                return end;
            }
        }
    }

    /// Logs what only needs logging; notes the master's heartbeat.
    fn note(&mut self, msg: &MasterMsg) {
        match msg {
            MasterMsg::Heartbeat => self.last_master_heartbeat = Instant::now(),
            MasterMsg::Ack { index } => {
                debug!(?index, "ack");
                self.index = *index;
            }
            MasterMsg::Spawn(spawn) => debug!(timestamp = spawn.timestamp, "spawn"),
            MasterMsg::Stop => info!(stop_timeout = ?self.stop_timeout, "the master sent stop"),
            MasterMsg::Quit => info!("the master sent quit: final stats, then exit"),
            MasterMsg::Reconnect => info!("the master asked us to reconnect"),
            MasterMsg::SpawningComplete { user_count } => info!(?user_count, "the master reports the ramp complete"),
            MasterMsg::UpdateUserClass => warn!("update_user_class from the web UI is not supported; ignored"),
            MasterMsg::Flush => info!("the master is ending the run: final stats before its quit"),
            MasterMsg::Custom { kind, data } => info!(kind, %data, "custom message from the master (no handler)"),
        }
    }

    /// Steps the machine with `event` and performs the actions, and any
    /// event they cause, until the machine is quiet.
    async fn step<T: Transport>(&mut self, conn: &mut T, event: Event) -> Option<SessionEnd> {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let state = std::mem::replace(&mut self.state, State::Quitting);
            let (next, actions) = Machine::step(state, event);
            self.state = next;
            for action in actions {
                match self.perform(conn, action).await {
                    Ok(Performed::Done) => {}
                    Ok(Performed::Then(event)) => queue.push_back(event),
                    Ok(Performed::End(end)) => return Some(end),
                    Err(e) => {
                        // The rest of this list cannot reach the master.
                        queue.push_back(Event::ConnectionLost(e.to_string()));
                        break;
                    }
                }
            }
        }
        None
    }

    async fn perform<T: Transport>(&mut self, conn: &mut T, action: Action) -> Result<Performed, TransportError> {
        match action {
            Action::Send(msg) => conn.send(&msg).await?,
            Action::SendHeartbeat(state) => {
                let (cpu_percent, memory_bytes) = self.usage.sample();
                conn.send(&WorkerMsg::Heartbeat {
                    state,
                    cpu_percent,
                    memory_bytes,
                })
                .await?
            }
            Action::SendStats => conn.send(&self.stats_message()).await?,
            Action::SendFinalStats => {
                if self.recorder.is_some() {
                    conn.send(&self.stats_message()).await?;
                    self.recorder = None;
                }
            }
            Action::SendSpawningComplete => {
                let user_classes_count = self.user_counts();
                let user_count = user_classes_count.values().fold(0u32, |a, b| a.saturating_add(*b));
                conn.send(&WorkerMsg::SpawningComplete {
                    user_classes_count,
                    user_count,
                })
                .await?
            }
            Action::Apply(spawn) => {
                if !self.apply(conn, *spawn).await? {
                    return Ok(Performed::Then(Event::StartFailed));
                }
            }
            Action::BeginStop => {
                let grace = self.stop_timeout;
                let stop: JoinHandle<()> = match self.engine.take() {
                    Some(engine) => tokio::spawn(engine.stop(grace)),
                    None => tokio::spawn(async {}),
                };
                self.stopping = Some(stop);
            }
            Action::WindDown { grace } => self.wind_down(grace).await,
            Action::Reconnect { reason } => return Ok(Performed::End(SessionEnd::Lost(reason))),
            Action::Exit => return Ok(Performed::End(SessionEnd::Exit)),
        }
        Ok(Performed::Done)
    }

    /// Starts the run if there is none, then applies the step. False when
    /// the run cannot start (the master has been told why).
    async fn apply<T: Transport>(&mut self, conn: &mut T, spawn: Spawn) -> Result<bool, TransportError> {
        let users = spawn
            .user_classes_count
            .values()
            .fold(0u32, |a, b| a.saturating_add(*b));
        info!(users, targets = ?spawn.user_classes_count, "spawn step");
        let stop_timeout_s = spawn
            .stop_timeout
            .filter(|s| s.is_finite())
            .unwrap_or(0.0)
            .min(86_400.0);
        self.stop_timeout = crate::units::seconds_saturating(stop_timeout_s);
        if self.engine.is_none() {
            let config = match spawn.config {
                Some(Ok(c)) => c,
                Some(Err(detail)) => return self.report_exception(conn, detail).await.map(|_| false),
                None => {
                    let msg = "the master sent no tokenswarm_config: start the master with `-f locustfiles/llm.py` \
                               (tokenswarm's locustfile), which sends the scenarios to the workers";
                    return self.report_exception(conn, msg.to_string()).await.map(|_| false);
                }
            };
            if let Err(e) = config.validate() {
                let msg = format!("invalid tokenswarm_config from the master: {e}");
                return self.report_exception(conn, msg).await.map(|_| false);
            }
            let known = config.scenario_names().join(", ");
            for class in spawn.user_classes_count.keys() {
                if config.scenario(class).is_none() {
                    let msg = format!(
                        "unknown user class {class:?}: this worker runs the scenarios the master sent ({known}); \
                         define {class:?} in the scenarios file"
                    );
                    self.report_exception(conn, msg).await?;
                }
            }
            self.runs += 1;
            let ctx = RunContext {
                host: spawn.host.clone().unwrap_or_default(),
                seed: self.seed.wrapping_add(self.runs),
                stop_timeout: self.stop_timeout,
                allow: self.allow.clone(),
                sinks: self.sinks.clone(),
                slot: ClusterSlot::new(self.index, spawn.worker_count),
            };
            match E::start(config, ctx, self.events_tx.clone()) {
                Ok(engine) => {
                    self.recorder = Some(engine.recorder());
                    self.engine = Some(engine);
                }
                Err(e) => {
                    // Nothing can run: say why (exception table) and stop
                    // the run (the master shows the abort reason).
                    let reason = format!("this worker cannot start the run: {e}");
                    self.report_exception(conn, reason.clone()).await?;
                    self.forward_event(conn, EngineEvent::Abort { reason }).await?;
                    return Ok(false);
                }
            }
        }
        let cluster_users = spawn.cluster_users.unwrap_or(0);
        let slot = ClusterSlot::new(self.index, spawn.worker_count);
        if let Some(engine) = self.engine.as_mut() {
            engine.set_slot(slot);
            engine.apply(&spawn.user_classes_count, cluster_users);
        }
        Ok(true)
    }

    async fn forward_event<T: Transport>(&mut self, conn: &mut T, ev: EngineEvent) -> Result<(), TransportError> {
        match ev {
            EngineEvent::Exception { msg, traceback } => {
                error!("{msg}");
                conn.send(&WorkerMsg::Exception { msg, traceback }).await
            }
            EngineEvent::Warning { scenario, message } => {
                warn!(scenario, "{message}");
                let data = serde_json::json!({ "scenario": scenario, "message": message });
                conn.send(&WorkerMsg::Custom {
                    kind: "tokenswarm_warning".into(),
                    data,
                })
                .await
            }
            EngineEvent::Saturated { reason } => {
                warn!("this worker is saturated, its timings are not valid: {reason}");
                let data = serde_json::json!({ "reason": reason });
                conn.send(&WorkerMsg::Custom {
                    kind: "tokenswarm_saturated".into(),
                    data,
                })
                .await
            }
            EngineEvent::Abort { reason } => {
                error!("stopping the run: {reason}");
                let data = serde_json::json!({ "reason": reason });
                conn.send(&WorkerMsg::Custom {
                    kind: "tokenswarm_abort".into(),
                    data,
                })
                .await
            }
        }
    }

    async fn report_exception<T: Transport>(&mut self, conn: &mut T, msg: String) -> Result<(), TransportError> {
        error!("{msg}");
        conn.send(&WorkerMsg::Exception {
            msg,
            traceback: String::new(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The driver with a channel transport and a fake run: what reaches the
    //! "master", in which order, and how the worker ends. The transitions
    //! themselves are tested in `state`.
    use std::cell::RefCell;
    use std::sync::Mutex;

    use super::*;
    use crate::locust::wire::WireError;

    thread_local! {
        /// What the fake runs did, in order (tests run the driver on one thread).
        static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn log(line: String) {
        LOG.with(|l| l.borrow_mut().push(line));
    }

    fn take_log() -> Vec<String> {
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    struct FakeRun {
        recorder: Recorder,
        counts: BTreeMap<String, u32>,
    }

    impl RunEngine for FakeRun {
        fn start(config: TestConfig, _ctx: RunContext, _events: mpsc::Sender<EngineEvent>) -> Result<Self, String> {
            log("start".into());
            Ok(FakeRun {
                recorder: Recorder::new(&config.scenarios, config.slo),
                counts: BTreeMap::new(),
            })
        }
        fn apply(&mut self, targets: &BTreeMap<String, u32>, _cluster_users: u32) {
            log(format!("apply {:?}", targets.values().collect::<Vec<_>>()));
            self.counts = targets.clone();
        }
        fn set_slot(&mut self, _slot: ClusterSlot) {}
        fn spawn_done(&mut self) -> bool {
            true
        }
        fn user_counts(&self) -> BTreeMap<String, u32> {
            self.counts.clone()
        }
        fn recorder(&self) -> Recorder {
            self.recorder.clone()
        }
        fn stop(self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
            log(format!("stop {grace:?}"));
            // A stop takes a while: users finish their requests.
            async move { tokio::time::sleep(Duration::from_secs(2)).await }
        }
    }

    /// One connection; later connects fail (the master is gone).
    struct FakeConnector {
        conn: Mutex<Option<FakeConn>>,
    }

    struct FakeConn {
        from_master: mpsc::UnboundedReceiver<MasterMsg>,
        to_master: mpsc::UnboundedSender<WorkerMsg>,
        /// Models a master that is gone right after sending `quit`.
        quit_seen: bool,
        gone_after_quit: bool,
    }

    impl Transport for FakeConn {
        async fn send(&mut self, msg: &WorkerMsg) -> Result<(), TransportError> {
            if self.quit_seen && self.gone_after_quit {
                return Err(TransportError::Send("broken pipe".into()));
            }
            let _ = self.to_master.send(msg.clone());
            Ok(())
        }
        async fn recv(&mut self) -> Option<Result<MasterMsg, WireError>> {
            let m = self.from_master.recv().await?;
            self.quit_seen |= m == MasterMsg::Quit;
            Some(Ok(m))
        }
        async fn linger(&mut self, _d: Duration) {}
    }

    impl Connector for FakeConnector {
        type Conn = FakeConn;
        async fn connect(&self, _: &str, _: u16, _: &str, _: Duration) -> Result<FakeConn, TransportError> {
            let conn = self.conn.lock().unwrap().take();
            conn.ok_or(TransportError::Connect {
                endpoint: "fake".into(),
                detail: "refused".into(),
            })
        }
    }

    fn fake(
        gone_after_quit: bool,
    ) -> (
        FakeConnector,
        mpsc::UnboundedSender<MasterMsg>,
        mpsc::UnboundedReceiver<WorkerMsg>,
    ) {
        let (to_worker, from_master) = mpsc::unbounded_channel();
        let (to_master, from_worker) = mpsc::unbounded_channel();
        let conn = FakeConn {
            from_master,
            to_master,
            quit_seen: false,
            gone_after_quit,
        };
        (
            FakeConnector {
                conn: Mutex::new(Some(conn)),
            },
            to_worker,
            from_worker,
        )
    }

    fn opts() -> WorkerOptions {
        WorkerOptions {
            master_host: "fake".into(),
            master_port: 1,
            master_timeout: Duration::from_secs(5),
            node_id: Some("w1".into()),
            allow: Default::default(),
            sinks: Default::default(),
        }
    }

    fn spawn(timestamp: f64, users: u32) -> MasterMsg {
        let config = TestConfig::from_yaml(
            "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 10, output_length: 5}\n",
        )
        .unwrap();
        MasterMsg::Spawn(Box::new(Spawn {
            timestamp,
            user_classes_count: BTreeMap::from([("Chat".to_string(), users)]),
            host: Some("http://127.0.0.1:9".into()),
            stop_timeout: Some(1.0),
            config: Some(Ok(config)),
            cluster_users: Some(users),
            worker_count: None,
            spawn_rate: None,
        }))
    }

    /// The kinds of the messages the master got, heartbeats and stats left out.
    fn control(rx: &mut mpsc::UnboundedReceiver<WorkerMsg>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            let kind = match m {
                WorkerMsg::Heartbeat { .. } => continue,
                WorkerMsg::Stats(_) => "stats",
                WorkerMsg::ClientReady => "client_ready",
                WorkerMsg::Spawning => "spawning",
                WorkerMsg::SpawningComplete { .. } => "spawning_complete",
                WorkerMsg::ClientStopped => "client_stopped",
                WorkerMsg::Quit => "quit",
                WorkerMsg::Exception { .. } => "exception",
                WorkerMsg::Flushed => "flushed",
                WorkerMsg::Custom { .. } => "custom",
            };
            out.push(kind.to_string());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn quit_from_a_master_that_is_then_gone_ends_the_worker_without_error() {
        // Proves: the final stats failing after `quit` ends the worker with
        // Ok (exit 0); without it, the worker would try to reconnect and
        // give up with MasterLost (exit 3) after master_timeout.
        let (connector, master, _rx) = fake(true);
        master.send(MasterMsg::Ack { index: Some(0) }).unwrap();
        master.send(spawn(1.0, 2)).unwrap();
        master.send(MasterMsg::Quit).unwrap();
        let result = drive::<FakeRun, _>(&connector, opts(), std::future::pending()).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(take_log(), vec!["start", "apply [2]", "stop 100ms"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spawn_during_stop_runs_after_client_stopped_and_client_ready() {
        let (connector, master, mut rx) = fake(false);
        let worker = tokio::spawn(async move {
            let r = drive::<FakeRun, _>(&connector, opts(), std::future::pending()).await;
            (r, take_log())
        });
        master.send(MasterMsg::Ack { index: Some(0) }).unwrap();
        master.send(spawn(1.0, 2)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        master.send(MasterMsg::Stop).unwrap();
        master.send(spawn(2.0, 3)).unwrap();
        master.send(spawn(1.5, 9)).unwrap(); // older than the deferred step
        tokio::time::sleep(Duration::from_secs(5)).await;
        master.send(MasterMsg::Quit).unwrap();
        let (result, log) = worker.await.unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            log,
            vec!["start", "apply [2]", "stop 1s", "start", "apply [3]", "stop 100ms"]
        );
        let kinds = control(&mut rx);
        let expected = [
            "client_ready",
            "spawning",
            "spawning_complete",
            "stats",
            "client_stopped",
            "client_ready",
            "spawning",
            "spawning_complete",
        ];
        let seen: Vec<&str> = kinds.iter().map(String::as_str).filter(|k| *k != "stats").collect();
        let want: Vec<&str> = expected.iter().copied().filter(|k| *k != "stats").collect();
        assert_eq!(&seen[..want.len()], want.as_slice(), "{kinds:?}");
        let stopped = kinds.iter().position(|k| k == "client_stopped").unwrap();
        assert_eq!(
            kinds[stopped - 1],
            "stats",
            "final stats before client_stopped: {kinds:?}"
        );
    }
}
