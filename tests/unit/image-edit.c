/*
 * image-edit.c - reading and damaging layer files in memory, for the tests
 * of hostile images (image-edit.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-edit.h"

void img_load(struct img *im, const char *path)
{
    snprintf(im->path, sizeof(im->path), "%s", path);
    im->b = read_whole_file(path, &im->len);
}

/* The image written to a new file (the original stays intact). */
void img_save_as(struct img *im, const char *path)
{
    snprintf(im->path, sizeof(im->path), "%s", path);
    write_file(path, im->b, im->len);
}

void img_free(struct img *im)
{
    free(im->b);
    im->b = NULL;
}

/* A copy to damage, leaving the original for the next case. */
struct img img_dup(const struct img *src)
{
    struct img im = { .len = src->len };
    snprintf(im.path, sizeof(im.path), "%s", src->path);
    im.b = malloc(src->len ? src->len : 1);
    assert_non_null(im.b);
    memcpy(im.b, src->b, src->len);
    return im;
}

void img_resize(struct img *im, size_t len)
{
    uint8_t *nb = realloc(im->b, len ? len : 1);
    assert_non_null(nb);
    if (len > im->len)
        memset(nb + im->len, 0, len - im->len);
    im->b = nb;
    im->len = len;
}

/* ---- header slots ---- */

bool img_hdr_valid(const struct img *im, unsigned slot)
{
    const uint8_t *h = im->b + (size_t)slot * VDF_PAGE;
    if (im->len < (size_t)(slot + 1) * VDF_PAGE)
        return false;
    return memcmp(h + VDF_H_MAGIC, VDF_MAGIC, 8) == 0 &&
           vdf_le32(h + VDF_H_CRC) == vdf_crc32c(0, h, VDF_H_CRC);
}

/* The slot the library reads: the valid one with the higher generation. */
unsigned img_hdr_cur(const struct img *im)
{
    bool v0 = img_hdr_valid(im, 0), v1 = img_hdr_valid(im, 1);
    if (!v0 && !v1)
        fail_msg("%s: test image has no valid header", im->path);
    if (v0 && v1)
        return vdf_le64(im->b + VDF_PAGE + VDF_H_GEN) >
               vdf_le64(im->b + VDF_H_GEN) ? 1 : 0;
    return v1 ? 1 : 0;
}

const uint8_t *img_hdr(const struct img *im)
{
    return im->b + (size_t)img_hdr_cur(im) * VDF_PAGE;
}

void img_hdr_seal(struct img *im, unsigned slot)
{
    uint8_t *h = im->b + (size_t)slot * VDF_PAGE;
    vdf_put32(h + VDF_H_CRC, vdf_crc32c(0, h, VDF_H_CRC));
}

/* Writes n bytes at field offset `at` into every valid header slot and
 * recomputes their CRCs, so that the edit reaches the field checks. */
void img_hdr_set_bytes(struct img *im, unsigned at, const void *p, size_t n)
{
    bool valid[2] = { img_hdr_valid(im, 0), img_hdr_valid(im, 1) };
    for (unsigned s = 0; s < 2; s++) {
        if (!valid[s])
            continue;
        memcpy(im->b + (size_t)s * VDF_PAGE + at, p, n);
        img_hdr_seal(im, s);
    }
}

void img_hdr_set32(struct img *im, unsigned at, uint32_t v)
{
    uint8_t b[4];
    vdf_put32(b, v);
    img_hdr_set_bytes(im, at, b, 4);
}

void img_hdr_set64(struct img *im, unsigned at, uint64_t v)
{
    uint8_t b[8];
    vdf_put64(b, v);
    img_hdr_set_bytes(im, at, b, 8);
}

void img_hdr_set_parent(struct img *im, const vd_uuid *u, const char *hint)
{
    uint8_t field[VD_PARENT_HINT_MAX + 1] = { 0 };
    size_t hl = strlen(hint);
    assert_true(hl <= VD_PARENT_HINT_MAX);
    memcpy(field, hint, hl);
    img_hdr_set_bytes(im, VDF_H_PARENT_UUID, u->b, 16);
    img_hdr_set32(im, VDF_H_HINT_LEN, (uint32_t)hl);
    img_hdr_set_bytes(im, VDF_H_HINT, field, VD_PARENT_HINT_MAX);
}

/* ---- geometry ---- */

struct img_geometry img_geo(const struct img *im)
{
    const uint8_t *h = img_hdr(im);
    struct img_geometry g;
    g.shift = vdf_le32(h + VDF_H_BLOCK_SHIFT);
    g.bs = 1u << g.shift;
    g.subs = g.bs / VD_SUBBLOCK_SIZE;
    g.esize = vdf_entry_size(g.shift, vdf_le32(h + VDF_H_DIGEST) != 0);
    g.epp = vdf_epp(g.esize);
    g.size = vdf_le64(h + VDF_H_SIZE);
    g.nblocks = (g.size + g.bs - 1) >> g.shift;
    g.n_l2 = (g.nblocks + g.epp - 1) / g.epp;
    g.n_l1 = (g.n_l2 + VDF_L1_EPP - 1) / VDF_L1_EPP;
    g.data_start = VDF_L1_OFF + g.n_l1 * 2 * VDF_PAGE;
    assert_int_equal(g.esize, vdf_le32(h + VDF_H_ENTRY_SIZE));
    assert_int_equal(g.epp, vdf_le32(h + VDF_H_EPP));
    assert_int_equal(g.n_l1, vdf_le64(h + VDF_H_L1_PAGES));
    return g;
}

