// SPDX-License-Identifier: GPL-2.0

//! The `snapshot-origin`, `snapshot` and `snapshot-merge` targets
//! (dm-snapshot's table syntax, status and behaviour;
//! `Documentation/admin-guide.rst`).

use super::merge::MergeThread;
use super::store::{OpenError, Opened, Overflow, Persistent, Store, Transient};
use super::{
    Caller, KLeaves, MergeRefusal, OriginRef, Snap, SnapError, SnapParts, Snapshots, MERGE_DONE,
    MERGE_FAILED, MERGE_IDLE, MERGE_RUNNING,
};
use crate::kx::block::{BdevFile, Bio, BioOp};
use crate::kx::kthread::Kthread;
use crate::kx::wait::EventCounter;
use crate::rdm_core::exception_table::ExceptionTable;
use crate::rdm_core::snapshot::{
    parse_origin, parse_snapshot, ChunkGeometry, SnapshotArgs, StoreKind,
};
use crate::target::{arg_error, open_device, write_dev, Ctx, EndHook, Io, Target, TargetTypes};
use core::fmt::{self, Write};
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::{c_str, new_mutex};

/// Adds the snapshot target types to `types`: their constructors hold
/// `snapshots`, where the targets find their origins and the copier.
pub(crate) fn register(types: &mut TargetTypes, snapshots: &Arc<Snapshots>) -> Result {
    add_type(
        types,
        "snapshot-origin",
        [1, 9, 0],
        snapshots,
        OriginTarget::new,
    )?;
    add_type(types, TY, [1, 16, 0], snapshots, SnapshotTarget::new)?;
    add_type(types, MTY, [1, 5, 0], snapshots, MergeTarget::new)
}

/// A target's constructor with the snapshot registry.
type NewTarget<T> = fn(&Ctx<'_>, &Arc<Snapshots>, &[u8]) -> Result<T>;

/// Adds the type `name` (dm's `version`), whose targets `new` builds with
/// `snapshots`.
fn add_type<T: Target + 'static>(
    types: &mut TargetTypes,
    name: &'static str,
    version: [u32; 3],
    snapshots: &Arc<Snapshots>,
    new: NewTarget<T>,
) -> Result {
    let s = snapshots.clone();
    types.add(
        name,
        version,
        Arc::new(
            move |ctx: &Ctx<'_>, p: &[u8]| -> Result<Arc<dyn Target>> {
                Ok(Arc::new(new(ctx, &s, p)?, GFP_KERNEL)?)
            },
            GFP_KERNEL,
        )?,
    )
}

/// `snapshot-origin <dev>`: the origin device, whose writes first copy the
/// old data of their chunks to every snapshot.
pub(crate) struct OriginTarget {
    dev: Arc<BdevFile>,
    origin: OriginRef,
}

impl OriginTarget {
    pub(crate) fn new(ctx: &Ctx<'_>, snapshots: &Arc<Snapshots>, params: &[u8]) -> Result<Self> {
        const TY: &str = "snapshot-origin";
        let spec = parse_origin(params).map_err(|e| arg_error(ctx, TY, e))?;
        let dev = open_device(ctx, TY, spec)?;
        let size = dev.nr_sectors();
        // A device of size 0 (no live table yet: LVM2 loads the origin
        // over its `-real` device before resuming that) is not checked,
        // as dm.
        if size != 0 && ctx.len > size {
            return Err(ctx.fail(
                TY,
                format_args!(
                    "the origin device has {size} sectors, fewer than the target's {}",
                    ctx.len
                ),
                EINVAL,
            ));
        }
        let origin = snapshots.origin(dev.devt())?;
        Ok(OriginTarget { dev, origin })
    }
}

impl Target for OriginTarget {
    fn map(&self, mut bio: Bio, offset: u64, io: Io<'_>) {
        bio.set_sector(offset);
        // Reads, writes while there is no snapshot, and writes whose
        // chunks every snapshot has, go straight on (one clone, for the
        // origin device); the other writes are held until their copies
        // are done. Nothing else is passed on: a discard, write zeroes or
        // secure erase would change chunks the snapshots still need.
        match bio.op() {
            BioOp::Read => {
                io.remap(bio, &self.dev);
                return;
            }
            BioOp::Write => {}
            _ => {
                io.end_unsupported(bio);
                return;
            }
        }
        if self.origin.min_chunk() == 0 || self.origin.write_is_clear(bio.sector(), bio.sectors()) {
            io.remap(bio, &self.dev);
            return;
        }
        if let Some(clone) = io.clone_bio(bio, None, EndHook::NONE) {
            self.origin.write(&self.dev, clone, Caller::Submitter);
        }
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        write_dev(out, &self.dev)
    }

