/*
 * status.c - block status: which ranges hold data, read as zero, or are
 * holes, and at which depth of the chain.  Answered from memory; ranges
 * that no layer indexes at all are skipped a page or a below-map chunk at a
 * time, so a mostly empty 64 TiB disk is described quickly.
 */
#include "vd-internal.h"

static void classify(struct vd_chain *c, uint64_t pos, enum vd_extent_type *type,
                     unsigned *depth)
{
    struct vdi_layer *t = c->layers[0];
    uint64_t blk = pos >> c->block_shift;
    unsigned sub = (unsigned)((pos & (c->block_size - 1)) / VD_SUBBLOCK_SIZE);
    uint64_t fo;
    unsigned st = vdi_lookup(t, blk, sub, &fo);
    unsigned d = 1;
    if (st == VDF_SUB_ABSENT) {
        d = vdi_below_owner(c, blk, sub);
        if (d) {
            struct vdi_layer *l = c->layers[d - 1];
            st = pos < l->size ? vdi_lookup(l, blk, sub, &fo) : VDF_SUB_ABSENT;
        }
    }
    switch (st) {
    case VDF_SUB_PRESENT:
        *type = VD_EXTENT_DATA;
        *depth = d;
        break;
    case VDF_SUB_ZERO:
        *type = VD_EXTENT_ZERO;
        *depth = d;
        break;
    default:
        *type = VD_EXTENT_HOLE;
        *depth = 0;
        break;
    }
}

/* The first block >= blk (and < limit) that layer l may index: skips
 * whole directory chunks (512 L2 pages) and missing pages. */
static uint64_t next_indexed(const struct vdi_layer *l, uint64_t blk, uint64_t limit)
{
    if (blk >= l->nblocks)
        return limit;
    uint64_t page = blk / l->epp;
    while (page < l->n_l2) {
        uint64_t first = page * l->epp;
        if (first >= limit)
            return limit;
        if (!l->dir[page >> VDI_DIR_SHIFT]) {
            page = ((page >> VDI_DIR_SHIFT) + 1) << VDI_DIR_SHIFT;
            continue;
        }
        if (vdi_l2_get(l, page))
            return first > blk ? first : blk;
        page++;
    }
    return limit;
}

/* If nothing in the chain indexes the block containing pos, returns the
 * end of the run of such blocks (capped at limit); else returns pos. */
static uint64_t skip_unindexed(struct vd_chain *c, uint64_t pos, uint64_t limit)
{
    uint64_t blk = pos >> c->block_shift;
    uint64_t limit_blk = (limit + c->block_size - 1) >> c->block_shift;
    uint64_t run_end = limit_blk;
    for (unsigned d = 0; d < c->n && run_end > blk; d++) {
        uint64_t nb = next_indexed(c->layers[d], blk, run_end);
        if (nb < run_end)
            run_end = nb;
    }
    if (run_end <= blk)
        return pos;
    uint64_t e = run_end << c->block_shift;
    return e > limit ? limit : e;
}

int vd_block_status(struct vd_chain *c, uint64_t offset, uint64_t length,
                    struct vd_extent *ext, size_t max)
{
    if (offset % VD_SECTOR_SIZE || length % VD_SECTOR_SIZE)
        return vdi_err(-EINVAL, "offset and length must be multiples of 512");
    if (offset > c->size || length > c->size - offset)
        return vdi_err(-ENOSPC, "range is beyond the end of the disk");
    if (!ext || max == 0)
        return vdi_err(-EINVAL, "no room for extents");
    uint64_t pos = offset, end = offset + length;
    size_t n = 0;
    while (pos < end) {
        enum vd_extent_type type;
        unsigned depth;
        uint64_t next;
        uint64_t skip = skip_unindexed(c, pos, end);
        if (skip > pos) {
            type = VD_EXTENT_HOLE;
            depth = 0;
            next = skip;
        } else {
            classify(c, pos, &type, &depth);
            next = (pos / VD_SUBBLOCK_SIZE + 1) * VD_SUBBLOCK_SIZE;
            if (next > end)
                next = end;
        }
        if (n && ext[n - 1].type == type && ext[n - 1].depth == depth) {
            ext[n - 1].length += next - pos;
        } else {
            if (n == max)
                break;
            ext[n++] = (struct vd_extent){ .offset = pos, .length = next - pos,
                                           .type = type, .depth = depth };
        }
        pos = next;
    }
    return (int)n;
}
