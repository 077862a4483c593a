/*
 * test-check.c - vd_layer_check: clean images, digest verification and
 * damaged blocks, the dirty flag after an unclean close, and damaged or
 * truncated files (clear errors, never a crash).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "vd-testing.h"

static struct vd_check_result check(const char *path, unsigned flags,
                                    struct msgs *ms)
{
    struct vd_check_result res;
    memset(&res, 0xff, sizeof(res));
    res.dirty = true;
    int rc = vd_layer_check(path, flags, &res, ms ? msgs_report : NULL, ms);
    if (rc != 0)
        fail_msg("vd_layer_check(%s, %#x) = %d (%s): %s", path, flags, rc,
                 strerror(-rc), vd_errmsg());
    return res;
}

static void print_msgs(const struct msgs *ms)
{
    for (unsigned i = 0; i < ms->n && i < MSGS_MAX; i++)
        print_error("  report: %s\n", ms->m[i]);
}

static void expect_clean(const struct vd_check_result *r, const struct msgs *ms)
{
    if (r->corruptions || r->leaked_bytes || r->digest_mismatches || r->dirty ||
        (ms && ms->n)) {
        if (ms)
            print_msgs(ms);
        fail_msg("not clean: corruptions %llu, leaked %llu, mismatches %llu, "
                 "dirty %d, %u reports",
                 (unsigned long long)r->corruptions,
                 (unsigned long long)r->leaked_bytes,
                 (unsigned long long)r->digest_mismatches, r->dirty,
                 ms ? ms->n : 0);
    }
    assert_int_equal(r->repaired, 0);
}

/* ------------------------------------------------------------------ */

static void test_check_fresh(void **state)
{
    struct tenv *e = *state;
    static const uint32_t sizes[] = { 4096, 65536, VD_MAX_BLOCK_SIZE };
    for (size_t i = 0; i < 3; i++) {
        const char *p = tpath(e, i == 0 ? "a.vdk" : i == 1 ? "b.vdk" : "c.vdk");
        make_layer(p, 16 * MiB, sizes[i], i == 1 ? VD_DIGEST_SHA256 : VD_DIGEST_NONE,
                   NULL, NULL);
        struct msgs ms = { 0 };
        struct vd_check_result r = check(p, 0, &ms);
        expect_clean(&r, &ms);
        /* (Verifying a layer without digests may say so in a report.) */
        r = check(p, VD_CHECK_VERIFY, &ms);
        expect_clean(&r, i == 1 ? &ms : NULL);
        msgs_free(&ms);
        assert_int_equal(r.digest_mismatches, 0);
        /* Repair of a clean layer repairs nothing and changes nothing. */
        size_t n1, n2;
        uint8_t *before = read_whole_file(p, &n1);
        r = check(p, VD_CHECK_REPAIR, &ms);
        expect_clean(&r, &ms);
        uint8_t *after = read_whole_file(p, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(before, after, n1);
        free(before);
        free(after);
        msgs_free(&ms);
    }
    /* A NULL report function is allowed. */
    struct vd_check_result r;
    assert_rc(vd_layer_check(tpath(e, "a.vdk"), 0, &r, NULL, NULL), 0);
    assert_int_equal(r.corruptions, 0);
}

static void test_check_after_writes(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 16 * MiB, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 1 * MiB, 1);
    write_pattern(c, 5 * MiB + 512, 3 * 512, 2);
    assert_rc(vd_zero(c, 64 * KiB, 64 * KiB, 0), 0);
    assert_rc(vd_discard(c, 256 * KiB, 128 * KiB), 0);
    write_pattern(c, 16 * MiB - 4096, 4096, 3);
    close_chain(c);

    struct msgs ms = { 0 };
    struct vd_check_result r = check(p, 0, &ms);
    expect_clean(&r, &ms);
    assert_true(r.blocks_checked > 0);
    msgs_free(&ms);

    /* A delta over it is clean too, and so is the frozen parent. */
    const char *d = tpath(e, "d.vdk");
    make_layer(d, 0, 0, VD_DIGEST_NONE, p, NULL);
    c = open_chain(e->ctx, d, VD_OPEN_RDWR);
    write_pattern(c, 512, 512, 4);
    assert_rc(vd_zero(c, 8192, 4096, 0), 0);
    write_pattern(c, 2 * MiB, 128 * KiB, 5);
    close_chain(c);
    r = check(d, 0, &ms);
    expect_clean(&r, &ms);
    assert_true(r.blocks_checked > 0);
    r = check(p, 0, &ms);
    expect_clean(&r, &ms);
    /* Neither has digests: verifying finds nothing either. */
    r = check(d, VD_CHECK_VERIFY, &ms);
    expect_clean(&r, NULL);
    r = check(p, VD_CHECK_VERIFY, &ms);
    expect_clean(&r, NULL);
    msgs_free(&ms);
}

