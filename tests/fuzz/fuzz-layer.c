/*
 * fuzz-layer.c - libFuzzer target for the layer file parser: header,
 * L1/L2 index, parent resolution, reads, block status and check.
 *
 * Input: the bytes of a layer file followed by one control byte:
 *   bit 0  recompute the CRC-32C of each header slot that has the magic
 *   bit 1  recompute the CRC-32C of each 4 KiB page (from the L1 table on)
 *          that starts with the L1 or L2 magic
 *   bit 2  also open the layer for writing, write, flush, close, and run
 *          check --repair on the result
 * Without the CRC fix-ups nearly every mutation would stop at a checksum;
 * with them the fuzzer reaches the field validation behind it.  The control
 * byte lets it explore both.
 *
 * The file goes to $TMPDIR (or /tmp)/fuzz-layer-PID.vdk.  A parent hint is
 * never followed: the resolver always names one parent layer made at start
 * up, whose UUID is FUZZ_PARENT_UUID, so inputs that name that UUID open as
 * a chain of two and inputs that name any other fail the UUID check.
 *
 * FUZZ_LAYER_SEEDS=DIR: write a seed corpus of real layers into DIR and
 * exit (tests/fuzz/run-fuzz.sh does this before fuzzing).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"
#include "vd-testing.h"
#include "format.h"

#define CTL_FIX_HDR_CRC   0x01u
#define CTL_FIX_PAGE_CRC  0x02u
#define CTL_WRITE         0x04u
#define CTL_ALL           0x07u

static const vd_uuid FUZZ_PARENT_UUID = { {
    0xf0, 0x22, 0x1a, 0x7e, 0x00, 0x00, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 } };

static char g_dir[4096];
static char g_path[4200];
static char g_parent[4200];
static struct vd_ctx *g_ctx;

static void die(const char *what, int rc)
{
    fprintf(stderr, "fuzz-layer: %s: %s (%s)\n", what, strerror(rc < 0 ? -rc : rc),
            vd_errmsg());
    exit(1);
}

static void write_all(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, -errno);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n <= 0)
            die(path, n < 0 ? -errno : -EIO);
        done += (size_t)n;
    }
    close(fd);
}

/* Recomputes the CRCs the control byte asks for, in place. */
static void fix_crcs(uint8_t *b, size_t len, unsigned ctl)
{
    if (ctl & CTL_FIX_HDR_CRC) {
        for (size_t s = 0; s < 2; s++) {
            uint8_t *h = b + s * VDF_PAGE;
            if (len >= (s + 1) * VDF_PAGE && memcmp(h + VDF_H_MAGIC, VDF_MAGIC, 8) == 0)
                vdf_put32(h + VDF_H_CRC, vdf_crc32c(0, h, VDF_H_CRC));
        }
    }
    if (ctl & CTL_FIX_PAGE_CRC) {
        for (size_t at = VDF_L1_OFF; at + VDF_PAGE <= len; at += VDF_PAGE) {
            uint8_t *p = b + at;
            uint32_t m = vdf_le32(p + VDF_P_MAGIC);
            if (m != VDF_L1_MAGIC && m != VDF_L2_MAGIC)
                continue;
            vdf_put32(p + VDF_P_CRC, 0);
            vdf_put32(p + VDF_P_CRC, vdf_crc32c(0, p, VDF_PAGE));
        }
    }
}

static int resolve(void *opaque, const vd_uuid *parent, const char *hint,
                   const char *child, char *out, size_t outlen)
{
    (void)opaque;
    (void)parent;
    (void)hint;
    (void)child;
    int n = snprintf(out, outlen, "%s", g_parent);
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------ */
/* Making real layers (the parent and the seeds)                       */

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 9));
}

/* Creates path and runs a few operations on it.  abandon: leave it dirty,
 * as after a crash (flushed first, so the index is on disk). */
