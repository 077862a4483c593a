#!/bin/sh
# shellcheck disable=SC2317 # functions run through the trap
# bench-tls.sh - what TLS costs: vdiskd and qemu-nbd each served plain and
# with x509 TLS (certificates made here with openssl), same machine, same
# client, one run.  Figures are printed, never asserted.
#
# The client is nbdcopy (libnbd, GnuTLS), one connection, a fixed number
# of requests in flight: fio's nbd engine cannot take TLS credentials (its
# libnbd handle refuses URIs that name local files).  Rows copy the whole
# disk in 4 KiB requests (32 in flight) and in 1 MiB requests (8 in
# flight), reading (export to null:) and writing (a random file to the
# export), over a unix socket.  qemu-nbd serves a raw file with
# --cache=none --aio=native; vdiskd a volume (O_DIRECT).  Each server
# restarts for every run; the table shows the median of BENCH_TLS_REPEAT
# (default 3) runs, the servers taking turns, the ratios TLS/plain of each
# server, and what TLS costs each: the time it adds per GiB moved (1/TLS -
# 1/plain).  That, not the ratio, is the goal's measure (TLS costs vdiskd
# no more than it costs qemu-nbd): the client's own TLS work caps both
# servers alike, so the faster a server is plain, the lower its ratio.
#
# BENCH_TLS_SIZE (default 512M; K/M/G) is the disk's size.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
VDISK=$BUILD/bin/vdisk
VDISKD=$BUILD/bin/vdiskd
SIZE=${BENCH_TLS_SIZE:-512M}
REPEAT=${BENCH_TLS_REPEAT:-3}

case $SIZE in
*[Kk]) SIZE_MIB=$((${SIZE%?} / 1024)) ;;
*[Mm]) SIZE_MIB=${SIZE%?} ;;
*[Gg]) SIZE_MIB=$((${SIZE%?} * 1024)) ;;
*) SIZE_MIB=$((SIZE / 1048576)) ;;
esac
for prog in "$VDISK" "$VDISKD"; do
    [ -x "$prog" ] || { echo "bench-tls: $prog is not built (run make)" >&2; exit 1; }
done
for prog in nbdcopy openssl; do
    command -v $prog >/dev/null 2>&1 || { echo "bench-tls: skipped: no $prog"; exit 0; }
done
HAVE_QEMU=1
command -v qemu-nbd >/dev/null 2>&1 || HAVE_QEMU=0

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench-tls.XXXXXX") || exit 1
SPID=
cleanup() {
    if [ -n "$SPID" ]; then
        kill -TERM "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
STORE=$WORK/store
export VDISK_STORE="$STORE"
SOCK=$WORK/nbd.sock
RAW=$WORK/disk.raw
SRC=$WORK/src.raw

# ---- credentials: a CA, the server (both servers read the same folder
# layout), a client ----
C=$WORK/certs
fail() { echo "bench-tls: $*" >&2; exit 1; }
. tests/integration/lib/tls.sh
mkca ca
mkcert ca server localhost "$SERVER_EXT"
mkcert ca client client 'extendedKeyUsage=clientAuth'
creds srv server server ca
creds cli client client ca

dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none || exit 1
cp "$SRC" "$RAW"
"$VDISK" import -f raw "$RAW" vol >/dev/null || fail "vdisk import"
sync

echo "== what TLS costs: nbdcopy, one connection, ${SIZE_MIB} MiB, median of $REPEAT"
echo "vdiskd:   $("$VDISKD" --version | head -n 1)"
[ $HAVE_QEMU = 1 ] && echo "qemu-nbd: $(qemu-nbd --version | head -n 1)" ||
    echo "qemu-nbd: not installed, skipped"
echo "nbdcopy:  $(nbdcopy --version | head -n 1), openssl $(openssl version | cut -d' ' -f2)"

wait_sock() {
    i=0
    while ! [ -S "$SOCK" ]; do
        kill -0 "$SPID" 2>/dev/null || fail "$1 did not start: $(tail -n 5 "$2")"
        i=$((i + 1))
        [ $i -lt 400 ] || fail "$1: no socket within 20 s"
        sleep 0.05
    done
}

stop() {
    kill -TERM "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=
    rm -f "$SOCK"
}

# start SERVER MODE: sets $URI.
start() {
    srv=$1 mode=$2
    log=$WORK/$srv-$mode.log
    rm -f "$SOCK"
    if [ "$srv" = vdiskd ]; then
        if [ "$mode" = tls ]; then set -- --tls-certs "$C/srv"; else set --; fi
        "$VDISKD" --store "$STORE" --listen "unix:$SOCK" --foreground "$@" >"$log" 2>&1 &
        SPID=$!
        name=vol
    else
        if [ "$mode" = tls ]; then
            set -- --object "tls-creds-x509,id=t0,dir=$C/srv,endpoint=server" --tls-creds t0
        else
            set --
        fi
        qemu-nbd --cache=none --aio=native -f raw -k "$SOCK" -x disk --persistent "$@" \
            "$RAW" >"$log" 2>&1 &
        SPID=$!
        name=disk
    fi
    wait_sock "$srv" "$log"
    if [ "$mode" = tls ]; then
        URI="nbds+unix:///$name?socket=$SOCK&tls-certificates=$C/cli"
    else
        URI="nbd+unix:///$name?socket=$SOCK"
    fi
}

# run ROW: prints MB/s, or "-".
run() {
    case $1 in
    read4k) set -- --request-size=4096 --requests=32 "$URI" null: ;;
    read1m) set -- --request-size=1048576 --requests=8 "$URI" null: ;;
    write4k) set -- --request-size=4096 --requests=32 "$SRC" "$URI" ;;
    write1m) set -- --request-size=1048576 --requests=8 "$SRC" "$URI" ;;
    esac
    t0=$(date +%s.%N)
    if ! nbdcopy --connections=1 --no-extents "$@" 2>"$WORK/nbdcopy.err"; then
        echo "bench-tls: nbdcopy $*: $(cat "$WORK/nbdcopy.err")" >&2
        echo "-"
        return
    fi
    t1=$(date +%s.%N)
    echo "$t0 $t1 $SIZE_MIB" | awk '{ printf "%.0f\n", $3 * 1.048576 / ($2 - $1) }'
}

