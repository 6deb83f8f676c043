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
//! request headers, and as a last guard the API key value is replaced by
//! `[redacted]` should a server echo it back.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LlmError;
use super::prompt::PromptBuilder;
use super::request::{self, BodyTemplate};
use super::stream::{Flow, ResponseReader, excerpt};
use crate::outcome::{Failure, FailureKind, Outcome};
use crate::scenario::{Scenario, Timeouts};

/// How long to keep reading after the end marker, to reuse the connection.
pub const DRAIN_GRACE: Duration = Duration::from_millis(50);
/// Error bodies are read up to this many bytes for the failure message.
const ERROR_BODY_MAX: usize = 2048;
/// Timeouts are capped so `Instant + timeout` cannot overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT)
}

/// The HTTP client shared by all users of a worker. Cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
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
    /// Only for scrubbing failure messages; never formatted.
    secret: Option<String>,
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
        let url = request::url(scenario, host)?;
        let headers = request::headers(scenario, secret.as_deref())?;
        let template = BodyTemplate::new(scenario)?;
        let prompt = PromptBuilder::new(&scenario.name, scenario.prompt_length, scenario.prefix_length)
            .with_salt(rand::random());
        Ok(PreparedScenario {
            scenario: scenario.clone(),
            url,
            headers,
            template,
            prompt,
            secret,
        })
    }

    /// Replaces the random prompt salt (reproducible prompts in tests).
    pub fn with_prompt_salt(mut self, salt: u64) -> PreparedScenario {
        self.prompt = self.prompt.with_salt(salt);
        self
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

    /// The JSON body of request `seq`.
    pub fn body(&self, seq: u64) -> Bytes {
        self.template.body(&self.prompt, seq)
    }

    fn scrub(&self, mut message: String) -> String {
        if let Some(secret) = self.secret.as_deref().filter(|s| !s.is_empty())
            && message.contains(secret)
        {
            message = message.replace(secret, "[redacted]");
        }
        message
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
    pub fn new(timeouts: &Timeouts, max_concurrency: usize) -> Result<LlmClient, LlmError> {
        let connect = secs(timeouts.connect_s);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(max_concurrency.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(connect)
            .build()
            .map_err(|e| LlmError::ClientBuild(chain(e)))?;
        Ok(LlmClient {
            http,
            connect,
            first_token: secs(timeouts.first_token_s),
            total: secs(timeouts.total_s),
            max_concurrency,
        })
    }

    /// Sends request `request_seq` of `p` and measures it. Fills every
    /// field of the [`Outcome`] except `queue` (the caller's schedule).
    pub async fn execute(&self, p: &PreparedScenario, request_seq: u64, cancel: &CancellationToken) -> Outcome {
        let request = self
            .http
            .post(p.url.clone())
            .headers(p.headers.clone())
            .body(p.body(request_seq));
        let expected = usize::try_from(p.scenario.output_length).unwrap_or(usize::MAX);
        let mut reader = ResponseReader::new(p.scenario.provider, expected);
        let mut content_length = 0u64;
        let mut end = None;

        let sent_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let send = Instant::now();
        let fail = self
            .drive(request, send, cancel, &mut reader, &mut content_length, &mut end)
            .await;
        let end = end.unwrap_or_else(Instant::now);

        let summary = reader.finish();
        let failure = fail
            .or_else(|| summary.verdict())
            .map(|f| f.map_text(|text| p.scrub(text)));
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
            output_chunks: summary.output_chunks,
            usage: summary.usage,
            content_length,
            failure,
        }
    }

    /// Runs the exchange; returns a transport-level failure (the stream's
    /// own verdict is decided by the caller) and sets `end` when the
    /// response ended at a known chunk.
    async fn drive(
        &self,
        request: reqwest::RequestBuilder,
        send: Instant,
        cancel: &CancellationToken,
        reader: &mut ResponseReader,
        content_length: &mut u64,
        end: &mut Option<Instant>,
    ) -> Option<Failure> {
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

        let sent = tokio::select! {
            biased;
            _ = &mut cancelled_fut => return Some(cancelled("before the response arrived")),
            _ = &mut sleep => return Some(timeout(false)),
            r = request.send() => r,
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let (kind, what) = if e.is_timeout() {
                    (FailureKind::Timeout, "request timed out")
                } else {
                    (FailureKind::Connect, "request not sent")
                };
                return Some(Failure::with_cause(kind, what, &root_cause(&e), &chain(e)));
            }
        };

        let status = response.status();
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
            let text = excerpt(&body);
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
                &format!("{content_type}: {text}"),
            ));
        }

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
