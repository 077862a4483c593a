/*
 * layer.c - one layer file: creating it, opening it, loading and
 * validating its header and index into memory.
 *
 * Everything read from the file is treated as hostile until checked: the
 * header fields must describe a geometry this code computes itself, every
 * page must carry its own index and a matching CRC, and every offset must
 * fall inside the file, past the fixed metadata.
 */
#include <fcntl.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vd-internal.h"

int vdi_uuid_generate(vd_uuid *u);

/* ------------------------------------------------------------------ */
/* Header                                                              */
/* ------------------------------------------------------------------ */

static void encode_header(const struct vdi_layer *l, uint8_t *h, uint64_t gen,
                          uint32_t flags)
{
    memset(h, 0, VDF_PAGE);
    memcpy(h + VDF_H_MAGIC, VDF_MAGIC, 8);
    vdf_put32(h + VDF_H_VERSION, VDF_VERSION);
    vdf_put32(h + VDF_H_HDRSIZE, VDF_PAGE);
    vdf_put64(h + VDF_H_GEN, gen);
    vdf_put64(h + VDF_H_SIZE, l->size);
    vdf_put32(h + VDF_H_BLOCK_SHIFT, l->block_shift);
    vdf_put32(h + VDF_H_DIGEST, (uint32_t)l->digest);
    vdf_put32(h + VDF_H_ENTRY_SIZE, l->entry_size);
    vdf_put32(h + VDF_H_EPP, l->epp);
    vdf_put64(h + VDF_H_L1_OFFSET, l->l1_off);
    vdf_put64(h + VDF_H_L1_PAGES, l->n_l1);
    vdf_put32(h + VDF_H_FLAGS, flags);
    size_t hl = strlen(l->hint);
    vdf_put32(h + VDF_H_HINT_LEN, (uint32_t)hl);
    memcpy(h + VDF_H_UUID, l->uuid.b, 16);
    memcpy(h + VDF_H_PARENT_UUID, l->parent_uuid.b, 16);
    vdf_put64(h + VDF_H_CTIME, l->ctime);
    memcpy(h + VDF_H_HINT, l->hint, hl);
    vdf_put32(h + VDF_H_CRC, vdf_crc32c(0, h, VDF_H_CRC));
}

static void set_geometry(struct vdi_layer *l)
{
    l->block_size = 1u << l->block_shift;
    l->subs = l->block_size / VD_SUBBLOCK_SIZE;
    l->entry_size = vdf_entry_size(l->block_shift, l->digest != VD_DIGEST_NONE);
    l->epp = vdf_epp(l->entry_size);
    l->nblocks = (l->size + l->block_size - 1) >> l->block_shift;
    l->n_l2 = (l->nblocks + l->epp - 1) / l->epp;
    l->n_l1 = (l->n_l2 + VDF_L1_EPP - 1) / VDF_L1_EPP;
    l->l1_off = VDF_L1_OFF;
    l->data_start = l->l1_off + l->n_l1 * 2 * VDF_PAGE;
}

/* Returns 1 for a valid header slot, 0 for an invalid one; *why says why. */
static int header_slot_valid(const uint8_t *h, const char **why)
{
    if (memcmp(h + VDF_H_MAGIC, VDF_MAGIC, 8) != 0) {
        *why = "bad magic";
        return 0;
    }
    if (vdf_le32(h + VDF_H_CRC) != vdf_crc32c(0, h, VDF_H_CRC)) {
        *why = "header checksum mismatch";
        return 0;
    }
    return 1;
}

