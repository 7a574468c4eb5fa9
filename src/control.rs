// SPDX-License-Identifier: GPL-2.0

//! The control device: the device-mapper ioctl ABI, version 4.
//!
//! Mirrors `ctl_ioctl()` of `drivers/md/dm-ioctl.c`: permission, ioctl
//! type, the version handshake (which also writes rdm's version back), then
//! the command lookup, one bounded copy of the caller's buffer, the command,
//! and one copy of the result back. No lock is held while user memory is
//! touched: commands work on the kernel copy.

use crate::device::{DeviceEnv, LastClose, MappedDevice, Name, Tables, NAME_MAX, UUID_MAX};
use crate::kx::block::Uevent;
use crate::kx::capability::capable_sys_admin;
use crate::kx::miscdevice::{Minor, MiscDevice, MiscDeviceOptions, MiscDeviceRegistration};
use crate::kx::wait::{PollEvent, PollTable, EPOLLIN};
use crate::kx::workqueue::OwnedQueue;
use crate::rdm_core::dm_ioctl::{
    self, c_str, check_data_size, check_version, decode_dev, decode_version, encode_version,
    Command, Header, ParamError, HEADER_SIZE, VERSION, VERSION_BYTES,
};
use crate::rdm_core::payload::{payload_str, ByteWriter, ResultWriter, TargetMsg};
use crate::rdm_core::table::valid_name;
use crate::table::{LoadCtx, Table, TableArc};
use crate::target::{BStr, TargetTypes};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};
use dm_ioctl::sys::{
    DM_ACTIVE_PRESENT_FLAG, DM_BUFFER_FULL_FLAG, DM_DATA_OUT_FLAG, DM_DEFERRED_REMOVE,
    DM_IMA_MEASUREMENT_FLAG, DM_INACTIVE_PRESENT_FLAG, DM_NOFLUSH_FLAG, DM_PERSISTENT_DEV_FLAG,
    DM_QUERY_INACTIVE_TABLE_FLAG, DM_READONLY_FLAG, DM_SECURE_DATA_FLAG, DM_SKIP_LOCKFS_FLAG,
    DM_STATUS_TABLE_FLAG, DM_SUSPEND_FLAG, DM_UEVENT_GENERATED_FLAG, DM_UUID_FLAG,
};
use kernel::c_str;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::uaccess::UserSlice;

/// The registered control device.
pub(crate) struct ControlDevice {
    _misc: MiscDeviceRegistration<Control>,
}

impl ControlDevice {
    /// Registers the control device: `/dev/rdm-control`, or in dm_compat
    /// mode misc 10:236 `device-mapper` at `/dev/mapper/control`.
    pub(crate) fn register(registry: Arc<Registry>, compat: bool) -> Result<Self> {
        let opts = if compat {
            MiscDeviceOptions {
                name: c_str!("device-mapper"),
                nodename: Some(c_str!("mapper/control")),
                minor: Minor::Fixed(236),
                mode: 0o600,
            }
        } else {
            MiscDeviceOptions {
                name: c_str!("rdm-control"),
                nodename: None,
                minor: Minor::Dynamic,
                mode: 0o600,
            }
        };
        let misc = MiscDeviceRegistration::register(opts, registry).inspect_err(|e| {
            if compat && *e == EBUSY {
                pr_err!("dm_compat=1: misc minor 236 is taken: the kernel's dm-mod is loaded (unload it, or load rdm without dm_compat)\n");
            }
        })?;
        Ok(ControlDevice { _misc: misc })
    }
}

/// An open control file.
pub(crate) struct ControlFile {
    registry: Arc<Registry>,
    /// The global event number this file last armed (DM_DEV_ARM_POLL).
    armed_event: AtomicU32,
}

struct Control;

impl MiscDevice for Control {
    type Context = Registry;
    type Ptr = Arc<ControlFile>;

    fn open(registry: ArcBorrow<'_, Registry>) -> Result<Arc<ControlFile>> {
        let registry: Arc<Registry> = registry.into();
        let armed = registry.global_event.get();
        Ok(Arc::new(
            ControlFile {
                registry,
                armed_event: AtomicU32::new(armed),
            },
            GFP_KERNEL,
        )?)
    }

    fn ioctl(file: ArcBorrow<'_, ControlFile>, request: u32, arg: usize) -> Result<isize> {
        ctl_ioctl(&file, request, arg)?;
        Ok(0)
    }

    /// As dm's `dm_poll()`: readable once the global event number moved
    /// on since the file's last DM_DEV_ARM_POLL (or its open).
    fn poll(file: ArcBorrow<'_, ControlFile>, pt: &PollTable) -> u32 {
        let ev = &file.registry.global_event;
        ev.poll_wait(pt);
        let armed = file.armed_event.load(Ordering::Acquire);
        if (ev.get().wrapping_sub(armed) as i32) > 0 {
            EPOLLIN
        } else {
            0
        }
    }
}

/// A request's buffer, copied in once after its header was checked.
struct Params {
    /// The header as received; commands update it for the reply.
    header: Header,
    /// The whole buffer (`data_size` bytes), header included.
    buf: KVVec<u8>,
}

