//! The worker's main loop: registration, heartbeats, spawn/stop/quit, stats.
//!
//! One task owns the connection and the run ([`Engine`]); everything the
//! master says is handled here, in order, and everything that must reach
//! the master leaves from here. Users never touch the socket: they record
//! into the engine's metrics and send [`EngineEvent`]s.
//!
//! Losing the master (a send error, a `reconnect`, or no heartbeat reply for
//! [`MASTER_SILENCE`]) ends the run, rebuilds the socket, registers again,
//! sends what was measured but not yet reported, and waits for the next
//! spawn, as a fresh worker.
//! After `master_timeout` without a registered master the worker gives up.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until};
use tracing::{debug, error, info, warn};

use super::process::ProcessUsage;
use super::transport::{Connection, TransportError};
use super::wire::{MasterMsg, Spawn, StatsPayload, WorkerMsg, WorkerState};
use crate::engine::{Engine, EngineEvent, RunContext};
use crate::metrics::Recorder;

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
/// On `quit` the master waits only 0.5 s for final stats: in-flight
/// requests get this long to finish, then are cancelled and counted.
const QUIT_GRACE: Duration = Duration::from_millis(100);
/// The master plugin's request before it quits (see `locustfiles/
/// tokenswarm_master/plugin.py`): Locust's master waits only 0.5 s after
/// `quit` for final stats, too little for thousands of in-flight requests
/// on a busy machine, so the plugin asks first and waits for [`FLUSHED`].
const FLUSH: &str = "tokenswarm_flush";
/// Our answer to [`FLUSH`], sent after the final stats.
const FLUSHED: &str = "tokenswarm_flushed";
/// After the final stats, the socket stays open this long before exit.
const LINGER: Duration = Duration::from_millis(300);
/// Events from users waiting for the loop; when full, users wait.
const EVENT_CAPACITY: usize = 1024;

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

