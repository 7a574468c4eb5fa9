#!/usr/bin/env bash
# Allocation failures in rdm-dm.ko's constructors, under the kernel's dm.
# For a snapshot-origin, a transient snapshot and a persistent snapshot
# whose COW holds exceptions (loaded from the device), a table load
# (DM_TABLE_LOAD to dm's /dev/mapper/control, sent by rdmsetup, whose
# RDM_FAIL_NTH arms the kernel's fail-nth around that one ioctl) is made to
# fail at its Nth allocation (slab or page; dm's own included), N = 1, 2,
# ... until the load no longer reaches its Nth allocation: each of the
# first 48 points, then every 4th (RDM_FAULT_FULL, RDM_FAULT_STRIDE). Each time the
# load either succeeded (the inactive table is there; cleared again) or
# failed with an errno and left nothing: no inactive table, the same
# device list, rdm_dm's module reference count and the snapshot registry
# as before (a good load of the same snapshot works next, and reads its
# exceptions back). The guest log must stay clean.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
require_fail_nth
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
export DM_DISABLE_UDEV=1
RDM_SNAP_HOST=dm
defer snap_cleanup
snap_load
ctl=(rdmsetup --control /dev/mapper/control)

LEN=8192
# The persistent snapshot's COW, with exceptions: written through a
# snapshot loaded normally, then the snapshot is removed.
dd if=/dev/zero of="$VDB" bs=4k count=1 oflag=direct status=none
dmsetup create o --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dmsetup create s --table "0 $LEN snapshot $VDA $VDB P 8" || fail "create the persistent snapshot"
dd if=/dev/urandom of=$DEVDIR/o bs=4k count=300 oflag=direct status=none || fail "origin writes"
dd if=/dev/urandom of=$DEVDIR/s bs=4k seek=600 count=100 oflag=direct status=none || fail "snapshot writes"
dread $DEVDIR/s 0 $LEN >/tmp/fdm.img
st=$(dmsetup status s)
dmsetup remove s || fail "remove the snapshot"
dmsetup create t || fail "create the device the loads go to"

FULL=${RDM_FAULT_FULL:-48}
STRIDE=${RDM_FAULT_STRIDE:-4}
# state: the inactive table of t and rdm_dm's references (a load makes
# no device; one process per look: each costs about 0.1 s under TCG).
state() {
	dmsetup table --inactive t 2>&1
	module_refs rdm_dm
}

total=0
# sweep NAME TABLE: the load of TABLE into t with fail-nth N = 1, 2, ...
sweep() {
	local name=$1 table=$2 n=1 out rc before fails=0 tried=0 t0=$SECONDS
	while :; do
		before=$(state)
		out=$(RDM_FAIL_NTH=$n "${ctl[@]}" load t --table "$table" 2>&1)
		rc=$?
		case $out in
		*"not reached"*)
			[ $rc = 0 ] || fail "$name: load failed with no fault injected: $out"
			dmsetup clear t || fail "$name: clear"
			break
			;;
		*"fault injected"*) ;;
		*) fail "$name: N=$n: no fail-nth outcome: $out" ;;
		esac
		tried=$((tried + 1))
		if [ $rc = 0 ]; then
			expect_match "$(dmsetup table --inactive t)" "^0 $LEN " "$name: N=$n: loaded despite the fault" >/dev/null
			dmsetup clear t || fail "$name: N=$n: clear"
		else
			fails=$((fails + 1))
			[ "$(state)" = "$before" ] || fail "$name: N=$n: a failed load changed the state: '$before' -> '$(state)'"
		fi
		if [ $n -lt "$FULL" ]; then n=$((n + 1)); else n=$((n + STRIDE)); fi
	done
	total=$((total + tried))
	log "ok: $name: about $((n - 1)) allocation points, $tried tried, $fails loads failed cleanly ($((SECONDS - t0)) s)"
}
sweep "snapshot-origin" "0 $LEN snapshot-origin $VDA"
sweep "transient snapshot" "0 $LEN snapshot $VDA $VDC N 8"
sweep "persistent snapshot, 400 exceptions read" "0 $LEN snapshot $VDA $VDB P 8"
dmsetup remove t || fail "remove t"
dmsetup create s --table "0 $LEN snapshot $VDA $VDB P 8" || fail "the persistent snapshot loads after the sweep"
expect_eq "$(dmsetup status s)" "$st" "its status is as before the sweep"
expect_same "it reads as before the sweep" $DEVDIR/s /tmp/fdm.img
log "ok: $total loads with a failed allocation, one at a time"
