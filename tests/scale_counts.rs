//! Issue 12, item 2: every request is counted exactly once on the master at
//! the mission's scale, the last ones before a stop or quit included.
//!
//! A real Locust master (`locustfiles/llm.py`), two tokenswarm workers and
//! the simulator, whose `GET /sim/stats` is the ground truth:
//! - 10,000 long streams in flight, then the web UI's stop with
//!   `--stop-timeout 0`: the master's request count equals what the
//!   simulator was sent, every stream the simulator did not finish is a
//!   failure, and every failure is a cancellation;
//! - 10,000 long streams in flight, then the run time ends (the master sends
//!   `quit` and waits only about 0.5 s for the final stats): the same;
//! - open loop at 1,667 req/s (100k requests per minute) until the run time
//!   ends: the same.
//!
//! Counts only; nothing here asserts a duration.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Streams that last far longer than the test (1,000 tokens at 200 ms):
/// every request is still in flight when the run ends.
const LONG_STREAMS: &str = "\
scenarios:
  - {name: Long, provider: openai-chat, model: tokenswarm-sim, prompt_length: 32, output_length: 1000}
safety: {warmup: false, error_limit: 0}
";

const SHORT_STREAMS: &str = "\
scenarios:
  - {name: Short, provider: openai-chat, model: tokenswarm-sim, prompt_length: 64, output_length: 16}
safety: {warmup: false, error_limit: 0}
";

struct Run {
    _turn: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    sim_port: u16,
    web_port: u16,
    master: Proc,
    workers: Vec<Proc>,
    _sim: Proc,
}

/// The three runs each want the whole machine: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(name: &str, sim_args: &[&str], yaml: &str, master_args: &[&str]) -> Run {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir(name);
    let (sim, sim_port) = start_sim(&dir, "sim", sim_args);
    let host = format!("http://127.0.0.1:{sim_port}");
    let m = start_llm_master(&dir, &host, yaml, 2, master_args);
    let workers = (0..2)
        .map(|i| {
            start_worker(
                &dir,
                &format!("worker{i}"),
                m.master_port,
                &[],
                &[("TOKENSWARM_LOG", "info")],
            )
        })
        .collect();
    Run {
        _turn: turn,
        dir,
        sim_port,
        web_port: m.web_port,
        master: m.proc,
        workers,
        _sim: sim,
    }
}

impl Run {
    fn logs(&self) -> String {
        let mut out = format!("--- master\n{}\n", tail(&self.master.output(), 40));
        for w in &self.workers {
            out += &format!("--- {}\n{}\n", w.name, tail(&w.output(), 15));
        }
        out
    }

    /// Master's (requests, failures) from its `--csv` Aggregated row.
    fn csv_counts(&self) -> (u64, u64) {
        let rows = read_csv(&self.dir.join("run_stats.csv"));
        let agg = rows
            .iter()
            .find(|r| r["Name"] == "Aggregated")
            .unwrap_or_else(|| panic!("no Aggregated row\n{}", self.logs()));
        (
            agg["Request Count"].parse().unwrap(),
            agg["Failure Count"].parse().unwrap(),
        )
    }