    fn devices(&self, f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {
        f(&self.dev, 0);
    }
}

/// `snapshot <origin> <cow> N|P|PO <chunk_sectors>`: the origin as it was
/// when the snapshot became active, writable; `P`/`PO` keep it on the COW
/// device in dm-snapshot's format.
pub(crate) struct SnapshotTarget {
    snap: Arc<Snap>,
    /// The target's length in sectors: the snapshot's, once it resumes.
    len: u64,
}

impl SnapshotTarget {
    pub(crate) fn new(ctx: &Ctx<'_>, snapshots: &Arc<Snapshots>, params: &[u8]) -> Result<Self> {
        let fail = |why: fmt::Arguments<'_>| ctx.fail(TY, why, EINVAL);
        let args = parse_snapshot(params).map_err(|e| fail(format_args!("{e}")))?;
        if args.discard_zeroes_cow || args.discard_passdown_origin {
            return Err(fail(format_args!(
                "discard features are not supported (rdm maps no discards)"
            )));
        }
        let origin_dev = open_device(ctx, TY, args.origin)?;
        let cow = open_device(ctx, TY, args.cow)?;
        if origin_dev.devt() == cow.devt() {
            return Err(fail(format_args!("origin and COW are the same device")));
        }
        if origin_dev.nr_sectors() != 0 && ctx.len > origin_dev.nr_sectors() {
            return Err(fail(format_args!(
                "the snapshot ({} sectors) is longer than its origin ({} sectors)",
                ctx.len,
                origin_dev.nr_sectors()
            )));
        }
        // A snapshot on this COW device being taken down (its last table
        // just went) is waited for, then the device is read afresh.
        loop {
            match set_up(ctx, snapshots, TY, &args, &origin_dev, &cow)? {
                Ok(snap) => return Ok(SnapshotTarget { snap, len: ctx.len }),
                Err(dying) => dying.wait_gone(),
            }
        }
    }
}

const TY: &str = "snapshot";
const MTY: &str = "snapshot-merge";

/// Logs why a snapshot (or merge) target could not be set up; the errno.
fn snap_error(ctx: &Ctx<'_>, ty: &str, e: SnapError) -> Error {
    let fail = |why: fmt::Arguments<'_>| ctx.fail(ty, why, EINVAL);
    match e {
        SnapError::CowInUse(chunk) => fail(format_args!(
            "the COW device is in use by a snapshot with chunk size {chunk}"
        )),
        SnapError::CowOtherStore => fail(format_args!(
            "the COW device is in use by a snapshot with another exception store type"
        )),
        SnapError::CowOtherOrigin(other) => {
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(other);
            fail(format_args!(
                "the COW device is in use by a snapshot of another origin ({ma}:{mi})"
            ))
        }
        SnapError::NoMem => ENOMEM,
        SnapError::Dying(_) => fail(format_args!(
            "the snapshot on the COW device is being taken down"
        )),
        SnapError::Merging => fail(format_args!(
            "the snapshot on the COW device is handed over to a merge into its origin"
        )),
        SnapError::MergeTransient => fail(format_args!(
            "the snapshot on the COW device is transient (N): only persistent snapshots can be merged"
        )),
    }
}

/// Joins the snapshot already on the COW device (a reload: its state in
/// memory is newer than anything on the device), or opens the store and
/// registers a new snapshot. `Ok(Err(dying))`: the snapshot on the COW
/// device is being taken down; wait for it, then try again.
fn set_up(
    ctx: &Ctx<'_>,
    snapshots: &Arc<Snapshots>,
    ty: &str,
    args: &SnapshotArgs<'_>,
    origin_dev: &Arc<BdevFile>,
    cow: &Arc<BdevFile>,
) -> Result<Result<Arc<Snap>, Arc<Snap>>> {
    let fail = |why: fmt::Arguments<'_>| ctx.fail(ty, why, EINVAL);
    let merge = ty == MTY;
    let origin = snapshots.origin(origin_dev.devt())?;
    let chunk = u64::from(args.chunk_sectors);
    match Snap::join(&origin, cow.devt(), chunk, args.store, merge) {
        Ok(Some(snap)) => return Ok(Ok(snap)),
        Ok(None) => {}
        Err(SnapError::Dying(snap)) => return Ok(Err(snap)),
        Err(e) => return Err(snap_error(ctx, ty, e)),
    }
    let mut exceptions = ExceptionTable::new(KLeaves::new());
    let (store, geom, valid) = match args.store {
        StoreKind::Transient => {
            let geom = ChunkGeometry::new(
                chunk,
                origin_dev.logical_block_size(),
                cow.logical_block_size(),
            )
            .map_err(|e| fail(format_args!("{e}")))?;
            let cow_sectors = cow.nr_sectors();
            let need = Transient::min_cow_sectors(geom);
            // Size 0 (no live table yet): not checked, as dm.
            if cow_sectors != 0 && cow_sectors < need {
                return Err(fail(format_args!(
                    "COW device is too small: {cow_sectors} sectors, the store needs at least {need}"
                )));
            }
            (
                Store::Transient(Transient::new(geom, cow.clone())),
                geom,
                true,
            )
        }
        kind => {
            let opened = open_persistent(ctx, ty, origin_dev, cow, args, kind, &mut exceptions)?;
            (Store::Persistent(opened.store), opened.geom, opened.valid)
        }
    };
    let parts = SnapParts {
        origin_dev: origin_dev.clone(),
        cow: cow.clone(),
        geom,
        store,
        exceptions,
        valid,
        len: ctx.len,
    };
    match Snap::register(origin, parts, ctx.events, merge) {
        Ok(snap) => Ok(Ok(snap)),
        Err(SnapError::Dying(snap)) => Ok(Err(snap)),
        Err(e) => Err(snap_error(ctx, ty, e)),
    }
}

/// Opens a persistent store (reading every exception into `exceptions`),
/// with a log line for whatever is wrong with the device.
fn open_persistent(
    ctx: &Ctx<'_>,
    ty: &str,
    origin_dev: &Arc<BdevFile>,
    cow: &Arc<BdevFile>,
    args: &SnapshotArgs<'_>,
    kind: StoreKind,
    exceptions: &mut ExceptionTable<KLeaves>,
) -> Result<Opened> {
    let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(cow.devt());
    let add = |old, new| exceptions.insert(old, new);
    let overflow = if kind == StoreKind::PersistentOverflow {
        Overflow::Fails
    } else {
        Overflow::Invalidates
    };
    let opened = Persistent::open(cow, origin_dev.logical_block_size(), args.chunk_sectors, overflow, add)
        .map_err(|e| match e {
            OpenError::Format(f) => ctx.fail(ty, format_args!("COW device {ma}:{mi}: {f}"), EINVAL),
            OpenError::DiskChunk(chunk, why) => ctx.fail(
                ty,
                format_args!("COW device {ma}:{mi}: invalid chunk size {chunk} on disk: {why}"),
                EINVAL,
            ),
            OpenError::ChunkMismatch { table, disk } => ctx.fail(
                ty,
                format_args!(
                    "COW device {ma}:{mi}: chunk size {table} in the table disagrees with chunk size {disk} on disk (give {disk} or 0)"
                ),
                EINVAL,
            ),
            OpenError::TableChunk(why) => ctx.fail(ty, format_args!("{why}"), EINVAL),
            OpenError::Errno(e) => ctx.fail(
                ty,
                format_args!("COW device {ma}:{mi}: cannot read or set up the snapshot metadata"),
                e,
            ),
        })?;
    if !opened.valid {
        pr_warn!("snapshot: COW device {ma}:{mi} is marked invalid on disk: the snapshot loads as Invalid\n");
    } else if opened.exceptions > 0 {
        pr_info!(
            "snapshot: COW device {ma}:{mi}: {} exceptions read\n",
            opened.exceptions
        );
    }
    Ok(opened)
}

impl Target for SnapshotTarget {
    fn map(&self, mut bio: Bio, offset: u64, io: Io<'_>) {
        bio.set_sector(offset);
        self.snap.map(bio, io);
    }

