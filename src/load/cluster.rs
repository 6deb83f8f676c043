//! Where this worker's starts sit among the whole cluster's (pure).
//!
//! Locust sends every worker its ramp step at the same moment, so workers
//! that each spread their own starts evenly still start together: with 4
//! workers at 4 users/s, 4 first requests landed in the same millisecond
//! every second (issue 12). Each worker therefore shifts its start grid by
//! `index / count` of its own start interval, where `index` is the worker
//! index from Locust's `ack` and `count` the worker count the master plugin
//! sends in `tokenswarm_config.worker_count`: the cluster's starts then
//! interleave evenly. The same fraction shifts the first open-loop arrival
//! after a start or share change. With one worker (or no count) the shift
//! is zero and nothing changes.

use std::time::Duration;

/// This worker's place in the cluster: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSlot {
    index: u32,
    count: u32,
}

impl Default for ClusterSlot {
    fn default() -> Self {
        ClusterSlot::solo()
    }
}

impl ClusterSlot {
    /// A worker alone (or one that knows no better): no shift.
    pub fn solo() -> ClusterSlot {
        ClusterSlot { index: 0, count: 1 }
    }

    /// From the `ack` index and the master's worker count. Locust's indexes
    /// grow as workers join and never shrink, so a late joiner's index may
    /// exceed the count: it wraps. Missing, zero or negative values give
    /// [`ClusterSlot::solo`].
    pub fn new(index: Option<i64>, count: Option<u32>) -> ClusterSlot {
        match (index, count) {
            (Some(i), Some(n)) if i >= 0 && n > 1 => ClusterSlot {
                index: (i % i64::from(n)) as u32,
                count: n,
            },
            _ => ClusterSlot::solo(),
        }
    }

    /// This worker's index, in `0..count`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Workers in the cluster (1 when unknown).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shift as a fraction of one interval, in `[0, 1)`.
    pub fn fraction(&self) -> f64 {
        f64::from(self.index) / f64::from(self.count)
    }

    /// How far to shift a grid of starts spaced `interval` apart.
    pub fn offset(&self, interval: Duration) -> Duration {
        let nanos = interval.as_nanos().saturating_mul(u128::from(self.index)) / u128::from(self.count);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_or_unknown_count_shifts_nothing() {
        for slot in [
            ClusterSlot::solo(),
            ClusterSlot::new(Some(0), Some(1)),
            ClusterSlot::new(Some(5), Some(1)),
            ClusterSlot::new(None, Some(4)),
            ClusterSlot::new(Some(2), None),
            ClusterSlot::new(Some(-1), Some(4)),
            ClusterSlot::new(Some(3), Some(0)),
        ] {
            assert_eq!(slot.offset(Duration::from_secs(1)), Duration::ZERO, "{slot:?}");
            assert_eq!(slot.fraction(), 0.0);
        }
    }

    #[test]
    fn four_workers_interleave_their_grids_evenly() {
        // Each worker starts one user a second: the cluster's first
        // requests come 250 ms apart, none together.
        let interval = Duration::from_secs(1);
        let mut starts: Vec<Duration> = (0..4)
            .flat_map(|w| {
                let offset = ClusterSlot::new(Some(w), Some(4)).offset(interval);
                (0..3).map(move |k| interval * k + offset)
            })
            .collect();
        starts.sort();
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(250));
        }
    }

    #[test]
    fn late_joiners_wrap_and_huge_intervals_saturate() {
        assert_eq!(ClusterSlot::new(Some(6), Some(4)), ClusterSlot::new(Some(2), Some(4)));
        let s = ClusterSlot::new(Some(3), Some(4));
        assert_eq!(s.offset(Duration::MAX), Duration::from_nanos(u64::MAX));
        assert_eq!(s.fraction(), 0.75);
    }
}
