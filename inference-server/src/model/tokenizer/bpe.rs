//! Byte-pair encoding of one word: byte characters, `</w>` on the last one, then merges applied
//! lowest rank first (leftmost first among equal ranks), with a bounded cache of results.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// Words cached at most; past this, new words are encoded without being remembered.
const CACHE_CAPACITY: usize = 10_000;
/// Longer words are never cached, so one huge prompt cannot pin memory.
const CACHE_MAX_WORD_BYTES: usize = 256;

/// Merge table over token ids plus the ids of the single-byte symbols.
pub(super) struct Bpe {
    /// `(left, right)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Id of each byte's character, and of that character followed by `</w>`.
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

impl Bpe {
    /// `byte_ids`/`byte_end_ids` hold the unknown-token id for bytes the vocabulary lacks.
    pub(super) fn new(
        merges: HashMap<(u32, u32), (u32, u32)>,
        byte_ids: [u32; 256],
        byte_end_ids: [u32; 256],
    ) -> Self {
        Bpe {
            merges,
            byte_ids,
            byte_end_ids,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Appends the ids of `word` (a non-empty pre-token, before byte mapping) to `out`.
    pub(super) fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let cacheable = word.len() <= CACHE_MAX_WORD_BYTES;
        if cacheable
            && let Some(ids) = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(word)
        {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge_word(word.as_bytes());
        out.extend_from_slice(&ids);
        if cacheable {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() < CACHE_CAPACITY {
                cache.insert(word.to_owned(), ids);
            }
        }
    }

    fn merge_word(&self, bytes: &[u8]) -> Vec<u32> {
        let n = bytes.len();
        let mut symbols: Vec<Symbol> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                id: if i + 1 == n {
                    self.byte_end_ids[b as usize]
                } else {
                    self.byte_ids[b as usize]
                },
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
                alive: true,
            })
            .collect();

        let mut queue = BinaryHeap::new();
        for i in 1..n {
            if let Some(&(rank, _)) = self.merges.get(&(symbols[i - 1].id, symbols[i].id)) {
                queue.push(Reverse((rank, i - 1)));
            }
        }

        while let Some(Reverse((rank, left))) = queue.pop() {
            let Some(right) = symbols[left].next.filter(|_| symbols[left].alive) else {
                continue;
            };
            let Some(&(current_rank, merged)) =
                self.merges.get(&(symbols[left].id, symbols[right].id))
            else {
                continue;
            };
            if current_rank != rank {
                continue;
            }
            symbols[left].id = merged;
            symbols[left].next = symbols[right].next;
            symbols[right].alive = false;
            if let Some(after) = symbols[right].next {
                symbols[after].prev = Some(left);
                if let Some(&(r, _)) = self.merges.get(&(merged, symbols[after].id)) {
                    queue.push(Reverse((r, left)));
                }
            }
            if let Some(before) = symbols[left].prev
                && let Some(&(r, _)) = self.merges.get(&(symbols[before].id, merged))
            {
                queue.push(Reverse((r, before)));
            }
        }

        let mut ids = Vec::new();
        let mut at = (n > 0).then_some(0);
        while let Some(i) = at {
            ids.push(symbols[i].id);
            at = symbols[i].next;
        }
        ids
    }
}
