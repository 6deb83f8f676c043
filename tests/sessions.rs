//! Multi-turn sessions end to end: a real Locust master (pinned, from the
//! project venv) running `locustfiles/llm.py`, one tokenswarm worker and
//! the real simulator with its prefix cache. The simulator is the ground
//! truth: what it says it served from its cache, request by request, is
//! compared with the per-turn rows the master shows.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Turn k (1-based) of the scenario below sends the first prompt (40
/// tokens) plus, per earlier turn, its answer (20) and a new message (24).
fn session_yaml(provider: &str) -> String {
    format!(
        "scenarios:\n  - {{name: Chat, provider: {provider}, model: m, prompt_length: 40, prefix_length: 16, \
         output_length: 20,\n     session: {{turns: 3, turn_length: 24, affinity_header: x-session-id}}}}\n"
    )
}

fn prompt_tokens_of_turn(k: u64) -> u64 {
    40 + (k - 1) * (20 + 24)
}

fn num(row: &BTreeMap<String, String>, col: &str) -> f64 {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("column {col} of {row:?}: {e}"))
}

/// Proves: a 3-turn session scenario is reported on the master as one row
/// per turn ("Chat turn 1..3", in Locust's table and in the LLM CSV), and
/// for each turn the cached tokens the master shows equal the sum of what
/// the simulator's prefix cache served to the requests of that turn (its
/// request log; a turn is told apart by its prompt size, which proves that
/// each turn resent the whole conversation, the answers included). The
/// master's "% of a perfect prefix cache" is the cached tokens over the
/// ideal (turn 1: the shared prefix; turn k: the previous turn's input plus
/// output), and on the simulator, whose cache works in 16-token blocks,
/// the ideal exceeds what it served by less than one block per request.
#[test]
fn cached_tokens_per_turn_match_the_simulators_prefix_cache() {
    check_sessions("sessions-chat", "openai-chat");
}

/// Proves: the same for the Anthropic Messages API, whose usage reports
/// cached tokens apart from `input_tokens` (the worker adds them back) and
/// whose answer text arrives as `text_delta` events.
#[test]
fn anthropic_sessions_hit_the_cache_the_same_way() {
    check_sessions("sessions-anthropic", "anthropic");
}

fn check_sessions(name: &str, provider: &str) {
    let dir = test_dir(name);
    let log = dir.join("sim-requests.jsonl");
    let (_sim, sim_port) = start_sim(
        &dir,
        "sim",
        &[
            "--ttft-ms",
            "5",
            "--tpot-ms",
            "1",
            "--seed",
            "5",
            "--log-requests",
            log.to_str().unwrap(),
        ],
    );
    let yaml = session_yaml(provider);
    let host = format!("http://127.0.0.1:{sim_port}");
    let LlmMaster {
        proc: mut master,
        master_port: mport,
        ..
    } = start_llm_master(
        &dir,
        &host,
        &yaml,
        1,
        &[
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "5s",
            "--stop-timeout",
            "30",
            "--llm-no-warmup",
            "--csv",
            "out",
        ],
    );
    let mut worker = start_worker(&dir, "worker", mport, &[], &[]);
    let logs = |m: &Proc, w: &Proc| {
        format!(
            "--- master\n{}\n--- worker\n{}",
            tail(&m.output(), 60),
            tail(&w.output(), 30)
        )
    };
    let code = master.wait(Duration::from_secs(90));
    assert!(code.is_some(), "master did not exit\n{}", logs(&master, &worker));
    assert_eq!(
        worker.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        logs(&master, &worker)
    );

    // The simulator's view, per turn.
    let mut sim_turns: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // turn -> (requests, cached)
    let lines: Vec<Value> = read_jsonl(&log)
        .into_iter()
        .filter(|l| l["arrival_unix_s"].as_f64().is_some())
        .collect();
    for l in &lines {
        assert_eq!(l["status"], 200, "{l}");
        let prompt = l["prompt_tokens"].as_u64().unwrap();
        let turn = (1..=3)
            .find(|&k| prompt_tokens_of_turn(k) == prompt)
            .unwrap_or_else(|| panic!("a request of {prompt} prompt tokens is no turn of the session: {l}"));
        let e = sim_turns.entry(turn).or_default();
        e.0 += 1;
        e.1 += l["cached_tokens"].as_u64().unwrap();
    }
    let sim = sim_stats(sim_port);
    assert_eq!(sim["requests"].as_u64().unwrap(), lines.len() as u64, "{sim}");

    // The master's view: one LLM row per turn.
    let rows = read_csv(&dir.join("out_llm.csv"));
    let by_name: BTreeMap<&str, &BTreeMap<String, String>> = rows.iter().map(|r| (r["Scenario"].as_str(), r)).collect();
    let mut total_cached = 0.0;
    for k in 1..=3u64 {
        let row = by_name
            .get(format!("Chat turn {k}").as_str())
            .unwrap_or_else(|| panic!("no row for turn {k}: {:?}", by_name.keys().collect::<Vec<_>>()));
        let (sim_requests, sim_cached) = sim_turns.get(&k).copied().unwrap_or_default();
        let requests = num(row, "requests");
        assert!(requests >= 3.0, "turn {k}: too few sessions to prove anything: {row:?}");
        assert_eq!(requests, sim_requests as f64, "turn {k}: requests, master vs simulator");
        assert_eq!(num(row, "failures"), 0.0, "turn {k}: {row:?}");
        assert_eq!(
            num(row, "cached_tokens"),
            sim_cached as f64,
            "turn {k}: cached tokens, master vs simulator\n{row:?}"
        );
        assert_eq!(
            num(row, "input_tokens"),
            requests * prompt_tokens_of_turn(k) as f64,
            "turn {k}: every turn resends the conversation"
        );
        // The perfect prefix cache: turn 1 the shared prefix, turn k the
        // whole previous turn (its prompt and its answer).
        let ideal_each = if k == 1 { 16 } else { prompt_tokens_of_turn(k - 1) + 20 };
        let ideal = num(row, "ideal_cached_tokens");
        assert_eq!(ideal, requests * ideal_each as f64, "turn {k}: {row:?}");
        let cached = num(row, "cached_tokens");
        assert!(cached <= ideal, "turn {k}: more than a perfect cache: {row:?}");
        if k > 1 {
            // Every later turn finds its history (less the last partial
            // 16-token block) in the simulator's cache.
            assert!(
                ideal - cached < 16.0 * requests,
                "turn {k}: cached {cached} of an ideal {ideal} over {requests} requests"
            );
        }
        let pct = num(row, "cache_vs_ideal_pct");
        assert!(
            (pct - 100.0 * cached / ideal).abs() < 0.01,
            "turn {k}: shown {pct} % vs {cached}/{ideal}"
        );
        total_cached += cached;
        eprintln!("{provider} turn {k}: {requests} requests, cached {cached} of ideal {ideal} ({pct} %)");
    }
    assert_eq!(total_cached, sim["cached_tokens"].as_f64().unwrap(), "{sim}");
    assert!(total_cached > 0.0);
    // TTFT is reported per turn (Locust's table names the turns too).
    let stats = read_csv(&dir.join("out_stats.csv"));
    for k in 1..=3 {
        let name = format!("Chat turn {k}");
        assert!(stats.iter().any(|r| r["Name"] == name), "Locust row {name}");
        let row = by_name[name.as_str()];
        assert!(num(row, "ttft_count") > 0.0 && num(row, "ttft_avg_ms") > 0.0, "{row:?}");
    }
}
