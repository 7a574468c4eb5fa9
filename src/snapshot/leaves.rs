// SPDX-License-Identifier: GPL-2.0

//! The storage of a snapshot's exception-table leaves, in the kernel.

use crate::rdm_core::exception_table::{Leaf, LeafVec, NoMemory};
use kernel::prelude::*;

/// The leaves of an exception table, in the kernel.
pub(crate) struct KLeaves(KVec<KBox<Leaf>>);

impl KLeaves {
    /// No leaves.
    pub(crate) fn new() -> Self {
        KLeaves(KVec::new())
    }
}

impl LeafVec for KLeaves {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn leaf(&self, i: usize) -> &Leaf {
        &self.0[i]
    }
    fn leaf_mut(&mut self, i: usize) -> &mut Leaf {
        &mut self.0[i]
    }
    fn insert_empty(&mut self, i: usize) -> Result<(), NoMemory> {
        let leaf = KBox::new(Leaf::EMPTY, GFP_KERNEL).map_err(|_| NoMemory)?;
        self.0.push(leaf, GFP_KERNEL).map_err(|_| NoMemory)?;
        self.0[i..].rotate_right(1);
        Ok(())
    }
    fn bytes(&self) -> usize {
        self.0.len() * core::mem::size_of::<Leaf>()
            + self.0.capacity() * core::mem::size_of::<KBox<Leaf>>()
    }
}
