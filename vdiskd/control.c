/*
 * control.c - the control API: JSON over a unix socket in the store,
 * QMP-like (docs/CONTROL-API.md).
 *
 * On connect the daemon sends a greeting line; then every line the client
 * sends is one command, {"execute": NAME, "arguments": {...}, "id": ANY},
 * answered by one line, {"return": {...}, "id": ANY} or {"error":
 * {"class": CLASS, "desc": TEXT}, "id": ANY}.  Events are lines of their
 * own, {"event": NAME, "data": {...}, "timestamp": {"seconds": S,
 * "microseconds": U}}, sent to every client.  JSON is parsed and written
 * with jansson.
 *
 * A second socket, --control-ro, takes queries only (for monitoring);
 * control-access.c says who may connect to each and which commands are
 * queries.
 *
 * The sockets and their clients live on worker 0's loop, the main thread.
 * Commands run there, taking d->lock for the store and the export table
 * like the NBD side does.
 */
#include <errno.h>
#include <grp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "vdiskd.h"

#include "control.h"

/* A command's reply is NULL when it comes later (ctl_reply_later). */
#define CTL_LATER ((json_t *)&ctl_later_marker)
static int ctl_later_marker;

/* ---- output ---- */

void ctl_rearm(struct ctl_client *c)
{
    uint32_t ev = EPOLLIN | (c->outlen > c->outpos ? EPOLLOUT : 0);
    /* A dead client asks for EPOLLOUT, which a socket reports at once (or
     * EPOLLHUP/ERR): the next round frees it in ctl_client_io. */
    if (c->dead || c->closing)
        ev = EPOLLOUT;
    if (ev != c->armed && loop_mod(&c->d->workers[0], &c->w, ev) == 0)
        c->armed = ev;
}

void ctl_flush(struct ctl_client *c)
{
    while (c->outpos < c->outlen && !c->dead) {
        ssize_t n = send(c->w.fd, c->out + c->outpos, c->outlen - c->outpos,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = true;
            break;
        }
        c->outpos += (size_t)n;
    }
    if (c->outpos == c->outlen)
        c->outpos = c->outlen = 0;
    if (c->closing && c->outlen == 0)
        c->dead = true;
}

/* Queues one JSON line (takes the reference of j). */
void ctl_send(struct ctl_client *c, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        c->dead = true;
        return;
    }
    size_t n = strlen(s);
    if (c->outlen + n + 1 > CTL_MAX_OUT) {
        vlog(LOG_INFO, "control: a client does not read its replies: dropped");
        c->dead = true;
        free(s);
        return;
    }
    if (c->outlen + n + 1 > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        while (cap < c->outlen + n + 1)
            cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) {
            c->dead = true;
            free(s);
            return;
        }
        c->out = o;
        c->outcap = cap;
    }
    memcpy(c->out + c->outlen, s, n);
    c->out[c->outlen + n] = '\n';
    c->outlen += n + 1;
    free(s);
    ctl_flush(c);
}

void control_event(struct vdiskd *d, const char *name, json_t *data)
{
    struct control *ctl = d->control;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (ctl) {
        for (struct ctl_client *c = ctl->clients; c; c = c->next) {
            if (c->dead || c->closing)
                continue;
            json_t *e = json_pack("{s:s,s:O,s:{s:I,s:I}}", "event", name, "data",
                                  data ? data : json_object(), "timestamp", "seconds",
                                  (json_int_t)tv.tv_sec, "microseconds",
                                  (json_int_t)tv.tv_usec);
            ctl_send(c, e);
            ctl_rearm(c);
        }
    }
    json_decref(data);
}

/* ---- commands ---- */

typedef json_t *(*ctl_cmd_fn)(struct ctl_client *c, json_t *args);
typedef json_t *(*ctl_cmd_later_fn)(struct ctl_client *c, json_t *args, json_t *id);

static json_t *cmd_query_version(struct ctl_client *c, json_t *args)
{
    (void)c;
    (void)args;
    unsigned maj = 0, min = 0, mic = 0;
    sscanf(VDISKD_VERSION, "%u.%u.%u", &maj, &min, &mic);
    return json_pack("{s:{s:{s:i,s:i,s:i},s:s}}", "return", "vdiskd", "major", maj, "minor",
                     min, "micro", mic, "package", "vdiskd " VDISKD_VERSION);
}

