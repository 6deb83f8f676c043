//! The simulator's `GET /metrics` (issue 15.4): Prometheus text under vLLM's
//! names, read from the simulator's real state. Slots and the queue are
//! observed while streams hold them; the counters are compared with the
//! simulator's own ground truth (`/sim/stats`).

#[path = "sim_support.rs"]
mod support;

use std::time::Duration;

use support::*;
use tokenswarm::sim::SimConfig;

/// The value of the single series `name` in a Prometheus text body.
fn value(text: &str, name: &str) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .collect();
    assert_eq!(lines.len(), 1, "one series {name} in:\n{text}");
    lines[0]
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number in {:?}", lines[0]))
}

async fn metrics(sim: &Sim) -> String {
    let r = sim.client.get(format!("{}/metrics", sim.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// Polls `/metrics` every 10 ms until `ok` holds (at most 10 s).
async fn until(sim: &Sim, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(sim).await;
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}; last:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With 2 slots and 3 concurrent streams, `/metrics` shows 2 running and 1
/// waiting (never more running than slots); once all are done, running and
/// waiting are 0 and the token counters equal `/sim/stats` exactly, and the
/// cache usage is the fraction of cache blocks the prompts filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_slots_queue_and_counters() {
    let sim = Sim::start(SimConfig {
        slots: 2,
        ttft_ms: 5.0,
        tpot_ms: 20.0,
        prefix_cache_blocks: 64,
        ..SimConfig::default()
    })
    .await;
    let idle = metrics(&sim).await;
    assert_eq!(value(&idle, "vllm:num_requests_running"), 0.0);
    assert_eq!(value(&idle, "vllm:num_requests_waiting"), 0.0);
    assert_eq!(value(&idle, "vllm:kv_cache_usage_perc"), 0.0);

    let streams = (0..3).map(|i| {
        let client = sim.client.clone();
        let url = format!("{}/v1/chat/completions", sim.base);
        // 32 distinct words each: 2 whole cache blocks per prompt
        let body = chat(&words(32, i), 30, true).to_string();
        tokio::spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        })
    });
    let streams: Vec<_> = streams.collect();
    let busy = until(&sim, "2 running and 1 waiting", |t| {
        value(t, "vllm:num_requests_running") == 2.0 && value(t, "vllm:num_requests_waiting") == 1.0
    })
    .await;
    assert!(value(&busy, "vllm:num_requests_running") <= 2.0);
    for s in streams {
        s.await.unwrap();
    }
    let done = until(&sim, "all requests ended", |t| {
        value(t, "vllm:num_requests_running") == 0.0 && value(t, "vllm:num_requests_waiting") == 0.0
    })
    .await;
    let stats = sim.get_json("/sim/stats").await;
    for (series, field) in [
        ("vllm:prompt_tokens_total", "prompt_tokens"),
        ("vllm:generation_tokens_total", "output_tokens"),
        ("vllm:prefix_cache_queries_total", "prompt_tokens"),
        ("vllm:prefix_cache_hits_total", "cached_tokens"),
        ("vllm:num_requests_total", "requests"),
    ] {
        assert_eq!(
            value(&done, series),
            stats[field].as_f64().unwrap(),
            "{series} vs /sim/stats {field}: {stats}"
        );
    }
    assert_eq!(value(&done, "vllm:generation_tokens_total"), 90.0);
    // 3 prompts x 2 blocks, plus the block each answer completes (the sim
    // caches answers too, so that a session's next turn hits them)
    assert_eq!(value(&done, "vllm:kv_cache_usage_perc"), 9.0 / 64.0);
    assert_eq!(value(&done, "vllm:gpu_cache_usage_perc"), 9.0 / 64.0);
    sim.stop().await;
}

/// A client that goes away while its request is queued for a slot leaves
/// the queue: the waiting gauge returns to 0 (the count is a guard, not a
/// pair of increments that a dropped request could unbalance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_drops_when_a_queued_client_leaves() {
    let sim = Sim::start(SimConfig {
        slots: 1,
        ttft_ms: 5.0,
        tpot_ms: 20.0,
        ..SimConfig::default()
    })
    .await;
    let holder = {
        let client = sim.client.clone();
        let url = format!("{}/v1/chat/completions", sim.base);
        let body = chat("hold the slot", 100, true).to_string();
        tokio::spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        })
    };
    until(&sim, "the slot taken", |t| value(t, "vllm:num_requests_running") == 1.0).await;
    let queued = {
        let client = sim.client.clone();
        let url = format!("{}/v1/chat/completions", sim.base);
        let body = chat("queued", 5, true).to_string();
        tokio::spawn(async move {
            let _ = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
        })
    };
    until(&sim, "one waiting", |t| value(t, "vllm:num_requests_waiting") == 1.0).await;
    queued.abort();
    let _ = queued.await;
    let t = until(&sim, "the queue empty again", |t| {
        value(t, "vllm:num_requests_waiting") == 0.0
    })
    .await;
    // the holder still runs: the queue emptied because the client left
    assert_eq!(value(&t, "vllm:num_requests_running"), 1.0);
    holder.abort();
    sim.stop().await;
}
