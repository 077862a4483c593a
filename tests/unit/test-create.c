/*
 * test-create.c - creating layers, vd_layer_info, vd_layer_freeze, UUIDs
 * and error messages.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "vd-testing.h"

/* An info struct whose fields all hold values no correct call leaves:
 * numbers all ones, booleans the opposite of what a fresh layer has. */
static void poison_info(struct vd_layer_info *info)
{
    memset(info, 0xff, sizeof(*info));
    info->frozen = true;
    info->dirty = true;
    info->digest = (enum vd_digest)77;
}

static int create(const char *path, uint64_t size, uint32_t bs,
                  enum vd_digest dg, const char *parent, vd_uuid *u)
{
    struct vd_create_opts o = {
        .size = size, .block_size = bs, .digest = dg, .parent = parent,
    };
    return vd_layer_create(path, &o, u);
}

/* ------------------------------------------------------------------ */

static void test_create_default(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    vd_uuid u;
    memset(&u, 0, sizeof(u));

    time_t before = time(NULL);
    assert_rc(create(p, 8 * MiB, 0, VD_DIGEST_NONE, NULL, &u), 0);
    time_t after = time(NULL);
    assert_false(vd_uuid_is_null(&u));

    struct vd_layer_info info;
    poison_info(&info);
    assert_rc(vd_layer_info(p, &info), 0);
    assert_memory_equal(info.uuid.b, u.b, 16);
    assert_false(vd_uuid_is_null(&info.uuid));
    assert_true(vd_uuid_is_null(&info.parent_uuid));
    assert_string_equal(info.parent_hint, "");
    assert_int_equal(info.size, 8 * MiB);
    assert_int_equal(info.block_size, VD_DEFAULT_BLOCK_SIZE);
    assert_int_equal(info.digest, VD_DIGEST_NONE);
    assert_false(info.frozen);
    assert_false(info.dirty);
    assert_int_equal(info.allocated, 0);
    assert_int_equal(info.zeroed, 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(info.file_size, (uint64_t)st.st_size);
    assert_true(info.file_size > 0);
    if (info.create_time + 2 < (uint64_t)before ||
        info.create_time > (uint64_t)after + 2)
        fail_msg("create_time %llu is not the creation time (%lld..%lld)",
                 (unsigned long long)info.create_time, (long long)before,
                 (long long)after);

    /* The new layer opens as a chain of one. */
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 1);
    assert_int_equal(vd_chain_size(c), 8 * MiB);
    assert_int_equal(vd_chain_block_size(c), VD_DEFAULT_BLOCK_SIZE);
    assert_false(vd_chain_writable(c));
    close_chain(c);

    /* uuid_out may be NULL; every layer gets its own UUID. */
    const char *p2 = tpath(e, "b.vdk");
    assert_rc(create(p2, 8 * MiB, 0, VD_DIGEST_NONE, NULL, NULL), 0);
    struct vd_layer_info info2 = layer_info(p2);
    assert_false(vd_uuid_is_null(&info2.uuid));
    assert_memory_not_equal(info2.uuid.b, u.b, 16);
}

/* Every valid block size: recorded, reported by the chain, and I/O across
 * a block boundary works and persists. */
static void test_create_block_sizes(void **state)
{
    struct tenv *e = *state;
    static const uint32_t sizes[] = {
        4096, 8192, 65536, 1u << 20, VD_MAX_BLOCK_SIZE,
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint32_t bs = sizes[i];
        char name[64];
        snprintf(name, sizeof(name), "bs-%u.vdk", bs);
        const char *p = tpath(e, name);
        make_layer(p, 8 * MiB, bs, VD_DIGEST_NONE, NULL, NULL);
        struct vd_layer_info info = layer_info(p);
        assert_int_equal(info.block_size, bs);
        assert_int_equal(info.size, 8 * MiB);

        struct vd_chain *c = open_chain(e->ctx, p,
                                        VD_OPEN_RDWR | VD_OPEN_BUFFERED);
        assert_int_equal(vd_chain_block_size(c), bs);
        /* 4 KiB on each side of the boundary between blocks 0 and 1, and
         * the last sector of the disk. */
        write_pattern(c, bs - 4096, 8192, i + 1);
        write_pattern(c, 8 * MiB - 512, 512, i + 100);
        expect_pattern(c, bs - 4096, 8192, i + 1);
        close_chain(c);

        c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
        expect_zero(c, 0, bs - 4096);
        expect_pattern(c, bs - 4096, 8192, i + 1);
        expect_zero(c, bs + 4096, 8 * MiB - 512 - (bs + 4096));
        expect_pattern(c, 8 * MiB - 512, 512, i + 100);
        close_chain(c);
    }
}

