/*
 * test-io.c - opening and closing chains, and the synchronous I/O calls
 * (vd_read, vd_write, vd_zero, vd_discard, vd_flush) on a single layer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define SIZE (4 * MiB)

static const char *make_std(struct tenv *e, const char *name, uint32_t bs)
{
    const char *p = tpath(e, name);
    make_layer(p, SIZE, bs, VD_DIGEST_NONE, NULL, NULL);
    return p;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */

static void test_open_close_rdwr(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);

    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 1);
    assert_true(vd_chain_writable(c));
    assert_int_equal(vd_chain_size(c), SIZE);
    assert_int_equal(vd_chain_block_size(c), VD_DEFAULT_BLOCK_SIZE);
    assert_true(same_file(vd_chain_layer_path(c, 1), p));
    assert_null(vd_chain_layer_path(c, 0));
    assert_null(vd_chain_layer_path(c, 2));

    /* Open for writing = dirty, seen from the chain and from the file. */
    struct vd_layer_info ci = chain_info(c, 1);
    assert_true(ci.dirty);
    assert_false(ci.frozen);
    assert_int_equal(ci.size, SIZE);
    assert_true(layer_info(p).dirty);
    assert_memory_equal(ci.uuid.b, layer_info(p).uuid.b, 16);

    close_chain(c);
    assert_false(layer_info(p).dirty);
}

static void test_open_readonly(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 65536, 8192, 3);
    close_chain(c);

    /* opts NULL: read-only with defaults (O_DIRECT). */
    c = NULL;
    assert_rc(vd_chain_open(e->ctx, p, NULL, &c), 0);
    assert_non_null(c);
    assert_false(vd_chain_writable(c));
    assert_false(layer_info(p).dirty);     /* read-only opens don't dirty */
    expect_pattern(c, 65536, 8192, 3);

    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    assert_rc(vd_write(c, buf, 0, 4096, 0), -EROFS);
    assert_rc(vd_write(c, buf, 65536, 4096, VD_IO_FUA), -EROFS);
    assert_rc(vd_zero(c, 65536, 4096, 0), -EROFS);
    assert_rc(vd_discard(c, 65536, 4096), -EROFS);
    /* Nothing changed. */
    expect_pattern(c, 65536, 8192, 3);
    expect_zero(c, 0, 4096);
    close_chain(c);

    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    assert_false(vd_chain_writable(c));
    assert_rc(vd_write(c, buf, 0, 512, 0), -EROFS);
    close_chain(c);

    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_zero(c, 0, 65536);
    expect_pattern(c, 65536, 8192, 3);
    close_chain(c);
}

static void test_open_frozen_rdwr(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    assert_rc(vd_layer_freeze(p), 0);
    struct vd_open_opts o = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc(vd_chain_open(e->ctx, p, &o, &c), -EROFS);
    assert_errmsg();
    o.flags = VD_OPEN_RDWR;
    assert_rc(vd_chain_open(e->ctx, p, &o, &c), -EROFS);
    assert_false(layer_info(p).dirty);

    /* A parent frozen by creating a child refuses writers as well. */
    const char *b = make_std(e, "b.vdk", 0);
    make_layer(tpath(e, "b-child.vdk"), 0, 0, VD_DIGEST_NONE, b, NULL);
    o.flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED;
    assert_rc(vd_chain_open(e->ctx, b, &o, &c), -EROFS);
}

static void test_open_missing(void **state)
{
    struct tenv *e = *state;
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc(vd_chain_open(e->ctx, tpath(e, "missing.vdk"), &o, &c), -ENOENT);
    assert_errmsg();
    o.flags = VD_OPEN_RDWR;
    assert_rc(vd_chain_open(e->ctx, tpath(e, "missing.vdk"), &o, &c), -ENOENT);
    assert_errmsg();
    /* Opening for writing must not create the file. */
    assert_false(file_exists(tpath(e, "missing.vdk")));
}

