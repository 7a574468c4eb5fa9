// SPDX-License-Identifier: GPL-2.0

//! The memory of a snapshot's exception table, in the kernel.
//!
//! Leaves (2 KiB) and pages of leaf slots (4 KiB) are single `kmalloc`s
//! of at most a page; the page directory is a `KVVec`, which `kvmalloc`
//! takes from `vmalloc` when it outgrows a page. So the table never needs
//! a physically contiguous allocation of order 1 or more, which the
//! copier's `NoIo` scope (no compaction) could not count on, and has no
//! `KMALLOC_MAX_SIZE` ceiling.

use crate::rdm_core::exception_table::{DirEntry, Leaf, NoMemory, Slot, TableMem, PAGE_SLOTS};
use kernel::prelude::*;

/// A page of leaf slots.
type KPage = KVec<Slot<KBox<Leaf>>>;

// A page is one 4 KiB allocation (an order-0 slab object).
kernel::static_assert!(core::mem::size_of::<Slot<KBox<Leaf>>>() * PAGE_SLOTS == 4096);
kernel::static_assert!(core::mem::size_of::<Leaf>() <= 2048);

/// The kernel's allocators for an exception table.
pub(crate) struct KLeaves;

impl KLeaves {
    /// The allocators (they hold nothing).
    pub(crate) fn new() -> Self {
        KLeaves
    }
}

impl TableMem for KLeaves {
    const PAGE_SLOTS: usize = PAGE_SLOTS;
    type Leaf = KBox<Leaf>;
    type Page = KPage;
    type Dir = KVVec<DirEntry<KPage>>;

    fn new_leaf(&mut self) -> Result<KBox<Leaf>, NoMemory> {
        KBox::new(Leaf::EMPTY, GFP_KERNEL).map_err(|_| NoMemory)
    }

    fn new_page(&mut self) -> Result<KPage, NoMemory> {
        let mut page = KVec::with_capacity(PAGE_SLOTS, GFP_KERNEL).map_err(|_| NoMemory)?;
        for _ in 0..PAGE_SLOTS {
            // Within the capacity: allocates nothing.
            page.push(Slot::EMPTY, GFP_KERNEL).map_err(|_| NoMemory)?;
        }
        Ok(page)
    }

    fn new_dir(&mut self) -> KVVec<DirEntry<KPage>> {
        KVVec::new()
    }

    fn reserve_dir(&mut self, dir: &mut KVVec<DirEntry<KPage>>) -> Result<(), NoMemory> {
        dir.reserve(1, GFP_KERNEL).map_err(|_| NoMemory)
    }

    fn push_dir(
        &mut self,
        dir: &mut KVVec<DirEntry<KPage>>,
        entry: DirEntry<KPage>,
    ) -> Result<(), NoMemory> {
        // Room is reserved: allocates nothing.
        dir.push(entry, GFP_KERNEL).map_err(|_| NoMemory)
    }

    fn dir_capacity(&self, dir: &KVVec<DirEntry<KPage>>) -> usize {
        dir.capacity()
    }
}