static void test_create_bad_block_sizes(void **state)
{
    struct tenv *e = *state;
    static const uint32_t bad[] = {
        3000, 8193, 4u << 20, 2048, 1, 512, 12288, 3u << 20, 0x80000000u,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = tpath(e, "bad.vdk");
        int rc = create(p, 8 * MiB, bad[i], VD_DIGEST_NONE, NULL, NULL);
        if (rc != -EINVAL)
            fail_msg("block size %u: vd_layer_create = %d, expected -EINVAL",
                     bad[i], rc);
        assert_errmsg();
        if (file_exists(p))
            fail_msg("block size %u: a refused create left a file behind",
                     bad[i]);
    }
}

static void test_create_bad_sizes(void **state)
{
    struct tenv *e = *state;
    static const uint64_t bad[] = {
        0,                        /* no parent to take the size from */
        1000, 513, 511, 1,        /* not multiples of 512 */
        VD_MAX_SIZE + 512,
        VD_MAX_SIZE * 2,
        UINT64_MAX,
        UINT64_MAX & ~511ull,
    };
    const char *p = tpath(e, "bad.vdk");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = create(p, bad[i], 0, VD_DIGEST_NONE, NULL, NULL);
        if (rc != -EINVAL)
            fail_msg("size %llu: vd_layer_create = %d, expected -EINVAL",
                     (unsigned long long)bad[i], rc);
        assert_errmsg();
        assert_false(file_exists(p));
    }
    /* An unknown digest. */
    assert_rc(create(p, 8 * MiB, 0, (enum vd_digest)7, NULL, NULL), -EINVAL);
    assert_errmsg();
    assert_false(file_exists(p));
}

/* 64 TiB is accepted and costs almost no disk space. */
static void test_create_max_size(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "huge.vdk");
    make_layer(p, VD_MAX_SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_layer_info info = layer_info(p);
    assert_int_equal(info.size, VD_MAX_SIZE);
    assert_int_equal(info.allocated, 0);
    uint64_t used = file_allocated_bytes(p);
    if (used > 16 * MiB)
        fail_msg("a fresh 64 TiB layer occupies %llu bytes on disk",
                 (unsigned long long)used);

    /* One byte less than the maximum is not a multiple of 512, the maximum
     * minus a sector is fine. */
    make_layer(tpath(e, "huge2.vdk"), VD_MAX_SIZE - 512, 0, VD_DIGEST_NONE,
               NULL, NULL);
    assert_int_equal(layer_info(tpath(e, "huge2.vdk")).size, VD_MAX_SIZE - 512);
}

/* A 64 TiB layer can be written at both ends and stays small. */
static void test_max_size_io(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "huge.vdk");
    make_layer(p, VD_MAX_SIZE, 0, VD_DIGEST_NONE, NULL, NULL);

    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_size(c), VD_MAX_SIZE);
    write_pattern(c, 0, 4096, 1);
    write_pattern(c, VD_MAX_SIZE - 4096, 4096, 2);
    write_pattern(c, VD_MAX_SIZE / 2 + 512, 512, 3);
    expect_pattern(c, VD_MAX_SIZE - 4096, 4096, 2);
    expect_zero(c, VD_MAX_SIZE - 8192, 4096);
    close_chain(c);

    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 0, 4096, 1);
    expect_pattern(c, VD_MAX_SIZE - 4096, 4096, 2);
    expect_pattern(c, VD_MAX_SIZE / 2 + 512, 512, 3);
    expect_zero(c, VD_MAX_SIZE / 2, 512);
    close_chain(c);

    uint64_t used = file_allocated_bytes(p);
    if (used > 24 * MiB)
        fail_msg("a 64 TiB layer with 3 small writes occupies %llu bytes",
                 (unsigned long long)used);
    assert_int_equal(layer_info(p).allocated, 3 * 4096);
}