static void try_open_junk(struct tenv *e, const char *p, const char *what)
{
    static const unsigned flag_sets[] = {
        0, VD_OPEN_BUFFERED, VD_OPEN_RDWR | VD_OPEN_BUFFERED, VD_OPEN_RDWR,
    };
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct vd_open_opts o = { .flags = flag_sets[i] };
        struct vd_chain *c = NULL;
        int rc = vd_chain_open(e->ctx, p, &o, &c);
        if (rc != -EINVAL && rc != -EUCLEAN)
            fail_msg("opening %s (flags %#x) returned %d, expected -EINVAL or "
                     "-EUCLEAN", what, flag_sets[i], rc);
        assert_errmsg();
    }
}

static void test_open_not_a_layer(void **state)
{
    struct tenv *e = *state;

    const char *empty = tpath(e, "empty.vdk");
    write_file(empty, "", 0);
    try_open_junk(e, empty, "an empty file");
    /* A refused open for writing must not have written anything. */
    assert_int_equal(file_allocated_bytes(empty), 0);

    const size_t n = 1 * MiB;
    uint8_t *junk = malloc(n);
    assert_non_null(junk);
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++)
        junk[i] = (uint8_t)rng_next(&s);
    const char *rnd = tpath(e, "random.vdk");
    write_file(rnd, junk, n);
    try_open_junk(e, rnd, "a file of random bytes");
    size_t m;
    uint8_t *after = read_whole_file(rnd, &m);
    assert_int_equal(m, n);
    assert_memory_equal(after, junk, n);
    free(after);

    const char *zeros = tpath(e, "zeros.vdk");
    memset(junk, 0, n);
    write_file(zeros, junk, 8192);
    try_open_junk(e, zeros, "a file of zeroes");

    const char *tiny = tpath(e, "tiny.vdk");
    write_file(tiny, "VDK", 3);
    try_open_junk(e, tiny, "a 3-byte file");
    free(junk);
}

/* The default open (O_DIRECT, or its buffered fallback) reads and writes
 * the same data as a buffered one, with aligned and misaligned buffers. */
static void test_open_default_direct(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    assert_true(vd_chain_writable(c));

    void *abuf = NULL;
    assert_int_equal(posix_memalign(&abuf, 4096, 3 * 65536), 0);
    fill_pattern(abuf, 3 * 65536, 65536, 1);
    assert_rc(vd_write(c, abuf, 65536, 3 * 65536, 0), 0);

    uint8_t *raw = malloc(8192 + 1);
    assert_non_null(raw);
    fill_pattern(raw + 1, 8192, 1 * MiB + 512, 2);
    assert_rc(vd_write(c, raw + 1, 1 * MiB + 512, 8192, 0), 0);

    memset(abuf, 0, 3 * 65536);
    assert_rc(vd_read(c, abuf, 65536, 3 * 65536), 0);
    check_pattern(abuf, 3 * 65536, 65536, 1);
    memset(raw, 0, 8193);
    assert_rc(vd_read(c, raw + 1, 1 * MiB + 512, 8192), 0);
    check_pattern(raw + 1, 8192, 1 * MiB + 512, 2);
    close_chain(c);

    /* Reopen buffered: the same bytes. */
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 65536, 3 * 65536, 1);
    expect_pattern(c, 1 * MiB + 512, 8192, 2);
    expect_zero(c, 0, 65536);
    expect_zero(c, 1 * MiB, 512);
    close_chain(c);
    /* And default read-only. */
    c = open_chain(e->ctx, p, 0);
    expect_pattern(c, 65536, 3 * 65536, 1);
    expect_pattern(c, 1 * MiB + 512, 8192, 2);
    close_chain(c);
    free(abuf);
    free(raw);
}

/* ------------------------------------------------------------------ */
/* Reads and writes                                                    */

