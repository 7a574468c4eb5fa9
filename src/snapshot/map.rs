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
use crate::target::{EndHook, Io};
use core::sync::atomic::{fence, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

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
    /// Maps a snapshot bio (in origin sectors, inside one chunk) that the
    /// device handed over with `io`.
    pub(crate) fn map(self: &Arc<Self>, mut bio: Bio, io: Io<'_>) {
        let _noio = NoIo::enter();
        let write = match bio.op() {
            BioOp::Read => false,
            BioOp::Write => true,
            _ => {
                io.end(bio, true);
                return;
            }
        };
        // A write is counted until it completes (a merge waits for the
        // count after the handover); counted before the check, so that a
        // handover either is seen here or waits for this write.
        let mut count = WriteCount(None);
        if write {
            self.writes.inc();
            count = WriteCount(Some(self));
            fence(Ordering::SeqCst);
        }
        // Handed over to a merge, a snapshot device fails its I/O (dm: the
        // handover leaves the source invalid).
        if !self.is_valid() || self.is_handed_over() {
            io.end(bio, true);
            return;
        }
        if write && self.is_overflowed() {
            io.end(bio, true);
            return;
        }
        let chunk = self.geom.chunk_of(bio.sector());
        // A read of a chunk not copied is counted in `tracked`; if that
        // needs room, it is made with no lock held, then the lookups are
        // made again.
        loop {
            let ex = self.exceptions.read();
            if let Some(new) = ex.lookup(chunk) {
                drop(ex);
                self.remap_to_cow(&mut bio, new);
                if let Some(clone) = io.clone_bio(bio, Some(&self.cow), count.hook(self)) {
                    clone.submit();
                }
                return;
            }
            if !write {
                // Counted before the pending lookup, so that no origin
                // write to the chunk completes under the read: a job
                // published after this (under `pending`, which orders the
                // two) finds the read counted and waits for it; one
                // published before is found below.
                if let Err(full) = self.try_track(chunk) {
                    drop(ex);
                    if self.grow_tracked(&full).is_err() {
                        pr_err!("snapshot read: out of memory to track it\n");
                        io.end(bio, true);
                        return;
                    }
                    continue;
                }
            }
            let pending = self.pending.lock().get(&chunk).cloned();
            if let Some(job) = pending {
                drop(ex);
                if !write {
                    // Held on the copy instead: a read after it sees the
                    // old data at the COW chunk.
                    self.untrack(chunk);
                }
                let Some(clone) = io.clone_bio(bio, None, count.hook(self)) else {
                    return;
                };
                if let Err(clone) = job.hold_snapshot(self, clone) {
                    // The job ended between the lookup and the hold.
                    self.remap_held(clone);
                }
                return;
            }
            drop(ex);
            if !write {
                // Not copied: read the origin, tracked until it completes.
                let hook = hooks::untrack(self, chunk);
                if let Some(clone) = io.clone_bio(bio, Some(&self.origin_dev), hook) {
                    clone.submit();
                }
                return;
            }
            let lane = &self.lane;
            if !lane.take_slot(Caller::Submitter) {
                lane.wait_for_slot();
                continue;
            }
            let whole = self.geom.covers_whole_chunk(bio.sector(), bio.sectors());
            let kind = if whole {
                JobKind::Overwrite
            } else {
                JobKind::Copy
            };
            let Ok(job) = Job::new(lane, chunk, self.geom.sectors(), kind, 1) else {
                lane.put_slot();
                io.end(bio, true);
                return;
            };
            let Ok(node) = RBTreeNodeReservation::new(GFP_KERNEL) else {
                lane.put_slot();
                io.end(bio, true);
                return;
            };
            match publish_one(self, &job, chunk, node, Writer::Snapshot) {
                Published::Yes => {}
                Published::Overflow => {
                    lane.put_slot();
                    io.end(bio, true);
                    return;
                }
                Published::Shrunk => {
                    lane.put_slot();
                    // As `io.end`, with ENOSPC.
                    bio.end_no_space();
                    drop(io);
                    return;
                }
                Published::No => {
                    lane.put_slot();
                    if !self.is_valid() || self.is_handed_over() {
                        io.end(bio, true);
                        return;
                    }
                    continue;
                }
            }
            if whole {
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
                return;
            }
            // Queued before the clone is made: a chunk allocated to a job
            // must not wait behind anything (a clone may wait for memory
            // that held clones give back, and with a persistent store,
            // held clones wait for this job's commit).
            job.clone().enqueue();
            let Some(clone) = io.clone_bio(bio, None, count.hook(self)) else {
                // The copy still runs; nothing waits for it.
                return;
            };
            if let Err(clone) = job.hold_snapshot(self, clone) {
                self.remap_held(clone);
            }
            return;
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
