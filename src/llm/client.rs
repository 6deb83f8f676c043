//! The HTTP side: one shared client, scenarios prepared once, and
//! [`LlmClient::execute`], which turns one request into one [`Outcome`].
//!
//! # Timing
//! `send` is taken right before the request is handed to reqwest (which
//! writes it at once on a pooled connection); every body chunk is stamped
//! with `tokio::time::Instant::now()` as soon as reqwest yields it, before
//! any parsing (see [`super::stream`]). All durations are from `send`.
//! `total` is `send` → end of the stream: the chunk holding the end marker
//! (`[DONE]`, `message_stop`), the end of the body, or the failure.
//!
//! After the end marker the rest of the body (normally just the chunked
//! terminator) is drained for up to [`DRAIN_GRACE`] so HTTP/1.1 connections
//! go back to the pool instead of being closed: at 10,000 requests/s a new
//! TCP connection per request would exhaust ephemeral ports.
//!
//! # Timeouts and cancellation
//! Until the first token-bearing chunk the deadline is
//! `send + min(first_token_s, total_s)`; after it, `send + total_s`; the
//! connect timeout is reqwest's. A timeout or a cancelled token ends the
//! request at once with `FailureKind::Timeout` / `Cancelled`, keeping the
//! timings measured so far. The cancellation token is checked first on every
//! wake-up, so `stop` interrupts even a long generation.
//!
//! # Cost
//! Per network chunk the loop does one `select!` over pre-pinned futures
//! (the cancellation future and the deadline are created once per request)
//! and feeds the reader; no per-chunk allocation beyond reqwest's `Bytes`.
//! The ignored bench in tests/llm_http.rs measures a current-thread client
//! driving 64 concurrent 64-token streams: about 30,000 requests/s per busy
//! core when a response arrives in few TCP reads, about 6,000 when every
//! event is its own read; there the per-read cost of hyper's connection
//! task and the wake-ups (~2.5 µs) dominates, not parsing (~0.3 µs/event).
//!
//! # Failures are data
//! Every path returns an `Outcome`. Messages carry the HTTP status and a
//! short body excerpt, or the error chain without the URL; they never carry
//! request headers, and every excerpt and message goes through the
//! scenario's [`Scrubber`] (API key and credential-like header values
//! replaced by `[redacted]`, whole or in fragments) and is bounded.
//!
//! # Redirects
//! Never followed: a `3xx` is `FailureKind::Redirect` and its body is not
//! read. Following one would send the request (and reqwest keeps
//! `x-api-key` and other custom headers across hosts; it drops only
//! `Authorization`) to wherever the server says; an LLM API never needs it.
//!
//! # Stale pooled connections
//! A server may close an idle keep-alive connection just as the pool hands
//! it to a new request (llama.cpp did for 2 of 64 requests). The request is
//! then written into a connection the server has already closed, and hyper
//! reports "connection closed before message completed" (or a reset)
//! before any byte of the response. Such a request is not a server failure:
//! it is sent once more, on a connection made for it by a second client
//! without a pool, and `Outcome::stale_retries` (and
//! [`LlmClient::stale_retries`]) count it. Timings still run from the first
//! send: the client really waited that long.
//!
//! Only this case is retried: the error must come from `send` (no response
//! head), be hyper's incomplete-message or a connection reset / broken
//! pipe, and the connection must have been *reused*. reqwest does not say
//! whether a connection was reused, so the client remembers the (local,
//! remote) address pairs of connections that have already delivered a
//! response (`KnownConnections`) and looks up the failed request's pair
//! (hyper-util attaches it to the error). A fresh connection that fails
//! this way is a real failure (the server accepted and closed it), and so
//! is anything after the response head. hyper itself already re-sends a
//! request it had not started writing; what remains is the race where the
//! request was written after the server's close, which from the client
//! cannot be told apart from a server that read the request and then
//! closed without answering: at worst one extra request, counted.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpInfo;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LlmError;
use super::allow::AllowList;
use super::answer::AnswerText;
use super::prompt::{PromptBuilder, TASK};
use super::request::{self, BodyTemplate};
use super::scrub::Scrubber;
use super::stream::{Flow, ResponseReader};
use crate::outcome::{Failure, FailureKind, Outcome};
use crate::scenario::{Scenario, Timeouts};

