# SPDX-License-Identifier: GPL-2.0
# rdm: the two commands are `make demo` and `make check` (see README.md).
# Every target sets up what it needs (packages, the cached test kernel).
#
#   make            build rdm.ko and the tools (rdmsetup, rdm-ioctl-probe)
#   make demo       boot the test VM and show rdm at work
#   make check      host tests + VM tests, ending in "N passed, N failed"
#   make check-debug  the same on the debug kernel (KASAN, kmemleak, ...)
#   make bench      fio: rdm against the kernel's dm-linear and dm-snapshot
#   make stress     the stress test with its oracle, long (RDM_STRESS_SECONDS=600)
#   make powercut   power cuts of a persistent snapshot, long (RDM_POWERCUT_CUTS=20)
#   make lvm2-suite LVM2's own snapshot tests on the kernel's dm and on rdm (long)
#   make clippy     rebuild rdm.ko with CLIPPY=1
#   make fmt        format the module and the host crates
#   make bindings   regenerate src/core/dm_ioctl_sys.rs from the kernel header
#   make kernel     only set up and build the cached test kernel
#   make clean

LLVM ?= -19
KERNEL_BUILD := $(CURDIR)/scripts/kernel-build
# Module sources for rustfmt (cargo fmt covers the host crates).
MODULE_RS := src/rdm_main.rs src/rdm_dm_main.rs

.PHONY: all module tools kernel demo bench stress powercut lvm2-suite check check-debug clippy fmt fmt-check bindings clean

all: module tools

kernel:
	@$(KERNEL_BUILD) >/dev/null

# Built against the kernel of $RDM_KERNEL_VARIANT; switching kernels
# cleans the module's objects first (.kdir remembers the last one).
module:
	@kdir=$$($(KERNEL_BUILD)) && \
	if [ "$$(cat .kdir 2>/dev/null)" != "$$kdir" ]; then \
		$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) clean; echo "$$kdir" >.kdir; fi && \
	$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) modules

tools: kernel
	@cargo build --quiet --release --workspace

clippy:
	@kdir=$$($(KERNEL_BUILD)) && rm -f src/rdm_main.o src/rdm_dm_main.o rust/helpers.o rust/dm/*.o && \
		$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) CLIPPY=1 W=1 modules

fmt:
	@cargo fmt --all
	@rustfmt --edition 2021 $(MODULE_RS)

fmt-check:
	@cargo fmt --all --check
	@rustfmt --edition 2021 --check $(MODULE_RS)

bindings:
	@scripts/gen-bindings "$$($(KERNEL_BUILD))"

demo: all
	@scripts/vm-run --disks 2 -- scripts/demo

check:
	@scripts/check

# Benchmark against the kernel's dm-linear and dm-snapshot in the same guest
# boot (results/bench-*/: report.md, report.json, ratios.svg).
bench:
	@scripts/bench

# tests/vm/test_stress_randomised_io_oracle.sh for RDM_STRESS_SECONDS (make check: 25 s).
RDM_STRESS_SECONDS ?= 600
stress: all
	@scripts/vm-run --timeout $$(($(RDM_STRESS_SECONDS) + 900)) -- env RDM_STRESS_SECONDS=$(RDM_STRESS_SECONDS) \
		RDM_TEST_TIMEOUT=$$(($(RDM_STRESS_SECONDS) + 600)) tests/vm/run_tests.sh test_stress_randomised_io_oracle.sh

# scripts/powercut with more cuts (make check runs 3).
RDM_POWERCUT_CUTS ?= 20
powercut: all
	@RDM_POWERCUT_CUTS=$(RDM_POWERCUT_CUTS) scripts/powercut

# LVM2's own test suite (Debian's lvm2 2.03.16 source, built once into the
# cache by scripts/lvm2-suite) run by its own runner in one guest, on the
# kernel's dm and then on rdm (dm_compat=1): the tests whose names match
# RDM_LVM2_TESTS (default: snap) but not those matching RDM_LVM2_SKIP
# (comma-separated name parts), in the no-udev flavour unless
# RDM_LVM2_FLAVOUR=udev-vanilla. Results in results/lvm2-suite-<date>/.
RDM_LVM2_TESTS ?= snap
RDM_LVM2_SKIP ?=
RDM_LVM2_FLAVOUR ?= ndev-vanilla
lvm2-suite: all
	@scripts/lvm2-suite build >/dev/null
	@out=results/lvm2-suite-$$(date +%Y%m%d-%H%M%S) && \
	scripts/vm-run --disks 0 --memory 3G --timeout 21600 --results "$$out" \
		$$([ "$(RDM_LVM2_FLAVOUR)" = udev-vanilla ] && echo --udev) -- \
		env RDM_LVM2_TESTS=$(RDM_LVM2_TESTS) RDM_LVM2_SKIP=$(RDM_LVM2_SKIP) scripts/lvm2-suite run --flavour $(RDM_LVM2_FLAVOUR) && \
	echo "results in $$out"

# The same suite on the debug kernel (KASAN, KFENCE, kmemleak, debug objects).
check-debug:
	@RDM_KERNEL_VARIANT=debug scripts/check

clean:
	@kdir=$$($(KERNEL_BUILD)) && $(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) clean
	@cargo clean
