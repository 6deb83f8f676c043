//! The LLM client against the built-in simulator with a fixed latency model
//! (TTFT 50 ms + 0.1 ms per uncached prompt token, 10 ms per output token):
//! what the client measures must match what the simulator says it did, for
//! every provider. The simulator's request log is the ground truth; both
//! sides measure the same requests, so the comparison holds on a busy
//! machine as long as the two clocks see the same bytes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokenswarm::llm::{LlmClient, PreparedScenario};
use tokenswarm::outcome::Outcome;
use tokenswarm::scenario::{TestConfig, Timeouts};
use tokenswarm::sim::{SimConfig, serve};
use tokio_util::sync::CancellationToken;

const SCENARIOS: &str = "
scenarios:
  - {name: Chat, provider: openai-chat, model: m, prompt_length: 200, prefix_length: 64, output_length: 30}
  - {name: Legacy, provider: openai-completions, model: m, prompt_length: 120, prefix_length: 32, output_length: 25}
  - {name: Claude, provider: anthropic, model: m, prompt_length: 150, prefix_length: 48, output_length: 20}
  - {name: Gemini, provider: gemini, model: gemini-sim, prompt_length: 140, prefix_length: 48, output_length: 22}
";
const PER_SCENARIO: usize = 6;

fn us(d: Option<Duration>) -> f64 {
    d.expect("measured").as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Proves: input, output and cached tokens equal the simulator's counts
/// exactly; the client never sees a first or last token before the
/// simulator sent it (client TTFT and E2E, taken from the earlier send, are
/// not below the simulator's); and TTFT, E2E, TPOT and the mean ITL agree
/// with the simulator's server-side timings within 1 ms (median over all
/// requests; the worst case is printed). The 1 ms agreement depends on the
/// machine not being overloaded: the run of 24 requests is tried up to three
/// times, and when none agrees on a machine whose load average is above its
/// core count the test only warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timings_and_tokens_match_the_simulators_ground_truth() {
    let mut tries = Vec::new();
    for attempt in 0..3 {
        match one_attempt(attempt).await {
            Ok(()) => return,
            Err(e) => tries.push(e),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    assert!(load > cores, "client and simulator disagree (load {load}): {tries:#?}");
    eprintln!("warning: overloaded machine (load {load}); no attempt within 1 ms: {tries:#?}");
}

async fn one_attempt(attempt: u32) -> Result<(), String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/test-runs/llm-vs-sim-{}-{attempt}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("requests.jsonl");
    let cfg = SimConfig {
        ttft_ms: 50.0,
        prefill_us_per_token: 100.0,
        tpot_ms: 10.0,
        jitter: 0.0,
        batch_slowdown: 0.0,
        log_requests: Some(log.clone()),
        ..SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, cfg, shutdown.clone()));

    let config = TestConfig::from_yaml(SCENARIOS).unwrap();
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let cancel = CancellationToken::new();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for s in &config.scenarios {
        let p = PreparedScenario::new(s, &host).unwrap();
        for seq in 0..PER_SCENARIO as u64 {
            // One at a time, so the simulator's log is in request order.
            outcomes.push((s.name.clone(), client.execute(&p, seq, &cancel).await));
        }
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let truth: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(truth.len(), outcomes.len(), "one log line per request");

    let (mut ttft, mut e2e, mut tpot, mut itl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((name, o), t) in outcomes.iter().zip(&truth) {
        assert!(o.failure.is_none(), "{name}: {:?}", o.failure);
        let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t}"));
        assert_eq!(o.usage.output_tokens, Some(n("output_tokens")), "{name}: {t}");
        assert_eq!(o.usage.input_tokens, Some(n("prompt_tokens")), "{name}: {t}");
        assert_eq!(o.usage.cached_tokens.unwrap_or(0), n("cached_tokens"), "{name}: {t}");
        let out = n("output_tokens") as f64;
        let (s_ttft, s_e2e) = (n("ttft_us") as f64, n("e2e_us") as f64);
        // causality: the client's clock starts before the server's
        assert!(
            us(o.ttft) >= s_ttft,
            "{name}: client TTFT below the simulator's: {o:?} {t}"
        );
        assert!(
            us(o.e2e) >= s_e2e,
            "{name}: client E2E below the simulator's: {o:?} {t}"
        );
        ttft.push(us(o.ttft) - s_ttft);
        e2e.push(us(o.e2e) - s_e2e);
        tpot.push(us(o.tpot()) - (s_e2e - s_ttft) / (out - 1.0));
        let client_itl = o.itl_us.iter().map(|&g| f64::from(g)).sum::<f64>() / o.itl_us.len() as f64;
        itl.push(client_itl - (s_e2e - s_ttft) / (out - 1.0));
    }
    // Cached prefixes were seen: later requests of a scenario hit the cache.
    assert!(outcomes.iter().any(|(_, o)| o.usage.cached_tokens.unwrap_or(0) > 0));
    let mut worse = Vec::new();
    for (metric, diffs) in [("TTFT", ttft), ("E2E", e2e), ("TPOT", tpot), ("mean ITL", itl)] {
        let worst = diffs.iter().map(|d| d.abs()).fold(0.0, f64::max);
        let med = median(diffs.iter().map(|d| d.abs()).collect());
        println!("{metric}: client - simulator: median |diff| {med:.0} µs, worst {worst:.0} µs");
        if med >= 1000.0 {
            worse.push(format!(
                "{metric}: median difference {med:.0} µs exceeds 1 ms: {diffs:?}"
            ));
        }
    }
    if worse.is_empty() {
        Ok(())
    } else {
        Err(worse.join("\n"))
    }
}

/// Runs one Gemini request against a simulator with `cfg` and returns it.
async fn one_gemini(cfg: SimConfig) -> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, cfg, shutdown.clone()));
    let config = TestConfig::from_yaml(
        "scenarios:\n  - {name: G, provider: gemini, model: gemini-sim, prompt_length: 40, prefix_length: 8, output_length: 12}\n",
    )
    .unwrap();
    let client = LlmClient::new(&Timeouts::default(), 1).unwrap();
    let p = PreparedScenario::new(&config.scenarios[0], &host).unwrap();
    let o = client.execute(&p, 0, &CancellationToken::new()).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    o
}

