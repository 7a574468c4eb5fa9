#!/usr/bin/env bash
# Runs inside the bench VM (scripts/bench): identical fio workloads against
# the raw disk, the kernel's dm-linear and rdm's linear, then the kernel's
# dm-snapshot and rdm's snapshot targets, in the same boot, each stack
# measured in A-B-B-A order to cancel drift (pass-through: per workload,
# RDM_BENCH_PASSES rounds, both stacks loaded at once). Writes one JSON object
# per measurement to $RDM_OUT/results.jsonl.
#
# RDM_BENCH_ONLY=passthrough|snapshot runs one half; RDM_BENCH_ROWS=REGEX
# only the snapshot (and merge) rows whose name matches. RDM_BENCH_HOST=dm
# measures rdm's engine hosted by the kernel's dm (rdm-dm.ko dm_names=1,
# driven by dmsetup) in the place of rdm.ko, against dm-snapshot in the same
# boot: the rows keep their names (stack rdm-snapshot) and say host "dm".
set -u
. "$(dirname "$0")/../vm/test_common.sh"
out=${RDM_OUT:?}
mkdir -p "$out"
runtime=${RDM_BENCH_RUNTIME:-8}
disk=$VDA
cowdisk=$VDB
size=$(blockdev --getsz "$disk")
only=${RDM_BENCH_ONLY:-}
export DM_DISABLE_UDEV=1

# name rw bs iodepth numjobs
workloads=(
	"seq-read-1M read 1M 8 1"
	"seq-write-1M write 1M 8 1"
	"rand-read-4k randread 4k 32 2"
	"rand-write-4k randwrite 4k 32 2"
)

fio_passthrough() { # fio_passthrough STACK DEVICE WORKLOAD
	local stack=$1 dev=$2 name rw bs qd jobs json
	read -r name rw bs qd jobs <<<"$3"
	json=$(fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio \
		--rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs="$jobs" --group_reporting \
		--time_based --runtime="$runtime" --ramp_time=1 --size=512M \
		--output-format=json 2>/dev/null) || { echo "fio failed on $stack $name" >&2; return 1; }
	printf '%s' "$json" | python3 -c '
import json, sys
stack, name, rw = sys.argv[1:4]
job = json.load(sys.stdin)["jobs"][0]
side = job["read"] if "read" in rw else job["write"]
print(json.dumps({"stack": stack, "workload": name, "iops": side["iops"], "bw_kib": side["bw"], "kind": "passthrough"}))
' "$stack" "$name" "$rw" >>"$out/results.jsonl"
}

# Pass-through: the kernel's dm-linear and rdm's linear are loaded side by
# side (rdm has its own control device and major), each on its own disk
# (each claims its disk exclusively under its own holder, so they cannot
# share one), and each workload alternates between them run by run, A-B-B-A,
# for $passes rounds with the disks swapped every round, so that neither
# drift of the emulated machine (TCG speed changes by tens of percent over
# minutes) nor a difference between the two disk files favours one stack.
# The raw disk is measured before and after.
passes=${RDM_BENCH_PASSES:-2}

linear_pair() { # linear_pair DM_DISK RDM_DISK: (re)makes both devices
	dmsetup remove --noudevsync blin 2>/dev/null
	rdmsetup remove blin 2>/dev/null
	dmsetup create --noudevsync blin --table "0 $size linear $1 0" || return 1
	rdmsetup create blin --table "0 $size linear $2 0"
}

