/*
 * commit.c - committing a snapshot of a volume that is in use.
 *
 * The offline commit (snapshot.c, merge.c) writes the data of the layer C
 * above snapshot S into S's layer L in place: S's content changes as it
 * goes, and nobody may write C meanwhile.  A served volume cannot stop, so
 * the online commit works in two parts.
 *
 * Copy, in the background: each block C holds data in is written, merged
 * with what L holds in its other sub-blocks, to new space at the end of L's
 * file.  L's index does not name that space yet: S, L and every chain read
 * what they read before.  Writes to the chain completed meanwhile mark
 * their blocks dirty (a hook in rw.c), and dirty blocks are copied again,
 * into the same new space.  The journal holds {"op": "commit-online", "eof":
 * L's size before}: after a kill, recovery cuts L back to it (the process
 * that runs the job holds L's write lock, so a live job is left alone).
 *
 * Switch, with the chain's requests drained: copy what is still dirty, then
 * in one catalog transaction drop S and turn the journal entry into an
 * ordinary downward merge (merge.c finishes that after a crash from here
 * on), name the new space in L's index, give L C's identity and rename it
 * over C's file, apply the merge to the catalog, and put L in the chain in
 * place of C and L.  The chain is held for the dirty remainder only.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define CM_COPIES 16                 /* most blocks in flight */
#define CM_READY_BYTES (32u << 20)   /* dirty bytes left for the switch */

struct vd_commit;

/* One run of a block copy: len bytes at buffer offset boff from (fd, off),
 * or to L's new slot + boff. */
struct cm_run {
    int fd;
    uint64_t off;
    uint32_t boff, len;
};

struct cm_op {
    struct vdi_op op;
    struct cm_copy *cp;
};

struct cm_copy {
    struct vd_commit *j;
    bool busy;
    bool writing;
    uint64_t blk, slot;
    uint8_t *buf;
    struct cm_run *rd, *wr;
    unsigned nrd, nwr, pending;
    struct cm_op *ops;
    uint64_t bytes;
    int err;
};

struct vd_commit {
    struct vd_store *st;
    struct vd_chain *chain;
    struct vd_ctx *ctx;
    char vol[VD_NAME_MAX + 1], snap[VD_NAME_MAX + 1];
    char lu[37], cu[37], jid[17];
    struct vdi_layer *L;          /* S's layer, opened for writing (holds its lock) */
    struct vdi_layer *C;          /* C as the chain has it (a reference) */
    int c_lock_fd;                /* C's lock when it is not the chain's top */
    uint64_t eof;                 /* L's file size at the start */
    uint64_t alloc;               /* next new slot */
    uint64_t csize;
    uint32_t bs, subs, shift;

    /* blocks written since their copy: a bitmap over C's blocks */
    uint64_t *dirty;
    uint64_t nblocks, ndirty, dcursor;
    /* first pass over C's blocks */
    uint64_t scan;
    bool scan_done;
    /* new slots: open addressing, key block + 1 */
    uint64_t *skey, *sval;
    uint64_t scap, sn;

    struct cm_copy copies[CM_COPIES];
    unsigned inflight;
    int err;
    uint64_t done, total;
    bool settled;                 /* vd_commit_settle done */
    uint64_t t_pause;             /* when the chain stopped */
};

/* ---- the map of new slots ---- */

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint64_t *slot_find(struct vd_commit *j, uint64_t blk)
{
    if (!j->scap)
        return NULL;
    for (uint64_t i = hash64(blk) & (j->scap - 1);; i = (i + 1) & (j->scap - 1)) {
        if (j->skey[i] == blk + 1)
            return &j->sval[i];
        if (!j->skey[i])
            return NULL;
    }
}

static int slot_put(struct vd_commit *j, uint64_t blk, uint64_t slot)
{
    uint64_t *v = slot_find(j, blk);
    if (v) {
        *v = slot;
        return 0;
    }
    if ((j->sn + 1) * 2 > j->scap) {
        uint64_t ncap = j->scap ? j->scap * 2 : 1024;
        uint64_t *nk = calloc(ncap, sizeof(*nk)), *nv = calloc(ncap, sizeof(*nv));
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return vdi_err(-ENOMEM, "out of memory");
        }
        for (uint64_t i = 0; i < j->scap; i++) {
            if (!j->skey[i])
                continue;
            uint64_t k = hash64(j->skey[i] - 1) & (ncap - 1);
            while (nk[k])
                k = (k + 1) & (ncap - 1);
            nk[k] = j->skey[i];
            nv[k] = j->sval[i];
        }
        free(j->skey);
        free(j->sval);
        j->skey = nk;
        j->sval = nv;
        j->scap = ncap;
    }
    uint64_t i = hash64(blk) & (j->scap - 1);
    while (j->skey[i])
        i = (i + 1) & (j->scap - 1);
    j->skey[i] = blk + 1;
    j->sval[i] = slot;
    j->sn++;
    return 0;
}

