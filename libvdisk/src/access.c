/*
 * access.c - access rules: which clients may open an export (vdisk.h,
 * "access rules"), and the one function that matches an identity with a
 * client.
 *
 * The catalog's "access" database (store.h) holds one record per object
 * that has rules, keyed by the object's name as the rules' users type it:
 * "VOL" or "TPL" (one namespace), or "pool/POOL" (pools have their own
 * namespace, and '/' is in no volume name, so the keys never collide):
 *   {"rules": [{"identity": "unix:uid=1000", "access": "read-write"}, ...]}
 * Identities are stored in their canonical form, so that "deny" finds what
 * "allow" wrote however the user spelled the number.  An object without
 * rules has no record: "no rules" is a single state, open to everyone.
 */
#include <pwd.h>
#include <unistd.h>

#include "store.h"

#define PWBUF 16384   /* getpw*_r buffers: enough for any sane passwd entry */

static const char *access_name(enum vd_access a)
{
    return a == VD_ACCESS_READ_ONLY ? "read-only" : "read-write";
}

/* ---- identities ---- */

/* A decimal id with no sign; (uint32_t)-1 is no id (chown's "unchanged"). */
static bool parse_id(const char *s, uint32_t *out)
{
    if (*s < '0' || *s > '9' || strlen(s) > 10)
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v >= UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* A unix user name: what useradd and NSS directories allow, roughly
 * (letters, digits, '.', '_', '-', '@' for realm-qualified names, and a
 * final '$' for machine accounts). */
static bool user_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '-')
        return false;
    size_t ok = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@");
    return ok == n || (ok == n - 1 && s[n - 1] == '$');
}

/* TLS names (a CN, a SAN, a PSK identity): any text but control
 * characters, which no one types and a log line should not carry. */
static bool tls_name_ok(const char *s, bool psk)
{
    if (!*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || (psk && *p == ':'))
            return false;
    return true;
}

#define FORMS "unix:uid=N, unix:gid=N, unix:user=NAME, x509:NAME, psk:NAME or any"

int vd_identity_parse(const char *id, char out[VD_IDENTITY_MAX + 1])
{
    uint32_t n;
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > VD_IDENTITY_MAX)
        return vdi_err(-EINVAL, "an identity has 1 to %d characters: " FORMS,
                       VD_IDENTITY_MAX);
    if (strcmp(id, "any") == 0) {
        snprintf(out, VD_IDENTITY_MAX + 1, "any");
        return 0;
    }
    if (strncmp(id, "unix:uid=", 9) == 0 || strncmp(id, "unix:gid=", 9) == 0) {
        if (!parse_id(id + 9, &n))
            return vdi_err(-EINVAL, "identity '%s': expected a number from 0 to %u after "
                           "'%.9s'", id, UINT32_MAX - 1, id);
        snprintf(out, VD_IDENTITY_MAX + 1, "%.9s%u", id, (unsigned)n);
        return 0;
    }
    if (strncmp(id, "unix:user=", 10) == 0) {
        if (!user_name_ok(id + 10))
            return vdi_err(-EINVAL, "identity '%s': a user name has 1 to 64 letters, digits, "
                           "'.', '_', '-' or '@' and does not start with '-'", id);
        snprintf(out, VD_IDENTITY_MAX + 1, "%s", id);
        return 0;
    }
    if (strncmp(id, "x509:", 5) == 0 || strncmp(id, "psk:", 4) == 0) {
        bool psk = id[0] == 'p';
        if (!tls_name_ok(id + (psk ? 4 : 5), psk))
            return vdi_err(-EINVAL, "identity '%s': expected a name after '%s' (no control "
                           "characters%s)", id, psk ? "psk:" : "x509:",
                           psk ? ", no ':' as in a PSK file's identity:key lines" : "");
        snprintf(out, VD_IDENTITY_MAX + 1, "%s", id);
        return 0;
    }
    if (strncmp(id, "unix:", 5) == 0)
        return vdi_err(-EINVAL, "identity '%s': a unix peer is unix:uid=N, unix:gid=N or "
                       "unix:user=NAME", id);
    return vdi_err(-EINVAL, "identity '%s': expected " FORMS, id);
}

/* The uid of user name, or false when there is no such user. */
static bool user_uid(const char *name, uint32_t *uid)
{
    struct passwd pw, *res = NULL;
    char buf[PWBUF];
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res)
        return false;
    *uid = (uint32_t)res->pw_uid;
    return true;
}

