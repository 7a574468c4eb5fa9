//! Module reference counting and parameters.
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
