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
 * are @fops, which must be static. @name and @nodename must outlive the
 * registration. Returns the registration or an ERR_PTR.
 */
struct rdm_misc *rdm_misc_register(const char *name, const char *nodename,
				   int minor, umode_t mode,
				   const struct file_operations *fops)
{
	struct rdm_misc *m = kzalloc(sizeof(*m), GFP_KERNEL);
	int ret;

	if (!m)
		return ERR_PTR(-ENOMEM);
	kref_init(&m->ref);
	m->inner = fops;
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

/* The minor a registration got (the dynamic one, when it asked for any). */
int rdm_misc_minor(const struct rdm_misc *m)
{
	return m->misc.minor;
}

/* MISC_DYNAMIC_MINOR is a macro. */
const int rdm_misc_dynamic_minor = MISC_DYNAMIC_MINOR;
