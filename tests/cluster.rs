//! End to end: a real Locust master (pinned, from the project venv) running
//! `locustfiles/llm.py`, two tokenswarm workers and the real simulator.
//! The simulator is the ground truth: what it served and measured is
//! compared with what the master shows. No test asserts a duration; time
//! comparisons are between two measurements of the same requests.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Master, workers and simulator of one test; killed on drop.
struct Cluster {
    dir: PathBuf,
    sim_port: u16,
    web_port: u16,
    master: Proc,
    workers: Vec<Proc>,
    _sim: Proc,
}

struct Setup<'a> {
    name: &'a str,
    sim_args: &'a [&'a str],
    scenarios_yaml: &'a str,
    master_args: &'a [&'a str],
    workers: usize,
    worker_env: &'a [(&'a str, &'a str)],
    /// Target base URL; the simulator's when None.
    host: Option<String>,
}

/// The usual cluster: two workers, no extra environment, the simulator as
/// the target; tests name what differs and take the rest from here.
const TWO_WORKERS: Setup<'static> = Setup {
    name: "",
    sim_args: &[],
    scenarios_yaml: "",
    master_args: &[],
    workers: 2,
    worker_env: &[],
    host: None,
};

fn start(s: Setup) -> Cluster {
    let dir = test_dir(s.name);
    let log = dir.join("sim-requests.jsonl");
    let mut sim_args: Vec<&str> = s.sim_args.to_vec();
    let log_s = log.to_str().unwrap().to_string();
    sim_args.extend(["--log-requests", &log_s]);
    let (sim, sim_port) = start_sim(&dir, "sim", &sim_args);
    let host = s.host.unwrap_or_else(|| format!("http://127.0.0.1:{sim_port}"));
    let m = start_llm_master(&dir, &host, s.scenarios_yaml, s.workers, s.master_args);
    let workers = (0..s.workers)
        .map(|i| start_worker(&dir, &format!("worker{i}"), m.master_port, &[], s.worker_env))
        .collect();
    Cluster {
        dir,
        sim_port,
        web_port: m.web_port,
        master: m.proc,
        workers,
        _sim: sim,
    }
}

impl Cluster {
    fn sim_log(&self) -> Vec<Value> {
        read_jsonl(&self.dir.join("sim-requests.jsonl"))
    }

    /// Everything the processes printed, for failure messages.
    fn logs(&self) -> String {
        let mut out = format!("--- master\n{}\n", tail(&self.master.output(), 60));
        for w in &self.workers {
            out += &format!("--- {}\n{}\n", w.name, tail(&w.output(), 20));
        }
        out
    }

    fn wait_master(&mut self, limit: Duration) -> Option<i32> {
        self.master.wait(limit)
    }

    fn wait_workers_ready(&self) {
        wait_for("both workers to register", Duration::from_secs(30), || {
            (count_in_log(&self.master, "reported as ready") >= self.workers.len()).then_some(())
        });
    }

    fn llm_json(&self) -> Value {
        http::get_json(self.web_port, "/llm/json")
    }

    fn requests_json(&self) -> Value {
        http::get_json(self.web_port, "/stats/requests")
    }

    fn wait_state(&self, state: &str, limit: Duration) {
        wait_for(&format!("master state {state}"), limit, || {
            (self.requests_json()["state"].as_str() == Some(state)).then_some(())
        });
    }
}

const TWO_SCENARIOS: &str = "\
scenarios:
  - {name: ChatShort, weight: 3, provider: openai-chat, model: tokenswarm-sim, prompt_length: 96, prefix_length: 64, output_length: 24}
  - {name: Msgs, weight: 1, provider: anthropic, model: tokenswarm-sim, prompt_length: 160, prefix_length: 32, output_length: 40}
";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, s) = xs.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    assert!(n > 0, "mean of nothing");
    s / n as f64
}

