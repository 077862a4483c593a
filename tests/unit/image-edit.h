/*
 * image-edit.h - a layer file in memory, read and damaged at the offsets
 * of libvdisk/src/format.h, for the tests of hostile images.
 *
 * The functions find what the library would read (the valid header slot
 * and index page copy with the higher generation) and edit it in place;
 * the *_set functions and img_page_seal recompute the CRC-32C of what they
 * touch, so that a test can reach the checks behind the checksums.  They
 * assert with cmocka: an image that lacks what a test expects fails it.
 */
#ifndef VD_TEST_IMAGE_EDIT_H
#define VD_TEST_IMAGE_EDIT_H

#include "helpers.h"
#include "format.h"

struct img {
    char path[4400];          /* where it was loaded from or saved to */
    uint8_t *b;
    size_t len;
};

/* Whole file in and out; img_save_as writes a new file or replaces one. */
void img_load(struct img *im, const char *path);
void img_save_as(struct img *im, const char *path);
void img_free(struct img *im);
/* A copy to damage, leaving the original for the next case. */
struct img img_dup(const struct img *src);
/* Truncates, or extends with zeroes. */
void img_resize(struct img *im, size_t len);

/* ---- header slots (0 at offset 0, 1 at 4096) ---- */

/* Magic and CRC are right (the slot lies wholly inside the image). */
bool img_hdr_valid(const struct img *im, unsigned slot);
/* The slot the library reads: the valid one of the higher generation. */
unsigned img_hdr_cur(const struct img *im);
const uint8_t *img_hdr(const struct img *im);
void img_hdr_seal(struct img *im, unsigned slot);
/* Write a field (offset `at`, VDF_H_*) in every valid slot and reseal. */
void img_hdr_set_bytes(struct img *im, unsigned at, const void *p, size_t n);
void img_hdr_set32(struct img *im, unsigned at, uint32_t v);
void img_hdr_set64(struct img *im, unsigned at, uint64_t v);
/* Parent UUID and hint (hint at most VD_PARENT_HINT_MAX bytes). */
void img_hdr_set_parent(struct img *im, const vd_uuid *u, const char *hint);

/* ---- geometry, computed from the header the way format.h defines it ---- */

struct img_geometry {
    uint32_t shift, bs, subs, esize, epp;
    uint64_t size, nblocks, n_l2, n_l1, data_start;
};
/* Asserts that the header's entry size, epp and L1 page count agree. */
struct img_geometry img_geo(const struct img *im);

/* ---- index pages (VDF_P_* header, 4 KiB, in pairs of slots) ---- */

void img_page_seal(uint8_t *page);
bool img_page_valid(const uint8_t *page, uint32_t magic, uint64_t index);
/* The slot (0/1) of the pair at file offset `pair` the library reads, or
 * -1 when neither copy is valid. */
int img_pair_cur(const struct img *im, uint64_t pair, uint32_t magic, uint64_t index);
/* How many of the pair's two copies are valid. */
int img_pair_valid_slots(const struct img *im, uint64_t pair, uint32_t magic,
                         uint64_t index);

/* Offset of the current L1 page holding L2 page `page`'s entry; the entry
 * itself is at *entry. */
size_t img_l1_page_at(const struct img *im, uint64_t page, size_t *entry);
/* L1 entry of L2 page `page` (the file offset of its pair, 0: none). */
uint64_t img_l1_get(const struct img *im, uint64_t page);
void img_l1_set(struct img *im, uint64_t page, uint64_t pair);
/* Offset of the current copy of L2 page `page`. */
size_t img_l2_page_at(const struct img *im, uint64_t page);
/* The L2 entry of block blk; *page_at is its page, to img_page_seal after
 * editing the entry. */
uint8_t *img_l2_entry(struct img *im, uint64_t blk, size_t *page_at);
/* The data slot offset of block blk (asserted non-zero). */
uint64_t img_data_off(struct img *im, uint64_t blk);
void img_set_sub_state(uint8_t *entry, unsigned sub, unsigned st);

#endif
