#!/usr/bin/env bash
# LVM2's snapshot merge (lvconvert --merge), with LVM2's default
# lvm.conf, on the kernel's dm first and then on rdm (dm_compat=1). A 32
# MiB LV gets an LVM2 snapshot; the origin and the snapshot are both
# written after it, and the snapshot's image is saved.
# 1. `lvconvert --merge -i 1 vg/snap` with the origin closed: LVM2 loads
#    the origin as a snapshot-merge target, polls its status until the
#    merge is done and removes the snapshot LV. Checked: the snapshot LV
#    and its devices are gone, the origin is linear again and equals the
#    snapshot's image, also after vgchange -an/-ay.
# 2. With the origin open, LVM2 defers the merge to the origin's next
#    activation (its policy): the snapshot LV stays, marked for merging,
#    and the origin keeps its own data; after the origin is closed,
#    vgchange -an and -ay start the merge (LVM2 polls it in the
#    background). Checked as in 1.
# In a `vm-run --udev` guest LVM2 runs with udev synchronisation and no
# cookie may be left.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
out=/tmp/l03
rm -rf $out && mkdir -p $out
make_pattern $out/old 32
make_pattern $out/new 8
make_pattern $out/mine 4
VG=rdmvg
# Round 2 keeps the origin open on a descriptor LVM2 inherits.
export LVM_SUPPRESS_FD_WARNINGS=1

# lvm_ok WHAT COMMAND...: runs an LVM2 command, which must succeed.
lvm_ok() {
	local what=$1 o
	shift
	o=$("$@" 2>&1) || fail "$IMPL: $what: $* failed: $o"
	log "ok: $IMPL: $what"
	[ -n "$o" ] && printf '%s\n' "$o" | sed 's/^/#   /'
	return 0
}
table_type() { local t; t=$(dmsetup table "$1") || return 1; read -r _ _ t _ <<<"$t"; echo "$t"; }

# prepare: the VG, the LV with the old data, its snapshot, then writes to
# both; the snapshot's image goes to $out/image.
prepare() {
	lvm_ok "pvcreate" pvcreate -y "$VDA" "$VDB"
	lvm_ok "vgcreate" vgcreate -y "$VG" "$VDA" "$VDB"
	lvm_ok "an LV" lvcreate -y -L 32M -n lv "$VG"
	dd if="$out"/old of=/dev/"$VG"/lv bs=1M oflag=direct status=none || fail "$IMPL: write lv"
	lvm_ok "lvcreate -s" lvcreate -y -s -L 16M -n snap "$VG"/lv
	expect_eq "$(table_type "$VG"-lv)" snapshot-origin "$IMPL: lv is a snapshot origin"
	# Origin writes the snapshot must not see (and the merge must undo).
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M count=4 oflag=direct status=none ||
		fail "$IMPL: write the origin"
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M seek=20 skip=4 count=4 oflag=direct status=none ||
		fail "$IMPL: write the origin"
	# Snapshot writes (the merge must bring them to the origin), one
	# overlapping the origin's.
	dd if="$out"/mine of=/dev/"$VG"/snap bs=1M seek=2 oflag=direct status=none ||
		fail "$IMPL: write the snapshot"
	dd if="$out"/mine of=/dev/"$VG"/snap bs=4k seek=3000 count=7 oflag=direct status=none ||
		fail "$IMPL: write the snapshot"
	dd if=/dev/"$VG"/snap of="$out"/image bs=1M iflag=direct status=none || fail "$IMPL: read the snapshot"
	dd if=/dev/"$VG"/lv of="$out"/origin bs=1M iflag=direct status=none || fail "$IMPL: read the origin"
	cmp -s "$out"/image "$out"/origin && fail "$IMPL: the snapshot and the origin already agree"
	log "ok: $IMPL: the origin and the snapshot differ ($(cksum <"$out"/image))"
}

# merged: the merge is over: the snapshot LV and its devices are gone,
# the origin is linear and holds the snapshot's image, also after the VG
# is deactivated and activated again.
merged() {
	lvs "$VG"/snap >/dev/null 2>&1 && fail "$IMPL: the snapshot LV is still there: $(lvs -a "$VG" 2>&1)"
	log "ok: $IMPL: the snapshot LV is gone"
	expect_eq "$(table_type "$VG"-lv)" linear "$IMPL: lv is linear again"
	expect_eq "$(dmsetup ls | cut -f1 | sort | tr '\n' ' ')" "$VG-lv " "$IMPL: only the LV's device is left"
	expect_same "$IMPL: the origin is the snapshot's image" /dev/"$VG"/lv "$out"/image
	lvm_ok "vgchange -an" vgchange -an "$VG"
	expect_eq "$(dmsetup ls)" "No devices found" "$IMPL: no device left"
	lvm_ok "vgchange -ay" vgchange -ay "$VG"
	expect_same "$IMPL: the origin after reactivation" /dev/"$VG"/lv "$out"/image
}

finish() {
	lvm_ok "vgchange -an" vgchange -an "$VG"
	lvm_ok "vgremove" vgremove -y "$VG"
	lvm_ok "pvremove" pvremove -y "$VDA" "$VDB"
	if [ -n "${RDM_UDEV:-}" ]; then
		expect_eq "$(dmsetup udevcookies | tail -n +2)" "" "$IMPL: no udev cookie left"
	fi
}

scenario() {
	local o
	log "$IMPL: round 1: lvconvert --merge with the origin closed"
	prepare
	lvm_ok "lvconvert --merge" lvconvert --merge -i 1 "$VG"/snap
	merged
	finish

	log "$IMPL: round 2: lvconvert --merge with the origin open (deferred)"
	prepare
	exec 3<"/dev/$VG/lv"
	o=$(lvconvert --merge -i 1 "$VG"/snap 2>&1) || {
		exec 3<&-
		fail "$IMPL: lvconvert --merge of an open origin failed: $o"
	}
	printf '%s\n' "$o" | sed 's/^/#   /'
	expect_eq "$(table_type "$VG"-lv)" snapshot-origin "$IMPL: the merge waits: lv is still an origin"
	expect_eq "$(table_type "$VG"-snap)" snapshot "$IMPL: the merge waits: snap is still a snapshot"
	expect_same "$IMPL: the open origin keeps its own data" /dev/"$VG"/lv "$out"/origin
	exec 3<&-
	lvm_ok "vgchange -an" vgchange -an "$VG"
	lvm_ok "vgchange -ay (the merge starts)" vgchange -ay "$VG"
	for _ in $(seq 120); do
		lvs "$VG"/snap >/dev/null 2>&1 || break
		sleep 1
	done
	merged
	finish
}

lvm_both scenario "$VDA" "$VDB"
exit "$KSFT_PASS"
