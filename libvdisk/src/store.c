/*
 * store.c - opening a store, its lock, names, paths, and the helpers the
 * store operations share.
 */
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

int vdi_uuid_generate(vd_uuid *u);

#define STORE_FORMAT 1

static unsigned kill_at, steps_taken;

void vdi_set_kill_step(unsigned n)
{
    kill_at = n;
    steps_taken = 0;
}

unsigned vdi_steps_taken(void)
{
    return steps_taken;
}

void vdi_step(const char *what)
{
    (void)what;
    steps_taken++;
    if (kill_at && steps_taken == kill_at)
        raise(SIGKILL);
}

int vd_store_default_path(char *out, size_t outlen)
{
    const char *env = getenv("VDISK_STORE");
    int n;
    if (env && *env) {
        n = snprintf(out, outlen, "%s", env);
    } else if (geteuid() == 0) {
        n = snprintf(out, outlen, "/var/lib/vdisk");
    } else {
        const char *xdg = getenv("XDG_DATA_HOME");
        const char *home = getenv("HOME");
        if (xdg && *xdg)
            n = snprintf(out, outlen, "%s/vdisk", xdg);
        else if (home && *home)
            n = snprintf(out, outlen, "%s/.local/share/vdisk", home);
        else
            return vdi_err(-ENOENT, "no store location: set VDISK_STORE or HOME");
    }
    if (n < 0 || (size_t)n >= outlen)
        return vdi_err(-ENAMETOOLONG, "store path too long");
    return 0;
}

int st_check_name(const char *what, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > VD_NAME_MAX)
        return vdi_err(-EINVAL, "%s name must have 1 to %d characters", what, VD_NAME_MAX);
    if (name[0] == '.' || name[0] == '-')
        return vdi_err(-EINVAL, "%s name '%s' must not start with '%c'", what, name, name[0]);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return vdi_err(-EINVAL, "%s name '%s': only letters, digits, '.', '_' and '-' are allowed",
                           what, name);
    }
    return 0;
}

void st_layer_path(const struct vd_store *st, const char *uuid, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.vdk", st->layers_dir, uuid);
}

int st_new_uuid(char out[37])
{
    vd_uuid u;
    int r = vdi_uuid_generate(&u);
    if (r == 0)
        vd_uuid_format(&u, out);
    return r;
}

void st_undo(struct vd_store *st, int err)
{
    /* Recovery may set messages of its own: the caller's stays. */
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vd_errmsg());
    st_recover(st);
    vdi_err(err, "%s", msg);
}

int st_resolve(void *opaque, const vd_uuid *parent, const char *hint,
               const char *child_path, char *out, size_t outlen)
{
    (void)hint;
    (void)child_path;
    struct vd_store *st = opaque;
    char u[37];
    vd_uuid_format(parent, u);
    st_layer_path(st, u, out, outlen);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Locks                                                               */
/* ------------------------------------------------------------------ */

int st_lock(struct vd_store *st)
{
    if (st->lock_depth++ > 0)
        return 0;
    while (flock(st->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            st->lock_depth--;
            return vdi_err(-errno, "%s: lock: %s", st->path, strerror(errno));
        }
    }
    return 0;
}

int st_trylock(struct vd_store *st)
{
    if (st->lock_depth > 0) {
        st->lock_depth++;
        return 0;
    }
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return -errno == -EWOULDBLOCK ? -EBUSY : -errno;
    st->lock_depth = 1;
    return 0;
}

void st_unlock(struct vd_store *st)
{
    if (--st->lock_depth == 0)
        flock(st->lock_fd, LOCK_UN);
}

/* The process holding a flock on the file, from /proc/locks, or 0. */
static int flock_holder(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f)
        return 0;
    char line[256];
    int pid = 0;
    while (fgets(line, sizeof(line), f)) {
        char kind[16], mode[16], rw[16];
        int p;
        unsigned maj, min;
        unsigned long ino;
        if (sscanf(line, "%*d: %15s %15s %15s %d %x:%x:%lu", kind, mode, rw, &p, &maj,
                   &min, &ino) == 7 &&
            strcmp(kind, "FLOCK") == 0 && ino == sb.st_ino) {
            pid = p;
            break;
        }
    }
    fclose(f);
    return pid;
}

int st_hold_layer(struct vd_store *st, const char *uuid, const char *vol,
                  struct vdi_layer **out)
{
    char path[4096];
    st_layer_path(st, uuid, path, sizeof(path));
    int r = vdi_layer_open(path, true, true, out);
    if (r == -EBUSY) {
        int pid = flock_holder(path);
        if (pid)
            return vdi_err(-EBUSY, "volume '%s' is open for writing by process %d", vol, pid);
        return vdi_err(-EBUSY, "volume '%s' is open for writing by another process", vol);
    }
    return r;
}

int vdi_store_writer_pid(struct vd_store *st, const char *uuid);
int vdi_store_writer_pid(struct vd_store *st, const char *uuid)
{
    char path[4096];
    st_layer_path(st, uuid, path, sizeof(path));
    return flock_holder(path);
}

void st_unlink_layers(struct vd_store *st, json_t *list)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        char path[4096];
        st_layer_path(st, json_string_value(v), path, sizeof(path));
        unlink(path);
    }
}