/* ---- dirty blocks ---- */

static bool dirty_test_clear(struct vd_commit *j, uint64_t blk)
{
    uint64_t bit = 1ull << (blk % 64);
    if (!(j->dirty[blk / 64] & bit))
        return false;
    j->dirty[blk / 64] &= ~bit;
    j->ndirty--;
    return true;
}

static void write_hook(void *opaque, uint64_t off, uint64_t len)
{
    struct vd_commit *j = opaque;
    if (j->chain->layers[0] != j->C || !len)
        return;   /* C is frozen now (a snapshot was taken): nothing changes in it */
    uint64_t last = (off + len - 1) >> j->shift;
    for (uint64_t b = off >> j->shift; b <= last && b < j->nblocks; b++) {
        uint64_t bit = 1ull << (b % 64);
        if (!(j->dirty[b / 64] & bit)) {
            j->dirty[b / 64] |= bit;
            j->ndirty++;
        }
    }
}

/* ---- planning one block ---- */

/* The runs that build block blk's merged content: each sub-block C holds
 * data for comes from C, the others L holds data for from L.  Returns the
 * number of bytes to write (0: C holds no data there, nothing to copy). */
static uint64_t plan_block(struct vd_commit *j, uint64_t blk, struct cm_copy *cp)
{
    cp->nrd = cp->nwr = 0;
    uint64_t bytes = 0;
    bool any_c = false;
    for (unsigned s = 0; s < j->subs; s++) {
        uint64_t fo;
        int fd;
        unsigned cst = vdi_lookup(j->C, blk, s, &fo);
        if (cst == VDF_SUB_PRESENT) {
            fd = j->C->fd;
            any_c = true;
        } else if (cst == VDF_SUB_ABSENT && vdi_lookup(j->L, blk, s, &fo) == VDF_SUB_PRESENT) {
            fd = j->L->fd;
        } else {
            continue;
        }
        uint32_t boff = s * VD_SUBBLOCK_SIZE;
        struct cm_run *r = cp->nrd ? &cp->rd[cp->nrd - 1] : NULL;
        if (r && r->fd == fd && r->off + r->len == fo && r->boff + r->len == boff)
            r->len += VD_SUBBLOCK_SIZE;
        else
            cp->rd[cp->nrd++] = (struct cm_run){ fd, fo, boff, VD_SUBBLOCK_SIZE };
        struct cm_run *w = cp->nwr ? &cp->wr[cp->nwr - 1] : NULL;
        if (w && w->boff + w->len == boff)
            w->len += VD_SUBBLOCK_SIZE;
        else
            cp->wr[cp->nwr++] = (struct cm_run){ j->L->fd, 0, boff, VD_SUBBLOCK_SIZE };
        bytes += VD_SUBBLOCK_SIZE;
    }
    return any_c ? bytes : 0;
}

/* The new slot of blk, given one if it has none. */
static uint64_t block_slot(struct vd_commit *j, uint64_t blk)
{
    uint64_t *v = slot_find(j, blk);
    if (v)
        return *v;
    uint64_t s = j->alloc;
    j->alloc += j->bs;
    return s;
}

/* ---- copying, asynchronously ---- */

static void copy_end(struct cm_copy *cp)
{
    struct vd_commit *j = cp->j;
    if (!cp->err && !j->err)
        cp->err = slot_put(j, cp->blk, cp->slot);
    if (cp->err && !j->err)
        j->err = cp->err;
    if (!cp->err)
        j->done += cp->bytes;
    if (j->done > j->total)
        j->total = j->done;
    cp->busy = false;
    j->inflight--;
}

static void submit_runs(struct cm_copy *cp, const struct cm_run *runs, unsigned n,
                        enum vdi_op_kind kind);

static void op_done(struct vdi_op *op, int res)
{
    struct cm_copy *cp = ((struct cm_op *)op)->cp;
    if (res < 0 && !cp->err)
        cp->err = vdi_err(res, "commit: %s block %llu: %s",
                          op->kind == VDI_OP_READ ? "reading" : "writing",
                          (unsigned long long)cp->blk, strerror(-res));
    if (--cp->pending)
        return;
    if (!cp->writing && !cp->err) {
        cp->writing = true;
        submit_runs(cp, cp->wr, cp->nwr, VDI_OP_WRITE);
        vdi_ctx_kick(cp->j->ctx);
        return;
    }
    copy_end(cp);
}

