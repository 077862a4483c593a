/*
 * qcow2-write.c - writing new qcow2 images: version 3 (compat 1.1),
 * 16-bit refcounts, standard L2 entries, zlib never used.
 *
 * The file is laid out in the order things become known:
 *
 *   cluster 0          header, backing format extension, backing name
 *   clusters 1..       data clusters, in the order they are first written
 *   then (at finish)   L2 tables, L1 table, refcount table, refcount blocks
 *
 * Until finish the L2 tables live in memory, made only for the L1 entries
 * that get a cluster, so an image with little data costs little memory
 * whatever its size.  The header goes last: a file cut short before it
 * is not a qcow2 image at all.  Every cluster of the finished file is used
 * exactly once, so every refcount is 1 and every table entry carries the
 * "refcount is one" flag (qemu-img check verifies both).
 *
 * With a backing file named, the part of a cluster a write does not cover
 * would have to come from the backing file, which we never read: writes
 * must then cover whole clusters (img->write_align).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2.h"

#define ALIGN_UP(x, a)  (((x) + (a) - 1) / (a) * (a))
#define DIV_UP(x, a)    (((x) + (a) - 1) / (a))

#define DEFAULT_CLUSTER_SIZE  65536u
#define HEADER_LEN            ((uint32_t)sizeof(struct qcow2_header))
/* The metadata written at finish goes out in pieces of this size (or one
 * cluster, when that is larger). */
#define OUT_BUF_BYTES         (1u << 20)

static const uint8_t zeroes[65536];

/* The bytes of the header cluster that precede the backing file name. */
static size_t header_area_len(const char *backing_format)
{
    size_t len = HEADER_LEN + sizeof(struct qcow2_ext);     /* + end marker */

    if (backing_format)
        len += sizeof(struct qcow2_ext) + ALIGN_UP(strlen(backing_format), 8);
    return len;
}

static int write_zero_bytes(struct fmt_image *img, uint64_t host, size_t n)
{
    while (n > 0) {
        size_t k = MIN(n, sizeof(zeroes));
        int ret = fmt_pwrite(img, zeroes, k, host);

        if (ret < 0)
            return ret;
        host += k;
        n -= k;
    }
    return 0;
}

