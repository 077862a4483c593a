#!/bin/sh
# linux-init.sh - /init of the test initramfs that tests/guest/make-initramfs.sh
# builds: a Linux guest of vdisk-vmm says what it sees on its console
# (ttyS0: boot it with console=ttyS0), then powers off.  The lines it prints
# start with "linux-init:" so that a test can find them among the kernel's.
#
# No shell is left behind: whatever happens, the last thing is poweroff -f,
# so the VM ends on its own (with no ACPI the kernel halts every CPU, which
# vdisk-vmm takes as a power-off).

export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel opened /dev/console before /init ran, if it could; after
# devtmpfs it surely can.
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

echo "linux-init: hello from $(uname -s) $(uname -r)"
echo "linux-init: $(grep -c '^processor' /proc/cpuinfo) CPU(s) online"
echo "linux-init: $(grep MemTotal /proc/meminfo | tr -s ' ')"
echo "linux-init: command line: $(cat /proc/cmdline)"
for d in /sys/block/vd*; do
    [ -e "$d" ] || continue
    echo "linux-init: disk ${d##*/}: $(cat "$d/size") sectors"
done
echo "linux-init: powering off"
poweroff -f