measure_passthrough() {
	local w p stack
	modprobe -d "$RDM_MODROOT" dm-mod || return 1
	insmod "$RDM_KO" || return 1
	# The disk files are sparse on the host: the first write to a region
	# allocates its pages there. Written once before any measurement, so
	# that the first write run on each disk (rdm's, in round 1 of
	# seq-write: the raw run had just filled the other disk) is not
	# charged for it.
	for d in $disk $cowdisk; do
		dd if=/dev/zero of="$d" bs=1M count=512 oflag=direct status=none || return 1
	done
	for w in "${workloads[@]}"; do
		fio_passthrough raw "$disk" "$w" || return 1
		for p in $(seq "$passes"); do
			if [ $((p % 2)) = 1 ]; then
				linear_pair "$disk" "$cowdisk"
			else
				linear_pair "$cowdisk" "$disk"
			fi || return 1
			for stack in dm-linear rdm-linear rdm-linear dm-linear; do
				case $stack in
				dm-linear) fio_passthrough $stack /dev/mapper/blin "$w" ;;
				rdm-linear) fio_passthrough $stack /dev/rdm/blin "$w" ;;
				esac || return 1
			done
		done
		fio_passthrough raw "$disk" "$w" || return 1
		echo "pass-through ${w%% *} done"
	done
	dmsetup remove --noudevsync blin
	rdmsetup remove blin
	rmmod rdm
	modprobe -r -d "$RDM_MODROOT" dm-mod
}

# ---- Snapshots: the kernel's dm-snapshot (dmsetup) against rdm (rdmsetup).
# Each row gets a fresh origin and fresh snapshots: a "first write" row
# writes every block of a 64 MiB region once (fio's random map), so each
# chunk is copied once, as when a backup snapshot is young. Rows with
# more snapshots than 64 MiB COW slices fit on the COW disk (64
# snapshots: 68 MiB each would need 4.3 GiB) write a smaller region, the
# largest power of two that fits (64 snapshots: 16 MiB of 20 MiB slices).
region_full_mib=64
region_mib=$region_full_mib
cow_sectors=$(((region_mib + 4) * 2048))

# snap_region N: sets region_mib and cow_sectors for N snapshots.
snap_region() {
	region_mib=$region_full_mib
	while [ $(($1 * (region_mib + 4) * 2048)) -gt "$(blockdev --getsz $cowdisk)" ]; do
		region_mib=$((region_mib / 2))
	done
	cow_sectors=$(((region_mib + 4) * 2048))
}

# name rw bs iodepth chunk_sectors snapshots target(origin|snap) before(none|copied) [store N|P]
snap_rows=(
	"cow-rand-write-4k randwrite 4k 32 128 1 origin none"
	"cow-seq-write-1M write 1M 8 128 1 origin none"
	"cow-rand-write-4k-chunk4k randwrite 4k 32 8 1 origin none"
	"cow-rand-write-4k-chunk256k randwrite 4k 32 512 1 origin none"
	"cow-seq-write-1M-4snap write 1M 8 128 4 origin none"
	"cow-seq-write-1M-16snap write 1M 8 128 16 origin none"
	"cow-seq-write-1M-64snap write 1M 8 128 64 origin none"
	"cow-seq-write-1M-chunk4k write 1M 8 8 1 origin none"
	"cow-seq-write-1M-4snap-chunk4k write 1M 8 8 4 origin none"
	"overwrite-rand-write-4k randwrite 4k 32 128 1 origin copied"
	"snap-read-copied-4k randread 4k 32 128 1 snap copied"
	"snap-read-uncopied-4k randread 4k 32 128 1 snap none"
	"cow-rand-write-4k-persistent randwrite 4k 32 128 1 origin none P"
	"cow-seq-write-1M-persistent write 1M 8 128 1 origin none P"
)

# snap_stack STACK: sets tool, devdir for dm-snapshot or rdm.
snap_stack() {
	case $1 in
	dm-snapshot) tool=(dmsetup --noudevsync) devdir=/dev/mapper ;;
	rdm-snapshot)
		if [ "${RDM_BENCH_HOST:-}" = dm ]; then
			tool=(dmsetup --noudevsync) devdir=/dev/mapper
		else
			tool=(rdmsetup) devdir=/dev/rdm
		fi
		;;
	esac
}

snap_setup() { # snap_setup CHUNK N STORE
	local i
	"${tool[@]}" create borig --table "0 $size snapshot-origin $disk" || return 1
	for i in $(seq 0 $(($2 - 1))); do
		"${tool[@]}" create bcow"$i" --table "0 $cow_sectors linear $cowdisk $((i * cow_sectors))" || return 1
	done
	"${tool[@]}" suspend borig || return 1
	for i in $(seq 0 $(($2 - 1))); do
		# A zero header: a new persistent snapshot, not the last row's.
		[ "$3" = P ] && dd if=/dev/zero of="$devdir"/bcow"$i" bs=4k count=1 oflag=direct status=none
		"${tool[@]}" create bsnap"$i" --table "0 $size snapshot $disk $devdir/bcow$i $3 $1" || return 1
	done
	"${tool[@]}" resume borig
}

