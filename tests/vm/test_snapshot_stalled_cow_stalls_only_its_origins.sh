#!/usr/bin/env bash
# A stalled COW device stalls only the origins whose snapshots use it
# (issue 13, item 5). Origin O1 has a snapshot S1 whose COW device C1 is
# suspended (--noflush: its I/O waits, as on a dead path); 16 MiB of first
# writes to O1 (4096 copies of 4 KiB chunks: more than cow_threshold's
# 2048 and the 64 copies with I/O in flight) wait for it. Meanwhile:
# first writes to another origin O2 (whose snapshot S2 is on a live disk)
# and writes to S2 itself complete; status, info, table and deps of every
# device, the stalled ones included, answer at once. Once C1 resumes, the
# writes to O1 complete and S1 keeps O1's old image. At the defaults; the
# kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC" "$VDD"

LEN=65536 # 32 MiB origins
CS=8      # 4 KiB chunks
out=/tmp/s11
rm -rf $out && mkdir -p $out
make_pattern $out/o1 32
make_pattern $out/o2 32
make_pattern $out/new 16

# within SECONDS WHAT COMMAND...: the command succeeds within SECONDS.
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
	fail "$what: still running after $secs s (stalled by another origin's COW device?)"
}

scenario() {
	local store
	for store in N P; do
		dd if="$out"/o1 of="$VDA" bs=1M oflag=direct status=none || fail "stamp O1"
		dd if="$out"/o2 of="$VDC" bs=1M oflag=direct status=none || fail "stamp O2"
		dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none
		dd if=/dev/zero of="$VDD" bs=64k count=1 oflag=direct status=none
		dm create c1 --table "0 $LEN linear $VDB 0" || fail "create c1"
		dm create o1 --table "0 $LEN snapshot-origin $VDA" || fail "create o1"
		dm create o2 --table "0 $LEN snapshot-origin $VDC" || fail "create o2"
		snap_take o1 s1 "0 $LEN snapshot $VDA $(devno "$DEVDIR"/c1) $store $CS"
		snap_take o2 s2 "0 $LEN snapshot $VDC $VDD $store $CS"

		dm suspend --noflush c1 || fail "suspend c1"
		dd if="$out"/new of="$DEVDIR"/o1 bs=1M count=16 oflag=direct status=none &
		local stalled=$!
		sleep 3
		kill -0 "$stalled" 2>/dev/null || fail "$IMPL $store: the writes to o1 did not wait for its stalled COW device"
		within 120 "$IMPL $store: 8 MiB of first writes to o2" \
			dd if="$out"/new of="$DEVDIR"/o2 bs=1M count=8 seek=4 oflag=direct status=none
		within 60 "$IMPL $store: writes to s2" \
			dd if="$out"/new of="$DEVDIR"/s2 bs=4k count=64 seek=7000 oflag=direct status=none
		local d q
		for d in o1 s1 c1 o2 s2; do
			for q in status info table deps; do
				within 10 "$IMPL $store: $q $d while c1 stalls" dm "$q" "$d"
			done
		done
		within 10 "$IMPL $store: ls while c1 stalls" dm ls
		log "ok: $IMPL $store: o2 and s2 go on, every query answers"
		kill -0 "$stalled" 2>/dev/null || fail "$IMPL $store: the writes to o1 ended while c1 was suspended"
		dm resume c1 || fail "resume c1"
		local i
		for i in $(seq 1 1200); do kill -0 "$stalled" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$stalled" 2>/dev/null && fail "$IMPL $store: the writes to o1 did not complete after c1 resumed"
		wait "$stalled" || fail "$IMPL $store: the writes to o1 failed"
		expect_same "$IMPL $store: s1 keeps O1's old image" "$DEVDIR"/s1 "$out"/o1
		expect_same "$IMPL $store: s2 keeps O2's old image where o2 was written" \
			"$DEVDIR"/s2 "$out"/o2 $((8 * 2048)) $((4 * 2048)) $((4 * 2048))
		snap_drop o2 s2
		snap_drop o1 s1
		dm remove o2 && dm remove o1 && dm remove c1 || fail "remove"
	done
}
run_both scenario
exit "$KSFT_PASS"
