#!/usr/bin/env bash
# What snapshot-merge refuses, and a COW device failing during a merge
# (the kernel's dm-snapshot first, then rdm: run_both).
#
# Refusals (EINVAL and a log line):
# - a merge table with store type N, and a P merge table over a live
#   transient (N) snapshot (both refused by dm too);
# - an invalid snapshot (its small COW device filled by origin writes),
#   live and, once removed, marked invalid on disk; an overflowed PO
#   snapshot (its COW device filled by its own writes). dm loads these
#   (and then logs "can't merge" at resume, or merges the overflowed one):
#   on dm the test checks that behaviour instead;
# - a second merge on an origin whose first snapshot is merging (dm:
#   "A snapshot is already merging."); on rdm also a `snapshot` table on
#   the COW device being merged.
#
# A COW error: a 32 MiB origin, a snapshot with about 6,400 exceptions
# (24 MiB written in order, 300 scattered writes) on a linear device over
# $VDB; before the merge starts, the data chunks of the first metadata
# area (the oldest 256 exceptions, merged last) are replaced by an error
# target. The merge stops with status "Merge failed" and a log line; the
# COW device still lists some exceptions, fewer than before. With the COW
# device repaired and the merge device made again, the merge completes and
# the origin equals the snapshot's image: nothing merged before the error
# was lost.
. "$(dirname "$0")/test_common.sh"
. "$(dirname "$0")/merge_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"

LEN=65536
CS=8
out=/tmp/merge04
rm -rf $out && mkdir -p $out
make_pattern $out/stamp 32

zero_cows() {
	local d
	for d in $VDB $VDC; do
		dd if=/dev/zero of="$d" bs=64k count=1 oflag=direct status=none || fail "zero $d"
	done
}
setup_origin() {
	dd if="$out"/stamp of="$VDA" bs=1M oflag=direct status=none || fail "stamp the origin"
	dm create base --table "0 $LEN linear $VDA 0" || fail "create base"
	dm create orig --table "0 $LEN snapshot-origin $DEVDIR/base" || fail "create orig"
}
teardown() {
	dm remove_all >/dev/null 2>&1
	[ "$(dev_count)" = 0 ] || log "left: $(dm info -c 2>&1 | tr '\n' ';')"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}
merge_table() { echo "0 $LEN snapshot-merge $DEVDIR/base $1 P $CS"; }

refuse_transient() {
	zero_cows
	setup_origin
	snap_take orig snap "0 $LEN snapshot $DEVDIR/base $VDB N $CS"
	local re="only persistent snapshots"
	[ "$IMPL" = dm ] && re="does not support snapshot-merge"
	expect_refused "$IMPL: a merge table with store type N" "[Ii]nvalid argument" "$re" \
		dm create m2 --table "0 $LEN snapshot-merge $DEVDIR/base $VDB N $CS"
	expect_refused "$IMPL: a P merge table over a live N snapshot" "[Ii]nvalid argument" "$re" \
		dm load orig --table "$(merge_table "$VDB")"
	teardown
}

refuse_invalid() {
	zero_cows
	setup_origin
	dm create cow --table "0 4096 linear $VDB 0" || fail "create the small COW device"
	snap_take orig snap "0 $LEN snapshot $DEVDIR/base $DEVDIR/cow P $CS"
	dd if="$out"/stamp of="$DEVDIR"/orig bs=1M count=4 oflag=direct status=none || fail "origin writes"
	expect_eq "$(merge_status snap)" Invalid "$IMPL: the snapshot is invalid (its COW device is full)"
	if [ "$IMPL" = rdm ]; then
		expect_refused "$IMPL: merging an invalid snapshot" "[Ii]nvalid argument" \
			"the snapshot is invalid: it cannot be merged" \
			dm load orig --table "$(merge_table "$DEVDIR"/cow)"
	else
		# dm takes the table, and will not merge.
		klog_mark
		dm load orig --table "$(merge_table "$DEVDIR"/cow)" || fail "dm: load the merge"
		dm suspend snap && dm resume orig || fail "dm: resume the merge"
		sleep 1
		expect_match "$(klog_since_mark)" "Snapshot is invalid: can't merge" "dm: an invalid snapshot is not merged"
		expect_eq "$(merge_status orig)" Invalid "dm: status of the merge of an invalid snapshot"
	fi
	teardown
	# Marked invalid on disk.
	expect_eq "$(cow_header "$VDB")" "$COW_MAGIC 0 1 $CS" "$IMPL: the COW header says invalid"
	setup_origin
	dm create cow --table "0 4096 linear $VDB 0" || fail "create the small COW device"
	if [ "$IMPL" = rdm ]; then
		expect_refused "$IMPL: merging a snapshot marked invalid on disk" "[Ii]nvalid argument" \
			"the snapshot is invalid: it cannot be merged" \
			dm create m2 --table "$(merge_table "$DEVDIR"/cow)"
	else
		klog_mark
		dm create m2 --table "$(merge_table "$DEVDIR"/cow)" || fail "dm: create the merge"
		sleep 1
		expect_match "$(klog_since_mark)" "Snapshot is marked invalid" "dm: loads it as invalid"
		expect_eq "$(merge_status m2)" Invalid "dm: status"
	fi
	teardown
}

