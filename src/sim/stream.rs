//! Response generation: prebuilt per-request chunk templates, the streaming
//! body (a state machine that emits on absolute deadlines and coalesces
//! chunks that are already due), and non-streaming bodies.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::parse::Api;
use super::{Outcome, Shared};

/// Text of each answer token (one word).
pub const ANSWER_WORD: &str = " tok";
/// Text of each reasoning token (one word).
pub const REASON_WORD: &str = " think";
/// Token offsets are omitted from the ground truth above this many chunks.
pub const MAX_OFFSETS: usize = 4096;

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

/// How a faulty stream breaks off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    ErrorEvent,
    Truncate,
    Stall,
}

/// What a request will produce.
#[derive(Debug, Clone)]
pub struct Plan {
    pub n_reason: u32,
    pub n_answer: u32,
    pub finish: Finish,
    /// Break off after this many tokens.
    pub cut: Option<(u32, Cut)>,
}

impl Plan {
    pub fn total(&self) -> u32 {
        self.n_reason + self.n_answer
    }
}

/// Produces token deadlines: absolute, each one the previous plus one decode
/// interval, so lateness never accumulates.
pub struct Sched {
    pub next: Instant,
    pub tpot_us: f64,
    pub jitter: f64,
    pub slowdown: f64,
    pub rng: StdRng,
    pub shared: Arc<Shared>,
}

impl Sched {
    pub fn advance(&mut self) {
        if self.tpot_us <= 0.0 {
            return;
        }
        let running = self.shared.running().max(1) as f64;
        let mut us = self.tpot_us * (1.0 + self.slowdown * (running - 1.0));
        if self.jitter > 0.0 {
            us *= (1.0 + self.jitter * (2.0 * self.rng.random::<f64>() - 1.0)).max(0.0);
        }
        self.next += Duration::from_nanos((us * 1000.0) as u64);
    }
}

/// Chunks prebuilt once per request; token chunks are cloned by refcount.
pub struct Templates {
    api: Api,
    /// Sent when the stream opens (Anthropic message_start + first block start).
    open: Bytes,
    /// Prepended to the first token (OpenAI chat role chunk).
    first: Bytes,
    reason_tok: Bytes,
    answer_tok: Bytes,
    /// Between the reasoning and the answer (Anthropic: end the thinking block).
    transition: Bytes,
    /// OpenAI: `data: {"id":..,"model":..,"choices":[` (for finish and usage chunks).
    prefix: String,
    usage_null: bool,
    answer_index: u32,
}

/// Identity of a response.
pub struct Ident<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model_json: &'a str,
}

/// Token counts for usage blocks.
pub struct Usage {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    pub reasoning: u64,
}

