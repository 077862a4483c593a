#!/bin/sh
# shellcheck disable=SC2317 # functions run through "start_$srv" and the trap
# bench-nbd.sh - vdiskd beside qemu-nbd and nbdkit, same machine, same client,
# one run.  Figures are printed, never asserted.
#
# One filled raw file (random data) is the template of all three servers:
#   vdiskd    a store; the file imported as a volume, `vdisk template create`,
#             a linked clone per row, served on a unix socket, --cache none
#             (O_DIRECT, the default), and again with --cache writeback (the
#             page cache, column vdiskd-wb)
#   qemu-nbd  the file converted to a qcow2 base, a fresh qcow2 overlay per
#             row, --cache=none --aio=native, on a unix socket
#   nbdkit    the file plugin on the raw file under the cow filter (a fresh
#             in-memory/temporary overlay each time nbdkit starts), on a unix
#             socket; nbdkit's file plugin reads through the page cache
# and fio's nbd engine (libnbd, one connection) drives each of them:
#   4 KiB random read and write at iodepth 32, 1 MiB sequential read and write
#   at iodepth 8, a fixed time each, plus fio on a copy of the raw file with
#   libaio and O_DIRECT as the local limit.
# Every row of every server runs on a fresh overlay (server restarted, clone
# recreated), so writes of one row never change what the next one reads.
# Before each run the base files are evicted from the page cache (fadvise
# DONTNEED through dd iflag=nocache) so all servers start cold.
#
# BENCH_NBD_SIZE (default 2G; K/M/G suffixes) is the template size,
# BENCH_NBD_TIME (default 6) the seconds per run, BENCH_NBD_RAMP (default 1)
# the warm-up seconds fio leaves out, BENCH_NBD_REPEAT (default 3) how many
# times each row runs: the servers take turns within each repetition, and
# the table shows the median of each, since a virtual machine's disk and
# CPUs vary by tens of percent from one run to the next.  A peer that is not installed is
# skipped (shown as "-").  Exit 0 unless a server fails to start (or the
# setup fails); 0 with a note when fio or its nbd engine is missing.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
VDISK=$BUILD/bin/vdisk
VDISKD=$BUILD/bin/vdiskd
SIZE=${BENCH_NBD_SIZE:-2G}
TIME=${BENCH_NBD_TIME:-6}
RAMP=${BENCH_NBD_RAMP:-1}
REPEAT=${BENCH_NBD_REPEAT:-3}

case $SIZE in
*[Kk]) SIZE_MIB=$((${SIZE%?} / 1024)) ;;
*[Mm]) SIZE_MIB=${SIZE%?} ;;
*[Gg]) SIZE_MIB=$((${SIZE%?} * 1024)) ;;
*) SIZE_MIB=$((SIZE / 1048576)) ;;
esac
if ! [ "$SIZE_MIB" -ge 16 ] 2>/dev/null; then
    echo "bench-nbd: BENCH_NBD_SIZE=$SIZE: need at least 16M" >&2
    exit 1
fi

for prog in "$VDISK" "$VDISKD"; do
    if [ ! -x "$prog" ]; then
        echo "bench-nbd: $prog is not built (run make)" >&2
        exit 1
    fi
done
if ! command -v fio >/dev/null 2>&1 || ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "bench-nbd: skipped: fio with its nbd engine is not installed"
    exit 0
