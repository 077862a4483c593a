#!/bin/sh
# test-nbd-strict.sh - requests a polite client never sends.  libnbd with
# strict mode off (nbd.NBD.set_strict_mode(0)) sends reads, writes, trims
# and zeroes out of range, unaligned and of length zero, writes to a
# read-only export, and a raw socket client sends an unknown command: vdiskd
# answers each with the error proto.md asks for and goes on serving the same
# connection.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 8M >/dev/null || fail "create vm1"
vdisk snapshot create vm1 s1 >/dev/null || fail "snapshot"
start_daemon

"$PY" - "$SOCK" <<'PYEOF' || fail "nbdsh strict-mode checks"
import errno, nbd, sys
sock = sys.argv[1]
SIZE = 8 << 20

def conn(name):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h

def expect(what, fn, errs):
    try:
        fn()
    except nbd.Error as e:
        # libnbd gives the errno as its name ("EINVAL") or as a number.
        en = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), -1)
        if en not in errs:
            raise SystemExit("%s: errno %s (%s), expected one of %s"
                             % (what, e.errno, e.string, errs))
        print("%-40s -> %s" % (what, errno.errorcode.get(en, en)))
        return
    if 0 not in errs:
        raise SystemExit("%s: succeeded, expected %s" % (what, errs))
    print("%-40s -> ok" % what)

h = conn("vm1")
assert h.get_size() == SIZE
h.pwrite(b"\x42" * 4096, 0)
EINVAL, ENOSPC, EPERM, ENOTSUP = errno.EINVAL, errno.ENOSPC, errno.EPERM, errno.ENOTSUP

expect("read past the end", lambda: h.pread(4096, SIZE), [EINVAL])
expect("read straddling the end", lambda: h.pread(8192, SIZE - 4096), [EINVAL])
expect("read at 2^63", lambda: h.pread(512, 1 << 63), [EINVAL])
expect("read at 2^64-512 (overflow)", lambda: h.pread(1024, (1 << 64) - 512), [EINVAL])
expect("write past the end", lambda: h.pwrite(b"x" * 512, SIZE), [ENOSPC, EINVAL])
expect("write straddling the end", lambda: h.pwrite(b"x" * 4096, SIZE - 512), [ENOSPC, EINVAL])
expect("trim past the end", lambda: h.trim(4096, SIZE), [ENOSPC, EINVAL])
expect("zero past the end", lambda: h.zero(4096, SIZE), [ENOSPC, EINVAL])
expect("block status past the end", lambda: h.block_status(4096, SIZE, lambda *a: 0), [EINVAL])
expect("read of 64 MiB (> max payload)", lambda: h.pread(64 << 20, 0), [EINVAL, ENOSPC, errno.EOVERFLOW, errno.ENOMEM])

# Unaligned (below the 512-byte minimum block size): refused with EINVAL,
# or served correctly.
def unaligned_read():
    b = h.pread(100, 10)
    assert b == b"\x42" * 100, b
expect("unaligned read", unaligned_read, [0, EINVAL])
expect("unaligned write", lambda: h.pwrite(b"u" * 100, 4097), [0, EINVAL])
expect("unaligned trim", lambda: h.trim(100, (1 << 20) + 7), [0, EINVAL])
expect("unaligned zero", lambda: h.zero(100, (1 << 20) + 7), [0, EINVAL])
expect("fast zero, partial sub-block", lambda: h.zero(512, 8192, nbd.CMD_FLAG_FAST_ZERO),
       [0, ENOTSUP])
expect("fast zero, whole sub-blocks", lambda: h.zero(8192, 8192, nbd.CMD_FLAG_FAST_ZERO), [0])

# Zero length: proto.md lets the server accept or refuse; it must answer.
expect("zero-length read", lambda: h.pread(0, 0), [0, EINVAL])
expect("zero-length write", lambda: h.pwrite(b"", 0), [0, EINVAL])
expect("zero-length trim", lambda: h.trim(0, 0), [0, EINVAL])
expect("zero-length zero", lambda: h.zero(0, 0), [0, EINVAL])
assert h.can_cache(), "CACHE is advertised"
expect("cache", lambda: h.cache(4096, 0), [0])
expect("cache beyond the end", lambda: h.cache(4096, h.get_size()), [EINVAL])
expect("write with FUA", lambda: h.pwrite(b"f" * 4096, 4096, nbd.CMD_FLAG_FUA), [0])

# Still serving: the data written first is intact.
assert h.pread(4096, 0) == b"\x42" * 4096
h.flush()
h.shutdown()

# A read-only export refuses every change with EPERM.
r = conn("vm1@s1")
assert r.is_read_only()
expect("write to a snapshot", lambda: r.pwrite(b"x" * 512, 0), [EPERM])
expect("trim on a snapshot", lambda: r.trim(512, 0), [EPERM])
expect("zero on a snapshot", lambda: r.zero(512, 0), [EPERM])
assert r.pread(512, 0) == b"\0" * 512
r.shutdown()

# Unknown export names are refused at the handshake.
try:
    conn("nosuch")
    raise SystemExit("unknown export accepted")
except nbd.Error as e:
    print("unknown export -> %s" % e.string)
PYEOF

echo "== raw socket: an unknown command, then a valid read on the same connection"
"$PY" - "$SOCK" <<'PYEOF' || fail "raw-socket checks"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("server closed the connection")
        b += c
    return b
assert recv(8) == b"NBDMAGIC" and recv(8) == b"IHAVEOPT"
recv(2)                                            # handshake flags
s.sendall(struct.pack(">I", 3))                    # FIXED_NEWSTYLE | NO_ZEROES
name = b"vm1"
s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)   # NBD_OPT_EXPORT_NAME
size, flags = struct.unpack(">QH", recv(10))
assert size == 8 << 20, size
def request(typ, handle, off, length, flags=0):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, handle, off, length))
def reply():
    magic, err, handle = struct.unpack(">IIQ", recv(16))
    assert magic == 0x67446698, hex(magic)
    return err, handle
request(99, 7, 0, 4096)                            # no such command
err, hd = reply()
print("unknown command -> error %d" % err)
assert hd == 7 and err == 22, (hd, err)            # EINVAL
request(0, 8, 0, 4096)                             # READ still works
err, hd = reply()
assert hd == 8 and err == 0, (hd, err)
data = recv(4096)
assert data == b"\x42" * 4096, data[:16]
request(0, 9, 8 << 20, 4096)                       # out of range
err, hd = reply()
assert hd == 9 and err == 22, (hd, err)
request(2, 10, 0, 0)                               # NBD_CMD_DISC
s.close()
PYEOF

# The daemon survived all of it.
nbdinfo --can write "$(uri vm1)" || fail "vdiskd stopped serving"
stop_daemon
echo "PASS"
