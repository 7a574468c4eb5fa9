//! Module reference counting and the jiffies clock (module parameters are
//! declared with [`crate::module_param!`], in `param.rs`).

extern "C" {
    fn rdm_module_get();
    fn rdm_module_put();
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

extern "C" {
    fn rdm_jiffies() -> kernel::ffi::c_ulong;
}

/// The current time in jiffies.
pub fn jiffies() -> u64 {
    // SAFETY: reads the jiffies counter.
    unsafe { rdm_jiffies() as u64 }
}