impl Templates {
    pub fn new(
        api: Api,
        ident: &Ident,
        reasoning_field: &str,
        include_usage: bool,
        usage: &Usage,
        reasoning: bool,
    ) -> Self {
        let suffix = if include_usage {
            "],\"usage\":null}\n\n"
        } else {
            "]}\n\n"
        };
        match api {
            Api::Chat | Api::Completions => {
                let object = if api == Api::Chat {
                    "chat.completion.chunk"
                } else {
                    "text_completion"
                };
                let prefix = format!(
                    "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[",
                    ident.id, ident.created, ident.model_json
                );
                let chunk = |choice: &str| Bytes::from(format!("{prefix}{choice}{suffix}"));
                let (first, reason_tok, answer_tok) = if api == Api::Chat {
                    (
                        chunk(
                            r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#,
                        ),
                        chunk(&format!(
                            r#"{{"index":0,"delta":{{"{reasoning_field}":"{REASON_WORD}"}},"logprobs":null,"finish_reason":null}}"#
                        )),
                        chunk(&format!(
                            r#"{{"index":0,"delta":{{"content":"{ANSWER_WORD}"}},"logprobs":null,"finish_reason":null}}"#
                        )),
                    )
                } else {
                    (
                        Bytes::new(),
                        Bytes::new(),
                        chunk(&format!(
                            r#"{{"text":"{ANSWER_WORD}","index":0,"logprobs":null,"finish_reason":null}}"#
                        )),
                    )
                };
                Templates {
                    api,
                    open: Bytes::new(),
                    first,
                    reason_tok,
                    answer_tok,
                    transition: Bytes::new(),
                    prefix,
                    usage_null: include_usage,
                    answer_index: 0,
                }
            }
            Api::Messages => {
                let mut open = format!(
                    "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":0}}}}}}\n\n",
                    ident.id,
                    ident.model_json,
                    usage.prompt - usage.cached,
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
                Templates {
                    api,
                    open: Bytes::from(open),
                    first: Bytes::new(),
                    reason_tok: Bytes::from(format!(
                        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\"{REASON_WORD}\"}}}}\n\n"
                    )),
                    answer_tok: Bytes::from(format!(
                        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{answer_index},\"delta\":{{\"type\":\"text_delta\",\"text\":\"{ANSWER_WORD}\"}}}}\n\n"
                    )),
                    transition: Bytes::from(transition),
                    prefix: String::new(),
                    usage_null: false,
                    answer_index,
                }
            }
        }
    }

    /// The end of a proper stream: finish chunk, usage (+ sim), terminator.
    fn tail(&self, buf: &mut BytesMut, finish: Finish, usage: &Usage, sim: Option<&str>) {
        let mut s = String::with_capacity(512);
        match self.api {
            Api::Chat | Api::Completions => {
                let reason = finish_str(finish);
                let suffix = if self.usage_null {
                    "],\"usage\":null}\n\n"
                } else {
                    "]}\n\n"
                };
                if self.api == Api::Chat {
                    let _ = write!(
                        s,
                        "{}{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{reason}\"}}{suffix}",
                        self.prefix
                    );
                } else {
                    let _ = write!(
                        s,
                        "{}{{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"{reason}\"}}{suffix}",
                        self.prefix
                    );
                }
                if let Some(sim) = sim {
                    let _ = write!(
                        s,
                        "{}],\"usage\":{},\"sim\":{sim}}}\n\n",
                        self.prefix,
                        openai_usage(usage)
                    );
                }
                s.push_str("data: [DONE]\n\n");
            }
            Api::Messages => {
                let _ = write!(
                    s,
                    "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{}}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{},\"sim\":{}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
                    self.answer_index,
                    anthropic_stop(finish),
                    anthropic_usage(usage),
                    sim.unwrap_or("null")
                );
            }
        }
        buf.extend_from_slice(s.as_bytes());
    }

    fn error_event(&self, buf: &mut BytesMut) {
        match self.api {
            Api::Messages => buf.extend_from_slice(
                b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded (simulated error event)\"}}\n\n",
            ),
            _ => buf.extend_from_slice(
                b"data: {\"error\":{\"message\":\"simulated error during generation\",\"type\":\"server_error\",\"param\":null,\"code\":500}}\n\ndata: [DONE]\n\n",
            ),
        }
    }
}

fn text_block_start(index: u32) -> String {
    format!(
        "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
    )
}

pub fn signature(id: &str) -> String {
    format!("sim-signature-{}", id.trim_start_matches("msg_"))
}

pub fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

pub fn anthropic_stop(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

pub fn openai_usage(u: &Usage) -> String {
    format!(
        "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\"completion_tokens_details\":{{\"reasoning_tokens\":{}}}}}",
        u.prompt,
        u.completion,
        u.prompt + u.completion,
        u.cached,
        u.reasoning
    )
}

pub fn anthropic_usage(u: &Usage) -> String {
    format!(
        "{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":{}}}",
        u.prompt - u.cached,
        u.cached,
        u.completion
    )
}