static json_t *cmd_query_volumes(struct ctl_client *c, json_t *args)
{
    struct vdiskd *d = c->d;
    struct vd_volume_info *v = NULL;
    size_t n = 0;
    (void)args;
    pthread_mutex_lock(&d->lock);
    int r = vd_volume_list(d->store, &v, &n);
    json_t *list = json_array();
    for (size_t i = 0; r >= 0 && i < n; i++) {
        char u[37];
        vd_uuid_format(&v[i].top, u);
        json_t *o = json_pack("{s:s,s:I,s:I,s:i,s:i,s:s,s:b}", "name", v[i].name, "size",
                              (json_int_t)v[i].size, "allocated", (json_int_t)v[i].allocated,
                              "depth", (int)v[i].depth, "snapshots", (int)v[i].snapshots,
                              "top-layer", u, "served", export_served_locked(d, v[i].name));
        if (o && v[i].template_name[0]) {
            json_object_set_new(o, "template", json_string(v[i].template_name));
            json_object_set_new(o, "template-version", json_integer(v[i].template_version));
        }
        if (o && v[i].writer_pid)
            json_object_set_new(o, "writer-pid", json_integer(v[i].writer_pid));
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&d->lock);
    free(v);
    if (r < 0) {
        json_decref(list);
        return error_obj("GenericError", *vd_errmsg() ? vd_errmsg() : strerror(-r));
    }
    return json_pack("{s:o}", "return", list);
}

static json_t *cmd_query_exports(struct ctl_client *c, json_t *args)
{
    struct vdiskd *d = c->d;
    (void)args;
    json_t *list = json_array();
    pthread_mutex_lock(&d->lock);
    for (struct export *ex = d->exports; ex; ex = ex->next) {
        if (ex->refs == 0)
            continue;   /* being closed */
        json_array_append_new(list, json_pack("{s:s,s:s,s:I,s:b,s:i,s:i,s:i}", "name",
                                              ex->name, "description", ex->description,
                                              "size", (json_int_t)ex->size,
                                              "writable", ex->writable, "connections",
                                              (int)ex->refs, "thread", (int)ex->owner->id,
                                              "depth", (int)ex->depth));
    }
    pthread_mutex_unlock(&d->lock);
    return json_pack("{s:o}", "return", list);
}

/* Where a reply that comes later goes: the client by serial (it may be
 * gone by then) and the command's id. */
struct later {
    struct task t;                /* run on worker 0: send the reply */
    struct vdiskd *d;
    uint64_t serial;
    json_t *id;
    json_t *reply;
};

static void later_send(struct worker *w, struct task *t)
{
    struct later *l = (struct later *)t;
    struct control *ctl = l->d->control;
    (void)w;
    struct ctl_client *c = NULL;
    for (c = ctl ? ctl->clients : NULL; c && c->serial != l->serial; c = c->next)
        ;
    if (c && !c->dead) {
        if (l->id)
            json_object_set(l->reply, "id", l->id);
        ctl_send(c, l->reply);
        l->reply = NULL;
        ctl_rearm(c);
    }
    json_decref(l->reply);
    json_decref(l->id);
    free(l);
}

static json_t *errno_error(int r)
{
    return error_obj("GenericError", *vd_errmsg() ? vd_errmsg() : strerror(-r));
}

static const char *arg_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

/* An operation on a served volume, run on the thread that serves it: the
 * chain lives on that thread's context, and while it runs that thread's
 * loop does not, so no request of the volume starts meanwhile. */
struct vol_task {
    struct later l;
    struct export *ex;            /* a reference, dropped by the task */
    char vol[VD_NAME_MAX + 1], snap[VD_NAME_MAX + 1];
};

/* Sends a task's reply (l->reply) from worker 0, where the control clients
 * live. */
static void later_post(struct later *src)
{
    struct later *l = malloc(sizeof(*l));
    if (!l) {
        json_decref(src->reply);
        json_decref(src->id);
        return;
    }
    *l = *src;
    l->t.run = later_send;
    worker_post_task(&src->d->workers[0], &l->t);
}

void control_reply_post(struct vdiskd *d, uint64_t serial, json_t *id, json_t *reply)
{
    struct later l = { .d = d, .serial = serial, .id = id, .reply = reply };
    later_post(&l);
}

static void event_send(struct worker *w, struct task *t)
{
    struct later *l = (struct later *)t;
    (void)w;
    control_event(l->d, json_string_value(l->id), l->reply);
    json_decref(l->id);
    free(l);
}

void control_event_post(struct vdiskd *d, const char *name, json_t *data)
{
    struct later *l = calloc(1, sizeof(*l));
    if (!l) {
        json_decref(data);
        return;
    }
    l->t.run = event_send;
    l->d = d;
    l->id = json_string(name);   /* the event's name */
    l->reply = data;
    worker_post_task(&d->workers[0], &l->t);
}

/* Posts run for volume vol (snapshot snap) to ex's thread; takes the
 * reference to ex the caller holds.  Returns CTL_LATER or an error reply. */
