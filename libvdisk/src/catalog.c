/*
 * catalog.c - the store's catalog: JSON records in LMDB databases, layer
 * reference counts, and the journal (see store.h for the schema).
 */
#include <inttypes.h>

#include "store.h"

static int mdb_errno(int rc)
{
    switch (rc) {
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return -ENOSPC;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return -EUCLEAN;
    default:
        return rc > 0 ? -rc : (rc < 0 ? -EIO : 0);
    }
}

int cat_txn(struct vd_store *st, bool write, MDB_txn **txn)
{
    int rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, txn);
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    return 0;
}

int cat_commit(MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: commit: %s", mdb_strerror(rc));
    return 0;
}

int cat_get(MDB_txn *txn, MDB_dbi db, const char *key, json_t **out)
{
    MDB_val k = { strlen(key), (void *)key }, v;
    int rc = mdb_get(txn, db, &k, &v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    json_error_t err;
    *out = json_loadb(v.mv_data, v.mv_size, 0, &err);
    if (!*out || !json_is_object(*out)) {
        json_decref(*out);
        return vdi_err(-EUCLEAN, "catalog: damaged record '%s': %s", key, err.text);
    }
    return 0;
}

int cat_put(MDB_txn *txn, MDB_dbi db, const char *key, json_t *val)
{
    char *s = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s)
        return vdi_err(-ENOMEM, "out of memory");
    MDB_val k = { strlen(key), (void *)key }, v = { strlen(s), s };
    int rc = mdb_put(txn, db, &k, &v, 0);
    free(s);
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    return 0;
}

int cat_del(MDB_txn *txn, MDB_dbi db, const char *key)
{
    MDB_val k = { strlen(key), (void *)key };
    int rc = mdb_del(txn, db, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    return 0;
}

int cat_each(MDB_txn *txn, MDB_dbi db, const char *prefix, cat_each_fn fn, void *opaque)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, db, &cur);
    if (rc)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    size_t pl = strlen(prefix);
    MDB_val k = { pl, (void *)prefix }, v;
    int r = 0;
    rc = mdb_cursor_get(cur, &k, &v, pl ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl) != 0)
            break;
        char key[512];
        if (k.mv_size >= sizeof(key)) {
            r = vdi_err(-EUCLEAN, "catalog: key too long");
            break;
        }
        memcpy(key, k.mv_data, k.mv_size);
        key[k.mv_size] = '\0';
        json_error_t err;
        json_t *val = json_loadb(v.mv_data, v.mv_size, 0, &err);
        if (!val || !json_is_object(val)) {
            json_decref(val);
            r = vdi_err(-EUCLEAN, "catalog: damaged record '%s'", key);
            break;
        }
        r = fn(opaque, key, val);
        json_decref(val);
        if (r)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (r < 0)
        return r;
    if (rc && rc != MDB_NOTFOUND)
        return vdi_err(mdb_errno(rc), "catalog: %s", mdb_strerror(rc));
    return 0;
}

int st_grow(void *arrayp, size_t *cap, size_t n, size_t elem)
{
    void **a = arrayp;
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    void *na = realloc(*a, nc * elem);
    if (!na)
        return vdi_err(-ENOMEM, "out of memory");
    *a = na;
    *cap = nc;
    return 0;
}

const char *js(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

uint64_t ju(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0
               ? (uint64_t)json_integer_value(v) : 0;
}

/* ------------------------------------------------------------------ */
/* Layers                                                              */
/* ------------------------------------------------------------------ */

int lay_new(MDB_txn *txn, struct vd_store *st, const char *uuid, const char *parent,
            unsigned refs)
{
    json_t *o = json_pack("{s:s, s:I}", "parent", parent ? parent : "",
                          "refs", (json_int_t)refs);
    if (!o)
        return vdi_err(-ENOMEM, "out of memory");
    int r = cat_put(txn, st->db_lay, uuid, o);
    json_decref(o);
    return r;
}

/* Adds delta to the layer's count.  At zero the record goes, the parent
 * loses a reference (recursively), and the UUID joins unlink_list. */
int lay_ref(MDB_txn *txn, struct vd_store *st, const char *uuid, int delta,
            json_t *unlink_list)
{
    char cur[37];
    snprintf(cur, sizeof(cur), "%s", uuid);
    for (;;) {
        json_t *o;
        int r = cat_get(txn, st->db_lay, cur, &o);
        if (r == -ENOENT)
            return vdi_err(-EUCLEAN, "catalog: layer %s is missing", cur);
        if (r < 0)
            return r;
        int64_t refs = (int64_t)ju(o, "refs") + delta;
        if (refs > 0) {
            json_object_set_new(o, "refs", json_integer(refs));
            r = cat_put(txn, st->db_lay, cur, o);
            json_decref(o);
            return r;
        }
        char parent[37];
        snprintf(parent, sizeof(parent), "%s", js(o, "parent"));
        json_decref(o);
        if ((r = cat_del(txn, st->db_lay, cur)) < 0)
            return r;
        if (unlink_list)
            json_array_append_new(unlink_list, json_string(cur));
        if (!parent[0])
            return 0;
        snprintf(cur, sizeof(cur), "%s", parent);
        delta = -1;
    }
}

int lay_parent(MDB_txn *txn, struct vd_store *st, const char *uuid, char out[37])
{
    json_t *o;
    int r = cat_get(txn, st->db_lay, uuid, &o);
    if (r == -ENOENT)
        return vdi_err(-EUCLEAN, "catalog: layer %s is missing", uuid);
    if (r < 0)
        return r;
    snprintf(out, 37, "%s", js(o, "parent"));
    json_decref(o);
    return 0;
}

struct children {
    const char *uuid;
    unsigned n;
    char *one;
};

static int count_child(void *opaque, const char *key, json_t *val)
{
    struct children *c = opaque;
    if (strcmp(js(val, "parent"), c->uuid) == 0) {
        if (c->n++ == 0 && c->one)
            snprintf(c->one, 37, "%s", key);
    }
    return 0;
}

int lay_children(MDB_txn *txn, struct vd_store *st, const char *uuid, char one[37])
{
    struct children c = { uuid, 0, one };
    if (one)
        one[0] = '\0';
    int r = cat_each(txn, st->db_lay, "", count_child, &c);
    return r < 0 ? r : (int)c.n;
}

/* ------------------------------------------------------------------ */
/* Journal                                                             */
/* ------------------------------------------------------------------ */

struct last_key {
    uint64_t max;
};

static int find_max(void *opaque, const char *key, json_t *val)
{
    (void)val;
    struct last_key *l = opaque;
    uint64_t v = strtoull(key, NULL, 16);
    if (v > l->max)
        l->max = v;
    return 0;
}

int jnl_add(MDB_txn *txn, struct vd_store *st, json_t *entry, char id[17])
{
    struct last_key l = { 0 };
    int r = cat_each(txn, st->db_jnl, "", find_max, &l);
    if (r < 0)
        return r;
    snprintf(id, 17, "%016" PRIx64, l.max + 1);
    return cat_put(txn, st->db_jnl, id, entry);
}

int jnl_del(MDB_txn *txn, struct vd_store *st, const char *id)
{
    int r = cat_del(txn, st->db_jnl, id);
    return r == -ENOENT ? 0 : r;
}
