/*
 * merge.c - moving data between layers: merging a layer with its only
 * child (snapshot commit and removal), pulling a chain into its top
 * (flatten), and header rewrites.
 *
 * Every step keeps what each chain reads: a merge writes into a layer only
 * where a child overrides it, or into a child only where the child does
 * not hold data yet.  So a merge interrupted at any point can simply be
 * run again (recover.c), which is what makes the operations crash safe.
 */
#include <stdio.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

#define COPY_BUF (1u << 20)

int vdi_store_writer_pid(struct vd_store *st, const char *uuid);

int mg_rewrite_header(const char *path, const vd_uuid *uuid, const vd_uuid *parent,
                      const char *hint, int frozen, uint64_t size)
{
    struct vdi_layer *l;
    int r = vdi_layer_open_force(path, true, &l);
    if (r < 0)
        return r;
    uint32_t flags = l->flags;
    if (uuid)
        l->uuid = *uuid;
    if (parent) {
        l->parent_uuid = *parent;
        snprintf(l->hint, sizeof(l->hint), "%s", vd_uuid_is_null(parent) ? "" : hint);
    }
    if (frozen == 0)
        flags &= ~VDF_F_FROZEN;
    else if (frozen == 1)
        flags |= VDF_F_FROZEN;
    if (size && size != l->size) {
        r = vdi_layer_grow(l, size);
        if (r == -ENOSPC)
            r = vdi_err(-ENOSPC, "%s: index too small for %llu bytes", path,
                        (unsigned long long)size);
    }
    if (r == 0)
        r = vdi_layer_write_header(l, flags);
    vdi_layer_put(l);
    return r;
}

/* The copy is a pipeline: runs of present sub-blocks (up to 1 MiB of
 * contiguous virtual space) are read from the source layer and written to
 * the destination with up to COPY_SLOTS runs in flight. */
#define COPY_SLOTS 16

struct copier;

struct slot {
    struct copier *k;
    uint8_t *buf;
    uint64_t voff, len;
    bool busy;
};

struct copier {
    struct vd_ctx *ctx;
    struct vd_chain *src, *dst;
    struct slot slots[COPY_SLOTS];
    unsigned busy;
    int err;
    uint64_t done, total;
    vd_progress_fn progress;
    void *opaque;
};

static void write_done(void *opaque, int res)
{
    struct slot *sl = opaque;
    struct copier *k = sl->k;
    if (res < 0 && !k->err)
        k->err = res;
    k->done += sl->len;
    if (k->progress)
        k->progress(k->opaque, k->done, k->total);
    sl->busy = false;
    k->busy--;
}

static void read_done(void *opaque, int res)
{
    struct slot *sl = opaque;
    struct copier *k = sl->k;
    if (res == 0 && !k->err)
        res = vd_aio_write(k->dst, sl->buf, sl->voff, sl->len, 0, write_done, sl);
    if (res < 0) {
        if (!k->err)
            k->err = res;
        sl->busy = false;
        k->busy--;
    }
}

static void zero_done(void *opaque, int res)
{
    struct copier *k = opaque;
    if (res < 0 && !k->err)
        k->err = res;
    k->busy--;
}

/* A free slot, waiting for one if all are busy. */
static struct slot *get_slot(struct copier *k)
{
    for (;;) {
        for (unsigned i = 0; i < COPY_SLOTS; i++)
            if (!k->slots[i].busy)
                return &k->slots[i];
        if (vd_ctx_poll(k->ctx, -1) < 0)
            return NULL;
    }
}

static int start_run(struct copier *k, uint64_t voff, uint64_t len)
{
    if (k->err)
        return k->err;
    struct slot *sl = get_slot(k);
    if (!sl)
        return -EIO;
    if (!sl->buf && !(sl->buf = vdi_alloc_aligned(COPY_BUF)))
        return vdi_err(-ENOMEM, "out of memory");
    sl->k = k;
    sl->voff = voff;
    sl->len = len;
    int r = vd_aio_read(k->src, sl->buf, voff, len, read_done, sl);
    if (r < 0)
        return r;
    sl->busy = true;
    k->busy++;
    return 0;
}

