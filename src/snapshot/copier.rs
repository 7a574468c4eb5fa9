// SPDX-License-Identifier: GPL-2.0

//! The copier: one kthread that runs every chunk copy ([`Job`]).
//!
//! A job reads its origin chunk once and writes it to the COW chunk of
//! every snapshot it serves, in pieces of at most [`MAX_PIECE_BYTES`] (a
//! 512 MiB chunk needs no 512 MiB buffer), reading only the part of the
//! chunk the origin device holds (its last chunk may be partial); then it
//! records the exceptions, forgets the pending exceptions and re-maps the
//! bios held on it. A whole-chunk snapshot write is a job with no copy:
//! the write itself fills the COW chunk, and it is acknowledged when the
//! job ends (after its commit, for a persistent store). Marking a
//! persistent snapshot invalid on disk is a job too (its one write is the
//! header): origin writes that must not go before it are held on it.
//!
//! A merge's copy back ([`JobKind::Merge`]) is a job too: it reads a run
//! of the merging snapshot's COW chunks and writes them to the origin, in
//! the snapshot's own lane, and counts itself out of the [`JobGroup`]
//! the merge thread waits on (`merge.rs`). It records nothing and holds
//! no bio.
//!
//! Persistent stores. A finished copy is staged in its store and the job
//! parked; each round the thread drives every store's commit (one in
//! flight per store, asynchronous: copies go on while the metadata is
//! written) and ends the parked jobs whose exceptions are durable. The
//! thread never waits for I/O: a COW device may itself be an rdm device
//! whose I/O needs this thread (stacked snapshots).
//!
//! Lanes. Every job belongs to a [`Lane`]: an origin's (copies its writes
//! need) or a snapshot's own (copies and whole-chunk writes of writes to
//! the snapshot, its invalid-header write). A lane has its own queue and
//! its own limits: `cow_threshold` jobs in progress (from creation to the
//! end of `finish`), at most [`MAX_ACTIVE`] with I/O in flight and
//! [`BUFFER_BUDGET`] bytes of buffers. So a COW device that stalls (slow,
//! failing, suspended) stalls only the lanes whose jobs write to it, that
//! is the origins whose snapshots use it (dm-snapshot keeps per-snapshot
//! counts and a kcopyd client per snapshot for the same reason); the
//! thread serves the lanes that have work and room in turn.
//!
//! Bounds and waits. A writer that needs a new job beyond its lane's
//! `cow_threshold` waits in [`Lane::wait_for_permit`] holding no lock (the
//! 2019 dm-snapshot deadlock was a writer sleeping on this bound while
//! holding a lock the completion path needed). Only new copies wait: a
//! write to a copied chunk, or to a chunk already pending (it is queued on
//! that job), never does, and the copier's own re-maps never wait, nor
//! does anything submitted from the copier thread (a COW device that is
//! an rdm origin or snapshot maps its writes on this thread, and waiting
//! there would wait for itself). Jobs made while the thread submits a
//! job's own I/O (a stacked COW device's copies, which that I/O waits for)
//! are *urgent*: they start next, past every lane limit, since the jobs
//! holding those limits may be the ones waiting for them.
//!
//! Contexts. I/O completions (interrupt context) only set a job's stage and
//! kick the thread (an interrupt-safe spinlock and a wake-up); all the
//! rest — allocation, I/O submission, the exception table's write lock,
//! re-mapping held bios — runs in the thread.

use super::held::HeldList;
use super::snap::Snap;
use super::store::{CommitCallback, Drive, Place};
use crate::kx::block::{submit_page_io_part, with_plug, Bio, PageBuf, PageIo};
use crate::kx::kthread::{current_id, Current, Kthread, ThreadBody};
use crate::kx::module::jiffies;
use crate::kx::sync::IrqSpinLock;
use crate::kx::wait::{DrainCounter, EventCounter, Permits};
use crate::params;
use crate::rdm_core::lifecycle::{AtomicState, JobStage};
use crate::rdm_core::snapshot::round_up_to_block;
use crate::target::CountedBio;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, LockedBy, Mutex, SpinLock};
use kernel::{c_str, new_condvar, new_mutex, new_spinlock};

/// Most jobs of one lane with I/O in flight at once.
pub(crate) const MAX_ACTIVE: usize = 64;
/// Most bytes of copy buffers of one lane at once (one job may exceed it
/// alone).
pub(crate) const BUFFER_BUDGET: usize = 32 << 20;
/// Largest piece of a chunk copied at once (the buffer of one job).
pub(crate) const MAX_PIECE_BYTES: usize = 1 << 20;

/// Who maps a bio, for the throttle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A submitter: may wait for room under `cow_threshold`.
    Submitter,
    /// The copier re-mapping a bio it held: never waits.
    Copier,
}

/// The copy-delay test knob, in jiffies from now.
pub(crate) fn copy_ready_at() -> u64 {
    let ms = params::copy_delay_ms();
    if ms == 0 {
        return 0;
    }
    jiffies() + kernel::time::msecs_to_jiffies(ms) as u64
}

/// The `cow_threshold` parameter.
pub(crate) fn cow_threshold() -> usize {
    params::cow_threshold() as usize
}