    fn max_io_len(&self, offset: u64) -> Option<u64> {
        Some(self.snap.geom.sectors() - self.snap.geom.offset_in_chunk(offset))
    }

    fn resume(&self) {
        self.snap.activate(self.len);
    }

    /// `stats`: the exception table's size (rdm's own; dm-snapshot has no
    /// message): `exceptions <n> runs <n> table_bytes <n>`.
    fn message(&self, msg: &[u8], out: &mut dyn Write) -> Option<Result> {
        let mut words = msg
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"stats".as_slice()) || words.next().is_some() {
            return None;
        }
        let (exceptions, runs, bytes) = self.snap.table_usage();
        Some(
            write!(
                out,
                "exceptions {exceptions} runs {runs} table_bytes {bytes}"
            )
            .map_err(|_| ENOSPC),
        )
    }

    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        // Handed over to a merge, the snapshot is no more (dm: the source
        // of a handover goes invalid).
        if !self.snap.is_valid() || self.snap.is_handed_over() {
            write!(out, "Invalid")
        } else if self.snap.is_overflowed() {
            write!(out, "Overflow")
        } else {
            self.snap.store.status(out)
        }
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        write_dev(out, &self.snap.origin_dev)?;
        out.write_char(' ')?;
        write_dev(out, &self.snap.cow)?;
        let kind = match self.snap.store.kind() {
            StoreKind::Transient => "N",
            StoreKind::Persistent => "P",
            StoreKind::PersistentOverflow => "PO",
        };
        write!(out, " {kind} {}", self.snap.geom.sectors())
    }

    fn devices(&self, f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {
        f(&self.snap.origin_dev, 0);
        f(&self.snap.cow, 0);
    }
}

