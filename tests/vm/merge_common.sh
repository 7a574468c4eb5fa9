# Helpers of the snapshot-merge tests (test_merge_*.sh), on top of
# test_common.sh. Each runs against the kernel's dm-snapshot (dmsetup) and
# rdm (rdmsetup) alike: `dm`, $DEVDIR and $IMPL say which.
# shellcheck shell=bash

mergeio() { python3 "$RDM_TOP/tests/vm/mergeio.py" "$@"; }

# merge_start ORIGIN SNAP TABLE: starts merging snapshot device SNAP into
# origin device ORIGIN as LVM2 does: both suspended, the origin's table
# replaced by the snapshot-merge TABLE, the origin resumed (the snapshot
# hands its exceptions over; dm requires it suspended for that), then the
# snapshot device removed.
merge_start() {
	dm suspend "$1" || fail "suspend $1"
	dm suspend "$2" || fail "suspend $2"
	dm load "$1" --table "$3" || fail "load $1: $3"
	dm resume "$1" || fail "resume $1 with $3"
	dm remove "$2" || fail "remove $2"
}

# merge_status DEV: the status info of DEV's (one) target: what follows
# "<start> <length> <type>".
merge_status() {
	local st info
	st=$(dm status "$1") || return 1
	read -r _ _ _ info <<<"$st"
	echo "$info"
}

# merge_left DEV: sectors of data still to merge (allocated - metadata) of
# a snapshot-merge or snapshot target, or the status word ("Merge failed",
# "Invalid") if there are no figures.
merge_left() {
	local st a m
	st=$(merge_status "$1") || return 1
	case $st in
	*/*" "*) a=${st%%/*} m=${st##* }; echo $((a - m)) ;;
	*) echo "$st" ;;
	esac
}

# merge_wait DEV [SECONDS]: waits until the merge is complete (the status's
# allocated sectors equal its metadata sectors, dm's definition), checking
# that the data left never grows. Fails on a status without figures or
# after SECONDS (default 180).
merge_wait() {
	local dev=$1 secs=${2:-180} left prev='' i t0=$SECONDS
	for ((i = 0; i < secs * 10; i++)); do
		left=$(merge_left "$dev") || fail "status of $dev"
		case $left in
		'' | *[!0-9]*) fail "merge of $dev: status '$(merge_status "$dev")'" ;;
		esac
		if [ -n "$prev" ] && [ "$left" -gt "$prev" ]; then
			fail "merge of $dev: the data left grew from $prev to $left sectors"
		fi
		prev=$left
		if [ "$left" -eq 0 ]; then
			log "merge of $dev complete after about $((SECONDS - t0)) s"
			return 0
		fi
		sleep 0.1
	done
	fail "merge of $dev not complete after $secs s (status '$(merge_status "$dev")')"
}

# cow_entries DEV CHUNK: the exceptions listed in the persistent store on
# DEV (chunk size CHUNK sectors), read straight from the device (O_DIRECT:
# while a device above holds DEV open, its page cache is not dropped on
# close and would show an old list).
cow_entries() {
	python3 - "$1" "$2" <<'EOF'
import mmap, os, struct, sys
dev, chunk = sys.argv[1], int(sys.argv[2])
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
size = os.lseek(fd, 0, os.SEEK_END)
cb = chunk * 512
epa = cb // 16
buf = mmap.mmap(-1, max(cb, 4096))
n, area = 0, 0
while True:
    loc = (1 + area * (epa + 1)) * cb
    if loc + cb > size:
        break
    if os.preadv(fd, [memoryview(buf)[:cb]], loc) != cb:
        sys.exit("cow_entries: short read at %d" % loc)
    a = bytes(buf[:cb])
    k = 0
    while k < epa and struct.unpack_from("<QQ", a, k * 16)[1] != 0:
        k += 1
    n += k
    if k < epa:
        break
    area += 1
print(n)
EOF
}
