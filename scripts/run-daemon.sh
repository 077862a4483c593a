#!/bin/sh
# run-daemon.sh - what `make run` does once everything is built: makes sure
# ./vdisk-store holds a demo volume "demo" (1 GiB, some data imported; kept
# between runs), prints the NBD URIs and a few client commands, then runs
# vdiskd in the foreground until Ctrl-C.
#
# VDISK and VDISKD name the binaries (default: build/bin/vdisk, build/bin/vdiskd).
# PORT is the TCP port (default 10809).
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VDISK=${VDISK:-$ROOT/build/bin/vdisk}
VDISKD=${VDISKD:-$ROOT/build/bin/vdiskd}
PORT=${PORT:-10809}
STORE=$ROOT/vdisk-store
SOCK=$STORE/nbd.sock
export VDISK_STORE="$STORE"

for b in "$VDISK" "$VDISKD"; do
    [ -x "$b" ] || { echo "run-daemon: $b not found: run make first" >&2; exit 1; }
done

if ! "$VDISK" info demo >/dev/null 2>&1; then
    echo "== creating the demo volume 'demo' (1 GiB) in $STORE"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    truncate -s 1G "$tmp/demo.raw"
    # Some data: a "boot sector", a few MiB of random data, a text file.
    dd if=/dev/urandom of="$tmp/demo.raw" bs=1M count=4 conv=notrunc status=none
    printf 'Hello from vdiskd: this text lives at 64 MiB of volume demo.\n' |
        dd of="$tmp/demo.raw" bs=1M seek=64 conv=notrunc status=none
    "$VDISK" import -f raw "$tmp/demo.raw" demo
    "$VDISK" snapshot create demo initial
    rm -rf "$tmp"
    trap - EXIT
fi
"$VDISK" list

cat <<EOT

== vdiskd serves $STORE on:
   nbd+unix:///demo?socket=$SOCK
   nbd://127.0.0.1:$PORT/demo
   (also demo@initial, read-only; every volume, snapshot and template by name)

== try, from another terminal:
   nbdinfo --list 'nbd+unix:///?socket=$SOCK'
   nbdinfo --map 'nbd://127.0.0.1:$PORT/demo'
   qemu-img info 'nbd+unix:///demo?socket=$SOCK'
   qemu-io -f raw -c 'read -v 64M 64' 'nbd+unix:///demo?socket=$SOCK'
   nbdcopy 'nbd://127.0.0.1:$PORT/demo' demo-copy.raw
   nbdsh -u 'nbd://127.0.0.1:$PORT/demo' -c 'print(h.pread(62, 64 << 20))'
   fio --name=t --ioengine=nbd --uri='nbd+unix:///demo?socket=$SOCK' --rw=randread --bs=4k --iodepth=32 --size=64M --runtime=10 --time_based
   qemu-system-x86_64 ... -drive file=nbd:unix:$SOCK:exportname=demo,format=raw,cache=none

== the control API (JSON, one command per line; docs/CONTROL-API.md):
   echo '{"execute": "query-exports"}' | socat - UNIX-CONNECT:$STORE/control.sock

== vdiskd in the foreground; Ctrl-C stops it cleanly.
EOT
exec "$VDISKD" --store "$STORE" --listen "unix:$SOCK" --listen "tcp:127.0.0.1:$PORT" --foreground
