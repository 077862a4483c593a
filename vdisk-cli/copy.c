/*
 * copy.c - the sparse copy pipeline shared by "img convert", "import" and
 * "export": an image (struct img_src) into a new image of any format
 * (struct fmt_image: a file made by fmt_create, or a store volume).
 *
 * Only runs that may hold data are read (the source's block status), and
 * of what is read only 4 KiB granules that are not all zeroes are written:
 * the destination must read as zeroes wherever nothing is written (a new
 * image, a new volume).  An overlay (a qcow2 image naming a backing file)
 * is the exception: what is not written there reads from the backing
 * file, so the source's own runs are copied whole, in the overlay's
 * clusters, and its unallocated runs are left out.
 *
 * The copy is a pipeline of COPY_SLOTS buffers.  Each slot goes
 * FREE -> READING -> READ_DONE -> WRITING -> FREE.  vdk reads and writes
 * are asynchronous (libvdisk's).  The other formats' reads are done by
 * READERS reader threads (each with a handle of its own on the source),
 * and their writes by a writer thread, so that the copies into and out of
 * the page cache (the cost of such a conversion) run on every core and
 * the disk sees more than one request at a time.  Slots are written in
 * the order of their offsets, which stream formats (VMDK streamOptimized)
 * need.  Callbacks only change slot states; new requests are submitted
 * from the main loop, never from a callback, so that the loop may wait
 * whenever it likes.
 *
 * A thread owns the slots it was handed (READING or WRITING) until it
 * moves them on (READ_DONE, FREE); the state is atomic, the hand-off
 * queues under a mutex, and an eventfd wakes the main loop, which may also
 * be waiting for libvdisk's completions (vd_ctx_fd).  The block status
 * that decides what to read stays on the main loop, on the first handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cli.h"

#define COPY_SLOTS    16
#define COPY_BUF      (1u << 20)
#define ZERO_GRAIN    4096u      /* the smallest run worth skipping */
#define MAX_INFLIGHT  128u       /* our requests in flight on the context */
#define READERS       2u         /* reader threads for sources read with
                                    the drivers' synchronous calls */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ_DONE, SLOT_WRITING };

struct copy;

struct slot {
    struct copy *c;
    void *buf;
    _Atomic int state;    /* enum slot_state */
    uint64_t off;
    size_t len;
    uint64_t seq;         /* order of the read: slots are written in it */
    unsigned pending;     /* writes in flight (+1 while submitting) */
};

struct pool;

struct pool_thread {
    struct pool *pool;
    pthread_t thread;
    struct fmt_image *img;        /* readers: their own source handle */
};

struct pool {
    struct copy *c;
    bool on;
    unsigned n;
    struct pool_thread t[READERS];
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* the threads wait for work on it */
    struct slot *queue[COPY_SLOTS];
    unsigned q_head, q_len;       /* under mu */
    bool stop;                    /* under mu: no more work will come */
    void (*job)(struct copy *c, struct pool_thread *t, struct slot *s);
};

struct copy {
    struct img_src *src;
    struct fmt_image *out;
    const char *out_path;
    struct vd_chain *out_chain;   /* vdk destinations: asynchronous writes */
    bool overlay;         /* out names a backing file: whole units, own data */
    uint32_t align;       /* the units out is written in */
    size_t buf_size;      /* chunks end on multiples of it */
    struct vd_ctx *ctx;
    struct slot slots[COPY_SLOTS];
    unsigned next_slot;
    uint64_t next_read, next_write;   /* sequence numbers */
    int err;              /* first failure; the message is printed */
    struct cli_progress prog;

    /* I/O threads: a writer for outputs that are not vdk chains, readers
     * for sources that are not. */
    struct pool writer, readers;
    _Atomic int terr;             /* the threads' first failure (printed) */
    _Atomic bool stopping;        /* the copy failed: drop what is queued */
    int wake_fd;                  /* eventfd: a thread is done with a slot */
};

/* ------------------------------------------------------------------ */
/* The destination                                                     */
/* ------------------------------------------------------------------ */

int copy_out_create(const char *path, const char *format,
                    const struct fmt_create_opts *o, struct fmt_image **out)
{
    int ret = fmt_create(path, format, o, out);

    if (ret < 0)
        cli_err_fmt(ret, "%s", path);
    return ret;
}

