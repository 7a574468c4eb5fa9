//! Bio-based gendisks, their driver and sysfs attributes, and the block
//! major.

use super::ffi::*;
use super::{BdevFile, Bio, Limits};
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::error::to_result;
use kernel::error::Result;
use kernel::ffi::c_char;
use kernel::ffi::c_int;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::types::ForeignOwnable;

/// A bio-based block driver: what a [`GenDisk`]'s operations call.
///
/// The operations table has no owner module, so the driver must keep its
/// module loaded for as long as any of its disks exists.
pub trait BioDriver: 'static {
    /// The disk's private data, kept until the disk is freed (after the
    /// last opener closed it).
    type Ptr: ForeignOwnable + Send + Sync;

    /// A bio for the disk.
    fn submit_bio(this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, bio: Bio);

    /// The disk is being opened.
    fn open(this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>) -> Result;

    /// An opener closed the disk.
    fn release(this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>);

    /// The disk is being freed (`free_disk`, after its last opener and
    /// [`GenDisk`] are gone): `this` is the private data handed to
    /// [`GenDisk::add`], given back. The caller is the block layer, which
    /// holds no reference on the driver's module for this call: if
    /// dropping `this` can drop the module's last reference, the driver
    /// must hand it to something module unload waits for (a work item on
    /// a workqueue that module exit destroys), or the rest of this call
    /// would run in a module that may be unloaded already.
    fn free(this: Self::Ptr);

    /// The name of the disk's directory of attributes in sysfs
    /// (`/sys/block/<disk>/<ATTR_DIR>/`).
    const ATTR_DIR: &'static CStr;

    /// The attributes of that directory (at most [`MAX_DISK_ATTRS`]); an
    /// attribute is named by its index in this list.
    const ATTRS: &'static [DiskAttr];

    /// Writes the value of attribute `index` (one line) to `out`. Runs in
    /// process context, for as long as the disk is added: [`GenDisk`]'s
    /// drop waits for it.
    fn show_attr(
        this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        index: usize,
        out: &mut AttrText<'_>,
    ) -> Result;

    /// Takes `input`, written to the writable attribute `index`.
    fn store_attr(
        this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        index: usize,
        input: &[u8],
    ) -> Result;
}

/// How many attributes a disk's directory may have.
pub const MAX_DISK_ATTRS: usize = 8;

/// An attribute in a disk's directory (see [`BioDriver::ATTRS`]).
pub struct DiskAttr {
    /// Its file name.
    pub name: &'static CStr,
    /// Root may write it (mode 0644); otherwise it is read-only (0444).
    pub writable: bool,
}

/// The text of an attribute being read: at most a page.
pub struct AttrText<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl AttrText<'_> {
    /// Appends raw bytes; ENOSPC (and nothing written) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> Result {
        let end = self.len.checked_add(bytes.len()).ok_or(ENOSPC)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(ENOSPC)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

impl core::fmt::Write for AttrText<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

/// One attribute as sysfs sees it, with its index in [`BioDriver::ATTRS`].
#[repr(C)]
struct AttrSlot {
    /// First: sysfs hands the show and store callbacks a pointer to it.
    dev_attr: bindings::device_attribute,
    index: usize,
}

/// A disk's attribute group, at a stable address (boxed) from before
/// `add_disk` until after `del_gendisk` has removed it.
struct DiskAttrs {
    slots: [AttrSlot; MAX_DISK_ATTRS],
    /// NULL-terminated pointers to the slots' attributes.
    ptrs: [*mut bindings::attribute; MAX_DISK_ATTRS + 1],
    group: bindings::attribute_group,
    /// NULL-terminated, as `device_add_disk` takes them.
    groups: [*const bindings::attribute_group; 2],
}

