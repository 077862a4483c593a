/*
 * rw.c - requests: read, write, write-zeroes, discard and flush on a
 * chain, as small state machines over asynchronous file operations.
 *
 * Reads resolve each 4 KiB sub-block in memory (the top layer's index, then
 * the below map) and issue one file read per contiguous run.
 *
 * Writes go to the top layer.  A block gets a data slot the first time it
 * is written; a whole sub-block is written straight from the caller's
 * buffer, a partial one that the top does not hold yet is read from below
 * (or zero-filled), merged and written as 4 KiB: copy-on-write at 4 KiB, not
 * at block size.  The index is changed in memory only when the data write
 * has completed, so a flush can never make durable an index entry whose
 * data is not written.  Write-like requests that touch the same sub-blocks
 * run one after another, so a read-modify-write never races another write.
 */
#include <fcntl.h>

#include "vd-internal.h"

enum req_type { R_READ, R_WRITE, R_ZERO, R_DISCARD, R_FLUSH };

struct upd {
    uint64_t blk;
    uint16_t s0, s1;              /* sub-blocks [s0, s1) */
    uint8_t state;
};

struct vdi_req;

struct sop {
    struct vdi_op op;
    struct vdi_req *req;
    struct sop *next;
    /* read-modify-write of one sub-block */
    bool rmw;
    uint8_t *rmw_buf;
    const uint8_t *src;           /* NULL: merge zeroes */
    unsigned inner, n;            /* where the new bytes go, how many */
    uint64_t wr_off;
    int wr_fd;
};

struct vdi_req {
    struct vd_chain *c;
    enum req_type type;
    unsigned flags;
    uint8_t *ubuf;
    uint8_t *bounce;
    uint64_t off, len;
    uint64_t sub_first, sub_last;
    vd_io_cb cb;
    void *opaque;
    unsigned pending;
    int err;
    struct sop *sops;
    struct upd *upds;
    unsigned nupd, capupd;
    struct vdi_req *wnext;        /* chain's list of running write-like requests */
    struct vdi_req *bnext;        /* chain's queue of blocked ones */
    struct vdi_defer defer;
};

static const uint8_t zero_buf[VD_SUBBLOCK_SIZE] __attribute__((aligned(VDF_PAGE)));

/* ------------------------------------------------------------------ */
/* Completion                                                          */
/* ------------------------------------------------------------------ */

static void req_free(struct vdi_req *q)
{
    for (struct sop *s = q->sops, *n; s; s = n) {
        n = s->next;
        free(s->rmw_buf);
        free(s);
    }
    free(q->upds);
    free(q->bounce);
    free(q);
}

static void user_cb(struct vdi_defer *d)
{
    struct vdi_req *q = (struct vdi_req *)((char *)d - offsetof(struct vdi_req, defer));
    struct vd_chain *c = q->c;
    vd_io_cb cb = q->cb;
    void *opaque = q->opaque;
    int err = q->err;
    req_free(q);
    c->inflight--;
    c->ctx->reqs_inflight--;
    c->ctx->reqs_completed++;
    cb(opaque, err);
}

static void req_finish(struct vdi_req *q)
{
    if (q->type == R_READ && q->bounce && q->err == 0)
        memcpy(q->ubuf, q->bounce, q->len);
    q->defer.fn = user_cb;
    vdi_defer(q->c->ctx, &q->defer);
}

static bool overlaps(const struct vdi_req *a, const struct vdi_req *b)
{
    return a->sub_first <= b->sub_last && b->sub_first <= a->sub_last;
}

static void req_start(struct vdi_req *q);

static void unblock(struct vd_chain *c)
{
    /* Starting a request can finish it at once and call us again: the
     * outer call rescans instead. */
    if (c->unblocking) {
        c->unblock_again = true;
        return;
    }
    c->unblocking = true;
again:
    c->unblock_again = false;
    struct vdi_req **pp = &c->blocked_head, *prev = NULL;
    while (*pp) {
        struct vdi_req *q = *pp;
        bool blocked = false;
        for (struct vdi_req *w = c->writes; w && !blocked; w = w->wnext)
            blocked = overlaps(q, w);
        /* Keep order among blocked requests that overlap each other. */
        for (struct vdi_req *b = c->blocked_head; b != q && !blocked; b = b->bnext)
            blocked = overlaps(q, b);
        if (blocked) {
            prev = q;
            pp = &q->bnext;
            continue;
        }
        *pp = q->bnext;
        if (c->blocked_tail == q)
            c->blocked_tail = prev;
        q->bnext = NULL;
        q->wnext = c->writes;
        c->writes = q;
        req_start(q);
        if (c->unblock_again)
            goto again;
    }
    c->unblocking = false;
}

