/*
 * space.c - watching the free space of the store's filesystem.
 *
 * Volumes are thin: a write may be the first to need a block, and a full
 * filesystem fails it (the client gets NBD ENOSPC, the volume stays
 * consistent: libvdisk allocates before it acknowledges).  So the daemon
 * says early that space runs out: every SPACE_PERIOD_S seconds worker 0
 * looks at statfs() of the store, and when the free share falls below one
 * of the thresholds (--space-warn, percent, default 10,5,1) it logs a
 * warning and sends a SPACE_LOW event; once it is back above the threshold
 * by SPACE_HYST percent, SPACE_OK.  query-stats reports the figures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/vfs.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <jansson.h>

#include "vdiskd.h"

#define SPACE_PERIOD_S 2
#define SPACE_HYST 1.0

int space_parse(struct vdiskd *d, const char *arg)
{
    char *copy = strdup(arg), *save = NULL;
    unsigned n = 0;
    if (!copy)
        return -ENOMEM;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(t, &end);
        if (end == t || *end || !(v > 0 && v < 100) || n == SPACE_MAX_LEVELS) {
            free(copy);
            return -EINVAL;
        }
        d->space.levels[n++] = v;
    }
    free(copy);
    if (!n)
        return -EINVAL;
    /* Highest first: level i is "below levels[i]". */
    for (unsigned i = 0; i < n; i++)
        for (unsigned k = i + 1; k < n; k++)
            if (d->space.levels[k] > d->space.levels[i]) {
                double t = d->space.levels[i];
                d->space.levels[i] = d->space.levels[k];
                d->space.levels[k] = t;
            }
    d->space.nlevels = n;
    return 0;
}

/* How many thresholds the free share is below, with the hysteresis of
 * the current state on the way up. */
static unsigned level_of(const struct space *s, double pct)
{
    unsigned lv = 0;
    for (unsigned i = 0; i < s->nlevels; i++) {
        double th = s->levels[i] + (i < s->level ? SPACE_HYST : 0);
        if (pct < th)
            lv = i + 1;
    }
    return lv;
}

void space_check(struct vdiskd *d)
{
    struct space *s = &d->space;
    struct statfs sv;
    if (statfs(vd_store_path(d->store), &sv) < 0 || sv.f_blocks == 0)
        return;
    uint64_t total = (uint64_t)sv.f_blocks * sv.f_frsize;
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    double pct = 100.0 * (double)avail / (double)total;
    __atomic_store_n(&s->total, total, __ATOMIC_RELAXED);
    __atomic_store_n(&s->avail, avail, __ATOMIC_RELAXED);
    unsigned lv = level_of(s, pct);
    if (lv == s->level)
        return;
    char a[32], t[32];
    fmt_size(avail, a, sizeof(a));
    fmt_size(total, t, sizeof(t));
    json_t *e = json_pack("{s:s,s:I,s:I,s:f}", "store", vd_store_path(d->store), "free-bytes",
                          (json_int_t)avail, "total-bytes", (json_int_t)total, "free-percent",
                          pct);
    if (lv > s->level) {
        vlog(LOG_WARNING, "store %s: only %s free of %s (%.1f%%, below %g%%): writes that "
             "need new blocks will fail with ENOSPC when it is full",
             vd_store_path(d->store), a, t, pct, s->levels[lv - 1]);
        json_object_set_new(e, "threshold-percent", json_real(s->levels[lv - 1]));
        control_event(d, "SPACE_LOW", e);
    } else {
        vlog(LOG_INFO, "store %s: %s free of %s (%.1f%%)%s", vd_store_path(d->store), a, t,
             pct, lv ? "" : ": above every threshold again");
        if (lv)
            json_object_set_new(e, "threshold-percent", json_real(s->levels[lv - 1]));
        control_event(d, lv ? "SPACE_LOW" : "SPACE_OK", e);
    }
    s->level = lv;
}

static void space_tick(struct watch *w, uint32_t events)
{
    struct vdiskd *d = (struct vdiskd *)((char *)w - offsetof(struct vdiskd, space.timer));
    uint64_t n;
    (void)events;
    if (read(w->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    space_check(d);
}

int space_start(struct vdiskd *d)
{
    if (!d->space.nlevels)
        space_parse(d, "10,5,1");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct itimerspec it = { .it_interval = { SPACE_PERIOD_S, 0 }, .it_value = { 0, 1 } };
    if (timerfd_settime(fd, 0, &it, NULL) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    d->space.timer.fd = fd;
    d->space.timer.cb = space_tick;
    int r = loop_add(&d->workers[0], &d->space.timer, EPOLLIN);
    if (r < 0) {
        close(fd);
        d->space.timer.fd = -1;
    }
    return r;
}

void space_stop(struct vdiskd *d)
{
    if (d->space.timer.fd < 0)
        return;
    loop_del(&d->workers[0], &d->space.timer);
    close(d->space.timer.fd);
    d->space.timer.fd = -1;
}
