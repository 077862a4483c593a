/*
 * test-chain.c - delta layers and chains: read-through, copy-on-write,
 * zero/discard hiding parent data, snapshots (vd_chain_push), deep chains,
 * parent resolution and shared layer caches.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define SIZE (4 * MiB)

/* A frozen base of SIZE with the pattern (seed) over its first `filled`
 * bytes, and its model. */
static void make_base(struct tenv *e, const char *path, uint32_t bs,
                      uint64_t filled, uint32_t seed, struct model *m)
{
    make_layer(path, SIZE, bs, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, path,
                                    VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    if (m)
        model_init(m, SIZE);
    for (uint64_t off = 0; off < filled; off += 1 * MiB) {
        uint64_t len = filled - off < 1 * MiB ? filled - off : 1 * MiB;
        if (m)
            model_write(m, c, off, len, seed);
        else
            write_pattern(c, off, len, seed);
    }
    close_chain(c);
}

/* ------------------------------------------------------------------ */

static void test_delta_reads_parent(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    struct model m;
    model_init(&m, SIZE);
    make_layer(base, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(&m, c, 0, 4096, 1);
    model_write(&m, c, 65536 - 512, 1024, 2);
    model_write(&m, c, 1 * MiB, 3 * 65536, 3);
    model_write(&m, c, SIZE - 512, 512, 4);
    model_zero(&m, c, 1 * MiB + 4096, 4096);
    close_chain(c);

    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 2);
    model_check(&m, c);
    close_chain(c);
    /* Read-only and O_DIRECT opens see the same. */
    c = open_chain(e->ctx, child, 0);
    model_check(&m, c);
    close_chain(c);
    assert_int_equal(layer_info(child).allocated, 0);
    model_free(&m);
}

static void test_delta_writes_isolated(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    struct model mb;
    make_base(e, base, 0, 2 * MiB, 1, &mb);
    struct vd_layer_info before = layer_info(base);

    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    struct model mc;
    model_init(&mc, SIZE);
    memcpy(mc.data, mb.data, SIZE);

    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(&mc, c, 0, 65536, 10);              /* over parent data */
    model_write(&mc, c, 200 * 1024, 4096, 11);
    model_write(&mc, c, 2 * MiB - 4096, 8192, 12);  /* half over, half not */
    model_write(&mc, c, 3 * MiB, 65536, 13);        /* no parent data */
    model_check(&mc, c);
    close_chain(c);

    /* The parent alone still has its own data, byte for byte. */
    c = open_chain(e->ctx, base, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 1);
    model_check(&mb, c);
    close_chain(c);
    struct vd_layer_info after = layer_info(base);
    assert_int_equal(after.allocated, before.allocated);
    assert_int_equal(after.file_size, before.file_size);
    assert_true(after.frozen);

    c = open_chain(e->ctx, child, VD_OPEN_BUFFERED);
    model_check(&mc, c);
    close_chain(c);
    model_free(&mb);
    model_free(&mc);
}

static void test_delta_zero_discard_hide(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    struct model mb;
    make_base(e, base, 65536, 1 * MiB, 1, &mb);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    struct model mc;
    model_init(&mc, SIZE);
    memcpy(mc.data, mb.data, SIZE);

    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&mc, c, 65536, 65536);               /* whole block */
    model_discard(&mc, c, 3 * 65536, 4096);         /* one sub-block */
    model_zero(&mc, c, 4 * 65536 + 8192, 2 * 65536); /* across blocks */
    model_discard(&mc, c, 8 * 65536 - 4096, 3 * 4096);
    model_check(&mc, c);
    /* Hiding parent data in 4 KiB units writes no data. */
    assert_int_equal(chain_info(c, 1).allocated, 0);
    assert_true(chain_info(c, 1).zeroed > 0);

    /* A 512-byte zero inside a sub-block: the rest of the sub-block keeps
     * the parent's data. */
    model_zero(&mc, c, 10 * 65536 + 1024, 512);
    model_discard(&mc, c, 11 * 65536 + 3072, 1024);
    model_check(&mc, c);
    close_chain(c);

    c = open_chain(e->ctx, child, VD_OPEN_BUFFERED);
    model_check(&mc, c);
    close_chain(c);
    c = open_chain(e->ctx, base, VD_OPEN_BUFFERED);
    model_check(&mb, c);                            /* parent untouched */
    close_chain(c);
    model_free(&mb);
    model_free(&mc);
}

