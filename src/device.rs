// SPDX-License-Identifier: GPL-2.0

//! Mapped devices and the registry of them.
//!
//! A [`MappedDevice`] is a bio-based gendisk with an active table (what I/O
//! is mapped through) and an inactive one (loaded, waiting for resume).
//!
//! The I/O path takes no lock: it enters the device's SRCU read section,
//! reads the published active table, counts the bio on that table's
//! [`DrainCounter`] and leaves; the count drops when the bio completes.
//! Suspend stops new bios (they are parked on `deferred`), waits for the SRCU
//! readers and then for the table's count to drain; resume publishes the
//! inactive table (if any) and lets the parked bios go. A table is freed
//! only when the last bio that used it has completed. See
//! `Documentation/locking.rst`.

use crate::kx::block::{BdevFile, Bio, BioDriver, BioList, BioOp, BioSet, CloneEnd, GenDisk};
use crate::kx::module::ModuleRef;
use crate::kx::srcu::{Srcu, SrcuArc};
use crate::kx::wait::{DrainRef, Drained, EventCounter};
use crate::kx::workqueue::OwnedQueue;
use crate::snapshot::{EndHook, Snapshots};
use crate::table::{Table, TableArc};
use crate::target::{refuses, BStr};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow, Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};

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

/// Per-clone data: what the target wants done when the clone ends, and the
/// count on the table the bio was mapped through, which keeps the table
/// (and its targets) alive until the clone completes.
pub(crate) struct CloneData {
    hook: EndHook,
    table: DrainRef<Table>,
}

impl CloneEnd for CloneData {
    fn end(self, orig: Bio) {
        let CloneData { hook, table } = self;
        hook.run(CountedBio { bio: orig, table });
    }
}

/// A bio a target was handed, whose clone has ended, with the count it
/// holds on the table it was mapped through: a clone-end hook ends it at
/// once, or keeps it until what it waits for is done (a whole-chunk
/// snapshot write is acknowledged only once its exception is committed).
/// While it is kept, suspend and teardown of its device wait for it.
pub(crate) struct CountedBio {
    bio: Bio,
    table: DrainRef<Table>,
}

impl CountedBio {
    /// Whether the bio has failed (its clone's error was copied into it).
    pub(crate) fn failed(&self) -> bool {
        self.bio.failed()
    }

    /// Ends the bio (with an error if `error`, or if it failed already),
    /// then drops its table count. Any context.
    pub(crate) fn end(self, error: bool) {
        let CountedBio { bio, table } = self;
        bio.end(error);
        // Last: after this the table may go.
        drop(table);
    }
}

/// A bio being mapped: a target gets it with the bio and must use it once
/// (remap, clone, or end), which hands the table count on to the clone or
/// drops it.
pub(crate) struct Io<'a> {
    table: DrainRef<Table>,
    bioset: &'a BioSet<CloneData>,
}

impl Io<'_> {
    /// Sends `bio` (already moved to its sector) to `dev`.
    pub(crate) fn remap(self, bio: Bio, dev: &BdevFile) {
        if let Some(clone) = self.clone_bio(bio, Some(dev), EndHook::None) {
            clone.submit();
        }
    }

    /// Clones `bio` (for `dev`, or still for this device when `None`, to be
    /// pointed somewhere before it is submitted) with `hook` to run when it
    /// ends. The clone carries the table count. If no clone can be had,
    /// the bio fails (and the hook runs as for a failed clone).
    pub(crate) fn clone_bio(self, bio: Bio, dev: Option<&BdevFile>, hook: EndHook) -> Option<Bio> {
        let data = CloneData {
            hook,
            table: self.table,
        };
        match self.bioset.clone_bio(bio, dev, data) {
            Ok(clone) => Some(clone),
            Err((mut bio, data)) => {
                // Ends as a clone that failed: the hook sees the error.
                bio.set_failed();
                data.end(bio);
                None
            }
        }
    }

    /// Ends `bio` without sending it anywhere.
    pub(crate) fn end(self, bio: Bio, error: bool) {
        bio.end(error);
    }

    /// Ends `bio` with EOPNOTSUPP: the target does not do its operation.
    pub(crate) fn end_unsupported(self, bio: Bio) {
        bio.end_unsupported();
    }
}

