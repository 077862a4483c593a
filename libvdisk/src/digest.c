/*
 * digest.c - per-block SHA-256 digests (OpenSSL EVP).
 *
 * A block's digest covers block_size bytes: each present sub-block
 * contributes the 4 KiB stored in the layer, every other sub-block 4 KiB of
 * zeroes.  Digests are brought up to date when the index is flushed, by
 * reading back the blocks written since the last flush; `check --verify`
 * recomputes them.  Entries without a data slot carry no digest.
 */
#include <openssl/evp.h>

#include "vd-internal.h"

static uint8_t *digest_field(const struct vdi_layer *l, uint8_t *entry)
{
    return entry + VDF_E_BITMAP + vdf_bitmap_bytes(l->block_shift);
}

int vdi_block_digest(struct vdi_layer *l, const uint8_t *entry, uint8_t out[32])
{
    uint8_t *buf = vdi_alloc_aligned(l->block_size);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int r = 0;
    if (!buf || !md) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    uint64_t off = vdf_le64(entry + VDF_E_OFFSET);
    for (unsigned s = 0; s < l->subs; s++) {
        if (vdi_sub_state(entry, s) != VDF_SUB_PRESENT)
            continue;
        /* Read runs of present sub-blocks in one call. */
        unsigned e = s;
        while (e + 1 < l->subs && vdi_sub_state(entry, e + 1) == VDF_SUB_PRESENT)
            e++;
        size_t len = (size_t)(e - s + 1) * VD_SUBBLOCK_SIZE;
        r = vdi_pread_full(l->fd, buf + (size_t)s * VD_SUBBLOCK_SIZE, len,
                           off + (uint64_t)s * VD_SUBBLOCK_SIZE);
        if (r == -ENODATA)
            r = 0;
        if (r < 0) {
            r = vdi_err(r, "%s: read: %s", l->path, strerror(-r));
            goto out;
        }
        s = e;
    }
    unsigned int olen = 0;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, buf, l->block_size) != 1 ||
        EVP_DigestFinal_ex(md, out, &olen) != 1 || olen != 32)
        r = vdi_err(-EIO, "SHA-256 failed");
out:
    EVP_MD_CTX_free(md);
    free(buf);
    return r;
}

int vdi_rehash_stale(struct vdi_layer *l)
{
    if (l->digest == VD_DIGEST_NONE)
        return 0;
    for (struct vdi_l2 *p = l->dirty_head; p; p = p->dirty_next) {
        for (uint64_t i = 0; i < l->epp; i++) {
            if (!(p->stale[i / 8] & (1u << (i % 8))))
                continue;
            uint8_t *e = vdi_entry(l, p, i);
            uint8_t *d = digest_field(l, e);
            if (vdf_le64(e + VDF_E_OFFSET) == 0) {
                memset(d, 0, VDF_DIGEST_LEN);
            } else {
                int r = vdi_block_digest(l, e, d);
                if (r < 0)
                    return r;
            }
            p->stale[i / 8] &= (uint8_t)~(1u << (i % 8));
        }
    }
    return 0;
}

int vdi_digest_matches(struct vdi_layer *l, uint8_t *entry, bool *match);

int vdi_digest_matches(struct vdi_layer *l, uint8_t *entry, bool *match)
{
    uint8_t d[32];
    int r = vdi_block_digest(l, entry, d);
    if (r < 0)
        return r;
    *match = memcmp(d, digest_field(l, entry), VDF_DIGEST_LEN) == 0;
    return 0;
}

int vdi_digest_refresh(struct vdi_layer *l, uint8_t *entry, bool *changed);

int vdi_digest_refresh(struct vdi_layer *l, uint8_t *entry, bool *changed)
{
    uint8_t d[32];
    int r = vdi_block_digest(l, entry, d);
    if (r < 0)
        return r;
    *changed = memcmp(d, digest_field(l, entry), VDF_DIGEST_LEN) != 0;
    if (*changed)
        memcpy(digest_field(l, entry), d, VDF_DIGEST_LEN);
    return 0;
}
