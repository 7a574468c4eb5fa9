#!/usr/bin/env bash
# Activation of a persistent snapshot with 100,000 exceptions, and reading
# its metadata off the control path. mkcow.py writes a dm-snapshot COW
# image (chunk 2 sectors: 64 entries per area, 1563 metadata areas, the
# last one partial) mapping 100,000 origin chunks, strided over 128 MiB
# of origin, to data chunks that each hold a word naming their origin
# chunk; the origin holds words naming its own chunks. Creating the
# snapshot (table chunk 0: the size comes from the header) is timed
# ("activation of N exceptions: X ms"); its table line shows chunk 2, its
# status the allocated and metadata sectors computed for the image (by
# mkcow, and by dm's formula here); sampled chunks read the COW data where
# there is an exception and the origin's elsewhere.
# Then the COW device sits behind a suspended linear device and a create
# of the snapshot over it runs in the background, blocked reading the
# metadata: meanwhile ls, info/status/table of another device, create and
# remove of an unrelated device, and I/O to another device all complete
# (each within a bounded time: a hang fails the test instead of blocking
# it), and the create is still running; after resuming the COW device the
# create completes and the snapshot is correct. Last, an image whose last
# area is exactly full (128 exceptions), written over the big one: the
# zeroed area after it ends the list, the stale entries behind it are
# ignored.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
PY=$(command -v /usr/bin/python3 || command -v python3) || skip "python3 is not available"
MKCOW="$PY $RDM_TOP/tests/vm/mkcow.py"
cpid=
unblock() { # lets anything waiting on the suspended devices go on
	local d
	for d in cowlin porig; do
		"$DM_TOOL" resume $d >/dev/null 2>&1 &
	done
}
cleanup() {
	if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then
		unblock
		sleep 2
	fi
	snap_cleanup
}
defer cleanup
snap_load

N=100000 C=2 M=131072
LEN=$((M * C)) # 128 MiB of origin
EPA=$((C * 512 / 16))
T=$(disk_sectors "$VDB")
out=/tmp/persist04.out

# usecs: $EPOCHREALTIME in microseconds (a builtin: no process to start).
usecs() { echo "${EPOCHREALTIME/./}"; }
# wait_end PID SECS: waits until PID has ended, at most SECS seconds of
# wall time; false if it still runs.
wait_end() {
	local deadline=$((SECONDS + $2))
	while kill -0 "$1" 2>/dev/null; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}
# bounded SECS WHAT COMMAND...: runs COMMAND (its output in $BOUT, the
# time it took in $BMS milliseconds); fails if it has not ended after SECS
# seconds (after letting the suspended devices go, so that the hang ends
# too).
bounded() {
	local secs=$1 what=$2 p rc
	shift 2
	{
		s=$(usecs)
		"$@"
		rc=$?
		echo $((($(usecs) - s) / 1000)) >$out.ms
		exit $rc
	} >$out 2>&1 &
	p=$!
	if ! wait_end $p "$secs"; then
		unblock
		fail "$what did not complete within ${secs}s"
	fi
	wait $p
	rc=$?
	BOUT=$(cat $out)
	read -r BMS <$out.ms
	return $rc
}

t0=$(now_ms)
$MKCOW origin "$VDA" --chunk $C --chunks $M || fail "stamp the origin"
mk=$($MKCOW make "$VDB" --chunk $C --count $N --origin-chunks $M) || fail "mkcow make: $mk"
log "$mk"
log "writing origin and COW image took $(($(now_ms) - t0)) ms"
ALLOC=$((2 + N + N / EPA)) META=$((2 + N / EPA)) # chunks: header, areas, data
expect_match "$mk" "exceptions=$N .*allocated=$((ALLOC * C)) metadata=$((META * C)) " \
	"mkcow's figures agree with dm's formula: $((ALLOC * C)) sectors allocated, $((META * C)) of metadata"
