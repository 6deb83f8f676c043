//! Server-Sent Events framing: bytes in, `(event name, data)` out.
//!
//! The network splits a stream anywhere: inside a line, between CR and LF of
//! a CRLF, inside a multi-byte UTF-8 character, inside the byte-order mark.
//! [`SseParser`] carries exactly the state the WHATWG event-stream grammar
//! needs across chunks (a partial line, a pending CR, a partial BOM, the
//! event being built), so any split of the same bytes yields the same events
//! (tests/llm_sse.rs cuts every fixture at every byte offset to prove it).
//!
//! Supported: LF, CRLF and lone-CR line endings; `:` comment lines
//! (keep-alives); multi-line `data:` joined by LF; `event:` names (default
//! `message`); a leading UTF-8 BOM; `id`/`retry` and unknown fields are
//! ignored. An event is dispatched at a blank line only when its data buffer
//! is non-empty; an unterminated event at end of stream is discarded, as the
//! spec says ([`SseParser::finish`] reports whether one was pending).
//!
//! # Why not `eventsource-stream`
//! The crate was the first choice and remains the oracle in the tests, but
//! it was not used on the hot path, for three measured reasons:
//! - speed: it validates UTF-8, runs nom per line and builds an owned
//!   `Event` (three `String`s) per event. Measured in release on the
//!   project's 2-core dev box with the ignored bench in tests/llm_sse.rs
//!   (`cargo test --release --test llm_sse -- --ignored --nocapture`),
//!   one network chunk per event: framing alone costs 330-470 ns/event with
//!   eventsource-stream (up to 1.6 µs on the Anthropic fixture under load)
//!   against 20-35 ns/event here. Our whole hot path, framing + JSON +
//!   timeline, is 315-375 ns/event on 64-token OpenAI chat streams and
//!   210-370 ns/event on Anthropic streams (ranges: repeated runs on a busy
//!   machine): eventsource-stream's framing alone costs more than that. The budget is ~1.5 µs/event
//!   for everything including HTTP (10,000 requests/s × 64 tokens per core);
//! - it panics on a stream starting with a UTF-8 BOM: it slices one byte
//!   off a three-byte character (`eventsource_stream_panics_on_a_leading_bom`
//!   in tests/llm_sse.rs keeps checking; the oracle strips the BOM). It also
//!   holds back an event whose final CR ends the input;
//! - it is a `Stream` adapter: timestamps would be taken after it yields,
//!   not when the network chunk arrives, and events completed by one chunk
//!   could not share that chunk's arrival time.
//!
//! This parser works on bytes and never allocates per event once its
//! buffers have grown to the largest event: the callback borrows the data.
//!
//! # Bounds (issue 13)
//! The only state that grows with input is the unterminated line and the
//! event being built, so both are bounded; a stream that crosses a bound
//! is not an LLM stream we can measure, and the request fails with a kind
//! of its own instead of taking the worker's memory (one endless line took
//! a worker from 9 MB to 3 GB in 10 s before these bounds):
//!
//! | buffer | bound | crossing it |
//! |---|---|---|
//! | one line (field name + value, without its terminator) | [`MAX_LINE_BYTES`] = 256 KiB | [`SseError::LineTooLong`] |
//! | one event (joined `data` + `event` name) | [`MAX_EVENT_BYTES`] = 1 MiB | [`SseError::EventTooLarge`] |
//!
//! Why these numbers: the largest events real servers send are a few KiB
//! (a chunk with logprobs, a tool-call fragment, Anthropic's
//! `message_start`); 256 KiB per line is 50x that, and an event may span
//! several such lines. Buffers never reserve more than their bound, so one
//! request holds at most 1.25 MiB here, whatever the server sends. The
//! check depends only on line and event lengths, never on how the bytes
//! were split, so every split of a stream fails at the same event. After an
//! error the parser frees its buffers and ignores further input.

/// One dispatched event. `data` has its trailing LF removed; `event` is
/// `b"message"` when the stream named none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

