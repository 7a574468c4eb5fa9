/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C helper object's interface, called from Rust through the `extern "C"`
 * blocks of the rust/ files named beside each group.
 */
#ifndef RDM_RUST_HELPERS_H
#define RDM_RUST_HELPERS_H

#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/types.h>

struct srcu_struct;

/* rust/miscdevice.rs */
struct rdm_misc;
struct rdm_misc *rdm_misc_register(const char *name, const char *nodename,
				   int minor, umode_t mode,
				   const struct file_operations *fops, void *ctx);
void *rdm_misc_ctx(struct file *file);
void rdm_misc_deregister(struct rdm_misc *m);
int rdm_misc_minor(const struct rdm_misc *m);
extern const int rdm_misc_dynamic_minor;



/* rust/block/ */
struct gendisk *rdm_alloc_disk(struct queue_limits *lim);
int rdm_add_disk(struct gendisk *disk, const struct attribute_group **groups,
		 const struct block_device_operations *fops,
		 void *private_data, int major, int minor, const char *name);
void *rdm_disk_private(struct gendisk *disk);
struct gendisk *rdm_dev_to_disk(struct device *dev);
void rdm_sysfs_attr_init(struct attribute *attr);
int rdm_disk_uevent(struct gendisk *disk, unsigned int action, char **envp);
u64 rdm_disk_devt(struct gendisk *disk);
struct file *rdm_bdev_open_path(const char *path, bool write, void *holder);
struct file *rdm_bdev_open_dev(u64 dev, bool write, void *holder);
void rdm_bdev_put_sync(struct file *f);
u64 rdm_bdev_devt(struct file *f);
u64 rdm_bdev_nr_sectors(struct file *f);
unsigned int rdm_bdev_logical_block_size(struct file *f);
void rdm_limits_offer_nowait(struct queue_limits *lim);
void rdm_limits_io_stat(struct queue_limits *lim);
void rdm_limits_io_hints(struct queue_limits *lim, unsigned int chunk_sectors,
			 unsigned int io_min, unsigned int io_opt);
void rdm_bdev_stack_limits(struct queue_limits *lim, struct file *f, u64 offset,
			   const char *pfx);
bool rdm_bdev_is_zoned(struct file *f);
unsigned int rdm_bdev_max_discard_sectors(struct file *f);
unsigned int rdm_bdev_max_write_zeroes_sectors(struct file *f);
unsigned int rdm_bdev_max_secure_erase_sectors(struct file *f);
int rdm_bdev_link_holder(struct file *f, struct gendisk *disk);
void rdm_bdev_unlink_holder(struct file *f, struct gendisk *disk);
unsigned int rdm_bio_op(const struct bio *bio);
bool rdm_bio_is_preflush(const struct bio *bio);
bool rdm_bio_is_nowait(const struct bio *bio);
void rdm_bio_set_would_block(struct bio *bio);
bool rdm_bio_would_block(const struct bio *bio);
void rdm_bio_clear_preflush(struct bio *bio);
void rdm_bio_set_dev(struct bio *bio, struct file *f);
void rdm_bio_set_failed(struct bio *bio);
void rdm_bio_end(struct bio *bio, bool error);
void rdm_bio_end_unsupported(struct bio *bio);
void rdm_bio_end_nospace(struct bio *bio);
void rdm_bio_zero_fill(struct bio *bio);
void rdm_bio_inc_remaining(struct bio *bio);
struct bio *rdm_bio_split_front(struct bio *bio, unsigned int sectors, struct bio_set *bs);
struct bio *rdm_bio_clone(struct bio *bio, struct file *f, struct bio_set *bs,
			  bio_end_io_t *end_io, void *private);
void rdm_bio_copy_error(struct bio *to, const struct bio *from);
struct bio *rdm_bio_alloc_flush(struct file *f, struct bio_set *bs,
				bio_end_io_t *end_io, void *private);

struct bio *rdm_bio_alloc_pages(struct file *f, unsigned int nr_vecs, bool write, bool fua,
				bool preflush,
				u64 sector, bio_end_io_t *end_io, void *private);
bool rdm_bio_failed(const struct bio *bio);
bool rdm_bio_start_acct(struct bio *bio, unsigned long *start);
void rdm_bio_acct_done(struct bio *bio);

/* rust/srcu.rs */
struct srcu_struct *rdm_srcu_alloc(void);
void rdm_srcu_free(struct srcu_struct *s);
int rdm_srcu_read_lock(struct srcu_struct *s);
void rdm_srcu_read_unlock(struct srcu_struct *s, int idx);
void rdm_srcu_synchronize(struct srcu_struct *s);

/* rust/wait.rs */
void rdm_poll_wait(struct file *file, wait_queue_head_t *wq, poll_table *pt);
void rdm_wake_up_var(void *var);
int rdm_wait_var_change(u32 *var, u32 seen);
void rdm_wait_var_below(unsigned long *var, unsigned long limit);
unsigned long rdm_jiffies(void);

/* rust/memalloc.rs */
unsigned int rdm_memalloc_noio_save(void);
void rdm_memalloc_noio_restore(unsigned int flags);

/* rust/sync.rs */
unsigned long rdm_spin_lock_irqsave(spinlock_t *lock);
void rdm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

/* rust/kthread.rs */
struct task_struct *rdm_kthread_run(int (*threadfn)(void *), void *data, const char *name);

/* rust/workqueue.rs */
void rdm_cond_resched(void);

/* rust/module.rs */
void rdm_module_get(void);
void rdm_module_put(void);

#endif /* RDM_RUST_HELPERS_H */