fi
HAVE_QEMU=1
command -v qemu-nbd >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1 || HAVE_QEMU=0
HAVE_NBDKIT=1
{ command -v nbdkit >/dev/null 2>&1 && nbdkit --filter=cow null --dump-plugin >/dev/null 2>&1; } ||
    HAVE_NBDKIT=0

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench-nbd.XXXXXX") || exit 1
SPID=       # the server running now
cleanup() {
    if [ -n "$SPID" ]; then
        kill -TERM "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
        SPID=
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

STORE=$WORK/store
export VDISK_STORE="$STORE"
RAW=$WORK/template.raw
LOCAL=$WORK/local.raw
QBASE=$WORK/base.qcow2
SOCK=$WORK/nbd.sock

fail_start() {
    echo "bench-nbd: $1 failed to start; its log:" >&2
    tail -n 20 "$2" >&2
    exit 1
}

# wait_sock NAME LOG: waits until the server $SPID has made $SOCK.
wait_sock() {
    i=0
    while ! [ -S "$SOCK" ]; do
        if ! kill -0 "$SPID" 2>/dev/null; then
            wait "$SPID" 2>/dev/null
            SPID=
            fail_start "$1" "$2"
        fi
        i=$((i + 1))
        [ "$i" -lt 400 ] || fail_start "$1 (no socket within 20 s)" "$2"
        sleep 0.05
    done
}

# stop_server: SIGTERM and wait; says so when the server did not exit 0.
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    wait "$SPID"
    rc=$?
    [ $rc = 0 ] || [ $rc = 143 ] || echo "bench-nbd: $1 exited with status $rc after SIGTERM (log $2)" >&2
    SPID=
    rm -f "$SOCK"
}

# evict FILE...: drops the files' clean pages from the page cache.
evict() {
    for f in "$@"; do
        [ -f "$f" ] && dd if="$f" iflag=nocache count=0 status=none 2>/dev/null
    done
    return 0
}

# ---- the template --------------------------------------------------------
echo "== NBD servers: fio's nbd engine, ${SIZE_MIB} MiB filled template, ${TIME} s per run, median of ${REPEAT}"
t0=$(date +%s)
dd if=/dev/urandom of="$RAW" bs=1M count="$SIZE_MIB" status=none || exit 1
cp "$RAW" "$LOCAL" || exit 1
"$VDISK" import -f raw "$RAW" tbase >/dev/null || { echo "bench-nbd: vdisk import failed" >&2; exit 1; }
"$VDISK" template create gold --from tbase >/dev/null ||
    { echo "bench-nbd: vdisk template create failed" >&2; exit 1; }
"$VDISK" rm tbase >/dev/null 2>&1 || true
if [ $HAVE_QEMU = 1 ]; then
    qemu-img convert -f raw -O qcow2 "$RAW" "$QBASE" ||
        { echo "bench-nbd: qemu-img convert failed" >&2; exit 1; }
fi
sync
echo "template ready in $(($(date +%s) - t0)) s (vdisk store, qcow2 base, raw file)"
echo "vdiskd:   $("$VDISKD" --version 2>/dev/null | head -n 1)"
[ $HAVE_QEMU = 1 ] && echo "qemu-nbd: $(qemu-nbd --version | head -n 1)"
[ $HAVE_QEMU = 1 ] || echo "qemu-nbd: not installed, skipped"
[ $HAVE_NBDKIT = 1 ] && echo "nbdkit:   $(nbdkit --version | head -n 1)"
[ $HAVE_NBDKIT = 1 ] || echo "nbdkit:   not installed (or no cow filter), skipped"
echo "fio:      $(fio --version)"

# ---- servers: start_SERVER ROW starts one on $SOCK on a fresh overlay, ----
# ---- sets $SPID and $EXPORT --------------------------------------------

start_vdiskd() {
    start_vdisk_cache none "$1"
}

start_vdiskwb() {
    start_vdisk_cache writeback "$1"
}

# start_vdisk_cache MODE ROW
start_vdisk_cache() {
    cache=$1
    shift
    vol=clone-$1
    "$VDISK" rm "$vol" >/dev/null 2>&1
    "$VDISK" clone gold "$vol" >/dev/null || { echo "bench-nbd: vdisk clone gold $vol failed" >&2; exit 1; }
    evict "$STORE"/* "$STORE"/*/* "$STORE"/*/*/*
    log=$WORK/vdiskd-$1.log
    "$VDISKD" --store "$STORE" --listen "unix:$SOCK" --cache "$cache" --foreground >"$log" 2>&1 &
    SPID=$!
    wait_sock vdiskd "$log"
    EXPORT=$vol
}

start_qemu() {
    ov=$WORK/overlay-$1.qcow2
    rm -f "$ov"
    qemu-img create -q -f qcow2 -b "$QBASE" -F qcow2 "$ov" || exit 1
    evict "$QBASE"
    log=$WORK/qemu-nbd-$1.log
    qemu-nbd --cache=none --aio=native -f qcow2 -k "$SOCK" -x disk --persistent "$ov" >"$log" 2>&1 &
    SPID=$!
    wait_sock qemu-nbd "$log"
    EXPORT=disk
}

