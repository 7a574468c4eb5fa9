#!/usr/bin/env bash
# Bad on-disk input for the persistent store. COW devices are crafted byte
# by byte (header: magic, valid, version, chunk size; metadata area 0 at
# chunk 1: {old, new} little-endian pairs) on a linear device over $VDB.
# First a good crafted COW loads (the crafting is right): its exceptions
# read their data chunks, an entry after the terminator is ignored, the
# status is exact. Then every bad one is refused with a kernel log line:
# garbage, a wrong magic, version 2, an on-disk chunk size that is not a
# power of 2, 0, or bigger than the COW, a COW smaller than header + one
# area (fresh or not), entries whose new chunk is past the end of the COW
# (2^64-1 too) or is metadata area 0; a chunk size in the table that
# disagrees with the disk (rdm refuses, dm overrides it: checked as such).
# After each refusal: no device, no module reference left, the crafted
# COW and the origin disk unchanged, and a good table on a fresh COW
# works. valid=0 loads as Invalid (logged, reads fail with EIO, COW
# unchanged). An old chunk far past the origin either loads harmlessly or
# is refused. In the reference run the cases dm-snapshot accepts are
# checked for what it does (rdm deliberately refuses them).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
defer snap_cleanup
snap_load

LEN=4096    # 2 MiB origin
CS=16       # chunk size (8 KiB)
COWLEN=2048 # the COW: 128 chunks
pat=/tmp/p03.pat mark=/tmp/p03.mark zero=/tmp/p03.zero img=/tmp/p03.img
make_pattern $pat 2
make_pattern $mark 1
truncate -s 0 $zero && truncate -s 64K $zero || fail "make $zero"
orig=$DEVDIR/orig cow=$DEVDIR/cow bad=$DEVDIR/bad
S="0 $LEN snapshot $VDA"

