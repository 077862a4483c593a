/*
 * pool.c - desktop pools: a template version and a policy, and the linked
 * clones made from it (vdisk.h, "desktop pools").
 *
 * The pool's record in the catalog (store.h, db "pools") lists its clones
 * and the state of each.  Making a clone and recording it happen in one
 * catalog transaction (st_clone's hook), and so do removing one and
 * forgetting it (st_volume_remove's hook): a crash leaves no clone the pool
 * does not know and no record of a clone that is gone.  Taking a spare for
 * a session is one write transaction, so two sessions never get the same
 * clone.
 */
#include <time.h>

#include "store.h"

static const char *state_name[] = { "spare", "session", "idle" };

static int check_pool_name(const char *name)
{
    int r = st_check_name("pool", name);
    if (r == 0 && strlen(name) > VD_POOL_NAME_MAX)
        r = vdi_err(-EINVAL, "pool name '%s' is longer than %d characters", name,
                    VD_POOL_NAME_MAX);
    return r;
}

static int get_pool(MDB_txn *txn, struct vd_store *st, const char *name, json_t **out)
{
    int r = check_pool_name(name);
    if (r < 0)
        return r;
    r = cat_get(txn, st->db_pool, name, out);
    if (r == -ENOENT)
        r = vdi_err(-ENOENT, "no pool named '%s'", name);
    return r;
}

static enum vd_pool_state state_of(json_t *c)
{
    const char *s = js(c, "state");
    for (unsigned i = 0; i < 3; i++)
        if (strcmp(s, state_name[i]) == 0)
            return (enum vd_pool_state)i;
    return VD_POOL_SPARE;
}

static bool persistent(json_t *p)
{
    return strcmp(js(p, "mode"), "persistent") == 0;
}

static void fill_info(const char *name, json_t *p, struct vd_pool_info *i)
{
    memset(i, 0, sizeof(*i));
    snprintf(i->name, sizeof(i->name), "%s", name);
    snprintf(i->template_name, sizeof(i->template_name), "%s", js(p, "template"));
    i->version = (uint32_t)ju(p, "version");
    i->size = (unsigned)ju(p, "size");
    i->spares = (unsigned)ju(p, "spares");
    i->mode = persistent(p) ? VD_POOL_PERSISTENT : VD_POOL_EPHEMERAL;
    i->create_time = ju(p, "ctime");
    const char *k;
    json_t *c;
    json_object_foreach(json_object_get(p, "clones"), k, c) {
        i->clones++;
        enum vd_pool_state s = state_of(c);
        if (s == VD_POOL_SESSION)
            i->sessions++;
        else if (s == VD_POOL_SPARE && ju(c, "v") == i->version)
            i->ready++;
    }
}

/* ---- changing a record inside another operation's transaction ---- */

enum { DROP_ANY, DROP_SPARE, DROP_NO_SESSION };

struct edit {
    struct vd_store *st;
    const char *pool, *vol;
    json_t *clone;                /* the clone's new record, or NULL: forget it */
    bool bump;                    /* the name counter goes past vol's number */
    int only;                     /* forgetting it: only in that case (DROP_*) */
};

static int edit_hook(MDB_txn *txn, void *opaque)
{
    struct edit *e = opaque;
    json_t *p;
    int r = get_pool(txn, e->st, e->pool, &p);
    if (r < 0)
        return r;
    json_t *cl = json_object_get(p, "clones"), *old = e->vol ? json_object_get(cl, e->vol) : NULL;
    /* What was read before this transaction may have changed since (another
     * process took the spare, or made clones). */
    if (!e->clone && old && ((e->only == DROP_SPARE && state_of(old) != VD_POOL_SPARE) ||
                             (e->only == DROP_NO_SESSION && state_of(old) == VD_POOL_SESSION)))
        r = vdi_err(-EBUSY, "pool '%s': clone %s went into a session meanwhile", e->pool, e->vol);
    else if (e->clone && e->bump && json_object_size(cl) >= ju(p, "size"))
        r = vdi_err(-ENOSPC, "pool '%s' is at its size (%llu clones)", e->pool,
                    (unsigned long long)ju(p, "size"));
    else if (e->clone && e->bump && state_of(e->clone) == VD_POOL_SPARE) {
        struct vd_pool_info i;
        fill_info(e->pool, p, &i);
        if (i.ready >= i.spares)   /* another process filled it meanwhile */
            r = vdi_err(-EALREADY, "pool '%s' has its spares", e->pool);
    }
    if (r < 0) {
        json_decref(p);
        return r;
    }
    if (e->clone)
        json_object_set(cl, e->vol, e->clone);
    else if (e->vol)
        json_object_del(cl, e->vol);
    if (e->bump)
        json_object_set_new(p, "next", json_integer((json_int_t)ju(p, "next") + 1));
    r = cat_put(txn, e->st->db_pool, e->pool, p);
    json_decref(p);
    return r;
}

