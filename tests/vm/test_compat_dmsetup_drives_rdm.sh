#!/usr/bin/env bash
# dm_compat=1: Debian's unmodified dmsetup drives rdm through
# /dev/mapper/control (misc 10:236) and the "device-mapper" block major:
# a multi-target table with data checked on the disks, reload with
# suspend/resume, status/table/deps/info, rename, remove of an open device
# refused, remove. Loading in this mode while dm-mod is loaded fails with
# a clear log line.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
# With `vm-run --udev`, dmsetup uses udev synchronisation (and dmeventd,
# which compat_unload stops for an unload, runs).
NOSYNC=
[ -n "${RDM_UDEV:-}" ] || { export DM_DISABLE_UDEV=1; NOSYNC=--noudevsync; }
cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	IMPL=rdm compat_unload
	IMPL=dm compat_unload
	modprobe -r -d "$RDM_MODROOT" dm-zero dm-mod >/dev/null 2>&1
}
defer cleanup

if modprobe -d "$RDM_MODROOT" dm-mod 2>/dev/null; then
	klog_mark
	if insmod "$RDM_KO" dm_compat=1 2>/dev/null; then
		fail "dm_compat=1 loaded while dm-mod was loaded"
	fi
	expect_match "$(klog_since_mark)" "dm_compat=1: misc minor 236 is taken: the kernel's dm-mod is loaded" \
		"dm_compat with dm-mod loaded is refused"
	IMPL=dm compat_unload
	grep -q '^dm_mod ' /proc/modules && fail "unload dm-mod"
else
	log "kernel dm-mod not available: skipping the coexistence check"
fi

RDM_CONTROL=/dev/mapper/control
rdm_load dm_compat=1
[ -c /dev/mapper/control ] || fail "/dev/mapper/control missing"
expect_eq "$(stat -c '%t:%T' /dev/mapper/control)" "a:ec" "control is misc 10:236"
grep -q ' device-mapper$' /proc/devices || fail "no device-mapper block major in /proc/devices"
expect_match "$(dmsetup version)" "^Driver version: +4\.48\.0$" "dmsetup reads rdm's version"
expect_match "$(dmsetup targets)" "^linear +v1\.4\.0" "dmsetup lists rdm's targets"

table="0 2048 linear $VDA 0
2048 1024 zero
3072 1024 linear $VDB 2048"
dmsetup create $NOSYNC cdev --table "$table" || fail "dmsetup create"
dev=/dev/mapper/cdev
[ -b $dev ] || fail "dmsetup did not make $dev"
pat=/tmp/pattern
make_pattern $pat 2
dd if=$pat of=$dev bs=1M oflag=direct status=none || fail "write"
cmp <(sect "$VDA" 0 2048) <(sect $pat 0 2048) || fail "data on vda"
cmp <(sect "$VDB" 2048 1024) <(sect $pat 3072 1024) || fail "data on vdb"
log "ok: data written through dmsetup's device is on the disks"
expect_match "$(dmsetup table cdev)" "^3072 1024 linear 254:16 2048$" "dmsetup table"
expect_match "$(dmsetup deps cdev)" "^2 dependencies" "dmsetup deps"
expect_match "$(dmsetup info cdev)" "State: +ACTIVE" "dmsetup info"

# Live reload under fio write+verify, through dmsetup.
fio --name=swap --filename=$dev --direct=1 --rw=randwrite --bs=4k --size=1M \
	--offset=0 --verify=crc32c --do_verify=1 --iodepth=8 --ioengine=libaio \
	--loops=4 --minimal >/tmp/fio.out 2>&1 &
fio_pid=$!
swaps=0
while kill -0 $fio_pid 2>/dev/null && [ $swaps -lt 20 ]; do
	dmsetup reload cdev --table "$table" && dmsetup suspend cdev && dmsetup resume cdev ||
		fail "dmsetup reload/suspend/resume under fio"
	swaps=$((swaps + 1))
done
wait $fio_pid || { cat /tmp/fio.out; fail "fio failed across dmsetup table swaps"; }
log "ok: $swaps dmsetup table swaps under fio write+verify"

dmsetup reload cdev --table "0 4096 zero" || fail "reload"
dmsetup suspend cdev && dmsetup resume cdev || fail "suspend/resume"
expect_eq "$(dmsetup table cdev)" "0 4096 zero " "resume switched the table"
dmsetup rename $NOSYNC cdev cdev2 || fail "rename"
expect_match "$(dmsetup ls)" "^cdev2" "renamed"
exec 3</dev/mapper/cdev2
klog_mark
if dmsetup remove $NOSYNC cdev2 2>/dev/null; then fail "remove of an open device"; fi
expect_match "$(klog_since_mark)" "unable to remove open device" "open device not removed"
exec 3<&-
dmsetup remove $NOSYNC cdev2 || fail "remove"
expect_eq "$(dmsetup ls)" "No devices found" "gone"

# Deferred remove through dmsetup: done on the last close.
dmsetup create $NOSYNC later --table "0 64 zero" || fail "create"
exec 3</dev/mapper/later
dmsetup remove $NOSYNC --deferred later || fail "dmsetup remove --deferred"
dmsetup info later >/dev/null 2>&1 || fail "deferred remove removed an open device"
exec 3<&-
wait_gone dmsetup later
log "ok: dmsetup remove --deferred removed the device on its last close"
exit "$KSFT_PASS"
