# Shared helpers for rdm's scripts. Source it; do not run it.
# shellcheck shell=bash
# The settings here are read by the scripts that source this file.
# shellcheck disable=SC2034

RDM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RDM_CACHE=${RDM_CACHE:-$HOME/.cache/rdm}
RDM_LLVM=-19
RDM_KSRC_PKG=linux-source-6.12
RDM_KSRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
RDM_BINDGEN_VERSION=0.73.2
RDM_VNG_VERSION=1.42

# Make the tools the setup installed reachable.
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"

rdm_log() { printf 'rdm: %s\n' "$*" >&2; }
rdm_die() { printf 'rdm: error: %s\n' "$*" >&2; exit 1; }

# The config fragments of a kernel variant ("" is the normal test kernel).
rdm_fragments() {
	echo "$RDM_TOP/scripts/kconfig/rdm.config"
	if [ -n "${1:-}" ]; then
		echo "$RDM_TOP/scripts/kconfig/rdm-$1.config"
	fi
}

# The cache directory of a kernel variant: keyed by the kernel source
# package's version and a hash of everything that decides the build (the
# fragments, the Rust and bindgen toolchain the module must match).
rdm_kdir() {
	local variant=${1:-} ver key
	ver=$(dpkg-query -W -f='${Version}' "$RDM_KSRC_PKG" 2>/dev/null) ||
		rdm_die "$RDM_KSRC_PKG is not installed (run scripts/setup-deps)"
	key=$( {
		# shellcheck disable=SC2046
		cat $(rdm_fragments "$variant")
		rustc --version
		bindgen --version
		echo "llvm$RDM_LLVM"
	} | sha256sum | cut -c1-12)
	echo "$RDM_CACHE/linux-$ver${variant:+-$variant}-$key"
}
