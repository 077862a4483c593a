/*
 * recover.c - finishing or undoing the operations a crash interrupted.
 *
 * Each journal entry says what an operation was about to do.  Entries
 * whose catalog change never committed are undone (files they created are
 * removed, a frozen top is thawed); merges and flattens, which only ever
 * move data where reads do not see a change, are run again to the end.
 */
#include <unistd.h>

#include "store.h"

int st_flatten_resume(struct vd_store *st, const char *id, json_t *j, vd_progress_fn progress,
                      void *opaque);

struct entries {
    json_t *ids, *vals;
};

static int collect(void *opaque, const char *key, json_t *val)
{
    struct entries *e = opaque;
    json_array_append_new(e->ids, json_string(key));
    json_array_append(e->vals, val);
    return 0;
}

static int drop_entry(struct vd_store *st, const char *id)
{
    MDB_txn *txn;
    int r = cat_txn(st, true, &txn);
    if (r < 0)
        return r;
    if ((r = jnl_del(txn, st, id)) < 0) {
        mdb_txn_abort(txn);
        return r;
    }
    return cat_commit(txn);
}

/* Removes the files of j["files"] that the catalog does not know. */
static int undo_create(struct vd_store *st, json_t *files)
{
    MDB_txn *txn;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        json_t *o;
        if (cat_get(txn, st->db_lay, json_string_value(f), &o) == 0) {
            json_decref(o);
            continue;
        }
        char path[4096];
        st_layer_path(st, json_string_value(f), path, sizeof(path));
        unlink(path);
    }
    mdb_txn_abort(txn);
    return 0;
}

static int undo_push(struct vd_store *st, json_t *j)
{
    MDB_txn *txn;
    json_t *v;
    json_t *files = json_pack("[s]", js(j, "new"));
    int r = undo_create(st, files);
    json_decref(files);
    if (r < 0 || (r = cat_txn(st, false, &txn)) < 0)
        return r;
    bool thaw = cat_get(txn, st->db_vol, js(j, "vol"), &v) == 0 &&
                strcmp(js(v, "top"), js(j, "top")) == 0;
    if (thaw)
        json_decref(v);
    mdb_txn_abort(txn);
    if (thaw) {
        /* The old top is still the volume's writable layer. */
        char path[4096];
        st_layer_path(st, js(j, "top"), path, sizeof(path));
        if (access(path, F_OK) == 0 && (r = mg_rewrite_header(path, NULL, NULL, NULL, 0, 0)) < 0)
            return r;
    }
    return 0;
}

int st_recover(struct vd_store *st)
{
    MDB_txn *txn;
    struct entries e = { json_array(), json_array() };
    int r;
    /* An operation running in another process holds the lock, and its
     * journal entries are not leftovers: recover another time. */
    if ((r = st_trylock(st)) == -EBUSY) {
        r = 0;
        goto out0;
    }
    if (r < 0)
        goto out0;
    if ((r = cat_txn(st, false, &txn)) < 0)
        goto out;
    r = cat_each(txn, st->db_jnl, "", collect, &e);
    mdb_txn_abort(txn);
    if (r < 0)
        goto out;
    size_t i;
    json_t *idv;
    json_array_foreach(e.ids, i, idv) {
        const char *id = json_string_value(idv);
        json_t *j = json_array_get(e.vals, i);
        const char *op = js(j, "op");
        if (strcmp(op, "create") == 0) {
            r = undo_create(st, json_object_get(j, "files"));
        } else if (strcmp(op, "push") == 0) {
            r = undo_push(st, j);
        } else if (strcmp(op, "unlink") == 0) {
            st_unlink_layers(st, json_object_get(j, "files"));
            r = 0;
        } else if (strcmp(op, "merge") == 0) {
            r = mg_resume(st, id, j, false);
            if (r == -EBUSY) {
                r = 0;   /* a layer is in use: finish it on a later open */
                continue;
            }
            if (r == 0)
                continue;   /* mg_resume removed the entry */
        } else if (strcmp(op, "commit-online") == 0) {
            r = cm_recover(st, j);
            if (r == -EBUSY) {
                r = 0;   /* the process running it is alive */
                continue;
            }
        } else if (strcmp(op, "flatten") == 0) {
            r = st_flatten_resume(st, id, j, NULL, NULL);
            if (r == -EBUSY) {
                r = 0;
                continue;
            }
            if (r == 0)
                continue;
        } else {
            r = vdi_err(-EUCLEAN, "journal: unknown operation '%s'", op);
        }
        if (r < 0)
            goto out;
        if ((r = drop_entry(st, id)) < 0)
            goto out;
    }
out:
    st_unlock(st);
out0:
    json_decref(e.ids);
    json_decref(e.vals);
    return r;
}