RES=$WORK/results
: >"$RES"
for row in read4k write4k read1m write1m; do
    printf '%-8s:' $row
    rep=0
    while [ $rep -lt "$REPEAT" ]; do
        rep=$((rep + 1))
        for srv in vdiskd qemu; do
            [ $srv = qemu ] && [ $HAVE_QEMU = 0 ] && continue
            for m in plain tls; do
                start $srv $m
                echo "$row $srv-$m $(run $row)" >>"$RES"
                stop
                printf ' %s/%s' $srv $m
            done
        done
    done
    echo
done

echo
awk '
function num(x) { return x != "-" && x != "" && x + 0 > 0 }
function median(list,   v, n, i, j, t) {
    n = split(list, v, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function ratio(a, b) { return (num(a) && num(b)) ? sprintf("%.2f", a / b) : "-" }
{
    if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    if (num($3)) l[$1, $2] = l[$1, $2] " " $3
}
END {
    printf "%-8s %9s %9s %9s %9s %8s %8s %9s\n", "MB/s", "vdiskd", "vdiskd+tls", "qemu-nbd", "qemu+tls", "v tls/pl", "q tls/pl", "vtls/qtls"
    for (i = 1; i <= n; i++) {
        r = order[i]
        vp = median(l[r, "vdiskd-plain"]); vt = median(l[r, "vdiskd-tls"])
        qp = median(l[r, "qemu-plain"]); qt = median(l[r, "qemu-tls"])
        printf "%-8s %9s %9s %9s %9s %8s %8s %9s\n", r, vp, vt, qp, qt, ratio(vt, vp), ratio(qt, qp), ratio(vt, qt)
        if (num(vt) && num(vp) && num(qt) && num(qp)) {
            # seconds TLS adds per GiB (MB/s are 10^6 bytes a second)
            vc = 1073.741824 * (1 / vt - 1 / vp); qc = 1073.741824 * (1 / qt - 1 / qp)
            goals = goals sprintf("  %-8s TLS adds %.2f s/GiB to vdiskd, %.2f s/GiB to qemu-nbd: %s\n", r,
                                  vc, qc, (vc <= qc) ? "met" : "NOT met")
        }
    }
    printf "\nGoal (figures only): TLS costs vdiskd no more than it costs qemu-nbd\n%s", goals
}' "$RES"
