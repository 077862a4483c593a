/*
 * test-crash.c - power-loss simulation for libvdisk chains.
 *
 * Each run (a "crash point") builds a small chain through the shim backend
 * (shim.h), runs a random workload of writes, write-zeroes, discards,
 * flushes, new deltas (vd_chain_push) and close + reopen, and lets the
 * power fail at a random instant: between two operations or in the middle
 * of one, after a random number of the library's file operations.  The shim then drops,
 * keeps or tears every write that was not durable, the chain is abandoned
 * as a killed process would leave it, and everything is reopened without
 * the shim.  Then:
 *  (a) vd_layer_check on every layer file finds no corruption (leaked
 *      space is allowed);
 *  (b) every 512-byte sector of the virtual disk reads either its value at
 *      the last completed flush or one of the values written to it since
 *      (write-zeroes and discard write zeroes);
 *  (c) the top layer is marked dirty (unless the power failed inside the
 *      push that was replacing it), the chain opens read-write, takes new
 *      writes, and after a clean close and check --repair checks clean.
 *
 * The model: each write fills its sectors with self-identifying content
 * (write id and sector number, then bytes derived from them), so a
 * sector's content says which write produced it; all zeroes means zeroed
 * or never written.  Per sector the model keeps the value at the last
 * flush, and a log of the writes since; a completed flush (or push, or FUA
 * write for its own sectors) makes values durable.
 *
 * Exit status: 0 success, 1 failure (with the run's replay command).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "vd-testing.h"
#include "shim.h"

#define DEFAULT_SEED    20240602ull
#define DEFAULT_RUNS    300u
#define DEFAULT_OPS     120u
#define MAX_LAYERS      12u
#define MAX_WRITE       (64u << 10)
#define MAX_ZERO        (1u << 20)
#define CHUNK           (256u << 10)
#define SECTOR          512u
/* Chains are reopened after the crash through the page cache: O_DIRECT
 * reads would first write back every file the shim just wrote. */
#define AFTER_CRASH     VD_OPEN_BUFFERED

/* ------------------------------------------------------------------ */
/* Random numbers (splitmix64). */

struct rng {
    uint64_t s;
};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static bool rng_chance(struct rng *r, unsigned percent)
{
    return rng_below(r, 100) < percent;
}

/* ------------------------------------------------------------------ */
/* State. */

struct config {
    uint64_t seed;
    unsigned runs;
    unsigned ops;
    long only_run;              /* -1: all */
    int digest;                 /* VD_DIGEST_* for every run (with --digest) */
    bool digest_mixed;          /* no --digest: one run in four uses SHA-256 */
    const char *dir;
    bool keep, verbose, real_sync;
    const char *argv0;
};

enum op_kind {
    OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_PUSH, OP_REOPEN, OP_READ, OP_KINDS
};

static const char *const op_names[OP_KINDS] = {
    "write", "zero", "discard", "flush", "push", "reopen", "read",
};
static const unsigned op_weights[OP_KINDS] = {
    [OP_WRITE] = 50, [OP_ZERO] = 10, [OP_DISCARD] = 8, [OP_FLUSH] = 12,
    [OP_PUSH] = 4, [OP_REOPEN] = 3, [OP_READ] = 16,
};

/* Writes since the last flush: value (write id, 0 for zeroes) and range. */
struct logent {
    uint32_t val;
    uint32_t s0, n;
};

struct run {
    const struct config *cfg;
    unsigned index;
    struct rng rng;
    uint64_t salt;
    uint64_t size;
    uint32_t bs;
    uint32_t nsec;

    char dir[PATH_MAX];
    char *paths[MAX_LAYERS + 2];
    unsigned nlayers;
    char *push_target;           /* the push the power failed in */
    char *fresh;                 /* a delta made after the crash */

    struct vd_ctx *ctx;
    struct vd_chain *chain;

    uint32_t *cur, *dur, *minlog;
    struct logent *log;
    uint32_t nlog, caplog;
    uint32_t *id_log;            /* log index of each write id */
    uint32_t next_id, capid;

    uint8_t *buf, *rbuf;

    unsigned nops, crash_op;
    uint64_t countdown;
    const char *phase;
    unsigned opno;
    enum op_kind crash_kind;
    bool failed_inside;
    bool reopen_cut;             /* the power failed inside a close + open */
};

/* Totals over all runs. */
static struct {
    unsigned runs;
    unsigned inside[OP_KINDS], between;
    uint64_t ops, sectors, sectors_newer, sectors_older;
    uint64_t leaks_runs, leaked_bytes, dirty_seen, dirty_required;
    unsigned push_new_top, push_old_top, push_old_frozen;
    uint64_t digest_runs, digest_mismatches, digest_below;
    unsigned digest_first_run;
} T;