fn ctl_ioctl(file: &ControlFile, request: u32, arg: usize) -> Result {
    if !capable_sys_admin() {
        return Err(EACCES);
    }
    if dm_ioctl::request_type(request) != dm_ioctl::sys::DM_IOCTL {
        pr_err!("ioctl 0x{request:x} is not a device-mapper ioctl\n");
        return Err(ENOTTY);
    }
    let version = exchange_version(arg)?;
    let nr = dm_ioctl::request_nr(request);
    let Some(cmd) = Command::from_nr(nr) else {
        pr_err!("unknown device-mapper command 0x{request:x}\n");
        return Err(ENOTTY);
    };
    if cmd == Command::Version {
        return Ok(());
    }
    let mut params = copy_params(arg, version)?;
    validate_params(cmd, &mut params.header)?;
    // dm-ioctl.c: a reply is the header alone unless a command writes more.
    params.header.data_size = HEADER_SIZE as u32;
    dispatch(file, cmd, &mut params)?;
    let size = (params.header.data_size as usize).min(params.buf.len());
    params.header.encode(&mut params.buf).ok_or(EINVAL)?;
    UserSlice::new(arg, size)
        .writer()
        .write_slice(&params.buf[..size])
}

/// The version handshake of dm's `check_version()`: reads the caller's
/// version, writes rdm's back whatever it was, and refuses a mismatch.
fn exchange_version(arg: usize) -> Result<[u32; 3]> {
    let (mut reader, mut writer) = UserSlice::new(arg, VERSION_BYTES).reader_writer();
    let mut bytes = [0u8; VERSION_BYTES];
    reader.read_slice(&mut bytes)?;
    let user = decode_version(&bytes);
    writer.write_slice(&encode_version(VERSION))?;
    check_version(user).map_err(reject)?;
    Ok(user)
}

/// Reads the header, checks `data_size`, then copies the rest of the
/// buffer: each byte of user memory is read exactly once, and the version
/// checked by [`exchange_version`] is the one kept.
fn copy_params(arg: usize, version: [u32; 3]) -> Result<Params> {
    let mut reader = UserSlice::new(arg, usize::MAX).reader();
    let mut head = [0u8; HEADER_SIZE];
    reader.read_slice(&mut head)?;
    let mut header = Header::decode(&head).ok_or(EINVAL)?;
    header.version = version;
    check_data_size(header.data_size).map_err(reject)?;
    let size = header.data_size as usize;
    let mut buf = KVVec::from_elem(0u8, size, GFP_KERNEL)?;
    buf[..HEADER_SIZE].copy_from_slice(&head);
    reader.read_slice(&mut buf[HEADER_SIZE..])?;
    Ok(Params { header, buf })
}

/// Logs why a request was refused; every such refusal is `EINVAL`.
fn reject(e: ParamError) -> Error {
    pr_err!("{e}\n");
    EINVAL
}

/// dm-ioctl.c's `validate_params()`: output-only flags are cleared; a
/// command that names a device names it by name or by uuid, not both; and
/// (stricter than dm, which truncates) both fields must hold a NUL.
fn validate_params(cmd: Command, h: &mut Header) -> Result {
    h.flags &=
        !(DM_BUFFER_FULL_FLAG | DM_UEVENT_GENERATED_FLAG | DM_SECURE_DATA_FLAG | DM_DATA_OUT_FLAG);
    if matches!(
        cmd,
        Command::RemoveAll | Command::ListDevices | Command::ListVersions
    ) {
        return Ok(());
    }
    if c_str(&h.name).is_none() || c_str(&h.uuid).is_none() {
        pr_err!("{}: device name or uuid not NUL-terminated\n", cmd.name());
        return Err(EINVAL);
    }
    let (name, uuid) = (name_of(h), uuid_of(h));
    if cmd == Command::DevCreate {
        if name.is_empty() {
            pr_err!("name not supplied when creating device\n");
            return Err(EINVAL);
        }
    } else if !name.is_empty() && !uuid.is_empty() && cmd != Command::GetTargetVersion {
        pr_err!("{}: only supply one of name or uuid\n", cmd.name());
        return Err(EINVAL);
    }
    Ok(())
}

fn name_of(h: &Header) -> &[u8] {
    c_str(&h.name).unwrap_or(&[])
}

fn uuid_of(h: &Header) -> &[u8] {
    c_str(&h.uuid).unwrap_or(&[])
}

fn key_of(h: &Header) -> Result<Key<'_>> {
    match (name_of(h), uuid_of(h)) {
        ([], []) if h.dev != 0 => Ok(Key::Dev(h.dev)),
        ([], []) => {
            pr_err!("no device name, uuid or number given\n");
            Err(EINVAL)
        }
        ([], uuid) => Ok(Key::Uuid(uuid)),
        (name, _) => Ok(Key::Name(name)),
    }
}

