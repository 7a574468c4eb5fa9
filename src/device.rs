// SPDX-License-Identifier: GPL-2.0

//! Mapped devices (the registry of them, by name and uuid, is the control
//! device's: `control.rs`). A device knows its targets only through the
//! target API (`target.rs`); what it needs of its creator comes in a
//! [`DeviceEnv`] (the workqueue, the global event, a [`LastClose`] callback).
//!
//! A [`MappedDevice`] is a bio-based gendisk with an active table (what I/O
//! is mapped through) and an inactive one (loaded, waiting for resume).
//!
//! The I/O path takes no lock: it enters the device's SRCU read section,
//! reads the published active table, counts the bio on that table's
//! [`DrainCounter`] and leaves; the count drops when the bio completes.
//! Suspend stops new bios (they are parked on `deferred`), waits for the SRCU
//! readers and then for the table's count to drain; resume publishes the
//! inactive table (if any) and lets the parked bios go: a work item on
//! rdm's workqueue resubmits them. A table is freed only when the last bio
//! that used it has completed.
//!
//! The control path has two locks per device: `suspend_lock` serialises
//! suspend, resume and remove and is held across their waits; `tables`
//! holds what queries read (the tables, the suspended flag, whether the
//! device was removed) and is only ever held briefly, so `info`, `status`,
//! `table` and `deps` answer while a suspend waits for stalled I/O. See
//! `Documentation/locking.rst`.
//!
//! [`DrainCounter`]: crate::kx::wait::DrainCounter

use crate::kx::block::{
    AttrText, BdevFile, Bio, BioDriver, BioList, BioOp, BioSet, DiskAttr, FlushesDone, GenDisk,
    Uevent,
};
use crate::kx::memalloc::NoIo;
use crate::kx::module::ModuleRef;
use crate::kx::srcu::{Srcu, SrcuArc};
use crate::kx::wait::{DrainRef, DrainToken, Drained, EventCounter, PollEvent};
use crate::kx::workqueue::{enqueue_arc, OwnedQueue};
use crate::table::{Entry as TableEntry, Table, TableArc};
use crate::target::{refuses, CloneData, Io};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use kernel::sync::{Arc, ArcBorrow, Mutex, SpinLock};
use kernel::workqueue::{impl_has_work, new_work, Work, WorkItem};
use kernel::{c_str, new_mutex, new_spinlock};

/// Longest name (without NUL) and uuid, as dm-ioctl.h allows.
pub(crate) const NAME_MAX: usize = crate::rdm_core::dm_ioctl::sys::DM_NAME_LEN as usize - 1;
pub(crate) const UUID_MAX: usize = crate::rdm_core::dm_ioctl::sys::DM_UUID_LEN as usize - 1;

/// A short string kept inline (a device name or uuid).
#[derive(Clone, Copy)]
pub(crate) struct Name {
    bytes: [u8; UUID_MAX],
    len: u8,
}

impl Name {
    pub(crate) const EMPTY: Name = Name {
        bytes: [0; UUID_MAX],
        len: 0,
    };

