// SPDX-License-Identifier: GPL-2.0
/*
 * C half of rdm's rust/ layer: the few kernel interfaces that Rust cannot
 * reach through bindgen because they are macros, inline functions, or
 * structs outside the 6.12 `kernel` crate's bindings. Each function is a
 * thin wrapper; the safe abstraction over it lives in the Rust file named
 * in its comment.
 */

#include <linux/err.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>

#include "helpers.h"

/*
 * A misc device and the file_operations the kernel calls for it. The table
 * is a per-registration copy of the Rust one (@inner, static in rdm's
 * .rodata) with two changes: the owner is THIS_MODULE, so misc_open()'s
 * fops_get() pins rdm while a file is open and rmmod cannot pull the code
 * out from under it; and open/release go through the wrappers below, which
 * count open files so that this struct (which the open files' f_op points
 * into) is freed by whichever comes last, deregistration or final close.
 * Used by rust/miscdevice.rs.
 */
struct rdm_misc {
	struct miscdevice misc;
	struct file_operations fops;
	const struct file_operations *inner;
	void *ctx;
	struct kref ref;
};

static struct rdm_misc *rdm_misc_of(const struct file_operations *fops)
{
	return container_of(fops, struct rdm_misc, fops);
}

static void rdm_misc_free(struct kref *ref)
{
	kfree(container_of(ref, struct rdm_misc, ref));
}

static int rdm_misc_open(struct inode *inode, struct file *file)
{
	struct rdm_misc *m = rdm_misc_of(file->f_op);
	int ret = m->inner->open ? m->inner->open(inode, file) : 0;

	if (!ret)
		kref_get(&m->ref);
	return ret;
}

static int rdm_misc_release(struct inode *inode, struct file *file)
{
	struct rdm_misc *m = rdm_misc_of(file->f_op);

	if (m->inner->release)
		m->inner->release(inode, file);
	kref_put(&m->ref, rdm_misc_free);
	return 0;
}

/*
 * Registers a misc device named @name (with /dev node @nodename, or @name
 * when NULL) at @minor (MISC_DYNAMIC_MINOR for any) whose file operations
 * are @fops, which must be static; @ctx is handed to the open callback
 * (rdm_misc_ctx()). @name, @nodename and @ctx must outlive the registration.
 * Returns the registration or an ERR_PTR.
 */
struct rdm_misc *rdm_misc_register(const char *name, const char *nodename,
				   int minor, umode_t mode,
				   const struct file_operations *fops, void *ctx)
{
	struct rdm_misc *m = kzalloc(sizeof(*m), GFP_KERNEL);
	int ret;

	if (!m)
		return ERR_PTR(-ENOMEM);
	kref_init(&m->ref);
	m->inner = fops;
	m->ctx = ctx;
	m->fops = *fops;
	m->fops.owner = THIS_MODULE;
	m->fops.open = rdm_misc_open;
	m->fops.release = rdm_misc_release;
	m->misc.minor = minor;
	m->misc.name = name;
	m->misc.nodename = nodename;
	m->misc.mode = mode;
	m->misc.fops = &m->fops;
	ret = misc_register(&m->misc);
	if (ret) {
		kfree(m);
		return ERR_PTR(ret);
	}
	return m;
}

/*
 * Undoes rdm_misc_register(): no new open can start after it returns; files
 * already open keep working and the last close frees the registration.
 */
void rdm_misc_deregister(struct rdm_misc *m)
{
	misc_deregister(&m->misc);
	kref_put(&m->ref, rdm_misc_free);
}

/*
 * The context of the misc device @file was opened through; valid in the
 * open callback (misc_open() leaves the miscdevice in private_data).
 */
void *rdm_misc_ctx(struct file *file)
{
	struct miscdevice *misc = file->private_data;

	return container_of(misc, struct rdm_misc, misc)->ctx;
}

/* The minor a registration got (the dynamic one, when it asked for any). */
int rdm_misc_minor(const struct rdm_misc *m)
{
	return m->misc.minor;
}

/* MISC_DYNAMIC_MINOR is a macro. */
const int rdm_misc_dynamic_minor = MISC_DYNAMIC_MINOR;

