/*
 * test-store-model.c - model-based randomized test of libvdisk stores.
 *
 * A seeded random sequence of store operations runs against a store in a
 * temporary directory and, in parallel, against a model that keeps the
 * content of every volume, every snapshot (VOL@SNAP) and every template
 * version (TPL@N) as a byte image (4 KiB pages shared copy-on-write between
 * images, so that snapshots and clones cost no memory until written).
 *
 * Operations: volume create (256 KiB to 8 MiB, block size 4 KiB or 64 KiB,
 * sometimes SHA-256 digests), I/O sessions (vd_store_open_chain read-write,
 * writes, write-zeroes, discards and reads compared with the model, then
 * vd_chain_close), snapshot create, rollback, commit, snapshot rm anywhere
 * in the tree, template create and update from a volume, linked clones of
 * the newest or a given version, full clones, flatten, volume rm, template
 * rm, resize (grow; now and then past 1 GiB, beyond what the top layer's
 * index covers), and on purpose invalid operations (unknown names, name
 * clashes, bad names and sizes, rollback to another volume's snapshot,
 * shrinking, writing a snapshot or a template, removing a volume open for
 * writing, a second writer from this and from another process, removing a
 * template that has linked clones: the message must name them) which must
 * fail with the expected negative errno and a message, and change nothing.
 *
 * After every operation that may change the catalog, the listings
 * (vd_volume_list, vd_volume_info, vd_snapshot_list, vd_template_list,
 * vd_template_info) are compared with the model: names, sizes, block
 * sizes, snapshot parents and "current" flags, template links, version
 * numbers, clone counts.  The objects an operation touched are read back
 * through vd_store_open_chain (read-only) and compared byte by byte: in
 * full, or (always for disks over 64 MiB) guided by vd_block_status, whose
 * holes and zero extents must be zeroes in the model; every --verify-every
 * operations everything is.  Every --check-every operations: vd_store_check
 * (sometimes with VD_CHECK_VERIFY) must find no corruption, leak or digest
 * problem, every file in layers/ must belong to the chain of some volume,
 * snapshot or template version (no leaked or stray layer file) and the
 * UUIDs the catalog reports must be the tops of those chains,
 * vd_store_usage must agree, and the store is closed and reopened.  At the
 * end everything is removed and layers/ must be empty.
 *
 * Where the contract leaves a choice to the library (commit of a snapshot
 * with branches off the current path or with a template made below it,
 * flatten of a clone that has snapshots or of a volume that is not a
 * clone, removing a template that only shares layers with a volume,
 * dropping old template versions that no clone uses), both outcomes are
 * accepted, the state is checked either way, and the refusals are counted
 * in the summary.  What the contract does say is checked strictly: e.g.
 * flatten changes no snapshot's content, parent or "current" flag, and
 * vd_volume_info names this process as the writer of a volume it has open
 * for writing.
 *
 * Exit status: 0 success, 1 failure (with the replay command).
 */
#include <dirent.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"

#define DEFAULT_SEED      20240701ull
#define DEFAULT_OPS       2000u
#define DEFAULT_VERIFY    250u     /* full read-back period, in operations */
#define DEFAULT_CHECK     150u     /* store check + layer scan + reopen period */
#define PG                4096u    /* model page */
#define NAMELEN           (VD_NAME_MAX + 1)
#define VOL_NAMES         6u       /* v0..v5 */
#define TPL_NAMES         3u       /* t0..t2 */
#define SNAP_NAMES        5u       /* s0..s4, per volume */
#define MAX_VERSIONS      4u       /* no update beyond this many kept versions */
#define MAX_GROWN_SIZE    (10u << 20)   /* growth beyond: rare large resizes */
#define MAX_IO            (256u << 10)
#define MAX_ZERO          (2u << 20)
#define CHUNK             (1u << 20)
#define HISTORY           24u
#define MAX_LAYER_FILES   4096u

/* ------------------------------------------------------------------ */
/* Random numbers: splitmix64. */

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
/* Failure reporting.  The state is global so that a failure can print it
 * and exit from anywhere (and everything stays reachable for LSan). */

struct config {
    uint64_t seed;
    unsigned ops;
    unsigned verify_every;
    unsigned check_every;
    const char *dir;
    bool keep, verbose;
    const char *argv0;
};

static const struct config *CFG;
static char store_dir[PATH_MAX];
static unsigned opno;
static char cur_op[256];
static char history[HISTORY][400];
static unsigned nhistory;

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_replay(void)
{
    fprintf(stderr, "replay: %s --seed %" PRIu64 " --ops %u --verify-every %u"
            " --check-every %u\n", CFG->argv0, CFG->seed, CFG->ops,
            CFG->verify_every, CFG->check_every);
}

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "FAIL: seed %" PRIu64 ", op #%u (%s): ", CFG->seed, opno, cur_op);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    unsigned n = nhistory < HISTORY ? nhistory : HISTORY;
    if (n) {
        fprintf(stderr, "last operations (-> result):\n");
        for (unsigned i = nhistory - n; i < nhistory; i++)
            fprintf(stderr, "  %s\n", history[i % HISTORY]);
    }
    fprintf(stderr, "store kept in %s\n", store_dir);
    print_replay();
    exit(1);
}

static void check_rc(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s (%d): %s", what, strerror(-rc), rc, vd_errmsg());
}

/* Starts the description of the operation in progress. */
static void __attribute__((format(printf, 1, 2))) begin(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cur_op, sizeof(cur_op), fmt, ap);
    va_end(ap);
    if (CFG->verbose) {
        printf("  #%u %s\n", opno, cur_op);
        fflush(stdout);
    }
}

/* Records the finished operation (with its result) in the history. */
static void done(int rc)
{
    snprintf(history[nhistory++ % HISTORY], sizeof(history[0]), "#%u %s -> %d%s%s",
             opno, cur_op, rc, rc < 0 ? " " : "", rc < 0 ? strerror(-rc) : "");
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* Images: the content of a disk, in pages shared copy-on-write.  A NULL
 * page reads as zeroes.  Bytes of the last page beyond the size are always
 * zero (writes never reach them), so growing needs no clearing. */

struct page {
    unsigned refs;
    uint8_t b[PG];
};

struct image {
    uint64_t size;
    size_t npages;
    struct page **pg;
};

static struct image *img_new(uint64_t size)
{
    struct image *im = xcalloc(1, sizeof(*im));
    im->size = size;
    im->npages = (size + PG - 1) / PG;
    im->pg = xcalloc(im->npages, sizeof(struct page *));
    return im;
}

static struct image *img_dup(const struct image *src)
{
    struct image *im = img_new(src->size);
    for (size_t i = 0; i < src->npages; i++)
        if ((im->pg[i] = src->pg[i]) != NULL)
            im->pg[i]->refs++;
    return im;
}

static void page_put(struct page *p)
{
    if (p && --p->refs == 0)
        free(p);
}

static void img_free(struct image *im)
{
    if (!im)
        return;
    for (size_t i = 0; i < im->npages; i++)
        page_put(im->pg[i]);
    free(im->pg);
    free(im);
}

static uint8_t *img_own(struct image *im, size_t i)
{
    struct page *p = im->pg[i];
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        p->refs = 1;
        im->pg[i] = p;
    } else if (p->refs > 1) {
        struct page *q = xmalloc(sizeof(*q));
        memcpy(q->b, p->b, PG);
        q->refs = 1;
        p->refs--;
        im->pg[i] = p = q;
    }
    return p->b;
}

/* Writes src (NULL: zeroes) at off. */
static void img_write(struct image *im, uint64_t off, const uint8_t *src, uint64_t len)
{
    while (len) {
        size_t i = off / PG, o = off % PG;
        size_t n = PG - o < len ? PG - o : (size_t)len;
        if (src)
            memcpy(img_own(im, i) + o, src, n);
        else if (o == 0 && n == PG) {
            page_put(im->pg[i]);
            im->pg[i] = NULL;
        } else if (im->pg[i])
            memset(img_own(im, i) + o, 0, n);
        off += n;
        len -= n;
        if (src)
            src += n;
    }
}

static void img_read(const struct image *im, uint64_t off, uint8_t *dst, uint64_t len)
{
    while (len) {
        size_t i = off / PG, o = off % PG;
        size_t n = PG - o < len ? PG - o : (size_t)len;
        if (im->pg[i])
            memcpy(dst, im->pg[i]->b + o, n);
        else
            memset(dst, 0, n);
        off += n;
        len -= n;
        dst += n;
    }
}

static void img_grow(struct image *im, uint64_t size)
{
    size_t np = (size + PG - 1) / PG;
    struct page **pg = realloc(im->pg, np * sizeof(*pg));
    if (!pg) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = im->npages; i < np; i++)
        pg[i] = NULL;
    im->pg = pg;
    im->npages = np;
    im->size = size;
}

/* ------------------------------------------------------------------ */
/* Sets of template-version ids: what a volume or a version may share
 * layers with.  Grown conservatively (never shrunk but by removal). */

struct idset {
    uint64_t *v;
    size_t n, cap;
};

static bool ids_has(const struct idset *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == id)
            return true;
    return false;
}

static void ids_add(struct idset *s, uint64_t id)
{
    if (ids_has(s, id))
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        uint64_t *v = realloc(s->v, s->cap * sizeof(*v));
        if (!v) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        s->v = v;
    }
    s->v[s->n++] = id;
}

static void ids_union(struct idset *d, const struct idset *s)
{
    for (size_t i = 0; i < s->n; i++)
        ids_add(d, s->v[i]);
}

