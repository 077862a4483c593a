/*
 * test-hostile.c - corrupt and malicious layer files.
 *
 * Every image here starts as a real layer written by the library, then is
 * damaged at offsets taken from format.h (recomputing CRC-32Cs where the
 * damage must get past the checksums to reach the code that validates the
 * fields).  A damaged file must be refused by vd_chain_open and
 * vd_layer_info with a negative errno and a message naming the problem, or,
 * where the damage is one the format is built to survive (a torn header
 * copy), open and read the right data.  vd_layer_check must run on every
 * one of them and count the damage, and nothing may crash, hang or read out
 * of bounds: the suite also runs under ASan+UBSan.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "image-edit.h"

/* The standard victim: 32 MiB of 64 KiB blocks is 512 blocks, three L2
 * pages of 254 entries, so that L1 entries can be swapped and repeated. */
#define STD_SIZE    (32 * MiB)
#define STD_BS      (64 * 1024u)
#define BLK_A       0u        /* in L2 page 0 */
#define BLK_B       300u      /* in L2 page 1 */
#define BLK_C       511u      /* the last block, in L2 page 2 */

/* ------------------------------------------------------------------ */
/* Victims                                                             */

/* A layer of STD_SIZE with data in blocks BLK_A, BLK_B and BLK_C, so in
 * every L2 page.  versions 2: the L2 pages are flushed twice, so that both
 * slots of each pair hold a valid version; 1: only the first slot does
 * (what a layer written once and closed looks like). */
static void make_std(struct tenv *e, const char *path, enum vd_digest dg,
                     int versions)
{
    make_layer(path, STD_SIZE, STD_BS, dg, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, path, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, (uint64_t)BLK_A * STD_BS, 8192, 1);
    write_pattern(c, (uint64_t)BLK_B * STD_BS + 4096, 4096, 1);
    write_pattern(c, (uint64_t)BLK_C * STD_BS, STD_BS, 1);
    if (versions == 2) {
        assert_rc(vd_flush(c), 0);
        write_pattern(c, (uint64_t)BLK_A * STD_BS + 16384, 4096, 1);
        write_pattern(c, (uint64_t)BLK_B * STD_BS + 32768, 4096, 1);
        write_pattern(c, (uint64_t)BLK_C * STD_BS, 4096, 1);
    }
    close_chain(c);
}

static void std_expect_data(struct tenv *e, const char *path, int versions)
{
    struct vd_chain *c = open_chain(e->ctx, path, VD_OPEN_BUFFERED);
    expect_pattern(c, (uint64_t)BLK_A * STD_BS, 8192, 1);
    expect_zero(c, (uint64_t)BLK_A * STD_BS + 8192, 8192);
    expect_pattern(c, (uint64_t)BLK_B * STD_BS + 4096, 4096, 1);
    expect_pattern(c, (uint64_t)BLK_C * STD_BS, STD_BS, 1);
    if (versions == 2)
        expect_pattern(c, (uint64_t)BLK_A * STD_BS + 16384, 4096, 1);
    close_chain(c);
}

/* ------------------------------------------------------------------ */
/* Expectations                                                        */

static bool contains_ci(const char *hay, const char *needle)
{
    return strcasestr(hay, needle) != NULL;
}

static void expect_msg(const char *call, const char *path, const char *what)
{
    const char *m = vd_errmsg();
    assert_non_null(m);
    if (m[0] == '\0')
        fail_msg("%s(%s): vd_errmsg() is empty", call, path);
    if (what && !contains_ci(m, what))
        fail_msg("%s(%s): message \"%s\" does not mention \"%s\"", call, path, m, what);
}

/* Every way of opening path as a chain fails with want and a message
 * mentioning `what`, and refusing the file writes nothing to it. */
static void expect_chain_refused(struct tenv *e, const char *path, int want,
                                 const char *what)
{
    static const unsigned flags[] = { VD_OPEN_BUFFERED, 0,
                                      VD_OPEN_RDWR | VD_OPEN_BUFFERED, VD_OPEN_RDWR };
    size_t len0;
    uint8_t *before = read_whole_file(path, &len0);
    /* A frozen layer is refused for writing before anything else. */
    struct vd_layer_info info;
    bool frozen = vd_layer_info(path, &info) == 0 && info.frozen;
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (frozen && (flags[i] & VD_OPEN_RDWR))
            continue;
        struct vd_open_opts o = { .flags = flags[i] };
        struct vd_chain *c = NULL;
        int rc = vd_chain_open(e->ctx, path, &o, &c);
        if (rc == 0) {
            vd_chain_close(c);
            fail_msg("vd_chain_open(%s, flags %#x) accepted a corrupt file", path, flags[i]);
        }
        if (rc != want)
            fail_msg("vd_chain_open(%s, flags %#x) = %d (%s), expected %d (%s); vd_errmsg: %s",
                     path, flags[i], rc, strerror(-rc), want, strerror(-want), vd_errmsg());
        assert_null(c);
        expect_msg("vd_chain_open", path, what);
    }
    size_t len1;
    uint8_t *after = read_whole_file(path, &len1);
    if (len0 != len1 || memcmp(before, after, len0) != 0)
        fail_msg("%s: refusing the file modified it", path);
    free(before);
    free(after);
}

/* The file itself is bad: refused as a chain and by vd_layer_info. */
static void expect_refused(struct tenv *e, const char *path, int want, const char *what)
{
    expect_chain_refused(e, path, want, what);
    struct vd_layer_info info;
    int rc = vd_layer_info(path, &info);
    if (rc != want)
        fail_msg("vd_layer_info(%s) = %d (%s), expected %d; vd_errmsg: %s", path, rc,
                 strerror(-rc), want, vd_errmsg());
    expect_msg("vd_layer_info", path, what);
}

