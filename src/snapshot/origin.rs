// SPDX-License-Identifier: GPL-2.0

//! Origin planning: what an origin write needs before it may reach the
//! origin device (which snapshots need a copy of which chunk, which
//! pending copy it waits on, which invalid header must be written first),
//! and carrying that out: [`Origin::write`] for a bio, [`Origin::preserve`]
//! for a merge about to overwrite origin chunks.

use super::copier::{Job, JobKind, Lane};
use super::publish::{publish_one, Published, Writer};
use super::snap::Snap;
use super::Caller;
use crate::kx::block::{BdevFile, Bio};
use crate::kx::memalloc::NoIo;
use crate::kx::sync::RwSem;
use crate::kx::wait::DrainCounter;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

/// An origin device and its snapshots.
#[pin_data]
pub(crate) struct Origin {
    pub(super) devt: u64,
    /// The registered snapshots: read by every origin write, written when a
    /// snapshot comes or goes (process context).
    #[pin]
    pub(super) snaps: RwSem<KVec<Option<Arc<Snap>>>>,
    /// Smallest chunk size among the snapshots, in sectors (0: none).
    pub(super) min_chunk: AtomicU32,
    /// The copier's lane of the copies origin writes need.
    pub(super) lane: Arc<Lane>,
    /// A merge's batch and the activation of a snapshot exclude each
    /// other (a snapshot made active in the middle of a batch would miss
    /// the copies the batch made before it overwrote the origin).
    pub(super) gate: MergeGate,
}

/// The exclusion of a merge's batches and snapshot activations on one
/// origin (dm suspends the origin and stops the merge instead): two
/// counters, no lock.
pub(super) struct MergeGate {
    /// Activations in progress: no batch starts.
    pub(super) paused: DrainCounter,
    /// A batch in progress (0 or 1).
    pub(super) busy: DrainCounter,
}

/// A merge batch in progress on its origin ([`MergeGate::enter`]).
pub(crate) struct GateHold<'a>(&'a MergeGate);

impl Drop for GateHold<'_> {
    fn drop(&mut self) {
        self.0.busy.dec();
    }
}

impl MergeGate {
    /// Waits until no activation is in progress and marks a batch as
    /// running. The merge thread, holding nothing.
    pub(super) fn enter(&self) -> GateHold<'_> {
        loop {
            self.busy.inc();
            if self.paused.get() == 0 {
                return GateHold(self);
            }
            self.busy.dec();
            self.paused.wait_zero();
        }
    }

    /// Runs `f` with no batch in progress (one running is waited for).
    /// Process context, holding nothing a batch needs.
    pub(super) fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        self.paused.inc();
        self.busy.wait_zero();
        let r = f();
        self.paused.dec();
        r
    }
}

/// What a bio must do about the exceptions, decided under the locks.
pub(super) enum WritePlan {
    /// Nothing to wait for: go ahead.
    Clear,
    /// Queue on this pending job.
    Wait(Arc<Job>),
    /// This snapshot went invalid and its header does not say so yet:
    /// write that first (a write that stops copying for a persistent
    /// snapshot must not reach the origin before the snapshot is marked
    /// invalid on disk).
    SyncInvalid(Arc<Snap>),
    /// A new copy is needed of `chunk` for snapshots of `chunk_sectors`;
    /// `cursor` is where the scan found it.
    Copy {
        chunk: u64,
        chunk_sectors: u64,
        cursor: (usize, u64),
    },
}

impl Origin {
    /// Smallest chunk size among the snapshots (0: none).
    pub(crate) fn min_chunk(&self) -> u64 {
        u64::from(self.min_chunk.load(Ordering::Acquire))
    }

