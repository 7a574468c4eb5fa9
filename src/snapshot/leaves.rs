// SPDX-License-Identifier: GPL-2.0

//! The memory of a snapshot's exception table, in the kernel.
//!
//! Leaves (2 KiB) and pages of leaf leaf pointers (4 KiB) are single `kmalloc`s
//! of at most a page; the page directory is a `KVVec`, which `kvmalloc`
//! takes from `vmalloc` when it outgrows a page. So the table never needs
//! a physically contiguous allocation of order 1 or more, which the
//! copier's `NoIo` scope (no compaction) could not count on, and has no
//! `KMALLOC_MAX_SIZE` ceiling.

use crate::kx::vec;
use crate::rdm_core::exception_table::{
    DirEntry, Leaf, LeafPtr, NoMemory, TableMem, PTRS_PER_PAGE,
};
use kernel::prelude::*;

/// A page of leaf leaf pointers.
type KPage = KVec<LeafPtr<KBox<Leaf>>>;

// A page is one 4 KiB allocation (an order-0 slab object).
kernel::static_assert!(core::mem::size_of::<LeafPtr<KBox<Leaf>>>() * PTRS_PER_PAGE == 4096);
kernel::static_assert!(core::mem::size_of::<Leaf>() <= 2048);

/// The kernel's allocators for an exception table, with what a merge set
/// aside for the removals of its batch (see
/// `ExceptionTable::reserve_for_removal`).
pub(crate) struct KLeaves {
    spare_leaves: KVVec<KBox<Leaf>>,
    spare_pages: KVVec<KPage>,
}

impl KLeaves {
    /// The allocators, with nothing set aside.
    pub(crate) fn new() -> Self {
        KLeaves {
            spare_leaves: KVVec::new(),
            spare_pages: KVVec::new(),
        }
    }

    fn alloc_page() -> Result<KPage, NoMemory> {
        let mut page = KVec::with_capacity(PTRS_PER_PAGE, GFP_KERNEL).map_err(|_| NoMemory)?;
        for _ in 0..PTRS_PER_PAGE {
            // Within the capacity: allocates nothing.
            page.push(LeafPtr::EMPTY, GFP_KERNEL)
                .map_err(|_| NoMemory)?;
        }
        Ok(page)
    }
}

impl TableMem for KLeaves {
    const PTRS_PER_PAGE: usize = PTRS_PER_PAGE;
    type Leaf = KBox<Leaf>;
    type Page = KPage;
    type Dir = KVVec<DirEntry<KPage>>;

    fn new_leaf(&mut self) -> Result<KBox<Leaf>, NoMemory> {
        if let Some(leaf) = vec::pop(&mut self.spare_leaves) {
            return Ok(leaf);
        }
        KBox::new(Leaf::EMPTY, GFP_KERNEL).map_err(|_| NoMemory)
    }

    fn new_page(&mut self) -> Result<KPage, NoMemory> {
        if let Some(page) = vec::pop(&mut self.spare_pages) {
            return Ok(page);
        }
        Self::alloc_page()
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

    fn pop_dir(&mut self, dir: &mut KVVec<DirEntry<KPage>>) -> Option<DirEntry<KPage>> {
        vec::pop(dir)
    }

    fn reserve(
        &mut self,
        dir: &mut KVVec<DirEntry<KPage>>,
        leaves: usize,
        pages: usize,
    ) -> Result<(), NoMemory> {
        // The spare lists are `KVVec`s: no high-order allocation however
        // many splits a batch has (one is rare: only a list whose order
        // differs from the allocation order, as on a COW device dm
        // wrote, splits runs).
        self.spare_leaves
            .reserve(leaves.saturating_sub(self.spare_leaves.len()), GFP_KERNEL)
            .map_err(|_| NoMemory)?;
        self.spare_pages
            .reserve(pages.saturating_sub(self.spare_pages.len()), GFP_KERNEL)
            .map_err(|_| NoMemory)?;
        while self.spare_leaves.len() < leaves {
            let leaf = KBox::new(Leaf::EMPTY, GFP_KERNEL).map_err(|_| NoMemory)?;
            // Room reserved above: allocates nothing.
            self.spare_leaves
                .push(leaf, GFP_KERNEL)
                .map_err(|_| NoMemory)?;
        }
        while self.spare_pages.len() < pages {
            let page = Self::alloc_page()?;
            self.spare_pages
                .push(page, GFP_KERNEL)
                .map_err(|_| NoMemory)?;
        }
        dir.reserve(pages, GFP_KERNEL).map_err(|_| NoMemory)
    }
}