/* A 512-byte write into a delta over a full parent block: the rest of the
 * 4 KiB sub-block and of the block still come from the parent, and only
 * that one sub-block is allocated in the delta. */
static void test_delta_rmw(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    struct model m;
    make_base(e, base, 65536, 1 * MiB, 1, &m);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);

    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(&m, c, 65536 + 4096 + 1024, 512, 2);
    model_check(&m, c);
    assert_int_equal(chain_info(c, 1).allocated, 4096);
    /* A second sector in another sub-block of the same block. */
    model_write(&m, c, 65536 + 7 * 4096, 512, 3);
    assert_int_equal(chain_info(c, 1).allocated, 2 * 4096);
    /* A write spanning the end of a sub-block and a block edge. */
    model_write(&m, c, 3 * 65536 - 1024, 2048, 4);
    assert_int_equal(chain_info(c, 1).allocated, 4 * 4096);
    model_check(&m, c);
    close_chain(c);

    assert_int_equal(layer_info(child).allocated, 4 * 4096);
    c = open_chain(e->ctx, child, 0);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */

static void test_push(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *top = tpath(e, "top.vdk");
    vd_uuid ub;
    make_layer(base, SIZE, 0, VD_DIGEST_NONE, NULL, &ub);
    struct model ma, mb;
    model_init(&ma, SIZE);

    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(&ma, c, 0, 256 * KiB, 1);
    assert_rc(vd_chain_push(c, top), 0);

    assert_int_equal(vd_chain_depth(c), 2);
    assert_true(vd_chain_writable(c));
    assert_true(same_file(vd_chain_layer_path(c, 1), top));
    assert_true(same_file(vd_chain_layer_path(c, 2), base));
    assert_null(vd_chain_layer_path(c, 3));
    struct vd_layer_info i1 = chain_info(c, 1), i2 = chain_info(c, 2);
    assert_true(i2.frozen);
    assert_false(i1.frozen);
    assert_memory_equal(i2.uuid.b, ub.b, 16);
    assert_memory_equal(i1.parent_uuid.b, ub.b, 16);
    assert_int_equal(i1.allocated, 0);
    assert_int_equal(i1.size, SIZE);
    assert_true(layer_info(base).frozen);
    assert_false(layer_info(base).dirty);   /* closed cleanly by the push */

    /* New writes go to the new top. */
    model_init(&mb, SIZE);
    memcpy(mb.data, ma.data, SIZE);
    model_write(&mb, c, 64 * KiB, 8192, 2);
    model_write(&mb, c, 2 * MiB, 4096, 3);
    model_zero(&mb, c, 128 * KiB, 4096);
    model_check(&mb, c);
    assert_int_equal(chain_info(c, 1).allocated, 3 * 4096);
    assert_int_equal(chain_info(c, 2).allocated, 256 * KiB);
    close_chain(c);

    c = open_chain(e->ctx, base, VD_OPEN_BUFFERED);
    model_check(&ma, c);
    close_chain(c);
    c = open_chain(e->ctx, top, VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 2);
    model_check(&mb, c);
    close_chain(c);
    model_free(&ma);
    model_free(&mb);
}

