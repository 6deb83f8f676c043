//! The fast path of event interpretation (`llm::fast`) against the full
//! parser (`llm::event::full`), issue 12.1.
//!
//! The contract: wherever the fast path answers, its answer is exactly the
//! full parser's (token kind, finish, end, usage, failure). Proved over
//! every recorded stream in tests/fixtures/sse and over a seeded corpus of
//! 200,000 generated events (every provider shape, shuffled keys, random
//! whitespace, escapes, surrogates, raw and invalid UTF-8, unusual keys and
//! values, nulls, nested objects, duplicates), half of them then mutated
//! (truncated, bytes flipped, dropped or repeated). Each event is
//! interpreted as every provider. The corpus is bounded in count, so the
//! test is bounded in time.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenswarm::llm::event::{self, Meaning, TokenKind};
use tokenswarm::llm::scrub::Scrubber;
use tokenswarm::llm::{SseEvent, SseParser, fast};
use tokenswarm::scenario::Provider;

const PROVIDERS: [Provider; 3] = [Provider::OpenaiChat, Provider::OpenaiCompletions, Provider::Anthropic];

/// Checks one event under every provider; returns how many answers the
/// fast path gave, and panics with the event on the first disagreement.
fn check(ev: SseEvent<'_>) -> usize {
    let scrub = Scrubber::default();
    let mut fast_answers = 0;
    for p in PROVIDERS {
        if let Some(m) = fast::interpret(p, ev) {
            let full = event::full(p, ev, &scrub);
            assert_eq!(
                m,
                full,
                "{p:?} event {:?} data {:?}",
                String::from_utf8_lossy(ev.event),
                String::from_utf8_lossy(ev.data)
            );
            fast_answers += 1;
        }
    }
    fast_answers
}

