//! The device-mapper ioctl ABI, version 4 (`include/uapi/linux/dm-ioctl.h`).
//!
//! The C layout comes from bindgen ([`sys`]); this module adds what a macro or
//! a rule in `drivers/md/dm-ioctl.c` says rather than a type: the ioctl
//! request numbers, the commands, the version handshake, the bounds on
//! `data_size`, and a safe byte codec for the fixed header so neither side
//! ever casts a user buffer to a struct.

use core::fmt;
use core::mem::{offset_of, size_of};

/// The bindgen translation of `include/uapi/linux/dm-ioctl.h`.
#[allow(
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    unreachable_pub,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
pub mod sys {
    include!("dm_ioctl_sys.rs");
}

/// The interface version rdm implements and reports: 4.48.0, as Linux 6.12.
pub const VERSION: [u32; 3] = [
    sys::DM_VERSION_MAJOR,
    sys::DM_VERSION_MINOR,
    sys::DM_VERSION_PATCHLEVEL,
];

/// Size of the fixed part of `struct dm_ioctl`: the payload starts here
/// (`offsetof(struct dm_ioctl, data)` in dm-ioctl.c).
pub const HEADER_SIZE: usize = offset_of!(sys::dm_ioctl, data);

/// Size of `struct dm_ioctl` itself, which is encoded in every request number.
pub const STRUCT_SIZE: usize = size_of::<sys::dm_ioctl>();

/// Largest `data_size` accepted. dm-ioctl.c allows up to 1 GiB
/// (`DM_MAX_TARGETS * DM_MAX_TARGET_PARAMS`); no real table or listing comes
/// near 64 MiB, and a bound this size keeps one bad call from pinning a
/// gigabyte of kernel memory.
pub const MAX_DATA_SIZE: u32 = 64 << 20;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_READ_WRITE: u32 = 3;

