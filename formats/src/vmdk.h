/*
 * vmdk.h - the VMDK on-disk layout and the driver's private state.
 * Private to formats/src/vmdk*.c.
 *
 * Written from the VMware Virtual Disk Format 1.1 specification.  A VMDK
 * disk is a descriptor (text) and one or more extents whose concatenation
 * is the virtual disk:
 *
 * - A descriptor is a small text file ("# Disk DescriptorFile", key=value
 *   lines, extent lines `RW 4192256 SPARSE "x-s001.vmdk"`), or is embedded
 *   in a hosted sparse extent at descriptorOffset.
 * - A FLAT extent is a plain file (from a sector offset on); a ZERO extent
 *   has no file and reads as zeroes.
 * - A hosted sparse extent (SPARSE) is a file that starts with the
 *   SparseExtentHeader below.  Its grains (grainSize sectors each) are
 *   found through a grain directory (GD: uint32 sector offsets of grain
 *   tables) and grain tables (GT: numGTEsPerGT uint32 sector offsets of
 *   grains).  A GTE of 0 is an unallocated grain (a delta disk reads it
 *   from its parent), 1 a zero grain when VMDK_FLAG_ZERO_GTE is set.
 * - streamOptimized sparse extents compress every grain (deflate, zlib
 *   stream format) and precede it with a grain marker; their metadata is
 *   preceded by a metadata marker, and the header may say the GD is at the
 *   end (VMDK_GD_AT_END): then the real header is the footer, a copy of
 *   the header 1024 bytes before the end of the file:
 *
 *     ... | footer marker (512) | footer header (512) | end-of-stream (512)
 *
 * All integers are little-endian; offsets and sizes are in sectors of 512
 * bytes.  Every value read from a file is checked before it is used.
 */
#ifndef VDISK_FORMATS_VMDK_H
#define VDISK_FORMATS_VMDK_H

#include <stdbool.h>
#include <stdint.h>
#include <zlib.h>

#include "driver.h"

#define VMDK_MAGIC           "KDMV"    /* SparseExtentHeader.magicNumber */
#define VMDK_COWD_MAGIC      "COWD"    /* ESX vmfsSparse: not supported */
#define VMDK_SECTOR          512u

/* SparseExtentHeader.flags */
#define VMDK_FLAG_NL_TEST    (1u << 0)   /* the newline check bytes are valid */
#define VMDK_FLAG_RGD        (1u << 1)   /* a redundant GD (rgdOffset) exists */
#define VMDK_FLAG_ZERO_GTE   (1u << 2)   /* a GTE of 1 means a zero grain */
#define VMDK_FLAG_COMPRESSED (1u << 16)  /* grains are compressed */
#define VMDK_FLAG_MARKERS    (1u << 17)  /* grains and metadata have markers */

#define VMDK_COMPRESS_NONE    0u
#define VMDK_COMPRESS_DEFLATE 1u
#define VMDK_GD_AT_END       UINT64_C(0xffffffffffffffff)
#define VMDK_GTE_ZERO        1u
/* parentCID of a disk without a parent */
#define VMDK_CID_NOPARENT    0xffffffffu

/* The hosted sparse extent header: sector 0 of the file (and the footer
 * of a stream with gdOffset == VMDK_GD_AT_END). */
struct vmdk_header {
    char     magic[4];          /* "KDMV" */
    uint32_t version;           /* 1; 2 with zero GTEs; 3 streamOptimized */
    uint32_t flags;             /* VMDK_FLAG_* */
    uint64_t capacity;          /* sectors of the extent */
    uint64_t grain_size;        /* sectors per grain, a power of two */
    uint64_t desc_offset;       /* embedded descriptor (sectors), or 0 */
    uint64_t desc_size;
    uint32_t gtes_per_gt;       /* 512 in practice */
    uint64_t rgd_offset;        /* redundant GD, when VMDK_FLAG_RGD */
    uint64_t gd_offset;         /* GD, or VMDK_GD_AT_END */
    uint64_t overhead;          /* sectors of metadata before the grains */
    uint8_t  unclean_shutdown;
    /* "\n \r\n": a file moved through a text-mode transfer fails this */
    char     nl_check[4];
    uint16_t compress_algorithm;  /* VMDK_COMPRESS_* */
    uint8_t  pad[433];
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_header) == 512, "SparseExtentHeader is one sector");

/* A marker in a streamOptimized extent.  A grain marker is {lba, size}
 * followed at once by size bytes of compressed data (padded to a sector).
 * A metadata marker has size 0 and a type, fills its sector, and is
 * followed by val sectors of metadata. */
struct vmdk_marker {
    uint64_t val;               /* grain: its first sector; metadata: sectors */
    uint32_t size;              /* grain: compressed bytes; metadata: 0 */
    uint32_t type;              /* metadata only: VMDK_MARKER_* */
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_marker) == 16, "marker layout");
#define VMDK_GRAIN_MARKER_SIZE 12u   /* val + size; the data starts here */

