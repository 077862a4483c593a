/*
 * exports.c - export names to open chains.
 *
 * Names: "VOL" (a volume, read-write unless --read-only), "VOL@SNAP" (a
 * snapshot) and "TPL" / "TPL@N" (a template, its newest or N-th version),
 * both read-only.  Every connection to one name shares one vd_chain, so
 * that a FLUSH on one connection covers the writes of all (multi-conn),
 * and only one writer lock is taken per volume.
 *
 * Who may open which name is access.c's to say (the catalog's rules);
 * export_open_name asks it before opening anything.
 *
 * The chains are opened with vd_chain_open on the layer file the catalog
 * names (layers/UUID.vdk in the store) rather than vd_store_open_chain,
 * because only vd_chain_open takes a vd_layer_cache: linked clones of one
 * template then share the template's open layers and their index memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "vdiskd.h"

void fmt_size(uint64_t n, char *out, size_t outlen)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    unsigned u = 0;
    double v = (double)n;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (v == (double)(uint64_t)v)
        snprintf(out, outlen, "%llu %s", (unsigned long long)v, units[u]);
    else
        snprintf(out, outlen, "%.1f %s", v, units[u]);
}

/* Parent layers live next to their children, named by UUID: the catalog's
 * layout (vdisk.h, Stores).  libvdisk checks the UUID of what we name. */
static int resolve_layer(void *opaque, const vd_uuid *parent, const char *hint,
                         const char *child_path, char *out, size_t outlen)
{
    struct vdiskd *d = opaque;
    char u[37];
    (void)hint;
    (void)child_path;
    vd_uuid_format(parent, u);
    if ((size_t)snprintf(out, outlen, "%s/layers/%s.vdk", vd_store_path(d->store), u) >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

/* The layer at the top of `name`'s chain, whether it may be written, and
 * a description.  -ENOENT when the catalog has no such name. */
static int lookup(struct vdiskd *d, const char *name, vd_uuid *layer, bool *writable,
                  char *desc, size_t desclen)
{
    char base[VD_NAME_MAX + 1], sz[32];
    const char *at = strchr(name, '@');
    size_t bl = at ? (size_t)(at - name) : strlen(name);
    struct vd_volume_info vi;
    struct vd_template_info ti;
    int r;

    if (bl == 0 || bl > VD_NAME_MAX)
        return -ENOENT;
    memcpy(base, name, bl);
    base[bl] = '\0';
    *writable = false;

    if (vd_volume_info(d->store, base, &vi) == 0) {
        if (!at) {
            *layer = vi.top;
            *writable = !d->read_only;
            fmt_size(vi.size, sz, sizeof(sz));
            snprintf(desc, desclen, "volume %s (%s)%s", base, sz,
                     d->read_only ? ", read-only" : "");
            return 0;
        }
        struct vd_snapshot_info *s = NULL;
        size_t n = 0;
        if ((r = vd_snapshot_list(d->store, base, &s, &n)) < 0)
            return r;
        r = -ENOENT;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(s[i].name, at + 1) == 0) {
                *layer = s[i].layer;
                fmt_size(s[i].size, sz, sizeof(sz));
                snprintf(desc, desclen, "snapshot %s of volume %s (%s, read-only)",
                         s[i].name, base, sz);
                r = 0;
                break;
            }
        }
        free(s);
        return r;
    }

    struct vd_template_version *v = NULL;
    size_t n = 0;
    if (vd_template_info(d->store, base, &ti, &v, &n) < 0)
        return -ENOENT;
    uint32_t want = ti.latest;
    if (at) {
        const char *p = at + 1 + (at[1] == 'v');
        char *end;
        unsigned long x = strtoul(p, &end, 10);
        if (*p < '0' || *p > '9' || *end || x == 0 || x > UINT32_MAX) {
            free(v);
            return -ENOENT;
        }
        want = (uint32_t)x;
    }
    r = -ENOENT;
    for (size_t i = 0; i < n; i++) {
        if (v[i].version == want) {
            *layer = v[i].layer;
            fmt_size(v[i].size, sz, sizeof(sz));
            snprintf(desc, desclen, "template %s version %u (%s, read-only)", base,
                     (unsigned)want, sz);
            r = 0;
            break;
        }
    }
    free(v);
    return r;
}

