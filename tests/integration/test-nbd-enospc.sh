#!/bin/sh
# test-nbd-enospc.sh - a full disk under a served volume.
#
# The store lives on a 48 MiB tmpfs (a small file system of its own: needs
# root, else the test is skipped) with an 8 MiB filler file beside it.  A
# client writes 1 MiB blocks into a 128 MiB volume until the disk is full:
#  - the write that cannot be stored fails with ENOSPC at the client, and
#    everything acknowledged before reads back;
#  - once the filler is removed, writes and FLUSH work again;
#  - after a clean stop the index was written (no flush ran into the full
#    disk: index pages get their blocks when first needed), `vdisk check`
#    is clean, and a restarted daemon serves every acknowledged block.
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
start_daemon

"$PY" - "$SOCK" "$SMALL/filler" "$TESTDIR/written" <<'PYEOF' || fail "ENOSPC"
import nbd, os, sys
sock, filler, out = sys.argv[1:4]
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
for i in range(n):
    assert h.pread(4096, i << 20) == bytes([i + 1]) * 4096, "block %d" % i
os.unlink(filler)
h.pwrite(bytes([n + 1]) * (1 << 20), n << 20)
h.flush()
print("after freeing space: a write and a flush work again")
open(out, "w").write(str(n + 1))
h.shutdown()
PYEOF
stop_daemon
vdisk check >"$TESTDIR/check.txt" 2>&1 || { cat "$TESTDIR/check.txt"; fail "vdisk check after ENOSPC"; }
cat "$TESTDIR/check.txt"

start_daemon
"$PY" - "$SOCK" "$(cat "$TESTDIR/written")" <<'PYEOF' || fail "data after restart"
import nbd, sys
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sys.argv[1])
n = int(sys.argv[2])
for i in range(n):
    assert h.pread(1 << 20, i << 20) == bytes([i + 1]) * (1 << 20), "block %d after restart" % i
print("all %d acknowledged MiB read back after a restart" % n)
h.shutdown()
PYEOF
stop_daemon
echo "PASS"
