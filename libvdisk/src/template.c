/*
 * template.c - templates (named, versioned, frozen layers), linked and full
 * clones, and flattening a clone.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

int st_push(struct vd_store *st, const char *vol, const char *kind, const char *name,
            uint64_t new_size);
int vdi_store_writer_pid(struct vd_store *st, const char *uuid);

static int get_template(MDB_txn *txn, struct vd_store *st, const char *tpl, json_t **out)
{
    int r = st_check_name("template", tpl);
    if (r < 0)
        return r;
    r = cat_get(txn, st->db_tpl, tpl, out);
    if (r == -ENOENT)
        return vdi_err(-ENOENT, "no template named '%s'", tpl);
    return r;
}

/* The layer of version ver (0: newest) of template tpl. */
int st_template_layer(MDB_txn *txn, struct vd_store *st, const char *tpl, uint32_t ver,
                      char out[37], uint32_t *ver_out)
{
    json_t *t;
    int r = get_template(txn, st, tpl, &t);
    if (r < 0)
        return r;
    json_t *vs = json_object_get(t, "versions"), *e, *best = NULL;
    size_t i;
    json_array_foreach(vs, i, e) {
        if ((ver && ju(e, "v") == ver) || (!ver && (!best || ju(e, "v") > ju(best, "v"))))
            best = e;
    }
    if (!best) {
        json_decref(t);
        return vdi_err(-ENOENT, "template '%s' has no version %u", tpl, ver);
    }
    snprintf(out, 37, "%s", js(best, "layer"));
    if (ver_out)
        *ver_out = (uint32_t)ju(best, "v");
    json_decref(t);
    return 0;
}

int vd_template_create(struct vd_store *st, const char *tpl, const char *from)
{
    MDB_txn *txn;
    json_t *t;
    int r = st_check_name("template", tpl);
    if (r < 0 || (r = cat_txn(st, false, &txn)) < 0)
        return r;
    r = cat_get(txn, st->db_tpl, tpl, &t);
    mdb_txn_abort(txn);
    if (r == 0) {
        json_decref(t);
        return vdi_err(-EEXIST, "a template named '%s' already exists (use template update)", tpl);
    }
    return st_push(st, from, "template", tpl, 0);
}

int vd_template_update(struct vd_store *st, const char *tpl, const char *from)
{
    MDB_txn *txn;
    json_t *t;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    r = get_template(txn, st, tpl, &t);
    mdb_txn_abort(txn);
    if (r < 0)
        return r;
    json_decref(t);
    return st_push(st, from, "template", tpl, 0);
}

struct clones {
    const char *tpl;
    uint32_t ver;           /* 0: any */
    unsigned n;
    char names[256];
};

static int find_clone(void *opaque, const char *key, json_t *val)
{
    struct clones *c = opaque;
    if (strcmp(js(val, "template"), c->tpl) != 0 || (c->ver && ju(val, "tver") != c->ver))
        return 0;
    size_t used = strlen(c->names);
    if (c->n < 8)
        snprintf(c->names + used, sizeof(c->names) - used, "%s'%s'", c->n ? ", " : "", key);
    c->n++;
    return 0;
}

int vd_template_remove(struct vd_store *st, const char *tpl)
{
    MDB_txn *txn;
    json_t *t = NULL, *ul = json_array(), *layers = json_array();
    struct clones c = { .tpl = tpl };
    int r;
    if ((r = st_lock(st)) < 0)
        goto out0;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = get_template(txn, st, tpl, &t)) < 0)
        goto abort;
    if ((r = cat_each(txn, st->db_vol, "", find_clone, &c)) < 0)
        goto abort;
    if (c.n) {
        r = vdi_err(-EBUSY, "template '%s' has %u linked clone%s: %s%s", tpl, c.n,
                    c.n == 1 ? "" : "s", c.names, c.n > 8 ? ", ..." : "");
        goto abort;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(t, "versions"), i, e) {
        json_array_append_new(layers, json_string(js(e, "layer")));
        if ((r = lay_ref(txn, st, js(e, "layer"), -1, ul)) < 0)
            goto abort;
    }
    if ((r = cat_del(txn, st->db_tpl, tpl)) < 0 || (r = acc_drop(txn, st, tpl)) < 0)
        goto abort;
    if ((r = st_commit_and_unlink(st, txn, ul)) < 0)
        goto out;
    json_array_foreach(layers, i, e)
        mg_simplify(st, json_string_value(e));
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    st_unlock(st);
out0:
    json_decref(t);
    json_decref(ul);
    json_decref(layers);
    return r;
}

static uint64_t layer_size(struct vd_store *st, const char *uuid)
{
    char path[4096];
    struct vdi_layer *l;
    st_layer_path(st, uuid, path, sizeof(path));
    if (vdi_layer_open(path, false, true, &l) < 0)
        return 0;
    uint64_t s = l->size;
    vdi_layer_put(l);
    return s;
}

