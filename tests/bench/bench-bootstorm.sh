#!/bin/sh
# shellcheck disable=SC2317 # functions run through the trap
# bench-bootstorm.sh - the desktop "boot storm": many linked clones of one
# template read the same template data at the same time.  vdiskd beside
# qemu-nbd, same machine, same client (nbdcopy), one run.  Figures are
# printed, never asserted.
#
# One filled raw file (random data) is the template of both servers:
#   vdiskd    a store; the file imported as a volume, `vdisk template create`,
#             BS_CLONES linked clones, all served by one vdiskd on a unix
#             socket, --cache none (O_DIRECT, the default)
#   qemu-nbd  the file converted to a qcow2 base, BS_CLONES qcow2 overlays
#             over it, one qemu-nbd per overlay (qemu-nbd serves one image),
#             --cache=none --aio=native, each on its own unix socket
# Before each storm the page cache is dropped (as root; else the image files
# are evicted with fadvise DONTNEED).  Then BS_CLONES nbdcopy readers start
# at once, one per clone, one connection each, each reading its clone's
# whole disk from start to end into null: (two of them into sha256sum, the
# check that the data read is the template's).  Figures:
#   physical  bytes the server processes read from the disk during the storm
#             (read_bytes of /proc/PID/io, summed over the qemu-nbd
#             processes); with O_DIRECT every read of the template is one.
#             Goal (vdiskd): at most 1.1 x the template size, i.e. clones
#             share their template reads (the shared block cache)
#   wall      from the start of the first reader to the end of the last
#   MB/s      bytes delivered to all readers (clones x size) / wall
# After vdiskd's storm its control API's query-stats is asked for its
# daemon-wide counters (not the per-export ones: those go with the exports,
# which close when their readers disconnect) and they are printed.
#
# BS_SIZE_MIB (default 256) is the template size in MiB, BS_CLONES (default
# 32) the number of clones and readers, BS_THREADS (default: the number of
# CPUs) vdiskd's event loop threads, BS_CACHE (default none) the servers'
# cache mode: none (vdiskd --cache none, qemu-nbd --cache=none --aio=native)
# or writeback (vdiskd --cache writeback, qemu-nbd --cache=writeback
# --aio=threads; the page cache then shares the reads for both).  Scratch
# files go to a temporary folder under $TMPDIR (or /tmp), which must be on a
# disk, not tmpfs, for the physical figures to mean anything.
# Exit 0 when every reader read the right data (a missed goal included),
# 1 when a reader or a server fails or the data read is wrong, 77 (skip)
# when nbdcopy, qemu-nbd or qemu-img is missing.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
VDISK=$BUILD/bin/vdisk
VDISKD=$BUILD/bin/vdiskd
SIZE_MIB=${BS_SIZE_MIB:-256}
CLONES=${BS_CLONES:-32}
THREADS=${BS_THREADS:-$(nproc 2>/dev/null || echo 1)}
CACHE=${BS_CACHE:-none}

for v in SIZE_MIB CLONES THREADS; do
    eval "x=\$$v"
    # shellcheck disable=SC2154 # x is set by the eval
    if ! [ "$x" -ge 1 ] 2>/dev/null; then
        echo "bench-bootstorm: $v=$x: need a whole number >= 1" >&2
        exit 1
    fi
done
case $CACHE in
none) QCACHE="--cache=none --aio=native" ;;
writeback) QCACHE="--cache=writeback --aio=threads" ;;
*) echo "bench-bootstorm: BS_CACHE=$CACHE: none or writeback" >&2; exit 1 ;;
esac

for prog in "$VDISK" "$VDISKD"; do
    if [ ! -x "$prog" ]; then
        echo "bench-bootstorm: $prog is not built (run make)" >&2
        exit 1
    fi