le32() {
	local h v=$1
	printf -v h '\\x%02x' $((v & 255)) $((v >> 8 & 255)) $((v >> 16 & 255)) $((v >> 24 & 255))
	printf '%b' "$h"
}
le64() { le32 $(($1 & 0xffffffff)); le32 $((($1 >> 32) & 0xffffffff)); }
# mkcow MAGIC VALID VERSION CHUNK [OLD NEW]...: $img = 64 KiB of COW: the
# header, then (at chunk CHUNK... of 16 sectors: chunk 1) area 0 with these
# entries; zeros elsewhere.
mkcow() {
	cp $zero $img
	{ le32 "$1"; le32 "$2"; le32 "$3"; le32 "$4"; } | dd of=$img conv=notrunc status=none
	shift 4
	[ $# -eq 0 ] && return
	while [ $# -gt 1 ]; do le64 "$1"; le64 "$2"; shift 2; done |
		dd of=$img bs=512 seek=$CS conv=notrunc status=none
}
# data CHUNK MARK-CHUNK: data chunk CHUNK of $img = chunk MARK-CHUNK of $mark.
data() { dd if=$mark of=$img bs=512 skip=$(($2 * CS)) seek=$(($1 * CS)) count=$CS conv=notrunc status=none; }
# put [SECTOR]: $img onto $VDB at SECTOR (0: under $cow).
put() { dd if=$img of="$VDB" bs=512 seek="${1:-0}" oflag=direct status=none || fail "write the COW image"; }
# cow_same WHAT DEV [SECTORS]: the COW device still holds $img (its first
# SECTORS, default all 128).
cow_same() {
	local n=${3:-128}
	cmp -s -n $((n * 512)) <(dread "$2" 0 "$n") $img || fail "$1: the COW device was written"
	log "ok: $1: the COW device is unchanged"
}

dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
dm create cow --table "0 $COWLEN linear $VDB 0" || fail "create the COW device"
count=$(dev_count) refs=$(module_refs "$SNAP_MOD")

# after WHAT [COW-DEV [SECTORS]]: nothing left behind by a refused create
# (COW-DEV, if given, must still hold $img), the origin disk unchanged,
# and a good table on a fresh COW works.
after() {
	dm info bad >/dev/null 2>&1 && fail "$1: the device exists after a refused create"
	expect_eq "$(dev_count) $(module_refs "$SNAP_MOD")" "$count $refs" \
		"$1: no device or module reference left behind"
	[ -n "${2:-}" ] && cow_same "$1" "$2" "${3:-}"
	expect_same "$1: the origin disk is unchanged" "$VDA" $pat $LEN
	dd if=$zero of="$VDB" bs=64K count=1 oflag=direct status=none || fail "zero the COW"
	dm create good --table "$S $cow P $CS" || fail "$1: then a good table on a fresh COW is refused"
	expect_eq "$(dm status good)" "0 $LEN snapshot $((2 * CS))/$COWLEN $((2 * CS))" \
		"$1: then a good table on a fresh COW works"
	dm remove good || fail "remove good"
}
# refused WHAT RDM-LOG DM-LOG [COW-DEV [TABLE [COW-SECTORS]]]: the create
# is refused with a log line (rdm's, or dm-snapshot's in the reference
# run); then after.
refused() {
	local re=$2 c=${4-$cow}
	snap_ref && re=$3
	expect_fail "$1" "$re" dm create bad --table "${5:-$S $c P $CS}"
	after "$1" "$c" "${6:-}"
}
# rdm_refuses WHAT RDM-LOG TABLE: rdm refuses it (then after); in the
# reference run dm-snapshot loads it: returns 0 with the snapshot "bad"
# made (the caller checks it and calls dm_loaded_done).
rdm_refuses() {
	if snap_ref; then
		klog_mark
		snap_take orig bad "$3"
		log "dm-snapshot loads this: $1: status '$(dm status bad)'"
		return 0
	fi
	expect_fail "$1" "$2" dm create bad --table "$3"
	after "$1" "$cow"
	return 1
}
dm_loaded_done() { # dm_loaded_done WHAT
	snap_drop orig bad
	after "$1" "$cow"
}

# A good crafted COW: 5 -> 2, 7 -> 3, the terminator, then 9 -> 4 (ignored).
mkcow "$COW_MAGIC" 1 1 $CS 5 2 7 3 0 0 9 4
data 2 0; data 3 1; data 4 2
put
snap_take orig bad "$S $cow P $CS"
expect_eq "$(dm status bad)" "0 $LEN snapshot $((4 * CS))/$COWLEN $((2 * CS))" \
	"crafted COW with 2 exceptions: status"
cp $pat /tmp/p03.exp
dd if=$mark of=/tmp/p03.exp bs=512 seek=$((5 * CS)) count=$CS conv=notrunc status=none
dd if=$mark of=/tmp/p03.exp bs=512 skip=$CS seek=$((7 * CS)) count=$CS conv=notrunc status=none
expect_same "crafted COW: chunks 5 and 7 read their data chunks, 9 (after the terminator) the origin" \
	"$bad" /tmp/p03.exp
snap_drop orig bad
after "crafted good COW" "$cow"

# Headers.
{ printf '\xde\xad\xbe\xef'; head -c $((64 * 1024 - 4)) /dev/urandom; } >$img
put
refused "garbage header" "magic|corrupt" "Invalid or corrupt snapshot"
mkcow $((0x71416e53)) 1 1 $CS 5 2
put
refused "wrong magic (SnAq)" "magic|corrupt" "Invalid or corrupt snapshot"
mkcow "$COW_MAGIC" 1 2 $CS 5 2
put
refused "version 2" "version" "unable to handle snapshot disk version 2"
mkcow "$COW_MAGIC" 1 1 12 5 2
put
refused "on-disk chunk size 12" "chunk size" "invalid on-disk chunk size 12"
mkcow "$COW_MAGIC" 1 1 0 5 2
put
refused "on-disk chunk size 0" "chunk size" "invalid on-disk chunk size 0"
mkcow "$COW_MAGIC" 1 1 4096
put
refused "on-disk chunk size 4096, bigger than the COW" "chunk size|too small|past the end" \
	"Failed to read snapshot metadata"

# The table's chunk size disagrees with the disk's.
mkcow "$COW_MAGIC" 1 1 $CS 5 2
data 2 3
put
if rdm_refuses "table chunk size 32, on disk 16" "chunk size" "$S $cow P 32"; then
	expect_match "$(klog_since_mark)" "chunk size 16 in device metadata overrides table chunk size of 32" \
		"dm-snapshot: the on-disk chunk size overrides the table's (logged)"
	expect_eq "$(dm table bad)" "0 $LEN snapshot $(devno "$VDA") $(devno "$cow") P $CS" \
		"dm-snapshot: the table line shows chunk $CS"
	cp $pat /tmp/p03.exp
	dd if=$mark of=/tmp/p03.exp bs=512 skip=$((3 * CS)) seek=$((5 * CS)) count=$CS conv=notrunc status=none
	expect_same "dm-snapshot: reads the exception in $CS-sector chunks" "$bad" /tmp/p03.exp
	dm_loaded_done "table chunk size 32, on disk 16"
fi

# Metadata entries pointing where no data chunk can be.
mkcow "$COW_MAGIC" 1 1 $CS 5 200
put
if rdm_refuses "new chunk 200, past the end of the COW (128 chunks)" "corrupt|past the end" "$S $cow P $CS"; then
	expect_eq "$(dm status bad)" "0 $LEN snapshot $((201 * CS))/$COWLEN $((2 * CS))" \
		"dm-snapshot: allocated past the COW's end in its status"
	expect_eio "dm-snapshot: reading the chunk mapped past the end" read1 "$bad" $((5 * CS))
	dm_loaded_done "new chunk past the end"
fi
mkcow "$COW_MAGIC" 1 1 $CS 5 $((0xffffffffffffffff))
put
if rdm_refuses "new chunk 2^64-1" "corrupt|past the end" "$S $cow P $CS"; then
	dm_loaded_done "new chunk 2^64-1"
fi
mkcow "$COW_MAGIC" 1 1 $CS 5 1
put
if rdm_refuses "new chunk 1 (metadata area 0)" "corrupt|metadata|past the end" "$S $cow P $CS"; then
	expect_eq "$(dm status bad)" "0 $LEN snapshot $((2 * CS))/$COWLEN $((2 * CS))" "dm-snapshot: status"
	cmp -s <(dread "$bad" $((5 * CS)) $CS) <(sect $img $CS $CS) ||
		fail "dm-snapshot: chunk 5 does not read metadata area 0"
	log "ok: dm-snapshot: chunk 5 of the snapshot reads metadata area 0 itself"
	dm_loaded_done "new chunk 1"
fi

# COW devices smaller than header + one area.
dm create cow-tiny --table "0 $CS linear $VDB 4096" || fail "create cow-tiny"
dd if=$zero of="$VDB" bs=512 seek=4096 count=$CS oflag=direct status=none
count=$(dev_count) refs=$(module_refs "$SNAP_MOD")
refused "a fresh COW of one chunk" "too small" "Failed to read snapshot metadata" "" \
	"$S $DEVDIR/cow-tiny P $CS"
dm remove cow-tiny || fail "remove cow-tiny"
dm create cow-short --table "0 $((CS * 3 / 2)) linear $VDB 8192" || fail "create cow-short"
mkcow "$COW_MAGIC" 1 1 $CS
put 8192
count=$(dev_count) refs=$(module_refs "$SNAP_MOD")
refused "a COW of 1.5 chunks with a valid header" "too small" "Failed to read snapshot metadata" \
	"$DEVDIR"/cow-short "$S $DEVDIR/cow-short P $CS" $((CS * 3 / 2))
dm remove cow-short || fail "remove cow-short"
count=$(dev_count) refs=$(module_refs "$SNAP_MOD")

# An old chunk far past the origin: harmless if loaded.
mkcow "$COW_MAGIC" 1 1 $CS $((1 << 62)) 2
put
klog_mark
if dm create bad --table "$S $cow P $CS" 2>/dev/null; then
	expect_eq "$(dm status bad)" "0 $LEN snapshot $((3 * CS))/$COWLEN $((2 * CS))" \
		"old chunk 2^62: loads, status"
	expect_same "old chunk 2^62: the snapshot reads the origin" "$bad" $pat
	dm remove bad || fail "remove"
	after "old chunk 2^62" "$cow"
else
	snap_ref && fail "dm-snapshot refused an old chunk past the origin"
	log "refused: old chunk 2^62: $(klog_since_mark | tr '\n' ' ')"
	after "old chunk 2^62" "$cow"
fi

# valid=0: loads as Invalid.
mkcow "$COW_MAGIC" 0 1 $CS 5 2
put
re="[Ii]nvalid"
snap_ref && re="Snapshot is marked invalid"
klog_mark
snap_take orig bad "$S $cow P $CS"
expect_match "$(klog_since_mark)" "$re" "valid=0: loaded and logged"
expect_eq "$(dm status bad)" "0 $LEN snapshot Invalid" "valid=0: Invalid"
expect_eio "valid=0: read" read1 "$bad" 0
dd if=$mark of="$orig" bs=512 count=$CS seek=$((6 * CS)) oflag=direct status=none || fail "origin write"
dd if=$mark of=$pat bs=512 count=$CS seek=$((6 * CS)) conv=notrunc status=none
log "ok: the origin takes a write beside an invalid snapshot"
snap_drop orig bad
after "valid=0" "$cow"

dm remove_all || fail "remove_all"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
