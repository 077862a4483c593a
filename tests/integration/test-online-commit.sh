#!/bin/sh
# test-online-commit.sh - snapshot-commit of a served volume, in the
# background, while clients write to it:
#  - one thread writes stamped 4 KiB blocks (block number and a generation)
#    through libnbd: before snapshot s1, after it, and all through the
#    commit, which runs slowly (a speed limit) so that the writes land in
#    blocks already copied; fio verifies its own region on another
#    connection meanwhile.  JOB_PROGRESS events come, done <= total, then
#    JOB_COMPLETED: s1 is gone, the chain is one layer shorter, every block
#    reads its last stamp, fio reports no error;
#  - a second commit of the same volume is refused while one runs, the
#    snapshot being committed cannot be opened, bad arguments get errors;
#  - job-cancel: JOB_CANCELLED, the snapshot is still there with its
#    content; kill -9 in the middle: after a restart the snapshot is there
#    with its content, the volume reads its last writes, `vdisk check` is
#    clean;
#  - `vdisk snapshot commit` on a served volume has the daemon do it, and a
#    volume nobody serves is committed by the daemon too (it opens it).
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 64M >/dev/null || fail "create vm1"
vdisk create idle 16M >/dev/null || fail "create idle"
vdisk io -c "write -P 5 0 8M" idle >/dev/null || fail "write idle"
vdisk snapshot create idle cold >/dev/null || fail "snapshot idle"
vdisk io -c "write -P 6 4M 1M" idle >/dev/null || fail "write idle after"
start_daemon --threads 2

# The helpers of every phase: the stamped writer (and tests/integration/
# ctl.py, a control connection that keeps its events).
cat >"$TESTDIR/lib.py" <<'PYEOF'
import json, nbd, random, socket, sys, threading, time
sys.path.insert(0, "tests/integration")
from ctl import Ctl
BS, N = 4096, 4096            # blocks 0..N-1: the first 16 MiB of vm1

