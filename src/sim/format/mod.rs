//! Writers per wire format: they turn a [`Plan`] into bytes, the streaming
//! chunks (prebuilt once per request, token chunks cloned by refcount) and
//! the whole non-streaming body. They own the JSON shapes of OpenAI chat,
//! OpenAI completions, Anthropic messages and Gemini generateContent; they do not decide what to send
//! or when (the plan and the stream executor do).

mod anthropic;
mod chat;
mod completions;
mod gemini;

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::parse::Api;
use super::plan::{Finish, Plan};

/// Text of each answer token (one word).
pub const ANSWER_WORD: &str = " tok";
/// Text of each reasoning token (one word).
pub const REASON_WORD: &str = " think";

/// Identity of a response.
pub struct Ident<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model_json: &'a str,
}

/// Token counts for usage blocks.
#[derive(Clone, Copy)]
pub struct UsageCounts {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    pub reasoning: u64,
}

/// Per-request options that change the shape of the output.
pub struct Options<'a> {
    /// OpenAI chat: the delta field carrying reasoning.
    pub reasoning_field: &'a str,
    /// OpenAI: `stream_options.include_usage` (a usage chunk, `usage: null` before).
    pub include_usage: bool,
}

/// One API's streaming format. Call order (the stream executor's): `open`,
/// then per token `first` (before the first one), `transition` (before the first answer
/// token after reasoning) and `token`, then either `tail` or `error_event`.
pub trait StreamFormat: Send + Sync {
    /// Sent when the stream opens (Anthropic: message_start and the first block start).
    fn open(&self, _out: &mut BytesMut) {}
    /// Sent before the first token (OpenAI chat: the role chunk).
    fn first(&self, _out: &mut BytesMut) {}
    /// One token chunk.
    fn token(&self, out: &mut BytesMut, reasoning: bool);
    /// Between the reasoning and the answer (Anthropic: end the thinking block).
    fn transition(&self, _out: &mut BytesMut) {}
    /// Whether the tail carries the `sim` ground truth (then the caller builds it).
    fn tail_has_sim(&self) -> bool;
    /// The end of a proper stream: finish, usage (and `sim`), terminator.
    fn tail(&self, out: &mut BytesMut, finish: Finish, usage: &UsageCounts, sim: Option<&str>);
    /// An error event in the middle of a stream.
    fn error_event(&self, out: &mut BytesMut);
    /// Size of one answer token chunk (for write-size estimates).
    fn token_len(&self) -> usize;
}

/// The streaming writer for `api`.
pub fn stream_format(
    api: Api,
    ident: &Ident,
    opts: &Options,
    usage: &UsageCounts,
    reasoning: bool,
) -> Box<dyn StreamFormat> {
    match api {
        Api::Chat => Box::new(chat::ChatStream::new(ident, opts)),
        Api::Completions => Box::new(completions::CompletionsStream::new(ident, opts)),
        Api::Messages => Box::new(anthropic::MessagesStream::new(ident, usage, reasoning)),
        Api::Gemini => Box::new(gemini::GeminiStream::new(ident)),
    }
}

/// A whole non-streaming body for `api`.
pub fn full_body(api: Api, ident: &Ident, plan: &Plan, usage: &UsageCounts, opts: &Options, sim: &str) -> String {
    match api {
        Api::Chat => chat::body(ident, plan, usage, opts, sim),
        Api::Completions => completions::body(ident, plan, usage, sim),
        Api::Messages => anthropic::body(ident, plan, usage, sim),
        Api::Gemini => gemini::body(ident, plan, usage, sim),
    }
}

/// The OpenAI streaming frame shared by chat and completions:
/// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[` … `]}`.
struct OpenAiFrame {
    prefix: String,
    /// `stream_options.include_usage`: every chunk carries `usage: null`, and a
    /// usage chunk (with `sim`) comes before `[DONE]`.
    include_usage: bool,
}

impl OpenAiFrame {
    fn new(object: &str, ident: &Ident, include_usage: bool) -> Self {
        OpenAiFrame {
            prefix: format!(
                "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[",
                ident.id, ident.created, ident.model_json
            ),
            include_usage,
        }
    }

