/*
 * bcache.c - the block cache of frozen layers.
 *
 * Linked clones of one template read the same template blocks; in a boot
 * storm they read them at the same moment.  A layer cache (vd_layer_cache)
 * may carry a block cache: reads from its frozen layers go through it, in
 * chunks of BC_CHUNK bytes of the layer file (frozen files never change, so
 * a chunk read once is good for every chain).  A chunk being loaded has
 * waiters instead of a second disk read: the readers of a storm wait for
 * the first one.  Chains on different I/O contexts (threads) share the
 * cache: it is locked, a loaded chunk is copied to each waiter by the
 * thread that loaded it, and a waiter of another context is completed on
 * its own context (vdi_ctx_post).  Least recently used chunks go first when
 * the cache is full; chunks being loaded or copied are never evicted.
 */
#include <pthread.h>

#include "vd-internal.h"

#define BC_CHUNK_SHIFT 16
#define BC_CHUNK (1u << BC_CHUNK_SHIFT)

enum { BC_LOADING, BC_READY };

struct bc_wait {
    struct vdi_defer d;           /* completion on the waiter's context */
    struct vd_ctx *ctx;
    uint8_t *dst;
    uint32_t coff, len;
    int err;
    void (*done)(void *opaque, int err);
    void *opaque;
    struct bc_wait *next;
};

struct bc_ent {
    uint64_t lid, chunk;
    struct bc_ent *hnext;
    struct bc_ent *lprev, *lnext; /* LRU, READY entries only */
    int state;
    unsigned refs;                /* copies in progress */
    uint8_t *data;
    struct bc_wait *waiters;
    struct vdi_op op;
    struct vdi_bcache *bc;
};

struct vdi_bcache {
    pthread_mutex_t lock;
    uint64_t cap, used;
    struct bc_ent **tab;
    uint64_t tabsz;
    struct bc_ent lru;            /* sentinel: lnext most recent */
    uint64_t hits, loads, waits, hit_bytes;
};

static uint64_t hkey(uint64_t lid, uint64_t chunk, uint64_t sz)
{
    uint64_t x = lid * 0x9e3779b97f4a7c15ull ^ chunk;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return x & (sz - 1);
}

