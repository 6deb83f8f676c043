//! Bounded, seeded mutation tests of the SSE reader and the provider
//! interpretation (issue 13, item 9). Real transcripts (tests/fixtures/sse)
//! are mutated (byte flips, insertions of line breaks and JSON-ish bytes,
//! truncations, duplicated or dropped spans, huge lines and events) and fed
//! in random splits. Each iteration proves:
//! - nothing panics (the test would abort);
//! - the parser's buffers never exceed its bounds, and every summary is
//!   bounded (ITL samples, failure text) with exact counts;
//! - the same bytes split differently give exactly the same summary, so no
//!   bound or mutation makes the reader depend on how the network cut it.
//!
//! Small parser bounds (4 KiB lines, 16 KiB events) make "huge" cheap; a
//! few iterations use the real bounds with lines past them. Fixed seeds:
//! a failure names its seed and iteration and replays exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenswarm::llm::sse::{MAX_EVENT_BYTES, MAX_LINE_BYTES};
use tokenswarm::llm::stream::MAX_ITL_SAMPLES;
use tokenswarm::llm::{ResponseReader, SseParser, StreamSummary};
use tokenswarm::outcome::FailureKind;
use tokenswarm::scenario::Provider;
use tokio::time::Instant;

const ITERATIONS: usize = 20_000;
const SMALL_LINE: usize = 4 * 1024;
const SMALL_EVENT: usize = 16 * 1024;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sse/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const FIXTURES: [(&str, Provider); 11] = [
    ("openai_chat_64.sse", Provider::OpenaiChat),
    ("openai_chat_reasoning_crlf.sse", Provider::OpenaiChat),
    ("openai_chat_tools_cr.sse", Provider::OpenaiChat),
    ("openai_empty_answer.sse", Provider::OpenaiChat),
    ("openai_truncated.sse", Provider::OpenaiChat),
    ("vllm_error_after_200.sse", Provider::OpenaiChat),
    ("openai_completions_bom.sse", Provider::OpenaiCompletions),
    ("anthropic_full.sse", Provider::Anthropic),
    ("anthropic_error.sse", Provider::Anthropic),
    ("gemini_thinking_crlf.sse", Provider::Gemini),
    ("gemini_error.sse", Provider::Gemini),
];

/// Bytes that matter to the grammars: line ends, field separators, JSON.
const INTERESTING: &[u8] = b"\n\r:{}[]\",\\ 0a\xEF\xBB\xBF\xFF";

fn mutate(rng: &mut StdRng, input: &[u8], line_limit: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..=6) {
        let len = b.len().max(1);
        match rng.random_range(0..9) {
            // flip a byte
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            // insert an interesting byte
            1 => {
                let i = rng.random_range(0..=b.len());
                b.insert(i, INTERESTING[rng.random_range(0..INTERESTING.len())]);
            }
            // truncate
            2 => b.truncate(rng.random_range(0..len)),
            // drop a span
            3 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..=b.len().min(i + 64));
                b.drain(i..j);
            }
            // duplicate a span (repeated events, repeated fields)
            4 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..=b.len().min(i + 256));
                let span = b[i..j].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, span);
            }
            // a huge line: just under, at or over the line bound
            5 => {
                let n = line_limit - 8 + rng.random_range(0..16);
                let mut line = b"data: ".to_vec();
                line.resize(n, b'x');
                line.extend_from_slice(b"\n\n");
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, line);
            }
            // a huge event: many data lines without a blank line
            6 => {
                let mut ev = Vec::new();
                for _ in 0..rng.random_range(1..40) {
                    ev.extend_from_slice(b"data: ");
                    ev.resize(ev.len() + 1000, b'{');
                    ev.push(b'\n');
                }
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, ev);
            }
            // an endless line (no terminator at all)
            7 => b.resize(b.len() + line_limit + 1, b'y'),
            _ => {}
        }
    }
    b
}

fn cuts(rng: &mut StdRng, len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = (0..rng.random_range(0..12))
        .map(|_| rng.random_range(0..=len))
        .collect();
    c.sort_unstable();
    c
}

/// Reads `input` cut at `cuts`, every chunk at the same instant (so two
/// splits must agree on everything, timings included); checks the bounds
/// after every chunk.
fn read(provider: Provider, input: &[u8], cuts: &[usize], limits: (usize, usize), at: Instant) -> StreamSummary {
    let mut r = ResponseReader::with_parser(provider, 64, SseParser::with_limits(limits.0, limits.1));
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        r.feed(&input[last..c], at);
        last = c;
        let held = r.buffered_capacity();
        assert!(held <= limits.0 + 2 * limits.1, "parser holds {held} bytes");
    }
    r.finish()
}