static void make_layer(const char *path, uint64_t size, uint32_t bs, enum vd_digest dg,
                       const char *parent, unsigned nwrites, bool twice, bool abandon)
{
    struct vd_create_opts co = { .size = size, .block_size = bs, .digest = dg,
                                 .parent = parent };
    unlink(path);
    int rc = vd_layer_create(path, &co, NULL);
    if (rc < 0)
        die(path, rc);
    struct vd_open_opts oo = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED, .resolve = resolve };
    struct vd_chain *c;
    if ((rc = vd_chain_open(g_ctx, path, &oo, &c)) < 0)
        die(path, rc);
    uint64_t sz = vd_chain_size(c);
    uint8_t buf[8192];
    for (unsigned i = 0; i < nwrites; i++) {
        uint64_t off = ((uint64_t)i * 7919 * 4096) % sz;
        off &= ~(uint64_t)4095;
        size_t len = i % 3 == 0 ? 8192 : 4096;
        if (off + len > sz)
            len = (size_t)(sz - off);
        fill(buf, len, i);
        if ((rc = vd_write(c, buf, off, len, 0)) < 0)
            die("write", rc);
    }
    if (nwrites > 2) {
        if ((rc = vd_zero(c, sz / 2, 8192, 0)) < 0)
            die("zero", rc);
        if ((rc = vd_write(c, buf, 512, 1024, 0)) < 0)   /* a partial sub-block */
            die("write", rc);
    }
    if (twice) {
        if ((rc = vd_flush(c)) < 0)
            die("flush", rc);
        fill(buf, 4096, 99);
        if ((rc = vd_write(c, buf, 0, 4096, 0)) < 0)
            die("write", rc);
        if ((rc = vd_discard(c, sz - 4096, 4096)) < 0)
            die("discard", rc);
    }
    if (abandon) {
        if ((rc = vd_flush(c)) < 0)
            die("flush", rc);
        vdi_chain_abandon(c);
        return;
    }
    if ((rc = vd_chain_close(c)) < 0)
        die("close", rc);
}

/* The parent every input may name: 1 MiB of 4 KiB blocks with some data,
 * frozen, its UUID replaced by FUZZ_PARENT_UUID. */