static void fill_tinfo(MDB_txn *txn, struct vd_store *st, const char *name, json_t *t,
                       struct vd_template_info *info, struct vd_template_version **vers,
                       size_t *nv)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", name);
    info->create_time = ju(t, "ctime");
    json_t *vs = json_object_get(t, "versions"), *e;
    size_t i, n = json_array_size(vs);
    struct vd_template_version *a = vers ? calloc(n ? n : 1, sizeof(*a)) : NULL;
    json_array_foreach(vs, i, e) {
        uint32_t v = (uint32_t)ju(e, "v");
        struct clones c = { .tpl = name, .ver = v };
        cat_each(txn, st->db_vol, "", find_clone, &c);
        info->versions++;
        info->clones += c.n;
        if (v >= info->latest) {
            info->latest = v;
            info->size = layer_size(st, js(e, "layer"));
        }
        if (a) {
            a[i].version = v;
            a[i].create_time = ju(e, "ctime");
            a[i].size = layer_size(st, js(e, "layer"));
            a[i].clones = c.n;
            vd_uuid_parse(js(e, "layer"), &a[i].layer);
        }
    }
    if (vers) {
        if (!n) {
            free(a);
            a = NULL;
        }
        *vers = a;
        *nv = a ? n : 0;
    }
}

struct tlist {
    MDB_txn *txn;
    struct vd_store *st;
    struct vd_template_info *a;
    size_t n, cap;
};

static int tlist_one(void *opaque, const char *key, json_t *val)
{
    struct tlist *l = opaque;
    int r = st_grow(&l->a, &l->cap, l->n, sizeof(*l->a));
    if (r < 0)
        return r;
    fill_tinfo(l->txn, l->st, key, val, &l->a[l->n++], NULL, NULL);
    return 0;
}

int vd_template_list(struct vd_store *st, struct vd_template_info **out, size_t *n)
{
    struct tlist l = { .st = st };
    int r = cat_txn(st, false, &l.txn);
    if (r < 0)
        return r;
    r = cat_each(l.txn, st->db_tpl, "", tlist_one, &l);
    mdb_txn_abort(l.txn);
    if (r < 0) {
        free(l.a);
        return r;
    }
    *out = l.a;
    *n = l.n;
    return 0;
}

int vd_template_info(struct vd_store *st, const char *tpl, struct vd_template_info *info,
                     struct vd_template_version **versions, size_t *n)
{
    MDB_txn *txn;
    json_t *t;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    if ((r = get_template(txn, st, tpl, &t)) == 0) {
        fill_tinfo(txn, st, tpl, t, info, versions, n);
        if (versions && !*versions && json_array_size(json_object_get(t, "versions")))
            r = vdi_err(-ENOMEM, "out of memory");
        json_decref(t);
    }
    mdb_txn_abort(txn);
    return r;
}

/* ------------------------------------------------------------------ */
/* Clones                                                              */
/* ------------------------------------------------------------------ */

