# shellcheck shell=bash
# Shared by test_persist_million_exceptions_load_and_grow and test_fault_big_cow_without_high_order_pages (sourced after
# test_common.sh): a persistent snapshot whose COW device holds over a
# million scattered exceptions in dm-snapshot's format, loaded and then
# grown by origin writes.
#
# The origin and the COW device are loop devices over sparse files in
# /dev/shm (8 GiB of origin: 2,097,152 chunks of 4 KiB; a COW device of
# about 4 GiB). mkcow.py writes the COW image: BIG_N exceptions, 256 per
# metadata area, exception i for origin chunk (i * 5063) mod 2^21: each
# area's entries are spread over 62 % of the origin, 5063 chunks apart,
# and neighbouring origin chunks have unrelated COW chunks, so no two
# exceptions form a run (the table holds one run per exception, as after
# random writes). About half of the origin chunks have an exception, in a
# quasi-random pattern. Only the metadata (16 MiB) and the COW data of the
# exceptions below chunk BIG_W are written, and only origin chunks below
# BIG_W are stamped: the samples are taken there, and the growth writes
# there (8,180 new exceptions).

PY=$(command -v /usr/bin/python3 || command -v python3) || skip "python3 is not available"
MKCOW="$PY $RDM_TOP/tests/vm/mkcow.py"
BIG_N=1050000 BIG_C=8 BIG_M=2097152 BIG_STRIDE=5063 BIG_W=16384
BIG_LEN=$((BIG_M * BIG_C))
BIG_EPA=$((BIG_C * 512 / 16))
BIG_DIR=/dev/shm/rdm-bigcow
BIG_ORIG='' BIG_COW=''
BIG_LAYOUT=(--chunk "$BIG_C" --count "$BIG_N" --origin-chunks "$BIG_M" --stride "$BIG_STRIDE")

# big_setup: the two loop devices (BIG_ORIG, BIG_COW), empty.
big_setup() {
	mkdir -p $BIG_DIR || fail "mkdir $BIG_DIR"
	# Room for the image, the growth (BIG_W more exceptions at most) and
	# their metadata areas.
	local cow_chunks=$(((BIG_N + BIG_W) * (BIG_EPA + 1) / BIG_EPA + 16))
	rm -f $BIG_DIR/origin.img $BIG_DIR/cow.img
	truncate -s $((BIG_LEN * 512)) $BIG_DIR/origin.img &&
		truncate -s $((cow_chunks * BIG_C * 512)) $BIG_DIR/cow.img || fail "sparse files in $BIG_DIR"
	BIG_ORIG=$(losetup -f --show $BIG_DIR/origin.img) || fail "losetup origin"
	BIG_COW=$(losetup -f --show $BIG_DIR/cow.img) || fail "losetup cow"
}

big_teardown() {
	[ -n "$BIG_ORIG" ] && losetup -d "$BIG_ORIG"
	[ -n "$BIG_COW" ] && losetup -d "$BIG_COW"
	BIG_ORIG='' BIG_COW=''
	rm -rf $BIG_DIR
}

# big_image: puts the COW image and the origin (stamped below BIG_W) on
# the devices of big_setup, anew (a run's growth changed them): written by
# mkcow the first time, copied from that first image later. Sets
# BIG_STATUS (the status line of the loaded snapshot: dm's figures, from
# mkcow) and BIG_FRESH (origin chunks below BIG_W without an exception:
# the exceptions the growth adds).
big_image() {
	local mk t0 below f
	t0=$(now_ms)
	if [ -f $BIG_DIR/mkcow.out ]; then
		# Sparse copies: only the written extents (some 100 MiB) are read.
		for f in cow origin; do
			cp --sparse=always $BIG_DIR/$f.first $BIG_DIR/$f.img || fail "restore $f.img"
		done
		log "COW image and origin restored in $(($(now_ms) - t0)) ms"
	else
		# Written into the files (the loop devices read them through their
		# page cache): some 12,000 scattered writes, each an I/O through a
		# loop device, would take a minute under emulation.
		mk=$($MKCOW make $BIG_DIR/cow.img "${BIG_LAYOUT[@]}" --data-below $BIG_W) || fail "mkcow make: $mk"
		$MKCOW origin $BIG_DIR/origin.img --chunk $BIG_C --chunks $BIG_W >/dev/null || fail "stamp the origin"
		for f in cow origin; do
			cp --sparse=always $BIG_DIR/$f.img $BIG_DIR/$f.first || fail "keep $f.img"
		done
		printf '%s\n' "$mk" >$BIG_DIR/mkcow.out
		log "$mk"
		log "COW image of $BIG_N exceptions and origin written in $(($(now_ms) - t0)) ms"
	fi
	mk=$(cat $BIG_DIR/mkcow.out)
	[[ $mk =~ allocated=([0-9]+)\ metadata=([0-9]+) ]] || fail "no figures from mkcow: $mk"
	BIG_STATUS="0 $BIG_LEN snapshot ${BASH_REMATCH[1]}/$(disk_sectors "$BIG_COW") ${BASH_REMATCH[2]}"
	[[ $mk =~ data_below=([0-9]+) ]] || fail "no data_below from mkcow: $mk"
	below=${BASH_REMATCH[1]}
	BIG_FRESH=$((BIG_W - below))
}

