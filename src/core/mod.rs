//! rdm's kernel-free core: code that needs no kernel, shared by the module,
//! `rdmsetup` and the host tests.

pub mod dm_ioctl;
pub mod exception_table;
pub mod lifecycle;
pub mod payload;
pub mod persistent;
pub mod snapshot;
pub mod striped;
pub mod table;