int copy_out_chain(struct vd_chain *chain, const char *name, struct fmt_image **out)
{
    int ret = fmt_create_chain(chain, name, out);

    if (ret < 0)
        cli_err_fmt(ret, "%s", name);
    return ret;
}

int copy_out_close(struct fmt_image *out)
{
    char *path = strdup(fmt_path(out));
    int ret = fmt_close(out);

    if (ret < 0)
        cli_err_fmt(ret, "%s: close", path ? path : "output");
    free(path);
    return ret;
}

/* ------------------------------------------------------------------ */
/* The pipeline                                                        */
/* ------------------------------------------------------------------ */

/* Records the first failure of an asynchronous request (later ones are
 * usually its consequences). */
static void fail_async(struct copy *c, int err, const char *path,
                       const char *op, uint64_t off)
{
    if (c->err)
        return;
    c->err = err;
    cli_err_lib(err, "%s: %s in the chunk at offset %llu", path, op,
                (unsigned long long)off);
}

static void read_done(void *opaque, int result)
{
    struct slot *s = opaque;

    if (result < 0)
        fail_async(s->c, result, s->c->src->path, "read", s->off);
    s->state = SLOT_READ_DONE;
}

static void slot_put(struct slot *s)
{
    if (--s->pending == 0)
        s->state = SLOT_FREE;
}

static void write_done(void *opaque, int result)
{
    struct slot *s = opaque;

    if (result < 0)
        fail_async(s->c, result, s->c->out_path, "write", s->off);
    slot_put(s);
}

/* Waits for completions; returns 0 or a negative errno. */
static int copy_poll(struct copy *c)
{
    int ret = vd_ctx_poll(c->ctx, -1);

    if (ret < 0 && ret != -EINTR) {
        if (!c->err) {
            c->err = ret;
            cli_err_lib(ret, "waiting for I/O");
        }
        return ret;
    }
    return 0;
}

/* Waits until fewer than MAX_INFLIGHT of our requests are in flight. */
static int throttle(struct copy *c)
{
    while (vd_ctx_inflight(c->ctx) >= MAX_INFLIGHT) {
        int ret = copy_poll(c);

        if (ret < 0)
            return ret;
    }
    return 0;
}

static int write_run(struct copy *c, struct slot *s, uint64_t off, size_t len)
{
    const char *p = (const char *)s->buf + (off - s->off);
    int ret;

    if (!c->out_chain) {
        ret = fmt_write(c->out, p, off, len);
        if (ret < 0)
            cli_err_fmt(ret, "%s: write at offset %llu", c->out_path,
                        (unsigned long long)off);
        return ret;
    }
    ret = throttle(c);
    if (ret < 0)
        return ret;
    for (;;) {
        ret = vd_aio_write(c->out_chain, p, off, len, 0, write_done, s);
        if (ret == -EAGAIN && vd_ctx_inflight(c->ctx) > 0) {
            ret = copy_poll(c);     /* the queue is full: let some finish */
            if (ret < 0)
                return ret;
            continue;
        }
        break;
    }
    if (ret < 0) {
        cli_err_lib(ret, "%s: write at offset %llu", c->out_path,
                    (unsigned long long)off);
        return ret;
    }
    s->pending++;
    return 0;
}

/* An overlay's chunk, whole: data, or zero clusters if it is all zeroes
 * (over a backing file, zeroes must be written, not left out). */
static int write_whole(struct copy *c, struct slot *s)
{
    int ret;

    if (!cli_is_zero(s->buf, s->len))
        return write_run(c, s, s->off, s->len);
    ret = fmt_write_zeroes(c->out, s->off, s->len);
    if (ret < 0)
        cli_err_fmt(ret, "%s: zeroes at offset %llu", c->out_path,
                    (unsigned long long)s->off);
    return ret;
}