def stamp(i, gen):
    return (i.to_bytes(4, "little") + gen.to_bytes(4, "little")) * (BS // 8)

class Writer:
    """Writes stamped blocks on its own connection; last[i] is the stamp
    block i must read (writes are one at a time, so order is known)."""
    def __init__(self, uri):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.last = {}
        self.stop = threading.Event()
        self.count = 0
    def write(self, i, gen):
        self.h.pwrite(stamp(i, gen), i * BS)
        self.last[i] = gen
        self.count += 1
    def run(self, gen, seed):
        rnd = random.Random(seed)
        while not self.stop.is_set():
            self.write(rnd.randrange(N), gen)
    def start(self, gen, seed):
        self.t = threading.Thread(target=self.run, args=(gen, seed))
        self.t.start()
    def join(self):
        self.stop.set()
        self.t.join()
        self.stop.clear()

def check(uri, last, what):
    h = nbd.NBD()
    h.connect_uri(uri)
    bad = 0
    for i in range(N):
        want = stamp(i, last[i]) if i in last else bytes(BS)
        if h.pread(BS, i * BS) != want:
            bad += 1
            if bad < 5:
                print("%s: block %d does not read generation %s" % (what, i, last.get(i)))
    h.shutdown()
    assert bad == 0, "%s: %d blocks wrong" % (what, bad)
PYEOF

echo "== commit under writes and fio"
fio --name=load --ioengine=nbd --uri="$(uri vm1)" --offset=32M --size=32M \
    --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=6 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output="$TESTDIR/fio.txt" &
FIO=$!
"$PY" - "$STORE/control.sock" "$SOCK" "$TESTDIR" <<'PYEOF' || fail "online commit"
import sys, json, time
sys.path.insert(0, sys.argv[3])
from lib import *
ctl, sock = Ctl(sys.argv[1]), sys.argv[2]
u = "nbd+unix:///%s?socket=" + sock
w = Writer(u % "vm1")
for i in range(N):
    w.write(i, 1)
r = ctl.cmd("snapshot-create", volume="vm1", name="s1")
assert r["return"]["online"], r
s1 = dict(w.last)
for i in range(0, N, 2):
    w.write(i, 2)          # 8 MiB written after s1: what the commit copies
w.start(3, 1)
time.sleep(0.3)
r = ctl.cmd("snapshot-commit", volume="vm1", name="s1", speed=8 << 20)
assert "return" in r, r
job = r["return"]["job"]
jobs = ctl.cmd("query-jobs")["return"]
assert [j["id"] for j in jobs] == [job] and jobs[0]["volume"] == "vm1", jobs
r = ctl.cmd("snapshot-commit", volume="vm1", name="s1")
assert "already running" in r["error"]["desc"], r
try:
    h = nbd.NBD()
    h.connect_uri(u % "vm1@s1")
    raise SystemExit("the snapshot being committed was served")
except nbd.Error as e:
    print("vm1@s1 during the commit:", e)
e = ctl.wait_event(["JOB_COMPLETED", "JOB_CANCELLED"], job)
w.join()
print(e)
assert e["event"] == "JOB_COMPLETED" and "error" not in e["data"], e
prog = [x["data"] for x in ctl.events if x["event"] == "JOB_PROGRESS" and x["data"]["id"] == job]
assert prog and all(p["done"] <= p["total"] for p in prog), prog
print("%d progress events, last %s; %d writes during the job; I/O paused %d us"
      % (len(prog), prog[-1], w.count, e["data"]["pause-us"]))
vols = {v["name"]: v for v in ctl.cmd("query-volumes")["return"]}
assert vols["vm1"]["snapshots"] == 0 and vols["vm1"]["depth"] == 1, vols["vm1"]
assert ctl.cmd("query-jobs")["return"] == []
check(u % "vm1", w.last, "vm1 after the commit")
w.write(7, 9)
check(u % "vm1", w.last, "vm1 written after the commit")
json.dump({str(k): v for k, v in w.last.items()}, open(sys.argv[3] + "/last.json", "w"))
# bad arguments
for args in ({"volume": "vm1"}, {"volume": "vm1", "name": "nope"},
             {"volume": "vm1", "name": "s1", "speed": "fast"},
             {"volume": "vm1@x", "name": "s1"}, {"volume": "nosuch", "name": "s"}):
    r = ctl.cmd("snapshot-commit", **args)
    assert "error" in r, (args, r)
    print("refused:", args, "->", r["error"]["desc"])
assert "error" in ctl.cmd("job-cancel", id=999)
assert "error" in ctl.cmd("job-cancel", id="x")
PYEOF
wait $FIO || { cat "$TESTDIR/fio.txt"; fail "fio failed across the commit"; }
grep -q "err= 0" "$TESTDIR/fio.txt" || { cat "$TESTDIR/fio.txt"; fail "fio reported errors"; }
grep -q "committed snapshot s1 of volume vm1 online" "$TESTDIR/vdiskd.log" || fail "no log line for the commit"

echo "== cancel, then kill -9 in the middle"
"$PY" - "$STORE/control.sock" "$SOCK" "$TESTDIR" <<'PYEOF' || fail "cancel"
import sys, json, time
sys.path.insert(0, sys.argv[3])
from lib import *
ctl, sock = Ctl(sys.argv[1]), sys.argv[2]
u = "nbd+unix:///%s?socket=" + sock
w = Writer(u % "vm1")
w.last = {int(k): v for k, v in json.load(open(sys.argv[3] + "/last.json")).items()}
assert ctl.cmd("snapshot-create", volume="vm1", name="s2")["return"]["online"]
s2 = dict(w.last)
for i in range(1, N, 2):
    w.write(i, 4)
r = ctl.cmd("snapshot-commit", volume="vm1", name="s2", speed=1 << 20)
job = r["return"]["job"]
w.start(5, 2)
time.sleep(1.5)
assert ctl.cmd("job-cancel", id=job)["return"] == {}
e = ctl.wait_event(["JOB_COMPLETED", "JOB_CANCELLED"], job)
w.join()
assert e["event"] == "JOB_CANCELLED", e
print(e)
vols = {v["name"]: v for v in ctl.cmd("query-volumes")["return"]}
assert vols["vm1"]["snapshots"] == 1, vols["vm1"]
check(u % "vm1@s2", s2, "s2 after the cancel")
check(u % "vm1", w.last, "vm1 after the cancel")
# Again, to be killed: the daemon dies with the job half done.
r = ctl.cmd("snapshot-commit", volume="vm1", name="s2", speed=1 << 20)
job = r["return"]["job"]
w.start(6, 3)
time.sleep(1.5)
w.join()
w.h.flush()                # what a crash may not lose
w.h.shutdown()
assert ctl.cmd("query-jobs")["return"][0]["done"] > 0
json.dump({"last": {str(k): v for k, v in w.last.items()},
           "s2": {str(k): v for k, v in s2.items()}}, open(sys.argv[3] + "/state.json", "w"))
PYEOF
kill_daemon
# Exit 3: leaked space only, from the writes of the top not yet in its
# index (as after any kill -9, test-nbd-kill.sh); none in the snapshot's
# layer, which recovery cut back.
vdisk check >"$TESTDIR/check.txt" 2>&1
rc=$?
cat "$TESTDIR/check.txt"
case $rc in 0|3) ;; *) fail "vdisk check after kill -9 during a commit: exit $rc" ;; esac
s2=$(vdisk snapshot list --output json vm1 | "$PY" -c 'import json,sys; print([s["layer"] for s in json.load(sys.stdin) if s["name"] == "s2"][0])')
grep -q "$s2" "$TESTDIR/check.txt" && fail "the layer of s2 is not clean after the killed commit"
vdisk snapshot list vm1 | grep -q s2 || fail "the snapshot is gone after kill -9 during its commit"
start_daemon --threads 2
"$PY" - "$STORE/control.sock" "$SOCK" "$TESTDIR" "$VDISK" <<'PYEOF' || fail "after kill -9"
import sys, json, subprocess
sys.path.insert(0, sys.argv[3])
from lib import *
sock, vdisk = sys.argv[2], sys.argv[4]
u = "nbd+unix:///%s?socket=" + sock
st = json.load(open(sys.argv[3] + "/state.json"))
last = {int(k): v for k, v in st["last"].items()}
check(u % "vm1@s2", {int(k): v for k, v in st["s2"].items()}, "s2 after kill -9")
check(u % "vm1", last, "vm1 after kill -9")
# The CLI on a served volume: the daemon commits it.
h = nbd.NBD()
h.connect_uri(u % "vm1")
p = subprocess.run([vdisk, "snapshot", "commit", "vm1", "s2"], capture_output=True, text=True)
print(p.stdout.strip(), p.stderr.strip())
assert p.returncode == 0 and "by vdiskd while serving it" in p.stdout, p
assert h.pread(BS, 8 * BS) == stamp(8, last[8])
h.shutdown()
check(u % "vm1", last, "vm1 after the CLI's commit")
# A volume nobody serves: the daemon opens it for the job.
ctl = Ctl(sys.argv[1])
r = ctl.cmd("snapshot-commit", volume="idle", name="cold")
e = ctl.wait_event(["JOB_COMPLETED", "JOB_CANCELLED"], r["return"]["job"])
assert e["event"] == "JOB_COMPLETED" and "error" not in e["data"], e
vols = {v["name"]: v for v in ctl.cmd("query-volumes")["return"]}
assert vols["idle"]["snapshots"] == 0 and vols["vm1"]["snapshots"] == 0, vols
PYEOF
vdisk snapshot list vm1 | grep -q "No snapshots" || fail "vm1 still has snapshots"
stop_daemon
vdisk check >"$TESTDIR/check.txt" 2>&1 || { cat "$TESTDIR/check.txt"; fail "vdisk check"; }
vdisk io -c "read -P 5 0 4M" -c "read -P 6 4M 1M" -c "read -P 5 5M 3M" idle >/dev/null \
    || fail "idle does not read its content after the commit"
echo "PASS"
