#!/usr/bin/env bash
# A table over a mapped device whose table is loaded but not resumed yet
# (its size is still 0) loads, as dm: dm checks no device of size 0 at
# load, and LVM2's activation of a snapshot loads the origin over its
# `-real` device in that state (on rdm before this: "the origin device
# has 0 sectors, fewer than the target's ..."). Once the lower device is
# resumed, I/O goes through. A device that has a size and is too small is
# still refused. Against the kernel's dm first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"

scenario() {
	local pat=/tmp/d16.pat real
	make_pattern "$pat" 1
	dd if="$pat" of="$VDA" bs=1M oflag=direct status=none || fail "stamp"
	dm create real --notable || fail "create real"
	dm load real --table "0 2048 linear $VDA 0" || fail "load real"
	# (dmsetup makes no node for a device that was never resumed.)
	real=$(dm info real | sed -n 's/^Major, minor: *\([0-9]*\), \([0-9]*\)$/\1:\2/p')
	expect_eq "$(cat /sys/dev/block/"$real"/size)" 0 "$IMPL: real ($real) has no live table yet"
	dm create top --table "0 2048 linear $real 0" || fail "$IMPL: linear over a device of size 0"
	dm create orig --table "0 2048 snapshot-origin $real" ||
		fail "$IMPL: snapshot-origin over a device of size 0"
	dm create st --table "0 2048 striped 1 8 $real 0" || fail "$IMPL: striped over a device of size 0"
	log "ok: $IMPL: tables over a device of size 0 load"
	dm resume real || fail "resume real"
	expect_same "$IMPL: top reads through once real is resumed" "$DEVDIR"/top "$pat"
	expect_same "$IMPL: orig reads through once real is resumed" "$DEVDIR"/orig "$pat"
	dm remove st && dm remove orig && dm remove top || fail "remove"
	expect_refused "$IMPL: a device with a size is still checked" "[Ii]nvalid argument" "too small" \
		dm create x --table "0 4096 linear $real 0"
	dm remove real || fail "remove real"
	expect_eq "$(dev_count)" 0 "$IMPL: nothing left"
}

run_both scenario
exit "$KSFT_PASS"
