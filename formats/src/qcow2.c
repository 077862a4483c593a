/*
 * qcow2.c - reading qcow2 images, versions 2 and 3 (layout in qcow2.h),
 * and the driver table; writing is in qcow2-write.c.
 *
 * Open checks the header, its extensions and every L1 entry, and keeps
 * the L1 table in memory; L2 tables go through a small cache and each
 * entry is checked when status or read meets it.  Nothing an image names
 * is opened: the backing file's name and format are only reported.
 *
 * Not supported (-ENOTSUP): encryption, external data files, zstd.
 * Snapshots, bitmaps and refcounts are not read: the active L1 table is
 * all a reader needs.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define ALIGN_UP(x, a)  (((x) + (a) - 1) / (a) * (a))

/* L2 tables cached: about 16 MiB, but the cache is searched linearly on
 * a miss, so not more than a thousand tables (small clusters), and a few
 * at least (2 MiB clusters). */
#define L2_CACHE_BYTES  (16u << 20)
#define L2_CACHE_MAX    1024u
#define L2_CACHE_MIN    8u

/* ------------------------------------------------------------------ */
/* Probe and header                                                    */
/* ------------------------------------------------------------------ */

/* The magic alone: a qcow2 of a version we do not read is then refused
 * with the reason, not read as raw bytes. */
static bool qcow2_probe(const uint8_t *buf, size_t len, uint64_t file_size)
{
    (void)file_size;
    return len >= 4 && qcow2_be32(buf) == QCOW2_MAGIC;
}

/* Reads the header into *h in host byte order; the fields a version 2
 * header or a short version 3 header lacks read as zero, which the
 * specification makes the same as absent. */
