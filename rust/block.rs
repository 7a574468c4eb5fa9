//! Bio-based block devices: the pieces a device-mapper-like driver needs and
//! 6.12's `kernel::block` (which wraps only blk-mq) lacks.
//!
//! - [`BdevFile`]: an underlying block device opened exclusively for a holder;
//! - [`Bio`]: an owned bio, which must be ended or submitted exactly once;
//! - [`BioSet`]: a bio pool whose clones carry typed per-clone data and call
//!   back a [`CloneEnd`] on completion, and which sends groups of empty
//!   cache flushes that report to a [`FlushesDone`] when the last one ends;
//! - [`GenDisk`]: a bio-based gendisk whose `submit_bio`, `open` and
//!   `release` go to a [`BioDriver`];
//! - [`BlockMajor`]: a registered block major.
//!
//! The C side is in `helpers.c` (macros and inline functions of
//! `<linux/bio.h>` and `<linux/blkdev.h>`).
//!
//! C headers: [`include/linux/bio.h`](srctree/include/linux/bio.h),
//! [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use super::wait::DrainCounter;
use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    mem::{size_of, MaybeUninit},
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};
use kernel::{
    bindings,
    error::{from_err_ptr, to_result, Result},
    ffi::{c_char, c_int, c_uint, c_void},
    page::{Page, PAGE_SIZE},
    prelude::*,
    str::CStr,
    sync::{Arc, UniqueArc},
    types::{ForeignOwnable, Opaque},
};

#[allow(
    improper_ctypes,
    reason = "kernel structs only cross by pointer; their layout is bindgen's"
)]
extern "C" {
    fn rdm_alloc_disk(lim: *mut bindings::queue_limits) -> *mut bindings::gendisk;
    fn rdm_add_disk(
        disk: *mut bindings::gendisk,
        groups: *const *const bindings::attribute_group,
        fops: *const bindings::block_device_operations,
        private_data: *mut c_void,
        major: c_int,
        minor: c_int,
        name: *const c_char,
    ) -> c_int;
    fn rdm_disk_private(disk: *mut bindings::gendisk) -> *mut c_void;
    fn rdm_dev_to_disk(dev: *mut bindings::device) -> *mut bindings::gendisk;
    fn rdm_sysfs_attr_init(attr: *mut bindings::attribute);
    fn rdm_disk_uevent(
        disk: *mut bindings::gendisk,
        action: c_uint,
        envp: *const *mut c_char,
    ) -> c_int;
    fn rdm_disk_devt(disk: *mut bindings::gendisk) -> u64;
    fn rdm_bdev_open_path(
        path: *const c_char,
        write: bool,
        holder: *mut c_void,
    ) -> *mut bindings::file;
    fn rdm_bdev_open_dev(dev: u64, write: bool, holder: *mut c_void) -> *mut bindings::file;
    fn rdm_bdev_devt(f: *mut bindings::file) -> u64;
    fn rdm_bdev_nr_sectors(f: *mut bindings::file) -> u64;
    fn rdm_bdev_logical_block_size(f: *mut bindings::file) -> c_uint;
    fn rdm_limits_io_hints(
        lim: *mut bindings::queue_limits,
        chunk_sectors: c_uint,
        io_min: c_uint,
        io_opt: c_uint,
    );
    fn rdm_bdev_stack_limits(
        lim: *mut bindings::queue_limits,
        f: *mut bindings::file,
        offset: u64,
        pfx: *const c_char,
    );
    fn rdm_bdev_is_zoned(f: *mut bindings::file) -> bool;
    fn rdm_bdev_max_discard_sectors(f: *mut bindings::file) -> c_uint;
    fn rdm_bdev_max_write_zeroes_sectors(f: *mut bindings::file) -> c_uint;
    fn rdm_bdev_max_secure_erase_sectors(f: *mut bindings::file) -> c_uint;
    fn rdm_bdev_link_holder(f: *mut bindings::file, disk: *mut bindings::gendisk) -> c_int;
    fn rdm_bdev_unlink_holder(f: *mut bindings::file, disk: *mut bindings::gendisk);
    fn rdm_bio_op(bio: *const bindings::bio) -> c_uint;
    fn rdm_bio_is_preflush(bio: *const bindings::bio) -> bool;
    fn rdm_bio_clear_preflush(bio: *mut bindings::bio);
    fn rdm_bio_set_dev(bio: *mut bindings::bio, f: *mut bindings::file);
    fn rdm_bio_end(bio: *mut bindings::bio, error: bool);
    fn rdm_bio_set_failed(bio: *mut bindings::bio);
    fn rdm_bio_end_unsupported(bio: *mut bindings::bio);
    fn rdm_bio_end_nospace(bio: *mut bindings::bio);
    fn rdm_bio_zero_fill(bio: *mut bindings::bio);
    fn rdm_bio_inc_remaining(bio: *mut bindings::bio);
    fn rdm_bio_split_front(
        bio: *mut bindings::bio,
        sectors: c_uint,
        bs: *mut bindings::bio_set,
    ) -> *mut bindings::bio;
    fn rdm_bio_clone(
        bio: *mut bindings::bio,
        f: *mut bindings::file,
        bs: *mut bindings::bio_set,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
    fn rdm_bio_copy_error(to: *mut bindings::bio, from: *const bindings::bio);
    fn rdm_bio_alloc_pages(
        f: *mut bindings::file,
        nr_vecs: c_uint,
        write: bool,
        fua: bool,
        preflush: bool,
        sector: u64,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
    fn rdm_bio_failed(bio: *const bindings::bio) -> bool;
    fn rdm_bio_alloc_flush(
        f: *mut bindings::file,
        bs: *mut bindings::bio_set,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
}

/// The holder every underlying device of rdm is opened with. One holder for
/// all mapped devices (as dm's `_dm_claim_ptr`) lets several of them map the
/// same device, while other exclusive openers (a mount) are kept out.
static HOLDER: u8 = 0;

fn holder() -> *mut c_void {
    core::ptr::addr_of!(HOLDER).cast_mut().cast()
}

/// An underlying block device, opened exclusively for rdm's holder.
///
/// # Invariants
///
/// `file` is a block device file from `bdev_file_open_by_*`, owned by this
/// value and released (`fput`) only by `Drop`.
pub struct BdevFile {
    file: NonNull<bindings::file>,
}

// SAFETY: the file is reference counted by the kernel and every query made
// through it (`file_bdev()` and its read-only fields) is safe from any
// thread; `fput` may be called from any process context.
unsafe impl Send for BdevFile {}
// SAFETY: `&self` only allows those read-only queries.
unsafe impl Sync for BdevFile {}

impl BdevFile {
    /// Opens the block device at `path`.
    pub fn open_path(path: &CStr, write: bool) -> Result<Self> {
        // SAFETY: `path` is a valid NUL-terminated string for the call; the
        // holder is a static address.
        let f = unsafe { rdm_bdev_open_path(path.as_char_ptr(), write, holder()) };
        Self::from_open(f)
    }

    /// Opens the block device numbered `dev` (`huge_encode_dev()` form).
    pub fn open_dev(dev: u64, write: bool) -> Result<Self> {
        // SAFETY: plain values; the holder is a static address.
        let f = unsafe { rdm_bdev_open_dev(dev, write, holder()) };
        Self::from_open(f)
    }

    fn from_open(f: *mut bindings::file) -> Result<Self> {
        let f = from_err_ptr(f)?;
        // INVARIANT: from_err_ptr() passed it: an open block device file.
        Ok(BdevFile {
            file: NonNull::new(f).ok_or(ENODEV)?,
        })
    }

    /// The device number, `huge_encode_dev()` form.
    pub fn devt(&self) -> u64 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_devt(self.file.as_ptr()) }
    }

    /// Size in 512-byte sectors.
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_nr_sectors(self.file.as_ptr()) }
    }

    /// Logical block size in bytes.
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_logical_block_size(self.file.as_ptr()) }
    }

    /// Whether the device is zoned (host-managed or host-aware).
    pub fn is_zoned(&self) -> bool {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_is_zoned(self.file.as_ptr()) }
    }

    /// The largest discard the device takes, in sectors (0: no discard).
    pub fn max_discard_sectors(&self) -> u32 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_max_discard_sectors(self.file.as_ptr()) }
    }

    /// The largest write-zeroes the device takes, in sectors (0: none).
    pub fn max_write_zeroes_sectors(&self) -> u32 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_max_write_zeroes_sectors(self.file.as_ptr()) }
    }

    /// The largest secure erase the device takes, in sectors (0: none).
    pub fn max_secure_erase_sectors(&self) -> u32 {
        // SAFETY: by the invariant the file is open.
        unsafe { rdm_bdev_max_secure_erase_sectors(self.file.as_ptr()) }
    }
}

