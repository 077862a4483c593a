/*
 * backend.c - the nbd-server backend over libvdisk.
 *
 * Each NBD request becomes one vd_aio_* call whose completion (run by
 * vd_ctx_poll in the event loop) completes the request: the nbds_req is
 * the callback's opaque, so no allocation per request.  Ranges arrive
 * checked against the export size by nbd-server; libvdisk refuses
 * offsets and lengths not aligned to 512 bytes with -EINVAL, which is the
 * answer proto.md allows for requests below the advertised minimum block
 * size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdiskd.h"

/* ---- statistics: every request ends in finish() ---- */

#define ADD(x, n) __atomic_add_fetch(&(x), (n), __ATOMIC_RELAXED)

static void started(struct export *ex)
{
    ADD(ex->st.started, 1);
}

static void finish(struct export *ex, struct nbds_req *r, int result)
{
    struct nbds_req_info ri;
    nbds_req_get_info(r, &ri);
    uint64_t now = vdiskd_now_ns();
    uint64_t us = now > ri.start_ns ? (now - ri.start_ns) / 1000u : 0;
    unsigned k = 0;
    while (k + 1 < STAT_LAT_BUCKETS && (us >> (k + 1)) != 0)
        k++;
    static const int kinds[] = { [0] = ST_READ, [1] = ST_WRITE, [3] = ST_FLUSH, [4] = ST_TRIM,
                                 [5] = ST_CACHE, [6] = ST_ZERO };
    if (ri.type < sizeof(kinds) / sizeof(kinds[0]) && ri.type != 2)
        ADD(ex->st.ops[kinds[ri.type]], 1);
    if (result < 0)
        ADD(ex->st.errors, 1);
    else if (ri.type == 0)
        ADD(ex->st.bytes_read, ri.len);
    else if (ri.type == 1)
        ADD(ex->st.bytes_written, ri.len);
    ADD(ex->st.lat[k], 1);
    ADD(ex->st.completed, 1);
    nbds_req_done(r, result);
}

/* The completion of one vd_aio_* call: the request, and its export. */
static void done_cb(void *opaque, int result)
{
    struct nbds_req *r = opaque;
    finish(nbds_req_export(r), r, result);
}

static int be_list(void *server_opaque, struct nbds_conn *c, struct nbds_list *l)
{
    struct worker *w = server_opaque;
    struct access_peer ap;
    access_peer(c, &ap);
    return exports_list(w->d, &ap.p, l);
}

static int be_open(void *server_opaque, struct nbds_conn *c, const char *name,
                   void **handle, struct nbds_export_info *info)
{
    struct worker *w = server_opaque;
    struct vdiskd *d = w->d;
    struct export *ex;
    int r;

    if (__atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE))
        return -ESHUTDOWN;
    bool ro, pool_query;
    struct access_peer ap;
    access_peer(c, &ap);
    r = export_open_name(d, w, name, &ap.p, nbds_conn_peer(c), nbds_conn_query_open(c), &ex,
                         &ro, &pool_query);
    if (r < 0) {
        vlog(LOG_DEBUG, "%s: export '%s' refused: %s", nbds_conn_peer(c), name, strerror(-r));
        return r;
    }
    memset(info, 0, sizeof(*info));
    info->size = vd_chain_size(ex->chain);
    bool wr = (ex->writable || pool_query) && !ro;
    info->read_only = !wr;
    info->can_flush = true;
    info->can_fua = wr;
    info->can_trim = wr;
    info->can_zero = wr;
    info->can_fast_zero = wr;
    info->can_cache = true;
    /* One chain per export name: a flush on any connection makes the
     * completed writes of every connection durable. */
    info->can_multi_conn = true;
    info->contexts[NBDS_CTX_BASE_ALLOCATION] = true;
    info->contexts[NBDS_CTX_ALLOCATION_DEPTH] = true;
    info->min_block = VD_SECTOR_SIZE;
    info->pref_block = VD_SUBBLOCK_SIZE;
    info->max_block = NBDS_DEFAULT_MAX_PAYLOAD;
    snprintf(info->description, sizeof(info->description), "%s", ex->description);
    vlog(LOG_DEBUG, "%s: export %s (%s)", nbds_conn_peer(c), name,
         wr ? "read-write" : "read-only");
    *handle = ex;
    return 0;
}

static void be_close(void *h)
{
    struct export *ex = h;
    export_put(ex->d, ex);
}

static void be_read(void *h, struct nbds_req *r, void *buf, uint64_t off, uint32_t len)
{
    struct export *ex = h;
    started(ex);
    int e = vd_aio_read(ex->chain, buf, off, len, done_cb, r);
    if (e < 0)
        finish(ex, r, e);
}

