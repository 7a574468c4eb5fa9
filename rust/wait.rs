//! A counter one can wait on to reach zero (`wait_var_event`/`wake_up_var`).
//!
//! rdm counts the bios in flight on each table with one; suspend waits for
//! it to drain. Incrementing and decrementing are single atomic operations
//! and never sleep, so the I/O completion path (interrupt context) may drop
//! the count.

use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::ffi::c_void;

extern "C" {
    fn rdm_wait_var_zero(var: *mut usize);
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
        unsafe { rdm_wait_var_zero(self.count.as_ptr()) };
    }
}

impl Default for DrainCounter {
    fn default() -> Self {
        Self::new()
    }
}
