#!/bin/sh
# test-nbd-io.sh - data through vdiskd with real clients: nbdcopy round
# trips (raw -> NBD -> raw, cmp), qemu-img convert and compare over
# nbd+unix://, qemu-io pattern writes and reads, discards and write -z,
# and the CLI reading back what the clients wrote once the daemon stopped.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdcopy qemu-img qemu-io cmp dd truncate

vdisk create vm1 32M >/dev/null || fail "create vm1"
vdisk create vm2 32M >/dev/null || fail "create vm2"
truncate -s 32M "$TESTDIR/in.raw"
dd if=/dev/urandom of="$TESTDIR/in.raw" bs=64K count=40 conv=notrunc status=none
dd if=/dev/urandom of="$TESTDIR/in.raw" bs=4K seek=3000 count=5 conv=notrunc status=none
dd if=/dev/urandom of="$TESTDIR/in.raw" bs=512 seek=50001 count=3 conv=notrunc status=none

start_daemon

echo "== nbdcopy raw -> nbd -> raw"
nbdcopy "$TESTDIR/in.raw" "$(uri vm1)" || fail "nbdcopy to vm1"
nbdcopy "$(uri vm1)" "$TESTDIR/out.raw" || fail "nbdcopy from vm1"
cmp "$TESTDIR/in.raw" "$TESTDIR/out.raw" || fail "nbdcopy round trip differs"
echo "== nbdcopy nbd -> nbd (multi-conn, several requests in flight)"
nbdcopy --connections=4 --requests=16 "$(uri vm1)" "$(uri vm2)" || fail "nbdcopy vm1 -> vm2"

echo "== qemu-img compare / convert"
qemu-img compare -f raw -F raw "$TESTDIR/in.raw" "$(uri vm2)" || fail "qemu-img compare vm2"
qemu-img convert -f raw -O raw "$(uri vm2)" "$TESTDIR/conv.raw" || fail "qemu-img convert from nbd"
cmp "$TESTDIR/in.raw" "$TESTDIR/conv.raw" || fail "qemu-img convert differs"
qemu-img convert -n -f raw -O raw "$TESTDIR/in.raw" "$(uri vm2)" || fail "qemu-img convert to nbd"
qemu-img compare -f raw -F raw "$TESTDIR/in.raw" "$(uri vm2)" || fail "compare after convert -n"

echo "== qemu-io patterns, discard, write -z"
U=$(uri vm1)
qio() {
    out=$(qemu-io -f raw "$@" "$U" 2>&1) || fail "qemu-io $*: $out"
    case $out in
    *"Pattern verification failed"*|*"failed"*|*"error"*) fail "qemu-io $*: $out" ;;
    esac
}
qio -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
qio -c 'write -P 0xcd 1M 4k' -c 'write -P 0xce 1052672 512' -c 'read -P 0xcd 1M 4k' \
    -c 'read -P 0xce 1052672 512'
qio -c 'write -P 0x11 2M 1M' -c 'discard 2M 512k' -c 'read -P 0 2M 512k' -c 'read -P 0x11 2560k 512k'
qio -c 'write -z 0 64k' -c 'read -P 0 0 64k' -c 'read -P 0xab 64k 960k'
qio -c 'write -z -u 4M 1M' -c 'read -P 0 4M 1M'
qio -c 'write -f -P 0x77 6M 128k' -c 'flush' -c 'read -P 0x77 6M 128k'
qio -c 'aio_write -P 0x21 8M 64k' -c 'aio_write -P 0x22 9M 64k' -c 'aio_flush' \
    -c 'read -P 0x21 8M 64k' -c 'read -P 0x22 9M 64k'
# Reads beyond the end are refused; the daemon keeps serving.
if qemu-io -f raw -c 'read 32M 4k' "$U" 2>&1 | grep -q "read 4096/4096"; then
    fail "a read past the end succeeded"
fi
qio -c 'read -P 0xab 64k 4k'

stop_daemon

echo "== the CLI reads what the clients wrote"
vdisk export vm1 "$TESTDIR/vm1.raw" >/dev/null || fail "vdisk export vm1"
out=$(qemu-io -r -f raw -c 'read -P 0x77 6M 128k' -c 'read -P 0 2M 512k' \
    -c 'read -P 0x22 9M 64k' "$TESTDIR/vm1.raw" 2>&1)
[ "$(echo "$out" | grep -c '^read ')" = 3 ] || fail "data lost after stop: $out"
vdisk export vm2 "$TESTDIR/vm2.raw" >/dev/null || fail "vdisk export vm2"
cmp "$TESTDIR/in.raw" "$TESTDIR/vm2.raw" || fail "vm2 differs after stop"
vdisk check vm1 >/dev/null || fail "vdisk check vm1 after a clean stop"
echo "PASS"
