/*
 * volume.c - volumes: create, remove, resize, information, opening for
 * I/O, and "push" (freeze the top, stack a new delta) which snapshots,
 * templates and some resizes are made of.
 */
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "store.h"

int vdi_store_writer_pid(struct vd_store *st, const char *uuid);

/* A push of volume vol (top layer top) in the journal, inside txn: n gets
 * the new top's UUID, id the entry's. */
static int plan_push(MDB_txn *txn, struct vd_store *st, const char *vol, const char *top,
                     char n[37], char id[17])
{
    int r = st_new_uuid(n);
    if (r < 0)
        return r;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "op", "push", "vol", vol, "top", top,
                          "new", n);
    if (!j)
        return vdi_err(-ENOMEM, "out of memory");
    r = jnl_add(txn, st, j, id);
    json_decref(j);
    return r;
}

int st_push(struct vd_store *st, const char *vol, const char *kind, const char *name,
            uint64_t new_size);
int st_push_open(struct vd_store *st, const char *vol, const char *snap, struct vd_chain *c);
int st_name_free(MDB_txn *txn, struct vd_store *st, const char *name);

int st_name_free(MDB_txn *txn, struct vd_store *st, const char *name)
{
    json_t *o;
    if (cat_get(txn, st->db_vol, name, &o) == 0) {
        json_decref(o);
        return vdi_err(-EEXIST, "a volume named '%s' already exists", name);
    }
    if (cat_get(txn, st->db_tpl, name, &o) == 0) {
        json_decref(o);
        return vdi_err(-EEXIST, "a template named '%s' already exists", name);
    }
    return 0;
}

int st_get_volume(MDB_txn *txn, struct vd_store *st, const char *name, json_t **out)
{
    int r = st_check_name("volume", name);
    if (r < 0)
        return r;
    r = cat_get(txn, st->db_vol, name, out);
    if (r == -ENOENT) {
        json_t *t;
        if (cat_get(txn, st->db_tpl, name, &t) == 0) {
            json_decref(t);
            return vdi_err(-EPERM, "'%s' is a template: templates cannot be changed", name);
        }
        return vdi_err(-ENOENT, "no volume named '%s'", name);
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* Create                                                              */
/* ------------------------------------------------------------------ */

int vd_volume_create(struct vd_store *st, const char *name, uint64_t size,
                     const struct vd_create_opts *opts)
{
    MDB_txn *txn;
    char n[37], id[17], path[4096];
    int r = st_check_name("volume", name);
    if (r < 0)
        return r;
    if (size == 0 || size % VD_SECTOR_SIZE || size > VD_MAX_SIZE)
        return vdi_err(-EINVAL, "size %llu is not a multiple of 512 between 512 bytes and 64 TiB",
                       (unsigned long long)size);
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = st_new_uuid(n)) < 0 || (r = cat_txn(st, true, &txn)) < 0)
        goto out;
    json_t *j = json_pack("{s:s, s:[s]}", "op", "create", "files", n);
    if ((r = st_name_free(txn, st, name)) < 0 || (r = jnl_add(txn, st, j, id)) < 0) {
        json_decref(j);
        mdb_txn_abort(txn);
        goto out;
    }
    json_decref(j);
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("create: journaled");
    struct vd_create_opts co = { .size = size };
    if (opts) {
        co.block_size = opts->block_size;
        co.digest = opts->digest;
    }
    st_layer_path(st, n, path, sizeof(path));
    vd_uuid nu;
    vd_uuid_parse(n, &nu);
    co.uuid = &nu;
    if ((r = vd_layer_create(path, &co, NULL)) < 0)
        goto undo;
    vdi_step("create: layer made");
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto undo;
    json_t *v = json_pack("{s:s, s:I}", "top", n, "ctime", (json_int_t)time(NULL));
    if ((r = lay_new(txn, st, n, "", 1)) < 0 || (r = cat_put(txn, st->db_vol, name, v)) < 0 ||
        (r = jnl_del(txn, st, id)) < 0) {
        json_decref(v);
        mdb_txn_abort(txn);
        goto undo;
    }
    json_decref(v);
    r = cat_commit(txn);
    if (r < 0)
        goto undo;
    goto out;
undo:
    /* Nothing names the new file yet: the recovery of "create" removes it. */
    st_undo(st, r);
out:
    st_unlock(st);
    return r;
}

/* ------------------------------------------------------------------ */
/* Push: freeze the top and stack a new delta                          */
/* ------------------------------------------------------------------ */