static void ids_free(struct idset *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------ */
/* The model of the store. */

struct msnap {
    char name[NAMELEN];
    char parent[NAMELEN];        /* "" for none */
    struct image *img;
    bool shared;                 /* a template was made while the volume descended
                                    directly from it: its layer may have a second
                                    child, and commit may be refused */
};

struct mvol {
    bool used;
    char name[NAMELEN];
    struct image *img;
    uint32_t bs;
    int digest;                  /* enum vd_digest, -1: not checked (clones) */
    char tpl[NAMELEN];           /* linked clone of tpl@tplver ("" none) */
    uint32_t tplver;
    bool link_unsure;            /* flattened with snapshots: either answer */
    struct msnap snaps[SNAP_NAMES];    /* in creation order */
    unsigned nsnaps;
    char head[NAMELEN];          /* the snapshot the content descends from */
    struct idset deps;
};

struct mver {
    uint32_t v;
    struct image *img;
    uint32_t bs;
    uint64_t id;                 /* unique over the run */
    struct idset deps;
};

struct mtpl {
    bool used;
    char name[NAMELEN];
    uint32_t latest;
    struct mver vers[MAX_VERSIONS + 1];
    unsigned nvers;
};

static struct {
    struct rng rng;
    struct vd_store *st;
    struct vd_ctx *ctx;
    struct vd_chain *chain;       /* the one open chain, if any */
    struct vd_chain *chain2;
    struct mvol vols[VOL_NAMES];
    struct mtpl tpls[TPL_NAMES];
    uint64_t next_id;
    uint8_t *wbuf, *rbuf, *ebuf;
} M;

enum op_kind {
    OP_IO, OP_VERIFY, OP_SNAP, OP_ROLLBACK, OP_COMMIT, OP_SNAP_RM, OP_VOL_CREATE,
    OP_VOL_RM, OP_RESIZE, OP_TPL_CREATE, OP_TPL_UPDATE, OP_CLONE, OP_FULL_CLONE,
    OP_FLATTEN, OP_TPL_RM, OP_INVALID, OP_CHECK, OP_REOPEN, OP_KINDS
};

static const char *const op_names[OP_KINDS] = {
    "io-session", "verify", "snapshot", "rollback", "commit", "snapshot-rm",
    "volume-create", "volume-rm", "resize", "template-create", "template-update",
    "clone", "full-clone", "flatten", "template-rm", "invalid", "store-check",
    "reopen",
};

static const unsigned op_weights[OP_KINDS] = {
    [OP_IO] = 260, [OP_VERIFY] = 25, [OP_SNAP] = 100, [OP_ROLLBACK] = 60,
    [OP_COMMIT] = 45, [OP_SNAP_RM] = 40, [OP_VOL_CREATE] = 35, [OP_VOL_RM] = 50,
    [OP_RESIZE] = 30, [OP_TPL_CREATE] = 30, [OP_TPL_UPDATE] = 30, [OP_CLONE] = 45,
    [OP_FULL_CLONE] = 15, [OP_FLATTEN] = 25, [OP_TPL_RM] = 25, [OP_INVALID] = 60,
    [OP_CHECK] = 8, [OP_REOPEN] = 8,
};

/* Statistics. */
static struct {
    uint64_t ok[OP_KINDS], refused[OP_KINDS];   /* expected refusals */
    double secs[OP_KINDS];                      /* time spent, checks included */
    double verify_secs, list_secs;
    uint64_t tolerated[OP_KINDS];               /* refusals the contract allows */
    uint64_t invalid_checked;
    uint64_t bytes_written, bytes_zeroed, bytes_verified, images_verified;
    uint64_t store_checks, reopens, full_verifies, layer_files_max;
    uint64_t versions_dropped, progress_calls, busy_checked, busy_other;
    uint64_t large_resizes;
} S;

static const char *rand_from(const char *const *names, unsigned n)
{
    return names[rng_below(&M.rng, n)];
}

static const char *const vol_pool[VOL_NAMES] = { "v0", "v1", "v2", "v3", "v4", "v5" };
static const char *const tpl_pool[TPL_NAMES] = { "t0", "t1", "t2" };
static const char *const snap_pool[SNAP_NAMES] = { "s0", "s1", "s2", "s3", "s4" };
static const char *const bad_names[] = {
    "", ".hidden", "-dash", "a/b", "a b", "a@b", "caf\xc3\xa9", "x\n",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
};
#define NBAD (sizeof(bad_names) / sizeof(bad_names[0]))

static struct mvol *vol_find(const char *name)
{
    for (unsigned i = 0; i < VOL_NAMES; i++)
        if (M.vols[i].used && !strcmp(M.vols[i].name, name))
            return &M.vols[i];
    return NULL;
}

static struct mtpl *tpl_find(const char *name)
{
    for (unsigned i = 0; i < TPL_NAMES; i++)
        if (M.tpls[i].used && !strcmp(M.tpls[i].name, name))
            return &M.tpls[i];
    return NULL;
}

static struct mver *ver_find(struct mtpl *t, uint32_t v)
{
    for (unsigned i = 0; i < t->nvers; i++)
        if (t->vers[i].v == v)
            return &t->vers[i];
    return NULL;
}

static struct msnap *snap_find(struct mvol *v, const char *name)
{
    for (unsigned i = 0; i < v->nsnaps; i++)
        if (!strcmp(v->snaps[i].name, name))
            return &v->snaps[i];
    return NULL;
}

static unsigned nvols(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < VOL_NAMES; i++)
        n += M.vols[i].used;
    return n;
}

static unsigned ntpls(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < TPL_NAMES; i++)
        n += M.tpls[i].used;
    return n;
}

static struct mvol *pick_vol(void)
{
    unsigned n = nvols();
    if (!n)
        return NULL;
    unsigned k = (unsigned)rng_below(&M.rng, n);
    for (unsigned i = 0; i < VOL_NAMES; i++)
        if (M.vols[i].used && k-- == 0)
            return &M.vols[i];
    return NULL;
}

static struct mvol *pick_vol_with_snaps(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < VOL_NAMES; i++)
        n += M.vols[i].used && M.vols[i].nsnaps > 0;
    if (!n)
        return NULL;
    unsigned k = (unsigned)rng_below(&M.rng, n);
    for (unsigned i = 0; i < VOL_NAMES; i++)
        if (M.vols[i].used && M.vols[i].nsnaps > 0 && k-- == 0)
            return &M.vols[i];
    return NULL;
}

static struct mtpl *pick_tpl(void)
{
    unsigned n = ntpls();
    if (!n)
        return NULL;
    unsigned k = (unsigned)rng_below(&M.rng, n);
    for (unsigned i = 0; i < TPL_NAMES; i++)
        if (M.tpls[i].used && k-- == 0)
            return &M.tpls[i];
    return NULL;
}

/* A free volume name (mostly), or one in use, to provoke -EEXIST. */
static const char *pick_new_vol_name(bool *clash)
{
    const char *free_names[VOL_NAMES];
    unsigned nf = 0;
    for (unsigned i = 0; i < VOL_NAMES; i++)
        if (!vol_find(vol_pool[i]))
            free_names[nf++] = vol_pool[i];
    if (nf && !rng_chance(&M.rng, 10)) {
        *clash = false;
        return free_names[rng_below(&M.rng, nf)];
    }
    *clash = true;
    struct mtpl *t = pick_tpl();
    if (t && rng_chance(&M.rng, 30))
        return t->name;             /* volumes and templates share names */
    struct mvol *v = pick_vol();
    if (v)
        return v->name;
    *clash = false;
    return free_names[rng_below(&M.rng, nf)];
}

static bool snap_is_current(struct mvol *v, const char *name)
{
    const char *c = v->head;
    for (unsigned guard = 0; *c && guard <= SNAP_NAMES; guard++) {
        if (!strcmp(c, name))
            return true;
        struct msnap *s = snap_find(v, c);
        if (!s)
            fail("model: snapshot %s of %s has no parent %s", name, v->name, c);
        c = s->parent;
    }
    return false;
}

/* Removes snapshot `name` from the model (rm and commit have the same
 * effect on what every name reads). */
static void model_snap_remove(struct mvol *v, const char *name)
{
    struct msnap *s = snap_find(v, name);
    char parent[NAMELEN];
    snprintf(parent, sizeof(parent), "%s", s->parent);
    /* a template's layer that hung below it now hangs below its parent */
    struct msnap *ps = parent[0] ? snap_find(v, parent) : NULL;
    if (ps && s->shared)
        ps->shared = true;
    for (unsigned i = 0; i < v->nsnaps; i++)
        if (!strcmp(v->snaps[i].parent, name))
            snprintf(v->snaps[i].parent, NAMELEN, "%s", parent);
    if (!strcmp(v->head, name))
        snprintf(v->head, NAMELEN, "%s", parent);
    img_free(s->img);
    unsigned idx = (unsigned)(s - v->snaps);
    memmove(&v->snaps[idx], &v->snaps[idx + 1],
            (v->nsnaps - idx - 1) * sizeof(struct msnap));
    v->nsnaps--;
}

static void model_vol_free(struct mvol *v)
{
    img_free(v->img);
    for (unsigned i = 0; i < v->nsnaps; i++)
        img_free(v->snaps[i].img);
    ids_free(&v->deps);
    memset(v, 0, sizeof(*v));
}

static struct mvol *model_vol_new(const char *name)
{
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        if (!M.vols[i].used) {
            struct mvol *v = &M.vols[i];
            memset(v, 0, sizeof(*v));
            v->used = true;
            snprintf(v->name, NAMELEN, "%s", name);
            return v;
        }
    }
    fail("model: no room for volume %s", name);
}

static void clone_counts(const char *tpl, uint32_t ver, unsigned *sure, unsigned *unsure)
{
    *sure = *unsure = 0;
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        const struct mvol *v = &M.vols[i];
        if (!v->used || strcmp(v->tpl, tpl) || (ver && v->tplver != ver))
            continue;
        if (v->link_unsure)
            (*unsure)++;
        else
            (*sure)++;
    }
}