/// Control-path state of a device, under [`MappedDevice::state`].
pub(crate) struct DevState {
    /// The gendisk; `None` once the device is removed.
    pub(crate) disk: Option<GenDisk<MappedDevice>>,
    /// The active table (also published to the I/O path in `map`).
    pub(crate) active: Option<TableArc>,
    /// The table loaded for the next resume.
    pub(crate) inactive: Option<TableArc>,
    /// Suspended (by DM_DEV_SUSPEND).
    pub(crate) suspended: bool,
    /// The filesystem on the device was frozen by the suspend.
    pub(crate) frozen: bool,
    /// Created read-only.
    pub(crate) read_only: bool,
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
    #[pin]
    bioset: BioSet<CloneData>,
    /// Serialises control commands on this device (may be held across I/O
    /// waits, never across user copies; never taken on the I/O path).
    #[pin]
    pub(crate) state: Mutex<DevState>,
    #[pin]
    opens: SpinLock<Opens>,
    /// The event number (table swaps, renames, snapshot invalidation);
    /// targets get a reference to raise events from any context.
    pub(crate) events: Arc<EventCounter>,
    /// For deferred removal. Declared before `_module` so that it is
    /// dropped first: the module stays pinned until the registry reference
    /// is gone.
    registry: Arc<Registry>,
    /// Keeps rdm loaded while the device exists.
    _module: ModuleRef,
}