static void fresh_reads_zero(struct tenv *e, unsigned flags)
{
    char name[32];
    snprintf(name, sizeof(name), "fresh-%x.vdk", flags);
    const char *p = make_std(e, name, 0);
    struct vd_chain *c = open_chain(e->ctx, p, flags);
    uint8_t *buf = malloc(SIZE);
    assert_non_null(buf);
    memset(buf, 0xaa, SIZE);
    assert_rc(vd_read(c, buf, 0, SIZE), 0);
    check_zero(buf, SIZE, 0);
    memset(buf, 0xaa, 4096);
    assert_rc(vd_read(c, buf, SIZE - 512, 512), 0);
    check_zero(buf, 512, SIZE - 512);
    free(buf);
    close_chain(c);
}

static void test_fresh_reads_zero(void **state)
{
    struct tenv *e = *state;
    fresh_reads_zero(e, VD_OPEN_BUFFERED);
    fresh_reads_zero(e, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    fresh_reads_zero(e, 0);
    fresh_reads_zero(e, VD_OPEN_RDWR);
}

struct range {
    uint64_t off;
    uint64_t len;
};

/* Writes at many offsets and lengths for one block size; every write is
 * read back at once, and the whole disk is compared with a model after
 * all of them and again after reopening. */
static void write_read_ranges(struct tenv *e, uint32_t bs, unsigned flags)
{
    char name[64];
    snprintf(name, sizeof(name), "wr-%u-%x.vdk", bs, flags);
    const char *p = tpath(e, name);
    const uint64_t size = bs >= 1 * MiB ? 8ull * bs : 8 * MiB;
    make_layer(p, size, bs, VD_DIGEST_NONE, NULL, NULL);
    const struct range ranges[] = {
        { 0, 512 },
        { 512, 512 },
        { 4096 - 512, 1024 },                  /* crosses a sub-block */
        { 1000 * 512, 3 * 512 },               /* not 4 KiB aligned */
        { 7 * 512, 9 * 512 },
        { bs - 512, 1024 },                    /* crosses a block */
        { 2 * (uint64_t)bs, bs },              /* a whole block */
        { 4 * (uint64_t)bs + 512, 3 * (uint64_t)bs }, /* several blocks */
        { 3 * MiB - 4096, 4096 },
        { 3 * MiB - 2048, 8192 },              /* overlaps the previous */
        { size - 512, 512 },                   /* last sector */
        { size - 2 * (uint64_t)bs - 4096, 2 * (uint64_t)bs + 4096 }, /* to the end */
        { 5 * MiB + 512, 130 * KiB },
        { 1 * MiB, 1 * MiB },
    };
    struct model m;
    model_init(&m, size);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | flags);
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        const struct range *r = &ranges[i];
        model_write(&m, c, r->off, r->len, 100 + (uint32_t)i);
        expect_pattern(c, r->off, r->len, 100 + (uint32_t)i);
    }
    model_check(&m, c);
    close_chain(c);

    c = open_chain(e->ctx, p, flags);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

static void test_write_read_ranges(void **state)
{
    struct tenv *e = *state;
    write_read_ranges(e, 4096, VD_OPEN_BUFFERED);
    write_read_ranges(e, 65536, VD_OPEN_BUFFERED);
    write_read_ranges(e, VD_MAX_BLOCK_SIZE, VD_OPEN_BUFFERED);
}

static void test_write_read_ranges_direct(void **state)
{
    struct tenv *e = *state;
    write_read_ranges(e, 65536, 0);
    write_read_ranges(e, 8192, 0);
}

