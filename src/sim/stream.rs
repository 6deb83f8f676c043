//! The streaming executor: carries a [`Plan`] out on the clock. Token
//! deadlines are absolute (each one the previous plus one decode interval, so
//! lateness never accumulates); chunks that are already due at a wake-up are
//! coalesced into one write of at most [`MAX_WRITE_BYTES`]; the bytes
//! themselves come from the request's [`StreamFormat`]. The non-streaming
//! path runs the same schedule ([`Sched`]) and answers at the end.

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

use super::format::{StreamFormat, UsageCounts};
use super::plan::{Cut, Plan, Step};
use super::{ServedRequest, Shared};

/// Token offsets are omitted from the ground truth above this many chunks.
pub const MAX_OFFSETS: usize = 4096;
/// Largest write of coalesced chunks. Without latency every chunk is due at
/// once; a long answer then goes out in writes of this size instead of one
/// buffer of the whole answer.
pub const MAX_WRITE_BYTES: usize = 256 << 10;

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

/// The `sim` ground-truth object (docs/contracts.md §2).
pub fn sim_json(o: &ServedRequest, offsets: &[u64]) -> String {
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

/// Where a streamed answer is: headers sent, tokens flowing, stalled (fault), done.
enum StreamPhase {
    Open,
    Tokens,
    Stall(Instant),
    Done,
}

/// The streaming response body.
pub struct SimStream {
    shared: Arc<Shared>,
    format: Box<dyn StreamFormat>,
    plan: Plan,
    sched: Sched,
    t0: Instant,
    outcome: ServedRequest,
    stall: Duration,
    /// Capacity reserved for the first write when every chunk is due at once.
    coalesce_hint: usize,
    emitted: u32,
    /// Offsets of the first MAX_OFFSETS + 1 tokens (more means "omit").
    offsets: Vec<u64>,
    last_offset: Option<u64>,
    phase: StreamPhase,
    sleep: Pin<Box<Sleep>>,
    finalized: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl SimStream {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        format: Box<dyn StreamFormat>,
        plan: Plan,
        sched: Sched,
        t0: Instant,
        outcome: ServedRequest,
        stall: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let total = plan.total() as usize;
        let no_wait = sched.tpot_us <= 0.0;
        let first = sched.next;
        SimStream {
            shared,
            coalesce_hint: if no_wait {
                total
                    .saturating_add(4)
                    .saturating_mul(format.token_len().max(64))
                    .saturating_add(1024)
                    .min(MAX_WRITE_BYTES + 4096)
            } else {
                0
            },
            format,
            plan,
            sched,
            t0,
            outcome,
            stall,
            emitted: 0,
            offsets: Vec::with_capacity(total.min(MAX_OFFSETS + 1)),
            last_offset: None,
            phase: StreamPhase::Open,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            finalized: false,
            _permit: permit,
        }
    }

    fn usage(&self) -> UsageCounts {
        UsageCounts {
            prompt: self.outcome.prompt_tokens,
            cached: self.outcome.cached_tokens,
            completion: u64::from(self.emitted),
            reasoning: u64::from(self.emitted.min(self.plan.n_reason)),
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
        if this.shared.aborting() && !matches!(this.phase, StreamPhase::Done) {
            // The simulator is shutting down: end the stream here.
            this.fill_outcome(false);
            this.outcome.fault = this.outcome.fault.or(Some("shutdown"));
            this.phase = StreamPhase::Done;
            this.finalize();
        }
        loop {
            match this.phase {
                StreamPhase::Open => {
                    buf.reserve(this.coalesce_hint);
                    this.format.open(&mut buf);
                    this.phase = StreamPhase::Tokens;
                }
                StreamPhase::Tokens => {
                    if buf.len() >= MAX_WRITE_BYTES {
                        return Self::frame(buf);
                    }
                    let due = now >= this.sched.next;
                    match this.plan.step(this.emitted) {
                        Step::Cut(cut) => {
                            this.fill_outcome(false);
                            match cut {
                                Cut::ErrorEvent => {
                                    this.format.error_event(&mut buf);
                                    this.phase = StreamPhase::Done;
                                    this.finalize();
                                }
                                Cut::Truncate => {
                                    this.phase = StreamPhase::Done;
                                    this.finalize();
                                }
                                Cut::Stall => this.phase = StreamPhase::Stall(now + this.stall),
                            }
                            continue;
                        }
                        Step::End { first, transition } if due || !first => {
                            if transition {
                                this.format.transition(&mut buf);
                            }
                            if first {
                                this.format.first(&mut buf);
                            }
                            this.fill_outcome(true);
                            let usage = this.usage();
                            let sim = this
                                .format
                                .tail_has_sim()
                                .then(|| sim_json(&this.outcome, &this.offsets));
                            this.format.tail(&mut buf, this.plan.finish, &usage, sim.as_deref());
                            this.phase = StreamPhase::Done;
                            this.finalize();
                            continue;
                        }
                        Step::Token {
                            first,
                            reasoning,
                            transition,
                        } if due => {
                            if first {
                                this.format.first(&mut buf);
                            }
                            if transition {
                                this.format.transition(&mut buf);
                            }
                            this.format.token(&mut buf, reasoning);
                            let off = now.duration_since(this.t0).as_micros() as u64;
                            if this.offsets.len() <= MAX_OFFSETS {
                                this.offsets.push(off);
                            }
                            this.last_offset = Some(off);
                            this.emitted += 1;
                            this.sched.advance();
                            continue;
                        }
                        Step::End { .. } | Step::Token { .. } => {}
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
                StreamPhase::Stall(until) => {
                    if !buf.is_empty() {
                        return Self::frame(buf);
                    }
                    now = Instant::now();
                    if now >= until {
                        this.phase = StreamPhase::Done;
                        this.finalize();
                        continue;
                    }
                    // wake at least every 100 ms to notice a shutdown
                    this.sleep.as_mut().reset(until.min(now + Duration::from_millis(100)));
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                StreamPhase::Done => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Shared, SimConfig};
    use rand::SeedableRng;

    /// The next deadline is the previous one plus one interval, never "now"
    /// plus one: a late wake-up (here the clock is not consulted at all) moves
    /// no later token. 1,000 tokens at 2 ms end exactly 2 s after the first.
    #[test]
    fn deadlines_are_absolute() {
        let start = Instant::now();
        let mut s = Sched {
            next: start,
            tpot_us: 2_000.0,
            jitter: 0.0,
            slowdown: 0.0,
            rng: StdRng::seed_from_u64(1),
            shared: Arc::new(Shared::for_tests(SimConfig::default())),
        };
        for i in 1..=1_000u64 {
            s.advance();
            assert_eq!(s.next - start, Duration::from_micros(2_000 * i), "token {i}");
        }
    }
}