/* kind "snapshot" (name = snapshot), "template" (name = template, new
 * version), or "resize" (new_size = the new delta's size). */
int st_push(struct vd_store *st, const char *vol, const char *kind, const char *name,
            uint64_t new_size)
{
    MDB_txn *txn;
    json_t *v = NULL, *t = NULL;
    struct vdi_layer *held = NULL;
    char top[37], n[37], id[17], np[4096], tp[4096], key[2 * VD_NAME_MAX + 2];
    int r;
    bool snap = strcmp(kind, "snapshot") == 0, tpl = strcmp(kind, "template") == 0;

    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_volume(txn, st, vol, &v)) < 0)
        goto abort;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    if (snap) {
        json_t *o;
        if ((r = st_check_name("snapshot", name)) < 0)
            goto abort;
        snprintf(key, sizeof(key), "%s/%s", vol, name);
        if (cat_get(txn, st->db_snap, key, &o) == 0) {
            json_decref(o);
            r = vdi_err(-EEXIST, "volume '%s' already has a snapshot named '%s'", vol, name);
            goto abort;
        }
    } else if (tpl) {
        if ((r = st_check_name("template", name)) < 0)
            goto abort;
        r = cat_get(txn, st->db_tpl, name, &t);
        if (r == -ENOENT) {
            json_t *o;
            if (cat_get(txn, st->db_vol, name, &o) == 0) {
                json_decref(o);
                r = vdi_err(-EEXIST, "a volume named '%s' already exists", name);
                goto abort;
            }
            t = json_pack("{s:I, s:I, s:[]}", "ctime", (json_int_t)time(NULL), "next",
                          (json_int_t)1, "versions");
        } else if (r < 0) {
            goto abort;
        }
    }
    if ((r = st_hold_layer(st, top, vol, &held)) < 0)
        goto abort;
    if ((r = plan_push(txn, st, vol, top, n, id)) < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("push: journaled");

    /* Freeze the old top, then make the new delta over it. */
    if ((r = vdi_layer_write_header(held, (held->flags & ~VDF_F_DIRTY) | VDF_F_FROZEN)) < 0)
        goto undo;
    vdi_step("push: top frozen");
    st_layer_path(st, n, np, sizeof(np));
    st_layer_path(st, top, tp, sizeof(tp));
    struct vd_create_opts co = { .size = new_size ? new_size : held->size,
                                 .digest = held->digest, .parent = tp };
    vd_uuid nu;
    vd_uuid_parse(n, &nu);
    co.uuid = &nu;
    if ((r = vd_layer_create(np, &co, NULL)) < 0)
        goto undo;
    vdi_step("push: delta made");

    if ((r = cat_txn(st, true, &txn)) < 0)
        goto undo;
    /* old top: -1 (no longer the top) +1 (child) +1 (snapshot/template) */
    if ((r = lay_new(txn, st, n, top, 1)) < 0 ||
        ((snap || tpl) && (r = lay_ref(txn, st, top, 1, NULL)) < 0))
        goto abort_undo;
    json_object_set_new(v, "top", json_string(n));
    if ((r = cat_put(txn, st->db_vol, vol, v)) < 0)
        goto abort_undo;
    if (snap) {
        json_t *s = json_pack("{s:s, s:I}", "layer", top, "ctime", (json_int_t)time(NULL));
        r = cat_put(txn, st->db_snap, key, s);
        json_decref(s);
    } else if (tpl) {
        json_int_t ver = (json_int_t)ju(t, "next");
        json_t *e = json_pack("{s:I, s:s, s:I}", "v", ver, "layer", top, "ctime",
                              (json_int_t)time(NULL));
        json_array_append_new(json_object_get(t, "versions"), e);
        json_object_set_new(t, "next", json_integer(ver + 1));
        r = cat_put(txn, st->db_tpl, name, t);
    }
    if (r < 0 || (r = jnl_del(txn, st, id)) < 0)
        goto abort_undo;
    r = cat_commit(txn);
    if (r < 0)
        goto undo;
    goto out;

abort_undo:
    mdb_txn_abort(txn);
undo:
    vdi_layer_put(held);
    held = NULL;
    st_undo(st, r);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    if (held)
        vdi_layer_put(held);
    json_decref(v);
    json_decref(t);
    st_unlock(st);
    return r;
}