static json_t *post_vol_task(struct ctl_client *c, struct export *ex, json_t *id,
                             const char *vol, const char *snap,
                             void (*run)(struct worker *w, struct task *t))
{
    struct vol_task *t = calloc(1, sizeof(*t));
    if (!t) {
        export_put(c->d, ex);
        return error_obj("GenericError", "out of memory");
    }
    t->l.t.run = run;
    t->l.d = c->d;
    t->l.serial = c->serial;
    t->l.id = json_incref(id);
    t->ex = ex;
    snprintf(t->vol, sizeof(t->vol), "%s", vol);
    snprintf(t->snap, sizeof(t->snap), "%s", snap);
    worker_post_task(ex->owner, &t->l.t);
    return CTL_LATER;
}

static void snap_run(struct worker *w, struct task *t)
{
    struct vol_task *st = (struct vol_task *)t;
    struct vdiskd *d = st->l.d;
    struct export *ex = st->ex;
    uint64_t t0 = vdiskd_now_ns();
    /* The requests in flight end before d->lock is taken: one may wait for
     * a block cache load of another thread, which may want d->lock.  None
     * starts meanwhile (this thread is here). */
    vd_chain_wait(ex->chain);
    pthread_mutex_lock(&d->lock);
    int r = vd_snapshot_create_open(d->store, st->vol, st->snap, ex->chain);
    uint64_t us = (vdiskd_now_ns() - t0) / 1000u;
    if (r == 0)
        ex->depth = vd_chain_depth(ex->chain);
    pthread_mutex_unlock(&d->lock);
    if (r < 0) {
        vlog(LOG_ERR, "snapshot %s@%s: %s", st->vol, st->snap,
             *vd_errmsg() ? vd_errmsg() : strerror(-r));
        st->l.reply = errno_error(r);
    } else {
        vlog(LOG_INFO, "snapshot %s@%s taken online on thread %u (I/O paused %llu us)",
             st->vol, st->snap, w->id, (unsigned long long)us);
        st->l.reply = json_pack("{s:{s:s,s:s,s:b,s:I}}", "return", "volume", st->vol,
                                "snapshot", st->snap, "online", 1, "pause-us",
                                (json_int_t)us);
    }
    export_put(d, ex);
    later_post(&st->l);
    free(st);
}

/* The 'volume' and 'name' arguments of the snapshot commands; NULL, or
 * an error reply naming cmd. */
static json_t *vol_snap_args(const char *cmd, json_t *args, const char **vol,
                             const char **snap)
{
    char msg[160];
    *vol = arg_str(args, "volume");
    *snap = arg_str(args, "name");
    if (!*vol || !*snap) {
        snprintf(msg, sizeof(msg), "%s needs 'volume' and 'name' (strings)", cmd);
        return error_obj("GenericError", msg);
    }
    if (strlen(*vol) > VD_NAME_MAX || strlen(*snap) > VD_NAME_MAX)
        return error_obj("GenericError", "name too long");
    return NULL;
}

static json_t *cmd_snapshot_create(struct ctl_client *c, json_t *args, json_t *id)
{
    struct vdiskd *d = c->d;
    const char *vol, *snap;
    json_t *bad = vol_snap_args("snapshot-create", args, &vol, &snap);
    if (bad)
        return bad;
    pthread_mutex_lock(&d->lock);
    struct export *ex = export_find_locked(d, vol);
    if (!ex || !ex->writable) {
        /* Not served for writing: the store does it as the CLI would. */
        int r = vd_snapshot_create(d->store, vol, snap);
        pthread_mutex_unlock(&d->lock);
        if (r < 0)
            return errno_error(r);
        return json_pack("{s:{s:s,s:s,s:b}}", "return", "volume", vol, "snapshot", snap,
                         "online", 0);
    }
    ex->refs++;   /* kept until the task ran */
    pthread_mutex_unlock(&d->lock);
    return post_vol_task(c, ex, id, vol, snap, snap_run);
}

/* snapshot-rollback on a served volume: its clients' disk changes under
 * them, so they are disconnected first (only with force), on the thread
 * that serves it; then the export is closed and the store rolls back. */
