/*
 * vmdk-write.c - making new VMDK images: monolithicSparse and
 * streamOptimized, each one file with its descriptor embedded.
 *
 * monolithicSparse (the layout qemu-img makes):
 *
 *   0       header (written last, by finish: an unfinished file has no
 *           magic and is not taken for an image)
 *   1       descriptor (VMDK_DESC_SECTORS)
 *   21      redundant GD, then its grain tables, all preallocated
 *   ...     GD, then its grain tables
 *   ...     grains (from overhead, a multiple of the grain size), appended
 *           in the order they are first written
 *
 *   The grain tables are kept in memory (up to VMDK_WRITE_GT_MEM, then
 *   written out and read back when needed) and written to both copies by
 *   finish.  A grain written again is overwritten in place; the part of a
 *   grain never written reads as zeroes since the file is new.
 *
 * streamOptimized (writes in increasing order; img->sequential):
 *
 *   0       header, gdOffset = VMDK_GD_AT_END (written last)
 *   1       descriptor
 *   21      for each grain holding something other than zeroes: a grain
 *           marker and its deflated bytes (a zlib stream), padded to a
 *           sector; after the grains of a grain table, a GT marker and the
 *           table; at the end a GD marker and the GD, the footer marker and
 *           footer (the header with the real gdOffset), end-of-stream.
 *
 * Grain offsets are uint32 sectors: a file can reach 2 TiB, and the
 * capacity is limited so that the last grain still fits.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "vmdk.h"

#define VMDK_DESC_SECTORS    20u        /* as qemu-img: room to edit the text */
#define VMDK_WRITE_GTES      512u
#define VMDK_GT_SECTORS      (VMDK_WRITE_GTES * 4 / VMDK_SECTOR)
#ifndef VMDK_WRITE_GT_MEM          /* tests make it small */
#define VMDK_WRITE_GT_MEM    (32u << 20)
#endif
#define NONE                 UINT64_MAX

struct vmdk_writer {
    bool stream;
    uint32_t grain_sectors;
    uint64_t grain_bytes;
    uint64_t capacity;          /* sectors */
    uint32_t gt_count;
    uint32_t gd_sectors;
    uint64_t overhead;          /* sectors before the first grain */
    uint32_t cid;

    /* monolithicSparse */
    uint64_t rgd_sector;
    uint64_t gd_sector;
    uint32_t **gts;             /* tables in memory (host order), or NULL */
    uint8_t *gt_on_disk;        /* table i was written out: read it back */
    size_t gts_in_mem;
    uint64_t next_sector;       /* where the next new grain goes */

    /* streamOptimized */
    uint64_t pos;               /* sector where the stream goes on */
    uint64_t write_end;         /* the next write starts here or later */
    uint8_t *grain;             /* the grain being filled */
    uint64_t grain_index;       /* NONE: no grain being filled */
    uint8_t *zbuf;              /* marker + deflated grain + padding */
    size_t zbuf_size;
    z_stream zs;
    bool zs_ready;
    uint32_t *gd;               /* host order */
    uint32_t *gt;               /* the table being filled, host order */
    uint64_t gt_index;          /* NONE: none */
    bool gt_used;
};

static void put_le32(void *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, sizeof(v));
}

static void put_le64(void *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof(v));
}

static void free_writer(struct vmdk_writer *w)
{
    if (!w)
        return;
    if (w->gts)
        for (uint32_t i = 0; i < w->gt_count; i++)
            free(w->gts[i]);
    free(w->gts);
    free(w->gt_on_disk);
    free(w->grain);
    free(w->zbuf);
    if (w->zs_ready)
        deflateEnd(&w->zs);
    free(w->gd);
    free(w->gt);
    free(w);
}

void vmdk_write_close(struct fmt_image *img)
{
    free_writer(img->priv);
    img->priv = NULL;
}

