//! Is the load generator keeping up? A worker that cannot is a broken
//! instrument: its timestamps are taken late (a byte that arrived at 57 ms
//! is read at 346 ms), its open-loop arrivals bunch up, and the numbers look
//! like server latency. So the worker watches itself and says so.
//!
//! Three signals, each measured, none estimated:
//! - **runtime lag**: a probe task sleeps [`PROBE_INTERVAL`] over and over
//!   and measures how late it wakes. Every task of the worker (request
//!   sending, SSE reading, timestamping) shares this runtime, so when the
//!   probe wakes late, reads are taken late too;
//! - **scheduler lag**: how late each start was against its due time (an
//!   open-loop arrival, a spread ramp start), fed by [`SaturationFeed`];
//! - **unsent arrivals**: open-loop arrivals that never left because the
//!   in-flight cap was full.
//!
//! [`Detector`] turns them into a verdict once per [`WINDOW`]: a window is
//! *late* when the median probe overshoot exceeds [`PROBE_LATE`], or more
//! than half the starts were later than [`START_LATE`], or any arrival went
//! unsent. [`WINDOWS_TO_MARK`] late windows in a row mark the worker
//! saturated (one busy moment, such as a ramp step, is not saturation). The
//! mark is reported once per run; the master logs it, shows it and fails the
//! exit code (see `locustfiles/tokenswarm_master/plugin.py`).
//!
//! The thresholds are far above what an idle runtime shows (tokio's timer
//! has 1 ms granularity, so a healthy probe overshoots by about 1 ms) and far
//! below what a saturated one shows (tens to hundreds of ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the probe wakes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// One verdict per window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A window whose median probe overshoot is above this is late.
pub const PROBE_LATE: Duration = Duration::from_millis(5);
/// A start later than this against its due time counts as a late start.
pub const START_LATE: Duration = Duration::from_millis(10);
/// Late windows in a row before the worker is marked saturated.
pub const WINDOWS_TO_MARK: u32 = 3;
/// Probe samples kept per window (100 expected; more cannot happen unless
/// the clock jumps, and are dropped).
const MAX_SAMPLES: usize = 1024;

/// Counters the load controller's lag sink bumps; the probe reads and resets
/// them once per window. Lock-free: it sits on the hot path of every start.
#[derive(Debug, Default)]
pub struct SaturationFeed {
    starts: AtomicU64,
    late_starts: AtomicU64,
    unsent: AtomicU64,
}