/* Writes the granules of a read slot that are not all zeroes. */
static int write_slot(struct copy *c, struct slot *s)
{
    uint64_t end = s->off + s->len, pos = s->off, run = 0;
    bool in_run = false;
    int ret = 0;

    s->pending = 1;                 /* held until every run is submitted */
    if (c->overlay) {
        ret = write_whole(c, s);
        goto out;
    }
    while (pos < end) {
        uint64_t g_end = MIN(ALIGN_DOWN(pos, ZERO_GRAIN) + ZERO_GRAIN, end);
        bool zero = cli_is_zero((const char *)s->buf + (pos - s->off),
                                (size_t)(g_end - pos));

        if (!zero && !in_run) {
            run = pos;
            in_run = true;
        } else if (zero && in_run) {
            ret = write_run(c, s, run, (size_t)(pos - run));
            if (ret < 0)
                goto out;
            in_run = false;
        }
        pos = g_end;
    }
    if (in_run)
        ret = write_run(c, s, run, (size_t)(end - run));
out:
    slot_put(s);
    return ret;
}

/* A pool of threads working on slots: the writer (one thread, slots in
 * the order they come) and the readers (READERS threads, each with a
 * handle of its own on the source). */
static void *pool_main(void *opaque)
{
    struct pool_thread *t = opaque;
    struct pool *p = t->pool;
    struct copy *c = p->c;
    uint64_t one = 1;

    for (;;) {
        struct slot *s;

        pthread_mutex_lock(&p->mu);
        while (p->q_len == 0 && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->q_len == 0) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        s = p->queue[p->q_head];
        p->q_head = (p->q_head + 1) % COPY_SLOTS;
        p->q_len--;
        pthread_mutex_unlock(&p->mu);

        p->job(c, t, s);
        if (write(c->wake_fd, &one, sizeof(one)) < 0 && c->terr == 0)
            c->terr = -errno;
    }
}

static void pool_push(struct pool *p, struct slot *s)
{
    pthread_mutex_lock(&p->mu);
    p->queue[(p->q_head + p->q_len) % COPY_SLOTS] = s;
    p->q_len++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Starts n threads running job (a reader's handle is set in p->t[i].img
 * before). */
static int pool_start(struct copy *c, struct pool *p, unsigned n,
                      void (*job)(struct copy *, struct pool_thread *, struct slot *))
{
    int ret;

    p->c = c;
    p->job = job;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->on = true;
    for (unsigned i = 0; i < n; i++) {
        p->t[i].pool = p;
        ret = -pthread_create(&p->t[i].thread, NULL, pool_main, &p->t[i]);
        if (ret < 0) {
            cli_err_errno(-ret, "cannot start an I/O thread");
            return ret;
        }
        p->n++;
    }
    return 0;
}

/* Lets the threads finish what they were handed, and joins them. */
static void pool_stop(struct pool *p)
{
    if (!p->on)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->t[i].thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    p->on = false;
}

/* The writer's job: the slot written (write_slot frees it); after a
 * failure anywhere, freed unwritten. */
static void write_job(struct copy *c, struct pool_thread *t, struct slot *s)
{
    int ret;

    (void)t;
    if (c->terr != 0 || c->stopping) {
        s->state = SLOT_FREE;
        return;
    }
    ret = write_slot(c, s);
    if (ret < 0 && c->terr == 0)
        c->terr = ret;
}

/* A reader's job: the slot's range read with the thread's own handle. */
static void read_job(struct copy *c, struct pool_thread *t, struct slot *s)
{
    int ret = 0;

    if (c->terr == 0 && !c->stopping) {
        ret = fmt_read(t->img, s->buf, s->off, s->len);
        if (ret < 0)
            cli_err_fmt(ret, "%s: read at offset %llu", c->src->path,
                        (unsigned long long)s->off);
    }
    if (ret < 0 && c->terr == 0)
        c->terr = ret;
    s->state = SLOT_READ_DONE;
}

/* A slot whose read is done goes to be written: to the writer thread, or
 * written on the spot (vdk chains: asynchronous writes). */
static int hand_off(struct copy *c, struct slot *s)
{
    s->state = SLOT_WRITING;
    c->next_write++;
    if (!c->writer.on)
        return write_slot(c, s);
    pool_push(&c->writer, s);
    return 0;
}

/* copy_wait's body: polls the threads' eventfd and the context's fd (or
 * just the context when there are no threads). */
static int wait_events(struct copy *c)
{
    struct pollfd p[2] = {
        { .fd = c->wake_fd, .events = POLLIN },
        { .fd = vd_ctx_fd(c->ctx), .events = POLLIN },
    };
    uint64_t n;
    int ret;

    if (c->wake_fd < 0)
        return copy_poll(c);
    if (poll(p, 2, -1) < 0 && errno != EINTR) {
        ret = -errno;
        cli_err_errno(-ret, "poll");
        return ret;
    }
    if ((p[0].revents & POLLIN) && read(c->wake_fd, &n, sizeof(n)) < 0 &&
        errno != EAGAIN) {
        ret = -errno;
        cli_err_errno(-ret, "eventfd");
        return ret;
    }
    if (p[1].revents & POLLIN) {
        ret = vd_ctx_poll(c->ctx, 0);
        if (ret < 0 && ret != -EINTR) {
            cli_err_lib(ret, "waiting for I/O");
            return ret;
        }
    }
    return 0;
}

/* Waits for something to happen: a completion of libvdisk's, or a slot
 * a thread is done with.  Returns 0 or a negative errno (then also in
 * c->err, the message printed). */
static int copy_wait(struct copy *c)
{
    int ret = wait_events(c);

    if (ret < 0 && !c->err)
        c->err = ret;
    return ret;
}

/* Starts the threads a copy uses: a writer unless the output is a vdk
 * chain, readers unless the source is one. */
static int threads_start(struct copy *c)
{
    int ret;

    if (c->out_chain && c->src->chain)
        return 0;
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        ret = -errno;
        cli_err_errno(-ret, "eventfd");
        return ret;
    }
    if (!c->src->chain) {
        for (unsigned i = 0; i < READERS; i++) {
            ret = fmt_reopen(c->src->img, &c->readers.t[i].img);
            if (ret < 0) {
                cli_err_fmt(ret, "%s", c->src->path);
                return ret;
            }
        }
        ret = pool_start(c, &c->readers, READERS, read_job);
        if (ret < 0)
            return ret;
    }
    if (!c->out_chain)
        return pool_start(c, &c->writer, 1, write_job);
    return 0;
}