/* Whether anything may share layers with a version of template t. */
static bool tpl_has_dependents(const struct mtpl *t)
{
    for (unsigned k = 0; k < t->nvers; k++) {
        uint64_t id = t->vers[k].id;
        for (unsigned i = 0; i < VOL_NAMES; i++)
            if (M.vols[i].used && ids_has(&M.vols[i].deps, id))
                return true;
        for (unsigned i = 0; i < TPL_NAMES; i++) {
            if (!M.tpls[i].used || &M.tpls[i] == t)
                continue;
            for (unsigned j = 0; j < M.tpls[i].nvers; j++)
                if (ids_has(&M.tpls[i].vers[j].deps, id))
                    return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Comparing the store with the model. */

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

static void close_ro(struct vd_chain **c)
{
    struct vd_chain *x = *c;
    *c = NULL;
    check_rc(vd_chain_close(x), "vd_chain_close");
}

/* Whether the model holds only zeroes in [off, off+len). */
static bool img_is_zero(const struct image *im, uint64_t off, uint64_t len, uint64_t *at)
{
    while (len) {
        size_t i = off / PG, o = off % PG;
        size_t n = PG - o < len ? PG - o : (size_t)len;
        if (im->pg[i] && !is_zero(im->pg[i]->b + o, n)) {
            size_t k = 0;
            while (im->pg[i]->b[o + k] == 0)
                k++;
            *at = off + k;
            return false;
        }
        off += n;
        len -= n;
    }
    return true;
}

/* Reads [off, off+len) of the open chain and compares it with im. */
static void verify_range(const char *name, const struct image *im, uint64_t off,
                         uint64_t len)
{
    for (uint64_t end = off + len; off < end; off += CHUNK) {
        size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
        memset(M.rbuf, 0x5a, n);
        int rc = vd_read(M.chain2, M.rbuf, off, n);
        if (rc < 0)
            fail("vd_read(%s, %" PRIu64 ", %zu): %s: %s", name, off, n,
                 strerror(-rc), vd_errmsg());
        img_read(im, off, M.ebuf, n);
        if (memcmp(M.rbuf, M.ebuf, n)) {
            size_t i = 0;
            while (M.rbuf[i] == M.ebuf[i])
                i++;
            size_t ndiff = 0;
            for (size_t j = i; j < n; j++)
                ndiff += M.rbuf[j] != M.ebuf[j];
            char e[64], a[64];
            hexdump16(e, M.ebuf + i, n - i);
            hexdump16(a, M.rbuf + i, n - i);
            fail("%s differs from the model at offset %" PRIu64 " (%zu bytes differ in"
                 " [%" PRIu64 ", +%zu)%s)\n  expected: %s\n  actual:   %s", name,
                 off + i, ndiff, off, n,
                 is_zero(M.rbuf + i, n - i) ? "; the rest reads as zeroes" : "",
                 e, a);
        }
        S.bytes_verified += n;
    }
}

/* Reads `name` through the store and compares it with im: all of it, or
 * (for large disks, and half the time) the extents block status calls
 * data, checking that the model holds zeroes where it reports holes and
 * zeroes. */
static void verify_image(const char *name, const struct image *im)
{
    unsigned flags = rng_chance(&M.rng, 75) ? VD_OPEN_BUFFERED : 0;
    bool guided = im->size > (64u << 20) || rng_chance(&M.rng, 50);
    double t0 = now_sec();
    int rc = vd_store_open_chain(M.st, M.ctx, name, flags, &M.chain2);
    if (rc < 0)
        fail("vd_store_open_chain(%s, read-only) failed: %s: %s", name,
             strerror(-rc), vd_errmsg());
    if (vd_chain_size(M.chain2) != im->size)
        fail("%s: vd_chain_size %" PRIu64 ", model %" PRIu64, name,
             vd_chain_size(M.chain2), im->size);
    if (vd_chain_writable(M.chain2))
        fail("%s opened read-only is writable", name);
    if (!guided) {
        verify_range(name, im, 0, im->size);
    } else {
        struct vd_extent ext[64];
        for (uint64_t pos = 0; pos < im->size;) {
            int n = vd_block_status(M.chain2, pos, im->size - pos, ext, 64);
            if (n < 1)
                fail("vd_block_status(%s, %" PRIu64 "): %d: %s", name, pos, n, vd_errmsg());
            for (int i = 0; i < n; i++) {
                const struct vd_extent *e = &ext[i];
                if (e->offset != pos || e->length == 0 || e->length > im->size - pos)
                    fail("vd_block_status(%s): extent [%" PRIu64 ", +%" PRIu64 ") at %"
                         PRIu64, name, e->offset, e->length, pos);
                uint64_t at;
                if (e->type == VD_EXTENT_DATA)
                    verify_range(name, im, e->offset, e->length);
                else if (!img_is_zero(im, e->offset, e->length, &at))
                    fail("%s: block status reports %s at [%" PRIu64 ", +%" PRIu64 ") but"
                         " the model holds data at %" PRIu64, name,
                         e->type == VD_EXTENT_ZERO ? "zeroes" : "a hole", e->offset,
                         e->length, at);
                pos += e->length;
            }
        }
    }
    close_ro(&M.chain2);
    S.verify_secs += now_sec() - t0;
    S.images_verified++;
}

static void verify_volume(struct mvol *v, bool with_snapshots)
{
    verify_image(v->name, v->img);
    if (!with_snapshots)
        return;
    char n[2 * NAMELEN + 2];
    for (unsigned i = 0; i < v->nsnaps; i++) {
        snprintf(n, sizeof(n), "%s@%s", v->name, v->snaps[i].name);
        verify_image(n, v->snaps[i].img);
    }
}

static void verify_version(struct mtpl *t, struct mver *ver)
{
    char n[NAMELEN + 16];
    snprintf(n, sizeof(n), "%s@%u", t->name, ver->v);
    verify_image(n, ver->img);
}

static void verify_all(void)
{
    for (unsigned i = 0; i < VOL_NAMES; i++)
        if (M.vols[i].used)
            verify_volume(&M.vols[i], true);
    for (unsigned i = 0; i < TPL_NAMES; i++) {
        struct mtpl *t = &M.tpls[i];
        if (!t->used)
            continue;
        for (unsigned k = 0; k < t->nvers; k++)
            verify_version(t, &t->vers[k]);
        struct mver *latest = ver_find(t, t->latest);
        verify_image(t->name, latest->img);    /* "TPL" is the newest version */
    }
    S.full_verifies++;
}

/* Volumes whose layers may come from template t's versions: read them
 * after t lost a version or its name. */
static void verify_dependents_of(const struct idset *ids)
{
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        struct mvol *v = &M.vols[i];
        if (!v->used)
            continue;
        for (size_t k = 0; k < ids->n; k++) {
            if (ids_has(&v->deps, ids->v[k])) {
                verify_volume(v, true);
                break;
            }
        }
    }
}

static void check_volume_info(const struct vd_volume_info *vi, const struct mvol *v,
                              const char *src)
{
    if (strcmp(vi->name, v->name))
        fail("%s: name %s, expected %s", src, vi->name, v->name);
    if (vi->size != v->img->size)
        fail("%s %s: size %" PRIu64 ", model %" PRIu64, src, v->name, vi->size,
             v->img->size);
    if (vi->block_size != v->bs)
        fail("%s %s: block size %u, model %u", src, v->name, vi->block_size, v->bs);
    if (v->digest >= 0 && (int)vi->digest != v->digest)
        fail("%s %s: digest %d, model %d", src, v->name, (int)vi->digest, v->digest);
    if (vi->snapshots != v->nsnaps)
        fail("%s %s: %u snapshots, model %u", src, v->name, vi->snapshots, v->nsnaps);
    if (vi->depth < 1)
        fail("%s %s: depth %u", src, v->name, vi->depth);
    if (vi->writer_pid != 0)
        fail("%s %s: writer pid %d with no chain open", src, v->name, vi->writer_pid);
    if (v->link_unsure) {
        if (vi->template_name[0] && strcmp(vi->template_name, v->tpl))
            fail("%s %s: template %s, model %s (or none)", src, v->name,
                 vi->template_name, v->tpl);
    } else if (strcmp(vi->template_name, v->tpl) ||
               (v->tpl[0] && vi->template_version != v->tplver)) {
        fail("%s %s: linked clone of \"%s\" version %u, model \"%s\" version %u",
             src, v->name, vi->template_name, vi->template_version, v->tpl, v->tplver);
    }
    if (vd_uuid_is_null(&vi->top))
        fail("%s %s: null top layer UUID", src, v->name);
}

static void check_snapshots(struct mvol *v)
{
    struct vd_snapshot_info *si = NULL;
    size_t n = 0;
    int rc = vd_snapshot_list(M.st, v->name, &si, &n);
    if (rc < 0)
        fail("vd_snapshot_list(%s): %s: %s", v->name, strerror(-rc), vd_errmsg());
    if (n != v->nsnaps)
        fail("vd_snapshot_list(%s): %zu snapshots, model %u", v->name, n, v->nsnaps);
    for (size_t i = 0; i < n; i++) {
        struct msnap *s = snap_find(v, si[i].name);
        if (!s)
            fail("vd_snapshot_list(%s): unknown snapshot %s", v->name, si[i].name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(si[j].name, si[i].name))
                fail("vd_snapshot_list(%s): %s listed twice", v->name, si[i].name);
        if (strcmp(si[i].parent, s->parent))
            fail("snapshot %s@%s: parent \"%s\", model \"%s\"", v->name, s->name,
                 si[i].parent, s->parent);
        if (si[i].size != s->img->size)
            fail("snapshot %s@%s: size %" PRIu64 ", model %" PRIu64, v->name, s->name,
                 si[i].size, s->img->size);
        bool cur = snap_is_current(v, s->name);
        if (si[i].current != cur)
            fail("snapshot %s@%s: current %d, model %d (volume descends from \"%s\")",
                 v->name, s->name, (int)si[i].current, (int)cur, v->head);
        if (i > 0 && si[i].create_time < si[i - 1].create_time)
            fail("vd_snapshot_list(%s): not oldest first (%s after %s)", v->name,
                 si[i].name, si[i - 1].name);
        if (vd_uuid_is_null(&si[i].layer))
            fail("snapshot %s@%s: null layer UUID", v->name, s->name);
    }
    free(si);
}

/* Drops from the model the versions the library dropped: allowed only for
 * versions that are not the newest and have no clone. */
static void sync_versions(struct mtpl *t, const struct vd_template_version *tv, size_t n)
{
    for (unsigned k = 0; k < t->nvers;) {
        struct mver *ver = &t->vers[k];
        bool listed = false;
        for (size_t j = 0; j < n; j++)
            listed |= tv[j].version == ver->v;
        if (listed) {
            k++;
            continue;
        }
        unsigned sure, unsure;
        clone_counts(t->name, ver->v, &sure, &unsure);
        if (ver->v == t->latest || sure + unsure > 0)
            fail("template %s: version %u is missing (newest %u, %u linked clones)",
                 t->name, ver->v, t->latest, sure + unsure);
        S.versions_dropped++;
        img_free(ver->img);
        ids_free(&ver->deps);
        memmove(ver, ver + 1, (t->nvers - k - 1) * sizeof(*ver));
        t->nvers--;
    }
}

static void check_template(struct mtpl *t, const struct vd_template_info *ti)
{
    struct vd_template_info info;
    struct vd_template_version *tv = NULL;
    size_t n = 0;
    int rc = vd_template_info(M.st, t->name, &info, &tv, &n);
    if (rc < 0)
        fail("vd_template_info(%s): %s: %s", t->name, strerror(-rc), vd_errmsg());
    if (strcmp(info.name, t->name))
        fail("vd_template_info(%s): name %s", t->name, info.name);
    if (info.versions != n)
        fail("vd_template_info(%s): versions %u but %zu listed", t->name,
             info.versions, n);
    sync_versions(t, tv, n);
    if (n != t->nvers)
        fail("vd_template_info(%s): %zu versions, model %u", t->name, n, t->nvers);
    if (info.latest != t->latest)
        fail("vd_template_info(%s): latest %u, model %u", t->name, info.latest,
             t->latest);
    struct mver *latest = ver_find(t, t->latest);
    if (info.size != latest->img->size)
        fail("vd_template_info(%s): size %" PRIu64 ", newest version's %" PRIu64,
             t->name, info.size, latest->img->size);
    unsigned sure, unsure;
    clone_counts(t->name, 0, &sure, &unsure);
    if (info.clones < sure || info.clones > sure + unsure)
        fail("vd_template_info(%s): %u clones, model %u (+%u flattened with"
             " snapshots)", t->name, info.clones, sure, unsure);
    for (size_t j = 0; j < n; j++) {
        struct mver *ver = ver_find(t, tv[j].version);
        if (!ver)
            fail("template %s: unknown version %u listed", t->name, tv[j].version);
        if (tv[j].size != ver->img->size)
            fail("template %s@%u: size %" PRIu64 ", model %" PRIu64, t->name, ver->v,
                 tv[j].size, ver->img->size);
        clone_counts(t->name, ver->v, &sure, &unsure);
        if (tv[j].clones < sure || tv[j].clones > sure + unsure)
            fail("template %s@%u: %u clones, model %u (+%u flattened with snapshots)",
                 t->name, ver->v, tv[j].clones, sure, unsure);
        if (vd_uuid_is_null(&tv[j].layer))
            fail("template %s@%u: null layer UUID", t->name, ver->v);
    }
    if (ti && (strcmp(ti->name, info.name) || ti->versions != info.versions ||
               ti->latest != info.latest || ti->clones != info.clones ||
               ti->size != info.size))
        fail("vd_template_list and vd_template_info disagree about %s", t->name);
    free(tv);
}

/* Listings against the model: after every operation that may change
 * the catalog.  vd_volume_info is asked for every volume when full, else
 * for one. */
static void check_lists(bool full)
{
    unsigned info_for = full ? UINT_MAX : (unsigned)rng_below(&M.rng, VOL_NAMES);
    struct vd_volume_info *vl = NULL;
    size_t n = 0;
    check_rc(vd_volume_list(M.st, &vl, &n), "vd_volume_list");
    if (n != nvols())
        fail("vd_volume_list: %zu volumes, model %u", n, nvols());
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(vl[i - 1].name, vl[i].name) >= 0)
            fail("vd_volume_list: not sorted by name (%s before %s)", vl[i - 1].name,
                 vl[i].name);
        struct mvol *v = vol_find(vl[i].name);
        if (!v)
            fail("vd_volume_list: unknown volume %s", vl[i].name);
        check_volume_info(&vl[i], v, "vd_volume_list");
        if (info_for == UINT_MAX || info_for == (unsigned)(v - M.vols)) {
            struct vd_volume_info vi;
            check_rc(vd_volume_info(M.st, v->name, &vi), "vd_volume_info");
            check_volume_info(&vi, v, "vd_volume_info");
            if (memcmp(&vi.top, &vl[i].top, sizeof(vd_uuid)))
                fail("vd_volume_info and vd_volume_list disagree on the top of %s",
                     v->name);
        }
        check_snapshots(v);
    }
    free(vl);

    struct vd_template_info *tl = NULL;
    check_rc(vd_template_list(M.st, &tl, &n), "vd_template_list");
    if (n != ntpls())
        fail("vd_template_list: %zu templates, model %u", n, ntpls());
    for (size_t i = 0; i < n; i++) {
        struct mtpl *t = tpl_find(tl[i].name);
        if (!t)
            fail("vd_template_list: unknown template %s", tl[i].name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(tl[j].name, tl[i].name))
                fail("vd_template_list: %s listed twice", tl[i].name);
        check_template(t, &tl[i]);
    }
    free(tl);
}

