/*
 * control-sock.c - the control API's sockets: listening, accepting, who
 * may connect, and the read-only socket (--control-ro) for monitoring,
 * which takes queries only (docs/CONTROL-API.md).  control.c runs the
 * commands.
 *
 * The control socket's mode (0600, or 0660 with --control-group) is the
 * first gate; the peer's credentials, checked at accept, are the second,
 * so that a mode widened by hand (chmod 0666, a socket bind-mounted into a
 * container) does not hand the store to every local user.
 */
#include <errno.h>
#include <grp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

static bool in_group(int fd, uint32_t gid, uint32_t primary)
{
    if (primary == gid)
        return true;
    uint32_t *g;
    size_t n = peer_groups(fd, &g);
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        found = g[i] == gid;
    free(g);
    return found;
}

/* May the peer of control connection fd use the socket: the daemon's own
 * user, root, or a member (primary or supplementary group) of one of
 * groups (-1: none)?  0, or -EACCES with the reason in why. */
static int peer_check(int fd, const gid_t *groups, size_t ngroups, char *why, size_t len)
{
    struct ucred cr;
    socklen_t l = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) {
        snprintf(why, len, "the peer's credentials are unknown (%s)", strerror(errno));
        return -EACCES;
    }
    if (cr.uid == 0 || cr.uid == geteuid())
        return 0;
    bool any_group = false;
    for (size_t i = 0; i < ngroups; i++) {
        if (groups[i] == (gid_t)-1)
            continue;
        any_group = true;
        if (in_group(fd, (uint32_t)groups[i], (uint32_t)cr.gid))
            return 0;
    }
    snprintf(why, len, "uid %u (pid %d) may not use this control socket: only the daemon's "
             "user%s may", (unsigned)cr.uid, (int)cr.pid,
             any_group ? ", root and members of its group" : " and root");
    return -EACCES;
}

bool control_ro_allows(const char *command)
{
    /* Queries change nothing; qmp_capabilities is the QMP client's
     * handshake and does nothing either. */
    return strncmp(command, "query-", 6) == 0 || strcmp(command, "qmp_capabilities") == 0;
}

/* Refuses a client the socket's mode let in but its credentials do not:
 * one error line, and the connection is closed. */
static bool ctl_peer_ok(struct control *ctl, int fd, bool read_only)
{
    gid_t groups[2] = { ctl->gid, ctl->ro_gid };
    char why[200];
    if (read_only && ctl->ro_gid == (gid_t)-1)
        return true;   /* a read-only socket without a group is for everyone */
    if (peer_check(fd, groups, read_only ? 2 : 1, why, sizeof(why)) == 0)
        return true;
    vlog(LOG_WARNING, "control: refused: %s", why);
    json_t *e = error_obj("GenericError", why);
    char *line = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (line) {
        size_t n = strlen(line);
        line[n] = '\n';   /* json_dumps's NUL: the line's end, unsent past it */
        ssize_t sent = send(fd, line, n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent;   /* a fresh socket's buffer holds one line; if not, it just closes */
        free(line);
    }
    close(fd);
    return false;
}

static void ctl_accept_on(struct control *ctl, int lfd, bool read_only)
{
    for (int i = 0; i < 16; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (!ctl_peer_ok(ctl, fd, read_only))
            continue;
        struct ctl_client *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->w.fd = fd;
        c->w.cb = ctl_client_io;
        c->d = ctl->d;
        c->armed = EPOLLIN;
        c->read_only = read_only;
        if (loop_add(&ctl->d->workers[0], &c->w, EPOLLIN) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->serial = ++ctl->next_serial;
        c->next = ctl->clients;
        ctl->clients = c;
        unsigned maj = 0, min = 0, mic = 0;
        sscanf(VDISKD_VERSION, "%u.%u.%u", &maj, &min, &mic);
        ctl_send(c, json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[s]}}", "vdiskd", "version",
                              "vdiskd", "major", maj, "minor", min, "micro", mic, "package",
                              "vdiskd " VDISKD_VERSION, "capabilities", "events"));
        ctl_rearm(c);
        if (c->dead)
            ctl_free(ctl, c);
    }
}