    /// Decides what an origin write of `[sector, sector + sectors)` needs.
    /// With a `cursor` (a snapshot index and chunk where the last copy was
    /// made), the scan resumes there instead of at the start, so that a
    /// large write makes all its copies in one pass; only a full scan
    /// (`None`) may answer [`WritePlan::Clear`] or [`WritePlan::Wait`].
    ///
    /// Takes a read hold of `snaps`, and per snapshot a read hold of its
    /// `exceptions` and its `pending` lock; all are dropped before it
    /// returns. Never sleeps but on the `snaps` rwsem.
    pub(super) fn plan_write(
        &self,
        sector: u64,
        sectors: u64,
        cursor: Option<(usize, u64)>,
    ) -> WritePlan {
        let snaps = self.snaps.read();
        let mut wait = None;
        let (first_snap, resume_chunk) = cursor.unwrap_or((0, 0));
        for (i, snap) in snaps.iter().enumerate().skip(first_snap) {
            let Some(snap) = snap else { continue };
            if !snap.wants_copies() {
                if snap
                    .store
                    .persistent()
                    .is_some_and(|p| p.invalid_unsynced())
                {
                    return WritePlan::SyncInvalid(snap.clone());
                }
                continue;
            }
            let mut first = snap.geom.chunk_of(sector);
            if cursor.is_some() && i == first_snap {
                first = first.max(resume_chunk);
            }
            let last = snap.geom.chunk_of(sector + sectors - 1);
            let ex = snap.exceptions.read();
            // Chunks past the snapshot's length (the origin grew) are not
            // the snapshot's: never copied, as dm.
            for chunk in (first..=last).take_while(|&c| snap.has_chunk(c)) {
                if ex.lookup(chunk).is_some() {
                    continue;
                }
                if let Some(job) = snap.pending.lock().get(&chunk) {
                    wait.get_or_insert_with(|| job.clone());
                    continue;
                }
                return WritePlan::Copy {
                    chunk,
                    chunk_sectors: snap.geom.sectors(),
                    cursor: (i, chunk),
                };
            }
        }
        match wait {
            Some(job) => WritePlan::Wait(job),
            None => WritePlan::Clear,
        }
    }

    /// Whether an origin write of `[sector, sector + sectors)` may go to
    /// the origin at once (every active snapshot has those chunks).
    pub(crate) fn write_is_clear(&self, sector: u64, sectors: u64) -> bool {
        matches!(self.plan_write(sector, sectors, None), WritePlan::Clear)
    }

    /// Makes a job copying `chunk` and publishes it as the pending exception
    /// of every active snapshot of its chunk size that still needs the
    /// chunk, giving each a COW chunk. Returns the job, how many snapshots
    /// it serves, and whether a snapshot that needs the chunk has no room
    /// for it because its COW device shrank (the write must fail).
    ///
    /// Takes a read hold of `snaps` throughout, and [`publish_one`]'s locks
    /// per snapshot; every allocation is made before the first COW chunk is
    /// taken. The job is not queued. Process context; may sleep for
    /// memory (no I/O: the caller is in a `NoIo` scope). Errors: ENOMEM.
    pub(super) fn publish_copy(
        &self,
        chunk: u64,
        chunk_sectors: u64,
    ) -> Result<(Arc<Job>, usize, bool)> {
        let snaps = self.snaps.read();
        // Room for every snapshot there is: registering one needs the
        // write lock we keep out.
        let job = Job::new(&self.lane, chunk, chunk_sectors, JobKind::Copy, snaps.len())?;
        let job = &job;
        // Every allocation before the first COW chunk is taken: from then
        // on the job must reach the queue without waiting (see `map`).
        let mut nodes = KVec::with_capacity(snaps.len(), GFP_KERNEL)?;
        for _ in 0..snaps.len() {
            nodes.push(Some(RBTreeNodeReservation::new(GFP_KERNEL)?), GFP_KERNEL)?;
        }
        let mut served = 0;
        let mut shrunk = false;
        for (snap, node) in snaps.iter().zip(nodes.iter_mut()) {
            let Some(snap) = snap else { continue };
            if snap.geom.sectors() != chunk_sectors
                || !snap.wants_copies()
                || !snap.has_chunk(chunk)
            {
                continue;
            }
            let Some(node) = node.take() else { continue };
            match publish_one(snap, job, chunk, node, Writer::Origin) {
                Published::Yes => served += 1,
                Published::Shrunk => shrunk = true,
                Published::No | Published::Overflow => {}
            }
        }
        Ok((job.clone(), served, shrunk))
    }

