//! Regression test for issue 13 ("a failure key built from per-request text
//! gave one failure row per request: 7,778 rows in 6 s"), end to end: a
//! target that fails every request with different text each time (random
//! error `type`s, error strings without ": ", non-string `error`s, unique
//! Content-Type parameters, random statuses and bodies), two tokenswarm
//! workers and a real Locust master. The master's failures table must stay
//! within the per-scenario cap (32 summaries plus one overflow row per kind
//! group), every failure must still be counted exactly once, and the exit
//! code must say the target failed (the policy decides on the kind).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

/// Mirrors `tokenswarm::metrics::MAX_FAILURE_KEYS` and the number of kind
/// groups (`FailureKind::group`).
const CAP: usize = tokenswarm::metrics::MAX_FAILURE_KEYS;
const GROUPS: usize = 8;

/// A target whose every answer is a failure with fresh random text.
struct HostileTarget {
    port: u16,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HostileTarget {
    fn start() -> HostileTarget {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let r = r.clone();
                std::thread::spawn(move || serve(conn, &r));
            }
        });
        HostileTarget { port, requests, stop }
    }
}

impl Drop for HostileTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// splitmix64: a different, reproducible value per request number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Letters only, so that normalising digits away cannot merge them.
fn letters(mut v: u64, n: usize) -> String {
    (0..n)
        .map(|_| {
            let c = char::from(b'a' + (v % 26) as u8);
            v /= 26;
            c
        })
        .collect()
}

/// Reads requests off one connection and answers each with a failure;
/// keep-alive, as reqwest pools connections. Ends when the peer closes.
fn serve(conn: TcpStream, requests: &AtomicU64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let v = mix(n);
        let word = letters(v >> 8, 10);
        let (status, content_type, payload) = match v % 6 {
            // A random error type and message in an SSE error event.
            0 => (
                200,
                "text/event-stream".to_string(),
                format!("data: {{\"error\":{{\"type\":\"{word}\",\"message\":\"busy {n}\"}}}}\n\n"),
            ),
            // An error string without ": ".
            1 => (
                200,
                "text/event-stream".to_string(),
                format!("data: {{\"error\":\"overloaded {word} try later\"}}\n\n"),
            ),
            // A non-string, non-object error.
            2 => (
                200,
                "text/event-stream".to_string(),
                format!("data: {{\"error\":{n}}}\n\n"),
            ),
            // A unique Content-Type parameter on a non-stream answer.
            3 => (
                200,
                format!("text/html; boundary={word}"),
                format!("<html>{word}</html>"),
            ),
            // A random status with a random body.
            4 => (
                400 + (v >> 40) % 200,
                "application/json".to_string(),
                format!("{{\"error\":{{\"message\":\"{word} {n}\",\"type\":\"{word}\"}}}}"),
            ),
            // A stream cut before any end marker (stable: one row).
            _ => (200, "text/event-stream".to_string(), format!(": {word}\n\n")),
        };
        // One write: a head and a body in two small writes would wait for
        // the client's delayed ACK (Nagle) on every request.
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn random_failure_text_gives_a_bounded_failures_table_with_exact_counts() {
    let dir = test_dir("failure-keys");
    let target = HostileTarget::start();
    let host = format!("http://127.0.0.1:{}", target.port);
    let yaml = "scenarios:\n  - {name: Chat, provider: openai-chat, model: m, prompt_length: 16, output_length: 8, \
         wait: {kind: constant, seconds: 0.01}}\n";
    let args = [
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "5s",
        "--llm-no-warmup",
        "--llm-error-limit",
        "0",
        "--csv",
        "out",
    ];
    let LlmMaster {
        proc: mut master,
        master_port: mport,
        ..
    } = start_llm_master(&dir, &host, yaml, 2, &args);
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| start_worker(&dir, &format!("worker{i}"), mport, &[], &[]))
        .collect();
    let code = master.wait(Duration::from_secs(90));
    for w in &mut workers {
        assert_eq!(w.wait(Duration::from_secs(15)), Some(0), "{}", tail(&w.output(), 30));
    }
    let log = tail(&master.output(), 40);
    // Target errors, not cancellations: Locust's exit code on failures.
    assert_eq!(code, Some(1), "{log}");

    let served = target.requests.load(Ordering::SeqCst);
    let stats = read_csv(&dir.join("out_stats.csv"));
    let agg = stats
        .iter()
        .find(|r| r["Name"] == "Aggregated")
        .expect("Aggregated row");
    let requests: u64 = agg["Request Count"].parse().unwrap();
    let failures: u64 = agg["Failure Count"].parse().unwrap();
    assert!(served >= 200, "too few requests to prove anything: {served}\n{log}");
    assert_eq!(
        (requests, failures),
        (served, served),
        "every request failed and was counted once"
    );

    let rows = read_csv(&dir.join("out_failures.csv"));
    assert!(
        rows.len() <= CAP + GROUPS,
        "{} failure rows for one scenario (cap {CAP} + {GROUPS} groups)",
        rows.len()
    );
    let occurrences: u64 = rows.iter().map(|r| r["Occurrences"].parse::<u64>().unwrap()).sum();
    assert_eq!(occurrences, failures, "{rows:?}");
    let errors: Vec<&str> = rows.iter().map(|r| r["Error"].as_str()).collect();
    assert!(
        errors.iter().any(|e| e.ends_with(": other")),
        "the cap was reached: {errors:?}"
    );
    // Stable causes keep rows of their own: kind plus fixed text.
    for want in [
        "error_event: error event in stream",
        "truncated: stream ended without an end marker or finish reason",
    ] {
        assert!(errors.contains(&want), "{want} missing: {errors:?}");
    }
    // No per-request text reached a key.
    assert!(
        errors.iter().all(|e| e.len() <= 160 && !e.contains("boundary=")),
        "{errors:?}"
    );

    let llm = read_csv(&dir.join("out_llm.csv"));
    let total = llm
        .iter()
        .find(|r| r["Scenario"] == "Aggregated")
        .expect("Aggregated LLM row");
    let kinds = failure_kinds(total);
    assert_eq!(kinds.values().sum::<u64>(), failures, "{kinds:?}");
    for k in ["error_event", "invalid_response", "truncated"] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "{k}: {kinds:?}");
    }
}