static void ctl_accept(struct watch *w, uint32_t events)
{
    (void)events;
    ctl_accept_on((struct control *)w, w->fd, false);
}

static void ctl_accept_ro(struct watch *w, uint32_t events)
{
    (void)events;
    ctl_accept_on((struct control *)((char *)w - offsetof(struct control, ro_w)), w->fd, true);
}

/* The control state, made by whichever socket starts first. */
static struct control *ctl_get(struct vdiskd *d)
{
    if (d->control)
        return d->control;
    struct control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl)
        return NULL;
    ctl->w.fd = ctl->ro_w.fd = -1;
    ctl->gid = ctl->ro_gid = (gid_t)-1;
    ctl->d = d;
    d->control = ctl;
    return ctl;
}

/* Listens on path for the main or the read-only socket (wt, *pathp,
 * *gidp; opt and what name it in messages), mode `mode`, or 0660 with
 * group. */
static int ctl_listen(struct vdiskd *d, struct watch *wt, void (*cb)(struct watch *, uint32_t),
                      char **pathp, gid_t *gidp, const char *opt, const char *what,
                      const char *path, const char *group, mode_t mode)
{
    gid_t gid = (gid_t)-1;
    int fd, r;
    if (group) {
        struct group *g = getgrnam(group);
        if (!g) {
            vlog(LOG_ERR, "%s %s: no such group", opt, group);
            return -ENOENT;
        }
        gid = g->gr_gid;
        mode = 0660;
    }
    if ((r = unix_listen(path, mode, gid, &fd)) < 0)
        return r;
    if (!(*pathp = strdup(path))) {
        close(fd);
        unlink(path);
        return -ENOMEM;
    }
    wt->fd = fd;
    wt->cb = cb;
    if ((r = loop_add(&d->workers[0], wt, EPOLLIN)) < 0) {
        close(fd);
        unlink(path);
        free(*pathp);
        *pathp = NULL;
        wt->fd = -1;
        return r;
    }
    *gidp = gid;
    vlog(LOG_INFO, "%s socket %s (mode %04o%s%s)", what, path, (unsigned)mode,
         group ? ", group " : "", group ? group : "");
    return 0;
}

int control_start(struct vdiskd *d, const char *path, const char *group)
{
    struct control *ctl = ctl_get(d);
    if (!ctl)
        return -ENOMEM;
    return ctl_listen(d, &ctl->w, ctl_accept, &ctl->path, &ctl->gid, "--control-group",
                      "control", path, group, 0600);
}

int control_start_ro(struct vdiskd *d, const char *path, const char *group)
{
    struct control *ctl = ctl_get(d);
    if (!ctl)
        return -ENOMEM;
    return ctl_listen(d, &ctl->ro_w, ctl_accept_ro, &ctl->ro_path, &ctl->ro_gid,
                      "--control-ro-group", "read-only control", path, group, 0666);
}

void control_stop(struct vdiskd *d)
{
    struct control *ctl = d->control;
    if (!ctl)
        return;
    while (ctl->clients) {
        struct ctl_client *c = ctl->clients;
        ctl_flush(c);
        ctl_free(ctl, c);
    }
    struct watch *ws[2] = { &ctl->w, &ctl->ro_w };
    char *paths[2] = { ctl->path, ctl->ro_path };
    for (int i = 0; i < 2; i++) {
        if (ws[i]->fd < 0)
            continue;
        loop_del(&d->workers[0], ws[i]);
        close(ws[i]->fd);
        unlink(paths[i]);
    }
    free(ctl->path);
    free(ctl->ro_path);
    free(ctl);
    d->control = NULL;
}