static int decode_header(struct vdi_layer *l, const uint8_t *h, bool rdwr)
{
    const char *p = l->path;
    uint32_t ver = vdf_le32(h + VDF_H_VERSION);
    if (ver != VDF_VERSION)
        return vdi_err(-ENOTSUP, "%s: unsupported layer format version %u", p, ver);
    if (vdf_le32(h + VDF_H_HDRSIZE) != VDF_PAGE)
        return vdi_err(-EUCLEAN, "%s: bad header size", p);
    uint64_t inc = vdf_le64(h + VDF_H_INCOMPAT), roc = vdf_le64(h + VDF_H_ROCOMPAT);
    if (inc & ~VDF_INCOMPAT_KNOWN)
        return vdi_err(-ENOTSUP, "%s: unsupported incompatible features 0x%llx", p,
                       (unsigned long long)(inc & ~VDF_INCOMPAT_KNOWN));
    if (rdwr && (roc & ~VDF_ROCOMPAT_KNOWN))
        return vdi_err(-EROFS, "%s: features 0x%llx allow read-only access only", p,
                       (unsigned long long)(roc & ~VDF_ROCOMPAT_KNOWN));
    l->size = vdf_le64(h + VDF_H_SIZE);
    l->block_shift = vdf_le32(h + VDF_H_BLOCK_SHIFT);
    uint32_t dg = vdf_le32(h + VDF_H_DIGEST);
    l->flags = vdf_le32(h + VDF_H_FLAGS);
    l->ctime = vdf_le64(h + VDF_H_CTIME);
    memcpy(l->uuid.b, h + VDF_H_UUID, 16);
    memcpy(l->parent_uuid.b, h + VDF_H_PARENT_UUID, 16);
    uint32_t hl = vdf_le32(h + VDF_H_HINT_LEN);

    if (l->size == 0 || l->size % VD_SECTOR_SIZE || l->size > VD_MAX_SIZE)
        return vdi_err(-EUCLEAN, "%s: invalid virtual size %llu", p,
                       (unsigned long long)l->size);
    if (l->block_shift < 12 || l->block_shift > 21)
        return vdi_err(-EUCLEAN, "%s: invalid block size 2^%u", p, l->block_shift);
    if (dg > VD_DIGEST_SHA256)
        return vdi_err(-EUCLEAN, "%s: unknown digest type %u", p, dg);
    if (l->flags & ~VDF_F_KNOWN)
        return vdi_err(-EUCLEAN, "%s: unknown header flags 0x%x", p, l->flags);
    if (hl > VD_PARENT_HINT_MAX || memchr(h + VDF_H_HINT, 0, hl))
        return vdi_err(-EUCLEAN, "%s: invalid parent hint", p);
    if (vd_uuid_is_null(&l->uuid))
        return vdi_err(-EUCLEAN, "%s: layer has a null UUID", p);
    memcpy(l->hint, h + VDF_H_HINT, hl);
    l->hint[hl] = '\0';
    l->digest = (enum vd_digest)dg;
    set_geometry(l);
    if (vdf_le32(h + VDF_H_ENTRY_SIZE) != l->entry_size ||
        vdf_le32(h + VDF_H_EPP) != l->epp ||
        vdf_le64(h + VDF_H_L1_OFFSET) != l->l1_off ||
        vdf_le64(h + VDF_H_L1_PAGES) != l->n_l1)
        return vdi_err(-EUCLEAN, "%s: index geometry in the header is inconsistent", p);
    return 0;
}

