#!/usr/bin/env bash
# A multi-target table over two scratch disks: data written through the
# mapped device lands byte-exact at the right offsets of the underlying
# disks, also for I/O that straddles target boundaries; the zero target
# reads zeroes; fio with verify passes over the whole device.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
defer rdm_cleanup
rdm_load

# 0..2047 -> vda 0; 2048..3071 zero; 3072..8191 -> vdb 4096; 8192..16383 -> vda 100000
table="0 2048 linear $VDA 0
2048 1024 zero
3072 5120 linear $VDB 4096
8192 8192 linear 254:0 100000"
rdmsetup create multi --table "$table" || fail "create"
dev=/dev/rdm/multi
[ -L $dev ] || fail "$dev was not created"
expect_eq "$(blockdev --getsz $dev)" 16384 "device size is the table's length"
expect_eq "$(rdmsetup table multi)" "0 2048 linear 254:0 0
2048 1024 zero 
3072 5120 linear 254:16 4096
8192 8192 linear 254:0 100000" "table lines as dm prints them"

pat=/tmp/pattern
make_pattern $pat 8
# One 8 MiB write crossing all three boundaries, in 1 MiB direct I/Os
# (each straddles at most one boundary: split in the driver).
dd if=$pat of=$dev bs=1M oflag=direct status=none || fail "write through the device"
cmp <(sect "$VDA" 0 2048) <(sect $pat 0 2048) || fail "target 0 data on vda"
cmp <(sect "$VDB" 4096 5120) <(sect $pat 3072 5120) || fail "target 2 data on vdb"
cmp <(sect "$VDA" 100000 8192) <(sect $pat 8192 8192) || fail "target 3 data on vda"
log "ok: every target's data is at its offset on the underlying disk"
cmp <(sect $dev 2048 1024) <(head -c $((1024 * 512)) /dev/zero) || fail "zero target"
log "ok: the zero target reads zeroes"
# Unaligned-to-target sizes: 3 x 1.5 MiB reads straddling boundaries.
cmp <(dd if=$dev bs=1536K count=3 iflag=direct status=none) \
	<(sect $pat 0 2048; head -c $((1024 * 512)) /dev/zero; sect $pat 3072 6144) ||
	fail "reads that straddle boundaries"
log "ok: reads straddling target boundaries"

fio --name=verify --filename=$dev --direct=1 --rw=randwrite --bsrange=4k-256k \
	--size=8M --verify=crc32c --do_verify=1 --offset=4M --iodepth=8 \
	--ioengine=libaio --randrepeat=0 --minimal >/tmp/fio.out 2>&1 ||
	{ cat /tmp/fio.out; fail "fio verify over the table"; }
log "ok: fio randwrite 4k-256k with crc32c verify"
rdmsetup remove multi || fail "remove"
[ ! -e $dev ] || fail "$dev left behind"
exit "$KSFT_PASS"
