/*
 * pools.c - the broker of desktop pools (libvdisk's vd_pool_*).
 *
 * Export names:
 *   pool/POOL        ephemeral pools: each connection is a session and gets
 *                    a clone of its own, removed when the connection ends;
 *   pool/POOL/USER   persistent pools: USER's clone, kept between sessions;
 *                    USER's connections share it.
 * A clone is served under its own export (its volume name), marked with
 * its pool; the clone's volume name itself is not served nor listed, so a
 * session's clone is reached only through the pool: an ephemeral clone by
 * the one connection that took it (every pool/POOL connection takes a
 * clone of its own), a persistent one by its user's connections (the
 * access rules, access.c, hold pool/POOL/USER to USER).
 *
 * Worker 0 keeps the spares: a timer every POOLS_PERIOD_MS looks at every
 * pool and, where fewer spares of the current template version are ready
 * than asked (after sessions took them, or a recompose), fills it.  At
 * start every session recorded by an earlier run is over (vd_pool_reset).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vdiskd.h"

#define POOLS_PERIOD_MS 500

/* "pool/POOL[/USER]": 1 with pool and user (or "") filled, 0 if name is
 * not a pool name, -ENOENT if malformed. */
static int parse(const char *name, char pool[VD_NAME_MAX + 1], char user[VD_NAME_MAX + 1])
{
    if (strncmp(name, "pool/", 5) != 0)
        return 0;
    const char *p = name + 5, *slash = strchr(p, '/');
    size_t pl = slash ? (size_t)(slash - p) : strlen(p);
    if (pl == 0 || pl > VD_NAME_MAX || (slash && (strlen(slash + 1) == 0 ||
                                                  strlen(slash + 1) > VD_NAME_MAX)))
        return -ENOENT;
    memcpy(pool, p, pl);
    pool[pl] = '\0';
    snprintf(user, VD_NAME_MAX + 1, "%s", slash ? slash + 1 : "");
    return 1;
}

int pools_open_locked(struct vdiskd *d, struct worker *w, const char *name, const char *peer,
                      bool query, struct export **out)
{
    char pool[VD_NAME_MAX + 1], user[VD_NAME_MAX + 1], vol[VD_NAME_MAX + 1];
    int r = parse(name, pool, user);
    if (r <= 0)
        return r < 0 ? r : -EINVAL;
    if (query) {
        /* NBD_OPT_INFO and the like: what a session would get, without
         * taking a clone for a connection that may never use it. */
        struct vd_pool_info pi;
        char tv[2 * VD_NAME_MAX + 16];
        if ((r = vd_pool_info(d->store, pool, &pi, NULL, NULL)) < 0)
            return r;
        if ((pi.mode == VD_POOL_PERSISTENT) != (user[0] != '\0'))
            return -ENOENT;
        snprintf(tv, sizeof(tv), "%s@%u", pi.template_name, (unsigned)pi.version);
        return export_get_locked(d, w, tv, out);
    }
    r = vd_pool_take(d->store, pool, user[0] ? user : NULL, peer, vol);
    if (r < 0) {
        vlog(LOG_ERR, "%s: %s: %s", peer, name, *vd_errmsg() ? vd_errmsg() : strerror(-r));
        return r == -ENOSPC ? -EAGAIN : r == -EINVAL ? -ENOENT : r;
    }
    struct export *ex = export_find_locked(d, vol);
    bool shared = ex && ex->refs > 0;
    r = export_get_clone_locked(d, w, vol, pool, out);
    if (r < 0) {
        if (!shared)
            vd_pool_release(d->store, pool, vol);
        return r;
    }
    __atomic_store_n(&d->pools_dirty, true, __ATOMIC_RELAXED);
    vlog(LOG_INFO, "%s: session on %s: clone %s", peer, name, vol);
    return 0;
}

void pools_closed_locked(struct vdiskd *d, const char *pool, const char *vol)
{
    int r = vd_pool_release(d->store, pool, vol);
    if (r < 0)
        vlog(LOG_ERR, "pool %s: ending the session of %s: %s", pool, vol,
             *vd_errmsg() ? vd_errmsg() : strerror(-r));
    else
        vlog(LOG_INFO, "pool %s: session on clone %s ended", pool, vol);
    __atomic_store_n(&d->pools_dirty, true, __ATOMIC_RELAXED);
    if (d->workers)
        worker_wake(&d->workers[0]);
}