/* Runs fn in a write transaction of its own, under the store's lock. */
static int in_txn(struct vd_store *st, st_txn_hook fn, void *opaque)
{
    MDB_txn *txn;
    int r = st_lock(st);
    if (r < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) == 0) {
        r = fn(txn, opaque);
        r = r == 0 ? cat_commit(txn) : (mdb_txn_abort(txn), r);
    }
    st_unlock(st);
    return r;
}

static json_t *clone_rec(uint32_t v, enum vd_pool_state s, const char *user, const char *holder)
{
    json_t *c = json_pack("{s:I,s:s,s:I}", "v", (json_int_t)v, "state", state_name[s],
                          "since", (json_int_t)time(NULL));
    if (c && user && *user)
        json_object_set_new(c, "user", json_string(user));
    if (c && holder && *holder)
        json_object_set_new(c, "holder", json_string(holder));
    return c;
}

/* Makes one clone of the pool in state s (a new name each time). */
static int make_clone(struct vd_store *st, const char *name, enum vd_pool_state s,
                      const char *user, const char *holder, char vol[VD_NAME_MAX + 1])
{
    for (unsigned tries = 0; tries < 64; tries++) {
        MDB_txn *txn;
        json_t *p;
        int r = cat_txn(st, false, &txn);
        if (r < 0)
            return r;
        r = get_pool(txn, st, name, &p);
        mdb_txn_abort(txn);
        if (r < 0)
            return r;
        char tpl[VD_NAME_MAX + 1];
        snprintf(tpl, sizeof(tpl), "%s", js(p, "template"));
        uint32_t v = (uint32_t)ju(p, "version");
        snprintf(vol, VD_NAME_MAX + 1, "%s.%04llu", name, (unsigned long long)ju(p, "next"));
        json_decref(p);
        struct edit e = { st, name, vol, clone_rec(v, s, user, holder), true, DROP_ANY };
        if (!e.clone)
            return vdi_err(-ENOMEM, "out of memory");
        r = st_clone(st, tpl, v, vol, 0, NULL, NULL, edit_hook, &e);
        json_decref(e.clone);
        if (r != -EEXIST)
            return r;
        /* Someone named a volume like our next clone: skip the number. */
        struct edit skip = { st, name, NULL, NULL, true, DROP_ANY };
        if ((r = in_txn(st, edit_hook, &skip)) < 0)
            return r;
        vdi_clear_err();
    }
    return vdi_err(-EEXIST, "pool '%s': no free name for a new clone", name);
}

/* Removes clone vol and forgets it (only: DROP_*, checked in the
 * transaction that does it). */
static int drop_clone(struct vd_store *st, const char *name, const char *vol, int only)
{
    struct edit e = { st, name, vol, NULL, false, only };
    int r = st_volume_remove(st, vol, edit_hook, &e);
    if (r == -ENOENT) {
        /* The volume went another way: forget it alone. */
        vdi_clear_err();
        r = in_txn(st, edit_hook, &e);
    }
    return r;
}

/* ---- administration ---- */

int vd_pool_create(struct vd_store *st, const char *name, const char *tpl, uint32_t version,
                   unsigned size, unsigned spares, enum vd_pool_mode mode)
{
    MDB_txn *txn;
    json_t *old = NULL;
    char layer[37];
    uint32_t ver;
    vdi_clear_err();
    int r = check_pool_name(name);
    if (r < 0)
        return r;
    if (size < 1 || spares > size)
        return vdi_err(-EINVAL, "pool '%s': the size must be at least 1 and the spares at "
                       "most the size", name);
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = st_template_layer(txn, st, tpl, version, layer, &ver)) < 0)
        goto abort;
    if (cat_get(txn, st->db_pool, name, &old) == 0) {
        json_decref(old);
        r = vdi_err(-EEXIST, "a pool named '%s' exists", name);
        goto abort;
    }
    json_t *p = json_pack("{s:s,s:I,s:I,s:I,s:s,s:I,s:I,s:{}}", "template", tpl, "version",
                          (json_int_t)ver, "size", (json_int_t)size, "spares",
                          (json_int_t)spares, "mode",
                          mode == VD_POOL_PERSISTENT ? "persistent" : "ephemeral", "ctime",
                          (json_int_t)time(NULL), "next", (json_int_t)1, "clones");
    r = p ? cat_put(txn, st->db_pool, name, p) : vdi_err(-ENOMEM, "out of memory");
    json_decref(p);
    if (r < 0)
        goto abort;
    r = cat_commit(txn);
    st_unlock(st);
    if (r == 0)
        r = vd_pool_fill(st, name, NULL, NULL);
    return r;
