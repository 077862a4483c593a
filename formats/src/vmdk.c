/*
 * vmdk.c - the VMDK driver: probing, opening and reading.  The layout is
 * in vmdk.h, descriptors in vmdk-desc.c, writing in vmdk-write.c.
 *
 * A disk is a list of extents (one for monolithicSparse and
 * streamOptimized files, whose descriptor is embedded; any number for a
 * descriptor file).  Sparse extents keep their grain directory in memory
 * and their grain tables in a small cache; a compressed grain is inflated
 * into a one-grain buffer that serves the next reads of the same grain.
 *
 * Extent files named by a descriptor file are opened by vmdk-desc.c,
 * read-only, with the rule that keeps a probed image inside its own
 * directory.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmdk.h"

static uint32_t get_le32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static uint64_t get_le64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

static bool vmdk_probe(const uint8_t *buf, size_t len, uint64_t file_size)
{
    if (len >= 4 && memcmp(buf, VMDK_MAGIC, 4) == 0)
        return true;
    return file_size <= VMDK_MAX_DESC && vmdk_desc_probe(buf, len);
}

/* ------------------------------------------------------------------ */
/* Opening a hosted sparse extent                                      */
/* ------------------------------------------------------------------ */

/* A stream whose header says VMDK_GD_AT_END has its real header in the
 * footer: footer marker, header, end-of-stream marker, the last three
 * sectors of the file.  Replaces *h with the footer's header. */
static int read_footer(const struct vmdk_extent *e, struct vmdk_header *h)
{
    uint8_t buf[3 * VMDK_SECTOR];
    struct vmdk_marker fm, eos;
    int ret;

    if (e->file_size < 4 * VMDK_SECTOR)
        return fmt_err(-EUCLEAN, "%s: the file is too short to hold the footer "
                       "its header announces", e->path);
    ret = fmt_pread_fd(e->fd, e->path, buf, sizeof(buf),
                       e->file_size - sizeof(buf), "footer");
    if (ret < 0)
        return ret;
    memcpy(&fm, buf, sizeof(fm));
    memcpy(h, buf + VMDK_SECTOR, sizeof(*h));
    memcpy(&eos, buf + 2 * VMDK_SECTOR, sizeof(eos));
    if (le32toh(fm.size) != 0 || le32toh(fm.type) != VMDK_MARKER_FOOTER ||
        memcmp(h->magic, VMDK_MAGIC, 4) != 0 || eos.val != 0 || eos.size != 0 ||
        le32toh(eos.type) != VMDK_MARKER_EOS)
        return fmt_err(-EUCLEAN, "%s: the header says the grain directory is at "
                       "the end, but the file does not end with a footer and an "
                       "end-of-stream marker", e->path);
    if (le64toh(h->gd_offset) == VMDK_GD_AT_END)
        return fmt_err(-EUCLEAN, "%s: the footer does not say where the grain "
                       "directory is", e->path);
    return 0;
}

/* Reads the descriptor embedded in a sparse extent into *d. */
static int read_embedded_desc(const struct vmdk_extent *e, const struct vmdk_header *h,
                              struct vmdk_desc *d)
{
    uint64_t sector = le64toh(h->desc_offset), count = le64toh(h->desc_size);
    char *text;
    int ret;

    if (sector == 0 || count == 0)
        return 0;   /* none: createType follows from the flags */
    if (count > VMDK_MAX_DESC / VMDK_SECTOR)
        return fmt_err(-EUCLEAN, "%s: the embedded descriptor of %llu sectors is "
                       "larger than %u KiB", e->path, (unsigned long long)count,
                       VMDK_MAX_DESC >> 10);
    if (sector > e->file_size / VMDK_SECTOR ||
        (sector + count) * VMDK_SECTOR > e->file_size)
        return fmt_err(-EUCLEAN, "%s: the descriptor at sector %llu is past the "
                       "end of the file", e->path, (unsigned long long)sector);
    text = malloc(count * VMDK_SECTOR);
    if (!text)
        return fmt_err(-ENOMEM, "%s: out of memory", e->path);
    ret = fmt_pread_fd(e->fd, e->path, text, count * VMDK_SECTOR,
                       sector * VMDK_SECTOR, "descriptor");
    if (ret == 0)
        ret = vmdk_desc_parse(e->path, text, strnlen(text, count * VMDK_SECTOR),
                              false, d);
    free(text);
    return ret;
}

