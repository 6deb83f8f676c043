//! The README's first command: `scripts/demo --headless` runs a simulator,
//! a real master and two workers, prints both summaries, and leaves no
//! process behind.

mod common;

use std::process::Command;

/// Proves: the demo script runs end to end (shortened with `--time`),
/// prints Locust's table, the LLM summary and the simulator's counts, exits
/// 0, and stops everything it started.
#[test]
fn headless_demo_prints_both_summaries_and_cleans_up() {
    let out = Command::new(common::root().join("scripts/demo"))
        .args(["--headless", "--time", "8s", "--users", "6", "--rate", "3"])
        .env("TOKENSWARM_VENV", common::venv())
        .output()
        .expect("run scripts/demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::tail(&text, 80));
    for needle in [
        "Aggregated",
        "LLM metrics",
        "TTFT",
        "simulator ground truth",
        "\"requests\"",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the demo output:\n{}",
            common::tail(&text, 80)
        );
    }
    let logs = text
        .lines()
        .find_map(|l| l.strip_prefix("demo: logs in "))
        .expect("the demo names its log directory")
        .trim()
        .to_string();
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(
            |l| l.contains(&logs) || (l.contains("tokenswarm") && l.contains("--master-port") && l.contains(&logs))
        ),
        "processes left behind:\n{ps}"
    );
}
