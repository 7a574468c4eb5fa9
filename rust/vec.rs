//! What 6.12's `KVec`/`KVVec` lack: taking the last element off
//! (`Vec::pop` arrived in later kernels).

use kernel::alloc::{Allocator, Vec};

/// Removes the last element of `v` and returns it (`None` if empty).
pub fn pop<T, A: Allocator>(v: &mut Vec<T, A>) -> Option<T> {
    let len = v.len();
    let last = len.checked_sub(1)?;
    // SAFETY: the element at `last` is initialised (it is below `len`).
    // `set_len(last)` first makes the vector stop owning it, so it is read
    // out exactly once and never dropped by the vector; `last < len <=
    // capacity`, as `set_len` requires, and the elements below `last`
    // stay initialised.
    unsafe {
        v.set_len(last);
        Some(core::ptr::read(v.as_ptr().add(last)))
    }
}
