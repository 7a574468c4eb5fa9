#!/usr/bin/env bash
# A copy of a large chunk is streamed, not buffered whole (issue 13, item
# 14: "a 512 MiB chunk needs no 512 MiB allocation"). A transient
# snapshot with 64 MiB chunks, whose COW device is suspended (--noflush)
# when an origin write needs chunk 0 copied: the copy reads what it can
# and stops at its first COW write. While it is stopped, the guest's
# available memory must not have dropped by anything near the chunk's
# size (less than 16 MiB; before, rdm read the whole 64 MiB chunk into one
# buffer first). Once the COW device resumes, the write completes and the
# snapshot holds the whole old chunk. The kernel's dm-snapshot first.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"

LEN=262144   # 128 MiB origin
CS=131072    # 64 MiB chunks
COWLEN=393216 # two chunks and room
out=/tmp/s13
rm -rf $out && mkdir -p $out
make_pattern $out/chunk0 64
make_pattern $out/new 1

mem_available_kib() {
	local k v _
	while read -r k v _; do
		[ "$k" = MemAvailable: ] && echo "$v" && return
	done </proc/meminfo
}

scenario() {
	dd if="$out"/chunk0 of="$VDA" bs=1M oflag=direct status=none || fail "stamp the origin"
	dm create cow --table "0 $COWLEN linear $VDB 0" || fail "create cow"
	dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create orig"
	snap_take orig snap "0 $LEN snapshot $VDA $(devno "$DEVDIR"/cow) N $CS"
	dm suspend --noflush cow || fail "suspend cow"
	sync
	echo 1 >/proc/sys/vm/drop_caches
	local before during writer
	before=$(mem_available_kib)
	dwrite "$out"/new 0 "$DEVDIR"/orig 8 8 &
	writer=$!
	# Time for the copy to read all it will read before it waits.
	sleep 8
	kill -0 "$writer" 2>/dev/null || { dm resume cow; fail "$IMPL: the origin write did not wait for its copy"; }
	during=$(mem_available_kib)
	log "$IMPL: available memory before the copy ${before} KiB, while it waits ${during} KiB"
	if [ $((before - during)) -ge 16384 ]; then
		dm resume cow
		fail "$IMPL: a stalled copy of a 64 MiB chunk holds $(((before - during) / 1024)) MiB"
	fi
	log "ok: $IMPL: the stalled copy holds less than 16 MiB"
	dm resume cow || fail "resume cow"
	wait "$writer" || fail "$IMPL: the origin write failed"
	# If the snapshot went Invalid, say why (the kernel's own log lines).
	local st
	st=$(dm status snap)
	case $st in *Invalid*) dmesg | grep -E 'snapshot|kcopyd|rdm' | tail -n 5 | sed 's/^/# /'
		fail "$IMPL: the snapshot went Invalid ($st)" ;; esac
	expect_same "$IMPL: the snapshot holds the whole old chunk" "$DEVDIR"/snap "$out"/chunk0
	cp "$out"/chunk0 "$out"/expect
	fput "$out"/new 0 "$out"/expect 8 8
	expect_same "$IMPL: the origin has the write" "$DEVDIR"/orig "$out"/expect
	snap_drop orig snap
	dm remove orig && dm remove cow || fail "remove"
}
run_both scenario
exit "$KSFT_PASS"
