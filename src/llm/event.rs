//! What one SSE event means, per provider, decided by the full parser.
//!
//! [`Meaning`] is the whole interpretation of one event, independent of the
//! stream's state: which kind of token it carried, whether it ended the
//! stream or reported a finish reason, what usage it reported, whether it
//! was an error. [`ResponseReader`](super::ResponseReader) folds meanings
//! into a timeline; it never looks at JSON itself.
//!
//! Two functions decide a meaning and must agree wherever both answer:
//! - [`full`] (here): serde_json into borrowing, allocation-free visitors.
//!   It is the definition: every rule in [`super::stream`]'s docs is
//!   implemented here, errors and usage included.
//! - [`super::fast::interpret`]: a byte scanner for the common shapes of
//!   token chunks, which answers `None` (ask [`full`]) for anything else.
//!
//! [`interpret`] tries the fast one first. tests/llm_fast_path.rs proves
//! the two agree over recorded streams of every format and a large seeded
//! corpus of generated and mutated events.
//!
//! This module owns the provider serde types; it must not hold stream
//! state, timestamps or anything the Locust side sees.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scrub::Scrubber;
use super::sse::SseEvent;
use crate::outcome::{Failure, FailureKind};
use crate::scenario::Provider;

/// What a token-bearing event carried (answer text wins over a tool call,
/// which wins over reasoning, when one event carries several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Answer,
    Reasoning,
    Tool,
}

/// Usage numbers one event reported (None where the event had none).
/// OpenAI fills `input`, `output`, `cached`, `reasoning`; Anthropic fills
/// `input` (its `input_tokens`, without cache), `output`, `cached`
/// (`cache_read_input_tokens`) and `cache_creation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cached: Option<u64>,
    pub cache_creation: Option<u64>,
    pub reasoning: Option<u64>,
}

/// The interpretation of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meaning {
    /// The event carried a generated token of this kind.
    pub token: Option<TokenKind>,
    /// A finish reason (`finish_reason`, `stop_reason`) was present.
    pub finish: bool,
    /// The end marker (`[DONE]`, `message_stop`): stop reading.
    pub end: bool,
    /// Usage the event reported.
    pub usage: Option<UsageReport>,
    /// An error event or an unparsable event: the request fails.
    pub failure: Option<Failure>,
}

/// The meaning of `ev`: the fast path when it recognises the event, else
/// the full parser. `scrub` cleans excerpts in failures.
pub fn interpret(provider: Provider, ev: SseEvent<'_>, scrub: &Scrubber) -> Meaning {
    match super::fast::interpret(provider, ev) {
        Some(m) => m,
        None => full(provider, ev, scrub),
    }
}

/// The meaning of `ev` by the full parser (the definition).
pub fn full(provider: Provider, ev: SseEvent<'_>, scrub: &Scrubber) -> Meaning {
    match provider {
        Provider::OpenaiChat | Provider::OpenaiCompletions => openai(ev, scrub),
        Provider::Anthropic => anthropic(ev, scrub),
        Provider::Gemini => gemini(ev, scrub),
    }
}

fn failed(failure: Failure) -> Meaning {
    Meaning {
        failure: Some(failure),
        ..Meaning::default()
    }
}

fn invalid(scrub: &Scrubber, e: serde_json::Error, data: &[u8]) -> Meaning {
    failed(Failure::new(
        FailureKind::InvalidResponse,
        "stream event is not valid JSON",
        &format!("{e}: {}", scrub.excerpt(data)),
    ))
}

/// An error event: its `type` (when a string) is the cause in the summary,
/// its message the detail; anything else about it is per-request text.
fn error_event(scrub: &Scrubber, err: Option<&ErrorInfo>, data: &[u8]) -> Meaning {
    let (cause, detail) = match err {
        Some(ErrorInfo { kind, message: Some(m) }) => (kind.clone().unwrap_or_default(), scrub.excerpt(m.as_bytes())),
        Some(ErrorInfo { kind, message: None }) => (kind.clone().unwrap_or_default(), scrub.excerpt(data)),
        None => (String::new(), scrub.excerpt(data)),
    };
    failed(if cause.is_empty() {
        Failure::new(FailureKind::ErrorEvent, "error event in stream", &detail)
    } else {
        Failure::with_cause(
            FailureKind::ErrorEvent,
            "error event in stream",
            &scrub.message(cause),
            &detail,
        )
    })
}