snap_teardown() { # snap_teardown N
	local i
	for i in $(seq 0 $(($1 - 1))); do "${tool[@]}" remove bsnap"$i"; done
	"${tool[@]}" remove borig
	for i in $(seq 0 $(($1 - 1))); do "${tool[@]}" remove bcow"$i"; done
}

# What a snapshot's exception table costs, after the row's writes.
snap_memory() { # snap_memory STACK ROW
	local st exc
	st=$("${tool[@]}" status bsnap0 | awk '{print $4}')
	if [ "$1" = rdm-snapshot ]; then
		read -r _ exc _ runs _ bytes <<<"$("${tool[@]}" message bsnap0 0 stats)"
		printf '{"stack": "%s", "workload": "%s", "memory": {"exceptions": %s, "runs": %s, "table_bytes": %s, "status": "%s"}}\n' \
			"$1" "$2" "$exc" "$runs" "$bytes" "$st" >>"$out/results.jsonl"
	else
		printf '{"stack": "%s", "workload": "%s", "memory": {"status": "%s"}}\n' \
			"$1" "$2" "$st" >>"$out/results.jsonl"
	fi
}

measure_snap() { # measure_snap STACK ROW...
	local stack=$1 name rw bs qd chunk n target before store dev json extra
	read -r name rw bs qd chunk n target before store <<<"$2"
	snap_stack "$stack"
	snap_region "$n"
	snap_setup "$chunk" "$n" "${store:-N}" || { echo "setup failed: $stack $name" >&2; return 1; }
	if [ "$before" = copied ]; then
		dd if=/dev/zero of="$devdir"/borig bs=1M count=$region_mib oflag=direct status=none
	fi
	dev=$devdir/borig
	[ "$target" = snap ] && dev=$devdir/bsnap0
	if [ "$before" = none ] && [ "$target" = origin ]; then
		extra=(--size="${region_mib}M")
	else
		extra=(--size="${region_mib}M" --time_based --runtime="$runtime" --ramp_time=1)
	fi
	json=$(fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio \
		--rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 "${extra[@]}" \
		--output-format=json 2>/dev/null) || { echo "fio failed on $stack $name" >&2; return 1; }
	printf '%s' "$json" | python3 -c '
import json, sys
stack, name, rw, n = sys.argv[1:5]
job = json.load(sys.stdin)["jobs"][0]
side = job["read"] if "read" in rw else job["write"]
print(json.dumps({"stack": stack, "workload": name, "iops": side["iops"], "bw_kib": side["bw"],
                  "kind": "snapshot", "snapshots": int(n), "region_mib": int(sys.argv[5])}))
' "$stack" "$name" "$rw" "$n" "$region_mib" >>"$out/results.jsonl"
	[ "$n" = 1 ] && [ "$target" = origin ] && snap_memory "$stack" "$name"
	snap_teardown "$n"
	echo "$stack $name done"
}

with_dm_snapshot() { # with_dm_snapshot ROW [MEASURE]
	modprobe -d "$RDM_MODROOT" dm-snapshot || return 1
	"${2:-measure_snap}" dm-snapshot "$1"
	modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod
}

with_rdm_snapshot() { # with_rdm_snapshot ROW [MEASURE]
	if [ "${RDM_BENCH_HOST:-}" = dm ]; then
		modprobe -d "$RDM_MODROOT" dm-mod && insmod "$RDM_DM_KO" dm_names=1 || return 1
		"${2:-measure_snap}" rdm-snapshot "$1"
		rmmod rdm_dm
		modprobe -r -d "$RDM_MODROOT" dm-mod
		return 0
	fi
	insmod "$RDM_KO" || return 1
	"${2:-measure_snap}" rdm-snapshot "$1"
	rmmod rdm
}

