//! The ground truth the simulator reports matches what a client on loopback
//! measures: chunk arrival gaps vs the sim's token_offsets_us, within 1 ms.

#[path = "sim_support.rs"]
mod support;

use support::*;
use tokenswarm::sim::SimConfig;

fn cfg() -> SimConfig {
    SimConfig { ttft_ms: 50.0, prefill_us_per_token: 100.0, tpot_ms: 10.0, batch_slowdown: 0.0, ..SimConfig::default() }
}

fn check(s: &Streamed, expect_tokens: usize) -> f64 {
    assert_eq!(s.status, 200);
    let sim = s.usage_event().expect("sim object")["sim"].clone();
    let offsets: Vec<i64> = sim["token_offsets_us"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let times = s.token_times();
    assert_eq!(times.len(), expect_tokens);
    assert_eq!(offsets.len(), expect_tokens);
    assert_eq!(sim["output_tokens"], expect_tokens as u64);
    assert_eq!(sim["ttft_us"].as_i64(), offsets.first().copied());
    assert_eq!(sim["e2e_us"].as_i64(), offsets.last().copied());
    let mut worst = 0f64;
    for i in 1..times.len() {
        let client_us = times[i].duration_since(times[0]).as_micros() as f64;
        let sim_us = (offsets[i] - offsets[0]) as f64;
        let d = (client_us - sim_us).abs();
        worst = worst.max(d);
        assert!(d <= 1000.0, "token {i}: client {client_us} µs vs sim {sim_us} µs");
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ground_truth_matches_client_measurement() {
    let sim = Sim::start(cfg()).await;
    let prompt = words(200, 1);
    let mut worst = 0f64;
    // sequential, each API
    let s = sim.stream("/v1/chat/completions", &chat(&prompt, 20, true)).await;
    worst = worst.max(check(&s, 20));
    // the first token comes after TTFT + prefill (asserted against the sim's own clock only)
    let sim_obj = s.usage_event().unwrap()["sim"].clone();
    assert!(sim_obj["ttft_us"].as_u64().unwrap() >= 70_000);
    let mut body = chat(&prompt, 10, true);
    body["reasoning_effort"] = "high".into();
    worst = worst.max(check(&sim.stream("/v1/chat/completions", &body).await, 10));
    let comp = serde_json::json!({"model": "m", "prompt": prompt, "max_tokens": 15, "stream": true,
        "stream_options": {"include_usage": true}});
    worst = worst.max(check(&sim.stream("/v1/completions", &comp).await, 15));
    worst = worst.max(check(&sim.stream("/v1/messages", &anthropic(&prompt, 15, true)).await, 15));
    // concurrent streams
    let mut tasks = Vec::new();
    let sim = std::sync::Arc::new(sim);
    for i in 0..8 {
        let sim = sim.clone();
        let p = words(100 + i, i);
        tasks.push(tokio::spawn(async move { check(&sim.stream("/v1/chat/completions", &chat(&p, 25, true)).await, 25) }));
    }
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    eprintln!("worst client/sim disagreement: {worst} µs");
    // non-streaming: ttft/e2e/offsets consistent with the schedule
    let (st, v) = sim.post_json("/v1/chat/completions", &chat(&prompt, 5, false)).await;
    assert_eq!(st, 200);
    let offs = v["sim"]["token_offsets_us"].as_array().unwrap();
    assert_eq!(offs.len(), 5);
    for w in offs.windows(2) {
        let gap = w[1].as_i64().unwrap() - w[0].as_i64().unwrap();
        assert!((gap - 10_000).abs() <= 1, "planned gap {gap}");
    }
    assert!(v["sim"]["e2e_us"].as_u64().unwrap() >= offs[4].as_u64().unwrap());
    std::sync::Arc::into_inner(sim).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlines_do_not_drift() {
    // 100 tokens at 2 ms: the last token is due at ttft + 99 × 2 ms; lateness
    // of single wake-ups must not accumulate.
    let sim = Sim::start(SimConfig { ttft_ms: 5.0, prefill_us_per_token: 0.0, tpot_ms: 2.0, batch_slowdown: 0.0,
        ..SimConfig::default() })
    .await;
    let s = sim.stream("/v1/chat/completions", &chat("a b c", 100, true)).await;
    let sim_obj = s.usage_event().unwrap()["sim"].clone();
    let offs: Vec<i64> = sim_obj["token_offsets_us"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let q = sim_obj["queue_us"].as_i64().unwrap();
    for (i, o) in offs.iter().enumerate() {
        let due = q + 5_000 + 2_000 * i as i64;
        assert!(*o >= due - 50, "token {i} early: {o} < {due}");
        assert!(*o <= due + 3_000, "token {i} drifted: {o} vs {due}");
    }
    sim.stop().await;
}