/* ---- rust/block/: bio-based gendisks, bios, underlying block devices ---- */

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/sched/mm.h>
#include <linux/srcu.h>
#include <linux/sysfs.h>
#include <linux/poll.h>
#include <linux/wait_bit.h>

/* blk_alloc_disk() is a macro (it makes a lock class per call site). */
struct gendisk *rdm_alloc_disk(struct queue_limits *lim)
{
	return blk_alloc_disk(lim, NUMA_NO_NODE);
}

/*
 * Fills in a disk from rdm_alloc_disk() and adds it: one minor at
 * @major:@minor named @name, served by @fops with @private_data. Returns 0
 * or an errno; on error the caller still owns (and puts) the disk.
 */
int rdm_add_disk(struct gendisk *disk, const struct attribute_group **groups,
		 const struct block_device_operations *fops,
		 void *private_data, int major, int minor, const char *name)
{
	disk->major = major;
	disk->first_minor = minor;
	disk->minors = 1;
	disk->fops = fops;
	disk->private_data = private_data;
	disk->flags |= GENHD_FL_NO_PART;
	strscpy(disk->disk_name, name, DISK_NAME_LEN);
	/* @groups (NULL-terminated, or NULL) become the disk device's own
	 * attribute groups: created before its "add" uevent, removed (and
	 * drained of readers) by del_gendisk(). */
	return device_add_disk(NULL, disk, groups);
}

/* The disk of a disk's struct device (an attribute's show or store). */
struct gendisk *rdm_dev_to_disk(struct device *dev)
{
	return dev_to_disk(dev);
}

/* Gives a dynamically allocated attribute a static lockdep key (one class
 * for all of rdm's: sysfs_attr_init() makes one key per call site). */
void rdm_sysfs_attr_init(struct attribute *attr)
{
	sysfs_attr_init(attr);
}

/* Sends a uevent for the disk with the extra environment @envp (NULL-
 * terminated), as dm_kobject_uevent(): with no I/O from memory reclaim,
 * since the caller may hold a device that is suspended. */
int rdm_disk_uevent(struct gendisk *disk, unsigned int action, char **envp)
{
	unsigned int noio = memalloc_noio_save();
	int r = kobject_uevent_env(&disk_to_dev(disk)->kobj, action, envp);

	memalloc_noio_restore(noio);
	return r;
}

/* The private data of a disk. */
void *rdm_disk_private(struct gendisk *disk)
{
	return disk->private_data;
}

/* The dev_t of a disk, in huge_encode_dev() form as dm reports it. */
u64 rdm_disk_devt(struct gendisk *disk)
{
	return huge_encode_dev(disk_devt(disk));
}

static blk_mode_t rdm_open_mode(bool write)
{
	return write ? BLK_OPEN_READ | BLK_OPEN_WRITE : BLK_OPEN_READ;
}

/* Opens a block device by path, exclusively for @holder. */
struct file *rdm_bdev_open_path(const char *path, bool write, void *holder)
{
	return bdev_file_open_by_path(path, rdm_open_mode(write), holder, NULL);
}

/* Opens a block device by huge_encode_dev() number, exclusively for @holder. */
struct file *rdm_bdev_open_dev(u64 dev, bool write, void *holder)
{
	return bdev_file_open_by_dev(huge_decode_dev(dev), rdm_open_mode(write), holder, NULL);
}

/*
 * Puts a reference to a block device file, releasing the device before
 * returning if it was the last one and the caller may sleep, as dm's
 * close_table_device() does: a deferred release (fput() from an ioctl
 * releases at the return to user space, from a kthread a tick later)
 * would leave a device below still open when dm's remove_all looks at it.
 */
void rdm_bdev_put_sync(struct file *f)
{
	if (in_task() && !irqs_disabled())
		__fput_sync(f);
	else
		fput(f);
}

u64 rdm_bdev_devt(struct file *f)
{
	return huge_encode_dev(file_bdev(f)->bd_dev);
}

u64 rdm_bdev_nr_sectors(struct file *f)
{
	return bdev_nr_sectors(file_bdev(f));
}

unsigned int rdm_bdev_logical_block_size(struct file *f)
{
	return bdev_logical_block_size(file_bdev(f));
}

