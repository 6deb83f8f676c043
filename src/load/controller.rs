//! The load controller: turns Locust's ramp steps into running users
//! (closed loop) or into this worker's share of an arrival schedule (open
//! loop), and stops it all on request.
//!
//! Owns the spawned user, starter and scheduler tasks and their
//! cancellation. It must not record outcomes (the [`Task`] does) nor speak
//! the Locust protocol (the caller passes targets in and reports counts).
//!
//! Closed loop. Locust's master sends absolute per-class user targets once
//! per ramp step (about a second apart). New users of a step are started at
//! even offsets across the step (`i * step / k` for `k` new users) rather
//! than together, because a burst of simultaneous first requests queues
//! behind one prefill and shows up as a false TTFT spike. Reductions stop
//! the newest users first; a stopped user's in-flight request may finish
//! within `plan.stop_timeout`, then its cancel token fires.
//!
//! Open loop. Locust still sends user targets, but they only decide this
//! worker's share of the cluster rate (own users / cluster users). One
//! scheduler task sleeps to absolute deadlines (so errors never accumulate)
//! and dispatches each arrival in its own task, bounded by `max_in_flight`.
//! A late dispatch keeps its original deadline as `scheduled`, so the
//! waiting counts as queue time, and the lateness goes to the [`LagSink`].
//!
//! Shutdown is layered: `stopping` means "start nothing new", `kill` is the
//! parent of every request's cancel token.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::arrivals::{InterArrival, RateSchedule};
use super::cluster::ClusterSlot;
use super::{LagSink, LoadPlan, Task};
use crate::scenario::{LoadMode, Wait};

#[cfg(test)]
mod tests;

/// Step length assumed for the first apply (Locust sends a step a second).
pub const DEFAULT_STEP: Duration = Duration::from_secs(1);
/// Shortest step a ramp is spread over; quicker applies start users almost at once.
pub const MIN_STEP: Duration = Duration::from_millis(50);
/// Longest step a ramp is spread over, so a late apply cannot stall a ramp.
pub const MAX_STEP: Duration = Duration::from_secs(5);

/// How a ramp step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// Every user of the step started; the running users per class.
    Completed(BTreeMap<String, u32>),
    /// A newer apply took over before all users started.
    Superseded,
    /// The controller stopped first.
    Stopped,
}

/// Resolves when one apply's starts have all happened.
#[derive(Debug)]
pub struct StepWaiter {
    rx: oneshot::Receiver<StepEnd>,
}

impl StepWaiter {
    fn done(end: StepEnd) -> StepWaiter {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(end);
        StepWaiter { rx }
    }

    pub async fn wait(self) -> StepEnd {
        self.rx.await.unwrap_or(StepEnd::Stopped)
    }
}

/// A running closed-loop user, as the controller holds it.
struct User {
    /// Fired to take the user out of the load (ramp-down).
    retire: CancellationToken,
}

/// State shared by the controller and its tasks.
struct Shared<T> {
    task: Arc<T>,
    plan: LoadPlan,
    lag: Option<Arc<dyn LagSink>>,
    /// Closed loop: running users per class, oldest first.
    users: Mutex<Vec<Vec<User>>>,
    /// Open loop: the user targets last applied (reported as counts).
    nominal: Mutex<Vec<u32>>,
    in_flight: AtomicUsize,
    schedule_finished: AtomicBool,
    /// Seeds for users' wait-time draws.
    next_user: AtomicU64,
    /// This worker's shift among the cluster's starts (see `load::cluster`).
    slot: Mutex<ClusterSlot>,
    /// Start nothing new.
    stopping: CancellationToken,
    /// Parent of every request's cancel token.
    kill: CancellationToken,
    tracker: TaskTracker,
}

/// Decrements the in-flight count when a request ends (or is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Task> Shared<T> {
    fn users(&self) -> MutexGuard<'_, Vec<Vec<User>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counts(&self) -> BTreeMap<String, u32> {
        let counts: Vec<u32> = match self.plan.mode {
            LoadMode::Closed => self.users().iter().map(|u| u.len() as u32).collect(),
            LoadMode::Open => self.nominal.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        self.plan.classes.iter().map(|c| c.name.clone()).zip(counts).collect()
    }

    fn record_unsent(&self, class: usize, n: u64) {
        if let Some(sink) = &self.lag {
            sink.record_unsent(class, n);
        }
    }

    fn record_lag(&self, class: usize, due: Instant) {
        if let Some(sink) = &self.lag {
            sink.record_lag(class, Instant::now().saturating_duration_since(due));
        }
    }

    async fn run(&self, class: usize, scheduled: Instant, cancel: CancellationToken) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&self.in_flight);
        self.task.run(class, scheduled, cancel).await;
    }
}

