// SPDX-License-Identifier: GPL-2.0

//! The merge of a persistent snapshot back into its origin: the thread
//! behind a `snapshot-merge` target.
//!
//! On disk the merge is dm-snapshot's (`snapshot_merge_next_chunks`,
//! `merge_callback`, `persistent_prepare_merge`/`persistent_commit_merge`):
//! exceptions leave the end of the list, newest first, and an entry is
//! dropped only after its chunk is back on the origin and the origin has
//! been flushed, by rewriting the area the new end of the list falls in
//! (FLUSH+FUA). So a merge begun by dm-snapshot finishes here and the
//! other way round, and a power cut at any point leaves a list whose
//! entries are all still on their COW chunks (`rdm_core::persistent`,
//! `merge_cut`).
//!
//! Where dm copies one run of consecutive chunks of one area at a time
//! (one kcopyd job, a flush and an area write per run), a batch here is
//! up to [`BATCH_CHUNKS`] entries and [`BATCH_BYTES`] of chunks, across
//! areas: its copies go to the copier as [`JobKind::Merge`] jobs of the
//! snapshot's lane (up to 64 with I/O in flight, runs of consecutive
//! chunks in one job of up to 1 MiB), then one origin flush and one area
//! write end the batch. A batch:
//!
//! 1. reads its entries (the areas before the last one from the device);
//! 2. waits for no snapshot activation of the origin to be in progress
//!    (the origin's merge gate), then makes every other active snapshot of
//!    the origin copy the batch's chunks it still needs (the origin's
//!    write path, without a bio), and waits for those copies;
//! 3. sets aside what removing the batch from the exception table needs
//!    (it cannot fail once on disk);
//! 4. marks the chunks as merging: writes to them through the merge
//!    target are held from now on; the writes sent to their COW copies
//!    before are waited for;
//! 5. copies the chunks back (merge jobs), flushes the origin, cuts the
//!    list (the area write);
//! 6. drops the chunks from the exception table and lets the held writes
//!    go to the origin (they are merged, and the other snapshots have
//!    their copies).
//!
//! An error stops the merge (the status says `Merge failed`, the log
//! why): what was merged stays merged, the batch's chunks keep their
//! exceptions (a chunk copied back but not cut from the list is copied
//! again by the next merge: its COW chunk did not change), the held
//! writes go to their COW chunks. The next resume tries again. A suspend
//! or a teardown stops the thread after its batch.
//!
//! The thread sleeps on I/O, on the copier's jobs and on the gate,
//! holding no lock: the copier and the I/O paths never wait for it, and
//! nothing it waits for needs a device's state lock.

use super::copier::{Job, JobGroup, MAX_PIECE_BYTES};
use super::store::Persistent;
use super::{Caller, Snap, MERGE_DONE, MERGE_FAILED, MERGE_RUNNING, MERGE_STOPPED};
use crate::kx::kthread::{Current, ThreadBody};
use crate::kx::memalloc::NoIo;
use crate::kx::wait::{sleep_ms, EventCounter};
use crate::params::merge_kib_per_s;
use crate::rdm_core::persistent::merge_copies;
use core::fmt;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::{ktime_ms_delta, Ktime};

/// Most entries in one batch.
pub(crate) const BATCH_CHUNKS: u64 = 4096;
/// Most bytes of chunks in one batch (always at least one chunk).
pub(crate) const BATCH_BYTES: u64 = 16 << 20;

/// Why a merge stopped on an error.
pub(crate) enum MergeError {
    /// Reading the COW device (an area or a chunk) failed.
    CowRead,
    /// Writing or flushing the origin failed.
    OriginWrite,
    /// Writing the metadata area failed.
    CowWrite,
    /// An entry on disk has no exception in memory.
    NotInMemory(u64),
    /// No memory.
    NoMem,
    /// Another snapshot of the origin needs a chunk of the batch copied
    /// but its COW device is smaller than the chunks it holds.
    OtherShrunk,
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::CowRead => write!(f, "I/O error reading the COW device"),
            MergeError::OriginWrite => write!(f, "I/O error writing the origin"),
            MergeError::CowWrite => write!(f, "I/O error writing the snapshot metadata"),
            MergeError::NotInMemory(c) => {
                write!(f, "the exception of chunk {c} is on disk but not in memory")
            }
            MergeError::NoMem => write!(f, "out of memory"),
            MergeError::OtherShrunk => write!(
                f,
                "another snapshot of the origin needs a copy of a chunk but its COW device shrank below the space in use"
            ),
        }
    }
}

