#!/usr/bin/env bash
# The guest-log checker must fail on every kind of kernel report and pass a
# clean log: fed with captured logs, so the safety net cannot fail open.
set -u
here=$(cd "$(dirname "$0")" && pwd)
check=$here/../../scripts/check-klog
rc=0
expect() { # expect pass|fail LOG
	local want=$1 log=$here/klog/$2 got=pass
	"$check" "$log" >/dev/null 2>&1 || got=fail
	if [ "$got" = "$want" ]; then
		echo "ok - check-klog says $want on $2"
	else
		echo "not ok - check-klog says $got on $2, expected $want"
		rc=1
	fi
}
expect pass clean.log
for log in warning.log lockdep.log lockdep-nowarn.log bug.log hung.log kasan.log taint.log; do
	expect fail "$log"
done
# A log that is missing or empty is a failure, never a pass.
expect fail does-not-exist.log
: >"${TMPDIR:-/tmp}/rdm-empty.log"
"$check" "${TMPDIR:-/tmp}/rdm-empty.log" >/dev/null 2>&1 &&
	{ echo "not ok - check-klog passed an empty log"; rc=1; } ||
	echo "ok - check-klog fails an empty log"
rm -f "${TMPDIR:-/tmp}/rdm-empty.log"
exit $rc
