#!/usr/bin/env bash
# Many snapshots. 16 snapshots of one origin (chunk 16), each with its own
# COW slice: after origin writes every one of them reads the old image, and
# an origin chunk needed by all 16 is read once from the origin disk, not
# 16 times (its sectors-read counter grows by about one chunk per written
# chunk). Then 100 snapshots at once over 5 origins (LVM's layout: a
# "-real" linear device under each snapshot-origin), each checked on a
# copied and an uncopied chunk, all removed cleanly.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDC"
defer snap_cleanup
snap_load
start_count=$(dev_count)

LEN=8192 # 4 MiB
CS=16
pat=/tmp/snap04.pat new=/tmp/snap04.new exp=/tmp/snap04.exp
make_pattern $pat 20
make_pattern $new 20
orig=$DEVDIR/orig

# --- 16 snapshots of one origin (the raw disk), COW slices of 2 MiB on vdc,
# all taken with one suspend of the origin.
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$orig" bs=1M count=4 oflag=direct status=none || fail "stamp the pattern"
dm suspend orig || fail "suspend the origin"
for i in $(seq 0 15); do
	dm create cow"$i" --table "0 4096 linear $VDC $((i * 4096))" || fail "create cow$i"
	dm create snap"$i" --table "0 $LEN snapshot $VDA $DEVDIR/cow$i N $CS" || fail "create snap$i"
done
dm resume orig || fail "resume the origin"
expect_eq "$(dm status | grep -c "^snap[0-9]*: 0 $LEN snapshot 0/4096 0$")" 16 "16 fresh snapshots"

mapfile -t chunks < <(shuf -i 0-$((LEN / CS - 1)) -n 24)
head -c $((LEN * 512)) $pat >$exp
before=$(sectors_read "$VDA")
for c in "${chunks[@]}"; do
	dwrite $new $((c * CS)) "$orig" $((c * CS)) $CS || fail "origin write to chunk $c"
done
read_sectors=$(($(sectors_read "$VDA") - before))
for c in "${chunks[@]}"; do fput $new $((c * CS)) $exp $((c * CS)) $CS; done
written=$((${#chunks[@]} * CS))
if snap_ref; then
	log "dm-snapshot read $read_sectors sectors from the origin disk for $written written with 16 snapshots (not checked)"
else
	[ $read_sectors -ge $written ] && [ $read_sectors -lt $((2 * written)) ] ||
		fail "origin disk: $read_sectors sectors read for $written sectors written with 16 snapshots (expected one chunk read per chunk)"
	log "ok: $read_sectors sectors read from the origin disk for $written written: one read per chunk for 16 snapshots"
fi
expect_same "the origin reads the new image" "$orig" $exp
for i in $(seq 0 15); do
	expect_same "snapshot $i reads the old image" "$DEVDIR"/snap"$i" $pat $LEN
done
expect_eq "$(dm status | grep -c "^snap[0-9]*: 0 $LEN snapshot $written/4096 0$")" 16 \
	"every snapshot has ${#chunks[@]} chunks allocated"
dm suspend orig || fail "suspend the origin"
for i in $(seq 0 15); do dm remove snap"$i" || fail "remove snap$i"; done
dm resume orig || fail "resume the origin"
dm remove orig || fail "remove the origin"
dm remove_all || fail "remove_all (the COW slices)"
expect_eq "$(dev_count)" "$start_count" "16 snapshots removed"

# --- 100 snapshots: 5 origins of 4 MiB (base$k: linear slices of vda
# under snapshot-origin o$k), 20 snapshots each with COW slices of 2 MiB on
# vdc. One worker per origin, the 5 at once (which also makes it faster:
# each tool run costs ~0.3 s under TCG). Chunks 0..19 of every origin are
# rewritten by one write, copied to its 20 snapshots; every snapshot then
# reads the old data over chunks 0..39 (20 copied, 20 never written).
OL=8192
parallel() { # parallel FUNCTION: runs FUNCTION K for K = 0..4 at once
	local k pids=()
	for k in 0 1 2 3 4; do
		"$1" $k &
		pids+=($!)
	done
	for k in "${pids[@]}"; do wait "$k" || exit "$KSFT_FAIL"; done
}
make_origin() {
	local k=$1 j
	dm create base"$k" --table "0 $OL linear $VDA $((k * OL))" || fail "create base$k"
	dm create o"$k" --table "0 $OL snapshot-origin $DEVDIR/base$k" || fail "create o$k"
	dd if="$pat" of="$DEVDIR"/o"$k" bs=1M skip=$((k * 4)) count=4 oflag=direct status=none ||
		fail "stamp o$k"
	dm suspend o"$k" || fail "suspend o$k"
	for j in $(seq 0 19); do
		dm create cow-"$k"-"$j" --table "0 4096 linear $VDC $(((k * 20 + j) * 4096))" ||
			fail "create cow-$k-$j"
		dm create s-"$k"-"$j" --table "0 $OL snapshot $DEVDIR/base$k $DEVDIR/cow-$k-$j N $CS" ||
			fail "create snapshot s-$k-$j"
	done
	dm resume o"$k" || fail "resume o$k"
}
write_and_check() {
	local k=$1 j
	dwrite "$new" $((k * OL)) "$DEVDIR"/o"$k" 0 $((20 * CS)) || fail "write chunks 0..19 of o$k"
	expect_same "o$k reads the new chunks" "$DEVDIR"/o"$k" "$new" $((20 * CS)) 0 $((k * OL))
	expect_same "o$k reads the old data past them" "$DEVDIR"/o"$k" "$pat" $((OL - 20 * CS)) \
		$((20 * CS)) $((k * OL + 20 * CS))
	for j in $(seq 0 19); do
		expect_same "s-$k-$j reads the old data" "$DEVDIR"/s-"$k"-"$j" "$pat" $((40 * CS)) 0 $((k * OL)) |
			grep -v '^# ok' # only failures: 100 of these
		[ "${PIPESTATUS[0]}" -eq 0 ] || exit "$KSFT_FAIL"
	done
}
drop_snapshots() {
	local k=$1 j
	dm suspend o"$k" || fail "suspend o$k"
	for j in $(seq 0 19); do dm remove s-"$k"-"$j" || fail "remove s-$k-$j"; done
	dm resume o"$k" || fail "resume o$k"
	dm remove o"$k" || fail "remove o$k"
}
parallel make_origin
expect_eq "$(dm status | grep -c "^s-[0-9]*-[0-9]*: 0 $OL snapshot 0/4096 0$")" 100 "100 snapshots"
expect_eq "$(dev_count)" $((start_count + 5 + 5 + 100 + 100)) "210 devices"
parallel write_and_check
log "ok: each of the 100 snapshots reads the old data (20 copied and 20 uncopied chunks)"
expect_eq "$(dm status | grep -c "^s-[0-9]*-[0-9]*: 0 $OL snapshot $((20 * CS))/4096 0$")" 100 \
	"every snapshot has 20 chunks allocated"
parallel drop_snapshots
expect_eq "$(dev_count)" $((start_count + 5 + 100)) "snapshots and origins removed"
dm remove_all || fail "remove_all (the COW slices and the bases)"
expect_eq "$(dev_count)" "$start_count" "all 210 devices removed"
exit "$KSFT_PASS"
