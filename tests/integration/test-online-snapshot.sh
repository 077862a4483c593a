#!/bin/sh
# test-online-snapshot.sh - snapshot-create through the control API while
# clients write to the volume:
#  - one thread writes 4 KiB blocks one after another, each stamped, through
#    libnbd, while fio runs a verifying random-write job on another region
#    of the same volume over a second connection;
#  - meanwhile snapshot-create: every write that completed before the
#    command was sent is in the snapshot, no write submitted after the reply
#    is; the reply says online and how long I/O paused; fio verifies clean;
#  - a second snapshot of the same name is refused, one of a volume nobody
#    serves is taken offline; `vdisk snapshot create` on the served volume
#    has the daemon take it (and reports its error for a name in use); the
#    CLI sees the snapshots;
#  - rollback of the served volume: refused while a client is connected,
#    naming it; with --force the client is disconnected and the volume
#    reads as the snapshot through a new connection; a volume nobody serves
#    is rolled back offline; again with fio writing to the volume (fio is
#    disconnected, the volume reads as the snapshot) while a verifying fio
#    job on another volume goes on without an error;
#  - `vdisk check` is clean after the daemon stops.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 64M >/dev/null || fail "create vm1"
vdisk create idle 16M >/dev/null || fail "create idle"
start_daemon --threads 2

fio --name=load --ioengine=nbd --uri="$(uri vm1)" --offset=32M --size=32M \
    --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=4 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output="$TESTDIR/fio.txt" &
FIO=$!
sleep 1

"$PY" - "$STORE/control.sock" "$SOCK" <<'PYEOF' || fail "online snapshot"
import json, nbd, socket, sys, threading, time
ctl, sock = sys.argv[1], sys.argv[2]
u = "nbd+unix:///%s?socket=" + sock

s = socket.socket(socket.AF_UNIX)
s.connect(ctl)
f = s.makefile("rwb")
f.readline()
def cmd(command, **args):
    f.write((json.dumps({"execute": command, "arguments": args}) + "\n").encode())
    f.flush()
    return json.loads(f.readline())

