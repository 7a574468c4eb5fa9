#!/usr/bin/env bash
# Persistent snapshots whose metadata writes must not wait on what they
# hold up.
# 1. A P snapshot made invalid by its own write (a snapshot write that does
#    not fit): the next origin write, mapped inside its submit_bio, must be
#    held until the header says the snapshot is invalid, without waiting
#    there for that write (a submit_bio's own I/O only goes once it
#    returns: waiting would hang). The write completes, valid=0 is on
#    disk, the origin has the data.
# 2. Stacked snapshots, with cow_threshold=2 so that the copier's own
#    writes meet the throttle: origin A over $VDA with P snapshots S1 and
#    T (COWs over $VDB and $VDD); origin B over $VDC with a P snapshot S2
#    whose COW is the origin device A itself (its copies and metadata
#    writes to A make copies for S1 and T) and a P snapshot S3 whose COW is
#    the snapshot device T (its writes to T are snapshot writes). Writes
#    to B of every shape, each under a time-out: nothing hangs (the copier
#    would wait for itself if it waited for a commit, or for the
#    throttle); S2 and S3 read B's old image; S1 reads A's old image; A
#    starts with S2's header.
# 3. Everything removed and created again from the same tables (each
#    snapshot's metadata read back from a stacked device): the same status
#    lines and the same images.
# The whole test runs twice: with cow_threshold=2, and at the defaults (a
# lowered throttle must never be what keeps a test from hanging).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC" "$VDD"
snap_ref && skip "drives rdm only (module parameters, rdm's log lines)"
if [ -z "${RDM_P05_PARAMS+set}" ]; then
	for params in cow_threshold=2 ""; do
		log "--- rdm loaded with '${params:-the defaults}'"
		RDM_P05_PARAMS=$params "$0" || exit
	done
	exit "$KSFT_PASS"
fi
defer snap_cleanup
# shellcheck disable=SC2086
snap_load $RDM_P05_PARAMS

LEN=16384 # 8 MiB origins
CS=16     # 8 KiB chunks
out=/tmp/p05
rm -rf $out && mkdir -p $out
make_pattern $out/a 8
# A's first chunk is zero: S2 finds a new COW there (and T, in its copy).
dd if=/dev/zero of=$out/a bs=8k count=1 conv=notrunc status=none
make_pattern $out/b 8
make_pattern $out/new 8

# within SECONDS WHAT COMMAND...: the command ends within SECONDS and
# succeeds (a process stuck in the kernel cannot be killed: a hang is
# reported and the test fails, leaving it behind).
within() {
	local secs=$1 what=$2 pid i
	shift 2
	"$@" &
	pid=$!
	for ((i = 0; i < secs * 10; i++)); do
		if ! kill -0 $pid 2>/dev/null; then
			wait $pid || fail "$what: failed"
			return 0
		fi
		sleep 0.1
	done
	fail "$what: still running after $secs s (hang)"
}

# --- 1. Invalidated by its own write, then an origin write ---
dm create o1 --table "0 $LEN snapshot-origin $VDA" || fail "create o1"
dd if=$out/a of="$DEVDIR"/o1 bs=1M oflag=direct status=none || fail "stamp o1"
dm create c1 --table "0 $((6 * CS)) linear $VDB 0" || fail "create c1"
dd if=/dev/zero of="$DEVDIR"/c1 bs=8k count=1 oflag=direct status=none || fail "zero c1"
snap_take o1 s1 "0 $LEN snapshot $VDA $DEVDIR/c1 P $CS"
for c in 10 11 12 13; do
	dwrite $out/new $((c * CS)) "$DEVDIR"/s1 $((c * CS)) $CS || fail "snapshot write to chunk $c"
done
expect_eq "$(dm status s1)" "0 $LEN snapshot $((6 * CS))/$((6 * CS)) $((2 * CS))" "s1: full"
klog_mark
expect_eio "s1: a snapshot write that does not fit" dwrite $out/new 0 "$DEVDIR"/s1 $((20 * CS)) $CS
expect_eq "$(dm status s1)" "0 $LEN snapshot Invalid" "s1: Invalid"
expect_match "$(klog_since_mark)" "invalidated: COW device full" "s1: logged"
within 60 "origin write after the invalidation" dwrite $out/new 0 "$DEVDIR"/o1 $((30 * CS)) $CS
log "ok: the origin write after the invalidation completed"
expect_eq "$(cow_header "$DEVDIR"/c1)" "$COW_MAGIC 0 1 $CS" "s1: marked invalid on disk (valid=0)"
expect_same "o1: has the write" "$DEVDIR"/o1 $out/new $CS $((30 * CS)) 0
snap_drop o1 s1
dm remove c1 && dm remove o1 || fail "remove section 1"

