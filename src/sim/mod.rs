//! The built-in OpenAI/Anthropic-compatible server simulator (`tokenswarm sim`).
//!
//! Serves `/v1/chat/completions`, `/v1/completions`, `/v1/messages`,
//! Gemini's `/v1beta/models/{model}:streamGenerateContent?alt=sse` and
//! `:generateContent` (streaming and not) and `/v1/models`, with a deterministic (seeded) latency model,
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
//!   whole leading blocks seen before (LRU of `--prefix-cache-blocks`). A
//!   completed answer's blocks are cached too (prompt words followed by one
//!   `tok` per answer token, as the next turn of a conversation resends
//!   them), so a multi-turn chat hits on its whole history, as on vLLM. They
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
//! - Hostile clients (issue 13): a model name is at most 256 bytes
//!   ([`MAX_MODEL_BYTES`]), a body at most `--max-body-bytes` (4 MiB; 413
//!   above), one write of coalesced chunks at most [`MAX_WRITE_BYTES`], and a
//!   connection that takes longer than `--header-timeout-s` (30 s) to send a
//!   request's headers is closed (`server.rs`).
//!
//! # Layout
//! - `settings`: the settings, once (command line, runtime config, defaults).
//! - `server`: accept loop with the header timeout, bounded body reading.
//! - `parse`: typed request bodies, API-shaped errors.
//! - `plan`: the pure plan of a response (rejection or tokens, cut, delays).
//! - `stream`: the executor on the clock (streaming body, schedule).
//! - `format`: writers per API (OpenAI chat, completions, Anthropic).
//! - `cache`: the prefix cache.
//! - `metrics`: `GET /metrics` (Prometheus text, vLLM names) and the count
//!   of requests waiting for a slot.
//!
//! Defaults are a small demo model: TTFT 40 ms + 0.02 ms per prompt token,
//! 12 ms per output token, 256 slots, +0.2 % decode time per extra stream,
//! 32k context, 65,536 cache blocks (1M words).

mod cache;
mod format;
mod metrics;
mod parse;
mod plan;
mod server;
mod settings;
mod stream;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cache::BLOCK_WORDS;
use cache::PrefixCache;
use format::{Ident, Options, UsageCounts};
pub use parse::MAX_MODEL_BYTES;
use parse::{Api, ApiError, Req};
use plan::{Cut, Fault, Plan, server_error};
pub use settings::{ReasoningField, SimConfig};
pub use stream::MAX_WRITE_BYTES;
use stream::{Sched, SimStream};

/// Command line of `tokenswarm sim`: where to listen, and the settings.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub settings: SimConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot open request log {path}: {source}")]
    Log { path: String, source: std::io::Error },
    #[error("invalid settings: {0}")]
    Config(String),
}

/// What one request ended with (for stats and the request log).
#[derive(Debug, Clone)]
pub struct ServedRequest {
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
    /// Block hashes of the prompt followed by the planned answer, cached
    /// when the response completes (empty when the cache is off).
    pub context_blocks: Vec<u64>,
    /// `--log-prompts`: the prompt's texts.
    pub prompt_texts: Option<Vec<String>>,
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
    /// Requests queued for a slot (`metrics::Waiting` guards).
    waiting: AtomicUsize,
    cache: Mutex<PrefixCache>,
    stats: Mutex<Stats>,
    log: Option<Mutex<mpsc::Sender<LogMsg>>>,
}

impl Shared {
    /// The state of one simulator; `log` receives one line per request.
    fn new(cfg: SimConfig, log: Option<Mutex<mpsc::Sender<LogMsg>>>) -> Self {
        let slot_total = if cfg.slots == 0 {
            Semaphore::MAX_PERMITS
        } else {
            cfg.slots.min(Semaphore::MAX_PERMITS)
        };
        Shared {
            slots: Arc::new(Semaphore::new(slot_total)),
            slot_total,
            waiting: AtomicUsize::new(0),
            cache: Mutex::new(PrefixCache::new(cfg.prefix_cache_blocks)),
            stats: Mutex::new(Stats::default()),
            seq: AtomicU64::new(0),
            abort: CancellationToken::new(),
            aborting: AtomicBool::new(false),
            log,
            cfg,
        }
    }