/// The ioctl request number of a dm command: `_IOWR(DM_IOCTL, nr, struct dm_ioctl)`.
pub const fn request(nr: u32) -> u32 {
    (IOC_READ_WRITE << IOC_DIRSHIFT)
        | ((STRUCT_SIZE as u32) << IOC_SIZESHIFT)
        | (sys::DM_IOCTL << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}

/// `_IOC_TYPE()` of a request number.
pub const fn request_type(req: u32) -> u32 {
    (req >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_NR()` of a request number.
pub const fn request_nr(req: u32) -> u32 {
    (req >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident = $nr:ident, $name:literal;)*) => {
        /// A device-mapper control command (`DM_*_CMD`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Command {
            $($(#[$doc])* $variant,)*
        }

        impl Command {
            /// Every command, in ABI order.
            pub const ALL: &'static [Command] = &[$(Command::$variant,)*];

            /// The command with ioctl number `nr`, if there is one.
            pub const fn from_nr(nr: u32) -> Option<Command> {
                $(if nr == sys::$nr { return Some(Command::$variant); })*
                None
            }

            /// The command's ioctl number (`_IOC_NR`).
            pub const fn nr(self) -> u32 {
                match self { $(Command::$variant => sys::$nr,)* }
            }

            /// The name of the request macro in dm-ioctl.h, for messages.
            pub const fn name(self) -> &'static str {
                match self { $(Command::$variant => $name,)* }
            }
        }
    };
}

commands! {
    /// Report the interface version.
    Version = DM_VERSION_CMD, "DM_VERSION";
    /// Remove every unused device.
    RemoveAll = DM_REMOVE_ALL_CMD, "DM_REMOVE_ALL";
    /// List the devices.
    ListDevices = DM_LIST_DEVICES_CMD, "DM_LIST_DEVICES";
    /// Create a device.
    DevCreate = DM_DEV_CREATE_CMD, "DM_DEV_CREATE";
    /// Remove a device.
    DevRemove = DM_DEV_REMOVE_CMD, "DM_DEV_REMOVE";
    /// Rename a device or set its uuid.
    DevRename = DM_DEV_RENAME_CMD, "DM_DEV_RENAME";
    /// Suspend or resume a device.
    DevSuspend = DM_DEV_SUSPEND_CMD, "DM_DEV_SUSPEND";
    /// Report a device's state.
    DevStatus = DM_DEV_STATUS_CMD, "DM_DEV_STATUS";
    /// Wait for a device event.
    DevWait = DM_DEV_WAIT_CMD, "DM_DEV_WAIT";
    /// Load a table as the inactive table.
    TableLoad = DM_TABLE_LOAD_CMD, "DM_TABLE_LOAD";
    /// Drop the inactive table.
    TableClear = DM_TABLE_CLEAR_CMD, "DM_TABLE_CLEAR";
    /// List the devices a table depends on.
    TableDeps = DM_TABLE_DEPS_CMD, "DM_TABLE_DEPS";
    /// Report a table's status or lines.
    TableStatus = DM_TABLE_STATUS_CMD, "DM_TABLE_STATUS";
    /// List the target types and their versions.
    ListVersions = DM_LIST_VERSIONS_CMD, "DM_LIST_VERSIONS";
    /// Send a message to a target.
    TargetMsg = DM_TARGET_MSG_CMD, "DM_TARGET_MSG";
    /// Set a device's geometry.
    DevSetGeometry = DM_DEV_SET_GEOMETRY_CMD, "DM_DEV_SET_GEOMETRY";
    /// Arm the poll event of a control file.
    DevArmPoll = DM_DEV_ARM_POLL_CMD, "DM_DEV_ARM_POLL";
    /// Report one target type's version.
    GetTargetVersion = DM_GET_TARGET_VERSION_CMD, "DM_GET_TARGET_VERSION";
}

impl Command {
    /// The command's ioctl request number.
    pub const fn request(self) -> u32 {
        request(self.nr())
    }
}

/// Why a `struct dm_ioctl` from user space was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// The caller speaks another major version, or a newer minor one.
    VersionMismatch {
        /// The version the caller sent.
        user: [u32; 3],
    },
    /// `data_size` cannot even hold the fixed header.
    DataSizeTooSmall(u32),
    /// `data_size` is larger than [`MAX_DATA_SIZE`].
    DataSizeTooLarge(u32),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::VersionMismatch { user } => write!(
                f,
                "ioctl interface mismatch: kernel({}.{}.{}), user({}.{}.{})",
                VERSION[0], VERSION[1], VERSION[2], user[0], user[1], user[2]
            ),
            ParamError::DataSizeTooSmall(n) => write!(
                f,
                "invalid data size in the ioctl structure: {n} is smaller than the {HEADER_SIZE}-byte header"
            ),
            ParamError::DataSizeTooLarge(n) => write!(
                f,
                "invalid data size in the ioctl structure: {n} is larger than the {MAX_DATA_SIZE}-byte limit"
            ),
        }
    }
}

/// The version handshake of dm-ioctl.c's `check_version()`: the major must
/// match and the caller's minor must not be newer than ours.
pub fn check_version(user: [u32; 3]) -> Result<(), ParamError> {
    if user[0] != VERSION[0] || user[1] > VERSION[1] {
        return Err(ParamError::VersionMismatch { user });
    }
    Ok(())
}

/// Checks the `data_size` a caller claims for its buffer.
pub fn check_data_size(data_size: u32) -> Result<(), ParamError> {
    if (data_size as usize) < HEADER_SIZE {
        Err(ParamError::DataSizeTooSmall(data_size))
    } else if data_size > MAX_DATA_SIZE {
        Err(ParamError::DataSizeTooLarge(data_size))
    } else {
        Ok(())
    }
}

/// Bytes of the `version` field, which every request starts with.
pub const VERSION_BYTES: usize = size_of::<[u32; 3]>();

/// Reads the `version` field from the first [`VERSION_BYTES`] of a request.
pub fn decode_version(buf: &[u8; VERSION_BYTES]) -> [u32; 3] {
    [
        read_u32(buf, 0).unwrap_or(0),
        read_u32(buf, 4).unwrap_or(0),
        read_u32(buf, 8).unwrap_or(0),
    ]
}

/// Writes a `version` field.
pub fn encode_version(version: [u32; 3]) -> [u8; VERSION_BYTES] {
    let mut out = [0u8; VERSION_BYTES];
    for (i, v) in version.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    out
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    Some(u32::from_ne_bytes(a))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(bytes);
    Some(u64::from_ne_bytes(a))
}

fn write_bytes(buf: &mut [u8], at: usize, bytes: &[u8]) -> Option<()> {
    buf.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
    Some(())
}

/// The fixed header of a request (`struct dm_ioctl` up to `data`), decoded.
///
/// `name` and `uuid` are kept as the raw fixed-size fields; [`c_str`] reads
/// them only up to a NUL and refuses a field that has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Interface version.
    pub version: [u32; 3],
    /// Total size of the buffer, header included.
    pub data_size: u32,
    /// Offset of the payload from the start of the buffer.
    pub data_start: u32,
    /// Number of `dm_target_spec`s in a table load, or returned.
    pub target_count: u32,
    /// Open count of the device (out).
    pub open_count: i32,
    /// `DM_*_FLAG` bits.
    pub flags: u32,
    /// Event number (in for DEV_WAIT, out otherwise).
    pub event_nr: u32,
    /// Device number, `huge_encode_dev()` form.
    pub dev: u64,
    /// Device name, NUL-terminated inside the field.
    pub name: [u8; sys::DM_NAME_LEN as usize],
    /// Device uuid, NUL-terminated inside the field.
    pub uuid: [u8; sys::DM_UUID_LEN as usize],
}

macro_rules! field {
    ($f:ident) => {
        offset_of!(sys::dm_ioctl, $f)
    };
}

impl Header {
    /// A request header for `data_size` bytes, with rdm's version and the
    /// payload starting right after the fixed part.
    pub fn new(data_size: u32) -> Header {
        Header {
            version: VERSION,
            data_size,
            data_start: STRUCT_SIZE as u32,
            target_count: 0,
            open_count: 0,
            flags: 0,
            event_nr: 0,
            dev: 0,
            name: [0; sys::DM_NAME_LEN as usize],
            uuid: [0; sys::DM_UUID_LEN as usize],
        }
    }

    /// Decodes the header from the first [`HEADER_SIZE`] bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Option<Header> {
        let mut h = Header::new(0);
        let v = buf.get(..VERSION_BYTES)?;
        let mut vb = [0u8; VERSION_BYTES];
        vb.copy_from_slice(v);
        h.version = decode_version(&vb);
        h.data_size = read_u32(buf, field!(data_size))?;
        h.data_start = read_u32(buf, field!(data_start))?;
        h.target_count = read_u32(buf, field!(target_count))?;
        h.open_count = read_u32(buf, field!(open_count))? as i32;
        h.flags = read_u32(buf, field!(flags))?;
        h.event_nr = read_u32(buf, field!(event_nr))?;
        h.dev = read_u64(buf, field!(dev))?;
        const NAME_LEN: usize = sys::DM_NAME_LEN as usize;
        const UUID_LEN: usize = sys::DM_UUID_LEN as usize;
        h.name
            .copy_from_slice(buf.get(field!(name)..field!(name) + NAME_LEN)?);
        h.uuid
            .copy_from_slice(buf.get(field!(uuid)..field!(uuid) + UUID_LEN)?);
        Some(h)
    }

    /// Encodes the header into the first [`HEADER_SIZE`] bytes of `buf`.
    /// The `padding` field is written as zero. Returns `None` if `buf` is
    /// shorter than the header.
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        if buf.len() < HEADER_SIZE {
            return None;
        }
        write_bytes(buf, 0, &encode_version(self.version))?;
        write_bytes(buf, field!(data_size), &self.data_size.to_ne_bytes())?;
        write_bytes(buf, field!(data_start), &self.data_start.to_ne_bytes())?;
        write_bytes(buf, field!(target_count), &self.target_count.to_ne_bytes())?;
        write_bytes(buf, field!(open_count), &self.open_count.to_ne_bytes())?;
        write_bytes(buf, field!(flags), &self.flags.to_ne_bytes())?;
        write_bytes(buf, field!(event_nr), &self.event_nr.to_ne_bytes())?;
        write_bytes(buf, field!(padding), &0u32.to_ne_bytes())?;
        write_bytes(buf, field!(dev), &self.dev.to_ne_bytes())?;
        write_bytes(buf, field!(name), &self.name)?;
        write_bytes(buf, field!(uuid), &self.uuid)
    }
}

/// The string in a fixed-size, NUL-terminated field, or `None` if the field
/// has no NUL (dm-ioctl.c's `invalid_str()`).
pub fn c_str(field: &[u8]) -> Option<&[u8]> {
    let end = field.iter().position(|&b| b == 0)?;
    Some(&field[..end])
}

/// Copies `s` into a fixed-size C string field; `None` if it does not fit
/// with its NUL or contains a NUL.
pub fn set_c_str(field: &mut [u8], s: &[u8]) -> Option<()> {
    if s.len() >= field.len() || s.contains(&0) {
        return None;
    }
    field.fill(0);
    field[..s.len()].copy_from_slice(s);
    Some(())
}

/// Splits a `huge_encode_dev()` device number (as in `dm_ioctl.dev` and
/// `dm_name_list.dev`) into major and minor.
pub const fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// Encodes major and minor as `huge_encode_dev()` does.
pub const fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (major as u64, minor as u64);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// One device in a `DM_LIST_DEVICES` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameEntry<'a> {
    /// Device number, `huge_encode_dev()` form.
    pub dev: u64,
    /// Device name.
    pub name: &'a [u8],
    /// Event number, present from interface 4.37 on.
    pub event_nr: Option<u32>,
    /// Uuid, when the reply says the device has one.
    pub uuid: Option<&'a [u8]>,
}

/// Iterator over the `struct dm_name_list` chain of a `DM_LIST_DEVICES`
/// reply payload. It stops at the end of the chain or at the first entry
/// that does not fit in the payload (a `next` pointing outside it or
/// backwards, a name without NUL), so a bad reply cannot make it loop or
/// read out of bounds.
pub struct NameList<'a> {
    payload: &'a [u8],
    at: Option<usize>,
}

impl<'a> NameList<'a> {
    /// Iterates over the reply payload (the buffer from `data_start` on).
    /// An empty list is encoded as one entry with `dev == 0`.
    pub fn new(payload: &'a [u8]) -> NameList<'a> {
        let at = match read_u64(payload, 0) {
            Some(dev) if dev != 0 => Some(0),
            _ => None,
        };
        NameList { payload, at }
    }

    fn entry_at(&self, at: usize) -> Option<(NameEntry<'a>, u32)> {
        let p = self.payload;
        let dev = read_u64(p, at + offset_of!(sys::dm_name_list, dev))?;
        let next = read_u32(p, at + offset_of!(sys::dm_name_list, next))?;
        let name_at = at + offset_of!(sys::dm_name_list, name);
        let name = c_str(p.get(name_at..)?)?;
        // The event number and flags follow the name, 8-byte aligned.
        let extra = (name_at + name.len() + 1).next_multiple_of(8);
        let end = if next == 0 {
            p.len()
        } else {
            at + next as usize
        };
        let (mut event_nr, mut uuid) = (None, None);
        if extra + 8 <= end {
            event_nr = read_u32(p, extra);
            let flags = read_u32(p, extra + 4)?;
            if flags & sys::DM_NAME_LIST_FLAG_HAS_UUID != 0 {
                uuid = Some(c_str(p.get(extra + 8..end)?)?);
            }
        }
        let entry = NameEntry {
            dev,
            name,
            event_nr,
            uuid,
        };
        Some((entry, next))
    }
}

impl<'a> Iterator for NameList<'a> {
    type Item = NameEntry<'a>;

    fn next(&mut self) -> Option<NameEntry<'a>> {
        let at = self.at.take()?;
        let (entry, next) = self.entry_at(at)?;
        // `next` must move forward by at least a whole entry header.
        if next as usize >= size_of::<sys::dm_name_list>() {
            self.at = Some(at + next as usize);
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn header_layout_matches_dm_ioctl_h() {
        // The figures of struct dm_ioctl on every Linux ABI (it is padded
        // to 8 bytes by the u64 `dev`).
        assert_eq!(STRUCT_SIZE, 312);
        assert_eq!(HEADER_SIZE, 305);
        assert_eq!(field!(flags), 28);
        assert_eq!(field!(dev), 40);
        assert_eq!(field!(name), 48);
        assert_eq!(field!(uuid), 176);
    }

    #[test]
    fn request_numbers_match_the_c_macros() {
        // DM_VERSION and DM_TABLE_LOAD as the C preprocessor computes them.
        assert_eq!(Command::Version.request(), 0xc138fd00);
        assert_eq!(Command::TableLoad.request(), 0xc138fd09);
        assert_eq!(Command::GetTargetVersion.request(), 0xc138fd11);
        assert_eq!(request_type(0xc138fd09), sys::DM_IOCTL);
        assert_eq!(request_nr(0xc138fd09), 9);
    }

    #[test]
    fn commands_round_trip_and_unknown_numbers_are_none() {
        for &c in Command::ALL {
            assert_eq!(Command::from_nr(c.nr()), Some(c));
        }
        assert_eq!(Command::ALL.len(), 18);
        assert_eq!(Command::from_nr(18), None);
        assert_eq!(Command::from_nr(255), None);
    }

    #[test]
    fn version_handshake_follows_check_version() {
        assert!(check_version([4, 0, 0]).is_ok());
        assert!(check_version([4, 48, 7]).is_ok());
        assert!(check_version([4, 49, 0]).is_err());
        assert!(check_version([3, 0, 0]).is_err());
        assert!(check_version([5, 0, 0]).is_err());
    }

    #[test]
    fn data_size_bounds() {
        assert_eq!(check_data_size(0), Err(ParamError::DataSizeTooSmall(0)));
        assert!(check_data_size(HEADER_SIZE as u32 - 1).is_err());
        assert!(check_data_size(HEADER_SIZE as u32).is_ok());
        assert!(check_data_size(16384).is_ok());
        assert!(check_data_size(MAX_DATA_SIZE).is_ok());
        assert!(check_data_size(MAX_DATA_SIZE + 1).is_err());
        assert!(check_data_size(u32::MAX).is_err());
    }

    #[test]
    fn header_round_trips_through_bytes() {
        let mut h = Header::new(16384);
        h.flags = sys::DM_SUSPEND_FLAG | sys::DM_UUID_FLAG;
        h.target_count = 3;
        h.open_count = -1;
        h.event_nr = 42;
        h.dev = 0xfe_0000_0001;
        set_c_str(&mut h.name, b"vol0").unwrap();
        set_c_str(&mut h.uuid, b"LVM-abc").unwrap();
        let mut buf = vec![0xaau8; STRUCT_SIZE];
        h.encode(&mut buf).unwrap();
        assert_eq!(Header::decode(&buf), Some(h));
        assert_eq!(read_u32(&buf, field!(padding)), Some(0));
    }

    #[test]
    fn short_buffers_are_refused() {
        let buf = vec![0u8; HEADER_SIZE - 1];
        assert_eq!(Header::decode(&buf), None);
        let mut small = vec![0u8; 100];
        assert_eq!(Header::new(0).encode(&mut small), None);
    }

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [(253, 0), (254, 1), (8, 300), (259, 1048575)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
        assert_eq!(encode_dev(254, 3), 0xfe03);
    }

    fn name_entry(buf: &mut std::vec::Vec<u8>, dev: u64, name: &[u8], uuid: Option<&[u8]>) {
        buf.extend_from_slice(&dev.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(name);
        buf.push(0);
        buf.resize(buf.len().next_multiple_of(8), 0);
        buf.extend_from_slice(&7u32.to_ne_bytes());
        let flags = if uuid.is_some() {
            sys::DM_NAME_LIST_FLAG_HAS_UUID
        } else {
            sys::DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID
        };
        buf.extend_from_slice(&flags.to_ne_bytes());
        if let Some(u) = uuid {
            buf.extend_from_slice(u);
            buf.push(0);
        }
        buf.resize(buf.len().next_multiple_of(8), 0);
    }

    fn link(buf: &mut [u8], at: usize, next: u32) {
        buf[at + 8..at + 12].copy_from_slice(&next.to_ne_bytes());
    }

    #[test]
    fn name_list_walks_the_chain() {
        let mut buf = vec![];
        name_entry(&mut buf, encode_dev(254, 0), b"origin", None);
        let second = buf.len();
        name_entry(&mut buf, encode_dev(254, 1), b"snap", Some(b"RDM-1"));
        link(&mut buf, 0, second as u32);
        let all: std::vec::Vec<_> = NameList::new(&buf).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, b"origin");
        assert_eq!(all[0].uuid, None);
        assert_eq!(all[0].event_nr, Some(7));
        assert_eq!(decode_dev(all[1].dev), (254, 1));
        assert_eq!(all[1].uuid, Some(&b"RDM-1"[..]));
    }

    #[test]
    fn name_list_survives_bad_replies() {
        assert_eq!(NameList::new(&[0u8; 16]).count(), 0);
        assert_eq!(NameList::new(&[]).count(), 0);
        let mut buf = vec![];
        name_entry(&mut buf, 5, b"a", None);
        // `next` pointing backwards, into itself, or past the end.
        for next in [0u32, 4, 1 << 30] {
            link(&mut buf, 0, next);
            assert!(NameList::new(&buf).count() <= 1);
        }
        // A name with no NUL inside the payload.
        let mut bad = vec![];
        bad.extend_from_slice(&5u64.to_ne_bytes());
        bad.extend_from_slice(&0u32.to_ne_bytes());
        bad.extend_from_slice(b"abcd");
        assert_eq!(NameList::new(&bad).count(), 0);
    }

    #[test]
    fn c_strings_need_a_nul_and_must_fit() {
        assert_eq!(c_str(b"abc\0\0"), Some(&b"abc"[..]));
        assert_eq!(c_str(b"abcd"), None);
        let mut f = [0u8; 4];
        assert_eq!(set_c_str(&mut f, b"abc"), Some(()));
        assert_eq!(set_c_str(&mut f, b"abcd"), None);
        assert_eq!(set_c_str(&mut f, b"a\0"), None);
    }
}