static void fua_done(void *opaque, int res)
{
    struct vdi_req *q = opaque;
    if (res < 0 && q->err == 0)
        q->err = res;
    req_finish(q);
}

/* Applies the request's index updates to the top layer (data is written). */
static void apply_updates(struct vdi_req *q)
{
    struct vd_chain *c = q->c;
    struct vdi_layer *t = c->layers[0];
    bool digest = t->digest != VD_DIGEST_NONE;
    for (unsigned i = 0; i < q->nupd; i++) {
        struct upd *u = &q->upds[i];
        struct vdi_l2 *p = vdi_l2_get(t, u->blk / t->epp);
        if (!p)
            continue;   /* cannot happen: pages are made at submit */
        uint64_t idx = u->blk % t->epp;
        uint8_t *e = vdi_entry(t, p, idx);
        uint64_t slot = vdf_le64(e + VDF_E_OFFSET);
        bool changed = false;
        uint64_t punch_from = 0, punch_len = 0;
        for (unsigned s = u->s0; s < u->s1; s++) {
            unsigned old = vdi_sub_state(e, s);
            if (old == u->state)
                continue;
            changed = true;
            vdi_set_sub_state(e, s, u->state);
            if (old == VDF_SUB_PRESENT && slot) {
                /* Give the space back; reads of it see zeroes, which is
                 * the new content whether or not the index reaches disk. */
                uint64_t at = slot + (uint64_t)s * VD_SUBBLOCK_SIZE;
                if (punch_len && punch_from + punch_len == at) {
                    punch_len += VD_SUBBLOCK_SIZE;
                } else {
                    if (punch_len)
                        vdi_be->fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                          (off_t)punch_from, (off_t)punch_len);
                    punch_from = at;
                    punch_len = VD_SUBBLOCK_SIZE;
                }
            }
        }
        if (punch_len)
            vdi_be->fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t)punch_from, (off_t)punch_len);
        if (changed || digest) {
            if (digest && slot)
                p->stale[idx / 8] |= (uint8_t)(1u << (idx % 8));
            vdi_l2_mark_dirty(t, p);
        }
    }
}

static void req_done(struct vdi_req *q)
{
    struct vd_chain *c = q->c;
    if (q->type == R_READ || q->type == R_FLUSH) {
        req_finish(q);
        return;
    }
    if (q->err == 0)
        apply_updates(q);
    if (c->write_hook)
        c->write_hook(c->write_hook_opaque, q->off, q->len);
    struct vdi_req **pp = &c->writes;
    while (*pp && *pp != q)
        pp = &(*pp)->wnext;
    if (*pp)
        *pp = q->wnext;
    unblock(c);
    if (q->err == 0 && (q->flags & VD_IO_FUA)) {
        vdi_layer_flush(c->ctx, c->layers[0], fua_done, q);
        return;
    }
    req_finish(q);
}

static void sop_done(struct vdi_op *op, int res)
{
    struct sop *s = (struct sop *)op;
    struct vdi_req *q = s->req;
    if (res < 0 && q->err == 0)
        q->err = vdi_err(res, "I/O error: %s", strerror(-res));
    if (s->rmw && op->kind == VDI_OP_READ && res >= 0) {
        /* Merge the new bytes into the old sub-block and write it back. */
        if (s->src)
            memcpy(s->rmw_buf + s->inner, s->src, s->n);
        else
            memset(s->rmw_buf + s->inner, 0, s->n);
        op->kind = VDI_OP_WRITE;
        op->off = s->wr_off;
        op->fd = s->wr_fd;
        op->meta = false;
        vdi_op_submit(q->c->ctx, op);
        return;
    }
    if (--q->pending == 0)
        req_done(q);
}

