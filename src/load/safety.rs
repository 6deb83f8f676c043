//! Safety trip wire: a sliding error-rate window. (Token budgets are
//! cluster totals, so the master enforces them on the merged counts:
//! `locustfiles/tokenswarm_master/plugin.py`.)
//!
//! Pure bookkeeping: the caller feeds outcomes in and, on a trip, sends
//! `tokenswarm_abort` with the trip's `Display` text as the reason. Nothing
//! here stops users or talks to the master. Each trip fires once.

use std::collections::VecDeque;
use std::fmt;

use crate::scenario::Safety;

/// Formats a fraction as a percentage without float noise (0.3 -> "30").
fn percent(fraction: f64) -> String {
    let s = format!("{:.1}", fraction * 100.0);
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// The outcomes of the last `error_window` requests.
#[derive(Debug, Clone)]
pub struct ErrorWindow {
    limit: f64,
    size: usize,
    recent: VecDeque<bool>,
    failures: usize,
    tripped: bool,
}

/// The error rate over a full window went above the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorTrip {
    pub failed: usize,
    pub window: usize,
    /// The configured limit, a fraction.
    pub limit: f64,
}

impl fmt::Display for ErrorTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error limit reached: {} of the last {} requests failed (limit {} %)",
            self.failed,
            self.window,
            percent(self.limit)
        )
    }
}

impl ErrorWindow {
    /// `None` when the error limit is disabled (`error_limit: 0`).
    pub fn from_safety(safety: &Safety) -> Option<ErrorWindow> {
        if safety.error_limit <= 0.0 || safety.error_window == 0 {
            return None;
        }
        let size = safety.error_window as usize;
        Some(ErrorWindow {
            limit: safety.error_limit,
            size,
            recent: VecDeque::with_capacity(size),
            failures: 0,
            tripped: false,
        })
    }

    /// Adds one finished request. Trips (once) when the window is full and
    /// more than `error_limit` of it failed.
    pub fn record(&mut self, failed: bool) -> Option<ErrorTrip> {
        if self.recent.len() == self.size && self.recent.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.recent.push_back(failed);
        self.failures += usize::from(failed);
        let over = self.failures as f64 > self.limit * self.size as f64;
        if self.tripped || self.recent.len() < self.size || !over {
            return None;
        }
        self.tripped = true;
        Some(ErrorTrip {
            failed: self.failures,
            window: self.size,
            limit: self.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety(limit: f64, window: u32) -> Safety {
        Safety {
            error_limit: limit,
            error_window: window,
            ..Safety::default()
        }
    }

    #[test]
    fn error_window_disabled_at_zero_limit() {
        assert!(ErrorWindow::from_safety(&safety(0.0, 30)).is_none());
    }

    #[test]
    fn error_window_waits_for_a_full_window() {
        let mut w = ErrorWindow::from_safety(&safety(0.3, 30)).unwrap();
        for _ in 0..29 {
            assert!(w.record(true).is_none());
        }
        let trip = w.record(true).unwrap();
        assert_eq!(trip.failed, 30);
        assert!(w.record(true).is_none(), "trips once");
    }

    #[test]
    fn error_window_trips_above_limit_with_message() {
        let mut w = ErrorWindow::from_safety(&safety(0.3, 30)).unwrap();
        // 9 of 30 failed = exactly 30 %: not above the limit.
        for i in 0..30 {
            assert!(w.record(i % 10 < 3).is_none());
        }
        // Slide: old successes drop out, new failures come in.
        let mut trip = None;
        for _ in 0..30 {
            if let Some(t) = w.record(true) {
                trip = Some(t);
                break;
            }
        }
        let trip = trip.unwrap();
        assert_eq!(trip.failed, 10);
        assert_eq!(
            trip.to_string(),
            "error limit reached: 10 of the last 30 requests failed (limit 30 %)"
        );
    }

    #[test]
    fn error_trip_message_matches_spec_example() {
        let t = ErrorTrip {
            failed: 16,
            window: 30,
            limit: 0.3,
        };
        assert_eq!(
            t.to_string(),
            "error limit reached: 16 of the last 30 requests failed (limit 30 %)"
        );
    }
}
