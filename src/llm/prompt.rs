//! Exact-length, token-shaped prompts (docs/contracts.md §1).
//!
//! Why words: a load test must send a known number of prompt tokens without
//! shipping a tokenizer per model. Following tokenflood, the unit words are
//! the capital letters `A`..`Z`, each one token in GPT, Llama and Qwen
//! vocabularies once preceded by a space; the simulator counts whitespace
//! words, so on it the target and the server's `usage` agree exactly.
//!
//! Layout of a prompt of `prompt_length` words, single-space separated:
//! 1. `prefix_length` letters, a pseudo-random sequence seeded by the
//!    scenario name: identical for every request of the scenario, so a
//!    server's prefix cache can hit exactly this much;
//! 2. a per-request unique part: `request_seq` (mixed with a per-process
//!    salt) written in base 26 as up to [`UNIQUE_WORDS`] letters, so the
//!    full prompt never repeats and caching cannot extend past the prefix;
//!    the mix makes the first unique letter differ between consecutive
//!    requests, so even the unique part shares no leading run;
//! 3. filler letters (fixed per scenario);
//! 4. the [`TASK`] sentence asking for a very long answer, so the model
//!    keeps generating until `max_tokens` cuts it at the target length.
//!    When the non-prefix part is too short to hold the task and at least one
//!    unique word, the prompt is letters only.
//!
//! Cost: everything except the unique part is built once in
//! [`PromptBuilder::new`]; [`PromptBuilder::write`] is three `memcpy`s and
//! at most 14 letters, with no allocation when `out` has capacity.

/// The instruction appended to every prompt that has room for it. Plain
/// ASCII without quotes or backslashes, so it needs no JSON escaping.
pub const TASK: &str = "Ignore the letters above and write a very long essay about the history of writing. Never stop.";

/// Maximum number of letters of the per-request unique part: 26^14 > 2^64,
/// so 14 base-26 digits encode every `u64` request number injectively.
pub const UNIQUE_WORDS: usize = 14;

/// Builds the prompts of one scenario; see the module docs for the layout.
#[derive(Clone)]
pub struct PromptBuilder {
    /// Shared prefix words, followed by one space when more words follow.
    prefix: Vec<u8>,
    /// Letters of the unique part (0 when the prompt is all prefix).
    unique_words: usize,
    /// Filler and task, starting with a space (empty when nothing follows).
    tail: Vec<u8>,
    prompt_length: u64,
    prefix_length: u64,
    salt: u64,
}

impl std::fmt::Debug for PromptBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptBuilder")
            .field("prompt_length", &self.prompt_length)
            .field("prefix_length", &self.prefix_length)
            .field("unique_words", &self.unique_words)
            .finish_non_exhaustive()
    }
}

/// A small deterministic generator (SplitMix64); quality is ample for
/// picking letters and it keeps prompts reproducible across platforms.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn letter(&mut self) -> u8 {
        b'A' + (self.next() % 26) as u8
    }
}

/// SplitMix64's finalizer: a bijection on `u64`, so distinct request numbers
/// stay distinct after mixing.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a stable seed from the scenario name (std's hasher is not stable).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn push_letters(out: &mut Vec<u8>, rng: &mut SplitMix, n: u64) {
    for i in 0..n {
        if i > 0 {
            out.push(b' ');
        }
        out.push(rng.letter());
    }
}

impl PromptBuilder {
    /// Prompts of exactly `prompt_length` words whose first `prefix_length`
    /// words are shared (clamped to `prompt_length`). Salt 0; see
    /// [`PromptBuilder::with_salt`].
    pub fn new(scenario_name: &str, prompt_length: u64, prefix_length: u64) -> PromptBuilder {
        PromptBuilder::with_task(scenario_name, prompt_length, prefix_length, TASK)
    }

    /// [`PromptBuilder::new`] ending in `task` instead of [`TASK`]; `task`
    /// goes into JSON bodies as it is, so it must need no escaping (the
    /// schema's `TASK_PATTERN`).
    pub fn with_task(scenario_name: &str, prompt_length: u64, prefix_length: u64, task: &str) -> PromptBuilder {
        let prefix_length = prefix_length.min(prompt_length);
        let rest = prompt_length - prefix_length;
        let seed = fnv1a(scenario_name);

        let mut prefix = Vec::with_capacity(prefix_length as usize * 2);
        push_letters(&mut prefix, &mut SplitMix(seed), prefix_length);
        if prefix_length > 0 && rest > 0 {
            prefix.push(b' ');
        }

        let task_words = task.split_whitespace().count() as u64;
        let with_task = rest > task_words;
        let room = if with_task { rest - task_words } else { rest };
        let unique_words = room.min(UNIQUE_WORDS as u64);
        let filler = room - unique_words;

        let mut tail = Vec::with_capacity(filler as usize * 2 + task.len() + 1);
        let mut filler_rng = SplitMix(seed ^ 0x5EED_F111_E500_0000);
        for _ in 0..filler {
            tail.push(b' ');
            tail.push(filler_rng.letter());
        }
        if with_task {
            tail.push(b' ');
            tail.extend_from_slice(task.as_bytes());
        }
        PromptBuilder {
            prefix,
            unique_words: unique_words as usize,
            tail,
            prompt_length,
            prefix_length,
            salt: 0,
        }
    }

