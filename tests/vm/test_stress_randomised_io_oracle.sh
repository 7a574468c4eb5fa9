#!/usr/bin/env bash
# Stress with an oracle: phases of mixed random I/O on an origin and its
# snapshots, with the copy delay, cow_threshold and chunk size randomised,
# snapshots taken and removed between phases. The oracle keeps an image
# of every device: in a phase, fio writes (and verifies) one random region
# of the origin and one of a snapshot while other processes read
# snapshots; afterwards every device must equal its image outside the
# region written to it (copies landed, nothing leaked between devices),
# and the written regions are read back into the images.
#
# Bounded by RDM_STRESS_SECONDS (default 25: `make check`); `make stress`
# runs it longer. Prints the seed, phases, snapshots and bytes written.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
command -v fio >/dev/null || skip "needs fio"
defer snap_cleanup
snap_load
snap_ref && skip "rdm-only: randomises rdm's copy delay and throttle"

seconds=${RDM_STRESS_SECONDS:-25}
seed=${RDM_STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
log "seed $seed (RDM_STRESS_SEED=$seed repeats the choices), $seconds s"
LEN=16384 # 8 MiB
MAXSNAPS=4
params=/sys/module/$SNAP_MOD/parameters
no_copy_delay() { echo 0 >"$params"/copy_delay_ms; }
defer no_copy_delay # the copies left run at full speed for the cleanup
pick() { local a=("$@"); echo "${a[RANDOM % ${#a[@]}]}"; }
img=/tmp/stress
mkdir -p $img
make_pattern $img/orig 8

dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$img/orig of="$DEVDIR"/orig bs=1M oflag=direct status=none || fail "stamp the origin"
# COW slices: 4 on vdb, 4 on vdc, 9 MiB each (a snapshot never overflows).
for i in $(seq 0 $((2 * MAXSNAPS - 1))); do
	disk=$VDB
	[ "$i" -ge $MAXSNAPS ] && disk=$VDC
	dm create cow"$i" --table "0 18432 linear $disk $(((i % MAXSNAPS) * 18432))" || fail "create cow$i"
done
live=() # snapshot slots in use
next=0  # next COW slice
take() {
	local cs
	cs=$(pick 8 16 64 128 1024)
	snap_take orig s$next "0 $LEN snapshot $VDA $DEVDIR/cow$next N $cs"
	cp $img/orig $img/s$next
	live+=("$next")
	log "phase $phase: snapshot s$next (chunk $cs)"
	next=$(((next + 1) % (2 * MAXSNAPS)))
}
drop() {
	local k=${live[0]}
	snap_drop orig s"$k"
	live=("${live[@]:1}")
}
# same WHAT ARGS...: expect_same without its "ok" line; on a mismatch,
# fails with the seed and phase.
same() {
	(expect_same "$@") >/dev/null || fail "$1 (seed $seed, phase $phase)"
}
# check DEV IMAGE FROM TO: equal outside [FROM, TO) sectors.
check() {
	same "$1 before its written region" "$DEVDIR"/"$1" "$2" "$3" 0 0
	same "$1 after its written region" "$DEVDIR"/"$1" "$2" $((LEN - $4)) "$4" "$4"
}
region() { # region: "FROM TO" in sectors, 64 KiB aligned, 256 KiB..2 MiB
	local len from
	len=$((512 * (1 + RANDOM % 4)))
	from=$(((RANDOM % ((LEN - len) / 128)) * 128))
	echo "$from $((from + len))"
}
fio_region() { # fio_region DEV FROM TO NAME
	fio --name="$4" --filename="$DEVDIR/$1" --direct=1 --ioengine=libaio \
		--rw=randwrite --bs="$(pick 4k 8k 64k)" --iodepth=8 --offset=$(($2 * 512)) \
		--size=$((($3 - $2) * 512)) --verify=crc32c --do_verify=1 \
		--randseed="$RANDOM" --minimal >"$img/$4.fio" 2>&1
}

phase=0 written=0 snaps_taken=0
end=$((SECONDS + seconds))
while [ $SECONDS -lt $end ]; do
	phase=$((phase + 1))
	pick 0 0 1 5 20 >$params/copy_delay_ms
	pick 0 2 8 64 2048 >$params/cow_threshold
	if [ ${#live[@]} -eq 0 ] || { [ ${#live[@]} -lt $MAXSNAPS ] && [ $((RANDOM % 2)) -eq 0 ]; }; then
		take
		snaps_taken=$((snaps_taken + 1))
	elif [ $((RANDOM % 4)) -eq 0 ]; then
		drop
		[ ${#live[@]} -eq 0 ] && { take; snaps_taken=$((snaps_taken + 1)); }
	fi
	read -r of ot <<<"$(region)"
	t=${live[RANDOM % ${#live[@]}]}
	read -r sf st <<<"$(region)"
	defer_scope_push
	pids=()
	fio_region orig "$of" "$ot" o$phase &
	pids+=($!)
	fio_region s"$t" "$sf" "$st" s$phase &
	pids+=($!)
	for k in "${live[@]}"; do
		dd if="$DEVDIR"/s"$k" of=/dev/null bs=64k iflag=direct status=none &
		pids+=($!)
	done
	defer stop_pids "${pids[@]}"
	for p in "${pids[@]}"; do
		wait "$p" || fail "phase $phase: an I/O failed or fio's verify found bad data (seed $seed): $(cat $img/*$phase.fio 2>/dev/null | tail -3)"
	done
	defer_scope_pop
	# Before the read-back: nothing changed outside the written regions.
	check orig $img/orig "$of" "$ot"
	for k in "${live[@]}"; do
		if [ "$k" = "$t" ]; then
			check s"$k" $img/s"$k" "$sf" "$st"
		else
			same "s$k unchanged" "$DEVDIR"/s"$k" $img/s"$k"
		fi
	done
	dread "$DEVDIR"/orig "$of" $((ot - of)) | dd of=$img/orig bs=512 seek="$of" conv=notrunc status=none
	dread "$DEVDIR"/s"$t" "$sf" $((st - sf)) | dd of=$img/s"$t" bs=512 seek="$sf" conv=notrunc status=none
	written=$((written + (ot - of + st - sf) * 512))
done
for k in "${live[@]}"; do
	same "s$k equals its image at the end" "$DEVDIR"/s"$k" $img/s"$k"
done
same "the origin equals its image at the end" "$DEVDIR"/orig $img/orig
log "ok: stress: $phase phases, $snaps_taken snapshots taken, $((written >> 20)) MiB written through fio verify, every device matched its image (seed $seed)"
exit "$KSFT_PASS"
