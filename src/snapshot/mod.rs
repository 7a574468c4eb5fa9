// SPDX-License-Identifier: GPL-2.0

//! The snapshot engine: origins, snapshots, exception tables, pending
//! exceptions, the copier and the exception store.
//!
//! - An [`Origin`](origin::Origin) is one origin device (by device number) and the
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
//! - A merge (`snapshot-merge`, `merge.rs`) hands a persistent snapshot
//!   over to its origin: the snapshot takes no more copies, a merge thread
//!   copies its chunks back newest first in dm-snapshot's on-disk
//!   protocol, and the origin's I/O goes through [`Snap::merge_map`].
//!
//! # Files, in the order a bio walks them
//!
//! 1. `targets.rs`: the `snapshot-origin`, `snapshot` and `snapshot-merge`
//!    targets; their map functions hand a bio to one of:
//! 2. `map.rs`: a `snapshot` target's bio, as a [`map::MapPlan`];
//!    `origin.rs`: an origin write (which snapshots need a copy first);
//!    `merge_io.rs`: a `snapshot-merge` target's bio.
//! 3. `publish.rs`: a new copy becomes the pending exception of a chunk,
//!    with a COW chunk from the snapshot's store.
//! 4. `copier.rs`: the copier thread runs the job (read the origin chunk,
//!    write the COW chunks) and releases the bios held on it, after
//! 5. `store.rs`: the exception store records (and, persistent, commits)
//!    the exception on the COW device.
//!
//! Beside the walk: `hooks.rs` (what runs when a clone ends), `held.rs`
//! (bios held on a job or a merge batch, released in arrival order),
//! `tracked.rs` (reads in flight per chunk), `snap.rs` (one snapshot's
//! state), `invalidate.rs` (invalidation and the invalid header),
//! `registry.rs` (origins and their snapshots: registration and
//! teardown), `merge.rs` (the merge thread), `leaves.rs` (the exception
//! table's leaf allocator).
//!
//! See `Documentation/locking.rst` for the lock order and contexts, and
//! `Documentation/design.rst` for the layering.

pub(crate) mod targets;

pub(crate) mod copier;
mod map;
mod merge_io;
mod origin;
mod publish;
pub(crate) mod store;

mod held;
mod hooks;
mod invalidate;
mod leaves;
pub(crate) mod merge;
mod registry;
mod snap;
mod tracked;

pub(crate) use copier::{Caller, Copier, Job};
pub(crate) use leaves::KLeaves;
pub(crate) use merge_io::{
    MergeRefusal, MERGE_DONE, MERGE_FAILED, MERGE_IDLE, MERGE_RUNNING, MERGE_STOPPED,
};
pub(crate) use registry::{OriginRef, SnapError, SnapParts, Snapshots};
pub(crate) use snap::Snap;