static void test_misaligned(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 16384, 1);

    uint8_t buf[8192];
    memset(buf, 0xee, sizeof(buf));
    static const struct range bad[] = {
        { 1, 512 }, { 511, 512 }, { 256, 4096 }, { 0, 1 }, { 0, 511 },
        { 0, 513 }, { 512, 4095 }, { 4097, 1024 }, { 1023, 1 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t off = bad[i].off;
        size_t len = (size_t)bad[i].len;
        if (vd_write(c, buf, off, len, 0) != -EINVAL)
            fail_msg("vd_write(%llu, %zu) not refused with -EINVAL",
                     (unsigned long long)off, len);
        if (vd_read(c, buf, off, len) != -EINVAL)
            fail_msg("vd_read(%llu, %zu) not refused with -EINVAL",
                     (unsigned long long)off, len);
        if (vd_zero(c, off, len, 0) != -EINVAL)
            fail_msg("vd_zero(%llu, %zu) not refused with -EINVAL",
                     (unsigned long long)off, len);
        if (vd_discard(c, off, len) != -EINVAL)
            fail_msg("vd_discard(%llu, %zu) not refused with -EINVAL",
                     (unsigned long long)off, len);
    }
    assert_errmsg();
    /* The refused requests changed nothing. */
    expect_pattern(c, 0, 16384, 1);
    close_chain(c);
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 0, 16384, 1);
    close_chain(c);
}

static void test_beyond_end(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, SIZE - 8192, 8192, 4);

    uint8_t buf[8192];
    memset(buf, 0x11, sizeof(buf));
    static const struct range bad[] = {
        { SIZE, 512 },
        { SIZE - 512, 1024 },
        { SIZE - 4096, 8192 },
        { SIZE + 4096, 4096 },
        { 1ull << 50, 512 },
        { 0, SIZE + 512 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t off = bad[i].off, len = bad[i].len;
        /* Read and write only with lengths our buffer holds. */
        if (len <= sizeof(buf)) {
            if (vd_write(c, buf, off, len, 0) != -ENOSPC)
                fail_msg("vd_write(%llu, %llu) not refused with -ENOSPC",
                         (unsigned long long)off, (unsigned long long)len);
            if (vd_read(c, buf, off, len) != -ENOSPC)
                fail_msg("vd_read(%llu, %llu) not refused with -ENOSPC",
                         (unsigned long long)off, (unsigned long long)len);
        }
        if (vd_zero(c, off, len, 0) != -ENOSPC)
            fail_msg("vd_zero(%llu, %llu) not refused with -ENOSPC",
                     (unsigned long long)off, (unsigned long long)len);
        if (vd_discard(c, off, len) != -ENOSPC)
            fail_msg("vd_discard(%llu, %llu) not refused with -ENOSPC",
                     (unsigned long long)off, (unsigned long long)len);
    }
    assert_errmsg();
    expect_pattern(c, SIZE - 8192, 8192, 4);
    /* The last sector itself is fine. */
    write_pattern(c, SIZE - 512, 512, 5);
    expect_pattern(c, SIZE - 512, 512, 5);
    close_chain(c);
}

/* offset + length wraps around 2^64: refused, no crash, no write. */
static void test_overflow(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 65536, 6);

    uint8_t buf[512];
    memset(buf, 0x77, sizeof(buf));
    const uint64_t huge_off = UINT64_MAX - 511;        /* multiple of 512 */
    assert_rc_either(vd_write(c, buf, huge_off, 512, 0), -ENOSPC, -EINVAL);
    assert_rc_either(vd_read(c, buf, huge_off, 512), -ENOSPC, -EINVAL);
    assert_rc_either(vd_zero(c, huge_off, 512, 0), -ENOSPC, -EINVAL);
    assert_rc_either(vd_discard(c, huge_off, 512), -ENOSPC, -EINVAL);
    /* A small offset with a length that wraps. */
    assert_rc_either(vd_zero(c, 1024, UINT64_MAX - 511, 0), -ENOSPC, -EINVAL);
    assert_rc_either(vd_discard(c, 1024, UINT64_MAX - 511), -ENOSPC, -EINVAL);
    assert_rc_either(vd_zero(c, 512, UINT64_MAX & ~511ull, 0), -ENOSPC, -EINVAL);
    /* The library must refuse before touching the (small) buffer. */
    assert_rc_either(vd_read(c, buf, 1024, SIZE_MAX - 511), -ENOSPC, -EINVAL);
    assert_rc_either(vd_write(c, buf, 1024, SIZE_MAX - 511, 0), -ENOSPC, -EINVAL);
    assert_rc_either(vd_read(c, buf, huge_off, SIZE_MAX - 511), -ENOSPC, -EINVAL);
    assert_errmsg();

    expect_pattern(c, 0, 65536, 6);
    expect_zero(c, 65536, 65536);
    close_chain(c);
}

