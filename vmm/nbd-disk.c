/*
 * nbd-disk.c - a guest disk over NBD with libnbd (nbd-disk.h).
 *
 * A guest request becomes one or more commands (struct cmd): one per run
 * of contiguous guest memory, cut at the largest payload the server takes,
 * so that data moves straight between the socket and guest RAM.  The
 * request completes when its last command does, with the first error any
 * of them had.
 *
 * Connection states:
 *   CONNECTED   commands are issued to the handle
 *   DEAD        the handle died; waiting for libnbd to give back the
 *               commands it had (their callbacks say ENOTCONN), then closed
 *   WAITING     no handle; a new one is tried at next_try
 *   CONNECTING  a new handle is connecting (driven by the same poll)
 * Commands that failed for want of a connection, and commands submitted
 * while there is none, wait in the wait list and are issued again, in
 * order, once connected.  NBD's commands are idempotent (a write of the
 * same bytes at the same offset, a read, a flush), so issuing one twice is
 * safe.  What a lost connection can cost is what a disk with a volatile
 * cache loses at power loss: writes the old server acknowledged but had
 * not flushed, if it died with them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <poll.h>

#include "nbd-disk.h"

#define CMD_MAX_RW      (32u << 20)     /* libnbd refuses payloads over 64 MiB */
#define CMD_MAX_RANGE   (1u << 30)      /* trim and zero lengths are 32-bit on the wire */
#define ZERO_BUF        (1u << 20)      /* write-zeroes as writes, when the server lacks it */
#define BACKOFF_MIN_MS  50
#define BACKOFF_MAX_MS  1000

static const uint8_t zeroes[ZERO_BUF];

enum conn { CONNECTED, DEAD, WAITING, CONNECTING };

/* One guest request in flight. */
struct req_state {
    struct vblk_req *r;
    unsigned left;              /* commands not finished */
    int err;                    /* the first error, negative */
};

struct cmd {
    struct ndisk *d;
    struct req_state *rs;
    enum vblk_op op;
    uint64_t off, len;
    void *buf;                  /* READ/WRITE: guest memory, or zeroes */
    bool unmap;
    bool called;                /* libnbd called back: error is its */
    bool freed_in_call;         /* libnbd let go of it inside the aio call */
    int error;                  /* positive errno */
    int64_t deadline;           /* ms: when waiting for a connection must end */
    struct cmd *next;
};

struct ndisk {
    char *uri;
    struct ndisk_ops ops;
    unsigned reconnect_ms;
    struct ndisk_info info;
    bool can_flush, can_trim, can_zero;
    uint64_t max_rw;

    /* h, conn, the wait list.  Every libnbd call that can run callbacks is
     * made with it held, so callbacks run under it too. */
    pthread_mutex_t lock;
    struct nbd_handle *h;
    struct cmd *issuing;        /* the command an aio call is issuing now */
    enum conn conn;
    int64_t next_try;
    unsigned backoff_ms;
    int64_t down_since;         /* when the connection was lost */
    bool told_failing;
    struct cmd *wait_head, **wait_tail;

    pthread_mutex_t done_lock;  /* the done list: libnbd's callbacks */
    struct cmd *done_head;