    /// Without a request log (tests).
    #[cfg(test)]
    pub(crate) fn for_tests(cfg: SimConfig) -> Self {
        Shared::new(cfg, None)
    }

    /// The shutdown grace period is over.
    pub fn aborting(&self) -> bool {
        self.aborting.load(Ordering::Relaxed)
    }

    /// Streams currently holding a slot.
    pub fn running(&self) -> usize {
        self.slot_total.saturating_sub(self.slots.available_permits())
    }

    /// Records the end of a request.
    pub fn finish(&self, o: &ServedRequest) {
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
        if o.status == 200 && o.completed && !o.context_blocks.is_empty() {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lookup_insert(&o.context_blocks);
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
            });
            let mut line = line;
            if let Some(texts) = &o.prompt_texts {
                line["prompt_texts"] = serde_json::json!(texts);
            }
            let line = line.to_string();
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
    let shutdown = CancellationToken::new();
    let sig = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("shutting down");
        sig.cancel();
    });
    tracing::info!("simulator listening on http://{addr}");
    serve(listener, args.settings, shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled; in-flight streams get
/// two seconds to end, then the request log is flushed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    cfg.validate().map_err(SimError::Config)?;
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
    let header_timeout = cfg.header_timeout;
    let shared = Arc::new(Shared::new(cfg, log));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/messages", post(messages))
        .route("/v1beta/models/{target}", post(gemini))
        .route("/v1/models", get(models))
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .route("/metrics", get(prometheus))
        .with_state(shared.clone());
    let connections = TaskTracker::new();
    let accept = server::accept_loop(listener, app, header_timeout, shutdown.clone(), connections.clone());
    // Done when accepting has stopped and every connection has closed.
    let server = async {
        accept.await;
        connections.close();
        connections.wait().await;
    };
    tokio::pin!(server);
    let grace = shutdown.clone();
    tokio::select! {
        _ = &mut server => {}
        _ = async { grace.cancelled().await; tokio::time::sleep(Duration::from_secs(2)).await } => {
            // Grace period over: open streams end (logged with fault "shutdown"),
            // queued requests get 503, then the connections close.
            shared.aborting.store(true, Ordering::Relaxed);
            shared.abort.cancel();
            shared.slots.close();
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
        }
    }
    if let Some(log) = &shared.log {
        let _ = log.lock().unwrap_or_else(|e| e.into_inner()).send(LogMsg::Stop);
    }
    if let Some(t) = log_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
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

async fn chat(State(s): State<Arc<Shared>>, body: Body) -> Response {
    handle(s, Api::Chat, body).await
}

async fn completions(State(s): State<Arc<Shared>>, body: Body) -> Response {
    handle(s, Api::Completions, body).await
}

async fn messages(State(s): State<Arc<Shared>>, body: Body) -> Response {
    handle(s, Api::Messages, body).await
}

/// Gemini: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
/// (streamed as SSE) or `...:generateContent` (whole). The path segment is
/// `model:method`; the stream without `alt=sse` (a JSON array) is not
/// simulated and answered with a 400 saying so.
async fn gemini(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(target): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Body,
) -> Response {
    let api = Api::Gemini;
    let Some((model, method)) = target.rsplit_once(':') else {
        return gemini_error(
            404,
            format!("models/{target} has no method; use :streamGenerateContent or :generateContent"),
        );
    };
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => {
            return gemini_error(
                404,
                format!("method {method:?} is not served; use streamGenerateContent or generateContent"),
            );
        }
    };
    let sse = query.as_deref().is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    if stream && !sse {
        return gemini_error(400, "this simulator streams Gemini only as SSE: add ?alt=sse".into());
    }
    handle_parsed(s, api, body, Some((model.to_string(), stream))).await
}

