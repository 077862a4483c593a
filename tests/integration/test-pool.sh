#!/bin/sh
# test-pool.sh - desktop pools served by vdiskd.
#  - an ephemeral pool of 20 clones (4 spares) of a 64 MiB template:
#    16 concurrent qemu-io sessions each check that they read the template,
#    write a pattern of their own, wait for the others (all 16 overlap) and
#    read their own pattern back; 2 nbdcopy sessions read whole disks whose
#    checksum is the template's.  While they run, `vdisk pool status` shows
#    16 sessions on 16 different clones with their holders.  After logoff
#    every session's clone is gone and 4 spares are ready again; the
#    template is unchanged;
#  - the pool's size is a hard limit; a clone's own name is not served;
#  - recompose: after a template update new sessions read the new version,
#    a session open across the recompose keeps the old one;
#  - a persistent pool: pool/home/alice keeps alice's writes between
#    sessions, bob gets his own clone, pool/home alone is refused;
#  - kill -9 with sessions open: the restarted daemon ends them (ephemeral
#    clones removed), `vdisk check` is clean; `vdisk pool rm` removes all.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need qemu-io nbdcopy nbdinfo sha256sum

vdisk create src 64M >/dev/null || fail "create src"
vdisk io -c "write -P 0x11 0 32M" -c "write -P 0x12 32M 32M" src >/dev/null || fail "fill src"
vdisk template create gold --from src >/dev/null || fail "template"
vdisk pool create desk --template gold --size 20 --spares 4 || fail "pool create"
vdisk pool list | grep -q "^desk .*gold@1 .*ephemeral .*20 .*4 .*4 .*0" || { vdisk pool list; fail "pool list"; }
start_daemon --threads 2
PURI="nbd+unix:///pool/desk?socket=$SOCK"
nbdinfo --list "nbd+unix://?socket=$SOCK" >"$TESTDIR/list.txt" || fail "nbdinfo --list"
grep -q 'export="pool/desk"' "$TESTDIR/list.txt" || { cat "$TESTDIR/list.txt"; fail "pool/desk is not listed"; }
grep -q 'export="desk\.' "$TESTDIR/list.txt" && fail "a pool clone is listed under its own name"
tpl_sum=$(nbdcopy "$(uri gold)" - | sha256sum | cut -d' ' -f1)

echo "== 16 concurrent sessions"
i=1
while [ $i -le 16 ]; do
    p=$(printf '0x%02x' $((0x40 + i)))
    qemu-io -f raw -c "read -P 0x11 0 1M" -c "read -P 0x12 32M 1M" -c "write -P $p 1M 2M" \
        -c "sleep 4000" -c "read -P $p 1M 2M" -c "read -P 0x11 3M 1M" "$PURI" \
        >"$TESTDIR/qio.$i" 2>&1 &
    eval "QIO$i=\$!"
    i=$((i + 1))
done
(nbdcopy --connections=1 "$PURI" - | sha256sum | cut -d' ' -f1 >"$TESTDIR/sum.1") &
COPY1=$!
(nbdcopy --connections=1 "$PURI" - | sha256sum | cut -d' ' -f1 >"$TESTDIR/sum.2") &
COPY2=$!
sleep 2.5
vdisk pool status --output json desk >"$TESTDIR/status.json" || fail "pool status"
"$PY" - "$TESTDIR/status.json" <<'PYEOF' || fail "pool status during the sessions"
import json, sys
st = json.load(open(sys.argv[1]))
sess = [c for c in st["clone-list"] if c["state"] == "session"]
print("%d sessions, %d clones, %d ready" % (len(sess), st["clones"], st["ready"]))
assert len(sess) >= 16, st
assert len({c["volume"] for c in sess}) == len(sess)
assert all(c["holder"].startswith("unix:") for c in sess), sess
assert st["clones"] <= 20, st
PYEOF
vdisk pool status desk | head -8
i=1
while [ $i -le 16 ]; do
    eval "wait \$QIO$i" || { cat "$TESTDIR/qio.$i"; fail "session $i (qemu-io) failed"; }
    grep -q "Pattern verification failed\|error" "$TESTDIR/qio.$i" &&
        { cat "$TESTDIR/qio.$i"; fail "session $i read something that is not its own"; }
    i=$((i + 1))
