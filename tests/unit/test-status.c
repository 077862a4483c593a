/*
 * test-status.c - vd_block_status: hole / zero / data extents with the
 * depth of the owning layer, merging, the max argument, and errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define SIZE (4 * MiB)
#define H VD_EXTENT_HOLE
#define Z VD_EXTENT_ZERO
#define D VD_EXTENT_DATA

static const char *type_name(enum vd_extent_type t)
{
    switch (t) {
    case VD_EXTENT_HOLE: return "hole";
    case VD_EXTENT_ZERO: return "zero";
    case VD_EXTENT_DATA: return "data";
    }
    return "?";
}

struct extents {
    size_t n;
    struct vd_extent e[4096];
};

/* Collects the extents of [off, off+len) asking at most `max` at a time
 * and continuing from the end of the last one, checking on the way that
 * every answer is contiguous, within the range and within max. */
static void collect(struct vd_chain *c, uint64_t off, uint64_t len, size_t max,
                    struct extents *out)
{
    out->n = 0;
    uint64_t pos = off, end = off + len;
    struct vd_extent *buf = calloc(max, sizeof(*buf));
    assert_non_null(buf);
    while (pos < end) {
        memset(buf, 0xff, max * sizeof(*buf));
        int n = vd_block_status(c, pos, end - pos, buf, max);
        if (n < 1 || (size_t)n > max) {
            free(buf);
            fail_msg("vd_block_status(%llu, %llu, max %zu) = %d",
                     (unsigned long long)pos, (unsigned long long)(end - pos),
                     max, n);
        }
        for (int i = 0; i < n; i++) {
            const struct vd_extent xv = buf[i], *x = &xv;
            if (x->offset != pos || x->length == 0 || x->length > end - pos ||
                (x->type != H && x->type != Z && x->type != D)) {
                free(buf);
                fail_msg("extent %d of the answer at %llu is {%llu, %llu, %d}",
                         i, (unsigned long long)pos,
                         (unsigned long long)x->offset,
                         (unsigned long long)x->length, (int)x->type);
            }
            if (x->type == H && x->depth != 0) {
                free(buf);
                fail_msg("a hole at %llu has depth %u", (unsigned long long)pos,
                         x->depth);
            }
            /* Merge across calls (a limited answer may split an extent). */
            struct vd_extent *last = out->n ? &out->e[out->n - 1] : NULL;
            if (last && last->type == x->type && last->depth == x->depth &&
                last->offset + last->length == x->offset) {
                last->length += x->length;
            } else {
                assert_true(out->n < sizeof(out->e) / sizeof(out->e[0]));
                out->e[out->n++] = *x;
            }
            pos += x->length;
        }
    }
    free(buf);
}

/* The extents of [off, off+len), in one call with room for all of them:
 * must be exactly `want` (already merged). */
static void expect_extents(struct vd_chain *c, uint64_t off, uint64_t len,
                           const struct vd_extent *want, size_t nwant)
{
    struct vd_extent got[256];
    memset(got, 0xff, sizeof(got));
    int n = vd_block_status(c, off, len, got, 256);
    bool ok = n == (int)nwant;
    for (size_t i = 0; ok && i < nwant; i++)
        ok = got[i].offset == want[i].offset && got[i].length == want[i].length
             && got[i].type == want[i].type && got[i].depth == want[i].depth;
    if (!ok) {
        print_error("vd_block_status(%llu, %llu) returned %d extents:\n",
                    (unsigned long long)off, (unsigned long long)len, n);
        for (int i = 0; i < n && i < 256; i++)
            print_error("  got  {%llu, %llu, %s, depth %u}\n",
                        (unsigned long long)got[i].offset,
                        (unsigned long long)got[i].length,
                        type_name(got[i].type), got[i].depth);
        for (size_t i = 0; i < nwant; i++)
            print_error("  want {%llu, %llu, %s, depth %u}\n",
                        (unsigned long long)want[i].offset,
                        (unsigned long long)want[i].length,
                        type_name(want[i].type), want[i].depth);
        fail();
    }
}

#define X(o, l, t, d) { .offset = (o), .length = (l), .type = (t), .depth = (d) }
#define EXPECT(c, off, len, ...) \
    do { \
        const struct vd_extent w_[] = { __VA_ARGS__ }; \
        expect_extents((c), (off), (len), w_, sizeof(w_) / sizeof(w_[0])); \
    } while (0)

/* ------------------------------------------------------------------ */

