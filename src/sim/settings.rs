//! The simulator's settings, written once: this struct is both the `sim`
//! command line (clap derive, flattened into the subcommand) and the runtime
//! configuration, and its defaults are clap's (`Default` parses an empty
//! command line), so a setting is added in one place.
//!
//! Every value is bounded when it is parsed (and again by [`SimConfig::validate`]
//! for configs built in code), with the same check, so no later conversion
//! (`Instant + Duration`, buffer sizes, loops over tokens) can overflow or
//! allocate without bound. Durations are `Duration`; latency-model parameters
//! keep their unit in the name (`_ms`, `_us`) because they are rates in a
//! formula rather than waits.

use std::path::PathBuf;
use std::time::Duration;

/// Which delta field carries reasoning text in OpenAI chat streams.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningField {
    /// `delta.reasoning_content` (DeepSeek, older vLLM).
    #[default]
    #[value(name = "reasoning_content")]
    ReasoningContent,
    /// `delta.reasoning` (vLLM since late 2025, OpenRouter).
    #[value(name = "reasoning")]
    Reasoning,
}

impl ReasoningField {
    pub fn name(self) -> &'static str {
        match self {
            ReasoningField::ReasoningContent => "reasoning_content",
            ReasoningField::Reasoning => "reasoning",
        }
    }
}

/// Upper bound of `--ttft-ms` and `--tpot-ms`: one hour.
pub const MAX_MS: f64 = 3_600_000.0;
/// Upper bound of `--prefill-us-per-token`: one second per token.
pub const MAX_PREFILL_US: f64 = 1_000_000.0;
/// Upper bound of `--batch-slowdown`.
pub const MAX_SLOWDOWN: f64 = 100.0;
/// Upper bound of `--stall-s`: one day.
pub const MAX_STALL: Duration = Duration::from_secs(86_400);
/// Upper bound of `--header-timeout-s`: one hour.
pub const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(3_600);
/// Upper bound of `--context-limit`: 16M tokens, which also bounds the
/// tokens of one answer (prompt + max_tokens must fit) and so the work and
/// memory of one response.
pub const MAX_CONTEXT: u64 = 1 << 24;
/// Bounds of `--max-body-bytes`.
pub const MIN_BODY_BYTES: usize = 1 << 10;
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// The simulator's settings (the `sim` command line minus host and port).
#[derive(clap::Args, Debug, Clone)]
pub struct SimConfig {
    /// Model id listed by /v1/models (requests may name any model; it is echoed).
    #[arg(long, default_value = "tokenswarm-sim")]
    pub model: String,
    /// Seed for jitter and faults: the same seed and request order give the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base time to first token, ms (after any queueing).
    #[arg(long, default_value = "40", value_parser = ms)]
    pub ttft_ms: f64,
    /// Prefill time per uncached prompt token, µs (added to TTFT).
    #[arg(long, default_value = "20", value_parser = prefill_us)]
    pub prefill_us_per_token: f64,
    /// Decode interval per output token, ms.
    #[arg(long, default_value = "12", value_parser = ms)]
    pub tpot_ms: f64,
    /// Random spread of each decode interval, as a fraction (0.1 = ±10 %, uniform, seeded).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub jitter: f64,
    /// Decode slowdown per additional running stream, as a fraction of tpot:
    /// interval = tpot × (1 + batch_slowdown × (running − 1)).
    #[arg(long, default_value = "0.002", value_parser = slowdown)]
    pub batch_slowdown: f64,
    /// No latency at all (TTFT 0, tpot 0, no prefill): answer as fast as possible, already-due
    /// chunks coalesced into one write. `--ttft-ms 0 --tpot-ms 0` does the same.
    #[arg(long)]
    pub no_latency: bool,
    /// Concurrent generation slots; further requests queue (0 = unlimited).
    #[arg(long, default_value_t = 256)]
    pub slots: usize,
    /// Context window in tokens: prompt + max_tokens above it is a 400 error (at most 16777216).
    #[arg(long, default_value = "32768", value_parser = context)]
    pub context_limit: u64,
    /// Prefix cache capacity in blocks of 16 words (LRU; 0 disables the cache).
    #[arg(long, default_value_t = 65536)]
    pub prefix_cache_blocks: usize,
    /// Answer length used when a request sets no max_tokens (OpenAI APIs), at most what the
    /// context leaves.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: u64,
    /// The answer naturally ends after N tokens (finish stop), unless ignore_eos or min_tokens ask for more.
    /// Without it the answer always runs to max_tokens (finish length).
    #[arg(long)]
    pub natural_output: Option<u64>,
    /// Reasoning tokens streamed before every answer (0 = only when a request asks for reasoning).
    #[arg(long, default_value_t = 0)]
    pub reasoning_tokens: u64,
    /// Reasoning tokens for requests that ask for reasoning (OpenAI `reasoning_effort`,
    /// Anthropic `thinking: {type: enabled}`) when --reasoning-tokens is 0.
    #[arg(long, default_value_t = 16)]
    pub requested_reasoning_tokens: u64,
    /// Delta field carrying reasoning in OpenAI chat streams.
    #[arg(long, value_enum, default_value_t = ReasoningField::ReasoningContent)]
    pub reasoning_field: ReasoningField,
    /// Fraction of requests answered 429 with a Retry-After header.
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_429: f64,
    /// Fraction of requests answered 500.
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_500: f64,
    /// Fraction of requests answered 503.
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_503: f64,
    /// Fraction of streams that send HTTP 200, some tokens, then an error event
    /// (non-streaming requests: a 500 error body).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_error_event: f64,
    /// Fraction of streams cut after some tokens, without finish or [DONE]
    /// (non-streaming requests: a 500 error body).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_truncate: f64,
    /// Fraction of streams that stop sending after some tokens for --stall-s, then end
    /// without finish (non-streaming requests: wait --stall-s, then a 500 error body).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_stall: f64,
    /// Fraction of requests that end properly with zero answer tokens.
    #[arg(long, default_value = "0", value_parser = rate)]
    pub fault_empty: f64,
    /// Length of a stall fault, seconds (at most 86400).
    #[arg(long = "stall-s", value_name = "SECONDS", default_value = "30", value_parser = stall_seconds,
          allow_negative_numbers = true)]
    pub stall: Duration,
    /// Retry-After seconds sent with 429 faults.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u32,
    /// Write one JSON line per request to FILE (docs/contracts.md §2).
    #[arg(long, value_name = "FILE")]
    pub log_requests: Option<PathBuf>,
    /// With --log-requests: also log each prompt's texts (`prompt_texts`: the
    /// system text and message contents in order; large lines).
    #[arg(long, requires = "log_requests")]
    pub log_prompts: bool,
    /// Seconds a connection may take to send the headers of a request, idle keep-alive
    /// time included; then the simulator closes it (so half-sent requests cannot hold it).
    #[arg(long = "header-timeout-s", value_name = "SECONDS", default_value = "30", value_parser = header_seconds)]
    pub header_timeout: Duration,
    /// Largest request body accepted, bytes; a larger one is answered 413.
    #[arg(long, default_value = "4194304", value_parser = body_bytes)]
    pub max_body_bytes: usize,
}

