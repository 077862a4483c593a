/*
 * loop.c - the event loops: one per worker thread, one epoll set each.
 *
 * A worker watches its client sockets, its libvdisk context's eventfd
 * (completions: vd_ctx_poll(ctx, 0)) and a wake-up eventfd (its inbox);
 * worker 0, the main thread, also watches the listening sockets (listen.c)
 * and a signalfd for SIGTERM/SIGINT.  epoll is level-triggered; a client's
 * interest set follows nbds_conn_events() and is changed with
 * EPOLL_CTL_MOD only when it differs from what is registered.
 *
 * Connections: worker 0 accepts and hands each new socket to the next
 * worker, round robin, through that worker's inbox.  The handshake runs
 * there, and nbd-server pauses the connection once an export is open
 * (pause_at_transmission): if another worker serves that export (its chain
 * lives on that worker's context), the connection moves there through the
 * inbox (nbds_conn_move) before its first request; then it resumes.  So
 * every request of an export runs on one thread and libvdisk needs no
 * locks on the data path; different exports use different cores.
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
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "vdiskd.h"

struct client {
    struct watch w;
    struct worker *wk;          /* the worker it is on (NULL: in an inbox) */
    int fd;
    char *peer;
    struct nbds_conn *conn;     /* NULL until a worker takes it */
    uint32_t armed;             /* epoll events registered */
    bool ended;                 /* out of epoll, waiting for in-flight I/O */
    bool dirty;                 /* on wk->dirty */
    struct client *dirty_next;
    uint64_t started_ns;        /* accepted (vdiskd_now_ns) */
    struct peer_slot *slot;     /* its count in the client limits */
    struct budget_waiter bw;    /* waiting for payload memory (limits.c) */
    struct client *next;        /* wk->clients or an inbox */
    struct export *user_of;     /* on that export's users list (d->lock) */
    struct client *user_next;
    bool gone;                  /* destroyed: freed at the end of the round */
    uint32_t *groups;           /* a unix peer's supplementary groups (access.c) */
    size_t ngroups;
};

/* The export's list of connections, for messages naming them. */
static void user_add(struct vdiskd *d, struct client *c)
{
    struct export *ex = nbds_conn_export_handle(c->conn);
    if (!ex || c->user_of)
        return;
    pthread_mutex_lock(&d->lock);
    c->user_of = ex;
    c->user_next = ex->users;
    ex->users = c;
    pthread_mutex_unlock(&d->lock);
}

static void user_del(struct vdiskd *d, struct client *c)
{
    if (!c->user_of)
        return;
    pthread_mutex_lock(&d->lock);
    for (struct client **pp = &c->user_of->users; *pp; pp = &(*pp)->user_next) {
        if (*pp == c) {
            *pp = c->user_next;
            break;
        }
    }
    c->user_of = NULL;
    pthread_mutex_unlock(&d->lock);
}

const char *client_peer(const struct client *c)
{
    return c->peer;
}

size_t client_groups(const struct client *c, const uint32_t **out)
{
    *out = c->groups;
    return c->ngroups;
}

/* A unix socket peer's credentials, for the access rules (access.c).
 * Only on AF_UNIX: on TCP, SO_PEERCRED succeeds with the overflow uid
 * (nobody's), which must not pass for a local user. */
static void client_cred(struct client *c)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    struct ucred cr;
    socklen_t cl = sizeof(cr);
    if (getsockname(c->fd, (struct sockaddr *)&ss, &l) < 0 || ss.ss_family != AF_UNIX ||
        getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0)
        return;
    nbds_conn_set_cred(c->conn, (uint32_t)cr.uid, (uint32_t)cr.gid, (int32_t)cr.pid);
    c->ngroups = peer_groups(c->fd, &c->groups);
}

struct client *client_user_next(const struct client *c)
{
    return c->user_next;
}

static bool stopping(const struct vdiskd *d)
{
    return __atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE);
}

int loop_add(struct worker *w, struct watch *wt, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = wt };
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, wt->fd, &ev) < 0 ? -errno : 0;
}

int loop_mod(struct worker *w, struct watch *wt, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = wt };
    return epoll_ctl(w->epfd, EPOLL_CTL_MOD, wt->fd, &ev) < 0 ? -errno : 0;
}

void loop_del(struct worker *w, struct watch *wt)
{
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, wt->fd, NULL);
}

void worker_wake(struct worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_watch.fd, &one, sizeof(one));
    (void)r;   /* EAGAIN: the counter is already non-zero, a wake-up is due */
}

static void wake_all(struct vdiskd *d)
{
    for (unsigned i = 0; i < d->nworkers; i++)
        worker_wake(&d->workers[i]);
}

