/*
 * img-convert.c - "vdisk img convert": copy an image between raw and vdk,
 * keeping it sparse.
 *
 * Only runs that may hold data are read (SEEK_DATA/SEEK_HOLE for raw,
 * vd_block_status for vdk), and of what is read only 4 KiB granules that
 * are not all zeroes are written: a fresh raw file (truncated to the size)
 * and a fresh vdk layer both read as zeroes wherever nothing is written.
 *
 * The copy is a pipeline of CONV_SLOTS buffers.  Each slot goes
 * FREE -> READING -> READ_DONE -> WRITING -> FREE.  vdk reads and writes
 * are asynchronous, raw ones are done on the spot (the page cache absorbs
 * them).  Callbacks only change slot states; new requests are submitted
 * from the main loop, never from a callback, so that the loop may wait in
 * vd_ctx_poll whenever it likes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define CMD "img convert"

#define CONV_SLOTS    16
#define CONV_BUF      (1u << 20)
#define ZERO_GRAIN    4096u      /* the smallest run worth skipping */
#define MAX_INFLIGHT  128u       /* our requests in flight on the context */

enum { OPT_BLOCK_SIZE = 256, OPT_DIGEST };

static void usage(FILE *f)
{
    fputs("Usage: vdisk img convert [-f raw|vdk] -O raw|vdk [-p] [--block-size N]\n"
          "                         [--digest none|sha256] IN OUT\n"
          "\n"
          "Copies the image IN into a new image OUT, sparsely: holes and\n"
          "zeroes are not written.  A vdk OUT must not exist; a raw OUT is\n"
          "created or truncated.  A raw IN whose size is not a multiple of 512\n"
          "is padded with zeroes.\n"
          "\n"
          "  -f FMT             format of IN (default: detected)\n"
          "  -O FMT             format of OUT\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --block-size N block size of a vdk OUT (default 64K)\n"
          "      --digest ALG   per-block digests of a vdk OUT: none or sha256\n"
          "  -h, --help         show this help\n", f);
}

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ_DONE, SLOT_WRITING };

struct conv;

struct slot {
    struct conv *c;
    void *buf;
    enum slot_state state;
    uint64_t off;
    size_t len;
    unsigned pending;     /* writes in flight (+1 while submitting) */
};

struct conv {
    struct img_src src;
    struct vd_ctx *ctx;
    enum img_format out_fmt;
    const char *out_path;
    bool out_created;     /* remove OUT if the copy fails */
    int out_fd;           /* raw OUT */
    struct vd_chain *out; /* vdk OUT */
    struct slot slots[CONV_SLOTS];
    unsigned next_slot;
    int err;              /* first failure; the message is printed */
    struct cli_progress prog;
};

/* Records the first failure of an asynchronous request (later ones are
 * usually its consequences). */
static void fail_async(struct conv *c, int err, const char *path,
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
        fail_async(s->c, result, s->c->src.path, "read", s->off);
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
static int conv_poll(struct conv *c)
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

static int raw_pwrite(struct conv *c, const char *buf, uint64_t off, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(c->out_fd, buf + done, len - done, (off_t)(off + done));

        if (n < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            cli_err_errno(err, "%s: write at offset %llu", c->out_path,
                          (unsigned long long)(off + done));
            return -err;
        }
        done += (size_t)n;
    }
    return 0;
}

