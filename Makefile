# SPDX-License-Identifier: GPL-2.0
# rdm: the two commands are `make demo` and `make check` (see README.md).
# Every target sets up what it needs (packages, the cached test kernel).
#
#   make            build rdm.ko, rdm-dm.ko and the tools (rdmsetup, rdm-ioctl-probe)
#   make module KDIR=/path/to/build   the modules for another Rust-enabled
#                   6.12 kernel (scripts/check-kdir says what it lacks)
#   make install    modules and tools into $(DESTDIR) (KDIR as above)
#   make demo       boot the test VM and show rdm at work
#   make check      host tests + VM tests, ending in "N passed, N failed"
#   make check-debug  the same on the debug kernel (KASAN, kmemleak, ...)
#   make bench      fio: rdm against the kernel's dm-linear and dm-snapshot
#   make check-dmhost  the snapshot tests on rdm-dm.ko in the kernel's dm
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

.PHONY: all module install tools kernel demo bench stress check-dmhost powercut lvm2-suite check check-debug clippy fmt fmt-check bindings clean

all: module tools

kernel:
	@$(KERNEL_BUILD) >/dev/null

# Built against KDIR if given (checked first), else the cached test kernel
# of $RDM_KERNEL_VARIANT; switching kernels cleans the module's objects
# first (.kdir remembers the last one).
KDIR ?=
KDIR_OF = $(if $(KDIR),$(KDIR),$$($(KERNEL_BUILD)))
module:
	@if [ -n "$(KDIR)" ]; then scripts/check-kdir "$(KDIR)"; rc=$$?; [ $$rc != 1 ] || exit 1; fi; \
	kdir=$(KDIR_OF) && \
	if [ "$$(cat .kdir 2>/dev/null)" != "$$kdir" ]; then \
		$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) clean; echo "$$kdir" >.kdir; fi && \
	$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) modules

tools: kernel
	@cargo build --quiet --release --workspace

# DESTDIR: a staging root. The modules go to
# $(DESTDIR)/lib/modules/<version>/updates/ (run depmod there), the tools to
# $(DESTDIR)/usr/sbin.
DESTDIR ?=
install: module tools
	@kdir=$(KDIR_OF) && \
	$(MAKE) -s -C "$$kdir" LLVM=$(LLVM) M=$(CURDIR) INSTALL_MOD_PATH=$(abspath $(DESTDIR)) \
		INSTALL_MOD_DIR=updates DEPMOD=true modules_install && \
	install -D -m 0755 target/release/rdmsetup $(abspath $(DESTDIR))/usr/sbin/rdmsetup && \
	echo "installed in $(abspath $(DESTDIR))/lib/modules/$$(make -s -C "$$kdir" kernelrelease)/updates and $(abspath $(DESTDIR))/usr/sbin"

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

# Every snapshot test on rdm's engine hosted by the kernel's dm (rdm-dm.ko
# dm_names=1, driven by dmsetup: RDM_SNAP_HOST=dm), in one guest; make
# check runs a share of them (test_dmhost_snapshot_tests_on_kernel_dm.sh).
RDM_DMHOST_TESTS ?= test_snapshot_basics_against_oracle.sh test_snapshot_copies_in_flight.sh \
	test_snapshot_reads_tracked_by_chunk.sh test_snapshot_write_acked_after_commit.sh \
	test_snapshot_teardown_races.sh test_persist_images_and_status.sh test_snapshot_bad_tables_refused.sh \
	test_snapshot_chunk_sizes.sh test_snapshot_overflow_invalidates.sh test_snapshot_odd_sizes.sh \
	test_merge_copies_every_chunk_back.sh test_snapshot_stacked.sh test_persist_4k_logical_blocks.sh \
	test_snapshot_many_of_one_origin.sh test_merge_refusals_and_failing_cow.sh \
	test_persist_bad_on_disk_input.sh test_snapshot_cow_grows_and_shrinks.sh test_stress_randomised_io_oracle.sh
check-dmhost: all
	@scripts/vm-run --timeout 5400 -- env RDM_SNAP_HOST=dm RDM_TEST_TIMEOUT=900 \
		tests/vm/run_tests.sh $(RDM_DMHOST_TESTS)

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
