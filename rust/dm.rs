//! Targets of the kernel's device-mapper (dm-mod), for `rdm-dm.ko`: the
//! second host of rdm's snapshot engine. Only that module compiles this
//! file (its crate root mounts it); `rdm.ko` never links against dm-mod.
//!
//! - [`TypeRegistration`]: a target type registered with dm under a name,
//!   whose targets a [`DmConstructor`] builds;
//! - [`DmTarget`]: what a built target does when dm calls it (map, status,
//!   message, suspend hooks);
//! - [`TargetCtx`]: the `struct dm_target` being built (its length, mode,
//!   the devices it opens through `dm_get_device`, its event object);
//! - [`MdEvents`]: raises dm events (`dm_table_event`) on a mapped device,
//!   from any context.
//!
//! The C side is `rust/dm/target.c`: the `struct target_type`s and their
//! callbacks, which forward to the `rdm_dm_rust_*` functions here.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

use crate::kx::block::{BdevFile, Bio};
use crate::kx::wait::EventSink;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::{from_err_ptr, to_result};
use kernel::ffi::{c_char, c_int, c_uint};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

/// `struct dm_target` (not in 6.12's bindings), only ever behind a pointer.
type RawTarget = c_void;

/// `struct rdm_dm_events` (rust/dm/target.c), only ever behind a pointer.
type RawEvents = c_void;

#[allow(
    improper_ctypes,
    reason = "kernel structs only cross by pointer; their layout is bindgen's"
)]
extern "C" {
    fn rdm_dm_register(
        kind: c_uint,
        name: *const c_char,
        version: *const u32,
        ctx: *mut c_void,
    ) -> c_int;
    fn rdm_dm_unregister(kind: c_uint);
    fn rdm_dm_events_init() -> c_int;
    fn rdm_dm_events_exit();
    fn rdm_dm_events_get(ev: *mut RawEvents);
    fn rdm_dm_events_put(ev: *mut RawEvents);
    fn rdm_dm_events_kick(ev: *mut RawEvents);
    fn rdm_dm_ti_events(ti: *mut RawTarget) -> *mut RawEvents;
    fn rdm_dm_get_device(ti: *mut RawTarget, path: *const c_char) -> *mut bindings::file;
    fn rdm_dm_ti_len(ti: *mut RawTarget) -> u64;
    fn rdm_dm_ti_begin(ti: *mut RawTarget) -> u64;
    fn rdm_dm_ti_read_only(ti: *mut RawTarget) -> bool;
    fn rdm_dm_ti_device_name(ti: *mut RawTarget) -> *const c_char;
    fn rdm_dm_ti_set_max_io_len(ti: *mut RawTarget, sectors: u64) -> c_int;
}

/// A target built by a [`DmConstructor`]: dm calls it for the bios and
/// requests of its table.
pub trait DmTarget: Send + Sync {
    /// Maps `bio`, which lies inside the target; `offset` is its first
    /// sector relative to the target's start. The target ends or submits
    /// it, now or later (dm counts it in flight until it ends).
    fn map(&self, bio: Bio, offset: u64);

    /// The status line (`STATUSTYPE_INFO`).
    fn status(&self, out: &mut dyn Write) -> fmt::Result;

    /// The table line's parameters (`STATUSTYPE_TABLE`).
    fn table(&self, out: &mut dyn Write) -> fmt::Result;

    /// A target message: `None` if the target takes no such message,
    /// else its outcome, with any answer written to `out`.
    fn message(&self, msg: &[u8], out: &mut dyn Write) -> Option<Result>;

    /// dm's `presuspend`.
    fn presuspend(&self);

    /// dm's `resume`, and `presuspend_undo` (a suspend that failed).
    fn resume(&self);
}

/// Builds targets of one type.
pub trait DmConstructor: Send + Sync {
    /// Builds a target from its table line's parameters (dm has split
    /// them at spaces; they come back joined by one space).
    fn construct(&self, ti: &TargetCtx<'_>, params: &[u8]) -> Result<Arc<dyn DmTarget>>;
}

/// The target being built (`struct dm_target`, during its constructor).
///
/// # Invariants
///
/// `ti` is the target whose constructor is running, with its
/// `rdm_dm_ctx` set up (rust/dm/target.c), for the lifetime `'a`.
pub struct TargetCtx<'a> {
    ti: NonNull<RawTarget>,
    _call: PhantomData<&'a ()>,
}