static void make_header(const struct vmdk_writer *w, struct vmdk_header *h,
                        uint64_t gd_offset)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, VMDK_MAGIC, 4);
    h->version = htole32(w->stream ? 3 : 1);
    h->flags = htole32(VMDK_FLAG_NL_TEST |
                       (w->stream ? VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS
                                  : VMDK_FLAG_RGD));
    h->capacity = htole64(w->capacity);
    h->grain_size = htole64(w->grain_sectors);
    h->desc_offset = htole64(1);
    h->desc_size = htole64(VMDK_DESC_SECTORS);
    h->gtes_per_gt = htole32(VMDK_WRITE_GTES);
    h->rgd_offset = htole64(w->rgd_sector);
    h->gd_offset = htole64(gd_offset);
    h->overhead = htole64(w->overhead);
    memcpy(h->nl_check, "\n \r\n", 4);
    h->compress_algorithm = htole16(w->stream ? VMDK_COMPRESS_DEFLATE
                                              : VMDK_COMPRESS_NONE);
}

/* Writes the header at sector 0. */
static int write_header(struct fmt_image *img, const struct vmdk_writer *w,
                        uint64_t gd_offset)
{
    struct vmdk_header h;

    make_header(w, &h, gd_offset);
    return fmt_pwrite(img, &h, sizeof(h), 0);
}

/* A GD (host order, gt_count entries) as gd_sectors of little-endian. */
static int write_gd(struct fmt_image *img, const struct vmdk_writer *w,
                    const uint32_t *gd, uint64_t sector)
{
    size_t bytes = (size_t)w->gd_sectors * VMDK_SECTOR;
    uint8_t *buf = calloc(1, bytes);
    int ret;

    if (!buf)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    for (uint32_t i = 0; i < w->gt_count; i++)
        put_le32(buf + i * 4, gd[i]);
    ret = fmt_pwrite(img, buf, bytes, sector * VMDK_SECTOR);
    free(buf);
    return ret;
}

/* ------------------------------------------------------------------ */
/* monolithicSparse                                                    */
/* ------------------------------------------------------------------ */

static uint64_t gt_sector(const struct vmdk_writer *w, uint64_t gd, uint32_t i)
{
    return gd + w->gd_sectors + (uint64_t)i * VMDK_GT_SECTORS;
}

/* Writes the tables in memory to both copies and frees them. */
static int flush_gts(struct fmt_image *img, struct vmdk_writer *w)
{
    uint32_t le[VMDK_WRITE_GTES];
    int ret;

    for (uint32_t i = 0; i < w->gt_count && w->gts_in_mem; i++) {
        if (!w->gts[i])
            continue;
        for (unsigned j = 0; j < VMDK_WRITE_GTES; j++)
            le[j] = htole32(w->gts[i][j]);
        ret = fmt_pwrite(img, le, sizeof(le), gt_sector(w, w->gd_sector, i) * VMDK_SECTOR);
        if (ret == 0)
            ret = fmt_pwrite(img, le, sizeof(le),
                             gt_sector(w, w->rgd_sector, i) * VMDK_SECTOR);
        if (ret < 0)
            return ret;
        free(w->gts[i]);
        w->gts[i] = NULL;
        w->gt_on_disk[i] = 1;
        w->gts_in_mem--;
    }
    return 0;
}

/* Sets *out to table i in memory, loading it (or making it, all zero) if
 * needed; with create false, to NULL for a table that holds nothing. */
static int sparse_gt(struct fmt_image *img, struct vmdk_writer *w, uint32_t i,
                     bool create, uint32_t **out)
{
    uint32_t *t;
    int ret;

    *out = w->gts[i];
    if (*out || (!create && !w->gt_on_disk[i]))
        return 0;
    if ((size_t)(w->gts_in_mem + 1) * VMDK_WRITE_GTES * 4 > VMDK_WRITE_GT_MEM) {
        ret = flush_gts(img, w);
        if (ret < 0)
            return ret;
    }
    t = calloc(VMDK_WRITE_GTES, 4);
    if (!t)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    if (w->gt_on_disk[i]) {
        ret = fmt_pread(img, t, VMDK_WRITE_GTES * 4,
                        gt_sector(w, w->gd_sector, i) * VMDK_SECTOR, "grain table");
        if (ret < 0) {
            free(t);
            return ret;
        }
        for (unsigned j = 0; j < VMDK_WRITE_GTES; j++)
            t[j] = le32toh(t[j]);
    }
    w->gts[i] = t;
    w->gts_in_mem++;
    *out = t;
    return 0;
}