/* For tests of many cases: true when a read-only open refuses path, so
 * that a test can name every case the library accepts, not only the first. */
static bool open_refuses(struct tenv *e, const char *path)
{
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    if (vd_chain_open(e->ctx, path, &o, &c) < 0)
        return true;
    vd_chain_close(c);
    return false;
}

static void note_case(char *list, size_t n, const char *name)
{
    size_t l = strlen(list);
    snprintf(list + l, n - l, "%s%s", l ? "; " : "", name);
}

/* vd_layer_check runs and finds the damage: either it cannot read the
 * header (returns want_rc, a negative errno, with a message), or, with
 * want_rc 0, it returns 0 and counts corruptions, each reported as a line
 * starting with "ERROR".  With VD_CHECK_REPAIR it changes nothing in a
 * corrupt file. */
static void expect_check_finds(const char *path, int want_rc)
{
    static const unsigned flags[] = { 0, VD_CHECK_VERIFY, VD_CHECK_REPAIR };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        size_t len0;
        uint8_t *before = read_whole_file(path, &len0);
        struct vd_check_result res;
        struct msgs ms = { 0 };
        int rc = vd_layer_check(path, flags[i], &res, msgs_report, &ms);
        size_t len1;
        uint8_t *after = read_whole_file(path, &len1);
        bool changed = len0 != len1 || memcmp(before, after, len0) != 0;
        free(before);
        free(after);
        bool error_line = false;
        for (unsigned k = 0; k < ms.n && k < MSGS_MAX; k++)
            error_line |= strncmp(ms.m[k], "ERROR", 5) == 0;
        msgs_free(&ms);
        if (rc != want_rc)
            fail_msg("vd_layer_check(%s, %#x) = %d (%s), expected %d; vd_errmsg: %s", path,
                     flags[i], rc, strerror(-rc), want_rc, vd_errmsg());
        if (rc < 0) {
            expect_msg("vd_layer_check", path, NULL);
        } else {
            if (res.corruptions == 0)
                fail_msg("vd_layer_check(%s, %#x) found no corruption", path, flags[i]);
            if (!error_line)
                fail_msg("vd_layer_check(%s): %llu corruptions but no ERROR line", path,
                         (unsigned long long)res.corruptions);
            assert_int_equal(res.repaired, 0);
        }
        if (changed)
            fail_msg("vd_layer_check(%s, %#x) modified a corrupt file", path, flags[i]);
    }
}

/* For damage that the open path cannot see (shared space): the file opens,
 * every byte of the disk can be read and described without a crash. */
static void expect_survives_reading(struct tenv *e, const char *path)
{
    struct vd_chain *c = open_chain(e->ctx, path, VD_OPEN_BUFFERED);
    uint64_t size = vd_chain_size(c);
    size_t chunk = 1 * MiB;
    uint8_t *buf = malloc(chunk);
    assert_non_null(buf);
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        assert_rc(vd_read(c, buf, off, n), 0);
    }
    free(buf);
    struct vd_extent ext[64];
    for (uint64_t off = 0; off < size;) {
        int n = vd_block_status(c, off, size - off, ext, 64);
        assert_true(n >= 1);
        off = ext[n - 1].offset + ext[n - 1].length;
    }
    close_chain(c);
}

/* ------------------------------------------------------------------ */
/* Not a layer at all                                                  */

static void test_empty_file(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "empty.vdk");
    write_file(p, "", 0);
    expect_refused(e, p, -EINVAL, "magic");
    expect_check_finds(p, -EUCLEAN);
}

static void test_truncated_header(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    const char *p = tpath(e, "trunc.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img im;
    img_load(&im, good);
    img_resize(&im, 100);
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "checksum");
    expect_check_finds(p, -EUCLEAN);
}

/* A file cut short inside its fixed metadata (the header pair and the L1
 * table, which a real layer always holds in full) has lost its index: it
 * must not open as an empty disk. */
static void test_truncated_metadata(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img orig;
    img_load(&orig, good);
    struct img_geometry g = img_geo(&orig);
    const size_t cuts[] = { VDF_PAGE, VDF_PAGE + 1, 2 * VDF_PAGE, 3 * VDF_PAGE,
                            (size_t)g.data_start - 1 };
    char accepted[512] = "";
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "cut-%zu.vdk", cuts[i]);
        const char *p = tpath(e, name);
        struct img im = img_dup(&orig);
        img_resize(&im, cuts[i]);
        img_save_as(&im, p);
        img_free(&im);
        if (!open_refuses(e, p)) {
            note_case(accepted, sizeof(accepted), name);
            continue;
        }
        expect_refused(e, p, -EUCLEAN, NULL);
        expect_check_finds(p, 0);
    }
    img_free(&orig);
    if (accepted[0])
        fail_msg("truncated files opened as valid (empty) disks: %s", accepted);
}

/* Cut anywhere in the data area: whatever the library decides, no crash,
 * and check runs. */
static void test_truncated_anywhere(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_SHA256, 2);
    struct img orig;
    img_load(&orig, good);
    for (size_t cut = 2 * VDF_PAGE; cut < orig.len; cut += 2048 + 512) {
        const char *p = tpath(e, "cut.vdk");
        struct img im = img_dup(&orig);
        img_resize(&im, cut);
        img_save_as(&im, p);
        img_free(&im);
        struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
        struct vd_chain *c = NULL;
        int rc = vd_chain_open(e->ctx, p, &o, &c);
        if (rc == 0) {
            uint8_t buf[65536];
            for (uint64_t off = 0; off < STD_SIZE; off += 2 * MiB)
                (void)vd_read(c, buf, off, sizeof(buf));
            (void)vd_read(c, buf, (uint64_t)BLK_C * STD_BS, sizeof(buf));
            vd_chain_close(c);
        } else {
            expect_msg("vd_chain_open", p, NULL);
        }
        struct vd_check_result res;
        rc = vd_layer_check(p, VD_CHECK_VERIFY, &res, NULL, NULL);
        assert_true(rc == 0 || rc == -EUCLEAN);
        unlink(p);
    }
    img_free(&orig);
}

