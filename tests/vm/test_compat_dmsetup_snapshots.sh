#!/usr/bin/env bash
# dm_compat=1 snapshots, driven by Debian's unmodified dmsetup: an origin
# (snapshot-origin over vda) with two snapshots taken as LVM does (suspend
# the origin, create, resume); origin writes leave both snapshots with the
# old data; a write to one snapshot changes only it; status lines
# "N/M 0" and table lines as dm-snapshot prints them; the small snapshot
# overflows to "Invalid" (EIO, an event) while the origin and the other
# snapshot go on.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
# With `vm-run --udev`, dmsetup uses udev synchronisation (and dmeventd,
# which compat_unload stops for an unload, runs).
NOSYNC=
[ -n "${RDM_UDEV:-}" ] || { export DM_DISABLE_UDEV=1; NOSYNC=--noudevsync; }
cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	IMPL=rdm compat_unload
	IMPL=dm compat_unload
	modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod >/dev/null 2>&1
}
defer cleanup

if snap_ref; then
	modprobe -d "$RDM_MODROOT" dm-snapshot || skip "the kernel's dm-snapshot is not available"
	log "reference run: the kernel's dm-snapshot"
else
	IMPL=dm compat_unload
	RDM_CONTROL=/dev/mapper/control
	rdm_load dm_compat=1
	expect_match "$(dmsetup targets)" "^snapshot-origin +v1\." "dmsetup lists snapshot-origin"
	expect_match "$(dmsetup targets)" "^snapshot +v1\." "dmsetup lists snapshot"
fi
dms() { dmsetup "$@"; }
take() { # take SNAP TABLE
	dms suspend orig && dms create $NOSYNC "$1" --table "$2" && dms resume orig ||
		fail "take snapshot $1"
}

LEN=16384
CS=8
pat=/tmp/compat02.pat new=/tmp/compat02.new new2=/tmp/compat02.new2 exp=/tmp/compat02.exp
make_pattern $pat 8
make_pattern $new 8
make_pattern $new2 8
dms create $NOSYNC orig --table "0 $LEN snapshot-origin $VDA" || fail "dmsetup create the origin"
orig=/dev/mapper/orig
[ -b $orig ] || fail "dmsetup did not make $orig"
dd if=$pat of=$orig bs=1M oflag=direct status=none || fail "stamp the pattern"
cp $pat $exp
dms create $NOSYNC cow2 --table "0 128 linear $VDC 0" || fail "create cow2"
take snap1 "0 $LEN snapshot $VDA $VDB N $CS"
take snap2 "0 $LEN snapshot $VDA /dev/mapper/cow2 N $CS"
cow1=$(disk_sectors "$VDB")
expect_eq "$(dms table snap1)" "0 $LEN snapshot $(devno "$VDA") $(devno "$VDB") N $CS" "dmsetup table of a snapshot"
expect_eq "$(dms table orig)" "0 $LEN snapshot-origin $(devno "$VDA")" "dmsetup table of the origin"
expect_eq "$(dms status orig)" "0 $LEN snapshot-origin " "dmsetup status of the origin"
expect_eq "$(dms status snap1)" "0 $LEN snapshot 0/$cow1 0" "dmsetup status of a fresh snapshot"
expect_match "$(dms deps snap1)" "^2 dependencies" "a snapshot depends on its origin and COW"
expect_match "$(dms ls)" "snap2" "dmsetup ls"

for c in 1 4 9 16 25 36 49 64; do
	dwrite $new $((c * CS)) $orig $((c * CS)) $CS || fail "origin write to chunk $c"
	fput $new $((c * CS)) $exp $((c * CS)) $CS
done
expect_same "the origin reads its writes" $orig $exp
expect_same "snap1 keeps the old data" /dev/mapper/snap1 $pat
expect_same "snap2 keeps the old data" /dev/mapper/snap2 $pat
expect_eq "$(dms status snap1)" "0 $LEN snapshot $((8 * CS))/$cow1 0" "snap1: 8 chunks allocated"
expect_eq "$(dms status snap2)" "0 $LEN snapshot $((8 * CS))/128 0" "snap2: 8 chunks allocated"

# A write to snap1 (one sector of chunk 2, never copied): only snap1 changes.
cp $pat /tmp/compat02.snap1
dwrite $new2 $((2 * CS + 3)) /dev/mapper/snap1 $((2 * CS + 3)) 1 || fail "write to snap1"
fput $new2 $((2 * CS + 3)) /tmp/compat02.snap1 $((2 * CS + 3)) 1
expect_same "snap1 reads its own write" /dev/mapper/snap1 /tmp/compat02.snap1
expect_same "the origin is unchanged" $orig $exp
expect_same "snap2 is unchanged" /dev/mapper/snap2 $pat
expect_eq "$(dms status snap1)" "0 $LEN snapshot $((9 * CS))/$cow1 0" "snap1: 9 chunks allocated"

# 9 more origin chunks overflow snap2 (16 fit).
ev=$(dms info snap2 | sed -n 's/^Event number: *//p')
for c in $(seq 100 108); do
	dwrite $new $((c * CS)) $orig $((c * CS)) $CS || fail "origin write to chunk $c (overflowing snap2)"
	fput $new $((c * CS)) $exp $((c * CS)) $CS
done
expect_eq "$(dms status snap2)" "0 $LEN snapshot Invalid" "snap2 overflowed: Invalid"
ev2=$(dms info snap2 | sed -n 's/^Event number: *//p')
[ "$ev2" -gt "$ev" ] || fail "no event on overflow ($ev -> $ev2)"
log "ok: the overflow raised an event ($ev -> $ev2)"
out=$(dd if=/dev/mapper/snap2 of=/dev/null bs=4k count=1 iflag=direct 2>&1) && fail "read of an invalid snapshot succeeded"
expect_match "$out" "Input/output error" "reading the invalid snapshot fails with EIO"
expect_same "the origin reads all its writes" $orig $exp
expect_same "snap1 still reads the old data and its own write" /dev/mapper/snap1 /tmp/compat02.snap1
expect_eq "$(dms status snap1)" "0 $LEN snapshot $((18 * CS))/$cow1 0" "snap1: 18 chunks allocated"

dms suspend orig && dms remove $NOSYNC snap2 && dms remove $NOSYNC snap1 && dms resume orig ||
	fail "remove the snapshots"
dms remove $NOSYNC orig && dms remove $NOSYNC cow2 || fail "remove the origin and cow2"
expect_eq "$(dms ls)" "No devices found" "all gone"
exit "$KSFT_PASS"