/* Hands c to worker w (any thread may call this). */
static void post(struct worker *w, struct client *c)
{
    c->wk = NULL;
    pthread_mutex_lock(&w->inbox_lock);
    c->next = w->inbox;
    w->inbox = c;
    pthread_mutex_unlock(&w->inbox_lock);
    worker_wake(w);
}

void worker_post_task(struct worker *w, struct task *t)
{
    pthread_mutex_lock(&w->inbox_lock);
    t->next = w->tasks;
    w->tasks = t;
    pthread_mutex_unlock(&w->inbox_lock);
    worker_wake(w);
}

/* Runs the tasks posted to w, oldest first. */
static void run_tasks(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    struct task *t = w->tasks, *rev = NULL;
    w->tasks = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (t) {
        struct task *next = t->next;
        t->next = rev;
        rev = t;
        t = next;
    }
    while (rev) {
        struct task *next = rev->next;
        rev->run(w, rev);
        rev = next;
    }
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
    if (ev != c->armed && loop_mod(c->wk, &c->w, ev) == 0)
        c->armed = ev;
}

static void client_end(struct client *c)
{
    if (c->ended)
        return;
    c->ended = true;
    c->wk->reap_due = true;
    loop_del(c->wk, &c->w);
    shutdown(c->fd, SHUT_RDWR);
}