int vmdk_sparse_open(struct vmdk_state *st, struct vmdk_extent *e,
                     struct vmdk_desc *d)
{
    struct vmdk_sparse *sp = &e->sp;
    struct vmdk_header h;
    uint64_t gs, gd_bytes, gt_bytes, per_gt, entries, cache_n = 0;
    uint16_t alg;
    int ret;

    ret = fmt_pread_fd(e->fd, e->path, &h, sizeof(h), 0, "sparse extent header");
    if (ret < 0)
        return ret;
    if (memcmp(h.magic, VMDK_COWD_MAGIC, 4) == 0)
        return fmt_err(-ENOTSUP, "%s: VMFS sparse (COWD) extents are not supported",
                       e->path);
    if (memcmp(h.magic, VMDK_MAGIC, 4) != 0)
        return fmt_err(-EUCLEAN, "%s: not a hosted sparse extent (no KDMV magic)",
                       e->path);
    if (le64toh(h.gd_offset) == VMDK_GD_AT_END) {
        ret = read_footer(e, &h);
        if (ret < 0)
            return ret;
    }

    sp->version = le32toh(h.version);
    sp->flags = le32toh(h.flags);
    if (sp->version < 1 || sp->version > 3)
        return fmt_err(-ENOTSUP, "%s: sparse extent version %u is not supported",
                       e->path, sp->version);
    if ((sp->flags & VMDK_FLAG_NL_TEST) && memcmp(h.nl_check, "\n \r\n", 4) != 0)
        return fmt_err(-EUCLEAN, "%s: the newline check bytes are wrong (the file "
                       "went through a text-mode transfer?)", e->path);
    alg = le16toh(h.compress_algorithm);
    if (alg > VMDK_COMPRESS_DEFLATE)
        return fmt_err(-ENOTSUP, "%s: compression algorithm %u is not supported",
                       e->path, alg);
    sp->compressed = alg == VMDK_COMPRESS_DEFLATE;
    sp->markers = sp->flags & VMDK_FLAG_MARKERS;
    sp->zero_gte = sp->flags & VMDK_FLAG_ZERO_GTE;
    sp->unclean = h.unclean_shutdown != 0;

    sp->capacity = le64toh(h.capacity);
    if (sp->capacity == 0)
        return fmt_err(-ENOTSUP, "%s: a sparse extent of capacity 0 is not "
                       "supported", e->path);
    if (sp->capacity > FMT_MAX_SIZE / VMDK_SECTOR)
        return fmt_err(-EFBIG, "%s: capacity %llu sectors is larger than %llu "
                       "bytes", e->path, (unsigned long long)sp->capacity,
                       (unsigned long long)FMT_MAX_SIZE);
    gs = le64toh(h.grain_size);
    if (gs == 0 || gs > VMDK_MAX_GRAIN_SECT || (gs & (gs - 1)))
        return fmt_err(-EUCLEAN, "%s: grain size %llu sectors is not supported",
                       e->path, (unsigned long long)gs);
    sp->grain_sectors = (uint32_t)gs;
    sp->gtes_per_gt = le32toh(h.gtes_per_gt);
    if (sp->gtes_per_gt == 0 || sp->gtes_per_gt > VMDK_MAX_GTES)
        return fmt_err(-EUCLEAN, "%s: %u entries per grain table is not supported "
                       "(1 to %u)", e->path, sp->gtes_per_gt, VMDK_MAX_GTES);
    if (le64toh(h.overhead) > (e->file_size + VMDK_SECTOR - 1) / VMDK_SECTOR)
        return fmt_err(-EUCLEAN, "%s: the file is truncated: %llu bytes, but its "
                       "metadata takes %llu sectors", e->path,
                       (unsigned long long)e->file_size,
                       (unsigned long long)le64toh(h.overhead));

