/*
 * vdk.c - vdisk's own layer files and open chains (store volumes), through
 * libvdisk.  The chain is opened with the caller's vd_ctx; fmt_chain hands
 * it back so that a copy can use libvdisk's asynchronous I/O, while the
 * calls here are the synchronous ones.
 *
 * A vdk file named on the command line opens with its parents, as every
 * vdisk command opens a layer: through the parent hints recorded in it,
 * in the layer's own directory.  That is vdisk's own chain, checked by
 * UUID, not a backing path a foreign image could point anywhere.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk.h>

#include "driver.h"

#define VDK_MAGIC "VDISKLYR"

struct vdk {
    struct vd_chain *chain;
    unsigned own_depth;     /* layers counted as the image's; 0: all */
};

/* libvdisk's message, or the errno's, as ours. */
static int lib_err(int ret, const char *path)
{
    const char *msg = vd_errmsg();

    if (msg && *msg)
        return fmt_err(ret, "%s", msg);
    return fmt_err(ret, "%s: %s", path, strerror(-ret));
}

static bool vdk_probe(const uint8_t *buf, size_t len, uint64_t file_size)
{
    (void)file_size;
    return len >= 8 && memcmp(buf, VDK_MAGIC, 8) == 0;
}

static int wrap(struct fmt_image *img, struct vd_chain *chain, unsigned own_depth)
{
    struct vdk *v = calloc(1, sizeof(*v));

    if (!v)
        return fmt_err(-ENOMEM, "out of memory");
    v->chain = chain;
    v->own_depth = own_depth;
    img->priv = v;
    img->size = vd_chain_size(chain);
    return 0;
}

/* A file opened to be read through, once, from start to end: through the
 * page cache (as qemu-img reads its sources), whose readahead a copy
 * gains from; store volumes (fmt_open_chain) keep O_DIRECT. */
/* Opens the chain at img->path with flags (VD_OPEN_*) as the image's. */
static int open_chain(struct fmt_image *img, struct vd_ctx *ctx, unsigned flags)
{
    struct vd_open_opts oo = { .flags = flags };
    struct vd_chain *chain;
    int ret;

    if (!ctx)
        return fmt_err(-EINVAL, "%s: vdk images need an I/O context", img->path);
    ret = vd_chain_open(ctx, img->path, &oo, &chain);
    if (ret < 0)
        return lib_err(ret, img->path);
    ret = wrap(img, chain, 0);
    if (ret < 0)
        vd_chain_close(chain);
    return ret;
}

static int vdk_open(struct fmt_image *img, const struct fmt_open_opts *opts)
{
    return open_chain(img, opts->ctx, VD_OPEN_BUFFERED);
}

int fmt_vdk_wrap(struct vd_chain *chain, const char *name, unsigned own_depth,
                 bool writing, struct fmt_image **out)
{
    struct fmt_image *img = fmt_image_alloc(&fmt_vdk_driver, name);
    int ret;

    *out = NULL;
    if (!img) {
        vd_chain_close(chain);
        return -ENOMEM;
    }
    ret = wrap(img, chain, own_depth);
    if (ret < 0) {
        vd_chain_close(chain);
        fmt_close(img);
        return ret;
    }
    img->writing = writing;
    *out = img;
    return 0;
}

struct vd_chain *fmt_vdk_chain(const struct fmt_image *img)
{
    const struct vdk *v = img->priv;

    return v ? v->chain : NULL;
}

static int vdk_status(struct fmt_image *img, uint64_t off, uint64_t len,
                      uint64_t *pnum, enum fmt_kind *kind)
{
    struct vdk *v = img->priv;
    struct vd_extent ext;
    int ret;

    ret = vd_block_status(v->chain, off, len, &ext, 1);
    if (ret < 0)
        return lib_err(ret, img->path);
    if (ret < 1 || ext.offset != off || ext.length == 0)
        return fmt_err(-EIO, "%s: block status returned a bad extent", img->path);
    *pnum = MIN(ext.length, len);
    if (ext.type == VD_EXTENT_HOLE || (v->own_depth && ext.depth > v->own_depth))
        *kind = FMT_UNALLOC;
    else
        *kind = ext.type == VD_EXTENT_DATA ? FMT_DATA : FMT_ZERO;
    return 0;
}

static int vdk_read(struct fmt_image *img, void *buf, uint64_t off, size_t len)
{
    struct vdk *v = img->priv;
    int ret = vd_read(v->chain, buf, off, len);

    return ret < 0 ? lib_err(ret, img->path) : 0;
}

static void vdk_info(struct fmt_image *img, fmt_info_fn cb, void *opaque)
{
    struct vdk *v = img->priv;
    struct vd_layer_info li;
    char s[32];

    snprintf(s, sizeof(s), "%u", vd_chain_block_size(v->chain));
    cb(opaque, "block-size", s, true);
    snprintf(s, sizeof(s), "%u", vd_chain_depth(v->chain));
    cb(opaque, "layers", s, true);
    if (vd_chain_layer_info(v->chain, 1, &li) == 0)
        cb(opaque, "digest", li.digest == VD_DIGEST_SHA256 ? "sha256" : "none", false);
}

static int vdk_create(struct fmt_image *img, const struct fmt_create_opts *opts)
{
    struct vd_create_opts co = {
        .size = img->size,
        .block_size = opts->block_size,
        .digest = (enum vd_digest)opts->digest,
    };
    int ret;

    if (opts->cluster_size || opts->subformat || opts->backing_file ||
        opts->backing_format)
        return fmt_err(-EINVAL, "%s: vdk images take only a block size and a digest",
                       img->path);
    if (!opts->ctx)
        return fmt_err(-EINVAL, "%s: vdk images need an I/O context", img->path);
    ret = vd_layer_create(img->path, &co, NULL);
    if (ret < 0)
        return lib_err(ret, img->path);
    img->created = true;
    return open_chain(img, opts->ctx, VD_OPEN_RDWR);
}

static int vdk_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len)
{
    struct vdk *v = img->priv;
    int ret = vd_write(v->chain, buf, off, len, 0);

    return ret < 0 ? lib_err(ret, img->path) : 0;
}

static int vdk_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len)
{
    struct vdk *v = img->priv;
    int ret = vd_zero(v->chain, off, len, 0);

    return ret < 0 ? lib_err(ret, img->path) : 0;
}

/* Closing the chain flushes it: the one place a write error of the last
 * requests shows. */
static int vdk_finish(struct fmt_image *img)
{
    struct vdk *v = img->priv;
    int ret = vd_chain_close(v->chain);

    v->chain = NULL;
    return ret < 0 ? lib_err(ret, img->path) : 0;
}

static void vdk_close(struct fmt_image *img)
{
    struct vdk *v = img->priv;

    if (v && v->chain)
        vd_chain_close(v->chain);
    free(v);
    img->priv = NULL;
}

const struct fmt_driver fmt_vdk_driver = {
    .name = "vdk",
    .own_file = true,
    .probe = vdk_probe,
    .open = vdk_open,
    .status = vdk_status,
    .read = vdk_read,
    .info = vdk_info,
    .create = vdk_create,
    .write = vdk_write,
    .write_zeroes = vdk_write_zeroes,
    .finish = vdk_finish,
    .close = vdk_close,
};
