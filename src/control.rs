// SPDX-License-Identifier: GPL-2.0

//! The control device: the device-mapper ioctl ABI, version 4.
//!
//! Mirrors `ctl_ioctl()` of `drivers/md/dm-ioctl.c`: permission, ioctl
//! type, the version handshake (which also writes rdm's version back), then
//! the command lookup and one bounded copy of the caller's buffer. No lock
//! is held while user memory is touched.

use crate::kx::capability::capable_sys_admin;
use crate::kx::miscdevice::{Minor, MiscDevice, MiscDeviceOptions, MiscDeviceRegistration};
use crate::rdm_core::dm_ioctl::{
    self, check_data_size, check_version, decode_version, encode_version, Command, Header,
    ParamError, HEADER_SIZE, VERSION, VERSION_BYTES,
};
use kernel::c_str;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// The registered control device.
pub(crate) struct ControlDevice {
    _misc: MiscDeviceRegistration<Control>,
}

impl ControlDevice {
    /// Registers `/dev/rdm-control`.
    pub(crate) fn register() -> Result<Self> {
        let misc = MiscDeviceRegistration::register(MiscDeviceOptions {
            name: c_str!("rdm-control"),
            nodename: None,
            minor: Minor::Dynamic,
            mode: 0o600,
        })?;
        Ok(ControlDevice { _misc: misc })
    }
}

struct Control;

impl MiscDevice for Control {
    type Ptr = ();

    fn open() -> Result<()> {
        Ok(())
    }

    fn ioctl(_file: (), request: u32, arg: usize) -> Result<isize> {
        ctl_ioctl(request, arg)?;
        Ok(0)
    }
}

/// A request's buffer, copied in once after its header was checked.
struct Params {
    header: Header,
    /// The whole buffer (`data_size` bytes), header included.
    #[expect(dead_code, reason = "read by the commands of the next issue")]
    buf: KVVec<u8>,
}

fn ctl_ioctl(request: u32, arg: usize) -> Result {
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
    let params = copy_params(arg, version)?;
    dispatch(cmd, params)
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

fn dispatch(cmd: Command, params: Params) -> Result {
    pr_err!(
        "{}: not implemented yet (data_size {})\n",
        cmd.name(),
        params.header.data_size
    );
    Err(ENOTTY)
}