/* ------------------------------------------------------------------ */
/* Layer files and the store check. */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct strset {
    char **v;
    size_t n, cap;
};

static void strset_add(struct strset *s, const char *x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        char **v = realloc(s->v, s->cap * sizeof(*v));
        if (!v) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        s->v = v;
    }
    s->v[s->n] = strdup(x);
    if (!s->v[s->n]) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    s->n++;
}

static void strset_free(struct strset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static bool strset_has_sorted(const struct strset *s, const char *x)
{
    return s->n && bsearch(&x, s->v, s->n, sizeof(char *), cmp_str) != NULL;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* The entries of the store's layers/ directory. */
static void list_layer_dir(struct strset *out)
{
    char p[PATH_MAX + 16];
    snprintf(p, sizeof(p), "%s/layers", vd_store_path(M.st));
    DIR *d = opendir(p);
    if (!d)
        fail("opendir %s: %s", p, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            strset_add(out, e->d_name);
    closedir(d);
    if (out->n)
        qsort(out->v, out->n, sizeof(char *), cmp_str);
}

/* Adds the file names of every layer of name's chain; checks the top's
 * UUID when want is not NULL. */
static void collect_chain(const char *name, const vd_uuid *want, struct strset *out)
{
    int rc = vd_store_open_chain(M.st, M.ctx, name, VD_OPEN_BUFFERED, &M.chain2);
    if (rc < 0)
        fail("vd_store_open_chain(%s): %s: %s", name, strerror(-rc), vd_errmsg());
    unsigned depth = vd_chain_depth(M.chain2);
    for (unsigned d = 1; d <= depth; d++) {
        const char *p = vd_chain_layer_path(M.chain2, d);
        if (!p)
            fail("%s: no path for the layer at depth %u of %u", name, d, depth);
        strset_add(out, base_name(p));
    }
    if (want) {
        struct vd_layer_info li;
        check_rc(vd_chain_layer_info(M.chain2, 1, &li), "vd_chain_layer_info");
        if (memcmp(&li.uuid, want, sizeof(vd_uuid))) {
            char a[37], b[37];
            vd_uuid_format(&li.uuid, a);
            vd_uuid_format(want, b);
            fail("%s: top layer of its chain is %s, the catalog says %s", name, a, b);
        }
    }
    close_ro(&M.chain2);
}

/* Every file in layers/ belongs to some chain (no leaked or stray files);
 * the UUIDs the catalog reports are the tops of the chains it opens.
 * Returns the number of files. */
static size_t scan_layers(void)
{
    struct strset files = { 0 }, used = { 0 };
    list_layer_dir(&files);
    char n[2 * NAMELEN + 16];
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        struct mvol *v = &M.vols[i];
        if (!v->used)
            continue;
        struct vd_volume_info vi;
        check_rc(vd_volume_info(M.st, v->name, &vi), "vd_volume_info");
        collect_chain(v->name, &vi.top, &used);
        struct vd_snapshot_info *si = NULL;
        size_t ns = 0;
        check_rc(vd_snapshot_list(M.st, v->name, &si, &ns), "vd_snapshot_list");
        for (size_t k = 0; k < ns; k++) {
            snprintf(n, sizeof(n), "%s@%s", v->name, si[k].name);
            collect_chain(n, &si[k].layer, &used);
        }
        free(si);
    }
    for (unsigned i = 0; i < TPL_NAMES; i++) {
        struct mtpl *t = &M.tpls[i];
        if (!t->used)
            continue;
        struct vd_template_info ti;
        struct vd_template_version *tv = NULL;
        size_t nv = 0;
        check_rc(vd_template_info(M.st, t->name, &ti, &tv, &nv), "vd_template_info");
        for (size_t k = 0; k < nv; k++) {
            snprintf(n, sizeof(n), "%s@%u", t->name, tv[k].version);
            collect_chain(n, &tv[k].layer, &used);
        }
        free(tv);
    }
    if (used.n)
        qsort(used.v, used.n, sizeof(char *), cmp_str);
    for (size_t i = 0; i < files.n; i++)
        if (!strset_has_sorted(&used, files.v[i]))
            fail("layers/%s belongs to no volume, snapshot or template version"
                 " (%zu files, %zu distinct layers in use): a leaked or stray file",
                 files.v[i], files.n, used.n);
    for (size_t i = 0; i < used.n; i++)
        if (!strset_has_sorted(&files, used.v[i]))
            fail("a chain uses %s, which is not in layers/", used.v[i]);
    size_t nfiles = files.n;
    if (nfiles > S.layer_files_max)
        S.layer_files_max = nfiles;
    strset_free(&files);
    strset_free(&used);
    return nfiles;
}

static char findings[8][256];
static unsigned nfindings;

static void report_finding(void *opaque, const char *msg)
{
    (void)opaque;
    snprintf(findings[nfindings++ % 8], sizeof(findings[0]), "%s", msg);
}

static void store_check(const char *name, unsigned flags)
{
    struct vd_check_result res;
    memset(&res, 0, sizeof(res));
    nfindings = 0;
    int rc = vd_store_check(M.st, name, flags, &res, report_finding, NULL);
    bool bad = rc < 0 || res.corruptions || res.leaked_bytes ||
               res.digest_mismatches || res.digest_stale || res.dirty;
    if (bad) {
        unsigned first = nfindings > 8 ? nfindings - 8 : 0;
        for (unsigned i = first; i < nfindings; i++)
            fprintf(stderr, "  check: %s\n", findings[i % 8]);
    }
    if (rc < 0)
        fail("vd_store_check(%s): %s: %s", name ? name : "NULL", strerror(-rc),
             vd_errmsg());
    if (bad)
        fail("vd_store_check(%s): %" PRIu64 " corruptions, %" PRIu64 " leaked bytes, %"
             PRIu64 " digest mismatches, %" PRIu64 " stale digests, dirty %d",
             name ? name : "NULL", res.corruptions, res.leaked_bytes,
             res.digest_mismatches, res.digest_stale, (int)res.dirty);
    S.store_checks++;
}

static void check_usage(size_t nfiles)
{
    struct vd_store_usage u;
    check_rc(vd_store_usage(M.st, &u), "vd_store_usage");
    uint64_t vsize = 0;
    unsigned nsnaps = 0;
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        if (M.vols[i].used) {
            vsize += M.vols[i].img->size;
            nsnaps += M.vols[i].nsnaps;
        }
    }
    if (u.volumes != nvols() || u.templates != ntpls() || u.snapshots != nsnaps ||
        u.virtual_size != vsize || u.layers != nfiles)
        fail("vd_store_usage: %u volumes, %u templates, %u snapshots, %u layers, virtual"
             " size %" PRIu64 "; model %u, %u, %u, %zu files in layers/, %" PRIu64,
             u.volumes, u.templates, u.snapshots, u.layers, u.virtual_size, nvols(),
             ntpls(), nsnaps, nfiles, vsize);
    if (u.fs_size == 0 || u.fs_free > u.fs_size)
        fail("vd_store_usage: file system size %" PRIu64 ", free %" PRIu64, u.fs_size,
             u.fs_free);
}

static void reopen_store(void)
{
    vd_store_close(M.st);
    M.st = NULL;
    /* VD_STORE_CREATE opens an existing store as it is */
    unsigned flags = rng_chance(&M.rng, 30) ? VD_STORE_CREATE : 0;
    check_rc(vd_store_open(store_dir, flags, &M.st), "vd_store_open (reopen)");
    if (strcmp(base_name(vd_store_path(M.st)), base_name(store_dir)))
        fail("vd_store_path is %s, opened %s", vd_store_path(M.st), store_dir);
    S.reopens++;
}

/* ------------------------------------------------------------------ */
/* Expected outcomes. */

/* rc must be a failure, one of the listed errnos (0-terminated, positive;
 * none listed: any), with a message. */
static void expect_fail(int rc, const char *what, ...)
{
    va_list ap;
    int e, nexp = 0;
    bool match = false;
    char list[128] = "";
    va_start(ap, what);
    while ((e = va_arg(ap, int)) != 0) {
        nexp++;
        match |= rc == -e;
        size_t l = strlen(list);
        snprintf(list + l, sizeof(list) - l, "%s%s", l ? " or " : "", strerror(e));
    }
    va_end(ap);
    if (rc >= 0)
        fail("%s succeeded (returned %d), expected %s", what, rc,
             nexp ? list : "a failure");
    if (nexp && !match)
        fail("%s returned %d (%s: %s), expected %s", what, rc, strerror(-rc),
             vd_errmsg(), list);
    const char *m = vd_errmsg();
    if (!m || !*m)
        fail("%s returned %d (%s) but vd_errmsg() is empty", what, rc, strerror(-rc));
    S.invalid_checked++;
}

static void expect_ok(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s (%d): %s", what, strerror(-rc), rc, vd_errmsg());
}

/* An outcome the contract leaves to the library: success, or a refusal
 * with a message (then nothing may have changed). */
static bool tolerate(int rc, enum op_kind k, const char *what)
{
    if (rc >= 0)
        return true;
    const char *m = vd_errmsg();
    if (!m || !*m)
        fail("%s returned %d (%s) but vd_errmsg() is empty", what, rc, strerror(-rc));
    if (rc == -ENOMEM || rc == -EIO || rc == -EUCLEAN || rc == -ENOSPC)
        fail("%s failed: %s: %s", what, strerror(-rc), m);
    S.tolerated[k]++;
    if (CFG->verbose)
        printf("    refused (allowed): %s: %s\n", strerror(-rc), m);
    return false;
}

struct progress {
    uint64_t last, total;
    unsigned calls;
    bool bad;
};

static void progress_cb(void *opaque, uint64_t done_bytes, uint64_t total)
{
    struct progress *p = opaque;
    if (done_bytes > total || done_bytes < p->last || (p->calls && total != p->total))
        p->bad = true;
    p->last = done_bytes;
    p->total = total;
    p->calls++;
    S.progress_calls++;
}

static void check_progress(const struct progress *p, const char *what)
{
    if (p->bad)
        fail("%s: progress went backwards or beyond its total (last %" PRIu64 " of %"
             PRIu64 ")", what, p->last, p->total);
}

/* ------------------------------------------------------------------ */
/* Operations. */

static uint64_t pick_size(void)
{
    uint64_t size;
    if (rng_chance(&M.rng, 60))
        size = (1 + rng_below(&M.rng, 8)) * (256u << 10);     /* 256 KiB .. 2 MiB */
    else
        size = (2u << 20) + rng_below(&M.rng, 25) * (256u << 10);   /* .. 8 MiB */
    if (rng_chance(&M.rng, 30))
        size -= 512 * (1 + rng_below(&M.rng, 255));            /* a partial block */
    return size;
}

/* A range of at most max bytes inside a disk of size bytes. */
static void pick_range(uint64_t size, uint64_t max, uint64_t *off, uint64_t *len)
{
    uint64_t l;
    unsigned a = (unsigned)rng_below(&M.rng, 100);
    if (a < 50)
        l = (1 + rng_below(&M.rng, 32)) * 512;
    else if (a < 80)
        l = (1 + rng_below(&M.rng, 16)) * 4096;
    else
        l = (1 + rng_below(&M.rng, max / 512)) * 512;
    if (l > max)
        l = max;
    if (l > size)
        l = size;
    uint64_t o;
    if (rng_chance(&M.rng, 5)) {
        o = size - l;
    } else {
        o = rng_below(&M.rng, size - l + 1);
        o -= o % (rng_chance(&M.rng, 50) ? 4096 : 512);
    }
    *off = o;
    *len = l;
}

static void op_vol_create(void)
{
    bool clash;
    const char *name = pick_new_vol_name(&clash);
    uint64_t size = pick_size();
    struct vd_create_opts o = {
        .block_size = rng_chance(&M.rng, 50) ? 4096 : 65536,
        .digest = rng_chance(&M.rng, 15) ? VD_DIGEST_SHA256 : VD_DIGEST_NONE,
    };
    if (rng_chance(&M.rng, 10)) {
        /* size and parent in the options are ignored */
        o.size = 512;
        o.parent = "/nonexistent";
    }
    begin("volume create %s %" PRIu64 " bs %u %s", name, size, o.block_size,
          o.digest ? "sha256" : "");
    int rc = vd_volume_create(M.st, name, size, &o);
    done(rc);
    if (clash) {
        expect_fail(rc, "vd_volume_create of an existing name", EEXIST, 0);
        S.refused[OP_VOL_CREATE]++;
        return;
    }
    expect_ok(rc, "vd_volume_create");
    struct mvol *v = model_vol_new(name);
    v->img = img_new(size);
    v->bs = o.block_size;
    v->digest = o.digest;
    S.ok[OP_VOL_CREATE]++;
    if (rng_chance(&M.rng, 30))
        verify_volume(v, false);
}

static void open_rw(struct mvol *v)
{
    unsigned flags = VD_OPEN_RDWR | (rng_chance(&M.rng, 30) ? VD_OPEN_BUFFERED : 0);
    int rc = vd_store_open_chain(M.st, M.ctx, v->name, flags, &M.chain);
    if (rc < 0)
        fail("vd_store_open_chain(%s, read-write): %s: %s", v->name, strerror(-rc),
             vd_errmsg());
    if (!vd_chain_writable(M.chain) || vd_chain_size(M.chain) != v->img->size ||
        vd_chain_block_size(M.chain) != v->bs)
        fail("%s opened read-write: writable %d, size %" PRIu64 ", block size %u;"
             " model size %" PRIu64 ", block size %u", v->name,
             (int)vd_chain_writable(M.chain), vd_chain_size(M.chain),
             vd_chain_block_size(M.chain), v->img->size, v->bs);
}

/* Another process, while this one has volume v open for writing: its
 * read-write open is refused naming this process, vd_volume_info names
 * this process as the writer, and it can read the volume. */
static void busy_from_other_process(struct mvol *v)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        struct vd_store *st;
        struct vd_ctx *ctx;
        struct vd_chain *c;
        char me[32];
        snprintf(me, sizeof(me), "%d", (int)getppid());
        int rc = vd_store_open(store_dir, 0, &st);
        if (rc < 0 || vd_ctx_new(8, &ctx) < 0) {
            fprintf(stderr, "other process: vd_store_open: %s\n", vd_errmsg());
            _exit(1);
        }
        rc = vd_store_open_chain(st, ctx, v->name, VD_OPEN_RDWR, &c);
        if (rc != -EBUSY || !strstr(vd_errmsg(), me)) {
            fprintf(stderr, "other process: read-write open of %s returned %d (%s),"
                    " expected -EBUSY naming process %s\n", v->name, rc, vd_errmsg(), me);
            _exit(1);
        }
        struct vd_volume_info vi;
        rc = vd_volume_info(st, v->name, &vi);
        if (rc < 0 || vi.writer_pid != getppid()) {
            fprintf(stderr, "other process: vd_volume_info(%s): %d, writer pid %d,"
                    " expected %s\n", v->name, rc, vi.writer_pid, me);
            _exit(1);
        }
        rc = vd_store_open_chain(st, ctx, v->name, VD_OPEN_BUFFERED, &c);
        if (rc < 0) {
            fprintf(stderr, "other process: read-only open of %s while it is open for"
                    " writing: %s\n", v->name, vd_errmsg());
            _exit(1);
        }
        vd_chain_close(c);
        vd_ctx_free(ctx);
        vd_store_close(st);
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            fail("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("the check from another process failed (status %#x, its message above)",
             status);
}

/* While a volume is open for writing: a second writer and removal are
 * refused, and the catalog names the writer. */
static void busy_checks(struct mvol *v)
{
    struct vd_chain *c2 = NULL;
    int rc = vd_store_open_chain(M.st, M.ctx, v->name, VD_OPEN_RDWR, &c2);
    if (rc >= 0) {
        M.chain2 = c2;
        fail("a second read-write open of %s succeeded", v->name);
    }
    expect_fail(rc, "a second read-write open", EBUSY, 0);
    rc = vd_volume_remove(M.st, v->name);
    expect_fail(rc, "vd_volume_remove of a volume open for writing", EBUSY, 0);
    struct vd_volume_info vi;
    check_rc(vd_volume_info(M.st, v->name, &vi), "vd_volume_info");
    if (vi.writer_pid != getpid())
        fail("vd_volume_info(%s).writer_pid is %d while this process (%d) has it"
             " open for writing", v->name, vi.writer_pid, (int)getpid());
    if (rng_chance(&M.rng, 30)) {
        busy_from_other_process(v);
        S.busy_other++;
    }
    S.busy_checked++;
}

static void op_io(void)
{
    struct mvol *v = pick_vol();
    if (!v) {
        op_vol_create();
        return;
    }
    unsigned n = 1 + (unsigned)rng_below(&M.rng, 12);
    begin("io session on %s: %u requests", v->name, n);
    open_rw(v);
    if (rng_chance(&M.rng, 8))
        busy_checks(v);
    uint64_t size = v->img->size;
    for (unsigned i = 0; i < n; i++) {
        uint64_t off, len;
        unsigned a = (unsigned)rng_below(&M.rng, 100);
        int rc;
        if (a < 60) {
            pick_range(size, MAX_IO, &off, &len);
            if (rng_chance(&M.rng, 8))
                memset(M.wbuf, 0, len);
            else
                rng_fill(&M.rng, M.wbuf, len);
            rc = vd_write(M.chain, M.wbuf, off, len, rng_chance(&M.rng, 5) ? VD_IO_FUA : 0);
            if (rc < 0)
                fail("vd_write(%s, %" PRIu64 ", %" PRIu64 "): %s: %s", v->name, off, len,
                     strerror(-rc), vd_errmsg());
            img_write(v->img, off, M.wbuf, len);
            S.bytes_written += len;
        } else if (a < 85) {
            pick_range(size, MAX_ZERO, &off, &len);
            bool discard = a >= 75;
            rc = discard ? vd_discard(M.chain, off, len) : vd_zero(M.chain, off, len, 0);
            if (rc < 0)
                fail("%s(%s, %" PRIu64 ", %" PRIu64 "): %s: %s",
                     discard ? "vd_discard" : "vd_zero", v->name, off, len,
                     strerror(-rc), vd_errmsg());
            img_write(v->img, off, NULL, len);
            S.bytes_zeroed += len;
        } else {
            pick_range(size, MAX_IO, &off, &len);
            memset(M.rbuf, 0x5a, len);
            rc = vd_read(M.chain, M.rbuf, off, len);
            if (rc < 0)
                fail("vd_read(%s, %" PRIu64 ", %" PRIu64 "): %s: %s", v->name, off, len,
                     strerror(-rc), vd_errmsg());
            img_read(v->img, off, M.ebuf, len);
            if (memcmp(M.rbuf, M.ebuf, len)) {
                size_t k = 0;
                while (M.rbuf[k] == M.ebuf[k])
                    k++;
                fail("read of %s [%" PRIu64 ", +%" PRIu64 ") differs from the model at"
                     " offset %" PRIu64, v->name, off, len, off + k);
            }
        }
    }
    if (rng_chance(&M.rng, 30))
        check_rc(vd_flush(M.chain), "vd_flush");
    struct vd_chain *c = M.chain;
    M.chain = NULL;
    int rc = vd_chain_close(c);
    done(rc);
    check_rc(rc, "vd_chain_close");
    struct vd_volume_info vi;
    check_rc(vd_volume_info(M.st, v->name, &vi), "vd_volume_info");
    check_volume_info(&vi, v, "vd_volume_info after writing");
    S.ok[OP_IO]++;
    if (rng_chance(&M.rng, 25))
        verify_volume(v, false);
}

static void op_snap(void)
{
    struct mvol *v = pick_vol();
    if (!v)
        return op_vol_create();
    const char *sn = rand_from(snap_pool, SNAP_NAMES);
    bool clash = snap_find(v, sn) != NULL;
    begin("snapshot create %s %s", v->name, sn);
    int rc = vd_snapshot_create(M.st, v->name, sn);
    done(rc);
    if (clash) {
        expect_fail(rc, "vd_snapshot_create of an existing snapshot", EEXIST, 0);
        S.refused[OP_SNAP]++;
        return;
    }
    expect_ok(rc, "vd_snapshot_create");
    struct msnap *s = &v->snaps[v->nsnaps++];
    snprintf(s->name, NAMELEN, "%s", sn);
    snprintf(s->parent, NAMELEN, "%s", v->head);
    s->img = img_dup(v->img);
    snprintf(v->head, NAMELEN, "%s", sn);
    S.ok[OP_SNAP]++;
    if (rng_chance(&M.rng, 40)) {
        char n[2 * NAMELEN + 2];
        snprintf(n, sizeof(n), "%s@%s", v->name, sn);
        verify_image(n, s->img);
    }
}

/* A snapshot name that volume v does not have, preferably one another
 * volume has. */
static const char *foreign_snap(struct mvol *v)
{
    for (unsigned tries = 0; tries < 8; tries++) {
        struct mvol *o = pick_vol_with_snaps();
        if (!o || o == v)
            continue;
        const char *sn = o->snaps[rng_below(&M.rng, o->nsnaps)].name;
        if (!snap_find(v, sn))
            return sn;
    }
    for (unsigned i = 0; i < SNAP_NAMES; i++)
        if (!snap_find(v, snap_pool[i]))
            return snap_pool[i];
    return "nosuch";
}

static void op_rollback(void)
{
    struct mvol *v = pick_vol_with_snaps();
    if (!v || rng_chance(&M.rng, 10)) {
        v = v ? v : pick_vol();
        if (!v)
            return op_vol_create();
        const char *sn = foreign_snap(v);
        begin("rollback %s to %s (not its snapshot)", v->name, sn);
        int rc = vd_snapshot_rollback(M.st, v->name, sn);
        done(rc);
        expect_fail(rc, "vd_snapshot_rollback to a snapshot the volume does not have",
                    ENOENT, 0);
        S.refused[OP_ROLLBACK]++;
        return;
    }
    struct msnap *s = &v->snaps[rng_below(&M.rng, v->nsnaps)];
    begin("rollback %s to %s", v->name, s->name);
    int rc = vd_snapshot_rollback(M.st, v->name, s->name);
    done(rc);
    expect_ok(rc, "vd_snapshot_rollback");
    img_free(v->img);
    v->img = img_dup(s->img);
    snprintf(v->head, NAMELEN, "%s", s->name);
    S.ok[OP_ROLLBACK]++;
    verify_volume(v, false);
}

/* Snapshot commit and rm: the same effect on what every name reads. */
static void op_snap_remove(bool commit)
{
    enum op_kind k = commit ? OP_COMMIT : OP_SNAP_RM;
    const char *fn = commit ? "vd_snapshot_commit" : "vd_snapshot_remove";
    struct mvol *v = pick_vol_with_snaps();
    if (!v || rng_chance(&M.rng, 5)) {
        v = v ? v : pick_vol();
        if (!v)
            return op_vol_create();
        const char *sn = foreign_snap(v);
        begin("%s %s %s (no such snapshot)", commit ? "commit" : "snapshot rm",
              v->name, sn);
        int rc = commit ? vd_snapshot_commit(M.st, v->name, sn, NULL, NULL)
                        : vd_snapshot_remove(M.st, v->name, sn);
        done(rc);
        expect_fail(rc, fn, ENOENT, 0);
        S.refused[k]++;
        return;
    }
    /* commit favours the snapshot the volume descends from */
    struct msnap *s = &v->snaps[rng_below(&M.rng, v->nsnaps)];
    if (commit && v->head[0] && rng_chance(&M.rng, 50))
        s = snap_find(v, v->head);
    char sn[NAMELEN];
    snprintf(sn, sizeof(sn), "%s", s->name);
    bool strict = true;
    if (commit) {
        /* the contract covers snapshots the volume descends from whose later
         * snapshots all lie on the way to the present */
        strict = snap_is_current(v, sn) && !s->shared;
        for (unsigned i = 0; i < v->nsnaps; i++)
            if (!strcmp(v->snaps[i].parent, sn) && !snap_is_current(v, v->snaps[i].name))
                strict = false;
    }
    begin("%s %s %s%s", commit ? "commit" : "snapshot rm", v->name, sn,
          strict ? "" : " (outside the contract)");
    struct progress p = { 0 };
    int rc = commit ? vd_snapshot_commit(M.st, v->name, sn, progress_cb, &p)
                    : vd_snapshot_remove(M.st, v->name, sn);
    done(rc);
    check_progress(&p, fn);
    if (strict)
        expect_ok(rc, fn);
    else if (!tolerate(rc, k, fn))
        return;
    model_snap_remove(v, sn);
    S.ok[k]++;
    verify_volume(v, true);
}

static void op_vol_rm(void)
{
    struct mvol *v = pick_vol();
    if (!v || rng_chance(&M.rng, 5)) {
        struct mtpl *t = pick_tpl();
        const char *name = t && rng_chance(&M.rng, 50) ? t->name : "nosuch";
        begin("volume rm %s (not a volume)", name);
        int rc = vd_volume_remove(M.st, name);
        done(rc);
        if (t && name == t->name)
            expect_fail(rc, "vd_volume_remove of a template", ENOENT, EINVAL, EPERM,
                        EROFS, EBUSY, 0);
        else
            expect_fail(rc, "vd_volume_remove of an unknown name", ENOENT, 0);
        S.refused[OP_VOL_RM]++;
        return;
    }
    begin("volume rm %s", v->name);
    int rc = vd_volume_remove(M.st, v->name);
    done(rc);
    expect_ok(rc, "vd_volume_remove");
    struct idset deps = v->deps;
    memset(&v->deps, 0, sizeof(v->deps));
    model_vol_free(v);
    S.ok[OP_VOL_RM]++;
    /* what shared layers with it still reads the same */
    for (unsigned i = 0; i < TPL_NAMES; i++) {
        struct mtpl *t = &M.tpls[i];
        if (!t->used)
            continue;
        for (unsigned j = 0; j < t->nvers; j++)
            if (ids_has(&deps, t->vers[j].id) && rng_chance(&M.rng, 50))
                verify_version(t, &t->vers[j]);
    }
    ids_free(&deps);
}

static void op_resize(void)
{
    struct mvol *v = pick_vol();
    if (!v)
        return op_vol_create();
    uint64_t old = v->img->size, size;
    unsigned a = (unsigned)rng_below(&M.rng, 100);
    bool shrink = a < 15;
    if (shrink) {
        size = old - 512 * (1 + rng_below(&M.rng, old / 512 - 1));
    } else if (a < 21 && old < (1ull << 30)) {
        /* large: beyond what the top's index covers with 4 KiB blocks */
        size = (1ull << 30) + 512 * rng_below(&M.rng, 1u << 21);
        S.large_resizes++;
    } else {
        uint64_t room = old < MAX_GROWN_SIZE ? (MAX_GROWN_SIZE - old) / 512 : 0;
        if (room == 0 || room > 2048)
            room = 2048;
        size = old + 512 * (1 + rng_below(&M.rng, room));
    }
    begin("resize %s from %" PRIu64 " to %" PRIu64, v->name, old, size);
    int rc = vd_volume_resize(M.st, v->name, size);
    done(rc);
    if (shrink) {
        expect_fail(rc, "vd_volume_resize to a smaller size", EINVAL, 0);
        S.refused[OP_RESIZE]++;
        return;
    }
    expect_ok(rc, "vd_volume_resize");
    img_grow(v->img, size);
    S.ok[OP_RESIZE]++;
    if (rng_chance(&M.rng, 60))
        verify_volume(v, rng_chance(&M.rng, 30));
}

static void mark_head_shared(struct mvol *v)
{
    struct msnap *s = v->head[0] ? snap_find(v, v->head) : NULL;
    if (s)
        s->shared = true;
}

static void op_tpl_create(void)
{
    struct mvol *v = pick_vol();
    if (!v)
        return op_vol_create();
    const char *name = rand_from(tpl_pool, TPL_NAMES);
    bool clash = tpl_find(name) != NULL;
    if (!clash && rng_chance(&M.rng, 8)) {
        struct mvol *o = pick_vol();
        name = o->name;            /* a volume's name */
        clash = true;
    }
    bool bad = !clash && rng_chance(&M.rng, 4);
    if (bad)
        name = bad_names[rng_below(&M.rng, NBAD)];
    bool nofrom = !clash && !bad && rng_chance(&M.rng, 4);
    const char *from = nofrom ? "nosuch" : v->name;
    begin("template create %s from %s", name, from);
    int rc = vd_template_create(M.st, name, from);
    done(rc);
    if (clash || bad || nofrom) {
        expect_fail(rc, clash ? "vd_template_create of an existing name" :
                    bad ? "vd_template_create with a bad name" :
                    "vd_template_create from an unknown volume",
                    clash ? EEXIST : bad ? EINVAL : ENOENT, 0);
        S.refused[OP_TPL_CREATE]++;
        return;
    }
    expect_ok(rc, "vd_template_create");
    struct mtpl *t = NULL;
    for (unsigned i = 0; i < TPL_NAMES && !t; i++)
        if (!M.tpls[i].used)
            t = &M.tpls[i];
    memset(t, 0, sizeof(*t));
    t->used = true;
    snprintf(t->name, NAMELEN, "%s", name);
    t->latest = 1;
    t->nvers = 1;
    struct mver *ver = &t->vers[0];
    ver->v = 1;
    ver->img = img_dup(v->img);
    ver->bs = v->bs;
    ver->id = ++M.next_id;
    ids_union(&ver->deps, &v->deps);
    ids_add(&v->deps, ver->id);        /* the volume may keep sharing its layers */
    mark_head_shared(v);
    S.ok[OP_TPL_CREATE]++;
    verify_version(t, ver);
    verify_volume(v, false);
}

static void op_tpl_update(void)
{
    struct mtpl *t = pick_tpl();
    struct mvol *v = pick_vol();
    if (!t || !v || rng_chance(&M.rng, 6)) {
        const char *name = "nosuch", *from = v ? v->name : "nosuch";
        bool volname = false;
        if (t && !v)
            name = t->name;
        else if (v && rng_chance(&M.rng, 50)) {
            name = v->name;
            volname = true;
        }
        begin("template update %s from %s (invalid)", name, from);
        int rc = vd_template_update(M.st, name, from);
        done(rc);
        if (volname)
            expect_fail(rc, "vd_template_update of a volume", ENOENT, EINVAL, 0);
        else
            expect_fail(rc, "vd_template_update of an unknown template", ENOENT, 0);
        S.refused[OP_TPL_UPDATE]++;
        return;
    }
    if (t->nvers >= MAX_VERSIONS)
        return;
    begin("template update %s from %s (version %u)", t->name, v->name, t->latest + 1);
    int rc = vd_template_update(M.st, t->name, v->name);
    done(rc);
    expect_ok(rc, "vd_template_update");
    struct mver *ver = &t->vers[t->nvers++];
    memset(ver, 0, sizeof(*ver));
    ver->v = ++t->latest;
    ver->img = img_dup(v->img);
    ver->bs = v->bs;
    ver->id = ++M.next_id;
    ids_union(&ver->deps, &v->deps);
    ids_add(&v->deps, ver->id);
    mark_head_shared(v);
    S.ok[OP_TPL_UPDATE]++;
    verify_version(t, ver);
    if (rng_chance(&M.rng, 50))
        verify_volume(v, false);
}

static void op_clone(bool full)
{
    enum op_kind k = full ? OP_FULL_CLONE : OP_CLONE;
    unsigned flags = full ? VD_CLONE_FULL : 0;
    struct mtpl *t = pick_tpl();
    if (!t) {
        if (rng_chance(&M.rng, 50))
            return op_tpl_create();
        begin("clone nosuch");
        int rc = vd_clone(M.st, "nosuch", 0, "v0", flags, NULL, NULL);
        done(rc);
        expect_fail(rc, "vd_clone of an unknown template", ENOENT, 0);
        S.refused[k]++;
        return;
    }
    bool clash;
    const char *name = pick_new_vol_name(&clash);
    uint32_t version = 0;
    unsigned a = (unsigned)rng_below(&M.rng, 100);
    if (a < 45)
        version = t->vers[rng_below(&M.rng, t->nvers)].v;
    bool nover = !clash && a >= 92;
    if (nover)
        version = t->latest + 1 + (uint32_t)rng_below(&M.rng, 3);
    bool bad = !clash && !nover && rng_chance(&M.rng, 3);
    if (bad)
        name = bad_names[rng_below(&M.rng, NBAD)];
    begin("%s %s@%u -> %s", full ? "full clone" : "clone", t->name, version, name);
    struct progress p = { 0 };
    int rc = vd_clone(M.st, t->name, version, name, flags, progress_cb, &p);
    done(rc);
    check_progress(&p, "vd_clone");
    if (clash || nover || bad) {
        if (clash)
            expect_fail(rc, "vd_clone to an existing name", EEXIST, 0);
        else if (nover)
            expect_fail(rc, "vd_clone of a version that does not exist", ENOENT,
                        EINVAL, 0);
        else
            expect_fail(rc, "vd_clone to a bad name", EINVAL, 0);
        S.refused[k]++;
        return;
    }
    expect_ok(rc, full ? "vd_clone (full)" : "vd_clone");
    struct mver *ver = version ? ver_find(t, version) : ver_find(t, t->latest);
    struct mvol *v = model_vol_new(name);
    v->img = img_dup(ver->img);
    v->bs = ver->bs;
    v->digest = -1;
    if (!full) {
        snprintf(v->tpl, NAMELEN, "%s", t->name);
        v->tplver = ver->v;
        ids_union(&v->deps, &ver->deps);
        ids_add(&v->deps, ver->id);
    }
    S.ok[k]++;
    verify_volume(v, false);
}

static void op_flatten(void)
{
    /* mostly linked clones */
    struct mvol *v = NULL;
    for (unsigned tries = 0; tries < 6 && !(v && v->tpl[0] && !v->link_unsure); tries++)
        v = pick_vol();
    if (!v)
        return op_vol_create();
    bool linked = v->tpl[0] && !v->link_unsure;
    bool strict = linked && v->nsnaps == 0;
    begin("flatten %s%s", v->name, strict ? "" : linked ? " (has snapshots)" :
          " (not a linked clone)");
    struct progress p = { 0 };
    int rc = vd_volume_flatten(M.st, v->name, progress_cb, &p);
    done(rc);
    check_progress(&p, "vd_volume_flatten");
    if (strict)
        expect_ok(rc, "vd_volume_flatten");
    else if (!tolerate(rc, OP_FLATTEN, "vd_volume_flatten"))
        return;
    if (linked && v->nsnaps)
        v->link_unsure = true;     /* its snapshots still read the template */
    else if (!v->link_unsure)
        v->tpl[0] = '\0';
    S.ok[OP_FLATTEN]++;
    verify_volume(v, v->nsnaps > 0);
}

static void op_tpl_rm(void)
{
    struct mtpl *t = pick_tpl();
    if (!t || rng_chance(&M.rng, 5)) {
        struct mvol *v = pick_vol();
        const char *name = v && rng_chance(&M.rng, 50) ? v->name : "nosuch";
        begin("template rm %s (not a template)", name);
        int rc = vd_template_remove(M.st, name);
        done(rc);
        expect_fail(rc, "vd_template_remove of a name that is not a template", ENOENT,
                    EINVAL, 0);
        S.refused[OP_TPL_RM]++;
        return;
    }
    unsigned sure, unsure;
    clone_counts(t->name, 0, &sure, &unsure);
    bool deps = tpl_has_dependents(t);
    begin("template rm %s (%u linked clones%s)", t->name, sure + unsure,
          deps ? ", shares layers" : "");
    int rc = vd_template_remove(M.st, t->name);
    done(rc);
    if (sure) {
        expect_fail(rc, "vd_template_remove of a template with linked clones", EBUSY, 0);
        /* the message names the clones */
        bool named = false;
        for (unsigned i = 0; i < VOL_NAMES; i++)
            if (M.vols[i].used && !M.vols[i].link_unsure &&
                !strcmp(M.vols[i].tpl, t->name) && strstr(vd_errmsg(), M.vols[i].name))
                named = true;
        if (!named)
            fail("vd_template_remove refused but its message names no clone: %s",
                 vd_errmsg());
        S.refused[OP_TPL_RM]++;
        return;
    }
    if (!deps && !unsure)
        expect_ok(rc, "vd_template_remove");
    else if (!tolerate(rc, OP_TPL_RM, "vd_template_remove"))
        return;
    struct idset ids = { 0 };
    for (unsigned k = 0; k < t->nvers; k++) {
        ids_add(&ids, t->vers[k].id);
        img_free(t->vers[k].img);
        ids_free(&t->vers[k].deps);
    }
    /* clones flattened with snapshots: no longer clones of a template that
     * is gone (their snapshots keep its layers) */
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        struct mvol *v = &M.vols[i];
        if (v->used && v->link_unsure && !strcmp(v->tpl, t->name)) {
            v->tpl[0] = '\0';
            v->link_unsure = false;
        }
    }
    memset(t, 0, sizeof(*t));
    S.ok[OP_TPL_RM]++;
    verify_dependents_of(&ids);
    ids_free(&ids);
}