impl Default for SimConfig {
    /// The defaults of the command line (`tokenswarm sim` with no options).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: SimConfig,
        }
        match <Defaults as clap::Parser>::try_parse_from(["sim"]) {
            Ok(d) => d.settings,
            // Not input: the built-in defaults; a unit test parses them.
            Err(e) => panic!("the simulator's built-in defaults do not parse: {e}"),
        }
    }
}

impl SimConfig {
    /// Checks a config built in code against the bounds the command line enforces,
    /// plus the cross-field rule (fault rates add up to at most 1).
    pub fn validate(&self) -> Result<(), String> {
        ms(&self.ttft_ms.to_string()).map_err(|e| format!("--ttft-ms: {e}"))?;
        ms(&self.tpot_ms.to_string()).map_err(|e| format!("--tpot-ms: {e}"))?;
        prefill_us(&self.prefill_us_per_token.to_string()).map_err(|e| format!("--prefill-us-per-token: {e}"))?;
        rate(&self.jitter.to_string()).map_err(|e| format!("--jitter: {e}"))?;
        slowdown(&self.batch_slowdown.to_string()).map_err(|e| format!("--batch-slowdown: {e}"))?;
        context(&self.context_limit.to_string()).map_err(|e| format!("--context-limit: {e}"))?;
        body_bytes(&self.max_body_bytes.to_string()).map_err(|e| format!("--max-body-bytes: {e}"))?;
        if self.stall > MAX_STALL {
            return Err(format!(
                "--stall-s: {:?} is more than {} s",
                self.stall,
                MAX_STALL.as_secs()
            ));
        }
        if self.header_timeout.is_zero() || self.header_timeout > MAX_HEADER_TIMEOUT {
            return Err(format!(
                "--header-timeout-s: {:?} is not between 0 and {} s",
                self.header_timeout,
                MAX_HEADER_TIMEOUT.as_secs()
            ));
        }
        let faults = [
            ("fault-429", self.fault_429),
            ("fault-500", self.fault_500),
            ("fault-503", self.fault_503),
            ("fault-error-event", self.fault_error_event),
            ("fault-truncate", self.fault_truncate),
            ("fault-stall", self.fault_stall),
            ("fault-empty", self.fault_empty),
        ];
        let mut sum = 0.0;
        for (name, v) in faults {
            rate(&v.to_string()).map_err(|e| format!("--{name}: {e}"))?;
            sum += v;
        }
        if sum > 1.0 + 1e-9 {
            return Err(format!("fault rates add up to {sum}, more than 1"));
        }
        Ok(())
    }
}

