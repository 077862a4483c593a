#!/bin/sh
# test-nbd-enospc.sh - a full disk under a served volume.
#
# The store lives on a 48 MiB tmpfs (a small file system of its own: needs
# root, else the test is skipped) with an 8 MiB filler file beside it.  A
# client writes 1 MiB blocks into a 128 MiB volume until the disk is full:
#  - the write that cannot be stored fails with ENOSPC at the client, and
#    everything acknowledged before reads back;
#  - once the filler is removed, writes and FLUSH work again;
#  - the daemon watches the free space (--space-warn 50,20): a SPACE_LOW
#    event for the 20 % threshold and a warning in its log when the disk
#    fills, query-stats reports the figures;
#  - after a clean stop the index was written (no flush ran into the full
#    disk: index pages get their blocks when first needed), `vdisk check`
#    is clean, and a restarted daemon serves every acknowledged block;
#  - TRIM of the whole volume gives the space back to the file system
#    (holes punched), and the daemon says so (SPACE_OK).
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"
SMALL=$TESTDIR/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=48m tmpfs "$SMALL" 2>/dev/null ||
    skip "cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)"
umount_small() { cleanup; umount "$SMALL" 2>/dev/null; }
trap umount_small EXIT
STORE=$SMALL/store
export VDISK_STORE="$STORE"
vdisk create vm1 128M >/dev/null || fail "create vm1"
dd if=/dev/zero of="$SMALL/filler" bs=1M count=8 status=none || fail "filler"
start_daemon --space-warn 50,20
cat >"$TESTDIR/events.py" <<'PYEOF'
import json, socket, threading, time
class Events:
    """A control connection that records every event."""
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.events, self.replies = [], []
        threading.Thread(target=self.read, daemon=True).start()
    def read(self):
        for line in self.f:
            m = json.loads(line)
            (self.events if "event" in m else self.replies).append(m)
    def wait(self, name, pred=lambda d: True, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e["event"] == name and pred(e["data"]):
                    return e["data"]
            time.sleep(0.1)
        raise SystemExit("no %s event in %d s: %s" % (name, timeout, self.events))
    def cmd(self, command):
        n = len(self.replies)
        self.f.write((json.dumps({"execute": command}) + "\n").encode())
        self.f.flush()
        while len(self.replies) == n:
            time.sleep(0.05)
        return self.replies[n]
PYEOF

"$PY" - "$SOCK" "$SMALL/filler" "$TESTDIR/written" "$STORE/control.sock" "$TESTDIR" <<'PYEOF' || fail "ENOSPC"
import nbd, os, sys
sock, filler, out = sys.argv[1:4]
sys.path.insert(0, sys.argv[5])
from events import Events
ev = Events(sys.argv[4])
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sock)
n = 0
try:
    for i in range(128):
        h.pwrite(bytes([i + 1]) * (1 << 20), i << 20)
        n += 1
    raise SystemExit("128 MiB fit on a 48 MiB file system?")
except nbd.Error as e:
    print("after %d MiB: %s" % (n, e))
    assert e.errno == "ENOSPC", e.errno
assert n > 8, n
low = ev.wait("SPACE_LOW", lambda d: d["threshold-percent"] == 20)
print("event:", low)
assert low["free-percent"] < 20 and low["total-bytes"] > 0, low
st = ev.cmd("query-stats")["return"]["store"]
assert st["total-bytes"] == low["total-bytes"] and st["free-bytes"] < st["total-bytes"] // 5, st
for i in range(n):
    assert h.pread(4096, i << 20) == bytes([i + 1]) * 4096, "block %d" % i
os.unlink(filler)
h.pwrite(bytes([n + 1]) * (1 << 20), n << 20)
h.flush()
print("after freeing space: a write and a flush work again")
open(out, "w").write(str(n + 1))
h.shutdown()
PYEOF
grep -q "only .* free of .*below 20%" "$TESTDIR/vdiskd.log" || fail "no warning in the log for the full disk"
stop_daemon
vdisk check >"$TESTDIR/check.txt" 2>&1 || { cat "$TESTDIR/check.txt"; fail "vdisk check after ENOSPC"; }
cat "$TESTDIR/check.txt"

start_daemon --space-warn 50,20
"$PY" - "$SOCK" "$(cat "$TESTDIR/written")" "$STORE/control.sock" "$TESTDIR" "$SMALL" <<'PYEOF' || fail "data after restart"
import nbd, os, sys
sys.path.insert(0, sys.argv[4])
from events import Events
ev = Events(sys.argv[3])   # SPACE_LOW came at startup, before this client
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sys.argv[1])
n = int(sys.argv[2])
for i in range(n):
    assert h.pread(1 << 20, i << 20) == bytes([i + 1]) * (1 << 20), "block %d after restart" % i
print("all %d acknowledged MiB read back after a restart" % n)
sv = os.statvfs(sys.argv[5])
before = sv.f_bavail * sv.f_frsize
h.trim(128 << 20, 0)
h.flush()
sv = os.statvfs(sys.argv[5])
after = sv.f_bavail * sv.f_frsize
print("TRIM of the whole volume: %d MiB free before, %d MiB after" % (before >> 20, after >> 20))
assert after - before >= (n - 2) << 20, (before, after)
assert h.pread(1 << 20, 0) == bytes(1 << 20)
print("event:", ev.wait("SPACE_OK"))
h.shutdown()
PYEOF
stop_daemon
echo "PASS"