/* Takes c off its worker's lists and epoll set (it stays allocated). */
static void client_unlink(struct client *c)
{
    struct worker *w = c->wk;
    struct client **pp;
    budget_unwait(w, &c->bw);
    if (c->dirty) {
        for (pp = &w->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
        c->dirty = false;
    }
    for (pp = &w->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (!c->ended)
        loop_del(w, &c->w);
    w->nclients--;
}

static void client_destroy(struct vdiskd *d, struct client *c)
{
    user_del(d, c);
    if (c->conn) {
        vlog(LOG_DEBUG, "%s: disconnected", c->peer);
        nbds_conn_free(c->conn);
    }
    close(c->fd);
    free(c->peer);
    c->peer = NULL;
    free(c->groups);
    c->groups = NULL;
    limits_release(d, c->slot);
    c->slot = NULL;
    /* This round's events may still name it (a task that disconnected an
     * export's clients ran between two of them): freed after the round. */
    c->gone = true;
    if (c->wk) {
        c->next = c->wk->graveyard;
        c->wk->graveyard = c;
    } else {
        free(c);
    }
    /* The last connection of a stopping daemon lets every loop end. */
    if (__atomic_sub_fetch(&d->nclients, 1, __ATOMIC_ACQ_REL) == 0 && stopping(d))
        wake_all(d);
}

static void client_io(struct watch *wt, uint32_t events);

/* After the handshake: serve here if this worker serves the export,
 * else move to the worker that does.  A connection whose export is open
 * always moves, even one that is ending, so that its export is released
 * (and maybe closed) on the export's own thread. */
static bool client_place(struct client *c)
{
    struct export *ex = nbds_conn_export_handle(c->conn);
    if (!ex || ex->owner == c->wk) {
        nbds_conn_resume(c->conn);
        user_add(c->wk->d, c);
        return false;
    }
    client_unlink(c);
    post(ex->owner, c);   /* c belongs to the other thread from here on */
    return true;
}

static void client_io(struct watch *wt, uint32_t events)
{
    struct client *c = (struct client *)wt;
    unsigned re = 0;
    if (c->gone)
        return;
    if (events & EPOLLIN)
        re |= POLLIN;
    if (events & EPOLLOUT)
        re |= POLLOUT;
    if (events & EPOLLHUP)
        re |= POLLHUP;
    if (events & EPOLLERR)
        re |= POLLERR;
    int r = nbds_conn_io(c->conn, re);
    if (r == 0 && nbds_conn_paused(c->conn)) {
        if (client_place(c))
            return;   /* moved */
        /* Resumed here: parse what arrived behind the handshake. */
        r = nbds_conn_io(c->conn, re & POLLIN);
    }
    if (r < 0 || nbds_conn_finished(c->conn))
        client_end(c);
    else
        client_rearm(c);
}

void client_notify(void *opaque, struct nbds_conn *conn)
{
    struct worker *w = opaque;
    struct client *c = nbds_conn_user(conn);
    /* The --stdio connection has no client of the loop: nbds_serve polls
     * for it. */
    if (!c || c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = w->dirty;
    w->dirty = c;
}

struct budget_waiter *client_waiter(struct client *c)
{
    c->bw.c = c;
    return &c->bw;
}

bool client_payload_retry(struct client *c)
{
    return c->ended || nbds_conn_payload_retry(c->conn);
}

void client_payload_resume(struct client *c)
{
    if (!c->ended)
        client_io(&c->w, EPOLLIN);   /* the input that waited behind it */
}

/* Sends what completions queued (and parses input that flow control held
 * back); the socket is tried without waiting for epoll to say writable:
 * when it is not, the write fails with EAGAIN and EPOLLOUT gets armed. */
static void clients_flush(struct worker *w)
{
    while (w->dirty) {
        struct client *c = w->dirty;
        w->dirty = c->dirty_next;
        c->dirty = false;
        if (!c->ended)
            client_io(&c->w, EPOLLOUT);
    }
}

/* A client from the inbox: a new socket (its handshake starts here) or a
 * connection moved here after its handshake. */
static void client_attach(struct worker *w, struct client *c)
{
    int r;
    c->wk = w;
    c->w.cb = client_io;
    c->w.fd = c->fd;
    if (!c->conn) {
        r = nbds_conn_new(w->srv, c->fd, c->fd, c->peer, c, &c->conn);
        if (r < 0) {
            vlog(LOG_ERR, "%s: %s", c->peer, strerror(-r));
            client_destroy(w->d, c);
            return;
        }
        client_cred(c);
        vlog(LOG_DEBUG, "%s: connected (thread %u)", c->peer, w->id);
    } else {
        r = nbds_conn_move(c->conn, w->srv);
        if (r < 0) {
            /* Cannot happen at the pause after the handshake. */
            vlog(LOG_ERR, "%s: moving the connection: %s", c->peer, strerror(-r));
            abort();
        }
        nbds_conn_resume(c->conn);
        user_add(w->d, c);
        vlog(LOG_DEBUG, "%s: moved to thread %u for export %s", c->peer, w->id,
             nbds_conn_export(c->conn));
    }
    c->armed = want_events(c);
    if ((r = loop_add(w, &c->w, c->armed)) < 0) {
        vlog(LOG_ERR, "%s: epoll: %s", c->peer, strerror(-r));
        client_destroy(w->d, c);
        return;
    }
    c->next = w->clients;
    w->clients = c;
    w->nclients++;
    if (w->stopped)
        nbds_conn_shutdown(c->conn);
    /* Input may have arrived before the socket was watched here. */
    client_io(&c->w, EPOLLIN | EPOLLOUT);
}

int client_start(struct vdiskd *d, int fd, const char *peer, struct peer_slot *slot)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c || !(c->peer = strdup(peer))) {
        free(c);
        close(fd);
        limits_release(d, slot);
        return -ENOMEM;
    }
    c->fd = fd;
    c->started_ns = vdiskd_now_ns();
    c->slot = slot;
    __atomic_add_fetch(&d->nclients, 1, __ATOMIC_ACQ_REL);
    post(&d->workers[d->next_worker++ % d->nworkers], c);
    return 0;
}

/* Frees what can be freed: ended connections with nothing in flight,
 * clients stuck in the handshake for too long (--handshake-timeout), and
 * when stopping, idle connections with no reply left to send.  The walk
 * over every client runs only when a client ended, when stopping, or
 * every REAP_NS for the timeouts: not every round of a busy loop, whose
 * cost would then grow with the idle connections. */
#define REAP_NS 250000000u
static void clients_reap(struct worker *w)
{
    uint64_t now = vdiskd_now_ns();
    uint64_t limit = (uint64_t)w->d->handshake_timeout * 1000000000u;
    struct client *c, *next;
    if (!w->reap_due && !w->stopped && now - w->reap_ns < REAP_NS)
        return;
    w->reap_due = false;
    w->reap_ns = now;
    if (w->id == 0)
        limits_tick(w->d);
    for (c = w->clients; c; c = next) {
        next = c->next;
        if (!c->ended && limit && nbds_conn_in_handshake(c->conn) &&
            now - c->started_ns >= limit) {
            vlog(LOG_INFO, "%s: handshake timed out after %u s", c->peer,
                 w->d->handshake_timeout);
            client_end(c);
        }
        if (w->stopped && !c->ended && nbds_conn_inflight(c->conn) == 0 &&
            !(nbds_conn_events(c->conn) & POLLOUT))
            client_end(c);
        if (c->ended && nbds_conn_inflight(c->conn) == 0) {
            client_unlink(c);
            client_destroy(w->d, c);
        } else if (c->ended) {
            w->reap_due = true;     /* again next round: its I/O may be done */
        }
    }
}

unsigned worker_disconnect_export(struct worker *w, struct export *ex, const char *why)
{
    unsigned n = 0;
    for (struct client *c = w->clients; c; c = c->next) {
        if (!c->ended && nbds_conn_export_handle(c->conn) == ex) {
            vlog(LOG_WARNING, "%s: disconnected: %s", c->peer, why);
            client_end(c);
            n++;
        }
    }
    /* Their requests in flight finish (the replies go nowhere), then the
     * connections are freed, which releases the export. */
    for (;;) {
        bool busy = false;
        for (struct client *c = w->clients; c && !busy; c = c->next)
            busy = c->ended && nbds_conn_inflight(c->conn) > 0 &&
                   nbds_conn_export_handle(c->conn) == ex;
        if (!busy)
            break;
        if (vd_ctx_poll(w->ctx, -1) < 0)
            break;
    }
    clients_reap(w);
    return n;
}

/* ---- the contexts, the inboxes and signals ---- */

static void ctx_io(struct watch *wt, uint32_t events)
{
    struct worker *w = (struct worker *)((char *)wt - offsetof(struct worker, ctx_watch));
    (void)events;
    int r = vd_ctx_poll(w->ctx, 0);
    if (r < 0)
        vlog(LOG_ERR, "I/O context: %s", strerror(-r));
}

/* Stops reading requests on every connection of this worker. */
static void worker_stop(struct worker *w)
{
    if (w->stopped)
        return;
    w->stopped = true;
    for (struct client *c = w->clients; c; c = c->next) {
        if (!c->ended) {
            nbds_conn_shutdown(c->conn);
            client_rearm(c);
        }
    }
}

static void wake_io(struct watch *wt, uint32_t events)
{
    struct worker *w = (struct worker *)((char *)wt - offsetof(struct worker, wake_watch));
    uint64_t n;
    (void)events;
    ssize_t r = read(wt->fd, &n, sizeof(n));
    (void)r;
    if (stopping(w->d))
        worker_stop(w);
    pthread_mutex_lock(&w->inbox_lock);
    struct client *c = w->inbox;
    w->inbox = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (c) {
        struct client *next = c->next;
        client_attach(w, c);
        c = next;
    }
    run_tasks(w);
    exports_close_posted(w);
}

void vdiskd_stop(struct vdiskd *d, const char *why)
{
    if (stopping(d))
        return;
    vlog(LOG_INFO, "%s: stopping (%u connection(s))", why,
         __atomic_load_n(&d->nclients, __ATOMIC_ACQUIRE));
    __atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
    wake_all(d);
    control_event(d, "SHUTDOWN", json_pack("{s:s}", "reason", why));
}

static void sig_io(struct watch *wt, uint32_t events)
{
    struct vdiskd *d = (struct vdiskd *)((char *)wt - offsetof(struct vdiskd, sig_watch));
    struct signalfd_siginfo si;
    (void)events;
    while (read(wt->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP)
            tls_reload(d);
        else
            vdiskd_stop(d, strsignal((int)si.ssi_signo));
    }
}

uint64_t vdiskd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits for events.  While requests are in flight on the disk, first polls
 * (epoll_wait without sleeping) for up to poll_us: a completion or the
 * client's next request usually arrives within microseconds, and catching
 * it awake saves the wake-up of a sleeping thread, which costs tens of
 * microseconds per hop on a virtual machine.  An idle worker never spins. */
static int loop_wait(struct worker *w, struct epoll_event *ev, int max)
{
    unsigned poll_us = w->d->poll_us;
    if (poll_us && vd_ctx_inflight(w->ctx) > 0) {
        uint64_t end = vdiskd_now_ns() + (uint64_t)poll_us * 1000u;
        do {
            int n = epoll_wait(w->epfd, ev, max, 0);
            if (n != 0)
                return n;
        } while (vdiskd_now_ns() < end);
    }
    /* Jobs pace themselves by the clock (jobs.c). */
    return epoll_wait(w->epfd, ev, max, w->jobs ? 10 : 1000);
}

static void free_graveyard(struct worker *w)
{
    while (w->graveyard) {
        struct client *c = w->graveyard;
        w->graveyard = c->next;
        free(c);
    }
}

__thread struct worker *current_worker;

static int worker_run(struct worker *w)
{
    struct vdiskd *d = w->d;
    current_worker = w;
    for (;;) {
        if (stopping(d) && __atomic_load_n(&d->nclients, __ATOMIC_ACQUIRE) == 0)
            break;
        struct epoll_event ev[64];
        int n = loop_wait(w, ev, 64);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++) {
            struct watch *wt = ev[i].data.ptr;
            wt->cb(wt, ev[i].events);
        }
        jobs_run(w);
        if (w->id == 0)
            pools_kick(d);
        if (w->budget_wait)
            budget_retry(w);
        clients_flush(w);
        clients_reap(w);
        free_graveyard(w);
        /* Not in sig_io: this round's events may still name a listener. */
        if (w->id == 0 && stopping(d) && d->listeners)
            listen_close_all(d);
    }
    run_tasks(w);
    jobs_cancel_all(w, "the daemon is stopping");
    exports_close_posted(w);
    /* Drain any I/O still in the context (none expected: every connection
     * was freed only with nothing in flight). */
    while (vd_ctx_inflight(w->ctx) > 0)
        vd_ctx_poll(w->ctx, -1);
    return 0;
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    int r = worker_run(w);
    if (r < 0)
        vlog(LOG_ERR, "event loop %u: %s", w->id, strerror(-r));
    return NULL;
}

