/*
 * io.c - the I/O engine: contexts, libaio submission and completion, and
 * the synchronous file helpers used for metadata.
 *
 * A context drives one libaio queue.  Operations beyond the queue depth
 * wait in a FIFO and are submitted as slots free up.  Reads and writes of
 * files without O_DIRECT go to a small pool of threads of the context
 * instead (io_submit would do them synchronously, one at a time); their
 * completions come back through the same eventfd.  When a test backend
 * is installed (vd-testing.h), operations are carried out synchronously
 * through it and completed from vd_ctx_poll like any other.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vd-internal.h"

static ssize_t real_pread(int fd, void *buf, size_t len, off_t off)
{
    return pread(fd, buf, len, off);
}
static ssize_t real_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    return pwrite(fd, buf, len, off);
}
static int real_fallocate(int fd, int mode, off_t off, off_t len)
{
    return fallocate(fd, mode, off, len);
}

static const struct vd_io_backend real_backend = {
    .pread = real_pread,
    .pwrite = real_pwrite,
    .fdatasync = fdatasync,
    .fallocate = real_fallocate,
    .ftruncate = ftruncate,
};

const struct vd_io_backend *vdi_be = &real_backend;
bool vdi_be_custom;
struct vdi_io_stats vdi_stats;

void vdi_set_backend(const struct vd_io_backend *be)
{
    vdi_be = be ? be : &real_backend;
    vdi_be_custom = be != NULL;
}

void vdi_get_io_stats(struct vdi_io_stats *st)
{
    *st = vdi_stats;
}

void vdi_reset_io_stats(void)
{
    memset(&vdi_stats, 0, sizeof(vdi_stats));
}

void *vdi_alloc_aligned(size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, VDF_PAGE, len ? len : VDF_PAGE))
        return NULL;
    memset(p, 0, len);
    return p;
}

int vdi_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = vdi_be->pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0) {
            memset(p, 0, len);
            return -ENODATA;
        }
        __atomic_add_fetch(&vdi_stats.bytes_read, (uint64_t)r, __ATOMIC_RELAXED);
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

int vdi_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, bool meta)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t r = vdi_be->pwrite(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        __atomic_add_fetch(meta ? &vdi_stats.meta_bytes_written
                                : &vdi_stats.data_bytes_written,
                           (uint64_t)r, __ATOMIC_RELAXED);
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

int vdi_reserve(int fd, uint64_t off, uint64_t len)
{
    if (vdi_be->fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    /* A file system without fallocate: nothing to reserve with. */
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)
        return 0;
    return -errno;
}

int vdi_fdatasync(int fd)
{
    __atomic_add_fetch(&vdi_stats.syncs, 1, __ATOMIC_RELAXED);
    if (vdi_be->fdatasync(fd) < 0)
        return -errno;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Buffered files and their threads                                     */

#define FD_TABLE 65536        /* descriptors above this stay on libaio */
static uint8_t fd_buffered[FD_TABLE];

void vdi_fd_set_buffered(int fd, bool buffered)
{
    if (fd >= 0 && fd < FD_TABLE)
        __atomic_store_n(&fd_buffered[fd], buffered, __ATOMIC_RELAXED);
}

static bool is_buffered(int fd)
{
    return fd >= 0 && fd < FD_TABLE && __atomic_load_n(&fd_buffered[fd], __ATOMIC_RELAXED);
}

static void account(const struct vdi_op *op);

#define POOL_THREADS 16

struct vdi_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct vdi_op *queue_head, *queue_tail;
    struct vdi_op *done;          /* finished, for vd_ctx_poll (any order) */
    unsigned inflight;            /* submitted, not yet taken back by poll */
    bool quit;
    int efd;
    unsigned nthreads;
    pthread_t threads[POOL_THREADS];
};

