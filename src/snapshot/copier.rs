// SPDX-License-Identifier: GPL-2.0

//! The copier: one kthread that runs every chunk copy ([`Job`]).
//!
//! A job reads its origin chunk once into a page buffer and writes it to
//! the COW chunk of every snapshot it serves; then it records the
//! exceptions, forgets the pending exceptions and re-maps the bios held on
//! it. A whole-chunk snapshot write is a job with no copy: the write
//! itself fills the COW chunk. Marking a persistent snapshot invalid on
//! disk is a job too (its one write is the header): origin writes that
//! must not go before it are held on it.
//!
//! Persistent stores. A finished copy is staged in its store and the job
//! parked; each round the thread drives every store's commit (one in
//! flight per store, asynchronous: copies go on while the metadata is
//! written) and ends the parked jobs whose exceptions are durable. The
//! thread never waits for I/O: a COW device may itself be an rdm device
//! whose I/O needs this thread (stacked snapshots).
//!
//! Bounds. `cow_threshold` bounds the jobs in progress (from creation to
//! the end of `finish`): a writer that needs a new job beyond it waits in
//! [`Copier::wait_for_slot`] holding no lock (the 2019 dm-snapshot deadlock
//! was a writer sleeping on this bound while holding a lock the completion
//! path needed). Only new copies wait: a write to a copied chunk, or to a
//! chunk already pending (it is queued on that job), never does, and the
//! copier's own re-maps never wait, nor does anything submitted from the
//! copier thread (a COW device that is an rdm origin or snapshot maps its
//! writes on this thread, and waiting there would wait for itself).
//! Separately, at most [`MAX_ACTIVE`] jobs and [`BUFFER_BUDGET`] bytes of
//! buffers have I/O in flight; the rest wait in the queue, which costs
//! nothing but their place.
//!
//! Contexts. I/O completions (interrupt context) only set a job's stage and
//! kick the thread (an interrupt-safe spinlock and a wake-up); all the
//! rest — allocation, I/O submission, the exception table's write lock,
//! re-mapping held bios — runs in the thread.

use super::store::Slot;
use super::{copy_ready_at, cow_threshold, From, Snap};
use crate::kx::block::{submit_page_io, with_plug, Bio, PageBuf, PageIo};
use crate::kx::kthread::{current_id, Current, Kthread, ThreadBody};
use crate::kx::module::jiffies;
use crate::kx::sync::IrqSpinLock;
use crate::kx::wait::Slots;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, LockedBy, Mutex, SpinLock};
use kernel::{c_str, new_condvar, new_mutex, new_spinlock};

/// Most jobs with I/O in flight at once.
pub(crate) const MAX_ACTIVE: usize = 64;
/// Most bytes of copy buffers at once (one job may exceed it alone).
pub(crate) const BUFFER_BUDGET: usize = 32 << 20;

// Job stages.
const QUEUED: u8 = 0;
const READING: u8 = 1;
const READ_DONE: u8 = 2;
const WRITING: u8 = 3;
const WRITE_DONE: u8 = 4;

/// The copier's queue: jobs not started yet, and the kick flag.
pub(crate) struct Queue {
    head: Option<Arc<Job>>,
    tail: Option<Arc<Job>>,
    /// Something completed: the thread must look at its active jobs.
    kicked: bool,
}

/// State shared by the copier thread and everyone who gives it work.
#[pin_data]
pub(crate) struct Copier {
    /// Interrupt-safe: completions take it to set `kicked`.
    #[pin]
    queue: IrqSpinLock<Queue>,
    #[pin]
    wake: CondVar,
    /// Jobs in progress, bounded by `cow_threshold`.
    slots: Slots,
    /// The thread's identity (`current_id`), once it runs.
    thread: AtomicUsize,
}