static void test_bad_magic(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "magic.vdk");
    make_std(e, p, VD_DIGEST_NONE, 1);
    struct img im;
    img_load(&im, p);
    memcpy(im.b + VDF_H_MAGIC, "QFI\xfb\0\0\0\3", 8);
    memcpy(im.b + VDF_PAGE + VDF_H_MAGIC, "QFI\xfb\0\0\0\3", 8);
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EINVAL, "magic");
    expect_check_finds(p, -EUCLEAN);

    /* A file of random bytes. */
    const char *r = tpath(e, "random.vdk");
    uint64_t seed = 7;
    size_t n = 256 * 1024;
    uint8_t *junk = malloc(n);
    assert_non_null(junk);
    for (size_t i = 0; i < n; i++)
        junk[i] = (uint8_t)rng_next(&seed);
    write_file(r, junk, n);
    free(junk);
    expect_refused(e, r, -EINVAL, "magic");
    expect_check_finds(r, -EUCLEAN);
}

static void test_bad_crc_both_headers(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "crc.vdk");
    make_std(e, p, VD_DIGEST_NONE, 1);
    struct img im;
    img_load(&im, p);
    assert_true(img_hdr_valid(&im, 0) && img_hdr_valid(&im, 1));
    im.b[VDF_H_SIZE + 2] ^= 0x10;
    im.b[VDF_PAGE + VDF_H_CRC] ^= 0x01;
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "checksum");
    expect_check_finds(p, -EUCLEAN);
}