static int sparse_create(struct fmt_image *img, struct vmdk_writer *w)
{
    uint32_t *gd;
    int ret;

    w->rgd_sector = 1 + VMDK_DESC_SECTORS;
    w->gd_sector = gt_sector(w, w->rgd_sector, w->gt_count);
    w->overhead = gt_sector(w, w->gd_sector, w->gt_count);
    w->overhead = (w->overhead + w->grain_sectors - 1) / w->grain_sectors *
                  w->grain_sectors;
    w->next_sector = w->overhead;
    w->gts = calloc(w->gt_count, sizeof(*w->gts));
    w->gt_on_disk = calloc(w->gt_count, 1);
    gd = calloc(w->gt_count, sizeof(*gd));
    if (!w->gts || !w->gt_on_disk || !gd) {
        ret = fmt_err(-ENOMEM, "%s: out of memory", img->path);
        goto out;
    }
    /* Every grain table is preallocated: the GDs never change. */
    for (uint32_t i = 0; i < w->gt_count; i++)
        gd[i] = (uint32_t)gt_sector(w, w->rgd_sector, i);
    ret = write_gd(img, w, gd, w->rgd_sector);
    if (ret < 0)
        goto out;
    for (uint32_t i = 0; i < w->gt_count; i++)
        gd[i] = (uint32_t)gt_sector(w, w->gd_sector, i);
    ret = write_gd(img, w, gd, w->gd_sector);
    if (ret < 0)
        goto out;
    if (ftruncate(img->fd, (off_t)(w->overhead * VMDK_SECTOR)) < 0)
        ret = fmt_err(-errno, "%s: %s", img->path, strerror(errno));
out:
    free(gd);
    return ret;
}

static int sparse_write(struct fmt_image *img, struct vmdk_writer *w,
                        const uint8_t *buf, uint64_t off, size_t len)
{
    uint64_t gb = w->grain_bytes, run_off = 0;
    const uint8_t *run_buf = buf;
    size_t run_len = 0;
    int ret;

    while (len > 0) {
        uint64_t gi = off / gb, in = off % gb, host;
        size_t n = (size_t)MIN((uint64_t)len, gb - in);
        uint32_t gt = (uint32_t)(gi / VMDK_WRITE_GTES), *t;
        uint32_t v;

        ret = sparse_gt(img, w, gt, false, &t);
        if (ret < 0)
            return ret;
        v = t ? t[gi % VMDK_WRITE_GTES] : 0;
        if (v == 0 && fmt_is_zero(buf, n)) {
            /* a grain never written reads as zeroes already */
            host = NONE;
        } else {
            if (v == 0) {
                ret = sparse_gt(img, w, gt, true, &t);
                if (ret < 0)
                    return ret;
                v = (uint32_t)w->next_sector;
                t[gi % VMDK_WRITE_GTES] = v;
                w->next_sector += w->grain_sectors;
            }
            host = (uint64_t)v * VMDK_SECTOR + in;
        }
        if (run_len && host == run_off + run_len) {
            run_len += n;
        } else {
            if (run_len) {
                ret = fmt_pwrite(img, run_buf, run_len, run_off);
                if (ret < 0)
                    return ret;
            }
            run_len = host == NONE ? 0 : n;
            run_off = host;
            run_buf = buf;
        }
        buf += n;
        off += n;
        len -= n;
    }
    return run_len ? fmt_pwrite(img, run_buf, run_len, run_off) : 0;
}

static int sparse_finish(struct fmt_image *img, struct vmdk_writer *w)
{
    int ret = flush_gts(img, w);

    if (ret < 0)
        return ret;
    /* The last grain may have been written in part: whole grains. */
    if (ftruncate(img->fd, (off_t)(w->next_sector * VMDK_SECTOR)) < 0)
        return fmt_err(-errno, "%s: %s", img->path, strerror(errno));
    return write_header(img, w, w->gd_sector);
}

/* ------------------------------------------------------------------ */
/* streamOptimized                                                     */
/* ------------------------------------------------------------------ */

/* Checks that sector (a grain or table offset) fits in a uint32. */
static int stream_room(struct fmt_image *img, uint64_t sector)
{
    if (sector > UINT32_MAX)
        return fmt_err(-EFBIG, "%s: the stream grew past 2 TiB, the most VMDK "
                       "offsets address", img->path);
    return 0;
}

