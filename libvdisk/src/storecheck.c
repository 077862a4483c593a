/*
 * storecheck.c - checking a store: the catalog against the files, then
 * each layer file's own structure.
 */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

struct refcount {
    json_t *expect;      /* uuid -> expected refs */
    json_t *layers;      /* uuid -> record */
};

static void expect_ref(struct refcount *rc, const char *uuid)
{
    if (!uuid[0])
        return;
    json_t *v = json_object_get(rc->expect, uuid);
    json_object_set_new(rc->expect, uuid,
                        json_integer(v ? json_integer_value(v) + 1 : 1));
}

static int rc_layer(void *opaque, const char *key, json_t *val)
{
    struct refcount *rc = opaque;
    json_object_set(rc->layers, key, val);
    expect_ref(rc, js(val, "parent"));
    return 0;
}

static int rc_vol(void *opaque, const char *key, json_t *val)
{
    (void)key;
    expect_ref(opaque, js(val, "top"));
    return 0;
}

static int rc_snap(void *opaque, const char *key, json_t *val)
{
    (void)key;
    expect_ref(opaque, js(val, "layer"));
    return 0;
}

static int rc_tpl(void *opaque, const char *key, json_t *val)
{
    (void)key;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(val, "versions"), i, e)
        expect_ref(opaque, js(e, "layer"));
    return 0;
}

static int rc_jnl(void *opaque, const char *key, json_t *val)
{
    (void)key;
    (*(unsigned *)opaque)++;
    (void)val;
    return 0;
}

struct say_ctx {
    vd_report_fn report;
    void *opaque;
};

static void say(struct say_ctx *s, const char *fmt, ...) VDI_PRINTF(2, 3);
static void say(struct say_ctx *s, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s->report)
        s->report(s->opaque, msg);
}

struct prefixed {
    struct say_ctx *s;
    const char *who;
};

static void layer_report(void *opaque, const char *msg)
{
    struct prefixed *p = opaque;
    say(p->s, "%s: %s", p->who, msg);
}

int vd_store_check(struct vd_store *st, const char *name, unsigned flags,
                   struct vd_check_result *res, vd_report_fn report, void *opaque)
{
    struct refcount rc = { json_object(), json_object() };
    struct say_ctx s = { report, opaque };
    json_t *chain = json_array();
    MDB_txn *txn;
    unsigned pending = 0;
    int r;
    memset(res, 0, sizeof(*res));
    if ((r = st_lock(st)) < 0)
        goto out0;
    if ((r = cat_txn(st, false, &txn)) < 0)
        goto out;
    if ((r = cat_each(txn, st->db_lay, "", rc_layer, &rc)) < 0 ||
        (r = cat_each(txn, st->db_vol, "", rc_vol, &rc)) < 0 ||
        (r = cat_each(txn, st->db_snap, "", rc_snap, &rc)) < 0 ||
        (r = cat_each(txn, st->db_tpl, "", rc_tpl, &rc)) < 0 ||
        (r = cat_each(txn, st->db_jnl, "", rc_jnl, &pending)) < 0) {
        mdb_txn_abort(txn);
        goto out;
    }
    if (name) {
        json_t *v;
        if ((r = cat_get(txn, st->db_vol, name, &v)) == 0) {
            char cur[37];
            snprintf(cur, sizeof(cur), "%s", js(v, "top"));
            json_decref(v);
            while (cur[0] && json_array_size(chain) < 100000) {
                json_array_append_new(chain, json_string(cur));
                json_t *lo = json_object_get(rc.layers, cur);
                snprintf(cur, sizeof(cur), "%s", lo ? js(lo, "parent") : "");
            }
        } else {
            char lay[37];
            uint32_t ver;
            if (st_template_layer(txn, st, name, 0, lay, &ver) == 0) {
                json_array_append_new(chain, json_string(lay));
                r = 0;
            } else {
                mdb_txn_abort(txn);
                r = vdi_err(-ENOENT, "no volume or template named '%s'", name);
                goto out;
            }
        }
    }
    mdb_txn_abort(txn);
    if (pending)
        say(&s, "Warning: %u interrupted operation(s) wait in the journal (a layer is in use)",
            pending);