abort:
    mdb_txn_abort(txn);
out:
    st_unlock(st);
    return r;
}

/* The pool's record (a reference), read in a transaction of its own. */
static int read_pool(struct vd_store *st, const char *name, json_t **p)
{
    MDB_txn *txn;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    r = get_pool(txn, st, name, p);
    mdb_txn_abort(txn);
    return r;
}

int vd_pool_remove(struct vd_store *st, const char *name)
{
    json_t *p, *c;
    const char *k;
    vdi_clear_err();
    int r = read_pool(st, name, &p);
    if (r < 0)
        return r;
    char busy[512] = "";
    size_t len = 0;
    unsigned n = 0;
    json_object_foreach(json_object_get(p, "clones"), k, c) {
        if (state_of(c) != VD_POOL_SESSION)
            continue;
        if (n++ < 4 && len < sizeof(busy))
            len += (size_t)snprintf(busy + len, sizeof(busy) - len, "%s%s (%s)", n > 1 ? ", " : "",
                                    k, js(c, "holder"));
    }
    if (n) {
        json_decref(p);
        return vdi_err(-EBUSY, "pool '%s' has %u session(s): %s%s", name, n, busy,
                       n > 4 ? ", ..." : "");
    }
    json_object_foreach(json_object_get(p, "clones"), k, c) {
        if ((r = drop_clone(st, name, k, DROP_NO_SESSION)) < 0)
            break;
    }
    json_decref(p);
    if (r < 0)
        return r;
    MDB_txn *txn;
    if ((r = st_lock(st)) < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) == 0) {
        json_t *q;
        if ((r = get_pool(txn, st, name, &q)) == 0) {
            if (json_object_size(json_object_get(q, "clones")))
                r = vdi_err(-EBUSY, "pool '%s' got new clones meanwhile: try again", name);
            else if ((r = cat_del(txn, st->db_pool, name)) == 0) {
                char key[VD_NAME_MAX + 6];
                snprintf(key, sizeof(key), "pool/%s", name);
                r = acc_drop(txn, st, key);   /* its rules go with it */
            }
            json_decref(q);
        }
        r = r == 0 ? cat_commit(txn) : (mdb_txn_abort(txn), r);
    }
    st_unlock(st);
    return r;
}

struct plist {
    struct vd_pool_info *a;
    size_t n, cap;
};

static int list_one(void *opaque, const char *key, json_t *val)
{
    struct plist *l = opaque;
    if (st_grow(&l->a, &l->cap, l->n, sizeof(*l->a)) < 0)
        return vdi_err(-ENOMEM, "out of memory");
    fill_info(key, val, &l->a[l->n++]);
    return 0;
}

int vd_pool_list(struct vd_store *st, struct vd_pool_info **out, size_t *n)
{
    MDB_txn *txn;
    struct plist l = { 0 };
    vdi_clear_err();
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    r = cat_each(txn, st->db_pool, "", list_one, &l);
    mdb_txn_abort(txn);
    if (r < 0) {
        free(l.a);
        return r;
    }
    *out = l.a;
    *n = l.n;
    return 0;
}

int vd_pool_info(struct vd_store *st, const char *name, struct vd_pool_info *info,
                 struct vd_pool_clone **clones, size_t *n)
{
    json_t *p, *c;
    const char *k;
    vdi_clear_err();
    int r = read_pool(st, name, &p);
    if (r < 0)
        return r;
    fill_info(name, p, info);
    if (clones) {
        size_t cnt = json_object_size(json_object_get(p, "clones")), i = 0;
        struct vd_pool_clone *a = calloc(cnt ? cnt : 1, sizeof(*a));
        if (!a) {
            json_decref(p);
            return vdi_err(-ENOMEM, "out of memory");
        }
        json_object_foreach(json_object_get(p, "clones"), k, c) {
            snprintf(a[i].volume, sizeof(a[i].volume), "%s", k);
            snprintf(a[i].user, sizeof(a[i].user), "%s", js(c, "user"));
            snprintf(a[i].holder, sizeof(a[i].holder), "%s", js(c, "holder"));
            a[i].version = (uint32_t)ju(c, "v");
            a[i].state = state_of(c);
            a[i].since = ju(c, "since");
            i++;
        }
        *clones = a;
        *n = cnt;
    }
    json_decref(p);
    return 0;
}