/// The header that names each request; the per-request rows carry the
/// same id (`metrics::sink::RequestRecord::request_id`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The `x-request-id` of request `seq`: 16 hex digits. Request numbers are
/// distinct per worker (the engine starts them at a per-worker offset).
pub fn request_id(seq: u64) -> String {
    format!("{seq:016x}")
}

/// How long to keep reading after the end marker, to reuse the connection.
pub const DRAIN_GRACE: Duration = Duration::from_millis(50);
/// Error bodies are read up to this many bytes for the failure message.
const ERROR_BODY_MAX: usize = 2048;

/// Most connections [`KnownConnections`] remembers before it forgets all
/// (64 bytes each: 4 MiB). Forgetting only means a stale connection among
/// those is not recognised once; closed connections are never removed
/// otherwise, so the set must not grow with the run.
const KNOWN_CONNECTIONS_MAX: usize = 65_536;

/// The (local, remote) address pairs of connections that have delivered a
/// response, so a later failure on the same pair is known to be a reused
/// connection. An OS may give a new connection the local port of a closed
/// one; that makes one retry of a real failure, never a lost request.
#[derive(Debug, Default)]
struct KnownConnections(Mutex<HashSet<(SocketAddr, SocketAddr)>>);

impl KnownConnections {
    fn insert(&self, info: &HttpInfo) {
        let key = (info.local_addr(), info.remote_addr());
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= KNOWN_CONNECTIONS_MAX && !set.contains(&key) {
            set.clear();
        }
        set.insert(key);
    }

    /// Removes `info`'s pair and says whether it was there.
    fn take(&self, info: &HttpInfo) -> bool {
        let key = (info.local_addr(), info.remote_addr());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&key)
    }
}

/// The HTTP client shared by all users of a worker. Cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    /// Same settings, no pool: the one retry after a stale pooled
    /// connection goes on a connection made for it.
    fresh: reqwest::Client,
    known: Arc<KnownConnections>,
    stale_retries: Arc<AtomicU64>,
    connect: Duration,
    first_token: Duration,
    total: Duration,
    max_concurrency: usize,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("connect", &self.connect)
            .field("first_token", &self.first_token)
            .field("total", &self.total)
            .field("max_concurrency", &self.max_concurrency)
            .field("stale_retries", &self.stale_retries())
            .finish_non_exhaustive()
    }
}

/// A scenario made ready to send: URL, headers (with the key), body
/// template and prompt builder, all built once.
#[derive(Clone)]
pub struct PreparedScenario {
    scenario: Scenario,
    url: reqwest::Url,
    headers: HeaderMap,
    template: BodyTemplate,
    prompt: PromptBuilder,
    /// The key and credential-like header values, for scrubbing failure
    /// text; never formatted.
    scrub: Scrubber,
    /// Sessions: the header that carries the session id.
    affinity: Option<HeaderName>,
    /// Sessions: the new user message of turns 2 and later.
    turn_prompt: Option<PromptBuilder>,
}

/// What one call sends.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The scenario's own prompt for the request's `seq`.
    Seq,
    /// A body built by the caller (a turn of a session, a dataset prompt),
    /// and the session id for the scenario's affinity header (when set).
    Turn { body: Bytes, session: Option<HeaderValue> },
}

impl fmt::Debug for PreparedScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("redacted"));
        }
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("PreparedScenario")
            .field("name", &self.scenario.name)
            .field("provider", &self.scenario.provider)
            .field("model", &self.scenario.model)
            .field("url", &url.as_str())
            .field("header_names", &header_names)
            .field("api_key_env", &self.scenario.api_key_env)
            .field("prompt", &self.prompt)
            .finish_non_exhaustive()
    }
}