    /* Catalog against files. */
    const char *uuid;
    json_t *rec;
    json_t *fix = json_object();
    json_object_foreach(rc.layers, uuid, rec) {
        char path[4096];
        struct vd_layer_info li;
        st_layer_path(st, uuid, path, sizeof(path));
        uint64_t want = json_integer_value(json_object_get(rc.expect, uuid));
        if (ju(rec, "refs") != want) {
            res->corruptions++;
            say(&s, "ERROR layer %s: reference count %llu, expected %llu", uuid,
                (unsigned long long)ju(rec, "refs"), (unsigned long long)want);
            json_object_set_new(fix, uuid, json_integer((json_int_t)want));
        }
        int lr = vd_layer_info(path, &li);
        if (lr < 0) {
            res->corruptions++;
            say(&s, "ERROR layer %s: %s", uuid, vd_errmsg());
            continue;
        }
        char u[37], p[37] = "";
        vd_uuid_format(&li.uuid, u);
        if (!vd_uuid_is_null(&li.parent_uuid))
            vd_uuid_format(&li.parent_uuid, p);
        if (strcmp(u, uuid) != 0) {
            res->corruptions++;
            say(&s, "ERROR file of layer %s holds layer %s", uuid, u);
        }
        if (strcmp(p, js(rec, "parent")) != 0) {
            res->corruptions++;
            say(&s, "ERROR layer %s: its file names parent '%s', the catalog '%s'", uuid, p,
                js(rec, "parent"));
        }
    }
    /* Files the catalog does not know. */
    DIR *d = opendir(st->layers_dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            if (de->d_name[0] == '.')
                continue;
            vd_uuid tmp;
            char u[37];
            if (n == 40 && strcmp(de->d_name + 36, ".vdk") == 0) {
                memcpy(u, de->d_name, 36);
                u[36] = '\0';
            }
            if (n != 40 || strcmp(de->d_name + 36, ".vdk") != 0 || vd_uuid_parse(u, &tmp) < 0) {
                /* Not a name the store gives: report, never remove. */
                char path[4096];
                struct stat sb;
                snprintf(path, sizeof(path), "%s/%s", st->layers_dir, de->d_name);
                if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                    res->leaked_bytes += (uint64_t)sb.st_blocks * 512;
                    say(&s, "Unexpected file %s in %s (%llu bytes): not removed", de->d_name,
                        st->layers_dir, (unsigned long long)sb.st_blocks * 512);
                }
                continue;
            }
            if (json_object_get(rc.layers, u))
                continue;
            char path[4096];
            struct stat sb;
            snprintf(path, sizeof(path), "%s/%s", st->layers_dir, de->d_name);
            if (stat(path, &sb) < 0)
                continue;
            res->leaked_bytes += (uint64_t)sb.st_blocks * 512;
            say(&s, "Leaked layer file %s (%llu bytes): no volume, snapshot or template uses it",
                de->d_name, (unsigned long long)sb.st_blocks * 512);
            if ((flags & VD_CHECK_REPAIR) && unlink(path) == 0)
                res->repaired++;
        }
        closedir(d);
    }
    if ((flags & VD_CHECK_REPAIR) && json_object_size(fix)) {
        if ((r = cat_txn(st, true, &txn)) == 0) {
            json_t *want;
            json_object_foreach(fix, uuid, want) {
                json_t *o;
                if (cat_get(txn, st->db_lay, uuid, &o) == 0) {
                    json_object_set(o, "refs", want);
                    cat_put(txn, st->db_lay, uuid, o);
                    json_decref(o);
                    res->repaired++;
                }
            }
            r = cat_commit(txn);
        }
        if (r < 0) {
            json_decref(fix);
            goto out;
        }
    }
    json_decref(fix);

    /* Each layer file. */
    size_t i;
    json_t *u;
    json_t *which = name ? chain : json_array();
    if (!name)
        json_object_foreach(rc.layers, uuid, rec)
            json_array_append_new(which, json_string(uuid));
    json_array_foreach(which, i, u) {
        char path[4096];
        struct vd_check_result lr;
        st_layer_path(st, json_string_value(u), path, sizeof(path));
        struct prefixed px = { &s, json_string_value(u) };
        int cr = vd_layer_check(path, flags, &lr, layer_report, &px);
        if (cr < 0) {
            res->corruptions++;
            say(&s, "ERROR layer %s: %s", json_string_value(u), vd_errmsg());
            continue;
        }
        res->corruptions += lr.corruptions;
        res->leaked_bytes += lr.leaked_bytes;
        res->digest_mismatches += lr.digest_mismatches;
        res->digest_stale += lr.digest_stale;
        res->blocks_checked += lr.blocks_checked;
        res->repaired += lr.repaired;
        res->dirty |= lr.dirty;
    }
    if (!name)
        json_decref(which);
    r = 0;
out:
    st_unlock(st);
out0:
    json_decref(rc.expect);
    json_decref(rc.layers);
    json_decref(chain);
    return r;
}
