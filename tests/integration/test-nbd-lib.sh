#!/bin/sh
# test-nbd-lib.sh - what the vdiskd tests share, and (run on its own) the
# smallest of them: vdiskd starts on an empty store, answers an NBD_OPT_LIST,
# refuses an unknown export, and stops cleanly on SIGTERM.
#
# The other test-nbd-*.sh scripts source it with NBD_LIB=1 set.  It gives:
#   start_daemon [ARGS...]  a real vdiskd ($DAEMON if set, else the ASan
#                           build when it exists) on $SOCK, store $STORE,
#                           log $TESTDIR/vdiskd.log
#   stop_daemon             SIGTERM, then checks exit 0 and clean sanitizer logs
#   uri VOL                 nbd+unix:///VOL?socket=$SOCK
#   vdisk ARGS...           the CLI on $STORE
#   fail MSG / skip MSG / need TOOL...
# Environment (tests/run-tests.sh): BUILD, VDISK, TESTDIR.
set -u

PY=/usr/bin/python3     # Debian's python3 has the nbd module; the first on PATH may not
# /usr/bin/nbdsh starts "env python3": run its module with Debian's python.
NBDSH="$PY -m nbd"

fail() {
    echo "FAIL: $*"
    if [ -n "${DPID:-}" ] && [ -f "$TESTDIR/vdiskd.log" ]; then
        echo "---- vdiskd log (last lines) ----"
        tail -n 40 "$TESTDIR/vdiskd.log"
    fi
    exit 1
}

skip() {
    echo "SKIP: $*"
    exit 77
}

need() {
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
    done
}

: "${TESTDIR:?TESTDIR must name a fresh folder}"
: "${BUILD:=$(pwd)/build}"
: "${VDISK:=$BUILD/bin/vdisk}"
[ -x "$VDISK" ] || skip "no vdisk binary at $VDISK (run make)"
if [ -n "${DAEMON:-}" ]; then
    [ -x "$DAEMON" ] || skip "no vdiskd binary at $DAEMON"
elif [ -x "$BUILD/asan/bin/vdiskd" ]; then
    DAEMON=$BUILD/asan/bin/vdiskd
elif [ -x "$BUILD/bin/vdiskd" ]; then
    DAEMON=$BUILD/bin/vdiskd
else
    skip "no vdiskd binary in $BUILD/bin (run make)"
fi

STORE=$TESTDIR/store
SOCK=$TESTDIR/nbd.sock
DPID=
export VDISK_STORE="$STORE"

vdisk() { "$VDISK" "$@"; }
uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

cleanup() {
    if [ -n "$DPID" ]; then
        kill -9 "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
}
trap cleanup EXIT

# start_daemon [ARGS...]: starts vdiskd and waits until it accepts.
start_daemon() {
    rm -f "$TESTDIR"/asan.* "$TESTDIR"/tsan.*
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:log_path=$TESTDIR/asan" \
    TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0}:log_path=$TESTDIR/tsan" \
        "$DAEMON" --store "$STORE" --listen "unix:$SOCK" --foreground -v "$@" \
        >>"$TESTDIR/vdiskd.log" 2>&1 &
    DPID=$!
    i=0
    while ! [ -S "$SOCK" ]; do
        kill -0 "$DPID" 2>/dev/null || { wait "$DPID"; DPID=; fail "vdiskd exited at startup"; }
        i=$((i + 1))
        [ $i -lt 200 ] || fail "vdiskd did not create $SOCK within 10 s"
        sleep 0.05
    done
}

# stop_daemon: SIGTERM; vdiskd must exit 0 and the sanitizers must have said
# nothing.
stop_daemon() {
    kill -TERM "$DPID" || fail "vdiskd (pid $DPID) is not running"
    wait "$DPID"
    rc=$?
    pid=$DPID
    DPID=
    [ $rc = 0 ] || { DPID=$pid; fail "vdiskd exited with status $rc after SIGTERM"; }
    for f in "$TESTDIR"/asan.* "$TESTDIR"/tsan.*; do
        [ -s "$f" ] || continue
        cat "$f"
        fail "a sanitizer (ASan/UBSan/TSan) reported errors in vdiskd (above)"
    done
    [ ! -e "$SOCK" ] || fail "vdiskd left its socket $SOCK behind"
}

# kill_daemon: SIGKILL, no checks (crash tests).
kill_daemon() {
    kill -9 "$DPID"
    wait "$DPID" 2>/dev/null
    DPID=
    rm -f "$TESTDIR"/asan.*
}

[ "${NBD_LIB:-}" = 1 ] && return 0

# ---- run on its own: a smoke test ----
need nbdinfo
echo "daemon: $DAEMON"
start_daemon
out=$(nbdinfo --list "nbd+unix://?socket=$SOCK" 2>&1) || fail "nbdinfo --list on an empty store: $out"
echo "$out"
if nbdinfo "$(uri nosuch)" >"$TESTDIR/out" 2>&1; then
    fail "an unknown export was accepted"
fi
grep -qi "unknown\|not found\|no such\|export" "$TESTDIR/out" || { cat "$TESTDIR/out"; fail "unexpected error for an unknown export"; }
stop_daemon

# vdisk serve execs the vdiskd next to vdisk.
if [ -x "$(dirname "$VDISK")/vdiskd" ]; then
    "$VDISK" serve --help | grep -q "Usage: vdiskd" || fail "vdisk serve --help does not run vdiskd"
    "$VDISK" serve --version | grep -q "^vdiskd " || fail "vdisk serve --version"
fi
# Bad options: usage errors (exit 2), nothing started.
"$DAEMON" --cache bogus >/dev/null 2>&1; [ $? = 2 ] || fail "--cache bogus is not a usage error"
"$DAEMON" --store "$STORE" --listen bogus:x --foreground >/dev/null 2>&1 && fail "--listen bogus:x accepted"
echo "PASS"
exit 0
