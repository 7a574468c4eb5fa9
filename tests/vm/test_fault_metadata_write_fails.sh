#!/usr/bin/env bash
# A persistent snapshot whose metadata write fails. Two P snapshots of one
# origin; after a first copy is committed in both, the metadata area of
# one COW device turns into rdm's error target (its table reloaded: the
# header chunk and the data chunks stay linear). The next origin write
# that needs a copy: the copies land, that snapshot's commit fails, so it
# goes Invalid (logged, event raised) and is marked invalid on disk
# (valid=0 in the header, which still works); the write itself succeeds;
# the other snapshot commits, stays valid and keeps the old data. Removed
# and loaded again, the failed one is Invalid; the module unloads (no
# commit left in flight).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
defer snap_cleanup
snap_ref && skip "rdm-only: uses rdm's error target under rdm's snapshots"
snap_load

LEN=8192
CS=16
pat=/tmp/fault03.pat new=/tmp/fault03.new exp=/tmp/fault03.exp
make_pattern $pat 4
make_pattern $new 4
cp $pat $exp

dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$DEVDIR"/orig bs=1M oflag=direct status=none || fail "stamp the pattern"
for c in cf cg; do
	d=$VDB
	[ $c = cg ] && d=$VDC
	dm create $c --table "0 $LEN linear $d 0" || fail "create $c"
	dd if=/dev/zero of="$DEVDIR"/$c bs=8k count=1 oflag=direct status=none || fail "zero $c"
done
snap_take orig sf "0 $LEN snapshot $VDA $DEVDIR/cf P $CS"
snap_take orig sg "0 $LEN snapshot $VDA $DEVDIR/cg P $CS"
dwrite $new $((5 * CS)) "$DEVDIR"/orig $((5 * CS)) $CS || fail "first origin write"
fput $new $((5 * CS)) $exp $((5 * CS)) $CS
for s in sf sg; do
	expect_eq "$(dm status $s)" "0 $LEN snapshot $((3 * CS))/$LEN $((2 * CS))" "$s: one exception"
done

# Area 0 of cf (its chunk 1) fails from now on.
dm load cf --table "0 $CS linear $VDB 0
$CS $CS error
$((2 * CS)) $((LEN - 2 * CS)) linear $VDB $((2 * CS))" || fail "load cf with a failing area"
dm suspend cf && dm resume cf || fail "swap cf's table"
ev=$(event_nr sf)
klog_mark
dwrite $new $((9 * CS)) "$DEVDIR"/orig $((9 * CS)) $CS || fail "the origin write whose commit fails in sf"
fput $new $((9 * CS)) $exp $((9 * CS)) $CS
log "ok: the origin write succeeded"
expect_eq "$(dm status sf)" "0 $LEN snapshot Invalid" "sf: Invalid"
expect_match "$(klog_since_mark)" "invalidated: I/O error writing the snapshot metadata" "sf: logged"
[ "$(event_nr sf)" -gt "$ev" ] || fail "sf: no event raised"
log "ok: sf: event raised"
expect_eq "$(cow_header "$DEVDIR"/cf)" "$COW_MAGIC 0 1 $CS" "sf: marked invalid on disk (valid=0)"
expect_eq "$(dm status sg)" "0 $LEN snapshot $((4 * CS))/$LEN $((2 * CS))" "sg: valid, two exceptions"
expect_same "sg: keeps the old data" "$DEVDIR"/sg $pat
expect_same "the origin has the new data" "$DEVDIR"/orig $exp
expect_eio "sf: a read fails" read1 "$DEVDIR"/sf 0

snap_drop orig sf
snap_drop orig sg
snap_take orig sf "0 $LEN snapshot $VDA $DEVDIR/cf P $CS"
snap_take orig sg "0 $LEN snapshot $VDA $DEVDIR/cg P $CS"
expect_eq "$(dm status sf)" "0 $LEN snapshot Invalid" "sf loaded again: Invalid"
expect_eq "$(dm status sg)" "0 $LEN snapshot $((4 * CS))/$LEN $((2 * CS))" "sg loaded again: two exceptions"
expect_same "sg loaded again: the old data" "$DEVDIR"/sg $pat
for d in sg sf orig cg cf; do dm remove $d || fail "remove $d"; done
rdm_unload
log "ok: rdm unloaded"
