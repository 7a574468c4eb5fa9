// SPDX-License-Identifier: GPL-2.0

//! The snapshot engine's clone-end hooks ([`CloneHook`]): what runs when a
//! clone a snapshot or origin target sent ends. Completion context (may be
//! hard IRQ): no sleeping, and nothing whose destructor sleeps is dropped
//! (the reference a hook holds is never the last: the target's bio still
//! counts its table, whose target holds the same object).

use super::{Job, Snap};
use crate::target::{CloneHook, CountedBio, EndHook};
use kernel::sync::Arc;

/// The word of a [`Snap`]'s hook that means "uncount a snapshot write"
/// (any other word is a chunk to un-track; chunk numbers are sectors
/// divided by the chunk size, so never this).
const UNCOUNT: u64 = u64::MAX;

/// A snapshot read of `chunk` sent to the origin, or a write to a merging
/// origin sent to the chunk's COW copy: un-track the chunk when it ends.
pub(super) fn untrack(snap: &Arc<Snap>, chunk: u64) -> EndHook {
    EndHook::new(snap.clone(), chunk)
}

/// A write to a snapshot device (counted in `Snap::writes`): uncount it
/// when it ends.
pub(super) fn uncount(snap: &Arc<Snap>) -> EndHook {
    EndHook::new(snap.clone(), UNCOUNT)
}

/// A whole-chunk snapshot write that is its own copy: acknowledged when
/// its job ends.
pub(super) fn own_write(job: &Arc<Job>) -> EndHook {
    EndHook::new(job.clone(), 0)
}

impl CloneHook for Snap {
    fn clone_ended(self: Arc<Self>, word: u64, done: CountedBio) {
        if word == UNCOUNT {
            self.writes.dec();
        } else {
            self.untrack(word);
        }
        // Not the last reference: `done` still counts the table, whose
        // target holds the snapshot.
        drop(self);
        done.end(false);
    }
}

impl CloneHook for Job {
    fn clone_ended(self: Arc<Self>, _word: u64, done: CountedBio) {
        self.own_write_done(done);
    }
}