/* A snapshot of a volume open for writing in this process: the same
 * journal entry and catalog change as st_push, with the chain's top frozen
 * and the new delta stacked on the open chain (vdi_chain_push) instead of
 * on files nobody has open.  Nothing is written to the new delta before
 * the catalog names it: the caller's loop does not run meanwhile. */
/* Removes journal entry id once its operation was undone in place (an
 * entry left behind is harmless: its recovery finds nothing to undo). */
static void drop_journal(struct vd_store *st, const char *id)
{
    MDB_txn *txn;
    if (cat_txn(st, true, &txn) < 0)
        return;
    if (jnl_del(txn, st, id) < 0)
        mdb_txn_abort(txn);
    else
        cat_commit(txn);
}

int st_push_open(struct vd_store *st, const char *vol, const char *snap, struct vd_chain *c)
{
    MDB_txn *txn;
    json_t *v = NULL, *o;
    char top[37], n[37], id[17], np[4096], tp[4096], key[2 * VD_NAME_MAX + 2];
    int r;

    if (!vd_chain_writable(c))
        return vdi_err(-EINVAL, "the chain of volume '%s' is not open for writing", vol);
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_volume(txn, st, vol, &v)) < 0 || (r = st_check_name("snapshot", snap)) < 0)
        goto abort;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    st_layer_path(st, top, tp, sizeof(tp));
    if (strcmp(vd_chain_layer_path(c, 1), tp) != 0) {
        r = vdi_err(-EINVAL, "the open chain is not volume '%s''s top layer", vol);
        goto abort;
    }
    snprintf(key, sizeof(key), "%s/%s", vol, snap);
    if (cat_get(txn, st->db_snap, key, &o) == 0) {
        json_decref(o);
        r = vdi_err(-EEXIST, "volume '%s' already has a snapshot named '%s'", vol, snap);
        goto abort;
    }
    if ((r = plan_push(txn, st, vol, top, n, id)) < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("push-open: journaled");

    st_layer_path(st, n, np, sizeof(np));
    vd_uuid nu;
    vd_uuid_parse(n, &nu);
    if ((r = vdi_chain_push(c, np, &nu)) < 0) {
        /* vdi_chain_push undid its own steps: drop the journal entry. */
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vd_errmsg());
        drop_journal(st, id);
        vdi_err(r, "%s", msg);
        goto out;
    }
    vdi_step("push-open: pushed");

    if ((r = cat_txn(st, true, &txn)) < 0)
        goto unpush;
    json_t *s = json_pack("{s:s, s:I}", "layer", top, "ctime", (json_int_t)time(NULL));
    json_object_set_new(v, "top", json_string(n));
    if ((r = lay_new(txn, st, n, top, 1)) < 0 || (r = lay_ref(txn, st, top, 1, NULL)) < 0 ||
        (r = cat_put(txn, st->db_vol, vol, v)) < 0 || (r = cat_put(txn, st->db_snap, key, s)) < 0 ||
        (r = jnl_del(txn, st, id)) < 0) {
        json_decref(s);
        mdb_txn_abort(txn);
        goto unpush;
    }
    json_decref(s);
    if ((r = cat_commit(txn)) < 0)
        goto unpush;
    goto out;

unpush: {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vd_errmsg());
        if (vdi_chain_unpush(c) == 0)
            drop_journal(st, id);
        vdi_err(r, "%s", msg);
        goto out;
    }
abort:
    mdb_txn_abort(txn);
out:
    json_decref(v);
    st_unlock(st);
    return r;
}

/* ------------------------------------------------------------------ */
/* Remove and resize                                                   */
/* ------------------------------------------------------------------ */

struct snap_collect {
    const char *vol;
    json_t *keys, *layers;
};

static int collect_snap(void *opaque, const char *key, json_t *val)
{
    struct snap_collect *c = opaque;
    json_array_append_new(c->keys, json_string(key));
    json_array_append_new(c->layers, json_string(js(val, "layer")));
    return 0;
}

int vd_volume_remove(struct vd_store *st, const char *name)
{
    return st_volume_remove(st, name, NULL, NULL);
}

