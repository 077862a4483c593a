/*
 * test-model.c - model-based randomized test of libvdisk chains.
 *
 * A seeded random sequence of operations runs against a chain of layer
 * files and, in parallel, against the simplest possible model of a disk: a
 * byte array of its virtual size.  Every read is compared with the model
 * byte by byte; block status is checked against it (what claims to be zero
 * must be zero in the model; depths must lie inside the chain).
 *
 * Operations: write, write-zeroes, discard (both read as zeroes afterwards),
 * flush, read-and-compare, block status, a new delta on top (vd_chain_push,
 * up to depth 64), reopen (close + open of the top file), and batches of up
 * to 32 non-overlapping asynchronous requests in flight at once.  At the
 * end every layer file is checked (vd_layer_check) and the whole disk is
 * read back against the model.
 *
 * By default two runs: the main one (block size chosen by the seed, no
 * digest, --ops operations) and one with SHA-256 digests (another block
 * size, an eighth of the operations).  A failure prints the operation, the
 * offset and the expected and actual bytes, and the command that replays
 * it.  Exit status: 0 success, 1 failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"

#define DEFAULT_SEED    20240601ull
#define DEFAULT_OPS     100000ull
#define MAX_DEPTH       64u
#define MAX_IO          (256u << 10)      /* longest read or write */
#define MAX_ZERO        (4u << 20)        /* longest zero or discard */
#define MAX_ASYNC       32u
#define BUF_SLACK       4096u             /* room for misaligned buffers */
#define STATUS_EVERY    2000u             /* full block-status check period */
#define PROGRESS_STEPS  10u
#define HISTORY         16u

/* ------------------------------------------------------------------ */
/* Random numbers: splitmix64, small and good enough for test streams. */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static bool rng_chance(struct rng *r, unsigned percent)
{
    return rng_below(r, 100) < percent;
}

static void rng_fill(struct rng *r, uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(p + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = rng_next(r);
        memcpy(p + i, &v, len - i);
    }
}

/* ------------------------------------------------------------------ */
/* Configuration and state.  The state is global so that a failure can
 * print it and exit from anywhere (everything stays reachable for LSan). */

struct config {
    uint64_t seed;
    uint64_t ops;
    bool ops_given;
    uint32_t block_size;          /* 0: chosen by the seed */
    int digest;                   /* -1: both runs */
    const char *dir;              /* parent of the work directory */
    bool keep;
    bool verbose;
    const char *argv0;
};

enum op_kind {
    OP_WRITE, OP_READ, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_STATUS,
    OP_ASYNC, OP_PUSH, OP_REOPEN, OP_INVALID, OP_KINDS
};

static const char *const op_names[OP_KINDS] = {
    "write", "read", "zero", "discard", "flush", "block-status",
    "async-batch", "push", "reopen", "invalid-args",
};

/* Relative weights out of 10000. */
static const unsigned op_weights[OP_KINDS] = {
    [OP_WRITE] = 3000, [OP_READ] = 3000, [OP_ZERO] = 900,
    [OP_DISCARD] = 900, [OP_FLUSH] = 500, [OP_STATUS] = 400,
    [OP_ASYNC] = 60, [OP_PUSH] = 10, [OP_REOPEN] = 10, [OP_INVALID] = 20,
};

struct hist {
    uint64_t opno;
    enum op_kind kind;
    uint64_t off, len;
    unsigned depth;
};

struct areq {
    enum op_kind kind;
    uint64_t off;
    size_t len;
    uint8_t *buf;
    bool submitted, done;
    int result;
    unsigned calls;
};

struct run {
    const struct config *cfg;
    uint64_t seed;
    uint64_t ops;
    enum vd_digest digest;
    struct rng rng;
    uint64_t size;
    uint32_t bs;

    char dir[PATH_MAX];
    char *paths[MAX_DEPTH];       /* [0] base ... [nlayers-1] top */
    unsigned nlayers;

    struct vd_ctx *ctx;
    struct vd_chain *chain;
    unsigned open_flags;

    uint8_t *model;
    uint8_t *wbuf_mem, *rbuf_mem;
    uint8_t *abuf_mem;
    struct areq areqs[MAX_ASYNC];
    struct vd_extent ext[64];

    uint64_t opno;
    const char *phase;
    struct hist hist[HISTORY];
    uint64_t nhist;

    uint64_t count[OP_KINDS];
    uint64_t bytes_written, bytes_read, bytes_zeroed, async_reqs;
    uint64_t extents_checked, fua_writes, misaligned_bufs;
};

static struct run R;

static void areq_cb(void *opaque, int result);

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *digest_name(enum vd_digest d)
{
    return d == VD_DIGEST_SHA256 ? "sha256" : "none";
}

static void print_replay(void)
{
    fprintf(stderr, "replay: %s --seed %" PRIu64 " --ops %" PRIu64
            " --digest %s --block-size %u\n", R.cfg->argv0, R.seed, R.ops,
            digest_name(R.digest), R.bs);
}