int qcow2_create(struct fmt_image *img, const struct fmt_create_opts *opts)
{
    uint32_t cs = opts->cluster_size ? opts->cluster_size : DEFAULT_CLUSTER_SIZE;
    const char *bf = opts->backing_file, *bfmt = opts->backing_format;
    struct qcow2 *q;
    struct stat st;

    if (opts->subformat)
        return fmt_err(-EINVAL, "%s: qcow2 has no subformat option", img->path);
    if (opts->block_size)
        return fmt_err(-EINVAL, "%s: qcow2 has no block size option (the cluster "
                       "size is its unit)", img->path);
    if (opts->digest)
        return fmt_err(-EINVAL, "%s: qcow2 has no digest option", img->path);
    if (cs < (1u << QCOW2_MIN_CLUSTER_BITS) || cs > (1u << QCOW2_MAX_CLUSTER_BITS) ||
        (cs & (cs - 1)))
        return fmt_err(-EINVAL, "%s: cluster size %u is not a power of two from 512 "
                       "to 2 MiB", img->path, cs);
    if (img->size == 0 || img->size % FMT_SECTOR)
        return fmt_err(-EINVAL, "%s: size %" PRIu64 " is not a positive multiple of "
                       "512", img->path, img->size);
    if (img->size > FMT_MAX_SIZE)
        return fmt_err(-EFBIG, "%s: size %" PRIu64 " is larger than %llu", img->path,
                       img->size, FMT_MAX_SIZE);
    if (bfmt && !bf)
        return fmt_err(-EINVAL, "%s: a backing format without a backing file",
                       img->path);
    if (bf && (!*bf || strlen(bf) > QCOW2_MAX_BACKING_NAME))
        return fmt_err(-EINVAL, "%s: the backing file name must have 1 to %u bytes",
                       img->path, QCOW2_MAX_BACKING_NAME);
    if (bfmt && (!*bfmt || strlen(bfmt) > QCOW2_MAX_BACKING_FORMAT))
        return fmt_err(-EINVAL, "%s: the backing format name must have 1 to %u bytes",
                       img->path, QCOW2_MAX_BACKING_FORMAT);
    if (bf && header_area_len(bfmt) + strlen(bf) > cs)
        return fmt_err(-EINVAL, "%s: the backing file name does not fit in the first "
                       "cluster of %u bytes", img->path, cs);

    q = calloc(1, sizeof(*q));
    if (!q)
        return fmt_err(-ENOMEM, "out of memory");
    img->priv = q;
    q->version = 3;
    q->cluster_size = cs;
    q->cluster_bits = (unsigned)__builtin_ctz(cs);
    q->entry_size = 8;
    q->l2_bits = q->cluster_bits - 3;
    q->sub_bits = q->cluster_bits;
    q->header_size = img->size;
    q->refcount_order = QCOW2_REFCOUNT_ORDER;
    q->l1_size = DIV_UP(img->size, 1ull << (q->cluster_bits + q->l2_bits));
    if (q->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return fmt_err(-EFBIG, "%s: %" PRIu64 " bytes need a larger cluster size than "
                       "%u bytes (the L1 table would pass qemu's %u MiB)", img->path,
                       img->size, cs, QCOW2_MAX_L1_BYTES >> 20);
    q->wl2 = calloc(q->l1_size, sizeof(*q->wl2));
    if (!q->wl2)
        return fmt_err(-ENOMEM, "out of memory");
    q->next_free = cs;
    if (fstat(img->fd, &st) < 0)
        return fmt_err(-errno, "%s: %s", img->path, strerror(errno));
    q->fill = !S_ISREG(st.st_mode);
    if (bf) {
        img->backing_name = strdup(bf);
        if (!img->backing_name || (bfmt && !(img->backing_format = strdup(bfmt))))
            return fmt_err(-ENOMEM, "out of memory");
        img->write_align = cs;
    }
    img->sequential = false;
    /* Until finish writes the header, the file must not look like an
     * image: a device may hold an old one. */
    return q->fill ? write_zero_bytes(img, 0, cs) : 0;
}

void qcow2_write_free(struct qcow2 *q)
{
    if (!q->wl2)
        return;
    for (uint64_t i = 0; i < q->l1_size; i++)
        free(q->wl2[i]);
    free(q->wl2);
    q->wl2 = NULL;
}

/* The L2 entry of guest cluster cl (host byte order); 0 when its table
 * does not exist yet. */
static uint64_t entry_get(const struct qcow2 *q, uint64_t cl)
{
    const uint64_t *t = q->wl2[cl >> q->l2_bits];

    return t ? t[cl & ((1ull << q->l2_bits) - 1)] : 0;
}

static int entry_set(struct fmt_image *img, struct qcow2 *q, uint64_t cl, uint64_t e)
{
    uint64_t **t = &q->wl2[cl >> q->l2_bits];

    if (!*t && !(*t = calloc(1ull << q->l2_bits, sizeof(uint64_t))))
        return fmt_err(-ENOMEM, "%s: out of memory for an L2 table", img->path);
    (*t)[cl & ((1ull << q->l2_bits) - 1)] = e;
    return 0;
}

static int check_aligned(struct fmt_image *img, uint64_t off, uint64_t len)
{
    uint64_t cs = ((struct qcow2 *)img->priv)->cluster_size;

    if (off % cs || (len % cs && off + len != img->size))
        return fmt_err(-EINVAL, "%s: %" PRIu64 "+%" PRIu64 " does not cover whole "
                       "clusters of %" PRIu64 " bytes, which an image with a backing "
                       "file needs", img->path, off, len, cs);
    return 0;
}

/* A run of data contiguous in the caller's buffer and in the file. */
struct wrun {
    const uint8_t *buf;
    uint64_t host;
    size_t len;
};

static int wrun_flush(struct fmt_image *img, struct wrun *r)
{
    int ret = r->len ? fmt_pwrite(img, r->buf, r->len, r->host) : 0;

    r->len = 0;
    return ret;
}

int qcow2_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len)
{
    struct qcow2 *q = img->priv;
    const bool backed = img->backing_name != NULL;
    const uint64_t end = off + len, cs = q->cluster_size;
    struct wrun r = { 0 };
    uint64_t pos = off;
    int ret;

    if (backed && (ret = check_aligned(img, off, len)) < 0)
        return ret;
    while (pos < end) {
        uint64_t cl = pos >> q->cluster_bits, in = pos & (cs - 1);
        uint64_t e = entry_get(q, cl), host = e & QCOW2_L2_OFFSET_MASK;
        size_t n = (size_t)MIN(cs - in, end - pos);
        const uint8_t *src = (const uint8_t *)buf + (pos - off);

        if (!host) {
            /* Zeroes need no cluster: without a backing file what is not
             * written reads as zeroes (and a partial write leaves the rest
             * of a new cluster zero); with one, the zero flag hides it. */
            if (fmt_is_zero(src, n)) {
                if (backed && (ret = entry_set(img, q, cl, QCOW2_OFLAG_ZERO)) < 0)
                    return ret;
                pos += n;
                continue;
            }
            host = q->next_free;
            ret = entry_set(img, q, cl, host | QCOW2_OFLAG_COPIED);
            if (ret < 0)
                return ret;
            q->next_free += cs;
            /* A file's new clusters are holes; a device's hold old data. */
            if (q->fill && n < cs &&
                ((ret = write_zero_bytes(img, host, (size_t)in)) < 0 ||
                 (ret = write_zero_bytes(img, host + in + n, (size_t)(cs - in - n))) < 0))
                return ret;
        }
        if (r.len && r.host + r.len == host + in && r.buf + r.len == src) {
            r.len += n;
        } else {
            if ((ret = wrun_flush(img, &r)) < 0)
                return ret;
            r = (struct wrun){ .buf = src, .host = host + in, .len = n };
        }
        pos += n;
    }
    return wrun_flush(img, &r);
}