    /// `None` if longer than `max`.
    pub(crate) fn new(s: &[u8], max: usize) -> Option<Name> {
        if s.len() > max.min(UUID_MAX) {
            return None;
        }
        let mut n = Name::EMPTY;
        n.bytes[..s.len()].copy_from_slice(s);
        n.len = s.len() as u8;
        Some(n)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What suspend, resume and remove work on, under
/// [`MappedDevice::suspend_lock`] (held across their waits).
struct SuspendState {
    /// The gendisk; `None` once the device is removed.
    disk: Option<GenDisk<MappedDevice>>,
    /// The filesystem on the device was frozen by the suspend.
    frozen: bool,
}

/// What the control commands read, under [`MappedDevice::tables`] (never
/// held across a wait for I/O, a table build or drop, or a user copy).
/// Changed by table loads and clears (inactive), and by suspend, resume and
/// remove, which hold `suspend_lock` too.
pub(crate) struct Tables {
    /// The active table (also published to the I/O path in `map`).
    pub(crate) active: Option<TableArc>,
    /// The table loaded for the next resume.
    pub(crate) inactive: Option<TableArc>,
    /// The table a resume in progress is swapping in (the inactive one when
    /// the resume began, which a load may have replaced since): a load's
    /// cycle check follows it too.
    resuming: Option<TableArc>,
    /// Suspended (by DM_DEV_SUSPEND), and done waiting for I/O.
    pub(crate) suspended: bool,
    /// The device is being or has been removed: commands answer ENXIO.
    removed: bool,
}

/// Open count and removal, under [`MappedDevice::opens`] (a spinlock: taken
/// by the block layer's open and release).
struct Opens {
    count: i32,
    removing: bool,
    /// DM_DEFERRED_REMOVE was asked while open: remove on last close.
    deferred_remove: bool,
}

/// A mapped device.
///
/// # Invariants
///
/// - The I/O path reads `map` only inside an SRCU read section of `srcu`
///   and counts its bio on the table there ([`DrainRef`]); a table taken
///   out of `map` (under `suspend_lock`) is dropped only after
///   `synchronize` and after its count drained to zero, so no bio in
///   flight outlives its table.
/// - `io_suspended` and `dying` are written only under `suspend_lock`;
///   after a write and `synchronize`, every bio either saw the flag or is
///   counted on the table. While `io_suspended`, bios are parked on
///   `deferred`, and `restart_work` resubmits them after a resume.
/// - The active table (`map` and `Tables::active`) and `Tables::suspended`
///   change only with `suspend_lock` held; `tables` is held only briefly,
///   never across I/O, a table's build or drop, or a user copy.
/// - `names` is a copy of the registry entry's, written under the
///   registry lock (`None`: not registered).
/// - The device holds a module reference (`_module`) while it exists; its
///   last reference is dropped only in a control command or on `wq`.
#[pin_data]
pub(crate) struct MappedDevice {
    pub(crate) minor: u32,
    /// The disk's device number, `huge_encode_dev()` form.
    pub(crate) devt: u64,
    srcu: Srcu,
    /// The active table as the I/O path sees it (SRCU-published).
    map: SrcuArc<Drained<Table>>,
    /// I/O is parked instead of mapped.
    io_suspended: AtomicBool,
    /// I/O fails: the device is being removed.
    dying: AtomicBool,
    /// Bios parked while suspended.
    #[pin]
    deferred: SpinLock<BioList>,
    /// Resubmits the parked bios after a resume (dm's `md->work`).
    #[pin]
    restart_work: Work<MappedDevice, RESTART_WORK>,
    /// Removes the device after its last close (deferred remove).
    #[pin]
    remove_work: Work<MappedDevice, REMOVE_WORK>,
    /// Drops the disk's reference to the device, from `free_disk`.
    #[pin]
    release_work: Work<MappedDevice, RELEASE_WORK>,
    #[pin]
    bioset: BioSet<CloneData>,
    /// Serialises suspend, resume and remove of this device; held across
    /// their waits (freeze, SRCU grace periods, in-flight drain), never
    /// across user copies; never taken on the I/O path or by queries.
    #[pin]
    suspend_lock: Mutex<SuspendState>,
    /// The tables and flags queries read; held only briefly.
    #[pin]
    tables: Mutex<Tables>,
    /// Created read-only.
    pub(crate) read_only: bool,
    #[pin]
    opens: SpinLock<Opens>,
    /// The name and uuid while the device is registered, for the `dm/`
    /// sysfs attributes (as dm's `dm_hash_cells_mutex`: the registry lock
    /// is held across `add_disk`, so a sysfs read must not take it). A
    /// copy of the registry entry's, set and changed under the registry
    /// lock; a leaf lock.
    #[pin]
    names: SpinLock<Option<(Name, Name)>>,
    /// The event number (table swaps, renames, snapshot invalidation);
    /// targets get a reference to raise events from any context.
    pub(crate) events: Arc<EventCounter>,
    /// rdm's own workqueue (`WQ_MEM_RECLAIM`): deferred removals, the
    /// resubmission of parked bios, the data of flushes with data, and the
    /// final drop of the device. Declared before `_module` so that it is
    /// dropped first: the module stays pinned until this reference is gone
    /// (the control device's registry holds the queue until module exit).
    wq: Arc<OwnedQueue>,
    /// Called on the last close when a deferred remove is pending (from
    /// `wq`); dropped before `_module`, as `wq`.
    last_close: Arc<dyn LastClose>,
    /// Keeps rdm loaded while the device exists.
    _module: ModuleRef,
}

impl MappedDevice {
    /// Creates a device with minor `minor` and its (empty) disk `name`.
    pub(crate) fn create(
        env: &DeviceEnv,
        minor: u32,
        disk_name: &CString,
        read_only: bool,
    ) -> Result<Arc<MappedDevice>> {
        let major = env.major;
        let srcu = Srcu::new()?;
        let events = Arc::new(
            EventCounter::with_parent(env.global_event.clone()),
            GFP_KERNEL,
        )?;
        let devt = crate::rdm_core::dm_ioctl::encode_dev(major, minor);
        let md = Arc::pin_init(
            try_pin_init!(MappedDevice {
                minor,
                devt,
                srcu,
                map: SrcuArc::new(),
                io_suspended: AtomicBool::new(false),
                dying: AtomicBool::new(false),
                deferred <- new_spinlock!(BioList::new(), "rdm:deferred"),
                restart_work <- new_work!("rdm:restart_work"),
                remove_work <- new_work!("rdm:remove_work"),
                release_work <- new_work!("rdm:release_work"),
                bioset <- BioSet::new(16),
                suspend_lock <- new_mutex!(
                    SuspendState {
                        disk: None,
                        frozen: false,
                    },
                    "rdm:suspend"
                ),
                tables <- new_mutex!(
                    Tables {
                        active: None,
                        inactive: None,
                        resuming: None,
                        suspended: false,
                        removed: false,
                    },
                    "rdm:device_tables"
                ),
                read_only,
                opens <- new_spinlock!(
                    Opens {
                        count: 0,
                        removing: false,
                        deferred_remove: false,
                    },
                    "rdm:opens"
                ),
                names <- new_spinlock!(None, "rdm:names"),
                events,
                wq: env.wq.clone(),
                last_close: env.last_close.clone(),
                _module: ModuleRef::get(),
            }),
            GFP_KERNEL,
        )?;
        let disk = GenDisk::add(major, minor, disk_name, md.clone())?;
        disk.set_read_only(read_only);
        md.suspend_lock.lock().disk = Some(disk);
        Ok(md)
    }

    /// Runs `f` on the tables under the `tables` lock (briefly: `f` must
    /// not wait for I/O). ENXIO if the device was removed.
    pub(crate) fn query<R>(&self, f: impl FnOnce(&Tables) -> Result<R>) -> Result<R> {
        let t = self.tables.lock();
        if t.removed {
            return Err(ENXIO);
        }
        f(&t)
    }

    /// The device numbers of the underlying devices of every table the
    /// device has (active, inactive, being resumed): where its I/O may go
    /// now or after a resume.
    pub(crate) fn mapped_devts(&self) -> Result<KVec<u64>> {
        let t = self.tables.lock();
        let mut devts = KVec::new();
        if t.removed {
            return Ok(devts);
        }
        for table in [&t.active, &t.inactive, &t.resuming].into_iter().flatten() {
            for d in table.devices.iter() {
                let devt = d.devt();
                if !devts.contains(&devt) {
                    devts.push(devt, GFP_KERNEL)?;
                }
            }
        }
        Ok(devts)
    }

    /// Makes `table` the inactive table; returns the one it replaces, for
    /// the caller to drop with no lock held.
    pub(crate) fn set_inactive(&self, table: Option<TableArc>) -> Result<Option<TableArc>> {
        let mut t = self.tables.lock();
        if t.removed {
            return Err(ENXIO);
        }
        Ok(core::mem::replace(&mut t.inactive, table))
    }

    /// The event number (bumped by table swaps, renames and targets).
    pub(crate) fn event_nr(&self) -> u32 {
        self.events.get()
    }

    /// Raises an event: DM_DEV_WAIT callers wake up.
    pub(crate) fn raise_event(&self) {
        self.events.bump();
    }

    /// Waits (interruptibly) until the event number is no longer `seen`.
    pub(crate) fn wait_event(&self, seen: u32) -> Result {
        self.events.wait_change(seen).map_err(|_| EINTR)
    }

    /// Sets the name and uuid the `dm/` sysfs attributes show (`None`:
    /// the device left the registry). Called under the registry lock.
    pub(crate) fn set_names(&self, names: Option<(Name, Name)>) {
        *self.names.lock() = names;
    }

    /// Number of openers.
    pub(crate) fn open_count(&self) -> i32 {
        self.opens.lock().count
    }

    /// Maps one bio (the `submit_bio` of the disk).
    ///
    /// The bio is mapped inside the SRCU read section that found the table
    /// (as dm's `dm_submit_bio`): the section keeps the table and its
    /// targets alive while they map (a swap or a removal waits for it in
    /// `synchronize`), so the bio takes one count on the table, which its
    /// clone carries to its completion, and no reference besides.
    fn submit(this: ArcBorrow<'_, Self>, bio: Bio) {
        let guard = this.srcu.read_lock();
        if this.dying.load(Ordering::Acquire) {
            drop(guard);
            bio.end(true);
            return;
        }
        if this.io_suspended.load(Ordering::Acquire) {
            if bio.is_nowait() {
                // Parked, it would wait for the resume (dm: the same).
                drop(guard);
                bio.end_would_block();
                return;
            }
            // Checked again under `deferred`: resume clears the flag under
            // it, and queues the work that takes the parked bios after.
            let mut deferred = this.deferred.lock();
            if this.io_suspended.load(Ordering::Acquire) {
                deferred.push(bio);
                return;
            }
        }
        let Some(table) = this.map.read(&guard) else {
            drop(guard);
            bio.end(true);
            return;
        };
        if bio.is_empty() {
            // An empty write (REQ_PREFLUSH) or REQ_OP_FLUSH is a cache
            // flush; an empty bio of another kind (a zone reset or finish)
            // is not: rdm maps no zone operations.
            if matches!(bio.op(), BioOp::Write | BioOp::Flush) {
                // Counted as dm counts it: one write of no sectors (here
                // when the flushes have been sent, not when they end).
                let mut bio = bio;
                bio.account();
                this.flush_devices(&bio, table);
                bio.end(false);
            } else {
                bio.end_unsupported();
            }
            return;
        }
        if bio.is_preflush() && !table.data_carries_flush() {
            // Counted inside the read section: suspend's synchronize()
            // then sees every bio that got this table.
            PreFlush::start(this, bio, DrainRef::new(table));
            return;
        }
        // Counted inside the read section, as above.
        let count = DrainToken::new(table);
        this.map_bio(bio, &table, count);
        drop(guard);
    }

    /// Sends an empty cache flush to every underlying device of `table`;
    /// each one holds `orig` open, and a count on `table`, until it
    /// completes.
    fn flush_devices(&self, orig: &Bio, table: ArcBorrow<'_, Drained<Table>>) {
        for dev in table.devices.iter() {
            let data = CloneData::plain(DrainToken::new(table));
            match self.bioset.flush_bio(orig.share(), dev, data) {
                Ok(flush) => flush.submit(),
                Err((share, _data)) => share.end(true),
            }
        }
    }

    /// Where `sector` lands in `table`: its entry, the offset in it, and
    /// how many sectors from there one bio may cover (to the target's end,
    /// or its own boundary). `None` (logged) past the end of the table.
    fn locate(table: &Table, sector: u64) -> Option<(&TableEntry, u64, u64)> {
        let Some(entry) = table.find(sector) else {
            pr_err!("I/O at sector {sector} past the end of the table\n");
            return None;
        };
        let offset = sector - entry.start;
        let mut room = entry.start + entry.len - sector;
        if let Some(max) = entry.target.max_io_len(offset) {
            room = room.min(max);
        }
        Some((entry, offset, room))
    }

    /// Splits the first `sectors` off `bio` (the front, and the rest,
    /// which completes after it); `None` if that failed, and then `bio`
    /// ended: "would block" for a `REQ_NOWAIT` bio (whose split does not
    /// wait for the pool), else an I/O error.
    fn split(&self, bio: Bio, sectors: u64) -> Option<(Bio, Bio)> {
        let sector = bio.sector();
        match self.bioset.split_front(bio, sectors as u32) {
            Ok(parts) => Some(parts),
            Err(bio) if bio.is_nowait() => {
                bio.end_would_block();
                None
            }
            Err(bio) => {
                // Not expected: the split leaves sectors on both sides,
                // the pool waits for a bio, and rdm is not zoned (no zone
                // appends).
                pr_err!("cannot split a bio at sector {sector}: I/O error\n");
                bio.end(true);
                None
            }
        }
    }

    /// Maps a bio through `table`, on which `count` counts it. The caller
    /// keeps `table` alive while this runs (an SRCU read section, or a
    /// count of its own): once the clone is submitted, `count` may be
    /// dropped by its completion at any time.
    fn map_bio(&self, bio: Bio, table: &Table, count: DrainToken) {
        let Some((entry, offset, room)) = Self::locate(table, bio.sector()) else {
            bio.end(true);
            return;
        };
        let target = &*entry.target;
        if refuses(target, bio.op()) {
            bio.end_unsupported();
            return;
        }
        if bio.is_nowait() && !target.supports_nowait() {
            // The table offers no BLK_FEAT_NOWAIT, but the block layer let
            // this bio in under the one before a swap: the submitter retries
            // where it may wait.
            bio.end_would_block();
            return;
        }
        let mut bio = if bio.sectors() > room {
            // Keep the part inside this target (or its boundary); the rest
            // comes back through submit_bio (and may land in the next
            // table, after a swap).
            let Some((front, rest)) = self.split(bio, room) else {
                return;
            };
            rest.submit();
            front
        } else {
            bio
        };
        // What is mapped in one go is one I/O of the disk's statistics, as
        // dm's `dm_io`: in flight from when the target clones it until it
        // ends (whoever ends it); a rest split off above is counted when it
        // comes back. Bios ended before this point (parked, refused, would
        // block) are not counted, as in dm.
        bio.account();
        // `io` carries the count the bio keeps until its clone ends.
        target.map(bio, offset, Io::new(count, &self.bioset));
    }

    /// Maps all of `bio` through `table`, on which it is counted: a part
    /// past a target's end is split off and mapped here too, not sent back
    /// through `submit_bio`, so no part of it can be parked by a suspend
    /// (which may be waiting for this very count) or land in another
    /// table. Process context (a work item).
    fn map_whole(&self, mut bio: Bio, table: DrainRef<Table>) {
        loop {
            let Some((_, _, room)) = Self::locate(&table, bio.sector()) else {
                bio.end(true);
                return;
            };
            if bio.sectors() <= room {
                // `table` (its own count) keeps the table alive while the
                // last part maps, whose clone holds the other.
                self.map_bio(bio, &table, table.clone().into_token());
                return;
            }
            let Some((front, rest)) = self.split(bio, room) else {
                return;
            };
            self.map_bio(front, &table, table.clone().into_token());
            bio = rest;
        }
    }

    /// Stops I/O: new bios are parked, and this returns once every bio
    /// mapped through the active table has completed. With `lockfs` (dm's
    /// default), a filesystem on the device is frozen first, while its
    /// flush can still reach the disk. Takes `suspend_lock` (not `tables`:
    /// queries answer while this waits).
    pub(crate) fn suspend(&self, lockfs: bool) -> Result {
        let mut ss = self.suspend_lock.lock();
        if ss.disk.is_none() {
            return Err(ENXIO);
        }
        self.suspend_locked(&mut ss, lockfs)
    }

    /// [`MappedDevice::suspend`], `suspend_lock` held.
    fn suspend_locked(&self, ss: &mut SuspendState, lockfs: bool) -> Result {
        let active = {
            let t = self.tables.lock();
            if t.suspended {
                return Ok(());
            }
            // Only changed under `suspend_lock`, which we hold: this clone
            // is never the last reference.
            t.active.clone()
        };
        // The targets stop their own writes first (a merge finishes its
        // batch, which lets the writes it held go), as dm's presuspend;
        // with no `tables` lock held (that may wait for I/O).
        Self::presuspend_targets(active.as_ref());
        if lockfs && !ss.frozen {
            if let Some(disk) = &ss.disk {
                if let Err(e) = disk.freeze() {
                    Self::resume_targets(active.as_ref());
                    return Err(e);
                }
                ss.frozen = true;
            }
        }
        self.io_suspended.store(true, Ordering::Release);
        // After this, every bio either saw the flag or is counted.
        self.srcu.synchronize();
        if let Some(t) = &active {
            t.count().wait_zero();
        }
        self.tables.lock().suspended = true;
        Ok(())
    }

    /// Calls every target's `presuspend` (dm's); no `tables` lock held.
    fn presuspend_targets(table: Option<&TableArc>) {
        if let Some(t) = table {
            for e in t.entries.iter() {
                e.target.presuspend();
            }
        }
    }

    /// Calls every target's `resume` (dm's); no `tables` lock held.
    fn resume_targets(table: Option<&TableArc>) {
        if let Some(t) = table {
            for e in t.entries.iter() {
                e.target.resume();
            }
        }
    }

    /// Thaws what [`MappedDevice::suspend`] froze.
    fn thaw(&self, ss: &mut SuspendState) {
        if ss.frozen {
            if let Some(disk) = &ss.disk {
                disk.thaw();
            }
            ss.frozen = false;
        }
    }

    /// Swaps in the inactive table, if any, and restarts I/O; the parked
    /// bios are resubmitted by a work item, not by this call. If the swap
    /// fails, the device is as it was: the old table (running again if it
    /// was running), the new one still inactive.
    ///
    /// As dm's `do_resume()`: a device that was suspended (or was, for the
    /// swap) gets a `change` uevent carrying `DM_COOKIE=cookie` (none if
    /// 0) and `RESIZE=1` if a table swap changed a nonzero size to another
    /// nonzero size. Returns whether that uevent was sent.
    pub(crate) fn resume(self: &Arc<Self>, lockfs: bool, cookie: u32) -> Result<bool> {
        let mut ss = self.suspend_lock.lock();
        if ss.disk.is_none() {
            return Err(ENXIO);
        }
        let (new, was_suspended) = {
            let mut t = self.tables.lock();
            t.resuming = t.inactive.clone();
            (t.resuming.clone(), t.suspended)
        };
        let mut resized = false;
        let swapped_in = new.is_some();
        if let Some(new) = new {
            let swapped = self
                .suspend_locked(&mut ss, lockfs)
                .and_then(|()| self.swap_table(&ss, &new));
            match swapped {
                Ok(old_size) => resized = old_size != 0 && new.size != 0 && old_size != new.size,
                Err(e) => {
                    let resuming = self.tables.lock().resuming.take();
                    drop(resuming);
                    if !was_suspended {
                        // The old table's targets go on again (they were
                        // presuspended for the swap).
                        self.restart(&mut ss, true);
                    }
                    return Err(e);
                }
            }
            self.raise_event();
        }
        // A table just swapped in had its targets resumed by the swap.
        if !self.restart(&mut ss, !swapped_in) {
            return Ok(false);
        }
        Ok(ss
            .disk
            .as_ref()
            .is_some_and(|d| Self::send_uevent(d, Uevent::Change, cookie, resized)))
    }

    /// Sends a uevent for the disk as dm's `dm_kobject_uevent()`:
    /// `DM_COOKIE=cookie` unless it is 0, `RESIZE=1` if `resize`. Returns
    /// whether it was sent.
    fn send_uevent(
        disk: &GenDisk<MappedDevice>,
        action: Uevent,
        cookie: u32,
        resize: bool,
    ) -> bool {
        let mut text = [0u8; 24];
        let mut w = crate::rdm_core::payload::ByteWriter::new(&mut text[..23]);
        let _ = write!(w, "DM_COOKIE={cookie}");
        let Some(n) = w.finish() else {
            return false;
        };
        let Ok(cookie_var) = CStr::from_bytes_with_nul(&text[..=n]) else {
            return false;
        };
        let mut env: [&CStr; 2] = [cookie_var, c_str!("RESIZE=1")];
        let vars: &[&CStr] = match (cookie != 0, resize) {
            (true, true) => &env,
            (true, false) => &env[..1],
            (false, true) => {
                env[0] = env[1];
                &env[..1]
            }
            (false, false) => &[],
        };
        disk.uevent(action, vars).is_ok()
    }

    /// Sends a uevent for the device (a rename's `change`), as
    /// [`MappedDevice::send_uevent`]; false if it was not sent (the device
    /// is gone).
    pub(crate) fn uevent(&self, action: Uevent, cookie: u32) -> bool {
        let ss = self.suspend_lock.lock();
        ss.disk
            .as_ref()
            .is_some_and(|d| Self::send_uevent(d, action, cookie, false))
    }

    /// Lets I/O through again after a suspend. Returns false (and does
    /// nothing) if the device was not suspended. With `resume_targets`,
    /// the active table's targets go on first (a table just swapped in was
    /// resumed by the swap).
    fn restart(self: &Arc<Self>, ss: &mut SuspendState, resume_targets: bool) -> bool {
        let active = {
            let t = self.tables.lock();
            if !t.suspended {
                return false;
            }
            // Only changed under `suspend_lock`, which we hold.
            t.active.clone()
        };
        if resume_targets {
            Self::resume_targets(active.as_ref());
        }
        drop(active);
        {
            // Under `deferred`: a submitter that saw the flag set checks it
            // again under this lock before it parks its bio, so every bio
            // parked is on the list before the work below is queued. No
            // grace period is waited for: a submitter may be sleeping in
            // its target's map (a snapshot origin's copy throttle) inside
            // its read section, and resume must not wait for it.
            let _deferred = self.deferred.lock();
            self.io_suspended.store(false, Ordering::Release);
        }
        self.tables.lock().suspended = false;
        // Not here, under `suspend_lock`: a resubmitted bio may sleep in
        // its target's map (a snapshot origin's copy throttle), and that
        // must not hold up this command or the device's next suspend.
        // If the work is already queued, that run takes these bios too.
        let _ = self
            .wq
            .enqueue::<Arc<MappedDevice>, RESTART_WORK>(self.clone());
        self.thaw(ss);
        true
    }

    /// Resubmits parked bios until none is left or the device is suspended
    /// again (then the rest waits for the next resume) or dying.
    fn resubmit_parked(&self) {
        while !self.io_suspended.load(Ordering::Acquire) && !self.dying.load(Ordering::Acquire) {
            let Some(bio) = self.deferred.lock().pop() else {
                break;
            };
            bio.submit();
            crate::kx::workqueue::cond_resched();
        }
    }

    /// Makes `new` the active table of a suspended device; returns the
    /// size before (0 if there was no active table).
    fn swap_table(&self, ss: &SuspendState, new: &TableArc) -> Result<u64> {
        let Some(disk) = &ss.disk else {
            return Err(ENXIO);
        };
        // Every underlying device gets its holder link (sysfs
        // holders/slaves) or the swap is refused: unlinking a link that was
        // never made is a kernel WARN, and dm refuses such a table too.
        for (i, dev) in new.devices.iter().enumerate() {
            if let Err(e) = disk.link_holder(dev) {
                pr_err!("cannot link the new table's devices as holders in sysfs ({e:?}): resume refused\n");
                Self::unlink_holders(disk, new.devices.iter().take(i));
                return Err(e);
            }
        }
        if let Err(e) = disk.set_limits(new.limits()) {
            Self::unlink_holders(disk, new.devices.iter());
            return Err(e);
        }
        // The active table changes only under `suspend_lock`, held here.
        let old_active = self.tables.lock().active.clone();
        let old_size = old_active.as_ref().map_or(0, |t| t.size);
        if let Some(old) = &old_active {
            for dev in old.devices.iter() {
                disk.unlink_holder(dev);
            }
        }
        disk.set_capacity(new.size);
        disk.set_read_only(self.read_only || new.read_only);
        let old = self.map.replace(Some(new.clone()), &self.srcu);
        // The targets go live (a snapshot starts preserving its chunks).
        for e in new.entries.iter() {
            e.target.resume();
        }
        let (prev, loaded) = {
            let mut t = self.tables.lock();
            let prev = t.active.replace(new.clone());
            // A load since the resume began replaced the inactive table:
            // that one stays for the next resume.
            let loaded = match &t.inactive {
                Some(i) if Arc::ptr_eq(i, new) => t.inactive.take(),
                _ => None,
            };
            t.resuming = None;
            (prev, loaded)
        };
        // Dropped with no `tables` lock held. The old table is drained (the
        // device is suspended) and no reader can reach it any more; it goes
        // when the last clone drops its count.
        drop(loaded);
        drop(prev);
        drop(old_active);
        drop(old);
        Ok(old_size)
    }

    fn unlink_holders<'a>(
        disk: &GenDisk<MappedDevice>,
        devs: impl Iterator<Item = &'a Arc<BdevFile>>,
    ) {
        for dev in devs {
            disk.unlink_holder(dev);
        }
    }

    /// Marks the device as going away if no one has it open.
    pub(crate) fn begin_remove(&self) -> Result {
        let mut o = self.opens.lock();
        if o.count > 0 {
            return Err(EBUSY);
        }
        o.removing = true;
        Ok(())
    }

    /// Asks for removal on last close (DM_DEFERRED_REMOVE on an open
    /// device), or cancels that. Returns false if the device is not open
    /// (then the caller removes it at once).
    pub(crate) fn set_deferred_remove(&self, on: bool) -> bool {
        let mut o = self.opens.lock();
        if on && o.count == 0 {
            return false;
        }
        o.deferred_remove = on;
        true
    }

    /// Whether removal on last close is pending.
    pub(crate) fn deferred_remove(&self) -> bool {
        self.opens.lock().deferred_remove
    }

    /// Tears the device down (after [`MappedDevice::begin_remove`]): fails
    /// parked and new I/O, removes the disk, drops the tables once their
    /// I/O has drained. With `uevent` (a DM_DEV_REMOVE and its cookie), a
    /// `remove` uevent with the cookie goes out just before the disk is
    /// deleted, as dm's `dev_remove()`; returns whether it was sent.
    pub(crate) fn destroy(&self, uevent: Option<u32>) -> bool {
        let mut ss = self.suspend_lock.lock();
        let active = {
            let mut t = self.tables.lock();
            // Commands that looked the device up before get ENXIO from now on.
            t.removed = true;
            // Only changed under `suspend_lock`, which we hold.
            (!t.suspended).then(|| t.active.clone()).flatten()
        };
        // As dm's __dm_destroy: the targets stop their own writes first
        // (a merge stops after its batch); no `tables` lock held.
        Self::presuspend_targets(active.as_ref());
        drop(active);
        self.thaw(&mut ss);
        self.dying.store(true, Ordering::Release);
        self.srcu.synchronize();
        drop(self.deferred.lock().take());
        let old = self.map.replace(None, &self.srcu);
        if let Some(t) = &old {
            t.count().wait_zero();
        }
        let (active, inactive, resuming) = {
            let mut t = self.tables.lock();
            (t.active.take(), t.inactive.take(), t.resuming.take())
        };
        if let (Some(disk), Some(t)) = (&ss.disk, &active) {
            for dev in t.devices.iter() {
                disk.unlink_holder(dev);
            }
        }
        let sent = match (&ss.disk, uevent) {
            (Some(disk), Some(cookie)) => Self::send_uevent(disk, Uevent::Remove, cookie, false),
            _ => false,
        };
        // del_gendisk() and put_disk(); the disk's reference on this device
        // goes when its last opener is gone.
        ss.disk = None;
        self.raise_event();
        drop(ss);
        // The tables go with no lock held (a snapshot target's teardown
        // may write its COW device's header).
        drop(resuming);
        drop(inactive);
        drop(active);
        drop(old);
        sent
    }
}

/// A flush with data on a table of several devices or targets, done as dm
/// does: an empty flush goes to every underlying device first, and only
/// when all of them have completed does the data go, without
/// `REQ_PREFLUSH` (a write completed before the flagged bio must be on
/// stable media before its data is written, on whichever device it went
/// to). The data bio stays counted on the table it was admitted on until it
/// ends, and is mapped through that table, never parked: a suspend waiting
/// for that count must not wait for the bio itself.
#[pin_data]
struct PreFlush {
    md: Arc<MappedDevice>,
    /// A flush failed: the data bio fails.
    failed: AtomicBool,
    /// The data bio and its count on its table, taken by the work.
    #[pin]
    data: SpinLock<Option<(Bio, DrainRef<Table>)>>,
    /// Maps the data bio, in process context (a flush's completion may run
    /// in a hard interrupt).
    #[pin]
    work: Work<PreFlush>,
}

impl_has_work! {
    impl HasWork<Self> for PreFlush { self.work }
}

impl PreFlush {
    /// Sends the empty flushes for `bio` (counted on `table`); when the
    /// last one completes, the data is queued for mapping.
    fn start(md: ArcBorrow<'_, MappedDevice>, mut bio: Bio, table: DrainRef<Table>) {
        let owner: Arc<MappedDevice> = md.into();
        let init = pin_init!(PreFlush {
            md: owner,
            failed: AtomicBool::new(false),
            data <- new_spinlock!(None, "rdm:preflush_data"),
            work <- new_work!("rdm:preflush_work"),
        });
        // The submit path: reclaim must not start I/O (GFP_NOIO). Small
        // allocations that may wait for reclaim fail only under fault
        // injection; then the bio fails.
        let _noio = NoIo::enter();
        let ctx = match Arc::pin_init(init, GFP_KERNEL) {
            Ok(ctx) => ctx,
            Err(_) => {
                pr_err!("out of memory for a flush with data: I/O error\n");
                bio.end(true);
                drop(table);
                return;
            }
        };
        let devices = table.clone();
        *ctx.data.lock() = Some((bio, table));
        if let Err(ctx) = md.bioset.flush_all(&devices.devices, ctx) {
            pr_err!("out of memory for a flush with data: I/O error\n");
            if let Some((b, t)) = ctx.data.lock().take() {
                bio = b;
                bio.end(true);
                drop(t);
            }
        }
        drop(devices);
    }
}

impl FlushesDone for PreFlush {
    fn flushed(this: Arc<Self>, failed: bool) {
        if failed {
            this.failed.store(true, Ordering::Release);
        }
        // Queued once, when the last flush ended: it cannot be queued
        // already. No other reference is taken to reach the queue: it
        // could be the last one once the work has run.
        let _ = enqueue_arc(this, |ctx| &ctx.md.wq);
    }
}

impl WorkItem for PreFlush {
    type Pointer = Arc<PreFlush>;

