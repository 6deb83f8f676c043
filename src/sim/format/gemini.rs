//! Gemini `streamGenerateContent?alt=sse` and `generateContent`: every SSE
//! event is one `GenerateContentResponse` (`candidates[0].content.parts`,
//! reasoning as parts with `thought: true`); the last one carries
//! `finishReason`, `usageMetadata` and `sim`. There is no end marker: the
//! body ends. `candidatesTokenCount` excludes thoughts, which Gemini counts
//! in `thoughtsTokenCount` (so the two add up to the completion tokens).

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::{ANSWER_WORD, Ident, REASON_WORD, StreamFormat, UsageCounts};
use crate::sim::plan::{Finish, Plan};

pub struct GeminiStream {
    reason_tok: Bytes,
    answer_tok: Bytes,
    /// `"modelVersion":..,"responseId":..` closing every event.
    trailer: String,
}

fn trailer(ident: &Ident) -> String {
    format!("\"modelVersion\":{},\"responseId\":\"{}\"", ident.model_json, ident.id)
}

fn part(text: &str, thought: bool) -> String {
    if thought {
        format!("{{\"text\":\"{text}\",\"thought\":true}}")
    } else {
        format!("{{\"text\":\"{text}\"}}")
    }
}

impl GeminiStream {
    pub fn new(ident: &Ident) -> Self {
        let trailer = trailer(ident);
        let event = |p: String| {
            Bytes::from(format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{p}],\"role\":\"model\"}},\"index\":0}}],{trailer}}}\r\n\r\n"
            ))
        };
        GeminiStream {
            reason_tok: event(part(REASON_WORD, true)),
            answer_tok: event(part(ANSWER_WORD, false)),
            trailer,
        }
    }
}

impl StreamFormat for GeminiStream {
    fn token(&self, out: &mut BytesMut, reasoning: bool) {
        out.extend_from_slice(if reasoning { &self.reason_tok } else { &self.answer_tok });
    }

    fn tail_has_sim(&self) -> bool {
        true
    }

    fn tail(&self, out: &mut BytesMut, finish: Finish, usage: &UsageCounts, sim: Option<&str>) {
        let mut s = String::with_capacity(512);
        // As the real API does, the last event has an empty text part.
        let _ = write!(
            s,
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"\"}}],\"role\":\"model\"}},\"finishReason\":\"{}\",\"index\":0}}],\"usageMetadata\":{},{},\"sim\":{}}}\r\n\r\n",
            finish_reason(finish),
            usage_json(usage),
            self.trailer,
            sim.unwrap_or("null")
        );
        out.extend_from_slice(s.as_bytes());
    }

    fn error_event(&self, out: &mut BytesMut) {
        out.extend_from_slice(
            b"data: {\"error\":{\"code\":500,\"message\":\"An internal error has occurred (simulated error event).\",\"status\":\"INTERNAL\"}}\r\n\r\n",
        );
    }

    fn token_len(&self) -> usize {
        self.answer_tok.len()
    }
}

/// The whole `generateContent` response.
pub fn body(ident: &Ident, plan: &Plan, usage: &UsageCounts, sim: &str) -> String {
    let mut parts = String::new();
    if plan.n_reason > 0 {
        parts.push_str(&part(&REASON_WORD.repeat(plan.n_reason as usize), true));
        parts.push(',');
    }
    parts.push_str(&part(&ANSWER_WORD.repeat(plan.n_answer as usize), false));
    format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{parts}],\"role\":\"model\"}},\"finishReason\":\"{}\",\"index\":0}}],\"usageMetadata\":{},{},\"sim\":{sim}}}",
        finish_reason(plan.finish),
        usage_json(usage),
        trailer(ident)
    )
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "STOP",
        Finish::Length => "MAX_TOKENS",
    }
}

fn usage_json(u: &UsageCounts) -> String {
    let candidates = u.completion.saturating_sub(u.reasoning);
    format!(
        "{{\"promptTokenCount\":{},\"candidatesTokenCount\":{candidates},\"totalTokenCount\":{},\"cachedContentTokenCount\":{},\"thoughtsTokenCount\":{}}}",
        u.prompt,
        u.prompt.saturating_add(u.completion),
        u.cached,
        u.reasoning
    )
}
