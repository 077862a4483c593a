#!/bin/sh
# test-nbd-auth.sh - who may connect (docs/VDISKD.md, "Who may connect"),
# with clients running as nobody (setpriv) next to clients running as root:
#  - without rules every client sees and opens every name (today's
#    behaviour);
#  - a volume with rules is neither listed (nbdinfo --list) nor opened for
#    an identity no rule names, and the refusal reads exactly as for a name
#    that does not exist; its snapshots and an alias of it follow it;
#  - a read-only rule: listed, readable, NBD_FLAG_READ_ONLY, a write sent
#    anyway (libnbd's strict mode off) gets EPERM; several rules: the most
#    they give; unix:uid=, unix:gid=, unix:user= and any;
#  - rules added or removed while vdiskd runs apply to the next connection,
#    an open connection keeps what it got; the last rule removed opens the
#    volume again;
#  - templates; a pool without rules of its own follows its template's,
#    with its own rules only those; pool/POOL/USER of a persistent pool is
#    USER's only (root may open any);
#  - the CLI: errors (one line, exit 1; usage exit 2), --output json,
#    `vdisk export VOL FILE` still exports, `vdisk export -- rules FILE`
#    exports a volume named rules; rules go with their volume;
#  - --stdio: the client is the peer of the socket on stdin;
#  - the control socket refuses another uid even when its mode lets it in,
#    admits its group; the read-only control socket answers queries and
#    refuses the rest;
#  - TLS identities (x509: by CN and by subjectAltName, psk:), and a
#    persistent pool's session over TLS: tls_identities below.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdinfo nbdcopy setpriv openssl
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"
[ "$(id -u)" = 0 ] || skip "needs root, to run clients as nobody (setpriv)"
getent passwd nobody >/dev/null || skip "no user nobody"
NOBODY_UID=$(id -u nobody)
NOBODY_GID=$(id -g nobody)

# Clients as nobody, with no supplementary groups.
as_nobody() { setpriv --reuid="$NOBODY_UID" --regid="$NOBODY_GID" --clear-groups "$@"; }
# The folders down to the sockets must let nobody through.
chmod 755 "$TESTDIR"
RO_SOCK=$TESTDIR/ro.sock

vdisk create vm1 16M >/dev/null || fail "create vm1"
vdisk io -c "write -P 0xab 0 1M" vm1 >/dev/null || fail "write vm1"
vdisk snapshot create vm1 s1 >/dev/null || fail "snapshot vm1"
vdisk create vm2 16M >/dev/null || fail "create vm2"
vdisk create src 16M >/dev/null || fail "create src"
vdisk io -c "write -P 0x5a 0 1M" src >/dev/null || fail "write src"
vdisk template create gold --from src >/dev/null || fail "template gold"
vdisk pool create desk --template gold --size 4 --spares 1 >/dev/null || fail "pool desk"
vdisk pool create home --template gold --size 4 --spares 1 --mode persistent >/dev/null ||
    fail "pool home"

start_daemon --control-ro "$RO_SOCK"
chmod 666 "$SOCK"

# listed WHO: the export names NBD_OPT_LIST gives root or nobody, one per
# line, sorted (libnbd's list, not nbdinfo --list: that one also opens each
# name for its details, which a persistent pool's pool/POOL refuses).
listed() {
    if [ "$1" = nobody ]; then set -- as_nobody "$PY"; else set -- "$PY"; fi
    "$@" -c '
import nbd, sys
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri("nbd+unix://?socket=" + sys.argv[1])
names = []
h.opt_list(lambda name, desc: names.append(name) or 0)
h.opt_abort()
print("\n".join(sorted(names)))' "$SOCK"
}
# has WHO NAME / hasnt WHO NAME: NAME is / is not in WHO's listing.
has() {
    l=$(listed "$1") || fail "listing as $1"
    printf '%s\n' "$l" | grep -qx "$2" || { echo "$l"; fail "$1 does not see $2"; }
}
hasnt() {
    l=$(listed "$1") || fail "listing as $1"
    ! printf '%s\n' "$l" | grep -qx "$2" || fail "$1 sees $2"
}