/// Longest line (without its terminator) the parser accepts.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Largest event (data lines joined by LF, plus the event name) it accepts.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The stream crossed one of the parser's bounds; nothing after it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an SSE line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("an SSE event is larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Appends `bytes` (and `then`, if any) to `buf` unless that would make it
/// longer than `limit`; never reserves capacity beyond `limit`.
fn push_bounded(buf: &mut Vec<u8>, bytes: &[u8], then: Option<u8>, limit: usize) -> bool {
    let need = buf
        .len()
        .saturating_add(bytes.len())
        .saturating_add(usize::from(then.is_some()));
    if need > limit {
        return false;
    }
    if need > buf.capacity() {
        let grown = buf.capacity().saturating_mul(2).clamp(need, limit);
        buf.reserve_exact(grown - buf.len());
    }
    buf.extend_from_slice(bytes);
    buf.extend(then);
    true
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
/// `bom` value once the start of the stream has been decided.
const BOM_DONE: u8 = u8::MAX;

/// Incremental SSE parser; feed it chunks in order with [`SseParser::feed`].
#[derive(Debug, Clone)]
pub struct SseParser {
    /// The unterminated line carried over from earlier chunks.
    line: Vec<u8>,
    /// Data buffer of the event being built (each line followed by LF).
    data: Vec<u8>,
    /// Event type buffer of the event being built.
    event: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF completes that CRLF.
    after_cr: bool,
    /// BOM bytes matched at the stream start (0..=3), or [`BOM_DONE`].
    bom: u8,
    /// Set once a bound was crossed; the parser then ignores its input.
    error: Option<SseError>,
    max_line: usize,
    max_event: usize,
}

impl Default for SseParser {
    fn default() -> SseParser {
        SseParser::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser with the default bounds ([`MAX_LINE_BYTES`], [`MAX_EVENT_BYTES`]).
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// A parser with other bounds (tests use small ones).
    pub fn with_limits(max_line: usize, max_event: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            after_cr: false,
            bom: 0,
            error: None,
            max_line,
            max_event,
        }
    }

    /// Parses `chunk`, calling `on_event` for every event it completes.
    /// Once a bound is crossed it returns that error, now and on every
    /// later call; the events completed before the offending line were
    /// delivered.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) -> Result<(), SseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.bom != BOM_DONE {
            while (self.bom as usize) < BOM.len() {
                let Some(&b) = chunk.first() else { return Ok(()) };
                if b != BOM[self.bom as usize] {
                    // Not a BOM after all: the matched bytes are content.
                    let matched = self.bom as usize;
                    self.bom = BOM_DONE;
                    if let Err(e) = self.lines(&BOM[..matched], &mut on_event) {
                        return Err(self.poison(e));
                    }
                    break;
                }
                self.bom += 1;
                chunk = &chunk[1..];
            }
            self.bom = BOM_DONE;
        }
        self.lines(chunk, &mut on_event).map_err(|e| self.poison(e))
    }

    /// The bound crossed so far, if any.
    pub fn error(&self) -> Option<SseError> {
        self.error
    }

    /// Bytes held in the parser's buffers (their capacity), for tests.
    pub fn buffered_capacity(&self) -> usize {
        self.line.capacity() + self.data.capacity() + self.event.capacity()
    }

    fn poison(&mut self, e: SseError) -> SseError {
        self.error = Some(e);
        self.line = Vec::new();
        self.data = Vec::new();
        self.event = Vec::new();
        e
    }

    /// Ends the stream. Returns true when an event had started (data or
    /// fields seen) but was never terminated by a blank line; it is dropped.
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || !self.data.is_empty() || !self.event.is_empty();
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.after_cr = false;
        pending
    }

    fn lines(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) -> Result<(), SseError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let too_long = SseError::LineTooLong { limit: self.max_line };
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            if self.line.is_empty() {
                if i > self.max_line {
                    return Err(too_long);
                }
                self.line_done(&chunk[..i], on_event)?;
            } else {
                if !push_bounded(&mut self.line, &chunk[..i], None, self.max_line) {
                    return Err(too_long);
                }
                let line = std::mem::take(&mut self.line);
                let done = self.line_done(&line, on_event);
                self.line = line;
                self.line.clear();
                done?;
            }
            let cr = chunk[i] == b'\r';
            chunk = &chunk[i + 1..];
            if cr {
                match chunk.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                }
            }
        }
        if !push_bounded(&mut self.line, chunk, None, self.max_line) {
            return Err(too_long);
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) -> Result<(), SseError> {
        if line.is_empty() {
            if !self.data.is_empty() {
                let data = &self.data[..self.data.len() - 1];
                let event: &[u8] = if self.event.is_empty() { b"message" } else { &self.event };
                on_event(SseEvent { event, data });
            }
            self.data.clear();
            self.event.clear();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // The event's size is its data (each line + LF) plus its name.
        let room = self.max_event.saturating_sub(self.event.len());
        let fits = match field {
            b"data" => push_bounded(&mut self.data, value, Some(b'\n'), room),
            b"event" => {
                self.event.clear();
                let room = self.max_event.saturating_sub(self.data.len());
                push_bounded(&mut self.event, value, None, room)
            }
            _ => true,
        };
        if fits {
            Ok(())
        } else {
            Err(SseError::EventTooLarge { limit: self.max_event })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<(String, String)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[last..c], |e| {
                out.push((
                    String::from_utf8_lossy(e.event).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            })
            .unwrap();
            last = c;
        }
        out
    }

    #[test]
    fn line_endings_comments_multiline_and_names() {
        let s = b"\xEF\xBB\xBF: hi\r\nevent: a\r\ndata: x\r\ndata:y\r\n\r\ndata: z\r\rid: 1\nretry: 5\nfoo\ndata\n\n";
        let want = vec![
            ("a".to_string(), "x\ny".to_string()),
            ("message".to_string(), "z".to_string()),
            ("message".to_string(), "".to_string()),
        ];
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(parse_split(s, &[i, j]), want, "cuts {i} {j}");
            }
        }
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing_and_reset_the_name() {
        assert_eq!(
            parse_split(b"event: x\n\ndata: 1\n\n", &[]),
            vec![("message".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn not_a_bom_is_content_and_finish_reports_pending() {
        // The stray byte belongs to the first field name, which is then unknown.
        assert_eq!(
            parse_split(b"\xEFdata: 1\n\ndata: 2\n\n", &[1]),
            vec![("message".to_string(), "2".to_string())]
        );
        let mut p = SseParser::new();
        p.feed(b"data: 1\n", |_| panic!("dispatched early")).unwrap();
        assert!(p.finish());
        assert!(!p.finish());
    }
}