    atomic_uint pending;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- completions ---- */

static void push_done(struct ndisk *d, struct cmd *c)
{
    pthread_mutex_lock(&d->done_lock);
    c->next = d->done_head;
    d->done_head = c;
    pthread_mutex_unlock(&d->done_lock);
}

/* libnbd's completion callback.  Not every command gets one (those a
 * closing handle drops do not), so the hand-off is in cmd_free. */
static int cmd_done(void *user_data, int *error)
{
    struct cmd *c = user_data;

    c->error = *error;
    c->called = true;
    return 1;                   /* retire the command */
}

/* libnbd no longer needs c: called once per command, after cmd_done if
 * that came, also when the aio call itself fails (then the caller, which
 * holds c, handles it).  The handle is locked: only queue. */
static void cmd_free(void *user_data)
{
    struct cmd *c = user_data;

    if (!c->called)
        c->error = ENOTCONN;    /* dropped with its connection */
    if (c == c->d->issuing) {
        c->freed_in_call = true;
        return;
    }
    push_done(c->d, c);
}

static void finish(struct ndisk *d, struct cmd *c, int error)
{
    struct req_state *rs = c->rs;

    if (error && !rs->err)
        rs->err = -error;
    if (--rs->left == 0) {
        d->ops.complete(d->ops.opaque, rs->r, rs->err);
        free(rs);
    }
    free(c);
    atomic_fetch_sub(&d->pending, 1);
}

/* Errors that say the connection is gone rather than that the server
 * refused the command (NBD_ESHUTDOWN: the server is going away). */
static bool connection_error(int e)
{
    return e == ENOTCONN || e == ESHUTDOWN || e == ECONNRESET || e == EPIPE ||
           e == ECONNABORTED || e == ECONNREFUSED;
}

/* ---- issuing (d->lock held) ---- */

static void wait_push(struct ndisk *d, struct cmd *c, int64_t now)
{
    if (!c->deadline)
        c->deadline = now + d->reconnect_ms;
    c->next = NULL;
    *d->wait_tail = c;
    d->wait_tail = &c->next;
}

static void issue(struct ndisk *d, struct cmd *c, int64_t now)
{
    nbd_completion_callback cb = { .callback = cmd_done, .user_data = c, .free = cmd_free };
    int64_t cookie = 0;

    if (d->conn != CONNECTED) {
        wait_push(d, c, now);
        return;
    }
    c->called = c->freed_in_call = false;
    d->issuing = c;
    switch (c->op) {
    case VBLK_READ:
        cookie = nbd_aio_pread(d->h, c->buf, c->len, c->off, cb, 0);
        break;
    case VBLK_WRITE:
        cookie = nbd_aio_pwrite(d->h, c->buf, c->len, c->off, cb, 0);
        break;
    case VBLK_FLUSH:
        if (!d->can_flush)
            goto done_now;      /* nothing volatile to flush */
        cookie = nbd_aio_flush(d->h, cb, 0);
        break;
    case VBLK_DISCARD:
        if (!d->can_trim)
            goto done_now;      /* a discard is only a hint */
        cookie = nbd_aio_trim(d->h, c->len, c->off, cb, 0);
        break;
    case VBLK_ZERO:
        if (d->can_zero)
            cookie = nbd_aio_zero(d->h, c->len, c->off, cb,
                                  c->unmap ? 0 : LIBNBD_CMD_FLAG_NO_HOLE);
        else
            cookie = nbd_aio_pwrite(d->h, zeroes, c->len, c->off, cb, 0);
        break;
    }
    d->issuing = NULL;
    if (cookie != -1) {
        /* Done already (a dead connection fails commands on the spot). */
        if (c->freed_in_call)
            push_done(d, c);
        return;
    }
    /* Not issued: libnbd has let go of it. */
    c->error = nbd_get_errno();
    if (nbd_aio_is_dead(d->h) || nbd_aio_is_closed(d->h) || connection_error(c->error)) {
        wait_push(d, c, now);
        return;
    }
    if (!c->error)
        c->error = EIO;
    push_done(d, c);
    return;
done_now:
    d->issuing = NULL;
    c->error = 0;
    push_done(d, c);
}

/* ---- submitting (a vCPU thread, under the device lock) ---- */

static struct cmd *new_cmd(struct ndisk *d, struct req_state *rs, enum vblk_op op,
                           uint64_t off, uint64_t len, void *buf)
{
    struct cmd *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->d = d;
    c->rs = rs;
    c->op = op;
    c->off = off;
    c->len = len;
    c->buf = buf;
    return c;
}

/* Cuts r into commands, appended to *tail.  Returns how many, or -ENOMEM. */
static int build(struct ndisk *d, struct req_state *rs, struct cmd ***tail)
{
    struct vblk_req *r = rs->r;
    uint64_t off = r->offset;
    int n = 0;

#define ADD(op_, off_, len_, buf_) do {                                   \
        struct cmd *c_ = new_cmd(d, rs, (op_), (off_), (len_), (buf_));   \
        if (!c_)                                                          \
            return -ENOMEM;                                               \
        c_->unmap = r->unmap;                                             \
        **tail = c_;                                                      \
        *tail = &c_->next;                                                \
        n++;                                                              \
    } while (0)