impl BdevFile {
    /// Flushes the device's volatile write cache and waits for it: every
    /// write that completed before the call is then on stable media.
    /// Process context (it sleeps); the caller must not hold anything the
    /// device's I/O needs.
    pub fn flush_sync(&self) -> Result {
        // SAFETY: by the invariant the file is open, so file_bdev() gives
        // its block device, live while the file is; blkdev_issue_flush()
        // only sends an empty PREFLUSH bio to it and waits (process
        // context, per this function's contract).
        to_result(unsafe { bindings::blkdev_issue_flush(bindings::file_bdev(self.file.as_ptr())) })
    }
}

impl Drop for BdevFile {
    fn drop(&mut self) {
        // SAFETY: by the invariant we own this reference to the file.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// Queue limits being built for a mapped device from its underlying ones.
pub struct Limits {
    lim: bindings::queue_limits,
}

impl Limits {
    /// Limits for stacking (`blk_set_stacking_limits`): permissive until
    /// devices are stacked onto them. Discard and secure erase start off
    /// (a device or a target turns them on), write zeroes on (the devices'
    /// limits lower it); the caller clears what the table does not offer.
    /// Zone append is off: the limits are never zoned.
    pub fn stacking() -> Self {
        // SAFETY: all-zero is a valid `queue_limits` (plain integers).
        let mut lim: bindings::queue_limits = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: `lim` is a valid, exclusively borrowed struct.
        unsafe { bindings::blk_set_stacking_limits(&mut lim) };
        // A non-zoned queue with a zone-append limit is a WARN in
        // `blk_validate_limits`.
        lim.max_zone_append_sectors = 0;
        Limits { lim }
    }

    /// Limits of a device with no table: no discard, write zeroes or
    /// secure erase.
    pub fn empty() -> Self {
        let mut lim = Self::stacking();
        lim.clear_discard();
        lim.clear_write_zeroes();
        lim.clear_secure_erase();
        lim
    }

    /// Stacks the limits of `dev`, used from sector `offset` on. The
    /// zoned feature is never taken over (nor zone append): the block
    /// layer must send no zone operation.
    pub fn stack(&mut self, dev: &BdevFile, offset: u64, name: &CStr) {
        // SAFETY: `lim` is exclusively borrowed, the file is open (invariant
        // of `BdevFile`) and `name` is NUL-terminated.
        unsafe {
            rdm_bdev_stack_limits(&mut self.lim, dev.file.as_ptr(), offset, name.as_char_ptr())
        };
    }

    /// Stacks a target's I/O hints onto the limits as the block layer
    /// stacks a device's (`blk_stack_limits`: the largest minimum I/O,
    /// the least common multiple of the optimal ones, the greatest
    /// common divisor of the boundaries; 0 leaves a value as it is).
    pub fn add_io_hints(&mut self, hints: IoHints) {
        // SAFETY: `lim` is a valid, exclusively borrowed struct.
        unsafe {
            rdm_limits_io_hints(
                &mut self.lim,
                hints.chunk_sectors,
                hints.io_min,
                hints.io_opt,
            )
        };
    }

    /// Discards of any size are taken whatever the devices offer (a
    /// target that does them itself: dm's `io_hints` of `zero`).
    pub fn allow_discard(&mut self) {
        if self.lim.max_hw_discard_sectors == 0 {
            self.lim.max_hw_discard_sectors = u32::MAX;
        }
        self.lim.discard_granularity = self.lim.discard_granularity.max(512);
    }

    /// No discard: the block layer refuses them (EOPNOTSUPP).
    pub fn clear_discard(&mut self) {
        self.lim.max_hw_discard_sectors = 0;
        self.lim.discard_granularity = 0;
        self.lim.discard_alignment = 0;
    }

    /// No write zeroes: the block layer refuses them (or, for
    /// `blkdev_issue_zeroout`, writes zero pages instead).
    pub fn clear_write_zeroes(&mut self) {
        self.lim.max_write_zeroes_sectors = 0;
    }

    /// No secure erase: the block layer refuses it.
    pub fn clear_secure_erase(&mut self) {
        self.lim.max_secure_erase_sectors = 0;
    }

    /// The logical block size these limits ask for.
    pub fn logical_block_size(&self) -> u32 {
        self.lim.logical_block_size
    }
}

/// What a target asks of the queue limits besides its devices' (dm's
/// `io_hints`): a boundary I/O should not cross and the minimum and
/// optimal I/O sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoHints {
    /// Sectors at whose multiples I/O is best split (`chunk_sectors`).
    pub chunk_sectors: u32,
    /// The minimum I/O size in bytes (`io_min`).
    pub io_min: u32,
    /// The optimal I/O size in bytes (`io_opt`).
    pub io_opt: u32,
}

/// Data carried by every clone of a [`BioSet`], given back when it ends.
pub trait CloneEnd: Sized + Send + 'static {
    /// The clone ended (its status was already copied into `orig` if it
    /// failed); `orig` must now be ended (or resubmitted).
    fn end(self, orig: Bio);
}

