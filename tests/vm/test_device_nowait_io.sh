#!/usr/bin/env bash
# REQ_NOWAIT I/O (io_uring's inline submission, preadv2/pwritev2 with
# RWF_NOWAIT): a table of targets that never wait (linear, striped, zero,
# error) over devices that take it offers it, as dm does; a table with a
# snapshot target does not; what would have to wait ends with EAGAIN
# instead. The same scenario on the kernel's dm and on rdm (run_both),
# each I/O one O_DIRECT preadv2/pwritev2 with RWF_NOWAIT (the block
# layer's direct path makes it one bio with REQ_NOWAIT):
# 1. linear: a write and a read succeed and do what they say.
# 2. Two linear targets: a write across their boundary succeeds and lands
#    on both devices (dm clones each part without waiting; rdm splits it
#    without waiting).
# 3. The same device suspended: a write and a read end at once with
#    EAGAIN (instead of waiting for the resume) and change nothing.
# 4. striped, and linear + zero: a write succeeds.
# 5. snapshot-origin with a snapshot: EOPNOTSUPP (the table does not take
#    REQ_NOWAIT bios); ordinary writes go on.
# 6. The linear device reloaded with a snapshot-origin table refuses them
#    after its resume, and takes them again once reloaded with linear:
#    the offer follows the live table.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDB" "$VDC" "$VDD"
command -v python3 >/dev/null || skip "needs python3"

