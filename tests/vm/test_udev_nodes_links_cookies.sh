#!/usr/bin/env bash
# With udev (`vm-run --udev`): Debian's dmsetup with its default udev
# synchronisation and Debian's udev rules, on the kernel's dm first and
# then on rdm (dm_compat=1). create, rename and remove return promptly
# (dm's uevents carry libdevmapper's cookie, which udev's rules
# complete) and leave no cookie behind; /dev/mapper/NAME is udev's
# symlink; udevadm info shows DM_NAME; the dm/ sysfs directory has dm's
# attributes (suspended follows suspend and resume); lsblk shows name,
# type (the uuid's prefix, as lsblk takes it from dm/uuid) and state; a filesystem appears in /dev/disk/by-uuid; a resume
# that changes the size sends one change uevent with RESIZE=1 and the
# cookie (none from the capacity change itself). Bad input: a remove of a
# device that is gone and a rename to a name in use fail at once with
# ENXIO and EBUSY and leave no cookie.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
[ -n "${RDM_UDEV:-}" ] || skip "needs udev (scripts/vm-run --udev)"
unset DM_DISABLE_UDEV
out=/tmp/u01
rm -rf $out && mkdir -p $out

# prompt WHAT COMMAND...: COMMAND must succeed within 30 s (a lost
# cookie makes dmsetup wait for ever).
prompt() {
	local what=$1 o rc
	shift
	o=$(timeout 30 "$@" 2>&1)
	rc=$?
	[ "$rc" -eq 124 ] && fail "$IMPL: $what: '$*' hung (killed after 30 s)"
	[ "$rc" -eq 0 ] || fail "$IMPL: $what: '$*' failed: $o"
	log "ok: $IMPL: $what returns"
}
# refused WHAT ERRNO-REGEX COMMAND...: COMMAND must fail within 30 s with
# a message matching ERRNO-REGEX.
refused() {
	local what=$1 re=$2 o rc
	shift 2
	o=$(timeout 30 "$@" 2>&1)
	rc=$?
	[ "$rc" -eq 124 ] && fail "$IMPL: $what: '$*' hung (killed after 30 s)"
	[ "$rc" -ne 0 ] || fail "$IMPL: $what: '$*' succeeded"
	expect_match "$o" "$re" "$IMPL: $what: refused"
}
no_cookie() {
	expect_eq "$(dmsetup udevcookies | tail -n +2)" "" "$IMPL: no udev cookie left ($1)"
}
kname() { basename "$(readlink -f /dev/mapper/"$1")"; }
dm_attr() { cat "/sys/block/$(kname "$1")/dm/$2"; }
# udev_prop DEV NAME: the property NAME in udev's database for DEV.
udev_prop() { udevadm info --query=property --name="$1" | sed -n "s/^$2=//p"; }

