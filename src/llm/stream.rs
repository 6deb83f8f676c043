//! Interpretation of a response stream, per provider, into a token timeline.
//!
//! [`ResponseReader`] owns an [`SseParser`] and turns each event into facts:
//! did it carry a generated token (answer text, reasoning, tool call), did
//! it end the stream (`[DONE]`, `message_stop`, a finish reason), what usage
//! did the server report, was it an error. The caller passes the arrival
//! time of every network chunk; every event that chunk completes is stamped
//! with that time, so timestamps never include JSON parsing and an event
//! split over two chunks counts from the chunk that completed it.
//!
//! # Definitions (README.md, "Metrics", is the user-facing version)
//! - A *token-bearing chunk* is one SSE event with a non-empty
//!   `delta.content`, `delta.reasoning_content`, `delta.reasoning`,
//!   non-empty `delta.tool_calls` or `choices[].text` (OpenAI), or a
//!   `content_block_delta` with non-empty `text`, `thinking` or
//!   `partial_json` (Anthropic). Role-only chunks, finish chunks, usage
//!   chunks, `signature_delta`, pings and comments are not.
//! - ITL is the gap between consecutive token-bearing events; events that
//!   arrived in the same network chunk have a gap of 0 (that is what the
//!   client saw), so `itl_us.len() == output_chunks - 1`.
//! - Usage: OpenAI `prompt_tokens`, `completion_tokens`,
//!   `prompt_tokens_details.cached_tokens`,
//!   `completion_tokens_details.reasoning_tokens`, last report wins (vLLM's
//!   `continuous_usage_stats` sends one per chunk). Anthropic: input =
//!   `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`
//!   (Anthropic's `input_tokens` excludes cached reads), cached =
//!   `cache_read_input_tokens`, output = the latest cumulative
//!   `output_tokens` (from `message_delta`, else `message_start`).
//!   Gemini: input = `promptTokenCount` (it includes cached content),
//!   cached = `cachedContentTokenCount`, output = `candidatesTokenCount +
//!   thoughtsTokenCount`, reasoning = `thoughtsTokenCount`, last report wins.
//! - Gemini token-bearing events: a `GenerateContentResponse` whose first
//!   candidate has a part with non-empty `text` (reasoning when the part
//!   has `thought: true`) or a `functionCall`; `finishReason` is the
//!   finish. Gemini has no end marker: a stream with a finish reason that
//!   then ends is complete.
//!
//! # Verdict ([`StreamSummary::verdict`])
//! In order: an `error` event or an `error` object in a chunk (vLLM sends
//! HTTP 200 then `data: {"error":..}`) is `ErrorEvent`; an event whose data
//! is not the expected JSON is `InvalidResponse`; a stream that ended without
//! `[DONE]`, `message_stop` or a finish reason is `Truncated`; a stream with
//! neither answer text nor a tool call is `EmptyAnswer` (reasoning alone is
//! not an answer: the user got nothing to read).
//!
//! Unknown fields and events are ignored; the simulator's `sim` object is
//! skipped like any unknown field. What an event means is decided in
//! [`super::event`] (the full serde parser, the definition) after the byte
//! scanner of [`super::fast`] has tried (it decides plain token chunks
//! without serde and answers "ask the full parser" for anything else).
//! Neither allocates per event, except serde_json's scratch buffer for a
//! string with escapes and the rare error paths; the only growing buffer
//! is `itl_us`, pre-sized from the expected output length up to
//! [`ITL_PRESIZE`] gaps and grown (doubling) past that
//! (tests/llm_sse.rs counts the allocations of a 68-event stream). The cap
//! on the pre-size is a memory bound: an open stream holds its reader for
//! its whole life, so pre-sizing 1,000-token answers would reserve 4 KB per
//! stream up front, a quarter of the 16 KiB an open stream may cost
//! (tests/stream_memory.rs); a growing buffer only holds the gaps seen.
//!
//! # Bounds
//! - The SSE parser bounds lines and events ([`super::sse`]); crossing a
//!   bound fails the request as `SseLineTooLong` / `SseEventTooLarge`.
//! - `itl_us` keeps at most [`MAX_ITL_SAMPLES`] gaps (64 KiB); later gaps
//!   are summarised in [`ItlTail`] (count, sum, max), so counts stay exact
//!   and a stream of a million tiny events costs no more memory than one of
//!   16 Ki. 16 Ki chunks is more than the output of nearly every request.
//! - Error objects are read into excerpts while parsing (never into a
//!   `serde_json::Value`), and every excerpt goes through the scenario's
//!   [`Scrubber`] before it is stored.

