/*
 * source.c - an image read by convert, compare, import and template
 * create --import, in any format formats/ knows, seen through one small
 * interface: size, what a run holds, read.
 *
 * The format is probed when the user does not name it.  A backing file or
 * parent that an image names is never opened on the image's word: the
 * user names it with --backing (and may give its format), or the image is
 * refused, since reading it without would silently give wrong data.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"

int img_parse_format(const char *s, const char **out)
{
    for (unsigned i = 0; fmt_names[i]; i++) {
        if (strcmp(s, fmt_names[i]) == 0) {
            *out = fmt_names[i];
            return 0;
        }
    }
    return -EINVAL;
}

static int open_one(const char *path, const char *format, struct fmt_image **out)
{
    struct fmt_open_opts oo = { .format = format, .ctx = cli_ctx() };
    int ret;

    if (!oo.ctx)
        return -ENOMEM;
    ret = fmt_open(path, &oo, out);
    if (ret < 0)
        cli_err_fmt(ret, "%s", path);
    return ret;
}

int img_src_open(struct img_src *src, const char *path, const struct img_in *in)
{
    struct fmt_image *backing = NULL;
    const char *named;
    int ret;

    memset(src, 0, sizeof(*src));
    src->path = path;
    ret = open_one(path, in ? in->format : NULL, &src->img);
    if (ret < 0)
        return ret;
    named = fmt_backing_name(src->img);
    if (in && in->backing) {
        if (!named) {
            cli_err("%s: names no backing file; --backing is for images that do",
                    path);
            ret = -EINVAL;
            goto fail;
        }
        ret = open_one(in->backing, in->backing_format, &backing);
        if (ret < 0)
            goto fail;
        fmt_set_backing(src->img, backing);
    } else if (named) {
        cli_err("%s: it names the backing file '%s', which vdisk does not open "
                "on an image's word: give it with --backing FILE", path, named);
        ret = -EINVAL;
        goto fail;
    }
    src->size = fmt_size(src->img);
    src->chain = fmt_chain(src->img);
    return 0;

fail:
    img_src_close(src);
    return ret;
}

void img_src_close(struct img_src *src)
{
    fmt_close(src->img);      /* read-only: nothing to report */
    src->img = NULL;
    src->chain = NULL;
}

int img_src_status(struct img_src *src, uint64_t off, uint64_t len, bool deep,
                   uint64_t *pnum, enum fmt_kind *kind)
{
    int ret = fmt_status(src->img, off, len, deep, pnum, kind);

    if (ret < 0)
        cli_err_fmt(ret, "%s: block status", src->path);
    return ret;
}

int img_src_read(struct img_src *src, void *buf, uint64_t off, size_t len)
{
    int ret = fmt_read(src->img, buf, off, len);

    if (ret < 0)
        cli_err_fmt(ret, "%s: read at offset %llu", src->path,
                    (unsigned long long)off);
    return ret;
}

int img_src_use_chain(struct img_src *src, struct vd_chain *chain,
                      const char *name, unsigned own_depth)
{
    int ret;

    memset(src, 0, sizeof(*src));
    src->path = name;
    ret = fmt_open_chain(chain, name, own_depth, &src->img);
    if (ret < 0) {
        cli_err_fmt(ret, "%s", name);
        return ret;
    }
    src->size = fmt_size(src->img);
    src->chain = chain;
    return 0;
}
