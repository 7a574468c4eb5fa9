// SPDX-License-Identifier: GPL-2.0

//! Invalidation of a snapshot: marking it invalid in memory, reporting a
//! COW device that shrank, and the copier's job that writes the invalid
//! header of a persistent snapshot (origin writes that stop copying for
//! it are held on that job: `Documentation/snapshots.rst`, "Invalidation").

use super::copier::Job;
use super::snap::Snap;
use super::Caller;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;

impl Snap {
    /// Marks the snapshot invalid (its I/O fails from now on) and raises an
    /// event. Any context without locks that sleep.
    pub(crate) fn invalidate(&self, why: &str) {
        if self.valid.swap(false, Ordering::AcqRel) {
            if let Some(p) = self.store.persistent() {
                p.mark_invalid();
            }
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(self.cow.devt());
            pr_err!("snapshot on COW device {ma}:{mi} invalidated: {why}\n");
            self.events.bump();
        }
    }

    /// The COW device shrank below the `in_use` sectors the snapshot
    /// holds: logged once (until an allocation succeeds again). The
    /// snapshot stays valid; the writes that need a new chunk fail with
    /// ENOSPC, and reads of chunks past the device's end fail there.
    pub(super) fn report_shrunk(&self, in_use: u64) {
        if !self.shrunk.swap(true, Ordering::AcqRel) {
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(self.cow.devt());
            pr_err!(
                "snapshot on COW device {ma}:{mi}: the COW device shrank to {} sectors, below the {in_use} sectors in use: writes that need a new chunk fail (ENOSPC) until it grows back; the snapshot is kept\n",
                self.cow.nr_sectors()
            );
            self.events.bump();
        }
    }

    /// The copier's job that writes this (persistent) snapshot's header
    /// with valid = 0, made and queued if there is none; `None` if the
    /// header says so already (or the store is transient).
    ///
    /// Origin writers (submit path or copier), holding no lock: takes
    /// `header_job` (a leaf) twice, allocating between; the job is counted
    /// in `outstanding` and takes a throttle permit past `cow_threshold`
    /// (it is what lets held writes go). Never waits for I/O. Errors:
    /// ENOMEM.
    pub(super) fn invalid_header_job(self: &Arc<Self>) -> Result<Option<Arc<Job>>> {
        let Some(p) = self.store.persistent() else {
            return Ok(None);
        };
        if let Some(job) = self.header_job.lock().clone() {
            return Ok(Some(job));
        }
        let new = Job::invalid_header(&self.lane, self)?;
        let mut current = self.header_job.lock();
        if let Some(job) = current.clone() {
            drop(current);
            drop(new);
            return Ok(Some(job));
        }
        // Checked under the lock that the write's end takes after
        // clearing the flag: no job is made for a header already written.
        if !p.invalid_unsynced() {
            drop(current);
            drop(new);
            return Ok(None);
        }
        *current = Some(new.clone());
        drop(current);
        // Counted like an exception: a teardown that comes later waits for
        // it (one already past its wait writes the header itself, and the
        // job's reference keeps the snapshot, and so the COW device, open
        // until the write is over).
        self.outstanding.inc();
        // Never throttled: it is what lets held writes go.
        self.lane.take_permit(Caller::Copier);
        new.clone().enqueue();
        Ok(Some(new))
    }

    /// The copier's invalid header write ended (`failed`: with an error,
    /// logged by the store): the store's [`Invalidation`] moves on, the
    /// job is forgotten and `outstanding` falls. Copier thread.
    ///
    /// [`Invalidation`]: crate::rdm_core::lifecycle::Invalidation
    pub(crate) fn invalid_header_written(&self, job: &Arc<Job>, failed: bool) {
        if let Some(p) = self.store.persistent() {
            p.invalid_header_written(failed);
            let mut current = self.header_job.lock();
            if current.as_ref().is_some_and(|j| Arc::ptr_eq(j, job)) {
                *current = None;
            }
        }
        self.outstanding.dec();
    }
}