static struct run R;
static enum vd_digest g_digest;   /* of the current run */

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "FAIL: run %u (block size %u, size %" PRIu64 ", %u ops, power"
            " failure at op %u (%s) after %" PRIu64 " file operations), in %s: ",
            R.index, R.bs, R.size, R.nops, R.crash_op, op_names[R.crash_kind],
            R.countdown, R.phase ? R.phase : "?");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fprintf(stderr, "layer files kept in %s\n", R.dir);
    fprintf(stderr, "replay: %s --seed %" PRIu64 " --run %u --ops %u%s -v\n",
            R.cfg->argv0, R.cfg->seed, R.index, R.cfg->ops,
            g_digest == VD_DIGEST_SHA256 ? " --digest sha256" : "");
    exit(1);
}

static void check_rc(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s (%d): %s", what, strerror(-rc), rc, vd_errmsg());
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* Self-identifying sector content. */

static void sector_fill(uint8_t *p, uint32_t id, uint64_t sector)
{
    uint64_t v = id;
    memcpy(p, &v, 8);
    memcpy(p + 8, &sector, 8);
    uint64_t x = (v * 0x9e3779b97f4a7c15ull) ^ (sector * 0xc2b2ae3d27d4eb4full) ^ R.salt;
    x |= 1;
    for (unsigned i = 16; i < SECTOR; i += 8) {
        x ^= x << 13;           /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

static bool sector_zero(const uint8_t *p)
{
    return p[0] == 0 && memcmp(p, p + 1, SECTOR - 1) == 0;
}

/* The value a sector holds: 0 for zeroes, else the write id.  Returns false
 * (with a description) for content no write produced. */
static bool sector_decode(const uint8_t *p, uint64_t sector, uint32_t *val,
                          char *why, size_t whylen)
{
    if (sector_zero(p)) {
        *val = 0;
        return true;
    }
    uint64_t id, sec;
    memcpy(&id, p, 8);
    memcpy(&sec, p + 8, 8);
    if (id == 0 || id >= R.next_id) {
        snprintf(why, whylen, "bytes no write produced (first 8: %016" PRIx64 ")", id);
        return false;
    }
    if (sec != sector) {
        snprintf(why, whylen, "the content of sector %" PRIu64 " from write %" PRIu64,
                 sec, id);
        return false;
    }
    uint8_t want[SECTOR];
    sector_fill(want, (uint32_t)id, sector);
    if (memcmp(want, p, SECTOR) != 0) {
        unsigned i = 0;
        while (want[i] == p[i])
            i++;
        snprintf(why, whylen, "write %" PRIu64 "'s header with other bytes from"
                 " offset %u (a sector mixed from two writes)", id, i);
        return false;
    }
    *val = (uint32_t)id;
    return true;
}

/* ------------------------------------------------------------------ */
/* The model. */

static void log_add(uint32_t val, uint32_t s0, uint32_t n)
{
    if (R.nlog == R.caplog) {
        R.caplog = R.caplog ? 2 * R.caplog : 64;
        R.log = realloc(R.log, R.caplog * sizeof(*R.log));
        if (!R.log)
            fail("out of memory");
    }
    if (val) {
        if (val >= R.capid) {
            R.capid = R.capid ? 2 * R.capid : 256;
            R.id_log = realloc(R.id_log, R.capid * sizeof(*R.id_log));
            if (!R.id_log)
                fail("out of memory");
        }
        R.id_log[val] = R.nlog;
    }
    R.log[R.nlog++] = (struct logent){ .val = val, .s0 = s0, .n = n };
    for (uint32_t s = s0; s < s0 + n; s++)
        R.cur[s] = val;
}

/* Everything written so far is durable. */
static void model_durable_all(void)
{
    memcpy(R.dur, R.cur, R.nsec * sizeof(uint32_t));
    memset(R.minlog, 0, R.nsec * sizeof(uint32_t));
    R.nlog = 0;
}

/* The last log entry (a completed FUA request) is durable for its sectors:
 * older values are no longer possible there. */
static void model_durable_last(void)
{
    const struct logent *e = &R.log[R.nlog - 1];
    for (uint32_t s = e->s0; s < e->s0 + e->n; s++) {
        R.dur[s] = e->val;
        R.minlog[s] = R.nlog;
    }
}

static bool log_covers(const struct logent *e, uint32_t s)
{
    return s >= e->s0 && s < e->s0 + e->n;
}

/* Whether val is a value sector s may hold after the crash. */
static bool acceptable(uint32_t s, uint32_t val)
{
    if (val == R.dur[s])
        return true;
    if (val) {
        if (val >= R.capid)
            return false;
        uint32_t i = R.id_log[val];
        return i < R.nlog && i >= R.minlog[s] && R.log[i].val == val &&
               log_covers(&R.log[i], s);
    }
    for (uint32_t i = R.minlog[s]; i < R.nlog; i++)
        if (R.log[i].val == 0 && log_covers(&R.log[i], s))
            return true;
    return false;
}

static void describe_allowed(uint32_t s, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "durable value %u", R.dur[s]);
    unsigned shown = 0;
    for (uint32_t i = R.minlog[s]; i < R.nlog && n < outlen; i++) {
        if (!log_covers(&R.log[i], s))
            continue;
        if (shown++ == 12) {
            n += (size_t)snprintf(out + n, outlen - n, ", ...");
            break;
        }
        n += (size_t)snprintf(out + n, outlen - n, ", %u (op log #%u)", R.log[i].val, i);
    }
}

/* ------------------------------------------------------------------ */
/* Choosing ranges. */

static void pick_range(uint64_t max, uint32_t *s0, uint32_t *n)
{
    unsigned a = (unsigned)rng_below(&R.rng, 100);
    uint64_t maxs = max / SECTOR;
    uint64_t len = a < 60 ? 1 + rng_below(&R.rng, 8) :
                   a < 90 ? 1 + rng_below(&R.rng, 32) : 1 + rng_below(&R.rng, maxs);
    unsigned b = (unsigned)rng_below(&R.rng, 100);
    uint64_t align = b < 50 ? 1 : b < 80 ? VD_SUBBLOCK_SIZE / SECTOR : R.bs / SECTOR;
    if (align > 1 && (len + align - 1) / align * align <= maxs)
        len = (len + align - 1) / align * align;
    if (len > R.nsec)
        len = R.nsec;
    uint64_t off = rng_chance(&R.rng, 5) ? R.nsec - len :
                   rng_below(&R.rng, R.nsec - len + 1) / align * align;
    *s0 = (uint32_t)off;
    *n = (uint32_t)len;
}

/* ------------------------------------------------------------------ */
/* Workload operations.  Before the power fails every error is a failure;
 * an operation the power failed in may do anything but crash. */

static bool op_ok(int rc, const char *what)
{
    if (rc >= 0)
        return true;
    if (shim_failed())
        return false;
    check_rc(rc, what);
    return false;
}

static void op_write(void)
{
    uint32_t s0, n;
    pick_range(MAX_WRITE, &s0, &n);
    uint32_t id = R.next_id++;
    for (uint32_t i = 0; i < n; i++)
        sector_fill(R.buf + (size_t)i * SECTOR, id, s0 + i);
    unsigned flags = rng_chance(&R.rng, 10) ? VD_IO_FUA : 0;
    log_add(id, s0, n);
    int rc = vd_write(R.chain, R.buf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR, flags);
    if (R.cfg->verbose)
        printf("    #%u write id %u sectors [%u, +%u)%s: %d\n", R.opno, id, s0, n,
               flags ? " FUA" : "", rc);
    if (op_ok(rc, "vd_write") && flags && !shim_failed())
        model_durable_last();
}

/* Fills the whole disk with data (sequential writes of 64 KiB to 1 MiB), so
 * that most sectors have a non-zero durable value: a lost data write under
 * a durable index then reads as zeroes, which the model does not allow. */
static void fill_disk(void)
{
    for (uint32_t s0 = 0; s0 < R.nsec;) {
        uint32_t n = (uint32_t)(128 + rng_below(&R.rng, MAX_ZERO / SECTOR - 128 + 1));
        if (n > R.nsec - s0)
            n = R.nsec - s0;
        uint32_t id = R.next_id++;
        for (uint32_t i = 0; i < n; i++)
            sector_fill(R.buf + (size_t)i * SECTOR, id, s0 + i);
        log_add(id, s0, n);
        check_rc(vd_write(R.chain, R.buf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR, 0),
                 "vd_write (filling the disk)");
        s0 += n;
    }
}

static void op_zero(bool discard)
{
    uint32_t s0, n;
    pick_range(rng_chance(&R.rng, 30) ? MAX_ZERO : MAX_WRITE, &s0, &n);
    unsigned flags = !discard && rng_chance(&R.rng, 10) ? VD_IO_FUA : 0;
    log_add(0, s0, n);
    int rc = discard ? vd_discard(R.chain, (uint64_t)s0 * SECTOR, (uint64_t)n * SECTOR) :
             vd_zero(R.chain, (uint64_t)s0 * SECTOR, (uint64_t)n * SECTOR, flags);
    if (R.cfg->verbose)
        printf("    #%u %s sectors [%u, +%u)%s: %d\n", R.opno,
               discard ? "discard" : "zero", s0, n, flags ? " FUA" : "", rc);
    if (op_ok(rc, discard ? "vd_discard" : "vd_zero") && flags && !shim_failed())
        model_durable_last();
}

static void op_flush(void)
{
    int rc = vd_flush(R.chain);
    if (R.cfg->verbose)
        printf("    #%u flush: %d\n", R.opno, rc);
    if (op_ok(rc, "vd_flush") && !shim_failed())
        model_durable_all();
}

static char *new_layer_path(void)
{
    char *p;
    if (asprintf(&p, "%s/layer-%02u.vdk", R.dir, R.nlayers) < 0)
        fail("out of memory");
    return p;
}

static void op_push(void)
{
    if (R.nlayers >= MAX_LAYERS) {
        op_flush();
        return;
    }
    char *p = new_layer_path();
    int rc = vd_chain_push(R.chain, p);
    if (R.cfg->verbose)
        printf("    #%u push %s: %d\n", R.opno, p, rc);
    if (shim_failed()) {
        /* the power failed inside: the new delta may or may not exist */
        R.push_target = p;
        return;
    }
    check_rc(rc, "vd_chain_push");
    R.paths[R.nlayers++] = p;
    model_durable_all();
    if (vd_chain_depth(R.chain) != R.nlayers)
        fail("depth %u after a push, expected %u", vd_chain_depth(R.chain), R.nlayers);
}

/* A clean close (a durable point) and a read-write open of the top. */
static void op_reopen(void)
{
    struct vd_chain *c = R.chain;
    R.chain = NULL;
    int rc = vd_chain_close(c);             /* frees the chain in every case */
    if (R.cfg->verbose)
        printf("    #%u close: %d\n", R.opno, rc);
    if (shim_failed()) {
        R.reopen_cut = true;
        return;
    }
    check_rc(rc, "vd_chain_close");
    model_durable_all();
    struct vd_open_opts o = { .flags = VD_OPEN_RDWR };
    rc = vd_chain_open(R.ctx, R.paths[R.nlayers - 1], &o, &R.chain);
    if (R.cfg->verbose)
        printf("    #%u open: %d\n", R.opno, rc);
    if (shim_failed()) {
        R.reopen_cut = true;
        if (rc < 0)
            R.chain = NULL;
        return;
    }
    check_rc(rc, "vd_chain_open");
}

static void op_read(void)
{
    uint32_t s0, n;
    pick_range(CHUNK, &s0, &n);
    int rc = vd_read(R.chain, R.rbuf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR);
    if (!op_ok(rc, "vd_read") || shim_failed())
        return;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = 0;
        char why[160];
        const uint8_t *p = R.rbuf + (size_t)i * SECTOR;
        bool ok = sector_decode(p, s0 + i, &v, why, sizeof(why));
        if (ok && v != R.cur[s0 + i])
            snprintf(why, sizeof(why), "the value of write %u", v);
        if (!ok || v != R.cur[s0 + i])
            fail("read before the crash: sector %u holds %s, expected %u",
                 s0 + i, why, R.cur[s0 + i]);
    }
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
    return OP_WRITE;
}

/* State-changing file operations per kind of operation (statistics). */
static uint64_t calls_by_kind[OP_KINDS], ops_by_kind[OP_KINDS];

static void do_op(enum op_kind k)
{
    uint64_t c0 = shim_calls();
    R.phase = op_names[k];
    switch (k) {
    case OP_WRITE: op_write(); break;
    case OP_ZERO: op_zero(false); break;
    case OP_DISCARD: op_zero(true); break;
    case OP_FLUSH: op_flush(); break;
    case OP_PUSH: op_push(); break;
    case OP_REOPEN: op_reopen(); break;
    case OP_READ: op_read(); break;
    default: break;
    }
    calls_by_kind[k] += shim_calls() - c0;
    ops_by_kind[k]++;
}

/* ------------------------------------------------------------------ */
/* After the crash. */

/* Findings of vd_layer_check, shown with -v (the replay command has it). */
static void report_finding(void *opaque, const char *msg)
{
    if (R.cfg->verbose)
        fprintf(stderr, "    check %s: %s\n", (const char *)opaque, msg);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* (b): every sector holds an acceptable value. */
static void verify_sectors(void)
{
    R.phase = "verifying sectors";
    for (uint32_t s0 = 0; s0 < R.nsec; s0 += CHUNK / SECTOR) {
        uint32_t n = R.nsec - s0 < CHUNK / SECTOR ? R.nsec - s0 : CHUNK / SECTOR;
        memset(R.rbuf, 0x5a, (size_t)n * SECTOR);
        check_rc(vd_read(R.chain, R.rbuf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR),
                 "vd_read after the crash");
        for (uint32_t i = 0; i < n; i++) {
            uint32_t s = s0 + i, v = 0;
            char why[160], allowed[512];
            bool ok = sector_decode(R.rbuf + (size_t)i * SECTOR, s, &v, why, sizeof(why));
            if (ok && !acceptable(s, v))
                snprintf(why, sizeof(why), "the value of write %u", v);
            if (!ok || !acceptable(s, v)) {
                struct vd_extent e = { 0 };
                vd_block_status(R.chain, (uint64_t)s * SECTOR, SECTOR, &e, 1);
                describe_allowed(s, allowed, sizeof(allowed));
                fail("sector %u (offset %" PRIu64 ") holds %s; allowed: %s;"
                     " block status: type %d depth %u", s, (uint64_t)s * SECTOR,
                     why, allowed, (int)e.type, e.depth);
            }
            T.sectors++;
            if (v != R.dur[s])
                T.sectors_newer++;
            else if (R.cur[s] != R.dur[s])
                T.sectors_older++;
        }
    }
}

/* Checks one layer file; returns its result.  allow_bad: a half-created
 * delta, which may be unreadable. */
static int check_layer(const char *path, struct vd_check_result *res, bool allow_bad,
                       bool top)
{
    memset(res, 0, sizeof(*res));
    unsigned flags = g_digest == VD_DIGEST_SHA256 ? VD_CHECK_VERIFY : 0;
    int rc = vd_layer_check(path, flags, res, report_finding, (void *)path);
    if (allow_bad)
        return rc;
    check_rc(rc, "vd_layer_check");
    if (res->corruptions)
        fail("vd_layer_check %s: %" PRIu64 " corruptions (%" PRIu64 " leaked bytes)",
             path, res->corruptions, res->leaked_bytes);
    if (res->digest_mismatches) {
        /* reported at the end, after the sectors were checked too */
        if (T.digest_runs++ == 0)
            T.digest_first_run = R.index;
        T.digest_mismatches += res->digest_mismatches;
        T.digest_below += !top;
        if (R.cfg->verbose)
            printf("    %s (%s): %" PRIu64 " blocks do not match their digest\n", path,
                   top ? "top" : "below the top", res->digest_mismatches);
    }
    if (res->leaked_bytes) {
        T.leaks_runs++;
        T.leaked_bytes += res->leaked_bytes;
    }
    return rc;
}

static void open_top(const char *path, unsigned flags)
{
    struct vd_open_opts o = { .flags = flags };
    check_rc(vd_chain_open(R.ctx, path, &o, &R.chain), "vd_chain_open after the crash");
}

/* (c): new writes work on the reopened chain, and it closes clean. */
static void new_writes_and_close(const char *top)
{
    R.phase = "writing after the crash";
    for (int k = 0; k < 4; k++) {
        uint32_t s0, n;
        pick_range(MAX_WRITE, &s0, &n);
        uint32_t id = R.next_id++;
        for (uint32_t i = 0; i < n; i++)
            sector_fill(R.buf + (size_t)i * SECTOR, id, s0 + i);
        check_rc(vd_write(R.chain, R.buf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR, 0),
                 "vd_write after the crash");
        check_rc(vd_read(R.chain, R.rbuf, (uint64_t)s0 * SECTOR, (size_t)n * SECTOR),
                 "vd_read after the crash");
        if (memcmp(R.buf, R.rbuf, (size_t)n * SECTOR) != 0)
            fail("a write after the crash does not read back (sectors [%u, +%u))", s0, n);
    }
    check_rc(vd_flush(R.chain), "vd_flush after the crash");
    struct vd_chain *c = R.chain;
    R.chain = NULL;
    check_rc(vd_chain_close(c), "vd_chain_close after the crash");

    R.phase = "repairing";
    struct vd_check_result res;
    memset(&res, 0, sizeof(res));
    check_rc(vd_layer_check(top, VD_CHECK_REPAIR, &res, report_finding, (void *)top),
             "vd_layer_check --repair");
    if (res.corruptions)
        fail("vd_layer_check --repair %s: %" PRIu64 " corruptions", top, res.corruptions);
    memset(&res, 0, sizeof(res));
    unsigned vflags = g_digest == VD_DIGEST_SHA256 ? VD_CHECK_VERIFY : 0;
    check_rc(vd_layer_check(top, vflags, &res, report_finding, (void *)top), "vd_layer_check");
    if (res.corruptions || res.leaked_bytes || res.dirty || res.digest_mismatches ||
        res.digest_stale)
        fail("%s after new writes, a clean close and repair: %" PRIu64 " corruptions,"
             " %" PRIu64 " leaked bytes, dirty %d, %" PRIu64 " digest mismatches, %" PRIu64
             " stale digests", top, res.corruptions, res.leaked_bytes, (int)res.dirty,
             res.digest_mismatches, res.digest_stale);
}

static void after_crash(void)
{
    const char *old_top = R.paths[R.nlayers - 1];
    bool ambiguous = R.push_target != NULL;

    /* (a) every layer file checks without corruption; (c) dirty flag */
    R.phase = "checking layers after the crash";
    struct vd_check_result res;
    for (unsigned i = 0; i < R.nlayers; i++) {
        check_layer(R.paths[i], &res, false, i == R.nlayers - 1);
        if (i == R.nlayers - 1 && res.dirty)
            T.dirty_seen++;
    }
    /* the open (or push) that made it the top completed before the power
     * failed, and vd_chain_open marks a read-write top dirty until close */
    if (!ambiguous && !R.reopen_cut) {
        struct vd_layer_info info;
        check_rc(vd_layer_info(old_top, &info), "vd_layer_info after the crash");
        T.dirty_required++;
        if (!info.dirty)
            fail("the top layer %s is not marked dirty after the crash", old_top);
    }

    /* a delta the power failed in the making: used if it came out whole */
    const char *top = old_top;
    bool new_ok = false;
    if (ambiguous && file_exists(R.push_target)) {
        int rc = check_layer(R.push_target, &res, true, true);
        new_ok = rc == 0 && res.corruptions == 0;
        if (new_ok) {
            struct vd_open_opts o = { .flags = VD_OPEN_RDWR | AFTER_CRASH };
            rc = vd_chain_open(R.ctx, R.push_target, &o, &R.chain);
            if (rc < 0) {
                if (R.cfg->verbose)
                    printf("    new delta checks clean but does not open: %s\n",
                           vd_errmsg());
                new_ok = false;
            }
        }
        if (new_ok) {
            if (res.leaked_bytes) {
                T.leaks_runs++;
                T.leaked_bytes += res.leaked_bytes;
            }
            top = R.push_target;
            R.paths[R.nlayers++] = R.push_target;
            R.push_target = NULL;
            T.push_new_top++;
        }
    }
    R.phase = "reopening after the crash";
    bool readonly = false;
    if (!R.chain) {
        struct vd_open_opts o = { .flags = VD_OPEN_RDWR | AFTER_CRASH };
        int rc = vd_chain_open(R.ctx, old_top, &o, &R.chain);
        if (rc == -EROFS && ambiguous) {
            /* the push froze the old top and then the power failed */
            readonly = true;
            T.push_old_frozen++;
            open_top(old_top, AFTER_CRASH);
        } else {
            check_rc(rc, "vd_chain_open (read-write) after the crash");
        }
        if (ambiguous)
            T.push_old_top++;
    }
    if (vd_chain_depth(R.chain) != R.nlayers || vd_chain_size(R.chain) != R.size)
        fail("reopened chain: depth %u size %" PRIu64 ", expected %u and %" PRIu64,
             vd_chain_depth(R.chain), vd_chain_size(R.chain), R.nlayers, R.size);

    /* (b) */
    verify_sectors();

    /* (c) */
    if (readonly) {
        struct vd_chain *c = R.chain;
        R.chain = NULL;
        check_rc(vd_chain_close(c), "vd_chain_close");
        if (asprintf(&R.fresh, "%s/fresh.vdk", R.dir) < 0)
            fail("out of memory");
        struct vd_create_opts co = { .parent = old_top };
        check_rc(vd_layer_create(R.fresh, &co, NULL), "vd_layer_create over the old top");
        top = R.fresh;
        open_top(top, VD_OPEN_RDWR | AFTER_CRASH);
    }
    new_writes_and_close(top);
}

/* ------------------------------------------------------------------ */
/* One run. */

static void setup(const struct config *cfg, unsigned index)
{
    memset(&R, 0, sizeof(R));
    R.cfg = cfg;
    R.index = index;
    /* runs must not share (shifted) streams: hash seed and index together */
    R.rng.s = mix64(cfg->seed ^ mix64(index + 0x51ed2701ull));
    R.salt = rng_next(&R.rng);
    R.bs = rng_chance(&R.rng, 50) ? 4096 : 65536;
    R.size = (8 + rng_below(&R.rng, 9)) << 20;
    if (rng_chance(&R.rng, 30))
        R.size -= SECTOR * (1 + rng_below(&R.rng, 255));
    R.nsec = (uint32_t)(R.size / SECTOR);
    R.next_id = 1;
    R.cur = xmalloc(R.nsec * sizeof(uint32_t));
    R.dur = xmalloc(R.nsec * sizeof(uint32_t));
    R.minlog = xmalloc(R.nsec * sizeof(uint32_t));
    R.buf = xmalloc(MAX_ZERO);
    R.rbuf = xmalloc(CHUNK);
    snprintf(R.dir, sizeof(R.dir), "%s/vdisk-crash-XXXXXX", cfg->dir);
    if (!mkdtemp(R.dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", R.dir, strerror(errno));
        exit(1);
    }
}

static void teardown(void)
{
    char *all[MAX_LAYERS + 4];
    unsigned n = 0;
    for (unsigned i = 0; i < R.nlayers; i++)
        all[n++] = R.paths[i];
    if (R.push_target)
        all[n++] = R.push_target;
    if (R.fresh)
        all[n++] = R.fresh;
    for (unsigned i = 0; i < n; i++) {
        if (!R.cfg->keep)
            unlink(all[i]);
        free(all[i]);
    }
    if (!R.cfg->keep)
        rmdir(R.dir);
    if (R.ctx)
        vd_ctx_free(R.ctx);
    free(R.cur);
    free(R.dur);
    free(R.minlog);
    free(R.log);
    free(R.id_log);
    free(R.buf);
    free(R.rbuf);
    memset(&R, 0, sizeof(R));
}

static void run_one(const struct config *cfg, unsigned index)
{
    /* Without --digest, every fourth crash point uses a SHA-256 layer. */
    g_digest = cfg->digest_mixed ? (index % 4 == 3 ? VD_DIGEST_SHA256 : VD_DIGEST_NONE)
                                 : (enum vd_digest)cfg->digest;
    setup(cfg, index);
    shim_reset();
    shim_set_real_sync(cfg->real_sync);
    vdi_set_backend(shim_backend());

    /* a chain: a base (usually full of data) and a few deltas, with data
     * in each */
    R.phase = "setup";
    check_rc(vd_ctx_new(0, &R.ctx), "vd_ctx_new");
    R.paths[0] = new_layer_path();
    R.nlayers = 1;
    struct vd_create_opts co = { .size = R.size, .block_size = R.bs,
                                 .digest = g_digest };
    check_rc(vd_layer_create(R.paths[0], &co, NULL), "vd_layer_create");
    open_top(R.paths[0], VD_OPEN_RDWR);
    if (rng_chance(&R.rng, 75))
        fill_disk();
    unsigned deltas = (unsigned)rng_below(&R.rng, 4);
    for (unsigned d = 0; d <= deltas; d++) {
        unsigned n = 2 + (unsigned)rng_below(&R.rng, 12);
        for (unsigned i = 0; i < n; i++) {
            unsigned a = (unsigned)rng_below(&R.rng, 100);
            do_op(a < 75 ? OP_WRITE : a < 88 ? OP_ZERO : OP_DISCARD);
        }
        if (d < deltas)
            do_op(OP_PUSH);
    }

    /* the workload, with the power failure somewhere in it */
    R.nops = 1 + (unsigned)rng_below(&R.rng, cfg->ops);
    R.crash_op = (unsigned)rng_below(&R.rng, R.nops);
    unsigned c = (unsigned)rng_below(&R.rng, 100);
    R.countdown = c < 25 ? 0 : c < 55 ? rng_below(&R.rng, 4) :
                  c < 85 ? rng_below(&R.rng, 16) : rng_below(&R.rng, 64);
    if (cfg->verbose)
        printf("  run %u: block size %u, size %" PRIu64 ", %u layers, %u ops, power"
               " fails at op %u after %" PRIu64 " file operations\n", index, R.bs,
               R.size, R.nlayers, R.nops, R.crash_op, R.countdown);
    /* Most of what crash safety rests on happens inside flushes and pushes
     * (index updates, syncs): in some runs the power fails inside the
     * first flush or push from crash_op on. */
    bool at_sync = rng_chance(&R.rng, 40);
    bool crashed = false;
    for (R.opno = 0; R.opno < R.nops && !crashed; R.opno++) {
        enum op_kind k = pick_op();
        bool here = at_sync ? R.opno >= R.crash_op &&
                              (k == OP_FLUSH || k == OP_PUSH || k == OP_REOPEN) :
                    R.opno == R.crash_op;
        if (here) {
            R.crash_op = R.opno;
            R.crash_kind = k;
            if (at_sync)        /* a flush makes ~4 file operations, a push ~12 */
                R.countdown = rng_below(&R.rng, k == OP_FLUSH ? 6 : 16);
            shim_arm(R.countdown);
        }
        do_op(k);
        T.ops++;
        if (here) {
            R.failed_inside = shim_failed();
            crashed = true;
        }
    }
    if (!crashed)
        R.crash_op = R.nops;    /* after the last operation */
    shim_fail_now();
    if (R.failed_inside)
        T.inside[R.crash_kind]++;
    else
        T.between++;
    uint64_t pending = shim_pending();

    /* the crash */
    R.phase = "crash";
    if (R.chain)
        vdi_chain_abandon(R.chain);
    R.chain = NULL;
    vd_ctx_free(R.ctx);
    R.ctx = NULL;
    static const struct shim_policy policies[] = {
        { 0, 1, 0, 0 }, { 1, 0, 0, 0 }, { 1, 1, 1, 30 }, { 8, 1, 1, 50 },
        { 1, 8, 1, 50 }, { 1, 0, 1, 0 }, { 0, 0, 1, 100 },
    };
    const struct shim_policy *pol =
        &policies[rng_below(&R.rng, sizeof(policies) / sizeof(policies[0]))];
    int rc = shim_crash(rng_next(&R.rng), pol);
    vdi_set_backend(NULL);
    if (rc < 0)
        fail("the simulation itself failed: %s", strerror(-rc));
    if (cfg->verbose)
        printf("  run %u: power failed %s op %u (%s), %" PRIu64 " writes pending,"
               " policy keep/drop/tear %u/%u/%u\n", index,
               R.failed_inside ? "inside" : "after", R.crash_op,
               op_names[R.crash_kind], pending, pol->keep, pol->drop, pol->tear);

    check_rc(vd_ctx_new(0, &R.ctx), "vd_ctx_new");
    after_crash();
    T.runs++;
    teardown();
}

/* ------------------------------------------------------------------ */

static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [--seed N] [--runs N] [--ops N] [--run I] [--digest none|sha256]\n"
            "       [--dir DIR] [--keep] [--real-sync] [-v]\n"
            "  --runs: crash points (default %u); --ops: most workload operations\n"
            "  per run (default %u); --run: replay only run I of the seed\n",
            argv0, DEFAULT_RUNS, DEFAULT_OPS);
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
        .seed = DEFAULT_SEED, .runs = DEFAULT_RUNS, .ops = DEFAULT_OPS,
        .only_run = -1, .digest = VD_DIGEST_NONE, .digest_mixed = true, .argv0 = argv[0],
    };
    const char *tmp = getenv("TMPDIR");
    cfg.dir = tmp && *tmp ? tmp : "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--seed") && v) {
            cfg.seed = parse_u64(argv[0], v);
            i++;
        } else if (!strcmp(a, "--runs") && v) {
            cfg.runs = (unsigned)parse_u64(argv[0], v);
            i++;
        } else if (!strcmp(a, "--ops") && v) {
            cfg.ops = (unsigned)parse_u64(argv[0], v);
            if (cfg.ops == 0)
                usage(argv[0], 2);
            i++;
        } else if (!strcmp(a, "--run") && v) {
            cfg.only_run = (long)parse_u64(argv[0], v);
            i++;
        } else if (!strcmp(a, "--digest") && v) {
            cfg.digest_mixed = false;
            if (!strcmp(v, "none"))
                cfg.digest = VD_DIGEST_NONE;
            else if (!strcmp(v, "sha256"))
                cfg.digest = VD_DIGEST_SHA256;
            else
                usage(argv[0], 2);
            i++;
        } else if (!strcmp(a, "--dir") && v) {
            cfg.dir = v;
            i++;
        } else if (!strcmp(a, "--keep")) {
            cfg.keep = true;
        } else if (!strcmp(a, "--real-sync")) {
            cfg.real_sync = true;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            cfg.verbose = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(argv[0], 0);
        } else {
            usage(argv[0], 2);
        }
    }

    double t0 = now_sec();
    printf("test-crash: seed %" PRIu64 ", %u crash points, up to %u operations each\n",
           cfg.seed, cfg.only_run >= 0 ? 1 : cfg.runs, cfg.ops);
    fflush(stdout);
    unsigned first = cfg.only_run >= 0 ? (unsigned)cfg.only_run : 0;
    unsigned last = cfg.only_run >= 0 ? first + 1 : cfg.runs;
    unsigned step = (last - first) / 10 ? (last - first) / 10 : 1;
    for (unsigned r = first; r < last; r++) {
        run_one(&cfg, r);
        if ((r - first + 1) % step == 0 && !cfg.verbose) {
            struct shim_stats s;
            shim_get_stats(&s);
            printf("  %u/%u crash points, %" PRIu64 " writes dropped, %" PRIu64
                   " torn, %.1f s\n", r - first + 1, last - first, s.dropped, s.torn,
                   now_sec() - t0);
            fflush(stdout);
        }
    }

    struct shim_stats s;
    shim_get_stats(&s);
    printf("crash points: %u (power failed inside an operation: write %u, zero %u,"
           " discard %u, flush %u, push %u, close/open %u, read %u; between"
           " operations: %u)\n", T.runs, T.inside[OP_WRITE], T.inside[OP_ZERO],
           T.inside[OP_DISCARD], T.inside[OP_FLUSH], T.inside[OP_PUSH],
           T.inside[OP_REOPEN], T.inside[OP_READ], T.between);
    printf("workload: %" PRIu64 " operations; file operations through the shim:"
           " %" PRIu64 " pwrite, %" PRIu64 " punch, %" PRIu64 " truncate, %" PRIu64
           " sync\n", T.ops, s.pwrites, s.punches, s.truncates, s.syncs);
    printf("unsynced writes at the crash: %" PRIu64 ": %" PRIu64 " kept, %" PRIu64
           " dropped, %" PRIu64 " torn (%" PRIu64 " sectors restored); %" PRIu64
           " made after the failure undone; %" PRIu64 " files shrunk to their synced"
           " size\n", s.pending, s.kept, s.dropped, s.torn, s.sectors_torn,
           s.after_failure, s.size_reverts);
    printf("sectors verified: %" PRIu64 " (%" PRIu64 " held a value newer than the"
           " last flush, %" PRIu64 " an older value than the last write)\n",
           T.sectors, T.sectors_newer, T.sectors_older);
    printf("layers with leaked space after the crash: %" PRIu64 " (%" PRIu64
           " bytes, allowed); top dirty: %" PRIu64 " seen, %" PRIu64 " required;"
           " pushes cut by the crash: %u new top usable, %u old top used (%u frozen)\n",
           T.leaks_runs, T.leaked_bytes, T.dirty_seen, T.dirty_required,
           T.push_new_top, T.push_old_top, T.push_old_frozen);
    printf("file operations per workload operation:");
    for (int k = 0; k < OP_KINDS; k++)
        printf(" %s %.1f%s", op_names[k], ops_by_kind[k] ?
               (double)calls_by_kind[k] / (double)ops_by_kind[k] : 0.0,
               k + 1 < OP_KINDS ? "," : "\n");
    fflush(stdout);
    if (T.digest_runs) {
        fprintf(stderr, "FAIL: check --verify found %" PRIu64 " blocks that do not"
                " match their digest after the crash, in %" PRIu64 " layer files"
                " (%" PRIu64 " of them below the top; the sectors held allowed"
                " values); first: run %u\n"
                "replay: %s --seed %" PRIu64 " --run %u --ops %u --digest sha256 -v\n",
                T.digest_mismatches, T.digest_runs, T.digest_below, T.digest_first_run,
                cfg.argv0,
                cfg.seed, T.digest_first_run, cfg.ops);
        return 1;
    }
    /* across many crash points some unsynced write must have been lost; a
     * replay of one run may legitimately have had none */
    if (s.pwrites == 0 || (s.dropped + s.torn == 0 && cfg.only_run < 0)) {
        fprintf(stderr, "FAIL: no unsynced write was ever dropped or torn: the shim"
                " is not in the I/O path, or nothing was left unsynced\n");
        return 1;
    }
    printf("test-crash: PASS, seed %" PRIu64 ", %u crash points, %.1f s\n",
           cfg.seed, T.runs, now_sec() - t0);
    return 0;
}
