//! The result of one LLM request: the only type that crosses from the LLM
//! client (`crate::llm`) into metrics (`crate::metrics`).
//!
//! It is plain data. Durations are `Duration`s measured on tokio's monotonic
//! clock (so a paused test clock controls them); the wall-clock second is kept
//! separately because Locust keys its per-second maps by Unix second.
//! A failure is data too: `failure` is `Some` and the timings hold what was
//! measured before it happened.
//!
//! # Failures: kind, summary, detail
//!
//! A [`Failure`] carries three separate things, so nothing downstream has
//! to re-parse a message:
//! - `kind`: a [`FailureKind`], with a stable snake_case [`FailureKind::label`]
//!   (the `failure_kinds` counts of the `llm` report; the master's exit
//!   policy decides on it);
//! - `summary`: the failures-table key, the kind's label plus text fixed by
//!   our code, and at most one short cause from the server or the HTTP
//!   stack with ids and numbers normalised ([`normalise`]). It must not
//!   change from one request to the next of the same cause: Locust keys its
//!   failures table by it, and per-request text there once made one row per
//!   request (7,778 rows in 6 s, issue 13). `metrics` also caps the number
//!   of distinct summaries per scenario;
//! - `detail`: the per-request text (an error body excerpt, a count, a
//!   timeout), single-line and at most [`DETAIL_MAX_BYTES`]; for logs only.
//!
//! Neither may contain secrets: the client scrubs both ([`Failure::map_text`]).

use std::time::Duration;

/// Why a request failed. `Copy` and allocation-free, so counting failures on
/// the hot path costs nothing; the text lives in [`Failure`].
///
/// Adding a variant: give it a [`label`](FailureKind::label) and a
/// [`group`](FailureKind::group) arm (both are exhaustive matches).
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
    /// Stable snake_case label, used as a metric key and in the `llm`
    /// report (`http_429`, `timeout`, `cancelled`, ...).
    pub fn label(self) -> String {
        match self {
            FailureKind::HttpStatus(code) => format!("http_{code}"),
            other => other.group().to_string(),
        }
    }

    /// Like [`label`](FailureKind::label), but one name for all HTTP
    /// statuses: the kind's share of the failures table when its distinct
    /// summaries are over the cap (`"{group}: other"`), so those overflow
    /// rows are bounded by the number of variants, not of status codes.
    pub fn group(self) -> &'static str {
        match self {
            FailureKind::HttpStatus(_) => "http_status",
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::ErrorEvent => "error_event",
            FailureKind::Truncated => "truncated",
            FailureKind::EmptyAnswer => "empty_answer",
            FailureKind::InvalidResponse => "invalid_response",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Redirect => "redirect",
            FailureKind::SseLineTooLong => "sse_line_too_long",
            FailureKind::SseEventTooLarge => "sse_event_too_large",
        }
    }
}

/// Longest per-request detail kept, in bytes (UTF-8, cut at a character).
pub const DETAIL_MAX_BYTES: usize = 256;
/// Longest summary, in bytes: a table key, not a story.
pub const SUMMARY_MAX_BYTES: usize = 160;
/// Longest cause from outside our code (an error `type`, a content type, an
/// HTTP stack error) that goes into a summary, after normalising.
pub const CAUSE_MAX_BYTES: usize = 64;

/// A failed request. Built only through the constructors, which bound and
/// normalise the text (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    kind: FailureKind,
    summary: String,
    detail: String,
}

impl Failure {
    /// A failure whose summary is the kind's label and `what`, text chosen
    /// by our code that is the same for every failure of this cause (never
    /// server text); `detail` is the per-request part.
    pub fn new(kind: FailureKind, what: &str, detail: &str) -> Failure {
        Failure::build(kind, what, None, detail)
    }

    /// Like [`new`](Failure::new), with a short cause from outside our code
    /// (an error event's `type`, a content type, the HTTP stack's error) in
    /// the summary, normalised and bounded; empty causes are left out.
    pub fn with_cause(kind: FailureKind, what: &str, cause: &str, detail: &str) -> Failure {
        Failure::build(kind, what, Some(cause), detail)
    }

    fn build(kind: FailureKind, what: &str, cause: Option<&str>, detail: &str) -> Failure {
        let mut summary = kind.label();
        let what = single_line(what);
        if !what.is_empty() {
            summary.push_str(": ");
            summary.push_str(&what);
        }
        if let Some(cause) = cause.map(|c| normalise(c, CAUSE_MAX_BYTES)).filter(|c| !c.is_empty()) {
            summary.push_str(": ");
            summary.push_str(&cause);
        }
        truncate(&mut summary, SUMMARY_MAX_BYTES);
        let mut detail = single_line(detail);
        truncate(&mut detail, DETAIL_MAX_BYTES);
        Failure { kind, summary, detail }
    }

    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The failures-table key: the same for every failure of one cause.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The per-request text, at most [`DETAIL_MAX_BYTES`]; for logs.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Summary and detail in one line, for logs and error reasons.
    pub fn message(&self) -> String {
        if self.detail.is_empty() {
            self.summary.clone()
        } else {
            format!("{}: {}", self.summary, self.detail)
        }
    }