/// Why a session with one master connection ended.
enum SessionEnd {
    /// The master sent `quit`: final stats sent, exit.
    Quit,
    /// A signal asked us to leave: we told the master.
    Signal,
    /// The connection is gone; reconnect.
    Lost(String),
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

/// Runs the worker until the master says `quit`, `shutdown` resolves (a
/// signal), or the master stays unreachable for `master_timeout`.
pub async fn run(opts: WorkerOptions, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let node_id = opts.node_id.clone().unwrap_or_else(default_node_id);
    let endpoint = format!("tcp://{}:{}", opts.master_host, opts.master_port);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut worker = Worker::new(seed_from(&node_id), opts.allow.clone());
    worker.sinks = opts.sinks.0.clone();
    info!(node_id, endpoint, "tokenswarm worker starting");
    let mut last_contact = Instant::now();
    loop {
        let conn = tokio::select! {
            r = register(&opts, &endpoint, &node_id, last_contact + opts.master_timeout) => r?,
            _ = &mut shutdown => return Ok(()),
        };
        info!(endpoint, "registered with the master");
        let mut conn = conn;
        let end = worker.session(&mut conn, shutdown.as_mut()).await;
        last_contact = worker.last_master_heartbeat;
        match end {
            SessionEnd::Quit | SessionEnd::Signal => {
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
async fn register(
    opts: &WorkerOptions,
    endpoint: &str,
    node_id: &str,
    deadline: Instant,
) -> Result<Connection, WorkerError> {
    let mut last_error = String::from("no attempt finished");
    let resolve_endpoint = || async {
        // Resolve ourselves so a name that does not resolve yet (a starting
        // container) is retried like a refused connection.
        let mut addrs = tokio::net::lookup_host((opts.master_host.as_str(), opts.master_port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", opts.master_host))?;
        addrs
            .next()
            .map(|a| format!("tcp://{a}"))
            .ok_or_else(|| format!("{} resolves to no address", opts.master_host))
    };
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
        let target = match resolve_endpoint().await {
            Ok(t) => t,
            Err(e) => {
                last_error = e;
                sleep(Duration::from_millis(500).min(deadline - now)).await;
                continue;
            }
        };
        let mut conn = match Connection::open(&target, node_id, attempt_timeout).await {
            Ok(c) => c,
            Err(TransportError::Identity(id)) => return Err(TransportError::Identity(id).into()),
            Err(e) => {
                debug!("connect attempt failed: {e}");
                last_error = e.to_string();
                sleep(Duration::from_millis(200)).await;
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
            let acked = loop {
                tokio::select! {
                    m = conn.recv() => match m {
                        Some(Ok(MasterMsg::Ack { index })) => {
                            debug!(?index, "ack");
                            break Some(true);
                        }
                        Some(Ok(other)) => debug!("ignoring {other:?} before ack"),
                        Some(Err(e)) => warn!("undecodable message from the master: {e}"),
                        None => break None,
                    },
                    _ = sleep_until(retry_at) => break Some(false),
                }
            };
            match acked {
                Some(true) => return Ok(conn),
                // No ack yet: send client_ready again on the same connection.
                Some(false) if Instant::now() < deadline => continue,
                Some(false) => {
                    last_error = "the master did not acknowledge client_ready".into();
                    break;
                }
                _ => {
                    last_error = "connection closed before ack".into();
                    break;
                }
            }
        }
        if Instant::now() >= deadline {
            continue;
        }
    }
}

/// A seed for this worker's random streams (arrivals, waits): distinct per
/// node id, so two workers never replay the same arrival sequence.
fn seed_from(node_id: &str) -> u64 {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The state of this worker across sessions.
struct Worker {
    state: WorkerState,
    /// The running test; `None` when idle or stopping.
    engine: Option<Engine>,
    /// The current run's metrics; outlives the engine until the final report.
    recorder: Option<Recorder>,
    /// A stop in progress: users winding down within `stop_timeout`.
    stopping: Option<JoinHandle<()>>,
    /// Spawn targets applied but not yet confirmed with spawning_complete.
    spawn_pending: bool,
    last_spawn_timestamp: f64,
    stop_timeout: Duration,
    events_tx: mpsc::Sender<EngineEvent>,
    events_rx: mpsc::Receiver<EngineEvent>,
    last_master_heartbeat: Instant,
    usage: ProcessUsage,
    seed: u64,
    /// Runs started by this worker; varies the seed from run to run.
    runs: u64,
    allow: crate::llm::AllowList,
    /// Sinks added to every run besides the Locust window.
    sinks: Vec<std::sync::Arc<dyn crate::metrics::OutcomeSink>>,
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

impl Worker {
    fn new(seed: u64, allow: crate::llm::AllowList) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        Worker {
            state: WorkerState::Ready,
            engine: None,
            recorder: None,
            stopping: None,
            spawn_pending: false,
            last_spawn_timestamp: 0.0,
            stop_timeout: Duration::ZERO,
            events_tx,
            events_rx,
            last_master_heartbeat: Instant::now(),
            usage: ProcessUsage::new(),
            seed,
            runs: 0,
            allow,
            sinks: Vec::new(),
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
        self.state = WorkerState::Ready;
        self.spawn_pending = false;
        self.last_spawn_timestamp = 0.0;
    }

    /// Stops the engine, or finishes a stop in progress, within `grace`.
    async fn wind_down(&mut self, grace: Duration) {
        if let Some(engine) = self.engine.take() {
            engine.stop(grace).await;
        }
        if let Some(handle) = self.stopping.take() {
            let _ = handle.await;
        }
        self.spawn_pending = false;
    }

    fn user_counts(&self) -> BTreeMap<String, u32> {
        self.engine.as_ref().map(Engine::user_counts).unwrap_or_default()
    }

    /// A stats message with everything recorded since the last one.
    fn stats_message(&self) -> WorkerMsg {
        let window = match &self.recorder {
            Some(r) => r.take(),
            None => Recorder::new(&[], Default::default()).take(),
        };
        let user_classes_count = self.user_counts();
        let user_count = user_classes_count.values().sum();
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

    async fn session(&mut self, conn: &mut Connection, mut shutdown: Pin<&mut impl Future<Output = ()>>) -> SessionEnd {
        self.last_master_heartbeat = Instant::now();
        if self.engine.is_none() && self.recorder.is_some() {
            // The previous connection's last window (see `reset`).
            if let Err(e) = conn.send(&self.stats_message()).await {
                return SessionEnd::Lost(e.to_string());
            }
            self.recorder = None;
        }
        let mut heartbeat = interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report = interval(REPORT_INTERVAL);
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        report.tick().await;
        let mut spawn_check = interval(Duration::from_millis(50));
        spawn_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let result: Result<Option<SessionEnd>, TransportError> = tokio::select! {
                m = conn.recv() => match m {
                    None => return SessionEnd::Lost("the connection closed".into()),
                    Some(Err(e)) => { warn!("undecodable message from the master: {e}"); Ok(None) }
                    Some(Ok(msg)) => self.handle(conn, msg).await,
                },
                _ = heartbeat.tick() => {
                    if self.last_master_heartbeat.elapsed() > MASTER_SILENCE {
                        return SessionEnd::Lost(format!(
                            "no heartbeat from the master for {} s", MASTER_SILENCE.as_secs()
                        ));
                    }
                    let (cpu_percent, memory_bytes) = self.usage.sample();
                    let msg = WorkerMsg::Heartbeat { state: self.state, cpu_percent, memory_bytes };
                    conn.send(&msg).await.map(|_| None)
                }
                _ = report.tick() => conn.send(&self.stats_message()).await.map(|_| None),
                _ = spawn_check.tick(), if self.spawn_pending => self.check_spawned(conn).await.map(|_| None),
                Some(ev) = self.events_rx.recv() => self.forward_event(conn, ev).await.map(|_| None),
                _ = wait_stopping(&mut self.stopping) => self.finish_stop(conn).await.map(|_| None),
                _ = &mut shutdown => {
                    info!("signal received: sending final stats and telling the master we quit");
                    self.wind_down(QUIT_GRACE).await;
                    let _ = conn.send(&self.stats_message()).await;
                    let _ = conn.send(&WorkerMsg::Quit).await;
                    return SessionEnd::Signal;
                }
            };
            match result {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(e) => return SessionEnd::Lost(e.to_string()),
            }
        }
    }

    async fn handle(&mut self, conn: &mut Connection, msg: MasterMsg) -> Result<Option<SessionEnd>, TransportError> {
        match msg {
            MasterMsg::Heartbeat => self.last_master_heartbeat = Instant::now(),
            MasterMsg::Ack { index } => debug!(?index, "ack"),
            MasterMsg::Spawn(spawn) => {
                conn.send(&WorkerMsg::Spawning).await?;
                self.spawn(conn, *spawn).await?;
            }
            MasterMsg::Stop => self.begin_stop(),
            MasterMsg::Quit => {
                info!("the master sent quit: final stats, then exit");
                self.wind_down(QUIT_GRACE).await;
                conn.send(&self.stats_message()).await?;
                return Ok(Some(SessionEnd::Quit));
            }
            MasterMsg::Reconnect => return Ok(Some(SessionEnd::Lost("the master asked us to reconnect".into()))),
            MasterMsg::SpawningComplete { user_count } => info!(?user_count, "the master reports the ramp complete"),
            MasterMsg::UpdateUserClass => warn!("update_user_class from the web UI is not supported; ignored"),
            MasterMsg::Custom { kind, .. } if kind == FLUSH => {
                // The master plugin is about to quit and waits for this
                // answer: end every request now, report them all, then say
                // so on the same connection (ordered after the stats).
                info!("the master is ending the run: final stats before its quit");
                self.wind_down(QUIT_GRACE).await;
                conn.send(&self.stats_message()).await?;
                conn.send(&WorkerMsg::Custom {
                    kind: FLUSHED.into(),
                    data: serde_json::json!({}),
                })
                .await?;
            }
            MasterMsg::Custom { kind, data } => info!(kind, %data, "custom message from the master (no handler)"),
        }
        Ok(None)
    }

    async fn spawn(&mut self, conn: &mut Connection, spawn: Spawn) -> Result<(), TransportError> {
        if spawn.timestamp <= self.last_spawn_timestamp {
            debug!(spawn.timestamp, "ignoring a stale spawn step");
            return Ok(());
        }
        if self.stopping.is_some() {
            warn!("a spawn arrived while users are stopping; ignored");
            return Ok(());
        }
        self.last_spawn_timestamp = spawn.timestamp;
        let users: u32 = spawn.user_classes_count.values().sum();
        info!(users, targets = ?spawn.user_classes_count, "spawn step");
        let stop_timeout_s = spawn.stop_timeout.filter(|s| s.is_finite()).unwrap_or(0.0);
        self.stop_timeout = Duration::from_secs_f64(stop_timeout_s.clamp(0.0, 86_400.0));
        if self.engine.is_none() {
            let config = match spawn.config {
                Some(Ok(c)) => c,
                Some(Err(detail)) => return self.report_exception(conn, detail).await,
                None => {
                    let msg = "the master sent no tokenswarm_config: start the master with `-f locustfiles/llm.py` \
                               (tokenswarm's locustfile), which sends the scenarios to the workers";
                    return self.report_exception(conn, msg.to_string()).await;
                }
            };
            if let Err(e) = config.validate() {
                return self
                    .report_exception(conn, format!("invalid tokenswarm_config from the master: {e}"))
                    .await;
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
            };
            match Engine::start_with_sinks(config, ctx, self.events_tx.clone(), self.sinks.clone()) {
                Ok(engine) => {
                    self.recorder = Some(engine.recorder());
                    self.engine = Some(engine);
                }
                Err(e) => {
                    // Nothing can run: say why (exception table) and stop
                    // the run (the master shows the abort reason).
                    let reason = format!("this worker cannot start the run: {e}");
                    self.report_exception(conn, reason.clone()).await?;
                    return self.forward_event(conn, EngineEvent::Abort { reason }).await;
                }
            }
        }
        let cluster_users = spawn.cluster_users.unwrap_or(0);
        if let Some(engine) = self.engine.as_mut() {
            engine.apply(&spawn.user_classes_count, cluster_users);
            self.state = WorkerState::Spawning;
            self.spawn_pending = true;
        }
        Ok(())
    }

    async fn check_spawned(&mut self, conn: &mut Connection) -> Result<(), TransportError> {
        if !self.engine.as_mut().is_some_and(Engine::spawn_done) {
            return Ok(());
        }
        self.spawn_pending = false;
        self.state = WorkerState::Running;
        let user_classes_count = self.user_counts();
        let user_count = user_classes_count.values().sum();
        conn.send(&WorkerMsg::SpawningComplete {
            user_classes_count,
            user_count,
        })
        .await
    }

    /// `stop`: users wind down within the master's `stop_timeout` in the
    /// background while heartbeats go on; [`Self::finish_stop`] follows.
    fn begin_stop(&mut self) {
        let Some(engine) = self.engine.take() else {
            debug!("stop while idle");
            return;
        };
        info!(stop_timeout = ?self.stop_timeout, "the master sent stop");
        self.spawn_pending = false;
        self.state = WorkerState::Stopped;
        let grace = self.stop_timeout;
        self.stopping = Some(tokio::spawn(engine.stop(grace)));
    }

    /// Users have stopped: final stats, `client_stopped`, ready again.
    async fn finish_stop(&mut self, conn: &mut Connection) -> Result<(), TransportError> {
        conn.send(&self.stats_message()).await?;
        self.recorder = None;
        conn.send(&WorkerMsg::ClientStopped).await?;
        self.state = WorkerState::Ready;
        self.last_spawn_timestamp = 0.0;
        conn.send(&WorkerMsg::ClientReady).await
    }

    async fn forward_event(&mut self, conn: &mut Connection, ev: EngineEvent) -> Result<(), TransportError> {
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

    async fn report_exception(&mut self, conn: &mut Connection, msg: String) -> Result<(), TransportError> {
        error!("{msg}");
        conn.send(&WorkerMsg::Exception {
            msg,
            traceback: String::new(),
        })
        .await
    }
}
