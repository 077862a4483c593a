#!/bin/sh
# test-nbd-fio.sh - fio's nbd engine against vdiskd: random 4 KiB writes
# at queue depth 16 with crc32c verification, then a sequential 1 MiB
# write/verify pass, on a volume and on a linked clone (copy-on-write under
# load).  Correctness only: no timings are checked.
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"

vdisk create vm1 64M >/dev/null || fail "create vm1"
vdisk create base 64M >/dev/null || fail "create base"
vdisk template create gold --from base >/dev/null || fail "template"
vdisk clone gold desk1 >/dev/null || fail "clone"

start_daemon

run_fio() {
    name=$1
    shift
    fio --name="$name" --ioengine=nbd --uri="$(uri "$vol")" --size=32M \
        --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output="$TESTDIR/fio-$name.txt" \
        "$@" || { cat "$TESTDIR/fio-$name.txt"; fail "fio $name on $vol"; }
    grep -q "err= 0" "$TESTDIR/fio-$name.txt" || { cat "$TESTDIR/fio-$name.txt"; fail "fio $name on $vol reported errors"; }
}

for vol in vm1 desk1; do
    echo "== $vol"
    run_fio randwrite --rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --number_ios=2048
    run_fio seqwrite --rw=write --bs=1M --iodepth=8 --verify=crc32c
    run_fio mixed --rw=randrw --bs=64k --iodepth=8 --verify=md5 --number_ios=256
done

stop_daemon
echo "PASS"
