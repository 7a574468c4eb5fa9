#!/usr/bin/env bash
# A write to a persistent snapshot is acknowledged only once the exception
# that protects it is committed (issue 13, item 1). With LVM's default
# 4 KiB chunk every first aligned 4 KiB write to a snapshot is a
# whole-chunk write, which skips the copy: its data goes straight to the
# new COW chunk, and before this was fixed rdm acknowledged it when that
# data write completed, before the metadata commit (a power cut then lost
# the write: dm-snapshot acknowledges from its commit callback).
#
# The COW device is a two-target linear device: its first two chunks (the
# header and metadata area 0) on a device M that the test suspends with
# --noflush, the data chunks on a disk that stays live. While M is
# suspended, a whole-chunk and a partial-chunk O_DIRECT write to the
# snapshot must not complete (their data may land, their commit cannot);
# once M resumes both complete and read back, the origin unchanged, and
# after the snapshot is loaded again from the COW device both are there.
# P and PO, against the kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"

LEN=16384 # 8 MiB origin
CS=8      # 4 KiB chunks, LVM's default
COWLEN=16384
META=$((2 * CS)) # chunk 0 (header) and chunk 1 (metadata area 0)
out=/tmp/s08
rm -rf $out && mkdir -p $out
make_pattern $out/origin 8
make_pattern $out/new 1

# alive PID SECONDS: the process is still running after SECONDS.
alive() {
	sleep "$2"
	kill -0 "$1" 2>/dev/null
}

scenario() {
	local store
	for store in P PO; do
		dd if="$out"/origin of="$VDA" bs=1M oflag=direct status=none || fail "stamp the origin"
		dd if=/dev/zero of="$VDB" bs=1M count=8 oflag=direct status=none
		dd if=/dev/zero of="$VDC" bs=1M count=1 oflag=direct status=none
		dm create meta --table "0 $META linear $VDC 0" || fail "create meta"
		local meta
		meta=$(devno "$DEVDIR"/meta)
		dm create cow --table "0 $META linear $meta 0
$META $((COWLEN - META)) linear $VDB $META" || fail "create the split COW device"
		local cow
		cow=$(devno "$DEVDIR"/cow)
		dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create orig"
		snap_take orig snap "0 $LEN snapshot $VDA $cow $store $CS"

		dm suspend --noflush meta || fail "suspend meta"
		# Chunk 100 whole (the write is its own copy), chunk 200 in part
		# (a copy first, then the write).
		dwrite "$out"/new 0 "$DEVDIR"/snap $((100 * CS)) "$CS" &
		local whole=$!
		dwrite "$out"/new 8 "$DEVDIR"/snap $((200 * CS + 2)) 2 &
		local part=$!
		if ! alive "$whole" 3; then
			dm resume meta
			fail "$IMPL $store: a whole-chunk snapshot write completed before its exception could be committed"
		fi
		alive "$part" 0 || { dm resume meta; fail "$IMPL $store: a partial snapshot write completed before its commit"; }
		log "ok: $IMPL $store: both snapshot writes wait for the commit"
		dm resume meta || fail "resume meta"
		done_within "$whole" 60 || fail "$IMPL $store: the whole-chunk write did not complete after the resume"
		done_within "$part" 60 || fail "$IMPL $store: the partial write did not complete after the resume"

		cp "$out"/origin "$out"/expect
		fput "$out"/new 0 "$out"/expect $((100 * CS)) "$CS"
		fput "$out"/new 8 "$out"/expect $((200 * CS + 2)) 2
		expect_same "$IMPL $store: the snapshot has both writes" "$DEVDIR"/snap "$out"/expect
		expect_same "$IMPL $store: the origin is unchanged" "$DEVDIR"/orig "$out"/origin
		# Loaded again from the COW device: both exceptions were committed.
		snap_drop orig snap
		snap_take orig snap "0 $LEN snapshot $VDA $cow $store $CS"
		expect_same "$IMPL $store: both writes survive a reload" "$DEVDIR"/snap "$out"/expect
		snap_drop orig snap
		dm remove orig && dm remove cow && dm remove meta || fail "remove"
	done
}
run_both scenario
exit "$KSFT_PASS"
