//! Counters one can wait on (`wait_var_event`/`wake_up_var`): [`DrainCounter`]
//! (wait for zero), [`EventCounter`] (wait for a change), [`Permits`] (wait
//! for room below a limit); and [`PollEvent`], an event number with a wait
//! queue of its own that `poll()` waits on.
//!
//! rdm counts the bios in flight on each table with one; suspend waits for
//! it to drain. Incrementing and decrementing are single atomic operations
//! and never sleep, so the I/O completion path (interrupt context) may drop
//! the count.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use kernel::ffi::c_void;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::{Arc, LockClassKey};
use kernel::types::Opaque;

extern "C" {
    fn rdm_wake_up_var(var: *mut c_void);
}

/// A count of things in progress that can be waited on to drain.
pub struct DrainCounter {
    count: AtomicUsize,
}

impl DrainCounter {
    /// A zero count.
    pub const fn new() -> Self {
        DrainCounter {
            count: AtomicUsize::new(0),
        }
    }

    /// One more in progress.
    pub fn inc(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// One fewer; wakes waiters when the count reaches zero. Any context.
    pub fn dec(&self) {
        // The SeqCst RMW is the full barrier wake_up_var() needs between
        // the update and its check of the wait queue.
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            // SAFETY: the address is only a wait-queue hash key; it stays
            // valid for the call as `self` is borrowed.
            unsafe { rdm_wake_up_var(self.count.as_ptr().cast()) };
        }
    }

    /// The current count.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Sleeps (uninterruptibly) until the count is zero. The caller must
    /// not hold anything the decrementing paths need.
    pub fn wait_zero(&self) {
        // SAFETY: the helper only reads the counter (READ_ONCE) and keys the
        // wait queue on its address, which `&self` keeps valid throughout.
        unsafe { rdm_wait_var_below(self.count.as_ptr(), 1) };
    }
}

impl Default for DrainCounter {
    fn default() -> Self {
        Self::new()
    }
}

extern "C" {
    fn rdm_wait_var_change(var: *mut u32, seen: u32) -> kernel::ffi::c_int;
    fn rdm_wait_var_below(var: *mut usize, limit: usize);
}

/// Where an [`EventCounter`]'s events go beyond its own waiters: rdm's
/// global poll event, or (in rdm-dm) dm's event of a mapped device.
pub trait EventSink: Send + Sync {
    /// One more event. Any context; takes no lock that is held around an
    /// event, so it may be called with any lock held.
    fn event(&self);
}

/// An event number: bumped from any context, waited on for a change.
pub struct EventCounter {
    nr: AtomicU32,
    /// Told of every event too.
    parent: Option<Arc<dyn EventSink>>,
}

impl EventCounter {
    /// Event number 0.
    pub const fn new() -> Self {
        EventCounter {
            nr: AtomicU32::new(0),
            parent: None,
        }
    }

    /// Event number 0; every event also goes to `parent`.
    pub fn with_parent(parent: Arc<dyn EventSink>) -> Self {
        EventCounter {
            nr: AtomicU32::new(0),
            parent: Some(parent),
        }
    }

    /// The current event number.
    pub fn get(&self) -> u32 {
        self.nr.load(Ordering::Acquire)
    }

    /// Moves the number on and wakes the waiters. Any context; takes no
    /// lock, so it may be called with any lock held.
    pub fn bump(&self) {
        // SeqCst: the full barrier wake_up_var() needs before its check.
        self.nr.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the address is only a wait-queue hash key.
        unsafe { rdm_wake_up_var(self.nr.as_ptr().cast()) };
        if let Some(p) = &self.parent {
            p.event();
        }
    }

    /// Sleeps (interruptibly) until the number is no longer `seen`.
    pub fn wait_change(&self, seen: u32) -> kernel::error::Result {
        // SAFETY: the helper reads the number (READ_ONCE) and keys the wait
        // queue on its address, valid while `&self` is.
        let ret = unsafe { rdm_wait_var_change(self.nr.as_ptr(), seen) };
        kernel::error::to_result(ret)
    }
}

impl Default for EventCounter {
    fn default() -> Self {
        Self::new()
    }
}

/// A count of things in progress bounded by a limit (a throttle): taking a
/// permit never sleeps; waiting for one is separate, so that a caller can
/// drop everything it holds before it sleeps.
pub struct Permits {
    used: AtomicUsize,
}

impl Permits {
    /// No permit in use.
    pub const fn new() -> Self {
        Permits {
            used: AtomicUsize::new(0),
        }
    }

