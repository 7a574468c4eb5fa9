#!/usr/bin/env bash
# Zoned devices are refused: rdm maps no zone operations (a zone reset
# would look like an empty flush), so a zoned null_blk device is refused
# at table load, with EINVAL and a kernel log line naming it ("zoned
# devices are not supported"), as a linear device, an origin, a snapshot's
# origin or COW device, by path and by number; nothing is left behind and
# ordinary devices keep working. The kernel's dm supports zoned linear
# tables: there is no dm run to compare with.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
grep -q '^null_blk ' /proc/modules && skip "null_blk is loaded already"
modprobe -d "$RDM_MODROOT" null_blk nr_devices=1 zoned=1 zone_size=16 gb=1 ||
	skip "no null_blk module with zoned devices"
defer rmmod null_blk
Z=/dev/nullb0
for _ in $(seq 1 50); do [ -b $Z ] && break; sleep 0.1; done
[ -b $Z ] || fail "$Z did not appear"
expect_eq "$(cat /sys/block/nullb0/queue/zoned)" host-managed "$Z is zoned"
rdm_load
defer rdm_cleanup

ZN=$(devno $Z)
re="device ($Z|$ZN) is zoned: zoned devices are not supported"
inval="invalid argument \(EINVAL\)"
expect_refused "linear over a zoned device" "$inval" "target 0 \(linear\): $re" \
	rdmsetup create z --table "0 65536 linear $Z 0"
expect_refused "linear over a zoned device by number" "$inval" "target 1 \(linear\): device $ZN is zoned" \
	rdmsetup create z --table "0 8 zero
8 65536 linear $ZN 0"
expect_refused "snapshot-origin of a zoned device" "$inval" "target 0 \(snapshot-origin\): $re" \
	rdmsetup create z --table "0 65536 snapshot-origin $Z"
expect_refused "snapshot with a zoned COW device" "$inval" "target 0 \(snapshot\): $re" \
	rdmsetup create z --table "0 8192 snapshot $VDA $Z N 16"
expect_refused "persistent snapshot with a zoned COW device" "$inval" "target 0 \(snapshot\): $re" \
	rdmsetup create z --table "0 8192 snapshot $VDA $Z P 16"
expect_refused "snapshot of a zoned origin" "$inval" "target 0 \(snapshot\): $re" \
	rdmsetup create z --table "0 8192 snapshot $Z $VDB N 16"
expect_eq "$(rdmsetup ls)" "No devices found" "nothing left behind"

# A load on an existing device is refused too, and its live table stays.
rdmsetup create lin --table "0 8192 linear $VDA 0" || fail "create lin"
expect_refused "reload of a live device with a zoned device" "$inval" "$re" \
	rdmsetup load lin --table "0 8192 linear $Z 0"
expect_eq "$(rdmsetup table lin)" "0 8192 linear $(devno "$VDA") 0" "the live table stays"
expect_eq "$(cat "/sys/dev/block/$(devno /dev/rdm/lin)/queue/zoned")" none "the device is not zoned"
dd if=/dev/rdm/lin of=/dev/null bs=4k count=16 iflag=direct status=none || fail "read lin"
rdmsetup remove lin || fail "remove lin"
exit "$KSFT_PASS"
