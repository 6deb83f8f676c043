//! Issue 15.3 and 15.4 end to end: a real Locust master running
//! `locustfiles/llm.py`, a tokenswarm worker and the real simulator.
//! The simulator's configured slots are the known capacity, and its
//! request log and `/sim/stats` are the ground truth the master's capacity
//! search and server-metrics scrape are checked against.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const SLOTS: u64 = 4;

const SCENARIO: &str = "\
scenarios:
  - {name: Chat, provider: openai-chat, model: tokenswarm-sim, prompt_length: 64, output_length: 100}
";

/// The simulator's latency model for both tests: a 100-token answer takes
/// about 0.5 s, so a request that waits for a slot waits far longer than
/// the TTFT SLO allows, and one that does not is far inside it.
const SIM_ARGS: [&str; 8] = [
    "--ttft-ms",
    "10",
    "--tpot-ms",
    "5",
    "--batch-slowdown",
    "0",
    "--slots",
    "4",
];

struct Run {
    dir: PathBuf,
    sim_port: u16,
    web_port: u16,
    master: Proc,
    _worker: Proc,
    _sim: Proc,
}

fn start(name: &str, master_args: &[&str]) -> Run {
    let dir = test_dir(name);
    let log = dir.join("sim-requests.jsonl");
    let mut sim_args = SIM_ARGS.to_vec();
    let log_s = log.to_str().unwrap().to_string();
    sim_args.extend(["--log-requests", &log_s]);
    let (sim, sim_port) = start_sim(&dir, "sim", &sim_args);
    let host = format!("http://127.0.0.1:{sim_port}");
    let m = start_llm_master(&dir, &host, SCENARIO, 1, master_args);
    let worker = start_worker(&dir, "worker", m.master_port, &[], &[]);
    Run {
        dir,
        sim_port,
        web_port: m.web_port,
        master: m.proc,
        _worker: worker,
        _sim: sim,
    }
}

fn csv(dir: &Path, file: &str) -> Vec<BTreeMap<String, String>> {
    read_csv(&dir.join(file))
}

fn num(row: &BTreeMap<String, String>, col: &str) -> f64 {
    row[col]
        .parse()
        .unwrap_or_else(|e| panic!("column {col} of {row:?}: {e}"))
}

/// Proves (15.3): a closed-loop capacity search of 2, 3, ... 7 users against
/// a simulator with 4 slots stops at the step where the slots saturate: the
/// highest step that held is within one step of 4 users and the first step
/// that did not hold is within one step above it. The curve CSV has one row
/// per judged step, and the simulator's own log confirms the cause: requests
/// that arrived in the held steps' windows almost never waited for a slot,
/// those in the failed step's window mostly did. The HTML report charts
/// the curve and states the verdict.
#[test]
fn capacity_search_finds_the_step_where_the_simulators_slots_saturate() {
    let mut r = start(
        "capacity-search",
        &[
            "--headless",
            "--llm-capacity",
            "2:1:7:6:2",
            "--llm-slo-ttft-ms",
            "80",
            "--llm-slo-tpot-ms",
            "20",
            "--csv",
            "out",
            "--html",
            "out.html",
        ],
    );
    let code = r.master.wait(Duration::from_secs(150));
    let out = r.master.output();
    assert_eq!(code, Some(0), "{}", tail(&out, 40));
    let rows = csv(&r.dir, "out_llm_capacity.csv");
    let (result, curve) = rows.split_last().expect("a result row");
    assert_eq!(result["Step"], "result", "{rows:?}");
    let held = num(result, "Value") as u64;
    assert!(
        (SLOTS - 1..=SLOTS).contains(&held),
        "held {held} users with {SLOTS} slots: {rows:?}"
    );
    let failed = curve
        .iter()
        .find(|s| s["Held"] == "False")
        .expect("a step that did not hold");
    let failed_users = num(failed, "Value") as u64;
    assert!(
        (SLOTS..=SLOTS + 1).contains(&failed_users) && failed_users == held + 1,
        "first failing step {failed_users}: {rows:?}"
    );
    assert!(num(failed, "Attainment") < 0.95, "{failed:?}");
    for s in curve.iter().filter(|s| s["Held"] == "True") {
        assert!(num(s, "Attainment") >= 0.95 && num(s, "Requests") > 0.0, "{s:?}");
    }
    assert!(
        out.contains(&format!("capacity: {held} users held")),
        "summary line in the master log: {}",
        tail(&out, 20)
    );
    let report = std::fs::read_to_string(r.dir.join("out_llm.html")).unwrap();
    assert!(report.contains("Capacity search: SLO attainment per step (users)"));
    assert!(report.contains(&format!("Highest step that held: {held} users")));

    // Ground truth: the simulator's queue time of the requests that arrived
    // in each step's measuring window (start + settle .. start + hold).
    let log = read_jsonl(&r.dir.join("sim-requests.jsonl"));
    let queued_share = |step: &BTreeMap<String, String>| {
        let start = num(step, "Start");
        let (from, to) = (start + 2.0, start + 6.0);
        let qs: Vec<u64> = log
            .iter()
            .filter(|l| l["arrival_unix_s"].as_f64().is_some_and(|t| t >= from && t < to))
            .map(|l| l["queue_us"].as_u64().unwrap())
            .collect();
        assert!(!qs.is_empty(), "requests in step {step:?}");
        qs.iter().filter(|&&q| q > 5_000).count() as f64 / qs.len() as f64
    };
    for s in curve.iter().filter(|s| num(s, "Value") < SLOTS as f64) {
        assert!(queued_share(s) < 0.05, "below the slots nothing waits: {s:?}");
    }
    assert!(queued_share(failed) > 0.5, "above the slots requests wait: {failed:?}");
}

