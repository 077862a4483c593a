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

static void peer_name(int fd, bool unix_sock, char *out, size_t outlen)
{
    if (unix_sock) {
        struct ucred cr;
        socklen_t l = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0)
            snprintf(out, outlen, "unix:uid=%u,pid=%d", (unsigned)cr.uid, (int)cr.pid);
        else
            snprintf(out, outlen, "unix");
        return;
    }
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getpeername(fd, (struct sockaddr *)&ss, &l) == 0 &&
        getnameinfo((struct sockaddr *)&ss, l, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(out, outlen, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" : "tcp:%s:%s",
                 host, port);
    else
        snprintf(out, outlen, "tcp");
}

static void listener_io(struct watch *w, uint32_t events)
{
    struct listener *ls = (struct listener *)w;
    char peer[128];
    (void)events;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                vlog(LOG_ERR, "%s: accept: %s", ls->spec, strerror(errno));
            return;
        }
        if (!ls->unix_sock) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        } else {
            /* A unix socket's send buffer is all the data in flight to the
             * client: the default (about 200 KiB) splits every 1 MiB read
             * reply into several wake-ups of both sides.  The kernel caps
             * this at net.core.wmem_max. */
            int sz = VDISKD_UNIX_SNDBUF;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        }
        peer_name(fd, ls->unix_sock, peer, sizeof(peer));
        client_start(ls->d, fd, peer);
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
}
