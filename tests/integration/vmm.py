"""vmm.py - helpers for test-vmm.sh: the test guest's checksums and
patterns (tests/guest/guest.c), its script sector, and vdisk-vmm's control
socket.  Run with Debian's python3 (it has the nbd module):

  vmm.py fnv FILE N                FNV-1a 64 of FILE's first N bytes, as the guest prints it
  vmm.py randfile FILE SIZE SEED   SIZE random bytes, the same for the same SEED
  vmm.py pattern URI               checks the guest's pattern at 1 MiB (32 KiB) on an export
  vmm.py same URI1 URI2 OFF LEN    the two exports hold the same bytes there (exit 1 if not)
  vmm.py zero URI OFF LEN          the export reads zeroes there (exit 1 if not)
  vmm.py script URI STEPS          writes the script sector (3 MiB): "VDGUEST1", STEPS
  vmm.py ctl SOCK LINE             sends LINE to vdisk-vmm's control socket, prints the reply
  vmm.py wait FILE TEXT SECONDS    waits until FILE contains TEXT (exit 1 on timeout)
"""
import os
import random
import socket
import struct
import sys
import time

PATTERN_OFFSET = 1 << 20
PATTERN_BYTES = 32 << 10
SCRIPT_OFFSET = 3 << 20


def fnv(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return "%016x" % h


def pattern_sector(sector):
    text = b"vdisk-guest"
    out = bytearray(512)
    for o in range(512):
        out[o] = (sector >> (8 * o)) & 0xff if o < 8 else text[o % len(text)]
    return bytes(out)


def connect(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def main(argv):
    cmd = argv[1]
    if cmd == "fnv":
        with open(argv[2], "rb") as f:
            print(fnv(f.read(int(argv[3]))))
    elif cmd == "randfile":
        rng = random.Random(argv[4])
        with open(argv[2], "wb") as f:
            f.write(rng.randbytes(int(argv[3])))
    elif cmd == "pattern":
        h = connect(argv[2])
        got = h.pread(PATTERN_BYTES, PATTERN_OFFSET)
        want = b"".join(pattern_sector(PATTERN_OFFSET // 512 + i)
                        for i in range(PATTERN_BYTES // 512))
        h.shutdown()
        if got != want:
            print("the guest's pattern is not at 1 MiB")
            return 1
    elif cmd == "same":
        off, length = int(argv[4]), int(argv[5])
        a, b = connect(argv[2]), connect(argv[3])
        same = a.pread(length, off) == b.pread(length, off)
        a.shutdown()
        b.shutdown()
        return 0 if same else 1
    elif cmd == "zero":
        h = connect(argv[2])
        got = h.pread(int(argv[4]), int(argv[3]))
        h.shutdown()
        return 0 if got == bytes(len(got)) else 1
    elif cmd == "script":
        h = connect(argv[2])
        sector = b"VDGUEST1" + struct.pack("<I", int(argv[3]))
        h.pwrite(sector + bytes(512 - len(sector)), SCRIPT_OFFSET)
        h.flush()
        h.shutdown()
    elif cmd == "ctl":
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(argv[2])
        s.sendall(argv[3].encode() + b"\n")
        f = s.makefile("rb")
        print(f.readline().decode().rstrip("\n"))
    elif cmd == "wait":
        end = time.monotonic() + float(argv[4])
        while time.monotonic() < end:
            if os.path.exists(argv[2]):
                with open(argv[2], "rb") as f:
                    if argv[3].encode() in f.read():
                        return 0
            time.sleep(0.02)
        print("timed out waiting for %r in %s" % (argv[3], argv[2]))
        return 1
    else:
        print("vmm.py: unknown command " + cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