/* Open "name" with flags; it must fail with one of the listed errnos. */
static void expect_open_fails(const char *name, unsigned flags, const char *what,
                              int e1, int e2, int e3, int e4)
{
    struct vd_chain *c = NULL;
    int rc = vd_store_open_chain(M.st, M.ctx, name, flags, &c);
    if (rc >= 0) {
        M.chain2 = c;
        fail("vd_store_open_chain(%s, %s) succeeded: %s", name,
             flags & VD_OPEN_RDWR ? "read-write" : "read-only", what);
    }
    expect_fail(rc, what, e1, e2, e3, e4, 0);
}

/* Invalid operations: each must fail with the expected error and a
 * message, and change nothing (check_lists after the operation and the
 * read-backs verify that). */
static void op_invalid(void)
{
    struct mvol *v = pick_vol();
    struct mtpl *t = pick_tpl();
    const char *bad = bad_names[rng_below(&M.rng, NBAD)];
    char n[2 * NAMELEN + 16];
    unsigned which = (unsigned)rng_below(&M.rng, 22);
    int rc;
    begin("invalid operation %u", which);
    switch (which) {
    case 0:
        expect_open_fails("nosuch", 0, "opening an unknown name", ENOENT, 0, 0, 0);
        break;
    case 1:
        if (!v)
            break;
        snprintf(n, sizeof(n), "%s@%s", v->name, foreign_snap(v));
        expect_open_fails(n, 0, "opening an unknown snapshot", ENOENT, 0, 0, 0);
        break;
    case 2:
        if (!t)
            break;
        snprintf(n, sizeof(n), "%s@%u", t->name, t->latest + 7);
        expect_open_fails(n, 0, "opening an unknown template version", ENOENT, EINVAL,
                          0, 0);
        break;
    case 3:
        if (!v || !v->nsnaps)
            break;
        snprintf(n, sizeof(n), "%s@%s", v->name, v->snaps[0].name);
        expect_open_fails(n, VD_OPEN_RDWR, "opening a snapshot for writing", EROFS,
                          EPERM, EACCES, EINVAL);
        break;
    case 4:
        if (!t)
            break;
        if (rng_chance(&M.rng, 50))
            snprintf(n, sizeof(n), "%s", t->name);
        else
            snprintf(n, sizeof(n), "%s@%u", t->name, t->vers[0].v);
        expect_open_fails(n, VD_OPEN_RDWR, "opening a template for writing", EROFS,
                          EPERM, EACCES, EINVAL);
        break;
    case 5:
        rc = vd_snapshot_create(M.st, "nosuch", "s0");
        expect_fail(rc, "vd_snapshot_create on an unknown volume", ENOENT, 0);
        break;
    case 6:
        if (!v)
            break;
        rc = vd_snapshot_create(M.st, v->name, bad);
        expect_fail(rc, "vd_snapshot_create with a bad name", EINVAL, 0);
        break;
    case 7:
        if (!t)
            break;
        rc = vd_snapshot_create(M.st, t->name, "s0");
        expect_fail(rc, "vd_snapshot_create on a template", ENOENT, EINVAL, EROFS, EPERM,
                    0);
        break;
    case 8:
        rc = vd_snapshot_rollback(M.st, "nosuch", "s0");
        expect_fail(rc, "vd_snapshot_rollback of an unknown volume", ENOENT, 0);
        break;
    case 9:
        if (!v)
            break;
        rc = vd_volume_resize(M.st, v->name, v->img->size - 512);
        expect_fail(rc, "vd_volume_resize to a smaller size", EINVAL, 0);
        rc = vd_volume_resize(M.st, v->name, v->img->size + 100);
        expect_fail(rc, "vd_volume_resize to a size not a multiple of 512", EINVAL, 0);
        rc = vd_volume_resize(M.st, v->name, VD_MAX_SIZE + 512);
        expect_fail(rc, "vd_volume_resize beyond VD_MAX_SIZE", EINVAL, 0);
        break;
    case 10:
        rc = vd_volume_resize(M.st, "nosuch", 1u << 20);
        expect_fail(rc, "vd_volume_resize of an unknown volume", ENOENT, 0);
        if (t) {
            rc = vd_volume_resize(M.st, t->name, 64u << 20);
            expect_fail(rc, "vd_volume_resize of a template", ENOENT, EINVAL, EROFS,
                        EPERM, 0);
        }
        break;
    case 11: {
        bool clash;
        const char *name = pick_new_vol_name(&clash);
        if (clash)
            break;
        rc = vd_volume_create(M.st, name, 0, NULL);
        expect_fail(rc, "vd_volume_create of size 0", EINVAL, 0);
        rc = vd_volume_create(M.st, name, (1u << 20) + 100, NULL);
        expect_fail(rc, "vd_volume_create of a size not a multiple of 512", EINVAL, 0);
        rc = vd_volume_create(M.st, name, VD_MAX_SIZE + 512, NULL);
        expect_fail(rc, "vd_volume_create beyond VD_MAX_SIZE", EINVAL, 0);
        struct vd_create_opts o = { .block_size = 3000 };
        rc = vd_volume_create(M.st, name, 1u << 20, &o);
        expect_fail(rc, "vd_volume_create with block size 3000", EINVAL, 0);
        break;
    }
    case 12:
        rc = vd_volume_create(M.st, bad, 1u << 20, NULL);
        expect_fail(rc, "vd_volume_create with a bad name", EINVAL, 0);
        break;
    case 13: {
        struct vd_volume_info vi;
        struct vd_snapshot_info *si = NULL;
        struct vd_template_info ti;
        struct vd_template_version *tv = NULL;
        size_t k = 0;
        rc = vd_volume_info(M.st, "nosuch", &vi);
        expect_fail(rc, "vd_volume_info of an unknown volume", ENOENT, 0);
        rc = vd_snapshot_list(M.st, "nosuch", &si, &k);
        expect_fail(rc, "vd_snapshot_list of an unknown volume", ENOENT, 0);
        rc = vd_template_info(M.st, "nosuch", &ti, &tv, &k);
        expect_fail(rc, "vd_template_info of an unknown template", ENOENT, 0);
        if (v) {
            rc = vd_template_info(M.st, v->name, &ti, &tv, &k);
            expect_fail(rc, "vd_template_info of a volume", ENOENT, EINVAL, 0);
        }
        break;
    }
    case 14:
        rc = vd_volume_flatten(M.st, "nosuch", NULL, NULL);
        expect_fail(rc, "vd_volume_flatten of an unknown volume", ENOENT, 0);
        break;
    case 15:
        if (!v)
            break;
        rc = vd_snapshot_remove(M.st, v->name, foreign_snap(v));
        expect_fail(rc, "vd_snapshot_remove of an unknown snapshot", ENOENT, 0);
        rc = vd_snapshot_commit(M.st, v->name, foreign_snap(v), NULL, NULL);
        expect_fail(rc, "vd_snapshot_commit of an unknown snapshot", ENOENT, 0);
        break;
    case 16:
        if (!v)
            break;
        rc = vd_clone(M.st, v->name, 0, "zz", 0, NULL, NULL);
        expect_fail(rc, "vd_clone of a volume (not a template)", ENOENT, EINVAL, 0);
        break;
    case 17:
        if (!v)
            break;
        rc = vd_template_create(M.st, bad, v->name);
        expect_fail(rc, "vd_template_create with a bad name", EINVAL, 0);
        break;
    case 18:
        if (!t)
            break;
        rc = vd_template_create(M.st, "zz", t->name);
        expect_fail(rc, "vd_template_create from a template (not a volume)", ENOENT,
                    EINVAL, EPERM, 0);
        break;
    case 19:
        if (!v)
            break;
        rc = vd_snapshot_create(M.st, v->name, "");
        expect_fail(rc, "vd_snapshot_create with an empty name", EINVAL, 0);
        rc = vd_snapshot_rollback(M.st, v->name, bad);
        expect_fail(rc, "vd_snapshot_rollback to a bad name", ENOENT, EINVAL, 0);
        break;
    case 20:
        if (!v)
            break;
        snprintf(n, sizeof(n), "%s@", v->name);
        expect_open_fails(n, 0, "opening VOL@ (empty snapshot name)", ENOENT, EINVAL,
                          0, 0);
        break;
    case 21:
        /* a volume open for writing cannot be removed; the holder is named */
        if (!v)
            break;
        open_rw(v);
        busy_checks(v);
        {
            struct vd_chain *c = M.chain;
            M.chain = NULL;
            check_rc(vd_chain_close(c), "vd_chain_close");
        }
        break;
    }
    done(-EINVAL);
    S.refused[OP_INVALID]++;
}

