# Shared helpers of rdm's VM tests (kselftest conventions: exit 0 = pass,
# 1 = fail, 4 = skip; diagnostics on lines starting with "# ").
# shellcheck shell=bash
# The settings here (VDA, COW_MAGIC, DEVDIR...) are read by the tests that
# source this file.
# shellcheck disable=SC2034

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

RDM_TOP=${RDM_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
RDM_KO=${RDM_KO:-$RDM_TOP/rdm.ko}
RDM_DM_KO=${RDM_DM_KO:-$RDM_TOP/rdm-dm.ko}
RDM_CONTROL=/dev/rdm-control
# The implementation under test (dm or rdm): set by run_both, lvm_both and
# compat_both for each of their runs, in the subshell of that run.
IMPL=${IMPL:-}

log() { echo "# $*"; }
# fail MESSAGE: the test fails here (exit 1). Inside a deferred cleanup
# command it only marks the test failed and returns 1, so that the other
# cleanup commands still run.
fail() {
	echo "# FAIL: $*"
	if [ -n "${__DEFER_RUNNING:-}" ]; then
		__DEFER_FAILED=1
		return 1
	fi
	exit $KSFT_FAIL
}
skip() { echo "# SKIP: $*"; exit $KSFT_SKIP; }

# --- Cleanup: a stack of deferred commands ---
# (The idea of tools/testing/selftests/net/lib.sh's defer.) A test says
# how to undo each thing right after it does it:
#
#	dm create orig --table "..." || fail "create orig"
#	defer dm remove orig
#	writer & defer stop_pids $!
#
# and the deferred commands run in reverse order (last deferred, first
# run) when the test exits, however it exits: passing, failing midway
# (fail, or a shell error), skipped, or killed by run_tests.sh's timeout
# (SIGTERM). A cleanup command that returns non-zero is logged and the
# rest still run (cleanup is best effort: `dmsetup remove_all` with nothing
# left fails); `fail` inside one marks the test failed and returns 1
# instead of exiting, so that the rest run too.
#
# Scopes: defer_scope_push opens one; defer_scope_pop runs (LIFO) what was
# deferred since and closes it, so a loop can clean up after each round.
# A subshell that starts with defer_subshell runs on its exit what it
# deferred itself, and never what its parent did: run_both, lvm_both and
# compat_both run each implementation so, so the reference run is cleaned
# up before the rdm run starts.
__DEFER_CMDS=()   # the deferred commands, quoted (printf %q)
__DEFER_SCOPES=() # where each open scope starts in __DEFER_CMDS
__DEFER_BASE=0    # this (sub)shell's first own entry
__DEFER_FAILED='' __DEFER_RUNNING=''

# defer COMMAND [ARGS...]
defer() {
	local cmd
	printf -v cmd '%q ' "$@"
	__DEFER_CMDS+=("$cmd")
}
# Runs and removes the deferred commands from the top down to index $1.
__defer_run_to() {
	local i rc running=$__DEFER_RUNNING
	__DEFER_RUNNING=1
	for ((i = ${#__DEFER_CMDS[@]} - 1; i >= $1; i--)); do
		eval "${__DEFER_CMDS[i]}"
		rc=$?
		[ "$rc" -eq 0 ] || log "cleanup: '${__DEFER_CMDS[i]% }' returned $rc"
		unset '__DEFER_CMDS[i]'
	done
	__DEFER_RUNNING=$running
}
defer_scope_push() { __DEFER_SCOPES+=("${#__DEFER_CMDS[@]}"); }
defer_scope_pop() {
	local n=${#__DEFER_SCOPES[@]} start
	[ "$n" -gt 0 ] || fail "defer_scope_pop without a defer_scope_push"
	start=${__DEFER_SCOPES[n - 1]}
	unset '__DEFER_SCOPES[n - 1]'
	__defer_run_to "$start"
	if [ -n "$__DEFER_FAILED" ] && [ -z "$__DEFER_RUNNING" ]; then
		__DEFER_FAILED=''
		fail "a cleanup command failed"
	fi
}
# The EXIT trap: runs this shell's deferred commands; a failed cleanup
# fails a test that would have passed.
__defer_exit() {
	local rc=$?
	__defer_run_to "$__DEFER_BASE"
	[ -n "$__DEFER_FAILED" ] && [ "$rc" -eq 0 ] && rc=$KSFT_FAIL
	exit "$rc"
}
defer_subshell() {
	__DEFER_BASE=${#__DEFER_CMDS[@]}
	__DEFER_SCOPES=()
	trap __defer_exit EXIT
}
trap __defer_exit EXIT

# stop_pids PID...: kills those of the processes that are still children
# of this shell and reaps them (a PID already waited for may belong to
# another process by now: it is left alone). For `defer stop_pids $!`.
stop_pids() {
	local p ppid
	for p in "$@"; do
		ppid=''
		# Field 4 of /proc/PID/stat, after the command name in parentheses.
		[ -r "/proc/$p/stat" ] && { read -r ppid </proc/"$p"/stat; } 2>/dev/null
		ppid=${ppid##*) }
		ppid=${ppid#* }
		ppid=${ppid%% *}
		[ "$ppid" = "$BASHPID" ] || continue
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	return 0
}

# The tests load and unload kernel modules: only inside the test VM.
require_vm() {
	[ -n "${RDM_IN_VM:-}" ] || skip "runs only inside the test VM (scripts/vm-run)"
	[ "$(id -u)" -eq 0 ] || skip "needs root"
}

rdm_loaded() { grep -q '^rdm ' /proc/modules; }
rdm_refcount() { awk '$1 == "rdm" { print $3 }' /proc/modules; }

rdm_load() {
	rdm_loaded || insmod "$RDM_KO" "$@" || fail "insmod $RDM_KO $*"
	[ -c "$RDM_CONTROL" ] || fail "$RDM_CONTROL did not appear"
}

rdm_unload() {
	if rdm_loaded; then
		rmmod rdm || fail "rmmod rdm"
	fi
}

# require_fail_nth: per-task fault injection (fail-nth) for slab and page
# allocations, sleeping ones included, quietly; skips the test on a kernel
# without it.
require_fail_nth() {
	local f d=/sys/kernel/debug
	[ -e /proc/self/fail-nth ] || skip "the kernel has no fault injection (CONFIG_FAULT_INJECTION)"
	[ -d $d/failslab ] || mount -t debugfs none $d 2>/dev/null
	[ -d $d/failslab ] || skip "no failslab in debugfs"
	for f in failslab fail_page_alloc; do
		echo N >$d/$f/ignore-gfp-wait || fail "cannot make $f fail sleeping allocations"
		echo 0 >$d/$f/verbose
	done
	[ -e $d/fail_page_alloc/ignore-gfp-highmem ] && echo N >$d/fail_page_alloc/ignore-gfp-highmem
	return 0
}

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
	[ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"
	log "ok: $3"
}

# expect_match TEXT REGEX WHAT
expect_match() {
	printf '%s\n' "$1" | grep -Eq -- "$2" || fail "$3: '$1' does not match /$2/"
	log "ok: $3"
}

# Kernel log lines written since the last klog_mark. The mark is a line
# of its own in the log (counting lines would break once the ring buffer
# wraps, as it does after a few hundred devices).
klog_mark() {
	RDM_KLOG_MARK="rdm-test-mark-$$-$RANDOM$RANDOM"
	echo "$RDM_KLOG_MARK" >/dev/kmsg
}
klog_since_mark() { dmesg | sed -n "/${RDM_KLOG_MARK:-^}/,\$p" | tail -n +2; }

# Scratch disks (sparse, 256 MiB each by default) and their sizes in sectors.
VDA=/dev/vda
VDB=/dev/vdb
disk_sectors() { blockdev --getsz "$1"; }
require_disks() {
	local d
	for d in "$@"; do
		[ -b "$d" ] || skip "needs scratch disk $d (scripts/vm-run --disks N)"
	done
}

# unmount DIR: unmounts DIR if something is mounted there (for defer).
unmount() { ! mountpoint -q "$1" || umount "$1"; }

# Removes every rdm device (for defer).
rdm_cleanup() {
	rdm_loaded && rdmsetup remove_all >/dev/null 2>&1
	rdm_unload
}

# sect FILE SKIP COUNT: COUNT 512-byte sectors of FILE from sector SKIP.
sect() { dd if="$1" bs=512 skip="$2" count="$3" status=none; }

# A file of N MiB of random data, made once per test.
make_pattern() { # make_pattern FILE MIB
	dd if=/dev/urandom of="$1" bs=1M count="$2" status=none
}

# expect_fail WHAT LOG-REGEX COMMAND...: COMMAND must fail and the kernel
# log must get a line matching LOG-REGEX ("" for none required).
expect_fail() {
	local what=$1 logre=$2 out
	shift 2
	klog_mark
	if out=$("$@" 2>&1); then
		fail "$what: succeeded: $out"
	fi
	if [ -n "$logre" ]; then
		expect_match "$(klog_since_mark)" "$logre" "$what: refused and logged"
	else
		log "ok: $what: refused ($out)"
	fi
}

# expect_refused WHAT ERRNO-REGEX LOG-REGEX COMMAND...: COMMAND must fail,
# its message matching ERRNO-REGEX (the errno as dmsetup or rdmsetup
# prints it, e.g. "[Ii]nvalid argument"), and the kernel log must get a
# line matching LOG-REGEX.
expect_refused() {
	local what=$1 errre=$2 logre=$3 out
	shift 3
	klog_mark
	if out=$("$@" 2>&1); then
		fail "$what: succeeded: $out"
	fi
	expect_match "$out" "$errre" "$what: refused ($out)"
	expect_match "$(klog_since_mark)" "$logre" "$what: logged"
}

# wait_gone TOOL NAME: waits up to 5 s for a device to go (deferred
# removal happens on a workqueue after the last close); fails if it stays.
wait_gone() {
	local _
	for _ in $(seq 1 50); do
		"$1" info "$2" >/dev/null 2>&1 || return 0
		sleep 0.1
	done
	fail "deferred remove of $2 did not happen on its last close"
}

# --- Snapshot tests ---
# They drive rdm with rdmsetup (devices at /dev/rdm/NAME) through `dm`,
# $DEVDIR and $SNAP_MOD. With RDM_SNAP_REF=1 the same tests drive the
# kernel's own dm-snapshot with Debian's dmsetup (/dev/mapper/NAME): a check
# of the tests themselves against the reference (rdm-only checks are then
# skipped: see snap_ref).
VDC=/dev/vdc
VDD=/dev/vdd
snap_ref() { [ -n "${RDM_SNAP_REF:-}" ]; }

# snap_load [RDM-PARAMS...]: loads rdm (or dm-snapshot) and sets DEVDIR and
# SNAP_MOD (the module that holds the snapshot targets). With
# RDM_SNAP_HOST=dm, rdm's engine runs in the kernel's dm instead: rdm-dm.ko
# with dm_names=1 (dm-snapshot's target names) over dm-mod, driven by
# dmsetup; the engine is rdm's, so snap_ref is false.
snap_load() {
	if dm_host; then
		command -v dmsetup >/dev/null || skip "dmsetup is not installed"
		export DM_DISABLE_UDEV=1
		DM_TOOL=dmsetup DEVDIR=/dev/mapper SNAP_MOD=rdm_dm
		if grep -q '^dm_snapshot ' /proc/modules; then
			modprobe -r -d "$RDM_MODROOT" dm-snapshot || fail "dm-snapshot is loaded and cannot be unloaded"
		fi
		rdm_dm_load "$@"
		log "dm host: rdm's engine (rdm-dm.ko dm_names=1) in the kernel's dm, driven by dmsetup"
	elif snap_ref; then
		command -v dmsetup >/dev/null || skip "dmsetup is not installed"
		export DM_DISABLE_UDEV=1
		DM_TOOL=dmsetup DEVDIR=/dev/mapper SNAP_MOD=dm_snapshot
		modprobe -d "$RDM_MODROOT" dm-snapshot || skip "the kernel's dm-snapshot is not available"
		log "reference run: the kernel's dm-snapshot, driven by dmsetup"
	else
		DM_TOOL=rdmsetup DEVDIR=/dev/rdm SNAP_MOD=rdm
		rdm_load "$@"
	fi
}
# rdm_dm_load [PARAMS...]: dm-mod (skips the test without it), then
# rdm-dm.ko serving dm-snapshot's target names; rdm_dm_unload undoes it.
rdm_dm_load() {
	modprobe -d "$RDM_MODROOT" dm-mod || skip "the kernel's dm-mod is not available"
	insmod "$RDM_DM_KO" dm_names=1 "$@" || fail "insmod $RDM_DM_KO dm_names=1 $*"
}
rdm_dm_unload() {
	grep -q '^rdm_dm ' /proc/modules && { rmmod rdm_dm || fail "rmmod rdm_dm"; }
	grep -q '^dm_zero ' /proc/modules && modprobe -r -d "$RDM_MODROOT" dm-zero
	modprobe -r -d "$RDM_MODROOT" dm-mod >/dev/null 2>&1
	return 0
}
# dm_host: whether this run hosts rdm's engine in the kernel's dm.
dm_host() { [ "${RDM_SNAP_HOST:-}" = dm ]; }
dm() { "$DM_TOOL" "$@"; }
snap_cleanup() {
	if dm_host; then
		dmsetup remove_all >/dev/null 2>&1
		rdm_dm_unload
	elif snap_ref; then
		dmsetup remove_all >/dev/null 2>&1
		# dm-zero (loaded by some scenarios) would keep dm-mod loaded.
		grep -q '^dm_zero ' /proc/modules && modprobe -r -d "$RDM_MODROOT" dm-zero
		modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod >/dev/null 2>&1
	else
		rdm_cleanup
	fi
}

# devno DEV: "major:minor" of a block device (as table lines show it).
devno() {
	local t
	t=$(stat -L -c '%t %T' "$1") || return 1
	printf '%d:%d' "0x${t% *}" "0x${t#* }"
}
# (The helpers below avoid starting processes where they can: under TCG
# each one costs close to 0.1 s.)
# dev_count: how many mapped devices exist.
dev_count() {
	local out
	out=$(dm ls)
	case $out in "No devices found" | "") echo 0 ;; *) printf '%s\n' "$out" | wc -l ;; esac
}
# event_nr NAME
event_nr() {
	local l
	while read -r l; do
		case $l in "Event number:"*) echo "${l##* }" ;; esac
	done < <(dm info "$1")
}
# snap_alloc NAME: the allocated sectors of a snapshot's status.
snap_alloc() {
	local st
	st=$(dm status "$1") || return 1
	read -r _ _ _ st _ <<<"$st"
	echo "${st%%/*}"
}
# sectors_read DISK: sectors read from a whole disk so far (stat field 3).
sectors_read() {
	local n
	read -r _ _ n _ <"/sys/block/${1##*/}/stat"
	echo "$n"
}
# module_refs MODULE: its use count in /proc/modules.
module_refs() {
	local m _s n
	while read -r m _s n _; do
		[ "$m" = "$1" ] && echo "$n"
	done </proc/modules
}

# snap_take ORIGIN SNAP TABLE: takes a snapshot as LVM does: suspend the
# origin device, create the snapshot, resume the origin.
snap_take() {
	dm suspend "$1" || fail "suspend $1"
	dm create "$2" --table "$3" || { dm resume "$1"; fail "create $2: $3"; }
	dm resume "$1" || fail "resume $1"
}
# snap_drop ORIGIN SNAP: removes a snapshot with its origin suspended.
snap_drop() {
	dm suspend "$1" || fail "suspend $1"
	dm remove "$2" || { dm resume "$1"; fail "remove $2"; }
	dm resume "$1" || fail "resume $1"
}

# dwrite SRC SRC-SECTOR DEV DEV-SECTOR SECTORS: one O_DIRECT write of
# SECTORS sectors taken from file SRC.
dwrite() {
	dd if="$1" iflag=skip_bytes,fullblock skip=$(($2 * 512)) of="$3" \
		oflag=direct,seek_bytes seek=$(($4 * 512)) bs=$(($5 * 512)) count=1 status=none
}
# fput SRC SRC-SECTOR FILE FILE-SECTOR SECTORS: the same into a regular
# file (to build an expected image).
fput() {
	dd if="$1" iflag=skip_bytes,fullblock skip=$(($2 * 512)) of="$3" \
		oflag=seek_bytes seek=$(($4 * 512)) bs=$(($5 * 512)) count=1 conv=notrunc status=none
}
# dread DEV SECTOR SECTORS: O_DIRECT read to stdout, in I/Os of 1 MiB at most.
dread() {
	dd if="$1" iflag=direct,skip_bytes,count_bytes,fullblock skip=$(($2 * 512)) \
		count=$(($3 * 512)) bs=1M status=none
}
# done_within PID SECONDS: the process ends successfully within SECONDS.
done_within() {
	local pid=$1 _
	for _ in $(seq 1 $(($2 * 10))); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			return
		fi
		sleep 0.1
	done
	return 1
}
# expect_same WHAT DEV FILE [SECTORS [DEV-SECTOR [FILE-SECTOR]]]: the
# device's sectors (O_DIRECT) equal the file's; SECTORS defaults to the file.
expect_same() {
	local n=${4:-$(($(stat -c %s "$3") / 512))} d=${5:-0} f=${6:-0} out
	if ! out=$(cmp -n $((n * 512)) -i 0:$((f * 512)) <(dread "$2" "$d" "$n") "$3" 2>&1); then
		local byte
		byte=$(printf '%s\n' "$out" | sed -n 's/.* differ: \(byte\|char\) \([0-9]*\),.*/\2/p')
		[ -n "$byte" ] && out="first difference at sector $((d + (byte - 1) / 512)) of $2"
		fail "$1: $out"
	fi
	log "ok: $1"
}
# expect_eio WHAT COMMAND...: fails with EIO.
expect_eio() {
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then fail "$what: succeeded"; fi
	expect_match "$out" "Input/output error" "$what: EIO"
}
# The persistent store's header magic ("SnAp" read as a little-endian u32;
# tests/host/test_cowformat.sh checks it against the format's oracle).
COW_MAGIC=$((0x70416e53))
# cow_header DEV: magic valid version chunk_size of the persistent
# snapshot header at the start of DEV, as tests/lib/cowformat.py (the
# format's one Python oracle) reads it. (It reads 4 KiB: an O_DIRECT read
# of one sector fails on a device with 4 KiB logical blocks.)
cow_header() {
	dread "$1" 0 8 | python3 "$RDM_TOP/tests/lib/cowformat.py" header -
}
# read1 DEV SECTOR: one O_DIRECT read of 8 sectors (4 KiB) at SECTOR.
read1() { dd if="$1" of=/dev/null bs=512 count=8 skip="$2" iflag=direct status=none; }
# now_ms: a monotonic-enough clock for ordering checks, in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_both SCENARIO [RDM-PARAMS...]: runs the function SCENARIO twice in
# this guest: first against the kernel's own dm (dm-mod and dm-snapshot,
# driven by Debian's dmsetup: the reference), then against rdm (loaded
# with RDM-PARAMS, driven by rdmsetup). Each run loads its module fresh
# and cleans up after itself (snap_cleanup); inside, `dm`, $DEVDIR and
# IMPL (dm or rdm) say which one is under test. A scenario that fails on
# the kernel's dm is a wrong test, and fails as such, unless
# RDM_REF_KNOWN_BAD says why dm is known to get it wrong (then its failure
# is logged and the rdm run decides).
run_both() {
	local scenario=$1 rc
	shift
	if dm_host; then
		# Only rdm's engine, hosted by dm: the other two runs are the
		# same test's plain run.
		IMPL=rdm RDM_SNAP_REF='' impl_run snap_up "$scenario" "$@" || exit $?
		log "ok: $scenario on rdm's engine in the kernel's dm"
		return 0
	fi
	IMPL=dm RDM_SNAP_REF=1 impl_run snap_up "$scenario"
	rc=$?
	case $rc in
	0) log "ok: $scenario on the kernel's dm (reference)" ;;
	4) log "the kernel's dm is not available here: no reference run" ;;
	*) if [ -n "${RDM_REF_KNOWN_BAD:-}" ]; then
		log "the kernel's dm fails $scenario, as expected: $RDM_REF_KNOWN_BAD"
	else
		fail "$scenario fails on the kernel's own dm too: the test is wrong"
	fi ;;
	esac
	IMPL=rdm RDM_SNAP_REF='' impl_run snap_up "$scenario" "$@" || exit $?
	log "ok: $scenario on rdm"
}
# impl_run SETUP SCENARIO [SETUP-ARGS...]: one run of run_both, lvm_both or
# compat_both: in a subshell of its own, SETUP (which loads the
# implementation and defers its unloading), then SCENARIO; the subshell's
# exit runs what the run deferred. The caller sets IMPL for the call.
impl_run() {
	(
		defer_subshell
		"$1" "${@:3}"
		"$2"
	)
}
snap_up() {
	defer snap_cleanup
	snap_load "$@"
}

# --- LVM2 tests ---
# With dm_compat=1 rdm *is* the system's device-mapper: LVM2, dmsetup and
# (with `vm-run --udev`) udev and dmeventd drive it unmodified. LVM2 runs
# with its default lvm.conf in a writable $LVM_SYSTEM_DIR; without udev
# (the default guest) libdevmapper makes the nodes itself.
# lvm_both SCENARIO DISK...: runs the function SCENARIO with the kernel's
# dm (dm-mod, dm-snapshot) loaded, then with rdm (dm_compat=1); IMPL says
# which. Each run starts from wiped DISKs and ends with every VG and
# device gone and the module unloaded. A scenario that fails on the
# kernel's dm is a wrong test. In a guest with udev (vm-run --udev: the
# real userland), a third run has the kernel's dm serve LVM2 with rdm's
# snapshot engine: rdm-dm.ko dm_names=1 (IMPL=rdm-dm).
lvm_both() {
	local scenario=$1 rc
	shift
	LVM_DISKS="$*"
	command -v lvm >/dev/null || skip "LVM2 is not installed (scripts/setup-deps)"
	if [ -z "${LVM_SYSTEM_DIR:-}" ]; then
		export LVM_SYSTEM_DIR=/tmp/rdm-lvm
		mkdir -p "$LVM_SYSTEM_DIR"
		cp /etc/lvm/lvm.conf "$LVM_SYSTEM_DIR/"
	fi
	IMPL=dm impl_run lvm_up "$scenario"
	rc=$?
	case $rc in
	0) log "ok: $scenario on the kernel's dm (reference)" ;;
	4) log "the kernel's dm is not available here: no reference run" ;;
	*) fail "$scenario fails on the kernel's own dm too: the test is wrong" ;;
	esac
	IMPL=rdm impl_run lvm_up "$scenario" || exit $?
	log "ok: $scenario on rdm"
	if [ -n "${RDM_UDEV:-}" ]; then
		IMPL=rdm-dm impl_run lvm_up "$scenario" || exit $?
		log "ok: $scenario on the kernel's dm with rdm's snapshot engine (rdm-dm.ko)"
	fi
}
lvm_up() {
	defer lvm_cleanup
	lvm_wipe
	compat_load
	[ "$IMPL" = dm ] && log "reference run: the kernel's dm, driven by LVM2"
	return 0
}
# compat_load: loads the driver of $IMPL as the system's device-mapper:
# the kernel's dm (dm-mod, dm-snapshot; skips if it is not there), the
# kernel's dm with rdm-dm.ko serving dm-snapshot's targets (rdm-dm), or
# rdm with dm_compat=1.
compat_load() {
	if [ "$IMPL" = dm ]; then
		modprobe -d "$RDM_MODROOT" dm-snapshot || exit $KSFT_SKIP
	elif [ "$IMPL" = rdm-dm ]; then
		klog_mark
		rdm_dm_load
		expect_match "$(klog_since_mark)" "rdm_dm: loaded: rdm's snapshot engine serves device-mapper targets snapshot-origin, snapshot and snapshot-merge" \
			"rdm-dm: the log says rdm serves dm-snapshot's targets"
		expect_match "$(dmsetup targets)" "^snapshot +v1\.16\.0$" "rdm-dm: dmsetup targets lists snapshot"
	else
		insmod "$RDM_KO" dm_compat=1 || fail "insmod $RDM_KO dm_compat=1"
	fi
}
lvm_wipe() {
	local d
	for d in $LVM_DISKS; do
		dd if=/dev/zero of="$d" bs=1M count=4 oflag=direct status=none
	done
}
lvm_cleanup() {
	local vg
	for vg in $(vgs --noheadings -o vg_name 2>/dev/null); do
		vgchange -an "$vg" >/dev/null 2>&1
		vgremove -ff -y "$vg" >/dev/null 2>&1
	done
	dmsetup remove_all >/dev/null 2>&1
	lvm_wipe
	compat_unload
}
# compat_unload: unloads the driver of $IMPL (the kernel's dm or rdm).
compat_unload() {
	# dmeventd (started by LVM2 for monitoring, or by vm-run --udev)
	# keeps the control device open: stopped for the unload, then
	# started again if the guest runs it.
	local pid
	# udev's workers may still have a device open (blkid).
	[ -n "${RDM_UDEV:-}" ] && udevadm settle --timeout=60
	pid=$(cat /run/dmeventd.pid 2>/dev/null)
	if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	if [ "${IMPL:-}" = dm ]; then
		grep -q '^dm_zero ' /proc/modules && modprobe -r -d "$RDM_MODROOT" dm-zero
		modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod >/dev/null 2>&1
	elif [ "${IMPL:-}" = rdm-dm ]; then
		rdm_dm_unload
	else
		rdm_unload
	fi
	[ -n "${RDM_UDEV:-}" ] && dmeventd
	return 0
}

