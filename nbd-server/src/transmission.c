/*
 * transmission.c - the transmission phase (proto.md "Transmission"):
 * request headers are checked here (flags, bounds, limits, what the export
 * offers), then handed to the backend; replies are queued when the backend
 * completes them, in whatever order it does.  Structured replies: READ
 * answers with OFFSET_DATA chunks and OFFSET_HOLE chunks for the ranges
 * base:allocation reports as zero (unless DF), BLOCK_STATUS with one
 * BLOCK_STATUS chunk per selected context, errors with an ERROR chunk
 * carrying a message.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define READ_EXTENTS 64u   /* extents asked for to find holes in a READ */

uint16_t nbds_tx_flags(const struct nbds_conn *c)
{
    const struct nbds_export_info *i = &c->info;
    const struct nbds_backend *b = c->cfg->backend;
    uint16_t f = NBD_FLAG_HAS_FLAGS;
    if (i->read_only)
        f |= NBD_FLAG_READ_ONLY;
    if (i->can_flush && b->flush)
        f |= NBD_FLAG_SEND_FLUSH;
    if (i->can_fua && !i->read_only)
        f |= NBD_FLAG_SEND_FUA;
    if (i->can_trim && b->trim && !i->read_only)
        f |= NBD_FLAG_SEND_TRIM;
    /* FAST_ZERO is offered with every WRITE_ZEROES: a backend that cannot
     * zero fast answers ENOTSUP, which is what the flag asks for. */
    if (i->can_zero && b->zero && !i->read_only)
        f |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    if (i->can_multi_conn)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    if (i->can_cache && b->cache)
        f |= NBD_FLAG_SEND_CACHE;
    return f;
}

