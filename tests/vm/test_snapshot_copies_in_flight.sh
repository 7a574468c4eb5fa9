#!/usr/bin/env bash
# Copies in flight, made visible with rdm's module parameters
# copy_delay_ms=3000 (each copy is held that long after it is queued
# before the origin chunk is read) and cow_threshold=2 (at most 2 copies
# in progress; a writer needing a new copy beyond that waits, a write to a
# chunk already copied never does). Timing is only compared with the delay
# or by ordering, never with a wall-clock bound of its own.
#  a) 8 concurrent one-sector writers to the same origin chunk: one copy
#     (one chunk allocated), and they all wait for it (>= the delay).
#  b) a snapshot read of a chunk whose copy is in flight reads the old data.
#  c) 2 writes needing copies hold both slots, a 3rd one needing a copy
#     waits for a slot, and meanwhile a write to a chunk copied before
#     completes: all 3 are still running when it does; the last of the 3
#     completes >= 2 delays after they started, the first two < 2 delays
#     (their copies are delayed side by side).
# The parameters are set back to 0 and 2048 at the end.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
defer snap_cleanup
LEN=16384
CS=8
pat=/tmp/snap03.pat new=/tmp/snap03.new new2=/tmp/snap03.new2
make_pattern $pat 8
make_pattern $new 8
make_pattern $new2 8

msleep() { sleep "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"; }
# copy_delay: 3000 ms, or 10 times the slowest of 3 one-chunk writes (the
# cost of starting a writer here) if that is more.
copy_delay() {
	local i t0 took slowest=0
	for i in 1 2 3; do
		t0=$(now_ms)
		dwrite $new 0 "$VDA" $((i * CS)) $CS || fail "timed write $i"
		took=$(($(now_ms) - t0))
		[ $took -gt $slowest ] && slowest=$took
	done
	echo $((slowest * 10 > 3000 ? slowest * 10 : 3000))
}
DELAY=$(copy_delay) || fail "the timed writes failed"
log "copy delay $DELAY ms"
if snap_ref; then
	snap_load
	DELAY=0
	log "dm-snapshot has no copy delay: timing checks and part c are skipped"
else
	snap_load copy_delay_ms="$DELAY" cow_threshold=2
	PARAMS=/sys/module/$SNAP_MOD/parameters
	expect_eq "$(cat "$PARAMS"/copy_delay_ms)" "$DELAY" "copy_delay_ms given at load"
	expect_eq "$(cat "$PARAMS"/cow_threshold)" 2 "cow_threshold given at load"
fi

orig=$DEVDIR/orig snap=$DEVDIR/snap
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
snap_take orig snap "0 $LEN snapshot $VDA $VDB N $CS"

# a) 8 writers, sector i of chunk C each.
C=5
t0=$(now_ms)
pids=()
for i in $(seq 0 7); do
	dwrite $new $((C * CS + i)) "$orig" $((C * CS + i)) 1 &
	pids+=($!)
done
defer stop_pids "${pids[@]}"
for p in "${pids[@]}"; do wait "$p" || fail "a writer to chunk $C failed"; done
took=$(($(now_ms) - t0))
expect_eq "$(snap_alloc snap)" $CS "8 concurrent writers to one chunk: one chunk allocated"
expect_same "the snapshot keeps the old chunk" "$snap" $pat $CS $((C * CS)) $((C * CS))
expect_same "the origin has all 8 new sectors" "$orig" $new $CS $((C * CS)) $((C * CS))
if [ "$DELAY" -gt 0 ]; then
	[ $took -ge "$DELAY" ] || fail "the writers were done after $took ms, before the copy delay ($DELAY ms)"
	log "ok: the writers waited for the copy ($took ms >= $DELAY ms)"
fi

# b) Read the snapshot's chunk D while the origin write's copy is held.
D=9
dwrite $new $((D * CS)) "$orig" $((D * CS)) $CS &
wpid=$!
if [ "$DELAY" -gt 0 ]; then
	msleep $((DELAY / 3))
	kill -0 $wpid 2>/dev/null || fail "the origin write was done within $((DELAY / 3)) ms: the copy was not held"