static void test_zero_length(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 8192, 7);
    uint8_t buf[512];
    memset(buf, 0x42, sizeof(buf));
    assert_rc(vd_write(c, buf, 0, 0, 0), 0);
    assert_rc(vd_write(c, buf, 4096, 0, VD_IO_FUA), 0);
    assert_rc(vd_read(c, buf, 0, 0), 0);
    assert_rc(vd_zero(c, 0, 0, 0), 0);
    assert_rc(vd_discard(c, 4096, 0), 0);
    /* At the very end of the disk a zero-length request is in range. */
    assert_rc(vd_write(c, buf, SIZE, 0, 0), 0);
    assert_rc(vd_read(c, buf, SIZE, 0), 0);
    assert_rc(vd_zero(c, SIZE, 0, 0), 0);
    assert_rc(vd_discard(c, SIZE, 0), 0);
    /* Nothing happened. */
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0x42);
    expect_pattern(c, 0, 8192, 7);
    assert_int_equal(chain_info(c, 1).allocated, 8192);
    close_chain(c);
}

static void test_persist_reopen(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 4096);
    struct model m;
    model_init(&m, SIZE);

    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(&m, c, 0, 4096, 1);
    model_write(&m, c, 100 * 4096 + 512, 3 * 512, 2);
    model_write(&m, c, SIZE - 65536, 65536, 3);
    close_chain(c);

    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    model_check(&m, c);
    close_chain(c);

    /* A second writer session on top of the first. */
    c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    model_write(&m, c, 2048, 4096, 4);
    model_zero(&m, c, SIZE - 32768, 8192);
    close_chain(c);

    c = open_chain(e->ctx, p, 0);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

static void test_fua_and_flush(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_rc(vd_flush(c), 0);      /* nothing to flush yet */

    uint8_t *buf = malloc(65536);
    assert_non_null(buf);
    fill_pattern(buf, 65536, 131072, 8);
    assert_rc(vd_write(c, buf, 131072, 65536, VD_IO_FUA), 0);
    expect_pattern(c, 131072, 65536, 8);
    assert_rc(vd_zero(c, 131072 + 4096, 4096, VD_IO_FUA), 0);
    expect_zero(c, 131072 + 4096, 4096);
    write_pattern(c, 0, 4096, 9);
    assert_rc(vd_flush(c), 0);
    assert_rc(vd_flush(c), 0);
    close_chain(c);

    /* The same in a default (O_DIRECT) open. */
    c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    fill_pattern(buf, 8192, 1 * MiB, 10);
    assert_rc(vd_write(c, buf, 1 * MiB, 8192, VD_IO_FUA), 0);
    assert_rc(vd_flush(c), 0);
    close_chain(c);

    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 0, 4096, 9);
    expect_pattern(c, 131072, 4096, 8);
    expect_zero(c, 131072 + 4096, 4096);
    expect_pattern(c, 131072 + 8192, 65536 - 8192, 8);
    expect_pattern(c, 1 * MiB, 8192, 10);
    close_chain(c);
    free(buf);
}

/* ------------------------------------------------------------------ */
/* Zero and discard                                                    */

typedef void (*erase_fn)(struct model *m, struct vd_chain *c, uint64_t off,
                         uint64_t len);

/* Zero or discard over written data, in whole blocks, whole sub-blocks,
 * single sectors and across block boundaries; the rest keeps its data. */
