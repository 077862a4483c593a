/*
 * bench-read.c - 4 KiB read throughput through chains of depth 1, 16 and 64.
 *
 * Builds (once, in --dir) a base layer fully written with data and 63 delta
 * layers stacked on it with vd_chain_push, each holding a few random 4 KiB
 * writes, so that every depth is a real chain.  Then, for each depth asked
 * for, opens the chain read-only with the default O_DIRECT and keeps --qd
 * asynchronous 4 KiB reads in flight until --ops have completed.
 *
 * Access patterns:
 *   random     uniform random 4 KiB-aligned offsets over the whole disk
 *   step=S     the sequence of `qemu-img bench -s 4096 -S S` (qemu 7.2 to
 *              10.0): the first read at 0, each next one S bytes further,
 *              modulo the disk size; --wrap usable mirrors qemu >= 10.1,
 *              which wraps modulo (size - 4096)
 * so that the same reads can be timed against qemu-img bench on a qcow2
 * chain (tests/bench/run-bench.sh).
 *
 * Figures are printed, never asserted.  One line per run, for scripts:
 *   result depth=D pattern=P ops=N secs=T iops=I mbps=M open_ms=O
 * then a table and the ratio depth 64 / depth 1 (goal: >= 0.9).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"

#define MiB (1024ull * 1024)
#define IO_SIZE 4096u
#define MAX_DEPTH 64u
#define WRITES_PER_DELTA 8u

struct opts {
    const char *dir;
    uint64_t size;
    uint64_t ops;
    unsigned qd;
    unsigned depths[8];
    unsigned ndepths;
    const char *patterns[4];
    unsigned npatterns;
    bool wrap_usable;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-read: %s: %s (%s)\n", what, strerror(rc < 0 ? -rc : rc),
            vd_errmsg());
    exit(1);
}

static void layer_path(char *out, size_t n, const char *dir, unsigned depth)
{
    /* The file whose chain has `depth` layers: the base, or delta depth-1. */
    if (depth == 1)
        snprintf(out, n, "%s/base.vdk", dir);
    else
        snprintf(out, n, "%s/delta-%02u.vdk", dir, depth - 1);
}

/* ------------------------------------------------------------------ */
/* Building the chain                                                  */

