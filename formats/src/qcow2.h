/*
 * qcow2.h - the qcow2 on-disk layout and the state shared by the reader
 * (qcow2.c) and the writer (qcow2-write.c).  Private to formats/.
 *
 * The layout is qemu's docs/interop/qcow2.txt, versions 2 and 3; this is
 * the one place in vdisk where its offsets and bits are written down.
 * Every integer on disk is big-endian.
 *
 *   cluster 0        header, header extensions, backing file name
 *   anywhere else    L1 table (contiguous), L2 tables (one cluster each),
 *                    refcount table (contiguous), refcount blocks (one
 *                    cluster each), data clusters, snapshots, bitmaps
 *
 * A guest offset maps through the L1 table to an L2 table, whose entry
 * gives the host cluster.  With extended L2 entries (incompatible bit 4)
 * an entry is 16 bytes: the usual 8, then a bitmap describing the 32
 * subclusters of the cluster one by one.
 */
#ifndef VDISK_FORMATS_QCOW2_H
#define VDISK_FORMATS_QCOW2_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "driver.h"

#define QCOW2_MAGIC            0x514649fbu    /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LEN    72u
#define QCOW2_V3_HEADER_LEN    104u           /* the minimum for version 3 */

struct qcow2_header {
    uint32_t magic;
    uint32_t version;                 /* 2 or 3 */
    uint64_t backing_file_offset;     /* 0: no backing file */
    uint32_t backing_file_size;       /* <= 1023, not NUL-terminated */
    uint32_t cluster_bits;            /* 9..21 (qemu's limit is 2 MiB) */
    uint64_t size;                    /* virtual size in bytes */
    uint32_t crypt_method;            /* 0 none, 1 AES, 2 LUKS */
    uint32_t l1_size;                 /* entries of the active L1 table */
    uint64_t l1_table_offset;         /* cluster aligned */
    uint64_t refcount_table_offset;   /* cluster aligned */
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    /* Version 3: the fields below exist only up to header_length. */
    uint64_t incompatible_features;   /* QCOW2_INCOMPAT_* */
    uint64_t compatible_features;     /* QCOW2_COMPAT_* */
    uint64_t autoclear_features;
    uint32_t refcount_order;          /* refcount bits = 1 << order, <= 6 */
    uint32_t header_length;           /* >= 104, a multiple of 8 */
    uint8_t compression_type;         /* 0 zlib, 1 zstd (incompat bit 3) */
    uint8_t padding[7];               /* zero: header_length is 112 */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_header) == 112, "qcow2 header size");
_Static_assert(offsetof(struct qcow2_header, l1_table_offset) == 40, "qcow2 l1");
_Static_assert(offsetof(struct qcow2_header, incompatible_features) ==
               QCOW2_V2_HEADER_LEN, "qcow2 v3 fields");
_Static_assert(offsetof(struct qcow2_header, compression_type) ==
               QCOW2_V3_HEADER_LEN, "qcow2 compression type");

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)  /* refcounts may be stale */
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)  /* must not be written */
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)  /* data in an external file */
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)  /* compression_type != zlib */
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)  /* 16-byte L2 entries */
#define QCOW2_INCOMPAT_KNOWN       0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

#define QCOW2_COMPRESSION_ZLIB     0u
#define QCOW2_COMPRESSION_ZSTD     1u

/* Header extensions follow the header: a u32 type, a u32 length, the
 * data, padding to a multiple of 8.  They end at a type 0, and stay in
 * the first cluster (before the backing file name when there is one). */
struct qcow2_ext {
    uint32_t type;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_ext) == 8, "qcow2 extension header size");

#define QCOW2_EXT_END              0x00000000u
#define QCOW2_EXT_BACKING_FORMAT   0xe2792acau  /* a string */
#define QCOW2_EXT_FEATURE_NAMES    0x6803f857u  /* struct qcow2_feature[] */
#define QCOW2_EXT_BITMAPS          0x23852875u
#define QCOW2_EXT_CRYPTO           0x0537be77u  /* full disk encryption */
#define QCOW2_EXT_DATA_FILE        0x44415441u  /* a string */

struct qcow2_feature {
    uint8_t type;                     /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;                      /* 0..63 */
    char name[46];                    /* zero padded, maybe not terminated */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_feature) == 48, "qcow2 feature name size");

