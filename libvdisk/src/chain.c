/*
 * chain.c - an open virtual disk: a stack of layers found through parent
 * UUIDs, the shared cache of frozen layers, snapshots (push), and the
 * in-memory "below map" that answers "which frozen layer owns this
 * sub-block" without walking the chain on every request.
 */
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/file.h>
#include <unistd.h>

#include "vd-internal.h"

#define VDI_MAX_DEPTH 4096

/* ------------------------------------------------------------------ */
/* Layer cache                                                         */
/* ------------------------------------------------------------------ */

int vd_layer_cache_new(struct vd_layer_cache **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : vdi_err(-ENOMEM, "out of memory");
}

int vd_layer_cache_set_block_cache(struct vd_layer_cache *cache, uint64_t bytes)
{
    if (cache->users || cache->head)
        return vdi_err(-EBUSY, "the layer cache is in use");
    vdi_bcache_free(cache->blocks);
    cache->blocks = NULL;
    return bytes ? vdi_bcache_new(bytes, &cache->blocks) : 0;
}

void vd_layer_cache_stats(struct vd_layer_cache *cache, struct vd_layer_cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->frozen_read_bytes = __atomic_load_n(&cache->frozen_read_bytes, __ATOMIC_RELAXED);
    if (cache->blocks)
        vdi_bcache_stats(cache->blocks, st);
}

int vd_layer_cache_free(struct vd_layer_cache *cache)
{
    if (!cache)
        return 0;
    if (cache->users || cache->head)
        return vdi_err(-EBUSY, "layer cache still in use by %u chain(s)", cache->users);
    vdi_bcache_free(cache->blocks);
    free(cache);
    return 0;
}