    per_gt = gs * sp->gtes_per_gt;
    entries = (sp->capacity + per_gt - 1) / per_gt;
    gd_bytes = entries * 4;
    gt_bytes = (uint64_t)sp->gtes_per_gt * 4;
    if (gd_bytes > FMT_MAX_META_MEM - st->meta_mem)
        return fmt_err(-EFBIG, "%s: the grain directory of %llu entries needs "
                       "more than %u MiB of memory", e->path,
                       (unsigned long long)entries, FMT_MAX_META_MEM >> 20);
    sp->gd_entries = (uint32_t)entries;
    sp->gd_sector = le64toh(h.gd_offset);
    if (sp->gd_sector == 0)
        return fmt_err(-EUCLEAN, "%s: the header gives no grain directory",
                       e->path);
    if (sp->gd_sector > e->file_size / VMDK_SECTOR ||
        sp->gd_sector * VMDK_SECTOR + gd_bytes > e->file_size)
        return fmt_err(-EUCLEAN, "%s: the grain directory at sector %llu is past "
                       "the end of the file", e->path,
                       (unsigned long long)sp->gd_sector);
    sp->gd = malloc(gd_bytes);
    if (!sp->gd)
        return fmt_err(-ENOMEM, "%s: out of memory", e->path);
    st->meta_mem += gd_bytes;
    ret = fmt_pread_fd(e->fd, e->path, sp->gd, gd_bytes,
                       sp->gd_sector * VMDK_SECTOR, "grain directory");
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < sp->gd_entries; i++) {
        sp->gd[i] = le32toh(sp->gd[i]);
        if (sp->gd[i] == 0)
            continue;
        if ((uint64_t)sp->gd[i] * VMDK_SECTOR + gt_bytes > e->file_size)
            return fmt_err(-EUCLEAN, "%s: grain table %u at sector %u is past the "
                           "end of the file", e->path, i, sp->gd[i]);
        cache_n++;
    }

    /* Tables of grains the disk does not hold are never read: no more
     * entries than tables.  A quarter of the memory bound is shared by
     * the extents a descriptor names (1024 extents of 2 GiB: 8 each). */
    cache_n = MIN(cache_n, VMDK_GT_CACHE);
    cache_n = MIN(cache_n, FMT_MAX_META_MEM / 4 / MAX(st->desc.n_ext, 1u) / gt_bytes);
    cache_n = MAX(cache_n, 1);
    if (cache_n * gt_bytes > FMT_MAX_META_MEM - st->meta_mem)
        return fmt_err(-EFBIG, "%s: the grain tables need more than %u MiB of "
                       "memory", e->path, FMT_MAX_META_MEM >> 20);
    ret = fmt_tcache_new((unsigned)cache_n, gt_bytes, &sp->gtc);
    if (ret < 0)
        return fmt_err(ret, "%s: out of memory", e->path);
    st->meta_mem += cache_n * gt_bytes;

    if (d)
        return read_embedded_desc(e, &h, d);
    return 0;
}

static int open_monolithic(struct fmt_image *img, struct vmdk_state *st)
{
    struct vmdk_extent *e;
    int ret;

    st->ext = calloc(1, sizeof(*st->ext));
    if (!st->ext)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    st->n_ext = 1;
    e = &st->ext[0];
    e->type = VMDK_EXT_SPARSE;
    e->fd = img->fd;
    e->file_size = img->file_size;
    e->path = strdup(img->path);
    if (!e->path)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    ret = vmdk_sparse_open(st, e, &st->desc);
    if (ret < 0)
        return ret;
    e->len = e->sp.capacity * VMDK_SECTOR;
    img->size = e->len;
    if (!st->desc.create_type) {
        st->desc.create_type = strdup(e->sp.compressed ? "streamOptimized"
                                                       : "monolithicSparse");
        if (!st->desc.create_type)
            return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    }
    return 0;
}

static void free_state(struct vmdk_state *st)
{
    if (!st)
        return;
    for (unsigned i = 0; i < st->n_ext; i++) {
        struct vmdk_extent *e = &st->ext[i];
        if (e->own_fd)
            close(e->fd);
        free(e->path);
        free(e->sp.gd);
        fmt_tcache_free(e->sp.gtc);
    }
    free(st->ext);
    vmdk_desc_free(&st->desc);
    if (st->zs_ready)
        inflateEnd(&st->zs);
    free(st->zin);
    free(st->grain);
    free(st);
}

