#!/usr/bin/env bash
# dmeventd keeps a filling snapshot valid: with LVM2's monitoring on (its
# default) and snapshot_autoextend_threshold = 70 (percent 50), a
# snapshot LV of 8 MiB whose origin gets 7 MiB of writes is extended by
# dmeventd (lvextend --use-policies) without anyone asking, and 3 MiB
# more (more than its first size held) leave it valid with the old data. On
# the kernel's dm first, then on rdm (dm_compat=1).
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v dmeventd >/dev/null || skip "dmeventd is not installed (scripts/setup-deps)"
out=/tmp/l02
rm -rf $out && mkdir -p $out
make_pattern $out/old 32
make_pattern $out/new 32
VG=rdmvg2

if [ -z "${LVM_SYSTEM_DIR:-}" ]; then
	export LVM_SYSTEM_DIR=/tmp/rdm-lvm2
	mkdir -p "$LVM_SYSTEM_DIR"
fi
conf=$LVM_SYSTEM_DIR/lvm.conf
# (The guest may have no /etc/lvm/lvm.conf: then LVM2's defaults.)
[ -f "$conf" ] || cp /etc/lvm/lvm.conf "$conf" 2>/dev/null ||
	lvmconfig --type default --withcomments --file "$conf" || fail "no lvm.conf"
cp "$conf" $out/lvm.conf.orig
defer cp "$out/lvm.conf.orig" "$conf"
# lvm.conf (Debian's, or LVM2's default one) has both settings commented
# out, an example line first: the last line naming each gets the value.
awk 'NR == FNR { if ($0 ~ /^[[:space:]]*#?[[:space:]]*snapshot_autoextend_threshold[[:space:]]*=/) t = FNR
		if ($0 ~ /^[[:space:]]*#?[[:space:]]*snapshot_autoextend_percent[[:space:]]*=/) p = FNR
		next }
	FNR == t { $0 = "\tsnapshot_autoextend_threshold = 70" }
	FNR == p { $0 = "\tsnapshot_autoextend_percent = 50" }
	{ print }' $out/lvm.conf.orig $out/lvm.conf.orig >"$conf"
[ "$(lvmconfig --type full activation/snapshot_autoextend_threshold activation/snapshot_autoextend_percent | tr '\n' ' ')" = \
	"snapshot_autoextend_threshold=70 snapshot_autoextend_percent=50 " ] ||
	fail "cannot set snapshot_autoextend_threshold and _percent in $conf: $(lvmconfig --type full activation/snapshot_autoextend_threshold activation/snapshot_autoextend_percent 2>&1; grep -n "snapshot_autoextend" "$conf")"

lvm_ok() {
	local what=$1 o
	shift
	o=$("$@" 2>&1) || fail "$IMPL: $what: $* failed: $o"
	log "ok: $IMPL: $what"
}
snap_mib() { lvs --noheadings --units m --nosuffix -o lv_size "$VG"/snap | awk '{ printf "%d", $1 }'; }

scenario() {
	local st i pid
	# dmeventd started afresh, with the configuration above.
	pid=$(cat /run/dmeventd.pid 2>/dev/null)
	if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	dmeventd || fail "start dmeventd"
	lvm_ok "pvcreate" pvcreate -y "$VDA" "$VDB"
	lvm_ok "vgcreate" vgcreate -y "$VG" "$VDA" "$VDB"
	lvm_ok "lvcreate" lvcreate -y -L 64M -n lv "$VG"
	dd if="$out"/old of=/dev/"$VG"/lv bs=1M oflag=direct status=none || fail "$IMPL: write lv"
	lvm_ok "lvcreate -s (8 MiB)" lvcreate -y -s -L 8M -n snap "$VG"/lv
	expect_eq "$(lvs --noheadings -o seg_monitor "$VG"/snap | tr -d ' ')" monitored "$IMPL: dmeventd monitors the snapshot"
	# 7 MiB of origin writes: over 70 % of the COW device.
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M count=7 oflag=direct status=none || fail "$IMPL: write the origin"
	for i in $(seq 1 120); do
		[ "$(snap_mib)" -gt 8 ] && break
		sleep 1
	done
	[ "$(snap_mib)" -gt 8 ] || fail "$IMPL: dmeventd did not extend the snapshot in 120 s ($(dmsetup status "$VG"-snap))"
	log "ok: $IMPL: dmeventd extended the snapshot to $(snap_mib) MiB after $i s"
	# 3 MiB more: 10 MiB copied in all, more than the snapshot first held
	# (and less than the 12 MiB of one extension by 50 %).
	dd if="$out"/new of=/dev/"$VG"/lv bs=1M seek=7 skip=7 count=3 oflag=direct status=none ||
		fail "$IMPL: more origin writes"
	st=$(dmsetup status "$VG"-snap)
	case $st in *Invalid* | *Overflow*) fail "$IMPL: the snapshot went invalid: $st" ;; esac
	log "ok: $IMPL: the snapshot stays valid ($st)"
	expect_same "$IMPL: the snapshot has the old data" /dev/"$VG"/snap "$out"/old
	lvm_ok "vgchange -an" vgchange -an "$VG"
	lvm_ok "vgremove" vgremove -y "$VG"
	lvm_ok "pvremove" pvremove -y "$VDA" "$VDB"
}

lvm_both scenario "$VDA" "$VDB"
exit "$KSFT_PASS"
