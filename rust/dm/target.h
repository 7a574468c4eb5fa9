/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The functions of rust/dm/target.c that rust/dm.rs calls (its `extern "C"`
 * block declares the same), and those of rust/dm.rs that it calls.
 */
#ifndef RDM_DM_TARGET_H
#define RDM_DM_TARGET_H

#include <linux/types.h>

struct bio;
struct dm_target;
struct file;
struct rdm_dm_events;

int rdm_dm_register(unsigned int kind, const char *name, const u32 *version, void *type_ctx);
void rdm_dm_unregister(unsigned int kind);
int rdm_dm_events_init(void);
void rdm_dm_events_exit(void);
void rdm_dm_events_get(struct rdm_dm_events *ev);
void rdm_dm_events_put(struct rdm_dm_events *ev);
void rdm_dm_events_kick(struct rdm_dm_events *ev);
struct rdm_dm_events *rdm_dm_ti_events(struct dm_target *ti);
struct file *rdm_dm_get_device(struct dm_target *ti, const char *path);
u64 rdm_dm_ti_len(struct dm_target *ti);
u64 rdm_dm_ti_begin(struct dm_target *ti);
bool rdm_dm_ti_read_only(struct dm_target *ti);
const char *rdm_dm_ti_device_name(struct dm_target *ti);
int rdm_dm_ti_set_max_io_len(struct dm_target *ti, u64 sectors);

/* rust/dm.rs */
int rdm_dm_rust_ctr(void *type_ctx, struct dm_target *ti, const char *line,
		    size_t len, void **target);
void rdm_dm_rust_dtr(void *target);
void rdm_dm_rust_map(void *target, struct bio *bio, u64 offset);
void rdm_dm_rust_status(void *target, bool table, char *buf, unsigned int maxlen);
int rdm_dm_rust_message(void *target, const char *msg, size_t len, char *buf,
			unsigned int maxlen);
void rdm_dm_rust_presuspend(void *target);
void rdm_dm_rust_resume(void *target);

#endif
