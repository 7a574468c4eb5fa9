#!/usr/bin/env bash
# Bad snapshot and snapshot-origin table lines: each create is refused with
# a kernel log line naming the problem, and leaves nothing behind: the
# device does not exist, the device count, the module's use count and the
# holders of the disks are what they were.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
defer snap_cleanup
snap_load

# A device with 4 KiB logical blocks, for the block size check.
truncate -s 4M /tmp/snap06.img
loopdev=$(losetup --sector-size 4096 -f --show /tmp/snap06.img) || fail "losetup"
defer losetup -d "$loopdev"
expect_eq "$(blockdev --getss "$loopdev")" 4096 "$loopdev has 4 KiB logical blocks"

dm create cow8 --table "0 8 linear $VDB 0" || fail "create an 8-sector COW"
dm create orig --table "0 16384 snapshot-origin $VDA" || fail "create an origin"
count=$(dev_count)
refs=$(module_refs "$SNAP_MOD")
holders() { find /sys/block/vda/holders /sys/block/vdb/holders "/sys/block/${loopdev##*/}/holders" -mindepth 1 -maxdepth 1 | wc -l; }
held=$(holders)

# bad WHAT LOG-REGEX DM-LOG-REGEX TABLE: rdm must log LOG-REGEX; the
# kernel's dm-snapshot (reference run) logs DM-LOG-REGEX.
bad() {
	local re=$2
	snap_ref && re=$3
	expect_fail "$1" "$re" dm create bad --table "$4"
	dm info bad >/dev/null 2>&1 && fail "$1: the device exists after a refused create"
	expect_eq "$(dev_count) $(module_refs "$SNAP_MOD") $(holders)" "$count $refs $held" \
		"$1: no device, module reference or disk holder left behind"
}
# bad_rdm WHAT LOG-REGEX TABLE: a line dm-snapshot may accept, rdm refuses.
bad_rdm() {
	if snap_ref; then
		if dm create bad --table "$3" 2>/dev/null; then
			dm remove bad || fail "remove"
			log "dm-snapshot accepts this: $1"
		else
			log "dm-snapshot refuses this too: $1: $(dmesg | tail -n 1)"
		fi
	else
		bad "$1" "$2" "" "$3"
	fi
}
S="0 16384 snapshot"
STORE="Couldn't create exception store" # dm-snapshot hides the store's reason
bad "chunk size not a power of 2" "chunk size 12 is not a power of 2" "$STORE" "$S $VDA $VDB N 12"
bad "chunk size 24" "chunk size 24 is not a power of 2" "$STORE" "$S $VDA $VDB N 24"
bad "chunk size not a multiple of the COW's 4 KiB blocks" \
	"chunk size 4 is not a multiple of the device block size" "$STORE" \
	"0 8192 snapshot $VDA $loopdev N 4"
bad "chunk size too high" "chunk size 4194304 is too high" "$STORE" "$S $VDA $VDB N 4194304"
bad "chunk size 0 with a transient store" "chunk size 0 needs a persistent store" \
	"Chunk size not set" "$S $VDA $VDB N 0"
bad "chunk size not a number" "argument 4 is not a number" "$STORE" "$S $VDA $VDB N x8"
bad_rdm "COW device smaller than one chunk" "COW device .* too small" "$S $VDA $DEVDIR/cow8 N 16"
bad "origin and COW the same device" "same device" "cannot be the same as origin device" \
	"$S $VDA $VDA N 8"
bad "origin and COW the same device, by path and by number" "same device" \
	"cannot be the same as origin device" "$S $VDA $(devno "$VDA") N 8"
bad "unknown store type" "unknown exception store type" "$STORE" "$S $VDA $VDB X 8"
# (Bad persistent metadata: test_persist_bad_on_disk_input.)
yes garbage | head -c 512 | dd of="$VDB" bs=512 count=1 iflag=fullblock oflag=direct status=none
bad "persistent store on a COW with a garbage header" "invalid or corrupt snapshot header" \
	"Invalid or corrupt snapshot" "$S $VDA $VDB P 8"
bad "persistent store with overflow, garbage header" "invalid or corrupt snapshot header" \
	"Invalid or corrupt snapshot" "$S $VDA $VDB PO 8"
dd if=/dev/zero of="$VDB" bs=512 count=1 oflag=direct status=none
bad "origin that does not exist" "cannot open device /dev/nonexistent" "Cannot get origin device" \
	"$S /dev/nonexistent $VDB N 8"
bad "COW that does not exist" "cannot open device 250:7" "Cannot get COW device" "$S $VDA 250:7 N 8"
bad "3 arguments" "expected 4 or more .*got 3" "requires 4 or more arguments" "$S $VDA $VDB N"
bad "unknown feature" "bad feature arguments" "Unrecognised feature requested" "$S $VDA $VDB N 8 1 frob"
bad "snapshot-origin without a device" "expected 1 .*got 0" "origin: incorrect number of arguments" \
	"0 16384 snapshot-origin"
bad "snapshot-origin with 2 devices" "expected 1 .*got 2" "origin: incorrect number of arguments" \
	"0 16384 snapshot-origin $VDA $VDB"
bad "snapshot-origin on a device that does not exist" "cannot open device /dev/nonexistent" \
	"Cannot get target device" "0 16384 snapshot-origin /dev/nonexistent"

# A refused reload leaves the live table and the inactive slot alone.
snap_take orig good "$S $VDA $VDB N 8"
re="chunk size 12 is not a power of 2"
snap_ref && re=$STORE
expect_fail "reload with a bad chunk size" "$re" dm load good --table "$S $VDA $VDB N 12"
expect_match "$(dm info good)" "Tables present: +LIVE$" "no inactive table after the refused reload"
expect_eq "$(dm table good)" "$S $(devno "$VDA") $(devno "$VDB") N 8" "the live table is intact"
snap_drop orig good
dm remove orig && dm remove cow8 || fail "remove"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
