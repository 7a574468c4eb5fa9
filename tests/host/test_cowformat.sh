#!/usr/bin/env bash
# The Python oracle of the COW format (tests/lib/cowformat.py, which the VM
# and power-cut tests use) against the driver's own (src/core/persistent.rs,
# through tests/ioctl-probe's rdm-cowcheck): images the driver's appender
# writes read the same in Python, images Python writes read the same in the
# driver's loader (exceptions in order, where the list ends, next_free),
# and both refuse the same broken images.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-cowformat.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
if ! cargo build --release --quiet --manifest-path "$top/Cargo.toml" -p rdm-ioctl-probe \
	--bin rdm-cowcheck >"$tmp/build.log" 2>&1; then
	echo "not ok - cowformat: rdm-cowcheck builds"
	sed 's/^/#   /' "$tmp/build.log"
	exit 1
fi
rust=$top/target/release/rdm-cowcheck
py() { python3 "$top/tests/lib/cowformat.py" "$@"; }
result() { # result WHAT OK
	if [ "$2" = 0 ]; then echo "ok - cowformat: $1"; else
		echo "not ok - cowformat: $1"; rc=1; fi
}
# same WHAT FILE: both read FILE alike (or both refuse it).
same() {
	local r p rr pr
	r=$("$rust" read "$2" 2>/dev/null)
	rr=$?
	p=$(py read "$2" 2>/dev/null)
	pr=$?
	if [ "$rr" = "$pr" ] && [ "$r" = "$p" ]; then
		result "$1" 0
	else
		result "$1: rust (exit $rr) '$(head -n 1 <<<"$r")', python (exit $pr) '$(head -n 1 <<<"$p")'" 1
		diff <(echo "$r") <(echo "$p") | head -n 5 | sed 's/^/#   /'
	fi
}

# 1. The driver writes (its allocation order), Python reads.
for spec in "1 64 0" "1 128 1" "1 128 31" "1 128 32" "1 256 33" "1 512 100" "8 8192 700" "16 4096 3"; do
	read -r c s n <<<"$spec"
	if ! "$rust" write "$tmp/r.img" "$c" "$s" "$n" >"$tmp/r.out" 2>"$tmp/r.err"; then
		result "the driver writes $n exceptions of $c-sector chunks: $(cat "$tmp/r.err")" 1
		continue
	fi
	p=$(py read "$tmp/r.img" 2>&1)
	[ "$p" = "$(cat "$tmp/r.out")" ]
	result "$n exceptions, $c-sector chunks, written by the driver: Python reads what it wrote" $?
	same "$n exceptions, $c-sector chunks, written by the driver: both loaders agree" "$tmp/r.img"
done

# 2. Python writes (its own allocation order: cowformat.new_chunk), both read.
pairs() { # pairs CHUNK COUNT: exception i of origin chunk 3i+1, in Python's order
	python3 - "$top/tests/lib" "$1" "$2" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import cowformat as cf
c, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    print(3 * i + 1, cf.new_chunk(i, c))
PY
}
for spec in "1 0" "1 1" "1 32" "1 33" "1 64" "1 65" "4 300"; do
	read -r c n <<<"$spec"
	pairs "$c" "$n" | py write "$tmp/p.img" --chunk "$c" || result "Python writes $n exceptions" 1
	same "$n exceptions, $c-sector chunks, written by Python" "$tmp/p.img"
done
# A list that fills the last area the device has room for: it ends there.
pairs 1 32 | py write "$tmp/p.img" --chunk 1 --sectors 34 || result "Python writes a full area" 1
same "a full last area at the end of the device" "$tmp/p.img"
pairs 1 5 | py write "$tmp/p.img" --chunk 1 --invalid
same "an invalidated snapshot" "$tmp/p.img"
: | py write "$tmp/p.img" --chunk 8 && dd if=/dev/zero of="$tmp/p.img" bs=16 count=1 conv=notrunc status=none
same "a new COW device (magic 0)" "$tmp/p.img"

# The VM tests' COW_MAGIC and cow_header (tests/vm/test_common.sh) read
# the header as the oracle does.
printf '1 2\n' | py write "$tmp/p.img" --chunk 16
got=$(bash -c '. "$1"; dread() { head -c 512 "$1"; }; echo "$COW_MAGIC $(cow_header "$2")"' _ \
	"$top/tests/vm/test_common.sh" "$tmp/p.img")
magic=$(PYTHONPATH=$top/tests/lib python3 -c 'import cowformat; print(cowformat.SNAP_MAGIC)')
[ "$got" = "$magic $magic 1 1 16" ]
result "test_common.sh's COW_MAGIC and cow_header read a header as the oracle does ($got)" $?

# 3. Broken images: both refuse them.
refused() { # refused WHAT: $tmp/p.img
	local r=0 p=0
	"$rust" read "$tmp/p.img" >/dev/null 2>&1 && r=1
	py read "$tmp/p.img" >/dev/null 2>&1 && p=1
	result "$1: refused by both (accepted by rust: $r, by python: $p)" $((r + p))
}
printf '1 2\n1 3\n' | py write "$tmp/p.img" --chunk 1
refused "an old chunk with two exceptions"
printf '1 2\n2 34\n' | py write "$tmp/p.img" --chunk 1 --sectors 40
refused "a data chunk on metadata area 1"
printf '1 2\n2 90\n' | py write "$tmp/p.img" --chunk 1 --sectors 91
dd if=/dev/zero of="$tmp/p.img" bs=512 count=1 seek=90 status=none 2>/dev/null
truncate -s $((60 * 512)) "$tmp/p.img"
refused "a data chunk past the end"
printf '1 2\n' | py write "$tmp/p.img" --chunk 1
printf 'XXXX' | dd of="$tmp/p.img" conv=notrunc status=none
refused "a bad magic"
printf '1 2\n' | py write "$tmp/p.img" --chunk 1
printf '\002' | dd of="$tmp/p.img" bs=1 seek=8 conv=notrunc status=none
refused "an unknown version"
exit $rc
