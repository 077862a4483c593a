/*
 * source.c - an image read by convert and compare, raw or vdk, seen
 * through one small interface: size, "which runs surely read as zeroes",
 * and read.
 *
 * A raw image's virtual size is its file size rounded up to 512 bytes (all
 * library I/O is in sectors); the padding reads as zeroes.  Raw holes are
 * found with SEEK_DATA/SEEK_HOLE where the filesystem supports them, vdk
 * holes and zero extents with vd_block_status (in memory, no I/O).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int img_parse_format(const char *s, enum img_format *out)
{
    if (strcmp(s, "raw") == 0)
        *out = FMT_RAW;
    else if (strcmp(s, "vdk") == 0)
        *out = FMT_VDK;
    else
        return -EINVAL;
    return 0;
}

const char *img_format_name(enum img_format fmt)
{
    switch (fmt) {
    case FMT_RAW: return "raw";
    case FMT_VDK: return "vdk";
    default: return "auto";
    }
}

int img_detect_format(const char *path, enum img_format *out)
{
    char magic[VDK_MAGIC_LEN];
    ssize_t n;
    int fd, err;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        cli_err_errno(err, "%s", path);
        return -err;
    }
    do
        n = pread(fd, magic, sizeof(magic), 0);
    while (n < 0 && errno == EINTR);
    err = errno;
    close(fd);
    if (n < 0) {
        cli_err_errno(err, "%s: cannot read", path);
        return -err;
    }
    *out = (n == VDK_MAGIC_LEN && memcmp(magic, VDK_MAGIC, VDK_MAGIC_LEN) == 0)
        ? FMT_VDK : FMT_RAW;
    return 0;
}

static int raw_open(struct img_src *src)
{
    off_t end;
    int err;

    src->fd = open(src->path, O_RDONLY | O_CLOEXEC);
    if (src->fd < 0) {
        err = errno;
        cli_err_errno(err, "%s", src->path);
        return -err;
    }
    /* lseek rather than fstat: block devices have st_size 0. */
    end = lseek(src->fd, 0, SEEK_END);
    if (end < 0) {
        err = errno;
        cli_err_errno(err, "%s: cannot find its size", src->path);
        return -err;
    }
    src->file_size = (uint64_t)end;
    src->size = ALIGN_UP(src->file_size, (uint64_t)VD_SECTOR_SIZE);
    src->seek_data = true;
    return 0;
}

static int vdk_open(struct img_src *src)
{
    struct vd_ctx *ctx = cli_ctx();
    struct vd_open_opts opts = { 0 };
    int ret;

    if (!ctx)
        return -ENOMEM;
    ret = vd_chain_open(ctx, src->path, &opts, &src->chain);
    if (ret < 0) {
        src->chain = NULL;
        cli_err_lib(ret, "%s", src->path);
        return ret;
    }
    src->size = vd_chain_size(src->chain);
    return 0;
}

int img_src_open(struct img_src *src, const char *path, enum img_format fmt)
{
    int ret;

    memset(src, 0, sizeof(*src));
    src->fd = -1;
    src->path = path;
    if (fmt == FMT_AUTO) {
        ret = img_detect_format(path, &fmt);
        if (ret < 0)
            return ret;
    }
    src->fmt = fmt;
    ret = fmt == FMT_VDK ? vdk_open(src) : raw_open(src);
    if (ret < 0)
        img_src_close(src);
    return ret;
}

void img_src_close(struct img_src *src)
{
    int ret;

    if (src->fd >= 0)
        close(src->fd);
    src->fd = -1;
    if (src->chain) {
        /* Read-only: closing flushes nothing, but report what fails. */
        ret = vd_chain_close(src->chain);
        if (ret < 0)
            cli_err_lib(ret, "%s: close", src->path);
    }
    src->chain = NULL;
}

