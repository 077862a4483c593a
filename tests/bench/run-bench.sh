#!/bin/sh
# The benchmarks of `make bench`.  Figures are printed, never asserted.
#
#   1. write amplification of 4 KiB random writes into a fresh delta over a
#      full base (build/bench/bench-wamp)
#   2. 4 KiB read throughput through chains of depth 1, 16 and 64
#      (build/bench/bench-read), side by side with `qemu-img bench` on a
#      qcow2 chain of the same depths, in the same run, with the same reads:
#      qemu-img bench reads with a fixed step (-S), not at random, so
#      bench-read times that very sequence too (--pattern step=S) and the
#      ratios vdisk/qemu compare like with like.  Both use O_DIRECT and
#      Linux native AIO with 32 reads in flight.
#   3. store operations (build/bench/bench-store ops): snapshot create,
#      rollback and linked clone on a 1 TiB volume (64 MiB of data spread
#      over it), with a handful of clones of one template in the store and
#      again after 1,000 linked clones of it exist; medians side by side with
#      the ratio after/before (goal: milliseconds, flat).
#   4. snapshot commit time against the data changed since the snapshot
#      (build/bench/bench-store commit): 16, 64 and 256 MiB changed on a
#      1 GiB volume, side by side with `qemu-img commit` of the same change
#      on a qcow2 base + overlay and with copying that much data with
#      dd conv=fdatasync (goal: close to copying that data).
#   5. NBD servers (tests/bench/bench-nbd.sh): fio's nbd engine against
#      vdiskd, qemu-nbd and nbdkit on fresh overlays of one filled 2 GiB
#      template, 4 KiB random and 1 MiB sequential reads and writes, plus
#      fio on the raw file as the local limit; ratios and goals printed.
#   6. boot storm (tests/bench/bench-bootstorm.sh): 32 linked clones of one
#      256 MiB template read all of it at once (nbdcopy), served by vdiskd
#      and by qemu-nbd on 32 qcow2 overlays; physical bytes read by the
#      servers (goal: at most 1.1 x the template) and the wall time.
#   7. guest writes during a background commit (tests/bench/bench-commit.sh):
#      fio through vdiskd on a filled 2 GiB volume with 1 GiB written after
#      snapshot s1, 4 KiB random and 1 MiB sequential writes without a
#      commit and while snapshot-commit of s1 runs (control socket); the
#      ratio during/without (goal: at least 0.7), the commit's time, rate
#      and pause.
#   8. image conversion (tests/bench/bench-convert.sh): vdisk img convert
#      qcow2 -> vdk, vdk -> qcow2, vmdk -> vdk (and raw <-> qcow2/vmdk) of a
#      4 GiB disk half full, side by side with qemu-img convert of the same
#      images (goal: at least as fast).
#   9. what TLS costs (tests/bench/bench-tls.sh): nbdcopy through vdiskd and
#      through qemu-nbd, each plain and with x509 TLS, 4 KiB and 1 MiB
#      requests both ways; the ratios TLS/plain (goal: vdiskd's at least
#      qemu-nbd's).
#
# BENCH_SIZE_MIB (default 256) and BENCH_OPS (reads per run, default 200000)
# scale 1 and 2; BENCH_STORE_CLONES (default 1000), BENCH_STORE_RUNS
# (default 7) and BENCH_COMMIT_RUNS (default 5) scale 3 and 4, which take
# about a minute together.  The defaults take a few minutes.  Scratch files
# go to a temporary folder under $TMPDIR (or /tmp), removed at the end.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
OPS=${BENCH_OPS:-200000}
QD=32
DEPTHS="1 16 64"
# An odd number of 4 KiB units: modulo the disk size the sequence visits
# every 4 KiB of the disk once, far apart from one read to the next.
STEP=$((4096 * 7919))

for prog in bench-wamp bench-read bench-store; do
    if [ ! -x "$BUILD/bench/$prog" ]; then
        echo "run-bench: $BUILD/bench/$prog is not built (run make)" >&2
        exit 1
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT INT TERM

