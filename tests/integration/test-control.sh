#!/bin/sh
# test-control.sh - the JSON control API (docs/CONTROL-API.md), driven by a
# small client written with Python's socket and json modules:
#  - the socket is in the store, mode 0600 (0660 and the group with
#    --control-group), absent with --control none;
#  - the greeting, then one reply line per command line, ids echoed,
#    several commands in one write answered in order;
#  - query-version, query-volumes (served or not, linked clones),
#    query-exports (connections and thread while NBD clients are
#    connected), query-stats (exact operation and byte counts, latency
#    percentiles, allocation) and `vdisk stats` (table, JSON, --watch);
#  - bad input: not JSON, not an object, no "execute", "arguments" not an
#    object, an unknown command, a line over 1 MiB (error, then closed):
#    each gets an error of the right class and the daemon keeps serving;
#  - quit: the reply, then a SHUTDOWN event, and vdiskd exits 0.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 16M >/dev/null || fail "create vm1"
vdisk create base 16M >/dev/null || fail "create base"
vdisk template create gold --from base >/dev/null || fail "template"
vdisk clone gold desk1 >/dev/null || fail "clone"
CTL=$STORE/control.sock

echo "== --control none: no socket"
start_daemon --control none
[ ! -e "$CTL" ] || fail "--control none made $CTL"
stop_daemon

echo "== --control-group: mode 0660 and the group"
grp=$(id -gn)
start_daemon --control-group "$grp"
[ "$(stat -c '%a %G' "$CTL")" = "660 $grp" ] || fail "control socket: $(stat -c '%a %G' "$CTL"), expected 660 $grp"
stop_daemon
[ ! -e "$CTL" ] || fail "vdiskd left $CTL behind"

echo "== the API"
start_daemon --threads 2
[ "$(stat -c '%a' "$CTL")" = 600 ] || fail "control socket mode $(stat -c '%a' "$CTL"), expected 600"
"$PY" - "$CTL" "$SOCK" <<'PYEOF' || fail "control API"
import json, nbd, socket, sys
ctl, sock = sys.argv[1], sys.argv[2]

class Client:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(ctl)
        self.f = self.s.makefile("rwb")
        self.greeting = self.line()
    def line(self):
        l = self.f.readline()
        assert l.endswith(b"\n"), l
        return json.loads(l)
    def send(self, raw):
        self.f.write(raw if isinstance(raw, bytes) else raw.encode())
        self.f.flush()
    def cmd(self, name, args=None, id=None):
        m = {"execute": name}
        if args is not None: m["arguments"] = args
        if id is not None: m["id"] = id
        self.send(json.dumps(m) + "\n")
        return self.line()

c = Client()
g = c.greeting["vdiskd"]
assert g["version"]["vdiskd"]["major"] == 0 and "events" in g["capabilities"], c.greeting
print("greeting:", c.greeting)
r = c.cmd("query-version", id=1)
assert r["id"] == 1 and r["return"]["package"].startswith("vdiskd "), r
assert c.cmd("qmp_capabilities") == {"return": {}}

vols = {v["name"]: v for v in c.cmd("query-volumes")["return"]}
assert set(vols) == {"vm1", "base", "desk1"}, vols
assert vols["desk1"]["template"] == "gold" and vols["desk1"]["depth"] == 2, vols["desk1"]
assert vols["vm1"]["size"] == 16 << 20 and not vols["vm1"]["served"], vols["vm1"]
assert c.cmd("query-exports")["return"] == []

# Two NBD connections to vm1, one to the template.
hs = []
for name in ("vm1", "vm1", "gold"):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    hs.append(h)
hs[0].pwrite(b"\x11" * 4096, 0)
ex = {e["name"]: e for e in c.cmd("query-exports", id="e")["return"]}
print("exports:", ex)
assert ex["vm1"]["connections"] == 2 and ex["vm1"]["writable"], ex
assert ex["gold"]["connections"] == 1 and not ex["gold"]["writable"], ex
assert ex["vm1"]["thread"] in (0, 1) and ex["vm1"]["size"] == 16 << 20, ex
vols = {v["name"]: v for v in c.cmd("query-volumes")["return"]}
assert vols["vm1"]["served"] and not vols["desk1"]["served"], vols

# query-stats: exact counts of what was done on vm1 so far, and latencies.
for i in range(9):
    hs[1].pwrite(b"\x22" * 8192, (1 << 20) + i * 8192)