static void *pool_thread(void *arg)
{
    struct vdi_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->queue_head && !p->quit)
            pthread_cond_wait(&p->cond, &p->lock);
        if (!p->queue_head)
            break;
        struct vdi_op *op = p->queue_head;
        p->queue_head = op->next;
        if (!p->queue_head)
            p->queue_tail = NULL;
        pthread_mutex_unlock(&p->lock);

        int r;
        if (op->kind == VDI_OP_READ) {
            r = vdi_pread_full(op->fd, op->buf, op->len, op->off);
            if (r == -ENODATA)
                r = 0;   /* past the end of file reads as zeroes */
        } else {
            r = vdi_pwrite_full(op->fd, op->buf, op->len, op->off, op->meta);
        }
        op->res = r;

        pthread_mutex_lock(&p->lock);
        op->next = p->done;
        p->done = op;
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof(one));
        (void)w;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void pool_free(struct vdi_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->quit = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Hands op to the context's threads (started on first use); false when
 * they cannot be started (the caller then does it another way). */
static bool pool_submit(struct vd_ctx *ctx, struct vdi_op *op)
{
    struct vdi_pool *p = ctx->pool;
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return false;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->efd = ctx->efd;
        for (unsigned i = 0; i < POOL_THREADS; i++) {
            if (pthread_create(&p->threads[i], NULL, pool_thread, p) != 0)
                break;
            p->nthreads++;
        }
        if (p->nthreads == 0) {
            pool_free(p);
            return false;
        }
        ctx->pool = p;
    }
    op->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->queue_tail)
        p->queue_tail->next = op;
    else
        p->queue_head = op;
    p->queue_tail = op;
    p->inflight++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    account(op);
    return true;
}

/* Completes what the threads finished; returns how many. */
static int pool_reap(struct vd_ctx *ctx)
{
    struct vdi_pool *p = ctx->pool;
    if (!p || !p->inflight)
        return 0;
    pthread_mutex_lock(&p->lock);
    struct vdi_op *op = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->lock);
    int n = 0;
    while (op) {
        struct vdi_op *next = op->next;
        p->inflight--;
        op->done(op, (int)op->res);
        op = next;
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */

int vd_ctx_new(unsigned queue_depth, struct vd_ctx **out)
{
    struct vd_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return vdi_err(-ENOMEM, "out of memory");
    ctx->depth = queue_depth ? queue_depth : 256;
    if (ctx->depth > 65536)
        ctx->depth = 65536;
    ctx->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->efd < 0) {
        int e = -errno;
        free(ctx);
        return vdi_err(e, "eventfd: %s", strerror(-e));
    }
    ctx->aio_fsync_ok = true;
    pthread_mutex_init(&ctx->remote_lock, NULL);
    if (!vdi_be_custom) {
        int r = io_setup((int)ctx->depth, &ctx->aio);
        if (r == 0) {
            ctx->use_aio = true;
            ctx->events = calloc(ctx->depth, sizeof(*ctx->events));
            if (!ctx->events) {
                io_destroy(ctx->aio);
                close(ctx->efd);
                free(ctx);
                return vdi_err(-ENOMEM, "out of memory");
            }
        }
        /* Without libaio (e.g. aio-max-nr exhausted) requests run
         * synchronously: slower, still correct. */
    }
    *out = ctx;
    return 0;
}

void vd_ctx_free(struct vd_ctx *ctx)
{
    if (!ctx)
        return;
    pool_free(ctx->pool);
    if (ctx->use_aio)
        io_destroy(ctx->aio);
    close(ctx->efd);
    pthread_mutex_destroy(&ctx->remote_lock);
    free(ctx->events);
    free(ctx);
}

int vd_ctx_fd(const struct vd_ctx *ctx)
{
    return ctx->efd;
}

unsigned vd_ctx_inflight(const struct vd_ctx *ctx)
{
    return ctx->reqs_inflight;
}

static void signal_efd(struct vd_ctx *ctx)
{
    uint64_t one = 1;
    if (ctx->efd_signaled)
        return;   /* already readable until the next poll drains it */
    ctx->efd_signaled = true;
    ssize_t r = write(ctx->efd, &one, sizeof(one));
    (void)r;   /* EAGAIN: the counter is already non-zero, which is enough */
}

void vdi_defer(struct vd_ctx *ctx, struct vdi_defer *d)
{
    d->next = NULL;
    if (ctx->defer_tail)
        ctx->defer_tail->next = d;
    else
        ctx->defer_head = d;
    ctx->defer_tail = d;
    signal_efd(ctx);
}

static void push_done(struct vd_ctx *ctx, struct vdi_op *op)
{
    op->next = NULL;
    if (ctx->done_tail)
        ctx->done_tail->next = op;
    else
        ctx->done_head = op;
    ctx->done_tail = op;
}