/// The errors of the merge's own work (allocations) are out of memory.
impl From<Error> for MergeError {
    fn from(_: Error) -> Self {
        MergeError::NoMem
    }
}

impl From<kernel::alloc::AllocError> for MergeError {
    fn from(_: kernel::alloc::AllocError) -> Self {
        MergeError::NoMem
    }
}

/// The body of a merge thread (`rdm_merge`), started when a
/// `snapshot-merge` target resumes and stopped when it suspends or goes.
pub(crate) struct MergeThread {
    pub(crate) snap: Arc<Snap>,
    /// The merge device's event number: bumped when the merge ends (done
    /// or failed).
    pub(crate) events: Arc<EventCounter>,
}

impl ThreadBody for MergeThread {
    fn run(&self, me: &Current) {
        let _noio = NoIo::enter();
        let snap = &self.snap;
        // The handover: the copies and commits of the snapshot that were
        // under way end first (it publishes no new one once handed over).
        snap.outstanding.wait_zero();
        // And the snapshot device's writes made before it (to chunks with
        // exceptions, or held on the jobs just waited for).
        snap.writes.wait_zero();
        let Some(p) = snap.store.persistent() else {
            snap.merge.running.store(false, Ordering::Release);
            return;
        };
        if p.list_len() == 0 && snap.merge.state.load(Ordering::Acquire) == MERGE_DONE {
            // Resumed again after the end: nothing to say.
            snap.merge.running.store(false, Ordering::Release);
            return;
        }
        snap.merge.state.store(MERGE_RUNNING, Ordering::Release);
        let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(snap.cow.devt());
        let mut pace = Pace::new();
        let end = loop {
            if me.should_stop() {
                break MERGE_STOPPED;
            }
            match self.batch(p, &mut pace) {
                Ok(true) => {}
                Ok(false) => {
                    pr_info!(
                        "snapshot-merge: COW device {ma}:{mi}: merge complete ({} chunks merged)\n",
                        snap.merge.merged.load(Ordering::Acquire)
                    );
                    break MERGE_DONE;
                }
                Err(e) => {
                    pr_err!(
                        "snapshot-merge: COW device {ma}:{mi}: merge stopped: {e}; the {} chunks merged are kept, {} exceptions are left\n",
                        snap.merge.merged.load(Ordering::Acquire),
                        p.list_len()
                    );
                    break MERGE_FAILED;
                }
            }
        };
        snap.merge.state.store(end, Ordering::Release);
        snap.merge.running.store(false, Ordering::Release);
        if end != MERGE_STOPPED {
            self.events.bump();
        }
    }
}

/// The `merge_kib_per_s` limit, if any: when the next copy may start.
struct Pace {
    start: Ktime,
    bytes: u64,
}

impl Pace {
    fn new() -> Self {
        Pace {
            start: Ktime::ktime_get(),
            bytes: 0,
        }
    }

    /// The batch size the limit allows: about a second of copying.
    fn batch_bytes(limit: u32) -> u64 {
        match limit {
            0 => BATCH_BYTES,
            kib => BATCH_BYTES.min(u64::from(kib) << 10),
        }
    }

    /// Waits until `bytes` more may be copied.
    fn wait(&mut self, bytes: u64) {
        let limit = u64::from(merge_kib_per_s());
        if limit == 0 {
            self.bytes = 0;
            self.start = Ktime::ktime_get();
            return;
        }
        let due_ms = (self.bytes * 1000).checked_div(limit << 10).unwrap_or(0);
        loop {
            let now = ktime_ms_delta(Ktime::ktime_get(), self.start);
            let now = u64::try_from(now).unwrap_or(0);
            if now >= due_ms {
                break;
            }
            sleep_ms(u32::try_from(due_ms - now).unwrap_or(u32::MAX).min(100));
        }
        self.bytes += bytes;
    }
}

