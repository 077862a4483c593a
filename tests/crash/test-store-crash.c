/*
 * test-store-crash.c - kill -9 in the middle of every multi-step store
 * operation.
 *
 * The parent builds a small store with known content (volumes with a
 * snapshot chain and a snapshot tree, a template with two versions, a
 * linked clone, a template without clones) and keeps a model of it: the
 * content of every volume, snapshot and template version, snapshot
 * parents and "current" flags, template links and clone counts.  For each
 * operation kind, the model gives the state before and after the
 * operation.  Then for n = 1, 2, 3, ... a fresh copy of the prepared store
 * is made and a child process opens it, calls vdi_set_kill_step(n) and
 * runs the operation; the store calls vdi_step() between its durable
 * steps, and the n-th one kills the child with SIGKILL.  The parent then
 * reopens the store (vd_store_open finishes or undoes the interrupted
 * operation) and checks:
 *  (a) vd_store_check finds no corruption and no digest mismatch (leaked
 *      space inside a layer file is allowed; after check --repair none is
 *      left);
 *  (b) every file in layers/ belongs to the chain of a volume, snapshot or
 *      template version, and the store directory holds no other new file;
 *  (c) the whole store reads back as the model's state before the
 *      operation or as the state after it (names, sizes, snapshot tree,
 *      template links, clone counts and every byte; all before or all
 *      after, never a mix);
 *  (d) the store stays usable: if it is in the before state the operation
 *      runs again and gives the after state; then a probe volume is
 *      created, written, snapshotted, rolled back and removed, leaving
 *      no file and no leak behind.
 * Before that, the recovery itself is killed: for m = 1, 2, ... another
 * child opens a copy of the crashed store with its m-th step armed (the
 * recovery resumes merges and flattens through vdi_step too), and that
 * copy is checked the same way, until an open runs to the end.
 * When the child finishes without being killed (n is past the last step)
 * the store must be in the after state, and the next operation kind
 * starts.  An operation without any crash point fails the test (it would
 * mean the store does not call vdi_step there); variants of one operation
 * (e.g. snapshot rm in the middle, of a branch point, of a leaf) count
 * together, since one of them may be a single catalog transaction.
 * Disks are read in full up to 8 MiB; beyond (a resize to 2 GiB) block
 * status is asked, and data extents there must read as zeroes.
 *
 * Only kill -9 is simulated (the page cache survives): the power-loss shim
 * of test-crash.c cannot cover the catalog, whose writes LMDB does itself.
 *
 * Exit status: 0 success, 1 failure (with the replay command).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
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
#include "vd-testing.h"

#define DEFAULT_SEED    20240702ull
#define NAMELEN         (VD_NAME_MAX + 1)
#define MAX_VOLS        12u
#define MAX_SNAPS       8u
#define MAX_TPLS        6u
#define MAX_VERS        6u
#define MAX_STEPS       200u      /* more kill points than this: a runaway */
#define CHUNK           (1u << 20)
#define DATA_MAX        (8u << 20)   /* bytes read and modelled; beyond: zeroes */
#define BIG_SIZE        ((2ull << 30) + 512)

/* ------------------------------------------------------------------ */
/* Random numbers (splitmix64). */

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
/* Operation kinds. */

enum op_kind {
    K_SNAP_CREATE, K_ROLLBACK, K_COMMIT, K_COMMIT_OLDER, K_SNAP_RM_MIDDLE,
    K_SNAP_RM_BRANCH, K_SNAP_RM_LEAF, K_CLONE, K_FULL_CLONE, K_FULL_CLONE_DEEP,
    K_FLATTEN, K_TPL_CREATE, K_TPL_UPDATE, K_TPL_RM, K_VOL_RM, K_CLONE_RM, K_RESIZE,
    K_RESIZE_PUSH, K_VOL_CREATE, K_KINDS
};

/* Variants of one operation share a group: each group needs crash points
 * (a variant alone may be a single catalog transaction). */
static const char *const kind_group[K_KINDS] = {
    [K_SNAP_CREATE] = "snapshot create",
    [K_ROLLBACK] = "rollback",
    [K_COMMIT] = "commit",
    [K_COMMIT_OLDER] = "commit",
    [K_SNAP_RM_MIDDLE] = "snapshot rm",
    [K_SNAP_RM_BRANCH] = "snapshot rm",
    [K_SNAP_RM_LEAF] = "snapshot rm",
    [K_CLONE] = "linked clone",
    [K_FULL_CLONE] = "full clone",
    [K_FULL_CLONE_DEEP] = "full clone",
    [K_FLATTEN] = "flatten",
    [K_TPL_CREATE] = "template create",
    [K_TPL_UPDATE] = "template update",
    [K_TPL_RM] = "template rm",
    [K_VOL_RM] = "volume rm",
    [K_CLONE_RM] = "volume rm",
    [K_RESIZE] = "resize",
    [K_RESIZE_PUSH] = "resize",
    [K_VOL_CREATE] = "volume create",
};

static const char *const kind_names[K_KINDS] = {
    [K_SNAP_CREATE] = "snapshot-create",
    [K_ROLLBACK] = "rollback",
    [K_COMMIT] = "commit",
    [K_COMMIT_OLDER] = "commit-older",
    [K_SNAP_RM_MIDDLE] = "snapshot-rm-middle",
    [K_SNAP_RM_BRANCH] = "snapshot-rm-branch",
    [K_SNAP_RM_LEAF] = "snapshot-rm-leaf",
    [K_CLONE] = "linked-clone",
    [K_FULL_CLONE] = "full-clone",
    [K_FULL_CLONE_DEEP] = "full-clone-deep",
    [K_FLATTEN] = "flatten",
    [K_TPL_CREATE] = "template-create",
    [K_TPL_UPDATE] = "template-update",
    [K_TPL_RM] = "template-rm",
    [K_VOL_RM] = "volume-rm",
    [K_CLONE_RM] = "clone-rm",
    [K_RESIZE] = "resize",
    [K_RESIZE_PUSH] = "resize-new-delta",
    [K_VOL_CREATE] = "volume-create",
};

static const char *const kind_desc[K_KINDS] = {
    [K_SNAP_CREATE] = "vd_snapshot_create(a, n)",
    [K_ROLLBACK] = "vd_snapshot_rollback(a, s1)",
    [K_COMMIT] = "vd_snapshot_commit(a, s2): the newest, merges the top",
    [K_COMMIT_OLDER] = "vd_snapshot_commit(a, s1): an older one",
    [K_SNAP_RM_MIDDLE] = "vd_snapshot_remove(a, s1): between base and s2",
    [K_SNAP_RM_BRANCH] = "vd_snapshot_remove(b, x1): two branches below it",
    [K_SNAP_RM_LEAF] = "vd_snapshot_remove(b, x2): a leaf off the current branch",
    [K_CLONE] = "vd_clone(t, newest, c2)",
    [K_FULL_CLONE] = "vd_clone(t, 1, f, VD_CLONE_FULL): one layer",
    [K_FULL_CLONE_DEEP] = "vd_clone(t, 2, f, VD_CLONE_FULL): two layers",
    [K_FLATTEN] = "vd_volume_flatten(c)",
    [K_TPL_CREATE] = "vd_template_create(t2, a)",
    [K_TPL_UPDATE] = "vd_template_update(t, c): from its own clone",
    [K_TPL_RM] = "vd_template_remove(u): no clones",
    [K_VOL_RM] = "vd_volume_remove(a): with snapshots",
    [K_CLONE_RM] = "vd_volume_remove(c): a linked clone",
    [K_RESIZE] = "vd_volume_resize(a, 3 MiB + 512)",
    [K_RESIZE_PUSH] = "vd_volume_resize(b, 2 GiB + 512): beyond its top's index",
    [K_VOL_CREATE] = "vd_volume_create(new, 1 MiB)",
};

