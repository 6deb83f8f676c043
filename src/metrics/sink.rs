//! The one metrics pipeline: every finished request is one
//! [`RequestRecord`], handed to each [`OutcomeSink`] of the run in turn.
//!
//! Sinks: the Locust window ([`super::Recorder`], worker mode), the
//! standalone run aggregate (`crate::standalone::aggregate`), the
//! per-request log ([`super::export::RequestLog`]: CSV in a standalone run,
//! JSON lines for `--requests-out`) and the Prometheus registry
//! ([`super::prometheus::Prometheus`]). A sink owns its state and
//! its bounds; it must not block on the network (file writes are buffered).

use tokio::time::Instant;

use super::RecordNote;
use crate::outcome::Outcome;

/// One finished request, as every sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// Index of the scenario (load type) in the test definition.
    pub class: usize,
    /// The scenario's (load type's) name.
    pub scenario: &'a str,
    /// The request's number on this worker; [`crate::llm::client::request_id`]
    /// makes the `x-request-id` header from it.
    pub seq: u64,
    /// When it was due: the open-loop arrival, or the closed-loop user's
    /// ready time.
    pub scheduled: Instant,
    /// True for the warm-up requests sent before load starts.
    pub warmup: bool,
    pub outcome: &'a Outcome,
    /// A turn of a multi-turn session (`crate::llm::session`); `None` for
    /// a request that stands alone (and for a session's warm-up).
    pub turn: Option<SessionTurn>,
}

/// Which turn of a session a request was, and what a perfect prefix cache
/// would have served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTurn {
    /// 0-based.
    pub turn: u32,
    pub ideal_cached_tokens: u64,
}

impl RequestRecord<'_> {
    /// The `x-request-id` this request carried.
    pub fn request_id(&self) -> String {
        crate::llm::client::request_id(self.seq)
    }

    /// Unix time the request was due (send time minus its queue time).
    pub fn scheduled_unix_s(&self) -> f64 {
        self.outcome.sent_unix_s - self.outcome.queue.as_secs_f64()
    }
}

/// Receives every finished request exactly once.
pub trait OutcomeSink: Send + Sync + 'static {
    /// Records one request. The note (a divergence warning) is acted on by
    /// the caller; sinks that never warn return the default.
    fn record(&self, r: &RequestRecord<'_>) -> RecordNote;
}

/// The sinks a worker adds to every run (`--requests-out`, `--metrics-addr`).
#[derive(Clone, Default)]
pub struct Sinks(pub Vec<std::sync::Arc<dyn OutcomeSink>>);

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sinks({})", self.0.len())
    }
}

impl OutcomeSink for super::Recorder {
    fn record(&self, r: &RequestRecord<'_>) -> RecordNote {
        match r.turn {
            None => super::Recorder::record(self, r.class, r.outcome, None),
            Some(t) => super::Recorder::record_turn(self, r.class, t.turn, r.outcome, t.ideal_cached_tokens),
        }
    }
}