int st_volume_remove(struct vd_store *st, const char *name, st_txn_hook hook, void *opaque)
{
    MDB_txn *txn;
    json_t *v = NULL;
    struct vdi_layer *held = NULL;
    struct snap_collect sc = { name, json_array(), json_array() };
    json_t *ul = json_array();
    char top[37], parent[37] = "", prefix[VD_NAME_MAX + 2];
    int r;
    if ((r = st_lock(st)) < 0)
        goto out0;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_volume(txn, st, name, &v)) < 0)
        goto abort;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    if ((r = st_hold_layer(st, top, name, &held)) < 0)
        goto abort;
    if ((r = lay_parent(txn, st, top, parent)) < 0)
        goto abort;
    snprintf(prefix, sizeof(prefix), "%s/", name);
    if ((r = cat_each(txn, st->db_snap, prefix, collect_snap, &sc)) < 0)
        goto abort;
    size_t i;
    json_t *k;
    json_array_foreach(sc.keys, i, k) {
        if ((r = cat_del(txn, st->db_snap, json_string_value(k))) < 0 ||
            (r = lay_ref(txn, st, json_string_value(json_array_get(sc.layers, i)), -1, ul)) < 0)
            goto abort;
    }
    if ((r = cat_del(txn, st->db_vol, name)) < 0 || (r = lay_ref(txn, st, top, -1, ul)) < 0 ||
        (r = acc_drop(txn, st, name)) < 0 || (hook && (r = hook(txn, opaque)) < 0))
        goto abort;
    vdi_layer_put(held);
    held = NULL;
    if ((r = st_commit_and_unlink(st, txn, ul)) < 0)
        goto out;
    /* Layers left with one child and nothing else merge into it. */
    json_array_foreach(sc.layers, i, k)
        mg_simplify(st, json_string_value(k));
    if (parent[0])
        mg_simplify(st, parent);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    if (held)
        vdi_layer_put(held);
    st_unlock(st);
out0:
    json_decref(v);
    json_decref(sc.keys);
    json_decref(sc.layers);
    json_decref(ul);
    return r;
}

int vd_volume_resize(struct vd_store *st, const char *name, uint64_t new_size)
{
    MDB_txn *txn;
    json_t *v;
    struct vdi_layer *held = NULL;
    char top[37];
    int r;
    if (new_size == 0 || new_size % VD_SECTOR_SIZE || new_size > VD_MAX_SIZE)
        return vdi_err(-EINVAL, "size %llu is not a multiple of 512 up to 64 TiB",
                       (unsigned long long)new_size);
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, false, &txn)) < 0)
        goto out;
    r = st_get_volume(txn, st, name, &v);
    mdb_txn_abort(txn);
    if (r < 0)
        goto out;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    json_decref(v);
    if ((r = st_hold_layer(st, top, name, &held)) < 0)
        goto out;
    if (new_size < held->size) {
        r = vdi_err(-EINVAL, "volume '%s' is %llu bytes: shrinking is not supported", name,
                    (unsigned long long)held->size);
        goto out;
    }
    if (new_size == held->size)
        goto out;
    r = vdi_layer_grow(held, new_size);
    if (r == -ENOSPC) {
        /* The top's index cannot cover the new size: stack a larger delta. */
        vdi_layer_put(held);
        held = NULL;
        vdi_clear_err();
        r = st_push(st, name, "resize", NULL, new_size);
    }
out:
    if (held)
        vdi_layer_put(held);
    st_unlock(st);
    return r;
}

/* ------------------------------------------------------------------ */
/* Information                                                         */
/* ------------------------------------------------------------------ */

struct count {
    unsigned n;
};

static int count_one(void *opaque, const char *key, json_t *val)
{
    (void)key;
    (void)val;
    ((struct count *)opaque)->n++;
    return 0;
}

static int snap_layers(void *opaque, const char *key, json_t *val)
{
    (void)key;
    json_t *m = opaque;
    const char *l = js(val, "layer");
    json_t *n = json_object_get(m, l);
    json_object_set_new(m, l, json_integer(n ? json_integer_value(n) + 1 : 1));
    return 0;
}

/* Volume information.  allocated sums the data of the layers only this
 * volume uses: from the top down while a layer's references are its
 * child on this path and this volume's own snapshots. */