fn dispatch(file: &ControlFile, cmd: Command, p: &mut Params) -> Result {
    let reg = &file.registry;
    match cmd {
        Command::Version => Ok(()),
        Command::RemoveAll => remove_all(reg, p),
        Command::ListDevices => list_devices(reg, p),
        Command::DevCreate => dev_create(reg, p),
        Command::DevRemove => dev_remove(reg, p),
        Command::DevRename => dev_rename(reg, p),
        Command::DevSuspend => dev_suspend(reg, p),
        Command::DevStatus => {
            let (md, name, uuid) = lookup(reg, &p.header)?;
            report(&md, &name, &uuid, &mut p.header)
        }
        Command::DevWait => dev_wait(reg, p),
        Command::TableLoad => table_load(reg, p),
        Command::TableClear => table_clear(reg, p),
        Command::TableDeps => table_deps(reg, p),
        Command::TableStatus => table_status(reg, p),
        Command::ListVersions | Command::GetTargetVersion => list_versions(reg, p, cmd),
        Command::TargetMsg => target_msg(reg, p),
        Command::DevArmPoll => {
            let now = reg.global_event.get();
            file.armed_event.store(now, Ordering::Release);
            Ok(())
        }
        Command::DevSetGeometry => {
            pr_err!("DM_DEV_SET_GEOMETRY is not supported\n");
            Err(ENOTTY)
        }
    }
}

/// Fills the header with a device's state, as dm's `__dev_status()`.
fn dev_status(md: &MappedDevice, t: &Tables, name: &Name, uuid: &Name, h: &mut Header) {
    h.flags &= !(DM_SUSPEND_FLAG
        | DM_READONLY_FLAG
        | DM_ACTIVE_PRESENT_FLAG
        | DM_INACTIVE_PRESENT_FLAG
        | DM_DEFERRED_REMOVE);
    if md.deferred_remove() {
        h.flags |= DM_DEFERRED_REMOVE;
    }
    if t.suspended {
        h.flags |= DM_SUSPEND_FLAG;
    }
    h.dev = md.devt;
    h.open_count = md.open_count();
    h.event_nr = md.event_nr();
    h.target_count = 0;
    let query_inactive = h.flags & DM_QUERY_INACTIVE_TABLE_FLAG != 0;
    if let Some(a) = &t.active {
        h.flags |= DM_ACTIVE_PRESENT_FLAG;
        if !query_inactive {
            h.target_count = a.entries.len() as u32;
        }
    }
    if md.read_only || t.active.as_ref().is_some_and(|a| a.read_only) {
        h.flags |= DM_READONLY_FLAG;
    }
    if let Some(i) = &t.inactive {
        h.flags |= DM_INACTIVE_PRESENT_FLAG;
        if query_inactive {
            h.target_count = i.entries.len() as u32;
        }
    }
    let _ = dm_ioctl::set_c_str(&mut h.name, name.as_bytes());
    let _ = dm_ioctl::set_c_str(&mut h.uuid, uuid.as_bytes());
}

/// Reports a device's status in the header (ENXIO if it was removed).
/// Takes only the device's `tables` lock, never the lock a suspend holds
/// while it waits for I/O.
fn report(md: &MappedDevice, name: &Name, uuid: &Name, h: &mut Header) -> Result {
    md.query(|t| {
        dev_status(md, t, name, uuid, h);
        Ok(())
    })
}

/// Runs the query `f` on a device's tables (under its `tables` lock, so
/// `f` must not wait for I/O), then reports its status in the header.
fn with_tables(
    md: &MappedDevice,
    name: &Name,
    uuid: &Name,
    p: &mut Params,
    f: impl FnOnce(&Tables, &mut Params) -> Result,
) -> Result {
    md.query(|t| {
        f(t, p)?;
        dev_status(md, t, name, uuid, &mut p.header);
        Ok(())
    })
}

/// Looks a device up. A device that does not exist is ENXIO with a debug
/// line only, as dm (`DMDEBUG_LIMIT`): user space asks whether devices
/// exist all the time (LVM2 before every activation), and that is no
/// error.
fn lookup(reg: &Registry, h: &Header) -> Result<(Arc<MappedDevice>, Name, Name)> {
    let key = key_of(h)?;
    reg.get(&key).inspect_err(|_| match key {
        Key::Name(n) => pr_debug!("device {} doesn't exist\n", BStr(n)),
        Key::Uuid(u) => pr_debug!("device with uuid {} doesn't exist\n", BStr(u)),
        Key::Dev(d) => {
            let (ma, mi) = decode_dev(d);
            pr_debug!("device {ma}:{mi} doesn't exist\n")
        }
    })
}

/// EOPNOTSUPP (6.12's `kernel::error::code` lacks it).
fn eopnotsupp() -> Error {
    Error::from_errno(-(kernel::bindings::EOPNOTSUPP as i32))
}

fn checked_name(s: &[u8], max: usize, what: &str) -> Result<Name> {
    if !valid_name(s) {
        pr_err!(
            "invalid device {what} \"{}\": must be printable, without '/', not . or ..\n",
            BStr(s)
        );
        return Err(EINVAL);
    }
    Name::new(s, max).ok_or_else(|| {
        pr_err!("device {what} longer than {max} characters\n");
        EINVAL
    })
}

fn dev_create(reg: &Arc<Registry>, p: &mut Params) -> Result {
    let h = &p.header;
    let name = checked_name(name_of(h), NAME_MAX, "name")?;
    if name.as_bytes() == b"control" {
        pr_err!("device name cannot be \"control\"\n");
        return Err(EINVAL);
    }
    let uuid = match uuid_of(h) {
        [] => Name::EMPTY,
        u => checked_name(u, UUID_MAX, "uuid")?,
    };
    let want_minor = (h.flags & DM_PERSISTENT_DEV_FLAG != 0).then(|| decode_dev(h.dev).1);
    let read_only = h.flags & DM_READONLY_FLAG != 0;
    let md = reg.create(name, uuid, want_minor, read_only)?;
    report(&md, &name, &uuid, &mut p.header)
}

