#!/usr/bin/env bash
# Malformed control buffers for the table and rename commands (built by
# rdm-ioctl-probe): names without NUL, specs whose data_start or next
# point outside the buffer or backwards, a target_count that does not
# match the specs. Each gets EINVAL and a log line; the device is intact.
. "$(dirname "$0")/test_common.sh"
require_vm
defer rdm_cleanup
rdm_load
rdmsetup create t --table "0 64 zero" || fail "create"
LOAD=9 CREATE=3 RENAME=5

probe() { # probe WHAT EXPECTED LOG-REGEX ARGS...
	local what=$1 want=$2 logre=$3 out
	shift 3
	klog_mark
	out=$(rdm-ioctl-probe "$@") || fail "$what: probe crashed: $out"
	expect_match "$out" "^result $want\$" "$what -> $want"
	[ -z "$logre" ] || expect_match "$(klog_since_mark)" "$logre" "$what is logged"
}

probe "valid table load" OK "" --nr $LOAD --name t --spec "0 64 zero"
probe "name without NUL" EINVAL "not NUL-terminated" --nr $CREATE --name-no-nul
probe "create without a name" EINVAL "name not supplied" --nr $CREATE
probe "no targets" EINVAL "no targets specified" --nr $LOAD --name t --target-count 0
probe "target_count above the specs" EINVAL "target 1: (spec lies outside|parameters not NUL-terminated)" \
	--nr $LOAD --name t --spec "0 64 zero" --target-count 2 --buffer-len 400
probe "data_start past the buffer" EINVAL "target 0: spec lies outside" \
	--nr $LOAD --name t --spec "0 64 zero" --data-start 0x7fffffff
probe "data_start misaligned" EINVAL "target 0: spec lies outside" \
	--nr $LOAD --name t --spec "0 64 zero" --data-start 313
probe "next pointing backwards" EINVAL "target 1: spec lies outside" \
	--nr $LOAD --name t --spec "0 32 zero" --spec "32 32 zero" --next 0=8
probe "next pointing past the end" EINVAL "target 1: spec lies outside" \
	--nr $LOAD --name t --spec "0 32 zero" --spec "32 32 zero" --next 0=0x10000000
probe "next of zero (a loop)" EINVAL "target 1: spec lies outside" \
	--nr $LOAD --name t --spec "0 32 zero" --spec "32 32 zero" --next 0=0
probe "params running off the buffer" EINVAL "parameters not NUL-terminated|spec lies outside" \
	--nr $LOAD --name t --spec "0 64 zero aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" --buffer-len 360
probe "rename without a new name" EINVAL "new name" --nr $RENAME --name t --data-start 0x7fffff00
probe "rename to a name with a slash" EINVAL "invalid device name" --nr $RENAME --name t --string "a/b"
probe "name and uuid both given" EINVAL "only supply one" --nr 7 --name t --uuid RDM-T

# A rename naming the device by uuid (a regression: the reply used to
# look the device up again by the request's empty name and fail).
rdmsetup create u -u RDM-U --table "0 8 zero" || fail "create u"
probe "rename by uuid" OK "" --nr $RENAME --uuid RDM-U --string u2
expect_match "$(rdmsetup info u2)" "^UUID: RDM-U$" "renamed by uuid"
rdmsetup remove u2 || fail "remove u2"

expect_match "$(rdmsetup table t)" "^0 64 zero" "the device is intact"
rdmsetup remove t || fail "remove"
exit "$KSFT_PASS"
