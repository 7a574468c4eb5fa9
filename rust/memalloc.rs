//! Allocation scopes (`memalloc_noio_save`/`restore`).
//!
//! 6.12's `kernel::alloc::flags` has no `GFP_NOIO`. Code on the I/O path
//! (a block driver's `submit_bio`, its copier thread) must not let memory
//! reclaim start I/O, which could wait on the very device being served;
//! inside a [`NoIo`] scope every allocation of the task behaves as
//! `GFP_NOIO`, whatever flags it passes.
//!
//! C header: [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h)

use kernel::ffi::c_uint;

extern "C" {
    fn rdm_memalloc_noio_save() -> c_uint;
    fn rdm_memalloc_noio_restore(flags: c_uint);
}

/// While this lives, the current task's allocations do no I/O. Not `Send`:
/// it belongs to the task that made it.
pub struct NoIo {
    flags: c_uint,
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl NoIo {
    /// Enters a scope (scopes nest).
    pub fn enter() -> Self {
        // SAFETY: sets a flag of the current task, restored by `Drop` on
        // the same task (the value is not `Send`).
        let flags = unsafe { rdm_memalloc_noio_save() };
        NoIo {
            flags,
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: pairs with the save in `enter`, on the same task.
        unsafe { rdm_memalloc_noio_restore(self.flags) };
    }
}