fn openai(ev: SseEvent<'_>, scrub: &Scrubber) -> Meaning {
    let data = ev.data.trim_ascii();
    if data == b"[DONE]" {
        return Meaning {
            end: true,
            ..Meaning::default()
        };
    }
    let chunk: OaChunk = match serde_json::from_slice(data) {
        Ok(c) => c,
        Err(e) => {
            if ev.event == b"error" {
                return error_event(scrub, None, data);
            }
            return invalid(scrub, e, data);
        }
    };
    if let Some(err) = &chunk.error {
        return error_event(scrub, Some(err), data);
    }
    if chunk.object == Some(ObjectTag::Error) || ev.event == b"error" {
        let info = chunk.message.map(|m| ErrorInfo {
            kind: None,
            message: m.0,
        });
        return error_event(scrub, info.as_ref(), data);
    }
    let c = chunk.choices;
    Meaning {
        token: c.token(),
        finish: c.finish,
        end: false,
        usage: chunk.usage.map(|u| UsageReport {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation: None,
            reasoning: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }),
        failure: None,
    }
}

fn anthropic(ev: SseEvent<'_>, scrub: &Scrubber) -> Meaning {
    if ev.event == b"ping" {
        return Meaning::default();
    }
    let data = ev.data.trim_ascii();
    let e: AnEvent = match serde_json::from_slice(data) {
        Ok(e) => e,
        Err(err) => {
            if ev.event == b"error" {
                return error_event(scrub, None, data);
            }
            return invalid(scrub, err, data);
        }
    };
    if e.kind == AnKind::Error || e.error.is_some() || ev.event == b"error" {
        return error_event(scrub, e.error.as_ref(), data);
    }
    let usage = |u: AnUsage| UsageReport {
        input: u.input_tokens,
        output: u.output_tokens,
        cached: u.cache_read_input_tokens,
        cache_creation: u.cache_creation_input_tokens,
        reasoning: None,
    };
    let mut m = Meaning::default();
    match e.kind {
        AnKind::MessageStart => m.usage = e.message.and_then(|m| m.usage).map(usage),
        AnKind::ContentBlockStart => {
            if let Some(b) = e.content_block {
                m.token = if b.text.0 {
                    Some(TokenKind::Answer)
                } else if b.thinking.0 {
                    Some(TokenKind::Reasoning)
                } else {
                    None
                };
            }
        }
        AnKind::ContentBlockDelta => {
            if let Some(d) = e.delta {
                m.token = anthropic_delta_token(d.text.0, d.partial_json.0, d.thinking.0);
            }
        }
        AnKind::MessageDelta => {
            m.usage = e.usage.map(usage);
            m.finish = e.delta.is_some_and(|d| d.stop_reason.0);
        }
        AnKind::MessageStop => m.end = true,
        AnKind::Error | AnKind::Other => {}
    }
    m
}

/// Gemini: every event is one `GenerateContentResponse`. The first
/// candidate's parts carry the tokens (`text` with `thought: true` is
/// reasoning, other `text` the answer, `functionCall` a tool call), its
/// `finishReason` the finish; `usageMetadata` the usage, with output =
/// `candidatesTokenCount + thoughtsTokenCount` (Gemini counts thoughts
/// apart; OpenAI's `completion_tokens` includes reasoning, and so does
/// tokenswarm's output). An `error` object (`{code, message, status}`) or a
/// `promptFeedback.blockReason` fails the request. There is no end marker:
/// the stream ends with the body.
fn gemini(ev: SseEvent<'_>, scrub: &Scrubber) -> Meaning {
    let data = ev.data.trim_ascii();
    let r: GmResponse = match serde_json::from_slice(data) {
        Ok(r) => r,
        Err(e) => {
            if ev.event == b"error" {
                return error_event(scrub, None, data);
            }
            return invalid(scrub, e, data);
        }
    };
    if r.error.is_some() || ev.event == b"error" {
        return error_event(scrub, r.error.as_ref(), data);
    }
    if let Some(GmFeedback {
        block_reason: ShortText(Some(reason)),
    }) = r.prompt_feedback
    {
        let info = ErrorInfo {
            kind: Some(reason),
            message: Some("the prompt was blocked (promptFeedback.blockReason)".into()),
        };
        return error_event(scrub, Some(&info), data);
    }
    let c = r.candidates;
    Meaning {
        token: openai_token(c.answer, c.tool, c.reasoning),
        finish: c.finish,
        end: false,
        usage: r.usage_metadata.map(|u| UsageReport {
            input: u.prompt_token_count,
            output: match (u.candidates_token_count, u.thoughts_token_count) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            },
            cached: u.cached_content_token_count,
            cache_creation: None,
            reasoning: u.thoughts_token_count,
        }),
        failure: None,
    }
}