/* ------------------------------------------------------------------ */
/* State: what every name of a store reads and reports. */

struct csnap {
    char name[NAMELEN];
    char parent[NAMELEN];
    bool current;
    uint64_t size;
    uint8_t *data;
};

struct cvol {
    char name[NAMELEN];
    uint64_t size;
    uint32_t bs;
    char tpl[NAMELEN];
    uint32_t tplver;
    char head[NAMELEN];           /* model only: the snapshot it descends from */
    unsigned nsnaps;
    struct csnap snaps[MAX_SNAPS];
    uint8_t *data;
};

struct cver {
    uint32_t v;
    uint64_t size;
    unsigned clones;
    uint8_t *data;
};

struct ctpl {
    char name[NAMELEN];
    uint32_t latest;
    unsigned clones;
    unsigned nvers;
    struct cver vers[MAX_VERS];
};

struct cstate {
    unsigned nvols, ntpls;
    struct cvol vols[MAX_VOLS];
    struct ctpl tpls[MAX_TPLS];
};

/* ------------------------------------------------------------------ */
/* Failure reporting. */

struct config {
    uint64_t seed;
    int only;                    /* -1: every kind */
    long only_n;                 /* -1: every crash point */
    const char *dir;
    bool keep, verbose;
    const char *argv0;
};

static const struct config *CFG;
static char work_dir[PATH_MAX - 256];     /* holds prepared/ and run/ */
static char prep_dir[PATH_MAX - 128];
static char run_dir[PATH_MAX - 128];
static char nest_dir[PATH_MAX - 128];     /* a crashed store, for crashes in recovery */
static const char *cur_dir = "";
static unsigned cur_m;                    /* kill step inside recovery, 0: none */
static int cur_kind = -1;
static unsigned cur_n;
static const char *phase = "setup";

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
    fprintf(stderr, "FAIL: seed %" PRIu64 ", %s, kill at step %u", CFG->seed,
            cur_kind >= 0 ? kind_names[cur_kind] : "building the store", cur_n);
    if (cur_m)
        fprintf(stderr, " then in the recovery at step %u", cur_m);
    fprintf(stderr, ", %s: ", phase);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cur_kind >= 0)
        fprintf(stderr, "operation: %s\n", kind_desc[cur_kind]);
    fprintf(stderr, "store kept in %s (the prepared store in %s)\n", cur_dir, prep_dir);
    if (cur_kind >= 0)
        fprintf(stderr, "replay: %s --seed %" PRIu64 " --only %s --step %u -v\n",
                CFG->argv0, CFG->seed, kind_names[cur_kind], cur_n);
    else
        fprintf(stderr, "replay: %s --seed %" PRIu64 " -v\n", CFG->argv0, CFG->seed);
    exit(1);
}

static void check_rc(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s (%d): %s", what, strerror(-rc), rc, vd_errmsg());
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

/* Bytes of a disk of this size the model keeps (the rest reads zeroes). */
static size_t held(uint64_t size)
{
    return size < DATA_MAX ? (size_t)size : DATA_MAX;
}

/* Content buffers, all DATA_MAX bytes, are recycled: a fresh large
 * allocation for every object read costs page faults (many under ASan). */
struct dbuf {
    struct dbuf *next;
};
static struct dbuf *dbuf_pool;

static uint8_t *dbuf_get(void)
{
    struct dbuf *b = dbuf_pool;
    if (b)
        dbuf_pool = b->next;
    else
        b = xmalloc(DATA_MAX + 64);
    return (uint8_t *)b + 64;
}

static void dbuf_put(uint8_t *p)
{
    if (!p)
        return;
    struct dbuf *b = (struct dbuf *)(void *)(p - 64);
    b->next = dbuf_pool;
    dbuf_pool = b;
}

static void dbuf_drain(void)
{
    while (dbuf_pool) {
        struct dbuf *b = dbuf_pool;
        dbuf_pool = b->next;
        free(b);
    }
}

static uint8_t *xdup(const uint8_t *p, size_t n)
{
    uint8_t *q = dbuf_get();
    memcpy(q, p, n);
    return q;
}

static uint8_t *zeroed(size_t n)
{
    uint8_t *q = dbuf_get();
    memset(q, 0, n);
    return q;
}

/* ------------------------------------------------------------------ */
/* Directories: copy and remove. */

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

/* Copies a regular file, keeping holes. */
static void copy_file(const char *src, const char *dst, mode_t mode)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        fail("open %s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
    if (out < 0)
        fail("create %s: %s", dst, strerror(errno));
    struct stat sb;
    if (fstat(in, &sb) < 0)
        fail("stat %s: %s", src, strerror(errno));
    static uint8_t buf[1 << 16];
    off_t pos = 0;
    while (pos < sb.st_size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0)
            break;                  /* only a hole is left */
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0)
            hole = sb.st_size;
        for (off_t o = data; o < hole;) {
            size_t n = hole - o < (off_t)sizeof(buf) ? (size_t)(hole - o) : sizeof(buf);
            ssize_t r = pread(in, buf, n, o);
            if (r <= 0)
                fail("read %s: %s", src, r < 0 ? strerror(errno) : "short");
            if (pwrite(out, buf, (size_t)r, o) != r)
                fail("write %s: %s", dst, strerror(errno));
            o += r;
        }
        pos = hole;
    }
    if (ftruncate(out, sb.st_size) < 0)
        fail("truncate %s: %s", dst, strerror(errno));
    close(in);
    close(out);
}

static void copy_tree(const char *src, const char *dst)
{
    struct stat sb;
    if (lstat(src, &sb) < 0)
        fail("stat %s: %s", src, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        if (mkdir(dst, sb.st_mode & 07777) < 0)
            fail("mkdir %s: %s", dst, strerror(errno));
        DIR *d = opendir(src);
        if (!d)
            fail("opendir %s: %s", src, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char s[PATH_MAX], t[PATH_MAX];
            snprintf(s, sizeof(s), "%s/%s", src, e->d_name);
            snprintf(t, sizeof(t), "%s/%s", dst, e->d_name);
            copy_tree(s, t);
        }
        closedir(d);
    } else if (S_ISREG(sb.st_mode)) {
        copy_file(src, dst, sb.st_mode);
    } else {
        fail("%s: not a regular file or directory: the copy does not know it", src);
    }
}