start_nbdkit() {
    evict "$RAW"
    log=$WORK/nbdkit-$1.log
    # The cow filter keeps its overlay in a temporary file under TMPDIR.
    TMPDIR=$WORK nbdkit --foreground --exit-with-parent -U "$SOCK" --filter=cow file "$RAW" >"$log" 2>&1 &
    SPID=$!
    wait_sock nbdkit "$log"
    EXPORT=disk
}

# fio_run LABEL RW BS QD ENGINE-ARGS...: prints "IOPS KiB/s", or "- -".
fio_run() {
    label=$1 rw=$2 bs=$3 qd=$4
    shift 4
    out=$WORK/fio-$label.txt
    if ! fio --name="$label" --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 \
            --time_based --runtime="$TIME" --ramp_time="$RAMP" --randrepeat=1 --norandommap \
            --output-format=terse --terse-version=3 "$@" >"$out" 2>"$out.err"; then
        echo "bench-nbd: fio $label failed:" >&2
        cat "$out.err" "$out" >&2
        echo "- -"
        return 0
    fi
    awk -F';' -v rw="$rw" '$1 == "3" {
        if ($5 != 0) { print "- -"; exit }
        if (rw ~ /read/) print $8, $7; else print $49, $48
        exit
    }' "$out"
}

# ---- the runs ---------------------------------------------------------------
# Rows: name rw bs iodepth.  Reads first (they would not care anyway: each
# run has its own fresh overlay).
ROWS="randread:randread:4k:32 randwrite:randwrite:4k:32 seqread:read:1M:8 seqwrite:write:1M:8"
RES=$WORK/results   # lines: row server iops kibs
: >"$RES"
: >"$WORK/vdiskd-notes"

for row in $ROWS; do
    IFS=: read -r name rw bs qd <<EOF
$row
EOF
    printf '%-10s %-9s bs %-2s iodepth %-2s:' "$name" "$rw" "$bs" "$qd"
    rep=0
    while [ $rep -lt "$REPEAT" ]; do
    rep=$((rep + 1))
    printf ' [%s]' "$rep"

    evict "$LOCAL"
    r=$(fio_run "$name-local" "$rw" "$bs" "$qd" --ioengine=libaio --direct=1 --filename="$LOCAL" --size="${SIZE_MIB}M")
    echo "$name local $r" >>"$RES"
    printf ' local'

    for srv in vdiskd vdiskwb qemu nbdkit; do
        case $srv in
        qemu) [ $HAVE_QEMU = 1 ] || { echo "$name $srv - -" >>"$RES"; continue; } ;;
        nbdkit) [ $HAVE_NBDKIT = 1 ] || { echo "$name $srv - -" >>"$RES"; continue; } ;;
        esac
        "start_$srv" "$name"
        r=$(fio_run "$name-$srv" "$rw" "$bs" "$qd" --ioengine=nbd \
            --uri="nbd+unix:///$EXPORT?socket=$SOCK")
        echo "$name $srv $r" >>"$RES"
        stop_server "$srv" "$log"
        # Anything but vdiskd's usual start/stop lines is kept for the end.
        if [ $srv = vdiskd ] || [ $srv = vdiskwb ]; then
            grep -v -e ': listening on ' -e ': serving store ' -e ': Terminated: stopping (0 connection' \
                -e ': stopped$' "$log" | sed "s/^/  $name: /" >>"$WORK/vdiskd-notes"
        fi
        if [ $srv = qemu ]; then rm -f "$WORK/overlay-$name.qcow2"; fi
        case $srv in vdisk*) "$VDISK" rm "clone-$name" >/dev/null 2>&1 ;; esac
        case $srv in
        qemu) printf ' qemu-nbd' ;;
        vdiskwb) printf ' vdiskd-wb' ;;
        *) printf ' %s' $srv ;;
        esac
    done
    done
    echo
done