use tokio::time::Instant;

use super::event::{self, Meaning, TokenKind, UsageReport};
use super::scrub::Scrubber;
use super::sse::{SseError, SseParser};
use crate::outcome::{Failure, FailureKind, ItlTail, Usage};
use crate::scenario::Provider;

/// Whether the caller should keep reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The stream reached its end marker or a fatal error: stop reading.
    Stop,
}

/// Everything a stream showed, as instants; the caller turns them into
/// durations from its own send time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamSummary {
    /// First token-bearing event (answer, reasoning or tool call).
    pub first_token: Option<Instant>,
    /// First event with answer text.
    pub first_answer: Option<Instant>,
    /// Last token-bearing event.
    pub last_token: Option<Instant>,
    /// Gaps between consecutive token-bearing events, µs: the first
    /// [`MAX_ITL_SAMPLES`]; the rest are in `itl_tail`.
    pub itl_us: Vec<u32>,
    /// Gaps beyond [`MAX_ITL_SAMPLES`], summarised.
    pub itl_tail: ItlTail,
    /// Token-bearing events.
    pub output_chunks: u64,
    /// Events with answer text.
    pub answer_chunks: u64,
    /// Events with reasoning text only.
    pub reasoning_chunks: u64,
    /// Events with a tool-call fragment and no answer text.
    pub tool_chunks: u64,
    /// All dispatched SSE events, including non-token ones.
    pub events: u64,
    /// Server-reported usage.
    pub usage: Usage,
    /// A finish reason (`finish_reason`, `stop_reason`) was seen.
    pub finish_reason: bool,
    /// The end marker (`[DONE]`, `message_stop`) was seen.
    pub done: bool,
    /// Error event or unparsable event seen mid-stream.
    pub failure: Option<Failure>,
    /// The body ended inside an unterminated event.
    pub partial_event: bool,
}

impl StreamSummary {
    /// The failure this stream represents once the body has ended, if any
    /// (see the module docs for the rules and their order).
    pub fn verdict(&self) -> Option<Failure> {
        if let Some(f) = &self.failure {
            return Some(f.clone());
        }
        if !(self.done || self.finish_reason) {
            let tail = if self.partial_event { ", inside an event" } else { "" };
            return Some(Failure::new(
                FailureKind::Truncated,
                "stream ended without an end marker or finish reason",
                &format!("after {} events{tail}", self.events),
            ));
        }
        if self.answer_chunks + self.tool_chunks == 0 {
            return Some(Failure::new(
                FailureKind::EmptyAnswer,
                "stream ended properly but carried no answer",
                &format!("{} reasoning chunks", self.reasoning_chunks),
            ));
        }
        None
    }
}

/// Anthropic reports input in three parts that may be updated separately.
#[derive(Debug, Clone, Copy, Default)]
struct AnthropicInput {
    input: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

/// Most ITL gaps one request keeps individually (4 bytes each).
pub const MAX_ITL_SAMPLES: usize = 16 * 1024;
/// ITL gaps reserved up front at most (256 bytes): enough for the common
/// answer lengths without a reallocation, little for a long open stream.
pub const ITL_PRESIZE: usize = 64;

/// SSE parser + provider interpretation for one response body.
#[derive(Debug)]
pub struct ResponseReader {
    parser: SseParser,
    provider: Provider,
    summary: StreamSummary,
    anthropic: AnthropicInput,
    stopped: bool,
    scrub: Scrubber,
}

impl ResponseReader {
    /// `expected_tokens` pre-sizes the ITL buffer (use the output length;
    /// at most [`ITL_PRESIZE`] gaps are reserved).
    pub fn new(provider: Provider, expected_tokens: usize) -> ResponseReader {
        ResponseReader::with_parser(provider, expected_tokens, SseParser::new())
    }

