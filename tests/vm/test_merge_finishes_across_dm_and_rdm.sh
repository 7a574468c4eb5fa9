#!/usr/bin/env bash
# Cross-host merges: a merge started by the kernel's dm-snapshot and
# stopped midway finishes under rdm, and the other way round, in one
# guest. Both implementations take part in every run, so this test does
# not use run_both.
#
# Each direction: a 64 MiB origin (a linear device "base" over $VDA)
# stamped with random data, a persistent snapshot (8-sector chunks, COW
# $VDB) written all over (48 MiB sequentially, 1,500 scattered writes: long
# runs and single chunks, over many metadata areas), its image read. The
# first implementation starts the merge as LVM2 does; once the status
# shows progress, "base" is suspended (--noflush: the copy in flight
# waits), the merge device is removed in the background (it stops after
# the copy in flight, as dm's stop_merge), "base" is resumed and the
# removal completes. Checked: the COW device's list is shorter than it was
# and not empty (stopped midway); every device is removed and the module
# unloaded. Then the other implementation loads a snapshot-merge table on
# the same disks (its store read from the COW device): the origin reads
# the snapshot's image at once, the merge completes (status
# "16/<COW size> 16"), the list is empty, and the origin and the disk
# under it equal the image. rdm's half runs with merge_kib_per_s=8192, so
# that its batches are small enough to stop it midway.
. "$(dirname "$0")/test_common.sh"
. "$(dirname "$0")/merge_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"

LEN=131072
CS=8
out=/tmp/merge03
rm -rf $out && mkdir -p $out
make_pattern $out/stamp 64
make_pattern $out/new 48

use_dm() {
	export DM_DISABLE_UDEV=1
	DM_TOOL=dmsetup DEVDIR=/dev/mapper IMPL=dm
	modprobe -d "$RDM_MODROOT" dm-snapshot || skip "the kernel's dm-snapshot is not available"
}
drop_dm() {
	dmsetup remove_all >/dev/null 2>&1
	modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod || fail "unload dm-snapshot"
}
use_rdm() {
	DM_TOOL=rdmsetup DEVDIR=/dev/rdm IMPL=rdm
	rdm_load
	echo 8192 >/sys/module/rdm/parameters/merge_kib_per_s || fail "set merge_kib_per_s"
}
drop_rdm() {
	rdmsetup remove_all >/dev/null 2>&1
	rdm_unload
}
cleanup() {
	grep -q '^dm_snapshot ' /proc/modules && drop_dm
	rdm_loaded && drop_rdm
}
defer cleanup

# start_and_stop: sets up the snapshot, starts its merge under the current
# implementation and stops it midway; leaves the disks, nothing else.
start_and_stop() {
	local total left n i
	dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none || fail "zero the COW header"
	dd if=$out/stamp of="$VDA" bs=1M oflag=direct status=none || fail "stamp the origin"
	dm create base --table "0 $LEN linear $VDA 0" || fail "create base"
	dm create orig --table "0 $LEN snapshot-origin $DEVDIR/base" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $DEVDIR/base $VDB P $CS"
	dd if=$out/new of=$DEVDIR/snap bs=1M seek=8 oflag=direct status=none || fail "sequential snapshot writes"
	mergeio scatter $DEVDIR/snap 31 1500 $LEN 1 32 >/dev/null || fail "snapshot writes"
	mergeio scatter $DEVDIR/orig 32 500 $LEN 1 64 >/dev/null || fail "origin writes"
	dread $DEVDIR/snap 0 $LEN >$out/image
	total=$(cow_entries "$VDB" $CS)
	log "$IMPL: the snapshot has $total exceptions"
	left=$(merge_left snap)
	merge_start orig snap "0 $LEN snapshot-merge $DEVDIR/base $VDB P $CS"
	for i in $(seq 1 600); do
		n=$(merge_left orig)
		[ "$n" -lt "$left" ] && break
		sleep 0.05
	done
	[ "$n" -lt "$left" ] || fail "$IMPL: the merge made no progress in 30 s"
	[ "$n" -gt 0 ] || fail "$IMPL: the merge ended before it could be stopped"
	dm suspend --noflush base || fail "suspend base"
	dm remove orig &
	local rm_pid=$!
	sleep 1
	dm resume base || fail "resume base"
	wait $rm_pid || fail "$IMPL: remove the merging origin"
	dm remove base || fail "remove base"
	n=$(cow_entries "$VDB" $CS)
	[ "$n" -gt 0 ] && [ "$n" -lt "$total" ] ||
		fail "$IMPL: stopping left $n of $total exceptions on the COW device, not a merge stopped midway"
	log "ok: $IMPL: merge stopped midway, $n of $total exceptions left on the COW device"
}

# finish: the other implementation finishes the merge from the disks.
finish() {
	local from=$1 cow
	cow=$(blockdev --getsz "$VDB")
	dm create base --table "0 $LEN linear $VDA 0" || fail "create base"
	dm create orig --table "0 $LEN snapshot-merge $DEVDIR/base $VDB P $CS" ||
		fail "$IMPL: load the merge $from started"
	expect_same "$IMPL: the origin reads the snapshot's image (merge started by $from)" $DEVDIR/orig $out/image
	merge_wait orig
	expect_eq "$(merge_status orig)" "$((2 * CS))/$cow $((2 * CS))" "$IMPL: status at the end of the merge $from started"
	expect_eq "$(cow_entries "$VDB" $CS)" 0 "$IMPL: no exception left"
	expect_same "$IMPL: the origin equals the snapshot's image" $DEVDIR/orig $out/image
	dm remove orig || fail "remove orig"
	expect_same "$IMPL: the disk under the origin holds the image" $DEVDIR/base $out/image
	dm remove base || fail "remove base"
}

log "=== started by the kernel's dm-snapshot, finished by rdm"
use_dm
start_and_stop
drop_dm
use_rdm
finish dm
drop_rdm

log "=== started by rdm, finished by the kernel's dm-snapshot"
use_rdm
start_and_stop
drop_rdm
use_dm
finish rdm
drop_dm
exit "$KSFT_PASS"