static unsigned count_entries(const char *path)
{
    unsigned n = 0;
    DIR *d = opendir(path);
    if (!d)
        fail("opendir %s: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Names in a directory, sorted, joined with spaces (for comparisons and
 * messages). */
static void list_dir(const char *path, char *out, size_t outlen)
{
    char names[64][NAME_MAX + 1];
    unsigned n = 0;
    DIR *d = opendir(path);
    out[0] = '\0';
    if (!d)
        fail("opendir %s: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n < 64)
            snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_name);
    for (unsigned i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", i ? " " : "", names[i]);
    }
}

/* ------------------------------------------------------------------ */
/* The model. */

static void state_free(struct cstate *s)
{
    for (unsigned i = 0; i < s->nvols; i++) {
        dbuf_put(s->vols[i].data);
        for (unsigned k = 0; k < s->vols[i].nsnaps; k++)
            dbuf_put(s->vols[i].snaps[k].data);
    }
    for (unsigned i = 0; i < s->ntpls; i++)
        for (unsigned k = 0; k < s->tpls[i].nvers; k++)
            dbuf_put(s->tpls[i].vers[k].data);
    memset(s, 0, sizeof(*s));
}

static void state_copy(struct cstate *d, const struct cstate *s)
{
    *d = *s;
    for (unsigned i = 0; i < s->nvols; i++) {
        d->vols[i].data = xdup(s->vols[i].data, held(s->vols[i].size));
        for (unsigned k = 0; k < s->vols[i].nsnaps; k++)
            d->vols[i].snaps[k].data = xdup(s->vols[i].snaps[k].data,
                                            held(s->vols[i].snaps[k].size));
    }
    for (unsigned i = 0; i < s->ntpls; i++)
        for (unsigned k = 0; k < s->tpls[i].nvers; k++)
            d->tpls[i].vers[k].data = xdup(s->tpls[i].vers[k].data,
                                           held(s->tpls[i].vers[k].size));
}

static struct cvol *find_vol(struct cstate *s, const char *name)
{
    for (unsigned i = 0; i < s->nvols; i++)
        if (!strcmp(s->vols[i].name, name))
            return &s->vols[i];
    return NULL;
}

static struct cvol *get_vol(struct cstate *s, const char *name)
{
    struct cvol *v = find_vol(s, name);
    if (!v)
        fail("model: no volume %s", name);
    return v;
}

static struct csnap *find_snap(struct cvol *v, const char *name)
{
    for (unsigned i = 0; i < v->nsnaps; i++)
        if (!strcmp(v->snaps[i].name, name))
            return &v->snaps[i];
    return NULL;
}

static struct ctpl *find_tpl(struct cstate *s, const char *name)
{
    for (unsigned i = 0; i < s->ntpls; i++)
        if (!strcmp(s->tpls[i].name, name))
            return &s->tpls[i];
    return NULL;
}

static struct cver *find_ver(struct ctpl *t, uint32_t v)
{
    for (unsigned i = 0; i < t->nvers; i++)
        if (t->vers[i].v == v)
            return &t->vers[i];
    return NULL;
}

static void m_vol_create(struct cstate *s, const char *name, uint64_t size, uint32_t bs)
{
    struct cvol *v = &s->vols[s->nvols++];
    memset(v, 0, sizeof(*v));
    snprintf(v->name, NAMELEN, "%s", name);
    v->size = size;
    v->bs = bs;
    v->data = zeroed(held(size));
}

static void m_snap_create(struct cstate *s, const char *vol, const char *snap)
{
    struct cvol *v = get_vol(s, vol);
    struct csnap *c = &v->snaps[v->nsnaps++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, NAMELEN, "%s", snap);
    snprintf(c->parent, NAMELEN, "%s", v->head);
    c->size = v->size;
    c->data = xdup(v->data, held(v->size));
    snprintf(v->head, NAMELEN, "%s", snap);
}

static void m_rollback(struct cstate *s, const char *vol, const char *snap)
{
    struct cvol *v = get_vol(s, vol);
    struct csnap *c = find_snap(v, snap);
    dbuf_put(v->data);
    v->data = xdup(c->data, held(c->size));
    v->size = c->size;
    snprintf(v->head, NAMELEN, "%s", snap);
}

/* Commit and remove: the name goes, everything else reads the same. */
static void m_snap_drop(struct cstate *s, const char *vol, const char *snap)
{
    struct cvol *v = get_vol(s, vol);
    struct csnap *c = find_snap(v, snap);
    char parent[NAMELEN];
    snprintf(parent, sizeof(parent), "%s", c->parent);
    for (unsigned i = 0; i < v->nsnaps; i++)
        if (!strcmp(v->snaps[i].parent, snap))
            snprintf(v->snaps[i].parent, NAMELEN, "%s", parent);
    if (!strcmp(v->head, snap))
        snprintf(v->head, NAMELEN, "%s", parent);
    dbuf_put(c->data);
    unsigned idx = (unsigned)(c - v->snaps);
    memmove(c, c + 1, (v->nsnaps - idx - 1) * sizeof(*c));
    v->nsnaps--;
}

/* Template create (new name) or update. */
static void m_tpl_make(struct cstate *s, const char *tpl, const char *vol)
{
    struct cvol *v = get_vol(s, vol);
    struct ctpl *t = find_tpl(s, tpl);
    if (!t) {
        t = &s->tpls[s->ntpls++];
        memset(t, 0, sizeof(*t));
        snprintf(t->name, NAMELEN, "%s", tpl);
    }
    struct cver *ver = &t->vers[t->nvers++];
    ver->v = ++t->latest;
    ver->size = v->size;
    ver->clones = 0;
    ver->data = xdup(v->data, held(v->size));
}

static void m_tpl_rm(struct cstate *s, const char *tpl)
{
    struct ctpl *t = find_tpl(s, tpl);
    for (unsigned k = 0; k < t->nvers; k++)
        dbuf_put(t->vers[k].data);
    unsigned idx = (unsigned)(t - s->tpls);
    memmove(t, t + 1, (s->ntpls - idx - 1) * sizeof(*t));
    s->ntpls--;
}

static void m_clone(struct cstate *s, const char *tpl, uint32_t version, const char *vol,
                    bool full, uint32_t bs)
{
    struct ctpl *t = find_tpl(s, tpl);
    struct cver *ver = find_ver(t, version ? version : t->latest);
    m_vol_create(s, vol, ver->size, bs);
    struct cvol *v = get_vol(s, vol);
    memcpy(v->data, ver->data, held(ver->size));
    if (!full) {
        snprintf(v->tpl, NAMELEN, "%s", tpl);
        v->tplver = ver->v;
    }
}

static void m_vol_rm(struct cstate *s, const char *vol)
{
    struct cvol *v = get_vol(s, vol);
    dbuf_put(v->data);
    for (unsigned k = 0; k < v->nsnaps; k++)
        dbuf_put(v->snaps[k].data);
    unsigned idx = (unsigned)(v - s->vols);
    memmove(v, v + 1, (s->nvols - idx - 1) * sizeof(*v));
    s->nvols--;
}

static void m_resize(struct cstate *s, const char *vol, uint64_t size)
{
    struct cvol *v = get_vol(s, vol);
    uint8_t *d = zeroed(held(size));
    memcpy(d, v->data, held(v->size));
    dbuf_put(v->data);
    v->data = d;
    v->size = size;
}

static bool descends(struct cvol *v, const char *snap)
{
    const char *c = v->head;
    for (unsigned guard = 0; *c && guard <= MAX_SNAPS; guard++) {
        if (!strcmp(c, snap))
            return true;
        struct csnap *p = find_snap(v, c);
        if (!p)
            return false;
        c = p->parent;
    }
    return false;
}

static int cmp_vol(const void *a, const void *b)
{
    return strcmp(((const struct cvol *)a)->name, ((const struct cvol *)b)->name);
}

static int cmp_tpl(const void *a, const void *b)
{
    return strcmp(((const struct ctpl *)a)->name, ((const struct ctpl *)b)->name);
}

/* Derives what the library reports but the model does not keep: current
 * flags, clone counts; sorts by name. */
static void finalize(struct cstate *s)
{
    qsort(s->vols, s->nvols, sizeof(s->vols[0]), cmp_vol);
    qsort(s->tpls, s->ntpls, sizeof(s->tpls[0]), cmp_tpl);
    for (unsigned i = 0; i < s->nvols; i++) {
        struct cvol *v = &s->vols[i];
        for (unsigned k = 0; k < v->nsnaps; k++)
            v->snaps[k].current = descends(v, v->snaps[k].name);
    }
    for (unsigned i = 0; i < s->ntpls; i++) {
        struct ctpl *t = &s->tpls[i];
        t->clones = 0;
        for (unsigned k = 0; k < t->nvers; k++) {
            struct cver *ver = &t->vers[k];
            ver->clones = 0;
            for (unsigned j = 0; j < s->nvols; j++)
                if (!strcmp(s->vols[j].tpl, t->name) && s->vols[j].tplver == ver->v)
                    ver->clones++;
            t->clones += ver->clones;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Reading a store into a state. */

static struct vd_ctx *g_ctx;
static uint8_t *g_buf;

static uint8_t *read_all(struct vd_store *st, const char *name, uint64_t size)
{
    struct vd_chain *c;
    int rc = vd_store_open_chain(st, g_ctx, name, VD_OPEN_BUFFERED, &c);
    if (rc < 0)
        fail("vd_store_open_chain(%s): %s: %s", name, strerror(-rc), vd_errmsg());
    if (vd_chain_size(c) != size)
        fail("%s: chain size %" PRIu64 ", reported size %" PRIu64, name, vd_chain_size(c),
             size);
    uint64_t h = held(size);
    uint8_t *d = dbuf_get();
    for (uint64_t off = 0; off < h; off += CHUNK) {
        size_t len = h - off < CHUNK ? (size_t)(h - off) : CHUNK;
        rc = vd_read(c, d + off, off, len);
        if (rc < 0)
            fail("vd_read(%s, %" PRIu64 "): %s: %s", name, off, strerror(-rc), vd_errmsg());
    }
    /* beyond: holes and zero extents need no reading; data must be zeroes */
    for (uint64_t pos = h; pos < size;) {
        struct vd_extent e[16];
        int ne = vd_block_status(c, pos, size - pos, e, 16);
        if (ne <= 0)
            fail("vd_block_status(%s, %" PRIu64 "): %d: %s", name, pos, ne, vd_errmsg());
        for (int i = 0; i < ne; i++) {
            for (uint64_t o = 0; e[i].type == VD_EXTENT_DATA && o < e[i].length; o += CHUNK) {
                size_t len = e[i].length - o < CHUNK ? (size_t)(e[i].length - o) : CHUNK;
                check_rc(vd_read(c, g_buf, e[i].offset + o, len), "vd_read");
                for (size_t b = 0; b < len; b++)
                    if (g_buf[b])
                        fail("%s: byte at %" PRIu64 " is %#x, expected zero", name,
                             e[i].offset + o + b, g_buf[b]);
            }
            pos = e[i].offset + e[i].length;
        }
    }
    check_rc(vd_chain_close(c), "vd_chain_close");
    return d;
}

static void read_state(struct vd_store *st, struct cstate *s)
{
    memset(s, 0, sizeof(*s));
    struct vd_volume_info *vl = NULL;
    size_t n = 0;
    check_rc(vd_volume_list(st, &vl, &n), "vd_volume_list");
    if (n > MAX_VOLS)
        fail("%zu volumes in the store", n);
    char name[2 * NAMELEN + 16];
    for (size_t i = 0; i < n; i++) {
        struct cvol *v = &s->vols[s->nvols++];
        snprintf(v->name, NAMELEN, "%s", vl[i].name);
        v->size = vl[i].size;
        v->bs = vl[i].block_size;
        snprintf(v->tpl, NAMELEN, "%s", vl[i].template_name);
        v->tplver = v->tpl[0] ? vl[i].template_version : 0;
        v->data = read_all(st, v->name, v->size);
        if (vl[i].writer_pid != 0)
            fail("volume %s: writer pid %d, no process has it open", v->name,
                 vl[i].writer_pid);
        struct vd_snapshot_info *si = NULL;
        size_t ns = 0;
        check_rc(vd_snapshot_list(st, v->name, &si, &ns), "vd_snapshot_list");
        if (ns > MAX_SNAPS || ns != vl[i].snapshots)
            fail("volume %s: %zu snapshots listed, %u in its info", v->name, ns,
                 vl[i].snapshots);
        for (size_t k = 0; k < ns; k++) {
            struct csnap *c = &v->snaps[v->nsnaps++];
            snprintf(c->name, NAMELEN, "%s", si[k].name);
            snprintf(c->parent, NAMELEN, "%s", si[k].parent);
            c->current = si[k].current;
            c->size = si[k].size;
            snprintf(name, sizeof(name), "%s@%s", v->name, c->name);
            c->data = read_all(st, name, c->size);
        }
        free(si);
    }
    free(vl);
    struct vd_template_info *tl = NULL;
    check_rc(vd_template_list(st, &tl, &n), "vd_template_list");
    if (n > MAX_TPLS)
        fail("%zu templates in the store", n);
    for (size_t i = 0; i < n; i++) {
        struct ctpl *t = &s->tpls[s->ntpls++];
        snprintf(t->name, NAMELEN, "%s", tl[i].name);
        struct vd_template_info ti;
        struct vd_template_version *tv = NULL;
        size_t nv = 0;
        check_rc(vd_template_info(st, t->name, &ti, &tv, &nv), "vd_template_info");
        if (nv > MAX_VERS || ti.versions != nv)
            fail("template %s: %zu versions listed, %u in its info", t->name, nv,
                 ti.versions);
        if (ti.latest != tl[i].latest || ti.clones != tl[i].clones)
            fail("template %s: vd_template_list and vd_template_info disagree", t->name);
        t->latest = ti.latest;
        t->clones = ti.clones;
        for (size_t k = 0; k < nv; k++) {
            struct cver *ver = &t->vers[t->nvers++];
            ver->v = tv[k].version;
            ver->size = tv[k].size;
            ver->clones = tv[k].clones;
            snprintf(name, sizeof(name), "%s@%u", t->name, ver->v);
            ver->data = read_all(st, name, ver->size);
        }
        free(tv);
    }
    free(tl);
    qsort(s->vols, s->nvols, sizeof(s->vols[0]), cmp_vol);
    qsort(s->tpls, s->ntpls, sizeof(s->tpls[0]), cmp_tpl);
}

/* Whether store state a equals model state b; if not, why (the first
 * difference). */
static bool state_equal(const struct cstate *a, struct cstate *b, char *why, size_t wl)
{
    if (a->nvols != b->nvols) {
        snprintf(why, wl, "%u volumes, expected %u", a->nvols, b->nvols);
        return false;
    }
    for (unsigned i = 0; i < a->nvols; i++) {
        const struct cvol *x = &a->vols[i];
        struct cvol *y = &b->vols[i];
        if (strcmp(x->name, y->name)) {
            snprintf(why, wl, "volume %s where %s was expected", x->name, y->name);
            return false;
        }
        if (x->size != y->size || x->bs != y->bs || strcmp(x->tpl, y->tpl) ||
            x->tplver != y->tplver) {
            snprintf(why, wl, "volume %s: size %" PRIu64 " block size %u clone of \"%s\"@%u;"
                     " expected %" PRIu64 ", %u, \"%s\"@%u", x->name, x->size, x->bs,
                     x->tpl, x->tplver, y->size, y->bs, y->tpl, y->tplver);
            return false;
        }
        if (memcmp(x->data, y->data, held(x->size))) {
            size_t k = 0;
            while (x->data[k] == y->data[k])
                k++;
            snprintf(why, wl, "volume %s differs at offset %zu", x->name, k);
            return false;
        }
        if (x->nsnaps != y->nsnaps) {
            snprintf(why, wl, "volume %s: %u snapshots, expected %u", x->name, x->nsnaps,
                     y->nsnaps);
            return false;
        }
        for (unsigned k = 0; k < x->nsnaps; k++) {
            const struct csnap *p = &x->snaps[k];
            struct csnap *q = find_snap(y, p->name);
            if (!q) {
                snprintf(why, wl, "volume %s: unexpected snapshot %s", x->name, p->name);
                return false;
            }
            if (strcmp(p->parent, q->parent) || p->current != q->current ||
                p->size != q->size) {
                snprintf(why, wl, "snapshot %s@%s: parent \"%s\" current %d size %" PRIu64
                         "; expected \"%s\", %d, %" PRIu64, x->name, p->name, p->parent,
                         (int)p->current, p->size, q->parent, (int)q->current, q->size);
                return false;
            }
            if (memcmp(p->data, q->data, held(p->size))) {
                size_t o = 0;
                while (p->data[o] == q->data[o])
                    o++;
                snprintf(why, wl, "snapshot %s@%s differs at offset %zu", x->name, p->name,
                         o);
                return false;
            }
        }
    }
    if (a->ntpls != b->ntpls) {
        snprintf(why, wl, "%u templates, expected %u", a->ntpls, b->ntpls);
        return false;
    }
    for (unsigned i = 0; i < a->ntpls; i++) {
        const struct ctpl *x = &a->tpls[i];
        struct ctpl *y = &b->tpls[i];
        if (strcmp(x->name, y->name) || x->latest != y->latest || x->clones != y->clones ||
            x->nvers != y->nvers) {
            snprintf(why, wl, "template %s: newest %u, %u clones, %u versions; expected"
                     " %s: %u, %u, %u", x->name, x->latest, x->clones, x->nvers, y->name,
                     y->latest, y->clones, y->nvers);
            return false;
        }
        for (unsigned k = 0; k < x->nvers; k++) {
            const struct cver *p = &x->vers[k];
            struct cver *q = find_ver(y, p->v);
            if (!q || p->size != q->size || p->clones != q->clones) {
                snprintf(why, wl, "template %s version %u: size %" PRIu64 ", %u clones%s",
                         x->name, p->v, p->size, p->clones, q ? "" : " (unexpected)");
                return false;
            }
            if (memcmp(p->data, q->data, held(p->size))) {
                size_t o = 0;
                while (p->data[o] == q->data[o])
                    o++;
                snprintf(why, wl, "template %s@%u differs at offset %zu", x->name, p->v, o);
                return false;
            }
        }
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Building the prepared store: each step on the store and the model. */

static struct rng g_rng;

/* Writes random data, zeroes and discards into vol. */
static void b_writes(struct vd_store *st, struct cstate *m, const char *vol, unsigned n)
{
    struct cvol *v = get_vol(m, vol);
    struct vd_chain *c;
    check_rc(vd_store_open_chain(st, g_ctx, vol, VD_OPEN_RDWR, &c), "open read-write");
    for (unsigned i = 0; i < n; i++) {
        uint64_t len = 512 * (1 + rng_below(&g_rng, 256));
        if (len > v->size)
            len = v->size;
        uint64_t off = 512 * rng_below(&g_rng, (v->size - len) / 512 + 1);
        unsigned a = (unsigned)rng_below(&g_rng, 10);
        if (a < 7) {
            rng_fill(&g_rng, g_buf, len);
            check_rc(vd_write(c, g_buf, off, len, 0), "vd_write");
            memcpy(v->data + off, g_buf, len);
        } else if (a < 9) {
            check_rc(vd_zero(c, off, len, 0), "vd_zero");
            memset(v->data + off, 0, len);
        } else {
            check_rc(vd_discard(c, off, len), "vd_discard");
            memset(v->data + off, 0, len);
        }
    }
    check_rc(vd_chain_close(c), "vd_chain_close");
}

static void build(struct vd_store *st, struct cstate *m)
{
    struct vd_create_opts o64 = { .block_size = 65536 };
    struct vd_create_opts o4 = { .block_size = 4096 };

    /* a: a chain of two snapshots, data on every level */
    check_rc(vd_volume_create(st, "a", 2u << 20, &o64), "create a");
    m_vol_create(m, "a", 2u << 20, 65536);
    b_writes(st, m, "a", 12);
    check_rc(vd_snapshot_create(st, "a", "s1"), "snapshot a s1");
    m_snap_create(m, "a", "s1");
    b_writes(st, m, "a", 10);
    check_rc(vd_snapshot_create(st, "a", "s2"), "snapshot a s2");
    m_snap_create(m, "a", "s2");
    b_writes(st, m, "a", 10);

    /* b: a tree: x1 with the branches x2 and x3, the volume below x3 */
    uint64_t bsize = (1u << 20) + 3 * 512;
    check_rc(vd_volume_create(st, "b", bsize, &o4), "create b");
    m_vol_create(m, "b", bsize, 4096);
    b_writes(st, m, "b", 10);
    check_rc(vd_snapshot_create(st, "b", "x1"), "snapshot b x1");
    m_snap_create(m, "b", "x1");
    b_writes(st, m, "b", 8);
    check_rc(vd_snapshot_create(st, "b", "x2"), "snapshot b x2");
    m_snap_create(m, "b", "x2");
    check_rc(vd_snapshot_rollback(st, "b", "x1"), "rollback b x1");
    m_rollback(m, "b", "x1");
    b_writes(st, m, "b", 8);
    check_rc(vd_snapshot_create(st, "b", "x3"), "snapshot b x3");
    m_snap_create(m, "b", "x3");
    b_writes(st, m, "b", 6);

    /* t: two versions made from base; c: a linked clone of version 1 */
    check_rc(vd_volume_create(st, "base", 1u << 20, &o4), "create base");
    m_vol_create(m, "base", 1u << 20, 4096);
    b_writes(st, m, "base", 10);
    check_rc(vd_template_create(st, "t", "base"), "template create t");
    m_tpl_make(m, "t", "base");
    b_writes(st, m, "base", 8);
    check_rc(vd_template_update(st, "t", "base"), "template update t");
    m_tpl_make(m, "t", "base");
    b_writes(st, m, "base", 4);
    check_rc(vd_clone(st, "t", 1, "c", 0, NULL, NULL), "clone t@1 c");
    m_clone(m, "t", 1, "c", false, 4096);
    b_writes(st, m, "c", 8);

    /* u: a template nothing was cloned from */
    check_rc(vd_volume_create(st, "d", 512u << 10, &o64), "create d");
    m_vol_create(m, "d", 512u << 10, 65536);
    b_writes(st, m, "d", 6);
    check_rc(vd_template_create(st, "u", "d"), "template create u");
    m_tpl_make(m, "u", "d");
    b_writes(st, m, "d", 4);
}

/* ------------------------------------------------------------------ */
/* The operations. */

static int run_op(enum op_kind k, struct vd_store *st)
{
    switch (k) {
    case K_SNAP_CREATE: return vd_snapshot_create(st, "a", "n");
    case K_ROLLBACK: return vd_snapshot_rollback(st, "a", "s1");
    case K_COMMIT: return vd_snapshot_commit(st, "a", "s2", NULL, NULL);
    case K_COMMIT_OLDER: return vd_snapshot_commit(st, "a", "s1", NULL, NULL);
    case K_SNAP_RM_MIDDLE: return vd_snapshot_remove(st, "a", "s1");
    case K_SNAP_RM_BRANCH: return vd_snapshot_remove(st, "b", "x1");
    case K_SNAP_RM_LEAF: return vd_snapshot_remove(st, "b", "x2");
    case K_CLONE: return vd_clone(st, "t", 0, "c2", 0, NULL, NULL);
    case K_FULL_CLONE: return vd_clone(st, "t", 1, "f", VD_CLONE_FULL, NULL, NULL);
    case K_FULL_CLONE_DEEP: return vd_clone(st, "t", 2, "f", VD_CLONE_FULL, NULL, NULL);
    case K_FLATTEN: return vd_volume_flatten(st, "c", NULL, NULL);
    case K_TPL_CREATE: return vd_template_create(st, "t2", "a");
    case K_TPL_UPDATE: return vd_template_update(st, "t", "c");
    case K_TPL_RM: return vd_template_remove(st, "u");
    case K_VOL_RM: return vd_volume_remove(st, "a");
    case K_CLONE_RM: return vd_volume_remove(st, "c");
    case K_RESIZE: return vd_volume_resize(st, "a", (3u << 20) + 512);
    case K_RESIZE_PUSH: return vd_volume_resize(st, "b", BIG_SIZE);
    case K_VOL_CREATE: {
        struct vd_create_opts o = { .block_size = 65536 };
        return vd_volume_create(st, "new", 1u << 20, &o);
    }
    default: return -EINVAL;
    }
}

static void model_op(enum op_kind k, struct cstate *m)
{
    switch (k) {
    case K_SNAP_CREATE: m_snap_create(m, "a", "n"); break;
    case K_ROLLBACK: m_rollback(m, "a", "s1"); break;
    case K_COMMIT: m_snap_drop(m, "a", "s2"); break;
    case K_COMMIT_OLDER: m_snap_drop(m, "a", "s1"); break;
    case K_SNAP_RM_MIDDLE: m_snap_drop(m, "a", "s1"); break;
    case K_SNAP_RM_BRANCH: m_snap_drop(m, "b", "x1"); break;
    case K_SNAP_RM_LEAF: m_snap_drop(m, "b", "x2"); break;
    case K_CLONE: m_clone(m, "t", 0, "c2", false, 4096); break;
    case K_FULL_CLONE: m_clone(m, "t", 1, "f", true, 4096); break;
    case K_FULL_CLONE_DEEP: m_clone(m, "t", 2, "f", true, 4096); break;
    case K_FLATTEN: get_vol(m, "c")->tpl[0] = '\0'; get_vol(m, "c")->tplver = 0; break;
    case K_TPL_CREATE: m_tpl_make(m, "t2", "a"); break;
    case K_TPL_UPDATE: m_tpl_make(m, "t", "c"); break;
    case K_TPL_RM: m_tpl_rm(m, "u"); break;
    case K_VOL_RM: m_vol_rm(m, "a"); break;
    case K_CLONE_RM: m_vol_rm(m, "c"); break;
    case K_RESIZE: m_resize(m, "a", (3u << 20) + 512); break;
    case K_RESIZE_PUSH: m_resize(m, "b", BIG_SIZE); break;
    case K_VOL_CREATE: m_vol_create(m, "new", 1u << 20, 65536); break;
    default: break;
    }
    finalize(m);
}

/* ------------------------------------------------------------------ */
/* Checks after a crash. */

static char findings[8][256];
static unsigned nfindings;

static void report_finding(void *opaque, const char *msg)
{
    (void)opaque;
    snprintf(findings[nfindings++ % 8], sizeof(findings[0]), "%s", msg);
    if (CFG->verbose)
        printf("      check: %s\n", msg);
}

/* vd_store_check: no corruption, no digest mismatch.  Returns the leaked
 * bytes. */
static uint64_t store_check(struct vd_store *st, unsigned flags)
{
    struct vd_check_result res;
    memset(&res, 0, sizeof(res));
    nfindings = 0;
    int rc = vd_store_check(st, NULL, flags, &res, report_finding, NULL);
    if (rc < 0 || res.corruptions || res.digest_mismatches) {
        unsigned first = nfindings > 8 ? nfindings - 8 : 0;
        for (unsigned i = first; i < nfindings; i++)
            fprintf(stderr, "  check: %s\n", findings[i % 8]);
        if (rc < 0)
            fail("vd_store_check: %s: %s", strerror(-rc), vd_errmsg());
        fail("vd_store_check: %" PRIu64 " corruptions, %" PRIu64 " digest mismatches",
             res.corruptions, res.digest_mismatches);
    }
    return res.leaked_bytes;
}

struct names {
    char v[256][NAME_MAX + 1];
    unsigned n;
};

static void names_add(struct names *s, const char *x)
{
    for (unsigned i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], x))
            return;
    if (s->n == 256)
        fail("more than 256 layer files");
    snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", x);
}

static bool names_has(const struct names *s, const char *x)
{
    for (unsigned i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], x))
            return true;
    return false;
}

static void chain_files(struct vd_store *st, const char *name, struct names *out)
{
    struct vd_chain *c;
    int rc = vd_store_open_chain(st, g_ctx, name, VD_OPEN_BUFFERED, &c);
    if (rc < 0)
        fail("vd_store_open_chain(%s): %s: %s", name, strerror(-rc), vd_errmsg());
    for (unsigned d = 1; d <= vd_chain_depth(c); d++) {
        const char *p = vd_chain_layer_path(c, d);
        const char *b = p ? strrchr(p, '/') : NULL;
        names_add(out, b ? b + 1 : p ? p : "?");
    }
    check_rc(vd_chain_close(c), "vd_chain_close");
}

/* Every file in layers/ is used by a chain; returns how many there are. */
static unsigned scan_layers(struct vd_store *st, const struct cstate *s)
{
    static struct names used, files;
    used.n = files.n = 0;
    char n[2 * NAMELEN + 16];
    for (unsigned i = 0; i < s->nvols; i++) {
        chain_files(st, s->vols[i].name, &used);
        for (unsigned k = 0; k < s->vols[i].nsnaps; k++) {
            snprintf(n, sizeof(n), "%s@%s", s->vols[i].name, s->vols[i].snaps[k].name);
            chain_files(st, n, &used);
        }
    }
    for (unsigned i = 0; i < s->ntpls; i++) {
        for (unsigned k = 0; k < s->tpls[i].nvers; k++) {
            snprintf(n, sizeof(n), "%s@%u", s->tpls[i].name, s->tpls[i].vers[k].v);
            chain_files(st, n, &used);
        }
    }
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/layers", vd_store_path(st));
    DIR *d = opendir(p);
    if (!d)
        fail("opendir %s: %s", p, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        names_add(&files, e->d_name);
        if (!names_has(&used, e->d_name)) {
            closedir(d);
            fail("layers/%s belongs to no volume, snapshot or template version:"
                 " a leaked or stray file", e->d_name);
        }
    }
    closedir(d);
    return files.n;
}

/* The store stays usable: a new volume takes writes, a snapshot, a
 * rollback, and goes away without a trace. */
static void probe(struct vd_store *st)
{
    check_rc(vd_volume_create(st, "probe", 1u << 20, NULL), "probe: vd_volume_create");
    struct vd_chain *c;
    check_rc(vd_store_open_chain(st, g_ctx, "probe", VD_OPEN_RDWR, &c), "probe: open");
    memset(g_buf, 0xa7, 65536);
    check_rc(vd_write(c, g_buf, 4096, 65536, 0), "probe: vd_write");
    check_rc(vd_chain_close(c), "probe: close");
    check_rc(vd_snapshot_create(st, "probe", "p"), "probe: vd_snapshot_create");
    check_rc(vd_store_open_chain(st, g_ctx, "probe", VD_OPEN_RDWR, &c), "probe: open");
    memset(g_buf, 0x3c, 65536);
    check_rc(vd_write(c, g_buf, 0, 65536, 0), "probe: vd_write");
    check_rc(vd_chain_close(c), "probe: close");
    check_rc(vd_snapshot_rollback(st, "probe", "p"), "probe: vd_snapshot_rollback");
    check_rc(vd_store_open_chain(st, g_ctx, "probe", 0, &c), "probe: open read-only");
    uint8_t *r = g_buf + CHUNK;
    check_rc(vd_read(c, r, 0, 8192), "probe: vd_read");
    check_rc(vd_chain_close(c), "probe: close");
    for (unsigned i = 0; i < 8192; i++)
        if (r[i] != (i < 4096 ? 0 : 0xa7))
            fail("probe: byte %u reads %#x after the rollback", i, r[i]);
    check_rc(vd_volume_remove(st, "probe"), "probe: vd_volume_remove");
}

/* ------------------------------------------------------------------ */
/* One operation kind. */

struct kind_stats {
    unsigned points, before, after, steps, nested;
    uint64_t leaked_runs, leaked_bytes;
    double secs;
};

static struct kind_stats KS[K_KINDS];
static char prep_listing[1024], prep_cat_listing[1024];

/* The child: open the copy, arm the kill, run the operation.  Writes the
 * number of steps taken to fd when the operation finishes. */
static void __attribute__((noreturn)) child(enum op_kind k, unsigned n, int fd)
{
    struct vd_store *st;
    int rc = vd_store_open(run_dir, 0, &st);
    if (rc < 0) {
        fprintf(stderr, "child: vd_store_open: %s: %s\n", strerror(-rc), vd_errmsg());
        _exit(3);
    }
    vdi_set_kill_step(n);
    rc = run_op(k, st);
    unsigned steps = vdi_steps_taken();
    vdi_set_kill_step(0);
    if (rc < 0) {
        fprintf(stderr, "child: %s: %s: %s\n", kind_desc[k], strerror(-rc), vd_errmsg());
        _exit(4);
    }
    vd_store_close(st);
    if (write(fd, &steps, sizeof(steps)) != (ssize_t)sizeof(steps))
        _exit(5);
    _exit(0);
}

/* Checks a store in rundir against before/after.  Returns true if it was
 * in the after state (false: before, then the operation was run again). */
static bool check_store(const char *dir, enum op_kind k, struct cstate *before,
                        struct cstate *after, bool crashed)
{
    struct vd_store *st;
    cur_dir = dir;
    phase = "reopening (recovery)";
    check_rc(vd_store_open(dir, 0, &st), "vd_store_open after the kill");

    phase = "checking the store";
    uint64_t leaked = store_check(st, 0);
    if (leaked) {
        KS[k].leaked_runs++;
        KS[k].leaked_bytes += leaked;
    }

    phase = "reading back";
    struct cstate got;
    read_state(st, &got);
    char why_b[512], why_a[512];
    bool is_after = state_equal(&got, after, why_a, sizeof(why_a));
    bool is_before = !is_after && state_equal(&got, before, why_b, sizeof(why_b));
    if (!crashed && !is_after)
        fail("the operation completed but the store is not in the after state: %s",
             why_a);
    if (!is_after && !is_before)
        fail("the store is neither in the before state (%s) nor in the after state (%s)",
             why_b, why_a);
    unsigned nfiles = scan_layers(st, &got);
    state_free(&got);

    char listing[1024], cat_listing[1024], p[PATH_MAX];
    list_dir(dir, listing, sizeof(listing));
    if (strcmp(listing, prep_listing))
        fail("the store directory holds \"%s\", before the operation \"%s\"", listing,
             prep_listing);
    snprintf(p, sizeof(p), "%s/catalog", dir);
    list_dir(p, cat_listing, sizeof(cat_listing));
    if (strcmp(cat_listing, prep_cat_listing))
        fail("catalog/ holds \"%s\", before the operation \"%s\"", cat_listing,
             prep_cat_listing);

    if (is_before) {
        phase = "running the operation again";
        int rc = run_op(k, st);
        if (rc < 0)
            fail("%s after recovery to the before state: %s: %s", kind_desc[k],
                 strerror(-rc), vd_errmsg());
        read_state(st, &got);
        if (!state_equal(&got, after, why_a, sizeof(why_a)))
            fail("the operation run again after the recovery does not give the after"
                 " state: %s", why_a);
        nfiles = scan_layers(st, &got);
        state_free(&got);
    }

    /* the probe volume comes and goes without a trace; leaks are repaired */
    phase = "probing";
    probe(st);
    uint64_t left = store_check(st, 0);
    if (left > leaked)
        fail("vd_store_check finds %" PRIu64 " leaked bytes after the probe, %" PRIu64
             " before", left, leaked);
    if (left) {
        phase = "check --repair";
        store_check(st, VD_CHECK_REPAIR);
        left = store_check(st, 0);
        if (left)
            fail("vd_store_check finds %" PRIu64 " leaked bytes after a repair", left);
    }
    snprintf(p, sizeof(p), "%s/layers", dir);
    unsigned after_probe = count_entries(p);
    if (after_probe != nfiles)
        fail("layers/ holds %u files after the probe, %u before it", after_probe, nfiles);
    vd_store_close(st);
    return is_after;
}

/* Waits for a child; returns true if SIGKILL ended it, false if it exited
 * 0 after writing the number of steps it took to fd (into *steps). */
static bool wait_child(pid_t pid, int fd, unsigned *steps)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            fail("waitpid: %s", strerror(errno));
    ssize_t got = read(fd, steps, sizeof(*steps));
    close(fd);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        return true;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (ssize_t)sizeof(*steps))
        return false;
    if (WIFSIGNALED(status))
        fail("the child died of signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
    fail("the child exited with status %d (see its message above)", WEXITSTATUS(status));
}

/* The store in run_dir was left by a kill.  Crash the recovery too: for
 * m = 1, 2, ... a child opens a copy of it with the m-th step of the
 * recovery armed to kill, and the copy is checked; until an open runs to
 * the end. */
static void crash_recovery(enum op_kind k, struct cstate *before, struct cstate *after)
{
    for (unsigned m = 1;; m++) {
        cur_m = m;
        if (m > MAX_STEPS)
            fail("the recovery still runs after %u kill points", MAX_STEPS);
        phase = "copying the crashed store";
        cur_dir = nest_dir;
        rm_tree(nest_dir);
        copy_tree(run_dir, nest_dir);
        int pfd[2];
        if (pipe(pfd) < 0)
            fail("pipe: %s", strerror(errno));
        fflush(stdout);
        fflush(stderr);
        phase = "recovering in a child";
        pid_t pid = fork();
        if (pid < 0)
            fail("fork: %s", strerror(errno));
        if (pid == 0) {
            close(pfd[0]);
            struct vd_store *st;
            vdi_set_kill_step(m);
            int rc = vd_store_open(nest_dir, 0, &st);
            unsigned steps = vdi_steps_taken();
            vdi_set_kill_step(0);
            if (rc < 0) {
                fprintf(stderr, "child: vd_store_open: %s: %s\n", strerror(-rc), vd_errmsg());
                _exit(3);
            }
            vd_store_close(st);
            if (write(pfd[1], &steps, sizeof(steps)) != (ssize_t)sizeof(steps))
                _exit(5);
            _exit(0);
        }
        close(pfd[1]);
        unsigned steps = 0;
        if (!wait_child(pid, pfd[0], &steps))
            break;
        KS[k].nested++;
        bool is_after = check_store(nest_dir, k, before, after, true);
        if (CFG->verbose)
            printf("      recovery killed at step %u: %s\n", m, is_after ? "after" : "before");
    }
    if (!CFG->keep)
        rm_tree(nest_dir);
    cur_m = 0;
}

static void run_kind(enum op_kind k, const struct cstate *prepared)
{
    double t0 = now_sec();
    struct cstate before, after;
    state_copy(&before, prepared);
    finalize(&before);
    state_copy(&after, prepared);
    model_op(k, &after);
    cur_kind = (int)k;

    for (unsigned n = 1;; n++) {
        cur_n = n;
        if (n > MAX_STEPS)
            fail("the operation still runs after %u kill points", MAX_STEPS);
        bool only_this = CFG->only_n < 0 || (unsigned long)CFG->only_n == n;
        phase = "copying the prepared store";
        cur_dir = run_dir;
        rm_tree(run_dir);
        copy_tree(prep_dir, run_dir);

        int pfd[2];
        if (pipe(pfd) < 0)
            fail("pipe: %s", strerror(errno));
        fflush(stdout);
        fflush(stderr);
        phase = "running the operation in a child";
        pid_t pid = fork();
        if (pid < 0)
            fail("fork: %s", strerror(errno));
        if (pid == 0) {
            close(pfd[0]);
            child(k, n, pfd[1]);
        }
        close(pfd[1]);
        unsigned steps = 0;
        bool crashed = wait_child(pid, pfd[0], &steps);
        if (!crashed && steps != n - 1)
            fail("the operation finished after %u steps without being killed at step %u",
                 steps, n);
        if (crashed && only_this)
            crash_recovery(k, &before, &after);
        if (only_this || !crashed) {
            bool is_after = check_store(run_dir, k, &before, &after, crashed);
            if (crashed) {
                KS[k].points++;
                if (is_after)
                    KS[k].after++;
                else
                    KS[k].before++;
            }
            if (CFG->verbose)
                printf("    %s, step %u: %s, %s\n", kind_names[k], n,
                       crashed ? "killed" : "completed", is_after ? "after" : "before");
        } else if (crashed) {
            KS[k].points++;   /* counted, not checked (--step) */
        }
        if (!crashed) {
            KS[k].steps = steps;
            break;
        }
    }
    if (!CFG->keep)
        rm_tree(run_dir);
    state_free(&before);
    state_free(&after);
    KS[k].secs = now_sec() - t0;
    printf("  %-20s %2u crash points (%u before, %u after), %2u more in recovery, %" PRIu64
           " with leaked space; %.1f s\n", kind_names[k], KS[k].points, KS[k].before,
           KS[k].after, KS[k].nested, KS[k].leaked_runs, KS[k].secs);
    fflush(stdout);
    cur_kind = -1;
    cur_n = 0;
}

/* ------------------------------------------------------------------ */

static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [--seed N] [--only KIND] [--step N] [--dir DIR] [--keep] [-v]\n"
            "  kills a child at every step of each store operation and checks the\n"
            "  recovered store; KIND is one of:", argv0);
    for (int k = 0; k < K_KINDS; k++)
        fprintf(status ? stderr : stdout, " %s", kind_names[k]);
    fprintf(status ? stderr : stdout, "\n");
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
    struct config cfg = { .seed = DEFAULT_SEED, .only = -1, .only_n = -1,
                          .argv0 = argv[0] };
    const char *tmp = getenv("TMPDIR");
    cfg.dir = tmp && *tmp ? tmp : "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--seed") && val) {
            cfg.seed = parse_u64(argv[0], val);
            i++;
        } else if (!strcmp(a, "--only") && val) {
            for (int k = 0; k < K_KINDS; k++)
                if (!strcmp(val, kind_names[k]))
                    cfg.only = k;
            if (cfg.only < 0)
                usage(argv[0], 2);
            i++;
        } else if (!strcmp(a, "--step") && val) {
            cfg.only_n = (long)parse_u64(argv[0], val);
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
    printf("test-store-crash: seed %" PRIu64 "\n", cfg.seed);
    fflush(stdout);

    snprintf(work_dir, sizeof(work_dir), "%s/vdisk-store-crash-XXXXXX", cfg.dir);
    if (!mkdtemp(work_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", work_dir, strerror(errno));
        return 1;
    }
    snprintf(prep_dir, sizeof(prep_dir), "%s/prepared", work_dir);
    snprintf(run_dir, sizeof(run_dir), "%s/run", work_dir);
    snprintf(nest_dir, sizeof(nest_dir), "%s/nested", work_dir);
    cur_dir = prep_dir;
    g_rng.s = cfg.seed;
    g_buf = aligned_alloc(4096, 2 * CHUNK);
    if (!g_buf) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    check_rc(vd_ctx_new(0, &g_ctx), "vd_ctx_new");

    /* The prepared store, checked against the model. */
    struct cstate prepared = { 0 };
    struct vd_store *st;
    check_rc(vd_store_open(prep_dir, VD_STORE_CREATE, &st), "vd_store_open (create)");
    build(st, &prepared);
    finalize(&prepared);
    struct cstate got;
    read_state(st, &got);
    char why[512];
    if (!state_equal(&got, &prepared, why, sizeof(why)))
        fail("the prepared store does not match its model: %s", why);
    unsigned nfiles = scan_layers(st, &got);
    state_free(&got);
    if (store_check(st, 0))
        fail("the prepared store has leaked space");
    vd_store_close(st);
    list_dir(prep_dir, prep_listing, sizeof(prep_listing));
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/catalog", prep_dir);
    list_dir(p, prep_cat_listing, sizeof(prep_cat_listing));
    printf("  prepared store: %u volumes, %u templates, %u layer files; store holds"
           " \"%s\", catalog/ \"%s\"\n", prepared.nvols, prepared.ntpls, nfiles,
           prep_listing, prep_cat_listing);
    fflush(stdout);

    unsigned total = 0;
    for (int k = 0; k < K_KINDS; k++) {
        if (cfg.only >= 0 && cfg.only != k)
            continue;
        run_kind((enum op_kind)k, &prepared);
        total += KS[k].points;
    }
    /* every operation (group of variants) must have crash points */
    int bad = 0;
    for (int k = 0; k < K_KINDS; k++) {
        if (cfg.only >= 0 && cfg.only != k)
            continue;
        unsigned points = 0;
        for (int j = 0; j < K_KINDS; j++)
            if (!strcmp(kind_group[j], kind_group[k]))
                points += KS[j].points;
        if (points == 0) {
            fprintf(stderr, "FAIL: %s (%s) has no crash point: the store never calls"
                    " vdi_step in it\n", kind_names[k], kind_desc[k]);
            bad = 1;
        } else if (KS[k].points == 0) {
            printf("  note: %s has no crash point of its own (a single catalog"
                   " transaction?); its group \"%s\" has %u\n", kind_names[k],
                   kind_group[k], points);
        }
    }
    state_free(&prepared);
    dbuf_drain();
    vd_ctx_free(g_ctx);
    free(g_buf);
    if (bad) {
        fprintf(stderr, "store kept in %s\n", work_dir);
        return 1;
    }
    if (!cfg.keep)
        rm_tree(work_dir);
    unsigned nested = 0;
    for (int k = 0; k < K_KINDS; k++)
        nested += KS[k].nested;
    printf("test-store-crash: PASS, seed %" PRIu64 ", %u crash points and %u more inside"
           " the recovery, %.1f s\n", cfg.seed, total, nested, now_sec() - t0);
    return 0;
}