static int vmdk_open(struct fmt_image *img, const struct fmt_open_opts *opts)
{
    struct vmdk_state *st;
    char magic[4] = "";
    int ret;

    (void)opts;
    st = calloc(1, sizeof(*st));
    if (!st)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    if (img->file_size >= sizeof(magic)) {
        ret = fmt_pread(img, magic, sizeof(magic), 0, "header");
        if (ret < 0)
            goto out;
    }
    if (memcmp(magic, VMDK_MAGIC, 4) == 0)
        ret = open_monolithic(img, st);
    else if (memcmp(magic, VMDK_COWD_MAGIC, 4) == 0)
        ret = fmt_err(-ENOTSUP, "%s: VMFS sparse (COWD) images are not supported",
                      img->path);
    else
        ret = vmdk_desc_open(img, st);
    if (ret < 0)
        goto out;

    for (unsigned i = 0; i < st->n_ext && !st->first_sparse; i++)
        if (st->ext[i].type == VMDK_EXT_SPARSE)
            st->first_sparse = &st->ext[i].sp;

    /* A delta disk names its parent; it is reported, never opened here. */
    if (st->desc.parent_cid != VMDK_CID_NOPARENT && st->desc.parent_hint) {
        char *name = strdup(st->desc.parent_hint), *format = strdup("vmdk");

        if (!name || !format) {
            free(name);
            free(format);
            ret = fmt_err(-ENOMEM, "%s: out of memory", img->path);
            goto out;
        }
        img->backing_name = name;
        img->backing_format = format;
    }
    img->priv = st;
    return 0;
out:
    free_state(st);
    return ret;
}

/* ------------------------------------------------------------------ */
/* Status and reads                                                    */
/* ------------------------------------------------------------------ */

/* The extent holding byte off of the disk (off < img->size). */
static struct vmdk_extent *find_extent(struct vmdk_state *st, uint64_t off)
{
    unsigned lo = 0, hi = st->n_ext - 1;

    while (lo < hi) {
        unsigned mid = lo + (hi - lo + 1) / 2;
        if (st->ext[mid].start <= off)
            lo = mid;
        else
            hi = mid - 1;
    }
    return &st->ext[lo];
}

/* Sets *table to the grain table gt of e, or NULL when the GD says the
 * whole table is unallocated. */
static int get_gt(struct vmdk_extent *e, uint64_t gt, const uint8_t **table)
{
    const struct vmdk_sparse *sp = &e->sp;
    const void *t;
    int ret;

    if (sp->gd[gt] == 0) {
        *table = NULL;
        return 0;
    }
    ret = fmt_tcache_get(sp->gtc, e->fd, e->path, (uint64_t)sp->gd[gt] * VMDK_SECTOR,
                         "grain table", &t);
    *table = t;
    return ret;
}

/* The kind of grain gi whose GTE is v; checks that its data is inside the
 * file. */
static int classify(const struct vmdk_extent *e, uint64_t gi, uint32_t v,
                    enum fmt_kind *kind)
{
    const struct vmdk_sparse *sp = &e->sp;
    uint64_t gb = (uint64_t)sp->grain_sectors * VMDK_SECTOR, need;

    if (v == 0) {
        *kind = FMT_UNALLOC;
        return 0;
    }
    if (v == VMDK_GTE_ZERO && sp->zero_gte) {
        *kind = FMT_ZERO;
        return 0;
    }
    /* the last grain may be cut short by the capacity */
    if (sp->compressed)
        need = sp->markers ? VMDK_GRAIN_MARKER_SIZE + 1 : 1;
    else
        need = MIN(gb, sp->capacity * VMDK_SECTOR - gi * gb);
    if ((uint64_t)v * VMDK_SECTOR + need > e->file_size)
        return fmt_err(-EUCLEAN, "%s: grain %llu at sector %u is past the end of "
                       "the file", e->path, (unsigned long long)gi, v);
    *kind = FMT_DATA;
    return 0;
}

/* fmt_status of a sparse extent, from pos (relative to the extent) for at
 * most len bytes inside it: grains of one kind are merged, a GD entry of 0
 * skips its whole table. */