static void make_parent(void)
{
    make_layer(g_parent, 1u << 20, 4096, VD_DIGEST_NONE, NULL, 12, false, false);
    int rc = vd_layer_freeze(g_parent);
    if (rc < 0)
        die("freeze", rc);
    int fd = open(g_parent, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die(g_parent, -errno);
    for (unsigned s = 0; s < 2; s++) {
        uint8_t h[VDF_PAGE];
        if (pread(fd, h, sizeof(h), (off_t)s * VDF_PAGE) != (ssize_t)sizeof(h))
            die("read parent header", -EIO);
        if (memcmp(h + VDF_H_MAGIC, VDF_MAGIC, 8) != 0)
            continue;
        memcpy(h + VDF_H_UUID, FUZZ_PARENT_UUID.b, 16);
        vdf_put32(h + VDF_H_CRC, vdf_crc32c(0, h, VDF_H_CRC));
        if (pwrite(fd, h, sizeof(h), (off_t)s * VDF_PAGE) != (ssize_t)sizeof(h))
            die("write parent header", -EIO);
    }
    close(fd);
}

/* Copies a layer into DIR/name with the control byte appended. */
static void emit_seed(const char *dir, const char *name, const char *layer, uint8_t ctl)
{
    int fd = open(layer, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(layer, -errno);
    struct stat st;
    if (fstat(fd, &st) < 0)
        die(layer, -errno);
    size_t len = (size_t)st.st_size;
    uint8_t *b = malloc(len + 1);
    if (!b || pread(fd, b, len, 0) != (ssize_t)len)
        die(layer, -EIO);
    close(fd);
    b[len] = ctl;
    char out[4400];
    snprintf(out, sizeof(out), "%s/%s", dir, name);
    write_all(out, b, len + 1);
    printf("fuzz-layer: seed %s (%zu bytes)\n", out, len + 1);
    free(b);
}

static void make_seeds(const char *dir)
{
    static const struct {
        const char *name;
        uint64_t size;
        uint32_t bs;
        enum vd_digest dg;
        bool child;
        unsigned nwrites;
        bool twice, abandon;
        uint8_t ctl;
    } seeds[] = {
        { "base-4k", 256u << 10, 4096, VD_DIGEST_NONE, false, 6, false, false, CTL_ALL },
        { "base-4k-twice", 256u << 10, 4096, VD_DIGEST_NONE, false, 6, true, false, CTL_ALL },
        { "base-4k-sha256", 128u << 10, 4096, VD_DIGEST_SHA256, false, 5, true, false, CTL_ALL },
        { "base-64k", 1u << 20, 65536, VD_DIGEST_NONE, false, 1, false, false, CTL_ALL },
        { "base-2m", 4u << 20, 2u << 20, VD_DIGEST_NONE, false, 1, false, false, CTL_ALL },
        { "empty-64g", 64ull << 30, 65536, VD_DIGEST_NONE, false, 0, false, false, CTL_ALL },
        { "dirty-4k", 256u << 10, 4096, VD_DIGEST_NONE, false, 4, false, true, CTL_ALL },
        { "child-4k", 0, 4096, VD_DIGEST_NONE, true, 5, true, false, CTL_ALL },
        { "child-4k-raw", 0, 4096, VD_DIGEST_NONE, true, 3, false, false, 0 },
        { "base-4k-rw", 256u << 10, 4096, VD_DIGEST_SHA256, false, 3, false, false,
          CTL_FIX_HDR_CRC | CTL_FIX_PAGE_CRC | CTL_WRITE },
    };
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        die(dir, -errno);
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s/fuzz-layer-seed-%d.vdk", g_dir, (int)getpid());
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        make_layer(tmp, seeds[i].size, seeds[i].bs, seeds[i].dg,
                   seeds[i].child ? g_parent : NULL, seeds[i].nwrites, seeds[i].twice,
                   seeds[i].abandon);
        emit_seed(dir, seeds[i].name, tmp, seeds[i].ctl);
        unlink(tmp);
    }
}

static void cleanup(void)
{
    unlink(g_path);
    unlink(g_parent);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s", t && *t ? t : "/tmp");
    snprintf(g_path, sizeof(g_path), "%s/fuzz-layer-%d.vdk", g_dir, (int)getpid());
    snprintf(g_parent, sizeof(g_parent), "%s/fuzz-layer-%d-parent.vdk", g_dir,
             (int)getpid());
    int rc = vd_ctx_new(64, &g_ctx);
    if (rc < 0)
        die("vd_ctx_new", rc);
    atexit(cleanup);
    make_parent();
    const char *seeds = getenv("FUZZ_LAYER_SEEDS");
    if (seeds && *seeds) {
        make_seeds(seeds);
        exit(0);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* One input                                                           */

static void exercise_chain(struct vd_chain *c)
{
    static uint8_t buf[65536];
    uint64_t size = vd_chain_size(c);
    size_t len = size < sizeof(buf) ? (size_t)size : sizeof(buf);
    uint64_t mid = (size / 2) & ~(uint64_t)(VD_SECTOR_SIZE - 1);
    const uint64_t offs[] = { 0, mid, size - len };
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        uint64_t n = size - offs[i] < len ? size - offs[i] : len;
        (void)vd_read(c, buf, offs[i], (size_t)n);
    }
    /* The first extents of the disk and a read in each of them. */
    struct vd_extent ext[16];
    int n = vd_block_status(c, 0, size, ext, 16);
    for (int i = 0; i < n; i++) {
        uint64_t l = ext[i].length < 4096 ? ext[i].length : 4096;
        (void)vd_read(c, buf, ext[i].offset, (size_t)l);
    }
    unsigned depth = vd_chain_depth(c);
    for (unsigned d = 1; d <= depth; d++) {
        struct vd_layer_info info;
        (void)vd_chain_layer_info(c, d, &info);
    }
}

static void exercise_write(const char *path)
{
    struct vd_open_opts o = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED, .resolve = resolve };
    struct vd_chain *c = NULL;
    if (vd_chain_open(g_ctx, path, &o, &c) < 0)
        return;
    static uint8_t buf[8192];
    uint64_t size = vd_chain_size(c);
    memset(buf, 0x5a, sizeof(buf));
    if (size >= sizeof(buf)) {
        (void)vd_write(c, buf, 0, 4096, 0);
        (void)vd_write(c, buf, (size - 4096) & ~(uint64_t)4095, 4096, 0);
        (void)vd_write(c, buf, 512, 512, 0);            /* read-modify-write */
        (void)vd_zero(c, 4096, 4096, 0);
        (void)vd_flush(c);
        (void)vd_discard(c, 0, 4096);
        (void)vd_read(c, buf, 0, sizeof(buf));
    }
    (void)vd_chain_close(c);
    struct vd_check_result res;
    (void)vd_layer_check(path, VD_CHECK_REPAIR, &res, NULL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned ctl = size ? data[size - 1] : 0;
    size_t len = size ? size - 1 : 0;
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        return 0;
    memcpy(b, data, len);
    fix_crcs(b, len, ctl);
    write_all(g_path, b, len);
    free(b);

    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED, .resolve = resolve };
    struct vd_chain *c = NULL;
    if (vd_chain_open(g_ctx, g_path, &o, &c) == 0) {
        exercise_chain(c);
        vd_chain_close(c);
    }
    struct vd_layer_info info;
    (void)vd_layer_info(g_path, &info);
    struct vd_check_result res;
    (void)vd_layer_check(g_path, VD_CHECK_VERIFY, &res, NULL, NULL);
    if (ctl & CTL_WRITE)
        exercise_write(g_path);
    return 0;
}
