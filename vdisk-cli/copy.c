/*
 * copy.c - the sparse copy pipeline shared by "img convert", "import" and
 * "export": an image (struct img_src) into a raw file or a vdk chain.
 *
 * Only runs that may hold data are read (SEEK_DATA/SEEK_HOLE for raw,
 * vd_block_status for vdk), and of what is read only 4 KiB granules that
 * are not all zeroes are written: the destination must read as zeroes
 * wherever nothing is written (a fresh raw file truncated to the size, a
 * fresh vdk layer, a fresh volume).
 *
 * The copy is a pipeline of COPY_SLOTS buffers.  Each slot goes
 * FREE -> READING -> READ_DONE -> WRITING -> FREE.  vdk reads and writes
 * are asynchronous, raw ones are done on the spot (the page cache absorbs
 * them).  Callbacks only change slot states; new requests are submitted
 * from the main loop, never from a callback, so that the loop may wait in
 * vd_ctx_poll whenever it likes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define COPY_SLOTS    16
#define COPY_BUF      (1u << 20)
#define ZERO_GRAIN    4096u      /* the smallest run worth skipping */
#define MAX_INFLIGHT  128u       /* our requests in flight on the context */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ_DONE, SLOT_WRITING };

struct copy;

struct slot {
    struct copy *c;
    void *buf;
    enum slot_state state;
    uint64_t off;
    size_t len;
    unsigned pending;     /* writes in flight (+1 while submitting) */
};

struct copy {
    struct img_src *src;
    struct copy_out *out;
    struct vd_ctx *ctx;
    struct slot slots[COPY_SLOTS];
    unsigned next_slot;
    int err;              /* first failure; the message is printed */
    struct cli_progress prog;
};

/* ------------------------------------------------------------------ */
/* The destination                                                     */
/* ------------------------------------------------------------------ */

void copy_out_init(struct copy_out *o, enum img_format fmt, const char *path)
{
    memset(o, 0, sizeof(*o));
    o->fmt = fmt;
    o->path = path;
    o->fd = -1;
}

