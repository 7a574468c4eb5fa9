//! Shared by the test tools: a buffer that ends at an unmapped page, and a
//! raw dm ioctl on it (so a driver that reads past the buffer faults).

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// A buffer of `len` bytes whose end touches a PROT_NONE guard page, so a
/// driver that reads past `len` faults instead of reading garbage.
pub struct GuardedBuffer {
    map: NonNull<core::ffi::c_void>,
    map_len: usize,
    start: usize,
}

impl GuardedBuffer {
    pub fn new(len: usize) -> GuardedBuffer {
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

    pub fn bytes(&mut self, len: usize) -> &mut [u8] {
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

/// Issues ioctl `request` on `file` with the buffer (or NULL).
pub fn dm_ioctl_raw(
    file: &File,
    request: u32,
    buf: Option<&mut GuardedBuffer>,
) -> Result<(), Errno> {
    let ptr = buf.map_or(std::ptr::null_mut(), |b| b.start as *mut u8);
    // SAFETY: the pointer is NULL or a guarded buffer that outlives the
    // call; the kernel checks every access, and faults are what some
    // callers want to provoke.
    let ret = unsafe { nix::libc::ioctl(file.as_raw_fd(), request as nix::libc::c_ulong, ptr) };
    Errno::result(ret).map(drop)
}
