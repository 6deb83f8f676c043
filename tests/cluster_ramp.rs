//! Issue 12 item 6: the ramp is smooth across the whole cluster. A real
//! Locust master sends every worker its ramp step at the same moment; each
//! worker shifts its start grid by `ack index / worker_count` of its start
//! interval (src/load/cluster.rs), so the cluster's first requests
//! interleave. The simulator's arrival log is the ground truth; the
//! assertions count arrivals per window, they time nothing.

mod common;

use std::time::Duration;

use common::*;

/// Each request streams ~6 s, longer than the 4 s ramp: the first 16
/// arrivals are the 16 users' first requests.
const YAML: &str =
    "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 300}\n";

/// Runs `workers` workers to 16 users at 4 users/s; returns the first 16
/// arrival times (Unix seconds, sorted) from the simulator's log.
fn first_arrivals(name: &str, workers: usize) -> Vec<f64> {
    let dir = test_dir(name);
    let log = dir.join("sim-requests.jsonl");
    let (_sim, sim_port) = start_sim(
        &dir,
        "sim",
        &[
            "--ttft-ms",
            "20",
            "--tpot-ms",
            "20",
            "--batch-slowdown",
            "0",
            "--log-requests",
            log.to_str().unwrap(),
        ],
    );
    let host = format!("http://127.0.0.1:{sim_port}");
    let LlmMaster {
        proc: master,
        master_port: mport,
        web_port: wport,
    } = start_llm_master(&dir, &host, YAML, workers, &["--llm-no-warmup"]);
    let procs: Vec<Proc> = (0..workers)
        .map(|i| start_worker(&dir, &format!("worker{i}"), mport, &[], &[]))
        .collect();
    wait_for("the workers to register", Duration::from_secs(30), || {
        (count_in_log(&master, "reported as ready") >= workers).then_some(())
    });
    let (status, body) = http::post_form(wport, "/swarm", "user_count=16&spawn_rate=4").unwrap();
    assert_eq!(status, 200, "{body}");
    let mut arrivals: Vec<f64> = Vec::new();
    wait_for("the first wave to end", Duration::from_secs(60), || {
        arrivals = read_jsonl(&log)
            .iter()
            .filter_map(|l| l["arrival_unix_s"].as_f64())
            .collect();
        (arrivals.len() >= 16).then_some(())
    });
    let _ = http::get(wport, "/stop");
    drop(procs);
    arrivals.sort_by(f64::total_cmp);
    arrivals.truncate(16);
    arrivals
}

/// The most arrivals in any 100 ms window starting at an arrival.
fn densest_100ms(arrivals: &[f64]) -> usize {
    (0..arrivals.len())
        .map(|i| arrivals[i..].iter().take_while(|t| **t < arrivals[i] + 0.1).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn four_workers_interleave_their_first_requests() {
    // Before the shift: all four workers started a user in the same
    // millisecond every second, 4 arrivals in one window.
    let arrivals = first_arrivals("cluster-ramp-4", 4);
    let densest = densest_100ms(&arrivals);
    assert!(
        densest <= 2,
        "{densest} first requests in one 100 ms window: {arrivals:?}"
    );
}

#[test]
fn one_worker_spaces_its_starts_as_before() {
    // One worker at 4 users/s spaces its starts by itself; no shift applies.
    let arrivals = first_arrivals("cluster-ramp-1", 1);
    let densest = densest_100ms(&arrivals);
    assert!(
        densest <= 2,
        "{densest} first requests in one 100 ms window: {arrivals:?}"
    );
}