static void op_verify(void)
{
    unsigned a = (unsigned)rng_below(&M.rng, 100);
    struct mtpl *t = pick_tpl();
    if (a < 30 && t) {
        struct mver *ver = &t->vers[rng_below(&M.rng, t->nvers)];
        begin("verify %s@%u", t->name, ver->v);
        verify_version(t, ver);
    } else {
        struct mvol *v = pick_vol();
        if (!v)
            return;
        begin("verify %s and its snapshots", v->name);
        verify_volume(v, true);
    }
    done(0);
    S.ok[OP_VERIFY]++;
}

static void op_check(bool reopen)
{
    begin("store check%s", reopen ? " and reopen" : "");
    struct mvol *v = pick_vol();
    if (v && rng_chance(&M.rng, 30))
        store_check(v->name, 0);
    store_check(NULL, rng_chance(&M.rng, 30) ? VD_CHECK_VERIFY : 0);
    check_lists(true);
    size_t nfiles = scan_layers();
    check_usage(nfiles);
    if (reopen) {
        reopen_store();
        check_lists(true);
    }
    done(0);
    S.ok[reopen ? OP_REOPEN : OP_CHECK]++;
}

/* ------------------------------------------------------------------ */
/* The run. */

static enum op_kind pick_op(void)
{
    unsigned total = 0;
    for (int k = 0; k < OP_KINDS; k++)
        total += op_weights[k];
    unsigned x = (unsigned)rng_below(&M.rng, total);
    for (int k = 0; k < OP_KINDS; k++) {
        if (x < op_weights[k])
            return (enum op_kind)k;
        x -= op_weights[k];
    }
    return OP_IO;
}