static uint32_t nbd_errno(int err)
{
    switch (-err) {
    case EPERM: case EROFS: return NBD_EPERM;
    case EIO: return NBD_EIO;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

static void reply_simple(struct nbds_conn *c, uint64_t cookie, uint32_t error)
{
    struct nbds_oent *e = nbds_oent_new(NBD_SIMPLE_REPLY_SIZE);
    if (!e) {
        nbds_conn_fail(c, -ENOMEM);
        return;
    }
    put32(e->hdr, NBD_SIMPLE_REPLY_MAGIC);
    put32(e->hdr + 4, error);
    put64(e->hdr + 8, cookie);
    nbds_outq_push(c, e);
}

/* A structured chunk header at e->hdr. */
static void chunk_hdr(struct nbds_oent *e, uint16_t flags, uint16_t type, uint64_t cookie,
                      uint32_t len)
{
    put32(e->hdr, NBD_STRUCTURED_REPLY_MAGIC);
    put16(e->hdr + 4, flags);
    put16(e->hdr + 6, type);
    put64(e->hdr + 8, cookie);
    put32(e->hdr + 16, len);
}

static void reply_error(struct nbds_conn *c, const struct nbds_req *r, int err)
{
    uint32_t nerr = nbd_errno(err);
    char sbuf[128];
    const char *msg = r->msg;
    if (!msg)
        msg = strerror_r(-err, sbuf, sizeof(sbuf));
    nbds_debug(c, "request type %u off %llu len %u: error %u (%s)", r->type,
               (unsigned long long)r->off, r->len, nerr, msg);
    if (!c->structured) {
        reply_simple(c, r->cookie, nerr);
        return;
    }
    size_t mlen = strlen(msg);
    if (mlen > 1024)
        mlen = 1024;
    struct nbds_oent *e = nbds_oent_new(NBD_STRUCTURED_SIZE + 6 + mlen);
    if (!e) {
        nbds_conn_fail(c, -ENOMEM);
        return;
    }
    chunk_hdr(e, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, r->cookie, (uint32_t)(6 + mlen));
    put32(e->hdr + 20, nerr);
    put16(e->hdr + 24, (uint16_t)mlen);
    memcpy(e->hdr + 26, msg, mlen);
    nbds_outq_push(c, e);
}

struct seg {
    uint64_t off;
    uint32_t len;
    bool hole;
};

/* Replies to a READ that succeeded; takes r->buf. */
static void reply_read(struct nbds_conn *c, struct nbds_req *r)
{
    void *buf = r->buf;
    r->buf = NULL;
    if (!c->structured) {
        struct nbds_oent *e = nbds_oent_new(NBD_SIMPLE_REPLY_SIZE);
        if (!e) {
            nbds_buf_put(c->srv, buf, r->len);
            nbds_conn_fail(c, -ENOMEM);
            return;
        }
        put32(e->hdr, NBD_SIMPLE_REPLY_MAGIC);
        put32(e->hdr + 4, 0);
        put64(e->hdr + 8, r->cookie);
        e->data = buf;
        e->dlen = r->len;
        e->payload = buf;
        e->payload_len = r->len;
        nbds_outq_push(c, e);
        return;
    }

    /* Split into data and holes: zero extents of base:allocation become
     * OFFSET_HOLE chunks unless the client asked for one chunk (DF). */
    struct seg segs[READ_EXTENTS + 1];
    size_t nseg = 0;
    uint64_t pos = r->off, end = r->off + r->len;
    if (!(r->flags & NBD_CMD_FLAG_DF) && c->info.contexts[NBDS_CTX_BASE_ALLOCATION] &&
        c->cfg->backend->block_status) {
        struct nbds_extent ext[READ_EXTENTS];
        int n = c->cfg->backend->block_status(c->export, NBDS_CTX_BASE_ALLOCATION, r->off,
                                              r->len, ext, READ_EXTENTS);
        for (int i = 0; i < n && i < (int)READ_EXTENTS && pos < end; i++) {
            if (ext[i].length == 0)
                break;
            uint32_t l = ext[i].length > end - pos ? (uint32_t)(end - pos)
                                                   : (uint32_t)ext[i].length;
            bool hole = ext[i].flags & NBDS_STATE_ZERO;
            if (nseg && segs[nseg - 1].hole == hole)
                segs[nseg - 1].len += l;
            else
                segs[nseg++] = (struct seg){ pos, l, hole };
            pos += l;
        }
    }
    if (pos < end) {
        if (nseg && !segs[nseg - 1].hole)
            segs[nseg - 1].len += (uint32_t)(end - pos);
        else
            segs[nseg++] = (struct seg){ pos, (uint32_t)(end - pos), false };
    }
    for (size_t i = 0; i < nseg; i++) {
        bool last = i + 1 == nseg;
        struct nbds_oent *e = nbds_oent_new(NBD_STRUCTURED_SIZE + (segs[i].hole ? 12 : 8));
        if (!e) {
            nbds_buf_put(c->srv, buf, r->len);
            nbds_conn_fail(c, -ENOMEM);
            return;
        }
        uint16_t fl = last ? NBD_REPLY_FLAG_DONE : 0;
        if (segs[i].hole) {
            chunk_hdr(e, fl, NBD_REPLY_TYPE_OFFSET_HOLE, r->cookie, 12);
            put64(e->hdr + 20, segs[i].off);
            put32(e->hdr + 28, segs[i].len);
        } else {
            chunk_hdr(e, fl, NBD_REPLY_TYPE_OFFSET_DATA, r->cookie, 8 + segs[i].len);
            put64(e->hdr + 20, segs[i].off);
            e->data = (uint8_t *)buf + (segs[i].off - r->off);
            e->dlen = segs[i].len;
        }
        /* Entries go out in order: the last one frees the buffer. */
        if (last) {
            e->payload = buf;
            e->payload_len = r->len;
        }
        nbds_outq_push(c, e);
    }
}

/* BLOCK_STATUS: synchronous in the backend; one chunk per context, all
 * built before any is queued so that an error leaves no partial reply. */
static void do_block_status(struct nbds_conn *c, struct nbds_req *r)
{
    struct nbds_extent *ext = malloc(NBDS_MAX_EXTENTS * sizeof(*ext));
    struct nbds_oent *chunks[NBDS_CTX_COUNT] = { NULL };
    size_t nchunks = 0;
    int err = 0;
    if (!ext) {
        err = -ENOMEM;
        goto out;
    }
    size_t max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBDS_MAX_EXTENTS;
    for (int k = 0; k < NBDS_CTX_COUNT; k++) {
        if (!c->meta_selected[k])
            continue;
        int n = c->cfg->backend->block_status(c->export, (enum nbds_meta_context)k, r->off,
                                              r->len, ext, max);
        if (n < 0) {
            err = n;
            goto out;
        }
        if (n == 0 || (size_t)n > max) {
            r->msg = "backend returned a bad extent list";
            err = -EIO;
            goto out;
        }
        /* Extents never reach past the request (proto.md). */
        uint64_t left = r->len;
        int used = 0;
        for (; used < n && left > 0; used++) {
            if (ext[used].length == 0) {
                r->msg = "backend returned an empty extent";
                err = -EIO;
                goto out;
            }
            if (ext[used].length > left)
                ext[used].length = left;
            left -= ext[used].length;
        }
        struct nbds_oent *e = nbds_oent_new(NBD_STRUCTURED_SIZE + 4 + 8 * (size_t)used);
        if (!e) {
            err = -ENOMEM;
            goto out;
        }
        chunk_hdr(e, 0, NBD_REPLY_TYPE_BLOCK_STATUS, r->cookie, 4 + 8 * (uint32_t)used);
        put32(e->hdr + 20, (uint32_t)k + 1);
        for (int i = 0; i < used; i++) {
            put32(e->hdr + 24 + 8 * i, (uint32_t)ext[i].length);
            put32(e->hdr + 28 + 8 * i, ext[i].flags);
        }
        chunks[nchunks++] = e;
    }
    put16(chunks[nchunks - 1]->hdr + 4, NBD_REPLY_FLAG_DONE);
    for (size_t i = 0; i < nchunks; i++)
        nbds_outq_push(c, chunks[i]);
    nchunks = 0;
out:
    for (size_t i = 0; i < nchunks; i++)
        free(chunks[i]);
    free(ext);
    if (err)
        reply_error(c, r, err);
}

/* Checks a request against the protocol and the export; returns 0 or the
 * negative errno to answer with (r->msg says why). */
static int check_request(struct nbds_conn *c, struct nbds_req *r)
{
    uint16_t tf = c->tflags;
    bool ro = tf & NBD_FLAG_READ_ONLY;
    uint32_t allowed = (tf & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;
    int range_err = -EINVAL;
    bool ranged = true;

    switch (r->type) {
    case NBD_CMD_READ:
        if (c->structured)
            allowed |= NBD_CMD_FLAG_DF;
        break;
    case NBD_CMD_WRITE:
        range_err = -ENOSPC;
        break;
    case NBD_CMD_WRITE_ZEROES:
        range_err = -ENOSPC;
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        if (tf & NBD_FLAG_SEND_FAST_ZERO)
            allowed |= NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    case NBD_CMD_FLUSH:
        ranged = false;
        break;
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
        break;
    default:
        r->msg = "unknown command";
        return -EINVAL;
    }
    if (r->flags & ~allowed) {
        r->msg = "unsupported command flags";
        return -EINVAL;
    }
    bool writes = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
                  r->type == NBD_CMD_WRITE_ZEROES;
    if (writes && ro) {
        r->msg = "export is read-only";
        return -EPERM;
    }
    if ((r->type == NBD_CMD_FLUSH && !(tf & NBD_FLAG_SEND_FLUSH)) ||
        (r->type == NBD_CMD_TRIM && !(tf & NBD_FLAG_SEND_TRIM)) ||
        (r->type == NBD_CMD_WRITE_ZEROES && !(tf & NBD_FLAG_SEND_WRITE_ZEROES)) ||
        (r->type == NBD_CMD_CACHE && !(tf & NBD_FLAG_SEND_CACHE))) {
        r->msg = "command not supported by this export";
        return -EINVAL;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS) {
        bool any = false;
        for (int k = 0; k < NBDS_CTX_COUNT; k++)
            any |= c->meta_selected[k];
        if (!c->structured || !any) {
            r->msg = "no metadata context negotiated";
            return -EINVAL;
        }
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->len > c->max_payload) {
        r->msg = "request larger than the maximum payload";
        return -EINVAL;
    }
    if (ranged) {
        if (r->len == 0) {
            r->msg = "zero-length request";
            return -EINVAL;
        }
        /* Written so that off + len cannot overflow. */
        if (r->off > c->info.size || r->len > c->info.size - r->off) {
            r->msg = "request beyond the end of the export";
            return range_err;
        }
    }
    if (r->type == NBD_CMD_WRITE_ZEROES && (r->flags & NBD_CMD_FLAG_FAST_ZERO) &&
        !c->info.can_fast_zero) {
        r->msg = "fast zeroing not supported";
        return -ENOTSUP;
    }
    return 0;
}

/* The payload budget (nbds_config.payload_budget).  A request that does
 * not get its memory waits as c->cur in the IN_REQ_HDR state, where cur
 * is otherwise NULL (so nbds_conn_free frees it), and c->max_inflight at
 * 0 keeps the parser (server.c) from reading past it: the client is
 * slowed by TCP's flow control, never failed, and other connections go
 * on.  nbds_conn_payload_retry lifts both. */
static bool payload_reserve(struct nbds_conn *c, struct nbds_req *r)
{
    const struct nbds_payload_budget *b = c->cfg->payload_budget;
    if (!b || b->take(c->cfg->opaque, c, r->len))
        return true;
    nbds_debug(c, "request type %u len %u waits for payload memory", r->type, r->len);
    c->cur = r;
    c->max_inflight = 0;
    return false;
}

/* Gives back what payload_reserve took when no buffer came of it (a
 * buffer gives its bytes back itself when freed: bufpool.c). */
static void payload_unreserve(struct nbds_conn *c, uint32_t len)
{
    const struct nbds_payload_budget *b = c->cfg->payload_budget;
    if (b)
        b->give(c->cfg->opaque, len);
}

/* Starts receiving a WRITE's payload: into a buffer, or discarded when the
 * request is refused (err), so that the stream stays in step. */
static void write_begin(struct nbds_conn *c, struct nbds_req *r, int err)
{
    if (!err) {
        r->buf = nbds_buf_get(c->srv, r->len);
        if (!r->buf) {
            payload_unreserve(c, r->len);
            err = -ENOMEM;
        }
    }
    r->refuse = err;
    c->cur = r;
    c->sink = r->buf;
    c->sink_len = r->len;
    c->sink_got = 0;
    c->state = IN_REQ_PAYLOAD;
    if (r->len == 0)
        nbds_tx_payload_done(c);
}

/* Runs a checked request; a READ's payload memory is reserved already. */
static void dispatch(struct nbds_conn *c, struct nbds_req *r)
{
    const struct nbds_backend *b = c->cfg->backend;
    unsigned fl = 0;
    if (r->flags & NBD_CMD_FLAG_FUA)
        fl |= NBDS_FLAG_FUA;
    if (r->flags & NBD_CMD_FLAG_NO_HOLE)
        fl |= NBDS_FLAG_NO_HOLE;
    if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
        fl |= NBDS_FLAG_FAST_ZERO;

    if (r->type == NBD_CMD_BLOCK_STATUS) {
        do_block_status(c, r);
        free(r);
        return;
    }
    if (r->type == NBD_CMD_READ) {
        r->buf = nbds_buf_get(c->srv, r->len);
        if (!r->buf) {
            payload_unreserve(c, r->len);
            reply_error(c, r, -ENOMEM);
            free(r);
            return;
        }
    }
    c->inflight++;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r->start_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    switch (r->type) {
    case NBD_CMD_READ: b->read(c->export, r, r->buf, r->off, r->len); break;
    case NBD_CMD_WRITE: b->write(c->export, r, r->buf, r->off, r->len, fl); break;
    case NBD_CMD_FLUSH: b->flush(c->export, r); break;
    case NBD_CMD_TRIM: b->trim(c->export, r, r->off, r->len, fl); break;
    case NBD_CMD_WRITE_ZEROES: b->zero(c->export, r, r->off, r->len, fl); break;
    case NBD_CMD_CACHE: b->cache(c->export, r, r->off, r->len); break;
    }
}

void nbds_tx_request(struct nbds_conn *c, const uint8_t *hdr)
{
    if (get32(hdr) != NBD_REQUEST_MAGIC) {
        nbds_debug(c, "bad request magic");
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    struct nbds_req *r = calloc(1, sizeof(*r));
    if (!r) {
        nbds_conn_fail(c, -ENOMEM);
        return;
    }
    r->conn = c;
    r->flags = get16(hdr + 4);
    r->type = get16(hdr + 6);
    r->cookie = get64(hdr + 8);
    r->off = get64(hdr + 16);
    r->len = get32(hdr + 24);

    if (r->type == NBD_CMD_DISC) {
        /* Soft disconnect: requests in flight finish, then we close. */
        nbds_debug(c, "NBD_CMD_DISC");
        free(r);
        nbds_conn_end(c, 0);
        return;
    }
    int err = check_request(c, r);
    if (r->type == NBD_CMD_WRITE) {
        /* The payload is always read, also when the request is refused
         * (then discarded). */
        if (!err && !payload_reserve(c, r))
            return;
        write_begin(c, r, err);
        return;
    }
    if (err) {
        reply_error(c, r, err);
        free(r);
        return;
    }
    if (r->type == NBD_CMD_READ && !payload_reserve(c, r))
        return;
    dispatch(c, r);
}

bool nbds_conn_payload_retry(struct nbds_conn *c)
{
    struct nbds_req *r = c->cur;
    if (!r || c->state != IN_REQ_HDR || c->closing)
        return true;
    if (!c->cfg->payload_budget->take(c->cfg->opaque, c, r->len))
        return false;
    nbds_debug(c, "request type %u len %u got its payload memory", r->type, r->len);
    c->cur = NULL;
    c->max_inflight = c->cfg->max_inflight;
    if (r->type == NBD_CMD_WRITE)
        write_begin(c, r, 0);
    else
        dispatch(c, r);
    return true;
}

void nbds_tx_payload_done(struct nbds_conn *c)
{
    struct nbds_req *r = c->cur;
    c->cur = NULL;
    c->sink = NULL;
    c->state = IN_REQ_HDR;
    if (r->refuse) {
        reply_error(c, r, r->refuse);
        nbds_buf_put(c->srv, r->buf, r->len);
        free(r);
        return;
    }
    dispatch(c, r);
}

void nbds_req_get_info(const struct nbds_req *r, struct nbds_req_info *out)
{
    out->type = r->type;
    out->len = r->len;
    out->start_ns = r->start_ns;
}

void *nbds_req_export(const struct nbds_req *r)
{
    return r->conn->export;
}

void nbds_req_done(struct nbds_req *r, int err)
{
    struct nbds_conn *c = r->conn;
    if (!c->dead) {
        if (err)
            reply_error(c, r, err);
        else if (r->type == NBD_CMD_READ)
            reply_read(c, r);
        else
            reply_simple(c, r->cookie, 0);
    }
    nbds_buf_put(c->srv, r->buf, r->len);
    free(r);
    c->inflight--;
    if (!c->in_io && c->cfg->notify)
        c->cfg->notify(c->cfg->opaque, c);
}