done
wait $COPY1 $COPY2
for k in 1 2; do
    [ "$(cat "$TESTDIR/sum.$k")" = "$tpl_sum" ] || fail "nbdcopy session $k did not read the template"
done
echo "every session read the template and its own writes"
n=0
while :; do
    vdisk pool status --output json desk >"$TESTDIR/status.json"
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["sessions"] == 0 and s["clones"] == 4 and s["ready"] == 4 else 1)' "$TESTDIR/status.json" && break
    n=$((n + 1))
    [ $n -lt 50 ] || { cat "$TESTDIR/status.json"; fail "clones not removed or spares not refilled after logoff"; }
    sleep 0.2
done
[ "$(vdisk list --output json | "$PY" -c 'import json,sys; print(len([v for v in json.load(sys.stdin) if v["name"].startswith("desk.")]))')" = 4 ] \
    || fail "volumes of ended sessions are left"
[ "$(nbdcopy "$(uri gold)" - | sha256sum | cut -d' ' -f1)" = "$tpl_sum" ] || fail "the template changed"
echo "after logoff: the 18 session clones are gone, 4 spares ready"

echo "== limits and names"
vdisk pool create tiny --template gold --size 2 --spares 1 >/dev/null || fail "pool tiny"
"$PY" - "$SOCK" "$VDISK" <<'PYEOF' || fail "pool limits"
import nbd, sys, json, subprocess
sock, vdisk = sys.argv[1:3]
u = "nbd+unix:///%s?socket=" + sock
hs = []
for i in range(2):
    h = nbd.NBD()
    h.connect_uri(u % "pool/tiny")
    hs.append(h)
try:
    h = nbd.NBD()
    h.connect_uri(u % "pool/tiny")
    raise SystemExit("a third session of a pool of 2")
except nbd.Error as e:
    print("third session:", e)
for bad in ("pool/tiny/alice", "pool/nosuch", "pool/", "tiny.0001"):
    try:
        h = nbd.NBD()
        h.connect_uri(u % bad)
        raise SystemExit("%s was served" % bad)
    except nbd.Error as e:
        print(bad, "->", e)
st = json.loads(subprocess.run([vdisk, "pool", "status", "--output", "json", "tiny"],
                               capture_output=True, text=True).stdout)
clone = [c["volume"] for c in st["clone-list"]][0]
try:
    h = nbd.NBD()
    h.connect_uri(u % clone)
    raise SystemExit("the clone %s was served by its own name" % clone)
except nbd.Error as e:
    print(clone, "->", e)
for h in hs:
    h.shutdown()
PYEOF

echo "== the control API's pool commands"
"$PY" - "$STORE/control.sock" <<'PYEOF' || fail "pool commands"
import sys
sys.path.insert(0, "tests/integration")
from ctl import Ctl
cmd = Ctl(sys.argv[1]).cmd
assert cmd("pool-create", name="lab", template="gold", size=3, spares=1) == {"return": {}}
pools = {p["name"]: p for p in cmd("query-pools")["return"]}
assert pools["lab"]["ready"] == 1 and pools["lab"]["mode"] == "ephemeral", pools["lab"]
assert pools["desk"]["size"] == 20 and len(pools["desk"]["clone-list"]) == 4, pools["desk"]
assert cmd("pool-recompose", name="lab", version=1) == {"return": {}}
for c, a in (("pool-create", {"name": "lab", "template": "gold", "size": 3}),
             ("pool-create", {"name": "x", "template": "gold", "size": 2, "spares": 3}),
             ("pool-create", {"name": "x", "template": "nosuch", "size": 2}),
             ("pool-create", {"name": "x", "template": "gold", "size": "2"}),
             ("pool-create", {"name": "x", "template": "gold", "size": 2, "mode": "odd"}),
             ("pool-recompose", {"name": "lab", "version": 9}),
             ("pool-remove", {"name": "nosuch"}), ("pool-remove", {})):
    r = cmd(c, **a)
    assert "error" in r, (c, a, r)
    print(c, a, "->", r["error"]["desc"])