impl Drop for SnapshotTarget {
    fn drop(&mut self) {
        self.snap.unregister();
    }
}

/// `snapshot-merge <origin> <cow> P|PO <chunk_sectors>`: merges the
/// persistent snapshot on `<cow>` back into `<origin>`, in the place of
/// the origin's `snapshot-origin` target (dm-snapshot's third target). The
/// snapshot already loaded on the COW device is handed over when the
/// target resumes (a `snapshot` target on it fails its I/O from then on);
/// without one, the store is read from the device. The merge runs in a
/// thread (`merge.rs`) while the device is resumed; the origin stays in
/// use meanwhile (`Snap::merge_map`).
pub(crate) struct MergeTarget {
    snap: Arc<Snap>,
    /// The store type of the table line.
    kind: StoreKind,
    /// The merge device's event number (raised when the merge ends).
    events: Arc<EventCounter>,
    /// The merge thread while it runs: started by resume, stopped by
    /// presuspend and teardown (control path only; held only to take or
    /// put the handle, never while the thread is stopped).
    runner: Pin<KBox<Mutex<Option<Kthread<MergeThread>>>>>,
}

impl MergeTarget {
    pub(crate) fn new(ctx: &Ctx<'_>, snapshots: &Arc<Snapshots>, params: &[u8]) -> Result<Self> {
        let fail = |why: fmt::Arguments<'_>| ctx.fail(MTY, why, EINVAL);
        let args = parse_snapshot(params).map_err(|e| fail(format_args!("{e}")))?;
        if args.discard_zeroes_cow || args.discard_passdown_origin {
            return Err(fail(format_args!(
                "discard features are not supported (rdm maps no discards)"
            )));
        }
        if args.store == StoreKind::Transient {
            // dm: "Snapshot exception store does not support snapshot-merge."
            return Err(fail(format_args!(
                "the store type is N (transient): only persistent snapshots (P, PO) can be merged"
            )));
        }
        let runner = KBox::pin_init(new_mutex!(None, "rdm:merge_runner"), GFP_KERNEL)?;
        let origin_dev = open_device(ctx, MTY, args.origin)?;
        let cow = open_device(ctx, MTY, args.cow)?;
        if origin_dev.devt() == cow.devt() {
            return Err(fail(format_args!("origin and COW are the same device")));
        }
        if ctx.len > origin_dev.nr_sectors() {
            return Err(fail(format_args!(
                "the target ({} sectors) is longer than its origin ({} sectors)",
                ctx.len,
                origin_dev.nr_sectors()
            )));
        }
        let snap = loop {
            match set_up(ctx, snapshots, MTY, &args, &origin_dev, &cow)? {
                Ok(snap) => break snap,
                Err(dying) => dying.wait_gone(),
            }
        };
        if let Err(why) = snap.claim_merge() {
            // Dropped with no lock held: the snapshot's last user takes
            // `origins`.
            snap.unregister();
            return Err(match why {
                MergeRefusal::Invalid => {
                    fail(format_args!("the snapshot is invalid: it cannot be merged"))
                }
                MergeRefusal::Overflowed => {
                    fail(format_args!("the snapshot overflowed: it cannot be merged"))
                }
                MergeRefusal::OtherMerge(other) => {
                    let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(other);
                    fail(format_args!(
                        "a snapshot of this origin (COW device {ma}:{mi}) is already merging"
                    ))
                }
            });
        }
        Ok(MergeTarget {
            snap,
            kind: args.store,
            events: ctx.events.clone(),
            runner,
        })
    }