static void submit_runs(struct cm_copy *cp, const struct cm_run *runs, unsigned n,
                        enum vdi_op_kind kind)
{
    cp->pending = n;
    for (unsigned i = 0; i < n; i++) {
        struct cm_op *o = &cp->ops[i];
        memset(o, 0, sizeof(*o));
        o->cp = cp;
        o->op.kind = kind;
        o->op.fd = runs[i].fd;
        o->op.buf = cp->buf + runs[i].boff;
        o->op.len = runs[i].len;
        o->op.off = kind == VDI_OP_WRITE ? cp->slot + runs[i].boff : runs[i].off;
        o->op.done = op_done;
        vdi_op_submit(cp->j->ctx, &o->op);
    }
}

static bool block_busy(const struct vd_commit *j, uint64_t blk)
{
    for (unsigned i = 0; i < CM_COPIES; i++)
        if (j->copies[i].busy && j->copies[i].blk == blk)
            return true;
    return false;
}

/* Starts the copy of blk on cp; false when there is nothing to copy. */
static bool start_copy(struct vd_commit *j, struct cm_copy *cp, uint64_t blk)
{
    uint64_t bytes = plan_block(j, blk, cp);
    if (!bytes)
        return false;
    cp->blk = blk;
    cp->slot = block_slot(j, blk);
    cp->bytes = bytes;
    cp->err = 0;
    cp->writing = false;
    cp->busy = true;
    j->inflight++;
    submit_runs(cp, cp->rd, cp->nrd, VDI_OP_READ);
    return true;
}

/* Does C hold data in blk? */
static bool c_has_data(struct vd_commit *j, uint64_t blk)
{
    uint64_t fo;
    for (unsigned s = 0; s < j->subs; s++)
        if (vdi_lookup(j->C, blk, s, &fo) == VDF_SUB_PRESENT)
            return true;
    return false;
}

/* The next block to copy, or UINT64_MAX: the first pass over C's blocks,
 * then the dirty ones. */
static uint64_t next_block(struct vd_commit *j)
{
    while (!j->scan_done) {
        uint64_t b = j->scan;
        if (b >= j->nblocks) {
            j->scan_done = true;
            break;
        }
        if (!vdi_l2_get(j->C, b / j->C->epp)) {
            j->scan = (b / j->C->epp + 1) * j->C->epp;   /* a page C never wrote */
            continue;
        }
        if (block_busy(j, b))
            return UINT64_MAX;   /* in order: wait for it */
        j->scan++;
        dirty_test_clear(j, b);
        if (c_has_data(j, b))
            return b;
    }
    for (uint64_t n = 0; j->ndirty && n < j->nblocks;) {
        uint64_t b = j->dcursor;
        uint64_t w = j->dirty[b / 64] >> (b % 64);
        if (!w) {
            uint64_t step = 64 - b % 64;
            n += step;
            j->dcursor = (b + step) % (((j->nblocks + 63) / 64) * 64);
            continue;
        }
        unsigned tz = (unsigned)__builtin_ctzll(w);
        b += tz;
        n += tz + 1;
        j->dcursor = (b + 1) % (((j->nblocks + 63) / 64) * 64);
        if (b >= j->nblocks || block_busy(j, b))
            continue;
        dirty_test_clear(j, b);
        return b;
    }
    return UINT64_MAX;
}

int vd_commit_pump(struct vd_commit *j, unsigned max_inflight)
{
    int started = 0;
    if (max_inflight > CM_COPIES)
        max_inflight = CM_COPIES;
    while (!j->err && j->inflight < max_inflight) {
        uint64_t b = next_block(j);
        if (b == UINT64_MAX)
            break;
        struct cm_copy *cp = NULL;
        for (unsigned i = 0; i < CM_COPIES && !cp; i++)
            if (!j->copies[i].busy)
                cp = &j->copies[i];
        if (start_copy(j, cp, b))
            started++;
    }
    if (started)
        vdi_ctx_kick(j->ctx);
    return j->err ? j->err : started;
}

void vd_commit_status(const struct vd_commit *j, struct vd_commit_status *s)
{
    s->done = j->done;
    s->dirty = j->ndirty * j->bs;
    s->total = j->total > j->done + s->dirty ? j->total : j->done + s->dirty;
    s->inflight = j->inflight;
    s->scanned = j->scan_done;
    s->ready = j->scan_done && s->dirty <= CM_READY_BYTES;
}

/* ---- starting, cancelling ---- */