static void test_create_eexist(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    vd_uuid u;
    make_layer(p, 1 * MiB, 0, VD_DIGEST_NONE, NULL, &u);
    assert_rc(create(p, 2 * MiB, 0, VD_DIGEST_NONE, NULL, NULL), -EEXIST);
    assert_errmsg();
    /* The existing layer is untouched. */
    struct vd_layer_info info = layer_info(p);
    assert_memory_equal(info.uuid.b, u.b, 16);
    assert_int_equal(info.size, 1 * MiB);

    /* A file that is not a layer is not overwritten either. */
    const char *q = tpath(e, "plain.txt");
    write_file(q, "hello", 5);
    assert_rc(create(q, 1 * MiB, 0, VD_DIGEST_NONE, NULL, NULL), -EEXIST);
    size_t n;
    uint8_t *data = read_whole_file(q, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "hello", 5);
    free(data);
}

static void test_create_with_parent(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    vd_uuid ub, uc;
    make_layer(base, 8 * MiB, 16384, VD_DIGEST_NONE, NULL, &ub);
    assert_false(layer_info(base).frozen);

    make_layer(child, 0, 0, VD_DIGEST_NONE, base, &uc);
    assert_memory_not_equal(ub.b, uc.b, 16);

    struct vd_layer_info ic;
    poison_info(&ic);
    assert_rc(vd_layer_info(child, &ic), 0);
    assert_memory_equal(ic.uuid.b, uc.b, 16);
    assert_memory_equal(ic.parent_uuid.b, ub.b, 16);
    assert_string_equal(ic.parent_hint, "base.vdk");
    assert_int_equal(ic.size, 8 * MiB);          /* inherited */
    assert_int_equal(ic.block_size, 16384);      /* inherited */
    assert_false(ic.frozen);
    assert_false(ic.dirty);
    assert_int_equal(ic.allocated, 0);
    assert_int_equal(ic.zeroed, 0);

    /* The parent is frozen now, and nothing else about it changed. */
    struct vd_layer_info ib = layer_info(base);
    assert_true(ib.frozen);
    assert_false(ib.dirty);
    assert_memory_equal(ib.uuid.b, ub.b, 16);
    assert_true(vd_uuid_is_null(&ib.parent_uuid));
    assert_int_equal(ib.size, 8 * MiB);

    /* The child opens as a chain of two. */
    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 2);
    assert_int_equal(vd_chain_size(c), 8 * MiB);
    assert_int_equal(vd_chain_block_size(c), 16384);
    close_chain(c);

    /* A second child of the same (already frozen) parent, with the
     * parent's block size given explicitly. */
    const char *child2 = tpath(e, "child2.vdk");
    make_layer(child2, 8 * MiB, 16384, VD_DIGEST_NONE, base, NULL);
    assert_memory_equal(layer_info(child2).parent_uuid.b, ub.b, 16);

    /* A grandchild: its parent is the first child, which becomes frozen. */
    const char *gc = tpath(e, "gc.vdk");
    make_layer(gc, 0, 0, VD_DIGEST_NONE, child, NULL);
    assert_true(layer_info(child).frozen);
    struct vd_layer_info ig = layer_info(gc);
    assert_memory_equal(ig.parent_uuid.b, uc.b, 16);
    assert_string_equal(ig.parent_hint, "child.vdk");
    c = open_chain(e->ctx, gc, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 3);
    close_chain(c);
}

static void test_create_parent_block_size_mismatch(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    make_layer(base, 8 * MiB, 65536, VD_DIGEST_NONE, NULL, NULL);

    assert_rc(create(child, 0, 4096, VD_DIGEST_NONE, base, NULL), -EINVAL);
    assert_errmsg();
    assert_false(file_exists(child));
    assert_rc(create(child, 0, VD_MAX_BLOCK_SIZE, VD_DIGEST_NONE, base, NULL),
              -EINVAL);
    assert_false(file_exists(child));

    /* The same block size is fine; 0 inherits it. */
    assert_rc(create(child, 0, 65536, VD_DIGEST_NONE, base, NULL), 0);
    assert_int_equal(layer_info(child).block_size, 65536);

    /* A parent with a non-default block size and a child asking for the
     * default (0): the child takes the parent's. */
    const char *b4 = tpath(e, "b4.vdk");
    const char *c4 = tpath(e, "c4.vdk");
    make_layer(b4, 1 * MiB, 4096, VD_DIGEST_NONE, NULL, NULL);
    make_layer(c4, 0, 0, VD_DIGEST_NONE, b4, NULL);
    assert_int_equal(layer_info(c4).block_size, 4096);
}