static int write_run(struct conv *c, struct slot *s, uint64_t off, size_t len)
{
    const char *p = (const char *)s->buf + (off - s->off);
    int ret;

    if (c->out_fmt == FMT_RAW)
        return raw_pwrite(c, p, off, len);

    while (vd_ctx_inflight(c->ctx) >= MAX_INFLIGHT) {
        ret = conv_poll(c);
        if (ret < 0)
            return ret;
    }
    for (;;) {
        ret = vd_aio_write(c->out, p, off, len, 0, write_done, s);
        if (ret == -EAGAIN && vd_ctx_inflight(c->ctx) > 0) {
            ret = conv_poll(c);     /* the queue is full: let some finish */
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

/* Writes the granules of a read slot that are not all zeroes. */
static int write_slot(struct conv *c, struct slot *s)
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

static int start_read(struct conv *c, struct slot *s, uint64_t off, size_t len)
{
    int ret;

    s->off = off;
    s->len = len;
    if (c->src.fmt != FMT_VDK) {
        ret = img_src_read(&c->src, s->buf, off, len);
        if (ret < 0)
            return ret;
        s->state = SLOT_READ_DONE;
        return 0;
    }
    while (vd_ctx_inflight(c->ctx) >= MAX_INFLIGHT) {
        ret = conv_poll(c);
        if (ret < 0)
            return ret;
    }
    s->state = SLOT_READING;
    ret = vd_aio_read(c->src.chain, s->buf, off, len, read_done, s);
    if (ret < 0) {
        s->state = SLOT_FREE;
        cli_err_lib(ret, "%s: read at offset %llu", c->src.path,
                    (unsigned long long)off);
    }
    return ret;
}

static struct slot *free_slot(struct conv *c)
{
    for (unsigned i = 0; i < CONV_SLOTS; i++) {
        struct slot *s = &c->slots[(c->next_slot + i) % CONV_SLOTS];

        if (s->state == SLOT_FREE) {
            c->next_slot = (c->next_slot + i + 1) % CONV_SLOTS;
            return s;
        }
    }
    return NULL;
}

static bool slots_busy(const struct conv *c)
{
    for (unsigned i = 0; i < CONV_SLOTS; i++)
        if (c->slots[i].state == SLOT_READING || c->slots[i].state == SLOT_WRITING)
            return true;
    return false;
}

/* The copy proper.  Returns 0 or a negative errno (message printed). */
static int copy(struct conv *c)
{
    uint64_t size = c->src.size, off = 0, data_end = 0;
    int ret;

    for (;;) {
        struct slot *s;
        bool progressed = false;

        /* Reads that finished become writes. */
        for (unsigned i = 0; i < CONV_SLOTS && !c->err; i++) {
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

            ret = img_src_status(&c->src, off, size - off, &n, &zero);
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
            /* Chunks end on CONV_BUF boundaries of the disk. */
            uint64_t end = MIN(data_end, ALIGN_DOWN(off, CONV_BUF) + CONV_BUF);

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
        if (conv_poll(c) < 0)
            break;
    }

    /* Let what is in flight land before the buffers can go away. */
    while (slots_busy(c)) {
        if (vd_ctx_poll(c->ctx, -1) < 0)
            break;
    }
    return c->err;
}

static int open_raw_out(struct conv *c)
{
    int err;

    c->out_fd = open(c->out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (c->out_fd >= 0) {
        c->out_created = true;
    } else if (errno == EEXIST) {
        c->out_fd = open(c->out_path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    }
    if (c->out_fd < 0) {
        err = errno;
        cli_err_errno(err, "%s", c->out_path);
        return -err;
    }
    if (ftruncate(c->out_fd, (off_t)c->src.size) < 0) {
        err = errno;
        cli_err_errno(err, "%s: cannot set the size", c->out_path);
        return -err;
    }
    return 0;
}

static int open_vdk_out(struct conv *c, const struct vd_create_opts *co)
{
    struct vd_open_opts oo = { .flags = VD_OPEN_RDWR };
    int ret;

    ret = vd_layer_create(c->out_path, co, NULL);
    if (ret < 0) {
        cli_err_lib(ret, "%s", c->out_path);
        return ret;
    }
    c->out_created = true;
    ret = vd_chain_open(c->ctx, c->out_path, &oo, &c->out);
    if (ret < 0) {
        c->out = NULL;
        cli_err_lib(ret, "%s", c->out_path);
    }
    return ret;
}

/* Closes OUT, making it durable; returns 0 or a negative errno. */
static int close_out(struct conv *c)
{
    int ret = 0, err;

    if (c->out) {
        ret = vd_chain_close(c->out);
        c->out = NULL;
        if (ret < 0)
            cli_err_lib(ret, "%s: close", c->out_path);
    }
    if (c->out_fd >= 0) {
        if (fsync(c->out_fd) < 0 && ret == 0) {
            err = errno;
            /* Character devices and pipes cannot be synced; that is fine. */
            if (err != EINVAL && err != EROFS) {
                cli_err_errno(err, "%s: fsync", c->out_path);
                ret = -err;
            }
        }
        if (close(c->out_fd) < 0 && ret == 0) {
            err = errno;
            cli_err_errno(err, "%s: close", c->out_path);
            ret = -err;
        }
        c->out_fd = -1;
    }
    return ret;
}

/* Refuses to overwrite the input through a raw OUT of the same file. */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int img_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "digest", required_argument, NULL, OPT_DIGEST },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct conv c = { .out_fd = -1, .src = { .fd = -1 } };
    struct vd_create_opts co = { 0 };
    enum img_format in_fmt = FMT_AUTO, out_fmt = FMT_AUTO;
    bool progress = false, vdk_opts = false;
    uint64_t v;
    int ch, ret, rc = EXIT_ERR;

    while ((ch = getopt_long(argc, argv, "f:O:ph", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            if (img_parse_format(optarg, &in_fmt) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw or vdk)", optarg);
            break;
        case 'O':
            if (img_parse_format(optarg, &out_fmt) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw or vdk)", optarg);
            break;
        case 'p':
            progress = true;
            break;
        case OPT_BLOCK_SIZE:
            if (cli_parse_size(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return cli_usage_error(CMD, "invalid block size '%s'", optarg);
            co.block_size = (uint32_t)v;
            vdk_opts = true;
            break;
        case OPT_DIGEST:
            if (cli_parse_digest(optarg, &co.digest) < 0)
                return cli_usage_error(CMD, "invalid digest '%s' (none or sha256)",
                                       optarg);
            vdk_opts = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (out_fmt == FMT_AUTO)
        return cli_usage_error(CMD, "missing -O (output format)");
    if (vdk_opts && out_fmt != FMT_VDK)
        return cli_usage_error(CMD, "--block-size and --digest need -O vdk");
    if (argc - optind < 2)
        return cli_usage_error(CMD, "missing %s", argc - optind ? "OUT" : "IN and OUT");
    if (argc - optind > 2)
        return cli_usage_error(CMD, "too many arguments");
    c.out_path = argv[optind + 1];
    c.out_fmt = out_fmt;

    if (same_file(argv[optind], c.out_path)) {
        cli_err("%s: input and output are the same file", c.out_path);
        return EXIT_ERR;
    }
    for (unsigned i = 0; i < CONV_SLOTS; i++) {
        c.slots[i].c = &c;
        c.slots[i].state = SLOT_FREE;
    }
    c.ctx = cli_ctx();
    if (!c.ctx)
        return EXIT_ERR;
    if (img_src_open(&c.src, argv[optind], in_fmt) < 0)
        return EXIT_ERR;
    for (unsigned i = 0; i < CONV_SLOTS; i++) {
        c.slots[i].buf = cli_alloc_buf(CONV_BUF);
        if (!c.slots[i].buf)
            goto out;
    }

    co.size = c.src.size;
    ret = out_fmt == FMT_VDK ? open_vdk_out(&c, &co) : open_raw_out(&c);
    if (ret < 0)
        goto out;

    cli_progress_init(&c.prog, progress, c.src.size);
    ret = copy(&c);
    cli_progress_end(&c.prog);
    if (close_out(&c) < 0 || ret < 0)
        goto out;
    rc = EXIT_OK;

out:
    close_out(&c);
    /* The source closes after OUT: its chain shares the context. */
    img_src_close(&c.src);
    for (unsigned i = 0; i < CONV_SLOTS; i++)
        free(c.slots[i].buf);
    if (rc != EXIT_OK && c.out_created && unlink(c.out_path) < 0)
        cli_err_errno(errno, "%s: cannot remove the incomplete output", c.out_path);
    return rc;
}