static void print_history(void)
{
    uint64_t n = R.nhist < HISTORY ? R.nhist : HISTORY;
    if (!n)
        return;
    fprintf(stderr, "last operations:\n");
    for (uint64_t i = R.nhist - n; i < R.nhist; i++) {
        const struct hist *h = &R.hist[i % HISTORY];
        fprintf(stderr, "  #%" PRIu64 " %-12s off %" PRIu64 " len %" PRIu64
                " (depth %u)\n", h->opno, op_names[h->kind], h->off, h->len,
                h->depth);
    }
}

/* Reports a failure with its context and exits 1.  The work directory is
 * kept for inspection. */
static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "FAIL: seed %" PRIu64 " digest %s block size %u size %" PRIu64
            ", op #%" PRIu64 " (%s), depth %u: ", R.seed, digest_name(R.digest),
            R.bs, R.size, R.opno, R.phase ? R.phase : "?", R.nlayers);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_history();
    fprintf(stderr, "layer files kept in %s\n", R.dir);
    print_replay();
    exit(1);
}

static void check_rc(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s (%d): %s", what, strerror(-rc), rc, vd_errmsg());
}

static void record(enum op_kind kind, uint64_t off, uint64_t len)
{
    struct hist *h = &R.hist[R.nhist++ % HISTORY];
    h->opno = R.opno;
    h->kind = kind;
    h->off = off;
    h->len = len;
    h->depth = R.nlayers;
    R.phase = op_names[kind];
}

/* ------------------------------------------------------------------ */
/* Comparing against the model. */

static bool is_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void hexdump16(char *out, const uint8_t *p, size_t avail)
{
    size_t n = avail < 16 ? avail : 16;
    for (size_t i = 0; i < n; i++)
        sprintf(out + 3 * i, "%02x ", p[i]);
    out[3 * n] = '\0';
}

/* Which layer block status says owns off (for failure messages). */
static void describe_owner(uint64_t off, char *out, size_t outlen)
{
    struct vd_extent e;
    int n = vd_block_status(R.chain, off & ~511ull, 512, &e, 1);
    if (n < 1)
        snprintf(out, outlen, "block status: %d", n);
    else
        snprintf(out, outlen, "block status says %s at depth %u",
                 e.type == VD_EXTENT_DATA ? "data" :
                 e.type == VD_EXTENT_ZERO ? "zero" : "hole", e.depth);
}

static void compare_model(const uint8_t *got, uint64_t off, size_t len,
                          const char *what)
{
    const uint8_t *want = R.model + off;
    if (memcmp(got, want, len) == 0)
        return;
    size_t i = 0;
    while (got[i] == want[i])
        i++;
    size_t ndiff = 0;
    for (size_t j = i; j < len; j++)
        ndiff += got[j] != want[j];
    char e[64], a[64], owner[80] = "";
    hexdump16(e, want + i, len - i);
    hexdump16(a, got + i, len - i);
    if (R.chain)
        describe_owner(off + i, owner, sizeof(owner));
    fail("%s of [%" PRIu64 ", +%zu): first difference at offset %" PRIu64
         " (sector %" PRIu64 " +%" PRIu64 "), %zu bytes differ; %s\n"
         "  expected: %s\n  actual:   %s", what, off, len, off + i,
         (off + i) / 512, (off + i) % 512, ndiff, owner, e, a);
}

/* ------------------------------------------------------------------ */
/* Choosing ranges and contents. */

/* A length, in bytes, skewed towards small requests. */
static uint64_t pick_len(uint64_t max)
{
    uint64_t unit = 512;
    unsigned a = (unsigned)rng_below(&R.rng, 100);
    uint64_t len;
    if (a < 60)
        len = (1 + rng_below(&R.rng, 32)) * unit;              /* <= 16 KiB */
    else if (a < 85)
        len = (1 + rng_below(&R.rng, 128)) * unit;             /* <= 64 KiB */
    else
        len = (1 + rng_below(&R.rng, max / unit)) * unit;
    if (len > max)
        len = max;
    if (len > R.size)
        len = R.size;
    return len;
}

/* A range for an operation of at most max bytes: sector, sub-block or
 * block aligned, sometimes right at the end of the disk. */
static void pick_range(uint64_t max, uint64_t *off_out, uint64_t *len_out)
{
    uint64_t len = pick_len(max);
    unsigned a = (unsigned)rng_below(&R.rng, 100);
    uint64_t align = a < 50 ? 512 : a < 80 ? VD_SUBBLOCK_SIZE : R.bs;
    if (align > 512) {
        uint64_t l = (len + align - 1) / align * align;
        if (l <= max && l <= R.size)
            len = l;
    }
    uint64_t off;
    if (rng_chance(&R.rng, 4)) {
        off = R.size - len;
    } else {
        off = rng_below(&R.rng, R.size - len + 1);
        off -= off % align;
        if (off % 512)
            off -= off % 512;
    }
    *off_out = off;
    *len_out = len;
}

/* Fills a write buffer: mostly random bytes, sometimes all zeroes (data
 * that happens to be zero), sometimes random with zeroed sectors and
 * sub-blocks mixed in. */
