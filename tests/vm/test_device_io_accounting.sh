#!/usr/bin/env bash
# I/O statistics of mapped devices (/sys/block/<disk>/stat, /proc/diskstats,
# /sys/block/<disk>/inflight), as dm keeps them: the disk offers
# BLK_FEAT_IO_STAT (queue/iostats reads 1), each bio mapped is counted
# (reads, writes, discards, their sectors, time), it is in flight from when
# it is mapped until it ends, and nothing is counted while the user has
# turned queue/iostats off. The same scenario on the kernel's dm and on rdm
# (run_both); every I/O is one O_DIRECT dd of 4 KiB blocks (one bio each),
# and each check compares the counters before and after (the plain guest
# has no udev, so nothing else reads the devices meanwhile):
# 1. linear: queue/iostats is 1; 16 writes and 8 reads count exactly 16
#    writes of 128 sectors and 8 reads of 64; io_ticks moved; nothing is
#    in flight after (stat field 9 and inflight).
# 2. Two linear targets: a write and a read across their boundary count
#    their sectors exactly, as one or two I/Os (dm counts each part it
#    maps: two).
# 3. snapshot-origin with a snapshot (N, 8 KiB chunks): origin writes held
#    for their copies, snapshot writes of part of a chunk (copied first)
#    and of a whole chunk (acknowledged when the exception is recorded),
#    snapshot reads of copied and of uncopied chunks: all counted exactly,
#    nothing in flight after.
# 4. zero: reads (ended by the target itself) and a 1 MiB discard count
#    (discards in fields 12 and 14).
# 5. error: a failed read and write leave nothing in flight.
# 6. Suspended: a write parked until the resume is not in flight while it
#    is parked, a RWF_NOWAIT write ends with EAGAIN; after the resume the
#    parked write is counted once and nothing is in flight.
# 7. queue/iostats set to 0: reads and writes count nothing; set to 1
#    again: they count.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDB" "$VDC" "$VDD"

LEN=8192

# sysname NAME: the kernel's name of a mapped device (its /sys/block entry).
sysname() {
	local d
	d=$(readlink -f "/sys/dev/block/$(devno "$DEVDIR/$1")") || return 1
	echo "${d##*/}"
}
# mark NAME: remembers the device's counters (stat fields) in BEFORE.
mark() { read -r -a BEFORE <"/sys/block/$(sysname "$1")/stat"; }
# moved NAME: sets D to what each counter moved by since the last mark.
moved() {
	local after i
	read -r -a after <"/sys/block/$(sysname "$1")/stat"
	D=()
	for i in "${!after[@]}"; do
		D[i]=$((after[i] - ${BEFORE[i]:-0}))
	done
}
# expect_counted NAME WHAT READS RSECT WRITES WSECT: since the last mark the
# device counted exactly these reads and writes (completed, sectors), and
# nothing is in flight.
expect_counted() {
	moved "$1"
	expect_eq "reads ${D[0]}/${D[2]} writes ${D[4]}/${D[6]}" \
		"reads $3/$4 writes $5/$6" "$IMPL: $2: counted (I/Os/sectors)"
	expect_idle "$1" "$2"
}
# expect_idle NAME WHAT: nothing in flight (stat field 9, inflight).
expect_idle() {
	local s r w
	read -r -a s <"/sys/block/$(sysname "$1")/stat"
	read -r r w <"/sys/block/$(sysname "$1")/inflight"
	expect_eq "${s[8]} $r $w" "0 0 0" "$IMPL: $2: nothing in flight"
}
# wr DEV SECTOR COUNT [BS]: COUNT O_DIRECT writes of BS sectors (8) from SECTOR.
wr() {
	dd if=/dev/urandom iflag=fullblock of="$1" bs=$((${4:-8} * 512)) oflag=direct,seek_bytes \
		seek=$(($2 * 512)) count="$3" status=none
}
# rd DEV SECTOR COUNT [BS]: the same, reads.
rd() {
	dd if="$1" of=/dev/null bs=$((${4:-8} * 512)) iflag=direct,skip_bytes \
		skip=$(($2 * 512)) count="$3" status=none
}
# nowait_write DEV: one 4 KiB O_DIRECT write at 0 with RWF_NOWAIT; prints
# "ok" or the errno's number.
nowait_write() {
	python3 - "$1" <<'EOF'
import mmap, os, sys
buf = mmap.mmap(-1, 4096)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
try:
    os.pwritev(fd, [buf], 0, os.RWF_NOWAIT)
    print("ok")
except OSError as e:
    print(e.errno)
EOF
}

