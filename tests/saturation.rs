//! Issue 12, item 5: the load generator checks itself. One tokenswarm worker
//! pinned to one core, the simulator (no latency, unlimited slots) pinned to
//! the other, a real Locust master (`locustfiles/llm.py`, headless):
//! - driven far past what one core can send (open loop at 40,000 req/s),
//!   the master logs a WARNING naming the worker with the word `saturated`,
//!   marks it in `PREFIX_llm.csv`, the LLM HTML report and the console
//!   summary, and exits 4;
//! - at half the rate the worker actually reached in that run, none of it:
//!   exit 0, no mark.
//!
//! Counts and text only; nothing here asserts a duration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn pinned(cpu: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu]).arg(bin());
    cmd
}

struct Outcome {
    dir: PathBuf,
    code: Option<i32>,
    master_log: String,
    worker_id: String,
    requests: u64,
}

fn run(name: &str, rate: u64) -> Outcome {
    let dir = test_dir(name);
    let sim_port = free_port();
    let mut sim_cmd = pinned("1");
    sim_cmd
        .current_dir(&dir)
        .args(["sim", "--host", "127.0.0.1", "--port"])
        .arg(sim_port.to_string())
        .args(["--no-latency", "--slots", "0"]);
    let _sim = Proc::spawn("sim", &mut sim_cmd, &dir);
    wait_for("the simulator to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", sim_port)).ok()
    });
    let yaml = format!(
        "scenarios:\n  - {{name: Short, provider: openai-chat, model: tokenswarm-sim, prompt_length: 32, output_length: 8}}\n\
             safety: {{warmup: false, error_limit: 0}}\n\
             load: {{mode: open, arrival: constant, max_in_flight: 20000, phases: [{{rate: {rate}, duration_s: 600}}]}}\n"
    );
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
            "1",
            "-r",
            "1",
            "-t",
            "12s",
            "--stop-timeout",
            "0",
            "--csv",
            "run",
            "--html",
            "report.html",
        ],
    );
    let mut worker_cmd = pinned("0");
    worker_cmd
        .current_dir(&dir)
        .args(["worker", "--master-port"])
        .arg(mport.to_string())
        .env("TOKENSWARM_LOG", "info")
        .env("NO_COLOR", "1");
    let mut worker = Proc::spawn("worker", &mut worker_cmd, &dir);
    let code = master.wait(Duration::from_secs(120));
    let _ = worker.wait(Duration::from_secs(20));
    let master_log = master.output();
    let worker_id = master_log
        .lines()
        .find_map(|l| {
            l.split("locust.runners: ")
                .nth(1)?
                .split(" (index")
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no worker id in the master log:\n{}", tail(&master_log, 30)));
    let agg = read_csv(&dir.join("run_stats.csv"))
        .into_iter()
        .find(|r| r["Name"] == "Aggregated")
        .unwrap_or_else(|| panic!("no Aggregated row:\n{}", tail(&master_log, 30)));
    Outcome {
        requests: agg["Request Count"].parse().unwrap(),
        dir,
        code,
        master_log,
        worker_id,
    }
}

fn saturated_column(dir: &Path) -> String {
    read_csv(&dir.join("run_llm.csv"))
        .into_iter()
        .find(|r| r["Scenario"] == "Aggregated")
        .expect("Aggregated row in run_llm.csv")["saturated_workers"]
        .clone()
}

fn warning_lines(log: &str, worker: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARNING") && l.contains("saturated") && l.contains(worker))
        .count()
}

#[test]
fn a_worker_past_saturation_is_marked_and_one_at_half_its_rate_is_not() {
    let past = run("saturation-past", 40_000);
    let log = &past.master_log;
    assert!(
        warning_lines(log, &past.worker_id) >= 1,
        "a WARNING with `saturated` and the worker id:\n{}",
        tail(log, 40)
    );
    assert_eq!(past.code, Some(4), "exit code 4 for a saturated run\n{}", tail(log, 40));
    let column = saturated_column(&past.dir);
    assert!(
        column.contains(&past.worker_id),
        "run_llm.csv marks the worker: {column:?}"
    );
    let report = std::fs::read_to_string(past.dir.join("report_llm.html")).unwrap();
    assert!(report.contains("Saturated: worker"), "the HTML report marks it");
    assert!(log.contains("SATURATED: worker"), "the console summary marks it");

    // The rate this worker really reached while saturated, over the 12 s run.
    let reached = past.requests / 12;
    assert!(
        reached > 50,
        "the saturated run sent something: {} requests",
        past.requests
    );
    let half = run("saturation-half", reached / 2);
    eprintln!(
        "saturated run: {} requests ({reached} req/s reached); half-rate run at {} req/s: {} requests",
        past.requests,
        reached / 2,
        half.requests
    );
    assert_eq!(
        warning_lines(&half.master_log, &half.worker_id),
        0,
        "no saturation warning at half the rate:\n{}",
        tail(&half.master_log, 40)
    );
    assert_eq!(
        half.code,
        Some(0),
        "a clean run at half the rate\n{}",
        tail(&half.master_log, 40)
    );
    assert_eq!(saturated_column(&half.dir), "", "no mark in run_llm.csv");
}
