//! The fast path of event interpretation: a byte scanner for the shapes
//! token chunks have, with no serde and no allocation.
//!
//! # Why
//! A 64-token answer is about 66 events, and the full parser
//! ([`super::event::full`]) costs most of the worker's CPU per request on a
//! whole-answer body: serde_json walks every key of every chunk (`id`,
//! `object`, `created`, `model`, `system_fingerprint`, `logprobs`, ...)
//! through its visitor machinery and validates the UTF-8 of every key it
//! matches. What a chunk *means* depends on a handful of bytes: which of a
//! few keys hold a non-empty value.
//!
//! # Contract
//! [`interpret`] returns `Some(meaning)` only when that is exactly what the
//! full parser would return, and `None` ("ask the full parser") otherwise.
//! So the scanner may be incomplete but never different; it answers `None`
//! for everything that is not a plain token, finish or end event:
//! - usage, `error`, `message`, `content_block` and any other
//!   interpretation-bearing value that is not `null`;
//! - the SSE event name `error`; an Anthropic event of type `error`;
//! - keys with escapes or non-ASCII bytes (serde decodes and validates
//!   them), a known key twice (serde rejects duplicates), values of a type
//!   serde would treat specially (numbers or objects where text is
//!   expected, a struct written as an array, ...), nesting deeper than 64;
//! - anything that is not valid JSON, so every failure message comes from
//!   serde_json.
//!
//! It still checks the whole event as strictly as serde_json does, because
//! a malformed chunk must fail the request whichever path sees it: string
//! escapes and control characters everywhere, numbers by the JSON grammar,
//! commas and brackets. It validates UTF-8 only where serde does, in the
//! few strings whose value matters (content text, tags), and only when they
//! hold a non-ASCII byte: ignored values (`id`, `model`, ...) are skipped
//! byte-wise, as serde_json's own `ignore_str` skips them.
//!
//! Gemini events always take the full parser (`None`).
//!
//! tests/llm_fast_path.rs holds the scanner to this contract over recorded
//! streams of every format and a large seeded corpus of generated and
//! mutated events, and checks that the recorded token events do take the
//! fast path.

use super::event::{Meaning, anthropic_delta_token, openai_token};
use super::sse::SseEvent;
use crate::scenario::Provider;

/// The meaning of `ev` if the scanner is sure of it (see the module docs).
pub fn interpret(provider: Provider, ev: SseEvent<'_>) -> Option<Meaning> {
    match provider {
        Provider::OpenaiChat | Provider::OpenaiCompletions => openai(ev),
        Provider::Anthropic => anthropic(ev),
        // Gemini's events go to the full parser: its streams are few and
        // short-lived next to OpenAI-compatible servers', so no scanner yet.
        Provider::Gemini => None,
    }
}

