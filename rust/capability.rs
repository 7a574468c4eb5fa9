//! Capability checks (`include/linux/capability.h`).

use kernel::bindings;

/// Whether the current task may administer the system (`CAP_SYS_ADMIN`),
/// as every device-mapper control command requires.
pub fn capable_sys_admin() -> bool {
    // SAFETY: `capable()` only inspects the current task's credentials and
    // may be called from any process context.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
}
