//! Anthropic messages (`/v1/messages`): named SSE events (message_start,
//! content blocks for thinking and text, message_delta with usage and `sim`,
//! message_stop) and the `message` body.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::{ANSWER_WORD, Ident, REASON_WORD, StreamFormat, UsageCounts};
use crate::sim::plan::{Finish, Plan};

pub struct MessagesStream {
    open: Bytes,
    reason_tok: Bytes,
    answer_tok: Bytes,
    transition: Bytes,
    answer_index: u32,
}

impl MessagesStream {
    pub fn new(ident: &Ident, usage: &UsageCounts, reasoning: bool) -> Self {
        let mut open = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":0}}}}}}\n\n",
            ident.id,
            ident.model_json,
            usage.prompt.saturating_sub(usage.cached),
            usage.cached
        );
        let answer_index = u32::from(reasoning);
        if reasoning {
            open.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n");
        } else {
            open.push_str(&text_block_start(0));
        }
        let transition = if reasoning {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"signature_delta\",\"signature\":\"{}\"}}}}\n\nevent: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n{}",
                signature(ident.id),
                text_block_start(1)
            )
        } else {
            String::new()
        };
        MessagesStream {
            open: Bytes::from(open),
            reason_tok: Bytes::from(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\"{REASON_WORD}\"}}}}\n\n"
            )),
            answer_tok: Bytes::from(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{answer_index},\"delta\":{{\"type\":\"text_delta\",\"text\":\"{ANSWER_WORD}\"}}}}\n\n"
            )),
            transition: Bytes::from(transition),
            answer_index,
        }
    }
}

impl StreamFormat for MessagesStream {
    fn open(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.open);
    }

    fn token(&self, out: &mut BytesMut, reasoning: bool) {
        out.extend_from_slice(if reasoning { &self.reason_tok } else { &self.answer_tok });
    }

    fn transition(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.transition);
    }

    fn tail_has_sim(&self) -> bool {
        true
    }

    fn tail(&self, out: &mut BytesMut, finish: Finish, usage: &UsageCounts, sim: Option<&str>) {
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{}}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{},\"sim\":{}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
            self.answer_index,
            stop_reason(finish),
            usage_json(usage),
            sim.unwrap_or("null")
        );
        out.extend_from_slice(s.as_bytes());
    }

    fn error_event(&self, out: &mut BytesMut) {
        out.extend_from_slice(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded (simulated error event)\"}}\n\n",
        );
    }

    fn token_len(&self) -> usize {
        self.answer_tok.len()
    }
}

pub fn body(ident: &Ident, plan: &Plan, usage: &UsageCounts, sim: &str) -> String {
    let answer = ANSWER_WORD.repeat(plan.n_answer as usize);
    let thinking = if plan.n_reason > 0 {
        format!(
            "{{\"type\":\"thinking\",\"thinking\":\"{}\",\"signature\":\"{}\"}},",
            REASON_WORD.repeat(plan.n_reason as usize),
            signature(ident.id)
        )
    } else {
        String::new()
    };
    format!(
        "{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[{thinking}{{\"type\":\"text\",\"text\":\"{answer}\"}}],\"stop_reason\":\"{}\",\"stop_sequence\":null,\"usage\":{},\"sim\":{sim}}}",
        ident.id,
        ident.model_json,
        stop_reason(plan.finish),
        usage_json(usage)
    )
}

fn text_block_start(index: u32) -> String {
    format!(
        "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
    )
}

fn signature(id: &str) -> String {
    format!("sim-signature-{}", id.trim_start_matches("msg_"))
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

fn usage_json(u: &UsageCounts) -> String {
    format!(
        "{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":{}}}",
        u.prompt.saturating_sub(u.cached),
        u.cached,
        u.completion
    )
}