fn gemini_error(status: u16, message: String) -> Response {
    let mut e = ApiError::bad(None, message);
    e.status = status;
    e.response(Api::Gemini)
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

async fn prometheus(State(s): State<Arc<Shared>>) -> Response {
    let text = metrics::render(&metrics::Sample::read(&s), &s.cfg.model);
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
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

fn shutting_down() -> ApiError {
    server_error(503, "The server is shutting down.")
}

/// Records an error answer and renders it.
fn fail(shared: &Shared, api: Api, mut o: ServedRequest, e: ApiError) -> Response {
    o.status = e.status;
    shared.finish(&o);
    e.response(api)
}

/// One request: read and parse the body, plan the response, wait for a
/// slot, then execute the plan (streamed, or whole at the end).
async fn handle(shared: Arc<Shared>, api: Api, body: Body) -> Response {
    handle_parsed(shared, api, body, None).await
}

/// [`handle`], with the model and the streaming flag taken from the path
/// when the API puts them there (Gemini).
async fn handle_parsed(shared: Arc<Shared>, api: Api, body: Body, path: Option<(String, bool)>) -> Response {
    let t0 = Instant::now();
    let arrival = SystemTime::now();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    shared.stats.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
    let cfg = &shared.cfg;
    let mut outcome = ServedRequest {
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
        context_blocks: Vec::new(),
        prompt_texts: None,
    };
    let req = match server::read_body(body, cfg.max_body_bytes).await {
        Ok(bytes) => {
            parse::parse_request(api, &bytes, path.as_ref().map(|(m, _)| m.as_str()), cfg.log_prompts).map(|mut r| {
                if let Some((_, stream)) = &path {
                    r.stream = *stream;
                }
                r
            })
        }
        Err(e) => Err(e),
    };
    let mut req = match req {
        Ok(r) => r,
        Err(e) => return fail(&shared, api, outcome, e),
    };
    outcome.prompt_texts = req.prompt_texts.take();
    outcome.model = Some(req.model.clone());
    outcome.stream = req.stream;
    outcome.prompt_tokens = req.prompt_tokens;
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed, seq));
    let cache = |hashes: &[u64]| {
        shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup_insert(hashes)
    };
    let plan = match plan::plan(cfg, api, &req, &mut rng, cache) {
        Ok(p) => p,
        Err(r) => {
            outcome.fault = r.fault.map(Fault::name);
            return fail(&shared, api, outcome, r.error);
        }
    };
    outcome.fault = plan.fault.map(Fault::name);
    outcome.cached_tokens = plan.cached_tokens;
    if cfg.prefix_cache_blocks > 0 && plan.n_answer > 0 {
        let mut chain = req.chain.clone();
        for _ in 0..plan.n_answer {
            chain.push_word(format::ANSWER_WORD.trim().as_bytes());
        }
        // only the blocks the answer completed are new
        if chain.hashes.len() > req.block_hashes.len() {
            outcome.context_blocks = chain.hashes;
        }
    }

    // Queue for a slot.
    let permit = {
        let _queued = metrics::Waiting::enter(&shared.waiting);
        shared.slots.clone().acquire_owned().await
    };
    let Ok(permit) = permit else {
        outcome.fault = Some("shutdown");
        return fail(&shared, api, outcome, shutting_down());
    };
    let started = Instant::now();
    outcome.queue_us = started.duration_since(t0).as_micros() as u64;
    let sched = Sched {
        next: started + plan.first_token_delay,
        tpot_us: plan.tpot_us,
        jitter: cfg.jitter,
        slowdown: cfg.batch_slowdown,
        rng,
        shared: shared.clone(),
    };
    let job = Job {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-sim{seq:x}"),
            Api::Completions => format!("cmpl-sim{seq:x}"),
            Api::Messages => format!("msg_sim{seq:x}"),
            Api::Gemini => format!("gemini-sim{seq:x}"),
        },
        model_json: serde_json::to_string(&req.model).unwrap_or_else(|_| "\"\"".into()),
        created: unix_now(),
        plan,
        sched,
        t0,
        outcome,
        permit: Some(permit),
    };
    if req.stream {
        job.stream(&shared, &req)
    } else {
        job.whole(&shared).await
    }
}

