//! Out-of-range flags are usage errors at parsing (exit 2, the flag named),
//! never a panic later (issue 13: `--master-timeout 1e30` and
//! `sim --stall-s 1e30` used to panic in `Duration::from_secs_f64`).

mod common;

use std::process::Command;

/// Runs the binary with `args` (each case fails during argument parsing,
/// so nothing listens or connects) and returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::bin())
        .args(args)
        .env("TOKENSWARM_LOG", "error")
        .output()
        .expect("run tokenswarm");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_usage_error(args: &[&str], flag: &str) {
    let (code, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: want exit 2; stderr: {stderr}");
    assert!(stderr.contains(flag), "{args:?}: the error names {flag}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: no panic: {stderr}");
}

/// Proves: a master timeout too large for a `Duration` is refused when the
/// flags are parsed, naming the flag and the bound.
#[test]
fn huge_master_timeout_is_a_usage_error() {
    for v in ["1e30", "inf", "NaN", "-1", "0"] {
        assert_usage_error(&["worker", "--master-timeout", v], "--master-timeout");
    }
    let (_, stderr) = run(&["worker", "--master-timeout", "1e30"]);
    assert!(stderr.contains("1000000"), "the bound is stated: {stderr}");
}

/// Proves: the simulator's stall length is bounded at parsing too.
#[test]
fn huge_stall_is_a_usage_error() {
    for v in ["1e30", "inf", "-1"] {
        assert_usage_error(&["sim", "--stall-s", v], "--stall-s");
    }
}