# ---- Writes that need no copy, during a copy storm (the 2019 cow-limit
# lesson, measured). Origin A (the first disk) has a transient snapshot
# (64 KiB chunks) on a 1792 MiB slice of the COW disk; origin B is a
# 128 MiB linear slice of the COW disk with its own snapshot on the last
# 128 MiB. The first 64 MiB of both origins are written once before the
# run, so their chunks are copied. Then one fio run with two jobs:
# - the storm: first writes to origin A past those 64 MiB, 4 KiB each to
#   a chunk of its own (rw=write:60k: each write is one new copy), 4096 in
#   flight, twice the default cow_threshold (2048, left as it is): the
#   copies in progress stay at the threshold and its writers wait for
#   room; it ends after RDM_BENCH_RUNTIME seconds or when its 1536 MiB
#   region is written (the snapshot's COW would be full), whichever
#   comes first;
# - the measured writer: 4 KiB random writes, one in flight, at a fixed
#   200 per second (so that it takes the same share of the machine on
#   both stacks), to chunks that need no copy: the copied chunks of
#   origin A (lat-overwrite-4k), the snapshot's own copied chunks
#   (lat-snap-write-4k), or origin B's copied chunks
#   (lat-origin2-write-4k). Its first second is not counted (ramp), and
#   fio stops it when the storm ends (exitall).
# fio's total latency percentiles (lat_percentiles) of the measured
# writer, and the storm's throughput beside them: the comparison with
# dm-snapshot holds only where both storms ran at about the same speed.
lat_cow_mib=1792
lat_b_mib=128
lat_storm_mib=1536
lat_rate=200

# name measured-device(origin|snap|origin2)
lat_rows=(
	"lat-overwrite-4k origin"
	"lat-snap-write-4k snap"
	"lat-origin2-write-4k origin2"
)

lat_setup() {
	local acow=$((lat_cow_mib * 2048)) blen=$((lat_b_mib * 2048))
	"${tool[@]}" create borig --table "0 $size snapshot-origin $disk" || return 1
	"${tool[@]}" create bcow0 --table "0 $acow linear $cowdisk 0" || return 1
	"${tool[@]}" create bdisk2 --table "0 $blen linear $cowdisk $acow" || return 1
	"${tool[@]}" create bcow1 --table "0 $blen linear $cowdisk $((acow + blen))" || return 1
	"${tool[@]}" create borig2 --table "0 $blen snapshot-origin $devdir/bdisk2" || return 1
	"${tool[@]}" suspend borig || return 1
	"${tool[@]}" create bsnap0 --table "0 $size snapshot $disk $devdir/bcow0 N 128" || return 1
	"${tool[@]}" resume borig || return 1
	"${tool[@]}" suspend borig2 || return 1
	"${tool[@]}" create bsnap1 --table "0 $blen snapshot $devdir/bdisk2 $devdir/bcow1 N 128" || return 1
	"${tool[@]}" resume borig2 || return 1
	dd if=/dev/zero of="$devdir"/borig bs=1M count=$region_full_mib oflag=direct status=none || return 1
	dd if=/dev/zero of="$devdir"/borig2 bs=1M count=$region_full_mib oflag=direct status=none
}

lat_teardown() {
	local d
	for d in bsnap1 borig2 bsnap0 borig bcow1 bdisk2 bcow0; do "${tool[@]}" remove $d; done
}