static void test_push_errors(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    make_layer(base, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);

    /* The new top must not exist; the chain is unchanged on error. */
    const char *existing = tpath(e, "exists.vdk");
    write_file(existing, "x", 1);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 4096, 1);
    assert_rc(vd_chain_push(c, existing), -EEXIST);
    assert_errmsg();
    assert_int_equal(vd_chain_depth(c), 1);
    assert_true(vd_chain_writable(c));
    assert_false(chain_info(c, 1).frozen);
    write_pattern(c, 4096, 4096, 2);
    expect_pattern(c, 0, 4096, 1);
    expect_pattern(c, 4096, 4096, 2);
    /* A directory that does not exist. */
    assert_true(vd_chain_push(c, tpath(e, "no/such/dir/top.vdk")) < 0);
    assert_errmsg();
    assert_int_equal(vd_chain_depth(c), 1);
    write_pattern(c, 8192, 4096, 3);
    close_chain(c);
    assert_false(layer_info(base).frozen);

    /* A read-only chain cannot be pushed. */
    c = open_chain(e->ctx, base, VD_OPEN_BUFFERED);
    assert_true(vd_chain_push(c, tpath(e, "top.vdk")) < 0);
    assert_errmsg();
    assert_false(file_exists(tpath(e, "top.vdk")));
    assert_int_equal(vd_chain_depth(c), 1);
    close_chain(c);
    assert_false(layer_info(base).frozen);
}

/* 63 snapshots: a chain of depth 64, each layer adding writes and zeroes;
 * reads and per-depth information are right, before and after reopening. */
