// SPDX-License-Identifier: GPL-2.0

//! Snapshot machinery: origins, snapshots, exception tables, pending
//! exceptions, and the copier.
//!
//! - An [`Origin`] is one origin device (by device number) and the
//!   snapshots of it; `snapshot-origin` targets and `snapshot` targets of
//!   the same device share it (through [`OriginRef`]s).
//! - A [`Snap`] is one snapshot: its COW device, exception store, the table
//!   of completed exceptions (under a read-write semaphore: read on the map
//!   path, write only to insert a completed exception), and its pending
//!   exceptions (chunk -> [`Job`], under a spinlock). Snapshot targets
//!   loaded on the same COW device share one `Snap`, so a reload keeps the
//!   exceptions (dm-snapshot's handover).
//! - A [`Job`] is one chunk copy in progress: one read of the origin chunk,
//!   written to every snapshot that needs it (dm-snapshot copies once per
//!   snapshot), and the bios held until it completes. Jobs are run by the
//!   copier kthread (`copier.rs`); how many may be in progress is bounded
//!   by `cow_threshold`, and a writer waits for room holding no lock.
//!
//! - A merge (`snapshot-merge`, `merge.rs`) hands a persistent snapshot
//!   over to its origin: the snapshot takes no more copies, a merge thread
//!   copies its chunks back newest first in dm-snapshot's on-disk
//!   protocol, and the origin's I/O goes through [`Snap::merge_map`].
//!
//! See `Documentation/locking.rst` for the lock order and contexts.

pub(crate) mod copier;
mod hooks;
mod leaves;
pub(crate) mod merge;
pub(crate) mod store;
pub(crate) mod targets;
mod tracked;

use crate::kx::block::{BdevFile, Bio, BioOp};
use crate::kx::memalloc::NoIo;
use crate::kx::module::jiffies;
use crate::kx::sync::{IrqSpinLock, RwSem};
use crate::kx::wait::{sleep_ms, DrainCounter, EventCounter};
use crate::params;
use crate::rdm_core::exception_table::{ExceptionTable, InsertError};
use crate::rdm_core::snapshot::{ChunkGeometry, NoRoom, StoreKind};
use crate::target::{EndHook, Io};
use copier::{Copier, Lane};
use core::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::{Arc, Mutex, SpinLock};
pub(crate) use leaves::KLeaves;
use store::Store;
use tracked::{BucketFull, TrackedReads, Untracked};

/// Every origin that has targets, by device number.
#[pin_data]
pub(crate) struct Snapshots {
    /// Looked up and changed by table loads and target teardown only
    /// (process context, never on the I/O path).
    #[pin]
    origins: Mutex<KVec<Option<OriginSlot>>>,
    pub(crate) copier: Arc<Copier>,
}

struct OriginSlot {
    origin: Arc<Origin>,
    users: usize,
}

impl Snapshots {
    pub(crate) fn new(copier: Arc<Copier>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Snapshots {
                origins <- kernel::new_mutex!(KVec::new(), "rdm:origins"),
                copier,
            }),
            GFP_KERNEL,
        )
    }

    /// The origin of device `devt`, made if new.
    pub(crate) fn origin(self: &Arc<Self>, devt: u64) -> Result<OriginRef> {
        let lane = Lane::new(&self.copier)?;
        let fresh = Arc::pin_init(
            pin_init!(Origin {
                devt,
                snaps <- crate::new_rwsem!(KVec::new(), "rdm:origin_snapshots"),
                min_chunk: AtomicU32::new(0),
                lane,
                gate: MergeGate {
                    paused: DrainCounter::new(),
                    busy: DrainCounter::new(),
                },
            }),
            GFP_KERNEL,
        )?;
        let mut list = self.origins.lock();
        let origin = if let Some(slot) = list.iter_mut().flatten().find(|s| s.origin.devt == devt) {
            slot.users += 1;
            slot.origin.clone()
        } else {
            let slot = OriginSlot {
                origin: fresh.clone(),
                users: 1,
            };
            match list.iter_mut().find(|s| s.is_none()) {
                Some(free) => *free = Some(slot),
                None => list.push(Some(slot), GFP_KERNEL)?,
            }
            fresh
        };
        Ok(OriginRef {
            snapshots: self.clone(),
            origin,
        })
    }
}

