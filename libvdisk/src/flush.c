/*
 * flush.c - making the index durable.
 *
 * The order is what makes a layer crash safe (docs/FORMAT.md, "Crash
 * consistency"):
 *
 *   1. fdatasync: every data write that completed before the flush began
 *      is on stable storage before any index page that points to it.
 *   2. write each dirty L2 page to the slot of its pair that does NOT hold
 *      the current version, with generation + 1.  The current version stays
 *      intact, so a torn or lost write falls back to it.
 *   3. fdatasync, then (only if L2 pages were allocated) write the L1 pages
 *      that name them, again to their other slot, and fdatasync.  An L1 page
 *      never names an L2 pair whose first version is not durable.
 *
 * A page is written at most once per flush and flushes run one at a time,
 * so the slot being overwritten never holds the only durable version.
 * The page images are copied when the flush starts; writes that complete
 * later mark their pages dirty again for the next flush.
 */
#include "vd-internal.h"

struct waiter {
    void (*cb)(void *opaque, int res);
    void *opaque;
    struct waiter *next;
};

struct pw {                 /* one page write */
    struct vdi_op op;
    uint8_t *buf;
};

struct vdi_flush {
    struct vdi_layer *l;
    struct vd_ctx *ctx;
    struct waiter *waiters;
    struct pw *l2w, *l1w;
    unsigned n_l2w, n_l1w;
    unsigned pending;
    int stage;
    int err;
    struct vdi_op sync_op;
    struct vdi_defer defer;
};

static void seal_page(uint8_t *buf, uint32_t magic, uint64_t gen, uint64_t index)
{
    vdf_put32(buf + VDF_P_MAGIC, magic);
    vdf_put32(buf + VDF_P_CRC, 0);
    vdf_put64(buf + VDF_P_GEN, gen);
    vdf_put64(buf + VDF_P_INDEX, index);
    vdf_put64(buf + VDF_P_RESERVED, 0);
    vdf_put32(buf + VDF_P_CRC, vdf_crc32c(0, buf, VDF_PAGE));
}

static void free_plan(struct vdi_flush *f)
{
    for (unsigned i = 0; i < f->n_l2w; i++)
        free(f->l2w[i].buf);
    for (unsigned i = 0; i < f->n_l1w; i++)
        free(f->l1w[i].buf);
    free(f->l2w);
    free(f->l1w);
    f->l2w = f->l1w = NULL;
    f->n_l2w = f->n_l1w = 0;
}

/* Copies the dirty pages into write buffers and advances their slot and
 * generation.  On failure nothing in the layer has changed. */
