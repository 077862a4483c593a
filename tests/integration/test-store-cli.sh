#!/bin/sh
# test-store-cli.sh - a user's session with the store-level `vdisk`
# commands, end to end, checked against a model kept in plain raw files.
#
# Every volume has a model: a raw file that receives the same writes (the
# script writes patterns with `vdisk io` and with python into the model).
# After each operation the volume, its snapshots and the template versions
# are exported (`vdisk export`) and compared with their models by `cmp`
# (and `qemu-img compare` for the imported random images).  JSON listings
# are parsed with python's json module.  Every error case must exit
# non-zero with exactly one "vdisk: " line on stderr and leave the store
# as it was (the JSON listings before and after are equal).
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
for tool in truncate dd head od awk du stat env; do
    command -v $tool >/dev/null 2>&1 || skip "$tool is not installed"
done

MiB=1048576

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

# fill FILE BYTE OFF LEN: what `write -P BYTE OFF LEN` does, in a model.
fill() {
    "$PY" -c 'import sys
f = open(sys.argv[1], "r+b")
f.seek(int(sys.argv[3]))
f.write(bytes([int(sys.argv[2], 0)]) * int(sys.argv[4]))' "$@" || fail "fill $*"
}

# model VOL SIZE: a new all-zero model for VOL.
model() {
    rm -f "$W/m.$1"
    truncate -s "$2" "$W/m.$1" || fail "truncate"
}

# wr VOL BYTE OFF LEN: writes the pattern into the volume and its model.
wr() {
    ok "$V" io -c "write -P $2 $3 $4" "$1"
    out_has "^wrote $4/$4 bytes at offset $3"
    fill "$W/m.$1" "$2" "$3" "$4"
}

# keep VOL NAME: saves VOL's model as the model of NAME (a snapshot...).
keep() {
    cp "$W/m.$1" "$W/m.$2" || fail "cp"
}

# same NAME[@SNAP] MODEL: the content of NAME equals the model file.
same() {
    rm -f "$W/same.raw"
    ok "$V" export -O raw "$1" "$W/same.raw"
    cmp "$W/same.raw" "$W/m.$2" >/dev/null 2>&1 || {
        cmp "$W/same.raw" "$W/m.$2"
        fail "$1 differs from its model m.$2"
    }
}

# state FILE: everything the listings say about the store.
state() {
    {
        "$V" list --output json || echo "list failed"
        "$V" template list --output json || echo "template list failed"
        for vol in $("$V" list --output json |
                     "$PY" -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))'); do
            echo "$vol:"
            "$V" snapshot list --output json "$vol" || echo "snapshot list failed"
        done
        for tpl in $("$V" template list --output json |
                     "$PY" -c 'import json,sys; print(" ".join(t["name"] for t in json.load(sys.stdin)))'); do
            echo "$tpl:"
            "$V" template info --output json "$tpl" || echo "template info failed"
        done
    } >"$1" 2>&1
}

# refused RC CMD...: an error case: status RC (2: a usage error), one line
# (usage errors: a message and a hint), and the store unchanged.
refused() {
    state "$W/before"
    if [ "$1" = 2 ]; then
        shift
        expect_usage "$@"
    else
        expect_err "$@"
    fi
    cp "$W/err" "$W/refused.err"
    state "$W/after"
    cmp -s "$W/before" "$W/after" || {
        diff "$W/before" "$W/after"
        fail "'$*' changed the store"
    }
    cp "$W/refused.err" "$W/err"
}

# ---------------------------------------------------------------- the tests