impl SaturationFeed {
    pub fn record_start(&self, lag: Duration) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        if lag > START_LATE {
            self.late_starts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_unsent(&self, n: u64) {
        self.unsent.fetch_add(n, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64, u64) {
        (
            self.starts.swap(0, Ordering::Relaxed),
            self.late_starts.swap(0, Ordering::Relaxed),
            self.unsent.swap(0, Ordering::Relaxed),
        )
    }
}

/// One window's measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSample {
    /// How late the probe woke, each time it woke.
    pub overshoots: Vec<Duration>,
    pub starts: u64,
    pub late_starts: u64,
    pub unsent: u64,
}

/// Why a window was late, in words for the master's log.
fn late_reason(w: &WindowSample) -> Option<String> {
    let mut sorted = w.overshoots.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied();
    if let Some(m) = median.filter(|m| *m > PROBE_LATE) {
        return Some(format!(
            "its runtime wakes {} ms late (median; healthy is about 1 ms), so response bytes are read and timestamped late",
            m.as_millis()
        ));
    }
    if w.starts > 0 && w.late_starts.saturating_mul(2) > w.starts {
        return Some(format!(
            "{} of {} requests started more than {} ms after they were due",
            w.late_starts,
            w.starts,
            START_LATE.as_millis()
        ));
    }
    if w.unsent > 0 {
        return Some(format!(
            "{} open-loop arrivals were not sent because max_in_flight was reached",
            w.unsent
        ));
    }
    None
}

/// The verdict logic, without clocks or tasks (unit-tested below).
#[derive(Debug, Default)]
pub struct Detector {
    late_in_a_row: u32,
    marked: bool,
}

impl Detector {
    /// Feeds one window; returns the reason the first time the worker is
    /// found saturated, and nothing after that (one mark per run).
    pub fn window(&mut self, w: &WindowSample) -> Option<String> {
        match late_reason(w) {
            Some(reason) => {
                self.late_in_a_row = self.late_in_a_row.saturating_add(1);
                if self.late_in_a_row >= WINDOWS_TO_MARK && !self.marked {
                    self.marked = true;
                    return Some(format!("{reason}, for {} s in a row", self.late_in_a_row));
                }
                None
            }
            None => {
                self.late_in_a_row = 0;
                None
            }
        }
    }
}

/// Runs the probe until `cancel`; calls `on_saturated` once with the reason
/// when the worker is found saturated.
pub fn spawn_probe(
    feed: Arc<SaturationFeed>,
    cancel: CancellationToken,
    on_saturated: impl FnOnce(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut detector = Detector::default();
        let mut on_saturated = Some(on_saturated);
        let mut sample = WindowSample::default();
        let mut window_start = Instant::now();
        loop {
            let before = Instant::now();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
            let overshoot = before.elapsed().saturating_sub(PROBE_INTERVAL);
            if sample.overshoots.len() < MAX_SAMPLES {
                sample.overshoots.push(overshoot);
            }
            if window_start.elapsed() >= WINDOW {
                (sample.starts, sample.late_starts, sample.unsent) = feed.take();
                if let Some(reason) = detector.window(&sample)
                    && let Some(f) = on_saturated.take()
                {
                    f(reason);
                }
                sample.overshoots.clear();
                window_start = Instant::now();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn probe(overshoot_ms: u64) -> WindowSample {
        WindowSample {
            overshoots: vec![ms(overshoot_ms); 90],
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_runtime_is_never_marked() {
        let mut d = Detector::default();
        for _ in 0..100 {
            assert_eq!(d.window(&probe(1)), None);
        }
    }

    #[test]
    fn late_probe_windows_mark_after_three_in_a_row_and_only_once() {
        let mut d = Detector::default();
        assert_eq!(d.window(&probe(40)), None);
        assert_eq!(d.window(&probe(40)), None);
        let reason = d.window(&probe(40)).expect("third late window marks");
        assert!(reason.contains("runtime wakes 40 ms late"), "{reason}");
        assert_eq!(d.window(&probe(40)), None, "one mark per run");
    }

    #[test]
    fn one_busy_moment_is_not_saturation() {
        let mut d = Detector::default();
        for _ in 0..20 {
            assert_eq!(d.window(&probe(40)), None);
            assert_eq!(d.window(&probe(40)), None);
            assert_eq!(d.window(&probe(1)), None, "a healthy window resets the count");
        }
    }

    #[test]
    fn the_median_decides_not_one_outlier() {
        let mut w = probe(1);
        w.overshoots[0] = ms(500);
        w.overshoots[1] = ms(500);
        let mut d = Detector::default();
        for _ in 0..10 {
            assert_eq!(d.window(&w), None);
        }
    }

    #[test]
    fn mostly_late_starts_and_unsent_arrivals_are_saturation_too() {
        let late = WindowSample {
            overshoots: vec![ms(1); 90],
            starts: 100,
            late_starts: 60,
            unsent: 0,
        };
        let mut d = Detector::default();
        d.window(&late);
        d.window(&late);
        assert!(
            d.window(&late)
                .unwrap()
                .contains("60 of 100 requests started more than 10 ms")
        );

        let few_late = WindowSample {
            late_starts: 40,
            ..late.clone()
        };
        let mut d = Detector::default();
        for _ in 0..10 {
            assert_eq!(d.window(&few_late), None);
        }

        let unsent = WindowSample {
            overshoots: vec![ms(1); 90],
            unsent: 3,
            ..Default::default()
        };
        let mut d = Detector::default();
        d.window(&unsent);
        d.window(&unsent);
        assert!(
            d.window(&unsent)
                .unwrap()
                .contains("3 open-loop arrivals were not sent")
        );
    }

    #[test]
    fn the_feed_counts_late_starts_and_resets_per_window() {
        let f = SaturationFeed::default();
        f.record_start(ms(1));
        f.record_start(ms(11));
        f.record_unsent(2);
        assert_eq!(f.take(), (2, 1, 2));
        assert_eq!(f.take(), (0, 0, 0));
    }
}
