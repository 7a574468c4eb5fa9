// SPDX-License-Identifier: GPL-2.0

//! One snapshot ([`Snap`]): its state, and what every path asks of it
//! (validity, activation, the chunks it has, the reads tracked on its
//! chunks, the end of a pending exception).

use super::copier::{Job, Lane};
use super::registry::OriginRef;
use super::store::Store;
use super::tracked::{BucketFull, TrackedReads, Untracked};
use super::KLeaves;
use crate::kx::block::{BdevFile, Bio};
use crate::kx::sync::{IrqSpinLock, RwSem};
use crate::kx::wait::{DrainCounter, EventCounter};
use crate::rdm_core::exception_table::{ExceptionTable, InsertError};
use crate::rdm_core::snapshot::ChunkGeometry;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, SpinLock};

use super::merge_io::{MergeInfo, MergeIo};
use super::origin::Origin;
use super::Caller;

/// One snapshot: its devices, its store, its completed and pending
/// exceptions, and the counts its teardown and its merge wait for. Shared
/// by every snapshot target loaded on its COW device (an `Arc`).
///
/// # Invariants
///
/// - A chunk is never both completed (in `exceptions`) and pending (in
///   `pending`): a publication ([`publish_one`](super::publish)) checks
///   both and inserts into `pending` under a read hold of `exceptions` and
///   the `pending` lock; [`Snap::finish_exception`] records the exception
///   and removes the pending entry under one write hold of `exceptions`.
///   So a lookup under a read hold finds exactly one of: the COW chunk,
///   the pending job, nothing.
/// - `outstanding` counts the jobs published in `pending` (and the job
///   writing the invalid header) until their end, commit included: it
///   rises under `pending` at publication, falls in
///   [`Snap::finish_exception`] / [`Snap::invalid_header_written`].
/// - No job is published for a snapshot that is inactive or handed over:
///   publication checks `active` and `handed_over` under `pending`, and
///   [`Snap::unregister`] and [`Snap::hand_over`] set their flag, then
///   take and drop `pending` before they wait for `outstanding`.
/// - `valid` only goes from true to false ([`Snap::invalidate`]);
///   `handed_over` and `overflowed` are never cleared; `users` never rises
///   from 0 (a snapshot being taken down is never joined).
/// - `listed` is 1 exactly while the snapshot is in its origin's list
///   (changed under `Snapshots::origins` and the list's write hold).
/// - Every write to the snapshot device is counted in `writes` from its
///   map until its clone ends, or covered by an outstanding job (a
///   whole-chunk write that is its job's copy).
/// - A read of a chunk sent to the origin (or a merge's write sent to a
///   COW chunk) is counted in `tracked` until its clone ends; no copy of
///   that chunk ends (and no origin write held on it goes) before.
/// - Lock order: `exceptions` → `pending` → the store's allocation;
///   `exceptions` → `merging`; `tracked` and `header_job` are leaves
///   (`Documentation/locking.rst`).
#[pin_data]
pub(crate) struct Snap {
    pub(super) origin: OriginRef,
    pub(crate) origin_dev: Arc<BdevFile>,
    pub(crate) cow: Arc<BdevFile>,
    pub(crate) geom: ChunkGeometry,
    pub(crate) store: Store,
    /// Completed exceptions: read on the map path, written by the copier
    /// to insert one.
    #[pin]
    pub(super) exceptions: RwSem<ExceptionTable<KLeaves>>,
    /// Pending exceptions by origin chunk (process context only; taken
    /// inside a read hold of `exceptions`).
    #[pin]
    pub(super) pending: SpinLock<RBTree<u64, Arc<Job>>>,
    pub(super) valid: AtomicBool,
    pub(super) active: AtomicBool,
    /// `PO`: a write to the snapshot found no room; its writes fail from
    /// now on, its reads go on.
    pub(super) overflowed: AtomicBool,
    /// The COW device was found smaller than the chunks in use (and this
    /// was logged); cleared by the next allocation that succeeds.
    pub(super) shrunk: AtomicBool,
    /// Snapshot targets using this snapshot (a reload shares it). Never
    /// goes up from 0: at 0 the snapshot is being taken down.
    pub(super) users: AtomicUsize,
    /// 1 while the snapshot is on its origin's list, 0 once its teardown
    /// took it off (a new load on its COW device waits for that).
    pub(super) listed: DrainCounter,
    /// Pending exceptions of this snapshot (from publication to the end of
    /// their job, commit included): the last user waits for them.
    pub(super) outstanding: DrainCounter,
    /// Reads of not-copied chunks sent to the origin and not completed
    /// (and a merge's writes sent to COW chunks), per chunk. A copy of
    /// such a chunk is not completed (and the origin write it holds not
    /// released) before they are done. Taken by completions
    /// (interrupt-safe), never with another lock inside.
    #[pin]
    pub(super) tracked: IrqSpinLock<TrackedReads>,
    /// The snapshot's length in sectors: origin chunks at or past it are
    /// not copied (set by the target that loads or resumes it).
    pub(super) len: AtomicU64,
    /// The copier's lane of the snapshot's own writes' jobs (and of its
    /// merge's copies back).
    pub(super) lane: Arc<Lane>,
    /// The event number of the device that loaded the snapshot.
    pub(super) events: Arc<EventCounter>,
    /// Handed over to a merge (dm: the source of the handover goes
    /// invalid): origin writes make no copies for it, its `snapshot`
    /// targets fail their I/O. Never cleared.
    pub(super) handed_over: AtomicBool,
    /// The merge's batch and held writes: taken inside a hold of
    /// `exceptions` (leaf; process context only).
    #[pin]
    pub(super) merging: SpinLock<MergeIo>,
    pub(crate) merge: MergeInfo,
    /// Writes to the snapshot device from their map to their completion
    /// (held on a job or sent to the COW device): a merge starts once the
    /// ones made before its handover are over.
    pub(super) writes: DrainCounter,
    /// The copier's job writing the invalid header of a persistent
    /// snapshot, while there is one: origin writes that must wait for that
    /// write are held on it (a leaf; process context).
    #[pin]
    pub(super) header_job: SpinLock<Option<Arc<Job>>>,
}

