/*
 * check.c - structural check, leak repair and digest verification of one
 * layer file.
 *
 * Corruption: anything the loader refuses (bad pages, offsets outside the
 * file, invalid states) and any two users of the same file space.
 * Leaks: file space that holds bytes (not a hole) but that no index entry
 * uses: what a crash between a data write and the index flush leaves
 * behind.  Leaks are harmless; --repair punches them out and truncates the
 * tail.  Neither check nor repair changes what the disk reads.
 */
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vd-internal.h"

int vdi_digest_matches(struct vdi_layer *l, uint8_t *entry, bool *match);
int vdi_digest_refresh(struct vdi_layer *l, uint8_t *entry, bool *changed);

struct ext {
    uint64_t off, len;
    uint64_t owner;     /* block number, or UINT64_MAX - page for metadata */
};

struct checker {
    struct vdi_layer *l;
    struct vd_check_result *res;
    vd_report_fn report;
    void *opaque;
    struct ext *ext;
    size_t n, cap;
    int wfd;            /* writable fd when repairing */
};

static void say(struct checker *k, const char *fmt, ...) VDI_PRINTF(2, 3);
static void say(struct checker *k, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (k->report)
        k->report(k->opaque, msg);
}

static void load_report(void *opaque, const char *msg)
{
    struct checker *k = opaque;
    say(k, "ERROR %s", msg);
}

static int add_ext(struct checker *k, uint64_t off, uint64_t len, uint64_t owner)
{
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 1024;
        struct ext *e = realloc(k->ext, nc * sizeof(*e));
        if (!e)
            return vdi_err(-ENOMEM, "out of memory");
        k->ext = e;
        k->cap = nc;
    }
    k->ext[k->n++] = (struct ext){ off, len, owner };
    return 0;
}

