#!/usr/bin/env bash
# Teardown races, bounded (~30 s). While fio writes and verifies through
# the origin and through a snapshot of it (the same 8 MiB, so copies race
# with snapshot writes to the same chunks), and a dd loop writes the rest
# of the origin: snapshots are taken, read and removed in a loop (origin
# suspended around each create and remove), and the origin's table is
# reloaded with the same line. No I/O error, no verify mismatch. rmmod
# while the writers run fails at once ("in use"), it does not hang; after
# they stop and the devices go, it succeeds. The guest kernel log is
# checked by the harness afterwards (WARNING, lockdep, BUG, hung task).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
command -v fio >/dev/null || skip "needs fio"
defer snap_cleanup
snap_load

LEN=32768 # 16 MiB
CS=8
orig=$DEVDIR/orig
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=/dev/urandom of="$orig" bs=1M count=16 oflag=direct status=none || fail "stamp"
snap_take orig snapA "0 $LEN snapshot $VDA $VDB N $CS"

RUNTIME=25
fio_job() { # fio_job NAME DEV
	fio --name="$1" --filename="$2" --direct=1 --rw=randwrite --bs=4k --size=8M \
		--ioengine=libaio --iodepth=8 --time_based --runtime=$RUNTIME \
		--verify=crc32c --verify_backlog=256 --verify_fatal=1 --minimal \
		>/tmp/snap07."$1".out 2>&1
}
fio_job origin "$orig" &
fio_o=$!
fio_job snapshot "$DEVDIR"/snapA &
fio_s=$!
defer stop_pids "$fio_o" "$fio_s"
rm -f /tmp/snap07.dd_failed
(
	i=0
	while :; do
		dd if=/dev/urandom of="$orig" bs=4k count=4 seek=$((2048 + i % 2044)) oflag=direct \
			status=none 2>>/tmp/snap07.dd_failed || echo "dd write $i failed" >>/tmp/snap07.dd_failed
		i=$((i + 37))
	done
) &
dd_pid=$!
defer stop_pids "$dd_pid"

start=$SECONDS
rounds=0
while [ $((SECONDS - start)) -lt $((RUNTIME - 8)) ] && [ $rounds -lt 12 ]; do
	snap_take orig snapC "0 $LEN snapshot $VDA $VDC N 16"
	dd if="$DEVDIR"/snapC of=/dev/null bs=64k count=16 skip=$((rounds * 7)) iflag=direct status=none ||
		fail "read of a new snapshot under load"
	snap_drop orig snapC
	dm load orig --table "0 $LEN snapshot-origin $VDA" || fail "reload the origin"
	dm suspend orig && dm resume orig || fail "suspend/resume the origin with a new table"
	rounds=$((rounds + 1))
done
log "ok: $rounds rounds of snapshot create/read/remove and origin reload under load"
[ $rounds -gt 0 ] || fail "no round ran"
expect_match "$(dm table orig)" "^0 $LEN snapshot-origin " "the origin's table"

# rmmod while the writers run: refused at once.
kill -0 $dd_pid 2>/dev/null || fail "the dd writer stopped early"
if [ $((SECONDS - start)) -ge $RUNTIME ]; then log "note: fio may have ended before the rmmod check"; fi
out=$(timeout 20 rmmod "$SNAP_MOD" 2>&1)
rc=$?
[ $rc -ne 124 ] || fail "rmmod $SNAP_MOD hung with devices and I/O in flight"
[ $rc -ne 0 ] && grep -q "^$SNAP_MOD " /proc/modules || fail "rmmod $SNAP_MOD succeeded with devices in use"
expect_match "$out" "in use|busy" "rmmod refused while in use"

kill $dd_pid
wait $dd_pid 2>/dev/null
[ ! -s /tmp/snap07.dd_failed ] || {
	cat /tmp/snap07.dd_failed
	fail "a dd write to the origin failed"
}
wait $fio_o || { cat /tmp/snap07.origin.out; fail "fio on the origin: I/O error or verify mismatch"; }
wait $fio_s || { cat /tmp/snap07.snapshot.out; fail "fio on the snapshot: I/O error or verify mismatch"; }
log "ok: fio write+verify on the origin and on the snapshot passed"
expect_match "$(dm status snapA)" "^0 $LEN snapshot [0-9]+/[0-9]+ 0$" "the snapshot is valid"

snap_drop orig snapA
dm remove orig || fail "remove the origin"
expect_eq "$(dev_count)" 0 "all devices gone"
if snap_ref; then
	modprobe -r -d "$RDM_MODROOT" dm-snapshot || fail "unload dm-snapshot"
else
	rmmod "$SNAP_MOD" || fail "rmmod $SNAP_MOD after the devices are gone"
fi
log "ok: the module unloads once the devices are gone"
exit "$KSFT_PASS"
