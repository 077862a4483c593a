#!/bin/sh
# Install the Debian packages vdisk needs to build and test, only those missing.
# Idempotent: a second run installs nothing. Called by `make test` and `make run`.
set -eu

# build: compiler, pkg-config, and the base libraries
PKGS="gcc make pkg-config libaio-dev libssl-dev liblmdb-dev libjansson-dev libcmocka-dev"
# zlib: qcow2 compressed clusters and VMDK streamOptimized grains (formats/)
PKGS="$PKGS zlib1g-dev"
# sanitizers and libFuzzer (clang's runtime); llvm brings llvm-symbolizer,
# without which sanitizer and fuzzer reports show bare addresses
PKGS="$PKGS clang libclang-rt-14-dev llvm"
# real clients the tests drive: qemu-img/qemu-io, cmp
PKGS="$PKGS qemu-utils diffutils"
# qemu-system-x86: the format tests boot images vdisk wrote (TCG, no KVM)
PKGS="$PKGS qemu-system-x86"
# NBD clients and peers for the daemon's tests and benchmarks: nbdinfo,
# nbdcopy, nbdsh (libnbd), nbdkit, fio
PKGS="$PKGS libnbd-bin python3-libnbd nbdkit fio"
# vdisk-vmm: libnbd (its NBD client), unicorn (the emulation accelerator
# for hosts without /dev/kvm)
PKGS="$PKGS libnbd-dev libunicorn-dev"
# the TLS tests make their certificates and keys with the openssl command
PKGS="$PKGS openssl"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