/// Locust's Aggregated row from `/stats/requests`.
fn aggregated(stats: &Value) -> &Value {
    stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Aggregated")
        .expect("Aggregated row")
}

/// Proves: two workers, two scenarios (OpenAI chat and Anthropic), started
/// and stopped from the web UI twice: Locust's request count equals what
/// the simulator served (no inflation, nothing lost at stop), the merged
/// `llm` totals equal the simulator's token counts, TTFT and TPOT agree
/// with the simulator's own timings within 2 ms, and a second run starts
/// from fresh statistics.
#[test]
fn web_ui_runs_count_exactly_what_the_simulator_served_and_time_it_right() {
    let c = start(Setup {
        name: "cluster-web",
        sim_args: &[
            "--ttft-ms",
            "50",
            "--prefill-us-per-token",
            "100",
            "--tpot-ms",
            "10",
            "--batch-slowdown",
            "0",
            "--seed",
            "7",
        ],
        scenarios_yaml: TWO_SCENARIOS,
        master_args: &["--stop-timeout", "30"],
        ..TWO_WORKERS
    });
    c.wait_workers_ready();
    for run in 0..2 {
        let (status, body) = http::request("POST", c.sim_port, "/sim/reset", "application/json", "").unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, body) = http::post_form(c.web_port, "/swarm", "user_count=8&spawn_rate=8").unwrap();
        assert_eq!(status, 200, "{body}");
        c.wait_state("running", Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(5));
        let (status, _) = http::post_form(c.web_port, "/stop", "").unwrap();
        assert_eq!(status, 200);
        c.wait_state("stopped", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(500));

        let sim = sim_stats(c.sim_port);
        let stats = c.requests_json();
        let agg = aggregated(&stats);
        let served = u(&sim["requests"]);
        assert!(served > 20, "run {run}: too few requests to prove anything: {sim}");
        assert_eq!(u(&agg["num_requests"]), served, "run {run}: {sim}\n{}", c.logs());
        assert_eq!(
            u(&agg["num_failures"]),
            0,
            "run {run}: stop_timeout lets every stream finish"
        );
        let names: Vec<&str> = stats["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["ChatShort", "Msgs", "Aggregated"],
            "no extra rows inflate the table"
        );

        let llm = c.llm_json();
        let total = &llm["total"];
        assert_eq!(u(&total["requests"]), served);
        assert_eq!(u(&total["output_tokens"]), u(&sim["output_tokens"]), "{llm}");
        assert_eq!(u(&total["input_tokens"]), u(&sim["prompt_tokens"]), "{llm}");
        assert_eq!(u(&total["cached_tokens"]), u(&sim["cached_tokens"]), "{llm}");
        assert!(
            u(&total["cached_tokens"]) > 0,
            "shared prefixes hit the simulator's cache"
        );

        // Timings: the simulator's own measurements of the same requests.
        let log: Vec<Value> = c
            .sim_log()
            .into_iter()
            .filter(|l| l["arrival_unix_s"].as_f64().is_some())
            .collect();
        let this_run: Vec<&Value> = log.iter().rev().take(served as usize).collect();
        let sim_ttft_ms = mean(this_run.iter().map(|l| f(&l["ttft_us"]) / 1e3));
        let sim_tpot_ms = mean(
            this_run
                .iter()
                .map(|l| (f(&l["e2e_us"]) - f(&l["ttft_us"])) / 1e3 / (f(&l["output_tokens"]) - 1.0)),
        );
        let ttft_ms = f(&total["metrics"]["ttft"]["avg_ms"]);
        let tpot_ms = f(&total["metrics"]["tpot"]["avg_ms"]);
        assert!(
            (ttft_ms - sim_ttft_ms).abs() < 2.0,
            "run {run}: TTFT {ttft_ms} ms vs simulator {sim_ttft_ms} ms"
        );
        assert!(
            (tpot_ms - sim_tpot_ms).abs() < 2.0,
            "run {run}: TPOT {tpot_ms} ms vs simulator {sim_tpot_ms} ms"
        );
        // The LLM rows ride along with Locust's own stats poll.
        let extended = stats["extended_stats"].as_array().expect("extended_stats");
        let llm_rows = extended
            .iter()
            .find(|e| e["key"] == "llm")
            .expect("LLM rows in the stats poll");
        assert!(
            llm_rows["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["metric"] == "TTFT")
        );
    }
}