fn check(s: &StreamSummary) {
    assert!(s.itl_us.len() <= MAX_ITL_SAMPLES);
    let gaps = s.itl_us.len() as u64 + s.itl_tail.count;
    assert_eq!(
        gaps,
        s.output_chunks.saturating_sub(1),
        "one gap per token after the first"
    );
    assert_eq!(
        s.output_chunks,
        s.answer_chunks + s.reasoning_chunks + s.tool_chunks,
        "token kinds add up"
    );
    assert!(s.output_chunks <= s.events);
    if let Some(v) = s.verdict() {
        assert!(v.message().len() <= 1024, "bounded message: {}", v.message().len());
    }
}

#[test]
fn mutated_streams_in_random_splits_never_panic_stay_bounded_and_split_invariant() {
    let inputs: Vec<(Vec<u8>, Provider)> = FIXTURES.iter().map(|(f, p)| (fixture(f), *p)).collect();
    let mut kinds = std::collections::BTreeMap::new();
    let at = Instant::now();
    for seed in [1u64, 2] {
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..ITERATIONS / 2 {
            let (input, provider) = &inputs[rng.random_range(0..inputs.len())];
            let bytes = mutate(&mut rng, input, SMALL_LINE);
            let (a, b) = (cuts(&mut rng, bytes.len()), cuts(&mut rng, bytes.len()));
            let limits = (SMALL_LINE, SMALL_EVENT);
            let sa = read(*provider, &bytes, &a, limits, at);
            let sb = read(*provider, &bytes, &b, limits, at);
            assert_eq!(sa, sb, "seed {seed} iteration {i}: splits {a:?} and {b:?} disagree");
            check(&sa);
            let label = sa.verdict().map(|f| f.kind().label()).unwrap_or_else(|| "ok".into());
            *kinds.entry(label).or_insert(0u32) += 1;
        }
    }
    eprintln!("verdicts over {ITERATIONS} mutated streams: {kinds:?}");
    // The mutations reach every outcome class, bounds included (otherwise
    // this test would prove little).
    for k in [
        "ok",
        "truncated",
        "invalid_response",
        "error_event",
        "sse_line_too_long",
        "sse_event_too_large",
    ] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no {k} in {kinds:?}");
    }
}

#[test]
fn real_bounds_stop_huge_lines_and_events_with_their_kind() {
    let at = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..20 {
        let provider = FIXTURES[i % FIXTURES.len()].1;
        let mut r = ResponseReader::new(provider, 64);
        let (kind, chunk): (FailureKind, Vec<u8>) = if i % 2 == 0 {
            (
                FailureKind::SseLineTooLong,
                b"data: "
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(b'x', 64 * 1024))
                    .collect(),
            )
        } else {
            let mut ev = Vec::new();
            for _ in 0..64 {
                ev.extend_from_slice(b"data: ");
                ev.resize(ev.len() + 1024, b'z');
                ev.push(b'\n');
            }
            (FailureKind::SseEventTooLarge, ev)
        };
        // Feed in random chunk sizes until the reader stops; without the
        // bound this would never stop.
        let mut fed = 0usize;
        loop {
            let n = rng.random_range(1..=chunk.len());
            if r.feed(&chunk[..n], at) == tokenswarm::llm::Flow::Stop {
                break;
            }
            fed += n;
            assert!(
                fed <= 4 * MAX_EVENT_BYTES,
                "iteration {i}: not stopped after {fed} bytes"
            );
            assert!(r.buffered_capacity() <= MAX_LINE_BYTES + 2 * MAX_EVENT_BYTES);
        }
        let s = r.finish();
        assert_eq!(s.verdict().map(|f| f.kind()), Some(kind), "iteration {i}");
        assert!(fed >= MAX_LINE_BYTES / 2, "stopped only near the bound: {fed}");
    }
}

#[test]
fn itl_samples_are_capped_and_the_tail_keeps_counts_exact() {
    let n = MAX_ITL_SAMPLES + 5_000;
    let token = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    let mut r = ResponseReader::new(Provider::OpenaiChat, n);
    let t0 = Instant::now();
    for i in 0..n {
        r.feed(token, t0 + std::time::Duration::from_micros(10 * i as u64));
    }
    r.feed(
        b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        t0,
    );
    let s = r.finish();
    assert_eq!(s.verdict(), None);
    assert_eq!(s.output_chunks, n as u64);
    assert_eq!(s.itl_us.len(), MAX_ITL_SAMPLES);
    assert_eq!(s.itl_tail.count, (n - 1 - MAX_ITL_SAMPLES) as u64);
    assert_eq!(s.itl_tail.sum_us, 10 * s.itl_tail.count);
    assert_eq!(s.itl_tail.max_us, 10);
    assert!(s.itl_us.capacity() <= MAX_ITL_SAMPLES);
}
