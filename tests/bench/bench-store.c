/*
 * bench-store.c - timings of the store's operations (issue 3, benchmarks).
 *
 *   bench-store ops     snapshot create, snapshot rollback and linked clone
 *                       on a 1 TiB volume, first with a handful of clones of
 *                       one template in the store, then after 1,000 linked
 *                       clones of that template exist (goal: milliseconds,
 *                       flat: the two columns alike).  Also timed: snapshot
 *                       rm of a snapshot whose layer merges with an empty
 *                       delta, and snapshot create/rollback on a clone.
 *   bench-store commit  vd_snapshot_commit time against the amount of data
 *                       changed since the snapshot, side by side in the same
 *                       run with `qemu-img commit` of the same change (a qcow2
 *                       base with the same content, an overlay with the same
 *                       writes) and with copying that much data with dd
 *                       conv=fdatasync (goal: close to copying that data).
 *
 * Figures are printed (a table for a person, then "result" lines for a
 * script), never asserted.  Every figure is the median of --runs runs.
 * The store and the qemu files go to a temporary folder under --dir
 * (default $TMPDIR or /tmp), removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
#define MAX_RUNS 101
#define QD 32

extern char **environ;

static char work[4096];          /* the temporary folder, removed at exit */
static int verbose;
static int keep;                 /* --keep: leave the temporary folder */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void cleanup(void)
{
    if (work[0] && keep)
        fprintf(stderr, "bench-store: kept %s\n", work);
    else if (work[0])
        nftw(work, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    work[0] = '\0';
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-store: %s failed: %s (%s)\n", what, strerror(rc < 0 ? -rc : rc),
            vd_errmsg());
    exit(1);
}

