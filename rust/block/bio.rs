//! Owned bios and lists of them, and their share in the disk's I/O
//! statistics.

use super::ffi::*;
use super::BdevFile;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::ffi::c_ulong;

/// An owned bio: whoever holds it must end it ([`Bio::end`]) or hand it on
/// ([`Bio::submit`]); dropping one ends it with an I/O error, so a bio can
/// never be lost.
///
/// A bio of a mapped device can be one I/O of the device's statistics
/// (`/proc/diskstats`, `/sys/block/<disk>/stat`, as dm keeps them): see
/// [`Bio::account`]. The handle that holds it then counts it when it ends,
/// so it is counted once, whoever ends it.
///
/// # Invariants
///
/// `bio` is a live bio no one else may end or submit while this exists.
/// `acct` is [`Acct::Started`] only if this handle (and no other) owes the
/// statistics of `bio`'s disk one `bio_end_io_acct()` for it.
pub struct Bio {
    pub(super) bio: NonNull<bindings::bio>,
    acct: Acct,
}

/// Where a bio stands in its disk's I/O statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Acct {
    /// Not counted (a clone, a split's rest, a bio not mapped yet).
    None,
    /// Mapped by the device ([`Bio::account`]): counted from when it is
    /// cloned, or, if it never is, when it ends without error (dm's rule
    /// for a target that ends a bio itself).
    Mapped,
    /// In flight in the statistics since `start` (jiffies); counted when
    /// it ends.
    Started(c_ulong),
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
        // INVARIANT: the caller gives us exclusive ownership of a live bio,
        // and no accounting debt.
        Bio {
            // SAFETY: a live bio pointer is not null.
            bio: unsafe { NonNull::new_unchecked(bio) },
            acct: Acct::None,
        }
    }

    /// A handle for a live bio the caller owns (a bio just allocated).
    pub(super) fn from_nonnull(bio: NonNull<bindings::bio>) -> Self {
        // INVARIANT: the caller owns the live bio; no accounting debt.
        Bio {
            bio,
            acct: Acct::None,
        }
    }

    /// Gives up the bio, with its statistics settled first: counted if it
    /// was in flight in them (or mapped, and did not fail).
    fn into_raw(mut self) -> *mut bindings::bio {
        self.settle_acct();
        let p = self.bio.as_ptr();
        core::mem::forget(self);
        p
    }

    /// Makes the bio one I/O of its disk's statistics, as dm counts each
    /// part of a bio it maps in one go (a `dm_io`): in flight from when it
    /// is cloned ([`BioSet::clone_bio`]) until it ends, or, if it is never
    /// cloned, counted when it ends unless it failed. Nothing is counted
    /// while the disk's `queue/iostats` is 0. The device calls this on the
    /// bio it hands to a target; the bio must keep its device, operation
    /// and size until it ends (a target redirects only its clone).
    ///
    /// [`BioSet::clone_bio`]: super::BioSet::clone_bio
    pub fn account(&mut self) {
        if self.acct == Acct::None {
            self.acct = Acct::Mapped;
        }
    }

    /// The bio is being cloned: starts its accounting if it was mapped and
    /// the disk keeps statistics, and hands over what the clone must keep
    /// for it (this handle is about to be forgotten).
    pub(super) fn start_acct(&mut self) -> Acct {
        let acct = match self.acct {
            Acct::Mapped => {
                let mut start: c_ulong = 0;
                // SAFETY: by the invariant the bio is live and ours; it is
                // a bio of the disk (`account`), whose queue outlives it.
                if unsafe { rdm_bio_start_acct(self.bio.as_ptr(), &mut start) } {
                    Acct::Started(start)
                } else {
                    Acct::None
                }
            }
            other => other,
        };
        self.acct = Acct::None;
        acct
    }

    /// Gives the handle what a clone kept for the bio (from
    /// [`Bio::start_acct`]).
    ///
    /// # Safety
    ///
    /// `acct` came from `start_acct` on this bio, and no other handle has
    /// it.
    pub(super) unsafe fn restore_acct(&mut self, acct: Acct) {
        // INVARIANT: the caller hands over the one debt there is.
        self.acct = acct;
    }

    /// Counts the bio in its disk's statistics now, if it is owed: it is
    /// ending (or leaving this handle for good).
    fn settle_acct(&mut self) {
        let p = self.bio.as_ptr();
        match core::mem::replace(&mut self.acct, Acct::None) {
            Acct::None => {}
            Acct::Mapped => {
                // SAFETY: by the invariant the bio is live and ours; of
                // the disk, as `start_acct` says.
                unsafe {
                    if !rdm_bio_failed(p) {
                        rdm_bio_acct_done(p);
                    }
                }
            }
            // SAFETY: the bio is live and ours; `start` is what
            // bio_start_io_acct() returned for it, on its disk, whose
            // device it has kept (`account`), and this is the one
            // `bio_end_io_acct()` it is owed (invariant).
            Acct::Started(start) => unsafe {
                bindings::bio_end_io_acct_remapped(p, start, (*p).bi_bdev)
            },
        }
    }

    /// An error end: a mapped bio that was never cloned is not counted
    /// (dm counts no I/O that fails before it is mapped).
    fn failing(&mut self) {
        if self.acct == Acct::Mapped {
            self.acct = Acct::None;
        }
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

    /// Whether the submitter must not sleep (`REQ_NOWAIT`, io_uring's
    /// inline submission): what would wait ends the bio with
    /// [`Bio::end_would_block`] instead, and the submitter retries from a
    /// context that may sleep.
    pub fn is_nowait(&self) -> bool {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { rdm_bio_is_nowait(self.bio.as_ptr()) }
    }

    /// Whether the bio ended "would block" (`BLK_STS_AGAIN`).
    pub fn would_block(&self) -> bool {
        // SAFETY: by the invariant the bio is live and ours.
        unsafe { rdm_bio_would_block(self.bio.as_ptr()) }
    }

    /// Records "would block" in the bio (`BLK_STS_AGAIN`; kept if it has
    /// an error already), so that it ends so whoever ends it.
    pub fn set_would_block(&mut self) {
        // SAFETY: by the invariant the bio is live and exclusively ours.
        unsafe { rdm_bio_set_would_block(self.bio.as_ptr()) };
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
    pub fn end(mut self, error: bool) {
        if error {
            self.failing();
        }
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end(self.into_raw(), error) };
    }

    /// Ends the bio with "operation not supported" (user space sees
    /// EOPNOTSUPP).
    pub fn end_unsupported(mut self) {
        self.failing();
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end_unsupported(self.into_raw()) };
    }

    /// Ends the bio with "no space" (user space sees ENOSPC): there is no
    /// room to keep what the write would change.
    pub fn end_no_space(mut self) {
        self.failing();
        // SAFETY: we own the bio and give it up here, once.
        unsafe { rdm_bio_end_nospace(self.into_raw()) };
    }

    /// Ends a `REQ_NOWAIT` bio with "would block" (`BLK_STS_AGAIN`, which
    /// the block layer does not log): serving it would have to wait.
    pub fn end_would_block(mut self) {
        self.set_would_block();
        self.end(false);
    }

    /// Sends the bio to the device it points at. (A bio in flight in the
    /// statistics is counted as ended here: only clones, splits' rests and
    /// parked bios are sent on, never a bio the device accounts.)
    pub fn submit(self) {
        // SAFETY: we own the bio and give it up to the block layer, once.
        unsafe { bindings::submit_bio_noacct(self.into_raw()) };
    }

    /// Lets the bio be ended one more time before it completes
    /// (`bio_inc_remaining`): for fanning one bio out to several clones,
    /// each of which ends it. Returns a second owner handle, which owes
    /// the statistics nothing.
    pub fn share(&self) -> Bio {
        // SAFETY: the bio is live; after this it needs one more `bio_endio`
        // before it completes, which the returned handle owns.
        unsafe { rdm_bio_inc_remaining(self.bio.as_ptr()) };
        Bio::from_nonnull(self.bio)
    }
}

impl Drop for Bio {
    fn drop(&mut self) {
        self.failing();
        self.settle_acct();
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

    /// Appends `bio` (which should owe the statistics nothing: a bio in
    /// flight in them would be counted as ended here).
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

impl Default for BioList {
    fn default() -> Self {
        Self::new()
    }
}