static void fill_content(uint8_t *p, size_t len)
{
    unsigned a = (unsigned)rng_below(&R.rng, 100);
    if (a < 8) {
        memset(p, 0, len);
        return;
    }
    rng_fill(&R.rng, p, len);
    if (a < 20) {
        for (size_t o = 0; o < len; o += 512)
            if (rng_chance(&R.rng, 40))
                memset(p + o, 0, 512);
    }
}

/* A buffer pointer, sometimes deliberately misaligned (the library must
 * bounce it when it uses O_DIRECT). */
static uint8_t *pick_buf(uint8_t *mem)
{
    unsigned a = (unsigned)rng_below(&R.rng, 100);
    if (a < 80)
        return mem;
    R.misaligned_bufs++;
    if (a < 90)
        return mem + 512;
    return mem + 1 + rng_below(&R.rng, 63);
}

/* ------------------------------------------------------------------ */
/* Layer files, opening, closing. */

static char *layer_path(unsigned i)
{
    char *p;
    if (asprintf(&p, "%s/layer-%03u.vdk", R.dir, i) < 0) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static const char *top_path(void)
{
    return R.paths[R.nlayers - 1];
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void check_chain_shape(void)
{
    if (vd_chain_depth(R.chain) != R.nlayers)
        fail("vd_chain_depth is %u, expected %u", vd_chain_depth(R.chain), R.nlayers);
    if (vd_chain_size(R.chain) != R.size)
        fail("vd_chain_size is %" PRIu64 ", expected %" PRIu64,
             vd_chain_size(R.chain), R.size);
    if (vd_chain_block_size(R.chain) != R.bs)
        fail("vd_chain_block_size is %u, expected %u",
             vd_chain_block_size(R.chain), R.bs);
    for (unsigned d = 1; d <= R.nlayers; d++) {
        const char *p = vd_chain_layer_path(R.chain, d);
        const char *want = R.paths[R.nlayers - d];
        if (!p || strcmp(base_name(p), base_name(want)) != 0)
            fail("vd_chain_layer_path(%u) is %s, expected %s", d,
                 p ? p : "NULL", want);
    }
    if (vd_chain_layer_path(R.chain, R.nlayers + 1) != NULL ||
        vd_chain_layer_path(R.chain, 0) != NULL)
        fail("vd_chain_layer_path out of range is not NULL");
}

static void open_chain(unsigned flags)
{
    struct vd_open_opts o = { .flags = flags };
    R.open_flags = flags;
    check_rc(vd_chain_open(R.ctx, top_path(), &o, &R.chain), "vd_chain_open");
    check_chain_shape();
    if (vd_chain_writable(R.chain) != !!(flags & VD_OPEN_RDWR))
        fail("vd_chain_writable is %d with open flags %#x",
             vd_chain_writable(R.chain), flags);
}

static void close_chain(void)
{
    struct vd_chain *c = R.chain;
    R.chain = NULL;
    check_rc(vd_chain_close(c), "vd_chain_close");
}

/* The findings of the last vd_layer_check, shown when it fails (some are
 * only informational). */
static char findings[8][256];
static unsigned nfindings;

static void report_finding(void *opaque, const char *msg)
{
    (void)opaque;
    snprintf(findings[nfindings++ % 8], sizeof(findings[0]), "%s", msg);
}

/* A cleanly closed layer: no corruption, no leak, no digest mismatch, not
 * dirty. */
static void check_layer_clean(const char *path, unsigned flags)
{
    struct vd_check_result res;
    memset(&res, 0xa5, sizeof(res));
    nfindings = 0;
    int rc = vd_layer_check(path, flags, &res, report_finding, NULL);
    bool bad = rc < 0 || res.corruptions || res.leaked_bytes ||
               res.digest_mismatches || res.dirty;
    if (bad) {
        unsigned first = nfindings > 8 ? nfindings - 8 : 0;
        for (unsigned i = first; i < nfindings; i++)
            fprintf(stderr, "  check %s: %s\n", path, findings[i % 8]);
    }
    check_rc(rc, "vd_layer_check");
    if (bad)
        fail("vd_layer_check %s: %" PRIu64 " corruptions, %" PRIu64
             " leaked bytes, %" PRIu64 " digest mismatches, dirty %d",
             path, res.corruptions, res.leaked_bytes, res.digest_mismatches,
             (int)res.dirty);
}

/* ------------------------------------------------------------------ */
/* Synchronous operations. */

static void op_write(void)
{
    uint64_t off, len;
    pick_range(MAX_IO, &off, &len);
    record(OP_WRITE, off, len);
    uint8_t *buf = pick_buf(R.wbuf_mem);
    fill_content(buf, len);
    unsigned flags = 0;
    if (rng_chance(&R.rng, 5)) {
        flags = VD_IO_FUA;
        R.fua_writes++;
    }
    check_rc(vd_write(R.chain, buf, off, len, flags), "vd_write");
    memcpy(R.model + off, buf, len);
    R.bytes_written += len;
    if (rng_chance(&R.rng, 15)) {
        /* read it straight back: pins a failure to the write that caused it */
        uint8_t *rb = pick_buf(R.rbuf_mem);
        check_rc(vd_read(R.chain, rb, off, len), "vd_read (read back)");
        compare_model(rb, off, len, "read back after write");
    }
}

static void op_read(void)
{
    uint64_t off, len;
    pick_range(MAX_IO, &off, &len);
    record(OP_READ, off, len);
    uint8_t *buf = pick_buf(R.rbuf_mem);
    memset(buf, 0x5a, len);
    check_rc(vd_read(R.chain, buf, off, len), "vd_read");
    compare_model(buf, off, len, "read");
    R.bytes_read += len;
}

static void op_zero(bool discard)
{
    uint64_t off, len;
    pick_range(rng_chance(&R.rng, 30) ? MAX_ZERO : MAX_IO, &off, &len);
    record(discard ? OP_DISCARD : OP_ZERO, off, len);
    if (discard) {
        check_rc(vd_discard(R.chain, off, len), "vd_discard");
    } else {
        unsigned flags = rng_chance(&R.rng, 5) ? VD_IO_FUA : 0;
        check_rc(vd_zero(R.chain, off, len, flags), "vd_zero");
    }
    memset(R.model + off, 0, len);
    R.bytes_zeroed += len;
    if (rng_chance(&R.rng, 15)) {
        uint64_t l = len < MAX_IO ? len : MAX_IO;
        uint8_t *rb = pick_buf(R.rbuf_mem);
        memset(rb, 0x5a, l);
        check_rc(vd_read(R.chain, rb, off, l), "vd_read (read back)");
        compare_model(rb, off, l, discard ? "read back after discard" :
                      "read back after zero");
    }
}

static void op_flush(void)
{
    record(OP_FLUSH, 0, 0);
    check_rc(vd_flush(R.chain), "vd_flush");
}

/* Checks the extents of [off, off+len) against the model, asking for a
 * random number of extents at a time. */
static void check_status_range(uint64_t off, uint64_t len)
{
    uint64_t pos = off, end = off + len;
    unsigned depth = R.nlayers;
    while (pos < end) {
        size_t max = 1 + rng_below(&R.rng, 64);
        int n = vd_block_status(R.chain, pos, end - pos, R.ext, max);
        check_rc(n, "vd_block_status");
        if (n < 1 || (size_t)n > max)
            fail("vd_block_status(%" PRIu64 ", %" PRIu64 ", max %zu) returned %d",
                 pos, end - pos, max, n);
        for (int i = 0; i < n; i++) {
            const struct vd_extent *e = &R.ext[i];
            if (e->offset != pos || e->length == 0 || e->length > end - pos ||
                e->offset % 512 || e->length % 512)
                fail("block status extent %d is [%" PRIu64 ", +%" PRIu64
                     "), expected to start at %" PRIu64 " and end by %" PRIu64,
                     i, e->offset, e->length, pos, end);
            switch (e->type) {
            case VD_EXTENT_HOLE:
                if (e->depth != 0)
                    fail("hole extent [%" PRIu64 ", +%" PRIu64 ") has depth %u",
                         e->offset, e->length, e->depth);
                break;
            case VD_EXTENT_ZERO:
            case VD_EXTENT_DATA:
                if (e->depth < 1 || e->depth > depth)
                    fail("%s extent [%" PRIu64 ", +%" PRIu64 ") has depth %u,"
                         " chain depth %u", e->type == VD_EXTENT_ZERO ? "zero" :
                         "data", e->offset, e->length, e->depth, depth);
                break;
            default:
                fail("extent [%" PRIu64 ", +%" PRIu64 ") has type %d",
                     e->offset, e->length, (int)e->type);
            }
            if (e->type != VD_EXTENT_DATA && !is_zero(R.model + e->offset, e->length)) {
                uint64_t i0 = 0;
                while (R.model[e->offset + i0] == 0)
                    i0++;
                fail("%s extent [%" PRIu64 ", +%" PRIu64 ") depth %u, but the model"
                     " holds byte %#x at offset %" PRIu64,
                     e->type == VD_EXTENT_ZERO ? "zero" : "hole", e->offset,
                     e->length, e->depth, R.model[e->offset + i0], e->offset + i0);
            }
            if (i > 0 && e->type == R.ext[i - 1].type && e->depth == R.ext[i - 1].depth)
                fail("extents %d and %d at %" PRIu64 " are not merged (type %d"
                     " depth %u)", i - 1, i, e->offset, (int)e->type, e->depth);
            pos += e->length;
            R.extents_checked++;
        }
    }
}

static void op_status(bool full)
{
    uint64_t off = 0, len = R.size;
    if (!full)
        pick_range(MAX_ZERO, &off, &len);
    record(OP_STATUS, off, len);
    check_status_range(off, len);
}

static void op_push(void)
{
    if (R.nlayers >= MAX_DEPTH)
        return;
    record(OP_PUSH, 0, 0);
    char *p = layer_path(R.nlayers);
    if (R.open_flags & VD_OPEN_RDWR) {
        check_rc(vd_chain_push(R.chain, p), "vd_chain_push");
    } else {
        fail("push on a read-only chain");
    }
    R.paths[R.nlayers++] = p;
    check_chain_shape();
    struct vd_layer_info below, top;
    check_rc(vd_chain_layer_info(R.chain, 2, &below), "vd_chain_layer_info(2)");
    check_rc(vd_chain_layer_info(R.chain, 1, &top), "vd_chain_layer_info(1)");
    if (!below.frozen)
        fail("the layer below a new delta is not frozen");
    if (top.frozen || top.allocated != 0 || top.zeroed != 0)
        fail("new delta: frozen %d, allocated %" PRIu64 ", zeroed %" PRIu64,
             (int)top.frozen, top.allocated, top.zeroed);
    if (memcmp(&top.parent_uuid, &below.uuid, sizeof(vd_uuid)) != 0)
        fail("new delta's parent UUID is not the UUID of the layer below");
    /* a new empty delta must describe exactly what its parent did */
    check_status_range(0, R.size);
}

/* A read-only interlude: the top opened read-only refuses writes and
 * reads the same data. */
static void readonly_interlude(void)
{
    open_chain(rng_chance(&R.rng, 50) ? VD_OPEN_BUFFERED : 0);
    uint8_t *b = R.rbuf_mem;
    int rc = vd_write(R.chain, b, 0, 512, 0);
    if (rc != -EROFS)
        fail("vd_write on a read-only chain returned %d, expected -EROFS", rc);
    rc = vd_zero(R.chain, 0, 512, 0);
    if (rc != -EROFS)
        fail("vd_zero on a read-only chain returned %d, expected -EROFS", rc);
    for (int i = 0; i < 8; i++) {
        uint64_t off, len;
        pick_range(MAX_IO, &off, &len);
        check_rc(vd_read(R.chain, b, off, len), "vd_read (read-only)");
        compare_model(b, off, len, "read on a read-only reopen");
    }
    close_chain();
}

static void op_reopen(void)
{
    record(OP_REOPEN, 0, 0);
    close_chain();
    /* a cleanly closed top layer checks clean; lower layers are frozen and
     * were checked when they were closed the last time */
    check_layer_clean(top_path(), 0);
    struct vd_layer_info info;
    check_rc(vd_layer_info(top_path(), &info), "vd_layer_info");
    if (info.dirty || info.frozen)
        fail("top layer after a clean close: dirty %d frozen %d",
             (int)info.dirty, (int)info.frozen);
    if (rng_chance(&R.rng, 20))
        readonly_interlude();
    open_chain(VD_OPEN_RDWR | (rng_chance(&R.rng, 30) ? VD_OPEN_BUFFERED : 0));
    check_rc(vd_chain_layer_info(R.chain, 1, &info), "vd_chain_layer_info");
    if (info.frozen)
        fail("top layer frozen after reopening");
}

/* Argument checking: refused requests return the documented error and
 * change nothing. */
static void op_invalid(void)
{
    record(OP_INVALID, 0, 0);
    uint8_t *b = R.wbuf_mem;
    memset(b, 0xee, 1024);
    int rc;
    if ((rc = vd_write(R.chain, b, 100, 512, 0)) != -EINVAL)
        fail("misaligned write offset: %d, expected -EINVAL", rc);
    if ((rc = vd_write(R.chain, b, 0, 100, 0)) != -EINVAL)
        fail("misaligned write length: %d, expected -EINVAL", rc);
    if ((rc = vd_read(R.chain, b, R.size - 512, 1024)) != -ENOSPC)
        fail("read past the end: %d, expected -ENOSPC", rc);
    if ((rc = vd_write(R.chain, b, R.size, 512, 0)) != -ENOSPC)
        fail("write past the end: %d, expected -ENOSPC", rc);
    if ((rc = vd_zero(R.chain, UINT64_MAX - 511, 1024, 0)) != -ENOSPC &&
        rc != -EINVAL)
        fail("zero with an overflowing range: %d, expected -ENOSPC", rc);
    if ((rc = vd_discard(R.chain, 512, UINT64_MAX - 511)) != -ENOSPC && rc != -EINVAL)
        fail("discard with an overflowing range: %d, expected -ENOSPC", rc);
    if ((rc = vd_block_status(R.chain, R.size, 512, R.ext, 4)) != -ENOSPC)
        fail("block status past the end: %d, expected -ENOSPC", rc);
    struct areq *q = &R.areqs[0];
    memset(q, 0, sizeof(*q));
    if ((rc = vd_aio_write(R.chain, b, R.size - 512, 1024, 0, areq_cb, q)) != -ENOSPC)
        fail("async write past the end: %d, expected -ENOSPC", rc);
    if (vd_ctx_inflight(R.ctx) != 0)
        fail("a refused request is counted in flight");
    check_rc(vd_ctx_poll(R.ctx, 0), "vd_ctx_poll");
    if (q->calls)
        fail("the callback of a refused request ran");
}

/* ------------------------------------------------------------------ */
/* Asynchronous batches. */

static void areq_cb(void *opaque, int result)
{
    struct areq *q = opaque;
    q->calls++;
    q->done = true;
    q->result = result;
}

static bool overlaps_batch(unsigned n, uint64_t off, uint64_t len)
{
    for (unsigned i = 0; i < n; i++) {
        const struct areq *q = &R.areqs[i];
        if (q->kind == OP_FLUSH)
            continue;
        if (off < q->off + q->len && q->off < off + len)
            return true;
    }
    return false;
}

static void op_async(void)
{
    unsigned want = 1 + (unsigned)rng_below(&R.rng, MAX_ASYNC), n = 0;
    record(OP_ASYNC, 0, want);
    for (unsigned tries = 0; n < want && tries < 4 * want; tries++) {
        struct areq *q = &R.areqs[n];
        memset(q, 0, sizeof(*q));
        q->buf = R.abuf_mem + (size_t)n * (MAX_IO + BUF_SLACK);
        unsigned a = (unsigned)rng_below(&R.rng, 100);
        q->kind = a < 45 ? OP_WRITE : a < 85 ? OP_READ : a < 92 ? OP_ZERO :
                  a < 97 ? OP_DISCARD : OP_FLUSH;
        if (q->kind == OP_FLUSH) {
            n++;
            continue;
        }
        uint64_t off, len;
        pick_range(q->kind == OP_ZERO || q->kind == OP_DISCARD ? 1u << 20 : 64u << 10,
                   &off, &len);
        if (overlaps_batch(n, off, len))
            continue;
        q->off = off;
        q->len = len;
        if (rng_chance(&R.rng, 20))
            q->buf += 1 + rng_below(&R.rng, 63);
        n++;
    }
    /* submit: writes go into the model at once (nothing else in flight
     * overlaps them, so completion order cannot matter) */
    for (unsigned i = 0; i < n; i++) {
        struct areq *q = &R.areqs[i];
        int rc = 0;
        switch (q->kind) {
        case OP_WRITE:
            fill_content(q->buf, q->len);
            rc = vd_aio_write(R.chain, q->buf, q->off, q->len,
                              rng_chance(&R.rng, 10) ? VD_IO_FUA : 0, areq_cb, q);
            memcpy(R.model + q->off, q->buf, q->len);
            R.bytes_written += q->len;
            break;
        case OP_READ:
            memset(q->buf, 0x5a, q->len);
            rc = vd_aio_read(R.chain, q->buf, q->off, q->len, areq_cb, q);
            R.bytes_read += q->len;
            break;
        case OP_ZERO:
            rc = vd_aio_zero(R.chain, q->off, q->len, 0, areq_cb, q);
            memset(R.model + q->off, 0, q->len);
            break;
        case OP_DISCARD:
            rc = vd_aio_discard(R.chain, q->off, q->len, areq_cb, q);
            memset(R.model + q->off, 0, q->len);
            break;
        case OP_FLUSH:
            rc = vd_aio_flush(R.chain, areq_cb, q);
            break;
        default:
            break;
        }
        if (rc < 0)
            fail("async %s [%" PRIu64 ", +%zu) refused: %s: %s", op_names[q->kind],
                 q->off, q->len, strerror(-rc), vd_errmsg());
        if (q->calls)
            fail("async %s: callback ran inside the submit call", op_names[q->kind]);
        q->submitted = true;
        R.async_reqs++;
    }
    if (vd_ctx_inflight(R.ctx) > n)
        fail("vd_ctx_inflight is %u with %u requests submitted",
             vd_ctx_inflight(R.ctx), n);
    /* reap: half the time through the event fd, as an event loop would */
    unsigned done = 0;
    double deadline = now_sec() + 60;
    bool use_fd = rng_chance(&R.rng, 50);
    while (done < n) {
        int rc;
        if (use_fd) {
            struct pollfd pfd = { .fd = vd_ctx_fd(R.ctx), .events = POLLIN };
            if (poll(&pfd, 1, 1000) < 0)
                fail("poll on vd_ctx_fd: %s", strerror(errno));
            rc = vd_ctx_poll(R.ctx, 0);
        } else {
            rc = vd_ctx_poll(R.ctx, 1000);
        }
        check_rc(rc, "vd_ctx_poll");
        done = 0;
        for (unsigned i = 0; i < n; i++)
            done += R.areqs[i].done;
        if (now_sec() > deadline)
            fail("async batch: %u of %u requests still not complete after 60 s"
                 " (inflight %u)", n - done, n, vd_ctx_inflight(R.ctx));
    }
    if (vd_ctx_inflight(R.ctx) != 0)
        fail("vd_ctx_inflight is %u after every callback ran", vd_ctx_inflight(R.ctx));
    for (unsigned i = 0; i < n; i++) {
        struct areq *q = &R.areqs[i];
        if (q->calls != 1)
            fail("async %s: callback ran %u times", op_names[q->kind], q->calls);
        if (q->result != 0)
            fail("async %s [%" PRIu64 ", +%zu) completed with %d (%s)",
                 op_names[q->kind], q->off, q->len, q->result, strerror(-q->result));
        if (q->kind == OP_READ)
            compare_model(q->buf, q->off, q->len, "async read");
    }
}

/* ------------------------------------------------------------------ */
/* One run. */

static void read_whole_disk(const char *what)
{
    uint8_t *b = R.rbuf_mem;
    for (uint64_t off = 0; off < R.size; off += MAX_IO) {
        size_t len = R.size - off < MAX_IO ? (size_t)(R.size - off) : MAX_IO;
        memset(b, 0x5a, len);
        check_rc(vd_read(R.chain, b, off, len), "vd_read (whole disk)");
        compare_model(b, off, len, what);
    }
}

static void final_checks(void)
{
    R.phase = "final check";
    close_chain();
    struct vd_layer_info prev;
    memset(&prev, 0, sizeof(prev));
    for (unsigned i = 0; i < R.nlayers; i++) {
        struct vd_layer_info info;
        check_rc(vd_layer_info(R.paths[i], &info), "vd_layer_info");
        bool top = i == R.nlayers - 1;
        if (info.frozen == top || info.dirty || info.size != R.size ||
            info.block_size != R.bs || info.digest != R.digest)
            fail("layer %s: frozen %d dirty %d size %" PRIu64 " block size %u"
                 " digest %d", R.paths[i], (int)info.frozen, (int)info.dirty,
                 info.size, info.block_size, (int)info.digest);
        if (i == 0 ? !vd_uuid_is_null(&info.parent_uuid) :
            memcmp(&info.parent_uuid, &prev.uuid, sizeof(vd_uuid)) != 0)
            fail("layer %s: parent UUID does not name the layer below", R.paths[i]);
        prev = info;
        check_layer_clean(R.paths[i], VD_CHECK_VERIFY);
    }
    R.phase = "final read";
    open_chain(0);
    read_whole_disk("final read of the whole disk");
    check_status_range(0, R.size);
    close_chain();
}

static void setup_run(const struct config *cfg, enum vd_digest digest, uint64_t ops)
{
    memset(&R, 0, sizeof(R));
    R.cfg = cfg;
    R.seed = cfg->seed;
    R.ops = ops;
    R.digest = digest;
    /* the stream of a run depends on the seed and the digest only */
    R.rng.s = cfg->seed ^ (digest == VD_DIGEST_SHA256 ? 0x5a256a256ull : 0);
    static const uint32_t sizes[] = { 4096, 65536, 1u << 20 };
    R.bs = cfg->block_size ? cfg->block_size :
           sizes[(rng_next(&R.rng) + (uint64_t)digest) % 3];
    R.size = 64ull << 20;
    if (rng_chance(&R.rng, 50))
        R.size -= 512 * (1 + rng_below(&R.rng, 2047));   /* a partial last block */

    snprintf(R.dir, sizeof(R.dir), "%s/vdisk-model-XXXXXX", cfg->dir);
    if (!mkdtemp(R.dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", R.dir, strerror(errno));
        exit(1);
    }
    R.model = calloc(1, R.size);
    R.wbuf_mem = aligned_alloc(4096, MAX_IO + BUF_SLACK);
    R.rbuf_mem = aligned_alloc(4096, MAX_IO + BUF_SLACK);
    R.abuf_mem = aligned_alloc(4096, (size_t)MAX_ASYNC * (MAX_IO + BUF_SLACK));
    if (!R.model || !R.wbuf_mem || !R.rbuf_mem || !R.abuf_mem) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

static void teardown_run(void)
{
    if (!R.cfg->keep) {
        for (unsigned i = 0; i < R.nlayers; i++)
            unlink(R.paths[i]);
        rmdir(R.dir);
    }
    for (unsigned i = 0; i < R.nlayers; i++)
        free(R.paths[i]);
    vd_ctx_free(R.ctx);
    free(R.model);
    free(R.wbuf_mem);
    free(R.rbuf_mem);
    free(R.abuf_mem);
    memset(&R, 0, sizeof(R));
}

static enum op_kind pick_op(void)
{
    unsigned total = 0;
    for (int k = 0; k < OP_KINDS; k++)
        total += op_weights[k];
    unsigned x = (unsigned)rng_below(&R.rng, total);
    for (int k = 0; k < OP_KINDS; k++) {
        if (x < op_weights[k])
            return (enum op_kind)k;
        x -= op_weights[k];
    }
    return OP_READ;
}

static void run_one(const struct config *cfg, enum vd_digest digest, uint64_t ops)
{
    double t0 = now_sec();
    setup_run(cfg, digest, ops);
    printf("run: seed %" PRIu64 ", %" PRIu64 " ops, block size %u, digest %s,"
           " virtual size %" PRIu64 ", dir %s\n", R.seed, R.ops, R.bs,
           digest_name(digest), R.size, R.dir);
    fflush(stdout);

    R.phase = "setup";
    check_rc(vd_ctx_new(rng_chance(&R.rng, 50) ? 0 : 8, &R.ctx), "vd_ctx_new");
    R.paths[0] = layer_path(0);
    R.nlayers = 1;
    struct vd_create_opts co = { .size = R.size, .block_size = R.bs, .digest = digest };
    vd_uuid uuid;
    check_rc(vd_layer_create(R.paths[0], &co, &uuid), "vd_layer_create");
    open_chain(VD_OPEN_RDWR);

    uint64_t step = ops / PROGRESS_STEPS ? ops / PROGRESS_STEPS : 1;
    for (R.opno = 1; R.opno <= ops; R.opno++) {
        switch (pick_op()) {
        case OP_WRITE: op_write(); R.count[OP_WRITE]++; break;
        case OP_READ: op_read(); R.count[OP_READ]++; break;
        case OP_ZERO: op_zero(false); R.count[OP_ZERO]++; break;
        case OP_DISCARD: op_zero(true); R.count[OP_DISCARD]++; break;
        case OP_FLUSH: op_flush(); R.count[OP_FLUSH]++; break;
        case OP_STATUS: op_status(false); R.count[OP_STATUS]++; break;
        case OP_ASYNC: op_async(); R.count[OP_ASYNC]++; break;
        case OP_PUSH:
            if (R.nlayers < MAX_DEPTH) {
                op_push();
                R.count[OP_PUSH]++;
            }
            break;
        case OP_REOPEN: op_reopen(); R.count[OP_REOPEN]++; break;
        case OP_INVALID: op_invalid(); R.count[OP_INVALID]++; break;
        default: break;
        }
        if (R.opno % STATUS_EVERY == 0) {
            op_status(true);
            R.count[OP_STATUS]++;
        }
        if (R.opno % step == 0 || cfg->verbose) {
            printf("  op %" PRIu64 "/%" PRIu64 ": depth %u, written %" PRIu64
                   " MiB, read %" PRIu64 " MiB, %.1f s\n", R.opno, ops, R.nlayers,
                   R.bytes_written >> 20, R.bytes_read >> 20, now_sec() - t0);
            fflush(stdout);
        }
    }
    R.opno = ops;
    final_checks();

    printf("  ops:");
    for (int k = 0; k < OP_KINDS; k++)
        printf(" %s %" PRIu64 "%s", op_names[k], R.count[k], k + 1 < OP_KINDS ? "," : "");
    printf("\n  final depth %u, %" PRIu64 " async requests, %" PRIu64 " FUA writes,"
           " %" PRIu64 " misaligned buffers, %" PRIu64 " extents checked\n",
           R.nlayers, R.async_reqs, R.fua_writes, R.misaligned_bufs, R.extents_checked);
    printf("  %" PRIu64 " MiB written, %" PRIu64 " MiB zeroed/discarded, %" PRIu64
           " MiB read and compared; every layer checks clean; %.1f s\n",
           R.bytes_written >> 20, R.bytes_zeroed >> 20, R.bytes_read >> 20,
           now_sec() - t0);
    fflush(stdout);
    teardown_run();
}

/* ------------------------------------------------------------------ */

static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [--seed N] [--ops N] [--digest none|sha256]"
            " [--block-size N] [--dir DIR] [--keep] [-v]\n"
            "  without --digest: a run without digests (--ops operations) and one\n"
            "  with sha256 (an eighth as many); --seed and --ops replay a failure\n",
            argv0);
    exit(status);
}

static uint64_t parse_u64(const char *argv0, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0')
        usage(argv0, 2);
    return v;
}

int main(int argc, char **argv)
{
    struct config cfg = {
        .seed = DEFAULT_SEED, .ops = DEFAULT_OPS, .digest = -1,
        .argv0 = argv[0],
    };
    const char *tmp = getenv("TMPDIR");
    cfg.dir = tmp && *tmp ? tmp : "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--seed") && v) {
            cfg.seed = parse_u64(argv[0], v);
            i++;
        } else if (!strcmp(a, "--ops") && v) {
            cfg.ops = parse_u64(argv[0], v);
            cfg.ops_given = true;
            i++;
        } else if (!strcmp(a, "--digest") && v) {
            if (!strcmp(v, "none"))
                cfg.digest = VD_DIGEST_NONE;
            else if (!strcmp(v, "sha256"))
                cfg.digest = VD_DIGEST_SHA256;
            else
                usage(argv[0], 2);
            i++;
        } else if (!strcmp(a, "--block-size") && v) {
            cfg.block_size = (uint32_t)parse_u64(argv[0], v);
            i++;
        } else if (!strcmp(a, "--dir") && v) {
            cfg.dir = v;
            i++;
        } else if (!strcmp(a, "--keep")) {
            cfg.keep = true;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            cfg.verbose = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(argv[0], 0);
        } else {
            usage(argv[0], 2);
        }
    }

    double t0 = now_sec();
    printf("test-model: seed %" PRIu64 "\n", cfg.seed);
    uint64_t total = 0;
    if (cfg.digest < 0) {
        run_one(&cfg, VD_DIGEST_NONE, cfg.ops);
        uint64_t dops = cfg.ops / 8 ? cfg.ops / 8 : 1;
        run_one(&cfg, VD_DIGEST_SHA256, dops);
        total = cfg.ops + dops;
    } else {
        run_one(&cfg, (enum vd_digest)cfg.digest, cfg.ops);
        total = cfg.ops;
    }
    printf("test-model: PASS, seed %" PRIu64 ", %" PRIu64 " operations, %.1f s\n",
           cfg.seed, total, now_sec() - t0);
    return 0;
}