static void test_depth_64(void **state)
{
    struct tenv *e = *state;
    const uint64_t size = 1 * MiB;
    char name[64];
    make_layer(tpath(e, "l01.vdk"), size, 4096, VD_DIGEST_NONE, NULL, NULL);
    struct model m;
    model_init(&m, size);
    struct vd_chain *c = open_chain(e->ctx, tpath(e, "l01.vdk"),
                                    VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    uint64_t s = 64;
    for (unsigned layer = 1; layer <= 64; layer++) {
        if (layer > 1) {
            snprintf(name, sizeof(name), "l%02u.vdk", layer);
            assert_rc(vd_chain_push(c, tpath(e, name)), 0);
            assert_int_equal(vd_chain_depth(c), layer);
        }
        for (int k = 0; k < 4; k++) {
            uint64_t off = rng_below(&s, size / 512) * 512;
            uint64_t len = (1 + rng_below(&s, 24)) * 512;
            if (off + len > size)
                len = size - off;
            if (k == 3 && layer % 3 == 0)
                model_zero(&m, c, off, len);
            else
                model_write(&m, c, off, len, layer * 10 + k);
        }
    }
    assert_int_equal(vd_chain_depth(c), 64);
    model_check(&m, c);
    close_chain(c);

    c = open_chain(e->ctx, tpath(e, "l64.vdk"), VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 64);
    assert_int_equal(vd_chain_size(c), size);
    assert_int_equal(vd_chain_block_size(c), 4096);
    model_check(&m, c);
    for (unsigned d = 1; d <= 64; d++) {
        snprintf(name, sizeof(name), "l%02u.vdk", 65 - d);
        const char *lp = vd_chain_layer_path(c, d);
        if (!same_file(lp, tpath(e, name)))
            fail_msg("depth %u: layer path %s, expected %s", d,
                     lp ? lp : "(null)", name);
        struct vd_layer_info info = chain_info(c, d);
        assert_int_equal(info.frozen, d > 1);
        assert_false(info.dirty);
        if (d < 64) {
            struct vd_layer_info below = chain_info(c, d + 1);
            assert_memory_equal(info.parent_uuid.b, below.uuid.b, 16);
        } else {
            assert_true(vd_uuid_is_null(&info.parent_uuid));
        }
        assert_memory_equal(info.uuid.b, layer_info(tpath(e, name)).uuid.b, 16);
    }
    assert_null(vd_chain_layer_path(c, 65));
    struct vd_layer_info dummy;
    assert_true(vd_chain_layer_info(c, 65, &dummy) < 0);
    assert_true(vd_chain_layer_info(c, 0, &dummy) < 0);
    close_chain(c);

    /* A layer in the middle opens as the chain below it. */
    c = open_chain(e->ctx, tpath(e, "l32.vdk"), VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_depth(c), 32);
    close_chain(c);
    model_free(&m);
}

/* The accessors on a chain of three, read-only and writable. */
static void test_chain_accessors(void **state)
{
    struct tenv *e = *state;
    const char *a = tpath(e, "a.vdk");
    const char *b = tpath(e, "b.vdk");
    const char *c3 = tpath(e, "c.vdk");
    vd_uuid ua, ub, uc;
    make_layer(a, 2 * MiB, 8192, VD_DIGEST_NONE, NULL, &ua);
    make_layer(b, 3 * MiB, 0, VD_DIGEST_SHA256, a, &ub);
    make_layer(c3, 0, 0, VD_DIGEST_NONE, b, &uc);

    for (int rw = 0; rw < 2; rw++) {
        struct vd_chain *c = open_chain(e->ctx, c3,
                                        (rw ? VD_OPEN_RDWR : 0) | VD_OPEN_BUFFERED);
        assert_int_equal(vd_chain_depth(c), 3);
        assert_int_equal(vd_chain_size(c), 3 * MiB);
        assert_int_equal(vd_chain_block_size(c), 8192);
        assert_int_equal(vd_chain_writable(c), rw);
        assert_true(same_file(vd_chain_layer_path(c, 1), c3));
        assert_true(same_file(vd_chain_layer_path(c, 2), b));
        assert_true(same_file(vd_chain_layer_path(c, 3), a));
        assert_null(vd_chain_layer_path(c, 0));
        assert_null(vd_chain_layer_path(c, 4));

        struct vd_layer_info i1 = chain_info(c, 1);
        struct vd_layer_info i2 = chain_info(c, 2);
        struct vd_layer_info i3 = chain_info(c, 3);
        assert_memory_equal(i1.uuid.b, uc.b, 16);
        assert_memory_equal(i2.uuid.b, ub.b, 16);
        assert_memory_equal(i3.uuid.b, ua.b, 16);
        assert_memory_equal(i1.parent_uuid.b, ub.b, 16);
        assert_memory_equal(i2.parent_uuid.b, ua.b, 16);
        assert_true(vd_uuid_is_null(&i3.parent_uuid));
        assert_string_equal(i1.parent_hint, "b.vdk");
        assert_string_equal(i2.parent_hint, "a.vdk");
        assert_int_equal(i1.size, 3 * MiB);
        assert_int_equal(i2.size, 3 * MiB);
        assert_int_equal(i3.size, 2 * MiB);
        assert_int_equal(i2.digest, VD_DIGEST_SHA256);
        assert_int_equal(i3.digest, VD_DIGEST_NONE);
        assert_false(i1.frozen);
        assert_true(i2.frozen);
        assert_true(i3.frozen);
        assert_int_equal(i1.dirty, rw);
        assert_false(i2.dirty);
        struct vd_layer_info dummy;
        assert_true(vd_chain_layer_info(c, 4, &dummy) < 0);
        assert_true(vd_chain_layer_info(c, 0, &dummy) < 0);
        close_chain(c);
    }
}

/* ------------------------------------------------------------------ */
/* Finding parents                                                     */

struct resolver {
    const char *target;      /* path to return */
    int rc;                  /* or this error when < 0 */
    unsigned calls;
    vd_uuid want_uuid;
    char hint[256];
    char child[4096];
    bool uuid_ok;
};

static int resolve(void *opaque, const vd_uuid *parent, const char *hint,
                   const char *child_path, char *out, size_t outlen)
{
    struct resolver *r = opaque;
    r->calls++;
    r->uuid_ok = parent && memcmp(parent->b, r->want_uuid.b, 16) == 0;
    snprintf(r->hint, sizeof(r->hint), "%s", hint ? hint : "(null)");
    snprintf(r->child, sizeof(r->child), "%s", child_path ? child_path : "(null)");
    if (r->rc < 0)
        return r->rc;
    if (strlen(r->target) + 1 > outlen)
        return -ENAMETOOLONG;
    memcpy(out, r->target, strlen(r->target) + 1);
    return 0;
}

static void test_resolver(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    vd_uuid ub;
    struct model m;
    make_base(e, base, 0, 512 * KiB, 5, &m);
    ub = layer_info(base).uuid;
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);

    /* Move the parent away: the default resolution (hint in the child's
     * directory) no longer finds it... */
    char moved_dir[4200], moved[4300];
    snprintf(moved_dir, sizeof(moved_dir), "%s/elsewhere", e->dir);
    assert_int_equal(mkdir(moved_dir, 0755), 0);
    snprintf(moved, sizeof(moved), "%s/renamed.vdk", moved_dir);
    assert_int_equal(rename(base, moved), 0);
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc(vd_chain_open(e->ctx, child, &o, &c), -ENOENT);
    assert_errmsg();

    /* ...a resolver does. */
    struct resolver r = { .target = moved, .want_uuid = ub };
    o.resolve = resolve;
    o.resolve_opaque = &r;
    o.flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED;
    assert_rc(vd_chain_open(e->ctx, child, &o, &c), 0);
    assert_int_equal(r.calls, 1);
    assert_true(r.uuid_ok);
    assert_string_equal(r.hint, "base.vdk");
    assert_true(same_file(r.child, child));
    assert_int_equal(vd_chain_depth(c), 2);
    assert_true(same_file(vd_chain_layer_path(c, 2), moved));
    model_check(&m, c);
    model_write(&m, c, 4096, 4096, 6);
    close_chain(c);

    o.flags = VD_OPEN_BUFFERED;
    r.calls = 0;
    assert_rc(vd_chain_open(e->ctx, child, &o, &c), 0);
    assert_int_equal(r.calls, 1);
    model_check(&m, c);
    close_chain(c);

    /* A resolver error is passed up. */
    struct resolver bad = { .target = moved, .rc = -EACCES, .want_uuid = ub };
    o.resolve_opaque = &bad;
    c = NULL;
    assert_true(vd_chain_open(e->ctx, child, &o, &c) < 0);
    assert_errmsg();
    assert_int_equal(bad.calls, 1);
    model_free(&m);
}