/// An owned bio: whoever holds it must end it ([`Bio::end`]) or hand it on
/// ([`Bio::submit`]); dropping one ends it with an I/O error, so a bio can
/// never be lost.
///
/// # Invariants
///
/// `bio` is a live bio no one else may end or submit while this exists.
pub struct Bio {
    bio: NonNull<bindings::bio>,
}

// SAFETY: a bio may be ended or submitted from any context; ownership is
// exclusive by the invariant.
unsafe impl Send for Bio {}

/// A bio's operation, as far as rdm distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BioOp {
    /// REQ_OP_READ.
    Read,
    /// REQ_OP_WRITE.
    Write,
    /// REQ_OP_FLUSH.
    Flush,
    /// REQ_OP_DISCARD.
    Discard,
    /// REQ_OP_WRITE_ZEROES.
    WriteZeroes,
    /// REQ_OP_SECURE_ERASE.
    SecureErase,
    /// Anything else (zone operations, driver-private ones...).
    Other,
}

impl Bio {
    /// Takes ownership of a bio handed over by the block layer.
    ///
    /// # Safety
    ///
    /// `bio` must be live and owned by the caller, who gives it up.
    pub unsafe fn from_raw(bio: *mut bindings::bio) -> Self {
        // INVARIANT: the caller gives us exclusive ownership of a live bio.
        Bio {
            // SAFETY: a live bio pointer is not null.
            bio: unsafe { NonNull::new_unchecked(bio) },
        }
    }

    fn into_raw(self) -> *mut bindings::bio {
        let p = self.bio.as_ptr();
        core::mem::forget(self);
        p
    }