/* Appends the grain table being filled, if it holds a grain. */
static int stream_put_gt(struct fmt_image *img, struct vmdk_writer *w)
{
    uint8_t buf[(1 + VMDK_GT_SECTORS) * VMDK_SECTOR];
    int ret;

    if (w->gt_index == NONE || !w->gt_used)
        return 0;
    ret = stream_room(img, w->pos + 1);
    if (ret < 0)
        return ret;
    memset(buf, 0, VMDK_SECTOR);
    put_le64(buf, VMDK_GT_SECTORS);
    put_le32(buf + 12, VMDK_MARKER_GT);
    for (unsigned j = 0; j < VMDK_WRITE_GTES; j++)
        put_le32(buf + VMDK_SECTOR + j * 4, w->gt[j]);
    ret = fmt_pwrite(img, buf, sizeof(buf), w->pos * VMDK_SECTOR);
    if (ret < 0)
        return ret;
    w->gd[w->gt_index] = (uint32_t)(w->pos + 1);
    w->pos += 1 + VMDK_GT_SECTORS;
    w->gt_used = false;
    return 0;
}

/* Appends grain gi (data: grain_bytes) unless it is all zero. */
static int stream_put_grain(struct fmt_image *img, struct vmdk_writer *w,
                            const uint8_t *data, uint64_t gi)
{
    uint64_t gt = gi / VMDK_WRITE_GTES;
    size_t clen, total;
    int ret;

    if (fmt_is_zero(data, w->grain_bytes))
        return 0;
    if (gt != w->gt_index) {
        ret = stream_put_gt(img, w);
        if (ret < 0)
            return ret;
        w->gt_index = gt;
        memset(w->gt, 0, VMDK_WRITE_GTES * 4);
    }
    ret = stream_room(img, w->pos);
    if (ret < 0)
        return ret;

    /* each grain is a zlib stream of its own, as the format and qemu want */
    if (deflateReset(&w->zs) != Z_OK)
        return fmt_err(-EIO, "%s: zlib: cannot reset", img->path);
    w->zs.next_in = (Bytef *)data;
    w->zs.avail_in = (uInt)w->grain_bytes;
    w->zs.next_out = w->zbuf + VMDK_GRAIN_MARKER_SIZE;
    w->zs.avail_out = (uInt)(w->zbuf_size - VMDK_GRAIN_MARKER_SIZE - VMDK_SECTOR);
    if (deflate(&w->zs, Z_FINISH) != Z_STREAM_END)
        return fmt_err(-EIO, "%s: zlib: cannot deflate a grain", img->path);
    clen = w->zs.total_out;
    put_le64(w->zbuf, gi * w->grain_sectors);
    put_le32(w->zbuf + 8, (uint32_t)clen);
    total = (VMDK_GRAIN_MARKER_SIZE + clen + VMDK_SECTOR - 1) & ~(size_t)(VMDK_SECTOR - 1);
    memset(w->zbuf + VMDK_GRAIN_MARKER_SIZE + clen, 0,
           total - VMDK_GRAIN_MARKER_SIZE - clen);
    ret = fmt_pwrite(img, w->zbuf, total, w->pos * VMDK_SECTOR);
    if (ret < 0)
        return ret;
    w->gt[gi % VMDK_WRITE_GTES] = (uint32_t)w->pos;
    w->gt_used = true;
    w->pos += total / VMDK_SECTOR;
    return 0;
}

/* Appends the grain being filled, if any. */
static int stream_flush_grain(struct fmt_image *img, struct vmdk_writer *w)
{
    uint64_t gi = w->grain_index;

    if (gi == NONE)
        return 0;
    w->grain_index = NONE;
    return stream_put_grain(img, w, w->grain, gi);
}

static int stream_create(struct fmt_image *img, struct vmdk_writer *w)
{
    w->overhead = 1 + VMDK_DESC_SECTORS;
    w->pos = w->overhead;
    w->grain_index = NONE;
    w->gt_index = NONE;
    w->grain = malloc(w->grain_bytes);
    w->zbuf_size = VMDK_GRAIN_MARKER_SIZE + compressBound(w->grain_bytes) + VMDK_SECTOR;
    w->zbuf = malloc(w->zbuf_size);
    w->gd = calloc(w->gt_count, sizeof(*w->gd));
    w->gt = calloc(VMDK_WRITE_GTES, 4);
    if (!w->grain || !w->zbuf || !w->gd || !w->gt)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    if (deflateInit(&w->zs, Z_DEFAULT_COMPRESSION) != Z_OK)
        return fmt_err(-ENOMEM, "%s: cannot start zlib", img->path);
    w->zs_ready = true;
    return 0;
}

