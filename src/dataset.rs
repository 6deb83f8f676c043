//! Dataset prompts: a scenario's prompts drawn from a file instead of
//! synthetic token-shaped ones (`scenario.dataset`).
//!
//! Why: latency against prompt *length* is what synthetic prompts answer;
//! real prompt text (ShareGPT, a team's own logs) exercises tokenizers,
//! caches and output lengths as production traffic does.
//!
//! # Formats
//! - `jsonl`: one JSON object a line, either `{"prompt": "text"}` (one user
//!   message) or `{"messages": [{"role": "system"|"user"|"assistant",
//!   "content": "text"}, ..]}`; optional `"output_length"` (a positive
//!   integer: the record's own output length). Blank lines are skipped.
//! - `sharegpt`: records `{"conversations": [{"from": "system"|"human"|
//!   "gpt", "value": "text"}, ..]}` (other fields ignored), as one JSON
//!   array (the published files) or one a line. A record's prompt is its
//!   conversation up to and including the first `human` message; its output
//!   length is the number of whitespace-separated words of the `gpt` reply
//!   that follows (a word count, not the target's tokens). A record with no
//!   `human` message is skipped (counted in [`Prompts::skipped`]).
//!
//! With `output: {kind: dataset}` a record without an output length (no
//! `output_length`, no ShareGPT reply) asks for the scenario's
//! `output_length`.
//!
//! # Where the text comes from
//! The master ships the file's text in `dataset.content` (at most
//! [`MAX_SHIPPED_DATASET_BYTES`]: it rides in every spawn message), or,
//! with `shared_storage: true`, each worker reads `path` itself (at most
//! [`MAX_DATASET_FILE_BYTES`]).
//!
//! # Sampling
//! Every worker shuffles the records with the scenario's `seed` into the
//! same order; worker `index` of `count` takes positions `index`,
//! `index + count`, `index + 2 count`, .. of that order, cycling. So the
//! cluster sends every record once before any repeats, and a worker's
//! share never overlaps another's while the worker count holds.
//!
//! # Bounds
//! Input size as above; at most [`MAX_RECORDS`] records and
//! [`MAX_MESSAGES`] messages a record. serde_json bounds nesting. Errors
//! name the file, the line (JSON-lines) or record (array), and the field.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

use crate::llm::request::Role;
pub use crate::scenario::schema::{MAX_DATASET_FILE_BYTES, MAX_SHIPPED_DATASET_BYTES};
use crate::scenario::{Dataset, DatasetFormat, OutputLength, Scenario};

/// Most records read from one dataset.
pub const MAX_RECORDS: usize = 1_000_000;
/// Most messages in one record.
pub const MAX_MESSAGES: usize = 1_024;

/// A dataset that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("dataset {file}{where_}: {problem}")]
pub struct DatasetError {
    pub file: String,
    /// ` line 3`, ` record 3`, ` line 3, field `messages[1].role``, or empty.
    pub where_: String,
    pub problem: String,
}

/// One prompt of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub messages: Vec<(Role, String)>,
    /// The record's own output length, if it has one.
    pub output_tokens: Option<u64>,
}

