//! Helpers shared by the integration tests: the project venv's Python and
//! Locust, free ports, and child processes that are killed when dropped.
#![allow(dead_code)]

pub mod http;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tokenswarm binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tokenswarm"))
}

/// The project venv (`scripts/setup` makes it); `TOKENSWARM_VENV` overrides.
pub fn venv() -> PathBuf {
    let v = std::env::var_os("TOKENSWARM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    assert!(
        v.join("bin/locust").exists(),
        "no Locust in {}: run scripts/setup first (it creates the venv with the pinned Locust)",
        v.display()
    );
    v
}

pub fn python() -> PathBuf {
    venv().join("bin/python")
}

pub fn locust() -> PathBuf {
    venv().join("bin/locust")
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (SIGKILL) on drop, with its output in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for exit up to `limit`; returns the exit code (None if killed).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; log:\n{}",
                    self.name,
                    tail(&self.output(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 50 ms until it returns Some, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory for one test's logs and files, under target/.
pub fn test_dir(name: &str) -> PathBuf {
    let d = root()
        .join("target/test-runs")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts a Locust master from the project venv, bound to 127.0.0.1.
pub fn start_master(
    dir: &Path,
    name: &str,
    locustfile: &Path,
    master_port: u16,
    web_port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = Command::new(locust());
    cmd.current_dir(dir)
        .arg("-f")
        .arg(locustfile)
        .args(["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port"])
        .arg(master_port.to_string())
        .args(["--web-host", "127.0.0.1", "--web-port"])
        .arg(web_port.to_string())
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(name, &mut cmd, dir)
}

/// A master running `locustfiles/llm.py` (see `start_llm_master`).
pub struct LlmMaster {
    pub proc: Proc,
    pub master_port: u16,
    pub web_port: u16,
}

/// Starts the project's master locustfile on free ports: `scenarios_yaml`
/// is written to `dir/scenarios.yaml`, `host` is the target, and the master
/// waits for `workers` workers; `extra` adds the test's own flags
/// (`--headless`, `-u`/`-r`/`-t`, `--llm-*`).
pub fn start_llm_master(dir: &Path, host: &str, scenarios_yaml: &str, workers: usize, extra: &[&str]) -> LlmMaster {
    let scenarios = dir.join("scenarios.yaml");
    std::fs::write(&scenarios, scenarios_yaml).unwrap();
    let (master_port, web_port) = (free_port(), free_port());
    let n = workers.to_string();
    let mut args = vec![
        "--host",
        host,
        "--llm-scenarios",
        scenarios.to_str().unwrap(),
        "--expect-workers",
        &n,
    ];
    args.extend(extra);
    let lf = root().join("locustfiles/llm.py");
    let proc = start_master(dir, "master", &lf, master_port, web_port, &args, &[]);
    LlmMaster {
        proc,
        master_port,
        web_port,
    }
}

/// Starts a tokenswarm worker pointed at the master on `master_port`.
pub fn start_worker(dir: &Path, name: &str, master_port: u16, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args(["worker", "--master-port"])
        .arg(master_port.to_string())
        .args(args);
    cmd.env("TOKENSWARM_LOG", "info,tokenswarm=debug").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(name, &mut cmd, dir)
}

/// Number of times `needle` occurs in the process's log so far.
pub fn count_in_log(p: &Proc, needle: &str) -> usize {
    p.output().matches(needle).count()
}

/// Starts `tokenswarm sim` on a free port with `args` (latency model,
/// faults); returns once it accepts connections.
pub fn start_sim(dir: &Path, name: &str, args: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args(["sim", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(args);
    let sim = Proc::spawn(name, &mut cmd, dir);
    wait_for("the simulator to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (sim, port)
}

/// The simulator's own counts (`GET /sim/stats`).
pub fn sim_stats(port: u16) -> serde_json::Value {
    http::get_json(port, "/sim/stats")
}

/// Reads a CSV file written by Locust into rows of (header -> value).
pub fn read_csv(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header = split_csv_line(lines.next().unwrap_or_default());
    lines
        .filter(|l| !l.is_empty())
        .map(|l| header.iter().cloned().zip(split_csv_line(l)).collect())
        .collect()
}

/// Splits one CSV line, honouring double quotes (Locust quotes names).
fn split_csv_line(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The `failure_kinds` column of a `PREFIX_llm.csv` row (`kind=n;kind=n`).
pub fn failure_kinds(row: &std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<String, u64> {
    row["failure_kinds"]
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("not kind=n: {kv:?}"));
            (k.to_string(), v.parse().unwrap_or_else(|e| panic!("count of {k}: {e}")))
        })
        .collect()
}

/// Reads a JSON-lines file (the simulator's `--log-requests`).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}