fn dev_remove(reg: &Registry, p: &mut Params) -> Result {
    let key = key_of(&p.header)?;
    // The udev cookie (libdevmapper's, or 0) comes in `event_nr`, as dm.
    let cookie = p.header.event_nr;
    match reg.remove(&key, Some(cookie)) {
        Ok((md, name, uuid, sent)) => {
            p.header.event_nr = md.event_nr();
            let _ = dm_ioctl::set_c_str(&mut p.header.name, name.as_bytes());
            let _ = dm_ioctl::set_c_str(&mut p.header.uuid, uuid.as_bytes());
            if sent {
                p.header.flags |= DM_UEVENT_GENERATED_FLAG;
            }
            Ok(())
        }
        Err(e) if e == EBUSY && p.header.flags & DM_DEFERRED_REMOVE != 0 => {
            // As dm: an open device is removed on its last close.
            let (md, name, uuid) = lookup(reg, &p.header)?;
            if !md.set_deferred_remove(true) {
                // Closed meanwhile: try again now.
                return dev_remove(reg, p);
            }
            report(&md, &name, &uuid, &mut p.header)
        }
        Err(e) if e == EBUSY => {
            pr_err!("unable to remove open device\n");
            Err(EBUSY)
        }
        Err(e) => {
            lookup(reg, &p.header)?;
            Err(e)
        }
    }
}

/// As dm's `dm_hash_remove_all()`: removes every device no one has open,
/// over and over while that makes progress (a device may have held
/// another open); with DM_DEFERRED_REMOVE, an open device is marked to go
/// on its last close. No teardown runs under the registry lock. A device
/// held open by another rdm device's table (a snapshot's COW device) may
/// still stay: that table's close of it runs when this call returns to
/// user space (fput), so dmsetup and rdmsetup repeat the call.
fn remove_all(reg: &Registry, p: &mut Params) -> Result {
    let deferred = p.header.flags & DM_DEFERRED_REMOVE != 0;
    loop {
        let mut names = KVec::new();
        for e in reg.devices.lock().iter().flatten() {
            names.push(e.name, GFP_KERNEL)?;
        }
        let (mut progress, mut left) = (false, 0u32);
        for name in names.iter() {
            let key = Key::Name(name.as_bytes());
            match reg.remove(&key, None) {
                Ok(_) => progress = true,
                Err(e) if e == EBUSY => {
                    left += 1;
                    if deferred {
                        if let Ok((md, _, _)) = reg.get(&key) {
                            // Closed meanwhile: the next pass removes it.
                            progress |= !md.set_deferred_remove(true);
                        }
                    }
                }
                // Removed or renamed meanwhile.
                Err(_) => {}
            }
        }
        if !progress {
            if left > 0 {
                pr_warn!("remove_all left {left} open device(s)\n");
            }
            return Ok(());
        }
    }
}

fn list_devices(reg: &Registry, p: &mut Params) -> Result {
    let with_uuid = p.header.flags & DM_UUID_FLAG != 0;
    let devices = reg.devices.lock();
    let mut w = ResultWriter::new(&mut p.buf);
    if devices.iter().flatten().next().is_none() {
        w.empty_name_list();
    }
    for e in devices.iter().flatten() {
        // No device lock: a suspend may hold its suspend_lock while I/O
        // drains, and the registry lock must never wait for that.
        let devt = e.md.devt;
        let uuid = (!e.uuid.is_empty()).then(|| e.uuid.as_bytes());
        if !w.name_entry(devt, e.name.as_bytes(), e.md.event_nr(), uuid, with_uuid) {
            break;
        }
    }
    finish(&mut p.header, &w);
    Ok(())
}

/// Records a result's size, or that it did not fit.
fn finish(h: &mut Header, w: &ResultWriter<'_>) {
    h.data_start = crate::rdm_core::payload::RESULT_START as u32;
    if w.full() {
        h.flags |= DM_BUFFER_FULL_FLAG;
    } else {
        h.data_size = w.used() as u32;
    }
}

fn dev_rename(reg: &Registry, p: &mut Params) -> Result {
    let set_uuid = p.header.flags & DM_UUID_FLAG != 0;
    let new = payload_str(&p.buf, p.header.data_start).map_err(|e| {
        pr_err!("DM_DEV_RENAME: new name: {e}\n");
        EINVAL
    })?;
    let new = if set_uuid {
        checked_name(new, UUID_MAX, "uuid")?
    } else {
        checked_name(new, NAME_MAX, "name")?
    };
    let key = key_of(&p.header)?;
    let cookie = p.header.event_nr;
    let what = if set_uuid {
        Renamed::Uuid
    } else {
        Renamed::Name
    };
    let (md, name, uuid) = reg.rename(&key, new, what)?;
    // As dm: a change uevent with the caller's udev cookie.
    let sent = md.uevent(Uevent::Change, cookie);
    report(&md, &name, &uuid, &mut p.header)?;
    if sent {
        p.header.flags |= DM_UEVENT_GENERATED_FLAG;
    }
    Ok(())
}

