#!/usr/bin/env bash
# Snapshot basics against an oracle, both directions. A snapshot of an
# origin stamped with a random pattern; 4 concurrent writers overwrite
# disjoint random chunks of the origin (through the snapshot-origin
# device), some first with a one-sector write, some twice, while fio
# writes and verifies half-chunk blocks elsewhere: the snapshot still reads
# the pattern byte for byte, the origin (and the disk under it) reads the
# image built by applying the same writes to a copy. Status and
# table lines as dm-snapshot prints them; allocated sectors = distinct
# copied chunks x chunk size. Then writes to the snapshot change only that
# snapshot: the origin and a second snapshot are unchanged; an origin write
# to a chunk the first snapshot already wrote copies only for the second.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
defer snap_cleanup
snap_load

LEN=16384 # 8 MiB
CS=8      # 4 KiB chunks
NCH=$((LEN / CS))
pat=/tmp/snap01.pat new=/tmp/snap01.new new2=/tmp/snap01.new2 exp=/tmp/snap01.exp
make_pattern $pat 8
make_pattern $new 8
make_pattern $new2 8
orig=$DEVDIR/orig

dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
expect_eq "$(dm table orig)" "0 $LEN snapshot-origin $(devno "$VDA")" "origin table line"
expect_match "$(dm status orig)" "^0 $LEN snapshot-origin ?$" "origin status (no info)"
dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
expect_same "the origin reads the pattern" "$orig" $pat

snap_take orig snap1 "0 $LEN snapshot $VDA $VDB N $CS"
cow_total=$(disk_sectors "$VDB")
expect_eq "$(dm table snap1)" "0 $LEN snapshot $(devno "$VDA") $(devno "$VDB") N $CS" "snapshot table line"
expect_eq "$(dm status snap1)" "0 $LEN snapshot 0/$cow_total 0" "status of a fresh snapshot"
expect_same "a fresh snapshot reads the pattern" "$DEVDIR"/snap1 $pat

# 4 dd writers, each on its own random chunks of the first 8 MiB (chunk c
# belongs to writer c % 4), so the result does not depend on how they
# interleave; each applies its writes to the expected image as well
# (disjoint places of one file). Some chunks are first written one sector
# only (the rest of the chunk is copied), some are written again later (no
# new copy). At the same time, fio writes 2 KiB blocks (half chunks) at
# iodepth 16 in 4 jobs over [4 MiB, 6 MiB), every block once, and
# verifies them: copies racing with writes to the other half of the chunk.
# [6 MiB, 8 MiB) is not written.
cp $pat $exp
shuf -i 0-$((NCH / 2 - 1)) -n 48 >/tmp/snap01.chunks
writer() { # writer ID
	local id=$1 c i=0
	op() { # op SRC SECTOR SECTORS
		dwrite "$1" "$2" "$orig" "$2" "$3" && fput "$1" "$2" $exp "$2" "$3"
	}
	awk -v w="$id" '$1 % 4 == w' /tmp/snap01.chunks >/tmp/snap01.mine"$id"
	while read -r c; do
		if [ $((i % 3)) -eq 0 ]; then
			op $new $((c * CS + c % CS)) 1 || return 1
		else
			op $new $((c * CS)) $CS || return 1
		fi
		i=$((i + 1))
	done </tmp/snap01.mine"$id"
	read -r c </tmp/snap01.mine"$id" && op $new2 $((c * CS)) $CS || return 1
	c=$(sed -n 2p /tmp/snap01.mine"$id") && op $new2 $((c * CS + 7)) 1 || return 1
}
fio --name=origin --filename="$orig" --direct=1 --rw=randwrite --bs=2k --offset=4M \
	--size=512K --offset_increment=512K --numjobs=4 --iodepth=16 --ioengine=libaio \
	--verify=crc32c --do_verify=1 --minimal >/tmp/snap01.fio 2>&1 &
pids=($!)
for w in 0 1 2 3; do
	writer $w &
	pids+=($!)
done
defer stop_pids "${pids[@]}"
for p in "${pids[@]}"; do
	wait "$p" || { cat /tmp/snap01.fio; fail "a write to the origin failed (or fio's verify)"; }
