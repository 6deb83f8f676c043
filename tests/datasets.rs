//! Dataset prompts end to end: a real Locust master (pinned, from the
//! project venv) running `locustfiles/llm.py` ships a JSONL file to two
//! tokenswarm workers, which send its prompts to the real simulator; the
//! simulator's request log (`--log-requests --log-prompts`) is the ground
//! truth of what was sent.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;

/// More records than the run can send (2 users, at least 20 ms a request,
/// 4 s), so no record may repeat.
const RECORDS: usize = 600;

/// Record `i`: its texts in the order the simulator logs them, its output
/// length, and its JSONL line (plain prompts and system + user messages,
/// with text that needs JSON escaping).
fn record(i: usize) -> (Vec<String>, u64, String) {
    let out = 2 + (i % 7) as u64;
    let user = format!(
        "Question {i}: what is \"{}\" plus {}?\nAnswer in é words.",
        i * 7 % 13,
        i % 5
    );
    if i.is_multiple_of(3) {
        let system = format!("You are assistant number {i}.");
        let line = json!({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "output_length": out,
        });
        (vec![system, user], out, line.to_string())
    } else {
        let line = json!({"prompt": user, "output_length": out});
        (vec![user], out, line.to_string())
    }
}

/// Proves: with `dataset: {path, output: {kind: dataset}}` the master reads
/// the JSONL file and ships it to two workers, and every prompt the
/// simulator received is exactly one record of the file (its system and
/// user texts, escapes included) with that record's `output_length` as
/// `max_tokens`; the two workers' shares do not overlap (no record was sent
/// twice while the dataset had unsent ones); and the master counts what
/// the simulator served.
#[test]
fn sent_prompts_are_the_files_records_without_repeats() {
    let records: Vec<(Vec<String>, u64, String)> = (0..RECORDS).map(record).collect();
    let file: String = records.iter().map(|r| format!("{}\n", r.2)).collect();
    let expected = records.into_iter().map(|r| (r.0, r.1)).collect();
    run_and_check(
        "datasets-jsonl",
        "openai-chat",
        "{path: prompts.jsonl, seed: 11, output: {kind: dataset}}",
        &file,
        expected,
    );
}

/// Proves: a dataset just under the master's shipping limit (1,000,000
/// bytes) goes through the real master's spawn message to both workers
/// (the worker's wire bounds admit it) and is sent as written.
#[test]
fn a_dataset_near_the_shipping_limit_reaches_the_workers() {
    let filler = "lorem ipsum dolor sit amet ".repeat(60);
    let mut file = String::new();
    let mut expected = Vec::new();
    let mut i = 0;
    loop {
        let prompt = format!("Long prompt {i}: {filler}");
        let line = json!({"prompt": prompt}).to_string() + "\n";
        if file.len() + line.len() > 990_000 {
            break;
        }
        file += &line;
        expected.push((vec![prompt], 4));
        i += 1;
    }
    assert!(file.len() > 980_000, "{}", file.len());
    run_and_check(
        "datasets-big",
        "openai-chat",
        "{path: prompts.jsonl, seed: 5}",
        &file,
        expected,
    );
}

/// Proves: a ShareGPT file (one JSON array) read by the workers themselves
/// (`shared_storage: true`; tests/python/test_datasets.py shows the master
/// then ships nothing) is sent to an
/// Anthropic endpoint as its records' system text and first human message,
/// with the word count of the `gpt` reply as `max_tokens`, without repeats.
#[test]
fn sharegpt_from_shared_storage_sends_the_first_human_turn() {
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for i in 0..RECORDS {
        let system = format!("System {i}.");
        let human = format!("Human question {i} \"quoted\" \u{e9}?");
        let reply_words = 2 + i % 5;
        let reply = vec!["w"; reply_words].join(" ");
        records.push(json!({"id": i, "conversations": [
            {"from": "system", "value": system},
            {"from": "human", "value": human},
            {"from": "gpt", "value": reply},
            {"from": "human", "value": "a later turn, never sent"},
        ]}));
        expected.push((vec![system, human], reply_words as u64));
    }
    let file = serde_json::to_string_pretty(&records).unwrap();
    run_and_check(
        "datasets-sharegpt",
        "anthropic",
        "{path: PATH, format: sharegpt, shared_storage: true, seed: 3, output: {kind: dataset}}",
        &file,
        expected,
    );
}

