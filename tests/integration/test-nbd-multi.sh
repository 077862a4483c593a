#!/bin/sh
# test-nbd-multi.sh - several clients at once:
#  - multi-conn: a write on one connection, a FLUSH on a second, and a read
#    on a third sees the data (one shared chain per export);
#  - a linked clone served read-write while its template is served
#    read-only to another client, each seeing its own content;
#  - a volume vdiskd serves read-write is locked: with no control socket
#    to ask the daemon (--control none), `vdisk snapshot create` on it fails
#    and names the daemon's pid; once the last client is gone the lock is
#    released and the snapshot works.  (With the control socket the CLI has
#    the daemon take it online: test-online-snapshot.sh.)
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need qemu-io qemu-img
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 16M >/dev/null || fail "create vm1"
vdisk create base 16M >/dev/null || fail "create base"
vdisk io -c 'write -P 0x61 0 1M' base >/dev/null 2>&1 ||
    { vdisk rm base >/dev/null; truncate -s 16M "$TESTDIR/b.raw"
      "$PY" -c "open('$TESTDIR/b.raw','r+b').write(b'\x61' * (1 << 20))"
      vdisk import -f raw "$TESTDIR/b.raw" base >/dev/null || fail "import base"; }
vdisk template create gold --from base >/dev/null || fail "template"
vdisk clone gold desk1 >/dev/null || fail "clone"

start_daemon --control none

echo "== multi-conn: write on 1, flush on 2, read on 3; the CLI lock names the pid"
"$PY" - "$SOCK" "$VDISK" "$DPID" <<'PYEOF' || fail "multi-conn"
import nbd, subprocess, sys
sock, vdisk, dpid = sys.argv[1], sys.argv[2], sys.argv[3]
u = "nbd+unix:///vm1?socket=" + sock
hs = []
for i in range(3):
    h = nbd.NBD()
    h.connect_uri(u)
    assert h.can_multi_conn()
    hs.append(h)
a, b, c = hs
a.pwrite(b"\xaa" * 65536, 1 << 20)
b.flush()
assert c.pread(65536, 1 << 20) == b"\xaa" * 65536
# In flight at once on different connections, overlapping nothing.
ca = a.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x01" * 4096)), 0)
cb = b.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x02" * 4096)), 4096)
while not (a.aio_command_completed(ca) and b.aio_command_completed(cb)):
    for h in (a, b):
        if h.aio_in_flight():
            h.poll(0)
c.flush()
assert c.pread(8192, 0) == b"\x01" * 4096 + b"\x02" * 4096
# The served volume refuses a snapshot from the CLI, naming the daemon.
p = subprocess.run([vdisk, "snapshot", "create", "vm1", "busy"], capture_output=True, text=True)
print("vdisk snapshot create:", p.returncode, p.stderr.strip())
assert p.returncode != 0
assert dpid in p.stderr, p.stderr
for h in hs:
    h.shutdown()
PYEOF

echo "== after the last client left, the lock is gone"
i=0
until vdisk snapshot create vm1 after >/dev/null 2>"$TESTDIR/err"; do
    i=$((i + 1))
    [ $i -lt 50 ] || { cat "$TESTDIR/err"; fail "vm1 stays locked without clients"; }
    sleep 0.1
done
out=$(qemu-io -r -f raw -c 'read -P 0xaa 1M 64k' "$(uri vm1@after)" 2>&1)
case $out in
*"read 65536/65536"*) ;;
*) fail "reading the new snapshot vm1@after: $out" ;;
esac

echo "== a linked clone read-write, its template read-only, at the same time"
"$PY" - "$SOCK" <<'PYEOF' || fail "clone + template"
import nbd, sys
sock = sys.argv[1]
def conn(name):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h
t = conn("gold")
d = conn("desk1")
t2 = conn("gold@1")
assert t.is_read_only() and t2.is_read_only() and not d.is_read_only()
assert d.pread(4096, 0) == b"\x61" * 4096
d.pwrite(b"\x62" * 4096, 0)
d.zero(4096, 4096)
d.flush()
assert d.pread(8192, 0) == b"\x62" * 4096 + b"\0" * 4096
# The template did not change, through either name.
for h in (t, t2):
    assert h.pread(8192, 0) == b"\x61" * 8192
try:
    t.pwrite(b"x" * 512, 0)
    raise SystemExit("the template accepted a write")
except nbd.Error:
    pass
for h in (t, d, t2):
    h.shutdown()
PYEOF
qemu-img compare "$(uri gold)" "$(uri gold@1)" || fail "gold and gold@1 differ"

stop_daemon
echo "PASS"
