// SPDX-License-Identifier: GPL-2.0

//! The snapshot map path: what a bio of a `snapshot` target does, as a
//! [`MapPlan`] decided by small functions under the snapshot's locks and
//! carried out by [`Snap::map`]; and the re-map of bios held on a job.

use super::copier::{Job, JobKind};
use super::hooks;
use super::publish::{publish_one, Published, Writer};
use super::snap::Snap;
use super::Caller;
use crate::kx::block::{Bio, BioOp};
use crate::kx::memalloc::NoIo;
use crate::rdm_core::snapshot::{chunk_step, snapshot_admits, Access, ChunkState, ChunkStep};
use crate::target::{EndHook, Io};
use core::sync::atomic::{fence, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

/// What to do with a bio of a `snapshot` target, decided by
/// [`Snap::plan`] (and [`Snap::plan_copy`] for a write that needs a new
/// copy) and carried out by [`Snap::carry_out`].
pub(super) enum MapPlan {
    /// Fail the bio (EIO).
    Fail,
    /// Fail the bio with ENOSPC: the COW device shrank below the chunks in
    /// use (the snapshot is kept).
    NoSpace,
    /// The chunk is copied at this COW chunk: remap there.
    ToCow(u64),
    /// The chunk's copy is pending: hold the bio on the job until it ends.
    Hold(Arc<Job>),
    /// A read of a chunk not copied, counted in [`Snap::tracked`]: read
    /// the origin; the clone's end un-tracks the chunk.
    ReadOrigin,
    /// A write covering its whole chunk, whose job (published, not yet
    /// queued) has the COW chunk: the write is the copy.
    Overwrite(Arc<Job>),
    /// A partial write whose job (published, not yet queued) copies the
    /// chunk first: hold the bio on it.
    CopyFirst(Arc<Job>),
}

/// A snapshot-device write counted in [`Snap::writes`]: the count goes
/// when this is dropped, unless the completion hook of the write's clone
/// took it over ([`WriteCount::hook`]).
pub(super) struct WriteCount<'a>(Option<&'a Snap>);

impl WriteCount<'_> {
    /// The hook of the clone that carries the bio on: it uncounts the
    /// write when it completes (nothing for a read).
    pub(super) fn hook(&mut self, snap: &Arc<Snap>) -> EndHook {
        match self.0.take() {
            Some(_) => hooks::uncount(snap),
            None => EndHook::NONE,
        }
    }
}

impl Drop for WriteCount<'_> {
    fn drop(&mut self) {
        if let Some(snap) = self.0 {
            snap.writes.dec();
        }
    }
}

impl Snap {
    /// Maps a bio of a `snapshot` target (in origin sectors, inside one
    /// chunk) that the device handed over with `io`: plans it
    /// ([`Snap::plan`]) until a plan is final, then carries the plan out.
    ///
    /// Context: the map path (process context, `submit_bio`); may sleep
    /// for memory and for room in the copier's throttle, never holding a
    /// lock of the snapshot. Ends or sends on the bio in every case.
    pub(crate) fn map(self: &Arc<Self>, bio: Bio, io: Io<'_>) {
        let _noio = NoIo::enter();
        let access = match bio.op() {
            BioOp::Read => Access::Read,
            BioOp::Write => Access::Write,
            _ => {
                io.end(bio, true);
                return;
            }
        };
        let mut count = self.count_write(access);
        if !self.admits(access) {
            io.end(bio, true);
            return;
        }
        let chunk = self.geom.chunk_of(bio.sector());
        let whole = self.geom.covers_whole_chunk(bio.sector(), bio.sectors());
        let plan = loop {
            if let Some(plan) = self.plan(chunk, access, whole) {
                break plan;
            }
        };
        self.carry_out(plan, bio, io, chunk, &mut count);
    }