static void be_write(void *h, struct nbds_req *r, const void *buf, uint64_t off,
                     uint32_t len, unsigned flags)
{
    struct export *ex = h;
    started(ex);
    int e = vd_aio_write(ex->chain, buf, off, len,
                         (flags & NBDS_FLAG_FUA) ? VD_IO_FUA : 0, done_cb, r);
    if (e < 0)
        finish(ex, r, e);
}

static void be_flush(void *h, struct nbds_req *r)
{
    struct export *ex = h;
    started(ex);
    int e = vd_aio_flush(ex->chain, done_cb, r);
    if (e < 0)
        finish(ex, r, e);
}

/* TRIM with FUA: the discard, then a flush. */
struct trim_fua {
    struct export *ex;
    struct nbds_req *r;
};

static void trim_fua_cb(void *opaque, int result)
{
    struct trim_fua *t = opaque;
    struct nbds_req *r = t->r;
    struct export *ex = t->ex;
    int e = result;
    if (e == 0)
        e = vd_aio_flush(ex->chain, done_cb, r);
    free(t);
    if (e != 0 || result != 0)
        finish(ex, r, e);
}

static void be_trim(void *h, struct nbds_req *r, uint64_t off, uint32_t len, unsigned flags)
{
    struct export *ex = h;
    started(ex);
    int e;
    if (flags & NBDS_FLAG_FUA) {
        struct trim_fua *t = malloc(sizeof(*t));
        if (!t) {
            finish(ex, r, -ENOMEM);
            return;
        }
        t->ex = ex;
        t->r = r;
        e = vd_aio_discard(ex->chain, off, len, trim_fua_cb, t);
        if (e < 0)
            free(t);
    } else {
        e = vd_aio_discard(ex->chain, off, len, done_cb, r);
    }
    if (e < 0)
        finish(ex, r, e);
}

static void be_zero(void *h, struct nbds_req *r, uint64_t off, uint32_t len, unsigned flags)
{
    struct export *ex = h;
    started(ex);
    /* Zeroing whole 4 KiB sub-blocks only changes their state in the index
     * (no data written): that is the fast case.  A partial sub-block needs
     * a read-modify-write, which FAST_ZERO must refuse (proto.md). */
    if ((flags & NBDS_FLAG_FAST_ZERO) && ((off | len) & (VD_SUBBLOCK_SIZE - 1))) {
        finish(ex, r, -ENOTSUP);
        return;
    }
    int e = vd_aio_zero(ex->chain, off, len, (flags & NBDS_FLAG_FUA) ? VD_IO_FUA : 0,
                        done_cb, r);
    if (e < 0)
        finish(ex, r, e);
}

/* NBD_CMD_CACHE is advice (proto.md: the server may do nothing).  Layers
 * are read with O_DIRECT and the shared block cache for templates comes
 * later, so there is nothing to warm yet: succeed at once. */
static void be_cache(void *h, struct nbds_req *r, uint64_t off, uint32_t len)
{
    struct export *ex = h;
    (void)off;
    (void)len;
    started(ex);
    finish(ex, r, 0);
}

static uint32_t extent_flags(enum nbds_meta_context ctx, const struct vd_extent *e)
{
    if (ctx == NBDS_CTX_ALLOCATION_DEPTH)
        return e->type == VD_EXTENT_HOLE ? 0 : e->depth;
    switch (e->type) {
    case VD_EXTENT_HOLE:
        return NBDS_STATE_HOLE | NBDS_STATE_ZERO;
    case VD_EXTENT_ZERO:
        return NBDS_STATE_ZERO;
    default:
        return 0;
    }
}

static int be_block_status(void *h, enum nbds_meta_context ctx, uint64_t off, uint32_t len,
                           struct nbds_extent *out, size_t max)
{
    struct export *ex = h;
    struct vd_extent v[64];
    uint64_t end = off + len;
    size_t n = 0;

    while (off < end && n <= max) {
        int r = vd_block_status(ex->chain, off, end - off, v, 64);
        if (r < 0)
            return n ? (int)n : r;
        for (int i = 0; i < r; i++) {
            uint32_t f = extent_flags(ctx, &v[i]);
            if (n && out[n - 1].flags == f) {
                out[n - 1].length += v[i].length;
            } else {
                if (n == max)
                    return (int)n;
                out[n].length = v[i].length;
                out[n].flags = f;
                n++;
            }
            off += v[i].length;
        }
    }
    return (int)n;
}

const struct nbds_backend vdiskd_backend = {
    .list = be_list,
    .open = be_open,
    .close = be_close,
    .read = be_read,
    .write = be_write,
    .flush = be_flush,
    .trim = be_trim,
    .zero = be_zero,
    .cache = be_cache,
    .block_status = be_block_status,
};