bool vd_identity_match(const char *id, const struct vd_peer *p)
{
    uint32_t n;
    if (strcmp(id, "any") == 0)
        return true;
    if (strncmp(id, "unix:", 5) == 0) {
        if (!p->has_cred)
            return false;
        if (strncmp(id + 5, "uid=", 4) == 0)
            return parse_id(id + 9, &n) && p->uid == n;
        if (strncmp(id + 5, "gid=", 4) == 0) {
            if (!parse_id(id + 9, &n))
                return false;
            if (p->gid == n)
                return true;
            for (size_t i = 0; i < p->ngroups; i++)
                if (p->groups[i] == n)
                    return true;
            return false;
        }
        if (strncmp(id + 5, "user=", 5) == 0)
            return user_uid(id + 10, &n) && p->uid == n;
        return false;
    }
    if (strncmp(id, "x509:", 5) == 0) {
        if (p->auth != VD_PEER_AUTH_X509)
            return false;
        if (p->name && strcmp(p->name, id + 5) == 0)
            return true;
        for (size_t i = 0; i < p->nalt; i++)
            if (p->alt_names[i] && strcmp(p->alt_names[i], id + 5) == 0)
                return true;
        return false;
    }
    if (strncmp(id, "psk:", 4) == 0)
        return p->auth == VD_PEER_AUTH_PSK && p->name && strcmp(p->name, id + 4) == 0;
    return false;
}

enum vd_access vd_access_decide(const struct vd_access_rule *rules, size_t n,
                                const struct vd_peer *p)
{
    enum vd_access best = n ? VD_ACCESS_NONE : VD_ACCESS_READ_WRITE;
    for (size_t i = 0; i < n && best != VD_ACCESS_READ_WRITE; i++)
        if (rules[i].access > best && vd_identity_match(rules[i].identity, p))
            best = rules[i].access;
    return best;
}

bool vd_peer_is_user(const struct vd_peer *p, const char *user)
{
    if (p->auth != VD_PEER_AUTH_NONE && p->name && strcmp(p->name, user) == 0)
        return true;
    if (!p->has_cred)
        return false;
    struct passwd pw, *res = NULL;
    char buf[PWBUF];
    return getpwuid_r((uid_t)p->uid, &pw, buf, sizeof(buf), &res) == 0 && res &&
           strcmp(res->pw_name, user) == 0;
}

/* ---- the catalog ---- */

/* Checks that object names a volume, a template or a pool (in txn);
 * *pool_tpl gets a pool's template name (else ""). */
static int find_object(MDB_txn *txn, struct vd_store *st, const char *object,
                       char pool_tpl[VD_NAME_MAX + 1])
{
    json_t *o;
    int r;
    pool_tpl[0] = '\0';
    if (strncmp(object, "pool/", 5) == 0) {
        const char *pool = object + 5;
        if ((r = st_check_name("pool", pool)) < 0)
            return r;
        if ((r = cat_get(txn, st->db_pool, pool, &o)) == -ENOENT)
            return vdi_err(-ENOENT, "no pool named '%s'", pool);
        if (r == 0) {
            snprintf(pool_tpl, VD_NAME_MAX + 1, "%s", js(o, "template"));
            json_decref(o);
        }
        return r;
    }
    if (strchr(object, '@'))
        return vdi_err(-EINVAL, "'%s': snapshots and template versions follow the rules of "
                       "their volume or template: give '%.*s'", object,
                       (int)(strchr(object, '@') - object), object);
    if ((r = st_check_name("volume", object)) < 0)
        return r;
    if ((r = cat_get(txn, st->db_vol, object, &o)) == -ENOENT)
        r = cat_get(txn, st->db_tpl, object, &o);
    if (r == -ENOENT)
        return vdi_err(-ENOENT, "no volume, template or pool named '%s' (a pool is "
                       "pool/NAME)", object);
    if (r == 0)
        json_decref(o);
    return r;
}

/* The rules array of object's record (a new reference; an empty array
 * when it has none). */
static int get_rules(MDB_txn *txn, struct vd_store *st, const char *object, json_t **out)
{
    json_t *rec;
    int r = cat_get(txn, st->db_acc, object, &rec);
    if (r == -ENOENT) {
        *out = json_array();
        return *out ? 0 : vdi_err(-ENOMEM, "out of memory");
    }
    if (r < 0)
        return r;
    json_t *a = json_object_get(rec, "rules");
    if (!json_is_array(a)) {
        json_decref(rec);
        return vdi_err(-EUCLEAN, "catalog: damaged access record '%s'", object);
    }
    *out = json_incref(a);
    json_decref(rec);
    return 0;
}

/* Writes object's rules back (none left: the record goes). */
static int put_rules(MDB_txn *txn, struct vd_store *st, const char *object, json_t *rules)
{
    if (json_array_size(rules) == 0) {
        int r = cat_del(txn, st->db_acc, object);
        return r == -ENOENT ? 0 : r;
    }
    json_t *rec = json_pack("{s:O}", "rules", rules);
    int r = rec ? cat_put(txn, st->db_acc, object, rec) : vdi_err(-ENOMEM, "out of memory");
    json_decref(rec);
    return r;
}

