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
//! # Definitions (see ../shared/notes/llm-metrics.md)
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
//! skipped like any unknown field. Parsing borrows from the event data and
//! allocates nothing per event, except serde_json's scratch buffer for a
//! string with escapes (e.g. `\n` in content) and the rare error paths; the
//! only growing buffer is `itl_us`, pre-sized from the expected output
//! length (tests/llm_sse.rs counts: 6 allocations for a 68-event stream).
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

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::time::Instant;

use super::scrub::Scrubber;
use super::sse::{SseError, SseEvent, SseParser};
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Answer,
    Reasoning,
    Tool,
}

impl ResponseReader {
    /// `expected_tokens` pre-sizes the ITL buffer (use the output length).
    pub fn new(provider: Provider, expected_tokens: usize) -> ResponseReader {
        ResponseReader::with_parser(provider, expected_tokens, SseParser::new())
    }

    /// Like [`ResponseReader::new`] with a given parser (other bounds).
    pub fn with_parser(provider: Provider, expected_tokens: usize, parser: SseParser) -> ResponseReader {
        ResponseReader {
            parser,
            provider,
            summary: StreamSummary {
                itl_us: Vec::with_capacity(expected_tokens.min(MAX_ITL_SAMPLES)),
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
            summary.events += 1;
            let flow = match provider {
                Provider::OpenaiChat | Provider::OpenaiCompletions => openai_event(summary, scrub, ev, at),
                Provider::Anthropic => anthropic_event(summary, anthropic, scrub, ev, at),
            };
            *stopped = flow == Flow::Stop;
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
            fail(&mut self.summary, Failure::new(kind, what, &e.to_string()));
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

fn fail(s: &mut StreamSummary, failure: Failure) -> Flow {
    s.failure = Some(failure);
    Flow::Stop
}

fn invalid(s: &mut StreamSummary, scrub: &Scrubber, e: serde_json::Error, data: &[u8]) -> Flow {
    fail(
        s,
        Failure::new(
            FailureKind::InvalidResponse,
            "stream event is not valid JSON",
            &format!("{e}: {}", scrub.excerpt(data)),
        ),
    )
}

/// An error event: its `type` (when a string) is the cause in the summary,
/// its message the detail; anything else about it is per-request text.
fn error_event(s: &mut StreamSummary, scrub: &Scrubber, err: Option<&ErrorInfo>, data: &[u8]) -> Flow {
    let (cause, detail) = match err {
        Some(ErrorInfo { kind, message: Some(m) }) => (kind.clone().unwrap_or_default(), scrub.excerpt(m.as_bytes())),
        Some(ErrorInfo { kind, message: None }) => (kind.clone().unwrap_or_default(), scrub.excerpt(data)),
        None => (String::new(), scrub.excerpt(data)),
    };
    fail(
        s,
        if cause.is_empty() {
            Failure::new(FailureKind::ErrorEvent, "error event in stream", &detail)
        } else {
            Failure::with_cause(
                FailureKind::ErrorEvent,
                "error event in stream",
                &scrub.message(cause),
                &detail,
            )
        },
    )
}

/// Longest text kept from one field of an error object while parsing; the
/// excerpt then keeps fewer characters still.
const ERROR_TEXT_BYTES: usize = 1024;

/// What an `error` value (a string, or an object with `type` and
/// `message`) said. Read while parsing, with each text cut to
/// [`ERROR_TEXT_BYTES`], so a huge error object costs no more than that.
#[derive(Default)]
struct ErrorInfo {
    kind: Option<String>,
    message: Option<String>,
}

/// A JSON string cut to [`ERROR_TEXT_BYTES`]; any other value is `None`.
struct ShortText(Option<String>);

fn short(v: &str) -> String {
    let mut end = v.len().min(ERROR_TEXT_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

impl<'de> Deserialize<'de> for ShortText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShortText, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShortText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShortText, E> {
                Ok(ShortText(Some(short(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShortText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ShortText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShortText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ShortText(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ErrorInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ErrorInfo, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Key {
            Type,
            Message,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ErrorInfo;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an error string or object")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ErrorInfo, E> {
                Ok(ErrorInfo {
                    kind: None,
                    message: Some(short(v)),
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ErrorInfo, E> {
                Ok(ErrorInfo::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ErrorInfo, E> {
                Ok(ErrorInfo::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ErrorInfo, E> {
                Ok(ErrorInfo::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ErrorInfo, E> {
                Ok(ErrorInfo::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ErrorInfo, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ErrorInfo::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ErrorInfo, A::Error> {
                let mut info = ErrorInfo::default();
                while let Some(k) = map.next_key::<Key>()? {
                    match k {
                        Key::Type => info.kind = map.next_value::<ShortText>()?.0,
                        Key::Message => info.message = map.next_value::<ShortText>()?.0,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(info)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- OpenAI

#[derive(Deserialize)]
struct OaChunk {
    #[serde(default)]
    choices: Choices,
    #[serde(default)]
    usage: Option<OaUsage>,
    #[serde(default)]
    error: Option<ErrorInfo>,
    #[serde(default)]
    object: Option<ObjectTag>,
    #[serde(default)]
    message: Option<ShortText>,
}

#[derive(Deserialize, PartialEq, Eq)]
enum ObjectTag {
    #[serde(rename = "error")]
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct OaChoice {
    #[serde(default)]
    delta: Option<OaDelta>,
    /// Legacy completions.
    #[serde(default)]
    text: NonEmpty,
    #[serde(default)]
    finish_reason: NonEmpty,
}

#[derive(Deserialize)]
struct OaDelta {
    #[serde(default)]
    content: NonEmpty,
    #[serde(default)]
    reasoning_content: NonEmpty,
    #[serde(default)]
    reasoning: NonEmpty,
    #[serde(default)]
    tool_calls: NonEmpty,
}

#[derive(Deserialize)]
struct OaUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<OaPromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Deserialize)]
struct OaPromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OaCompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// What the `choices` array of one chunk carried, folded without
/// collecting the array (`null` or absent = nothing).
#[derive(Default)]
struct Choices {
    answer: bool,
    reasoning: bool,
    tool: bool,
    finish: bool,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Choices, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of choices or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut c = Choices::default();
                while let Some(choice) = seq.next_element::<OaChoice>()? {
                    c.answer |= choice.text.0;
                    if let Some(d) = choice.delta {
                        c.answer |= d.content.0;
                        c.reasoning |= d.reasoning_content.0 || d.reasoning.0;
                        c.tool |= d.tool_calls.0;
                    }
                    c.finish |= choice.finish_reason.0;
                }
                Ok(c)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a JSON value is "present": a non-empty string, array or object,
/// or any number/bool; `null` and absent are not. Never allocates.
#[derive(Default, Clone, Copy)]
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NonEmpty, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty, A::Error> {
                let first = seq.next_element::<IgnoredAny>()?.is_some();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NonEmpty(first))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NonEmpty, A::Error> {
                let first = map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some();
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NonEmpty(first))
            }
        }
        d.deserialize_any(V)
    }
}

fn openai_event(s: &mut StreamSummary, scrub: &Scrubber, ev: SseEvent<'_>, at: Instant) -> Flow {
    let data = ev.data.trim_ascii();
    if data == b"[DONE]" {
        s.done = true;
        return Flow::Stop;
    }
    let chunk: OaChunk = match serde_json::from_slice(data) {
        Ok(c) => c,
        Err(e) => {
            if ev.event == b"error" {
                return error_event(s, scrub, None, data);
            }
            return invalid(s, scrub, e, data);
        }
    };
    if let Some(err) = &chunk.error {
        return error_event(s, scrub, Some(err), data);
    }
    if chunk.object == Some(ObjectTag::Error) || ev.event == b"error" {
        let info = chunk.message.map(|m| ErrorInfo {
            kind: None,
            message: m.0,
        });
        return error_event(s, scrub, info.as_ref(), data);
    }
    let c = chunk.choices;
    if c.answer {
        token(s, at, TokenKind::Answer);
    } else if c.tool {
        token(s, at, TokenKind::Tool);
    } else if c.reasoning {
        token(s, at, TokenKind::Reasoning);
    }
    s.finish_reason |= c.finish;
    if let Some(u) = chunk.usage {
        let usage = &mut s.usage;
        usage.input_tokens = u.prompt_tokens.or(usage.input_tokens);
        usage.output_tokens = u.completion_tokens.or(usage.output_tokens);
        if let Some(cached) = u.prompt_tokens_details.and_then(|d| d.cached_tokens) {
            usage.cached_tokens = Some(cached);
        }
        if let Some(r) = u.completion_tokens_details.and_then(|d| d.reasoning_tokens) {
            usage.reasoning_tokens = Some(r);
        }
    }
    Flow::Continue
}

// ------------------------------------------------------------- Anthropic

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AnKind {
    MessageStart,
    ContentBlockStart,
    ContentBlockDelta,
    MessageDelta,
    MessageStop,
    Error,
    #[default]
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct AnEvent {
    #[serde(rename = "type", default)]
    kind: AnKind,
    #[serde(default)]
    message: Option<AnMessage>,
    #[serde(default)]
    content_block: Option<AnBlock>,
    #[serde(default)]
    delta: Option<AnDelta>,
    #[serde(default)]
    usage: Option<AnUsage>,
    #[serde(default)]
    error: Option<ErrorInfo>,
}

#[derive(Deserialize)]
struct AnMessage {
    #[serde(default)]
    usage: Option<AnUsage>,
}

#[derive(Deserialize)]
struct AnBlock {
    #[serde(default)]
    text: NonEmpty,
    #[serde(default)]
    thinking: NonEmpty,
}

#[derive(Deserialize)]
struct AnDelta {
    #[serde(default)]
    text: NonEmpty,
    #[serde(default)]
    thinking: NonEmpty,
    #[serde(default)]
    partial_json: NonEmpty,
    #[serde(default)]
    stop_reason: NonEmpty,
}

#[derive(Deserialize)]
struct AnUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

fn anthropic_usage(s: &mut StreamSummary, acc: &mut AnthropicInput, u: AnUsage) {
    acc.input = u.input_tokens.or(acc.input);
    acc.cache_read = u.cache_read_input_tokens.or(acc.cache_read);
    acc.cache_creation = u.cache_creation_input_tokens.or(acc.cache_creation);
    if acc.input.is_some() || acc.cache_read.is_some() || acc.cache_creation.is_some() {
        s.usage.input_tokens =
            Some(acc.input.unwrap_or(0) + acc.cache_read.unwrap_or(0) + acc.cache_creation.unwrap_or(0));
    }
    s.usage.cached_tokens = acc.cache_read.or(s.usage.cached_tokens);
    s.usage.output_tokens = u.output_tokens.or(s.usage.output_tokens);
}

fn anthropic_event(
    s: &mut StreamSummary,
    acc: &mut AnthropicInput,
    scrub: &Scrubber,
    ev: SseEvent<'_>,
    at: Instant,
) -> Flow {
    if ev.event == b"ping" {
        return Flow::Continue;
    }
    let data = ev.data.trim_ascii();
    let e: AnEvent = match serde_json::from_slice(data) {
        Ok(e) => e,
        Err(err) => {
            if ev.event == b"error" {
                return error_event(s, scrub, None, data);
            }
            return invalid(s, scrub, err, data);
        }
    };
    if e.kind == AnKind::Error || e.error.is_some() || ev.event == b"error" {
        return error_event(s, scrub, e.error.as_ref(), data);
    }
    match e.kind {
        AnKind::MessageStart => {
            if let Some(u) = e.message.and_then(|m| m.usage) {
                anthropic_usage(s, acc, u);
            }
        }
        AnKind::ContentBlockStart => {
            if let Some(b) = e.content_block {
                if b.text.0 {
                    token(s, at, TokenKind::Answer);
                } else if b.thinking.0 {
                    token(s, at, TokenKind::Reasoning);
                }
            }
        }
        AnKind::ContentBlockDelta => {
            if let Some(d) = e.delta {
                if d.text.0 {
                    token(s, at, TokenKind::Answer);
                } else if d.partial_json.0 {
                    token(s, at, TokenKind::Tool);
                } else if d.thinking.0 {
                    token(s, at, TokenKind::Reasoning);
                }
            }
        }
        AnKind::MessageDelta => {
            if let Some(u) = e.usage {
                anthropic_usage(s, acc, u);
            }
            if e.delta.is_some_and(|d| d.stop_reason.0) {
                s.finish_reason = true;
            }
        }
        AnKind::MessageStop => {
            s.done = true;
            return Flow::Stop;
        }
        AnKind::Error | AnKind::Other => {}
    }
    Flow::Continue
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
