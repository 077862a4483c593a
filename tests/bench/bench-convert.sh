#!/bin/sh
# shellcheck disable=SC2317 # functions run through the trap
# bench-convert.sh - image conversion throughput of `vdisk img convert`
# side by side with `qemu-img convert` of the same images, in the same run.
# Figures are printed, never asserted.
#
# Setup: a BCV_SIZE_MIB (default 4096) MiB disk, half full: random data in
# every other MiB (fast pseudo-random bytes, so nothing compresses or
# dedups), written as a sparse raw file; qemu-img converts it to the qcow2
# (64 KiB clusters) and VMDK (monolithicSparse, 64 KiB grains) sources, and
# vdisk to the vdk source (64 KiB blocks).
#
# Rows (the issue's three first, then the same conversion by both tools):
#   qcow2 -> vdk    vdisk  | qemu-img qcow2 -> qcow2 (qemu's own format
#   vdk -> qcow2    vdisk  | qemu-img qcow2 -> qcow2  in vdk's place: it
#   vmdk -> vdk     vdisk  | qemu-img vmdk -> qcow2   cannot read or write vdk)
#   qcow2 -> raw, raw -> qcow2, vmdk -> raw, raw -> vmdk: both tools
# Every run writes a new output file (removed before the next run), and
# ends with the output on disk: vdisk syncs what it wrote before it exits;
# qemu-img's default for convert does not flush the output, so its time
# includes `sync FILE` after it.  Before every run everything is synced and,
# when this runs as root, the page cache is dropped: both tools then read
# their source from the disk, and no writeback of an earlier run is still
# going on (without root the sources are read once first, and the cache is
# warm for both; the header says which).  BCV_REPEAT (default 5) runs per
# tool and row, alternating which tool goes first; medians are shown.
#
# Columns: seconds, MB/s of data (the MiB written into the disk / time),
# and the ratio qemu-img time / vdisk time: at least 1.0 means vdisk is at
# least as fast (the goal).
#
# Exit 0 when every conversion worked (a missed goal included), 1 when one
# failed, 77 (skip) when qemu-img or /usr/bin/python3 is missing.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
VDISK=$BUILD/bin/vdisk
PY=/usr/bin/python3
SIZE_MIB=${BCV_SIZE_MIB:-4096}
REPEAT=${BCV_REPEAT:-5}

if ! [ "$SIZE_MIB" -ge 2 ] 2>/dev/null || ! [ "$REPEAT" -ge 1 ] 2>/dev/null; then
    echo "bench-convert: BCV_SIZE_MIB=$SIZE_MIB (>= 2), BCV_REPEAT=$REPEAT (>= 1)" >&2
    exit 1
fi
if [ ! -x "$VDISK" ]; then
    echo "bench-convert: $VDISK is not built (run make)" >&2
    exit 1
fi
if ! command -v qemu-img >/dev/null 2>&1; then
    echo "bench-convert: skipped: qemu-img is not installed (qemu-utils)"
    exit 77
fi
if ! [ -x "$PY" ]; then
    echo "bench-convert: skipped: $PY is not installed"
    exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/vdisk-bench-convert.XXXXXX") || exit 1
cleanup() {
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

DATA_MIB=$((SIZE_MIB / 2))
echo "bench-convert: a ${SIZE_MIB} MiB disk with ${DATA_MIB} MiB of random data (every other MiB)"

# The raw source: random 1 MiB chunks at even MiB offsets, holes between.
"$PY" - "$WORK/src.raw" "$SIZE_MIB" <<'PYEOF' || exit 1
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261125)
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range(0, mib, 2):
        f.seek(i << 20)
        f.write(rng.randbytes(1 << 20))
PYEOF
qemu-img convert -f raw -O qcow2 "$WORK/src.raw" "$WORK/src.qcow2" || exit 1
qemu-img convert -f raw -O vmdk "$WORK/src.raw" "$WORK/src.vmdk" || exit 1
"$VDISK" img convert -f raw -O vdk "$WORK/src.raw" "$WORK/src.vdk" || exit 1
sync
if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    COLD=1
    echo "bench-convert: cold page cache before every run (dropped as root)"
else
    COLD=0
    echo "bench-convert: warm page cache (not root: the caches cannot be dropped)"
    for f in src.raw src.qcow2 src.vmdk src.vdk; do
        cat "$WORK/$f" >/dev/null
    done
fi

status=0

