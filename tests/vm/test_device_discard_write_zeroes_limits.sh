#!/usr/bin/env bash
# Discard, write zeroes and secure erase: each target type says which it
# supports, and a table offers one only if all its targets (and the
# devices they pass it to) do, as dm does. The same scenario on the
# kernel's dm and on rdm (run_both), over a loop device on a file of an
# ext4 filesystem (it offers discard and write zeroes, not secure erase).
# 1. A linear table offers discard and write zeroes (sysfs
#    discard_max_bytes, write_zeroes_max_bytes) and does them: blkdiscard
#    and blkdiscard -z zero their ranges and nothing else; blkdiscard -s
#    fails (EOPNOTSUPP: the device has no secure erase).
# 2. A table of linear and zero offers discard (zero drops discards
#    itself) but not write zeroes (zero does not do them).
# 3. A snapshot-origin over the same device, with a snapshot: neither
#    device offers any of them; blkdiscard and blkdiscard -s on the origin,
#    and blkdiscard on the snapshot, fail with EOPNOTSUPP, and origin and
#    snapshot keep their data. blkdiscard -z on the origin succeeds: with
#    no write zeroes offered, the block layer writes pages of zeros
#    instead (blkdev_issue_zeroout), ordinary writes that the origin
#    copies first: the origin reads zeros there, the snapshot its data.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDB" "$VDD"
command -v mkfs.ext4 >/dev/null || skip "needs e2fsprogs"
command -v blkdiscard >/dev/null || skip "needs blkdiscard"
mnt=/tmp/rdm-mnt10
mkdir -p $mnt
mkfs.ext4 -q -F "$VDD" || fail "mkfs.ext4 $VDD"
mount "$VDD" $mnt || fail "mount $VDD"
defer umount "$mnt"
truncate -s 16M $mnt/backing || fail "make the loop's file"
LOOP=$(losetup -f --show $mnt/backing) || skip "losetup failed"
defer losetup -d "$LOOP"
LQ=/sys/block/${LOOP##*/}/queue
[ "$(cat "$LQ"/discard_max_bytes)" -gt 0 ] && [ "$(cat "$LQ"/write_zeroes_max_bytes)" -gt 0 ] ||
	skip "${LOOP##*/} offers no discard or write zeroes here"
log "${LOOP##*/}: discard_max_bytes $(cat "$LQ"/discard_max_bytes), write_zeroes_max_bytes $(cat "$LQ"/write_zeroes_max_bytes)"

LEN=16384 MIB=2048
pat=/tmp/device10.pat exp=/tmp/device10.exp
make_pattern $pat 8
# queue NAME ATTR: a queue attribute of a mapped device.
queue() { cat "/sys/dev/block/$(devno "$DEVDIR/$1")/queue/$2"; }
# not_supported WHAT COMMAND...: fails with EOPNOTSUPP.
not_supported() {
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then fail "$IMPL: $what: succeeded"; fi
	expect_match "$out" "[Oo]peration not supported" "$IMPL: $what: EOPNOTSUPP"
}
zeroed() { # zeroed SECTOR SECTORS: the expected image has zeros there
	dd if=/dev/zero of="$exp" bs=512 seek="$1" count="$2" conv=notrunc status=none
}

scenario() {
	[ "$IMPL" = dm ] && { modprobe -d "$RDM_MODROOT" dm-zero || fail "modprobe dm-zero"; }
	dwrite "$pat" 0 "$LOOP" 0 "$LEN" || fail "stamp the loop device"
	cp "$pat" "$exp"

	# 1. linear
	dm create lin --table "0 $LEN linear $LOOP 0" || fail "create lin"
	[ "$(queue lin discard_max_bytes)" -gt 0 ] || fail "$IMPL: linear: discard_max_bytes is 0"
	[ "$(queue lin write_zeroes_max_bytes)" -gt 0 ] || fail "$IMPL: linear: write_zeroes_max_bytes is 0"
	log "ok: $IMPL: linear offers discard ($(queue lin discard_max_bytes) bytes) and write zeroes ($(queue lin write_zeroes_max_bytes))"
	blkdiscard -o $((1 * MIB * 512)) -l $((MIB * 512)) "$DEVDIR"/lin || fail "$IMPL: blkdiscard on linear"
	zeroed "$MIB" "$MIB"
	blkdiscard -z -o $((3 * MIB * 512)) -l $((MIB * 512)) "$DEVDIR"/lin || fail "$IMPL: blkdiscard -z on linear"
	zeroed $((3 * MIB)) "$MIB"
	not_supported "blkdiscard -s on linear over a device without secure erase" \
		blkdiscard -s -o 0 -l $((MIB * 512)) "$DEVDIR"/lin
	expect_same "$IMPL: linear: discarded and zeroed ranges read zeros, the rest is intact" "$DEVDIR"/lin "$exp"
	dm remove lin || fail "remove lin"

	# 2. linear + zero
	dm create mix --table "0 $((LEN / 2)) linear $LOOP 0
$((LEN / 2)) $((LEN / 2)) zero" || fail "create mix"
	[ "$(queue mix discard_max_bytes)" -gt 0 ] || fail "$IMPL: linear+zero: discard_max_bytes is 0"
	expect_eq "$(queue mix write_zeroes_max_bytes)" 0 "$IMPL: linear+zero: no write zeroes (zero does not do them)"
	# 3.5 MiB to 5 MiB: the last 512 KiB of the linear part, then zero.
	blkdiscard -o $((7 * MIB * 512 / 2)) -l $((3 * MIB * 512 / 2)) "$DEVDIR"/mix ||
		fail "$IMPL: blkdiscard across linear and zero"
	zeroed $((7 * MIB / 2)) $((MIB / 2))
	expect_same "$IMPL: linear+zero: the discard reached the linear part" "$DEVDIR"/mix "$exp" $((LEN / 2))
	dm remove mix || fail "remove mix"

	# 3. snapshot-origin and snapshot
	dwrite "$pat" 0 "$LOOP" 0 "$LEN" || fail "stamp the loop device again"
	dm create orig --table "0 $LEN snapshot-origin $LOOP" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $LOOP $VDB N 16"
	local d a
	for d in orig snap; do
		for a in discard_max_bytes write_zeroes_max_bytes; do
			expect_eq "$(queue "$d" "$a")" 0 "$IMPL: $d: $a"
		done
	done
	not_supported "blkdiscard on the origin" blkdiscard -o 0 -l $((MIB * 512)) "$DEVDIR"/orig
	not_supported "blkdiscard -s on the origin" blkdiscard -s -o 0 -l $((MIB * 512)) "$DEVDIR"/orig
	not_supported "blkdiscard on the snapshot" blkdiscard -o 0 -l $((MIB * 512)) "$DEVDIR"/snap
	expect_same "$IMPL: the origin keeps its data" "$DEVDIR"/orig "$pat" "$LEN"
	blkdiscard -z -o $((2 * MIB * 512)) -l $((MIB * 512)) "$DEVDIR"/orig ||
		fail "$IMPL: blkdiscard -z on the origin (zero pages) failed"
	cp "$pat" "$exp"
	zeroed $((2 * MIB)) "$MIB"
	expect_same "$IMPL: blkdiscard -z on the origin wrote zeros (as ordinary writes)" "$DEVDIR"/orig "$exp" "$LEN"
	expect_same "$IMPL: the snapshot keeps its data" "$DEVDIR"/snap "$pat" "$LEN"
	snap_drop orig snap
	dm remove orig || fail "remove orig"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}

run_both scenario
exit "$KSFT_PASS"
