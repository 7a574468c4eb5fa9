#!/usr/bin/env bash
# Table reload with suspend/resume while fio writes with verify: no I/O
# error, nothing lost or torn; and resume really switches the mapping.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
defer rdm_cleanup
rdm_load

table="0 65536 linear $VDA 0"
rdmsetup create live --table "$table" || fail "create"
dev=/dev/rdm/live
fio --name=swap --filename=$dev --direct=1 --rw=randwrite --bs=4k --size=32M \
	--verify=crc32c --do_verify=1 --iodepth=16 --ioengine=libaio \
	--numjobs=1 --minimal >/tmp/fio.out 2>&1 &
fio_pid=$!
swaps=0
while kill -0 $fio_pid 2>/dev/null && [ $swaps -lt 40 ]; do
	rdmsetup load live --table "$table" || fail "reload"
	rdmsetup suspend live || fail "suspend"
	rdmsetup resume live || fail "resume"
	swaps=$((swaps + 1))
done
wait $fio_pid || { cat /tmp/fio.out; fail "fio saw an error or a verify mismatch"; }
log "ok: $swaps table swaps under fio write+verify"
[ $swaps -gt 0 ] || fail "no swap happened while fio ran"
expect_match "$(rdmsetup info live)" "Event number: +$((swaps + 1))" "each swap raised an event"

# Suspend holds I/O until resume; NOFLUSH suspend works too.
rdmsetup suspend --noflush live || fail "suspend --noflush"
expect_match "$(rdmsetup info live)" "State: +SUSPENDED" "suspended"
dd if=/dev/urandom of=$dev bs=4k count=1 oflag=direct status=none &
dd_pid=$!
sleep 1
kill -0 $dd_pid 2>/dev/null || fail "I/O completed on a suspended device"
log "ok: I/O waits while the device is suspended"
rdmsetup resume live || fail "resume"
wait $dd_pid || fail "held I/O failed after resume"
log "ok: held I/O completes after resume"

# Resume switches the mapping: zero target, then error target.
rdmsetup load live --table "0 65536 zero" || fail "load zero"
expect_match "$(rdmsetup info live)" "Tables present: +LIVE & INACTIVE" "inactive table present"
dd if=$dev bs=4k count=1 iflag=direct status=none | cmp - <(head -c 4096 /dev/zero) >/dev/null &&
	fail "the inactive table served I/O before resume"
rdmsetup resume live || fail "resume to zero"
dd if=$dev bs=4k count=1 iflag=direct status=none | cmp - <(head -c 4096 /dev/zero) ||
	fail "resume did not switch to the zero table"
log "ok: resume switched to the new table"
rdmsetup load live --table "0 65536 error" && rdmsetup resume live || fail "load error"
if dd if=$dev of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then
	fail "read from an error target succeeded"
fi
log "ok: the error target fails I/O"
rdmsetup load live --table "0 8 zero" && rdmsetup table live --inactive | grep -q zero ||
	fail "table --inactive"
rdmsetup remove live || fail "remove"
exit "$KSFT_PASS"