/* Carries out op with plain system calls (test backend, or no libaio). */
static void run_sync(struct vd_ctx *ctx, struct vdi_op *op)
{
    int r;
    switch (op->kind) {
    case VDI_OP_READ:
        r = vdi_pread_full(op->fd, op->buf, op->len, op->off);
        if (r == -ENODATA)
            r = 0;   /* past the end of file reads as zeroes */
        break;
    case VDI_OP_WRITE:
        r = vdi_pwrite_full(op->fd, op->buf, op->len, op->off, op->meta);
        break;
    default:
        r = vdi_fdatasync(op->fd);
        break;
    }
    op->res = r;
    push_done(ctx, op);
    signal_efd(ctx);
}

static void prep(struct vd_ctx *ctx, struct vdi_op *op)
{
    struct iocb *cb = &op->iocb;
    switch (op->kind) {
    case VDI_OP_READ:
        io_prep_pread(cb, op->fd, op->buf, op->len, (long long)op->off);
        break;
    case VDI_OP_WRITE:
        io_prep_pwrite(cb, op->fd, op->buf, op->len, (long long)op->off);
        break;
    default:
        io_prep_fdsync(cb, op->fd);
        break;
    }
    io_set_eventfd(cb, ctx->efd);
}

static void account(const struct vdi_op *op)
{
    if (op->kind == VDI_OP_WRITE)
        __atomic_add_fetch(op->meta ? &vdi_stats.meta_bytes_written
                                    : &vdi_stats.data_bytes_written,
                           (uint64_t)op->len, __ATOMIC_RELAXED);
    else if (op->kind == VDI_OP_READ)
        __atomic_add_fetch(&vdi_stats.bytes_read, (uint64_t)op->len, __ATOMIC_RELAXED);
    else
        __atomic_add_fetch(&vdi_stats.syncs, 1, __ATOMIC_RELAXED);
}

void vdi_op_submit(struct vd_ctx *ctx, struct vdi_op *op)
{
    op->ctx = ctx;
    op->next = NULL;
    if (!ctx->use_aio || (op->kind == VDI_OP_FSYNC && !ctx->aio_fsync_ok)) {
        run_sync(ctx, op);
        return;
    }
    if (op->kind != VDI_OP_FSYNC && is_buffered(op->fd) && pool_submit(ctx, op))
        return;
    /* Queued here, handed to the kernel in batches by vdi_ctx_kick. */
    if (ctx->wait_tail)
        ctx->wait_tail->next = op;
    else
        ctx->wait_head = op;
    ctx->wait_tail = op;
}

#define KICK_BATCH 64

void vdi_ctx_kick(struct vd_ctx *ctx)
{
    struct iocb *cbs[KICK_BATCH];
    while (ctx->wait_head && ctx->ops_in_kernel < ctx->depth) {
        unsigned room = ctx->depth - ctx->ops_in_kernel;
        unsigned n = 0;
        for (struct vdi_op *op = ctx->wait_head; op && n < KICK_BATCH && n < room;
             op = op->next) {
            prep(ctx, op);
            cbs[n++] = &op->iocb;
        }
        int r = io_submit(ctx->aio, (long)n, cbs);
        if (r == -EAGAIN && ctx->ops_in_kernel > 0)
            return;   /* retried when completions free room */
        if (r <= 0) {
            /* The kernel refused the first one: do it synchronously
             * rather than fail the request. */
            struct vdi_op *op = ctx->wait_head;
            ctx->wait_head = op->next;
            if (!ctx->wait_head)
                ctx->wait_tail = NULL;
            run_sync(ctx, op);
            continue;
        }
        for (int i = 0; i < r; i++) {
            struct vdi_op *op = ctx->wait_head;
            ctx->wait_head = op->next;
            op->next = NULL;
            account(op);
            ctx->ops_in_kernel++;
        }
        if (!ctx->wait_head)
            ctx->wait_tail = NULL;
    }
}

static void complete_kernel_op(struct vd_ctx *ctx, struct vdi_op *op, long res)
{
    ctx->ops_in_kernel--;
    int r;
    if (res < 0) {
        r = (int)res;
        if (op->kind == VDI_OP_FSYNC && r == -EINVAL) {
            /* Old kernels have no aio fsync: do it here, and from now on
             * synchronously. */
            ctx->aio_fsync_ok = false;
            r = vdi_fdatasync(op->fd);
        }
    } else if (op->kind != VDI_OP_FSYNC && (size_t)res < op->len) {
        if (op->kind == VDI_OP_READ) {
            /* Short read: finish it synchronously (end of file reads as
             * zeroes; any other reason is retried by the helper). */
            uint8_t *b = op->buf;
            r = vdi_pread_full(op->fd, b + res, op->len - (size_t)res,
                               op->off + (uint64_t)res);
            if (r == -ENODATA)
                r = 0;
        } else {
            const uint8_t *b = op->buf;
            r = vdi_pwrite_full(op->fd, b + res, op->len - (size_t)res,
                                op->off + (uint64_t)res, op->meta);
        }
    } else {
        r = 0;
    }
    op->done(op, r);
}

