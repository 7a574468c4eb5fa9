#!/usr/bin/env bash
# LVM2 end to end, with LVM2's default lvm.conf, on the kernel's dm first
# and then on rdm (dm_compat=1): pvcreate, vgcreate, a linear LV and a
# striped one (lvcreate -i 2: LVM2 refuses any LV without dm's striped
# target) with data checked, lvcreate -s, origin writes the snapshot
# does not see, lvextend of the snapshot (its COW device grows) followed
# by more origin writes than the old COW size holds (the snapshot stays
# valid), lvremove, vgchange -an (no device left) and -ay (the data is
# there), vgremove, pvremove. In a `vm-run --udev` guest LVM2 runs with
# udev synchronisation: its links are udev's and no cookie is left.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
out=/tmp/l01
rm -rf $out && mkdir -p $out
make_pattern $out/old 32
make_pattern $out/new 32
VG=rdmvg

# lvm_ok WHAT COMMAND...: runs an LVM2 command, which must succeed.
lvm_ok() {
	local what=$1 o
	shift
	o=$("$@" 2>&1) || fail "$IMPL: $what: $* failed: $o"
	log "ok: $IMPL: $what"
}
table_type() { local t; t=$(dmsetup table "$1") || return 1; read -r _ _ t _ <<<"$t"; echo "$t"; }
snap_state() { local st; st=$(dmsetup status "$VG-snap") || return 1; read -r _ _ _ st _ <<<"$st"; echo "$st"; }

scenario() {
	local st
	lvm_ok "pvcreate" pvcreate -y "$VDA" "$VDB"
	lvm_ok "vgcreate" vgcreate -y "$VG" "$VDA" "$VDB"
	lvm_ok "a linear LV" lvcreate -y -L 64M -n lv "$VG"
	expect_eq "$(table_type "$VG"-lv)" linear "$IMPL: the LV is linear"
	dd if="$out"/old of=/dev/"$VG"/lv bs=1M oflag=direct status=none || fail "$IMPL: write lv"
	expect_same "$IMPL: lv reads back" /dev/"$VG"/lv "$out"/old

	lvm_ok "a striped LV" lvcreate -y -i 2 -I 64k -L 16M -n st "$VG"
	expect_match "$(dmsetup table "$VG"-st)" "^0 32768 striped 2 128 " "$IMPL: the LV is striped over 2 PVs"
	dd if="$out"/new of=/dev/"$VG"/st bs=1M count=16 oflag=direct status=none || fail "$IMPL: write st"
	expect_same "$IMPL: st reads back" /dev/"$VG"/st "$out"/new 32768

	# A snapshot with an 8 MiB COW device, then 4 MiB of origin writes.
	lvm_ok "lvcreate -s" lvcreate -y -s -L 8M -n snap "$VG"/lv
	expect_eq "$(table_type "$VG"-lv)" snapshot-origin "$IMPL: lv is a snapshot origin"
	expect_eq "$(table_type "$VG"-snap)" snapshot "$IMPL: snap is a snapshot"
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M count=4 oflag=direct status=none || fail "$IMPL: write the origin"
	expect_same "$IMPL: the snapshot keeps the old data" /dev/"$VG"/snap "$out"/old
	# lvextend of the snapshot: its COW device grows to 24 MiB; then 16
	# MiB more of origin writes (20 MiB copied in all: more than the old
	# 8 MiB held).
	lvm_ok "lvextend of the snapshot" lvextend -y -L +16M "$VG"/snap
	st=$(dmsetup status "$VG"-snap)
	expect_match "$st" "^0 [0-9]+ snapshot [0-9]+/49152 [0-9]+$" "$IMPL: the status total is the grown COW device"
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M seek=4 skip=4 count=16 oflag=direct status=none ||
		fail "$IMPL: more origin writes"
	st=$(snap_state)
	case $st in Invalid | Overflow) fail "$IMPL: the snapshot went $st after the COW device grew" ;; esac
	log "ok: $IMPL: the snapshot stays valid ($st)"
	expect_same "$IMPL: the snapshot still has the old data" /dev/"$VG"/snap "$out"/old
	if [ -n "${RDM_UDEV:-}" ]; then
		[ -L /dev/"$VG"/snap ] && [ -L /dev/mapper/"$VG"-snap ] ||
			fail "$IMPL: /dev/$VG/snap or /dev/mapper/$VG-snap is not udev's link"
		log "ok: $IMPL: the links are udev's"
	fi

	lvm_ok "lvremove of the snapshot" lvremove -y "$VG"/snap
	expect_eq "$(table_type "$VG"-lv)" linear "$IMPL: lv is linear again"
	head -c $((20 << 20)) "$out"/new >"$out"/expect
	tail -c +$(((20 << 20) + 1)) "$out"/old >>"$out"/expect
	expect_same "$IMPL: lv has the new data" /dev/"$VG"/lv "$out"/expect
	lvm_ok "lvremove of the striped LV" lvremove -y "$VG"/st
	lvm_ok "vgchange -an" vgchange -an "$VG"
	expect_eq "$(dmsetup ls)" "No devices found" "$IMPL: no device left"
	lvm_ok "vgchange -ay" vgchange -ay "$VG"
	expect_same "$IMPL: lv after reactivation" /dev/"$VG"/lv "$out"/expect
	lvm_ok "vgchange -an" vgchange -an "$VG"
	lvm_ok "vgremove" vgremove -y "$VG"
	lvm_ok "pvremove" pvremove -y "$VDA" "$VDB"
	if [ -n "${RDM_UDEV:-}" ]; then
		expect_eq "$(dmsetup udevcookies | tail -n +2)" "" "$IMPL: no udev cookie left"
	fi
}

lvm_both scenario "$VDA" "$VDB"
exit "$KSFT_PASS"