static void test_create_child_bigger(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    make_layer(base, 1 * MiB, 0, VD_DIGEST_NONE, NULL, NULL);
    make_layer(child, 3 * MiB + 512, 0, VD_DIGEST_NONE, base, NULL);
    assert_int_equal(layer_info(child).size, 3 * MiB + 512);
    assert_int_equal(layer_info(base).size, 1 * MiB);

    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_size(c), 3 * MiB + 512);
    assert_int_equal(vd_chain_depth(c), 2);
    close_chain(c);
}

static void test_create_parent_errors(void **state)
{
    struct tenv *e = *state;
    const char *child = tpath(e, "child.vdk");

    /* Missing parent. */
    assert_rc(create(child, 0, 0, VD_DIGEST_NONE, tpath(e, "nope.vdk"), NULL),
              -ENOENT);
    assert_errmsg();
    assert_false(file_exists(child));

    /* A parent that is not a layer. */
    const char *junk = tpath(e, "junk.bin");
    uint8_t buf[8192];
    uint64_t s = 42;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rng_next(&s);
    write_file(junk, buf, sizeof(buf));
    assert_rc_either(create(child, 0, 0, VD_DIGEST_NONE, junk, NULL), -EINVAL,
                     -EUCLEAN);
    assert_errmsg();
    assert_false(file_exists(child));
    /* ...and the junk file was not "frozen" (modified) either. */
    size_t n;
    uint8_t *after = read_whole_file(junk, &n);
    assert_int_equal(n, sizeof(buf));
    assert_memory_equal(after, buf, sizeof(buf));
    free(after);
}

static void test_create_digest_sha256(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "d.vdk");
    make_layer(p, 4 * MiB, 0, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_layer_info info = layer_info(p);
    assert_int_equal(info.digest, VD_DIGEST_SHA256);

    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 65536 - 4096, 3 * 4096, 5);
    write_pattern(c, 1 * MiB + 512, 1024, 6);
    close_chain(c);
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 65536 - 4096, 3 * 4096, 5);
    expect_pattern(c, 1 * MiB + 512, 1024, 6);
    expect_zero(c, 1 * MiB, 512);
    close_chain(c);
    assert_int_equal(layer_info(p).digest, VD_DIGEST_SHA256);

    /* A delta with digests over a base without, and the other way round. */
    make_layer(tpath(e, "nd.vdk"), 4 * MiB, 0, VD_DIGEST_NONE, NULL, NULL);
    make_layer(tpath(e, "nd-child.vdk"), 0, 0, VD_DIGEST_SHA256,
               tpath(e, "nd.vdk"), NULL);
    assert_int_equal(layer_info(tpath(e, "nd-child.vdk")).digest,
                     VD_DIGEST_SHA256);
    make_layer(tpath(e, "d-child.vdk"), 0, 0, VD_DIGEST_NONE, p, NULL);
    assert_int_equal(layer_info(tpath(e, "d-child.vdk")).digest,
                     VD_DIGEST_NONE);
}

/* allocated and zeroed follow writes and zeroes at 4 KiB granularity. */
static void test_info_allocated(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 4 * MiB, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_int_equal(chain_info(c, 1).allocated, 0);

    write_pattern(c, 0, 512, 1);                  /* one sub-block */
    assert_int_equal(chain_info(c, 1).allocated, 4096);
    write_pattern(c, 1024, 512, 2);               /* same sub-block */
    assert_int_equal(chain_info(c, 1).allocated, 4096);
    write_pattern(c, 128 * KiB, 64 * KiB, 3);     /* a whole block */
    assert_int_equal(chain_info(c, 1).allocated, 4096 + 65536);
    write_pattern(c, 4096 - 512, 1024, 4);        /* sub-blocks 0 and 1 */
    assert_int_equal(chain_info(c, 1).allocated, 2 * 4096 + 65536);

    assert_rc(vd_zero(c, 128 * KiB, 64 * KiB, 0), 0);
    struct vd_layer_info info = chain_info(c, 1);
    assert_int_equal(info.allocated, 2 * 4096);
    assert_int_equal(info.zeroed, 64 * KiB);
    assert_true(info.dirty);   /* open for writing */
    close_chain(c);

    info = layer_info(p);
    assert_int_equal(info.allocated, 2 * 4096);
    assert_int_equal(info.zeroed, 64 * KiB);
    assert_false(info.dirty);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(info.file_size, (uint64_t)st.st_size);
}

