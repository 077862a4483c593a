#!/bin/sh
# shellcheck disable=SC2317 # functions run through the trap
# bench-commit.sh - guest writes while vdiskd commits a snapshot in the
# background (snapshot-commit through the control socket), as a fraction of
# the same writes without a commit.  One vdiskd, one volume, fio's nbd
# engine as the guest.  Figures are printed, never asserted.
#
# Setup: a store in a temporary folder on a disk (TMPDIR, else /var/tmp);
# a raw file of BC_SIZE_MIB MiB of random data imported as volume vm, so
# every block of its base holds data; vdiskd on it (--cache none, O_DIRECT,
# the default; a unix socket; its control socket STORE/control.sock).
#
# Every measured run starts from the same state: snapshot s1 of the filled
# base with BC_DELTA_MIB MiB written after it (fio, 1 MiB random writes at
# distinct offsets, the same offsets every time, then a flush), i.e. depth
# 2, the delta being what a commit has to copy.  To get there again s1 is
# taken anew after a commit (which removes it) or, after a run without a
# commit, the volume is rolled back to s1 (snapshot-rollback: the top layer
# with the delta and the baseline's writes is dropped) and the delta is
# written again.  Then, for each row (4 KiB random writes at iodepth 32,
# 1 MiB sequential writes at iodepth 8, over the whole volume, BC_RUNTIME
# seconds, no warm-up, the same offsets in every run of a row):
#   without   fio alone
#   during    snapshot-commit {volume: vm, name: s1} sent, fio started as
#             soon as the reply (the job id) came, then both awaited:
#             fio's figure, JOB_COMPLETED's bytes, seconds and pause-us,
#             and whether the commit ended before fio did (the ratio then
#             covers only part of the run; the commit also copies what fio
#             writes meanwhile, so it usually outlasts fio)
# The two alternate, BC_REPEAT (default 3) times per row (without first in
# odd repetitions, during first in even ones), and the table shows medians,
# since a virtual machine's disk and CPUs vary by tens of percent from one
# run to the next.  Figures:
#   without, during   IOPS (4 KiB row) or MB/s (1 MiB row) of fio
#   ratio             during / without (of the medians); goal >= 0.7
#   commit s          JOB_COMPLETED seconds (from the command to the end)
#   commit MB/s       JOB_COMPLETED bytes / seconds
#   copied MiB        JOB_COMPLETED bytes: every block written since s1
#                     (the delta and fio's writes), copied whole (64 KiB
#                     blocks), plus again each block fio wrote after its copy
#   pause ms          JOB_COMPLETED pause-us: how long the switch held the
#                     volume's requests; the switch is the job's last step,
#                     so when the commit outlasts fio, fio's figure does
#                     not include that pause (each run's line shows when
#                     fio and the commit ended)
#   outlasted         in how many runs the commit ended after fio
#
# BC_SIZE_MIB (default 2048) the volume, BC_DELTA_MIB (default 1024) the
# data written after the snapshot, BC_RUNTIME (default 8) fio's seconds,
# BC_REPEAT (default 3).  Exit 0 when every run worked (a missed goal
# included), 1 when fio, a commit (JOB_COMPLETED with "error",
# JOB_CANCELLED, no end within BC_COMMIT_TIMEOUT, default 600 s) or the
# setup failed, 77 (skip) when fio lacks its nbd engine or /usr/bin/python3
# (json, socket) is missing.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
VDISK=$BUILD/bin/vdisk
VDISKD=$BUILD/bin/vdiskd
PY=/usr/bin/python3
SIZE_MIB=${BC_SIZE_MIB:-2048}
DELTA_MIB=${BC_DELTA_MIB:-1024}
RUNTIME=${BC_RUNTIME:-8}
REPEAT=${BC_REPEAT:-3}
COMMIT_TIMEOUT=${BC_COMMIT_TIMEOUT:-600}

for v in SIZE_MIB DELTA_MIB RUNTIME REPEAT COMMIT_TIMEOUT; do
    eval "x=\$$v"
    # shellcheck disable=SC2154 # x is set by the eval
    if ! [ "$x" -ge 1 ] 2>/dev/null; then
        echo "bench-commit: $v=$x: need a whole number >= 1" >&2
        exit 1
    fi