static int read_header(struct fmt_image *img, struct qcow2_header *h)
{
    uint8_t raw[sizeof(*h)] = { 0 };
    int ret;

    if (img->file_size < QCOW2_V2_HEADER_LEN)
        return fmt_err(-EUCLEAN, "%s: the file (%" PRIu64 " bytes) is too short for "
                       "a qcow2 header", img->path, img->file_size);
    ret = fmt_pread(img, raw, MIN(sizeof(raw), img->file_size), 0, "qcow2 header");
    if (ret < 0)
        return ret;
    memcpy(h, raw, sizeof(*h));
    h->magic = be32toh(h->magic);
    h->version = be32toh(h->version);
    h->backing_file_offset = be64toh(h->backing_file_offset);
    h->backing_file_size = be32toh(h->backing_file_size);
    h->cluster_bits = be32toh(h->cluster_bits);
    h->size = be64toh(h->size);
    h->crypt_method = be32toh(h->crypt_method);
    h->l1_size = be32toh(h->l1_size);
    h->l1_table_offset = be64toh(h->l1_table_offset);
    h->refcount_table_offset = be64toh(h->refcount_table_offset);
    h->refcount_table_clusters = be32toh(h->refcount_table_clusters);
    h->nb_snapshots = be32toh(h->nb_snapshots);
    h->snapshots_offset = be64toh(h->snapshots_offset);
    h->incompatible_features = be64toh(h->incompatible_features);
    h->compatible_features = be64toh(h->compatible_features);
    h->autoclear_features = be64toh(h->autoclear_features);
    h->refcount_order = be32toh(h->refcount_order);
    h->header_length = be32toh(h->header_length);

    if (h->magic != QCOW2_MAGIC)
        return fmt_err(-EUCLEAN, "%s: not a qcow2 image (bad magic)", img->path);
    if (h->version != 2 && h->version != 3)
        return fmt_err(-ENOTSUP, "%s: qcow2 version %u is not supported (2 or 3)",
                       img->path, h->version);
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return fmt_err(-EUCLEAN, "%s: cluster_bits %u is outside %u..%u", img->path,
                       h->cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
    if (h->version == 2) {
        memset((uint8_t *)h + QCOW2_V2_HEADER_LEN, 0, sizeof(*h) - QCOW2_V2_HEADER_LEN);
        h->refcount_order = QCOW2_REFCOUNT_ORDER;
        h->header_length = QCOW2_V2_HEADER_LEN;
        return 0;
    }
    if (img->file_size < QCOW2_V3_HEADER_LEN)
        return fmt_err(-EUCLEAN, "%s: the file (%" PRIu64 " bytes) is too short for "
                       "a qcow2 version 3 header", img->path, img->file_size);
    if (h->header_length < QCOW2_V3_HEADER_LEN || h->header_length % 8 ||
        h->header_length > (1u << h->cluster_bits) || h->header_length > img->file_size)
        return fmt_err(-EUCLEAN, "%s: header_length %u is not a multiple of 8 from %u "
                       "to the cluster size or file size", img->path, h->header_length,
                       QCOW2_V3_HEADER_LEN);
    if (h->header_length <= QCOW2_V3_HEADER_LEN)
        h->compression_type = 0;
    if (h->refcount_order > 6)
        return fmt_err(-EUCLEAN, "%s: refcount_order %u is larger than 6", img->path,
                       h->refcount_order);
    return 0;
}

/* The incompatible features: the names of unknown ones come from the
 * image's feature name table when it has one. */
static int check_features(struct fmt_image *img, const struct qcow2_header *h,
                          const struct qcow2_feature *names, size_t n_names)
{
    uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;

    if (unknown) {
        char list[256] = "";
        size_t used = 0;

        for (unsigned bit = 0; bit < 64; bit++) {
            const char *name = NULL;
            int len = 0;

            if (!(unknown & (1ull << bit)))
                continue;
            for (size_t i = 0; i < n_names; i++) {
                if (names[i].type == 0 && names[i].bit == bit) {
                    name = names[i].name;
                    len = (int)strnlen(name, sizeof(names[i].name));
                }
            }
            if (used < sizeof(list))
                used += (size_t)snprintf(list + used, sizeof(list) - used,
                                         name ? "%s%u (%.*s)" : "%s%u",
                                         used ? ", " : "", bit, len, name);
        }
        return fmt_err(-ENOTSUP, "%s: uses unknown incompatible qcow2 features: bit %s",
                       img->path, list);
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
        return fmt_err(-ENOTSUP, "%s: keeps its data in an external data file, which "
                       "is not supported", img->path);
    if (h->crypt_method != 0)
        return fmt_err(-ENOTSUP, "%s: is encrypted (%s), which is not supported",
                       img->path, h->crypt_method == 1 ? "AES" :
                       h->crypt_method == 2 ? "LUKS" : "unknown method");
    if (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        if (h->compression_type == QCOW2_COMPRESSION_ZSTD)
            return fmt_err(-ENOTSUP, "%s: compresses clusters with zstd, which is not "
                           "supported (only zlib)", img->path);
        if (h->compression_type == QCOW2_COMPRESSION_ZLIB)
            return fmt_err(-EUCLEAN, "%s: the compression type bit is set but the "
                           "compression type is zlib (0)", img->path);
        return fmt_err(-ENOTSUP, "%s: compression type %u is not supported",
                       img->path, h->compression_type);
    }
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB)
        return fmt_err(-EUCLEAN, "%s: compression type %u without the compression "
                       "type bit", img->path, h->compression_type);
    if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
        h->cluster_bits < QCOW2_MIN_EXTL2_BITS)
        return fmt_err(-EUCLEAN, "%s: extended L2 entries need clusters of at least "
                       "%u bytes, not %u", img->path, 1u << QCOW2_MIN_EXTL2_BITS,
                       1u << h->cluster_bits);
    return 0;
}

/* Copies a string of the header area: not NUL-terminated on disk, and
 * one with a NUL inside would not be the name it seems to be. */
static int header_string(struct fmt_image *img, const uint8_t *p, size_t len,
                         const char *what, char **out)
{
    if (memchr(p, 0, len))
        return fmt_err(-EUCLEAN, "%s: the %s contains a NUL byte", img->path, what);
    *out = strndup((const char *)p, len);
    if (!*out)
        return fmt_err(-ENOMEM, "out of memory");
    return 0;
}

/* Walks the header extensions in area (the first cluster, or as much of
 * it as the file has), up to the backing file name when there is one. */