impl DiskAttrs {
    /// The group `T::ATTR_DIR` of `T::ATTRS`, ready for `device_add_disk`.
    fn new<T: BioDriver>() -> Result<KBox<Self>> {
        if T::ATTRS.len() > MAX_DISK_ATTRS {
            return Err(EINVAL);
        }
        let mut a = KBox::new(
            DiskAttrs {
                slots: core::array::from_fn(|index| AttrSlot {
                    dev_attr: bindings::device_attribute::default(),
                    index,
                }),
                ptrs: [core::ptr::null_mut(); MAX_DISK_ATTRS + 1],
                group: bindings::attribute_group::default(),
                groups: [core::ptr::null(); 2],
            },
            GFP_KERNEL,
        )?;
        for (i, attr) in T::ATTRS.iter().enumerate() {
            let slot = &mut a.slots[i];
            slot.dev_attr.attr.name = attr.name.as_char_ptr();
            slot.dev_attr.attr.mode = if attr.writable { 0o644 } else { 0o444 };
            slot.dev_attr.show = Some(attr_show::<T>);
            if attr.writable {
                slot.dev_attr.store = Some(attr_store::<T>);
            }
            let raw: *mut bindings::attribute = &mut slot.dev_attr.attr;
            // SAFETY: `raw` points to an attribute in the box, not yet
            // registered; the call only sets its lockdep key.
            unsafe { rdm_sysfs_attr_init(raw) };
            a.ptrs[i] = raw;
        }
        a.group.name = T::ATTR_DIR.as_char_ptr();
        a.group.attrs = a.ptrs.as_mut_ptr();
        let group: *const bindings::attribute_group = &a.group;
        a.groups[0] = group;
        Ok(a)
    }
}