BS, N = 4096, 4096          # blocks 0..N-1: the first 16 MiB
done = []                   # (block, submitted, completed)
stop = threading.Event()
def writer():
    h = nbd.NBD()
    h.connect_uri(u % "vm1")
    i = 0
    while not stop.is_set() and i < N:
        t0 = time.monotonic()
        h.pwrite(i.to_bytes(4, "little") * (BS // 4), i * BS)
        done.append((i, t0, time.monotonic()))
        i += 1
    h.shutdown()
th = threading.Thread(target=writer)
th.start()
time.sleep(0.5)
t_send = time.monotonic()
r = cmd("snapshot-create", volume="vm1", name="s1")
t_reply = time.monotonic()
time.sleep(0.3)
stop.set()
th.join()
print("snapshot-create:", r, "after", len([d for d in done if d[2] < t_send]), "writes")
assert r["return"]["online"] is True and r["return"]["snapshot"] == "s1", r
print("I/O pause: %d us" % r["return"]["pause-us"])

snap = nbd.NBD()
snap.connect_uri(u % "vm1@s1")
assert snap.is_read_only()
before = [d for d in done if d[2] < t_send]
after = [d for d in done if d[1] > t_reply]
assert before and after, (len(before), len(after))
for i, _, _ in before:
    assert snap.pread(BS, i * BS) == i.to_bytes(4, "little") * (BS // 4), "block %d missing" % i
for i, _, _ in after:
    assert snap.pread(BS, i * BS) == bytes(BS), "block %d (written after) is in the snapshot" % i
vol = nbd.NBD()
vol.connect_uri(u % "vm1")
for i, _, _ in done:
    assert vol.pread(BS, i * BS) == i.to_bytes(4, "little") * (BS // 4), "block %d lost" % i
print("in the snapshot: %d writes before; not in it: %d writes after" % (len(before), len(after)))

r = cmd("snapshot-create", volume="vm1", name="s1")
assert r["error"]["class"] == "GenericError" and "s1" in r["error"]["desc"], r
r = cmd("snapshot-create", volume="idle", name="cold")
assert r["return"]["online"] is False, r
r = cmd("snapshot-create", volume="nope", name="x")
assert "error" in r, r
r = cmd("snapshot-create", volume="vm1")
assert "error" in r, r
vols = {v["name"]: v for v in cmd("query-volumes")["return"]}
assert vols["vm1"]["snapshots"] == 1 and vols["vm1"]["depth"] == 2, vols["vm1"]
ex = {e["name"]: e for e in cmd("query-exports")["return"]}
assert ex["vm1"]["depth"] == 2, ex
snap.shutdown()
vol.shutdown()
PYEOF

echo "== the CLI on a served volume goes through the daemon"
"$PY" - "$SOCK" "$VDISK" "$STORE" <<'PYEOF' || fail "vdisk snapshot create on a served volume"
import nbd, subprocess, sys
sock, vdisk, store = sys.argv[1:4]
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sock)
h.pwrite(b"\x77" * 4096, 20 << 20)
p = subprocess.run([vdisk, "snapshot", "create", "vm1", "s2"],
                   capture_output=True, text=True)
print(p.stdout.strip(), p.stderr.strip())
assert p.returncode == 0 and "taken by vdiskd" in p.stdout, p
p = subprocess.run([vdisk, "snapshot", "create", "vm1", "s2"],
                   capture_output=True, text=True)
print(p.stderr.strip())
assert p.returncode != 0 and "s2" in p.stderr, p
h.pwrite(b"\x88" * 4096, 20 << 20)
s = nbd.NBD()
s.connect_uri("nbd+unix:///vm1@s2?socket=" + sock)
assert s.pread(4096, 20 << 20) == b"\x77" * 4096
assert h.pread(4096, 20 << 20) == b"\x88" * 4096
s.shutdown()
h.shutdown()
PYEOF

wait $FIO || { cat "$TESTDIR/fio.txt"; fail "fio failed across the snapshot"; }
grep -q "err= 0" "$TESTDIR/fio.txt" || { cat "$TESTDIR/fio.txt"; fail "fio reported errors"; }
echo "== rollback of a served volume: refused naming its clients, --force disconnects them"
"$PY" - "$SOCK" "$VDISK" "$STORE/control.sock" <<'PYEOF' || fail "online rollback"
import json, nbd, socket, subprocess, sys
sock, vdisk, ctl = sys.argv[1:4]
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sock)
assert h.pread(4096, 20 << 20) == b"\x88" * 4096
p = subprocess.run([vdisk, "snapshot", "rollback", "vm1", "s1"], capture_output=True, text=True)
print(p.stderr.strip())
assert p.returncode != 0 and "in use by 1 NBD client" in p.stderr and "unix:uid=" in p.stderr, p
assert h.pread(4096, 20 << 20) == b"\x88" * 4096      # still served, unchanged
p = subprocess.run([vdisk, "snapshot", "rollback", "vm1", "s1", "--force"],
                   capture_output=True, text=True)
print(p.stdout.strip(), p.stderr.strip())
assert p.returncode == 0 and "1 client(s) disconnected" in p.stdout, p
try:
    h.pread(4096, 0)
    raise SystemExit("the client of the rolled back volume was not disconnected")
except nbd.Error as e:
    print("old client:", e)
v = nbd.NBD()
v.connect_uri("nbd+unix:///vm1?socket=" + sock)
s1 = nbd.NBD()
s1.connect_uri("nbd+unix:///vm1@s1?socket=" + sock)
for off in range(0, 64 << 20, 1 << 20):
    assert v.pread(1 << 20, off) == s1.pread(1 << 20, off), "vm1 differs from s1 at %d" % off
v.pwrite(b"\x99" * 4096, 0)
assert v.pread(4096, 0) == b"\x99" * 4096
v.shutdown()
s1.shutdown()
# A volume nobody serves is rolled back offline.
c = socket.socket(socket.AF_UNIX)
c.connect(ctl)
f = c.makefile("rwb")
f.readline()
f.write(b'{"execute":"snapshot-rollback","arguments":{"volume":"idle","name":"cold"}}\n')
f.flush()
r = json.loads(f.readline())
assert r["return"]["online"] is False, r
f.write(b'{"execute":"snapshot-rollback","arguments":{"volume":"vm1","name":"s1","force":"yes"}}\n')
f.flush()
r = json.loads(f.readline())
assert r["error"]["class"] == "GenericError", r
PYEOF
grep "rolled back under\|rolled back to snapshot" "$TESTDIR/vdiskd.log" || fail "the log does not mention the forced rollback"

echo "== forced rollback under fio load; another volume's fio job is not disturbed"
vdisk snapshot create idle base2 >/dev/null || fail "snapshot of idle"
fio --name=victim --ioengine=nbd --uri="$(uri vm1)" --size=64M --rw=randwrite --bs=4k \
    --iodepth=16 --time_based --runtime=6 --output="$TESTDIR/fio-victim.txt" &
VICTIM=$!
fio --name=bystander --ioengine=nbd --uri="$(uri idle)" --size=16M --rw=randwrite --bs=4k \
    --iodepth=16 --time_based --runtime=4 --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --verify_state_save=0 --output="$TESTDIR/fio-bystander.txt" &
BYSTANDER=$!
sleep 1.5
vdisk snapshot rollback --force vm1 s1 >"$TESTDIR/rb.txt" 2>&1 || { cat "$TESTDIR/rb.txt"; fail "rollback --force under load"; }
cat "$TESTDIR/rb.txt"
grep -q "1 client(s) disconnected" "$TESTDIR/rb.txt" || fail "the fio client was not disconnected"
if wait $VICTIM; then
    fail "fio on the rolled back volume did not notice its disconnection"
fi
wait $BYSTANDER || { cat "$TESTDIR/fio-bystander.txt"; fail "fio on another volume failed during the rollback"; }
grep -q "err= 0" "$TESTDIR/fio-bystander.txt" || { cat "$TESTDIR/fio-bystander.txt"; fail "fio on another volume reported errors"; }
"$PY" - "$SOCK" <<'PYEOF' || fail "vm1 after the rollback under load"
import nbd, sys
u = "nbd+unix:///%s?socket=" + sys.argv[1]
v, s1 = nbd.NBD(), nbd.NBD()
v.connect_uri(u % "vm1")
s1.connect_uri(u % "vm1@s1")
for off in range(0, 64 << 20, 1 << 20):
    assert v.pread(1 << 20, off) == s1.pread(1 << 20, off), "vm1 differs from s1 at %d" % off
print("vm1 reads as s1 after the forced rollback under load")
PYEOF

vdisk snapshot list vm1 | grep -q s1 || fail "vdisk snapshot list vm1 does not show s1"
vdisk snapshot list vm1 | grep -q s2 || fail "vdisk snapshot list vm1 does not show s2"
grep "taken online" "$TESTDIR/vdiskd.log" || fail "the log does not mention the online snapshot"
stop_daemon
vdisk check >"$TESTDIR/check.txt" 2>&1 || { cat "$TESTDIR/check.txt"; fail "vdisk check after the online snapshot"; }
echo "PASS"
