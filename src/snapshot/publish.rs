// SPDX-License-Identifier: GPL-2.0

//! Publication of a pending exception: making a copier job the pending
//! exception of a chunk in one snapshot, with a COW chunk taken from its
//! store. Shared by the origin write path (`origin.rs`) and the snapshot
//! write path (`map.rs`); the job then runs on the copier (`copier.rs`).

use super::copier::Job;
use super::snap::Snap;
use crate::rdm_core::snapshot::{NoRoom, StoreKind};
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

/// What [`publish_one`] did.
#[derive(PartialEq, Eq)]
pub(super) enum Published {
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
pub(super) enum Writer {
    /// A write to the origin: the snapshot's copy of the chunk.
    Origin,
    /// A write to the snapshot itself (a `PO` snapshot overflows instead
    /// of going invalid when there is no room).
    Snapshot,
}

/// Makes `job` the pending exception of `chunk` in `snap` unless the chunk
/// is already copied or pending, taking a COW chunk for it from the store
/// and adding `snap` to the job's targets.
///
/// Locking: takes a read hold of `exceptions`, then `pending` (and the
/// store's allocation lock inside it); the checks of `active` and
/// `handed_over` are made under `pending`, as [`Snap::unregister`] and
/// [`Snap::hand_over`] rely on. Allocates nothing (`node` and the job's
/// room for targets were made before). Counts the publication in
/// `outstanding`. Process context (map path or copier); never sleeps.
///
/// Returns what it did ([`Published`]); on `No` the caller plans again or
/// fails the bio (the snapshot may have gone invalid here: a full COW
/// device, or a full target list in the job, which the room its callers
/// reserve rules out).
pub(super) fn publish_one(
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
    let place = match snap.store.prepare_exception() {
        Ok(place) => place,
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
    if job.add_target(snap, place).is_err() {
        drop(pending);
        drop(ex);
        snap.invalidate("out of memory for a pending exception");
        return Published::No;
    }
    snap.outstanding.inc();
    pending.insert(node.into_node(chunk, job.clone()));
    Published::Yes
}

/// The COW device of `snap` is full: a `PO` snapshot's own write
/// overflows it (marked once, an event raised), anything else invalidates
/// it (as dm). Called with no lock of the snapshot held; never sleeps.
/// Returns `Overflow` or `No`.
pub(super) fn full(snap: &Snap, writer: Writer) -> Published {
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