static void do_op(enum op_kind k)
{
    switch (k) {
    case OP_IO: op_io(); break;
    case OP_VERIFY: op_verify(); break;
    case OP_SNAP: op_snap(); break;
    case OP_ROLLBACK: op_rollback(); break;
    case OP_COMMIT: op_snap_remove(true); break;
    case OP_SNAP_RM: op_snap_remove(false); break;
    case OP_VOL_CREATE: op_vol_create(); break;
    case OP_VOL_RM: op_vol_rm(); break;
    case OP_RESIZE: op_resize(); break;
    case OP_TPL_CREATE: op_tpl_create(); break;
    case OP_TPL_UPDATE: op_tpl_update(); break;
    case OP_CLONE: op_clone(false); break;
    case OP_FULL_CLONE: op_clone(true); break;
    case OP_FLATTEN: op_flatten(); break;
    case OP_TPL_RM: op_tpl_rm(); break;
    case OP_INVALID: op_invalid(); break;
    case OP_CHECK: op_check(false); break;
    case OP_REOPEN: op_check(true); break;
    default: break;
    }
}

/* Removes every volume, then every template (those others were made from
 * last), and checks that no layer file is left. */
static void remove_everything(void)
{
    for (unsigned i = 0; i < VOL_NAMES; i++) {
        struct mvol *v = &M.vols[i];
        if (!v->used)
            continue;
        begin("final volume rm %s", v->name);
        int rc = vd_volume_remove(M.st, v->name);
        done(rc);
        expect_ok(rc, "vd_volume_remove");
        model_vol_free(v);
        check_lists(false);
    }
    for (unsigned pass = 0; ntpls() > 0; pass++) {
        if (pass > TPL_NAMES)
            fail("templates cannot be removed although no volume is left");
        for (unsigned i = 0; i < TPL_NAMES; i++) {
            struct mtpl *t = &M.tpls[i];
            if (!t->used)
                continue;
            bool deps = tpl_has_dependents(t);
            begin("final template rm %s%s", t->name, deps ? " (others made from it)" : "");
            int rc = vd_template_remove(M.st, t->name);
            done(rc);
            if (!deps)
                expect_ok(rc, "vd_template_remove");
            else if (!tolerate(rc, OP_TPL_RM, "vd_template_remove"))
                continue;
            for (unsigned k = 0; k < t->nvers; k++) {
                img_free(t->vers[k].img);
                ids_free(&t->vers[k].deps);
            }
            memset(t, 0, sizeof(*t));
            check_lists(false);
        }
    }
    begin("final checks");
    store_check(NULL, VD_CHECK_VERIFY);
    struct strset files = { 0 };
    list_layer_dir(&files);
    if (files.n)
        fail("layers/ is not empty after removing everything: %zu files, first %s",
             files.n, files.v[0]);
    strset_free(&files);
    check_usage(0);
    reopen_store();
    check_lists(true);
    check_usage(0);
}