/// A FIFO of jobs linked through [`Job::next`].
struct JobFifo {
    head: Option<Arc<Job>>,
    tail: Option<Arc<Job>>,
}

impl JobFifo {
    const fn new() -> Self {
        JobFifo {
            head: None,
            tail: None,
        }
    }
}

/// The copier's queue: the lanes ready to start a job, the urgent jobs,
/// and the kick flag. Under [`Copier::queue`].
pub(crate) struct Queue {
    /// Lanes with a queued job and room to start it, in turn order.
    ready_head: Option<Arc<Lane>>,
    ready_tail: Option<Arc<Lane>>,
    /// Jobs made while the thread submitted a job's own I/O: they start
    /// before anything else, past every lane limit.
    urgent: JobFifo,
    /// Something completed: the thread must look at its active jobs.
    kicked: bool,
}

/// Pushes `job` at the end of a FIFO (under the queue lock `q`).
fn fifo_push(q: &mut Queue, which: impl Fn(&mut Queue) -> &mut JobFifo, job: Arc<Job>) {
    let old_tail = which(q).tail.replace(job.clone());
    match old_tail {
        Some(tail) => *tail.next.access_mut(q) = Some(job),
        None => which(q).head = Some(job),
    }
}

/// Takes the first job of a FIFO (under the queue lock `q`).
fn fifo_pop(q: &mut Queue, which: impl Fn(&mut Queue) -> &mut JobFifo) -> Option<Arc<Job>> {
    let job = which(q).head.take()?;
    let next = job.next.access_mut(q).take();
    let fifo = which(q);
    fifo.head = next;
    if fifo.head.is_none() {
        fifo.tail = None;
    }
    Some(job)
}

/// State shared by the copier thread and everyone who gives it work.
#[pin_data]
pub(crate) struct Copier {
    /// Interrupt-safe: completions take it to set `kicked`.
    #[pin]
    queue: IrqSpinLock<Queue>,
    #[pin]
    wake: CondVar,
    /// The thread's identity (`current_id`), once it runs.
    thread: AtomicUsize,
    /// The thread is submitting a job's own I/O (only it writes this).
    submitting: AtomicBool,
    /// Bumped each time a job ends: a merge waiting for other snapshots'
    /// copies looks again (dm's `_pending_exceptions_done`).
    pub(crate) finished: EventCounter,
}