int st_commit_and_unlink(struct vd_store *st, MDB_txn *txn, json_t *unlink_list)
{
    char id[17] = "";
    int r = 0;
    if (json_array_size(unlink_list)) {
        json_t *j = json_pack("{s:s, s:O}", "op", "unlink", "files", unlink_list);
        if (!j) {
            mdb_txn_abort(txn);
            return vdi_err(-ENOMEM, "out of memory");
        }
        r = jnl_add(txn, st, j, id);
        json_decref(j);
        if (r < 0) {
            mdb_txn_abort(txn);
            return r;
        }
    }
    if ((r = cat_commit(txn)) < 0)
        return r;
    if (!id[0])
        return 0;
    vdi_step("catalog updated, files to remove");
    st_unlink_layers(st, unlink_list);
    vdi_step("files removed");
    if ((r = cat_txn(st, true, &txn)) < 0)
        return r;
    if ((r = jnl_del(txn, st, id)) < 0) {
        mdb_txn_abort(txn);
        return r;
    }
    return cat_commit(txn);
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */
/* ------------------------------------------------------------------ */

static int mkdir_p(const char *p)
{
    if (mkdir(p, 0755) == 0 || errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -errno;
    /* Make the missing parents first. */
    char *copy = strdup(p);
    if (!copy)
        return -ENOMEM;
    char *slash = strrchr(copy, '/');
    int r = 0;
    if (slash && slash != copy) {
        *slash = '\0';
        r = mkdir_p(copy);
    }
    free(copy);
    if (r < 0)
        return r;
    return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

int vd_store_open(const char *dir, unsigned flags, struct vd_store **out)
{
    struct vd_store *st = calloc(1, sizeof(*st));
    char cat[4096];
    int r, rc;
    MDB_txn *txn = NULL;
    vdi_clear_err();
    if (!st)
        return vdi_err(-ENOMEM, "out of memory");
    st->lock_fd = -1;
    st->path = strdup(dir);
    if (!st->path || asprintf(&st->layers_dir, "%s/layers", dir) < 0) {
        st->layers_dir = NULL;
        r = vdi_err(-ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(cat, sizeof(cat), "%s/catalog", dir);
    struct stat sb;
    if (stat(cat, &sb) < 0) {
        if (!(flags & VD_STORE_CREATE)) {
            r = vdi_err(-ENOENT, "no store at %s", dir);
            goto fail;
        }
        if ((r = mkdir_p(dir)) < 0 || (r = mkdir_p(cat)) < 0 ||
            (r = mkdir_p(st->layers_dir)) < 0) {
            r = vdi_err(r, "%s: cannot create the store: %s", dir, strerror(-r));
            goto fail;
        }
    } else if ((r = mkdir_p(st->layers_dir)) < 0) {
        r = vdi_err(r, "%s: %s", st->layers_dir, strerror(-r));
        goto fail;
    }
    char lockp[4096];
    snprintf(lockp, sizeof(lockp), "%s/lock", dir);
    st->lock_fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lock_fd < 0)
        st->lock_fd = open(lockp, O_RDONLY | O_CLOEXEC);   /* a read-only user */
    if (st->lock_fd < 0) {
        r = vdi_err(-errno, "%s: %s", lockp, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&st->env)) || (rc = mdb_env_set_maxdbs(st->env, 16)) ||
        (rc = mdb_env_set_mapsize(st->env, (size_t)1 << 32)) ||
        (rc = mdb_env_open(st->env, cat, MDB_NOTLS, 0644))) {
        r = vdi_err(rc == EACCES ? -EACCES : -EUCLEAN, "%s: cannot open the catalog: %s",
                    cat, mdb_strerror(rc));
        goto fail;
    }
    if ((r = cat_txn(st, true, &txn)) < 0)
        goto fail;
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = { { "volumes", &st->db_vol }, { "layers", &st->db_lay },
                { "snapshots", &st->db_snap }, { "templates", &st->db_tpl },
                { "journal", &st->db_jnl }, { "meta", &st->db_meta },
                { "pools", &st->db_pool }, { "access", &st->db_acc } };
    for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
        if ((rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi))) {
            mdb_txn_abort(txn);
            r = vdi_err(-EUCLEAN, "%s: catalog: %s", cat, mdb_strerror(rc));
            goto fail;
        }
    }
    json_t *meta;
    r = cat_get(txn, st->db_meta, "format", &meta);
    if (r == -ENOENT) {
        meta = json_pack("{s:i}", "version", STORE_FORMAT);
        r = meta ? cat_put(txn, st->db_meta, "format", meta) : -ENOMEM;
    } else if (r == 0 && ju(meta, "version") != STORE_FORMAT) {
        r = vdi_err(-ENOTSUP, "%s: store format %llu is not supported", dir,
                    (unsigned long long)ju(meta, "version"));
    }
    json_decref(meta);
    if (r < 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    if ((r = cat_commit(txn)) < 0)
        goto fail;
    if ((r = st_recover(st)) < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    vd_store_close(st);
    return r;
}

struct vd_ctx *st_ctx(struct vd_store *st)
{
    if (!st->ctx && vd_ctx_new(0, &st->ctx) < 0)
        st->ctx = NULL;
    return st->ctx;
}

void vd_store_close(struct vd_store *st)
{
    if (!st)
        return;
    vd_ctx_free(st->ctx);
    if (st->env)
        mdb_env_close(st->env);
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    free(st->layers_dir);
    free(st->path);
    free(st);
}

const char *vd_store_path(const struct vd_store *st)
{
    return st->path;
}