static void rb_run(struct worker *w, struct task *t)
{
    struct vol_task *rt = (struct vol_task *)t;
    struct vdiskd *d = rt->l.d;
    struct export *ex = rt->ex;
    char why[300];
    snprintf(why, sizeof(why), "volume %s rolled back to snapshot %s (forced)", rt->vol,
             rt->snap);
    jobs_cancel_export(w, ex, "the volume is rolled back");
    unsigned n = worker_disconnect_export(w, ex, why);
    int r;
    pthread_mutex_lock(&d->lock);
    if (ex->refs != 1) {
        /* Someone connected meanwhile (a handshake on another thread). */
        ex->refs--;
        pthread_mutex_unlock(&d->lock);
        rt->l.reply = error_obj("GenericError", "new clients connected to the volume "
                                                "meanwhile: try again");
        goto reply;
    }
    ex->refs = 0;
    export_close_locked(d, ex);
    r = vd_snapshot_rollback(d->store, rt->vol, rt->snap);
    pthread_mutex_unlock(&d->lock);
    if (r < 0) {
        vlog(LOG_ERR, "rollback %s to %s: %s", rt->vol, rt->snap,
             *vd_errmsg() ? vd_errmsg() : strerror(-r));
        rt->l.reply = errno_error(r);
    } else {
        vlog(LOG_INFO, "volume %s rolled back to snapshot %s (%u client(s) disconnected)",
             rt->vol, rt->snap, n);
        rt->l.reply = json_pack("{s:{s:s,s:s,s:b,s:i}}", "return", "volume", rt->vol,
                                "snapshot", rt->snap, "online", 1, "disconnected", (int)n);
    }
reply:
    later_post(&rt->l);
    free(rt);
}

/* "'NAME' is in use by N NBD client(s): PEER, ..." (d->lock held);
 * returns the length written. */
static size_t users_msg(struct export *ex, char *msg, size_t size)
{
    unsigned n = 0, shown = 0;
    for (const struct client *u = ex->users; u; u = client_user_next(u))
        n++;
    size_t len = (size_t)snprintf(msg, size, "'%s' is in use by %u NBD client(s):", ex->name, n);
    for (const struct client *u = ex->users; u && len < size; u = client_user_next(u)) {
        if (++shown > 8) {
            len += (size_t)snprintf(msg + len, size - len, " ...");
            break;
        }
        len += (size_t)snprintf(msg + len, size - len, "%s %s", shown > 1 ? "," : "",
                                client_peer(u));
    }
    return len < size ? len : size;
}

static json_t *cmd_snapshot_rollback(struct ctl_client *c, json_t *args, json_t *id)
{
    struct vdiskd *d = c->d;
    const char *vol, *snap;
    json_t *fj = json_object_get(args, "force");
    json_t *bad = vol_snap_args("snapshot-rollback", args, &vol, &snap);
    if (bad)
        return bad;
    if (fj && !json_is_boolean(fj))
        return error_obj("GenericError", "snapshot-rollback: 'force' must be a boolean");
    pthread_mutex_lock(&d->lock);
    struct export *ex = export_find_locked(d, vol);
    if (!ex) {
        int r = vd_snapshot_rollback(d->store, vol, snap);
        pthread_mutex_unlock(&d->lock);
        if (r < 0)
            return errno_error(r);
        return json_pack("{s:{s:s,s:s,s:b,s:i}}", "return", "volume", vol, "snapshot", snap,
                         "online", 0, "disconnected", 0);
    }
    if (ex->users && !json_is_true(fj)) {
        char msg[1024];
        size_t len = users_msg(ex, msg, sizeof(msg));
        if (len < sizeof(msg))
            snprintf(msg + len, sizeof(msg) - len,
                     "; rolling back changes their disk under them: force disconnects "
                     "them first (vdisk snapshot rollback --force)");
        pthread_mutex_unlock(&d->lock);
        return error_obj("GenericError", msg);
    }
    ex->refs++;   /* kept until the task ran */
    pthread_mutex_unlock(&d->lock);
    return post_vol_task(c, ex, id, vol, snap, rb_run);
}

/* ---- export-add, export-remove ---- */

static json_t *cmd_export_add(struct ctl_client *c, json_t *args)
{
    const char *name = arg_str(args, "name"), *target = arg_str(args, "target");
    json_t *ro = json_object_get(args, "read-only");
    char err[512];
    if (!name || (json_object_get(args, "target") && !target) || (ro && !json_is_boolean(ro)))
        return error_obj("GenericError", "export-add needs 'name' (a string), and takes "
                                         "'target' (a string) and 'read-only' (a boolean)");
    if (export_cfg_add(c->d, name, target, json_is_true(ro), err, sizeof(err)) < 0)
        return error_obj("GenericError", err);
    return json_pack("{s:{}}", "return");
}

/* export-remove of an open export in "hard" mode, on its thread: its
 * jobs stop, its clients are disconnected, it closes. */
static void rm_run(struct worker *w, struct task *t)
{
    struct vol_task *rt = (struct vol_task *)t;
    struct vdiskd *d = rt->l.d;
    struct export *ex = rt->ex;
    jobs_cancel_export(w, ex, "the export is removed");
    unsigned n = worker_disconnect_export(w, ex, "the export was removed (export-remove)");
    vlog(LOG_INFO, "export %s removed: %u client(s) disconnected", rt->vol, n);
    export_put(d, ex);
    rt->l.reply = json_pack("{s:{s:i}}", "return", "disconnected", (int)n);
    later_post(&rt->l);
    free(rt);
}