echo "== Write amplification: 4 KiB random writes into a delta over a full base"
"$BUILD/bench/bench-wamp" --size "$SIZE_MIB" --writes 20000 --flush-every 1000 || exit 1
echo

# qemu-img bench wraps its offset modulo the image size up to qemu 10.0 and
# modulo (size - request size) from 10.1 on: mirror the installed one.
WRAP=size
if command -v qemu-img >/dev/null 2>&1; then
    QEMU_VERSION=$(qemu-img --version | sed -n 's/^qemu-img version \([0-9]*\.[0-9]*\).*/\1/p')
    case $QEMU_VERSION in
    [0-9].* | 10.0) ;;
    ?*) WRAP=usable ;;
    esac
fi

echo "== Read throughput: 4 KiB reads, $QD in flight, $OPS per run, ${SIZE_MIB} MiB disk"
set --
for d in $DEPTHS; do
    set -- "$@" --depth "$d"
done
"$BUILD/bench/bench-read" --dir "$WORK/vdk" --size "$SIZE_MIB" --ops "$OPS" --qd "$QD" \
    "$@" --pattern random --pattern "step=$STEP" --wrap "$WRAP" | tee "$WORK/vdk.out"
[ -s "$WORK/vdk.out" ] || exit 1
echo

# The IOPS of one bench-read result line.
vdk_iops() {
    awk -v d="$1" -v p="$2" '$1 == "result" {
        split($0, f, " "); ok = 0; v = ""
        for (i in f) {
            if (f[i] == "depth=" d) ok++
            if (f[i] == "pattern=" p) ok++
            if (f[i] ~ /^iops=/) v = substr(f[i], 6)
        }
        if (ok == 2) print v
    }' "$WORK/vdk.out"
}