/// A parsed dataset and its shared sampling order.
#[derive(Debug)]
pub struct Prompts {
    records: Vec<Record>,
    /// A permutation of `0..records.len()`, the same on every worker.
    order: Vec<u32>,
    /// Records left out (ShareGPT records with no `human` message).
    pub skipped: usize,
    /// Requests this worker has drawn.
    drawn: AtomicU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlRecord {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    output_length: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct ShareGptRecord {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

impl Prompts {
    /// Reads the dataset of `d` (its shipped `content`, or its file with
    /// `shared_storage`) and orders it for sampling.
    pub fn load(d: &Dataset) -> Result<Prompts, DatasetError> {
        let fail = |problem: String| DatasetError {
            file: d.path.clone(),
            where_: String::new(),
            problem,
        };
        let owned;
        let text = match (&d.content, d.shared_storage) {
            (Some(text), _) => text.as_str(),
            (None, true) => {
                owned = read_bounded(&d.path, MAX_DATASET_FILE_BYTES).map_err(fail)?;
                owned.as_str()
            }
            (None, false) => {
                return Err(fail(
                    "the master sent no content (set shared_storage: true if every worker can read the path)".into(),
                ));
            }
        };
        let (records, skipped) = parse(text, d.format, &d.path)?;
        Ok(Prompts::new(records, skipped, d.seed))
    }

    /// `records` in the order `seed` gives.
    pub fn new(records: Vec<Record>, skipped: usize, seed: u64) -> Prompts {
        let mut order: Vec<u32> = (0..records.len() as u32).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        Prompts {
            records,
            order,
            skipped,
            drawn: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The next record of this worker's share: worker `index` of `count`.
    pub fn next(&self, index: u32, count: u32) -> &Record {
        let k = self.drawn.fetch_add(1, Ordering::Relaxed);
        let pos = k.wrapping_mul(u64::from(count.max(1))).wrapping_add(u64::from(index));
        // non-empty: `parse` refuses an empty dataset
        let i = self.order[(pos % self.order.len() as u64) as usize];
        &self.records[i as usize]
    }
}

/// The `max_tokens` of one dataset request (`seq` seeds a uniform draw).
pub fn output_tokens(s: &Scenario, record: &Record, seq: u64) -> u64 {
    let Some(d) = &s.dataset else { return s.output_length };
    match d.output {
        OutputLength::Fixed => s.output_length,
        OutputLength::Dataset => record.output_tokens.unwrap_or(s.output_length).max(1),
        OutputLength::Uniform { min, max } => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(d.seed ^ seq.rotate_left(17));
            rand::Rng::random_range(&mut rng, min..=max.max(min))
        }
    }
}

fn read_bounded(path: &str, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot be read ({e})"))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("is larger than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Parses a dataset's text: its records and how many were skipped.
pub fn parse(text: &str, format: DatasetFormat, file: &str) -> Result<(Vec<Record>, usize), DatasetError> {
    let at = |where_: String, problem: String| DatasetError {
        file: file.to_string(),
        where_,
        problem,
    };
    let mut records = Vec::new();
    let mut skipped = 0usize;
    let mut push = |where_: &dyn Fn() -> String, r: Option<Record>| -> Result<(), DatasetError> {
        match r {
            None => skipped += 1,
            Some(r) => {
                if records.len() >= MAX_RECORDS {
                    return Err(at(where_(), format!("more than {MAX_RECORDS} records")));
                }
                records.push(r);
            }
        }
        Ok(())
    };
    if format == DatasetFormat::Sharegpt && text.trim_start().starts_with('[') {
        let all: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            at(
                format!(" line {}", e.line()),
                format!("is not a JSON array of records: {e}"),
            )
        })?;
        for (i, v) in all.into_iter().enumerate() {
            let where_ = || format!(" record {}", i + 1);
            let r: ShareGptRecord = serde_json::from_value(v).map_err(|e| at(where_(), sharegpt_problem(&e)))?;
            push(&where_, sharegpt(r).map_err(|p| at(where_(), p))?)?;
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let where_ = || format!(" line {}", n + 1);
            let r = match format {
                DatasetFormat::Jsonl => {
                    let r: JsonlRecord = serde_json::from_str(line).map_err(|e| at(where_(), jsonl_problem(&e)))?;
                    Some(jsonl(r).map_err(|p| at(where_(), p))?)
                }
                DatasetFormat::Sharegpt => {
                    let r: ShareGptRecord =
                        serde_json::from_str(line).map_err(|e| at(where_(), sharegpt_problem(&e)))?;
                    sharegpt(r).map_err(|p| at(where_(), p))?
                }
            };
            push(&where_, r)?;
        }
    }
    if records.is_empty() {
        return Err(at(String::new(), format!("has no usable records ({skipped} skipped)")));
    }
    Ok((records, skipped))
}

fn jsonl_problem(e: &serde_json::Error) -> String {
    format!(
        "{e}; each line must be {{\"prompt\": \"..\"}} or {{\"messages\": [{{\"role\": \"user\", \"content\": \"..\"}}]}}, \
         optionally with \"output_length\""
    )
}

fn sharegpt_problem(e: &serde_json::Error) -> String {
    format!("{e}; a ShareGPT record is {{\"conversations\": [{{\"from\": \"human\", \"value\": \"..\"}}, ..]}}")
}

fn jsonl(r: JsonlRecord) -> Result<Record, String> {
    if r.output_length == Some(0) {
        return Err("field `output_length` has value 0; use a positive token count".into());
    }
    let messages = match (r.prompt, r.messages) {
        (Some(p), None) => vec![(Role::User, p)],
        (None, Some(ms)) => {
            if ms.is_empty() || ms.len() > MAX_MESSAGES {
                return Err(format!(
                    "field `messages` has {} messages; use 1 to {MAX_MESSAGES}",
                    ms.len()
                ));
            }
            let mut out = Vec::with_capacity(ms.len());
            for (i, m) in ms.into_iter().enumerate() {
                let role = match m.role.as_str() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(format!(
                            "field `messages[{i}].role` has value {other:?}; valid values: system, user, assistant"
                        ));
                    }
                };
                out.push((role, m.content));
            }
            if !out.iter().any(|(r, _)| *r == Role::User) {
                return Err("field `messages` has no user message".into());
            }
            out
        }
        (Some(_), Some(_)) => return Err("has both `prompt` and `messages`; use one".into()),
        (None, None) => return Err("field `prompt` (or `messages`) is missing".into()),
    };
    Ok(Record {
        messages,
        output_tokens: r.output_length,
    })
}

fn sharegpt(r: ShareGptRecord) -> Result<Option<Record>, String> {
    let mut messages = Vec::new();
    let mut turns = r.conversations.into_iter().enumerate();
    for (i, t) in turns.by_ref() {
        if i >= MAX_MESSAGES {
            return Err(format!(
                "field `conversations` has over {MAX_MESSAGES} turns before a human one"
            ));
        }
        let role = match t.from.as_str() {
            "system" => Role::System,
            "human" | "user" => Role::User,
            "gpt" | "assistant" | "chatgpt" | "bing" | "bard" => Role::Assistant,
            other => {
                return Err(format!(
                    "field `conversations[{i}].from` has value {other:?}; valid values: system, human, gpt"
                ));
            }
        };
        messages.push((role, t.value));
        if role == Role::User {
            break;
        }
    }
    if messages.last().is_none_or(|(r, _)| *r != Role::User) {
        return Ok(None);
    }
    let output_tokens = turns
        .next()
        .map(|(_, t)| t.value.split_whitespace().count() as u64)
        .filter(|n| *n > 0);
    Ok(Some(Record {
        messages,
        output_tokens,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_prompts_and_messages() {
        let text = "{\"prompt\": \"hello there\", \"output_length\": 7}\n\n\
            {\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"why?\"}]}\n";
        let (rs, skipped) = parse(text, DatasetFormat::Jsonl, "d.jsonl").unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(rs[0].messages, vec![(Role::User, "hello there".to_string())]);
        assert_eq!(rs[0].output_tokens, Some(7));
        assert_eq!(rs[1].messages[0], (Role::System, "be brief".to_string()));
        assert_eq!(rs[1].output_tokens, None);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        for (text, want) in [
            (
                "{\"prompt\": \"a\"}\n{\"promt\": \"b\"}\n",
                "dataset d.jsonl line 2: unknown field `promt`",
            ),
            (
                "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
                "dataset d.jsonl line 1: field `messages[0].role` has value \"robot\"",
            ),
            (
                "{\"prompt\": \"a\", \"output_length\": 0}",
                "line 1: field `output_length` has value 0",
            ),
            ("{\"prompt\": 5}", "dataset d.jsonl line 1: invalid type"),
            ("not json", "dataset d.jsonl line 1: expected"),
            ("\n\n", "dataset d.jsonl: has no usable records"),
        ] {
            let e = parse(text, DatasetFormat::Jsonl, "d.jsonl").unwrap_err().to_string();
            assert!(e.starts_with(want) || e.contains(want), "{e} / want {want}");
        }
        let e = parse(
            "[{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}, {\"conversations\": [{\"from\": \"alien\", \"value\": \"b\"}]}]",
            DatasetFormat::Sharegpt,
            "s.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("dataset s.json record 2: field `conversations[0].from`"),
            "{e}"
        );
    }

    #[test]
    fn sharegpt_takes_the_first_human_turn_and_the_reply_length() {
        let text = "[{\"id\": \"x\", \"conversations\": [{\"from\": \"system\", \"value\": \"sys\"}, {\"from\": \"human\", \"value\": \"q one\"}, {\"from\": \"gpt\", \"value\": \"a b c\"}, {\"from\": \"human\", \"value\": \"later\"}]},\n\
            {\"conversations\": [{\"from\": \"gpt\", \"value\": \"orphan\"}]},\n\
            {\"conversations\": [{\"from\": \"human\", \"value\": \"no reply\"}]}]";
        let (rs, skipped) = parse(text, DatasetFormat::Sharegpt, "s.json").unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(rs.len(), 2);
        assert_eq!(
            rs[0].messages,
            vec![(Role::System, "sys".into()), (Role::User, "q one".into())]
        );
        assert_eq!(rs[0].output_tokens, Some(3));
        assert_eq!(rs[1].output_tokens, None);
        // one a line reads the same
        let lines =
            "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a b\"}]}\n";
        let (rs, _) = parse(lines, DatasetFormat::Sharegpt, "s.jsonl").unwrap();
        assert_eq!(rs[0].output_tokens, Some(2));
    }

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                messages: vec![(Role::User, format!("p{i}"))],
                output_tokens: None,
            })
            .collect()
    }

    #[test]
    fn workers_draw_disjoint_shares_covering_the_dataset_before_repeats() {
        let n = 10;
        let workers: Vec<Prompts> = (0..3).map(|_| Prompts::new(records(n), 0, 42)).collect();
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        // 3 workers, 3 + 3 + 4 draws: exactly the dataset, no repeats
        for (w, draws) in [(0u32, 4), (1, 3), (2, 3)] {
            for _ in 0..draws {
                let r = workers[w as usize].next(w, 3);
                *seen.entry(r.messages[0].1.clone()).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), n, "{seen:?}");
        assert!(seen.values().all(|&c| c == 1));
        // the order depends on the seed
        let a: Vec<String> = (0..n).map(|_| workers[0].next(0, 1).messages[0].1.clone()).collect();
        let other = Prompts::new(records(n), 0, 43);
        let b: Vec<String> = (0..n).map(|_| other.next(0, 1).messages[0].1.clone()).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn output_lengths_fixed_from_the_record_or_uniform() {
        let mut cfg = crate::scenario::TestConfig::from_yaml(
            "scenarios:\n  - {name: D, provider: openai-chat, model: m, prompt_length: 5, output_length: 9, \
             dataset: {path: p.jsonl, seed: 4, output: {kind: uniform, min: 3, max: 6}}}\n",
        )
        .unwrap();
        let r = Record {
            messages: vec![(Role::User, "a".into())],
            output_tokens: Some(2),
        };
        let s = &mut cfg.scenarios[0];
        let drawn: std::collections::BTreeSet<u64> = (0..200).map(|seq| output_tokens(s, &r, seq)).collect();
        assert_eq!(drawn, (3..=6).collect(), "every value of [min, max], nothing else");
        assert_eq!(output_tokens(s, &r, 17), output_tokens(s, &r, 17), "seeded per request");
        s.dataset.as_mut().unwrap().output = OutputLength::Dataset;
        assert_eq!(output_tokens(s, &r, 0), 2);
        let bare = Record {
            output_tokens: None,
            ..r.clone()
        };
        assert_eq!(output_tokens(s, &bare, 0), 9, "no length in the record: the scenario's");
        s.dataset.as_mut().unwrap().output = OutputLength::Fixed;
        assert_eq!(output_tokens(s, &r, 0), 9);
    }

    #[test]
    fn read_bounded_refuses_large_and_non_utf8_files() {
        let dir = std::env::temp_dir().join(format!("ts-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("big.jsonl");
        std::fs::write(&p, vec![b'x'; 101]).unwrap();
        let e = read_bounded(p.to_str().unwrap(), 100).unwrap_err();
        assert!(e.contains("larger than 100 bytes"), "{e}");
        std::fs::write(&p, [b'a', 0xff]).unwrap();
        let e = read_bounded(p.to_str().unwrap(), 100).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
