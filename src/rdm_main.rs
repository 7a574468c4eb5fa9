// SPDX-License-Identifier: GPL-2.0

//! rdm: a device-mapper-style block driver with copy-on-write snapshots.
//!
//! Crate layout (see `Documentation/design.rst`):
//! - [`rdm_core`]: kernel-free logic shared with `rdmsetup` and host tests;
//! - [`kx`]: the safe abstractions the 6.12 `kernel` crate lacks (`rust/`);
//! - [`control`]: the device-mapper ioctl interface on `/dev/rdm-control`
//!   and the registry of mapped devices;
//! - [`device`] and [`table`]: mapped devices and their tables;
//! - [`target`]: the target API, below both the devices and the targets;
//! - the targets: [`basic`], [`striped`], [`snapshot::targets`] (over the
//!   snapshot engine, [`snapshot`]).

// `pin_init!` of a struct with many fields (`MappedDevice`, `Snap`, the
// snapshot's state) nests its macros deeper than the default limit of 128.
#![recursion_limit = "256"]

use kernel::prelude::*;

#[path = "core/mod.rs"]
pub mod rdm_core;

#[path = "../rust/mod.rs"]
pub mod kx;

mod basic;
mod control;
mod device;
mod params;
mod snapshot;
mod striped;
mod table;
mod target;

crate::module_param!(
    static DM_COMPAT: bool = false,
    name "dm_compat", perm 0o444,
    desc "Register as device-mapper (misc 10:236 /dev/mapper/control, block major \"device-mapper\") so unmodified dmsetup drives rdm; fails if dm-mod is loaded"
);

module! {
    type: Rdm,
    name: "rdm",
    author: "rdm developers",
    description: "device-mapper-style block driver with copy-on-write snapshots",
    license: "GPL",
}

struct Rdm {
    // Dropped in this order: no new control file, then the block major,
    // then the copier thread (no device, so no copy, is left by then).
    _control: control::ControlDevice,
    _major: kx::block::BlockMajor,
    _copier: kx::kthread::Kthread<snapshot::copier::CopierThread>,
}

impl kernel::Module for Rdm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // `dm_compat`: read-only after load (0444).
        let compat = DM_COMPAT.get();
        let (major_name, disk_prefix) = if compat {
            (kernel::c_str!("device-mapper"), "dm-")
        } else {
            (kernel::c_str!("rdm"), "rdm-")
        };
        let major = kx::block::BlockMajor::register(major_name)?;
        let wq = kx::workqueue::OwnedQueue::new(kernel::c_str!("rdm"))?;
        let copier = snapshot::copier::Copier::new()?;
        let copier_thread = copier.start()?;
        let snapshots = snapshot::Snapshots::new(copier)?;
        // The target types, in DM_LIST_VERSIONS order; the snapshot
        // targets' constructors hold the snapshot registry.
        let mut types = target::TargetTypes::new();
        basic::register(&mut types)?;
        striped::register(&mut types)?;
        snapshot::targets::register(&mut types, &snapshots)?;
        drop(snapshots);
        let wq = kernel::sync::Arc::new(wq, GFP_KERNEL)?;
        let global_event =
            kernel::sync::Arc::pin_init(crate::new_poll_event!("rdm:global_event"), GFP_KERNEL)?;
        let registry = kernel::sync::Arc::pin_init(
            control::Registry::new(major.major(), disk_prefix, wq, types, global_event),
            GFP_KERNEL,
        )?;
        let control = control::ControlDevice::register(registry, compat)?;
        let [v0, v1, v2] = rdm_core::dm_ioctl::VERSION;
        pr_info!(
            "loaded, dm ioctl interface {v0}.{v1}.{v2}, block major {}{}\n",
            major.major(),
            if compat { ", dm_compat" } else { "" }
        );
        Ok(Rdm {
            _control: control,
            _major: major,
            _copier: copier_thread,
        })
    }
}

impl Drop for Rdm {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
