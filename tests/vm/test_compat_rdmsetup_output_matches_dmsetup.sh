#!/usr/bin/env bash
# Golden test of rdmsetup against Debian's dmsetup: the same script of
# commands (create with -u and --notable, ls, info in blocks and in
# columns as udev rules and scripts call it: -c -o --noheadings
# --separator --nameprefixes --rows, addressing by -u UUID and by
# -j MAJOR -m MINOR, table, status, deps, suspend/resume, load, rename,
# wait -v, remove by uuid, failures and usage errors) runs through both
# tools against the same driver, the kernel's dm (dm-mod) first, then rdm
# loaded with dm_compat=1; each step's standard output and exit status
# must be the same for both tools.
# With `vm-run --udev`, dmsetup uses udev synchronisation and udev makes
# /dev/mapper/NAME (a symlink) beside rdmsetup's own node; every step
# then ends with `udevadm settle` for both tools, so that udev's workers
# (blkid) have let go of a device before the next step removes it, as
# dmsetup's own synchronisation ensures for dmsetup.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA" "$VDB"
command -v dmsetup >/dev/null || skip "dmsetup is not installed"
[ -n "${RDM_UDEV:-}" ] || export DM_DISABLE_UDEV=1
out=/tmp/c03
rm -rf $out && mkdir -p $out
cleanup() {
	dmsetup remove_all >/dev/null 2>&1
	IMPL=rdm compat_unload
	IMPL=dm compat_unload
	modprobe -r -d "$RDM_MODROOT" dm-zero dm-mod >/dev/null 2>&1
}
defer cleanup

# step ARGS...: runs $TOOL ARGS, appending the command, its standard
# output and its exit status to $OUT.
step() {
	local rc
	echo "### $*" >>"$OUT"
	"$TOOL" "$@" >>"$OUT" 2>>"$OUT.err"
	rc=$?
	echo "exit=$rc" >>"$OUT"
	[ -z "${RDM_UDEV:-}" ] || udevadm settle --timeout=60
}

script() {
	local maj min
	step create a --table "0 2048 linear $VDA 0"
	step create b -u GOLDEN-B --table "0 1024 striped 2 8 $VDA 4096 $VDB 0"
	step create c --notable
	step ls
	step info a
	step info
	step info -c
	step info -c c
	step info -c -o name,uuid,suspended,attr,tables_loaded,readonly --noheadings --separator "|"
	step info -c -o +devno,device_count,devnos_used,blkdevname,read_ahead
	step info -c -o name,open --separator ,
	step info -c --noheadings
	step info -c --rows -o name,minor
	step info -u GOLDEN-B
	# (With udev, /dev/mapper/a is udev's symlink to /dev/dm-N.)
	maj=$((0x$(stat -L -c %t $DEVDIR/a))) min=$((0x$(stat -L -c %T $DEVDIR/a)))
	step info -j "$maj" -m "$min"
	step -j "$maj" -m "$min" info -c --nameprefixes --noheadings --rows -o name,uuid,suspended
	step info -c --nameprefixes -o name,uuid,suspended
	step table
	step table b
	step status
	step status b
	step deps a
	step deps
	step load c --table "0 64 zero"
	step info c
	step info -c -o attr,tables_loaded c
	step table --inactive c
	step resume c
	step suspend a
	step info -c -o name,attr,suspended a
	step resume a
	step load a --table "0 4096 zero"
	step info -c -o attr,tables_loaded,segments a
	step resume a
	step table a
	step rename a a2
	step ls
	step wait -v a2 99999
	step message a2 0 @cancel_deferred_remove
	step info nosuch
	step remove nosuch
	step create a2 --table "0 8 zero"
	step info --no-such-option
	step frobnicate
	step remove -u GOLDEN-B
	step remove a2
	step remove c
	step ls
	step info -c
}

# golden DRIVER: the script through dmsetup, then rdmsetup, on the
# control device now loaded; the outputs must be equal.
golden() {
	local tool
	for tool in dmsetup rdmsetup; do
		TOOL=$tool OUT=$out/$1.$tool
		: >"$OUT"
		script
		dmsetup remove_all >/dev/null 2>&1
		[ "$(dmsetup ls)" = "No devices found" ] || fail "$1: devices left after the $tool run"
	done
	if ! diff -u $out/"$1".dmsetup $out/"$1".rdmsetup >$out/"$1".diff; then
		cat $out/"$1".diff
		fail "$1: rdmsetup's output or exit status differs from dmsetup's"
	fi
	log "ok: $1: $(grep -c '^###' $out/"$1".dmsetup) steps, the same output and exit status"
	# The script does reach the cases it is about.
	expect_match "$(cat $out/"$1".dmsetup)" "DM_NAME='a'" "$1: the udev rules' query"
	expect_match "$(cat $out/"$1".dmsetup)" "^b\|GOLDEN-B\|Active\|L--w\|Live\|Writeable$" \
		"$1: --noheadings --separator"
	[ "$(grep -c '^exit=1$' $out/"$1".dmsetup)" -ge 6 ] || fail "$1: the failing steps did not fail"
}

export RDM_CONTROL=/dev/mapper/control
DEVDIR=/dev/mapper
if modprobe -d "$RDM_MODROOT" dm-mod 2>/dev/null; then
	golden dm
	# The script's zero tables loaded dm-zero, which holds dm-mod; with
	# udev, dmeventd holds the control device: it is stopped until rdm
	# is loaded.
	[ -z "${RDM_UDEV:-}" ] || udevadm settle --timeout=60
	pid=$(cat /run/dmeventd.pid 2>/dev/null)
	if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	grep -q '^dm_zero ' /proc/modules && modprobe -r -d "$RDM_MODROOT" dm-zero
	for _ in $(seq 1 50); do
		modprobe -r -d "$RDM_MODROOT" dm-mod 2>/dev/null && break
		sleep 0.1
	done
	if grep -q '^dm_mod ' /proc/modules; then
		log "dm_mod refcnt $(cat /sys/module/dm_mod/refcnt), holders: $(ls /sys/module/dm_mod/holders), devices: $(dmsetup ls)"
		fuser -v /dev/mapper/control 2>&1 | sed 's/^/# /'
		fail "unload dm-mod"
	fi
else
	log "the kernel's dm-mod is not available: no reference run"
fi
rdm_load dm_compat=1
[ -z "${RDM_UDEV:-}" ] || dmeventd || fail "start dmeventd"
golden rdm
exit "$KSFT_PASS"