fn openai(ev: SseEvent<'_>) -> Option<Meaning> {
    if ev.event == b"error" {
        return None;
    }
    let data = ev.data.trim_ascii();
    if data == b"[DONE]" {
        return Some(Meaning {
            end: true,
            ..Meaning::default()
        });
    }
    let mut c = Cur { b: data, i: 0 };
    let (mut answer, mut tool, mut reasoning, mut finish) = (false, false, false, false);
    let mut seen = Seen::default();
    c.object(|c, key| match key {
        b"choices" => {
            seen.once(0)?;
            if c.null()? {
                return Some(());
            }
            c.array(|c| {
                let mut seen = Seen::default();
                c.object(|c, key| match key {
                    b"text" => {
                        seen.once(0)?;
                        answer |= c.non_empty()?;
                        Some(())
                    }
                    b"finish_reason" => {
                        seen.once(1)?;
                        finish |= c.non_empty()?;
                        Some(())
                    }
                    b"delta" => {
                        seen.once(2)?;
                        if c.null()? {
                            return Some(());
                        }
                        let [content, tools, reasoning_content, reasoning_text] =
                            c.presence([b"content", b"tool_calls", b"reasoning_content", b"reasoning"])?;
                        answer |= content;
                        tool |= tools;
                        reasoning |= reasoning_content | reasoning_text;
                        Some(())
                    }
                    _ => c.skip_value(),
                })
            })
        }
        b"usage" => seen.once(1).and_then(|_| c.null()?.then_some(())),
        b"error" => seen.once(2).and_then(|_| c.null()?.then_some(())),
        b"object" => {
            seen.once(3)?;
            if c.null()? {
                return Some(());
            }
            let (raw, escaped) = c.string()?;
            (!escaped && raw != b"error").then_some(())
        }
        b"message" => {
            seen.once(4)?;
            if !c.null()? {
                c.string()?;
            }
            Some(())
        }
        _ => c.skip_value(),
    })?;
    c.end()?;
    Some(Meaning {
        token: openai_token(answer, tool, reasoning),
        finish,
        ..Meaning::default()
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnType {
    ContentBlockDelta,
    MessageStart,
    ContentBlockStart,
    MessageDelta,
    MessageStop,
    Other,
}

fn anthropic(ev: SseEvent<'_>) -> Option<Meaning> {
    if ev.event == b"ping" {
        return Some(Meaning::default());
    }
    if ev.event == b"error" {
        return None;
    }
    let data = ev.data.trim_ascii();
    let mut c = Cur { b: data, i: 0 };
    let mut kind = AnType::Other;
    let (mut text, mut partial_json, mut thinking, mut stop) = (false, false, false, false);
    let mut seen = Seen::default();
    c.object(|c, key| match key {
        b"type" => {
            seen.once(0)?;
            let (raw, escaped) = c.string()?;
            if escaped {
                return None;
            }
            kind = match raw {
                b"content_block_delta" => AnType::ContentBlockDelta,
                b"message_start" => AnType::MessageStart,
                b"content_block_start" => AnType::ContentBlockStart,
                b"message_delta" => AnType::MessageDelta,
                b"message_stop" => AnType::MessageStop,
                b"error" => return None,
                _ => AnType::Other,
            };
            Some(())
        }
        b"delta" => {
            seen.once(1)?;
            if c.null()? {
                return Some(());
            }
            [text, partial_json, thinking, stop] =
                c.presence([b"text", b"partial_json", b"thinking", b"stop_reason"])?;
            Some(())
        }
        b"message" => seen.once(2).and_then(|_| c.null()?.then_some(())),
        b"content_block" => seen.once(3).and_then(|_| c.null()?.then_some(())),
        b"usage" => seen.once(4).and_then(|_| c.null()?.then_some(())),
        b"error" => seen.once(5).and_then(|_| c.null()?.then_some(())),
        _ => c.skip_value(),
    })?;
    c.end()?;
    let mut m = Meaning::default();
    match kind {
        AnType::ContentBlockDelta => m.token = anthropic_delta_token(text, partial_json, thinking),
        AnType::MessageDelta => m.finish = stop,
        AnType::MessageStop => m.end = true,
        // Their interesting parts (usage, content_block) are not `null`
        // only when the full parser is asked.
        AnType::MessageStart | AnType::ContentBlockStart | AnType::Other => {}
    }
    Some(m)
}

/// Known keys seen in one object, to refuse duplicates as serde does.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn once(&mut self, bit: u8) -> Option<()> {
        let m = 1 << bit;
        if self.0 & m != 0 {
            return None;
        }
        self.0 |= m;
        Some(())
    }
}

/// Deepest nesting the scanner skips; deeper values go to serde.
const MAX_DEPTH: u32 = 64;

/// Whether any byte of `x` is `"`, `\` or below 0x20. Each test is the
/// exact "some byte is zero / below n" word trick: a borrow can only start
/// at a byte that really matches, so there are no false answers either way.
fn has_special_byte(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    (quote | backslash | control) != 0
}

/// A cursor over one event's JSON. Every method returns `None` where the
/// full parser must decide (invalid or unusual input).
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    /// Skips JSON whitespace and returns the next byte without taking it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.b.get(self.i) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.i += 1;
        }
        None
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// `null` (taken) or something else (left for the caller).
    fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null")?;
        Some(true)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `{ "key": value, ... }`; `f` must consume each value. Keys with
    /// escapes or non-ASCII bytes are left to serde.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.i;
            loop {
                let b = *self.b.get(self.i)?;
                if b == b'"' {
                    break;
                }
                if b == b'\\' || !(0x20..0x80).contains(&b) {
                    return None;
                }
                self.i += 1;
            }
            let key = &self.b[start..self.i];
            self.i += 1;
            self.eat(b':')?;
            self.peek()?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `[ value, ... ]`; `f` must consume each value.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object of which only `keys` matter: for each, whether it is
    /// present and non-empty ([`Cur::non_empty`]); each at most once (a
    /// duplicate goes to serde), every other key skipped.
    fn presence<const N: usize>(&mut self, keys: [&[u8]; N]) -> Option<[bool; N]> {
        let mut found = [false; N];
        let mut seen = Seen::default();
        self.object(|c, key| match keys.iter().position(|k| *k == key) {
            Some(i) => {
                seen.once(i as u8)?;
                found[i] |= c.non_empty()?;
                Some(())
            }
            None => c.skip_value(),
        })?;
        Some(found)
    }

    /// The "present" test of the full parser (`NonEmpty`) for the values
    /// it can decide alone: a string (validated as serde validates it),
    /// `null`, a boolean, an array (empty or not). Numbers and objects go
    /// to serde.
    fn non_empty(&mut self) -> Option<bool> {
        match self.peek()? {
            b'"' => Some(!self.string()?.0.is_empty()),
            b'n' => self.literal(b"null").map(|_| false),
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| true),
            b'[' => {
                let at = self.i;
                self.i += 1;
                let empty = self.peek()? == b']';
                self.i = at;
                self.skip_value()?;
                Some(!empty)
            }
            _ => None,
        }
    }

    /// A string whose value matters, checked as serde_json checks a string
    /// it decodes: valid escapes, paired surrogates, no control
    /// characters, valid UTF-8 (looked at only if a byte is non-ASCII).
    /// Returns the raw bytes between the quotes and whether they hold an
    /// escape (a decoded string is empty exactly when its raw form is).
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let (mut escaped, mut ascii) = (false, true);
        loop {
            let b = *self.b.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            self.i += 1;
                            let n = self.hex4()?;
                            if (0xDC00..=0xDFFF).contains(&n) {
                                return None;
                            }
                            if (0xD800..=0xDBFF).contains(&n) {
                                self.literal(b"\\u")?;
                                if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                    return None;
                                }
                            }
                        }
                        _ => return None,
                    }
                }
                0..0x20 => return None,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        let raw = &self.b[start..self.i - 1];
        if !ascii && std::str::from_utf8(raw).is_err() {
            return None;
        }
        Some((raw, escaped))
    }

    fn hex4(&mut self) -> Option<u16> {
        let end = self.i.checked_add(4)?;
        let digits = self.b.get(self.i..end)?;
        let mut n = 0u16;
        for &d in digits {
            n = n << 4 | (d as char).to_digit(16)? as u16;
        }
        self.i = end;
        Some(n)
    }

    /// Skips a string whose value does not matter, as serde_json's
    /// `ignore_str` does: escapes and control characters are checked,
    /// UTF-8 is not.
    fn skip_string(&mut self) -> Option<()> {
        self.i += 1; // the opening quote, seen by the caller
        loop {
            // Eight bytes at a time while none of them can end the string,
            // start an escape or be a control character: ids, model names
            // and the like are mostly such runs (the byte loop below decides
            // every special byte exactly as before).
            while let Some(w) = self.b.get(self.i..self.i.wrapping_add(8))
                && let Ok(w) = <[u8; 8]>::try_from(w)
                && !has_special_byte(u64::from_le_bytes(w))
            {
                self.i += 8;
            }
            let b = *self.b.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => return Some(()),
                b'\\' => match *self.b.get(self.i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                    b'u' => {
                        self.i += 1;
                        self.hex4()?;
                    }
                    _ => return None,
                },
                0..0x20 => return None,
                _ => {}
            }
        }
    }

    /// Skips a number by the JSON grammar (serde_json's `ignore_integer`).
    fn skip_number(&mut self) -> Option<()> {
        let digits = |c: &mut Self| {
            let start = c.i;
            while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            c.i > start
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match *self.b.get(self.i)? {
            b'0' => {
                self.i += 1;
                if self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self).then_some(())?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            digits(self).then_some(())?;
        }
        Some(())
    }

    /// Skips any value whose content does not matter.
    fn skip_value(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            b'[' if depth < MAX_DEPTH => self.array(|c| c.skip_at(depth + 1)),
            b'{' if depth < MAX_DEPTH => {
                // Keys of ignored objects are skipped like any string.
                self.i += 1;
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if self.peek()? != b'"' {
                        return None;
                    }
                    self.skip_string()?;
                    self.eat(b':')?;
                    self.skip_at(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word test agrees with the byte-by-byte definition for every
    /// byte value in every position (the rest of the word plain letters).
    #[test]
    fn has_special_byte_matches_the_byte_definition() {
        for pos in 0..8 {
            for v in 0..=255u8 {
                let mut w = *b"abcdefgh";
                w[pos] = v;
                let want = w.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
                assert_eq!(has_special_byte(u64::from_le_bytes(w)), want, "byte {v:#x} at {pos}");
            }
        }
        // Bytes at and above 0x80 (UTF-8) and just above the limits are plain.
        assert!(!has_special_byte(u64::from_le_bytes([
            0x80, 0xff, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0xc3
        ])));
    }
    use crate::llm::event::TokenKind;

    fn chat(data: &str) -> Option<Meaning> {
        interpret(
            Provider::OpenaiChat,
            SseEvent {
                event: b"message",
                data: data.as_bytes(),
            },
        )
    }

    #[test]
    fn vllm_content_chunk_is_an_answer_token_and_usage_falls_back() {
        let m = chat(
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" caf\u00e9"},"logprobs":null,"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(m.token, Some(TokenKind::Answer));
        assert!(!m.finish && !m.end);
        assert_eq!(chat(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#), None);
        assert_eq!(chat(r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#), None);
        assert_eq!(chat(r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#), None);
    }
}