    /// First sector.
    pub fn sector(&self) -> u64 {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_sector }
    }

    /// Moves the bio to start at `sector` (of the device it is sent to).
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: by the invariant the bio is live and exclusively ours.
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_sector = sector };
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        // SAFETY: by the invariant the bio is live and ours.
        u64::from(unsafe { (*self.bio.as_ptr()).bi_iter.bi_size }) >> 9
    }

    /// Whether the bio carries no data (an empty flush).
    pub fn is_empty(&self) -> bool {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_size == 0 }
    }

    /// The operation.
    pub fn op(&self) -> BioOp {
        // SAFETY: by the invariant the bio is live and ours.
        match unsafe { rdm_bio_op(self.bio.as_ptr()) } {
            bindings::req_op_REQ_OP_READ => BioOp::Read,
            bindings::req_op_REQ_OP_WRITE => BioOp::Write,
            bindings::req_op_REQ_OP_FLUSH => BioOp::Flush,
            bindings::req_op_REQ_OP_DISCARD => BioOp::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            bindings::req_op_REQ_OP_SECURE_ERASE => BioOp::SecureErase,
            _ => BioOp::Other,
        }
    }

    /// Whether the bio has failed (an error is recorded in it).
    pub fn failed(&self) -> bool {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { rdm_bio_failed(self.bio.as_ptr()) }
    }

    /// Records an I/O error in the bio (kept if it has one already), so
    /// that it ends failed whoever ends it.
    pub fn set_failed(&mut self) {
        // SAFETY: by the invariant the bio is live and exclusively ours.
        unsafe { rdm_bio_set_failed(self.bio.as_ptr()) };
    }

    /// Whether the bio asks for a cache flush before its data (`REQ_PREFLUSH`).
    pub fn is_preflush(&self) -> bool {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { rdm_bio_is_preflush(self.bio.as_ptr()) }
    }

    /// Drops the bio's `REQ_PREFLUSH` (its data goes on alone, after the
    /// cache flushes were sent separately).
    pub fn clear_preflush(&mut self) {
        // SAFETY: by the invariant the bio is live and exclusively ours.
        unsafe { rdm_bio_clear_preflush(self.bio.as_ptr()) };
    }

    /// Points the bio at `dev`.
    pub fn set_dev(&mut self, dev: &BdevFile) {
        // SAFETY: the bio is exclusively ours and the file is open.
        unsafe { rdm_bio_set_dev(self.bio.as_ptr(), dev.file.as_ptr()) };
    }

    /// Fills the bio's pages with zeroes (a read of a zero target).
    pub fn zero_fill(&mut self) {
        // SAFETY: the bio is exclusively ours; its pages are its own.
        unsafe { rdm_bio_zero_fill(self.bio.as_ptr()) };
    }

    /// Ends the bio, successfully unless `error` (or an error a clone
    /// recorded in it).
    pub fn end(self, error: bool) {
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end(self.into_raw(), error) };
    }

    /// Ends the bio with "operation not supported" (user space sees
    /// EOPNOTSUPP).
    pub fn end_unsupported(self) {
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end_unsupported(self.into_raw()) };
    }

    /// Ends the bio with "no space" (user space sees ENOSPC): there is no
    /// room to keep what the write would change.
    pub fn end_no_space(self) {
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end_nospace(self.into_raw()) };
    }

    /// Sends the bio to the device it points at.
    pub fn submit(self) {
        // SAFETY: we own the bio and give it up to the block layer, once.
        unsafe { bindings::submit_bio_noacct(self.into_raw()) };
    }

    /// Lets the bio be ended one more time before it completes
    /// (`bio_inc_remaining`): for fanning one bio out to several clones,
    /// each of which ends it. Returns a second owner handle.
    pub fn share(&self) -> Bio {
        // SAFETY: the bio is live; after this it needs one more `bio_endio`
        // before it completes, which the returned handle owns.
        unsafe { rdm_bio_inc_remaining(self.bio.as_ptr()) };
        Bio { bio: self.bio }
    }
}

impl Drop for Bio {
    fn drop(&mut self) {
        // SAFETY: an owned bio that was neither ended nor submitted; end it
        // (with an error) rather than leave its submitter waiting forever.
        unsafe { rdm_bio_end(self.bio.as_ptr(), true) };
    }
}

/// A list of owned bios, linked through `bi_next` (no allocation).
pub struct BioList {
    head: *mut bindings::bio,
    tail: *mut bindings::bio,
}

// SAFETY: the list owns its bios (see `Bio`), which may move between threads.
unsafe impl Send for BioList {}

impl BioList {
    /// An empty list.
    pub const fn new() -> Self {
        BioList {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
        }
    }

    /// Appends `bio`.
    pub fn push(&mut self, bio: Bio) {
        let b = bio.into_raw();
        // SAFETY: we own `b` (from `Bio`) and the tail bio (owned by the
        // list); `bi_next` is free for the owner's use.
        unsafe {
            (*b).bi_next = core::ptr::null_mut();
            if self.tail.is_null() {
                self.head = b;
            } else {
                (*self.tail).bi_next = b;
            }
        }
        self.tail = b;
    }

    /// Removes and returns the first bio.
    pub fn pop(&mut self) -> Option<Bio> {
        let b = self.head;
        if b.is_null() {
            return None;
        }
        // SAFETY: the list owns `b`; unlinking it hands ownership back.
        unsafe {
            self.head = (*b).bi_next;
            (*b).bi_next = core::ptr::null_mut();
        }
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        // SAFETY: `b` is live and now owned by no one else.
        Some(unsafe { Bio::from_raw(b) })
    }

    /// Moves every bio into a new list, leaving this one empty.
    pub fn take(&mut self) -> BioList {
        core::mem::take(self)
    }
}

impl Drop for BioList {
    fn drop(&mut self) {
        // A list dropped with bios in it ends them (with an error) one by one.
        while self.pop().is_some() {}
    }
}

/// A bio pool for splits and clones; each clone carries a `T` in the pool's
/// front pad and hands it back through [`CloneEnd::end`].
///
/// # Invariants
///
/// `bs` was set up by `bioset_init` with a front pad of `front_pad::<T>()`
/// bytes and is torn down only by `PinnedDrop`.
#[pin_data(PinnedDrop)]
pub struct BioSet<T: CloneEnd> {
    #[pin]
    bs: Opaque<bindings::bio_set>,
    _t: PhantomData<T>,
}

// SAFETY: a bio_set is designed for concurrent allocation from any context
// (mempools with their own locking); `T` values only move with their clones.
unsafe impl<T: CloneEnd> Send for BioSet<T> {}
// SAFETY: as above.
unsafe impl<T: CloneEnd> Sync for BioSet<T> {}

const fn front_pad<T>() -> usize {
    // The bio after the pad must stay 8-aligned.
    (size_of::<T>() + 7) & !7
}

