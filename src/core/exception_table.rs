//! A snapshot's completed exceptions: origin chunk -> COW chunk.
//!
//! Exceptions are kept as *runs*: consecutive origin chunks copied to
//! consecutive COW chunks share one 16-byte entry (dm-snapshot packs runs
//! too, up to 256 chunks in a 32-byte `struct dm_exception` plus its hash
//! bucket). Runs live sorted in fixed-size leaves of [`LEAF_RUNS`] entries
//! (one 2 KiB allocation each); a leaf that fills up splits in two, so an
//! insert moves at most one leaf's worth of entries and a lookup is two
//! binary searches. A leaf is at least half full except the newest, so the
//! cost is 16 to 32 bytes per run.
//!
//! The storage of the leaves is the caller's ([`LeafVec`]): a `Vec` on the
//! host, a `KVec` of boxes in the kernel. The locking is the caller's too
//! (the module keeps the table under a read-write semaphore).

use core::fmt;

/// Runs per leaf: a leaf (8-byte header + 16 bytes per run) fits 2 KiB.
pub const LEAF_RUNS: usize = 127;

/// Longest run (its length is kept in 16 bits).
pub const MAX_RUN: u64 = 1 << 16;

/// Largest COW chunk number a run can hold (48 bits).
pub const MAX_NEW_CHUNK: u64 = (1 << 48) - 1;

/// One run: `len` origin chunks from `old` map to COW chunks from `new`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    old: u64,
    /// COW chunk in the low 48 bits, run length - 1 in the high 16.
    new_len: u64,
}

impl Run {
    fn new(old: u64, new: u64, len: u64) -> Run {
        Run {
            old,
            new_len: new | ((len - 1) << 48),
        }
    }

    /// First origin chunk.
    pub fn old(&self) -> u64 {
        self.old
    }

    /// First COW chunk.
    pub fn new_chunk(&self) -> u64 {
        self.new_len & MAX_NEW_CHUNK
    }

    /// Number of chunks.
    pub fn len(&self) -> u64 {
        (self.new_len >> 48) + 1
    }

    /// Always false: a run holds at least one chunk.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn lookup(&self, chunk: u64) -> Option<u64> {
        let off = chunk.checked_sub(self.old)?;
        (off < self.len()).then(|| self.new_chunk() + off)
    }

    /// Adds `(old, new)` at the end of the run if it continues it.
    fn try_append(&mut self, old: u64, new: u64) -> bool {
        let len = self.len();
        if len < MAX_RUN && self.old + len == old && self.new_chunk() + len == new {
            *self = Run::new(self.old, self.new_chunk(), len + 1);
            return true;
        }
        false
    }

    /// Adds `(old, new)` in front of the run if it continues it downwards.
    fn try_prepend(&mut self, old: u64, new: u64) -> bool {
        let len = self.len();
        if len < MAX_RUN && old + 1 == self.old && new + 1 == self.new_chunk() {
            *self = Run::new(old, new, len + 1);
            return true;
        }
        false
    }
}

/// A leaf: up to [`LEAF_RUNS`] runs sorted by origin chunk.
#[derive(Clone)]
pub struct Leaf {
    len: u32,
    runs: [Run; LEAF_RUNS],
}

impl Leaf {
    /// An empty leaf (all zero bytes).
    pub const EMPTY: Leaf = Leaf {
        len: 0,
        runs: [Run { old: 0, new_len: 0 }; LEAF_RUNS],
    };

    fn runs(&self) -> &[Run] {
        &self.runs[..self.len as usize]
    }

    fn first_old(&self) -> u64 {
        self.runs[0].old
    }

    /// Index of the last run starting at or before `chunk`, if any.
    fn run_before(&self, chunk: u64) -> Option<usize> {
        self.runs()
            .partition_point(|r| r.old <= chunk)
            .checked_sub(1)
    }

    fn lookup(&self, chunk: u64) -> Option<u64> {
        self.runs[self.run_before(chunk)?].lookup(chunk)
    }

    fn is_full(&self) -> bool {
        self.len as usize == LEAF_RUNS
    }

    /// Inserts `run` at `i` (the leaf is not full).
    fn insert_at(&mut self, i: usize, run: Run) {
        let len = self.len as usize;
        self.runs.copy_within(i..len, i + 1);
        self.runs[i] = run;
        self.len += 1;
    }

    /// Moves the upper half of the runs into the empty leaf `to`.
    fn split_into(&mut self, to: &mut Leaf) {
        let len = self.len as usize;
        let half = len / 2;
        for (dst, src) in to.runs.iter_mut().zip(&self.runs[half..len]) {
            *dst = *src;
        }
        to.len = (len - half) as u32;
        self.len = half as u32;
    }
}