/// The `sim` ground-truth object (docs/contracts.md §2).
pub fn sim_json(o: &Outcome, offsets: &[u64]) -> String {
    let mut s = String::with_capacity(160 + offsets.len() * 8);
    let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |x| x.to_string());
    let _ = write!(
        s,
        "{{\"queue_us\":{},\"ttft_us\":{},\"e2e_us\":{},\"output_tokens\":{},\"prompt_tokens\":{},\"cached_tokens\":{}",
        o.queue_us,
        opt(o.ttft_us),
        opt(o.e2e_us),
        o.output_tokens,
        o.prompt_tokens,
        o.cached_tokens
    );
    if offsets.len() <= MAX_OFFSETS {
        s.push_str(",\"token_offsets_us\":[");
        for (i, t) in offsets.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{t}");
        }
        s.push(']');
    }
    s.push('}');
    s
}

enum Phase {
    Open,
    Tokens,
    Stall(Instant),
    Done,
}

/// The streaming response body.
pub struct SimStream {
    pub shared: Arc<Shared>,
    pub tpl: Templates,
    pub plan: Plan,
    pub sched: Sched,
    pub t0: Instant,
    pub outcome: Outcome,
    pub stall: Duration,
    pub coalesce_hint: usize,
    emitted: u32,
    transitioned: bool,
    /// Offsets of the first MAX_OFFSETS + 1 tokens (more means "omit").
    offsets: Vec<u64>,
    last_offset: Option<u64>,
    phase: Phase,
    sleep: Pin<Box<Sleep>>,
    finalized: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl SimStream {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        tpl: Templates,
        plan: Plan,
        sched: Sched,
        t0: Instant,
        outcome: Outcome,
        stall: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let total = plan.total() as usize;
        let no_wait = sched.tpot_us <= 0.0;
        let first = sched.next;
        SimStream {
            shared,
            coalesce_hint: if no_wait {
                (total + 4) * tpl.answer_tok.len().max(64) + 1024
            } else {
                0
            },
            tpl,
            plan,
            sched,
            t0,
            outcome,
            stall,
            emitted: 0,
            transitioned: false,
            offsets: Vec::with_capacity(total.min(MAX_OFFSETS + 1)),
            last_offset: None,
            phase: Phase::Open,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            finalized: false,
            _permit: permit,
        }
    }

    fn usage(&self) -> Usage {
        let reasoning = u64::from(self.emitted.min(self.plan.n_reason));
        Usage {
            prompt: self.outcome.prompt_tokens,
            cached: self.outcome.cached_tokens,
            completion: u64::from(self.emitted),
            reasoning,
        }
    }

    fn fill_outcome(&mut self, completed: bool) {
        self.outcome.output_tokens = u64::from(self.emitted);
        self.outcome.ttft_us = self.offsets.first().copied();
        self.outcome.e2e_us = self.last_offset;
        self.outcome.completed = completed;
    }

    fn finalize(&mut self) {
        if !self.finalized {
            self.finalized = true;
            self.shared.finish(&self.outcome);
        }
    }

    fn frame(buf: BytesMut) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if !self.finalized {
            // The client went away before the end.
            self.fill_outcome(false);
            if self.outcome.fault.is_none() {
                self.outcome.fault = Some("client_disconnect");
            }
            self.finalize();
        }
    }
}