static void test_check_verify_sha256(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 16 * MiB, 65536, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    for (int b = 0; b < 40; b += 3)
        write_pattern(c, (uint64_t)b * 65536, 65536, 10 + b);
    write_pattern(c, 50 * 65536 + 4096, 512, 99);     /* a partial block */
    assert_rc(vd_zero(c, 3 * 65536 + 8192, 4096, 0), 0); /* part of a block */
    close_chain(c);

    struct msgs ms = { 0 };
    struct vd_check_result r = check(p, VD_CHECK_VERIFY, &ms);
    expect_clean(&r, &ms);
    assert_true(r.blocks_checked >= 15);
    msgs_free(&ms);
}

/* Numbers in a message, decimal or 0x hex. */
static bool msg_names_number(const char *msg, uint64_t want)
{
    const char *s = msg;
    while (*s) {
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
            char *end;
            uint64_t v = strtoull(s + 2, &end, 16);
            if (end != s + 2 && v == want)
                return true;
            s = end != s + 2 ? end : s + 2;
        } else if (*s >= '0' && *s <= '9') {
            char *end;
            uint64_t v = strtoull(s, &end, 10);
            if (v == want)
                return true;
            s = end;
        } else {
            s++;
        }
    }
    return false;
}

/* Flip a byte of one data block in the file: verify finds exactly that
 * block and names it. */
static void test_check_digest_mismatch(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    const uint64_t bs = 65536, victim = 37;
    make_layer(p, 16 * MiB, (uint32_t)bs, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    for (uint64_t b = 30; b < 45; b++)
        write_pattern(c, b * bs, bs, 1000 + (uint32_t)b);
    close_chain(c);

    /* Find block 37's bytes in the file. */
    size_t n;
    uint8_t *file = read_whole_file(p, &n);
    uint8_t probe[256];
    fill_pattern(probe, sizeof(probe), victim * bs + 4096, 1000 + (uint32_t)victim);
    uint8_t *hit = memmem(file, n, probe, sizeof(probe));
    if (!hit) {
        free(file);
        fail_msg("the data of block %llu is not stored as-is in the file",
                 (unsigned long long)victim);
    }
    uint64_t at = (uint64_t)(hit - file) + 100;
    uint8_t flipped = file[at] ^ 0x01;
    free(file);
    patch_file(p, at, &flipped, 1);

    /* Without VERIFY the structure is still fine. */
    struct msgs ms = { 0 };
    struct vd_check_result r = check(p, 0, &ms);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.digest_mismatches, 0);
    msgs_free(&ms);

    r = check(p, VD_CHECK_VERIFY, &ms);
    if (r.digest_mismatches != 1) {
        print_msgs(&ms);
        fail_msg("digest_mismatches = %llu, expected 1",
                 (unsigned long long)r.digest_mismatches);
    }
    assert_int_equal(r.corruptions, 0);
    assert_true(r.blocks_checked >= 15);
    assert_true(ms.n >= 1);
    bool named = false;
    for (unsigned i = 0; i < ms.n && i < MSGS_MAX; i++) {
        assert_true(strlen(ms.m[i]) > 0);
        assert_null(strchr(ms.m[i], '\n'));
        if (msg_names_number(ms.m[i], victim) ||
            msg_names_number(ms.m[i], victim * bs))
            named = true;
    }
    if (!named) {
        print_msgs(&ms);
        fail_msg("no report names block %llu (or virtual offset %llu)",
                 (unsigned long long)victim, (unsigned long long)(victim * bs));
    }
    msgs_free(&ms);

    /* Repair cannot invent the lost data: the mismatch stays reported. */
    r = check(p, VD_CHECK_VERIFY | VD_CHECK_REPAIR, &ms);
    assert_int_equal(r.digest_mismatches, 1);
    msgs_free(&ms);

    /* The other blocks still read back fine. */
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    for (uint64_t b = 30; b < 45; b++)
        if (b != victim)
            expect_pattern(c, b * bs, bs, 1000 + (uint32_t)b);
    close_chain(c);
}