    /// Like [`ResponseReader::new`] with a given parser (other bounds).
    pub fn with_parser(provider: Provider, expected_tokens: usize, parser: SseParser) -> ResponseReader {
        ResponseReader {
            parser,
            provider,
            summary: StreamSummary {
                itl_us: Vec::with_capacity(expected_tokens.min(ITL_PRESIZE)),
                ..StreamSummary::default()
            },
            anthropic: AnthropicInput::default(),
            stopped: false,
            scrub: Scrubber::default(),
        }
    }

    /// Scrubs failure excerpts with `scrub` (the scenario's secrets).
    pub fn scrubbing(mut self, scrub: Scrubber) -> ResponseReader {
        self.scrub = scrub;
        self
    }

    /// Feeds one network chunk that arrived at `at`.
    pub fn feed(&mut self, chunk: &[u8], at: Instant) -> Flow {
        if self.stopped {
            return Flow::Stop;
        }
        let ResponseReader {
            parser,
            provider,
            summary,
            anthropic,
            stopped,
            scrub,
        } = self;
        let fed = parser.feed(chunk, |ev| {
            if *stopped {
                return;
            }
            summary.events = summary.events.saturating_add(1);
            let meaning = event::interpret(*provider, ev, scrub);
            *stopped = apply(summary, anthropic, *provider, meaning, at) == Flow::Stop;
        });
        if let Err(e) = fed
            && !self.stopped
        {
            let kind = match e {
                SseError::LineTooLong { .. } => FailureKind::SseLineTooLong,
                SseError::EventTooLarge { .. } => FailureKind::SseEventTooLarge,
            };
            let what = match kind {
                FailureKind::SseLineTooLong => "an SSE line is longer than the client's bound",
                _ => "an SSE event is larger than the client's bound",
            };
            self.summary.failure = Some(Failure::new(kind, what, &e.to_string()));
            self.stopped = true;
        }
        if self.stopped { Flow::Stop } else { Flow::Continue }
    }

    /// Bytes the SSE parser holds (bounded), for tests.
    pub fn buffered_capacity(&self) -> usize {
        self.parser.buffered_capacity()
    }

    /// The facts so far.
    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }

    /// Ends the body and returns the facts.
    pub fn finish(mut self) -> StreamSummary {
        self.summary.partial_event = self.parser.finish() && !self.stopped;
        self.summary
    }
}

fn token(s: &mut StreamSummary, at: Instant, kind: TokenKind) {
    match s.last_token {
        Some(prev) => {
            let gap = at.saturating_duration_since(prev).as_micros().min(u32::MAX as u128) as u32;
            if s.itl_us.len() < MAX_ITL_SAMPLES {
                s.itl_us.push(gap);
            } else {
                s.itl_tail.add(gap);
            }
        }
        None => s.first_token = Some(at),
    }
    s.last_token = Some(at);
    s.output_chunks += 1;
    match kind {
        TokenKind::Answer => {
            s.answer_chunks += 1;
            if s.first_answer.is_none() {
                s.first_answer = Some(at);
            }
        }
        TokenKind::Reasoning => s.reasoning_chunks += 1,
        TokenKind::Tool => s.tool_chunks += 1,
    }
}

/// Folds one event's meaning into the summary.
fn apply(s: &mut StreamSummary, acc: &mut AnthropicInput, provider: Provider, m: Meaning, at: Instant) -> Flow {
    if let Some(f) = m.failure {
        s.failure = Some(f);
        return Flow::Stop;
    }
    if let Some(kind) = m.token {
        token(s, at, kind);
    }
    s.finish_reason |= m.finish;
    if let Some(u) = m.usage {
        match provider {
            Provider::OpenaiChat | Provider::OpenaiCompletions | Provider::Gemini => {
                s.usage.input_tokens = u.input.or(s.usage.input_tokens);
                s.usage.output_tokens = u.output.or(s.usage.output_tokens);
                s.usage.cached_tokens = u.cached.or(s.usage.cached_tokens);
                s.usage.reasoning_tokens = u.reasoning.or(s.usage.reasoning_tokens);
            }
            Provider::Anthropic => anthropic_usage(s, acc, u),
        }
    }
    if m.end {
        s.done = true;
        return Flow::Stop;
    }
    Flow::Continue
}

