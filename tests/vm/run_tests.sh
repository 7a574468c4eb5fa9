#!/usr/bin/env bash
# Runs rdm's VM tests (test_<area>_<behaviour>.sh beside this file, or those
# named; test_common.sh is their library, not a test) and
# prints TAP 13 as the kselftest runner does (a plan, then one "ok"/"not ok"
# line per test; the tests' own output as "# " comments), ending with the
# comment "# vm: N passed, N failed, N skipped". Exits 1 if any test failed.
#
#   run_tests.sh [--list] [TEST...]
#
# --list prints the tests it would run, one per line, and runs none.
# With RDM_CLAIM_DIR set (a directory every guest of one run shares,
# writable: vm-run --shared-dir), several guests work through one list:
# a guest runs a test only if it is the first to create
# RDM_CLAIM_DIR/TEST (mkdir is atomic on the host), writes the test's exit
# status to RDM_CLAIM_DIR/TEST/rc, and prints its plan at the end (TAP
# allows a trailing plan) since it cannot know how many it will get.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1
list=''
if [ "${1:-}" = --list ]; then
	list=1
	shift
fi
if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=()
	for t in test_*_*.sh; do
		[ "$t" = test_common.sh ] || tests+=("$t")
	done
fi
# tmp_entries: the names in /tmp the guest itself made, one per line.
# virtme-ng's /tmp is an overlay whose lower layer is the host's /tmp (live,
# read-only): only its upper layer (a tmpfs) holds what the guest wrote, and
# names the host adds meanwhile must be neither counted nor removed.
tmp_entries() {
	local upper
	upper=$(sed -n 's/^[^ ]* \/tmp overlay .*upperdir=\([^,]*\).*/\1/p' /proc/mounts | tail -n 1)
	find "${upper:-/tmp}" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort
}
# tmp_seen: every name /tmp shows (the host's too), one per line.
tmp_seen() { find /tmp -mindepth 1 -maxdepth 1 -printf '%f\n' | sort; }
# remove_new_tmp_files LISTING: in the guest (RDM_IN_VM), removes what a
# test left in /tmp that is not in LISTING (tmp_seen before it): names the
# guest made that were not there before. A name that was (a directory of
# the host's that the test only wrote into, such as a checkout under /tmp
# whose tests/lib/__pycache__ Python made) stays: removing it would hide
# the host's directory, the repository itself, from every later test. The
# guest's /tmp is a tmpfs in its memory: the scratch images tests keep
# there (tens of MiB each) would otherwise add up over the suite and fill
# it for the tests that come later.
remove_new_tmp_files() {
	local f
	[ -n "${RDM_IN_VM:-}" ] || return 0
	comm -13 <(printf '%s\n' "$1") <(tmp_entries) | while read -r f; do
		[ -n "$f" ] && rm -rf "/tmp/$f"
	done
}
if [ -n "$list" ]; then
	for t in "${tests[@]}"; do basename "$t"; done
	exit 0
fi
claim=${RDM_CLAIM_DIR:-}
echo "TAP version 13"
[ -n "$claim" ] || echo "1..${#tests[@]}"
pass=0 fail=0 skip=0 n=0
for t in "${tests[@]}"; do
	t=$(basename "$t")
	if [ -n "$claim" ]; then
		mkdir "$claim/$t" 2>/dev/null || continue
	fi
	n=$((n + 1))
	echo "# selftests: rdm: $t"
	start=$SECONDS
	tmp_before=$(tmp_seen)
	# A test may ask for more time than the default with a header line
	# "# rdm-timeout: SECONDS" (a sweep that is long by design).
	limit=${RDM_TEST_TIMEOUT:-600}
	own=$(sed -n 's/^# rdm-timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -n 1)
	[ -n "$own" ] && [ "$own" -gt "$limit" ] && limit=$own
	timeout -k 10 "$limit" "./$t" 2>&1 | sed -u 's/^\([^#]\)/# \1/; s/^$/#/'
	rc=${PIPESTATUS[0]}
	took=$((SECONDS - start))
	# Leave no module behind for the next test.
	grep -qs '^rdm ' /proc/modules && rmmod rdm 2>/dev/null
	remove_new_tmp_files "$tmp_before"
	case $rc in
	0) pass=$((pass + 1)); echo "ok $n selftests: rdm: $t (${took}s)" ;;
	4) skip=$((skip + 1)); echo "ok $n selftests: rdm: $t # SKIP" ;;
	*) fail=$((fail + 1)); echo "not ok $n selftests: rdm: $t # exit=$rc" ;;
	esac
	[ -z "$claim" ] || echo "$rc" >"$claim/$t/rc"
done
[ -z "$claim" ] || echo "1..$n"
echo "# vm: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
