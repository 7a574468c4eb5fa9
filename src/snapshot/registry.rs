// SPDX-License-Identifier: GPL-2.0

//! The registry of snapshots: every origin that has targets
//! ([`Snapshots`]), a target's reference on its origin ([`OriginRef`]),
//! and how a snapshot is registered on its origin, joined by a second
//! target on the same COW device, and taken off at its last target's
//! teardown. Process context only (table loads and teardown), never on
//! the I/O path.

use super::copier::Lane;
use super::held::HeldList;
use super::merge_io::{MergeInfo, MergeIo, MERGE_IDLE};
use super::origin::{MergeGate, Origin};
use super::snap::Snap;
use super::store::Store;
use super::tracked::TrackedReads;
use super::Copier;
use super::KLeaves;
use crate::kx::block::BdevFile;
use crate::kx::wait::{DrainCounter, EventCounter};
use crate::rdm_core::exception_table::ExceptionTable;
use crate::rdm_core::snapshot::{ChunkGeometry, StoreKind};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, Mutex};

/// Every origin that has targets, by device number.
#[pin_data]
pub(crate) struct Snapshots {
    /// Looked up and changed by table loads and target teardown only
    /// (process context, never on the I/O path).
    #[pin]
    pub(super) origins: Mutex<KVec<Option<OriginEntry>>>,
    pub(crate) copier: Arc<Copier>,
}

/// An origin in [`Snapshots::origins`] and how many users it has (a free
/// entry is `None`: entries are reused).
pub(super) struct OriginEntry {
    pub(super) origin: Arc<Origin>,
    pub(super) users: usize,
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

    /// A reference on the origin of device `devt`, made and listed if new.
    /// Process context (table load); takes `origins`. Errors: ENOMEM.
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
        let origin = if let Some(entry) = list.iter_mut().flatten().find(|e| e.origin.devt == devt)
        {
            entry.users += 1;
            entry.origin.clone()
        } else {
            let entry = OriginEntry {
                origin: fresh.clone(),
                users: 1,
            };
            match list.iter_mut().find(|s| s.is_none()) {
                Some(free) => *free = Some(entry),
                None => list.push(Some(entry), GFP_KERNEL)?,
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
pub(super) fn cow_user_of_other_origin(
    origins: &KVec<Option<OriginEntry>>,
    cow: u64,
    origin: u64,
) -> Option<u64> {
    origins
        .iter()
        .flatten()
        .filter(|entry| entry.origin.devt != origin)
        .find(|entry| {
            entry
                .origin
                .snaps
                .read()
                .iter()
                .flatten()
                .any(|s| s.cow.devt() == cow)
        })
        .map(|entry| entry.origin.devt)
}

/// A user's reference on an origin; the last one takes it out of the list.
pub(crate) struct OriginRef {
    pub(super) snapshots: Arc<Snapshots>,
    pub(super) origin: Arc<Origin>,
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
        for entry in list.iter_mut() {
            if let Some(e) = entry {
                if Arc::ptr_eq(&e.origin, &self.origin) {
                    e.users -= 1;
                    if e.users == 0 {
                        *entry = None;
                    }
                    return;
                }
            }
        }
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
    pub(super) fn joinable(&self, kind: StoreKind, merge: bool) -> Result<(), SnapError> {
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
    pub(super) fn add_user(self: &Arc<Self>) -> Result<(), SnapError> {
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
                        held: HeldList::new(),
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
        for entry in snaps.iter_mut() {
            if entry.as_ref().is_some_and(|s| Arc::ptr_eq(s, self)) {
                *entry = None;
            }
        }
        update_min_chunk(&origin, &snaps);
        drop(snaps);
        drop(origins);
        self.listed.dec();
    }
}

pub(super) fn update_min_chunk(origin: &Origin, snaps: &KVec<Option<Arc<Snap>>>) {
    let min = snaps
        .iter()
        .flatten()
        .map(|s| s.geom.sectors() as u32)
        .min()
        .unwrap_or(0);
    origin.min_chunk.store(min, Ordering::Release);
}