static void job_free(struct vd_commit *j)
{
    while (j->inflight)
        if (vd_ctx_poll(j->ctx, -1) < 0)
            break;
    if (j->chain->write_hook_opaque == j) {
        j->chain->write_hook = NULL;
        j->chain->write_hook_opaque = NULL;
    }
    for (unsigned i = 0; i < CM_COPIES; i++) {
        free(j->copies[i].buf);
        free(j->copies[i].rd);
        free(j->copies[i].wr);
        free(j->copies[i].ops);
    }
    if (j->L)
        vdi_layer_put(j->L);
    if (j->C)
        vdi_layer_put(j->C);
    if (j->c_lock_fd >= 0)
        close(j->c_lock_fd);
    free(j->dirty);
    free(j->skey);
    free(j->sval);
    free(j);
}

/* Gives the new space back and drops the journal entry. */
static void undo(struct vd_commit *j)
{
    MDB_txn *txn;
    while (j->inflight)
        if (vd_ctx_poll(j->ctx, -1) < 0)
            break;
    if (j->L && ftruncate(j->L->fd, (off_t)j->eof) < 0)
        vdi_err(-errno, "%s: truncate: %s", j->L->path, strerror(errno));
    if (j->jid[0] && st_lock(j->st) == 0) {
        if (cat_txn(j->st, true, &txn) == 0) {
            if (jnl_del(txn, j->st, j->jid) == 0)
                cat_commit(txn);
            else
                mdb_txn_abort(txn);
        }
        st_unlock(j->st);
    }
}

void vd_commit_cancel(struct vd_commit *j)
{
    if (!j)
        return;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vd_errmsg());
    undo(j);
    job_free(j);
    vdi_err(-ECANCELED, "%s", msg);
}

/* The chain's layer of UUID u, or -1. */
static int chain_index(struct vd_chain *c, const char *u)
{
    for (unsigned i = 0; i < c->n; i++) {
        char s[37];
        vd_uuid_format(&c->layers[i]->uuid, s);
        if (strcmp(s, u) == 0)
            return (int)i;
    }
    return -1;
}

/* S's layer and the child above it on the volume's path, checked for a
 * merge: S is in the current history, and its layer has no other user. */
static int find_layers(MDB_txn *txn, struct vd_store *st, const char *vol, const char *snap,
                       char key[2 * VD_NAME_MAX + 2], char top[37], char lu[37], char cu[37])
{
    json_t *v = NULL, *s = NULL, *lo = NULL;
    char one[37];
    int r = st_get_snap(txn, st, vol, snap, &v, &s, key);
    if (r < 0)
        return r;
    snprintf(top, 37, "%s", js(v, "top"));
    snprintf(lu, 37, "%s", js(s, "layer"));
    if ((r = st_path_child(txn, st, top, lu, cu)) < 0)
        goto out;
    if (!cu[0]) {
        r = vdi_err(-EINVAL, "snapshot '%s' is not in the current history of volume '%s' "
                    "(use snapshot rm)", snap, vol);
        goto out;
    }
    if ((r = cat_get(txn, st->db_lay, lu, &lo)) < 0)
        goto out;
    int nch = lay_children(txn, st, lu, one);
    if (nch < 0) {
        r = nch;
        goto out;
    }
    /* refs: the snapshot and the one child. */
    if (ju(lo, "refs") != 2 || nch != 1)
        r = vdi_err(-EBUSY, "snapshot '%s' cannot be merged: its data is shared (another "
                    "snapshot branch, a template or a clone uses it); use snapshot rm", snap);
out:
    json_decref(v);
    json_decref(s);
    json_decref(lo);
    return r;
}