    fn run(this: Arc<PreFlush>) {
        let Some((mut bio, table)) = this.data.lock().take() else {
            return;
        };
        if this.failed.load(Ordering::Acquire) {
            bio.end(true);
            // Last: after this the table may go.
            drop(table);
            return;
        }
        bio.clear_preflush();
        this.md.map_whole(bio, table);
    }
}

/// [`MappedDevice::restart_work`]'s id.
const RESTART_WORK: u64 = 1;
/// [`MappedDevice::remove_work`]'s id.
const REMOVE_WORK: u64 = 2;
/// [`MappedDevice::release_work`]'s id.
const RELEASE_WORK: u64 = 3;

impl_has_work! {
    impl HasWork<Self, RESTART_WORK> for MappedDevice { self.restart_work }
    impl HasWork<Self, REMOVE_WORK> for MappedDevice { self.remove_work }
    impl HasWork<Self, RELEASE_WORK> for MappedDevice { self.release_work }
}

impl WorkItem<RESTART_WORK> for MappedDevice {
    type Pointer = Arc<MappedDevice>;

    fn run(this: Arc<MappedDevice>) {
        this.resubmit_parked();
    }
}

impl BioDriver for MappedDevice {
    type Ptr = Arc<MappedDevice>;

    fn submit_bio(this: ArcBorrow<'_, MappedDevice>, bio: Bio) {
        MappedDevice::submit(this, bio);
    }

