//! The answer text of a streamed response, kept for multi-turn sessions.
//!
//! A session's next turn sends the server's earlier answers back, so those
//! answers must be kept as text. [`super::stream`] deliberately keeps no
//! text (single requests need none, and it allocates nothing per event);
//! this reader parses the same bytes a second time with its own
//! [`SseParser`], only for requests of a session, and appends the answer
//! text of each event:
//! - openai-chat: `choices[0].delta.content`;
//! - openai-completions: `choices[0].text`;
//! - anthropic: `content_block_delta` events with a `text_delta`'s `text`;
//! - gemini: the `text` of `candidates[0].content.parts[]` not marked
//!   `thought`.
//!
//! Reasoning (`reasoning_content`, `thinking`) is not answer text: chat
//! clients do not send it back. Unparsable events are skipped here; the
//! verdict on the stream is [`super::stream`]'s.
//!
//! # Bounds
//! At most [`MAX_ANSWER_BYTES`] of text are kept per answer; the rest is
//! dropped and [`AnswerText::truncated`] says so (the next turn then sends
//! less than the server generated, and the cache-hit figures of that
//! session are lower than the server could give). The SSE parser has its
//! usual line and event bounds.

use std::borrow::Cow;

use serde::Deserialize;

use super::sse::SseParser;
use crate::scenario::Provider;

/// Most answer bytes kept per response.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Collects the answer text of one response.
#[derive(Debug)]
pub struct AnswerText {
    provider: Provider,
    parser: SseParser,
    text: String,
    truncated: bool,
}

#[derive(Deserialize)]
struct OpenAiChunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<OpenAiChoice<'a>>,
}

#[derive(Deserialize)]
struct OpenAiChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<OpenAiDelta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OpenAiDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct GeminiChunk<'a> {
    #[serde(borrow, default)]
    candidates: Vec<GeminiCandidate<'a>>,
}

#[derive(Deserialize)]
struct GeminiCandidate<'a> {
    #[serde(borrow, default)]
    content: Option<GeminiContent<'a>>,
}

#[derive(Deserialize)]
struct GeminiContent<'a> {
    #[serde(borrow, default)]
    parts: Vec<GeminiPart<'a>>,
}

#[derive(Deserialize)]
struct GeminiPart<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

impl AnswerText {
    pub fn new(provider: Provider) -> AnswerText {
        AnswerText {
            provider,
            parser: SseParser::new(),
            text: String::new(),
            truncated: false,
        }
    }

    /// Feeds one network chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let provider = self.provider;
        let (text, truncated) = (&mut self.text, &mut self.truncated);
        let _ = self.parser.feed(chunk, |ev| {
            if let Some(piece) = piece(provider, ev.data) {
                push_bounded(text, truncated, &piece);
            }
        });
    }

    /// The answer so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether text was dropped past [`MAX_ANSWER_BYTES`].
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The answer, consuming the reader.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// The answer text one event carries, if any.
fn piece(provider: Provider, data: &[u8]) -> Option<Cow<'_, str>> {
    match provider {
        Provider::OpenaiChat | Provider::OpenaiCompletions => {
            let chunk: OpenAiChunk = serde_json::from_slice(data).ok()?;
            let choice = chunk.choices.into_iter().next()?;
            match provider {
                Provider::OpenaiChat => choice.delta?.content,
                _ => choice.text,
            }
        }
        Provider::Anthropic => {
            let ev: AnthropicEvent = serde_json::from_slice(data).ok()?;
            if ev.kind.as_deref() != Some("content_block_delta") {
                return None;
            }
            let delta = ev.delta?;
            if delta.kind.as_deref() != Some("text_delta") {
                return None;
            }
            delta.text
        }
        Provider::Gemini => {
            let chunk: GeminiChunk = serde_json::from_slice(data).ok()?;
            let parts = chunk.candidates.into_iter().next()?.content?.parts;
            let mut texts = parts.into_iter().filter(|p| !p.thought).filter_map(|p| p.text);
            let first = texts.next()?;
            match texts.next() {
                None => Some(first),
                Some(second) => {
                    let mut all = first.into_owned();
                    all.push_str(&second);
                    texts.for_each(|t| all.push_str(&t));
                    Some(Cow::Owned(all))
                }
            }
        }
    }
}

fn push_bounded(text: &mut String, truncated: &mut bool, piece: &str) {
    if *truncated {
        return;
    }
    let room = MAX_ANSWER_BYTES - text.len();
    if piece.len() <= room {
        text.push_str(piece);
        return;
    }
    let mut end = room;
    while !piece.is_char_boundary(end) {
        end -= 1;
    }
    text.push_str(&piece[..end]);
    *truncated = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(provider: Provider, stream: &str, split: usize) -> AnswerText {
        let mut a = AnswerText::new(provider);
        let (x, y) = stream.as_bytes().split_at(split.min(stream.len()));
        a.feed(x);
        a.feed(y);
        a
    }

    #[test]
    fn answer_text_per_provider_at_every_split() {
        let chat = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"reasoning_content\":\" think\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\" tok\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\" \\\"q\\\"\"}}]}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n";
        let completions = "data: {\"choices\":[{\"text\":\" tok\"}]}\n\ndata: {\"choices\":[{\"text\":\" \\\"q\\\"\"}]}\n\ndata: [DONE]\n\n";
        let anthropic = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\" tok\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\" \\\"q\\\"\"}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let gemini = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"hm\",\"thought\":true}]}}]}\n\n\
            data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\" tok\"}]}}]}\n\n\
            data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\" \\\"q\\\"\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        for (provider, stream) in [
            (Provider::Gemini, gemini),
            (Provider::OpenaiChat, chat),
            (Provider::OpenaiCompletions, completions),
            (Provider::Anthropic, anthropic),
        ] {
            for split in 0..=stream.len() {
                let a = read(provider, stream, split);
                assert_eq!(a.text(), " tok \"q\"", "{provider:?} split {split}");
                assert!(!a.truncated());
            }
        }
    }

    #[test]
    fn text_is_bounded() {
        let mut a = AnswerText::new(Provider::OpenaiCompletions);
        let event = format!("data: {{\"choices\":[{{\"text\":\"{}\"}}]}}\n\n", "é".repeat(100_000));
        for _ in 0..20 {
            a.feed(event.as_bytes());
        }
        assert!(a.truncated());
        assert!(a.text().len() <= MAX_ANSWER_BYTES && a.text().len() > MAX_ANSWER_BYTES - 4);
    }
}
