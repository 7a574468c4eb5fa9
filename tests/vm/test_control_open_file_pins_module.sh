#!/usr/bin/env bash
# An open control file pins the module: rmmod fails while it is open and
# works once it is closed (the file operations carry THIS_MODULE).
. "$(dirname "$0")/test_common.sh"
require_vm

rdm_load
exec 3<>"$RDM_CONTROL"
if rmmod rdm 2>/dev/null; then
	fail "rmmod succeeded while $RDM_CONTROL was open"
fi
log "ok: rmmod refused while the control file is open"
expect_eq "$(rdm_refcount)" 1 "the open file holds one module reference"
exec 3>&-
rdm_unload
log "ok: rmmod works after close"

# Open/close many times, concurrently, then unload: no reference leaks.
rdm_load
for _ in $(seq 1 8); do
	(for _ in $(seq 1 25); do rdmsetup version >/dev/null || exit 1; done) &
done
wait || fail "concurrent rdmsetup version failed"
expect_eq "$(rdm_refcount)" 0 "no module reference left"
rdm_unload
log "ok: 200 concurrent open/ioctl/close cycles left no reference"
exit "$KSFT_PASS"