# --- 2. Stacked snapshots ---
SLICE=49152 # 24 MiB COW slices
create_all() {
	dm create a --table "0 $LEN snapshot-origin $VDA" || fail "create a"
	dm create ca --table "0 $SLICE linear $VDB 0" || fail "create ca"
	dm create ct --table "0 $SLICE linear $VDD 0" || fail "create ct"
	dm create b --table "0 $LEN snapshot-origin $VDC" || fail "create b"
	snap_take a s1 "0 $LEN snapshot $VDA $DEVDIR/ca P $CS"
	snap_take a t "0 $LEN snapshot $VDA $DEVDIR/ct P $CS"
	snap_take b s2 "0 $LEN snapshot $VDC $DEVDIR/a P $CS"
	snap_take b s3 "0 $LEN snapshot $VDC $DEVDIR/t P $CS"
}
remove_all() {
	local d
	for d in s3 s2 b t s1 ct ca a; do dm remove $d || fail "remove $d"; done
}
dd if=$out/a of="$VDA" bs=1M oflag=direct status=none || fail "stamp A"
dd if=$out/b of="$VDC" bs=1M oflag=direct status=none || fail "stamp B"
for d in $VDB $VDD; do dd if=/dev/zero of="$d" bs=8k count=1 oflag=direct status=none; done
create_all
cp $out/b $out/bexp
bwrite() { # bwrite SECTOR SECTORS
	within 60 "write to b at $1+$2" dwrite $out/new "$1" "$DEVDIR"/b "$1" "$2"
	fput $out/new "$1" $out/bexp "$1" "$2"
}
bwrite $((3 * CS + 5)) 1        # part of a chunk
bwrite $((40 * CS)) $CS         # a whole chunk
bwrite $((60 * CS - 4)) 8       # across two chunks
bwrite $((100 * CS)) $((64 * CS)) # 64 chunks at once (512 KiB)
within 120 "parallel writes to b" bash -c "
	for i in 0 1 2 3; do
		dd if=$out/new of=$DEVDIR/b bs=64k seek=\$((40 + i * 8)) skip=\$((40 + i * 8)) count=8 \
			oflag=direct status=none &
	done
	wait"
for i in 0 1 2 3; do
	fput $out/new $(((40 + i * 8) * 128)) $out/bexp $(((40 + i * 8) * 128)) $((8 * 128))
done
expect_same "b: has the writes" "$DEVDIR"/b $out/bexp
expect_same "s2 (COW: origin a): B's old image" "$DEVDIR"/s2 $out/b
expect_same "s3 (COW: snapshot t): B's old image" "$DEVDIR"/s3 $out/b
expect_same "s1: A's old image under s2's COW writes" "$DEVDIR"/s1 $out/a
expect_eq "$(cow_header "$DEVDIR"/a)" "$COW_MAGIC 1 1 $CS" "a: starts with s2's header"
expect_eq "$(cow_header "$DEVDIR"/t)" "$COW_MAGIC 1 1 $CS" "t: starts with s3's header"
declare -A st
for d in s1 t s2 s3; do
	st[$d]=$(dm status $d)
	expect_match "${st[$d]}" "^0 $LEN snapshot [0-9]+/[0-9]+ [0-9]+\$" "$d: valid ($(dm status $d))"
done

# --- 3. Created again from the same tables ---
remove_all
create_all
for d in s1 t s2 s3; do expect_eq "$(dm status $d)" "${st[$d]}" "$d re-created: same status"; done
expect_same "s2 re-created: B's old image" "$DEVDIR"/s2 $out/b
expect_same "s3 re-created: B's old image" "$DEVDIR"/s3 $out/b
expect_same "s1 re-created: A's old image" "$DEVDIR"/s1 $out/a
bwrite $((200 * CS)) $((8 * CS))
expect_same "s2: B's old image after another write" "$DEVDIR"/s2 $out/b
expect_same "s3: B's old image after another write" "$DEVDIR"/s3 $out/b
remove_all
expect_eq "$(dev_count)" 0 "all devices gone"