# ---- the table -------------------------------------------------------------
echo
if [ -s "$WORK/vdiskd-notes" ]; then
    echo "vdiskd logged (beyond start/stop):"
    cat "$WORK/vdiskd-notes"
else
    echo "vdiskd logged nothing beyond start/stop."
fi
[ $HAVE_NBDKIT = 0 ] ||
    echo "note: nbdkit's file plugin and its cow overlay go through the page cache (no O_DIRECT)."
echo
awk -v size="$SIZE_MIB" '
function num(x) { return x != "-" && x != "" && x + 0 > 0 }
# median of the space-separated figures in list ("-" when none)
function median(list,   v, n, i, j, t) {
    n = split(list, v, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function ratio(a, b) { return (num(a) && num(b)) ? sprintf("%.2f", a / b) : "-" }
function show(x, seq) { return !num(x) ? "-" : seq ? sprintf("%.0f", x * 1024 / 1e6) : sprintf("%.0f", x) }
{
    if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    if (num($3)) { iopsl[$1, $2] = iopsl[$1, $2] " " $3; kibl[$1, $2] = kibl[$1, $2] " " $4 }
}
END {
    for (k in iopsl) { iops[k] = median(iopsl[k]); kib[k] = median(kibl[k]) }
    printf "%-10s %5s %8s %8s %9s %8s %8s %7s %7s %7s\n", "row", "unit", "local", "vdiskd", "vdiskd-wb", "qemu-nbd", "nbdkit", "v/qemu", "wb/kit", "v/local"
    goals = ""
    for (i = 1; i <= n; i++) {
        r = order[i]; seq = (r ~ /^seq/)
        unit = seq ? "MB/s" : "IOPS"
        # the compared figure: IOPS for 4 KiB rows, bandwidth for 1 MiB rows
        v = seq ? kib[r, "vdiskd"] : iops[r, "vdiskd"]
        w = seq ? kib[r, "vdiskwb"] : iops[r, "vdiskwb"]
        q = seq ? kib[r, "qemu"] : iops[r, "qemu"]
        k = seq ? kib[r, "nbdkit"] : iops[r, "nbdkit"]
        l = seq ? kib[r, "local"] : iops[r, "local"]
        printf "%-10s %5s %8s %8s %9s %8s %8s %7s %7s %7s\n", r, unit, show(l, seq), show(v, seq), show(w, seq), show(q, seq), show(k, seq), ratio(v, q), ratio(w, k), ratio(v, l)
        best = 0; who = ""
        if (num(q) && q + 0 > best) { best = q + 0; who = "qemu-nbd" }
        if (num(k) && k + 0 > best) { best = k + 0; who = "nbdkit" }
        if (!num(v)) g = "vdiskd failed"
        else if (best == 0) g = "no peer"
        else g = (v + 0 >= best) ? sprintf("met (%.2fx %s)", v / best, who) : sprintf("NOT met (%.2fx %s)", v / best, who)
        goals = goals sprintf("  %-10s vdiskd (default, O_DIRECT) >= best peer:       %s\n", r, g)
        g = !(num(v) && num(q)) ? "-" : (v + 0 >= q + 0) ? sprintf("met (%.2fx)", v / q) : sprintf("NOT met (%.2fx)", v / q)
        goals = goals sprintf("  %-10s O_DIRECT:   vdiskd    >= qemu-nbd cache=none: %s\n", r, g)
        g = !(num(w) && num(k)) ? "-" : (w + 0 >= k + 0) ? sprintf("met (%.2fx)", w / k) : sprintf("NOT met (%.2fx)", w / k)
        goals = goals sprintf("  %-10s page cache: vdiskd-wb >= nbdkit:              %s\n", r, g)
        if (r == "randread") {
            if (num(v) && num(l)) lg = (v / l >= 0.8) ? sprintf("met (%.2f of local)", v / l) : sprintf("NOT met (%.2f of local)", v / l)
            else lg = "-"
        }
    }
    printf "\nGoals (figures only, not asserted; the last two lines of each row compare\nservers that use the same cache):\n%s", goals
    printf "  randread   vdiskd >= 0.8 x local: %s\n", lg
}' "$RES"
exit 0