/// Proves (issue 14.2): with thought parts in the stream, output =
/// candidates + thoughts and reasoning = thoughts (which part is which
/// token kind is pinned clock-free by tests/llm_sse.rs), its in-stream
/// error object fails the request as an error event,
/// and its HTTP error body (`{error: {code, message, status}}`) gives the
/// status kind, through the real client and simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_reasoning_and_errors_match_the_simulator() {
    let base = SimConfig {
        ttft_ms: 5.0,
        tpot_ms: 2.0,
        jitter: 0.0,
        ..SimConfig::default()
    };
    let o = one_gemini(SimConfig {
        reasoning_tokens: 4,
        ..base.clone()
    })
    .await;
    assert!(o.failure.is_none(), "{:?}", o.failure);
    assert_eq!(o.usage.output_tokens, Some(12));
    assert_eq!(o.usage.reasoning_tokens, Some(4));
    assert_eq!(o.usage.input_tokens, Some(40));
    assert_eq!(o.output_chunks, 12);

    let o = one_gemini(SimConfig {
        fault_error_event: 1.0,
        ..base.clone()
    })
    .await;
    let f = o.failure.expect("an error event fails the request");
    assert_eq!(f.kind(), tokenswarm::outcome::FailureKind::ErrorEvent, "{f:?}");

    let o = one_gemini(SimConfig { fault_429: 1.0, ..base }).await;
    let f = o.failure.expect("a 429 fails the request");
    assert_eq!(f.kind(), tokenswarm::outcome::FailureKind::HttpStatus(429), "{f:?}");
}
