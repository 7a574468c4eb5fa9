#!/usr/bin/env bash
# tests/vm/run_tests.sh sharing one list between several runners (make
# check's guests, RDM_CLAIM_DIR), on the host: a copy of run_tests.sh in a
# directory of small fake tests (they pass, fail or skip, and append their
# name to a trace), run three times at once on one claim directory. Every
# test must run exactly once, each runner's TAP must end in a plan that
# counts what it ran, every test's exit status must be in the claim
# directory, and a runner's exit status must say whether one of its tests
# failed. Also: --list prints the tests and runs none.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-claim.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
ok() { echo "ok - run_tests.sh: $1"; }
bad() {
	echo "not ok - run_tests.sh: $1"
	rc=1
}

mkdir "$tmp/vm" "$tmp/claim"
cp "$here/../vm/run_tests.sh" "$tmp/vm/"
# The library every test sources: must never be taken for a test.
echo 'exit 1' >"$tmp/vm/test_common.sh"
want=()
for i in $(seq -w 1 12); do
	t=test_fake_case$i.sh
	status=0
	[ "$i" = 05 ] && status=1
	[ "$i" = 09 ] && status=4
	printf '#!/bin/sh\necho %s >>%q\nsleep 0.1\nexit %s\n' "$t" "$tmp/trace" "$status" >"$tmp/vm/$t"
	chmod +x "$tmp/vm/$t"
	want+=("$t")
done

listed=$("$tmp/vm/run_tests.sh" --list)
if [ "$listed" = "$(printf '%s\n' "${want[@]}")" ] && [ ! -e "$tmp/trace" ]; then
	ok "--list prints every test but test_common.sh, and runs none"
else
	bad "--list printed '$listed'"
fi

pids=()
for r in 1 2 3; do
	RDM_CLAIM_DIR=$tmp/claim "$tmp/vm/run_tests.sh" >"$tmp/out-$r" 2>&1 &
	pids+=($!)
done
failed_runners=0
for r in 1 2 3; do
	wait "${pids[$((r - 1))]}" || failed_runners=$((failed_runners + 1))
done

ran=$(sort "$tmp/trace")
if [ "$ran" = "$(printf '%s\n' "${want[@]}")" ]; then
	ok "three runners on one claim directory ran every test exactly once"
else
	bad "the runners ran: $(echo "$ran" | tr '\n' ' ')"
fi

plans_ok=1 results=0
for r in 1 2 3; do
	n=$(grep -cE '^(not )?ok ' "$tmp/out-$r")
	results=$((results + n))
	[ "$(grep -v "^#" "$tmp/out-$r" | tail -n 1)" = "1..$n" ] || plans_ok=''
	grep -q '^1\.\.' <(head -n 2 "$tmp/out-$r") && plans_ok=''
done
if [ -n "$plans_ok" ] && [ "$results" -eq "${#want[@]}" ]; then
	ok "each runner's TAP ends in a plan that counts what it ran ($results results in all)"
else
	bad "plans or result counts are wrong ($results results)"
	for r in 1 2 3; do sed "s/^/#   [$r] /" "$tmp/out-$r"; done
fi

statuses=$(for t in "${want[@]}"; do cat "$tmp/claim/$t/rc" 2>/dev/null || echo none; done | tr '\n' ' ')
if [ "$statuses" = "0 0 0 0 1 0 0 0 4 0 0 0 " ]; then
	ok "each test's exit status is in the claim directory"
else
	bad "claim directory statuses: $statuses"
fi

if [ "$failed_runners" -eq 1 ] && grep -q '^not ok .*test_fake_case05.sh' "$tmp"/out-*; then
	ok "only the runner that ran the failing test exits non-zero"
else
	bad "$failed_runners runners exited non-zero"
fi
exit $rc