static int make_plan(struct vdi_flush *f)
{
    struct vdi_layer *l = f->l;
    int r = vdi_rehash_stale(l);
    if (r < 0)
        return r;
    f->l2w = calloc(l->n_dirty ? l->n_dirty : 1, sizeof(*f->l2w));
    if (!f->l2w)
        return vdi_err(-ENOMEM, "out of memory");
    unsigned n = 0;
    for (struct vdi_l2 *p = l->dirty_head; p; p = p->dirty_next) {
        uint8_t *b = vdi_alloc_aligned(VDF_PAGE);
        if (!b) {
            for (unsigned i = 0; i < n; i++)
                free(f->l2w[i].buf);
            free(f->l2w);
            f->l2w = NULL;
            return vdi_err(-ENOMEM, "out of memory");
        }
        f->l2w[n].buf = b;
        n++;
    }
    /* Count L1 pages to write (pages naming new L2 pairs). */
    unsigned nl1 = 0;
    for (struct vdi_l2 *p = l->dirty_head; p; p = p->dirty_next) {
        struct vdi_l1 *l1 = &l->l1[p->index / VDF_L1_EPP];
        if (!p->on_disk_l1 && !l1->dirty) {
            l1->dirty = true;
            nl1++;
        }
    }
    f->l1w = calloc(nl1 ? nl1 : 1, sizeof(*f->l1w));
    if (!f->l1w)
        goto nomem;
    for (unsigned i = 0; i < nl1; i++)
        if (!(f->l1w[i].buf = vdi_alloc_aligned(VDF_PAGE)))
            goto nomem;

    /* From here on nothing can fail. */
    n = 0;
    for (struct vdi_l2 *p = l->dirty_head, *next; p; p = next) {
        next = p->dirty_next;
        uint8_t *b = f->l2w[n].buf;
        memcpy(b, p->img, VDF_PAGE);
        p->cur_slot ^= 1;
        p->gen++;
        seal_page(b, VDF_L2_MAGIC, p->gen, p->index);
        f->l2w[n].op.kind = VDI_OP_WRITE;
        f->l2w[n].op.fd = l->fd;
        f->l2w[n].op.buf = b;
        f->l2w[n].op.len = VDF_PAGE;
        f->l2w[n].op.off = p->pair_off + (uint64_t)p->cur_slot * VDF_PAGE;
        f->l2w[n].op.meta = true;
        p->on_disk_l1 = true;
        p->dirty = false;
        p->dirty_next = NULL;
        n++;
    }
    f->n_l2w = n;
    l->dirty_head = NULL;
    l->n_dirty = 0;

    unsigned m = 0;
    for (uint64_t k = 0; k < l->n_l1 && m < nl1; k++) {
        struct vdi_l1 *l1 = &l->l1[k];
        if (!l1->dirty)
            continue;
        uint8_t *b = f->l1w[m].buf;
        memset(b, 0, VDF_PAGE);
        for (uint64_t j = 0; j < VDF_L1_EPP; j++) {
            uint64_t page = k * VDF_L1_EPP + j;
            if (page >= l->n_l2)
                break;
            struct vdi_l2 *p = vdi_l2_get(l, page);
            if (p && p->on_disk_l1)
                vdf_put64(b + VDF_P_HDR + j * 8, p->pair_off);
        }
        l1->cur_slot ^= 1;
        l1->gen++;
        l1->dirty = false;
        seal_page(b, VDF_L1_MAGIC, l1->gen, k);
        f->l1w[m].op.kind = VDI_OP_WRITE;
        f->l1w[m].op.fd = l->fd;
        f->l1w[m].op.buf = b;
        f->l1w[m].op.len = VDF_PAGE;
        f->l1w[m].op.off = l->l1_off + k * 2 * VDF_PAGE + (uint64_t)l1->cur_slot * VDF_PAGE;
        f->l1w[m].op.meta = true;
        m++;
    }
    f->n_l1w = m;
    return 0;

nomem:
    for (struct vdi_l2 *p = l->dirty_head; p; p = p->dirty_next)
        l->l1[p->index / VDF_L1_EPP].dirty = false;
    /* L1 pages dirtied earlier stay dirty: harmless, they are rewritten. */
    if (f->l1w)
        for (unsigned i = 0; i < nl1; i++)
            free(f->l1w[i].buf);
    free(f->l1w);
    f->l1w = NULL;
    for (unsigned i = 0; i < n; i++)
        free(f->l2w[i].buf);
    free(f->l2w);
    f->l2w = NULL;
    return vdi_err(-ENOMEM, "out of memory");
}

/* ---- synchronous ---- */

int vdi_layer_flush_sync(struct vdi_layer *l)
{
    struct vdi_flush f = { .l = l };
    if (!l->rdwr)
        return 0;
    if (l->failed)
        return vdi_err(-EIO, "%s: an earlier index write failed", l->path);
    int r = make_plan(&f);
    if (r < 0)
        return r;
    r = vdi_fdatasync(l->fd);
    for (unsigned i = 0; r == 0 && i < f.n_l2w; i++)
        r = vdi_pwrite_full(l->fd, f.l2w[i].buf, VDF_PAGE, f.l2w[i].op.off, true);
    if (r == 0 && f.n_l1w) {
        r = vdi_fdatasync(l->fd);
        for (unsigned i = 0; r == 0 && i < f.n_l1w; i++)
            r = vdi_pwrite_full(l->fd, f.l1w[i].buf, VDF_PAGE, f.l1w[i].op.off, true);
    }
    if (r == 0 && (f.n_l2w || f.n_l1w))
        r = vdi_fdatasync(l->fd);
    free_plan(&f);
    if (r < 0) {
        l->failed = true;
        return vdi_err(r, "%s: flush failed: %s", l->path, strerror(-r));
    }
    return 0;
}

/* ---- asynchronous ---- */

static void flush_start(struct vdi_flush *f);
static void flush_step(struct vdi_flush *f);

