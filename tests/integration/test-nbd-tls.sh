#!/bin/sh
# test-nbd-tls.sh - vdiskd over TLS (NBD_OPT_STARTTLS), with clients we did
# not write: nbdinfo, nbdcopy (libnbd, GnuTLS) and qemu-img (QEMU's TLS).
# Certificates and PSK files are made here with openssl:
#  - x509 over TCP and PSK over TCP and a unix socket: data written through
#    one (nbdcopy, qemu-img convert) reads back the same through the other;
#    the daemon names each client by its certificate's CN or PSK identity;
#  - refused, each with the daemon serving on: a plain client under
#    --tls require (LIST gets NBD_REP_ERR_TLS_REQD, EXPORT_NAME ends the
#    session), a client that trusts another CA, a client certificate from
#    another CA, an expired client certificate, an expired server
#    certificate, a wrong PSK key, an unknown PSK identity, plaintext slipped
#    in after STARTTLS, a second STARTTLS, a TLS 1.1 client;
#  - --tls on: plain and TLS clients both; --tls-verify-peer: a client
#    without a certificate is refused;
#  - SIGHUP swaps in new certificates from another CA: new clients need the
#    new CA, a connection made before goes on reading and writing.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdinfo nbdcopy qemu-img openssl
[ -x "$PY" ] || skip "$PY is not installed"
"$PY" -c 'import nbd' 2>/dev/null || skip "the nbd python module (python3-libnbd) is missing"
T=tests/integration/tls.py
C=$TESTDIR/certs
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TCP=127.0.0.1:$PORT

# ---- credentials (lib/tls.sh: mkca, mkcert, creds, SERVER_EXT) ----
. tests/integration/lib/tls.sh
mkca ca
mkca other
mkcert ca server localhost "$SERVER_EXT"
mkcert ca alice alice 'subjectAltName=email:alice@example.com
extendedKeyUsage=clientAuth'
mkcert other bob bob 'extendedKeyUsage=clientAuth'
mkcert ca old-alice alice 'extendedKeyUsage=clientAuth' expired
mkcert ca old-server localhost "$SERVER_EXT" expired
mkcert other server2 localhost "$SERVER_EXT"
creds srv server server ca               # the daemon's
creds cli client alice ca                # alice, trusting our CA
creds cli-wrongca client alice other     # alice, trusting another CA
creds cli-bob client bob ca              # bob's certificate is from another CA
creds cli-old client old-alice ca        # expired
creds cli-anon "" "" ca                  # no certificate of its own
creds srv-old server old-server ca
creds cli2 client alice other            # for after the reload (server2's CA)
echo "alice:$(openssl rand -hex 32)" >"$C/keys.psk"
echo "alice:$(openssl rand -hex 32)" >"$C/wrong.psk"
echo "mallory:$(openssl rand -hex 32)" >"$C/unknown.psk"
mkdir -p "$C/qemu-psk"
cp "$C/keys.psk" "$C/qemu-psk/keys.psk"

x509() { echo "nbds://$TCP/${1:-v1}?tls-certificates=$C/${2:-cli}"; }
psk() { echo "nbds://alice@$TCP/v1?tls-psk-file=$C/${1:-keys.psk}"; }
psk_unix() { echo "nbds+unix://alice@/v1?socket=$SOCK&tls-psk-file=$C/keys.psk"; }

# refused WHAT URI: nbdinfo fails, and then a good client still works.
refused() {
    if nbdinfo "$2" >"$TESTDIR/out" 2>&1; then
        cat "$TESTDIR/out"
        fail "$1: accepted"
    fi
    echo "refused, $1: $(grep -m 1 'nbdinfo:' "$TESTDIR/out")"
    nbdinfo "$(x509)" >/dev/null 2>&1 || fail "after '$1', a good client is not served"
}

vdisk create v1 64M >/dev/null || fail "create"
"$PY" tests/integration/vmm.py randfile "$TESTDIR/data.raw" $((8 << 20)) tls || fail "randfile"

# ---- 1. TLS required, x509 and PSK ----
start_daemon --listen "tcp:$TCP" --tls-certs "$C/srv" \
    --tls-psk "$C/keys.psk" -vv
nbdinfo "$(x509)" >"$TESTDIR/out" 2>&1 || { cat "$TESTDIR/out"; fail "x509 over TCP"; }
grep -q "with TLS" "$TESTDIR/out" || fail "nbdinfo did not use TLS"
nbdinfo "$(psk)" >/dev/null 2>&1 || fail "PSK over TCP"
nbdinfo "$(psk_unix)" >/dev/null 2>&1 || fail "PSK over a unix socket"
grep -q "TLS up: TLSv1.3.*client certificate alice" "$TESTDIR/vdiskd.log" &&
    grep -q "TLS up: TLSv1.3.*client PSK alice" "$TESTDIR/vdiskd.log" ||
    fail "the daemon did not name the clients"
nbdcopy "$TESTDIR/data.raw" "$(x509)" || fail "nbdcopy write over x509"
nbdcopy "$(psk)" "$TESTDIR/back.raw" || fail "nbdcopy read over PSK"
cmp -n $((8 << 20)) "$TESTDIR/data.raw" "$TESTDIR/back.raw" || fail "data through TLS differs"
QX="--object tls-creds-x509,id=t0,dir=$C/cli,endpoint=client"
QP="--object tls-creds-psk,id=t0,dir=$C/qemu-psk,username=alice,endpoint=client"
NBDOPTS="driver=nbd,host=127.0.0.1,port=$PORT,export=v1,tls-creds=t0"
"$PY" tests/integration/vmm.py randfile "$TESTDIR/data2.raw" $((8 << 20)) tls2
# shellcheck disable=SC2086
qemu-img convert -n -f raw $QX --target-image-opts "$TESTDIR/data2.raw" "$NBDOPTS" ||
    fail "qemu-img convert over x509"