static json_t *cmd_export_remove(struct ctl_client *c, json_t *args, json_t *id)
{
    struct vdiskd *d = c->d;
    const char *name = arg_str(args, "name"), *mode = arg_str(args, "mode");
    char err[1024];
    bool alias;
    if (!name || (json_object_get(args, "mode") && !mode))
        return error_obj("GenericError", "export-remove needs 'name' (a string), and takes "
                                         "'mode' (\"safe\" or \"hard\")");
    bool hard = mode && strcmp(mode, "hard") == 0;
    if (mode && !hard && strcmp(mode, "safe") != 0)
        return error_obj("GenericError", "export-remove: 'mode' is \"safe\" or \"hard\"");
    if (strlen(name) > EXPORT_NAME_MAX)
        return error_obj("GenericError", "name too long");
    pthread_mutex_lock(&d->lock);
    struct export *ex = export_find_locked(d, name);
    if (ex && ex->refs == 0)
        ex = NULL;   /* closing */
    if (ex && !hard) {
        bool job = false;
        for (struct job *j = d->jobs; j; j = j->next)
            job |= j->ex == ex;
        if (ex->users || job) {
            size_t len = ex->users ? users_msg(ex, err, sizeof(err))
                                   : (size_t)snprintf(err, sizeof(err), "'%s' has a job "
                                                      "running (query-jobs)", name);
            if (len < sizeof(err))
                snprintf(err + len, sizeof(err) - len, "; mode \"hard\" disconnects them");
            pthread_mutex_unlock(&d->lock);
            return error_obj("GenericError", err);
        }
    }
    int r = export_cfg_remove_locked(d, name, &alias, err, sizeof(err));
    if (r < 0 || alias || !ex) {
        pthread_mutex_unlock(&d->lock);
        if (r < 0)
            return error_obj("GenericError", err);
        return json_pack("{s:{s:i}}", "return", "disconnected", 0);
    }
    ex->refs++;   /* kept until the task ran */
    pthread_mutex_unlock(&d->lock);
    return post_vol_task(c, ex, id, name, "", rm_run);
}

static json_t *cmd_query_export_config(struct ctl_client *c, json_t *args)
{
    (void)args;
    return json_pack("{s:o}", "return", export_cfg_query(c->d));
}

/* ---- pools (the catalog's; the broker is pools.c) ---- */

static json_t *pool_json(const struct vd_pool_info *p)
{
    return json_pack("{s:s,s:s,s:i,s:i,s:i,s:s,s:i,s:i,s:i}", "name", p->name, "template",
                     p->template_name, "version", (int)p->version, "size", (int)p->size,
                     "spares", (int)p->spares, "mode",
                     p->mode == VD_POOL_PERSISTENT ? "persistent" : "ephemeral", "clones",
                     (int)p->clones, "sessions", (int)p->sessions, "ready", (int)p->ready);
}

static const char *state_names[] = { "spare", "session", "idle" };

static json_t *cmd_query_pools(struct ctl_client *c, json_t *args)
{
    struct vdiskd *d = c->d;
    struct vd_pool_info *p = NULL;
    size_t n = 0;
    (void)args;
    pthread_mutex_lock(&d->lock);
    int r = vd_pool_list(d->store, &p, &n);
    json_t *list = json_array();
    for (size_t i = 0; r == 0 && i < n; i++) {
        json_t *o = pool_json(&p[i]), *cl = json_array();
        struct vd_pool_clone *k = NULL;
        struct vd_pool_info pi;
        size_t nk = 0;
        if (vd_pool_info(d->store, p[i].name, &pi, &k, &nk) == 0) {
            for (size_t j = 0; j < nk; j++) {
                json_t *e = json_pack("{s:s,s:s,s:i,s:I}", "volume", k[j].volume, "state",
                                      state_names[k[j].state], "version", (int)k[j].version,
                                      "since", (json_int_t)k[j].since);
                if (k[j].user[0])
                    json_object_set_new(e, "user", json_string(k[j].user));
                if (k[j].holder[0])
                    json_object_set_new(e, "holder", json_string(k[j].holder));
                json_array_append_new(cl, e);
            }
            free(k);
        }
        json_object_set_new(o, "clone-list", cl);
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&d->lock);
    free(p);
    if (r < 0) {
        json_decref(list);
        return errno_error(r);
    }
    return json_pack("{s:o}", "return", list);
}