scenario() {
	local q pid
	[ "$IMPL" = dm ] && { modprobe -d "$RDM_MODROOT" dm-zero || fail "modprobe dm-zero"; }

	# 1. linear
	dm create lin --table "0 $LEN linear $VDB 0" || fail "create lin"
	q=/sys/block/$(sysname lin)/queue/iostats
	expect_eq "$(cat "$q")" 1 "$IMPL: linear: queue/iostats"
	mark lin
	wr "$DEVDIR"/lin 0 16 || fail "write lin"
	rd "$DEVDIR"/lin 64 8 || fail "read lin"
	expect_counted lin "linear: 16 writes, 8 reads" 8 64 16 128
	[ "${D[9]}" -gt 0 ] || fail "$IMPL: linear: io_ticks did not move (${D[9]})"
	log "ok: $IMPL: linear: io_ticks moved by ${D[9]} ms"

	# 2. two linear targets; I/O across their boundary (sector 16)
	dm reload lin --table "0 16 linear $VDB 0
16 $((LEN - 16)) linear $VDC 0" || fail "reload lin with two targets"
	dm resume lin || fail "resume lin"
	mark lin
	wr "$DEVDIR"/lin 8 1 16 || fail "write across the boundary"
	rd "$DEVDIR"/lin 8 1 16 || fail "read across the boundary"
	wr "$DEVDIR"/lin 64 2 || fail "write on the second target"
	moved lin
	expect_eq "${D[2]} ${D[6]}" "16 32" "$IMPL: two targets: sectors read and written"
	[ "${D[0]}" -ge 1 ] && [ "${D[0]}" -le 2 ] ||
		fail "$IMPL: two targets: a read across the boundary counted as ${D[0]} reads"
	[ "${D[4]}" -ge 3 ] && [ "${D[4]}" -le 4 ] ||
		fail "$IMPL: two targets: three writes, one across the boundary, counted as ${D[4]}"
	log "ok: $IMPL: two targets: ${D[0]} reads, ${D[4]} writes counted"
	expect_idle lin "two targets"

	# 3. snapshot-origin and snapshot (chunks of 16 sectors)
	dm create orig --table "0 $LEN snapshot-origin $VDB" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $VDB $VDD N 16"
	mark orig
	# Four chunks not copied yet: each write waits for its copy.
	wr "$DEVDIR"/orig 0 1 || fail "origin write 0"
	wr "$DEVDIR"/orig 64 1 || fail "origin write 64"
	wr "$DEVDIR"/orig 128 1 || fail "origin write 128"
	wr "$DEVDIR"/orig 192 1 || fail "origin write 192"
	rd "$DEVDIR"/orig 0 2 || fail "origin read"
	expect_counted orig "origin: 4 writes held for their copies, 2 reads" 2 16 4 32
	mark snap
	# Part of chunk 1 (copied first, then written), all of chunk 2 (the
	# write is the copy); reads of copied chunk 0 and uncopied chunk 32.
	wr "$DEVDIR"/snap 16 1 || fail "snapshot write of part of a chunk"
	wr "$DEVDIR"/snap 32 1 16 || fail "snapshot write of a whole chunk"
	rd "$DEVDIR"/snap 0 1 || fail "snapshot read of a copied chunk"
	rd "$DEVDIR"/snap 512 1 || fail "snapshot read of an uncopied chunk"
	expect_counted snap "snapshot: writes of part of and of a whole chunk, 2 reads" 2 16 2 24
	expect_idle orig "origin, after the snapshot's I/O"
	snap_drop orig snap
	dm remove orig || fail "remove orig"

	# 4. zero: reads and discards ended by the target itself
	dm create z --table "0 $LEN zero" || fail "create z"
	mark z
	rd "$DEVDIR"/z 0 4 || fail "read z"
	expect_counted z "zero: 4 reads" 4 32 0 0
	if command -v blkdiscard >/dev/null; then
		# (blkdiscard probes the device for signatures first: only the
		# discard counters are checked.)
		mark z
		blkdiscard -o 0 -l $((1024 * 1024)) "$DEVDIR"/z || fail "$IMPL: discard z"
		moved z
		expect_eq "${D[13]}" 2048 "$IMPL: zero: sectors discarded"
		[ "${D[11]}" -ge 1 ] || fail "$IMPL: zero: no discard counted"
		expect_idle z "zero: after a discard"
	fi
	dm remove z || fail "remove z"

	# 5. error: nothing left in flight
	dm create err --table "0 $LEN error" || fail "create err"
	rd "$DEVDIR"/err 0 1 2>/dev/null && fail "$IMPL: a read of an error target succeeded"
	wr "$DEVDIR"/err 0 1 2>/dev/null && fail "$IMPL: a write to an error target succeeded"
	expect_idle err "error target, after a failed read and write"
	dm remove err || fail "remove err"

	# 6. I/O that meets a suspended device
	mark lin
	dm suspend lin || fail "suspend lin"
	wr "$DEVDIR"/lin 128 1 &
	pid=$!
	sleep 1
	kill -0 "$pid" 2>/dev/null || fail "$IMPL: a write to a suspended device did not wait"
	expect_idle lin "suspended, a write parked"
	if command -v python3 >/dev/null; then
		expect_eq "$(nowait_write "$DEVDIR"/lin)" 11 "$IMPL: suspended: RWF_NOWAIT write gets EAGAIN"
		expect_idle lin "suspended, after a RWF_NOWAIT write"
	fi
	dm resume lin || fail "resume lin"
	done_within "$pid" 30 || fail "$IMPL: the parked write did not end after the resume"
	expect_counted lin "suspended, then resumed: the parked write" 0 0 1 8

	# 7. queue/iostats off (after the last table swap, which turns it on)
	echo 0 >"$q" || fail "$IMPL: cannot turn queue/iostats off"
	mark lin
	wr "$DEVDIR"/lin 0 4 || fail "write lin"
	rd "$DEVDIR"/lin 0 4 || fail "read lin"
	expect_counted lin "queue/iostats 0: 4 writes, 4 reads" 0 0 0 0
	echo 1 >"$q" || fail "$IMPL: cannot turn queue/iostats on"
	mark lin
	rd "$DEVDIR"/lin 0 2 || fail "read lin"
	expect_counted lin "queue/iostats 1 again: 2 reads" 2 16 0 0
	dm remove lin || fail "remove lin"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}

run_both scenario
exit "$KSFT_PASS"