scenario() {
	local k fsuuid mon pid ev
	# A filesystem 4 MiB into the disk: only the mapped device shows it.
	dd if=/dev/zero of="$VDA" bs=1M count=8 oflag=direct status=none || fail "wipe"
	truncate -s 1M "$out"/fs.img
	mkfs.ext4 -q -F "$out"/fs.img >/dev/null 2>&1 || fail "mkfs"
	fsuuid=$(blkid -p -s UUID -o value "$out"/fs.img) || fail "blkid"
	dd if="$out"/fs.img of="$VDA" bs=1M seek=4 oflag=direct status=none || fail "write the filesystem"
	prompt "create" dmsetup create u1 -u TEST-U1 --table "0 2048 linear $VDA 8192"
	udevadm settle
	[ -L /dev/mapper/u1 ] || fail "$IMPL: /dev/mapper/u1 is not a symlink: $(ls -l /dev/mapper)"
	k=$(kname u1)
	expect_match "$k" "^dm-[0-9]+$" "$IMPL: /dev/mapper/u1 is udev's link to $k"
	expect_eq "$(udev_prop /dev/mapper/u1 DM_NAME)" u1 "$IMPL: udevadm info: DM_NAME"
	expect_eq "$(udev_prop /dev/mapper/u1 DM_UUID)" TEST-U1 "$IMPL: udevadm info: DM_UUID"
	expect_eq "$(dm_attr u1 name)" u1 "$IMPL: dm/name"
	expect_eq "$(dm_attr u1 uuid)" TEST-U1 "$IMPL: dm/uuid"
	expect_eq "$(dm_attr u1 suspended)" 0 "$IMPL: dm/suspended"
	expect_eq "$(dm_attr u1 use_blk_mq)" 1 "$IMPL: dm/use_blk_mq"
	expect_eq "$(dm_attr u1 rq_based_seq_io_merge_deadline)" 0 "$IMPL: dm/rq_based_seq_io_merge_deadline"
	echo 5 >"/sys/block/$k/dm/rq_based_seq_io_merge_deadline" || fail "$IMPL: write rq_based_seq_io_merge_deadline"
	expect_eq "$(dm_attr u1 rq_based_seq_io_merge_deadline)" 0 "$IMPL: rq_based_seq_io_merge_deadline ignores writes"
	[ -L "/dev/disk/by-uuid/$fsuuid" ] || fail "$IMPL: no /dev/disk/by-uuid/$fsuuid: $(ls -l /dev/disk/by-uuid)"
	expect_eq "$(basename "$(readlink -f /dev/disk/by-uuid/"$fsuuid")")" "$k" \
		"$IMPL: the filesystem is in /dev/disk/by-uuid"
	[ -L "/dev/disk/by-id/dm-name-u1" ] || fail "$IMPL: no /dev/disk/by-id/dm-name-u1"
	log "ok: $IMPL: /dev/disk/by-id/dm-name-u1"
	expect_eq "$(lsblk -rno NAME,TYPE,STATE /dev/mapper/u1)" "u1 test running" "$IMPL: lsblk"
	prompt "suspend" dmsetup suspend u1
	expect_eq "$(dm_attr u1 suspended)" 1 "$IMPL: dm/suspended while suspended"
	expect_eq "$(lsblk -rno NAME,TYPE,STATE /dev/mapper/u1)" "u1 test suspended" "$IMPL: lsblk while suspended"
	prompt "resume" dmsetup resume u1
	expect_eq "$(dm_attr u1 suspended)" 0 "$IMPL: dm/suspended after resume"
	no_cookie "after create, suspend, resume"

	# A resume that grows the device: one change uevent, with RESIZE=1
	# and the cookie.
	udevadm settle
	udevadm monitor --kernel --property --subsystem-match=block >"$out"/mon 2>&1 &
	mon=$!
	sleep 1
	prompt "load" dmsetup load u1 --table "0 4096 linear $VDA 8192"
	prompt "resume (grown)" dmsetup resume u1
	udevadm settle
	sleep 1
	kill "$mon"
	wait "$mon" 2>/dev/null
	expect_eq "$(blockdev --getsz /dev/mapper/u1)" 4096 "$IMPL: the new size"
	ev=$(awk -v RS= -v d="DEVNAME=/dev/$k" '/ACTION=change/ && index($0 "\n", d "\n") { print; print "" }' "$out"/mon)
	expect_eq "$(printf '%s\n' "$ev" | grep -c '^ACTION=change')" 1 "$IMPL: one change uevent for the resume"
	expect_match "$ev" "RESIZE=1" "$IMPL: it says RESIZE=1"
	expect_match "$ev" "DM_COOKIE=[0-9]+" "$IMPL: it carries the cookie"
	no_cookie "after the grown resume"

	prompt "rename" dmsetup rename u1 u2
	udevadm settle
	[ -L /dev/mapper/u2 ] && [ ! -e /dev/mapper/u1 ] ||
		fail "$IMPL: after the rename: $(ls -l /dev/mapper)"
	log "ok: $IMPL: /dev/mapper/u2 replaces /dev/mapper/u1"
	expect_eq "$(udev_prop /dev/mapper/u2 DM_NAME)" u2 "$IMPL: udevadm info: DM_NAME after the rename"
	expect_eq "$(dm_attr u2 name)" u2 "$IMPL: dm/name after the rename"
	no_cookie "after the rename"

	# Bad input, with udev running.
	prompt "create" dmsetup create u3 --table "0 8 zero"
	refused "rename to a name in use" "[Dd]evice or resource busy" dmsetup rename u2 u3
	expect_eq "$(dm_attr u2 name) $(dm_attr u3 name)" "u2 u3" "$IMPL: both names kept"
	expect_same "$IMPL: u2 keeps its data" /dev/mapper/u2 <(dread "$VDA" 8192 4096) 4096
	no_cookie "after the refused rename"
	refused "remove of a device that is gone" "[Nn]o such device" dmsetup remove nosuch
	no_cookie "after the refused remove"
	prompt "remove" dmsetup remove u3
	prompt "remove" dmsetup remove u2
	udevadm settle
	[ ! -e /dev/mapper/u2 ] && [ ! -e /dev/mapper/u3 ] || fail "$IMPL: links left: $(ls -l /dev/mapper)"
	[ ! -e "/dev/disk/by-uuid/$fsuuid" ] || fail "$IMPL: /dev/disk/by-uuid/$fsuuid left behind"
	log "ok: $IMPL: the links are gone"
	no_cookie "after the removes"
	expect_eq "$(dmsetup ls)" "No devices found" "$IMPL: nothing left"
}

compat_both scenario
exit "$KSFT_PASS"
