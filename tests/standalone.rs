//! `tokenswarm run` (standalone, no master) and `tokenswarm init`, against
//! the real simulator: the seed's `ripple` suite end to end, the
//! confirmation prompt through a pseudo-terminal, refusals, `--fail-on`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `tokenswarm init` in `dir`, with the endpoint pointed at the sim's port.
fn init(dir: &Path, port: u16) -> (PathBuf, PathBuf) {
    let out = Command::new(bin()).args(["init", "--dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ep = dir.join("endpoint_spec.yml");
    let text = std::fs::read_to_string(&ep).unwrap();
    assert!(text.contains("http://127.0.0.1:8000/v1"), "{text}");
    std::fs::write(&ep, text.replace(":8000/", &format!(":{port}/"))).unwrap();
    (dir.join("run_suite.yml"), ep)
}

/// A one-phase suite of `seconds` at 2 req/s (quick runs).
fn short_suite(dir: &Path, extra: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let p = dir.join(format!(
        "short-{}.yml",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(
        &p,
        format!(
            "name: short\nrequests_per_second_rates: [2.0]\ntest_length_in_seconds: 2\n\
             load_types:\n- {{prompt_length: 64, prefix_length: 16, output_length: 8, weight: 1}}\n{extra}"
        ),
    )
    .unwrap();
    p
}

/// Runs `tokenswarm run` with stdin closed; (exit code, stderr).
fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).arg("run").args(args).stdin(Stdio::null());
    let mut p = Proc::spawn(&format!("run-{}", std::process::id()), &mut cmd, dir);
    let code = p.wait(Duration::from_secs(120));
    (code, p.output())
}

/// The single run folder under `results`.
fn run_dir(results: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(results).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// The seed's `ripple` suite (rates 1.0 and 2.0, 10 s phases, two load
/// types) with the starter endpoint spec, pointed at the simulator and run
/// with --yes: exit 0; every results file is present and well-formed;
/// llm_requests.csv has exactly one row per request the simulator served,
/// each with a distinct x-request-id, both load types, both phases and the
/// warm-up; the PNG has a PNG signature and an IHDR; the inputs are copied.
#[test]
fn ripple_suite_against_the_simulator_writes_every_result_file() {
    let dir = test_dir("standalone-ripple");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let (suite, ep) = init(&dir, port);
    let results = dir.join("results");
    let (code, log) = run(
        &dir,
        &[
            suite.to_str().unwrap(),
            ep.to_str().unwrap(),
            "--yes",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("estimated usage"), "{log}");
    let run = run_dir(&results);
    let name = run.file_name().unwrap().to_str().unwrap();
    assert!(
        name.ends_with("Z_ripple") && name.len() == "20261203T100719Z_ripple".len(),
        "{name}"
    );

    let served = sim_stats(port)["requests"].as_u64().unwrap();
    let rows = read_csv(&run.join("llm_requests.csv"));
    assert_eq!(rows.len() as u64, served, "one row per served request");
    assert!(served >= 10, "{served}");
    let text = std::fs::read_to_string(run.join("llm_requests.csv")).unwrap();
    let header = text.lines().next().unwrap();
    for col in [
        "request_id",
        "phase",
        "load_type",
        "scheduled_unix_s",
        "sent_unix_s",
        "ttft_ms",
        "ttfa_ms",
        "tpot_ms",
        "e2e_ms",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "status",
        "failure_kind",
    ] {
        assert!(header.split(',').any(|h| h == col), "{col} in {header}");
    }
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r["request_id"].as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "request ids are distinct");
    assert!(
        ids.iter()
            .all(|i| i.len() == 16 && i.chars().all(|c| c.is_ascii_hexdigit()))
    );
    for phase in ["warmup", "1", "2"] {
        assert!(rows.iter().any(|r| r["phase"] == phase), "phase {phase}");
    }
    assert_eq!(rows.iter().filter(|r| r["phase"] == "warmup").count(), 2);
    for lt in ["load_type_1", "load_type_2"] {
        assert!(rows.iter().any(|r| r["load_type"] == lt), "{lt}");
    }
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r:?}");
        let want = if r["load_type"] == "load_type_1" {
            ("512", "32")
        } else {
            ("640", "12")
        };
        assert_eq!((r["input_tokens"].as_str(), r["output_tokens"].as_str()), want, "{r:?}");
        let ttft: f64 = r["ttft_ms"].parse().unwrap();
        let e2e: f64 = r["e2e_ms"].parse().unwrap();
        assert!(ttft > 0.0 && e2e >= ttft, "{r:?}");
    }

    let summary: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(run.join("summary.yml")).unwrap()).unwrap();
    assert_eq!(summary["name"], "ripple");
    assert_eq!(summary["outcome"], "completed");
    let phases = summary["phases"].as_sequence().unwrap();
    assert_eq!(phases.len(), 2);
    let mut total = summary["warmup"]["requests"].as_u64().unwrap();
    for (i, p) in phases.iter().enumerate() {
        assert_eq!(p["requests_per_second"].as_f64(), Some([1.0, 2.0][i]));
        total += p["requests"].as_u64().unwrap();
        for key in ["p50", "p90", "p99"] {
            assert!(
                p["latency_ms"]["percentiles"][key].as_f64().is_some(),
                "{key} in phase {i}"
            );
        }
        assert!(p["load_types"]["load_type_1"]["requests"].as_u64().is_some());
        assert_eq!(p["divergence"]["output_rel"].as_f64(), Some(0.0));
    }
    assert_eq!(total, served, "the summary's tables add up to the served count");

    let net = read_csv(&run.join("network_latency.csv"));
    assert!(net.len() >= 10, "about one probe a second: {}", net.len());
    assert!(net.iter().all(|r| r["connect_ms"].parse::<f64>().is_ok()), "{net:?}");
    let errors = std::fs::read_to_string(run.join("errors.csv")).unwrap();
    assert!(
        errors.starts_with("request_id,") && errors.lines().count() == 1,
        "{errors}"
    );
    let png = std::fs::read(run.join("latency_quantiles.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert!(u32::from_be_bytes(png[16..20].try_into().unwrap()) > 0);
    let svg = std::fs::read_to_string(run.join("latency_quantiles.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("p99"));
    assert_eq!(
        std::fs::read(run.join("run_suite.yml")).unwrap(),
        std::fs::read(&suite).unwrap()
    );
    assert_eq!(
        std::fs::read(run.join("endpoint_spec.yml")).unwrap(),
        std::fs::read(&ep).unwrap()
    );
}

/// Through a pseudo-terminal the run asks before starting: "n" starts
/// nothing (exit 2, no request served, no results folder), "y" runs.
#[test]
fn the_confirmation_prompt_on_a_terminal_decides_the_start() {
    let dir = test_dir("standalone-pty");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let (_, ep) = init(&dir, port);
    let suite = short_suite(&dir, "");
    let script = root().join("tests/python/pty_confirm.py");
    for (answer, want_code) in [("n", 2), ("y", 0)] {
        let results = dir.join(format!("results-{answer}"));
        let out = Command::new(python())
            .arg(&script)
            .arg(answer)
            .arg(bin())
            .args(["run", suite.to_str().unwrap(), ep.to_str().unwrap(), "--results"])
            .arg(&results)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\nPROMPTED\n"), "{text}");
        assert!(text.contains("estimated usage"), "{text}");
        assert_eq!(out.status.code(), Some(want_code), "answer {answer}: {text}");
        if answer == "n" {
            assert!(text.contains("not confirmed"), "{text}");
            assert!(!results.exists());
            assert_eq!(sim_stats(port)["requests"], 0);
        } else {
            let rows = read_csv(&run_dir(&results).join("llm_requests.csv"));
            assert_eq!(rows.len() as u64, sim_stats(port)["requests"].as_u64().unwrap());
        }
    }
}

/// Without a terminal and without --yes, over a budget, or with an unknown
/// field, nothing is sent and the exit code is 2 with a message naming the
/// reason (the flag, the budget field, the unknown field and valid ones).
#[test]
fn refusals_send_nothing_and_say_why() {
    let dir = test_dir("standalone-refuse");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let (_, ep) = init(&dir, port);
    let ep = ep.to_str().unwrap().to_string();
    let suite = short_suite(&dir, "");
    let (code, log) = run(&dir, &[suite.to_str().unwrap(), &ep]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--yes"), "{log}");
    let over = short_suite(&dir, "input_token_budget: 100\n");
    let (code, log) = run(&dir, &[over.to_str().unwrap(), &ep, "--yes"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("input_token_budget (100)"), "{log}");
    let unknown = short_suite(&dir, "ramp_up: 3\n");
    let (code, log) = run(&dir, &[unknown.to_str().unwrap(), &ep, "--yes"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("ramp_up") && log.contains("requests_per_second_rates"),
        "{log}"
    );
    let bedrock = dir.join("bedrock.yml");
    std::fs::write(&bedrock, "provider: bedrock\nmodel: anthropic.claude-3\n").unwrap();
    let (code, log) = run(&dir, &[suite.to_str().unwrap(), bedrock.to_str().unwrap(), "--yes"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("bedrock") && log.contains("openai, hosted_vllm, azure, anthropic, gemini"),
        "{log}"
    );
    assert_eq!(sim_stats(port)["requests"], 0);
}

/// `--fail-on` turns a breached threshold into exit 1 (results still
/// written, the breach recorded in summary.yml); a threshold that holds
/// leaves exit 0. A warm-up that fails (the simulator answers 500 to every
/// request) aborts before load with exit 1.
#[test]
fn fail_on_thresholds_and_a_failed_warm_up_exit_1() {
    let dir = test_dir("standalone-fail-on");
    let (_sim, port) = start_sim(&dir, "sim", &["--ttft-ms", "40"]);
    let (_, ep) = init(&dir, port);
    let ep = ep.to_str().unwrap().to_string();
    let suite = short_suite(&dir, "");
    let results = dir.join("r1");
    let (code, log) = run(
        &dir,
        &[
            suite.to_str().unwrap(),
            &ep,
            "--yes",
            "--results",
            results.to_str().unwrap(),
            "--fail-on",
            "ttft_p50_ms=1",
            "--fail-on",
            "error_rate=0.5",
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ttft_p50_ms=1") && !log.contains("error_rate=0.5 (measured"),
        "{log}"
    );
    let summary = std::fs::read_to_string(run_dir(&results).join("summary.yml")).unwrap();
    assert!(
        summary.contains("breached: true") && summary.contains("breached: false"),
        "{summary}"
    );
    let results = dir.join("r2");
    let (code, log) = run(
        &dir,
        &[
            suite.to_str().unwrap(),
            &ep,
            "--yes",
            "--results",
            results.to_str().unwrap(),
            "--fail-on",
            "ttft_p99_ms=60000",
        ],
    );
    assert_eq!(code, Some(0), "{log}");

    let (_bad, bad_port) = start_sim(&dir, "sim-500", &["--fault-500", "1.0"]);
    let (_, bad_ep) = init(&dir.join("bad"), bad_port);
    let (code, log) = run(
        &dir,
        &[
            suite.to_str().unwrap(),
            bad_ep.to_str().unwrap(),
            "--yes",
            "--results",
            dir.join("r3").to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("warm-up request"), "{log}");
    assert_eq!(sim_stats(bad_port)["requests"], 1, "only the warm-up was sent");
}

/// Worker mode: `--metrics-addr` serves Prometheus text while a run goes
/// (scraped mid-run: request counter above zero, TTFT histogram present),
/// and `--requests-out` holds one JSON line per request the simulator
/// served, each with the request's x-request-id and its scenario.
#[test]
fn worker_serves_prometheus_during_a_run_and_logs_every_request() {
    let dir = test_dir("standalone-worker-sinks");
    let (_sim, sim_port) = start_sim(&dir, "sim", &[]);
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 32, output_length: 8, \
         wait: {kind: constant, seconds: 0.05}}\n";
    let metrics_port = free_port();
    let host = format!("http://127.0.0.1:{sim_port}");
    let args = ["--headless", "-u", "2", "-r", "2", "-t", "6s"];
    let LlmMaster {
        proc: mut master,
        master_port: mport,
        ..
    } = start_llm_master(&dir, &host, yaml, 1, &args);
    let out = dir.join("requests.jsonl");
    let maddr = format!("127.0.0.1:{metrics_port}");
    let mut worker = start_worker(
        &dir,
        "worker",
        mport,
        &["--requests-out", out.to_str().unwrap(), "--metrics-addr", &maddr],
        &[],
    );
    let scraped = wait_for("requests in /metrics", Duration::from_secs(60), || {
        let (status, body) = http::get(metrics_port, "/metrics").ok()?;
        let line = body
            .lines()
            .find(|l| l.starts_with("tokenswarm_requests_total{scenario=\"Chat\"}"))?;
        let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (status == 200 && n > 0).then_some((n, body))
    });
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "scraped while the run was going"
    );
    assert!(
        scraped.1.contains("# TYPE tokenswarm_ttft_seconds histogram"),
        "{}",
        scraped.1
    );
    assert!(
        scraped
            .1
            .contains("tokenswarm_ttft_seconds_bucket{scenario=\"Chat\",le=\"+Inf\"}")
    );
    assert_eq!(
        master.wait(Duration::from_secs(90)),
        Some(0),
        "{}",
        tail(&master.output(), 30)
    );
    assert_eq!(
        worker.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        tail(&worker.output(), 30)
    );
    let served = sim_stats(sim_port)["requests"].as_u64().unwrap();
    let lines = read_jsonl(&out);
    assert_eq!(lines.len() as u64, served, "one line per served request");
    assert!(scraped.0 <= served);
    let ids: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), lines.len());
    assert!(lines.iter().all(|l| l["load_type"] == "Chat"));
    // Requests in flight at the stop are cancelled; every other one succeeded.
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "ok" || l["failure_kind"] == "cancelled"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["status"] == "ok")
            .all(|l| l["ttft_ms"].is_f64())
    );
}

/// SIGINT during the load stops the run with exit 130, and the results
/// folder is still complete: summary outcome `interrupted`, one row per
/// request the simulator served.
#[test]
fn an_interrupted_run_exits_130_and_still_writes_its_results() {
    let dir = test_dir("standalone-sigint");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let (suite, ep) = init(&dir, port);
    let results = dir.join("results");
    let mut cmd = Command::new(bin());
    cmd.current_dir(&dir)
        .args([
            "run",
            suite.to_str().unwrap(),
            ep.to_str().unwrap(),
            "--yes",
            "--results",
        ])
        .arg(&results);
    let mut p = Proc::spawn("run-sigint", &mut cmd, &dir);
    wait_for("the load to start", Duration::from_secs(30), || {
        p.output().contains("load started").then_some(())
    });
    p.signal("INT");
    assert_eq!(p.wait(Duration::from_secs(30)), Some(130), "{}", p.output());
    let run = run_dir(&results);
    let summary = std::fs::read_to_string(run.join("summary.yml")).unwrap();
    assert!(summary.contains("outcome: interrupted"), "{summary}");
    let rows = read_csv(&run.join("llm_requests.csv"));
    assert_eq!(rows.len() as u64, sim_stats(port)["requests"].as_u64().unwrap());
    assert!(run.join("latency_quantiles.png").exists() && run.join("network_latency.csv").exists());
}

/// tokenswarm's own scenarios file runs standalone with --host (open
/// loop; issue 14: two phases of different lengths, the second with a
/// ramp): exit 0, one row per served request under the scenarios' names,
/// every phase row in a phase the file has, the summary's per-phase
/// durations those of the file, the token estimate counting the ramp at
/// its mean rate, the scenarios file copied; a closed-loop file is refused
/// naming `load.mode`, with nothing sent.
#[test]
fn a_scenarios_file_with_host_runs_standalone() {
    let dir = test_dir("standalone-scenarios");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let file = dir.join("mine.yaml");
    let scenarios = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 48, output_length: 6}\n  \
                     - {name: Claude, weight: 2, provider: anthropic, model: m, prompt_length: 32, output_length: 4}\n";
    std::fs::write(
        &file,
        format!(
            "{scenarios}load: {{mode: open, phases: [{{rate: 3, duration_s: 1}}, {{rate: 5, duration_s: 3, ramp_s: 2}}]}}\n"
        ),
    )
    .unwrap();
    let host = format!("http://127.0.0.1:{port}");
    let closed = dir.join("closed.yaml");
    std::fs::write(&closed, scenarios).unwrap();
    let (code, log) = run(&dir, &[closed.to_str().unwrap(), "--host", &host, "--yes"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("load.mode"), "{log}");
    assert_eq!(sim_stats(port)["requests"], 0);

    let results = dir.join("results");
    let (code, log) = run(
        &dir,
        &[
            file.to_str().unwrap(),
            "--host",
            &host,
            "--yes",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{log}");
    let run = run_dir(&results);
    assert!(run.to_str().unwrap().ends_with("Z_mine"), "{}", run.display());
    let rows = read_csv(&run.join("llm_requests.csv"));
    assert_eq!(rows.len() as u64, sim_stats(port)["requests"].as_u64().unwrap());
    for name in ["Chat", "Claude"] {
        assert!(
            rows.iter().any(|r| r["load_type"] == name && r["phase"] == "warmup"),
            "{name}"
        );
    }
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    assert!(
        rows.iter().all(|r| ["warmup", "1", "2"].contains(&r["phase"].as_str())),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r["phase"] == "2"), "{rows:?}");
    // 3 req/s x 1 s + ramp 3 -> 5 over 2 s (8) + 5 req/s x 1 s = 16
    // scheduled requests, plus one warm-up per scenario.
    assert!(log.contains("about 18 requests"), "{log}");
    let summary: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(run.join("summary.yml")).unwrap()).unwrap();
    let durations: Vec<f64> = summary["phases"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["duration_s"].as_f64().unwrap())
        .collect();
    assert_eq!(durations, [1.0, 3.0]);
    assert_eq!(
        std::fs::read(run.join("scenarios.yaml")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

/// Issue 14.2: a `provider: gemini` endpoint spec runs against the
/// simulator's Gemini route: exit 0, one row per served request, every one
/// ok with the suite's output length as the server-reported output tokens.
#[test]
fn a_gemini_endpoint_runs_against_the_simulator() {
    let dir = test_dir("standalone-gemini");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let ep = dir.join("gemini.yml");
    std::fs::write(
        &ep,
        format!(
            "provider: gemini\nmodel: gemini-sim\nbase_url: http://127.0.0.1:{port}/v1beta\napi_key_env_var: PATH\n"
        ),
    )
    .unwrap();
    let suite = short_suite(&dir, "");
    let results = dir.join("results");
    let (code, log) = run(
        &dir,
        &[
            suite.to_str().unwrap(),
            ep.to_str().unwrap(),
            "--yes",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{log}");
    let rows = read_csv(&run_dir(&results).join("llm_requests.csv"));
    assert_eq!(rows.len() as u64, sim_stats(port)["requests"].as_u64().unwrap());
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["status"] == "ok" && r["output_tokens"] == "8"),
        "{rows:?}"
    );
}

/// Issue 14.6 in standalone mode: `tokenswarm run --metrics-addr` serves
/// Prometheus text while the run goes (scraped mid-run: the load type's
/// request counter above zero, its TTFT histogram present), and the run
/// still ends with exit 0 and the results folder.
#[test]
fn run_serves_prometheus_during_the_run() {
    let dir = test_dir("standalone-run-prometheus");
    let (_sim, port) = start_sim(&dir, "sim", &[]);
    let (_, ep) = init(&dir, port);
    let suite = dir.join("long.yml");
    std::fs::write(
        &suite,
        "name: long\nrequests_per_second_rates: [4.0]\ntest_length_in_seconds: 8\n\
         load_types:\n- {prompt_length: 64, prefix_length: 16, output_length: 8, weight: 1}\n",
    )
    .unwrap();
    let metrics_port = free_port();
    let maddr = format!("127.0.0.1:{metrics_port}");
    let results = dir.join("results");
    let mut cmd = Command::new(bin());
    cmd.current_dir(&dir)
        .args([
            "run",
            suite.to_str().unwrap(),
            ep.to_str().unwrap(),
            "--yes",
            "--metrics-addr",
            &maddr,
        ])
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null());
    let mut p = Proc::spawn("run-prometheus", &mut cmd, &dir);
    let body = wait_for("requests in /metrics", Duration::from_secs(60), || {
        let (status, body) = http::get(metrics_port, "/metrics").ok()?;
        let line = body
            .lines()
            .find(|l| l.starts_with("tokenswarm_requests_total{scenario=\"load_type_1\"}"))?;
        let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (status == 200 && n > 0).then_some(body)
    });
    assert!(p.child.try_wait().unwrap().is_none(), "scraped while the run was going");
    assert!(body.contains("# TYPE tokenswarm_ttft_seconds histogram"), "{body}");
    assert!(body.contains("tokenswarm_ttft_seconds_bucket{scenario=\"load_type_1\",le=\"+Inf\"}"));
    assert_eq!(p.wait(Duration::from_secs(120)), Some(0), "{}", p.output());
    assert!(run_dir(&results).join("summary.yml").exists());
}