/*
 * Stacks the limits of @f's device, mapped from @offset, onto @lim. The
 * zoned feature, which blk_stack_limits() passes up, is not kept: rdm
 * maps no zone operations (and refuses zoned devices).
 */
void rdm_bdev_stack_limits(struct queue_limits *lim, struct file *f, u64 offset,
			   const char *pfx)
{
	queue_limits_stack_bdev(lim, file_bdev(f), offset, pfx);
	lim->features &= ~BLK_FEAT_ZONED;
	lim->max_zone_append_sectors = 0;
	lim->zone_write_granularity = 0;
	lim->max_open_zones = 0;
	lim->max_active_zones = 0;
}

/*
 * Stacks a target's I/O hints onto @lim as blk_stack_limits() stacks a
 * device: limits that only carry the hints (0 for none), stacked at 0.
 * Used by rust/block/bdev.rs (Limits::add_io_hints).
 */
void rdm_limits_io_hints(struct queue_limits *lim, unsigned int chunk_sectors,
			 unsigned int io_min, unsigned int io_opt)
{
	struct queue_limits hints;

	blk_set_stacking_limits(&hints);
	/* Features both must have (NOWAIT, POLL) stay as they are. */
	hints.features = lim->features;
	hints.chunk_sectors = chunk_sectors;
	hints.io_min = io_min;
	hints.io_opt = io_opt;
	hints.max_zone_append_sectors = 0;
	blk_stack_limits(lim, &hints, 0);
}

/* Offers REQ_NOWAIT bios on @lim, before its devices are stacked (blk_stack_limits() keeps it only if each offers it). */
void rdm_limits_offer_nowait(struct queue_limits *lim)
{
	lim->features |= BLK_FEAT_NOWAIT;
}

/*
 * Keeps I/O statistics (BLK_FEAT_IO_STAT; queue/iostats reads 1 and the
 * user may turn it off), as dm's stacking limits do: blk_stack_limits()
 * leaves the feature as it is.
 */
void rdm_limits_io_stat(struct queue_limits *lim)
{
	lim->features |= BLK_FEAT_IO_STAT;
}

/* Whether @f's device is zoned (host-managed or host-aware). */
bool rdm_bdev_is_zoned(struct file *f)
{
	return bdev_is_zoned(file_bdev(f));
}

/* The largest discard, write-zeroes and secure-erase @f's device takes (0: none). */
unsigned int rdm_bdev_max_discard_sectors(struct file *f)
{
	return bdev_max_discard_sectors(file_bdev(f));
}

unsigned int rdm_bdev_max_write_zeroes_sectors(struct file *f)
{
	return bdev_write_zeroes_sectors(file_bdev(f));
}

unsigned int rdm_bdev_max_secure_erase_sectors(struct file *f)
{
	return bdev_max_secure_erase_sectors(file_bdev(f));
}

int rdm_bdev_link_holder(struct file *f, struct gendisk *disk)
{
	return bd_link_disk_holder(file_bdev(f), disk);
}

void rdm_bdev_unlink_holder(struct file *f, struct gendisk *disk)
{
	bd_unlink_disk_holder(file_bdev(f), disk);
}

/* A bio's operation (REQ_OP_*) and whether it asks for a cache flush first. */
unsigned int rdm_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

bool rdm_bio_is_preflush(const struct bio *bio)
{
	return bio->bi_opf & REQ_PREFLUSH;
}

bool rdm_bio_is_nowait(const struct bio *bio)
{
	return bio->bi_opf & REQ_NOWAIT;
}

bool rdm_bio_would_block(const struct bio *bio)
{
	return bio->bi_status == BLK_STS_AGAIN;
}

/* Records "would block" in @bio (BLK_STS_AGAIN, not logged), unless it has an error already. */
void rdm_bio_set_would_block(struct bio *bio)
{
	if (!bio->bi_status) {
		bio_set_flag(bio, BIO_QUIET);
		bio->bi_status = BLK_STS_AGAIN;
	}
}

void rdm_bio_clear_preflush(struct bio *bio)
{
	bio->bi_opf &= ~REQ_PREFLUSH;
}

void rdm_bio_set_dev(struct bio *bio, struct file *f)
{
	bio_set_dev(bio, file_bdev(f));
}

