#!/usr/bin/env bash
# Filesystems: suspend freezes a mounted filesystem first (dm's lockfs), so
# the underlying disk is consistent while the device is suspended; and the
# exclusive open with rdm's shared holder keeps a mount of an underlying
# disk out, and keeps rdm out of a mounted disk.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v mkfs.ext4 >/dev/null && command -v e2fsck >/dev/null || skip "needs e2fsprogs"
mnt=/tmp/rdm-mnt
defer rdm_cleanup
defer unmount "$mnt" # if a check failed with it mounted
mkdir -p $mnt
rdm_load

rdmsetup create fs --table "0 262144 linear $VDA 0" || fail "create"
mkfs.ext4 -q -F /dev/rdm/fs || fail "mkfs through rdm"
mount /dev/rdm/fs $mnt || fail "mount"
dd if=/dev/urandom of=$mnt/data bs=1M count=4 status=none || fail "write a file"
# What the disk under the device says about its journal (the disk's page
# cache is dropped first: rdm writes around it).
needs_recovery() {
	echo 3 >/proc/sys/vm/drop_caches
	dumpe2fs -h "$VDA" 2>/dev/null | grep -c needs_recovery
}
rdmsetup suspend fs || fail "suspend"
# Frozen and flushed: the disk under it holds a clean filesystem.
expect_eq "$(needs_recovery)" 0 "suspend froze the filesystem (journal flushed on the disk)"
e2fsck -fn "$VDA" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "filesystem on the disk is not clean while suspended"; }
log "ok: e2fsck -fn on the disk is clean while suspended"
rdmsetup resume fs || fail "resume"
dd if=/dev/urandom of=$mnt/more bs=1M count=1 status=none || fail "write after resume (thawed)"
log "ok: the filesystem is writable after resume"
# Without lockfs the mounted filesystem's journal stays live on the disk.
rdmsetup suspend --nolockfs fs || fail "suspend --nolockfs"
expect_eq "$(needs_recovery)" 1 "suspend --nolockfs leaves the filesystem unfrozen"
rdmsetup resume fs || fail "resume"

# The shared exclusive holder: a mount of the mapped disk is refused...
if mount "$VDA" /mnt 2>/dev/null; then umount /mnt; fail "mounted a disk that rdm maps"; fi
log "ok: a disk rdm maps cannot be mounted"
umount $mnt || fail "umount"
rdmsetup remove fs || fail "remove"
# ... and rdm cannot map a mounted disk.
mkfs.ext4 -q -F "$VDB" && mount "$VDB" $mnt || fail "mount vdb"
expect_fail "mapping a mounted disk" "cannot open device $VDB" rdmsetup create m --table "0 8 linear $VDB 0"
umount $mnt
exit "$KSFT_PASS"
