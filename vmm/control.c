/*
 * control.c - vdisk-vmm's control socket (control.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"

#define LINE_MAX_BYTES 4096u

struct client {
    int fd;
    char buf[LINE_MAX_BYTES];
    size_t len;
};

struct vctl {
    char *path;
    int listen_fd;
    vctl_handler handler;
    void *opaque;
    struct client clients[VCTL_MAX_CLIENTS];
};

int vctl_open(const char *path, vctl_handler h, void *opaque, struct vctl **out)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct vctl *c;
    mode_t old;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "vdisk-vmm: %s: path too long for a unix socket\n", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return -ENOMEM;
    }
    c->handler = h;
    c->opaque = opaque;
    for (unsigned i = 0; i < VCTL_MAX_CLIENTS; i++)
        c->clients[i].fd = -1;
    c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->listen_fd < 0)
        goto fail;
    unlink(path);
    /* Only the owner may drive the VM: mode 0600 from the start. */
    old = umask(0177);
    if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        umask(old);
        goto fail;
    }
    umask(old);
    if (listen(c->listen_fd, 4) < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    fprintf(stderr, "vdisk-vmm: control socket %s: %s\n", path, strerror(errno));
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    free(c->path);
    free(c);
    return -EIO;
}

unsigned vctl_pollfds(struct vctl *c, struct pollfd *fds, unsigned max)
{
    unsigned n = 0;

    if (n < max)
        fds[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
    for (unsigned i = 0; i < VCTL_MAX_CLIENTS && n < max; i++)
        if (c->clients[i].fd >= 0)
            fds[n++] = (struct pollfd){ .fd = c->clients[i].fd, .events = POLLIN };
    return n;
}

static void drop(struct client *cl)
{
    close(cl->fd);
    cl->fd = -1;
    cl->len = 0;
}

static void reply(struct client *cl, const char *text)
{
    size_t len = strlen(text);
    const char *p = text;

    /* Replies are short: a blocking write of them is fine, and a client
     * that does not read is dropped rather than waited for. */
    while (len > 0) {
        ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            drop(cl);
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void serve(struct vctl *c, struct client *cl)
{
    ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - cl->len);
    char *nl;

    if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        drop(cl);
        return;
    }
    cl->len += (size_t)n;
    while (cl->fd >= 0 && (nl = memchr(cl->buf, '\n', cl->len)) != NULL) {
        char out[1024];
        size_t l = (size_t)(nl - cl->buf);

        *nl = 0;
        if (l > 0 && cl->buf[l - 1] == '\r')
            cl->buf[l - 1] = 0;
        if (cl->buf[0]) {
            c->handler(c->opaque, cl->buf, out, sizeof(out) - 1);
            strcat(out, "\n");
            reply(cl, out);
        }
        if (cl->fd < 0)
            return;
        memmove(cl->buf, nl + 1, cl->len - l - 1);
        cl->len -= l + 1;
    }
    if (cl->len == sizeof(cl->buf)) {
        reply(cl, "error: line too long\n");
        if (cl->fd >= 0)
            drop(cl);
    }
}

void vctl_ready(struct vctl *c, const struct pollfd *fds, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        if (!fds[k].revents)
            continue;
        if (fds[k].fd == c->listen_fd) {
            int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            unsigned i;

            if (fd < 0)
                continue;
            for (i = 0; i < VCTL_MAX_CLIENTS && c->clients[i].fd >= 0; i++)
                ;
            if (i == VCTL_MAX_CLIENTS) {
                (void)!write(fd, "error: too many control clients\n", 32);
                close(fd);
                continue;
            }
            c->clients[i].fd = fd;
            c->clients[i].len = 0;
            continue;
        }
        for (unsigned i = 0; i < VCTL_MAX_CLIENTS; i++)
            if (c->clients[i].fd == fds[k].fd) {
                serve(c, &c->clients[i]);
                break;
            }
    }
}

void vctl_close(struct vctl *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < VCTL_MAX_CLIENTS; i++)
        if (c->clients[i].fd >= 0)
            drop(&c->clients[i]);
    close(c->listen_fd);
    unlink(c->path);
    free(c->path);
    free(c);
}