# The qemu-img side of the read benchmark (skipped without qemu-img/qemu-io;
# a failure to build its chain ends the script, as before).
qemu_read_bench() {
if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1; then
    echo "== qemu-img comparison skipped: qemu-img/qemu-io not installed (qemu-utils)"
    return 0
fi

echo "== qemu-img bench on a qcow2 chain (qemu $QEMU_VERSION, 64 KiB clusters)"
t0=$(date +%s)
# The base: fully allocated with data, like the vdk base.
if ! dd if=/dev/urandom of="$WORK/base.raw" bs=1M count="$SIZE_MIB" status=none ||
   ! qemu-img convert -f raw -O qcow2 "$WORK/base.raw" "$WORK/q-01.qcow2"; then
    echo "run-bench: cannot make the qcow2 base" >&2
    exit 1
fi
rm -f "$WORK/base.raw"
blocks=$((SIZE_MIB * 256))
d=2
while [ $d -le 64 ]; do
    prev=$(printf 'q-%02d.qcow2' $((d - 1)))
    cur=$(printf 'q-%02d.qcow2' $d)
    qemu-img create -q -f qcow2 -b "$prev" -F qcow2 "$WORK/$cur" || exit 1
    # A few random 4 KiB writes in each overlay, as in the vdk deltas.
    cmds=$(awk -v seed="$d" -v n="$blocks" 'BEGIN { srand(seed)
        for (i = 0; i < 8; i++) printf "-c\nwrite -q -P %d %d 4k\n", seed, int(rand() * n) * 4096 }')
    old_ifs=$IFS
    IFS='
'
    # shellcheck disable=SC2086
    qemu-io -f qcow2 $cmds "$WORK/$cur" >/dev/null || { IFS=$old_ifs; exit 1; }
    IFS=$old_ifs
    d=$((d + 1))
done
echo "built a qcow2 chain of 64 images in $(($(date +%s) - t0)) s"

printf '\n%-7s %14s %14s %8s %14s\n' depth "vdisk step" "qemu step" ratio "vdisk random"
printf '%-7s %14s %14s %8s %14s\n' "" "(IOPS)" "(IOPS)" "v/q" "(IOPS)"
for d in $DEPTHS; do
    img=$(printf '%s/q-%02d.qcow2' "$WORK" "$d")
    out=$(qemu-img bench -f qcow2 -c "$OPS" -d "$QD" -s 4096 -S "$STEP" -t none -n "$img" 2>&1)
    secs=$(echo "$out" | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
    if [ -z "$secs" ]; then
        echo "run-bench: qemu-img bench failed at depth $d:" >&2
        echo "$out" >&2
        continue
    fi
    q=$(awk -v n="$OPS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    v=$(vdk_iops "$d" "step=$STEP")
    r=$(vdk_iops "$d" random)
    ratio=$(awk -v v="$v" -v q="$q" 'BEGIN { if (q > 0 && v != "") printf "%.2f", v / q; else print "-" }')
    printf '%-7s %14s %14s %8s %14s\n' "$d" "${v:--}" "$q" "$ratio" "${r:--}"
done
rm -f "$WORK"/q-*.qcow2
}
qemu_read_bench
echo

status=0
CLONES=${BENCH_STORE_CLONES:-1000}
echo "== Store operations on a 1 TiB volume, before and after $CLONES linked clones of one template"
"$BUILD/bench/bench-store" ops --dir "$WORK" --clones "$CLONES" \
    --runs "${BENCH_STORE_RUNS:-7}" || status=1
echo

echo "== Snapshot commit against the data changed, beside qemu-img commit and a plain copy"
"$BUILD/bench/bench-store" commit --dir "$WORK" --base-mib 1024 --changes 16,64,256 \
    --runs "${BENCH_COMMIT_RUNS:-5}" || status=1
echo

# 5. vdiskd beside qemu-nbd and nbdkit through fio's nbd engine (bench-nbd.sh;
#    BENCH_NBD_SIZE, default 2G, and BENCH_NBD_TIME, default 10 s per run).
BUILD=$BUILD sh tests/bench/bench-nbd.sh || status=1
echo

# 6. the boot storm (bench-bootstorm.sh; BS_CLONES, default 32, and
#    BS_SIZE_MIB, default 256); 77 means skipped (a tool is missing).
BUILD=$BUILD sh tests/bench/bench-bootstorm.sh
rc=$?
[ $rc = 0 ] || [ $rc = 77 ] || status=1
echo

# 7. guest writes during a background commit (bench-commit.sh; BC_SIZE_MIB,
#    default 2048, BC_DELTA_MIB, default 1024, BC_RUNTIME, default 8 s);
#    77 means skipped (a tool is missing).
BUILD=$BUILD sh tests/bench/bench-commit.sh
rc=$?
[ $rc = 0 ] || [ $rc = 77 ] || status=1
echo

# 8. image conversion beside qemu-img convert (bench-convert.sh;
#    BCV_SIZE_MIB, default 4096, half full; BCV_REPEAT, default 5);
#    77 means skipped (a tool is missing).
BUILD=$BUILD sh tests/bench/bench-convert.sh
rc=$?
[ $rc = 0 ] || [ $rc = 77 ] || status=1
echo

# 9. what TLS costs, vdiskd beside qemu-nbd (bench-tls.sh; BENCH_TLS_SIZE,
#    default 512M; BENCH_TLS_REPEAT, default 3).
BUILD=$BUILD sh tests/bench/bench-tls.sh || status=1
echo

echo "Goals: vdisk depth 64 / depth 1 >= 0.9 (see the bench-read table above);"
echo "write amplification (data) <= 1.1; snapshot create, rollback and linked clone"
echo "in milliseconds, after/before close to 1; commit close to the copy time;"
echo "boot storm: vdiskd's physical reads at most 1.1 x the template;"
echo "guest writes during a background commit at least 0.7 x without one;"
echo "image conversion at least as fast as qemu-img convert (ratio >= 1.0);"
echo "TLS costs vdiskd no more than it costs qemu-nbd."
exit $status