int worker_init(struct vdiskd *d, struct worker *w, unsigned id, bool stdio)
{
    int r;
    w->d = d;
    w->id = id;
    w->epfd = -1;
    w->wake_watch.fd = -1;
    w->budget_tail = &w->budget_wait;
    pthread_mutex_init(&w->inbox_lock, NULL);
    if ((r = vd_ctx_new(0, &w->ctx)) < 0)
        return r;
    struct nbds_config cfg = {
        .backend = &vdiskd_backend,
        .opaque = w,
        .notify = client_notify,
        .verbose = vdiskd_verbose > 1,
        /* The stdio connection is served by nbds_serve: nothing to move. */
        .pause_at_transmission = !stdio,
        .max_inflight = d->max_inflight,
        /* The --stdio connection has no client to queue. */
        .payload_budget = d->payload_limit && !stdio ? &payload_budget_hooks : NULL,
        .tls = tls_mode(d),
        .tls_context = tls_context,
    };
    if ((r = nbds_server_new(&cfg, &w->srv)) < 0)
        return r;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->wake_watch.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->wake_watch.cb = wake_io;
    if (w->wake_watch.fd < 0)
        return -errno;
    if ((r = loop_add(w, &w->wake_watch, EPOLLIN)) < 0)
        return r;
    w->ctx_watch.fd = vd_ctx_fd(w->ctx);
    w->ctx_watch.cb = ctx_io;
    return loop_add(w, &w->ctx_watch, EPOLLIN);
}

