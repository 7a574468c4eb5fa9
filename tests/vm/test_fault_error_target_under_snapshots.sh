#!/usr/bin/env bash
# Fault injection with rdm's own error target. (1) The COW device of one of
# two snapshots starts failing (its linear table is swapped for `error`):
# the next origin write that needs a copy invalidates that snapshot only
# (status Invalid, event raised, logged); the write itself succeeds; the
# other snapshot, which got the same copy, keeps the old data, and the
# origin the new. (2) The origin's own device fails: origin writes and
# reads return EIO to the caller, the copy's failed origin read
# invalidates the snapshots, nothing hangs, and everything is removed
# cleanly after the device is healed. (3) remove_all removes stacked
# devices in an order that works.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
defer snap_cleanup
snap_load
snap_ref && skip "rdm-only: uses rdm's error target under rdm's snapshots"

LEN=8192
CS=16
pat=/tmp/fault01.pat new=/tmp/fault01.new exp=/tmp/fault01.exp
make_pattern $pat 4
make_pattern $new 4
cp $pat $exp

# (1) A failing COW device.
dm create cowa --table "0 $LEN linear $VDB 0" || fail "create cowa"
dm create cowb --table "0 $LEN linear $VDC 0" || fail "create cowb"
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$DEVDIR"/orig bs=1M oflag=direct status=none || fail "stamp the pattern"
snap_take orig sa "0 $LEN snapshot $VDA $DEVDIR/cowa N $CS"
snap_take orig sb "0 $LEN snapshot $VDA $DEVDIR/cowb N $CS"
dwrite $new 0 "$DEVDIR"/orig 0 $CS || fail "first origin write"
fput $new 0 $exp 0 $CS
expect_eq "$(snap_alloc sa)/$(snap_alloc sb)" "$CS/$CS" "both snapshots copied the first chunk"

ev=$(event_nr sa)
dm load cowa --table "0 $LEN error" && dm suspend cowa && dm resume cowa || fail "make cowa fail"
klog_mark
dwrite $new $((10 * CS)) "$DEVDIR"/orig $((10 * CS)) $CS ||
	fail "an origin write failed because a snapshot's COW device did"
fput $new $((10 * CS)) $exp $((10 * CS)) $CS
log "ok: the origin write succeeded though one COW device fails"
expect_match "$(dm status sa)" "snapshot Invalid$" "the snapshot on the failing COW is Invalid"
expect_match "$(klog_since_mark)" "invalidated: I/O error writing the COW device" "the invalidation is logged"
[ "$(event_nr sa)" -gt "$ev" ] || fail "no event on the invalidated snapshot"
log "ok: the invalidation raised an event"
expect_match "$(dm status sb)" "snapshot $((2 * CS))/" "the other snapshot is valid, with both chunks"
expect_same "the other snapshot keeps the old data" "$DEVDIR"/sb $pat
expect_same "the origin has the new data" "$DEVDIR"/orig $exp
if dread "$DEVDIR"/sa 0 8 >/dev/null 2>&1; then
	fail "a read of the invalid snapshot succeeded"
fi
log "ok: the invalid snapshot's I/O fails"
dwrite $new $((20 * CS)) "$DEVDIR"/orig $((20 * CS)) $CS || fail "origin write after the invalidation"
fput $new $((20 * CS)) $exp $((20 * CS)) $CS
expect_same "the other snapshot still keeps the old data" "$DEVDIR"/sb $pat
expect_same "the origin has all the new data" "$DEVDIR"/orig $exp
snap_drop orig sa
snap_drop orig sb
dm remove orig && dm remove cowa && dm remove cowb || fail "remove (1)"

# (2) A failing origin device (an rdm linear device under the origin).
dm create obase --table "0 $LEN linear $VDA 0" || fail "create obase"
dm create orig --table "0 $LEN snapshot-origin $DEVDIR/obase" || fail "create the origin over obase"
snap_take orig sc "0 $LEN snapshot $DEVDIR/obase $VDC N $CS"
dm load obase --table "0 $LEN error" && dm suspend obase && dm resume obase || fail "make obase fail"
if dwrite $new $((30 * CS)) "$DEVDIR"/orig $((30 * CS)) $CS 2>/dev/null; then
	fail "an origin write to a failing device succeeded"
fi
log "ok: an origin write to a failing device returns an I/O error"
if dread "$DEVDIR"/orig 0 8 >/dev/null 2>&1; then
	fail "an origin read from a failing device succeeded"
fi
log "ok: an origin read from a failing device returns an I/O error"
expect_match "$(dm status sc)" "snapshot Invalid$" "a failed origin read during a copy invalidates the snapshot"
dm load obase --table "0 $LEN linear $VDA 0" && dm suspend obase && dm resume obase || fail "heal obase"
dwrite $new $((40 * CS)) "$DEVDIR"/orig $((40 * CS)) $CS || fail "origin write after healing"
log "ok: the healed origin takes writes again"

# (3) remove_all with stacked devices (a COW device is open while its
# snapshot exists): it goes round until everything is gone.
dm create c1 --table "0 $LEN linear $VDB 0" || fail "create c1"
snap_take orig s1 "0 $LEN snapshot $DEVDIR/obase $DEVDIR/c1 N $CS"
dm remove_all || fail "remove_all"
expect_eq "$(dev_count)" 0 "remove_all removed stacked devices (snapshots before their COW and origin devices)"
exit "$KSFT_PASS"
