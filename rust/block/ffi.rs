//! The C helpers of the block abstractions (`helpers.c`).

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

#[allow(
    improper_ctypes,
    reason = "kernel structs only cross by pointer; their layout is bindgen's"
)]
extern "C" {
    pub(super) fn rdm_alloc_disk(lim: *mut bindings::queue_limits) -> *mut bindings::gendisk;
    pub(super) fn rdm_add_disk(
        disk: *mut bindings::gendisk,
        groups: *const *const bindings::attribute_group,
        fops: *const bindings::block_device_operations,
        private_data: *mut c_void,
        major: c_int,
        minor: c_int,
        name: *const c_char,
    ) -> c_int;
    pub(super) fn rdm_disk_private(disk: *mut bindings::gendisk) -> *mut c_void;
    pub(super) fn rdm_dev_to_disk(dev: *mut bindings::device) -> *mut bindings::gendisk;
    pub(super) fn rdm_sysfs_attr_init(attr: *mut bindings::attribute);
    pub(super) fn rdm_disk_uevent(
        disk: *mut bindings::gendisk,
        action: c_uint,
        envp: *const *mut c_char,
    ) -> c_int;
    pub(super) fn rdm_disk_devt(disk: *mut bindings::gendisk) -> u64;
    pub(super) fn rdm_bdev_open_path(
        path: *const c_char,
        write: bool,
        holder: *mut c_void,
    ) -> *mut bindings::file;
    pub(super) fn rdm_bdev_open_dev(
        dev: u64,
        write: bool,
        holder: *mut c_void,
    ) -> *mut bindings::file;
    pub(super) fn rdm_bdev_put_sync(f: *mut bindings::file);
    pub(super) fn rdm_bdev_devt(f: *mut bindings::file) -> u64;
    pub(super) fn rdm_bdev_nr_sectors(f: *mut bindings::file) -> u64;
    pub(super) fn rdm_bdev_logical_block_size(f: *mut bindings::file) -> c_uint;
    pub(super) fn rdm_limits_offer_nowait(lim: *mut bindings::queue_limits);
    pub(super) fn rdm_limits_io_stat(lim: *mut bindings::queue_limits);
    pub(super) fn rdm_limits_io_hints(
        lim: *mut bindings::queue_limits,
        chunk_sectors: c_uint,
        io_min: c_uint,
        io_opt: c_uint,
    );
    pub(super) fn rdm_bdev_stack_limits(
        lim: *mut bindings::queue_limits,
        f: *mut bindings::file,
        offset: u64,
        pfx: *const c_char,
    );
    pub(super) fn rdm_bdev_is_zoned(f: *mut bindings::file) -> bool;
    pub(super) fn rdm_bdev_max_discard_sectors(f: *mut bindings::file) -> c_uint;
    pub(super) fn rdm_bdev_max_write_zeroes_sectors(f: *mut bindings::file) -> c_uint;
    pub(super) fn rdm_bdev_max_secure_erase_sectors(f: *mut bindings::file) -> c_uint;
    pub(super) fn rdm_bdev_link_holder(
        f: *mut bindings::file,
        disk: *mut bindings::gendisk,
    ) -> c_int;
    pub(super) fn rdm_bdev_unlink_holder(f: *mut bindings::file, disk: *mut bindings::gendisk);
    pub(super) fn rdm_bio_op(bio: *const bindings::bio) -> c_uint;
    pub(super) fn rdm_bio_is_preflush(bio: *const bindings::bio) -> bool;
    pub(super) fn rdm_bio_is_nowait(bio: *const bindings::bio) -> bool;
    pub(super) fn rdm_bio_set_would_block(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_would_block(bio: *const bindings::bio) -> bool;
    pub(super) fn rdm_bio_clear_preflush(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_set_dev(bio: *mut bindings::bio, f: *mut bindings::file);
    pub(super) fn rdm_bio_end(bio: *mut bindings::bio, error: bool);
    pub(super) fn rdm_bio_set_failed(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_end_unsupported(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_end_nospace(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_zero_fill(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_inc_remaining(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_split_front(
        bio: *mut bindings::bio,
        sectors: c_uint,
        bs: *mut bindings::bio_set,
    ) -> *mut bindings::bio;
    pub(super) fn rdm_bio_clone(
        bio: *mut bindings::bio,
        f: *mut bindings::file,
        bs: *mut bindings::bio_set,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
    pub(super) fn rdm_bio_copy_error(to: *mut bindings::bio, from: *const bindings::bio);
    pub(super) fn rdm_bio_alloc_pages(
        f: *mut bindings::file,
        nr_vecs: c_uint,
        write: bool,
        fua: bool,
        preflush: bool,
        sector: u64,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
    pub(super) fn rdm_bio_failed(bio: *const bindings::bio) -> bool;
    pub(super) fn rdm_bio_start_acct(bio: *mut bindings::bio, start: *mut c_ulong) -> bool;
    pub(super) fn rdm_bio_acct_done(bio: *mut bindings::bio);
    pub(super) fn rdm_bio_alloc_flush(
        f: *mut bindings::file,
        bs: *mut bindings::bio_set,
        end_io: bindings::bio_end_io_t,
        private: *mut c_void,
    ) -> *mut bindings::bio;
}
