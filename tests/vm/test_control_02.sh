#!/usr/bin/env bash
# A dm command the driver does not implement yet gets ENOTTY, a kernel log
# line naming it, and a clear message and non-zero exit from rdmsetup.
. "$(dirname "$0")/test_common.sh"
require_vm

rdm_load
klog_mark
if out=$(rdmsetup ls 2>&1); then
	fail "rdmsetup ls succeeded against a driver without DM_LIST_DEVICES: $out"
fi
log "$out"
expect_match "$out" '^rdmsetup: DM_LIST_DEVICES: .*\(ENOTTY\)$' "rdmsetup names the command and ENOTTY"
expect_match "$(klog_since_mark)" 'rdm: DM_LIST_DEVICES: not implemented' "kernel log names the command"
exit $KSFT_PASS