static void test_info_errors(void **state)
{
    struct tenv *e = *state;
    struct vd_layer_info info;

    assert_rc(vd_layer_info(tpath(e, "missing.vdk"), &info), -ENOENT);
    assert_errmsg();

    const char *empty = tpath(e, "empty.vdk");
    write_file(empty, "", 0);
    assert_rc_either(vd_layer_info(empty, &info), -EINVAL, -EUCLEAN);
    assert_errmsg();

    const char *junk = tpath(e, "junk.vdk");
    uint8_t buf[65536];
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rng_next(&s);
    write_file(junk, buf, sizeof(buf));
    assert_rc_either(vd_layer_info(junk, &info), -EINVAL, -EUCLEAN);
    assert_errmsg();

    /* A directory is not a layer either. */
    assert_true(vd_layer_info(e->dir, &info) < 0);
    assert_errmsg();
}

static void test_freeze(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    vd_uuid u;
    make_layer(p, 1 * MiB, 0, VD_DIGEST_NONE, NULL, &u);

    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 8192, 4096, 9);
    close_chain(c);

    assert_rc(vd_layer_freeze(p), 0);
    struct vd_layer_info info = layer_info(p);
    assert_true(info.frozen);
    assert_false(info.dirty);
    assert_memory_equal(info.uuid.b, u.b, 16);

    /* Idempotent. */
    assert_rc(vd_layer_freeze(p), 0);
    assert_true(layer_info(p).frozen);

    /* Frozen means read-only: writable opens are refused, read-only opens
     * see the data. */
    struct vd_open_opts o = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED };
    c = NULL;
    assert_rc(vd_chain_open(e->ctx, p, &o, &c), -EROFS);
    assert_errmsg();
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    assert_false(vd_chain_writable(c));
    assert_false(chain_info(c, 1).dirty);
    assert_true(chain_info(c, 1).frozen);
    expect_pattern(c, 8192, 4096, 9);
    close_chain(c);

    assert_rc(vd_layer_freeze(tpath(e, "missing.vdk")), -ENOENT);
    assert_errmsg();
    const char *junk = tpath(e, "junk.vdk");
    write_file(junk, "not a layer, clearly", 20);
    assert_rc_either(vd_layer_freeze(junk), -EINVAL, -EUCLEAN);
    assert_errmsg();
}

/* A layer closed uncleanly cannot be frozen until it is checked. */
static void test_freeze_dirty(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 1 * MiB, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 4096, 1);
    assert_rc(vd_flush(c), 0);
    vdi_chain_abandon(c);

    assert_true(layer_info(p).dirty);
    assert_rc(vd_layer_freeze(p), -EBUSY);
    assert_errmsg();
    assert_false(layer_info(p).frozen);

    struct vd_check_result res;
    memset(&res, 0, sizeof(res));
    assert_rc(vd_layer_check(p, VD_CHECK_REPAIR, &res, NULL, NULL), 0);
    assert_false(layer_info(p).dirty);
    assert_rc(vd_layer_freeze(p), 0);
    assert_true(layer_info(p).frozen);
}

/* ------------------------------------------------------------------ */
/* UUIDs                                                               */

static void test_uuid_format_parse(void **state)
{
    (void)state;
    /* de 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff */
    vd_uuid u;
    u.b[0] = 0xde;
    for (int i = 1; i < 16; i++)
        u.b[i] = (uint8_t)(i * 0x11);
    char s[37];
    memset(s, 'X', sizeof(s));
    vd_uuid_format(&u, s);
    assert_int_equal(strlen(s), 36);
    if (strcasecmp(s, "de112233-4455-6677-8899-aabbccddeeff") != 0)
        fail_msg("vd_uuid_format gave \"%s\"", s);

    vd_uuid v;
    memset(&v, 0, sizeof(v));
    assert_rc(vd_uuid_parse(s, &v), 0);
    assert_memory_equal(u.b, v.b, 16);
    /* Upper case hex is the same UUID. */
    memset(&v, 0, sizeof(v));
    assert_rc(vd_uuid_parse("DE112233-4455-6677-8899-AABBCCDDEEFF", &v), 0);
    assert_memory_equal(u.b, v.b, 16);

    /* Round trips of many random UUIDs. */
    uint64_t seed = 1234;
    for (int n = 0; n < 1000; n++) {
        for (int i = 0; i < 16; i++)
            u.b[i] = (uint8_t)rng_next(&seed);
        vd_uuid_format(&u, s);
        assert_int_equal(strlen(s), 36);
        assert_int_equal(s[8], '-');
        assert_int_equal(s[13], '-');
        assert_int_equal(s[18], '-');
        assert_int_equal(s[23], '-');
        memset(&v, 0, sizeof(v));
        assert_rc(vd_uuid_parse(s, &v), 0);
        assert_memory_equal(u.b, v.b, 16);
    }
}