int vd_commit_start(struct vd_store *st, const char *vol, const char *snap,
                    struct vd_chain *chain, struct vd_commit **out)
{
    struct vd_commit *j = calloc(1, sizeof(*j));
    char key[2 * VD_NAME_MAX + 2], top[37], lp[4096], cp[4096];
    MDB_txn *txn;
    int r;
    vdi_clear_err();
    if (!j)
        return vdi_err(-ENOMEM, "out of memory");
    j->st = st;
    j->chain = chain;
    j->ctx = chain->ctx;
    j->c_lock_fd = -1;
    snprintf(j->vol, sizeof(j->vol), "%s", vol);
    snprintf(j->snap, sizeof(j->snap), "%s", snap);
    if (chain->write_hook) {
        free(j);
        return vdi_err(-EBUSY, "a commit of volume '%s' is already running", vol);
    }
    if ((r = st_lock(st)) < 0) {
        free(j);
        return r;
    }
    if ((r = cat_txn(st, false, &txn)) < 0)
        goto fail;
    r = find_layers(txn, st, vol, snap, key, top, j->lu, j->cu);
    mdb_txn_abort(txn);
    if (r < 0)
        goto fail;
    int ci = chain_index(chain, j->cu);
    if (!chain->rdwr || chain_index(chain, top) != 0 || ci < 0 || ci + 1 >= (int)chain->n ||
        chain_index(chain, j->lu) != ci + 1) {
        r = vdi_err(-EINVAL, "the chain given is not volume '%s' open for writing", vol);
        goto fail;
    }
    if (chain->layers[ci + 1]->refs > 1) {
        r = vdi_err(-EBUSY, "snapshot '%s' is open elsewhere in this process (served?)", snap);
        goto fail;
    }
    j->C = chain->layers[ci];
    j->C->refs++;
    st_layer_path(st, j->lu, lp, sizeof(lp));
    st_layer_path(st, j->cu, cp, sizeof(cp));
    if (ci > 0) {
        /* C is frozen and nobody holds its lock: hold it, so that no other
         * process merges it meanwhile. */
        j->c_lock_fd = open(cp, O_RDONLY | O_CLOEXEC);
        if (j->c_lock_fd < 0 || flock(j->c_lock_fd, LOCK_EX | LOCK_NB) < 0) {
            r = vdi_err(-EBUSY, "layer %s is in use", j->cu);
            goto fail;
        }
    }
    if ((r = vdi_layer_open_force(lp, chain->buffered, &j->L)) < 0)
        goto fail;
    if ((r = vdi_layer_load(j->L, NULL)) < 0)
        goto fail;
    struct vdi_layer *L = j->L, *C = j->C;
    if (L->block_size != C->block_size || L->digest != C->digest) {
        r = vdi_err(-EINVAL, "snapshot '%s': layers of different geometry", snap);
        goto fail;
    }
    if (C->size > L->size && C->n_l1 != L->n_l1) {
        r = vdi_err(-ENOTSUP, "volume '%s' grew past what snapshot '%s' can index since it "
                    "was taken: commit it with the volume not in use", vol, snap);
        goto fail;
    }
    struct stat sb;
    if (fstat(L->fd, &sb) < 0) {
        r = vdi_err(-errno, "%s: %s", lp, strerror(errno));
        goto fail;
    }
    j->eof = (uint64_t)sb.st_size;
    j->alloc = (j->eof > L->file_end ? j->eof : L->file_end);
    j->alloc = (j->alloc + VDF_PAGE - 1) & ~(uint64_t)(VDF_PAGE - 1);
    j->csize = C->size;
    j->bs = C->block_size;
    j->subs = C->subs;
    j->shift = C->block_shift;
    j->nblocks = C->nblocks;
    struct vd_layer_info ci_info;
    vdi_layer_fill_info(C, &ci_info);
    j->total = ci_info.allocated;
    j->dirty = calloc((j->nblocks + 63) / 64 + 1, sizeof(uint64_t));
    if (!j->dirty)
        goto nomem;
    for (unsigned i = 0; i < CM_COPIES; i++) {
        struct cm_copy *k = &j->copies[i];
        k->j = j;
        k->buf = vdi_alloc_aligned(j->bs);
        k->rd = calloc(j->subs, sizeof(*k->rd));
        k->wr = calloc(j->subs, sizeof(*k->wr));
        k->ops = calloc(j->subs, sizeof(*k->ops));
        if (!k->buf || !k->rd || !k->wr || !k->ops)
            goto nomem;
    }
    json_t *e = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s}", "op", "commit-online", "l", j->lu,
                          "c", j->cu, "eof", (json_int_t)j->eof, "vol", vol, "snap", snap);
    if (!e)
        goto nomem;
    if ((r = cat_txn(st, true, &txn)) == 0) {
        if ((r = jnl_add(txn, st, e, j->jid)) == 0)
            r = cat_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    json_decref(e);
    if (r < 0) {
        j->jid[0] = '\0';
        goto fail;
    }
    st_unlock(st);
    chain->write_hook = write_hook;
    chain->write_hook_opaque = j;
    *out = j;
    return 0;
nomem:
    r = vdi_err(-ENOMEM, "out of memory");
fail:
    st_unlock(st);
    job_free(j);
    return r;
}

/* ---- the switch ---- */

/* Space of L to give back once its index is durable. */
struct punch {
    uint64_t *a;                  /* offset, length pairs */
    size_t n, cap;
};