impl<T: CloneEnd> BioSet<T> {
    /// A pool keeping `pool_size` bios in reserve.
    pub fn new(pool_size: u32) -> impl PinInit<Self, Error> {
        const {
            assert!(core::mem::align_of::<T>() <= 8);
        }
        let init_bs = move |slot: *mut Opaque<bindings::bio_set>| -> Result {
            let slot = Opaque::raw_get(slot);
            // SAFETY: `slot` is valid for writes and pinned (the closure
            // contract of pin_init_from_closure); bioset_init() initialises
            // it in place and expects zeroed memory.
            unsafe {
                core::ptr::write_bytes(slot, 0, 1);
                to_result(bindings::bioset_init(
                    slot,
                    pool_size,
                    front_pad::<T>() as u32,
                    0,
                ))
            }
        };
        try_pin_init!(Self {
            // SAFETY: `init_bs` fully initialises the slot or fails, leaving
            // nothing to clean up.
            bs <- unsafe { kernel::init::pin_init_from_closure(init_bs) },
            _t: PhantomData,
        })
    }

    fn raw(&self) -> *mut bindings::bio_set {
        self.bs.get()
    }

    /// Splits the first `sectors` off `bio`: returns them as a bio of their
    /// own, and hands back `bio`, now holding the rest, which completes only
    /// after the front part does. `sectors` must leave something on both
    /// sides; if it does not, or the split cannot be made (`bio_split`
    /// returns NULL: a zone append, or no bio from the pool), `bio` ends
    /// with an I/O error and so does this call.
    pub fn split_front(&self, bio: Bio, sectors: u32) -> Result<(Bio, Bio)> {
        // SAFETY: the bio is ours and live; the pool is initialised (type
        // invariant). The split shares nothing we keep; the helper checks
        // `sectors` against the bio before bio_split() (which BUG()s on a
        // bad count) and returns an ERR_PTR, never NULL, on failure.
        let front = unsafe { rdm_bio_split_front(bio.bio.as_ptr(), sectors, self.raw()) };
        let front = from_err_ptr(front)?;
        // SAFETY: bio_split() returned a new bio that we own.
        Ok((unsafe { Bio::from_raw(front) }, bio))
    }

    /// Clones `orig` for `dev` (or `orig`'s own device when `None`) with
    /// `data` attached; when the clone ends, its error is copied into
    /// `orig` and `data.end(orig)` runs (in the completion's context, which
    /// may be an interrupt). On allocation failure, `orig` and `data` come
    /// back.
    pub fn clone_bio(&self, orig: Bio, dev: Option<&BdevFile>, data: T) -> Result<Bio, (Bio, T)> {
        let file = dev.map_or(core::ptr::null_mut(), |d| d.file.as_ptr());
        // SAFETY: `orig` is live and ours, the pool is initialised, `file`
        // is null or open. The clone's private pointer is `orig`, whose
        // ownership the clone takes over until `clone_end_io` gives it back.
        let clone = unsafe {
            rdm_bio_clone(
                orig.bio.as_ptr(),
                file,
                self.raw(),
                Some(clone_end_io::<T>),
                orig.bio.as_ptr().cast(),
            )
        };
        self.attach(clone, orig, data)
    }

    /// Makes an empty cache-flush bio for `dev` that ends like a clone of
    /// `orig` (its error goes to `orig`, then `data.end(orig)` runs).
    pub fn flush_bio(&self, orig: Bio, dev: &BdevFile, data: T) -> Result<Bio, (Bio, T)> {
        // SAFETY: the pool is initialised, the file is open; the new bio's
        // private pointer takes over `orig` as in `clone_bio`.
        let flush = unsafe {
            rdm_bio_alloc_flush(
                dev.file.as_ptr(),
                self.raw(),
                Some(clone_end_io::<T>),
                orig.bio.as_ptr().cast(),
            )
        };
        self.attach(flush, orig, data)
    }

    /// Sends an empty cache flush to each of `devs`, all at once; when the
    /// last of them has ended, `C::flushed(ctx, failed)` runs, once, in
    /// that flush's completion context (`failed` if any flush failed, or
    /// could not be made). No flush is sent when `devs` is empty: then it
    /// runs at once, here. Fails only if the group's bookkeeping cannot
    /// be allocated (then nothing was sent and `ctx` comes back); call in
    /// a `NoIo` scope on the I/O path.
    pub fn flush_all<C: FlushesDone>(
        &self,
        devs: &[Arc<BdevFile>],
        ctx: Arc<C>,
    ) -> Result<(), Arc<C>> {
        let group = match KBox::new(
            FlushGroup {
                // One for each flush, one for this function while it sends.
                left: AtomicUsize::new(devs.len() + 1),
                failed: AtomicBool::new(false),
                ctx: UnsafeCell::new(None),
            },
            GFP_KERNEL,
        ) {
            Ok(group) => group,
            Err(_) => return Err(ctx),
        };
        // SAFETY: the box is ours alone until it is shared below.
        unsafe { *group.ctx.get() = Some(ctx) };
        let group = KBox::into_raw(group);
        for dev in devs {
            // SAFETY: the pool is initialised and the file open; the bio's
            // private pointer is the group, one of whose counts it owns
            // until `flush_group_end` drops it.
            let flush = unsafe {
                rdm_bio_alloc_flush(
                    dev.file.as_ptr(),
                    self.raw(),
                    Some(flush_group_end::<C>),
                    group.cast(),
                )
            };
            match NonNull::new(flush) {
                // INVARIANT: a new bio, ours until submitted.
                Some(bio) => Bio { bio }.submit(),
                // SAFETY: no bio took this flush's count: drop it, failed.
                None => unsafe { FlushGroup::put(group, true) },
            }
        }
        // SAFETY: drops this function's count.
        unsafe { FlushGroup::put(group, false) };
        Ok(())
    }

