/*
 * helpers.c - shared helpers of libvdisk's cmocka unit tests (helpers.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

/* ------------------------------------------------------------------ */
/* Environment                                                         */

int tenv_setup(void **state)
{
    struct tenv *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(e->dir, sizeof(e->dir), "%s/vdisk-unit-XXXXXX", tmp);
    if (!mkdtemp(e->dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", e->dir, strerror(errno));
        free(e);
        return -1;
    }
    int rc = vd_ctx_new(0, &e->ctx);
    if (rc < 0) {
        fprintf(stderr, "vd_ctx_new: %s (%s)\n", strerror(-rc), vd_errmsg());
        rm_rf(e->dir);
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

int tenv_teardown(void **state)
{
    struct tenv *e = *state;
    if (!e)
        return 0;
    if (e->ctx)
        vd_ctx_free(e->ctx);
    rm_rf(e->dir);
    free(e);
    *state = NULL;
    return 0;
}

const char *tpath(const struct tenv *e, const char *name)
{
    static char bufs[16][4096 + 256];
    static unsigned next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof(bufs[0]), "%s/%s", e->dir, name);
    return b;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ */
/* Layers and chains                                                   */

void make_layer(const char *path, uint64_t size, uint32_t block_size,
                enum vd_digest digest, const char *parent, vd_uuid *uuid)
{
    struct vd_create_opts o = {
        .size = size,
        .block_size = block_size,
        .digest = digest,
        .parent = parent,
    };
    int rc = vd_layer_create(path, &o, uuid);
    if (rc != 0)
        fail_msg("vd_layer_create(%s) = %d (%s): %s", path, rc,
                 strerror(-rc), vd_errmsg());
}

struct vd_chain *open_chain(struct vd_ctx *ctx, const char *path,
                            unsigned flags)
{
    struct vd_open_opts o = { .flags = flags };
    struct vd_chain *c = NULL;
    int rc = vd_chain_open(ctx, path, &o, &c);
    if (rc != 0)
        fail_msg("vd_chain_open(%s, flags %#x) = %d (%s): %s", path, flags,
                 rc, strerror(-rc), vd_errmsg());
    assert_non_null(c);
    return c;
}

void close_chain(struct vd_chain *chain)
{
    int rc = vd_chain_close(chain);
    if (rc != 0)
        fail_msg("vd_chain_close = %d (%s): %s", rc, strerror(-rc),
                 vd_errmsg());
}

struct vd_layer_info layer_info(const char *path)
{
    struct vd_layer_info info;
    memset(&info, 0, sizeof(info));
    int rc = vd_layer_info(path, &info);
    if (rc != 0)
        fail_msg("vd_layer_info(%s) = %d (%s): %s", path, rc, strerror(-rc),
                 vd_errmsg());
    return info;
}

struct vd_layer_info chain_info(const struct vd_chain *chain, unsigned depth)
{
    struct vd_layer_info info;
    memset(&info, 0, sizeof(info));
    int rc = vd_chain_layer_info(chain, depth, &info);
    if (rc != 0)
        fail_msg("vd_chain_layer_info(depth %u) = %d (%s): %s", depth, rc,
                 strerror(-rc), vd_errmsg());
    return info;
}

/* ------------------------------------------------------------------ */
/* Data patterns                                                       */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t pattern_word(uint64_t word_index, uint32_t seed)
{
    return mix64(word_index ^ ((uint64_t)seed << 43) ^ ((uint64_t)seed * 0x2545f4914f6cdd1dull));
}

uint8_t pattern_byte(uint64_t offset, uint32_t seed)
{
    return (uint8_t)(pattern_word(offset >> 3, seed) >> ((offset & 7) * 8));
}

void fill_pattern(void *buf, size_t len, uint64_t offset, uint32_t seed)
{
    uint8_t *p = buf;
    size_t i = 0;
    while (i < len) {
        uint64_t off = offset + i;
        uint64_t w = pattern_word(off >> 3, seed);
        for (unsigned b = off & 7; b < 8 && i < len; b++, i++)
            p[i] = (uint8_t)(w >> (b * 8));
    }
}

void check_pattern(const void *buf, size_t len, uint64_t offset, uint32_t seed)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        uint8_t want = pattern_byte(offset + i, seed);
        if (p[i] != want)
            fail_msg("byte at virtual offset %llu (+%zu) is 0x%02x, expected "
                     "0x%02x (pattern seed %u)",
                     (unsigned long long)(offset + i), i, p[i], want, seed);
    }
}

void check_zero(const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != 0)
            fail_msg("byte at virtual offset %llu is 0x%02x, expected zero",
                     (unsigned long long)(offset + i), p[i]);
}

void write_pattern(struct vd_chain *chain, uint64_t offset, size_t len,
                   uint32_t seed)
{
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    fill_pattern(buf, len, offset, seed);
    int rc = vd_write(chain, buf, offset, len, 0);
    free(buf);
    if (rc != 0)
        fail_msg("vd_write(off %llu, len %zu) = %d (%s): %s",
                 (unsigned long long)offset, len, rc, strerror(-rc),
                 vd_errmsg());
}