done
for t in nbdcopy qemu-nbd qemu-img sha256sum; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "bench-bootstorm: skipped: $t is not installed"
        exit 77
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench-bootstorm.XXXXXX") || exit 1
PIDS=       # every process of ours running now: servers, readers
cleanup() {
    for p in $PIDS; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in $PIDS; do
        wait "$p" 2>/dev/null
    done
    PIDS=
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

STORE=$WORK/store
export VDISK_STORE="$STORE"
RAW=$WORK/template.raw
QBASE=$WORK/base.qcow2
SOCK=$WORK/nbd.sock
SIZE_BYTES=$((SIZE_MIB * 1048576))
status=0

# forget PID: takes PID off $PIDS (it has been waited for).
forget() {
    np=
    for p in $PIDS; do
        [ "$p" = "$1" ] || np="$np $p"
    done
    PIDS=$np
}

# read_bytes PID...: the sum of the processes' read_bytes (/proc/PID/io).
read_bytes() {
    sum=0
    for p in "$@"; do
        b=$(sed -n 's/^read_bytes: *//p' "/proc/$p/io" 2>/dev/null)
        [ -n "$b" ] || { echo "bench-bootstorm: cannot read /proc/$p/io" >&2; echo -1; return; }
        sum=$((sum + b))
    done
    echo "$sum"
}

# wait_sock PID SOCK NAME LOG: waits until the server PID has made SOCK.
wait_sock() {
    i=0
    while ! [ -S "$2" ]; do
        if ! kill -0 "$1" 2>/dev/null; then
            wait "$1" 2>/dev/null
            forget "$1"
            echo "bench-bootstorm: $3 failed to start; its log:" >&2
            tail -n 20 "$4" >&2
            exit 1
        fi
        i=$((i + 1))
        if [ "$i" -ge 400 ]; then
            echo "bench-bootstorm: $3 made no socket $2 within 20 s; its log:" >&2
            tail -n 20 "$4" >&2
            exit 1
        fi
        sleep 0.05
    done
}

# drop_caches FILE...: drops the page cache (as root), else evicts the files.
DROP_NOTE=
drop_caches() {
    sync
    if [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        return 0
    fi
    for f in "$@"; do
        [ -f "$f" ] && dd if="$f" iflag=nocache count=0 status=none 2>/dev/null
    done
    DROP_NOTE="cannot drop the page cache (not root, or /proc/sys read-only): only the
image files were evicted (fadvise), so the physical figures may be low."
    return 0
}

now() { date +%s.%N; }

# storm NAME URI...: one nbdcopy reader per URI, all at once; the first and
# the last read into sha256sum, the others into null:.  Sets $WALL (seconds)
# and $FAILED (readers that failed or read wrong data).
storm() {
    name=$1
    shift
    n=$#
    : >"$WORK/readers-$name.log"
    rpids=
    sums=
    k=0
    t0=$(now)
    for u in "$@"; do
        k=$((k + 1))
        if [ $k = 1 ] || [ $k = "$n" ]; then
            fifo=$WORK/fifo-$name-$k
            mkfifo "$fifo" || exit 1
            sha256sum <"$fifo" >"$WORK/sum-$name-$k" &
            PIDS="$PIDS $!"
            spid=$!
            nbdcopy --connections=1 --no-extents "$u" - >"$fifo" 2>>"$WORK/readers-$name.log" &
            sums="$sums $k:$spid"
        else
            nbdcopy --connections=1 --no-extents "$u" null: 2>>"$WORK/readers-$name.log" &
        fi
        PIDS="$PIDS $!"
        rpids="$rpids $k:$!"
    done
    FAILED=0
    for kp in $rpids; do
        p=${kp#*:}
        wait "$p"
        rc=$?
        forget "$p"
        if [ $rc != 0 ]; then
            echo "bench-bootstorm: $name: reader ${kp%%:*} (nbdcopy) failed with status $rc" >&2
            FAILED=$((FAILED + 1))
        fi
    done
    t1=$(now)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    for kp in $sums; do
        k=${kp%%:*}
        p=${kp#*:}
        wait "$p"
        forget "$p"
        got=$(cut -d' ' -f1 "$WORK/sum-$name-$k")
        if [ "$got" != "$REF_SUM" ]; then
            echo "bench-bootstorm: $name: clone $k read wrong data: sha256 $got, template $REF_SUM" >&2
            FAILED=$((FAILED + 1))
        else
            VERIFIED="$VERIFIED $name:clone$k"
        fi
    done
    if [ -s "$WORK/readers-$name.log" ]; then
        echo "bench-bootstorm: $name: the readers said:" >&2
        sed 's/^/  /' "$WORK/readers-$name.log" | head -n 20 >&2
    fi
}

# ---- the template, the clones, the overlays -----------------------------
echo "== Boot storm: $CLONES clones each reading the same ${SIZE_MIB} MiB of a template at once (nbdcopy, cache $CACHE)"
case $(stat -f -c %T "$WORK" 2>/dev/null) in
tmpfs | ramfs)
    echo "note: $WORK is on tmpfs: read_bytes counts no disk reads there, the physical"
    echo "figures are meaningless; set TMPDIR to a folder on a disk." ;;
esac
t0=$(date +%s)
dd if=/dev/urandom of="$RAW" bs=1M count="$SIZE_MIB" status=none || exit 1
REF_SUM=$(sha256sum "$RAW" | cut -d' ' -f1)
"$VDISK" import -f raw "$RAW" tbase >/dev/null || { echo "bench-bootstorm: vdisk import failed" >&2; exit 1; }
"$VDISK" template create gold --from tbase >/dev/null ||
    { echo "bench-bootstorm: vdisk template create failed" >&2; exit 1; }
"$VDISK" rm tbase >/dev/null || { echo "bench-bootstorm: vdisk rm tbase failed" >&2; exit 1; }
qemu-img convert -f raw -O qcow2 "$RAW" "$QBASE" ||
    { echo "bench-bootstorm: qemu-img convert failed" >&2; exit 1; }
rm -f "$RAW"
i=1
while [ $i -le "$CLONES" ]; do
    "$VDISK" clone gold "clone-$i" >/dev/null ||
        { echo "bench-bootstorm: vdisk clone gold clone-$i failed" >&2; exit 1; }
    qemu-img create -q -f qcow2 -b "$QBASE" -F qcow2 "$WORK/overlay-$i.qcow2" ||
        { echo "bench-bootstorm: qemu-img create overlay-$i failed" >&2; exit 1; }
    i=$((i + 1))
done
sync
echo "template, $CLONES linked clones and $CLONES qcow2 overlays ready in $(($(date +%s) - t0)) s"
echo "vdiskd:   $("$VDISKD" --version 2>/dev/null | head -n 1), --cache $CACHE, --threads $THREADS"
echo "qemu-nbd: $(qemu-nbd --version | head -n 1), $QCACHE, one process per overlay"
echo "nbdcopy:  $(nbdcopy --version | head -n 1), --connections=1 --no-extents, one per clone"
RES=$WORK/results   # lines: server physical-bytes wall-seconds failed
: >"$RES"
VERIFIED=

# ---- the storm against vdiskd ------------------------------------------
drop_caches "$STORE"/layers/*
log=$WORK/vdiskd.log
"$VDISKD" --store "$STORE" --listen "unix:$SOCK" --cache "$CACHE" --threads "$THREADS" \
    --foreground >"$log" 2>&1 &
VPID=$!
PIDS="$PIDS $VPID"
wait_sock "$VPID" "$SOCK" vdiskd "$log"
set --
i=1
while [ $i -le "$CLONES" ]; do
    set -- "$@" "nbd+unix:///clone-$i?socket=$SOCK"
    i=$((i + 1))
done
b0=$(read_bytes "$VPID")
storm vdiskd "$@"
b1=$(read_bytes "$VPID")
echo "vdiskd:   storm over in $WALL s"
kill -0 "$VPID" 2>/dev/null || { echo "bench-bootstorm: vdiskd died during the storm" >&2; FAILED=$((FAILED + 1)); }
[ "$b0" -ge 0 ] && [ "$b1" -ge 0 ] && phys=$((b1 - b0)) || phys=-
echo "vdiskd $phys $WALL $FAILED" >>"$RES"
[ $FAILED = 0 ] || status=1
# The daemon-wide counters of query-stats (a shared block cache's, once it
# exists); the per-export ones closed with their exports.
STATS=$("$VDISK" stats --output json 2>&1)
if command -v jq >/dev/null 2>&1 && echo "$STATS" | jq -e . >/dev/null 2>&1; then
    STATS=$(echo "$STATS" | jq -c 'del(.exports, .connections)')
    [ "$STATS" != "{}" ] || STATS="(none beyond connections: no shared block cache counters yet)"
fi
kill -TERM "$VPID" 2>/dev/null
wait "$VPID"
rc=$?
forget "$VPID"
[ $rc = 0 ] || [ $rc = 143 ] || { echo "bench-bootstorm: vdiskd exited with status $rc after SIGTERM" >&2; status=1; }

# ---- the storm against qemu-nbd -----------------------------------------
drop_caches "$QBASE" "$WORK"/overlay-*.qcow2
set --
QPIDS=
i=1
while [ $i -le "$CLONES" ]; do
    # shellcheck disable=SC2086 # $QCACHE is two options
    qemu-nbd $QCACHE -f qcow2 -k "$WORK/q$i.sock" -x disk --persistent \
        "$WORK/overlay-$i.qcow2" >"$WORK/qemu-nbd-$i.log" 2>&1 &
    PIDS="$PIDS $!"
    QPIDS="$QPIDS $!"
    set -- "$@" "nbd+unix:///disk?socket=$WORK/q$i.sock"
    i=$((i + 1))
done
i=1
for p in $QPIDS; do
    wait_sock "$p" "$WORK/q$i.sock" "qemu-nbd $i" "$WORK/qemu-nbd-$i.log"
    i=$((i + 1))
done
# shellcheck disable=SC2086
b0=$(read_bytes $QPIDS)
storm qemu-nbd "$@"
# shellcheck disable=SC2086
b1=$(read_bytes $QPIDS)
echo "qemu-nbd: storm over in $WALL s"
for p in $QPIDS; do
    kill -0 "$p" 2>/dev/null || { echo "bench-bootstorm: a qemu-nbd died during the storm" >&2; FAILED=$((FAILED + 1)); }
done
[ "$b0" -ge 0 ] && [ "$b1" -ge 0 ] && phys=$((b1 - b0)) || phys=-
echo "qemu-nbd $phys $WALL $FAILED" >>"$RES"
[ $FAILED = 0 ] || status=1
for p in $QPIDS; do
    kill -TERM "$p" 2>/dev/null
done
for p in $QPIDS; do
    wait "$p" 2>/dev/null
    forget "$p"
done

# ---- the table -------------------------------------------------------------
echo
notes=$(grep -v -e ': listening on ' -e ': serving store ' -e ': control socket ' \
    -e ': Terminated: stopping (0 connection' -e ': stopped$' "$log")
if [ -n "$notes" ]; then
    echo "vdiskd logged (beyond start/stop):"
    echo "$notes" | head -n 20 | sed 's/^/  /'
else
    echo "vdiskd logged nothing beyond start/stop."
fi
for f in "$WORK"/qemu-nbd-*.log; do
    [ -s "$f" ] || continue
    echo "qemu-nbd logged ($(basename "$f")):"
    head -n 5 "$f" | sed 's/^/  /'
done
echo "vdiskd query-stats after the storm: $STATS"
echo "data checked (sha256 of all it read = the template's):${VERIFIED:- nothing}"
[ -z "$DROP_NOTE" ] || echo "note: $DROP_NOTE"
echo
awk -v size="$SIZE_BYTES" -v mib="$SIZE_MIB" -v clones="$CLONES" -v cache="$CACHE" '
function num(x) { return x != "-" && x != "" && x + 0 >= 0 }
{ phys[$1] = $2; wall[$1] = $3; failed[$1] = $4; order[++n] = $1 }
END {
    printf "%-9s %6s %9s %13s %10s %9s %8s\n", "server", "clones", "MiB/clone", "physical MiB", "phys/size", "wall s", "MB/s"
    for (i = 1; i <= n; i++) {
        s = order[i]
        p = num(phys[s]) ? sprintf("%.1f", phys[s] / 1048576) : "-"
        r = num(phys[s]) ? sprintf("%.2f", phys[s] / size) : "-"
        mbs = (wall[s] > 0 && failed[s] == 0) ? sprintf("%.0f", clones * size / wall[s] / 1e6) : "-"
        w = failed[s] == 0 ? wall[s] : "FAILED"
        printf "%-9s %6d %9d %13s %10s %9s %8s\n", s, clones, mib, p, r, w, mbs
    }
    v = "vdiskd"; q = "qemu-nbd"
    printf "\n"
    if (!num(phys[v])) g = "- (no figure)"
    else g = (phys[v] <= 1.1 * size ? "met" : "NOT met") sprintf(" (%.2f x)", phys[v] / size)
    printf "goal: vdiskd physical reads <= 1.1 x %d MiB: %s\n", mib, g
    if (cache != "none")
        printf "      (cache %s: the page cache shares the reads; the goal is meant for cache none)\n", cache
    if (num(phys[q])) printf "      qemu-nbd physical reads: %.2f x %d MiB\n", phys[q] / size, mib
    if (failed[v] == 0 && failed[q] == 0 && wall[v] > 0)
        printf "time: qemu-nbd / vdiskd = %.2f (above 1: vdiskd is faster)\n", wall[q] / wall[v]
    else
        printf "time: qemu-nbd / vdiskd = - (a storm failed)\n"
}' "$RES"
exit $status