static json_t *cmd_pool_create(struct ctl_client *c, json_t *args)
{
    struct vdiskd *d = c->d;
    const char *name = arg_str(args, "name"), *tpl = arg_str(args, "template");
    const char *mode = arg_str(args, "mode");
    json_t *size = json_object_get(args, "size"), *spares = json_object_get(args, "spares");
    json_t *ver = json_object_get(args, "version");
    if (!name || !tpl || !json_is_integer(size) || (spares && !json_is_integer(spares)) ||
        (ver && !json_is_integer(ver)) || (json_object_get(args, "mode") && !mode) ||
        (mode && strcmp(mode, "ephemeral") != 0 && strcmp(mode, "persistent") != 0))
        return error_obj("GenericError", "pool-create needs 'name', 'template' (strings) and "
                                         "'size' (a number), and takes 'spares', 'version' "
                                         "(numbers) and 'mode' (\"ephemeral\" or "
                                         "\"persistent\")");
    json_int_t n = json_integer_value(size);
    json_int_t k = spares ? json_integer_value(spares) : (n < 2 ? n : 2);
    json_int_t v = ver ? json_integer_value(ver) : 0;
    if (n < 1 || n > 100000 || k < 0 || k > n || v < 0 || v > UINT32_MAX)
        return error_obj("GenericError", "pool-create: 1 <= size <= 100000, 0 <= spares <= "
                                         "size");
    pthread_mutex_lock(&d->lock);
    int r = vd_pool_create(d->store, name, tpl, (uint32_t)v, (unsigned)n, (unsigned)k,
                           mode && strcmp(mode, "persistent") == 0 ? VD_POOL_PERSISTENT
                                                                   : VD_POOL_EPHEMERAL);
    pthread_mutex_unlock(&d->lock);
    if (r < 0)
        return errno_error(r);
    return json_pack("{s:{}}", "return");
}

static json_t *cmd_pool_remove(struct ctl_client *c, json_t *args)
{
    const char *name = arg_str(args, "name");
    if (!name)
        return error_obj("GenericError", "pool-remove needs 'name' (a string)");
    pthread_mutex_lock(&c->d->lock);
    int r = vd_pool_remove(c->d->store, name);
    pthread_mutex_unlock(&c->d->lock);
    return r < 0 ? errno_error(r) : json_pack("{s:{}}", "return");
}

static json_t *cmd_pool_recompose(struct ctl_client *c, json_t *args)
{
    const char *name = arg_str(args, "name");
    json_t *ver = json_object_get(args, "version");
    if (!name || (ver && (!json_is_integer(ver) || json_integer_value(ver) < 0 ||
                          json_integer_value(ver) > UINT32_MAX)))
        return error_obj("GenericError", "pool-recompose needs 'name' (a string), and takes "
                                         "'version' (a number)");
    pthread_mutex_lock(&c->d->lock);
    int r = vd_pool_recompose(c->d->store, name, ver ? (uint32_t)json_integer_value(ver) : 0);
    pthread_mutex_unlock(&c->d->lock);
    if (r < 0)
        return errno_error(r);
    __atomic_store_n(&c->d->pools_dirty, true, __ATOMIC_RELAXED);
    return json_pack("{s:{}}", "return");
}

/* snapshot-commit: a job (jobs.c); its id comes in the reply, its end in a
 * JOB_COMPLETED or JOB_CANCELLED event. */
static json_t *cmd_snapshot_commit(struct ctl_client *c, json_t *args, json_t *id)
{
    const char *vol, *snap;
    char err[1024];
    json_t *bad = vol_snap_args("snapshot-commit", args, &vol, &snap);
    if (bad)
        return bad;
    json_t *sp = json_object_get(args, "speed");
    if (sp && (!json_is_integer(sp) || json_integer_value(sp) < 0))
        return error_obj("GenericError", "snapshot-commit: 'speed' must be a number of "
                                         "bytes per second (0: no limit)");
    if (strchr(vol, '@'))
        return error_obj("GenericError", "snapshot-commit: 'volume' names a volume");
    if (job_commit_start(c->d, vol, snap, sp ? (uint64_t)json_integer_value(sp) : 0,
                         c->serial, id, err, sizeof(err)) < 0)
        return error_obj("GenericError", err);
    return CTL_LATER;
}

static json_t *cmd_query_jobs(struct ctl_client *c, json_t *args)
{
    (void)args;
    return json_pack("{s:o}", "return", jobs_query(c->d));
}

static json_t *cmd_job_cancel(struct ctl_client *c, json_t *args)
{
    json_t *idj = json_object_get(args, "id");
    if (!json_is_integer(idj))
        return error_obj("GenericError", "job-cancel needs 'id' (a number, from query-jobs)");
    json_int_t id = json_integer_value(idj);
    if (id <= 0 || id > UINT32_MAX || job_cancel(c->d, (unsigned)id) < 0)
        return error_obj("GenericError", "no such job");
    return json_pack("{s:{}}", "return");
}

