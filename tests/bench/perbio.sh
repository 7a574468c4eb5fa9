#!/usr/bin/env bash
# Per-bio CPU cost of a pass-through linear device, rdm against the
# kernel's dm-linear, in one guest boot (issue 18, item 0). Runs inside
# the VM:
#
#   scripts/vm-run --disks 1 -- [env RDM_PERBIO_...=N] tests/bench/perbio.sh \
#       [NAME=MODULE.ko ...]
#
# (the variables go through `env` in the guest's command: the guest does
# not see the host's environment).
#
# Each stack is a linear device over a null_blk device of its own (no
# memory backing, completions inline: what is left is the block layer
# and the stacking driver), driven by fio with 4 KiB random reads
# (direct, libaio as make bench, or RDM_PERBIO_ENGINE) at queue depth 1
# and 32 (with io_uring, rdm's disk, which does not offer BLK_FEAT_NOWAIT
# as dm's does, has every I/O handed to an io-wq worker: that measures
# the punt, not the bio path); the raw null_blk device is
# measured too. Each NAME=MODULE.ko is an rdm module to measure (loaded
# in turn; default: rdm=$RDM_KO), so two builds of rdm can be compared in
# the same boot. The modules are loaded in A-B-...-B-A order,
# RDM_PERBIO_ROUNDS rounds (1); while one is loaded, dm-linear and rdm
# alternate RDM_PERBIO_ALTERNATIONS times (3), RDM_PERBIO_RUNTIME
# seconds each (2). At the end, per stack and queue depth, the best and
# median IOPS and CPU time per I/O (the host's other load only slows runs
# down: the best run is the closest to the stack's own cost).
#
# For each run it prints IOPS and the CPU time per I/O in microseconds:
# all CPUs' busy time (user, system, irq, softirq in /proc/stat) over the
# run, divided by the I/Os done. Under TCG the numbers only compare with
# each other, within one boot.
set -u
. "$(dirname "$0")/../vm/test_common.sh"
require_vm
runtime=${RDM_PERBIO_RUNTIME:-2}
rounds=${RDM_PERBIO_ROUNDS:-1}
alternations=${RDM_PERBIO_ALTERNATIONS:-3}
engine=${RDM_PERBIO_ENGINE:-libaio}
export DM_DISABLE_UDEV=1

mods=("$@")
[ ${#mods[@]} -gt 0 ] || mods=("rdm=$RDM_KO")

modprobe -d "$RDM_MODROOT" null_blk nr_devices=2 gb=4 bs=4096 irqmode=0 \
	memory_backed=0 submit_queues=2 || skip "no null_blk"
modprobe -d "$RDM_MODROOT" dm-mod || skip "no dm-mod"
size=$(blockdev --getsz /dev/nullb0)
dmsetup create --noudevsync plin --table "0 $size linear /dev/nullb0 0" || fail "dm create"

busy() { # all CPUs' busy jiffies
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

run() { # run STACK DEV QD
	local t0 t1 json
	t0=$(busy)
	json=$(fio --name=perbio --filename="$2" --direct=1 --ioengine="$engine" \
		--rw=randread --bs=4k --iodepth="$3" --numjobs=1 --time_based \
		--runtime="$runtime" --size=1G --norandommap --randrepeat=0 \
		--output-format=json 2>/dev/null) || fail "fio on $1"
	t1=$(busy)
	printf '%s' "$json" | python3 -c '
import json, os, sys
stack, qd, jiffies = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = json.load(sys.stdin)["jobs"][0]
r = job["read"]
hz = os.sysconf("SC_CLK_TCK")
us = jiffies * 1e6 / hz / max(r["total_ios"], 1)
iops, usr, sys_ = r["iops"], job["usr_cpu"], job["sys_cpu"]
print(f"{stack:12} qd={qd:<3} iops={iops:9.0f} cpu_us_per_io={us:7.2f} "
      f"fio_usr={usr:5.1f}% fio_sys={sys_:5.1f}%")
' "$1" "$3" $((t1 - t0))
}

with_rdm() { # with_rdm NAME=KO QD: K alternate runs of dm-linear and rdm
	local name=${1%%=*} ko=${1#*=}
	insmod "$ko" || fail "insmod $ko"
	rdmsetup create plin --table "0 $size linear /dev/nullb1 0" || fail "rdm create"
	for _ in $(seq "$alternations"); do
		run dm-linear /dev/mapper/plin "$2"
		run "$name" /dev/rdm/plin "$2"
	done
	rdmsetup remove plin || fail "rdm remove"
	rmmod rdm || fail "rmmod rdm"
}

txt=${RDM_OUT:-/tmp}/perbio.txt
mkdir -p "${txt%/*}"
for qd in 1 32; do
	for _ in $(seq "$rounds"); do
		run raw /dev/nullb1 $qd
		for m in "${mods[@]}"; do with_rdm "$m" $qd; done
		for ((i = ${#mods[@]} - 1; i >= 0; i--)); do with_rdm "${mods[i]}" $qd; done
	done
done | tee "$txt"
# The best run of each stack (interference from the host only slows a
# run down) and the median, per queue depth.
python3 - "$txt" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+qd=(\d+)\s+iops=\s*(\d+)\s+cpu_us_per_io=\s*([\d.]+)", line)
    if m:
        runs.setdefault((int(m[2]), m[1]), []).append((int(m[3]), float(m[4])))
for (qd, stack), v in sorted(runs.items()):
    iops = [i for i, _ in v]
    cpu = [c for _, c in v]
    print(f"summary qd={qd:<3} {stack:12} runs={len(v):2} best_iops={max(iops):7} "
          f"median_iops={statistics.median(iops):9.0f} min_cpu_us={min(cpu):7.2f} "
          f"median_cpu_us={statistics.median(cpu):7.2f}")
PY
dmsetup remove --noudevsync plin
modprobe -r -d "$RDM_MODROOT" dm-mod null_blk
