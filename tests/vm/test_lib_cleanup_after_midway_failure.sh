#!/usr/bin/env bash
# The test library's cleanup stack (defer in test_common.sh) on real
# devices: a throwaway test that fails midway, in both of run_both's runs,
# with an origin and a snapshot mapped, a loop device attached and a reader
# running, leaves nothing behind: the reference run's devices and modules
# are gone before the rdm run starts, and after the test no device, module,
# loop device or process is left for the next test.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
tmp=/tmp/lib01
rm -rf $tmp
mkdir -p $tmp
defer rm -rf "$tmp"
truncate -s 4M $tmp/loop.img || fail "make the loop's file"

cat >$tmp/throwaway.sh <<'EOF'
. "$RDM_TOP/tests/vm/test_common.sh"
scenario() {
	# A clean start: the other implementation's run left nothing.
	[ "$(dev_count)" = 0 ] || fail "$IMPL: devices left by the run before: $(dm ls)"
	if [ "$IMPL" = rdm ]; then
		grep -q '^dm_snapshot ' /proc/modules && fail "rdm: dm-snapshot is still loaded"
	else
		rdm_loaded && fail "dm: rdm is still loaded"
	fi
	loop=$(losetup -f --show "$LIB_TMP"/loop.img) || fail "losetup"
	defer losetup -d "$loop"
	echo "$loop" >>"$LIB_TMP"/loops
	dm create orig --table "0 8192 snapshot-origin $VDA" || fail "create the origin"
	snap_take orig snap "0 8192 snapshot $VDA $VDB N 8"
	while :; do dd if="$DEVDIR"/snap of=/dev/null bs=4k count=1 iflag=direct status=none; done &
	defer stop_pids $!
	echo $! >>"$LIB_TMP"/pids
	echo "$IMPL" >>"$LIB_TMP"/runs
	fail "$IMPL: failing midway on purpose"
}
RDM_REF_KNOWN_BAD="the scenario fails on purpose" run_both scenario
EOF
out=$(LIB_TMP=$tmp bash $tmp/throwaway.sh 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/# | /'
expect_eq "$rc" 1 "the throwaway test fails"
expect_eq "$(tr '\n' ' ' <$tmp/runs)" "dm rdm " "both runs got to their failure"
expect_match "$out" "rdm: failing midway on purpose" "the rdm run started clean (its checks passed)"
# (A module with a device left could not have been unloaded.)
rdm_loaded && fail "rdm is left loaded"
log "ok: rdm is unloaded"
grep -Eq '^(dm_snapshot|dm_mod) ' /proc/modules && fail "the kernel's dm is left loaded"
log "ok: dm-snapshot and dm-mod are unloaded"
while read -r l; do
	losetup "$l" >/dev/null 2>&1 && fail "loop device $l is left attached"
done <$tmp/loops
log "ok: the loop devices are detached"
while read -r p; do
	kill -0 "$p" 2>/dev/null && fail "the reader $p is left running"
done <$tmp/pids
log "ok: the readers are gone"
exit "$KSFT_PASS"