/// An admitted request holding its slot, ready to be carried out.
struct Job {
    api: Api,
    id: String,
    model_json: String,
    created: u64,
    plan: Plan,
    sched: Sched,
    t0: Instant,
    outcome: ServedRequest,
    /// Released as soon as the generation is over (before the body is built).
    permit: Option<OwnedSemaphorePermit>,
}

impl Job {
    fn ident(&self) -> Ident<'_> {
        Ident {
            id: &self.id,
            created: self.created,
            model_json: &self.model_json,
        }
    }

    fn usage(&self, completion: u64, reasoning: u64) -> UsageCounts {
        UsageCounts {
            prompt: self.outcome.prompt_tokens,
            cached: self.outcome.cached_tokens,
            completion,
            reasoning,
        }
    }

    /// A streaming response: the body executes the plan as it is polled.
    fn stream(self, shared: &Arc<Shared>, req: &Req) -> Response {
        let opts = Options {
            reasoning_field: shared.cfg.reasoning_field.name(),
            include_usage: req.include_usage,
        };
        let format = format::stream_format(
            self.api,
            &self.ident(),
            &opts,
            &self.usage(0, 0),
            self.plan.n_reason > 0,
        );
        let s = SimStream::new(
            shared.clone(),
            format,
            self.plan,
            self.sched,
            self.t0,
            self.outcome,
            shared.cfg.stall,
            self.permit,
        );
        let mut r = Response::new(Body::new(s));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }

    /// A non-streaming response: run the same schedule, answer at the end.
    async fn whole(mut self, shared: &Arc<Shared>) -> Response {
        let api = self.api;
        if let Some((k, cut)) = self.plan.cut {
            for _ in 0..k {
                self.sched.advance();
            }
            let mut until = self.sched.next;
            if cut == Cut::Stall {
                until += shared.cfg.stall;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shared.abort.cancelled() => {}
            }
            self.permit = None;
            return fail(
                shared,
                api,
                self.outcome,
                server_error(500, "The server had an error while generating (simulated)."),
            );
        }
        let total = self.plan.total();
        let mut offsets = Vec::with_capacity((total as usize).min(stream::MAX_OFFSETS + 1));
        for i in 0..total {
            if i > 0 {
                self.sched.advance();
            }
            if offsets.len() <= stream::MAX_OFFSETS {
                offsets.push(self.sched.next.duration_since(self.t0).as_micros() as u64);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(self.sched.next) => {}
            _ = shared.abort.cancelled() => {
                self.outcome.fault = Some("shutdown");
                return fail(shared, api, self.outcome, shutting_down());
            }
        }
        self.permit = None;
        self.outcome.output_tokens = u64::from(total);
        self.outcome.ttft_us = offsets.first().copied();
        self.outcome.e2e_us = Some(self.t0.elapsed().as_micros() as u64);
        self.outcome.completed = true;
        let sim = stream::sim_json(&self.outcome, &offsets);
        let opts = Options {
            reasoning_field: shared.cfg.reasoning_field.name(),
            include_usage: false,
        };
        let body = format::full_body(
            api,
            &self.ident(),
            &self.plan,
            &self.usage(u64::from(total), u64::from(self.plan.n_reason)),
            &opts,
            &sim,
        );
        shared.finish(&self.outcome);
        json_response(body)
    }
}