static void test_uuid_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "de112233",
        "de112233-4455-6677-8899-aabbccddeef",      /* 35 chars */
        "de112233-4455-6677-8899-aabbccddeeff0",    /* 37 chars */
        "de112233-4455-6677-8899-aabbccddeefg",     /* not hex */
        "de112233-4455-6677-8899-aabbccddee f",
        "de1122334-455-6677-8899-aabbccddeeff",     /* dash misplaced */
        "de112233_4455_6677_8899_aabbccddeeff",
        "de1122334455667788990aabbccddeeff000",     /* no dashes */
        "de112233445566778899aabbccddeeff",         /* 32 hex digits */
        " de112233-4455-6677-8899-aabbccddeeff",
        "de112233-4455-6677-8899-aabbccddeeff\n",
        "{de112233-4455-6677-8899-aabbccddeeff}",
        "+e112233-4455-6677-8899-aabbccddeeff",
        "de112233-4455-6677-8899--abbccddeeff",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vd_uuid v;
        int rc = vd_uuid_parse(bad[i], &v);
        if (rc != -EINVAL)
            fail_msg("vd_uuid_parse(\"%s\") = %d, expected -EINVAL", bad[i], rc);
    }
}

static void test_uuid_is_null(void **state)
{
    (void)state;
    vd_uuid u;
    memset(&u, 0, sizeof(u));
    assert_true(vd_uuid_is_null(&u));
    for (int i = 0; i < 16; i++) {
        memset(&u, 0, sizeof(u));
        u.b[i] = 0x80;
        assert_false(vd_uuid_is_null(&u));
    }
    vd_uuid v;
    assert_rc(vd_uuid_parse("00000000-0000-0000-0000-000000000000", &v), 0);
    assert_true(vd_uuid_is_null(&v));
}

/* ------------------------------------------------------------------ */
/* Error messages                                                      */

static void *errmsg_thread(void *arg)
{
    const char **out = arg;
    /* A thread that never failed has the empty message. */
    const char *m = vd_errmsg();
    out[0] = m ? strdup(m) : NULL;
    struct vd_layer_info info;
    vd_layer_info("/nonexistent-dir-for-vdisk-tests/x.vdk", &info);
    m = vd_errmsg();
    out[1] = m ? strdup(m) : NULL;
    return NULL;
}

static void test_errmsg(void **state)
{
    struct tenv *e = *state;
    /* A failure sets a message that says something. */
    struct vd_create_opts o = { .size = 1000 };
    assert_rc(vd_layer_create(tpath(e, "x.vdk"), &o, NULL), -EINVAL);
    assert_errmsg();
    char *mine = strdup(vd_errmsg());
    assert_non_null(mine);

    /* The message is per thread. */
    const char *theirs[2] = { NULL, NULL };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, errmsg_thread, theirs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_non_null(theirs[0]);
    assert_string_equal(theirs[0], "");
    assert_non_null(theirs[1]);
    assert_true(strlen(theirs[1]) > 0);
    free((void *)theirs[0]);
    free((void *)theirs[1]);
    assert_string_equal(vd_errmsg(), mine);   /* untouched by the thread */

    /* Successful calls do not change it: it is the last failure's. */
    make_layer(tpath(e, "ok.vdk"), 1 * MiB, 0, VD_DIGEST_NONE, NULL, NULL);
    assert_string_equal(vd_errmsg(), mine);
    free(mine);

    /* A different failure gives its own message. */
    assert_rc(vd_layer_info(tpath(e, "missing.vdk"), &(struct vd_layer_info){ 0 }),
              -ENOENT);
    assert_errmsg();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_default, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_block_sizes, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_bad_block_sizes, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_bad_sizes, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_max_size, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_max_size_io, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_eexist, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_with_parent, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_parent_block_size_mismatch, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_child_bigger, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_parent_errors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_digest_sha256, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_info_allocated, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_info_errors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_freeze, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_freeze_dirty, tenv_setup, tenv_teardown),
        cmocka_unit_test(test_uuid_format_parse),
        cmocka_unit_test(test_uuid_parse_bad),
        cmocka_unit_test(test_uuid_is_null),
        cmocka_unit_test_setup_teardown(test_errmsg, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
