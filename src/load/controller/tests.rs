//! Controller tests under tokio's paused clock: tasks only sleep and record
//! when they ran, so times are exact to the timer's millisecond.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::*;
use crate::load::ClassPlan;
use crate::scenario::{Arrival, LoadMode, Phase, Wait};

const MS: Duration = Duration::from_millis(1);

/// One finished (or cancelled) request, times relative to the test start.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    class: usize,
    scheduled: Duration,
    started: Duration,
    ended: Duration,
    cancelled: bool,
}

/// A task that sleeps `duration` (or until cancelled) and records itself.
struct Recorder {
    t0: Instant,
    duration: Duration,
    runs: Mutex<Vec<Run>>,
    /// Start offsets, recorded when a request begins.
    starts: Mutex<Vec<Duration>>,
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Recorder {
    fn new(duration: Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            t0: Instant::now(),
            duration,
            runs: Mutex::new(Vec::new()),
            starts: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    fn starts(&self) -> Vec<Duration> {
        let mut s = self.starts.lock().unwrap().clone();
        s.sort();
        s
    }

    fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }
}

impl Task for Recorder {
    async fn run(&self, class: usize, scheduled: Instant, cancel: CancellationToken) {
        let started = self.t0.elapsed();
        self.starts.lock().unwrap().push(started);
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let cancelled = tokio::select! {
            _ = sleep(self.duration) => false,
            _ = cancel.cancelled() => true,
        };
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.runs.lock().unwrap().push(Run {
            class,
            scheduled: scheduled - self.t0,
            started,
            ended: self.t0.elapsed(),
            cancelled,
        });
    }
}

#[derive(Default)]
struct Lags(Mutex<Vec<(usize, Duration)>>, AtomicU64);

impl LagSink for Lags {
    fn record_lag(&self, class: usize, lag: Duration) {
        self.0.lock().unwrap().push((class, lag));
    }

    fn record_unsent(&self, _class: usize, n: u64) {
        self.1.fetch_add(n, Ordering::SeqCst);
    }
}

fn closed(waits: &[Wait]) -> LoadPlan {
    LoadPlan {
        classes: waits
            .iter()
            .enumerate()
            .map(|(i, &wait)| ClassPlan {
                name: ["A", "B", "C"][i].into(),
                weight: 1,
                wait,
            })
            .collect(),
        mode: LoadMode::Closed,
        phases: Vec::new(),
        arrival: Arrival::Constant,
        burstiness: 1.0,
        max_in_flight: 10_000,
        seed: 1,
        stop_timeout: Duration::from_secs(2),
        start_unix_s: None,
    }
}

fn open(phases: &[(f64, f64, f64)], arrival: Arrival) -> LoadPlan {
    LoadPlan {
        mode: LoadMode::Open,
        phases: phases
            .iter()
            .map(|&(rate, duration_s, ramp_s)| Phase {
                rate,
                duration: crate::units::seconds_saturating(duration_s),
                ramp: crate::units::seconds_saturating(ramp_s),
            })
            .collect(),
        arrival,
        ..closed(&[Wait::None])
    }
}

fn targets(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|&(n, c)| (n.to_string(), c)).collect()
}

fn ms(d: &[Duration]) -> Vec<u128> {
    d.iter().map(|d| d.as_millis()).collect()
}

// ---- closed loop: ramps ----

