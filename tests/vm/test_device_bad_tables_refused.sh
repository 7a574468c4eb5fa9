#!/usr/bin/env bash
# Bad table lines and names: each refused with an errno and a kernel log
# line naming the problem; nothing is left half-made.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
defer rdm_cleanup
rdm_load
size=$(disk_sectors "$VDA")

bad_table() { # bad_table WHAT LOG-REGEX TABLE
	expect_fail "$1" "$2" rdmsetup create bad --table "$3"
	expect_eq "$(rdmsetup ls)" "No devices found" "$1: no device left behind"
}
bad_table "unknown target type" 'unknown target type "frobnicate"' "0 100 frobnicate"
bad_table "gap" "gap in table: target 1 starts at sector 200, expected 100" "0 100 zero
200 100 zero"
bad_table "overlap" "overlap in table: target 1" "0 100 zero
50 100 zero"
bad_table "table not starting at 0" "gap in table: target 0" "8 100 zero"
bad_table "zero-length target" "target 0 has zero length" "0 0 zero"
bad_table "target past the end of its device" "too small" "0 $((size + 1)) linear $VDA 0"
bad_table "offset past the end of its device" "too small" "0 8 linear $VDA $size"
bad_table "non-numeric offset" "argument 2 is not a number" "0 8 linear $VDA abc"
bad_table "missing arguments" "expected 2 .* got 1" "0 8 linear $VDA"
bad_table "extra arguments" "expected no arguments, got 1" "0 8 zero extra"
bad_table "device path that does not exist" "cannot open device /dev/nonexistent" "0 8 linear /dev/nonexistent 0"
bad_table "device number that does not exist" "cannot open device 250:7" "0 8 linear 250:7 0"
bad_table "device that is not a path" "not a device path" "0 8 linear vda 0"

rdmsetup create dup -u RDM-DUP --table "0 8 zero" || fail "create dup"
expect_fail "duplicate name" "device name dup already exists" rdmsetup create dup --table "0 8 zero"
expect_fail "duplicate uuid" "uuid RDM-DUP already exists" rdmsetup create other -u RDM-DUP --table "0 8 zero"
expect_fail "rename onto an existing name" "already in use" rdmsetup rename other dup
rdmsetup create other --table "0 8 zero" || fail "create other"
expect_fail "rename onto an existing name" "already in use" rdmsetup rename other dup
expect_fail "setting a uuid twice" "already set" rdmsetup rename dup --setuuid RDM-NEW
expect_fail "name with a slash" "invalid device name" rdmsetup create a/b --table "0 8 zero"
expect_fail "name .." "invalid device name" rdmsetup create .. --table "0 8 zero"
expect_fail "device that does not exist (ENXIO; logged at debug level only, as dm: test_device_answers_like_dm)" "" rdmsetup info nosuch
long=$(printf 'n%.0s' $(seq 1 130))
expect_fail "name too long (rdmsetup)" "" rdmsetup create "$long" --table "0 8 zero"
expect_fail "message to a basic target" "does not accept message" rdmsetup message dup 0 hello
rdmsetup remove_all || fail "remove_all"
exit "$KSFT_PASS"