static struct vdi_layer *cache_find(struct vd_layer_cache *cache, const vd_uuid *u)
{
    for (struct vdi_layer *l = cache ? cache->head : NULL; l; l = l->cache_next)
        if (memcmp(l->uuid.b, u->b, 16) == 0)
            return l;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Resolving parents                                                   */
/* ------------------------------------------------------------------ */

static int default_resolve(void *opaque VDI_UNUSED, const vd_uuid *parent VDI_UNUSED,
                           const char *hint, const char *child_path, char *out,
                           size_t outlen)
{
    if (!hint[0])
        return -ENOENT;
    int n;
    if (hint[0] == '/') {
        n = snprintf(out, outlen, "%s", hint);
    } else {
        char *copy = strdup(child_path);
        if (!copy)
            return -ENOMEM;
        n = snprintf(out, outlen, "%s/%s", dirname(copy), hint);
        free(copy);
    }
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* The file named by the hint, or else a file of the hint's base name next
 * to the child (a chain moved to another directory as a whole). */
static int open_parent(struct vd_chain *c, const struct vd_open_opts *o,
                       struct vdi_layer *child, struct vdi_layer **out)
{
    char path[PATH_MAX];
    char ustr[37];
    vd_uuid_format(&child->parent_uuid, ustr);
    vd_resolve_fn fn = o && o->resolve ? o->resolve : default_resolve;
    void *opq = o ? o->resolve_opaque : NULL;
    int r = fn(opq, &child->parent_uuid, child->hint, child->path, path, sizeof(path));
    struct vdi_layer *l = NULL;
    if (r == 0)
        r = vdi_layer_open(path, false, c->buffered, &l);
    if (r == 0 && memcmp(l->uuid.b, child->parent_uuid.b, 16) != 0) {
        vdi_layer_put(l);
        l = NULL;
        r = vdi_err(-ENOENT, "%s: is not the parent of %s (UUID differs from %s)",
                    path, child->path, ustr);
    }
    if (r < 0 && fn == default_resolve && child->hint[0] == '/') {
        char *h = strdup(child->hint);
        if (!h)
            return vdi_err(-ENOMEM, "out of memory");
        int r2 = default_resolve(NULL, NULL, basename(h), child->path, path, sizeof(path));
        free(h);
        if (r2 == 0 && vdi_layer_open(path, false, c->buffered, &l) == 0) {
            if (memcmp(l->uuid.b, child->parent_uuid.b, 16) == 0)
                r = 0;
            else {
                vdi_layer_put(l);
                l = NULL;
            }
        }
    }
    if (r < 0) {
        if (r == -ENOENT || r == -ENAMETOOLONG || !vd_errmsg()[0]) {
            char detail[300];
            snprintf(detail, sizeof(detail), "%s", vd_errmsg());
            vdi_err(r, "%s: parent layer %s (hint '%s') not found%s%s", child->path, ustr,
                    child->hint, detail[0] ? ": " : "", detail);
        }
        return r;
    }
    r = vdi_layer_load(l, NULL);
    if (r < 0) {
        vdi_layer_put(l);
        return r;
    }
    *out = l;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */
/* ------------------------------------------------------------------ */

static void chain_free(struct vd_chain *c)
{
    for (unsigned i = 0; i < c->n; i++)
        vdi_layer_put(c->layers[i]);
    if (c->pinned)
        vdi_layer_put(c->pinned);
    if (c->pinned_fd >= 0)
        close(c->pinned_fd);
    free(c->layers);
    vdi_below_reset(c);
    free(c->bm);
    if (c->cache)
        c->cache->users--;
    free(c);
}

/* A digest layer closed uncleanly may hold blocks rewritten in place whose
 * digest did not reach the disk.  Before its dirty flag can be cleared,
 * every digest is recomputed: the first flush re-hashes the whole layer. */
static void stale_all(struct vdi_layer *l)
{
    for (uint64_t pg = 0; pg < l->n_l2; pg++) {
        struct vdi_l2 *p = vdi_l2_get(l, pg);
        if (!p)
            continue;
        bool any = false;
        for (uint64_t i = 0; i < l->epp; i++) {
            if (vdf_le64(vdi_entry(l, p, i) + VDF_E_OFFSET)) {
                p->stale[i / 8] |= (uint8_t)(1u << (i % 8));
                any = true;
            }
        }
        if (any)
            vdi_l2_mark_dirty(l, p);
    }
}

int vd_chain_open(struct vd_ctx *ctx, const char *path,
                  const struct vd_open_opts *opts, struct vd_chain **out)
{
    unsigned flags = opts ? opts->flags : 0;
    struct vd_chain *c = calloc(1, sizeof(*c));
    unsigned cap = 8;
    int r;
    vdi_clear_err();
    if (!c || !(c->layers = calloc(cap, sizeof(*c->layers)))) {
        free(c);
        return vdi_err(-ENOMEM, "out of memory");
    }
    c->pinned_fd = -1;
    c->ctx = ctx;
    c->rdwr = flags & VD_OPEN_RDWR;
    c->buffered = flags & VD_OPEN_BUFFERED;
    c->cache = opts ? opts->cache : NULL;
    if (c->cache)
        c->cache->users++;

    struct vdi_layer *top;
    r = vdi_layer_open(path, c->rdwr, c->buffered, &top);
    if (r < 0)
        goto fail;
    c->layers[c->n++] = top;
    r = vdi_layer_load(top, NULL);
    if (r < 0)
        goto fail;

    struct vdi_layer *cur = top;
    while (!vd_uuid_is_null(&cur->parent_uuid)) {
        if (c->n >= VDI_MAX_DEPTH) {
            r = vdi_err(-ELOOP, "%s: chain deeper than %d layers", path, VDI_MAX_DEPTH);
            goto fail;
        }
        for (unsigned i = 0; i < c->n; i++) {
            if (memcmp(c->layers[i]->uuid.b, cur->parent_uuid.b, 16) == 0) {
                r = vdi_err(-ELOOP, "%s: the chain of parents loops", path);
                goto fail;
            }
        }
        struct vdi_layer *p = cache_find(c->cache, &cur->parent_uuid);
        if (p) {
            p->refs++;
        } else {
            r = open_parent(c, opts, cur, &p);
            if (r < 0)
                goto fail;
            if (c->cache && (p->flags & VDF_F_FROZEN)) {
                p->cache = c->cache;
                p->cache_next = c->cache->head;
                c->cache->head = p;
            }
        }
        if (c->n == cap) {
            cap *= 2;
            struct vdi_layer **nl = realloc(c->layers, cap * sizeof(*nl));
            if (!nl) {
                vdi_layer_put(p);
                r = vdi_err(-ENOMEM, "out of memory");
                goto fail;
            }
            c->layers = nl;
        }
        c->layers[c->n++] = p;
        if (p->block_size != top->block_size) {
            r = vdi_err(-EUCLEAN, "%s: block size %u differs from its child's (%u)",
                        p->path, p->block_size, top->block_size);
            goto fail;
        }
        cur = p;
    }

    c->size = top->size;
    c->block_size = top->block_size;
    c->block_shift = top->block_shift;
    c->subs = top->subs;
    c->nbm = (top->nblocks + (1u << VDI_BM_SHIFT) - 1) >> VDI_BM_SHIFT;
    if (c->n > 1 && !(c->bm = calloc(c->nbm, sizeof(*c->bm)))) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto fail;
    }
    if (c->rdwr && (top->flags & VDF_F_DIRTY) && top->digest != VD_DIGEST_NONE)
        stale_all(top);
    if (c->rdwr && !(top->flags & VDF_F_DIRTY)) {
        r = vdi_layer_write_header(top, top->flags | VDF_F_DIRTY);
        if (r < 0)
            goto fail;
    }
    *out = c;
    return 0;
fail:
    chain_free(c);
    return r;
}

/* Runs the context until the chain has no request and no flush running. */
void vdi_chain_drain(struct vd_chain *c)
{
    while (c->inflight || (c->rdwr && c->layers[0]->flush_cur)) {
        if (vd_ctx_poll(c->ctx, -1) < 0)
            break;
    }
}

int vd_chain_close(struct vd_chain *c)
{
    int r = 0;
    if (!c)
        return 0;
    vdi_chain_drain(c);
    if (c->rdwr) {
        struct vdi_layer *top = c->layers[0];
        r = vdi_layer_flush_sync(top);
        if (r == 0)
            r = vdi_layer_write_header(top, top->flags & ~VDF_F_DIRTY);
    }
    chain_free(c);
    return r;
}

void vdi_chain_abandon(struct vd_chain *c)
{
    if (!c)
        return;
    vdi_chain_drain(c);
    chain_free(c);
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

int vd_chain_push(struct vd_chain *c, const char *new_top_path)
{
    return vdi_chain_push(c, new_top_path, NULL);
}

int vdi_chain_push(struct vd_chain *c, const char *new_top_path, const vd_uuid *uuid)
{
    if (!c->rdwr)
        return vdi_err(-EROFS, "the disk is open read-only");
    struct vdi_layer *top = c->layers[0];
    vdi_chain_drain(c);
    int r = vdi_layer_flush_sync(top);
    if (r < 0)
        return r;
    uint32_t old_flags = top->flags;
    r = vdi_layer_write_header(top, (old_flags & ~VDF_F_DIRTY) | VDF_F_FROZEN);
    if (r < 0)
        return r;
    struct vd_create_opts co = { .size = top->size, .block_size = top->block_size,
                                 .digest = top->digest, .parent = top->path, .uuid = uuid };
    struct vdi_layer *nl = NULL;
    r = vd_layer_create(new_top_path, &co, NULL);
    if (r == 0)
        r = vdi_layer_open(new_top_path, true, c->buffered, &nl);
    if (r == 0)
        r = vdi_layer_load(nl, NULL);
    if (r == 0)
        r = vdi_layer_write_header(nl, nl->flags | VDF_F_DIRTY);
    struct vdi_layer **arr = NULL;
    if (r == 0 && !(arr = realloc(c->layers, (c->n + 1) * sizeof(*arr))))
        r = vdi_err(-ENOMEM, "out of memory");
    if (r == 0 && !c->bm && !(c->bm = calloc(c->nbm ? c->nbm : 1, sizeof(*c->bm)))) {
        c->layers = arr;
        r = vdi_err(-ENOMEM, "out of memory");
    }
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vd_errmsg());
        if (nl) {
            vdi_layer_put(nl);
            unlink(new_top_path);
        }
        /* Nobody depends on the old top yet: make it writable again. */
        vdi_layer_write_header(top, old_flags);
        vdi_err(r, "%s", msg);
        return r;
    }
    memmove(arr + 1, arr, c->n * sizeof(*arr));
    arr[0] = nl;
    c->layers = arr;
    c->n++;
    top->rdwr = false;
    flock(top->fd, LOCK_UN);
    c->pushed_flags = old_flags;
    vdi_below_reset(c);
    return 0;
}

int vdi_chain_unpush(struct vd_chain *c)
{
    if (c->n < 2 || !c->rdwr)
        return vdi_err(-EINVAL, "nothing to undo");
    struct vdi_layer *nl = c->layers[0], *top = c->layers[1];
    vdi_chain_drain(c);
    if (flock(top->fd, LOCK_EX | LOCK_NB) < 0)
        return vdi_err(-errno, "%s: cannot lock it again: %s", top->path, strerror(errno));
    int r = vdi_layer_write_header(top, c->pushed_flags | VDF_F_DIRTY);
    if (r < 0) {
        flock(top->fd, LOCK_UN);
        return r;
    }
    top->rdwr = true;
    char *path = strdup(nl->path);
    memmove(c->layers, c->layers + 1, (c->n - 1) * sizeof(*c->layers));
    c->n--;
    vdi_layer_put(nl);
    if (path)
        unlink(path);
    free(path);
    vdi_below_reset(c);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The below map                                                       */
/* ------------------------------------------------------------------ */

void vdi_below_reset(struct vd_chain *c)
{
    if (!c->bm)
        return;
    for (uint64_t i = 0; i < c->nbm; i++) {
        if (c->bm[i]) {
            free(c->bm[i]->mixed);
            free(c->bm[i]);
            c->bm[i] = NULL;
        }
    }
}

static struct vdi_bmchunk *build_chunk(struct vd_chain *c, uint64_t ci)
{
    struct vdi_bmchunk *ch = calloc(1, sizeof(*ch));
    uint16_t *own = calloc(c->subs, sizeof(*own));
    const uint8_t **ent = calloc(c->n, sizeof(*ent));
    if (!ch || !own || !ent)
        goto nomem;
    uint64_t first = ci << VDI_BM_SHIFT;
    for (unsigned bi = 0; bi < (1u << VDI_BM_SHIFT); bi++) {
        uint64_t blk = first + bi;
        unsigned any = 0;
        for (unsigned d = 1; d < c->n; d++) {
            const struct vdi_layer *l = c->layers[d];
            ent[d] = NULL;
            if (blk >= l->nblocks)
                continue;
            const struct vdi_l2 *p = vdi_l2_get(l, blk / l->epp);
            if (p) {
                ent[d] = vdi_entry(l, p, blk % l->epp);
                any++;
            }
        }
        if (!any) {
            ch->v[bi] = 0;
            continue;
        }
        bool uniform = true;
        for (unsigned s = 0; s < c->subs; s++) {
            own[s] = 0;
            for (unsigned d = 1; d < c->n; d++) {
                if (ent[d] && vdi_sub_state(ent[d], s) != VDF_SUB_ABSENT) {
                    own[s] = (uint16_t)(d + 1);
                    break;
                }
            }
            if (own[s] != own[0])
                uniform = false;
        }
        if (uniform) {
            ch->v[bi] = own[0];
            continue;
        }
        if (ch->nmixed == ch->cap) {
            uint32_t ncap = ch->cap ? ch->cap * 2 : 16;
            uint16_t *m = realloc(ch->mixed, (size_t)ncap * c->subs * sizeof(*m));
            if (!m)
                goto nomem;
            ch->mixed = m;
            ch->cap = ncap;
        }
        memcpy(ch->mixed + (size_t)ch->nmixed * c->subs, own, c->subs * sizeof(*own));
        ch->v[bi] = VDI_BM_MIXED | ch->nmixed++;
    }
    free(own);
    free(ent);
    return ch;
nomem:
    if (ch)
        free(ch->mixed);
    free(ch);
    free(own);
    free(ent);
    return NULL;
}

unsigned vdi_below_owner(struct vd_chain *c, uint64_t blk, unsigned sub)
{
    if (c->n < 2)
        return 0;
    uint64_t ci = blk >> VDI_BM_SHIFT;
    if (ci >= c->nbm)
        return 0;
    struct vdi_bmchunk *ch = c->bm[ci];
    if (!ch) {
        ch = build_chunk(c, ci);
        if (!ch) {
            /* Out of memory: answer by walking the chain. */
            uint64_t off;
            for (unsigned d = 1; d < c->n; d++)
                if (vdi_lookup(c->layers[d], blk, sub, &off) != VDF_SUB_ABSENT)
                    return d + 1;
            return 0;
        }
        c->bm[ci] = ch;
    }
    uint32_t v = ch->v[blk & ((1u << VDI_BM_SHIFT) - 1)];
    if (v & VDI_BM_MIXED)
        return ch->mixed[(size_t)(v & ~VDI_BM_MIXED) * c->subs + sub];
    return v;
}

/* ------------------------------------------------------------------ */
/* Accessors                                                           */
/* ------------------------------------------------------------------ */

unsigned vd_chain_depth(const struct vd_chain *c)
{
    return c->n;
}

uint64_t vd_chain_size(const struct vd_chain *c)
{
    return c->size;
}

uint32_t vd_chain_block_size(const struct vd_chain *c)
{
    return c->block_size;
}

bool vd_chain_writable(const struct vd_chain *c)
{
    return c->rdwr;
}

const char *vd_chain_layer_path(const struct vd_chain *c, unsigned depth)
{
    if (depth < 1 || depth > c->n)
        return NULL;
    return c->layers[depth - 1]->path;
}

int vd_chain_layer_info(const struct vd_chain *c, unsigned depth,
                        struct vd_layer_info *info)
{
    if (depth < 1 || depth > c->n)
        return vdi_err(-EINVAL, "no layer at depth %u (chain has %u)", depth, c->n);
    vdi_layer_fill_info(c->layers[depth - 1], info);
    return 0;
}

int vdi_chain_open_single(struct vd_ctx *ctx, const char *path, bool rdwr,
                          struct vd_chain **out)
{
    struct vd_chain *c = calloc(1, sizeof(*c));
    if (!c || !(c->layers = calloc(1, sizeof(*c->layers)))) {
        free(c);
        return vdi_err(-ENOMEM, "out of memory");
    }
    c->pinned_fd = -1;
    c->ctx = ctx;
    c->rdwr = rdwr;
    c->buffered = true;
    struct vdi_layer *l;
    int r = rdwr ? vdi_layer_open_force(path, true, &l) : vdi_layer_open(path, false, true, &l);
    if (r < 0) {
        chain_free(c);
        return r;
    }
    c->layers[c->n++] = l;
    if ((r = vdi_layer_load(l, NULL)) < 0) {
        chain_free(c);
        return r;
    }
    c->size = l->size;
    c->block_size = l->block_size;
    c->block_shift = l->block_shift;
    c->subs = l->subs;
    if (rdwr && !(l->flags & VDF_F_DIRTY) &&
        (r = vdi_layer_write_header(l, l->flags | VDF_F_DIRTY)) < 0) {
        chain_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void vd_chain_read_stats(const struct vd_chain *c, uint64_t *frozen_read_bytes,
                         uint64_t *cache_hit_bytes)
{
    *frozen_read_bytes = __atomic_load_n(&c->frozen_read_bytes, __ATOMIC_RELAXED);
    *cache_hit_bytes = __atomic_load_n(&c->cache_hit_bytes, __ATOMIC_RELAXED);
}

void vd_chain_wait(struct vd_chain *c)
{
    vdi_chain_drain(c);
}
