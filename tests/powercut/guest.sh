#!/usr/bin/env bash
# Guest side of scripts/powercut: one boot of a power-cut run. The disks
# survive across boots (vm-run --keep-disks): vda the origin, vdb the
# persistent snapshot's COW device, vdc the journal (tests/powercut/pc.py
# says what is on it). Every boot loads the module and creates the devices
# with the same tables (the persistent store reloads from the COW device).
#
#   guest.sh first BOOT         stamp the pre-snapshot image, take the
#                               persistent snapshot, check it, write until
#                               the host kills the guest
#   guest.sh verify-load BOOT   verify what the cut left, write until killed
#                               (first a new snapshot over a new image when
#                               most chunks have exceptions)
#   guest.sh final BOOT         verify; then a bounded load and checks that
#                               removing and re-creating the devices and
#                               reloading the snapshot's table keep the
#                               status line, the data and the exceptions;
#                               record status and checksums; shut down
#   guest.sh clean-verify BOOT  after a clean reboot: the same status line
#                               and checksums, verify, exceptions known
#
# The merge scenario (scripts/powercut --merge): pc-origin is the
# snapshot-merge device while a merge runs.
#   guest.sh merge-first BOOT   stamp, take the snapshot, a bounded load on
#                               both, start the merge (LVM2's way), write the
#                               merging origin until the host kills the guest
#   guest.sh merge-verify-load BOOT  the merge device made again (the merge
#                               resumes from the COW device): verify; if the
#                               merge is complete, check the disk holds what
#                               the device shows and start a new generation;
#                               write until killed
#   guest.sh merge-final BOOT   verify, let the merge complete, verify again,
#                               the disk under the origin and the empty list;
#                               record status and checksums; shut down
#   guest.sh merge-clean-verify BOOT  after a clean reboot: the same status
#                               line and checksums, verify
#
# Results go to the journal disk (the host reads them there, also from
# boots it killed). RDM_SNAP_REF=1 runs it all on the kernel's dm-snapshot.
. "$(dirname "$0")/../vm/test_common.sh"
here=$(cd "$(dirname "$0")" && pwd)
mode=$1 boot=$2
require_vm
require_disks "$VDA" "$VDB" "$VDC"
LEN=32768

pc() { python3 "$here/pc.py" "$@"; }
check() { # check NAME ok|fail TEXT
	pc check "$boot" "$@"
	if [ "$2" = ok ]; then log "ok: $1: $3"; else log "FAIL: $1: $3"; fi
}
die() {
	log "FAIL: $*"
	pc note "$boot" error "$*" 2>/dev/null
	exit 1
}
trap snap_cleanup EXIT
snap_load
# Every other cut load (from the seed) runs with rdm's copy_delay_ms test
# knob at 50: each copy, and the end of each whole-chunk snapshot write's
# job, waits that long in the copier's queue, as behind a slow disk, so
# that writes whose exceptions are not committed yet stay in flight longer
# (the other loads run at the default, 0).
copy_delay() {
	snap_ref && return
	local ms=0
	[ $(((RDM_PC_SEED / 7 + boot) % 2)) -eq 1 ] && ms=50
	echo $ms >/sys/module/rdm/parameters/copy_delay_ms || die "set copy_delay_ms"
	log "copy_delay_ms=$ms for this load"
}
export PC_ORIGIN=$DEVDIR/pc-origin PC_SNAP=$DEVDIR/pc-snap

create_origin() { dm create pc-origin --table "0 $LEN snapshot-origin $VDA" || die "create the origin"; }
# table_args TABLE-BOOT: the store type and chunk argument. Boot 1 makes
# the store with the run's chunk size; later boots vary P/PO and give the
# chunk size or 0 ("the one on the COW device").
table_args() {
	local b=$1 store=P chunk=$RDM_PC_CHUNK
	if [ "$b" -gt 1 ]; then
		[ $(((RDM_PC_SEED / 3 + b) % 2)) -eq 1 ] && store=PO
		[ $(((RDM_PC_SEED / 5 + b) % 3)) -eq 0 ] && chunk=0
	fi
	echo "$store $chunk"
}
# create_snapshot TABLE-BOOT: the snapshot, taken as LVM does (origin suspended).
create_snapshot() {
	local t out
	t="0 $LEN snapshot $VDA $VDB $(table_args "$1")"
	klog_mark
	dm suspend pc-origin || die "suspend the origin"
	if ! out=$(dm create pc-snap --table "$t" 2>&1); then
		dm resume pc-origin
		if klog_since_mark | grep -q "persistent exception store is not supported yet"; then
			pc note "$boot" skip "rdm: the persistent exception store is not supported yet"
			log "SKIP: rdm does not support the persistent store yet"
			exit "$KSFT_SKIP"
		fi
		die "create the snapshot '$t': $out $(klog_since_mark | tail -n 3 | tr '\n' ' ')"
	fi
	dm resume pc-origin || die "resume the origin"
	log "snapshot: $t"
}
create_all() {
	create_origin
	create_snapshot "$1"
}
remove_all() {
	dm remove pc-snap || die "remove the snapshot"
	dm remove pc-origin || die "remove the origin"
}
status() { dm status pc-snap; }
verify() { pc verify "$boot" "$(status)" "$@" || exit 1; }