impl http_body::Body for SimStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let mut buf = BytesMut::new();
        // One clock read per wake-up: chunks that are due together share it.
        let mut now = Instant::now();
        if this.shared.aborting() && !matches!(this.phase, Phase::Done) {
            // The simulator is shutting down: end the stream here.
            this.fill_outcome(false);
            this.outcome.fault = this.outcome.fault.or(Some("shutdown"));
            this.phase = Phase::Done;
            this.finalize();
        }
        loop {
            match this.phase {
                Phase::Open => {
                    buf.reserve(this.coalesce_hint.max(this.tpl.open.len()));
                    buf.extend_from_slice(&this.tpl.open);
                    this.phase = Phase::Tokens;
                }
                Phase::Tokens => {
                    if let Some((k, cut)) = this.plan.cut
                        && this.emitted == k
                    {
                        this.fill_outcome(false);
                        match cut {
                            Cut::ErrorEvent => {
                                this.tpl.error_event(&mut buf);
                                this.phase = Phase::Done;
                                this.finalize();
                            }
                            Cut::Truncate => {
                                this.phase = Phase::Done;
                                this.finalize();
                            }
                            Cut::Stall => this.phase = Phase::Stall(now + this.stall),
                        }
                        continue;
                    }
                    let total = this.plan.total();
                    let due = now >= this.sched.next;
                    if this.emitted == total && (total > 0 || due) {
                        if this.plan.n_reason > 0 && !this.transitioned {
                            this.transitioned = true;
                            buf.extend_from_slice(&this.tpl.transition);
                        }
                        if total == 0 {
                            buf.extend_from_slice(&this.tpl.first);
                        }
                        this.fill_outcome(true);
                        let usage = this.usage();
                        let want_sim = this.tpl.api == Api::Messages || this.tpl.usage_null;
                        let sim = want_sim.then(|| sim_json(&this.outcome, &this.offsets));
                        this.tpl.tail(&mut buf, this.plan.finish, &usage, sim.as_deref());
                        this.phase = Phase::Done;
                        this.finalize();
                        continue;
                    }
                    if due {
                        if this.emitted == 0 {
                            buf.extend_from_slice(&this.tpl.first);
                        }
                        if this.emitted < this.plan.n_reason {
                            buf.extend_from_slice(&this.tpl.reason_tok);
                        } else {
                            if this.plan.n_reason > 0 && !this.transitioned {
                                this.transitioned = true;
                                buf.extend_from_slice(&this.tpl.transition);
                            }
                            buf.extend_from_slice(&this.tpl.answer_tok);
                        }
                        let off = now.duration_since(this.t0).as_micros() as u64;
                        if this.offsets.len() <= MAX_OFFSETS {
                            this.offsets.push(off);
                        }
                        this.last_offset = Some(off);
                        this.emitted += 1;
                        this.sched.advance();
                        continue;
                    }
                    if !buf.is_empty() {
                        return Self::frame(buf);
                    }
                    let next = this.sched.next;
                    this.sleep.as_mut().reset(next);
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    now = Instant::now();
                }
                Phase::Stall(until) => {
                    if !buf.is_empty() {
                        return Self::frame(buf);
                    }
                    now = Instant::now();
                    if now >= until {
                        this.phase = Phase::Done;
                        this.finalize();
                        continue;
                    }
                    // wake at least every 100 ms to notice a shutdown
                    this.sleep.as_mut().reset(until.min(now + Duration::from_millis(100)));
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Phase::Done => {
                    return if buf.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Self::frame(buf)
                    };
                }
            }
        }
    }
}

/// A whole non-streaming body.
pub fn full_body(api: Api, ident: &Ident, plan: &Plan, usage: &Usage, reasoning_field: &str, sim: &str) -> String {
    let answer = ANSWER_WORD.repeat(plan.n_answer as usize);
    let reasoning = REASON_WORD.repeat(plan.n_reason as usize);
    match api {
        Api::Chat => {
            let r = if plan.n_reason > 0 {
                format!(",\"{reasoning_field}\":\"{reasoning}\"")
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
        Api::Completions => format!(
            "{{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"text\":\"{answer}\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":{},\"sim\":{sim}}}",
            ident.id,
            ident.created,
            ident.model_json,
            finish_str(plan.finish),
            openai_usage(usage)
        ),
        Api::Messages => {
            let thinking = if plan.n_reason > 0 {
                format!(
                    "{{\"type\":\"thinking\",\"thinking\":\"{reasoning}\",\"signature\":\"{}\"}},",
                    signature(ident.id)
                )
            } else {
                String::new()
            };
            format!(
                "{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[{thinking}{{\"type\":\"text\",\"text\":\"{answer}\"}}],\"stop_reason\":\"{}\",\"stop_sequence\":null,\"usage\":{},\"sim\":{sim}}}",
                ident.id,
                ident.model_json,
                anthropic_stop(plan.finish),
                anthropic_usage(usage)
            )
        }
    }
}