static void test_fresh(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    EXPECT(c, 0, SIZE, X(0, SIZE, H, 0));
    EXPECT(c, 4096, 8192, X(4096, 8192, H, 0));
    EXPECT(c, SIZE - 512, 512, X(SIZE - 512, 512, H, 0));
    close_chain(c);

    /* A fresh delta over a fresh base: still one hole. */
    make_layer(tpath(e, "b.vdk"), 0, 0, VD_DIGEST_NONE, p, NULL);
    c = open_chain(e->ctx, tpath(e, "b.vdk"), VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    EXPECT(c, 0, SIZE, X(0, SIZE, H, 0));
    close_chain(c);

    /* And a fresh 64 TiB layer answers with one hole, in memory. */
    make_layer(tpath(e, "huge.vdk"), VD_MAX_SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    c = open_chain(e->ctx, tpath(e, "huge.vdk"), VD_OPEN_BUFFERED);
    EXPECT(c, 0, VD_MAX_SIZE, X(0, VD_MAX_SIZE, H, 0));
    close_chain(c);
}

static void test_data_and_zero(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);

    write_pattern(c, 64 * KiB, 64 * KiB, 1);
    EXPECT(c, 0, SIZE,
           X(0, 64 * KiB, H, 0),
           X(64 * KiB, 64 * KiB, D, 1),
           X(128 * KiB, SIZE - 128 * KiB, H, 0));

    /* A sub-block inside a block: 4 KiB granularity. */
    write_pattern(c, 1 * MiB + 8192, 4096, 2);
    EXPECT(c, 0, SIZE,
           X(0, 64 * KiB, H, 0),
           X(64 * KiB, 64 * KiB, D, 1),
           X(128 * KiB, 1 * MiB - 128 * KiB + 8192, H, 0),
           X(1 * MiB + 8192, 4096, D, 1),
           X(1 * MiB + 12288, SIZE - 1 * MiB - 12288, H, 0));

    /* Zeroing written data: zero, owned by the top layer. */
    assert_rc(vd_zero(c, 64 * KiB + 16 * KiB, 8 * KiB, 0), 0);
    EXPECT(c, 0, 1 * MiB,
           X(0, 64 * KiB, H, 0),
           X(64 * KiB, 16 * KiB, D, 1),
           X(80 * KiB, 8 * KiB, Z, 1),
           X(88 * KiB, 40 * KiB, D, 1),
           X(128 * KiB, 1 * MiB - 128 * KiB, H, 0));
    close_chain(c);

    /* The same after reopening. */
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    EXPECT(c, 0, 1 * MiB,
           X(0, 64 * KiB, H, 0),
           X(64 * KiB, 16 * KiB, D, 1),
           X(80 * KiB, 8 * KiB, Z, 1),
           X(88 * KiB, 40 * KiB, D, 1),
           X(128 * KiB, 1 * MiB - 128 * KiB, H, 0));
    close_chain(c);
}

/* A sector written inside a sub-block makes the whole 4 KiB sub-block
 * data (the rest of it reads zero but is stored). */
static void test_subblock_granularity(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 8192 + 1024, 512, 1);
    struct extents all;
    collect(c, 0, SIZE, 64, &all);
    /* Data covers the written sector and lies within its sub-block. */
    bool found = false;
    for (size_t i = 0; i < all.n; i++) {
        const struct vd_extent *x = &all.e[i];
        if (x->type == D) {
            assert_false(found);
            found = true;
            assert_int_equal(x->depth, 1);
            assert_true(x->offset <= 8192 + 1024);
            assert_true(x->offset + x->length >= 8192 + 1536);
            assert_true(x->offset >= 8192);
            assert_true(x->offset + x->length <= 12288);
        } else {
            assert_int_equal(x->type, H);
        }
    }
    assert_true(found);
    close_chain(c);
}

