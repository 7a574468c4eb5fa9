//! A workqueue owned by the module (`alloc_workqueue`/`destroy_workqueue`).
//!
//! Work queued on the system queues can still be running module code after
//! the module's last reference is dropped; a queue of our own is drained by
//! `destroy_workqueue()` in the module's exit, which closes that window.
//! Work items are the `kernel` crate's ([`kernel::workqueue::Work`]),
//! queued through [`OwnedQueue`]'s `Deref` to [`Queue`].

use core::ptr::NonNull;
use kernel::{
    bindings, c_str,
    error::Result,
    prelude::*,
    str::CStr,
    sync::Arc,
    workqueue::{HasWork, Queue, WorkItem},
};

/// An owned workqueue; dropping it waits for its work and frees it.
///
/// # Invariants
///
/// `wq` came from `alloc_workqueue` and is destroyed only by `Drop`.
pub struct OwnedQueue {
    wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: a workqueue accepts work from any thread and may be destroyed
// from any process context.
unsafe impl Send for OwnedQueue {}
// SAFETY: queueing work through `&self` is thread-safe (the kernel's
// workqueue locking).
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// A new queue called `name` that may run work during memory reclaim.
    pub fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: the format is "%s" with a static NUL-terminated string
        // argument, as alloc_workqueue() expects.
        let wq = unsafe {
            bindings::alloc_workqueue(
                c_str!("%s").as_char_ptr(),
                bindings::wq_flags_WQ_MEM_RECLAIM,
                0,
                name.as_char_ptr(),
            )
        };
        // INVARIANT: from alloc_workqueue(), checked for NULL.
        Ok(OwnedQueue {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }
}

/// Queues `this`, a work item in an `Arc`, on the queue `queue` finds
/// through it (a queue owned by something `this` holds), without taking
/// another reference to reach the queue. For completion context: a
/// reference taken only to reach the queue would be dropped after the work
/// may already have run and dropped `this`, so it could be the last one,
/// and its destructor may sleep. Gives `this` back if it is queued already.
pub fn enqueue_arc<T, const ID: u64>(
    this: Arc<T>,
    queue: impl FnOnce(&T) -> &OwnedQueue,
) -> core::result::Result<(), Arc<T>>
where
    T: WorkItem<ID, Pointer = Arc<T>> + HasWork<T, ID> + Send + Sync + 'static,
{
    let wq = queue(&this).wq.as_ptr();
    // SAFETY: `wq` is live when the call starts: its `OwnedQueue` is
    // reachable from `this`, which we hold. It stays valid until
    // `queue_work_on()` returns even if the work runs (and drops `this`)
    // meanwhile: the queue is destroyed only by `OwnedQueue::drop`, whose
    // destroy_workqueue() waits until this work item has run, and frees the
    // workqueue after an RCU grace period, while queue_work_on() touches it
    // only inside rcu_read_lock() (and not after that). `enqueue` does not
    // touch the queue after queue_work_on().
    let q = unsafe { Queue::from_raw(wq) };
    q.enqueue::<Arc<T>, ID>(this)
}

impl core::ops::Deref for OwnedQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: the queue lives until `Drop` (invariant), which cannot
        // run while `self` is borrowed.
        unsafe { Queue::from_raw(self.wq.as_ptr()) }
    }
}

extern "C" {
    fn rdm_cond_resched();
}

/// Gives the CPU to other tasks if one is due (`cond_resched()`): for long
/// loops in work items and threads. Process context, no spinlock held.
pub fn cond_resched() {
    // SAFETY: the helper only calls cond_resched(); callers are in
    // process context without spinlocks (documented contract).
    unsafe { rdm_cond_resched() };
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: from alloc_workqueue() (invariant); destroy_workqueue()
        // drains pending and running work first.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}
