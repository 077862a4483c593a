/*
 * loop.c - the event loop: one epoll set, one thread.
 *
 * It watches the listening sockets (listen.c), every client socket, the
 * libvdisk context's eventfd (completions: vd_ctx_poll(ctx, 0)) and a
 * signalfd for SIGTERM/SIGINT.  epoll is level-triggered; a client's
 * interest set follows nbds_conn_events() and is changed with
 * EPOLL_CTL_MOD only when it differs from what is registered.
 *
 * Latency is what limits a client with a fixed queue depth, so requests
 * go to the kernel as soon as they are parsed (batching them per round
 * was measured slower: the disk then sees waves instead of a steady
 * queue), a completion that queues a reply only marks its client
 * (client_notify), whose replies are all written at the end of the round
 * in one sendmsg rather than after another epoll round, and the loop
 * polls briefly before sleeping while I/O is in flight (loop_wait).
 *
 * A connection that ended is freed only once no request of it is in
 * flight (nbds_conn_free's contract), so ended connections wait in the
 * list until their I/O completes.
 *
 * A thread per core, each with its own loop and vd_ctx, is a later step.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vdiskd.h"

struct client {
    struct watch w;
    struct vdiskd *d;
    struct nbds_conn *conn;
    uint32_t armed;             /* epoll events registered */
    bool ended;                 /* out of epoll, waiting for in-flight I/O */
    bool dirty;                 /* on d->dirty */
    struct client *dirty_next;
    time_t started;
    struct client *next;
};

int loop_init(struct vdiskd *d)
{
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    return d->epfd < 0 ? -errno : 0;
}