/* Joins the threads (what they were handed is done or dropped first). */
static void threads_stop(struct copy *c)
{
    c->stopping = c->err != 0;
    pool_stop(&c->readers);
    pool_stop(&c->writer);
    for (unsigned i = 0; i < READERS; i++) {
        fmt_close(c->readers.t[i].img);
        c->readers.t[i].img = NULL;
    }
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    c->wake_fd = -1;
}

static int start_read(struct copy *c, struct slot *s, uint64_t off, size_t len)
{
    int ret;

    s->off = off;
    s->len = len;
    s->seq = c->next_read++;
    if (!c->src->chain) {
        s->state = SLOT_READING;
        pool_push(&c->readers, s);
        return 0;
    }
    ret = throttle(c);
    if (ret < 0)
        return ret;
    s->state = SLOT_READING;
    ret = vd_aio_read(c->src->chain, s->buf, off, len, read_done, s);
    if (ret < 0) {
        s->state = SLOT_FREE;
        cli_err_lib(ret, "%s: read at offset %llu", c->src->path,
                    (unsigned long long)off);
    }
    return ret;
}

static struct slot *free_slot(struct copy *c)
{
    for (unsigned i = 0; i < COPY_SLOTS; i++) {
        struct slot *s = &c->slots[(c->next_slot + i) % COPY_SLOTS];

        if (s->state == SLOT_FREE) {
            c->next_slot = (c->next_slot + i + 1) % COPY_SLOTS;
            return s;
        }
    }
    return NULL;
}

/* The slot whose turn it is to be written, if its read is done. */
static struct slot *next_to_write(struct copy *c)
{
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        if (c->slots[i].state == SLOT_READ_DONE && c->slots[i].seq == c->next_write)
            return &c->slots[i];
    return NULL;
}

static bool slots_busy(const struct copy *c)
{
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        if (c->slots[i].state == SLOT_READING || c->slots[i].state == SLOT_WRITING)
            return true;
    return false;
}