static void test_delta_depths(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    make_layer(base, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 64 * KiB, 1);
    write_pattern(c, 128 * KiB, 64 * KiB, 2);
    write_pattern(c, 256 * KiB, 64 * KiB, 7);
    assert_rc(vd_zero(c, 256 * KiB, 64 * KiB, 0), 0);
    close_chain(c);

    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    EXPECT(c, 0, SIZE,
           X(0, 64 * KiB, D, 2),
           X(64 * KiB, 64 * KiB, H, 0),
           X(128 * KiB, 64 * KiB, D, 2),
           X(192 * KiB, 64 * KiB, H, 0),
           X(256 * KiB, 64 * KiB, Z, 2),
           X(320 * KiB, SIZE - 320 * KiB, H, 0));

    write_pattern(c, 32 * KiB, 16 * KiB, 3);      /* over parent data */
    write_pattern(c, 64 * KiB, 4 * KiB, 4);       /* over a hole */
    assert_rc(vd_zero(c, 160 * KiB, 8 * KiB, 0), 0);    /* hides parent data */
    assert_rc(vd_discard(c, 184 * KiB, 8 * KiB), 0);   /* hides it too */
    write_pattern(c, 264 * KiB, 4 * KiB, 5);      /* over a parent zero */
    EXPECT(c, 0, SIZE,
           X(0, 32 * KiB, D, 2),
           X(32 * KiB, 16 * KiB, D, 1),
           X(48 * KiB, 16 * KiB, D, 2),
           X(64 * KiB, 4 * KiB, D, 1),
           X(68 * KiB, 60 * KiB, H, 0),
           X(128 * KiB, 32 * KiB, D, 2),
           X(160 * KiB, 8 * KiB, Z, 1),
           X(168 * KiB, 16 * KiB, D, 2),
           X(184 * KiB, 8 * KiB, Z, 1),
           X(192 * KiB, 64 * KiB, H, 0),
           X(256 * KiB, 8 * KiB, Z, 2),
           X(264 * KiB, 4 * KiB, D, 1),
           X(268 * KiB, 52 * KiB, Z, 2),
           X(320 * KiB, SIZE - 320 * KiB, H, 0));

    /* A snapshot: everything moves one level down, new writes at 1. */
    assert_rc(vd_chain_push(c, tpath(e, "top.vdk")), 0);
    write_pattern(c, 0, 4 * KiB, 6);
    EXPECT(c, 0, 128 * KiB,
           X(0, 4 * KiB, D, 1),
           X(4 * KiB, 28 * KiB, D, 3),
           X(32 * KiB, 16 * KiB, D, 2),
           X(48 * KiB, 16 * KiB, D, 3),
           X(64 * KiB, 4 * KiB, D, 2),
           X(68 * KiB, 60 * KiB, H, 0));
    close_chain(c);
}

static void test_merging(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 16384, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    /* Written piecewise, out of order, across several blocks: one extent. */
    write_pattern(c, 4096, 4096, 1);
    write_pattern(c, 0, 4096, 2);
    write_pattern(c, 16384, 16384, 3);
    write_pattern(c, 8192, 8192, 4);
    write_pattern(c, 32768, 65536 + 4096, 5);
    EXPECT(c, 0, SIZE,
           X(0, 102400, D, 1),
           X(102400, SIZE - 102400, H, 0));
    /* Zeroes (over data) next to each other in different calls and
     * blocks: one. */
    write_pattern(c, 1 * MiB, 48 * KiB, 6);
    assert_rc(vd_zero(c, 1 * MiB, 8192, 0), 0);
    assert_rc(vd_zero(c, 1 * MiB + 8192, 8192, 0), 0);
    assert_rc(vd_zero(c, 1 * MiB + 16384, 32768, 0), 0);
    EXPECT(c, 1 * MiB - 4096, 64 * KiB,
           X(1 * MiB - 4096, 4096, H, 0),
           X(1 * MiB, 48 * KiB, Z, 1),
           X(1 * MiB + 48 * KiB, 12 * KiB, H, 0));
    /* The query range clips the extents at both ends. */
    EXPECT(c, 6144, 20480, X(6144, 20480, D, 1));
    EXPECT(c, 98304, 8192, X(98304, 4096, D, 1), X(102400, 4096, H, 0));
    close_chain(c);
}

/* max limits the answer; asking again from the end of the last extent
 * continues, and the pieces add up to the one-call answer. */
static void test_max_and_continue(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    /* 4 KiB of data every 8 KiB over the first 512 KiB, with a zero in
     * every fourth gap: 64 data extents and 64 others, then a hole. */
    for (uint64_t off = 0; off < 512 * KiB; off += 8192) {
        write_pattern(c, off, 4096, (uint32_t)off);
        if ((off / 8192) % 4 == 3) {
            write_pattern(c, off + 4096, 4096, 1);
            assert_rc(vd_zero(c, off + 4096, 4096, 0), 0);
        }
    }
    struct extents *full = malloc(sizeof(*full));
    struct extents *part = malloc(sizeof(*part));
    assert_non_null(full);
    assert_non_null(part);
    collect(c, 0, SIZE, 4096, full);
    assert_int_equal(full->n, 129);

    /* max = 1: exactly the first extent. */
    struct vd_extent one[2];
    memset(one, 0xff, sizeof(one));
    assert_int_equal(vd_block_status(c, 0, SIZE, one, 1), 1);
    assert_int_equal(one[0].offset, 0);
    assert_int_equal(one[0].length, 4096);
    assert_int_equal(one[0].type, D);
    assert_int_equal(one[0].depth, 1);
    /* ...and the slot after it is not written. */
    assert_int_equal(one[1].offset, UINT64_MAX);

    /* Limited answers (collect checks 1 <= n <= max and contiguity) add
     * up to the same list, whatever the limit. */
    static const size_t maxes[] = { 1, 2, 5, 7, 64, 128 };
    for (size_t k = 0; k < sizeof(maxes) / sizeof(maxes[0]); k++) {
        collect(c, 0, SIZE, maxes[k], part);
        assert_int_equal(part->n, full->n);
        for (size_t i = 0; i < full->n; i++) {
            assert_int_equal(part->e[i].offset, full->e[i].offset);
            assert_int_equal(part->e[i].length, full->e[i].length);
            assert_int_equal(part->e[i].type, full->e[i].type);
            assert_int_equal(part->e[i].depth, full->e[i].depth);
        }
    }
    /* The pattern itself. */
    for (size_t i = 0; i < 128; i++) {
        assert_int_equal(full->e[i].offset, i * 4096);
        assert_int_equal(full->e[i].length, 4096);
        if (i % 2 == 0)
            assert_int_equal(full->e[i].type, D);
        else
            assert_int_equal(full->e[i].type, (i / 2) % 4 == 3 ? Z : H);
    }
    assert_int_equal(full->e[128].type, H);
    assert_int_equal(full->e[128].offset, 512 * KiB);
    free(full);
    free(part);
    close_chain(c);
}

