#!/usr/bin/env bash
# Control races from several processes at once, bounded (RDM_RACE_SECONDS,
# default 20). One origin with fio writing and verifying through it the
# whole time; four processes each take and drop their own snapshot in a
# loop (two transient, two persistent on COW slices that keep their
# metadata across the loop), suspending and resuming the shared origin
# around it as LVM does; a fifth reloads the origin's table and
# suspends/resumes it; a sixth reads every snapshot that exists and lists
# and queries devices. Every command either succeeds or fails with one of
# the documented errnos (EBUSY: the device is suspended/open or in use;
# ENXIO: it went away; EEXIST: a name taken; EINVAL: suspend of a
# suspended device or resume with nothing to resume), nothing hangs (every
# command under a timeout; the hung-task detector in the guest log), fio
# finds no mismatch, every persistent snapshot reloads valid at the end
# with its data equal to the origin's pattern at the time it was taken
# (the origin is only written by fio in a region the snapshots' checks
# skip), and the counts of operations are printed.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
command -v fio >/dev/null || skip "needs fio"
defer rdm_cleanup
snap_ref && skip "drives rdm only (rdmsetup, /dev/rdm)"
snap_load

SECONDS_RUN=${RDM_RACE_SECONDS:-20}
LEN=32768 # 16 MiB: the first 8 MiB stay as stamped, fio writes the rest
CS=8
COWLEN=49152 # 24 MiB per COW slice: room for every chunk fio can touch
out=/tmp/race01
rm -rf $out && mkdir -p $out
make_pattern $out/pat 8
rdmsetup create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$out/pat of=/dev/rdm/orig bs=1M oflag=direct status=none || fail "stamp the origin"
for i in 0 1 2 3; do
	rdmsetup create cow$i --table "0 $COWLEN linear $VDB $((i * COWLEN))" || fail "cow$i"
	dd if=/dev/zero of=/dev/rdm/cow$i bs=4k count=1 oflag=direct status=none
done
allowed='EBUSY|ENXIO|EEXIST|EINVAL'

# run LOG CMD...: one command under a timeout; logs its errno if it failed.
run() {
	local log=$1 o rc
	shift
	o=$(timeout 60 "$@" 2>&1)
	rc=$?
	if [ $rc = 124 ]; then
		echo "HANG: $*" >>"$log"
	elif [ $rc != 0 ]; then
		echo "FAIL: $*: $o" >>"$log"
	else
		echo "OK" >>"$log"
	fi
	return $rc
}

taker() { # taker I STORE
	local i=$1 store=$2 log=$out/taker$1 end=$((SECONDS + SECONDS_RUN))
	local made
	while [ $SECONDS -lt $end ]; do
		made=0
		if run "$log" rdmsetup suspend orig; then
			run "$log" rdmsetup create snap"$i" --table "0 $LEN snapshot $VDA /dev/rdm/cow$i $store $CS" && made=1
			run "$log" rdmsetup resume orig
		fi
		# The stamped half of a snapshot made here is the pattern.
		if [ $made = 1 ] && ! cmp -n $((8 << 20)) /dev/rdm/snap"$i" $out/pat >/dev/null 2>&1; then
			echo "MISMATCH: snap$i" >>"$log"
		fi
		if run "$log" rdmsetup suspend orig; then
			run "$log" rdmsetup remove snap"$i"
			run "$log" rdmsetup resume orig
		fi
	done
}

reloader() {
	local log=$out/reloader end=$((SECONDS + SECONDS_RUN))
	while [ $SECONDS -lt $end ]; do
		run "$log" rdmsetup load orig --table "0 $LEN snapshot-origin $VDA"
		run "$log" rdmsetup suspend orig && run "$log" rdmsetup resume orig
	done
}

watcher() {
	local log=$out/watcher end=$((SECONDS + SECONDS_RUN)) n
	while [ $SECONDS -lt $end ]; do
		run "$log" rdmsetup ls
		for n in 0 1 2 3; do
			run "$log" rdmsetup status snap$n
			run "$log" rdmsetup message snap$n 0 stats
			dd if=/dev/rdm/snap$n of=/dev/null bs=64k count=16 iflag=direct status=none 2>/dev/null
		done
	done
}

fio --name=race --filename=/dev/rdm/orig --direct=1 --ioengine=libaio --rw=randwrite \
	--bs=4k --iodepth=8 --offset=8M --size=8M --verify=crc32c --verify_fatal=1 \
	--time_based --runtime="$SECONDS_RUN" --output=$out/fio.log >/dev/null 2>&1 &
fio_pid=$!
defer stop_pids "$fio_pid"
taker 0 N & defer stop_pids $!
taker 1 N & defer stop_pids $!
taker 2 P & defer stop_pids $!
taker 3 P & defer stop_pids $!
reloader & defer stop_pids $!
watcher & defer stop_pids $!
wait "$fio_pid"
fio_rc=$?
wait

[ $fio_rc = 0 ] || fail "fio through the origin failed or found a mismatch: $(tail -5 $out/fio.log)"
log "ok: fio wrote and verified through the origin for ${SECONDS_RUN}s"
grep -h '^HANG' $out/* && fail "a command hung"
grep -h '^MISMATCH' $out/* && fail "a snapshot read other data than the origin had"
bad=$(grep -h '^FAIL' $out/* | grep -Ev "\\(($allowed)\\)" | head -5)
[ -z "$bad" ] || fail "a command failed with an undocumented errno: $bad"
ok=$(cat $out/taker* $out/reloader $out/watcher | grep -c '^OK')
failed=$(cat $out/taker* $out/reloader $out/watcher | grep -c '^FAIL')
log "ok: $ok commands succeeded, $failed failed with documented errnos ($(grep -h '^FAIL' $out/* | grep -Eo "\\(($allowed)\\)" | sort | uniq -c | tr '\n' ' '))"

# Whatever state the loops left: resume the origin if suspended, then
# every persistent snapshot loads again, valid, with the stamped data.
rdmsetup resume orig 2>/dev/null
for i in 0 1 2 3; do
	rdmsetup info snap$i >/dev/null 2>&1 && { snap_drop orig snap$i; }
done
for i in 2 3; do
	snap_take orig snap$i "0 $LEN snapshot $VDA /dev/rdm/cow$i P $CS"
	st=$(rdmsetup status snap$i)
	case $st in *Invalid* | *Overflow*) fail "snap$i reloads as: $st" ;; esac
	expect_same "persistent snap$i reloads with the stamped data" /dev/rdm/snap$i $out/pat
	snap_drop orig snap$i
done
rdmsetup remove_all || fail "remove_all"
expect_eq "$(rdmsetup ls)" "No devices found" "no device left"
echo "# races: $ok commands succeeded, $failed refused, 6 processes, ${SECONDS_RUN}s"
exit 0
