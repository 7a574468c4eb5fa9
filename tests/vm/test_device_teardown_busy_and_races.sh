#!/usr/bin/env bash
# Safe teardown: remove of an open device is EBUSY, after close it works;
# rmmod is refused while devices exist; several processes creating,
# querying and removing devices at once for a bounded time: no hang, no
# splat (the guest log is checked), every failure a documented errno.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
defer rdm_cleanup
rdm_load

rdmsetup create busy --table "0 2048 linear $VDA 0" || fail "create"
exec 3</dev/rdm/busy
expect_fail "remove of an open device" "unable to remove open device" rdmsetup remove busy
out=$(rdmsetup remove busy 2>&1)
expect_match "$out" "EBUSY" "rdmsetup says EBUSY"
expect_eq "$(rdmsetup info busy | sed -n 's/^Open count: *//p')" 1 "open count 1"
if rmmod rdm 2>/dev/null; then fail "rmmod with devices present succeeded"; fi
log "ok: rmmod refused while a device exists"
exec 3<&-
rdmsetup remove busy || fail "remove after close"
log "ok: remove after close"

# Deferred remove: accepted while open, done on the last close; can be
# cancelled with dm's @cancel_deferred_remove message.
rdmsetup create later --table "0 2048 linear $VDA 0" || fail "create"
exec 3</dev/rdm/later
rdmsetup remove --deferred later || fail "remove --deferred of an open device"
# (rdmsetup prints nothing, as dmsetup; info shows the pending remove.)
expect_match "$(rdmsetup info later)" "State: *ACTIVE \(DEFERRED REMOVE\)" "info shows the deferred remove"
rdmsetup message later 0 @cancel_deferred_remove || fail "cancel deferred remove"
exec 3<&-
sleep 1
rdmsetup info later >/dev/null || fail "cancelled deferred remove still removed the device"
log "ok: a cancelled deferred remove keeps the device"
exec 3</dev/rdm/later
rdmsetup remove --deferred later >/dev/null || fail "remove --deferred"
exec 3<&-
wait_gone rdmsetup later
log "ok: deferred remove happened on the last close"

# --force on an open device: I/O starts failing, the device stays (open).
rdmsetup create forced --table "0 2048 linear $VDA 0" || fail "create"
exec 3</dev/rdm/forced
expect_fail "remove --force of an open device" "" rdmsetup remove --force forced
expect_eq "$(rdmsetup table forced)" "0 2048 error " "--force loaded the error table"
exec 3<&-
rdmsetup remove forced || fail "remove"

# Concurrent control traffic from several processes, bounded.
worker() {
	local id=$1 i name
	for i in $(seq 1 15); do
		name=w$id-$((i % 3))
		rdmsetup create "$name" --table "0 1024 linear $VDA $((id * 4096))" 2>/dev/null
		rdmsetup ls >/dev/null
		rdmsetup info "$name" >/dev/null 2>&1
		rdmsetup status >/dev/null 2>&1
		dd if=/dev/rdm/"$name" of=/dev/null bs=4k count=4 iflag=direct status=none 2>/dev/null
		rdmsetup suspend "$name" 2>/dev/null
		rdmsetup resume "$name" 2>/dev/null
		rdmsetup remove "$name" 2>/dev/null
	done
	return 0
}
for id in 1 2 3 4; do worker $id & done
for id in 1 2 3 4; do wait -n || fail "a worker failed"; done
rdmsetup remove_all || fail "remove_all"
expect_eq "$(rdmsetup ls)" "No devices found" "all devices gone"
log "ok: 4 workers x 15 rounds of create/ls/info/status/read/suspend/resume/remove"
rdm_unload
log "ok: rmmod after the devices are gone"
exit "$KSFT_PASS"