#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* The upper bound (us) of the bucket holding the q-th quantile (0..1). */
static json_int_t lat_quantile(const uint64_t *h, uint64_t total, double q)
{
    if (!total)
        return 0;
    uint64_t want = (uint64_t)((double)total * q), seen = 0;
    if (want >= total)
        want = total - 1;
    for (unsigned k = 0; k < STAT_LAT_BUCKETS; k++) {
        seen += h[k];
        if (seen > want)
            return (json_int_t)1 << (k + 1);
    }
    return (json_int_t)1 << STAT_LAT_BUCKETS;
}

static json_t *cmd_query_stats(struct ctl_client *c, json_t *args)
{
    struct vdiskd *d = c->d;
    (void)args;
    static const char *kinds[ST_KINDS] = { "read", "write", "flush", "trim", "zero", "cache" };
    json_t *list = json_array();
    time_t now = time(NULL);
    pthread_mutex_lock(&d->lock);
    for (struct export *ex = d->exports; ex; ex = ex->next) {
        if (ex->refs == 0)
            continue;
        uint64_t h[STAT_LAT_BUCKETS], total = 0;
        for (unsigned k = 0; k < STAT_LAT_BUCKETS; k++)
            total += (h[k] = GET(ex->st.lat[k]));
        uint64_t started = GET(ex->st.started), completed = GET(ex->st.completed);
        json_t *ops = json_object();
        for (unsigned k = 0; k < ST_KINDS; k++)
            json_object_set_new(ops, kinds[k], json_integer((json_int_t)GET(ex->st.ops[k])));
        unsigned top = 0;
        for (unsigned k = 0; k < STAT_LAT_BUCKETS; k++)
            if (h[k])
                top = k;
        json_t *o = json_pack(
            "{s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:{s:I,s:I,s:I,s:I}}", "name", ex->name,
            "ops", ops, "read-bytes", (json_int_t)GET(ex->st.bytes_read), "written-bytes",
            (json_int_t)GET(ex->st.bytes_written), "errors", (json_int_t)GET(ex->st.errors),
            "in-flight", (json_int_t)(started - completed), "seconds",
            (json_int_t)(now - ex->opened), "connections", (int)ex->refs, "thread",
            (int)ex->owner->id, "latency-us", "p50", lat_quantile(h, total, 0.5), "p90",
            lat_quantile(h, total, 0.9), "p99", lat_quantile(h, total, 0.99), "max",
            total ? (json_int_t)1 << (top + 1) : 0);
        uint64_t frb, chb;
        vd_chain_read_stats(ex->chain, &frb, &chb);
        json_object_set_new(o, "frozen-read-bytes", json_integer((json_int_t)frb));
        json_object_set_new(o, "cache-hit-bytes", json_integer((json_int_t)chb));
        /* Space: what the volume's own layers hold. */
        struct vd_volume_info vi;
        if (o && ex->writable && vd_volume_info(d->store, ex->name, &vi) == 0)
            json_object_set_new(o, "allocated", json_integer((json_int_t)vi.allocated));
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&d->lock);
    json_t *ret = json_pack("{s:{s:o,s:I}}", "return", "exports", list, "connections",
                            (json_int_t)__atomic_load_n(&d->nclients, __ATOMIC_ACQUIRE));
    struct vd_layer_cache_stats ls;
    vd_layer_cache_stats(d->cache, &ls);
    if (ret)
        json_object_set_new(json_object_get(ret, "return"), "frozen-layers",
                            json_pack("{s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I}}",
                                      "physical-read-bytes", (json_int_t)ls.frozen_read_bytes,
                                      "block-cache", "size", (json_int_t)ls.block_cache_size,
                                      "used", (json_int_t)ls.block_cache_used, "hits",
                                      (json_int_t)ls.block_cache_hits, "hit-bytes",
                                      (json_int_t)ls.block_cache_hit_bytes, "loads",
                                      (json_int_t)ls.block_cache_loads, "waits",
                                      (json_int_t)ls.block_cache_waits));
    uint64_t total = GET(d->space.total), avail = GET(d->space.avail);
    if (ret && total)
        json_object_set_new(json_object_get(ret, "return"), "store",
                            json_pack("{s:s,s:I,s:I}", "path", vd_store_path(d->store),
                                      "free-bytes", (json_int_t)avail, "total-bytes",
                                      (json_int_t)total));
    return ret;
}

static json_t *cmd_quit(struct ctl_client *c, json_t *args)
{
    (void)args;
    c->quit = true;
    return json_pack("{s:{}}", "return");
}

static json_t *cmd_capabilities(struct ctl_client *c, json_t *args)
{
    (void)c;
    (void)args;
    return json_pack("{s:{}}", "return");
}