impl MappedDevice {
    /// Creates a device with minor `minor` and its (empty) disk `name`.
    pub(crate) fn create(
        registry: &Arc<Registry>,
        major: u32,
        minor: u32,
        disk_name: &CString,
        read_only: bool,
    ) -> Result<Arc<MappedDevice>> {
        let srcu = Srcu::new()?;
        let events = Arc::new(EventCounter::new(), GFP_KERNEL)?;
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
                bioset <- BioSet::new(16),
                state <- new_mutex!(
                    DevState {
                        disk: None,
                        active: None,
                        inactive: None,
                        suspended: false,
                        frozen: false,
                        read_only,
                    },
                    "rdm:device_state"
                ),
                opens <- new_spinlock!(
                    Opens {
                        count: 0,
                        removing: false,
                        deferred_remove: false,
                    },
                    "rdm:opens"
                ),
                events,
                registry: registry.clone(),
                _module: ModuleRef::get(),
            }),
            GFP_KERNEL,
        )?;
        let disk = GenDisk::add(major, minor, disk_name, md.clone())?;
        disk.set_read_only(read_only);
        md.state.lock().disk = Some(disk);
        Ok(md)
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

    /// Number of openers.
    pub(crate) fn open_count(&self) -> i32 {
        self.opens.lock().count
    }

    /// Maps one bio (the `submit_bio` of the disk).
    fn submit(&self, bio: Bio) {
        let table = {
            let guard = self.srcu.read_lock();
            if self.dying.load(Ordering::Acquire) {
                drop(guard);
                bio.end(true);
                return;
            }
            if self.io_suspended.load(Ordering::Acquire) {
                self.deferred.lock().push(bio);
                return;
            }
            let Some(table) = self.map.read(&guard) else {
                drop(guard);
                bio.end(true);
                return;
            };
            // Counted inside the read section: suspend's synchronize()
            // then sees every bio that got this table.
            DrainRef::new(table)
        };
        if bio.is_empty() {
            // An empty write (REQ_PREFLUSH) or REQ_OP_FLUSH is a cache
            // flush; an empty bio of another kind (a zone reset or finish)
            // is not: rdm maps no zone operations.
            if matches!(bio.op(), BioOp::Write | BioOp::Flush) {
                self.flush_devices(&bio, &table);
                bio.end(false);
            } else {
                bio.end_unsupported();
            }
            return;
        }
        if bio.is_preflush() && !table.data_carries_flush() {
            self.flush_devices(&bio, &table);
        }
        self.map_bio(bio, table);
    }

    /// Sends an empty cache flush to every underlying device of `table`;
    /// each one holds `orig` open until it completes.
    fn flush_devices(&self, orig: &Bio, table: &DrainRef<Table>) {
        for dev in table.devices.iter() {
            let data = CloneData {
                hook: EndHook::None,
                table: table.clone(),
            };
            match self.bioset.flush_bio(orig.share(), dev, data) {
                Ok(flush) => flush.submit(),
                Err((share, _data)) => share.end(true),
            }
        }
    }

    /// Maps a bio through `table`, on which it is already counted.
    fn map_bio(&self, bio: Bio, table: DrainRef<Table>) {
        let sector = bio.sector();
        let Some(entry) = table.find(sector) else {
            pr_err!("I/O at sector {sector} past the end of the table\n");
            bio.end(true);
            return;
        };
        let target = entry.target.get();
        if refuses(target, bio.op()) {
            bio.end_unsupported();
            return;
        }
        let offset = sector - entry.start;
        let mut room = entry.start + entry.len - sector;
        if let Some(max) = target.max_io_len(offset) {
            room = room.min(max);
        }
        let bio = if bio.sectors() > room {
            // Keep the part inside this target (or its boundary); the rest
            // comes back through submit_bio (and may land in the next
            // table, after a swap).
            match self.bioset.split_front(bio, room as u32) {
                Ok((front, rest)) => {
                    rest.submit();
                    front
                }
                Err(_) => return,
            }
        } else {
            bio
        };
        // The target lives in the table, so `table` stays counted while it
        // maps; `io` carries the count the bio keeps.
        let io = Io {
            table: table.clone(),
            bioset: &self.bioset,
        };
        target.map(bio, offset, io);
    }

    /// Stops I/O: new bios are parked, and this returns once every bio
    /// mapped through the active table has completed. With `lockfs` (dm's
    /// default), a filesystem on the device is frozen first, while its
    /// flush can still reach the disk. Caller holds `state`.
    pub(crate) fn suspend(&self, st: &mut DevState, lockfs: bool) -> Result {
        if st.suspended {
            return Ok(());
        }
        // The targets stop their own writes first (a merge finishes its
        // batch, which lets the writes it held go), as dm's presuspend.
        Self::presuspend_targets(st);
        if lockfs && !st.frozen {
            if let Some(disk) = &st.disk {
                if let Err(e) = disk.freeze() {
                    Self::resume_targets(st);
                    return Err(e);
                }
                st.frozen = true;
            }
        }
        self.io_suspended.store(true, Ordering::Release);
        // After this, every bio either saw the flag or is counted.
        self.srcu.synchronize();
        if let Some(t) = &st.active {
            t.count().wait_zero();
        }
        st.suspended = true;
        Ok(())
    }

    fn presuspend_targets(st: &DevState) {
        if let Some(t) = &st.active {
            for e in t.entries.iter() {
                e.target.get().presuspend();
            }
        }
    }

    fn resume_targets(st: &DevState) {
        if let Some(t) = &st.active {
            for e in t.entries.iter() {
                e.target.get().resume();
            }
        }
    }

    /// Thaws what [`MappedDevice::suspend`] froze.
    fn thaw(&self, st: &mut DevState) {
        if st.frozen {
            if let Some(disk) = &st.disk {
                disk.thaw();
            }
            st.frozen = false;
        }
    }

    /// Swaps in the inactive table, if any, and restarts I/O. Caller holds
    /// `state`. If the swap fails, the device is as it was: the old table
    /// (running again if it was running), the new one still inactive.
    pub(crate) fn resume(&self, st: &mut DevState, lockfs: bool) -> Result {
        if let Some(new) = st.inactive.clone() {
            let was_suspended = st.suspended;
            self.suspend(st, lockfs)?;
            if let Err(e) = self.swap_table(st, new) {
                if !was_suspended {
                    self.restart(st);
                }
                return Err(e);
            }
            st.inactive = None;
            self.raise_event();
            // The new table's targets were resumed by the swap.
            self.restart_io(st, false);
            return Ok(());
        }
        self.restart(st);
        Ok(())
    }

    /// Lets I/O through again after a suspend (no-op if not suspended).
    /// The targets go on first (a table just swapped in was resumed by
    /// the swap).
    fn restart(&self, st: &mut DevState) {
        self.restart_io(st, true);
    }

    fn restart_io(&self, st: &mut DevState, resume_targets: bool) {
        if !st.suspended {
            return;
        }
        if resume_targets {
            Self::resume_targets(st);
        }
        self.io_suspended.store(false, Ordering::Release);
        self.srcu.synchronize();
        st.suspended = false;
        let mut parked = self.deferred.lock().take();
        while let Some(bio) = parked.pop() {
            bio.submit();
        }
        self.thaw(st);
    }

    /// Makes `new` the active table of a suspended device.
    fn swap_table(&self, st: &mut DevState, new: TableArc) -> Result {
        let Some(disk) = &st.disk else {
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
        if let Some(old) = &st.active {
            for dev in old.devices.iter() {
                disk.unlink_holder(dev);
            }
        }
        disk.set_capacity(new.size);
        disk.set_read_only(st.read_only || new.read_only);
        let old = self.map.replace(Some(new.clone()), &self.srcu);
        // The targets go live (a snapshot starts preserving its chunks).
        for e in new.entries.iter() {
            e.target.get().resume();
        }
        st.active = Some(new);
        // The old table is drained (the device is suspended) and no reader
        // can reach it any more; it goes when the last clone drops it.
        drop(old);
        Ok(())
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
    /// I/O has drained.
    pub(crate) fn destroy(&self) {
        let mut st = self.state.lock();
        // As dm's __dm_destroy: the targets stop their own writes first
        // (a merge stops after its batch).
        if !st.suspended {
            Self::presuspend_targets(&st);
        }
        self.thaw(&mut st);
        self.dying.store(true, Ordering::Release);
        self.srcu.synchronize();
        drop(self.deferred.lock().take());
        let old = self.map.replace(None, &self.srcu);
        if let Some(t) = &old {
            t.count().wait_zero();
        }
        if let (Some(disk), Some(t)) = (&st.disk, &st.active) {
            for dev in t.devices.iter() {
                disk.unlink_holder(dev);
            }
        }
        // del_gendisk() and put_disk(); the disk's reference on this device
        // goes when its last opener is gone.
        st.disk = None;
        st.active = None;
        st.inactive = None;
        self.raise_event();
        drop(st);
        drop(old);
    }
}

impl BioDriver for MappedDevice {
    type Ptr = Arc<MappedDevice>;

    fn submit_bio(this: ArcBorrow<'_, MappedDevice>, bio: Bio) {
        this.submit(bio);
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
        // on rdm's workqueue, which module exit drains.
        let md: Arc<MappedDevice> = this.into();
        let queued = this.registry.wq.try_spawn(GFP_KERNEL, move || {
            match md.registry.remove_device(&md) {
                Ok(()) => {}
                // Reopened meanwhile: the next last close tries again.
                Err(e) if e == EBUSY => {}
                Err(e) => pr_err!("deferred remove failed ({e:?})\n"),
            }
        });
        if queued.is_err() {
            pr_err!("cannot queue the deferred remove of a device (out of memory)\n");
        }
    }
}

/// A device in the registry, with its name and uuid.
pub(crate) struct Entry {
    pub(crate) name: Name,
    pub(crate) uuid: Name,
    pub(crate) md: Arc<MappedDevice>,
}

/// Every mapped device, by name and uuid.
#[pin_data]
pub(crate) struct Registry {
    /// Held only to look up, add, rename or remove entries: never across
    /// I/O, a table build, or a copy to or from user space.
    /// Slots are reused; `None` is a free slot (6.12's `KVec` cannot remove).
    #[pin]
    pub(crate) devices: Mutex<KVec<Option<Entry>>>,
    pub(crate) major: u32,
    /// Disk name prefix: "rdm-" (or "dm-" in dm_compat mode).
    pub(crate) disk_prefix: &'static str,
    /// Bumped on every device event (DM_DEV_ARM_POLL).
    pub(crate) global_event: AtomicU32,
    /// Runs deferred removals; destroyed (drained) with the registry.
    wq: OwnedQueue,
    /// Origins and the copier, for snapshot targets.
    pub(crate) snapshots: Arc<Snapshots>,
}

/// How a request names a device.
pub(crate) enum Key<'a> {
    Name(&'a [u8]),
    Uuid(&'a [u8]),
    /// The device number (`dm_ioctl.dev`), when neither is given.
    Dev(u64),
}

impl Key<'_> {
    fn matches(&self, e: &Entry) -> bool {
        match self {
            Key::Name(n) => e.name.as_bytes() == *n,
            Key::Uuid(u) => !e.uuid.is_empty() && e.uuid.as_bytes() == *u,
            Key::Dev(d) => e.md.devt == *d,
        }
    }
}

impl Registry {
    pub(crate) fn new(
        major: u32,
        disk_prefix: &'static str,
        wq: OwnedQueue,
        snapshots: Arc<Snapshots>,
    ) -> impl PinInit<Self> {
        pin_init!(Registry {
            devices <- new_mutex!(KVec::new(), "rdm:registry"),
            major,
            disk_prefix,
            global_event: AtomicU32::new(0),
            wq,
            snapshots,
        })
    }

    /// Looks a device up; the returned reference keeps it alive (not
    /// registered: `remove` may still take it out of the registry).
    pub(crate) fn get(&self, key: &Key<'_>) -> Result<(Arc<MappedDevice>, Name, Name)> {
        let devices = self.devices.lock();
        let found = devices.iter().flatten().find(|e| key.matches(e));
        match found {
            Some(e) => Ok((e.md.clone(), e.name, e.uuid)),
            None => Err(ENXIO),
        }
    }

    /// The lowest free minor, or `want` if given and free.
    fn pick_minor(devices: &KVec<Option<Entry>>, want: Option<u32>) -> Result<u32> {
        let used = |m: u32| devices.iter().flatten().any(|e| e.md.minor == m);
        match want {
            Some(m) if m < 1 << 20 && !used(m) => Ok(m),
            Some(_) => Err(EBUSY),
            None => (0..1 << 20).find(|&m| !used(m)).ok_or(ENOSPC),
        }
    }

    /// Creates and registers a device.
    pub(crate) fn create(
        self: &Arc<Self>,
        name: Name,
        uuid: Name,
        want_minor: Option<u32>,
        read_only: bool,
    ) -> Result<Arc<MappedDevice>> {
        // The registry lock is held across the disk creation so that the
        // name and minor stay ours; add_disk() does no I/O of ours.
        let mut devices = self.devices.lock();
        if devices
            .iter()
            .flatten()
            .any(|e| e.name.as_bytes() == name.as_bytes())
        {
            pr_err!("device name {} already exists\n", BStr(name.as_bytes()));
            return Err(EBUSY);
        }
        if !uuid.is_empty()
            && devices
                .iter()
                .flatten()
                .any(|e| e.uuid.as_bytes() == uuid.as_bytes())
        {
            pr_err!("device uuid {} already exists\n", BStr(uuid.as_bytes()));
            return Err(EBUSY);
        }
        let minor = Self::pick_minor(&devices, want_minor)?;
        let disk_name = CString::try_from_fmt(kernel::fmt!("{}{}", self.disk_prefix, minor))?;
        let slot = match devices.iter().position(|e| e.is_none()) {
            Some(i) => i,
            None => {
                devices.push(None, GFP_KERNEL)?;
                devices.len() - 1
            }
        };
        let md = MappedDevice::create(self, self.major, minor, &disk_name, read_only)?;
        devices[slot] = Some(Entry {
            name,
            uuid,
            md: md.clone(),
        });
        self.global_event.fetch_add(1, Ordering::AcqRel);
        Ok(md)
    }

    /// Removes a device that no one has open.
    pub(crate) fn remove(&self, key: &Key<'_>) -> Result<(Arc<MappedDevice>, Name, Name)> {
        self.remove_if(|e| key.matches(e))
    }

    /// Removes `md` itself, if it is still registered (deferred removal:
    /// its minor may have been reused by another device meanwhile).
    pub(crate) fn remove_device(&self, md: &Arc<MappedDevice>) -> Result {
        self.remove_if(|e| Arc::ptr_eq(&e.md, md)).map(drop)
    }

    fn remove_if(&self, pred: impl Fn(&Entry) -> bool) -> Result<(Arc<MappedDevice>, Name, Name)> {
        let entry = {
            let mut devices = self.devices.lock();
            let slot = devices
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(&pred))
                .ok_or(ENXIO)?;
            slot.as_ref().ok_or(ENXIO)?.md.begin_remove()?;
            slot.take().ok_or(ENXIO)?
        };
        // Outside the registry lock: teardown waits for I/O.
        entry.md.destroy();
        self.global_event.fetch_add(1, Ordering::AcqRel);
        Ok((entry.md, entry.name, entry.uuid))
    }

    /// Renames a device, or sets its uuid (only if it has none); returns
    /// the device with its name and uuid after the change.
    pub(crate) fn rename(
        &self,
        key: &Key<'_>,
        new: Name,
        set_uuid: bool,
    ) -> Result<(Arc<MappedDevice>, Name, Name)> {
        let mut devices = self.devices.lock();
        let clash = devices.iter().flatten().any(|e| {
            if set_uuid {
                !e.uuid.is_empty() && e.uuid.as_bytes() == new.as_bytes()
            } else {
                e.name.as_bytes() == new.as_bytes()
            }
        });
        if clash {
            pr_err!(
                "cannot rename: {} is already in use\n",
                BStr(new.as_bytes())
            );
            return Err(EBUSY);
        }
        let e = devices
            .iter_mut()
            .flatten()
            .find(|e| key.matches(e))
            .ok_or(ENXIO)?;
        if set_uuid {
            if !e.uuid.is_empty() {
                pr_err!(
                    "cannot change the uuid of {}: it is already set\n",
                    BStr(e.name.as_bytes())
                );
                return Err(EINVAL);
            }
            e.uuid = new;
        } else {
            e.name = new;
        }
        let (md, name, uuid) = (e.md.clone(), e.name, e.uuid);
        // The event is raised after the registry lock is dropped: the
        // device's state lock may be held by a suspend waiting for I/O.
        drop(devices);
        md.raise_event();
        self.global_event.fetch_add(1, Ordering::AcqRel);
        Ok((md, name, uuid))
    }
}
