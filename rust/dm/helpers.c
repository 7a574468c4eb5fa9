// SPDX-License-Identifier: GPL-2.0
/*
 * rdm-dm.ko's own copy of the rust/ layer's C helpers: one object may not
 * be linked into two modules (and THIS_MODULE must name the module it is in).
 */
#include "../helpers.c"