/// Proves: every failure kind the simulator injects reaches the master once,
/// with its kind: in the merged `llm` failure kinds (equal to the
/// simulator's fault counts) and in `_failures.csv` (occurrences summing to
/// Locust's failure count); requests cut at quit are counted as cancelled,
/// as many as the simulator saw disconnect.
#[test]
fn each_failure_kind_is_counted_once_on_the_master() {
    let yaml = format!(
        "{}timeouts: {{total_s: 1.5}}\n",
        "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 32, output_length: 12}\n"
    );
    let mut c = start(Setup {
        name: "cluster-faults",
        sim_args: &[
            "--ttft-ms",
            "2",
            "--tpot-ms",
            "2",
            "--seed",
            "3",
            "--fault-429",
            "0.08",
            "--fault-500",
            "0.08",
            "--fault-503",
            "0.08",
            "--fault-error-event",
            "0.08",
            "--fault-truncate",
            "0.08",
            "--fault-stall",
            "0.04",
            "--fault-empty",
            "0.08",
            "--stall-s",
            "5",
        ],
        scenarios_yaml: &yaml,
        master_args: &[
            "--headless",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "8s",
            "--llm-no-warmup",
            "--llm-error-limit",
            "0",
            "--csv",
            "out",
        ],
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(90));
    assert!(code.is_some(), "{}", c.logs());
    for w in &mut c.workers {
        assert_eq!(w.wait(Duration::from_secs(10)), Some(0));
    }
    let sim = sim_stats(c.sim_port);
    let faults = &sim["faults"];
    let llm_rows = read_csv(&c.dir.join("out_llm.csv"));
    let total = llm_rows
        .iter()
        .find(|r| r["Scenario"] == "Aggregated")
        .expect("Aggregated LLM row");
    let kinds = failure_kinds(total);
    let sim_count = |k: &str| faults.get(k).and_then(Value::as_u64).unwrap_or(0);
    for (sim_kind, worker_kind) in [
        ("http_429", "http_429"),
        ("http_500", "http_500"),
        ("http_503", "http_503"),
        ("error_event", "error_event"),
        ("truncate", "truncated"),
        ("empty", "empty_answer"),
    ] {
        assert!(sim_count(sim_kind) > 0, "{sim_kind} never injected: {sim}");
        assert_eq!(
            kinds.get(worker_kind).copied().unwrap_or(0),
            sim_count(sim_kind),
            "{worker_kind}: {kinds:?} vs {sim}"
        );
    }
    // A stalled stream outlives the 1.5 s total timeout; the worker hangs up.
    assert!(kinds.get("timeout").copied().unwrap_or(0) > 0, "{kinds:?}");

    let stats = read_csv(&c.dir.join("out_stats.csv"));
    let agg = stats.iter().find(|r| r["Name"] == "Aggregated").unwrap();
    let failures: u64 = agg["Failure Count"].parse().unwrap();
    assert_eq!(
        u(&sim["requests"]),
        agg["Request Count"].parse::<u64>().unwrap(),
        "{sim}"
    );
    assert_eq!(failures, kinds.values().sum::<u64>(), "{kinds:?}");
    let fail_rows = read_csv(&c.dir.join("out_failures.csv"));
    let occurrences: u64 = fail_rows.iter().map(|r| r["Occurrences"].parse::<u64>().unwrap()).sum();
    assert_eq!(occurrences, failures);
    let messages = fail_rows
        .iter()
        .map(|r| r["Error"].clone())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in ["HTTP 429", "HTTP 500", "HTTP 503", "error event", "timeout"] {
        assert!(
            messages.contains(needle),
            "{needle} missing from _failures.csv:\n{messages}"
        );
    }
}

/// Proves: a closed-loop ramp of 24 users at 4 users/s over two workers
/// starts users spread across each second (the simulator's arrival log
/// shows no 250 ms window with more than its share plus one first
/// requests), and lowering the users lets in-flight streams finish within
/// `stop_timeout`: the simulator sees no stream cut off.
#[test]
fn ramp_up_is_smooth_and_ramp_down_cuts_no_stream() {
    // Each request lasts ~8 s, longer than the 6 s ramp, so every arrival
    // during the ramp is a user's first request.
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 32, output_length: 400}\n";
    let c = start(Setup {
        name: "cluster-ramp",
        sim_args: &["--ttft-ms", "20", "--tpot-ms", "20", "--batch-slowdown", "0"],
        scenarios_yaml: yaml,
        master_args: &["--llm-no-warmup", "--stop-timeout", "30"],
        ..TWO_WORKERS
    });
    c.wait_workers_ready();
    let (status, body) = http::post_form(c.web_port, "/swarm", "user_count=24&spawn_rate=4").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("24 users", Duration::from_secs(30), || {
        (c.requests_json()["user_count"].as_u64() == Some(24)).then_some(())
    });
    // Ramp down to 8 while the first requests stream: the 16 stopped users
    // must finish their streams within the 30 s stop_timeout.
    let (status, _) = http::post_form(c.web_port, "/swarm", "user_count=8&spawn_rate=100").unwrap();
    assert_eq!(status, 200);
    wait_for("ramp-down to 8 users", Duration::from_secs(30), || {
        (c.requests_json()["user_count"].as_u64() == Some(8)).then_some(())
    });
    // The log has a line per finished request: wait for the first wave.
    let mut arrivals: Vec<f64> = Vec::new();
    wait_for("the first wave to end", Duration::from_secs(40), || {
        arrivals = c.sim_log().iter().map(|l| f(&l["arrival_unix_s"])).collect();
        (arrivals.len() >= 24).then_some(())
    });
    let sim = sim_stats(c.sim_port);
    assert_eq!(
        sim["faults"].get("client_disconnect"),
        None,
        "a stream was cut at ramp-down: {sim}"
    );

    arrivals.sort_by(f64::total_cmp);
    let t0 = arrivals[0];
    let mut windows = BTreeMap::<u64, u32>::new();
    for t in &arrivals[..24] {
        *windows.entry(((t - t0) / 0.25) as u64).or_default() += 1;
    }
    // Share of a 250 ms window at 4 users/s is one user; allow one more.
    let worst = windows.values().max().copied().unwrap();
    assert!(worst <= 2, "bursty ramp: first requests per 250 ms window {windows:?}");
    assert!(windows.len() >= 12, "24 starts spread over the 6 s ramp: {windows:?}");
}