static void rm_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
                rm_tree(p);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [--seed N] [--ops N] [--verify-every N] [--check-every N]"
            " [--dir DIR] [--keep] [-v]\n"
            "  a random sequence of store operations checked against a model;\n"
            "  --seed and the other options replay a failure\n", argv0);
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
        .seed = DEFAULT_SEED, .ops = DEFAULT_OPS, .verify_every = DEFAULT_VERIFY,
        .check_every = DEFAULT_CHECK, .argv0 = argv[0],
    };
    const char *tmp = getenv("TMPDIR");
    cfg.dir = tmp && *tmp ? tmp : "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--seed") && val) {
            cfg.seed = parse_u64(argv[0], val);
            i++;
        } else if (!strcmp(a, "--ops") && val) {
            cfg.ops = (unsigned)parse_u64(argv[0], val);
            i++;
        } else if (!strcmp(a, "--verify-every") && val) {
            cfg.verify_every = (unsigned)parse_u64(argv[0], val);
            i++;
        } else if (!strcmp(a, "--check-every") && val) {
            cfg.check_every = (unsigned)parse_u64(argv[0], val);
            i++;
        } else if (!strcmp(a, "--dir") && val) {
            cfg.dir = val;
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
    CFG = &cfg;
    double t0 = now_sec();
    printf("test-store-model: seed %" PRIu64 ", %u operations\n", cfg.seed, cfg.ops);
    fflush(stdout);

    M.rng.s = cfg.seed;
    M.wbuf = aligned_alloc(4096, MAX_ZERO);
    M.rbuf = aligned_alloc(4096, CHUNK);
    M.ebuf = aligned_alloc(4096, CHUNK);
    if (!M.wbuf || !M.rbuf || !M.ebuf) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    char parent[PATH_MAX - 64];
    snprintf(parent, sizeof(parent), "%s/vdisk-store-model-XXXXXX", cfg.dir);
    if (!mkdtemp(parent)) {
        fprintf(stderr, "mkdtemp %s: %s\n", parent, strerror(errno));
        return 1;
    }
    snprintf(store_dir, sizeof(store_dir), "%s/store", parent);
    snprintf(cur_op, sizeof(cur_op), "setup");
    int rc = vd_store_open(store_dir, 0, &M.st);
    if (rc != -ENOENT)
        fail("vd_store_open of a missing store without VD_STORE_CREATE returned %d,"
             " expected -ENOENT", rc);
    if (mkdir(store_dir, 0755) < 0)
        fail("mkdir %s: %s", store_dir, strerror(errno));
    rc = vd_store_open(store_dir, 0, &M.st);
    expect_fail(rc, "vd_store_open of an empty directory", ENOENT, EUCLEAN, 0);
    rmdir(store_dir);
    char dp[PATH_MAX];
    setenv("VDISK_STORE", store_dir, 1);
    check_rc(vd_store_default_path(dp, sizeof(dp)), "vd_store_default_path");
    if (strcmp(dp, store_dir))
        fail("vd_store_default_path with $VDISK_STORE=%s gives %s", store_dir, dp);
    rc = vd_store_default_path(dp, 8);
    if (rc != -ENAMETOOLONG)
        fail("vd_store_default_path into 8 bytes returned %d, expected -ENAMETOOLONG", rc);
    unsetenv("VDISK_STORE");
    check_rc(vd_store_open(store_dir, VD_STORE_CREATE, &M.st), "vd_store_open (create)");
    check_rc(vd_ctx_new(0, &M.ctx), "vd_ctx_new");
    check_lists(true);

    unsigned step = cfg.ops / 10 ? cfg.ops / 10 : 1;
    for (opno = 1; opno <= cfg.ops; opno++) {
        enum op_kind k = pick_op();
        double t1 = now_sec();
        do_op(k);
        double t2 = now_sec();
        if (k != OP_IO && k != OP_VERIFY)
            check_lists(false);
        S.list_secs += now_sec() - t2;
        S.secs[k] += now_sec() - t1;
        if (cfg.verify_every && opno % cfg.verify_every == 0) {
            begin("full verification");
            verify_all();
        }
        if (cfg.check_every && opno % cfg.check_every == 0)
            op_check(true);
        if (opno % step == 0) {
            unsigned ns = 0, nv = 0;
            for (unsigned i = 0; i < VOL_NAMES; i++)
                ns += M.vols[i].used ? M.vols[i].nsnaps : 0;
            for (unsigned i = 0; i < TPL_NAMES; i++)
                nv += M.tpls[i].used ? M.tpls[i].nvers : 0;
            printf("  op %u/%u: %u volumes, %u snapshots, %u templates (%u versions),"
                   " %" PRIu64 " MiB verified, %.1f s\n", opno, cfg.ops, nvols(), ns,
                   ntpls(), nv, S.bytes_verified >> 20, now_sec() - t0);
            fflush(stdout);
        }
    }
    opno = cfg.ops;
    begin("final verification");
    verify_all();
    op_check(true);
    remove_everything();

    vd_store_close(M.st);
    M.st = NULL;
    vd_ctx_free(M.ctx);
    M.ctx = NULL;
    if (!cfg.keep)
        rm_tree(parent);

    printf("  done / refused as expected / refused where the contract allows, time:\n");
    for (int k = 0; k < OP_KINDS; k++)
        printf("    %-16s %6" PRIu64 " %6" PRIu64 " %6" PRIu64 "   %5.1f s\n", op_names[k],
               S.ok[k], S.refused[k], S.tolerated[k], S.secs[k]);
    printf("  %" PRIu64 " error cases checked, %" PRIu64 " busy checks (%" PRIu64
           " from another process), %" PRIu64 " MiB written, %" PRIu64 " MiB zeroed\n",
           S.invalid_checked, S.busy_checked, S.busy_other, S.bytes_written >> 20,
           S.bytes_zeroed >> 20);
    printf("  %" PRIu64 " images (%" PRIu64 " MiB) read back, %" PRIu64
           " full verifications, %" PRIu64 " store checks, %" PRIu64 " reopens,"
           " up to %" PRIu64 " layer files, %" PRIu64 " template versions dropped by"
           " the library, %" PRIu64 " progress calls\n", S.images_verified,
           S.bytes_verified >> 20, S.full_verifies, S.store_checks, S.reopens,
           S.layer_files_max, S.versions_dropped, S.progress_calls);
    printf("  %" PRIu64 " resizes to more than 1 GiB\n", S.large_resizes);
    printf("  %.1f s reading back, %.1f s comparing listings\n", S.verify_secs,
           S.list_secs);
    printf("test-store-model: PASS, seed %" PRIu64 ", %u operations, %.1f s\n",
           cfg.seed, cfg.ops, now_sec() - t0);
    free(M.wbuf);
    free(M.rbuf);
    free(M.ebuf);
    return 0;
}