fn bounded_f64(s: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not {what} between {lo} and {hi}")),
    }
}

fn ms(s: &str) -> Result<f64, String> {
    bounded_f64(s, 0.0, MAX_MS, "a number of milliseconds")
}

fn prefill_us(s: &str) -> Result<f64, String> {
    bounded_f64(s, 0.0, MAX_PREFILL_US, "a number of microseconds")
}

fn rate(s: &str) -> Result<f64, String> {
    bounded_f64(s, 0.0, 1.0, "a rate (e.g. 0.05)")
}

fn slowdown(s: &str) -> Result<f64, String> {
    bounded_f64(s, 0.0, MAX_SLOWDOWN, "a fraction")
}

/// Seconds as a `Duration`, bounded before the conversion (which panics on
/// values such as 1e30) by the one helper in `crate::units`.
fn seconds(s: &str, max: Duration) -> Result<Duration, String> {
    let v = bounded_f64(s, 0.0, max.as_secs_f64(), "a number of seconds")?;
    crate::units::seconds_within(v, max.as_secs_f64())
        .ok_or_else(|| format!("{s:?} is not a number of seconds between 0 and {}", max.as_secs()))
}

fn stall_seconds(s: &str) -> Result<Duration, String> {
    seconds(s, MAX_STALL)
}

fn header_seconds(s: &str) -> Result<Duration, String> {
    match seconds(s, MAX_HEADER_TIMEOUT)? {
        d if d.is_zero() => Err(format!("{s:?} must be more than 0 seconds")),
        d => Ok(d),
    }
}

fn context(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if (1..=MAX_CONTEXT).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of tokens between 1 and {MAX_CONTEXT}")),
    }
}

fn body_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if (MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of bytes between {MIN_BODY_BYTES} and {MAX_BODY_BYTES}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: SimConfig,
    }

    fn parse(args: &[&str]) -> Result<SimConfig, String> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied()))
            .map(|c| c.s)
            .map_err(|e| e.to_string())
    }

    /// The defaults are the command line's and they pass validation (so
    /// `Default` cannot panic).
    #[test]
    fn defaults_parse_and_validate() {
        let d = SimConfig::default();
        assert_eq!(d.ttft_ms, 40.0);
        assert_eq!(d.tpot_ms, 12.0);
        assert_eq!(d.stall, Duration::from_secs(30));
        assert_eq!(d.header_timeout, Duration::from_secs(30));
        assert_eq!(d.max_body_bytes, 4 << 20);
        assert_eq!(d.context_limit, 32768);
        assert_eq!(d.reasoning_field, ReasoningField::ReasoningContent);
        d.validate().unwrap();
    }

    /// Issue 13: `--stall-s 1e30` used to panic in `Duration::from_secs_f64`;
    /// now it is a usage error that names the bound.
    #[test]
    fn huge_or_bad_durations_are_usage_errors() {
        for bad in ["1e30", "-1", "NaN", "inf", "86401"] {
            let e = parse(&[&format!("--stall-s={bad}")]).unwrap_err();
            assert!(e.contains("--stall-s") && e.contains("86400"), "{bad}: {e}");
        }
        assert_eq!(parse(&["--stall-s", "0.25"]).unwrap().stall, Duration::from_millis(250));
        assert!(parse(&["--header-timeout-s", "0"]).is_err());
        assert!(parse(&["--ttft-ms", "1e30"]).is_err());
        assert!(parse(&["--context-limit", "0"]).is_err());
        assert!(parse(&["--max-body-bytes", "10"]).is_err());
        assert!(parse(&["--fault-500", "1.5"]).is_err());
    }

    #[test]
    fn validate_catches_code_built_configs() {
        let ok = SimConfig::default();
        for bad in [
            SimConfig {
                stall: Duration::MAX,
                ..ok.clone()
            },
            SimConfig {
                ttft_ms: f64::NAN,
                ..ok.clone()
            },
            SimConfig {
                tpot_ms: -1.0,
                ..ok.clone()
            },
            SimConfig {
                header_timeout: Duration::ZERO,
                ..ok.clone()
            },
            SimConfig {
                context_limit: u64::MAX,
                ..ok.clone()
            },
            SimConfig {
                fault_500: 0.6,
                fault_503: 0.6,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