static int sparse_status(struct vmdk_extent *e, uint64_t pos, uint64_t len,
                         uint64_t *pnum, enum fmt_kind *kind)
{
    const struct vmdk_sparse *sp = &e->sp;
    uint64_t gb = (uint64_t)sp->grain_sectors * VMDK_SECTOR;
    uint64_t per_gt = gb * sp->gtes_per_gt;
    uint64_t cap = sp->capacity * VMDK_SECTOR, end, cur = pos;
    bool first = true;
    int ret;

    /* the last grain may be cut short by the capacity */
    end = MIN(pos + len, cap);
    while (cur < end) {
        uint64_t gt = cur / per_gt, gi = cur / gb;
        const uint8_t *table;
        enum fmt_kind k;

        ret = get_gt(e, gt, &table);
        if (ret < 0)
            return ret;
        if (!table) {
            if (!first && *kind != FMT_UNALLOC)
                break;
            *kind = FMT_UNALLOC;
            first = false;
            cur = MIN(end, (gt + 1) * per_gt);
            continue;
        }
        for (uint64_t i = gi % sp->gtes_per_gt; i < sp->gtes_per_gt && cur < end;
             i++, gi++) {
            ret = classify(e, gi, get_le32(table + i * 4), &k);
            if (ret < 0)
                return ret;
            if (!first && k != *kind)
                goto done;
            *kind = k;
            first = false;
            cur = MIN(end, (gi + 1) * gb);
        }
    }
done:
    *pnum = cur - pos;
    return 0;
}

/* fmt_status of a flat extent: holes in its file read as zeroes. */
static void flat_status(const struct vmdk_extent *e, uint64_t pos, uint64_t len,
                        uint64_t *pnum, enum fmt_kind *kind)
{
    off_t start = (off_t)(e->flat_offset + pos), end = start + (off_t)len;
    off_t d, h;

    *pnum = len;
    *kind = FMT_DATA;
    d = lseek(e->fd, start, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO)
            *kind = FMT_ZERO;   /* no data from here to the end of the file */
        return;
    }
    if (d > start) {
        d &= ~(off_t)(VMDK_SECTOR - 1);
        if (d > start) {
            *kind = FMT_ZERO;
            *pnum = (uint64_t)(MIN(d, end) - start);
        }
        return;
    }
    h = lseek(e->fd, start, SEEK_HOLE);
    if (h > start) {
        h = (h + VMDK_SECTOR - 1) & ~(off_t)(VMDK_SECTOR - 1);
        *pnum = (uint64_t)(MIN(h, end) - start);
    }
}

static int extent_status(struct vmdk_extent *e, uint64_t pos, uint64_t len,
                         uint64_t *pnum, enum fmt_kind *kind)
{
    switch (e->type) {
    case VMDK_EXT_ZERO:
        *pnum = len;
        *kind = FMT_ZERO;
        return 0;
    case VMDK_EXT_FLAT:
        flat_status(e, pos, len, pnum, kind);
        return 0;
    case VMDK_EXT_SPARSE:
        break;
    }
    return sparse_status(e, pos, len, pnum, kind);
}

static int vmdk_status(struct fmt_image *img, uint64_t off, uint64_t len,
                       uint64_t *pnum, enum fmt_kind *kind)
{
    struct vmdk_state *st = img->priv;
    struct vmdk_extent *e = find_extent(st, off);
    uint64_t done = 0;

    /* Runs of one kind continue into the next extents. */
    for (;;) {
        uint64_t pos = off + done - e->start, n = MIN(len - done, e->len - pos), got = 0;
        enum fmt_kind k = FMT_DATA;
        int ret = extent_status(e, pos, n, &got, &k);

        if (ret < 0)
            return ret;
        if (done && k != *kind)
            break;
        *kind = k;
        done += got;
        if (got < n || done == len || ++e == st->ext + st->n_ext)
            break;
    }
    *pnum = done;
    return 0;
}

/* Inflates grain gi of e, whose GTE is v, into st->grain (unless it holds
 * it already).  The output never exceeds the grain; a grain that inflates
 * to less than its extent holds is corrupt. */