int export_get_locked(struct vdiskd *d, struct worker *w, const char *name,
                             struct export **out)
{
    struct export *ex;
    char u[37], path[4096];
    vd_uuid layer;
    bool writable;
    int r;

    for (ex = d->exports; ex; ex = ex->next) {
        if (strcmp(ex->name, name) == 0) {
            /* refs 0: its close is posted to its worker, which will see it
             * is in use again and keep it. */
            ex->refs++;
            *out = ex;
            return 0;
        }
    }
    if (jobs_busy_locked(d, name)) {
        vlog(LOG_ERR, "export %s: the snapshot is being committed", name);
        return -EBUSY;
    }
    ex = calloc(1, sizeof(*ex));
    if (!ex || !(ex->name = strdup(name))) {
        free(ex);
        return -ENOMEM;
    }
    r = lookup(d, name, &layer, &writable, ex->description, sizeof(ex->description));
    if (r < 0)
        goto fail;
    vd_uuid_format(&layer, u);
    snprintf(path, sizeof(path), "%s/layers/%s.vdk", vd_store_path(d->store), u);
    struct vd_open_opts oo = {
        .flags = d->open_flags | (writable ? VD_OPEN_RDWR : 0),
        .resolve = resolve_layer,
        .resolve_opaque = d,
        .cache = d->cache,
    };
    r = vd_chain_open(w->ctx, path, &oo, &ex->chain);
    if (r == -EBUSY) {
        struct vd_volume_info vi;
        if (vd_volume_info(d->store, name, &vi) == 0 && vi.writer_pid)
            vlog(LOG_ERR, "export %s: volume '%s' is open for writing by process %d",
                 name, name, vi.writer_pid);
        else
            vlog(LOG_ERR, "export %s: volume is open for writing by another process", name);
        goto fail;
    }
    if (r < 0) {
        vlog(LOG_ERR, "export %s: %s", name, *vd_errmsg() ? vd_errmsg() : strerror(-r));
        goto fail;
    }
    ex->writable = vd_chain_writable(ex->chain);
    ex->size = vd_chain_size(ex->chain);
    ex->opened = time(NULL);
    ex->depth = vd_chain_depth(ex->chain);
    ex->refs = 1;
    ex->d = d;
    ex->owner = w;
    ex->next = d->exports;
    d->exports = ex;
    vlog(LOG_DEBUG, "export %s opened on thread %u: %s, %u layer(s)", name, w->id,
         ex->description, vd_chain_depth(ex->chain));
    *out = ex;
    return 0;
fail:
    free(ex->name);
    free(ex);
    return r;
}

void export_close_locked(struct vdiskd *d, struct export *ex)
{
    struct export **pp;
    for (pp = &d->exports; *pp; pp = &(*pp)->next) {
        if (*pp == ex) {
            *pp = ex->next;
            break;
        }
    }
    /* A close posted earlier, then the export taken again and released
     * here: it must not stay on the owner's list once freed. */
    if (ex->close_posted) {
        for (pp = &ex->owner->close_inbox; *pp; pp = &(*pp)->close_next) {
            if (*pp == ex) {
                *pp = ex->close_next;
                break;
            }
        }
        ex->close_posted = false;
    }
    int r = vd_chain_close(ex->chain);
    if (r < 0)
        vlog(LOG_ERR, "export %s: closing: %s", ex->name,
             *vd_errmsg() ? vd_errmsg() : strerror(-r));
    else
        vlog(LOG_DEBUG, "export %s closed", ex->name);
    if (ex->pool)
        pools_closed_locked(d, ex->pool, ex->name);
    free(ex->pool);
    free(ex->name);
    free(ex);
}