struct recompose {
    struct vd_store *st;
    const char *name;
    uint32_t version;
};

static int recompose_hook(MDB_txn *txn, void *opaque)
{
    struct recompose *rc = opaque;
    char layer[37];
    uint32_t ver;
    json_t *p;
    int r = get_pool(txn, rc->st, rc->name, &p);
    if (r < 0)
        return r;
    if ((r = st_template_layer(txn, rc->st, js(p, "template"), rc->version, layer, &ver)) == 0) {
        json_object_set_new(p, "version", json_integer((json_int_t)ver));
        r = cat_put(txn, rc->st->db_pool, rc->name, p);
    }
    json_decref(p);
    return r;
}

int vd_pool_recompose(struct vd_store *st, const char *name, uint32_t version)
{
    struct recompose rc = { st, name, version };
    vdi_clear_err();
    return in_txn(st, recompose_hook, &rc);
}

/* ---- the broker ---- */

int vd_pool_fill(struct vd_store *st, const char *name, unsigned *made, unsigned *dropped)
{
    json_t *p, *c;
    const char *k;
    unsigned m = 0, d = 0;
    char vol[VD_NAME_MAX + 1];
    vdi_clear_err();
    int r = read_pool(st, name, &p);
    if (r < 0)
        return r;
    uint32_t ver = (uint32_t)ju(p, "version");
    json_object_foreach(json_object_get(p, "clones"), k, c) {
        if (state_of(c) == VD_POOL_SPARE && ju(c, "v") != ver) {
            r = drop_clone(st, name, k, DROP_SPARE);
            if (r == -EBUSY) {
                vdi_clear_err();   /* taken meanwhile: it is a session's now */
                continue;
            }
            if (r < 0)
                goto out;
            d++;
        }
    }
    struct vd_pool_info i;
    json_decref(p);
    if ((r = read_pool(st, name, &p)) < 0)
        goto out0;
    fill_info(name, p, &i);
    while (i.ready < i.spares && i.clones < i.size) {
        if ((r = make_clone(st, name, VD_POOL_SPARE, NULL, NULL, vol)) < 0) {
            if (r == -ENOSPC || r == -EALREADY) {
                vdi_clear_err();   /* another process filled it meanwhile */
                r = 0;
            }
            goto out;
        }
        m++;
        i.ready++;
        i.clones++;
    }
out:
    json_decref(p);
out0:
    if (made)
        *made = m;
    if (dropped)
        *dropped = d;
    return r;
}

/* Sets clone vol of the pool to state s (user and holder kept if NULL). */
static int set_state(MDB_txn *txn, struct vd_store *st, const char *name, json_t *p,
                     const char *vol, enum vd_pool_state s, const char *user, const char *holder)
{
    json_t *c = json_object_get(json_object_get(p, "clones"), vol);
    json_object_set_new(c, "state", json_string(state_name[s]));
    json_object_set_new(c, "since", json_integer((json_int_t)time(NULL)));
    if (user)
        json_object_set_new(c, "user", json_string(user));
    if (holder && *holder)
        json_object_set_new(c, "holder", json_string(holder));
    else if (s != VD_POOL_SESSION)
        json_object_del(c, "holder");
    return cat_put(txn, st->db_pool, name, p);
}

