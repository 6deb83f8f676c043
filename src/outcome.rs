//! The result of one LLM request: the only type that crosses from the LLM
//! client (`crate::llm`) into metrics (`crate::metrics`).
//!
//! It is plain data. Durations are `Duration`s measured on tokio's monotonic
//! clock (so a paused test clock controls them); the wall-clock second is kept
//! separately because Locust keys its per-second maps by Unix second.
//! A failure is data too: `failure` is `Some` and the timings hold what was
//! measured before it happened.

use std::time::Duration;

/// Why a request failed. `Copy` and allocation-free, so counting failures on
/// the hot path costs nothing; the human text lives in [`Failure::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The server answered with a non-2xx status before streaming.
    HttpStatus(u16),
    /// TCP/TLS connection could not be established.
    Connect,
    /// Connect, first-token or total timeout expired.
    Timeout,
    /// The stream carried an error event or an `error` object after HTTP 200.
    ErrorEvent,
    /// The stream ended without `[DONE]`, `message_stop` or a finish reason.
    Truncated,
    /// The stream ended properly but carried no answer token at all.
    EmptyAnswer,
    /// The response could not be understood (bad JSON, wrong content type).
    InvalidResponse,
    /// The request was in flight when the master stopped the run.
    Cancelled,
    /// The server answered with a redirect (3xx); redirects are never
    /// followed, so credentials never reach another host.
    Redirect,
    /// An SSE line was longer than the client's bound (`llm::sse`).
    SseLineTooLong,
    /// An SSE event was larger than the client's bound (`llm::sse`).
    SseEventTooLarge,
}

impl FailureKind {
    /// Stable short label, used as a metric key and in the `llm` report.
    pub fn label(self) -> String {
        match self {
            FailureKind::HttpStatus(code) => format!("http_{code}"),
            FailureKind::Connect => "connect".into(),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::ErrorEvent => "error_event".into(),
            FailureKind::Truncated => "truncated".into(),
            FailureKind::EmptyAnswer => "empty_answer".into(),
            FailureKind::InvalidResponse => "invalid_response".into(),
            FailureKind::Cancelled => "cancelled".into(),
            FailureKind::Redirect => "redirect".into(),
            FailureKind::SseLineTooLong => "sse_line_too_long".into(),
            FailureKind::SseEventTooLarge => "sse_event_too_large".into(),
        }
    }
}

/// A failed request: its kind and a message for Locust's failures table.
/// The message must never contain secrets (API keys, auth headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    /// The part of the message that is the same for every failure of one
    /// cause: Locust keys its failures table by this text, so per-request
    /// details (an error body with a request id, a retry delay, how many
    /// events arrived before a cut) would make one row per failure and grow
    /// the master's memory without bound. The full message goes to the log.
    pub fn summary(&self) -> &str {
        let m = self.message.as_str();
        let cut = match self.kind {
            // "HTTP 429 Too Many Requests: {body excerpt}"
            FailureKind::HttpStatus(_) => m.find(": "),
            // "error event in stream: {type}: {message}"
            FailureKind::ErrorEvent => m.find(": ").and_then(|i| m[i + 2..].find(": ").map(|j| i + 2 + j)),
            // "stream ended without ... after N events"
            FailureKind::Truncated => m.find(" after "),
            // "stream event is not valid JSON ({serde position}): {excerpt}"
            FailureKind::InvalidResponse => [m.find(" ("), m.find(": ")].into_iter().flatten().min(),
            _ => None,
        };
        let mut end = cut.unwrap_or(m.len()).min(160);
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        &m[..end]
    }
}

/// Token counts as the server reported them in `usage` (None where absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

/// Inter-token gaps beyond the per-request cap (`llm::stream::MAX_ITL_SAMPLES`),
/// summarised so their count stays exact while memory stays bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItlTail {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u32,
}

impl ItlTail {
    pub fn add(&mut self, gap_us: u32) {
        self.count = self.count.saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(u64::from(gap_us));
        self.max_us = self.max_us.max(gap_us);
    }
}

