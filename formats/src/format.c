/*
 * format.c - the generic layer under every driver: the driver table and
 * probing, opening and creating files, the backing image, argument checks,
 * and the small helpers drivers share (messages, exact reads and writes,
 * a table cache).
 *
 * Reads go through fmt_read here, never straight to a driver: the driver's
 * status splits a request into runs, only FMT_DATA runs reach the driver,
 * and unallocated runs come from the backing image (when the caller
 * attached one) or read as zeroes.  So no driver handles backing files,
 * and none reads a byte for a range its own tables say is empty.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"

static const struct fmt_driver *const drivers[] = {
    &fmt_raw_driver, &fmt_vdk_driver, &fmt_qcow2_driver, &fmt_vmdk_driver, NULL,
};

const char *const fmt_names[] = { "raw", "vdk", "qcow2", "vmdk", NULL };

/* ------------------------------------------------------------------ */
/* Messages and helpers for drivers                                    */
/* ------------------------------------------------------------------ */

static __thread char errbuf[512];

const char *fmt_errmsg(void)
{
    return errbuf;
}

int fmt_err(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
    va_end(ap);
    return err;
}

/* How far ahead of a sequence of reads the kernel is asked to read. */
#define READAHEAD (16u << 20)

void fmt_readahead(int fd, uint64_t off, size_t len)
{
    /* A few files per thread: a descriptor file's extents are read in
     * turn.  A reused descriptor only costs one missed hint. */
    static __thread struct { int fd; uint64_t until; } ra[4];
    static __thread unsigned next;
    uint64_t end = off + len;
    unsigned i;

    for (i = 0; i < 4 && !(ra[i].fd == fd && ra[i].until); i++)
        ;
    if (i == 4) {
        i = next++ % 4;
        ra[i].fd = fd;
        ra[i].until = end;          /* a sequence starts: nothing asked yet */
        return;
    }
    /* Not sequential (far behind, or far beyond what was asked for; a
     * short jump forward over a hole or an unallocated cluster is still
     * a sequence): start again from here. */
    if (off > ra[i].until + READAHEAD || off + 2 * READAHEAD < ra[i].until) {
        ra[i].until = end;
        return;
    }
    /* Ask again when less than half the window is left ahead. */
    if (ra[i].until < end + READAHEAD / 2) {
        uint64_t from = MAX(ra[i].until, end);

        (void)posix_fadvise(fd, (off_t)from, (off_t)(end + READAHEAD - from),
                            POSIX_FADV_WILLNEED);
        ra[i].until = end + READAHEAD;
    }
}

int fmt_pread_fd(int fd, const char *path, void *buf, size_t len, uint64_t off,
                 const char *what)
{
    char *p = buf;
    size_t done = 0;

    fmt_readahead(fd, off, len);
    if (off > (uint64_t)INT64_MAX - len)
        return fmt_err(-EUCLEAN, "%s: %s at offset %llu is past the end of the file",
                       path, what, (unsigned long long)off);
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));

        if (n < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            return fmt_err(-err, "%s: cannot read the %s at offset %llu: %s", path,
                           what, (unsigned long long)(off + done), strerror(err));
        }
        if (n == 0)
            return fmt_err(-EUCLEAN, "%s: %s at offset %llu (%zu bytes) is past the "
                           "end of the file", path, what, (unsigned long long)off, len);
        done += (size_t)n;
    }
    return 0;
}

int fmt_pread(struct fmt_image *img, void *buf, size_t len, uint64_t off,
              const char *what)
{
    return fmt_pread_fd(img->fd, img->path, buf, len, off, what);
}

/* Bytes written between two starts of writeback: large enough that the
 * call costs nothing, small enough that the disk is kept busy. */
#define WRITEBACK_EVERY (32u << 20)

int fmt_pwrite(struct fmt_image *img, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    size_t done = 0;

    /* Only the range written since the last start: the kernel walks the
     * pages of the range it is given, and the whole file each time would
     * make a conversion quadratic. */
    if (!img->unflushed || off < img->wb_lo)
        img->wb_lo = off;
    if (!img->unflushed || off + len > img->wb_hi)
        img->wb_hi = off + len;
    img->unflushed += len;
    if (img->unflushed >= WRITEBACK_EVERY) {
        /* Errors do not matter here: fsync at close reports them. */
        (void)sync_file_range(img->fd, (off_t)img->wb_lo,
                              (off_t)(img->wb_hi - img->wb_lo), SYNC_FILE_RANGE_WRITE);
        img->unflushed = 0;
    }
    while (done < len) {
        ssize_t n = pwrite(img->fd, p + done, len - done, (off_t)(off + done));

        if (n < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            return fmt_err(-err, "%s: write at offset %llu: %s", img->path,
                           (unsigned long long)(off + done), strerror(err));
        }
        done += (size_t)n;
    }
    return 0;
}

