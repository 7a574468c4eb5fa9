#!/usr/bin/env bash
# Persistent snapshots (P, PO), against expected images and status lines
# computed by the test (dm-snapshot's figures: allocated = (2 + K +
# K/epa) chunks, metadata = (2 + K/epa) chunks for K exceptions, epa =
# chunk bytes / 16).
# 1. A P snapshot (chunk 16, COW = a linear device over $VDB) of an origin
#    stamped with a random pattern; origin writes (partial chunk, whole
#    chunk, crossing two chunks, 505 chunks at once) and snapshot writes
#    (partial, whole, crossing, over copied chunks) make exactly 512
#    exceptions: metadata area 0 is full, area 1 (zeroed) is current.
#    Data, status, on-disk header, and the metadata areas on disk list
#    exactly the copied chunks, mapped to exactly the data chunks
#    2..next_free-1 (metadata chunks skipped), sampled data chunks holding
#    the snapshot's data.
# 2. All devices removed (the snapshot with its origin suspended, as LVM
#    does) and created again with the same tables: the same status line,
#    the same data; 100 more origin chunks (and a write to a recovered
#    chunk: no copy) are kept right in the snapshot: recovered exceptions
#    intact, new ones in area 1 after the full area 0 (checked on disk).
# 3. A table reload of the live snapshot (load, suspend, resume; same COW):
#    status and data unchanged, a further copy lands after the others.
# 4. Chunk size 0 in the table on the existing COW: the on-disk chunk size
#    (16) is used and shown, same status and data.
# 5. A P snapshot on a small COW (header + area + 4 data chunks) overflowed
#    by an origin write: Invalid, valid=0 on disk, reads and writes fail
#    with EIO, the origin keeps working; re-created it is Invalid again
#    (kernel log line).
# 6. A PO snapshot (chunk 0 on a fresh COW: the default 32): a snapshot
#    write that does not fit fails with EIO and the status is Overflow (any
#    further snapshot write fails too, reads give the right data); Overflow
#    is not on disk: re-created, the snapshot shows its figures and takes
#    writes to its chunks again; an origin write that does not fit makes it
#    Invalid (valid=0 on disk).
# The snapshot of 1-4 lives on through 5 and 6 and still reads its image.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDC"
defer snap_cleanup
snap_load

LEN=16384         # 8 MiB origin: 1024 chunks
CS=16             # chunk size of the main snapshot (8 KiB)
EPA=$((CS * 32))  # exceptions per metadata area (chunk bytes / 16)
COWLEN=16384      # the main snapshot's COW: 1024 chunks
pat=/tmp/p01.pat new=/tmp/p01.new new2=/tmp/p01.new2
oexp=/tmp/p01.oexp sexp=/tmp/p01.sexp
make_pattern $pat 8
make_pattern $new 8
make_pattern $new2 8
orig=$DEVDIR/orig snap=$DEVDIR/snap cow=$DEVDIR/cow

