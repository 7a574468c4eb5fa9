//! Locks the 6.12 `kernel` crate lacks.
//!
//! - [`IrqSpinLock`]: a spinlock taken with interrupts off
//!   (`spin_lock_irqsave`), for state that bio completions (often hard
//!   interrupt context) share with process context. It plugs into the
//!   kernel crate's [`Lock`] as a [`Backend`], so its guards work with
//!   [`kernel::sync::CondVar`].
//! - [`RwSem`]: a read-write semaphore (`struct rw_semaphore`) with read and
//!   write guards; both may sleep, so process context only.
//!
//! C header: [`include/linux/rwsem.h`](srctree/include/linux/rwsem.h)

use core::{
    cell::UnsafeCell,
    marker::PhantomPinned,
    ops::{Deref, DerefMut},
};
use kernel::{
    bindings,
    ffi::c_ulong,
    prelude::*,
    str::CStr,
    sync::{
        lock::{Backend, Lock},
        LockClassKey,
    },
    types::Opaque,
};

extern "C" {
    fn rdm_spin_lock_irqsave(lock: *mut bindings::spinlock_t) -> c_ulong;
    fn rdm_spin_unlock_irqrestore(lock: *mut bindings::spinlock_t, flags: c_ulong);
}

/// The lock class key's C object.
pub(crate) fn key_ptr(key: &'static LockClassKey) -> *mut bindings::lock_class_key {
    // `LockClassKey` is `#[repr(transparent)]` over `Opaque<lock_class_key>`,
    // itself transparent over the C struct, so the addresses coincide; the
    // key is static and lockdep only uses it by address.
    core::ptr::from_ref(key)
        .cast::<bindings::lock_class_key>()
        .cast_mut()
}

/// The [`Backend`] of [`IrqSpinLock`].
pub struct IrqSpinLockBackend;

/// A spinlock that disables local interrupts while held. Create it with
/// [`crate::new_irq_spinlock!`].
pub type IrqSpinLock<T> = Lock<T, IrqSpinLockBackend>;

/// Creates an [`IrqSpinLock`] initialiser with its own lock class.
#[macro_export]
macro_rules! new_irq_spinlock {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::kx::sync::IrqSpinLock::new(
            $inner,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
        )
    };
}

// SAFETY: `spin_lock_irqsave` gives mutual exclusion against every context
// on every CPU; the guard state is the saved interrupt flags, restored by
// the matching unlock; `relock` uses the default (lock again, new flags).
unsafe impl Backend for IrqSpinLockBackend {
    type State = bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: the caller guarantees `ptr` is valid for writes and that
        // `name` and `key` live forever.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: the caller guarantees the lock was initialised.
        unsafe { rdm_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: the caller owns the lock; `flags` came from its `lock`.
        unsafe { rdm_spin_unlock_irqrestore(ptr, *flags) }
    }
}

/// A read-write semaphore protecting a `T`: many readers or one writer.
/// Create it with [`crate::new_rwsem!`].
///
/// # Invariants
///
/// `sem` was initialised by `__init_rwsem`; `data` is only reached through
/// the guards, which hold the semaphore for read (shared access) or for
/// write (exclusive access).
#[pin_data]
pub struct RwSem<T> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    #[pin]
    _pin: PhantomPinned,
    data: UnsafeCell<T>,
}

// SAFETY: the semaphore serialises writers against everyone; moving the
// semaphore moves the `T` it owns.
unsafe impl<T: Send> Send for RwSem<T> {}
// SAFETY: readers share `&T` concurrently (needs `Sync`), the writer gets
// `&mut T` from any thread (needs `Send`).
unsafe impl<T: Send + Sync> Sync for RwSem<T> {}

/// Creates an [`RwSem`] initialiser with its own lock class.
#[macro_export]
macro_rules! new_rwsem {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::kx::sync::RwSem::new(
            $inner,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
        )
    };
}

impl<T> RwSem<T> {
    /// An initialiser of a semaphore holding `t`, in lock class `key`.
    pub fn new(t: T, name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            data: UnsafeCell::new(t),
            _pin: PhantomPinned,
            // SAFETY: `slot` is valid for the call; `name` and `key` are
            // static, as lockdep requires.
            sem <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_rwsem(slot, name.as_char_ptr(), key_ptr(key))
            }),
        })
    }

    /// Takes the semaphore for reading (sleeps while a writer holds it).
    pub fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: initialised (type invariant); process context is the
        // caller's duty, as for any sleeping lock.
        unsafe { bindings::down_read(self.sem.get()) };
        ReadGuard { sem: self }
    }

    /// Takes the semaphore for writing (sleeps until no one else holds it).
    pub fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: as in `read`.
        unsafe { bindings::down_write(self.sem.get()) };
        WriteGuard { sem: self }
    }
}

/// Shared access to an [`RwSem`]'s data; releases the semaphore on drop.
pub struct ReadGuard<'a, T> {
    sem: &'a RwSem<T>,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for read: no writer can hold `&mut`.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the semaphore for read.
        unsafe { bindings::up_read(self.sem.sem.get()) };
    }
}

/// Exclusive access to an [`RwSem`]'s data; releases the semaphore on drop.
pub struct WriteGuard<'a, T> {
    sem: &'a RwSem<T>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for write: access is exclusive.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the semaphore is held for write: access is exclusive.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the semaphore for write.
        unsafe { bindings::up_write(self.sem.sem.get()) };
    }
}