# shellcheck disable=SC2086
qemu-img convert $QP --image-opts "$NBDOPTS" -O raw "$TESTDIR/back2.raw" ||
    fail "qemu-img read over PSK"
cmp -n $((8 << 20)) "$TESTDIR/data2.raw" "$TESTDIR/back2.raw" || fail "qemu-img: data differs"
echo "x509 and PSK: nbdinfo, nbdcopy and qemu-img, over TCP and a unix socket"

# Refusals.
"$PY" "$T" reqd 127.0.0.1 "$PORT" || fail "options before STARTTLS"
refused "a plain client" "nbd://$TCP/v1"
refused "a client trusting another CA" "$(x509 v1 cli-wrongca)"
refused "a client certificate from another CA" "$(x509 v1 cli-bob)"
refused "an expired client certificate" "$(x509 v1 cli-old)"
refused "a wrong PSK key" "$(psk wrong.psk)"
refused "an unknown PSK identity" "nbds://mallory@$TCP/v1?tls-psk-file=$C/unknown.psk"
"$PY" "$T" inject 127.0.0.1 "$PORT" || fail "plaintext after STARTTLS"
"$PY" "$T" twice 127.0.0.1 "$PORT" "$C/ca/ca-cert.pem" "$C/alice/cert.pem" "$C/alice/key.pem" ||
    fail "STARTTLS twice"
"$PY" "$T" oldtls 127.0.0.1 "$PORT" "$C/ca/ca-cert.pem" || fail "TLS 1.1"
nbdinfo "$(x509)" >/dev/null 2>&1 || fail "the daemon stopped serving"
grep -q "TLS handshake failed" "$TESTDIR/vdiskd.log" || fail "no handshake failure logged"

# ---- 2. SIGHUP: new certificates, from another CA ----
"$PY" "$T" hold "$(x509)" 3 "$TESTDIR/hold" &
HOLD=$!
sleep 1
cp "$C/server2/cert.pem" "$C/srv/server-cert.pem"
cp "$C/server2/key.pem" "$C/srv/server-key.pem"
kill -HUP "$DPID"
sleep 0.3
grep -q "TLS credentials reloaded" "$TESTDIR/vdiskd.log" || fail "SIGHUP did not reload"
nbdinfo "$(x509 v1 cli2)" >/dev/null 2>&1 || fail "after the reload, the new CA's clients"
if nbdinfo "$(x509)" >/dev/null 2>&1; then
    fail "after the reload, the old server certificate is still offered"
fi
wait $HOLD
grep -q "^ok " "$TESTDIR/hold" || { cat "$TESTDIR/hold"; fail "a connection from before the reload"; }
echo "SIGHUP: new clients see the new certificate; a connection from before went on ($(cat "$TESTDIR/hold"))"
# Files that do not load: the old context stays.
echo garbage >"$C/srv/server-key.pem"
kill -HUP "$DPID"
sleep 0.3
grep -q "could not be reloaded" "$TESTDIR/vdiskd.log" || fail "a bad reload was not reported"
nbdinfo "$(x509 v1 cli2)" >/dev/null 2>&1 || fail "a bad reload broke TLS"
stop_daemon
cp "$C/server/key.pem" "$C/srv/server-key.pem"
cp "$C/server/cert.pem" "$C/srv/server-cert.pem"

# ---- 3. --tls on, --tls-verify-peer, an expired server certificate ----
start_daemon --listen "tcp:$TCP" --tls on --tls-certs "$C/srv"
nbdinfo "nbd://$TCP/v1" >/dev/null 2>&1 || fail "--tls on: a plain client"
nbdinfo "$(x509)" >/dev/null 2>&1 || fail "--tls on: a TLS client"
nbdinfo "$(x509 v1 cli-anon)" >/dev/null 2>&1 || fail "--tls on: a client without a certificate"
stop_daemon
start_daemon --listen "tcp:$TCP" --tls-certs "$C/srv" --tls-verify-peer
refused "--tls-verify-peer: a client without a certificate" "$(x509 v1 cli-anon)"
stop_daemon
start_daemon --listen "tcp:$TCP" --tls-certs "$C/srv-old"
if nbdinfo "$(x509)" >"$TESTDIR/out" 2>&1; then
    fail "an expired server certificate was accepted"
fi
echo "refused, an expired server certificate: $(grep -m 1 'nbdinfo:' "$TESTDIR/out")"
stop_daemon

# Bad options and files: usage errors, or a clear error at startup.
"$DAEMON" --store "$STORE" --tls on >/dev/null 2>&1; [ $? = 2 ] || fail "--tls on without credentials"
"$DAEMON" --store "$STORE" --tls bogus >/dev/null 2>&1; [ $? = 2 ] || fail "--tls bogus"
echo "alice:xyz" >"$C/bad.psk"
if "$DAEMON" --store "$STORE" --foreground --listen "unix:$TESTDIR/x.sock" \
        --tls-psk "$C/bad.psk" >"$TESTDIR/out" 2>&1; then
    fail "a bad PSK file was accepted"
fi
grep -q "bad.psk:1:" "$TESTDIR/out" || { cat "$TESTDIR/out"; fail "no line number for a bad PSK file"; }
echo "PASS"
exit 0