static void export_put_locked(struct vdiskd *d, struct export *ex);

/* ---- export-add / export-remove ---- */

static struct export_cfg *cfg_find(struct vdiskd *d, const char *name)
{
    for (struct export_cfg *c = d->cfgs; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static struct export_cfg *cfg_get(struct vdiskd *d, const char *name)
{
    struct export_cfg *c = cfg_find(d, name);
    if (c || !(c = calloc(1, sizeof(*c))))
        return c;
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->next = d->cfgs;
    d->cfgs = c;
    return c;
}

static void cfg_drop(struct vdiskd *d, struct export_cfg *c)
{
    for (struct export_cfg **pp = &d->cfgs; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            free(c);
            return;
        }
    }
}

/* A store name (volume, snapshot, template): something lookup finds. */
static bool store_name(struct vdiskd *d, const char *name)
{
    vd_uuid u;
    bool wr;
    char desc[256];
    return lookup(d, name, &u, &wr, desc, sizeof(desc)) == 0;
}

int export_cfg_add(struct vdiskd *d, const char *name, const char *target, bool read_only,
                   char *err, size_t errlen)
{
    int r = 0;
    size_t n = strlen(name);
    if (n == 0 || n > EXPORT_NAME_MAX || strchr(name, '\n')) {
        snprintf(err, errlen, "export names have 1 to %d characters", EXPORT_NAME_MAX);
        return -EINVAL;
    }
    pthread_mutex_lock(&d->lock);
    struct export_cfg *c = cfg_find(d, name);
    if (target && strcmp(target, name) == 0)
        target = NULL;
    if (target) {
        if (store_name(d, name)) {
            snprintf(err, errlen, "'%s' is a name of the store: an alias cannot hide it", name);
            r = -EEXIST;
        } else if (c && c->target[0] && strcmp(c->target, target) != 0) {
            snprintf(err, errlen, "'%s' is already an alias of '%s'", name, c->target);
            r = -EEXIST;
        } else if (cfg_find(d, target) && cfg_find(d, target)->target[0]) {
            snprintf(err, errlen, "'%s' is an alias itself", target);
            r = -EINVAL;
        } else if (!store_name(d, target)) {
            snprintf(err, errlen, "the store has no volume, snapshot or template '%s'", target);
            r = -ENOENT;
        }
    } else if (c && c->target[0]) {
        snprintf(err, errlen, "'%s' is an alias of '%s': give its target to change it", name,
                 c->target);
        r = -EEXIST;
    } else if (!store_name(d, name)) {
        snprintf(err, errlen, "the store has no volume, snapshot or template '%s'", name);
        r = -ENOENT;
    }
    if (r == 0 && !(c = cfg_get(d, name))) {
        snprintf(err, errlen, "out of memory");
        r = -ENOMEM;
    }
    if (r == 0) {
        snprintf(c->target, sizeof(c->target), "%s", target ? target : "");
        c->read_only = read_only;
        c->removed = false;
        if (!target && !read_only)
            cfg_drop(d, c);   /* plain again */
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

int export_cfg_remove_locked(struct vdiskd *d, const char *name, bool *alias, char *err,
                             size_t errlen)
{
    struct export_cfg *c = cfg_find(d, name);
    *alias = c && c->target[0];
    if (*alias) {
        cfg_drop(d, c);
        return 0;
    }
    if ((c && c->removed) || !store_name(d, name)) {
        snprintf(err, errlen, "no export named '%s'", name);
        return -ENOENT;
    }
    if (!(c = cfg_get(d, name))) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->removed = true;
    return 0;
}

void export_cfg_free(struct vdiskd *d)
{
    while (d->cfgs)
        cfg_drop(d, d->cfgs);
}

json_t *export_cfg_query(struct vdiskd *d)
{
    json_t *list = json_array();
    pthread_mutex_lock(&d->lock);
    for (struct export_cfg *c = d->cfgs; c; c = c->next) {
        json_t *o = json_pack("{s:s,s:b,s:b}", "name", c->name, "read-only", c->read_only,
                              "removed", c->removed);
        if (o && c->target[0])
            json_object_set_new(o, "target", json_string(c->target));
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&d->lock);
    return list;
}

int export_open_name(struct vdiskd *d, struct worker *w, const char *name,
                     const struct vd_peer *who, const char *peer, bool query,
                     struct export **out, bool *read_only, bool *pool)
{
    pthread_mutex_lock(&d->lock);
    const struct export_cfg *c = cfg_find(d, name);
    const char *target = c && c->target[0] ? c->target : name;
    bool rule_ro = false;
    *read_only = c && c->read_only;
    *pool = false;
    int r;
    if (c && c->removed) {
        r = -ENOENT;
    } else if ((r = access_check_locked(d, target, who, peer, &rule_ro)) < 0) {
        /* refused before anything is opened or a pool's clone taken */
    } else if (strncmp(target, "pool/", 5) == 0) {
        r = pools_open_locked(d, w, target, peer, query, out);
        *pool = query;
    } else if (pools_hidden_locked(d, target)) {
        r = -ENOENT;
    } else {
        r = export_get_locked(d, w, target, out);
    }
    *read_only = *read_only || rule_ro;
    pthread_mutex_unlock(&d->lock);
    return r;
}

int export_get_clone_locked(struct vdiskd *d, struct worker *w, const char *vol,
                            const char *pool, struct export **out)
{
    int r = export_get_locked(d, w, vol, out);
    if (r == 0 && !(*out)->pool && !((*out)->pool = strdup(pool))) {
        export_put_locked(d, *out);
        return -ENOMEM;
    }
    return r;
}

int export_get(struct vdiskd *d, struct worker *w, const char *name, struct export **out)
{
    pthread_mutex_lock(&d->lock);
    int r = export_get_locked(d, w, name, out);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* The chain lives on its worker's I/O context, which only that thread may
 * poll: a last reference dropped elsewhere (a handshake that asked for
 * NBD_OPT_INFO on another thread) posts the close to that worker. */
static void export_put_locked(struct vdiskd *d, struct export *ex)
{
    if (--ex->refs == 0) {
        struct worker *w = current_worker;
        if (!w || w == ex->owner) {
            export_close_locked(d, ex);
        } else if (!ex->close_posted) {
            ex->close_posted = true;
            ex->close_next = ex->owner->close_inbox;
            ex->owner->close_inbox = ex;
            worker_wake(ex->owner);
        }
    }
}

void export_put(struct vdiskd *d, struct export *ex)
{
    pthread_mutex_lock(&d->lock);
    export_put_locked(d, ex);
    pthread_mutex_unlock(&d->lock);
}

struct export *export_find_locked(struct vdiskd *d, const char *name)
{
    for (struct export *ex = d->exports; ex; ex = ex->next)
        if (strcmp(ex->name, name) == 0)
            return ex;
    return NULL;
}

bool export_served_locked(struct vdiskd *d, const char *name)
{
    for (struct export *ex = d->exports; ex; ex = ex->next)
        if (ex->refs > 0 && strcmp(ex->name, name) == 0)
            return true;
    return false;
}

void exports_close_posted(struct worker *w)
{
    struct vdiskd *d = w->d;
    pthread_mutex_lock(&d->lock);
    while (w->close_inbox) {
        struct export *ex = w->close_inbox;
        w->close_inbox = ex->close_next;
        ex->close_posted = false;
        if (ex->refs == 0)
            export_close_locked(d, ex);
    }
    pthread_mutex_unlock(&d->lock);
}

void exports_close_all(struct vdiskd *d)
{
    pthread_mutex_lock(&d->lock);
    while (d->exports)
        export_close_locked(d, d->exports);
    pthread_mutex_unlock(&d->lock);
}

/* Adds name to an NBD_OPT_LIST unless export-remove took it away. */
static int list_add(struct vdiskd *d, struct nbds_list *l, const char *name, const char *desc)
{
    const struct export_cfg *c = cfg_find(d, name);
    if (c && c->removed)
        return 0;
    return nbds_list_add(l, name, desc);
}

/* Snapshots and template versions follow their volume's or template's
 * rules, so one decision per volume or template covers its entries. */
static int exports_list_locked(struct vdiskd *d, const struct vd_peer *who,
                               struct nbds_list *l)
{
    struct vd_volume_info *vols = NULL;
    struct vd_template_info *tpls = NULL;
    size_t nv = 0, nt = 0;
    char name[2 * VD_NAME_MAX + 2], desc[256], sz[32];
    int r;

    if ((r = vd_volume_list(d->store, &vols, &nv)) < 0)
        return r;
    for (size_t i = 0; i < nv && r >= 0; i++) {
        if (pools_hidden_locked(d, vols[i].name) || !access_listed_locked(d, vols[i].name, who))
            continue;
        fmt_size(vols[i].size, sz, sizeof(sz));
        snprintf(desc, sizeof(desc), "volume %s (%s)%s", vols[i].name, sz,
                 d->read_only ? ", read-only" : "");
        r = list_add(d, l, vols[i].name, desc);
        struct vd_snapshot_info *s = NULL;
        size_t ns = 0;
        if (r >= 0 && vd_snapshot_list(d->store, vols[i].name, &s, &ns) == 0) {
            for (size_t j = 0; j < ns && r >= 0; j++) {
                snprintf(name, sizeof(name), "%s@%s", vols[i].name, s[j].name);
                fmt_size(s[j].size, sz, sizeof(sz));
                snprintf(desc, sizeof(desc), "snapshot %s of volume %s (%s, read-only)",
                         s[j].name, vols[i].name, sz);
                r = list_add(d, l, name, desc);
            }
            free(s);
        }
    }
    free(vols);
    if (r < 0)
        return r;
    if ((r = vd_template_list(d->store, &tpls, &nt)) < 0)
        return r;
    for (size_t i = 0; i < nt && r >= 0; i++) {
        struct vd_template_info ti;
        struct vd_template_version *v = NULL;
        size_t n = 0;
        if (!access_listed_locked(d, tpls[i].name, who))
            continue;
        fmt_size(tpls[i].size, sz, sizeof(sz));
        snprintf(desc, sizeof(desc), "template %s, newest version %u (%s, read-only)",
                 tpls[i].name, (unsigned)tpls[i].latest, sz);
        r = list_add(d, l, tpls[i].name, desc);
        if (r >= 0 && vd_template_info(d->store, tpls[i].name, &ti, &v, &n) == 0) {
            for (size_t j = 0; j < n && r >= 0; j++) {
                snprintf(name, sizeof(name), "%s@%u", tpls[i].name, (unsigned)v[j].version);
                fmt_size(v[j].size, sz, sizeof(sz));
                snprintf(desc, sizeof(desc), "template %s version %u (%s, read-only)",
                         tpls[i].name, (unsigned)v[j].version, sz);
                r = list_add(d, l, name, desc);
            }
            free(v);
        }
    }
    free(tpls);
    if (r >= 0)
        r = pools_list_locked(d, who, l);
    for (const struct export_cfg *c = d->cfgs; c && r >= 0; c = c->next) {
        if (!c->target[0] || !access_listed_locked(d, c->target, who))
            continue;
        char ad[EXPORT_NAME_MAX + 32];
        snprintf(ad, sizeof(ad), "alias of %s%s", c->target, c->read_only ? " (read-only)" : "");
        r = nbds_list_add(l, c->name, ad);
    }
    return r < 0 ? r : 0;
}

int exports_list(struct vdiskd *d, const struct vd_peer *who, struct nbds_list *l)
{
    pthread_mutex_lock(&d->lock);
    int r = exports_list_locked(d, who, l);
    pthread_mutex_unlock(&d->lock);
    return r;
}