done
if [ "$DELTA_MIB" -gt "$SIZE_MIB" ]; then
    echo "bench-commit: BC_DELTA_MIB=$DELTA_MIB is more than BC_SIZE_MIB=$SIZE_MIB" >&2
    exit 1
fi

for prog in "$VDISK" "$VDISKD"; do
    if [ ! -x "$prog" ]; then
        echo "bench-commit: $prog is not built (run make)" >&2
        exit 1
    fi
done
if ! command -v fio >/dev/null 2>&1 || ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "bench-commit: skipped: fio with its nbd engine is not installed"
    exit 77
fi
if ! [ -x "$PY" ] || ! "$PY" -c 'import json, socket, subprocess, threading' 2>/dev/null; then
    echo "bench-commit: skipped: $PY (with its json and socket modules) is not installed"
    exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/vdisk-bench-commit.XXXXXX") || exit 1
VPID=
cleanup() {
    if [ -n "$VPID" ]; then
        kill -TERM "$VPID" 2>/dev/null
        wait "$VPID" 2>/dev/null
        VPID=
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

STORE=$WORK/store
export VDISK_STORE="$STORE"
RAW=$WORK/fill.raw
SOCK=$WORK/nbd.sock
CTL=$STORE/control.sock
LOG=$WORK/vdiskd.log
URI="nbd+unix:///vm?socket=$SOCK"
status=0

# The control client: "cmd COMMAND [JSON-ARGS]" prints the reply and exits 1
# on an error reply; "commit VOL SNAP TIMEOUT -- FIO-ARGS..." sends
# snapshot-commit, starts fio once the reply is in, waits for both and
# prints one line:
#   fio-rc event bytes seconds pause-us fio-start fio-end job-end error
# (the last three: seconds since the command was sent; "-" for what is
# missing; error: the event's error or reason, "-" when none).
cat >"$WORK/ctl.py" <<'PYEOF'
import json, socket, subprocess, sys, threading, time

class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        json.loads(self.f.readline())          # the greeting
        self.events = []
    def send(self, command, **args):
        self.f.write((json.dumps({"execute": command, "arguments": args}) + "\n").encode())
        self.f.flush()
    def read(self):
        line = self.f.readline()
        if not line:
            raise SystemExit("bench-commit: vdiskd closed the control connection")
        return json.loads(line)
    def cmd(self, command, **args):
        self.send(command, **args)
        while True:
            m = self.read()
            if "event" in m:
                self.events.append(m)
                continue
            return m
    def wait_event(self, names, job, timeout):
        self.s.settimeout(timeout)
        for e in self.events:
            if e["event"] in names and e["data"].get("id") == job:
                return e
        while True:
            m = self.read()
            if "event" in m and m["event"] in names and m["data"].get("id") == job:
                return m

mode, path = sys.argv[1], sys.argv[2]
ctl = Ctl(path)
if mode == "cmd":
    args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    r = ctl.cmd(sys.argv[3], **args)
    print(json.dumps(r))
    sys.exit(0 if "return" in r else 1)

vol, snap, timeout = sys.argv[3], sys.argv[4], float(sys.argv[5])
fio = sys.argv[7:]
t0 = time.monotonic()
r = ctl.cmd("snapshot-commit", volume=vol, name=snap)
if "return" not in r:
    print("bench-commit: snapshot-commit refused: %s" % json.dumps(r), file=sys.stderr)
    print("- - - - - - - - refused")
    sys.exit(1)
job = r["return"]["job"]
t1 = time.monotonic()
out = [a[len("--output="):] for a in fio if a.startswith("--output=")]
p = subprocess.Popen(fio, stdout=subprocess.DEVNULL,
                     stderr=open(out[0] + ".err", "w") if out else subprocess.DEVNULL)
fio_end = []
def waiter():
    p.wait()
    fio_end.append(time.monotonic())
th = threading.Thread(target=waiter)
th.start()
try:
    e = ctl.wait_event(["JOB_COMPLETED", "JOB_CANCELLED"], job, timeout)
except socket.timeout:
    print("bench-commit: no end of commit job %d within %g s: cancelling it" % (job, timeout),
          file=sys.stderr)
    ctl.s.settimeout(None)
    ctl.cmd("job-cancel", id=job)
    e = ctl.wait_event(["JOB_COMPLETED", "JOB_CANCELLED"], job, 120)
    e["data"].setdefault("error", "timed out, cancelled")
t2 = time.monotonic()
th.join()
d = e["data"]
err = d.get("error", d.get("reason", "-")) if e["event"] == "JOB_COMPLETED" else \
      "cancelled: " + str(d.get("reason", "?"))
ok = e["event"] == "JOB_COMPLETED" and "error" not in d
print("%d %s %s %s %s %.3f %.3f %.3f %s" % (
    p.returncode, e["event"], d.get("bytes", "-") if ok else "-", d.get("seconds", "-") if ok else "-",
    d.get("pause-us", "-") if ok else "-", t1 - t0, fio_end[0] - t0, t2 - t0,
    "-" if ok else err.replace(" ", "_")))
PYEOF

# ctl COMMAND [JSON-ARGS]: one control command; an error reply ends the bench.
ctl() {
    if ! reply=$("$PY" "$WORK/ctl.py" cmd "$CTL" "$@" 2>&1); then
        echo "bench-commit: $1 ${2:-} failed: $reply" >&2
        exit 1
    fi
}

# fio_figures FILE: "IOPS KiB/s" of the writes of a terse (v3) fio output,
# or "- -" if it holds none or reports an error.
fio_figures() {
    awk -F';' 'BEGIN { r = "- -" } $1 == "3" { r = ($5 != 0) ? "- -" : $49 " " $48; exit }
        END { print r }' "$1"
}

# fio_fail LABEL: says why fio LABEL failed.
fio_fail() {
    echo "bench-commit: fio $1 failed:" >&2
    cat "$WORK/fio-$1.txt.err" "$WORK/fio-$1.txt" 2>/dev/null | tail -n 20 >&2
    status=1
}

# prepare: brings vm to "s1 + the delta": s1 taken again (after a commit)
# or the volume rolled back to s1 (after a run without one), then the
# delta written and flushed.
S1=0
prepare() {
    if [ $S1 = 1 ]; then
        ctl snapshot-rollback '{"volume": "vm", "name": "s1"}'
    else
        ctl snapshot-create '{"volume": "vm", "name": "s1"}'
        S1=1
    fi
    if ! fio --name=delta --ioengine=nbd --uri="$URI" --rw=randwrite --bs=1M --iodepth=8 \
            --io_size="${DELTA_MIB}M" --randrepeat=1 --randseed=42 --end_fsync=1 \
            --output-format=terse --terse-version=3 --output="$WORK/fio-delta.txt" \
            2>"$WORK/fio-delta.txt.err" ||
       [ "$(fio_figures "$WORK/fio-delta.txt")" = "- -" ]; then
        fio_fail delta
        exit 1
    fi
}

# ---- the volume, vdiskd ---------------------------------------------------
echo "== Guest writes during a background snapshot commit: ${SIZE_MIB} MiB volume, ${DELTA_MIB} MiB written after the snapshot, fio ${RUNTIME} s per run, median of ${REPEAT}"
case $(stat -f -c %T "$WORK" 2>/dev/null) in
tmpfs | ramfs)
    echo "note: $WORK is on tmpfs: the figures say nothing of a disk;"
    echo "set TMPDIR to a folder on a disk." ;;
