#!/usr/bin/env bash
# A merge under load, with other snapshots of the same origin present (the
# kernel's dm-snapshot first, then rdm: run_both). A 32 MiB origin with
# three snapshots: S2 (P, 16-sector chunks, taken first), S1 (P, 8-sector
# chunks, the one merged) and S3 (N, 8-sector chunks, taken last), origin
# writes between them and scattered writes to S1. While S1 merges into the
# origin, fio writes 6 MiB at random into a 6 MiB region of the origin
# with --verify (crc32c, verified as it goes and at the end) and the rest
# of the origin is read and compared with S1's image. Checked: fio
# verifies; after the merge the origin outside fio's region equals S1's
# image; S2 and S3 read what they read before the merge (their checksums).
# On rdm the round runs twice: at the default and with merge_kib_per_s at
# 2048, so that the load surely overlaps many batches (checked: the merge
# still has data left when fio starts).
. "$(dirname "$0")/test_common.sh"
. "$(dirname "$0")/merge_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC" "$VDD"
command -v fio >/dev/null || skip "fio is not installed"

LEN=65536
FIO_OFF=20 FIO_MIB=6 # fio's region, in MiB
out=/tmp/merge02
rm -rf $out && mkdir -p $out
make_pattern $out/stamp 32

sum() { dread "$1" 0 "$LEN" | sha256sum | cut -c1-16; }

one_round() { # one_round WHAT SEED
	local what="$IMPL: $1" seed=$2 s2 s3 fio_pid left
	log "--- $what"
	for d in $VDB $VDC $VDD; do
		dd if=/dev/zero of="$d" bs=64k count=1 oflag=direct status=none || fail "zero $d"
	done
	dd if="$out"/stamp of="$VDA" bs=1M oflag=direct status=none || fail "stamp the origin"
	dm create base --table "0 $LEN linear $VDA 0" || fail "create base"
	dm create orig --table "0 $LEN snapshot-origin $DEVDIR/base" || fail "create orig"
	snap_take orig s2 "0 $LEN snapshot $DEVDIR/base $VDC P 16"
	mergeio scatter "$DEVDIR"/orig "$seed" 300 "$LEN" 1 128 >/dev/null || fail "origin writes"
	snap_take orig s1 "0 $LEN snapshot $DEVDIR/base $VDB P 8"
	mergeio scatter "$DEVDIR"/orig $((seed + 1)) 300 "$LEN" 1 128 >/dev/null || fail "origin writes"
	dread "$DEVDIR"/s1 0 "$LEN" >"$out"/image
	mergeio scatter "$DEVDIR"/s1 $((seed + 2)) 1500 "$LEN" 1 64 "$out"/image >/dev/null || fail "S1 writes"
	snap_take orig s3 "0 $LEN snapshot $DEVDIR/base $VDD N 8"
	mergeio scatter "$DEVDIR"/orig $((seed + 3)) 200 "$LEN" 1 64 >/dev/null || fail "origin writes"
	expect_same "$what: S1's image" "$DEVDIR"/s1 "$out"/image
	s2=$(sum "$DEVDIR"/s2) s3=$(sum "$DEVDIR"/s3)
	log "S1 has $(cow_entries "$VDB" 8) exceptions"
	merge_start orig s1 "0 $LEN snapshot-merge $DEVDIR/base $VDB P 8"
	fio --name=merge02 --filename="$DEVDIR"/orig --direct=1 --ioengine=psync \
		--rw=randwrite --bs=4k --offset="${FIO_OFF}"M --size="${FIO_MIB}"M \
		--verify=crc32c --verify_backlog=256 --randseed="$seed" \
		--output="$out"/fio.log >/dev/null 2>&1 &
	fio_pid=$!
	left=$(merge_left orig)
	log "$what: $left sectors left to merge as fio starts"
	if [ "$seed" = 22 ]; then
		[ "$left" -gt 0 ] 2>/dev/null || fail "$what: the merge was over before fio started ($left)"
	fi
	expect_same "$what: the origin before fio's region, while merging" "$DEVDIR"/orig "$out"/image $((FIO_OFF * 2048))
	expect_same "$what: the origin after fio's region, while merging" "$DEVDIR"/orig "$out"/image \
		$((LEN - (FIO_OFF + FIO_MIB) * 2048)) $(((FIO_OFF + FIO_MIB) * 2048)) $(((FIO_OFF + FIO_MIB) * 2048))
	wait "$fio_pid" || { sed 's/^/# /' "$out"/fio.log; fail "$what: fio --verify failed on the merging origin"; }
	log "ok: $what: fio verified its writes"
	merge_wait orig
	expect_same "$what: the origin before fio's region" "$DEVDIR"/orig "$out"/image $((FIO_OFF * 2048))
	expect_same "$what: the origin after fio's region" "$DEVDIR"/orig "$out"/image \
		$((LEN - (FIO_OFF + FIO_MIB) * 2048)) $(((FIO_OFF + FIO_MIB) * 2048)) $(((FIO_OFF + FIO_MIB) * 2048))
	expect_eq "$(sum "$DEVDIR"/s2)" "$s2" "$what: S2 keeps its image"
	expect_eq "$(sum "$DEVDIR"/s3)" "$s3" "$what: S3 keeps its image"
	fio --name=merge02 --filename="$DEVDIR"/orig --direct=1 --ioengine=psync \
		--rw=randwrite --bs=4k --offset="${FIO_OFF}"M --size="${FIO_MIB}"M \
		--verify=crc32c --randseed="$seed" --verify_only \
		--output="$out"/fio.log >/dev/null 2>&1 ||
		{ sed 's/^/# /' "$out"/fio.log; fail "$what: fio's data is not on the origin after the merge"; }
	log "ok: $what: fio's data verified again after the merge"
	dm suspend orig || fail "suspend orig"
	dm remove s3 && dm remove s2 || fail "remove S2 and S3"
	dm resume orig || fail "resume orig"
	dm remove orig && dm remove base || fail "remove"
	expect_eq "$(dev_count)" 0 "$what: no device left"
}

scenario() {
	one_round "merge at full speed" 21
	if [ "$IMPL" = rdm ]; then
		echo 2048 >/sys/module/"$SNAP_MOD"/parameters/merge_kib_per_s || fail "set merge_kib_per_s"
		one_round "merge at 2 MiB/s" 22
		echo 0 >/sys/module/"$SNAP_MOD"/parameters/merge_kib_per_s
	fi
}

run_both scenario
exit "$KSFT_PASS"