# probe_uri URI NAME [write]: opens URI with the python module (strict
# mode off, so a write reaches the server; local files allowed, for TLS
# credentials) and prints "rw" or "ro" and the first byte, then "write ok"
# or "write EPERM" if asked; "refused: MSG" (NAME replaced by "NAME") when
# the open fails.  Exit 0 either way.  $RUN, if set, runs it (as_nobody).
RUN=
probe_uri() {
    $RUN "$PY" - "$@" <<'PYEOF'
import nbd, sys
uri, name = sys.argv[1:3]
h = nbd.NBD()
h.set_strict_mode(0)
h.set_uri_allow_local_file(True)
try:
    h.connect_uri(uri)
except nbd.Error as e:
    print("refused:", e.string.replace(name, "NAME"))
    sys.exit(0)
print("ro" if h.is_read_only() else "rw", "%02x" % h.pread(512, 0)[0])
if len(sys.argv) > 3:
    try:
        h.pwrite(b"\xcd" * 512, 8192)
        print("write ok")
    except nbd.Error as e:
        print("write", e.errno)
h.shutdown()
PYEOF
}
# probe WHO NAME [write]: probe_uri of NAME on the unix socket, as WHO
# (root or nobody).
probe() {
    who=$1 name=$2
    shift 2
    if [ "$who" = nobody ]; then RUN=as_nobody; fi
    probe_uri "nbd+unix:///$name?socket=$SOCK" "$name" "$@"
    RUN=
}
# expect_with PROBE WHO NAME WANT [write]: PROBE's output (one line) is WANT.
expect_with() {
    e_probe=$1 e_who=$2 e_name=$3 e_want=$4
    shift 4
    got=$("$e_probe" "$e_who" "$e_name" "$@" | tr '\n' ' ' | sed 's/ $//')
    [ "$got" = "$e_want" ] || fail "$e_probe: $e_who opening $e_name: expected '$e_want', got '$got'"
    echo "$e_probe: $e_who $e_name: $got"
}
expect() { expect_with probe "$@"; }
UNKNOWN=$(probe nobody nosuch)
echo "an unknown name: $UNKNOWN"
case $UNKNOWN in refused:*) ;; *) fail "an unknown export was opened" ;; esac

echo "== no rules: everyone sees and opens everything"
for n in vm1 vm1@s1 vm2 gold gold@1 pool/desk pool/home; do
    has nobody "$n"
done
expect nobody vm1 "rw ab write ok" write
expect root vm1 "rw ab"

echo "== a rule for root only: vm1 and its snapshot vanish for nobody"
vdisk export allow vm1 unix:uid=0 >/dev/null || fail "allow vm1 uid 0"
hasnt nobody vm1
hasnt nobody vm1@s1
has nobody vm2
has root vm1
has root vm1@s1
expect nobody vm1 "$UNKNOWN"
expect nobody vm1@s1 "$UNKNOWN"
expect root vm1 "rw ab write ok" write
if as_nobody nbdcopy "$(uri vm1)" - >/dev/null 2>&1; then fail "nobody copied vm1"; fi
# An alias of vm1 follows vm1's rules.
"$PY" - "$STORE/control.sock" <<'PYEOF' || fail "export-add"
import sys
sys.path.insert(0, "tests/integration")
from ctl import Ctl
r = Ctl(sys.argv[1]).cmd("export-add", name="vm1-alias", target="vm1")
assert r == {"return": {}}, r
PYEOF
hasnt nobody vm1-alias
has root vm1-alias
expect nobody vm1-alias "$UNKNOWN"

