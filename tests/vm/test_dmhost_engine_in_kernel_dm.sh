#!/usr/bin/env bash
# rdm-dm.ko: rdm's snapshot engine as target types of the kernel's dm,
# driven by Debian's dmsetup.
# - Its types are listed under their own names (rdm-snap-origin,
#   rdm-snapshot, rdm-snap-merge), beside dm-snapshot's: the same tables
#   under both give the same table, status and deps lines, and the same
#   data; the dm device's queue limits cover a COW device with 4 KiB logical
#   blocks.
# - A persistent COW written by rdm's engine in dm loads under dm-snapshot
#   with the same data.
# - A reload (lvextend's) keeps the snapshot and its events: an overflow
#   after it wakes `dmsetup wait` on the new table.
# - Suspend waits for an origin write held for its copy.
# - Bad input: origin == COW, a bad chunk size, a message the target does
#   not take: EINVAL and a log line; rmmod with live tables is refused.
# - With dm_names=1 (dm-snapshot's names): refused while dm-snapshot is
#   loaded (EBUSY, a log line naming the clash, nothing left registered),
#   and dm-snapshot refused while rdm-dm holds the names; rdm.ko (without
#   dm_compat) runs beside it.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC" "$VDD"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
[ -f "$RDM_DM_KO" ] || fail "$RDM_DM_KO was not built"
export DM_DISABLE_UDEV=1
M=/dev/mapper DM_TOOL=dmsetup

unload_all() {
	dmsetup remove_all >/dev/null 2>&1
	rdmsetup remove_all >/dev/null 2>&1
	for m in rdm_dm rdm dm_snapshot dm_zero dm_bufio dm_mod; do
		grep -q "^$m " /proc/modules || continue
		case $m in rdm*) rmmod "$m" ;; *) modprobe -r -d "$RDM_MODROOT" "$m" ;; esac
	done
}
defer unload_all
modprobe -d "$RDM_MODROOT" dm-snapshot || skip "the kernel's dm-snapshot is not available"
klog_mark
insmod "$RDM_DM_KO" || fail "insmod $RDM_DM_KO beside dm-snapshot"
expect_match "$(klog_since_mark)" "rdm_dm: loaded: rdm's snapshot engine serves device-mapper targets rdm-snap-origin, rdm-snapshot and rdm-snap-merge" \
	"the log says which targets rdm serves"
targets=$(dmsetup targets)
for t in "rdm-snap-origin  v1.9.0" "rdm-snapshot     v1.16.0" "rdm-snap-merge   v1.5.0" "snapshot         v1.16.0"; do
	expect_match "$targets" "^$t\$" "dmsetup targets lists $t"
done