/* ------------------------------------------------------------------ */
/* Building requests                                                   */
/* ------------------------------------------------------------------ */

static struct sop *new_sop(struct vdi_req *q, enum vdi_op_kind kind, int fd,
                           void *buf, size_t len, uint64_t off)
{
    struct sop *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->req = q;
    s->op.kind = kind;
    s->op.fd = fd;
    s->op.buf = buf;
    s->op.len = len;
    s->op.off = off;
    s->op.done = sop_done;
    s->next = q->sops;
    q->sops = s;
    return s;
}

static void submit_sop(struct vdi_req *q, struct sop *s)
{
    q->pending++;
    vdi_op_submit(q->c->ctx, &s->op);
}

static int add_upd(struct vdi_req *q, uint64_t blk, unsigned sub, uint8_t state)
{
    if (q->nupd) {
        struct upd *u = &q->upds[q->nupd - 1];
        if (u->blk == blk && u->s1 == sub && u->state == state) {
            u->s1++;
            return 0;
        }
    }
    if (q->nupd == q->capupd) {
        unsigned n = q->capupd ? q->capupd * 2 : 8;
        struct upd *a = realloc(q->upds, n * sizeof(*a));
        if (!a)
            return -ENOMEM;
        q->upds = a;
        q->capupd = n;
    }
    q->upds[q->nupd++] = (struct upd){ .blk = blk, .s0 = (uint16_t)sub,
                                       .s1 = (uint16_t)(sub + 1), .state = state };
    return 0;
}

/* Where the current content of a sub-block below the top lives.
 * Returns true, with the file, offset and valid length, when a layer holds data for it. */
static bool below_data(struct vd_chain *c, uint64_t blk, unsigned sub,
                       int *fd, uint64_t *off, uint64_t *valid)
{
    unsigned d = vdi_below_owner(c, blk, sub);
    if (!d)
        return false;
    struct vdi_layer *l = c->layers[d - 1];
    uint64_t fo;
    if (vdi_lookup(l, blk, sub, &fo) != VDF_SUB_PRESENT)
        return false;
    uint64_t start = (blk << c->block_shift) + (uint64_t)sub * VD_SUBBLOCK_SIZE;
    if (start >= l->size)
        return false;
    *fd = l->fd;
    *off = fo;
    *valid = l->size - start < VD_SUBBLOCK_SIZE ? l->size - start : VD_SUBBLOCK_SIZE;
    return true;
}

/* A piece of a read served by the block cache completed. */
static void bc_piece_done(void *opaque, int err)
{
    struct vdi_req *q = opaque;
    if (err < 0 && q->err == 0)
        q->err = err;
    if (--q->pending == 0)
        req_done(q);
}

/* Reads a run of layer l's file into buf: through the block cache for the
 * frozen layers of a layer cache that has one, else one file read. */
static int read_run(struct vdi_req *q, struct vdi_layer *l, uint8_t *buf, uint64_t foff,
                    uint64_t len)
{
    struct vd_layer_cache *lc = l->cache;
    if (lc && lc->blocks) {
        uint64_t phys = 0;
        while (len) {
            uint32_t n = VDI_BC_CHUNK - (uint32_t)(foff & (VDI_BC_CHUNK - 1));
            if (n > len)
                n = (uint32_t)len;
            q->pending++;
            int r = vdi_bcache_read(lc->blocks, q->c->ctx, l->lid, l->fd, buf, foff, n,
                                    bc_piece_done, q, &phys);
            if (r <= 0)
                q->pending--;
            if (r == 0)
                __atomic_add_fetch(&q->c->cache_hit_bytes, n, __ATOMIC_RELAXED);
            if (r < 0)
                return r;
            buf += n;
            foff += n;
            len -= n;
        }
        if (phys) {
            __atomic_add_fetch(&lc->frozen_read_bytes, phys, __ATOMIC_RELAXED);
            __atomic_add_fetch(&q->c->frozen_read_bytes, phys, __ATOMIC_RELAXED);
        }
        return 0;
    }
    if (lc) {
        __atomic_add_fetch(&lc->frozen_read_bytes, len, __ATOMIC_RELAXED);
        __atomic_add_fetch(&q->c->frozen_read_bytes, len, __ATOMIC_RELAXED);
    }
    struct sop *s = new_sop(q, VDI_OP_READ, l->fd, buf, len, foff);
    if (!s)
        return -ENOMEM;
    submit_sop(q, s);
    return 0;
}

