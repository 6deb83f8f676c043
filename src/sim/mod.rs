//! The built-in OpenAI/Anthropic-compatible server simulator (`tokenswarm sim`).
//!
//! Serves `/v1/chat/completions`, `/v1/completions`, `/v1/messages` (streaming
//! and not) and `/v1/models`, with a deterministic (seeded) latency model,
//! a prefix cache, bounded slots with queueing, and injected faults. Every
//! response carries the simulator's ground truth (`sim`, docs/contracts.md
//! §2); `GET /sim/stats` and `POST /sim/reset` expose counters, and
//! `--log-requests` writes one JSON line per request.
//!
//! # Model
//! - Tokens: prompt tokens are the whitespace-separated words of all message
//!   text (chat: every message content; completions: `prompt`; Anthropic:
//!   `system` + messages). Each output token is one word (`" tok"`, reasoning
//!   `" think"`), one chunk per token.
//! - Output: reasoning (chat and messages only; `--reasoning-tokens`, or `--requested-reasoning-tokens`
//!   when the request asks for it) comes first and counts in
//!   `completion_tokens` and in `max_tokens`. The answer runs to `max_tokens`
//!   (finish `length`) unless `--natural-output N` stops it at N (finish
//!   `stop`); `ignore_eos` disables that stop, `min_tokens` (counting
//!   reasoning) raises it.
//! - Latency: a request first waits for one of `--slots` (queue_us), then
//!   TTFT = `--ttft-ms` + `--prefill-us-per-token` × uncached prompt tokens;
//!   each further token is due one decode interval after the previous
//!   deadline (absolute deadlines: lateness never accumulates), interval =
//!   `--tpot-ms` × (1 + `--batch-slowdown` × (running streams − 1)) ×
//!   (1 ± `--jitter`, seeded). Chunks already due are written together.
//!   `--no-latency` (or `--ttft-ms 0 --tpot-ms 0`) answers at once.
//! - Prefix cache: blocks of 16 words hashed as a chain; cached tokens = the
//!   whole leading blocks seen before (LRU of `--prefix-cache-blocks`). They
//!   cost no prefill and are reported as `cached_tokens` / Anthropic
//!   `cache_read_input_tokens` (`input_tokens` excludes them;
//!   `cache_creation_input_tokens` is always 0, so input_tokens +
//!   cache_read = prompt words).
//! - Faults (one seeded draw per request, rates add up to at most 1):
//!   429 (with Retry-After), 500, 503 before streaming; error event, truncate
//!   and stall after a random number of tokens in streams (non-streaming
//!   requests get a 500 body instead); empty = a proper end with no answer.
//! - `POST /sim/reset` zeroes the stats and also empties the prefix cache.
//! - Shutdown (SIGINT/SIGTERM): stop accepting, give open streams 2 s, then
//!   end them (logged with fault `shutdown`), flush the request log, exit.
//!
//! Defaults are a small demo model: TTFT 40 ms + 0.02 ms per prompt token,
//! 12 ms per output token, 256 slots, +0.2 % decode time per extra stream,
//! 32k context, 65,536 cache blocks (1M words).

mod cache;
mod parse;
mod stream;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use cache::BLOCK_WORDS;
use cache::PrefixCache;
use parse::{Api, ApiError};
use stream::{Cut, Finish, Ident, Plan, Sched, SimStream, Templates, Usage};

/// Which delta field carries reasoning text in OpenAI chat streams.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningField {
    /// `delta.reasoning_content` (DeepSeek, older vLLM).
    #[default]
    #[value(name = "reasoning_content")]
    ReasoningContent,
    /// `delta.reasoning` (vLLM since late 2025, OpenRouter).
    #[value(name = "reasoning")]
    Reasoning,
}

impl ReasoningField {
    fn name(self) -> &'static str {
        match self {
            ReasoningField::ReasoningContent => "reasoning_content",
            ReasoningField::Reasoning => "reasoning",
        }
    }
}