/// The origin (device number) of a snapshot of another origin than
/// `origin` that uses `cow` as its COW device, if any. Two snapshots of
/// different origins on one COW device would overwrite each other.
fn cow_user_of_other_origin(
    origins: &KVec<Option<OriginSlot>>,
    cow: u64,
    origin: u64,
) -> Option<u64> {
    origins
        .iter()
        .flatten()
        .filter(|slot| slot.origin.devt != origin)
        .find(|slot| {
            slot.origin
                .snaps
                .read()
                .iter()
                .flatten()
                .any(|s| s.cow.devt() == cow)
        })
        .map(|slot| slot.origin.devt)
}

/// A user's reference on an origin; the last one takes it out of the list.
pub(crate) struct OriginRef {
    snapshots: Arc<Snapshots>,
    origin: Arc<Origin>,
}

impl core::ops::Deref for OriginRef {
    type Target = Arc<Origin>;
    fn deref(&self) -> &Arc<Origin> {
        &self.origin
    }
}

impl Drop for OriginRef {
    fn drop(&mut self) {
        let mut list = self.snapshots.origins.lock();
        for slot in list.iter_mut() {
            if let Some(s) = slot {
                if Arc::ptr_eq(&s.origin, &self.origin) {
                    s.users -= 1;
                    if s.users == 0 {
                        *slot = None;
                    }
                    return;
                }
            }
        }
    }
}

/// An origin device and its snapshots.
#[pin_data]
pub(crate) struct Origin {
    devt: u64,
    /// The registered snapshots: read by every origin write, written when a
    /// snapshot comes or goes (process context).
    #[pin]
    snaps: RwSem<KVec<Option<Arc<Snap>>>>,
    /// Smallest chunk size among the snapshots, in sectors (0: none).
    min_chunk: AtomicU32,
    /// The copier's lane of the copies origin writes need.
    lane: Arc<Lane>,
    /// A merge's batch and the activation of a snapshot exclude each
    /// other (a snapshot made active in the middle of a batch would miss
    /// the copies the batch made before it overwrote the origin).
    gate: MergeGate,
}

/// The exclusion of a merge's batches and snapshot activations on one
/// origin (dm suspends the origin and stops the merge instead): two
/// counters, no lock.
struct MergeGate {
    /// Activations in progress: no batch starts.
    paused: DrainCounter,
    /// A batch in progress (0 or 1).
    busy: DrainCounter,
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
    fn enter(&self) -> GateHold<'_> {
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
    fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        self.paused.inc();
        self.busy.wait_zero();
        let r = f();
        self.paused.dec();
        r
    }
}

/// What a new snapshot is made of: its devices, its store and the
/// exceptions read from it.
pub(crate) struct SnapParts {
    pub(crate) origin_dev: Arc<BdevFile>,
    pub(crate) cow: Arc<BdevFile>,
    pub(crate) geom: ChunkGeometry,
    pub(crate) store: Store,
    pub(crate) exceptions: ExceptionTable<KLeaves>,
    /// False if the store says the snapshot was invalidated.
    pub(crate) valid: bool,
    /// The snapshot's length in sectors (its target's).
    pub(crate) len: u64,
}

/// Why a snapshot target could not be set up.
pub(crate) enum SnapError {
    /// Another snapshot uses this COW device with another chunk size.
    CowInUse(u64),
    /// Another snapshot uses this COW device with another store type.
    CowOtherStore,
    /// A snapshot of another origin (this device number) uses it.
    CowOtherOrigin(u64),
    /// The snapshot on this COW device is being taken down: wait until it
    /// is gone ([`Snap::wait_gone`]), then open the device again.
    Dying(Arc<Snap>),
    /// Out of memory.
    NoMem,
    /// A `snapshot` target on a snapshot handed over to a merge.
    Merging,
    /// A `snapshot-merge` target on a transient snapshot.
    MergeTransient,
}

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
    batch: KVVec<u64>,
    /// Writes to those chunks, held until the batch ends (newest first).
    held: Option<KBox<HeldWrite>>,
}