bool pools_hidden_locked(struct vdiskd *d, const char *name)
{
    char base[VD_NAME_MAX + 1], pool[VD_NAME_MAX + 1];
    const char *at = strchr(name, '@');
    size_t bl = at ? (size_t)(at - name) : strlen(name);
    if (bl == 0 || bl > VD_NAME_MAX)
        return false;
    memcpy(base, name, bl);
    base[bl] = '\0';
    /* Clones are named POOL.NNNN: other names need no catalog lookup (this
     * runs for every export opened and every volume listed). */
    const char *dot = strrchr(base, '.');
    if (!dot || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1))
        return false;
    return vd_pool_of_volume(d->store, base, pool) == 0;
}

int pools_list_locked(struct vdiskd *d, const struct vd_peer *who, struct nbds_list *l)
{
    struct vd_pool_info *p = NULL;
    size_t n = 0;
    int r = vd_pool_list(d->store, &p, &n);
    if (r < 0)
        return 0;   /* the store's other names are listed anyway */
    for (size_t i = 0; i < n && r >= 0; i++) {
        char name[VD_NAME_MAX + 8], desc[256];
        snprintf(name, sizeof(name), "pool/%s", p[i].name);
        if (!access_listed_locked(d, name, who))
            continue;
        if (p[i].mode == VD_POOL_EPHEMERAL)
            snprintf(desc, sizeof(desc), "pool %s: a fresh linked clone of %s v%u per "
                     "connection (%u of %u in use)", p[i].name, p[i].template_name,
                     (unsigned)p[i].version, p[i].sessions, p[i].size);
        else
            snprintf(desc, sizeof(desc), "pool %s: persistent clones of %s; connect to "
                     "pool/%s/USER", p[i].name, p[i].template_name, p[i].name);
        r = nbds_list_add(l, name, desc);
    }
    free(p);
    return r < 0 ? r : 0;
}

/* Fills the pools that need it (worker 0). */
static void pools_fill(struct vdiskd *d)
{
    struct vd_pool_info *p = NULL;
    size_t n = 0;
    pthread_mutex_lock(&d->lock);
    int r = vd_pool_list(d->store, &p, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        bool stale = p[i].clones - p[i].sessions > p[i].ready &&
                     p[i].mode == VD_POOL_EPHEMERAL;
        if ((p[i].ready >= p[i].spares || p[i].clones >= p[i].size) && !stale)
            continue;
        unsigned made = 0, dropped = 0;
        int e = vd_pool_fill(d->store, p[i].name, &made, &dropped);
        if (e < 0)
            vlog(LOG_ERR, "pool %s: making spares: %s", p[i].name,
                 *vd_errmsg() ? vd_errmsg() : strerror(-e));
        if (made || dropped)
            vlog(LOG_INFO, "pool %s: %u spare(s) made, %u of an old version removed",
                 p[i].name, made, dropped);
    }
    pthread_mutex_unlock(&d->lock);
    free(p);
}

static void pools_tick(struct watch *w, uint32_t events)
{
    struct vdiskd *d = (struct vdiskd *)((char *)w - offsetof(struct vdiskd, pools_timer));
    uint64_t n;
    (void)events;
    if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    pools_fill(d);
    __atomic_store_n(&d->pools_dirty, false, __ATOMIC_RELAXED);
}

void pools_kick(struct vdiskd *d)
{
    if (__atomic_exchange_n(&d->pools_dirty, false, __ATOMIC_RELAXED))
        pools_fill(d);
}

int pools_start(struct vdiskd *d)
{
    pthread_mutex_lock(&d->lock);
    int r = vd_pool_reset(d->store);
    pthread_mutex_unlock(&d->lock);
    if (r < 0)
        vlog(LOG_ERR, "pools: ending the sessions of the last run: %s",
             *vd_errmsg() ? vd_errmsg() : strerror(-r));
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct itimerspec it = { .it_interval = { 0, POOLS_PERIOD_MS * 1000000L },
                             .it_value = { 0, 1 } };
    if (timerfd_settime(fd, 0, &it, NULL) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    d->pools_timer.fd = fd;
    d->pools_timer.cb = pools_tick;
    if ((r = loop_add(&d->workers[0], &d->pools_timer, EPOLLIN)) < 0) {
        close(fd);
        d->pools_timer.fd = -1;
    }
    return r;
}

void pools_stop(struct vdiskd *d)
{
    if (d->pools_timer.fd < 0)
        return;
    loop_del(&d->workers[0], &d->pools_timer);
    close(d->pools_timer.fd);
    d->pools_timer.fd = -1;
}