static int punch_add(struct punch *p, uint64_t off, uint64_t len)
{
    if (p->n && p->a[2 * (p->n - 1)] + p->a[2 * (p->n - 1) + 1] == off) {
        p->a[2 * (p->n - 1) + 1] += len;
        return 0;
    }
    if (st_grow(&p->a, &p->cap, 2 * p->n + 1, sizeof(uint64_t)) < 0)
        return vdi_err(-ENOMEM, "out of memory");
    p->a[2 * p->n] = off;
    p->a[2 * p->n + 1] = len;
    p->n++;
    return 0;
}

/* Names the merged blocks in L's index: for every block C holds anything
 * in, sub-blocks C holds take C's state, the rest keep L's; blocks where C
 * holds data move to their new slot.  pu gets the slots no longer named
 * (old slots, new ones left unused), now the sub-blocks of named slots
 * that hold nothing now: those must be punched before the chain writes
 * again (a write to such a sub-block goes to the same place). */
static int install(struct vd_commit *j, struct punch *pu, struct punch *now)
{
    struct vdi_layer *L = j->L, *C = j->C;
    int r;
    if (j->alloc > L->file_end)
        L->file_end = j->alloc;
    for (uint64_t pg = 0; pg < C->n_l2; pg++) {
        struct vdi_l2 *cpg = vdi_l2_get(C, pg);
        if (!cpg)
            continue;
        for (uint64_t i = 0; i < C->epp; i++) {
            uint64_t blk = pg * C->epp + i;
            if (blk >= C->nblocks)
                break;
            const uint8_t *ce = vdi_entry(C, cpg, i);
            bool any = false, data = false;
            for (unsigned s = 0; s < C->subs; s++) {
                unsigned cs = vdi_sub_state(ce, s);
                any |= cs != VDF_SUB_ABSENT;
                data |= cs == VDF_SUB_PRESENT;
            }
            if (!any)
                continue;
            struct vdi_l2 *p = vdi_l2_get_or_new(L, blk / L->epp);
            if (!p)
                return vdi_err(-ENOMEM, "out of memory");
            if (!p->pair_off) {
                r = vdi_reserve(L->fd, L->file_end, 2 * VDF_PAGE);
                if (r == 0)
                    r = vdi_reserve(L->fd, L->l1_off + (p->index / VDF_L1_EPP) * 2 * VDF_PAGE,
                                    2 * VDF_PAGE);
                if (r < 0)
                    return vdi_err(r, "%s: cannot allocate index pages: %s", L->path,
                                   strerror(-r));
                p->pair_off = L->file_end;
                L->file_end += 2 * VDF_PAGE;
            }
            uint8_t *e = vdi_entry(L, p, blk % L->epp);
            uint64_t old = vdf_le64(e + VDF_E_OFFSET), slot = old;
            if (data) {
                uint64_t *ns = slot_find(j, blk);
                if (!ns)
                    return vdi_err(-EIO, "commit: block %llu was not copied",
                                   (unsigned long long)blk);
                slot = *ns;
                *ns |= 1;   /* used (slots are page aligned) */
                if (old && (r = punch_add(pu, old, L->block_size)) < 0)
                    return r;
            }
            bool present = false;
            for (unsigned s = 0; s < C->subs; s++) {
                unsigned cs = vdi_sub_state(ce, s);
                if (cs == VDF_SUB_ABSENT) {
                    present |= vdi_sub_state(e, s) == VDF_SUB_PRESENT;
                    continue;
                }
                if (!data && old && vdi_sub_state(e, s) == VDF_SUB_PRESENT &&
                    cs != VDF_SUB_PRESENT &&
                    (r = punch_add(now, old + (uint64_t)s * VD_SUBBLOCK_SIZE,
                                   VD_SUBBLOCK_SIZE)) < 0)
                    return r;
                vdi_set_sub_state(e, s, cs);
                present |= cs == VDF_SUB_PRESENT;
            }
            if (data) {
                /* Sub-blocks of the new slot written by an earlier copy of
                 * the block and zero or absent now. */
                for (unsigned s = 0; s < C->subs; s++)
                    if (vdi_sub_state(e, s) != VDF_SUB_PRESENT &&
                        (r = punch_add(now, slot + (uint64_t)s * VD_SUBBLOCK_SIZE,
                                       VD_SUBBLOCK_SIZE)) < 0)
                        return r;
            }
            vdf_put64(e + VDF_E_OFFSET, present ? slot : 0);
            if (!present && slot && !data && (r = punch_add(pu, slot, L->block_size)) < 0)
                return r;
            if (L->digest != VD_DIGEST_NONE && present)
                p->stale[(blk % L->epp) / 8] |= (uint8_t)(1u << ((blk % L->epp) % 8));
            vdi_l2_mark_dirty(L, p);
        }
    }
    for (uint64_t i = 0; i < j->scap; i++)
        if (j->skey[i] && !(j->sval[i] & 1) && (r = punch_add(pu, j->sval[i], L->block_size)) < 0)
            return r;
    return 0;
}