    fn open(this: ArcBorrow<'_, MappedDevice>) -> Result {
        let mut o = this.opens.lock();
        if o.removing {
            return Err(ENXIO);
        }
        o.count += 1;
        Ok(())
    }

    fn release(this: ArcBorrow<'_, MappedDevice>) {
        let remove_now = {
            let mut o = this.opens.lock();
            o.count -= 1;
            o.count == 0 && o.deferred_remove
        };
        if !remove_now {
            return;
        }
        // Removal deletes the disk, which cannot happen inside its own
        // release (the block layer holds the disk's open mutex): it runs
        // on rdm's workqueue, which module exit drains. The work item is
        // the device's own: queuing it needs no memory. If it is queued
        // already (not run yet since an earlier last close), that run
        // removes the device.
        let md: Arc<MappedDevice> = this.into();
        let _ = this.wq.enqueue::<Arc<MappedDevice>, REMOVE_WORK>(md);
    }

    // dm's attributes (dm-sysfs.c), which lsblk, udev rules and LVM2 read.
    const ATTR_DIR: &'static CStr = c_str!("dm");
    const ATTRS: &'static [DiskAttr] = &[
        DiskAttr {
            name: c_str!("name"),
            writable: false,
        },
        DiskAttr {
            name: c_str!("uuid"),
            writable: false,
        },
        DiskAttr {
            name: c_str!("suspended"),
            writable: false,
        },
        DiskAttr {
            name: c_str!("use_blk_mq"),
            writable: false,
        },
        // Request-based devices only; dm shows 0 and ignores writes on
        // the others too.
        DiskAttr {
            name: c_str!("rq_based_seq_io_merge_deadline"),
            writable: true,
        },
    ];