static void diex(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench-store: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[MAX_RUNS];
    if (n <= 0)
        return -1;
    memcpy(s, v, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double maximum(const double *v, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

static void make_work(const char *parent, const char *tag)
{
    if (!parent || !*parent) {
        parent = getenv("TMPDIR");
        if (!parent || !*parent)
            parent = "/tmp";
    }
    snprintf(work, sizeof(work), "%s/bench-store-%s.XXXXXX", parent, tag);
    if (!mkdtemp(work)) {
        int e = errno;
        work[0] = '\0';
        die("mkdtemp", -e);
    }
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

/* ------------------------------------------------------------------ */
/* Writing data                                                        */
/* ------------------------------------------------------------------ */

/* n chunks of `chunk` bytes scattered over [0, span): chunk i lies at a
 * random chunk-aligned place in the i-th of n equal strides, so the chunks
 * are distinct, spread over the whole span, and the same for a seed. */
static uint64_t chunk_offset(uint64_t i, uint64_t n, uint64_t span, uint32_t chunk,
                             uint64_t seed)
{
    uint64_t slots = span / chunk, per = slots / n;
    uint64_t s = seed * 0x100000001b3ull + i;
    uint64_t r = splitmix(&s);
    return (i * per + (per ? r % per : 0)) * chunk;
}

struct awrite {
    unsigned inflight;
    int err;
};

static void write_done(void *opaque, int result)
{
    struct awrite *a = opaque;
    a->inflight--;
    if (result < 0 && !a->err)
        a->err = result;
}

/* Writes n chunks filled with byte `pattern` into the open chain with QD
 * requests in flight: either the scattered chunks of chunk_offset(seed),
 * or (seed == 0) consecutive chunks from offset 0. */
static void write_chunks(struct vd_ctx *ctx, struct vd_chain *c, uint64_t n, uint64_t span,
                         uint32_t chunk, uint64_t seed, int pattern)
{
    uint8_t *buf;
    if (posix_memalign((void **)&buf, 4096, chunk))
        die("memory", -ENOMEM);
    memset(buf, pattern, chunk);
    struct awrite a = { 0, 0 };
    uint64_t next = 0;
    while ((next < n || a.inflight) && !a.err) {
        while (next < n && a.inflight < QD) {
            uint64_t off = seed ? chunk_offset(next, n, span, chunk, seed) : next * chunk;
            int rc = vd_aio_write(c, buf, off, chunk, 0, write_done, &a);
            if (rc < 0)
                die("vd_aio_write", rc);
            a.inflight++;
            next++;
        }
        int rc = vd_ctx_poll(ctx, -1);
        if (rc < 0)
            die("vd_ctx_poll", rc);
    }
    while (a.inflight) {
        int rc = vd_ctx_poll(ctx, -1);
        if (rc < 0)
            die("vd_ctx_poll", rc);
    }
    if (a.err)
        die("write", a.err);
    int rc = vd_flush(c);
    if (rc < 0)
        die("vd_flush", rc);
    free(buf);
}

/* Opens volume vol for writing, writes into it, closes it. */
static void write_volume(struct vd_store *st, struct vd_ctx *ctx, const char *vol, uint64_t n,
                         uint64_t span, uint32_t chunk, uint64_t seed, int pattern)
{
    struct vd_chain *c;
    int rc = vd_store_open_chain(st, ctx, vol, VD_OPEN_RDWR, &c);
    if (rc < 0)
        die("vd_store_open_chain", rc);
    write_chunks(ctx, c, n, span, chunk, seed, pattern);
    if ((rc = vd_chain_close(c)) < 0)
        die("vd_chain_close", rc);
}

/* ------------------------------------------------------------------ */
/* ops: snapshot create / rollback / linked clone, before and after    */
/* many clones                                                         */
/* ------------------------------------------------------------------ */

enum { OP_SNAP, OP_ROLLBACK, OP_SNAPRM, OP_CLONE, OP_CSNAP, OP_CROLLBACK, N_OPS };

static const char *const op_name[N_OPS] = {
    "snapshot create", "snapshot rollback", "snapshot rm (empty delta)",
    "linked clone", "clone: snapshot create", "clone: snapshot rollback",
};

struct ops_cfg {
    struct vd_store *st;
    struct vd_ctx *ctx;
    uint64_t size;
    int runs;
    unsigned next_clone;
};

static double timed_rc(int rc, const char *what, double t0)
{
    double t = now_ms() - t0;
    if (rc < 0)
        die(what, rc);
    return t;
}

/* On volume vol, `runs` times: snapshot create (timed), 1 MiB written into
 * the new delta, rollback to the snapshot (timed, discards that 1 MiB),
 * snapshot rm (timed: the snapshot's layer merges with the new, empty
 * delta, and the volume's chain is as before). */
static void snap_cycle(struct ops_cfg *k, const char *vol, int phase, double *snap,
                       double *rollback, double *snaprm)
{
    char name[VD_NAME_MAX + 1];
    for (int i = 0; i < k->runs; i++) {
        snprintf(name, sizeof(name), "p%d-s%d", phase, i);
        double t0 = now_ms();
        snap[i] = timed_rc(vd_snapshot_create(k->st, vol, name), "vd_snapshot_create", t0);
        write_volume(k->st, k->ctx, vol, 16, k->size, 64 * KiB, 1000 + i, 0x33);
        t0 = now_ms();
        rollback[i] = timed_rc(vd_snapshot_rollback(k->st, vol, name), "vd_snapshot_rollback",
                               t0);
        t0 = now_ms();
        double t = timed_rc(vd_snapshot_remove(k->st, vol, name), "vd_snapshot_remove", t0);
        if (snaprm)
            snaprm[i] = t;
    }
}

static void clone_runs(struct ops_cfg *k, int n, double *ms)
{
    char name[VD_NAME_MAX + 1];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "clone%04u", k->next_clone++);
        double t0 = now_ms();
        ms[i] = timed_rc(vd_clone(k->st, "tpl", 0, name, 0, NULL, NULL), "vd_clone", t0);
    }
}

static void measure_ops(struct ops_cfg *k, int phase, double med[N_OPS], double mx[N_OPS])
{
    double t[N_OPS][MAX_RUNS];
    if (phase == 0) {
        /* One untimed round first: the first operation on a fresh store
         * (cold files and catalog pages) is not what is measured here. */
        int runs = k->runs;
        k->runs = 1;
        snap_cycle(k, "big", 9, t[OP_SNAP], t[OP_ROLLBACK], NULL);
        clone_runs(k, 1, t[OP_CLONE]);
        snap_cycle(k, "clone0000", 9, t[OP_CSNAP], t[OP_CROLLBACK], NULL);
        k->runs = runs;
    }
    snap_cycle(k, "big", phase, t[OP_SNAP], t[OP_ROLLBACK], t[OP_SNAPRM]);
    clone_runs(k, k->runs, t[OP_CLONE]);
    snap_cycle(k, "clone0000", phase, t[OP_CSNAP], t[OP_CROLLBACK], NULL);
    for (int o = 0; o < N_OPS; o++) {
        med[o] = median(t[o], k->runs);
        mx[o] = maximum(t[o], k->runs);
    }
}

static int cmd_ops(int argc, char **argv)
{
    uint64_t size_gib = 1024, data_mib = 64;
    unsigned clones = 1000;
    int runs = 7;
    const char *dir = NULL;
    static const struct option lo[] = {
        { "dir", required_argument, NULL, 'd' },
        { "size-gib", required_argument, NULL, 's' },
        { "data-mib", required_argument, NULL, 'm' },
        { "clones", required_argument, NULL, 'c' },
        { "runs", required_argument, NULL, 'r' },
        { "verbose", no_argument, NULL, 'v' },
        { "keep", no_argument, NULL, 'K' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 's': size_gib = strtoull(optarg, NULL, 0); break;
        case 'm': data_mib = strtoull(optarg, NULL, 0); break;
        case 'c': clones = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'r': runs = atoi(optarg); break;
        case 'v': verbose = 1; break;
        case 'K': keep = 1; break;
        default: return 2;
        }
    }
    if (optind != argc || size_gib == 0 || data_mib == 0 || runs < 1 || runs > MAX_RUNS ||
        clones < (unsigned)runs + 2 || clones > 9000)
        return 2;

    make_work(dir, "ops");
    char sp[4200];
    snprintf(sp, sizeof(sp), "%s/store", work);
    struct ops_cfg k = { .size = size_gib * GiB, .runs = runs };
    int rc = vd_store_open(sp, VD_STORE_CREATE, &k.st);
    if (rc < 0)
        die("vd_store_open", rc);
    if ((rc = vd_ctx_new(256, &k.ctx)) < 0)
        die("vd_ctx_new", rc);

    /* The volume: data_mib of 64 KiB chunks spread over the whole disk;
     * its content becomes the template; then as much again is written
     * into the volume's own layer, so that both have a real index. */
    uint64_t nchunks = data_mib * MiB / (64 * KiB);
    double t0 = now_ms();
    if ((rc = vd_volume_create(k.st, "big", k.size, NULL)) < 0)
        die("vd_volume_create", rc);
    write_volume(k.st, k.ctx, "big", nchunks, k.size, 64 * KiB, 1, 0x5a);
    double t_fill = now_ms() - t0;
    t0 = now_ms();
    if ((rc = vd_template_create(k.st, "tpl", "big")) < 0)
        die("vd_template_create", rc);
    double t_tpl = now_ms() - t0;
    write_volume(k.st, k.ctx, "big", nchunks, k.size, 64 * KiB, 2, 0xa5);
    printf("volume 'big': %llu GiB, %llu MiB in 64 KiB chunks spread over it (%.0f ms); "
           "template 'tpl' made from it in %.1f ms; then %llu MiB more in its own layer\n",
           (unsigned long long)size_gib, (unsigned long long)data_mib, t_fill, t_tpl,
           (unsigned long long)data_mib);

    /* Before: the first `runs` clones are the ones timed. */
    double before[N_OPS], before_max[N_OPS], after[N_OPS], after_max[N_OPS];
    measure_ops(&k, 0, before, before_max);
    unsigned n_before = k.next_clone;

    /* Fill up to `clones` linked clones of tpl. */
    double fill[10000];
    unsigned nfill = clones - k.next_clone;
    t0 = now_ms();
    clone_runs(&k, (int)nfill, fill);
    double t_clones = now_ms() - t0;
    double fill_sorted_max = 0;
    for (unsigned i = 0; i < nfill; i++)
        if (fill[i] > fill_sorted_max)
            fill_sorted_max = fill[i];
    /* The clone times by hundreds: a trend shows here. */
    printf("%u more linked clones of 'tpl' made in %.1f s (mean %.2f ms, slowest %.1f ms); "
           "mean ms per hundred:", nfill, t_clones / 1e3, t_clones / nfill, fill_sorted_max);
    for (unsigned h = 0; h < nfill; h += 100) {
        double s = 0;
        unsigned e = h + 100 < nfill ? h + 100 : nfill;
        for (unsigned i = h; i < e; i++)
            s += fill[i];
        printf(" %.1f", s / (e - h));
    }
    printf("\n");

    measure_ops(&k, 1, after, after_max);

    struct vd_store_usage u;
    if ((rc = vd_store_usage(k.st, &u)) == 0)
        printf("store now: %u volumes, %u templates, %u layers, %.1f MiB on disk, "
               "%.1f TiB promised\n", u.volumes, u.templates, u.layers,
               (double)u.allocated / MiB, (double)u.virtual_size / (1024.0 * GiB));

    printf("\n%-27s %14s %14s %8s   (slowest of %d: before / after)\n", "operation",
           "before (ms)", "after (ms)", "ratio", runs);
    printf("%-27s %14s %14s %8s\n", "", "", "", "af/bf");
    for (int o = 0; o < N_OPS; o++)
        printf("%-27s %14.2f %14.2f %8.2f   (%.2f / %.2f)\n", op_name[o], before[o], after[o],
               before[o] > 0 ? after[o] / before[o] : 0, before_max[o], after_max[o]);
    printf("linked clones of 'tpl' in the store: before %u to %u, after %u to %u\n", 1u,
           n_before, k.next_clone - (unsigned)runs, k.next_clone);
    for (int o = 0; o < N_OPS; o++) {
        char key[64];
        snprintf(key, sizeof(key), "%s", op_name[o]);
        for (char *p = key; *p; p++)
            if (*p == ' ' || *p == ':' || *p == '(' || *p == ')')
                *p = '_';
        printf("result op=%s before_ms=%.3f after_ms=%.3f\n", key, before[o], after[o]);
    }

    vd_ctx_free(k.ctx);
    vd_store_close(k.st);
    return 0;
}

/* ------------------------------------------------------------------ */
/* commit: vdisk vs qemu-img commit vs dd                              */
/* ------------------------------------------------------------------ */

/* Runs argv, its output to the log file, and returns the wall time in ms,
 * or -1 if it could not run or failed. */
static double run(char *const argv[])
{
    char log[4200];
    snprintf(log, sizeof(log), "%s/cmd.log", work);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    double t0 = now_ms();
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "bench-store: cannot run %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    double t = now_ms() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench-store: %s failed; its output:\n", argv[0]);
        FILE *f = fopen(log, "r");
        char line[512];
        int lines = 0;
        while (f && fgets(line, sizeof(line), f) && lines++ < 20)
            fprintf(stderr, "  %s", line);
        if (f)
            fclose(f);
        return -1;
    }
    return t;
}