/// Command line of `tokenswarm sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model id listed by /v1/models (requests may name any model; it is echoed).
    #[arg(long, default_value = "tokenswarm-sim")]
    pub model: String,
    /// Seed for jitter and faults: the same seed and request order give the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base time to first token, ms (after any queueing).
    #[arg(long, default_value_t = 40.0)]
    pub ttft_ms: f64,
    /// Prefill time per uncached prompt token, µs (added to TTFT).
    #[arg(long, default_value_t = 20.0)]
    pub prefill_us_per_token: f64,
    /// Decode interval per output token, ms.
    #[arg(long, default_value_t = 12.0)]
    pub tpot_ms: f64,
    /// Random spread of each decode interval, as a fraction (0.1 = ±10 %, uniform, seeded).
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Decode slowdown per additional running stream, as a fraction of tpot:
    /// interval = tpot × (1 + batch_slowdown × (running − 1)).
    #[arg(long, default_value_t = 0.002)]
    pub batch_slowdown: f64,
    /// No latency at all (TTFT 0, tpot 0, no prefill): answer as fast as possible, already-due
    /// chunks coalesced into one write. `--ttft-ms 0 --tpot-ms 0` does the same.
    #[arg(long)]
    pub no_latency: bool,
    /// Concurrent generation slots; further requests queue (0 = unlimited).
    #[arg(long, default_value_t = 256)]
    pub slots: usize,
    /// Context window in tokens: prompt + max_tokens above it is a 400 error.
    #[arg(long, default_value_t = 32768)]
    pub context_limit: u64,
    /// Prefix cache capacity in blocks of 16 words (LRU; 0 disables the cache).
    #[arg(long, default_value_t = 65536)]
    pub prefix_cache_blocks: usize,
    /// Answer length used when a request sets no max_tokens (OpenAI APIs), at most what the
    /// context leaves.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: u64,
    /// The answer naturally ends after N tokens (finish stop), unless ignore_eos or min_tokens ask for more.
    /// Without it the answer always runs to max_tokens (finish length).
    #[arg(long)]
    pub natural_output: Option<u64>,
    /// Reasoning tokens streamed before every answer (0 = only when a request asks for reasoning).
    #[arg(long, default_value_t = 0)]
    pub reasoning_tokens: u64,
    /// Reasoning tokens for requests that ask for reasoning (OpenAI `reasoning_effort`,
    /// Anthropic `thinking: {type: enabled}`) when --reasoning-tokens is 0.
    #[arg(long, default_value_t = 16)]
    pub requested_reasoning_tokens: u64,
    /// Delta field carrying reasoning in OpenAI chat streams.
    #[arg(long, value_enum, default_value_t = ReasoningField::ReasoningContent)]
    pub reasoning_field: ReasoningField,
    /// Fraction of requests answered 429 with a Retry-After header.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_429: f64,
    /// Fraction of requests answered 500.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_500: f64,
    /// Fraction of requests answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_503: f64,
    /// Fraction of streams that send HTTP 200, some tokens, then an error event
    /// (non-streaming requests: a 500 error body).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_error_event: f64,
    /// Fraction of streams cut after some tokens, without finish or [DONE]
    /// (non-streaming requests: a 500 error body).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_truncate: f64,
    /// Fraction of streams that stop sending after some tokens for --stall-s, then end
    /// without finish (non-streaming requests: wait --stall-s, then a 500 error body).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_stall: f64,
    /// Fraction of requests that end properly with zero answer tokens.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub fault_empty: f64,
    /// Length of a stall fault, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub stall_s: f64,
    /// Retry-After seconds sent with 429 faults.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u32,
    /// Write one JSON line per request to FILE (docs/contracts.md §2).
    #[arg(long, value_name = "FILE")]
    pub log_requests: Option<PathBuf>,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a rate between 0 and 1 (e.g. 0.05)")),
    }
}

