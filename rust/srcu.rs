//! Sleepable RCU (`include/linux/srcu.h`) and an SRCU-published `Arc`.
//!
//! rdm's I/O path reads a device's live table with no lock: it enters an
//! SRCU read section, loads the published pointer, takes what it needs and
//! leaves. Swapping the table publishes the new pointer and waits for the
//! read sections that might still see the old one (`synchronize_srcu`).

use core::{
    ptr::{self, NonNull},
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    bindings,
    error::Result,
    ffi::c_int,
    prelude::*,
    sync::{Arc, ArcBorrow},
};

#[allow(
    improper_ctypes,
    reason = "kernel structs only cross by pointer; their layout is bindgen's"
)]
extern "C" {
    fn rdm_srcu_alloc() -> *mut bindings::srcu_struct;
    fn rdm_srcu_free(s: *mut bindings::srcu_struct);
    fn rdm_srcu_read_lock(s: *mut bindings::srcu_struct) -> c_int;
    fn rdm_srcu_read_unlock(s: *mut bindings::srcu_struct, idx: c_int);
    fn rdm_srcu_synchronize(s: *mut bindings::srcu_struct);
}

/// An SRCU domain.
///
/// # Invariants
///
/// `s` is an initialised `srcu_struct` owned by this value.
pub struct Srcu {
    s: NonNull<bindings::srcu_struct>,
}

// SAFETY: SRCU is built for use from any thread; the struct is heap
// allocated and only freed by `Drop`.
unsafe impl Send for Srcu {}
// SAFETY: read sections and synchronize may run concurrently from any thread.
unsafe impl Sync for Srcu {}

/// A read-side critical section of an [`Srcu`]; may sleep inside.
pub struct SrcuGuard<'a> {
    srcu: &'a Srcu,
    idx: c_int,
}

impl Srcu {
    /// A new SRCU domain.
    pub fn new() -> Result<Self> {
        // SAFETY: no preconditions.
        let s = unsafe { rdm_srcu_alloc() };
        // INVARIANT: the helper returns an initialised struct or NULL.
        Ok(Srcu {
            s: NonNull::new(s).ok_or(ENOMEM)?,
        })
    }

    /// Enters a read section.
    pub fn read_lock(&self) -> SrcuGuard<'_> {
        // SAFETY: `s` is initialised (invariant).
        let idx = unsafe { rdm_srcu_read_lock(self.s.as_ptr()) };
        SrcuGuard { srcu: self, idx }
    }

    /// Waits until every read section that began before the call has ended.
    pub fn synchronize(&self) {
        // SAFETY: `s` is initialised (invariant); may sleep, as callers may.
        unsafe { rdm_srcu_synchronize(self.s.as_ptr()) };
    }
}

impl Drop for SrcuGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `idx` came from the matching read_lock on this domain.
        unsafe { rdm_srcu_read_unlock(self.srcu.s.as_ptr(), self.idx) };
    }
}

impl Drop for Srcu {
    fn drop(&mut self) {
        // SAFETY: owned (invariant); no guard can exist, as guards borrow it.
        unsafe { rdm_srcu_free(self.s.as_ptr()) };
    }
}

/// An optional `Arc<T>` published for SRCU readers.
///
/// Readers [`SrcuArc::read`] it inside a read section of the paired
/// [`Srcu`]; writers [`SrcuArc::replace`] it, which returns the old value
/// only after every reader that could have seen it has left its section.
///
/// # Invariants
///
/// `ptr` is null or from `Arc::into_raw`, and holds that reference.
pub struct SrcuArc<T: Send + Sync + 'static> {
    ptr: AtomicPtr<T>,
}

impl<T: Send + Sync + 'static> SrcuArc<T> {
    /// An empty pointer.
    pub fn new() -> Self {
        SrcuArc {
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The published value, valid for the read section `guard`.
    ///
    /// `guard` must be a read section of the [`Srcu`] that `replace` is
    /// given for this pointer; that pairing is the caller's to keep.
    pub fn read<'g>(&self, _guard: &'g SrcuGuard<'_>) -> Option<ArcBorrow<'g, T>> {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Arc::into_raw` (invariant) and its
        // reference is released only by `replace` after `synchronize()`,
        // which waits for `_guard`'s section, so it outlives `'g`.
        Some(unsafe { ArcBorrow::from_raw(p) })
    }

    /// Whether a value is published.
    pub fn is_some(&self) -> bool {
        !self.ptr.load(Ordering::Acquire).is_null()
    }

    /// Publishes `new` and returns the old value once no reader of `srcu`
    /// can still see it. Callers serialise `replace` among themselves.
    pub fn replace(&self, new: Option<Arc<T>>, srcu: &Srcu) -> Option<Arc<T>> {
        let new = new.map_or(ptr::null_mut(), |a| Arc::into_raw(a).cast_mut());
        let old = self.ptr.swap(new, Ordering::AcqRel);
        srcu.synchronize();
        if old.is_null() {
            return None;
        }
        // SAFETY: `old` came from `Arc::into_raw` (invariant) and no reader
        // borrows it any more (synchronize above), so its reference is ours.
        Some(unsafe { Arc::from_raw(old) })
    }
}

impl<T: Send + Sync + 'static> Drop for SrcuArc<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: `&mut self`: no reader can hold a borrow; the
            // reference is ours (invariant).
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

impl<T: Send + Sync + 'static> Default for SrcuArc<T> {
    fn default() -> Self {
        Self::new()
    }
}