/// Out of memory for a new leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMemory;

/// The caller's storage of leaves, in order.
pub trait LeafVec {
    /// Number of leaves.
    fn count(&self) -> usize;
    /// Leaf `i`.
    fn leaf(&self, i: usize) -> &Leaf;
    /// Leaf `i`, mutably.
    fn leaf_mut(&mut self, i: usize) -> &mut Leaf;
    /// Inserts an empty leaf at position `i`.
    fn insert_empty(&mut self, i: usize) -> Result<(), NoMemory>;
    /// Bytes of memory the leaves and their index take.
    fn bytes(&self) -> usize;
}

/// Why an exception could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The origin chunk already has an exception.
    Duplicate,
    /// The COW chunk number needs more than 48 bits.
    TooLarge,
    /// No memory for a new leaf.
    NoMemory,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Duplicate => write!(f, "the chunk already has an exception"),
            InsertError::TooLarge => write!(f, "COW chunk number too large"),
            InsertError::NoMemory => write!(f, "out of memory"),
        }
    }
}

/// The exception table.
pub struct ExceptionTable<V: LeafVec> {
    leaves: V,
    exceptions: u64,
    runs: u64,
}

impl<V: LeafVec> ExceptionTable<V> {
    /// An empty table over `leaves` (which must hold no leaf).
    pub fn new(leaves: V) -> Self {
        ExceptionTable {
            leaves,
            exceptions: 0,
            runs: 0,
        }
    }

    /// Number of exceptions (chunks).
    pub fn len(&self) -> u64 {
        self.exceptions
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.exceptions == 0
    }

    /// Number of runs.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Bytes of memory the table takes.
    pub fn bytes(&self) -> usize {
        self.leaves.bytes()
    }

    /// Index of the leaf that holds (or would hold) `chunk`.
    fn leaf_for(&self, chunk: u64) -> usize {
        let n = self.leaves.count();
        // Binary search over the leaves' first chunks.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.leaves.leaf(mid).first_old() <= chunk {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.saturating_sub(1)
    }

    /// The COW chunk of origin chunk `chunk`, if it has an exception.
    pub fn lookup(&self, chunk: u64) -> Option<u64> {
        if self.leaves.count() == 0 {
            return None;
        }
        self.leaves.leaf(self.leaf_for(chunk)).lookup(chunk)
    }

    /// Records that origin chunk `old` is now at COW chunk `new`.
    pub fn insert(&mut self, old: u64, new: u64) -> Result<(), InsertError> {
        if new > MAX_NEW_CHUNK {
            return Err(InsertError::TooLarge);
        }
        if self.leaves.count() == 0 {
            self.leaves
                .insert_empty(0)
                .map_err(|NoMemory| InsertError::NoMemory)?;
        }
        let li = self.leaf_for(old);
        let leaf = self.leaves.leaf_mut(li);
        let before = leaf.run_before(old);
        if let Some(b) = before {
            if leaf.runs[b].lookup(old).is_some() {
                return Err(InsertError::Duplicate);
            }
            if leaf.runs[b].try_append(old, new) {
                self.exceptions += 1;
                return Ok(());
            }
        }
        let next = before.map_or(0, |b| b + 1);
        if next < leaf.len as usize && leaf.runs[next].try_prepend(old, new) {
            self.exceptions += 1;
            return Ok(());
        }
        let run = Run::new(old, new, 1);
        if !leaf.is_full() {
            leaf.insert_at(next, run);
        } else {
            self.leaves
                .insert_empty(li + 1)
                .map_err(|NoMemory| InsertError::NoMemory)?;
            let mut upper = Leaf::EMPTY;
            self.leaves.leaf_mut(li).split_into(&mut upper);
            let low_len = self.leaves.leaf(li).len as usize;
            if next <= low_len {
                self.leaves.leaf_mut(li).insert_at(next, run);
            } else {
                upper.insert_at(next - low_len, run);
            }
            *self.leaves.leaf_mut(li + 1) = upper;
        }
        self.exceptions += 1;
        self.runs += 1;
        Ok(())
    }