int vdi_layer_write_header(struct vdi_layer *l, uint32_t flags)
{
    uint8_t *h = vdi_alloc_aligned(VDF_PAGE);
    if (!h)
        return vdi_err(-ENOMEM, "out of memory");
    uint8_t slot = l->hdr_slot ^ 1;
    encode_header(l, h, l->hdr_gen + 1, flags);
    int r = vdi_pwrite_full(l->fd, h, VDF_PAGE, (uint64_t)slot * VDF_PAGE, true);
    if (r == 0)
        r = vdi_fdatasync(l->fd);
    if (r < 0) {
        free(h);
        return vdi_err(r, "%s: cannot write header: %s", l->path, strerror(-r));
    }
    memcpy(l->hdr, h, VDF_PAGE);
    free(h);
    l->hdr_slot = slot;
    l->hdr_gen++;
    l->flags = flags;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

static void layer_free(struct vdi_layer *l)
{
    if (!l)
        return;
    if (l->dir) {
        for (uint64_t i = 0; i < l->ndir; i++) {
            struct vdi_l2 **c = l->dir[i];
            if (!c)
                continue;
            for (unsigned j = 0; j < (1u << VDI_DIR_SHIFT); j++) {
                if (c[j]) {
                    free(c[j]->img);
                    free(c[j]->stale);
                    free(c[j]);
                }
            }
            free(c);
        }
        free(l->dir);
    }
    free(l->l1);
    if (l->fd >= 0) {
        vdi_fd_set_buffered(l->fd, false);
        close(l->fd);
    }
    free(l->path);
    free(l);
}

void vdi_layer_put(struct vdi_layer *l)
{
    if (!l || --l->refs > 0)
        return;
    if (l->cache) {
        struct vdi_layer **pp = &l->cache->head;
        while (*pp && *pp != l)
            pp = &(*pp)->cache_next;
        if (*pp)
            *pp = l->cache_next;
    }
    layer_free(l);
}

static int open_fd(const char *path, bool rdwr, bool buffered, bool *direct)
{
    /* O_NONBLOCK: opening a FIFO or device named by a hostile hint must not
     * hang; only regular files are accepted below. */
    int fl = (rdwr ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return -EINVAL;
    int fd = -1;
    *direct = false;
    if (!buffered && !vdi_be_custom) {
        fd = open(path, fl | O_DIRECT);
        if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
            close(fd);
            return -EINVAL;
        }
        if (fd >= 0) {
            /* Some filesystems accept O_DIRECT at open and refuse the I/O:
             * probe one aligned read. */
            void *b = vdi_alloc_aligned(VDF_PAGE);
            ssize_t r = b ? pread(fd, b, VDF_PAGE, 0) : -1;
            free(b);
            if (r >= 0) {
                *direct = true;
                return fd;
            }
            close(fd);
            fd = -1;
        }
    }
    fd = open(path, fl);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

static int layer_open(const char *path, bool rdwr, bool buffered, bool force,
                      struct vdi_layer **out);

int vdi_layer_open(const char *path, bool rdwr, bool buffered,
                   struct vdi_layer **out)
{
    return layer_open(path, rdwr, buffered, false, out);
}

int vdi_layer_open_force(const char *path, bool buffered, struct vdi_layer **out)
{
    return layer_open(path, true, buffered, true, out);
}

int vdi_layer_grow(struct vdi_layer *l, uint64_t size)
{
    if (size < l->size || size % VD_SECTOR_SIZE || size > VD_MAX_SIZE)
        return vdi_err(-EINVAL, "cannot resize to %llu bytes", (unsigned long long)size);
    uint64_t old_size = l->size, old_l1 = l->n_l1, old_nblocks = l->nblocks;
    l->size = size;
    set_geometry(l);
    if (l->n_l1 != old_l1) {
        /* The L1 table has no room: the caller stacks a larger delta. */
        l->size = old_size;
        set_geometry(l);
        return -ENOSPC;
    }
    int r = vdi_layer_write_header(l, l->flags);
    if (r < 0) {
        l->size = old_size;
        set_geometry(l);
        return r;
    }
    (void)old_nblocks;
    return 0;
}

static int layer_open(const char *path, bool rdwr, bool buffered, bool force,
                      struct vdi_layer **out)
{
    struct vdi_layer *l = calloc(1, sizeof(*l));
    uint8_t *h = vdi_alloc_aligned(2 * VDF_PAGE);
    int r;
    if (!l || !h || !(l->path = strdup(path))) {
        free(h);
        if (l)
            free(l->path);
        free(l);
        return vdi_err(-ENOMEM, "out of memory");
    }
    static uint64_t next_lid;
    l->refs = 1;
    l->lid = __atomic_add_fetch(&next_lid, 1, __ATOMIC_RELAXED);
    l->fd = open_fd(path, rdwr, buffered, &l->direct);
    if (l->fd < 0) {
        r = l->fd == -EINVAL ? vdi_err(-EINVAL, "%s: not a regular file", path)
                             : vdi_err(l->fd, "%s: %s", path, strerror(-l->fd));
        l->fd = -1;
        goto fail;
    }
    if (!l->direct)
        vdi_fd_set_buffered(l->fd, true);
    l->rdwr = rdwr;
    if (rdwr && flock(l->fd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK
                ? vdi_err(-EBUSY, "%s: layer is open for writing by another process", path)
                : vdi_err(-errno, "%s: lock: %s", path, strerror(errno));
        goto fail;
    }
    r = vdi_pread_full(l->fd, h, 2 * VDF_PAGE, 0);
    if (r < 0 && r != -ENODATA) {
        r = vdi_err(r, "%s: cannot read header: %s", path, strerror(-r));
        goto fail;
    }
    const char *why0 = "", *why1 = "";
    int v0 = header_slot_valid(h, &why0), v1 = header_slot_valid(h + VDF_PAGE, &why1);
    if (!v0 && !v1) {
        if (strcmp(why0, "bad magic") == 0 && strcmp(why1, "bad magic") == 0)
            r = vdi_err(-EINVAL, "%s: not a vdisk layer file (bad magic)", path);
        else
            r = vdi_err(-EUCLEAN, "%s: both header copies are corrupt (%s)", path,
                        v0 ? why1 : why0);
        goto fail;
    }
    uint64_t g0 = v0 ? vdf_le64(h + VDF_H_GEN) : 0, g1 = v1 ? vdf_le64(h + VDF_PAGE + VDF_H_GEN) : 0;
    l->hdr_slot = (v1 && (!v0 || g1 > g0)) ? 1 : 0;
    l->hdr_gen = l->hdr_slot ? g1 : g0;
    memcpy(l->hdr, h + l->hdr_slot * VDF_PAGE, VDF_PAGE);
    r = decode_header(l, l->hdr, rdwr);
    if (r < 0)
        goto fail;
    if (rdwr && !force && (l->flags & VDF_F_FROZEN)) {
        r = vdi_err(-EROFS, "%s: layer is frozen (read-only forever)", path);
        goto fail;
    }
    l->ndir = (l->n_l2 + (1u << VDI_DIR_SHIFT) - 1) >> VDI_DIR_SHIFT;
    l->dir = calloc(l->ndir ? l->ndir : 1, sizeof(*l->dir));
    l->l1 = calloc(l->n_l1 ? l->n_l1 : 1, sizeof(*l->l1));
    if (!l->dir || !l->l1) {
        r = vdi_err(-ENOMEM, "%s: out of memory for the index", path);
        goto fail;
    }
    for (uint64_t i = 0; i < l->n_l1; i++)
        l->l1[i].cur_slot = 1;
    free(h);
    *out = l;
    return 0;
fail:
    free(h);
    layer_free(l);
    return r;
}

/* ------------------------------------------------------------------ */
/* Loading the index                                                   */
/* ------------------------------------------------------------------ */

static int problem(struct vdi_load_report *rep, const struct vdi_layer *l,
                   const char *fmt, ...) VDI_PRINTF(3, 4);

static int problem(struct vdi_load_report *rep, const struct vdi_layer *l,
                   const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!rep)
        return vdi_err(-EUCLEAN, "%s: corrupt layer: %s", l->path, msg);
    rep->problems++;
    if (rep->fn)
        rep->fn(rep->opaque, msg);
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Picks the valid slot with the highest generation.  Returns the slot
 * (0/1), 2 if both slots are empty (never written), -1 if none is valid. */
static int pick_slot(const uint8_t *pair, uint32_t magic, uint64_t index,
                     bool allow_empty, uint64_t *gen)
{
    int best = -1;
    bool empty[2];
    uint64_t g[2] = { 0, 0 };
    bool ok[2];
    for (int s = 0; s < 2; s++) {
        const uint8_t *p = pair + s * VDF_PAGE;
        empty[s] = all_zero(p, VDF_PAGE);
        ok[s] = false;
        if (empty[s] || vdf_le32(p + VDF_P_MAGIC) != magic ||
            vdf_le64(p + VDF_P_INDEX) != index)
            continue;
        uint8_t tmp[VDF_PAGE];
        memcpy(tmp, p, VDF_PAGE);
        vdf_put32(tmp + VDF_P_CRC, 0);
        if (vdf_crc32c(0, tmp, VDF_PAGE) != vdf_le32(p + VDF_P_CRC))
            continue;
        ok[s] = true;
        g[s] = vdf_le64(p + VDF_P_GEN);
    }
    if (ok[0] && (!ok[1] || g[0] >= g[1]))
        best = 0;
    else if (ok[1])
        best = 1;
    if (best >= 0) {
        *gen = g[best];
        return best;
    }
    if (allow_empty && (empty[0] || empty[1])) {
        /* An L1 page never written, or whose first write was lost: empty.
         * (An L2 pair is named by L1 only once its first version is
         * durable, so for L2 pages this case is corruption.) */
        *gen = 0;
        return 2;
    }
    return -1;
}

struct vdi_l2 *vdi_l2_get_or_new(struct vdi_layer *l, uint64_t page)
{
    struct vdi_l2 **c = l->dir[page >> VDI_DIR_SHIFT];
    if (!c) {
        c = calloc(1u << VDI_DIR_SHIFT, sizeof(*c));
        if (!c)
            return NULL;
        l->dir[page >> VDI_DIR_SHIFT] = c;
    }
    struct vdi_l2 *p = c[page & ((1u << VDI_DIR_SHIFT) - 1)];
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->img = vdi_alloc_aligned(VDF_PAGE);
    if (l->digest != VD_DIGEST_NONE)
        p->stale = calloc((l->epp + 7) / 8, 1);
    if (!p->img || (l->digest != VD_DIGEST_NONE && !p->stale)) {
        free(p->img);
        free(p->stale);
        free(p);
        return NULL;
    }
    p->cur_slot = 1;   /* the first version goes to slot 0 */
    p->index = page;
    c[page & ((1u << VDI_DIR_SHIFT) - 1)] = p;
    return p;
}

void vdi_l2_mark_dirty(struct vdi_layer *l, struct vdi_l2 *p)
{
    if (p->dirty)
        return;
    p->dirty = true;
    p->dirty_next = l->dirty_head;
    l->dirty_head = p;
    l->n_dirty++;
}

static int load_l2(struct vdi_layer *l, uint64_t page, uint64_t pair_off,
                   uint64_t file_size, uint8_t *buf, struct vdi_load_report *rep)
{
    if (pair_off % VDF_PAGE || pair_off < l->data_start ||
        pair_off > file_size || file_size - pair_off < VDF_PAGE)
        return problem(rep, l, "L2 page %llu at offset %llu lies outside the file",
                       (unsigned long long)page, (unsigned long long)pair_off);
    int r = vdi_pread_full(l->fd, buf, 2 * VDF_PAGE, pair_off);
    if (r < 0 && r != -ENODATA)
        return vdi_err(r, "%s: read: %s", l->path, strerror(-r));
    uint64_t gen;
    int s = pick_slot(buf, VDF_L2_MAGIC, page, false, &gen);
    if (s < 0)
        return problem(rep, l, "L2 page %llu at offset %llu: both copies are corrupt or empty",
                       (unsigned long long)page, (unsigned long long)pair_off);
    struct vdi_l2 *p = vdi_l2_get_or_new(l, page);
    if (!p)
        return vdi_err(-ENOMEM, "%s: out of memory for the index", l->path);
    p->pair_off = pair_off;
    p->on_disk_l1 = true;
    p->gen = gen;
    p->cur_slot = (uint8_t)s;
    memcpy(p->img, buf + s * VDF_PAGE, VDF_PAGE);
    uint64_t first = page * l->epp;
    for (uint64_t i = 0; i < l->epp; i++) {
        uint8_t *e = vdi_entry(l, p, i);
        uint64_t blk = first + i;
        uint64_t off = vdf_le64(e + VDF_E_OFFSET);
        bool bad = false;
        if (blk >= l->nblocks) {
            if (!all_zero(e, l->entry_size)) {
                r = problem(rep, l, "index entry for block %llu beyond the end of the disk",
                            (unsigned long long)blk);
                bad = true;
            }
        } else if (off % VDF_PAGE || (off && off < l->data_start) ||
                   off > (1ull << 56)) {
            r = problem(rep, l, "block %llu: invalid data offset %llu",
                        (unsigned long long)blk, (unsigned long long)off);
            bad = true;
        } else {
            for (unsigned sub = 0; sub < l->subs && !bad; sub++) {
                unsigned st = vdi_sub_state(e, sub);
                if (st == VDF_SUB_INVALID) {
                    r = problem(rep, l, "block %llu: invalid sub-block state",
                                (unsigned long long)blk);
                    bad = true;
                } else if (st == VDF_SUB_PRESENT &&
                           (!off || off + (uint64_t)(sub + 1) * VD_SUBBLOCK_SIZE > file_size)) {
                    r = problem(rep, l, "block %llu: data of sub-block %u lies outside the file",
                                (unsigned long long)blk, sub);
                    bad = true;
                }
            }
        }
        if (bad) {
            if (r < 0)
                return r;
            memset(e, 0, l->entry_size);   /* check mode: forget the entry */
            continue;
        }
        if (off && off + l->block_size > l->file_end)
            l->file_end = off + l->block_size;
    }
    if (pair_off + 2 * VDF_PAGE > l->file_end)
        l->file_end = pair_off + 2 * VDF_PAGE;
    return 0;
}

#define LOAD_CHUNK (1u << 20)

int vdi_layer_load(struct vdi_layer *l, struct vdi_load_report *rep)
{
    struct stat st;
    if (fstat(l->fd, &st) < 0)
        return vdi_err(-errno, "%s: stat: %s", l->path, strerror(errno));
    uint64_t file_size = (uint64_t)st.st_size;
    /* Creation sizes the file past the L1 table: a shorter file lost its
     * index to truncation, it is not an empty layer. */
    if (file_size < l->data_start) {
        int r = problem(rep, l, "file is truncated: %llu bytes, shorter than its index (%llu)",
                        (unsigned long long)file_size, (unsigned long long)l->data_start);
        if (r < 0)
            return r;
    }
    l->file_end = (file_size + VDF_PAGE - 1) & ~(uint64_t)(VDF_PAGE - 1);
    if (l->file_end < l->data_start)
        l->file_end = l->data_start;

    uint64_t l1_total = l->n_l1 * 2 * VDF_PAGE;
    uint8_t *chunk = vdi_alloc_aligned(l1_total < LOAD_CHUNK ? l1_total : LOAD_CHUNK);
    uint8_t *pair = vdi_alloc_aligned(2 * VDF_PAGE);
    int r = 0;
    if (!chunk || !pair) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    uint64_t l1_bytes = l->n_l1 * 2 * VDF_PAGE;
    for (uint64_t pos = 0; pos < l1_bytes; pos += LOAD_CHUNK) {
        uint64_t len = l1_bytes - pos < LOAD_CHUNK ? l1_bytes - pos : LOAD_CHUNK;
        uint64_t at = l->l1_off + pos;
        if (at >= file_size)
            break;   /* a sparse L1 never written: empty */
        /* Skip chunks that are entirely holes (large, mostly empty disks). */
        off_t d = lseek(l->fd, (off_t)at, SEEK_DATA);
        if (d < 0 || (uint64_t)d >= at + len)
            continue;
        r = vdi_pread_full(l->fd, chunk, len, at);
        if (r < 0 && r != -ENODATA) {
            r = vdi_err(r, "%s: read: %s", l->path, strerror(-r));
            goto out;
        }
        r = 0;
        for (uint64_t k = pos / (2 * VDF_PAGE); k < (pos + len) / (2 * VDF_PAGE); k++) {
            const uint8_t *pp = chunk + (k * 2 * VDF_PAGE - pos);
            uint64_t gen;
            int s = pick_slot(pp, VDF_L1_MAGIC, k, true, &gen);
            if (s < 0) {
                r = problem(rep, l, "L1 page %llu: both copies are corrupt",
                            (unsigned long long)k);
                if (r < 0)
                    goto out;
                continue;
            }
            l->l1[k].gen = gen;
            l->l1[k].cur_slot = s == 2 ? 1 : (uint8_t)s;
            if (s == 2)
                continue;
            const uint8_t *ents = pp + s * VDF_PAGE + VDF_P_HDR;
            for (uint64_t j = 0; j < VDF_L1_EPP; j++) {
                uint64_t off = vdf_le64(ents + j * 8);
                uint64_t page = k * VDF_L1_EPP + j;
                if (!off)
                    continue;
                if (page >= l->n_l2) {
                    r = problem(rep, l, "L1 entry for L2 page %llu beyond the index",
                                (unsigned long long)page);
                } else if (vdi_l2_get(l, page)) {
                    r = problem(rep, l, "L2 page %llu listed twice",
                                (unsigned long long)page);
                } else {
                    r = load_l2(l, page, off, file_size, pair, rep);
                }
                if (r < 0)
                    goto out;
            }
        }
    }
out:
    free(chunk);
    free(pair);
    return r;
}

/* ------------------------------------------------------------------ */
/* Creating and freezing                                               */
/* ------------------------------------------------------------------ */

static int sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* The parent's name as the child records it: its base name when both live
 * in one directory (the pair can then be moved together), else its
 * absolute path.  Either way the UUID decides, the name only helps find it. */
static int make_hint(const char *parent, const char *child, char hint[VD_PARENT_HINT_MAX + 1])
{
    char *pc = strdup(parent), *cc = strdup(child);
    char *pdir = NULL, *cdir = NULL, *preal = NULL;
    int r = 0;
    if (!pc || !cc) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    preal = realpath(parent, NULL);
    pdir = realpath(dirname(pc), NULL);
    cdir = realpath(dirname(cc), NULL);
    if (!preal || !pdir || !cdir) {
        r = vdi_err(-errno, "%s: %s", preal ? child : parent, strerror(errno));
        goto out;
    }
    free(pc);
    pc = strdup(parent);
    if (!pc) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    const char *name = strcmp(pdir, cdir) == 0 || strlen(preal) > VD_PARENT_HINT_MAX
                           ? basename(pc) : preal;
    snprintf(hint, VD_PARENT_HINT_MAX + 1, "%s", name);
out:
    free(pc);
    free(cc);
    free(preal);
    free(pdir);
    free(cdir);
    return r;
}

int vd_layer_create(const char *path, const struct vd_create_opts *opts,
                    vd_uuid *uuid_out)
{
    struct vdi_layer *parent = NULL;
    struct vdi_layer *l = NULL;
    uint8_t *h = NULL;
    int r, fd = -1;

    if (!path || !opts)
        return vdi_err(-EINVAL, "no path or options given");
    uint32_t bs = opts->block_size;
    if (opts->digest != VD_DIGEST_NONE && opts->digest != VD_DIGEST_SHA256)
        return vdi_err(-EINVAL, "unknown digest type %d", (int)opts->digest);
    if (bs && (bs < VD_MIN_BLOCK_SIZE || bs > VD_MAX_BLOCK_SIZE || (bs & (bs - 1))))
        return vdi_err(-EINVAL, "block size %u is not a power of two between 4 KiB and 2 MiB", bs);

    l = calloc(1, sizeof(*l));
    h = vdi_alloc_aligned(VDF_PAGE);
    if (!l || !h) {
        r = vdi_err(-ENOMEM, "out of memory");
        goto out;
    }
    l->fd = -1;
    l->size = opts->size;
    l->digest = opts->digest;

    if (opts->parent) {
        r = vdi_layer_open(opts->parent, false, true, &parent);
        if (r < 0)
            goto out;
        if (bs && bs != parent->block_size) {
            r = vdi_err(-EINVAL, "block size %u differs from the parent's (%u)", bs,
                        parent->block_size);
            goto out;
        }
        bs = parent->block_size;
        if (!l->size)
            l->size = parent->size;
        r = make_hint(opts->parent, path, l->hint);
        if (r < 0)
            goto out;
        l->parent_uuid = parent->uuid;
    }
    if (!bs)
        bs = VD_DEFAULT_BLOCK_SIZE;
    if (l->size == 0 || l->size % VD_SECTOR_SIZE || l->size > VD_MAX_SIZE) {
        r = vdi_err(-EINVAL, "virtual size %llu is not a multiple of 512 between 512 bytes and 64 TiB",
                    (unsigned long long)l->size);
        goto out;
    }
    l->block_shift = (uint32_t)__builtin_ctz(bs);
    l->ctime = (uint64_t)time(NULL);
    set_geometry(l);
    if (opts->uuid && !vd_uuid_is_null(opts->uuid))
        l->uuid = *opts->uuid;
    else if ((r = vdi_uuid_generate(&l->uuid)) < 0)
        goto out;

    if (parent && !(parent->flags & VDF_F_FROZEN)) {
        r = vd_layer_freeze(opts->parent);
        if (r < 0)
            goto out;
    }

    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = vdi_err(-errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    l->fd = fd;
    encode_header(l, h, 1, 0);
    r = vdi_pwrite_full(fd, h, VDF_PAGE, 0, true);
    if (r == 0 && vdi_be->ftruncate(fd, (off_t)l->data_start) < 0)
        r = -errno;
    /* The header pages are rewritten by flushes: give them their blocks
     * now (L1 pages get theirs with the first L2 page they name). */
    if (r == 0)
        r = vdi_reserve(fd, 0, VDF_L1_OFF);
    if (r == 0)
        r = vdi_fdatasync(fd);
    if (r == 0)
        r = sync_parent_dir(path);
    if (r < 0) {
        r = vdi_err(r, "%s: cannot write the new layer: %s", path, strerror(-r));
        unlink(path);
        goto out;
    }
    if (uuid_out)
        *uuid_out = l->uuid;
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    free(l);
    free(h);
    if (parent)
        vdi_layer_put(parent);
    return r;
}

int vd_layer_freeze(const char *path)
{
    struct vdi_layer *l;
    int r = vdi_layer_open(path, true, true, &l);
    if (r == -EROFS && (l = NULL, vdi_layer_open(path, false, true, &l) == 0)) {
        bool frozen = l->flags & VDF_F_FROZEN;
        vdi_layer_put(l);
        if (frozen) {
            vdi_clear_err();
            return 0;
        }
        return vdi_err(-EROFS, "%s: cannot freeze: layer is read-only", path);
    }
    if (r < 0)
        return r;
    if (l->flags & VDF_F_DIRTY) {
        vdi_layer_put(l);
        return vdi_err(-EBUSY, "%s: layer was not closed cleanly; check it before freezing", path);
    }
    r = vdi_layer_write_header(l, l->flags | VDF_F_FROZEN);
    vdi_layer_put(l);
    return r;
}

/* ------------------------------------------------------------------ */
/* Information                                                         */
/* ------------------------------------------------------------------ */

void vdi_layer_fill_info(const struct vdi_layer *l, struct vd_layer_info *info)
{
    memset(info, 0, sizeof(*info));
    info->uuid = l->uuid;
    info->parent_uuid = l->parent_uuid;
    snprintf(info->parent_hint, sizeof(info->parent_hint), "%s", l->hint);
    info->size = l->size;
    info->block_size = l->block_size;
    info->digest = l->digest;
    info->frozen = l->flags & VDF_F_FROZEN;
    info->dirty = l->flags & VDF_F_DIRTY;
    info->create_time = l->ctime;
    uint64_t present = 0, zero = 0;
    for (uint64_t pg = 0; pg < l->n_l2; pg++) {
        const struct vdi_l2 *p = vdi_l2_get(l, pg);
        if (!p)
            continue;
        for (uint64_t i = 0; i < l->epp && pg * l->epp + i < l->nblocks; i++) {
            const uint8_t *e = vdi_entry(l, p, i);
            for (unsigned s = 0; s < l->subs; s++) {
                unsigned st = vdi_sub_state(e, s);
                present += st == VDF_SUB_PRESENT;
                zero += st == VDF_SUB_ZERO;
            }
        }
    }
    info->allocated = present * VD_SUBBLOCK_SIZE;
    info->zeroed = zero * VD_SUBBLOCK_SIZE;
    struct stat st;
    if (fstat(l->fd, &st) == 0)
        info->file_size = (uint64_t)st.st_size;
}

int vdi_layer_header_info(const char *path, struct vd_layer_info *info)
{
    struct vdi_layer *l;
    int r = vdi_layer_open(path, false, true, &l);
    if (r < 0)
        return r;
    memset(info, 0, sizeof(*info));
    info->uuid = l->uuid;
    info->parent_uuid = l->parent_uuid;
    snprintf(info->parent_hint, sizeof(info->parent_hint), "%s", l->hint);
    info->size = l->size;
    info->block_size = l->block_size;
    info->digest = l->digest;
    info->frozen = l->flags & VDF_F_FROZEN;
    info->dirty = l->flags & VDF_F_DIRTY;
    info->create_time = l->ctime;
    struct stat st;
    if (fstat(l->fd, &st) == 0)
        info->file_size = (uint64_t)st.st_size;
    vdi_layer_put(l);
    return 0;
}

int vd_layer_info(const char *path, struct vd_layer_info *info)
{
    struct vdi_layer *l;
    int r = vdi_layer_open(path, false, true, &l);
    if (r < 0)
        return r;
    r = vdi_layer_load(l, NULL);
    if (r == 0)
        vdi_layer_fill_info(l, info);
    vdi_layer_put(l);
    return r;
}