enum {
    VMDK_MARKER_EOS = 0,
    VMDK_MARKER_GT = 1,
    VMDK_MARKER_GD = 2,
    VMDK_MARKER_FOOTER = 3,
};

/* Limits of this implementation. */
#define VMDK_MAX_DESC        (64u << 10)   /* descriptor text, bytes */
#define VMDK_MAX_EXTENTS     1024u
#define VMDK_MAX_GRAIN_SECT  2048u         /* 1 MiB grains */
#define VMDK_MAX_GTES        512u
/* GT cache entries per sparse extent */
#define VMDK_GT_CACHE        64u

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

/* A hosted sparse extent, parsed. */
struct vmdk_sparse {
    uint32_t version;
    uint32_t flags;
    uint64_t capacity;          /* sectors */
    uint32_t grain_sectors;
    uint32_t gtes_per_gt;
    uint64_t gd_sector;
    uint32_t gd_entries;
    uint32_t *gd;               /* host order; 0: the whole GT unallocated */
    struct fmt_tcache *gtc;     /* grain tables, keyed by file offset */
    bool compressed;            /* deflate */
    bool markers;
    bool zero_gte;
    bool unclean;
};

enum vmdk_ext_type { VMDK_EXT_FLAT, VMDK_EXT_SPARSE, VMDK_EXT_ZERO };

/* One extent: the bytes [start, start + len) of the virtual disk. */
struct vmdk_extent {
    enum vmdk_ext_type type;
    uint64_t start;
    uint64_t len;
    int fd;                     /* -1 for ZERO */
    bool own_fd;                /* opened here, not img->fd */
    char *path;                 /* for messages (malloc'd) */
    uint64_t file_size;
    uint64_t flat_offset;       /* FLAT: byte offset in the file */
    struct vmdk_sparse sp;      /* SPARSE */
};

/* What a descriptor says (vmdk-desc.c). */
struct vmdk_desc_extent {
    bool rdonly;
    uint64_t sectors;
    enum vmdk_ext_type type;
    char *file;                 /* NULL for ZERO */
    uint64_t offset;            /* FLAT: sectors */
};

struct vmdk_desc {
    char *create_type;
    uint32_t cid;
    uint32_t parent_cid;
    bool has_cid;
    char *parent_hint;          /* parentFileNameHint, or NULL */
    struct vmdk_desc_extent *ext;
    unsigned n_ext;
};

struct vmdk_state {
    struct vmdk_extent *ext;
    unsigned n_ext;
    struct vmdk_desc desc;
    const struct vmdk_sparse *first_sparse;  /* for info */
    uint64_t meta_mem;          /* GDs and GT caches held */
    /* the last inflated grain: a caller reading a compressed grain in
     * pieces inflates it once */
    z_stream zs;
    bool zs_ready;
    uint8_t *zin;               /* compressed bytes of one grain */
    size_t zin_size;
    uint8_t *grain;             /* the inflated grain */
    size_t grain_size;
    const struct vmdk_extent *grain_ext;  /* NULL: grain holds nothing */
    uint64_t grain_index;
};

/* vmdk-desc.c */

/* Parses descriptor text (NUL-terminated; len bytes without the NUL) of
 * the image at path into *d.  With extents false (a descriptor embedded in
 * a sparse extent, which names the extent itself), extent lines are
 * skipped.  Errors: -EUCLEAN for malformed text, -ENOTSUP for an
 * unsupported version, create type, access or extent type, -EFBIG for a
 * disk over FMT_MAX_SIZE; the message is set. */
int vmdk_desc_parse(const char *path, const char *text, size_t len, bool extents,
                    struct vmdk_desc *d);
/* Frees what *d holds and zeroes it. */
void vmdk_desc_free(struct vmdk_desc *d);
/* True if buf (len bytes) begins like a descriptor file. */
bool vmdk_desc_probe(const uint8_t *buf, size_t len);
/* Formats the descriptor of a new single-extent sparse disk into a
 * malloc'd string: createType create_type, one extent line
 * `RW sectors SPARSE "file"`.  Returns NULL without memory. */
char *vmdk_desc_format(uint32_t cid, const char *create_type, uint64_t sectors,
                       const char *file);

/* Opens the descriptor file img (img->fd) into st: parses it, opens and
 * checks the extent files it names (plain names in its own directory
 * only when img->probed: -EPERM otherwise).  Sets img->size. */
int vmdk_desc_open(struct fmt_image *img, struct vmdk_state *st);

/* vmdk.c */

/* Parses the sparse extent e (fd, path and file_size set) into e->sp,
 * and its embedded descriptor into *d when d is not NULL.  Checks every
 * field, the grain directory and where its grain tables are. */
int vmdk_sparse_open(struct vmdk_state *st, struct vmdk_extent *e,
                     struct vmdk_desc *d);

/* vmdk-write.c */
int vmdk_create(struct fmt_image *img, const struct fmt_create_opts *opts);
int vmdk_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len);
int vmdk_finish(struct fmt_image *img);
void vmdk_write_close(struct fmt_image *img);

#endif
