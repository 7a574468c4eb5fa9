#!/usr/bin/env bash
# Requests as dm answers them, driven by Debian's dmsetup on the kernel's
# dm first, then on rdm (dm_compat=1):
# - lookups of devices that do not exist (info, status, table, suspend,
#   resume, remove, by name, by uuid) fail with ENXIO and no kernel log
#   line at warning level or above (LVM2 asks this all the time);
# - remove_all --deferred marks an open device to go on its last close;
#   remove_all without it leaves an open device as it is and logs how many
#   it left;
# - poll() on the control device (DM_DEV_ARM_POLL): not readable once
#   armed, readable after a create, a rename, a remove or a device event,
#   not readable again once re-armed;
# - on rdm only: `dmsetup measure` (IMA) and dmstats' @stats_* messages,
#   which rdm does not implement, fail with EOPNOTSUPP and a log line
#   instead of answering wrongly.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
command -v python3 >/dev/null || skip "python3 is not installed"

# Warning-or-worse kernel log lines since klog_mark (the mark itself is
# written at the default level, warning).
klog_loud_since_mark() {
	dmesg --level=emerg,alert,crit,err,warn | sed -n "/${RDM_KLOG_MARK}/,\$p" | tail -n +2
}
missing() { # missing COMMAND...: fails with ENXIO, quietly
	local out
	klog_mark
	if out=$("$@" 2>&1); then fail "$IMPL: '$*' succeeded: $out"; fi
	expect_match "$out" "does not exist|No such device" "$IMPL: '$*': no such device"
	expect_eq "$(klog_loud_since_mark)" "" "$IMPL: '$*': no warning or error in the kernel log"
}

# The poller: arms the control file, then reports whether it is readable
# at each line read from stdin ("arm" re-arms), one answer per line.
cat >/tmp/d17-poll.py <<'EOF'
import fcntl, os, select, struct, sys
fd = os.open("/dev/mapper/control", os.O_RDWR)
SIZE = 312  # struct dm_ioctl
ARM = (3 << 30) | (SIZE << 16) | (0xfd << 8) | 16  # _IOWR(0xfd, DM_DEV_ARM_POLL_CMD, struct dm_ioctl)
def arm():
    buf = bytearray(SIZE)
    struct.pack_into("=IIIII", buf, 0, 4, 0, 0, SIZE, SIZE)
    fcntl.ioctl(fd, ARM, buf)
p = select.poll()
p.register(fd, select.POLLIN)
arm()
for line in sys.stdin:
    if line.strip() == "arm":
        arm()
        print("armed", flush=True)
    else:
        ready = any(ev & select.POLLIN for _, ev in p.poll(int(line.strip() or 0)))
        print("readable" if ready else "quiet", flush=True)
EOF

scenario() {
	local ans
	dm create m1 -u M1-UUID --table "0 8 zero" || fail "create"
	missing dm info nosuch
	missing dm info -u NOSUCH-UUID
	missing dm status nosuch
	missing dm table nosuch
	missing dm suspend nosuch
	missing dm resume nosuch
	missing dm remove nosuch

	# remove_all with an open device.
	exec 3<"$DEVDIR"/m1
	klog_mark
	dm remove_all || fail "$IMPL: remove_all"
	expect_eq "$(dm info -c --noheadings -o name m1)" m1 "$IMPL: remove_all leaves the open device"
	expect_match "$(klog_since_mark)" "remove_all left 1 open device" "$IMPL: remove_all says what it left"
	expect_match "$(dm info m1)" "State: *ACTIVE$" "$IMPL: not marked for deferred remove"
	dm remove_all --deferred || fail "$IMPL: remove_all --deferred"
	expect_match "$(dm info m1)" "DEFERRED REMOVE" "$IMPL: remove_all --deferred marks the open device"
	exec 3<&-
	wait_gone dm m1
	log "ok: $IMPL: the device goes on its last close"

	# poll() on the control device.
	coproc POLL { python3 -u /tmp/d17-poll.py 2>&1; }
	ask() { echo "$1" >&"${POLL[1]}"; read -r -t 30 ans <&"${POLL[0]}" || fail "$IMPL: poller: no answer"; echo "$ans"; }
	expect_eq "$(ask 0)" quiet "$IMPL: armed: not readable"
	dm create p1 --table "0 8 zero" || fail "create p1"
	expect_eq "$(ask 5000)" readable "$IMPL: readable after a create"
	expect_eq "$(ask 0)" readable "$IMPL: still readable until re-armed"
	expect_eq "$(ask arm)" armed "$IMPL: re-armed"
	expect_eq "$(ask 0)" quiet "$IMPL: re-armed: not readable"
	dm rename p1 p2 || fail "rename"
	expect_eq "$(ask 5000)" readable "$IMPL: readable after a rename"
	ask arm >/dev/null
	dm load p2 --table "0 16 zero" && dm resume p2 || fail "reload p2"
	expect_eq "$(ask 5000)" readable "$IMPL: readable after a table swap (a device event)"
	ask arm >/dev/null
	expect_eq "$(ask 0)" quiet "$IMPL: re-armed again: not readable"
	dm remove p2 || fail "remove p2"
	expect_eq "$(ask 5000)" readable "$IMPL: readable after a remove"
	# shellcheck disable=SC1083,SC2093 # bash closes the fd named by an array element
	exec {POLL[1]}>&-
	wait "$POLL_PID" 2>/dev/null

	if [ "$IMPL" = rdm ]; then
		dm create u --table "0 8 zero" || fail "create u"
		expect_refused "$IMPL: dmsetup measure" "[Oo]peration not supported" "IMA" dm measure u
		expect_refused "$IMPL: @stats_list" "[Oo]peration not supported" "dmstats.*not supported" \
			dm message u 0 @stats_list
		expect_refused "$IMPL: @stats_create" "[Oo]peration not supported" "dmstats.*not supported" \
			dm message u 0 @stats_create - /1
		dm remove u || fail "remove u"
	fi
	expect_eq "$(dm ls)" "No devices found" "$IMPL: nothing left"
}

compat_both scenario
exit "$KSFT_PASS"
