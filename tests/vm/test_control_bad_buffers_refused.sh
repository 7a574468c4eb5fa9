#!/usr/bin/env bash
# Bad control buffers: each is refused with the right errno and a kernel
# log line, and nothing is read past the caller's buffer (it ends at an
# unmapped page, so an over-read would be EFAULT or worse, not a pass).
. "$(dirname "$0")/test_common.sh"
require_vm

rdm_load

# probe WHAT EXPECTED-RESULT LOG-REGEX ARGS...
probe() {
	local what=$1 want=$2 logre=$3 out
	shift 3
	klog_mark
	out=$(rdm-ioctl-probe "$@") || fail "$what: probe crashed: $out"
	expect_match "$out" "^result $want\$" "$what -> $want"
	if [ -n "$logre" ]; then
		expect_match "$(klog_since_mark)" "$logre" "$what is logged"
	fi
	PROBE_OUT=$out
}

probe "DM_VERSION" OK "" --nr 0
expect_match "$PROBE_OUT" '^version 4\.48\.0$' "DM_VERSION writes the version back"

probe "non-dm ioctl type" ENOTTY "not a device-mapper ioctl" --request 0xc1385400
probe "unknown dm command" ENOTTY "unknown device-mapper command" --nr 0x7f
probe "wrong major version" EINVAL "ioctl interface mismatch" --nr 2 --version 3.0.0
expect_match "$PROBE_OUT" '^version 4\.48\.0$' "a mismatch still reports the driver version"
probe "newer minor version" EINVAL "ioctl interface mismatch" --nr 2 --version 4.99.0
probe "data_size below the header" EINVAL "data size .* smaller" --nr 2 --data-size 304
probe "data_size zero" EINVAL "data size .* smaller" --nr 2 --data-size 0
probe "data_size absurdly large" EINVAL "data size .* larger" --nr 2 --data-size 0xffffffff
probe "data_size past the buffer" EFAULT "" --nr 2 --buffer-len 4096 --data-size 8192
probe "buffer shorter than the header" EFAULT "" --nr 2 --buffer-len 100 --data-size 400
probe "NULL buffer" EFAULT "" --nr 2 --null
probe "version-only buffer" EFAULT "" --nr 0 --buffer-len 8

# After all that the driver still answers and unloads cleanly.
rdmsetup version >/dev/null || fail "driver stopped answering"
rdm_unload
exit "$KSFT_PASS"