echo "== read-only for nobody (unix:user=), at the next connection"
vdisk export allow --read-only vm1 unix:user=nobody >/dev/null || fail "allow nobody ro"
has nobody vm1
has nobody vm1@s1
has nobody vm1-alias
expect nobody vm1 "ro ab write EPERM" write
expect nobody vm1@s1 "ro ab write EPERM" write
expect root vm1 "rw ab"

echo "== several rules: the most they give (unix:gid= read-write)"
vdisk export allow vm1 "unix:gid=$NOBODY_GID" >/dev/null || fail "allow gid"
expect nobody vm1 "rw ab write ok" write
vdisk export deny vm1 "unix:gid=$NOBODY_GID" >/dev/null || fail "deny gid"
expect nobody vm1 "ro ab"

echo "== an open connection keeps what it got; the next one does not"
"$PY" - "$SOCK" "$VDISK" "$NOBODY_UID" "$NOBODY_GID" <<'PYEOF' || fail "open connection across a deny"
import nbd, os, subprocess, sys
sock, vdisk, uid, gid = sys.argv[1:5]
# A connection as nobody: a child that opens vm1, reports, waits for a line.
child = subprocess.Popen(["setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups",
                          "/usr/bin/python3", "-c", """
import nbd, sys
h = nbd.NBD()
h.connect_uri("nbd+unix:///vm1?socket=" + sys.argv[1])
print(h.pread(512, 0)[0], flush=True)
sys.stdin.readline()
print(h.pread(512, 0)[0], flush=True)
""", sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == str(0xab)
subprocess.run([vdisk, "export", "deny", "vm1", "unix:user=nobody"], check=True,
               capture_output=True)
child.stdin.write("go\n")
child.stdin.flush()
assert child.stdout.readline().strip() == str(0xab), "the open connection lost its disk"
assert child.wait() == 0
print("the open connection read on after the deny")
PYEOF
expect nobody vm1 "$UNKNOWN"
hasnt nobody vm1

echo "== the last rule removed: open to everyone again"
vdisk export deny vm1 unix:uid=0 >"$TESTDIR/out" 2>&1 || { cat "$TESTDIR/out"; fail "deny uid 0"; }
grep -q "no rules left" "$TESTDIR/out" || { cat "$TESTDIR/out"; fail "no warning for the last rule"; }
has nobody vm1
expect nobody vm1 "rw ab"

echo "== any --read-only"
vdisk export allow vm2 any --read-only >/dev/null || fail "allow any ro"
expect nobody vm2 "ro 00 write EPERM" write
expect root vm2 "ro 00 write EPERM" write
vdisk export allow vm2 unix:uid=0 >/dev/null || fail "allow vm2 uid 0"
expect root vm2 "rw 00"
expect nobody vm2 "ro 00"

echo "== templates and pools"
vdisk export allow gold unix:uid=0 >/dev/null || fail "allow gold"
hasnt nobody gold
hasnt nobody gold@1
hasnt nobody pool/desk          # no rules of its own: its template's
hasnt nobody pool/home
expect nobody gold "$UNKNOWN"
expect nobody gold@1 "$UNKNOWN"
expect nobody pool/desk "$UNKNOWN"
expect root pool/desk "rw 5a"
vdisk export allow pool/desk unix:user=nobody >/dev/null || fail "allow pool/desk"
has nobody pool/desk
hasnt nobody gold
expect nobody pool/desk "rw 5a write ok" write
expect nobody gold "$UNKNOWN"
vdisk export rules pool/home | grep -q "rules of its template 'gold'" || fail "rules pool/home"
vdisk export allow pool/home any >/dev/null || fail "allow pool/home"
has nobody pool/home
# pool/home/USER is USER's: nobody's own, not alice's; root may open any.
expect nobody pool/home/nobody "rw 5a write ok" write
got=$(probe nobody pool/home/alice)
case $got in refused:*) echo "nobody pool/home/alice: $got" ;; *) fail "nobody opened alice's clone: $got" ;; esac
[ "$got" != "$UNKNOWN" ] || fail "pool/home/alice's refusal does not say it is refused"
expect root pool/home/alice "rw 5a"
expect root pool/home/nobody "rw 5a"
vdisk pool status home | grep -q "nobody" || { vdisk pool status home; fail "nobody's clone"; }