for i in range(5):
    hs[1].pread(4096, 0)
hs[0].flush()
st = {e["name"]: e for e in c.cmd("query-stats")["return"]["exports"]}
print("stats vm1:", st["vm1"])
v = st["vm1"]
assert v["ops"]["write"] == 10 and v["ops"]["read"] == 5 and v["ops"]["flush"] == 1, v
assert v["written-bytes"] == 4096 + 9 * 8192 and v["read-bytes"] == 5 * 4096, v
assert v["in-flight"] == 0 and v["errors"] == 0 and v["connections"] == 2, v
lat = v["latency-us"]
assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
assert v["allocated"] >= 4096 + 9 * 8192, v
assert st["gold"]["ops"]["write"] == 0 and "allocated" not in st["gold"], st["gold"]
# An error is counted: an unaligned write, which the disk layer refuses
# (strict mode off, so that libnbd sends it).
hs[1].set_strict_mode(0)
try:
    hs[1].pwrite(b"x" * 100, 1)
    raise SystemExit("an unaligned write was accepted")
except nbd.Error:
    pass
st = {e["name"]: e for e in c.cmd("query-stats")["return"]["exports"]}
assert st["vm1"]["errors"] == 1 and st["vm1"]["ops"]["write"] == 11, st["vm1"]

# vdisk stats: the same counters, as a table, as JSON, and --watch.
import os, subprocess
vdisk = os.environ.get("VDISK", "build/bin/vdisk")
p = subprocess.run([vdisk, "stats"], capture_output=True, text=True)
print(p.stdout)
assert p.returncode == 0 and "vm1" in p.stdout and "P99us" in p.stdout, p
p = subprocess.run([vdisk, "stats", "--output", "json"], capture_output=True, text=True)
j = json.loads(p.stdout)
assert {e["name"] for e in j["exports"]} == {"vm1", "gold"}, j
p = subprocess.run(["timeout", "2.5", vdisk, "stats", "--watch"], capture_output=True, text=True)
assert p.stdout.count("EXPORT") >= 2 and "OPS/s" in p.stdout, p.stdout

# Bad input: each gets an error, the connection and the daemon go on.
c.send("this is not json\n")
r = c.line(); assert r["error"]["class"] == "GenericError" and "JSON" in r["error"]["desc"], r
c.send("[1, 2]\n")
r = c.line(); assert r["error"]["class"] == "GenericError", r
c.send('{"id": 5}\n')
r = c.line(); assert r["error"]["class"] == "GenericError" and r["id"] == 5, r
r = c.cmd("query-volumes", args=[1], id=6)
assert r["error"]["class"] == "GenericError" and r["id"] == 6, r
r = c.cmd("no-such-command", id=7)
assert r["error"]["class"] == "CommandNotFound" and r["id"] == 7, r
# Several commands in one write, answered in order; blank lines ignored.
c.send('{"execute":"query-version","id":"a"}\n\n{"execute":"query-exports","id":"b"}\r\n')
assert c.line()["id"] == "a" and c.line()["id"] == "b"

# A line over 1 MiB: an error, then the daemon closes that connection.
big = Client()
try:
    big.send(b'{"execute":"query-version","pad":"' + b"x" * (2 << 20))
except (BrokenPipeError, ConnectionResetError):
    pass   # vdiskd closed the connection before taking it all
r = big.line(); assert r["error"]["desc"] == "command line too long", r
try:
    assert big.f.readline() == b""
except ConnectionResetError:
    pass   # closed with our unread bytes in its buffer: a reset
# NBD still fine.
assert hs[1].pread(4096, 0) == b"\x11" * 4096
for h in hs:
    h.shutdown()

# quit: the reply, then the SHUTDOWN event.
r = c.cmd("quit", id="q")
assert r == {"return": {}, "id": "q"}, r
e = c.line()
assert e["event"] == "SHUTDOWN" and "seconds" in e["timestamp"], e
print("quit:", r, e)
PYEOF
# quit stopped the daemon: it must exit 0 by itself.
i=0
while kill -0 "$DPID" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "vdiskd did not exit after quit"
    sleep 0.1
done
wait "$DPID" || fail "vdiskd exited with $? after quit"
DPID=
for f in "$TESTDIR"/asan.*; do
    [ -s "$f" ] && { cat "$f"; fail "ASan/UBSan reported errors"; }
done
[ ! -e "$CTL" ] || fail "vdiskd left $CTL behind"
echo "PASS"
