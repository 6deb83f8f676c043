//! Secrets out of failure text: every excerpt of server bytes and every
//! failure message passes through a [`Scrubber`] before it is stored.
//!
//! # Why scrubbing is needed at all
//! Requests carry an API key, and careless servers echo it back: in a 401
//! body (`Incorrect API key provided: sk-...`), in an error event, in a
//! body that repeats the request headers. Failure messages go to the
//! master's failures table, the CSV and HTML reports and the logs, so an
//! echoed key would be written to disk on another machine.
//!
//! # Rules
//! - Every occurrence of a secret is replaced by `[redacted]` *before* the
//!   text is cut to an excerpt, so a cut can never leave a key's prefix.
//! - Then every run of at least [`MIN_FRAGMENT`] bytes that also occurs
//!   inside a secret is replaced too: servers often echo a key partly
//!   masked (`sk-live-****4a`) or cut (`sk-live-TOPSEC...`), and bytes cut
//!   from a longer body may end inside a key.
//! - Secrets are the scenario's API key and every scenario header value of
//!   at least [`MIN_FRAGMENT`] bytes (headers may carry credentials too;
//!   shorter values such as `1` would redact ordinary text).
//! - Excerpts are bounded: at most [`EXCERPT_CHARS`] characters of server
//!   text, control characters replaced by spaces; whole messages at most
//!   [`MAX_MESSAGE_BYTES`] bytes.
//!
//! Scrubbing costs O(text × secrets) and runs only on failure paths.

use std::sync::Arc;

/// At most this many characters of server text go into a failure message.
pub const EXCERPT_CHARS: usize = 200;
/// A failure message is cut to this many bytes (on a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Shortest run of secret bytes that is redacted on its own.
pub const MIN_FRAGMENT: usize = 6;

const REDACTED: &str = "[redacted]";

/// The secrets of one scenario; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Arc<[Box<[u8]>]>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

impl Scrubber {
    /// A scrubber for `api_key` (any length) and `other` values (kept when
    /// at least [`MIN_FRAGMENT`] bytes long).
    pub fn new<'a>(api_key: Option<&str>, other: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut secrets: Vec<Box<[u8]>> = Vec::new();
        if let Some(k) = api_key.filter(|k| !k.is_empty()) {
            secrets.push(k.as_bytes().into());
        }
        for v in other {
            if v.len() >= MIN_FRAGMENT && !secrets.iter().any(|s| &s[..] == v.as_bytes()) {
                secrets.push(v.as_bytes().into());
            }
        }
        Scrubber {
            secrets: secrets.into(),
        }
    }

    /// Whether there is anything to scrub.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// A short, single-line, scrubbed excerpt of server-provided bytes.
    pub fn excerpt(&self, bytes: &[u8]) -> String {
        // Only a bounded prefix can reach the excerpt; keep room for a
        // secret that starts inside it so it is still replaced whole.
        let longest = self.secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        let window = (EXCERPT_CHARS * 4).saturating_add(longest);
        let cut = bytes.len() > window;
        let bytes = &bytes[..bytes.len().min(window)];
        let text = self.replace_whole(String::from_utf8_lossy(bytes).into_owned());
        let mut out: String = text
            .chars()
            .take(EXCERPT_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if cut || text.chars().nth(EXCERPT_CHARS).is_some() {
            out.push('…');
        }
        self.redact_fragments(out)
    }

    /// Scrubs a whole message and bounds its length.
    pub fn message(&self, message: String) -> String {
        let mut m = self.redact_fragments(self.replace_whole(message));
        if m.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
            m.push('…');
        }
        m
    }

    fn replace_whole(&self, mut text: String) -> String {
        for s in self.secrets.iter() {
            // Secrets are header values: visible ASCII, hence valid UTF-8.
            if let Ok(s) = std::str::from_utf8(s)
                && text.contains(s)
            {
                text = text.replace(s, REDACTED);
            }
        }
        text
    }

    /// Replaces every run of >= MIN_FRAGMENT bytes found inside a secret.
    fn redact_fragments(&self, text: String) -> String {
        if self.secrets.is_empty() {
            return text;
        }
        let b = text.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < b.len() {
            let run = self.longest_run_at(&b[i..]);
            if run >= MIN_FRAGMENT && text.is_char_boundary(i) && text.is_char_boundary(i + run) {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str(REDACTED);
                i += run;
                copied = i;
            } else {
                i += 1;
            }
        }
        match out {
            None => text,
            Some(mut o) => {
                o.push_str(&text[copied..]);
                o
            }
        }
    }

    /// Length of the longest prefix of `at` that occurs inside a secret.
    fn longest_run_at(&self, at: &[u8]) -> usize {
        let mut best = 0;
        for s in self.secrets.iter() {
            for start in memchr::memchr_iter(at[0], s) {
                let n = s[start..].iter().zip(at).take_while(|(a, b)| a == b).count();
                best = best.max(n);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-TOPSECRET-9f8e7d6c5b4a";

    #[test]
    fn whole_keys_and_fragments_are_redacted_before_and_after_the_cut() {
        let s = Scrubber::new(Some(KEY), ["short", "x-long-header-secret"]);
        let m = s.excerpt(format!(r#"{{"error":"bad key {KEY}, header x-long-header-secret"}}"#).as_bytes());
        assert!(!m.contains("TOPSECRET") && !m.contains("header-secret"), "{m}");
        assert!(m.contains("[redacted]"), "{m}");
        // A key cut by the excerpt bound: the key starts at char 195.
        let body = format!("{}{KEY}", "a".repeat(195));
        let m = s.excerpt(body.as_bytes());
        assert!(!m.contains("sk-li"), "no prefix of the key survives the cut: {m}");
        // Echoed partly masked or cut by the server.
        let m = s.message(format!("Incorrect API key provided: sk-live-****4a, or {}", &KEY[..14]));
        assert!(!m.contains("sk-live-") && !m.contains("TOPS"), "{m}");
        // Ordinary text and short header values are left alone.
        let m = s.message("HTTP 401 Unauthorized: short live".into());
        assert_eq!(m, "HTTP 401 Unauthorized: short live");
    }

    #[test]
    fn excerpts_and_messages_are_bounded() {
        let s = Scrubber::default();
        let m = s.excerpt(&vec![b'x'; 1 << 20]);
        assert_eq!(m.chars().count(), EXCERPT_CHARS + 1);
        let m = s.message("é".repeat(10_000));
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
        assert_eq!(s.excerpt(b"a\nb\x00c"), "a b c");
    }
}
