#!/usr/bin/env bash
# Allocation failures on the control path. Needs a kernel with fault
# injection (failslab, fail_page_alloc, per-task fail-nth: the test kernel
# has them, in scripts/kconfig/rdm.config); skipped on others. For each control command in
# the list, the command is run again and again with its ioctl's Nth
# allocation (slab or page) made to fail, N = 1, 2, ... until the ioctl
# completes without reaching its Nth allocation: every one of its first 48
# allocation points fails once (rdm's own come first), then every 7th
# (RDM_FAULT_FULL / RDM_FAULT_STRIDE; a create's disk registration in the
# block layer makes hundreds). Each time, the command either succeeded
# with its full effect, or failed with a clean errno and left everything
# as it was (the same devices, tables, status, module reference count); a
# good command after it works. A failed try's state, just shown to be the
# set-up's, is the next try's set-up: the command is tried again, with the
# next allocation failing, on what its failure left (after a success the
# set-up is made afresh). The guest log must stay clean (no WARNING,
# no leak report later in the debug kernel). Prints how many failures were
# injected.
# rdm-timeout: 1800
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
require_fail_nth
defer rdm_cleanup
rdm_load

LEN=8192
# RDM_FAULT_FULL=N: fail every one of the first N allocation points of a
# command, then every RDM_FAULT_STRIDE-th (RDM_FAULT_FULL=100000 for all).
FULL=${RDM_FAULT_FULL:-48}
STRIDE=${RDM_FAULT_STRIDE:-7}
injected_total=0
other=0

# state_into VAR: the devices, their tables and status lines, and rdm's
# refcount, into VAR. Three rdmsetup processes (each 0.2-0.35 s under
# TCG on a shared 2-core host: the state was most of the test's time); the
# refcount is read from /proc/modules in the shell.
state_into() {
	local i t s m refs
	i=$(rdmsetup info 2>&1)
	t=$(rdmsetup table 2>&1)
	s=$(rdmsetup status 2>&1)
	refs=''
	while read -r m _ refs _; do
		[ "$m" = rdm ] && break
		refs=''
	done </proc/modules
	printf -v "$1" '%s\n--\n%s\n--\n%s\n--\n%s' "$i" "$t" "$s" "$refs"
}

# Phase timing without a process: microseconds from bash's $EPOCHREALTIME.
# tick VAR: adds the time since the last tick to VAR (microseconds).
tick() {
	local t=${EPOCHREALTIME/[.,]/}
	printf -v "$1" %s $((${!1} + t - tick_last))
	tick_last=$t
}
ms() { echo "$(($1 / 1000)) ms"; }

