//! Bio-based block devices: the pieces a device-mapper-like driver needs and
//! 6.12's `kernel::block` (which wraps only blk-mq) lacks.
//!
//! - [`BdevFile`]: an underlying block device opened exclusively for a holder;
//! - [`Bio`]: an owned bio, which must be ended or submitted exactly once;
//! - [`BioSet`]: a bio pool whose clones carry typed per-clone data and call
//!   back a [`CloneEnd`] on completion, and which sends groups of empty
//!   cache flushes that report to a [`FlushesDone`] when the last one ends;
//! - [`GenDisk`]: a bio-based gendisk whose `submit_bio`, `open` and
//!   `release` go to a [`BioDriver`];
//! - [`BlockMajor`]: a registered block major;
//! - [`PageBuf`] and page I/O: buffers of whole pages read and written
//!   with bios of their own (chunks, metadata areas).
//!
//! The C side is in `helpers.c` (macros and inline functions of
//! `<linux/bio.h>` and `<linux/blkdev.h>`).
//!
//! C headers: [`include/linux/bio.h`](srctree/include/linux/bio.h),
//! [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//!
//! One file each: `bdev.rs` (underlying devices, queue limits), `bio.rs`
//! (owned bios and lists of them), `bioset.rs` (clones, splits, flush
//! groups), `gendisk.rs` (the disk, its driver, its sysfs attributes, the
//! block major), `page_io.rs` (page buffers and their I/O).

mod bdev;
mod bio;
mod bioset;
mod ffi;
mod gendisk;
mod page_io;

pub use bdev::*;
pub use bio::*;
pub use bioset::*;
pub use gendisk::*;
pub use page_io::*;
