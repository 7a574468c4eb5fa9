// SPDX-License-Identifier: GPL-2.0

//! Bios held until something ends (a copy job, a merge batch): a list
//! that takes no allocation under the lock guarding it, and gives its
//! items back in the order they arrived.

use core::mem::MaybeUninit;
use kernel::alloc::{flags::GFP_KERNEL, AllocError, KBox};

/// Items held until something ends, newest first.
///
/// # Invariants
///
/// Each node is owned by the one before it (the first by `head`): the
/// list is a chain of boxes, which [`HeldList::into_arrival_order`] and
/// `drop` take apart one node at a time (never by recursion, which a long
/// list would turn into a stack overflow).
pub(super) struct HeldList<T> {
    head: Option<KBox<Node<T>>>,
}

/// One held item.
pub(super) struct Node<T> {
    item: T,
    next: Option<KBox<Node<T>>>,
}

/// A node allocated ahead, before the list's lock is taken, for
/// [`HeldList::push`].
pub(super) type NewNode<T> = KBox<MaybeUninit<Node<T>>>;

impl<T> HeldList<T> {
    /// An empty list.
    pub(super) const fn new() -> Self {
        HeldList { head: None }
    }

    /// A node for one [`HeldList::push`]: allocated (and may sleep) with
    /// no lock held.
    pub(super) fn new_node() -> Result<NewNode<T>, AllocError> {
        KBox::new_uninit(GFP_KERNEL)
    }

    /// Holds `item` in `node`. Allocates nothing: callable under the lock
    /// that guards the list.
    pub(super) fn push(&mut self, node: NewNode<T>, item: T) {
        let next = self.head.take();
        self.head = Some(KBox::write(node, Node { item, next }));
    }

    /// Takes every item out, leaving the list empty (under its lock; the
    /// items are then released with it dropped).
    pub(super) fn take(&mut self) -> Self {
        HeldList {
            head: self.head.take(),
        }
    }

    /// The items, oldest first.
    pub(super) fn into_arrival_order(mut self) -> ArrivalOrder<T> {
        let mut newest_first = self.head.take();
        let mut oldest_first = None;
        while let Some(mut node) = newest_first {
            newest_first = node.next.take();
            node.next = oldest_first;
            oldest_first = Some(node);
        }
        ArrivalOrder { next: oldest_first }
    }
}

impl<T> Drop for HeldList<T> {
    fn drop(&mut self) {
        // One node at a time (see the invariants); a held bio dropped
        // unreleased ends with an error.
        let mut next = self.head.take();
        while let Some(mut node) = next {
            next = node.next.take();
        }
    }
}

/// The items of a [`HeldList`], oldest first.
pub(super) struct ArrivalOrder<T> {
    next: Option<KBox<Node<T>>>,
}

impl<T> Iterator for ArrivalOrder<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let mut node = self.next.take()?;
        self.next = node.next.take();
        Some(KBox::into_inner(node).item)
    }
}

impl<T> Drop for ArrivalOrder<T> {
    fn drop(&mut self) {
        // One node at a time, as `HeldList`'s drop.
        for _item in self.by_ref() {}
    }
}
