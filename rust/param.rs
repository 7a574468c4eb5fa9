//! Module parameters: 6.12's `module!` declares none, so [`module_param!`]
//! does what C's `module_param()` and `MODULE_PARM_DESC()` do: a
//! `struct kernel_param` in the `__param` section (the loader parses
//! `insmod` arguments and makes `/sys/module/<mod>/parameters/<name>` from
//! it) and the `parmtype=`/`parm=` strings in `.modinfo` (for `modinfo`).
//!
//! Only `uint` and `bool` parameters exist, set and shown by the kernel's own
//! `param_ops_uint` and `param_ops_bool`.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::bindings;

/// The storage of a `uint` parameter.
///
/// # Invariants
/// Written only by the kernel's `param_set_uint` (at load, or by a write to
/// the sysfs file under `kernel_param_lock`), which stores a whole
/// `unsigned int`; read here as `READ_ONCE` does.
#[repr(transparent)]
pub struct UintParam(AtomicU32);

impl UintParam {
    /// A parameter whose value is `default` until set.
    pub const fn new(default: u32) -> Self {
        UintParam(AtomicU32::new(default))
    }

    /// The current value. A parameter writable at run time may change
    /// between two calls, so read it each time it is used.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    #[doc(hidden)]
    pub const fn arg(&'static self) -> *mut kernel::ffi::c_void {
        self.0.as_ptr().cast()
    }
}

/// The storage of a `bool` parameter (same invariants as [`UintParam`],
/// written by `param_set_bool`).
#[repr(transparent)]
pub struct BoolParam(AtomicBool);

impl BoolParam {
    /// A parameter whose value is `default` until set.
    pub const fn new(default: bool) -> Self {
        BoolParam(AtomicBool::new(default))
    }

    /// The current value.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    #[doc(hidden)]
    pub const fn arg(&'static self) -> *mut kernel::ffi::c_void {
        self.0.as_ptr().cast()
    }
}

/// A `struct kernel_param` that may sit in a static.
#[doc(hidden)]
#[repr(transparent)]
pub struct KernelParam(pub bindings::kernel_param);

// SAFETY: the kernel reads the struct (never writes it); its pointers lead to
// a name and ops that are `'static` and immutable, to this module, and to a
// parameter whose storage is atomic (`UintParam`, `BoolParam`).
unsafe impl Sync for KernelParam {}

/// `s` and a NUL as a byte array of length `N` (`s.len() + 1`), for a
/// `.modinfo` string.
#[doc(hidden)]
pub const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() + 1 == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// Declares a module parameter of this (loadable) module:
///
/// ```ignore
/// kx::module_param!(pub static COW_THRESHOLD: u32 = 2048,
///     name "cow_threshold", perm 0o644, desc "Most chunk copies in progress");
/// ```
///
/// makes `COW_THRESHOLD` a [`UintParam`] (`bool` gives a [`BoolParam`])
/// named `cow_threshold` in sysfs and `insmod` arguments, with the given
/// sysfs permissions and `modinfo` description.
#[macro_export]
macro_rules! module_param {
    ($(#[$m:meta])* $vis:vis static $id:ident: u32 = $default:expr,
     name $name:literal, perm $perm:expr, desc $desc:literal) => {
        $(#[$m])*
        $vis static $id: $crate::kx::param::UintParam = $crate::kx::param::UintParam::new($default);
        $crate::module_param!(@decl $id, $name, "uint", param_ops_uint, $perm, $desc);
    };
    ($(#[$m:meta])* $vis:vis static $id:ident: bool = $default:expr,
     name $name:literal, perm $perm:expr, desc $desc:literal) => {
        $(#[$m])*
        $vis static $id: $crate::kx::param::BoolParam = $crate::kx::param::BoolParam::new($default);
        $crate::module_param!(@decl $id, $name, "bool", param_ops_bool, $perm, $desc);
    };
    (@decl $id:ident, $name:literal, $ty:literal, $ops:ident, $perm:expr, $desc:literal) => {
        const _: () = {
            const TYPE: &str = concat!("parmtype=", $name, ":", $ty);
            const DESC: &str = concat!("parm=", $name, ":", $desc);

            #[link_section = ".modinfo"]
            #[used]
            static MODINFO_TYPE: [u8; TYPE.len() + 1] = $crate::kx::param::modinfo(TYPE);

            #[link_section = ".modinfo"]
            #[used]
            static MODINFO_DESC: [u8; DESC.len() + 1] = $crate::kx::param::modinfo(DESC);

            #[link_section = "__param"]
            #[used]
            static PARAM: $crate::kx::param::KernelParam =
                $crate::kx::param::KernelParam(::kernel::bindings::kernel_param {
                    name: concat!($name, "\0").as_ptr().cast(),
                    mod_: &raw mut ::kernel::bindings::__this_module,
                    ops: &raw const ::kernel::bindings::$ops,
                    perm: $perm,
                    level: -1,
                    flags: 0,
                    __bindgen_anon_1: ::kernel::bindings::kernel_param__bindgen_ty_1 {
                        arg: $id.arg(),
                    },
                });
        };
    };
}
