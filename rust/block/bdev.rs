//! Underlying block devices and queue limits.

use super::ffi::*;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::error::to_result;
use kernel::error::Result;
use kernel::ffi::c_void;
use kernel::prelude::*;
use kernel::str::CStr;

/// The holder every underlying device of rdm is opened with. One holder for
/// all mapped devices (as dm's `_dm_claim_ptr`) lets several of them map the
/// same device, while other exclusive openers (a mount) are kept out.
static HOLDER: u8 = 0;

fn holder() -> *mut c_void {
    core::ptr::addr_of!(HOLDER).cast_mut().cast()
}

/// An underlying block device, opened exclusively for rdm's holder (or,
/// in rdm-dm, for the kernel's device-mapper, which claims it).
///
/// # Invariants
///
/// `file` is a block device file from `bdev_file_open_by_*` or handed over
/// by [`BdevFile::from_owned_file`], one reference of which is owned by
/// this value and released (`fput`) only by `Drop`.
pub struct BdevFile {
    pub(super) file: NonNull<bindings::file>,
    /// Release the device synchronously when the last reference goes
    /// (a file of another opener's: [`BdevFile::from_owned_file`]).
    put_sync: bool,
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

    /// Takes over a reference to an open block device file (one that
    /// another opener, such as the kernel's device-mapper, claimed). If
    /// this reference is the file's last, dropping it releases the device
    /// before the drop returns (where the dropping context may sleep), as
    /// that opener would have: a device stacked on it can then be removed
    /// at once.
    ///
    /// # Safety
    ///
    /// `f` is a block device file of which the caller owns one reference,
    /// which passes to the result; it may be an error pointer.
    pub unsafe fn from_owned_file(f: *mut bindings::file) -> Result<Self> {
        let mut file = Self::from_open(f)?;
        file.put_sync = true;
        Ok(file)
    }

    fn from_open(f: *mut bindings::file) -> Result<Self> {
        let f = from_err_ptr(f)?;
        // INVARIANT: from_err_ptr() passed it: an open block device file.
        Ok(BdevFile {
            file: NonNull::new(f).ok_or(ENODEV)?,
            put_sync: false,
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
        if self.put_sync {
            // SAFETY: by the invariant we own this reference to the file;
            // the helper releases it synchronously only in a context that
            // may sleep, else as fput().
            unsafe { rdm_bdev_put_sync(self.file.as_ptr()) };
        } else {
            // SAFETY: by the invariant we own this reference to the file.
            unsafe { bindings::fput(self.file.as_ptr()) };
        }
    }
}

/// Queue limits being built for a mapped device from its underlying ones.
pub struct Limits {
    pub(super) lim: bindings::queue_limits,
}

impl Limits {
    /// Limits for stacking (`blk_set_stacking_limits`): permissive until
    /// devices are stacked onto them. I/O statistics are kept
    /// (`BLK_FEAT_IO_STAT`, as dm's stacking limits: every table swap turns
    /// them on again). Discard and secure erase start off
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
        // SAFETY: as above.
        unsafe { rdm_limits_io_stat(&mut lim) };
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

    /// Offers `REQ_NOWAIT` bios (`BLK_FEAT_NOWAIT`): call before stacking
    /// the devices, which take it away again unless each offers it too.
    pub fn offer_nowait(&mut self) {
        // SAFETY: `lim` is a valid, exclusively borrowed struct.
        unsafe { rdm_limits_offer_nowait(&mut self.lim) };
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
