//! Misc (character) device registration with an ioctl handler.
//!
//! Modelled on `rust/kernel/miscdevice.rs` of Linux 6.13, which 6.12 lacks.
//! The `struct miscdevice` itself lives in the C helper (`helpers.c`),
//! because 6.12's bindings do not include `<linux/miscdevice.h>`; it also
//! sets the table's owner to this module, so an open file pins the module.
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

#[allow(unused_imports, reason = "named in the documentation")]
use super::wait::PollEvent;
use super::wait::PollTable;
use core::{marker::PhantomData, mem::MaybeUninit, ptr::NonNull};
use kernel::{
    bindings,
    error::{from_err_ptr, Error, Result},
    ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void},
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};

/// The registration the C helper allocates (`struct rdm_misc`); opaque here.
#[repr(C)]
struct RdmMisc {
    _opaque: [u8; 0],
}

#[expect(
    improper_ctypes,
    reason = "`file_operations` only crosses by pointer and its layout is bindgen's"
)]
extern "C" {
    fn rdm_misc_register(
        name: *const c_char,
        nodename: *const c_char,
        minor: c_int,
        mode: bindings::umode_t,
        fops: *const bindings::file_operations,
        ctx: *mut c_void,
    ) -> *mut RdmMisc;
    fn rdm_misc_ctx(file: *mut bindings::file) -> *mut c_void;
    fn rdm_misc_deregister(misc: *mut RdmMisc);
    fn rdm_misc_minor(misc: *const RdmMisc) -> c_int;
    static rdm_misc_dynamic_minor: c_int;
}

/// Which misc minor to register at.
#[derive(Clone, Copy, Debug)]
pub enum Minor {
    /// Any free minor (`MISC_DYNAMIC_MINOR`).
    Dynamic,
    /// This minor; registration fails with `EBUSY` if it is taken.
    Fixed(u8),
}

/// Options of a misc device registration.
#[derive(Clone, Copy)]
pub struct MiscDeviceOptions {
    /// Name, also in `/proc/misc`.
    pub name: &'static CStr,
    /// Node under `/dev` (may contain a directory), or `None` for `name`.
    pub nodename: Option<&'static CStr>,
    /// The minor number to ask for.
    pub minor: Minor,
    /// Permission bits of the node (0 lets devtmpfs choose 0600).
    pub mode: u16,
}

/// A misc device's behaviour.
///
/// Each open file owns a `Ptr`; the ioctl handler borrows it. The VFS never
/// runs `ioctl` concurrently with, or after, the file's `release`.
pub trait MiscDevice: 'static {
    /// State shared by every open file, given at registration.
    type Context: Send + Sync + 'static;

    /// The per-open-file state.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called on `open()`: makes the file's state.
    fn open(ctx: ArcBorrow<'_, Self::Context>) -> Result<Self::Ptr>;

    /// Called on the file's last close, with the state `open` made.
    fn release(device: Self::Ptr) {
        drop(device);
    }

    /// Handles `ioctl(fd, cmd, arg)`; the value returned is the syscall's.
    fn ioctl(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;

    /// Handles `poll()`: registers `pt` with the wait queues to watch
    /// ([`PollEvent::poll_wait`]) and returns the events ready now
    /// (`EPOLL*` bits).
    fn poll(device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, pt: &PollTable) -> u32;
}

/// A registered misc device; dropping it deregisters the device.
///
/// # Invariants
///
/// `misc` is a live registration returned by `rdm_misc_register()` whose
/// file operations are `VTable::<T>::FOPS`; it is deregistered only by `Drop`.
pub struct MiscDeviceRegistration<T: MiscDevice> {
    misc: NonNull<RdmMisc>,
    /// The context the C side points to; outlives the registration.
    ctx: *const T::Context,
    _t: PhantomData<T>,
}

// SAFETY: the registration is only a handle: `minor()` reads a field that
// never changes after registration, and `Drop` calls misc_deregister(),
// which serializes with every other misc operation under `misc_mtx`, so it
// may happen on any thread.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> {}
// SAFETY: `&self` only allows `minor()`, a read of an immutable field.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers a misc device; its node appears in `/dev` (devtmpfs).
    pub fn register(opts: MiscDeviceOptions, ctx: Arc<T::Context>) -> Result<Self> {
        let minor = match opts.minor {
            // SAFETY: a constant the C helper defines and never writes.
            Minor::Dynamic => unsafe { rdm_misc_dynamic_minor },
            Minor::Fixed(m) => c_int::from(m),
        };
        let nodename = opts.nodename.map_or(core::ptr::null(), |n| n.as_char_ptr());
        let ctx = Arc::into_raw(ctx);
        // SAFETY: `name` and `nodename` are `'static` NUL-terminated strings
        // and `FOPS` is a `'static` table, so all outlive the registration,
        // as rdm_misc_register() requires.
        let misc = unsafe {
            rdm_misc_register(
                opts.name.as_char_ptr(),
                nodename,
                minor,
                opts.mode,
                VTable::<T>::build(),
                ctx.cast_mut().cast(),
            )
        };
        let misc = match from_err_ptr(misc) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: registration failed, so the C side kept no copy
                // of `ctx`, which came from `into_raw` above.
                drop(unsafe { Arc::from_raw(ctx) });
                return Err(e);
            }
        };
        // INVARIANT: from_err_ptr() passed it, so it is a live registration.
        let misc = NonNull::new(misc).ok_or(kernel::error::code::ENOMEM)?;
        Ok(Self {
            misc,
            ctx,
            _t: PhantomData,
        })
    }

    /// The minor number the device got.
    pub fn minor(&self) -> i32 {
        // SAFETY: by the type invariant `misc` is live until `Drop`.
        unsafe { rdm_misc_minor(self.misc.as_ptr()) }
    }
}