fn anthropic_usage(s: &mut StreamSummary, acc: &mut AnthropicInput, u: UsageReport) {
    acc.input = u.input.or(acc.input);
    acc.cache_read = u.cached.or(acc.cache_read);
    acc.cache_creation = u.cache_creation.or(acc.cache_creation);
    if acc.input.is_some() || acc.cache_read.is_some() || acc.cache_creation.is_some() {
        s.usage.input_tokens = Some(
            acc.input
                .unwrap_or(0)
                .saturating_add(acc.cache_read.unwrap_or(0))
                .saturating_add(acc.cache_creation.unwrap_or(0)),
        );
    }
    s.usage.cached_tokens = acc.cache_read.or(s.usage.cached_tokens);
    s.usage.output_tokens = u.output.or(s.usage.output_tokens);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(provider: Provider, text: &str) -> StreamSummary {
        let mut r = ResponseReader::new(provider, 8);
        r.feed(text.as_bytes(), Instant::now());
        r.finish()
    }

    #[test]
    fn openai_role_content_finish_usage_done() {
        let s = read(
            Provider::OpenaiChat,
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
             data: {\"choices\":[{\"delta\":{\"content\":\" a\\n\"},\"finish_reason\":null}],\"usage\":null}\n\n\
             data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
             data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\
             \"prompt_tokens_details\":{\"cached_tokens\":2},\"completion_tokens_details\":null},\"sim\":{\"x\":[1]}}\n\n\
             data: [DONE]\n\n",
        );
        assert_eq!(s.output_chunks, 1);
        assert!(s.done && s.finish_reason);
        assert_eq!(
            s.usage,
            Usage {
                input_tokens: Some(5),
                output_tokens: Some(1),
                cached_tokens: Some(2),
                reasoning_tokens: None
            }
        );
        assert_eq!(s.verdict(), None);
    }

    #[test]
    fn vllm_error_after_200_and_top_level_error_object() {
        let s = read(
            Provider::OpenaiChat,
            "data: {\"error\":{\"message\":\"boom\",\"code\":500}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(s.verdict().unwrap().kind(), FailureKind::ErrorEvent);
        assert!(s.verdict().unwrap().message().contains("boom"));
        let s = read(
            Provider::OpenaiCompletions,
            "data: {\"object\":\"error\",\"message\":\"bad\"}\n\n",
        );
        assert_eq!(s.verdict().unwrap().kind(), FailureKind::ErrorEvent);
    }

    #[test]
    fn anthropic_usage_sums_cache_parts() {
        let s = read(
            Provider::Anthropic,
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\
             \"cache_read_input_tokens\":16,\"cache_creation_input_tokens\":1,\"output_tokens\":1}}}\n\n\
             event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n\
             event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":7}}\n\n\
             event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(s.usage.input_tokens, Some(20));
        assert_eq!(s.usage.cached_tokens, Some(16));
        assert_eq!(s.usage.output_tokens, Some(7));
        assert_eq!(s.verdict(), None);
    }

    #[test]
    fn reasoning_only_is_empty_answer_and_no_end_is_truncated() {
        let s = read(
            Provider::OpenaiChat,
            "data: {\"choices\":[{\"delta\":{\"reasoning\":\"hm\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        );
        assert_eq!(s.output_chunks, 1);
        assert_eq!(s.first_answer, None);
        assert_eq!(s.verdict().unwrap().kind(), FailureKind::EmptyAnswer);
        let s = read(
            Provider::OpenaiChat,
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"cho",
        );
        let v = s.verdict().unwrap();
        assert_eq!(v.kind(), FailureKind::Truncated);
        assert!(v.detail().contains("inside an event"), "{}", v.message());
    }
}