/// Drives the load of one worker. Create it inside a tokio runtime.
pub struct Controller<T: Task> {
    shared: Arc<Shared<T>>,
    last_apply: Option<Instant>,
    /// Fired when the closed-loop step in progress is superseded.
    step: CancellationToken,
    /// Open loop: this worker's share of the cluster rate, once started.
    share: Option<watch::Sender<f64>>,
}

impl<T: Task> Controller<T> {
    pub fn new(task: Arc<T>, plan: LoadPlan) -> Controller<T> {
        Self::build(task, plan, None)
    }

    pub fn with_lag_sink(task: Arc<T>, plan: LoadPlan, lag: Arc<dyn LagSink>) -> Controller<T> {
        Self::build(task, plan, Some(lag))
    }

    fn build(task: Arc<T>, plan: LoadPlan, lag: Option<Arc<dyn LagSink>>) -> Controller<T> {
        let n = plan.classes.len();
        Controller {
            shared: Arc::new(Shared {
                task,
                lag,
                users: Mutex::new((0..n).map(|_| Vec::new()).collect()),
                nominal: Mutex::new(vec![0; n]),
                in_flight: AtomicUsize::new(0),
                schedule_finished: AtomicBool::new(false),
                next_user: AtomicU64::new(0),
                slot: Mutex::new(ClusterSlot::solo()),
                stopping: CancellationToken::new(),
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                plan,
            }),
            last_apply: None,
            step: CancellationToken::new(),
            share: None,
        }
    }

    /// Applies one Locust ramp step: absolute user targets per class name
    /// (known classes missing from `targets` count as 0; unknown names are
    /// ignored, the caller reports them) and the cluster's total users.
    pub fn apply(&mut self, targets: &BTreeMap<String, u32>, cluster_users: u32) -> StepWaiter {
        let now = Instant::now();
        let step_len = self
            .last_apply
            .map_or(DEFAULT_STEP, |t| now - t)
            .clamp(MIN_STEP, MAX_STEP);
        self.last_apply = Some(now);
        self.step.cancel();
        self.step = CancellationToken::new();
        if self.shared.stopping.is_cancelled() {
            return StepWaiter::done(StepEnd::Stopped);
        }
        let plan = &self.shared.plan;
        let wanted: Vec<u32> = plan
            .classes
            .iter()
            .map(|c| targets.get(&c.name).copied().unwrap_or(0))
            .collect();
        match plan.mode {
            LoadMode::Closed => self.apply_closed(&wanted, now, step_len),
            LoadMode::Open => {
                self.apply_open(wanted, cluster_users);
                StepWaiter::done(StepEnd::Completed(self.shared.counts()))
            }
        }
    }

    fn apply_closed(&mut self, wanted: &[u32], start: Instant, step_len: Duration) -> StepWaiter {
        let mut adds = vec![0; wanted.len()];
        for (class, users) in self.shared.users().iter_mut().enumerate() {
            let want = wanted[class] as usize;
            if want >= users.len() {
                adds[class] = want - users.len();
            } else {
                // Newest first: they are at the end.
                for user in users.drain(want..).rev() {
                    user.retire.cancel();
                }
            }
        }
        let order = interleave(&adds);
        if order.is_empty() {
            return StepWaiter::done(StepEnd::Completed(self.shared.counts()));
        }
        let (tx, rx) = oneshot::channel();
        let (shared, step) = (self.shared.clone(), self.step.clone());
        self.shared.tracker.spawn(async move {
            let end = start_users(&shared, &step, &order, start, step_len).await;
            let _ = tx.send(end);
        });
        StepWaiter { rx }
    }

    fn apply_open(&mut self, wanted: Vec<u32>, cluster_users: u32) {
        let own: u32 = wanted.iter().sum();
        let share = match cluster_users {
            0 => f64::from(u8::from(own > 0)),
            n => (f64::from(own) / f64::from(n)).min(1.0),
        };
        *self.shared.nominal.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
        match &self.share {
            Some(tx) => {
                tx.send_replace(share);
            }
            None => {
                let (tx, rx) = watch::channel(share);
                self.share = Some(tx);
                let shared = self.shared.clone();
                let origin = phase_origin(shared.plan.start_unix_s);
                self.shared
                    .tracker
                    .spawn(async move { schedule(shared, rx, origin).await });
            }
        }
    }