static int read_extensions(struct fmt_image *img, const struct qcow2_header *h,
                           const uint8_t *area, size_t area_len,
                           const struct qcow2_feature **names, size_t *n_names)
{
    uint64_t end = area_len, off = h->header_length;
    int ret;

    if (h->backing_file_offset && h->backing_file_offset < end)
        end = h->backing_file_offset;
    while (off + sizeof(struct qcow2_ext) <= end) {
        uint32_t type = qcow2_be32(area + off);
        uint32_t len = qcow2_be32(area + off + 4);
        const uint8_t *data = area + off + sizeof(struct qcow2_ext);

        if (type == QCOW2_EXT_END)
            break;
        if (len > end - off - sizeof(struct qcow2_ext))
            return fmt_err(-EUCLEAN, "%s: header extension 0x%08x at offset %" PRIu64
                           " (%u bytes) runs past the header area (%" PRIu64 " bytes)",
                           img->path, type, off, len, end);
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (img->backing_format)
                return fmt_err(-EUCLEAN, "%s: two backing format header extensions",
                               img->path);
            if (len > QCOW2_MAX_BACKING_NAME)
                return fmt_err(-EUCLEAN, "%s: backing format name of %u bytes is too "
                               "long", img->path, len);
            ret = header_string(img, data, len, "backing format name",
                                &img->backing_format);
            if (ret < 0)
                return ret;
            break;
        case QCOW2_EXT_FEATURE_NAMES:
            *names = (const struct qcow2_feature *)data;
            *n_names = len / sizeof(struct qcow2_feature);
            break;
        case QCOW2_EXT_DATA_FILE:
            return fmt_err(-ENOTSUP, "%s: names an external data file, which is not "
                           "supported", img->path);
        case QCOW2_EXT_CRYPTO:
            return fmt_err(-ENOTSUP, "%s: has a disk encryption header, which is not "
                           "supported", img->path);
        default:            /* bitmaps, and what a later qemu adds */
            break;
        }
        off += sizeof(struct qcow2_ext) + ALIGN_UP((uint64_t)len, 8);
    }
    return 0;
}

/* The backing file name: qemu keeps it in the first cluster, after the
 * extensions, at most 1023 bytes. */
static int read_backing_name(struct fmt_image *img, const struct qcow2_header *h,
                             const uint8_t *area, size_t area_len)
{
    uint64_t off = h->backing_file_offset, len = h->backing_file_size;

    if (off == 0 || len == 0) {
        /* A format without a file to go with it means nothing. */
        free(img->backing_format);
        img->backing_format = NULL;
        return 0;
    }
    if (len > QCOW2_MAX_BACKING_NAME)
        return fmt_err(-EUCLEAN, "%s: backing file name of %" PRIu64 " bytes is longer "
                       "than %u", img->path, len, QCOW2_MAX_BACKING_NAME);
    if (off < h->header_length || off > area_len || len > area_len - off)
        return fmt_err(-EUCLEAN, "%s: backing file name at offset %" PRIu64 " (%" PRIu64
                       " bytes) is outside the header cluster or the file", img->path,
                       off, len);
    return header_string(img, area + off, (size_t)len, "backing file name",
                         &img->backing_name);
}

/* Reads and checks the L1 entries that cover the virtual size (a longer
 * table maps nothing a reader can reach). */