/* The journal entry of the downward merge the switch does: recovery
 * (merge.c) redoes the copy of C into L, then gives back the space the
 * index no longer names ("eof" marks an online commit's merge). */
static int add_merge(MDB_txn *txn, struct vd_commit *j, char id[17])
{
    json_t *e = json_pack("{s:s,s:s,s:s,s:s,s:I}", "op", "merge", "l", j->lu, "c", j->cu,
                          "mode", "down", "eof", (json_int_t)j->eof);
    if (!e)
        return vdi_err(-ENOMEM, "out of memory");
    int r = jnl_add(txn, j->st, e, id);
    json_decref(e);
    return r;
}

struct punch_work {
    int fd;
    struct punch pu;
};

static void *punch_thread(void *arg)
{
    struct punch_work *w = arg;
    for (size_t i = 0; i < w->pu.n; i++)
        vdi_be->fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          (off_t)w->pu.a[2 * i], (off_t)w->pu.a[2 * i + 1]);
    close(w->fd);
    free(w->pu.a);
    free(w);
    return NULL;
}

/* Punches the ranges of pu in fd on a thread of its own (takes pu's
 * array); inline if no thread can be had.  A kill before it is done only
 * leaves space that vd_store_check --repair gives back. */
static void punch_later(int fd, struct punch *pu)
{
    struct punch_work *w = malloc(sizeof(*w));
    pthread_attr_t a;
    pthread_t t;
    if (w && (w->fd = dup(fd)) >= 0) {
        w->pu = *pu;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&t, &a, punch_thread, w);
        pthread_attr_destroy(&a);
        if (r == 0) {
            pu->a = NULL;
            pu->n = 0;
            return;
        }
        close(w->fd);
    }
    free(w);
    for (size_t i = 0; i < pu->n; i++)
        vdi_be->fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)pu->a[2 * i],
                          (off_t)pu->a[2 * i + 1]);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vd_commit_settle(struct vd_commit *j)
{
    struct vd_chain *c = j->chain;
    int r;
    while (j->inflight)
        if (vd_ctx_poll(j->ctx, -1) < 0)
            break;
    j->t_pause = now_ns();
    vdi_chain_drain(c);
    if ((r = j->err) < 0)
        return r;
    int ci = chain_index(c, j->cu);
    if (ci < 0 || c->layers[ci] != j->C || ci + 1 >= (int)c->n ||
        chain_index(c, j->lu) != ci + 1 || c->size != j->csize) {
        return vdi_err(-EINVAL, "volume '%s' changed during the commit (resized or rolled "
                       "back)", j->vol);
    }
    if (c->layers[ci + 1]->refs > 1) {
        /* Another chain (of the snapshot, or one above it) reads L through
         * the layer cache with L's old index. */
        return vdi_err(-EBUSY, "snapshot '%s' was opened elsewhere in this process during "
                       "the commit", j->snap);
    }
    /* What is left (the rest of the first pass, the dirty blocks), with
     * every copy slot busy: no request of the chain starts meanwhile. */
    while (r == 0 && (!j->scan_done || j->ndirty || j->inflight)) {
        if ((r = vd_commit_pump(j, CM_COPIES)) < 0)
            break;
        r = 0;
        if (j->inflight && (r = vd_ctx_poll(j->ctx, -1)) < 0)
            break;
        r = 0;
    }
    if (r == 0)
        r = j->err;
    if (r == 0 && (r = vdi_fdatasync(j->L->fd)) < 0)
        vdi_err(r, "%s: sync: %s", j->L->path, strerror(-r));
    if (r == 0)
        j->settled = true;
    return r;
}