impl TargetCtx<'_> {
    /// Length in sectors.
    pub fn len(&self) -> u64 {
        // SAFETY: the target is live (invariant).
        unsafe { rdm_dm_ti_len(self.ti.as_ptr()) }
    }

    /// Whether the length is 0 (dm refuses such targets before this).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// First sector in the mapped device.
    pub fn begin(&self) -> u64 {
        // SAFETY: the target is live (invariant).
        unsafe { rdm_dm_ti_begin(self.ti.as_ptr()) }
    }

    /// Whether the table is read-only (devices are opened so).
    pub fn read_only(&self) -> bool {
        // SAFETY: the target is live (invariant).
        unsafe { rdm_dm_ti_read_only(self.ti.as_ptr()) }
    }

    /// The mapped device's name, for log lines (dm's `major:minor`).
    pub fn device_name(&self) -> &CStr {
        // SAFETY: the target and its table are live (invariant); the name
        // is the mapped device's, which outlives its tables, and is a
        // NUL-terminated string.
        unsafe { CStr::from_char_ptr(rdm_dm_ti_device_name(self.ti.as_ptr())) }
    }

    /// Opens the device `path` (`major:minor` or a path) for this target
    /// through dm: one claim per mapped device, in the table's device
    /// list. The file may outlive the target.
    pub fn get_device(&self, path: &CStr) -> Result<BdevFile> {
        // SAFETY: the target is being built (invariant); `path` is a valid
        // NUL-terminated string for the call.
        let f = unsafe { rdm_dm_get_device(self.ti.as_ptr(), path.as_char_ptr()) };
        let f = from_err_ptr(f)?;
        // SAFETY: rdm_dm_get_device() returned a new reference to an open
        // block device file (get_file), which passes to the BdevFile.
        unsafe { BdevFile::from_owned_file(f) }
    }

    /// No bio dm hands the target crosses a multiple of `sectors` from its
    /// start (a snapshot's chunks).
    pub fn set_max_io_len(&self, sectors: u64) -> Result {
        // SAFETY: the target is being built (invariant).
        to_result(unsafe { rdm_dm_ti_set_max_io_len(self.ti.as_ptr(), sectors) })
    }

    /// The mapped device's event object.
    pub fn events(&self) -> MdEvents {
        // SAFETY: the target is being built (invariant), so its context
        // holds an event object; the call takes a reference for us.
        let ev = unsafe { rdm_dm_ti_events(self.ti.as_ptr()) };
        // INVARIANT: a new reference, from the call above.
        MdEvents {
            // SAFETY: the context's event object is never null.
            ev: unsafe { NonNull::new_unchecked(ev) },
        }
    }
}

/// Raises dm events on one mapped device (`dm_table_event` on its live
/// table, from a work item): `dmsetup wait`, dmeventd and `DM_DEV_ARM_POLL`
/// see them.
///
/// # Invariants
///
/// `ev` is an `rdm_dm_events` of which this value holds one reference.
pub struct MdEvents {
    ev: NonNull<RawEvents>,
}

// SAFETY: the object is reference counted and locked in C; kicking it is
// allowed from any context and thread.
unsafe impl Send for MdEvents {}
// SAFETY: as above.
unsafe impl Sync for MdEvents {}

impl Clone for MdEvents {
    fn clone(&self) -> Self {
        // SAFETY: we hold a reference (invariant).
        unsafe { rdm_dm_events_get(self.ev.as_ptr()) };
        // INVARIANT: taken above.
        MdEvents { ev: self.ev }
    }
}

impl Drop for MdEvents {
    fn drop(&mut self) {
        // SAFETY: we hold a reference (invariant); putting the last one
        // only frees memory, which is allowed in any context.
        unsafe { rdm_dm_events_put(self.ev.as_ptr()) };
    }
}

impl EventSink for MdEvents {
    fn event(&self) {
        // SAFETY: we hold a reference (invariant); the kick queues work
        // with a reference of its own, from any context.
        unsafe { rdm_dm_events_kick(self.ev.as_ptr()) };
    }
}

