/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C helper object's interface, called from Rust through the `extern "C"`
 * blocks of the rust/ files named beside each group.
 */
#ifndef RDM_RUST_HELPERS_H
#define RDM_RUST_HELPERS_H

#include <linux/fs.h>
#include <linux/types.h>

/* rust/miscdevice.rs */
struct rdm_misc;
struct rdm_misc *rdm_misc_register(const char *name, const char *nodename,
				   int minor, umode_t mode,
				   const struct file_operations *fops);
void rdm_misc_deregister(struct rdm_misc *m);
int rdm_misc_minor(const struct rdm_misc *m);
extern const int rdm_misc_dynamic_minor;

#endif /* RDM_RUST_HELPERS_H */