    switch (r->op) {
    case VBLK_READ:
    case VBLK_WRITE:
        for (unsigned i = 0; i < r->niov;) {
            uint8_t *base = r->iov[i].iov_base;
            uint64_t len = r->iov[i].iov_len;

            /* Guest buffers that follow each other make one run. */
            for (i++; i < r->niov && (uint8_t *)r->iov[i].iov_base == base + len; i++)
                len += r->iov[i].iov_len;
            while (len > 0) {
                uint64_t take = len < d->max_rw ? len : d->max_rw;

                ADD(r->op, off, take, base);
                base += take;
                off += take;
                len -= take;
            }
        }
        break;
    case VBLK_FLUSH:
        ADD(VBLK_FLUSH, 0, 0, NULL);
        break;
    case VBLK_DISCARD:
    case VBLK_ZERO: {
        uint64_t step = r->op == VBLK_ZERO && !d->can_zero ? ZERO_BUF : CMD_MAX_RANGE;

        for (uint64_t done = 0; done < r->len;) {
            uint64_t take = r->len - done < step ? r->len - done : step;

            ADD(r->op, r->offset + done, take, NULL);
            done += take;
        }
        break;
    }
    }
#undef ADD
    return n;
}

void ndisk_submit(void *opaque, struct vblk_req *r)
{
    struct ndisk *d = opaque;
    struct req_state *rs = calloc(1, sizeof(*rs));
    struct cmd *head = NULL, **tail = &head, *c, *next;
    int64_t now = now_ms();
    int n;

    if (!rs) {
        d->ops.complete(d->ops.opaque, r, -ENOMEM);
        return;
    }
    rs->r = r;
    n = build(d, rs, &tail);
    if (n <= 0) {
        for (c = head; c; c = next) {
            next = c->next;
            free(c);
        }
        free(rs);
        d->ops.complete(d->ops.opaque, r, n < 0 ? n : -EIO);
        return;
    }
    rs->left = (unsigned)n;
    atomic_fetch_add(&d->pending, (unsigned)n);
    pthread_mutex_lock(&d->lock);
    for (c = head; c; c = next) {
        next = c->next;
        issue(d, c, now);
    }
    pthread_mutex_unlock(&d->lock);
    /* The loop polls for what libnbd wants now (it may have more to send). */
    d->ops.wake(d->ops.opaque);
}

/* ---- the loop's side ---- */

int ndisk_poll_fd(struct ndisk *d, short *events)
{
    int fd = -1;

    pthread_mutex_lock(&d->lock);
    if (d->h && (d->conn == CONNECTED || d->conn == CONNECTING)) {
        unsigned dir = nbd_aio_get_direction(d->h);

        fd = nbd_aio_get_fd(d->h);
        /* Always watch for input: that is how a dead server is seen. */
        *events = POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE)
            *events |= POLLOUT;
    }
    pthread_mutex_unlock(&d->lock);
    return fd;
}

void ndisk_events(struct ndisk *d, short revents)
{
    pthread_mutex_lock(&d->lock);
    if (d->h && (d->conn == CONNECTED || d->conn == CONNECTING)) {
        unsigned dir = nbd_aio_get_direction(d->h);

        if ((revents & (POLLIN | POLLHUP | POLLERR)) && (dir & LIBNBD_AIO_DIRECTION_READ))
            nbd_aio_notify_read(d->h);
        else if (revents & (POLLHUP | POLLERR))
            nbd_aio_notify_read(d->h);  /* let libnbd find the socket dead */
        if ((revents & POLLOUT) && (nbd_aio_get_direction(d->h) & LIBNBD_AIO_DIRECTION_WRITE))
            nbd_aio_notify_write(d->h);
    }
    pthread_mutex_unlock(&d->lock);
}

/* Hands finished commands on.  Those that failed for want of a
 * connection wait for the next one, unless retry is false (closing) or
 * their time is up. */
