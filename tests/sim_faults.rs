//! Each fault appears at its configured rate (binomial 4-sigma bounds over a
//! bounded run with a fixed seed), looks like it should on the wire, and is
//! counted in /sim/stats.

#[path = "sim_support.rs"]
mod support;

use support::*;
use tokenswarm::sim::SimConfig;

const N: usize = 400;
const RATE: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    Ok,
    H429,
    H500,
    H503,
    ErrorEvent,
    Truncated,
    Stalled,
    Empty,
}

fn classify(s: &Streamed, stall_us: u128) -> Seen {
    match s.status {
        429 => {
            assert_eq!(s.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
            return Seen::H429;
        }
        500 => return Seen::H500,
        503 => return Seen::H503,
        200 => {}
        other => panic!("unexpected status {other}"),
    }
    if s.has_error() {
        return Seen::ErrorEvent;
    }
    if !s.done() {
        assert!(s.finish().is_none(), "a cut stream must not carry a finish reason");
        let gap = s
            .chunk_times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_micros())
            .max()
            .unwrap_or(0);
        return if gap >= stall_us {
            Seen::Stalled
        } else {
            Seen::Truncated
        };
    }
    if s.events.iter().filter(|e| e.data.contains(":\" tok\"")).count() == 0 {
        assert_eq!(s.finish().as_deref(), Some("stop"));
        return Seen::Empty;
    }
    Seen::Ok
}

fn bounds() -> (f64, f64) {
    let mean = N as f64 * RATE;
    let sd = (N as f64 * RATE * (1.0 - RATE)).sqrt();
    (mean - 4.0 * sd, mean + 4.0 * sd)
}

async fn run_fault(cfg: SimConfig, path: &str, expect: Seen, stat_key: &str) {
    let sim = Sim::start(SimConfig {
        seed: 42,
        stall: std::time::Duration::from_millis(100),
        ..cfg
    })
    .await;
    let body = if path == "/v1/messages" {
        anthropic("a b c d", 8, true)
    } else {
        chat("a b c d", 8, true)
    };
    let mut counts = std::collections::HashMap::new();
    // 8 concurrent clients keep the stalls from serialising the run.
    let futs = (0..8).map(|_| {
        let (sim, body) = (&sim, &body);
        async move {
            let mut v = Vec::new();
            for _ in 0..N / 8 {
                v.push(classify(&sim.stream(path, body).await, 50_000));
            }
            v
        }
    });
    for seen in futures_util::future::join_all(futs).await.into_iter().flatten() {
        *counts.entry(seen).or_insert(0usize) += 1;
    }
    let hits = counts.get(&expect).copied().unwrap_or(0);
    let ok = counts.get(&Seen::Ok).copied().unwrap_or(0);
    assert_eq!(hits + ok, N, "{expect:?}: only that fault may appear: {counts:?}");
    let (lo, hi) = bounds();
    assert!(
        (lo..=hi).contains(&(hits as f64)),
        "{expect:?}: {hits} of {N}, expected {lo:.0}..{hi:.0}"
    );
    let stats = sim.get_json("/sim/stats").await;
    assert_eq!(stats["requests"], N as u64);
    assert_eq!(stats["faults"][stat_key], hits as u64, "{stats}");
    let statuses: u64 = stats["by_endpoint"][path]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(statuses, N as u64);
    eprintln!("{expect:?} on {path}: {hits}/{N}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_429() {
    run_fault(
        SimConfig {
            fault_429: RATE,
            ..fast()
        },
        "/v1/chat/completions",
        Seen::H429,
        "http_429",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_500() {
    run_fault(
        SimConfig {
            fault_500: RATE,
            ..fast()
        },
        "/v1/messages",
        Seen::H500,
        "http_500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_503() {
    run_fault(
        SimConfig {
            fault_503: RATE,
            ..fast()
        },
        "/v1/chat/completions",
        Seen::H503,
        "http_503",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_error_event_openai() {
    run_fault(
        SimConfig {
            fault_error_event: RATE,
            ..fast()
        },
        "/v1/chat/completions",
        Seen::ErrorEvent,
        "error_event",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_error_event_anthropic() {
    run_fault(
        SimConfig {
            fault_error_event: RATE,
            ..fast()
        },
        "/v1/messages",
        Seen::ErrorEvent,
        "error_event",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_truncate() {
    run_fault(
        SimConfig {
            fault_truncate: RATE,
            ..fast()
        },
        "/v1/chat/completions",
        Seen::Truncated,
        "truncate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stall() {
    run_fault(
        SimConfig {
            fault_stall: RATE,
            ..fast()
        },
        "/v1/messages",
        Seen::Stalled,
        "stall",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_empty() {
    run_fault(
        SimConfig {
            fault_empty: RATE,
            ..fast()
        },
        "/v1/chat/completions",
        Seen::Empty,
        "empty",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_shapes() {
    let sim = Sim::start(SimConfig {
        fault_error_event: 1.0,
        ..fast()
    })
    .await;
    let s = sim.stream("/v1/chat/completions", &chat("a b", 8, true)).await;
    let err = s
        .events
        .iter()
        .find_map(|e| e.json().filter(|v| v.get("error").is_some()))
        .unwrap();
    for k in ["message", "type", "param", "code"] {
        assert!(err["error"].get(k).is_some(), "{err}");
    }
    assert!(s.events.last().unwrap().data == "[DONE]");
    assert!(s.tokens() >= 1 && s.tokens() < 8);
    let s = sim.stream("/v1/messages", &anthropic("a b", 8, true)).await;
    let ev = s.events.iter().find(|e| e.name.as_deref() == Some("error")).unwrap();
    let v = ev.json().unwrap();
    assert_eq!(v["type"], "error");
    assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string());
    // non-streaming: an error body instead
    let (st, v) = sim.post_json("/v1/chat/completions", &chat("a b", 8, false)).await;
    assert_eq!(st, 500);
    assert!(v["error"]["message"].is_string());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_faults() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(SimConfig {
            seed: 7,
            fault_500: 0.3,
            fault_429: 0.3,
            ..fast()
        })
        .await;
        let mut v = Vec::new();
        for _ in 0..50 {
            v.push(
                sim.post("/v1/chat/completions", &chat("a", 2, false).to_string())
                    .await
                    .0,
            );
        }
        runs.push(v);
        sim.stop().await;
    }
    assert_eq!(runs[0], runs[1]);
}
