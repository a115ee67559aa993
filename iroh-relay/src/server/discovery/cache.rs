//! The DNS answers of stored records, kept in memory in front of the database: a query for a node
//! costs a hash lookup instead of a database read (often a disk page) and a packet parse.
//!
//! Entries are compact (the TXT strings with their TTLs in one allocation, about 200 bytes a node with
//! the table's share) and the cache holds at most its capacity of nodes, dropping an arbitrary entry to
//! make room. Every write to the store removes its node's entry, and an answer read from the store while
//! a write happened is not cached (it may predate the write), so the cache is never stale. "No record"
//! is cached too: repeated queries for unknown nodes do not reach the database either.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use crate::protos::discovery::TxtAnswer;

/// A node's TXT answers, encoded as `(ttl: u32 BE, strings: u8, (len: u8, bytes)*)*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompactAnswers(Arc<[u8]>);

impl CompactAnswers {
    /// Encodes `answers`; `None` for no answers, or a string longer than 255 bytes (which no DNS
    /// character string can carry) or more than 255 strings in one answer.
    pub(crate) fn encode(answers: &[TxtAnswer]) -> Option<Self> {
        if answers.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for answer in answers {
            out.extend_from_slice(&answer.ttl.to_be_bytes());
            out.push(u8::try_from(answer.strings.len()).ok()?);
            for string in &answer.strings {
                out.push(u8::try_from(string.len()).ok()?);
                out.extend_from_slice(string);
            }
        }
        Some(Self(out.into()))
    }

    /// The answers: each TTL with its strings.
    pub(crate) fn answers(&self) -> Vec<(u32, Vec<&[u8]>)> {
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.0;
        while rest.len() >= 5 {
            let ttl = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let count = rest[4];
            rest = &rest[5..];
            let mut strings = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let Some((&len, tail)) = rest.split_first() else {
                    return out;
                };
                let Some((string, tail)) = tail.split_at_checked(usize::from(len)) else {
                    return out;
                };
                strings.push(string);
                rest = tail;
            }
            out.push((ttl, strings));
        }
        out
    }
}

/// What the cache knows of a node: `None` when it has no record (or none with TXT answers).
pub(crate) type Cached = Option<CompactAnswers>;

/// The cache: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct AnswerCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    answers: HashMap<[u8; 32], Cached>,
    /// Counts writes ([`AnswerCache::forget`], [`AnswerCache::clear`]).
    generation: u64,
}

impl AnswerCache {
    /// A cache of at most `capacity` nodes (0: caches nothing).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answers of `key` if any, else the generation to pass to [`AnswerCache::insert`].
    pub(crate) fn get(&self, key: &[u8; 32]) -> Result<Cached, u64> {
        let inner = self.lock();
        inner.answers.get(key).cloned().ok_or(inner.generation)
    }

    /// Caches what the store said about `key`, unless a write came after `generation` was read.
    pub(crate) fn insert(&self, key: [u8; 32], answers: Cached, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.answers.len() >= self.capacity
            && let Some(victim) = inner.answers.keys().next().copied()
        {
            inner.answers.remove(&victim);
        }
        inner.answers.insert(key, answers);
    }

    /// `key`'s record changed.
    pub(crate) fn forget(&self, key: &[u8; 32]) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.answers.remove(key);
    }

    /// Records changed (eviction).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.answers.clear();
    }

    /// How many nodes it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(ttl: u32) -> Cached {
        CompactAnswers::encode(&[TxtAnswer {
            ttl,
            strings: vec![b"addr=192.0.2.1:1".to_vec()],
        }])
    }

    #[test]
    fn compact_answers_round_trip() {
        let answers = vec![
            TxtAnswer {
                ttl: 300,
                strings: vec![b"relay=https://r.example/".to_vec()],
            },
            TxtAnswer {
                ttl: 30,
                strings: vec![b"addr=1.2.3.4:5".to_vec(), Vec::new(), vec![b'x'; 255]],
            },
        ];
        let compact = CompactAnswers::encode(&answers).unwrap();
        let back = compact.answers();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], (300, vec![&b"relay=https://r.example/"[..]]));
        assert_eq!(back[1].0, 30);
        assert_eq!(back[1].1.len(), 3);
        assert_eq!(back[1].1[2].len(), 255);
        assert!(CompactAnswers::encode(&[]).is_none());
        let too_long = TxtAnswer {
            ttl: 1,
            strings: vec![vec![0; 256]],
        };
        assert!(CompactAnswers::encode(&[too_long]).is_none());
    }

    #[test]
    fn never_keeps_what_a_write_made_stale() {
        let cache = AnswerCache::new(10);
        let key = [7u8; 32];
        // A miss, then what the store said is cached.
        let generation = cache.get(&key).unwrap_err();
        cache.insert(key, None, generation);
        assert_eq!(cache.get(&key), Ok(None));
        // A write forgets it.
        cache.forget(&key);
        let generation = cache.get(&key).unwrap_err();
        // A reader that read the store before another write must not cache what it read.
        cache.forget(&[9u8; 32]);
        cache.insert(key, answers(1), generation);
        assert!(cache.get(&key).is_err(), "a stale read was cached");
        let generation = cache.get(&key).unwrap_err();
        cache.insert(key, answers(2), generation);
        assert_eq!(cache.get(&key).unwrap().unwrap().answers()[0].0, 2);
        cache.clear();
        assert!(cache.get(&key).is_err());
    }

    #[test]
    fn capacity_is_a_bound() {
        let cache = AnswerCache::new(3);
        for i in 0..10u8 {
            let generation = cache.get(&[i; 32]).unwrap_err();
            cache.insert([i; 32], answers(u32::from(i)), generation);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&[9; 32]).is_ok(), "the newest is kept");
        let none = AnswerCache::new(0);
        none.insert([1; 32], None, 0);
        assert!(none.get(&[1; 32]).is_err());
    }
}
