#!/usr/bin/env bash
# snapshot-merge copies every chunk back: after the merge the origin equals
# the snapshot's image (the snapshot's own writes included, the origin's
# writes made after the snapshot gone), on the device and on the disk
# under it. The kernel's dm-snapshot first, then rdm (run_both), in two
# shapes: 4 KiB chunks over a 32 MiB origin, and 32 KiB chunks over an
# origin whose last chunk is partial (24 sectors short). Each shape: an
# origin stamped with random data, a persistent snapshot, scattered writes
# to the snapshot (500, of 1 to 64 sectors, and 60 whole chunks) and to the
# origin (500), the last partial chunk written on both; then the merge
# started as LVM2 does (snapshot-merge in place of snapshot-origin, the
# snapshot handed over and removed). Checked: the snapshot's image before
# the merge is the expected one (the stamp plus its writes); the origin
# device reads it at once (unmerged chunks come from the COW device); the
# data left in the status never grows and reaches 0, the status then
# being dm's "<2 x chunk>/<COW size> <2 x chunk>"; the COW device's list is
# empty; the origin device and the disk under it both equal the image. On
# rdm also: an event is raised when the merge ends, `stats` says it is
# done, and the "merge complete" log line.
. "$(dirname "$0")/test_common.sh"
. "$(dirname "$0")/merge_common.sh"
require_vm
require_disks "$VDA" "$VDB"

out=/tmp/merge01
rm -rf $out && mkdir -p $out
make_pattern $out/stamp 32
make_pattern $out/new 1

one_case() { # one_case LEN CHUNK SEED
	local len=$1 cs=$2 seed=$3 what ev0 ev1 cow st
	what="$IMPL: $len sectors, chunk $cs"
	log "--- $what"
	local t0=$SECONDS
	dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none || fail "zero the COW header"
	dd if="$out"/stamp of="$VDA" bs=1M count=32 oflag=direct status=none || fail "stamp the origin"
	head -c $((len * 512)) "$out"/stamp >"$out"/image
	dm create base --table "0 $len linear $VDA 0" || fail "create base"
	dm create orig --table "0 $len snapshot-origin $DEVDIR/base" || fail "create orig"
	snap_take orig snap "0 $len snapshot $DEVDIR/base $VDB P $cs"
	mergeio scatter "$DEVDIR"/snap "$seed" 500 "$len" 1 64 "$out"/image >/dev/null || fail "snapshot writes"
	mergeio chunks "$DEVDIR"/snap $((seed + 1)) 60 "$cs" $((len / cs)) "$out"/image >/dev/null || fail "whole-chunk snapshot writes"
	mergeio scatter "$DEVDIR"/orig $((seed + 2)) 500 "$len" 1 64 >/dev/null || fail "origin writes"
	# The last (possibly partial) chunk, on both.
	dwrite "$out"/new 0 "$DEVDIR"/snap $((len - 8)) 8 || fail "the last sectors of the snapshot"
	fput "$out"/new 0 "$out"/image $((len - 8)) 8
	dwrite "$out"/new 64 "$DEVDIR"/orig $((len - 8)) 8 || fail "the last sectors of the origin"
	log "set up in $((SECONDS - t0)) s"
	expect_same "$what: the snapshot's image before the merge" "$DEVDIR"/snap "$out"/image
	cow=$(blockdev --getsz "$VDB")
	ev0=$(event_nr orig)
	klog_mark
	merge_start orig snap "0 $len snapshot-merge $DEVDIR/base $VDB P $cs"
	expect_same "$what: the origin reads the snapshot's image while merging" "$DEVDIR"/orig "$out"/image
	merge_wait orig
	st=$(merge_status orig)
	expect_eq "$st" "$((2 * cs))/$cow $((2 * cs))" "$what: status when the merge is complete"
	expect_eq "$(cow_entries "$VDB" "$cs")" 0 "$what: no exception left on the COW device"
	expect_same "$what: the origin equals the snapshot's image" "$DEVDIR"/orig "$out"/image
	if [ "$IMPL" = rdm ]; then
		# One event for the table swap, one for the end of the merge;
		# hosted by the kernel's dm, only the merge's (dm's event number
		# counts its targets' events, not table swaps).
		ev1=$(event_nr orig) evs=2
		dm_host && evs=1
		expect_eq "$((ev1 - ev0))" "$evs" "$what: an event when the merge ended (event $ev0 -> $ev1)"
		expect_match "$(dm message orig 0 stats)" "merge done merged_chunks [0-9]+ batches [0-9]+ left 0" "$what: stats"
		expect_match "$(klog_since_mark)" "snapshot-merge: COW device [0-9:]+: merge complete" "$what: logged"
	fi
	dm remove orig || fail "remove orig"
	expect_same "$what: the disk under the origin holds the image" "$DEVDIR"/base "$out"/image
	dm remove base || fail "remove base"
	expect_eq "$(dev_count)" 0 "$what: no device left"
}

scenario() {
	one_case 65536 8 11
	one_case $((65536 - 24)) 64 12
}

run_both scenario
exit "$KSFT_PASS"
