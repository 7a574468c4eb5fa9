// SPDX-License-Identifier: GPL-2.0
/*
 * C half of rust/dm.rs: rdm-dm.ko's target types, registered with the
 * kernel's device-mapper (dm-mod). `struct target_type`, `struct dm_target`
 * and `struct dm_dev` are not in 6.12's Rust bindings, so every callback is
 * a small C function here that forwards to an `rdm_dm_rust_*` function of
 * rust/dm.rs, and every field is read or written here.
 *
 * Per target (ti->private) a `struct rdm_dm_ctx` keeps what dm itself must
 * see of the target: the devices it opened with dm_get_device() (so that
 * `dmsetup deps`, holders, queue limits and flushes are dm's), and its
 * attachment to the per-mapped-device event object below.
 *
 * The first device a target opens is the one it maps over its whole
 * length (a snapshot's or an origin's origin); later ones (a snapshot's
 * COW device) are written only by the engine, at offsets it checks itself.
 * iterate_devices reports the first one alone, as dm-snapshot's does.
 */

#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "target.h"

#define RDM_DM_TYPES 3
#define RDM_DM_MAX_DEVS 2


/*
 * Events of one mapped device. The engine raises events from any context
 * (a snapshot invalidated in a bio's completion, a merge ending in its
 * thread); dm_table_event() takes a mutex, so a work item raises them.
 * One object per mapped device with rdm targets, shared by the targets of
 * its live and inactive tables, so that a snapshot reloaded into a new
 * table (lvextend) still raises its events where they are waited for:
 * through the oldest attached target, whose table is the live one (a new
 * table's targets attach before the old table's detach).
 */
struct rdm_dm_events {
	struct list_head node;		/* rdm_dm_all_events, while targets attach */
	struct mapped_device *md;
	struct kref ref;		/* attached targets, queued work, rust/dm.rs holders */
	struct work_struct work;
	struct mutex lock;		/* protects @targets */
	struct list_head targets;	/* rdm_dm_ctx.events_node, oldest first */
};

/* Every rdm_dm_events with an attached target; protected by the mutex. */
static LIST_HEAD(rdm_dm_all_events);
static DEFINE_MUTEX(rdm_dm_all_events_lock);
static struct workqueue_struct *rdm_dm_wq;

struct rdm_dm_ctx {
	void *rust;
	struct dm_target *ti;
	struct rdm_dm_events *events;
	struct list_head events_node;
	unsigned int ndevs;
	struct dm_dev *devs[RDM_DM_MAX_DEVS];
};

static void rdm_dm_events_free(struct kref *ref)
{
	kfree(container_of(ref, struct rdm_dm_events, ref));
}

/* Drops a reference; any context (the last one only frees memory). */
void rdm_dm_events_put(struct rdm_dm_events *ev)
{
	kref_put(&ev->ref, rdm_dm_events_free);
}

/* Takes another reference; the caller holds one. */
void rdm_dm_events_get(struct rdm_dm_events *ev)
{
	kref_get(&ev->ref);
}

static void rdm_dm_events_work(struct work_struct *work)
{
	struct rdm_dm_events *ev = container_of(work, struct rdm_dm_events, work);
	struct rdm_dm_ctx *oldest;

	mutex_lock(&ev->lock);
	oldest = list_first_entry_or_null(&ev->targets, struct rdm_dm_ctx, events_node);
	if (oldest)
		dm_table_event(oldest->ti->table);
	mutex_unlock(&ev->lock);
	rdm_dm_events_put(ev);
}

/* Raises an event on the mapped device; any context. */
void rdm_dm_events_kick(struct rdm_dm_events *ev)
{
	kref_get(&ev->ref);
	if (!queue_work(rdm_dm_wq, &ev->work))
		rdm_dm_events_put(ev);
}

