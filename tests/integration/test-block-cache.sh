#!/bin/sh
# test-block-cache.sh - the block cache of frozen layers under a small boot
# storm: 8 linked clones of one 32 MiB template read whole at once by 8
# nbdcopy processes (vdiskd on 2 threads, so waits cross threads).
#  - every reader gets the template's bytes (sha256);
#  - with the cache, the template is read from disk about once
#    (query-stats: physical-read-bytes <= 1.1 x 32 MiB), and readers waited
#    for chunks others were loading;
#  - without it (--block-cache 0) the counter sees 8 reads of everything;
#  - with a cache far smaller than the template (1 MiB: chunks evicted all
#    the time) the data is still right; clones' own writes are not cached;
#    query-stats counts each export's cache hits.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdcopy sha256sum
[ -x "$PY" ] || skip "$PY is not installed"

head -c 33554432 /dev/urandom >"$TESTDIR/raw" || fail "random data"
vdisk import "$TESTDIR/raw" src >/dev/null || fail "import src"
vdisk template create gold --from src >/dev/null || fail "template"
i=1
while [ $i -le 8 ]; do
    vdisk clone gold c$i >/dev/null || fail "clone $i"
    i=$((i + 1))
done

stats() {
    "$PY" - "$STORE/control.sock" <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
f.readline()
f.write(b'{"execute":"query-stats"}\n')
f.flush()
print(json.dumps(json.loads(f.readline())["return"]["frozen-layers"]))
PYEOF
}

# storm LABEL: 8 concurrent whole-disk reads, checked against the template.
storm() {
    want=$(nbdcopy "$(uri gold)" - | sha256sum | cut -d' ' -f1)
    before=$(stats | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["physical-read-bytes"])')
    pids=
    i=1
    while [ $i -le 8 ]; do
        (nbdcopy --connections=1 "$(uri c$i)" - | sha256sum | cut -d' ' -f1 >"$TESTDIR/sum.$i") &
        pids="$pids $!"
        i=$((i + 1))
    done
    wait $pids
    i=1
    while [ $i -le 8 ]; do
        [ "$(cat "$TESTDIR/sum.$i")" = "$want" ] || fail "$1: clone $i did not read the template"
        i=$((i + 1))
    done
    stats >"$TESTDIR/stats.json"
    after=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["physical-read-bytes"])' "$TESTDIR/stats.json")
    phys=$((after - before))
    echo "$1: 8 x 32 MiB read, $((phys >> 20)) MiB from the template's file; $(cat "$TESTDIR/stats.json")"
}

start_daemon --threads 2
storm "cache 256M"
[ $phys -le $((33554432 * 11 / 10)) ] || fail "the template was read $phys bytes for a 32 MiB storm"
"$PY" -c 'import json,sys; b=json.load(open(sys.argv[1]))["block-cache"]; sys.exit(0 if b["waits"] > 0 and b["hits"] > 0 else 1)' "$TESTDIR/stats.json" ||
    fail "no reader waited for a chunk being loaded"
stop_daemon

start_daemon --threads 2 --block-cache 0
storm "no cache"
[ $phys -ge $((33554432 * 7)) ] || fail "without a cache only $phys bytes were counted"
stop_daemon

start_daemon --threads 2 --block-cache 1M
"$PY" - "$SOCK" "$STORE/control.sock" <<'PYEOF' || fail "writes of a clone"
import nbd, sys
sys.path.insert(0, "tests/integration")
from ctl import Ctl
h = nbd.NBD()
h.connect_uri("nbd+unix:///c3?socket=" + sys.argv[1])
t = nbd.NBD()
t.connect_uri("nbd+unix:///gold?socket=" + sys.argv[1])
old = t.pread(65536, 1 << 20)
assert h.pread(65536, 1 << 20) == old
assert h.pread(65536, 1 << 20) == old          # again: from the cache
ex = {e["name"]: e for e in Ctl(sys.argv[2]).cmd("query-stats")["return"]["exports"]}
print("c3:", ex["c3"]["frozen-read-bytes"], "bytes read from the template,",
      ex["c3"]["cache-hit-bytes"], "found in the cache")
assert ex["c3"]["cache-hit-bytes"] >= 65536, ex["c3"]
assert 0 < ex["c3"]["frozen-read-bytes"] <= 2 * 65536, ex["c3"]
assert ex["gold"]["frozen-read-bytes"] == 0, ex["gold"]        # its own layer: the top
h.pwrite(b"\x77" * 65536, 1 << 20)
assert h.pread(65536, 1 << 20) == b"\x77" * 65536
assert t.pread(65536, 1 << 20) == old
h.shutdown()
t.shutdown()
PYEOF
stop_daemon
vdisk rm c3 >/dev/null && vdisk clone gold c3 >/dev/null || fail "reclone c3"
start_daemon --threads 2 --block-cache 1M
storm "cache 1M"
stop_daemon
echo "PASS"
