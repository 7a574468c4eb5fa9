#!/usr/bin/env bash
# scripts/check's one TAP parser (tap_count), fed with small logs: passes,
# skips and failures are counted, comments and indented output are not,
# a run cut short of its plan or ended by a bad exit status without a
# failed result is a failure, and the guest-log rule holds.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-tap.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The function itself, taken from scripts/check (which runs everything).
eval "$(sed -n '/^tap_count() {$/,/^}$/p' "$here/../../scripts/check")"
declare -F tap_count >/dev/null || { echo "not ok - tap_count found in scripts/check"; exit 1; }
rc=0
# expect WHAT "PASS FAIL SKIP" RC [CHECK] <<<LOG
expect() {
	local what=$1 want=$2 code=$3 check=${4:-}
	cat >"$tmp/log"
	pass=0 fail=0 skip=0
	tap_count "stage" "$tmp/log" "$code" "$check" >"$tmp/out"
	if [ "$pass $fail $skip" = "$want" ]; then
		echo "ok - tap_count: $what"
	else
		echo "not ok - tap_count: $what: counted '$pass $fail $skip', expected '$want'"
		sed 's/^/#   /' "$tmp/out"
		rc=1
	fi
}
expect "ok, not ok and SKIP lines, numbered or not" "2 1 2" 1 <<'EOF2'
TAP version 13
1..5
ok 1 selftests: rdm: a.sh (3s)
not ok 2 selftests: rdm: b.sh # exit=1
ok 3 selftests: rdm: c.sh # SKIP
ok - d
ok - e # skip no disk
EOF2
expect "comments and indented output are not results" "1 0 0" 0 <<'EOF2'
# ok: a check inside a test
    not ok - an indented line
# not ok
okay, not a result
ok - the one result
EOF2
expect "fewer results than the plan: did not complete" "1 1 0" 1 <<'EOF2'
1..3
ok 1 a
EOF2
expect "a plan met with exit 0" "3 0 0" 0 <<'EOF2'
1..3
ok 1 a
ok 2 b
ok 3 c
EOF2
expect "no plan, bad exit status, no failed result: did not complete" "1 1 0" 2 <<'EOF2'
ok - a
EOF2
expect "no plan, bad exit status explained by a failed result" "1 1 0" 1 <<'EOF2'
ok - a
not ok - b
EOF2
expect "guest log rule: all passed, exit 0: the log check passes" "3 0 0" 0 "guest log" <<'EOF2'
1..2
ok 1 a
ok 2 b
EOF2
expect "guest log rule: all passed, exit 1: the log check fails" "2 1 0" 1 "guest log" <<'EOF2'
1..2
ok 1 a
ok 2 b
EOF2
expect "guest log rule: a guest that never ran the tests did not complete" "0 1 0" 1 "guest log" <<'EOF2'
EOF2
expect "an empty stage with exit 0 is no result" "0 0 0" 0 <<'EOF2'
EOF2
exit $rc