/* Attaches @ctx to its mapped device's event object (made if need be). */
static int rdm_dm_events_attach(struct rdm_dm_ctx *ctx)
{
	struct mapped_device *md = dm_table_get_md(ctx->ti->table);
	struct rdm_dm_events *ev;

	mutex_lock(&rdm_dm_all_events_lock);
	list_for_each_entry(ev, &rdm_dm_all_events, node) {
		if (ev->md == md) {
			kref_get(&ev->ref);
			goto found;
		}
	}
	ev = kzalloc(sizeof(*ev), GFP_KERNEL);
	if (!ev) {
		mutex_unlock(&rdm_dm_all_events_lock);
		return -ENOMEM;
	}
	ev->md = md;
	kref_init(&ev->ref);
	INIT_WORK(&ev->work, rdm_dm_events_work);
	mutex_init(&ev->lock);
	INIT_LIST_HEAD(&ev->targets);
	list_add(&ev->node, &rdm_dm_all_events);
found:
	mutex_lock(&ev->lock);
	list_add_tail(&ctx->events_node, &ev->targets);
	mutex_unlock(&ev->lock);
	mutex_unlock(&rdm_dm_all_events_lock);
	ctx->events = ev;
	return 0;
}

/*
 * Detaches @ctx: after this no event work uses its table. The object
 * leaves the list with its last target; references held elsewhere (a
 * snapshot that outlives this table) keep only its memory.
 */
static void rdm_dm_events_detach(struct rdm_dm_ctx *ctx)
{
	struct rdm_dm_events *ev = ctx->events;

	mutex_lock(&rdm_dm_all_events_lock);
	mutex_lock(&ev->lock);
	list_del(&ctx->events_node);
	if (list_empty(&ev->targets))
		list_del(&ev->node);
	mutex_unlock(&ev->lock);
	mutex_unlock(&rdm_dm_all_events_lock);
	rdm_dm_events_put(ev);
}

/* The event object of the target being built, with a new reference. */
struct rdm_dm_events *rdm_dm_ti_events(struct dm_target *ti)
{
	struct rdm_dm_ctx *ctx = ti->private;

	kref_get(&ctx->events->ref);
	return ctx->events;
}

/*
 * Opens @path for the target being built, through dm (dm_get_device(): one
 * claim per mapped device, listed in the table's devices). Returns a new
 * reference to the device's file, which may outlive the target (a snapshot
 * reloaded into a new table); dm's own reference is put by the destructor.
 */
struct file *rdm_dm_get_device(struct dm_target *ti, const char *path)
{
	struct rdm_dm_ctx *ctx = ti->private;
	struct dm_dev *dd;
	int r;

	if (ctx->ndevs == RDM_DM_MAX_DEVS)
		return ERR_PTR(-EINVAL);
	r = dm_get_device(ti, path, dm_table_get_mode(ti->table), &dd);
	if (r)
		return ERR_PTR(r);
	ctx->devs[ctx->ndevs++] = dd;
	return get_file(dd->bdev_file);
}

u64 rdm_dm_ti_len(struct dm_target *ti)
{
	return ti->len;
}

u64 rdm_dm_ti_begin(struct dm_target *ti)
{
	return ti->begin;
}

bool rdm_dm_ti_read_only(struct dm_target *ti)
{
	return !(dm_table_get_mode(ti->table) & BLK_OPEN_WRITE);
}

const char *rdm_dm_ti_device_name(struct dm_target *ti)
{
	return dm_table_device_name(ti->table);
}

int rdm_dm_ti_set_max_io_len(struct dm_target *ti, u64 sectors)
{
	return dm_set_target_max_io_len(ti, sectors);
}

static void rdm_dm_put_devices(struct rdm_dm_ctx *ctx)
{
	while (ctx->ndevs)
		dm_put_device(ctx->ti, ctx->devs[--ctx->ndevs]);
}

/* dm has split the line at spaces (and unescaped it): rdm parses it whole. */
static char *rdm_dm_join(unsigned int argc, char **argv, size_t *len)
{
	size_t n = 0;
	unsigned int i;
	char *line, *p;

	for (i = 0; i < argc; i++)
		n += strlen(argv[i]) + 1;
	line = kmalloc(n + 1, GFP_KERNEL);
	if (!line)
		return NULL;
	p = line;
	for (i = 0; i < argc; i++) {
		if (i)
			*p++ = ' ';
		n = strlen(argv[i]);
		memcpy(p, argv[i], n);
		p += n;
	}
	*p = '\0';
	*len = p - line;
	return line;
}

