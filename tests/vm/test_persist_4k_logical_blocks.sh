#!/usr/bin/env bash
# Persistent snapshots on devices with 4 KiB logical blocks (loop devices
# made with `losetup -b 4096` over $VDC and $VDD), the same scenario on
# the kernel's dm-snapshot and on rdm (run_both). Cases (origin, COW,
# store, chunk): a 512-byte origin with a 4 KiB COW device (P 8, PO 16),
# a 4 KiB origin with a 4 KiB COW (PO 8) and a 4 KiB origin with a
# 512-byte COW ($VDB, P 16). Each case
# stamps the origin, takes a fresh snapshot (the COW header zeroed), writes
# the origin (4 KiB inside a chunk, 128 KiB across chunks) and the
# snapshot (a whole chunk, 4 KiB at the end of a chunk, 8 KiB into chunks
# the origin write copied): the snapshot reads the old data plus its own
# writes, the origin the new data, the header is "SnAp" valid with the
# chunk size. Then the snapshot is removed and created again (chunk
# argument 0 for P — the size comes from the header — the same size for
# PO), so its metadata is read back from the 4 KiB device: same status
# line, same contents, and one more origin write still copies. Last, a
# chunk size smaller than a logical block of the COW device (4 sectors on
# the 4 KiB COW) or of the origin (4 sectors on the 4 KiB origin) is
# refused with EINVAL and a kernel log line, as dm-snapshot refuses it
# (its constructor checks the chunk size against both devices' logical
# block sizes before it reads anything).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC" "$VDD"
command -v losetup >/dev/null || skip "needs losetup"
L4C=$(losetup -f --show -b 4096 "$VDC") || skip "losetup -b 4096 $VDC failed"
defer losetup -d "$L4C"
L4O=$(losetup -f --show -b 4096 "$VDD") || skip "losetup -b 4096 $VDD failed"
defer losetup -d "$L4O"
expect_eq "$(blockdev --getss "$L4C") $(blockdev --getss "$L4O")" "4096 4096" "loop devices with 4 KiB logical blocks"

LEN=2048 # 1 MiB of origin
pat=/tmp/persist06.pat new=/tmp/persist06.new new2=/tmp/persist06.new2
exp_o=/tmp/persist06.exp_o exp_s=/tmp/persist06.exp_s
make_pattern $pat 1
make_pattern $new 1
make_pattern $new2 1

owrite() { # owrite SECTOR SECTORS: new data to the origin
	dwrite "$new" "$1" "$DEVDIR"/orig "$1" "$2" || fail "origin write of $2 sectors at $1"
	fput "$new" "$1" "$exp_o" "$1" "$2"
}
swrite() { # swrite SECTOR SECTORS: other new data to the snapshot
	dwrite "$new2" "$1" "$DEVDIR"/snap "$1" "$2" || fail "snapshot write of $2 sectors at $1"
	fput "$new2" "$1" "$exp_s" "$1" "$2"
}
both_same() { # both_same WHAT
	expect_same "$1: origin" "$DEVDIR"/orig "$exp_o"
	expect_same "$1: snapshot" "$DEVDIR"/snap "$exp_s"
}

one_case() { # one_case ORIGIN COW STORE CHUNK
	local o=$1 cow=$2 st=$3 cs=$4 what st1 again
	what="$IMPL: origin ${o##*/} ($(blockdev --getss "$o") B), COW ${cow##*/} ($(blockdev --getss "$cow") B), $st $cs"
	log "--- $what"
	dd if=/dev/zero of="$cow" bs=64k count=1 oflag=direct status=none || fail "zero the COW header"
	dwrite "$pat" 0 "$o" 0 "$LEN" || fail "stamp the origin"
	dd if="$pat" of="$exp_o" bs=512 count="$LEN" status=none
	cp "$exp_o" "$exp_s"
	dm create orig --table "0 $LEN snapshot-origin $o" || fail "$what: create the origin"
	snap_take orig snap "0 $LEN snapshot $o $cow $st $cs"
	expect_eq "$(cow_header "$cow")" "$COW_MAGIC 1 1 $cs" "$what: header SnAp, valid, version 1, chunk $cs"
	owrite 40 8
	owrite 1024 256
	swrite $((64 * cs)) "$cs"
	swrite $((80 * cs + cs - 8)) 8
	swrite 1088 16
	both_same "$what: after the writes"
	st1=$(dm status snap)
	snap_drop orig snap
	again=$cs
	[ "$st" = P ] && again=0
	snap_take orig snap "0 $LEN snapshot $o $cow $st $again"
	expect_eq "$(dm status snap)" "$st1" "$what: the metadata read back (chunk argument $again) gives the same status"
	expect_eq "$(dm table snap)" "0 $LEN snapshot $(devno "$o") $(devno "$cow") $st $cs" "$what: table line"
	both_same "$what: after the reload"
	owrite 1536 64
	both_same "$what: an origin write after the reload"
	snap_drop orig snap
	dm remove orig || fail "$what: remove the origin"
}

scenario() {
	one_case "$VDA" "$L4C" P 8
	one_case "$VDA" "$L4C" PO 16
	one_case "$L4O" "$L4C" PO 8
	one_case "$L4O" "$VDB" P 16
	# A chunk smaller than a logical block of either device.
	# dm-snapshot logs only "Couldn't create exception store (-22)" (its
	# chunk-size message is replaced by that one); rdm says why.
	local re="chunk size 4 is not a multiple of the device block size \\(8 sectors\\)"
	[ "$IMPL" = dm ] && re="snapshot: Couldn't create exception store \\(-22\\)"
	dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
	dd if=/dev/zero of="$L4C" bs=64k count=1 oflag=direct status=none
	expect_refused "$IMPL: P chunk 4 on a 4 KiB COW device" "[Ii]nvalid argument" "$re" \
		dm create bad --table "0 $LEN snapshot $VDA $L4C P 4"
	expect_refused "$IMPL: PO chunk 4 on a 4 KiB COW device" "[Ii]nvalid argument" "$re" \
		dm create bad --table "0 $LEN snapshot $VDA $L4C PO 4"
	dm remove orig || fail "remove the origin"
	dm create orig --table "0 $LEN snapshot-origin $L4O" || fail "create the 4 KiB origin"
	expect_refused "$IMPL: P chunk 4 on a 4 KiB origin" "[Ii]nvalid argument" "$re" \
		dm create bad --table "0 $LEN snapshot $L4O $VDB P 4"
	dm remove orig || fail "remove the origin"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}

run_both scenario
exit "$KSFT_PASS"
