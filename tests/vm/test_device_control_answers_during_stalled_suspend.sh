#!/usr/bin/env bash
# Control commands keep answering while a suspend waits for stalled I/O,
# and resume does not resubmit the parked bios itself (run against the
# kernel's dm first, then rdm).
# 1. A linear device "up" over a linear device "low" that is suspended
#    with --noflush, a write in flight to "up" (parked in "low"), then
#    `suspend up` in the background: it waits for that write. Meanwhile
#    info, status, table, deps of "up" and of another device, and ls,
#    answer within a few seconds (rdm used to take the lock the suspend
#    holds for each of them). Resuming "low" lets everything finish.
# 2. An origin whose snapshot's COW device is stalled (a linear device
#    suspended with --noflush), suspended with 12 MiB of writes parked on
#    it, more chunk copies than cow_threshold (2048, the default) allows
#    in progress. `resume` of the origin returns within seconds and the
#    origin answers queries: the parked writes are resubmitted by a work
#    item (dm's md->work), which waits in the copy throttle, not the
#    resume command under the device's lock (the seed-003 pattern).
#    Resuming the COW device lets the writes complete.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"

# answers WHAT COMMAND...: COMMAND must succeed within 10 s. Polls
# instead of `timeout`: a command stuck on a kernel lock cannot be killed
# (it finishes once the stall is lifted).
answers() {
	local what=$1 pid _
	shift
	"$@" >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" || return 1
			log "ok: $what answered"
			return 0
		fi
		sleep 0.1
	done
	log "$what did not answer within 10 s"
	return 1
}

# --- 1. Queries during a suspend that waits for stalled I/O ---
queries_during_suspend() {
	local n=8192 io sus dev q
	dm create low9 --table "0 $n linear $VDA 0" || fail "create low9"
	dm create up9 --table "0 $n linear $DEVDIR/low9 0" || fail "create up9"
	dm create other9 --table "0 64 zero" || fail "create other9"
	dm suspend --noflush low9 || fail "suspend --noflush low9"
	# Unstalls low9 and lets what waited on it finish before failing.
	bad() {
		dm resume low9
		wait
		fail "$*"
	}
	dd if=/dev/zero of="$DEVDIR"/up9 bs=4k count=1 oflag=direct status=none &
	io=$!
	sleep 1
	kill -0 "$io" 2>/dev/null || bad "the write to up9 completed while low9 was suspended"
	dm suspend up9 &
	sus=$!
	sleep 1
	kill -0 "$sus" 2>/dev/null || bad "suspend up9 returned while I/O to it was stalled"
	for dev in up9 other9; do
		for q in info status table deps; do
			answers "$q $dev during up9's suspend" dm "$q" "$dev" ||
				bad "$q $dev did not answer while up9's suspend waits for stalled I/O"
		done
	done
	answers "ls during up9's suspend" dm ls || bad "ls did not answer while up9's suspend waits"
	answers "table --inactive up9" dm table --inactive up9 || bad "table --inactive up9 did not answer"
	expect_match "$(dm info up9)" "State: +ACTIVE" "up9 is not reported suspended while its suspend waits"
	kill -0 "$sus" 2>/dev/null || bad "suspend up9 returned while I/O to it was stalled"
	dm resume low9 || fail "resume low9"
	wait "$sus" || fail "suspend up9 failed"
	wait "$io" || fail "the stalled write failed"
	log "ok: resuming low9 let the write and the suspend of up9 finish"
	expect_match "$(dm info up9)" "State: +SUSPENDED" "up9 suspended"
	dm resume up9 || fail "resume up9"
	dm remove up9 && dm remove low9 && dm remove other9 || fail "remove the devices"
}
run_both queries_during_suspend

# --- 2. Resume with parked writes that wait in the copy throttle ---
resume_with_throttled_writes() {
	local len=131072 cow_len=131072 io t0 st
	dm create cow9 --table "0 $cow_len linear $VDB 0" || fail "create cow9"
	dm create org9 --table "0 $len snapshot-origin $VDA" || fail "create org9"
	snap_take org9 snap9 "0 $len snapshot $VDA $DEVDIR/cow9 N 8"
	dm suspend --noflush cow9 || fail "suspend --noflush cow9"
	bad() {
		dm resume cow9
		wait
		fail "$*"
	}
	dm suspend org9 || bad "suspend org9"
	# One 12 MiB write (bios of 1 MiB, all submitted before it waits):
	# 3072 chunks of 4 KiB to copy, more than cow_threshold.
	dd if=/dev/urandom of="$DEVDIR"/org9 bs=12M count=1 iflag=fullblock oflag=direct status=none &
	io=$!
	sleep 1
	kill -0 "$io" 2>/dev/null || bad "the write to the suspended origin completed"
	t0=$(now_ms)
	answers "resume org9 (writes parked, COW stalled)" dm resume org9 ||
		bad "resume of org9 did not return: it resubmits the parked writes itself, which wait for copies to a stalled COW device"
	log "resume returned in $(($(now_ms) - t0)) ms"
	answers "info org9 after resume" dm info org9 || bad "info org9 did not answer"
	answers "status snap9" dm status snap9 || bad "status snap9 did not answer"
	sleep 1
	kill -0 "$io" 2>/dev/null || bad "the origin writes completed while the COW device was stalled"
	dm resume cow9 || fail "resume cow9"
	wait "$io" || fail "the origin writes failed"
	log "ok: the parked origin writes completed once the COW device resumed"
	st=$(dm status snap9)
	expect_match "$st" "^0 $len snapshot [0-9]+/$cow_len" "snapshot valid, with copies made ($st)"
	snap_drop org9 snap9
	dm remove org9 && dm remove cow9 || fail "remove the devices"
}
run_both resume_with_throttled_writes
exit "$KSFT_PASS"