measure_lat() { # measure_lat STACK ROW
	local stack=$1 name what dev json a0 a1 t0 t1
	read -r name what <<<"$2"
	snap_stack "$stack"
	lat_setup || { echo "setup failed: $stack $name" >&2; return 1; }
	case $what in
	origin) dev=$devdir/borig ;;
	snap) dev=$devdir/bsnap0 ;;
	origin2) dev=$devdir/borig2 ;;
	esac
	# The storm's copies: chunks the snapshot's status shows allocated
	# during the run (a check of fio's count of its writes), over the
	# storm job's runtime. The storm may take seconds to start under
	# emulation (4096 buffers and an aio context of 4096): the measured
	# writer starts 3 s after fio and counts from its fourth second to
	# RDM_BENCH_RUNTIME seconds later, when fio stops both (exitall); the
	# storm may run a second longer: so the storm covers the measurement
	# unless it took over 4 s to start (storm_s < RDM_BENCH_RUNTIME shows
	# that).
	read -r _ _ _ a0 _ <<<"$("${tool[@]}" status bsnap0)"
	t0=$(date +%s%N)
	json=$(fio --output-format=json --exitall --lat_percentiles=1 --percentile_list=50:90:99:99.9 \
		--direct=1 --ioengine=libaio --bs=4k \
		--name=storm --filename="$devdir"/borig --rw=write:60k --iodepth=4096 \
		--offset=${region_full_mib}M --size=${lat_storm_mib}M --runtime=$((runtime + 5)) \
		--name=measured --filename="$dev" --rw=randwrite --iodepth=1 --rate_iops=$lat_rate \
		--size=${region_full_mib}M --startdelay=3 --time_based --runtime="$runtime" --ramp_time=1 \
		2>/dev/null) || { echo "fio failed on $stack $name" >&2; return 1; }
	t1=$(date +%s%N)
	read -r _ _ _ a1 _ <<<"$("${tool[@]}" status bsnap0)"
	printf '%s' "$json" | python3 -c '
import json, sys
stack, name, storm_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
copies, wall_s = (int(sys.argv[5].split("/")[0]) - int(sys.argv[4].split("/")[0])) // 128, int(sys.argv[6]) / 1e9
text = sys.stdin.read()
jobs = {j["jobname"]: j for j in json.loads(text[text.index("{"):])["jobs"]}
storm_s, runtime = jobs["storm"]["job_runtime"] / 1000, int(sys.argv[7])
s, m = jobs["storm"]["write"], jobs["measured"]["write"]
if "percentile" not in m["lat_ns"]:
    sys.exit(f"{stack} {name}: the measured writer made no write while the storm ran "
             f"(the storm ran {storm_s} s)")
pct = m["lat_ns"]["percentile"]
print(json.dumps({"stack": stack, "workload": name, "kind": "latency",
                  "p50_us": pct["50.000000"] / 1000, "p90_us": pct["90.000000"] / 1000,
                  "p99_us": pct["99.000000"] / 1000, "p999_us": pct["99.900000"] / 1000,
                  "mean_us": m["lat_ns"]["mean"] / 1000, "ios": m["total_ios"], "iops": m["iops"],
                  "storm_copies": copies, "storm_writes": s["total_ios"], "storm_s": storm_s, "wall_s": wall_s, "runtime": runtime,
                  "storm_copies_s": copies / storm_s, "storm_mib_s": copies / storm_s * 64 / 1024,
                  "storm_slat_mean_us": s["slat_ns"]["mean"] / 1000,
                  "storm_ended_early": s["io_bytes"] * 16 >= storm_mib * 2**20}))
' "$stack" "$name" "$lat_storm_mib" "$a0" "$a1" "$((t1 - t0))" "$runtime" >>"$out/results.jsonl" || return 1
	lat_teardown
	echo "$stack $name done: $(tail -n 1 "$out/results.jsonl")"
}

# ---- Scale: a persistent snapshot with 1,050,000 exceptions (4 KiB
# chunks, no two neighbours: one run each, as after random writes), its
# COW image written by tests/vm/mkcow.py through tests/vm/bigcow.sh (loop
# devices over sparse files in the guest's /dev/shm; restored anew for
# every measurement). Activation: the origin is suspended (as LVM does),
# then the time from the start of the snapshot's create (load and
# resume: the metadata is read) to the end of the origin's resume. Memory:
# the test kernel has no slab statistics, so it is the drop of
# MemAvailable and of Slab in /proc/meminfo from before the create to
# after the resume, each the median of 5 samples taken after dropping the
# page cache (the images are in tmpfs, which is not dropped): the whole
# cost of the activated snapshot, its exception table and its fixed
# structures, divided by the exceptions.
act_row=scale-activate-1M-exceptions
. "$(dirname "$0")/../vm/bigcow.sh"

meminfo_kib() { # meminfo_kib: prints "MemAvailable Slab" in KiB, the median of 5 samples
	local i
	for i in 1 2 3 4 5; do
		sync
		echo 3 >/proc/sys/vm/drop_caches
		sleep 0.3
		awk '/^MemAvailable:/ { a = $2 } /^Slab:/ { s = $2 } END { print a, s }' /proc/meminfo
	done | sort -n | sed -n 3p
}

