#!/usr/bin/env bash
# ioctl fuzzing, bounded: random dm ioctl buffers (RDM_FUZZ_COUNT, default
# 10000) and valid-looking command sequences checked against a model; then
# every device must go and rdm must unload. The guest log is checked for
# any splat by the runner. The seed is printed; RDM_FUZZ_SEED replays it.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
defer rdm_cleanup
rdm_load

seed_arg=()
[ -n "${RDM_FUZZ_SEED:-}" ] && seed_arg=(--seed "$RDM_FUZZ_SEED")
out=$(rdm-ioctl-fuzz "${seed_arg[@]}" --count "${RDM_FUZZ_COUNT:-10000}" --sequence 400 --disk "$VDA") ||
	{ echo "$out"; fail "fuzzer found the driver's devices differ from the model"; }
printf '%s\n' "$out" | sed 's/^/# /'
expect_match "$out" "^tried [0-9]+ random buffers" "fuzzer ran"
# Whatever the fuzz left (suspended or not), remove it and unload.
for name in $(rdmsetup ls | cut -f1); do
	[ "$name" = "No devices found" ] && break
	rdmsetup resume "$name" 2>/dev/null
done
rdmsetup remove_all || fail "remove_all after fuzzing"
expect_eq "$(rdmsetup ls)" "No devices found" "no device left"
rdm_unload
log "ok: rdm unloads after fuzzing (no leaked module reference)"
exit "$KSFT_PASS"