void worker_fini(struct worker *w)
{
    /* Sockets still in the inbox (startup failed after accepting). */
    while (w->inbox) {
        struct client *c = w->inbox;
        w->inbox = c->next;
        if (c->conn)
            nbds_conn_free(c->conn);
        close(c->fd);
        free(c->peer);
        free(c->groups);
        free(c);
    }
    run_tasks(w);
    exports_close_posted(w);
    free_graveyard(w);
    if (w->ctx)
        vd_ctx_free(w->ctx);
    if (w->srv)
        nbds_server_free(w->srv);
    if (w->wake_watch.fd >= 0)
        close(w->wake_watch.fd);
    if (w->epfd >= 0)
        close(w->epfd);
    pthread_mutex_destroy(&w->inbox_lock);
}

int loop_run(struct vdiskd *d)
{
    struct worker *w0 = &d->workers[0];
    sigset_t set;
    int r;

    /* Signals go to worker 0's signalfd: block them in every thread (the
     * workers inherit this mask). */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);            /* reloads the TLS credentials */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    d->sig_watch.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    d->sig_watch.cb = sig_io;
    if (d->sig_watch.fd < 0)
        return -errno;
    if ((r = loop_add(w0, &d->sig_watch, EPOLLIN)) < 0)
        goto out;
    for (unsigned i = 1; i < d->nworkers; i++) {
        r = -pthread_create(&d->workers[i].thread, NULL, worker_thread, &d->workers[i]);
        if (r < 0) {
            vlog(LOG_ERR, "starting thread %u: %s", i, strerror(-r));
            __atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
            wake_all(d);
            break;
        }
        d->workers[i].started = true;
    }
    if (r == 0)
        r = worker_run(w0);
    if (r < 0) {
        /* Worker 0 failed: the others stop when their connections end. */
        __atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
        listen_close_all(d);
        wake_all(d);
    }
    for (unsigned i = 1; i < d->nworkers; i++) {
        if (d->workers[i].started) {
            pthread_join(d->workers[i].thread, NULL);
            d->workers[i].started = false;
        }
    }
    loop_del(w0, &d->sig_watch);
out:
    close(d->sig_watch.fd);
    return r;
}