# --- dm_compat tests driven by Debian's dmsetup ---
# compat_both SCENARIO: runs the function SCENARIO with the kernel's dm
# (dm-mod, dm-snapshot) loaded, then with rdm (dm_compat=1); IMPL says
# which, DEVDIR is /dev/mapper and `dm` is dmsetup either way (with udev
# synchronisation in a `vm-run --udev` guest). Each run ends with every
# device gone and the module unloaded. A scenario that fails on the
# kernel's dm is a wrong test.
compat_both() {
	local scenario=$1 rc
	command -v dmsetup >/dev/null || skip "dmsetup is not installed"
	DM_TOOL=dmsetup DEVDIR=/dev/mapper
	IMPL=dm impl_run compat_up "$scenario"
	rc=$?
	case $rc in
	0) log "ok: $scenario on the kernel's dm (reference)" ;;
	4) log "the kernel's dm is not available here: no reference run" ;;
	*) fail "$scenario fails on the kernel's own dm too: the test is wrong" ;;
	esac
	IMPL=rdm impl_run compat_up "$scenario" || exit $?
	log "ok: $scenario on rdm"
}
compat_up() {
	defer compat_cleanup
	compat_load
	[ "$IMPL" = dm ] && log "reference run: the kernel's dm, driven by dmsetup"
	return 0
}
compat_cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	compat_unload
}