/* A torn header write damages one copy: the other one must be used. */
static void test_one_header_corrupt(void **state)
{
    struct tenv *e = *state;
    for (unsigned which = 0; which < 2; which++) {
        for (unsigned kind = 0; kind < 3; kind++) {
            const char *p = tpath(e, "onehdr.vdk");
            unlink(p);
            make_std(e, p, VD_DIGEST_NONE, 1);
            struct img im;
            img_load(&im, p);
            assert_true(img_hdr_valid(&im, 0) && img_hdr_valid(&im, 1));
            uint8_t *h = im.b + (size_t)which * VDF_PAGE;
            if (kind == 0)
                memset(h, 0, VDF_PAGE);              /* never written */
            else if (kind == 1)
                memset(h + 1000, 0xA5, VDF_PAGE - 1000);   /* torn */
            else
                h[VDF_H_SIZE] ^= 0x02;               /* a flipped bit */
            img_save_as(&im, p);
            img_free(&im);

            struct vd_layer_info info = layer_info(p);
            assert_int_equal(info.size, STD_SIZE);
            assert_int_equal(info.block_size, STD_BS);
            std_expect_data(e, p, 1);
            /* O_DIRECT and writable opens work too; the writable one
             * rewrites the damaged slot. */
            struct vd_chain *c = open_chain(e->ctx, p, 0);
            expect_pattern(c, (uint64_t)BLK_C * STD_BS, 4096, 1);
            close_chain(c);
            c = open_chain(e->ctx, p, VD_OPEN_RDWR);
            write_pattern(c, 2 * MiB, 4096, 9);
            close_chain(c);
            std_expect_data(e, p, 1);
            struct vd_check_result res;
            assert_rc(vd_layer_check(p, 0, &res, NULL, NULL), 0);
            assert_int_equal(res.corruptions, 0);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Header fields out of range (CRCs recomputed)                        */

struct hdr_case {
    const char *name;
    unsigned field;
    unsigned width;          /* 4 or 8 */
    uint64_t value;
    int want;
    const char *what;        /* a word the message must contain */
};

static const struct hdr_case hdr_cases[] = {
    { "version 0", VDF_H_VERSION, 4, 0, -ENOTSUP, "version" },
    { "version 2", VDF_H_VERSION, 4, 2, -ENOTSUP, "version" },
    { "version ~0", VDF_H_VERSION, 4, 0xffffffffu, -ENOTSUP, "version" },
    { "header size 512", VDF_H_HDRSIZE, 4, 512, -EUCLEAN, "header size" },
    { "incompatible bit 0", VDF_H_INCOMPAT, 8, 1, -ENOTSUP, "incompatible" },
    { "incompatible bit 63", VDF_H_INCOMPAT, 8, 1ull << 63, -ENOTSUP, "incompatible" },
    { "block shift 0", VDF_H_BLOCK_SHIFT, 4, 0, -EUCLEAN, "block size" },
    { "block shift 11", VDF_H_BLOCK_SHIFT, 4, 11, -EUCLEAN, "block size" },
    { "block shift 22", VDF_H_BLOCK_SHIFT, 4, 22, -EUCLEAN, "block size" },
    { "block shift 63", VDF_H_BLOCK_SHIFT, 4, 63, -EUCLEAN, "block size" },
    { "block shift 64", VDF_H_BLOCK_SHIFT, 4, 64, -EUCLEAN, "block size" },
    { "block shift ~0", VDF_H_BLOCK_SHIFT, 4, 0xffffffffu, -EUCLEAN, "block size" },
    { "size 0", VDF_H_SIZE, 8, 0, -EUCLEAN, "size" },
    { "size 1000", VDF_H_SIZE, 8, 1000, -EUCLEAN, "size" },
    { "size 2^63", VDF_H_SIZE, 8, 1ull << 63, -EUCLEAN, "size" },
    { "size ~0", VDF_H_SIZE, 8, UINT64_MAX, -EUCLEAN, "size" },
    { "size ~0 & ~511", VDF_H_SIZE, 8, UINT64_MAX & ~511ull, -EUCLEAN, "size" },
    { "size 64 TiB + 512", VDF_H_SIZE, 8, VD_MAX_SIZE + 512, -EUCLEAN, "size" },
    /* A consistent size for a different geometry: the L1 page count no
     * longer matches. */
    { "size 8 TiB", VDF_H_SIZE, 8, 8ull << 40, -EUCLEAN, "geometry" },
    { "digest 2", VDF_H_DIGEST, 4, 2, -EUCLEAN, "digest" },
    { "digest ~0", VDF_H_DIGEST, 4, 0xffffffffu, -EUCLEAN, "digest" },
    /* Turning digests on changes the entry size: inconsistent. */
    { "digest 1", VDF_H_DIGEST, 4, 1, -EUCLEAN, "geometry" },
    { "entry size 0", VDF_H_ENTRY_SIZE, 4, 0, -EUCLEAN, "geometry" },
    { "entry size 8", VDF_H_ENTRY_SIZE, 4, 8, -EUCLEAN, "geometry" },
    { "entry size 32", VDF_H_ENTRY_SIZE, 4, 32, -EUCLEAN, "geometry" },
    { "entry size 4096", VDF_H_ENTRY_SIZE, 4, 4096, -EUCLEAN, "geometry" },
    { "entry size ~0", VDF_H_ENTRY_SIZE, 4, 0xffffffffu, -EUCLEAN, "geometry" },
    { "epp 0", VDF_H_EPP, 4, 0, -EUCLEAN, "geometry" },
    { "epp 255", VDF_H_EPP, 4, 255, -EUCLEAN, "geometry" },
    { "epp 4096", VDF_H_EPP, 4, 4096, -EUCLEAN, "geometry" },
    { "epp ~0", VDF_H_EPP, 4, 0xffffffffu, -EUCLEAN, "geometry" },
    { "L1 offset 0", VDF_H_L1_OFFSET, 8, 0, -EUCLEAN, "geometry" },
    { "L1 offset 4096", VDF_H_L1_OFFSET, 8, 4096, -EUCLEAN, "geometry" },
    { "L1 offset 2^62", VDF_H_L1_OFFSET, 8, 1ull << 62, -EUCLEAN, "geometry" },
    { "L1 pages 0", VDF_H_L1_PAGES, 8, 0, -EUCLEAN, "geometry" },
    { "L1 pages 2", VDF_H_L1_PAGES, 8, 2, -EUCLEAN, "geometry" },
    { "L1 pages 2^60", VDF_H_L1_PAGES, 8, 1ull << 60, -EUCLEAN, "geometry" },
    { "L1 pages ~0", VDF_H_L1_PAGES, 8, UINT64_MAX, -EUCLEAN, "geometry" },
    { "unknown flag", VDF_H_FLAGS, 4, 1u << 7, -EUCLEAN, "flags" },
    { "hint length 256", VDF_H_HINT_LEN, 4, 256, -EUCLEAN, "hint" },
    { "hint length ~0", VDF_H_HINT_LEN, 4, 0xffffffffu, -EUCLEAN, "hint" },
    /* The hint is all NULs: a length of 5 puts NULs inside it. */
    { "hint with NUL", VDF_H_HINT_LEN, 4, 5, -EUCLEAN, "hint" },
};

static void test_header_fields(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img orig;
    img_load(&orig, good);
    for (size_t i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
        const struct hdr_case *hc = &hdr_cases[i];
        char name[64];
        snprintf(name, sizeof(name), "hdr-%zu.vdk", i);
        const char *p = tpath(e, name);
        struct img im = img_dup(&orig);
        if (hc->width == 4)
            img_hdr_set32(&im, hc->field, (uint32_t)hc->value);
        else
            img_hdr_set64(&im, hc->field, hc->value);
        img_save_as(&im, p);
        img_free(&im);
        print_message("header case: %s\n", hc->name);
        expect_refused(e, p, hc->want, hc->what);
        /* check reads the header only: features it does not know are
         * reported as such, anything else as corruption. */
        expect_check_finds(p, hc->want == -ENOTSUP ? -ENOTSUP : -EUCLEAN);
        unlink(p);
    }
    img_free(&orig);
}

static void test_null_uuid(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "nulluuid.vdk");
    make_std(e, p, VD_DIGEST_NONE, 1);
    struct img im;
    img_load(&im, p);
    uint8_t zero[16] = { 0 };
    img_hdr_set_bytes(&im, VDF_H_UUID, zero, 16);
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "UUID");
    expect_check_finds(p, -EUCLEAN);
}

/* Read-only-compatible features: a reader that does not know them may read
 * the layer but must not write it. */
static void test_unknown_rocompat(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "rocompat.vdk");
    make_std(e, p, VD_DIGEST_NONE, 1);
    struct img im;
    img_load(&im, p);
    img_hdr_set64(&im, VDF_H_ROCOMPAT, 1ull << 40);
    img_hdr_set64(&im, VDF_H_COMPAT, 0xffull);     /* compatible: ignored */
    img_save_as(&im, p);
    img_free(&im);
    std_expect_data(e, p, 1);
    struct vd_open_opts o = { .flags = VD_OPEN_RDWR | VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    assert_rc(vd_chain_open(e->ctx, p, &o, &c), -EROFS);
    expect_msg("vd_chain_open", p, "read-only");
}

/* A block size that still gives a consistent geometry (4 KiB instead of
 * 64 KiB: same entry size, same number of L1 pages) reinterprets the
 * index.  Nonsense, but nothing to crash on. */
static void test_block_size_reinterpreted(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "reinterp.vdk");
    make_std(e, p, VD_DIGEST_NONE, 2);
    struct img im;
    img_load(&im, p);
    img_hdr_set32(&im, VDF_H_BLOCK_SHIFT, 12);
    img_save_as(&im, p);
    img_free(&im);
    struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
    struct vd_chain *c = NULL;
    int rc = vd_chain_open(e->ctx, p, &o, &c);
    if (rc == 0) {
        vd_chain_close(c);
        expect_survives_reading(e, p);
    } else {
        expect_msg("vd_chain_open", p, NULL);
    }
    struct vd_check_result res;
    rc = vd_layer_check(p, VD_CHECK_VERIFY, &res, NULL, NULL);
    assert_true(rc == 0 || rc == -EUCLEAN);
}