/* Finds the next run to copy from off: sets *data_end past off, or moves
 * off to the end.  An overlay copies what the source's own layers hold,
 * zeroes included, in whole units; other copies skip what reads as
 * zeroes. */
static int next_run(struct copy *c, uint64_t *off, uint64_t *data_end)
{
    uint64_t size = c->src->size;

    while (*off < size && *off >= *data_end) {
        enum fmt_kind kind;
        uint64_t n;
        /* An overlay gets what the source holds itself, not its backing
         * file's data (the overlay's backing file stands for that). */
        int ret = img_src_status(c->src, *off, size - *off, !c->overlay, &n, &kind);

        if (ret < 0)
            return ret;
        if (c->overlay ? kind == FMT_UNALLOC : kind != FMT_DATA) {
            *off += n;
        } else if (c->overlay) {
            /* The previous run ended on a unit (or at the end): no unit is
             * copied twice. */
            *data_end = MIN(ALIGN_UP(*off + n, (uint64_t)c->align), size);
            *off = ALIGN_DOWN(*off, (uint64_t)c->align);
        } else {
            *data_end = *off + n;
        }
        cli_progress_update(&c->prog, *off);
    }
    return 0;
}

/* The copy proper.  Returns 0 or a negative errno (message printed). */
static int run_copy(struct copy *c)
{
    uint64_t size = c->src->size, off = 0, data_end = 0;
    int ret;

    for (;;) {
        struct slot *s;
        bool progressed = false;

        /* Reads that finished become writes, in order. */
        while (!c->err && (s = next_to_write(c)) != NULL) {
            ret = hand_off(c, s);
            if (ret < 0 && !c->err)
                c->err = ret;
            progressed = true;
        }
        if (!c->err && c->terr)
            c->err = c->terr;
        if (c->err)
            break;

        /* Start the next chunk of data, skipping runs that read as zero. */
        ret = next_run(c, &off, &data_end);
        if (ret < 0) {
            c->err = ret;
            break;
        }
        if (off < size && (s = free_slot(c)) != NULL) {
            /* Chunks end on buffer boundaries of the disk. */
            uint64_t end = MIN(data_end, ALIGN_DOWN(off, c->buf_size) + c->buf_size);

            ret = start_read(c, s, off, (size_t)(end - off));
            if (ret < 0) {
                c->err = ret;
                break;
            }
            off = end;
            cli_progress_update(&c->prog, off);
            continue;
        }
        if (progressed)
            continue;
        if (off >= size && !slots_busy(c) && !next_to_write(c))
            break;
        if (copy_wait(c) < 0)
            break;
    }

    /* Let what is in flight land before the buffers can go away: the
     * writer's slots first, then libvdisk's requests. */
    threads_stop(c);
    if (!c->err && c->terr)
        c->err = c->terr;
    while (slots_busy(c)) {
        if (vd_ctx_poll(c->ctx, -1) < 0)
            break;
    }
    return c->err;
}

int copy_image(struct img_src *src, struct fmt_image *out, bool progress)
{
    struct copy c = { .src = src, .out = out };
    int ret = -ENOMEM;

    c.ctx = cli_ctx();
    if (!c.ctx)
        return -ENOMEM;
    c.out_path = fmt_path(out);
    c.out_chain = fmt_chain(out);
    c.align = fmt_write_align(out);
    c.overlay = fmt_backing_name(out) != NULL;
    c.buf_size = MAX((size_t)COPY_BUF, (size_t)c.align);
    for (unsigned i = 0; i < COPY_SLOTS; i++) {
        c.slots[i].c = &c;
        c.slots[i].state = SLOT_FREE;
    }
    for (unsigned i = 0; i < COPY_SLOTS; i++) {
        c.slots[i].buf = cli_alloc_buf(c.buf_size);
        if (!c.slots[i].buf)
            goto out;
    }
    cli_progress_init(&c.prog, progress, src->size);
    c.wake_fd = -1;
    ret = threads_start(&c);
    if (ret == 0)
        ret = run_copy(&c);
    else
        threads_stop(&c);
    if (ret == 0)
        cli_progress_end(&c.prog);
    else if (c.prog.on)
        fputc('\n', stderr);      /* the error goes on a line of its own */
out:
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        free(c.slots[i].buf);
    return ret;
}