/* The library checks the UUID of whatever file it is given as the parent. */
static void test_resolver_wrong_uuid(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    const char *other = tpath(e, "other.vdk");
    make_base(e, base, 0, 64 * KiB, 1, NULL);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    /* Same size and block size, different identity. */
    make_base(e, other, 0, 64 * KiB, 2, NULL);
    assert_rc(vd_layer_freeze(other), 0);

    struct resolver r = { .target = other, .want_uuid = layer_info(base).uuid };
    struct vd_open_opts o = {
        .flags = VD_OPEN_BUFFERED, .resolve = resolve, .resolve_opaque = &r,
    };
    struct vd_chain *c = NULL;
    int rc = vd_chain_open(e->ctx, child, &o, &c);
    if (rc >= 0)
        fail_msg("a parent with the wrong UUID was accepted");
    assert_errmsg();
    assert_int_equal(r.calls, 1);

    /* The same without a resolver: the hint names a file that was replaced
     * by another layer. */
    assert_int_equal(unlink(base), 0);
    assert_int_equal(rename(other, base), 0);
    o.resolve = NULL;
    o.resolve_opaque = NULL;
    rc = vd_chain_open(e->ctx, child, &o, &c);
    if (rc >= 0)
        fail_msg("a replaced parent file (wrong UUID) was accepted");
    assert_errmsg();

    /* A resolver returning the child itself (a loop) is refused too. */
    struct resolver self = { .target = child };
    o.resolve = resolve;
    o.resolve_opaque = &self;
    assert_true(vd_chain_open(e->ctx, child, &o, &c) < 0);
    assert_errmsg();
}

