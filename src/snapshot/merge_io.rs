// SPDX-License-Identifier: GPL-2.0

//! The I/O of a merging snapshot: the `snapshot-merge` target's map path
//! ([`Snap::merge_map`]), the writes held for a batch being copied back,
//! and the handover of a snapshot to its merge. The merge thread itself is
//! `merge.rs`.

use super::held::HeldList;
use super::hooks;
use super::snap::Snap;
use super::Caller;
use crate::kx::block::{Bio, BioOp};
use crate::kx::memalloc::NoIo;
use crate::kx::wait::sleep_ms;
use crate::target::{EndHook, Io};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// Why a `snapshot-merge` target may not merge its snapshot.
pub(crate) enum MergeRefusal {
    /// The snapshot is invalid.
    Invalid,
    /// A `PO` snapshot overflowed.
    Overflowed,
    /// Another snapshot of the origin (this COW device) is merging.
    OtherMerge(u64),
}

/// A merge batch's chunks and the writes held for them, under
/// [`Snap::merging`].
pub(crate) struct MergeIo {
    /// The origin chunks being copied back, sorted; empty between batches.
    pub(super) batch: KVVec<u64>,
    /// Writes to those chunks, held until the batch ends.
    pub(super) held: HeldList<HeldWrite>,
}

impl MergeIo {
    pub(super) fn holds(&self, chunk: u64) -> bool {
        self.batch.binary_search(&chunk).is_ok()
    }
}

/// A write to the merging origin held until its chunk's batch ends.
pub(super) struct HeldWrite {
    pub(super) bio: Bio,
    pub(super) chunk: u64,
}

// The merge's state (`MergeInfo::state`).
/// No merge thread has run.
pub(crate) const MERGE_IDLE: u8 = 0;
/// A merge thread runs.
pub(crate) const MERGE_RUNNING: u8 = 1;
/// Every chunk is merged.
pub(crate) const MERGE_DONE: u8 = 2;
/// The last merge thread stopped on an error (the status says `Merge
/// failed`); the next resume tries again.
pub(crate) const MERGE_FAILED: u8 = 3;
/// Stopped by a suspend or a teardown, chunks left.
pub(crate) const MERGE_STOPPED: u8 = 4;

/// A snapshot's merge: who merges it and how far it got.
pub(crate) struct MergeInfo {
    /// `snapshot-merge` targets on the snapshot (changed under `origins`).
    pub(crate) targets: AtomicUsize,
    /// A merge thread runs for the snapshot.
    pub(crate) running: AtomicBool,
    pub(crate) state: AtomicU8,
    /// Chunks merged and batches committed since the snapshot was loaded.
    pub(crate) merged: AtomicU64,
    pub(crate) batches: AtomicU64,
}

