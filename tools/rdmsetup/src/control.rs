//! The control device: one `struct dm_ioctl` request at a time, with the
//! buffer growth and errno reporting every command shares.

use nix::errno::Errno;
use rdm_core::dm_ioctl::sys::DM_BUFFER_FULL_FLAG;
use rdm_core::dm_ioctl::{Command, Header, HEADER_SIZE, STRUCT_SIZE};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// First buffer size, as libdevmapper uses; doubled on `DM_BUFFER_FULL_FLAG`.
const INITIAL_BUFFER: usize = 16 * 1024;
/// Give up growing past this (the driver's own limit is 64 MiB).
const MAX_BUFFER: usize = 64 << 20;

/// An error that names what failed and why.
#[derive(Debug)]
pub enum Error {
    /// The control node could not be opened.
    Open(PathBuf, std::io::Error),
    /// The driver refused a command.
    Ioctl(Command, Errno),
    /// The reply did not fit in the largest buffer we are willing to use.
    TooLarge(Command),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(path, e) => write!(
                f,
                "cannot open control device {}: {e} (is rdm.ko loaded?)",
                path.display()
            ),
            Error::Ioctl(cmd, Errno::ENOTTY) => write!(
                f,
                "{}: the driver does not support this command (ENOTTY)",
                cmd.name()
            ),
            Error::Ioctl(cmd, e) => write!(f, "{}: {} ({e:?})", cmd.name(), e.desc()),
            Error::TooLarge(cmd) => {
                write!(f, "{}: reply larger than {MAX_BUFFER} bytes", cmd.name())
            }
        }
    }
}

/// An open control device.
pub struct Control {
    file: File,
}

/// A reply: the whole buffer as the driver returned it.
pub struct Reply {
    header: Header,
    buf: Vec<u8>,
}

impl Reply {
    /// The payload the driver wrote (from `data_start` to `data_size`).
    pub fn payload(&self) -> &[u8] {
        let start = (self.header.data_start as usize).min(self.buf.len());
        let end = (self.header.data_size as usize).clamp(start, self.buf.len());
        &self.buf[start..end]
    }
}

impl Control {
    /// Opens the control node at `path`.
    pub fn open(path: &Path) -> Result<Control, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::Open(path.to_path_buf(), e))?;
        Ok(Control { file })
    }

    /// Issues `cmd` with `header` (its `data_size` is set here), growing the
    /// buffer while the driver reports `DM_BUFFER_FULL_FLAG`.
    pub fn call(&self, cmd: Command, header: &Header) -> Result<Reply, Error> {
        let mut size = INITIAL_BUFFER;
        loop {
            let mut h = header.clone();
            h.data_size = size as u32;
            let mut buf = vec![0u8; size.max(STRUCT_SIZE)];
            h.encode(&mut buf).expect("buffer holds the header");
            self.raw_ioctl(cmd, &mut buf)?;
            let out = Header::decode(&buf).expect("buffer holds the header");
            if out.flags & DM_BUFFER_FULL_FLAG == 0 {
                return Ok(Reply { header: out, buf });
            }
            size *= 2;
            if size > MAX_BUFFER {
                return Err(Error::TooLarge(cmd));
            }
        }
    }

    fn raw_ioctl(&self, cmd: Command, buf: &mut [u8]) -> Result<(), Error> {
        assert!(buf.len() >= HEADER_SIZE);
        // SAFETY: every dm request reads and writes at most `data_size`
        // bytes at the pointer, and `call` sets `data_size` to the length
        // of `buf`, which lives and is borrowed mutably across the call.
        let ret = unsafe {
            nix::libc::ioctl(
                self.file.as_raw_fd(),
                cmd.request() as nix::libc::c_ulong,
                buf.as_mut_ptr(),
            )
        };
        Errno::result(ret)
            .map(drop)
            .map_err(|e| Error::Ioctl(cmd, e))
    }

    /// The driver's interface version (`DM_VERSION`).
    pub fn version(&self) -> Result<[u32; 3], Error> {
        Ok(self.call(Command::Version, &Header::new(0))?.header.version)
    }

    /// The mapped devices (`DM_LIST_DEVICES`).
    pub fn list_devices(&self) -> Result<Reply, Error> {
        self.call(Command::ListDevices, &Header::new(0))
    }
}