/// The token kind of a `content_block_delta` (shared with the fast path).
pub(super) fn anthropic_delta_token(text: bool, partial_json: bool, thinking: bool) -> Option<TokenKind> {
    if text {
        Some(TokenKind::Answer)
    } else if partial_json {
        Some(TokenKind::Tool)
    } else if thinking {
        Some(TokenKind::Reasoning)
    } else {
        None
    }
}

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
#[derive(Default)]
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
            /// Gemini's (Google RPC) name of the error, the cause when no `type`.
            Status,
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
                let mut status = None;
                while let Some(k) = map.next_key::<Key>()? {
                    match k {
                        Key::Type => info.kind = map.next_value::<ShortText>()?.0,
                        Key::Message => info.message = map.next_value::<ShortText>()?.0,
                        Key::Status => status = map.next_value::<ShortText>()?.0,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if info.kind.is_none() {
                    info.kind = status;
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

impl Choices {
    fn token(&self) -> Option<TokenKind> {
        openai_token(self.answer, self.tool, self.reasoning)
    }
}

/// The token kind of an OpenAI chunk (shared with the fast path).
pub(super) fn openai_token(answer: bool, tool: bool, reasoning: bool) -> Option<TokenKind> {
    if answer {
        Some(TokenKind::Answer)
    } else if tool {
        Some(TokenKind::Tool)
    } else if reasoning {
        Some(TokenKind::Reasoning)
    } else {
        None
    }
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

// ---------------------------------------------------------------- Gemini

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmResponse {
    #[serde(default)]
    candidates: GmCandidates,
    #[serde(default)]
    usage_metadata: Option<GmUsage>,
    #[serde(default)]
    prompt_feedback: Option<GmFeedback>,
    #[serde(default)]
    error: Option<ErrorInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmFeedback {
    #[serde(default)]
    block_reason: ShortText,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmCandidate {
    #[serde(default)]
    content: Option<GmContent>,
    #[serde(default)]
    finish_reason: NonEmpty,
}

#[derive(Deserialize)]
struct GmContent {
    #[serde(default)]
    parts: GmParts,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmPart {
    #[serde(default)]
    text: NonEmpty,
    #[serde(default)]
    thought: IsTrue,
    #[serde(default)]
    function_call: NonEmpty,
}

/// What the first candidate carried, folded without collecting arrays
/// (`null` or absent = nothing; later candidates are skipped).
#[derive(Default)]
struct GmCandidates {
    answer: bool,
    reasoning: bool,
    tool: bool,
    finish: bool,
}

impl<'de> Deserialize<'de> for GmCandidates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GmCandidates, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GmCandidates;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of candidates or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<GmCandidates, E> {
                Ok(GmCandidates::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<GmCandidates, E> {
                Ok(GmCandidates::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GmCandidates, A::Error> {
                let mut c = GmCandidates::default();
                if let Some(first) = seq.next_element::<GmCandidate>()? {
                    if let Some(content) = first.content {
                        let p = content.parts;
                        (c.answer, c.reasoning, c.tool) = (p.answer, p.reasoning, p.tool);
                    }
                    c.finish = first.finish_reason.0;
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(c)
            }
        }
        d.deserialize_any(V)
    }
}

/// The kinds of token the parts of one candidate carried.
#[derive(Default)]
struct GmParts {
    answer: bool,
    reasoning: bool,
    tool: bool,
}

impl<'de> Deserialize<'de> for GmParts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GmParts, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GmParts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of parts or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<GmParts, E> {
                Ok(GmParts::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<GmParts, E> {
                Ok(GmParts::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GmParts, A::Error> {
                let mut p = GmParts::default();
                while let Some(part) = seq.next_element::<GmPart>()? {
                    if part.text.0 {
                        if part.thought.0 {
                            p.reasoning = true;
                        } else {
                            p.answer = true;
                        }
                    }
                    p.tool |= part.function_call.0;
                }
                Ok(p)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a JSON value is `true`; anything else (absent, null, other
/// types) is not. Never fails, never allocates.
#[derive(Default, Clone, Copy)]
struct IsTrue(bool);

impl<'de> Deserialize<'de> for IsTrue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IsTrue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsTrue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<IsTrue, E> {
                Ok(IsTrue(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<IsTrue, E> {
                Ok(IsTrue(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsTrue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsTrue(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsTrue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsTrue(false))
            }
        }
        d.deserialize_any(V)
    }
}
