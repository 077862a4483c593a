/*
 * format.h - the on-disk layout of a vdk layer file.
 *
 * docs/FORMAT.md is the prose description; this file is the single place
 * where offsets and sizes are written down in code.  All integers are
 * little-endian.  Every offset read from a file is validated before use.
 *
 *   0        header slot 0 (4 KiB)
 *   4096     header slot 1 (4 KiB)
 *   8192     L1 table: n_l1 page pairs (2 x 4 KiB each)
 *   ...      L2 page pairs and data block slots, allocated at the end of
 *            the file as they are needed, all 4 KiB aligned
 *
 * Every metadata structure (header, L1 page, L2 page) exists as a pair of
 * slots.  An update writes the slot that does not hold the current
 * version, with generation + 1 and a CRC-32C, so that a torn or lost write
 * leaves the previous version readable.  See docs/FORMAT.md for the
 * ordering that makes this crash safe.
 */
#ifndef VD_FORMAT_H
#define VD_FORMAT_H

#include <stdint.h>
#include <string.h>

#define VDF_MAGIC           "VDISKLYR"
#define VDF_VERSION         1u
#define VDF_PAGE            4096u      /* header, L1 and L2 page size */
#define VDF_HDR_SLOTS_OFF   0u
#define VDF_L1_OFF          (2u * VDF_PAGE)

/* Header field offsets (one 4 KiB slot). */
#define VDF_H_MAGIC         0    /* 8 bytes "VDISKLYR" */
#define VDF_H_VERSION       8    /* u32 */
#define VDF_H_HDRSIZE       12   /* u32, 4096 */
#define VDF_H_GEN           16   /* u64 generation of this slot */
#define VDF_H_INCOMPAT      24   /* u64 incompatible features: unknown bit -> refuse */
#define VDF_H_ROCOMPAT      32   /* u64 features an old reader may read but not write */
#define VDF_H_COMPAT        40   /* u64 compatible features: unknown bits ignored */
#define VDF_H_SIZE          48   /* u64 virtual size in bytes */
#define VDF_H_BLOCK_SHIFT   56   /* u32 log2(block size), 12..21 */
#define VDF_H_DIGEST        60   /* u32 digest type: 0 none, 1 sha256 */
#define VDF_H_ENTRY_SIZE    64   /* u32 bytes per L2 entry */
#define VDF_H_EPP           68   /* u32 L2 entries per page */
#define VDF_H_L1_OFFSET     72   /* u64, 8192 in version 1 */
#define VDF_H_L1_PAGES      80   /* u64 number of L1 page pairs */
#define VDF_H_FLAGS         88   /* u32 VDF_F_* */
#define VDF_H_HINT_LEN      92   /* u32 length of the parent hint */
#define VDF_H_UUID          96   /* 16 bytes */
#define VDF_H_PARENT_UUID   112  /* 16 bytes, all zero: no parent */
#define VDF_H_CTIME         128  /* u64 creation time, seconds */
#define VDF_H_HINT          136  /* parent file name hint, up to 255 bytes, NUL padded */
#define VDF_H_CRC           4092 /* u32 CRC-32C of bytes 0..4091 */

/* header flags */
#define VDF_F_DIRTY         (1u << 0)   /* opened for writing, not closed cleanly */
#define VDF_F_FROZEN        (1u << 1)   /* read-only forever */
#define VDF_F_KNOWN         (VDF_F_DIRTY | VDF_F_FROZEN)

/* features: version 1 defines none; the fields exist so later versions
 * can add them the way qcow2 does. */
#define VDF_INCOMPAT_KNOWN  0ull
#define VDF_ROCOMPAT_KNOWN  0ull

/* Page header shared by L1 and L2 pages (32 bytes). */
#define VDF_P_MAGIC         0    /* u32 VDF_L1_MAGIC / VDF_L2_MAGIC */
#define VDF_P_CRC           4    /* u32 CRC-32C of the page with this field zero */
#define VDF_P_GEN           8    /* u64 generation */
#define VDF_P_INDEX         16   /* u64 which L1 page / L2 page this is */
#define VDF_P_RESERVED      24   /* u64 zero */
#define VDF_P_HDR           32
#define VDF_L1_MAGIC        0x31314456u   /* "VD11" */
#define VDF_L2_MAGIC        0x32324456u   /* "VD22" */

#define VDF_L1_EPP          ((VDF_PAGE - VDF_P_HDR) / 8u)   /* 508 */

/* L2 entry: u64 data slot offset (0: no slot; otherwise 4 KiB aligned),
 * then the sub-block state bitmap (2 bits per 4 KiB sub-block, sub-block i
 * in bits 2i..2i+1 counted from byte 8), then the digest if enabled.  The
 * entry is padded to a power of two. */
#define VDF_E_OFFSET        0
#define VDF_E_BITMAP        8
#define VDF_DIGEST_LEN      32u

enum vdf_sub_state {
    VDF_SUB_ABSENT = 0,    /* not in this layer: read the parent */
    VDF_SUB_PRESENT = 1,   /* data at slot + i * 4 KiB */
    VDF_SUB_ZERO = 2,      /* reads as zeroes, hides the parent */
    VDF_SUB_INVALID = 3,
};

static inline uint16_t vdf_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t vdf_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t vdf_le64(const uint8_t *p)
{
    return (uint64_t)vdf_le32(p) | (uint64_t)vdf_le32(p + 4) << 32;
}
static inline void vdf_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void vdf_put64(uint8_t *p, uint64_t v)
{
    vdf_put32(p, (uint32_t)v);
    vdf_put32(p + 4, (uint32_t)(v >> 32));
}

uint32_t vdf_crc32c(uint32_t crc, const void *buf, size_t len);

/* Geometry derived from block size and digest type. */
static inline uint32_t vdf_bitmap_bytes(uint32_t block_shift)
{
    uint32_t subs = 1u << (block_shift - 12);
    uint32_t b = (subs * 2 + 7) / 8;
    return (b + 7) & ~7u;
}
static inline uint32_t vdf_entry_size(uint32_t block_shift, int digest)
{
    uint32_t raw = 8 + vdf_bitmap_bytes(block_shift) + (digest ? VDF_DIGEST_LEN : 0);
    uint32_t e = 16;
    while (e < raw)
        e <<= 1;
    return e;
}
static inline uint32_t vdf_epp(uint32_t entry_size)
{
    return (VDF_PAGE - VDF_P_HDR) / entry_size;
}

#endif