    /// Occurrences per failure message in the master's `_failures.csv`.
    fn failure_rows(&self) -> Vec<(String, u64)> {
        read_csv(&self.dir.join("run_failures.csv"))
            .into_iter()
            .map(|r| (r["Error"].clone(), r["Occurrences"].parse().unwrap()))
            .collect()
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Asserts the master counted exactly what the simulator was sent, and that
/// every failure is a stream cut by the stop.
fn assert_exact(run: &Run, requests: u64, failures: u64, failure_rows: &[(String, u64)]) {
    let sim = sim_stats(run.sim_port);
    let served = u(&sim["requests"]);
    let completed = u(&sim["streams_completed"]);
    // A request cancelled while its connection was still being set up never
    // reached the simulator, yet the worker cannot tell it from one the
    // simulator had begun: both are `cancelled before the response arrived`.
    // So: nothing lost (>= served), nothing counted twice or invented (no
    // more than served plus those cancellations).
    let unanswered: u64 = failure_rows
        .iter()
        .filter(|(m, _)| m.contains("before the response"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        requests >= served && requests <= served + unanswered,
        "master count {requests} vs simulator {served} (+{unanswered} cancelled before a response): {sim}\n{}",
        run.logs()
    );
    // A stream the simulator did not finish cannot have succeeded; one it
    // finished may still be cancelled while its last bytes are in flight.
    assert!(
        failures >= served.saturating_sub(completed),
        "every stream the simulator did not finish is a failure: {failures} < {} ({sim})",
        served - completed
    );
    eprintln!(
        "{}: master {requests} requests ({failures} failures), simulator {served} served, {completed} completed",
        run.dir.display()
    );
    let listed: u64 = failure_rows.iter().map(|(_, n)| n).sum();
    assert_eq!(
        listed, failures,
        "failure rows sum to the failure count: {failure_rows:?}"
    );
    for (msg, _) in failure_rows {
        assert!(msg.contains("cancelled"), "only cancellations, got {msg:?}");
    }
}

/// 10,000 streams in flight on two workers, then stop from the web UI.
#[test]
fn stop_with_10000_streams_in_flight_counts_every_request() {
    let mut run = start(
        "scale-stop",
        &["--slots", "0", "--tpot-ms", "200", "--batch-slowdown", "0"],
        LONG_STREAMS,
        &["--stop-timeout", "0"],
    );
    wait_for("two workers", Duration::from_secs(30), || {
        (count_in_log(&run.master, "reported as ready") >= 2).then_some(())
    });
    let (status, body) = http::post_form(run.web_port, "/swarm", "user_count=10000&spawn_rate=2500").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("10,000 streams at the simulator", Duration::from_secs(90), || {
        (u(&sim_stats(run.sim_port)["requests"]) >= 10_000).then_some(())
    });
    let (status, _) = http::post_form(run.web_port, "/stop", "").unwrap();
    assert_eq!(status, 200);
    wait_for("the master to stop", Duration::from_secs(60), || {
        (http::get_json(run.web_port, "/stats/requests")["state"].as_str() == Some("stopped")).then_some(())
    });
    // client_stopped follows the final stats on each worker's connection,
    // so once the master is stopped every window has been merged.
    let stats = http::get_json(run.web_port, "/stats/requests");
    let agg = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Aggregated")
        .unwrap()
        .clone();
    let rows: Vec<(String, u64)> = stats["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["error"].as_str().unwrap_or_default().to_string(),
                u(&e["occurrences"]),
            )
        })
        .collect();
    assert!(u(&agg["num_requests"]) >= 10_000, "{agg}");
    assert_exact(&run, u(&agg["num_requests"]), u(&agg["num_failures"]), &rows);
    // The web UI has no quit route: end the master as a user would (Ctrl-C).
    run.master.signal("INT");
    run.master.wait(Duration::from_secs(30));
}

/// 10,000 streams in flight when the run time ends: the master sends
/// `quit` and gives workers about half a second for their final stats.
#[test]
fn quit_with_10000_streams_in_flight_counts_every_request() {
    let mut run = start(
        "scale-quit",
        &["--slots", "0", "--tpot-ms", "200", "--batch-slowdown", "0"],
        LONG_STREAMS,
        &[
            "--headless",
            "-u",
            "10000",
            "-r",
            "2500",
            "-t",
            "20s",
            "--stop-timeout",
            "0",
            "--csv",
            "run",
        ],
    );
    let code = run.master.wait(Duration::from_secs(120));
    assert_eq!(
        code,
        Some(0),
        "cancellations at quit do not fail the run\n{}",
        run.logs()
    );
    let (requests, failures) = run.csv_counts();
    assert!(requests >= 10_000, "all users started: {requests}\n{}", run.logs());
    let rows = run.failure_rows();
    assert_exact(&run, requests, failures, &rows);
}

/// Open loop at 1,667 req/s (100k requests per minute) over two workers
/// until the run time ends.
#[test]
fn open_loop_at_100k_per_minute_counts_every_request_at_quit() {
    let mut run = start(
        "scale-open",
        &["--slots", "0", "--batch-slowdown", "0", "--tpot-ms", "5"],
        &format!("{SHORT_STREAMS}load: {{mode: open, arrival: constant, phases: [{{rate: 1667, duration_s: 600}}]}}\n"),
        &[
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "15s",
            "--stop-timeout",
            "0",
            "--csv",
            "run",
        ],
    );
    let code = run.master.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{}", run.logs());
    let (requests, failures) = run.csv_counts();
    assert!(requests > 10_000, "the rate was reached: {requests}\n{}", run.logs());
    let rows = run.failure_rows();
    assert_exact(&run, requests, failures, &rows);
}
