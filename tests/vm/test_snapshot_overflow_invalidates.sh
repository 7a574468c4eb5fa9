#!/usr/bin/env bash
# Overflow. A snapshot whose COW holds 16 chunks (64 KiB, chunk 8) beside
# a big one: origin writes to 16 distinct chunks fill it exactly (still
# valid, 128/128); the 17th makes it Invalid: its status says so, its reads
# and writes fail with EIO, its event number rose (a waiter on it wakes),
# while every origin write succeeds and the origin, and the big snapshot,
# keep correct data. Then a snapshot overflowed by writes to itself: the
# write that does not fit fails, the snapshot is Invalid, the origin and
# the big snapshot are untouched. Invalid snapshots are removed normally.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
defer snap_cleanup
snap_load

LEN=16384
CS=8
pat=/tmp/snap05.pat new=/tmp/snap05.new new2=/tmp/snap05.new2 exp=/tmp/snap05.exp
make_pattern $pat 8
make_pattern $new 8
make_pattern $new2 8
orig=$DEVDIR/orig small=$DEVDIR/small big=$DEVDIR/big
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
cp $pat $exp
dm create cow-small --table "0 128 linear $VDB 0" || fail "create cow-small"
snap_take orig small "0 $LEN snapshot $VDA $DEVDIR/cow-small N $CS"
snap_take orig big "0 $LEN snapshot $VDA $VDC N $CS"
big_total=$(disk_sectors "$VDC")
expect_eq "$(dm status small)" "0 $LEN snapshot 0/128 0" "small snapshot: 0 of 128 sectors"

ev=$(event_nr small)
timeout 60 "$DM_TOOL" wait small "$ev" >/dev/null &
wait_pid=$!
owrite() { # owrite CHUNK: a whole new chunk through the origin
	dwrite $new $(($1 * CS)) "$orig" $(($1 * CS)) $CS || fail "origin write to chunk $1 failed"
	fput $new $(($1 * CS)) $exp $(($1 * CS)) $CS
}
for c in $(seq 0 15); do owrite $((c * 3)); done
expect_eq "$(dm status small)" "0 $LEN snapshot 128/128 0" "16 chunks fill the small snapshot exactly"
expect_same "the full snapshot still reads the old data" "$small" $pat
kill -0 $wait_pid 2>/dev/null || fail "an event before the snapshot overflowed"
klog_mark
owrite 100
log "ok: the origin write that overflows the small snapshot succeeded"
expect_eq "$(dm status small)" "0 $LEN snapshot Invalid" "the small snapshot is Invalid"
expect_match "$(event_nr small)" "^[0-9]+$" "event number readable"
[ "$(event_nr small)" -gt "$ev" ] || fail "the event number did not rise on overflow ($ev -> $(event_nr small))"
log "ok: the event number rose on overflow ($ev -> $(event_nr small))"
wait $wait_pid || fail "'$DM_TOOL wait small $ev' did not return on the overflow event"
log "ok: a waiter on the event woke up"
log "kernel log of the overflow: $(klog_since_mark | tr '\n' ' ')"
for c in $(seq 101 107); do owrite "$c"; done
log "ok: 7 more origin writes after the overflow succeeded"
for s in 0 800 $((100 * CS)); do
	if out=$(dd if="$small" of=/dev/null bs=4k count=1 skip=$((s / 8)) iflag=direct 2>&1); then
		fail "read of the invalid snapshot at sector $s succeeded"
	fi
	expect_match "$out" "Input/output error" "reading the invalid snapshot at sector $s fails with EIO"
done
if out=$(dwrite $new2 0 "$small" 0 $CS 2>&1); then fail "write to the invalid snapshot succeeded"; fi
expect_match "$out" "Input/output error" "writing the invalid snapshot fails with EIO"

expect_same "the origin reads all its writes" "$orig" $exp
expect_same "the big snapshot keeps the old data" "$big" $pat
expect_eq "$(dm status big)" "0 $LEN snapshot $((24 * CS))/$big_total 0" "the big snapshot has 24 chunks"
snap_drop orig small
dm remove cow-small || fail "remove cow-small"
log "ok: the invalid snapshot was removed"

# A snapshot overflowed by its own writes: 16 chunks fit, the 17th fails.
dm create cow-self --table "0 128 linear $VDB 1024" || fail "create cow-self"
snap_take orig self "0 $LEN snapshot $VDA $DEVDIR/cow-self N $CS"
cp $exp /tmp/snap05.self
for c in $(seq 0 15); do
	dwrite $new2 $((c * 5 * CS + 1)) "$DEVDIR"/self $((c * 5 * CS + 1)) 2 ||
		fail "write $c to the snapshot (it fits)"
	fput $new2 $((c * 5 * CS + 1)) /tmp/snap05.self $((c * 5 * CS + 1)) 2
done
expect_eq "$(dm status self)" "0 $LEN snapshot 128/128 0" "16 chunks written to the snapshot fill it"
expect_same "the full snapshot reads its writes" "$DEVDIR"/self /tmp/snap05.self
ev=$(event_nr self)
if out=$(dwrite $new2 $((200 * CS)) "$DEVDIR"/self $((200 * CS)) $CS 2>&1); then
	fail "a snapshot write past its COW's end succeeded"
fi
expect_match "$out" "Input/output error" "the snapshot write that does not fit fails with EIO"
expect_eq "$(dm status self)" "0 $LEN snapshot Invalid" "that snapshot is Invalid"
[ "$(event_nr self)" -gt "$ev" ] || fail "no event when a snapshot write overflowed it"
expect_same "the origin is untouched" "$orig" $exp
expect_same "the big snapshot is untouched" "$big" $pat
owrite 300
expect_same "the origin still takes writes" "$orig" $exp
expect_same "the big snapshot still keeps the old data" "$big" $pat
snap_drop orig self
snap_drop orig big
dm remove_all || fail "remove_all"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
