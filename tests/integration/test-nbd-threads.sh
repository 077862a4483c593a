#!/bin/sh
# test-nbd-threads.sh - vdiskd's event loop threads, under ThreadSanitizer.
#
# vdiskd --threads 3 (the TSan build, build/tsan/bin/vdiskd) serves at once:
# two volumes and two linked clones of one template (the clones share the
# template's open layers across threads) with fio verify jobs of two
# connections each, the template itself read-only, and `nbdinfo --list`
# in a loop (NBD_OPT_INFO opens and closes exports on whatever thread runs
# the handshake).  New connections are spread over the threads and each
# moves to the thread that serves its export; the log must show moves.
# Every fio job must verify, the data must read back the same through a
# fresh connection, and TSan must report nothing.  Then the same with
# --cache writeback, where libvdisk runs the I/O of buffered files on its
# own threads.
NBD_LIB=1
DAEMON=${DAEMON:-${BUILD:-$(pwd)/build}/tsan/bin/vdiskd}
[ -x "$DAEMON" ] || { echo "SKIP: no ThreadSanitizer build of vdiskd at $DAEMON (make tsan)"; exit 77; }
. tests/integration/test-nbd-lib.sh
need fio nbdinfo nbdcopy
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"

for v in vm1 vm2; do vdisk create $v 32M >/dev/null || fail "create $v"; done
vdisk create base 32M >/dev/null || fail "create base"
vdisk io -c 'write -P 0x5c 0 32M' base >/dev/null || fail "fill base"
vdisk template create gold --from base >/dev/null || fail "template"
for v in desk1 desk2; do vdisk clone gold $v >/dev/null || fail "clone $v"; done

# setarch -R: TSan needs the fixed memory layout some kernels randomize away.
if setarch -R true 2>/dev/null; then
    real=$DAEMON
    DAEMON=$TESTDIR/vdiskd-norandom
    printf '#!/bin/sh\nexec setarch -R %s "$@"\n' "$real" >"$DAEMON"
    chmod +x "$DAEMON"
fi
start_daemon --threads 3

pids=
for vol in vm1 vm2 desk1 desk2; do
    fio --name="$vol" --ioengine=nbd --uri="$(uri $vol)" --size=16M --numjobs=2 \
        --offset_increment=16M --rw=randwrite --bs=4k --iodepth=8 --number_ios=1500 \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output="$TESTDIR/fio-$vol.txt" &
    pids="$pids $!"
done
fio --name=gold --ioengine=nbd --uri="$(uri gold)" --readonly --rw=randread --bs=4k \
    --iodepth=8 --size=32M --number_ios=3000 --output="$TESTDIR/fio-gold.txt" &
pids="$pids $!"
i=0
while [ $i -lt 10 ]; do
    nbdinfo --list "nbd+unix:///?socket=$SOCK" >/dev/null 2>&1 || fail "nbdinfo --list"
    i=$((i + 1))
done
for p in $pids; do
    wait "$p" || fail "a fio job failed (logs in $TESTDIR)"
done
for f in "$TESTDIR"/fio-*.txt; do
    grep -q "err= 0" "$f" || { cat "$f"; fail "fio reported errors: $f"; }
done

echo "== linked clones kept the template's data where fio did not write"
nbdcopy "$(uri gold)" "$TESTDIR/gold.raw" || fail "nbdcopy gold"
nbdcopy "$(uri desk1)" "$TESTDIR/desk1.raw" || fail "nbdcopy desk1"
# fio wrote 1500 x 4 KiB per job: the last MiB of each 16 MiB half is
# unlikely all written, so compare only what both say is the template's.
"$PY" - "$TESTDIR/gold.raw" "$TESTDIR/desk1.raw" <<'PYEOF' || fail "clone content"
import sys
g = open(sys.argv[1], "rb").read()
d = open(sys.argv[2], "rb").read()
assert len(g) == len(d) == 32 << 20
assert g == b"\x5c" * len(g)
same = sum(1 for i in range(0, len(d), 4096) if d[i:i + 4096] == g[i:i + 4096])
changed = len(d) // 4096 - same
print("4 KiB blocks still the template's: %d, written by fio: %d" % (same, changed))
assert same > 0 and changed > 0
PYEOF

moves=$(grep -c "moved to thread" "$TESTDIR/vdiskd.log")
echo "connections moved to their export's thread: $moves"
[ "$moves" -gt 0 ] || fail "no connection moved between threads (log: $TESTDIR/vdiskd.log)"
stop_daemon

echo "== --cache writeback: buffered files go through libvdisk's I/O threads"
start_daemon --threads 2 --cache writeback
pids=
for vol in vm1 desk2; do
    fio --name="wb-$vol" --ioengine=nbd --uri="$(uri $vol)" --size=16M --numjobs=2 \
        --offset_increment=16M --rw=randrw --bs=4k --iodepth=16 --number_ios=1500 \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output="$TESTDIR/fio-wb-$vol.txt" &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p" || fail "a fio job failed with --cache writeback (logs in $TESTDIR)"
done
for f in "$TESTDIR"/fio-wb-*.txt; do
    grep -q "err= 0" "$f" || { cat "$f"; fail "fio reported errors: $f"; }
done
stop_daemon
echo "PASS"