static int have(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char *dup = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", d, prog);
        found = access(p, X_OK) == 0;
    }
    free(dup);
    return found;
}

/* qemu-io writing n chunks of byte `pattern` into img, in one process:
 * the same chunks as write_chunks(seed). */
static double qemu_io_write(const char *img, uint64_t n, uint64_t span, uint32_t chunk,
                            uint64_t seed, int pattern)
{
    size_t argc = 0, max = 2 * n + 8;
    char **argv = calloc(max, sizeof(*argv));
    char *cmds = malloc(n * 64);
    if (!argv || !cmds)
        die("memory", -ENOMEM);
    argv[argc++] = "qemu-io";
    argv[argc++] = "-f";
    argv[argc++] = "qcow2";
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = seed ? chunk_offset(i, n, span, chunk, seed) : i * chunk;
        char *c = cmds + i * 64;
        snprintf(c, 64, "write -q -P %d %llu %u", pattern, (unsigned long long)off, chunk);
        argv[argc++] = "-c";
        argv[argc++] = c;
    }
    argv[argc++] = (char *)img;
    argv[argc] = NULL;
    double t = run(argv);
    free(argv);
    free(cmds);
    return t;
}

static int parse_list(const char *s, unsigned *out, int max)
{
    int n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *p = strtok_r(dup, ",", &save); p && n < max; p = strtok_r(NULL, ",", &save))
        out[n++] = (unsigned)strtoul(p, NULL, 0);
    free(dup);
    return n;
}

