//! The ground truth the simulator reports matches what a client on loopback
//! measures: chunk arrival gaps vs the sim's token_offsets_us, within 1 ms.

#[path = "sim_support.rs"]
mod support;

use support::*;
use tokenswarm::sim::SimConfig;

fn cfg() -> SimConfig {
    SimConfig {
        ttft_ms: 50.0,
        prefill_us_per_token: 100.0,
        tpot_ms: 10.0,
        batch_slowdown: 0.0,
        ..SimConfig::default()
    }
}

/// Checks one stream; returns how far each token's client arrival is off the
/// sim's token_offsets_us, µs.
fn check(s: &Streamed, expect_tokens: usize) -> Vec<f64> {
    assert_eq!(s.status, 200);
    let sim = s.usage_event().expect("sim object")["sim"].clone();
    let offsets: Vec<i64> = sim["token_offsets_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let times = s.token_times();
    assert_eq!(times.len(), expect_tokens);
    assert_eq!(offsets.len(), expect_tokens);
    assert_eq!(sim["output_tokens"], expect_tokens as u64);
    assert_eq!(sim["ttft_us"].as_i64(), offsets.first().copied());
    assert_eq!(sim["e2e_us"].as_i64(), offsets.last().copied());
    // The two clocks differ by a constant (send time vs the sim's read time,
    // plus loopback delivery). Align them on the token delivered fastest:
    // delivery only ever adds delay, so the smallest (client − sim) is the
    // constant, and each token's excess over it is the disagreement. (A late
    // first token thus spoils only itself, not every later comparison.)
    let skew: Vec<f64> = (0..times.len())
        .map(|i| times[i].duration_since(times[0]).as_micros() as f64 - (offsets[i] - offsets[0]) as f64)
        .collect();
    let base = skew.iter().copied().fold(f64::INFINITY, f64::min);
    skew.iter().map(|k| k - base).collect()
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn summary(d: &mut [f64]) -> (f64, f64, f64) {
    d.sort_by(f64::total_cmp);
    let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.95), q(1.0))
}

/// The simulator runs on its own runtime threads and the client on another
/// thread, as a separate client process would; both timing checks run in
/// this one test so that nothing else competes for the two CPUs.
#[test]
fn timing() {
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every token must agree within 1 ms. A shared, busy machine can preempt
    // either side for milliseconds now and then (seen: 20-90 ms stalls at a
    // load average of 5 on 2 CPUs), so up to five attempts. If none is
    // clean, the bulk must still agree in one attempt: median within 250 µs
    // and p95 within 1 ms, unless the machine is overloaded (load average
    // above its CPU count), when it only warns. A systematic error breaks
    // every attempt.
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let sim = sim_rt.block_on(Sim::start(cfg()));
        let (sim, mut d) = client_rt.block_on(ground_truth_matches_client_measurement(sim));
        sim_rt.block_on(sim.stop());
        let (p50, p95, max) = summary(&mut d);
        eprintln!(
            "client arrival vs sim token_offsets_us over {} tokens, µs: p50 {p50} p95 {p95} max {max}",
            d.len()
        );
        attempts.push((p50, p95, max));
        if max <= 1000.0 {
            break;
        }
    }
    if attempts.iter().all(|a| a.2 > 1000.0) {
        let overloaded = load_average() > std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        eprintln!("warning: no attempt within 1 ms for every token (overloaded machine: {overloaded})");
        // every attempt, not the best one: one good attempt passed above
        let agree = attempts.iter().any(|(p50, p95, _)| *p50 <= 250.0 && *p95 <= 1000.0);
        assert!(overloaded || agree, "client and sim disagree: {attempts:?}");
    }
    let sim = sim_rt.block_on(Sim::start(SimConfig {
        ttft_ms: 5.0,
        prefill_us_per_token: 0.0,
        tpot_ms: 2.0,
        batch_slowdown: 0.0,
        ..SimConfig::default()
    }));
    client_rt.block_on(deadlines_do_not_drift(&sim));
    sim_rt.block_on(sim.stop());
}

async fn ground_truth_matches_client_measurement(sim: Sim) -> (Sim, Vec<f64>) {
    let r = measure(&sim).await;
    (sim, r)
}

async fn measure(sim: &Sim) -> Vec<f64> {
    let prompt = words(200, 1);
    let mut diffs = Vec::new();
    // sequential, each API
    let s = sim.stream("/v1/chat/completions", &chat(&prompt, 20, true)).await;
    diffs.extend(check(&s, 20));
    // the first token comes after TTFT + prefill (asserted against the sim's own clock only)
    let sim_obj = s.usage_event().unwrap()["sim"].clone();
    assert!(sim_obj["ttft_us"].as_u64().unwrap() >= 70_000);
    let mut body = chat(&prompt, 10, true);
    body["reasoning_effort"] = "high".into();
    diffs.extend(check(&sim.stream("/v1/chat/completions", &body).await, 10));
    let comp = serde_json::json!({"model": "m", "prompt": prompt, "max_tokens": 15, "stream": true,
        "stream_options": {"include_usage": true}});
    diffs.extend(check(&sim.stream("/v1/completions", &comp).await, 15));
    diffs.extend(check(
        &sim.stream("/v1/messages", &anthropic(&prompt, 15, true)).await,
        15,
    ));
    // concurrent streams
    let futs = (0..8).map(|i| {
        let p = words(100 + 10 * i, i);
        async move { check(&sim.stream("/v1/chat/completions", &chat(&p, 25, true)).await, 25) }
    });
    for w in futures_util::future::join_all(futs).await {
        diffs.extend(w);
    }
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
    diffs
}

/// 100 tokens at 2 ms: token i is due at ttft + i × 2 ms. Proves no token
/// leaves before its deadline (the sim sleeps until absolute deadlines). How
/// late a wake-up is depends on the machine, so it is not asserted here; that
/// lateness cannot accumulate is a property of the deadline arithmetic, shown
/// without a clock by `sim::stream::tests::deadlines_are_absolute`.
async fn deadlines_do_not_drift(sim: &Sim) {
    let s = sim.stream("/v1/chat/completions", &chat("a b c", 100, true)).await;
    let sim_obj = s.usage_event().unwrap()["sim"].clone();
    let offs: Vec<i64> = sim_obj["token_offsets_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(offs.len(), 100, "one offset per token");
    let q = sim_obj["queue_us"].as_i64().unwrap();
    for (i, o) in offs.iter().enumerate() {
        let due = q + 5_000 + 2_000 * i as i64;
        assert!(*o >= due - 50, "token {i} early: {o} < {due}");
    }
    assert!(offs.windows(2).all(|w| w[0] <= w[1]), "offsets in order: {offs:?}");
}