    /// Places this worker in the cluster: later step starts and the next
    /// open-loop arrival draw are shifted by its fraction of an interval.
    pub fn set_slot(&self, slot: ClusterSlot) {
        *self.shared.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
    }

    /// Running users per class (all classes of the plan). In open loop, the
    /// user targets last applied.
    pub fn user_counts(&self) -> BTreeMap<String, u32> {
        self.shared.counts()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Open loop: the last phase has ended and no more arrivals will come.
    pub fn is_schedule_finished(&self) -> bool {
        self.shared.schedule_finished.load(Ordering::Relaxed)
    }

    /// Spawned tasks still running (users, step starters, the scheduler,
    /// open-loop requests, stopping users finishing a request).
    pub fn tasks_alive(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Starts nothing new; lets in-flight requests finish within `grace`,
    /// then cancels the rest and waits until every task has ended.
    pub async fn stop(self, grace: Duration) {
        let shared = self.shared.clone();
        // `stopping` first: a step that then sees its token fired ends as Stopped.
        shared.stopping.cancel();
        self.step.cancel();
        shared.tracker.close();
        if timeout(grace, shared.tracker.wait()).await.is_err() {
            shared.kill.cancel();
            shared.tracker.wait().await;
        }
        shared.kill.cancel();
        shared.users().iter_mut().for_each(Vec::clear);
        shared.nominal.lock().unwrap_or_else(|e| e.into_inner()).fill(0);
    }
}

impl<T: Task> Drop for Controller<T> {
    /// A controller dropped without `stop` cancels everything at once.
    fn drop(&mut self) {
        self.shared.stopping.cancel();
        self.shared.kill.cancel();
    }
}

/// Orders `adds[c]` starts of each class so that the classes are mixed
/// evenly through the step (the class furthest behind its pro-rata share
/// goes next).
fn interleave(adds: &[usize]) -> Vec<usize> {
    let total: usize = adds.iter().sum();
    let mut started = vec![0; adds.len()];
    let mut order = Vec::with_capacity(total);
    for i in 1..=total {
        let behind = |c: usize| adds[c] as f64 * i as f64 / total as f64 - started[c] as f64;
        let next = (0..adds.len())
            .filter(|&c| started[c] < adds[c])
            .max_by(|&a, &b| behind(a).total_cmp(&behind(b)).then(b.cmp(&a)))
            .expect("a class has starts left");
        started[next] += 1;
        order.push(next);
    }
    order
}

/// Starts the users of one step at `start + i * step_len / k`.
async fn start_users<T: Task>(
    shared: &Arc<Shared<T>>,
    step: &CancellationToken,
    order: &[usize],
    start: Instant,
    step_len: Duration,
) -> StepEnd {
    let interrupted = || {
        if shared.stopping.is_cancelled() {
            StepEnd::Stopped
        } else {
            StepEnd::Superseded
        }
    };
    let k = order.len() as u32;
    // Shift the whole grid by this worker's share of one start interval,
    // so the cluster's workers do not start their users together.
    let slot = *shared.slot.lock().unwrap_or_else(|e| e.into_inner());
    let start = start + slot.offset(step_len / k);
    for (i, &class) in order.iter().enumerate() {
        let due = start + step_len * i as u32 / k;
        tokio::select! {
            _ = step.cancelled() => return interrupted(),
            _ = shared.stopping.cancelled() => return StepEnd::Stopped,
            _ = sleep_until(due) => {}
        }
        {
            let mut users = shared.users();
            // Checked under the lock that `apply` counts users under.
            if step.is_cancelled() || shared.stopping.is_cancelled() {
                return interrupted();
            }
            let retire = CancellationToken::new();
            let seed = shared.plan.seed
                ^ shared
                    .next_user
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            shared
                .tracker
                .spawn(user_loop(shared.clone(), class, due, retire.clone(), seed));
            users[class].push(User { retire });
        }
        shared.record_lag(class, due);
    }
    StepEnd::Completed(shared.counts())
}

/// One closed-loop user: request, wait, repeat, until retired or stopped.
async fn user_loop<T: Task>(
    shared: Arc<Shared<T>>,
    class: usize,
    mut ready: Instant,
    retire: CancellationToken,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let wait = shared.plan.classes[class].wait;
    loop {
        if retire.is_cancelled() || shared.stopping.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let cancel = shared.kill.child_token();
        let request = shared.run(class, ready, cancel.clone());
        tokio::pin!(request);
        tokio::select! {
            _ = &mut request => {}
            _ = retire.cancelled() => {
                if timeout(shared.plan.stop_timeout, &mut request).await.is_err() {
                    cancel.cancel();
                    request.await;
                }
                return;
            }
        }
        let now = Instant::now();
        ready = match wait {
            Wait::None => now,
            Wait::Constant { seconds } => now + secs(seconds),
            Wait::Between { min_s, max_s } if min_s < max_s => now + secs(rng.random_range(min_s..=max_s)),
            Wait::Between { min_s, .. } => now + secs(min_s),
            // Locust's constant_pacing: the next start is a period after
            // this one, or at once if the request overran the period.
            Wait::Pacing { seconds } => (started + secs(seconds)).max(now),
        };
        if ready <= Instant::now() {
            // No pause due: go on at once. A zero sleep would still wait for
            // tokio's next 1 ms timer tick, capping a user near 1,000 req/s.
            // Yield, so that a request failing without awaiting anything
            // cannot monopolise the thread.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = retire.cancelled() => return,
            _ = shared.stopping.cancelled() => return,
            _ = sleep_until(ready) => {}
        }
    }
}

/// The instant the phases start: the master's clock when it sent one (and
/// it is in the past, within a day), else now.
fn phase_origin(start_unix_s: Option<f64>) -> Instant {
    let now = Instant::now();
    let Some(start) = start_unix_s else { return now };
    let ago = crate::metrics::unix_now() - start;
    if !(0.0..86_400.0).contains(&ago) {
        return now;
    }
    now.checked_sub(secs(ago)).unwrap_or(now)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// The open-loop scheduler: arrivals for `share` of the cluster rate, from
/// `origin` until the last phase ends.
async fn schedule<T: Task>(shared: Arc<Shared<T>>, mut share: watch::Receiver<f64>, origin: Instant) {
    let plan = &shared.plan;
    let rates = RateSchedule::new(&plan.phases);
    let end = origin + secs(rates.end());
    let mut gaps = InterArrival::new(plan.arrival, plan.burstiness, plan.seed);
    let mut rng = StdRng::seed_from_u64(plan.seed.rotate_left(32) ^ 0x5EED);
    let classes = WeightedIndex::new(plan.classes.iter().map(|c| c.weight)).ok();
    let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1) as usize));
    // Seconds since origin of the previous arrival. A worker that starts
    // after the master's phase clock (warm-up, a late join) begins at the
    // current point of the schedule, not with a backlog.
    let mut t = origin.elapsed().as_secs_f64();
    // The first draw after a (re)start is stretched by this worker's cluster
    // fraction, so workers that got the same step at once do not fire in
    // lockstep (see `load::cluster`).
    let mut fresh = true;
    loop {
        let s = *share.borrow_and_update();
        let stretch = if fresh {
            fresh = false;
            1.0 + shared.slot.lock().unwrap_or_else(|e| e.into_inner()).fraction()
        } else {
            1.0
        };
        // With no share, nothing is due before the schedule ends.
        let next = if s > 0.0 {
            let Some(next) = rates.advance(t, gaps.next_gap() * stretch / s) else {
                break;
            };
            Some(next)
        } else {
            None
        };
        let due = next.map_or(end, |n| origin + secs(n));
        tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            changed = share.changed() => {
                // A ramp step changed this worker's share: draw the next
                // gap afresh at the new share from now.
                if changed.is_err() {
                    return;
                }
                t = f64::max(t, origin.elapsed().as_secs_f64());
                fresh = true;
                continue;
            }
            _ = sleep_until(due) => {}
        }
        let Some(next) = next else { break };
        t = next;
        let class = classes.as_ref().map_or(0, |w| w.sample(&mut rng));
        let permit = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => {
                // Stopped while waiting for the in-flight cap: this arrival
                // and every one due since were never sent. Count them.
                shared.record_unsent(class, 1);
                let now_t = origin.elapsed().as_secs_f64();
                while let Some(next) = rates.advance(t, gaps.next_gap() / s) {
                    if next > now_t {
                        break;
                    }
                    t = next;
                    let class = classes.as_ref().map_or(0, |w| w.sample(&mut rng));
                    shared.record_unsent(class, 1);
                }
                return;
            }
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        shared.record_lag(class, due);
        let cancel = shared.kill.child_token();
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            task_shared.run(class, due, cancel).await;
            drop(permit);
        });
    }
    // Wait out the schedule so "finished" means the last phase is over.
    tokio::select! {
        _ = shared.stopping.cancelled() => return,
        _ = sleep_until(end) => {}
    }
    shared.schedule_finished.store(true, Ordering::Relaxed);
}
