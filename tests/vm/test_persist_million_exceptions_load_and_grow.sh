#!/usr/bin/env bash
# A persistent snapshot of more than a million scattered exceptions,
# loaded and grown (issue 13, item 6: the exception table must not need
# high-order allocations however large it grows). tests/vm/bigcow.sh
# builds a COW image in dm-snapshot's format with 1,050,000 exceptions,
# none of which form a run, on a sparse loop device. The snapshot is taken
# with the origin suspended (the activation time is printed, not
# asserted); its status line shows dm's figures for the image and rdm's
# stats message 1,050,000 exceptions in as many runs (the table's bytes
# per exception are printed and must stay within 32 per run); sampled
# chunks read their COW data, the others the origin's. Then 64 MiB of
# origin writes (half in order, half in random order) add 8,180
# exceptions beyond the load (over 3,000 new runs: the table grows new
# leaves): the snapshot stays
# valid, its stats count them, it still reads right, and after its
# removal the metadata on disk holds every exception with the allocated
# and metadata figures its status gave. Runs on the kernel's dm first.
. "$(dirname "$0")/test_common.sh"
require_vm
. "$(dirname "$0")/bigcow.sh"
cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	rdm_loaded && rdmsetup remove_all >/dev/null 2>&1
	big_teardown
}
defer cleanup
big_setup

scenario() {
	big_image
	# shellcheck disable=SC2119 # no command prefix: a plain load
	big_load
	# shellcheck disable=SC2119 # no command prefix: a plain grow
	big_grow
	expect_eq "$(dev_count)" 0 "all devices gone"
}
run_both scenario
exit "$KSFT_PASS"