esac
t0=$(date +%s)
dd if=/dev/urandom of="$RAW" bs=1M count="$SIZE_MIB" status=none || exit 1
"$VDISK" import -f raw "$RAW" vm >/dev/null || { echo "bench-commit: vdisk import failed" >&2; exit 1; }
rm -f "$RAW"
sync
"$VDISKD" --store "$STORE" --listen "unix:$SOCK" --cache none --foreground >"$LOG" 2>&1 &
VPID=$!
i=0
while ! [ -S "$SOCK" ] || ! [ -S "$CTL" ]; do
    if ! kill -0 "$VPID" 2>/dev/null; then
        wait "$VPID" 2>/dev/null
        VPID=
        echo "bench-commit: vdiskd failed to start; its log:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    i=$((i + 1))
    if [ "$i" -ge 400 ]; then
        echo "bench-commit: vdiskd made no sockets within 20 s; its log:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    sleep 0.05
done
echo "volume filled in $(($(date +%s) - t0)) s"
echo "vdiskd:   $("$VDISKD" --version 2>/dev/null | head -n 1), --cache none, threads: one per CPU ($(nproc 2>/dev/null || echo '?'))"
echo "fio:      $(fio --version), nbd engine, one connection"

# ---- the runs ---------------------------------------------------------------
ROWS="randwrite:randwrite:4k:32 seqwrite:write:1M:8"
RES=$WORK/results   # lines: row without|during iops kibs [bytes seconds pause-us outlasted]
: >"$RES"
for row in $ROWS; do
    IFS=: read -r name rw bs qd <<EOF