bool fmt_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    /* Check the first 16 bytes, then compare the buffer with itself
     * shifted by 16: memcmp is vectorised, a byte loop is not. */
    if (len <= 16) {
        for (size_t i = 0; i < len; i++)
            if (p[i])
                return false;
        return true;
    }
    for (size_t i = 0; i < 16; i++)
        if (p[i])
            return false;
    return memcmp(p, p + 16, len - 16) == 0;
}

/* The table cache: a handful of entries, least recently used replaced. */
struct tc_entry {
    uint64_t off;
    uint64_t used;          /* 0: empty */
    void *buf;
};

struct fmt_tcache {
    unsigned n;
    size_t size;
    uint64_t clock;
    unsigned last;          /* the entry of the last hit: runs hit it again */
    struct tc_entry e[];
};

int fmt_tcache_new(unsigned entries, size_t table_size, struct fmt_tcache **out)
{
    struct fmt_tcache *c;

    if (entries == 0 || table_size == 0 ||
        (uint64_t)entries * table_size > FMT_MAX_META_MEM)
        return fmt_err(-EINVAL, "table cache of %u tables of %zu bytes is too large",
                       entries, table_size);
    c = calloc(1, sizeof(*c) + entries * sizeof(c->e[0]));
    if (!c)
        return fmt_err(-ENOMEM, "out of memory");
    c->n = entries;
    c->size = table_size;
    *out = c;
    return 0;
}

void fmt_tcache_free(struct fmt_tcache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->n; i++)
        free(c->e[i].buf);
    free(c);
}