static int cmp_ext(const void *a, const void *b)
{
    const struct ext *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Bytes of [a, b) that are allocated in the file (not holes). */
static uint64_t allocated_in(int fd, uint64_t a, uint64_t b)
{
    uint64_t total = 0;
    while (a < b) {
        off_t d = lseek(fd, (off_t)a, SEEK_DATA);
        if (d < 0 || (uint64_t)d >= b)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        uint64_t he = h < 0 ? b : (uint64_t)h;
        if (he > b)
            he = b;
        total += he - (uint64_t)d;
        a = he;
    }
    return total;
}

static void release(struct checker *k, uint64_t a, uint64_t b)
{
    uint64_t leaked = allocated_in(k->l->fd, a, b);
    if (!leaked)
        return;
    k->res->leaked_bytes += leaked;
    say(k, "Leaked space: %llu bytes at offset %llu", (unsigned long long)leaked,
        (unsigned long long)a);
    if (k->wfd >= 0 &&
        vdi_be->fallocate(k->wfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          (off_t)a, (off_t)(b - a)) == 0)
        k->res->repaired++;
}

static int scan(struct checker *k)
{
    struct vdi_layer *l = k->l;
    int r = add_ext(k, 0, l->data_start, UINT64_MAX);
    if (r < 0)
        return r;
    for (uint64_t pg = 0; pg < l->n_l2; pg++) {
        struct vdi_l2 *p = vdi_l2_get(l, pg);
        if (!p)
            continue;
        if ((r = add_ext(k, p->pair_off, 2 * VDF_PAGE, UINT64_MAX - 1 - pg)) < 0)
            return r;
        for (uint64_t i = 0; i < l->epp; i++) {
            uint64_t blk = pg * l->epp + i;
            if (blk >= l->nblocks)
                break;
            uint8_t *e = vdi_entry(l, p, i);
            uint64_t off = vdf_le64(e + VDF_E_OFFSET);
            bool any = off != 0;
            for (unsigned s = 0; s < l->subs && !any; s++)
                any = vdi_sub_state(e, s) != VDF_SUB_ABSENT;
            if (!any)
                continue;
            k->res->blocks_checked++;
            if (!off)
                continue;
            if ((r = add_ext(k, off, l->block_size, blk)) < 0)
                return r;
        }
    }
    return 0;
}

static void describe(char *buf, size_t n, uint64_t owner)
{
    if (owner == UINT64_MAX)
        snprintf(buf, n, "the header and L1 table");
    else if (owner >= UINT64_MAX - 1 - (1ull << 40))
        snprintf(buf, n, "L2 page %llu", (unsigned long long)(UINT64_MAX - 1 - owner));
    else
        snprintf(buf, n, "block %llu", (unsigned long long)owner);
}

static void find_overlaps_and_leaks(struct checker *k, uint64_t file_size)
{
    struct vdi_layer *l = k->l;
    qsort(k->ext, k->n, sizeof(*k->ext), cmp_ext);
    uint64_t end = 0;
    size_t last = 0;
    for (size_t i = 0; i < k->n; i++) {
        struct ext *e = &k->ext[i];
        if (i && e->off < end) {
            char a[64], b[64];
            describe(a, sizeof(a), k->ext[last].owner);
            describe(b, sizeof(b), e->owner);
            k->res->corruptions++;
            say(k, "ERROR %s at offset %llu overlaps %s", b,
                (unsigned long long)e->off, a);
        } else if (e->off > end) {
            release(k, end, e->off < file_size ? e->off : file_size);
        }
        if (e->off + e->len > end) {
            end = e->off + e->len;
            last = i;
        }
    }
    /* Space inside data slots that no present sub-block uses. */
    for (size_t i = 0; i < k->n; i++) {
        struct ext *e = &k->ext[i];
        if (e->owner >= UINT64_MAX - 1 - (1ull << 40))
            continue;
        struct vdi_l2 *p = vdi_l2_get(l, e->owner / l->epp);
        uint8_t *ent = vdi_entry(l, p, e->owner % l->epp);
        for (unsigned s = 0; s < l->subs; s++) {
            if (vdi_sub_state(ent, s) == VDF_SUB_PRESENT)
                continue;
            unsigned t = s;
            while (t + 1 < l->subs && vdi_sub_state(ent, t + 1) != VDF_SUB_PRESENT)
                t++;
            uint64_t a = e->off + (uint64_t)s * VD_SUBBLOCK_SIZE;
            uint64_t b = e->off + (uint64_t)(t + 1) * VD_SUBBLOCK_SIZE;
            if (a < file_size)
                release(k, a, b < file_size ? b : file_size);
            s = t;
        }
    }
    if (file_size > end) {
        uint64_t leaked = allocated_in(l->fd, end, file_size);
        if (leaked) {
            k->res->leaked_bytes += leaked;
            say(k, "Leaked space: %llu bytes at the end of the file",
                (unsigned long long)leaked);
        }
        if (k->wfd >= 0 && vdi_be->ftruncate(k->wfd, (off_t)end) == 0 && leaked)
            k->res->repaired++;
    }
}

static void verify(struct checker *k)
{
    struct vdi_layer *l = k->l;
    if (l->digest == VD_DIGEST_NONE)
        return;   /* nothing to verify: the caller can see info.digest */
    for (uint64_t pg = 0; pg < l->n_l2; pg++) {
        struct vdi_l2 *p = vdi_l2_get(l, pg);
        if (!p)
            continue;
        for (uint64_t i = 0; i < l->epp && pg * l->epp + i < l->nblocks; i++) {
            uint8_t *e = vdi_entry(l, p, i);
            uint64_t off = vdf_le64(e + VDF_E_OFFSET);
            if (!off)
                continue;
            bool ok = false;
            int r = vdi_digest_matches(l, e, &ok);
            if (r == 0 && !ok && k->res->dirty) {
                /* In-place writes since the last flush reach the disk before
                 * the digest that covers them: after a crash the digest may
                 * describe the old data. */
                k->res->digest_stale++;
                say(k, "Warning: block %llu (virtual offset %llu): digest does not match; "
                       "the layer was not closed cleanly, so the block may have been "
                       "written as it went down (--repair re-hashes it)",
                    (unsigned long long)(pg * l->epp + i),
                    (unsigned long long)((pg * l->epp + i) << l->block_shift));
            } else if (r < 0 || !ok) {
                k->res->digest_mismatches++;
                say(k, "ERROR block %llu (virtual offset %llu, file offset %llu): %s",
                    (unsigned long long)(pg * l->epp + i),
                    (unsigned long long)((pg * l->epp + i) << l->block_shift),
                    (unsigned long long)off,
                    r < 0 ? "cannot be read" : "data does not match its digest");
            }
        }
    }
}

/* Repair of a layer closed uncleanly: re-hash every block and store the
 * digests that changed, through the normal flush. */
static int rehash_all(struct checker *k, const char *path)
{
    struct vdi_layer *w;
    int r = vdi_layer_open(path, true, true, &w);
    if (r < 0)
        return r;
    struct vdi_load_report quiet = { 0 };
    r = vdi_layer_load(w, &quiet);
    if (r < 0 || quiet.problems) {
        vdi_layer_put(w);
        return r;   /* structural problems: the check proper reports them */
    }
    uint64_t n = 0;
    for (uint64_t pg = 0; pg < w->n_l2 && r == 0; pg++) {
        struct vdi_l2 *p = vdi_l2_get(w, pg);
        if (!p)
            continue;
        for (uint64_t i = 0; i < w->epp && pg * w->epp + i < w->nblocks; i++) {
            uint8_t *e = vdi_entry(w, p, i);
            bool changed = false;
            if (!vdf_le64(e + VDF_E_OFFSET))
                continue;
            if ((r = vdi_digest_refresh(w, e, &changed)) < 0)
                break;
            if (changed) {
                vdi_l2_mark_dirty(w, p);
                n++;
            }
        }
    }
    if (r == 0)
        r = vdi_layer_flush_sync(w);
    vdi_layer_put(w);
    if (r == 0 && n) {
        k->res->repaired += n;
        say(k, "Re-hashed %llu blocks written before an unclean shutdown",
            (unsigned long long)n);
    }
    return r;
}

int vd_layer_check(const char *path, unsigned flags, struct vd_check_result *res,
                   vd_report_fn report, void *opaque)
{
    struct checker k = { .res = res, .report = report, .opaque = opaque, .wfd = -1 };
    struct vdi_layer *l;
    memset(res, 0, sizeof(*res));
    int r = vdi_layer_open(path, false, true, &l);
    if (r < 0) {
        if (r == -EINVAL || r == -EUCLEAN)
            r = -EUCLEAN;
        return r;
    }
    k.l = l;
    res->dirty = l->flags & VDF_F_DIRTY;
    if (res->dirty)
        say(&k, "Layer was not closed cleanly (dirty flag set)");
    if ((flags & VD_CHECK_REPAIR) && res->dirty && l->digest != VD_DIGEST_NONE &&
        (r = rehash_all(&k, path)) < 0)
        goto out;
    if (flags & VD_CHECK_REPAIR) {
        k.wfd = open(path, O_RDWR | O_CLOEXEC);
        if (k.wfd < 0) {
            r = vdi_err(-errno, "%s: cannot open for repair: %s", path, strerror(errno));
            goto out;
        }
        if (flock(k.wfd, LOCK_EX | LOCK_NB) < 0) {
            r = vdi_err(-EBUSY, "%s: layer is open for writing by another process", path);
            goto out;
        }
    }
    struct vdi_load_report rep = { .fn = load_report, .opaque = &k };
    r = vdi_layer_load(l, &rep);
    if (r < 0)
        goto out;
    res->corruptions += rep.problems;
    if (memcmp(l->uuid.b, l->parent_uuid.b, 16) == 0) {
        res->corruptions++;
        say(&k, "ERROR the layer names itself as its parent");
    }
    struct stat st;
    if (fstat(l->fd, &st) < 0) {
        r = vdi_err(-errno, "%s: stat: %s", path, strerror(errno));
        goto out;
    }
    if ((r = scan(&k)) < 0)
        goto out;
    /* Never release space while the structure is in doubt. */
    if (res->corruptions && k.wfd >= 0) {
        say(&k, "Not repairing: the layer has structural errors");
        close(k.wfd);
        k.wfd = -1;
    }
    find_overlaps_and_leaks(&k, (uint64_t)st.st_size);
    if (flags & VD_CHECK_VERIFY)
        verify(&k);
    if (k.wfd >= 0 && res->dirty) {
        int rfd = l->fd;
        l->fd = k.wfd;
        r = vdi_layer_write_header(l, l->flags & ~VDF_F_DIRTY);
        l->fd = rfd;
        if (r < 0)
            goto out;
        res->repaired++;
        say(&k, "Cleared the dirty flag");
    }
    if (k.wfd >= 0 && vdi_fdatasync(k.wfd) < 0) {
        r = vdi_err(-errno, "%s: sync: %s", path, strerror(errno));
        goto out;
    }
    r = 0;
out:
    if (k.wfd >= 0)
        close(k.wfd);
    free(k.ext);
    vdi_layer_put(l);
    return r;
}
