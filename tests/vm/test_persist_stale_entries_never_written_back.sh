#!/usr/bin/env bash
# Stale entries after the end of the exception list are never written
# back. mkcow.py builds a COW image (chunk 8, 300 exceptions: area 0 full,
# area 1 holding 44) whose last area has, after the zero entry that ends
# the list, 40 stale entries with their data chunks — what a crash in the
# middle of a write of a longer list leaves behind. The snapshot loads
# with exactly the 300 exceptions; 16 origin writes to chunks without one
# add 16 exceptions (entries 300..315 of the list, in the area the stale
# entries sit in, reaching past the first 15 of them but not the last
# 25); the snapshot keeps the old data. After the snapshot is removed, the
# COW device holds exactly the 316 expected exceptions (mkcow.py check
# --olds) and, loaded again, the snapshot has the status line of 316
# exceptions, holds the old data of the written chunks and the origin's
# data where the stale entries pointed.
#
# The kernel's dm-snapshot has the same weakness (dm-snap-persistent.c
# read_exceptions() keeps the last area as read, stale entries included,
# and every commit writes that image out whole): on dm the last 25 stale
# entries come back as exceptions at the second load. The checks after
# the removal are therefore made on rdm only; on dm the test only logs
# what it finds.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
PY=$(command -v /usr/bin/python3 || command -v python3) || skip "python3 is not available"
MKCOW="$PY $RDM_TOP/tests/vm/mkcow.py"

C=8 N=300 S=40 M=16 CHUNKS=4096
LEN=$((CHUNKS * C)) # 16 MiB of origin
EPA=$((C * 512 / 16))
T=$(disk_sectors "$VDB")
geom=(--chunk "$C" --count "$N" --origin-chunks "$CHUNKS")
tmp=/tmp/persist07
$MKCOW olds "${geom[@]}" --from 0 --to $N >$tmp.live || fail "mkcow olds"
$MKCOW olds "${geom[@]}" --from $((N + 1)) --to $((N + 1 + S)) >$tmp.stale || fail "mkcow olds"
$MKCOW olds "${geom[@]}" --from $((N + 1 + S)) --to $((N + 1 + S + M)) >$tmp.written || fail "mkcow olds"
cat $tmp.live $tmp.written >$tmp.expected
# pstatus K: dm's status line for K exceptions allocated in order.
pstatus() { echo "0 $LEN snapshot $(((2 + $1 + $1 / EPA) * C))/$T $(((2 + $1 / EPA) * C))"; }

scenario() {
	local out c
	$MKCOW origin "$VDA" --chunk "$C" --chunks "$CHUNKS" >/dev/null || fail "stamp the origin"
	out=$($MKCOW make "$VDB" "${geom[@]}" --stale "$S") || fail "mkcow make: $out"
	log "$out"
	dm create porig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
	snap_take porig psnap "0 $LEN snapshot $VDA $VDB P $C"
	expect_eq "$(dm status psnap)" "$(pstatus "$N")" "$IMPL: loaded with the $N exceptions before the end, none of the $S stale ones"
	out=$($MKCOW expect "$DEVDIR"/psnap --chunk "$C" --tag origin "$tmp".stale) ||
		fail "$IMPL: a stale entry was loaded: $out"
	log "ok: $IMPL: $out (stale entries)"
	out=$($MKCOW sample "$DEVDIR"/psnap "${geom[@]}" --samples 60) || fail "$IMPL: samples: $out"
	log "ok: $IMPL: $out"
	while read -r c; do
		dwrite /dev/urandom 0 "$DEVDIR"/porig $((c * C)) "$C" || fail "origin write to chunk $c"
	done <"$tmp".written
	expect_eq "$(dm status psnap)" "$(pstatus $((N + M)))" "$IMPL: $M origin writes added $M exceptions"
	out=$($MKCOW expect "$DEVDIR"/psnap --chunk "$C" --tag origin "$tmp".written) ||
		fail "$IMPL: the snapshot lost the old data of a written chunk: $out"
	log "ok: $IMPL: $out (written chunks: the old data)"
	snap_drop porig psnap
	out=$($MKCOW check "$VDB" --olds "$tmp".expected 2>&1)
	if [ "$IMPL" = dm ]; then
		# dm-snapshot writes the stale entries back (see the header).
		log "dm-snapshot: the COW device after the commits: $out"
	else
		expect_match "$out" "exceptions=$((N + M)) .*olds=ok" \
			"$IMPL: the COW device holds exactly the $((N + M)) expected exceptions"
	fi
	snap_take porig psnap "0 $LEN snapshot $VDA $VDB P 0"
	if [ "$IMPL" = dm ]; then
		log "dm-snapshot: loaded again: status '$(dm status psnap)' (expected without the stale entries: '$(pstatus $((N + M)))')"
	else
		expect_eq "$(dm status psnap)" "$(pstatus $((N + M)))" "$IMPL: loaded again: the status line of $((N + M)) exceptions"
		out=$($MKCOW expect "$DEVDIR"/psnap --chunk "$C" --tag origin "$tmp".stale) ||
			fail "$IMPL: a stale entry came back as an exception: $out"
		log "ok: $IMPL: $out (stale entries, after the reload)"
	fi
	out=$($MKCOW expect "$DEVDIR"/psnap --chunk "$C" --tag origin "$tmp".written) ||
		fail "$IMPL: after the reload, the snapshot lost the old data of a written chunk: $out"
	log "ok: $IMPL: $out (written chunks, after the reload)"
	out=$($MKCOW expect "$DEVDIR"/psnap --chunk "$C" --tag cow "$tmp".live) ||
		fail "$IMPL: after the reload, an exception of the image lost its data: $out"
	log "ok: $IMPL: $out (the image's exceptions, after the reload)"
	snap_drop porig psnap
	dm remove porig || fail "remove the origin"
}

run_both scenario
exit "$KSFT_PASS"