/// The simulator's settings (the command line minus host and port).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub model: String,
    pub seed: u64,
    pub ttft_ms: f64,
    pub prefill_us_per_token: f64,
    pub tpot_ms: f64,
    pub jitter: f64,
    pub batch_slowdown: f64,
    pub no_latency: bool,
    pub slots: usize,
    pub context_limit: u64,
    pub prefix_cache_blocks: usize,
    pub default_max_tokens: u64,
    pub natural_output: Option<u64>,
    pub reasoning_tokens: u64,
    pub requested_reasoning_tokens: u64,
    pub reasoning_field: ReasoningField,
    pub fault_429: f64,
    pub fault_500: f64,
    pub fault_503: f64,
    pub fault_error_event: f64,
    pub fault_truncate: f64,
    pub fault_stall: f64,
    pub fault_empty: f64,
    pub stall_s: f64,
    pub retry_after_s: u32,
    pub log_requests: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "tokenswarm-sim".into(),
            seed: 0,
            ttft_ms: 40.0,
            prefill_us_per_token: 20.0,
            tpot_ms: 12.0,
            jitter: 0.0,
            batch_slowdown: 0.002,
            no_latency: false,
            slots: 256,
            context_limit: 32768,
            prefix_cache_blocks: 65536,
            default_max_tokens: 256,
            natural_output: None,
            reasoning_tokens: 0,
            requested_reasoning_tokens: 16,
            reasoning_field: ReasoningField::ReasoningContent,
            fault_429: 0.0,
            fault_500: 0.0,
            fault_503: 0.0,
            fault_error_event: 0.0,
            fault_truncate: 0.0,
            fault_stall: 0.0,
            fault_empty: 0.0,
            stall_s: 30.0,
            retry_after_s: 1,
            log_requests: None,
        }
    }
}