    /// Finishes a clone or flush bio made for `orig`: stores `data` in its
    /// front pad and hands `orig` over to it (or returns both on failure).
    fn attach(&self, bio: *mut bindings::bio, orig: Bio, data: T) -> Result<Bio, (Bio, T)> {
        let Some(bio) = NonNull::new(bio) else {
            return Err((orig, data));
        };
        // SAFETY: the front pad of a bio from this pool is `front_pad::<T>()`
        // bytes right before it, 8-aligned, unused by anyone else.
        unsafe {
            bio.as_ptr()
                .cast::<u8>()
                .sub(front_pad::<T>())
                .cast::<T>()
                .write(data)
        };
        // The bio's `bi_private` now owns `orig` (see `clone_end_io`).
        core::mem::forget(orig);
        Ok(Bio { bio })
    }
}

/// # Safety
///
/// Called once by the block layer when a clone made by
/// [`BioSet::clone_bio`] completes.
unsafe extern "C" fn clone_end_io<T: CloneEnd>(clone: *mut bindings::bio) {
    // SAFETY: `clone_bio` stored the original bio, which the clone owned, in
    // `bi_private`, and a `T` in the front pad; both are taken back once.
    let (orig, data) = unsafe {
        let orig = (*clone).bi_private.cast::<bindings::bio>();
        let data = clone.cast::<u8>().sub(front_pad::<T>()).cast::<T>().read();
        rdm_bio_copy_error(orig, clone);
        bindings::bio_put(clone);
        (Bio::from_raw(orig), data)
    };
    data.end(orig);
}

/// What a group of flushes sent by [`BioSet::flush_all`] tells when the
/// last one has ended.
pub trait FlushesDone: Send + Sync + 'static {
    /// Every flush of the group ended, `failed` if one failed. Runs once,
    /// in the last flush's completion context, which may be a hard
    /// interrupt: no sleeping, and `this` (the group's reference) must be
    /// handed on (to a work item), not dropped, if dropping `Self` may sleep.
    fn flushed(this: Arc<Self>, failed: bool);
}

/// The shared state of a [`BioSet::flush_all`] group.
struct FlushGroup<C: FlushesDone> {
    /// Flushes not ended yet, plus one held by the sender.
    left: AtomicUsize,
    failed: AtomicBool,
    /// Set before the group is shared; taken by whoever drops `left` to 0.
    ctx: UnsafeCell<Option<Arc<C>>>,
}

impl<C: FlushesDone> FlushGroup<C> {
    /// Drops one count; the last one frees the group and tells `ctx`.
    /// Until then nothing but the atomics is touched, so a count's owner
    /// lets go of nothing that could be the last reference to anything.
    ///
    /// # Safety
    ///
    /// `this` came from `KBox::into_raw` in [`BioSet::flush_all`] and the
    /// caller owns one of its counts.
    unsafe fn put(this: *mut Self, failed: bool) {
        // SAFETY: a count keeps the group alive.
        let group = unsafe { &*this };
        if failed {
            group.failed.store(true, Ordering::Release);
        }
        if group.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the last count: no one else can reach the group now.
        let group = KBox::into_inner(unsafe { KBox::from_raw(this) });
        let failed = group.failed.load(Ordering::Acquire);
        if let Some(ctx) = group.ctx.into_inner() {
            C::flushed(ctx, failed);
        }
    }
}

/// # Safety
///
/// The end_io of a flush made by [`BioSet::flush_all`].
unsafe extern "C" fn flush_group_end<C: FlushesDone>(bio: *mut bindings::bio) {
    // SAFETY: the bio is ours, completing; its private pointer is the
    // group, one of whose counts it owns.
    unsafe {
        let group = (*bio).bi_private.cast::<FlushGroup<C>>();
        let failed = rdm_bio_failed(bio);
        bindings::bio_put(bio);
        FlushGroup::put(group, failed);
    }
}

#[pinned_drop]
impl<T: CloneEnd> PinnedDrop for BioSet<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised (invariant) and no bio of the pool is in use:
        // the owner drops the pool only after its I/O has drained.
        unsafe { bindings::bioset_exit(self.bs.get()) };
    }
}

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

/// A buffer of `len` bytes in whole pages (the last one possibly used in
/// part) that chunks and metadata areas are read into and written from.
pub struct PageBuf {
    pages: KVec<Page>,
    len: usize,
}

impl PageBuf {
    /// Allocates `bytes` (a multiple of 512) with `GFP_KERNEL`, for I/O to
    /// fill: the contents are whatever the pages held (nothing reads them
    /// but the device, until a read fills them).
    pub fn new(bytes: usize) -> Result<Self> {
        Self::alloc(bytes, GFP_KERNEL)
    }

    /// Allocates `bytes` (a multiple of 512), zeroed.
    pub fn new_zeroed(bytes: usize) -> Result<Self> {
        Self::alloc(bytes, GFP_KERNEL | __GFP_ZERO)
    }