    /// Applies `f` (e.g. secret scrubbing) to the summary and the detail;
    /// the bounds hold afterwards too.
    pub fn map_text(self, f: impl Fn(String) -> String) -> Failure {
        let mut summary = single_line(&f(self.summary));
        truncate(&mut summary, SUMMARY_MAX_BYTES);
        let mut detail = single_line(&f(self.detail));
        truncate(&mut detail, DETAIL_MAX_BYTES);
        Failure {
            kind: self.kind,
            summary,
            detail,
        }
    }
}

/// Control characters (newlines, tabs, escapes) become spaces, runs of
/// whitespace one space, and the ends are trimmed.
fn single_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(DETAIL_MAX_BYTES * 4));
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let len = out.trim_end().len();
    out.truncate(len);
    out
}

/// Cuts `s` to at most `max` bytes at a character boundary, ending in `…`
/// when something was cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(ELLIPSIS);
}

/// Text from outside our code made fit for a table key: on one line, each
/// word (letters, digits, `_`, `-`, `.`) that holds a digit becomes `<n>`
/// when it is a number (digits and dots: counts, delays, addresses) and
/// `<id>` otherwise (request ids, hex ids, UUIDs, model versions); a
/// letters-only word longer than 24 characters (a random token) becomes
/// `<id>` too; the result is cut to `max` bytes. Text that still differs
/// per request is caught by the per-scenario cap in `metrics`.
pub fn normalise(text: &str, max: usize) -> String {
    const LONG_WORD: usize = 24;
    // Only the start can reach the key; do not scan a megabyte for it.
    let head: String = text.chars().take(max.saturating_mul(4)).collect();
    let text = single_line(&head);
    let mut out = String::with_capacity(text.len().min(max + 8));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        let has_digit = word.chars().any(|c| c.is_ascii_digit());
        if has_digit && word.chars().all(|c| c.is_ascii_digit() || c == '.') {
            out.push_str("<n>");
        } else if has_digit || word.chars().count() > LONG_WORD {
            out.push_str("<id>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if out.len() > max {
            break;
        }
        if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    truncate(&mut out, max);
    out
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
    fn summary_is_kind_plus_fixed_text_and_detail_is_kept_apart() {
        let f = Failure::new(
            FailureKind::HttpStatus(429),
            "HTTP 429 Too Many Requests",
            "{\"error\": \"retry in 1.23s\"}",
        );
        assert_eq!(f.kind(), FailureKind::HttpStatus(429));
        assert_eq!(f.summary(), "http_429: HTTP 429 Too Many Requests");
        assert_eq!(f.detail(), "{\"error\": \"retry in 1.23s\"}");
        assert_eq!(f.message(), format!("{}: {}", f.summary(), f.detail()));
        let c = Failure::new(FailureKind::Cancelled, "while streaming", "");
        assert_eq!(
            (c.summary(), c.message().as_str()),
            ("cancelled: while streaming", "cancelled: while streaming")
        );
    }

    #[test]
    fn causes_from_outside_are_normalised_so_ids_and_numbers_do_not_make_new_keys() {
        let a = Failure::with_cause(
            FailureKind::ErrorEvent,
            "error event in stream",
            "overloaded req_8f3a2c",
            "busy",
        );
        let b = Failure::with_cause(
            FailureKind::ErrorEvent,
            "error event in stream",
            "overloaded req_19bb07",
            "busy!",
        );
        assert_eq!(a.summary(), b.summary());
        assert_eq!(a.summary(), "error_event: error event in stream: overloaded <id>");
        assert_eq!(
            normalise("id 550e8400-e29b-41d4-a716-446655440000 after 17 events, 3.5 s", 64),
            "id <id> after <n> events, <n> s"
        );
        assert_eq!(normalise(&"x".repeat(40), 64), "<id>");
        assert_eq!(normalise("line\none\ttwo", 64), "line one two");
        assert!(normalise(&"word ".repeat(1000), 64).len() <= 64);
        let empty = Failure::with_cause(FailureKind::InvalidResponse, "bad", "  ", "");
        assert_eq!(empty.summary(), "invalid_response: bad");
    }

    #[test]
    fn text_is_bounded_single_line_and_cut_at_a_character() {
        let long = "é\n".repeat(10_000);
        let f = Failure::with_cause(FailureKind::ErrorEvent, &long, &long, &long);
        assert!(f.summary().len() <= SUMMARY_MAX_BYTES, "{}", f.summary().len());
        assert!(f.detail().len() <= DETAIL_MAX_BYTES && f.detail().ends_with('…'));
        assert!(!f.summary().contains('\n') && !f.detail().contains('\n'));
        let scrubbed = f.map_text(|t| t.replace('é', "[redacted]"));
        assert!(scrubbed.detail().len() <= DETAIL_MAX_BYTES && !scrubbed.detail().contains('é'));
    }

    #[test]
    fn http_statuses_share_one_group_and_keep_their_own_label() {
        assert_eq!(FailureKind::HttpStatus(503).label(), "http_503");
        assert_eq!(FailureKind::HttpStatus(503).group(), "http_status");
        assert_eq!(FailureKind::Cancelled.label(), "cancelled");
        assert_eq!(FailureKind::Cancelled.group(), "cancelled");
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