impl Snap {
    /// The snapshot's table went live with a target of `len` sectors: from
    /// now on origin writes preserve its chunks (those before `len`).
    /// Control path (a resume), holding no lock of the snapshot; waits for
    /// a merge batch of the origin in progress ([`MergeGate`]).
    ///
    /// [`MergeGate`]: super::origin::MergeGate
    pub(crate) fn activate(&self, len: u64) {
        self.len.store(len, Ordering::Release);
        if self.active.load(Ordering::Acquire) {
            return;
        }
        // Not in the middle of a merge batch of the origin: the batch made
        // the copies the snapshots active when it started needed.
        self.origin
            .gate
            .paused(|| self.active.store(true, Ordering::Release));
    }

    /// The origin the snapshot is of.
    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Whether the snapshot has origin chunk `chunk` (it is shorter than
    /// its origin after the origin grew).
    pub(super) fn has_chunk(&self, chunk: u64) -> bool {
        self.geom.has_chunk(chunk, self.len.load(Ordering::Acquire))
    }

    /// Whether the snapshot is valid (it never becomes valid again once
    /// invalid). Lock-free, any context.
    pub(crate) fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// A `PO` snapshot whose own write found no room (never cleared).
    /// Lock-free, any context.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Whether origin writes copy for the snapshot: active, valid and not
    /// handed over to a merge. Lock-free; publication checks it again under
    /// `pending` ([`publish_one`](super::publish)).
    pub(super) fn wants_copies(&self) -> bool {
        self.active.load(Ordering::Acquire) && self.is_valid() && !self.is_handed_over()
    }

    /// Counts a read of `chunk` sent to the origin (or a merge's write
    /// sent to its COW chunk), with no allocation (any lock may be held):
    /// `Err` if [`Snap::grow_tracked`] must make room first.
    pub(super) fn try_track(&self, chunk: u64) -> Result<(), BucketFull> {
        self.tracked.lock().try_track(chunk)
    }

    /// Makes the room `full` asks for (process context, no lock held).
    pub(super) fn grow_tracked(&self, full: &BucketFull) -> Result<(), kernel::alloc::AllocError> {
        let bigger = TrackedReads::grown(full)?;
        // The bucket left over is freed here, after the lock is dropped.
        let _left_over = self.tracked.lock().install(bigger);
        Ok(())
    }

    /// Whether reads of `chunk` sent to the origin are still in flight.
    pub(crate) fn reads_in_flight(&self, chunk: u64) -> bool {
        self.tracked.lock().in_flight(chunk)
    }

    /// Whether reads of `chunk` sent to the origin are still in flight,
    /// for the copier, which holds back the chunk's copy for them: the
    /// end of the last of them kicks it.
    pub(crate) fn reads_hold_copy(&self, chunk: u64) -> bool {
        self.tracked.lock().in_flight_kick_when_done(chunk)
    }

    /// A tracked read of `chunk` ended (any context): the copier looks
    /// again at a job it held back for it, if any.
    pub(super) fn untrack(&self, chunk: u64) {
        if self.tracked.lock().untrack(chunk) == Untracked::KickCopier {
            self.lane.kick();
        }
    }

    /// Ends the pending exception of `old`: records it as completed at
    /// `new` if `ok` (and the snapshot is still valid), and forgets the
    /// job. One write hold of `exceptions` for both, so map-path lookups
    /// (under a read hold) see either the pending job or the exception;
    /// then `outstanding` falls. A failure to record invalidates the
    /// snapshot. Copier thread (process context; may sleep for memory in
    /// its `NoIo` scope under the write hold).
    pub(crate) fn finish_exception(&self, old: u64, new: u64, ok: bool) {
        let mut ex = self.exceptions.write();
        let res = if ok && self.is_valid() {
            ex.insert(old, new)
        } else {
            Ok(())
        };
        drop(self.pending.lock().remove(&old));
        drop(ex);
        self.outstanding.dec();
        match res {
            Ok(()) => {}
            Err(InsertError::Duplicate) => {
                pr_err!("snapshot: chunk {old} was copied twice\n");
                self.invalidate("exception table inconsistent");
            }
            Err(e) => {
                pr_err!("snapshot: cannot record the copy of chunk {old}: {e}\n");
                self.invalidate("cannot record an exception");
            }
        }
    }

    /// Completed exceptions, their runs, and the bytes of their table
    /// (status and the `stats` message). Takes a read hold of `exceptions`.
    pub(crate) fn table_usage(&self) -> (u64, u64, usize) {
        let ex = self.exceptions.read();
        (ex.len(), ex.runs(), ex.bytes())
    }

    /// Maps again an origin write held on a job of this snapshot
    /// ([`Origin::write`] as the copier: never waits for the throttle).
    /// Copier thread, no lock held.
    pub(crate) fn origin_write_again(&self, bio: Bio) {
        self.origin.write(&self.origin_dev, bio, Caller::Copier);
    }
}