# big_sample WHAT [MKCOW-ARGS]: chunks below BIG_W of the snapshot read
# right (COW data where the image has an exception, the origin's
# elsewhere).
big_sample() {
	local o
	o=$($MKCOW sample "$DEVDIR"/bsnap "${BIG_LAYOUT[@]}" --below $BIG_W --samples 100 "${@:2}") || fail "$1: $o"
	log "ok: $1: $o"
}

# big_stats EXCEPTIONS MIN-RUNS: rdm's stats message: EXCEPTIONS
# exceptions in MIN-RUNS to EXCEPTIONS runs; logs the table's bytes per
# exception, which must stay within 32 bytes per run.
big_stats() {
	local st ex runs bytes
	st=$(dm message bsnap 0 stats) || fail "stats message"
	read -r _ ex _ runs _ bytes <<<"$st"
	expect_eq "$ex" "$1" "stats: $1 exceptions ($st)"
	[ "$runs" -le "$ex" ] && [ "$runs" -ge "$2" ] || fail "stats: $runs runs, expected $2 to $ex"
	log "exception table: $bytes bytes for $ex exceptions in $runs runs:" \
		"$(printf '%d.%02d' $((bytes / ex)) $((bytes * 100 / ex % 100))) bytes per exception"
	[ "$bytes" -le $((32 * runs + 65536)) ] || fail "stats: $bytes bytes is more than 32 per run"
}

# big_load [WRAPPER...]: takes the snapshot of the image (origin
# suspended, as LVM does), the create run through WRAPPER; prints the
# activation time; checks status, stats (rdm) and samples.
big_load() {
	local t0 ms out
	dm create borig --table "0 $BIG_LEN snapshot-origin $BIG_ORIG" || fail "create the origin"
	dm suspend borig || fail "suspend the origin"
	t0=$(now_ms)
	out=$("$@" "$DM_TOOL" create bsnap --table "0 $BIG_LEN snapshot $BIG_ORIG $BIG_COW P $BIG_C" 2>&1) ||
		{ dm resume borig; fail "load the snapshot of $BIG_N exceptions: $out ($(dmesg | tail -n 3 | tr '\n' ' '))"; }
	ms=$(($(now_ms) - t0))
	dm resume borig || fail "resume the origin"
	log "activation of $BIG_N exceptions on $IMPL: $ms ms"
	expect_eq "$(dm status bsnap)" "$BIG_STATUS" "status: the $BIG_N exceptions loaded"
	[ "$IMPL" = rdm ] && big_stats $BIG_N $BIG_N
	big_sample "snapshot samples after the load"
}

# big_grow [WRAPPER...]: writes every 4 KiB origin chunk below BIG_W once:
# those below BIG_W / 2 with 1 MiB O_DIRECT writes in order (dd, through
# WRAPPER), the others in random order (fio, 32 in flight; never through
# WRAPPER: fio clones, and a task whose order >= 1 allocations fail cannot,
# its task_struct being an order-1 slab), so that their exceptions are
# copied in no particular order and nearly each is a run of its own.
# BIG_FRESH new exceptions. The snapshot stays valid and reads right; the
# metadata on disk, read back after removal, has them all.
big_grow() {
	local st out am meta half=$((BIG_W * BIG_C * 512 / 2)) t0
	t0=$(now_ms)
	out=$("$@" dd if=/dev/zero of="$DEVDIR"/borig bs=1M count=$((half >> 20)) oflag=direct status=none 2>&1) ||
		fail "origin writes (dd): $out"
	out=$(fio --name=grow --filename="$DEVDIR"/borig --rw=randwrite --bs=$((BIG_C * 512)) \
		--offset=$half --size=$half --direct=1 --ioengine=libaio --iodepth=32 \
		--zero_buffers --randrepeat=0 --output-format=terse 2>&1) || fail "origin writes (fio): $out"
	log "64 MiB of origin writes: $(($(now_ms) - t0)) ms"
	st=$(dm status bsnap)
	case $st in *Invalid* | *Overflow*) fail "the snapshot is $st after the origin writes" ;; esac
	log "ok: status after $BIG_FRESH more exceptions: $st"
	if [ "$IMPL" = rdm ]; then
		# Copies in random order: at least 3,000 new runs, more than the
		# leaves of that part of the origin had room for (new leaves).
		big_stats $((BIG_N + BIG_FRESH)) $((BIG_N + 3000))
	fi
	big_sample "snapshot samples after the growth" --seed 2
	expect_eq "$(dread "$DEVDIR"/borig 0 $BIG_C | od -An -tx8 -N8 | tr -d ' ')" 0000000000000000 \
		"the origin holds the new data"
	t0=$(now_ms)
	snap_drop borig bsnap
	dm remove borig || fail "remove the origin"
	log "removal: $(($(now_ms) - t0)) ms"
	t0=$(now_ms)
	out=$($MKCOW check $BIG_DIR/cow.img) || fail "mkcow check: $out"
	log "check: $(($(now_ms) - t0)) ms"
	read -r _ _ _ am meta <<<"$st"
	expect_match "$out" "valid=1 version=1 exceptions=$((BIG_N + BIG_FRESH)) .*allocated=${am%%/*} metadata=$meta\$" \
		"on disk: $((BIG_N + BIG_FRESH)) exceptions, dm's figures as the status said"
}
