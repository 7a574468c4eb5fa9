// SPDX-License-Identifier: GPL-2.0

//! rdm: a device-mapper-style block driver with copy-on-write snapshots.
//!
//! Crate layout (see `Documentation/design.rst`):
//! - [`rdm_core`]: kernel-free logic shared with `rdmsetup` and host tests;
//! - [`kx`]: the safe abstractions the 6.12 `kernel` crate lacks (`rust/`);
//! - [`control`]: the device-mapper ioctl interface on `/dev/rdm-control`.

use kernel::prelude::*;

#[path = "core/mod.rs"]
pub mod rdm_core;

#[path = "../rust/mod.rs"]
pub mod kx;

mod control;

module! {
    type: Rdm,
    name: "rdm",
    author: "rdm developers",
    description: "device-mapper-style block driver with copy-on-write snapshots",
    license: "GPL",
}

struct Rdm {
    _control: control::ControlDevice,
}

impl kernel::Module for Rdm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let control = control::ControlDevice::register()?;
        let [major, minor, patch] = rdm_core::dm_ioctl::VERSION;
        pr_info!("loaded, dm ioctl interface {major}.{minor}.{patch}\n");
        Ok(Rdm { _control: control })
    }
}

impl Drop for Rdm {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