static int cmd_commit(int argc, char **argv)
{
    uint64_t base_mib = 1024;
    unsigned changes[16];
    int nchanges = parse_list("16,64,256", changes, 16);
    int runs = 5;
    uint32_t chunk = 64 * KiB;
    const char *dir = NULL, *cache = "none";
    static const struct option lo[] = {
        { "dir", required_argument, NULL, 'd' },
        { "base-mib", required_argument, NULL, 'b' },
        { "changes", required_argument, NULL, 'n' },
        { "runs", required_argument, NULL, 'r' },
        { "chunk-kib", required_argument, NULL, 'k' },
        { "qemu-cache", required_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "keep", no_argument, NULL, 'K' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'b': base_mib = strtoull(optarg, NULL, 0); break;
        case 'n': nchanges = parse_list(optarg, changes, 16); break;
        case 'r': runs = atoi(optarg); break;
        case 'k': chunk = (uint32_t)(strtoul(optarg, NULL, 0) * KiB); break;
        case 't': cache = optarg; break;
        case 'v': verbose = 1; break;
        case 'K': keep = 1; break;
        default: return 2;
        }
    }
    if (optind != argc || base_mib == 0 || nchanges < 1 || runs < 1 || runs > MAX_RUNS ||
        chunk < 4096 || chunk > 4 * MiB || chunk % 4096 || base_mib * MiB % chunk)
        return 2;
    for (int i = 0; i < nchanges; i++)
        if (changes[i] == 0 || changes[i] * MiB > base_mib * MiB ||
            changes[i] * MiB % chunk)
            return 2;

    make_work(dir, "commit");
    int qemu = have("qemu-img") && have("qemu-io");
    int dd = have("dd");
    uint64_t size = base_mib * MiB;
    char sp[4200], qbase[4200], qtop[4200], src[4200], dst[4200];
    snprintf(sp, sizeof(sp), "%s/store", work);
    snprintf(qbase, sizeof(qbase), "%s/base.qcow2", work);
    snprintf(qtop, sizeof(qtop), "%s/top.qcow2", work);
    snprintf(src, sizeof(src), "%s/copy-src", work);
    snprintf(dst, sizeof(dst), "%s/copy-dst", work);

    struct vd_store *st;
    struct vd_ctx *ctx;
    int rc = vd_store_open(sp, VD_STORE_CREATE, &st);
    if (rc < 0)
        die("vd_store_open", rc);
    if ((rc = vd_ctx_new(256, &ctx)) < 0)
        die("vd_ctx_new", rc);

    /* The bases: the whole disk written with byte 0x5a, 4 MiB at a time. */
    uint32_t big = 4 * MiB;
    double t0 = now_ms();
    if ((rc = vd_volume_create(st, "vol", size, NULL)) < 0)
        die("vd_volume_create", rc);
    write_volume(st, ctx, "vol", size / big, size, big, 0, 0x5a);
    double t_vbase = now_ms() - t0;
    double t_qbase = -1;
    if (qemu) {
        char sz[32];
        snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
        char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", qbase, sz, NULL };
        t0 = now_ms();
        if (run(create) < 0 || qemu_io_write(qbase, size / big, size, big, 0, 0x5a) < 0) {
            fprintf(stderr, "bench-store: cannot make the qcow2 base; qemu-img skipped\n");
            qemu = 0;
        }
        t_qbase = now_ms() - t0;
    }
    printf("base: %llu MiB written, vdisk volume in %.0f ms", (unsigned long long)base_mib,
           t_vbase);
    if (qemu)
        printf(", qcow2 (64 KiB clusters) in %.0f ms", t_qbase);
    printf("\nchanges: N MiB in %u KiB chunks spread over the disk, a fresh set each run; "
           "median of %d runs\n", chunk / 1024, runs);
    if (qemu)
        printf("qemu-img commit -t %s -f qcow2 OVERLAY (the overlay is emptied, as the "
               "vdisk delta is dropped); time includes starting qemu-img\n", cache);
    if (dd)
        printf("copy: dd if=N-MiB-file of=new-file bs=1M conv=fdatasync\n");

    double res[16][3];
    double qstart = -1;
    for (int ci = 0; ci < nchanges; ci++) {
        uint64_t n = changes[ci] * MiB / chunk;
        double tv[MAX_RUNS], tq[MAX_RUNS], tc[MAX_RUNS];
        int nq = 0, nc = 0;
        for (int r = 0; r < runs; r++) {
            uint64_t seed = 100 * (ci + 1) + r + 1;
            int pat = 0x10 + (ci * runs + r) % 0xe0;

            /* vdisk: snapshot, the change, commit. */
            if ((rc = vd_snapshot_create(st, "vol", "s")) < 0)
                die("vd_snapshot_create", rc);
            write_volume(st, ctx, "vol", n, size, chunk, seed, pat);
            t0 = now_ms();
            if ((rc = vd_snapshot_commit(st, "vol", "s", NULL, NULL)) < 0)
                die("vd_snapshot_commit", rc);
            tv[r] = now_ms() - t0;

            /* qemu: an overlay, the same change, commit. */
            if (qemu) {
                unlink(qtop);
                char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-b", qbase,
                                   "-F", "qcow2", qtop, NULL };
                char *commit[] = { "qemu-img", "commit", "-q", "-t", (char *)cache, "-f",
                                   "qcow2", qtop, NULL };
                if (run(create) >= 0 && qemu_io_write(qtop, n, size, chunk, seed, pat) >= 0) {
                    double t = run(commit);
                    if (t >= 0)
                        tq[nq++] = t;
                }
                if (qstart < 0) {
                    /* What starting qemu-img and opening the chain costs. */
                    char *info[] = { "qemu-img", "info", "-U", "--backing-chain", qtop, NULL };
                    double s[3];
                    int ns = 0;
                    for (int i = 0; i < 3; i++)
                        if ((s[ns] = run(info)) >= 0)
                            ns++;
                    qstart = ns ? median(s, ns) : -1;
                }
            }

            /* Copying N MiB. */
            if (dd) {
                if (r == 0) {
                    char cnt[32], of[4300];
                    snprintf(cnt, sizeof(cnt), "count=%u", changes[ci]);
                    snprintf(of, sizeof(of), "of=%s", src);
                    /* conv=fsync: its write-back is over before the copies. */
                    char *mk[] = { "dd", "if=/dev/urandom", of, "bs=1M", cnt, "conv=fsync",
                                   "status=none", NULL };
                    if (run(mk) < 0)
                        diex("cannot make %s", src);
                }
                unlink(dst);
                char in[4300], out[4300];
                snprintf(in, sizeof(in), "if=%s", src);
                snprintf(out, sizeof(out), "of=%s", dst);
                char *cp[] = { "dd", in, out, "bs=1M", "conv=fdatasync", "status=none", NULL };
                double t = run(cp);
                if (t >= 0)
                    tc[nc++] = t;
            }
        }
        /* The commits left the volume with one layer. */
        struct vd_volume_info vi;
        if ((rc = vd_volume_info(st, "vol", &vi)) < 0)
            die("vd_volume_info", rc);
        if (vi.depth != 1 || vi.snapshots != 0)
            fprintf(stderr, "bench-store: after commit the volume has %u layers and %u "
                    "snapshots (expected 1 and 0)\n", vi.depth, vi.snapshots);
        if (verbose) {
            fprintf(stderr, "N=%u vdisk:", changes[ci]);
            for (int r = 0; r < runs; r++)
                fprintf(stderr, " %.1f", tv[r]);
            fprintf(stderr, " qemu:");
            for (int r = 0; r < nq; r++)
                fprintf(stderr, " %.1f", tq[r]);
            fprintf(stderr, " dd:");
            for (int r = 0; r < nc; r++)
                fprintf(stderr, " %.1f", tc[r]);
            fprintf(stderr, "\n");
        }
        res[ci][0] = median(tv, runs);
        res[ci][1] = nq ? median(tq, nq) : -1;
        res[ci][2] = nc ? median(tc, nc) : -1;
        unlink(src);
        unlink(dst);
    }

    printf("\n%6s %12s %12s %10s %9s %9s %11s\n", "N", "vdisk", "qemu-img", "copy", "vdisk/", "vdisk/",
           "vdisk");
    printf("%6s %12s %12s %10s %9s %9s %11s\n", "(MiB)", "commit (ms)", "commit (ms)", "(ms)",
           "qemu", "copy", "(MiB/s)");
    for (int ci = 0; ci < nchanges; ci++) {
        char q[32] = "-", c[32] = "-", rq[32] = "-", rcp[32] = "-";
        if (res[ci][1] >= 0) {
            snprintf(q, sizeof(q), "%.1f", res[ci][1]);
            snprintf(rq, sizeof(rq), "%.2f", res[ci][0] / res[ci][1]);
        }
        if (res[ci][2] >= 0) {
            snprintf(c, sizeof(c), "%.1f", res[ci][2]);
            snprintf(rcp, sizeof(rcp), "%.2f", res[ci][0] / res[ci][2]);
        }
        printf("%6u %12.1f %12s %10s %9s %9s %11.0f\n", changes[ci], res[ci][0], q, c, rq, rcp,
               changes[ci] / (res[ci][0] / 1e3));
    }
    if (nchanges >= 2 && changes[nchanges - 1] > changes[0]) {
        /* The slope between the smallest and largest change: the part of
         * the time that grows with the data, without the fixed costs. */
        int a = 0, b = nchanges - 1;
        double dm = changes[b] - (double)changes[a];
        printf("time per extra MiB (%u -> %u MiB): vdisk %.2f ms", changes[a], changes[b],
               (res[b][0] - res[a][0]) / dm);
        if (res[a][1] >= 0 && res[b][1] >= 0)
            printf(", qemu-img %.2f ms", (res[b][1] - res[a][1]) / dm);
        if (res[a][2] >= 0 && res[b][2] >= 0)
            printf(", copy %.2f ms", (res[b][2] - res[a][2]) / dm);
        printf("\n");
    }
    if (qstart >= 0)
        printf("(starting qemu-img and opening the chain alone, qemu-img info: %.1f ms, "
               "inside the qemu-img figures)\n", qstart);
    for (int ci = 0; ci < nchanges; ci++)
        printf("result commit_mib=%u vdisk_ms=%.3f qemu_ms=%.3f copy_ms=%.3f\n", changes[ci],
               res[ci][0], res[ci][1], res[ci][2]);

    vd_ctx_free(ctx);
    vd_store_close(st);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-store ops [--size-gib N] [--data-mib N] [--clones N] [--runs N]\n"
            "                       [--dir DIR]\n"
            "       bench-store commit [--base-mib N] [--changes N,N,...] [--runs N]\n"
            "                          [--chunk-kib N] [--qemu-cache MODE] [--dir DIR]\n"
            "Defaults: ops: a 1024 GiB volume, 64 MiB of data, 1000 clones, 7 runs;\n"
            "commit: 1024 MiB base, changes of 16,64,256 MiB in 64 KiB chunks, 5 runs,\n"
            "qemu-img commit -t none.  Files go to a temporary folder in DIR (default\n"
            "$TMPDIR or /tmp), removed at the end.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int rc = 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[1], "ops") == 0)
        rc = cmd_ops(argc - 1, argv + 1);
    else if (strcmp(argv[1], "commit") == 0)
        rc = cmd_commit(argc - 1, argv + 1);
    if (rc == 2)
        usage();
    return rc;
}