static int raw_status(struct img_src *src, uint64_t off, uint64_t len,
                      uint64_t *pnum, bool *zero)
{
    off_t data, hole;
    uint64_t end;
    int err;

    /* The padding after the end of the file. */
    if (off >= src->file_size) {
        *zero = true;
        *pnum = len;
        return 0;
    }
    if (!src->seek_data)
        goto all_data;

    data = lseek(src->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        err = errno;
        if (err == ENXIO) {           /* only a hole up to the end */
            *zero = true;
            *pnum = len;
            return 0;
        }
        if (err == EINVAL || err == EOPNOTSUPP) {
            src->seek_data = false;
            goto all_data;
        }
        cli_err_errno(err, "%s: lseek", src->path);
        return -err;
    }
    /* Holes begin and end on filesystem blocks, but the end of the file
     * need not: round the hole in (it may only shrink) to sectors. */
    end = ALIGN_DOWN((uint64_t)data, (uint64_t)VD_SECTOR_SIZE);
    if (end > off) {
        *zero = true;
        *pnum = MIN(end - off, len);
        return 0;
    }
    hole = lseek(src->fd, data, SEEK_HOLE);
    if (hole < 0) {
        err = errno;
        cli_err_errno(err, "%s: lseek", src->path);
        return -err;
    }
    end = ALIGN_UP((uint64_t)hole, (uint64_t)VD_SECTOR_SIZE);
    *zero = false;
    *pnum = end > off ? MIN(end - off, len) : MIN((uint64_t)VD_SECTOR_SIZE, len);
    return 0;

all_data:
    *zero = false;
    *pnum = len;
    return 0;
}

static int vdk_status(struct img_src *src, uint64_t off, uint64_t len,
                      uint64_t *pnum, bool *zero)
{
    struct vd_extent ext;
    int ret;

    ret = vd_block_status(src->chain, off, len, &ext, 1);
    if (ret < 0) {
        cli_err_lib(ret, "%s: block status", src->path);
        return ret;
    }
    if (ret < 1 || ext.offset != off || ext.length == 0 ||
        ext.length % VD_SECTOR_SIZE != 0) {
        cli_err("%s: block status returned a bad extent", src->path);
        return -EIO;
    }
    *zero = ext.type != VD_EXTENT_DATA;
    *pnum = MIN(ext.length, len);
    return 0;
}

int img_src_status(struct img_src *src, uint64_t off, uint64_t len,
                   uint64_t *pnum, bool *zero)
{
    if (src->fmt == FMT_VDK)
        return vdk_status(src, off, len, pnum, zero);
    return raw_status(src, off, len, pnum, zero);
}

static int raw_read(struct img_src *src, void *buf, uint64_t off, size_t len)
{
    char *p = buf;
    size_t done = 0;

    while (done < len) {
        uint64_t pos = off + done;
        ssize_t n;

        if (pos >= src->file_size)
            break;
        n = pread(src->fd, p + done, len - done, (off_t)pos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            n = errno;
            cli_err_errno((int)n, "%s: read at offset %llu", src->path,
                          (unsigned long long)pos);
            return -(int)n;
        }
        if (n == 0)                   /* the file shrank under us */
            break;
        done += (size_t)n;
    }
    memset(p + done, 0, len - done);
    return 0;
}

int img_src_read(struct img_src *src, void *buf, uint64_t off, size_t len)
{
    int ret;

    if (src->fmt != FMT_VDK)
        return raw_read(src, buf, off, len);
    ret = vd_read(src->chain, buf, off, len);
    if (ret < 0) {
        cli_err_lib(ret, "%s: read at offset %llu", src->path,
                    (unsigned long long)off);
        return ret;
    }
    return 0;
}

void img_src_use_chain(struct img_src *src, struct vd_chain *chain,
                       const char *name)
{
    memset(src, 0, sizeof(*src));
    src->fd = -1;
    src->fmt = FMT_VDK;
    src->path = name;
    src->chain = chain;
    src->size = vd_chain_size(chain);
}