int loop_add(struct vdiskd *d, struct watch *w, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    return epoll_ctl(d->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0 ? -errno : 0;
}

int loop_mod(struct vdiskd *d, struct watch *w, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    return epoll_ctl(d->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0 ? -errno : 0;
}

void loop_del(struct vdiskd *d, struct watch *w)
{
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

/* ---- clients ---- */

/* POLLIN/POLLOUT have the values of EPOLLIN/EPOLLOUT on Linux, but say it
 * in code rather than rely on it. */
static uint32_t want_events(struct client *c)
{
    unsigned p = nbds_conn_events(c->conn);
    return ((p & POLLIN) ? EPOLLIN : 0) | ((p & POLLOUT) ? EPOLLOUT : 0);
}

static void client_rearm(struct client *c)
{
    if (c->ended)
        return;
    uint32_t ev = want_events(c);
    if (ev != c->armed && loop_mod(c->d, &c->w, ev) == 0)
        c->armed = ev;
}

static void client_end(struct client *c)
{
    if (c->ended)
        return;
    c->ended = true;
    loop_del(c->d, &c->w);
    shutdown(c->w.fd, SHUT_RDWR);
}

static void client_free(struct vdiskd *d, struct client *c)
{
    struct client **pp;
    if (c->dirty) {
        for (pp = &d->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
    }
    for (pp = &d->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (!c->ended)
        loop_del(d, &c->w);
    vlog(LOG_DEBUG, "%s: disconnected", nbds_conn_peer(c->conn));
    nbds_conn_free(c->conn);
    close(c->w.fd);
    free(c);
    d->nclients--;
}

static void client_io(struct watch *w, uint32_t events)
{
    struct client *c = (struct client *)w;
    unsigned re = 0;
    if (events & EPOLLIN)
        re |= POLLIN;
    if (events & EPOLLOUT)
        re |= POLLOUT;
    if (events & EPOLLHUP)
        re |= POLLHUP;
    if (events & EPOLLERR)
        re |= POLLERR;
    int r = nbds_conn_io(c->conn, re);
    if (r < 0 || nbds_conn_finished(c->conn))
        client_end(c);
    else
        client_rearm(c);
}

void client_notify(void *opaque, struct nbds_conn *conn)
{
    struct vdiskd *d = opaque;
    struct client *c = nbds_conn_user(conn);
    /* The --stdio connection has no client of the loop: nbds_serve polls
     * for it. */
    if (!c || c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = d->dirty;
    d->dirty = c;
}

/* Sends what completions queued (and parses input that flow control held
 * back); the socket is tried without waiting for epoll to say writable:
 * when it is not, the write fails with EAGAIN and EPOLLOUT gets armed. */
static void clients_flush(struct vdiskd *d)
{
    while (d->dirty) {
        struct client *c = d->dirty;
        d->dirty = c->dirty_next;
        c->dirty = false;
        if (!c->ended)
            client_io(&c->w, EPOLLOUT);
    }
}

int client_start(struct vdiskd *d, int fd, const char *peer)
{
    struct client *c = calloc(1, sizeof(*c));
    int r;
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->w.fd = fd;
    c->w.cb = client_io;
    c->d = d;
    c->started = time(NULL);
    r = nbds_conn_new(d->srv, fd, fd, peer, c, &c->conn);
    if (r < 0) {
        vlog(LOG_ERR, "%s: %s", peer, strerror(-r));
        close(fd);
        free(c);
        return r;
    }
    c->armed = want_events(c);
    if ((r = loop_add(d, &c->w, c->armed)) < 0) {
        nbds_conn_free(c->conn);
        close(fd);
        free(c);
        return r;
    }
    c->next = d->clients;
    d->clients = c;
    d->nclients++;
    vlog(LOG_DEBUG, "%s: connected", peer);
    return 0;
}

/* Frees what can be freed: ended connections with nothing in flight,
 * clients stuck in the handshake for too long, and when stopping, idle
 * connections with no reply left to send. */
static void clients_reap(struct vdiskd *d)
{
    time_t now = time(NULL);
    struct client *c, *next;
    for (c = d->clients; c; c = next) {
        next = c->next;
        if (!c->ended && nbds_conn_in_handshake(c->conn) &&
            now - c->started > VDISKD_HANDSHAKE_TIMEOUT) {
            vlog(LOG_INFO, "%s: handshake timed out", nbds_conn_peer(c->conn));
            client_end(c);
        }
        if (d->stopping && !c->ended && nbds_conn_inflight(c->conn) == 0 &&
            !(nbds_conn_events(c->conn) & POLLOUT))
            client_end(c);
        if (c->ended && nbds_conn_inflight(c->conn) == 0)
            client_free(d, c);
    }
}

/* ---- the vd_ctx and signals ---- */

static void ctx_io(struct watch *w, uint32_t events)
{
    struct vdiskd *d = (struct vdiskd *)((char *)w - offsetof(struct vdiskd, ctx_watch));
    (void)events;
    int r = vd_ctx_poll(d->ctx, 0);
    if (r < 0)
        vlog(LOG_ERR, "I/O context: %s", strerror(-r));
}

static void stop(struct vdiskd *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    listen_close_all(d);
    for (struct client *c = d->clients; c; c = c->next) {
        if (!c->ended) {
            nbds_conn_shutdown(c->conn);
            client_rearm(c);
        }
    }
}

static void sig_io(struct watch *w, uint32_t events)
{
    struct vdiskd *d = (struct vdiskd *)((char *)w - offsetof(struct vdiskd, sig_watch));
    struct signalfd_siginfo si;
    (void)events;
    while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
        vlog(LOG_INFO, "%s: stopping (%u connection(s))", strsignal((int)si.ssi_signo),
             d->nclients);
        stop(d);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits for events.  While requests are in flight on the disk, first polls
 * (epoll_wait without sleeping) for up to d->poll_us: a completion or the
 * client's next request usually arrives within microseconds, and catching
 * it awake saves the wake-up of a sleeping thread, which costs tens of
 * microseconds per hop on a virtual machine.  An idle daemon never spins. */
static int loop_wait(struct vdiskd *d, struct epoll_event *ev, int max)
{
    if (d->poll_us && vd_ctx_inflight(d->ctx) > 0) {
        uint64_t end = now_ns() + (uint64_t)d->poll_us * 1000u;
        do {
            int n = epoll_wait(d->epfd, ev, max, 0);
            if (n != 0)
                return n;
        } while (now_ns() < end);
    }
    return epoll_wait(d->epfd, ev, max, 1000);
}

int loop_run(struct vdiskd *d)
{
    sigset_t set;
    int r;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    d->sig_watch.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    d->sig_watch.cb = sig_io;
    if (d->sig_watch.fd < 0 || (r = loop_add(d, &d->sig_watch, EPOLLIN)) < 0)
        return -errno;
    d->ctx_watch.fd = vd_ctx_fd(d->ctx);
    d->ctx_watch.cb = ctx_io;
    if ((r = loop_add(d, &d->ctx_watch, EPOLLIN)) < 0)
        return r;

    while (!d->stopping || d->clients) {
        struct epoll_event ev[64];
        int n = loop_wait(d, ev, 64);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++) {
            struct watch *w = ev[i].data.ptr;
            w->cb(w, ev[i].events);
        }
        clients_flush(d);
        clients_reap(d);
    }
    /* Drain any I/O still in the context (none expected: every connection
     * was freed only with nothing in flight). */
    while (vd_ctx_inflight(d->ctx) > 0)
        vd_ctx_poll(d->ctx, -1);
    loop_del(d, &d->ctx_watch);
    loop_del(d, &d->sig_watch);
    close(d->sig_watch.fd);
    return 0;
}
