#!/bin/sh
# test-nbd-info.sh - what vdiskd says about its exports, asked by nbdinfo
# and qemu-img: the list (volumes, snapshots, template versions, with
# descriptions), the JSON description of one export, the --can flags of
# read-write and read-only exports, and block status (base:allocation via
# --map and qemu-img map, qemu:allocation-depth on a linked clone).
NBD_LIB=1
. tests/integration/test-nbd-lib.sh
need nbdinfo qemu-img qemu-io dd truncate
[ -x "$PY" ] || skip "$PY is not installed"

# A 64 MiB volume with data in [0, 1 MiB) and [8 MiB, 9 MiB), a snapshot,
# a template made from it and a linked clone of the template.
truncate -s 64M "$TESTDIR/disk.raw"
dd if=/dev/urandom of="$TESTDIR/disk.raw" bs=1M count=1 conv=notrunc status=none
dd if=/dev/urandom of="$TESTDIR/disk.raw" bs=1M seek=8 count=1 conv=notrunc status=none
vdisk import -f raw "$TESTDIR/disk.raw" vm1 >/dev/null || fail "import"
vdisk snapshot create vm1 s1 >/dev/null || fail "snapshot create"
vdisk template create gold --from vm1 >/dev/null || fail "template create"
vdisk clone gold desk1 >/dev/null || fail "clone"

start_daemon

echo "== nbdinfo --list"
nbdinfo --list "nbd+unix://?socket=$SOCK" >"$TESTDIR/list" || fail "nbdinfo --list"
cat "$TESTDIR/list"
for name in vm1 vm1@s1 gold gold@1 desk1; do
    grep -q "export=\"$name\"\|^export=\"$name\"\|$name" "$TESTDIR/list" || fail "--list lacks $name"
done
grep -q "volume vm1 (64 MiB)" "$TESTDIR/list" || fail "--list lacks the description of vm1"
grep -q "snapshot s1 of volume vm1" "$TESTDIR/list" || fail "--list lacks the description of vm1@s1"
grep -q "template gold version 1" "$TESTDIR/list" || fail "--list lacks the description of gold@1"

echo "== nbdinfo --json"
nbdinfo --json "$(uri vm1)" >"$TESTDIR/json" || fail "nbdinfo --json"
"$PY" - "$TESTDIR/json" <<'PYEOF' || fail "nbdinfo --json says something wrong"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
print(json.dumps(e, indent=1))
assert e["export-size"] == 64 << 20, e["export-size"]
assert e["is_read_only"] is False
assert e["can_multi_conn"] is True
assert e["can_flush"] and e["can_fua"] and e["can_trim"] and e["can_zero"]
assert e.get("can_fast_zero", True)
assert e["block_size_minimum"] == 512
assert e["block_size_preferred"] == 4096
assert e["block_size_maximum"] == 32 << 20
assert e["description"] == "volume vm1 (64 MiB)", e["description"]
ctx = e.get("contexts", [])
assert "base:allocation" in ctx and "qemu:allocation-depth" in ctx, ctx
PYEOF

echo "== nbdinfo --can / --is"
for what in write flush trim zero fua multi-conn; do
    nbdinfo --can "$what" "$(uri vm1)" || fail "vm1: --can $what is not true"
done
nbdinfo --is read-only "$(uri vm1@s1)" || fail "vm1@s1 is not read-only"
nbdinfo --is read-only "$(uri gold)" || fail "gold is not read-only"
if nbdinfo --can write "$(uri gold@1)"; then fail "gold@1 can write"; fi
nbdinfo --can multi-conn "$(uri vm1@s1)" || fail "vm1@s1: --can multi-conn"

echo "== nbdinfo --map (base:allocation)"
nbdinfo --map "$(uri vm1)" | tee "$TESTDIR/map"
awk '$1 == 0 { found = 1; if ($4 != "data" && $3 != 0) exit 1 } END { exit !found }' \
    "$TESTDIR/map" || fail "vm1 does not start with data"
nbdinfo --map --totals "$(uri vm1)" | tee "$TESTDIR/totals"
awk '$3 == 0 { d = $1 } END { exit !(d == 2097152) }' "$TESTDIR/totals" ||
    fail "vm1 should have exactly 2 MiB of data"

echo "== qemu-img info / map over nbd+unix://"
qemu-img info "$(uri vm1)" | tee "$TESTDIR/info"
grep -q "virtual size: 64 MiB" "$TESTDIR/info" || fail "qemu-img info: wrong size"
qemu-img map --output=json "$(uri vm1)" >"$TESTDIR/qmap" || fail "qemu-img map"
"$PY" - "$TESTDIR/qmap" <<'PYEOF' || fail "qemu-img map disagrees"
import json, sys
m = json.load(open(sys.argv[1]))
data = [(e["start"], e["length"]) for e in m if e["data"]]
tot = sum(l for s, l in data)
print(data)
assert tot == 2 << 20, tot
assert data[0][0] == 0
assert any(s <= 8 << 20 < s + l for s, l in data)
PYEOF

echo "== qemu:allocation-depth on the linked clone"
qemu-io -f raw -c 'write -P 0x5a 4M 64k' "$(uri desk1)" >/dev/null || fail "qemu-io write on desk1"
nbdinfo --map=qemu:allocation-depth "$(uri desk1)" | tee "$TESTDIR/depth"
# desk1's own write at 4 MiB: depth 1; the template's data at 0: depth 2 or
# more (gold's layers); nothing at 32 MiB: 0.
"$PY" - "$TESTDIR/depth" <<'PYEOF' || fail "allocation depth is wrong"
import sys
ext = []
for line in open(sys.argv[1]):
    f = line.split()
    ext.append((int(f[0]), int(f[1]), int(f[2])))
def depth(off):
    for s, l, d in ext:
        if s <= off < s + l:
            return d
    raise SystemExit("offset %d not mapped" % off)
assert depth(4 << 20) == 1, depth(4 << 20)
assert depth(0) >= 2, depth(0)
assert depth(32 << 20) == 0, depth(32 << 20)
PYEOF

stop_daemon
echo "PASS"