#[tokio::test(start_paused = true)]
async fn ramp_step_spreads_starts_across_the_step() {
    let task = Recorder::new(Duration::from_secs(60));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    let end = c.apply(&targets(&[("A", 4)]), 4).wait().await;
    assert_eq!(end, StepEnd::Completed(targets(&[("A", 4)])));
    assert_eq!(ms(&task.starts()), [0, 250, 500, 750]);
    assert_eq!(c.in_flight(), 4);
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn step_length_is_the_interval_since_the_previous_apply() {
    let task = Recorder::new(Duration::from_secs(60));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    let first = c.apply(&targets(&[("A", 2)]), 2);
    sleep(Duration::from_millis(600)).await;
    assert!(matches!(first.wait().await, StepEnd::Completed(_)));
    c.apply(&targets(&[("A", 4)]), 4).wait().await;
    assert_eq!(ms(&task.starts()), [0, 500, 600, 900]);
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_user_ramp_never_bunches_starts() {
    // Locust at spawn_rate 2/s: one apply a second, two more users each time.
    let task = Recorder::new(Duration::from_secs(600));
    let lags = Arc::new(Lags::default());
    let mut c = Controller::with_lag_sink(task.clone(), closed(&[Wait::None]), lags.clone());
    for step in 1..=10 {
        c.apply(&targets(&[("A", 2 * step)]), 2 * step);
        sleep(Duration::from_secs(1)).await;
    }
    let starts = task.starts();
    assert_eq!(starts.len(), 20);
    // 2 users/s is half a start per 250 ms window: at most 1 in any window.
    for &from in &starts {
        let n = starts.iter().filter(|&&s| s >= from && s < from + 250 * MS).count();
        assert!(n <= 1, "{n} starts in 250 ms from {from:?}: {starts:?}");
    }
    assert_eq!(starts[19], Duration::from_millis(9500));
    // Every spread start reported its (zero, clock paused) lag.
    assert_eq!(lags.0.lock().unwrap().len(), 20);
    assert!(lags.0.lock().unwrap().iter().all(|&(_, lag)| lag < 2 * MS));
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn classes_are_interleaved_within_a_step() {
    let task = Recorder::new(Duration::from_secs(60));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None, Wait::None]));
    c.apply(&targets(&[("A", 2), ("B", 2)]), 4).wait().await;
    let mut runs = Vec::new();
    c.stop(Duration::ZERO).await;
    runs.extend(task.runs());
    runs.sort_by_key(|r| r.started);
    let order: Vec<usize> = runs.iter().map(|r| r.class).collect();
    assert_eq!(order, [0, 1, 0, 1]);
}

#[test]
fn interleave_follows_pro_rata_shares() {
    assert_eq!(interleave(&[2, 1]), [0, 1, 0]);
    assert_eq!(interleave(&[0, 3]), [1, 1, 1]);
    assert_eq!(interleave(&[]), Vec::<usize>::new());
}

#[tokio::test(start_paused = true)]
async fn unknown_classes_are_ignored_and_counts_list_every_class() {
    let task = Recorder::new(Duration::from_secs(60));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None, Wait::None]));
    let end = c.apply(&targets(&[("A", 2), ("Nope", 5)]), 7).wait().await;
    assert_eq!(end, StepEnd::Completed(targets(&[("A", 2), ("B", 0)])));
    assert_eq!(c.user_counts(), targets(&[("A", 2), ("B", 0)]));
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn ramp_down_stops_newest_first_and_cuts_at_stop_timeout() {
    let task = Recorder::new(Duration::from_secs(10));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    c.apply(&targets(&[("A", 4)]), 4).wait().await; // users at 0, 250, 500, 750 ms
    sleep(Duration::from_millis(250)).await; // t = 1 s
    let end = c.apply(&targets(&[("A", 2)]), 2).wait().await;
    assert_eq!(end, StepEnd::Completed(targets(&[("A", 2)])));
    assert_eq!(c.user_counts()["A"], 2);
    sleep(Duration::from_secs(3)).await; // t = 4 s
    let runs = task.runs();
    // The two newest were cut when stop_timeout (2 s) ran out, at t = 3 s.
    let mut cut: Vec<_> = runs
        .iter()
        .map(|r| (r.scheduled.as_millis(), r.ended.as_millis(), r.cancelled))
        .collect();
    cut.sort();
    assert_eq!(cut, [(500, 3000, true), (750, 3000, true)]);
    assert_eq!(c.in_flight(), 2);
    assert_eq!(c.tasks_alive(), 2);
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn ramp_down_lets_the_request_finish_within_stop_timeout() {
    let task = Recorder::new(Duration::from_secs(1));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    c.apply(&targets(&[("A", 2)]), 2).wait().await; // users at 0 and 500 ms
    sleep(Duration::from_millis(300)).await; // t = 800 ms
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_millis(5000)).await; // t = 5.8 s
    let runs = task.runs();
    let retired: Vec<_> = runs.iter().filter(|r| r.scheduled == 500 * MS).collect();
    assert_eq!(retired.len(), 1, "the retired user starts no new request");
    assert_eq!((retired[0].ended, retired[0].cancelled), (1500 * MS, false));
    // The remaining user runs back to back: 0, 1, 2, 3, 4, 5 s.
    assert_eq!(task.starts().len(), 2 + 5);
    assert_eq!(c.tasks_alive(), 1);
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_apply_supersedes_a_step_in_progress() {
    let task = Recorder::new(Duration::from_secs(60));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    let first = c.apply(&targets(&[("A", 4)]), 4); // 0, 250, 500, 750 ms
    sleep(Duration::from_millis(300)).await; // two started
    let second = c.apply(&targets(&[("A", 6)]), 6); // 4 more over 300 ms
    assert_eq!(first.wait().await, StepEnd::Superseded);
    assert_eq!(second.wait().await, StepEnd::Completed(targets(&[("A", 6)])));
    assert_eq!(ms(&task.starts()), [0, 250, 300, 375, 450, 525]);
    c.stop(Duration::ZERO).await;
}

// ---- closed loop: waits ----

async fn starts_with_wait(wait: Wait, duration: Duration, run_for: Duration) -> Vec<u128> {
    let task = Recorder::new(duration);
    let mut c = Controller::new(task.clone(), closed(&[wait]));
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(run_for).await;
    c.stop(Duration::ZERO).await;
    ms(&task.starts())
}

#[tokio::test(start_paused = true)]
async fn wait_none_runs_back_to_back() {
    assert_eq!(
        starts_with_wait(Wait::None, 400 * MS, 1300 * MS).await,
        [0, 400, 800, 1200]
    );
}

#[tokio::test(start_paused = true)]
async fn wait_constant_pauses_after_each_request() {
    let starts = starts_with_wait(
        Wait::Constant {
            seconds: Duration::from_secs(1),
        },
        100 * MS,
        3500 * MS,
    )
    .await;
    assert_eq!(starts, [0, 1100, 2200, 3300]);
}

#[tokio::test(start_paused = true)]
async fn wait_between_draws_uniform_pauses() {
    let wait = Wait::Between {
        min: Duration::from_secs(1),
        max: Duration::from_secs(2),
    };
    let starts = starts_with_wait(wait, Duration::ZERO, Duration::from_secs(300)).await;
    let gaps: Vec<u128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| (1000..=2001).contains(&g)), "{gaps:?}");
    let mean = gaps.iter().sum::<u128>() as f64 / gaps.len() as f64;
    assert!((mean - 1500.0).abs() < 100.0, "mean gap {mean}");
    assert!(gaps.iter().any(|&g| g != gaps[0]));
}

