//! Open-loop arrival maths, pure and clock-free: the cluster rate curve of
//! the phases, and inter-arrival draws.
//!
//! Arrivals are generated in "operational time": each gap is drawn with
//! mean 1 (in units of expected arrivals) and then mapped through the rate
//! curve, i.e. the next arrival is where the integral of the rate since the
//! previous one reaches the draw. One sampler thus serves constant, Poisson
//! and gamma arrivals and stays exact across linear ramps and rate changes.
//!
//! Phase semantics: a phase lasts `duration_s`; over its first `ramp_s` the
//! rate moves linearly from the previous phase's rate (0 before the first
//! phase) to its own `rate`, then holds. (The config validates
//! `ramp_s <= duration_s`, so the ramp is part of the phase.)

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, Gamma};

use crate::scenario::{Arrival, Phase};

/// One linear piece of the rate curve: from `start` to `end` seconds (since
/// the schedule began), the rate goes linearly from `from` to `to` req/s.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start: f64,
    end: f64,
    from: f64,
    to: f64,
}

impl Segment {
    fn slope(&self) -> f64 {
        if self.end > self.start {
            (self.to - self.from) / (self.end - self.start)
        } else {
            0.0
        }
    }

    fn rate_at(&self, t: f64) -> f64 {
        self.from + self.slope() * (t - self.start)
    }
}

/// The piecewise-linear cluster rate over time.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    segments: Vec<Segment>,
}

impl RateSchedule {
    pub fn new(phases: &[Phase]) -> RateSchedule {
        let mut segments = Vec::new();
        let (mut t, mut previous) = (0.0, 0.0);
        for p in phases {
            let duration = p.duration.as_secs_f64();
            let ramp = p.ramp.as_secs_f64().clamp(0.0, duration);
            if ramp > 0.0 {
                segments.push(Segment {
                    start: t,
                    end: t + ramp,
                    from: previous,
                    to: p.rate,
                });
            }
            segments.push(Segment {
                start: t + ramp,
                end: t + duration,
                from: p.rate,
                to: p.rate,
            });
            t += duration;
            previous = p.rate;
        }
        RateSchedule { segments }
    }

    /// Requests the whole schedule plans (the integral of the rate): what
    /// the master's token estimate multiplies by the token lengths
    /// (`planned_requests` in config.py mirrors it; the schema corpus pins
    /// both).
    pub fn total(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| (s.from + s.to) / 2.0 * (s.end - s.start))
            .sum()
    }

    /// When the last phase ends, seconds since the start.
    pub fn end(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.end)
    }

    /// The cluster rate at `t` seconds (0 outside the phases).
    pub fn rate_at(&self, t: f64) -> f64 {
        self.segments
            .iter()
            .find(|s| s.start <= t && t < s.end)
            .map_or(0.0, |s| s.rate_at(t))
    }

    /// The time after `t` at which the rate integral since `t` reaches
    /// `mass` expected arrivals, or `None` if the schedule ends first.
    pub fn advance(&self, t: f64, mut mass: f64) -> Option<f64> {
        for s in self.segments.iter().filter(|s| s.end > t) {
            let t0 = t.max(s.start);
            let (r0, r1) = (s.rate_at(t0), s.to);
            let available = (r0 + r1) / 2.0 * (s.end - t0);
            if mass <= available {
                // Solve r0*d + slope*d²/2 = mass in its cancellation-free form.
                let root = (r0 * r0 + 2.0 * s.slope() * mass).max(0.0).sqrt();
                let d = if r0 + root > 0.0 { 2.0 * mass / (r0 + root) } else { 0.0 };
                return Some((t0 + d).min(s.end));
            }
            mass -= available;
        }
        None
    }
}

/// Inter-arrival draws with mean 1 (one expected arrival); divide by a rate
/// to get seconds. Variance: 0 (constant), 1 (Poisson), 1/shape (gamma).
pub struct InterArrival {
    kind: Kind,
    rng: StdRng,
}

enum Kind {
    Constant,
    Exponential(Exp<f64>),
    Gamma(Gamma<f64>),
}