static void take_done(struct ndisk *d, int64_t now, bool retry)
{
    struct cmd *list, *c, *next;

    pthread_mutex_lock(&d->done_lock);
    list = d->done_head;
    d->done_head = NULL;
    pthread_mutex_unlock(&d->done_lock);
    for (c = list; c; c = next) {
        next = c->next;
        if (retry && connection_error(c->error) && (!c->deadline || now < c->deadline)) {
            pthread_mutex_lock(&d->lock);
            /* Whatever the handle says, this connection failed a command:
             * it is replaced. */
            if (d->conn == CONNECTED)
                d->conn = DEAD;
            c->error = 0;
            wait_push(d, c, now);
            pthread_mutex_unlock(&d->lock);
            continue;
        }
        finish(d, c, connection_error(c->error) ? EIO : c->error);
    }
}

static void lost(struct ndisk *d, int64_t now)
{
    if (!d->down_since) {
        d->down_since = now;
        d->told_failing = false;
        fprintf(stderr, "vdisk-vmm: disk %s: connection lost; reconnecting, requests wait "
                "up to %u ms\n", d->uri, d->reconnect_ms);
    }
}

/* The connection's state machine (d->lock held).  Returns ms until it
 * wants to run again, or -1. */
static int manage(struct ndisk *d, int64_t now)
{
    if (d->conn == CONNECTED && (nbd_aio_is_dead(d->h) || nbd_aio_is_closed(d->h)))
        d->conn = DEAD;
    if (d->conn == DEAD) {
        lost(d, now);
        /* Closing it gives back every command it still had (cmd_free:
         * ENOTCONN), which then waits for the next connection. */
        nbd_close(d->h);
        d->h = NULL;
        d->conn = WAITING;
        d->next_try = now;
        d->backoff_ms = BACKOFF_MIN_MS;
    }
    if (d->conn == WAITING && now >= d->next_try) {
        d->h = nbd_create();
        if (d->h && nbd_aio_connect_uri(d->h, d->uri) != -1) {
            d->conn = CONNECTING;
        } else {
            if (d->h)
                nbd_close(d->h);
            d->h = NULL;
            d->next_try = now + d->backoff_ms;
            d->backoff_ms = d->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                               : d->backoff_ms * 2;
        }
    }
    if (d->conn == CONNECTING) {
        if (nbd_aio_is_ready(d->h)) {
            int64_t size = nbd_get_size(d->h);

            if (size != (int64_t)d->info.size) {
                /* Not the disk the guest had: never write to it. */
                fprintf(stderr, "vdisk-vmm: disk %s: came back with size %" PRId64
                        " instead of %" PRIu64 "; not using it\n", d->uri, size, d->info.size);
                nbd_close(d->h);
                d->h = NULL;
                d->conn = WAITING;
                d->next_try = now + BACKOFF_MAX_MS;
            } else {
                struct cmd *list = d->wait_head, *c, *next;

                fprintf(stderr, "vdisk-vmm: disk %s: reconnected after %" PRId64 " ms\n",
                        d->uri, now - d->down_since);
                d->conn = CONNECTED;
                d->down_since = 0;
                d->wait_head = NULL;
                d->wait_tail = &d->wait_head;
                for (c = list; c; c = next) {
                    next = c->next;
                    issue(d, c, now);
                }
            }
        } else if (nbd_aio_is_dead(d->h) || nbd_aio_is_closed(d->h)) {
            nbd_close(d->h);
            d->h = NULL;
            d->conn = WAITING;
            d->next_try = now + d->backoff_ms;
            d->backoff_ms = d->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                               : d->backoff_ms * 2;
        }
    }
    if (d->conn == WAITING)
        return (int)(d->next_try > now ? d->next_try - now : 0);
    /* A connecting handle is driven by its socket; look again now and then
     * in case it has none to poll yet. */
    return d->conn == CONNECTING ? 100 : -1;
}

/* Fails the waiting commands whose time is up (d->lock held): moved to
 * the done list with EIO. */