static void build_chain(struct vd_ctx *ctx, const struct opts *o)
{
    char path[4200], marker[4200];
    snprintf(marker, sizeof(marker), "%s/chain-ready", o->dir);
    if (access(marker, F_OK) == 0)
        return;
    double t0 = now();
    layer_path(path, sizeof(path), o->dir, 1);
    unlink(path);
    struct vd_create_opts co = { .size = o->size, .block_size = 65536 };
    int rc = vd_layer_create(path, &co, NULL);
    if (rc < 0)
        die(path, rc);
    struct vd_open_opts oo = { .flags = VD_OPEN_RDWR };
    struct vd_chain *c;
    if ((rc = vd_chain_open(ctx, path, &oo, &c)) < 0)
        die(path, rc);
    uint8_t *buf;
    if (posix_memalign((void **)&buf, 4096, 1 * MiB))
        die("memory", -ENOMEM);
    uint64_t seed = 1;
    for (uint64_t off = 0; off < o->size; off += 1 * MiB) {
        for (size_t i = 0; i < 1 * MiB; i += 8) {
            uint64_t v = splitmix(&seed);
            memcpy(buf + i, &v, 8);
        }
        uint64_t len = o->size - off < 1 * MiB ? o->size - off : 1 * MiB;
        if ((rc = vd_write(c, buf, off, (size_t)len, 0)) < 0)
            die("write", rc);
    }
    for (unsigned d = 2; d <= MAX_DEPTH; d++) {
        layer_path(path, sizeof(path), o->dir, d);
        unlink(path);
        if ((rc = vd_chain_push(c, path)) < 0)
            die(path, rc);
        for (unsigned w = 0; w < WRITES_PER_DELTA; w++) {
            uint64_t off = splitmix(&seed) % (o->size / IO_SIZE) * IO_SIZE;
            memset(buf, (int)(d * 16 + w), IO_SIZE);
            if ((rc = vd_write(c, buf, off, IO_SIZE, 0)) < 0)
                die("write", rc);
        }
    }
    if ((rc = vd_chain_close(c)) < 0)
        die("close", rc);
    free(buf);
    FILE *f = fopen(marker, "w");
    if (f)
        fclose(f);
    printf("built a chain of %u layers over a %llu MiB base in %.1f s\n", MAX_DEPTH,
           (unsigned long long)(o->size / MiB), now() - t0);
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

struct run;

struct slot {
    struct run *r;
    uint8_t *buf;
};

struct run {
    struct vd_chain *c;
    uint64_t size;
    uint64_t n, issued, done;
    int err;
    bool step;
    uint64_t step_size, next_off, wrap;
    uint64_t seed;
};

static uint64_t next_offset(struct run *r)
{
    if (!r->step)
        return splitmix(&r->seed) % (r->size / IO_SIZE) * IO_SIZE;
    /* qemu-img bench: use the offset, then advance it and wrap. */
    uint64_t off = r->next_off;
    r->next_off = (r->next_off + r->step_size) % r->wrap;
    return off;
}

static void submit(struct slot *s);

static void read_done(void *opaque, int res)
{
    struct slot *s = opaque;
    struct run *r = s->r;
    r->done++;
    if (res < 0 && !r->err)
        r->err = res;
    if (r->issued < r->n && !r->err)
        submit(s);
}

static void submit(struct slot *s)
{
    struct run *r = s->r;
    uint64_t off = next_offset(r);
    r->issued++;
    int rc = vd_aio_read(r->c, s->buf, off, IO_SIZE, read_done, s);
    if (rc < 0) {
        r->issued--;
        if (!r->err)
            r->err = rc;
    }
}

static void run_one(struct vd_ctx *ctx, const struct opts *o, unsigned depth,
                    const char *pattern, double *iops_out)
{
    char path[4200];
    layer_path(path, sizeof(path), o->dir, depth);
    struct run r = { .n = o->ops, .seed = 12345 + depth };
    if (strncmp(pattern, "step=", 5) == 0) {
        r.step = true;
        r.step_size = strtoull(pattern + 5, NULL, 0);
    } else if (strcmp(pattern, "random") != 0) {
        fprintf(stderr, "bench-read: unknown pattern %s\n", pattern);
        exit(2);
    }
    double t0 = now();
    int rc = vd_chain_open(ctx, path, NULL, &r.c);
    if (rc < 0)
        die(path, rc);
    double open_ms = (now() - t0) * 1000;
    if (vd_chain_depth(r.c) != depth) {
        fprintf(stderr, "bench-read: %s has depth %u, expected %u\n", path,
                vd_chain_depth(r.c), depth);
        exit(1);
    }
    r.size = vd_chain_size(r.c);
    r.wrap = o->wrap_usable ? r.size - IO_SIZE : r.size;

    struct slot *slots = calloc(o->qd, sizeof(*slots));
    if (!slots)
        die("memory", -ENOMEM);
    for (unsigned i = 0; i < o->qd; i++) {
        slots[i].r = &r;
        if (posix_memalign((void **)&slots[i].buf, 4096, IO_SIZE))
            die("memory", -ENOMEM);
    }
    t0 = now();
    for (unsigned i = 0; i < o->qd && r.issued < r.n; i++)
        submit(&slots[i]);
    while (r.done < r.issued) {
        rc = vd_ctx_poll(ctx, -1);
        if (rc < 0)
            die("vd_ctx_poll", rc);
    }
    double secs = now() - t0;
    if (r.err)
        die("read", r.err);
    vd_chain_close(r.c);
    for (unsigned i = 0; i < o->qd; i++)
        free(slots[i].buf);
    free(slots);

    double iops = (double)r.done / secs;
    printf("result depth=%u pattern=%s ops=%llu secs=%.3f iops=%.0f mbps=%.1f open_ms=%.1f\n",
           depth, pattern, (unsigned long long)r.done, secs, iops,
           iops * IO_SIZE / 1e6, open_ms);
    fflush(stdout);
    *iops_out = iops;
}

/* ------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-read [--dir DIR] [--size MIB] [--ops N] [--qd N]\n"
            "                  [--depth D]... [--pattern random|step=S]... [--wrap size|usable]\n"
            "Defaults: a fresh temporary DIR (removed), 256 MiB, 50000 ops, qd 32,\n"
            "depths 1 16 64, pattern random.  With --dir the chain is built once\n"
            "and kept for later runs.\n");
    exit(2);
}

static void rm_chain(const char *dir)
{
    char p[4200];
    for (unsigned d = 1; d <= MAX_DEPTH; d++) {
        layer_path(p, sizeof(p), dir, d);
        unlink(p);
    }
    snprintf(p, sizeof(p), "%s/chain-ready", dir);
    unlink(p);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    struct opts o = { .size = 256 * MiB, .ops = 50000, .qd = 32 };
    static const struct option lo[] = {
        { "dir", required_argument, NULL, 'D' },
        { "size", required_argument, NULL, 's' },
        { "ops", required_argument, NULL, 'n' },
        { "qd", required_argument, NULL, 'q' },
        { "depth", required_argument, NULL, 'd' },
        { "pattern", required_argument, NULL, 'p' },
        { "wrap", required_argument, NULL, 'w' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'D': o.dir = optarg; break;
        case 's': o.size = strtoull(optarg, NULL, 0) * MiB; break;
        case 'n': o.ops = strtoull(optarg, NULL, 0); break;
        case 'q': o.qd = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'd':
            if (o.ndepths == 8)
                usage();
            o.depths[o.ndepths++] = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'p':
            if (o.npatterns == 4)
                usage();
            o.patterns[o.npatterns++] = optarg;
            break;
        case 'w': o.wrap_usable = strcmp(optarg, "usable") == 0; break;
        default: usage();
        }
    }
    if (optind != argc || o.qd == 0 || o.ops == 0 || o.size < 1 * MiB)
        usage();
    if (!o.ndepths) {
        o.depths[0] = 1;
        o.depths[1] = 16;
        o.depths[2] = 64;
        o.ndepths = 3;
    }
    for (unsigned i = 0; i < o.ndepths; i++)
        if (o.depths[i] < 1 || o.depths[i] > MAX_DEPTH)
            usage();
    if (!o.npatterns)
        o.patterns[o.npatterns++] = "random";

    char tmpdir[4096];
    bool own_dir = !o.dir;
    if (own_dir) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/bench-read.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmpdir))
            die("mkdtemp", -errno);
        o.dir = tmpdir;
    } else if (mkdir(o.dir, 0755) < 0 && errno != EEXIST) {
        die(o.dir, -errno);
    }

    struct vd_ctx *ctx;
    int rc = vd_ctx_new(o.qd * 2, &ctx);
    if (rc < 0)
        die("vd_ctx_new", rc);
    build_chain(ctx, &o);

    printf("4 KiB reads, %u in flight, %llu per run, O_DIRECT, disk %llu MiB\n", o.qd,
           (unsigned long long)o.ops, (unsigned long long)(o.size / MiB));
    double iops[4][8];
    for (unsigned p = 0; p < o.npatterns; p++)
        for (unsigned i = 0; i < o.ndepths; i++)
            run_one(ctx, &o, o.depths[i], o.patterns[p], &iops[p][i]);

    printf("\n%-18s", "pattern \\ depth");
    for (unsigned i = 0; i < o.ndepths; i++)
        printf("%12u", o.depths[i]);
    printf("   (IOPS)\n");
    for (unsigned p = 0; p < o.npatterns; p++) {
        printf("%-18s", o.patterns[p]);
        for (unsigned i = 0; i < o.ndepths; i++)
            printf("%12.0f", iops[p][i]);
        printf("\n");
        /* The goal: the deepest chain reads at >= 0.9 of a single layer. */
        unsigned lo_i = 0, hi_i = 0;
        for (unsigned i = 0; i < o.ndepths; i++) {
            if (o.depths[i] < o.depths[lo_i])
                lo_i = i;
            if (o.depths[i] > o.depths[hi_i])
                hi_i = i;
        }
        if (hi_i != lo_i)
            printf("  depth %u / depth %u = %.2f (goal >= 0.9)\n", o.depths[hi_i],
                   o.depths[lo_i], iops[p][hi_i] / iops[p][lo_i]);
    }
    vd_ctx_free(ctx);
    if (own_dir)
        rm_chain(o.dir);
    return 0;
}