static const struct {
    const char *name;
    ctl_cmd_fn fn;
    ctl_cmd_later_fn later;       /* instead of fn: may answer later */
} commands[] = {
    { "snapshot-create", NULL, cmd_snapshot_create },
    { "snapshot-rollback", NULL, cmd_snapshot_rollback },
    { "snapshot-commit", NULL, cmd_snapshot_commit },
    { "job-cancel", cmd_job_cancel, NULL },
    { "export-add", cmd_export_add, NULL },
    { "export-remove", NULL, cmd_export_remove },
    { "query-export-config", cmd_query_export_config, NULL },
    { "query-pools", cmd_query_pools, NULL },
    { "pool-create", cmd_pool_create, NULL },
    { "pool-remove", cmd_pool_remove, NULL },
    { "pool-recompose", cmd_pool_recompose, NULL },
    { "query-jobs", cmd_query_jobs, NULL },
    { "qmp_capabilities", cmd_capabilities, NULL },
    { "query-version", cmd_query_version, NULL },
    { "query-volumes", cmd_query_volumes, NULL },
    { "query-exports", cmd_query_exports, NULL },
    { "query-stats", cmd_query_stats, NULL },
    { "quit", cmd_quit, NULL },
};

static void run_line(struct ctl_client *c, const char *line, size_t len)
{
    json_error_t err;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err), *reply;
    json_t *id = NULL;
    if (!req) {
        char msg[256];
        snprintf(msg, sizeof(msg), "JSON parse error: %s (column %d)", err.text, err.column);
        ctl_send(c, error_obj("GenericError", msg));
        return;
    }
    if (!json_is_object(req)) {
        reply = error_obj("GenericError", "a command must be a JSON object");
        goto out;
    }
    id = json_object_get(req, "id");
    const char *name = json_string_value(json_object_get(req, "execute"));
    json_t *args = json_object_get(req, "arguments");
    if (!name) {
        reply = error_obj("GenericError", "'execute' must name a command (a string)");
        goto out;
    }
    if (args && !json_is_object(args)) {
        reply = error_obj("GenericError", "'arguments' must be an object");
        goto out;
    }
    reply = NULL;
    if (c->read_only && !control_ro_allows(name)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "read-only control socket: %.100s is not a query; use "
                 "the control socket", name);
        reply = error_obj("GenericError", msg);
        goto out;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            reply = commands[i].fn ? commands[i].fn(c, args) : commands[i].later(c, args, id);
            break;
        }
    }
    if (!reply) {
        char msg[160];
        snprintf(msg, sizeof(msg), "The command %.100s has not been found", name);
        reply = error_obj("CommandNotFound", msg);
    }
out:
    if (reply == CTL_LATER) {
        json_decref(req);
        return;
    }
    if (reply && id)
        json_object_set(reply, "id", id);
    ctl_send(c, reply);
    json_decref(req);
    if (c->quit) {
        c->quit = false;
        vdiskd_stop(c->d, "control: quit");
    }
}

/* ---- clients ---- */

void ctl_free(struct control *ctl, struct ctl_client *c)
{
    struct ctl_client **pp;
    for (pp = &ctl->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    loop_del(&c->d->workers[0], &c->w);
    close(c->w.fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void ctl_read(struct ctl_client *c)
{
    for (int round = 0; round < 16 && !c->dead && !c->closing; round++) {
        if (c->incap - c->inlen < 4096) {
            size_t cap = c->incap ? c->incap * 2 : 8192;
            char *b = realloc(c->in, cap);
            if (!b) {
                c->dead = true;
                return;
            }
            c->in = b;
            c->incap = cap;
        }
        ssize_t n = recv(c->w.fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
        if (n == 0) {
            c->closing = true;   /* the client is done: answer what it sent */
        } else if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = true;
            return;
        } else {
            c->inlen += (size_t)n;
        }
        /* Every complete line is a command. */
        size_t start = 0;
        for (size_t i = 0; i < c->inlen; i++) {
            if (c->in[i] != '\n')
                continue;
            size_t l = i - start;
            while (l && (c->in[start + l - 1] == '\r' || c->in[start + l - 1] == ' '))
                l--;
            if (l)
                run_line(c, c->in + start, l);
            start = i + 1;
        }
        memmove(c->in, c->in + start, c->inlen - start);
        c->inlen -= start;
        if (c->inlen > CTL_MAX_LINE) {
            ctl_send(c, error_obj("GenericError", "command line too long"));
            c->closing = true;
        }
        if (n == 0)
            return;
    }
}

void ctl_client_io(struct watch *w, uint32_t events)
{
    struct ctl_client *c = (struct ctl_client *)w;
    struct control *ctl = c->d->control;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        ctl_read(c);
    if (events & EPOLLOUT)
        ctl_flush(c);
    if (c->closing)
        ctl_flush(c);
    if (c->dead) {
        ctl_free(ctl, c);
        return;
    }
    ctl_rearm(c);
}