/// Proves: open loop at a cluster total of 200 req/s, then 400 req/s, over
/// two workers: the simulator's arrival log shows each phase's rate within
/// 2 % (constant inter-arrival times, so the check is about the scheduler,
/// not about sampling noise), and the run ends by itself after the last
/// phase.
#[test]
fn open_loop_phases_hold_the_cluster_rate() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 4}\n";
    let mut c = start(Setup {
        name: "cluster-open",
        sim_args: &["--ttft-ms", "2", "--tpot-ms", "1"],
        scenarios_yaml: yaml,
        master_args: &[
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "300s",
            "--llm-mode",
            "open",
            "--llm-rate-phases",
            "200:30,400:30",
            "--llm-arrival",
            "constant",
            "--llm-no-warmup",
        ],
        ..TWO_WORKERS
    });
    // The run ends by itself when the last phase is over, long before -t.
    let code = c.wait_master(Duration::from_secs(150));
    assert_eq!(code, Some(0), "{}", c.logs());
    assert!(c.master.output().contains("open-loop schedule"), "{}", c.logs());
    let mut arrivals: Vec<f64> = c.sim_log().iter().map(|l| f(&l["arrival_unix_s"])).collect();
    arrivals.sort_by(f64::total_cmp);
    assert!(arrivals.len() > 1000, "{}", c.logs());
    let t0 = arrivals[0];
    let rate =
        |from: f64, to: f64| arrivals.iter().filter(|&&t| t >= t0 + from && t < t0 + to).count() as f64 / (to - from);
    let (r1, r2) = (rate(3.0, 27.0), rate(33.0, 57.0));
    assert!((r1 / 200.0 - 1.0).abs() < 0.02, "phase 1: {r1:.1} req/s, want 200");
    assert!((r2 / 400.0 - 1.0).abs() < 0.02, "phase 2: {r2:.1} req/s, want 400");
}