fn dev_suspend(reg: &Registry, p: &mut Params) -> Result {
    let suspend = p.header.flags & DM_SUSPEND_FLAG != 0;
    // As dm: freeze the filesystem unless told to skip it or not to flush.
    let lockfs = p.header.flags & (DM_SKIP_LOCKFS_FLAG | DM_NOFLUSH_FLAG) == 0;
    let (md, name, uuid) = lookup(reg, &p.header)?;
    let cookie = p.header.event_nr;
    let sent = if suspend {
        md.suspend(lockfs)?;
        false
    } else {
        md.resume(lockfs, cookie)?
    };
    report(&md, &name, &uuid, &mut p.header)?;
    if sent {
        p.header.flags |= DM_UEVENT_GENERATED_FLAG;
    }
    Ok(())
}

fn dev_wait(reg: &Registry, p: &mut Params) -> Result {
    let (md, name, uuid) = lookup(reg, &p.header)?;
    md.wait_event(p.header.event_nr)?;
    table_status_of(&md, &name, &uuid, p)
}

fn table_load(reg: &Registry, p: &mut Params) -> Result {
    let (md, name, uuid) = lookup(reg, &p.header)?;
    let read_only = p.header.flags & DM_READONLY_FLAG != 0 || md.read_only;
    // Built with no lock held: it opens devices and may sleep.
    let load = LoadCtx {
        name: name.as_bytes(),
        read_only,
        types: &reg.types,
        events: &md.events,
    };
    let table = Table::build(&load, &p.header, &p.buf)?;
    // Refused if it would map the device onto itself; the table it
    // replaces, or the refused one, goes here, with no lock held.
    let (res, old) = reg.load_inactive(&md, table);
    drop(old);
    res?;
    report(&md, &name, &uuid, &mut p.header)
}

fn table_clear(reg: &Registry, p: &mut Params) -> Result {
    let (md, name, uuid) = lookup(reg, &p.header)?;
    let old = md.set_inactive(None)?;
    drop(old);
    report(&md, &name, &uuid, &mut p.header)
}

/// The table a query is about: the inactive one with QUERY_INACTIVE_TABLE.
fn queried<'a>(t: &'a Tables, h: &Header) -> Option<&'a TableArc> {
    if h.flags & DM_QUERY_INACTIVE_TABLE_FLAG != 0 {
        t.inactive.as_ref()
    } else {
        t.active.as_ref()
    }
}

fn table_deps(reg: &Registry, p: &mut Params) -> Result {
    let (md, name, uuid) = lookup(reg, &p.header)?;
    with_tables(&md, &name, &uuid, p, |t, p| {
        let mut devs = KVec::new();
        if let Some(t) = queried(t, &p.header) {
            for d in t.devices.iter() {
                devs.push(d.devt(), GFP_KERNEL)?;
            }
        }
        let mut w = ResultWriter::new(&mut p.buf);
        w.deps(&devs);
        finish(&mut p.header, &w);
        Ok(())
    })
}

fn table_status(reg: &Registry, p: &mut Params) -> Result {
    let (md, name, uuid) = lookup(reg, &p.header)?;
    if p.header.flags & (DM_STATUS_TABLE_FLAG | DM_IMA_MEASUREMENT_FLAG) == DM_IMA_MEASUREMENT_FLAG
    {
        pr_err!(
            "{}: DM_TABLE_STATUS with DM_IMA_MEASUREMENT_FLAG (dmsetup measure): rdm has no IMA measurements\n",
            BStr(name.as_bytes())
        );
        return Err(eopnotsupp());
    }
    table_status_of(&md, &name, &uuid, p)
}

/// The status or table lines of a device's targets, formatted under its
/// `tables` lock: a target's status reads its own state (short locks,
/// atomics), never waits for I/O.
fn table_status_of(md: &MappedDevice, name: &Name, uuid: &Name, p: &mut Params) -> Result {
    with_tables(md, name, uuid, p, |t, p| {
        let table_lines = p.header.flags & DM_STATUS_TABLE_FLAG != 0;
        let t = queried(t, &p.header);
        let mut w = ResultWriter::new(&mut p.buf);
        if let Some(t) = t {
            for e in t.entries.iter() {
                let ok = w.target_status(e.start, e.len, e.ty.as_bytes(), |out| {
                    let mut bw = ByteWriter::new(out);
                    let target = &*e.target;
                    let r = if table_lines {
                        target.table(&mut bw)
                    } else {
                        target.status(&mut bw)
                    };
                    r.ok()?;
                    bw.finish()
                });
                if !ok {
                    break;
                }
            }
        }
        finish(&mut p.header, &w);
        Ok(())
    })
}

