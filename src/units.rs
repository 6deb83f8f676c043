//! User-given numbers become typed values here, once, at the edge.
//!
//! Seconds arrive as floats from three places: the test definition (YAML
//! from the master), command-line flags, and the master's `spawn` message.
//! `Duration::from_secs_f64` panics on a negative, non-finite or too large
//! value (`--master-timeout 1e30` did), so clippy forbids it and its
//! siblings (see `clippy.toml`); every conversion goes through this module,
//! which bounds the value first. Parsed input is rejected with an error that
//! names the flag or field; values computed internally (schedule offsets)
//! saturate instead.

use std::time::Duration;

/// The longest duration any user input may give: 1,000,000 s (about 11.6
/// days). Longer values are typos, and `Instant + Duration` stays far from
/// overflow below it.
pub const MAX_SECONDS: f64 = 1_000_000.0;

/// `s` seconds as a [`Duration`] when `s` is finite and within
/// `[0, max]`; `None` otherwise. The one place that turns float seconds
/// into a `Duration`.
#[allow(clippy::disallowed_methods)]
pub fn seconds_within(s: f64, max: f64) -> Option<Duration> {
    if s.is_finite() && (0.0..=max).contains(&s) {
        Duration::try_from_secs_f64(s).ok()
    } else {
        None
    }
}

/// Seconds computed by the program itself (schedule offsets, a clock
/// difference), clamped to `[0, MAX_SECONDS]`; NaN becomes zero.
pub fn seconds_saturating(s: f64) -> Duration {
    let clamped = if s.is_nan() { 0.0 } else { s.clamp(0.0, MAX_SECONDS) };
    seconds_within(clamped, MAX_SECONDS).unwrap_or(Duration::ZERO)
}

/// clap value parser for a flag in seconds that must be positive, at most
/// [`MAX_SECONDS`]. clap prefixes the error with the flag's name and exits
/// with code 2.
pub fn positive_seconds_flag(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 => seconds_within(v, MAX_SECONDS).ok_or_else(|| seconds_hint(s, "a positive")),
        _ => Err(seconds_hint(s, "a positive")),
    }
}

fn seconds_hint(s: &str, kind: &str) -> String {
    format!("{s:?} is not {kind} number of seconds up to {MAX_SECONDS:.0} (e.g. 60)")
}

/// serde helpers: a [`Duration`] written as float seconds, bounded by
/// [`MAX_SECONDS`] when read. The schema check (`scenario::schema`) gives
/// the friendly message first; this keeps a typed value in range even when
/// a caller deserializes without it.
pub mod serde_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        super::seconds_within(v, super::MAX_SECONDS).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{v} is not a number of seconds between 0 and {}",
                super::MAX_SECONDS
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_from_secs_f64_would_panic_on() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30, MAX_SECONDS * 2.0] {
            assert_eq!(seconds_within(bad, MAX_SECONDS), None, "{bad}");
        }
        assert_eq!(seconds_within(1.5, MAX_SECONDS), Some(Duration::from_millis(1500)));
        assert_eq!(seconds_within(0.0, MAX_SECONDS), Some(Duration::ZERO));
    }

    #[test]
    fn saturating_clamps_instead_of_failing() {
        assert_eq!(seconds_saturating(1e30), Duration::from_secs(1_000_000));
        assert_eq!(seconds_saturating(-3.0), Duration::ZERO);
        assert_eq!(seconds_saturating(f64::NAN), Duration::ZERO);
        assert_eq!(seconds_saturating(0.25), Duration::from_millis(250));
    }

    #[test]
    fn flag_parsers_name_the_bound() {
        let e = positive_seconds_flag("1e30").unwrap_err();
        assert!(e.contains("1e30") && e.contains("1000000"), "{e}");
        assert!(positive_seconds_flag("0").is_err());
        assert_eq!(positive_seconds_flag("60"), Ok(Duration::from_secs(60)));
    }
}