/* The largest disk the format allows, with a consistent geometry and an
 * index that is all beyond the end of the file: a valid, empty disk.  Open,
 * info, status of the whole disk and check must all finish quickly. */
static void test_largest_disk(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "huge.vdk");
    make_layer(p, VD_MAX_SIZE, 4096, VD_DIGEST_SHA256, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, p, VD_OPEN_BUFFERED);
    uint8_t buf[8192];
    assert_rc(vd_read(c, buf, VD_MAX_SIZE - sizeof(buf), sizeof(buf)), 0);
    check_zero(buf, sizeof(buf), VD_MAX_SIZE - sizeof(buf));
    struct vd_extent ext[4];
    int n = vd_block_status(c, 0, VD_MAX_SIZE, ext, 4);
    assert_int_equal(n, 1);
    assert_int_equal(ext[0].type, VD_EXTENT_HOLE);
    assert_true(ext[0].length == VD_MAX_SIZE);
    close_chain(c);
    assert_true(layer_info(p).allocated == 0);
    struct vd_check_result res;
    assert_rc(vd_layer_check(p, VD_CHECK_VERIFY, &res, NULL, NULL), 0);
    assert_int_equal(res.corruptions, 0);
}

/* ------------------------------------------------------------------ */
/* The L1 table                                                        */

enum { L1_PAST_EOF, L1_FAR, L1_TOP, L1_HDR_MID, L1_HDR1, L1_L1, L1_MISALIGNED,
       L1_ON_DATA, L1_SAME_AS_0, L1_SWAPPED };

static void test_l1_entries(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_NONE, 2);
    struct img orig;
    img_load(&orig, good);
    const struct { int kind; const char *what; } cases[] = {
        { L1_PAST_EOF, "outside the file" },
        { L1_FAR, "outside the file" },
        { L1_TOP, "outside the file" },
        { L1_HDR_MID, "outside the file" },
        { L1_HDR1, "outside the file" },
        { L1_L1, "outside the file" },
        { L1_MISALIGNED, "outside the file" },
        { L1_ON_DATA, "L2 page" },
        { L1_SAME_AS_0, "L2 page" },     /* listed twice: a loop in the index */
        { L1_SWAPPED, "L2 page" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct img im = img_dup(&orig);
        uint64_t eof = (orig.len + VDF_PAGE - 1) & ~(uint64_t)(VDF_PAGE - 1);
        uint64_t pg0 = img_l1_get(&im, 0), pg1 = img_l1_get(&im, 1);
        switch (cases[i].kind) {
        case L1_PAST_EOF: img_l1_set(&im, 1, eof); break;
        case L1_FAR: img_l1_set(&im, 1, eof + (1ull << 40)); break;
        case L1_TOP: img_l1_set(&im, 1, UINT64_MAX & ~(uint64_t)(VDF_PAGE - 1)); break;
        case L1_HDR_MID: img_l1_set(&im, 2, VDF_PAGE / 2); break;   /* 0 means "none" */
        case L1_HDR1: img_l1_set(&im, 1, VDF_PAGE); break;
        case L1_L1: img_l1_set(&im, 1, VDF_L1_OFF); break;
        case L1_MISALIGNED: img_l1_set(&im, 1, pg1 + 512); break;
        case L1_ON_DATA: img_l1_set(&im, 1, img_data_off(&im, BLK_A)); break;
        case L1_SAME_AS_0: img_l1_set(&im, 1, pg0); break;
        case L1_SWAPPED: img_l1_set(&im, 0, pg1); img_l1_set(&im, 1, pg0); break;
        }
        char name[64];
        snprintf(name, sizeof(name), "l1-%zu.vdk", i);
        const char *p = tpath(e, name);
        img_save_as(&im, p);
        img_free(&im);
        print_message("L1 case %zu\n", i);
        expect_refused(e, p, -EUCLEAN, cases[i].what);
        expect_check_finds(p, 0);
        unlink(p);
    }
    img_free(&orig);
}

/* An L1 page whose two copies are both damaged. */
static void test_l1_both_copies_corrupt(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "l1bad.vdk");
    make_std(e, p, VD_DIGEST_NONE, 2);
    struct img im;
    img_load(&im, p);
    im.b[VDF_L1_OFF + 100] ^= 0x40;
    if (!img_pair_valid_slots(&im, VDF_L1_OFF, VDF_L1_MAGIC, 0))
        memset(im.b + VDF_L1_OFF + VDF_PAGE, 0x5A, VDF_PAGE);
    im.b[VDF_L1_OFF + VDF_PAGE + 200] ^= 0x40;
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "L1");
    expect_check_finds(p, 0);
}

/* ------------------------------------------------------------------ */
/* L2 pages                                                            */