measure_activation() { # measure_activation STACK ROW
	local stack=$1 t0 t1 a0 s0 a1 s1 st bytes=0
	snap_stack "$stack"
	big_image
	"${tool[@]}" create borig --table "0 $BIG_LEN snapshot-origin $BIG_ORIG" || return 1
	"${tool[@]}" suspend borig || return 1
	read -r a0 s0 <<<"$(meminfo_kib)"
	t0=$(date +%s%N)
	"${tool[@]}" create bsnap --table "0 $BIG_LEN snapshot $BIG_ORIG $BIG_COW P $BIG_C" ||
		{ "${tool[@]}" resume borig; echo "load of $BIG_N exceptions failed on $stack" >&2; return 1; }
	"${tool[@]}" resume borig || return 1
	t1=$(date +%s%N)
	read -r a1 s1 <<<"$(meminfo_kib)"
	st=$("${tool[@]}" status bsnap)
	[ "$st" = "$BIG_STATUS" ] || { echo "$stack: status '$st', expected '$BIG_STATUS'" >&2; return 1; }
	[ "$stack" = rdm-snapshot ] && read -r _ _ _ _ _ bytes <<<"$("${tool[@]}" message bsnap 0 stats)"
	"${tool[@]}" remove bsnap
	"${tool[@]}" remove borig
	printf '{"stack": "%s", "workload": "%s", "kind": "activation", "exceptions": %s, "activation_ms": %s, "mem_available_drop_kib": %s, "slab_drop_kib": %s, "table_bytes": %s}\n' \
		"$stack" "$2" "$BIG_N" "$(((t1 - t0) / 1000000))" "$((a0 - a1))" "$((s1 - s0))" "$bytes" >>"$out/results.jsonl"
	echo "$stack $2 done: $(tail -n 1 "$out/results.jsonl")"
}

# ---- Merges: snapshot-merge of the same data by dm-snapshot and rdm. A
# persistent snapshot (4 KiB chunks, as LVM2's default) gets every block of
# a region written once through it (fio, random or sequential order: the
# whole-chunk writes make one exception each, scattered or in runs); then
# it is merged into its origin as LVM2 does, and timed from the resume of
# the merge table to the status saying the merge is complete (polled every
# 0.1 s). Meanwhile fio reads the merging origin at random, 4 KiB at a
# time, one I/O in flight: its latency is the cost of the merge to the
# origin's users. Merge MiB/s = the data the status had to merge / time.
merge_mib=128
merge_cow_sectors=$(((merge_mib + 8) * 2048))

# name rw-of-the-snapshot-writes bs
merge_rows=(
	"merge-rand-4k randwrite 4k"
	"merge-seq-1M write 1M"
)

