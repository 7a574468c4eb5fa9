#!/usr/bin/env bash
# Persistent snapshots are interchangeable with the kernel's dm-snapshot:
# same on-disk format, same status. In one test, rdm (rdmsetup, /dev/rdm)
# and dm-snapshot (Debian's dmsetup, /dev/mapper) take turns on the same
# two disks (origin $VDA, COW $VDB; only one stack has them open at a
# time): the first stack makes a fresh P (or PO) snapshot, writes to the
# origin and to the snapshot, and removes its devices; the second loads the
# same tables and must read exactly the expected snapshot and origin images
# with the same status line ("allocated/total metadata"), then appends
# exceptions of its own (also into chunks the first one copied), and so
# on for 4 hops (A B A B), the last with chunk size 0 in the table (the
# size comes from the header). Each round checks: status lines computed
# from the number of distinct chunks written (header + metadata areas +
# data chunks, dm's allocation rule), the first write filling metadata
# area 0 exactly (the next area must be zeroed and used), later ones
# crossing into area 2; and, with both stacks' devices removed, the COW
# disk parsed independently (mkcow.py check): header magic/valid/version/
# chunk size, the set of exceptions = the chunks written, every data chunk
# = the expected snapshot's chunk. Rounds: chunk 8 (256 entries per area)
# with rdm first (rdm makes the fresh COW, dm reads it, ...) and chunk 128
# (a PO snapshot) with dm first.
# RDM_SNAP_REF=1: dm-snapshot on both sides (validates the test itself).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
PY=$(command -v /usr/bin/python3 || command -v python3) || skip "python3 is not available"
MKCOW="$PY $RDM_TOP/tests/vm/mkcow.py"
export DM_DISABLE_UDEV=1
cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	rdm_cleanup
	modprobe -r -d "$RDM_MODROOT" dm-snapshot dm-bufio dm-mod >/dev/null 2>&1
}
defer cleanup
modprobe -d "$RDM_MODROOT" dm-snapshot || skip "the kernel's dm-snapshot is not available"
if snap_ref; then
	A=dm B=dm
	log "reference run: dm-snapshot on both sides"
else
	A=rdm B=dm
	rdm_load
fi

# tool STACK ARGS...: the control tool of a stack; ddir STACK: its devices.
tool() {
	local st=$1
	shift
	if [ "$st" = rdm ]; then rdmsetup "$@"; else dmsetup --noudevsync "$@"; fi
}
ddir() { if [ "$1" = rdm ]; then echo /dev/rdm; else echo /dev/mapper; fi; }

files=(/tmp/persist02.p0 /tmp/persist02.p1 /tmp/persist02.p2 /tmp/persist02.p3)
for f in "${files[@]}"; do make_pattern "$f" 8; done
exp_o=/tmp/persist02.exp_o exp_s=/tmp/persist02.exp_s
TOTAL=$(disk_sectors "$VDB")
DEVNOS="$(devno "$VDA") $(devno "$VDB")"

# Per round: CS LEN STORE, the pattern, the expected images, the touched chunks.
declare -A touched
ntouched() { echo "${#touched[@]}"; }
# pstatus N: the status line dm gives for N exceptions (dm-snap-persistent:
# next_free starts at 2 after the header and area 0 and skips a metadata
# area each EPA data chunks; metadata = (current area + 2) chunks, where
# the current area is N / EPA: a full area moves on to the next).
pstatus() {
	local n=$1 epa=$((CS * 512 / 16))
	echo "0 $LEN snapshot $(palloc "$n")/$TOTAL $(((2 + n / epa) * CS))"
}
palloc() { echo $(((2 + $1 + $1 / (CS * 512 / 16)) * CS)); }

# load STACK CHUNK-ARG: origin and snapshot (taken as LVM does).
load() {
	local st=$1 d
	d=$(ddir "$st")
	tool "$st" create porig --table "0 $LEN snapshot-origin $VDA" || fail "$st: create the origin"
	tool "$st" suspend porig || fail "$st: suspend the origin"
	if ! tool "$st" create psnap --table "0 $LEN snapshot $VDA $VDB $STORE $2"; then
		tool "$st" resume porig
		fail "$st: create the $STORE snapshot (chunk argument $2) on the COW the other stack wrote"
	fi
	tool "$st" resume porig || fail "$st: resume the origin"
	[ -b "$d/psnap" ] || fail "$st: no $d/psnap"
}
unload() {
	local st=$1
	tool "$st" remove psnap || fail "$st: remove the snapshot"
	tool "$st" remove porig || fail "$st: remove the origin"
}
# apply STACK SRC OP...: each OP "o|s SECTOR SECTORS" is one O_DIRECT
# write of SRC's sectors to the origin (o) or the snapshot (s), also applied
# to the expected image; the chunks it touches get an exception.
apply() {
	local st=$1 src=$2 op t s n dev img c d
	d=$(ddir "$st")
	shift 2
	for op; do
		read -r t s n <<<"$op"
		case $t in
		o) dev=$d/porig img=$exp_o ;;
		s) dev=$d/psnap img=$exp_s ;;
		esac
		dwrite "$src" "$s" "$dev" "$s" "$n" || fail "$st: write to $dev at $s+$n"
		fput "$src" "$s" "$img" "$s" "$n"
		for ((c = s / CS; c <= (s + n - 1) / CS; c++)); do touched[$c]=1; done
	done
}
# check_images STACK WHAT: the snapshot and the origin read the expected images.
check_images() {
	local d
	d=$(ddir "$1")
	expect_same "$2: $1's snapshot reads the expected snapshot image" "$d/psnap" $exp_s "$LEN"
	expect_same "$2: $1's origin reads the expected origin image" "$d/porig" $exp_o "$LEN"
}
# check_disk WHAT: with no device open, the COW disk as the format says.
check_disk() {
	local out
	expect_eq "$(cow_header "$VDB")" "$COW_MAGIC 1 1 $CS" "$1: header magic, valid, version 1, chunk size $CS"
	printf '%s\n' "${!touched[@]}" >/tmp/persist02.olds
	out=$($MKCOW check "$VDB" --image $exp_s --olds /tmp/persist02.olds) || fail "$1: mkcow check: $out"
	expect_match "$out" "exceptions=$(ntouched) .*allocated=$(palloc "$(ntouched)") .*image=ok olds=ok" \
		"$1: on disk: exceptions for exactly the $(ntouched) chunks written, each data chunk holds the snapshot's chunk ($out)"
}