int mg_copy_layer(struct vd_ctx *ctx, const char *src, const char *dst,
                  bool only_where_absent, vd_progress_fn progress, void *opaque)
{
    struct copier k = { .ctx = ctx, .progress = progress, .opaque = opaque };
    int r;
    if (!ctx)
        return -ENOMEM;
    if ((r = vdi_chain_open_single(ctx, src, false, &k.src)) < 0)
        return r;
    if ((r = vdi_chain_open_single(ctx, dst, true, &k.dst)) < 0)
        goto out;
    struct vdi_layer *s = k.src->layers[0], *d = k.dst->layers[0];
    if (d->block_size != s->block_size) {
        r = vdi_err(-EINVAL, "cannot merge layers of different block sizes");
        goto out;
    }
    struct vd_layer_info si;
    vdi_layer_fill_info(s, &si);
    k.total = si.allocated;
    uint64_t rstart = 0, rlen = 0;     /* the run being gathered */
    uint64_t limit = s->size < d->size ? s->size : d->size;
    for (uint64_t pg = 0; pg < s->n_l2 && r == 0; pg++) {
        struct vdi_l2 *p = vdi_l2_get(s, pg);
        if (!p)
            continue;
        for (uint64_t i = 0; i < s->epp && r == 0; i++) {
            uint64_t blk = pg * s->epp + i;
            if (blk >= s->nblocks)
                break;
            uint8_t *e = vdi_entry(s, p, i);
            for (unsigned sub = 0; sub < s->subs && r == 0; sub++) {
                unsigned st = vdi_sub_state(e, sub);
                uint64_t voff = (blk << s->block_shift) + (uint64_t)sub * VD_SUBBLOCK_SIZE;
                uint64_t fo;
                if (st == VDF_SUB_ABSENT || voff >= limit)
                    continue;
                if (only_where_absent && vdi_lookup(d, blk, sub, &fo) != VDF_SUB_ABSENT)
                    continue;
                uint64_t n = VD_SUBBLOCK_SIZE;
                if (voff + n > limit)
                    n = limit - voff;
                if (st == VDF_SUB_ZERO) {
                    k.busy++;
                    r = vd_aio_zero(k.dst, voff, n, 0, zero_done, &k);
                    if (r < 0)
                        k.busy--;
                    continue;
                }
                if (rlen && (rstart + rlen != voff || rlen + n > COPY_BUF)) {
                    r = start_run(&k, rstart, rlen);
                    rlen = 0;
                }
                if (!rlen)
                    rstart = voff;
                rlen += n;
            }
        }
    }
    if (r == 0 && rlen)
        r = start_run(&k, rstart, rlen);
    while (k.busy)
        if (vd_ctx_poll(ctx, -1) < 0)
            break;
    if (r == 0)
        r = k.err;
    if (r == 0)
        r = vd_flush(k.dst);
out:
    while (k.busy)
        if (vd_ctx_poll(ctx, -1) < 0)
            break;
    if (k.dst) {
        int r2 = vd_chain_close(k.dst);
        if (r == 0)
            r = r2;
    }
    vd_chain_close(k.src);
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        free(k.slots[i].buf);
    return r;
}

int mg_pull_all(struct vd_store *st, const char *path, vd_progress_fn progress,
                void *opaque)
{
    struct vd_ctx *ctx = st_ctx(st);
    struct vd_chain *c = NULL, *w = NULL;
    uint8_t *buf = NULL;
    int r;
    if (!ctx)
        return -ENOMEM;
    /* Read through the whole chain, write into its top alone (which may
     * be a frozen layer: what it reads does not change). */
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED, .resolve = st_resolve,
                              .resolve_opaque = st };
    if ((r = vd_chain_open(ctx, path, &o, &c)) < 0)
        goto out;
    if ((r = vdi_chain_open_single(ctx, path, true, &w)) < 0)
        goto out;
    buf = vdi_alloc_aligned(COPY_BUF);
    if (!buf) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    uint64_t size = vd_chain_size(c), pos = 0;
    while (pos < size && r == 0) {
        struct vd_extent ext[64];
        int n = vd_block_status(c, pos, size - pos, ext, 64);
        if (n <= 0) {
            r = n < 0 ? n : -EIO;
            break;
        }
        for (int i = 0; i < n && r == 0; i++) {
            if (ext[i].depth >= 2 && ext[i].type == VD_EXTENT_ZERO) {
                r = vd_zero(w, ext[i].offset, ext[i].length, 0);
            } else if (ext[i].depth >= 2 && ext[i].type == VD_EXTENT_DATA) {
                for (uint64_t o2 = 0; o2 < ext[i].length && r == 0; o2 += COPY_BUF) {
                    uint64_t len = ext[i].length - o2 < COPY_BUF ? ext[i].length - o2 : COPY_BUF;
                    r = vd_read(c, buf, ext[i].offset + o2, len);
                    if (r == 0)
                        r = vd_write(w, buf, ext[i].offset + o2, len, 0);
                }
            }
            pos = ext[i].offset + ext[i].length;
            if (progress)
                progress(opaque, pos, size);
        }
    }