impl InterArrival {
    /// `burstiness` is the gamma shape for `Gamma` (ignored otherwise); a
    /// shape the config would reject (not positive and finite) falls back
    /// to Poisson rather than panicking.
    pub fn new(arrival: Arrival, burstiness: f64, seed: u64) -> InterArrival {
        let kind = match arrival {
            Arrival::Constant => Kind::Constant,
            Arrival::Poisson => Kind::Exponential(Exp::new(1.0).expect("rate 1 is valid")),
            Arrival::Gamma => match Gamma::new(burstiness, 1.0 / burstiness) {
                Ok(g) => Kind::Gamma(g),
                Err(_) => Kind::Exponential(Exp::new(1.0).expect("rate 1 is valid")),
            },
        };
        InterArrival {
            kind,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_gap(&mut self) -> f64 {
        match &self.kind {
            Kind::Constant => 1.0,
            Kind::Exponential(d) => d.sample(&mut self.rng),
            Kind::Gamma(d) => d.sample(&mut self.rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(rate: f64, duration_s: f64, ramp_s: f64) -> Phase {
        Phase {
            rate,
            duration: crate::units::seconds_saturating(duration_s),
            ramp: crate::units::seconds_saturating(ramp_s),
        }
    }

    #[test]
    fn schedule_rate_curve_ramps_then_holds() {
        let s = RateSchedule::new(&[phase(10.0, 10.0, 0.0), phase(30.0, 10.0, 4.0)]);
        assert_eq!(s.end(), 20.0);
        assert_eq!(s.rate_at(5.0), 10.0);
        assert!((s.rate_at(12.0) - 20.0).abs() < 1e-9);
        assert_eq!(s.rate_at(15.0), 30.0);
        assert_eq!(s.rate_at(20.0), 0.0);
    }

    #[test]
    fn first_phase_ramps_from_zero() {
        let s = RateSchedule::new(&[phase(10.0, 10.0, 2.0)]);
        assert!((s.rate_at(1.0) - 5.0).abs() < 1e-9);
        // Mass over the ramp is 10; one unit is reached at sqrt(2*1/5) s.
        let t = s.advance(0.0, 1.0).unwrap();
        assert!((t - (0.4f64).sqrt()).abs() < 1e-9, "{t}");
        assert!((s.advance(0.0, 10.0).unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn advance_crosses_segments_and_ends() {
        let s = RateSchedule::new(&[phase(10.0, 1.0, 0.0), phase(20.0, 1.0, 0.0)]);
        // 5 arrivals left in phase 1 after 0.5 s, then 5 more at 20/s.
        assert!((s.advance(0.5, 10.0).unwrap() - 1.25).abs() < 1e-9);
        assert_eq!(s.advance(0.5, 30.0), None);
    }

    #[test]
    fn zero_rate_phase_is_skipped() {
        let s = RateSchedule::new(&[phase(10.0, 1.0, 0.0), phase(0.0, 5.0, 0.0), phase(10.0, 1.0, 0.0)]);
        assert!((s.advance(0.9, 2.0).unwrap() - 6.1).abs() < 1e-9);
    }

    fn moments(arrival: Arrival, shape: f64, rate: f64) -> (f64, f64) {
        let mut d = InterArrival::new(arrival, shape, 7);
        let n = 50_000;
        let xs: Vec<f64> = (0..n).map(|_| d.next_gap() / rate).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (mean, var)
    }

    #[test]
    fn constant_gaps_have_no_variance() {
        let (mean, var) = moments(Arrival::Constant, 1.0, 4.0);
        assert!((mean - 0.25).abs() < 1e-12);
        assert!(var < 1e-18);
    }

    #[test]
    fn poisson_gaps_have_variance_mean_squared() {
        let (mean, var) = moments(Arrival::Poisson, 1.0, 4.0);
        assert!((mean - 0.25).abs() < 0.25 * 0.02, "{mean}");
        assert!((var - 0.0625).abs() < 0.0625 * 0.05, "{var}");
    }

    #[test]
    fn gamma_gaps_have_variance_mean_squared_over_shape() {
        for shape in [0.5, 4.0] {
            let (mean, var) = moments(Arrival::Gamma, shape, 4.0);
            let want = 0.0625 / shape;
            assert!((mean - 0.25).abs() < 0.25 * 0.03, "shape {shape}: {mean}");
            assert!((var - want).abs() < want * 0.08, "shape {shape}: {var} vs {want}");
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let mut a = InterArrival::new(Arrival::Poisson, 1.0, 9);
        let mut b = InterArrival::new(Arrival::Poisson, 1.0, 9);
        for _ in 0..10 {
            assert_eq!(a.next_gap(), b.next_gap());
        }
    }
}
