#!/usr/bin/env bash
# A flush with data (REQ_PREFLUSH) on a table of two devices: the empty
# flushes go to every device first, and the data only once they have all
# completed (as dm does), so a write completed before the flagged bio is
# durable before the flagged data is written, on whichever device it sits.
# (Run against the kernel's dm first, then rdm.)
#
# The flagged bio is a persistent snapshot's metadata commit (a write with
# PREFLUSH|FUA to its COW device), the COW device a two-target linear
# device: chunks 0-2 (header, first metadata area, first data chunk) on
# disk M ($VDC), the rest on D, a linear device over $VDD that is
# suspended with --noflush, so D's flush is held. A write to the origin
# copies chunk 0 to the COW's chunk 2 (on M), then commits: the metadata
# area (chunk 1, on M) must not be written while D's flush is held (rdm
# used to send the data alongside the flushes), and the origin write must
# not complete. Resuming D lets the commit through.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDC" "$VDD"
for d in $VDC $VDD; do
	[ "$(cat /sys/block/"${d##*/}"/queue/write_cache)" = "write back" ] ||
		skip "${d##*/} has no volatile write cache: the block layer drops flushes"
done

LEN=8192 CS=8 COWLEN=65536
# meta: the first metadata entry {old, new} of the COW on M (chunk 1).
meta() { dread "$VDC" "$CS" 1 | od -An -tu8 -N16 | xargs; }
# copied: whether chunk 2 (the first data chunk) on M holds data.
copied() { [ -n "$(dread "$VDC" $((2 * CS)) "$CS" | tr -d '\0' | head -c1)" ]; }

flush_before_data() {
	local io _
	dd if=/dev/zero of="$VDC" bs=512 count=$((3 * CS)) oflag=direct status=none || fail "zero M"
	dd if=/dev/urandom of="$VDA" bs=4k count=1 oflag=direct status=none || fail "stamp the origin"
	dm create d13 --table "0 $((COWLEN - 3 * CS)) linear $VDD 0" || fail "create d13"
	dm create cow13 --table "0 $((3 * CS)) linear $VDC 0
$((3 * CS)) $((COWLEN - 3 * CS)) linear $DEVDIR/d13 0" || fail "create cow13"
	dm create org13 --table "0 $LEN snapshot-origin $VDA" || fail "create org13"
	snap_take org13 snap13 "0 $LEN snapshot $VDA $DEVDIR/cow13 P $CS"
	expect_eq "$(meta)" "0 0" "no exception recorded yet"
	dm suspend --noflush d13 || fail "suspend --noflush d13"
	bad() {
		dm resume d13
		wait
		fail "$*"
	}
	dd if=/dev/urandom of="$DEVDIR"/org13 bs=4k count=1 oflag=direct status=none &
	io=$!
	for _ in $(seq 1 100); do
		copied && break
		sleep 0.1
	done
	copied || bad "the copy of chunk 0 did not reach M within 10 s"
	log "ok: chunk 0 copied to the COW (on M)"
	# The commit's flush to D is held: give its data time to go wrongly.
	sleep 3
	[ "$(meta)" = "0 0" ] ||
		bad "the metadata commit was written to M ($(meta)) while D's cache flush was held"
	log "ok: no metadata write while D's flush is held"
	kill -0 "$io" 2>/dev/null || bad "the origin write completed before its exception was committed"
	log "ok: the origin write waits for the commit"
	dm resume d13 || fail "resume d13"
	wait "$io" || fail "the origin write failed"
	expect_eq "$(meta)" "0 2" "committed once D's flush went through: chunk 0 -> chunk 2"
	snap_drop org13 snap13
	dm remove org13 && dm remove cow13 && dm remove d13 || fail "remove the devices"
}
run_both flush_before_data
exit "$KSFT_PASS"