static void *rdm_dm_type_ctx[RDM_DM_TYPES];

static int rdm_dm_ctr(unsigned int kind, struct dm_target *ti, unsigned int argc, char **argv)
{
	struct rdm_dm_ctx *ctx;
	size_t len;
	char *line;
	int r;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx) {
		ti->error = "Cannot allocate rdm target context";
		return -ENOMEM;
	}
	ctx->ti = ti;
	ti->private = ctx;
	r = rdm_dm_events_attach(ctx);
	if (r) {
		ti->error = "Cannot allocate rdm event context";
		goto free_ctx;
	}
	line = rdm_dm_join(argc, argv, &len);
	if (!line) {
		ti->error = "Cannot allocate the table line";
		r = -ENOMEM;
		goto detach;
	}
	r = rdm_dm_rust_ctr(rdm_dm_type_ctx[kind], ti, line, len, &ctx->rust);
	kfree(line);
	if (r) {
		/* rdm logged the reason with the device's name. */
		ti->error = "rdm refused the target (see the line above)";
		goto put;
	}
	/*
	 * Flushes: dm flushes the table's devices itself when every target
	 * allows it; in a table with other targets, one empty flush per
	 * device reaches rdm_dm_map(). Discards and write zeroes: none (0
	 * bios: dm ends them with EOPNOTSUPP, as rdm's own host does).
	 */
	ti->flush_bypasses_map = true;
	ti->num_flush_bios = ctx->ndevs;
	return 0;
put:
	rdm_dm_put_devices(ctx);
detach:
	rdm_dm_events_detach(ctx);
free_ctx:
	kfree(ctx);
	ti->private = NULL;
	return r;
}

static int rdm_dm_ctr0(struct dm_target *ti, unsigned int argc, char **argv)
{
	return rdm_dm_ctr(0, ti, argc, argv);
}

static int rdm_dm_ctr1(struct dm_target *ti, unsigned int argc, char **argv)
{
	return rdm_dm_ctr(1, ti, argc, argv);
}

static int rdm_dm_ctr2(struct dm_target *ti, unsigned int argc, char **argv)
{
	return rdm_dm_ctr(2, ti, argc, argv);
}

static void rdm_dm_dtr(struct dm_target *ti)
{
	struct rdm_dm_ctx *ctx = ti->private;

	/* Waits for the target's bios still in flight in rdm. */
	rdm_dm_rust_dtr(ctx->rust);
	rdm_dm_put_devices(ctx);
	rdm_dm_events_detach(ctx);
	kfree(ctx);
}

static int rdm_dm_map(struct dm_target *ti, struct bio *bio)
{
	struct rdm_dm_ctx *ctx = ti->private;

	if (unlikely(bio->bi_opf & REQ_PREFLUSH) && !bio_sectors(bio)) {
		/* One of num_flush_bios (== ndevs) empty flushes. */
		bio_set_dev(bio, ctx->devs[dm_bio_get_target_bio_nr(bio)]->bdev);
		return DM_MAPIO_REMAPPED;
	}
	rdm_dm_rust_map(ctx->rust, bio, dm_target_offset(ti, bio->bi_iter.bi_sector));
	return DM_MAPIO_SUBMITTED;
}

static void rdm_dm_status(struct dm_target *ti, status_type_t type,
			  unsigned int status_flags, char *result, unsigned int maxlen)
{
	struct rdm_dm_ctx *ctx = ti->private;

	switch (type) {
	case STATUSTYPE_INFO:
		rdm_dm_rust_status(ctx->rust, false, result, maxlen);
		break;
	case STATUSTYPE_TABLE:
		rdm_dm_rust_status(ctx->rust, true, result, maxlen);
		break;
	case STATUSTYPE_IMA:
		/* Not measured (dmsetup measure shows no line for it). */
		*result = '\0';
		break;
	}
}