fn fixture_events(name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let path = format!("{}/tests/fixtures/sse/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    SseParser::new()
        .feed(&bytes, |e| out.push((e.event.to_vec(), e.data.to_vec())))
        .expect("fixtures are within the parser's bounds");
    out
}

fn own_provider(name: &str) -> Provider {
    if name.starts_with("anthropic") {
        Provider::Anthropic
    } else if name.starts_with("gemini") {
        Provider::Gemini
    } else if name.contains("completions") {
        Provider::OpenaiCompletions
    } else {
        Provider::OpenaiChat
    }
}

/// Every recorded stream: the two paths agree on every event, and the
/// fast path decides every token, finish and end event of the vLLM and
/// Anthropic recordings itself (only usage and errors go to serde), so the
/// benchmark's fast path is the one these streams take.
#[test]
fn recorded_streams_agree_and_token_events_take_the_fast_path() {
    let dir = format!("{}/tests/fixtures/sse", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sse"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");
    let scrub = Scrubber::default();
    for name in &names {
        let events = fixture_events(name);
        assert!(!events.is_empty(), "{name}");
        for (ev, data) in &events {
            let ev = SseEvent { event: ev, data };
            check(ev);
            let p = own_provider(name);
            let usage_or_error = data.windows(6).any(|w| w == b"usage\"")
                && !data
                    .windows(13)
                    .any(|w| w == b"\"usage\":null}" || w == b"\"usage\": null")
                || data.windows(5).any(|w| w == b"error")
                || data.windows(13).any(|w| w == b"message_start" || w == b"content_block")
                    && !data.windows(19).any(|w| w == b"content_block_delta");
            if name.starts_with("vllm_chat_64") || name.starts_with("vllm_completions") || name == "anthropic_full.sse"
            {
                let full = event::full(p, ev, &scrub);
                if !usage_or_error {
                    assert!(
                        fast::interpret(p, ev).is_some(),
                        "{name}: fast path declined {:?}",
                        String::from_utf8_lossy(data)
                    );
                }
                assert!(full.failure.is_none(), "{name}");
            }
        }
    }
    // The interpretation itself, on the vLLM recording: 64 answer tokens,
    // a finish reason, usage, the end marker.
    let events = fixture_events("vllm_chat_64.sse");
    let metas: Vec<Meaning> = events
        .iter()
        .map(|(e, d)| event::interpret(Provider::OpenaiChat, SseEvent { event: e, data: d }, &scrub))
        .collect();
    assert_eq!(metas.iter().filter(|m| m.token == Some(TokenKind::Answer)).count(), 64);
    assert_eq!(metas.iter().filter(|m| m.finish).count(), 1);
    assert_eq!(metas.iter().filter(|m| m.usage.is_some()).count(), 1);
    assert!(metas.last().unwrap().end);
}

// ------------------------------------------------------ generated corpus

/// Strings as servers write them and as they must not.
const STRINGS: &[&[u8]] = &[
    b"",
    b" tok",
    b"caf\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\\\"quoted\\\"",
    b"back\\\\slash",
    b"\\n\\t\\r\\b\\f\\/",
    b"\\u00e9",
    b"\\u0000",
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00",
    b"\\ud800\\u0041",
    b"\\ud800x",
    b"\\u12",
    b"\\uZZZZ",
    b"\\x",
    b"\x01",
    b"\x7f",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"error",
    b"stop",
    b"content_block_delta",
    b"message_stop",
];

const KNOWN_KEYS: &[&str] = &[
    "choices",
    "usage",
    "error",
    "object",
    "message",
    "delta",
    "text",
    "finish_reason",
    "content",
    "reasoning",
    "reasoning_content",
    "tool_calls",
    "type",
    "content_block",
    "thinking",
    "partial_json",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "index",
];

struct Gen {
    rng: StdRng,
    out: Vec<u8>,
}

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn ws(&mut self) {
        if self.rng.random_bool(0.15) {
            let w: &[u8] = self.pick(&[&b" "[..], b"\n", b"\t", b"\r", b"  "]);
            self.out.extend_from_slice(w);
        }
    }

    fn string(&mut self) {
        self.out.push(b'"');
        let n = self.rng.random_range(1..=3);
        // Mostly valid text (the first ten), sometimes anything.
        let pool = if self.rng.random_bool(0.7) {
            &STRINGS[..10]
        } else {
            STRINGS
        };
        for _ in 0..n {
            let s = self.pick(pool);
            self.out.extend_from_slice(s);
        }
        self.out.push(b'"');
    }

    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn number(&mut self) {
        let n: &str = self.pick(&[
            "0",
            "7",
            "-1",
            "1764750000",
            "3.25",
            "1e3",
            "-0.5E-2",
            "18446744073709551616",
            "1e400",
            "01",
            "1.",
            "-",
            "2e",
            "64",
        ]);
        self.raw(n);
    }

    /// Any value, nested up to `depth`.
    fn value(&mut self, depth: u32) {
        match self.rng.random_range(0..10) {
            0 | 1 => self.string(),
            2 => self.raw("null"),
            3 => {
                let b = self.pick(&["true", "false", "nul", "tru"]);
                self.raw(b)
            }
            4 => self.number(),
            5 | 6 if depth > 0 => {
                let keys: Vec<String> = (0..self.rng.random_range(0..4)).map(|_| self.key()).collect();
                self.object_with(keys.iter().map(String::as_str), |g, _| g.value(depth - 1));
            }
            7 | 8 if depth > 0 => {
                self.out.push(b'[');
                let n = self.rng.random_range(0..4);
                for i in 0..n {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.ws();
                    self.value(depth - 1);
                    self.ws();
                }
                self.out.push(b']');
            }
            _ => self.string(),
        }
    }

    /// A key: mostly known names, sometimes unknown, escaped or non-ASCII.
    fn key(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => "id".into(),
            1 => "model".into(),
            2 => "logprobs".into(),
            3 => "sim".into(),
            4 => "con\\u0074ent".into(),
            5 => "caf\u{e9}".into(),
            _ => self.pick(KNOWN_KEYS).to_string(),
        }
    }

    fn object_with<'k>(&mut self, keys: impl Iterator<Item = &'k str>, mut val: impl FnMut(&mut Gen, &str)) {
        self.out.push(b'{');
        for (i, k) in keys.enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.ws();
            self.out.push(b'"');
            self.raw(k);
            self.out.push(b'"');
            self.ws();
            self.out.push(b':');
            self.ws();
            val(self, k);
            self.ws();
        }
        self.out.push(b'}');
    }

    /// Keys in random order, with random unknown or duplicated extras.
    fn keys(&mut self, base: &[&'static str]) -> Vec<String> {
        let mut keys: Vec<String> = base
            .iter()
            .filter(|_| self.rng.random_bool(0.85))
            .map(|k| k.to_string())
            .collect();
        for _ in 0..self.rng.random_range(0..3) {
            if self.rng.random_bool(0.2) {
                let k = self.key();
                keys.push(k);
            }
        }
        for i in (1..keys.len()).rev() {
            if self.rng.random_bool(0.3) {
                let j = self.rng.random_range(0..=i);
                keys.swap(i, j);
            }
        }
        keys
    }

    /// A value for a known key: mostly the usual shape, sometimes anything.
    fn known(&mut self, key: &str) {
        if self.rng.random_bool(0.08) {
            return self.value(2);
        }
        match key {
            "choices" => {
                self.out.push(b'[');
                let n = self.pick(&[1, 1, 1, 0, 2]);
                for i in 0..n {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    let keys = self.keys(&["index", "delta", "text", "logprobs", "finish_reason", "stop_reason"]);
                    self.object_with(keys.iter().map(String::as_str), |g, k| g.known(k));
                }
                self.out.push(b']');
            }
            "delta" => {
                let keys = self.keys(&[
                    "role",
                    "content",
                    "reasoning_content",
                    "reasoning",
                    "tool_calls",
                    "type",
                    "text",
                    "thinking",
                    "partial_json",
                    "stop_reason",
                ]);
                let keys: Vec<String> = keys.into_iter().filter(|_| self.rng.random_bool(0.5)).collect();
                self.object_with(keys.iter().map(String::as_str), |g, k| g.known(k));
            }
            "tool_calls" => {
                if self.rng.random_bool(0.5) {
                    self.raw("[]")
                } else {
                    self.raw(r#"[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]"#)
                }
            }
            "usage" | "error" | "message" | "content_block" | "system_fingerprint" | "logprobs" | "stop_reason" => {
                if self.rng.random_bool(0.75) {
                    self.raw("null")
                } else {
                    self.value(2)
                }
            }
            "finish_reason" => {
                let v = self.pick(&["null", "null", "\"stop\"", "\"length\"", "\"\""]);
                self.raw(v)
            }
            "object" => {
                let v = self.pick(&["\"chat.completion.chunk\"", "\"text_completion\"", "\"error\"", "null"]);
                self.raw(v)
            }
            "type" => {
                let v = self.pick(&[
                    "\"content_block_delta\"",
                    "\"content_block_delta\"",
                    "\"message_delta\"",
                    "\"message_stop\"",
                    "\"message_start\"",
                    "\"content_block_start\"",
                    "\"content_block_stop\"",
                    "\"text_delta\"",
                    "\"ping\"",
                    "\"error\"",
                    "\"message_\\u0073top\"",
                ]);
                self.raw(v)
            }
            "index" | "created" => self.number(),
            _ => {
                if self.rng.random_bool(0.7) {
                    self.string()
                } else {
                    self.value(1)
                }
            }
        }
    }

    /// One event's data and SSE name.
    fn event(&mut self) -> &'static [u8] {
        self.out.clear();
        let name: &'static [u8] = self.pick(&[
            &b"message"[..],
            b"message",
            b"message",
            b"content_block_delta",
            b"error",
            b"ping",
        ]);
        match self.rng.random_range(0..10) {
            0 => self.raw("[DONE]"),
            1..=5 => {
                let keys = self.keys(&[
                    "id",
                    "object",
                    "created",
                    "model",
                    "system_fingerprint",
                    "choices",
                    "usage",
                ]);
                self.object_with(keys.iter().map(String::as_str), |g, k| g.known(k));
            }
            6..=8 => {
                let keys = self.keys(&["type", "index", "delta", "usage", "message", "content_block"]);
                self.object_with(keys.iter().map(String::as_str), |g, k| g.known(k));
            }
            _ => self.value(3),
        }
        if self.rng.random_bool(0.1) {
            self.ws();
            self.out.insert(0, b' ');
        }
        name
    }

    /// Damages the event: truncation, a flipped, dropped or repeated byte.
    fn mutate(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let at = self.rng.random_range(0..self.out.len());
        match self.rng.random_range(0..4) {
            0 => self.out.truncate(at),
            1 => {
                let b = self.pick(b"{}[]\",:\\ 0e-nu\x00\x0c\xff\xc3");
                self.out[at] = b;
            }
            2 => {
                self.out.remove(at);
            }
            _ => {
                let end = (at + self.rng.random_range(1..8)).min(self.out.len());
                let piece = self.out[at..end].to_vec();
                self.out.splice(at..at, piece);
            }
        }
    }
}

