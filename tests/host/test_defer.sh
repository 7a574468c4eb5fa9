#!/usr/bin/env bash
# The VM tests' cleanup stack (defer in tests/vm/test_common.sh), on the
# host: each case is a small script that sources test_common.sh, defers
# commands that append to a trace file, and ends in some way (passes, fails
# midway, fails in a cleanup, is killed); the trace and the exit status must
# show every deferred command run once, in reverse order, in its scope.
# The cases' bodies are scripts, single-quoted on purpose.
# shellcheck disable=SC2016
set -u
here=$(cd "$(dirname "$0")" && pwd)
common=$here/../vm/test_common.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rdm-defer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0

# case NAME WANT-STATUS WANT-TRACE BODY: runs BODY after sourcing the
# library (`t WORD` appends WORD to the trace) and compares.
case_() {
	local name=$1 want_rc=$2 want=$3 body=$4 got got_rc
	: >"$tmp/trace"
	printf '. %q\nt() { printf "%%s " "$*" >>%q; }\n%s\n' "$common" "$tmp/trace" "$body" >"$tmp/case.sh"
	{ bash "$tmp/case.sh" >"$tmp/out" 2>&1; } 2>/dev/null
	got_rc=$?
	got=$(cat "$tmp/trace")
	got=${got% }
	if [ "$got_rc" = "$want_rc" ] && [ "$got" = "$want" ]; then
		echo "ok - defer: $name"
	else
		echo "not ok - defer: $name: exit $got_rc, trace '$got'; expected exit $want_rc, trace '$want'"
		sed 's/^/#   /' "$tmp/out"
		rc=1
	fi
}

case_ "runs the deferred commands at exit, last first" 0 "body 3 2 1" '
defer t 1; defer t 2; defer t 3; t body'
case_ "arguments keep their words and quotes" 0 "a b c's d" '
defer t "a b" "c'\''s" d'
case_ "a test that fails midway still cleans up, and fails" 1 "2 1" '
defer t 1; defer t 2; fail "midway"; defer t never'
case_ "a skipped test cleans up and stays skipped" 4 "1" '
defer t 1; skip "no disk"'
case_ "a cleanup command that returns non-zero is logged, the others run" 0 "3 1" '
defer t 1; defer false; defer t 3'
case_ "fail inside a cleanup command fails a passing test, the others run" 1 "3 2 1" '
defer t 1; bad() { t 2; fail "cleanup"; }; defer bad; defer t 3'
case_ "fail inside a cleanup keeps a skipped test's own status" 4 "1" '
defer t 1; defer fail "cleanup"; skip "no disk"'
case_ "defer_scope_pop runs only its scope, at once" 0 "3 2 after 1" '
defer t 1; defer_scope_push; defer t 2; defer t 3; defer_scope_pop; t after'
case_ "nested scopes" 0 "4 3 2 1" '
defer t 1; defer_scope_push; defer t 2; defer_scope_push; defer t 3; defer t 4
defer_scope_pop; defer_scope_pop'
case_ "a failed cleanup at defer_scope_pop fails the test there" 1 "2 1" '
defer t 1; defer_scope_push; defer fail "cleanup"; defer t 2; defer_scope_pop; t never'
case_ "a defer_subshell runs its own at its exit, not its parent's" 0 "s2 s1 ok p2 p1" '
defer t p1; defer t p2
( defer_subshell; defer t s1; defer t s2; exit 3 )
[ $? = 3 ] && t ok'
case_ "impl_run: the first run is cleaned up before the second starts" 1 "up-dm body-dm down-dm up-rdm body-rdm down-rdm" '
up() { t "up-$IMPL"; defer t "down-$IMPL"; }
body() { t "body-$IMPL"; [ "$IMPL" = rdm ] || fail "dm fails"; }
IMPL=dm impl_run up body
IMPL=rdm impl_run up body || exit 1
exit 1'
case_ "stop_pids kills and reaps a child still running" 0 "gone" '
sleep 100 & p=$!; defer stop_pids "$p"
defer_scope_push; defer stop_pids "$p"; defer_scope_pop
kill -0 "$p" 2>/dev/null || t gone'
case_ "stop_pids leaves alone a PID that is not its child" 0 "alive" '
sleep 100 & p=$!
( defer_subshell; defer stop_pids "$p" ); kill -0 "$p" 2>/dev/null && t alive; kill "$p"'
case_ "killed by SIGTERM (a timeout): cleans up" 143 "1" '
defer t 1; sleep 30 & kill -TERM $$; wait'
exit $rc