    /// Counts a write in [`Snap::writes`] until it completes (a merge
    /// waits for the count after the handover). Counted before the checks
    /// of [`Snap::admits`], with a full fence against
    /// [`Snap::hand_over`]'s swap: a handover either is seen by the
    /// checks or waits for this write. Returns nothing counted for a read.
    fn count_write(&self, access: Access) -> WriteCount<'_> {
        if access == Access::Read {
            return WriteCount(None);
        }
        self.writes.inc();
        fence(Ordering::SeqCst);
        WriteCount(Some(self))
    }

    /// Whether the snapshot takes a bio of `access` now (see
    /// [`snapshot_admits`]). Lock-free.
    fn admits(&self, access: Access) -> bool {
        snapshot_admits(
            access,
            self.is_valid(),
            self.is_handed_over(),
            self.is_overflowed(),
        )
    }

    /// Decides what a bio of `access` to `chunk` (`whole`: covering it)
    /// does, under a read hold of `exceptions` and then `pending`, both
    /// dropped before it returns ([`chunk_step`] picks the step).
    ///
    /// A read of a chunk not copied is counted in `tracked` before the
    /// pending lookup, so that no origin write to the chunk completes
    /// under the read: a job published after this (under `pending`, which
    /// orders the two) finds the read counted and waits for it; one
    /// published before is found here, and the read, held on it instead,
    /// is un-tracked again.
    ///
    /// Returns `None` when it must be called again: the count needed room,
    /// made here with no lock held, or [`Snap::plan_copy`] asked for it.
    /// Process context; sleeps only with no lock held.
    fn plan(self: &Arc<Self>, chunk: u64, access: Access, whole: bool) -> Option<MapPlan> {
        let ex = self.exceptions.read();
        let copied = ex.lookup(chunk);
        if copied.is_none() && access == Access::Read {
            if let Err(full) = self.try_track(chunk) {
                drop(ex);
                if self.grow_tracked(&full).is_err() {
                    pr_err!("snapshot read: out of memory to track it\n");
                    return Some(MapPlan::Fail);
                }
                return None;
            }
        }
        let state = match copied {
            Some(new) => ChunkState::Copied(new),
            None => match self.pending.lock().get(&chunk).cloned() {
                Some(job) => ChunkState::Pending(job),
                None => ChunkState::NotCopied,
            },
        };
        drop(ex);
        match chunk_step(access, state) {
            ChunkStep::ToCow(new) => Some(MapPlan::ToCow(new)),
            ChunkStep::HoldOn(job) => {
                if access == Access::Read {
                    // Held on the copy instead: a read after it sees the
                    // old data at the COW chunk.
                    self.untrack(chunk);
                }
                Some(MapPlan::Hold(job))
            }
            ChunkStep::ReadOrigin => Some(MapPlan::ReadOrigin),
            ChunkStep::NewCopy => self.plan_copy(chunk, whole),
        }
    }

    /// Makes the copy a write to `chunk` (neither copied nor pending)
    /// needs: takes room in the snapshot's lane of the copier throttle
    /// (a submitter's: under `cow_threshold`), makes a job (an overwrite
    /// if the write covers the chunk, `whole`) and publishes it as the
    /// chunk's pending exception with a COW chunk ([`publish_one`]). The
    /// job is not queued: [`Snap::carry_out`] queues it.
    ///
    /// Returns `None` to plan again: there was no room in the throttle
    /// (waited for here, holding no lock), or another writer published the
    /// chunk first. Process context, no lock held.
    fn plan_copy(self: &Arc<Self>, chunk: u64, whole: bool) -> Option<MapPlan> {
        let lane = &self.lane;
        if !lane.take_permit(Caller::Submitter) {
            lane.wait_for_permit();
            return None;
        }
        let kind = if whole {
            JobKind::Overwrite
        } else {
            JobKind::Copy
        };
        let Ok(job) = Job::new(lane, chunk, self.geom.sectors(), kind, 1) else {
            lane.put_permit();
            return Some(MapPlan::Fail);
        };
        let Ok(node) = RBTreeNodeReservation::new(GFP_KERNEL) else {
            lane.put_permit();
            return Some(MapPlan::Fail);
        };
        match publish_one(self, &job, chunk, node, Writer::Snapshot) {
            Published::Yes if whole => Some(MapPlan::Overwrite(job)),
            Published::Yes => Some(MapPlan::CopyFirst(job)),
            Published::Overflow => {
                lane.put_permit();
                Some(MapPlan::Fail)
            }
            Published::Shrunk => {
                lane.put_permit();
                Some(MapPlan::NoSpace)
            }
            Published::No => {
                lane.put_permit();
                if !self.is_valid() || self.is_handed_over() {
                    return Some(MapPlan::Fail);
                }
                None
            }
        }
    }

    /// Carries out `plan` for `bio` (of `chunk`, handed over with `io`;
    /// `count` is its write count, which the clone's end hook takes over
    /// when the bio goes on as a clone). Ends, sends or holds the bio.
    /// Process context, no lock held; never waits for the throttle.
    fn carry_out(
        self: &Arc<Self>,
        plan: MapPlan,
        mut bio: Bio,
        io: Io<'_>,
        chunk: u64,
        count: &mut WriteCount<'_>,
    ) {
        match plan {
            MapPlan::Fail => io.end(bio, true),
            MapPlan::NoSpace => {
                // As `io.end`, with ENOSPC.
                bio.end_no_space();
                drop(io);
            }
            MapPlan::ToCow(new) => {
                self.remap_to_cow(&mut bio, new);
                if let Some(clone) = io.clone_bio(bio, Some(&self.cow), count.hook(self)) {
                    clone.submit();
                }
            }
            MapPlan::Hold(job) => {
                let Some(clone) = io.clone_bio(bio, None, count.hook(self)) else {
                    return;
                };
                if let Err(clone) = job.hold_snapshot(self, clone) {
                    // The job ended between the lookup and the hold.
                    self.remap_held(clone);
                }
            }
            MapPlan::ReadOrigin => {
                // Not copied: read the origin, tracked until it completes.
                let hook = hooks::untrack(self, chunk);
                if let Some(clone) = io.clone_bio(bio, Some(&self.origin_dev), hook) {
                    clone.submit();
                }
            }
            MapPlan::Overwrite(job) => {
                // The write is the copy: send it to the COW chunk now; its
                // completion hands it to the job, which acknowledges it
                // when the exception is recorded (and committed). (The
                // job is an outstanding exception: a merge waits for it,
                // and so for this write, without the write count.)
                let new = job.first_new_chunk();
                self.remap_to_cow(&mut bio, new);
                let hook = hooks::own_write(&job);
                job.enqueue();
                if let Some(clone) = io.clone_bio(bio, Some(&self.cow), hook) {
                    clone.submit();
                }
            }
            MapPlan::CopyFirst(job) => {
                // Queued before the clone is made: a chunk allocated to a
                // job must not wait behind anything (a clone may wait for
                // memory that held clones give back, and with a persistent
                // store, held clones wait for this job's commit).
                job.clone().enqueue();
                let Some(clone) = io.clone_bio(bio, None, count.hook(self)) else {
                    // The copy still runs; nothing waits for it.
                    return;
                };
                if let Err(clone) = job.hold_snapshot(self, clone) {
                    self.remap_held(clone);
                }
            }
        }
    }

    pub(super) fn remap_to_cow(&self, bio: &mut Bio, new_chunk: u64) {
        let off = self.geom.offset_in_chunk(bio.sector());
        bio.set_sector(self.geom.sector_of(new_chunk) + off);
    }

    /// Maps a held snapshot bio (a counted clone) again after the job it
    /// waited on ended: to its COW chunk, or onto another pending job.
    pub(crate) fn remap_held(self: &Arc<Self>, mut bio: Bio) {
        if !self.is_valid() {
            bio.end(true);
            return;
        }
        let chunk = self.geom.chunk_of(bio.sector());
        let ex = self.exceptions.read();
        if let Some(new) = ex.lookup(chunk) {
            drop(ex);
            self.remap_to_cow(&mut bio, new);
            bio.set_dev(&self.cow);
            bio.submit();
            return;
        }
        let pending = self.pending.lock().get(&chunk).cloned();
        drop(ex);
        match pending {
            Some(job) => {
                if let Err(bio) = job.hold_snapshot(self, bio) {
                    self.remap_held(bio);
                }
            }
            None => {
                // A job that ended without an exception failed, and failing
                // invalidates the snapshot; reaching here is a bug.
                pr_err!("snapshot: chunk {chunk} neither copied nor pending after its copy\n");
                bio.end(true);
            }
        }
    }
}