/// 200,000 generated events, half of them mutated, fixed seed: the fast
/// path agrees with the full parser on every one it answers, as every
/// provider. It must also answer a fair share (so agreement is not won by
/// declining everything), decline some, and the corpus must contain events
/// the full parser rejects (so the invalid inputs were exercised).
#[test]
fn generated_and_mutated_corpus_agrees_with_the_full_parser() {
    const EVENTS: usize = 200_000;
    let mut g = Gen {
        rng: StdRng::seed_from_u64(0x0121),
        out: Vec::new(),
    };
    let scrub = Scrubber::default();
    let (mut fast_answers, mut invalid, mut tokens) = (0usize, 0usize, 0usize);
    for i in 0..EVENTS {
        let name = g.event();
        if i % 2 == 1 {
            g.mutate();
        }
        let data = std::mem::take(&mut g.out);
        let ev = SseEvent {
            event: name,
            data: &data,
        };
        fast_answers += check(ev);
        let full = event::full(Provider::OpenaiChat, ev, &scrub);
        invalid += usize::from(full.failure.is_some());
        for p in PROVIDERS {
            tokens += usize::from(fast::interpret(p, ev).is_some_and(|m| m.token.is_some()));
        }
        g.out = data;
    }
    let asked = EVENTS * PROVIDERS.len();
    eprintln!(
        "fast path answered {fast_answers} of {asked}; full parser rejected {invalid} of {EVENTS}; fast token events {tokens}"
    );
    assert!(
        fast_answers > asked / 20,
        "fast path answered {fast_answers} of {asked}"
    );
    assert!(
        fast_answers < asked * 9 / 10,
        "fast path answered {fast_answers} of {asked}"
    );
    assert!(
        invalid > EVENTS / 10,
        "only {invalid} events were rejected by the full parser"
    );
    assert!(
        tokens > EVENTS / 50,
        "only {tokens} token events were decided by the fast path"
    );
}
