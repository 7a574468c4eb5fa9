# Shared helpers of rdm's VM tests (kselftest conventions: exit 0 = pass,
# 1 = fail, 4 = skip; diagnostics on lines starting with "# ").
# shellcheck shell=bash

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

RDM_TOP=${RDM_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
RDM_KO=$RDM_TOP/rdm.ko
RDM_CONTROL=/dev/rdm-control

log() { echo "# $*"; }
fail() { echo "# FAIL: $*"; exit $KSFT_FAIL; }
skip() { echo "# SKIP: $*"; exit $KSFT_SKIP; }

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

# Kernel log lines written since the last klog_mark.
klog_mark() { RDM_KLOG_MARK=$(dmesg | wc -l); }
klog_since_mark() { dmesg | tail -n +"$((${RDM_KLOG_MARK:-0} + 1))"; }

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

# Removes every rdm device (for cleanup traps).
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
