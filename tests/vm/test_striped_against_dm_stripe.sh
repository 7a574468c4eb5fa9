#!/usr/bin/env bash
# The striped target, against the kernel's dm-stripe first (run_both):
# the target list, data placement on 2 stripes of 64 KiB and on 3 stripes
# of a chunk that is not a power of two (12 KiB), table and status lines,
# queue limits (chunk, minimum and optimal I/O), write zeroes split over
# the stripes, a filesystem, a failing stripe (status D, an event), and
# bad table lines refused with EINVAL and a log line.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"

# check_layout DEV STRIPES CHUNK PATTERN DISK:START...: the device's data
# is the pattern, and each chunk of it is on the stripe and at the place
# dm-stripe puts it.
check_layout() {
	local dev=$1 n=$2 chunk=$3 pat=$4
	shift 4
	expect_same "$dev reads back the pattern" "$dev" "$pat"
	# The disks are read through their page cache, which I/O through the
	# device does not update.
	echo 3 >/proc/sys/vm/drop_caches
	python3 - "$n" "$chunk" "$pat" "$@" <<'EOF' || fail "data placement on the stripes"
import sys
n, chunk, pat = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stripes = [(d.split(':')[0], int(d.split(':')[1])) for d in sys.argv[4:]]
data = open(pat, 'rb').read()
files = [open(d, 'rb') for d, _ in stripes]
for c in range(len(data) // 512 // chunk):
    s, at = c % n, (c // n) * chunk
    f = files[s]
    f.seek((stripes[s][1] + at) * 512)
    if f.read(chunk * 512) != data[c * chunk * 512:(c + 1) * chunk * 512]:
        sys.exit(f"chunk {c}: not at stripe {s} sector {at}")
EOF
	log "ok: $dev: every chunk on its stripe, in dm-stripe's order"
}

scenario() {
	local pat=/tmp/striped.pat a b c
	a=$(devno "$VDA") b=$(devno "$VDB") c=$(devno "$VDC")
	expect_match "$(dm targets)" "^striped +v1\.6\.0" "striped v1.6.0 is listed"

	# 2 stripes of 128 sectors, 2 MiB, the second stripe from sector 2048.
	make_pattern "$pat" 2
	dm create st2 --table "0 4096 striped 2 128 $VDA 0 $VDB 2048" || fail "create st2"
	expect_eq "$(dm table st2)" "0 4096 striped 2 128 $a 0 $b 2048" "st2 table line"
	expect_eq "$(dm status st2)" "0 4096 striped 2 $a $b 1 AA" "st2 status"
	dd if="$pat" of="$DEVDIR"/st2 bs=1M oflag=direct status=none || fail "write st2"
	check_layout "$DEVDIR"/st2 2 128 "$pat" "$VDA":0 "$VDB":2048
	local q
	q=/sys/dev/block/$(devno "$DEVDIR"/st2)/queue
	expect_eq "$(cat "$q"/chunk_sectors)" 128 "st2 chunk_sectors"
	expect_eq "$(cat "$q"/minimum_io_size)" 65536 "st2 minimum_io_size (a chunk)"
	expect_eq "$(cat "$q"/optimal_io_size)" 131072 "st2 optimal_io_size (a stripe)"

	# Write zeroes over 300 sectors from sector 100: split over chunks of
	# both stripes; everything around it stays.
	cp "$pat" /tmp/striped.exp
	dd if=/dev/zero of=/tmp/striped.exp bs=512 seek=100 count=300 conv=notrunc status=none
	blkdiscard -z -o $((100 * 512)) -l $((300 * 512)) "$DEVDIR"/st2 || fail "blkdiscard -z on st2"
	check_layout "$DEVDIR"/st2 2 128 /tmp/striped.exp "$VDA":0 "$VDB":2048

	# A filesystem on it.
	mkfs.ext4 -q -F "$DEVDIR"/st2 >/dev/null 2>&1 || fail "mkfs.ext4 on st2"
	e2fsck -fn "$DEVDIR"/st2 >/dev/null 2>&1 || fail "e2fsck on st2"
	log "ok: a filesystem on st2"
	dm remove st2 || fail "remove st2"

	# 3 stripes of 24 sectors (neither a power of two), 9 chunks each.
	dd if="$pat" of=/tmp/striped3.pat bs=512 count=648 status=none
	dm create st3 --table "0 648 striped 3 24 $VDC 8 $VDA 4096 $VDB 0" || fail "create st3"
	expect_eq "$(dm table st3)" "0 648 striped 3 24 $c 8 $a 4096 $b 0" "st3 table line"
	dd if=/tmp/striped3.pat of="$DEVDIR"/st3 bs=512 count=648 oflag=direct status=none || fail "write st3"
	check_layout "$DEVDIR"/st3 3 24 /tmp/striped3.pat "$VDC":8 "$VDA":4096 "$VDB":0
	dm remove st3 || fail "remove st3"

	# A failing stripe: reads from its chunks fail, its status letter
	# turns D and an event is raised; the other stripe keeps working.
	dm create bad --table "0 2048 error" || fail "create bad"
	dm create st4 --table "0 2048 striped 2 8 $VDA 0 $DEVDIR/bad 0" || fail "create st4"
	local ev
	ev=$(event_nr st4)
	read1 "$DEVDIR"/st4 0 || fail "a read of stripe 0 failed"
	expect_eio "a read of the failing stripe" read1 "$DEVDIR"/st4 8
	local st
	for _ in $(seq 1 50); do
		st=$(dm status st4)
		[ "${st##* }" = AD ] && [ "$(event_nr st4)" -gt "$ev" ] && break
		sleep 0.1
	done
	expect_match "$st" " 1 AD$" "the failing stripe's status is D"
	[ "$(event_nr st4)" -gt "$ev" ] || fail "no event for the failing stripe"
	log "ok: an event was raised"
	dm remove st4 && dm remove bad || fail "remove st4, bad"

	# Bad lines: EINVAL and a log line, nothing left behind.
	expect_refused "length not a multiple of the stripes" "[Ii]nvalid argument" \
		"[Tt]arget length .*not divisible by (the )?number of stripes" \
		dm create x --table "0 15 striped 2 8 $VDA 0 $VDB 0"
	expect_refused "stripe not a multiple of the chunk" "[Ii]nvalid argument" \
		"not divisible by (the )?chunk.?size" \
		dm create x --table "0 24 striped 2 8 $VDA 0 $VDB 0"
	expect_refused "a missing destination" "[Ii]nvalid argument" \
		"[Nn]ot enough destinations|need 4 device and offset arguments" \
		dm create x --table "0 32 striped 2 8 $VDA 0"
	expect_refused "zero stripes" "[Ii]nvalid argument" "[Ii]nvalid stripe count" \
		dm create x --table "0 32 striped 0 8 $VDA 0"
	expect_refused "chunk size 0" "[Ii]nvalid argument" "[Ii]nvalid chunk.?size" \
		dm create x --table "0 32 striped 1 0 $VDA 0"
	expect_refused "a stripe past its device's end" "[Ii]nvalid argument" "too small" \
		dm create x --table "0 4096 striped 2 8 $VDA 0 $VDB $(($(disk_sectors "$VDB") - 8))"
	expect_eq "$(dev_count)" 0 "nothing left behind"
}

run_both scenario
exit "$KSFT_PASS"