/* Clusters already written get zeroes in place (so that a cluster with a
 * host offset never also has the zero flag); the others get the zero flag
 * when a backing file would show through, and nothing otherwise. */
int qcow2_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len)
{
    struct qcow2 *q = img->priv;
    const bool backed = img->backing_name != NULL;
    const unsigned l1_shift = q->cluster_bits + q->l2_bits;
    const uint64_t end = off + len, cs = q->cluster_size;
    uint64_t pos = off;
    int ret;

    if (backed && (ret = check_aligned(img, off, len)) < 0)
        return ret;
    while (pos < end) {
        uint64_t cl = pos >> q->cluster_bits, in = pos & (cs - 1), host;
        size_t n = (size_t)MIN(cs - in, end - pos);

        if (!backed && !q->wl2[pos >> l1_shift]) {
            pos = MIN(end, ((pos >> l1_shift) + 1) << l1_shift);
            continue;
        }
        host = entry_get(q, cl) & QCOW2_L2_OFFSET_MASK;
        if (host)
            ret = write_zero_bytes(img, host + in, n);
        else if (backed)
            ret = entry_set(img, q, cl, QCOW2_OFLAG_ZERO);
        else
            ret = 0;
        if (ret < 0)
            return ret;
        pos += n;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Finish: the tables, then the header                                 */
/* ------------------------------------------------------------------ */

/* Sequential output of the metadata, which is contiguous from the end of
 * the data to the end of the file. */
struct out {
    struct fmt_image *img;
    uint8_t *buf;
    size_t cap, fill;
    uint64_t off;           /* file offset of buf[0] */
};

static int out_flush(struct out *o)
{
    int ret = o->fill ? fmt_pwrite(o->img, o->buf, o->fill, o->off) : 0;

    o->off += o->fill;
    o->fill = 0;
    return ret;
}

/* The next len bytes (len <= cap) of the output, zeroed, to fill in. */
static int out_take(struct out *o, size_t len, uint8_t **p)
{
    int ret;

    if (o->cap - o->fill < len && (ret = out_flush(o)) < 0)
        return ret;
    *p = o->buf + o->fill;
    memset(*p, 0, len);
    o->fill += len;
    return 0;
}

/* Where everything after the data goes, in clusters. */
struct layout {
    uint64_t l2_off, n_l2;
    uint64_t l1_off, l1_clusters;
    uint64_t rt_off, rt_clusters;
    uint64_t rb_off, rb_clusters;
    uint64_t total;         /* clusters in the file */
};

static void plan(struct qcow2 *q, struct layout *lo)
{
    const uint64_t cs = q->cluster_size;
    const uint64_t per_block = cs * 8 / (1u << QCOW2_REFCOUNT_ORDER);
    uint64_t base;

    memset(lo, 0, sizeof(*lo));
    for (uint64_t i = 0; i < q->l1_size; i++)
        lo->n_l2 += q->wl2[i] != NULL;
    lo->l2_off = q->next_free;
    lo->l1_off = lo->l2_off + lo->n_l2 * cs;
    lo->l1_clusters = DIV_UP(q->l1_size * 8, cs);
    base = lo->l1_off / cs + lo->l1_clusters;
    /* The refcount structures count themselves: grow them until they
     * cover what they add (a few rounds at most). */
    for (;;) {
        uint64_t total = base + lo->rt_clusters + lo->rb_clusters;
        uint64_t rb = DIV_UP(total, per_block), rt = DIV_UP(rb * 8, cs);

        if (rb == lo->rb_clusters && rt == lo->rt_clusters) {
            lo->total = total;
            break;
        }
        lo->rb_clusters = rb;
        lo->rt_clusters = rt;
    }
    lo->rt_off = base * cs;
    lo->rb_off = lo->rt_off + lo->rt_clusters * cs;
}

static int write_tables(struct fmt_image *img, struct qcow2 *q, const struct layout *lo)
{
    const uint64_t cs = q->cluster_size, l2_entries = 1ull << q->l2_bits;
    const uint64_t per_block = cs * 8 / (1u << QCOW2_REFCOUNT_ORDER);
    struct out o = { .img = img, .cap = MAX(OUT_BUF_BYTES, cs), .off = lo->l2_off };
    uint64_t k = 0;
    uint8_t *p;
    int ret = 0;

    o.buf = malloc(o.cap);
    if (!o.buf)
        return fmt_err(-ENOMEM, "out of memory");
    /* L2 tables, in L1 order. */
    for (uint64_t i = 0; i < q->l1_size; i++) {
        if (!q->wl2[i])
            continue;
        if ((ret = out_take(&o, cs, &p)) < 0)
            goto out;
        for (uint64_t j = 0; j < l2_entries; j++)
            qcow2_put64(p + j * 8, q->wl2[i][j]);
    }
    /* The L1 table. */
    for (uint64_t i = 0; i < q->l1_size; i++) {
        if (i % (cs / 8) == 0 && (ret = out_take(&o, cs, &p)) < 0)
            goto out;
        if (q->wl2[i])
            qcow2_put64(p + (i % (cs / 8)) * 8,
                        (lo->l2_off + k++ * cs) | QCOW2_OFLAG_COPIED);
    }
    /* The refcount table. */
    for (uint64_t i = 0; i < lo->rb_clusters; i++) {
        if (i % (cs / 8) == 0 && (ret = out_take(&o, cs, &p)) < 0)
            goto out;
        qcow2_put64(p + (i % (cs / 8)) * 8, lo->rb_off + i * cs);
    }
    /* The refcount blocks: 1 for every cluster of the file. */
    for (uint64_t i = 0; i < lo->rb_clusters; i++) {
        uint64_t used = MIN(per_block, lo->total - i * per_block);

        if ((ret = out_take(&o, cs, &p)) < 0)
            goto out;
        for (uint64_t j = 0; j < used; j++)
            p[j * 2 + 1] = 1;       /* big-endian 16-bit 1 */
    }
    ret = out_flush(&o);
out:
    free(o.buf);
    return ret;
}

static int write_header(struct fmt_image *img, struct qcow2 *q, const struct layout *lo)
{
    const char *bf = img->backing_name, *bfmt = img->backing_format;
    size_t area = header_area_len(bfmt), len = area + (bf ? strlen(bf) : 0);
    struct qcow2_header h = { 0 };
    uint8_t *buf = calloc(1, len), *p;
    int ret;

    if (!buf)
        return fmt_err(-ENOMEM, "out of memory");
    h.magic = htobe32(QCOW2_MAGIC);
    h.version = htobe32(3);
    if (bf) {
        h.backing_file_offset = htobe64(area);
        h.backing_file_size = htobe32((uint32_t)strlen(bf));
    }
    h.cluster_bits = htobe32(q->cluster_bits);
    h.size = htobe64(img->size);
    h.l1_size = htobe32((uint32_t)q->l1_size);
    h.l1_table_offset = htobe64(lo->l1_off);
    h.refcount_table_offset = htobe64(lo->rt_off);
    h.refcount_table_clusters = htobe32((uint32_t)lo->rt_clusters);
    h.refcount_order = htobe32(QCOW2_REFCOUNT_ORDER);
    h.header_length = htobe32(HEADER_LEN);
    memcpy(buf, &h, sizeof(h));
    p = buf + sizeof(h);
    if (bfmt) {
        qcow2_put32(p, QCOW2_EXT_BACKING_FORMAT);
        qcow2_put32(p + 4, (uint32_t)strlen(bfmt));
        memcpy(p + 8, bfmt, strlen(bfmt));
        p += sizeof(struct qcow2_ext) + ALIGN_UP(strlen(bfmt), 8);
    }
    p += sizeof(struct qcow2_ext);          /* the end marker: zeroes */
    if (bf)
        memcpy(p, bf, strlen(bf));
    ret = fmt_pwrite(img, buf, len, 0);
    free(buf);
    return ret;
}

int qcow2_finish(struct fmt_image *img)
{
    struct qcow2 *q = img->priv;
    struct layout lo;
    struct stat st;
    int ret;

    plan(q, &lo);
    if (lo.rt_clusters * q->cluster_size > QCOW2_MAX_REFTABLE_BYTES)
        return fmt_err(-EFBIG, "%s: %" PRIu64 " clusters need a refcount table larger "
                       "than qemu's %u MiB; use a larger cluster size", img->path,
                       lo.total, QCOW2_MAX_REFTABLE_BYTES >> 20);
    ret = write_tables(img, q, &lo);
    if (ret < 0)
        return ret;
    /* Whole clusters, whatever the last data write left (the refcount
     * blocks end the file already; this is the belt to their braces). */
    if (fstat(img->fd, &st) == 0 && S_ISREG(st.st_mode) &&
        ftruncate(img->fd, (off_t)(lo.total * q->cluster_size)) < 0)
        return fmt_err(-errno, "%s: cannot set the file size: %s", img->path,
                       strerror(errno));
    return write_header(img, q, &lo);
}