void vdi_ctx_post(struct vd_ctx *ctx, struct vdi_defer *d)
{
    d->next = NULL;
    pthread_mutex_lock(&ctx->remote_lock);
    if (ctx->remote_tail)
        ctx->remote_tail->next = d;
    else
        ctx->remote_head = d;
    ctx->remote_tail = d;
    pthread_mutex_unlock(&ctx->remote_lock);
    uint64_t one = 1;
    ssize_t w = write(ctx->efd, &one, sizeof(one));
    (void)w;
}

/* Runs the work other threads posted; true if there was some. */
static bool run_remote(struct vd_ctx *ctx)
{
    pthread_mutex_lock(&ctx->remote_lock);
    struct vdi_defer *d = ctx->remote_head;
    ctx->remote_head = ctx->remote_tail = NULL;
    pthread_mutex_unlock(&ctx->remote_lock);
    bool any = d != NULL;
    while (d) {
        struct vdi_defer *next = d->next;
        d->fn(d);
        d = next;
    }
    return any;
}

int vd_ctx_poll(struct vd_ctx *ctx, int timeout_ms)
{
    unsigned before = ctx->reqs_completed;
    uint64_t cnt;
    ssize_t rr = read(ctx->efd, &cnt, sizeof(cnt));
    (void)rr;
    ctx->efd_signaled = false;

    for (;;) {
        bool progress = false;
        vdi_ctx_kick(ctx);
        if (pool_reap(ctx) > 0)
            progress = true;
        if (run_remote(ctx))
            progress = true;
        while (ctx->done_head) {
            struct vdi_op *op = ctx->done_head;
            ctx->done_head = op->next;
            if (!ctx->done_head)
                ctx->done_tail = NULL;
            op->done(op, (int)op->res);
            progress = true;
        }
        while (ctx->defer_head) {
            struct vdi_defer *d = ctx->defer_head;
            ctx->defer_head = d->next;
            if (!ctx->defer_head)
                ctx->defer_tail = NULL;
            d->fn(d);
            progress = true;
        }
        vdi_ctx_kick(ctx);
        /* Blocking in io_getevents would not see the threads finish: with
         * both kinds in flight, wait on the eventfd both signal. */
        bool pool_busy = (ctx->pool && ctx->pool->inflight > 0) ||
                         __atomic_load_n(&ctx->remote_expected, __ATOMIC_RELAXED) > 0;
        bool idle = !progress && ctx->reqs_completed == before && timeout_ms != 0;
        if (ctx->use_aio && ctx->ops_in_kernel > 0) {
            bool may_wait = idle && !pool_busy;
            struct timespec ts = { 0, 0 }, *tsp = &ts;
            if (may_wait) {
                if (timeout_ms < 0) {
                    tsp = NULL;
                } else {
                    ts.tv_sec = timeout_ms / 1000;
                    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
                }
            }
            int n = io_getevents(ctx->aio, may_wait ? 1 : 0, (long)ctx->depth,
                                 ctx->events, tsp);
            if (n < 0 && n != -EINTR)
                return vdi_err(n, "io_getevents: %s", strerror(-n));
            for (int i = 0; i < n; i++) {
                struct vdi_op *op = (struct vdi_op *)ctx->events[i].obj;
                complete_kernel_op(ctx, op, (long)ctx->events[i].res);
                progress = true;
            }
            if (n > 0)
                continue;
            if (may_wait)
                break;   /* timed out */
        }
        if (idle && pool_busy) {
            struct pollfd pfd = { .fd = ctx->efd, .events = POLLIN };
            int pr = poll(&pfd, 1, timeout_ms);
            if (pr < 0 && errno != EINTR)
                return vdi_err(-errno, "poll: %s", strerror(errno));
            if (pr == 0)
                break;   /* timed out */
            rr = read(ctx->efd, &cnt, sizeof(cnt));
            ctx->efd_signaled = false;
            continue;
        }
        if (!progress)
            break;
        if (ctx->reqs_completed != before && !ctx->done_head && !ctx->defer_head)
            break;
    }
    return (int)(ctx->reqs_completed - before);
}