static int inflate_grain(struct vmdk_state *st, struct vmdk_extent *e, uint64_t gi,
                         uint32_t v)
{
    const struct vmdk_sparse *sp = &e->sp;
    size_t gb = (size_t)sp->grain_sectors * VMDK_SECTOR, need, got;
    /* what deflate may take for a grain that does not compress, and some */
    uint64_t bound = compressBound(gb) + 1024, off = (uint64_t)v * VMDK_SECTOR, len;
    int ret, zr;

    if (st->grain_ext == e && st->grain_index == gi)
        return 0;
    need = (size_t)MIN((uint64_t)gb, sp->capacity * VMDK_SECTOR - gi * gb);
    if (sp->markers) {
        uint8_t m[VMDK_GRAIN_MARKER_SIZE];
        uint64_t lba;

        ret = fmt_pread_fd(e->fd, e->path, m, sizeof(m), off, "grain marker");
        if (ret < 0)
            return ret;
        lba = get_le64(m);
        len = get_le32(m + 8);
        /* the grain's sector in its extent; a disk of several extents
         * might count from the start of the disk */
        if (lba != gi * sp->grain_sectors &&
            lba != e->start / VMDK_SECTOR + gi * sp->grain_sectors)
            return fmt_err(-EUCLEAN, "%s: the marker at sector %u is for sector "
                           "%llu, not for the grain at sector %llu", e->path, v,
                           (unsigned long long)lba,
                           (unsigned long long)(gi * sp->grain_sectors));
        if (len == 0 || len > bound)
            return fmt_err(-EUCLEAN, "%s: the compressed grain at sector %u has an "
                           "impossible size of %llu bytes", e->path, v,
                           (unsigned long long)len);
        off += sizeof(m);
        if (off + len > e->file_size)
            return fmt_err(-EUCLEAN, "%s: the compressed grain at sector %u is past "
                           "the end of the file", e->path, v);
    } else {
        /* no marker: the length is unknown, the stream ends itself */
        len = MIN(bound, e->file_size - off);
    }

    if (st->zin_size < len) {
        uint8_t *p = realloc(st->zin, len);
        if (!p)
            return fmt_err(-ENOMEM, "%s: out of memory", e->path);
        st->zin = p;
        st->zin_size = len;
    }
    if (st->grain_size < gb) {
        uint8_t *p = realloc(st->grain, gb);
        if (!p)
            return fmt_err(-ENOMEM, "%s: out of memory", e->path);
        st->grain = p;
        st->grain_size = gb;
    }
    st->grain_ext = NULL;
    ret = fmt_pread_fd(e->fd, e->path, st->zin, len, off, "compressed grain");
    if (ret < 0)
        return ret;

    zr = st->zs_ready ? inflateReset(&st->zs) : inflateInit(&st->zs);
    if (zr != Z_OK)
        return fmt_err(-ENOMEM, "%s: cannot start zlib: %s", e->path,
                       st->zs.msg ? st->zs.msg : "out of memory");
    st->zs_ready = true;
    st->zs.next_in = st->zin;
    st->zs.avail_in = (uInt)len;
    st->zs.next_out = st->grain;
    st->zs.avail_out = (uInt)gb;
    zr = inflate(&st->zs, Z_FINISH);
    got = gb - st->zs.avail_out;
    if (zr != Z_STREAM_END) {
        if (st->zs.avail_out == 0)
            return fmt_err(-EUCLEAN, "%s: the compressed grain at sector %u "
                           "inflates to more than the grain size (%zu bytes)",
                           e->path, v, gb);
        return fmt_err(-EUCLEAN, "%s: the compressed grain at sector %u is "
                       "corrupt (zlib: %s)", e->path, v,
                       zr == Z_DATA_ERROR && st->zs.msg ? st->zs.msg
                                                        : "truncated data");
    }
    if (got < need)
        return fmt_err(-EUCLEAN, "%s: the compressed grain at sector %u inflates "
                       "to %zu bytes, short of the grain's %zu", e->path, v, got,
                       need);
    memset(st->grain + got, 0, gb - got);
    st->grain_ext = e;
    st->grain_index = gi;
    return 0;
}

/* Reads [pos, pos + len) of a sparse extent: grains that follow each other
 * in the file are read with one pread. */
