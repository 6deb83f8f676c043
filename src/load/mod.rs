//! Load control: users, ramps, wait times and open-loop arrival schedules.
//! (stub: being built)

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one request of the load does. The worker implements it (an LLM
/// request, then recording its outcome); tests use tasks that only sleep.
pub trait Task: Send + Sync + 'static {
    /// Runs one request of scenario `class` (index into the plan's classes).
    /// `scheduled` is when it was due: the arrival time in open loop, the
    /// moment the user became ready in closed loop. Must return promptly
    /// once `cancel` fires, having recorded the request as cancelled.
    fn run(&self, class: usize, scheduled: Instant, cancel: CancellationToken) -> impl Future<Output = ()> + Send;
}