    /// Every run, in origin-chunk order.
    pub fn iter_runs(&self) -> impl Iterator<Item = Run> + '_ {
        (0..self.leaves.count()).flat_map(move |i| self.leaves.leaf(i).runs().iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    // Boxed like the kernel's leaves: a split moves pointers, not leaves.
    #[allow(clippy::vec_box)]
    struct HostLeaves(Vec<Box<Leaf>>);

    impl LeafVec for HostLeaves {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn leaf(&self, i: usize) -> &Leaf {
            &self.0[i]
        }
        fn leaf_mut(&mut self, i: usize) -> &mut Leaf {
            &mut self.0[i]
        }
        fn insert_empty(&mut self, i: usize) -> Result<(), NoMemory> {
            self.0.insert(i, Box::new(Leaf::EMPTY));
            Ok(())
        }
        fn bytes(&self) -> usize {
            self.0.len() * core::mem::size_of::<Leaf>() + self.0.capacity() * 8
        }
    }

    fn table() -> ExceptionTable<HostLeaves> {
        ExceptionTable::new(HostLeaves(Vec::new()))
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn check(t: &ExceptionTable<HostLeaves>, oracle: &BTreeMap<u64, u64>, probe_max: u64) {
        assert_eq!(t.len(), oracle.len() as u64);
        for c in 0..probe_max {
            assert_eq!(t.lookup(c), oracle.get(&c).copied(), "chunk {c}");
        }
        // Runs are sorted, disjoint, and cover exactly the oracle.
        let mut last_end = 0;
        let mut total = 0;
        for r in t.iter_runs() {
            assert!(r.old() >= last_end, "runs overlap or are out of order");
            last_end = r.old() + r.len();
            total += r.len();
        }
        assert_eq!(total, t.len());
        assert!(core::mem::size_of::<Leaf>() <= 2048);
    }

    #[test]
    fn sequential_copies_pack_into_runs() {
        let mut t = table();
        for c in 0..100_000 {
            t.insert(c, c + 1).unwrap();
        }
        // 100000 chunks in runs of at most 65536.
        assert_eq!(t.runs(), 2);
        assert_eq!(t.lookup(99_999), Some(100_000));
        assert_eq!(t.lookup(100_000), None);
        // Downwards too.
        let mut t = table();
        for c in (0..1000).rev() {
            t.insert(c + 5000, c).unwrap();
        }
        assert_eq!(t.runs(), 1);
        assert_eq!(t.lookup(5000), Some(0));
        assert_eq!(t.lookup(4999), None);
    }

    #[test]
    fn random_inserts_match_an_oracle() {
        let mut t = table();
        let mut oracle = BTreeMap::new();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut next_free = 0;
        for _ in 0..20_000 {
            let old = rng.next() % 50_000;
            let r = t.insert(old, next_free);
            if let std::collections::btree_map::Entry::Vacant(e) = oracle.entry(old) {
                assert_eq!(r, Ok(()));
                e.insert(next_free);
                next_free += 1;
            } else {
                assert_eq!(r, Err(InsertError::Duplicate));
            }
        }
        check(&t, &oracle, 50_010);
        // Random chunks barely form runs: most leaves split, and the table
        // stays within 32 bytes per run (dm-snapshot: 32 bytes per
        // exception plus its hash bucket).
        assert!(t.leaves.count() > 100);
        assert!(
            t.bytes() as u64 <= 32 * t.runs() + 4096,
            "{} bytes",
            t.bytes()
        );
    }

    #[test]
    fn interleaved_runs_and_gaps() {
        // Ascending origin chunks with every third skipped, COW chunks in
        // allocation order: runs break at every gap.
        let mut t = table();
        let mut oracle = BTreeMap::new();
        let mut next = 0;
        for c in (0..3000).filter(|c| c % 3 != 2) {
            t.insert(c, next).unwrap();
            oracle.insert(c, next);
            next += 1;
        }
        check(&t, &oracle, 3010);
        assert_eq!(t.runs(), 1000);
        // Filling the gaps later goes to new COW chunks: new runs.
        for c in (0..3000).filter(|c| c % 3 == 2) {
            t.insert(c, next).unwrap();
            oracle.insert(c, next);
            next += 1;
        }
        check(&t, &oracle, 3010);
    }

    #[test]
    fn limits() {
        let mut t = table();
        assert_eq!(t.insert(1, MAX_NEW_CHUNK + 1), Err(InsertError::TooLarge));
        t.insert(u64::MAX - 1, MAX_NEW_CHUNK).unwrap();
        assert_eq!(t.lookup(u64::MAX - 1), Some(MAX_NEW_CHUNK));
        assert_eq!(t.lookup(u64::MAX), None);
        assert_eq!(t.insert(u64::MAX - 1, 5), Err(InsertError::Duplicate));
        assert!(table().lookup(0).is_none());
    }
}