/// The module's event work queue: made before the first type is
/// registered, destroyed (after its work) once no event object can be
/// kicked, i.e. after every target and every snapshot is gone.
pub struct EventQueue(());

impl EventQueue {
    /// Makes the queue.
    pub fn new() -> Result<Self> {
        // SAFETY: called once, at module load, before any registration.
        to_result(unsafe { rdm_dm_events_init() })?;
        Ok(EventQueue(()))
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        // SAFETY: made by `new`; the owner drops it last (see the type).
        unsafe { rdm_dm_events_exit() };
    }
}

/// The kinds of target type rust/dm/target.c has slots for.
pub const TYPE_SLOTS: u32 = 3;

/// A target type registered with dm (`dm_register_target`) until dropped.
///
/// # Invariants
///
/// Slot `kind` of rust/dm/target.c is registered with `ctr` as its
/// context; `ctr` came from `KBox::into_raw` and is freed only by `Drop`,
/// after the type is unregistered.
pub struct TypeRegistration {
    kind: u32,
    ctr: *mut Arc<dyn DmConstructor>,
}

// SAFETY: the constructor is `Send + Sync`; unregistering may happen from
// any process context.
unsafe impl Send for TypeRegistration {}
// SAFETY: `&self` gives access to nothing.
unsafe impl Sync for TypeRegistration {}

impl TypeRegistration {
    /// Registers slot `kind` (< [`TYPE_SLOTS`], each used once) as `name`,
    /// dm's `version`, built by `ctr`. EBUSY: dm has a type of that name.
    pub fn new(
        kind: u32,
        name: &'static CStr,
        version: [u32; 3],
        ctr: Arc<dyn DmConstructor>,
    ) -> Result<Self> {
        if kind >= TYPE_SLOTS {
            return Err(EINVAL);
        }
        let ctr = KBox::into_raw(KBox::new(ctr, GFP_KERNEL)?);
        // SAFETY: `name` is static, as dm keeps it; `version` is copied for
        // the call; `ctr`
        // is a live box that outlives the registration (freed by Drop
        // after unregistering, or below on failure).
        let r = unsafe { rdm_dm_register(kind, name.as_char_ptr(), version.as_ptr(), ctr.cast()) };
        if let Err(e) = to_result(r) {
            // SAFETY: from KBox::into_raw above; dm did not keep it.
            drop(unsafe { KBox::from_raw(ctr) });
            return Err(e);
        }
        // INVARIANT: registered with `ctr` above.
        Ok(TypeRegistration { kind, ctr })
    }
}

impl Drop for TypeRegistration {
    fn drop(&mut self) {
        // SAFETY: registered (invariant). No table uses the type: each
        // holds a reference on this module, which is being unloaded or
        // never finished loading.
        unsafe { rdm_dm_unregister(self.kind) };
        // SAFETY: from KBox::into_raw (invariant); dm no longer calls the
        // constructor.
        drop(unsafe { KBox::from_raw(self.ctr) });
    }
}

/// What `ti->private`'s context keeps for Rust: the built target.
type Built = Arc<dyn DmTarget>;