# time_one OUT CMD...: runs CMD (OUT removed before), prints its seconds,
# or "nan" when it failed (row then sets the exit status: this runs in a
# subshell).
time_one() {
    out=$1
    shift
    rm -f "$out"
    sync
    [ "$COLD" = 0 ] || echo 3 >/proc/sys/vm/drop_caches
    t0=$("$PY" -c 'import time; print(time.monotonic())')
    if ! "$@" >"$WORK/cmd.log" 2>&1; then
        echo "bench-convert: failed: $*" >&2
        cat "$WORK/cmd.log" >&2
        echo "nan"
        return
    fi
    t1=$("$PY" -c 'import time; print(time.monotonic())')
    "$PY" -c "print('%.3f' % ($t1 - $t0))"
}

# qemu-img convert, then the output made durable as vdisk's is.
qemu_convert() {
    out=$(eval "echo \${$#}")
    qemu-img convert "$@" && sync "$out"
}

median() {
    "$PY" -c 'import sys, statistics
v = [float(x) for x in sys.argv[1:] if x != "nan"]
print("%.3f" % statistics.median(v) if v else "nan")' "$@"
}

printf '\n%-16s %-22s %9s %9s %9s %9s %7s\n' "conversion" "qemu-img does" \
    "vdisk s" "vdisk MB/s" "qemu s" "qemu MB/s" "ratio"

# row NAME QEMU-LABEL VDISK-ARGS... -- QEMU-ARGS...
row() {
    name=$1
    qlabel=$2
    shift 2
    vargs=""
    while [ "$1" != "--" ]; do
        vargs="$vargs $1"
        shift
    done
    shift
    qargs="$*"
    vt=""
    qt=""
    i=0
    # shellcheck disable=SC2086 # the argument lists are split on purpose
    run_vdisk() { vt="$vt $(time_one "$WORK/out" "$VDISK" img convert $vargs "$WORK/out")"; }
    # shellcheck disable=SC2086
    run_qemu() { qt="$qt $(time_one "$WORK/out" qemu_convert $qargs "$WORK/out")"; }
    while [ "$i" -lt "$REPEAT" ]; do
        if [ $((i % 2)) -eq 0 ]; then
            run_vdisk
            run_qemu
        else
            run_qemu
            run_vdisk
        fi
        i=$((i + 1))
    done
    rm -f "$WORK/out"
    case "$vt$qt" in *nan*) status=1 ;; esac
    # shellcheck disable=SC2086
    vm=$(median $vt)
    # shellcheck disable=SC2086
    qm=$(median $qt)
    "$PY" -c '
import sys
name, ql, v, q, mib = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
mb = lambda t: "%9.0f" % (mib * 1048576 / 1e6 / t) if t == t and t > 0 else "      nan"
ratio = "%7.2f" % (q / v) if v == v and q == q and v > 0 else "    nan"
print("%-16s %-22s %9.2f %s %9.2f %s %s" % (name, ql, v, mb(v), q, mb(q), ratio))
' "$name" "$qlabel" "$vm" "$qm" "$DATA_MIB"
    echo "    runs: vdisk$vt / qemu-img$qt" | tr -s ' '
}

W=$WORK
row "qcow2 -> vdk" "qcow2 -> qcow2" -f qcow2 -O vdk "$W/src.qcow2" -- \
    -f qcow2 -O qcow2 "$W/src.qcow2"
row "vdk -> qcow2" "qcow2 -> qcow2" -f vdk -O qcow2 "$W/src.vdk" -- \
    -f qcow2 -O qcow2 "$W/src.qcow2"
row "vmdk -> vdk" "vmdk -> qcow2" -f vmdk -O vdk "$W/src.vmdk" -- \
    -f vmdk -O qcow2 "$W/src.vmdk"
row "qcow2 -> raw" "qcow2 -> raw" -f qcow2 -O raw "$W/src.qcow2" -- \
    -f qcow2 -O raw "$W/src.qcow2"
row "raw -> qcow2" "raw -> qcow2" -f raw -O qcow2 "$W/src.raw" -- \
    -f raw -O qcow2 "$W/src.raw"
row "vmdk -> raw" "vmdk -> raw" -f vmdk -O raw "$W/src.vmdk" -- \
    -f vmdk -O raw "$W/src.vmdk"
row "raw -> vmdk" "raw -> vmdk" -f raw -O vmdk "$W/src.raw" -- \
    -f raw -O vmdk "$W/src.raw"

echo
echo "ratio = qemu-img seconds / vdisk seconds (goal: >= 1.0, vdisk at least as fast)"
exit $status
