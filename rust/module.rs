//! Module reference counting, parameters, and the jiffies clock.
//!
//! 6.12's `module!` has no parameters, so they are declared with
//! `module_param()` in `helpers.c` and read here.

extern "C" {
    fn rdm_module_get();
    fn rdm_module_put();
    fn rdm_param_dm_compat() -> bool;
}

/// A reference on this module: while one exists, rmmod fails with "in use".
pub struct ModuleRef(());

impl ModuleRef {
    /// Takes a reference (`__module_get(THIS_MODULE)`): the caller is module
    /// code running, so the module is live.
    pub fn get() -> Self {
        // SAFETY: we are running module code, so the module is not gone;
        // __module_get() on a live module is always allowed.
        unsafe { rdm_module_get() };
        ModuleRef(())
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        // SAFETY: pairs with the get in `ModuleRef::get`.
        unsafe { rdm_module_put() };
    }
}

/// The `dm_compat` module parameter.
pub fn param_dm_compat() -> bool {
    // SAFETY: reads a bool parameter that is read-only after load (0444).
    unsafe { rdm_param_dm_compat() }
}

extern "C" {
    fn rdm_param_cow_threshold() -> u32;
    fn rdm_param_copy_delay_ms() -> u32;
    fn rdm_param_merge_kib_per_s() -> u32;
    fn rdm_jiffies() -> kernel::ffi::c_ulong;
}

/// The `cow_threshold` module parameter: most chunk copies in progress (0:
/// no limit). Writable at run time, so read it each time.
pub fn param_cow_threshold() -> u32 {
    // SAFETY: the helper reads the parameter with READ_ONCE.
    unsafe { rdm_param_cow_threshold() }
}

/// The `copy_delay_ms` test knob: how long each copy is held before it
/// starts (0: not at all).
pub fn param_copy_delay_ms() -> u32 {
    // SAFETY: the helper reads the parameter with READ_ONCE.
    unsafe { rdm_param_copy_delay_ms() }
}

/// The `merge_kib_per_s` module parameter: the most a merge copies back
/// per second, in KiB (0: no limit). Writable at run time.
pub fn param_merge_kib_per_s() -> u32 {
    // SAFETY: the helper reads the parameter with READ_ONCE.
    unsafe { rdm_param_merge_kib_per_s() }
}

/// The current time in jiffies.
pub fn jiffies() -> u64 {
    // SAFETY: reads the jiffies counter.
    unsafe { rdm_jiffies() as u64 }
}
