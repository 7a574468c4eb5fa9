//! The snapshot engine's module parameters, in rdm.ko and rdm-dm.ko alike
//! (`/sys/module/rdm/parameters/`, `/sys/module/rdm_dm/parameters/`;
//! Documentation/admin-guide.rst describes them). Each module has its own
//! values. A host's own parameters are in its crate root.

crate::module_param!(
    static COW_THRESHOLD: u32 = 2048,
    name "cow_threshold", perm 0o644,
    desc "Most chunk copies in progress at once; a write needing one more waits (0: no limit)"
);

crate::module_param!(
    static COPY_DELAY_MS: u32 = 0,
    name "copy_delay_ms", perm 0o644,
    desc "Test knob: hold each chunk copy this many milliseconds before it starts (0: off)"
);

crate::module_param!(
    static MERGE_KIB_PER_S: u32 = 0,
    name "merge_kib_per_s", perm 0o644,
    desc "Most KiB per second a snapshot merge copies back (0: as fast as the disks allow)"
);

/// `cow_threshold`: most chunk copies in progress (0: no limit). Writable at
/// run time, so read it each time.
pub(crate) fn cow_threshold() -> u32 {
    COW_THRESHOLD.get()
}

/// `copy_delay_ms`, a test knob: how long each copy is held before it starts
/// (0: not at all).
pub(crate) fn copy_delay_ms() -> u32 {
    COPY_DELAY_MS.get()
}

/// `merge_kib_per_s`: the most a merge copies back per second, in KiB (0: no
/// limit). Writable at run time.
pub(crate) fn merge_kib_per_s() -> u32 {
    MERGE_KIB_PER_S.get()
}
