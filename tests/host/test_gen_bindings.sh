#!/usr/bin/env bash
# scripts/gen-bindings --check compares declarations, not the stamp: a new
# point release of the kernel source (Debian moves linux-source-6.12 from
# one to the next) passes, a change of dm-ioctl.h fails. Runs against a
# copy of the test kernel's exported headers ($RDM_KDIR, set by
# scripts/check) behind a stand-in kernel Makefile.
set -u
here=$(cd "$(dirname "$0")" && pwd)
gen=$here/../../scripts/gen-bindings
kdir=${RDM_KDIR:-}
if [ -z "$kdir" ] || [ ! -f "$kdir/usr/include/linux/dm-ioctl.h" ]; then
	echo "ok - gen-bindings --check # SKIP needs RDM_KDIR with exported headers (make check sets it)"
	exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-genb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
# fake_kernel VERSION: a tree whose `make kernelversion` prints VERSION.
fake_kernel() {
	rm -rf "$tmp/k"
	mkdir -p "$tmp/k/usr"
	cp -a "$kdir/usr/include" "$tmp/k/usr/"
	printf 'kernelversion:\n\t@echo %s\n' "$1" >"$tmp/k/Makefile"
}
expect() { # expect pass|fail WHAT
	local want=$1 got=pass
	"$gen" --check "$tmp/k" >"$tmp/out" 2>&1 || got=fail
	if [ "$got" = "$want" ]; then
		echo "ok - gen-bindings --check: $2"
	else
		echo "not ok - gen-bindings --check: $2: got $got, expected $want"
		sed 's/^/    /' "$tmp/out" | tail -n 20
		rc=1
	fi
}
fake_kernel 6.12.999
expect pass "another point release of 6.12 passes"
fake_kernel 6.12.999
sed -i 's/^#define DM_VERSION_MINOR\s.*/#define DM_VERSION_MINOR\t99/' "$tmp/k/usr/include/linux/dm-ioctl.h"
expect fail "a changed constant in dm-ioctl.h fails"
fake_kernel 6.12.999
sed -i 's/^\(\s*__u32 target_count;\)/\1\n\t__u32 rdm_test_added;/' "$tmp/k/usr/include/linux/dm-ioctl.h"
expect fail "a field added to struct dm_ioctl fails"
exit $rc
