/*
 * listen.c - listening sockets: "unix:PATH" and "tcp:HOST[:PORT]".
 *
 * Accepted sockets go to client_start() with a short peer description
 * ("unix:uid=1000", "tcp:127.0.0.1:40000").  A unix socket file left by a
 * daemon that died is replaced; one a live daemon answers on is not.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vdiskd.h"

struct listener {
    struct watch w;
    struct vdiskd *d;
    bool unix_sock;
    char *path;                 /* unix socket file, removed at close */
    char *spec;
    struct listener *next;
};

/* A descriptor kept in reserve for accept() to refuse with when the
 * process has none left (EMFILE): a listening socket whose backlog is
 * never taken stays readable, and the loop would spin on it. */
static int spare_fd = -1;

/* The peer for the log, and the client it counts as for the limits
 * (limits.c): a unix peer's uid, a TCP peer's address. */
static void peer_name(int fd, bool unix_sock, char *out, size_t outlen, char *key,
                      size_t keylen)
{
    if (unix_sock) {
        struct ucred cr;
        socklen_t l = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0) {
            snprintf(out, outlen, "unix:uid=%u,pid=%d", (unsigned)cr.uid, (int)cr.pid);
            snprintf(key, keylen, "uid:%u", (unsigned)cr.uid);
        } else {
            snprintf(out, outlen, "unix");
            snprintf(key, keylen, "unix");
        }
        return;
    }
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getpeername(fd, (struct sockaddr *)&ss, &l) == 0 &&
        getnameinfo((struct sockaddr *)&ss, l, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        snprintf(out, outlen, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" : "tcp:%s:%s",
                 host, port);
        snprintf(key, keylen, "%.63s", host);   /* a numeric address: at most 61 */
    } else {
        snprintf(out, outlen, "tcp");
        snprintf(key, keylen, "tcp");
    }
}

/* TCP keepalive, so that a client whose host died or whose network went
 * away (no FIN, no RST) frees its connection and its share of the limits
 * after about 2 minutes.  A live client is never cut for being idle: a
 * VM's disk can go unused for hours, and NBD has no keep-alive of its own. */
static void tcp_keepalive(int fd)
{
    int one = 1, idle = 60, intvl = 10, cnt = 6;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void listener_io(struct watch *w, uint32_t events)
{
    struct listener *ls = (struct listener *)w;
    char peer[128], key[VDISKD_PEER_KEY];
    struct peer_slot *slot;
    (void)events;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
            limits_out_of_fds(ls->d, ls->spec);
            close(spare_fd);
            fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                close(fd);
            spare_fd = eventfd(0, EFD_CLOEXEC);
            return;
        }
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                vlog(LOG_ERR, "%s: accept: %s", ls->spec, strerror(errno));
            return;
        }
        peer_name(fd, ls->unix_sock, peer, sizeof(peer), key, sizeof(key));
        if (limits_admit(ls->d, key, peer, &slot) < 0) {
            close(fd);
            continue;
        }
        if (!ls->unix_sock) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            tcp_keepalive(fd);
        } else {
            /* A unix socket's send buffer is all the data in flight to the
             * client: the default (about 200 KiB) splits every 1 MiB read
             * reply into several wake-ups of both sides.  The kernel caps
             * this at net.core.wmem_max. */
            int sz = VDISKD_UNIX_SNDBUF;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        }
        client_start(ls->d, fd, peer, slot);
    }
}

