# lib/tls.sh - certificates for the TLS tests (test-nbd-tls.sh,
# test-nbd-auth.sh), made with openssl in $C (the script sets it).  Sourced.
#   mkca NAME                      a CA: $C/NAME/ca-cert.pem, ca-key.pem
#   mkcert CA NAME CN EXT [expired] a P-256 key and a certificate CA signed,
#                                  with the extensions EXT (openssl's
#                                  extfile lines): $C/NAME/cert.pem, key.pem
#   creds DIR ROLE CERT CA         a credentials folder as qemu and libnbd
#                                  take it: ROLE-cert.pem, ROLE-key.pem (of
#                                  CERT, may be empty) and ca-cert.pem (CA's)
#   SERVER_EXT                     the extensions of a server certificate
#                                  for localhost and 127.0.0.1
SERVER_EXT='subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth'


mkca() {
    mkdir -p "$C/$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -keyout "$C/$1/ca-key.pem" -out "$C/$1/ca-cert.pem" -subj "/CN=vdisk test $1" \
        2>/dev/null || fail "openssl: CA $1"
}
mkcert() {
    ca=$1 name=$2 cn=$3 ext=$4
    mkdir -p "$C/$name"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$name/key.pem" \
        -out "$C/$name/req.pem" -subj "/CN=$cn" 2>/dev/null || fail "openssl: key $name"
    printf '%s\n' "$ext" >"$C/$name/ext"
    if [ "${5:-}" = expired ]; then
        # openssl x509 cannot date a certificate in the past; openssl ca can.
        mkdir -p "$C/$ca/db"
        : >"$C/$ca/db/index.txt"
        [ -f "$C/$ca/db/serial" ] || echo 1000 >"$C/$ca/db/serial"
        cat >"$C/$ca/ca.cnf" <<EOF
[ca]
default_ca = d
[d]
database = $C/$ca/db/index.txt
new_certs_dir = $C/$ca/db
serial = $C/$ca/db/serial
default_md = sha256
policy = p
[p]
commonName = supplied
EOF
        openssl ca -batch -config "$C/$ca/ca.cnf" -cert "$C/$ca/ca-cert.pem" \
            -keyfile "$C/$ca/ca-key.pem" -in "$C/$name/req.pem" -out "$C/$name/cert.pem" \
            -startdate 20200101000000Z -enddate 20200201000000Z -extfile "$C/$name/ext" \
            -notext 2>/dev/null || fail "openssl: expired $name"
    else
        openssl x509 -req -in "$C/$name/req.pem" -CA "$C/$ca/ca-cert.pem" \
            -CAkey "$C/$ca/ca-key.pem" -CAcreateserial -days 30 -out "$C/$name/cert.pem" \
            -extfile "$C/$name/ext" 2>/dev/null || fail "openssl: certificate $name"
    fi
}
creds() {
    dir=$C/$1 role=$2 cert=$3 ca=$4
    mkdir -p "$dir"
    [ -n "$cert" ] && cp "$C/$cert/cert.pem" "$dir/$role-cert.pem" &&
        cp "$C/$cert/key.pem" "$dir/$role-key.pem"
    [ -n "$ca" ] && cp "$C/$ca/ca-cert.pem" "$dir/ca-cert.pem"
    return 0
}