static void test_missing_parent(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    const char *gc = tpath(e, "gc.vdk");
    make_layer(base, SIZE, 0, VD_DIGEST_NONE, NULL, NULL);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    make_layer(gc, 0, 0, VD_DIGEST_NONE, child, NULL);
    assert_int_equal(unlink(base), 0);

    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc(vd_chain_open(e->ctx, child, &o, &c), -ENOENT);
    assert_errmsg();
    o.flags = 0;
    assert_rc(vd_chain_open(e->ctx, child, &o, &c), -ENOENT);
    /* Missing two levels down, read-only and for writing. */
    assert_rc(vd_chain_open(e->ctx, gc, &o, &c), -ENOENT);
    assert_errmsg();
    o.flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED;
    assert_rc(vd_chain_open(e->ctx, gc, &o, &c), -ENOENT);
    assert_errmsg();
    /* A failed writable open leaves the layer clean. */
    assert_false(layer_info(gc).dirty);
    /* The child alone still describes itself. */
    assert_int_equal(layer_info(child).size, SIZE);
}

/* ------------------------------------------------------------------ */
/* Shared layer caches                                                 */

static void test_layer_cache(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *c1p = tpath(e, "clone1.vdk");
    const char *c2p = tpath(e, "clone2.vdk");
    struct model mb;
    make_base(e, base, 0, 1 * MiB, 1, &mb);
    make_layer(c1p, 0, 0, VD_DIGEST_NONE, base, NULL);
    make_layer(c2p, 0, 0, VD_DIGEST_NONE, base, NULL);

    struct vd_layer_cache *cache = NULL;
    assert_rc(vd_layer_cache_new(&cache), 0);
    assert_non_null(cache);
    /* An unused cache can be freed and a new one made. */
    assert_rc(vd_layer_cache_free(cache), 0);
    cache = NULL;
    assert_rc(vd_layer_cache_new(&cache), 0);

    struct vd_open_opts o = {
        .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED, .cache = cache,
    };
    struct vd_chain *c1 = NULL, *c2 = NULL;
    assert_rc(vd_chain_open(e->ctx, c1p, &o, &c1), 0);
    o.flags = VD_OPEN_RDWR;      /* the second one with O_DIRECT */
    assert_rc(vd_chain_open(e->ctx, c2p, &o, &c2), 0);
    assert_int_equal(vd_chain_depth(c1), 2);
    assert_int_equal(vd_chain_depth(c2), 2);

    struct model m1, m2;
    model_init(&m1, SIZE);
    model_init(&m2, SIZE);
    memcpy(m1.data, mb.data, SIZE);
    memcpy(m2.data, mb.data, SIZE);
    model_check(&m1, c1);
    model_check(&m2, c2);
    /* Each clone's writes stay its own. */
    model_write(&m1, c1, 0, 65536, 10);
    model_write(&m2, c2, 32768, 65536, 20);
    model_zero(&m1, c1, 512 * KiB, 4096);
    model_write(&m2, c2, 2 * MiB, 4096, 21);
    model_check(&m1, c1);
    model_check(&m2, c2);

    assert_rc(vd_layer_cache_free(cache), -EBUSY);
    close_chain(c1);
    assert_rc(vd_layer_cache_free(cache), -EBUSY);
    model_check(&m2, c2);          /* still reads the base after c1 left */

    /* A third user joins and leaves while c2 is open. */
    o.flags = VD_OPEN_BUFFERED;
    assert_rc(vd_chain_open(e->ctx, c1p, &o, &c1), 0);
    model_check(&m1, c1);
    close_chain(c1);
    close_chain(c2);
    assert_rc(vd_layer_cache_free(cache), 0);

    /* Without the cache everything reads the same. */
    struct vd_chain *c = open_chain(e->ctx, c2p, VD_OPEN_BUFFERED);
    model_check(&m2, c);
    close_chain(c);
    c = open_chain(e->ctx, base, VD_OPEN_BUFFERED);
    model_check(&mb, c);
    close_chain(c);
    model_free(&m1);
    model_free(&m2);
    model_free(&mb);
}