static int fill_volume(MDB_txn *txn, struct vd_store *st, const char *name, json_t *v,
                       struct vd_volume_info *info)
{
    char path[4096], cur[37], prefix[VD_NAME_MAX + 2];
    struct vd_layer_info li;
    json_t *snaps = json_object();
    int r;
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", name);
    snprintf(info->template_name, sizeof(info->template_name), "%s", js(v, "template"));
    info->template_version = (uint32_t)ju(v, "tver");
    info->create_time = ju(v, "ctime");
    const char *top = js(v, "top");
    vd_uuid_parse(top, &info->top);
    st_layer_path(st, top, path, sizeof(path));
    if ((r = vdi_layer_header_info(path, &li)) < 0)
        goto out;
    info->size = li.size;
    info->block_size = li.block_size;
    info->digest = li.digest;
    info->writer_pid = vdi_store_writer_pid(st, top);
    snprintf(prefix, sizeof(prefix), "%s/", name);
    if ((r = cat_each(txn, st->db_snap, prefix, snap_layers, snaps)) < 0)
        goto out;
    info->snapshots = (unsigned)json_object_size(snaps);
    {
        /* snaps maps layer -> count; the number of snapshots is the sum */
        const char *k;
        json_t *n;
        info->snapshots = 0;
        json_object_foreach(snaps, k, n)
            info->snapshots += (unsigned)json_integer_value(n);
    }
    snprintf(cur, sizeof(cur), "%s", top);
    bool owned = true;
    while (cur[0] && info->depth < 100000) {
        json_t *lo;
        info->depth++;
        if ((r = cat_get(txn, st->db_lay, cur, &lo)) < 0) {
            if (r == -ENOENT)
                r = vdi_err(-EUCLEAN, "catalog: layer %s is missing", cur);
            goto out;
        }
        json_t *n = json_object_get(snaps, cur);
        uint64_t own = (n ? (uint64_t)json_integer_value(n) : 0) + 1;
        if (owned && ju(lo, "refs") <= own) {
            st_layer_path(st, cur, path, sizeof(path));
            if (vd_layer_info(path, &li) == 0)
                info->allocated += li.allocated;
        } else {
            owned = false;
        }
        snprintf(cur, sizeof(cur), "%s", js(lo, "parent"));
        json_decref(lo);
    }
out:
    json_decref(snaps);
    return r;
}

int vd_volume_info(struct vd_store *st, const char *name, struct vd_volume_info *info)
{
    MDB_txn *txn;
    json_t *v;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    r = st_get_volume(txn, st, name, &v);
    if (r == -EPERM)
        r = vdi_err(-ENOENT, "'%s' is a template, not a volume", name);
    if (r == 0) {
        r = fill_volume(txn, st, name, v, info);
        json_decref(v);
    }
    mdb_txn_abort(txn);
    return r;
}

struct vlist {
    MDB_txn *txn;
    struct vd_store *st;
    struct vd_volume_info *a;
    size_t n, cap;
};

static int list_one(void *opaque, const char *key, json_t *val)
{
    struct vlist *l = opaque;
    int r = st_grow(&l->a, &l->cap, l->n, sizeof(*l->a));
    if (r < 0)
        return r;
    r = fill_volume(l->txn, l->st, key, val, &l->a[l->n]);
    if (r < 0)
        return r;
    l->n++;
    return 0;
}