impl PreparedScenario {
    /// Prepares `scenario` against `host` (e.g. `http://127.0.0.1:8000`).
    /// Reads the API key from the variable named by `api_key_env`; fails
    /// naming that variable when it is unset or empty. The unique part of
    /// prompts is salted randomly (see [`PromptBuilder::with_salt`]).
    pub fn new(scenario: &Scenario, host: &str) -> Result<PreparedScenario, LlmError> {
        PreparedScenario::with_allow(scenario, host, &AllowList::any())
    }

    /// Like [`PreparedScenario::new`], refusing a key variable or a URL
    /// outside `allow` (the key variable is checked before it is read).
    pub fn with_allow(scenario: &Scenario, host: &str, allow: &AllowList) -> Result<PreparedScenario, LlmError> {
        if let Some(var) = &scenario.api_key_env {
            allow.check_key_env(&scenario.name, var)?;
        }
        let url = request::url(scenario, host)?;
        allow.check_url(&scenario.name, &url)?;
        let secret = match &scenario.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                Ok(_) | Err(std::env::VarError::NotPresent) => {
                    return Err(LlmError::MissingApiKey {
                        scenario: scenario.name.clone(),
                        var: var.clone(),
                    });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(LlmError::InvalidApiKey {
                        scenario: scenario.name.clone(),
                        var: var.clone(),
                    });
                }
            },
        };
        let headers = request::headers(scenario, secret.as_deref())?;
        let template = BodyTemplate::new(scenario)?;
        let task = scenario.task.as_deref().unwrap_or(TASK);
        let prompt = PromptBuilder::with_task(&scenario.name, scenario.prompt_length, scenario.prefix_length, task)
            .with_salt(rand::random());
        let scrub = Scrubber::new(secret.as_deref(), scenario.headers.values().map(String::as_str));
        let affinity = match scenario.session.as_ref().and_then(|s| s.affinity_header.as_deref()) {
            None => None,
            Some(name) => Some(HeaderName::try_from(name).map_err(|_| LlmError::BadHeader {
                scenario: scenario.name.clone(),
                name: name.to_string(),
            })?),
        };
        let turn_prompt = scenario.session.as_ref().map(|sess| {
            PromptBuilder::with_task(&format!("{}/turn", scenario.name), sess.turn_length(scenario), 0, task)
                .with_salt(rand::random())
        });
        Ok(PreparedScenario {
            scenario: scenario.clone(),
            url,
            headers,
            template,
            prompt,
            scrub,
            affinity,
            turn_prompt,
        })
    }

    pub fn name(&self) -> &str {
        &self.scenario.name
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    pub fn prompt(&self) -> &PromptBuilder {
        &self.prompt
    }

    /// Sessions: the new user message of a later turn, unique per `seq`
    /// (the scenario's own prompt when it has no session).
    pub fn turn_prompt(&self, seq: u64) -> String {
        self.turn_prompt.as_ref().unwrap_or(&self.prompt).build(seq)
    }

    /// The JSON body of request `seq`.
    pub fn body(&self, seq: u64) -> Bytes {
        self.template.body(&self.prompt, seq)
    }

    fn request(&self, http: &reqwest::Client, seq: u64, payload: &Payload) -> reqwest::RequestBuilder {
        let builder = http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(REQUEST_ID_HEADER, request_id(seq));
        match payload {
            Payload::Seq => builder.body(self.body(seq)),
            Payload::Turn { body, session } => {
                let builder = match (&self.affinity, session) {
                    (Some(name), Some(id)) => builder.header(name.clone(), id.clone()),
                    _ => builder,
                };
                builder.body(body.clone())
            }
        }
    }
}

/// The innermost source of an HTTP stack error ("Connection refused (os
/// error 111)"): the part that names the cause, for a failure summary.
fn root_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// The per-request outputs `drive` writes into.
struct Io<'a> {
    reader: &'a mut ResponseReader,
    content_length: &'a mut u64,
    end: &'a mut Option<Instant>,
    stale_retries: &'a mut u32,
    answer: Option<&'a mut AnswerText>,
}