int unix_listen(const char *path, mode_t mode, gid_t gid, int *out)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct stat sb;
    int fd;

    if (strlen(path) >= sizeof(a.sun_path)) {
        vlog(LOG_ERR, "unix:%s: path too long for a socket", path);
        return -ENAMETOOLONG;
    }
    strcpy(a.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0) {
            close(probe);
            close(fd);
            vlog(LOG_ERR, "unix:%s: another server is listening there", path);
            return -EADDRINUSE;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    /* The mode and group are set between bind and listen: nobody can
     * connect before they hold. */
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = errno;
        vlog(LOG_ERR, "unix:%s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if ((mode && chmod(path, mode) < 0) ||
        (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || listen(fd, 128) < 0) {
        int e = errno;
        vlog(LOG_ERR, "unix:%s: %s", path, strerror(e));
        unlink(path);
        close(fd);
        return -e;
    }
    *out = fd;
    return 0;
}

static int listen_tcp(const char *spec, int *out)
{
    char host[256], *port = NULL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE }, *res, *ai;
    int fd = -1, e, colons = 0;

    if (snprintf(host, sizeof(host), "%s", spec) >= (int)sizeof(host))
        return -ENAMETOOLONG;
    for (char *p = host; *p; p++)
        colons += *p == ':';
    if (host[0] == '[') {                       /* [v6addr]:port */
        char *end = strchr(host, ']');
        if (!end)
            return -EINVAL;
        *end = '\0';
        if (end[1] == ':')
            port = end + 2;
        memmove(host, host + 1, strlen(host));
    } else if (colons == 1) {                   /* host:port */
        port = strchr(host, ':');
        *port++ = '\0';
    }
    if (!port || !*port)
        port = VDISKD_DEFAULT_PORT;
    e = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (e) {
        vlog(LOG_ERR, "tcp:%s: %s", spec, gai_strerror(e));
        return -EINVAL;
    }
    e = -EADDRNOTAVAIL;
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        e = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        vlog(LOG_ERR, "tcp:%s: %s", spec, strerror(-e));
        return e;
    }
    *out = fd;
    return 0;
}

int listen_add(struct vdiskd *d, const char *spec)
{
    struct listener *ls;
    int fd, r;
    bool is_unix = strncmp(spec, "unix:", 5) == 0;

    if (is_unix)
        r = unix_listen(spec + 5, 0, (gid_t)-1, &fd);
    else if (strncmp(spec, "tcp:", 4) == 0)
        r = listen_tcp(spec + 4, &fd);
    else {
        vlog(LOG_ERR, "--listen %s: expected unix:PATH or tcp:HOST[:PORT]", spec);
        return -EINVAL;
    }
    if (r < 0)
        return r;
    /* --user: the socket files the daemon made as root are its user's,
     * as those it makes afterwards are. */
    if (is_unix && d->run_as && chown(spec + 5, d->run_uid, d->run_gid) < 0) {
        r = -errno;
        vlog(LOG_ERR, "%s: %s", spec, strerror(-r));
        unlink(spec + 5);
        close(fd);
        return r;
    }
    if (spare_fd < 0)
        spare_fd = eventfd(0, EFD_CLOEXEC);
    ls = calloc(1, sizeof(*ls));
    if (!ls || !(ls->spec = strdup(spec)) || (is_unix && !(ls->path = strdup(spec + 5)))) {
        if (ls)
            free(ls->spec);
        free(ls);
        close(fd);
        return -ENOMEM;
    }
    ls->w.fd = fd;
    ls->w.cb = listener_io;
    ls->d = d;
    ls->unix_sock = is_unix;
    if ((r = loop_add(&d->workers[0], &ls->w, EPOLLIN)) < 0) {
        close(fd);
        free(ls->path);
        free(ls->spec);
        free(ls);
        return r;
    }
    ls->next = d->listeners;
    d->listeners = ls;
    vlog(LOG_INFO, "listening on %s", spec);
    return 0;
}

void listen_close_all(struct vdiskd *d)
{
    while (d->listeners) {
        struct listener *ls = d->listeners;
        d->listeners = ls->next;
        loop_del(&d->workers[0], &ls->w);
        close(ls->w.fd);
        if (ls->path)
            unlink(ls->path);
        free(ls->path);
        free(ls->spec);
        free(ls);
    }
    if (spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
    }
}