static int read_l1(struct fmt_image *img, struct qcow2 *q, const struct qcow2_header *h)
{
    uint64_t cs = q->cluster_size, bytes = q->l1_size * 8;
    int ret;

    if (h->l1_size < q->l1_size)
        return fmt_err(-EUCLEAN, "%s: the L1 table has %u entries, the virtual size "
                       "needs %" PRIu64, img->path, h->l1_size, q->l1_size);
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return fmt_err(-EUCLEAN, "%s: the L1 table of %u entries is larger than %u MiB",
                       img->path, h->l1_size, QCOW2_MAX_L1_BYTES >> 20);
    if (q->l1_size == 0)
        return 0;
    if (h->l1_table_offset % cs || h->l1_table_offset == 0)
        return fmt_err(-EUCLEAN, "%s: the L1 table offset 0x%" PRIx64 " is not a cluster "
                       "after the header", img->path, h->l1_table_offset);
    if (h->l1_table_offset > img->file_size || bytes > img->file_size - h->l1_table_offset)
        return fmt_err(-EUCLEAN, "%s: the L1 table at offset 0x%" PRIx64 " (%" PRIu64
                       " bytes) is past the end of the file", img->path,
                       h->l1_table_offset, bytes);
    /* Read in place, then made host order entry by entry: the table may
     * be 32 MiB, not to be held twice. */
    q->l1 = malloc(bytes);
    if (!q->l1)
        return fmt_err(-ENOMEM, "out of memory");
    ret = fmt_pread(img, q->l1, bytes, h->l1_table_offset, "L1 table");
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < q->l1_size; i++) {
        uint64_t e = qcow2_be64(&q->l1[i]), off = e & QCOW2_L1_OFFSET_MASK;

        if (e & QCOW2_L1_RESERVED)
            return fmt_err(-EUCLEAN, "%s: L1 entry %" PRIu64 " (0x%016" PRIx64 ") has "
                           "reserved bits set", img->path, i, e);
        if (off % cs)
            return fmt_err(-EUCLEAN, "%s: L2 table of L1 entry %" PRIu64 " at offset 0x%"
                           PRIx64 " is not aligned to a cluster", img->path, i, off);
        /* Bit 63 alone (offset 0) is unallocated, as qemu reads it. */
        if (off && (img->file_size < cs || off > img->file_size - cs))
            return fmt_err(-EUCLEAN, "%s: L2 table of L1 entry %" PRIu64 " at offset 0x%"
                           PRIx64 " is past the end of the file", img->path, i, off);
        q->l1[i] = off;
    }
    return 0;
}

static int qcow2_open(struct fmt_image *img, const struct fmt_open_opts *opts)
{
    const struct qcow2_feature *names = NULL;
    struct qcow2_header h;
    struct qcow2 *q;
    uint8_t *area = NULL;
    size_t area_len, n_names = 0;
    unsigned entries;
    int ret;

    (void)opts;
    q = calloc(1, sizeof(*q));
    if (!q)
        return fmt_err(-ENOMEM, "out of memory");
    img->priv = q;
    ret = read_header(img, &h);
    if (ret < 0)
        return ret;
    q->version = h.version;
    q->cluster_bits = h.cluster_bits;
    q->cluster_size = 1u << h.cluster_bits;
    q->incompat = h.incompatible_features;
    q->compat = h.compatible_features;
    q->refcount_order = h.refcount_order;
    q->nb_snapshots = h.nb_snapshots;

    /* The header cluster holds the extensions and the backing name. */
    area_len = (size_t)MIN((uint64_t)q->cluster_size, img->file_size);
    area = malloc(area_len);
    if (!area)
        return fmt_err(-ENOMEM, "out of memory");
    ret = fmt_pread(img, area, area_len, 0, "qcow2 header cluster");
    if (ret < 0)
        goto out;
    ret = read_extensions(img, &h, area, area_len, &names, &n_names);
    if (ret < 0)
        goto out;
    ret = check_features(img, &h, names, n_names);
    if (ret < 0)
        goto out;
    ret = read_backing_name(img, &h, area, area_len);
    if (ret < 0)
        goto out;

    q->extended_l2 = h.incompatible_features & QCOW2_INCOMPAT_EXTL2;
    q->entry_size = q->extended_l2 ? 16 : 8;
    q->l2_bits = q->cluster_bits - (q->extended_l2 ? 4 : 3);
    q->sub_bits = q->cluster_bits - (q->extended_l2 ? 5 : 0);
    if (h.size > FMT_MAX_SIZE) {
        ret = fmt_err(-EFBIG, "%s: virtual size %" PRIu64 " is larger than %llu",
                      img->path, h.size, FMT_MAX_SIZE);
        goto out;
    }
    /* qemu allows any size; ours are sectors, the padding reads as zero. */
    q->header_size = h.size;
    img->size = ALIGN_UP(h.size, (uint64_t)FMT_SECTOR);
    q->l1_size = (img->size + (1ull << (q->cluster_bits + q->l2_bits)) - 1) >>
                 (q->cluster_bits + q->l2_bits);
    if (q->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        ret = fmt_err(-EFBIG, "%s: %" PRIu64 " bytes with %u-byte clusters need an L1 "
                      "table larger than %u MiB", img->path, img->size,
                      q->cluster_size, QCOW2_MAX_L1_BYTES >> 20);
        goto out;
    }
    ret = read_l1(img, q, &h);
    if (ret < 0)
        goto out;

    entries = (unsigned)MAX(L2_CACHE_MIN, MIN(L2_CACHE_MAX,
                                              L2_CACHE_BYTES / q->cluster_size));
    ret = fmt_tcache_new(entries, q->cluster_size, &q->l2_cache);
out:
    free(area);
    return ret;
}