echo "== the CLI"
# errs EXIT CMD...: CMD exits EXIT with one line on stderr.
errs() {
    want=$1
    shift
    vdisk "$@" >"$TESTDIR/out" 2>"$TESTDIR/err"
    rc=$?
    [ $rc = "$want" ] || { cat "$TESTDIR/out" "$TESTDIR/err"; fail "vdisk $*: exit $rc, not $want"; }
    [ "$want" = 2 ] || [ "$(wc -l <"$TESTDIR/err")" = 1 ] ||
        { cat "$TESTDIR/err"; fail "vdisk $*: not one line on stderr"; }
    echo "vdisk $*: $(head -1 "$TESTDIR/err")"
}
errs 1 export allow vm1 bogus
errs 1 export allow vm1 unix:uid=-1
errs 1 export allow vm1 unix:user=
errs 1 export allow vm1 psk:a:b
errs 1 export allow nosuch any
errs 1 export allow vm1@s1 any
errs 1 export allow pool/nosuch any
errs 1 export deny vm2 unix:uid=5
errs 1 export deny vm2 bogus
errs 1 export rules nosuch
errs 2 export allow vm1
errs 2 export allow
errs 2 export deny vm1 a b
errs 2 export rules
errs 2 export rules vm2 --output xml
errs 2 export allow --bogus vm1 any
vdisk export rules vm2 --output json >"$TESTDIR/rules.json" || fail "rules --output json"
"$PY" - "$TESTDIR/rules.json" <<'PYEOF' || { cat "$TESTDIR/rules.json"; fail "rules json"; }
import json, sys
j = json.load(open(sys.argv[1]))
assert j == {"name": "vm2", "from": "vm2", "restricted": True,
             "rules": [{"identity": "any", "access": "read-only"},
                       {"identity": "unix:uid=0", "access": "read-write"}]}, j
PYEOF
vdisk export rules pool/home --output json | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
assert j["from"] == "pool/home" and j["rules"] == [{"identity": "any", "access": "read-write"}], j' ||
    fail "rules pool/home json"
vdisk export rules vm1 --output json | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
assert j == {"name": "vm1", "from": "vm1", "restricted": False, "rules": []}, j' ||
    fail "rules vm1 json (no rules)"
vdisk export rules vm2 | grep -q "^unix:uid=0 *read-write$" || fail "rules vm2 (human)"
# `vdisk export VOL FILE` is the image export still; a volume named rules
# is exported with -- first, and the error says so when -- is missing.
vdisk export vm1 "$TESTDIR/vm1.raw" || fail "vdisk export vm1 FILE"
[ "$(head -c 1 "$TESTDIR/vm1.raw" | od -An -tx1 | tr -d ' ')" = ab ] || fail "exported data"
vdisk export -O qcow2 vm1@s1 "$TESTDIR/s1.qcow2" || fail "vdisk export -O qcow2 vm1@s1 FILE"
vdisk create rules 1M >/dev/null || fail "create rules"
vdisk export rules "$TESTDIR/r.raw" >"$TESTDIR/out" 2>&1 && fail "export rules PATH succeeded"
cat "$TESTDIR/out"
grep -q "vdisk export -- rules FILE" "$TESTDIR/out" || fail "no hint for exporting a volume named rules"
vdisk export -- rules "$TESTDIR/r.raw" || fail "vdisk export -- rules FILE"
[ "$(stat -c %s "$TESTDIR/r.raw")" = 1048576 ] || fail "exported rules"
vdisk export --help | grep -q "export allow" || fail "vdisk export --help does not name allow"
vdisk --help | grep -q "export allow|deny|rules" || fail "vdisk --help"
# Rules go with their volume.
vdisk export allow rules unix:uid=0 >/dev/null || fail "allow rules"
vdisk rm rules >/dev/null || fail "rm rules"
vdisk create rules 1M >/dev/null || fail "create rules again"
vdisk export rules rules | grep -q "No rules" || fail "a new volume inherited old rules"

