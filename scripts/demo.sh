#!/bin/sh
# The demo `make run` shows until vdiskd exists: `vdisk img` on a sample
# image in ./vdisk-demo/, then the store commands in ./vdisk-store/ (both
# recreated on every run).  Each command is printed
# before it runs; the demo stops at the first one that fails.
#
# VDISK is the vdisk binary (default: build/bin/vdisk).
set -eu

cd "$(dirname "$0")/.."
VDISK=${VDISK:-$(pwd)/build/bin/vdisk}
case $VDISK in
/*) ;;
*) VDISK=$(pwd)/$VDISK ;;
esac
if [ ! -x "$VDISK" ]; then
    echo "demo: $VDISK not found: run make first" >&2
    exit 1
fi

vdisk() { "$VDISK" "$@"; }

# run CMD...: print the command, then run it.
run() {
    echo
    echo "\$ $*"
    "$@"
}

rm -rf vdisk-demo
mkdir vdisk-demo
cd vdisk-demo

echo "== a 64 MiB raw disk image, mostly sparse, with some random data and"
echo "== a region of explicit zeroes"
run truncate -s 64M disk.raw
run dd if=/dev/urandom of=disk.raw bs=64K seek=0 count=4 conv=notrunc status=none
run dd if=/dev/urandom of=disk.raw bs=4K seek=1000 count=3 conv=notrunc status=none
run dd if=/dev/zero of=disk.raw bs=1M seek=8 count=2 conv=notrunc status=none
run dd if=/dev/urandom of=disk.raw bs=1M seek=40 count=1 conv=notrunc status=none

echo
echo "== import it as a base layer, with a SHA-256 digest per block"
run vdisk img convert -f raw -O vdk --digest sha256 -p disk.raw base.vdk
run vdisk img info base.vdk

echo
echo "== a delta layer over it (this freezes base.vdk): it holds no block yet,"
echo "== every read falls through to the base"
run vdisk img create -b base.vdk delta.vdk
run vdisk img info delta.vdk
run vdisk img info --output json delta.vdk

echo
echo "== which layer holds what: depth 1 is delta.vdk, depth 2 base.vdk, 0 none"
run vdisk img map delta.vdk

echo
echo "== consistency check, then re-hash every block against its digest"
run vdisk img check delta.vdk
run vdisk img check --verify base.vdk

echo
echo "== back to raw through the chain, and compared with the original"
run vdisk img convert -f vdk -O raw delta.vdk roundtrip.raw
run vdisk img compare -f raw -F vdk disk.raw delta.vdk
run cmp disk.raw roundtrip.raw
if command -v qemu-img >/dev/null 2>&1; then
    run qemu-img compare -f raw -F raw disk.raw roundtrip.raw
fi
run ls -ls disk.raw base.vdk delta.vdk roundtrip.raw

echo
echo "== the same image in a store (./vdisk-store, recreated): a volume,"
echo "== snapshots, a rollback, a template and a linked clone"
cd ..
rm -rf vdisk-store
VDISK_STORE=$(pwd)/vdisk-store
export VDISK_STORE
run vdisk import -f raw vdisk-demo/disk.raw demo
run vdisk snapshot create demo clean
run vdisk io -c 'write -P 0x5a 0 1M' demo
run vdisk snapshot create demo patched
run vdisk snapshot rollback demo clean
run vdisk io -c 'read -P 0x5a 0 1M' demo@patched
run vdisk snapshot list demo
run vdisk template create golden --from demo
run vdisk clone golden desk01
run vdisk list
run vdisk template info golden
run vdisk df
run vdisk check

echo
echo "demo: done; the files are in ./vdisk-demo/ and the store in ./vdisk-store/"