    /// Permits in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes a permit if fewer than `limit` are in use (`limit` 0: no limit).
    pub fn try_take(&self, limit: usize) -> bool {
        if limit == 0 {
            self.used.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a permit back and wakes those waiting for one. Any context.
    pub fn put(&self) {
        self.used.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: the address is only a wait-queue hash key.
        unsafe { rdm_wake_up_var(self.used.as_ptr().cast()) };
    }

    /// Sleeps until fewer than `limit` permits are in use. Does not take one:
    /// call [`Permits::try_take`] again, as another waiter may win it.
    pub fn wait_below(&self, limit: usize) {
        if limit == 0 {
            return;
        }
        // SAFETY: as in `DrainCounter::wait_zero`.
        unsafe { rdm_wait_var_below(self.used.as_ptr(), limit) };
    }
}

impl Default for Permits {
    fn default() -> Self {
        Self::new()
    }
}

/// A value with a drain count: [`DrainRef`]s to it are counted instead of
/// reference-counted, and dropping it waits for the count to reach zero,
/// so a `DrainRef` can never outlive it.
///
/// rdm's tables are `Drained`: each bio in flight holds a `DrainRef`, which
/// costs one atomic add and one atomic subtract, and releasing it never
/// frees the table, so a completion (interrupt context) never runs a
/// table's destructor.
pub struct Drained<T> {
    // Declared first, so dropped (waited for) before `value` is touched.
    count: DrainCounter,
    value: T,
}

impl<T> Drained<T> {
    /// Wraps `value` with a zero count.
    pub const fn new(value: T) -> Self {
        Drained {
            count: DrainCounter::new(),
            value,
        }
    }

    /// The count of [`DrainRef`]s (to wait for, or read).
    pub fn count(&self) -> &DrainCounter {
        &self.count
    }
}

impl<T> core::ops::Deref for Drained<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Drained<T> {
    fn drop(&mut self) {
        // Owners wait before dropping; this makes a mistake a hang rather
        // than a use-after-free.
        self.count.wait_zero();
    }
}

/// A counted reference to a [`Drained`] value in an `Arc` (whose contents
/// never move).
///
/// # Invariants
///
/// `ptr` points to a `Drained<T>` whose count this reference holds one of;
/// the value cannot be freed before that count is dropped (its `Drop`
/// waits for zero).
pub struct DrainRef<T> {
    ptr: core::ptr::NonNull<Drained<T>>,
}

// SAFETY: a `DrainRef` gives `&T` from any thread (needs `T: Sync`); its
// drop only touches the atomic count.
unsafe impl<T: Sync> Send for DrainRef<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for DrainRef<T> {}

impl<T> DrainRef<T> {
    /// Counts one more reference to `this`.
    pub fn new(this: kernel::sync::ArcBorrow<'_, Drained<T>>) -> Self {
        this.count.inc();
        // INVARIANT: counted above; an `Arc`'s contents do not move.
        DrainRef {
            ptr: core::ptr::NonNull::from(&*this),
        }
    }
}

impl<T> Clone for DrainRef<T> {
    fn clone(&self) -> Self {
        // SAFETY: by the invariant the value is live while we hold a count.
        unsafe { self.ptr.as_ref().count.inc() };
        // INVARIANT: counted above.
        DrainRef { ptr: self.ptr }
    }
}

impl<T> core::ops::Deref for DrainRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: by the invariant the value lives while we hold a count.
        unsafe { &self.ptr.as_ref().value }
    }
}

impl<T> Drop for DrainRef<T> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the value is live; `dec` is our last use
        // of it (after it, the owner may free it).
        unsafe { self.ptr.as_ref().count.dec() };
    }
}

impl<T> DrainRef<T> {
    /// The same count, no longer saying on what: for a holder that only
    /// keeps the value alive and never reads it.
    pub fn into_token(self) -> DrainToken {
        // SAFETY: by the invariant the value is live while we hold a count.
        let count = core::ptr::NonNull::from(unsafe { &self.ptr.as_ref().count });
        core::mem::forget(self);
        // INVARIANT: the count held by `self` passes to the token.
        DrainToken { count }
    }
}

/// A [`DrainRef`] that has forgotten its type: it holds one count of a
/// [`Drained`] value, so the value stays until the token is dropped, but
/// gives no access to it.
///
/// # Invariants
///
/// `count` points to the count of a live `Drained` value, of which this
/// token holds one.
pub struct DrainToken {
    count: core::ptr::NonNull<DrainCounter>,
}

// SAFETY: a token only touches an atomic count, from any thread.
unsafe impl Send for DrainToken {}
// SAFETY: as above.
unsafe impl Sync for DrainToken {}

impl DrainToken {
    /// Counts one more reference to `this`, with no access to it: what a
    /// bio in flight holds (`DrainRef::new(this).into_token()` in one
    /// atomic operation, with no `DrainRef` to drop).
    pub fn new<T>(this: kernel::sync::ArcBorrow<'_, Drained<T>>) -> Self {
        this.count.inc();
        // INVARIANT: counted above; an `Arc`'s contents do not move, and
        // the value's `Drop` waits for this count.
        DrainToken {
            count: core::ptr::NonNull::from(&this.count),
        }
    }
}