/// # Safety
///
/// Called by sysfs for an attribute of a [`DiskAttrs`] group of a disk made
/// by [`GenDisk::add`] for `T`, with a page-sized `buf`.
unsafe extern "C" fn attr_show<T: BioDriver>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut c_char,
) -> isize {
    // SAFETY: `attr` is the first field of an `AttrSlot` (repr(C)); the
    // group is on the disk's device, so `dev` is a disk's, and the disk
    // stays added (del_gendisk drains the attribute's readers before
    // [`GenDisk`] puts the disk and free_disk can run) for this call;
    // `buf` is a page that sysfs gives us to fill.
    let (index, this, page) = unsafe {
        (
            (*attr.cast::<AttrSlot>()).index,
            borrow_private::<T>(rdm_dev_to_disk(dev)),
            core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE),
        )
    };
    let mut out = AttrText { buf: page, len: 0 };
    match T::show_attr(this, index, &mut out) {
        Ok(()) => out.len as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// As [`attr_show`], with `buf` holding `count` bytes written by the user.
unsafe extern "C" fn attr_store<T: BioDriver>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *const c_char,
    count: usize,
) -> isize {
    // SAFETY: as in `attr_show`; sysfs hands us `count` readable bytes.
    let (index, this, input) = unsafe {
        (
            (*attr.cast::<AttrSlot>()).index,
            borrow_private::<T>(rdm_dev_to_disk(dev)),
            core::slice::from_raw_parts(buf.cast::<u8>(), count),
        )
    };
    match T::store_attr(this, index, input) {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// A uevent a driver sends for its disk (besides the block layer's own).
#[derive(Clone, Copy)]
pub enum Uevent {
    /// `change`.
    Change,
    /// `remove` (sent while the disk is still there).
    Remove,
}

/// A bio-based gendisk, added to the system.
///
/// # Invariants
///
/// `disk` was allocated by `blk_alloc_disk`, added, and has as private data
/// a `T::Ptr` from `into_foreign`, handed back to [`BioDriver::free`] by
/// `free_disk`; `Drop` removes and puts it.
pub struct GenDisk<T: BioDriver> {
    disk: NonNull<bindings::gendisk>,
    /// The disk's attribute group; dropped after `del_gendisk` removed it.
    _attrs: KBox<DiskAttrs>,
    _t: PhantomData<T>,
}

// SAFETY: the gendisk's operations used through `&self` (capacity, read-only
// flag, limits, holders, uevents) take the block layer's own locks; the
// attribute group is only read (by sysfs) once built.
unsafe impl<T: BioDriver> Send for GenDisk<T> {}
// SAFETY: as above.
unsafe impl<T: BioDriver> Sync for GenDisk<T> {}

impl<T: BioDriver> GenDisk<T> {
    /// Allocates and adds a disk `name` at `major:minor`, empty (capacity 0).
    pub fn add(major: u32, minor: u32, name: &CStr, data: T::Ptr) -> Result<Self> {
        let attrs = DiskAttrs::new::<T>()?;
        let mut lim = Limits::empty();
        // SAFETY: `lim` is a valid queue_limits for the call.
        let disk = unsafe { rdm_alloc_disk(&mut lim.lim) };
        let disk = from_err_ptr(disk)?;
        let private = data.into_foreign().cast_mut();
        // SAFETY: `disk` is a fresh disk; the operations table is static;
        // `name` is NUL-terminated; the groups are boxed, and the box is
        // kept (in the `GenDisk`) until del_gendisk removed them, or
        // dropped below when add_disk failed (which removed them). On
        // failure the disk is put below and `private` taken back, as
        // nothing else saw them.
        let ret = unsafe {
            rdm_add_disk(
                disk,
                attrs.groups.as_ptr(),
                OpsTable::<T>::build(),
                private,
                major as c_int,
                minor as c_int,
                name.as_char_ptr(),
            )
        };
        if ret != 0 {
            // SAFETY: see above; put_disk() of a disk that add_disk()
            // refused does not call free_disk, so `private` is still ours.
            unsafe {
                bindings::put_disk(disk);
                drop(T::Ptr::from_foreign(private));
            }
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: allocated, added, private data from into_foreign.
        Ok(GenDisk {
            disk: NonNull::new(disk).ok_or(ENOMEM)?,
            _attrs: attrs,
            _t: PhantomData,
        })
    }

    fn raw(&self) -> *mut bindings::gendisk {
        self.disk.as_ptr()
    }

    /// Device number, `huge_encode_dev()` form.
    pub fn devt(&self) -> u64 {
        // SAFETY: the disk is live (invariant).
        unsafe { rdm_disk_devt(self.raw()) }
    }

    /// Sets the size in sectors, without a uevent (as dm: the driver
    /// announces a change itself, see [`GenDisk::uevent`]).
    pub fn set_capacity(&self, sectors: u64) {
        // SAFETY: the disk is live; the call takes its own locks.
        unsafe { bindings::set_capacity(self.raw(), sectors) };
    }

    /// Sends a uevent for the disk with the variables `env` (`NAME=value`,
    /// at most 4), as dm does (`dm_kobject_uevent`); allocations inside
    /// do no I/O. Ok if it was sent (or no one listens).
    pub fn uevent(&self, action: Uevent, env: &[&CStr]) -> Result {
        let mut envp: [*mut c_char; 5] = [core::ptr::null_mut(); 5];
        if env.len() >= envp.len() {
            return Err(EINVAL);
        }
        for (p, v) in envp.iter_mut().zip(env) {
            *p = v.as_char_ptr().cast_mut();
        }
        let action = match action {
            Uevent::Change => bindings::kobject_action_KOBJ_CHANGE,
            Uevent::Remove => bindings::kobject_action_KOBJ_REMOVE,
        };
        // SAFETY: the disk is live and added; `envp` is NULL-terminated
        // and its strings outlive the call, which only reads them.
        to_result(unsafe { rdm_disk_uevent(self.raw(), action, envp.as_ptr()) })
    }

    /// Makes the disk read-only or writable.
    pub fn set_read_only(&self, ro: bool) {
        // SAFETY: the disk is live; the call takes its own locks.
        unsafe { bindings::set_disk_ro(self.raw(), ro) };
    }

    /// Applies new queue limits (only while no I/O is in flight).
    pub fn set_limits(&self, mut lim: Limits) -> Result {
        // SAFETY: the disk and its queue are live; the call takes the
        // queue's limits lock.
        to_result(unsafe { bindings::queue_limits_set((*self.raw()).queue, &mut lim.lim) })
    }

    /// Freezes the filesystem on the disk, if any, and flushes the disk's
    /// dirty data (`bdev_freeze`); I/O must still be flowing.
    pub fn freeze(&self) -> Result {
        // SAFETY: the disk and its whole-disk bdev are live (invariant);
        // bdev_freeze() takes its own locks.
        let ret = unsafe { bindings::bdev_freeze((*self.raw()).part0) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }

    /// Undoes [`GenDisk::freeze`].
    pub fn thaw(&self) {
        // SAFETY: as in `freeze`; a thaw pairs with a successful freeze.
        unsafe { bindings::bdev_thaw((*self.raw()).part0) };
    }

    /// Links `dev` as a slave of this disk in sysfs (`holders/`, `slaves/`).
    pub fn link_holder(&self, dev: &BdevFile) -> Result {
        // SAFETY: both live; the call takes the disk's open mutex.
        to_result(unsafe { rdm_bdev_link_holder(dev.file.as_ptr(), self.raw()) })
    }

    /// Undoes [`GenDisk::link_holder`].
    pub fn unlink_holder(&self, dev: &BdevFile) {
        // SAFETY: both live; the call takes the disk's open mutex.
        unsafe { rdm_bdev_unlink_holder(dev.file.as_ptr(), self.raw()) };
    }
}

impl<T: BioDriver> Drop for GenDisk<T> {
    fn drop(&mut self) {
        // SAFETY: the disk was added (invariant); del_gendisk() stops new
        // opens and I/O submission, put_disk() drops our reference, and
        // free_disk hands the private data back to the driver
        // (`BioDriver::free`) after the last opener.
        unsafe {
            bindings::del_gendisk(self.raw());
            bindings::put_disk(self.raw());
        }
    }
}

struct OpsTable<T: BioDriver>(PhantomData<T>);

impl<T: BioDriver> OpsTable<T> {
    const OPS: bindings::block_device_operations = bindings::block_device_operations {
        submit_bio: Some(ops_submit_bio::<T>),
        open: Some(ops_open::<T>),
        release: Some(ops_release::<T>),
        free_disk: Some(ops_free_disk::<T>),
        // SAFETY: all-zero is valid for the remaining fields: options of
        // function pointers (`None`) and the owner pointer (null: no module
        // reference per open; a `BioDriver` must keep its module loaded
        // while any of its disks exists, as rdm does with one module
        // reference per mapped device).
        ..unsafe { MaybeUninit::zeroed().assume_init() }
    };

    const fn build() -> &'static bindings::block_device_operations {
        &Self::OPS
    }
}

/// # Safety
///
/// `disk` is a disk made by [`GenDisk::add`] for `T` whose `free_disk` has
/// not run; the returned borrow must not outlive the current callback.
unsafe fn borrow_private<'a, T: BioDriver>(
    disk: *mut bindings::gendisk,
) -> <T::Ptr as ForeignOwnable>::Borrowed<'a> {
    // SAFETY: per the contract, the private data is the `into_foreign`
    // pointer of `add`, released only by free_disk, which cannot run during
    // a callback of the disk.
    unsafe { T::Ptr::borrow(rdm_disk_private(disk)) }
}

/// # Safety
///
/// Called by the block layer with a bio for a disk made by [`GenDisk::add`].
unsafe extern "C" fn ops_submit_bio<T: BioDriver>(bio: *mut bindings::bio) {
    // SAFETY: the block layer hands us the bio; its disk is live while a
    // bio for it is being submitted.
    unsafe {
        let disk = (*(*bio).bi_bdev).bd_disk;
        T::submit_bio(borrow_private::<T>(disk), Bio::from_raw(bio));
    }
}

/// # Safety
///
/// Called by the block layer to open a disk made by [`GenDisk::add`].
unsafe extern "C" fn ops_open<T: BioDriver>(
    disk: *mut bindings::gendisk,
    _mode: bindings::blk_mode_t,
) -> c_int {
    // SAFETY: the disk is live during open.
    match T::open(unsafe { borrow_private::<T>(disk) }) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the block layer when an opener of the disk closes it.
unsafe extern "C" fn ops_release<T: BioDriver>(disk: *mut bindings::gendisk) {
    // SAFETY: the disk is live during release.
    T::release(unsafe { borrow_private::<T>(disk) });
}

/// # Safety
///
/// Called once by the block layer when the disk's last reference goes.
unsafe extern "C" fn ops_free_disk<T: BioDriver>(disk: *mut bindings::gendisk) {
    // SAFETY: the private data came from `into_foreign` in `add`, and this is
    // its last use.
    T::free(unsafe { T::Ptr::from_foreign(rdm_disk_private(disk)) });
}

/// A registered block major number.
///
/// # Invariants
///
/// `major` was returned by `__register_blkdev` for `name`.
pub struct BlockMajor {
    major: u32,
    name: &'static CStr,
}

impl BlockMajor {
    /// Registers a dynamic major under `name` (shown in /proc/devices).
    pub fn register(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static NUL-terminated string; no probe hook.
        let ret = unsafe { bindings::__register_blkdev(0, name.as_char_ptr(), None) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(BlockMajor {
            major: ret as u32,
            name,
        })
    }

    /// The major number.
    pub fn major(&self) -> u32 {
        self.major
    }
}

impl Drop for BlockMajor {
    fn drop(&mut self) {
        // SAFETY: registered (invariant), with this name.
        unsafe { bindings::unregister_blkdev(self.major, self.name.as_char_ptr()) };
    }
}
