//! Bio sets: splits and clones with typed per-clone data, and groups of
//! empty flushes.

use super::bio::Acct;
use super::ffi::*;
use super::{BdevFile, Bio};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::error::to_result;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;

/// Data carried by every clone of a [`BioSet`], given back when it ends.
pub trait CloneEnd: Sized + Send + 'static {
    /// The clone ended (its status was already copied into `orig` if it
    /// failed); `orig` must now be ended (or resubmitted).
    fn end(self, orig: Bio);
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

/// What the front pad of a clone holds: the caller's `T`, and the
/// original bio's place in the disk's statistics while the clone has it.
struct Pad<T> {
    data: T,
    acct: Acct,
}

const fn front_pad<T>() -> usize {
    // The bio after the pad must stay 8-aligned.
    (size_of::<Pad<T>>() + 7) & !7
}

/// The pad of `bio`, a bio of a [`BioSet<T>`].
fn pad_of<T>(bio: *mut bindings::bio) -> *mut Pad<T> {
    bio.cast::<u8>().wrapping_sub(front_pad::<T>()).cast()
}

impl<T: CloneEnd> BioSet<T> {
    /// A pool keeping `pool_size` bios in reserve.
    pub fn new(pool_size: u32) -> impl PinInit<Self, Error> {
        const {
            assert!(core::mem::align_of::<Pad<T>>() <= 8);
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
    /// sides. If it does not, or the split cannot be made (no bio from the
    /// pool, which only a `REQ_NOWAIT` bio does not wait for; or a zone
    /// append), `bio` comes back whole for the caller to end.
    pub fn split_front(&self, bio: Bio, sectors: u32) -> Result<(Bio, Bio), Bio> {
        // SAFETY: the bio is ours and live; the pool is initialised (type
        // invariant). The split shares nothing we keep; the helper checks
        // `sectors` against the bio before bio_split() (which BUG()s on a
        // bad count) and returns an ERR_PTR, never NULL, on failure, with
        // `bio` untouched.
        let front = unsafe { rdm_bio_split_front(bio.bio.as_ptr(), sectors, self.raw()) };
        match from_err_ptr(front) {
            // SAFETY: bio_split() returned a new bio that we own.
            Ok(front) => Ok((unsafe { Bio::from_raw(front) }, bio)),
            Err(_) => Err(bio),
        }
    }

    /// Clones `orig` for `dev` (or `orig`'s own device when `None`) with
    /// `data` attached; when the clone ends, its error is copied into
    /// `orig` and `data.end(orig)` runs (in the completion's context, which
    /// may be an interrupt). On allocation failure, `orig` and `data` come
    /// back: only for a `REQ_NOWAIT` bio, whose clone does not wait for the
    /// pool (any other waits, and gets one).
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
                // A new bio, ours until submitted.
                Some(bio) => Bio::from_nonnull(bio).submit(),
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
    /// A bio the device accounts ([`Bio::account`]) is in flight in its
    /// disk's statistics from here on; the pad keeps its start time until
    /// `clone_end_io` gives it back to `orig`'s handle.
    fn attach(&self, bio: *mut bindings::bio, mut orig: Bio, data: T) -> Result<Bio, (Bio, T)> {
        let Some(bio) = NonNull::new(bio) else {
            return Err((orig, data));
        };
        let acct = orig.start_acct();
        // SAFETY: the front pad of a bio from this pool is `front_pad::<T>()`
        // bytes right before it, 8-aligned (the pool's type invariant and
        // `new`'s assertion), unused by anyone else.
        unsafe { pad_of::<T>(bio.as_ptr()).write(Pad { data, acct }) };
        // The bio's `bi_private` now owns `orig`, and its pad what `orig`
        // owes the statistics (see `clone_end_io`).
        core::mem::forget(orig);
        Ok(Bio::from_nonnull(bio))
    }
}

/// # Safety
///
/// Called once by the block layer when a clone made by
/// [`BioSet::clone_bio`] completes.
unsafe extern "C" fn clone_end_io<T: CloneEnd>(clone: *mut bindings::bio) {
    // SAFETY: `clone_bio` stored the original bio, which the clone owned, in
    // `bi_private`, and a `Pad<T>` in the front pad; both are taken back
    // once, and the pad's accounting goes to the one handle of `orig`.
    let (orig, data) = unsafe {
        let orig = (*clone).bi_private.cast::<bindings::bio>();
        let Pad { data, acct } = pad_of::<T>(clone).read();
        rdm_bio_copy_error(orig, clone);
        bindings::bio_put(clone);
        let mut orig = Bio::from_raw(orig);
        orig.restore_acct(acct);
        (orig, data)
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
