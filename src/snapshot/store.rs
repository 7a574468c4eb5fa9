// SPDX-License-Identifier: GPL-2.0

//! Exception stores: where a snapshot's COW chunks come from and how its
//! exceptions are kept, in the spirit of `dm-exception-store.h`.
//!
//! The store only allocates and accounts; the exception table in memory is
//! the snapshot's (see `mod.rs`). The transient store (`N`) keeps nothing
//! on disk: chunks are handed out from the start of the COW device and the
//! snapshot is lost when it goes. The persistent store (`P`, `PO`) comes
//! with its on-disk format.

use crate::rdm_core::snapshot::{ChunkGeometry, StoreKind};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

/// What every exception store does.
pub(crate) trait ExceptionStore: Send + Sync {
    /// Takes a free COW chunk for a new exception, or `None` if the COW
    /// device is full.
    fn prepare_exception(&self) -> Option<u64>;

    /// `(sectors allocated, total sectors, metadata sectors)` for status.
    fn usage(&self) -> (u64, u64, u64);

    /// The store's letter in the table line.
    fn kind(&self) -> StoreKind;

    /// Status text of a valid snapshot: `<allocated>/<total> <metadata>`.
    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        let (allocated, total, metadata) = self.usage();
        write!(out, "{allocated}/{total} {metadata}")
    }
}

/// The transient store (dm-snap-transient.c): the next free chunk only.
pub(crate) struct Transient {
    geom: ChunkGeometry,
    /// First free sector of the COW device.
    next_free: AtomicU64,
    /// Size of the COW device in sectors.
    cow_sectors: u64,
}

impl Transient {
    pub(crate) fn new(geom: ChunkGeometry, cow_sectors: u64) -> Self {
        Transient {
            geom,
            next_free: AtomicU64::new(0),
            cow_sectors,
        }
    }

    /// The smallest COW device the store can use: one chunk.
    pub(crate) fn min_cow_sectors(geom: ChunkGeometry) -> u64 {
        geom.sectors()
    }
}

impl ExceptionStore for Transient {
    fn prepare_exception(&self) -> Option<u64> {
        let size = self.geom.sectors();
        let cow = self.cow_sectors;
        self.next_free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                (next + size <= cow).then_some(next + size)
            })
            .ok()
            .map(|sector| self.geom.chunk_of(sector))
    }

    fn usage(&self) -> (u64, u64, u64) {
        (self.next_free.load(Ordering::Acquire), self.cow_sectors, 0)
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Transient
    }
}