fn list_versions(reg: &Registry, p: &mut Params, cmd: Command) -> Result {
    let only = (cmd == Command::GetTargetVersion).then(|| {
        let mut n = [0u8; dm_ioctl::sys::DM_NAME_LEN as usize];
        n.copy_from_slice(&p.header.name);
        n
    });
    let mut w = ResultWriter::new(&mut p.buf);
    let mut found = false;
    for t in reg.types.iter() {
        if let Some(n) = &only {
            if c_str(n) != Some(t.name.as_bytes()) {
                continue;
            }
        }
        found = true;
        if !w.target_version(t.name.as_bytes(), t.version) {
            break;
        }
    }
    finish(&mut p.header, &w);
    if !found {
        if let Some(n) = &only {
            pr_err!(
                "unknown target type \"{}\"\n",
                BStr(c_str(n).unwrap_or(&[]))
            );
        }
        return Err(EINVAL);
    }
    Ok(())
}

fn target_msg(reg: &Registry, p: &mut Params) -> Result {
    let msg = TargetMsg::decode(&p.buf, p.header.data_start).map_err(|e| {
        pr_err!("DM_TARGET_MSG: {e}\n");
        EINVAL
    })?;
    let sector = msg.sector;
    let (md, name, _) = lookup(reg, &p.header)?;
    let mut words = msg
        .message
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or(&[]);
    // dm's statistics (dmstats), which dm answers before any target sees
    // the message.
    if first.starts_with(b"@stats_") {
        pr_err!(
            "{}: {}: dm statistics (dmstats) are not supported\n",
            BStr(name.as_bytes()),
            BStr(first)
        );
        return Err(eopnotsupp());
    }
    let mut text = [0u8; 256];
    let mut out = ByteWriter::new(&mut text);
    // The target answers under the device's `tables` lock (from its own
    // state, never waiting for I/O), not the lock a suspend holds.
    let device_msg = md.query(|t| {
        let Some(t) = &t.active else {
            pr_err!(
                "{}: target message to a device with no active table\n",
                BStr(name.as_bytes())
            );
            return Err(EINVAL);
        };
        let Some(e) = t.find(sector) else {
            pr_err!(
                "{}: target message sector {sector} is outside the table\n",
                BStr(name.as_bytes())
            );
            return Err(EINVAL);
        };
        // dm's device-level message, sent to any target of the device.
        if first == b"@cancel_deferred_remove" {
            return Ok(true);
        }
        match e.target.message(msg.message, &mut out) {
            Some(r) => r.map(|()| false),
            None => {
                pr_err!(
                    "{}: target {} does not accept message \"{}\"\n",
                    BStr(name.as_bytes()),
                    e.ty,
                    BStr(first)
                );
                Err(EINVAL)
            }
        }
    })?;
    if device_msg {
        if md.deferred_remove() {
            md.set_deferred_remove(false);
            return Ok(());
        }
        pr_err!("{}: no deferred remove to cancel\n", BStr(name.as_bytes()));
        return Err(ENXIO);
    }
    let n = out.finish().ok_or(ENOSPC)?;
    let mut w = ResultWriter::new(&mut p.buf);
    if n > 0 {
        w.string(&text[..n]);
        p.header.flags |= DM_DATA_OUT_FLAG;
    }
    finish(&mut p.header, &w);
    Ok(())
}

/// A device in the registry, with its name and uuid.
pub(crate) struct Entry {
    pub(crate) name: Name,
    pub(crate) uuid: Name,
    pub(crate) md: Arc<MappedDevice>,
}

/// Every mapped device, by name and uuid.
#[pin_data]
pub(crate) struct Registry {
    /// Held only to look up, add, rename or remove entries: never across
    /// I/O, a table build, or a copy to or from user space.
    /// Entries are reused; `None` is a free entry (6.12's `KVec` cannot
    /// remove).
    #[pin]
    pub(crate) devices: Mutex<KVec<Option<Entry>>>,
    pub(crate) major: u32,
    /// Disk name prefix: "rdm-" (or "dm-" in dm_compat mode).
    pub(crate) disk_prefix: &'static str,
    /// dm's global event (`dm_global_event_nr`): bumped when a device is
    /// created, removed or renamed and on every device event; a `poll()`
    /// of the control file is readable once it moved on since the file's
    /// DM_DEV_ARM_POLL (or open).
    pub(crate) global_event: Arc<PollEvent>,
    /// rdm's own workqueue (`WQ_MEM_RECLAIM`), shared with every device
    /// ([`DeviceEnv::wq`]). Destroyed, after waiting for its work, when
    /// the registry's reference goes, which module exit drops (every
    /// device, holding a module reference, is gone by then).
    wq: Arc<OwnedQueue>,
    /// The target types, for table loads.
    pub(crate) types: TargetTypes,
}

/// Text for a log line, as long as it needs to be (a path of up to every
/// device's name); what cannot be allocated is left out.
struct TextBuf(KVec<u8>);

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

/// What a DM_DEV_RENAME changes: the name, or (with DM_UUID_FLAG) the
/// uuid, which may only be set if the device has none.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renamed {
    Name,
    Uuid,
}

/// How a request names a device.
pub(crate) enum Key<'a> {
    Name(&'a [u8]),
    Uuid(&'a [u8]),
    /// The device number (`dm_ioctl.dev`), when neither is given.
    Dev(u64),
}

impl Key<'_> {
    fn matches(&self, e: &Entry) -> bool {
        match self {
            Key::Name(n) => e.name.as_bytes() == *n,
            Key::Uuid(u) => !e.uuid.is_empty() && e.uuid.as_bytes() == *u,
            Key::Dev(d) => e.md.devt == *d,
        }
    }
}