impl Clone for DrainToken {
    fn clone(&self) -> Self {
        // SAFETY: by the invariant the value is live while we hold a count.
        unsafe { self.count.as_ref().inc() };
        // INVARIANT: counted above.
        DrainToken { count: self.count }
    }
}

impl Drop for DrainToken {
    fn drop(&mut self) {
        // SAFETY: by the invariant the value is live; `dec` is our last use
        // of it (after it, the owner may free it).
        unsafe { self.count.as_ref().dec() };
    }
}

/// Sleeps (uninterruptibly) for at least `ms` milliseconds. Process
/// context; the caller must hold no spinlock.
pub fn sleep_ms(ms: u32) {
    let j = kernel::time::msecs_to_jiffies(ms).max(1);
    let j = kernel::ffi::c_long::try_from(j).unwrap_or(kernel::ffi::c_long::MAX);
    // SAFETY: plain value; schedule_timeout_uninterruptible() sets the
    // task state itself and returns after the timeout (process context,
    // per this function's contract).
    unsafe { kernel::bindings::schedule_timeout_uninterruptible(j) };
}

#[allow(
    improper_ctypes,
    reason = "kernel structs only cross by pointer; their layout is bindgen's"
)]
extern "C" {
    fn rdm_poll_wait(
        file: *mut kernel::bindings::file,
        wq: *mut kernel::bindings::wait_queue_head,
        pt: *mut kernel::bindings::poll_table_struct,
    );
}

/// An event number with a wait queue that `poll()` can wait on (dm's
/// `dm_global_event_nr` and `dm_global_eventq`).
///
/// # Invariants
///
/// `wq` was initialised by `__init_waitqueue_head`.
#[pin_data]
pub struct PollEvent {
    nr: AtomicU32,
    #[pin]
    wq: Opaque<kernel::bindings::wait_queue_head>,
}

// SAFETY: the number is atomic and the wait queue has its own spinlock.
unsafe impl Send for PollEvent {}
// SAFETY: as above.
unsafe impl Sync for PollEvent {}

/// Creates a [`PollEvent`] initialiser with its own lock class.
#[macro_export]
macro_rules! new_poll_event {
    ($name:literal) => {
        $crate::kx::wait::PollEvent::new(::kernel::c_str!($name), ::kernel::static_lock_class!())
    };
}

impl PollEvent {
    /// Event number 0, its wait queue's lock in class `key`.
    pub fn new(name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            nr: AtomicU32::new(0),
            // SAFETY: `slot` is valid for the call; `name` and `key` are
            // static, as lockdep requires.
            wq <- Opaque::ffi_init(|slot| unsafe {
                kernel::bindings::__init_waitqueue_head(slot, name.as_char_ptr(), super::sync::key_ptr(key))
            }),
        })
    }

    /// The current event number.
    pub fn get(&self) -> u32 {
        self.nr.load(Ordering::Acquire)
    }

    /// Moves the number on and wakes every waiter and poller. Any context
    /// (the wait queue's lock is taken with interrupts off).
    pub fn bump(&self) {
        // SeqCst: the barrier the wake-up needs between the update and its
        // look at the queue (a poller adds itself, then reads the number).
        self.nr.fetch_add(1, Ordering::SeqCst);
        // SAFETY: initialised (invariant); `wake_up_all()`.
        unsafe {
            kernel::bindings::__wake_up(
                self.wq.get(),
                kernel::bindings::TASK_NORMAL,
                0,
                core::ptr::null_mut(),
            )
        };
    }

    /// Adds the poll table of a `poll()` on `file` to this wait queue
    /// (`poll_wait`); the caller then reads the number.
    pub fn poll_wait(&self, pt: &PollTable) {
        // SAFETY: the queue is initialised and outlives the file's poll
        // registration: the file's state keeps this event alive until the
        // file is released, which frees the poll table entries first
        // (the VFS removes them before a file's last reference goes).
        unsafe { rdm_poll_wait(pt.file, self.wq.get(), pt.table) };
    }
}

impl EventSink for PollEvent {
    fn event(&self) {
        self.bump();
    }
}

/// `EPOLLIN` (`include/uapi/linux/eventpoll.h`; bindgen skips it for its
/// `__force` cast).
pub const EPOLLIN: u32 = 0x0000_0001;

/// The arguments of a file's `poll` operation.
pub struct PollTable {
    pub(crate) file: *mut kernel::bindings::file,
    pub(crate) table: *mut kernel::bindings::poll_table_struct,
}