/* An unclean close leaves the dirty flag; check reports it, repair clears
 * it; data flushed before the "crash" is there. */
static void test_check_dirty(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 16 * MiB, 65536, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 256 * KiB, 1);
    assert_rc(vd_flush(c), 0);
    write_pattern(c, 1 * MiB, 64 * KiB, 2);     /* not flushed */
    vdi_chain_abandon(c);

    struct vd_layer_info info = layer_info(p);
    assert_true(info.dirty);

    struct msgs ms = { 0 };
    struct vd_check_result r = check(p, 0, &ms);
    assert_true(r.dirty);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.repaired, 0);
    msgs_free(&ms);
    /* A check without REPAIR changes nothing. */
    assert_true(layer_info(p).dirty);

    r = check(p, VD_CHECK_VERIFY, &ms);
    assert_true(r.dirty);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.digest_mismatches, 0);
    msgs_free(&ms);

    r = check(p, VD_CHECK_REPAIR, &ms);
    assert_true(r.dirty);            /* it was dirty when the check began */
    assert_true(r.repaired >= 1);
    assert_int_equal(r.corruptions, 0);
    msgs_free(&ms);
    assert_false(layer_info(p).dirty);

    r = check(p, VD_CHECK_VERIFY, &ms);
    expect_clean(&r, &ms);
    msgs_free(&ms);

    /* Flushed data survived; the unflushed write is old or new, whole. */
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    expect_pattern(c, 0, 256 * KiB, 1);
    uint8_t *buf = malloc(64 * KiB);
    assert_non_null(buf);
    assert_rc(vd_read(c, buf, 1 * MiB, 64 * KiB), 0);
    for (uint64_t off = 0; off < 64 * KiB; off += 4096) {
        bool zero = true, pat = true;
        for (uint64_t i = 0; i < 4096; i++) {
            zero &= buf[off + i] == 0;
            pat &= buf[off + i] == pattern_byte(1 * MiB + off + i, 2);
        }
        if (!zero && !pat)
            fail_msg("unflushed sub-block at %llu is neither old nor new",
                     (unsigned long long)(1 * MiB + off));
    }
    free(buf);
    close_chain(c);
}

/* A dirty layer opens for writing; a clean close clears the flag. */
static void test_dirty_reopen(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, 4 * MiB, 0, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR);
    write_pattern(c, 0, 8192, 1);
    assert_rc(vd_flush(c), 0);
    vdi_chain_abandon(c);
    assert_true(layer_info(p).dirty);

    /* Read-only opens see it dirty and leave it so. */
    c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    assert_true(chain_info(c, 1).dirty);
    expect_pattern(c, 0, 8192, 1);
    close_chain(c);
    assert_true(layer_info(p).dirty);

    c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_true(chain_info(c, 1).dirty);
    expect_pattern(c, 0, 8192, 1);
    write_pattern(c, 8192, 4096, 2);
    close_chain(c);
    assert_false(layer_info(p).dirty);
    struct msgs ms = { 0 };
    struct vd_check_result r = check(p, 0, &ms);
    expect_clean(&r, &ms);
    msgs_free(&ms);
}

/* A damaged file: check gives -EUCLEAN or counts corruption, with a
 * message; open and info fail cleanly or work; nothing crashes. */
static void expect_damage_found(const char *p, const char *what)
{
    struct msgs ms = { 0 };
    struct vd_check_result r;
    memset(&r, 0, sizeof(r));
    int rc = vd_layer_check(p, VD_CHECK_VERIFY, &r, msgs_report, &ms);
    if (rc == 0) {
        bool empty_msg = false;
        for (unsigned i = 0; i < ms.n && i < MSGS_MAX; i++)
            empty_msg |= ms.m[i][0] == '\0';
        unsigned nmsgs = ms.n;
        bool found = r.corruptions != 0 || r.digest_mismatches != 0;
        if (!found)
            print_msgs(&ms);
        msgs_free(&ms);     /* before failing: no leak on failure */
        if (!found)
            fail_msg("%s: check found nothing wrong", what);
        if (nmsgs == 0)
            fail_msg("%s: check counted damage but reported no message", what);
        if (empty_msg)
            fail_msg("%s: an empty report message", what);
    } else {
        if (rc != -EUCLEAN)
            fail_msg("%s: vd_layer_check = %d (%s), expected -EUCLEAN or a "
                     "count", what, rc, strerror(-rc));
        assert_errmsg();
    }
    msgs_free(&ms);
}

