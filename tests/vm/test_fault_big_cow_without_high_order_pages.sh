#!/usr/bin/env bash
# A persistent snapshot of more than a million scattered exceptions,
# loaded and grown while every page allocation of order 1 or more fails
# for the tasks doing it (issue 13, item 6: the exception table grew by
# doubling one vector, whose growth past about 4096 leaves needed an
# order-4 kmalloc; under the copier's NoIo scope, on a fragmented
# machine, that fails and the snapshot goes Invalid).
#
# fail_page_alloc is armed with min-order=1, ignore-gfp-wait=N,
# probability 100, times -1 and task-filter=Y: only tasks with
# /proc/PID/make-it-fail set are affected. They are the process that loads
# the table (rdmsetup, started through a shell that sets make-it-fail on
# itself and execs it), the copier thread that records every new
# exception (rdm_copier) and the first origin writer (dd, the same way).
# The second writer, fio, is not: it clones, and an injected task cannot
# (its task_struct is an order-1 slab). An injected task cannot use the
# guest's root filesystem either: every 9p request allocates a buffer of
# the mount's msize (500 KiB, order 7) and fails, so it cannot even exec a
# program from there; the staged tools and their libraries are copied to
# /dev/shm and run through the copied dynamic loader. Before the load a
# probe proves the injection is live: a Python process that sets
# make-it-fail on itself cannot resize a pipe to 1 MiB (its buffer ring is
# a 10 KiB kmalloc, order 2), and can once disarmed.
#
# The scenario is test_persist_million_exceptions_load_and_grow's (tests/vm/bigcow.sh): 1,050,000
# exceptions load, status and stats show them, samples read right; 64 MiB
# of origin writes add 8,180 more (over 3,000 new runs: new leaves); the
# snapshot stays valid and reads right, and the metadata on disk holds
# them all. Injected failures the kernel logged (allocations that may
# warn, with a stack: verbose=2) are counted and printed with their task
# and module frame. Everything is disarmed afterwards.
#
# Only rdm runs the scenario: the kernel's dm-snapshot cannot load a
# snapshot under this injection at all (snapshot_ctr ->
# dm_kcopyd_client_create -> mempool_init of the kcopyd job cache, whose
# objects, an array of 9 kcopyd jobs, need an order-1 slab), which the
# test shows by trying it first (logged, not asserted).
. "$(dirname "$0")/test_common.sh"
require_vm
[ -e /proc/self/make-it-fail ] || skip "the kernel has no fault injection (CONFIG_FAULT_INJECTION)"
[ -d /sys/kernel/debug/fail_page_alloc ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null
FPA=/sys/kernel/debug/fail_page_alloc
[ -d $FPA ] || skip "no fail_page_alloc in debugfs"
. "$(dirname "$0")/bigcow.sh"

KNOBS="min-order ignore-gfp-wait ignore-gfp-highmem task-filter probability interval times space verbose verbose_ratelimit_burst"
declare -A saved
for k in $KNOBS; do
	[ -e $FPA/"$k" ] && saved[$k]=$(cat $FPA/"$k")
done
arm() {
	echo 1 >$FPA/min-order &&
		echo N >$FPA/ignore-gfp-wait &&
		echo Y >$FPA/task-filter &&
		echo 1 >$FPA/interval &&
		echo 0 >$FPA/space &&
		echo -1 >$FPA/times &&
		echo 2 >$FPA/verbose &&
		echo 1000000 >$FPA/verbose_ratelimit_burst &&
		echo 100 >$FPA/probability || fail "arm fail_page_alloc"
	[ -e $FPA/ignore-gfp-highmem ] && echo N >$FPA/ignore-gfp-highmem
}
disarm() {
	local k
	echo 0 >$FPA/probability
	for k in $KNOBS; do
		[ -n "${saved[$k]:-}" ] && echo "${saved[$k]}" >$FPA/"$k"
	done
	copier_fail 0 >/dev/null
}
# copier_fail 0|1: make-it-fail of rdm's copier thread(s).
copier_fail() {
	local p comm n=0
	for p in /proc/[0-9]*; do
		read -r comm <"$p/comm" 2>/dev/null || continue
		case $comm in
		rdm_copier*) echo "$1" >"$p/make-it-fail" 2>/dev/null && n=$((n + 1)) ;;
		esac
	done
	echo $n
}
# The tools, copied with their libraries off the 9p root filesystem.
STAGE=/dev/shm/rdm-fault04
stage() {
	local t p l
	mkdir -p $STAGE/lib || fail "mkdir $STAGE"
	for t in "$@"; do
		p=$(command -v "$t") || fail "$t not found"
		cp "$p" $STAGE/ || fail "copy $p"
		for l in $(ldd "$p" | grep -o '/[^ ]*'); do
			cp -L "$l" $STAGE/lib/ || fail "copy $l"
		done
	done
	[ -x $STAGE/lib/ld-linux-x86-64.so.2 ] || skip "no x86-64 dynamic loader to copy"
}
# failing TOOL ARGS...: runs a staged tool with make-it-fail set.
failing() {
	LC_ALL=C bash -c 'echo 1 >/proc/self/make-it-fail && exec "$@"' failing \
		$STAGE/lib/ld-linux-x86-64.so.2 --library-path $STAGE/lib "$STAGE/${1##*/}" "${@:2}"
}
# pipe_1m: a Python process that has loaded what it needs sets
# make-it-fail on itself, then resizes a pipe to 1 MiB (F_SETPIPE_SZ: its
# ring of 256 buffers is a 10 KiB kmalloc, order 2). Prints "made" or the
# error.
pipe_1m() {
	$PY -c '
import fcntl, os
r, w = os.pipe()
fcntl.fcntl(w, 1032)
try:
    raise OSError(12, "warm-up")
except OSError as e:
    str(e)
with open("/proc/self/make-it-fail", "w") as f:
    f.write("1")
try:
    fcntl.fcntl(w, 1031, 1 << 20)
    print("made")
except OSError as e:
    print(e.strerror)
' 2>&1
}
cleanup() {
	disarm
	dmsetup remove_all >/dev/null 2>&1
	rdm_loaded && rdmsetup remove_all >/dev/null 2>&1
	big_teardown
	rm -rf "$STAGE"
}
defer cleanup
big_setup
stage rdmsetup dmsetup dd

