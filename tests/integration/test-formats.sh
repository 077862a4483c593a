#!/bin/sh
# test-formats.sh - the image formats (formats/: raw, vdk, qcow2, VMDK)
# through `vdisk`, checked by tools nobody here wrote.
#
# Sources are made by qemu-img and filled by qemu-io with random sparse
# content (byte patterns and random bytes, zeroes, runs not aligned to
# clusters, data at the very end, a size that is no multiple of a cluster):
# qcow2 v3, compat=0.10, 4K clusters, extended L2, compressed (64K and 4K
# clusters), with internal snapshots; VMDK monolithicSparse (also with
# zeroed grains), streamOptimized, monolithicFlat, twoGbMaxExtentSparse
# (5 GiB, runs across the extents); raw.  Each is converted by `vdisk img
# convert` to raw, vdk, qcow2, vmdk and vmdk streamOptimized and back to
# raw, and checked with `qemu-img compare`, `vdisk img compare` and cmp
# against what qemu reads; every qcow2/vmdk vdisk writes must pass
# `qemu-img check` and show the right format in `qemu-img info`; outputs
# stay sparse (a 100 GiB qcow2 too).  Then img info and compare across
# formats, import/export/snapshot/template round trips through a store
# (a linked clone exported as a qcow2 overlay of its template's export),
# hostile and broken images (backing files named inside, VMDK descriptors
# naming files elsewhere, truncated or corrupt headers and tables: one
# "vdisk:" line, status 1, no file left), and qemu (TCG) booting images
# vdisk wrote.
#
# Environment (tests/run-tests.sh): VDISK, the vdisk binary; TESTDIR, a
# fresh folder; VDISK_ASAN, optional: when it exists everything but the
# boot runs a second time with it (ASan+UBSan+LeakSanitizer), without the
# checks that only look at the files written.
# SEED=N replays a run (the seed is printed first).
# Exit: 0 pass, 1 fail, 77 skip.
set -u

. "$(dirname "$0")/lib/cli.sh"   # fail, skip, run, expect, json...
cli_test_start

command -v qemu-img >/dev/null 2>&1 || skip "qemu-img is not installed (qemu-utils)"
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io is not installed (qemu-utils)"
command -v cmp >/dev/null 2>&1 || skip "cmp is not installed (diffutils)"
for tool in truncate dd head od awk du stat timeout mkfifo date; do
    command -v $tool >/dev/null 2>&1 || skip "$tool is not installed"
done
"$VDISK" img convert --help 2>/dev/null | grep -q qcow2 ||
    skip "this vdisk has no qcow2/vmdk support (formats/)"

T0=$(date +%s)
MiB=1048576
# Sources: 32 MiB and 2.5 KiB, a multiple of no cluster or grain size.
SIZE=$((32 * MiB + 2560))
# The twoGbMaxExtentSparse source: three extents, the last one odd.
SIZE2G=$((5 * 1024 * MiB + 2560))

SRC=$TESTDIR/src
H=$TESTDIR/helper.py
mkdir -p "$SRC" || fail "mkdir $SRC"

# ---------------------------------------------------------------- python

cat >"$H" <<'EOF'
import json, os, random, struct, sys

