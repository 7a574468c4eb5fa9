//! rdm-ioctl-probe: issues one device-mapper ioctl built by hand, so the
//! VM tests can send what no well-behaved tool would (a short or huge
//! `data_size`, a foreign version, an unknown request, a buffer that ends
//! at an unmapped page) and check the errno the driver answers.
//!
//! Prints `result OK` or `result <ERRNO>`, then `version A.B.C` as the
//! driver left it in the buffer (when the buffer is readable).

use clap::Parser;
use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use rdm_core::dm_ioctl::{decode_version, Header, STRUCT_SIZE, VERSION_BYTES};
use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::ptr::NonNull;

#[derive(Parser)]
struct Args {
    /// Control device.
    #[arg(long, default_value = "/dev/rdm-control")]
    control: PathBuf,
    /// Full ioctl request number (e.g. 0xc138fd02); or use --nr.
    #[arg(long, value_parser = parse_u32)]
    request: Option<u32>,
    /// dm command number, turned into `_IOWR(0xfd, nr, struct dm_ioctl)`.
    #[arg(long, value_parser = parse_u32)]
    nr: Option<u32>,
    /// The `data_size` field (default: the buffer length).
    #[arg(long, value_parser = parse_u32)]
    data_size: Option<u32>,
    /// The `version` field, as A.B.C.
    #[arg(long, default_value = "4.0.0")]
    version: String,
    /// Bytes of readable buffer; it ends right before an unmapped page.
    #[arg(long, default_value_t = 16384)]
    buffer_len: usize,
    /// Pass a NULL pointer instead of the buffer.
    #[arg(long)]
    null: bool,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}

/// A buffer of `len` bytes whose end touches a PROT_NONE guard page, so a
/// driver that reads past `len` faults instead of reading garbage.
struct GuardedBuffer {
    map: NonNull<core::ffi::c_void>,
    map_len: usize,
    start: usize,
}

impl GuardedBuffer {
    fn new(len: usize) -> GuardedBuffer {
        let page = 4096;
        let data_pages = len.div_ceil(page).max(1);
        let map_len = (data_pages + 1) * page;
        // SAFETY: a fresh anonymous private mapping aliases nothing.
        let map = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(map_len).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .expect("mmap");
        let guard = map.as_ptr() as usize + data_pages * page;
        // SAFETY: the guard page is inside the mapping made above.
        unsafe {
            mprotect(
                NonNull::new(guard as *mut _).unwrap(),
                page,
                ProtFlags::PROT_NONE,
            )
        }
        .expect("mprotect");
        GuardedBuffer {
            map,
            map_len,
            start: guard - len,
        }
    }

    fn bytes(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: [start, start + len) lies in the readable, writable part
        // of the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.start as *mut u8, len) }
    }
}

impl Drop for GuardedBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no borrow survives.
        unsafe { munmap(self.map, self.map_len) }.ok();
    }
}

fn main() {
    let args = Args::parse();
    let request = match (args.request, args.nr) {
        (Some(r), _) => r,
        (None, Some(nr)) => rdm_core::dm_ioctl::request(nr),
        (None, None) => rdm_core::dm_ioctl::Command::Version.request(),
    };
    let v: Vec<u32> = args
        .version
        .split('.')
        .map(|p| p.parse().expect("version A.B.C"))
        .collect();
    let mut header = Header::new(args.data_size.unwrap_or(args.buffer_len as u32));
    header.version = [v[0], v[1], v[2]];

    let len = args.buffer_len;
    let mut buf = GuardedBuffer::new(len);
    let mut full = vec![0u8; STRUCT_SIZE.max(len)];
    header.encode(&mut full).expect("header fits");
    buf.bytes(len).copy_from_slice(&full[..len]);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.control)
        .unwrap_or_else(|e| panic!("open {}: {e}", args.control.display()));
    let ptr = if args.null {
        std::ptr::null_mut()
    } else {
        buf.start as *mut u8
    };
    // SAFETY: the pointer is NULL or the guarded buffer; the kernel checks
    // every access, and a fault is what some cases want to provoke.
    let ret = unsafe { nix::libc::ioctl(file.as_raw_fd(), request as nix::libc::c_ulong, ptr) };
    match Errno::result(ret) {
        Ok(_) => println!("result OK"),
        Err(e) => println!("result {e:?}"),
    }
    if !args.null && len >= VERSION_BYTES {
        let mut vb = [0u8; VERSION_BYTES];
        vb.copy_from_slice(&buf.bytes(len)[..VERSION_BYTES]);
        let v = decode_version(&vb);
        println!("version {}.{}.{}", v[0], v[1], v[2]);
    }
}