EXP_STATUS="0 $LEN snapshot $((ALLOC * C))/$T $((META * C))"
sample() { # sample DEV WHAT [MKCOW-ARGS]
	local o
	o=$($MKCOW sample "$1" --chunk $C --count $N --origin-chunks $M --samples 150 "${@:3}") ||
		fail "$2: $o"
	log "ok: $2: $o"
}
# stack_of PID: the innermost functions of a task's kernel stack (a diagnostic).
stack_of() {
	local l st out=
	mapfile -n 8 -t st </proc/"$1"/stack 2>/dev/null
	for l in "${st[@]}"; do
		l=${l#*] }
		out+="${l%%+*} "
	done
	echo "${out% }"
}
# word DEV CHUNK: the first 8 bytes of a chunk, in hex.
word() { dread "$1" $(($2 * C)) $C | od -An -tx8 -N8 | tr -d ' '; }

# 1. Timed activation (the origin suspended, as LVM takes a snapshot).
dm create porig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dm suspend porig || fail "suspend the origin"
bounded 300 "the activation of $N exceptions" dm create psnap --table "0 $LEN snapshot $VDA $VDB P 0" ||
	{ dm resume porig; fail "create the snapshot over the image: $BOUT"; }
dm resume porig || fail "resume the origin"
log "activation of $N exceptions: $BMS ms ($DM_TOOL create)"
expect_eq "$(dm table psnap)" "0 $LEN snapshot $(devno "$VDA") $(devno "$VDB") P $C" "table line: chunk size $C from the header"
expect_eq "$(dm status psnap)" "$EXP_STATUS" "status: allocated and metadata sectors of $N exceptions"
expect_eq "$(word "$DEVDIR"/psnap 0)" c0de000000000000 "snapshot chunk 0 (exception 0) holds its COW data"
expect_eq "$(word "$DEVDIR"/porig 0)" 0a1c000000000000 "origin chunk 0 holds the origin's data"
sample "$DEVDIR"/psnap "snapshot samples"
snap_drop porig psnap

# 2. The metadata read off the control path.
dm create cowlin --table "0 $T linear $VDB 0" || fail "create cowlin"
dm create other --table "0 8192 linear $VDC 0" || fail "create other"
pat=/tmp/persist04.pat
make_pattern $pat 4
dm suspend cowlin || fail "suspend cowlin"
dm suspend porig || fail "suspend the origin"
t0=$(now_ms)
"$DM_TOOL" create psnap --table "0 $LEN snapshot $VDA $DEVDIR/cowlin P 0" >/tmp/persist04.create 2>&1 &
cpid=$!
sleep 1
kill -0 $cpid 2>/dev/null || fail "the create ended while its COW device was suspended: $(cat /tmp/persist04.create)"
log "ok: the create of the snapshot is blocked on the suspended COW device (in $(stack_of $cpid))"
bounded 30 "ls" dm ls || fail "ls: $BOUT"
for d in porig cowlin other; do
	expect_match "$BOUT" "^${d}[[:space:]]" "ls lists $d while the create is blocked"
done
bounded 30 "info other" dm info other || fail "info other: $BOUT"
expect_match "$BOUT" "State: +ACTIVE" "info of another device"
bounded 30 "status other" dm status other || fail "status other: $BOUT"
expect_match "$BOUT" "^0 8192 linear ?$" "status of another device"
bounded 30 "table other" dm table other || fail "table other: $BOUT"
expect_eq "$BOUT" "0 8192 linear $(devno "$VDC") 0" "table of another device"
bounded 30 "create tmp" dm create tmp --table "0 2048 linear $VDC 8192" || fail "create tmp: $BOUT"
log "ok: create of an unrelated device"
bounded 30 "remove tmp" dm remove tmp || fail "remove tmp: $BOUT"
log "ok: remove of an unrelated device"
bounded 60 "I/O to another device" dwrite $pat 0 "$DEVDIR"/other 0 8192 || fail "write to other: $BOUT"
bounded 60 "reading another device" cmp <(dread "$DEVDIR"/other 0 8192) $pat || fail "other reads back wrong: $BOUT"
log "ok: 4 MiB written to and read back from another device"
kill -0 $cpid 2>/dev/null || fail "the create ended before the COW device was resumed: $(cat /tmp/persist04.create)"
log "ok: the create is still blocked after all that ($(($(now_ms) - t0)) ms)"
t1=$(now_ms)
bounded 30 "resume cowlin" dm resume cowlin || fail "resume cowlin: $BOUT"
wait_end $cpid 300 || fail "the create did not complete within 300 s of resuming its COW device"
wait $cpid || { dm resume porig; fail "the create failed: $(cat /tmp/persist04.create)"; }
cpid=
log "ok: the create completed $(($(now_ms) - t1)) ms after the COW device was resumed"
dm resume porig || fail "resume the origin"
expect_eq "$(dm table psnap)" "0 $LEN snapshot $(devno "$VDA") $(devno "$DEVDIR"/cowlin) P $C" "table line"
expect_eq "$(dm status psnap)" "$EXP_STATUS" "status: the same figures through the linear device"
sample "$DEVDIR"/psnap "snapshot samples" --seed 2
sample "$DEVDIR"/porig "origin samples (no exceptions on the origin)" --origin-only
snap_drop porig psnap
dm remove cowlin && dm remove other || fail "remove"
o=$($MKCOW check "$VDB") || fail "mkcow check: $o"
expect_match "$o" "valid=1 version=1 exceptions=$N areas=$((N / EPA + 1)) allocated=$((ALLOC * C)) metadata=$((META * C))" \
	"the metadata on disk is unchanged by the activations"

# 3. A last area exactly full over the stale entries of the big image.
N2=128
mk=$($MKCOW make "$VDB" --chunk $C --count $N2 --origin-chunks $M --first 7) || fail "mkcow make: $mk"
log "$mk"
dm suspend porig || fail "suspend the origin"
dm create psnap --table "0 $LEN snapshot $VDA $VDB P $C" || { dm resume porig; fail "create over $N2 exceptions"; }
dm resume porig || fail "resume the origin"
expect_eq "$(dm status psnap)" "0 $LEN snapshot $(((2 + N2 + N2 / EPA) * C))/$T $(((2 + N2 / EPA) * C))" \
	"status: $N2 exceptions in 2 full areas, the third (zeroed) current"
o=$($MKCOW sample "$DEVDIR"/psnap --chunk $C --count $N2 --origin-chunks $M --first 7 --samples 150) ||
	fail "samples of the $N2-exception image (stale entries of the old image loaded?): $o"
log "ok: $o"
snap_drop porig psnap
dm remove porig || fail "remove the origin"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