    fn alloc(bytes: usize, flags: kernel::alloc::Flags) -> Result<Self> {
        if bytes == 0 || bytes % 512 != 0 {
            return Err(EINVAL);
        }
        let n = bytes.div_ceil(PAGE_SIZE);
        let mut pages = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            pages.push(Page::alloc_page(flags)?, GFP_KERNEL)?;
        }
        Ok(PageBuf { pages, len: bytes })
    }

    /// Size in bytes (what its I/O reads or writes).
    pub fn bytes(&self) -> usize {
        self.len
    }

    /// The (page, offset in page, length) pieces of `[offset, offset + len)`.
    fn pieces(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<impl Iterator<Item = (&Page, usize, usize)>> {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        let mut at = offset;
        Ok(core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let in_page = at % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(end - at);
            let page = &self.pages[at / PAGE_SIZE];
            at += n;
            Some((page, in_page, n))
        }))
    }

    /// Copies `data` into the buffer at `offset`. `&mut self`: no I/O is in
    /// flight on the buffer (I/O holds it through an `Arc`).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result {
        let mut src = data.as_ptr();
        for (page, in_page, n) in self.pieces(offset, data.len())? {
            // SAFETY: `src` points into `data` with `n` bytes left in this
            // piece (the pieces cover `data.len()` bytes in order); the
            // page is ours alone (`&mut self`), so nothing races the copy.
            unsafe {
                page.write_raw(src, in_page, n)?;
                src = src.add(n);
            }
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer.
    pub fn read_at(&mut self, offset: usize, out: &mut [u8]) -> Result {
        let mut dst = out.as_mut_ptr();
        for (page, in_page, n) in self.pieces(offset, out.len())? {
            // SAFETY: as in `write_at`, for the destination `out`.
            unsafe {
                page.read_raw(dst, in_page, n)?;
                dst = dst.add(n);
            }
        }
        Ok(())
    }

    /// Lends the buffer to asynchronous I/O ([`submit_page_io`] takes an
    /// `Arc`); [`PageBuf::take_back`] returns it once the I/O is over. On
    /// failure (out of memory) the buffer comes back unchanged.
    pub fn lend(self) -> Result<Arc<PageBuf>, PageBuf> {
        match UniqueArc::new_uninit(GFP_KERNEL) {
            Ok(arc) => Ok(arc.write(self).into()),
            Err(_) => Err(self),
        }
    }

    /// The buffer lent by [`PageBuf::lend`], ours alone again: every I/O
    /// that used it has run its `done`. [`submit_page_io`] drops its
    /// reference before it calls `done`, so a caller that learns of the
    /// end of the I/O from `done` finds the buffer unshared. `None` (and
    /// the reference dropped) if someone still holds it.
    pub fn take_back(arc: Arc<PageBuf>) -> Option<PageBuf> {
        let unique = arc.into_unique_or_drop()?;
        let mut unique = Pin::into_inner(unique);
        Some(PageBuf {
            pages: core::mem::take(&mut unique.pages),
            len: unique.len,
        })
    }

    /// Zeroes the whole buffer.
    pub fn zero(&mut self) -> Result {
        for (page, in_page, n) in self.pieces(0, self.len)? {
            // SAFETY: the page is ours alone (`&mut self`).
            unsafe { page.fill_zero_raw(in_page, n)? };
        }
        Ok(())
    }
}

/// What [`submit_page_io`] does with the buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PageIo {
    /// Read into it.
    Read,
    /// Write it out.
    Write,
    /// Write it out with FUA (on stable media when it completes).
    WriteFua,
    /// Flush the device's cache first (every write completed before this
    /// one is then on stable media), then write with FUA.
    WriteFlushFua,
}

/// Runs `f` with the block layer's plug on (`blk_start_plug`): bios it
/// submits are held back and dispatched together when it returns, so a
/// batch costs one device notification instead of one per bio.
pub fn with_plug<R>(f: impl FnOnce() -> R) -> R {
    let mut plug = MaybeUninit::<bindings::blk_plug>::uninit();
    // SAFETY: blk_start_plug() initialises the plug and links it to the
    // current task; it stays in this frame, unmoved, until
    // blk_finish_plug() unlinks it below (`f` cannot reach it).
    unsafe { bindings::blk_start_plug(plug.as_mut_ptr()) };
    let r = f();
    // SAFETY: the plug started above, on this task.
    unsafe { bindings::blk_finish_plug(plug.as_mut_ptr()) };
    r
}

/// Most pages per bio of [`submit_page_io`] (`BIO_MAX_VECS`).
const MAX_PAGES_PER_BIO: usize = 256;

/// Shared by the bios of one [`submit_page_io`] call.
struct PageIoCtx<F: FnOnce(bool) + Send + 'static> {
    /// Bios not yet completed, plus one held by the submitter.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// Taken once, by whoever drops `remaining` to zero.
    done: UnsafeCell<Option<F>>,
    _buf: Arc<PageBuf>,
}

impl<F: FnOnce(bool) + Send + 'static> PageIoCtx<F> {
    /// Drops one count; the last one runs `done` and frees the context.
    ///
    /// # Safety
    ///
    /// `this` came from `KBox::into_raw` in [`submit_page_io`] and the
    /// caller owns one of its counts.
    unsafe fn put(this: *mut Self, failed: bool) {
        // SAFETY: a count keeps the context alive.
        let ctx = unsafe { &*this };
        if failed {
            ctx.failed.store(true, Ordering::Release);
        }
        if ctx.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the last count: no one else can reach the context now.
        let ctx = unsafe { KBox::from_raw(this) };
        let failed = ctx.failed.load(Ordering::Acquire);
        // SAFETY: as above, we are its only user.
        if let Some(done) = unsafe { (*ctx.done.get()).take() } {
            // The buffer's reference goes before `done` runs:
            // `PageBuf::take_back` relies on it.
            drop(ctx);
            done(failed);
        }
    }
}

/// Reads or writes all of `buf` at `sector` of `dev`, in as many bios as it
/// takes; `done(failed)` runs once when all of them completed, in
/// completion context (possibly an interrupt: it must not sleep). For
/// callers outside any `submit_bio` (a kthread): the bios are dispatched
/// at once. Fails only if the context cannot be allocated (then `done`
/// does not run).
pub fn submit_page_io<F: FnOnce(bool) + Send + 'static>(
    dev: &BdevFile,
    io: PageIo,
    sector: u64,
    buf: Arc<PageBuf>,
    done: F,
) -> Result {
    let bytes = buf.len;
    submit_page_io_part(dev, io, sector, buf, bytes, done)
}

