#!/usr/bin/env bash
# Reads of a snapshot are tracked by exact chunk (issue 13, item 14; with
# item 10). A snapshot read of a chunk not copied goes to the origin, and
# a copy of that chunk must not let its origin write through before the
# read ends. Before, reads were counted in 64 slots hashed by chunk, so a
# read in flight held back the copies of every chunk in its slot: here a
# read of chunk 244 that stays in flight (its part of the origin is behind
# a suspended device) must not hold up an origin write to chunk 100 (the
# same slot of the old hash), whose part of the origin is live. The
# kernel's dm-snapshot (which tracks by chunk too) first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"

LEN=16384 # 8 MiB
CS=16     # 8 KiB chunks
A=244     # the chunk read
B=100     # the chunk written: slot 51 of the old hash, as A
out=/tmp/s14
rm -rf $out && mkdir -p $out
make_pattern $out/origin 8
make_pattern $out/new 1

scenario() {
	dd if="$out"/origin of="$VDA" bs=1M oflag=direct status=none || fail "stamp"
	# The origin: chunks 200-299 through device x (suspended below), the
	# rest straight on the disk.
	dm create x --table "0 $((100 * CS)) linear $VDA $((200 * CS))" || fail "create x"
	dm create base --table "0 $((200 * CS)) linear $VDA 0
$((200 * CS)) $((100 * CS)) linear $(devno "$DEVDIR"/x) 0
$((300 * CS)) $((LEN - 300 * CS)) linear $VDA $((300 * CS))" || fail "create base"
	local base
	base=$(devno "$DEVDIR"/base)
	dm create orig --table "0 $LEN snapshot-origin $base" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $base $VDB N $CS"

	dm suspend --noflush x || fail "suspend x"
	dd if="$DEVDIR"/snap of="$out"/read_a bs=4k count=1 skip=$((A * CS / 8)) iflag=direct status=none &
	local reader=$!
	sleep 2
	kill -0 "$reader" 2>/dev/null || { dm resume x; fail "$IMPL: the read of chunk $A did not wait for x"; }
	dwrite "$out"/new 0 "$DEVDIR"/orig $((B * CS)) 8 &
	local writer=$!
	if ! done_within "$writer" 60; then
		dm resume x
		fail "$IMPL: an origin write to chunk $B waited for a read of chunk $A"
	fi
	log "ok: $IMPL: the write to chunk $B did not wait for the read of chunk $A"
	dm resume x || fail "resume x"
	done_within "$reader" 60 || fail "$IMPL: the read of chunk $A did not complete"
	cmp -s "$out"/read_a <(sect "$out"/origin $((A * CS)) 8) ||
		fail "$IMPL: the read of chunk $A did not see the old data"
	log "ok: $IMPL: the read of chunk $A saw the old data"
	expect_same "$IMPL: the snapshot keeps chunk $B's old data" "$DEVDIR"/snap "$out"/origin "$CS" $((B * CS)) $((B * CS))
	expect_same "$IMPL: the origin has the write" "$DEVDIR"/orig "$out"/new 8 $((B * CS)) 0
	snap_drop orig snap
	dm remove orig && dm remove base && dm remove x || fail "remove"
}
run_both scenario
exit "$KSFT_PASS"
