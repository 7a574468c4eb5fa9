#!/usr/bin/env bash
# Snapshot tests of the suite run again on rdm's engine hosted by the
# kernel's dm (RDM_SNAP_HOST=dm: rdm-dm.ko dm_names=1 over dm-mod, driven by
# Debian's dmsetup): the I/O paths against the oracle, acknowledgement after
# commit, overflow and its event, a merge, teardown races. `make
# check-dmhost` runs every snapshot test so (RDM_DMHOST_TESTS); this is
# make check's share of it, chosen to cover each path of src/dmhost.rs in
# a few minutes.
. "$(dirname "$0")/test_common.sh"
require_vm
here=$(cd "$(dirname "$0")" && pwd)
tests=${RDM_DMHOST_SUBSET:-test_snapshot_basics_against_oracle.sh test_snapshot_write_acked_after_commit.sh test_snapshot_overflow_invalidates.sh test_merge_copies_every_chunk_back.sh test_snapshot_teardown_races.sh}
failed=''
for t in $tests; do
	log "--- $t on rdm's engine in the kernel's dm"
	RDM_SNAP_HOST=dm "$here/$t" 2>&1 | sed -u 's/^/# /'
	rc=${PIPESTATUS[0]}
	case $rc in
	0) log "ok: $t" ;;
	4) log "skipped: $t" ;;
	*) log "FAILED: $t (exit $rc)"; failed="$failed $t" ;;
	esac
done
[ -z "$failed" ] || fail "on rdm's engine in the kernel's dm:$failed"
