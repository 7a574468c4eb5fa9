#!/usr/bin/env bash
# insmod creates /dev/rdm-control, rdmsetup reads the driver's version
# through DM_VERSION, rmmod removes the node and logs the unload.
. "$(dirname "$0")/test_common.sh"
require_vm

klog_mark
rdm_load
node=$(stat -c '%F %t' "$RDM_CONTROL")
expect_eq "$node" "character special file a" "$RDM_CONTROL is a misc (major 10) char device"
grep -q ' rdm-control$' /proc/misc || fail "rdm-control missing from /proc/misc"

out=$(rdmsetup version) || fail "rdmsetup version failed: $out"
log "$out"
expect_match "$out" '^Driver version: +4\.48\.0$' "driver reports interface 4.48.0"
expect_match "$out" '^rdmsetup version: +[0-9]+\.[0-9]+\.[0-9]+' "tool reports its version"

rdm_unload
[ ! -e "$RDM_CONTROL" ] || fail "$RDM_CONTROL still exists after rmmod"
log "ok: $RDM_CONTROL removed on unload"
expect_match "$(klog_since_mark)" 'rdm: loaded, dm ioctl interface 4\.48\.0' "load logged"
expect_match "$(klog_since_mark)" 'rdm: unloaded' "unload logged"
exit "$KSFT_PASS"