/* Records an I/O error in @bio unless it has one already. */
void rdm_bio_set_failed(struct bio *bio)
{
	if (!bio->bi_status)
		bio->bi_status = BLK_STS_IOERR;
}

/* Ends @bio, with an I/O error if @error; keeps an error already recorded. */
void rdm_bio_end(struct bio *bio, bool error)
{
	if (error)
		rdm_bio_set_failed(bio);
	bio_endio(bio);
}

/* Ends @bio with "operation not supported" (EOPNOTSUPP for user space). */
void rdm_bio_end_unsupported(struct bio *bio)
{
	bio->bi_status = BLK_STS_NOTSUPP;
	bio_endio(bio);
}

/* Ends @bio with "no space" (ENOSPC for user space). */
void rdm_bio_end_nospace(struct bio *bio)
{
	bio->bi_status = BLK_STS_NOSPC;
	bio_endio(bio);
}

void rdm_bio_zero_fill(struct bio *bio)
{
	zero_fill_bio(bio);
}

void rdm_bio_inc_remaining(struct bio *bio)
{
	bio_inc_remaining(bio);
}

/*
 * The allocation flags for a split or clone of @bio: a REQ_NOWAIT bio's
 * submitter must not sleep, so its split or clone does not wait for the
 * pool (it fails, and the bio ends with BLK_STS_AGAIN).
 */
static gfp_t rdm_bio_gfp(const struct bio *bio)
{
	return (bio->bi_opf & REQ_NOWAIT) ? GFP_NOWAIT : GFP_NOIO;
}

/*
 * Splits the first @sectors off @bio: returns the front part, chained to
 * @bio so that @bio completes after it; the caller resubmits @bio. Returns
 * an ERR_PTR if @sectors does not leave sectors on both sides (bio_split()
 * would BUG()) or if bio_split() fails, which in 6.12 it reports with NULL
 * (a zone append, or no clone from @bs), not an ERR_PTR.
 */
struct bio *rdm_bio_split_front(struct bio *bio, unsigned int sectors, struct bio_set *bs)
{
	struct bio *split;

	if (!sectors || sectors >= bio_sectors(bio))
		return ERR_PTR(-EINVAL);
	split = bio_split(bio, sectors, rdm_bio_gfp(bio), bs);
	if (IS_ERR_OR_NULL(split))
		return split ? split : ERR_PTR(-ENOMEM);
	bio_chain(split, bio);
	return split;
}

/*
 * Clones @bio from @bs for @f's device: the clone ends through @end_io
 * with @private. The front pad of @bs holds the caller's per-clone data.
 */
struct bio *rdm_bio_clone(struct bio *bio, struct file *f, struct bio_set *bs,
			  bio_end_io_t *end_io, void *private)
{
	struct bio *clone = bio_alloc_clone(f ? file_bdev(f) : bio->bi_bdev, bio,
					    rdm_bio_gfp(bio), bs);

	if (!clone)
		return NULL;
	clone->bi_end_io = end_io;
	clone->bi_private = private;
	return clone;
}

/* An empty REQ_PREFLUSH write for @f's device, ending like rdm_bio_clone(). */
struct bio *rdm_bio_alloc_flush(struct file *f, struct bio_set *bs,
				bio_end_io_t *end_io, void *private)
{
	struct bio *bio = bio_alloc_bioset(file_bdev(f), 0,
					   REQ_OP_WRITE | REQ_PREFLUSH | REQ_SYNC,
					   GFP_NOIO, bs);

	if (!bio)
		return NULL;
	bio->bi_end_io = end_io;
	bio->bi_private = private;
	return bio;
}

/*
 * A bio of @nr_vecs pages from the kernel's fs_bio_set for @f's device at
 * @sector: a read, or a write (with FUA if @fua). Never fails (a mempool
 * with GFP_NOIO); only for callers outside any submit_bio (the copier).
 */