static void flush_finish(struct vdi_flush *f)
{
    struct vdi_layer *l = f->l;
    struct vdi_flush *next = NULL;
    free_plan(f);
    if (f->err < 0)
        l->failed = true;
    struct waiter *w = f->waiters;
    int err = f->err;
    if (l->flush_cur == f) {
        next = l->flush_wait;
        l->flush_cur = next;
        l->flush_wait = NULL;
    }
    free(f);
    while (w) {
        struct waiter *n = w->next;
        w->cb(w->opaque, err);
        free(w);
        w = n;
    }
    if (next)
        flush_start(next);
}

static void op_done(struct vdi_op *op, int res)
{
    struct vdi_flush *f = op->priv;
    if (res < 0 && f->err == 0)
        f->err = res;
    if (--f->pending == 0)
        flush_step(f);
}

static void submit_sync(struct vdi_flush *f)
{
    f->sync_op.kind = VDI_OP_FSYNC;
    f->sync_op.fd = f->l->fd;
    f->sync_op.done = op_done;
    f->sync_op.priv = f;
    f->pending = 1;
    vdi_op_submit(f->ctx, &f->sync_op);
}

static void submit_writes(struct vdi_flush *f, struct pw *w, unsigned n)
{
    f->pending = n;
    for (unsigned i = 0; i < n; i++) {
        w[i].op.done = op_done;
        w[i].op.priv = f;
        vdi_op_submit(f->ctx, &w[i].op);
    }
}

/* stage: 0 start, 1 data synced, 2 L2 written, 3 synced, 4 L1 written, 5 done */
static void flush_step(struct vdi_flush *f)
{
    if (f->err < 0) {
        vdi_err(f->err, "%s: flush failed: %s", f->l->path, strerror(-f->err));
        flush_finish(f);
        return;
    }
    switch (f->stage++) {
    case 0:
        submit_sync(f);
        return;
    case 1:
        if (f->n_l2w) {
            submit_writes(f, f->l2w, f->n_l2w);
            return;
        }
        f->stage = 5;
        flush_finish(f);
        return;
    case 2:
        submit_sync(f);
        return;
    case 3:
        if (f->n_l1w) {
            submit_writes(f, f->l1w, f->n_l1w);
            return;
        }
        flush_finish(f);
        return;
    case 4:
        submit_sync(f);
        return;
    default:
        flush_finish(f);
        return;
    }
}

static void deferred_finish(struct vdi_defer *d)
{
    struct vdi_flush *f = (struct vdi_flush *)((char *)d - offsetof(struct vdi_flush, defer));
    flush_finish(f);
}

static void flush_start(struct vdi_flush *f)
{
    struct vdi_layer *l = f->l;
    if (l->failed) {
        f->err = vdi_err(-EIO, "%s: an earlier index write failed", l->path);
    } else {
        int r = make_plan(f);
        if (r < 0)
            f->err = r;
    }
    if (f->err < 0) {
        /* Finish from the poll loop, never inside the submit call. */
        f->defer.fn = deferred_finish;
        vdi_defer(f->ctx, &f->defer);
        return;
    }
    f->stage = 0;
    flush_step(f);
}

void vdi_layer_flush(struct vd_ctx *ctx, struct vdi_layer *l,
                     void (*cb)(void *opaque, int res), void *opaque)
{
    struct waiter *w = calloc(1, sizeof(*w));
    struct vdi_flush *f = NULL;
    if (!w) {
        cb(opaque, -ENOMEM);   /* only called from completion context */
        return;
    }
    w->cb = cb;
    w->opaque = opaque;
    if (l->flush_cur) {
        /* A flush is running with a plan made earlier: join the next one. */
        if (!l->flush_wait) {
            l->flush_wait = calloc(1, sizeof(*l->flush_wait));
            if (!l->flush_wait) {
                free(w);
                cb(opaque, -ENOMEM);
                return;
            }
            l->flush_wait->l = l;
            l->flush_wait->ctx = ctx;
        }
        w->next = l->flush_wait->waiters;
        l->flush_wait->waiters = w;
        return;
    }
    f = calloc(1, sizeof(*f));
    if (!f) {
        free(w);
        cb(opaque, -ENOMEM);
        return;
    }
    f->l = l;
    f->ctx = ctx;
    f->waiters = w;
    l->flush_cur = f;
    flush_start(f);
}