impl Copier {
    pub(crate) fn new() -> Result<Arc<Copier>> {
        Arc::pin_init(
            pin_init!(Copier {
                queue <- crate::new_irq_spinlock!(
                    Queue {
                        head: None,
                        tail: None,
                        kicked: false,
                    },
                    "rdm:copier_queue"
                ),
                wake <- new_condvar!("rdm:copier_wake"),
                slots: Slots::new(),
                thread: AtomicUsize::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Takes a slot for a new job: under `cow_threshold` for submitters,
    /// always for the copier's own re-maps and for anything submitted on
    /// the copier thread (only it gives slots back).
    pub(crate) fn take_slot(&self, from: From) -> bool {
        if from == From::Copier || self.on_copier_thread() {
            return self.slots.try_take(0);
        }
        self.slots.try_take(cow_threshold())
    }

    /// Whether the caller is the copier thread.
    fn on_copier_thread(&self) -> bool {
        self.thread.load(Ordering::Acquire) == current_id()
    }

    /// Sleeps until a slot may be free. The caller holds no lock.
    pub(crate) fn wait_for_slot(&self) {
        self.slots.wait_below(cow_threshold());
    }

    /// Gives back a slot taken for a job that was not queued.
    pub(crate) fn put_slot(&self) {
        self.slots.put();
    }

    /// Hands a published job to the thread.
    pub(crate) fn queue(&self, job: Arc<Job>) {
        let mut q = self.queue.lock();
        let old_tail = q.tail.replace(job.clone());
        match old_tail {
            Some(tail) => *tail.next.access_mut(&mut q) = Some(job),
            None => q.head = Some(job),
        }
        q.kicked = true;
        drop(q);
        self.wake.notify_one();
    }

    fn pop(q: &mut Queue) -> Option<Arc<Job>> {
        let job = q.head.take()?;
        q.head = job.next.access_mut(q).take();
        if q.head.is_none() {
            q.tail = None;
        }
        Some(job)
    }

    /// Wakes the thread to look at its active jobs. Any context.
    pub(crate) fn kick(&self) {
        self.queue.lock().kicked = true;
        self.wake.notify_one();
    }

    /// The job's only I/O (a whole-chunk snapshot write, or an invalid
    /// header write) completed. Any context.
    pub(crate) fn only_write_done(&self, job: &Job, failed: bool) {
        if failed {
            job.failed.store(true, Ordering::Release);
        }
        job.stage.store(WRITE_DONE, Ordering::Release);
        self.kick();
    }

    /// Starts the copier thread.
    pub(crate) fn start(self: &Arc<Self>) -> Result<Kthread<CopierThread>> {
        let mut slots = KVec::with_capacity(MAX_ACTIVE, GFP_KERNEL)?;
        for _ in 0..MAX_ACTIVE {
            slots.push(None, GFP_KERNEL)?;
        }
        let work = Work {
            active: slots,
            committing: KVVec::new(),
        };
        let body = CopierThread {
            copier: self.clone(),
            work: KBox::pin_init(new_mutex!(work, "rdm:copier_work"), GFP_KERNEL)?,
        };
        Kthread::run(c_str!("rdm_copier"), body)
    }
}

/// A bio held on a job, and the snapshot it is for (`None`: an origin
/// write).
struct Held {
    bio: Bio,
    snap: Option<Arc<Snap>>,
    next: Option<KBox<Held>>,
}

/// Bios held on a job, under [`Job::state`].
struct JobState {
    held: Option<KBox<Held>>,
    /// The job has finished: hold nothing more.
    done: bool,
}

/// One snapshot a job writes to.
pub(crate) struct JobTarget {
    snap: Arc<Snap>,
    new_chunk: u64,
    /// The position of its entry in a persistent store.
    pos: u64,
}

impl JobTarget {
    /// Whether this snapshot's exception is durable, or no longer matters
    /// (the snapshot is invalid) and no commit of its store is in flight
    /// (a parked job keeps the snapshot, and so its COW device, open
    /// until the writes are over).
    fn committed(&self) -> bool {
        match self.snap.store.persistent() {
            Some(p) if self.snap.is_valid() => p.is_committed(self.pos),
            Some(p) => !p.commit_in_flight(),
            None => true,
        }
    }
}

/// What a job does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// Reads the origin chunk and writes it to each snapshot.
    Copy,
    /// A whole-chunk snapshot write is the copy: nothing to read.
    Overwrite,
    /// Writes a persistent snapshot's header with valid = 0 (its one
    /// target), then lets the origin writes held on it go.
    InvalidHeader,
}

/// One chunk copy (a pending exception in each snapshot it serves), or
/// an invalid header write ([`JobKind::InvalidHeader`]).
#[pin_data]
pub(crate) struct Job {
    pub(crate) copier: Arc<Copier>,
    /// The origin chunk.
    chunk: u64,
    chunk_sectors: u64,
    kind: JobKind,
    /// Jiffies before which the copy must not start (test knob).
    ready_at: u64,
    stage: AtomicU8,
    failed: AtomicBool,
    writes_left: AtomicUsize,
    /// Filled while the job is published (before it is queued), with room
    /// reserved at creation so that no push allocates under the locks.
    #[pin]
    targets: SpinLock<KVec<JobTarget>>,
    #[pin]
    state: SpinLock<JobState>,
    /// Link in the copier's queue.
    next: LockedBy<Option<Arc<Job>>, Queue>,
}

impl Job {
    /// A job for `chunk` with room for `max_targets` snapshots.
    pub(crate) fn new(
        copier: &Arc<Copier>,
        chunk: u64,
        chunk_sectors: u64,
        kind: JobKind,
        max_targets: usize,
    ) -> Result<Arc<Job>> {
        let targets = KVec::with_capacity(max_targets.max(1), GFP_KERNEL)?;
        let ready_at = if kind == JobKind::Copy {
            copy_ready_at()
        } else {
            0
        };
        let stage = AtomicU8::new(if kind == JobKind::Overwrite {
            WRITING
        } else {
            QUEUED
        });
        Arc::pin_init(
            pin_init!(Job {
                copier: copier.clone(),
                chunk,
                chunk_sectors,
                kind,
                ready_at,
                stage,
                failed: AtomicBool::new(false),
                writes_left: AtomicUsize::new(0),
                targets <- new_spinlock!(targets, "rdm:job_targets"),
                state <- new_spinlock!(
                    JobState {
                        held: None,
                        done: false,
                    },
                    "rdm:job_state"
                ),
                next: LockedBy::new(&copier.queue, None),
            }),
            GFP_KERNEL,
        )
    }

    /// A job that writes `snap`'s header with valid = 0.
    pub(crate) fn invalid_header(copier: &Arc<Copier>, snap: &Arc<Snap>) -> Result<Arc<Job>> {
        let job = Job::new(copier, 0, 0, JobKind::InvalidHeader, 1)?;
        job.add_target(
            snap,
            Slot {
                pos: 0,
                new_chunk: 0,
            },
        )?;
        Ok(job)
    }

    /// Adds a snapshot the job writes to. Never allocates (room was
    /// reserved); fails if there is no room left.
    pub(crate) fn add_target(&self, snap: &Arc<Snap>, slot: Slot) -> Result {
        let mut t = self.targets.lock();
        if t.len() == t.capacity() {
            return Err(ENOSPC);
        }
        t.push(
            JobTarget {
                snap: snap.clone(),
                new_chunk: slot.new_chunk,
                pos: slot.pos,
            },
            GFP_ATOMIC,
        )?;
        Ok(())
    }

    /// The COW chunk of the first snapshot (the only one of an overwrite).
    pub(crate) fn first_new_chunk(&self) -> u64 {
        self.targets.lock().first().map_or(0, |t| t.new_chunk)
    }

    /// Holds `bio` until the job ends; gives it back if it already has.
    fn hold(&self, bio: Bio, snap: Option<Arc<Snap>>) -> Result<(), Bio> {
        let Ok(node) = KBox::<Held>::new_uninit(GFP_KERNEL) else {
            pr_err!("snapshot: out of memory to hold a bio on a copy\n");
            bio.end(true);
            return Ok(());
        };
        let mut st = self.state.lock();
        if st.done {
            return Err(bio);
        }
        let next = st.held.take();
        st.held = Some(node.write(Held { bio, snap, next }));
        Ok(())
    }

    /// Holds an origin write until the job ends.
    pub(crate) fn hold_origin(&self, bio: Bio) -> Result<(), Bio> {
        self.hold(bio, None)
    }

    /// Holds a bio of `snap` until the job ends.
    pub(crate) fn hold_snapshot(&self, snap: &Arc<Snap>, bio: Bio) -> Result<(), Bio> {
        self.hold(bio, Some(snap.clone()))
    }
}

/// A job the thread has started, with what only the thread uses.
struct Active {
    job: Arc<Job>,
    targets: KVec<JobTarget>,
    buf: Option<Arc<PageBuf>>,
}

/// What only the copier thread uses (under a mutex that is never
/// contended).
struct Work {
    /// Started jobs with I/O in flight.
    active: KVec<Option<Active>>,
    /// Jobs whose copies are done, waiting for their exceptions to be
    /// committed to persistent stores (as many as there are jobs in
    /// progress: a `KVVec`, so that growing it never needs more than
    /// order-0 pages).
    committing: KVVec<Option<Active>>,
}

/// The copier thread's body.
pub(crate) struct CopierThread {
    copier: Arc<Copier>,
    work: Pin<KBox<Mutex<Work>>>,
}

impl ThreadBody for CopierThread {
    fn run(&self, me: &Current) {
        // Reclaim must not wait for I/O that may need this thread.
        let _noio = crate::kx::memalloc::NoIo::enter();
        self.copier.thread.store(me.id(), Ordering::Release);
        let mut work = self.work.lock();
        let work = &mut *work;
        let mut bytes = 0usize;
        while self.wait_for_work(me, work, bytes) {
            // One plug per batch: the reads, writes and released bios of a
            // round go to the devices together (as dm-kcopyd does).
            with_plug(|| {
                while let Some(job) = self.pop_ready(&work.active, bytes) {
                    self.start(job, &mut work.active, &mut bytes);
                }
                self.advance(work, &mut bytes);
                // Commits of what completed (one in flight per store),
                // and the end of the jobs they made durable.
                if work.committing.iter().flatten().next().is_some() {
                    self.drive_commits(work);
                }
            });
        }
    }
}

impl CopierThread {
    /// Whether a job may start now: room among the active ones, and the
    /// head of the queue is due.
    fn head_ready(q: &Queue, active: &KVec<Option<Active>>, bytes: usize) -> Result<(), u64> {
        let busy = active.iter().flatten().count();
        let room = busy < MAX_ACTIVE && (busy == 0 || bytes < BUFFER_BUDGET);
        match &q.head {
            Some(head) if room => {
                let now = jiffies();
                if head.ready_at <= now {
                    Ok(())
                } else {
                    Err(head.ready_at - now)
                }
            }
            _ => Err(u64::MAX),
        }
    }

    /// Takes the head job if it may start now.
    fn pop_ready(&self, active: &KVec<Option<Active>>, bytes: usize) -> Option<Arc<Job>> {
        let mut q = self.copier.queue.lock();
        Self::head_ready(&q, active, bytes).ok()?;
        Copier::pop(&mut q)
    }

    /// Sleeps until there is something to do; false when the thread must
    /// stop (asked to, and nothing is left).
    fn wait_for_work(&self, me: &Current, work: &Work, bytes: usize) -> bool {
        let copier = &self.copier;
        let mut q = copier.queue.lock();
        loop {
            let timeout = match Self::head_ready(&q, &work.active, bytes) {
                Ok(()) => return true,
                Err(t) => t,
            };
            if core::mem::take(&mut q.kicked) {
                return true;
            }
            let idle = work.active.iter().flatten().next().is_none()
                && work.committing.iter().flatten().next().is_none();
            if me.should_stop() && idle && q.head.is_none() {
                return false;
            }
            // A kthread has no signals: this returns on a wake-up or when
            // the delayed head job is due.
            let timeout = usize::try_from(timeout).unwrap_or(usize::MAX);
            let _ = copier.wake.wait_interruptible_timeout(&mut q, timeout);
        }
    }

    /// Starts `job`: reads its origin chunk (or, for an overwrite, waits
    /// for the write already sent).
    fn start(&self, job: Arc<Job>, active: &mut KVec<Option<Active>>, bytes: &mut usize) {
        let targets = core::mem::take(&mut *job.targets.lock());
        let mut entry = Active {
            job: job.clone(),
            targets,
            buf: None,
        };
        // `pop_ready` starts nothing while all slots are taken.
        let Some(slot) = active.iter_mut().find(|a| a.is_none()) else {
            pr_err!("snapshot copier: no slot for a job; failing it\n");
            job.failed.store(true, Ordering::Release);
            self.finish(entry);
            return;
        };
        match job.kind {
            JobKind::Copy => self.start_read(&mut entry, bytes),
            JobKind::Overwrite => {}
            JobKind::InvalidHeader => Self::start_header_write(&entry),
        }
        *slot = Some(entry);
    }

    fn start_read(&self, entry: &mut Active, bytes: &mut usize) {
        let job = &entry.job;
        let size = (job.chunk_sectors << 9) as usize;
        let Some(first) = entry.targets.first() else {
            job.failed.store(true, Ordering::Release);
            job.stage.store(WRITE_DONE, Ordering::Release);
            return;
        };
        let origin_dev = first.snap.origin_dev.clone();
        let buf = PageBuf::new(size).and_then(|b| Ok(Arc::new(b, GFP_KERNEL)?));
        let Ok(buf) = buf else {
            pr_err!("snapshot copier: out of memory for a {size}-byte chunk buffer\n");
            job.failed.store(true, Ordering::Release);
            job.stage.store(WRITE_DONE, Ordering::Release);
            return;
        };
        *bytes += size;
        entry.buf = Some(buf.clone());
        job.stage.store(READING, Ordering::Release);
        let done_job = job.clone();
        let sector = job.chunk * job.chunk_sectors;
        let res = submit_page_io(&origin_dev, PageIo::Read, sector, buf, move |failed| {
            if failed {
                done_job.failed.store(true, Ordering::Release);
            }
            done_job.stage.store(READ_DONE, Ordering::Release);
            done_job.copier.kick();
        });
        if res.is_err() {
            job.failed.store(true, Ordering::Release);
            job.stage.store(WRITE_DONE, Ordering::Release);
        }
    }

    /// Sends the invalid header write of the job's snapshot.
    fn start_header_write(entry: &Active) {
        let job = &entry.job;
        job.stage.store(WRITING, Ordering::Release);
        let done_job = job.clone();
        let done = move |failed: bool| done_job.copier.only_write_done(&done_job, failed);
        let sent = match entry
            .targets
            .first()
            .and_then(|t| t.snap.store.persistent())
        {
            Some(p) => p.write_invalid_header(done),
            None => Err(EINVAL),
        };
        if sent.is_err() {
            job.failed.store(true, Ordering::Release);
            job.stage.store(WRITE_DONE, Ordering::Release);
        }
    }

    /// Writes a read chunk to every snapshot of the job.
    fn start_writes(&self, entry: &Active) {
        let job = &entry.job;
        job.stage.store(WRITING, Ordering::Release);
        let Some(buf) = &entry.buf else {
            job.stage.store(WRITE_DONE, Ordering::Release);
            return;
        };
        if job.failed.load(Ordering::Acquire) {
            job.stage.store(WRITE_DONE, Ordering::Release);
            return;
        }
        // One count per write plus ours, dropped after the loop.
        job.writes_left
            .store(entry.targets.len() + 1, Ordering::Release);
        for t in entry.targets.iter() {
            let done_job = job.clone();
            let snap = t.snap.clone();
            let sector = t.new_chunk * job.chunk_sectors;
            // A failed COW write invalidates that snapshot only (from
            // completion context: `invalidate` takes no lock); the others
            // of the job keep their copy.
            let on_done = move |failed: bool| {
                if failed {
                    snap.invalidate("I/O error writing the COW device");
                }
                Self::write_done(&done_job);
            };
            if submit_page_io(&t.snap.cow, PageIo::Write, sector, buf.clone(), on_done).is_err() {
                t.snap.invalidate("out of memory writing the COW device");
                Self::write_done(job);
            }
        }
        Self::write_done(job);
    }

    fn write_done(job: &Job) {
        if job.writes_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            job.stage.store(WRITE_DONE, Ordering::Release);
            job.copier.kick();
        }
    }

    /// Moves every active job on as far as it can go.
    fn advance(&self, work: &mut Work, bytes: &mut usize) {
        for slot in work.active.iter_mut() {
            let Some(entry) = slot else { continue };
            match entry.job.stage.load(Ordering::Acquire) {
                READ_DONE => self.start_writes(entry),
                WRITE_DONE => {
                    let job = &entry.job;
                    // A read of the chunk sent to the origin before the
                    // job existed must end before origin writes go.
                    if job.kind != JobKind::InvalidHeader
                        && entry
                            .targets
                            .iter()
                            .any(|t| t.snap.reads_in_flight(job.chunk))
                    {
                        continue;
                    }
                    if let Some(mut entry) = slot.take() {
                        if let Some(buf) = entry.buf.take() {
                            *bytes -= buf.bytes();
                        }
                        if Self::stage(&entry) {
                            self.park(&mut work.committing, entry);
                        } else {
                            self.finish(entry);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Stages a copied job's exceptions in the persistent stores it
    /// writes to; true if it must wait for a commit.
    fn stage(entry: &Active) -> bool {
        let job = &entry.job;
        if job.failed.load(Ordering::Acquire) || job.kind == JobKind::InvalidHeader {
            return false;
        }
        let mut wait = false;
        for t in entry.targets.iter() {
            let Some(p) = t.snap.store.persistent() else {
                continue;
            };
            if !t.snap.is_valid() {
                continue;
            }
            if p.stage(t.pos, job.chunk, t.new_chunk).is_err() {
                t.snap.invalidate("out of memory staging an exception");
                continue;
            }
            wait = true;
        }
        wait
    }

    /// Keeps a job until its commits are done.
    fn park(&self, committing: &mut KVVec<Option<Active>>, entry: Active) {
        if let Some(slot) = committing.iter_mut().find(|s| s.is_none()) {
            *slot = Some(entry);
            return;
        }
        if committing.reserve(1, GFP_KERNEL).is_ok() {
            // Room reserved: this push does not allocate.
            let _ = committing.push(Some(entry), GFP_KERNEL);
            return;
        }
        // No memory to wait: its persistent snapshots cannot learn when
        // their exceptions are durable, so they go invalid, and the job
        // ends now.
        for t in entry.targets.iter() {
            if t.snap.store.persistent().is_some() {
                t.snap.invalidate("out of memory waiting for a commit");
            }
        }
        self.finish(entry);
    }

    /// Drives the commit of every persistent store the parked jobs write
    /// to, then ends the jobs whose exceptions are all durable. A failed
    /// commit invalidates its snapshot. The store of an invalid snapshot
    /// starts no commit, but one in flight is followed to its end.
    fn drive_commits(&self, work: &mut Work) {
        for entry in work.committing.iter().flatten() {
            for t in entry.targets.iter() {
                let Some(p) = t.snap.store.persistent() else {
                    continue;
                };
                if p.drive_commit(t.snap.is_valid(), &self.copier).is_err() {
                    t.snap.invalidate("I/O error writing the snapshot metadata");
                }
            }
        }
        for slot in work.committing.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|e| e.targets.iter().all(JobTarget::committed))
            {
                if let Some(entry) = slot.take() {
                    self.finish(entry);
                }
            }
        }
    }

    /// Ends a job: records its exceptions (or invalidates the snapshots it
    /// failed for; or, for an invalid header write, says it is written),
    /// then re-maps the bios held on it.
    fn finish(&self, entry: Active) {
        let job = &entry.job;
        let failed = job.failed.load(Ordering::Acquire);
        for t in entry.targets.iter() {
            if job.kind == JobKind::InvalidHeader {
                t.snap.invalid_header_written(job, failed);
                continue;
            }
            if failed {
                // The origin read failed (or, for a whole-chunk snapshot
                // write, that write did): no snapshot got the chunk.
                t.snap.invalidate("I/O error copying a chunk");
            }
            t.snap.finish_exception(job.chunk, t.new_chunk, !failed);
        }
        let mut held = {
            let mut st = job.state.lock();
            st.done = true;
            st.held.take()
        };
        self.copier.put_slot();
        // Held bios were pushed in front: reverse for arrival order.
        let mut list = None;
        while let Some(mut h) = held {
            held = h.next.take();
            h.next = list;
            list = Some(h);
        }
        while let Some(mut h) = list {
            list = h.next.take();
            let Held { bio, snap, .. } = KBox::into_inner(h);
            match snap {
                Some(snap) => snap.remap_held(bio),
                None => match entry.targets.first() {
                    Some(t) => t.snap.origin_write_again(&self.copier, bio),
                    None => bio.end(true),
                },
            }
        }
    }
}