static int build_read(struct vdi_req *q)
{
    struct vd_chain *c = q->c;
    struct vdi_layer *t = c->layers[0];
    uint8_t *dst = q->bounce ? q->bounce : q->ubuf;
    uint64_t pos = q->off, end = q->off + q->len;
    /* current run */
    struct vdi_layer *rl = NULL;
    uint64_t rstart = 0, rfoff = 0, rlen = 0;
    bool rzero = false;
    int r;

    while (pos < end) {
        uint64_t blk = pos >> c->block_shift;
        unsigned sub = (unsigned)((pos & (c->block_size - 1)) / VD_SUBBLOCK_SIZE);
        uint64_t inner = pos % VD_SUBBLOCK_SIZE;
        uint64_t n = VD_SUBBLOCK_SIZE - inner;
        if (n > end - pos)
            n = end - pos;
        struct vdi_layer *src = NULL;
        uint64_t fo = 0;
        unsigned st = vdi_lookup(t, blk, sub, &fo);
        if (st == VDF_SUB_PRESENT) {
            src = t;
            fo += inner;
        } else if (st == VDF_SUB_ABSENT) {
            unsigned d = vdi_below_owner(c, blk, sub);
            if (d) {
                struct vdi_layer *l = c->layers[d - 1];
                if (vdi_lookup(l, blk, sub, &fo) == VDF_SUB_PRESENT && pos < l->size) {
                    src = l;
                    fo += inner;
                    if (n > l->size - pos)
                        n = l->size - pos;
                }
            }
        }
        bool zero = !src;
        bool extends = rlen && zero == rzero &&
                       (zero || (src == rl && rfoff + rlen == fo));
        if (!extends) {
            if (rlen) {
                if (rzero)
                    memset(dst + (rstart - q->off), 0, rlen);
                else if ((r = read_run(q, rl, dst + (rstart - q->off), rfoff, rlen)) < 0)
                    return r;
            }
            rstart = pos;
            rlen = 0;
            rzero = zero;
            rl = src;
            rfoff = fo;
        }
        rlen += n;
        pos += n;
    }
    if (rlen) {
        if (rzero)
            memset(dst + (rstart - q->off), 0, rlen);
        else if ((r = read_run(q, rl, dst + (rstart - q->off), rfoff, rlen)) < 0)
            return r;
    }
    return 0;
}

/* Entry of blk in the top layer, creating its page (and data slot when
 * want_slot) if needed; NULL with *err set on failure.  A new L2 page pair
 * gets its disk blocks at once (vdi_reserve): with the disk full, this
 * write fails now with ENOSPC, rather than a later flush of index pages
 * that would name data already acknowledged. */
static uint8_t *top_entry(struct vd_chain *c, uint64_t blk, bool want_slot,
                          struct vdi_l2 **pout, int *err)
{
    struct vdi_layer *t = c->layers[0];
    struct vdi_l2 *p = vdi_l2_get_or_new(t, blk / t->epp);
    if (!p) {
        *err = -ENOMEM;
        return NULL;
    }
    if (!p->pair_off) {
        /* The pair, and the L1 page pair that will name it. */
        int r = vdi_reserve(t->fd, t->file_end, 2 * VDF_PAGE);
        if (r == 0)
            r = vdi_reserve(t->fd, t->l1_off + (p->index / VDF_L1_EPP) * 2 * VDF_PAGE,
                            2 * VDF_PAGE);
        if (r < 0) {
            *err = vdi_err(r, "%s: cannot allocate index pages: %s", t->path, strerror(-r));
            return NULL;
        }
        p->pair_off = t->file_end;
        t->file_end += 2 * VDF_PAGE;
    }
    uint8_t *e = vdi_entry(t, p, blk % t->epp);
    if (want_slot && !vdf_le64(e + VDF_E_OFFSET)) {
        vdf_put64(e + VDF_E_OFFSET, t->file_end);
        t->file_end += t->block_size;
        vdi_l2_mark_dirty(t, p);
    }
    *pout = p;
    return e;
}

