#!/usr/bin/env bash
# rdmsetup's ABI code (shared with the module through rdm-core) against the
# kernel's own device-mapper: the same version and the same device list
# that Debian's dmsetup reports. Skips if the test kernel has no dm-mod.
. "$(dirname "$0")/test_common.sh"
require_vm

modprobe -d "$RDM_MODROOT" dm-zero 2>/dev/null || skip "kernel dm-mod/dm-zero not available"
defer modprobe -q -r -d "$RDM_MODROOT" dm-zero dm-mod
defer dmsetup remove_all
ctl=/dev/mapper/control
[ -c $ctl ] || fail "$ctl missing after loading dm-mod"

out=$(rdmsetup --control $ctl version) || fail "rdmsetup version against dm-mod: $out"
expect_match "$out" '^Driver version: +4\.[0-9]+\.[0-9]+$' "rdmsetup reads dm-mod's version"
dmv=$(dmsetup version | sed -n 's/^Driver version: *//p')
expect_match "$out" "^Driver version: +$dmv\$" "the same version dmsetup reports ($dmv)"

expect_eq "$(rdmsetup --control $ctl ls)" "No devices found" "empty list"
dmsetup --noudevsync create rdmtest0 --table "0 8 zero" || fail "dmsetup create"
dmsetup --noudevsync create rdmtest1 -u RDM-TEST-1 --table "0 16 zero" || fail "dmsetup create"
mine=$(rdmsetup --control $ctl ls | sort)
theirs=$(dmsetup ls | sort)
log "rdmsetup ls: $(echo "$mine" | tr '\n' ';')"
expect_eq "$mine" "$theirs" "rdmsetup ls equals dmsetup ls"
exit "$KSFT_PASS"