impl From<&SimArgs> for SimConfig {
    fn from(a: &SimArgs) -> Self {
        SimConfig {
            model: a.model.clone(),
            seed: a.seed,
            ttft_ms: a.ttft_ms,
            prefill_us_per_token: a.prefill_us_per_token,
            tpot_ms: a.tpot_ms,
            jitter: a.jitter,
            batch_slowdown: a.batch_slowdown,
            no_latency: a.no_latency,
            slots: a.slots,
            context_limit: a.context_limit,
            prefix_cache_blocks: a.prefix_cache_blocks,
            default_max_tokens: a.default_max_tokens,
            natural_output: a.natural_output,
            reasoning_tokens: a.reasoning_tokens,
            requested_reasoning_tokens: a.requested_reasoning_tokens,
            reasoning_field: a.reasoning_field,
            fault_429: a.fault_429,
            fault_500: a.fault_500,
            fault_503: a.fault_503,
            fault_error_event: a.fault_error_event,
            fault_truncate: a.fault_truncate,
            fault_stall: a.fault_stall,
            fault_empty: a.fault_empty,
            stall_s: a.stall_s,
            retry_after_s: a.retry_after_s,
            log_requests: a.log_requests.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot open request log {path}: {source}")]
    Log { path: String, source: std::io::Error },
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// What one request ended with (for stats and the request log).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub arrival: SystemTime,
    pub endpoint: &'static str,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub queue_us: u64,
    pub ttft_us: Option<u64>,
    pub e2e_us: Option<u64>,
    pub fault: Option<&'static str>,
    pub completed: bool,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    by_endpoint: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    prompt_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    streams_completed: u64,
    faults: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn to_json(&self) -> serde_json::Value {
        let by: serde_json::Map<String, serde_json::Value> = self
            .by_endpoint
            .iter()
            .map(|(p, m)| {
                let inner: serde_json::Map<String, serde_json::Value> =
                    m.iter().map(|(s, n)| (s.to_string(), (*n).into())).collect();
                (p.to_string(), inner.into())
            })
            .collect();
        serde_json::json!({
            "requests": self.requests,
            "by_endpoint": by,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "streams_completed": self.streams_completed,
            "faults": self.faults,
        })
    }
}

enum LogMsg {
    Line(String),
    Stop,
}

/// State shared by all requests.
pub struct Shared {
    cfg: SimConfig,
    seq: AtomicU64,
    slots: Arc<Semaphore>,
    /// Cancelled when the shutdown grace period is over: open streams end.
    abort: CancellationToken,
    /// Mirrors `abort` for the per-wake-up check of streams (a plain load).
    aborting: AtomicBool,
    slot_total: usize,
    cache: Mutex<PrefixCache>,
    stats: Mutex<Stats>,
    log: Option<Mutex<mpsc::Sender<LogMsg>>>,
}

impl Shared {
    /// The shutdown grace period is over.
    pub fn aborting(&self) -> bool {
        self.aborting.load(Ordering::Relaxed)
    }

    /// Streams currently holding a slot.
    pub fn running(&self) -> usize {
        self.slot_total.saturating_sub(self.slots.available_permits())
    }

    /// Records the end of a request.
    pub fn finish(&self, o: &Outcome) {
        {
            let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            *st.by_endpoint
                .entry(o.endpoint)
                .or_default()
                .entry(o.status)
                .or_default() += 1;
            if o.status == 200 {
                // tokens of answered requests only (errors are in the log)
                st.prompt_tokens += o.prompt_tokens;
                st.cached_tokens += o.cached_tokens;
                st.output_tokens += o.output_tokens;
            }
            if o.stream && o.completed {
                st.streams_completed += 1;
            }
            if let Some(f) = o.fault {
                *st.faults.entry(f).or_default() += 1;
            }
        }
        if let Some(log) = &self.log {
            let line = serde_json::json!({
                "arrival_unix_s": o.arrival.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                "endpoint": o.endpoint,
                "model": o.model,
                "stream": o.stream,
                "status": o.status,
                "prompt_tokens": o.prompt_tokens,
                "cached_tokens": o.cached_tokens,
                "output_tokens": o.output_tokens,
                "queue_us": o.queue_us,
                "ttft_us": o.ttft_us,
                "e2e_us": o.e2e_us,
                "fault": o.fault,
            })
            .to_string();
            let _ = log.lock().unwrap_or_else(|e| e.into_inner()).send(LogMsg::Line(line));
        }
    }
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let cfg = SimConfig::from(&args);
    let shutdown = CancellationToken::new();
    let sig = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("shutting down");
        sig.cancel();
    });
    tracing::info!("simulator listening on http://{addr}");
    serve(listener, cfg, shutdown).await
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    let nonneg = [
        ("ttft-ms", cfg.ttft_ms),
        ("prefill-us-per-token", cfg.prefill_us_per_token),
        ("tpot-ms", cfg.tpot_ms),
        ("jitter", cfg.jitter),
        ("batch-slowdown", cfg.batch_slowdown),
        ("stall-s", cfg.stall_s),
    ];
    for (name, v) in nonneg {
        if !v.is_finite() || v < 0.0 {
            return Err(SimError::Config(format!(
                "--{name} must be a finite number >= 0, got {v}"
            )));
        }
    }
    let faults = cfg.fault_429
        + cfg.fault_500
        + cfg.fault_503
        + cfg.fault_error_event
        + cfg.fault_truncate
        + cfg.fault_stall
        + cfg.fault_empty;
    if faults > 1.0 + 1e-9 {
        return Err(SimError::Config(format!("fault rates add up to {faults}, more than 1")));
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` is cancelled; in-flight streams get
/// two seconds to end, then the request log is flushed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    validate(&cfg)?;
    let mut log_thread = None;
    let log = match &cfg.log_requests {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SimError::Log {
                    path: path.display().to_string(),
                    source,
                })?;
            let (tx, rx) = mpsc::channel::<LogMsg>();
            log_thread = Some(std::thread::spawn(move || log_writer(file, rx)));
            Some(Mutex::new(tx))
        }
        None => None,
    };
    let slot_total = if cfg.slots == 0 {
        Semaphore::MAX_PERMITS
    } else {
        cfg.slots
    };
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(slot_total)),
        slot_total,
        cache: Mutex::new(PrefixCache::new(cfg.prefix_cache_blocks)),
        stats: Mutex::new(Stats::default()),
        seq: AtomicU64::new(0),
        abort: CancellationToken::new(),
        aborting: AtomicBool::new(false),
        log,
        cfg,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared.clone());
    let grace = shutdown.clone();
    // Nagle would hold back small token writes until the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .into_future();
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r.map_err(SimError::Serve),
        _ = async { grace.cancelled().await; tokio::time::sleep(Duration::from_secs(2)).await } => {
            // Grace period over: open streams end (logged with fault "shutdown"),
            // queued requests get 503, then the connections close.
            shared.aborting.store(true, Ordering::Relaxed);
            shared.abort.cancel();
            shared.slots.close();
            match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                Ok(r) => r.map_err(SimError::Serve),
                Err(_) => Ok(()),
            }
        }
    };
    if let Some(log) = &shared.log {
        let _ = log.lock().unwrap_or_else(|e| e.into_inner()).send(LogMsg::Stop);
    }
    if let Some(t) = log_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    result
}

fn log_writer(file: std::fs::File, rx: mpsc::Receiver<LogMsg>) {
    let mut w = std::io::BufWriter::with_capacity(64 << 10, file);
    let mut dirty = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(LogMsg::Line(l)) => {
                let _ = w.write_all(l.as_bytes());
                let _ = w.write_all(b"\n");
                dirty = true;
            }
            Ok(LogMsg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = w.flush();
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if dirty {
                    let _ = w.flush();
                    dirty = false;
                }
            }
        }
    }
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, Api::Chat, body).await
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, Api::Completions, body).await
}

async fn messages(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, Api::Messages, body).await
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    json_response(
        serde_json::json!({
            "object": "list",
            "data": [{"id": s.cfg.model, "object": "model", "created": unix_now(), "owned_by": "tokenswarm"}],
        })
        .to_string(),
    )
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let v = s.stats.lock().unwrap_or_else(|e| e.into_inner()).to_json();
    json_response(v.to_string())
}

async fn reset(State(s): State<Arc<Shared>>) -> Response {
    *s.stats.lock().unwrap_or_else(|e| e.into_inner()) = Stats::default();
    s.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    json_response("{\"ok\":true}".into())
}

fn json_response(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mix(seed: u64, seq: u64) -> u64 {
    // splitmix64 of the pair, so neighbouring requests get unrelated streams
    let mut z = seed
        ^ seq
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    H429,
    H500,
    H503,
    ErrorEvent,
    Truncate,
    Stall,
    Empty,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::H429 => "http_429",
            Fault::H500 => "http_500",
            Fault::H503 => "http_503",
            Fault::ErrorEvent => "error_event",
            Fault::Truncate => "truncate",
            Fault::Stall => "stall",
            Fault::Empty => "empty",
        }
    }
}

fn draw_fault(cfg: &SimConfig, rng: &mut StdRng) -> Option<Fault> {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (rate, f) in [
        (cfg.fault_429, Fault::H429),
        (cfg.fault_500, Fault::H500),
        (cfg.fault_503, Fault::H503),
        (cfg.fault_error_event, Fault::ErrorEvent),
        (cfg.fault_truncate, Fault::Truncate),
        (cfg.fault_stall, Fault::Stall),
        (cfg.fault_empty, Fault::Empty),
    ] {
        acc += rate;
        if rate > 0.0 && u < acc {
            return Some(f);
        }
    }
    None
}

fn server_error(status: u16, message: &str) -> ApiError {
    ApiError {
        status,
        kind: if status == 429 { "requests" } else { "server_error" },
        message: message.into(),
        param: None,
        code: match status {
            429 => Some("rate_limit_exceeded"),
            _ => None,
        },
        retry_after_s: None,
    }
}

async fn handle(shared: Arc<Shared>, api: Api, body: Bytes) -> Response {
    let t0 = Instant::now();
    let arrival = SystemTime::now();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    shared.stats.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
    let cfg = &shared.cfg;
    let mut outcome = Outcome {
        arrival,
        endpoint: api.path(),
        model: None,
        stream: false,
        status: 200,
        prompt_tokens: 0,
        cached_tokens: 0,
        output_tokens: 0,
        queue_us: 0,
        ttft_us: None,
        e2e_us: None,
        fault: None,
        completed: false,
    };
    let fail = |mut o: Outcome, e: ApiError| {
        o.status = e.status;
        shared.finish(&o);
        e.response(api)
    };
    let req = match parse::parse(api, &body) {
        Ok(r) => r,
        Err(e) => return fail(outcome, e),
    };
    outcome.model = Some(req.model.clone());
    outcome.stream = req.stream;
    outcome.prompt_tokens = req.prompt_tokens;
    // Without max_tokens the answer may use what is left of the context.
    let room = cfg.context_limit.saturating_sub(req.prompt_tokens).max(1);
    let max_tokens = req.max_tokens.unwrap_or(cfg.default_max_tokens.clamp(1, room));
    if req.prompt_tokens.saturating_add(max_tokens) > cfg.context_limit {
        let e = match api {
            Api::Messages => ApiError::bad(
                Some("messages"),
                format!(
                    "prompt is too long: {} tokens + max_tokens {} > {} maximum",
                    req.prompt_tokens, max_tokens, cfg.context_limit
                ),
            ),
            _ => ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::bad(
                    Some("messages"),
                    format!(
                        "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the messages, {} in the completion). Please reduce the length of the messages or completion.",
                        cfg.context_limit,
                        req.prompt_tokens.saturating_add(max_tokens),
                        req.prompt_tokens,
                        max_tokens
                    ),
                )
            },
        };
        return fail(outcome, e);
    }
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed, seq));
    let fault = draw_fault(cfg, &mut rng);
    outcome.fault = fault.map(Fault::name);
    match fault {
        Some(Fault::H429) => {
            let mut e = server_error(429, "Rate limit reached (simulated). Please retry after a short wait.");
            e.retry_after_s = Some(cfg.retry_after_s);
            return fail(outcome, e);
        }
        Some(Fault::H500) => return fail(outcome, server_error(500, "The server had an error (simulated).")),
        Some(Fault::H503) => {
            return fail(
                outcome,
                server_error(503, "The server is overloaded (simulated). Please retry later."),
            );
        }
        _ => {}
    }
    // Prefix cache.
    let cached_blocks = shared
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lookup_insert(&req.block_hashes);
    let cached = (cached_blocks * BLOCK_WORDS) as u64;
    outcome.cached_tokens = cached;

    // Output plan.
    let n_reason = if api == Api::Completions {
        0
    } else if cfg.reasoning_tokens > 0 {
        cfg.reasoning_tokens
    } else if req.wants_reasoning {
        cfg.requested_reasoning_tokens
    } else {
        0
    }
    .min(max_tokens);
    // at most u32::MAX tokens per response (the context limit is far below)
    let max_tokens = max_tokens.min(u64::from(u32::MAX));
    let n_reason = n_reason.min(max_tokens);
    let budget = max_tokens - n_reason;
    let (mut n_answer, mut finish) = match cfg.natural_output {
        Some(n) if !req.ignore_eos => {
            let want = n.max(req.min_tokens.saturating_sub(n_reason));
            if want < budget {
                (want, Finish::Stop)
            } else {
                (budget, Finish::Length)
            }
        }
        _ => (budget, Finish::Length),
    };
    if fault == Some(Fault::Empty) {
        n_answer = 0;
        finish = Finish::Stop;
    }
    let total = n_reason + n_answer;
    let cut = match fault {
        Some(Fault::ErrorEvent) => Some(Cut::ErrorEvent),
        Some(Fault::Truncate) => Some(Cut::Truncate),
        Some(Fault::Stall) => Some(Cut::Stall),
        _ => None,
    }
    .map(|c| (if total <= 1 { 0 } else { rng.random_range(1..total) } as u32, c));
    let plan = Plan {
        n_reason: n_reason as u32,
        n_answer: n_answer as u32,
        finish,
        cut,
    };

    // Queue for a slot.
    let Ok(permit) = shared.slots.clone().acquire_owned().await else {
        outcome.fault = Some("shutdown");
        return fail(outcome, server_error(503, "The server is shutting down."));
    };
    let permit = Some(permit);
    let started = Instant::now();
    outcome.queue_us = started.duration_since(t0).as_micros() as u64;
    let (ttft_us, tpot_us) = if cfg.no_latency || (cfg.ttft_ms == 0.0 && cfg.tpot_ms == 0.0) {
        (0.0, 0.0)
    } else {
        (
            cfg.ttft_ms * 1000.0 + cfg.prefill_us_per_token * (req.prompt_tokens - cached) as f64,
            cfg.tpot_ms * 1000.0,
        )
    };
    let sched = Sched {
        next: started + Duration::from_nanos((ttft_us * 1000.0) as u64),
        tpot_us,
        jitter: cfg.jitter,
        slowdown: cfg.batch_slowdown,
        rng,
        shared: shared.clone(),
    };
    let id = match api {
        Api::Chat => format!("chatcmpl-sim{seq:x}"),
        Api::Completions => format!("cmpl-sim{seq:x}"),
        Api::Messages => format!("msg_sim{seq:x}"),
    };
    let model_json = serde_json::to_string(&req.model).unwrap_or_else(|_| "\"\"".into());
    let ident = Ident {
        id: &id,
        created: unix_now(),
        model_json: &model_json,
    };
    let usage0 = Usage {
        prompt: req.prompt_tokens,
        cached,
        completion: 0,
        reasoning: 0,
    };
    let reasoning_field = cfg.reasoning_field.name();
    if req.stream {
        let tpl = Templates::new(api, &ident, reasoning_field, req.include_usage, &usage0, n_reason > 0);
        let stall = Duration::from_secs_f64(cfg.stall_s);
        let s = SimStream::new(shared.clone(), tpl, plan, sched, t0, outcome, stall, permit);
        let mut r = Response::new(Body::new(s));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return r;
    }
    // Non-streaming: run the same schedule, answer at the end.
    let mut sched = sched;
    if let Some((k, cut)) = plan.cut {
        for _ in 0..k {
            sched.advance();
        }
        let mut until = sched.next;
        if cut == Cut::Stall {
            until += Duration::from_secs_f64(cfg.stall_s);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shared.abort.cancelled() => {}
        }
        drop(permit);
        return fail(
            outcome,
            server_error(500, "The server had an error while generating (simulated)."),
        );
    }
    let mut offsets = Vec::with_capacity((total as usize).min(stream::MAX_OFFSETS + 1));
    for i in 0..total {
        if i > 0 {
            sched.advance();
        }
        if offsets.len() <= stream::MAX_OFFSETS {
            offsets.push(sched.next.duration_since(t0).as_micros() as u64);
        }
    }
    tokio::select! {
        _ = tokio::time::sleep_until(sched.next) => {}
        _ = shared.abort.cancelled() => {
            outcome.fault = Some("shutdown");
            return fail(outcome, server_error(503, "The server is shutting down."));
        }
    }
    drop(permit);
    outcome.output_tokens = total;
    outcome.ttft_us = offsets.first().copied();
    outcome.e2e_us = Some(t0.elapsed().as_micros() as u64);
    outcome.completed = true;
    let sim = stream::sim_json(&outcome, &offsets);
    let usage = Usage {
        completion: total,
        reasoning: n_reason,
        ..usage0
    };
    let body = stream::full_body(api, &ident, &plan, &usage, reasoning_field, &sim);
    shared.finish(&outcome);
    json_response(body)
}