def runs(seed, salt, size, count, maxlen, stats, pats, cross):
    """qemu-io commands writing random sparse content; data bytes and run
    count go to the stats file."""
    r = random.Random("%s-%s" % (seed, salt))
    out = []
    data = [0, 0]

    def pattern():
        if r.random() < 0.5:
            return "-P %d" % r.randint(1, 255)
        return "-s %s" % r.choice(pats)

    def write(off, length, zero=False):
        assert 0 <= off and length > 0 and off + length <= size, (off, length)
        if zero:
            out.append("write -q -z %d %d" % (off, length))
        else:
            out.append("write -q %s %d %d" % (pattern(), off, length))
            data[0] += length
        data[1] += 1

    C = 65536
    for _ in range(count):
        kind = r.choices(["cluster", "sector", "byte", "zero", "small"],
                         [20, 30, 20, 15, 15])[0]
        if kind == "cluster":
            length = C * r.randint(1, max(1, maxlen // C))
            off = C * r.randrange(0, (size - length) // C + 1)
        elif kind == "small":
            length = r.randint(1, 1500)
            off = r.randrange(0, size - length + 1)
        else:
            length = r.randint(1, maxlen)
            off = r.randrange(0, size - length + 1)
            if kind == "sector" or (kind == "zero" and r.random() < 0.5):
                length = max(512, length - length % 512)
                off -= off % 512
                if off + length > size:
                    off = (size - length) // 512 * 512
        write(off, length, kind == "zero")
    # The end of the disk: across the last cluster boundary, the last
    # sector, the last byte.
    last = size // C * C
    if last == size:
        last -= C
    write(last - 3584, size - 1024 - (last - 3584))
    write(size - 512, 512)
    write(size - 1, 1)
    # Across the boundaries given (VMDK extents).
    for b in cross:
        a = r.randint(1, 100000)
        write(b - a, a + r.randint(1, 100000))
    with open(stats, "w") as f:
        print(data[0], data[1], file=f)
    print("\n".join(out))

def boot_sector(lba_a, count_a, lba_z):
    """A real-mode boot sector: reads count_a sectors at lba_a and one at
    lba_z with int 13h AH=42h, prints to COM1 the string at the start of
    the first, the 16-bit sum of all count_a sectors' bytes in hex and the
    string at the start of the second, then ends QEMU through isa-debug-exit
    (status 33; 35 if a read failed)."""
    code = bytearray()
    labels = {}
    fix = []
    def b(*xs): code.extend(xs)
    def lab(n): labels[n] = len(code)
    def rel8(n): fix.append(("r8", len(code), n)); code.append(0)
    def rel16(n): fix.append(("r16", len(code), n)); code.extend(b"\0\0")
    def abs16(n): fix.append(("a16", len(code), n)); code.extend(b"\0\0")
    def call(n): b(0xE8); rel16(n)                      # call n
    def mov_si(n): b(0xBE); abs16(n)                    # mov si, n
    # cli; xor ax,ax; mov ds/es/ss,ax; mov sp,7c00h; sti; cld
    b(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xFB, 0xFC)
    b(0x88, 0x16); abs16("drive")                       # mov [drive], dl
    mov_si("dap_a"); call("readsec")
    mov_si("dap_z"); call("readsec")
    b(0xBE, 0x00, 0x80); call("puts")                   # mov si,8000h
    b(0xB0, 0x20); call("putc")                         # ' '
    # xor bx,bx; mov si,8000h; mov cx,count*512; xor ax,ax
    b(0x31, 0xDB, 0xBE, 0x00, 0x80, 0xB9); code.extend(struct.pack("<H", count_a * 512))
    b(0x31, 0xC0)
    lab("sum"); b(0xAC, 0x01, 0xC3, 0xE2); rel8("sum")  # lodsb; add bx,ax; loop
    b(0xB9, 0x04, 0x00)                                 # mov cx,4
    # rol bx,4; mov al,bl; and al,0fh; add al,'0'; cmp al,'9'; jbe digit
    lab("hex"); b(0xC1, 0xC3, 0x04, 0x88, 0xD8, 0x24, 0x0F, 0x04, 0x30, 0x3C, 0x39, 0x76)
    rel8("digit")
    b(0x04, 0x07)                                       # add al,7
    lab("digit"); call("putc"); b(0xE2); rel8("hex")    # loop hex
    b(0xB0, 0x20); call("putc")
    b(0xBE, 0x00, 0x7E); call("puts")                   # mov si,7e00h
    b(0xB0, 0x0A); call("putc")
    b(0xB0, 0x10, 0xE6, 0xF4)                           # out 0f4h, 10h: exit 33
    lab("halt"); b(0xFA, 0xF4, 0xEB); rel8("halt")      # cli; hlt; jmp halt
    # readsec: mov dl,[drive]; mov ah,42h; int 13h; jc fail; ret
    lab("readsec"); b(0x8A, 0x16); abs16("drive"); b(0xB4, 0x42, 0xCD, 0x13, 0x72)
    rel8("fail"); b(0xC3)
    lab("fail"); mov_si("errmsg"); call("puts"); b(0xB0, 0x11, 0xE6, 0xF4, 0xEB)
    rel8("halt")
    # puts: lodsb; test al,al; jz done; call putc; jmp puts; done: ret
    lab("puts"); b(0xAC, 0x84, 0xC0, 0x74); rel8("done"); call("putc"); b(0xEB)
    rel8("puts")
    lab("done"); b(0xC3)
    # putc: push dx; mov dx,3f8h; out dx,al; pop dx; ret
    lab("putc"); b(0x52, 0xBA, 0xF8, 0x03, 0xEE, 0x5A, 0xC3)
    # disk address packets: size, 0, count, offset, segment, LBA
    lab("dap_a"); code.extend(struct.pack("<BBHHHQ", 16, 0, count_a, 0, 0x0800, lba_a))
    lab("dap_z"); code.extend(struct.pack("<BBHHHQ", 16, 0, 1, 0x7E00, 0, lba_z))
    lab("drive"); b(0x80)
    lab("errmsg"); code.extend(b"BOOT-READ-ERROR\n\0")
    for kind, at, n in fix:
        t = labels[n]
        if kind == "r8":
            d = t - (at + 1)
            assert -128 <= d < 128, n
            code[at] = d & 0xFF
        elif kind == "r16":
            struct.pack_into("<h", code, at, t - (at + 2))
        else:
            struct.pack_into("<H", code, at, 0x7C00 + t)
    assert len(code) <= 446
    return bytes(code) + bytes(510 - len(code)) + b"\x55\xaa"

def bootdisk(path, size, seed):
    """A sparse raw disk that boots: prints the expected serial line."""
    r = random.Random("boot-%s" % seed)
    lba_a, count = 20480, 64
    lba_z = size // 512 - 1
    blk = bytearray(r.randbytes(count * 512))
    ma = b"VDISK-BOOT-A-%s" % str(seed).encode()
    blk[:len(ma) + 1] = ma + b"\0"
    mz = b"VDISK-BOOT-Z-%s" % str(seed).encode()
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(boot_sector(lba_a, count, lba_z))
        f.seek(lba_a * 512)
        f.write(blk)
        f.seek(lba_z * 512)
        f.write(mz + b"\0")
    print("%s %04X %s" % (ma.decode(), sum(blk) & 0xFFFF, mz.decode()))

def extents(fd, size):
    """The data ranges of a file (SEEK_DATA/SEEK_HOLE)."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        off = end

def cmpsparse(pa, pb):
    """Like cmp, reading only where either file has data (holes read as
    zeroes either way)."""
    fa, fb = os.open(pa, os.O_RDONLY), os.open(pb, os.O_RDONLY)
    sa, sb = os.fstat(fa).st_size, os.fstat(fb).st_size
    if sa != sb:
        print("%s: %d bytes, %s: %d bytes" % (pa, sa, pb, sb))
        return 1
    ranges = sorted(list(extents(fa, sa)) + list(extents(fb, sb)))
    done = 0
    for start, end in ranges:
        start = max(start, done)
        while start < end:
            n = min(end - start, 1 << 20)
            x, y = os.pread(fa, n, start), os.pread(fb, n, start)
            if x != y:
                i = next(i for i in range(n) if x[i] != y[i])
                print("%s %s differ: byte %d" % (pa, pb, start + i + 1))
                return 1
            start += n
        done = max(done, end)
    return 0

def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "runs":
        cross = [int(x) for x in a[7].split(",") if x] if len(a) > 7 else []
        runs(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[5], a[6].split(","), cross)
    elif cmd == "bootdisk":
        bootdisk(a[0], int(a[1]), a[2])
    elif cmd == "json":          # json FILE EXPR: EXPR on the JSON in FILE (as d)
        d = json.load(open(a[0]))
        print(eval(a[1]))
    elif cmd == "put":           # put FILE OFFSET STRUCT VALUE
        with open(a[0], "r+b") as f:
            f.seek(int(a[1]))
            f.write(struct.pack(a[2], int(a[3], 0)))
    elif cmd == "get":           # get FILE OFFSET STRUCT
        with open(a[0], "rb") as f:
            f.seek(int(a[1]))
            s = struct.Struct(a[2])
            print(s.unpack(f.read(s.size))[0])
    elif cmd == "nonzero":       # nonzero FILE OFFSET LEN: nonzero bytes there
        with open(a[0], "rb") as f:
            f.seek(int(a[1]))
            buf = f.read(int(a[2]))
        print(len(buf) - buf.count(0))
    elif cmd == "cmpsparse":     # cmpsparse A B: cmp for big sparse files
        sys.exit(cmpsparse(a[0], a[1]))
    elif cmd == "compressed":    # compressed FILE: where a qcow2's first
        with open(a[0], "rb") as f:  # compressed cluster's data is
            h = f.read(48)
            cbits, = struct.unpack(">I", h[20:24])
            l1n, l1off = struct.unpack(">IQ", h[36:48])
            f.seek(l1off)
            l1 = struct.unpack(">%dQ" % l1n, f.read(8 * l1n))
            for e in l1:
                l2off = e & 0x00FFFFFFFFFFFE00
                if not l2off:
                    continue
                f.seek(l2off)
                n = (1 << cbits) // 8
                for x in struct.unpack(">%dQ" % n, f.read(8 * n)):
                    if x & (1 << 62):
                        print(x & ((1 << (62 - (cbits - 8))) - 1))
                        return
        sys.exit("no compressed cluster in " + a[0])
    elif cmd == "cidshrink":     # cidshrink FILE OFFSET LEN: what qemu's
        off, n = int(a[1]), int(a[2])   # vmdk_write_cid leaves when the new
        with open(a[0], "r+b") as f:    # CID is shorter: the text, a NUL,
            f.seek(off)                 # then the old text's last bytes
            old = f.read(n)
            text = old[:old.index(b"\0")] if b"\0" in old else old
            lines = text.split(b"\n")
            lines = [b"CID=1a" if l.startswith(b"CID=") else l for l in lines]
            new = b"\n".join(lines)
            assert len(new) < len(text), "no CID line"
            f.seek(off)
            f.write(new + b"\0")
    elif cmd == "randfile":      # randfile FILE LEN SALT
        r = random.Random("%s" % a[2])
        with open(a[0], "wb") as f:
            f.write(r.randbytes(int(a[1])))
    else:
        sys.exit("helper: unknown command " + cmd)

main()
EOF

# ---------------------------------------------------------------- helpers

W=$TESTDIR

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# gone FILE: a failed command left no FILE behind.
gone() {
    [ ! -e "$1" ] || fail "a failed command left $1 behind"
}

# qio FMT FILE CMDFILE: runs the qemu-io commands in CMDFILE on FILE; any
# output but the prompts is an error (the commands are quiet, reads check
# their pattern).
qio() {
    qemu-io -f "$1" "$2" <"$3" >"$W/qio.out" 2>&1 ||
        { cat "$W/qio.out"; fail "qemu-io on $2 exited $?"; }
    if sed 's/qemu-io> //g' "$W/qio.out" | grep -q '[^[:space:]]'; then
        sed 's/qemu-io> //g' "$W/qio.out" | grep '[^[:space:]]' | head -20
        fail "qemu-io on $2 (commands in $3) reported the above"
    fi
}

# qcheck FMT FILE: qemu-img check finds nothing wrong.
qcheck() {
    run qemu-img check -f "$1" "$2"
    [ "$rc" = 0 ] || { show; fail "qemu-img check -f $1 $2 exited $rc"; }
}

# qcompare FMT_A A FMT_B B: qemu-img compare says identical.
qcompare() {
    run qemu-img compare -f "$1" -F "$3" "$2" "$4"
    [ "$rc" = 0 ] || { show; fail "qemu-img compare -f $1 -F $3 $2 $4 exited $rc"; }
}

# same_raw REF FILE: FILE has REF's bytes (cmp, which names the first
# difference; past 256 MiB a cmp that skips holes).
same_raw() {
    [ "$(file_size "$2")" = "$(file_size "$1")" ] ||
        fail "$2 is $(file_size "$2") bytes, $1 is $(file_size "$1")"
    if [ "$(file_size "$1")" -le $((256 * 1048576)) ]; then
        cmp "$1" "$2" || fail "$2 differs from $1 (cmp above)"
    else
        "$PY" "$H" cmpsparse "$1" "$2" || fail "$2 differs from $1 (above)"
    fi
}

# qinfo FILE: qemu-img info --output json of FILE into $W/out.
qinfo() {
    expect 0 qemu-img info --output json "$1"
}

# ---------------------------------------------------------------- sources

echo "== sources (qemu-img, qemu-io)"
P1=$SRC/pat1.bin
P2=$SRC/pat2.bin
P3=$SRC/pat3.bin
"$PY" "$H" randfile "$P1" 65521 "$SEED-1" || fail "python"
"$PY" "$H" randfile "$P2" 100003 "$SEED-2" || fail "python"
"$PY" "$H" randfile "$P3" 7919 "$SEED-3" || fail "python"
PATS=$P1,$P2,$P3

# gen NAME SIZE [CROSS]: qemu-io commands for NAME into $SRC/NAME.cmds,
# stats into $SRC/NAME.stats.
gen() {
    "$PY" "$H" runs "$SEED" "$1" "$2" 28 393216 "$SRC/$1.stats" "$PATS" "${3:-}" \
        >"$SRC/$1.cmds" || fail "python runs"
}

# The sources: NAME FORMAT FILE, and what info must say of them.
SOURCES="q3 q010 q4k qext qcomp qcomp4k qsnap vsparse vzero vstream vflat v2gb raw"

src_file() {
    case $1 in
    q*) echo "$SRC/$1.qcow2" ;;
    v*) echo "$SRC/$1.vmdk" ;;
    raw) echo "$SRC/raw.img" ;;
    esac
}

src_fmt() {
    case $1 in
    q*) echo qcow2 ;;
    v*) echo vmdk ;;
    raw) echo raw ;;
    esac
}

src_size() {
    case $1 in
    v2gb) echo "$SIZE2G" ;;
    *) echo "$SIZE" ;;
    esac
}

mkq() {     # NAME OPTS: a qcow2 made and filled by qemu
    expect 0 qemu-img create -q -f qcow2 -o "$2" "$SRC/$1.qcow2" "$SIZE"
    gen "$1" "$SIZE"
    qio qcow2 "$SRC/$1.qcow2" "$SRC/$1.cmds"
}

mkq q3 compat=1.1
mkq q010 compat=0.10
mkq q4k compat=1.1,cluster_size=4096
mkq qext compat=1.1,extended_l2=on
mkq qcomp-src compat=1.1
expect 0 qemu-img convert -c -f qcow2 -O qcow2 "$SRC/qcomp-src.qcow2" "$SRC/qcomp.qcow2"
mv "$SRC/qcomp-src.stats" "$SRC/qcomp.stats" || fail "mv"
# compressed with 4K clusters: another split of the compressed descriptor
mkq qcomp4k-src compat=1.1
expect 0 qemu-img convert -c -f qcow2 -O qcow2 -o cluster_size=4096 \
    "$SRC/qcomp4k-src.qcow2" "$SRC/qcomp4k.qcow2"
mv "$SRC/qcomp4k-src.stats" "$SRC/qcomp4k.stats" || fail "mv"
# internal snapshots: clusters shared (refcount 2), copied on write
expect 0 qemu-img create -q -f qcow2 "$SRC/qsnap.qcow2" "$SIZE"
gen qsnap "$SIZE"
head -n 16 "$SRC/qsnap.cmds" >"$SRC/qsnap1.cmds"
tail -n +17 "$SRC/qsnap.cmds" >"$SRC/qsnap2.cmds"
qio qcow2 "$SRC/qsnap.qcow2" "$SRC/qsnap1.cmds"
expect 0 qemu-img snapshot -c s1 "$SRC/qsnap.qcow2"
qio qcow2 "$SRC/qsnap.qcow2" "$SRC/qsnap2.cmds"
expect 0 qemu-img snapshot -c s2 "$SRC/qsnap.qcow2"
echo "write -q -P 0x5b 0 65536" >"$SRC/qsnap3.cmds"
qio qcow2 "$SRC/qsnap.qcow2" "$SRC/qsnap3.cmds"

expect 0 qemu-img create -q -f vmdk -o subformat=monolithicSparse "$SRC/vsparse.vmdk" "$SIZE"
gen vsparse "$SIZE"
qio vmdk "$SRC/vsparse.vmdk" "$SRC/vsparse.cmds"

# streamOptimized: qemu writes it only through convert.  8M..10M holds data
# for sure (the template made from it is overwritten there by a clone).
mkq vstream-src compat=1.1
echo "write -q -s $P2 8388608 2097152" >"$SRC/fixed.cmds"
qio qcow2 "$SRC/vstream-src.qcow2" "$SRC/fixed.cmds"
expect 0 qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized \
    "$SRC/vstream-src.qcow2" "$SRC/vstream.vmdk"
read -r data nruns <"$SRC/vstream-src.stats" || fail "stats"
echo "$((data + 2097152)) $((nruns + 1))" >"$SRC/vstream.stats"

# zeroed_grain: write -z makes zero grains
expect 0 qemu-img create -q -f vmdk -o zeroed_grain=on "$SRC/vzero.vmdk" "$SIZE"
gen vzero "$SIZE"
echo "write -q -z 4194304 1048576" >>"$SRC/vzero.cmds"
qio vmdk "$SRC/vzero.vmdk" "$SRC/vzero.cmds"

expect 0 qemu-img create -q -f vmdk -o subformat=monolithicFlat "$SRC/vflat.vmdk" "$SIZE"
[ -f "$SRC/vflat-flat.vmdk" ] || fail "qemu-img made no vflat-flat.vmdk"
gen vflat "$SIZE"
qio vmdk "$SRC/vflat.vmdk" "$SRC/vflat.cmds"

expect 0 qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$SRC/v2gb.vmdk" "$SIZE2G"
# Runs across every extent boundary the descriptor gives.
cross=$(awk '$1 == "RW" { s += $2 * 512; printf "%s%d", sep, s; sep = "," }' "$SRC/v2gb.vmdk")
cross=${cross%,*}       # not the end of the disk
[ -n "$cross" ] || fail "v2gb.vmdk has one extent"
gen v2gb "$SIZE2G" "$cross"
qio vmdk "$SRC/v2gb.vmdk" "$SRC/v2gb.cmds"

expect 0 qemu-img create -q -f raw "$SRC/raw.img" "$SIZE"
gen raw "$SIZE"
qio raw "$SRC/raw.img" "$SRC/raw.cmds"

# What qemu reads in each: the reference.
for s in $SOURCES; do
    expect 0 qemu-img convert -f "$(src_fmt $s)" -O raw "$(src_file $s)" "$SRC/$s.ref.raw"
    [ "$(file_size "$SRC/$s.ref.raw")" = "$(src_size $s)" ] || fail "$s.ref.raw size"
done
# The sources are what they claim to be.
for s in $SOURCES; do
    qinfo "$(src_file $s)"
    check_eq "$(json 'd["format"], d["virtual-size"]')" \
        "('$(src_fmt $s)', $(src_size $s))" "qemu-img info of source $s"
done
echo "sources made in $(($(date +%s) - T0)) s"

# ---------------------------------------------------------------- conversions

# sparse_ok FILE NAME: FILE occupies about what source NAME holds, not its
# virtual size: the data written, a cluster either side of every run, and
# 4 MiB of metadata.
sparse_ok() {
    read -r data nruns <"$SRC/$2.stats" || fail "stats of $2"
    kb=$(disk_kb "$1")
    bound=$(( (data + nruns * 131072) / 1024 + 4096 ))
    [ "$kb" -le "$bound" ] ||
        fail "$1 is not sparse: $kb KiB on disk, at most $bound KiB expected (data $data bytes)"
}

# info_src NAME: vdisk img info of a source, human and json.
info_src() {
    f=$(src_file $1)
    fmt=$(src_fmt $1)
    sz=$(src_size $1)
    # format, size, file name, backing file, disk use, and the driver's
    # details: compat, cluster size, extended L2, snapshots; subformat
    case $1 in
    q010) extra="'0.10', 65536, False, 0" ;;
    q4k|qcomp4k) extra="'1.1', 4096, False, 0" ;;
    qext) extra="'1.1', 65536, True, 0" ;;
    qsnap) extra="'1.1', 65536, False, 2" ;;
    q*) extra="'1.1', 65536, False, 0" ;;
    vsparse|vzero) extra="'monolithicSparse'" ;;
    vstream) extra="'streamOptimized'" ;;
    vflat) extra="'monolithicFlat'" ;;
    v2gb) extra="'twoGbMaxExtentSparse'" ;;
    raw) extra="" ;;
    esac
    case $1 in
    q*) keys='d["compat"], d["cluster-size"], d["extended-l2"], d["snapshots"]' ;;
    v*) keys='d["subformat"]' ;;
    raw) keys='' ;;
    esac
    expect 0 "$V" img info --output json "$f"
    quiet
    check_eq "$(json "(d['format'], d['virtual-size'], d['filename'], d.get('backing-filename'), d['actual-size'] > 0${keys:+, $keys})")" \
        "('$fmt', $sz, '$f', None, True${extra:+, $extra})" "img info of source $1"
    expect 0 "$V" img info "$f"
    quiet
    out_has "^image: $f\$"
    out_has "^file format: $fmt\$"
    out_has "^virtual size: .* ($sz bytes)\$"
    expect 0 "$V" img info -f "$fmt" "$f"
    out_has "^file format: $fmt\$"
}

# qinfo_out NAME FILE KIND: qemu-img info of an image vdisk wrote.
qinfo_out() {
    qinfo "$2"
    case $3 in
    qcow2)
        check_eq "$(json 'd["format"], d["virtual-size"], d["format-specific"]["data"]["compat"], d["cluster-size"], "backing-filename" in d')" \
            "('qcow2', $(src_size $1), '1.1', 65536, False)" "qemu-img info of $2"
        ;;
    vmdk|so.vmdk)
        [ $3 = vmdk ] && ct=monolithicSparse || ct=streamOptimized
        check_eq "$(json 'd["format"], d["virtual-size"], d["format-specific"]["data"]["create-type"], [e["cluster-size"] for e in d["format-specific"]["data"]["extents"]]')" \
            "('vmdk', $(src_size $1), '$ct', [65536])" "qemu-img info of $2"
        ;;
    raw)
        check_eq "$(json 'd["format"], d["virtual-size"]')" "('raw', $(src_size $1))" \
            "qemu-img info of $2"
        ;;
    esac
}

# convert_src NAME full|sanitized: the source to every format and back.
# The sanitized run skips what only looks at the files (qemu-img check and
# info, sizes): they are the same whichever build wrote them.
convert_src() {
    n=$1
    f=$(src_file $n)
    fmt=$(src_fmt $n)
    ref=$SRC/$n.ref.raw
    tc=$(now_ms)

    # raw (probed)
    expect 0 "$V" img convert -O raw "$f" $n.raw
    quiet
    same_raw "$ref" $n.raw
    # vdk (named)
    expect 0 "$V" img convert -f "$fmt" -O vdk "$f" $n.vdk
    quiet
    expect 0 "$V" img compare $n.vdk "$f"
    out_has "Images are identical."
    # qcow2 (probed), vmdk monolithicSparse by default (named), streamOptimized
    expect 0 "$V" img convert -O qcow2 "$f" $n.qcow2
    quiet
    expect 0 "$V" img convert -f "$fmt" -O vmdk "$f" $n.vmdk
    quiet
    expect 0 "$V" img convert -O vmdk -o subformat=streamOptimized "$f" $n.so.vmdk
    quiet
    for x in qcow2 vmdk so.vmdk; do
        qcompare "$fmt" "$f" ${x#so.} $n.$x
    done
    # and back
    for x in vdk qcow2 vmdk so.vmdk; do
        expect 0 "$V" img convert -O raw $n.$x $n.$x.back.raw
        same_raw "$ref" $n.$x.back.raw
        rm -f $n.$x.back.raw
    done
    if [ "$2" = full ]; then
        qcompare "$fmt" "$f" raw $n.raw
        expect 0 "$V" img check $n.vdk
        expect 0 "$V" img info $n.vdk
        out_has "^file format: vdk\$"
        out_has "^virtual size: .* ($(src_size $n) bytes)\$"
        expect 0 "$V" img info --output json $n.vdk
        check_eq "$(json 'd["format"], d["virtual-size"]')" "('vdk', $(src_size $n))" \
            "img info of $n.vdk"
        for x in qcow2 vmdk so.vmdk; do
            qcheck ${x#so.} $n.$x
            qinfo_out $n $n.$x $x
        done
        # vdisk reads what it wrote, and says so in info
        expect 0 "$V" img info --output json $n.qcow2
        check_eq "$(json 'd["format"], d["virtual-size"], d["compat"], d["cluster-size"]')" \
            "('qcow2', $(src_size $n), '1.1', 65536)" "img info of $n.qcow2"
        expect 0 "$V" img info --output json $n.vmdk
        check_eq "$(json 'd["format"], d["virtual-size"], d["subformat"]')" \
            "('vmdk', $(src_size $n), 'monolithicSparse')" "img info of $n.vmdk"
        expect 0 "$V" img info --output json $n.so.vmdk
        check_eq "$(json 'd["format"], d["virtual-size"], d["subformat"]')" \
            "('vmdk', $(src_size $n), 'streamOptimized')" "img info of $n.so.vmdk"
        for x in raw vdk qcow2 vmdk so.vmdk; do
            sparse_ok $n.$x $n
        done
    fi
    echo "  $n: $(($(now_ms) - tc)) ms"
}

# cross_src NAME: every format vdisk wrote to every other, through vdisk.
cross_src() {
    n=$1
    ref=$SRC/$n.ref.raw
    for x in vdk qcow2 vmdk so.vmdk; do
        for y in vdk qcow2 vmdk so.vmdk; do
            [ $x = $y ] && continue
            o=$n.$x.to.$y
            case $y in
            so.vmdk) expect 0 "$V" img convert -O vmdk -o subformat=streamOptimized $n.$x $o ;;
            *) expect 0 "$V" img convert -O $y $n.$x $o ;;
            esac
            case $y in
            vdk) expect 0 "$V" img compare -F raw $o "$ref" ;;
            qcow2) qcheck qcow2 $o; qcompare raw "$ref" qcow2 $o ;;
            *) qcheck vmdk $o; qcompare raw "$ref" vmdk $o ;;
            esac
        done
    done
}

# Options of the output.
convert_options() {
    f=$SRC/q3.qcow2
    ref=$SRC/q3.ref.raw
    expect 0 "$V" img convert -O qcow2 -o cluster_size=4K "$f" o4k.qcow2
    qcheck qcow2 o4k.qcow2
    qinfo o4k.qcow2
    check_eq "$(json 'd["cluster-size"]')" 4096 "cluster_size=4K"
    qcompare raw "$ref" qcow2 o4k.qcow2
    expect 0 "$V" img convert -O qcow2 -o cluster_size=2M "$f" o2m.qcow2
    qcheck qcow2 o2m.qcow2
    qinfo o2m.qcow2
    check_eq "$(json 'd["cluster-size"]')" 2097152 "cluster_size=2M"
    qcompare raw "$ref" qcow2 o2m.qcow2
    expect 0 "$V" img convert -O vmdk -o cluster_size=4K,subformat=monolithicSparse "$f" o4k.vmdk
    qcheck vmdk o4k.vmdk
    qinfo o4k.vmdk
    check_eq "$(json '[e["cluster-size"] for e in d["format-specific"]["data"]["extents"]]')" \
        "[4096]" "vmdk cluster_size=4K"
    qcompare raw "$ref" vmdk o4k.vmdk
    expect 0 "$V" img convert -O vmdk -o subformat=streamOptimized,cluster_size=1M "$f" o1m.vmdk
    qcheck vmdk o1m.vmdk
    qcompare raw "$ref" vmdk o1m.vmdk
    # refused options: one line, status 1 or 2, no file
    for o in "-O raw -o cluster_size=64K" "-O qcow2 -o cluster_size=3000" \
             "-O qcow2 -o subformat=streamOptimized" "-O vmdk -o cluster_size=2M" \
             "-O vmdk -o subformat=monolithicFlat" "-O vmdk -o backing_file=x.vmdk" \
             "-O qcow2 -o cluster_size=256"; do
        # shellcheck disable=SC2086
        run "$V" img convert $o "$f" bad.out
        [ "$rc" = 1 ] || [ "$rc" = 2 ] || { show; fail "convert $o exited $rc"; }
        [ "$(wc -l <"$W/err")" -ge 1 ] && grep -q '^vdisk: ' "$W/err" ||
            { show; fail "convert $o: no 'vdisk:' message"; }
        gone bad.out
    done
    expect 2 "$V" img convert -O qcow2 -o bogus=1 "$f" bad.out
    gone bad.out
    expect 2 "$V" img convert -O qed "$f" bad.out
    expect 2 "$V" img convert -O vdk -o cluster_size=4K "$f" bad.out
    expect 2 "$V" img convert -O qcow2 -o backing_fmt=qcow2 "$f" bad.out
    gone bad.out
    # A raw file whose size is no multiple of 512: padded with zeroes.
    odd=$((MiB + 1000))
    truncate -s $odd odd.img
    printf '%s\n' "write -q -s $P3 0 20000" "write -q -P 0x61 $((odd - 3000)) 3000" >odd.cmds
    qio raw odd.img odd.cmds
    for x in qcow2 vmdk; do
        expect 0 "$V" img convert -O $x odd.img odd.$x
        qcheck $x odd.$x
        qinfo odd.$x
        check_eq "$(json 'd["virtual-size"]')" $((odd + 24)) "virtual size of odd.$x"
        qcompare raw odd.img $x odd.$x
    done
    expect 0 "$V" img convert -O raw odd.qcow2 odd.raw
    check_eq "$(file_size odd.raw)" $((odd + 24)) "size of odd.raw"
    cmp -n $odd odd.img odd.raw || fail "odd.img -> qcow2 -> raw differs"
    # qemu writes into images vdisk wrote (new clusters, grains, tables)
    for x in qcow2 vmdk; do
        cp q3.$x qw.$x || fail "cp"
        printf '%s\n' "write -q -P 0x71 $((SIZE - 5000)) 4000" "write -q -P 0x72 3M 1M" \
            "write -q -z 100000 300000" "write -q -s $P2 $((SIZE / 2 + 1000)) 200000" >qw.cmds
        qio $x qw.$x qw.cmds
        qcheck $x qw.$x
        expect 0 qemu-img convert -f $x -O raw qw.$x qw.$x.ref.raw
        expect 0 "$V" img convert -O raw qw.$x qw.$x.raw
        same_raw qw.$x.ref.raw qw.$x.raw
        rm -f qw.$x.ref.raw qw.$x.raw
    done
    # -p without a terminal prints nothing
    expect 0 "$V" img convert -p -O qcow2 "$f" p.qcow2
    quiet
    [ -s "$W/out" ] && { show; fail "-p printed something without a terminal"; }
    qcheck qcow2 p.qcow2
    # An existing file is truncated (and keeps its inode).
    head -c $((3 * MiB)) /dev/urandom >exist.qcow2
    truncate -s $((100 * MiB)) exist.qcow2
    ino=$(stat -c %i exist.qcow2)
    expect 0 "$V" img convert -O qcow2 "$f" exist.qcow2
    check_eq "$(stat -c %i exist.qcow2)" "$ino" "inode of a converted-over file"
    qcheck qcow2 exist.qcow2
    qcompare raw "$ref" qcow2 exist.qcow2
    [ "$(file_size exist.qcow2)" -lt "$SIZE" ] ||
        fail "exist.qcow2 was not truncated: $(file_size exist.qcow2) bytes"
    head -c $((3 * MiB)) /dev/urandom >exist.vmdk
    expect 0 "$V" img convert -O vmdk "$f" exist.vmdk
    qcheck vmdk exist.vmdk
    qcompare raw "$ref" vmdk exist.vmdk
    head -c $((3 * MiB)) /dev/urandom >exist.raw
    truncate -s $((100 * MiB)) exist.raw
    expect 0 "$V" img convert -O raw "$f" exist.raw
    same_raw "$ref" exist.raw
}

# poke FILE OFFSET: changes the byte at OFFSET.
poke() {
    old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    [ -n "$old" ] || old=0
    new=$(( (old + 1) % 256 ))
    printf "$(printf '\\%03o' "$new")" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none || fail "poke $1"
}

# img compare across formats: same, different (and where), errors.
compare_formats() {
    expect 0 "$V" img compare -f qcow2 -F vmdk "$SRC/q3.qcow2" q3.vmdk
    out_has "Images are identical."
    expect 0 "$V" img compare "$SRC/vflat.vmdk" vflat.so.vmdk
    expect 0 "$V" img compare "$SRC/v2gb.vmdk" v2gb.qcow2
    expect 0 "$V" img compare "$SRC/qcomp.qcow2" "$SRC/qcomp-src.qcow2"
    expect 1 "$V" img compare "$SRC/q3.qcow2" "$SRC/q010.qcow2"
    out_has "Content mismatch at offset"
    cp "$SRC/q4k.ref.raw" q4k.mod.raw || fail "cp"
    off=$(awk -v seed="$SEED" -v size="$SIZE" 'BEGIN { srand(seed); print int(rand() * size) }')
    poke q4k.mod.raw "$off"
    for x in qcow2 vmdk so.vmdk vdk; do
        expect 1 "$V" img compare q4k.$x q4k.mod.raw
        out_has "Content mismatch at offset $off!"
    done
    expect 1 "$V" img compare -F raw "$SRC/q4k.qcow2" q4k.mod.raw
    out_has "Content mismatch at offset $off!"
    # the last byte of the disk
    cp "$SRC/vsparse.ref.raw" vsparse.mod.raw || fail "cp"
    poke vsparse.mod.raw $((SIZE - 1))
    expect 1 "$V" img compare vsparse.so.vmdk vsparse.mod.raw
    out_has "Content mismatch at offset $((SIZE - 1))!"
    # a longer image whose extra part is zero is the same
    cp "$SRC/raw.ref.raw" raw.long.raw || fail "cp"
    truncate -s $((SIZE + 3 * MiB)) raw.long.raw
    expect 0 "$V" img compare raw.qcow2 raw.long.raw
    expect 2 "$V" img compare -f qcow2 "$SRC/vsparse.vmdk" "$SRC/q3.qcow2"
    expect 2 "$V" img compare -F vmdk "$SRC/q3.qcow2" "$SRC/q3.qcow2"
    expect 2 "$V" img compare "$SRC/q3.qcow2" missing.qcow2
}

# A 100 GiB qcow2 with a few MiB of data: every output stays small, and
# takes seconds (printed, not asserted).
huge() {
    expect 0 qemu-img create -q -f qcow2 huge.src.qcow2 100G
    hs=$((100 * 1024 * MiB))
    cat >huge.cmds <<EOC
write -q -s $P1 0 1048576
write -q -P 7 53687091200 1000000
write -q -s $P2 $((hs - 2 * MiB - 4096)) 2097152
write -q -P 9 $((hs - 512)) 512
EOC
    qio qcow2 huge.src.qcow2 huge.cmds
    for x in vdk qcow2 raw vmdk so.vmdk; do
        th=$(now_ms)
        case $x in
        so.vmdk) expect 0 timeout 120 "$V" img convert -O vmdk -o subformat=streamOptimized \
                     huge.src.qcow2 huge.$x ;;
        *) expect 0 timeout 120 "$V" img convert -O $x huge.src.qcow2 huge.$x ;;
        esac
        echo "  100 GiB qcow2 -> $x: $(($(now_ms) - th)) ms, $(disk_kb huge.$x) KiB on disk"
        [ "$(disk_kb huge.$x)" -lt 65536 ] ||
            fail "huge.$x is not sparse: $(disk_kb huge.$x) KiB"
        case $x in
        vdk)
            expect 0 timeout 120 "$V" img compare huge.vdk huge.src.qcow2
            expect 0 "$V" img info --output json huge.vdk
            check_eq "$(json 'd["virtual-size"]')" "$hs" "huge.vdk virtual-size"
            [ "$(json 'd["allocated-bytes"]')" -lt $((64 * MiB)) ] ||
                fail "huge.vdk allocated-bytes $(json 'd["allocated-bytes"]')"
            ;;
        raw)
            check_eq "$(file_size huge.raw)" "$hs" "huge.raw size"
            run timeout 120 qemu-img compare -f qcow2 -F raw huge.src.qcow2 huge.raw
            [ "$rc" = 0 ] || { show; fail "huge.raw differs from huge.src.qcow2"; }
            ;;
        *)
            qcheck ${x#so.} huge.$x
            run timeout 120 qemu-img compare -f qcow2 -F ${x#so.} huge.src.qcow2 huge.$x
            [ "$rc" = 0 ] || { show; fail "huge.$x differs from huge.src.qcow2"; }
            ;;
        esac
    done
    # and back from the vdk
    expect 0 timeout 120 "$V" img convert -O qcow2 huge.vdk huge.back.qcow2
    [ "$(disk_kb huge.back.qcow2)" -lt 65536 ] || fail "huge.back.qcow2 is not sparse"
    qcheck qcow2 huge.back.qcow2
    run timeout 120 qemu-img compare -f qcow2 -F qcow2 huge.src.qcow2 huge.back.qcow2
    [ "$rc" = 0 ] || { show; fail "huge.back.qcow2 differs"; }
    rm -f huge.raw huge.back.qcow2
}

# ---------------------------------------------------------------- store

# in_store STORE NAME: is there a volume or template NAME in STORE?
in_store() {
    [ -d "$1" ] || return 1
    { "$V" --store "$1" list --output json >"$W/list.json" &&
      "$V" --store "$1" template list --output json >"$W/tlist.json"; } 2>/dev/null ||
        fail "cannot list the store $1"
    [ "$("$PY" "$H" json "$W/list.json" "'$2' in [v['name'] for v in d]")" = True ] ||
        [ "$("$PY" "$H" json "$W/tlist.json" "'$2' in [v['name'] for v in d]")" = True ]
}

store_tests() {
    ST=$W/store
    # import a qcow2 (probed), a VMDK (named), a flat VMDK descriptor
    expect 0 "$V" --store "$ST" import "$SRC/q3.qcow2" volq
    quiet
    out_has "as volume 'volq': size .*($SIZE bytes)"
    expect 0 "$V" --store "$ST" import -f vmdk "$SRC/vsparse.vmdk" volv
    expect 0 "$V" --store "$ST" import "$SRC/vflat.vmdk" volf
    expect 0 "$V" --store "$ST" list --output json
    check_eq "$(json '[(v["name"], v["virtual-size"]) for v in d]')" \
        "[('volf', $SIZE), ('volq', $SIZE), ('volv', $SIZE)]" "imported volumes"
    for vol in volq volv volf; do
        case $vol in
        volq) s=q3 ;;
        volv) s=vsparse ;;
        volf) s=vflat ;;
        esac
        expect 0 "$V" --store "$ST" export $vol $vol.raw
        quiet
        same_raw "$SRC/$s.ref.raw" $vol.raw
        sparse_ok $vol.raw $s
        expect 0 "$V" --store "$ST" export -O qcow2 $vol $vol.qcow2
        qcheck qcow2 $vol.qcow2
        qcompare "$(src_fmt $s)" "$(src_file $s)" qcow2 $vol.qcow2
        sparse_ok $vol.qcow2 $s
        expect 0 "$V" --store "$ST" export -O vmdk $vol $vol.vmdk
        qcheck vmdk $vol.vmdk
        qcompare "$(src_fmt $s)" "$(src_file $s)" vmdk $vol.vmdk
        sparse_ok $vol.vmdk $s
        expect 0 "$V" --store "$ST" export -O vmdk -o subformat=streamOptimized $vol $vol.so.vmdk
        qcheck vmdk $vol.so.vmdk
        qinfo $vol.so.vmdk
        check_eq "$(json 'd["format-specific"]["data"]["create-type"]')" streamOptimized \
            "export -o subformat=streamOptimized"
        qcompare "$(src_fmt $s)" "$(src_file $s)" vmdk $vol.so.vmdk
        expect 0 "$V" --store "$ST" export -O vdk $vol $vol.vdk
        expect 0 "$V" img compare $vol.vdk "$(src_file $s)"
    done

    # a snapshot, exported while the volume moves on
    expect 0 "$V" --store "$ST" snapshot create volq s1
    expect 0 "$V" --store "$ST" io -c "write -P 0x77 0 1M" -c "write -z 2M 64K" \
        -c "write -P 0x78 $((SIZE - 512)) 512" volq
    expect 0 "$V" --store "$ST" export -O qcow2 volq@s1 volq-s1.qcow2
    qcheck qcow2 volq-s1.qcow2
    qcompare qcow2 "$SRC/q3.qcow2" qcow2 volq-s1.qcow2
    expect 0 "$V" --store "$ST" export -O qcow2 volq volq-now.qcow2
    qcheck qcow2 volq-now.qcow2
    run qemu-img compare -f qcow2 -F qcow2 "$SRC/q3.qcow2" volq-now.qcow2
    [ "$rc" = 1 ] || { show; fail "the volume's writes are not in its export ($rc)"; }
    printf '%s\n' "read -q -P 0x77 0 1M" "read -q -P 0 2M 64K" \
        "read -q -P 0x78 $((SIZE - 512)) 512" >check.cmds
    qio qcow2 volq-now.qcow2 check.cmds
    expect 0 "$V" --store "$ST" export -O vmdk volq@s1 volq-s1.vmdk
    qcompare qcow2 "$SRC/q3.qcow2" vmdk volq-s1.vmdk

    # a template from a streamOptimized VMDK, and a linked clone of it
    expect 0 "$V" --store "$ST" template create tpl --import "$SRC/vstream.vmdk"
    expect 0 "$V" --store "$ST" clone tpl cl
    [ "$("$PY" "$H" nonzero "$SRC/vstream.ref.raw" $((8 * MiB)) $((2 * MiB)))" -gt $MiB ] ||
        fail "the template has no data at 8M..10M"
    expect 0 "$V" --store "$ST" io \
        -c "write -P 0xa1 0 512" \
        -c "write -P 0xa2 1M 64K" \
        -c "write -P 0xa3 5632 1024" \
        -c "write -z $((8 * MiB + 4096)) 69632" \
        -c "discard 9M 128K" \
        -c "write -P 0xa5 $((9 * MiB + 65536 + 512)) 512" \
        -c "write -P 0xa4 $((SIZE - 1024)) 1024" cl
    expect 0 "$V" --store "$ST" export -O qcow2 tpl tpl.qcow2
    qcheck qcow2 tpl.qcow2
    qcompare vmdk "$SRC/vstream.vmdk" qcow2 tpl.qcow2
    expect 0 "$V" --store "$ST" export cl cl.full.raw
    to=$(now_ms)
    expect 0 "$V" --store "$ST" export -O qcow2 -o backing_file=tpl.qcow2,backing_fmt=qcow2 \
        cl cl.ovl.qcow2
    quiet
    echo "  overlay export: $(($(now_ms) - to)) ms, $(disk_kb cl.ovl.qcow2) KiB on disk"
    qcheck qcow2 cl.ovl.qcow2
    qinfo cl.ovl.qcow2
    check_eq "$(json 'd["backing-filename"], d.get("backing-filename-format"), d["virtual-size"]')" \
        "('tpl.qcow2', 'qcow2', $SIZE)" "qemu-img info of the overlay"
    qcompare qcow2 cl.ovl.qcow2 raw cl.full.raw
    run qemu-img compare -f qcow2 -F raw tpl.qcow2 cl.full.raw
    [ "$rc" = 1 ] || { show; fail "the clone's writes are not in its export ($rc)"; }
    printf '%s\n' "read -q -P 0xa1 0 512" "read -q -P 0xa3 5632 1024" \
        "read -q -P 0xa2 1M 64K" "read -q -P 0 $((8 * MiB + 4096)) 69632" \
        "read -q -P 0 9M 65536" "read -q -P 0xa5 $((9 * MiB + 65536 + 512)) 512" \
        "read -q -P 0 $((9 * MiB + 65536 + 1024)) 64512" \
        "read -q -P 0xa4 $((SIZE - 1024)) 1024" >ovl.cmds
    qio qcow2 cl.ovl.qcow2 ovl.cmds
    # Only the clone's own data is in the overlay: the clusters it wrote.
    expect 0 qemu-img map -f qcow2 --output json cl.ovl.qcow2
    own=$(json 'sum(e["length"] for e in d if e["depth"] == 0 and e["data"])')
    [ "$own" -ge $((5 * 65536)) ] && [ "$own" -le $((8 * 65536)) ] ||
        { show; fail "the overlay holds $own bytes of its own data, expected 5 to 8 clusters"; }
    [ "$(disk_kb cl.ovl.qcow2)" -lt 2048 ] || fail "the overlay takes $(disk_kb cl.ovl.qcow2) KiB"
    # vdisk reads the overlay only with its backing file given
    expect_err 1 "$V" img convert -O raw cl.ovl.qcow2 ovl.raw
    gone ovl.raw
    expect 0 "$V" img convert --backing tpl.qcow2 --backing-format qcow2 -O raw cl.ovl.qcow2 ovl.raw
    same_raw cl.full.raw ovl.raw
    expect 0 "$V" --store "$ST" import --backing tpl.qcow2 cl.ovl.qcow2 cl2
    expect 0 "$V" --store "$ST" export cl2 cl2.raw
    same_raw cl.full.raw cl2.raw
    # a full clone, and a template from a qcow2 named with -f
    expect 0 "$V" --store "$ST" template create tpl2 --import "$SRC/q010.qcow2" -f qcow2
    expect 0 "$V" --store "$ST" clone tpl2 cl3
    expect 0 "$V" --store "$ST" export -O vmdk cl3 cl3.vmdk
    qcheck vmdk cl3.vmdk
    qcompare qcow2 "$SRC/q010.qcow2" vmdk cl3.vmdk
    expect 0 "$V" --store "$ST" export -O qcow2 -o backing_file=tpl2.qcow2 cl3 cl3.ovl.qcow2
    expect 0 "$V" --store "$ST" export -O qcow2 tpl2 tpl2.qcow2
    qcheck qcow2 cl3.ovl.qcow2
    qcompare qcow2 cl3.ovl.qcow2 qcow2 "$SRC/q010.qcow2"
    expect 0 qemu-img map -f qcow2 --output json cl3.ovl.qcow2
    check_eq "$(json 'sum(e["length"] for e in d if e["depth"] == 0 and e["data"])')" 0 \
        "own data of an untouched clone's overlay"
    # an overlay of what is not a linked clone: refused, no file
    expect_err 1 "$V" --store "$ST" export -O qcow2 -o backing_file=x.qcow2 volq bad.qcow2
    gone bad.qcow2
    # imports that fail leave no volume
    expect_err 1 "$V" --store "$ST" import missing.qcow2 bad1
    expect_err 1 "$V" --store "$ST" import -f qcow2 "$SRC/vsparse.vmdk" bad2
    expect_err 1 "$V" --store "$ST" template create badtpl -f vmdk --import "$SRC/q3.qcow2"
    for v in bad1 bad2 badtpl; do
        in_store "$ST" $v && fail "a failed import left the volume $v"
    done
    :
}

# ---------------------------------------------------------------- safety

# refused CMD...: exit 1, one "vdisk:" line, no sanitizer report.
refused() {
    expect_err 1 "$@"
}

# broken FILE REF: every way of reading FILE (a damaged copy of REF, a raw
# file) fails cleanly and writes nothing.
broken() {
    for x in raw vdk qcow2 vmdk; do
        refused "$V" img convert -O $x "$1" broken.out.$x
        gone broken.out.$x
    done
    expect 2 "$V" img compare -F raw "$1" "$2"
    refused "$V" --store "$W/store2" import "$1" brk
}

safety_tests() {
    # missing files
    refused "$V" img convert -O qcow2 missing.qcow2 out.qcow2
    gone out.qcow2
    refused "$V" img info missing.qcow2
    refused "$V" img info --output json missing.vmdk
    expect 2 "$V" img compare missing.qcow2 "$SRC/q3.qcow2"

    # the wrong -f
    refused "$V" img convert -f qcow2 -O raw "$SRC/vsparse.vmdk" wrong.raw
    gone wrong.raw
    refused "$V" img convert -f vmdk -O raw "$SRC/q3.qcow2" wrong.raw
    gone wrong.raw
    refused "$V" img info -f qcow2 "$SRC/raw.img"

    # a qcow2 over a backing file: refused without --backing
    expect 0 qemu-img create -q -f qcow2 -b "$SRC/q4k.qcow2" -F qcow2 bk.qcow2
    printf '%s\n' "write -q -P 0x31 1000 3000" "write -q -z 4M 1M" \
        "write -q -s $P3 $((SIZE - 70000)) 70000" "write -q -P 0x32 20M 64K" >bk-w.cmds
    qio qcow2 bk.qcow2 bk-w.cmds
    expect 0 qemu-img convert -f qcow2 -O raw bk.qcow2 bk.ref.raw
    expect 0 "$V" img info --output json bk.qcow2
    check_eq "$(json 'd["backing-filename"]')" "$SRC/q4k.qcow2" "backing-filename"
    refused "$V" img convert -O raw bk.qcow2 bk.raw
    err_has "backing"
    gone bk.raw
    refused "$V" img convert -O qcow2 bk.qcow2 bk.out.qcow2
    gone bk.out.qcow2
    expect 2 "$V" img compare bk.qcow2 bk.ref.raw
    refused "$V" --store "$W/store2" import bk.qcow2 bk
    expect 0 "$V" img convert --backing "$SRC/q4k.qcow2" -O raw bk.qcow2 bk.raw
    same_raw bk.ref.raw bk.raw
    expect 0 "$V" img convert --backing "$SRC/q4k.qcow2" --backing-format qcow2 -O vmdk \
        bk.qcow2 bk.vmdk
    qcheck vmdk bk.vmdk
    qcompare qcow2 bk.qcow2 vmdk bk.vmdk
    # the backing file's format is the user's word, not the image's
    refused "$V" img convert --backing "$SRC/q4k.qcow2" --backing-format vmdk -O raw \
        bk.qcow2 bk2.raw
    gone bk2.raw
    # a qcow2 overlay of the overlay: only what it holds itself
    expect 0 "$V" img convert --backing "$SRC/q4k.qcow2" -O qcow2 \
        -o backing_file="$SRC/q4k.qcow2",backing_fmt=qcow2 bk.qcow2 bk.ovl.qcow2
    qcheck qcow2 bk.ovl.qcow2
    qcompare qcow2 bk.qcow2 qcow2 bk.ovl.qcow2
    qcompare raw bk.ref.raw qcow2 bk.ovl.qcow2
    expect 0 qemu-img map -f qcow2 --output json bk.qcow2
    own_in=$(json 'sum(e["length"] for e in d if e["depth"] == 0 and e["data"])')
    expect 0 qemu-img map -f qcow2 --output json bk.ovl.qcow2
    own=$(json 'sum(e["length"] for e in d if e["depth"] == 0 and e["data"])')
    [ "$own" -le $((own_in + 2 * 65536)) ] ||
        fail "convert --backing B -o backing_file=B: the overlay holds $own bytes of data of its own, bk.qcow2 only $own_in (the backing file's data was copied)"
    # a VMDK child naming its parent
    expect 0 qemu-img create -q -f vmdk -b "$SRC/vsparse.vmdk" -F vmdk ch.vmdk
    printf '%s\n' "write -q -P 0x33 1000 5000" "write -q -z 1M 1M" \
        "write -q -s $P1 $((SIZE - 100000)) 100000" >ch-w.cmds
    qio vmdk ch.vmdk ch-w.cmds
    expect 0 qemu-img convert -f vmdk -O raw ch.vmdk ch.ref.raw
    expect 0 "$V" img info --output json ch.vmdk
    check_eq "$(json 'd["backing-filename"]')" "$SRC/vsparse.vmdk" "parent of ch.vmdk"
    refused "$V" img convert -O raw ch.vmdk ch.raw
    gone ch.raw
    refused "$V" --store "$W/store2" import ch.vmdk ch
    expect 0 "$V" img convert --backing "$SRC/vsparse.vmdk" -O raw ch.vmdk ch.raw
    same_raw ch.ref.raw ch.raw
    expect 0 "$V" --store "$W/store2" import --backing "$SRC/vsparse.vmdk" ch.vmdk ch
    refused "$V" --store "$W/store2" template create cht --import ch.vmdk
    expect 0 "$V" --store "$W/store2" list --output json
    check_eq "$(json '[v["name"] for v in d if v["name"].startswith("cht")]')" "[]" \
        "volumes left by a refused template create"
    in_store "$W/store2" cht && fail "a refused template create left the template"
    expect 0 "$V" --store "$W/store2" template create cht --import ch.vmdk \
        --backing "$SRC/vsparse.vmdk" --backing-format vmdk
    expect 0 "$V" --store "$W/store2" export cht cht.raw
    same_raw ch.ref.raw cht.raw
    expect 0 "$V" --store "$W/store2" export -O vmdk ch ch.out.vmdk
    qcheck vmdk ch.out.vmdk
    qcompare vmdk ch.vmdk vmdk ch.out.vmdk
    # --backing for an image that names none
    refused "$V" img convert --backing "$SRC/q4k.qcow2" -O raw "$SRC/q3.qcow2" nb.raw
    gone nb.raw

    # a raw disk that starts with a qcow2 header naming /etc/passwd
    expect 0 qemu-img create -q -f qcow2 -u -b /etc/passwd -F raw hp.img 1M
    truncate -s $((2 * MiB)) hp.img
    head -c 100000 "$P2" | dd of=hp.img bs=4096 seek=300 conv=notrunc status=none
    refused "$V" img convert -O raw hp.img hp.raw
    err_has "/etc/passwd"
    gone hp.raw
    expect 0 "$V" img convert -f raw -O raw hp.img hp.raw
    same_raw hp.img hp.raw
    expect 0 "$V" img convert -f raw -O qcow2 hp.img hp.qcow2
    qcheck qcow2 hp.qcow2
    qcompare raw hp.img qcow2 hp.qcow2
    expect 0 "$V" img info hp.img
    out_has "^file format: qcow2"
    refused "$V" --store "$W/store2" import hp.img hp
    expect 0 "$V" --store "$W/store2" import -f raw hp.img hp
    expect 0 "$V" --store "$W/store2" export hp hp2.raw
    same_raw hp.img hp2.raw
    # ... naming a FIFO: opening it would hang
    mkfifo fifo || fail "mkfifo"
    expect 0 qemu-img create -q -f qcow2 -u -b "$W/fifo" -F raw hf.img 1M
    expect 0 timeout 30 "$V" img info hf.img
    refused timeout 30 "$V" img convert -O raw hf.img hf.raw
    gone hf.raw
    refused timeout 30 "$V" --store "$W/store2" import hf.img hf
    rm -f fifo

    # VMDK descriptors: extents in the descriptor's folder only, when probed
    "$PY" "$H" randfile x-flat.bin 1048576 "$SEED-x" || fail "python"
    cp x-flat.bin xx.bin || fail "cp"
    mkdir -p sub || fail "mkdir"
    desc() {    # FILE EXTENT-NAME SECTORS [TYPE]: FLAT extents have an offset
        ext="RW $3 FLAT \"$2\" 0"
        ct=monolithicFlat
        [ -n "${4:-}" ] && ext="RW $3 $4 \"$2\"" && ct=twoGbMaxExtentSparse
        printf '%s\n' '# Disk DescriptorFile' 'version=1' 'CID=12345678' \
            'parentCID=ffffffff' "createType=\"$ct\"" '' \
            '# Extent description' "$ext" '' \
            '# The Disk Data Base' '#DDB' '' 'ddb.virtualHWVersion = "4"' \
            'ddb.adapterType = "ide"' >"$1"
    }
    desc d-ok.vmdk x-flat.bin 2048
    expect 0 "$V" img convert -O raw d-ok.vmdk d-ok.raw
    same_raw x-flat.bin d-ok.raw
    expect 0 "$V" img info --output json d-ok.vmdk
    check_eq "$(json 'd["format"], d["virtual-size"]')" "('vmdk', 1048576)" "info of d-ok.vmdk"
    pw=$(file_size /etc/passwd)
    pws=$((pw / 512))
    [ "$pws" -gt 0 ] || pws=1
    for e in /etc/passwd ../xx.bin sub/../xx.bin ./../xx.bin; do
        desc sub/d-bad.vmdk "$e" 2048
        [ "$e" = /etc/passwd ] && desc sub/d-bad.vmdk "$e" $pws
        refused "$V" img convert -O raw sub/d-bad.vmdk bad.raw
        gone bad.raw
        refused "$V" img info sub/d-bad.vmdk
        refused "$V" --store "$W/store2" import sub/d-bad.vmdk dbad
        expect 2 "$V" img compare sub/d-bad.vmdk xx.bin
        # as raw bytes, it is the descriptor's text
        expect 0 "$V" img convert -f raw -O raw sub/d-bad.vmdk bad.raw
        cmp -n "$(file_size sub/d-bad.vmdk)" sub/d-bad.vmdk bad.raw ||
            fail "a descriptor read as raw differs"
        rm -f bad.raw
    done
    # qemu rewrites a descriptor in place when it changes the CID, and a
    # shorter one leaves the old text's tail after the NUL: still valid
    cp "$SRC/vflat.vmdk" sub/vflat.vmdk || fail "cp"
    ln -sf "$SRC/vflat-flat.vmdk" sub/vflat-flat.vmdk || fail "ln"
    "$PY" "$H" cidshrink sub/vflat.vmdk 0 "$(file_size sub/vflat.vmdk)" || fail "python"
    qinfo sub/vflat.vmdk
    expect 0 "$V" img convert -O raw sub/vflat.vmdk cid.raw
    same_raw "$SRC/vflat.ref.raw" cid.raw
    rm -f cid.raw
    cp "$SRC/vsparse.vmdk" cid.vmdk || fail "cp"
    doff=$("$PY" "$H" get cid.vmdk 28 '<Q')
    dlen=$("$PY" "$H" get cid.vmdk 36 '<Q')
    "$PY" "$H" cidshrink cid.vmdk $((doff * 512)) $((dlen * 512)) || fail "python"
    qinfo cid.vmdk
    expect 0 "$V" img convert -O raw cid.vmdk cid.raw
    same_raw "$SRC/vsparse.ref.raw" cid.raw
    rm -f cid.raw
    # a descriptor naming a FIFO: opening it would hang
    mkfifo fifo2 || fail "mkfifo"
    desc sub/d-fifo.vmdk "$W/fifo2" 2048
    refused timeout 30 "$V" img info sub/d-fifo.vmdk
    refused timeout 30 "$V" img convert -O raw sub/d-fifo.vmdk bad.raw
    gone bad.raw
    refused timeout 30 "$V" --store "$W/store2" import sub/d-fifo.vmdk dbad
    expect 2 timeout 30 "$V" img compare sub/d-fifo.vmdk xx.bin
    rm -f fifo2
    # named with -f vmdk, the user's word is enough
    desc sub/d-up.vmdk ../xx.bin 2048
    expect 0 "$V" img convert -f vmdk -O raw sub/d-up.vmdk up.raw
    same_raw xx.bin up.raw
    if [ "$pw" -ge 512 ]; then
        desc sub/d-pw.vmdk /etc/passwd $((pw / 512))
        expect 0 "$V" img convert -f vmdk -O raw sub/d-pw.vmdk pw.raw
        cmp -n $((pw / 512 * 512)) /etc/passwd pw.raw || fail "-f vmdk of /etc/passwd"
    fi
    # a sparse extent elsewhere, too
    cp "$SRC/vsparse.vmdk" vs.vmdk || fail "cp"
    desc sub/d-sp.vmdk ../vs.vmdk $((SIZE / 512)) SPARSE
    refused "$V" img convert -O raw sub/d-sp.vmdk sp.raw
    gone sp.raw
    expect 0 "$V" img convert -f vmdk -O raw sub/d-sp.vmdk sp.raw
    same_raw "$SRC/vsparse.ref.raw" sp.raw
    rm -f sp.raw up.raw pw.raw

    # broken images
    cp "$SRC/q3.qcow2" trunc-head.qcow2 || fail "cp"
    truncate -s 60 trunc-head.qcow2
    broken trunc-head.qcow2 "$SRC/q3.ref.raw"
    l1=$("$PY" "$H" get "$SRC/q3.qcow2" 40 '>Q')
    cp "$SRC/q3.qcow2" trunc-l1.qcow2 || fail "cp"
    truncate -s $((l1 + 4)) trunc-l1.qcow2
    broken trunc-l1.qcow2 "$SRC/q3.ref.raw"
    refused "$V" img info trunc-l1.qcow2
    cp "$SRC/q3.qcow2" trunc-half.qcow2 || fail "cp"
    truncate -s $(($(file_size "$SRC/q3.qcow2") / 2)) trunc-half.qcow2
    broken trunc-half.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" l1-past.qcow2 || fail "cp"
    "$PY" "$H" put l1-past.qcow2 40 '>Q' $(( ($(file_size l1-past.qcow2) / 65536 + 16) * 65536 )) ||
        fail "python"
    broken l1-past.qcow2 "$SRC/q3.ref.raw"
    refused "$V" img info l1-past.qcow2
    cp "$SRC/q3.qcow2" l1-huge.qcow2 || fail "cp"
    "$PY" "$H" put l1-huge.qcow2 36 '>I' 0x7fffffff || fail "python"   # l1_size
    broken l1-huge.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" crypt.qcow2 || fail "cp"
    "$PY" "$H" put crypt.qcow2 32 '>I' 1 || fail "python"               # AES
    broken crypt.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" size.qcow2 || fail "cp"
    "$PY" "$H" put size.qcow2 24 '>Q' $((1 << 60)) || fail "python"     # 1 EiB
    broken size.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" incompat.qcow2 || fail "cp"
    "$PY" "$H" put incompat.qcow2 72 '>Q' 0x400 || fail "python"       # unknown feature
    broken incompat.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" l1-zero.qcow2 || fail "cp"
    "$PY" "$H" put l1-zero.qcow2 40 '>Q' 0 || fail "python"            # L1 on the header
    broken l1-zero.qcow2 "$SRC/q3.ref.raw"
    cp "$SRC/q3.qcow2" magic.qcow2 || fail "cp"
    "$PY" "$H" put magic.qcow2 4 '>I' 4 || fail "python"               # version 4
    for x in raw vdk qcow2 vmdk; do
        refused "$V" img convert -f qcow2 -O $x magic.qcow2 broken.out.$x
        gone broken.out.$x
    done
    refused "$V" img info -f qcow2 magic.qcow2
    cp "$SRC/vsparse.vmdk" grain3.vmdk || fail "cp"
    "$PY" "$H" put grain3.vmdk 20 '<Q' 3 || fail "python"               # grainSize
    broken grain3.vmdk "$SRC/vsparse.ref.raw"
    refused "$V" img info grain3.vmdk
    cp "$SRC/vsparse.vmdk" trunc.vmdk || fail "cp"
    truncate -s $(($(file_size trunc.vmdk) / 2)) trunc.vmdk
    broken trunc.vmdk "$SRC/vsparse.ref.raw"
    cp "$SRC/vstream.vmdk" trunc-so.vmdk || fail "cp"
    truncate -s $(($(file_size trunc-so.vmdk) / 2)) trunc-so.vmdk
    broken trunc-so.vmdk "$SRC/vstream.ref.raw"
    desc huge-ext.vmdk x-flat.bin 999999999999999
    broken huge-ext.vmdk "$SRC/vsparse.ref.raw"
    # a compressed cluster that does not inflate (0xff: a reserved block type)
    for c in qcomp qcomp4k; do
        cp "$SRC/$c.qcow2" badz.qcow2 || fail "cp"
        zoff=$("$PY" "$H" compressed badz.qcow2) || fail "python compressed"
        head -c 64 /dev/zero | tr '\0' '\377' |
            dd of=badz.qcow2 bs=1 seek="$zoff" conv=notrunc status=none
        broken badz.qcow2 "$SRC/$c.ref.raw"
    done
    # nothing refused made a volume
    for v in brk dbad bk hf; do
        in_store "$W/store2" $v && fail "a refused import left the volume $v"
    done
    :
}

# ---------------------------------------------------------------- boot

boot_tests() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || {
        echo "boot: SKIPPED, qemu-system-x86_64 is not installed (qemu-system-x86)"
        return 0
    }
    bwant=$("$PY" "$H" bootdisk boot.raw $((64 * MiB)) "$SEED") || fail "python bootdisk"
    expect 0 "$V" img convert -O qcow2 boot.raw boot.qcow2
    expect 0 "$V" img convert -O vmdk boot.qcow2 boot.vmdk
    expect 0 "$V" img convert -O vmdk -o subformat=streamOptimized boot.vmdk boot.so.vmdk
    expect 0 "$V" img convert -O qcow2 -o cluster_size=4K boot.so.vmdk boot.4k.qcow2
    qcheck qcow2 boot.qcow2
    qcheck vmdk boot.vmdk
    qcheck vmdk boot.so.vmdk
    qcheck qcow2 boot.4k.qcow2
    for b in raw:boot.raw qcow2:boot.qcow2 vmdk:boot.vmdk vmdk:boot.so.vmdk qcow2:boot.4k.qcow2; do
        bf=${b#*:}
        rm -f serial.out
        tb=$(now_ms)
        timeout -k 5 60 qemu-system-x86_64 -accel tcg -display none -no-reboot -m 64 \
            -monitor none -serial file:serial.out -nodefaults \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -drive file="$bf",format="${b%%:*}",if=ide >boot.log 2>&1 </dev/null
        brc=$?
        got=$(tr -d '\r' <serial.out 2>/dev/null | grep 'VDISK-BOOT' | head -n 1)
        echo "  boot $bf: exit $brc, $(($(now_ms) - tb)) ms, serial: $got"
        if [ "$brc" != 33 ] || [ "$got" != "$bwant" ]; then
            cat boot.log
            fail "booting $bf: exit $brc (33 expected), serial '$got', expected '$bwant'"
        fi
    done
}

# ---------------------------------------------------------------- the tests

# run_suite VDISK DIR full|sanitized
run_suite() {
    V=$1
    W=$2
    mkdir -p "$W" || fail "mkdir $W"
    cd "$W" || fail "cd $W"
    echo "== $V"

    t=$(now_ms)
    for s in $SOURCES; do
        info_src $s
    done
    echo "img info: $(($(now_ms) - t)) ms"
    t=$(now_ms)
    for s in $SOURCES; do
        convert_src $s $3
    done
    echo "conversions: $(($(now_ms) - t)) ms"
    t=$(now_ms)
    if [ "$3" = full ]; then
        cross_src q3
        cross_src qext
        cross_src v2gb
    else
        cross_src q4k
    fi
    echo "cross conversions: $(($(now_ms) - t)) ms"
    convert_options
    compare_formats
    t=$(now_ms)
    huge
    echo "100 GiB: $(($(now_ms) - t)) ms"
    t=$(now_ms)
    store_tests
    echo "store: $(($(now_ms) - t)) ms"
    t=$(now_ms)
    safety_tests
    echo "hostile and broken images: $(($(now_ms) - t)) ms"
    if [ "$3" = full ]; then
        t=$(now_ms)
        boot_tests
        echo "boot: $(($(now_ms) - t)) ms"
    fi
    cd "$TESTDIR" || fail "cd"
    # what this run wrote is not needed any more
    rm -rf "$W"
}

run_suite "$VDISK" "$TESTDIR/plain" full
if [ -n "${VDISK_ASAN:-}" ] && [ -x "$VDISK_ASAN" ]; then
    run_suite "$VDISK_ASAN" "$TESTDIR/asan" sanitized
else
    echo "no ASan build of vdisk (VDISK_ASAN): checked the plain build only"
fi
echo "PASS: $(echo $SOURCES | wc -w) sources x 5 formats and back, store, hostile images, boot; $(($(date +%s) - T0)) s"
exit 0