/* Deltas over a chain of several frozen layers share all of them. */
static void test_layer_cache_deep(void **state)
{
    struct tenv *e = *state;
    const char *a = tpath(e, "a.vdk");
    const char *b = tpath(e, "b.vdk");
    make_base(e, a, 0, 256 * KiB, 1, NULL);
    make_layer(b, 0, 0, VD_DIGEST_NONE, a, NULL);
    struct vd_chain *c = open_chain(e->ctx, b, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 128 * KiB, 256 * KiB, 2);
    close_chain(c);

    struct vd_layer_cache *cache = NULL;
    assert_rc(vd_layer_cache_new(&cache), 0);
    struct vd_chain *cs[4];
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof(name), "clone%d.vdk", i);
        make_layer(tpath(e, name), 0, 0, VD_DIGEST_NONE, b, NULL);
        struct vd_open_opts o = {
            .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED, .cache = cache,
        };
        assert_rc(vd_chain_open(e->ctx, tpath(e, name), &o, &cs[i]), 0);
        assert_int_equal(vd_chain_depth(cs[i]), 3);
        write_pattern(cs[i], 64 * KiB, 4096, 100 + i);
    }
    for (int i = 0; i < 4; i++) {
        expect_pattern(cs[i], 0, 64 * KiB, 1);
        expect_pattern(cs[i], 64 * KiB, 4096, 100 + i);
        expect_pattern(cs[i], 64 * KiB + 4096, 64 * KiB - 4096, 1);
        expect_pattern(cs[i], 128 * KiB, 256 * KiB, 2);
        expect_zero(cs[i], 384 * KiB, 128 * KiB);
    }
    for (int i = 0; i < 4; i++) {
        assert_rc(vd_layer_cache_free(cache), -EBUSY);
        close_chain(cs[i]);
    }
    assert_rc(vd_layer_cache_free(cache), 0);
}

/* ------------------------------------------------------------------ */

static void test_child_larger(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    /* A parent whose size is not a multiple of its block size. */
    const uint64_t psize = 1 * MiB + 12 * KiB;
    make_layer(base, psize, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, psize, 1);
    close_chain(c);

    const uint64_t csize = 3 * MiB;
    make_layer(child, csize, 0, VD_DIGEST_NONE, base, NULL);
    struct model m;
    model_init(&m, csize);
    fill_pattern(m.data, psize, 0, 1);

    c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_int_equal(vd_chain_size(c), csize);
    model_check(&m, c);
    expect_zero(c, psize, csize - psize);
    /* Writes across and beyond the parent's end. */
    model_write(&m, c, psize - 1024, 2048, 2);
    model_write(&m, c, 2 * MiB, 65536, 3);
    model_write(&m, c, csize - 512, 512, 4);
    /* A partial write in the parent's last, partial block just past its
     * end: the rest reads zero, not whatever lies beyond the parent. */
    model_write(&m, c, psize + 4096 + 512, 512, 5);
    model_check(&m, c);
    close_chain(c);

    c = open_chain(e->ctx, child, 0);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delta_reads_parent, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_delta_writes_isolated, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_delta_zero_discard_hide, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_delta_rmw, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_push, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_push_errors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_depth_64, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_chain_accessors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_resolver, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_resolver_wrong_uuid, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_missing_parent, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_layer_cache, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_layer_cache_deep, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_child_larger, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