impl MergeThread {
    /// One batch; `Ok(false)` when nothing is left to merge.
    fn batch(&self, p: &Persistent, pace: &mut Pace) -> Result<bool, MergeError> {
        let snap = &self.snap;
        let cs = snap.geom.sectors();
        let len = p.list_len();
        if len == 0 {
            return Ok(false);
        }
        let chunk_bytes = cs << 9;
        let bytes = Pace::batch_bytes(merge_kib_per_s());
        let max = BATCH_CHUNKS
            .min(bytes.checked_div(chunk_bytes).unwrap_or(1))
            .max(1);
        let lo = len.saturating_sub(max);
        let mut entries = KVVec::new();
        let image = p.merge_read(lo, len, &mut entries).map_err(|e| {
            if e == ENOMEM {
                MergeError::NoMem
            } else {
                MergeError::CowRead
            }
        })?;
        entries.sort_unstable_by_key(|e| e.0);
        let origin = snap.origin();
        // No snapshot of the origin becomes active until the batch is over.
        let _gate = origin.gate.enter();
        self.preserve_others(&entries)?;
        let mut desc = KVVec::with_capacity(entries.len(), GFP_KERNEL)?;
        let mut asc = KVVec::with_capacity(entries.len(), GFP_KERNEL)?;
        for e in entries.iter().rev() {
            desc.push(e.0, GFP_KERNEL)?;
        }
        for e in entries.iter() {
            asc.push(e.0, GFP_KERNEL)?;
        }
        snap.merge_reserve(&desc).map_err(|e| match e {
            Some(c) => MergeError::NotInMemory(c),
            None => MergeError::NoMem,
        })?;
        snap.merge_begin(asc);
        snap.wait_untracked(entries.iter().map(|e| e.0));
        let res = self
            .copy_back(&entries, pace)
            .and_then(|()| {
                snap.origin_dev
                    .flush_sync()
                    .map_err(|_| MergeError::OriginWrite)
            })
            .and_then(|()| p.merge_cut(lo, image).map_err(|_| MergeError::CowWrite));
        snap.merge_end(&desc, res.is_ok());
        res?;
        snap.merge.merged.fetch_add(len - lo, Ordering::AcqRel);
        snap.merge.batches.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Makes every other active snapshot of the origin copy the batch's
    /// chunks it still needs before they are overwritten (dm's
    /// `origin_write_extent`), and waits for those copies: publishes them
    /// all, then waits for a job to end and looks again from the first
    /// chunk not clear.
    fn preserve_others(&self, entries: &[(u64, u64)]) -> Result<(), MergeError> {
        let snap = &self.snap;
        let origin = snap.origin();
        let cs = snap.geom.sectors();
        let origin_sectors = snap.origin_dev.nr_sectors();
        let finished = &snap.lane.copier().finished;
        let mut first = 0;
        loop {
            let seen = finished.get();
            let mut unclear = None;
            for (i, &(old, _)) in entries.iter().enumerate().skip(first) {
                let start = old * cs;
                if start >= origin_sectors {
                    continue;
                }
                let sectors = cs.min(origin_sectors - start);
                let pending = origin.preserve(start, sectors).map_err(|e| {
                    if e == ENOSPC {
                        MergeError::OtherShrunk
                    } else {
                        MergeError::NoMem
                    }
                })?;
                if pending.is_some() {
                    unclear.get_or_insert(i);
                }
            }
            match unclear {
                None => return Ok(()),
                Some(i) => {
                    first = i;
                    // Interrupted only by a signal, which a kthread does
                    // not get: then this looks again, as after a wake-up.
                    let _ = finished.wait_change(seen);
                }
            }
        }
    }

    /// Copies the batch's chunks back to the origin: runs of consecutive
    /// chunks in jobs of up to 1 MiB, all queued at once (the copier's
    /// lane limits how many run), and waits for them.
    fn copy_back(&self, entries: &[(u64, u64)], pace: &mut Pace) -> Result<(), MergeError> {
        let snap = &self.snap;
        let cs = snap.geom.sectors();
        let group = JobGroup::new()?;
        let per_job = (MAX_PIECE_BYTES as u64)
            .checked_div(cs << 9)
            .unwrap_or(1)
            .max(1);
        let mut res = Ok(());
        for (old, new, chunks) in merge_copies(entries, per_job) {
            pace.wait(chunks * (cs << 9));
            let job = match Job::merge(snap, old, new, chunks, &group) {
                Ok(job) => job,
                Err(_) => {
                    res = Err(MergeError::NoMem);
                    break;
                }
            };
            // Never throttled: what the merge queues, the copier ends.
            snap.lane.take_permit(Caller::Copier);
            group.left.inc();
            job.enqueue();
        }
        group.left.wait_zero();
        res?;
        if group.cow_failed.load(Ordering::Acquire) {
            return Err(MergeError::CowRead);
        }
        if group.origin_failed.load(Ordering::Acquire) {
            return Err(MergeError::OriginWrite);
        }
        if group.failed.load(Ordering::Acquire) {
            return Err(MergeError::NoMem);
        }
        Ok(())
    }
}