static ssize_t rule_index(json_t *rules, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(rules, i, v)
        if (strcmp(js(v, "identity"), id) == 0)
            return (ssize_t)i;
    return -1;
}

/* Checks, then runs one change of object's rules in a write transaction:
 * add (access != NONE) or remove (access NONE) id's rule. */
static int change(struct vd_store *st, const char *object, const char *identity,
                  enum vd_access access)
{
    char id[VD_IDENTITY_MAX + 1], tpl[VD_NAME_MAX + 1];
    MDB_txn *txn;
    json_t *rules = NULL;
    vdi_clear_err();
    int r = vd_identity_parse(identity, id);
    if (r < 0)
        return r;
    if ((r = cat_txn(st, true, &txn)) < 0)
        return r;
    if ((r = find_object(txn, st, object, tpl)) < 0 ||
        (r = get_rules(txn, st, object, &rules)) < 0)
        goto abort;
    ssize_t i = rule_index(rules, id);
    if (access == VD_ACCESS_NONE) {
        if (i < 0) {
            r = vdi_err(-ENOENT, "'%s' has no rule for %s", object, id);
            goto abort;
        }
        json_array_remove(rules, (size_t)i);
    } else {
        json_t *rule = json_pack("{s:s,s:s}", "identity", id, "access", access_name(access));
        if (!rule) {
            r = vdi_err(-ENOMEM, "out of memory");
            goto abort;
        }
        if (i >= 0) {
            json_array_set_new(rules, (size_t)i, rule);
        } else if (json_array_size(rules) >= VD_ACCESS_RULES_MAX) {
            json_decref(rule);
            r = vdi_err(-ENOSPC, "'%s' has %d rules already", object, VD_ACCESS_RULES_MAX);
            goto abort;
        } else {
            json_array_append_new(rules, rule);
        }
    }
    if ((r = put_rules(txn, st, object, rules)) < 0)
        goto abort;
    json_decref(rules);
    return cat_commit(txn);
abort:
    json_decref(rules);
    mdb_txn_abort(txn);
    return r;
}

int vd_access_allow(struct vd_store *st, const char *object, const char *identity,
                    enum vd_access access)
{
    if (access != VD_ACCESS_READ_ONLY && access != VD_ACCESS_READ_WRITE)
        return vdi_err(-EINVAL, "a rule gives read-only or read-write access");
    return change(st, object, identity, access);
}

int vd_access_deny(struct vd_store *st, const char *object, const char *identity)
{
    return change(st, object, identity, VD_ACCESS_NONE);
}

/* The rules array as structs (a record some other version wrote with an
 * access this one does not know gives read-only: the lesser). */
static int to_structs(json_t *rules, struct vd_access_rule **out, size_t *n)
{
    size_t cnt = json_array_size(rules), i;
    json_t *v;
    *out = NULL;
    *n = 0;
    if (cnt == 0)
        return 0;
    struct vd_access_rule *a = calloc(cnt, sizeof(*a));
    if (!a)
        return vdi_err(-ENOMEM, "out of memory");
    json_array_foreach(rules, i, v) {
        snprintf(a[i].identity, sizeof(a[i].identity), "%s", js(v, "identity"));
        a[i].access = strcmp(js(v, "access"), "read-write") == 0 ? VD_ACCESS_READ_WRITE
                                                                 : VD_ACCESS_READ_ONLY;
    }
    *out = a;
    *n = cnt;
    return 0;
}

int vd_access_rules(struct vd_store *st, const char *object, struct vd_access_rule **out,
                    size_t *n, char from[VD_NAME_MAX + 6])
{
    char tpl[VD_NAME_MAX + 1];
    MDB_txn *txn;
    json_t *rules = NULL;
    vdi_clear_err();
    *out = NULL;
    *n = 0;
    int r = cat_txn(st, false, &txn);
    if (r < 0)
        return r;
    if ((r = find_object(txn, st, object, tpl)) < 0 ||
        (r = get_rules(txn, st, object, &rules)) < 0)
        goto out;
    if (from)
        snprintf(from, VD_NAME_MAX + 6, "%s", object);
    /* A pool hands out clones of its template, whose data is the
     * template's: without rules of its own it must not open a template
     * that has some to everyone. */
    if (json_array_size(rules) == 0 && tpl[0]) {
        json_decref(rules);
        rules = NULL;
        if ((r = get_rules(txn, st, tpl, &rules)) < 0)
            goto out;
        if (from && json_array_size(rules))
            snprintf(from, VD_NAME_MAX + 6, "%s", tpl);
    }
    r = to_structs(rules, out, n);
out:
    json_decref(rules);
    mdb_txn_abort(txn);
    return r;
}

int acc_drop(MDB_txn *txn, struct vd_store *st, const char *object)
{
    int r = cat_del(txn, st->db_acc, object);
    return r == -ENOENT ? 0 : r;
}