# dm_attempt: the kernel's dm-snapshot under the same injection (for
# comparison only: it cannot load a snapshot then, its kcopyd client's
# job mempool needing an order-1 slab). Logged, not asserted.
dm_attempt() {
	(
		defer_subshell
		RDM_SNAP_REF=1 IMPL=dm
		defer snap_cleanup
		defer dmsetup remove_all
		snap_load
		local out
		dm create borig --table "0 $BIG_LEN snapshot-origin $BIG_ORIG" && dm suspend borig ||
			fail "dm: create the origin"
		klog_mark
		if out=$(failing dmsetup create bsnap --table "0 $BIG_LEN snapshot $BIG_ORIG $BIG_COW P $BIG_C" 2>&1); then
			log "the kernel's dm-snapshot loaded the snapshot under the same injection"
		else
			log "the kernel's dm-snapshot cannot load the snapshot under the same injection: $out" \
				"($(klog_since_mark | grep -E 'device-mapper|\[dm_mod\]|\[dm_snapshot\]' | sed 's/^\[[^]]*\] *//' | tr '\n' ' '))"
		fi
		dm resume borig
		exit 0
	)
}

# injected: the injected failures the kernel logged since the mark (those
# of allocations that may warn), with the task and the innermost rdm or
# other module frame of each.
injected() {
	klog_since_mark | awk '
		/FAULT_INJECTION: forcing a failure/ { n++; want = 1; comm = ""; next }
		want && /Comm:/ { sub(/.*Comm: /, ""); comm = $1 }
		want && /\[[a-z_]+\]$/ { where = $2; sub(/\+.*/, "", where); print comm " " where " " $NF; want = 0 }
		END { print n + 0 " injected failures logged" }'
}

scenario() {
	local n
	klog_mark
	n=$(copier_fail 1)
	[ "$n" -ge 1 ] || fail "no rdm_copier thread found"
	log "make-it-fail set on $n rdm_copier thread(s)"
	big_load failing
	# A copier thread started since (one per COW device?) too.
	copier_fail 1 >/dev/null
	big_grow failing
	log "$(injected | tr '\n' ';')"
	copier_fail 0 >/dev/null
	echo 0 >"$FPA"/probability
	expect_eq "$(pipe_1m)" made "disarmed: the same task makes its 1 MiB pipe"
	expect_eq "$(dev_count)" 0 "all devices gone"
}

big_image
arm
expect_eq "$(pipe_1m)" "Cannot allocate memory" "armed: a task with make-it-fail cannot make a 1 MiB pipe"
dm_attempt
IMPL=rdm impl_run snap_up scenario || exit $?
disarm
log "fail_page_alloc disarmed: probability $(cat $FPA/probability), task-filter $(cat $FPA/task-filter)"
exit "$KSFT_PASS"
