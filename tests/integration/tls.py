"""tls.py - NBD's TLS negotiation spoken by hand, for test-nbd-tls.sh: what
real clients cannot be made to do (options before STARTTLS, plaintext
slipped in after it, a second STARTTLS, an old TLS version).  Run with
Debian's python3.

  tls.py reqd HOST PORT              LIST before STARTTLS gets NBD_REP_ERR_TLS_REQD,
                                     and EXPORT_NAME ends the session
  tls.py inject HOST PORT            bytes after STARTTLS in the same write: the
                                     server hangs up instead of starting TLS
  tls.py twice HOST PORT CA CERT KEY a second STARTTLS, under TLS: NBD_REP_ERR_INVALID
  tls.py oldtls HOST PORT CA         a client that stops at TLS 1.1 is refused
  tls.py hold URI SECONDS OUT        keeps a connection, writing and reading back
                                     every 0.2 s; writes "ok N" or the error to OUT
"""
import socket
import ssl
import struct
import sys
import time
import warnings

IHAVEOPT = 0x49484156454F5054
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
REP_ACK = 1
REP_ERR_INVALID = 0x80000003
REP_ERR_TLS_REQD = 0x80000005


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def start(host, port):
    s = socket.create_connection((host, int(port)), timeout=10)
    greeting = recv_exact(s, 18)
    assert greeting[:8] == b"NBDMAGIC", greeting
    s.sendall(struct.pack(">I", 3))         # fixed newstyle, no zeroes
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def reply(s):
    magic, opt, typ, length = struct.unpack(">QIII", recv_exact(s, 20))
    return typ, recv_exact(s, length)


def closed(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def main(argv):
    cmd = argv[1]
    if cmd == "reqd":
        s = start(argv[2], argv[3])
        option(s, OPT_LIST)
        typ, msg = reply(s)
        assert typ == REP_ERR_TLS_REQD, hex(typ)
        print("LIST before STARTTLS: NBD_REP_ERR_TLS_REQD (%s)" % msg.decode())
        option(s, OPT_EXPORT_NAME, b"v1")
        assert closed(s), "EXPORT_NAME before TLS did not end the session"
        print("EXPORT_NAME before STARTTLS: the session ended")
    elif cmd == "inject":
        s = start(argv[2], argv[3])
        # STARTTLS and, in the same write, a plaintext option meant to be
        # taken as if it came under TLS.
        s.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0) +
                  struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
        typ, _ = reply(s)
        assert typ == REP_ACK, hex(typ)
        assert closed(s), "plaintext after STARTTLS was not refused"
        print("plaintext after STARTTLS: the session ended")
    elif cmd == "twice":
        s = start(argv[2], argv[3])
        option(s, OPT_STARTTLS)
        typ, _ = reply(s)
        assert typ == REP_ACK, hex(typ)
        ctx = ssl.create_default_context(cafile=argv[4])
        ctx.load_cert_chain(argv[5], argv[6])
        t = ctx.wrap_socket(s, server_hostname="localhost")
        option(t, OPT_STARTTLS)
        typ, msg = reply(t)
        assert typ == REP_ERR_INVALID, hex(typ)
        print("STARTTLS under TLS: NBD_REP_ERR_INVALID (%s)" % msg.decode())
        option(t, OPT_ABORT)
    elif cmd == "oldtls":
        s = start(argv[2], argv[3])
        option(s, OPT_STARTTLS)
        typ, _ = reply(s)
        assert typ == REP_ACK, hex(typ)
        ctx = ssl.create_default_context(cafile=argv[4])
        warnings.simplefilter("ignore", DeprecationWarning)    # the point here
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            ctx.options &= ~ssl.OP_NO_TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except ssl.SSLError:
            pass
        try:
            ctx.wrap_socket(s, server_hostname="localhost")
        except (ssl.SSLError, OSError) as e:
            print("a TLS 1.1 client: refused (%s)" % e)
            return 0
        print("a TLS 1.1 client was accepted")
        return 1
    elif cmd == "hold":
        import nbd
        out, n = argv[4], 0
        try:
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)        # tls-certificates=DIR
            h.connect_uri(argv[2])
            end = time.monotonic() + float(argv[3])
            while time.monotonic() < end:
                data = struct.pack("<Q", n) * 512
                h.pwrite(data, 1 << 20)
                assert h.pread(4096, 1 << 20) == data
                n += 1
                time.sleep(0.2)
            h.shutdown()
            result = "ok %d" % n
        except Exception as e:          # the test reads what happened
            result = "error after %d: %s" % (n, e)
        with open(out, "w") as f:
            f.write(result + "\n")
    else:
        print("tls.py: unknown command " + cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
