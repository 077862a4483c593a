/*
 * bufpool.c - payload buffers (READ replies, WRITE payloads), reused.
 *
 * A large buffer fresh from malloc is a new mapping whose every page
 * faults in on first touch, and freeing it unmaps it again: for 1 MiB
 * requests that costs more than the copy through the socket.  So freed
 * buffers go to per-server free lists by size class (powers of two from
 * 4 KiB), up to NBDS_POOL_BYTES in all, and the next request of the class
 * takes one back.  Buffers are page aligned: a backend doing O_DIRECT I/O
 * can use them as they are.  A server is used by one thread, so the lists
 * need no lock.
 */
#include <stdlib.h>

#include "internal.h"

struct pool_buf {
    struct pool_buf *next;
};

/* The class of a buffer of len bytes: 4 KiB << class >= len. */
static unsigned size_class(size_t len)
{
    unsigned k = 0;
    while (((size_t)NBDS_POOL_MIN << k) < len)
        k++;
    return k;
}

void *nbds_buf_get(struct nbds_server *s, size_t len)
{
    unsigned k = size_class(len);
    if (k < NBDS_POOL_CLASSES && s->pool[k]) {
        struct pool_buf *b = s->pool[k];
        s->pool[k] = b->next;
        s->pool_bytes -= (size_t)NBDS_POOL_MIN << k;
        return b;
    }
    void *p = NULL;
    size_t sz = k < NBDS_POOL_CLASSES ? (size_t)NBDS_POOL_MIN << k : len;
    return posix_memalign(&p, 4096, sz) == 0 ? p : NULL;
}

void nbds_buf_put(struct nbds_server *s, void *buf, size_t len)
{
    if (!buf)
        return;
    /* Every payload buffer comes back here, from wherever it is freed
     * (transmission.c, outq.c, server.c), so its budget is given back
     * here too; transmission.c took it before nbds_buf_get. */
    if (s->cfg.payload_budget)
        s->cfg.payload_budget->give(s->cfg.opaque, len);
    unsigned k = size_class(len);
    size_t sz = (size_t)NBDS_POOL_MIN << k;
    if (k >= NBDS_POOL_CLASSES || s->pool_bytes + sz > NBDS_POOL_BYTES) {
        free(buf);
        return;
    }
    struct pool_buf *b = buf;
    b->next = s->pool[k];
    s->pool[k] = b;
    s->pool_bytes += sz;
}

void nbds_pool_free(struct nbds_server *s)
{
    for (unsigned k = 0; k < NBDS_POOL_CLASSES; k++) {
        while (s->pool[k]) {
            struct pool_buf *b = s->pool[k];
            s->pool[k] = b->next;
            free(b);
        }
    }
    s->pool_bytes = 0;
}
