//! Kernel threads (`kthread_create`/`kthread_stop`).
//!
//! A [`Kthread`] runs a [`ThreadBody`] in a thread of its own; dropping the
//! handle asks the thread to stop (the body polls [`Current::should_stop`]) and waits
//! until the body has returned, so nothing the body uses can be freed
//! under it.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use core::ptr::NonNull;
use kernel::{
    bindings,
    error::from_err_ptr,
    ffi::{c_char, c_int, c_void},
    prelude::*,
    str::CStr,
};

#[allow(
    improper_ctypes,
    reason = "task_struct only crosses by pointer; its layout is bindgen's"
)]
extern "C" {
    fn rdm_kthread_run(
        threadfn: unsafe extern "C" fn(*mut c_void) -> c_int,
        data: *mut c_void,
        name: *const c_char,
    ) -> *mut bindings::task_struct;
}

/// What a [`Kthread`] runs.
pub trait ThreadBody: Send + Sync + 'static {
    /// The thread's work; returns once `me.should_stop()` says so.
    fn run(&self, me: &Current);
}

/// The running kthread, handed to its [`ThreadBody`]: only a kthread may
/// ask whether it should stop (`kthread_should_stop()` on another task
/// warns and dereferences a null pointer), so the question is asked
/// through this token, which only the thread's own entry makes.
pub struct Current {
    // Not `Send`, not constructible outside this module.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl Current {
    /// This thread's identity, as [`current_id`] gives it on this thread.
    pub fn id(&self) -> usize {
        current_id()
    }

    /// Whether the thread has been asked to stop.
    pub fn should_stop(&self) -> bool {
        // SAFETY: `self` exists only on the kthread it was made for (see
        // `trampoline`), so `current` is a kthread.
        unsafe { bindings::kthread_should_stop() }
    }
}

/// An identity of the current task, only to compare with
/// [`Current::id`]: whether the caller is a given kthread.
pub fn current_id() -> usize {
    // SAFETY: get_current() has no requirements; the pointer is only
    // compared, never dereferenced.
    unsafe { bindings::get_current() as usize }
}

/// A running kernel thread.
///
/// # Invariants
///
/// `task` is a kthread started by `rdm_kthread_run` with `body` as its
/// data, with a task reference held by this handle; `body` lives until
/// `Drop` has stopped the thread.
pub struct Kthread<F: ThreadBody> {
    task: NonNull<bindings::task_struct>,
    body: Pin<KBox<F>>,
}

// SAFETY: the handle only stops the thread, which may be done from any
// process context; the body itself is `Send + Sync`.
unsafe impl<F: ThreadBody> Send for Kthread<F> {}
// SAFETY: `&Kthread` gives no access to anything.
unsafe impl<F: ThreadBody> Sync for Kthread<F> {}

impl<F: ThreadBody> Kthread<F> {
    /// Starts a thread named `name` running `body.run()` once.
    pub fn run(name: &CStr, body: F) -> Result<Self> {
        let body = KBox::pin(body, GFP_KERNEL)?;
        let data = core::ptr::from_ref::<F>(&body).cast_mut().cast();
        // SAFETY: `trampoline::<F>` is called with `data`, which points at
        // the pinned body that this handle keeps alive until the thread
        // is stopped; `name` is NUL-terminated and copied by the call.
        let task = unsafe { rdm_kthread_run(trampoline::<F>, data, name.as_char_ptr()) };
        let task = from_err_ptr(task)?;
        // INVARIANT: started with `body` as data, reference held.
        Ok(Kthread {
            task: NonNull::new(task).ok_or(ENOMEM)?,
            body,
        })
    }
}

/// # Safety
///
/// `data` is the pinned body of a live [`Kthread`] handle.
unsafe extern "C" fn trampoline<F: ThreadBody>(data: *mut c_void) -> c_int {
    // SAFETY: per the contract, the handle keeps the body alive until
    // kthread_stop() has seen this function return.
    let body = unsafe { &*data.cast::<F>() };
    // This function runs only as the kthread's entry.
    let me = Current {
        _not_send: core::marker::PhantomData,
    };
    body.run(&me);
    // Returning before kthread_stop() is fine: the handle holds a task
    // reference, and kthread_stop() waits for the thread to have exited.
    0
}

impl<F: ThreadBody> Drop for Kthread<F> {
    fn drop(&mut self) {
        // SAFETY: the task reference is ours (invariant); kthread_stop_put()
        // wakes the thread, waits for `trampoline` to return (or for the
        // thread to exit without running it) and drops the reference. Only
        // then is `body` dropped, after this function.
        unsafe { bindings::kthread_stop_put(self.task.as_ptr()) };
        let _ = &self.body;
    }
}