fi
dread "$snap" $((D * CS)) $CS >/tmp/snap03.read || fail "snapshot read of a chunk being copied"
wait $wpid || fail "the origin write to chunk $D failed"
cmp -n $((CS * 512)) -i 0:$((D * CS * 512)) /tmp/snap03.read $pat ||
	fail "the snapshot read of a chunk being copied did not return the old data"
log "ok: a snapshot read during the copy returned the old data"
expect_same "the snapshot keeps chunk $D" "$snap" $pat $CS $((D * CS)) $((D * CS))
expect_same "the origin has the new chunk $D" "$orig" $new $CS $((D * CS)) $((D * CS))
expect_eq "$(snap_alloc snap)" $((2 * CS)) "two chunks allocated"

if [ "$DELAY" -gt 0 ]; then
	# c) E is copied first; then F and G take both slots, H waits for one.
	E=20 F=30 G=31 H=32
	dwrite $new $((E * CS)) "$orig" $((E * CS)) $CS || fail "write to chunk $E"
	rm -f /tmp/snap03.done.*
	start=$(now_ms)
	timed() { # timed CHUNK: origin write, then its completion time in a file
		dwrite $new $(($1 * CS)) "$orig" $(($1 * CS)) $CS && now_ms >/tmp/snap03.done."$1"
	}
	timed $F &
	fpid=$!
	timed $G &
	gpid=$!
	msleep $((DELAY / 3))
	timed $H &
	hpid=$!
	msleep $((DELAY / 6))
	dwrite $new2 $((E * CS)) "$orig" $((E * CS)) $CS || fail "write to the copied chunk $E"
	fast=$(($(now_ms) - start))
	for p in $fpid $gpid $hpid; do
		kill -0 "$p" 2>/dev/null ||
			fail "a write needing a copy was done before the write to a copied chunk ($fast ms)"
	done
	log "ok: a write to a copied chunk was done ($fast ms) while 2 copies held both slots and a 3rd waited"
	wait $fpid && wait $gpid && wait $hpid || fail "a saturating write failed"
	mapfile -t done_at < <(cat /tmp/snap03.done.$F /tmp/snap03.done.$G /tmp/snap03.done.$H | sort -n)
	first=$((done_at[1] - start)) last=$((done_at[2] - start))
	[ $last -ge $((2 * DELAY)) ] ||
		fail "the 3rd copy did not wait for a slot: all 3 writes done within $last ms (< 2 x $DELAY)"
	log "ok: the 3rd copy waited for a slot: done after $last ms (>= 2 x $DELAY)"
	[ $first -lt $((2 * DELAY)) ] ||
		fail "the first 2 copies took $first ms (>= 2 x $DELAY): delayed one after the other"
	log "ok: the first 2 copies were delayed side by side: both done after $first ms"
	expect_eq "$(snap_alloc snap)" $((6 * CS)) "six chunks allocated"
	for c in $E $F $G $H; do
		expect_same "the snapshot keeps chunk $c" "$snap" $pat $CS $((c * CS)) $((c * CS))
	done
	expect_same "the origin has the rewritten chunk $E" "$orig" $new2 $CS $((E * CS)) $((E * CS))
	expect_same "the origin has the new chunk $H" "$orig" $new $CS $((H * CS)) $((H * CS))

	echo 0 >"$PARAMS"/copy_delay_ms && echo 2048 >"$PARAMS"/cow_threshold || fail "write the parameters"
	expect_eq "$(cat "$PARAMS"/copy_delay_ms)/$(cat "$PARAMS"/cow_threshold)" 0/2048 "parameters back to 0 and 2048"
	# Copies are immediate again.
	t0=$(now_ms)
	dwrite $new $((40 * CS)) "$orig" $((40 * CS)) $CS || fail "write after resetting the delay"
	took=$(($(now_ms) - t0))
	[ $took -lt "$DELAY" ] || fail "a copy still took $took ms after copy_delay_ms=0"
	log "ok: with copy_delay_ms=0 a copy took $took ms"
fi

snap_drop orig snap
dm remove orig || fail "remove the origin"
exit "$KSFT_PASS"