static void test_l2_wrong_index(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "l2idx.vdk");
    make_std(e, p, VD_DIGEST_NONE, 2);
    struct img im;
    img_load(&im, p);
    uint64_t pair = img_l1_get(&im, 1);
    assert_int_equal(img_pair_valid_slots(&im, pair, VDF_L2_MAGIC, 1), 2);
    for (unsigned s = 0; s < 2; s++) {
        uint8_t *pg = im.b + pair + s * VDF_PAGE;
        vdf_put64(pg + VDF_P_INDEX, 2);
        img_page_seal(pg);
    }
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "L2 page 1");
    expect_check_finds(p, 0);
}

static void test_l2_both_copies_corrupt(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "l2bad.vdk");
    make_std(e, p, VD_DIGEST_NONE, 2);
    struct img im;
    img_load(&im, p);
    uint64_t pair = img_l1_get(&im, 0);
    assert_int_equal(img_pair_valid_slots(&im, pair, VDF_L2_MAGIC, 0), 2);
    im.b[pair + 1234] ^= 0x08;                       /* bit rot in an entry */
    vdf_put32(im.b + pair + VDF_PAGE + VDF_P_MAGIC, VDF_L1_MAGIC);   /* wrong kind */
    img_save_as(&im, p);
    img_free(&im);
    expect_refused(e, p, -EUCLEAN, "both copies");
    expect_check_finds(p, 0);
}

/* The usual state of a layer written once: each L2 pair holds one version,
 * the other slot is zeroes.  By the flush order (docs/FORMAT.md) an L2 pair
 * that an L1 entry names always has a durable valid copy, so a pair with no
 * valid copy is corrupt even when one of its slots is empty: reading it as
 * an empty page would silently drop the data it indexed. */
static void test_l2_single_copy_corrupt(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good1.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img orig;
    img_load(&orig, good);
    uint64_t pair0 = img_l1_get(&orig, 0);
    assert_int_equal(img_pair_valid_slots(&orig, pair0, VDF_L2_MAGIC, 0), 1);
    char accepted[512] = "";
    for (int kind = 0; kind < 4; kind++) {
        struct img im = img_dup(&orig);
        const char *why = "";
        if (kind == 0) {
            why = "bit flip in the only copy";
            im.b[img_l2_page_at(&im, 0) + 777] ^= 0x04;
        } else if (kind == 1) {
            why = "wrong page index in the only copy";
            uint8_t *pg = im.b + img_l2_page_at(&im, 1);
            vdf_put64(pg + VDF_P_INDEX, 0);
            img_page_seal(pg);
        } else if (kind == 2) {
            why = "two L1 entries naming one L2 pair";
            img_l1_set(&im, 1, pair0);
        } else {
            why = "L1 entry naming the last page of the file";
            size_t at = im.len & ~(size_t)(VDF_PAGE - 1);
            img_resize(&im, at + VDF_PAGE);
            memset(im.b + at, 0xA5, VDF_PAGE);
            img_l1_set(&im, 1, at);
        }
        const char *p = tpath(e, "l2one.vdk");
        img_save_as(&im, p);
        img_free(&im);
        if (!open_refuses(e, p)) {
            note_case(accepted, sizeof(accepted), why);
            unlink(p);
            continue;
        }
        expect_refused(e, p, -EUCLEAN, "L2 page");
        expect_check_finds(p, 0);
        unlink(p);
    }
    img_free(&orig);
    if (accepted[0])
        fail_msg("L2 pairs without a valid copy read as empty pages: %s", accepted);
}

/* Entries of an L2 page (the page itself stays valid: CRC recomputed). */
enum { E_PAST_EOF, E_FAR, E_TOP, E_MISALIGNED, E_IN_HEADER, E_IN_L1, E_NO_SLOT,
       E_STATE3, E_STATE3_LAST, E_TAIL_PAST_EOF, E_BEYOND_DISK };

