//! Locust-compatible request statistics: the same arithmetic as Locust's
//! `StatsEntry` (`locust/stats.py`), so that the master merges our windows
//! exactly as it merges a Python worker's.

use std::collections::BTreeMap;

use super::report::RequestEntry;

/// Locust's `bucket_response_time`: about two significant digits, with
/// Python's round-half-to-even.
pub fn bucket_response_time(ms: f64) -> u64 {
    let ms = ms.max(0.0);
    let rounded = if ms < 100.0 {
        ms.round_ties_even()
    } else if ms < 1_000.0 {
        (ms / 10.0).round_ties_even() * 10.0
    } else if ms < 10_000.0 {
        (ms / 100.0).round_ties_even() * 100.0
    } else {
        (ms / 1_000.0).round_ties_even() * 1_000.0
    };
    rounded as u64
}

/// Accumulates one window of one (name, method) entry.
#[derive(Debug, Clone)]
pub struct EntryAcc {
    entry: RequestEntry,
}

impl EntryAcc {
    pub fn new(name: &str, method: &str, start_time: f64) -> Self {
        EntryAcc {
            entry: RequestEntry {
                name: name.to_string(),
                method: method.to_string(),
                last_request_timestamp: None,
                start_time,
                num_requests: 0,
                num_none_requests: 0,
                num_failures: 0,
                total_response_time: 0.0,
                max_response_time: 0.0,
                min_response_time: None,
                total_content_length: 0,
                response_times: BTreeMap::new(),
                num_reqs_per_sec: BTreeMap::new(),
                num_fail_per_sec: BTreeMap::new(),
            },
        }
    }

    /// Logs one request completed at Unix time `now` (Locust's `log` +
    /// `log_error`: a failed request counts as a request and a failure).
    pub fn log(&mut self, now: f64, response_time_ms: f64, content_length: u64, failed: bool) {
        let e = &mut self.entry;
        let second = now as u64;
        e.num_requests += 1;
        *e.num_reqs_per_sec.entry(second).or_default() += 1;
        e.last_request_timestamp = Some(now);
        e.total_response_time += response_time_ms;
        e.min_response_time = Some(
            e.min_response_time
                .map_or(response_time_ms, |m| m.min(response_time_ms)),
        );
        e.max_response_time = e.max_response_time.max(response_time_ms);
        *e.response_times
            .entry(bucket_response_time(response_time_ms))
            .or_default() += 1;
        e.total_content_length += content_length;
        if failed {
            e.num_failures += 1;
            *e.num_fail_per_sec.entry(second).or_default() += 1;
        }
    }

    /// Adds another window of the same period (used to build `stats_total`).
    pub fn absorb(&mut self, other: &RequestEntry) {
        let e = &mut self.entry;
        e.num_requests += other.num_requests;
        e.num_none_requests += other.num_none_requests;
        e.num_failures += other.num_failures;
        e.total_response_time += other.total_response_time;
        e.max_response_time = e.max_response_time.max(other.max_response_time);
        e.min_response_time = match (e.min_response_time, other.min_response_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        e.total_content_length += other.total_content_length;
        e.last_request_timestamp = match (e.last_request_timestamp, other.last_request_timestamp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        e.start_time = e.start_time.min(other.start_time);
        for (src, dst) in [
            (&other.response_times, &mut e.response_times),
            (&other.num_reqs_per_sec, &mut e.num_reqs_per_sec),
            (&other.num_fail_per_sec, &mut e.num_fail_per_sec),
        ] {
            for (k, v) in src {
                *dst.entry(*k).or_default() += v;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entry.num_requests == 0 && self.entry.num_failures == 0
    }

    pub fn into_entry(self) -> RequestEntry {
        self.entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_locust_including_half_to_even() {
        // Values checked against Python: round(x), round(x, -1), ...
        let cases = [
            (0.4, 0),
            (2.5, 2),
            (3.5, 4),
            (99.4, 99),
            (99.6, 100),
            (147.0, 150),
            (145.0, 140),
            (155.0, 160),
            (3432.0, 3400),
            (58760.0, 59000),
        ];
        for (ms, want) in cases {
            assert_eq!(bucket_response_time(ms), want, "bucket of {ms}");
        }
    }

    #[test]
    fn failures_count_as_requests_and_failures() {
        let mut acc = EntryAcc::new("Chat", "POST", 100.0);
        acc.log(101.2, 12.0, 10, false);
        acc.log(101.9, 30.0, 5, true);
        acc.log(102.1, 8.0, 0, true);
        let e = acc.into_entry();
        assert_eq!((e.num_requests, e.num_failures), (3, 2));
        assert_eq!(e.total_response_time, 50.0);
        assert_eq!((e.min_response_time, e.max_response_time), (Some(8.0), 30.0));
        assert_eq!(e.num_reqs_per_sec, BTreeMap::from([(101, 2), (102, 1)]));
        assert_eq!(e.num_fail_per_sec, BTreeMap::from([(101, 1), (102, 1)]));
        assert_eq!(e.total_content_length, 15);
    }

    #[test]
    fn total_is_the_sum_of_entries() {
        let mut a = EntryAcc::new("A", "POST", 10.0);
        a.log(11.0, 5.0, 1, false);
        let mut b = EntryAcc::new("B", "POST", 9.0);
        b.log(12.0, 50.0, 2, true);
        let mut total = EntryAcc::new("Aggregated", "", 10.0);
        total.absorb(&a.into_entry());
        total.absorb(&b.into_entry());
        let t = total.into_entry();
        assert_eq!((t.num_requests, t.num_failures, t.total_content_length), (2, 1, 3));
        assert_eq!(
            (t.min_response_time, t.max_response_time, t.start_time),
            (Some(5.0), 50.0, 9.0)
        );
        assert_eq!(t.response_times, BTreeMap::from([(5, 1), (50, 1)]));
    }
}
