//! Issue 12, item 3: the RSS a tokenswarm worker needs per open stream,
//! at 10,000 open streams.
//!
//! The goal is 16 KiB per stream; it is NOT met yet, and this test
//! asserts the bound the worker meets today, 28 KiB, so that the cuts made
//! for it cannot silently come back (before them a stream cost 31-32 KiB;
//! after them 24.3 KiB, bench/README.md "Memory per open stream"). What is
//! left is mostly inside hyper's HTTP/1 client, per connection, and cannot
//! be set through reqwest: the dispatch channel's first block (8.8 KB),
//! the header write buffer (8 KB) and the read buffer (7-8 KB).
//!
//! A real Locust master (`locustfiles/llm.py`, 10,000 users started from its
//! web UI), one
//! tokenswarm worker and the simulator in its own process (slots unlimited,
//! 1,000 tokens at 200 ms: every stream stays open for the whole test). The
//! worker's resident set (`VmRSS` of `/proc/<pid>/status`) is read once it
//! is ready and idle, and again once the simulator has all 10,000 requests
//! and the worker's RSS has stopped growing while they stream.
//!
//! Memory only; nothing here asserts a duration (the waits are generous
//! limits for a busy machine, not measurements).

mod common;

use std::time::{Duration, Instant};

use common::*;

const STREAMS: u64 = 10_000;
/// The bound asserted per open stream (the goal is 16 KiB; see the
/// module docs for why it is 28 today).
const PER_STREAM_LIMIT_KIB: u64 = 28;

const LONG_STREAMS: &str = "\
scenarios:
  - {name: Long, provider: openai-chat, model: tokenswarm-sim, prompt_length: 32, output_length: 1000}
safety: {warmup: false, error_limit: 0}
";

/// A field of `/proc/<pid>/status` in KiB (e.g. `VmRSS`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// RSS of a worker holding 10,000 open streams: at most 28 KiB per stream
/// above its idle RSS, and at most 10,000 x 28 KiB in all; the streams are really
/// open (the simulator has 10,000 requests and has finished none, the worker
/// holds at least 10,000 sockets).
#[test]
fn ten_thousand_open_streams_fit_in_28_kib_each() {
    let dir = test_dir("stream-memory");
    let (_sim, sim_port) = start_sim(
        &dir,
        "sim",
        &["--slots", "0", "--tpot-ms", "200", "--batch-slowdown", "0"],
    );
    let host = format!("http://127.0.0.1:{sim_port}");
    let LlmMaster {
        proc: master,
        master_port: mport,
        web_port: wport,
    } = start_llm_master(&dir, &host, LONG_STREAMS, 1, &[]);
    let worker = start_worker(&dir, "worker", mport, &[], &[("TOKENSWARM_LOG", "warn")]);
    let pid = worker.child.id();
    let logs = || {
        format!(
            "--- master\n{}\n--- worker\n{}",
            tail(&master.output(), 30),
            tail(&worker.output(), 30)
        )
    };

    // Idle: connected to the master, no load yet (started below from the
    // web UI).
    wait_for("the worker to join", Duration::from_secs(60), || {
        (count_in_log(&master, "reported as ready") >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = status_kib(pid, "VmRSS");
    let (status, body) = http::post_form(wport, "/swarm", &format!("user_count={STREAMS}&spawn_rate=2500")).unwrap();
    assert_eq!(status, 200, "{body}");
    let served = |port| sim_stats(port)["requests"].as_u64().unwrap();

    wait_for("10,000 streams at the simulator", Duration::from_secs(180), || {
        (served(sim_port) >= STREAMS).then_some(())
    });
    // Let every stream read some tokens and the RSS settle: sample until two
    // samples 2 s apart differ by less than 1 % (at most a minute).
    let mut rss = status_kib(pid, "VmRSS");
    let settle_until = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = status_kib(pid, "VmRSS");
        let settled = now.abs_diff(rss) * 100 < rss;
        rss = rss.max(now);
        if settled || Instant::now() > settle_until {
            break;
        }
    }
    let fds = open_fds(pid);
    let hwm = status_kib(pid, "VmHWM");
    let sim = sim_stats(sim_port);
    let per_stream = (rss.saturating_sub(idle_kib)) as f64 / STREAMS as f64;
    eprintln!(
        "worker RSS idle {idle_kib} KiB, with {STREAMS} streams {rss} KiB (peak {hwm} KiB): \
         {per_stream:.2} KiB per stream; worker fds {fds}; simulator {sim}"
    );

    assert!(
        sim["requests"].as_u64().unwrap() >= STREAMS && sim["streams_completed"] == 0,
        "all streams open at the simulator, none finished: {sim}\n{}",
        logs()
    );
    assert!(
        fds >= STREAMS,
        "the worker holds a socket per stream: {fds} fds\n{}",
        logs()
    );
    assert!(
        per_stream <= PER_STREAM_LIMIT_KIB as f64,
        "{per_stream:.2} KiB per open stream (RSS {idle_kib} -> {rss} KiB), limit {PER_STREAM_LIMIT_KIB} KiB\n{}",
        logs()
    );
    assert!(
        rss <= STREAMS * PER_STREAM_LIMIT_KIB,
        "worker RSS {rss} KiB with {STREAMS} streams, limit {} KiB",
        STREAMS * PER_STREAM_LIMIT_KIB
    );
}