# same WHAT STATUS SUMS: the snapshot's status line and both checksums are
# what they were.
same() {
	local st sums
	st=$(status) sums=$(pc sums)
	if [ "$st" = "$2" ] && [ "$sums" = "$3" ]; then
		check "$1" ok "status '$st', $sums"
	else
		check "$1" fail "status '$st' (was '$2'), $sums (was $3)"
		exit 1
	fi
}
# probe: origin writes into chunks that have exceptions allocate nothing
# (the reloaded snapshot knows those exceptions), and the snapshot keeps
# its data.
probe() {
	local st snap
	st=$(status)
	snap=$(pc sums) snap=${snap#* snapshot }
	pc load "$boot" probe 32 >/dev/null || die "probe writes"
	local st2 snap2
	st2=$(status)
	snap2=$(pc sums) snap2=${snap2#* snapshot }
	if [ "$st2" = "$st" ] && [ "$snap2" = "$snap" ]; then
		check probe ok "32 origin writes into chunks with exceptions: status stays '$st', snapshot unchanged"
	else
		check probe fail "after 32 origin writes into chunks with exceptions: status '$st2' (was '$st'), snapshot $snap2 (was $snap)"
		exit 1
	fi
}

# The merge scenario.
create_merge() {
	dm create pc-origin --table "0 $LEN snapshot-merge $VDA $VDB P $RDM_PC_CHUNK" ||
		die "create the merging origin"
}
# merge_rate: two boots in three (from the seed) rdm merges at 1 MiB/s,
# so that cuts fall in the middle of a merge and a boot after such a cut
# may verify a merge still running; the others at full speed.
merge_rate() {
	snap_ref && return
	local kib=1024
	[ $(((RDM_PC_SEED / 11 + boot) % 3)) -eq 0 ] && kib=0
	echo $kib >/sys/module/rdm/parameters/merge_kib_per_s || die "set merge_kib_per_s"
	log "merge_kib_per_s=$kib for this boot"
}
# start_merge: the origin's table replaced by snapshot-merge, the snapshot
# handed over and removed (as LVM2's lvconvert --merge).
start_merge() {
	dm suspend pc-origin && dm suspend pc-snap || die "suspend for the merge"
	dm load pc-origin --table "0 $LEN snapshot-merge $VDA $VDB P $RDM_PC_CHUNK" || die "load the merge"
	dm resume pc-origin || die "resume the merging origin"
	dm remove pc-snap || die "remove the merged snapshot"
	log "merge started: $(status_of pc-origin)"
}
status_of() { dm status "$1"; }
# merge_left_sectors: data sectors the status says are left to merge.
merge_left_sectors() {
	local st a m
	read -r _ _ _ st m <<<"$(status_of pc-origin)"
	case $st in */*) a=${st%%/*}; echo $((a - m)) ;; *) echo "$st $m" ;; esac
}
# new_generation BOOT: (origin plain) a new pre-snapshot image, a new
# snapshot, a bounded load on both, and its merge started.
new_generation() {
	pc merge-setup "$1" || die "merge setup"
	start_merge
}
merge_verify() { pc merge-verify "$boot" "$(status_of pc-origin)" "$@" || exit 1; }
# merge_complete: waits (up to 10 min) for the merge to end.
merge_complete() {
	local left
	for _ in $(seq 1 3000); do
		left=$(merge_left_sectors)
		[ "$left" = 0 ] && return 0
		case $left in *[!0-9]*) die "merge status: $(status_of pc-origin)" ;; esac
		sleep 0.2
	done
	die "the merge did not complete in 10 minutes ($(status_of pc-origin))"
}
# disk_holds_device WHAT: with the merge complete, the disk under the
# origin holds what the merging device shows.
disk_holds_device() {
	local dev_sum disk_sum
	dev_sum=$(pc origin-sum)
	dm remove pc-origin || die "remove the merging origin"
	disk_sum=$(pc disk-sum)
	if [ "$dev_sum" = "$disk_sum" ]; then
		check "$1" ok "merge complete: the disk under the origin holds what the device showed ($dev_sum), $(pc merge-left) exceptions left"
	else
		check "$1" fail "merge complete, but the disk under the origin ($disk_sum) differs from the device ($dev_sum)"
		exit 1
	fi
}

case $mode in
merge-first)
	create_origin
	pc stamp || die "stamp the pre-snapshot image"
	create_snapshot 1
	merge_rate
	new_generation "$boot"
	log "guest ready after ${SECONDS}s"
	pc merge-load "$boot" || exit 1
	die "the load ended before the host cut the power"
	;;
merge-verify-load)
	# The rate first: a slow boot verifies a merge still running.
	merge_rate
	create_merge
	merge_verify
	log "guest ready after ${SECONDS}s: $(merge_left_sectors) sectors left to merge"
	if [ "$(merge_left_sectors)" = 0 ]; then
		disk_holds_device complete
		create_origin
		pc retake "$boot" || die "re-stamp the origin"
		create_snapshot 1
		new_generation "$boot"
	fi
	pc merge-load "$boot" || exit 1
	die "the load ended before the host cut the power"
	;;
merge-final)
	create_merge
	merge_verify
	merge_complete
	merge_verify verify-complete
	st=$(status_of pc-origin) sums=$(pc origin-sum)
	[ "$(pc merge-left)" = 0 ] || { check complete fail "the merge is complete but the COW device lists exceptions"; exit 1; }
	disk_holds_device complete
	pc clean-record "$boot" "$st" "$sums" || die "record the status"
	;;
merge-clean-verify)
	create_merge
	{ read -r st && read -r sums; } < <(pc clean-get) || die "no clean-shutdown record"
	st2=$(status_of pc-origin) sums2=$(pc origin-sum)
	if [ "$st2" = "$st" ] && [ "$sums2" = "$sums" ]; then
		check reboot ok "status '$st2', origin $sums2"
	else
		check reboot fail "status '$st2' (was '$st'), origin $sums2 (was $sums)"
		exit 1
	fi
	merge_verify
	dm remove pc-origin || die "remove the origin"
	;;
first)
	create_origin
	pc stamp || die "stamp the pre-snapshot image"
	create_snapshot 1
	log "guest ready after ${SECONDS}s"
	copy_delay
	pc verify-load "$boot" "$(status)" || exit 1
	die "the load ended before the host cut the power"
	;;
verify-load)
	create_all "$boot"
	log "guest ready after ${SECONDS}s"
	copy_delay
	pc verify-load "$boot" "$(status)"
	rc=$?
	if [ $rc -eq 3 ]; then
		# Most chunks have exceptions: a new snapshot, so that the next
		# loads make copies again (and a new store over stale metadata).
		dm suspend pc-origin && dm remove pc-snap && dm resume pc-origin ||
			die "remove the snapshot"
		pc retake "$boot" || die "re-stamp the origin"
		create_snapshot 1
		pc verify-load "$boot" "$(status)" verify-retake
		rc=$?
	fi
	[ $rc -eq 0 ] || exit 1
	die "the load ended before the host cut the power"
	;;
final)
	create_all "$boot"
	verify
	pc load "$boot" clean 300 || die "clean load"
	st=$(status) sums=$(pc sums)
	remove_all
	create_all $((boot + 1000))
	same recreate "$st" "$sums"
	t=$(dm table pc-snap)
	dm load pc-snap --table "$t" || die "load a new table for the snapshot"
	dm suspend pc-snap && dm resume pc-snap || die "suspend and resume the snapshot"
	same reload "$st" "$sums"
	probe
	verify verify-clean
	pc clean-record "$boot" "$(status)" "$(pc sums)" || die "record the status"
	remove_all
	;;
clean-verify)
	create_all "$boot"
	{ read -r st && read -r sums; } < <(pc clean-get) || die "no clean-shutdown record"
	same reboot "$st" "$sums"
	verify
	probe
	remove_all
	;;
*) die "unknown mode $mode" ;;
esac
exit "$KSFT_PASS"