/// Proves (15.4): with `--llm-server-metrics-url /metrics` the master scrapes
/// the simulator about once a second while 6 users load its 4 slots: the
/// server-metrics CSV shows exactly the simulator's state (at most and at
/// peak 4 running, at most and at peak 2 waiting), its token counters never
/// decrease and its last row (taken once the server is idle) equals the
/// simulator's `/sim/stats`; the charts page shows the server charts next to
/// TTFT and tokens/s during the run, and the HTML report has them too.
#[test]
fn server_metrics_are_scraped_charted_and_match_the_simulator() {
    let mut r = start(
        "capacity-scrape",
        &[
            "--autostart",
            "--autoquit",
            "1",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "8s",
            "--llm-server-metrics-url",
            "/metrics",
            "--csv",
            "out",
            "--html",
            "out.html",
        ],
    );
    let web = r.web_port;
    wait_for("3 scraped points", Duration::from_secs(60), || {
        let (status, body) = http::get(web, "/llm/server-metrics").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["points"].as_array()?.len() >= 3).then_some(())
    });
    let (status, page) = http::get(web, "/llm/charts?refresh=0").unwrap();
    assert_eq!(status, 200);
    for title in [
        "TTFT p50",
        "Output tokens/s",
        "Server: running",
        "Server: KV cache usage",
    ] {
        assert!(page.contains(title), "{title} on the charts page");
    }
    let code = r.master.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{}", tail(&r.master.output(), 40));

    let rows = csv(&r.dir, "out_llm_server_metrics.csv");
    assert!(rows.len() >= 5, "about one row a second: {rows:?}");
    assert!(rows.iter().all(|p| p["Server"] == "vllm"));
    let col = |k: &str| rows.iter().map(|p| num(p, k)).collect::<Vec<f64>>();
    let (running, waiting) = (col("Running"), col("Waiting"));
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    assert_eq!(max(&running), SLOTS as f64, "{running:?}");
    assert_eq!(max(&waiting), 6.0 - SLOTS as f64, "{waiting:?}");
    assert!(col("KV cache usage").iter().any(|&u| u > 0.0));
    for k in ["Prompt tokens total", "Generation tokens total"] {
        let v = col(k);
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{k} never decreases: {v:?}");
    }
    let last = rows.last().unwrap();
    assert_eq!((num(last, "Running"), num(last, "Waiting")), (0.0, 0.0), "{last:?}");
    let sim = sim_stats(r.sim_port);
    assert_eq!(
        num(last, "Prompt tokens total"),
        sim["prompt_tokens"].as_f64().unwrap(),
        "{sim}"
    );
    assert_eq!(
        num(last, "Generation tokens total"),
        sim["output_tokens"].as_f64().unwrap(),
        "{sim}"
    );
    let report = std::fs::read_to_string(r.dir.join("out_llm.html")).unwrap();
    assert!(report.contains("Server: running") && report.contains("TTFT p50"));
}

/// Proves (15.3, open loop): a rate ladder of 2, 4, ... 14 req/s with
/// constant arrivals becomes the run's phases, and the search stops where
/// the arrival rate passes what 4 slots can serve: the highest rate that
/// held is within one step (2 req/s) of the capacity the simulator's own
/// log implies (slots / mean service time), and the first rate that did
/// not hold is above the highest that did.
#[test]
fn open_loop_capacity_search_stops_at_the_rate_the_slots_can_serve() {
    let mut r = start(
        "capacity-open",
        &[
            "--headless",
            "--llm-mode",
            "open",
            "--llm-arrival",
            "constant",
            "--llm-capacity",
            "2:2:14:6:2",
            "--llm-slo-ttft-ms",
            "80",
            "--csv",
            "out",
        ],
    );
    let code = r.master.wait(Duration::from_secs(150));
    let out = r.master.output();
    assert_eq!(code, Some(0), "{}", tail(&out, 40));
    let rows = csv(&r.dir, "out_llm_capacity.csv");
    let (result, curve) = rows.split_last().expect("a result row");
    assert!(curve.iter().all(|s| s["Unit"] == "req/s"), "{rows:?}");
    let held = num(result, "Value");
    let failed = curve
        .iter()
        .find(|s| s["Held"] == "False")
        .expect("a rate that did not hold");
    let log = read_jsonl(&r.dir.join("sim-requests.jsonl"));
    let e2e_s: Vec<f64> = log
        .iter()
        .filter(|l| l["status"] == 200 && l["output_tokens"] == 100)
        .map(|l| (l["e2e_us"].as_f64().unwrap() - l["queue_us"].as_f64().unwrap()) / 1e6)
        .collect();
    let capacity = SLOTS as f64 / (e2e_s.iter().sum::<f64>() / e2e_s.len() as f64);
    assert!(
        (held - capacity).abs() <= 2.0,
        "held {held} req/s, slots serve {capacity:.2} req/s: {rows:?}"
    );
    assert!(num(failed, "Value") > held, "{rows:?}");
    // the held steps' request rate is the ladder's rate (the phases ran)
    for s in curve.iter().filter(|s| s["Held"] == "True") {
        let (want, got) = (num(s, "Value"), num(s, "Requests/s"));
        assert!((got - want).abs() <= 0.2 * want + 0.5, "step {s:?}");
    }
}