static int rdm_dm_message(struct dm_target *ti, unsigned int argc, char **argv,
			  char *result, unsigned int maxlen)
{
	struct rdm_dm_ctx *ctx = ti->private;
	size_t len;
	char *msg;
	int r;

	msg = rdm_dm_join(argc, argv, &len);
	if (!msg)
		return -ENOMEM;
	r = rdm_dm_rust_message(ctx->rust, msg, len, result, maxlen);
	kfree(msg);
	return r;
}

static int rdm_dm_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn,
				  void *data)
{
	struct rdm_dm_ctx *ctx = ti->private;

	return ctx->ndevs ? fn(ti, ctx->devs[0], 0, ti->len, data) : 0;
}

/*
 * The COW device is not stacked (it is not mapped over the target's
 * length), but every write the engine sends it must be whole logical
 * blocks of it: the device's logical block size is the largest of all.
 */
static void rdm_dm_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct rdm_dm_ctx *ctx = ti->private;
	unsigned int i, lbs;

	for (i = 1; i < ctx->ndevs; i++) {
		lbs = bdev_logical_block_size(ctx->devs[i]->bdev);
		limits->logical_block_size = max(limits->logical_block_size, lbs);
		limits->physical_block_size = max(limits->physical_block_size, lbs);
		limits->io_min = max(limits->io_min, lbs);
	}
}

static void rdm_dm_presuspend(struct dm_target *ti)
{
	struct rdm_dm_ctx *ctx = ti->private;

	rdm_dm_rust_presuspend(ctx->rust);
}

/* resume, and presuspend_undo: rdm's resume also undoes a presuspend. */
static void rdm_dm_resume(struct dm_target *ti)
{
	struct rdm_dm_ctx *ctx = ti->private;

	rdm_dm_rust_resume(ctx->rust);
}

#define RDM_DM_TYPE(ctr_fn) {						\
	.module = THIS_MODULE,						\
	.ctr = ctr_fn,							\
	.dtr = rdm_dm_dtr,						\
	.map = rdm_dm_map,						\
	.presuspend = rdm_dm_presuspend,				\
	.presuspend_undo = rdm_dm_resume,				\
	.resume = rdm_dm_resume,					\
	.status = rdm_dm_status,					\
	.message = rdm_dm_message,					\
	.iterate_devices = rdm_dm_iterate_devices,			\
	.io_hints = rdm_dm_io_hints,					\
}

static struct target_type rdm_dm_types[RDM_DM_TYPES] = {
	RDM_DM_TYPE(rdm_dm_ctr0),
	RDM_DM_TYPE(rdm_dm_ctr1),
	RDM_DM_TYPE(rdm_dm_ctr2),
};

/*
 * Registers target type @kind as @name (static), version @version, whose
 * targets rdm_dm_rust_ctr() builds with @type_ctx. -EBUSY: dm has a type
 * of that name (dm-snapshot's, when @name is dm-snapshot's).
 */
int rdm_dm_register(unsigned int kind, const char *name, const u32 *version, void *type_ctx)
{
	struct target_type *tt;

	if (kind >= RDM_DM_TYPES)
		return -EINVAL;
	tt = &rdm_dm_types[kind];
	tt->name = name;
	memcpy(tt->version, version, sizeof(tt->version));
	rdm_dm_type_ctx[kind] = type_ctx;
	return dm_register_target(tt);
}

/* Unregisters @kind: no table uses it (each holds a module reference). */
void rdm_dm_unregister(unsigned int kind)
{
	dm_unregister_target(&rdm_dm_types[kind]);
	rdm_dm_type_ctx[kind] = NULL;
}

/* The event work's queue, made before and destroyed after the types. */
int rdm_dm_events_init(void)
{
	rdm_dm_wq = alloc_workqueue("rdm_dm_events", WQ_MEM_RECLAIM, 0);
	return rdm_dm_wq ? 0 : -ENOMEM;
}

void rdm_dm_events_exit(void)
{
	destroy_workqueue(rdm_dm_wq);
}

MODULE_SOFTDEP("pre: dm-mod");
