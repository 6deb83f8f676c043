//! OpenAI chat completions (`/v1/chat/completions`): `chat.completion.chunk`
//! deltas, reasoning in the configured delta field, and `chat.completion`.

use bytes::{Bytes, BytesMut};

use super::{
    ANSWER_WORD, Ident, OpenAiFrame, Options, REASON_WORD, StreamFormat, UsageCounts, finish_str, openai_usage,
};
use crate::sim::plan::{Finish, Plan};

pub struct ChatStream {
    frame: OpenAiFrame,
    first: Bytes,
    reason_tok: Bytes,
    answer_tok: Bytes,
}

impl ChatStream {
    pub fn new(ident: &Ident, opts: &Options) -> Self {
        let frame = OpenAiFrame::new("chat.completion.chunk", ident, opts.include_usage);
        let field = opts.reasoning_field;
        ChatStream {
            first: frame
                .chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#),
            reason_tok: frame.chunk(&format!(
                r#"{{"index":0,"delta":{{"{field}":"{REASON_WORD}"}},"logprobs":null,"finish_reason":null}}"#
            )),
            answer_tok: frame.chunk(&format!(
                r#"{{"index":0,"delta":{{"content":"{ANSWER_WORD}"}},"logprobs":null,"finish_reason":null}}"#
            )),
            frame,
        }
    }
}

impl StreamFormat for ChatStream {
    fn first(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.first);
    }

    fn token(&self, out: &mut BytesMut, reasoning: bool) {
        out.extend_from_slice(if reasoning { &self.reason_tok } else { &self.answer_tok });
    }

    fn tail_has_sim(&self) -> bool {
        self.frame.include_usage
    }

    fn tail(&self, out: &mut BytesMut, finish: Finish, usage: &UsageCounts, sim: Option<&str>) {
        let choice = format!(
            "{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{}\"}}",
            finish_str(finish)
        );
        self.frame.tail(out, &choice, usage, sim);
    }

    fn error_event(&self, out: &mut BytesMut) {
        OpenAiFrame::error_event(out);
    }

    fn token_len(&self) -> usize {
        self.answer_tok.len()
    }
}

pub fn body(ident: &Ident, plan: &Plan, usage: &UsageCounts, opts: &Options, sim: &str) -> String {
    let answer = ANSWER_WORD.repeat(plan.n_answer as usize);
    let r = if plan.n_reason > 0 {
        format!(
            ",\"{}\":\"{}\"",
            opts.reasoning_field,
            REASON_WORD.repeat(plan.n_reason as usize)
        )
    } else {
        String::new()
    };
    format!(
        "{{\"id\":\"{}\",\"object\":\"chat.completion\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{answer}\"{r}}},\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":{},\"sim\":{sim}}}",
        ident.id,
        ident.created,
        ident.model_json,
        finish_str(plan.finish),
        openai_usage(usage)
    )
}