static uint8_t *read_range(struct vd_chain *chain, uint64_t offset, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    memset(buf, 0xa5, len);
    int rc = vd_read(chain, buf, offset, len);
    if (rc != 0) {
        free(buf);
        fail_msg("vd_read(off %llu, len %zu) = %d (%s): %s",
                 (unsigned long long)offset, len, rc, strerror(-rc),
                 vd_errmsg());
    }
    return buf;
}

void expect_pattern(struct vd_chain *chain, uint64_t offset, size_t len,
                    uint32_t seed)
{
    uint8_t *buf = read_range(chain, offset, len);
    /* check_pattern fails by longjmp: find the result first, then free. */
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pattern_byte(offset + i, seed)) {
            uint8_t got = buf[i];
            free(buf);
            fail_msg("read: byte at virtual offset %llu is 0x%02x, expected "
                     "0x%02x (pattern seed %u)",
                     (unsigned long long)(offset + i), got,
                     pattern_byte(offset + i, seed), seed);
        }
    }
    free(buf);
}

void expect_zero(struct vd_chain *chain, uint64_t offset, size_t len)
{
    uint8_t *buf = read_range(chain, offset, len);
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != 0) {
            uint8_t got = buf[i];
            free(buf);
            fail_msg("read: byte at virtual offset %llu is 0x%02x, expected "
                     "zero", (unsigned long long)(offset + i), got);
        }
    }
    free(buf);
}

/* ------------------------------------------------------------------ */
/* Model                                                               */

void model_init(struct model *m, uint64_t size)
{
    m->data = calloc(1, size);
    assert_non_null(m->data);
    m->size = size;
}

void model_free(struct model *m)
{
    free(m->data);
    m->data = NULL;
}

void model_write(struct model *m, struct vd_chain *chain, uint64_t offset,
                 size_t len, uint32_t seed)
{
    assert_true(offset + len <= m->size);
    write_pattern(chain, offset, len, seed);
    fill_pattern(m->data + offset, len, offset, seed);
}

void model_zero(struct model *m, struct vd_chain *chain, uint64_t offset,
                uint64_t len)
{
    assert_true(offset + len <= m->size);
    int rc = vd_zero(chain, offset, len, 0);
    if (rc != 0)
        fail_msg("vd_zero(off %llu, len %llu) = %d (%s): %s",
                 (unsigned long long)offset, (unsigned long long)len, rc,
                 strerror(-rc), vd_errmsg());
    memset(m->data + offset, 0, len);
}

void model_discard(struct model *m, struct vd_chain *chain, uint64_t offset,
                   uint64_t len)
{
    assert_true(offset + len <= m->size);
    int rc = vd_discard(chain, offset, len);
    if (rc != 0)
        fail_msg("vd_discard(off %llu, len %llu) = %d (%s): %s",
                 (unsigned long long)offset, (unsigned long long)len, rc,
                 strerror(-rc), vd_errmsg());
    memset(m->data + offset, 0, len);
}

void model_check(const struct model *m, struct vd_chain *chain)
{
    uint64_t size = vd_chain_size(chain);
    assert_true(size >= m->size);
    const size_t chunk = 1 * MiB;
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t len = size - off < chunk ? (size_t)(size - off) : chunk;
        uint8_t *buf = read_range(chain, off, len);
        for (size_t i = 0; i < len; i++) {
            uint64_t v = off + i;
            uint8_t want = v < m->size ? m->data[v] : 0;
            if (buf[i] != want) {
                uint8_t got = buf[i];
                free(buf);
                fail_msg("model mismatch at virtual offset %llu: read 0x%02x,"
                         " expected 0x%02x", (unsigned long long)v, got, want);
            }
        }
        free(buf);
    }
}

/* ------------------------------------------------------------------ */
/* Misc                                                                */

uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return n ? rng_next(state) % n : 0;
}

void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    ssize_t n = len ? write(fd, data, len) : 0;
    close(fd);
    if (n != (ssize_t)len)
        fail_msg("write %s failed", path);
}

uint8_t *read_whole_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        fail_msg("fstat %s: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)done);
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    close(fd);
    if (done != n) {
        free(buf);
        fail_msg("short read of %s", path);
    }
    *len = n;
    return buf;
}

void patch_file(const char *path, uint64_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    ssize_t n = pwrite(fd, data, len, (off_t)off);
    close(fd);
    if (n != (ssize_t)len)
        fail_msg("pwrite %s failed", path);
}

bool file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

uint64_t file_allocated_bytes(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_blocks * 512;
}

bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) < 0 || stat(b, &sb) < 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void msgs_report(void *opaque, const char *msg)
{
    struct msgs *ms = opaque;
    /* No cmocka assertion here: failing would longjmp through the library.
     * A NULL message is kept as "" and caught by the tests that read it. */
    if (ms->n < MSGS_MAX)
        ms->m[ms->n] = strdup(msg ? msg : "");
    ms->n++;
}

void msgs_free(struct msgs *ms)
{
    for (unsigned i = 0; i < ms->n && i < MSGS_MAX; i++)
        free(ms->m[i]);
    memset(ms, 0, sizeof(*ms));
}
