//! Host build of rdm's kernel-free core.
//!
//! The kernel module includes `mod.rs` directly (`#[path]` in
//! `src/rdm_main.rs`); this crate root exists so the same files are built
//! and unit-tested on the host and shared with `rdmsetup`. Nothing here may
//! use `std`, `alloc` or the `kernel` crate outside `#[cfg(test)]`.
#![no_std]

#[cfg(test)]
extern crate std;

#[path = "mod.rs"]
mod core_mod;
pub use core_mod::*;