# The same two stacks, dm-snapshot's on vda/vdb and rdm's on vdc/vdd: an
# origin of 8 MiB, a persistent snapshot of chunk 16, writes through both.
LEN=16384
pat=/tmp/dmhost.pat new=/tmp/dmhost.new
make_pattern $pat 8
make_pattern $new 1
for d in "$VDA" "$VDC"; do dd if=$pat of="$d" bs=1M oflag=direct status=none; done
for d in "$VDB" "$VDD"; do dd if=/dev/zero of="$d" bs=1M count=1 oflag=direct status=none; done
stack() { # stack PREFIX ORIGIN-TYPE SNAPSHOT-TYPE ORIGIN COW
	dmsetup create "$1-o" --table "0 $LEN $2 $4" || fail "$1: create the origin"
	dmsetup create "$1-s" --table "0 $LEN $3 $4 $5 P 16" || fail "$1: create the snapshot"
	dd if=$new of=$M/"$1-o" bs=4k seek=100 oflag=direct status=none || fail "$1: origin write"
	dd if=$new of=$M/"$1-s" bs=4k seek=700 count=16 oflag=direct status=none || fail "$1: snapshot write"
}
stack ref snapshot-origin snapshot "$VDA" "$VDB"
stack rdm rdm-snap-origin rdm-snapshot "$VDC" "$VDD"
va=$(devno "$VDA") vb=$(devno "$VDB") vc=$(devno "$VDC") vd=$(devno "$VDD")
same() { # same WHAT REF-OUT RDM-OUT: equal once types and devices are renamed
	local r=$2
	r=${r//snapshot-origin/rdm-snap-origin}
	r=${r//" snapshot "/" rdm-snapshot "}
	r=${r//$va/$vc}
	r=${r//$vb/$vd}
	expect_eq "$3" "$r" "$1: rdm's engine in dm answers as dm-snapshot"
}
same "table of the origin" "$(dmsetup table ref-o)" "$(dmsetup table rdm-o)"
same "table of the snapshot" "$(dmsetup table ref-s)" "$(dmsetup table rdm-s)"
same "status of the snapshot" "$(dmsetup status ref-s)" "$(dmsetup status rdm-s)"
deps_of() { # deps_of DEV: its dependencies as sorted major:minor
	dmsetup deps "$1" | sed 's/.*://' | grep -o '([0-9]*, [0-9]*)' | tr -d '() ' | tr , : | sort | tr '\n' ' '
}
expect_eq "$(deps_of rdm-s)" "$(printf '%s\n' "$vc" "$vd" | sort | tr '\n' ' ')" \
	"deps of the snapshot: its origin and its COW"
expect_eq "$(deps_of ref-s)" "$(printf '%s\n' "$va" "$vb" | sort | tr '\n' ' ')" \
	"deps of dm-snapshot's snapshot: its origin and its COW (the check of the check)"
cmp <(dread $M/ref-s 0 $LEN) <(dread $M/rdm-s 0 $LEN) || fail "the snapshots' data differ"
cmp <(dread $M/ref-o 0 $LEN) <(dread $M/rdm-o 0 $LEN) || fail "the origins' data differ"
log "ok: the same data through both engines"
expect_same "rdm's snapshot kept the old data of the origin's write" $M/rdm-s $pat 8 800 800

# A reload of the snapshot (what lvextend does) keeps its exceptions, and
# its events reach the new table.
dmsetup table rdm-s >/tmp/dmhost.table
dmsetup reload rdm-s /tmp/dmhost.table && dmsetup resume rdm-s || fail "reload the snapshot"
same "status after a reload" "$(dmsetup status ref-s)" "$(dmsetup status rdm-s)"

# Bad input: refused with EINVAL and rdm's log line; nothing is left.
expect_fail "origin and COW the same device" "rdm_dm: [0-9]+:[0-9]+: target at sector 0 \(snapshot\): origin and COW are the same device" \
	dmsetup create bad --table "0 $LEN rdm-snapshot $VDC $VDC P 16"
expect_fail "a chunk size that is not a power of two" "rdm_dm: [0-9]+:[0-9]+: target at sector 0 \(snapshot\): .*chunk" \
	dmsetup create bad --table "0 $LEN rdm-snapshot $VDC $VDB P 24"
dmsetup remove bad >/dev/null 2>&1
expect_fail "a message the snapshot does not take" "rdm_dm: target does not accept message \"bogus\"" \
	dmsetup message rdm-s 0 bogus
expect_match "$(dmsetup message rdm-s 0 stats)" "^exceptions 136 runs [0-9]+ table_bytes [0-9]+$" \
	"rdm's stats message, through dm: 128 chunks of the origin's write and 8 of the snapshot's"
out=$(rmmod rdm_dm 2>&1) && fail "rmmod rdm_dm succeeded with live tables"
log "ok: rmmod refused with live tables ($out)"

# Suspend waits for an origin write that waits for its copy.
echo 1500 >/sys/module/rdm_dm/parameters/copy_delay_ms
t0=$(now_ms)
dd if=$new of=$M/rdm-o bs=4k seek=1200 count=1 oflag=direct status=none &
wpid=$!
# Held once dm counts it in flight on the origin (dm's I/O statistics).
odisk=$(dmsetup info -c -o blkdevname --noheadings rdm-o)
for _ in $(seq 100); do
	read -r _ w </sys/block/"$odisk"/inflight
	[ "$w" = 1 ] && break
	sleep 0.05
done
[ "$w" = 1 ] || fail "the origin write was never in flight"
dmsetup suspend rdm-o || fail "suspend the origin"
t1=$(now_ms)
kill -0 $wpid 2>/dev/null && fail "suspend returned while the origin write was still held"
wait $wpid || fail "the held origin write failed"
[ $((t1 - t0)) -ge 1400 ] || fail "suspend returned after $((t1 - t0)) ms, before the copy delay"
dmsetup resume rdm-o || fail "resume the origin"
echo 0 >/sys/module/rdm_dm/parameters/copy_delay_ms
log "ok: suspend returned after the held write ended ($((t1 - t0)) ms)"

# Overflow after the reload: the event wakes a waiter on the new table.
dmsetup create cow-small --table "0 64 linear $VDB 4096" || fail "create a small COW"
dmsetup create small --table "0 $LEN rdm-snapshot $VDC $M/cow-small N 8" || fail "create a small snapshot"
dmsetup reload small --table "0 $LEN rdm-snapshot $VDC $M/cow-small N 8" && dmsetup resume small ||
	fail "reload the small snapshot"
ev=$(event_nr small)
timeout 60 dmsetup wait small "$ev" >/dev/null &
wait_pid=$!
dd if=$new of=$M/rdm-o bs=4k count=256 oflag=direct status=none || fail "origin writes that overflow the small snapshot"
expect_eq "$(dmsetup status small)" "0 $LEN rdm-snapshot Invalid" "the small snapshot is Invalid"
wait $wait_pid || fail "dmsetup wait did not return on the overflow event"
log "ok: the overflow event reached the reloaded table ($ev -> $(event_nr small))"
dmsetup remove small cow-small || fail "remove the invalid snapshot"

# A COW written by rdm's engine in dm loads under dm-snapshot.
dread $M/rdm-s 0 $LEN >/tmp/dmhost.img
dmsetup remove rdm-s rdm-o || fail "remove rdm's stack"
dmsetup create x-s --table "0 $LEN snapshot $VDC $VDD P 16" || fail "dm-snapshot loads rdm-dm's COW"
expect_same "dm-snapshot reads rdm-dm's snapshot as it was" $M/x-s /tmp/dmhost.img
dmsetup remove x-s ref-s ref-o || fail "remove"
rmmod rdm_dm || fail "rmmod rdm_dm with no table left"

# dm_names=1: dm-snapshot's names, which only one module may hold.
klog_mark
insmod "$RDM_DM_KO" dm_names=1 2>/dev/null && fail "rdm-dm with dm_names=1 loaded while dm-snapshot holds the names"
expect_match "$(klog_since_mark)" "rdm_dm: cannot register target type snapshot-origin: device-mapper has one of that name \(is dm-snapshot loaded\?\)" \
	"the clash is logged"
expect_eq "$(dmsetup targets | grep -c rdm-)" 0 "nothing of rdm-dm is left registered"
dmsetup create ref-o --table "0 $LEN snapshot-origin $VDA" && dmsetup remove ref-o || fail "dm-snapshot still works"
modprobe -r -d "$RDM_MODROOT" dm-snapshot || fail "unload dm-snapshot"
insmod "$RDM_DM_KO" dm_names=1 || fail "insmod $RDM_DM_KO dm_names=1"
expect_match "$(dmsetup targets)" "^snapshot-merge   v1.5.0$" "dm-snapshot's names, served by rdm"
modprobe -d "$RDM_MODROOT" dm-snapshot 2>/dev/null && fail "dm-snapshot loaded while rdm-dm holds its names"
log "ok: dm-snapshot refused while rdm-dm holds its names"
insmod "$RDM_KO" || fail "insmod rdm.ko beside rdm-dm"
rdmsetup create r --table "0 $LEN snapshot-origin $VDC" || fail "rdm.ko's own origin beside rdm-dm"
dmsetup create d --table "0 $LEN snapshot-origin $VDA" || fail "rdm-dm's origin beside rdm.ko"
expect_fail "one disk in both modules" "" dmsetup create d2 --table "0 $LEN snapshot-origin $VDC"
rdmsetup remove r && dmsetup remove d || fail "remove"
log "ok: rdm.ko and rdm-dm.ko run side by side"