/// Runs two workers for 4 s on the dataset `file` (`PATH` in `dataset`
/// stands for its absolute path) and checks the simulator's log against
/// `expected` (each record's texts and output length).
fn run_and_check(name: &str, provider: &str, dataset: &str, file: &str, expected: Vec<(Vec<String>, u64)>) {
    let dir = test_dir(name);
    let log = dir.join("sim-requests.jsonl");
    let (_sim, sim_port) = start_sim(
        &dir,
        "sim",
        &[
            "--ttft-ms",
            "20",
            "--tpot-ms",
            "2",
            "--seed",
            "9",
            "--log-requests",
            log.to_str().unwrap(),
            "--log-prompts",
        ],
    );
    let data = dir.join("prompts.jsonl");
    std::fs::write(&data, file).unwrap();
    let dataset = dataset.replace("PATH", data.to_str().unwrap());
    let yaml = format!(
        "scenarios:\n  - {{name: Data, provider: {provider}, model: m, prompt_length: 20, output_length: 4,\n     \
             dataset: {dataset}}}\n"
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
        2,
        &[
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "4s",
            "--stop-timeout",
            "30",
            "--csv",
            "out",
        ],
    );
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| start_worker(&dir, &format!("worker{i}"), mport, &[], &[]))
        .collect();
    let logs = |m: &Proc, ws: &[Proc]| {
        let mut s = format!("--- master\n{}\n", tail(&m.output(), 60));
        for w in ws {
            s += &format!("--- {}\n{}\n", w.name, tail(&w.output(), 20));
        }
        s
    };
    let code = master.wait(Duration::from_secs(90));
    assert!(code.is_some(), "master did not exit\n{}", logs(&master, &workers));
    for w in &mut workers {
        assert_eq!(w.wait(Duration::from_secs(15)), Some(0));
    }

    let by_texts: BTreeMap<&[String], (usize, u64)> = expected
        .iter()
        .enumerate()
        .map(|(i, r)| (r.0.as_slice(), (i, r.1)))
        .collect();
    let lines = read_jsonl(&log);
    assert!(
        lines.len() >= 10,
        "too few requests to prove anything\n{}",
        logs(&master, &workers)
    );
    let mut sent = BTreeMap::<usize, usize>::new();
    for l in &lines {
        assert_eq!(l["status"], 200, "{l}");
        let texts: Vec<String> =
            serde_json::from_value(l["prompt_texts"].clone()).unwrap_or_else(|e| panic!("no prompt_texts in {l}: {e}"));
        let (i, out) = by_texts
            .get(texts.as_slice())
            .unwrap_or_else(|| panic!("a prompt that is no record of the file: {texts:?}"));
        assert_eq!(
            l["output_tokens"].as_u64(),
            Some(*out),
            "record {i}: max_tokens from the file"
        );
        *sent.entry(*i).or_default() += 1;
    }
    let repeated: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lines.len() <= expected.len(),
        "the run outgrew the dataset: {}",
        lines.len()
    );
    assert!(
        repeated.is_empty(),
        "records sent twice before the dataset ran out: {repeated:?}"
    );
    let sim = sim_stats(sim_port);
    let rows = read_csv(&dir.join("out_llm.csv"));
    let total = rows
        .iter()
        .find(|r| r["Scenario"] == "Aggregated")
        .expect("Aggregated row");
    assert_eq!(total["requests"], lines.len().to_string(), "{sim}");
    assert_eq!(total["input_tokens"], sim["prompt_tokens"].to_string());
    assert_eq!(total["output_tokens"], sim["output_tokens"].to_string());
    assert_eq!(total["failures"], "0");
    eprintln!(
        "{name}: {} requests, {} distinct records of {}",
        lines.len(),
        sent.len(),
        expected.len()
    );
}

/// Proves: a dataset line the workers cannot use stops the run before any
/// request, and the master's log names the scenario, the file, the line and
/// the field (the worker's parse error, relayed as the abort reason).
#[test]
fn a_bad_dataset_line_stops_the_run_naming_file_line_and_field() {
    let dir = test_dir("datasets-bad");
    let log = dir.join("sim-requests.jsonl");
    let (_sim, sim_port) = start_sim(&dir, "sim", &["--log-requests", log.to_str().unwrap()]);
    std::fs::write(
        dir.join("prompts.jsonl"),
        "{\"prompt\": \"fine\"}\n\n{\"promt\": \"typo\"}\n",
    )
    .unwrap();
    let yaml = "scenarios:\n  - {name: Data, provider: openai-chat, model: m, prompt_length: 20, output_length: 4, \
         dataset: {path: prompts.jsonl}}\n";
    let host = format!("http://127.0.0.1:{sim_port}");
    let LlmMaster {
        proc: mut master,
        master_port: mport,
        ..
    } = start_llm_master(&dir, &host, yaml, 1, &["--headless", "-u", "1", "-r", "1", "-t", "20s"]);
    let mut worker = start_worker(&dir, "worker", mport, &[], &[]);
    let want = "scenario \"Data\": dataset prompts.jsonl line 3: unknown field `promt`";
    wait_for("the master to show the dataset error", Duration::from_secs(30), || {
        master.output().contains(want).then_some(())
    });
    assert!(master.output().contains("ABORTED"), "{}", tail(&master.output(), 30));
    master.signal("INT");
    let _ = master.wait(Duration::from_secs(30));
    let _ = worker.wait(Duration::from_secs(15));
    assert_eq!(read_jsonl(&log).len(), 0, "no request was sent");
}

/// Proves: `tokenswarm check` reads a scenario's dataset as a run would
/// (relative to the scenarios file) and reports its records, or the bad
/// line and field, with a non-zero exit.
#[test]
fn check_parses_the_dataset_beside_the_scenarios_file() {
    let dir = test_dir("datasets-check");
    std::fs::write(
        dir.join("scenarios.yaml"),
        "scenarios:\n  - {name: D, provider: openai-chat, model: m, prompt_length: 5, output_length: 2, \
         dataset: {path: p.jsonl}}\n",
    )
    .unwrap();
    let check = || {
        let out = std::process::Command::new(bin())
            .arg("check")
            .arg(dir.join("scenarios.yaml"))
            .current_dir("/")
            .output()
            .expect("run tokenswarm check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    std::fs::write(
        dir.join("p.jsonl"),
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"output_length\": 3}\n",
    )
    .unwrap();
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("dataset p.jsonl: 2 records (0 skipped)"), "{text}");
    std::fs::write(
        dir.join("p.jsonl"),
        "{\"prompt\": \"a\"}\n{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let (code, text) = check();
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("p.jsonl line 2: field `messages[0].role` has value \"bot\""),
        "{text}"
    );
}