/// Everything measured about one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Unix time (seconds) when the request was sent; keys per-second maps.
    pub sent_unix_s: f64,
    /// Open loop only: how late the send was against its schedule
    /// (`send - scheduled`, client queue time). Zero in closed loop.
    pub queue: Duration,
    /// Send -> end of the response (stream fully read, or the failure).
    /// This is the latency of the Locust request entry.
    pub total: Duration,
    /// Send -> first chunk carrying any generated token (reasoning counts).
    pub ttft: Option<Duration>,
    /// Send -> first chunk carrying answer text (not reasoning).
    pub ttfa: Option<Duration>,
    /// Send -> last token-bearing chunk.
    pub e2e: Option<Duration>,
    /// Gaps between consecutive token-bearing chunks, in microseconds
    /// (at most `llm::stream::MAX_ITL_SAMPLES`; the rest in `itl_tail`).
    pub itl_us: Vec<u32>,
    /// Gaps beyond `itl_us`'s cap, summarised.
    pub itl_tail: ItlTail,
    /// Token-bearing chunks counted on the client.
    pub output_chunks: u64,
    /// Server-reported usage.
    pub usage: Usage,
    /// Response body bytes received.
    pub content_length: u64,
    /// Times the request was sent again because its pooled connection had
    /// been closed by the server before answering (0 or 1; `llm::client`).
    pub stale_retries: u32,
    /// `Some` when the request failed.
    pub failure: Option<Failure>,
}

impl Outcome {
    /// Output tokens: the server's usage when given, else counted chunks.
    pub fn output_tokens(&self) -> u64 {
        self.usage.output_tokens.unwrap_or(self.output_chunks)
    }

    /// True when the output token count is an estimate (no server usage).
    pub fn output_tokens_estimated(&self) -> bool {
        self.usage.output_tokens.is_none()
    }

    /// TPOT = (E2E - TTFT) / (output tokens - 1), only when output tokens > 1.
    pub fn tpot(&self) -> Option<Duration> {
        let (ttft, e2e) = (self.ttft?, self.e2e?);
        let out = self.output_tokens();
        if out <= 1 {
            return None;
        }
        let span = e2e.checked_sub(ttft)?;
        // `out` comes from the server: compute in nanoseconds so any count,
        // however absurd, gives a value instead of a panic.
        let nanos = span.as_nanos() / u128::from(out - 1);
        Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    pub fn is_success(&self) -> bool {
        self.failure.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpot_uses_server_usage_and_excludes_first_token() {
        let o = Outcome {
            ttft: Some(Duration::from_millis(50)),
            e2e: Some(Duration::from_millis(50 + 630)),
            output_chunks: 10,
            usage: Usage {
                output_tokens: Some(64),
                ..Usage::default()
            },
            ..Outcome::default()
        };
        assert_eq!(o.tpot(), Some(Duration::from_millis(10)));
        assert!(!o.output_tokens_estimated());
    }

    #[test]
    fn failure_summary_drops_per_request_details() {
        let f = |kind, m: &str| Failure {
            kind,
            message: m.into(),
        };
        let cases = [
            (
                f(
                    FailureKind::HttpStatus(429),
                    "HTTP 429 Too Many Requests: {\"error\": \"retry in 1.23s\"}",
                ),
                "HTTP 429 Too Many Requests",
            ),
            (
                f(
                    FailureKind::ErrorEvent,
                    "error event in stream: overloaded_error: busy, request req_1",
                ),
                "error event in stream: overloaded_error",
            ),
            (
                f(FailureKind::ErrorEvent, "error event in stream: boom"),
                "error event in stream: boom",
            ),
            (
                f(
                    FailureKind::Truncated,
                    "stream ended without an end marker or finish reason after 17 events",
                ),
                "stream ended without an end marker or finish reason",
            ),
            (
                f(
                    FailureKind::InvalidResponse,
                    "stream event is not valid JSON (line 1 column 5): {x",
                ),
                "stream event is not valid JSON",
            ),
            (
                f(FailureKind::Cancelled, "cancelled while streaming"),
                "cancelled while streaming",
            ),
        ];
        for (failure, want) in cases {
            assert_eq!(failure.summary(), want);
        }
    }

    #[test]
    fn tpot_survives_absurd_server_token_counts() {
        let o = Outcome {
            ttft: Some(Duration::from_millis(5)),
            e2e: Some(Duration::from_millis(50)),
            usage: Usage {
                output_tokens: Some((1 << 32) + 1),
                ..Usage::default()
            },
            ..Outcome::default()
        };
        assert_eq!(o.tpot(), Some(Duration::ZERO));
    }

    #[test]
    fn tpot_is_none_for_single_token_answers() {
        let o = Outcome {
            ttft: Some(Duration::from_millis(5)),
            e2e: Some(Duration::from_millis(5)),
            output_chunks: 1,
            ..Outcome::default()
        };
        assert_eq!(o.tpot(), None);
        assert!(o.output_tokens_estimated());
    }
}
