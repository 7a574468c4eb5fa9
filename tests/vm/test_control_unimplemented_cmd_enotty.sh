#!/usr/bin/env bash
# A dm command the driver does not implement (DM_DEV_SET_GEOMETRY) gets
# ENOTTY, a kernel log line naming it, and a clear message and non-zero
# exit from rdmsetup.
. "$(dirname "$0")/test_common.sh"
require_vm

rdm_load
rdmsetup create geo --table "0 64 zero" || fail "create"
klog_mark
if out=$(rdmsetup setgeometry geo 1 2 3 0 2>&1); then
	fail "rdmsetup setgeometry succeeded against a driver without DM_DEV_SET_GEOMETRY: $out"
fi
log "$out"
expect_match "$out" '^rdmsetup: DM_DEV_SET_GEOMETRY on geo: .*\(ENOTTY\)$' "rdmsetup names the command, device and ENOTTY"
expect_match "$(klog_since_mark)" 'rdm: DM_DEV_SET_GEOMETRY is not supported' "kernel log names the command"
rdmsetup remove geo || fail "remove"
exit "$KSFT_PASS"
