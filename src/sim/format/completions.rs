//! OpenAI legacy completions (`/v1/completions`): `text_completion` chunks
//! and body; no reasoning.

use bytes::{Bytes, BytesMut};

use super::{ANSWER_WORD, Ident, OpenAiFrame, Options, StreamFormat, UsageCounts, finish_str, openai_usage};
use crate::sim::plan::{Finish, Plan};

pub struct CompletionsStream {
    frame: OpenAiFrame,
    answer_tok: Bytes,
}

impl CompletionsStream {
    pub fn new(ident: &Ident, opts: &Options) -> Self {
        let frame = OpenAiFrame::new("text_completion", ident, opts.include_usage);
        CompletionsStream {
            answer_tok: frame.chunk(&format!(
                r#"{{"text":"{ANSWER_WORD}","index":0,"logprobs":null,"finish_reason":null}}"#
            )),
            frame,
        }
    }
}

impl StreamFormat for CompletionsStream {
    fn token(&self, out: &mut BytesMut, _reasoning: bool) {
        // the plan never gives completions reasoning tokens
        out.extend_from_slice(&self.answer_tok);
    }

    fn tail_has_sim(&self) -> bool {
        self.frame.include_usage
    }

    fn tail(&self, out: &mut BytesMut, finish: Finish, usage: &UsageCounts, sim: Option<&str>) {
        let choice = format!(
            "{{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"{}\"}}",
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

pub fn body(ident: &Ident, plan: &Plan, usage: &UsageCounts, sim: &str) -> String {
    let answer = ANSWER_WORD.repeat(plan.n_answer as usize);
    format!(
        "{{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"text\":\"{answer}\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":{},\"sim\":{sim}}}",
        ident.id,
        ident.created,
        ident.model_json,
        finish_str(plan.finish),
        openai_usage(usage)
    )
}