int copy_out_open_raw(struct copy_out *o, uint64_t size)
{
    int err;

    o->fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (o->fd >= 0) {
        o->created = true;
    } else if (errno == EEXIST) {
        o->fd = open(o->path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    }
    if (o->fd < 0) {
        err = errno;
        cli_err_errno(err, "%s", o->path);
        return -err;
    }
    if (ftruncate(o->fd, (off_t)size) < 0) {
        err = errno;
        cli_err_errno(err, "%s: cannot set the size", o->path);
        return -err;
    }
    return 0;
}

int copy_out_open_vdk(struct copy_out *o, const struct vd_create_opts *co)
{
    struct vd_open_opts oo = { .flags = VD_OPEN_RDWR };
    struct vd_ctx *ctx = cli_ctx();
    int ret;

    if (!ctx)
        return -ENOMEM;
    ret = vd_layer_create(o->path, co, NULL);
    if (ret < 0) {
        cli_err_lib(ret, "%s", o->path);
        return ret;
    }
    o->created = true;
    ret = vd_chain_open(ctx, o->path, &oo, &o->chain);
    if (ret < 0) {
        o->chain = NULL;
        cli_err_lib(ret, "%s", o->path);
    }
    return ret;
}

int copy_out_close(struct copy_out *o)
{
    int ret = 0, err;

    if (o->chain) {
        ret = vd_chain_close(o->chain);
        o->chain = NULL;
        if (ret < 0)
            cli_err_lib(ret, "%s: close", o->path);
    }
    if (o->fd >= 0) {
        if (fsync(o->fd) < 0 && ret == 0) {
            err = errno;
            /* Character devices and pipes cannot be synced; that is fine. */
            if (err != EINVAL && err != EROFS) {
                cli_err_errno(err, "%s: fsync", o->path);
                ret = -err;
            }
        }
        if (close(o->fd) < 0 && ret == 0) {
            err = errno;
            cli_err_errno(err, "%s: close", o->path);
            ret = -err;
        }
        o->fd = -1;
    }
    return ret;
}

void copy_out_discard(struct copy_out *o)
{
    /* Its errors do not matter: the copy failed and said why already. */
    if (o->chain)
        vd_chain_close(o->chain);
    o->chain = NULL;
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    if (o->created && unlink(o->path) < 0)
        cli_err_errno(errno, "%s: cannot remove the incomplete output", o->path);
    o->created = false;
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
        fail_async(s->c, result, s->c->out->path, "write", s->off);
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

static int raw_pwrite(struct copy *c, const char *buf, uint64_t off, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(c->out->fd, buf + done, len - done,
                           (off_t)(off + done));

        if (n < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            cli_err_errno(err, "%s: write at offset %llu", c->out->path,
                          (unsigned long long)(off + done));
            return -err;
        }
        done += (size_t)n;
    }
    return 0;
}

static int write_run(struct copy *c, struct slot *s, uint64_t off, size_t len)
{
    const char *p = (const char *)s->buf + (off - s->off);
    int ret;

    if (c->out->fmt == FMT_RAW)
        return raw_pwrite(c, p, off, len);

    while (vd_ctx_inflight(c->ctx) >= MAX_INFLIGHT) {
        ret = copy_poll(c);
        if (ret < 0)
            return ret;
    }
    for (;;) {
        ret = vd_aio_write(c->out->chain, p, off, len, 0, write_done, s);
        if (ret == -EAGAIN && vd_ctx_inflight(c->ctx) > 0) {
            ret = copy_poll(c);     /* the queue is full: let some finish */
            if (ret < 0)
                return ret;
            continue;
        }
        break;
    }
    if (ret < 0) {
        cli_err_lib(ret, "%s: write at offset %llu", c->out->path,
                    (unsigned long long)off);
        return ret;
    }
    s->pending++;
    return 0;
}

/* Writes the granules of a read slot that are not all zeroes. */
static int write_slot(struct copy *c, struct slot *s)
{
    uint64_t end = s->off + s->len, pos = s->off, run = 0;
    bool in_run = false;
    int ret = 0;

    s->state = SLOT_WRITING;
    s->pending = 1;                 /* held until every run is submitted */
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

static int start_read(struct copy *c, struct slot *s, uint64_t off, size_t len)
{
    int ret;

    s->off = off;
    s->len = len;
    if (c->src->fmt != FMT_VDK) {
        ret = img_src_read(c->src, s->buf, off, len);
        if (ret < 0)
            return ret;
        s->state = SLOT_READ_DONE;
        return 0;
    }
    while (vd_ctx_inflight(c->ctx) >= MAX_INFLIGHT) {
        ret = copy_poll(c);
        if (ret < 0)
            return ret;
    }
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

static bool slots_busy(const struct copy *c)
{
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        if (c->slots[i].state == SLOT_READING || c->slots[i].state == SLOT_WRITING)
            return true;
    return false;
}

/* The copy proper.  Returns 0 or a negative errno (message printed). */
static int run_copy(struct copy *c)
{
    uint64_t size = c->src->size, off = 0, data_end = 0;
    int ret;

    for (;;) {
        struct slot *s;
        bool progressed = false;

        /* Reads that finished become writes. */
        for (unsigned i = 0; i < COPY_SLOTS && !c->err; i++) {
            if (c->slots[i].state == SLOT_READ_DONE) {
                ret = write_slot(c, &c->slots[i]);
                if (ret < 0 && !c->err)
                    c->err = ret;
                progressed = true;
            }
        }
        if (c->err)
            break;

        /* Start the next chunk of data, skipping runs that read as zero. */
        while (off < size && off >= data_end) {
            uint64_t n;
            bool zero;

            ret = img_src_status(c->src, off, size - off, &n, &zero);
            if (ret < 0) {
                c->err = ret;
                break;
            }
            if (zero)
                off += n;
            else
                data_end = off + n;
            cli_progress_update(&c->prog, off);
        }
        if (c->err)
            break;
        if (off < size && (s = free_slot(c)) != NULL) {
            /* Chunks end on COPY_BUF boundaries of the disk. */
            uint64_t end = MIN(data_end, ALIGN_DOWN(off, COPY_BUF) + COPY_BUF);

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
        if (off >= size && !slots_busy(c))
            break;
        if (copy_poll(c) < 0)
            break;
    }

    /* Let what is in flight land before the buffers can go away. */
    while (slots_busy(c)) {
        if (vd_ctx_poll(c->ctx, -1) < 0)
            break;
    }
    return c->err;
}

int copy_image(struct img_src *src, struct copy_out *out, bool progress)
{
    struct copy c = { .src = src, .out = out };
    int ret = -ENOMEM;

    c.ctx = cli_ctx();
    if (!c.ctx)
        return -ENOMEM;
    for (unsigned i = 0; i < COPY_SLOTS; i++) {
        c.slots[i].c = &c;
        c.slots[i].state = SLOT_FREE;
    }
    for (unsigned i = 0; i < COPY_SLOTS; i++) {
        c.slots[i].buf = cli_alloc_buf(COPY_BUF);
        if (!c.slots[i].buf)
            goto out;
    }
    cli_progress_init(&c.prog, progress, src->size);
    ret = run_copy(&c);
    if (ret == 0)
        cli_progress_end(&c.prog);
    else if (c.prog.on)
        fputc('\n', stderr);      /* the error goes on a line of its own */
out:
    for (unsigned i = 0; i < COPY_SLOTS; i++)
        free(c.slots[i].buf);
    return ret;
}
