#!/usr/bin/env bash
# Stacked snapshots at the default limits (issue 13, item 4): origin B has
# a snapshot whose COW device is origin A, which has a snapshot of its
# own. An 8 MiB O_DIRECT write to B makes 2048 copies of 4 KiB chunks
# whose COW writes each make a copy for A's snapshot. Before the copier
# had lanes, the 64 jobs it let have I/O in flight were all B's, waiting
# for their COW writes, which waited for A's copies queued behind them:
# the write never completed. It must complete, and every image must be
# right. Both stores; the kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"

LEN=32768 # 16 MiB origins
CS=8      # 4 KiB chunks
out=/tmp/s10
rm -rf $out && mkdir -p $out
make_pattern $out/a 16
# A's first chunks are zero: a persistent store finds a new COW device
# there (random bytes would be a corrupt header, refused by both).
dd if=/dev/zero of=$out/a bs=64k count=1 conv=notrunc status=none
make_pattern $out/b 16
make_pattern $out/new 8

# within SECONDS WHAT COMMAND...: the command succeeds within SECONDS (a
# task stuck in the kernel cannot be killed: a hang fails the test).
within() {
	local secs=$1 what=$2 pid i
	shift 2
	"$@" &
	pid=$!
	for ((i = 0; i < secs * 10; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" || fail "$what: failed"
			return 0
		fi
		sleep 0.1
	done
	fail "$what: still running after $secs s (hang)"
}

scenario() {
	local store
	for store in N P; do
		dd if="$out"/a of="$VDA" bs=1M oflag=direct status=none || fail "stamp A"
		dd if="$out"/b of="$VDC" bs=1M oflag=direct status=none || fail "stamp B"
		dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none
		dm create a --table "0 $LEN snapshot-origin $VDA" || fail "create a"
		dm create b --table "0 $LEN snapshot-origin $VDC" || fail "create b"
		snap_take a sa "0 $LEN snapshot $VDA $VDB $store $CS"
		# B's snapshot keeps its COW on A: every COW write is an origin
		# write of A.
		snap_take b sb "0 $LEN snapshot $VDC $(devno "$DEVDIR"/a) $store $CS"
		within 300 "$IMPL $store: an 8 MiB write to b" \
			dd if="$out"/new of="$DEVDIR"/b bs=8M count=1 seek=512 oflag=direct,seek_bytes status=none
		log "ok: $IMPL $store: the 8 MiB write completed"
		cp "$out"/b "$out"/bexp
		fput "$out"/new 0 "$out"/bexp 1 16384
		expect_same "$IMPL $store: b has the write" "$DEVDIR"/b "$out"/bexp
		expect_same "$IMPL $store: sb keeps B's old image" "$DEVDIR"/sb "$out"/b
		expect_same "$IMPL $store: sa keeps A's old image under sb's COW writes" "$DEVDIR"/sa "$out"/a
		snap_drop b sb
		snap_drop a sa
		dm remove b && dm remove a || fail "remove"
	done
}
run_both scenario
exit "$KSFT_PASS"