    /// Mixes `salt` into the unique part so that processes numbering their
    /// requests from 0 (several workers, or a re-run against a warm server)
    /// still send prompts the server has not cached.
    pub fn with_salt(mut self, salt: u64) -> PromptBuilder {
        self.salt = salt;
        self
    }

    pub fn prompt_length(&self) -> u64 {
        self.prompt_length
    }

    pub fn prefix_length(&self) -> u64 {
        self.prefix_length
    }

    /// The shared prefix words (without the separating space).
    pub fn prefix(&self) -> &str {
        // Built from ASCII letters and spaces only.
        std::str::from_utf8(&self.prefix).unwrap_or_default().trim_end()
    }

    /// Bytes of every prompt of this builder.
    pub fn len_bytes(&self) -> usize {
        self.prefix.len() + (self.unique_words * 2).saturating_sub(1) + self.tail.len()
    }

    /// Appends the prompt of request `seq` to `out` (ASCII, JSON-safe).
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        let mut x = mix64(seq.wrapping_add(self.salt));
        for i in 0..self.unique_words {
            if i > 0 {
                out.push(b' ');
            }
            out.push(b'A' + (x % 26) as u8);
            x /= 26;
        }
        out.extend_from_slice(&self.tail);
    }

    /// The prompt of request `seq` as a `String`.
    pub fn build(&self, seq: u64) -> String {
        let mut out = Vec::with_capacity(self.len_bytes());
        self.write(seq, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn exact_word_counts_for_all_shapes() {
        for prompt_length in [1u64, 2, 5, 14, 15, 17, 18, 19, 20, 31, 32, 33, 64, 100, 1000, 4097] {
            for prefix_length in [0u64, 1, 7, 16, prompt_length / 2, prompt_length.saturating_sub(1)] {
                let prefix_length = prefix_length.min(prompt_length.saturating_sub(1));
                let b = PromptBuilder::new("ChatShort", prompt_length, prefix_length);
                for seq in [0u64, 1, 2, 25, 26, 1 << 40, u64::MAX] {
                    let p = b.build(seq);
                    assert_eq!(
                        words(&p).len() as u64,
                        prompt_length,
                        "prompt_length {prompt_length} prefix {prefix_length} seq {seq}: {p:?}"
                    );
                    assert!(!p.contains("  ") && !p.starts_with(' ') && !p.ends_with(' '), "{p:?}");
                    assert_eq!(p.len(), b.len_bytes());
                }
            }
        }
    }

    #[test]
    fn prefix_is_shared_and_rest_differs() {
        let b = PromptBuilder::new("Chat", 200, 64).with_salt(7);
        let other = PromptBuilder::new("Chat", 200, 64).with_salt(8);
        let prompts: Vec<String> = (0..500).map(|s| b.build(s)).collect();
        let prefix = words(&prompts[0])[..64].to_vec();
        assert_eq!(words(b.prefix()), prefix);
        let mut rests = std::collections::HashSet::new();
        for p in &prompts {
            let w = words(p);
            assert_eq!(w[..64], prefix[..]);
            assert!(rests.insert(w[64..].join(" ")), "rest repeated");
        }
        // the first non-prefix word differs between most consecutive requests
        let differing = prompts
            .windows(2)
            .filter(|w| words(&w[0])[64] != words(&w[1])[64])
            .count();
        assert!(differing > 450, "{differing}");
        // same scenario name, same prefix, regardless of salt; other salt, other rest
        assert_eq!(other.prefix(), b.prefix());
        assert_ne!(other.build(0), b.build(0));
        // another scenario name gives another prefix
        assert_ne!(PromptBuilder::new("Other", 200, 64).prefix(), b.prefix());
    }

    #[test]
    fn long_prompts_end_with_the_task_short_ones_are_letters_only() {
        let b = PromptBuilder::new("S", 100, 10);
        assert!(b.build(3).ends_with(TASK));
        let task_words = TASK.split_whitespace().count() as u64;
        let short = PromptBuilder::new("S", task_words + 3, 3).build(1);
        assert!(!short.contains("essay"));
        assert!(
            short
                .split(' ')
                .all(|w| w.len() == 1 && w.as_bytes()[0].is_ascii_uppercase())
        );
        let just_fits = PromptBuilder::new("S", task_words + 4, 3).build(1);
        assert!(just_fits.ends_with(TASK));
    }

    /// A scenario's own task (tokenflood's) replaces the default one and
    /// still fills the prompt to exactly `prompt_length` words.
    #[test]
    fn a_custom_task_ends_the_prompt_at_the_same_length() {
        let task = "Task: Count up to 10000 naming each individual number like this: 1 2 3 4";
        let b = PromptBuilder::with_task("S", 100, 10, task);
        let p = b.build(3);
        assert!(p.ends_with(task) && !p.contains(TASK), "{p}");
        assert_eq!(words(&p).len(), 100);
    }

    #[test]
    fn prefix_only_prompt_and_deterministic_prefix() {
        let b = PromptBuilder::new("S", 8, 8);
        assert_eq!(b.build(0), b.build(1));
        assert_eq!(words(&b.build(0)).len(), 8);
        assert_eq!(
            PromptBuilder::new("S", 50, 20).prefix(),
            PromptBuilder::new("S", 90, 20).prefix()
        );
    }
}
