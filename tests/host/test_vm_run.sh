#!/usr/bin/env bash
# scripts/vm-run end to end: it passes the command's exit status through,
# and it fails a run whose command succeeded but whose guest kernel log got
# a WARNING (injected through /dev/kmsg), so the VM tests' safety net is
# known to hold on the real path, not only on captured logs.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
run() { "$top/scripts/vm-run" --disks 0 --timeout 300 -- "$@" >/dev/null 2>&1; echo $?; }
rc=0
check() { # check WHAT GOT WANT
	if [ "$2" = "$3" ]; then echo "ok - vm-run: $1"; else
		echo "not ok - vm-run: $1 (exit $2, expected $3)"; rc=1; fi
}
check "a passing command exits 0" "$(run true)" 0
check "a command's status is passed through" "$(run sh -c 'exit 3')" 3
got=$(run sh -c 'echo "WARNING: CPU: 0 PID: 1 at injected by rdm test_vm_run" >/dev/kmsg')
check "a guest WARNING fails the run" "$got" 1
exit $rc
