//! Page buffers and their I/O.

use super::ffi::*;
use super::BdevFile;
use crate::kx::wait::DrainCounter;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering;
use kernel::bindings;
use kernel::error::Result;
use kernel::ffi::c_uint;
use kernel::page::Page;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::sync::UniqueArc;

/// A buffer of `len` bytes in whole pages (the last one possibly used in
/// part) that chunks and metadata areas are read into and written from.
pub struct PageBuf {
    pages: KVec<Page>,
    len: usize,
}

impl PageBuf {
    /// Allocates `bytes` (a multiple of 512) with `GFP_KERNEL`, for I/O to
    /// fill: the contents are whatever the pages held (nothing reads them
    /// but the device, until a read fills them).
    pub fn new(bytes: usize) -> Result<Self> {
        Self::alloc(bytes, GFP_KERNEL)
    }

    /// Allocates `bytes` (a multiple of 512), zeroed.
    pub fn new_zeroed(bytes: usize) -> Result<Self> {
        Self::alloc(bytes, GFP_KERNEL | __GFP_ZERO)
    }

    fn alloc(bytes: usize, flags: kernel::alloc::Flags) -> Result<Self> {
        if bytes == 0 || bytes % 512 != 0 {
            return Err(EINVAL);
        }
        let n = bytes.div_ceil(PAGE_SIZE);
        let mut pages = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            pages.push(Page::alloc_page(flags)?, GFP_KERNEL)?;
        }
        Ok(PageBuf { pages, len: bytes })
    }

    /// Size in bytes (what its I/O reads or writes).
    pub fn bytes(&self) -> usize {
        self.len
    }

    /// The (page, offset in page, length) pieces of `[offset, offset + len)`.
    fn pieces(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<impl Iterator<Item = (&Page, usize, usize)>> {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        let mut at = offset;
        Ok(core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let in_page = at % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(end - at);
            let page = &self.pages[at / PAGE_SIZE];
            at += n;
            Some((page, in_page, n))
        }))
    }

    /// Copies `data` into the buffer at `offset`. `&mut self`: no I/O is in
    /// flight on the buffer (I/O holds it through an `Arc`).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result {
        let mut src = data.as_ptr();
        for (page, in_page, n) in self.pieces(offset, data.len())? {
            // SAFETY: `src` points into `data` with `n` bytes left in this
            // piece (the pieces cover `data.len()` bytes in order); the
            // page is ours alone (`&mut self`), so nothing races the copy.
            unsafe {
                page.write_raw(src, in_page, n)?;
                src = src.add(n);
            }
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer.
    pub fn read_at(&mut self, offset: usize, out: &mut [u8]) -> Result {
        let mut dst = out.as_mut_ptr();
        for (page, in_page, n) in self.pieces(offset, out.len())? {
            // SAFETY: as in `write_at`, for the destination `out`.
            unsafe {
                page.read_raw(dst, in_page, n)?;
                dst = dst.add(n);
            }
        }
        Ok(())
    }

    /// Lends the buffer to asynchronous I/O ([`submit_page_io`] takes an
    /// `Arc`); [`PageBuf::take_back`] returns it once the I/O is over. On
    /// failure (out of memory) the buffer comes back unchanged.
    pub fn lend(self) -> Result<Arc<PageBuf>, PageBuf> {
        match UniqueArc::new_uninit(GFP_KERNEL) {
            Ok(arc) => Ok(arc.write(self).into()),
            Err(_) => Err(self),
        }
    }

    /// The buffer lent by [`PageBuf::lend`], ours alone again: every I/O
    /// that used it has run its `done`. [`submit_page_io`] drops its
    /// reference before it calls `done`, so a caller that learns of the
    /// end of the I/O from `done` finds the buffer unshared. `None` (and
    /// the reference dropped) if someone still holds it.
    pub fn take_back(arc: Arc<PageBuf>) -> Option<PageBuf> {
        let unique = arc.into_unique_or_drop()?;
        let mut unique = Pin::into_inner(unique);
        Some(PageBuf {
            pages: core::mem::take(&mut unique.pages),
            len: unique.len,
        })
    }

    /// Zeroes the whole buffer.
    pub fn zero(&mut self) -> Result {
        for (page, in_page, n) in self.pieces(0, self.len)? {
            // SAFETY: the page is ours alone (`&mut self`).
            unsafe { page.fill_zero_raw(in_page, n)? };
        }
        Ok(())
    }
}