static void test_l2_entries(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img orig;
    img_load(&orig, good);
    const struct { int kind; const char *what; } cases[] = {
        { E_PAST_EOF, "outside the file" },
        { E_FAR, "block 0" },
        { E_TOP, "block 0" },
        { E_MISALIGNED, "invalid data offset" },
        { E_IN_HEADER, "invalid data offset" },
        { E_IN_L1, "invalid data offset" },
        { E_NO_SLOT, "outside the file" },
        { E_STATE3, "sub-block state" },
        { E_STATE3_LAST, "sub-block state" },
        { E_TAIL_PAST_EOF, "outside the file" },
        { E_BEYOND_DISK, "beyond the end of the disk" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct img im = img_dup(&orig);
        struct img_geometry g = img_geo(&im);
        uint64_t eof = (im.len + VDF_PAGE - 1) & ~(uint64_t)(VDF_PAGE - 1);
        size_t at;
        uint8_t *en = img_l2_entry(&im, BLK_A, &at);
        switch (cases[i].kind) {
        case E_PAST_EOF: vdf_put64(en + VDF_E_OFFSET, eof + 1 * MiB); break;
        case E_FAR: vdf_put64(en + VDF_E_OFFSET, 1ull << 62); break;
        case E_TOP:
            vdf_put64(en + VDF_E_OFFSET, UINT64_MAX & ~(uint64_t)(VDF_PAGE - 1));
            break;
        case E_MISALIGNED:
            vdf_put64(en + VDF_E_OFFSET, vdf_le64(en + VDF_E_OFFSET) + 512);
            break;
        case E_IN_HEADER: vdf_put64(en + VDF_E_OFFSET, VDF_PAGE); break;
        case E_IN_L1: vdf_put64(en + VDF_E_OFFSET, VDF_L1_OFF); break;
        case E_NO_SLOT: vdf_put64(en + VDF_E_OFFSET, 0); break;
        case E_STATE3: img_set_sub_state(en, 5, VDF_SUB_INVALID); break;
        case E_STATE3_LAST: img_set_sub_state(en, g.subs - 1, VDF_SUB_INVALID); break;
        case E_TAIL_PAST_EOF:
            /* A slot whose first sub-block is the file's last page, with
             * every sub-block marked present. */
            vdf_put64(en + VDF_E_OFFSET, eof - VDF_PAGE);
            for (unsigned s = 0; s < g.subs; s++)
                img_set_sub_state(en, s, VDF_SUB_PRESENT);
            break;
        case E_BEYOND_DISK: {
            /* Page 2 covers blocks 508..761; the disk ends at 511. */
            uint64_t blk = g.nblocks;
            assert_true(blk / g.epp == g.n_l2 - 1);
            size_t at2;
            uint8_t *last = img_l2_entry(&im, BLK_C, &at2);
            uint8_t *beyond = last + (blk - BLK_C) * g.esize;
            memcpy(beyond, last, g.esize);
            img_page_seal(im.b + at2);
            break;
        }
        }
        img_page_seal(im.b + at);
        char name[64];
        snprintf(name, sizeof(name), "l2e-%zu.vdk", i);
        const char *p = tpath(e, name);
        img_save_as(&im, p);
        img_free(&im);
        print_message("L2 entry case %zu\n", i);
        expect_refused(e, p, -EUCLEAN, cases[i].what);
        expect_check_finds(p, 0);
        unlink(p);
    }
    img_free(&orig);
}

/* Two users of one piece of file space: the loader cannot see it (each
 * offset on its own is valid), so the file opens; reading it must be safe
 * and check must report the overlap. */
static void test_shared_space(void **state)
{
    struct tenv *e = *state;
    const char *good = tpath(e, "good.vdk");
    make_std(e, good, VD_DIGEST_NONE, 1);
    struct img orig;
    img_load(&orig, good);
    for (int kind = 0; kind < 3; kind++) {
        struct img im = img_dup(&orig);
        struct img_geometry g = img_geo(&im);
        size_t at;
        uint8_t *a = img_l2_entry(&im, BLK_A, &at);
        uint8_t *b = a + g.esize;      /* block 1, same page */
        memcpy(b, a, g.esize);
        if (kind == 1) {
            /* block 1's slot is L2 page 1's pair */
            vdf_put64(b + VDF_E_OFFSET, img_l1_get(&im, 1));
        } else if (kind == 2) {
            /* block 1's slot starts inside block C's */
            vdf_put64(b + VDF_E_OFFSET, img_data_off(&im, BLK_C) + 4 * VDF_PAGE);
        }
        img_page_seal(im.b + at);
        const char *p = tpath(e, "shared.vdk");
        img_save_as(&im, p);
        img_free(&im);
        expect_survives_reading(e, p);
        struct vd_check_result res;
        struct msgs ms = { 0 };
        assert_rc(vd_layer_check(p, 0, &res, msgs_report, &ms), 0);
        if (res.corruptions == 0)
            fail_msg("shared space case %d: check found no corruption", kind);
        bool overlap = false;
        for (unsigned k = 0; k < ms.n && k < MSGS_MAX; k++)
            overlap |= strstr(ms.m[k], "overlaps") != NULL;
        assert_true(overlap);
        msgs_free(&ms);
        unlink(p);
    }
    img_free(&orig);
}

/* ------------------------------------------------------------------ */
/* Chains                                                              */

static void test_parent_is_self(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "self.vdk");
    vd_uuid u;
    make_layer(p, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, &u);
    struct img im;
    img_load(&im, p);
    img_hdr_set_parent(&im, &u, "self.vdk");
    img_save_as(&im, p);
    img_free(&im);
    expect_chain_refused(e, p, -ELOOP, "loop");
    /* The file alone is readable; that it names itself as its parent is
     * a structural error check can see without opening anything else. */
    struct vd_layer_info info = layer_info(p);
    assert_memory_equal(info.parent_uuid.b, u.b, 16);
    expect_check_finds(p, 0);
}

static void test_parent_loop(void **state)
{
    struct tenv *e = *state;
    const char *a = tpath(e, "a.vdk");
    const char *b = tpath(e, "b.vdk");
    const char *c = tpath(e, "c.vdk");
    vd_uuid uc;
    make_layer(a, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, NULL);
    make_layer(b, 0, 0, VD_DIGEST_NONE, a, NULL);
    make_layer(c, 0, 0, VD_DIGEST_NONE, b, &uc);
    /* a (the base) now names c as its parent: c -> b -> a -> c. */
    struct img im;
    img_load(&im, a);
    img_hdr_set_parent(&im, &uc, "c.vdk");
    img_save_as(&im, a);
    img_free(&im);
    expect_chain_refused(e, c, -ELOOP, "loop");
    expect_chain_refused(e, b, -ELOOP, "loop");
    expect_chain_refused(e, a, -ELOOP, "loop");
}

/* The hint names the child itself, but the parent UUID is another one:
 * the UUID check must refuse the file found. */