impl Registry {
    pub(crate) fn new(
        major: u32,
        disk_prefix: &'static str,
        wq: Arc<OwnedQueue>,
        types: TargetTypes,
        global_event: Arc<PollEvent>,
    ) -> impl PinInit<Self> {
        pin_init!(Registry {
            devices <- new_mutex!(KVec::new(), "rdm:registry"),
            major,
            disk_prefix,
            global_event,
            wq,
            types,
        })
    }

    /// Looks a device up; the returned reference keeps it alive (not
    /// registered: `remove` may still take it out of the registry).
    pub(crate) fn get(&self, key: &Key<'_>) -> Result<(Arc<MappedDevice>, Name, Name)> {
        let devices = self.devices.lock();
        let found = devices.iter().flatten().find(|e| key.matches(e));
        match found {
            Some(e) => Ok((e.md.clone(), e.name, e.uuid)),
            None => Err(ENXIO),
        }
    }

    /// The lowest free minor, or `want` if given and free.
    fn pick_minor(devices: &KVec<Option<Entry>>, want: Option<u32>) -> Result<u32> {
        let used = |m: u32| devices.iter().flatten().any(|e| e.md.minor == m);
        match want {
            Some(m) if m < 1 << 20 && !used(m) => Ok(m),
            Some(_) => Err(EBUSY),
            None => (0..1 << 20).find(|&m| !used(m)).ok_or(ENOSPC),
        }
    }

    /// Creates and registers a device.
    pub(crate) fn create(
        self: &Arc<Self>,
        name: Name,
        uuid: Name,
        want_minor: Option<u32>,
        read_only: bool,
    ) -> Result<Arc<MappedDevice>> {
        // The registry lock is held across the disk creation so that the
        // name and minor stay ours; add_disk() does no I/O of ours.
        let mut devices = self.devices.lock();
        if devices
            .iter()
            .flatten()
            .any(|e| e.name.as_bytes() == name.as_bytes())
        {
            pr_err!("device name {} already exists\n", BStr(name.as_bytes()));
            return Err(EBUSY);
        }
        if !uuid.is_empty()
            && devices
                .iter()
                .flatten()
                .any(|e| e.uuid.as_bytes() == uuid.as_bytes())
        {
            pr_err!("device uuid {} already exists\n", BStr(uuid.as_bytes()));
            return Err(EBUSY);
        }
        let minor = Self::pick_minor(&devices, want_minor)?;
        let disk_name = CString::try_from_fmt(kernel::fmt!("{}{}", self.disk_prefix, minor))?;
        let free = match devices.iter().position(|e| e.is_none()) {
            Some(i) => i,
            None => {
                devices.push(None, GFP_KERNEL)?;
                devices.len() - 1
            }
        };
        let env = DeviceEnv {
            major: self.major,
            wq: self.wq.clone(),
            global_event: self.global_event.clone(),
            last_close: self.clone(),
        };
        let md = MappedDevice::create(&env, minor, &disk_name, read_only)?;
        md.set_names(Some((name, uuid)));
        devices[free] = Some(Entry {
            name,
            uuid,
            md: md.clone(),
        });
        self.global_event.bump();
        Ok(md)
    }

    /// Removes a device that no one has open; `uevent` as
    /// [`MappedDevice::destroy`]. Returns the device, its name and uuid,
    /// and whether the uevent was sent.
    pub(crate) fn remove(
        &self,
        key: &Key<'_>,
        uevent: Option<u32>,
    ) -> Result<(Arc<MappedDevice>, Name, Name, bool)> {
        self.remove_if(|e| key.matches(e), uevent)
    }

    /// Removes `md` itself, if it is still registered (deferred removal:
    /// its minor may have been reused by another device meanwhile).
    pub(crate) fn remove_device(&self, md: &Arc<MappedDevice>) -> Result {
        self.remove_if(|e| Arc::ptr_eq(&e.md, md), None).map(drop)
    }

