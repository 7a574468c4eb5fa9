#!/usr/bin/env bash
# A COW device that grows and shrinks under a live snapshot (issue 14), as
# lvextend of a snapshot LV and dmeventd's snapshot_autoextend do: the
# COW device is a linear device of the implementation under test, reloaded
# with another length and resumed.
# 1. Growth (N with 4 KiB chunks, P with 512-byte chunks, whose metadata
#    then runs into a second area beyond the device's first end): the
#    status total follows the COW device's size at once, and origin writes
#    past the old size keep the snapshot valid (on rdm before this, the
#    COW size was fixed at load: Invalid at the old size, with the status
#    claiming the new total). The snapshot reads the origin as it was;
#    the persistent one reloads with the same status and data.
# 2. Shrinking below the space in use: an origin write that needs a new
#    chunk fails with ENOSPC and a log line, and the snapshot is kept
#    (the kernel's dm invalidates it: checked as such); grown back, the
#    writes go on and nothing was lost.
# Every scenario runs against the kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"

out=/tmp/s13
rm -rf $out && mkdir -p $out
make_pattern $out/origin 1
make_pattern $out/new 1
ORIG_SECTORS=512

# owrite DEV SIZE SECTOR...: one O_DIRECT write of SIZE sectors of new
# data at each SECTOR (from $out/new at the same offset); prints the
# first errno it meets.
owrite() {
	python3 - "$@" <<'EOF'
import mmap, os, sys
dev, size = sys.argv[1], int(sys.argv[2]) * 512
new = open(os.environ['OUT'] + '/new', 'rb').read()
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, size)
for s in map(int, sys.argv[3:]):
    buf.seek(0)
    buf.write(new[s * 512:s * 512 + size])
    try:
        os.pwrite(fd, buf, s * 512)
    except OSError as e:
        print(os.strerror(e.errno))
        sys.exit(1)
EOF
}
export OUT=$out

# cow_resize SECTORS: the COW device gets a new length.
cow_resize() {
	dm load cow --table "0 $1 linear $VDB 0" && dm suspend cow && dm resume cow ||
		fail "resize the COW device to $1 sectors"
}
status_of() { local st; st=$(dm status snap) || fail "status"; echo "${st#* * snapshot }"; }

setup() { # setup STORE CHUNK COW-SECTORS
	dd if="$out"/origin of="$VDA" bs=512 count="$ORIG_SECTORS" oflag=direct status=none || fail "stamp"
	dd if=/dev/zero of="$VDB" bs=1M count=1 oflag=direct status=none
	dm create base --table "0 $ORIG_SECTORS linear $VDA 0" || fail "create base"
	BASE=$(devno "$DEVDIR"/base)
	dm create orig --table "0 $ORIG_SECTORS snapshot-origin $BASE" || fail "create orig"
	dm create cow --table "0 $3 linear $VDB 0" || fail "create cow"
	SNAP_TABLE="0 $ORIG_SECTORS snapshot $BASE $(devno "$DEVDIR"/cow) $1 $2"
	snap_take orig snap "$SNAP_TABLE"
	head -c $((ORIG_SECTORS * 512)) "$out"/origin >"$out"/expect
}
teardown() {
	dm remove snap && dm remove orig && dm remove cow && dm remove base || fail "remove"
}

# 1. Growth.
grow() {
	# N, 4 KiB chunks: 8 of them fit in 64 sectors; 20 are written.
	setup N 8 64
	owrite "$DEVDIR"/orig 8 0 8 16 24 32 || fail "$IMPL N: first writes"
	expect_eq "$(status_of)" "40/64 0" "$IMPL N: status before the growth"
	cow_resize 256
	expect_eq "$(status_of)" "40/256 0" "$IMPL N: the total follows the COW device"
	owrite "$DEVDIR"/orig 8 $(seq 40 8 152) || fail "$IMPL N: writes past the old size"
	expect_eq "$(status_of)" "160/256 0" "$IMPL N: 20 chunks in a COW device that held 8"
	expect_same "$IMPL N: the snapshot reads the origin as it was" "$DEVDIR"/snap "$out"/expect
	teardown

	# P, 512-byte chunks (32 entries per area): 30 sectors hold the
	# header, area 0 and 28 chunks, and area 1 (chunk 34) is past the
	# end; 50 chunks are written, so the metadata goes on in area 1.
	setup P 1 30
	owrite "$DEVDIR"/orig 1 $(seq 0 2 38) || fail "$IMPL P: first writes"
	expect_eq "$(status_of)" "22/30 2" "$IMPL P: status before the growth"
	cow_resize 200
	expect_eq "$(status_of)" "22/200 2" "$IMPL P: the total follows the COW device"
	owrite "$DEVDIR"/orig 1 $(seq 40 2 98) || fail "$IMPL P: writes past the old size"
	# 50 chunks: 2..33 and 35..52 (34 is area 1).
	expect_eq "$(status_of)" "53/200 3" "$IMPL P: 50 chunks, area 1 in use"
	expect_same "$IMPL P: the snapshot reads the origin as it was" "$DEVDIR"/snap "$out"/expect
	# Taken down and loaded again from the COW device.
	snap_drop orig snap
	snap_take orig snap "$SNAP_TABLE"
	expect_eq "$(status_of)" "53/200 3" "$IMPL P: the same status after a reload"
	expect_same "$IMPL P: the same data after a reload" "$DEVDIR"/snap "$out"/expect
	teardown
}

# 2. Shrinking below the space in use, then growing back.
shrink() {
	local store=$1 chunk=$2 size=$3 small=$4 alloc=$5 meta=$6 st
	setup "$store" "$chunk" "$size"
	owrite "$DEVDIR"/orig "$chunk" $(seq 0 "$chunk" $((chunk * 9))) || fail "$IMPL $store: first writes"
	expect_eq "$(status_of)" "$alloc/$size $meta" "$IMPL $store: status before the shrink"
	cow_resize "$small"
	klog_mark
	if [ "$IMPL" = dm ]; then
		# dm-snapshot takes the COW device's size as the room it has.
		owrite "$DEVDIR"/orig "$chunk" $((chunk * 20)) || fail "dm $store: write after the shrink"
		expect_eq "$(status_of)" Invalid "dm $store: the kernel's dm drops the snapshot"
		teardown
		return
	fi
	st=$(owrite "$DEVDIR"/orig "$chunk" $((chunk * 20))) && fail "rdm $store: a write that needs a chunk succeeded with the COW device shrunk"
	expect_eq "$st" "No space left on device" "rdm $store: the write fails with ENOSPC"
	expect_match "$(klog_since_mark)" "COW device shrank to $small sectors, below the [0-9]+ sectors in use" \
		"rdm $store: the shrink is logged"
	expect_eq "$(status_of)" "$alloc/$small $meta" "rdm $store: the snapshot is kept (the total is the COW device's new size)"
	# Writes to chunks already copied need no room.
	owrite "$DEVDIR"/orig "$chunk" 0 || fail "rdm $store: a write to a copied chunk"
	cow_resize "$size"
	owrite "$DEVDIR"/orig "$chunk" $((chunk * 20)) || fail "rdm $store: the write after the COW device grew back"
	case $(status_of) in Invalid | Overflow) fail "rdm $store: invalid after growing back" ;; esac
	expect_same "rdm $store: nothing lost" "$DEVDIR"/snap "$out"/expect
	teardown
}

scenario() {
	grow
	shrink N 8 256 40 80 0
	shrink P 1 200 8 12 2
}

run_both scenario
exit "$KSFT_PASS"
