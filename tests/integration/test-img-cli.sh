#!/bin/sh
# test-img-cli.sh - `vdisk img` end to end, checked by tools nobody here wrote.
#
# Random sparse raw images go raw -> vdk -> raw through `vdisk img convert`
# and must come back byte for byte (cmp, qemu-img compare).  Then info, map,
# check and compare are driven on them, on a delta over a base, and on
# broken input; every exit status is checked.
#
# Environment (tests/run-tests.sh): VDISK, the vdisk binary; TESTDIR, a
# fresh folder; VDISK_ASAN, optional: when it exists the whole script runs
# a second time with it (ASan+UBSan+LeakSanitizer).
# SEED=N replays a run (the seed is printed first).
# Exit: 0 pass, 1 fail, 77 skip.
set -u

. "$(dirname "$0")/lib/cli.sh"   # fail, skip, run, expect, json...
cli_test_start

command -v qemu-img >/dev/null 2>&1 || skip "qemu-img is not installed (qemu-utils)"
command -v cmp >/dev/null 2>&1 || skip "cmp is not installed (diffutils)"
for tool in truncate dd head od awk du stat; do
    command -v $tool >/dev/null 2>&1 || skip "$tool is not installed"
done

# ---------------------------------------------------------------- helpers

# mkraw FILE SIZE COUNT MAXLEN: a sparse file of SIZE bytes with COUNT runs
# of random bytes (up to MAXLEN each) at random offsets, half of them 4 KiB
# aligned, the others anywhere.
mkraw() {
    rm -f "$1"
    truncate -s "$2" "$1" || fail "truncate $1"
    awk -v seed="$SEED" -v salt="$2$3$4" -v size="$2" -v count="$3" -v maxlen="$4" '
        BEGIN {
            srand(seed + length(salt) * 7919 + salt % 100003)
            for (i = 0; i < count; i++) {
                len = 1 + int(rand() * maxlen)
                if (len > size) len = size
                off = int(rand() * (size - len + 1))
                if (rand() < 0.5) off -= off % 4096
                print off, len
            }
        }' >"$W/runs" || fail "awk"
    while read -r off len; do
        head -c "$len" /dev/urandom |
            dd of="$1" bs=65536 seek="$off" oflag=seek_bytes iflag=fullblock \
               conv=notrunc status=none || fail "dd into $1"
    done <"$W/runs"
    [ "$(file_size "$1")" = "$2" ] || fail "mkraw: $1 has the wrong size"
}

# poke FILE OFFSET: changes the byte at OFFSET.
poke() {
    old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    [ -n "$old" ] || old=0
    new=$(( (old + 1) % 256 ))
    printf "$(printf '\\%03o' "$new")" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none || fail "poke $1"
}

# roundtrip NAME SIZE COUNT MAXLEN: raw -> vdk -> raw, and compare.
roundtrip() {
    name=$1
    size=$2
    mkraw "$name.raw" "$size" "$3" "$4"
    expect 0 "$V" img convert -f raw -O vdk "$name.raw" "$name.vdk"
    [ -s "$W/err" ] && { echo "FAIL: convert wrote to stderr"; show; exit 1; }
    expect 0 "$V" img convert -O raw "$name.vdk" "$name.out.raw"
    padded=$(( (size + 511) / 512 * 512 ))
    check_eq "$(file_size "$name.out.raw")" "$padded" "size of $name.out.raw"
    if [ "$padded" = "$size" ]; then
        cmp "$name.raw" "$name.out.raw" || fail "$name: raw -> vdk -> raw differs (cmp)"
    else
        cmp -n "$size" "$name.raw" "$name.out.raw" ||
            fail "$name: raw -> vdk -> raw differs (cmp)"
        # The padding must read as zeroes.
        tail=$(od -An -v -tu1 -j "$size" "$name.out.raw" | tr -d ' 0\n')
        [ -z "$tail" ] || fail "$name: the padding is not zero"
    fi
    expect 0 qemu-img compare -f raw -F raw "$name.raw" "$name.out.raw"
    expect 0 "$V" img compare "$name.raw" "$name.vdk"
    out_has "Images are identical."
    expect 0 "$V" img compare "$name.vdk" "$name.raw"
    expect 0 "$V" img check "$name.vdk"
    expect 0 "$V" img info --output json "$name.vdk"
    check_eq "$(json 'd["virtual-size"]')" "$padded" "$name: virtual-size"
    check_eq "$(json 'd["chain-depth"]')" 1 "$name: chain-depth"
}