static int sparse_read(struct vmdk_state *st, struct vmdk_extent *e, uint8_t *buf,
                       uint64_t pos, size_t len)
{
    const struct vmdk_sparse *sp = &e->sp;
    uint64_t gb = (uint64_t)sp->grain_sectors * VMDK_SECTOR;
    uint64_t run_off = 0, table_gt = UINT64_MAX;
    const uint8_t *table = NULL;
    uint8_t *run_buf = buf;
    size_t run_len = 0;
    int ret = 0;

    while (len > 0) {
        uint64_t gi = pos / gb, in = pos % gb, gt = gi / sp->gtes_per_gt;
        size_t n = (size_t)MIN((uint64_t)len, gb - in);
        enum fmt_kind k;
        uint32_t v = 0;

        if (gt != table_gt) {
            ret = get_gt(e, gt, &table);
            if (ret < 0)
                return ret;
            table_gt = gt;
        }
        if (table)
            v = get_le32(table + (gi % sp->gtes_per_gt) * 4);
        ret = classify(e, gi, v, &k);
        if (ret < 0)
            return ret;

        if (k == FMT_DATA && !sp->compressed &&
            (uint64_t)v * VMDK_SECTOR + in == run_off + run_len && run_len) {
            run_len += n;
        } else {
            if (run_len) {
                ret = fmt_pread_fd(e->fd, e->path, run_buf, run_len, run_off,
                                   "grain");
                if (ret < 0)
                    return ret;
                run_len = 0;
            }
            if (k != FMT_DATA) {
                memset(buf, 0, n);
            } else if (sp->compressed) {
                ret = inflate_grain(st, e, gi, v);
                if (ret < 0)
                    return ret;
                memcpy(buf, st->grain + in, n);
            } else {
                run_off = (uint64_t)v * VMDK_SECTOR + in;
                run_buf = buf;
                run_len = n;
            }
        }
        buf += n;
        pos += n;
        len -= n;
    }
    if (run_len)
        ret = fmt_pread_fd(e->fd, e->path, run_buf, run_len, run_off, "grain");
    return ret;
}

static int vmdk_read(struct fmt_image *img, void *buf, uint64_t off, size_t len)
{
    struct vmdk_state *st = img->priv;
    struct vmdk_extent *e = find_extent(st, off);
    uint8_t *p = buf;

    while (len > 0) {
        uint64_t pos = off - e->start;
        size_t n = (size_t)MIN((uint64_t)len, e->len - pos);
        int ret = 0;

        switch (e->type) {
        case VMDK_EXT_ZERO:
            memset(p, 0, n);
            break;
        case VMDK_EXT_FLAT:
            ret = fmt_pread_fd(e->fd, e->path, p, n, e->flat_offset + pos,
                               "flat extent data");
            break;
        case VMDK_EXT_SPARSE:
            ret = sparse_read(st, e, p, pos, n);
            break;
        }
        if (ret < 0)
            return ret;
        p += n;
        off += n;
        len -= n;
        e++;
    }
    return 0;
}

static void vmdk_info(struct fmt_image *img, fmt_info_fn cb, void *opaque)
{
    struct vmdk_state *st = img->priv;
    const struct vmdk_sparse *sp = st->first_sparse;
    bool compressed = false, unclean = false;
    char s[32];

    cb(opaque, "subformat", st->desc.create_type, false);
    for (unsigned i = 0; i < st->n_ext; i++) {
        if (st->ext[i].type == VMDK_EXT_SPARSE) {
            compressed = compressed || st->ext[i].sp.compressed;
            unclean = unclean || st->ext[i].sp.unclean;
        }
    }
    if (sp) {
        snprintf(s, sizeof(s), "%llu",
                 (unsigned long long)sp->grain_sectors * VMDK_SECTOR);
        cb(opaque, "grain-size", s, true);
        snprintf(s, sizeof(s), "%u", sp->version);
        cb(opaque, "version", s, true);
    }
    cb(opaque, "compressed", compressed ? "true" : "false", false);
    snprintf(s, sizeof(s), "%u", st->n_ext);
    cb(opaque, "extents", s, true);
    if (unclean)
        cb(opaque, "unclean-shutdown", "true", false);
    if (st->desc.has_cid) {
        snprintf(s, sizeof(s), "%08x", st->desc.cid);
        cb(opaque, "cid", s, false);
    }
    if (st->desc.parent_cid != VMDK_CID_NOPARENT) {
        snprintf(s, sizeof(s), "%08x", st->desc.parent_cid);
        cb(opaque, "parent-cid", s, false);
    }
}

static void vmdk_close(struct fmt_image *img)
{
    if (img->writing)
        vmdk_write_close(img);
    else
        free_state(img->priv);
    img->priv = NULL;
}

const struct fmt_driver fmt_vmdk_driver = {
    .name = "vmdk",
    .probe = vmdk_probe,
    .open = vmdk_open,
    .status = vmdk_status,
    .read = vmdk_read,
    .info = vmdk_info,
    .create = vmdk_create,
    .write = vmdk_write,
    .write_zeroes = NULL,
    .finish = vmdk_finish,
    .close = vmdk_close,
};
