#!/usr/bin/env bash
# Odd shapes (issue 13, items 2 and 3): origins whose size is not a chunk
# multiple, and snapshots shorter than their origin.
# 1. An origin of 20483 sectors (the last 16-sector chunk holds 3): writes
#    to that last partial chunk through the origin (a copy that must read
#    only what the device has) and through the snapshot (a partial write
#    to the snapshot's own last chunk) complete, the snapshot stays valid
#    and reads the old data; a reload reads it back (P).
# 2. A COW device of 4 KiB logical blocks under an origin of 512-byte
#    ones whose size is odd: the copy of the 11-sector tail is written up
#    to whole COW blocks.
# 3. A snapshot shorter than its origin (as after lvextend of the origin):
#    origin writes past the snapshot's length copy nothing, so a COW
#    device with room for 8 chunks survives 64 chunks written there, and
#    the allocation in the status does not move.
# Every scenario runs against the kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"

LEN=20483 # 16-sector chunks: 1280 whole ones and 3 sectors
CS=16
out=/tmp/s09
rm -rf $out && mkdir -p $out
# The pattern covers the whole origin (LEN sectors), tail included: the
# disk keeps what earlier tests left past it.
make_pattern $out/origin 11
make_pattern $out/new 1

# setup ORIGIN-SECTORS: a base device of that many sectors with the
# origin on it (the origin target is as long as the device).
setup() {
	dd if="$out"/origin of="$VDA" bs=1M oflag=direct status=none || fail "stamp"
	dm create base --table "0 $1 linear $VDA 0" || fail "create base ($1 sectors)"
	BASE=$(devno "$DEVDIR"/base)
	dm create orig --table "0 $1 snapshot-origin $BASE" || fail "create orig"
}
teardown() {
	dm remove orig && dm remove base || fail "remove"
}
expect_valid() { # expect_valid NAME WHAT
	local st
	st=$(dm status "$1") || fail "status $1"
	case $st in *Invalid* | *Overflow*) fail "$2: $1 is '$st'" ;; esac
	log "ok: $2: $1 stays valid ($st)"
}

tail_chunk() {
	local store
	for store in N P; do
		setup "$LEN"
		dd if=/dev/zero of="$VDB" bs=1M count=4 oflag=direct status=none
		snap_take orig snap "0 $LEN snapshot $BASE $VDB $store $CS"
		# The origin's last sector (chunk 1280 holds sectors 20480-20482).
		dwrite "$out"/new 0 "$DEVDIR"/orig $((LEN - 1)) 1 || fail "$IMPL $store: write the origin's last sector"
		expect_valid snap "$IMPL $store: origin write to the last, partial chunk"
		# The snapshot's own last chunk, in part.
		dwrite "$out"/new 1 "$DEVDIR"/snap $((LEN - 3)) 1 || fail "$IMPL $store: write the snapshot's last chunk"
		expect_valid snap "$IMPL $store: snapshot write to its last, partial chunk"
		head -c $((LEN * 512)) "$out"/origin >"$out"/expect_origin
		cp "$out"/expect_origin "$out"/expect_snap
		fput "$out"/new 0 "$out"/expect_origin $((LEN - 1)) 1
		fput "$out"/new 1 "$out"/expect_snap $((LEN - 3)) 1
		expect_same "$IMPL $store: the snapshot keeps the old tail" "$DEVDIR"/snap "$out"/expect_snap
		expect_same "$IMPL $store: the origin has the new tail" "$DEVDIR"/orig "$out"/expect_origin
		if [ "$store" = P ]; then
			snap_drop orig snap
			snap_take orig snap "0 $LEN snapshot $BASE $VDB P $CS"
			expect_same "$IMPL P: the tail survives a reload" "$DEVDIR"/snap "$out"/expect_snap
		fi
		snap_drop orig snap
		teardown
	done
}

beyond_length() {
	local short=16384 before after
	setup "$LEN"
	dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none
	# Room for the header, one metadata area and 8 data chunks.
	dm create smallcow --table "0 $((10 * CS)) linear $VDB 0" || fail "create the small COW"
	snap_take orig snap "0 $short snapshot $BASE $(devno "$DEVDIR"/smallcow) P $CS"
	before=$(snap_alloc snap)
	# 64 whole chunks past the snapshot's end, and the snapshot's own last
	# chunk (which is copied: one chunk).
	dd if=/dev/urandom of="$DEVDIR"/orig bs=8k seek=$((short / CS)) count=64 oflag=direct \
		status=none || fail "$IMPL: write past the snapshot's length"
	expect_valid snap "$IMPL: 64 chunks written past the snapshot's length"
	after=$(snap_alloc snap)
	expect_eq "$after" "$before" "$IMPL: no chunk past the snapshot's length was copied"
	dwrite "$out"/new 0 "$DEVDIR"/orig $((short - 1)) 1 || fail "$IMPL: write the snapshot's last sector"
	after=$(snap_alloc snap)
	expect_eq "$after" "$((before + CS))" "$IMPL: the snapshot's own last chunk was copied"
	head -c $((short * 512)) "$out"/origin >"$out"/expect_short
	expect_same "$IMPL: the short snapshot reads the old data" "$DEVDIR"/snap "$out"/expect_short
	snap_drop orig snap
	dm remove smallcow || fail "remove smallcow"
	teardown
}

run_both tail_chunk
run_both beyond_length

# 2. The COW device on 4 KiB logical blocks, the origin on 512-byte ones
# and of an odd size (20491 sectors), the snapshot as long as a 4 KiB
# multiple allows (20488: dm refuses a table misaligned for its COW
# device). Its last chunk (sectors 20480-20490 on the origin) holds 11
# sectors: the copy's write is rounded up to whole COW blocks. (The
# kernel's dm-snapshot writes 11 sectors, which the device refuses, and
# its snapshot goes Invalid: known bad, logged.)
cow_4k_blocks() {
	local len=20491 slen=20488 loopf=$out/cow4k-$IMPL.img loop
	rm -f "$loopf"
	truncate -s 8M "$loopf"
	loop=$(losetup -f --show -b 4096 "$loopf") || skip "losetup -b 4096 failed"
	setup "$len"
	snap_take orig snap "0 $slen snapshot $BASE $loop P $CS"
	dwrite "$out"/new 0 "$DEVDIR"/orig $((slen - 1)) 1 || fail "$IMPL: write the snapshot's last sector (4 KiB COW)"
	expect_valid snap "$IMPL: tail copy of 11 sectors to a COW device of 4 KiB blocks"
	head -c $((slen * 512)) "$out"/origin >"$out"/expect4k
	expect_same "$IMPL: the snapshot keeps the old tail (4 KiB COW)" "$DEVDIR"/snap "$out"/expect4k
	snap_drop orig snap
	snap_take orig snap "0 $slen snapshot $BASE $loop P $CS"
	expect_same "$IMPL: ... after a reload" "$DEVDIR"/snap "$out"/expect4k
	snap_drop orig snap
	teardown
	losetup -d "$loop"
	rm -f "$loopf"
}
RDM_REF_KNOWN_BAD="dm-snapshot writes the 11-sector copy as it is, which the 4 KiB device refuses: the snapshot goes Invalid" \
	run_both cow_4k_blocks
exit "$KSFT_PASS"