    /// Stops the merge thread, if one runs, after its batch.
    fn stop(&self) {
        let thread = self.runner.lock().take();
        // Outside the lock: this waits for the batch in flight.
        drop(thread);
    }
}

impl Target for MergeTarget {
    fn map(&self, mut bio: Bio, offset: u64, io: Io<'_>) {
        bio.set_sector(offset);
        self.snap.merge_map(bio, io);
    }

    fn max_io_len(&self, offset: u64) -> Option<u64> {
        Some(self.snap.geom.sectors() - self.snap.geom.offset_in_chunk(offset))
    }

    /// Hands the snapshot over (the first time) and starts the merge.
    fn resume(&self) {
        let snap = &self.snap;
        if snap.hand_over() {
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(snap.cow.devt());
            let (oa, oi) = crate::rdm_core::dm_ioctl::decode_dev(snap.origin_dev.devt());
            pr_info!(
                "snapshot-merge: merging the snapshot on COW device {ma}:{mi} into origin {oa}:{oi}\n"
            );
        }
        let mut runner = self.runner.lock();
        if runner.is_some() {
            return;
        }
        if snap.merge.running.swap(true, Ordering::AcqRel) {
            pr_warn!("snapshot-merge: the snapshot is already being merged by another target\n");
            return;
        }
        let body = MergeThread {
            snap: snap.clone(),
            events: self.events.clone(),
        };
        match Kthread::run(c_str!("rdm_merge"), body) {
            Ok(t) => *runner = Some(t),
            Err(e) => {
                snap.merge.running.store(false, Ordering::Release);
                snap.merge.state.store(MERGE_FAILED, Ordering::Release);
                pr_err!("snapshot-merge: cannot start the merge thread ({e:?})\n");
                self.events.bump();
            }
        }
    }

    /// Stops the merge after its batch (dm's `stop_merge`): a suspended
    /// origin is not written.
    fn presuspend(&self) {
        self.stop();
    }

    /// `stats`: the exception table's size and the merge's progress (rdm's
    /// own; the status line stays dm's): `exceptions <n> runs <n>
    /// table_bytes <n> merge <idle|running|done|failed|stopped>
    /// merged_chunks <n> batches <n> left <n>`.
    fn message(&self, msg: &[u8], out: &mut dyn Write) -> Option<Result> {
        let mut words = msg
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"stats".as_slice()) || words.next().is_some() {
            return None;
        }
        let snap = &self.snap;
        let (exceptions, runs, bytes) = snap.table_usage();
        let state = match snap.merge.state.load(Ordering::Acquire) {
            MERGE_IDLE => "idle",
            MERGE_RUNNING => "running",
            MERGE_DONE => "done",
            MERGE_FAILED => "failed",
            _ => "stopped",
        };
        let left = snap.store.persistent().map_or(0, |p| p.list_len());
        Some(
            write!(
                out,
                "exceptions {exceptions} runs {runs} table_bytes {bytes} merge {state} merged_chunks {} batches {} left {left}",
                snap.merge.merged.load(Ordering::Acquire),
                snap.merge.batches.load(Ordering::Acquire),
            )
            .map_err(|_| ENOSPC),
        )
    }

    /// dm's: `Invalid`, `Merge failed`, `Overflow`, or `<allocated>/<total>
    /// <metadata>`, which shrinks as the merge goes, down to the metadata
    /// alone.
    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        let snap = &self.snap;
        if !snap.is_valid() {
            write!(out, "Invalid")
        } else if snap.merge.state.load(Ordering::Acquire) == MERGE_FAILED {
            write!(out, "Merge failed")
        } else if snap.is_overflowed() {
            write!(out, "Overflow")
        } else {
            snap.store.status(out)
        }
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        write_dev(out, &self.snap.origin_dev)?;
        out.write_char(' ')?;
        write_dev(out, &self.snap.cow)?;
        let kind = match self.kind {
            StoreKind::PersistentOverflow => "PO",
            _ => "P",
        };
        write!(out, " {kind} {}", self.snap.geom.sectors())
    }

    fn devices(&self, f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {
        f(&self.snap.origin_dev, 0);
        f(&self.snap.cow, 0);
    }
}

impl Drop for MergeTarget {
    fn drop(&mut self) {
        self.stop();
        self.snap.release_merge();
        self.snap.unregister();
    }
}