static void erase_ranges(struct tenv *e, erase_fn erase, const char *name,
                         unsigned flags)
{
    const char *p = tpath(e, name);
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct model m;
    model_init(&m, SIZE);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | flags);
    model_write(&m, c, 0, 1 * MiB, 1);

    erase(&m, c, 65536, 65536);                    /* a whole block */
    erase(&m, c, 3 * 4096 + 1024, 512);            /* a sector mid sub-block */
    erase(&m, c, 5 * 4096, 4096);                  /* a whole sub-block */
    erase(&m, c, 4 * 65536 - 2048, 4096);          /* across a block edge */
    erase(&m, c, 6 * 65536 + 512, 3 * 65536 - 1024); /* multi-block, ragged */
    erase(&m, c, 1 * MiB - 512, 512);              /* last written sector */
    model_check(&m, c);

    /* Zeroed ranges written again partially: the unwritten rest of their
     * sub-blocks still reads zero (not stale data). */
    model_write(&m, c, 65536 + 1024, 512, 2);
    model_write(&m, c, 5 * 4096 + 2048, 1024, 3);
    model_check(&m, c);

    /* Erasing where nothing was written is fine and reads zero. */
    erase(&m, c, 2 * MiB, 65536 + 4096);
    erase(&m, c, 3 * MiB + 512, 512);
    model_check(&m, c);
    close_chain(c);

    c = open_chain(e->ctx, p, flags);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

static void zero_erase(struct model *m, struct vd_chain *c, uint64_t off,
                       uint64_t len)
{
    model_zero(m, c, off, len);
}

static void discard_erase(struct model *m, struct vd_chain *c, uint64_t off,
                          uint64_t len)
{
    model_discard(m, c, off, len);
}

static void zero_fua_erase(struct model *m, struct vd_chain *c, uint64_t off,
                           uint64_t len)
{
    assert_rc(vd_zero(c, off, len, VD_IO_FUA), 0);
    memset(m->data + off, 0, len);
}

static void test_zero_ranges(void **state)
{
    struct tenv *e = *state;
    erase_ranges(e, zero_erase, "z.vdk", VD_OPEN_BUFFERED);
    erase_ranges(e, zero_fua_erase, "zf.vdk", VD_OPEN_BUFFERED);
    erase_ranges(e, zero_erase, "zd.vdk", 0);
}

static void test_discard_ranges(void **state)
{
    struct tenv *e = *state;
    erase_ranges(e, discard_erase, "d.vdk", VD_OPEN_BUFFERED);
    erase_ranges(e, discard_erase, "dd.vdk", 0);
}

/* Zeroing a whole written block stops counting it as allocated data. */
static void test_zero_releases_data(void **state)
{
    struct tenv *e = *state;
    const char *p = make_std(e, "a.vdk", 0);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 4 * 65536, 1);
    assert_int_equal(chain_info(c, 1).allocated, 4 * 65536);
    assert_rc(vd_zero(c, 65536, 65536, 0), 0);
    assert_int_equal(chain_info(c, 1).allocated, 3 * 65536);
    /* A 512-byte zero inside a sub-block keeps it allocated. */
    assert_rc(vd_zero(c, 1024, 512, 0), 0);
    assert_int_equal(chain_info(c, 1).allocated, 3 * 65536);
    /* Discard "may" release space: it never adds any. */
    assert_rc(vd_discard(c, 2 * 65536, 65536), 0);
    uint64_t a = chain_info(c, 1).allocated;
    assert_true(a == 2 * 65536 || a == 3 * 65536);
    close_chain(c);
    assert_int_equal(layer_info(p).allocated, a);
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 0, 1024, 1);
    expect_zero(c, 1024, 512);
    expect_pattern(c, 1536, 65536 - 1536, 1);
    expect_zero(c, 65536, 2 * 65536);
    expect_pattern(c, 3 * 65536, 65536, 1);
    close_chain(c);
}

/* ------------------------------------------------------------------ */
/* Buffers                                                             */