/* A standalone copy of the chain whose top is src, at dst. */
static int copy_chain(struct vd_store *st, const char *src, const char *dst,
                      const char *uuid, vd_progress_fn progress, void *opaque)
{
    vd_uuid nu;
    if (vd_uuid_parse(uuid, &nu) < 0)
        return vdi_err(-EINVAL, "bad UUID '%s'", uuid);
    struct vd_ctx *ctx = st_ctx(st);
    struct vd_chain *c = NULL, *d = NULL;
    uint8_t *buf = NULL;
    int r = 0;
    if (!ctx)
        return -ENOMEM;
    struct vd_open_opts o = { .resolve = st_resolve, .resolve_opaque = st };
    if ((r = vd_chain_open(ctx, src, &o, &c)) < 0)
        goto out;
    struct vd_layer_info li;
    vd_chain_layer_info(c, 1, &li);
    if (vd_chain_depth(c) == 1) {
        /* One layer: clone the file (reflink, else copy_file_range), then
         * give the copy its own identity. */
        int in = open(src, O_RDONLY | O_CLOEXEC);
        int out = in >= 0 ? open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
        if (in < 0 || out < 0) {
            r = vdi_err(-errno, "%s: %s", in < 0 ? src : dst, strerror(errno));
            if (in >= 0)
                close(in);
            goto out;
        }
        if (ioctl(out, FICLONE, in) < 0) {
            struct stat sb;
            fstat(in, &sb);
            off_t pos = 0;
            while (r == 0 && pos < sb.st_size) {
                off_t data = lseek(in, pos, SEEK_DATA);
                if (data < 0)
                    break;
                off_t hole = lseek(in, data, SEEK_HOLE);
                off_t io = data, oo = data;
                while (io < hole) {
                    ssize_t n = copy_file_range(in, &io, out, &oo, (size_t)(hole - io), 0);
                    if (n <= 0) {
                        r = vdi_err(n < 0 ? -errno : -EIO, "copy: %s", strerror(errno));
                        break;
                    }
                    if (progress)
                        progress(opaque, (uint64_t)io, (uint64_t)sb.st_size);
                }
                pos = hole;
            }
            if (r == 0 && ftruncate(out, sb.st_size) < 0)
                r = vdi_err(-errno, "%s: %s", dst, strerror(errno));
        }
        if (r == 0 && fsync(out) < 0)
            r = vdi_err(-errno, "%s: %s", dst, strerror(errno));
        close(in);
        close(out);
        if (r == 0) {
            vd_uuid none;
            memset(&none, 0, sizeof(none));
            r = mg_rewrite_header(dst, &nu, &none, "", 0, 0);
        }
        goto out;
    }
    struct vd_create_opts co = { .size = vd_chain_size(c), .block_size = li.block_size,
                                 .digest = li.digest, .uuid = &nu };
    if ((r = vd_layer_create(dst, &co, NULL)) < 0)
        goto out;
    struct vd_open_opts od = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED };
    if ((r = vd_chain_open(ctx, dst, &od, &d)) < 0)
        goto out;
    buf = vdi_alloc_aligned(1u << 20);
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
            if (ext[i].type == VD_EXTENT_DATA) {
                for (uint64_t o2 = 0; o2 < ext[i].length && r == 0; o2 += 1u << 20) {
                    uint64_t len = ext[i].length - o2 < (1u << 20) ? ext[i].length - o2 : 1u << 20;
                    r = vd_read(c, buf, ext[i].offset + o2, len);
                    if (r == 0)
                        r = vd_write(d, buf, ext[i].offset + o2, len, 0);
                }
            }
            pos = ext[i].offset + ext[i].length;
            if (progress)
                progress(opaque, pos, size);
        }
    }
out:
    if (d) {
        int r2 = vd_chain_close(d);
        if (r == 0)
            r = r2;
    }
    if (c)
        vd_chain_close(c);
    free(buf);
    return r;
}

int vd_clone(struct vd_store *st, const char *tpl, uint32_t version, const char *vol,
             unsigned flags, vd_progress_fn progress, void *opaque)
{
    return st_clone(st, tpl, version, vol, flags, progress, opaque, NULL, NULL);
}

int st_clone(struct vd_store *st, const char *tpl, uint32_t version, const char *vol,
             unsigned flags, vd_progress_fn progress, void *opaque, st_txn_hook hook,
             void *hook_opaque)
{
    MDB_txn *txn;
    char layer[37], n[37], id[17], np[4096], lp[4096];
    uint32_t ver = 0;
    bool full = flags & VD_CLONE_FULL;
    int r = st_check_name("volume", vol);
    if (r < 0)
        return r;
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_template_layer(txn, st, tpl, version, layer, &ver)) < 0 ||
        (r = st_name_free(txn, st, vol)) < 0 || (r = st_new_uuid(n)) < 0)
        goto abort;
    json_t *j = json_pack("{s:s, s:[s]}", "op", "create", "files", n);
    r = jnl_add(txn, st, j, id);
    json_decref(j);
    if (r < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("clone: journaled");
    st_layer_path(st, n, np, sizeof(np));
    st_layer_path(st, layer, lp, sizeof(lp));
    if (full) {
        r = copy_chain(st, lp, np, n, progress, opaque);
    } else {
        struct vd_layer_info li;
        if ((r = vdi_layer_header_info(lp, &li)) == 0) {
            struct vd_create_opts co = { .digest = li.digest, .parent = lp };
            vd_uuid nu;
            vd_uuid_parse(n, &nu);
            co.uuid = &nu;
            r = vd_layer_create(np, &co, NULL);
        }
    }
    if (r < 0)
        goto undo;
    vdi_step("clone: layer made");
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto undo;
    json_t *v = full ? json_pack("{s:s, s:I}", "top", n, "ctime", (json_int_t)time(NULL))
                     : json_pack("{s:s, s:I, s:s, s:I}", "top", n, "ctime",
                                 (json_int_t)time(NULL), "template", tpl, "tver",
                                 (json_int_t)ver);
    if ((r = lay_new(txn, st, n, full ? "" : layer, 1)) < 0 ||
        (!full && (r = lay_ref(txn, st, layer, 1, NULL)) < 0) ||
        (r = cat_put(txn, st->db_vol, vol, v)) < 0 || (r = jnl_del(txn, st, id)) < 0 ||
        (hook && (r = hook(txn, hook_opaque)) < 0)) {
        json_decref(v);
        mdb_txn_abort(txn);
        goto undo;
    }
    json_decref(v);
    if ((r = cat_commit(txn)) < 0)
        goto undo;
    goto out;
undo:
    st_undo(st, r);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    st_unlock(st);
    return r;
}