impl MergeIo {
    fn holds(&self, chunk: u64) -> bool {
        self.batch.binary_search(&chunk).is_ok()
    }
}

/// A write to the merging origin held until its chunk's batch ends.
struct HeldWrite {
    bio: Bio,
    chunk: u64,
    next: Option<KBox<HeldWrite>>,
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

/// One snapshot.
#[pin_data]
pub(crate) struct Snap {
    origin: OriginRef,
    pub(crate) origin_dev: Arc<BdevFile>,
    pub(crate) cow: Arc<BdevFile>,
    pub(crate) geom: ChunkGeometry,
    pub(crate) store: Store,
    /// Completed exceptions: read on the map path, written by the copier
    /// to insert one.
    #[pin]
    exceptions: RwSem<ExceptionTable<KLeaves>>,
    /// Pending exceptions by origin chunk (process context only; taken
    /// inside a read hold of `exceptions`).
    #[pin]
    pending: SpinLock<RBTree<u64, Arc<Job>>>,
    valid: AtomicBool,
    active: AtomicBool,
    /// `PO`: a write to the snapshot found no room; its writes fail from
    /// now on, its reads go on.
    overflowed: AtomicBool,
    /// The COW device was found smaller than the chunks in use (and this
    /// was logged); cleared by the next allocation that succeeds.
    shrunk: AtomicBool,
    /// Snapshot targets using this snapshot (a reload shares it). Never
    /// goes up from 0: at 0 the snapshot is being taken down.
    users: AtomicUsize,
    /// 1 while the snapshot is on its origin's list, 0 once its teardown
    /// took it off (a new load on its COW device waits for that).
    listed: DrainCounter,
    /// Pending exceptions of this snapshot (from publication to the end of
    /// their job, commit included): the last user waits for them.
    outstanding: DrainCounter,
    /// Reads of not-copied chunks sent to the origin and not completed
    /// (and a merge's writes sent to COW chunks), per chunk. A copy of
    /// such a chunk is not completed (and the origin write it holds not
    /// released) before they are done. Taken by completions
    /// (interrupt-safe), never with another lock inside.
    #[pin]
    tracked: IrqSpinLock<TrackedReads>,
    /// The snapshot's length in sectors: origin chunks at or past it are
    /// not copied (set by the target that loads or resumes it).
    len: AtomicU64,
    /// The copier's lane of the snapshot's own writes' jobs (and of its
    /// merge's copies back).
    lane: Arc<Lane>,
    /// The event number of the device that loaded the snapshot.
    events: Arc<EventCounter>,
    /// Handed over to a merge (dm: the source of the handover goes
    /// invalid): origin writes make no copies for it, its `snapshot`
    /// targets fail their I/O. Never cleared.
    handed_over: AtomicBool,
    /// The merge's batch and held writes: taken inside a hold of
    /// `exceptions` (leaf; process context only).
    #[pin]
    merging: SpinLock<MergeIo>,
    pub(crate) merge: MergeInfo,
    /// Writes to the snapshot device from their map to their completion
    /// (held on a job or sent to the COW device): a merge starts once the
    /// ones made before its handover are over.
    writes: DrainCounter,
    /// The copier's job writing the invalid header of a persistent
    /// snapshot, while there is one: origin writes that must wait for that
    /// write are held on it (a leaf; process context).
    #[pin]
    header_job: SpinLock<Option<Arc<Job>>>,
}

impl Snap {
    /// The snapshot already on COW device `cow` (a table reload, or a
    /// second table on it), which a new target joins instead of opening
    /// the store again; `chunk` 0 matches any chunk size.
    pub(crate) fn join(
        origin: &OriginRef,
        cow: u64,
        chunk: u64,
        kind: StoreKind,
        merge: bool,
    ) -> Result<Option<Arc<Snap>>, SnapError> {
        let origins = origin.snapshots.origins.lock();
        if let Some(other) = cow_user_of_other_origin(&origins, cow, origin.devt) {
            return Err(SnapError::CowOtherOrigin(other));
        }
        let snaps = origin.snaps.read();
        let Some(s) = snaps.iter().flatten().find(|s| s.cow.devt() == cow) else {
            return Ok(None);
        };
        if chunk != 0 && s.geom.sectors() != chunk {
            return Err(SnapError::CowInUse(s.geom.sectors()));
        }
        s.joinable(kind, merge)?;
        s.add_user()?;
        Ok(Some(s.clone()))
    }