/* A partial sub-block that the top does not hold: read the old content
 * from below (or start from zeroes), merge, write 4 KiB. */
static int queue_rmw(struct vdi_req *q, uint64_t blk, unsigned sub, unsigned st,
                     uint64_t slot, unsigned inner, unsigned n, const uint8_t *src)
{
    struct vd_chain *c = q->c;
    uint8_t *buf = vdi_alloc_aligned(VD_SUBBLOCK_SIZE);
    if (!buf)
        return -ENOMEM;
    int fd = -1;
    uint64_t off = 0, valid = 0;
    bool from_below = st == VDF_SUB_ABSENT && below_data(c, blk, sub, &fd, &off, &valid);
    uint64_t wr = slot + (uint64_t)sub * VD_SUBBLOCK_SIZE;
    struct sop *s;
    if (from_below && valid == VD_SUBBLOCK_SIZE) {
        s = new_sop(q, VDI_OP_READ, fd, buf, VD_SUBBLOCK_SIZE, off);
    } else {
        if (from_below) {
            /* The parent ends inside this sub-block: read what it has
             * synchronously (rare) and leave the rest zero. */
            int r = vdi_pread_full(fd, buf, valid, off);
            if (r < 0 && r != -ENODATA) {
                free(buf);
                return r;
            }
        }
        if (src)
            memcpy(buf + inner, src, n);
        else
            memset(buf + inner, 0, n);
        s = new_sop(q, VDI_OP_WRITE, c->layers[0]->fd, buf, VD_SUBBLOCK_SIZE, wr);
        if (s) {
            s->rmw_buf = buf;
            submit_sop(q, s);
            return 0;
        }
    }
    if (!s) {
        free(buf);
        return -ENOMEM;
    }
    s->rmw = true;
    s->rmw_buf = buf;
    s->src = src;
    s->inner = inner;
    s->n = n;
    s->wr_off = wr;
    s->wr_fd = c->layers[0]->fd;
    submit_sop(q, s);
    return 0;
}

static int build_write(struct vdi_req *q)
{
    struct vd_chain *c = q->c;
    struct vdi_layer *t = c->layers[0];
    const uint8_t *src = q->bounce ? q->bounce : q->ubuf;
    bool zeroing = q->type != R_WRITE;
    uint8_t zstate = (q->type == R_DISCARD && c->n == 1) ? VDF_SUB_ABSENT : VDF_SUB_ZERO;
    uint64_t pos = q->off, end = q->off + q->len;
    struct sop *last = NULL;       /* last plain write, for merging */
    const uint8_t *last_src = NULL;
    int r;

    while (pos < end) {
        uint64_t blk = pos >> c->block_shift;
        unsigned sub = (unsigned)((pos & (c->block_size - 1)) / VD_SUBBLOCK_SIZE);
        unsigned inner = (unsigned)(pos % VD_SUBBLOCK_SIZE);
        unsigned n = VD_SUBBLOCK_SIZE - inner;
        if (n > end - pos)
            n = (unsigned)(end - pos);
        bool full = n == VD_SUBBLOCK_SIZE;
        const uint8_t *data = zeroing ? NULL : src + (pos - q->off);
        struct vdi_l2 *p;
        uint64_t fo;

        if (zeroing && full) {
            /* Whole sub-block: a state change, no data. */
            unsigned st = vdi_lookup(t, blk, sub, &fo);
            if (st != zstate) {
                if (!top_entry(c, blk, false, &p, &r))
                    return r;
                if ((r = add_upd(q, blk, sub, zstate)) < 0)
                    return r;
            }
            last = NULL;
            pos += n;
            continue;
        }
        unsigned st = vdi_lookup(t, blk, sub, &fo);
        if (zeroing && st == VDF_SUB_ZERO) {
            pos += n;
            continue;
        }
        if (zeroing && st == VDF_SUB_ABSENT) {
            int fd;
            uint64_t o, v;
            if (!below_data(c, blk, sub, &fd, &o, &v)) {
                pos += n;     /* nothing below: it already reads as zeroes */
                continue;
            }
        }
        uint8_t *e = top_entry(c, blk, true, &p, &r);
        if (!e)
            return r;
        uint64_t slot = vdf_le64(e + VDF_E_OFFSET);
        uint64_t at = slot + (uint64_t)sub * VD_SUBBLOCK_SIZE + inner;
        if (full || st == VDF_SUB_PRESENT) {
            const uint8_t *b = data ? data : zero_buf;
            if (data && last && last_src + last->op.len == data &&
                last->op.off + last->op.len == at) {
                last->op.len += n;
            } else {
                if (last)
                    submit_sop(q, last);
                last = new_sop(q, VDI_OP_WRITE, t->fd, (void *)b, n, at);
                if (!last)
                    return -ENOMEM;
                last_src = b;
                if (!data) {
                    submit_sop(q, last);
                    last = NULL;
                }
            }
        } else {
            if ((r = queue_rmw(q, blk, sub, st, slot, inner, n, data)) < 0)
                return r;
        }
        if ((r = add_upd(q, blk, sub, VDF_SUB_PRESENT)) < 0)
            return r;
        pos += n;
    }
    if (last)
        submit_sop(q, last);
    return 0;
}

