/*
 * raw.c - raw images: the file is the disk.
 *
 * The virtual size is the file's size rounded up to 512 bytes (every
 * caller works in sectors); the padding reads as zeroes.  Holes are found
 * with SEEK_DATA/SEEK_HOLE where the file system supports them and are
 * reported as FMT_UNALLOC; elsewhere the whole file is data.  A raw file
 * is never recognised by its content (it has none of its own): it is what
 * fmt_probe says when no other driver claims the file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

#define ALIGN_UP(x, a)   (((x) + (a) - 1) / (a) * (a))
#define ALIGN_DOWN(x, a) ((x) / (a) * (a))

struct raw {
    bool seek_data;         /* SEEK_DATA/SEEK_HOLE work on this file */
};

static int raw_open(struct fmt_image *img, const struct fmt_open_opts *opts)
{
    struct raw *r;

    (void)opts;
    if (img->file_size == 0)
        return fmt_err(-EINVAL, "%s: the file is empty", img->path);
    r = calloc(1, sizeof(*r));
    if (!r)
        return fmt_err(-ENOMEM, "out of memory");
    r->seek_data = true;
    img->priv = r;
    img->size = ALIGN_UP(img->file_size, (uint64_t)FMT_SECTOR);
    return 0;
}

static int raw_status(struct fmt_image *img, uint64_t off, uint64_t len,
                      uint64_t *pnum, enum fmt_kind *kind)
{
    struct raw *r = img->priv;
    off_t data, hole;
    uint64_t end;
    int err;

    *pnum = len;
    *kind = FMT_UNALLOC;
    if (off >= img->file_size)          /* the padding after the file */
        return 0;
    *kind = FMT_DATA;
    if (!r->seek_data)
        return 0;

    data = lseek(img->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        err = errno;
        if (err == ENXIO) {             /* only a hole up to the end */
            *kind = FMT_UNALLOC;
            return 0;
        }
        if (err == EINVAL || err == EOPNOTSUPP) {
            r->seek_data = false;
            return 0;
        }
        return fmt_err(-err, "%s: lseek: %s", img->path, strerror(err));
    }
    /* Holes begin and end on file system blocks, but the end of the file
     * need not: round the hole in (it may only shrink) to sectors. */
    end = ALIGN_DOWN((uint64_t)data, (uint64_t)FMT_SECTOR);
    if (end > off) {
        *kind = FMT_UNALLOC;
        *pnum = MIN(end - off, len);
        return 0;
    }
    hole = lseek(img->fd, data, SEEK_HOLE);
    if (hole < 0) {
        err = errno;
        return fmt_err(-err, "%s: lseek: %s", img->path, strerror(err));
    }
    end = ALIGN_UP((uint64_t)hole, (uint64_t)FMT_SECTOR);
    *pnum = end > off ? MIN(end - off, len) : MIN((uint64_t)FMT_SECTOR, len);
    return 0;
}

static int raw_read(struct fmt_image *img, void *buf, uint64_t off, size_t len)
{
    char *p = buf;
    size_t done = 0;

    /* No fmt_readahead here: asking ahead over a raw file's holes would
     * fill the page cache with zeroed pages; the kernel's own readahead
     * follows the data runs well enough. */
    while (done < len) {
        uint64_t pos = off + done;
        ssize_t n;

        if (pos >= img->file_size)
            break;
        n = pread(img->fd, p + done, len - done, (off_t)pos);
        if (n < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            return fmt_err(-err, "%s: read at offset %llu: %s", img->path,
                           (unsigned long long)pos, strerror(err));
        }
        if (n == 0)                     /* the file shrank under us */
            break;
        done += (size_t)n;
    }
    memset(p + done, 0, len - done);
    return 0;
}

static int raw_create(struct fmt_image *img, const struct fmt_create_opts *opts)
{
    int err;

    if (opts->cluster_size || opts->subformat || opts->backing_file ||
        opts->backing_format || opts->block_size || opts->digest)
        return fmt_err(-EINVAL, "%s: raw images take no options", img->path);
    /* A device cannot be truncated; a smaller one is caught by writes. */
    if (ftruncate(img->fd, (off_t)img->size) < 0 && errno != EINVAL) {
        err = errno;
        return fmt_err(-err, "%s: cannot set the size: %s", img->path, strerror(err));
    }
    img->file_size = img->size;
    img->priv = calloc(1, sizeof(struct raw));
    if (!img->priv)
        return fmt_err(-ENOMEM, "out of memory");
    return 0;
}

static int raw_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len)
{
    return fmt_pwrite(img, buf, len, off);
}

static void raw_close(struct fmt_image *img)
{
    free(img->priv);
    img->priv = NULL;
}

const struct fmt_driver fmt_raw_driver = {
    .name = "raw",
    .open = raw_open,
    .status = raw_status,
    .read = raw_read,
    .create = raw_create,
    .write = raw_write,
    .close = raw_close,
};
