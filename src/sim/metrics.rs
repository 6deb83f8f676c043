//! `GET /metrics`: the simulator's state in the Prometheus text format, under
//! vLLM's metric names, so that a scraper written for vLLM (tokenswarm's
//! master with `--llm-server-metrics-url`, a Grafana dashboard) reads the
//! simulator unchanged and its numbers can be checked against the ground
//! truth of `/sim/stats`.
//!
//! Owns the rendering and the count of requests waiting for a slot
//! ([`Waiting`]); it reads the slots, the prefix cache and the counters of
//! [`Shared`] and changes none of them.
//!
//! What each series is, in simulator terms:
//! - `vllm:num_requests_running`: requests holding one of `--slots` (the
//!   decode batch); `vllm:num_requests_waiting`: requests queued for a slot.
//! - `vllm:kv_cache_usage_perc` (and its older name
//!   `vllm:gpu_cache_usage_perc`): blocks held by the prefix cache over
//!   `--prefix-cache-blocks`, a fraction in [0, 1] as in vLLM (0 when the
//!   cache is disabled). vLLM counts blocks in use by running requests; the
//!   simulator has no memory model beyond its prefix cache, so this is the
//!   occupancy of that cache.
//! - `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
//!   `vllm:prefix_cache_queries_total`, `vllm:prefix_cache_hits_total`: the
//!   prompt, output and cached tokens of `/sim/stats` (answered requests,
//!   counted when a request ends, not token by token as vLLM does), so the
//!   two endpoints agree exactly.
//! - `vllm:num_requests_total`: every request received (`requests` of
//!   `/sim/stats`); not a vLLM series, named in its style.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Shared;

/// Counts one request waiting for a slot while it lives (dropped when the
/// slot is granted, or when the client goes away while queued).
pub struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The numbers of one scrape, read once so the text is consistent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub running: usize,
    pub waiting: usize,
    pub cache_blocks: usize,
    pub cache_capacity: usize,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

impl Sample {
    pub fn read(s: &Shared) -> Sample {
        let (cache_blocks, cache_capacity) = s.cache.lock().unwrap_or_else(|e| e.into_inner()).occupancy();
        let st = s.stats.lock().unwrap_or_else(|e| e.into_inner());
        Sample {
            running: s.running(),
            waiting: s.waiting.load(Ordering::Relaxed),
            cache_blocks,
            cache_capacity,
            requests: st.requests,
            prompt_tokens: st.prompt_tokens,
            cached_tokens: st.cached_tokens,
            output_tokens: st.output_tokens,
        }
    }

    fn cache_usage(&self) -> f64 {
        if self.cache_capacity == 0 {
            0.0
        } else {
            (self.cache_blocks as f64 / self.cache_capacity as f64).min(1.0)
        }
    }
}

/// The exposition text (format 0.0.4) of `sample`, every series labelled
/// with `model_name` as vLLM labels them.
pub fn render(sample: &Sample, model: &str) -> String {
    let label = format!("{{model_name=\"{}\"}}", escape_label(model));
    let usage = sample.cache_usage();
    let series: [(&str, &str, &str, String); 9] = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Requests holding a slot (being decoded).",
            sample.running.to_string(),
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Requests queued for a slot.",
            sample.waiting.to_string(),
        ),
        (
            "vllm:kv_cache_usage_perc",
            "gauge",
            "Prefix-cache blocks held over capacity (1 = full).",
            usage.to_string(),
        ),
        (
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "Older name of vllm:kv_cache_usage_perc.",
            usage.to_string(),
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Prompt tokens of answered requests.",
            sample.prompt_tokens.to_string(),
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Output tokens of answered requests.",
            sample.output_tokens.to_string(),
        ),
        (
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            sample.prompt_tokens.to_string(),
        ),
        (
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prompt tokens found in the prefix cache.",
            sample.cached_tokens.to_string(),
        ),
        (
            "vllm:num_requests_total",
            "counter",
            "Requests received.",
            sample.requests.to_string(),
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{label} {value}");
    }
    out
}

/// A label value as the text format requires: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            running: 3,
            waiting: 2,
            cache_blocks: 16,
            cache_capacity: 64,
            requests: 9,
            prompt_tokens: 1000,
            cached_tokens: 256,
            output_tokens: 420,
        }
    }

    /// Each series appears once with its TYPE line and the value of the
    /// sample, and the model name is escaped into a valid label.
    #[test]
    fn renders_vllm_series_from_the_sample() {
        let text = render(&sample(), "m\"x\\y");
        for (name, kind, value) in [
            ("vllm:num_requests_running", "gauge", "3"),
            ("vllm:num_requests_waiting", "gauge", "2"),
            ("vllm:kv_cache_usage_perc", "gauge", "0.25"),
            ("vllm:gpu_cache_usage_perc", "gauge", "0.25"),
            ("vllm:prompt_tokens_total", "counter", "1000"),
            ("vllm:generation_tokens_total", "counter", "420"),
            ("vllm:prefix_cache_hits_total", "counter", "256"),
            ("vllm:num_requests_total", "counter", "9"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}: {text}");
            let line = format!("{name}{{model_name=\"m\\\"x\\\\y\"}} {value}\n");
            assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text}");
        }
    }

    /// A disabled cache (capacity 0) reports 0, never NaN.
    #[test]
    fn disabled_cache_is_zero_usage() {
        let s = Sample {
            cache_capacity: 0,
            cache_blocks: 0,
            ..sample()
        };
        assert!(render(&s, "m").contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0\n"));
    }

    /// The waiting count follows the guards' lifetimes.
    #[test]
    fn waiting_guard_counts_while_alive() {
        let n = AtomicUsize::new(0);
        let a = Waiting::enter(&n);
        let b = Waiting::enter(&n);
        assert_eq!(n.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(n.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }
}
