#!/usr/bin/env bash
# scripts/check-kdir (run by `make module KDIR=...`) names what a kernel
# build tree lacks for rdm's Rust modules instead of letting Kbuild fail
# deep inside: no .config, no CONFIG_RUST, CONFIG_MODVERSIONS, no Rust
# artefacts, another rustc or bindgen than the kernel's; without
# device-mapper it builds rdm.ko alone (exit 2). Fake trees only: the real
# build against the cached test kernel is make check's own build stage.
set -u
here=$(cd "$(dirname "$0")" && pwd)
check=$here/../../scripts/check-kdir
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-kdir.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
rustc_v=$(rustc --version 2>/dev/null) bindgen_v=$(bindgen --version 2>/dev/null)
# tree CONFIG-LINE...: a fake 6.12.5 tree with Rust artefacts and .config.
tree() {
	rm -rf "$tmp/k"
	mkdir -p "$tmp/k/rust"
	: >"$tmp/k/rust/libkernel.rmeta"
	printf 'kernelversion:\n\t@echo 6.12.5\n' >"$tmp/k/Makefile"
	printf '%s\n' "$@" >"$tmp/k/.config"
}
good=(CONFIG_RUST=y "CONFIG_RUSTC_VERSION_TEXT=\"$rustc_v\"" "CONFIG_BINDGEN_VERSION_TEXT=\"$bindgen_v\"")
said() { # said REGEX: the output matches it ("": there is none)
	if [ -z "$1" ]; then
		[ ! -s "$tmp/out" ]
	else
		grep -Eq -- "$1" "$tmp/out"
	fi
}
expect() { # expect RC MESSAGE-REGEX WHAT
	local got
	"$check" "$tmp/k" >"$tmp/out" 2>&1
	got=$?
	if [ "$got" = "$1" ] && said "$2"; then
		echo "ok - check-kdir: $3"
	else
		echo "not ok - check-kdir: $3 (exit $got, wanted $1 and /$2/)"
		sed 's/^/# /' "$tmp/out"
		rc=1
	fi
}
tree "${good[@]}" CONFIG_BLK_DEV_DM=m
expect 0 "" "a complete tree with device-mapper passes, silently"
tree "${good[@]}"
expect 2 "CONFIG_BLK_DEV_DM is not set: building rdm.ko only" "without device-mapper: rdm.ko alone"
tree CONFIG_BLK_DEV_DM=m
expect 1 "CONFIG_RUST is not set: this kernel cannot load Rust modules" "no CONFIG_RUST"
tree "${good[@]}" CONFIG_MODVERSIONS=y
expect 1 "CONFIG_MODVERSIONS=y: 6.12 cannot build out-of-tree Rust modules" "CONFIG_MODVERSIONS"
tree CONFIG_RUST=y 'CONFIG_RUSTC_VERSION_TEXT="rustc 1.78.0 (9b00956e5 2024-04-29)"'
expect 1 "built with 'rustc 1\.78\.0 .*', but rustc is 'rustc " "another rustc than the kernel's"
tree "${good[@]}"
rm "$tmp/k/rust/libkernel.rmeta"
expect 1 "rust/libkernel.rmeta is missing" "no Rust artefacts"
tree "${good[@]}"
rm "$tmp/k/.config"
expect 1 "no .config" "not a configured tree"
tree "${good[@]}"
printf 'kernelversion:\n\t@echo 6.6.30\n' >"$tmp/k/Makefile"
expect 1 "kernel 6.6.30: rdm is built against 6.12" "another kernel version"
# make module stops at the check, before Kbuild.
tree CONFIG_BLK_DEV_DM=m
if out=$(make -s -C "$here/../.." module KDIR="$tmp/k" 2>&1); then
	echo "not ok - make module KDIR=<tree without CONFIG_RUST> succeeded"
	rc=1
elif printf '%s\n' "$out" | grep -q "CONFIG_RUST is not set" && ! printf '%s\n' "$out" | grep -q "Kbuild\|scripts/Makefile"; then
	echo "ok - make module KDIR=<tree without CONFIG_RUST> fails with the reason"
else
	echo "not ok - make module KDIR=<tree without CONFIG_RUST>: $out"
	rc=1
fi
exit $rc
