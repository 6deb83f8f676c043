//! Throughput benchmark of `tokenswarm sim --no-latency` (ignored by default;
//! see bench/sim/README.md):
//!
//! ```text
//! cargo build --release
//! cargo test --release --test sim_bench -- --ignored --nocapture
//! ```
//!
//! Starts the release binary (env TOKENSWARM_BIN or target/release/tokenswarm),
//! drives it with keep-alive connections each streaming chat requests of 64
//! output tokens, and compares the CPU time of the sim process
//! (/proc/<pid>/stat) with the client's own CPU time per 1000 streams.
//! Env: SIM_BENCH_SECS (default 5), SIM_BENCH_CONC (default 32),
//! SIM_BENCH_TOKENS (default 64), SIM_BENCH_CLIENT (raw | reqwest | both, default both),
//! SIM_BENCH_PORT and SIM_BENCH_PID (use a sim that is already running).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// utime + stime of a process (or "self"), seconds.
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / env("CLK_TCK", 100.0)
}

struct SimProc(Child);

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim(port: u16) -> SimProc {
    let bin = std::env::var("TOKENSWARM_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/tokenswarm", env!("CARGO_MANIFEST_DIR")));
    // wrapped at once so that it is killed and reaped on every path
    let sim = SimProc(
        Command::new(bin)
            .args(["sim", "--no-latency", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sim (cargo build --release first)"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sim;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sim did not start");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn body(tokens: u64) -> String {
    // 128-word prompt, a little over the worker's typical shape
    let prompt: Vec<String> = (0..128)
        .map(|i| ((b'A' + (i * 7 % 26) as u8) as char).to_string())
        .collect();
    serde_json::json!({
        "model": "m", "max_tokens": tokens, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prompt.join(" ")}],
    })
    .to_string()
}

/// Minimal client: prebuilt request bytes, reads until the chunked terminator.
async fn raw_conn(port: u16, req: Arc<Vec<u8>>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, tokens: u64) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut checked = false;
    while !stop.load(Ordering::Relaxed) {
        s.write_all(&req).await.unwrap();
        let mut n = 0;
        loop {
            let r = s.read(&mut buf[n..]).await.unwrap();
            assert!(r > 0, "connection closed");
            n += r;
            if buf[..n].ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        if !checked {
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(text.matches(":\" tok\"").count() as u64, tokens, "{text}");
            assert!(text.contains("data: [DONE]"));
            checked = true;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A typical Rust client: reqwest, reading the body chunk by chunk.
async fn reqwest_conn(url: String, body: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, tokens: u64) {
    let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let mut r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(c) = r.chunk().await.unwrap() {
            n += c.windows(6).filter(|w| w == b":\" tok").count() as u64;
        }
        assert_eq!(n, tokens);
        done.fetch_add(1, Ordering::Relaxed);
    }
}

fn run(kind: &str, port: u16, sim_pid: &str, secs: f64, conc: usize, tokens: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let b = body(tokens);
    let req = Arc::new(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        )
        .into_bytes(),
    );
    // warm-up, then measure
    let (sim0, me0, t0, n0) = rt.block_on(async {
        for _ in 0..conc {
            let (stop, done) = (stop.clone(), done.clone());
            if kind == "raw" {
                tokio::spawn(raw_conn(port, req.clone(), stop, done, tokens));
            } else {
                tokio::spawn(reqwest_conn(
                    format!("http://127.0.0.1:{port}/v1/chat/completions"),
                    b.clone(),
                    stop,
                    done,
                    tokens,
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        (
            cpu_s(sim_pid),
            cpu_s("self"),
            Instant::now(),
            done.load(Ordering::Relaxed),
        )
    });
    rt.block_on(async { tokio::time::sleep(tokenswarm::units::seconds_saturating(secs)).await });
    let (sim1, me1, el, n1) = (
        cpu_s(sim_pid),
        cpu_s("self"),
        t0.elapsed().as_secs_f64(),
        done.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(1));
    let n = (n1 - n0) as f64;
    println!(
        "client={kind} conc={conc} tokens={tokens}: {:.0} streams/s, {:.0} tokens/s; CPU-s per 1000 streams: sim {:.3}, client {:.3} (sim/client = {:.2})",
        n / el,
        n * tokens as f64 / el,
        (sim1 - sim0) / n * 1000.0,
        (me1 - me0) / n * 1000.0,
        (sim1 - sim0) / (me1 - me0)
    );
}

#[test]
#[ignore = "benchmark; run explicitly (bench/sim/README.md)"]
fn bench_sim_throughput() {
    let secs = env("SIM_BENCH_SECS", 5.0);
    let conc = env("SIM_BENCH_CONC", 32usize);
    let tokens = env("SIM_BENCH_TOKENS", 64u64);
    let which: String = env("SIM_BENCH_CLIENT", "both".to_string());
    // SIM_BENCH_PORT + SIM_BENCH_PID: measure an already running sim instead.
    let (port, pid, _sim) = match (std::env::var("SIM_BENCH_PORT"), std::env::var("SIM_BENCH_PID")) {
        (Ok(port), Ok(pid)) => (port.parse().unwrap(), pid, None),
        _ => {
            let port = free_port();
            let sim = start_sim(port);
            (port, sim.0.id().to_string(), Some(sim))
        }
    };
    for kind in ["raw", "reqwest"] {
        if which == "both" || which == kind {
            run(kind, port, &pid, secs, conc, tokens);
        }
    }
}