out:
    if (w) {
        int r2 = vd_chain_close(w);
        if (r == 0)
            r = r2;
    }
    if (c)
        vd_chain_close(c);
    free(buf);
    return r;
}

/* ------------------------------------------------------------------ */
/* Merging a layer with its only child                                 */
/* ------------------------------------------------------------------ */

static uint64_t allocated_of(struct vd_store *st, const char *uuid)
{
    char path[4096];
    struct stat sb;
    st_layer_path(st, uuid, path, sizeof(path));
    /* The space the file takes is a good enough measure of its data. */
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_blocks * 512 : UINT64_MAX;
}

/* The file work of a downward merge of L (at lp) into C (at cp, UUID cu). */
static int merge_down(struct vd_store *st, const char *lp, const char *cp, const vd_uuid *cu)
{
    struct vd_layer_info li, ci;
    int r;
    if ((r = vdi_layer_header_info(lp, &li)) < 0)
        return r;
    if (memcmp(li.uuid.b, cu->b, 16) != 0) {
        if ((r = vdi_layer_header_info(cp, &ci)) < 0)
            return r;
        if (ci.size > li.size && (r = mg_rewrite_header(lp, NULL, NULL, NULL, -1, ci.size)) < 0)
            return r;
        if ((r = mg_copy_layer(st_ctx(st), cp, lp, false, NULL, NULL)) < 0)
            return r;
        vdi_step("merge: data copied down");
        if ((r = mg_rewrite_header(lp, cu, NULL, NULL, ci.frozen ? 1 : 0, 0)) < 0)
            return r;
        vdi_step("merge: identity taken");
    }
    if (rename(lp, cp) < 0)
        return vdi_err(-errno, "rename %s: %s", lp, strerror(errno));
    vdi_step("merge: file replaced");
    return 0;
}

/* True when some open file description holds the layer's write lock (in
 * this process too, unlike /proc/locks). */
static bool layer_busy(struct vd_store *st, const char *uuid, int *keep_fd)
{
    char path[4096];
    st_layer_path(st, uuid, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return true;
    }
    if (keep_fd)
        *keep_fd = fd;   /* the caller keeps the lock */
    else
        close(fd);
    return false;
}

bool mg_layer_busy(struct vd_store *st, const char *uuid)
{
    return layer_busy(st, uuid, NULL);
}

static int finish(struct vd_store *st, const char *id, const char *l, const char *c,
                  const char *parent, bool unlink_l);

/* Resumable: j = {"op":"merge","l":L,"c":C,"mode":"up"|"down"}.
 *  up:   copy L into C where C holds nothing; C's parent becomes L's.
 *  down: copy C into L; L takes C's UUID, flags and size, and replaces C's
 *        file; L's file is gone.  Time proportional to C's data. */
int mg_resume(struct vd_store *st, const char *id, json_t *j, bool c_held)
{
    const char *l = js(j, "l"), *c = js(j, "c"), *mode = js(j, "mode");
    char lp[4096], cp[4096], parent[37] = "";
    vd_uuid cu, pu;
    MDB_txn *txn;
    int r, cfd = -1;
    st_layer_path(st, l, lp, sizeof(lp));
    st_layer_path(st, c, cp, sizeof(cp));
    if ((r = cat_txn(st, false, &txn)) < 0)
        return r;
    r = lay_parent(txn, st, l, parent);
    mdb_txn_abort(txn);
    if (r < 0)
        return r;
    if (vd_uuid_parse(c, &cu) < 0)
        return vdi_err(-EUCLEAN, "journal: bad UUID '%s'", c);
    memset(&pu, 0, sizeof(pu));
    if (parent[0] && vd_uuid_parse(parent, &pu) < 0)
        return vdi_err(-EUCLEAN, "catalog: bad UUID '%s'", parent);
    char hint[64];
    snprintf(hint, sizeof(hint), "%s.vdk", parent);

    if (strcmp(mode, "up") == 0) {
        if ((r = mg_copy_layer(st_ctx(st), lp, cp, true, NULL, NULL)) < 0)
            return r;
        vdi_step("merge: data copied up");
        if ((r = mg_rewrite_header(cp, NULL, &pu, hint, -1, 0)) < 0)
            return r;
        vdi_step("merge: parent switched");
    } else {
        /* The file of C is replaced: nobody may have it open for writing. */
        if (!c_held && access(lp, F_OK) == 0 && layer_busy(st, c, &cfd))
            return vdi_err(-EBUSY, "layer %s is in use", c);
        if (access(lp, F_OK) == 0) {
            r = merge_down(st, lp, cp, &cu);
            if (cfd >= 0)
                close(cfd);
            if (r < 0)
                return r;
        }
        if (ju(j, "eof")) {
            /* An online commit's switch (commit.c) was cut short: its new
             * space, or the old slots it replaced, may be named by nothing
             * now. */
            struct vd_check_result res;
            vd_layer_check(cp, VD_CHECK_REPAIR, &res, NULL, NULL);
            vdi_clear_err();
        }
    }
    return finish(st, id, l, c, parent, strcmp(mode, "up") == 0);
}