assert cmd("pool-remove", name="lab") == {"return": {}}
assert "lab" not in {p["name"] for p in cmd("query-pools")["return"]}
PYEOF

echo "== recompose"
"$PY" - "$SOCK" "$VDISK" <<'PYEOF' || fail "recompose"
import nbd, sys, subprocess, time
sock, vdisk = sys.argv[1:3]
u = "nbd+unix:///pool/desk?socket=" + sock
old = nbd.NBD()
old.connect_uri(u)
assert old.pread(4096, 0) == b"\x11" * 4096
def run(*a):
    p = subprocess.run([vdisk] + list(a), capture_output=True, text=True)
    assert p.returncode == 0, p
    return p.stdout
run("io", "-c", "write -P 0x21 0 1M", "src")
run("template", "update", "gold", "--from", "src")
print(run("pool", "recompose", "desk").strip())
new = nbd.NBD()
new.connect_uri(u)
assert new.pread(4096, 0) == b"\x21" * 4096, "a new session got the old version"
assert old.pread(4096, 0) == b"\x11" * 4096, "the open session changed version"
new.shutdown()
old.shutdown()
st = run("pool", "status", "desk")
assert "gold version 2" in st, st
PYEOF

echo "== persistent"
vdisk pool create home --template gold --size 3 --spares 1 --mode persistent >/dev/null || fail "pool home"
"$PY" - "$SOCK" <<'PYEOF' || fail "persistent pool"
import nbd, sys
u = "nbd+unix:///%s?socket=" + sys.argv[1]
a = nbd.NBD()
a.connect_uri(u % "pool/home/alice")
a.pwrite(b"\xaa" * 4096, 8192)
a.flush()
a.shutdown()
b = nbd.NBD()
b.connect_uri(u % "pool/home/bob")
assert b.pread(4096, 8192) == b"\x21" * 4096      # the template, not alice's
a = nbd.NBD()
a.connect_uri(u % "pool/home/alice")
assert a.pread(4096, 8192) == b"\xaa" * 4096, "alice's clone lost her write"
a2 = nbd.NBD()
a2.connect_uri(u % "pool/home/alice")              # alice's second connection: same clone
assert a2.pread(4096, 8192) == b"\xaa" * 4096
for h in (a, a2, b):
    h.shutdown()
try:
    h = nbd.NBD()
    h.connect_uri(u % "pool/home")
    raise SystemExit("pool/home without a user was served")
except nbd.Error as e:
    print("pool/home ->", e)
PYEOF
vdisk pool status home | grep -q "idle .*alice" || { vdisk pool status home; fail "alice's clone is not idle"; }

echo "== kill -9 with sessions open"
qemu-io -f raw -c "sleep 30000" "$PURI" >/dev/null 2>&1 &
Q1=$!
qemu-io -f raw -c "sleep 30000" "$PURI" >/dev/null 2>&1 &
Q2=$!
sleep 1
vdisk pool status desk | grep -c " session " | grep -q 2 || { vdisk pool status desk; fail "two sessions expected"; }
kill_daemon
wait $Q1 $Q2 2>/dev/null
start_daemon --threads 2
sleep 1
"$PY" -c 'import json,sys,subprocess; s=json.loads(subprocess.run(["'"$VDISK"'","pool","status","--output","json","desk"],capture_output=True,text=True).stdout); sys.exit(0 if s["sessions"] == 0 and s["clones"] == 4 else 1)' \
    || { vdisk pool status desk; fail "sessions of the killed daemon are left"; }
vdisk pool status home | grep -q "idle .*alice" || fail "alice's clone did not survive the restart"
stop_daemon
vdisk check >"$TESTDIR/check.txt" 2>&1
rc=$?
case $rc in 0|3) ;; *) cat "$TESTDIR/check.txt"; fail "vdisk check: exit $rc" ;; esac
for p in desk tiny home; do
    vdisk pool rm $p >/dev/null || fail "pool rm $p"
done
vdisk list --output json | grep -q '"desk\.\|"home\.\|"tiny\.' && fail "pool clones left after pool rm"
vdisk pool list | grep -q "No pools" || fail "pools left"
echo "PASS"