/* ------------------------------------------------------------------ */
/* L2 entries                                                          */
/* ------------------------------------------------------------------ */

/* One L2 entry, checked, as bitmaps over the cluster's subclusters (one
 * bit for the whole cluster without extended L2 entries). */
struct map {
    uint32_t data;          /* read from host (+ the subcluster's place) */
    uint32_t zero;          /* reads as zeroes */
    uint64_t host;          /* standard: the host cluster */
    uint64_t zentry;        /* compressed: the entry, 0 otherwise */
    uint64_t coff;          /* compressed: where the deflate data is */
    size_t clen;
};

static int decode_compressed(struct fmt_image *img, struct qcow2 *q, uint64_t e,
                             uint64_t guest, struct map *m)
{
    unsigned x = 62 - (q->cluster_bits - 8);
    uint64_t coff = e & ((1ull << x) - 1);
    uint64_t sectors = ((e >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;

    if (coff & ~QCOW2_L2_OFFSET_MASK & ~0x1ffull)
        return fmt_err(-EUCLEAN, "%s: compressed cluster of guest offset 0x%" PRIx64
                       " (0x%016" PRIx64 ") has reserved bits set", img->path, guest, e);
    if (coff < q->cluster_size)
        return fmt_err(-EUCLEAN, "%s: compressed cluster of guest offset 0x%" PRIx64
                       " at host offset 0x%" PRIx64 " overlaps the header", img->path,
                       guest, coff);
    if (coff >= img->file_size)
        return fmt_err(-EUCLEAN, "%s: compressed cluster of guest offset 0x%" PRIx64
                       " at host offset 0x%" PRIx64 " is past the end of the file",
                       img->path, guest, coff);
    m->zentry = e;
    m->coff = coff;
    /* The sectors count from the one holding coff; the last may be cut
     * short by the end of the file. */
    m->clen = (size_t)MIN(sectors * QCOW2_COMPRESSED_SECTOR - (coff % QCOW2_COMPRESSED_SECTOR),
                          img->file_size - coff);
    m->data = q->extended_l2 ? UINT32_MAX : 1;
    return 0;
}

/* Decodes entry idx of the L2 table l2; guest is the guest offset of its
 * cluster (for messages). */
static int decode(struct fmt_image *img, struct qcow2 *q, const uint8_t *l2,
                  uint64_t idx, uint64_t guest, struct map *m)
{
    const uint8_t *p = l2 + idx * q->entry_size;
    uint64_t e = qcow2_be64(p), bitmap = q->extended_l2 ? qcow2_be64(p + 8) : 0;
    uint64_t reserved = QCOW2_L2_RESERVED;

    memset(m, 0, sizeof(*m));
    if (e & QCOW2_OFLAG_COMPRESSED) {
        if (bitmap)
            return fmt_err(-EUCLEAN, "%s: compressed cluster of guest offset 0x%" PRIx64
                           " has a subcluster bitmap (0x%016" PRIx64 ")", img->path,
                           guest, bitmap);
        return decode_compressed(img, q, e, guest, m);
    }
    /* The zero flag is a version 3 feature, and extended entries say it
     * per subcluster instead. */
    if (q->version == 2 || q->extended_l2)
        reserved |= QCOW2_OFLAG_ZERO;
    if (e & reserved)
        return fmt_err(-EUCLEAN, "%s: L2 entry of guest offset 0x%" PRIx64 " (0x%016"
                       PRIx64 ") has reserved bits set", img->path, guest, e);
    m->host = e & QCOW2_L2_OFFSET_MASK;
    if (m->host % q->cluster_size)
        return fmt_err(-EUCLEAN, "%s: data cluster of guest offset 0x%" PRIx64 " at host "
                       "offset 0x%" PRIx64 " is not aligned to a cluster", img->path,
                       guest, m->host);
    if (q->extended_l2) {
        m->data = (uint32_t)bitmap;
        m->zero = (uint32_t)(bitmap >> 32);
        if (m->data & m->zero)
            return fmt_err(-EUCLEAN, "%s: subclusters 0x%08x of guest offset 0x%" PRIx64
                           " are both allocated and zero", img->path, m->data & m->zero,
                           guest);
    } else if (e & QCOW2_OFLAG_ZERO) {
        m->zero = 1;
    } else if (m->host) {
        m->data = 1;
    } else if (e & QCOW2_OFLAG_COPIED) {
        /* Host offset 0 is only meaningful with an external data file. */
        return fmt_err(-EUCLEAN, "%s: data cluster of guest offset 0x%" PRIx64 " is at "
                       "host offset 0 (the header)", img->path, guest);
    }
    if (!m->data)
        return 0;
    if (!m->host)
        return fmt_err(-EUCLEAN, "%s: L2 entry of guest offset 0x%" PRIx64 " has "
                       "allocated subclusters but no host cluster", img->path, guest);
    /* The start must be in the file; a short last cluster (qemu may leave
     * one) reads as zeroes past the end. */
    if (m->host >= img->file_size)
        return fmt_err(-EUCLEAN, "%s: data cluster of guest offset 0x%" PRIx64 " at host "
                       "offset 0x%" PRIx64 " is past the end of the file", img->path,
                       guest, m->host);
    return 0;
}

static enum fmt_kind sub_kind(const struct map *m, unsigned sub)
{
    if (m->data & (1u << sub))
        return FMT_DATA;
    return (m->zero & (1u << sub)) ? FMT_ZERO : FMT_UNALLOC;
}

static int get_l2(struct fmt_image *img, struct qcow2 *q, uint64_t l1_index,
                  const uint8_t **l2)
{
    const void *t;
    int ret = fmt_tcache_get(q->l2_cache, img->fd, img->path, q->l1[l1_index],
                             "L2 table", &t);

    *l2 = t;
    return ret;
}

static int not_readable(struct fmt_image *img)
{
    return fmt_err(-EINVAL, "%s: a qcow2 image being written cannot be read", img->path);
}

/* ------------------------------------------------------------------ */
/* Walking the tables                                                  */
/* ------------------------------------------------------------------ */

/* Called for each piece of a walk: [pos, next) lies in one subcluster (or
 * is a whole L1 entry's range without an L2 table: m NULL) and holds kind;
 * cstart is the start of its cluster.  Returns 0 to go on, 1 to stop, or
 * a negative errno. */
typedef int (*piece_fn)(void *opaque, uint64_t pos, uint64_t next, uint64_t cstart,
                        const struct map *m, enum fmt_kind kind);

/* Walks [off, end) through L1 and L2 in pieces (status and read share
 * it).  Returns 0 or a negative errno. */
static int walk(struct fmt_image *img, struct qcow2 *q, uint64_t off, uint64_t end,
                piece_fn fn, void *opaque)
{
    const unsigned l1_shift = q->cluster_bits + q->l2_bits;
    const uint64_t l2_mask = (1ull << q->l2_bits) - 1;
    uint64_t pos = off;
    int ret;

    if (!q->l1 && q->l1_size)
        return not_readable(img);
    while (pos < end) {
        uint64_t l1i = pos >> l1_shift, l1_end = MIN(end, (l1i + 1) << l1_shift);
        const uint8_t *l2;

        if (!q->l1[l1i]) {  /* no L2 table: its whole range at once */
            ret = fn(opaque, pos, l1_end, pos, NULL, FMT_UNALLOC);
            if (ret)
                return ret < 0 ? ret : 0;
            pos = l1_end;
            continue;
        }
        ret = get_l2(img, q, l1i, &l2);
        if (ret < 0)
            return ret;
        while (pos < l1_end) {
            uint64_t cstart = pos >> q->cluster_bits << q->cluster_bits;
            uint64_t cend = MIN(l1_end, cstart + q->cluster_size);
            struct map m;

            ret = decode(img, q, l2, (pos >> q->cluster_bits) & l2_mask, cstart, &m);
            if (ret < 0)
                return ret;
            while (pos < cend) {
                unsigned sub = (unsigned)((pos - cstart) >> q->sub_bits);
                uint64_t next = MIN(cend, cstart + ((uint64_t)(sub + 1) << q->sub_bits));

                ret = fn(opaque, pos, next, cstart, &m, sub_kind(&m, sub));
                if (ret)
                    return ret < 0 ? ret : 0;
                pos = next;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Status                                                              */
/* ------------------------------------------------------------------ */

struct status_walk {
    bool have;
    enum fmt_kind kind;
    uint64_t end;           /* of the run so far */
};

/* Extends the run while the kind stays the same. */
static int status_piece(void *opaque, uint64_t pos, uint64_t next, uint64_t cstart,
                        const struct map *m, enum fmt_kind kind)
{
    struct status_walk *w = opaque;

    (void)pos;
    (void)cstart;
    (void)m;
    if (w->have && kind != w->kind)
        return 1;
    w->have = true;
    w->kind = kind;
    w->end = next;
    return 0;
}

static int qcow2_status(struct fmt_image *img, uint64_t off, uint64_t len,
                        uint64_t *pnum, enum fmt_kind *kind)
{
    struct status_walk w = { .kind = FMT_UNALLOC, .end = off };
    int ret = walk(img, img->priv, off, off + len, status_piece, &w);

    if (ret < 0)
        return ret;
    *pnum = w.end - off;
    *kind = w.kind;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

/* Inflates the compressed cluster m into q->zout, unless it is there
 * already (reads of one cluster come in runs).  The output buffer is
 * exactly one cluster: inflate stops there, so a deflate bomb costs no
 * more than a cluster, and anything shorter is corrupt. */
static int inflate_cluster(struct fmt_image *img, struct qcow2 *q, const struct map *m,
                           uint64_t guest)
{
    int ret, zret;

    if (q->zout_entry == m->zentry)
        return 0;
    if (!q->zout) {
        q->zin = malloc(2 * (size_t)q->cluster_size);
        q->zout = malloc(q->cluster_size);
        if (!q->zin || !q->zout)
            return fmt_err(-ENOMEM, "out of memory");
    }
    if (!q->zs_ready) {
        /* Raw deflate; qemu writes with a 4 KiB window (-12), a 32 KiB
         * window reads those and any other writer's too. */
        if (inflateInit2(&q->zs, -15) != Z_OK)
            return fmt_err(-ENOMEM, "%s: cannot start zlib", img->path);
        q->zs_ready = true;
    } else if (inflateReset(&q->zs) != Z_OK) {
        return fmt_err(-EIO, "%s: cannot reset zlib", img->path);
    }
    q->zout_entry = 0;
    ret = fmt_pread(img, q->zin, m->clen, m->coff, "compressed cluster");
    if (ret < 0)
        return ret;
    q->zs.next_in = q->zin;
    q->zs.avail_in = (uInt)m->clen;
    q->zs.next_out = q->zout;
    q->zs.avail_out = q->cluster_size;
    zret = inflate(&q->zs, Z_FINISH);
    /* A full cluster is the end, whether or not the stream said so. */
    if (q->zs.avail_out != 0 ||
        (zret != Z_STREAM_END && zret != Z_OK && zret != Z_BUF_ERROR))
        return fmt_err(-EUCLEAN, "%s: compressed cluster of guest offset 0x%" PRIx64
                       " at host offset 0x%" PRIx64 " (%zu bytes) does not inflate to "
                       "%u bytes%s%s", img->path, guest, m->coff, m->clen,
                       q->cluster_size, q->zs.msg ? ": " : "",
                       q->zs.msg ? q->zs.msg : "");
    q->zout_entry = m->zentry;
    return 0;
}

/* A run of data contiguous in the buffer and in the file. */
struct run {
    uint8_t *buf;
    uint64_t host;
    size_t len;
};

static int run_flush(struct fmt_image *img, struct run *r)
{
    size_t in = r->host < img->file_size ?
                (size_t)MIN((uint64_t)r->len, img->file_size - r->host) : 0;
    int ret = 0;

    if (in)
        ret = fmt_pread(img, r->buf, in, r->host, "data cluster");
    memset(r->buf + in, 0, r->len - in);    /* a short last cluster */
    r->len = 0;
    return ret;
}

struct read_walk {
    struct fmt_image *img;
    struct qcow2 *q;
    uint8_t *out;           /* the caller's buffer, for guest offset off */
    uint64_t off;
    struct run r;           /* host-contiguous data not read yet */
};

/* Zeroes, inflated clusters, and data gathered into host-contiguous runs
 * (one pread each). */
static int read_piece(void *opaque, uint64_t pos, uint64_t next, uint64_t cstart,
                      const struct map *m, enum fmt_kind kind)
{
    struct read_walk *w = opaque;
    uint8_t *dst = w->out + (pos - w->off);
    size_t n = (size_t)(next - pos);
    uint64_t host;
    int ret;

    switch (kind) {
    case FMT_UNALLOC:
        return fmt_err(-EIO, "%s: read of guest offset 0x%" PRIx64 ", which is not data",
                       w->img->path, pos);
    case FMT_ZERO:
        memset(dst, 0, n);
        return 0;
    case FMT_DATA:
        break;
    }
    if (m->zentry) {
        ret = inflate_cluster(w->img, w->q, m, cstart);
        if (ret < 0)
            return ret;
        memcpy(dst, w->q->zout + (pos - cstart), n);
        return 0;
    }
    host = m->host + (pos - cstart);
    if (w->r.len && w->r.host + w->r.len == host && w->r.buf + w->r.len == dst) {
        w->r.len += n;
        return 0;
    }
    if (w->r.len && (ret = run_flush(w->img, &w->r)) < 0)
        return ret;
    w->r = (struct run){ .buf = dst, .host = host, .len = n };
    return 0;
}

static int qcow2_read(struct fmt_image *img, void *buf, uint64_t off, size_t len)
{
    struct qcow2 *q = img->priv;
    struct read_walk w = { .img = img, .q = q, .out = buf, .off = off };
    const uint64_t end = off + len;
    int ret = walk(img, q, off, end, read_piece, &w);

    if (ret < 0)
        return ret;
    if (w.r.len && (ret = run_flush(img, &w.r)) < 0)
        return ret;
    /* The bytes past a size that is not a multiple of 512. */
    if (end > q->header_size)
        memset(w.out + (MAX(off, q->header_size) - off), 0,
               (size_t)(end - MAX(off, q->header_size)));
    return 0;
}

/* ------------------------------------------------------------------ */
/* Info and the driver                                                 */
/* ------------------------------------------------------------------ */

static void qcow2_info(struct fmt_image *img, fmt_info_fn cb, void *opaque)
{
    struct qcow2 *q = img->priv;
    char v[32];

    cb(opaque, "compat", q->version == 2 ? "0.10" : "1.1", false);
    snprintf(v, sizeof(v), "%u", q->cluster_size);
    cb(opaque, "cluster-size", v, true);
    snprintf(v, sizeof(v), "%u", 1u << q->refcount_order);
    cb(opaque, "refcount-bits", v, true);
    cb(opaque, "extended-l2", q->extended_l2 ? "true" : "false", false);
    cb(opaque, "compression-type", "zlib", false);
    cb(opaque, "dirty", (q->incompat & QCOW2_INCOMPAT_DIRTY) ? "true" : "false", false);
    cb(opaque, "corrupt", (q->incompat & QCOW2_INCOMPAT_CORRUPT) ? "true" : "false",
       false);
    cb(opaque, "lazy-refcounts",
       (q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) ? "true" : "false", false);
    snprintf(v, sizeof(v), "%u", q->nb_snapshots);
    cb(opaque, "snapshots", v, true);
}

static void qcow2_close(struct fmt_image *img)
{
    struct qcow2 *q = img->priv;

    if (!q)
        return;
    fmt_tcache_free(q->l2_cache);
    if (q->zs_ready)
        inflateEnd(&q->zs);
    free(q->zin);
    free(q->zout);
    free(q->l1);
    qcow2_write_free(q);
    free(q);
    img->priv = NULL;
}

const struct fmt_driver fmt_qcow2_driver = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = qcow2_open,
    .status = qcow2_status,
    .read = qcow2_read,
    .info = qcow2_info,
    .create = qcow2_create,
    .write = qcow2_write,
    .write_zeroes = qcow2_write_zeroes,
    .finish = qcow2_finish,
    .close = qcow2_close,
};