/// [`submit_page_io`] of the first `bytes` of `buf` only (a multiple of
/// 512, at most the buffer's size; EINVAL otherwise, and `done` does not
/// run).
pub fn submit_page_io_part<F: FnOnce(bool) + Send + 'static>(
    dev: &BdevFile,
    io: PageIo,
    sector: u64,
    buf: Arc<PageBuf>,
    bytes: usize,
    done: F,
) -> Result {
    if bytes == 0 || bytes % 512 != 0 || bytes > buf.len {
        return Err(EINVAL);
    }
    let pages = &buf.pages[..bytes.div_ceil(PAGE_SIZE)];
    let chunks = pages.len().div_ceil(MAX_PAGES_PER_BIO);
    let ctx = KBox::new(
        PageIoCtx {
            remaining: AtomicUsize::new(chunks + 1),
            failed: AtomicBool::new(false),
            done: UnsafeCell::new(Some(done)),
            _buf: buf.clone(),
        },
        GFP_KERNEL,
    )?;
    let ctx = KBox::into_raw(ctx);
    let mut sector = sector;
    let mut left = bytes;
    for pages in pages.chunks(MAX_PAGES_PER_BIO) {
        // SAFETY: the file is open; the bio's private pointer is the
        // context, whose count for this bio `page_io_end` drops.
        let bio = unsafe {
            rdm_bio_alloc_pages(
                dev.file.as_ptr(),
                pages.len() as c_uint,
                io != PageIo::Read,
                matches!(io, PageIo::WriteFua | PageIo::WriteFlushFua),
                io == PageIo::WriteFlushFua,
                sector,
                Some(page_io_end::<F>),
                ctx.cast(),
            )
        };
        for page in pages {
            let n = left.min(PAGE_SIZE);
            left -= n;
            // SAFETY: the bio has room for `pages.len()` vectors, so the
            // add cannot fail; the page stays allocated while the context
            // (holding `buf`) lives, which is until every bio completed.
            let _ = unsafe { bindings::bio_add_page(bio, page.as_ptr(), n as c_uint, 0) };
            sector += (n >> 9) as u64;
        }
        // SAFETY: a complete bio of ours, handed to the block layer.
        unsafe { bindings::submit_bio(bio) };
    }
    // SAFETY: drops the submitter's count.
    unsafe { PageIoCtx::put(ctx, false) };
    Ok(())
}

/// The state a synchronous batch of [`page_io_sync`] waits on.
struct SyncIo {
    left: DrainCounter,
    failed: AtomicBool,
}

/// Reads or writes each `(sector, buffer)` of `reqs` on `dev`, all in
/// flight at once (one plug), and sleeps until every one completed; EIO if
/// any failed. Process context, no spinlock held; the caller must not hold
/// anything the devices' I/O needs.
pub fn page_io_sync(dev: &BdevFile, io: PageIo, reqs: &mut [(u64, &mut PageBuf)]) -> Result {
    let state = Arc::new(
        SyncIo {
            left: DrainCounter::new(),
            failed: AtomicBool::new(false),
        },
        GFP_KERNEL,
    )?;
    // The pages go into shared buffers for the I/O and come back after.
    let mut shared = KVec::with_capacity(reqs.len(), GFP_KERNEL)?;
    let mut res = Ok(());
    with_plug(|| {
        for (sector, buf) in reqs.iter_mut() {
            let own = PageBuf {
                pages: core::mem::take(&mut buf.pages),
                len: buf.len,
            };
            let arc = match own.lend() {
                Ok(arc) => arc,
                Err(own) => {
                    buf.pages = own.pages;
                    res = Err(ENOMEM);
                    break;
                }
            };
            let st = state.clone();
            state.left.inc();
            let done = move |failed: bool| {
                if failed {
                    st.failed.store(true, Ordering::Release);
                }
                st.left.dec();
            };
            if let Err(e) = submit_page_io(dev, io, *sector, arc.clone(), done) {
                state.left.dec();
                res = Err(e);
            }
            // Room was reserved: this push does not allocate.
            let _ = shared.push(arc, GFP_KERNEL);
            if res.is_err() {
                break;
            }
        }
    });
    state.left.wait_zero();
    // Every I/O completed and dropped its reference: each buffer is ours
    // alone again and goes back to its owner.
    for ((_, buf), arc) in reqs.iter_mut().zip(shared) {
        match PageBuf::take_back(arc) {
            Some(own) => buf.pages = own.pages,
            None => {
                // Cannot happen (see above); an empty buffer refuses use.
                buf.len = 0;
                res = Err(EIO);
            }
        }
    }
    if state.failed.load(Ordering::Acquire) {
        res = Err(EIO);
    }
    res
}

/// # Safety
///
/// The end_io of a bio made by [`submit_page_io`].
unsafe extern "C" fn page_io_end<F: FnOnce(bool) + Send + 'static>(bio: *mut bindings::bio) {
    // SAFETY: the bio is ours, completing; its private pointer is the
    // context, one of whose counts it owns.
    unsafe {
        let ctx = (*bio).bi_private.cast::<PageIoCtx<F>>();
        let failed = rdm_bio_failed(bio);
        bindings::bio_put(bio);
        PageIoCtx::put(ctx, failed);
    }
}

impl Default for BioList {
    fn default() -> Self {
        Self::new()
    }
}
