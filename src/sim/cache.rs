//! The simulated prefix cache: blocks of [`BLOCK_WORDS`] words identified by a
//! hash chain (FNV-1a over the words; each block's hash covers every word
//! before it), kept in an LRU
//! bounded by a number of blocks.

use std::collections::{BTreeMap, HashMap};

/// Words per cache block (docs/contracts.md).
pub const BLOCK_WORDS: usize = 16;

/// The hash chain over the whitespace-separated words of a prompt (word
/// count and the hash of every whole leading block), which can go on where a prompt ended: the
/// blocks of a prompt followed by its answer are the blocks the next turn
/// of a conversation sends (prompt, answer, new message), so caching them
/// at the end of a generation lets that turn hit, as vLLM's prefix cache
/// keeps the blocks of generated tokens.
#[derive(Debug, Clone)]
pub struct Chain {
    pub words: u64,
    /// Hash of every whole block so far.
    pub hashes: Vec<u64>,
    h: u64,
    in_block: usize,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            words: 0,
            hashes: Vec::new(),
            h: FNV_OFFSET,
            in_block: 0,
        }
    }
}

impl Chain {
    /// The chain of the words of `pieces`, in order.
    pub fn of<'a>(pieces: impl Iterator<Item = &'a str>) -> Chain {
        let mut c = Chain::default();
        for piece in pieces {
            for w in piece.split_whitespace() {
                c.push_word(w.as_bytes());
            }
        }
        c
    }

    /// Appends one word.
    pub fn push_word(&mut self, w: &[u8]) {
        for &b in w {
            self.h = (self.h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.h = (self.h ^ 0xff).wrapping_mul(FNV_PRIME); // word separator
        self.words += 1;
        self.in_block += 1;
        if self.in_block == BLOCK_WORDS {
            let block = finish(self.h);
            self.hashes.push(block);
            // the next block's hash starts from this one: a hash chain
            self.h = (FNV_OFFSET ^ block).wrapping_mul(FNV_PRIME);
            self.in_block = 0;
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Final avalanche (FNV-1a alone mixes the high bits poorly).
fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// LRU set of block hashes.
pub struct PrefixCache {
    cap: usize,
    tick: u64,
    by_hash: HashMap<u64, u64>,
    by_tick: BTreeMap<u64, u64>,
}

impl PrefixCache {
    pub fn new(cap: usize) -> Self {
        PrefixCache {
            cap,
            tick: 0,
            by_hash: HashMap::new(),
            by_tick: BTreeMap::new(),
        }
    }

    /// Returns how many leading blocks of `hashes` were cached, then records
    /// all of them (the last block is touched first so that, as in vLLM, a
    /// prefix's tail is evicted before its head).
    pub fn lookup_insert(&mut self, hashes: &[u64]) -> usize {
        if self.cap == 0 {
            return 0;
        }
        let hit = hashes.iter().take_while(|h| self.by_hash.contains_key(h)).count();
        for &h in hashes.iter().rev() {
            self.tick += 1;
            if let Some(old) = self.by_hash.insert(h, self.tick) {
                self.by_tick.remove(&old);
            }
            self.by_tick.insert(self.tick, h);
        }
        while self.by_hash.len() > self.cap {
            match self.by_tick.pop_first() {
                Some((_, h)) => {
                    self.by_hash.remove(&h);
                }
                None => break,
            }
        }
        hit
    }

    /// (blocks held, capacity in blocks), for `GET /metrics`.
    pub fn occupancy(&self) -> (usize, usize) {
        (self.by_hash.len(), self.cap)
    }

    pub fn clear(&mut self) {
        self.by_hash.clear();
        self.by_tick.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_lru() {
        let a = "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z A B C D E F G H";
        let Chain {
            words: n, hashes: hs, ..
        } = Chain::of([a].into_iter());
        assert_eq!(n, 34);
        assert_eq!(hs.len(), 2);
        // split across pieces gives the same hashes
        let hs2 =
            Chain::of(["A B C D E F G H", "I J K L M N O P Q R S T U V W X Y Z A B C D E F G H"].into_iter()).hashes;
        assert_eq!(hs, hs2);
        let mut c = PrefixCache::new(3);
        assert_eq!(c.lookup_insert(&hs), 0);
        assert_eq!(c.lookup_insert(&hs), 2);
        assert_eq!(c.lookup_insert(&[1, 2]), 0);
        // capacity 3: the oldest (tail of the first prefix, then its head) went
        assert!(c.by_hash.len() <= 3);
    }

    #[test]
    fn a_chain_continued_with_the_answer_is_the_next_turns_prefix() {
        let prompt = "A B C D E F G H I J K L M N O P Q R S T";
        let mut c = Chain::of([prompt].into_iter());
        for _ in 0..20 {
            c.push_word(b"tok");
        }
        let answer = " tok".repeat(20);
        let next = Chain::of([prompt, answer.as_str(), "U V W X Y Z"].into_iter());
        assert_eq!(c.words, 40);
        assert_eq!(c.hashes.len(), 2);
        assert_eq!(next.hashes[..2], c.hashes[..]);
    }
}
