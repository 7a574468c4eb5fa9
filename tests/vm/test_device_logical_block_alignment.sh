#!/usr/bin/env bash
# Target boundaries against the table's logical block size, as dm checks
# them (dm-table.c: device_area_is_invalid,
# validate_hardware_logical_block_alignment): a table with a device of 4
# KiB logical blocks (a loop device made with losetup -b 4096 over $VDC)
# takes 4 KiB blocks, so an I/O of whole blocks must never leave a target
# on that device a part of a block, and the table must end on a block
# boundary. The same scenario on the kernel's dm and on rdm (run_both):
# refused with EINVAL and a kernel log line naming the target —
#   zero 4 sectors, then linear on the 4 KiB device (starts inside a block);
#   linear on the 4 KiB device, then zero 4 sectors (ends inside a block);
#   zero 4, zero 4, then linear 12 sectors (its length is not whole blocks);
#   linear on the 4 KiB device from sector 4 (not on a block of it);
#   snapshot-origin of the 4 KiB device, 12 sectors long;
# accepted: linear on the 4 KiB device, then two zero targets of 4 sectors
# (an I/O of one block is split between them, which take any sector), and
# zero 4 + zero 4 + linear 8: the device has 4 KiB logical blocks and
# reads and writes work.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDC"
command -v losetup >/dev/null || skip "needs losetup"
L4=
L4=$(losetup -f --show -b 4096 "$VDC") || skip "losetup -b 4096 $VDC failed"
defer losetup -d "$L4"
expect_eq "$(blockdev --getss "$L4")" 4096 "${L4##*/} has 4 KiB logical blocks"
pat=/tmp/device12.pat
make_pattern $pat 1

# refused WHAT TARGET-INDEX START LEN TABLE: dm names the table line and
# its start and length ("not aligned to h/w logical block size 4096"), or
# the device area ("start=4 not aligned ..."); rdm names the target.
refused() {
	local what=$1 re
	if [ "$IMPL" = dm ]; then
		re="(table line [0-9]+ \(start sect $3 len $4\) not aligned to h/w logical block size 4096|(start|len)=[0-9]+ not aligned to h/w logical block size 4096 of ${L4##*/})"
	else
		re="target $2 .*(start sector $3, length $4\) is not aligned to the table's logical block size of 4096 bytes|not aligned to the logical block size of its devices \(4096 bytes\)|must be multiples of the device's 8-sector logical block)"
	fi
	expect_refused "$IMPL: $what" "[Ii]nvalid argument" "$re" dm create bad --table "$5"
	dm remove bad >/dev/null 2>&1
}

scenario() {
	[ "$IMPL" = dm ] && { modprobe -d "$RDM_MODROOT" dm-zero || fail "modprobe dm-zero"; }
	refused "zero 4, then linear on the 4 KiB device" 1 4 8 "0 4 zero
4 8 linear $L4 0"
	refused "linear on the 4 KiB device, then zero 4" 1 8 4 "0 8 linear $L4 0
8 4 zero"
	refused "zero 4, zero 4, then linear 12" 2 8 12 "0 4 zero
4 4 zero
8 12 linear $L4 0"
	refused "linear on the 4 KiB device from sector 4" 0 0 8 "0 8 linear $L4 4"
	refused "snapshot-origin of the 4 KiB device, 12 sectors" 0 0 12 "0 12 snapshot-origin $L4"
	expect_eq "$(dev_count)" 0 "$IMPL: nothing left behind"

	dm create ok1 --table "0 16 linear $L4 0
16 4 zero
20 4 zero" || fail "$IMPL: linear 16 + zero 4 + zero 4 refused"
	expect_eq "$(blockdev --getss "$DEVDIR"/ok1)" 4096 "$IMPL: linear + zero + zero: 4 KiB logical blocks"
	dwrite "$pat" 0 "$DEVDIR"/ok1 0 16 || fail "$IMPL: write ok1"
	expect_same "$IMPL: linear + zero + zero reads back" "$DEVDIR"/ok1 "$pat" 16
	expect_eq "$(dread "$DEVDIR"/ok1 16 8 | tr -d '\0' | wc -c)" 0 "$IMPL: the zero block reads zeros"
	dm remove ok1 || fail "remove ok1"
	dm create ok2 --table "0 4 zero
4 4 zero
8 8 linear $L4 0" || fail "$IMPL: zero 4 + zero 4 + linear 8 refused"
	dwrite "$pat" 0 "$DEVDIR"/ok2 8 8 || fail "$IMPL: write ok2"
	expect_same "$IMPL: zero + zero + linear reads back" "$DEVDIR"/ok2 "$pat" 8 8 0
	dm remove ok2 || fail "remove ok2"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}

run_both scenario
exit "$KSFT_PASS"
