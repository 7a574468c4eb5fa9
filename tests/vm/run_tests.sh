#!/usr/bin/env bash
# Runs rdm's VM tests (test_<area>_<behaviour>.sh beside this file, or those
# named; test_common.sh is their library, not a test) and
# prints TAP 13 as the kselftest runner does (a plan, then one "ok"/"not ok"
# line per test; the tests' own output as "# " comments), ending with the
# comment "# vm: N passed, N failed, N skipped". Exits 1 if any test failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1
if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=()
	for t in test_*_*.sh; do
		[ "$t" = test_common.sh ] || tests+=("$t")
	done
fi
# tmp_entries: the names in /tmp, one per line.
tmp_entries() {
	find /tmp -mindepth 1 -maxdepth 1 -printf '%f\n' | sort
}
# remove_new_tmp_files LISTING: in the guest (RDM_IN_VM), removes what a
# test left in /tmp that is not in LISTING (tmp_entries before it). The
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
echo "TAP version 13"
echo "1..${#tests[@]}"
pass=0 fail=0 skip=0 n=0
for t in "${tests[@]}"; do
	n=$((n + 1))
	t=$(basename "$t")
	echo "# selftests: rdm: $t"
	start=$SECONDS
	tmp_before=$(tmp_entries)
	# A test may ask for more time than the default with a header line
	# "# rdm-timeout: SECONDS" (a sweep that is long by design).
	limit=${RDM_TEST_TIMEOUT:-600}
	own=$(sed -n 's/^# rdm-timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -n 1)
	[ -n "$own" ] && [ "$own" -gt "$limit" ] && limit=$own
	timeout -k 10 "$limit" "./$t" 2>&1 | sed -u 's/^\([^#]\)/# \1/; s/^$/#/'
	rc=${PIPESTATUS[0]}
	took=$((SECONDS - start))
	# Leave no module behind for the next test.
	grep -q '^rdm ' /proc/modules && rmmod rdm 2>/dev/null
	remove_new_tmp_files "$tmp_before"
	case $rc in
	0) pass=$((pass + 1)); echo "ok $n selftests: rdm: $t (${took}s)" ;;
	4) skip=$((skip + 1)); echo "ok $n selftests: rdm: $t # SKIP" ;;
	*) fail=$((fail + 1)); echo "not ok $n selftests: rdm: $t # exit=$rc" ;;
	esac
done
echo "# vm: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