static void test_errors(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 8192, 1);
    struct vd_extent x[8];

    assert_rc(vd_block_status(c, SIZE, 512, x, 8), -ENOSPC);
    assert_errmsg();
    assert_rc(vd_block_status(c, 0, SIZE + 512, x, 8), -ENOSPC);
    assert_rc(vd_block_status(c, SIZE - 512, 1024, x, 8), -ENOSPC);
    assert_rc(vd_block_status(c, 1ull << 62, 512, x, 8), -ENOSPC);
    assert_rc_either(vd_block_status(c, UINT64_MAX - 511, 512, x, 8),
                     -ENOSPC, -EINVAL);
    assert_rc_either(vd_block_status(c, 512, UINT64_MAX - 511, x, 8),
                     -ENOSPC, -EINVAL);

    assert_rc(vd_block_status(c, 100, 512, x, 8), -EINVAL);
    assert_errmsg();
    assert_rc(vd_block_status(c, 0, 100, x, 8), -EINVAL);
    assert_rc(vd_block_status(c, 512, 513, x, 8), -EINVAL);
    assert_rc(vd_block_status(c, 1, 4096, x, 8), -EINVAL);

    /* Length 0 describes nothing. */
    assert_rc(vd_block_status(c, 0, 0, x, 8), 0);
    /* The last sector is in range. */
    assert_rc(vd_block_status(c, SIZE - 512, 512, x, 8), 1);
    assert_int_equal(x[0].offset, SIZE - 512);
    assert_int_equal(x[0].length, 512);
    assert_int_equal(x[0].type, H);
    close_chain(c);
}

/* A child larger than its parent: beyond the parent's end is a hole
 * unless the child wrote there. */
static void test_child_larger(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    make_layer(base, 1 * MiB, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 1 * MiB, 1);
    close_chain(c);
    make_layer(child, 2 * MiB, 0, VD_DIGEST_NONE, base, NULL);
    c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    EXPECT(c, 0, 2 * MiB, X(0, 1 * MiB, D, 2), X(1 * MiB, 1 * MiB, H, 0));
    write_pattern(c, 1 * MiB + 64 * KiB, 4096, 2);
    EXPECT(c, 0, 2 * MiB,
           X(0, 1 * MiB, D, 2),
           X(1 * MiB, 64 * KiB, H, 0),
           X(1 * MiB + 64 * KiB, 4096, D, 1),
           X(1 * MiB + 68 * KiB, 1 * MiB - 68 * KiB, H, 0));
    close_chain(c);
}

/* Status reflects writes completed through the asynchronous API too. */
static void done_cb(void *opaque, int result)
{
    int *r = opaque;
    *r = result;
}

static void test_after_aio(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    void *buf = NULL;
    assert_int_equal(posix_memalign(&buf, 4096, 65536), 0);
    fill_pattern(buf, 65536, 2 * MiB, 3);
    int result = 1;
    assert_rc(vd_aio_write(c, buf, 2 * MiB, 65536, 0, done_cb, &result), 0);
    for (int i = 0; i < 10000 && result == 1; i++)
        assert_true(vd_ctx_poll(e->ctx, 1000) >= 0);
    assert_int_equal(result, 0);
    EXPECT(c, 0, SIZE,
           X(0, 2 * MiB, H, 0),
           X(2 * MiB, 64 * KiB, D, 1),
           X(2 * MiB + 64 * KiB, SIZE - 2 * MiB - 64 * KiB, H, 0));
    free(buf);
    close_chain(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_data_and_zero, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_subblock_granularity, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_delta_depths, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_merging, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_max_and_continue, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_errors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_child_larger, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_after_aio, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