impl<T: MiscDevice> Drop for MiscDeviceRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `misc` is live and this is the only
        // place that deregisters it. Files still open keep their own
        // reference in the C helper, so their operations stay valid.
        unsafe { rdm_misc_deregister(self.misc.as_ptr()) };
        // SAFETY: no open can start after deregistration, and opens that
        // ran are done (misc_deregister() takes misc_mtx, which misc_open()
        // holds across our open callback); `ctx` came from `into_raw`.
        drop(unsafe { Arc::from_raw(self.ctx) });
    }
}

struct VTable<T: MiscDevice>(PhantomData<T>);

impl<T: MiscDevice> VTable<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        open: Some(fops_open::<T>),
        release: Some(fops_release::<T>),
        unlocked_ioctl: Some(fops_ioctl::<T>),
        poll: Some(fops_poll::<T>),
        // Every dm ioctl has the same layout for 32-bit callers; the
        // kernel's helper converts the pointer and calls `unlocked_ioctl`.
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: Some(bindings::compat_ptr_ioctl),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: `file_operations` is plain data: options of function
        // pointers, raw pointers and integers, for which all-zero bytes are
        // `None`, null and 0, the "not implemented" value of each field.
        ..unsafe { MaybeUninit::zeroed().assume_init() }
    };

    const fn build() -> &'static bindings::file_operations {
        &Self::FOPS
    }
}

/// # Safety
///
/// Called by the VFS (through the C helper's open wrapper) with a valid
/// `file` that no other thread can reach yet.
unsafe extern "C" fn fops_open<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: misc_open() left the miscdevice in `private_data` and the
    // registration (with its context) is live while it runs our open.
    let ctx = unsafe { ArcBorrow::from_raw(rdm_misc_ctx(file).cast::<T::Context>()) };
    match T::open(ctx) {
        Ok(device) => {
            // SAFETY: `file` is valid and not yet shared (see above); misc's
            // own use of `private_data` ended before it called us.
            unsafe { (*file).private_data = device.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the VFS once, after every other operation on `file` returned,
/// for a `file` whose `fops_open` succeeded.
unsafe extern "C" fn fops_release<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` holds what `fops_open` got from `into_foreign`,
    // and this is the last use of it, so ownership can be taken back.
    let device = unsafe { T::Ptr::from_foreign((*file).private_data) };
    T::release(device);
    0
}

/// # Safety
///
/// Called by the VFS for a `file` whose `fops_open` succeeded and whose
/// `fops_release` has not started.
unsafe extern "C" fn fops_ioctl<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: `private_data` holds what `fops_open` got from `into_foreign`
    // and `fops_release`, the only place that takes it back, cannot run
    // before this call returns, so the borrow cannot outlive the state.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    match T::ioctl(device, cmd, arg) {
        Ok(ret) => ret,
        Err(e) => Error::to_errno(e) as c_long,
    }
}

/// # Safety
///
/// Called by the VFS for a `file` whose `fops_open` succeeded and whose
/// `fops_release` has not started, with its poll table (may be NULL).
unsafe extern "C" fn fops_poll<T: MiscDevice>(
    file: *mut bindings::file,
    pt: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: as in `fops_ioctl`: release cannot run before this returns.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    T::poll(device, &PollTable { file, table: pt })
}