# ---------------------------------------------------------------- the tests

run_suite() {
    V=$1
    W=$2
    mkdir -p "$W" || fail "mkdir $W"
    cd "$W" || fail "cd $W"
    echo "== $V"

    # -- global options and usage errors
    expect 0 "$V" --help
    out_has "img"
    expect 0 "$V" img --help
    out_has "convert"
    for sub in create info check map convert compare; do
        expect 0 "$V" img $sub --help
        out_has "Usage: vdisk img $sub"
    done
    expect 0 "$V" --version
    out_has '^vdisk [0-9][0-9.]*'
    expect_usage "$V"
    expect_usage "$V" bogus
    expect_usage "$V" --bogus
    expect_usage "$V" img
    expect_usage "$V" img bogus
    expect_usage "$V" img info
    expect_usage "$V" img info --bogus x.vdk
    expect_usage "$V" img info --output xml x.vdk
    expect_usage "$V" img info a.vdk b.vdk
    expect_usage "$V" img map
    expect_usage "$V" img create x.vdk
    expect_usage "$V" img create x.vdk 12Q
    expect_usage "$V" img create --digest md5 x.vdk 1M
    expect_usage "$V" img create --block-size lots x.vdk 1M
    expect_usage "$V" img convert -O qed a b
    expect_usage "$V" img convert a b
    expect_usage "$V" img convert -O raw a
    expect_usage "$V" img convert -O raw --digest sha256 a b
    expect_usage "$V" img compare a
    [ ! -e x.vdk ] || fail "a usage error created x.vdk"

    # -- missing files: one-line errors, status 1 (compare: 2)
    expect_err 1 "$V" img info missing.vdk
    expect_err 1 "$V" img info --output json missing.vdk
    expect_err 1 "$V" img map missing.vdk
    expect_err 1 "$V" img check missing.vdk
    expect_err 1 "$V" img convert -O raw missing.vdk out.raw
    [ ! -e out.raw ] || fail "a failed convert left out.raw"
    expect_err 1 "$V" img create -b missing.vdk x.vdk
    [ ! -e x.vdk ] || fail "a failed create left x.vdk"
    expect 2 "$V" img compare missing.raw missing2.raw

    # -- create
    expect 0 "$V" img create a.vdk 64M
    out_has "Formatting 'a.vdk'"
    out_has "size=67108864"
    out_has "block_size=65536"
    expect_err 1 "$V" img create a.vdk 64M        # exists
    expect 0 "$V" img info --output json a.vdk
    check_eq "$(json 'd["virtual-size"]')" 67108864 "a.vdk virtual-size"
    check_eq "$(json 'd["block-size"]')" 65536 "a.vdk block-size"
    check_eq "$(json 'd["digest"]')" none "a.vdk digest"
    check_eq "$(json 'd["frozen"]')" False "a.vdk frozen"
    check_eq "$(json 'd["dirty"]')" False "a.vdk dirty"
    check_eq "$(json 'd["allocated-bytes"]')" 0 "a.vdk allocated-bytes"
    check_eq "$(json 'd["chain-depth"]')" 1 "a.vdk chain-depth"
    check_eq "$(json 'len(d["chain"])')" 1 "a.vdk chain"
    check_eq "$(json 'd["chain"][0]["uuid"] == d["uuid"]')" True "a.vdk chain uuid"
    check_eq "$(json 'd["file-size"]')" "$(file_size a.vdk)" "a.vdk file-size"
    expect 0 "$V" img info a.vdk
    out_has "^image: a.vdk"
    out_has "virtual size: 64 MiB (67108864 bytes)"
    out_has "^uuid: "
    expect 0 "$V" img check a.vdk
    expect 0 "$V" img check --output json a.vdk
    check_eq "$(json 'd["corruptions"] + d["leaked-bytes"]')" 0 "check of a.vdk"
    expect 0 "$V" img map --output json a.vdk
    check_eq "$(json '[(e["start"], e["length"], e["type"], e["depth"]) for e in d]')" \
        "[(0, 67108864, 'hole', 0)]" "map of an empty layer"
    expect 0 "$V" img create --block-size 4K --digest sha256 b.vdk 1G
    out_has "size=1073741824"
    out_has "block_size=4096"
    out_has "digest=sha256"
    expect 0 "$V" img info --output json b.vdk
    check_eq "$(json 'd["block-size"], d["digest"]')" "(4096, 'sha256')" "b.vdk"
    expect 0 "$V" img create c.vdk 1536K
    expect 0 "$V" img info --output json c.vdk
    check_eq "$(json 'd["virtual-size"]')" 1572864 "c.vdk virtual-size"
    expect_err 1 "$V" img create --block-size 3K d.vdk 1M   # not a power of two
    expect_err 1 "$V" img create d.vdk 1000                 # not a multiple of 512
    [ ! -e d.vdk ] || fail "a failed create left d.vdk"

    # -- round trips of random sparse images
    roundtrip small $((1024 * 1024 + 3 * 512)) 20 20000      # not a multiple of 64K
    roundtrip dense $((8 * 1024 * 1024)) 60 300000
    roundtrip odd $((3 * 1024 * 1024 + 12345)) 15 50000      # not a multiple of 512
    roundtrip tiny 512 1 512

    # 1 GiB, nearly empty: data at the start, in the middle and the last byte.
    big=$((1024 * 1024 * 1024))
    mkraw big.raw "$big" 6 100000
    printf 'x' | dd of=big.raw bs=1 seek=$((big - 1)) conv=notrunc status=none
    printf 'y' | dd of=big.raw bs=1 seek=0 conv=notrunc status=none
    expect 0 "$V" img convert -p -O vdk big.raw big.vdk
    [ -s "$W/err" ] && { echo "FAIL: -p wrote to a stderr that is no terminal"; show; exit 1; }
    [ "$(disk_kb big.vdk)" -lt 65536 ] || fail "big.vdk is not sparse: $(disk_kb big.vdk) KiB"
    expect 0 "$V" img convert -O raw big.vdk big.out.raw
    [ "$(disk_kb big.out.raw)" -lt 65536 ] ||
        fail "big.out.raw is not sparse: $(disk_kb big.out.raw) KiB"
    cmp big.raw big.out.raw || fail "big: raw -> vdk -> raw differs (cmp)"
    expect 0 qemu-img compare -f raw -F raw big.raw big.out.raw
    expect 0 "$V" img compare big.raw big.vdk
    expect 0 "$V" img info --output json big.vdk
    alloc=$(json 'd["allocated-bytes"]')
    [ "$alloc" -gt 0 ] && [ "$alloc" -lt $((8 * 1024 * 1024)) ] ||
        fail "big.vdk allocated-bytes $alloc"

    # vdk -> vdk, with other block size and digests
    expect 0 "$V" img convert -f vdk -O vdk --block-size 4K --digest sha256 \
        dense.vdk dense4k.vdk
    expect 0 "$V" img compare dense4k.vdk dense.raw
    expect 0 "$V" img check --verify dense4k.vdk
    expect 0 "$V" img info --output json dense4k.vdk
    check_eq "$(json 'd["block-size"], d["digest"]')" "(4096, 'sha256')" "dense4k.vdk"
    expect_err 1 "$V" img convert -O vdk dense.raw dense.vdk     # exists
    expect 0 "$V" img compare dense.vdk dense.raw                # untouched
    expect_err 1 "$V" img convert -O raw dense.raw dense.raw     # same file
    expect 0 "$V" img convert -f raw -O raw dense.raw dense.copy.raw
    cmp dense.raw dense.copy.raw || fail "raw -> raw differs"

    # -- compare finds a one-byte difference, in data and in a hole
    cp dense.raw dense.mod.raw || fail "cp"
    off=$(awk -v seed="$SEED" 'BEGIN { srand(seed); print int(rand() * 8388608) }')
    poke dense.mod.raw "$off"
    expect 1 "$V" img compare dense.vdk dense.mod.raw
    out_has "Content mismatch at offset $off!"
    expect 1 "$V" img compare -f raw -F raw dense.mod.raw dense.raw
    out_has "Content mismatch at offset $off!"
    cp big.raw big.mod.raw || fail "cp"
    poke big.mod.raw 600000000
    expect 1 "$V" img compare big.vdk big.mod.raw
    out_has "Content mismatch at offset 600000000!"
    # sizes differ: zeroes past the end are fine, anything else is not
    cp small.raw small.long.raw || fail "cp"
    truncate -s $((2 * 1024 * 1024)) small.long.raw
    expect 0 "$V" img compare small.vdk small.long.raw
    out_has "Images are identical."
    poke small.long.raw $((2 * 1024 * 1024 - 1000))
    expect 1 "$V" img compare small.long.raw small.vdk
    out_has "Content mismatch at offset $((2 * 1024 * 1024 - 1000))!"
    expect 2 "$V" img compare -f vdk dense.raw dense.vdk   # not a vdk file

    # -- map: known extents
    truncate -s 4M known.raw
    head -c 65536 /dev/urandom |
        dd of=known.raw bs=65536 seek=16 conv=notrunc status=none   # [1M, 1M+64K)
    expect 0 "$V" img convert -O vdk known.raw known.vdk
    expect 0 "$V" img map --output json known.vdk
    check_eq "$(json '[(e["start"], e["length"], e["type"], e["depth"]) for e in d]')" \
        "[(0, 1048576, 'hole', 0), (1048576, 65536, 'data', 1), (1114112, 3080192, 'hole', 0)]" \
        "map of known.vdk"
    expect 0 "$V" img map known.vdk
    out_has "^Offset"
    grep -q "^0x100000  *0x10000  *data  *1  *.*known.vdk" "$W/out" ||
        { echo "FAIL: human map of known.vdk"; show; exit 1; }
    # every map is contiguous and covers the disk
    for f in small.vdk dense.vdk odd.vdk big.vdk; do
        expect 0 "$V" img map --output json $f
        r=$(json 'all(d[i]["start"] + d[i]["length"] == d[i + 1]["start"] for i in range(len(d) - 1)) and d[0]["start"] == 0 and all(e["type"] in ("data", "zero", "hole") for e in d) and sum(e["length"] for e in d)')
        sz=$("$V" img info --output json $f | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
        check_eq "$r" "$sz" "map of $f covers the disk"
    done

    # -- a delta over a base
    cp known.vdk base.vdk || fail "cp"
    expect 0 "$V" img info --output json base.vdk
    base_uuid=$(json 'd["uuid"]')
    expect 0 "$V" img create -b base.vdk delta.vdk
    out_has "size=4194304"
    expect 0 "$V" img info --output json delta.vdk
    check_eq "$(json 'd["chain-depth"]')" 2 "delta chain-depth"
    check_eq "$(json 'd["parent-uuid"]')" "$base_uuid" "delta parent-uuid"
    check_eq "$(json 'd["chain"][1]["uuid"]')" "$base_uuid" "delta chain[1] uuid"
    check_eq "$(json 'd["chain"][1]["filename"].endswith("base.vdk")')" True \
        "delta chain[1] filename"
    check_eq "$(json 'd["chain"][1]["frozen"]')" True "base frozen"
    check_eq "$(json 'd["virtual-size"]')" 4194304 "delta virtual-size"
    expect 0 "$V" img info delta.vdk
    out_has "depth 2: .*base.vdk"
    expect 0 "$V" img map --output json delta.vdk
    check_eq "$(json '[(e["start"], e["length"], e["type"], e["depth"]) for e in d]')" \
        "[(0, 1048576, 'hole', 0), (1048576, 65536, 'data', 2), (1114112, 3080192, 'hole', 0)]" \
        "map of delta.vdk"
    expect 0 "$V" img compare delta.vdk known.raw
    expect 0 "$V" img convert -O raw delta.vdk delta.raw     # flattens
    cmp known.raw delta.raw || fail "delta -> raw differs"
    expect 0 "$V" img convert -O vdk delta.vdk flat.vdk
    expect 0 "$V" img info --output json flat.vdk
    check_eq "$(json 'd["chain-depth"]')" 1 "flattened chain-depth"
    expect 0 "$V" img check delta.vdk
    expect 0 "$V" img check base.vdk
    # one more level: the delta is frozen in turn
    expect 0 "$V" img create -b delta.vdk top.vdk
    expect 0 "$V" img info --output json top.vdk
    check_eq "$(json 'd["chain-depth"], d["chain"][1]["frozen"]')" "(3, True)" \
        "top.vdk chain"
    expect 0 "$V" img map --output json top.vdk
    check_eq "$(json '[(e["type"], e["depth"]) for e in d]')" \
        "[('hole', 0), ('data', 3), ('hole', 0)]" "map of top.vdk"
    expect 0 "$V" img compare top.vdk known.raw
    # a parent that cannot be found: the top layer is still shown
    mv base.vdk base.away || fail "mv"
    expect 1 "$V" img info delta.vdk
    out_has "^uuid: "
    out_has "^parent uuid: $base_uuid"
    grep -q '^vdisk: ' "$W/err" || { echo "FAIL: no error line"; show; exit 1; }
    expect 1 "$V" img info --output json delta.vdk
    check_eq "$(json 'd["parent-uuid"], d["chain-complete"]')" "('$base_uuid', False)" \
        "info of a delta without its parent"
    expect_err 1 "$V" img map delta.vdk
    expect 2 "$V" img compare delta.vdk known.raw
    mv base.away base.vdk || fail "mv"
    expect 0 "$V" img compare delta.vdk known.raw

    # -- check --verify finds damaged data (the data is stored as is)
    "$PY" -c 'import sys; sys.stdout.buffer.write(b"VDISK-TEST-PATTERN-0123456789ab" * 2048)' \
        >pat.bin || fail "python"
    truncate -s 2M pat.raw
    dd if=pat.bin of=pat.raw bs=65536 seek=8 conv=notrunc status=none || fail "dd"
    expect 0 "$V" img convert -O vdk --digest sha256 pat.raw pat.vdk
    expect 0 "$V" img check --verify pat.vdk
    where=$("$PY" -c 'import sys; print(open("pat.vdk","rb").read().find(b"VDISK-TEST-PATTERN-0123456789ab" * 16))')
    [ "$where" -gt 0 ] || fail "the pattern is not in pat.vdk"
    poke pat.vdk $((where + 1000))
    expect 2 "$V" img check --verify pat.vdk
    expect 2 "$V" img check --verify --output json pat.vdk
    [ "$(json 'd["digest-mismatches"]')" -ge 1 ] || fail "no digest mismatch reported"

    # -- info of a raw image (formats/), check on things that are not layers
    expect 0 "$V" img info known.raw
    grep -q "^file format: raw$" "$W/out" || fail "img info of a raw file: no format"
    expect_err 1 "$V" img info -f vdk known.raw
    run "$V" img check known.raw
    [ "$rc" = 1 ] || [ "$rc" = 2 ] || { echo "FAIL: check of a raw file: $rc"; show; exit 1; }

    # -- JSON strings are escaped
    weird=$(printf 'we"ird\\name\tx.vdk')
    expect 0 "$V" img create "$weird" 1M
    expect 0 "$V" img info --output json "$weird"
    check_eq "$(json 'd["filename"]')" "$weird" "escaped file name"
    expect 0 "$V" img check --output json "$weird"
    check_eq "$(json 'd["filename"]')" "$weird" "escaped file name (check)"

    cd "$TESTDIR" || fail "cd"
}

run_suite "$VDISK" "$TESTDIR/plain"
if [ -n "${VDISK_ASAN:-}" ] && [ -x "$VDISK_ASAN" ]; then
    run_suite "$VDISK_ASAN" "$TESTDIR/asan"
else
    echo "no ASan build of vdisk (VDISK_ASAN): checked the plain build only"
fi
echo "PASS"
exit 0