static void test_hint_names_wrong_file(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "wrong.vdk");
    const char *other = tpath(e, "other.vdk");
    vd_uuid u;
    make_layer(other, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, NULL);
    make_layer(p, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, &u);
    u.b[0] ^= 0xff;
    struct img im;
    img_load(&im, p);
    img_hdr_set_parent(&im, &u, "wrong.vdk");
    img_save_as(&im, p);
    img_free(&im);
    expect_chain_refused(e, p, -ENOENT, "not found");
    /* ... and names of things that are not layers. */
    const char *hints[] = { ".", "..", "/", "/dev/zero", "/dev/null", "/proc/self/mem",
                            "other.vdk", "no-such-file.vdk",
                            "../../../../../../../../../../../../etc/passwd" };
    for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++) {
        img_load(&im, p);
        img_hdr_set_parent(&im, &u, hints[i]);
        img_save_as(&im, p);
        img_free(&im);
        struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
        struct vd_chain *c = NULL;
        int rc = vd_chain_open(e->ctx, p, &o, &c);
        if (rc == 0) {
            vd_chain_close(c);
            fail_msg("hint '%s': opened a chain with a parent of the wrong UUID", hints[i]);
        }
        expect_msg("vd_chain_open", p, NULL);
    }
}

/* A parent hint naming a FIFO: opening the chain must not wait forever for
 * a writer that never comes.  Runs in a child process with an alarm. */
static void test_hint_names_fifo(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "fifochild.vdk");
    const char *fifo = tpath(e, "fifo");
    vd_uuid u;
    make_layer(p, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, &u);
    u.b[0] ^= 0xff;
    assert_int_equal(mkfifo(fifo, 0600), 0);
    struct img im;
    img_load(&im, p);
    img_hdr_set_parent(&im, &u, "fifo");
    img_save_as(&im, p);
    img_free(&im);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        struct vd_ctx *ctx;
        if (vd_ctx_new(0, &ctx) < 0)
            _exit(2);
        struct vd_open_opts o = { .flags = VD_OPEN_BUFFERED };
        struct vd_chain *c = NULL;
        int rc = vd_chain_open(ctx, p, &o, &c);
        _exit(rc < 0 && vd_errmsg()[0] ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        fail_msg("vd_chain_open hangs when a parent hint names a FIFO");
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_parent_block_size_differs(void **state)
{
    struct tenv *e = *state;
    const char *base64 = tpath(e, "base64k.vdk");
    const char *base4 = tpath(e, "base4k.vdk");
    const char *child = tpath(e, "child.vdk");
    vd_uuid u4;
    make_layer(base64, STD_SIZE, STD_BS, VD_DIGEST_NONE, NULL, NULL);
    make_layer(base4, STD_SIZE, 4096, VD_DIGEST_NONE, NULL, &u4);
    assert_rc(vd_layer_freeze(base4), 0);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base64, NULL);
    struct vd_chain *c = open_chain(e->ctx, child, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 8192, 3);
    close_chain(c);
    /* The child now names the 4 KiB base as its parent. */
    struct img im;
    img_load(&im, child);
    img_hdr_set_parent(&im, &u4, "base4k.vdk");
    img_save_as(&im, child);
    img_free(&im);
    expect_chain_refused(e, child, -EUCLEAN, "block size");
    /* The child on its own is a sound layer file: check (one layer, not
     * its parents) has nothing to report. */
    struct vd_check_result res;
    assert_rc(vd_layer_check(child, 0, &res, NULL, NULL), 0);
    assert_int_equal(res.corruptions, 0);
}

/* ------------------------------------------------------------------ */
/* Digests                                                             */

static void test_wrong_digest(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "digest.vdk");
    make_std(e, p, VD_DIGEST_SHA256, 1);
    struct vd_check_result res;
    assert_rc(vd_layer_check(p, VD_CHECK_VERIFY, &res, NULL, NULL), 0);
    assert_int_equal(res.digest_mismatches, 0);
    assert_int_equal(res.corruptions, 0);

    struct img im;
    img_load(&im, p);
    uint64_t off = img_data_off(&im, BLK_B) + 4096 + 100;   /* BLK_B's data */
    img_free(&im);
    uint8_t byte;
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &byte, 1, (off_t)off), 1);
    byte ^= 0x01;
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)off), 1);
    close(fd);

    struct msgs ms = { 0 };
    assert_rc(vd_layer_check(p, VD_CHECK_VERIFY, &res, msgs_report, &ms), 0);
    assert_int_equal(res.digest_mismatches, 1);
    assert_int_equal(res.corruptions, 0);
    bool named = false;
    char want[64];
    snprintf(want, sizeof(want), "block %u ", BLK_B);
    for (unsigned k = 0; k < ms.n && k < MSGS_MAX; k++)
        named |= strstr(ms.m[k], want) != NULL;
    if (!named)
        fail_msg("check --verify did not name block %u", BLK_B);
    msgs_free(&ms);
    /* Without VERIFY, digests are not read. */
    assert_rc(vd_layer_check(p, 0, &res, NULL, NULL), 0);
    assert_int_equal(res.digest_mismatches, 0);
    /* A damaged digest field (not the data) is found the same way. */
    img_load(&im, p);
    size_t at;
    uint8_t *en = img_l2_entry(&im, BLK_C, &at);
    en[VDF_E_BITMAP + vdf_bitmap_bytes(img_geo(&im).shift) + 5] ^= 0x80;
    img_page_seal(im.b + at);
    img_save_as(&im, p);
    img_free(&im);
    assert_rc(vd_layer_check(p, VD_CHECK_VERIFY, &res, NULL, NULL), 0);
    assert_int_equal(res.digest_mismatches, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_file, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_header, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_metadata, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_anywhere, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_crc_both_headers, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_one_header_corrupt, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_header_fields, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_null_uuid, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_rocompat, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_block_size_reinterpreted, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_largest_disk, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l1_entries, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l1_both_copies_corrupt, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l2_wrong_index, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l2_both_copies_corrupt, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l2_single_copy_corrupt, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_l2_entries, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_shared_space, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_parent_is_self, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_parent_loop, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_hint_names_wrong_file, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_hint_names_fifo, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_parent_block_size_differs, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_digest, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