/* Journal {"op":"flatten","vol":V,"top":T}: pull everything into T, cut
 * T's parent, then the catalog.  Every step can run again. */
int st_flatten_resume(struct vd_store *st, const char *id, json_t *j, vd_progress_fn progress,
                      void *opaque);
int st_flatten_resume(struct vd_store *st, const char *id, json_t *j, vd_progress_fn progress,
                      void *opaque)
{
    MDB_txn *txn;
    json_t *v = NULL, *ul = json_array();
    char tp[4096], parent[37] = "";
    const char *top = js(j, "top"), *vol = js(j, "vol");
    vd_uuid none;
    memset(&none, 0, sizeof(none));
    int r;
    st_layer_path(st, top, tp, sizeof(tp));
    if ((r = mg_pull_all(st, tp, progress, opaque)) < 0)
        goto out;
    vdi_step("flatten: data pulled");
    if ((r = mg_rewrite_header(tp, NULL, &none, "", -1, 0)) < 0)
        goto out;
    vdi_step("flatten: parent cut");
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    json_t *lo;
    if ((r = cat_get(txn, st->db_lay, top, &lo)) < 0)
        goto abort;
    snprintf(parent, sizeof(parent), "%s", js(lo, "parent"));
    json_object_set_new(lo, "parent", json_string(""));
    r = cat_put(txn, st->db_lay, top, lo);
    json_decref(lo);
    if (r < 0 || (parent[0] && (r = lay_ref(txn, st, parent, -1, ul)) < 0))
        goto abort;
    if (cat_get(txn, st->db_vol, vol, &v) == 0) {
        json_object_del(v, "template");
        json_object_del(v, "tver");
        if ((r = cat_put(txn, st->db_vol, vol, v)) < 0)
            goto abort;
    }
    if ((r = jnl_del(txn, st, id)) < 0)
        goto abort;
    if ((r = st_commit_and_unlink(st, txn, ul)) < 0)
        goto out;
    if (parent[0])
        mg_simplify(st, parent);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    json_decref(v);
    json_decref(ul);
    return r;
}

/* For a linked clone: the layer of its chain that sits right on the
 * template version's layer, and that layer (base[0] = 0 when the volume is
 * not a linked clone).  Flatten copies what is below into it, so the
 * clone's own history (its snapshots) stays as it is. */
static int clone_base(MDB_txn *txn, struct vd_store *st, json_t *v, char base[37],
                      char parent[37])
{
    char cur[37];
    int r;
    base[0] = parent[0] = '\0';
    if (!js(v, "template")[0])
        return 0;
    if ((r = st_template_layer(txn, st, js(v, "template"), (uint32_t)ju(v, "tver"), parent,
                               NULL)) < 0)
        return r;
    snprintf(cur, sizeof(cur), "%s", js(v, "top"));
    for (unsigned guard = 0; cur[0] && guard < 100000; guard++) {
        char p[37];
        if ((r = lay_parent(txn, st, cur, p)) < 0)
            return r;
        if (strcmp(p, parent) == 0) {
            snprintf(base, 37, "%s", cur);
            return 0;
        }
        snprintf(cur, sizeof(cur), "%s", p);
    }
    parent[0] = '\0';
    return 0;
}

int vd_volume_flatten(struct vd_store *st, const char *vol, vd_progress_fn progress,
                      void *opaque)
{
    MDB_txn *txn;
    json_t *v = NULL, *j = NULL;
    struct vdi_layer *held = NULL;
    char top[37], base[37], parent[37], id[17];
    int r;
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_volume(txn, st, vol, &v)) < 0)
        goto abort;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    if ((r = clone_base(txn, st, v, base, parent)) < 0)
        goto abort;
    if (!base[0]) {
        mdb_txn_abort(txn);
        goto out;   /* not a linked clone: nothing to do */
    }
    if ((r = st_hold_layer(st, top, vol, &held)) < 0)
        goto abort;
    j = json_pack("{s:s, s:s, s:s}", "op", "flatten", "vol", vol, "top", base);
    if ((r = jnl_add(txn, st, j, id)) < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("flatten: journaled");
    if (strcmp(base, top) == 0) {
        /* the copy opens the top for writing itself */
        vdi_layer_put(held);
        held = NULL;
    }
    r = st_flatten_resume(st, id, j, progress, opaque);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    if (held)
        vdi_layer_put(held);
    json_decref(v);
    json_decref(j);
    st_unlock(st);
    return r;
}
