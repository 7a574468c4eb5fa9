#!/usr/bin/env bash
# rdmsetup's other verbs against rdm: targets, info/table/status of all
# devices, rename and --setuuid, ls with several devices, read-only
# devices, wait for an event, mknodes after the links were lost.
. "$(dirname "$0")/test_common.sh"
require_vm
require_disks "$VDA"
defer rdm_cleanup
rdm_load

expect_eq "$(rdmsetup targets)" "linear           v1.4.0
zero             v1.2.0
error            v1.7.0
striped          v1.6.0
snapshot-origin  v1.9.0
snapshot         v1.16.0
snapshot-merge   v1.5.0" "targets"
expect_eq "$(rdmsetup ls)" "No devices found" "empty ls"
rdmsetup create b --table "0 16 zero" || fail "create b"
rdmsetup create a -u RDM-A --table "0 8 linear $VDA 0" || fail "create a"
expect_eq "$(rdmsetup ls | cut -f1)" "a
b" "ls lists both, sorted"
expect_eq "$(rdmsetup table)" "a: 0 8 linear 254:0 0
b: 0 16 zero " "table of all devices"
expect_match "$(rdmsetup info a)" "^UUID: RDM-A$" "uuid shown"
rdmsetup rename b b2 || fail "rename"
[ -L /dev/rdm/b2 ] && [ ! -e /dev/rdm/b ] || fail "rename moved the /dev/rdm link"
rdmsetup rename b2 --setuuid RDM-B || fail "setuuid"
expect_match "$(rdmsetup info b2)" "^UUID: RDM-B$" "uuid set"
rm -f /dev/rdm/a /dev/rdm/b2
rdmsetup mknodes || fail "mknodes"
[ "$(readlink /dev/rdm/a)" = "../rdm-$(rdmsetup info a | sed -n 's/^Major, minor: *[0-9]*, //p')" ] ||
	fail "mknodes made a wrong link: $(readlink /dev/rdm/a)"
log "ok: mknodes remade the links"

# An event: wait returns once a resume swaps the table.
ev=$(rdmsetup info a | sed -n 's/^Event number: *//p')
rdmsetup -v wait a "$ev" >/tmp/wait.out &
wpid=$!
sleep 1
kill -0 $wpid 2>/dev/null || fail "wait returned before any event"
rdmsetup load a --table "0 8 zero" && rdmsetup resume a || fail "swap"
wait $wpid || fail "wait failed"
# As dmsetup: with -v, the info block once the event came.
expect_eq "$(sed -n 's/^Event number: *//p' /tmp/wait.out)" "$((ev + 1))" "wait -v shows the new event number"
expect_match "$(head -1 /tmp/wait.out)" "^Name: +a$" "wait -v prints the info block"

rdmsetup create ro -r --table "0 8 linear $VDA 0" || fail "create read-only"
expect_match "$(rdmsetup info ro)" "State: +ACTIVE \(READ-ONLY\)" "read-only state"
if dd if=/dev/zero of=/dev/rdm/ro bs=4k count=1 oflag=direct status=none 2>/dev/null; then
	fail "write to a read-only device succeeded"
fi
log "ok: writes to a read-only device fail"
rdmsetup remove_all || fail "remove_all"
exit "$KSFT_PASS"