int vd_volume_list(struct vd_store *st, struct vd_volume_info **out, size_t *n)
{
    struct vlist l = { .st = st };
    int r = cat_txn(st, false, &l.txn);
    if (r < 0)
        return r;
    r = cat_each(l.txn, st->db_vol, "", list_one, &l);
    mdb_txn_abort(l.txn);
    if (r < 0) {
        free(l.a);
        return r;
    }
    *out = l.a;
    *n = l.n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Opening for I/O                                                     */
/* ------------------------------------------------------------------ */

int st_template_layer(MDB_txn *txn, struct vd_store *st, const char *tpl, uint32_t ver,
                      char out[37], uint32_t *ver_out);

int vd_store_open_chain(struct vd_store *st, struct vd_ctx *ctx, const char *name,
                        unsigned flags, struct vd_chain **out)
{
    char base[VD_NAME_MAX + 1], layer[37], path[4096];
    const char *at = strchr(name, '@');
    size_t bl = at ? (size_t)(at - name) : strlen(name);
    MDB_txn *txn;
    json_t *o;
    int r;
    if (bl > VD_NAME_MAX)
        return vdi_err(-EINVAL, "name '%s' is too long", name);
    memcpy(base, name, bl);
    base[bl] = '\0';
    if ((r = cat_txn(st, false, &txn)) < 0)
        return r;
    r = cat_get(txn, st->db_vol, base, &o);
    if (r == 0) {
        if (!at) {
            snprintf(layer, sizeof(layer), "%s", js(o, "top"));
        } else {
            char key[2 * VD_NAME_MAX + 2];
            json_t *s;
            snprintf(key, sizeof(key), "%s/%s", base, at + 1);
            if (st_check_name("snapshot", at + 1) < 0 ||
                cat_get(txn, st->db_snap, key, &s) < 0) {
                r = vdi_err(-ENOENT, "volume '%s' has no snapshot named '%s'", base, at + 1);
            } else {
                snprintf(layer, sizeof(layer), "%s", js(s, "layer"));
                json_decref(s);
                if (flags & VD_OPEN_RDWR)
                    r = vdi_err(-EROFS, "snapshot '%s' is read-only", name);
            }
        }
        json_decref(o);
    } else if (r == -ENOENT) {
        uint32_t ver = 0;
        json_t *t;
        if (st_check_name("template", base) < 0 || cat_get(txn, st->db_tpl, base, &t) < 0) {
            mdb_txn_abort(txn);
            return vdi_err(-ENOENT, "no volume or template named '%s'", base);
        }
        json_decref(t);
        if (at) {
            const char *vs = at + 1 + (at[1] == 'v');
            uint64_t x = 0;
            bool ok = *vs != '\0';
            for (const char *q = vs; *q && ok; q++) {
                ok = *q >= '0' && *q <= '9' && x < UINT32_MAX;
                x = x * 10 + (uint64_t)(*q - '0');
            }
            if (!ok || x == 0 || x > UINT32_MAX) {
                mdb_txn_abort(txn);
                return vdi_err(-EINVAL, "'%s': a template version is a number (N or vN)", name);
            }
            ver = (uint32_t)x;
        }
        r = st_template_layer(txn, st, base, ver, layer, NULL);
        if (r == -ENOENT && !at)
            r = vdi_err(-ENOENT, "no volume or template named '%s'", base);
        if (r == 0 && (flags & VD_OPEN_RDWR))
            r = vdi_err(-EROFS, "'%s' is a template: templates cannot be changed", base);
    }
    mdb_txn_abort(txn);
    if (r < 0)
        return r;
    st_layer_path(st, layer, path, sizeof(path));
    struct vd_open_opts oo = { .flags = flags, .resolve = st_resolve, .resolve_opaque = st };
    r = vd_chain_open(ctx, path, &oo, out);
    if (r == -EBUSY) {
        int pid = vdi_store_writer_pid(st, layer);
        if (pid)
            r = vdi_err(-EBUSY, "volume '%s' is open for writing by process %d", base, pid);
        else
            r = vdi_err(-EBUSY, "volume '%s' is open for writing by another process", base);
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* Space                                                               */
/* ------------------------------------------------------------------ */

static int sum_sizes(void *opaque, const char *key, json_t *val)
{
    (void)key;
    struct vd_store_usage *u = ((void **)opaque)[0];
    struct vd_store *st = ((void **)opaque)[1];
    char path[4096];
    struct vd_layer_info li;
    st_layer_path(st, js(val, "top"), path, sizeof(path));
    struct vdi_layer *l;
    if (vdi_layer_open(path, false, true, &l) == 0) {
        li.size = l->size;
        u->virtual_size += li.size;
        vdi_layer_put(l);
    }
    u->volumes++;
    return 0;
}

int vd_store_usage(struct vd_store *st, struct vd_store_usage *u)
{
    MDB_txn *txn;
    memset(u, 0, sizeof(*u));
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    void *ctx[2] = { u, st };
    struct count t = { 0 }, s = { 0 }, l = { 0 };
    if ((r = cat_each(txn, st->db_vol, "", sum_sizes, ctx)) < 0 ||
        (r = cat_each(txn, st->db_tpl, "", count_one, &t)) < 0 ||
        (r = cat_each(txn, st->db_snap, "", count_one, &s)) < 0 ||
        (r = cat_each(txn, st->db_lay, "", count_one, &l)) < 0) {
        mdb_txn_abort(txn);
        return r;
    }
    mdb_txn_abort(txn);
    u->templates = t.n;
    u->snapshots = s.n;
    u->layers = l.n;
    DIR *d = opendir(st->layers_dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            char p[4096];
            struct stat sb;
            snprintf(p, sizeof(p), "%s/%s", st->layers_dir, de->d_name);
            if (de->d_name[0] != '.' && stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
                u->allocated += (uint64_t)sb.st_blocks * 512;
        }
        closedir(d);
    }
    char cat[4096];
    struct stat sb;
    snprintf(cat, sizeof(cat), "%s/catalog/data.mdb", st->path);
    if (stat(cat, &sb) == 0)
        u->allocated += (uint64_t)sb.st_blocks * 512;
    struct statvfs vfs;
    if (statvfs(st->path, &vfs) == 0) {
        u->fs_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        u->fs_size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    }
    return 0;
}
