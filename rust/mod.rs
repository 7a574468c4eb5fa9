//! rdm's `rust/` layer: safe abstractions over kernel interfaces that the
//! 6.12 `kernel` crate does not wrap. Every `unsafe` of the module lives
//! here (and in the C helper object `helpers.c` beside it); nothing here
//! knows about device-mapper.

pub mod block;
pub mod capability;
pub mod kthread;
pub mod memalloc;
pub mod miscdevice;
pub mod module;
pub mod param;
pub mod srcu;
pub mod sync;
pub mod vec;
pub mod wait;
pub mod workqueue;