$row
EOF
    set -- --name="$name" --ioengine=nbd --uri="$URI" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --numjobs=1 --time_based --runtime="$RUNTIME" --randrepeat=1 --randseed=7 --norandommap \
        --output-format=terse --terse-version=3
    echo
    echo "$name: $rw bs $bs iodepth $qd"
    rep=0
    while [ $rep -lt "$REPEAT" ]; do
        rep=$((rep + 1))
        if [ $((rep % 2)) = 1 ]; then order="without during"; else order="during without"; fi
        for kind in $order; do
            prepare
            label=$name-$kind-$rep
            out=$WORK/fio-$label.txt
            if [ "$kind" = without ]; then
                if ! fio "$@" --output="$out" 2>"$out.err"; then
                    fio_fail "$label"
                    fig="- -"
                else
                    fig=$(fio_figures "$out")
                    [ "$fig" != "- -" ] || fio_fail "$label"
                fi
                echo "$name without $fig" >>"$RES"
                printf '  [%s] without: %s\n' "$rep" "$(echo "$fig" | awk -v seq="${name%%write}" '
                    { if ($1 == "-") print "FAILED"
                      else if (seq == "seq") printf "%.0f MB/s\n", $2 * 1024 / 1e6
                      else printf "%.0f IOPS\n", $1 }')"
                continue
            fi
            line=$("$PY" "$WORK/ctl.py" commit "$CTL" vm s1 "$COMMIT_TIMEOUT" -- fio "$@" --output="$out")
            read -r frc ev cbytes csecs cpause fstart fend jend cerr <<EOF
$line
EOF
            if [ "$ev" = JOB_COMPLETED ] && [ "$cerr" = - ]; then
                S1=0
            else
                echo "bench-commit: the commit of s1 failed: ${ev:-no event} ${cerr:-}" >&2
                status=1
            fi
            if [ "$frc" != 0 ]; then
                fio_fail "$label"
                fig="- -"
            else
                fig=$(fio_figures "$out")
                [ "$fig" != "- -" ] || fio_fail "$label"
            fi
            outl=$(awk -v f="$fend" -v j="$jend" 'BEGIN { print (j + 0 > f + 0) ? 1 : 0 }')
            echo "$name during $fig $cbytes $csecs $cpause $outl" >>"$RES"
            printf '  [%s] during:  %s; commit %s, fio from %.2f to %.2f s, commit ended at %.2f s%s\n' \
                "$rep" "$(echo "$fig" | awk -v seq="${name%%write}" '
                    { if ($1 == "-") print "FAILED"
                      else if (seq == "seq") printf "%.0f MB/s\n", $2 * 1024 / 1e6
                      else printf "%.0f IOPS\n", $1 }')" \
                "$(awk -v b="$cbytes" -v s="$csecs" -v p="$cpause" 'BEGIN {
                    if (b == "-") { print "FAILED"; exit }
                    printf "%.0f MiB in %.2f s (%.0f MB/s), pause %.1f ms", b / 1048576, s, b / s / 1e6, p / 1000 }')" \
                "$fstart" "$fend" "$jend" \
                "$([ "$outl" = 1 ] || echo ': BEFORE fio ended, the figure covers only part of the run')"
        done
    done
done