int vd_commit_finish(struct vd_commit *j, uint64_t *pause_ns)
{
    struct vd_store *st = j->st;
    struct vd_chain *c = j->chain;
    char key[2 * VD_NAME_MAX + 2], top[37], lu[37], cu[37], parent[37], mid[17];
    char lp[4096], cp[4096];
    struct punch pu = { 0 }, now = { 0 };
    MDB_txn *txn;
    int r = 0, ci;
    if (!j->settled && (r = vd_commit_settle(j)) < 0)
        goto cancel;
    if (c->inflight || j->inflight) {
        r = vdi_err(-EINVAL, "commit: requests started between settle and finish");
        goto cancel;
    }
    ci = chain_index(c, j->cu);

    /* S goes; from here on the journal holds a merge, which recovery
     * finishes. */
    if ((r = st_lock(st)) < 0)
        goto cancel;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto cancel_locked;
    if ((r = find_layers(txn, st, j->vol, j->snap, key, top, lu, cu)) < 0 ||
        strcmp(lu, j->lu) != 0 || strcmp(cu, j->cu) != 0) {
        if (r == 0)
            r = vdi_err(-EINVAL, "snapshot '%s' changed during the commit", j->snap);
        goto abort;
    }
    json_t *ul = json_array();
    r = ul ? lay_parent(txn, st, j->lu, parent) : -ENOMEM;
    if (r == 0 && (r = cat_del(txn, st->db_snap, key)) == 0 &&
        (r = lay_ref(txn, st, j->lu, -1, ul)) == 0 && (r = jnl_del(txn, st, j->jid)) == 0 &&
        (r = add_merge(txn, j, mid)) == 0 && json_array_size(ul) == 0)
        r = cat_commit(txn);
    else if (r == 0)
        r = vdi_err(-EUCLEAN, "commit: the snapshot's layer lost its last reference");
    json_decref(ul);
    if (r < 0)
        goto abort;
    j->jid[0] = '\0';
    vdi_step("online commit: snapshot dropped");

    /* The file work of the merge. */
    struct vdi_layer *L = j->L, *C = j->C;
    st_layer_path(st, j->lu, lp, sizeof(lp));
    st_layer_path(st, j->cu, cp, sizeof(cp));
    if (C->size > L->size && (r = vdi_layer_grow(L, C->size)) < 0)
        goto broken;
    if ((r = install(j, &pu, &now)) < 0 || (r = vdi_layer_flush_sync(L)) < 0)
        goto broken;
    vdi_step("online commit: index written");
    L->uuid = C->uuid;
    uint32_t flags = ci == 0 ? (C->flags | VDF_F_DIRTY) & ~VDF_F_FROZEN : C->flags;
    if ((r = vdi_layer_write_header(L, flags)) < 0)
        goto broken;
    if (rename(lp, cp) < 0) {
        r = vdi_err(-errno, "rename %s: %s", lp, strerror(errno));
        goto broken;
    }
    free(L->path);
    L->path = strdup(cp);
    vdi_step("online commit: file replaced");
    /* C's file is gone: the chain must go on with L whatever happens to
     * the catalog (the journal finishes it at the next open). */
    r = mg_finish(st, mid, j->lu, j->cu, parent);
    st_unlock(st);

    /* The chain goes on with L in place of C and L. */
    struct vdi_layer *oldl = c->layers[ci + 1];
    c->layers[ci] = L;
    memmove(c->layers + ci + 1, c->layers + ci + 2, (c->n - ci - 2) * sizeof(*c->layers));
    c->n--;
    if (ci > 0) {
        L->rdwr = false;
        flock(L->fd, LOCK_UN);
    }
    j->L = NULL;
    vdi_layer_put(C);          /* the chain's reference; ours goes in job_free */
    vdi_layer_put(oldl);
    vdi_below_reset(c);
    /* Sub-blocks of slots L names: before the chain writes there again.
     * Whole slots nothing names: on a thread, not while the chain waits
     * (a system call per range). */
    for (size_t i = 0; i < now.n; i++)
        vdi_be->fallocate(L->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          (off_t)now.a[2 * i], (off_t)now.a[2 * i + 1]);
    if (pause_ns)
        *pause_ns = now_ns() - j->t_pause;
    punch_later(L->fd, &pu);
    goto out;

broken:
    /* The merge is in the journal and the chain still reads C over the old
     * L (whose old data is kept): the next store open finishes it.  Until
     * the chain closes, it keeps the locks that stop another process from
     * doing so under it. */
    st_unlock(st);
    c->pinned = j->L;
    c->pinned_fd = j->c_lock_fd;
    j->L = NULL;
    j->c_lock_fd = -1;
    goto out;
abort:
    mdb_txn_abort(txn);
cancel_locked:
    st_unlock(st);
cancel:
    undo(j);
out:
    free(pu.a);
    free(now.a);
    job_free(j);
    return r;
}

/* ---- recovery ---- */

int cm_recover(struct vd_store *st, json_t *j)
{
    char lp[4096];
    const char *l = js(j, "l");
    if (mg_layer_busy(st, l))
        return -EBUSY;
    st_layer_path(st, l, lp, sizeof(lp));
    struct stat sb;
    uint64_t eof = ju(j, "eof");
    if (stat(lp, &sb) == 0 && (uint64_t)sb.st_size > eof && truncate(lp, (off_t)eof) < 0)
        return vdi_err(-errno, "%s: truncate: %s", lp, strerror(errno));
    return 0;
}
