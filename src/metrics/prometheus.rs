//! Prometheus text exposition (`tokenswarm worker --metrics-addr
//! HOST:PORT`, `GET /metrics`): per scenario, counters of requests,
//! failures by kind and tokens, and histograms of TTFT, TPOT and E2E in
//! seconds with fixed buckets. Cumulative since the worker started.
//!
//! Label values come from the test definition (scenario names) and from
//! `FailureKind::label` (bounded by the HTTP status range); the number of
//! series is further capped at [`MAX_SERIES`] label sets, past which new
//! ones are counted under scenario `other`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::{OutcomeSink, RecordNote, RequestRecord};

/// Histogram bucket upper bounds, seconds.
pub const BUCKETS_S: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
];
/// Most (scenario) label sets kept.
pub const MAX_SERIES: usize = 1024;

#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: [u64; BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

impl Hist {
    fn observe(&mut self, s: f64) {
        for (b, le) in self.buckets.iter_mut().zip(BUCKETS_S) {
            if s <= le {
                *b = b.saturating_add(1);
            }
        }
        self.count = self.count.saturating_add(1);
        self.sum += s;
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    requests: u64,
    failures: BTreeMap<String, u64>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    ttft: Hist,
    tpot: Hist,
    e2e: Hist,
}

/// The registry; clone the `Arc` into the worker's sinks and the server.
#[derive(Debug, Default)]
pub struct Prometheus {
    series: Mutex<BTreeMap<String, Series>>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Prometheus {
    pub fn new() -> Arc<Prometheus> {
        Arc::new(Prometheus::default())
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, f: &dyn Fn(&Series) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (sc, s) in series.iter() {
                let _ = writeln!(out, "{name}{{scenario=\"{}\"}} {}", esc(sc), f(s));
            }
        };
        counter(&mut out, "tokenswarm_requests_total", "LLM requests ended.", &|s| {
            s.requests
        });
        counter(
            &mut out,
            "tokenswarm_input_tokens_total",
            "Prompt tokens (server usage).",
            &|s| s.input_tokens,
        );
        counter(&mut out, "tokenswarm_output_tokens_total", "Output tokens.", &|s| {
            s.output_tokens
        });
        counter(
            &mut out,
            "tokenswarm_cached_tokens_total",
            "Cached prompt tokens.",
            &|s| s.cached_tokens,
        );
        let _ = writeln!(
            out,
            "# HELP tokenswarm_failures_total Failed LLM requests by kind.\n# TYPE tokenswarm_failures_total counter"
        );
        for (sc, s) in series.iter() {
            for (kind, n) in &s.failures {
                let _ = writeln!(
                    out,
                    "tokenswarm_failures_total{{scenario=\"{}\",kind=\"{}\"}} {n}",
                    esc(sc),
                    esc(kind)
                );
            }
        }
        for (name, help, pick) in [
            (
                "tokenswarm_ttft_seconds",
                "Time to first token.",
                (|s: &Series| &s.ttft) as fn(&Series) -> &Hist,
            ),
            (
                "tokenswarm_tpot_seconds",
                "Time per output token (successful requests).",
                |s: &Series| &s.tpot,
            ),
            (
                "tokenswarm_e2e_seconds",
                "Send to last token (successful requests).",
                |s: &Series| &s.e2e,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (sc, s) in series.iter() {
                let h = pick(s);
                let sc = esc(sc);
                for (n, le) in h.buckets.iter().zip(BUCKETS_S) {
                    let _ = writeln!(out, "{name}_bucket{{scenario=\"{sc}\",le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{scenario=\"{sc}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{scenario=\"{sc}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{scenario=\"{sc}\"}} {}", h.count);
            }
        }
        out
    }

    /// Serves `GET /metrics` on `listener` until the process ends.
    pub async fn serve(self: Arc<Prometheus>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use axum::routing::get;
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let reg = self.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        reg.render(),
                    )
                }
            }),
        );
        axum::serve(listener, app).await
    }
}

impl OutcomeSink for Prometheus {
    fn record(&self, r: &RequestRecord<'_>) -> RecordNote {
        let o = r.outcome;
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key = if series.contains_key(r.scenario) || series.len() < MAX_SERIES {
            r.scenario
        } else {
            "other"
        };
        let s = series.entry(key.to_string()).or_default();
        s.requests = s.requests.saturating_add(1);
        s.input_tokens = s.input_tokens.saturating_add(o.usage.input_tokens.unwrap_or(0));
        s.output_tokens = s.output_tokens.saturating_add(o.output_tokens());
        s.cached_tokens = s.cached_tokens.saturating_add(o.usage.cached_tokens.unwrap_or(0));
        if let Some(t) = o.ttft {
            s.ttft.observe(t.as_secs_f64());
        }
        match &o.failure {
            Some(f) => {
                let n = s.failures.entry(f.kind().label()).or_default();
                *n = n.saturating_add(1);
            }
            None => {
                if let Some(t) = o.tpot() {
                    s.tpot.observe(t.as_secs_f64());
                }
                if let Some(t) = o.e2e {
                    s.e2e.observe(t.as_secs_f64());
                }
            }
        }
        RecordNote::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, FailureKind, Outcome};
    use std::time::Duration;

    /// Counters and cumulative buckets come out in the text format.
    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let p = Prometheus::default();
        let ok = Outcome {
            ttft: Some(Duration::from_millis(40)),
            ..Outcome::default()
        };
        let bad = Outcome {
            failure: Some(Failure::new(FailureKind::HttpStatus(429), "HTTP 429", "")),
            ..Outcome::default()
        };
        for o in [&ok, &bad] {
            p.record(&RequestRecord {
                class: 0,
                scenario: "Chat",
                seq: 0,
                scheduled: tokio::time::Instant::now(),
                warmup: false,
                outcome: o,
                turn: None,
            });
        }
        let t = p.render();
        assert!(t.contains("tokenswarm_requests_total{scenario=\"Chat\"} 2"), "{t}");
        assert!(
            t.contains("tokenswarm_failures_total{scenario=\"Chat\",kind=\"http_429\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("tokenswarm_ttft_seconds_bucket{scenario=\"Chat\",le=\"0.025\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("tokenswarm_ttft_seconds_bucket{scenario=\"Chat\",le=\"0.05\"} 1"),
            "{t}"
        );
        assert!(t.contains("tokenswarm_ttft_seconds_count{scenario=\"Chat\"} 1"), "{t}");
    }
}
