#!/usr/bin/env bash
# A table that maps its own device, directly or through other rdm devices,
# is refused at load with EINVAL and a log line; nothing is left open, and
# remove_all leaves no device behind.
# 1. Self-map (against the kernel's dm first: dm_get_device refuses it).
# 2. A 2-cycle: a maps vda, b maps a; loading "a maps b" is refused.
# 3. A 3-cycle through inactive tables: c1, c2, c3 map vda (live);
#    c1 -> c2 and c2 -> c3 are loaded (inactive), c3 -> c1 is refused, also
#    once c1's table is live; once c2's inactive table is cleared, it loads.
# 4. Two loads at once, x -> y and y -> x, in a loop: exactly one of each
#    pair is accepted (the check and the install are one step).
# (dm checks only the self-map: 2 to 4 run on rdm alone.)
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"

# refused WHAT LOG-REGEX NAME TABLE: loading TABLE into NAME fails with
# EINVAL (and, on rdm, logs LOG-REGEX); NAME keeps no inactive table.
refused() {
	local what=$1 logre=$2 name=$3 table=$4 out
	klog_mark
	if out=$(dm load "$name" --table "$table" 2>&1); then
		fail "$what: the load was accepted"
	fi
	if [ "$IMPL" = rdm ]; then
		expect_match "$out" "EINVAL" "$what: EINVAL"
		expect_match "$(klog_since_mark)" "$logre" "$what: refused and logged"
	else
		log "ok: $what: refused ($out)"
	fi
	expect_match "$(dm info "$name")" "Tables present: +LIVE$" "$what: no inactive table left"
}

# --- 1. Self-map ---
self_map() {
	dm create self14 --table "0 2048 linear $VDA 0" || fail "create self14"
	refused "self-map" "self14: table load: the table maps the device onto itself" \
		self14 "0 2048 linear $DEVDIR/self14 0"
	refused "self-map, second target" "self14: table load: the table maps the device onto itself" \
		self14 "0 1024 linear $VDA 0
1024 1024 linear $DEVDIR/self14 0"
	expect_eq "$(dm info self14 | sed -n 's/^Open count: *//p')" 0 "self14 is not held open"
	dm remove self14 || fail "remove self14"
	expect_eq "$(dev_count)" 0 "no device left"
}
run_both self_map

IMPL=rdm
snap_load
defer snap_cleanup

# DM_TABLE_CLEAR (rdmsetup has no clear command).
clear() {
	expect_match "$(rdm-ioctl-probe --nr 10 --name "$1")" "^result OK$" "clear $1"
}

# --- 2. A 2-cycle ---
dm create a14 --table "0 2048 linear $VDA 0" || fail "create a14"
dm create b14 --table "0 2048 linear $DEVDIR/a14 0" || fail "create b14"
refused "2-cycle a -> b -> a" "a14: table load: the table would make a cycle of devices: a14 -> b14 -> a14" \
	a14 "0 2048 linear $DEVDIR/b14 0"

# --- 3. A 3-cycle through inactive tables ---
for c in c1 c2 c3; do
	dm create $c --table "0 2048 linear $VDA 0" || fail "create $c"
done
dm load c1 --table "0 2048 linear $DEVDIR/c2 0" || fail "load c1 -> c2"
dm load c2 --table "0 2048 linear $DEVDIR/c3 0" || fail "load c2 -> c3"
refused "3-cycle through inactive tables" \
	"c3: table load: the table would make a cycle of devices: c3 -> c1 -> c2 -> c3" \
	c3 "0 2048 linear $DEVDIR/c1 0"
# Resume c1 (its live table then maps c2); c3 -> c1 is still refused.
dm resume c1 || fail "resume c1"
refused "3-cycle through a live and an inactive table" "c3 -> c1 -> c2 -> c3" \
	c3 "0 2048 linear $DEVDIR/c1 0"
# Clearing c2's inactive table breaks the cycle: now it loads.
clear c2
dm load c3 --table "0 2048 linear $DEVDIR/c1 0" || fail "load c3 -> c1 once c2 no longer maps c3"
log "ok: c3 -> c1 loads once the cycle is gone"
clear c3

# --- 4. Concurrent loads ---
dm create x14 --table "0 2048 linear $VDA 0" || fail "create x14"
dm create y14 --table "0 2048 linear $VDA 0" || fail "create y14"
for i in $(seq 1 10); do
	dm load x14 --table "0 2048 linear $DEVDIR/y14 0" >/dev/null 2>&1 &
	px=$!
	dm load y14 --table "0 2048 linear $DEVDIR/x14 0" >/dev/null 2>&1 &
	py=$!
	ok=0
	wait $px && ok=$((ok + 1))
	wait $py && ok=$((ok + 1))
	[ $ok -eq 1 ] || fail "round $i: $ok of the two loads x14 -> y14 and y14 -> x14 were accepted"
	clear x14 >/dev/null
	clear y14 >/dev/null
done
log "ok: 10 rounds of concurrent crossing loads: one accepted each time"

# --- Nothing is left behind ---
dm remove_all || fail "remove_all"
expect_eq "$(dev_count)" 0 "remove_all left no device"
rdm_unload
log "ok: rdm unloads"
exit "$KSFT_PASS"
