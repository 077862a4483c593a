#!/bin/sh
# make-initramfs.sh OUT - builds the test initramfs for booting a Linux kernel
# under vdisk-vmm: a gzip'ed newc cpio holding a static busybox and, as
# /init, tests/guest/linux-init.sh (which prints what the guest sees and
# powers off).
#
# Needs busybox-static (Debian's /bin/busybox), cpio and gzip.  Every file
# in the archive belongs to root, whoever runs this (cpio -R), and the
# device nodes come from devtmpfs at boot, so no root is needed here.
set -eu

out=${1:?usage: make-initramfs.sh OUT.cpio.gz}
here=$(cd "$(dirname "$0")" && pwd)

busybox=""
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && file -L "$b" 2>/dev/null | grep -q "statically linked"; then
        busybox=$b
        break
    fi
done
# Without file(1), trust the path busybox-static installs.
[ -n "$busybox" ] || { [ -x /bin/busybox ] && busybox=/bin/busybox; } || true
if [ -z "$busybox" ]; then
    echo "make-initramfs.sh: no static busybox (apt-get install busybox-static)" >&2
    exit 1
fi
for tool in cpio gzip; do
    command -v "$tool" >/dev/null || {
        echo "make-initramfs.sh: $tool is missing (apt-get install $tool)" >&2
        exit 1
    }
done

root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh mount echo cat grep tr uname poweroff; do
    ln -s busybox "$root/bin/$applet"
done
install -m 755 "$here/linux-init.sh" "$root/init"

tmp="$out.tmp.$$"
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 > "$tmp"
mv "$tmp" "$out"