echo "== --stdio: the peer of the unix socket on stdin"
vdisk create only-nobody 1M >/dev/null || fail "create only-nobody"
vdisk export allow only-nobody "unix:uid=$NOBODY_UID" >/dev/null || fail "allow only-nobody"
"$PY" - "$DAEMON" "$STORE" 2>"$TESTDIR/stdio.log" <<'PYEOF' || { cat "$TESTDIR/stdio.log"; fail "stdio"; }
import nbd, sys
daemon, store = sys.argv[1:3]
def conn(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_command([daemon, "--store", store, "--stdio"])
    return h
h = conn("vm2")                  # any read-only, root read-write: root it is
assert not h.is_read_only()
h.shutdown()
try:
    conn("only-nobody")
    raise SystemExit("root opened only-nobody over --stdio")
except nbd.Error as e:
    print("only-nobody over --stdio:", e)
PYEOF
grep -q "ERROR: AddressSanitizer\|runtime error" "$TESTDIR/stdio.log" && { cat "$TESTDIR/stdio.log"; fail "sanitizer report"; }

echo "== the control sockets"
chmod 666 "$STORE/control.sock"      # as if the mode were widened by hand
as_nobody "$PY" - "$STORE/control.sock" "$RO_SOCK" <<'PYEOF' || fail "control sockets as nobody"
import json, socket, sys
ctl, ro = sys.argv[1:3]
def conn(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s.makefile("rwb")
def cmd(f, c, **a):
    f.write((json.dumps({"execute": c, "arguments": a}) + "\n").encode())
    f.flush()
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
# The control socket: refused, with a reason, then closed.
f = conn(ctl)
m = json.loads(f.readline())
assert m["error"]["class"] == "GenericError" and "may not use this control socket" in m["error"]["desc"], m
assert f.readline() == b"", "the refused connection stayed open"
print("control socket:", m["error"]["desc"])
# The read-only one: queries work, nothing else does.
f = conn(ro)
assert "vdiskd" in json.loads(f.readline())
assert "return" in cmd(f, "query-version")
assert "return" in cmd(f, "qmp_capabilities")
ex = cmd(f, "query-volumes")["return"]
assert {"vm1", "vm2"} <= {v["name"] for v in ex}, ex
assert "return" in cmd(f, "query-stats")
for c, a in (("snapshot-create", {"volume": "vm2", "name": "x"}), ("quit", {}),
             ("export-remove", {"name": "vm1"}), ("pool-remove", {"name": "desk"}),
             ("nosuch", {})):
    r = cmd(f, c, **a)
    assert r["error"]["class"] == "GenericError" and "read-only control socket" in r["error"]["desc"], r
    print(c, "->", r["error"]["desc"])
PYEOF
vdisk snapshot list vm2 | grep -q " x " && fail "the read-only socket took a snapshot"
# Root still talks to both.
echo '{"execute": "query-version"}' | "$PY" -c '
import socket, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
assert "vdiskd" in json.loads(f.readline())
f.write(b"{\"execute\": \"snapshot-create\", \"arguments\": {\"volume\": \"vm2\", \"name\": \"ok\"}}\n"); f.flush()
r = json.loads(f.readline()); assert "return" in r, r' "$STORE/control.sock" || fail "root on the control socket"
vdisk snapshot list vm2 | grep -q "ok" || fail "root's snapshot"
stop_daemon
[ ! -e "$RO_SOCK" ] || fail "the read-only control socket was left behind"

echo "== control groups: the group's members are admitted"
start_daemon --control-group nogroup --control-ro "$RO_SOCK" --control-ro-group root
chmod 666 "$STORE/control.sock" "$RO_SOCK"
stat -c '%a %G' "$STORE/control.sock" "$RO_SOCK" | tr '\n' ' '
echo
as_nobody "$PY" - "$STORE/control.sock" "$RO_SOCK" <<'PYEOF' || fail "control groups"
import json, socket, sys
ctl, ro = sys.argv[1:3]
def first(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return json.loads(s.makefile("rb").readline())
assert "vdiskd" in first(ctl), "nobody (group nogroup) refused by --control-group nogroup"
# The read-only socket's own group is root's, but members of the control
# group may use it too.
assert "vdiskd" in first(ro)
PYEOF
setpriv --reuid=65534 --regid=100 --clear-groups "$PY" -c '
import json, socket, sys
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX); s.connect(p)
    m = json.loads(s.makefile("rb").readline())
    assert "error" in m, (p, m)
print("gid 100: refused by both")' "$STORE/control.sock" "$RO_SOCK" || fail "another group admitted"
stop_daemon

"$DAEMON" --store "$STORE" --control-ro-group root --foreground >/dev/null 2>&1
[ $? = 2 ] || fail "--control-ro-group without --control-ro is not a usage error"

# ---- TLS identities: x509:NAME and psk:NAME ----
# Over TLS (TCP), with certificates and PSKs made here: an x509: rule names
# a certificate's CN or one of its subjectAltNames, a psk: rule a PSK
# identity; a pool/POOL/USER session is USER's TLS name's.
tls_identities() {
    C=$TESTDIR/certs
    . tests/integration/lib/tls.sh
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkca ca
    mkcert ca server localhost "$SERVER_EXT"
    mkcert ca alice alice 'extendedKeyUsage=clientAuth'
    mkcert ca dave dave 'subjectAltName=DNS:dave.example.com
extendedKeyUsage=clientAuth'
    mkcert ca carol carol 'extendedKeyUsage=clientAuth'
    creds srv server server ca
    for who in alice dave carol; do creds "cli-$who" client "$who" ca; done
    echo "bob:$(openssl rand -hex 32)" >"$C/keys.psk"
    echo "erin:$(openssl rand -hex 32)" >>"$C/keys.psk"
    grep '^bob:' "$C/keys.psk" >"$C/bob.psk"
    grep '^erin:' "$C/keys.psk" >"$C/erin.psk"

    vdisk create sec 16M >/dev/null || fail "create sec"
    vdisk io -c "write -P 0x77 0 1M" sec >/dev/null || fail "write sec"
    vdisk export allow sec x509:alice --read-only >/dev/null || fail "allow x509:alice"
    vdisk export allow sec x509:dave.example.com >/dev/null || fail "allow a SAN"
    vdisk export allow sec psk:bob >/dev/null || fail "allow psk:bob"
    start_daemon --listen "tcp:127.0.0.1:$port" --tls-certs "$C/srv" --tls-psk "$C/keys.psk"

    # tprobe WHO NAME [write]: probe_uri over TLS, WHO a certificate (a
    # cli-WHO folder) or psk:ID; "refused" however the open failed.
    tprobe() {
        case $1 in
        psk:*) id=${1#psk:}; u="nbds://$id@127.0.0.1:$port/$2?tls-psk-file=$C/$id.psk" ;;
        *) u="nbds://127.0.0.1:$port/$2?tls-certificates=$C/cli-$1" ;;
        esac
        n=$2
        shift 2
        probe_uri "$u" "$n" "$@" | sed 's/^refused:.*/refused/'
    }
    texpect() { expect_with tprobe "$@"; }
    texpect alice sec "ro 77 write EPERM" write
    texpect dave sec "rw 77 write ok" write
    texpect carol sec "refused"
    texpect psk:bob sec "rw 77 write ok" write
    texpect psk:erin sec "refused"
    # The persistent pool's session for USER: USER's certificate only.
    texpect alice pool/home/alice "rw 5a"
    texpect carol pool/home/alice "refused"
    stop_daemon
}
echo "== TLS identities"
tls_identities

echo "PASS"
