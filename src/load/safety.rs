//! Safety trip wires: a sliding error-rate window, input/output token
//! budgets, and a pre-run token estimate for open-loop tests.
//!
//! Pure bookkeeping: the caller feeds outcomes in and, on a trip, sends
//! `tokenswarm_abort` with the trip's `Display` text as the reason. Nothing
//! here stops users or talks to the master. Each trip fires once.

use std::collections::VecDeque;
use std::fmt;

use crate::scenario::{LoadMode, Safety, TestConfig};

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

/// Which token budget a [`BudgetTrip`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    Input,
    Output,
}

/// Token use reached a configured budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetTrip {
    pub kind: BudgetKind,
    pub used: u64,
    pub budget: u64,
}

impl fmt::Display for BudgetTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, what) = match self.kind {
            BudgetKind::Input => ("input_token_budget", "input"),
            BudgetKind::Output => ("output_token_budget", "output"),
        };
        write!(
            f,
            "token budget reached: {} {what} tokens used, {field} is {}",
            self.used, self.budget
        )
    }
}

/// Running input/output token totals against the configured budgets.
#[derive(Debug, Clone)]
pub struct TokenBudget {
    input_budget: Option<u64>,
    output_budget: Option<u64>,
    input: u64,
    output: u64,
    tripped: bool,
}

impl TokenBudget {
    /// `None` when neither budget is set.
    pub fn from_safety(safety: &Safety) -> Option<TokenBudget> {
        if safety.input_token_budget.is_none() && safety.output_token_budget.is_none() {
            return None;
        }
        Some(TokenBudget {
            input_budget: safety.input_token_budget,
            output_budget: safety.output_token_budget,
            input: 0,
            output: 0,
            tripped: false,
        })
    }

    /// Adds one request's tokens. Trips (once) when a total reaches its budget.
    pub fn add(&mut self, input: u64, output: u64) -> Option<BudgetTrip> {
        self.input = self.input.saturating_add(input);
        self.output = self.output.saturating_add(output);
        if self.tripped {
            return None;
        }
        let check = |kind, used, budget: Option<u64>| {
            budget
                .filter(|&b| used >= b)
                .map(|budget| BudgetTrip { kind, used, budget })
        };
        let trip = check(BudgetKind::Input, self.input, self.input_budget)
            .or_else(|| check(BudgetKind::Output, self.output, self.output_budget));
        self.tripped = trip.is_some();
        trip
    }
}

/// Expected totals of an open-loop run, before it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenEstimate {
    pub requests: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Expected requests and tokens of an open-loop run: the request count is
/// the area under the rate curve (a phase ramps linearly over its first
/// `ramp_s` from the previous rate, see the controller), and each request
/// is the weight-averaged scenario prompt and output length. Closed-loop
/// runs depend on the server's speed, so they have no estimate (`None`).
pub fn estimate_tokens(cfg: &TestConfig) -> Option<TokenEstimate> {
    if cfg.load.mode != LoadMode::Open {
        return None;
    }
    let mut previous = 0.0;
    let mut requests = 0.0;
    for p in &cfg.load.phases {
        let ramp = p.ramp_s.min(p.duration_s);
        requests += (previous + p.rate) / 2.0 * ramp + p.rate * (p.duration_s - ramp);
        previous = p.rate;
    }
    let total_weight: f64 = cfg.scenarios.iter().map(|s| f64::from(s.weight)).sum();
    if total_weight <= 0.0 {
        return None;
    }
    let mean = |f: fn(&crate::scenario::Scenario) -> u64| {
        cfg.scenarios
            .iter()
            .map(|s| f64::from(s.weight) * f(s) as f64)
            .sum::<f64>()
            / total_weight
    };
    Some(TokenEstimate {
        requests,
        input_tokens: (requests * mean(|s| s.prompt_length)).round() as u64,
        output_tokens: (requests * mean(|s| s.output_length)).round() as u64,
    })
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

    #[test]
    fn token_budget_none_without_budgets() {
        assert!(TokenBudget::from_safety(&Safety::default()).is_none());
    }

    #[test]
    fn token_budget_trips_once_on_output() {
        let s = Safety {
            input_token_budget: Some(10_000),
            output_token_budget: Some(100),
            ..Safety::default()
        };
        let mut b = TokenBudget::from_safety(&s).unwrap();
        assert!(b.add(50, 60).is_none());
        let trip = b.add(50, 40).unwrap();
        assert_eq!(trip.kind, BudgetKind::Output);
        assert_eq!(
            trip.to_string(),
            "token budget reached: 100 output tokens used, output_token_budget is 100"
        );
        assert!(b.add(50, 40).is_none());
    }

    #[test]
    fn token_budget_input_message_names_input() {
        let s = Safety {
            input_token_budget: Some(1000),
            ..Safety::default()
        };
        let trip = TokenBudget::from_safety(&s).unwrap().add(1500, 0).unwrap();
        assert_eq!(trip.kind, BudgetKind::Input);
        assert!(trip.to_string().contains("1500 input tokens"));
        assert!(trip.to_string().contains("input_token_budget is 1000"));
    }

    const CFG: &str = r#"
scenarios:
  - {name: A, provider: openai-chat, model: m, prompt_length: 100, output_length: 10}
  - {name: B, weight: 3, provider: anthropic, model: m, prompt_length: 200, output_length: 50}
load:
  mode: open
  phases: [{rate: 10, duration_s: 10}, {rate: 20, duration_s: 10, ramp_s: 4}]
"#;

    #[test]
    fn estimate_integrates_rate_and_weights_lengths() {
        let cfg = TestConfig::from_yaml(CFG).unwrap();
        let e = estimate_tokens(&cfg).unwrap();
        // 10*10 + (10+20)/2*4 + 20*6 = 100 + 60 + 120
        assert!((e.requests - 280.0).abs() < 1e-9);
        // mean prompt (100 + 3*200)/4 = 175; mean output (10 + 150)/4 = 40
        assert_eq!(e.input_tokens, 280 * 175);
        assert_eq!(e.output_tokens, 280 * 40);
    }

    #[test]
    fn estimate_is_none_in_closed_loop() {
        let cfg = TestConfig::from_yaml(&CFG.replace("mode: open", "mode: closed")).unwrap();
        assert!(estimate_tokens(&cfg).is_none());
    }
}