    /// An origin write (a counted clone, in origin sectors): goes to the
    /// origin device once every active snapshot has the old data of the
    /// chunks it covers; until then it is held on a pending copy (or on the
    /// job writing an invalidated snapshot's header). Plans with
    /// [`Origin::plan_write`] and carries each plan out until the bio is
    /// sent, held or ended.
    ///
    /// Context: the submit path ([`Caller::Submitter`]: may wait for room
    /// in the throttle, holding no lock) or the copier re-mapping a bio it
    /// held ([`Caller::Copier`]: never waits). Nothing here waits for I/O.
    pub(crate) fn write(&self, dev: &BdevFile, mut bio: Bio, caller: Caller) {
        let _noio = NoIo::enter();
        let mut cursor = None;
        let mut made: Option<Arc<Job>> = None;
        loop {
            let plan = self.plan_write(bio.sector(), bio.sectors(), cursor);
            if cursor.is_some() && !matches!(plan, WritePlan::Copy { .. }) {
                // Nothing more to copy after the cursor. Hold the write on
                // a job made here: when it ends, the write is planned
                // again from the start, which sees anything this pass
                // skipped. If that job already ended, plan from the start
                // now.
                cursor = None;
                if let Some(job) = made.take() {
                    match job.hold_origin(bio) {
                        Ok(()) => return,
                        Err(b) => bio = b,
                    }
                }
                continue;
            }
            match plan {
                WritePlan::Clear => {
                    bio.set_dev(dev);
                    bio.submit();
                    return;
                }
                WritePlan::Wait(job) => match job.hold_origin(bio) {
                    Ok(()) => return,
                    // The job ended meanwhile: decide again.
                    Err(b) => bio = b,
                },
                WritePlan::SyncInvalid(snap) => {
                    // Held until the copier has written the header: this
                    // may be a submit_bio (whose own I/O is only sent once
                    // it returns) or the copier itself, so nothing here
                    // waits for I/O.
                    match snap.invalid_header_job() {
                        Ok(Some(job)) => match job.hold_origin(bio) {
                            Ok(()) => return,
                            Err(b) => bio = b,
                        },
                        // Written meanwhile: decide again.
                        Ok(None) => {}
                        Err(_) => {
                            pr_err!("origin write: out of memory to mark a snapshot invalid\n");
                            bio.end(true);
                            return;
                        }
                    }
                }
                WritePlan::Copy {
                    chunk,
                    chunk_sectors,
                    cursor: at,
                } => {
                    if !self.lane.take_permit(caller) {
                        // Wait for room holding no lock (seed 003), then
                        // decide again: the chunk may be copied by now.
                        self.lane.wait_for_permit();
                        continue;
                    }
                    let Ok((job, served, shrunk)) = self.publish_copy(chunk, chunk_sectors) else {
                        self.lane.put_permit();
                        pr_err!("origin write: out of memory for a copy\n");
                        bio.end(true);
                        return;
                    };
                    if shrunk {
                        // A snapshot's COW device shrank below what it
                        // holds: the write fails, and the snapshot keeps
                        // everything (dm would invalidate it). The copies
                        // for the other snapshots go on.
                        if served > 0 {
                            job.enqueue();
                        } else {
                            self.lane.put_permit();
                        }
                        bio.end_no_space();
                        return;
                    }
                    cursor = Some(at);
                    if served == 0 {
                        // Another writer got there first (or every snapshot
                        // went invalid): decide again.
                        self.lane.put_permit();
                        continue;
                    }
                    made = Some(job.clone());
                    job.enqueue();
                }
            }
        }
    }
}

impl Origin {
    /// Makes every active snapshot that still needs the data of
    /// `[sector, sector + sectors)` copy it first (a merge is about to
    /// overwrite those origin chunks), as an origin write would, but with
    /// no bio: returns a job to wait for if a copy is pending (`None`: the
    /// range is clear), ENOSPC if a snapshot that needs the data has a COW
    /// device shrunk below the chunks it holds. Copies are made past `cow_threshold` (the merge
    /// thread waits for them anyway, holding nothing). Process context.
    pub(crate) fn preserve(&self, sector: u64, sectors: u64) -> Result<Option<Arc<Job>>> {
        let _noio = NoIo::enter();
        let mut cursor = None;
        let mut made = None;
        loop {
            let plan = self.plan_write(sector, sectors, cursor);
            if cursor.is_some() && !matches!(plan, WritePlan::Copy { .. }) {
                // Nothing more to copy after the cursor: wait for a job
                // made here; the caller scans again afterwards.
                if made.is_some() {
                    return Ok(made);
                }
                cursor = None;
                continue;
            }
            match plan {
                WritePlan::Clear => return Ok(None),
                WritePlan::Wait(job) => return Ok(Some(job)),
                WritePlan::SyncInvalid(snap) => {
                    if let Some(job) = snap.invalid_header_job()? {
                        return Ok(Some(job));
                    }
                }
                WritePlan::Copy {
                    chunk,
                    chunk_sectors,
                    cursor: at,
                } => {
                    self.lane.take_permit(Caller::Copier);
                    let (job, served, shrunk) = match self.publish_copy(chunk, chunk_sectors) {
                        Ok(made) => made,
                        Err(e) => {
                            self.lane.put_permit();
                            return Err(e);
                        }
                    };
                    if shrunk {
                        // A snapshot's COW device shrank below what it
                        // holds: the chunk cannot be preserved for it, so
                        // the merge must not overwrite it (as an origin
                        // write fails). The snapshot keeps everything; the
                        // copies for the others go on.
                        if served > 0 {
                            job.enqueue();
                        } else {
                            self.lane.put_permit();
                        }
                        return Err(ENOSPC);
                    }
                    cursor = Some(at);
                    if served == 0 {
                        self.lane.put_permit();
                        continue;
                    }
                    job.clone().enqueue();
                    made = Some(job);
                }
            }
        }
    }
}