done
dd_chunks=$(wc -l </tmp/snap01.chunks)
fio_chunks=$((2 * 1024 * 1024 / (CS * 512)))
log "ok: 4 dd writers on $dd_chunks chunks and fio (2 KiB blocks, verified) on $fio_chunks chunks"

expect_same "the snapshot still reads the pattern" "$DEVDIR"/snap1 $pat
expect_same "the origin reads the expected image (dd writers)" "$orig" $exp 8192
expect_same "the origin is unchanged where nobody wrote" "$orig" $pat 4096 12288 12288
expect_same "the disk under the origin holds the expected image" "$VDA" $exp 8192
copied=$((dd_chunks + fio_chunks))
expect_eq "$(dm status snap1)" "0 $LEN snapshot $((copied * CS))/$cow_total 0" \
	"status: $copied chunks of $CS sectors allocated"
# From here on the image of the origin is what it reads now.
dread "$orig" 0 $LEN >$exp

# A second snapshot, of the current origin; then writes to the first one.
snap_take orig snap2 "0 $LEN snapshot $VDA $VDC N $CS"
expect_eq "$(dm status snap2)" "0 $LEN snapshot 0/$(disk_sectors "$VDC") 0" "second snapshot: nothing allocated"
# Chunks the origin writers did not touch, for the snapshot writes.
mapfile -t untouched < <(comm -23 <(seq 0 $((NCH - 1)) | sort) <(sort /tmp/snap01.chunks) | sort -n | head -n 60)
u=${untouched[0]}
for i in $(seq 1 58); do # two adjacent untouched chunks
	[ $((untouched[i] + 1)) -eq "${untouched[i + 1]}" ] && { v=${untouched[i]}; break; }
done
[ -n "${v:-}" ] || fail "no two adjacent untouched chunks"
c=$(head -n 1 /tmp/snap01.chunks)
exp1=/tmp/snap01.exp1
cp $pat $exp1
swrite() { # swrite SECTOR SECTORS: from new2 to snap1 and its image
	dwrite $new2 "$1" "$DEVDIR"/snap1 "$1" "$2" || fail "write to the snapshot at $1+$2"
	fput $new2 "$1" $exp1 "$1" "$2"
}
swrite $((u * CS + 5)) 1                 # one sector of an uncopied chunk
swrite $((c * CS)) $CS                   # a whole chunk the origin copied
swrite $((v * CS + CS / 2)) $CS          # straddles two uncopied chunks
expect_same "the snapshot reads its own writes over the pattern" "$DEVDIR"/snap1 $exp1
expect_same "the origin is unchanged by snapshot writes" "$orig" $exp
expect_same "the second snapshot is unchanged by writes to the first" "$DEVDIR"/snap2 $exp
expect_eq "$(snap_alloc snap1)" $(((copied + 3) * CS)) "snapshot writes allocated 3 more chunks"
expect_eq "$(snap_alloc snap2)" 0 "nothing allocated in the second snapshot"

# An origin write to chunk u: snap1 has its own u already (no copy there),
# snap2 gets a copy of the current data.
exp2=/tmp/snap01.exp2 # what snap2 shows: the origin before this write
cp $exp $exp2
dwrite $new $((u * CS)) "$orig" $((u * CS)) $CS || fail "origin write"
fput $new $((u * CS)) $exp $((u * CS)) $CS
expect_eq "$(snap_alloc snap1)" $(((copied + 3) * CS)) "no copy for a chunk the snapshot already has"
expect_eq "$(snap_alloc snap2)" $CS "the second snapshot copied the chunk"
expect_same "the first snapshot keeps its own chunk" "$DEVDIR"/snap1 $exp1
expect_same "the origin reads the new chunk" "$orig" $exp
expect_same "the second snapshot keeps the old chunk" "$DEVDIR"/snap2 $exp2

snap_drop orig snap1
expect_same "the second snapshot survives removing the first" "$DEVDIR"/snap2 $exp2
snap_drop orig snap2
dm remove orig || fail "remove the origin"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