/* qemu's limits: it opens nothing past them, so neither do we. */
#define QCOW2_MAX_BACKING_NAME     1023u
#define QCOW2_MAX_BACKING_FORMAT   15u          /* qemu keeps it in char[16] */
#define QCOW2_MAX_L1_BYTES         (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES   (8u << 20)
#define QCOW2_MIN_CLUSTER_BITS     9u
#define QCOW2_MAX_CLUSTER_BITS     21u
#define QCOW2_MIN_EXTL2_BITS       14u          /* 32 subclusters of >= 512 */

/* L1 entry: bits 9-55 the L2 table's offset (0: none), bit 63 "refcount
 * is exactly one", the rest reserved. */
#define QCOW2_OFLAG_COPIED         (1ull << 63)
#define QCOW2_L1_OFFSET_MASK       0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED          0x7f000000000001ffull

/* L2 entry (the first 8 bytes when extended): bit 62 compressed, bit 63
 * "refcount is exactly one".  A standard descriptor: bit 0 reads as
 * zeroes (version 3, not extended), bits 9-55 the host cluster (0 with
 * bit 63 clear: unallocated), the rest reserved. */
#define QCOW2_OFLAG_COMPRESSED     (1ull << 62)
#define QCOW2_OFLAG_ZERO           (1ull << 0)
#define QCOW2_L2_OFFSET_MASK       0x00fffffffffffe00ull
#define QCOW2_L2_RESERVED          0x3f000000000001feull
/* A compressed descriptor (x = 62 - (cluster_bits - 8)): bits 0..x-1 the
 * host byte offset of the compressed data, bits x..61 the number of 512-
 * byte sectors it uses beyond the first.  The data is raw deflate. */
#define QCOW2_COMPRESSED_SECTOR    512u
/* An extended entry's bitmap: bit i subcluster i allocated, bit 32 + i
 * subcluster i reads as zeroes (never both); zero for compressed. */
#define QCOW2_SUBCLUSTERS          32u

/* Refcount entries of images we write: 16 bits (refcount_order 4). */
#define QCOW2_REFCOUNT_ORDER       4u

/* The driver's state (img->priv), for reading and for writing. */
struct qcow2 {
    /* Geometry, from the header or from create. */
    unsigned version;
    unsigned cluster_bits;
    uint32_t cluster_size;
    unsigned l2_bits;                 /* log2 of the entries per L2 table */
    unsigned entry_size;              /* 8, or 16 with extended L2 */
    bool extended_l2;
    unsigned sub_bits;                /* log2 of the bytes an L2 bitmap bit
                                         describes: cluster or subcluster */
    uint64_t header_size;             /* the header's size (may not be a
                                         multiple of 512) */
    uint64_t l1_size;                 /* L1 entries covering the image */
    uint64_t *l1;                     /* host byte order */

    /* For info. */
    uint64_t incompat;
    uint64_t compat;
    unsigned refcount_order;
    uint32_t nb_snapshots;

    /* Reading. */
    struct fmt_tcache *l2_cache;
    z_stream zs;
    bool zs_ready;
    uint8_t *zin;                     /* compressed bytes, 2 clusters */
    uint8_t *zout;                    /* the last inflated cluster */
    uint64_t zout_entry;              /* its L2 entry (0: none) */

    /* Writing: L2 tables in host byte order, made when first needed. */
    uint64_t **wl2;                   /* l1_size pointers */
    uint64_t next_free;               /* file offset of the next cluster */
    bool fill;                        /* not a regular file: what we do not
                                         write is not zeroes (a device) */
};

static inline uint32_t qcow2_be32(const void *p)
{
    const uint8_t *b = p;

    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t qcow2_be64(const void *p)
{
    const uint8_t *b = p;

    return (uint64_t)qcow2_be32(b) << 32 | qcow2_be32(b + 4);
}

static inline void qcow2_put32(void *p, uint32_t v)
{
    uint8_t *b = p;

    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static inline void qcow2_put64(void *p, uint64_t v)
{
    qcow2_put32(p, (uint32_t)(v >> 32));
    qcow2_put32((uint8_t *)p + 4, (uint32_t)v);
}

/* qcow2-write.c: the driver's create, write, write_zeroes and finish, and
 * the release of the writer's state (called by the driver's close). */
int qcow2_create(struct fmt_image *img, const struct fmt_create_opts *opts);
int qcow2_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len);
int qcow2_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len);
int qcow2_finish(struct fmt_image *img);
void qcow2_write_free(struct qcow2 *q);

#endif