LEN=8192
# nowait DEV read|write SECTOR SECTORS [BYTE]: one O_DIRECT I/O with
# RWF_NOWAIT (a write of SECTORS sectors of BYTE); prints "ok" (a read:
# "ok B" if every byte it read is B, else "ok mixed") or the errno's name.
nowait() {
	python3 - "$@" <<'EOF'
import errno, mmap, os, sys
dev, op, sector, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
buf = mmap.mmap(-1, n * 512)  # page-aligned, as O_DIRECT needs
if op == "write":
    buf.write(bytes([int(sys.argv[5])]) * (n * 512))
fd = os.open(dev, (os.O_WRONLY if op == "write" else os.O_RDONLY) | os.O_DIRECT)
try:
    if op == "write":
        done = os.pwritev(fd, [buf], sector * 512, os.RWF_NOWAIT)
    else:
        done = os.preadv(fd, [buf], sector * 512, os.RWF_NOWAIT)
except OSError as e:
    # EOPNOTSUPP, not Python's first name for the number (ENOTSUP).
    names = {errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EAGAIN: "EAGAIN"}
    print(names.get(e.errno) or errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
if done != n * 512:
    print(f"short {done}")
elif op == "write":
    print("ok")
else:
    print("ok", buf[0] if buf[:] == bytes([buf[0]]) * len(buf) else "mixed")
EOF
}
# byte_at DEV SECTOR: the first byte of the sector (an ordinary read).
byte_at() { dread "$1" "$2" 1 | od -An -tu1 -N1 | tr -d ' '; }

scenario() {
	local out
	[ "$IMPL" = dm ] && { modprobe -d "$RDM_MODROOT" dm-zero || fail "modprobe dm-zero"; }
	for d in "$VDB" "$VDC"; do
		dd if=/dev/zero of="$d" bs=512 count="$LEN" oflag=direct status=none || fail "zero $d"
	done

	# 1. linear
	dm create lin --table "0 $LEN linear $VDB 0" || fail "create lin"
	expect_eq "$(nowait "$DEVDIR"/lin write 8 8 17)" ok "$IMPL: linear: RWF_NOWAIT write"
	expect_eq "$(byte_at "$VDB" 8)" 17 "$IMPL: linear: the write reached the disk"
	expect_eq "$(nowait "$DEVDIR"/lin read 8 8)" "ok 17" "$IMPL: linear: RWF_NOWAIT read"

	# 2. a write across two linear targets
	dm reload lin --table "0 16 linear $VDB 0
16 $((LEN - 16)) linear $VDC 0" || fail "reload lin with two targets"
	dm resume lin || fail "resume lin"
	expect_eq "$(nowait "$DEVDIR"/lin write 12 8 34)" ok "$IMPL: RWF_NOWAIT write across two targets"
	expect_eq "$(byte_at "$VDB" 15)" 34 "$IMPL: its front reached the first disk"
	expect_eq "$(byte_at "$VDC" 0)" 34 "$IMPL: its back reached the second disk"
	expect_eq "$(byte_at "$VDC" 4)" 0 "$IMPL: and no further"

	# 3. suspended: EAGAIN, not a wait for the resume
	dm suspend lin || fail "suspend lin"
	nowait "$DEVDIR"/lin write 100 8 51 >/tmp/nowait.w &
	local wpid=$!
	nowait "$DEVDIR"/lin read 12 8 >/tmp/nowait.r &
	local rpid=$!
	if ! done_within "$wpid" 30 || ! done_within "$rpid" 30; then
		dm resume lin
		wait
		fail "$IMPL: RWF_NOWAIT I/O to a suspended device waited for its resume"
	fi
	expect_eq "$(cat /tmp/nowait.w)" EAGAIN "$IMPL: suspended: RWF_NOWAIT write"
	expect_eq "$(cat /tmp/nowait.r)" EAGAIN "$IMPL: suspended: RWF_NOWAIT read"
	dm resume lin || fail "resume lin"
	expect_eq "$(byte_at "$VDC" 84)" 0 "$IMPL: the refused write changed nothing"
	dm remove lin || fail "remove lin"

	# 4. striped; linear + zero
	dm create str --table "0 $LEN striped 2 8 $VDB 0 $VDC 0" || fail "create str"
	expect_eq "$(nowait "$DEVDIR"/str write 0 8 68)" ok "$IMPL: striped: RWF_NOWAIT write"
	expect_eq "$(nowait "$DEVDIR"/str read 0 8)" "ok 68" "$IMPL: striped: RWF_NOWAIT read"
	dm remove str || fail "remove str"
	dm create mix --table "0 16 linear $VDB 0
16 16 zero" || fail "create mix"
	expect_eq "$(nowait "$DEVDIR"/mix write 8 16 85)" ok "$IMPL: linear+zero: RWF_NOWAIT write across both"
	expect_eq "$(nowait "$DEVDIR"/mix read 16 8)" "ok 0" "$IMPL: linear+zero: the zero part reads zeros"
	dm remove mix || fail "remove mix"

	# 5. snapshot-origin and snapshot
	dm create orig --table "0 $LEN snapshot-origin $VDB" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $VDB $VDD N 16"
	expect_eq "$(nowait "$DEVDIR"/orig write 0 8 102)" EOPNOTSUPP "$IMPL: snapshot-origin: RWF_NOWAIT write"
	expect_eq "$(nowait "$DEVDIR"/snap read 0 8)" EOPNOTSUPP "$IMPL: snapshot: RWF_NOWAIT read"
	dwrite /dev/zero 0 "$DEVDIR"/orig 0 8 || fail "$IMPL: an ordinary write to the origin"
	snap_drop orig snap

	# 6. the offer follows the live table
	dm reload orig --table "0 $LEN linear $VDB 0" || fail "reload orig with linear"
	dm resume orig || fail "resume orig"
	expect_eq "$(nowait "$DEVDIR"/orig write 0 8 119)" ok "$IMPL: reloaded with linear: RWF_NOWAIT write"
	dm reload orig --table "0 $LEN snapshot-origin $VDB" || fail "reload orig with snapshot-origin"
	dm resume orig || fail "resume orig"
	expect_eq "$(nowait "$DEVDIR"/orig write 0 8 120)" EOPNOTSUPP "$IMPL: reloaded with snapshot-origin: RWF_NOWAIT write"
	dm remove orig || fail "remove orig"
	expect_eq "$(dev_count)" 0 "$IMPL: no device left"
}

run_both scenario
exit "$KSFT_PASS"