# ---- the table -------------------------------------------------------------
ctl query-volumes
echo
echo "store on disk after the runs: $(du -sm "$STORE" | cut -f1) MiB; volume vm: ${SIZE_MIB} MiB, $(echo "$reply" |
    "$PY" -c 'import json, sys; v = [v for v in json.load(sys.stdin)["return"] if v["name"] == "vm"][0]; print("depth %d, %d snapshot(s), %d MiB allocated" % (v["depth"], v["snapshots"], v["allocated"] >> 20))')"
kill -TERM "$VPID" 2>/dev/null
wait "$VPID"
rc=$?
VPID=
[ $rc = 0 ] || [ $rc = 143 ] || { echo "bench-commit: vdiskd exited with status $rc after SIGTERM" >&2; status=1; }
notes=$(grep -v -e ': listening on ' -e ': serving store ' -e ': control socket ' \
    -e ': Terminated: stopping (0 connection' -e ': stopped$' \
    -e ': snapshot vm@s1 taken online ' -e ': volume vm rolled back to snapshot s1 ' \
    -e ': commit of vm@s1 started on thread ' -e ': committed snapshot s1 of volume vm online ' "$LOG")
if [ -n "$notes" ]; then
    echo "vdiskd logged (beyond start/stop, snapshot, rollback and commit lines):"
    echo "$notes" | head -n 20 | sed 's/^/  /'
else
    echo "vdiskd logged nothing beyond start/stop, snapshot, rollback and commit lines."
fi
echo
awk -v runtime="$RUNTIME" '
function num(x) { return x != "-" && x != "" && x + 0 > 0 }
# median of the space-separated figures in list ("-" when none)
function median(list,   v, n, i, j, t) {
    n = split(list, v, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
{
    r = $1; seq = (r ~ /^seq/)
    if (!(r in seen)) { seen[r] = 1; order[++n] = r }
    fig = seq ? $4 : $3
    if ($2 == "during") {
        runs[r]++
        if (num($5)) { bytes[r] = bytes[r] " " $5; secs[r] = secs[r] " " $6; pause[r] = pause[r] " " $7
                       mbs[r] = mbs[r] " " $5 / $6 / 1e6; outl[r] += $8 }
        else bad[r]++
    }
    if (num(fig)) list[r, $2] = list[r, $2] " " (seq ? fig * 1024 / 1e6 : fig)
    else bad[r]++
}
END {
    printf "%-10s %5s %8s %8s %6s %9s %11s %10s %9s %9s\n", "row", "unit", "without", "during", "ratio",
        "commit s", "commit MB/s", "copied MiB", "pause ms", "outlasted"
    goals = ""; early = 0
    for (i = 1; i <= n; i++) {
        r = order[i]; seq = (r ~ /^seq/)
        w = median(list[r, "without"]); d = median(list[r, "during"])
        ratio = (num(w) && num(d)) ? sprintf("%.2f", d / w) : "-"
        cs = median(secs[r]); cm = median(mbs[r]); cb = median(bytes[r]); cp = median(pause[r])
        printf "%-10s %5s %8s %8s %6s %9s %11s %10s %9s %9s\n", r, seq ? "MB/s" : "IOPS",
            num(w) ? sprintf("%.0f", w) : "-", num(d) ? sprintf("%.0f", d) : "-", ratio,
            num(cs) ? sprintf("%.1f", cs) : "-", num(cm) ? sprintf("%.0f", cm) : "-",
            num(cb) ? sprintf("%.0f", cb / 1048576) : "-", cp != "-" ? sprintf("%.1f", cp / 1000) : "-",
            sprintf("%d/%d", outl[r], runs[r])
        if (ratio == "-") g = "- (a run failed)"
        else g = (ratio + 0 >= 0.7 ? "met" : "not met") " (" ratio ")"
        if (outl[r] < runs[r]) { g = g sprintf(", but the commit ended before fio in %d of %d runs", runs[r] - outl[r], runs[r]); early = 1 }
        goals = goals sprintf("goal: %-9s guest writes during a commit >= 0.7 of without: %s\n", r, g)
    }
    printf "(medians; without and during: fio over %d s; commit s, MB/s, copied, pause: JOB_COMPLETED)\n\n%s", runtime, goals
    if (early)
        printf "note: where the commit ended before fio, the ratio covers the commit for only\npart of the run: make BC_DELTA_MIB larger (or BC_RUNTIME shorter).\n"
}' "$RES"
exit $status
