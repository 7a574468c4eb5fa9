//! The control device: one `struct dm_ioctl` request at a time, with the
//! buffer growth and errno reporting every command shares.

use nix::errno::Errno;
use rdm_core::dm_ioctl::sys::DM_BUFFER_FULL_FLAG;
use rdm_core::dm_ioctl::{set_c_str, Command, Header, HEADER_SIZE, STRUCT_SIZE};
use rdm_core::payload::RESULT_START;
use std::cell::Cell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
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
    /// The driver refused a command on a device (or on none).
    Ioctl(Command, Option<String>, Errno),
    /// The reply did not fit in the largest buffer we are willing to use.
    TooLarge(Command),
    /// Bad input caught before talking to the driver.
    Usage(String),
    /// A file could not be read or written.
    Io(String, std::io::Error),
    /// Some of the devices a command went through failed (each said why).
    Failed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(path, e) => write!(
                f,
                "cannot open control device {}: {e} (is rdm.ko loaded?)",
                path.display()
            ),
            Error::Ioctl(cmd, dev, e) => {
                write!(f, "{}", cmd.name())?;
                if let Some(d) = dev {
                    write!(f, " on {d}")?;
                }
                match e {
                    Errno::ENOTTY => {
                        write!(f, ": the driver does not support this command (ENOTTY)")
                    }
                    Errno::ENXIO => write!(f, ": no such device (ENXIO)"),
                    Errno::EBUSY => write!(f, ": device or resource busy (EBUSY)"),
                    Errno::EINVAL => write!(
                        f,
                        ": invalid argument (EINVAL); the kernel log (dmesg) says why"
                    ),
                    e => write!(f, ": {} ({e:?})", e.desc()),
                }
            }
            Error::TooLarge(cmd) => {
                write!(f, "{}: reply larger than {MAX_BUFFER} bytes", cmd.name())
            }
            Error::Usage(s) => f.write_str(s),
            Error::Failed => f.write_str("Command failed."),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// The ioctl buffer of `req`, `size` bytes (at least the header): the
/// header, with the payload at `RESULT_START`.
fn request_buffer(req: &Request, size: usize) -> Vec<u8> {
    let mut h = req.header.clone();
    h.data_size = size as u32;
    h.data_start = RESULT_START as u32;
    let mut buf = vec![0u8; size.max(STRUCT_SIZE)];
    h.encode(&mut buf).expect("buffer holds the header");
    buf[RESULT_START..RESULT_START + req.payload.len()].copy_from_slice(&req.payload);
    buf
}

/// What a fail-nth window did: the arming write, the ioctl, the read-back.
type WindowOutcome = (
    std::io::Result<()>,
    Result<(), Errno>,
    std::io::Result<usize>,
);

/// An open control device.
pub struct Control {
    file: File,
    /// Test hook (`RDM_FAIL_NTH=N`): the first ioctl runs with the
    /// kernel's per-task fault injection armed to fail its Nth allocation.
    fail_nth: Cell<Option<u32>>,
}

/// A request under construction.
#[derive(Clone)]
pub struct Request {
    pub header: Header,
    /// Bytes to place at `data_start` (a table, a new name, a message).
    pub payload: Vec<u8>,
    /// The device named, for messages.
    pub device: Option<String>,
}

impl Request {
    /// A request about no device.
    pub fn new() -> Request {
        Request {
            header: Header::new(0),
            payload: Vec::new(),
            device: None,
        }
    }

    /// A request about the device whose uuid is `uuid`.
    pub fn with_uuid(uuid: &str) -> Result<Request, Error> {
        let mut r = Request::new();
        set_c_str(&mut r.header.uuid, uuid.as_bytes()).ok_or_else(|| {
            Error::Usage(format!(
                "uuid {uuid:?} is too long (128 bytes at most) or has a NUL"
            ))
        })?;
        r.device = Some(format!("uuid {uuid}"));
        Ok(r)
    }

    /// A request about the device numbered `major:minor` (no name or
    /// uuid: the driver looks it up by number).
    pub fn with_dev(major: u32, minor: u32) -> Request {
        let mut r = Request::new();
        r.header.dev = rdm_core::dm_ioctl::encode_dev(major, minor);
        r.device = Some(format!("{major}:{minor}"));
        r
    }

    /// A request about the device called `name`.
    pub fn named(name: &str) -> Result<Request, Error> {
        let mut r = Request::new();
        set_c_str(&mut r.header.name, name.as_bytes()).ok_or_else(|| {
            Error::Usage(format!(
                "device name {name:?} is too long (127 bytes at most) or has a NUL"
            ))
        })?;
        r.device = Some(name.to_string());
        Ok(r)
    }
}