int fmt_tcache_get(struct fmt_tcache *c, int fd, const char *path, uint64_t off,
                   const char *what, const void **table)
{
    struct tc_entry *victim = NULL;
    int ret;

    if (c->e[c->last].used && c->e[c->last].off == off) {
        c->e[c->last].used = ++c->clock;
        *table = c->e[c->last].buf;
        return 0;
    }
    for (unsigned i = 0; i < c->n; i++) {
        struct tc_entry *e = &c->e[i];

        if (e->used && e->off == off) {
            e->used = ++c->clock;
            c->last = i;
            *table = e->buf;
            return 0;
        }
        if (!victim || e->used < victim->used)
            victim = &c->e[i];
    }
    if (!victim->buf) {
        victim->buf = malloc(c->size);
        if (!victim->buf)
            return fmt_err(-ENOMEM, "out of memory");
    }
    victim->used = 0;              /* stays empty if the read fails */
    ret = fmt_pread_fd(fd, path, victim->buf, c->size, off, what);
    if (ret < 0)
        return ret;
    victim->off = off;
    victim->used = ++c->clock;
    c->last = (unsigned)(victim - c->e);
    *table = victim->buf;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Drivers and probing                                                 */
/* ------------------------------------------------------------------ */

static const struct fmt_driver *find_driver(const char *name)
{
    for (unsigned i = 0; drivers[i]; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

bool fmt_known(const char *name)
{
    return name && find_driver(name) != NULL;
}

/* Probes an open file.  Raw is never recognised by content: it is what is
 * left when no other format claims the first bytes. */
static int probe_fd(int fd, const char *path, const struct fmt_driver **drv)
{
    uint8_t buf[FMT_PROBE_LEN];
    struct stat st;
    size_t len = 0;

    if (fstat(fd, &st) < 0)
        return fmt_err(-errno, "%s: %s", path, strerror(errno));
    while (len < sizeof(buf)) {
        ssize_t n = pread(fd, buf + len, sizeof(buf) - len, (off_t)len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fmt_err(-errno, "%s: cannot read: %s", path, strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *drv = &fmt_raw_driver;
    for (unsigned i = 0; drivers[i]; i++) {
        if (drivers[i]->probe &&
            drivers[i]->probe(buf, len, S_ISREG(st.st_mode) ? (uint64_t)st.st_size : len)) {
            *drv = drivers[i];
            break;
        }
    }
    return 0;
}

int fmt_probe(const char *path, const char **name)
{
    const struct fmt_driver *drv;
    int fd, ret;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fmt_err(-errno, "%s: %s", path, strerror(errno));
    ret = probe_fd(fd, path, &drv);
    close(fd);
    if (ret == 0)
        *name = drv->name;
    return ret;
}

/* ------------------------------------------------------------------ */
/* Opening and closing                                                 */
/* ------------------------------------------------------------------ */

static struct fmt_image *image_new(const struct fmt_driver *drv, const char *path)
{
    struct fmt_image *img = calloc(1, sizeof(*img));

    if (!img || !(img->path = strdup(path))) {
        free(img);
        fmt_err(-ENOMEM, "out of memory");
        return NULL;
    }
    img->drv = drv;
    img->fd = -1;
    return img;
}

static void image_free(struct fmt_image *img)
{
    if (img->fd >= 0)
        close(img->fd);
    fmt_close(img->backing);
    free(img->backing_name);
    free(img->backing_format);
    free(img->path);
    free(img);
}

/* What the generic layer requires of every opened image, whatever its
 * driver says. */
static int check_opened(struct fmt_image *img)
{
    if (img->size == 0 || img->size % FMT_SECTOR != 0 || img->size > FMT_MAX_SIZE)
        return fmt_err(-EUCLEAN, "%s: virtual size %llu is not supported (a "
                       "multiple of 512 up to %llu bytes)", img->path,
                       (unsigned long long)img->size,
                       (unsigned long long)FMT_MAX_SIZE);
    return 0;
}

/* fmt_open with the driver found (NULL: probe); as_probed opens it under
 * the rules of a probed image even though drv is given (fmt_reopen). */
static int open_image(const char *path, const struct fmt_driver *drv, bool as_probed,
                      const struct fmt_open_opts *opts, struct fmt_image **out)
{
    struct fmt_image *img;
    struct stat st;
    off_t end;
    int ret;

    *out = NULL;
    img = image_new(drv, path);
    if (!img)
        return -ENOMEM;
    img->ctx = opts->ctx;
    img->probed = as_probed;
    if (!drv || !drv->own_file) {
        img->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (img->fd < 0) {
            ret = fmt_err(-errno, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (fstat(img->fd, &st) < 0) {
            ret = fmt_err(-errno, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (S_ISDIR(st.st_mode)) {
            ret = fmt_err(-EISDIR, "%s: is a directory", path);
            goto fail;
        }
        /* lseek rather than st_size: block devices have st_size 0. */
        end = lseek(img->fd, 0, SEEK_END);
        if (end < 0) {
            ret = fmt_err(-errno, "%s: cannot find its size: %s", path, strerror(errno));
            goto fail;
        }
        img->file_size = (uint64_t)end;
        if (!drv) {
            ret = probe_fd(img->fd, path, &drv);
            if (ret < 0)
                goto fail;
            img->drv = drv;
            img->probed = true;
        }
    }
    ret = drv->open(img, opts);
    if (ret < 0) {
        drv->close(img);
        goto fail;
    }
    ret = check_opened(img);
    if (ret < 0) {
        drv->close(img);
        goto fail;
    }
    *out = img;
    return 0;

fail:
    image_free(img);
    return ret;
}

int fmt_open(const char *path, const struct fmt_open_opts *opts,
             struct fmt_image **out)
{
    const struct fmt_driver *drv = NULL;

    *out = NULL;
    if (opts->format) {
        drv = find_driver(opts->format);
        if (!drv)
            return fmt_err(-EINVAL, "unknown format '%s'", opts->format);
    }
    return open_image(path, drv, false, opts, out);
}

int fmt_reopen(const struct fmt_image *img, struct fmt_image **out)
{
    struct fmt_open_opts oo = { .ctx = img->ctx };
    struct fmt_image *backing = NULL;
    int ret;

    *out = NULL;
    if (img->drv->own_file || img->writing)
        return fmt_err(-ENOTSUP, "%s: only image files opened for reading can be "
                       "opened again", img->path);
    if (img->backing) {
        ret = fmt_reopen(img->backing, &backing);
        if (ret < 0)
            return ret;
    }
    ret = open_image(img->path, img->drv, img->probed, &oo, out);
    if (ret < 0) {
        fmt_close(backing);
        return ret;
    }
    (*out)->backing = backing;
    return 0;
}

int fmt_open_chain(struct vd_chain *chain, const char *name, unsigned own_depth,
                   struct fmt_image **out)
{
    return fmt_vdk_wrap(chain, name, own_depth, false, out);
}

int fmt_create_chain(struct vd_chain *chain, const char *name, struct fmt_image **out)
{
    return fmt_vdk_wrap(chain, name, 0, true, out);
}

struct fmt_image *fmt_image_alloc(const struct fmt_driver *drv, const char *name)
{
    return image_new(drv, name);
}

uint64_t fmt_size(const struct fmt_image *img)
{
    return img->size;
}

const char *fmt_format(const struct fmt_image *img)
{
    return img->drv->name;
}

const char *fmt_path(const struct fmt_image *img)
{
    return img->path;
}

const char *fmt_backing_name(const struct fmt_image *img)
{
    return img->backing_name;
}

const char *fmt_backing_format(const struct fmt_image *img)
{
    return img->backing_format;
}

void fmt_set_backing(struct fmt_image *img, struct fmt_image *backing)
{
    fmt_close(img->backing);
    img->backing = backing;
}

bool fmt_sequential(const struct fmt_image *img)
{
    return img->sequential;
}

uint32_t fmt_write_align(const struct fmt_image *img)
{
    return img->write_align ? img->write_align : FMT_SECTOR;
}

void fmt_info(struct fmt_image *img, fmt_info_fn cb, void *opaque)
{
    if (img->drv->info)
        img->drv->info(img, cb, opaque);
}

int fmt_close(struct fmt_image *img)
{
    int ret = 0;

    if (!img)
        return 0;
    if (img->writing && img->drv->finish)
        ret = img->drv->finish(img);
    img->drv->close(img);
    if (img->writing && img->fd >= 0 && ret == 0 && fsync(img->fd) < 0) {
        int err = errno;

        /* Character devices and pipes cannot be synced; that is fine. */
        if (err != EINVAL && err != EROFS)
            ret = fmt_err(-err, "%s: fsync: %s", img->path, strerror(err));
    }
    if (img->fd >= 0 && close(img->fd) < 0 && ret == 0)
        ret = fmt_err(-errno, "%s: close: %s", img->path, strerror(errno));
    img->fd = -1;
    /* An image that could not be finished is not an image: leave nothing
     * that looks like one. */
    if (ret < 0 && img->writing && img->created)
        unlink(img->path);
    image_free(img);
    return ret;
}

void fmt_discard(struct fmt_image *img)
{
    if (!img)
        return;
    img->drv->close(img);
    if (img->created && unlink(img->path) < 0 && errno != ENOENT)
        fprintf(stderr, "%s: cannot remove the incomplete output: %s\n",
                img->path, strerror(errno));
    image_free(img);
}

/* ------------------------------------------------------------------ */
/* Status and reads                                                    */
/* ------------------------------------------------------------------ */

static int check_range(const struct fmt_image *img, uint64_t off, uint64_t len)
{
    if (off % FMT_SECTOR || len % FMT_SECTOR || off > img->size ||
        len > img->size - off)
        return fmt_err(-EINVAL, "%s: range %llu+%llu is not sector-aligned or "
                       "not inside the image (%llu bytes)", img->path,
                       (unsigned long long)off, (unsigned long long)len,
                       (unsigned long long)img->size);
    return 0;
}

/* The driver's status with its answer checked: a driver bug must not turn
 * into an endless loop or a read out of bounds. */
static int own_status(struct fmt_image *img, uint64_t off, uint64_t len,
                      uint64_t *pnum, enum fmt_kind *kind)
{
    int ret = img->drv->status(img, off, len, pnum, kind);

    if (ret < 0)
        return ret;
    if (*pnum == 0 || *pnum > len || *pnum % FMT_SECTOR ||
        (*kind != FMT_DATA && *kind != FMT_ZERO && *kind != FMT_UNALLOC))
        return fmt_err(-EIO, "%s: the %s driver described %llu+%llu badly", img->path,
                       img->drv->name, (unsigned long long)off, (unsigned long long)len);
    return 0;
}

int fmt_status(struct fmt_image *img, uint64_t off, uint64_t len, bool deep,
               uint64_t *pnum, enum fmt_kind *kind)
{
    int ret = check_range(img, off, len);

    if (ret < 0)
        return ret;
    if (len == 0)
        return fmt_err(-EINVAL, "%s: empty range", img->path);
    ret = own_status(img, off, len, pnum, kind);
    if (ret < 0 || *kind != FMT_UNALLOC || !deep || !img->backing)
        return ret;
    /* The part of a smaller backing image past its end reads as zeroes. */
    if (off >= img->backing->size)
        return 0;
    return fmt_status(img->backing, off, MIN(*pnum, img->backing->size - off), true,
                      pnum, kind);
}

static int read_backing(struct fmt_image *img, char *buf, uint64_t off, size_t len)
{
    size_t n = 0;

    if (img->backing && off < img->backing->size) {
        n = (size_t)MIN((uint64_t)len, img->backing->size - off);
        int ret = fmt_read(img->backing, buf, off, n);

        if (ret < 0)
            return ret;
    }
    memset(buf + n, 0, len - n);
    return 0;
}

int fmt_read(struct fmt_image *img, void *buf, uint64_t off, size_t len)
{
    char *p = buf;
    int ret = check_range(img, off, len);

    while (ret == 0 && len > 0) {
        enum fmt_kind kind;
        uint64_t n;

        ret = own_status(img, off, len, &n, &kind);
        if (ret < 0)
            break;
        if (kind == FMT_DATA)
            ret = img->drv->read(img, p, off, (size_t)n);
        else if (kind == FMT_UNALLOC)
            ret = read_backing(img, p, off, (size_t)n);
        else
            memset(p, 0, (size_t)n);
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return ret;
}

struct vd_chain *fmt_chain(const struct fmt_image *img)
{
    return img->drv == &fmt_vdk_driver ? fmt_vdk_chain(img) : NULL;
}

/* ------------------------------------------------------------------ */
/* Creating and writing                                                */
/* ------------------------------------------------------------------ */

int fmt_create(const char *path, const char *format,
               const struct fmt_create_opts *opts, struct fmt_image **out)
{
    const struct fmt_driver *drv = find_driver(format ? format : "");
    struct fmt_image *img;
    int ret;

    *out = NULL;
    if (!drv)
        return fmt_err(-EINVAL, "unknown format '%s'", format ? format : "");
    if (!drv->create)
        return fmt_err(-ENOTSUP, "%s: images cannot be written", drv->name);
    if (opts->size == 0 || opts->size % FMT_SECTOR)
        return fmt_err(-EINVAL, "%s: size %llu is not a positive multiple of 512",
                       path, (unsigned long long)opts->size);
    if (opts->size > FMT_MAX_SIZE)
        return fmt_err(-EFBIG, "%s: size %llu is larger than %llu", path,
                       (unsigned long long)opts->size,
                       (unsigned long long)FMT_MAX_SIZE);
    img = image_new(drv, path);
    if (!img)
        return -ENOMEM;
    img->ctx = opts->ctx;
    img->size = opts->size;
    if (!drv->own_file) {
        /* Created, or truncated in place (it may be a device, or have
         * permissions the user chose). */
        img->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (img->fd >= 0)
            img->created = true;
        else if (errno == EEXIST)
            img->fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC);
        if (img->fd < 0) {
            ret = fmt_err(-errno, "%s: %s", path, strerror(errno));
            image_free(img);
            return ret;
        }
    }
    ret = drv->create(img, opts);
    if (ret < 0) {
        fmt_discard(img);
        return ret;
    }
    img->writing = true;
    *out = img;
    return 0;
}

/* What fmt_write and fmt_write_zeroes check: the range, that the image is
 * being written, and whole units where the image needs them (the last
 * unit may be cut short by the end of the image). */
static int check_write(const struct fmt_image *img, uint64_t off, uint64_t len)
{
    int ret = check_range(img, off, len);

    if (ret < 0)
        return ret;
    if (!img->writing)
        return fmt_err(-EBADF, "%s: not open for writing", img->path);
    if (img->write_align && (off % img->write_align ||
                             (len % img->write_align && off + len != img->size)))
        return fmt_err(-EINVAL, "%s: write %llu+%llu does not cover whole units of "
                       "%u bytes", img->path, (unsigned long long)off,
                       (unsigned long long)len, img->write_align);
    return 0;
}

int fmt_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len)
{
    int ret = check_write(img, off, len);

    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    return img->drv->write(img, buf, off, len);
}

int fmt_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len)
{
    int ret = check_write(img, off, len);

    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    if (img->drv->write_zeroes)
        return img->drv->write_zeroes(img, off, len);
    if (img->backing_name)
        return fmt_err(-ENOTSUP, "%s: %s images cannot mark zeroes over a backing file",
                       img->path, img->drv->name);
    return 0;
}
