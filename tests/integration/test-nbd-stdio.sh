#!/bin/sh
# test-nbd-stdio.sh - `vdiskd --stdio` serves one connection on stdin and
# stdout: libnbd starts it with connect_command, reads what the CLI wrote,
# writes and flushes, disconnects, and the daemon exits 0; the data is in
# the store afterwards.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create v 16M >/dev/null || fail "create v"
vdisk io -c 'write -P 0x61 0 64k' v >/dev/null || fail "vdisk io write"
"$PY" - "$DAEMON" "$STORE" 2>"$TESTDIR/stdio.log" <<'PYEOF' || { cat "$TESTDIR/stdio.log"; fail "stdio session"; }
import sys, nbd
daemon, store = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_export_name("v")
h.connect_command([daemon, "--store", store, "--stdio"])
assert h.get_size() == 16 << 20, h.get_size()
assert h.pread(65536, 0) == b"a" * 65536, "data written by the CLI"
assert h.can_multi_conn()
h.pwrite(b"xyz!" * 1024, 1 << 20)
h.flush()
assert h.pread(4096, 1 << 20) == b"xyz!" * 1024
h.shutdown()
PYEOF
grep -q "ERROR: AddressSanitizer\|runtime error" "$TESTDIR/stdio.log" && { cat "$TESTDIR/stdio.log"; fail "sanitizer report"; }
vdisk export -O raw v "$TESTDIR/v.raw" >/dev/null || fail "export"
"$PY" -c "
import sys
d = open(sys.argv[1], 'rb').read()
assert d[1 << 20:(1 << 20) + 4096] == b'xyz!' * 1024, 'written over stdio'
" "$TESTDIR/v.raw" || fail "data written over stdio is not in the store"
vdisk check v >/dev/null || fail "vdisk check"
echo "PASS"
