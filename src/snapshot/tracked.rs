// SPDX-License-Identifier: GPL-2.0

//! Reads of not-copied chunks in flight to the origin, per chunk (dm's
//! `track_chunk`): a copy of such a chunk is not completed, and the origin
//! write it holds not released, before they end.
//!
//! Every read of a not-copied chunk is counted here at map time and
//! uncounted at its end, so both ends are on the hot path of snapshot
//! reads. Hence:
//! - no allocation per read: entries live in a few short vectors (a hash
//!   of the chunk picks one) that only grow, and grow outside the lock;
//! - no wake-up per read: the copier is kicked at a chunk's last read's
//!   end only if it looked for reads of that chunk while they were in
//!   flight (the entry's `waited` mark, set under the same lock).

use crate::kx::vec::pop;
use kernel::alloc::AllocError;
use kernel::prelude::*;

/// Buckets of the hash: a power of two, a few times the reads a device
/// usually has in flight, so that a bucket holds one or two entries.
const BUCKETS: usize = 64;

/// Entries a bucket gets at its first growth.
const FIRST_CAPACITY: usize = 4;

#[derive(Clone, Copy)]
pub(crate) struct Entry {
    chunk: u64,
    /// Reads of `chunk` in flight (≥ 1 while listed).
    reads: u32,
    /// The copier found reads of `chunk` in flight and waits for them.
    waited: bool,
}

/// Reads in flight per chunk. Used under the snapshot's `tracked` lock.
///
/// # Invariants
///
/// A chunk has at most one entry, in bucket `bucket_of(chunk)`, and an
/// entry's `reads` is at least 1.
pub(crate) struct TrackedReads {
    buckets: [KVec<Entry>; BUCKETS],
}

/// [`TrackedReads::try_track`] found the chunk's bucket full: grow it with
/// [`TrackedReads::grown`] (outside the lock), then try again.
pub(crate) struct BucketFull {
    bucket: usize,
    capacity: usize,
}

/// What the end of a read asks of its caller.
#[derive(PartialEq, Eq)]
pub(crate) enum Untracked {
    /// Other reads of the chunk are in flight, or nobody waits.
    Nothing,
    /// The chunk's last read ended and the copier waits for it: kick it.
    KickCopier,
}

fn bucket_of(chunk: u64) -> usize {
    // Chunks read together are usually neighbours: the low bits spread
    // them over the buckets.
    (chunk as usize) & (BUCKETS - 1)
}

impl TrackedReads {
    pub(crate) fn new() -> Self {
        Self {
            buckets: core::array::from_fn(|_| KVec::new()),
        }
    }

    fn find(&mut self, chunk: u64) -> Option<&mut Entry> {
        self.buckets[bucket_of(chunk)]
            .iter_mut()
            .find(|e| e.chunk == chunk)
    }

    /// Counts a read of `chunk`, with no allocation: `Err` if a new entry
    /// does not fit in its bucket.
    pub(crate) fn try_track(&mut self, chunk: u64) -> Result<(), BucketFull> {
        if let Some(e) = self.find(chunk) {
            e.reads += 1;
            return Ok(());
        }
        let bucket = bucket_of(chunk);
        let b = &mut self.buckets[bucket];
        if b.len() == b.capacity() {
            return Err(BucketFull {
                bucket,
                capacity: b.capacity(),
            });
        }
        let entry = Entry {
            chunk,
            reads: 1,
            waited: false,
        };
        // Cannot allocate: there is room.
        b.push(entry, GFP_ATOMIC).map_err(|_| BucketFull {
            bucket,
            capacity: b.capacity(),
        })
    }

    /// A larger bucket for `full` (no lock held; the caller may sleep).
    pub(crate) fn grown(full: &BucketFull) -> Result<(usize, KVec<Entry>), AllocError> {
        let capacity = (full.capacity * 2).max(FIRST_CAPACITY);
        Ok((full.bucket, KVec::with_capacity(capacity, GFP_KERNEL)?))
    }

    /// Puts the bucket from [`Self::grown`] in place if it is still larger
    /// than the one in use (another read may have grown it meanwhile);
    /// returns the one to free once the lock is dropped.
    pub(crate) fn install(&mut self, (bucket, mut bigger): (usize, KVec<Entry>)) -> KVec<Entry> {
        let b = &mut self.buckets[bucket];
        if bigger.capacity() <= b.capacity() {
            return bigger;
        }
        // Cannot allocate: `bigger` has more room than `b` has entries.
        if bigger.extend_from_slice(b.as_slice(), GFP_ATOMIC).is_err() {
            return bigger;
        }
        core::mem::replace(b, bigger)
    }

    /// A read of `chunk` ended (any context).
    pub(crate) fn untrack(&mut self, chunk: u64) -> Untracked {
        let b = &mut self.buckets[bucket_of(chunk)];
        let Some(i) = b.iter().position(|e| e.chunk == chunk) else {
            return Untracked::Nothing;
        };
        if b[i].reads > 1 {
            b[i].reads -= 1;
            return Untracked::Nothing;
        }
        let waited = b[i].waited;
        let last = b.len() - 1;
        b.swap(i, last);
        pop(b);
        if waited {
            Untracked::KickCopier
        } else {
            Untracked::Nothing
        }
    }

    /// Whether reads of `chunk` are in flight.
    pub(crate) fn in_flight(&mut self, chunk: u64) -> bool {
        self.find(chunk).is_some()
    }

    /// Whether reads of `chunk` are in flight; if so, the copier is kicked
    /// when the last of them ends.
    pub(crate) fn in_flight_kick_when_done(&mut self, chunk: u64) -> bool {
        match self.find(chunk) {
            Some(e) => {
                e.waited = true;
                true
            }
            None => false,
        }
    }
}
