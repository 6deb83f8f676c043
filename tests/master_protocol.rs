//! The worker against a real, unmodified Locust master (the pinned version
//! in the project venv): registration, reconnection after the master is
//! killed and restarted, unknown user classes, and the exit codes for bad
//! input. Load and request counting are covered in tests/cluster_run.rs.

mod common;

use std::time::Duration;

use common::{count_in_log, free_port, http, start_master, start_worker, tail, test_dir, wait_for};

fn protocol_locustfile() -> std::path::PathBuf {
    common::root().join("tests/locustfiles/protocol.py")
}

fn user_count(web_port: u16) -> Option<u64> {
    let (status, body) = http::get(web_port, "/stats/requests").ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body).ok()?["user_count"].as_u64()
}

#[test]
fn worker_reconnects_after_the_master_is_killed_and_restarted() {
    // Proves: a lost master is detected, the worker re-registers with the new
    // master process on the same port, and the next run spawns its users.
    let dir = test_dir("reconnect");
    let (mport, wport) = (free_port(), free_port());
    let lf = protocol_locustfile();
    let mut master = start_master(&dir, "master1", &lf, mport, wport, &[], &[]);
    let mut worker = start_worker(&dir, "worker", mport, &[], &[]);
    // Both sides: the master logs "ready" before its ack reaches the worker;
    // killing it in between would let the worker's retried client_ready
    // register with the second master without ever losing the first.
    wait_for("first registration", Duration::from_secs(30), || {
        (count_in_log(&master, "reported as ready") >= 1 && count_in_log(&worker, "registered with the master") >= 1)
            .then_some(())
    });
    master.child.kill().unwrap();
    master.child.wait().unwrap();
    let master2 = start_master(&dir, "master2", &lf, mport, wport, &[], &[]);
    wait_for(
        "registration with the restarted master",
        Duration::from_secs(40),
        || (count_in_log(&master2, "reported as ready") >= 1).then_some(()),
    );
    assert!(
        worker.output().contains("lost the master"),
        "{}",
        tail(&worker.output(), 30)
    );
    let (status, body) = http::post_form(
        wport,
        "/swarm",
        "user_count=2&spawn_rate=10&host=http%3A%2F%2F127.0.0.1%3A9",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("2 users on the new master", Duration::from_secs(20), || {
        (user_count(wport) == Some(2)).then_some(())
    });
    // SIGTERM: the master quits its workers; ours must leave with code 0.
    master2.signal("TERM");
    assert_eq!(
        worker.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        tail(&worker.output(), 30)
    );
}

#[test]
fn unknown_user_class_is_reported_to_the_master_and_the_worker_stays_up() {
    // Proves: a class the scenarios do not define reaches the master as an
    // exception naming it and the known scenarios; the run still ends cleanly.
    let dir = test_dir("unknown-class");
    let (mport, wport) = (free_port(), free_port());
    let lf = protocol_locustfile();
    let mut master = start_master(
        &dir,
        "master",
        &lf,
        mport,
        wport,
        &[
            "--headless",
            "--expect-workers",
            "1",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "5s",
            "--csv",
            "run",
        ],
        &[("TS_WITH_MYSTERY", "1")],
    );
    let mut worker = start_worker(&dir, "worker", mport, &[], &[]);
    let code = master.wait(Duration::from_secs(60));
    assert_eq!(
        worker.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        tail(&worker.output(), 30)
    );
    let exceptions = std::fs::read_to_string(dir.join("run_exceptions.csv")).unwrap();
    assert!(
        exceptions.contains("unknown user class") && exceptions.contains("Mystery") && exceptions.contains("ChatShort"),
        "exceptions.csv: {exceptions}\nmaster: {}",
        tail(&master.output(), 20)
    );
    // Locust exits 1 when exceptions were logged: the master saw the error.
    assert_eq!(code, Some(1));
}

fn run_worker(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn unreachable_master_gives_up_with_exit_code_3_and_says_where_it_looked() {
    let port = free_port().to_string();
    let (code, out) = run_worker(&["worker", "--master-port", &port, "--master-timeout", "2"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && out.contains("--master-timeout"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn bad_port_and_timeout_are_usage_errors_naming_the_value() {
    for (args, needle) in [
        (vec!["worker", "--master-port", "70000"], "70000"),
        (vec!["worker", "--master-port", "0"], "0"),
        (vec!["worker", "--master-port", "abc"], "abc"),
        (vec!["worker", "--master-timeout", "-5"], "-5"),
    ] {
        let (code, out) = run_worker(&args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(needle) && out.contains("--master-"), "{args:?}: {out}");
    }
}

#[test]
fn master_port_comes_from_locusts_own_environment_variable() {
    // Proves LOCUST_MASTER_NODE_PORT is honoured: the error names that port.
    let port = free_port().to_string();
    let out = std::process::Command::new(common::bin())
        .args(["worker", "--master-timeout", "1"])
        .env("LOCUST_MASTER_NODE_PORT", &port)
        .env("LOCUST_MASTER_NODE_HOST", "127.0.0.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{port}")));
}
