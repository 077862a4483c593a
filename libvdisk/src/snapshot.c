/*
 * snapshot.c - snapshots of a volume: a snapshot names a frozen layer.
 * Create is a push (volume.c); rollback stacks a new delta on the
 * snapshot's layer; commit and remove drop the name and merge layers that
 * are left with a single child (merge.c).
 */
#include "store.h"

int st_push(struct vd_store *st, const char *vol, const char *kind, const char *name,
            uint64_t new_size);
int st_push_open(struct vd_store *st, const char *vol, const char *snap, struct vd_chain *c);

int vd_snapshot_create(struct vd_store *st, const char *vol, const char *snap)
{
    return st_push(st, vol, "snapshot", snap, 0);
}

int vd_snapshot_create_open(struct vd_store *st, const char *vol, const char *snap,
                            struct vd_chain *chain)
{
    return st_push_open(st, vol, snap, chain);
}

int st_get_snap(MDB_txn *txn, struct vd_store *st, const char *vol, const char *snap,
                    json_t **v, json_t **s, char key[2 * VD_NAME_MAX + 2])
{
    int r = st_get_volume(txn, st, vol, v);
    if (r < 0)
        return r;
    if ((r = st_check_name("snapshot", snap)) < 0) {
        json_decref(*v);
        *v = NULL;
        return r;
    }
    snprintf(key, 2 * VD_NAME_MAX + 2, "%s/%s", vol, snap);
    r = cat_get(txn, st->db_snap, key, s);
    if (r == -ENOENT)
        r = vdi_err(-ENOENT, "volume '%s' has no snapshot named '%s'", vol, snap);
    if (r < 0) {
        json_decref(*v);
        *v = NULL;
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* List                                                                */
/* ------------------------------------------------------------------ */

struct slist {
    struct vd_store *st;
    MDB_txn *txn;
    const char *vol;
    struct vd_snapshot_info *a;
    size_t n, cap;
};

static int list_snap(void *opaque, const char *key, json_t *val)
{
    struct slist *l = opaque;
    int r = st_grow(&l->a, &l->cap, l->n, sizeof(*l->a));
    if (r < 0)
        return r;
    struct vd_snapshot_info *s = &l->a[l->n];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", strchr(key, '/') + 1);
    s->create_time = ju(val, "ctime");
    vd_uuid_parse(js(val, "layer"), &s->layer);
    char path[4096];
    struct vd_layer_info li;
    st_layer_path(l->st, js(val, "layer"), path, sizeof(path));
    if (vd_layer_info(path, &li) == 0) {
        s->size = li.size;
        s->allocated = li.allocated;
    }
    l->n++;
    return 0;
}

/* Whether snapshot i names the layer whose UUID is the string uuid. */
static bool names_layer(const struct slist *l, size_t i, const char *uuid)
{
    vd_uuid u;
    return vd_uuid_parse(uuid, &u) == 0 && memcmp(u.b, l->a[i].layer.b, 16) == 0;
}

static int cmp_snap(const void *a, const void *b)
{
    const struct vd_snapshot_info *x = a, *y = b;
    if (x->create_time != y->create_time)
        return x->create_time < y->create_time ? -1 : 1;
    return strcmp(x->name, y->name);
}

int vd_snapshot_list(struct vd_store *st, const char *vol, struct vd_snapshot_info **out,
                     size_t *n)
{
    struct slist l = { .st = st, .vol = vol };
    json_t *v;
    char prefix[VD_NAME_MAX + 2], cur[37];
    int r = cat_txn(st, false, &l.txn);
    if (r < 0)
        return r;
    if ((r = st_get_volume(l.txn, st, vol, &v)) < 0)
        goto out;
    snprintf(prefix, sizeof(prefix), "%s/", vol);
    if ((r = cat_each(l.txn, st->db_snap, prefix, list_snap, &l)) < 0)
        goto out_v;
    /* Walk each snapshot's ancestry for its parent snapshot, and the
     * volume's for which snapshots it descends from. */
    snprintf(cur, sizeof(cur), "%s", js(v, "top"));
    for (unsigned guard = 0; cur[0] && guard < 100000; guard++) {
        for (size_t i = 0; i < l.n; i++)
            if (names_layer(&l, i, cur))
                l.a[i].current = true;
        if ((r = lay_parent(l.txn, st, cur, cur)) < 0)
            goto out_v;
    }
    for (size_t i = 0; i < l.n; i++) {
        char own[37];
        vd_uuid_format(&l.a[i].layer, own);
        if ((r = lay_parent(l.txn, st, own, cur)) < 0)
            goto out_v;
        for (unsigned guard = 0; cur[0] && guard < 100000 && !l.a[i].parent[0]; guard++) {
            for (size_t k = 0; k < l.n; k++) {
                if (k != i && names_layer(&l, k, cur)) {
                    snprintf(l.a[i].parent, sizeof(l.a[i].parent), "%s", l.a[k].name);
                    break;
                }
            }
            if (!l.a[i].parent[0] && (r = lay_parent(l.txn, st, cur, cur)) < 0)
                goto out_v;
        }
    }
    if (l.n > 1)
        qsort(l.a, l.n, sizeof(*l.a), cmp_snap);
out_v:
    json_decref(v);
out:
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
/* Rollback                                                            */
/* ------------------------------------------------------------------ */

int vd_snapshot_rollback(struct vd_store *st, const char *vol, const char *snap)
{
    MDB_txn *txn;
    json_t *v = NULL, *s = NULL, *ul = json_array();
    struct vdi_layer *held = NULL;
    char key[2 * VD_NAME_MAX + 2], top[37], layer[37], n[37], id[17], np[4096], lp[4096];
    char parent[37] = "";
    int r;
    if ((r = st_lock(st)) < 0)
        goto out0;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_snap(txn, st, vol, snap, &v, &s, key)) < 0)
        goto abort;
    snprintf(top, sizeof(top), "%s", js(v, "top"));
    snprintf(layer, sizeof(layer), "%s", js(s, "layer"));
    if ((r = lay_parent(txn, st, top, parent)) < 0 ||
        (r = st_hold_layer(st, top, vol, &held)) < 0 || (r = st_new_uuid(n)) < 0)
        goto abort;
    json_t *j = json_pack("{s:s, s:[s]}", "op", "create", "files", n);
    r = jnl_add(txn, st, j, id);
    json_decref(j);
    if (r < 0)
        goto abort;
    if ((r = cat_commit(txn)) < 0)
        goto out;
    vdi_step("rollback: journaled");
    st_layer_path(st, n, np, sizeof(np));
    st_layer_path(st, layer, lp, sizeof(lp));
    struct vd_create_opts co = { .digest = held->digest, .parent = lp };
    vd_uuid nu;
    vd_uuid_parse(n, &nu);
    co.uuid = &nu;
    if ((r = vd_layer_create(np, &co, NULL)) < 0)
        goto undo;
    vdi_step("rollback: delta made");
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto undo;
    json_object_set_new(v, "top", json_string(n));
    if ((r = lay_new(txn, st, n, layer, 1)) < 0 || (r = lay_ref(txn, st, layer, 1, NULL)) < 0 ||
        (r = cat_put(txn, st->db_vol, vol, v)) < 0 || (r = lay_ref(txn, st, top, -1, ul)) < 0 ||
        (r = jnl_del(txn, st, id)) < 0) {
        mdb_txn_abort(txn);
        goto undo;
    }
    vdi_layer_put(held);
    held = NULL;
    if ((r = st_commit_and_unlink(st, txn, ul)) < 0)
        goto out;
    if (parent[0])
        mg_simplify(st, parent);
    goto out;
undo:
    if (held) {
        vdi_layer_put(held);
        held = NULL;
    }
    st_undo(st, r);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    if (held)
        vdi_layer_put(held);
    st_unlock(st);
out0:
    json_decref(v);
    json_decref(s);
    json_decref(ul);
    return r;
}

/* ------------------------------------------------------------------ */
/* Commit and remove                                                   */
/* ------------------------------------------------------------------ */

int st_path_child(MDB_txn *txn, struct vd_store *st, const char *top, const char *layer,
                  char child[37])
{
    char cur[37];
    child[0] = '\0';
    snprintf(cur, sizeof(cur), "%s", top);
    while (cur[0]) {
        char p[37];
        int r = lay_parent(txn, st, cur, p);
        if (r < 0)
            return r;
        if (strcmp(p, layer) == 0) {
            snprintf(child, 37, "%s", cur);
            return 0;
        }
        snprintf(cur, sizeof(cur), "%s", p);
    }
    return 0;
}

/* Drops the snapshot's name; then its layer goes if nothing else uses it,
 * or merges with its only child.  commit: the snapshot must be in the
 * volume's current history, and the merge goes downward (time
 * proportional to the data written after the snapshot). */
static int drop_snapshot(struct vd_store *st, const char *vol, const char *snap, bool commit,
                         vd_progress_fn progress, void *opaque)
{
    MDB_txn *txn;
    json_t *v = NULL, *s = NULL, *ul = json_array(), *jo = NULL;
    struct vdi_layer *held = NULL;
    char key[2 * VD_NAME_MAX + 2], layer[37], child[37] = "", id[17] = "";
    char parent[37] = "";
    int r;
    if ((r = st_lock(st)) < 0)
        goto out0;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_get_snap(txn, st, vol, snap, &v, &s, key)) < 0)
        goto abort;
    snprintf(layer, sizeof(layer), "%s", js(s, "layer"));
    if ((r = lay_parent(txn, st, layer, parent)) < 0)
        goto abort;
    if (mg_layer_busy(st, layer)) {
        /* An online commit holds it (commit.c). */
        r = vdi_err(-EBUSY, "snapshot '%s' of volume '%s' is being committed by the server; "
                    "wait for it or cancel it", snap, vol);
        goto abort;
    }
    if (commit) {
        if ((r = st_path_child(txn, st, js(v, "top"), layer, child)) < 0)
            goto abort;
        if (!child[0]) {
            r = vdi_err(-EINVAL, "snapshot '%s' is not in the current history of volume '%s' "
                        "(use snapshot rm)", snap, vol);
            goto abort;
        }
        /* The volume's top may be rewritten: no writer may have it. */
        if ((r = st_hold_layer(st, js(v, "top"), vol, &held)) < 0)
            goto abort;
    }
    if ((r = cat_del(txn, st->db_snap, key)) < 0 || (r = lay_ref(txn, st, layer, -1, ul)) < 0)
        goto abort;
    if (json_array_size(ul) == 0) {
        json_t *lo;
        char one[37];
        if ((r = cat_get(txn, st->db_lay, layer, &lo)) < 0)
            goto abort;
        uint64_t refs = ju(lo, "refs");
        json_decref(lo);
        int nch = lay_children(txn, st, layer, one);
        if (nch < 0) {
            r = nch;
            goto abort;
        }
        if (refs == 1 && nch == 1) {
            if ((r = mg_plan(st, txn, layer, one, commit, id)) < 0)
                goto abort;
        } else if (commit) {
            r = vdi_err(-EBUSY, "snapshot '%s' cannot be merged: its data is shared "
                        "(another snapshot branch, a template or a clone uses it); "
                        "use snapshot rm", snap);
            goto abort;
        }
    }
    if ((r = st_commit_and_unlink(st, txn, ul)) < 0)
        goto out;
    if (id[0]) {
        vdi_step("snapshot dropped, merge planned");
        if ((r = cat_txn(st, false, &txn)) < 0)
            goto out;
        r = cat_get(txn, st->db_jnl, id, &jo);
        mdb_txn_abort(txn);
        /* A downward merge reads the top and renames over it: keep other
         * writers out until it is done.  An upward one writes into the
         * child itself and takes the lock on its own. */
        if (r == 0 && held && strcmp(js(jo, "mode"), "down") != 0) {
            vdi_layer_put(held);
            held = NULL;
        }
        if (r == 0) {
            if (progress)
                progress(opaque, 0, 1);
            r = mg_resume(st, id, jo, held != NULL);
            if (r == -EBUSY) {
                /* The snapshot is gone; the merge waits in the journal
                 * until the layer is free (the next store open). */
                vdi_clear_err();
                r = 0;
            }
            if (progress && r == 0)
                progress(opaque, 1, 1);
        }
    } else if (parent[0] && json_array_size(ul)) {
        mg_simplify(st, parent);
    }
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    if (held)
        vdi_layer_put(held);
    st_unlock(st);
out0:
    json_decref(v);
    json_decref(s);
    json_decref(ul);
    json_decref(jo);
    return r;
}

int vd_snapshot_commit(struct vd_store *st, const char *vol, const char *snap,
                       vd_progress_fn progress, void *opaque)
{
    return drop_snapshot(st, vol, snap, true, progress, opaque);
}

int vd_snapshot_remove(struct vd_store *st, const char *vol, const char *snap)
{
    return drop_snapshot(st, vol, snap, false, NULL, NULL);
}