#[tokio::test(start_paused = true)]
async fn wait_pacing_starts_a_request_every_period() {
    let pacing = Wait::Pacing {
        seconds: Duration::from_secs(1),
    };
    assert_eq!(
        starts_with_wait(pacing, 300 * MS, 3500 * MS).await,
        [0, 1000, 2000, 3000]
    );
    // A request longer than the period is followed at once.
    assert_eq!(starts_with_wait(pacing, 1500 * MS, 3500 * MS).await, [0, 1500, 3000]);
}

// ---- open loop ----

fn count_in(starts: &[Duration], from_ms: u32, to_ms: u32) -> usize {
    let (a, b) = (from_ms * MS, to_ms * MS);
    starts.iter().filter(|&&s| s > a && s <= b).count()
}

#[tokio::test(start_paused = true)]
async fn open_loop_follows_phases_and_linear_ramps() {
    // 10/s for 2 s, then a 1 s ramp to 20/s and 1 s held: 20 + 15 + 20.
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(
        task.clone(),
        open(&[(10.0, 2.0, 0.0), (20.0, 2.0, 1.0)], Arrival::Constant),
    );
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_millis(3990)).await;
    assert!(!c.is_schedule_finished());
    sleep(Duration::from_millis(1000)).await;
    assert!(c.is_schedule_finished());
    let starts = task.starts();
    assert_eq!(count_in(&starts, 0, 2000), 20);
    // Ramp 10 -> 20/s: 6.25 arrivals in its first half, 8.75 in the second.
    let (first, second) = (count_in(&starts, 2000, 2500), count_in(&starts, 2500, 3000));
    assert!(
        (6..=7).contains(&first) && (8..=9).contains(&second),
        "{first} {second}"
    );
    assert_eq!(first + second, 15);
    assert!((19..=21).contains(&count_in(&starts, 3000, 4000)));
    assert!((54..=55).contains(&starts.len()), "{}", starts.len());
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn open_loop_first_phase_ramps_from_zero() {
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(task.clone(), open(&[(20.0, 4.0, 2.0)], Arrival::Constant));
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_secs(5)).await;
    let starts = task.starts();
    // Rate 10 t over the ramp: 5 arrivals in [0, 1], 15 in [1, 2], 40 held.
    assert_eq!(count_in(&starts, 0, 1000), 5);
    assert_eq!(count_in(&starts, 1000, 2000), 15);
    assert!((39..=40).contains(&count_in(&starts, 2000, 4000)));
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn open_loop_poisson_rate_is_right_on_average() {
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(task.clone(), open(&[(50.0, 100.0, 0.0)], Arrival::Poisson));
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_secs(101)).await;
    let n = task.starts().len() as f64;
    // 5000 expected, standard deviation about 71.
    assert!((n - 5000.0).abs() < 300.0, "{n}");
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn open_loop_picks_classes_by_weight() {
    let task = Recorder::new(Duration::ZERO);
    let mut plan = open(&[(100.0, 40.0, 0.0)], Arrival::Constant);
    plan.classes = closed(&[Wait::None, Wait::None]).classes;
    plan.classes[1].weight = 3;
    let mut c = Controller::new(task.clone(), plan);
    c.apply(&targets(&[("A", 1), ("B", 1)]), 2).wait().await;
    sleep(Duration::from_secs(41)).await;
    let runs = task.runs();
    let b = runs.iter().filter(|r| r.class == 1).count() as f64 / runs.len() as f64;
    assert!((b - 0.75).abs() < 0.03, "{b}");
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_caps_requests_and_late_starts_report_lag() {
    let task = Recorder::new(Duration::from_secs(1));
    let lags = Arc::new(Lags::default());
    let mut plan = open(&[(10.0, 3.0, 0.0)], Arrival::Constant);
    plan.max_in_flight = 2;
    let mut c = Controller::with_lag_sink(task.clone(), plan, lags.clone());
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_millis(1150)).await;
    assert_eq!(c.in_flight(), 2);
    sleep(Duration::from_secs(3)).await;
    assert_eq!(task.peak.load(Ordering::SeqCst), 2);
    let runs = task.runs();
    // The third arrival (due 300 ms) waited for the first to end (1100 ms)
    // and still carries its original due time.
    let third = runs.iter().find(|r| r.scheduled == 300 * MS).unwrap();
    assert_eq!(third.started, 1100 * MS);
    let lags = lags.0.lock().unwrap().clone();
    assert_eq!(lags.len(), task.starts().len(), "one lag per dispatched arrival");
    assert_eq!(lags[2].1, 800 * MS);
    assert!(lags.iter().skip(2).all(|&(_, lag)| lag > Duration::ZERO));
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn two_workers_with_half_the_users_each_send_half_the_rate() {
    let plan = |seed| LoadPlan {
        seed,
        ..open(&[(20.0, 10.0, 0.0)], Arrival::Constant)
    };
    let (t1, t2) = (Recorder::new(Duration::ZERO), Recorder::new(Duration::ZERO));
    let mut c1 = Controller::new(t1.clone(), plan(1));
    let mut c2 = Controller::new(t2.clone(), plan(2));
    c1.apply(&targets(&[("A", 3)]), 6).wait().await;
    c2.apply(&targets(&[("A", 3)]), 6).wait().await;
    sleep(Duration::from_secs(11)).await;
    assert_eq!(t1.starts().len(), 100);
    assert_eq!(t2.starts().len(), 100);
    assert_eq!(c1.user_counts(), targets(&[("A", 3)]));
    c1.stop(Duration::ZERO).await;
    c2.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn zero_share_sends_nothing_until_users_arrive() {
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(task.clone(), open(&[(10.0, 10.0, 0.0)], Arrival::Constant));
    c.apply(&targets(&[("A", 0)]), 4).wait().await;
    sleep(Duration::from_secs(5)).await;
    assert!(task.starts().is_empty());
    c.apply(&targets(&[("A", 1)]), 0).wait().await; // no cluster count: whole rate
    sleep(Duration::from_secs(6)).await;
    assert!((49..=50).contains(&task.starts().len()), "{}", task.starts().len());
    assert!(c.is_schedule_finished());
    c.stop(Duration::ZERO).await;
}

// ---- stop ----

#[tokio::test(start_paused = true)]
async fn stop_lets_requests_finish_within_grace() {
    let task = Recorder::new(Duration::from_secs(1));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    c.apply(&targets(&[("A", 2)]), 2).wait().await;
    let t = Instant::now();
    c.stop(Duration::from_secs(5)).await;
    // The step completed at 500 ms; that user's request ends at 1.5 s.
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    assert!(task.runs().iter().all(|r| !r.cancelled));
    assert_eq!(Arc::strong_count(&task), 1, "every spawned task has ended");
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_stuck_requests_after_grace() {
    let task = Recorder::new(Duration::from_secs(3600));
    let mut c = Controller::new(task.clone(), open(&[(10.0, 60.0, 0.0)], Arrival::Constant));
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_millis(1050)).await;
    assert_eq!(c.in_flight(), 10);
    let t = Instant::now();
    c.stop(Duration::from_secs(2)).await;
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    let runs = task.runs();
    assert_eq!(runs.len(), 10);
    assert!(runs.iter().all(|r| r.cancelled));
    assert_eq!(Arc::strong_count(&task), 1, "every spawned task has ended");
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_step_ends_it_as_stopped() {
    let task = Recorder::new(Duration::from_secs(3600));
    let mut c = Controller::new(task.clone(), closed(&[Wait::None]));
    let step = c.apply(&targets(&[("A", 10)]), 10);
    sleep(Duration::from_millis(250)).await;
    c.stop(Duration::ZERO).await;
    assert_eq!(step.wait().await, StepEnd::Stopped);
    assert_eq!(task.starts().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_stops_on_a_multi_thread_runtime() {
    let task = Recorder::new(10 * MS);
    let mut c = Controller::new(task.clone(), closed(&[Wait::None, Wait::None]));
    let step = c.apply(&targets(&[("A", 3), ("B", 3)]), 6);
    sleep(100 * MS).await;
    c.stop(Duration::from_millis(100)).await;
    assert_eq!(step.wait().await, StepEnd::Stopped);
    assert!(!task.starts().is_empty());
    assert_eq!(Arc::strong_count(&task), 1, "every spawned task has ended");
}

#[tokio::test(start_paused = true)]
async fn arrivals_stuck_behind_the_cap_at_stop_are_counted_as_unsent() {
    // 10 req/s, each request lasts 1 s, cap 1: by 3.05 s, 30 arrivals were
    // due (0.1, 0.2, ... 3.0 s) but only 3 could start (at 0.1, 1.1, 2.1 s).
    let task = Recorder::new(Duration::from_secs(1));
    let lags = Arc::new(Lags::default());
    let mut plan = open(&[(10.0, 10.0, 0.0)], Arrival::Constant);
    plan.max_in_flight = 1;
    let mut c = Controller::with_lag_sink(task.clone(), plan, lags.clone());
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_millis(3050)).await;
    c.stop(Duration::ZERO).await;
    let sent = task.runs().len() as u64;
    let unsent = lags.1.load(Ordering::SeqCst);
    assert_eq!(
        sent + unsent,
        30,
        "sent {sent} + unsent {unsent}: every due arrival accounted for"
    );
    assert!(unsent > 0);
}

#[tokio::test(start_paused = true)]
async fn a_share_change_takes_effect_while_the_scheduler_sleeps() {
    // 1 req/s cluster rate; a share of 1/20 means one arrival per 20 s.
    // At 1 s the share becomes 1/2: arrivals must follow every ~2 s, not
    // wait for the 20 s gap drawn at the old share.
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(task.clone(), open(&[(1.0, 60.0, 0.0)], Arrival::Constant));
    c.apply(&targets(&[("A", 1)]), 20).wait().await;
    sleep(Duration::from_secs(1)).await;
    c.apply(&targets(&[("A", 10)]), 20).wait().await;
    sleep(Duration::from_secs(6)).await;
    let n = task.starts().len();
    assert!((2..=4).contains(&n), "{n} arrivals in 6 s at half of 1 req/s");
    c.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_joining_late_starts_at_the_masters_current_phase() {
    // Phases 10 s at 2 req/s then 10 s at 20 req/s, started 12 s ago on the
    // master: a worker joining now must send at 20 req/s at once.
    let mut plan = open(&[(2.0, 10.0, 0.0), (20.0, 10.0, 0.0)], Arrival::Constant);
    plan.start_unix_s = Some(crate::metrics::unix_now() - 12.0);
    let task = Recorder::new(Duration::ZERO);
    let mut c = Controller::new(task.clone(), plan);
    c.apply(&targets(&[("A", 1)]), 1).wait().await;
    sleep(Duration::from_secs(2)).await;
    let n = task.starts().len();
    assert!((38..=41).contains(&n), "{n} arrivals in 2 s of the 20 req/s phase");
    sleep(Duration::from_secs(10)).await;
    // The master's schedule ends 8 s after the join: 8 s x 20 req/s.
    let n = task.starts().len();
    assert!(
        (158..=161).contains(&n),
        "{n}: the schedule ends with the master's last phase"
    );
    c.stop(Duration::ZERO).await;
}