run_suite() {
    V=$1
    W=$2
    S=$W/store
    mkdir -p "$W" || fail "mkdir $W"
    cd "$W" || fail "cd $W"
    echo "== $V"
    unset VDISK_STORE

    # -- help and usage
    ok "$V" --help
    cmds="create list info rm resize check map import export io snapshot
          template clone flatten df img"
    for c in $cmds; do
        out_has "^  vdisk $c"
    done
    for c in $cmds; do
        ok "$V" $c --help
        out_has "Usage: vdisk $c"
    done
    for c in create list rollback commit rm; do
        ok "$V" snapshot $c --help
        out_has "Usage: vdisk snapshot $c"
    done
    for c in create list info update rm; do
        ok "$V" template $c --help
        out_has "Usage: vdisk template $c"
    done
    expect_usage "$V" bogus
    expect_usage "$V" snapshot
    expect_usage "$V" snapshot bogus
    expect_usage "$V" template bogus
    expect_usage "$V" create
    expect_usage "$V" create v1
    expect_usage "$V" create v1 12Q
    expect_usage "$V" create --digest md5 v1 1M
    expect_usage "$V" create v1 1M extra
    expect_usage "$V" list --output xml
    expect_usage "$V" io v1
    expect_usage "$V" io -c 'write 0 100' v1
    expect_usage "$V" io -c 'scribble 0 512' v1
    expect_usage "$V" io -c 'write -P 300 0 512' v1
    expect_usage "$V" clone t@x v
    expect_usage "$V" clone t@0 v
    expect_usage "$V" template create t
    expect_usage "$V" template create t --from a --import b
    expect_usage "$V" template update t --import b
    expect_usage "$V" snapshot create v
    expect 1 "$V" check --bogus          # check: usage errors are status 1
    [ ! -e "$S" ] || fail "a usage error created the store"

    # -- no store: read-only commands say so and create nothing
    for cmd in "list" "info v" "df" "check" "map v" "template list" \
               "snapshot list v" "export v x.raw" "rm v"; do
        # shellcheck disable=SC2086
        expect_err 1 "$V" --store "$W/nostore" $cmd
        err_has "no store at $W/nostore; create a volume first or pass --store"
    done
    expect_err 1 env VDISK_STORE="$W/nostore" "$V" list
    err_has "no store at $W/nostore"
    [ ! -e "$W/nostore" ] || fail "a read-only command created a store"

    # -- the store: --store before and after the command, or $VDISK_STORE
    ok "$V" --store "$S" create vol 8M
    out_has "Created volume 'vol'"
    [ -d "$S" ] || fail "create did not make the store"
    ok "$V" create --store "$S" small 1M --block-size 4K --digest sha256
    ok env VDISK_STORE="$S" "$V" create big 1G
    ok env VDISK_STORE="$W/elsewhere" "$V" --store "$S" list --output json
    check_eq "$(json '[v["name"] for v in d]')" "['big', 'small', 'vol']" "volumes"
    [ ! -e "$W/elsewhere" ] || fail "--store did not win over VDISK_STORE"
    VDISK_STORE=$S
    export VDISK_STORE
    ok "$V" list --output json
    check_eq "$(json '[(v["name"], v["virtual-size"], v["block-size"], v["digest"], v["chain-depth"], v["snapshot-count"], v["template"], v["allocated-bytes"]) for v in d]')" \
        "[('big', 1073741824, 65536, 'none', 1, 0, None, 0), ('small', 1048576, 4096, 'sha256', 1, 0, None, 0), ('vol', 8388608, 65536, 'none', 1, 0, None, 0)]" \
        "list after create"
    check_eq "$(json 'all(v["writer-pid"] is None and len(v["created"]) == 25 for v in d)')" \
        True "list: writer-pid and created"
    ok "$V" list
    out_has "^NAME"
    out_has "^vol  *8 MiB"
    ok "$V" info vol
    out_has "^volume: vol"
    out_has "^virtual size: 8 MiB (8388608 bytes)"
    out_has "^chain depth: 1"
    ok "$V" info --output json small
    check_eq "$(json 'd["type"], d["name"], d["virtual-size"], d["snapshots"]')" \
        "('volume', 'small', 1048576, [])" "info small"

    # -- import a random sparse raw image, export it back
    size=$((16 * MiB))
    mkraw img.raw $size 40 200000
    ok "$V" import -f raw -p img.raw imp
    ok "$V" info --output json imp
    check_eq "$(json 'd["virtual-size"]')" $size "imported size"
    alloc=$(json 'd["allocated-bytes"]')
    [ "$alloc" -gt 0 ] && [ "$alloc" -lt $size ] || fail "imp allocated $alloc"
    ok "$V" export imp out.raw
    cmp img.raw out.raw || fail "import + export differs (cmp)"
    expect 0 qemu-img compare -f raw -F raw img.raw out.raw
    [ "$(disk_kb out.raw)" -lt $((size / 1024)) ] || fail "export is not sparse"
    ok "$V" export -O vdk imp out.vdk
    expect 0 "$V" img compare out.vdk img.raw
    ok "$V" img info --output json out.vdk
    check_eq "$(json 'd["chain-depth"]')" 1 "exported vdk depth"
    ok "$V" import out.vdk imp2                      # vdk, detected
    ok "$V" export imp2 out2.raw
    cmp img.raw out2.raw || fail "vdk import differs"
    # a size that is not a multiple of 512: padded with zeroes
    odd=$((3 * MiB + 1234))
    mkraw odd.raw $odd 10 50000
    ok "$V" import --block-size 4K --digest sha256 odd.raw odd
    ok "$V" info --output json odd
    check_eq "$(json 'd["virtual-size"], d["block-size"], d["digest"]')" \
        "($(( (odd + 511) / 512 * 512 )), 4096, 'sha256')" "odd import"
    ok "$V" export odd odd.out.raw
    cmp -n $odd odd.raw odd.out.raw || fail "odd import differs"
    expect 0 qemu-img compare -f raw -F raw odd.raw odd.out.raw
    ok "$V" check --verify odd
    # a big nearly empty image: data at both ends, imported sparsely
    truncate -s 1G huge.raw
    printf 'first' | dd of=huge.raw conv=notrunc status=none
    printf 'last' | dd of=huge.raw bs=1 seek=$((1024 * MiB - 4)) conv=notrunc status=none
    ok "$V" import huge.raw huge
    ok "$V" map --output json huge
    check_eq "$(json '[(e["type"], e["depth"]) for e in d]')" \
        "[('data', 1), ('hole', 0), ('data', 1)]" "map of huge"
    ok "$V" export huge huge.out.raw
    cmp huge.raw huge.out.raw || fail "huge differs"
    [ "$(disk_kb huge.out.raw)" -lt 4096 ] || fail "huge export is not sparse"
    ok "$V" map huge
    out_has "^Offset"
    grep -q '^0x0  *0x[0-9a-f]*  *data  *1  *.*\.vdk$' "$W/out" ||
        { echo "FAIL: human map of huge"; show; exit 1; }

    # -- io: writes, reads, verification
    model vol $((8 * MiB))
    wr vol 0x11 0 $MiB
    ok "$V" io -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 7M' vol
    out_has "^read 1048576/1048576 bytes at offset 0"
    expect_err 1 "$V" io -c 'read -P 0x11 0 2M' vol
    err_has "pattern verification failed at offset 1048576"
    ok "$V" io -c 'write -z 4096 4096' -c 'discard 65536 65536' -c flush vol
    fill m.vol 0 4096 4096
    fill m.vol 0 65536 65536
    same vol vol
    ok "$V" io -c 'write 2M 512' vol                 # qemu-io's default 0xcd
    fill m.vol 0xcd $((2 * MiB)) 512
    same vol vol

    # -- snapshots: a tree, rollback, commit, rm
    ok "$V" snapshot create vol s1
    keep vol s1
    wr vol 0x22 $((512 * 1024)) $MiB
    ok "$V" snapshot create --store "$S" vol s2   # --store after the subcommand
    keep vol s2
    wr vol 0x33 $((6 * MiB)) 65536
    keep vol pre-rollback
    ok "$V" snapshot --store "$S" list --output json vol
    check_eq "$(json '[(s["name"], s["parent"], s["head"]) for s in d]')" \
        "[('s1', None, False), ('s2', 's1', True)]" "snapshot tree"
    check_eq "$(json 'all(s["current"] and s["virtual-size"] == 8388608 and len(s["created"]) == 25 for s in d)')" \
        True "snapshot fields"
    check_eq "$(json 'd[0]["allocated-bytes"] > 0 and d[1]["allocated-bytes"] > 0')" True \
        "snapshot allocated"
    same vol@s1 s1
    same vol@s2 s2
    same vol vol
    ok "$V" info --output json vol
    check_eq "$(json 'd["snapshots"], d["snapshot-count"], d["chain-depth"]')" \
        "(['s1', 's2'], 2, 3)" "info with snapshots"
    ok "$V" map --output json vol
    check_eq "$(json 'sorted(set(e["depth"] for e in d if e["type"] == "data"))')" \
        "[1, 2, 3]" "depths in the map of vol"

    ok "$V" snapshot rollback vol s1
    keep s1 vol
    same vol vol
    same vol@s2 s2
    ok "$V" snapshot rollback vol s1              # again
    same vol vol
    wr vol 0x44 $((3 * MiB)) 65536
    ok "$V" snapshot create vol s3                # a branch off s1
    keep vol s3
    wr vol 0x45 $((3 * MiB)) 4096
    ok "$V" snapshot list --output json vol
    check_eq "$(json '[(s["name"], s["parent"], s["head"]) for s in d]')" \
        "[('s1', None, False), ('s2', 's1', False), ('s3', 's1', True)]" "branched tree"
    check_eq "$(json '[s["current"] for s in d]')" "[True, False, True]" "current"
    ok "$V" snapshot list vol
    grep -q '^  s1 ' "$W/out" && grep -q '^    s2 ' "$W/out" && grep -q '^\*   s3 ' "$W/out" ||
        { echo "FAIL: human snapshot tree"; show; exit 1; }

    # commit: the volume keeps its content, the snapshot goes
    ok "$V" snapshot rollback vol s2
    keep s2 vol
    wr vol 0x55 $MiB 65536
    ok "$V" snapshot commit -p vol s2
    [ -s "$W/err" ] && fail "commit -p wrote to a stderr that is no terminal"
    same vol vol
    same vol@s1 s1
    same vol@s3 s3
    ok "$V" snapshot list --output json vol
    check_eq "$(json '[(s["name"], s["parent"]) for s in d]')" \
        "[('s1', None), ('s3', 's1')]" "tree after commit"
    ok "$V" info --output json vol
    check_eq "$(json 'd["chain-depth"]')" 2 "depth after commit"

    # rm in the middle of a line and at the root of a tree
    model line 4194304
    ok "$V" create line 4M
    wr line 0xa1 0 $MiB
    ok "$V" snapshot create line sa
    keep line sa
    wr line 0xa2 $((512 * 1024)) $MiB
    ok "$V" snapshot create line sb
    keep line sb
    wr line 0xa3 $MiB $MiB
    ok "$V" snapshot create line sc
    keep line sc
    wr line 0xa4 $((3 * MiB)) 4096
    ok "$V" snapshot rm line sb
    same line@sa sa
    same line@sc sc
    same line line
    ok "$V" snapshot list --output json line
    check_eq "$(json '[(s["name"], s["parent"]) for s in d]')" \
        "[('sa', None), ('sc', 'sa')]" "line after rm sb"
    ok "$V" snapshot rm vol s1                    # the root, with a child
    same vol@s3 s3
    same vol vol
    ok "$V" snapshot list --output json vol
    check_eq "$(json '[(s["name"], s["parent"]) for s in d]')" "[('s3', None)]" \
        "vol after rm s1"
    ok "$V" check
    out_has "No errors were found"

    # -- templates and clones
    ok "$V" template create t1 --from vol
    out_has "Created template 't1', version 1"
    keep vol t1v1
    wr vol 0x66 0 4096                            # the volume goes on
    same t1 t1v1
    same t1@1 t1v1
    same vol vol
    ok "$V" template list --output json
    check_eq "$(json '[(t["name"], t["virtual-size"], t["versions"], t["latest-version"], t["clone-count"]) for t in d]')" \
        "[('t1', 8388608, 1, 1, 0)]" "template list"
    ok "$V" clone t1 c1
    out_has "linked clone of template 't1' version 1"
    keep t1v1 c1
    same c1 c1
    wr c1 0x77 $((5 * MiB)) 65536
    same c1 c1
    same t1 t1v1
    ok "$V" info --output json c1
    check_eq "$(json 'd["template"], d["template-version"]')" "('t1', 1)" "info c1"
    ok "$V" template update t1 --from line
    out_has "Updated template 't1', version 2"
    keep line t1v2
    same t1 t1v2
    same t1@1 t1v1
    same c1 c1                                    # keeps version 1
    ok "$V" clone t1 c2
    keep t1v2 c2
    same c2 c2
    ok "$V" clone t1@1 c3
    keep t1v1 c3
    same c3 c3
    ok "$V" clone --full -p t1 cf
    keep t1v2 cf
    same cf cf
    ok "$V" info --output json cf
    check_eq "$(json 'd["template"]')" None "a full clone has no template"
    ok "$V" template info --output json t1
    check_eq "$(json '[(v["version"], v["virtual-size"], v["clone-count"], v["clones"]) for v in d["versions"]]')" \
        "[(1, 8388608, 2, ['c1', 'c3']), (2, 4194304, 1, ['c2'])]" "template info versions"
    check_eq "$(json 'd["name"], d["latest-version"], d["clone-count"]')" "('t1', 2, 3)" \
        "template info"
    ok "$V" template info t1
    out_has "^latest version: 2"
    ok "$V" info --output json t1
    check_eq "$(json 'd["type"], d["clones"]')" "('template', ['c1', 'c2', 'c3'])" \
        "info of a template"
    ok "$V" flatten -p c3
    same c3 c3
    ok "$V" info --output json c3
    check_eq "$(json 'd["template"]')" None "flattened c3"
    refused 1 "$V" template rm t1
    err_has "c1"
    ok "$V" rm c1
    ok "$V" rm c2
    ok "$V" template rm t1
    ok "$V" template list --output json
    check_eq "$(json 'd')" "[]" "templates after rm"
    same c3 c3
    same cf cf
    same vol vol

    # template from an image file, through a temporary volume
    ok "$V" template create t2 --import img.raw -f raw -p
    ok "$V" export t2 t2.raw
    cmp img.raw t2.raw || fail "template --import differs"
    ok "$V" list --output json
    check_eq "$(json '[v["name"] for v in d if "import" in v["name"]]')" "[]" \
        "temporary volume left behind"
    refused 1 "$V" template create t3 --import missing.raw
    refused 1 "$V" template create t2 --import img.raw
    refused 1 "$V" template create vol --import img.raw
    ok "$V" clone t2 c4
    cp img.raw m.c4 || fail "cp"
    same c4 c4

    # -- resize
    ok "$V" resize small 2M
    ok "$V" info --output json small
    check_eq "$(json 'd["virtual-size"]')" 2097152 "resized"
    ok "$V" io -c 'read -P 0 1M 1M' small
    ok "$V" resize small +1M
    ok "$V" info --output json small
    check_eq "$(json 'd["virtual-size"]')" 3145728 "resized by +1M"
    truncate -s 16M m.vol
    ok "$V" resize vol 16M
    same vol vol

    # -- df
    ok "$V" df --output json
    n_vol=$(json 'd["volumes"]')
    vsize=$(json 'd["virtual-size"]')
    check_eq "$(json 'd["templates"], d["snapshots"]')" "(1, 3)" "df counts"
    check_eq "$(json 'd["fs-size"] > 0 and d["allocated-bytes"] > 0 and d["overcommit"] > 0')" \
        True "df sizes"
    ok "$V" list --output json
    check_eq "$(json 'len(d)')" "$n_vol" "df volumes"
    check_eq "$(json 'sum(v["virtual-size"] for v in d)')" "$vsize" "df virtual size"
    ok "$V" df
    out_has "^overcommit <*[0-9][0-9.]*x"
    # JSON strings are escaped: a store path with a quote, backslash, tab
    weird="$W/we\"ird\\st	ore"
    ok "$V" --store "$weird" create w 1M
    ok "$V" --store "$weird" df --output json
    check_eq "$(json 'd["store"].endswith("st\tore") and "\"" in d["store"]')" True \
        "escaped store path"

    # -- check
    ok "$V" check
    ok "$V" check --verify --output json
    check_eq "$(json 'd["corruptions"], d["leaked-bytes"], d["digest-mismatches"], d["volume"]')" \
        "(0, 0, 0, None)" "check json"
    ok "$V" check vol
    ok "$V" check --repair
    # a layer file no one uses is leaked space: status 3, then repaired
    ok "$V" img create "$S/layers/11111111-2222-3333-4444-555555555555.vdk" 1M
    expect 3 "$V" check
    out_has "leaked space"
    expect 3 "$V" check --output json
    [ "$(json 'd["leaked-bytes"]')" -gt 0 ] || fail "no leaked bytes reported"
    ok "$V" check --repair
    [ ! -e "$S/layers/11111111-2222-3333-4444-555555555555.vdk" ] ||
        fail "check --repair left the leaked layer file"
    ok "$V" check
    # damaged data: check --verify finds it (status 2)
    ok "$V" create --digest sha256 dig 1M
    ok "$V" io -c 'write -P 0x5a 0 64K' dig
    ok "$V" check --verify dig
    ok "$V" map dig
    layer=$(awk '$3 == "data" { print $5; exit }' "$W/out")
    [ -f "$layer" ] || fail "no layer file in the map of dig"
    where=$("$PY" -c 'import sys; print(open(sys.argv[1], "rb").read().find(b"\x5a" * 65536))' "$layer")
    [ "$where" -gt 0 ] || fail "the data of dig is not in its layer file"
    printf 'X' | dd of="$layer" bs=1 seek=$((where + 1000)) conv=notrunc status=none
    expect 2 "$V" check --verify dig
    expect 2 "$V" check --verify --output json dig
    check_eq "$(json 'd["volume"], d["digest-mismatches"] > 0')" "('dig', True)" \
        "check of damaged data"
    ok "$V" rm dig

    # -- errors: one line, non-zero, nothing changed
    refused 1 "$V" create vol 1M                 # a volume's name
    refused 1 "$V" create t2 1M                  # a template's name
    refused 1 "$V" create bad/name 1M
    refused 1 "$V" create .hidden 1M
    refused 1 "$V" create x 1000                 # not a multiple of 512
    refused 1 "$V" create x 0
    refused 1 "$V" create x 128T
    refused 2 "$V" create x 12Q
    refused 1 "$V" info nosuch
    refused 1 "$V" info --output json nosuch
    refused 1 "$V" rm nosuch
    refused 1 "$V" rm t2
    err_has "template rm"
    refused 1 "$V" resize t2 1G
    refused 1 "$V" resize nosuch 1G
    refused 1 "$V" resize vol 1M                 # shrinking
    refused 1 "$V" map nosuch
    refused 1 "$V" map vol@nosuch
    refused 1 "$V" export nosuch nosuch.raw
    [ ! -e nosuch.raw ] || fail "a failed export left nosuch.raw"
    refused 1 "$V" snapshot create t2 s
    refused 1 "$V" snapshot create nosuch s
    refused 1 "$V" snapshot create vol s3        # exists
    refused 1 "$V" snapshot create vol bad/name
    refused 1 "$V" snapshot rollback vol sa      # a snapshot of 'line'
    refused 1 "$V" snapshot rollback vol nosuch
    refused 1 "$V" snapshot commit vol nosuch
    refused 1 "$V" snapshot rm vol sa
    refused 1 "$V" snapshot rm nosuch s
    refused 1 "$V" snapshot list nosuch
    refused 1 "$V" clone nosuch x
    refused 1 "$V" clone t2 vol                  # exists
    refused 1 "$V" clone t2@99 x
    refused 1 "$V" clone t2 bad/name
    refused 1 "$V" template create t4 --from nosuch
    refused 1 "$V" template create t2 --from vol
    refused 1 "$V" template create vol --from line
    refused 1 "$V" template update nosuch --from vol
    refused 1 "$V" template update t2 --from nosuch
    refused 1 "$V" template rm nosuch
    refused 1 "$V" template rm vol
    refused 1 "$V" template info nosuch
    refused 1 "$V" import missing.raw x
    refused 1 "$V" import img.raw vol           # exists
    refused 1 "$V" io -c 'write 0 512' vol@s3
    refused 1 "$V" io -c 'write 0 512' t2
    refused 1 "$V" io -c 'write 0 512' nosuch
    refused 1 "$V" io -c 'write 16M 512' vol     # beyond the end
    refused 1 "$V" flatten nosuch
    same vol vol
    same vol@s3 s3
    same line line
    same c4 c4

    # -- clean up: everything can be removed, and check stays clean
    ok "$V" rm c4
    ok "$V" template rm t2
    for vol in $("$V" list --output json |
                 "$PY" -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))'); do
        ok "$V" rm "$vol"
    done
    ok "$V" df --output json
    check_eq "$(json 'd["volumes"], d["templates"], d["snapshots"], d["virtual-size"]')" \
        "(0, 0, 0, 0)" "empty store"
    ok "$V" check

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