static void flush_done(void *opaque, int res)
{
    struct vdi_req *q = opaque;
    if (res < 0)
        q->err = res;
    req_finish(q);
}

static void req_start(struct vdi_req *q)
{
    int r = 0;
    q->pending = 1;   /* held until everything is submitted */
    if (q->type == R_READ)
        r = build_read(q);
    else
        r = build_write(q);
    if (r < 0 && q->err == 0)
        q->err = vdi_err(r, "out of memory");
    if (--q->pending == 0)
        req_done(q);
}

/* ------------------------------------------------------------------ */
/* Submission                                                          */
/* ------------------------------------------------------------------ */

static int check_range(struct vd_chain *c, uint64_t off, uint64_t len)
{
    if (off % VD_SECTOR_SIZE || len % VD_SECTOR_SIZE)
        return vdi_err(-EINVAL, "offset %llu and length %llu must be multiples of 512",
                       (unsigned long long)off, (unsigned long long)len);
    if (off > c->size || len > c->size - off)
        return vdi_err(-ENOSPC, "range %llu+%llu is beyond the end of the disk (%llu)",
                       (unsigned long long)off, (unsigned long long)len,
                       (unsigned long long)c->size);
    return 0;
}

static int submit_req(struct vd_chain *c, enum req_type type, void *buf, uint64_t off,
                  uint64_t len, unsigned flags, vd_io_cb cb, void *opaque)
{
    int r;
    if (!cb)
        return vdi_err(-EINVAL, "no completion callback");
    if (type != R_FLUSH) {
        if ((r = check_range(c, off, len)) < 0)
            return r;
        if (type != R_READ && !c->rdwr)
            return vdi_err(-EROFS, "the disk is open read-only");
        if (type != R_READ && c->layers[0]->failed)
            return vdi_err(-EIO, "%s: an earlier index write failed; reopen the disk",
                           c->layers[0]->path);
        if ((type == R_READ || type == R_WRITE) && len && !buf)
            return vdi_err(-EINVAL, "no buffer");
    }
    struct vdi_req *q = calloc(1, sizeof(*q));
    if (!q)
        return vdi_err(-ENOMEM, "out of memory");
    q->c = c;
    q->type = type;
    q->flags = flags;
    q->ubuf = buf;
    q->off = off;
    q->len = len;
    q->cb = cb;
    q->opaque = opaque;
    if ((type == R_READ || type == R_WRITE) && len && ((uintptr_t)buf % VD_SECTOR_SIZE)) {
        bool direct = false;
        for (unsigned i = 0; i < c->n; i++)
            direct |= c->layers[i]->direct;
        if (direct) {
            q->bounce = vdi_alloc_aligned(len);
            if (!q->bounce) {
                free(q);
                return vdi_err(-ENOMEM, "out of memory");
            }
            if (type == R_WRITE)
                memcpy(q->bounce, buf, len);
        }
    }
    c->inflight++;
    c->ctx->reqs_inflight++;

    if (type == R_FLUSH) {
        if (c->rdwr)
            vdi_layer_flush(c->ctx, c->layers[0], flush_done, q);
        else
            req_finish(q);
        return 0;
    }
    if (len == 0) {
        req_finish(q);
        return 0;
    }
    if (type == R_READ) {
        req_start(q);
        return 0;
    }
    q->sub_first = off / VD_SUBBLOCK_SIZE;
    q->sub_last = (off + len - 1) / VD_SUBBLOCK_SIZE;
    bool blocked = false;
    for (struct vdi_req *w = c->writes; w && !blocked; w = w->wnext)
        blocked = overlaps(q, w);
    for (struct vdi_req *b = c->blocked_head; b && !blocked; b = b->bnext)
        blocked = overlaps(q, b);
    if (blocked) {
        if (c->blocked_tail)
            c->blocked_tail->bnext = q;
        else
            c->blocked_head = q;
        c->blocked_tail = q;
        return 0;
    }
    q->wnext = c->writes;
    c->writes = q;
    req_start(q);
    return 0;
}