struct bio *rdm_bio_alloc_pages(struct file *f, unsigned int nr_vecs, bool write, bool fua,
				bool preflush, u64 sector, bio_end_io_t *end_io, void *private)
{
	blk_opf_t opf = write ? REQ_OP_WRITE | (fua ? REQ_FUA : 0) | (preflush ? REQ_PREFLUSH : 0)
			      : REQ_OP_READ;
	struct bio *bio = bio_alloc(file_bdev(f), nr_vecs, opf, GFP_NOIO);

	bio->bi_iter.bi_sector = sector;
	bio->bi_end_io = end_io;
	bio->bi_private = private;
	return bio;
}

bool rdm_bio_failed(const struct bio *bio)
{
	return bio->bi_status != BLK_STS_OK;
}

/*
 * I/O statistics of a bio of a mapped device (rust/block/bio.rs, Acct), as
 * dm keeps them: only while the disk's queue has BLK_FEAT_IO_STAT
 * (queue/iostats). Starts @bio's accounting and stores its start time in
 * @start; false (and nothing started) if the disk keeps no statistics.
 */
bool rdm_bio_start_acct(struct bio *bio, unsigned long *start)
{
	if (!blk_queue_io_stat(bio->bi_bdev->bd_disk->queue))
		return false;
	*start = bio_start_io_acct(bio);
	return true;
}

/*
 * Counts @bio, which ended without being sent on, as one I/O that started
 * and ended now (dm: a target that ends a bio itself, successfully).
 */
void rdm_bio_acct_done(struct bio *bio)
{
	if (blk_queue_io_stat(bio->bi_bdev->bd_disk->queue))
		bio_end_io_acct(bio, bio_start_io_acct(bio));
}

/* Records @from's error (if any) in @to. */
void rdm_bio_copy_error(struct bio *to, const struct bio *from)
{
	if (from->bi_status && !to->bi_status)
		to->bi_status = from->bi_status;
}

/* ---- rust/srcu.rs ---- */

struct srcu_struct *rdm_srcu_alloc(void)
{
	struct srcu_struct *s = kzalloc(sizeof(*s), GFP_KERNEL);

	if (s && init_srcu_struct(s)) {
		kfree(s);
		s = NULL;
	}
	return s;
}

void rdm_srcu_free(struct srcu_struct *s)
{
	cleanup_srcu_struct(s);
	kfree(s);
}

int rdm_srcu_read_lock(struct srcu_struct *s)
{
	return srcu_read_lock(s);
}

void rdm_srcu_read_unlock(struct srcu_struct *s, int idx)
{
	srcu_read_unlock(s, idx);
}

void rdm_srcu_synchronize(struct srcu_struct *s)
{
	synchronize_srcu(s);
}

/* ---- rust/wait.rs ---- */

/* poll_wait() (static inline). */
void rdm_poll_wait(struct file *file, wait_queue_head_t *wq, poll_table *pt)
{
	poll_wait(file, wq, pt);
}

void rdm_wake_up_var(void *var)
{
	wake_up_var(var);
}

int rdm_wait_var_change(u32 *var, u32 seen)
{
	return wait_var_event_interruptible(var, READ_ONCE(*var) != seen);
}

void rdm_wait_var_below(unsigned long *var, unsigned long limit)
{
	wait_var_event(var, READ_ONCE(*var) < limit);
}

unsigned long rdm_jiffies(void)
{
	return jiffies;
}

/* ---- rust/memalloc.rs ---- */

#include <linux/sched/mm.h>

unsigned int rdm_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void rdm_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

/* ---- rust/sync.rs ---- */

unsigned long rdm_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void rdm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

/* ---- rust/kthread.rs ---- */

#include <linux/kthread.h>
#include <linux/sched/task.h>

/*
 * Starts a kthread named @name running @threadfn(@data) and returns it with
 * a task reference (for kthread_stop_put()), or an ERR_PTR.
 */
struct task_struct *rdm_kthread_run(int (*threadfn)(void *), void *data, const char *name)
{
	struct task_struct *t = kthread_create(threadfn, data, "%s", name);

	if (IS_ERR(t))
		return t;
	get_task_struct(t);
	wake_up_process(t);
	return t;
}

/* ---- rust/workqueue.rs ---- */

void rdm_cond_resched(void)
{
	cond_resched();
}

/* ---- rust/module.rs ---- */

void rdm_module_get(void)
{
	__module_get(THIS_MODULE);
}

void rdm_module_put(void)
{
	module_put(THIS_MODULE);
}