/// What [`submit_page_io`] does with the buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PageIo {
    /// Read into it.
    Read,
    /// Write it out.
    Write,
    /// Write it out with FUA (on stable media when it completes).
    WriteFua,
    /// Flush the device's cache first (every write completed before this
    /// one is then on stable media), then write with FUA.
    WriteFlushFua,
}

/// Runs `f` with the block layer's plug on (`blk_start_plug`): bios it
/// submits are held back and dispatched together when it returns, so a
/// batch costs one device notification instead of one per bio.
pub fn with_plug<R>(f: impl FnOnce() -> R) -> R {
    let mut plug = MaybeUninit::<bindings::blk_plug>::uninit();
    // SAFETY: blk_start_plug() initialises the plug and links it to the
    // current task; it stays in this frame, unmoved, until
    // blk_finish_plug() unlinks it below (`f` cannot reach it).
    unsafe { bindings::blk_start_plug(plug.as_mut_ptr()) };
    let r = f();
    // SAFETY: the plug started above, on this task.
    unsafe { bindings::blk_finish_plug(plug.as_mut_ptr()) };
    r
}

/// Most pages per bio of [`submit_page_io`] (`BIO_MAX_VECS`).
const MAX_PAGES_PER_BIO: usize = 256;

/// Shared by the bios of one [`submit_page_io`] call.
struct PageIoCtx<F: FnOnce(bool) + Send + 'static> {
    /// Bios not yet completed, plus one held by the submitter.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// Taken once, by whoever drops `remaining` to zero.
    done: UnsafeCell<Option<F>>,
    _buf: Arc<PageBuf>,
}

impl<F: FnOnce(bool) + Send + 'static> PageIoCtx<F> {
    /// Drops one count; the last one runs `done` and frees the context.
    ///
    /// # Safety
    ///
    /// `this` came from `KBox::into_raw` in [`submit_page_io`] and the
    /// caller owns one of its counts.
    unsafe fn put(this: *mut Self, failed: bool) {
        // SAFETY: a count keeps the context alive.
        let ctx = unsafe { &*this };
        if failed {
            ctx.failed.store(true, Ordering::Release);
        }
        if ctx.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the last count: no one else can reach the context now.
        let ctx = unsafe { KBox::from_raw(this) };
        let failed = ctx.failed.load(Ordering::Acquire);
        // SAFETY: as above, we are its only user.
        if let Some(done) = unsafe { (*ctx.done.get()).take() } {
            // The buffer's reference goes before `done` runs:
            // `PageBuf::take_back` relies on it.
            drop(ctx);
            done(failed);
        }
    }
}

/// Reads or writes all of `buf` at `sector` of `dev`, in as many bios as it
/// takes; `done(failed)` runs once when all of them completed, in
/// completion context (possibly an interrupt: it must not sleep). For
/// callers outside any `submit_bio` (a kthread): the bios are dispatched
/// at once. Fails only if the context cannot be allocated (then `done`
/// does not run).
pub fn submit_page_io<F: FnOnce(bool) + Send + 'static>(
    dev: &BdevFile,
    io: PageIo,
    sector: u64,
    buf: Arc<PageBuf>,
    done: F,
) -> Result {
    let bytes = buf.len;
    submit_page_io_part(dev, io, sector, buf, bytes, done)
}