    fn show_attr(
        this: ArcBorrow<'_, MappedDevice>,
        index: usize,
        out: &mut AttrText<'_>,
    ) -> Result {
        let line = match index {
            0 | 1 => {
                // EIO once the device has left the registry (being
                // removed), as dm once it has no hash cell.
                let (name, uuid) = (*this.names.lock()).ok_or(EIO)?;
                let v = if index == 0 { name } else { uuid };
                return out.push(v.as_bytes()).and_then(|()| out.push(b"\n"));
            }
            2 => writeln!(out, "{}", u8::from(this.tables.lock().suspended)),
            // "Purely for userspace compatibility", as dm.
            3 => writeln!(out, "1"),
            4 => writeln!(out, "0"),
            _ => return Err(EINVAL),
        };
        line.map_err(|_| EINVAL)
    }

    fn store_attr(_this: ArcBorrow<'_, MappedDevice>, index: usize, _input: &[u8]) -> Result {
        match index {
            4 => Ok(()),
            _ => Err(EIO),
        }
    }

    fn free(this: Arc<MappedDevice>) {
        // The disk's reference may be the device's last, whose drop gives
        // back the device's module reference: that must not happen here,
        // in the block layer's free_disk, which would then go on running
        // (our code, returning) in a module that rmmod may be unloading.
        // The drop runs on rdm's workqueue, which module exit destroys,
        // waiting for it. Queued once (free_disk runs once per disk), so it
        // is never queued already; no other reference is taken to reach the
        // queue.
        let _ = enqueue_arc::<MappedDevice, RELEASE_WORK>(this, |md| &md.wq);
    }
}