/* Opening a damaged file fails with a message, or opens and reads
 * without crashing (the read may fail). */
static void open_damaged(struct tenv *e, const char *p)
{
    struct vd_layer_info info;
    int rc = vd_layer_info(p, &info);
    if (rc < 0)
        assert_errmsg();
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    rc = vd_chain_open(e->ctx, p, &o, &c);
    if (rc < 0) {
        assert_errmsg();
        return;
    }
    uint64_t size = vd_chain_size(c);
    uint8_t *buf = malloc(1 * MiB);
    assert_non_null(buf);
    for (uint64_t off = 0; off < size && off < 64 * MiB; off += 1 * MiB) {
        size_t len = size - off < 1 * MiB ? (size_t)(size - off) : 1 * MiB;
        if (vd_read(c, buf, off, len) < 0)
            assert_errmsg();
    }
    struct vd_extent x[16];
    (void)vd_block_status(c, 0, size, x, 16);
    free(buf);
    vd_chain_close(c);
}

static const char *make_written(struct tenv *e, const char *name)
{
    const char *p = tpath(e, name);
    make_layer(p, 16 * MiB, 65536, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    for (int b = 0; b < 64; b += 2)
        write_pattern(c, (uint64_t)b * 65536, 65536, 7 + b);
    close_chain(c);
    return p;
}

/* Where the file stores the data written at virtual offset `off` with
 * pattern `seed` (it is stored as-is). */
static uint64_t find_data(const uint8_t *file, size_t n, uint64_t off,
                          uint32_t seed)
{
    uint8_t probe[256];
    fill_pattern(probe, sizeof(probe), off, seed);
    const uint8_t *hit = memmem(file, n, probe, sizeof(probe));
    if (!hit)
        fail_msg("the data written at %llu is not in the file",
                 (unsigned long long)off);
    return (uint64_t)(hit - file);
}

static void test_truncated(void **state)
{
    struct tenv *e = *state;
    const char *p = make_written(e, "a.vdk");
    size_t n;
    uint8_t *orig = read_whole_file(p, &n);
    /* Cut inside the data of the last and of the first block written (so
     * the cut surely removes something the index refers to), and inside
     * the header and L1 area. */
    const uint64_t cuts[] = {
        find_data(orig, n, 62 * 65536, 7 + 62) + 100,
        find_data(orig, n, 0, 7) + 4096,
        8192, 4096, 512, 100, 0,
    };
    /* Keep the original on disk, not in memory: a failing assertion
     * must not leak it. */
    write_file(tpath(e, "orig.bak"), orig, n);
    free(orig);

    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        if (cuts[i] >= n)
            continue;
        orig = read_whole_file(tpath(e, "orig.bak"), &n);
        write_file(p, orig, n);
        free(orig);
        assert_int_equal(truncate(p, (off_t)cuts[i]), 0);
        char what[64];
        snprintf(what, sizeof(what), "truncated to %llu bytes",
                 (unsigned long long)cuts[i]);
        expect_damage_found(p, what);
        open_damaged(e, p);
        /* Repair must not turn it into a crash either. */
        struct vd_check_result r;
        (void)vd_layer_check(p, VD_CHECK_REPAIR, &r, NULL, NULL);
        open_damaged(e, p);
    }
}

/* The header is kept in two 4 KiB slots at the start of the file (see
 * docs/FORMAT.md): zeroing both leaves nothing to read. */
static void test_zeroed_header(void **state)
{
    struct tenv *e = *state;
    const char *p = make_written(e, "a.vdk");
    uint8_t zeros[8192] = { 0 };
    patch_file(p, 0, zeros, sizeof(zeros));
    struct vd_check_result r;
    assert_rc(vd_layer_check(p, VD_CHECK_VERIFY, &r, NULL, NULL), -EUCLEAN);
    assert_errmsg();
    expect_damage_found(p, "zeroed header slots");
    struct vd_layer_info info;
    assert_rc_either(vd_layer_info(p, &info), -EINVAL, -EUCLEAN);
    assert_errmsg();
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc_either(vd_chain_open(e->ctx, p, &o, &c), -EINVAL, -EUCLEAN);
    assert_errmsg();
    assert_rc_either(vd_layer_freeze(p), -EINVAL, -EUCLEAN);
}