    fn remove_if(
        &self,
        pred: impl Fn(&Entry) -> bool,
        uevent: Option<u32>,
    ) -> Result<(Arc<MappedDevice>, Name, Name, bool)> {
        let entry = {
            let mut devices = self.devices.lock();
            let found = devices
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(&pred))
                .ok_or(ENXIO)?;
            found.as_ref().ok_or(ENXIO)?.md.begin_remove()?;
            let entry = found.take().ok_or(ENXIO)?;
            entry.md.set_names(None);
            entry
        };
        // Outside the registry lock: teardown waits for I/O.
        let sent = entry.md.destroy(uevent);
        self.global_event.bump();
        Ok((entry.md, entry.name, entry.uuid, sent))
    }

    /// Makes `table` the inactive table of `md` unless it maps `md` itself,
    /// directly or through the tables (active, inactive, or being resumed)
    /// of other rdm devices: I/O would then come back to `md` for ever, and
    /// the device would hold itself open (dm refuses a direct self-map in
    /// `dm_get_device`). The check and the install are one step under the
    /// registry lock, so two loads cannot each miss the other's table (and
    /// no lock a draining suspend holds is taken: a device's `tables` only
    /// briefly). Returns the table to drop, with no lock held: the one
    /// replaced, or on error the refused one.
    pub(crate) fn load_inactive(
        &self,
        md: &Arc<MappedDevice>,
        table: TableArc,
    ) -> (Result, Option<TableArc>) {
        let devices = self.devices.lock();
        let Some(entry) = devices.iter().flatten().find(|e| Arc::ptr_eq(&e.md, md)) else {
            // Removed since it was looked up.
            return (Err(ENXIO), Some(table));
        };
        match Self::find_cycle(&devices, md, &table) {
            Ok(None) => {}
            Ok(Some(path)) => {
                Self::log_cycle(&devices, entry, &path);
                return (Err(EINVAL), Some(table));
            }
            Err(e) => return (Err(e), Some(table)),
        }
        match md.set_inactive(Some(table)) {
            Ok(old) => (Ok(()), old),
            Err(e) => (Err(e), None),
        }
    }

    /// Walks the devices `table` maps, and the devices the tables of rdm
    /// devices among them map, and so on, looking for `md`. Returns the
    /// path to it (device numbers, from the table's device to `md`), if
    /// found. Registry lock held.
    fn find_cycle(
        devices: &KVec<Option<Entry>>,
        md: &MappedDevice,
        table: &Table,
    ) -> Result<Option<KVec<u64>>> {
        const ROOT: usize = usize::MAX;
        // Every device reached once, with the index of the one it was
        // reached from.
        let mut seen: KVec<(u64, usize)> = KVec::new();
        for d in table.devices.iter() {
            seen.push((d.devt(), ROOT), GFP_KERNEL)?;
        }
        let mut i = 0;
        while i < seen.len() {
            let devt = seen[i].0;
            if devt == md.devt {
                let mut path = KVec::new();
                let mut at = i;
                while at != ROOT {
                    path.push(seen[at].0, GFP_KERNEL)?;
                    at = seen[at].1;
                }
                path.reverse();
                return Ok(Some(path));
            }
            if let Some(e) = devices.iter().flatten().find(|e| e.md.devt == devt) {
                for next in e.md.mapped_devts()?.iter() {
                    if !seen.iter().any(|(d, _)| d == next) {
                        seen.push((*next, i), GFP_KERNEL)?;
                    }
                }
            }
            i += 1;
        }
        Ok(None)
    }

    /// Logs a refused cycle (`path` ends at `entry`'s device).
    fn log_cycle(devices: &KVec<Option<Entry>>, entry: &Entry, path: &[u64]) {
        let name = BStr(entry.name.as_bytes());
        if path.len() == 1 {
            pr_err!("{name}: table load: the table maps the device onto itself (refused)\n");
            return;
        }
        let mut w = TextBuf(KVec::new());
        let _ = write!(w, "{name}");
        for devt in path {
            match devices.iter().flatten().find(|e| e.md.devt == *devt) {
                Some(e) => {
                    let _ = write!(w, " -> {}", BStr(e.name.as_bytes()));
                }
                None => {
                    let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(*devt);
                    let _ = write!(w, " -> {ma}:{mi}");
                }
            }
        }
        pr_err!(
            "{name}: table load: the table would make a cycle of devices: {} (refused)\n",
            BStr(&w.0)
        );
    }

    /// Renames a device, or sets its uuid (only if it has none); returns
    /// the device with its name and uuid after the change.
    pub(crate) fn rename(
        &self,
        key: &Key<'_>,
        new: Name,
        what: Renamed,
    ) -> Result<(Arc<MappedDevice>, Name, Name)> {
        let set_uuid = what == Renamed::Uuid;
        let mut devices = self.devices.lock();
        let clash = devices.iter().flatten().any(|e| {
            if set_uuid {
                !e.uuid.is_empty() && e.uuid.as_bytes() == new.as_bytes()
            } else {
                e.name.as_bytes() == new.as_bytes()
            }
        });
        if clash {
            pr_err!(
                "cannot rename: {} is already in use\n",
                BStr(new.as_bytes())
            );
            return Err(EBUSY);
        }
        let e = devices
            .iter_mut()
            .flatten()
            .find(|e| key.matches(e))
            .ok_or(ENXIO)?;
        if set_uuid {
            if !e.uuid.is_empty() {
                pr_err!(
                    "cannot change the uuid of {}: it is already set\n",
                    BStr(e.name.as_bytes())
                );
                return Err(EINVAL);
            }
            e.uuid = new;
        } else {
            e.name = new;
        }
        let (md, name, uuid) = (e.md.clone(), e.name, e.uuid);
        md.set_names(Some((name, uuid)));
        // The event (an atomic, no lock) is raised after the registry
        // lock is dropped, which covers the rename alone.
        drop(devices);
        md.raise_event();
        self.global_event.bump();
        Ok((md, name, uuid))
    }
}

impl LastClose for Registry {
    fn deferred_remove(&self, md: &Arc<MappedDevice>) {
        match self.remove_device(md) {
            Ok(()) => {}
            // Reopened meanwhile (the next last close tries again), or
            // removed by a command meanwhile.
            Err(e) if e == EBUSY || e == ENXIO => {}
            Err(e) => pr_err!("deferred remove failed ({e:?})\n"),
        }
    }
}
