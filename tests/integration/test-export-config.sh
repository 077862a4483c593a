#!/bin/sh
# test-export-config.sh - export-add and export-remove on the control API:
#  - an alias serves a volume under another name, read-only if asked: it is
#    listed, reads the volume, and refuses writes (EPERM); a read-only
#    volume name likewise; aliases cannot hide store names, point at
#    nothing or at other aliases;
#  - export-remove of a served volume: "safe" is refused naming the client,
#    "hard" disconnects it; the name is then neither listed nor served, and
#    the volume is free for offline operations (vdisk snapshot create runs
#    in the CLI itself); export-add serves it again;
#  - bad arguments get errors; query-export-config shows the settings.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdinfo
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"

vdisk create vm1 16M >/dev/null || fail "create vm1"
vdisk io -c "write -P 7 0 1M" vm1 >/dev/null || fail "write vm1"
start_daemon

"$PY" - "$STORE/control.sock" "$SOCK" "$VDISK" <<'PYEOF' || fail "export-add / export-remove"
import json, nbd, socket, subprocess, sys
ctl, sock, vdisk = sys.argv[1:4]
u = "nbd+unix:///%s?socket=" + sock
sys.path.insert(0, "tests/integration")
from ctl import Ctl
cmd = Ctl(ctl).cmd
def listed():
    out = subprocess.run(["nbdinfo", "--list", "--json", "nbd+unix://?socket=" + sock],
                         capture_output=True, text=True, check=True).stdout
    return {e["export-name"]: e.get("description", "") for e in json.loads(out)["exports"]}

# An alias, read-only.
r = cmd("export-add", name="gold", target="vm1", **{"read-only": True})
assert r == {"return": {}}, r
assert "alias of vm1 (read-only)" in listed()["gold"], listed()
g = nbd.NBD()
g.connect_uri(u % "gold")
assert g.is_read_only()
assert g.pread(4096, 0) == b"\x07" * 4096
try:
    g.pwrite(b"x" * 4096, 0)
    raise SystemExit("a write through a read-only alias was accepted")
except nbd.Error as e:
    print("write through the read-only alias:", e)
v = nbd.NBD()
v.connect_uri(u % "vm1")
assert not v.is_read_only()
v.pwrite(b"\x09" * 4096, 0)
assert g.pread(4096, 0) == b"\x09" * 4096          # one chain, two names
g.shutdown()
# The volume's own name made read-only, then writable again.
assert cmd("export-add", name="vm1", **{"read-only": True}) == {"return": {}}
r2 = nbd.NBD()
r2.connect_uri(u % "vm1")
assert r2.is_read_only()
r2.shutdown()
assert cmd("export-add", name="vm1") == {"return": {}}
w2 = nbd.NBD()
w2.connect_uri(u % "vm1")
assert not w2.is_read_only()
w2.shutdown()
# Refused aliases.
for args in ({"name": "vm1", "target": "gold"}, {"name": "x", "target": "nosuch"},
             {"name": "y", "target": "gold"}, {"name": "gold", "target": "vm1@nope"},
             {"name": "z"}, {"target": "vm1"}, {"name": "a", "read-only": "yes"},
             {"name": "", "target": "vm1"}, {"name": "n" * 300, "target": "vm1"}):
    r = cmd("export-add", **args)
    assert "error" in r, (args, r)
    print("export-add", args if len(str(args)) < 80 else "(long name)", "->", r["error"]["desc"])

# export-remove: safe refuses while a client is connected.
r = cmd("export-remove", name="vm1")
assert "in use by 1 NBD client" in r["error"]["desc"] and "unix:" in r["error"]["desc"], r
assert v.pread(4096, 0) == b"\x09" * 4096
r = cmd("export-remove", name="vm1", mode="hard")
assert r == {"return": {"disconnected": 1}}, r
try:
    v.pread(4096, 0)
    raise SystemExit("the client was not disconnected")
except nbd.Error as e:
    print("removed export's client:", e)
assert "vm1" not in listed()
try:
    h = nbd.NBD()
    h.connect_uri(u % "vm1")
    raise SystemExit("a removed export was served")
except nbd.Error as e:
    print("removed export:", e)
p = subprocess.run([vdisk, "snapshot", "create", "vm1", "offline"], capture_output=True, text=True)
assert p.returncode == 0 and "taken by vdiskd" not in p.stdout, p
print(p.stdout.strip())
assert "error" in cmd("export-remove", name="vm1")         # already removed
cfg = {c["name"]: c for c in cmd("query-export-config")["return"]}
assert cfg["vm1"]["removed"] and cfg["gold"]["target"] == "vm1", cfg
# The alias still serves (it names the volume, not the removed name).
g = nbd.NBD()
g.connect_uri(u % "gold")
assert g.pread(4096, 0) == b"\x09" * 4096
g.shutdown()
assert cmd("export-remove", name="gold") == {"return": {"disconnected": 0}}
assert "gold" not in listed()
assert cmd("export-add", name="vm1") == {"return": {}}
v = nbd.NBD()
v.connect_uri(u % "vm1")
assert v.pread(4096, 0) == b"\x09" * 4096
v.shutdown()
assert "vm1" in listed() and cmd("query-export-config")["return"] == []
for args in ({}, {"name": "vm1", "mode": "soft"}, {"name": 5}, {"name": "nosuch"}):
    r = cmd("export-remove", **args)
    assert "error" in r, (args, r)
PYEOF
stop_daemon
echo "PASS"
