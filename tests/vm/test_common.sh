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