/* One header slot destroyed (what a torn header write looks like): the
 * other slot may be used, but then every block still reads its data. */
static void test_one_header_slot_zeroed(void **state)
{
    struct tenv *e = *state;
    for (int slot = 0; slot < 2; slot++) {
        const char *p = make_written(e, slot ? "b.vdk" : "a.vdk");
        uint8_t zeros[4096] = { 0 };
        patch_file(p, (uint64_t)slot * 4096, zeros, slot ? 4096 : 512);
        struct vd_check_result r;
        int rc = vd_layer_check(p, VD_CHECK_VERIFY, &r, NULL, NULL);
        if (rc < 0) {
            assert_int_equal(rc, -EUCLEAN);
            assert_errmsg();
        } else {
            assert_int_equal(r.digest_mismatches, 0);
        }
        struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
        struct vd_chain *c = NULL;
        rc = vd_chain_open(e->ctx, p, &o, &c);
        if (rc < 0) {
            assert_errmsg();
            continue;
        }
        assert_int_equal(vd_chain_size(c), 16 * MiB);
        for (int b = 0; b < 64; b++) {
            if (b % 2 == 0)
                expect_pattern(c, (uint64_t)b * 65536, 65536, 7 + b);
            else
                expect_zero(c, (uint64_t)b * 65536, 65536);
        }
        close_chain(c);
    }
}

static void test_check_errors(void **state)
{
    struct tenv *e = *state;
    struct vd_check_result r;
    assert_rc(vd_layer_check(tpath(e, "missing.vdk"), 0, &r, NULL, NULL),
              -ENOENT);
    assert_errmsg();

    const char *junk = tpath(e, "junk.vdk");
    uint8_t buf[16384];
    uint64_t s = 5;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rng_next(&s);
    write_file(junk, buf, sizeof(buf));
    assert_rc(vd_layer_check(junk, 0, &r, NULL, NULL), -EUCLEAN);
    assert_errmsg();
    assert_rc(vd_layer_check(junk, VD_CHECK_REPAIR, &r, NULL, NULL), -EUCLEAN);
    /* Repair of a non-layer must not write into it. */
    size_t n;
    uint8_t *after = read_whole_file(junk, &n);
    assert_int_equal(n, sizeof(buf));
    assert_memory_equal(after, buf, sizeof(buf));
    free(after);

    write_file(junk, "", 0);
    assert_rc(vd_layer_check(junk, 0, &r, NULL, NULL), -EUCLEAN);
    assert_errmsg();
}

/* Random bytes over everything after the first sector: whatever is hit
 * (index, digests, data), check notices and nothing crashes. */
static void test_scrambled_body(void **state)
{
    struct tenv *e = *state;
    const char *p = make_written(e, "a.vdk");
    size_t n;
    uint8_t *file = read_whole_file(p, &n);
    uint64_t s = 77;
    for (size_t i = 512; i < n; i++)
        file[i] = (uint8_t)rng_next(&s);
    write_file(p, file, n);
    free(file);
    expect_damage_found(p, "random bytes after the first sector");
    open_damaged(e, p);
}

/* Single-byte corruptions all over the metadata at the start of the file:
 * every one gives a clean answer (ASan/UBSan watch for the rest). */
static void test_header_byte_flips(void **state)
{
    struct tenv *e = *state;
    const char *p = make_written(e, "a.vdk");
    size_t n;
    uint8_t *orig = read_whole_file(p, &n);
    size_t limit = n < 8192 ? n : 8192;
    for (size_t at = 0; at < limit; at += 29) {
        uint8_t b = orig[at] ^ (uint8_t)(0x80 >> (at % 8));
        write_file(p, orig, n);
        patch_file(p, at, &b, 1);
        struct vd_check_result r;
        int rc = vd_layer_check(p, VD_CHECK_VERIFY, &r, NULL, NULL);
        if (rc < 0)
            assert_errmsg();
        open_damaged(e, p);
    }
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_fresh, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_check_after_writes, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_check_verify_sha256, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_check_digest_mismatch, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_check_dirty, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_dirty_reopen, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_truncated, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_zeroed_header, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_one_header_slot_zeroed, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_check_errors, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_scrambled_body, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_header_byte_flips, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