# p_status K CS TOTAL: status line of a valid persistent snapshot with K
# exceptions, chunk CS, a COW of TOTAL sectors.
p_status() {
	local k=$1 cs=$2 epa=$(($2 * 32))
	echo "0 $LEN snapshot $(((2 + k + k / epa) * cs))/$3 $(((2 + k / epa) * cs))"
}
# The main snapshot's exceptions: origin chunks it has (CS units).
declare -A MAIN
mark() { # mark SECTOR SECTORS
	local c
	for ((c = $1 / CS; c <= ($1 + $2 - 1) / CS; c++)); do MAIN[$c]=1; done
}
owrite() { # owrite SRC SECTOR SECTORS: to the origin (and its image)
	dwrite "$1" "$2" "$orig" "$2" "$3" || fail "origin write at $2+$3"
	fput "$1" "$2" $oexp "$2" "$3"
	mark "$2" "$3"
}
swrite() { # swrite SRC SECTOR SECTORS: to the main snapshot (and its image)
	dwrite "$1" "$2" "$snap" "$2" "$3" || fail "snapshot write at $2+$3"
	fput "$1" "$2" $sexp "$2" "$3"
	mark "$2" "$3"
}
main_status() { p_status ${#MAIN[@]} $CS $COWLEN; }

# ondisk_check: the main COW's metadata areas (read from the device) list
# exactly the chunks of MAIN, mapped one to one onto the data chunks
# 2..next_free-1 minus the metadata chunks; the first and last entry of
# each area point at chunks holding the snapshot's data.
ondisk_check() {
	local k=${#MAIN[@]} areas=$((${#MAIN[@]} / EPA + 1)) a nf
	nf=$((2 + k + k / EPA))
	for ((a = 0; a < areas; a++)); do dread "$cow" $(((1 + a * (EPA + 1)) * CS)) $CS; done |
		od -An -v -tu8 -w16 |
		awk -v epa=$EPA '(NR - 1) % epa == 0 { stop = 0 } stop { next } $2 == 0 { stop = 1; next }
			{ print $1, $2, int((NR - 1) / epa) }' >/tmp/p01.m.meta
	expect_eq "$(wc -l </tmp/p01.m.meta)" "$k" "on disk: $k exceptions in $areas areas"
	awk '{ print $1 }' /tmp/p01.m.meta | sort -n >/tmp/p01.m.old
	printf '%s\n' "${!MAIN[@]}" | sort -n >/tmp/p01.m.want
	cmp -s /tmp/p01.m.old /tmp/p01.m.want || fail "on disk: the old chunks are not the copied ones"
	log "ok: on disk: the old chunks are exactly the copied ones"
	awk '{ print $2 }' /tmp/p01.m.meta | sort -n >/tmp/p01.m.new
	seq 2 $((nf - 1)) | awk -v s=$((EPA + 1)) '$1 % s != 1' >/tmp/p01.m.want
	cmp -s /tmp/p01.m.new /tmp/p01.m.want || fail "on disk: the new chunks are not the data chunks 2..$((nf - 1))"
	log "ok: on disk: the new chunks are exactly the data chunks 2..$((nf - 1))"
	local o n _
	while read -r o n _; do
		cmp -s <(dread "$cow" $((n * CS)) $CS) <(sect $sexp $((o * CS)) $CS) ||
			fail "on disk: data chunk $n (old chunk $o) does not hold the snapshot's data"
	done < <(awk '!($3 in f) { f[$3] = $0 } { l[$3] = $0 } END { for (a in f) print f[a] "\n" l[a] }' /tmp/p01.m.meta)
	log "ok: on disk: sampled data chunks hold the snapshot's data"
}

# --- 1. A P snapshot, written ---
dm create cow --table "0 $COWLEN linear $VDB 0" || fail "create the COW device"
dd if=/dev/zero of="$cow" bs=8k count=2 oflag=direct status=none || fail "zero the COW header"
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "create the origin"
dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
cp $pat $oexp
cp $pat $sexp
STAB="0 $LEN snapshot $VDA $cow P $CS"
snap_take orig snap "$STAB"
TLINE="0 $LEN snapshot $(devno "$VDA") $(devno "$cow") P $CS"
expect_eq "$(dm table snap)" "$TLINE" "table line"
expect_eq "$(dm status snap)" "0 $LEN snapshot $((2 * CS))/$COWLEN $((2 * CS))" \
	"status of a new snapshot: header and area 0"
expect_eq "$(cow_header "$cow")" "$COW_MAGIC 1 1 $CS" "on-disk header: SnAp, valid, version 1, chunk $CS"

owrite $new $((3 * CS + 5)) 1           # partial chunk
owrite $new $((10 * CS)) $CS            # whole chunk
owrite $new $((20 * CS + 8)) $CS        # crosses chunks 20/21
owrite $new $((100 * CS)) $((505 * CS)) # chunks 100..604 in one write
swrite $new2 $((30 * CS + 2)) 3         # partial, a chunk the origin kept
swrite $new2 $((10 * CS)) $CS           # whole chunk already copied: no new exception
swrite $new2 $((40 * CS + 12)) 8        # crosses chunks 40/41
swrite $new2 $((3 * CS)) 2              # partial, in a copied chunk
owrite $new $((30 * CS)) $CS            # the snapshot has it: no copy
expect_eq "${#MAIN[@]}" $EPA "(the test counts $EPA exceptions)"
expect_eq "$(dm status snap)" "$(main_status)" "status: $EPA exceptions: area 0 full, area 1 in use"
expect_same "the snapshot reads its image" "$snap" $sexp
expect_same "the origin reads its image" "$orig" $oexp
ondisk_check
st1=$(dm status snap)

# --- 2. Everything removed and created again ---
snap_drop orig snap
dm remove orig || fail "remove the origin"
dm remove cow || fail "remove the COW device"
expect_eq "$(dev_count)" 0 "all devices removed"
dm create cow --table "0 $COWLEN linear $VDB 0" || fail "re-create the COW device"
dm create orig --table "0 $LEN snapshot-origin $VDA" || fail "re-create the origin"
snap_take orig snap "$STAB"
expect_eq "$(dm table snap)" "$TLINE" "re-created: table line"
expect_eq "$(dm status snap)" "$st1" "re-created: the same status line"
expect_same "re-created: the snapshot reads its image" "$snap" $sexp
expect_same "re-created: the origin reads its image" "$orig" $oexp
owrite $new2 $((650 * CS)) $((100 * CS)) # chunks 650..749, after the recovered ones in area 1
owrite $new2 $((3 * CS + 9)) 4           # a recovered exception: no copy
owrite $new2 $((800 * CS + 15)) 2        # crosses chunks 800/801
expect_eq "$(dm status snap)" "$(main_status)" "status: ${#MAIN[@]} exceptions"
expect_same "the snapshot keeps recovered and new exceptions" "$snap" $sexp
expect_same "the origin reads its image" "$orig" $oexp
ondisk_check
st2=$(dm status snap)

# --- 3. Table reload of the live snapshot ---
dm load snap --table "$STAB" || fail "load the same table"
dm suspend snap || fail "suspend the snapshot"
dm resume snap || fail "resume the snapshot"
expect_eq "$(dm table snap)" "$TLINE" "reloaded: table line"
expect_eq "$(dm status snap)" "$st2" "reloaded: the same status line"
expect_same "reloaded: the snapshot reads its image" "$snap" $sexp
owrite $new $((850 * CS)) $CS
expect_eq "$(dm status snap)" "$(main_status)" "reloaded: one more copy"
expect_same "reloaded: the snapshot reads its image after a copy" "$snap" $sexp
st3=$(dm status snap)

# --- 4. Chunk size 0: the one on disk ---
snap_drop orig snap
snap_take orig snap "0 $LEN snapshot $VDA $cow P 0"
expect_eq "$(dm table snap)" "$TLINE" "chunk size 0: the table line shows the on-disk $CS"
expect_eq "$(dm status snap)" "$st3" "chunk size 0: the same status line"
expect_same "chunk size 0: the snapshot reads its image" "$snap" $sexp
expect_same "the origin reads its image" "$orig" $oexp

# --- 5. A P snapshot overflowed by the origin ---
small=$DEVDIR/small cowp=$DEVDIR/cow-p pexp=/tmp/p01.pexp
dm create cow-p --table "0 $((6 * CS)) linear $VDC 0" || fail "create cow-p"
dd if=/dev/zero of="$cowp" bs=8k count=2 oflag=direct status=none || fail "zero cow-p"
PTAB="0 $LEN snapshot $VDA $cowp P $CS"
snap_take orig small "$PTAB"
cp $oexp $pexp
expect_eq "$(dm status small)" "0 $LEN snapshot $((2 * CS))/$((6 * CS)) $((2 * CS))" "small: fresh status"
owrite $new $((900 * CS + 3)) 1
owrite $new $((902 * CS)) $CS
owrite $new $((904 * CS + 8)) $CS
expect_eq "$(dm status small)" "0 $LEN snapshot $((6 * CS))/$((6 * CS)) $((2 * CS))" \
	"small: 4 exceptions fill it exactly"
expect_same "small: reads its image" "$small" $pexp
klog_mark
owrite $new $((910 * CS)) $CS
log "ok: the origin write that does not fit in small succeeded"
log "kernel log: $(klog_since_mark | tr '\n' ' ')"
expect_eq "$(dm status small)" "0 $LEN snapshot Invalid" "small: Invalid"
expect_eq "$(cow_header "$cowp")" "$COW_MAGIC 0 1 $CS" "small: marked invalid on disk (valid=0)"
expect_eio "small: read of a copied chunk" read1 "$small" $((902 * CS))
expect_eio "small: read of an uncopied chunk" read1 "$small" 0
expect_eio "small: write" dwrite $new2 0 "$small" 0 8
owrite $new $((911 * CS)) $CS
expect_same "the origin reads its image" "$orig" $oexp
snap_drop orig small
re="[Ii]nvalid"
snap_ref && re="Snapshot is marked invalid"
klog_mark
snap_take orig small "$PTAB"
expect_match "$(klog_since_mark)" "$re" "small re-created: logged"
expect_eq "$(dm status small)" "0 $LEN snapshot Invalid" "small re-created: Invalid"
expect_eio "small re-created: read" read1 "$small" $((902 * CS))
owrite $new2 $((910 * CS)) $((2 * CS))
expect_same "the origin reads its image" "$orig" $oexp
snap_drop orig small

# --- 6. PO ---
CS2=32 # the default chunk size of a fresh COW
po=$DEVDIR/po cowpo=$DEVDIR/cow-po poexp=/tmp/p01.poexp
dm create cow-po --table "0 $((5 * CS2)) linear $VDC 1024" || fail "create cow-po"
dd if=/dev/zero of="$cowpo" bs=16k count=2 oflag=direct status=none || fail "zero cow-po"
POTAB="0 $LEN snapshot $VDA $cowpo PO 0"
snap_take orig po "$POTAB"
cp $oexp $poexp
expect_eq "$(dm table po)" "0 $LEN snapshot $(devno "$VDA") $(devno "$cowpo") PO $CS2" \
	"PO, chunk 0 on a fresh COW: the default chunk size $CS2"
expect_eq "$(dm status po)" "0 $LEN snapshot $((2 * CS2))/$((5 * CS2)) $((2 * CS2))" "PO: fresh status"
expect_eq "$(cow_header "$cowpo")" "$COW_MAGIC 1 1 $CS2" "PO: on-disk header, chunk $CS2"
pwrite() { # pwrite SRC SECTOR SECTORS
	dwrite "$1" "$2" "$po" "$2" "$3" || fail "PO: snapshot write at $2+$3"
	fput "$1" "$2" $poexp "$2" "$3"
}
pwrite $new2 $((470 * CS2 + 3)) 2   # partial chunk 470
pwrite $new2 $((475 * CS2 + 16)) 32 # crosses 475/476
FULL="0 $LEN snapshot $((5 * CS2))/$((5 * CS2)) $((2 * CS2))"
expect_eq "$(dm status po)" "$FULL" "PO: 3 exceptions fill it exactly"
expect_eio "PO: a snapshot write that does not fit" dwrite $new2 $((480 * CS2)) "$po" $((480 * CS2)) 8
expect_eq "$(dm status po)" "0 $LEN snapshot Overflow" "PO: Overflow"
expect_eq "$(cow_header "$cowpo")" "$COW_MAGIC 1 1 $CS2" "PO: still valid on disk"
expect_same "PO: overflowed, reads its image" "$po" $poexp
expect_eio "PO: overflowed, a write to a chunk it has" dwrite $new2 $((470 * CS2)) "$po" $((470 * CS2)) 8
owrite $new $((470 * CS2)) $CS2 # PO has the chunk: no copy needed
expect_eq "$(dm status po)" "0 $LEN snapshot Overflow" "PO: an origin write to a chunk it has: still Overflow"
expect_same "PO: reads its image" "$po" $poexp
# Overflow is not recorded on disk.
snap_drop orig po
snap_take orig po "$POTAB"
expect_eq "$(dm status po)" "$FULL" "PO re-created: its figures again (Overflow is not on disk)"
expect_same "PO re-created: reads its image" "$po" $poexp
pwrite $new $((475 * CS2)) 8 # a chunk it has
expect_same "PO re-created: takes a write to a chunk it has" "$po" $poexp
expect_eio "PO re-created: a snapshot write that does not fit" dwrite $new2 $((482 * CS2)) "$po" $((482 * CS2)) 8
expect_eq "$(dm status po)" "0 $LEN snapshot Overflow" "PO re-created: Overflow again"
owrite $new $((490 * CS2)) $CS2 # PO would need a chunk: invalidated
expect_eq "$(dm status po)" "0 $LEN snapshot Invalid" "PO: an origin write that does not fit: Invalid"
expect_eq "$(cow_header "$cowpo")" "$COW_MAGIC 0 1 $CS2" "PO: marked invalid on disk"
expect_eio "PO: invalid, read" read1 "$po" 0
expect_same "the origin reads its image" "$orig" $oexp
snap_drop orig po

# The main snapshot went through all of it.
expect_eq "$(dm status snap)" "$(main_status)" "main snapshot: ${#MAIN[@]} exceptions"
expect_same "main snapshot: reads its image" "$snap" $sexp
ondisk_check
snap_drop orig snap
dm remove_all || fail "remove_all"
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