static int stream_write(struct fmt_image *img, struct vmdk_writer *w,
                        const uint8_t *buf, uint64_t off, size_t len)
{
    uint64_t gb = w->grain_bytes;
    int ret;

    if (off < w->write_end)
        return fmt_err(-EINVAL, "%s: writes to a streamOptimized image must come "
                       "in increasing order (%llu after %llu)", img->path,
                       (unsigned long long)off, (unsigned long long)w->write_end);
    w->write_end = off + len;
    while (len > 0) {
        uint64_t gi = off / gb, in = off % gb;
        size_t n = (size_t)MIN((uint64_t)len, gb - in);

        if (gi != w->grain_index) {
            ret = stream_flush_grain(img, w);
            if (ret < 0)
                return ret;
            if (in == 0 && n == gb) {
                /* a whole grain: no copy */
                ret = stream_put_grain(img, w, buf, gi);
                if (ret < 0)
                    return ret;
                goto next;
            }
            w->grain_index = gi;
            memset(w->grain, 0, gb);
        }
        memcpy(w->grain + in, buf, n);
        if (in + n == gb) {
            ret = stream_flush_grain(img, w);
            if (ret < 0)
                return ret;
        }
next:
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int stream_finish(struct fmt_image *img, struct vmdk_writer *w)
{
    uint8_t tail[3 * VMDK_SECTOR];
    uint64_t gd_sector;
    struct vmdk_header h;
    int ret;

    ret = stream_flush_grain(img, w);
    if (ret == 0)
        ret = stream_put_gt(img, w);
    if (ret == 0)
        ret = stream_room(img, w->pos + 1);
    if (ret < 0)
        return ret;

    /* GD marker and GD */
    memset(tail, 0, VMDK_SECTOR);
    put_le64(tail, w->gd_sectors);
    put_le32(tail + 12, VMDK_MARKER_GD);
    ret = fmt_pwrite(img, tail, VMDK_SECTOR, w->pos * VMDK_SECTOR);
    if (ret < 0)
        return ret;
    gd_sector = w->pos + 1;
    ret = write_gd(img, w, w->gd, gd_sector);
    if (ret < 0)
        return ret;
    w->pos = gd_sector + w->gd_sectors;

    /* footer marker, footer, end-of-stream marker */
    memset(tail, 0, sizeof(tail));
    put_le64(tail, 1);
    put_le32(tail + 12, VMDK_MARKER_FOOTER);
    make_header(w, &h, gd_sector);
    memcpy(tail + VMDK_SECTOR, &h, sizeof(h));
    ret = fmt_pwrite(img, tail, sizeof(tail), w->pos * VMDK_SECTOR);
    if (ret < 0)
        return ret;
    w->pos += 3;
    return write_header(img, w, VMDK_GD_AT_END);
}

/* ------------------------------------------------------------------ */
/* The driver's entry points                                           */
/* ------------------------------------------------------------------ */

static uint32_t new_cid(void)
{
    uint32_t cid;

    if (getrandom(&cid, sizeof(cid), GRND_NONBLOCK) != sizeof(cid))
        cid = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
    /* ffffffff means "no parent" in parentCID; keep clear of it */
    return cid >= 0xfffffffeu ? cid & 0x7fffffffu : cid;
}

/* Checks the options and the size; sets the geometry of w. */
static int check_opts(struct fmt_image *img, const struct fmt_create_opts *opts,
                      struct vmdk_writer *w)
{
    uint32_t cs = opts->cluster_size ? opts->cluster_size : 64u << 10;
    uint64_t grains, last, meta;

    if (opts->backing_file || opts->backing_format)
        return fmt_err(-EINVAL, "%s: VMDK images are made here without a parent "
                       "(backing file)", img->path);
    if (opts->block_size || opts->digest)
        return fmt_err(-EINVAL, "%s: block size and digest are options of vdk "
                       "images, not VMDK", img->path);
    if (!opts->subformat || strcmp(opts->subformat, "monolithicSparse") == 0)
        w->stream = false;
    else if (strcmp(opts->subformat, "streamOptimized") == 0)
        w->stream = true;
    else
        return fmt_err(-EINVAL, "%s: VMDK subformat '%s' cannot be written "
                       "(monolithicSparse or streamOptimized)", img->path,
                       opts->subformat);
    if (cs < (4u << 10) || cs > (1u << 20) || (cs & (cs - 1)))
        return fmt_err(-EINVAL, "%s: grain size %u is not a power of two from "
                       "4 KiB to 1 MiB", img->path, cs);

    w->grain_bytes = cs;
    w->grain_sectors = cs / VMDK_SECTOR;
    w->capacity = img->size / VMDK_SECTOR;
    grains = (w->capacity + w->grain_sectors - 1) / w->grain_sectors;
    /* the last grain's offset must fit in a GTE (uint32 sectors), after
     * the metadata (GDs and tables, twice, at most) */
    meta = 1 + VMDK_DESC_SECTORS + 2 * (grains / VMDK_WRITE_GTES + 1) *
                                   (VMDK_GT_SECTORS + 1) + w->grain_sectors;
    last = meta + (grains - 1) * w->grain_sectors;
    if (last > UINT32_MAX)
        return fmt_err(-EFBIG, "%s: %llu bytes is too large for a VMDK sparse "
                       "extent with %u-byte grains (offsets stop at 2 TiB)",
                       img->path, (unsigned long long)img->size, cs);
    w->gt_count = (uint32_t)((grains + VMDK_WRITE_GTES - 1) / VMDK_WRITE_GTES);
    w->gd_sectors = (uint32_t)(((uint64_t)w->gt_count * 4 + VMDK_SECTOR - 1) /
                               VMDK_SECTOR);
    return 0;
}

/* Writes the descriptor at sector 1, padded to its sectors. */
static int write_desc(struct fmt_image *img, const struct vmdk_writer *w)
{
    const char *slash = strrchr(img->path, '/');
    const char *base = slash ? slash + 1 : img->path;
    char *text, *buf = NULL;
    size_t n;
    int ret;

    if (!*base || strpbrk(base, "\"\r\n"))
        return fmt_err(-EINVAL, "%s: the file name cannot be written in a VMDK "
                       "descriptor", img->path);
    text = vmdk_desc_format(w->cid, w->stream ? "streamOptimized" : "monolithicSparse",
                            w->capacity, base);
    if (!text)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    n = strlen(text);
    if (n >= VMDK_DESC_SECTORS * VMDK_SECTOR) {
        ret = fmt_err(-EINVAL, "%s: the file name is too long for the descriptor",
                      img->path);
        goto out;
    }
    buf = calloc(VMDK_DESC_SECTORS, VMDK_SECTOR);
    if (!buf) {
        ret = fmt_err(-ENOMEM, "%s: out of memory", img->path);
        goto out;
    }
    memcpy(buf, text, n);
    ret = fmt_pwrite(img, buf, VMDK_DESC_SECTORS * VMDK_SECTOR, VMDK_SECTOR);
out:
    free(text);
    free(buf);
    return ret;
}

int vmdk_create(struct fmt_image *img, const struct fmt_create_opts *opts)
{
    struct vmdk_writer *w = calloc(1, sizeof(*w));
    int ret;

    if (!w)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    ret = check_opts(img, opts, w);
    if (ret < 0)
        goto fail;
    w->cid = new_cid();
    ret = write_desc(img, w);
    if (ret < 0)
        goto fail;
    ret = w->stream ? stream_create(img, w) : sparse_create(img, w);
    if (ret < 0)
        goto fail;
    img->priv = w;
    img->sequential = w->stream;
    return 0;
fail:
    /* the generic layer calls close on failure, before img->writing is
     * set: nothing of ours must be left in img->priv then */
    free_writer(w);
    return ret;
}

int vmdk_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len)
{
    struct vmdk_writer *w = img->priv;

    return w->stream ? stream_write(img, w, buf, off, len)
                     : sparse_write(img, w, buf, off, len);
}

int vmdk_finish(struct fmt_image *img)
{
    struct vmdk_writer *w = img->priv;

    return w->stream ? stream_finish(img, w) : sparse_finish(img, w);
}