impl WorkItem<REMOVE_WORK> for MappedDevice {
    type Pointer = Arc<MappedDevice>;

    fn run(md: Arc<MappedDevice>) {
        md.last_close.deferred_remove(&md);
    }
}

impl WorkItem<RELEASE_WORK> for MappedDevice {
    type Pointer = Arc<MappedDevice>;

    fn run(md: Arc<MappedDevice>) {
        // Often the last reference: the device, and its module reference,
        // go here.
        drop(md);
    }
}

/// Called by a mapped device on its last close when a deferred remove is
/// pending (DM_DEFERRED_REMOVE on an open device): its creator (the control
/// device's registry) removes it.
pub(crate) trait LastClose: Send + Sync {
    /// Removes `md` if it is still registered and not open again. Process
    /// context (rdm's workqueue), no lock held.
    fn deferred_remove(&self, md: &Arc<MappedDevice>);
}

/// What every mapped device shares with the others and with its creator.
pub(crate) struct DeviceEnv {
    /// The block major of every device.
    pub(crate) major: u32,
    /// rdm's workqueue.
    pub(crate) wq: Arc<OwnedQueue>,
    /// dm's global event, the parent of each device's event number.
    pub(crate) global_event: Arc<PollEvent>,
    /// The creator's deferred-remove callback.
    pub(crate) last_close: Arc<dyn LastClose>,
}