# sweep NAME SETUP RUN CHECK_OK UNDO: runs RUN (an rdmsetup command line)
# with fail-nth N for N = 1.. until the fault is not reached. SETUP makes
# the state before a try, CHECK_OK checks the state after a success,
# UNDO takes the state back to before SETUP. After a try that failed, the
# state is compared with the set-up's: being the same, it is the next
# try's set-up (no UNDO, no SETUP); after a success, UNDO and SETUP run.
sweep() {
	local name=$1 setup=$2 run=$3 check_ok=$4 undo=$5 n=1 out rc before after fails=0 tried=0
	local fresh=1
	local t0=$SECONDS
	# Where the time goes (microseconds), and each try's outcome in
	# order (F: failed with ENOMEM, O: another errno, S: succeeded).
	local t_setup=0 t_state=0 t_run=0 t_check=0 t_undo=0 sig=''
	tick_last=${EPOCHREALTIME/[.,]/}
	while :; do
		if [ -n "$fresh" ]; then
			eval "$setup" || fail "$name: setup for N=$n"
			tick t_setup
			state_into before
			tick t_state
			fresh=''
		fi
		out=$(export RDM_FAIL_NTH=$n; eval "$run" 2>&1)
		rc=$?
		tick t_run
		case $out in
		*"fault injected"*) ;;
		*"not reached"*)
			[ $rc = 0 ] || fail "$name: failed with no fault injected: $out"
			eval "$check_ok" || fail "$name: wrong result without a fault"
			tick t_check
			eval "$undo"
			tick t_undo
			break ;;
		*) fail "$name: no fail-nth report: $out" ;;
		esac
		injected_total=$((injected_total + 1))
		if [ $rc = 0 ]; then
			# The failed allocation had a fallback (a mempool, a retry):
			# the command must have done all it should.
			eval "$check_ok" || fail "$name: succeeded with allocation $n failed but the result is wrong"
			tick t_check
			sig+=S
			eval "$undo"
			tick t_undo
			fresh=1
		else
			fails=$((fails + 1))
			case $out in
			*ENOMEM*) sig+=F ;;
			*"("E[A-Z]*")"*)
				# Another errno: the failure came back through a
				# layer that reports its own (the block layer's
				# disk registration); logged, and the state check
				# below still applies.
				other=$((other + 1))
				sig+=O
				log "$name: allocation $n: $(printf '%s' "$out" | grep -o '([A-Z]*)') ($(dmesg | tail -n 2 | tr '\n' ' '))" ;;
			*) fail "$name: allocation $n failed without an errno: $out" ;;
			esac
			tick t_check
			state_into after
			tick t_state
			[ "$after" = "$before" ] || fail "$name: allocation $n failed and the state changed:
--- before
$before
--- after
$after"
			# The state is the set-up's: the next try runs on it.
		fi
		tried=$((tried + 1))
		# Every point up to $FULL, then every $STRIDE-th (the block
		# layer's disk registration alone has hundreds).
		if [ $n -lt "$FULL" ]; then n=$((n + 1)); else n=$((n + STRIDE)); fi
		[ $n -le 2000 ] || fail "$name: more than 2000 allocations?"
	done
	log "ok: $name: $tried of its $((n - 1)) allocation points failed in turn ($fails made the command fail cleanly), then it ran through ($((SECONDS - t0)) s)"
	log "$name: time in set-up $(ms $t_setup), state $(ms $t_state), armed command $(ms $t_run), checks $(ms $t_check), undo $(ms $t_undo); outcomes $sig"
}

exists() { rdmsetup info "$1" >/dev/null 2>&1; }
none() { :; }

# points CMD [DROP]: how many allocation points CMD (one simple command)
# reaches in its ioctl (its fail-nth N = 1, 2, ... until "not reached");
# with DROP, the page cache is dropped before each run, so rdmsetup's own
# code is read back from the filesystem as it runs.
points() {
	local n=1 out
	while :; do
		[ -n "${2:-}" ] && echo 3 >/proc/sys/vm/drop_caches
		out=$(eval "RDM_FAIL_NTH=$n $1" 2>&1)
		case $out in
		*"fault injected"*) n=$((n + 1)) ;;
		*"not reached"*) echo $((n - 1)); return ;;
		*) fail "points: $1: no fail-nth report: $out" ;;
		esac
		[ $n -le 100 ] || fail "points: $1: more than 100 allocation points"
	done
}
# The count is the ioctl's own: rdmsetup's page faults in its fail-nth
# window (which allocate when its code must be read from the filesystem)
# are kept out of it, so a command counts the same points whatever the
# page cache holds (without that: 1 warm, 51 after drop_caches).
rdmsetup create f1 --table "0 $LEN zero" || fail "create f1"
for c in "rdmsetup status f1" "rdmsetup ls" "rdmsetup table f1"; do
	warm=$(points "$c") || exit
	cold=$(points "$c" drop) || exit
	expect_eq "$cold" "$warm" "$c: its allocation points after drop_caches ($cold) are those of a warm run"
	log "ok: $c: $warm allocation points, warm or after drop_caches"
done
rdmsetup remove f1 || fail "remove f1"
log "allocation points counted ($SECONDS s since the start)"

# DM_DEV_CREATE
sweep "create" none \
	"rdmsetup create f1 --notable" \
	"exists f1" \
	"rdmsetup remove f1 2>/dev/null"

