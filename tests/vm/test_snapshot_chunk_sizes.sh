#!/usr/bin/env bash
# Chunk sizes 8, 16, 128 and 1024 sectors (4 KiB to 512 KiB): for each, a
# fresh snapshot of an origin whose table has two targets (snapshot-origin
# over vda, then linear over vdd), and writes to the origin and to the
# snapshot of one sector, of 4 KiB at an offset inside a chunk, of a whole
# chunk, straddling two chunks, and straddling the origin's target
# boundary. After each, the chunks around it on both devices equal their
# expected images (the snapshot: the old origin plus its own writes), and
# the allocation is the number of distinct chunks copied or written. A
# whole-chunk snapshot write, and an origin write to a chunk the snapshot
# already holds, read nothing from the origin disk.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB" "$VDD"
defer snap_cleanup
snap_load

SLEN=16384         # the snapshot-origin target (and the snapshot): 8 MiB
OLEN=$((SLEN + 2048)) # then 1 MiB of linear over vdd
pat=/tmp/snap02.pat new=/tmp/snap02.new new2=/tmp/snap02.new2
exp_o=/tmp/snap02.exp_o exp_s=/tmp/snap02.exp_s
make_pattern $pat 9
make_pattern $new 9
make_pattern $new2 9
orig=$DEVDIR/orig snap=$DEVDIR/snap

declare -A alloc # chunks the snapshot has its own copy of
mark() { # mark SECTOR SECTORS: the chunks of the range inside the snapshot
	local c
	for ((c = $1 / CS; c <= ($1 + $2 - 1) / CS && c < SLEN / CS; c++)); do alloc[$c]=1; done
}
# check WHAT SECTOR SECTORS: both devices equal their images over the
# chunks the range touches and one chunk either side; the allocation.
check() {
	local a=$((($2 / CS - 1) * CS)) b=$((($2 + $3 - 1) / CS * CS + 2 * CS))
	[ $a -ge 0 ] || a=0
	expect_same "$1: origin" "$orig" $exp_o $(((b < OLEN ? b : OLEN) - a)) $a $a
	[ $a -lt $SLEN ] && expect_same "$1: snapshot" "$snap" $exp_s $(((b < SLEN ? b : SLEN) - a)) $a $a
	expect_eq "$(snap_alloc snap)" $((${#alloc[@]} * CS)) "$1: $((${#alloc[@]})) chunks allocated"
}
# owrite/swrite WHAT SECTOR SECTORS [noread]: new data to the origin, or
# other new data to the snapshot; with "noread", the write must read
# nothing from the origin disk (nothing else reads it meanwhile).
owrite() { xwrite origin "$orig" $new $exp_o "$@"; }
swrite() { xwrite snapshot "$snap" $new2 $exp_s "$@"; }
xwrite() { # xwrite KIND DEV SRC IMAGE WHAT SECTOR SECTORS [noread]
	local before
	before=$(sectors_read "$VDA")
	dwrite "$3" "$6" "$2" "$6" "$7" || fail "$1, $5: write failed"
	[ -z "${8:-}" ] || expect_eq "$(($(sectors_read "$VDA") - before))" 0 \
		"$1, $5 (cs $CS): nothing read from the origin disk"
	fput "$3" "$6" "$4" "$6" "$7"
	mark "$6" "$7" # an origin write copies, a snapshot write allocates
	check "$1, $5 (cs $CS)" "$6" "$7"
}

for CS in 8 16 128 1024; do
	log "--- chunk size $CS sectors"
	alloc=()
	dm create orig --table "0 $SLEN snapshot-origin $VDA
$SLEN 2048 linear $VDD 0" || fail "create the origin"
	dd if=$pat of="$orig" bs=1M oflag=direct status=none || fail "stamp the pattern"
	cp $pat $exp_o
	head -c $((SLEN * 512)) $pat >$exp_s
	snap_take orig snap "0 $SLEN snapshot $VDA $VDB N $CS"
	expect_match "$(dm table snap)" "^0 $SLEN snapshot [0-9]+:[0-9]+ [0-9]+:[0-9]+ N $CS$" "table line (cs $CS)"
	expect_eq "$(snap_alloc snap)" 0 "nothing allocated (cs $CS)"

	owrite "one sector inside a chunk" $((CS + CS / 2)) 1
	owrite "4 KiB one sector into a chunk" $((2 * CS + 1)) 8
	owrite "a whole chunk" $((4 * CS)) $CS
	owrite "a chunk's worth straddling two chunks" $((6 * CS + CS / 2)) $CS
	owrite "straddling the target boundary" $((SLEN - CS / 2)) $((CS / 2 + 8))
	owrite "one sector of a copied chunk" $((4 * CS + CS - 1)) 1
	swrite "one sector of an uncopied chunk" $((8 * CS + 3)) 1
	swrite "one sector of a chunk the origin copied" $CS 1
	# A whole-chunk write needs no copy, if it reaches the target whole.
	max_kb=$(cat "/sys/dev/block/$(devno "$snap")/queue/max_sectors_kb")
	if [ $((CS / 2)) -le "$max_kb" ]; then
		swrite "a whole uncopied chunk" $((10 * CS)) $CS noread
	else
		log "a $((CS / 2)) KiB chunk is above max_sectors_kb ($max_kb): no check for origin reads"
		swrite "a whole uncopied chunk" $((10 * CS)) $CS
	fi
	swrite "straddling two uncopied chunks" $((12 * CS + CS / 2)) $CS
	swrite "4 KiB at the end of the snapshot" $((SLEN - 8)) 8
	owrite "a whole chunk the snapshot wrote (no copy)" $((10 * CS)) $CS noread
	owrite "straddling a chunk the snapshot has and a new one" $((13 * CS + CS / 2)) $CS

	expect_same "the whole origin (cs $CS)" "$orig" $exp_o
	expect_same "the whole snapshot (cs $CS)" "$snap" $exp_s
	snap_drop orig snap
	dm remove orig || fail "remove the origin"
done
expect_eq "$(dev_count)" 0 "all devices gone"
exit "$KSFT_PASS"