static void odd_buffers(struct tenv *e, const char *name, unsigned flags)
{
    const char *p = tpath(e, name);
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | flags);
    static const struct range rs[] = {
        { 0, 512 }, { 4096, 4096 }, { 65536 - 1536, 5120 },
        { 3 * 65536, 2 * 65536 }, { 1 * MiB + 512, 7 * 512 },
    };
    for (unsigned shift = 1; shift < 8; shift += 2) {
        for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
            uint32_t seed = 50 + shift * 10 + (uint32_t)i;
            size_t len = (size_t)rs[i].len;
            uint8_t *raw = malloc(len + 16);
            assert_non_null(raw);
            uint8_t *b = raw + shift;
            fill_pattern(b, len, rs[i].off, seed);
            /* Guard bytes around the buffer must survive the read. */
            memset(raw, 0xcd, shift);
            assert_rc(vd_write(c, b, rs[i].off, len, 0), 0);
            memset(b, 0, len);
            memset(b + len, 0xcd, 16 - shift);
            assert_rc(vd_read(c, b, rs[i].off, len), 0);
            check_pattern(b, len, rs[i].off, seed);
            for (unsigned g = 0; g < shift; g++)
                assert_int_equal(raw[g], 0xcd);
            for (unsigned g = 0; g < 16 - shift; g++)
                assert_int_equal(b[len + g], 0xcd);
            free(raw);
        }
    }
    close_chain(c);
    c = open_chain(e->ctx, p, flags);
    for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++)
        expect_pattern(c, rs[i].off, rs[i].len, 50 + 7 * 10 + (uint32_t)i);
    close_chain(c);
}

static void test_odd_buffers(void **state)
{
    struct tenv *e = *state;
    odd_buffers(e, "direct.vdk", 0);
    odd_buffers(e, "buffered.vdk", VD_OPEN_BUFFERED);
}

/* ------------------------------------------------------------------ */
/* Random operations against a model                                   */

static void random_ops(struct tenv *e, const char *name, uint32_t bs,
                       unsigned flags, uint64_t seed)
{
    const char *p = tpath(e, name);
    const uint64_t size = 2 * MiB;
    make_layer(p, size, bs, VD_DIGEST_NONE, NULL, NULL);
    struct model m;
    model_init(&m, size);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | flags);
    uint64_t s = seed;
    const uint64_t sectors = size / 512;
    for (int i = 0; i < 400; i++) {
        uint64_t op = rng_below(&s, 10);
        uint64_t off = rng_below(&s, sectors) * 512;
        uint64_t maxlen = (size - off) / 512;
        uint64_t len = (1 + rng_below(&s, maxlen < 300 ? maxlen : 300)) * 512;
        if (op < 6) {
            model_write(&m, c, off, len, (uint32_t)(1000 + i));
        } else if (op < 8) {
            model_zero(&m, c, off, len);
        } else if (op < 9) {
            model_discard(&m, c, off, len);
        } else {
            uint8_t *buf = malloc(len);
            assert_non_null(buf);
            assert_rc(vd_read(c, buf, off, len), 0);
            if (memcmp(buf, m.data + off, len) != 0) {
                free(buf);
                fail_msg("op %d: read at %llu+%llu differs from the model "
                         "(seed %llu)", i, (unsigned long long)off,
                         (unsigned long long)len, (unsigned long long)seed);
            }
            free(buf);
        }
        if (i % 100 == 99)
            assert_rc(vd_flush(c), 0);
    }
    model_check(&m, c);
    close_chain(c);
    c = open_chain(e->ctx, p, flags);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

static void test_random_ops(void **state)
{
    struct tenv *e = *state;
    random_ops(e, "r1.vdk", 4096, VD_OPEN_BUFFERED, 1);
    random_ops(e, "r2.vdk", 65536, VD_OPEN_BUFFERED, 2);
    random_ops(e, "r3.vdk", 65536, 0, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_close_rdwr, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_open_readonly, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_open_frozen_rdwr, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_open_missing, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_open_not_a_layer, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_open_default_direct, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_fresh_reads_zero, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_write_read_ranges, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_write_read_ranges_direct, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_misaligned, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_beyond_end, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_overflow, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_zero_length, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_persist_reopen, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_fua_and_flush, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_zero_ranges, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_discard_ranges, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_zero_releases_data, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_odd_buffers, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_random_ops, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