/// [`submit_page_io`] of the first `bytes` of `buf` only (a multiple of
/// 512, at most the buffer's size; EINVAL otherwise, and `done` does not
/// run).
pub fn submit_page_io_part<F: FnOnce(bool) + Send + 'static>(
    dev: &BdevFile,
    io: PageIo,
    sector: u64,
    buf: Arc<PageBuf>,
    bytes: usize,
    done: F,
) -> Result {
    if bytes == 0 || bytes % 512 != 0 || bytes > buf.len {
        return Err(EINVAL);
    }
    let pages = &buf.pages[..bytes.div_ceil(PAGE_SIZE)];
    let chunks = pages.len().div_ceil(MAX_PAGES_PER_BIO);
    let ctx = KBox::new(
        PageIoCtx {
            remaining: AtomicUsize::new(chunks + 1),
            failed: AtomicBool::new(false),
            done: UnsafeCell::new(Some(done)),
            _buf: buf.clone(),
        },
        GFP_KERNEL,
    )?;
    let ctx = KBox::into_raw(ctx);
    let mut sector = sector;
    let mut left = bytes;
    for pages in pages.chunks(MAX_PAGES_PER_BIO) {
        // SAFETY: the file is open; the bio's private pointer is the
        // context, whose count for this bio `page_io_end` drops.
        let bio = unsafe {
            rdm_bio_alloc_pages(
                dev.file.as_ptr(),
                pages.len() as c_uint,
                io != PageIo::Read,
                matches!(io, PageIo::WriteFua | PageIo::WriteFlushFua),
                io == PageIo::WriteFlushFua,
                sector,
                Some(page_io_end::<F>),
                ctx.cast(),
            )
        };
        for page in pages {
            let n = left.min(PAGE_SIZE);
            left -= n;
            // SAFETY: the bio has room for `pages.len()` vectors, so the
            // add cannot fail; the page stays allocated while the context
            // (holding `buf`) lives, which is until every bio completed.
            let _ = unsafe { bindings::bio_add_page(bio, page.as_ptr(), n as c_uint, 0) };
            sector += (n >> 9) as u64;
        }
        // SAFETY: a complete bio of ours, handed to the block layer.
        unsafe { bindings::submit_bio(bio) };
    }
    // SAFETY: drops the submitter's count.
    unsafe { PageIoCtx::put(ctx, false) };
    Ok(())
}

/// The state a synchronous batch of [`page_io_sync`] waits on.
struct SyncIo {
    left: DrainCounter,
    failed: AtomicBool,
}

/// Reads or writes each `(sector, buffer)` of `reqs` on `dev`, all in
/// flight at once (one plug), and sleeps until every one completed; EIO if
/// any failed. Process context, no spinlock held; the caller must not hold
/// anything the devices' I/O needs.
pub fn page_io_sync(dev: &BdevFile, io: PageIo, reqs: &mut [(u64, &mut PageBuf)]) -> Result {
    let state = Arc::new(
        SyncIo {
            left: DrainCounter::new(),
            failed: AtomicBool::new(false),
        },
        GFP_KERNEL,
    )?;
    // The pages go into shared buffers for the I/O and come back after.
    let mut shared = KVec::with_capacity(reqs.len(), GFP_KERNEL)?;
    let mut res = Ok(());
    with_plug(|| {
        for (sector, buf) in reqs.iter_mut() {
            let own = PageBuf {
                pages: core::mem::take(&mut buf.pages),
                len: buf.len,
            };
            let arc = match own.lend() {
                Ok(arc) => arc,
                Err(own) => {
                    buf.pages = own.pages;
                    res = Err(ENOMEM);
                    break;
                }
            };
            let st = state.clone();
            state.left.inc();
            let done = move |failed: bool| {
                if failed {
                    st.failed.store(true, Ordering::Release);
                }
                st.left.dec();
            };
            if let Err(e) = submit_page_io(dev, io, *sector, arc.clone(), done) {
                state.left.dec();
                res = Err(e);
            }
            // Room was reserved: this push does not allocate.
            let _ = shared.push(arc, GFP_KERNEL);
            if res.is_err() {
                break;
            }
        }
    });
    state.left.wait_zero();
    // Every I/O completed and dropped its reference: each buffer is ours
    // alone again and goes back to its owner.
    for ((_, buf), arc) in reqs.iter_mut().zip(shared) {
        match PageBuf::take_back(arc) {
            Some(own) => buf.pages = own.pages,
            None => {
                // Cannot happen (see above); an empty buffer refuses use.
                buf.len = 0;
                res = Err(EIO);
            }
        }
    }
    if state.failed.load(Ordering::Acquire) {
        res = Err(EIO);
    }
    res
}

/// # Safety
///
/// The end_io of a bio made by [`submit_page_io`].
unsafe extern "C" fn page_io_end<F: FnOnce(bool) + Send + 'static>(bio: *mut bindings::bio) {
    // SAFETY: the bio is ours, completing; its private pointer is the
    // context, one of whose counts it owns.
    unsafe {
        let ctx = (*bio).bi_private.cast::<PageIoCtx<F>>();
        let failed = rdm_bio_failed(bio);
        bindings::bio_put(bio);
        PageIoCtx::put(ctx, failed);
    }
}