static int submit(struct vd_chain *c, enum req_type type, void *buf, uint64_t off,
                  uint64_t len, unsigned flags, vd_io_cb cb, void *opaque)
{
    int r = submit_req(c, type, buf, off, len, flags, cb, opaque);
    if (r == 0)
        vdi_ctx_kick(c->ctx);
    return r;
}

int vd_aio_read(struct vd_chain *c, void *buf, uint64_t offset, size_t length,
                vd_io_cb cb, void *opaque)
{
    return submit(c, R_READ, buf, offset, length, 0, cb, opaque);
}

int vd_aio_write(struct vd_chain *c, const void *buf, uint64_t offset, size_t length,
                 unsigned flags, vd_io_cb cb, void *opaque)
{
    return submit(c, R_WRITE, (void *)buf, offset, length, flags & VD_IO_FUA, cb, opaque);
}

int vd_aio_flush(struct vd_chain *c, vd_io_cb cb, void *opaque)
{
    return submit(c, R_FLUSH, NULL, 0, 0, 0, cb, opaque);
}

int vd_aio_zero(struct vd_chain *c, uint64_t offset, uint64_t length, unsigned flags,
                vd_io_cb cb, void *opaque)
{
    return submit(c, R_ZERO, NULL, offset, length, flags & VD_IO_FUA, cb, opaque);
}

int vd_aio_discard(struct vd_chain *c, uint64_t offset, uint64_t length, vd_io_cb cb,
                   void *opaque)
{
    return submit(c, R_DISCARD, NULL, offset, length, 0, cb, opaque);
}

/* ------------------------------------------------------------------ */
/* Synchronous wrappers                                                */
/* ------------------------------------------------------------------ */

struct sync_wait {
    bool done;
    int res;
};

static void sync_cb(void *opaque, int res)
{
    struct sync_wait *w = opaque;
    w->done = true;
    w->res = res;
}

static int sync_wait(struct vd_chain *c, struct sync_wait *w, int r)
{
    if (r < 0)
        return r;
    while (!w->done) {
        r = vd_ctx_poll(c->ctx, -1);
        if (r < 0)
            return r;
    }
    return w->res;
}

int vd_read(struct vd_chain *c, void *buf, uint64_t offset, size_t length)
{
    struct sync_wait w = { 0 };
    return sync_wait(c, &w, vd_aio_read(c, buf, offset, length, sync_cb, &w));
}

int vd_write(struct vd_chain *c, const void *buf, uint64_t offset, size_t length,
             unsigned flags)
{
    struct sync_wait w = { 0 };
    return sync_wait(c, &w, vd_aio_write(c, buf, offset, length, flags, sync_cb, &w));
}

int vd_flush(struct vd_chain *c)
{
    struct sync_wait w = { 0 };
    return sync_wait(c, &w, vd_aio_flush(c, sync_cb, &w));
}

int vd_zero(struct vd_chain *c, uint64_t offset, uint64_t length, unsigned flags)
{
    struct sync_wait w = { 0 };
    return sync_wait(c, &w, vd_aio_zero(c, offset, length, flags, sync_cb, &w));
}

int vd_discard(struct vd_chain *c, uint64_t offset, uint64_t length)
{
    struct sync_wait w = { 0 };
    return sync_wait(c, &w, vd_aio_discard(c, offset, length, sync_cb, &w));
}
