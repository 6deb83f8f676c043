//! Load control: users, ramps, wait times and open-loop arrival schedules.
//!
//! Owns *when* requests start and how many run at once; it does not know
//! what a request is (that is the [`Task`] the worker plugs in) nor how its
//! outcome is recorded (the task does that, and the lag of each start goes
//! to a [`LagSink`]).
//!
//! - [`controller`]: the [`controller::Controller`] that turns Locust's
//!   per-class user targets into running users (closed loop) or a share of
//!   the cluster's arrival rate (open loop).
//! - [`arrivals`]: the open-loop rate curve and inter-arrival draws (pure).
//! - [`cluster`]: this worker's shift among the cluster's starts (pure).
//! - [`saturation`]: whether this worker keeps up (runtime and scheduler
//!   lag), reported to the master when it does not.
//! - [`safety`]: the error-rate trip wire (token budgets and the pre-run
//!   token estimate are the master's: they are cluster totals).
//!
//! Why ramps are spread: an LLM server that receives many requests in the
//! same instant queues them all behind one prefill and reports an artificial
//! TTFT spike. Locust's `spawn_rate` gives the intended smoothness (e.g. two
//! users a second), so each ramp step's new users start at even offsets
//! across the step instead of together at its start.

pub mod arrivals;
pub mod cluster;
pub mod controller;
pub mod safety;
pub mod saturation;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scenario::{Arrival, LoadMode, Phase, TestConfig, Wait};

pub use controller::{Controller, StepEnd, StepWaiter};

/// What one request of the load does. The worker implements it (an LLM
/// request, then recording its outcome); tests use tasks that only sleep.
pub trait Task: Send + Sync + 'static {
    /// Runs one request of scenario `class` (index into the plan's classes).
    /// `scheduled` is when it was due: the arrival time in open loop, the
    /// moment the user became ready in closed loop. Must return promptly
    /// once `cancel` fires, having recorded the request as cancelled.
    fn run(&self, class: usize, scheduled: Instant, cancel: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// Receives the scheduling lag of every start: actual dispatch time minus
/// the time it was due (an open-loop arrival deadline, or the planned offset
/// of a spread user start). Lag shows the load generator itself falling
/// behind, which would otherwise look like server latency.
pub trait LagSink: Send + Sync + 'static {
    fn record_lag(&self, class: usize, lag: Duration);
    /// Open loop: `n` arrivals of `class` fell due but were never sent,
    /// because the run stopped while they waited for the in-flight cap.
    fn record_unsent(&self, class: usize, n: u64);
}

/// One scenario as load control sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPlan {
    pub name: String,
    /// Relative share of open-loop arrivals.
    pub weight: u32,
    /// Pause between a closed-loop user's requests.
    pub wait: Wait,
}

/// Everything the controller needs, taken from the test definition once.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Scenario order of the config; a class index is a position here.
    pub classes: Vec<ClassPlan>,
    pub mode: LoadMode,
    /// Open loop: cluster-total rate phases.
    pub phases: Vec<Phase>,
    pub arrival: Arrival,
    /// Gamma shape for [`Arrival::Gamma`].
    pub burstiness: f64,
    /// Open loop: cap on this worker's in-flight requests.
    pub max_in_flight: u32,
    /// Seeds every random draw (inter-arrivals, class picks, waits).
    pub seed: u64,
    /// How long a user removed by a ramp-down may finish its request.
    pub stop_timeout: Duration,
    /// Open loop: the master's phase clock start (Unix seconds).
    pub start_unix_s: Option<f64>,
}

impl LoadPlan {
    pub fn from_config(cfg: &TestConfig, seed: u64, stop_timeout: Duration) -> LoadPlan {
        LoadPlan {
            classes: cfg
                .scenarios
                .iter()
                .map(|s| ClassPlan {
                    name: s.name.clone(),
                    weight: s.weight,
                    wait: s.wait,
                })
                .collect(),
            mode: cfg.load.mode,
            phases: cfg.load.phases.clone(),
            arrival: cfg.load.arrival,
            burstiness: cfg.load.burstiness,
            max_in_flight: cfg.load.max_in_flight,
            seed,
            stop_timeout,
            start_unix_s: cfg.load.start_unix_s,
        }
    }

    /// The index of the class (scenario) called `name`.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_config_keeps_scenario_order() {
        let cfg = TestConfig::from_yaml(
            r#"
scenarios:
  - {name: A, provider: openai-chat, model: m, prompt_length: 10, output_length: 5}
  - {name: B, weight: 3, provider: anthropic, model: m, prompt_length: 10, output_length: 5,
     wait: {kind: pacing, seconds: 2}}
load: {mode: open, phases: [{rate: 5, duration_s: 10}], max_in_flight: 7}
"#,
        )
        .unwrap();
        let plan = LoadPlan::from_config(&cfg, 42, Duration::from_secs(3));
        assert_eq!(plan.classes.len(), 2);
        assert_eq!(plan.classes[1].weight, 3);
        assert_eq!(
            plan.classes[1].wait,
            Wait::Pacing {
                seconds: Duration::from_secs(2)
            }
        );
        assert_eq!(plan.mode, LoadMode::Open);
        assert_eq!(plan.max_in_flight, 7);
        assert_eq!(plan.class_index("B"), Some(1));
        assert_eq!(plan.class_index("C"), None);
    }
}