measure_merge() { # measure_merge STACK ROW
	local stack=$1 name rw bs dev st a m t0 t1 reader left
	read -r name rw bs <<<"$2"
	snap_stack "$stack"
	"${tool[@]}" create borig --table "0 $size snapshot-origin $disk" || return 1
	"${tool[@]}" create bcow0 --table "0 $merge_cow_sectors linear $cowdisk 0" || return 1
	dd if=/dev/zero of="$devdir"/bcow0 bs=4k count=1 oflag=direct status=none
	"${tool[@]}" suspend borig || return 1
	"${tool[@]}" create bsnap0 --table "0 $size snapshot $disk $devdir/bcow0 P 8" || return 1
	"${tool[@]}" resume borig || return 1
	fio --name=fill --filename="$devdir"/bsnap0 --direct=1 --ioengine=libaio --rw="$rw" --bs="$bs" \
		--iodepth=16 --size=${merge_mib}M --randseed=7 --output=/dev/null || return 1
	read -r _ _ _ st m <<<"$("${tool[@]}" status bsnap0)"
	a=${st%%/*}
	# The reader starts first and reads before the merge table goes in: a
	# SIGINT that reached fio before its job started would not stop the
	# job. (Its figures so include the short suspend and some reads
	# before the merge, alike on both stacks.)
	fio --name=lat --filename="$devdir"/borig --direct=1 --ioengine=psync --rw=randread --bs=4k \
		--size=${merge_mib}M --time_based --runtime=900 --thread --output-format=json \
		--output="$out/merge-lat.json" >/dev/null 2>&1 &
	reader=$!
	local i
	for ((i = 0; i < 300; i++)); do
		[ "$(awk '/^rchar:/ { print $2 }' /proc/$reader/io 2>/dev/null || echo 0)" -gt 1048576 ] && break
		sleep 0.1
	done
	"${tool[@]}" suspend borig && "${tool[@]}" suspend bsnap0 || return 1
	"${tool[@]}" load borig --table "0 $size snapshot-merge $disk $devdir/bcow0 P 8" || return 1
	t0=$(date +%s%N)
	"${tool[@]}" resume borig || return 1
	while :; do
		read -r _ _ _ st m <<<"$("${tool[@]}" status borig)"
		case $st in */*) ;; *) echo "merge failed on $stack: $st" >&2; kill -INT $reader; return 1 ;; esac
		left=$((${st%%/*} - m))
		[ "$left" -eq 0 ] && break
		sleep 0.1
	done
	t1=$(date +%s%N)
	kill -INT $reader
	wait $reader
	"${tool[@]}" remove bsnap0
	python3 - "$stack" "$name" "$(((a - m) * 512))" "$((t1 - t0))" "$out/merge-lat.json" <<'PY' >>"$out/results.jsonl"
import json, sys
stack, name, nbytes, ns, lat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
text = open(lat).read()
read = json.loads(text[text.index("{"):])["jobs"][0]["read"]
clat = read["clat_ns"]
print(json.dumps({"stack": stack, "workload": name, "kind": "merge",
                  "merged_mib": nbytes / 2**20, "merge_s": ns / 1e9,
                  "merge_mib_s": nbytes / 2**20 / (ns / 1e9),
                  "read_iops": read["iops"], "read_lat_us": clat["mean"] / 1000,
                  "read_lat_p99_us": clat["percentile"]["99.000000"] / 1000}))
PY
	"${tool[@]}" remove borig
	"${tool[@]}" remove bcow0
	echo "$stack $name merged $(((a - m) / 2048)) MiB in $(((t1 - t0) / 1000000)) ms"
}

: >"$out/results.jsonl"
if [ "$only" != snapshot ]; then
	measure_passthrough || exit 1
fi
if [ "$only" != passthrough ]; then
	# The limit of origin first writes: raw sequential write throughput.
	if [ "$only" = snapshot ]; then
		fio_passthrough raw "$disk" "${workloads[1]}" || exit 1
	fi
	for row in "${snap_rows[@]}"; do
		[[ ${row%% *} =~ ${RDM_BENCH_ROWS:-.} ]] || continue
		with_dm_snapshot "$row" || exit 1
		with_rdm_snapshot "$row" || exit 1
		with_rdm_snapshot "$row" || exit 1
		with_dm_snapshot "$row" || exit 1
	done
	for row in "${lat_rows[@]}"; do
		[[ ${row%% *} =~ ${RDM_BENCH_ROWS:-.} ]] || continue
		with_dm_snapshot "$row" measure_lat || exit 1
		with_rdm_snapshot "$row" measure_lat || exit 1
		with_rdm_snapshot "$row" measure_lat || exit 1
		with_dm_snapshot "$row" measure_lat || exit 1
	done
	if [[ $act_row =~ ${RDM_BENCH_ROWS:-.} ]]; then
		big_setup
		for stack in dm rdm rdm dm; do
			with_${stack}_snapshot $act_row measure_activation || exit 1
		done
		big_teardown
	fi
	for row in "${merge_rows[@]}"; do
		[[ ${row%% *} =~ ${RDM_BENCH_ROWS:-.} ]] || continue
		with_dm_snapshot "$row" measure_merge || exit 1
		with_rdm_snapshot "$row" measure_merge || exit 1
		with_rdm_snapshot "$row" measure_merge || exit 1
		with_dm_snapshot "$row" measure_merge || exit 1
	done
fi
echo "bench: $(wc -l <"$out/results.jsonl") measurements"
