// SPDX-License-Identifier: GPL-2.0

//! rdm-dm: rdm's snapshot engine as target types of the kernel's own
//! device-mapper (dm-mod), beside or instead of dm-snapshot.
//!
//! The same engine as rdm.ko (`snapshot`, `target`, `rdm_core`, `kx`),
//! compiled a second time in this crate with another host around it:
//! [`dmhost`] over [`kx_dm`] (the target API of `device-mapper.h`) instead
//! of rdm's control device, mapped devices and tables. See
//! `Documentation/design.rst` ("two hosts") and the admin guide ("two ways
//! to run rdm").

// As in rdm_main.rs: `pin_init!` of the snapshot's state nests deeply.
#![recursion_limit = "256"]

use kernel::prelude::*;

#[path = "core/mod.rs"]
pub mod rdm_core;

#[path = "../rust/mod.rs"]
pub mod kx;

#[path = "../rust/dm.rs"]
pub mod kx_dm;

mod dmhost;
mod params;
mod snapshot;
// Parts of the target API serve only rdm's own host (its tables' device
// lists and limits, NOWAIT, clones for the basic targets): unused here,
// and checked for use where rdm.ko compiles the same file.
#[allow(dead_code)]
mod target;

crate::module_param!(
    static DM_NAMES: bool = false,
    name "dm_names", perm 0o444,
    desc "Register the targets under dm-snapshot's names (snapshot-origin, snapshot, snapshot-merge) instead of rdm-snap-origin, rdm-snapshot and rdm-snap-merge, so unmodified LVM2 uses rdm's engine; fails if dm-snapshot is loaded"
);

module! {
    type: RdmDm,
    name: "rdm_dm",
    author: "rdm developers",
    description: "rdm's copy-on-write snapshot engine as device-mapper targets",
    license: "GPL",
}

struct RdmDm {
    // Dropped in this order: the target types (no table uses them: each
    // holds a reference on this module), with them the snapshot registry,
    // then the copier thread, then the event queue (after its last work).
    _types: KVec<kx_dm::TypeRegistration>,
    _copier: kx::kthread::Kthread<snapshot::copier::CopierThread>,
    _events: kx_dm::EventQueue,
}

impl kernel::Module for RdmDm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let dm_names = DM_NAMES.get();
        let events = kx_dm::EventQueue::new()?;
        let copier = snapshot::copier::Copier::new()?;
        let copier_thread = copier.start()?;
        let snapshots = snapshot::Snapshots::new(copier)?;
        let mut types = target::TargetTypes::new();
        snapshot::targets::register(&mut types, &snapshots)?;
        drop(snapshots);
        let types = dmhost::register(types, dm_names)?;
        pr_info!(
            "loaded: rdm's snapshot engine serves device-mapper targets {}\n",
            if dm_names {
                "snapshot-origin, snapshot and snapshot-merge (in place of dm-snapshot)"
            } else {
                "rdm-snap-origin, rdm-snapshot and rdm-snap-merge"
            }
        );
        Ok(RdmDm {
            _types: types,
            _copier: copier_thread,
            _events: events,
        })
    }
}

impl Drop for RdmDm {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