/// A reply: the whole buffer as the driver returned it.
pub struct Reply {
    pub header: Header,
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
        let fail_nth = std::env::var("RDM_FAIL_NTH")
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(Control {
            file,
            fail_nth: Cell::new(fail_nth),
        })
    }

    /// Issues `cmd`, growing the buffer while the driver reports
    /// `DM_BUFFER_FULL_FLAG`.
    pub fn call(&self, cmd: Command, req: &Request) -> Result<Reply, Error> {
        let mut size = INITIAL_BUFFER.max(RESULT_START + req.payload.len() + 8);
        loop {
            let mut buf = request_buffer(req, size);
            self.raw_ioctl(cmd, &mut buf)
                .map_err(|e| Error::Ioctl(cmd, req.device.clone(), e))?;
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

    fn raw_ioctl(&self, cmd: Command, buf: &mut [u8]) -> Result<(), Errno> {
        let Some(nth) = self.fail_nth.take() else {
            return self.raw_ioctl_once(cmd, buf);
        };
        // Every handle is opened before arming: an open allocates, and
        // would take the fault meant for the ioctl. The count is read
        // back on a handle of its own each time (the file cannot seek).
        let open = |write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/proc/thread-self/fail-nth")
                .unwrap_or_else(|e| {
                    eprintln!("rdmsetup: RDM_FAIL_NTH needs a kernel with fault injection: {e}");
                    std::process::exit(2)
                })
        };
        let (mut arm, mut warm_check, mut check) = (open(true), open(false), open(false));
        let count = nth.to_string();
        let mut left = [0u8; 16];
        // The warm-up: the same window, unarmed ("0"), around a DM_VERSION.
        // Its outcome does not matter, only that it ran the same code.
        let mut version = request_buffer(&Request::new(), INITIAL_BUFFER);
        let _ = self.window(
            &mut arm,
            &mut warm_check,
            b"0",
            Command::Version,
            &mut version,
            &mut left,
        );
        let (armed, res, read) =
            self.window(&mut arm, &mut check, count.as_bytes(), cmd, buf, &mut left);
        let _ = arm.write_all(b"0");
        let left = match armed.and(read) {
            Ok(n) => String::from_utf8_lossy(&left[..n]).into_owned(),
            Err(e) => {
                eprintln!("rdmsetup: cannot use /proc/thread-self/fail-nth: {e}");
                std::process::exit(2);
            }
        };
        let injected = left.trim() == "0";
        eprintln!(
            "rdmsetup: fail-nth {nth}: {}",
            if injected {
                "fault injected"
            } else {
                "not reached"
            }
        );
        res
    }

    /// The `RDM_FAIL_NTH` window: writes `count` to fail-nth (`arm`), so
    /// that the task's Nth fault-injectable allocation from there on
    /// fails; issues `cmd` on `buf`; reads back into `left` what is left of
    /// the count (`check`): "0" if the fault was injected.
    ///
    /// fail-nth counts every fault-injectable allocation of the task, not
    /// only the ioctl's: a page fault in the window that has to read
    /// rdmsetup's own code from the filesystem allocates too (the page
    /// cache's nodes, the read's requests), and takes, or adds to, the
    /// count meant for the driver. Whether such faults happen depends on
    /// the page cache (the same `status` counted 1 allocation point warm
    /// and 51 after `drop_caches`). So the window is run twice: unarmed
    /// first (`count` "0", a harmless DM_VERSION), which brings every page
    /// of code it runs into the page cache and the page tables, then
    /// armed. It is never inlined, so that both runs execute the very same
    /// code. (Faults on fresh anonymous pages, the stack's or the reply
    /// buffer's, take order-0 pages, which fail_page_alloc never fails,
    /// and no slab object: the buffer's mapping has its anon_vma from the
    /// request written into it.)
    #[inline(never)]
    fn window(
        &self,
        arm: &mut File,
        check: &mut File,
        count: &[u8],
        cmd: Command,
        buf: &mut [u8],
        left: &mut [u8; 16],
    ) -> WindowOutcome {
        let armed = arm.write_all(count);
        let res = self.raw_ioctl_once(cmd, buf);
        let read = check.read(left);
        (armed, res, read)
    }

    #[inline(never)]
    fn raw_ioctl_once(&self, cmd: Command, buf: &mut [u8]) -> Result<(), Errno> {
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
        Errno::result(ret).map(drop)
    }
}
