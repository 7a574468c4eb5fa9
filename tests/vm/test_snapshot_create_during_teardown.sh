#!/usr/bin/env bash
# A snapshot created on a COW device whose previous snapshot is still being
# taken down (issue 13, item 12: "a table load can join a snapshot that is
# being torn down"). The COW device C is suspended (--noflush) while a copy
# to it is in flight, so the removal of snapshot S waits for that copy;
# meanwhile S2 is created on the same COW device; then C resumes. The
# removal and the creation both end, and S2 is what a snapshot created
# after S's removal must be:
# - N: a new snapshot, taken when S2 went live: a chunk the origin changed
#   before that reads new, one changed after reads old. (Before the fix
#   rdm joined the dying S and showed S's old chunks.)
# - P: the snapshot on the COW device, read once S's teardown committed
#   its last copy: every chunk reads the origin's old data, also after S2
#   is loaded again. The kernel's dm-snapshot takes S off its origin first
#   and reads the COW device at once, while S's copy is still in flight:
#   S2 misses that exception and reuses its COW chunk (known bad, logged).
# The kernel's dm-snapshot runs each scenario first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"

LEN=16384
CS=16
out=/tmp/s12
rm -rf $out && mkdir -p $out
make_pattern $out/origin 8
make_pattern $out/new 1

# recreate_during_removal STORE: S on C, chunk 10 copied, chunk 20's copy
# in flight while C is suspended, S removed and S2 created meanwhile, C
# resumed; then chunk 30 written once S2 is live.
recreate_during_removal() {
	local store=$1
	dd if="$out"/origin of="$VDA" bs=1M oflag=direct status=none || fail "stamp"
	dd if=/dev/zero of="$VDB" bs=64k count=1 oflag=direct status=none
	dm create c --table "0 $LEN linear $VDB 0" || fail "create c"
	COW=$(devno "$DEVDIR"/c)
	dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create orig"
	snap_take orig s "0 $LEN snapshot $VDA $COW $store $CS"
	dwrite "$out"/new 0 "$DEVDIR"/orig $((10 * CS)) 1 || fail "write chunk 10"

	dm suspend --noflush c || fail "suspend c"
	dwrite "$out"/new 1 "$DEVDIR"/orig $((20 * CS)) 1 &
	local w20=$!
	sleep 2
	kill -0 "$w20" 2>/dev/null || fail "$IMPL $store: the write to chunk 20 did not wait for c"
	# The origin is not suspended around this removal: the copy in
	# flight keeps the teardown waiting.
	dm remove s &
	local rm_s=$!
	sleep 2
	dm create s2 --table "0 $LEN snapshot $VDA $COW $store $CS" &
	local mk_s2=$!
	sleep 2
	dm resume c || fail "resume c"
	done_within "$w20" 60 || fail "$IMPL $store: the write to chunk 20 did not complete"
	done_within "$rm_s" 60 || fail "$IMPL $store: the removal of s did not complete"
	done_within "$mk_s2" 60 || fail "$IMPL $store: the creation of s2 did not complete"
	dm suspend orig && dm resume orig || fail "suspend/resume orig"
	dwrite "$out"/new 2 "$DEVDIR"/orig $((30 * CS)) 1 || fail "write chunk 30"
}
teardown() {
	snap_drop orig s2
	dm remove orig && dm remove c || fail "remove"
}
# chunk_is DEV CHUNK FILE FILE-SECTOR WHAT: the chunk's first sector.
chunk_is() {
	expect_same "$5" "$1" "$3" 1 $(($2 * CS)) "$4"
}

transient() {
	recreate_during_removal N
	chunk_is "$DEVDIR"/s2 10 "$out"/new 0 "$IMPL N: s2 is new: chunk 10, changed before it, reads new"
	chunk_is "$DEVDIR"/s2 30 "$out"/origin $((30 * CS)) "$IMPL N: chunk 30, changed after it went live, reads old"
	chunk_is "$DEVDIR"/s2 40 "$out"/origin $((40 * CS)) "$IMPL N: an unchanged chunk reads the origin"
	teardown
}

persistent() {
	recreate_during_removal P
	expect_same "$IMPL P: s2 reads the origin's old image" "$DEVDIR"/s2 "$out"/origin
	snap_drop orig s2
	snap_take orig s2 "0 $LEN snapshot $VDA $COW P $CS"
	expect_same "$IMPL P: ... after s2 is loaded again" "$DEVDIR"/s2 "$out"/origin
	teardown
}

run_both transient
RDM_REF_KNOWN_BAD="dm-snapshot reads the COW device while the removed snapshot's copy is in flight" \
	run_both persistent
exit "$KSFT_PASS"