/// dm's constructor for a type registered by [`TypeRegistration::new`].
///
/// # Safety
///
/// `ctr` is the registration's constructor box; `ti` is the target being
/// built, with its context set up; `line` points to `len` bytes;
/// `target` is writable.
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_ctr(
    ctr: *mut c_void,
    ti: *mut RawTarget,
    line: *const u8,
    len: usize,
    target: *mut *mut c_void,
) -> c_int {
    // SAFETY: the registration's box, live while the type is registered
    // (which it is while dm builds a target of it).
    let ctr = unsafe { &*ctr.cast::<Arc<dyn DmConstructor>>() };
    // SAFETY: `line` points to `len` bytes for the call (caller).
    let params = unsafe { core::slice::from_raw_parts(line, len) };
    // INVARIANT: `ti` is being built and outlives the call (caller).
    let tctx = TargetCtx {
        // SAFETY: dm passes a live target.
        ti: unsafe { NonNull::new_unchecked(ti) },
        _call: PhantomData,
    };
    match ctr
        .construct(&tctx, params)
        .and_then(|t| Ok(KBox::new(t, GFP_KERNEL)?))
    {
        Ok(b) => {
            // SAFETY: writable (caller).
            unsafe { *target = KBox::into_raw(b).cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Borrows the target built for `t`.
///
/// # Safety
///
/// `t` is what `rdm_dm_rust_ctr` stored, not yet passed to
/// `rdm_dm_rust_dtr`.
unsafe fn built<'a>(t: *mut c_void) -> &'a Built {
    // SAFETY: a live box of `Built` (caller).
    unsafe { &*t.cast::<Built>() }
}

/// # Safety
///
/// `t` is what `rdm_dm_rust_ctr` stored; dm calls nothing else of the
/// target after this.
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_dtr(t: *mut c_void) {
    // SAFETY: from KBox::into_raw in rdm_dm_rust_ctr, dropped once here.
    drop(unsafe { KBox::from_raw(t.cast::<Built>()) });
}

/// # Safety
///
/// `t` is a live target (see [`built`]); dm hands over `bio`.
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_map(t: *mut c_void, bio: *mut bindings::bio, offset: u64) {
    // SAFETY: dm gives the bio to the target, which returns SUBMITTED: it
    // is ours to end or submit.
    let bio = unsafe { Bio::from_raw(bio) };
    // SAFETY: live (caller).
    unsafe { built(t) }.map(bio, offset);
}

/// A status or message answer in dm's buffer: truncated as `DMEMIT`
/// does, and then filled up, so that dm sees `DM_BUFFER_FULL_FLAG` and
/// dmsetup asks again with more room.
struct Answer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Answer<'_> {
    /// Ends the text with a NUL (the buffer has room for it).
    fn finish(self) {
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = 0;
        }
    }
}

impl Write for Answer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(1) - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            // Full: strlen(result) + 1 == maxlen tells dm so.
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Wraps dm's result buffer.
///
/// # Safety
///
/// `buf` is writable for `maxlen` bytes for `'a`, and `maxlen` > 0.
unsafe fn answer<'a>(buf: *mut c_char, maxlen: c_uint) -> Answer<'a> {
    Answer {
        // SAFETY: as the caller says.
        buf: unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), maxlen as usize) },
        len: 0,
    }
}

/// # Safety
///
/// `t` is a live target (see [`built`]); `buf` is dm's result buffer of
/// `maxlen` (> 0) bytes.
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_status(
    t: *mut c_void,
    table: bool,
    buf: *mut c_char,
    maxlen: c_uint,
) {
    if maxlen == 0 {
        return;
    }
    // SAFETY: as the caller says.
    let mut out = unsafe { answer(buf, maxlen) };
    // SAFETY: live (caller).
    let t = unsafe { built(t) };
    // A truncated answer is what dm's DMEMIT gives too.
    let _ = if table {
        t.table(&mut out)
    } else {
        t.status(&mut out)
    };
    out.finish();
}

/// dm's message callback: a negative errno, 0 (done, no answer) or 1 (an
/// answer in `buf`).
///
/// # Safety
///
/// `t` is a live target (see [`built`]); `msg` points to `len` bytes;
/// `buf` is dm's result buffer of `maxlen` bytes.
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_message(
    t: *mut c_void,
    msg: *const u8,
    len: usize,
    buf: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    if maxlen == 0 {
        return ENOSPC.to_errno();
    }
    // SAFETY: `len` bytes (caller).
    let msg = unsafe { core::slice::from_raw_parts(msg, len) };
    // SAFETY: as the caller says.
    let mut out = unsafe { answer(buf, maxlen) };
    // SAFETY: live (caller).
    let r = unsafe { built(t) }.message(msg, &mut out);
    let answered = out.len > 0;
    out.finish();
    match r {
        None => EINVAL.to_errno(),
        Some(Err(e)) => e.to_errno(),
        Some(Ok(())) => c_int::from(answered),
    }
}

/// # Safety
///
/// `t` is a live target (see [`built`]).
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_presuspend(t: *mut c_void) {
    // SAFETY: live (caller).
    unsafe { built(t) }.presuspend();
}

/// # Safety
///
/// `t` is a live target (see [`built`]).
#[no_mangle]
unsafe extern "C" fn rdm_dm_rust_resume(t: *mut c_void) {
    // SAFETY: live (caller).
    unsafe { built(t) }.resume();
}
