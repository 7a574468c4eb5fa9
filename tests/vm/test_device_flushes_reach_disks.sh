#!/usr/bin/env bash
# Cache flushes reach the disks under a device (counted in the disks'
# /sys/block/*/stat flush field).
# 1. One disk: an ext4 journal commit (a write with REQ_PREFLUSH|REQ_FUA)
#    on a linear device over $VDA flushes $VDA (the data's clone carries
#    the flush there itself: no second, empty flush is sent).
# 2. Two disks (a linear device over $VDA then $VDB): a journal commit
#    flushes both disks — an earlier write may sit on the disk the commit
#    does not go to; and an empty flush (fsync of the device) reaches both.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v mkfs.ext4 >/dev/null || skip "needs e2fsprogs"
mnt=/tmp/rdm-mnt8
defer rdm_cleanup
defer unmount "$mnt" # if a check failed with it mounted
mkdir -p $mnt
for d in $VDA $VDB; do
	[ "$(cat /sys/block/"${d##*/}"/queue/write_cache)" = "write back" ] ||
		skip "${d##*/} has no volatile write cache: the block layer drops flushes"
done
rdm_load

# flushes DISK: flush requests the disk completed so far (stat field 16).
flushes() {
	local f
	read -r -a f <"/sys/block/${1##*/}/stat"
	echo "${f[15]}"
}
# commit_flushes DEV: mounts ext4 on DEV, writes a file and fsyncs it
# (a journal commit), setting fa and fb to the flushes $VDA and $VDB
# completed during the fsync.
commit_flushes() {
	local a b
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1" || fail "mkfs.ext4 on $1"
	mount -o barrier=1 "$1" $mnt || fail "mount $1"
	dd if=/dev/urandom of=$mnt/f bs=64k count=4 status=none || fail "write a file"
	sync -f $mnt || fail "sync $mnt"
	a=$(flushes "$VDA") b=$(flushes "$VDB")
	dd if=/dev/urandom of=$mnt/f bs=4k count=1 conv=notrunc,fsync status=none || fail "fsync a write"
	fa=$(($(flushes "$VDA") - a)) fb=$(($(flushes "$VDB") - b))
	umount $mnt || fail "umount"
}

# --- 1. One disk ---
rdmsetup create one --table "0 131072 linear $VDA 0" || fail "create one"
commit_flushes /dev/rdm/one
[ "$fa" -ge 1 ] || fail "one disk: the journal commit did not flush $VDA ($fa flushes)"
log "ok: one disk: a journal commit flushed $VDA ($fa flushes)"
expect_eq "$fb" 0 "one disk: $VDB, not under the device, got no flush"
rdmsetup remove one || fail "remove one"

# --- 2. Two disks ---
rdmsetup create two --table "0 65536 linear $VDA 0
65536 65536 linear $VDB 0" || fail "create two"
commit_flushes /dev/rdm/two
[ "$fa" -ge 1 ] && [ "$fb" -ge 1 ] ||
	fail "two disks: a journal commit flushed $VDA $fa times and $VDB $fb times"
log "ok: two disks: a journal commit flushed both ($fa and $fb flushes)"
a=$(flushes "$VDA") b=$(flushes "$VDB")
sync /dev/rdm/two || fail "fsync the device"
[ $(($(flushes "$VDA") - a)) -ge 1 ] && [ $(($(flushes "$VDB") - b)) -ge 1 ] ||
	fail "two disks: an empty flush did not reach both disks"
log "ok: two disks: an empty flush (fsync of the device) reached both"
rdmsetup remove two || fail "remove two"
expect_eq "$(rdmsetup ls)" "No devices found" "all devices gone"