impl Snap {
    /// Handed over to a merge.
    pub(crate) fn is_handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }

    /// The snapshot-merge target of this snapshot went live: from now on
    /// the snapshot is the merge's (see [`Snap::handed_over`]). Returns
    /// false if it already was.
    pub(crate) fn hand_over(&self) -> bool {
        // SeqCst: against the snapshot map path's count-then-check.
        if self.handed_over.swap(true, Ordering::SeqCst) {
            return false;
        }
        // A publication that saw the snapshot wanting copies did so under
        // `pending` and counted itself there: after this, every one is
        // counted in `outstanding` (which the merge waits for) or sees it
        // handed over.
        drop(self.pending.lock());
        true
    }

    /// Makes `self` (joined or registered by a `snapshot-merge` target) the
    /// snapshot its origin merges, counting the target; refused if it is
    /// invalid or overflowed, or if another snapshot of the origin is
    /// merging. Process context.
    pub(crate) fn claim_merge(&self) -> Result<(), MergeRefusal> {
        let _origins = self.origin.snapshots.origins.lock();
        if !self.is_valid() {
            return Err(MergeRefusal::Invalid);
        }
        if self.is_overflowed() {
            return Err(MergeRefusal::Overflowed);
        }
        let snaps = self.origin.snaps.read();
        let other = snaps.iter().flatten().find(|s| {
            !core::ptr::eq::<Snap>(&***s, self) && s.merge.targets.load(Ordering::Acquire) > 0
        });
        if let Some(other) = other {
            return Err(MergeRefusal::OtherMerge(other.cow.devt()));
        }
        self.merge.targets.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A `snapshot-merge` target of the snapshot went away.
    pub(crate) fn release_merge(&self) {
        let _origins = self.origin.snapshots.origins.lock();
        self.merge.targets.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Snap {
    /// Maps a bio of the `snapshot-merge` target (in origin sectors,
    /// inside one chunk of this, the merging, snapshot), as dm's
    /// `snapshot_merge_map`: a chunk not merged yet is read from its COW
    /// copy, and written there too (tracked: its batch waits for the
    /// write before it copies the chunk back), unless its batch is being
    /// copied back, when the write is held until the batch ends; a merged
    /// chunk (or one that never had an exception) is the origin's, whose
    /// writes copy for the other snapshots first.
    pub(crate) fn merge_map(self: &Arc<Self>, mut bio: Bio, io: Io<'_>) {
        let _noio = NoIo::enter();
        let write = match bio.op() {
            BioOp::Read => false,
            BioOp::Write => true,
            _ => {
                io.end_unsupported(bio);
                return;
            }
        };
        if !self.is_valid() {
            // dm: a merging snapshot that is not valid is no exception
            // store any more: the origin is the data.
            self.merge_to_origin(bio, io, write);
            return;
        }
        let chunk = self.geom.chunk_of(bio.sector());
        loop {
            let ex = self.exceptions.read();
            let Some(new) = ex.lookup(chunk) else {
                drop(ex);
                self.merge_to_origin(bio, io, write);
                return;
            };
            if !write {
                // The COW chunk of an exception is never reused while the
                // snapshot merges: a read racing the chunk's merge reads
                // the same data as the origin gets.
                drop(ex);
                self.remap_to_cow(&mut bio, new);
                io.remap(bio, &self.cow);
                return;
            }
            if self.merging.lock().holds(chunk) {
                drop(ex);
                let hook = hooks::untrack(self, chunk);
                if let Some(clone) = io.clone_bio(bio, None, hook) {
                    self.hold_merge_write(clone, chunk);
                }
                return;
            }
            // Counted under the read hold: a batch that takes the chunk
            // (under the write hold) waits for it.
            if let Err(full) = self.try_track(chunk) {
                drop(ex);
                if self.grow_tracked(&full).is_err() {
                    pr_err!("snapshot-merge: out of memory to track a write\n");
                    io.end(bio, true);
                    return;
                }
                continue;
            }
            drop(ex);
            self.remap_to_cow(&mut bio, new);
            let hook = hooks::untrack(self, chunk);
            if let Some(clone) = io.clone_bio(bio, Some(&self.cow), hook) {
                clone.submit();
            }
            return;
        }
    }

    /// A merging origin's I/O to a chunk without an exception: reads go to
    /// the origin device, writes too once the other snapshots have the
    /// chunk (the origin's write path).
    pub(super) fn merge_to_origin(&self, bio: Bio, io: Io<'_>, write: bool) {
        if !write || self.origin.write_is_clear(bio.sector(), bio.sectors()) {
            io.remap(bio, &self.origin_dev);
            return;
        }
        if let Some(clone) = io.clone_bio(bio, None, EndHook::NONE) {
            self.origin
                .write(&self.origin_dev, clone, Caller::Submitter);
        }
    }

    /// Holds a write (a counted clone whose end un-tracks `chunk`) until
    /// the batch copying `chunk` back ends, or maps it again if that batch
    /// has ended already.
    pub(super) fn hold_merge_write(self: &Arc<Self>, bio: Bio, chunk: u64) {
        let Ok(node) = HeldList::new_node() else {
            pr_err!("snapshot-merge: out of memory to hold a write\n");
            bio.end(true);
            return;
        };
        let mut m = self.merging.lock();
        if m.holds(chunk) {
            m.held.push(node, HeldWrite { bio, chunk });
            return;
        }
        drop(m);
        self.merge_write_again(bio, chunk);
    }

    /// Maps again a write (a counted clone whose end un-tracks `chunk`)
    /// held for a batch that ended: to the origin if the chunk was merged,
    /// to its COW chunk, tracked, if it still has its exception (the batch
    /// failed). Process context; never waits for the origin's throttle.
    pub(super) fn merge_write_again(self: &Arc<Self>, mut bio: Bio, chunk: u64) {
        let _noio = NoIo::enter();
        loop {
            let ex = self.exceptions.read();
            let Some(new) = ex.lookup(chunk) else {
                drop(ex);
                // Merged (the batch made the other snapshots' copies; the
                // origin's write path finds them, or what a snapshot made
                // active since needs). Tracked no more: a chunk without an
                // exception is never tracked again, so its end un-tracks
                // nothing.
                self.origin.write(&self.origin_dev, bio, Caller::Copier);
                return;
            };
            if self.merging.lock().holds(chunk) {
                // Taken by a batch again (not while this write counts its
                // table: a merge starts after a suspend drained it).
                drop(ex);
                self.hold_merge_write(bio, chunk);
                return;
            }
            if let Err(full) = self.try_track(chunk) {
                drop(ex);
                if self.grow_tracked(&full).is_err() {
                    pr_err!("snapshot-merge: out of memory to track a write\n");
                    bio.end(true);
                    return;
                }
                continue;
            }
            drop(ex);
            self.remap_to_cow(&mut bio, new);
            bio.set_dev(&self.cow);
            bio.submit();
            return;
        }
    }

    /// A merge batch of `chunks` (origin chunks, sorted) starts: writes to
    /// them are held from now on. The merge thread, which then waits for
    /// the writes sent to their COW copies before ([`Snap::wait_untracked`]).
    pub(crate) fn merge_begin(&self, chunks: KVVec<u64>) {
        // Under the write hold: a write either saw the batch (and is held)
        // or was tracked before (and is waited for).
        let _ex = self.exceptions.write();
        self.merging.lock().batch = chunks;
    }

    /// Waits until no tracked I/O of `chunks` is in flight. As dm's
    /// `__check_for_conflicting_io`, by polling: a write racing the start
    /// of its chunk's batch is rare and short. The merge thread.
    pub(crate) fn wait_untracked(&self, chunks: impl Iterator<Item = u64>) {
        for c in chunks {
            while self.reads_in_flight(c) {
                sleep_ms(1);
            }
        }
    }

    /// Sets aside what removing `desc` (the batch's chunks, descending)
    /// from the exception table needs, so that it cannot fail once the
    /// batch is on disk. `Err(Some(c))`: chunk `c` has no exception in
    /// memory; `Err(None)`: no memory.
    pub(crate) fn merge_reserve(&self, desc: &[u64]) -> Result<(), Option<u64>> {
        let mut ex = self.exceptions.write();
        let splits = ex.removal_splits(desc).map_err(Some)?;
        ex.reserve_for_removal(splits).map_err(|_| None)
    }

    /// A merge batch ended: if `merged`, its chunks (`desc`, descending)
    /// leave the exception table (the list on disk no longer has them);
    /// then the held writes go, to the origin or, if the batch failed,
    /// to their COW chunks. The merge thread.
    pub(crate) fn merge_end(self: &Arc<Self>, desc: &[u64], merged: bool) {
        let held = {
            let mut ex = self.exceptions.write();
            if merged {
                for &c in desc {
                    // Cannot fail: `merge_reserve` set aside what splits
                    // need, and nothing else changed the table since.
                    if ex.remove(c).is_err() {
                        pr_err!("snapshot-merge: cannot forget the exception of chunk {c}\n");
                    }
                }
            }
            let mut m = self.merging.lock();
            m.batch = KVVec::new();
            m.held.take()
        };
        for HeldWrite { bio, chunk } in held.into_arrival_order() {
            self.merge_write_again(bio, chunk);
        }
    }
}