/// The error and its sources, without the URL.
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl LlmClient {
    /// A client whose pool keeps up to `max_concurrency` idle connections
    /// per host (one per in-flight request), with `TCP_NODELAY` (small SSE
    /// writes must not wait for Nagle) and rustls.
    /// Redirects are never followed (see the module docs).
    pub fn new(timeouts: &Timeouts, max_concurrency: usize) -> Result<LlmClient, LlmError> {
        let connect = timeouts.connect;
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .connect_timeout(connect)
        };
        let http = builder()
            .pool_max_idle_per_host(max_concurrency.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| LlmError::ClientBuild(chain(e)))?;
        let fresh = builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| LlmError::ClientBuild(chain(e)))?;
        Ok(LlmClient {
            http,
            fresh,
            known: Arc::default(),
            stale_retries: Arc::default(),
            connect,
            first_token: timeouts.first_token,
            total: timeouts.total,
            max_concurrency,
        })
    }

    /// Requests re-sent after a stale pooled connection, since start.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Ordering::Relaxed)
    }

    /// Whether `e`, from `send` (no response head yet), is a reused pooled
    /// connection the server had closed (see the module docs).
    fn is_stale_connection(&self, e: &reqwest::Error) -> bool {
        if e.is_timeout() || e.is_connect() {
            return false;
        }
        let mut closed = false;
        let mut info = None;
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                closed |= h.is_incomplete_message();
            } else if let Some(io) = s.downcast_ref::<std::io::Error>() {
                closed |= matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            } else if let Some(l) = s.downcast_ref::<hyper_util::client::legacy::Error>()
                && !l.is_connect()
                && let Some(c) = l.connect_info()
            {
                let mut ext = Default::default();
                c.get_extras(&mut ext);
                info = ext.get::<HttpInfo>().cloned();
            }
            source = s.source();
        }
        closed && info.is_some_and(|i| self.known.take(&i))
    }

    /// Sends request `request_seq` of `p` and measures it. Fills every
    /// field of the [`Outcome`] except `queue` (the caller's schedule).
    pub async fn execute(&self, p: &PreparedScenario, request_seq: u64, cancel: &CancellationToken) -> Outcome {
        self.send(p, request_seq, &Payload::Seq, None, cancel).await
    }

    /// Sends one turn of a session (see [`crate::llm::session`]) and
    /// appends the answer's text to `answer`; otherwise as [`Self::execute`]
    /// (`seq` names the request: its `x-request-id`).
    pub async fn execute_turn(
        &self,
        p: &PreparedScenario,
        seq: u64,
        body: Bytes,
        session: Option<HeaderValue>,
        answer: &mut AnswerText,
        cancel: &CancellationToken,
    ) -> Outcome {
        self.send(p, seq, &Payload::Turn { body, session }, Some(answer), cancel)
            .await
    }

    /// Sends request `seq` of `p` with a body built elsewhere (dataset
    /// prompts) asking for `max_tokens`; otherwise as [`Self::execute`].
    pub async fn execute_body(
        &self,
        p: &PreparedScenario,
        seq: u64,
        body: Bytes,
        max_tokens: u64,
        cancel: &CancellationToken,
    ) -> Outcome {
        let payload = Payload::Turn { body, session: None };
        self.send_expecting(p, seq, &payload, None, max_tokens, cancel).await
    }

    async fn send(
        &self,
        p: &PreparedScenario,
        seq: u64,
        payload: &Payload,
        answer: Option<&mut AnswerText>,
        cancel: &CancellationToken,
    ) -> Outcome {
        self.send_expecting(p, seq, payload, answer, p.scenario.output_length, cancel)
            .await
    }

    async fn send_expecting(
        &self,
        p: &PreparedScenario,
        seq: u64,
        payload: &Payload,
        answer: Option<&mut AnswerText>,
        expected_output: u64,
        cancel: &CancellationToken,
    ) -> Outcome {
        let expected = usize::try_from(expected_output).unwrap_or(usize::MAX);
        let mut reader = ResponseReader::new(p.scenario.provider, expected).scrubbing(p.scrub.clone());
        let mut content_length = 0u64;
        let mut end = None;
        let mut stale_retries = 0u32;

        let sent_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let send = Instant::now();
        let io = Io {
            reader: &mut reader,
            content_length: &mut content_length,
            end: &mut end,
            stale_retries: &mut stale_retries,
            answer,
        };
        let fail = self.drive(p, seq, payload, send, cancel, io).await;
        let end = end.unwrap_or_else(Instant::now);

        let summary = reader.finish();
        let failure = fail
            .or_else(|| summary.verdict())
            .map(|f| f.map_text(|text| p.scrub.message(text)));
        if let Some(f) = &failure {
            tracing::debug!(scenario = p.name(), kind = %f.kind().label(), message = %f.message(), "request failed");
        }
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(send));
        Outcome {
            sent_unix_s,
            queue: Duration::ZERO,
            total: end.saturating_duration_since(send),
            ttft: since(summary.first_token),
            ttfa: since(summary.first_answer),
            e2e: since(summary.last_token),
            itl_us: summary.itl_us,
            itl_tail: summary.itl_tail,
            output_chunks: summary.output_chunks,
            usage: summary.usage,
            content_length,
            stale_retries,
            failure,
        }
    }

    /// Runs the exchange; returns a transport-level failure (the stream's
    /// own verdict is decided by the caller) and sets `end` when the
    /// response ended at a known chunk.
    async fn drive(
        &self,
        p: &PreparedScenario,
        seq: u64,
        payload: &Payload,
        send: Instant,
        cancel: &CancellationToken,
        io: Io<'_>,
    ) -> Option<Failure> {
        let Io {
            reader,
            content_length,
            end,
            stale_retries,
            mut answer,
        } = io;
        let first_deadline = send + self.first_token.min(self.total);
        let total_deadline = send + self.total;
        let sleep = tokio::time::sleep_until(first_deadline);
        tokio::pin!(sleep);
        // One cancellation future for the whole request: creating it per
        // chunk would register and unregister a waiter on every chunk.
        let cancelled_fut = cancel.cancelled();
        tokio::pin!(cancelled_fut);
        let mut got_first = false;
        let timeout = |got_first: bool| {
            if got_first {
                Failure::new(
                    FailureKind::Timeout,
                    "total timeout: response not complete",
                    &format!("after {:?}", self.total),
                )
            } else {
                Failure::new(
                    FailureKind::Timeout,
                    "first-token timeout: no token",
                    &format!("after {:?}", self.first_token.min(self.total)),
                )
            }
        };
        let cancelled = |what: &str| Failure::new(FailureKind::Cancelled, what, "");

        let mut http = &self.http;
        let mut response = loop {
            let sent = tokio::select! {
                biased;
                _ = &mut cancelled_fut => return Some(cancelled("before the response arrived")),
                _ = &mut sleep => return Some(timeout(false)),
                r = p.request(http, seq, payload).send() => r,
            };
            match sent {
                Ok(r) => {
                    if let Some(info) = r.extensions().get::<HttpInfo>() {
                        self.known.insert(info);
                    }
                    break r;
                }
                Err(e) if *stale_retries == 0 && self.is_stale_connection(&e) => {
                    *stale_retries += 1;
                    self.stale_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(scenario = p.name(), error = %chain(e), "stale pooled connection; sending again on a new one");
                    http = &self.fresh;
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        FailureKind::Timeout
                    } else {
                        FailureKind::Connect
                    };
                    let what = if kind == FailureKind::Timeout {
                        "request timed out"
                    } else {
                        "request not sent"
                    };
                    return Some(Failure::with_cause(kind, what, &root_cause(&e), &chain(e)));
                }
            }
        };

        let status = response.status();
        if status.is_redirection() {
            *end = Some(Instant::now());
            return Some(Failure::new(
                FailureKind::Redirect,
                "redirects are not followed (credentials go only to the configured URL)",
                &format!("HTTP {}", status.as_u16()),
            ));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default();
        let not_a_stream = content_type.starts_with("application/json") || content_type.starts_with("text/html");
        if !status.is_success() || not_a_stream {
            // Read a bounded excerpt of the body for the message.
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_MAX {
                let chunk = tokio::select! {
                    biased;
                    _ = &mut cancelled_fut => break,
                    _ = &mut sleep => break,
                    c = response.chunk() => c,
                };
                match chunk {
                    Ok(Some(b)) => {
                        *content_length += b.len() as u64;
                        body.extend_from_slice(&b[..b.len().min(ERROR_BODY_MAX - body.len())]);
                    }
                    _ => break,
                }
            }
            *end = Some(Instant::now());
            let text = p.scrub.excerpt(&body);
            if !status.is_success() {
                let code = status.as_u16();
                let what = match status.canonical_reason() {
                    Some(reason) => format!("HTTP {code} {reason}"),
                    None => format!("HTTP {code}"),
                };
                return Some(Failure::new(FailureKind::HttpStatus(code), &what, &text));
            }
            let kind = if body.windows(7).any(|w| w == b"\"error\"") {
                FailureKind::ErrorEvent
            } else {
                FailureKind::InvalidResponse
            };
            // The media type without parameters: a unique `boundary=` or
            // `charset=` must not make a table row of its own.
            let media_type = content_type.split(';').next().unwrap_or("").trim();
            return Some(Failure::with_cause(
                kind,
                "response is not text/event-stream",
                media_type,
                &format!("{}: {text}", p.scrub.excerpt(content_type.as_bytes())),
            ));
        }

        // Nothing below needs the response head, and hyper's header values
        // are slices of the connection's first read buffer (8 KiB): holding
        // them for the life of a long stream keeps that buffer alive beside
        // the one the body is read into. Dropping them lets hyper reuse it
        // (one buffer per open stream instead of two; tests/stream_memory.rs).
        *response.headers_mut() = reqwest::header::HeaderMap::new();
        response.extensions_mut().clear();

        loop {
            let chunk = tokio::select! {
                biased;
                _ = &mut cancelled_fut => return Some(cancelled("while streaming")),
                _ = &mut sleep => return Some(timeout(got_first)),
                c = response.chunk() => c,
            };
            let at = Instant::now();
            match chunk {
                Ok(Some(bytes)) => {
                    *content_length += bytes.len() as u64;
                    let flow = reader.feed(&bytes, at);
                    if let Some(a) = answer.as_deref_mut() {
                        a.feed(&bytes);
                    }
                    if !got_first && reader.summary().first_token.is_some() {
                        got_first = true;
                        sleep.as_mut().reset(total_deadline);
                    }
                    if flow == Flow::Stop {
                        *end = Some(at);
                        let grace = tokio::time::sleep(DRAIN_GRACE);
                        tokio::pin!(grace);
                        loop {
                            tokio::select! {
                                biased;
                                _ = &mut cancelled_fut => break,
                                _ = &mut grace => break,
                                c = response.chunk() => match c {
                                    Ok(Some(b)) => *content_length += b.len() as u64,
                                    _ => break,
                                },
                            }
                        }
                        return None;
                    }
                }
                Ok(None) => {
                    *end = Some(at);
                    return None;
                }
                Err(e) => {
                    *end = Some(at);
                    let kind = if e.is_timeout() {
                        FailureKind::Timeout
                    } else {
                        FailureKind::Truncated
                    };
                    return Some(Failure::with_cause(
                        kind,
                        "connection lost while streaming",
                        &root_cause(&e),
                        &chain(e),
                    ));
                }
            }
        }
    }
}