/// Proves: with half the requests failing, the error limit (30 % of the
/// last 30) stops the run by itself, and the master says why.
#[test]
fn error_limit_stops_the_run_with_the_reason_on_the_master() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 4}\n";
    let mut c = start(Setup {
        name: "cluster-errlimit",
        sim_args: &["--ttft-ms", "2", "--tpot-ms", "1", "--fault-500", "0.5", "--seed", "1"],
        scenarios_yaml: yaml,
        master_args: &["--headless", "-u", "4", "-r", "4", "-t", "120s", "--llm-no-warmup"],
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(100));
    assert_ne!(code, Some(0), "{}", c.logs());
    let out = c.master.output();
    assert!(out.contains("error limit"), "{}", c.logs());
}

/// Proves: a warm-up against a dead endpoint stops the run before any load:
/// the master names the failed warm-up, and only the warm-up requests (one
/// per scenario per worker) were ever made.
#[test]
fn failed_warm_up_stops_the_run_before_any_load() {
    let dead = free_port();
    let mut c = start(Setup {
        name: "cluster-warmup",
        sim_args: &[],
        scenarios_yaml: TWO_SCENARIOS,
        master_args: &["--headless", "-u", "10", "-r", "10", "-t", "120s", "--csv", "out"],
        host: Some(format!("http://127.0.0.1:{dead}")),
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(100));
    assert_ne!(code, Some(0), "{}", c.logs());
    assert!(c.master.output().contains("warm-up"), "{}", c.logs());
    let stats = read_csv(&c.dir.join("out_stats.csv"));
    let agg = stats.iter().find(|r| r["Name"] == "Aggregated").unwrap();
    assert_eq!(
        agg["Request Count"], "4",
        "2 workers x 2 scenarios warm-up requests only"
    );
    assert_eq!(agg["Failure Count"], "4");
}

/// Proves: an API key given to the workers through the environment variable
/// a scenario names never appears in the master's output, the workers'
/// logs (at trace level, HTTP client internals included) or the result
/// files, even when requests fail.
#[test]
fn api_key_never_leaves_the_worker() {
    const KEY: &str = "sk-test-7f3a9c2e51b84d06a1e2";
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 4, api_key_env: TS_TEST_API_KEY}\n  - {name: Claude, provider: anthropic, model: m, prompt_length: 16, output_length: 4, api_key_env: TS_TEST_API_KEY}\n";
    let mut c = start(Setup {
        name: "cluster-secret",
        sim_args: &[
            "--ttft-ms",
            "2",
            "--tpot-ms",
            "1",
            "--fault-500",
            "0.3",
            "--fault-429",
            "0.2",
        ],
        scenarios_yaml: yaml,
        master_args: &[
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "4s",
            "--llm-no-warmup",
            "--llm-error-limit",
            "0",
            "--csv",
            "out",
            "--html",
            "report.html",
        ],
        worker_env: &[("TS_TEST_API_KEY", KEY), ("TOKENSWARM_LOG", "trace")],
        ..TWO_WORKERS
    });
    c.wait_master(Duration::from_secs(60));
    for w in &mut c.workers {
        let _ = w.wait(Duration::from_secs(10));
    }
    assert!(u(&sim_stats(c.sim_port)["requests"]) > 0);
    let mut checked = 0;
    for entry in std::fs::read_dir(&c.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl" || e == "yaml") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
        assert!(!text.contains(KEY), "the API key leaked into {}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 6,
        "master log, 2 worker logs, sim log, CSVs, HTML: {checked} files"
    );
    assert!(file_exists(&c.dir, "out_failures.csv") && file_exists(&c.dir, "report.html"));
}

fn file_exists(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

/// Proves: a headless `--expect-workers 2 --csv` run, ramped in several
/// spawn steps (12 users at 4/s) and shared by the two workers, that ends
/// (`-t`) while streams are in flight
/// counts every request the simulator saw, the cut ones included, exactly
/// once: Locust's count equals the simulator's, its failures are exactly the
/// streams the simulator saw disconnect, all of kind `cancelled`, and the
/// master exits 0 because no target error happened.
#[test]
fn headless_end_counts_the_streams_it_cuts_and_exits_zero() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 32, output_length: 300}\n";
    let mut c = start(Setup {
        name: "cluster-end",
        sim_args: &["--ttft-ms", "5", "--tpot-ms", "5"],
        scenarios_yaml: yaml,
        master_args: &[
            "--headless",
            "-u",
            "12",
            "-r",
            "4",
            "-t",
            "6s",
            "--csv",
            "out",
            "--expect-workers-max-wait",
            "30",
        ],
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(60));
    for w in &mut c.workers {
        assert_eq!(w.wait(Duration::from_secs(10)), Some(0));
        // The ramp reached each worker as several absolute targets, and the
        // two workers shared the 12 users (6 each at the end).
        let out = w.output();
        assert!(out.matches("spawn step").count() >= 2, "{}", tail(&out, 30));
        let last = out.lines().rfind(|l| l.contains("spawn step")).unwrap();
        assert!(last.contains("users=6"), "{last}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let sim = sim_stats(c.sim_port);
    let stats = read_csv(&c.dir.join("out_stats.csv"));
    let agg = stats.iter().find(|r| r["Name"] == "Aggregated").unwrap();
    assert_eq!(
        agg["Request Count"].parse::<u64>().unwrap(),
        u(&sim["requests"]),
        "{sim}\n{}",
        c.logs()
    );
    let cut = sim["faults"]["client_disconnect"].as_u64().unwrap_or(0);
    assert!(cut > 0, "the run must end mid-stream to prove anything: {sim}");
    assert_eq!(agg["Failure Count"].parse::<u64>().unwrap(), cut);
    let fails = read_csv(&c.dir.join("out_failures.csv"));
    assert!(fails.iter().all(|r| r["Error"].starts_with("cancelled")), "{fails:?}");
    assert_eq!(code, Some(0), "{}", c.logs());
}

/// Proves: an output token budget is a cluster total: the master stops the
/// run once the merged output tokens reach it, and says so.
#[test]
fn output_token_budget_stops_the_run() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 20}\n";
    let mut c = start(Setup {
        name: "cluster-budget",
        sim_args: &["--ttft-ms", "2", "--tpot-ms", "1"],
        scenarios_yaml: yaml,
        master_args: &[
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "120s",
            "--llm-output-token-budget",
            "2000",
        ],
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(100));
    assert_ne!(code, Some(0), "{}", c.logs());
    assert!(c.master.output().contains("token budget reached"), "{}", c.logs());
    assert!(u(&sim_stats(c.sim_port)["output_tokens"]) >= 2000);
}

/// Proves: SIGTERM to a worker mid-run makes it flush its final stats and
/// tell the master it quits: it exits 0, the master drops it, and the
/// master's count still equals what the simulator served.
#[test]
fn sigterm_flushes_the_workers_stats_before_it_leaves() {
    let c = start(Setup {
        name: "cluster-sigterm",
        sim_args: &["--ttft-ms", "5", "--tpot-ms", "2"],
        scenarios_yaml: TWO_SCENARIOS,
        master_args: &["--stop-timeout", "30"],
        ..TWO_WORKERS
    });
    let mut c = c;
    c.wait_workers_ready();
    let (status, _) = http::post_form(c.web_port, "/swarm", "user_count=6&spawn_rate=6").unwrap();
    assert_eq!(status, 200);
    c.wait_state("running", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    c.workers[0].signal("TERM");
    assert_eq!(c.workers[0].wait(Duration::from_secs(10)), Some(0), "{}", c.logs());
    wait_for("the master to drop the worker", Duration::from_secs(20), || {
        (c.requests_json()["worker_count"].as_u64() == Some(1)).then_some(())
    });
    let (status, _) = http::post_form(c.web_port, "/stop", "").unwrap();
    assert_eq!(status, 200);
    c.wait_state("stopped", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let sim = sim_stats(c.sim_port);
    let stats = c.requests_json();
    assert_eq!(
        u(&aggregated(&stats)["num_requests"]),
        u(&sim["requests"]),
        "{sim}\n{}",
        c.logs()
    );
}

/// Proves: when the server answers with fewer output tokens than the
/// scenario asks for (more than 10 % off), the master shows one warning per
/// scenario (not one per request) and the results count the divergent
/// requests.
#[test]
fn output_divergence_is_warned_once_and_counted() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 40}\n";
    let mut c = start(Setup {
        name: "cluster-divergence",
        sim_args: &["--ttft-ms", "2", "--tpot-ms", "1", "--natural-output", "10"],
        scenarios_yaml: yaml,
        master_args: &["--headless", "-u", "2", "-r", "2", "-t", "4s", "--csv", "out"],
        ..TWO_WORKERS
    });
    c.wait_master(Duration::from_secs(60));
    let out = c.master.output();
    let warnings = out
        .lines()
        .filter(|l| l.contains("tokenswarm warning") && l.contains("[Chat]"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "one warning per worker at most, deduplicated by text: {warnings}\n{out}"
    );
    let rows = read_csv(&c.dir.join("out_llm.csv"));
    let chat = rows.iter().find(|r| r["Scenario"] == "Chat").unwrap();
    let requests: u64 = chat["requests"].parse().unwrap();
    assert!(requests > 10);
    assert_eq!(chat["output_divergent"].parse::<u64>().unwrap(), requests, "{chat:?}");
}

/// Proves (issue 13): a worker started with `--allow-host` (here through
/// `TOKENSWARM_ALLOW_HOSTS`) refuses a run whose target is not on its list:
/// the master shows the reason naming the refused host, the run stops,
/// and the simulator (the refused target) never sees a request.
#[test]
fn a_host_outside_the_workers_allow_list_is_refused_before_any_request() {
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 4}\n";
    let mut c = start(Setup {
        name: "cluster-allow",
        scenarios_yaml: yaml,
        master_args: &["--headless", "-u", "2", "-r", "2", "-t", "60s", "--llm-no-warmup"],
        worker_env: &[("TOKENSWARM_ALLOW_HOSTS", "127.0.0.1:1,api.example.com")],
        ..TWO_WORKERS
    });
    let code = c.wait_master(Duration::from_secs(50));
    assert_ne!(code, Some(0), "{}", c.logs());
    let out = c.master.output();
    assert!(
        out.contains("is not allowed by this worker") && out.contains(&format!("127.0.0.1:{}", c.sim_port)),
        "{}",
        c.logs()
    );
    assert_eq!(u(&sim_stats(c.sim_port)["requests"]), 0, "{}", c.logs());
}