    fn suffix(&self) -> &'static str {
        if self.include_usage {
            "],\"usage\":null}\n\n"
        } else {
            "]}\n\n"
        }
    }

    fn chunk(&self, choice: &str) -> Bytes {
        Bytes::from(format!("{}{choice}{}", self.prefix, self.suffix()))
    }

    /// The finish chunk, the usage chunk when asked for, `[DONE]`.
    fn tail(&self, out: &mut BytesMut, finish_choice: &str, usage: &UsageCounts, sim: Option<&str>) {
        let mut s = String::with_capacity(512);
        s.push_str(&self.prefix);
        s.push_str(finish_choice);
        s.push_str(self.suffix());
        if let Some(sim) = sim {
            let _ = write!(
                s,
                "{}],\"usage\":{},\"sim\":{sim}}}\n\n",
                self.prefix,
                openai_usage(usage)
            );
        }
        s.push_str("data: [DONE]\n\n");
        out.extend_from_slice(s.as_bytes());
    }

    fn error_event(out: &mut BytesMut) {
        out.extend_from_slice(
            b"data: {\"error\":{\"message\":\"simulated error during generation\",\"type\":\"server_error\",\"param\":null,\"code\":500}}\n\ndata: [DONE]\n\n",
        );
    }
}

pub fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

pub fn openai_usage(u: &UsageCounts) -> String {
    format!(
        "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\"completion_tokens_details\":{{\"reasoning_tokens\":{}}}}}",
        u.prompt,
        u.completion,
        u.prompt.saturating_add(u.completion),
        u.cached,
        u.reasoning
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::plan::Cut;

    fn ident() -> Ident<'static> {
        Ident {
            id: "msg_sim1",
            created: 7,
            model_json: "\"m\"",
        }
    }

    fn plan(n_reason: u32, n_answer: u32) -> Plan {
        Plan::fixed(n_reason, n_answer, Finish::Length, None::<(u32, Cut)>)
    }

    const USAGE: UsageCounts = UsageCounts {
        prompt: 20,
        cached: 16,
        completion: 3,
        reasoning: 1,
    };

    /// Each format's whole body is valid JSON with the answer, reasoning and
    /// usage where that API puts them.
    #[test]
    fn full_bodies_are_json_in_each_apis_shape() {
        let opts = Options {
            reasoning_field: "reasoning",
            include_usage: false,
        };
        let p = plan(1, 2);
        let v = |api| -> serde_json::Value {
            serde_json::from_str(&full_body(api, &ident(), &p, &USAGE, &opts, "{\"x\":1}")).unwrap()
        };
        let c = v(Api::Chat);
        assert_eq!(c["choices"][0]["message"]["content"], " tok tok");
        assert_eq!(c["choices"][0]["message"]["reasoning"], " think");
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
        assert_eq!(c["sim"]["x"], 1);
        let t = v(Api::Completions);
        assert_eq!(t["choices"][0]["text"], " tok tok");
        assert_eq!(t["choices"][0]["finish_reason"], "length");
        let g = v(Api::Gemini);
        assert_eq!(g["candidates"][0]["content"]["parts"][0]["thought"], true);
        assert_eq!(g["candidates"][0]["content"]["parts"][1]["text"], " tok tok");
        assert_eq!(g["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(g["usageMetadata"]["candidatesTokenCount"], 2);
        assert_eq!(g["usageMetadata"]["thoughtsTokenCount"], 1);
        assert_eq!(g["usageMetadata"]["cachedContentTokenCount"], 16);
        let m = v(Api::Messages);
        assert_eq!(m["content"][0]["type"], "thinking");
        assert_eq!(m["content"][1]["text"], " tok tok");
        assert_eq!(m["usage"]["input_tokens"], 4);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 16);
        assert_eq!(m["stop_reason"], "max_tokens");
    }

    /// Every streamed piece is made of complete SSE events whose data is JSON
    /// (or `[DONE]`).
    #[test]
    fn stream_pieces_are_whole_sse_events() {
        for api in [Api::Chat, Api::Completions, Api::Messages, Api::Gemini] {
            for include_usage in [false, true] {
                let opts = Options {
                    reasoning_field: "reasoning_content",
                    include_usage,
                };
                let f = stream_format(api, &ident(), &opts, &USAGE, true);
                let mut out = BytesMut::new();
                f.open(&mut out);
                f.first(&mut out);
                f.token(&mut out, true);
                f.transition(&mut out);
                f.token(&mut out, false);
                let sim = f.tail_has_sim().then_some("{}");
                f.tail(&mut out, Finish::Stop, &USAGE, sim);
                f.error_event(&mut out);
                // Gemini ends lines with CRLF, as Google's servers do.
                let text = std::str::from_utf8(&out).unwrap().replace("\r\n", "\n");
                assert!(text.ends_with("\n\n"), "{api:?}: {text}");
                for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
                    let data = ev.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                    if data != "[DONE]" {
                        serde_json::from_str::<serde_json::Value>(data)
                            .unwrap_or_else(|e| panic!("{api:?} {e}: {data}"));
                    }
                }
            }
        }
    }
}