static int expire(struct ndisk *d, int64_t now)
{
    struct cmd **p = &d->wait_head, *c;
    int64_t first = -1;

    d->wait_tail = &d->wait_head;
    while ((c = *p) != NULL) {
        if (now >= c->deadline) {
            *p = c->next;
            if (!d->told_failing) {
                d->told_failing = true;
                fprintf(stderr, "vdisk-vmm: disk %s: still unreachable after %u ms; "
                        "failing its requests (the guest sees I/O errors)\n", d->uri,
                        d->reconnect_ms);
            }
            c->error = EIO;
            c->deadline = 0;
            push_done(d, c);
            continue;
        }
        if (first < 0 || c->deadline < first)
            first = c->deadline;
        p = &c->next;
        d->wait_tail = p;
    }
    return first < 0 ? -1 : (int)(first - now);
}

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int ndisk_process(struct ndisk *d)
{
    int64_t now = now_ms();
    int t1, t2;

    take_done(d, now, true);
    pthread_mutex_lock(&d->lock);
    t1 = manage(d, now);
    t2 = expire(d, now);
    pthread_mutex_unlock(&d->lock);
    /* Reissues and expiries may have finished commands at once. */
    take_done(d, now, true);
    return min_timeout(t1, t2);
}

unsigned ndisk_pending(struct ndisk *d)
{
    return atomic_load(&d->pending);
}

void ndisk_get_info(const struct ndisk *d, struct ndisk_info *info)
{
    *info = d->info;
}

/* ---- open and close ---- */

int ndisk_open(const char *uri, unsigned reconnect_ms, const struct ndisk_ops *ops,
               struct ndisk **out)
{
    struct ndisk *d = calloc(1, sizeof(*d));
    int64_t size, max;
    char *name;

    if (!d || !(d->uri = strdup(uri))) {
        free(d);
        return -ENOMEM;
    }
    d->ops = *ops;
    d->reconnect_ms = reconnect_ms;
    d->wait_tail = &d->wait_head;
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->done_lock, NULL);
    atomic_init(&d->pending, 0);

    d->h = nbd_create();
    if (!d->h || nbd_connect_uri(d->h, uri) == -1) {
        fprintf(stderr, "vdisk-vmm: cannot connect to %s: %s\n", uri, nbd_get_error());
        goto fail;
    }
    size = nbd_get_size(d->h);
    if (size < 0) {
        fprintf(stderr, "vdisk-vmm: %s: %s\n", uri, nbd_get_error());
        goto fail;
    }
    d->info.size = (uint64_t)size;
    d->info.read_only = nbd_is_read_only(d->h) == 1;
    d->can_flush = nbd_can_flush(d->h) == 1;
    d->can_trim = nbd_can_trim(d->h) == 1;
    d->can_zero = nbd_can_zero(d->h) == 1;
    max = nbd_get_block_size(d->h, LIBNBD_SIZE_MAXIMUM);
    d->max_rw = max > 0 && (uint64_t)max < CMD_MAX_RW ? (uint64_t)max : CMD_MAX_RW;
    name = nbd_get_export_name(d->h);
    if (name) {
        snprintf(d->info.export_name, sizeof(d->info.export_name), "%s", name);
        free(name);
    }
    d->conn = CONNECTED;
    *out = d;
    return 0;
fail:
    if (d->h)
        nbd_close(d->h);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->done_lock);
    free(d->uri);
    free(d);
    return -EIO;
}

void ndisk_close(struct ndisk *d)
{
    struct cmd *c, *next;

    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    if (d->h && d->conn == CONNECTED) {
        /* What the guest wrote and did not flush: flush it on the way out. */
        if (d->can_flush && nbd_flush(d->h, 0) == -1)
            fprintf(stderr, "vdisk-vmm: disk %s: final flush: %s\n", d->uri, nbd_get_error());
        nbd_shutdown(d->h, 0);
    }
    if (d->h)
        nbd_close(d->h);        /* calls back what it still had */
    d->h = NULL;
    for (c = d->wait_head; c; c = next) {
        next = c->next;
        c->error = EIO;
        push_done(d, c);
    }
    d->wait_head = NULL;
    d->wait_tail = &d->wait_head;
    pthread_mutex_unlock(&d->lock);
    /* Every request still held is given back, so its owner can free it. */
    take_done(d, 0, false);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->done_lock);
    free(d->uri);
    free(d);
}
