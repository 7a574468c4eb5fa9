#!/usr/bin/env bash
# Runs inside the bench VM (scripts/bench): identical fio workloads against
# the raw disk, the kernel's dm-linear and rdm's linear, in the same boot,
# each stack measured twice in A-B-B-A order to cancel drift. Writes one
# JSON object per measurement to $RDM_OUT/results.jsonl.
set -u
. "$(dirname "$0")/../vm/test_common.sh"
out=${RDM_OUT:?}
mkdir -p "$out"
runtime=${RDM_BENCH_RUNTIME:-8}
disk=$VDA
size=$(blockdev --getsz $disk)
export DM_DISABLE_UDEV=1

# name rw bs iodepth numjobs
workloads=(
	"seq-read-1M read 1M 8 1"
	"seq-write-1M write 1M 8 1"
	"rand-read-4k randread 4k 32 2"
	"rand-write-4k randwrite 4k 32 2"
)

measure() { # measure STACK DEVICE
	local stack=$1 dev=$2 w name rw bs qd jobs json
	for w in "${workloads[@]}"; do
		read -r name rw bs qd jobs <<<"$w"
		json=$(fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio \
			--rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs="$jobs" --group_reporting \
			--time_based --runtime="$runtime" --ramp_time=1 --size=512M \
			--output-format=json 2>/dev/null) || { echo "fio failed on $stack $name" >&2; return 1; }
		printf '%s' "$json" | python3 -c '
import json, sys
stack, name, rw = sys.argv[1:4]
job = json.load(sys.stdin)["jobs"][0]
side = job["read"] if "read" in rw else job["write"]
print(json.dumps({"stack": stack, "workload": name, "iops": side["iops"], "bw_kib": side["bw"]}))
' "$stack" "$name" "$rw" >>"$out/results.jsonl"
		echo "$stack $name done"
	done
}

with_dm_linear() {
	modprobe -d "$RDM_MODROOT" dm-mod || return 1
	dmsetup create --noudevsync blin --table "0 $size linear $disk 0" || return 1
	measure dm-linear /dev/mapper/blin
	dmsetup remove --noudevsync blin
	modprobe -r -d "$RDM_MODROOT" dm-mod
}

with_rdm_linear() {
	insmod "$RDM_KO" || return 1
	rdmsetup create blin --table "0 $size linear $disk 0" || return 1
	measure rdm-linear /dev/rdm/blin
	rdmsetup remove blin
	rmmod rdm
}

: >"$out/results.jsonl"
measure raw $disk
with_dm_linear || exit 1
with_rdm_linear || exit 1
with_rdm_linear || exit 1
with_dm_linear || exit 1
measure raw $disk
echo "bench: $(wc -l <"$out/results.jsonl") measurements"