/* ---- index pages ---- */

static uint32_t page_crc(const uint8_t *p)
{
    uint8_t tmp[VDF_PAGE];
    memcpy(tmp, p, VDF_PAGE);
    vdf_put32(tmp + VDF_P_CRC, 0);
    return vdf_crc32c(0, tmp, VDF_PAGE);
}

void img_page_seal(uint8_t *p)
{
    vdf_put32(p + VDF_P_CRC, page_crc(p));
}

bool img_page_valid(const uint8_t *p, uint32_t magic, uint64_t index)
{
    return vdf_le32(p + VDF_P_MAGIC) == magic && vdf_le64(p + VDF_P_INDEX) == index &&
           vdf_le32(p + VDF_P_CRC) == page_crc(p);
}

/* The slot of the pair at `pair` the library reads (the valid one with the
 * higher generation), or -1. */
int img_pair_cur(const struct img *im, uint64_t pair, uint32_t magic, uint64_t index)
{
    if (pair + 2 * VDF_PAGE > im->len)
        return -1;
    const uint8_t *p0 = im->b + pair, *p1 = p0 + VDF_PAGE;
    bool v0 = img_page_valid(p0, magic, index), v1 = img_page_valid(p1, magic, index);
    if (v0 && (!v1 || vdf_le64(p0 + VDF_P_GEN) >= vdf_le64(p1 + VDF_P_GEN)))
        return 0;
    return v1 ? 1 : -1;
}

int img_pair_valid_slots(const struct img *im, uint64_t pair, uint32_t magic,
                            uint64_t index)
{
    if (pair + 2 * VDF_PAGE > im->len)
        return 0;
    return img_page_valid(im->b + pair, magic, index) +
           img_page_valid(im->b + pair + VDF_PAGE, magic, index);
}

/* Offset in the image of the current L1 page holding L2 page `page`'s
 * entry; the entry itself is at *entry. */
size_t img_l1_page_at(const struct img *im, uint64_t page, size_t *entry)
{
    uint64_t k = page / VDF_L1_EPP;
    uint64_t pair = VDF_L1_OFF + k * 2 * VDF_PAGE;
    int s = img_pair_cur(im, pair, VDF_L1_MAGIC, k);
    if (s < 0)
        fail_msg("%s: L1 page %llu has no valid copy", im->path, (unsigned long long)k);
    size_t at = (size_t)pair + (size_t)s * VDF_PAGE;
    *entry = at + VDF_P_HDR + (size_t)(page % VDF_L1_EPP) * 8;
    return at;
}

uint64_t img_l1_get(const struct img *im, uint64_t page)
{
    size_t e;
    img_l1_page_at(im, page, &e);
    return vdf_le64(im->b + e);
}

void img_l1_set(struct img *im, uint64_t page, uint64_t pair)
{
    size_t e;
    size_t at = img_l1_page_at(im, page, &e);
    vdf_put64(im->b + e, pair);
    img_page_seal(im->b + at);
}

/* Offset of the current copy of L2 page `page`. */
size_t img_l2_page_at(const struct img *im, uint64_t page)
{
    uint64_t pair = img_l1_get(im, page);
    int s = img_pair_cur(im, pair, VDF_L2_MAGIC, page);
    if (!pair || s < 0)
        fail_msg("%s: L2 page %llu has no valid copy", im->path, (unsigned long long)page);
    return (size_t)pair + (size_t)s * VDF_PAGE;
}

/* The entry of block blk in the current copy of its L2 page; *page_at is
 * the page, to reseal after an edit. */
uint8_t *img_l2_entry(struct img *im, uint64_t blk, size_t *page_at)
{
    struct img_geometry g = img_geo(im);
    *page_at = img_l2_page_at(im, blk / g.epp);
    return im->b + *page_at + VDF_P_HDR + (blk % g.epp) * g.esize;
}

uint64_t img_data_off(struct img *im, uint64_t blk)
{
    size_t at;
    uint64_t off = vdf_le64(img_l2_entry(im, blk, &at) + VDF_E_OFFSET);
    assert_true(off != 0);
    return off;
}

void img_set_sub_state(uint8_t *e, unsigned sub, unsigned st)
{
    uint8_t *b = &e[VDF_E_BITMAP + sub / 4];
    unsigned sh = (sub % 4) * 2;
    *b = (uint8_t)((*b & ~(3u << sh)) | (st << sh));
}