static int finish(struct vd_store *st, const char *id, const char *l, const char *c,
                  const char *parent, bool unlink_l)
{
    MDB_txn *txn;
    json_t *co;
    int r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        return r;
    if ((r = cat_get(txn, st->db_lay, c, &co)) < 0)
        goto abort;
    json_object_set_new(co, "parent", json_string(parent));
    r = cat_put(txn, st->db_lay, c, co);
    json_decref(co);
    if (r < 0 || (r = cat_del(txn, st->db_lay, l)) < 0 || (r = jnl_del(txn, st, id)) < 0)
        goto abort;
    json_t *ul = json_array();
    if (unlink_l)
        json_array_append_new(ul, json_string(l));
    r = st_commit_and_unlink(st, txn, ul);
    json_decref(ul);
    return r;
abort:
    mdb_txn_abort(txn);
    return r;
}

int mg_finish(struct vd_store *st, const char *id, const char *l, const char *c,
              const char *parent)
{
    return finish(st, id, l, c, parent, false);
}

int mg_plan(struct vd_store *st, MDB_txn *txn, const char *l, const char *c,
            bool prefer_down, char id[17])
{
    const char *mode = "up";
    if (prefer_down || allocated_of(st, c) < allocated_of(st, l)) {
        /* Down needs l's index to cover c's size. */
        char lp[4096], cp[4096];
        struct vd_layer_info li, ci;
        st_layer_path(st, l, lp, sizeof(lp));
        st_layer_path(st, c, cp, sizeof(cp));
        if (vdi_layer_header_info(lp, &li) == 0 && vdi_layer_header_info(cp, &ci) == 0 &&
            li.block_size == ci.block_size) {
            mode = "down";
            if (ci.size > li.size) {
                struct vdi_layer *x;
                if (vdi_layer_open(lp, false, true, &x) == 0) {
                    uint64_t n_l1 = x->n_l1;
                    uint64_t epp = x->epp, bs = x->block_size;
                    uint64_t nb = (ci.size + bs - 1) / bs;
                    uint64_t nl2 = (nb + epp - 1) / epp;
                    if ((nl2 + VDF_L1_EPP - 1) / VDF_L1_EPP != n_l1)
                        mode = "up";
                    vdi_layer_put(x);
                }
            }
        }
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "op", "merge", "l", l, "c", c,
                          "mode", mode);
    if (!j)
        return vdi_err(-ENOMEM, "out of memory");
    int r = jnl_add(txn, st, j, id);
    json_decref(j);
    return r;
}

int mg_simplify(struct vd_store *st, const char *uuid)
{
    MDB_txn *txn;
    json_t *o;
    char child[37], id[17];
    int r = cat_txn(st, true, &txn);
    if (r < 0)
        return r;
    r = cat_get(txn, st->db_lay, uuid, &o);
    if (r == -ENOENT) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (r < 0)
        goto abort;
    uint64_t refs = ju(o, "refs");
    json_decref(o);
    if (refs != 1) {
        mdb_txn_abort(txn);
        return 0;
    }
    int n = lay_children(txn, st, uuid, child);
    if (n != 1 || layer_busy(st, child, NULL)) {
        /* Its one reference is a volume, snapshot or template; or the child
         * is in use: the merge waits for a later operation. */
        mdb_txn_abort(txn);
        return n < 0 ? n : 0;
    }
    if ((r = mg_plan(st, txn, uuid, child, false, id)) < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        return r;
    vdi_step("merge planned");
    if ((r = cat_txn(st, false, &txn)) < 0)
        return r;
    r = cat_get(txn, st->db_jnl, id, &o);
    mdb_txn_abort(txn);
    if (r < 0)
        return r;
    r = mg_resume(st, id, o, false);
    json_decref(o);
    return r;
abort:
    mdb_txn_abort(txn);
    return r;
}
