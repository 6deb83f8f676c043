//! The test definition's schema is owned by Rust and shared with the
//! master (issue 11, item 1; issue 13, item 4):
//! - the committed `locustfiles/tokenswarm_master/schema.json` is what the
//!   binary emits (the master validates with that file);
//! - every document of `tests/fixtures/schema_corpus/` gets the verdict and
//!   the exact message its header states; tests/python/test_config_schema.py
//!   holds the master to the same headers;
//! - the schema's defaults are the ones serde fills in.

mod common;

use std::path::PathBuf;
use std::process::Command;

use tokenswarm::load::arrivals::RateSchedule;
use tokenswarm::scenario::TestConfig;

fn schema_path() -> PathBuf {
    common::root().join("locustfiles/tokenswarm_master/schema.json")
}

/// Proves: the committed schema is fresh. Regenerate it with
/// `target/release/tokenswarm schema > locustfiles/tokenswarm_master/schema.json`.
#[test]
fn committed_schema_is_what_the_binary_emits() {
    let out = Command::new(common::bin())
        .arg("schema")
        .output()
        .expect("run tokenswarm schema");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let emitted = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(schema_path()).expect("read the committed schema.json");
    assert!(
        emitted == committed,
        "locustfiles/tokenswarm_master/schema.json is stale: regenerate it with \
         `tokenswarm schema > locustfiles/tokenswarm_master/schema.json`"
    );
    assert_eq!(emitted, tokenswarm::scenario::schema::emit());
}

struct Case {
    name: String,
    text: String,
    /// `None`: valid.
    error: Option<String>,
    planned: Option<f64>,
}

fn corpus() -> Vec<Case> {
    let dir = common::root().join("tests/fixtures/schema_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the corpus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a corpus file");
            let header = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .map(str::to_string)
            };
            let expect = header("expect").unwrap_or_else(|| panic!("{}: no `# expect:` line", p.display()));
            Case {
                name: p.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                error: (expect != "valid").then_some(expect),
                planned: header("planned_requests").map(|n| n.parse().expect("a number")),
                text,
            }
        })
        .collect()
}

/// Proves: each corpus document is accepted or rejected as its header says,
/// with exactly the header's message, and an open-loop document plans the
/// stated number of requests (the master's token estimate mirrors this
/// arithmetic). The corpus covers every limit of issue 13 item 4, among
/// them `prompt_length: 1000000000000`, which aborted a worker before.
#[test]
fn corpus_verdicts_and_messages() {
    let cases = corpus();
    assert!(cases.len() >= 50, "corpus of {} documents", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        match (TestConfig::from_yaml(&c.text), &c.error) {
            (Ok(cfg), None) => {
                cfg.validate()
                    .unwrap_or_else(|e| panic!("{}: typed config fails validate: {e}", c.name));
                let planned = RateSchedule::new(&cfg.load.phases).total();
                if let Some(want) = c.planned
                    && (planned - want).abs() > want.abs() * 1e-9
                {
                    wrong.push(format!("{}: planned {planned}, header says {want}", c.name));
                }
            }
            (Err(e), Some(want)) if e.to_string() == *want => {}
            (got, want) => wrong.push(format!(
                "{}:\n  got  {:?}\n  want {want:?}",
                c.name,
                got.map(|_| "valid")
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(cases.iter().any(|c| c.error.is_none()) && cases.iter().any(|c| c.error.is_some()));
}

/// Proves: every `default` in the schema (what the master fills in) is the
/// value serde gives a field that is left out.
#[test]
fn schema_defaults_are_what_serde_fills_in() {
    let cfg = TestConfig::from_yaml(
        "scenarios:\n  - {name: A, provider: openai-chat, model: m, prompt_length: 10, output_length: 5}\n",
    )
    .expect("minimal document");
    let typed = serde_json::to_value(&cfg).expect("serialize");
    let schema = tokenswarm::scenario::schema::schema();
    let mut checked = 0;
    let mut compare = |props: &serde_json::Value, values: &serde_json::Value, at: &str| {
        for (name, node) in props.as_object().expect("properties") {
            if let Some(default) = node.get("default") {
                assert_eq!(&values[name], default, "{at}.{name}");
                checked += 1;
            }
        }
    };
    compare(&schema["properties"], &typed, "config");
    compare(
        &schema["properties"]["scenarios"]["items"]["properties"],
        &typed["scenarios"][0],
        "scenario",
    );
    for section in ["load", "slo", "safety", "timeouts"] {
        compare(&schema["properties"][section]["properties"], &typed[section], section);
    }
    assert!(checked >= 25, "{checked} defaults compared");
}

/// Proves: the 1e12-token prompt is refused by `tokenswarm check` with a
/// usage error naming the field and the bound, not an allocation abort.
#[test]
fn check_refuses_a_trillion_token_prompt() {
    let dir = common::test_dir("schema_1e12");
    let path = dir.join("huge.yaml");
    std::fs::write(
        &path,
        "scenarios:\n  - {name: A, provider: openai-chat, model: m, prompt_length: 1000000000000, output_length: 10}\n",
    )
    .expect("write");
    let out = Command::new(common::bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("prompt_length") && stderr.contains("1000000000000") && stderr.contains("10000000"),
        "{stderr}"
    );
}