int vd_pool_take(struct vd_store *st, const char *name, const char *user, const char *holder,
                 char vol[VD_NAME_MAX + 1])
{
    MDB_txn *txn;
    json_t *p, *c;
    const char *k;
    vdi_clear_err();
    int r = st_lock(st);
    if (r < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto out;
    if ((r = get_pool(txn, st, name, &p)) < 0)
        goto abort;
    if (persistent(p) != (user != NULL)) {
        r = user ? vdi_err(-EINVAL, "pool '%s' is ephemeral: its export is pool/%s", name, name)
                 : vdi_err(-EINVAL, "pool '%s' is persistent: connect to pool/%s/USER", name,
                           name);
        goto abort_p;
    }
    if (user && (r = st_check_name("user", user)) < 0)
        goto abort_p;
    const char *pick = NULL;
    uint32_t ver = (uint32_t)ju(p, "version");
    json_object_foreach(json_object_get(p, "clones"), k, c) {
        if (user && strcmp(js(c, "user"), user) == 0) {
            pick = k;      /* the user's own, whatever its state */
            break;
        }
        if (!pick && state_of(c) == VD_POOL_SPARE && ju(c, "v") == ver)
            pick = k;
    }
    if (!pick) {
        /* A spare of an older version will do before a refusal. */
        json_object_foreach(json_object_get(p, "clones"), k, c)
            if (!pick && state_of(c) == VD_POOL_SPARE)
                pick = k;
    }
    if (pick) {
        snprintf(vol, VD_NAME_MAX + 1, "%s", pick);
        r = set_state(txn, st, name, p, pick, VD_POOL_SESSION, user, holder);
        json_decref(p);
        r = r == 0 ? cat_commit(txn) : (mdb_txn_abort(txn), r);
        goto out;
    }
    struct vd_pool_info i;
    fill_info(name, p, &i);
    json_decref(p);
    mdb_txn_abort(txn);
    if (i.clones >= i.size) {
        r = vdi_err(-ENOSPC, "pool '%s' is exhausted: its %u clone(s) are all in use", name,
                    i.size);
        goto out;
    }
    /* No spare ready: make one for this session now. */
    r = make_clone(st, name, VD_POOL_SESSION, user, holder, vol);
    goto out;
abort_p:
    json_decref(p);
abort:
    mdb_txn_abort(txn);
out:
    st_unlock(st);
    return r;
}

/* A persistent clone's session ended (edit: pool and vol). */
static int idle_hook(MDB_txn *txn, void *opaque)
{
    struct edit *e = opaque;
    json_t *p;
    int r = get_pool(txn, e->st, e->pool, &p);
    if (r == 0 && json_object_get(json_object_get(p, "clones"), e->vol))
        r = set_state(txn, e->st, e->pool, p, e->vol, VD_POOL_IDLE, NULL, NULL);
    json_decref(p);
    return r;
}

int vd_pool_release(struct vd_store *st, const char *name, const char *vol)
{
    json_t *p;
    vdi_clear_err();
    int r = read_pool(st, name, &p);
    if (r < 0)
        return r;
    json_t *c = json_object_get(json_object_get(p, "clones"), vol);
    bool keep = persistent(p);
    json_decref(p);
    if (!c)
        return vdi_err(-ENOENT, "pool '%s' has no clone '%s'", name, vol);
    if (!keep)
        return drop_clone(st, name, vol, DROP_ANY);
    struct edit e = { st, name, vol, NULL, false, DROP_ANY };
    return in_txn(st, idle_hook, &e);
}

int vd_pool_reset(struct vd_store *st)
{
    struct vd_pool_info *pools = NULL;
    size_t np = 0;
    int r = vd_pool_list(st, &pools, &np), err = 0;
    if (r < 0)
        return r;
    for (size_t i = 0; i < np; i++) {
        json_t *p, *c;
        const char *k;
        if (read_pool(st, pools[i].name, &p) < 0)
            continue;
        json_object_foreach(json_object_get(p, "clones"), k, c) {
            struct vd_volume_info vi;
            if (vd_volume_info(st, k, &vi) == -ENOENT)
                r = drop_clone(st, pools[i].name, k, DROP_ANY);
            else if (state_of(c) == VD_POOL_SESSION)
                r = vd_pool_release(st, pools[i].name, k);
            else
                r = 0;
            if (r < 0 && !err)
                err = r;
        }
        json_decref(p);
    }
    free(pools);
    return err;
}

struct find_vol {
    const char *vol;
    char *pool;
};

static int find_one(void *opaque, const char *key, json_t *val)
{
    struct find_vol *f = opaque;
    if (!json_object_get(json_object_get(val, "clones"), f->vol))
        return 0;
    snprintf(f->pool, VD_NAME_MAX + 1, "%s", key);
    return 1;
}

int vd_pool_of_volume(struct vd_store *st, const char *vol, char pool[VD_NAME_MAX + 1])
{
    MDB_txn *txn;
    struct find_vol f = { vol, pool };
    pool[0] = '\0';
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    r = cat_each(txn, st->db_pool, "", find_one, &f);
    mdb_txn_abort(txn);
    if (r < 0)
        return r;
    return pool[0] ? 0 : -ENOENT;
}