impl Copier {
    pub(crate) fn new() -> Result<Arc<Copier>> {
        Arc::pin_init(
            pin_init!(Copier {
                queue <- crate::new_irq_spinlock!(
                    Queue {
                        ready_head: None,
                        ready_tail: None,
                        urgent: JobFifo::new(),
                        kicked: false,
                    },
                    "rdm:copier_queue"
                ),
                wake <- new_condvar!("rdm:copier_wake"),
                thread: AtomicUsize::new(0),
                submitting: AtomicBool::new(false),
                finished: EventCounter::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Whether the caller is the copier thread.
    fn on_copier_thread(&self) -> bool {
        self.thread.load(Ordering::Acquire) == current_id()
    }

    /// Whether the caller is the copier thread submitting a job's own I/O
    /// (a stacked COW device mapping it): what it queues now is urgent.
    fn in_job_io(&self) -> bool {
        self.on_copier_thread() && self.submitting.load(Ordering::Acquire)
    }

    /// Runs `f` (the thread submitting a job's I/O) with `in_job_io` set.
    fn submitting_job_io<R>(&self, f: impl FnOnce() -> R) -> R {
        self.submitting.store(true, Ordering::Release);
        let r = f();
        self.submitting.store(false, Ordering::Release);
        r
    }

    /// Hands a published job to the thread: at the end of its lane's
    /// queue, or among the urgent ones if the thread made it while
    /// submitting a job's own I/O.
    pub(crate) fn queue(&self, job: Arc<Job>) {
        let urgent = self.in_job_io();
        let mut q = self.queue.lock();
        if urgent {
            fifo_push(&mut q, |q| &mut q.urgent, job);
        } else {
            let lane = job.lane.clone();
            lane.push(&mut q, job);
            if lane.should_list(&mut q) {
                Lane::list(&mut q, lane);
            }
        }
        q.kicked = true;
        drop(q);
        self.wake.notify_one();
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
        job.stage.advance(JobStage::Writing, JobStage::WriteDone);
        self.kick();
    }

    /// Starts the copier thread.
    pub(crate) fn start(self: &Arc<Self>) -> Result<Kthread<CopierThread>> {
        let work = Work {
            active: KVVec::new(),
            committing: KVVec::new(),
        };
        let body = CopierThread {
            copier: self.clone(),
            work: KBox::pin_init(new_mutex!(work, "rdm:copier_work"), GFP_KERNEL)?,
        };
        Kthread::run(c_str!("rdm_copier"), body)
    }
}

/// A lane's place in the copier's scheduling, under the copier's queue
/// lock.
struct LaneState {
    /// Jobs not started yet.
    queued: JobFifo,
    /// On the copier's ready list.
    listed: bool,
    /// Next lane on the ready list.
    next: Option<Arc<Lane>>,
    /// Jobs started whose I/O is not over.
    active: usize,
    /// Bytes of copy buffers those jobs use.
    bytes: usize,
}

impl LaneState {
    /// Whether another job may start.
    fn has_room(&self) -> bool {
        self.active < MAX_ACTIVE && (self.active == 0 || self.bytes < BUFFER_BUDGET)
    }
}

/// The jobs of one origin, or of one snapshot's own writes, and the
/// limits they share (see the module comment).
pub(crate) struct Lane {
    copier: Arc<Copier>,
    /// Jobs in progress, from creation to the end of `finish`, bounded by
    /// `cow_threshold`.
    permits: Permits,
    state: LockedBy<LaneState, Queue>,
}

impl Lane {
    pub(crate) fn new(copier: &Arc<Copier>) -> Result<Arc<Lane>> {
        Ok(Arc::new(
            Lane {
                copier: copier.clone(),
                permits: Permits::new(),
                state: LockedBy::new(
                    &copier.queue,
                    LaneState {
                        queued: JobFifo::new(),
                        listed: false,
                        next: None,
                        active: 0,
                        bytes: 0,
                    },
                ),
            },
            GFP_KERNEL,
        )?)
    }

    /// Takes a permit for a new job: under `cow_threshold` for submitters,
    /// always for the copier's own re-maps and for anything submitted on
    /// the copier thread (only it gives permits back).
    pub(crate) fn take_permit(&self, caller: Caller) -> bool {
        if caller == Caller::Copier || self.copier.on_copier_thread() {
            return self.permits.try_take(0);
        }
        self.permits.try_take(cow_threshold())
    }

    /// Sleeps until a permit may be free. The caller holds no lock.
    pub(crate) fn wait_for_permit(&self) {
        self.permits.wait_below(cow_threshold());
    }

    /// Gives back a permit (a job that was not queued, or one that ended).
    pub(crate) fn put_permit(&self) {
        self.permits.put();
    }

    /// Wakes the copier thread to look at its active jobs. Any context.
    pub(crate) fn kick(&self) {
        self.copier.kick();
    }

    /// The copier the lane belongs to.
    pub(crate) fn copier(&self) -> &Arc<Copier> {
        &self.copier
    }

    fn push(&self, q: &mut Queue, job: Arc<Job>) {
        let old_tail = self.state.access_mut(q).queued.tail.replace(job.clone());
        match old_tail {
            Some(tail) => *tail.next.access_mut(q) = Some(job),
            None => self.state.access_mut(q).queued.head = Some(job),
        }
    }

    /// Whether the lane must go on the ready list: a job is queued, there
    /// is room, and it is not listed.
    fn should_list(&self, q: &mut Queue) -> bool {
        let st = self.state.access_mut(q);
        !st.listed && st.queued.head.is_some() && st.has_room()
    }

    /// Appends `lane` to the ready list.
    fn list(q: &mut Queue, lane: Arc<Lane>) {
        lane.state.access_mut(q).listed = true;
        match q.ready_tail.replace(lane.clone()) {
            Some(tail) => tail.state.access_mut(q).next = Some(lane),
            None => q.ready_head = Some(lane),
        }
    }

    /// A started job of this lane has ended its I/O and released `bytes`
    /// of buffers: lists the lane again if it waited for room. Copier
    /// thread.
    fn release_room(self: &Arc<Self>, bytes: usize) {
        let mut q = self.copier.queue.lock();
        let st = self.state.access_mut(&mut q);
        st.active -= 1;
        st.bytes -= bytes;
        if self.should_list(&mut q) {
            Lane::list(&mut q, self.clone());
        }
    }
}

/// Takes the next job to start: an urgent one, else the head job of the
/// first ready lane whose head is due; the lane goes to the end of the
/// list (each lane starts one job in turn), or off it if it has no more
/// queued jobs or no more room. `Err` has the jiffies until the first
/// head that is not due yet is due (`u64::MAX`: none).
fn next_startable(q: &mut Queue) -> Result<Arc<Job>, u64> {
    if let Some(job) = fifo_pop(q, |q| &mut q.urgent) {
        let st = job.lane.state.access_mut(q);
        st.active += 1;
        st.bytes += job.buffer_bytes();
        return Ok(job);
    }
    let now = jiffies();
    let mut wait = u64::MAX;
    let mut prev: Option<Arc<Lane>> = None;
    let mut cur = q.ready_head.clone();
    while let Some(lane) = cur {
        let st = lane.state.access_mut(q);
        let next = st.next.clone();
        let due = match &st.queued.head {
            Some(head) if head.ready_at <= now => true,
            Some(head) => {
                wait = wait.min(head.ready_at - now);
                false
            }
            None => false,
        };
        if !due {
            prev = Some(lane);
            cur = next;
            continue;
        }
        // Unlink the lane; it is appended again below if it may go on.
        lane.state.access_mut(q).next = None;
        match &prev {
            Some(p) => p.state.access_mut(q).next = next.clone(),
            None => q.ready_head = next.clone(),
        }
        if next.is_none() {
            q.ready_tail = prev.clone();
        }
        let job = lane.pop(q);
        let st = lane.state.access_mut(q);
        st.active += 1;
        st.bytes += job.buffer_bytes();
        st.listed = false;
        if lane.should_list(q) {
            Lane::list(q, lane.clone());
        }
        return Ok(job);
    }
    Err(wait)
}

impl Lane {
    /// Takes the head job (there is one: the caller saw it).
    fn pop(&self, q: &mut Queue) -> Arc<Job> {
        let job = self.state.access_mut(q).queued.head.take();
        let job = job.expect("a listed lane's head job");
        let next = job.next.access_mut(q).take();
        let st = self.state.access_mut(q);
        st.queued.head = next;
        if st.queued.head.is_none() {
            st.queued.tail = None;
        }
        job
    }
}

/// A bio held on a job, and the snapshot it is for (`None`: an origin
/// write).
struct Held {
    bio: Bio,
    snap: Option<Arc<Snap>>,
}

/// Bios held on a job, under [`Job::state`].
struct JobState {
    held: HeldList<Held>,
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
    /// A merge's copy back: reads a run of COW chunks of its one target
    /// (a merging snapshot) and writes them to the origin chunks they
    /// hold; ends in its [`JobGroup`].
    Merge,
}

/// Jobs someone waits for (a merge batch's copies): how many are left,
/// whether one failed, and whether that was reading the COW device or
/// writing the origin (else: no memory for its buffer).
pub(crate) struct JobGroup {
    pub(crate) left: DrainCounter,
    pub(crate) failed: AtomicBool,
    pub(crate) cow_failed: AtomicBool,
    pub(crate) origin_failed: AtomicBool,
}

impl JobGroup {
    pub(crate) fn new() -> Result<Arc<JobGroup>> {
        Ok(Arc::new(
            JobGroup {
                left: DrainCounter::new(),
                failed: AtomicBool::new(false),
                cow_failed: AtomicBool::new(false),
                origin_failed: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?)
    }
}

/// One chunk copy (a pending exception in each snapshot it serves), or
/// an invalid header write ([`JobKind::InvalidHeader`]).
///
/// # Invariants
///
/// - The job's snapshots are in `targets` until the thread starts the job
///   and moves them out; until then the lane's queue (or the urgent list)
///   holds a reference to the job, so no completion ever drops the last
///   one while it still references a snapshot.
/// - `stage` moves only by [`AtomicState::advance`] along the transitions
///   [`JobStage`] documents: the copier thread out of the stages it owns,
///   completions out of `Reading` and `Writing`.
/// - A queued job holds one unit of its lane's throttle, taken before it
///   was published, and given back exactly once, at its end
///   ([`Lane::put_permit`] in the thread's `end_job`); a job dropped before
///   it is queued gives its unit back where it is dropped.
/// - Once `state.done` is set (under `state`, at the job's end) no bio is
///   held on the job any more ([`Job::hold_origin`] and
///   [`Job::hold_snapshot`] hand the bio back); the bios held before are
///   mapped again exactly once, after the job's exceptions are recorded.
/// - An [`JobKind::Overwrite`]'s own write (`own_write`) is ended only by
///   the job's end, after its exception is recorded and, persistent,
///   committed.
#[pin_data]
pub(crate) struct Job {
    lane: Arc<Lane>,
    /// The origin chunk.
    chunk: u64,
    chunk_sectors: u64,
    kind: JobKind,
    /// Jiffies before which the copy must not start (test knob).
    ready_at: u64,
    /// Where the job is ([`JobStage`] documents the transitions): the
    /// thread moves it out of the stages it owns, completions out of
    /// `Reading` and `Writing`.
    stage: AtomicState<JobStage>,
    failed: AtomicBool,
    writes_left: AtomicUsize,
    /// Filled while the job is published (before it is queued), with room
    /// reserved at creation so that no push allocates under the locks.
    #[pin]
    targets: SpinLock<KVec<JobTarget>>,
    #[pin]
    state: SpinLock<JobState>,
    /// An [`JobKind::Overwrite`]'s own write, ended when the job ends: a
    /// write to a snapshot is acknowledged only once its exception is
    /// recorded (and, persistent, committed). Set by its completion.
    #[pin]
    own_write: IrqSpinLock<Option<CountedBio>>,
    /// Link in a queue.
    next: LockedBy<Option<Arc<Job>>, Queue>,
    /// A [`JobKind::Merge`]'s group.
    group: Option<Arc<JobGroup>>,
}

impl Job {
    /// A job of `lane` for `chunk` with room for `max_targets` snapshots.
    pub(crate) fn new(
        lane: &Arc<Lane>,
        chunk: u64,
        chunk_sectors: u64,
        kind: JobKind,
        max_targets: usize,
    ) -> Result<Arc<Job>> {
        Self::build(lane, chunk, chunk_sectors, kind, max_targets, None)
    }

    fn build(
        lane: &Arc<Lane>,
        chunk: u64,
        chunk_sectors: u64,
        kind: JobKind,
        max_targets: usize,
        group: Option<Arc<JobGroup>>,
    ) -> Result<Arc<Job>> {
        let targets = KVec::with_capacity(max_targets.max(1), GFP_KERNEL)?;
        let ready_at = if kind == JobKind::Copy {
            copy_ready_at()
        } else {
            0
        };
        let stage = AtomicState::new(if kind == JobKind::Overwrite {
            JobStage::Writing
        } else {
            JobStage::Queued
        });
        Arc::pin_init(
            pin_init!(Job {
                lane: lane.clone(),
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
                        held: HeldList::new(),
                        done: false,
                    },
                    "rdm:job_state"
                ),
                own_write <- crate::new_irq_spinlock!(None, "rdm:job_own_write"),
                next: LockedBy::new(&lane.copier.queue, None),
                group,
            }),
            GFP_KERNEL,
        )
    }

    /// A merge's copy back of `chunks` origin chunks from `old` on, held in
    /// `snap`'s COW chunks from `new` on, in `snap`'s lane, counted in
    /// `group` (the caller counts it in before it queues it).
    pub(crate) fn merge(
        snap: &Arc<Snap>,
        old: u64,
        new: u64,
        chunks: u64,
        group: &Arc<JobGroup>,
    ) -> Result<Arc<Job>> {
        let sectors = chunks * snap.geom.sectors();
        let job = Self::build(
            &snap.lane,
            old,
            sectors,
            JobKind::Merge,
            1,
            Some(group.clone()),
        )?;
        job.add_target(
            snap,
            Place {
                pos: 0,
                new_chunk: new,
            },
        )?;
        Ok(job)
    }

    /// A job of `lane` that writes `snap`'s header with valid = 0.
    pub(crate) fn invalid_header(lane: &Arc<Lane>, snap: &Arc<Snap>) -> Result<Arc<Job>> {
        let job = Job::new(lane, 0, 0, JobKind::InvalidHeader, 1)?;
        job.add_target(
            snap,
            Place {
                pos: 0,
                new_chunk: 0,
            },
        )?;
        Ok(job)
    }

    /// Hands the published job to the copier thread.
    pub(crate) fn enqueue(self: Arc<Self>) {
        let copier = self.lane.copier.clone();
        copier.queue(self);
    }

    /// Bytes of the buffer the job's copy uses.
    fn buffer_bytes(&self) -> usize {
        match self.kind {
            JobKind::Copy | JobKind::Merge => {
                ((self.chunk_sectors << 9) as usize).min(MAX_PIECE_BYTES)
            }
            JobKind::Overwrite | JobKind::InvalidHeader => 0,
        }
    }

    /// Adds a snapshot the job writes to. Never allocates (room was
    /// reserved); fails if there is no room left.
    pub(crate) fn add_target(&self, snap: &Arc<Snap>, place: Place) -> Result {
        let mut t = self.targets.lock();
        if t.len() == t.capacity() {
            return Err(ENOSPC);
        }
        t.push(
            JobTarget {
                snap: snap.clone(),
                new_chunk: place.new_chunk,
                pos: place.pos,
            },
            GFP_ATOMIC,
        )?;
        Ok(())
    }

    /// The COW chunk of the first snapshot (the only one of an overwrite).
    pub(crate) fn first_new_chunk(&self) -> u64 {
        self.targets.lock().first().map_or(0, |t| t.new_chunk)
    }

    /// The whole-chunk write of an [`JobKind::Overwrite`] completed
    /// (completion context): it is kept until the job ends, then the job
    /// moves on.
    pub(crate) fn own_write_done(&self, write: CountedBio) {
        let failed = write.failed();
        // Kept before the stage moves: the thread may end the job as soon
        // as it sees `WriteDone`, and must find the write then.
        *self.own_write.lock() = Some(write);
        self.lane.copier.only_write_done(self, failed);
    }

    /// Holds `bio` until the job ends; gives it back if it already has.
    fn hold(&self, bio: Bio, snap: Option<Arc<Snap>>) -> Result<(), Bio> {
        let Ok(node) = HeldList::new_node() else {
            pr_err!("snapshot: out of memory to hold a bio on a copy\n");
            bio.end(true);
            return Ok(());
        };
        let mut st = self.state.lock();
        if st.done {
            return Err(bio);
        }
        st.held.push(node, Held { bio, snap });
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
    /// Sectors of the chunk to copy (the part the origin device holds).
    extent: u64,
    /// Sectors copied so far.
    copied: u64,
    /// Sectors of the piece in flight.
    piece: u64,
}

/// What only the copier thread uses (under a mutex that is never
/// contended). Both lists may hold as many jobs as there are in progress
/// (thousands): `KVVec`s, so that growing them never needs more than
/// order-0 pages (kvmalloc falls back to vmalloc; a high-order kmalloc in
/// the copier's NoIo scope fails once memory is fragmented).
struct Work {
    /// Started jobs with I/O in flight.
    active: KVVec<Option<Active>>,
    /// Jobs whose copies are done, waiting for their exceptions to be
    /// committed to persistent stores.
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
        while self.wait_for_work(me, work) {
            // One plug per batch: the reads, writes and released bios of a
            // round go to the devices together (as dm-kcopyd does).
            with_plug(|| {
                // Room in `active` first: a started job always has its
                // entry (a whole-chunk write may complete at any time).
                while Self::has_entry_room(&mut work.active) {
                    let Some(job) = self.pop_startable() else {
                        break;
                    };
                    self.start(job, &mut work.active);
                }
                self.advance(work);
                // Commits of what completed (one in flight per store),
                // and the end of the jobs they made durable.
                if work.committing.iter().flatten().next().is_some() {
                    self.drive_commits(work);
                }
            });
        }
    }
}

impl CommitCallback for Copier {
    /// A store's commit stage ended: the thread drives the commit on.
    fn commit_stage_ended(&self) {
        self.kick();
    }
}

impl CopierThread {
    /// Whether `active` has a free entry, or room for one more (no
    /// memory: nothing starts this round; the thread tries again).
    fn has_entry_room(active: &mut KVVec<Option<Active>>) -> bool {
        active.iter().any(Option::is_none) || active.reserve(1, GFP_KERNEL).is_ok()
    }

    /// The next job to start, if one may start now.
    fn pop_startable(&self) -> Option<Arc<Job>> {
        next_startable(&mut self.copier.queue.lock()).ok()
    }

    /// Sleeps until there is something to do; false when the thread must
    /// stop (asked to, and nothing is left).
    fn wait_for_work(&self, me: &Current, work: &Work) -> bool {
        let copier = &self.copier;
        let mut q = copier.queue.lock();
        loop {
            if core::mem::take(&mut q.kicked) || q.urgent.head.is_some() {
                return true;
            }
            let timeout = match startable_in(&mut q) {
                0 => return true,
                t => t,
            };
            let idle = work.active.iter().flatten().next().is_none()
                && work.committing.iter().flatten().next().is_none();
            if me.should_stop() && idle && q.ready_head.is_none() {
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
    fn start(&self, job: Arc<Job>, active: &mut KVVec<Option<Active>>) {
        let targets = core::mem::take(&mut *job.targets.lock());
        let mut entry = Active {
            job: job.clone(),
            targets,
            buf: None,
            extent: 0,
            copied: 0,
            piece: 0,
        };
        let index = match active.iter().position(|a| a.is_none()) {
            Some(i) => i,
            None => {
                // Room was reserved (`has_entry_room`): no allocation.
                let _ = active.push(None, GFP_KERNEL);
                active.len() - 1
            }
        };
        match job.kind {
            JobKind::Copy | JobKind::Merge => self.start_copy(&mut entry),
            JobKind::Overwrite => {}
            JobKind::InvalidHeader => self.start_header_write(&entry),
        }
        active[index] = Some(entry);
    }

    /// Sizes the copy (the part of the chunk the origin device holds: its
    /// last chunk may be partial) and reads the first piece.
    fn start_copy(&self, entry: &mut Active) {
        let job = &entry.job;
        let Some(first) = entry.targets.first() else {
            job.failed.store(true, Ordering::Release);
            job.stage.advance(JobStage::Queued, JobStage::WriteDone);
            return;
        };
        let origin_sectors = first.snap.origin_dev.nr_sectors();
        entry.extent = match job.kind {
            // A run of chunks back to the origin: as much of it as the
            // origin holds (dm's merge clamps its copy the same way).
            JobKind::Merge => {
                let start = job.chunk * first.snap.geom.sectors();
                job.chunk_sectors.min(origin_sectors.saturating_sub(start))
            }
            _ => first.snap.geom.extent_on(job.chunk, origin_sectors),
        };
        if entry.extent == 0 {
            // Past the end of the origin (it shrank): nothing to copy.
            job.stage.advance(JobStage::Queued, JobStage::WriteDone);
            return;
        }
        let size = job.buffer_bytes();
        // A partial chunk's last piece may be written rounded up to a COW
        // block: zeroed, so no stale memory reaches the device.
        let buf = if entry.extent < job.chunk_sectors {
            PageBuf::new_zeroed(size)
        } else {
            PageBuf::new(size)
        };
        let Ok(buf) = buf.and_then(|b| Ok(Arc::new(b, GFP_KERNEL)?)) else {
            pr_err!("snapshot copier: out of memory for a {size}-byte copy buffer\n");
            job.failed.store(true, Ordering::Release);
            job.stage.advance(JobStage::Queued, JobStage::WriteDone);
            return;
        };
        entry.buf = Some(buf);
        self.read_piece(entry, JobStage::Queued);
    }

    /// Reads the next piece of the chunk from the origin (for a merge: of
    /// the run from the COW device).
    fn read_piece(&self, entry: &mut Active, from: JobStage) {
        let job = &entry.job;
        let (Some(buf), Some(first)) = (&entry.buf, entry.targets.first()) else {
            job.failed.store(true, Ordering::Release);
            // (From `WriteDone`, the stage stays there.)
            job.stage.advance(from, JobStage::WriteDone);
            return;
        };
        let max_piece = (buf.bytes() >> 9) as u64;
        entry.piece = (entry.extent - entry.copied).min(max_piece);
        job.stage.advance(from, JobStage::Reading);
        let done_job = job.clone();
        let (dev, sector, sectors) = match job.kind {
            // The COW chunks are whole on the COW device: a partial last
            // piece is read up to a whole block of it (the buffer has the
            // room: its size is a multiple of the chunk or 1 MiB).
            JobKind::Merge => (
                first.snap.cow.clone(),
                first.new_chunk * first.snap.geom.sectors() + entry.copied,
                round_up_to_block(entry.piece, first.snap.cow.logical_block_size()),
            ),
            _ => (
                first.snap.origin_dev.clone(),
                job.chunk * job.chunk_sectors + entry.copied,
                entry.piece,
            ),
        };
        let bytes = (sectors << 9) as usize;
        let on_done = move |failed: bool| {
            if failed {
                done_job.failed.store(true, Ordering::Release);
                if let Some(g) = &done_job.group {
                    g.cow_failed.store(true, Ordering::Release);
                }
            }
            done_job
                .stage
                .advance(JobStage::Reading, JobStage::ReadDone);
            done_job.lane.copier.kick();
        };
        let res = self.copier.submitting_job_io(|| {
            submit_page_io_part(&dev, PageIo::Read, sector, buf.clone(), bytes, on_done)
        });
        if res.is_err() {
            job.failed.store(true, Ordering::Release);
            job.stage.advance(JobStage::Reading, JobStage::WriteDone);
        }
    }

    /// Sends the invalid header write of the job's snapshot.
    fn start_header_write(&self, entry: &Active) {
        let job = &entry.job;
        job.stage.advance(JobStage::Queued, JobStage::Writing);
        let done_job = job.clone();
        let done = move |failed: bool| done_job.lane.copier.only_write_done(&done_job, failed);
        let sent = match entry
            .targets
            .first()
            .and_then(|t| t.snap.store.persistent())
        {
            Some(p) => self
                .copier
                .submitting_job_io(|| p.write_invalid_header(done)),
            None => Err(EINVAL),
        };
        if sent.is_err() {
            job.failed.store(true, Ordering::Release);
            job.stage.advance(JobStage::Writing, JobStage::WriteDone);
        }
    }

    /// Writes the piece just read to every snapshot of the job (for a
    /// merge: to the origin).
    fn write_piece(&self, entry: &Active) {
        let job = &entry.job;
        job.stage.advance(JobStage::ReadDone, JobStage::Writing);
        let Some(buf) = &entry.buf else {
            job.stage.advance(JobStage::Writing, JobStage::WriteDone);
            return;
        };
        if job.failed.load(Ordering::Acquire) {
            job.stage.advance(JobStage::Writing, JobStage::WriteDone);
            return;
        }
        if job.kind == JobKind::Merge {
            self.write_merge_piece(entry, buf);
            return;
        }
        // One count per write plus ours, dropped after the loop.
        job.writes_left
            .store(entry.targets.len() + 1, Ordering::Release);
        self.copier.submitting_job_io(|| {
            for t in entry.targets.iter() {
                let sector = t.new_chunk * job.chunk_sectors + entry.copied;
                // The origin's blocks may be smaller than the COW's: the
                // last piece of a partial chunk is written up to a whole
                // COW block (inside the chunk; the buffer is zeroed past
                // what was read).
                let sectors = round_up_to_block(entry.piece, t.snap.cow.logical_block_size());
                let bytes = (sectors << 9) as usize;
                let done_job = job.clone();
                let snap = t.snap.clone();
                // A failed COW write invalidates that snapshot only (from
                // completion context: `invalidate` takes no lock); the
                // others of the job keep their copy. The snapshot's
                // reference goes before the job can end: the job's end
                // may let the snapshot's last other holder go, and its
                // destructor sleeps.
                let on_done = move |failed: bool| {
                    if failed {
                        snap.invalidate("I/O error writing the COW device");
                    }
                    drop(snap);
                    Self::write_done(&done_job);
                };
                let res = submit_page_io_part(
                    &t.snap.cow,
                    PageIo::Write,
                    sector,
                    buf.clone(),
                    bytes,
                    on_done,
                );
                if res.is_err() {
                    t.snap.invalidate("out of memory writing the COW device");
                    Self::write_done(job);
                }
            }
        });
        Self::write_done(job);
    }

    /// Writes the piece of a merge's run just read to its origin chunks.
    fn write_merge_piece(&self, entry: &Active, buf: &Arc<PageBuf>) {
        let job = &entry.job;
        let Some(t) = entry.targets.first() else {
            job.failed.store(true, Ordering::Release);
            job.stage.advance(JobStage::Writing, JobStage::WriteDone);
            return;
        };
        job.writes_left.store(1, Ordering::Release);
        let sector = job.chunk * t.snap.geom.sectors() + entry.copied;
        let bytes = (entry.piece << 9) as usize;
        let done_job = job.clone();
        // Nothing is invalidated: the merge stops, and what it merged
        // before stays merged.
        let on_done = move |failed: bool| Self::merge_write_done(&done_job, failed);
        let res = self.copier.submitting_job_io(|| {
            submit_page_io_part(
                &t.snap.origin_dev,
                PageIo::Write,
                sector,
                buf.clone(),
                bytes,
                on_done,
            )
        });
        if res.is_err() {
            Self::merge_write_done(job, true);
        }
    }

    /// A merge job's origin write ended (or could not be sent: `failed`).
    /// A failure fails the job and its group: the merge stops. Any context.
    fn merge_write_done(job: &Job, failed: bool) {
        if failed {
            job.failed.store(true, Ordering::Release);
            if let Some(g) = &job.group {
                g.origin_failed.store(true, Ordering::Release);
            }
        }
        Self::write_done(job);
    }

    /// One of the job's writes ended; the last moves it to `WriteDone`.
    /// Any context.
    fn write_done(job: &Job) {
        if job.writes_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            job.stage.advance(JobStage::Writing, JobStage::WriteDone);
            job.lane.copier.kick();
        }
    }

    /// Moves every active job on as far as it can go.
    fn advance(&self, work: &mut Work) {
        for i in 0..work.active.len() {
            let Some(entry) = work.active[i].as_mut() else {
                continue;
            };
            match entry.job.stage.get() {
                JobStage::ReadDone => self.write_piece(entry),
                JobStage::WriteDone => {
                    let job = &entry.job;
                    if matches!(job.kind, JobKind::Copy | JobKind::Merge)
                        && !job.failed.load(Ordering::Acquire)
                    {
                        entry.copied += entry.piece;
                        entry.piece = 0;
                        if entry.copied < entry.extent {
                            self.read_piece(entry, JobStage::WriteDone);
                            continue;
                        }
                    }
                    // A read of the chunk sent to the origin before the
                    // job existed must end before origin writes go.
                    if !matches!(job.kind, JobKind::InvalidHeader | JobKind::Merge)
                        && entry
                            .targets
                            .iter()
                            .any(|t| t.snap.reads_hold_copy(job.chunk))
                    {
                        continue;
                    }
                    let Some(mut entry) = work.active[i].take() else {
                        continue;
                    };
                    entry.buf = None;
                    entry.job.lane.release_room(entry.job.buffer_bytes());
                    if Self::stage(&entry) {
                        self.park(&mut work.committing, entry);
                    } else {
                        self.finish(entry);
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
        if job.failed.load(Ordering::Acquire)
            || matches!(job.kind, JobKind::InvalidHeader | JobKind::Merge)
        {
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
        if let Some(free) = committing.iter_mut().find(|s| s.is_none()) {
            *free = Some(entry);
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
        self.copier.submitting_job_io(|| {
            for entry in work.committing.iter().flatten() {
                for t in entry.targets.iter() {
                    let Some(p) = t.snap.store.persistent() else {
                        continue;
                    };
                    if p.drive_commit(
                        if t.snap.is_valid() {
                            Drive::Start
                        } else {
                            Drive::FollowOnly
                        },
                        &self.copier,
                    )
                    .is_err()
                    {
                        t.snap.invalidate("I/O error writing the snapshot metadata");
                    }
                }
            }
        });
        for parked in work.committing.iter_mut() {
            if parked
                .as_ref()
                .is_some_and(|e| e.targets.iter().all(JobTarget::committed))
            {
                if let Some(entry) = parked.take() {
                    self.finish(entry);
                }
            }
        }
    }

    /// Ends a job: records its exceptions (or invalidates the snapshots it
    /// failed for; or, for an invalid header write, says it is written),
    /// acknowledges a whole-chunk snapshot write, then re-maps the bios
    /// held on it.
    fn finish(&self, entry: Active) {
        self.end_job(&entry);
        self.copier.finished.bump();
    }

    fn end_job(&self, entry: &Active) {
        let job = &entry.job;
        let failed = job.failed.load(Ordering::Acquire);
        if job.kind == JobKind::Merge {
            // A merge's copy back: no exception to record, no bio held.
            job.state.lock().done = true;
            job.lane.put_permit();
            if let Some(g) = &job.group {
                if failed {
                    g.failed.store(true, Ordering::Release);
                }
                // Last: the merge thread may go on at once.
                g.left.dec();
            }
            return;
        }
        let mut own_write_ok = !failed;
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
            // As dm's pending_complete: a snapshot that went invalid
            // meanwhile fails the write that was its own.
            own_write_ok &= t.snap.is_valid();
        }
        if let Some(write) = job.own_write.lock().take() {
            write.end(!own_write_ok);
        }
        let held = {
            let mut st = job.state.lock();
            st.done = true;
            st.held.take()
        };
        job.lane.put_permit();
        for Held { bio, snap } in held.into_arrival_order() {
            match snap {
                Some(snap) => snap.remap_held(bio),
                None => match entry.targets.first() {
                    Some(t) => t.snap.origin_write_again(bio),
                    None => bio.end(true),
                },
            }
        }
    }
}

/// Jiffies until a job may start: 0 if one may start now (an urgent one,
/// or a ready lane's head that is due), `u64::MAX` if none is queued.
fn startable_in(q: &mut Queue) -> u64 {
    if q.urgent.head.is_some() {
        return 0;
    }
    let now = jiffies();
    let mut wait = u64::MAX;
    let mut cur = q.ready_head.clone();
    while let Some(lane) = cur {
        let st = lane.state.access_mut(q);
        if let Some(head) = &st.queued.head {
            if head.ready_at <= now {
                return 0;
            }
            wait = wait.min(head.ready_at - now);
        }
        cur = st.next.clone();
    }
    wait
}