refuse_overflowed() {
	zero_cows
	setup_origin
	dm create cow --table "0 4096 linear $VDB 0" || fail "create the small COW device"
	snap_take orig snap "0 $LEN snapshot $DEVDIR/base $DEVDIR/cow PO $CS"
	dd if="$out"/stamp of="$DEVDIR"/snap bs=1M count=4 oflag=direct status=none 2>/dev/null &&
		fail "$IMPL: 4 MiB of writes to a snapshot with a 2 MiB COW device succeeded"
	expect_eq "$(merge_status snap)" Overflow "$IMPL: the snapshot overflowed"
	if [ "$IMPL" = rdm ]; then
		expect_refused "$IMPL: merging an overflowed snapshot" "[Ii]nvalid argument" \
			"the snapshot overflowed: it cannot be merged" \
			dm load orig --table "$(merge_table "$DEVDIR"/cow)"
	else
		dm load orig --table "$(merge_table "$DEVDIR"/cow)" || fail "dm: load the merge of an overflowed snapshot"
		log "ok: dm: takes the merge of an overflowed snapshot"
		dm clear orig || fail "dm: clear the inactive table"
	fi
	teardown
}

refuse_second_merge() {
	zero_cows
	setup_origin
	snap_take orig s1 "0 $LEN snapshot $DEVDIR/base $VDB P $CS"
	snap_take orig s2 "0 $LEN snapshot $DEVDIR/base $VDC P $CS"
	mergeio scatter "$DEVDIR"/s1 41 200 "$LEN" 1 64 >/dev/null || fail "S1 writes"
	merge_start orig s1 "$(merge_table "$VDB")"
	local re="already merging"
	[ "$IMPL" = dm ] && re="A snapshot is already merging"
	expect_refused "$IMPL: a second merge on the origin" "[Ii]nvalid argument" "$re" \
		dm create m2 --table "$(merge_table "$VDC")"
	if [ "$IMPL" = rdm ]; then
		expect_refused "$IMPL: a snapshot table on the COW device being merged" "[Ii]nvalid argument" \
			"handed over to a merge" \
			dm create s1b --table "0 $LEN snapshot $DEVDIR/base $VDB P $CS"
	fi
	merge_wait orig
	teardown
}

cow_error() {
	local total n st cow_sz
	zero_cows
	setup_origin
	cow_sz=$(blockdev --getsz "$VDB")
	dm create cow --table "0 $cow_sz linear $VDB 0" || fail "create cow"
	snap_take orig snap "0 $LEN snapshot $DEVDIR/base $DEVDIR/cow P $CS"
	dd if="$out"/stamp of="$DEVDIR"/snap bs=1M count=24 seek=4 skip=4 oflag=direct status=none 2>/dev/null
	mergeio scatter "$DEVDIR"/snap 42 300 "$LEN" 1 64 >/dev/null || fail "snapshot writes"
	mergeio scatter "$DEVDIR"/orig 43 300 "$LEN" 1 64 >/dev/null || fail "origin writes"
	dread "$DEVDIR"/snap 0 "$LEN" >"$out"/image
	total=$(cow_entries "$VDB" "$CS")
	# Area 0 is chunk 1; its 256 data chunks are 2..257 (sectors 16..2063).
	dm suspend cow || fail "suspend cow"
	printf '0 16 linear %s 0\n16 2048 error\n2064 %d linear %s 2064\n' "$VDB" $((cow_sz - 2064)) "$VDB" >"$out"/broken
	dm load cow "$out"/broken || fail "load the broken COW table"
	dm resume cow || fail "resume cow"
	klog_mark
	merge_start orig snap "$(merge_table "$DEVDIR"/cow)"
	local i
	for i in $(seq 1 1200); do
		st=$(merge_status orig)
		[ "$st" = "Merge failed" ] && break
		sleep 0.1
	done
	expect_eq "$st" "Merge failed" "$IMPL: status after a COW read error"
	local re="merge stopped: I/O error reading the COW device"
	[ "$IMPL" = dm ] && re="Read error: shutting down merge"
	expect_match "$(klog_since_mark)" "$re" "$IMPL: the merge says why it stopped"
	n=$(cow_entries "$VDB" "$CS")
	[ "$n" -gt 0 ] && [ "$n" -lt "$total" ] || fail "$IMPL: $n of $total exceptions left: expected a merge stopped midway"
	log "ok: $IMPL: stopped with $n of $total exceptions left"
	# Repaired, and the merge device made again: the merge goes on.
	dm suspend cow || fail "suspend cow"
	dm load cow --table "0 $cow_sz linear $VDB 0" || fail "repair cow"
	dm resume cow || fail "resume cow"
	dm remove orig || fail "remove the failed merge"
	dm create orig --table "$(merge_table "$DEVDIR"/cow)" || fail "create the merge again"
	merge_wait orig
	expect_eq "$(cow_entries "$VDB" "$CS")" 0 "$IMPL: no exception left"
	expect_same "$IMPL: the origin equals the snapshot's image, nothing lost" "$DEVDIR"/orig "$out"/image
	teardown
}

scenario() {
	refuse_transient
	refuse_invalid
	refuse_overflowed
	refuse_second_merge
	cow_error
}

run_both scenario
exit "$KSFT_PASS"