# DM_TABLE_LOAD of a two-target table, then DM_DEV_SUSPEND (resume).
sweep "load" "rdmsetup create f1 --notable" \
	"rdmsetup load f1 --table '0 4096 linear $VDA 0
4096 4096 zero'" \
	"rdmsetup info f1 | grep -q 'Tables present:.*INACTIVE'" \
	"rdmsetup remove f1"
sweep "resume" "rdmsetup create f1 --notable && rdmsetup load f1 --table '0 $LEN linear $VDA 0'" \
	"rdmsetup resume f1" \
	"[ \"\$(rdmsetup table f1)\" = '0 $LEN linear $(devno "$VDA") 0' ]" \
	"rdmsetup remove f1"

# DM_DEV_RENAME, DM_TABLE_STATUS, DM_LIST_DEVICES, DM_DEV_REMOVE.
sweep "rename" "rdmsetup create f1 --table '0 $LEN zero'" \
	"rdmsetup rename f1 f2" \
	"exists f2 && ! exists f1" \
	"rdmsetup remove f2 2>/dev/null; rdmsetup remove f1 2>/dev/null"
sweep "status" "rdmsetup create f1 --table '0 $LEN zero'" \
	"rdmsetup status f1" \
	"exists f1" \
	"rdmsetup remove f1"
sweep "list" "rdmsetup create f1 --table '0 $LEN zero'" \
	"rdmsetup ls" \
	"exists f1" \
	"rdmsetup remove f1"
sweep "remove" "rdmsetup create f1 --table '0 $LEN zero'" \
	"rdmsetup remove f1" \
	"! exists f1" \
	"rdmsetup remove f1 2>/dev/null"

# Snapshots: an origin, and a persistent snapshot table loaded on a COW
# device that holds exceptions (its metadata is read in the load).
rdmsetup create so --table "0 $LEN snapshot-origin $VDA" || fail "origin"
dd if=/dev/zero of="$VDB" bs=4k count=1 oflag=direct status=none
rdmsetup suspend so && rdmsetup create ss --table "0 $LEN snapshot $VDA $VDB P 8" && rdmsetup resume so ||
	fail "first persistent snapshot"
dd if=/dev/urandom of=/dev/rdm/so bs=4k count=64 oflag=direct status=none || fail "origin writes"
st=$(rdmsetup status ss)
rdmsetup remove ss || fail "remove the snapshot"
sweep "snapshot load (P, 64 exceptions)" "rdmsetup create ss --notable" \
	"rdmsetup load ss --table '0 $LEN snapshot $VDA $VDB P 8'" \
	"rdmsetup info ss | grep -q 'Tables present:.*INACTIVE'" \
	"rdmsetup remove ss"
rdmsetup suspend so && rdmsetup create ss --table "0 $LEN snapshot $VDA $VDB P 8" && rdmsetup resume so ||
	fail "the persistent snapshot after the sweep"
expect_eq "$(rdmsetup status ss)" "$st" "the snapshot still has its exceptions after the sweep"
sweep "snapshot message" none \
	"rdmsetup message ss 0 stats" \
	"exists ss" \
	none
rdmsetup remove ss && rdmsetup remove so || fail "remove the snapshot devices"

# Nothing left behind, and rdm still works.
expect_eq "$(rdmsetup ls)" "No devices found" "no device left"
rdmsetup create after --table "0 $LEN linear $VDC 0" || fail "create after the sweeps"
dd if=/dev/urandom of=/dev/rdm/after bs=4k count=16 oflag=direct status=none || fail "I/O after the sweeps"
rdmsetup remove after || fail "remove after the sweeps"
rdm_unload || fail "rmmod after the sweeps"
log "all sweeps done ($SECONDS s since the start)"
log "fault injection: $injected_total allocation failures injected on the control path ($other answered with another errno than ENOMEM)"
echo "# fault-injected: $injected_total"
exit 0