    /// Whether a target of store type `kind` (a `snapshot-merge` one if
    /// `merge`) may join this snapshot: a snapshot target the same store
    /// type, unless the snapshot was handed over to a merge; a merge
    /// target any persistent snapshot (P and PO are the same on disk).
    fn joinable(&self, kind: StoreKind, merge: bool) -> Result<(), SnapError> {
        if merge {
            if self.store.persistent().is_none() {
                return Err(SnapError::MergeTransient);
            }
            return Ok(());
        }
        if self.store.kind() != kind {
            return Err(SnapError::CowOtherStore);
        }
        if self.is_handed_over() {
            return Err(SnapError::Merging);
        }
        Ok(())
    }

    /// One more target uses the snapshot, unless its last one already went
    /// (then it is being taken down: its metadata writes may still be in
    /// flight, and a new target must read the device once they are over,
    /// not share a snapshot whose origin writes no longer copy for it).
    fn add_user(self: &Arc<Self>) -> Result<(), SnapError> {
        self.users
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u > 0).then_some(u + 1)
            })
            .map(drop)
            .map_err(|_| SnapError::Dying(self.clone()))
    }

    /// Waits until the snapshot, being taken down, is off its origin's
    /// list: every metadata write of its teardown is over. Process
    /// context; the caller holds no lock.
    pub(crate) fn wait_gone(&self) {
        self.listed.wait_zero();
    }

    /// Registers a new snapshot of `origin`, or joins the one already on
    /// the same COW device (a concurrent load got there first).
    pub(crate) fn register(
        origin: OriginRef,
        parts: SnapParts,
        events: &Arc<EventCounter>,
        merge: bool,
    ) -> Result<Arc<Snap>, SnapError> {
        let SnapParts {
            origin_dev,
            cow,
            geom,
            store,
            exceptions,
            valid,
            len,
        } = parts;
        // Made before any lock is taken: dropping a snapshot drops its
        // origin reference, which takes `origins`, so a snapshot that is
        // not used (a reload, a refusal) must be dropped with no lock held.
        let snapshots = origin.snapshots.clone();
        let origin_arc = (*origin).clone();
        let cow_devt = cow.devt();
        let kind = store.kind();
        let lane = Lane::new(&snapshots.copier).map_err(|_| SnapError::NoMem)?;
        let fresh = Arc::pin_init(
            pin_init!(Snap {
                origin,
                origin_dev,
                cow,
                geom,
                store,
                exceptions <- crate::new_rwsem!(exceptions, "rdm:exceptions"),
                pending <- new_spinlock!(RBTree::new(), "rdm:pending"),
                valid: AtomicBool::new(valid),
                active: AtomicBool::new(false),
                overflowed: AtomicBool::new(false),
                shrunk: AtomicBool::new(false),
                users: AtomicUsize::new(1),
                listed: DrainCounter::new(),
                outstanding: DrainCounter::new(),
                tracked <- crate::new_irq_spinlock!(TrackedReads::new(), "rdm:tracked_reads"),
                len: AtomicU64::new(len),
                lane,
                events: events.clone(),
                handed_over: AtomicBool::new(false),
                merging <- new_spinlock!(
                    MergeIo {
                        batch: KVVec::new(),
                        held: None,
                    },
                    "rdm:merge_io"
                ),
                writes: DrainCounter::new(),
                header_job <- new_spinlock!(None, "rdm:snap_header_job"),
                merge: MergeInfo {
                    targets: AtomicUsize::new(0),
                    running: AtomicBool::new(false),
                    state: AtomicU8::new(MERGE_IDLE),
                    merged: AtomicU64::new(0),
                    batches: AtomicU64::new(0),
                },
            }),
            GFP_KERNEL,
        )
        .map_err(|_| SnapError::NoMem)?;
        // `origins` is held across the check and the registration, so two
        // loads cannot both find a COW device free.
        let origins = snapshots.origins.lock();
        if let Some(other) = cow_user_of_other_origin(&origins, cow_devt, origin_arc.devt) {
            return Err(SnapError::CowOtherOrigin(other));
        }
        let mut snaps = origin_arc.snaps.write();
        if let Some(s) = snaps.iter().flatten().find(|s| s.cow.devt() == cow_devt) {
            if s.geom != geom {
                return Err(SnapError::CowInUse(s.geom.sectors()));
            }
            s.joinable(kind, merge)?;
            s.add_user()?;
            return Ok(s.clone());
        }
        match snaps.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(fresh.clone()),
            None => snaps
                .push(Some(fresh.clone()), GFP_KERNEL)
                .map_err(|_| SnapError::NoMem)?,
        }
        fresh.listed.inc();
        update_min_chunk(&origin_arc, &snaps);
        Ok(fresh)
    }

    /// A snapshot target using this snapshot went away; the last one
    /// stops origin writes from copying for it, waits for its pending
    /// exceptions to end (their copies and commits: a new load of the COW
    /// device must not read metadata still being written), and takes it
    /// off its origin. A load on the same COW device meanwhile does not
    /// join it: it waits for this to end ([`Snap::wait_gone`]). Process
    /// context; waits holding no lock of the snapshot machinery.
    pub(crate) fn unregister(self: &Arc<Self>) {
        if self.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.active.store(false, Ordering::Release);
        // A publication that saw the snapshot active did so under
        // `pending` and counted itself before unlocking: after this
        // lock/unlock, every one is counted or sees it inactive.
        drop(self.pending.lock());
        self.outstanding.wait_zero();
        if let Some(p) = self.store.persistent() {
            p.sync_invalid();
        }
        let origins = self.origin.snapshots.origins.lock();
        let origin = (*self.origin).clone();
        let mut snaps = origin.snaps.write();
        for slot in snaps.iter_mut() {
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, self)) {
                *slot = None;
            }
        }
        update_min_chunk(&origin, &snaps);
        drop(snaps);
        drop(origins);
        self.listed.dec();
    }

    /// The snapshot's table went live with a target of `len` sectors: from
    /// now on origin writes preserve its chunks (those before `len`).
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

    /// The origin the snapshot is of.
    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Whether the snapshot has origin chunk `chunk` (it is shorter than
    /// its origin after the origin grew).
    fn has_chunk(&self, chunk: u64) -> bool {
        self.geom.has_chunk(chunk, self.len.load(Ordering::Acquire))
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// A `PO` snapshot whose own write found no room.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    fn wants_copies(&self) -> bool {
        self.active.load(Ordering::Acquire) && self.is_valid() && !self.is_handed_over()
    }

    /// Marks the snapshot invalid (its I/O fails from now on) and raises an
    /// event. Any context without locks that sleep.
    pub(crate) fn invalidate(&self, why: &str) {
        if self.valid.swap(false, Ordering::AcqRel) {
            if let Some(p) = self.store.persistent() {
                p.mark_invalid();
            }
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(self.cow.devt());
            pr_err!("snapshot on COW device {ma}:{mi} invalidated: {why}\n");
            self.events.bump();
        }
    }

    /// The COW device shrank below the `in_use` sectors the snapshot
    /// holds: logged once (until an allocation succeeds again). The
    /// snapshot stays valid; the writes that need a new chunk fail with
    /// ENOSPC, and reads of chunks past the device's end fail there.
    fn report_shrunk(&self, in_use: u64) {
        if !self.shrunk.swap(true, Ordering::AcqRel) {
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(self.cow.devt());
            pr_err!(
                "snapshot on COW device {ma}:{mi}: the COW device shrank to {} sectors, below the {in_use} sectors in use: writes that need a new chunk fail (ENOSPC) until it grows back; the snapshot is kept\n",
                self.cow.nr_sectors()
            );
            self.events.bump();
        }
    }

    /// Counts a read of `chunk` sent to the origin (or a merge's write
    /// sent to its COW chunk), with no allocation (any lock may be held):
    /// `Err` if [`Snap::grow_tracked`] must make room first.
    fn try_track(&self, chunk: u64) -> Result<(), BucketFull> {
        self.tracked.lock().try_track(chunk)
    }

    /// Makes the room `full` asks for (process context, no lock held).
    fn grow_tracked(&self, full: &BucketFull) -> Result<(), kernel::alloc::AllocError> {
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
    fn untrack(&self, chunk: u64) {
        if self.tracked.lock().untrack(chunk) == Untracked::KickCopier {
            self.lane.kick();
        }
    }

    /// Ends the pending exception of `old` (copier, process context):
    /// records it as completed at `new` if `ok`, and forgets the job. One
    /// write hold for both, so map-path lookups (under a read hold) see
    /// either the pending job or the exception.
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

    /// Completed exceptions, their runs, and the bytes of their table.
    pub(crate) fn table_usage(&self) -> (u64, u64, usize) {
        let ex = self.exceptions.read();
        (ex.len(), ex.runs(), ex.bytes())
    }

    /// The copier's job that writes this (persistent) snapshot's header
    /// with valid = 0, made and queued if there is none; `None` if the
    /// header says so already.
    fn invalid_header_job(self: &Arc<Self>) -> Result<Option<Arc<Job>>> {
        let Some(p) = self.store.persistent() else {
            return Ok(None);
        };
        if let Some(job) = self.header_job.lock().clone() {
            return Ok(Some(job));
        }
        let new = Job::invalid_header(&self.lane, self)?;
        let mut slot = self.header_job.lock();
        if let Some(job) = slot.clone() {
            drop(slot);
            drop(new);
            return Ok(Some(job));
        }
        // Checked under the lock that the write's end takes after
        // clearing the flag: no job is made for a header already written.
        if !p.invalid_unsynced() {
            drop(slot);
            drop(new);
            return Ok(None);
        }
        *slot = Some(new.clone());
        drop(slot);
        // Counted like an exception: a teardown that comes later waits for
        // it (one already past its wait writes the header itself, and the
        // job's reference keeps the snapshot, and so the COW device, open
        // until the write is over).
        self.outstanding.inc();
        // Never throttled: it is what lets held writes go.
        self.lane.take_slot(Caller::Copier);
        new.clone().enqueue();
        Ok(Some(new))
    }

    /// The copier's invalid header write ended.
    pub(crate) fn invalid_header_written(&self, job: &Arc<Job>, failed: bool) {
        if let Some(p) = self.store.persistent() {
            p.invalid_header_written(failed);
            let mut slot = self.header_job.lock();
            if slot.as_ref().is_some_and(|j| Arc::ptr_eq(j, job)) {
                *slot = None;
            }
        }
        self.outstanding.dec();
    }

    /// Maps again an origin write held on a job of this snapshot (copier).
    pub(crate) fn origin_write_again(&self, bio: Bio) {
        self.origin.write(&self.origin_dev, bio, Caller::Copier);
    }
}

fn update_min_chunk(origin: &Origin, snaps: &KVec<Option<Arc<Snap>>>) {
    let min = snaps
        .iter()
        .flatten()
        .map(|s| s.geom.sectors() as u32)
        .min()
        .unwrap_or(0);
    origin.min_chunk.store(min, Ordering::Release);
}

/// What a bio must do about the exceptions, decided under the locks.
enum Plan {
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

pub(crate) use copier::{Job, JobKind};

/// Who maps a bio, for the throttle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A submitter: may wait for room under `cow_threshold`.
    Submitter,
    /// The copier re-mapping a bio it held: never waits.
    Copier,
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
    /// (`None`) may answer [`Plan::Clear`] or [`Plan::Wait`].
    fn plan_write(&self, sector: u64, sectors: u64, cursor: Option<(usize, u64)>) -> Plan {
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
                    return Plan::SyncInvalid(snap.clone());
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
                return Plan::Copy {
                    chunk,
                    chunk_sectors: snap.geom.sectors(),
                    cursor: (i, chunk),
                };
            }
        }
        match wait {
            Some(job) => Plan::Wait(job),
            None => Plan::Clear,
        }
    }

    /// Whether an origin write of `[sector, sector + sectors)` may go to
    /// the origin at once (every active snapshot has those chunks).
    pub(crate) fn write_is_clear(&self, sector: u64, sectors: u64) -> bool {
        matches!(self.plan_write(sector, sectors, None), Plan::Clear)
    }

    /// Makes a job copying `chunk` and publishes it as the pending exception
    /// of every active snapshot of its chunk size that still needs the
    /// chunk, giving each a COW chunk. Returns the job, how many snapshots
    /// it serves, and whether a snapshot that needs the chunk has no room
    /// for it because its COW device shrank (the write must fail).
    fn publish_copy(&self, chunk: u64, chunk_sectors: u64) -> Result<(Arc<Job>, usize, bool)> {
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
    /// chunks it covers; until then it is held on a pending copy.
    pub(crate) fn write(&self, dev: &BdevFile, mut bio: Bio, caller: Caller) {
        let _noio = NoIo::enter();
        let mut cursor = None;
        let mut made: Option<Arc<Job>> = None;
        loop {
            let plan = self.plan_write(bio.sector(), bio.sectors(), cursor);
            if cursor.is_some() && !matches!(plan, Plan::Copy { .. }) {
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
                Plan::Clear => {
                    bio.set_dev(dev);
                    bio.submit();
                    return;
                }
                Plan::Wait(job) => match job.hold_origin(bio) {
                    Ok(()) => return,
                    // The job ended meanwhile: decide again.
                    Err(b) => bio = b,
                },
                Plan::SyncInvalid(snap) => {
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
                Plan::Copy {
                    chunk,
                    chunk_sectors,
                    cursor: at,
                } => {
                    if !self.lane.take_slot(caller) {
                        // Wait for room holding no lock (seed 003), then
                        // decide again: the chunk may be copied by now.
                        self.lane.wait_for_slot();
                        continue;
                    }
                    let Ok((job, served, shrunk)) = self.publish_copy(chunk, chunk_sectors) else {
                        self.lane.put_slot();
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
                            self.lane.put_slot();
                        }
                        bio.end_no_space();
                        return;
                    }
                    cursor = Some(at);
                    if served == 0 {
                        // Another writer got there first (or every snapshot
                        // went invalid): decide again.
                        self.lane.put_slot();
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
            if cursor.is_some() && !matches!(plan, Plan::Copy { .. }) {
                // Nothing more to copy after the cursor: wait for a job
                // made here; the caller scans again afterwards.
                if made.is_some() {
                    return Ok(made);
                }
                cursor = None;
                continue;
            }
            match plan {
                Plan::Clear => return Ok(None),
                Plan::Wait(job) => return Ok(Some(job)),
                Plan::SyncInvalid(snap) => {
                    if let Some(job) = snap.invalid_header_job()? {
                        return Ok(Some(job));
                    }
                }
                Plan::Copy {
                    chunk,
                    chunk_sectors,
                    cursor: at,
                } => {
                    self.lane.take_slot(Caller::Copier);
                    let (job, served, shrunk) = match self.publish_copy(chunk, chunk_sectors) {
                        Ok(made) => made,
                        Err(e) => {
                            self.lane.put_slot();
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
                            self.lane.put_slot();
                        }
                        return Err(ENOSPC);
                    }
                    cursor = Some(at);
                    if served == 0 {
                        self.lane.put_slot();
                        continue;
                    }
                    job.clone().enqueue();
                    made = Some(job);
                }
            }
        }
    }
}

/// What [`publish_one`] did.
#[derive(PartialEq, Eq)]
enum Published {
    /// The job is the chunk's pending exception now.
    Yes,
    /// The chunk is copied or pending already, or the snapshot went
    /// invalid.
    No,
    /// A `PO` snapshot's own write found no room: the snapshot is marked
    /// overflowed (still valid) and the write must fail.
    Overflow,
    /// The COW device is smaller than the chunks in use: the snapshot is
    /// kept, the write that needs the chunk must fail (ENOSPC).
    Shrunk,
}

/// For whose write an exception is published.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A write to the origin: the snapshot's copy of the chunk.
    Origin,
    /// A write to the snapshot itself (a `PO` snapshot overflows instead
    /// of going invalid when there is no room).
    Snapshot,
}

/// Makes `job` the pending exception of `chunk` in `snap` unless the chunk
/// is already copied or pending, taking a COW chunk for it.
fn publish_one(
    snap: &Arc<Snap>,
    job: &Arc<Job>,
    chunk: u64,
    node: RBTreeNodeReservation<u64, Arc<Job>>,
    writer: Writer,
) -> Published {
    let own_write = writer == Writer::Snapshot;
    let ex = snap.exceptions.read();
    if ex.lookup(chunk).is_some() {
        return Published::No;
    }
    let mut pending = snap.pending.lock();
    if pending.get(&chunk).is_some() {
        return Published::No;
    }
    // Checked under `pending`: `unregister` and `hand_over` rely on it.
    if (!own_write && !snap.wants_copies()) || snap.is_handed_over() {
        return Published::No;
    }
    let slot = match snap.store.prepare_exception() {
        Ok(slot) => slot,
        Err(NoRoom::Shrunk { in_use }) => {
            drop(pending);
            drop(ex);
            snap.report_shrunk(in_use);
            return Published::Shrunk;
        }
        Err(NoRoom::Full) => {
            drop(pending);
            drop(ex);
            return full(snap, writer);
        }
    };
    if snap.shrunk.load(Ordering::Relaxed) {
        snap.shrunk.store(false, Ordering::Relaxed);
    }
    if job.add_target(snap, slot).is_err() {
        drop(pending);
        drop(ex);
        snap.invalidate("out of memory for a pending exception");
        return Published::No;
    }
    snap.outstanding.inc();
    pending.insert(node.into_node(chunk, job.clone()));
    Published::Yes
}

/// A snapshot-device write counted in [`Snap::writes`]: the count goes
/// when this is dropped, unless the completion hook of the write's clone
/// took it over ([`WriteCount::hook`]).
struct WriteCount<'a>(Option<&'a Snap>);

impl WriteCount<'_> {
    /// The hook of the clone that carries the bio on: it uncounts the
    /// write when it completes (nothing for a read).
    fn hook(&mut self, snap: &Arc<Snap>) -> EndHook {
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

/// The COW device of `snap` is full: a `PO` snapshot's own write
/// overflows it, anything else invalidates it (as dm).
fn full(snap: &Snap, writer: Writer) -> Published {
    if writer == Writer::Snapshot && snap.store.kind() == StoreKind::PersistentOverflow {
        if !snap.overflowed.swap(true, Ordering::AcqRel) {
            pr_err!("snapshot overflowed: no room for a write to the snapshot\n");
            snap.events.bump();
        }
        return Published::Overflow;
    }
    snap.invalidate("COW device full");
    Published::No
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

    fn remap_to_cow(&self, bio: &mut Bio, new_chunk: u64) {
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
    fn merge_to_origin(&self, bio: Bio, io: Io<'_>, write: bool) {
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
    fn hold_merge_write(self: &Arc<Self>, bio: Bio, chunk: u64) {
        let Ok(node) = KBox::<HeldWrite>::new_uninit(GFP_KERNEL) else {
            pr_err!("snapshot-merge: out of memory to hold a write\n");
            bio.end(true);
            return;
        };
        let mut m = self.merging.lock();
        if m.holds(chunk) {
            let next = m.held.take();
            m.held = Some(node.write(HeldWrite { bio, chunk, next }));
            return;
        }
        drop(m);
        self.merge_write_again(bio, chunk);
    }

    /// Maps again a write (a counted clone whose end un-tracks `chunk`)
    /// held for a batch that ended: to the origin if the chunk was merged,
    /// to its COW chunk, tracked, if it still has its exception (the batch
    /// failed). Process context; never waits for the origin's throttle.
    fn merge_write_again(self: &Arc<Self>, mut bio: Bio, chunk: u64) {
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
        let mut held = {
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
        // Held writes were pushed in front: reverse for arrival order.
        let mut list = None;
        while let Some(mut h) = held {
            held = h.next.take();
            h.next = list;
            list = Some(h);
        }
        while let Some(mut h) = list {
            list = h.next.take();
            let HeldWrite { bio, chunk, .. } = KBox::into_inner(h);
            self.merge_write_again(bio, chunk);
        }
    }
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