int vdi_bcache_new(uint64_t bytes, struct vdi_bcache **out)
{
    struct vdi_bcache *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return vdi_err(-ENOMEM, "out of memory");
    bc->cap = bytes;
    bc->tabsz = 1024;
    while (bc->tabsz < (bytes >> BC_CHUNK_SHIFT) * 2 && bc->tabsz < (1u << 24))
        bc->tabsz <<= 1;
    bc->tab = calloc(bc->tabsz, sizeof(*bc->tab));
    if (!bc->tab) {
        free(bc);
        return vdi_err(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&bc->lock, NULL);
    bc->lru.lnext = bc->lru.lprev = &bc->lru;
    *out = bc;
    return 0;
}

static void unhash(struct vdi_bcache *bc, struct bc_ent *e)
{
    struct bc_ent **pp = &bc->tab[hkey(e->lid, e->chunk, bc->tabsz)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

static void lru_del(struct bc_ent *e)
{
    if (!e->lnext)
        return;
    e->lprev->lnext = e->lnext;
    e->lnext->lprev = e->lprev;
    e->lnext = e->lprev = NULL;
}

static void lru_front(struct vdi_bcache *bc, struct bc_ent *e)
{
    lru_del(e);
    e->lnext = bc->lru.lnext;
    e->lprev = &bc->lru;
    bc->lru.lnext->lprev = e;
    bc->lru.lnext = e;
}

static void ent_free(struct vdi_bcache *bc, struct bc_ent *e)
{
    bc->used -= BC_CHUNK;
    free(e->data);
    free(e);
}

/* Makes room for one more chunk (lock held). */
static void evict(struct vdi_bcache *bc)
{
    struct bc_ent *e = bc->lru.lprev;
    while (bc->used + BC_CHUNK > bc->cap && e != &bc->lru) {
        struct bc_ent *prev = e->lprev;
        if (!e->refs) {
            lru_del(e);
            unhash(bc, e);
            ent_free(bc, e);
        }
        e = prev;
    }
}

void vdi_bcache_free(struct vdi_bcache *bc)
{
    if (!bc)
        return;
    for (uint64_t i = 0; i < bc->tabsz; i++) {
        for (struct bc_ent *e = bc->tab[i], *n; e; e = n) {
            n = e->hnext;
            ent_free(bc, e);
        }
    }
    free(bc->tab);
    pthread_mutex_destroy(&bc->lock);
    free(bc);
}

static void wait_done(struct vdi_defer *d)
{
    struct bc_wait *w = (struct bc_wait *)d;
    void (*done)(void *, int) = w->done;
    void *opaque = w->opaque;
    int err = w->err;
    __atomic_sub_fetch(&w->ctx->remote_expected, 1, __ATOMIC_RELAXED);
    free(w);
    done(opaque, err);
}

static void load_done(struct vdi_op *op, int res)
{
    struct bc_ent *e = (struct bc_ent *)((char *)op - offsetof(struct bc_ent, op));
    struct vdi_bcache *bc = e->bc;
    pthread_mutex_lock(&bc->lock);
    struct bc_wait *w = e->waiters;
    e->waiters = NULL;
    if (res < 0) {
        unhash(bc, e);          /* the next reader tries again */
    } else {
        e->state = BC_READY;
        e->refs++;
        lru_front(bc, e);
    }
    pthread_mutex_unlock(&bc->lock);
    while (w) {
        struct bc_wait *next = w->next;
        w->err = res < 0 ? vdi_err(res, "reading a template block: %s", strerror(-res)) : 0;
        if (res >= 0)
            memcpy(w->dst, e->data + w->coff, w->len);
        if (w->ctx == op->ctx) {
            __atomic_sub_fetch(&w->ctx->remote_expected, 1, __ATOMIC_RELAXED);
            void (*done)(void *, int) = w->done;
            void *opaque = w->opaque;
            int err = w->err;
            free(w);
            done(opaque, err);
        } else {
            w->d.fn = wait_done;
            vdi_ctx_post(w->ctx, &w->d);
        }
        w = next;
    }
    if (res < 0) {
        pthread_mutex_lock(&bc->lock);
        ent_free(bc, e);
        pthread_mutex_unlock(&bc->lock);
    } else {
        pthread_mutex_lock(&bc->lock);
        e->refs--;
        pthread_mutex_unlock(&bc->lock);
    }
}

int vdi_bcache_read(struct vdi_bcache *bc, struct vd_ctx *ctx, uint64_t lid, int fd,
                    uint8_t *dst, uint64_t off, uint32_t len,
                    void (*done)(void *opaque, int err), void *opaque, uint64_t *phys)
{
    uint64_t chunk = off >> BC_CHUNK_SHIFT;
    uint32_t coff = (uint32_t)(off & (BC_CHUNK - 1));
    if (coff + len > BC_CHUNK)
        return vdi_err(-EINVAL, "block cache: read across a chunk");
    pthread_mutex_lock(&bc->lock);
    struct bc_ent *e = bc->tab[hkey(lid, chunk, bc->tabsz)];
    while (e && (e->lid != lid || e->chunk != chunk))
        e = e->hnext;
    if (e && e->state == BC_READY) {
        bc->hits++;
        bc->hit_bytes += len;
        e->refs++;
        lru_front(bc, e);
        pthread_mutex_unlock(&bc->lock);
        memcpy(dst, e->data + coff, len);
        pthread_mutex_lock(&bc->lock);
        e->refs--;
        pthread_mutex_unlock(&bc->lock);
        return 0;
    }
    struct bc_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        pthread_mutex_unlock(&bc->lock);
        return vdi_err(-ENOMEM, "out of memory");
    }
    *w = (struct bc_wait){ .ctx = ctx, .dst = dst, .coff = coff, .len = len, .done = done,
                           .opaque = opaque };
    __atomic_add_fetch(&ctx->remote_expected, 1, __ATOMIC_RELAXED);
    if (e) {
        /* Being loaded: wait for it rather than read it again. */
        bc->waits++;
        w->next = e->waiters;
        e->waiters = w;
        pthread_mutex_unlock(&bc->lock);
        return 1;
    }
    evict(bc);
    e = calloc(1, sizeof(*e));
    uint8_t *data = e ? vdi_alloc_aligned(BC_CHUNK) : NULL;
    if (!data) {
        free(e);
        free(w);
        __atomic_sub_fetch(&ctx->remote_expected, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&bc->lock);
        return vdi_err(-ENOMEM, "out of memory");
    }
    e->lid = lid;
    e->chunk = chunk;
    e->data = data;
    e->bc = bc;
    e->state = BC_LOADING;
    e->waiters = w;
    uint64_t h = hkey(lid, chunk, bc->tabsz);
    e->hnext = bc->tab[h];
    bc->tab[h] = e;
    bc->used += BC_CHUNK;
    bc->loads++;
    pthread_mutex_unlock(&bc->lock);
    *phys += BC_CHUNK;
    e->op.kind = VDI_OP_READ;
    e->op.fd = fd;
    e->op.buf = data;
    e->op.len = BC_CHUNK;
    e->op.off = chunk << BC_CHUNK_SHIFT;
    e->op.done = load_done;
    vdi_op_submit(ctx, &e->op);
    return 1;
}

void vdi_bcache_stats(struct vdi_bcache *bc, struct vd_layer_cache_stats *s)
{
    pthread_mutex_lock(&bc->lock);
    s->block_cache_size = bc->cap;
    s->block_cache_used = bc->used;
    s->block_cache_hits = bc->hits;
    s->block_cache_hit_bytes = bc->hit_bytes;
    s->block_cache_loads = bc->loads;
    s->block_cache_waits = bc->waits;
    pthread_mutex_unlock(&bc->lock);
}