# hop N STACK CHUNK-ARG SRC OPS...: loads the devices on STACK over what
# the other stack left (hop 1: a fresh COW), checks them, writes, checks
# the status, removes them, checks the disk.
LAST_STATUS=
hop() {
	local n=$1 st=$2 carg=$3 src=$4 what
	shift 4
	what="round $ROUND hop $n ($st, chunk $CS$([ "$carg" = 0 ] && echo ", table chunk 0"))"
	load "$st" "$carg"
	expect_eq "$(tool "$st" table psnap)" "0 $LEN snapshot $DEVNOS $STORE $CS" \
		"$what: table line"
	if [ "$n" = 1 ]; then
		expect_eq "$(tool "$st" status psnap)" "$(pstatus 0)" "$what: status of a fresh persistent snapshot"
	else
		expect_eq "$(tool "$st" status psnap)" "$LAST_STATUS" "$what: the status line the other stack left"
	fi
	check_images "$st" "$what"
	[ $# -gt 0 ] || { unload "$st"; return; }
	apply "$st" "$src" "$@"
	LAST_STATUS=$(tool "$st" status psnap)
	expect_eq "$LAST_STATUS" "$(pstatus "$(ntouched)")" "$what: status after writes to $(ntouched) distinct chunks"
	check_images "$st" "$what, after its writes"
	unload "$st"
	check_disk "$what, devices removed"
}

# round S1 S2 CS LEN STORE: 4 hops S1 S2 S1 S2 on a fresh COW.
ROUND=0
round() {
	local s1=$1 s2=$2 c
	CS=$3 LEN=$4 STORE=$5
	ROUND=$((ROUND + 1))
	local pat=${files[ROUND % 4]} n1=${files[(ROUND + 1) % 4]} n2=${files[(ROUND + 2) % 4]} \
		n3=${files[(ROUND + 3) % 4]}
	log "round $ROUND: $s1 then $s2, $STORE snapshot, chunk $CS, origin $LEN sectors"
	touched=()
	dd if="$pat" of="$VDA" bs=1M count=$((LEN / 2048)) oflag=direct status=none || fail "stamp the origin"
	dd if=/dev/zero of="$VDB" bs=1M count=1 oflag=direct status=none || fail "zero the COW's header"
	head -c $((LEN * 512)) "$pat" >$exp_o
	cp $exp_o $exp_s
	c=$CS
	if [ "$CS" = 8 ]; then # 2048 chunks, 256 exceptions per area
		# 1 MiB of origin: 256 chunks fill area 0 exactly; a snapshot
		# write into chunks the origin write copied (no new exception).
		hop 1 "$s1" "$CS" "$n1" "o 0 $((256 * c))" "s $((10 * c + 3)) $((2 * c))"
		# 201 + 10 new chunks into area 1; writes to chunks that have
		# exceptions: the other stack's (5), this hop's (700).
		hop 2 "$s2" "$CS" "$n2" "o $((600 * c + 5)) $((200 * c))" "s $((1500 * c)) $((10 * c))" \
			"s $((5 * c)) 1" "o $((700 * c)) $c"
		# 100 + 8 more: crosses into area 2; the last chunks of the origin.
		hop 3 "$s1" "$CS" "$n3" "o $((1800 * c)) $((100 * c))" "s $((650 * c + 1)) 3" \
			"o $((3 * c)) 1" "s $((2040 * c)) $((8 * c))"
	else # 64 KiB chunks: 128 chunks, 4096 exceptions per area
		hop 1 "$s1" "$CS" "$n1" "o 0 $((32 * c))" "s $((10 * c + 3)) $((2 * c))"
		hop 2 "$s2" "$CS" "$n2" "o $((50 * c + 5)) $((20 * c))" "s $((100 * c)) $((10 * c))" \
			"s $((5 * c)) 1" "o $((60 * c)) $c"
		hop 3 "$s1" "$CS" "$n3" "o $((80 * c)) $((15 * c))" "s $((55 * c + 1)) 3" \
			"o $((3 * c)) 1" "s $((126 * c)) $((2 * c))"
	fi
	hop 4 "$s2" 0 ""
	for st in $A $B; do
		case $(tool "$st" ls) in "No devices found" | "") ;; *) fail "round $ROUND: $st has devices left: $(tool "$st" ls)" ;; esac
	done
	log "ok: round $ROUND: no devices left"
}

t0=$SECONDS
round "$A" "$B" 8 16384 P
log "round 1 took $((SECONDS - t0)) s"
round "$B" "$A" 128 16384 PO
log "round 2 took $((SECONDS - t0)) s"
exit "$KSFT_PASS"
