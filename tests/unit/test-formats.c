/*
 * test-formats.c - hostile and broken qcow2 and VMDK images against the
 * readers of formats/: every one must give a clear error (a negative errno
 * and a message naming the file), in bounded time and memory, and never a
 * crash or an out-of-bounds access (the ASan build runs this too).
 *
 * The images start as good ones made by our own writers (small clusters
 * and grains keep them small), then single fields are broken by hand at
 * the offsets the specifications give.  That the good ones are good is
 * checked by reading them back here, and by qemu-img in
 * tests/integration/test-formats.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "helpers.h"
#include "formats.h"

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

#define DISK     (1u << 20)      /* virtual size of the test images */
#define CLUSTER  4096u

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* n-byte integers, big-endian (qcow2) or little-endian (VMDK). */
static unsigned shift_of(unsigned i, unsigned n, bool be)
{
    return 8 * (be ? n - 1 - i : i);
}

static void put_int(uint8_t *p, uint64_t v, unsigned n, bool be)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> shift_of(i, n, be));
}

static uint64_t get_int(const uint8_t *p, unsigned n, bool be)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << shift_of(i, n, be);
    return v;
}

/* Patches, or reads, an n-byte field of a file. */
static void patch_int(const char *path, uint64_t off, uint64_t v, unsigned n, bool be)
{
    uint8_t b[8];

    put_int(b, v, n, be);
    patch_file(path, off, b, n);
}

static uint64_t file_int(const char *path, uint64_t off, unsigned n, bool be)
{
    uint8_t b[8];
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, n, (off_t)off), n);
    close(fd);
    return get_int(b, n, be);
}

#define put_le(p, v, n)          put_int(p, v, n, false)
#define patch_be(path, o, v, n)  patch_int(path, o, v, n, true)
#define patch_le(path, o, v, n)  patch_int(path, o, v, n, false)
#define file_be(path, o, n)      file_int(path, o, n, true)
#define file_le(path, o, n)      file_int(path, o, n, false)

static uint64_t file_len(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static bool all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

static void truncate_to(const char *path, uint64_t len)
{
    size_t n;
    uint8_t *f = read_whole_file(path, &n);

    assert_true(len <= n);
    write_file(path, f, (size_t)len);
    free(f);
}

static void append(const char *path, const void *data, size_t len, uint64_t *at)
{
    *at = file_len(path);
    patch_file(path, *at, data, len);
}

/* Makes a small image with our writer: data at 0 (8 KiB), at 256 KiB
 * (4 KiB) and in the last 4 KiB. */
static const char *make_image(const struct tenv *e, const char *name, const char *fmt,
                              const char *subformat)
{
    struct fmt_create_opts co = {
        .size = DISK, .cluster_size = CLUSTER, .subformat = subformat,
    };
    const char *p = tpath(e, name);
    struct fmt_image *img;
    uint8_t buf[8192];

    fill_pattern(buf, sizeof(buf), 0, 1);
    assert_int_equal(fmt_create(p, fmt, &co, &img), 0);
    assert_int_equal(fmt_write(img, buf, 0, 8192), 0);
    assert_int_equal(fmt_write(img, buf, 256 * KiB, 4096), 0);
    assert_int_equal(fmt_write(img, buf, DISK - 4096, 4096), 0);
    assert_int_equal(fmt_close(img), 0);
    return p;
}

/* Opens and reads the whole image as a conversion does.  Returns 0 or the
 * first error; on error the message must name the file.  Time is bounded
 * (the test fails past a few seconds: no input here needs more). */
static int read_image(const char *path, const char *fmt)
{
    struct fmt_open_opts oo = { .format = fmt };
    struct fmt_image *img;
    uint64_t off = 0, size;
    time_t t0 = time(NULL);
    static uint8_t buf[1u << 20];
    int ret;

    ret = fmt_open(path, &oo, &img);
    if (ret == 0) {
        size = fmt_size(img);
        while (off < size) {
            enum fmt_kind kind;
            uint64_t n;

            ret = fmt_status(img, off, size - off, true, &n, &kind);
            if (ret < 0)
                break;
            n = MIN(n, (uint64_t)sizeof(buf));
            ret = fmt_read(img, buf, off, (size_t)n);
            if (ret < 0)
                break;
            if (kind != FMT_DATA && !all_zero(buf, (size_t)n))
                fail_msg("%s: a run reported as zeroes reads as data at %llu", path,
                         (unsigned long long)off);
            off += n;
            if (time(NULL) - t0 > 10)
                fail_msg("%s: reading takes too long", path);
        }
        fmt_close(img);
    }
    if (ret < 0) {
        const char *m = fmt_errmsg();

        if (!m || strncmp(m, path, strlen(path)) != 0)
            fail_msg("error %d on %s without a message naming it: '%s'", ret, path,
                     m ? m : "(null)");
    }
    return ret;
}

/* Asserts that reading path as fmt fails with one of two errnos. */
#define expect_fail(path, fmt, e1, e2) \
    do { \
        int r_ = read_image(path, fmt); \
        if (r_ != (e1) && r_ != (e2)) \
            fail_msg("%s: expected %d or %d, got %d (%s)", path, e1, e2, r_, \
                     fmt_errmsg()); \
    } while (0)

/* Reads copies of the image at path cut every step bytes: an error or (a
 * cut in unused space) a clean read, never a crash; cuts shorter than
 * header bytes must fail. */
static void cut_everywhere(const struct tenv *e, const char *path, const char *fmt,
                           uint64_t step, uint64_t header)
{
    const char *q = tpath(e, "cut");
    size_t len;
    uint8_t *f = read_whole_file(path, &len);

    for (uint64_t cut = 0; cut < len; cut += step) {
        write_file(q, f, (size_t)cut);
        if (cut < header)
            expect_fail(q, fmt, -EUCLEAN, -EINVAL);
        else
            (void)read_image(q, fmt);
    }
    free(f);
}

/* ------------------------------------------------------------------ */
/* qcow2 (big-endian; header fields at the offsets of the spec)        */

#define Q_SIZE        24
#define Q_CLUSTER_BITS 20
#define Q_BACKING_OFF 8
#define Q_BACKING_LEN 16
#define Q_CRYPT       32
#define Q_L1_SIZE     36
#define Q_L1_OFF      40
#define Q_INCOMPAT    72
#define Q_HDR_LEN     100

static uint64_t q_l1_entry_off(const char *p, unsigned i)
{
    return file_be(p, Q_L1_OFF, 8) + 8ull * i;
}

/* The file offset of the L2 entry of the cluster at virtual offset voff. */
static uint64_t q_l2_entry_off(const char *p, uint64_t voff)
{
    uint64_t per_l2 = CLUSTER / 8;
    uint64_t cl = voff / CLUSTER;
    uint64_t l2 = file_be(p, q_l1_entry_off(p, (unsigned)(cl / per_l2)), 8) &
                  0x00fffffffffffe00ull;

    assert_true(l2 != 0);
    return l2 + 8 * (cl % per_l2);
}

static void test_qcow2_good(void **state)
{
    const char *p = make_image(*state, "good.qcow2", "qcow2", NULL);

    assert_int_equal(read_image(p, "qcow2"), 0);
    assert_int_equal(read_image(p, NULL), 0);      /* probed as qcow2 */
}

static void test_qcow2_truncated(void **state)
{
    const char *p = make_image(*state, "t.qcow2", "qcow2", NULL);

    cut_everywhere(*state, p, "qcow2", 509, 104);   /* a v3 header is 104 bytes */
    truncate_to(p, CLUSTER);                       /* the header only */
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);
}

static void test_qcow2_header_fields(void **state)
{
    struct {
        uint64_t off, val;
        unsigned n;
        int e1, e2;
    } cases[] = {
        { 4, 1, 4, -ENOTSUP, -EUCLEAN },                   /* version 1 */
        { 4, 4, 4, -ENOTSUP, -EUCLEAN },                   /* version 4 */
        { Q_CLUSTER_BITS, 8, 4, -EUCLEAN, -ENOTSUP },      /* 256-byte clusters */
        { Q_CLUSTER_BITS, 40, 4, -EUCLEAN, -ENOTSUP },     /* 1 TiB clusters */
        { Q_SIZE, 1ull << 62, 8, -EFBIG, -EUCLEAN },       /* 4 EiB */
        { Q_SIZE, 0, 8, -EUCLEAN, -EINVAL },
        { Q_CRYPT, 1, 4, -ENOTSUP, -ENOTSUP },             /* AES */
        { Q_CRYPT, 99, 4, -ENOTSUP, -EUCLEAN },
        { Q_L1_SIZE, 0, 4, -EUCLEAN, -EUCLEAN },           /* too small for the size */
        { Q_L1_SIZE, 0x7fffffff, 4, -EUCLEAN, -EFBIG },    /* 16 GiB of L1 */
        { Q_L1_OFF, 1ull << 60, 8, -EUCLEAN, -EUCLEAN },   /* past the end */
        { Q_L1_OFF, 100, 8, -EUCLEAN, -EUCLEAN },          /* not aligned */
        { Q_L1_OFF, 0, 8, -EUCLEAN, -EUCLEAN },            /* over the header */
        { Q_INCOMPAT, 1u << 2, 8, -ENOTSUP, -ENOTSUP },    /* external data file */
        { Q_INCOMPAT, 1ull << 40, 8, -ENOTSUP, -ENOTSUP }, /* unknown feature */
        { Q_HDR_LEN, 50, 4, -EUCLEAN, -EUCLEAN },          /* shorter than v3's */
        { Q_HDR_LEN, 1u << 20, 4, -EUCLEAN, -EUCLEAN },    /* longer than a cluster */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *p = make_image(*state, "h.qcow2", "qcow2", NULL);

        patch_be(p, cases[i].off, cases[i].val, cases[i].n);
        expect_fail(p, "qcow2", cases[i].e1, cases[i].e2);
    }
    /* A backing file name longer than the format allows. */
    {
        const char *p = make_image(*state, "b.qcow2", "qcow2", NULL);

        patch_be(p, Q_BACKING_OFF, 512, 8);
        patch_be(p, Q_BACKING_LEN, 5000, 4);
        expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);
    }
}

static void test_qcow2_bad_tables(void **state)
{
    const char *p;
    uint64_t e;

    /* L2 table past the end of the file. */
    p = make_image(*state, "l1.qcow2", "qcow2", NULL);
    patch_be(p, q_l1_entry_off(p, 0), (1ull << 63) | (1ull << 40), 8);
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);

    /* L2 table on the header cluster: the "loop" back into metadata. */
    p = make_image(*state, "l1b.qcow2", "qcow2", NULL);
    patch_be(p, q_l1_entry_off(p, 0), (1ull << 63) | CLUSTER * 0, 8);
    (void)read_image(p, "qcow2");   /* offset 0 is "unallocated": reads zeroes */
    /* The L1 table read as an L2 table: its entries then name the L2
     * tables as data clusters, inside the file; bounded either way. */
    patch_be(p, q_l1_entry_off(p, 0), (1ull << 63) | file_be(p, Q_L1_OFF, 8), 8);
    expect_fail(p, "qcow2", -EUCLEAN, 0);

    /* L2 table offset not aligned to a cluster. */
    p = make_image(*state, "l1c.qcow2", "qcow2", NULL);
    e = file_be(p, q_l1_entry_off(p, 0), 8);
    patch_be(p, q_l1_entry_off(p, 0), e + 512, 8);
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);

    /* Reserved bits in an L1 entry. */
    p = make_image(*state, "l1d.qcow2", "qcow2", NULL);
    e = file_be(p, q_l1_entry_off(p, 0), 8);
    patch_be(p, q_l1_entry_off(p, 0), e | 0x3, 8);
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);

    /* Data cluster past the end of the file. */
    p = make_image(*state, "l2.qcow2", "qcow2", NULL);
    patch_be(p, q_l2_entry_off(p, 0), (1ull << 63) | (1ull << 44), 8);
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);

    /* Reserved bits in an L2 entry. */
    p = make_image(*state, "l2b.qcow2", "qcow2", NULL);
    e = file_be(p, q_l2_entry_off(p, 0), 8);
    patch_be(p, q_l2_entry_off(p, 0), e | 0x1e, 8);
    expect_fail(p, "qcow2", -EUCLEAN, -EUCLEAN);

    /* Two L2 entries naming the same cluster, and a data cluster on the
     * L1 table: reads are still bounded and in the file, so they may work
     * (qemu-img check calls these corruption, a reader need not). */
    p = make_image(*state, "l2c.qcow2", "qcow2", NULL);
    e = file_be(p, q_l2_entry_off(p, 0), 8);
    patch_be(p, q_l2_entry_off(p, 256 * KiB), e, 8);
    patch_be(p, q_l2_entry_off(p, 4096), (1ull << 63) | file_be(p, Q_L1_OFF, 8), 8);
    (void)read_image(p, "qcow2");
}

/* A compressed cluster at virtual offset 0 whose stream is data (raw
 * deflate, as qcow2 stores it), appended to the file. */
static const char *q_compressed(const struct tenv *e, const char *name,
                                const void *stream, size_t len)
{
    const char *p = make_image(e, name, "qcow2", NULL);
    unsigned x = 62 - (12 - 8);               /* cluster_bits 12 */
    uint64_t at, nsect;

    append(p, stream, len, &at);
    nsect = (at % 512 + len + 511) / 512 - 1;  /* sectors past the first */
    assert_true(nsect < 16);
    patch_be(p, q_l2_entry_off(p, 0), (1ull << 62) | (nsect << x) | at, 8);
    return p;
}

static size_t deflate_raw(const void *in, size_t in_len, void *out, size_t out_len)
{
    z_stream z = { 0 };

    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    deflateEnd(&z);
    return out_len - z.avail_out;
}

static void test_qcow2_compressed(void **state)
{
    static uint8_t plain[8u << 20], packed[16384];
    uint8_t garbage[3000];
    size_t n;

    /* A good one reads back. */
    fill_pattern(plain, CLUSTER, 0, 9);
    memset(plain + 1000, 0, 2000);
    n = deflate_raw(plain, CLUSTER, packed, sizeof(packed));
    assert_int_equal(read_image(q_compressed(*state, "c.qcow2", packed, n), "qcow2"), 0);

    /* Garbage. */
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (uint8_t)(i * 131 + 7);
    expect_fail(q_compressed(*state, "g.qcow2", garbage, sizeof(garbage)), "qcow2",
                -EUCLEAN, -EUCLEAN);

    /* Too short: inflates to half a cluster. */
    n = deflate_raw(plain, CLUSTER / 2, packed, sizeof(packed));
    expect_fail(q_compressed(*state, "s.qcow2", packed, n), "qcow2", -EUCLEAN, -EUCLEAN);

    /* A bomb: 8 MiB of zeroes in a few KiB, for a 4 KiB cluster.  Either
     * refused or cut at the cluster; what matters is that nothing grows. */
    memset(plain, 0, sizeof(plain));
    n = deflate_raw(plain, sizeof(plain), packed, sizeof(packed));
    (void)read_image(q_compressed(*state, "bomb.qcow2", packed, n), "qcow2");
}

static void test_qcow2_backing_named(void **state)
{
    struct fmt_create_opts co = {
        .size = DISK, .cluster_size = CLUSTER,
        .backing_file = "/etc/passwd", .backing_format = "raw",
    };
    struct fmt_open_opts oo = { .format = NULL };
    const char *p = tpath(*state, "over.qcow2");
    struct fmt_image *img;
    enum fmt_kind kind;
    uint64_t n;
    uint8_t buf[CLUSTER];

    assert_int_equal(fmt_create(p, "qcow2", &co, &img), 0);
    /* Over a backing file, writes cover whole clusters. */
    assert_int_equal(fmt_write_align(img), CLUSTER);
    assert_int_equal(fmt_write(img, buf, 0, 512), -EINVAL);
    fill_pattern(buf, sizeof(buf), 0, 3);
    assert_int_equal(fmt_write(img, buf, CLUSTER, CLUSTER), 0);
    assert_int_equal(fmt_write_zeroes(img, 2 * CLUSTER, CLUSTER), 0);
    assert_int_equal(fmt_close(img), 0);

    /* It names the file and never opens it: unallocated stays unallocated
     * (not data from /etc/passwd), zero clusters are zero. */
    assert_int_equal(fmt_open(p, &oo, &img), 0);
    assert_string_equal(fmt_format(img), "qcow2");
    assert_string_equal(fmt_backing_name(img), "/etc/passwd");
    assert_int_equal(fmt_status(img, 0, DISK, true, &n, &kind), 0);
    assert_int_equal(kind, FMT_UNALLOC);
    assert_int_equal(n, CLUSTER);
    assert_int_equal(fmt_status(img, CLUSTER, DISK - CLUSTER, true, &n, &kind), 0);
    assert_int_equal(kind, FMT_DATA);
    assert_int_equal(fmt_status(img, 2 * CLUSTER, DISK - 2 * CLUSTER, true, &n, &kind), 0);
    assert_int_equal(kind, FMT_ZERO);
    assert_int_equal(fmt_read(img, buf, 0, sizeof(buf)), 0);
    assert_true(all_zero(buf, sizeof(buf)));
    fmt_close(img);
}

/* ------------------------------------------------------------------ */
/* VMDK (little-endian sparse extent header)                           */

#define V_FLAGS      8
#define V_CAPACITY   12
#define V_GRAIN      20
#define V_DESC_OFF   28
#define V_DESC_SIZE  36
#define V_NUM_GTES   44
#define V_GD_OFF     56
#define V_COMPRESS   77

/* The file offset of the GT entry of grain index g (monolithicSparse). */
static uint64_t v_gte_off(const char *p, uint64_t g)
{
    uint64_t gd = file_le(p, V_GD_OFF, 8) * 512;
    uint64_t gt = file_le(p, gd + 4 * (g / 512), 4) * 512;

    assert_true(gt != 0);
    return gt + 4 * (g % 512);
}

static void test_vmdk_good(void **state)
{
    assert_int_equal(read_image(make_image(*state, "g.vmdk", "vmdk", NULL), NULL), 0);
    assert_int_equal(read_image(make_image(*state, "s.vmdk", "vmdk", "streamOptimized"),
                                "vmdk"), 0);
}

static void test_vmdk_truncated(void **state)
{
    const char *subs[] = { NULL, "streamOptimized" };

    for (unsigned s = 0; s < 2; s++) {
        const char *p = make_image(*state, "t.vmdk", "vmdk", subs[s]);

        cut_everywhere(*state, p, "vmdk", 397, 512);   /* the header's sector */
    }
}

static void test_vmdk_header_fields(void **state)
{
    struct {
        uint64_t off, val;
        unsigned n;
        int e1, e2;
    } cases[] = {
        { V_GRAIN, 0, 8, -EUCLEAN, -ENOTSUP },
        { V_GRAIN, 3, 8, -EUCLEAN, -ENOTSUP },           /* not a power of two */
        { V_GRAIN, 1ull << 40, 8, -EUCLEAN, -ENOTSUP },
        { V_NUM_GTES, 0, 4, -EUCLEAN, -ENOTSUP },
        { V_NUM_GTES, 100000, 4, -EUCLEAN, -ENOTSUP },
        { V_CAPACITY, 1ull << 60, 8, -EFBIG, -EUCLEAN },
        { V_CAPACITY, 0, 8, -EUCLEAN, -ENOTSUP },
        { V_GD_OFF, 1ull << 40, 8, -EUCLEAN, -EUCLEAN },  /* past the end */
        { V_DESC_OFF, 1ull << 40, 8, -EUCLEAN, -EUCLEAN },
        { V_DESC_SIZE, 1ull << 30, 8, -EUCLEAN, -EFBIG }, /* a 512 GiB descriptor */
        { 4, 99, 4, -ENOTSUP, -EUCLEAN },                 /* version 99 */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *p = make_image(*state, "h.vmdk", "vmdk", NULL);

        patch_le(p, cases[i].off, cases[i].val, cases[i].n);
        expect_fail(p, "vmdk", cases[i].e1, cases[i].e2);
    }
}

static void test_vmdk_bad_tables(void **state)
{
    const char *p;
    uint64_t gd;

    /* A grain table past the end of the file. */
    p = make_image(*state, "gd.vmdk", "vmdk", NULL);
    gd = file_le(p, V_GD_OFF, 8) * 512;
    patch_le(p, gd, 0x7fffffff, 4);
    expect_fail(p, "vmdk", -EUCLEAN, -EUCLEAN);

    /* A grain past the end of the file. */
    p = make_image(*state, "gt.vmdk", "vmdk", NULL);
    patch_le(p, v_gte_off(p, 0), 0x7ffffff0, 4);
    expect_fail(p, "vmdk", -EUCLEAN, -EUCLEAN);

    /* A grain on the header: inside the file, so it may read (garbage in,
     * garbage out), but bounded. */
    p = make_image(*state, "gh.vmdk", "vmdk", NULL);
    patch_le(p, v_gte_off(p, 0), 0, 4);
    patch_le(p, v_gte_off(p, 1), 2, 4);
    (void)read_image(p, "vmdk");
}

/* The file offset of the first grain of a streamOptimized image: its
 * marker (lba, size) then the zlib stream. */
static uint64_t v_stream_first_grain(const char *p)
{
    uint64_t len = file_len(p);
    uint64_t footer = len - 1024;   /* footer marker, footer, EOS marker */
    uint64_t gd = file_le(p, footer + V_GD_OFF, 8) * 512;
    uint64_t gt = file_le(p, gd, 4) * 512;

    assert_true(gt != 0);
    return file_le(p, gt, 4) * 512;
}

static void test_vmdk_stream(void **state)
{
    static uint8_t plain[8u << 20];
    uint8_t packed[16384];
    const char *p;
    uint64_t g;
    uLongf n;

    /* A marker naming another grain. */
    p = make_image(*state, "m.vmdk", "vmdk", "streamOptimized");
    g = v_stream_first_grain(p);
    assert_int_equal(file_le(p, g, 8), 0);
    patch_le(p, g, 64, 8);
    expect_fail(p, "vmdk", -EUCLEAN, -EUCLEAN);

    /* A size past the end of the file. */
    p = make_image(*state, "z.vmdk", "vmdk", "streamOptimized");
    g = v_stream_first_grain(p);
    patch_le(p, g + 8, 0x7fffffff, 4);
    expect_fail(p, "vmdk", -EUCLEAN, -EUCLEAN);

    /* A stream that inflates to a quarter grain, and a bomb: the grain at
     * 0 replaced by one appended at the end (the GT entry moved there). */
    for (int bomb = 0; bomb < 2; bomb++) {
        uint64_t at, gte;
        uint8_t marker[12];

        p = make_image(*state, "b.vmdk", "vmdk", "streamOptimized");
        n = sizeof(packed);
        assert_int_equal(compress2(packed, &n, plain, bomb ? sizeof(plain) : CLUSTER / 4,
                                   9), Z_OK);
        put_le(marker, 0, 8);
        put_le(marker + 8, n, 4);
        append(p, marker, sizeof(marker), &at);
        patch_file(p, at + sizeof(marker), packed, n);
        assert_true(at % 512 == 0);
        {
            uint64_t len = file_len(p) - sizeof(marker) - n;
            uint64_t footer = len - 1024;
            uint64_t gd = file_le(p, footer + V_GD_OFF, 8) * 512;

            gte = file_le(p, gd, 4) * 512;
        }
        patch_le(p, gte, at / 512, 4);
        /* The footer must stay last: copy it after the new grain. */
        {
            size_t flen;
            uint8_t *f = read_whole_file(p, &flen);
            uint64_t old_end = at;
            uint64_t pad = (at + sizeof(marker) + n + 511) / 512 * 512;

            patch_file(p, pad, f + old_end - 1536, 1536);
            free(f);
        }
        expect_fail(p, "vmdk", -EUCLEAN, bomb ? 0 : -EUCLEAN);
    }
}

static void test_vmdk_descriptor(void **state)
{
    const struct tenv *e = *state;
    const char *bad[] = {
        "RW 2048 FLAT \"/etc/passwd\" 0",
        "RW 2048 FLAT \"../x-flat.vmdk\" 0",
        "RW 2048 FLAT \"sub/x-flat.vmdk\" 0",
    };
    char text[1024];
    const char *p = tpath(e, "d.vmdk");
    static uint8_t zero[2048 * 512];

    write_file(tpath(e, "x-flat.vmdk"), zero, sizeof(zero));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
                 "createType=\"monolithicFlat\"\n\n# Extent description\n%s\n\n"
                 "# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n", bad[i]);
        write_file(p, text, strlen(text));
        /* Probed: refused.  (Named with -f vmdk, the user chose; not tried
         * here, /etc/passwd is not a disk.) */
        expect_fail(p, NULL, -EPERM, -EACCES);
    }
    /* A plain name in its own folder is fine when probed. */
    snprintf(text, sizeof(text),
             "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
             "createType=\"monolithicFlat\"\n\n# Extent description\n"
             "RW 2048 FLAT \"x-flat.vmdk\" 0\n");
    write_file(p, text, strlen(text));
    assert_int_equal(read_image(p, NULL), 0);
    /* An extent of a huge size over a small file. */
    snprintf(text, sizeof(text),
             "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
             "createType=\"monolithicFlat\"\n\n# Extent description\n"
             "RW 99999999999999999 FLAT \"x-flat.vmdk\" 0\n");
    write_file(p, text, strlen(text));
    expect_fail(p, NULL, -EUCLEAN, -EFBIG);
    /* Garbage after the header line. */
    snprintf(text, sizeof(text), "# Disk DescriptorFile\n\x01\x02\xff garbage \"\n");
    write_file(p, text, strlen(text));
    expect_fail(p, NULL, -EUCLEAN, -ENOTSUP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_good, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_truncated, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_header_fields, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_bad_tables, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_compressed, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_backing_named, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_good, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_truncated, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_header_fields, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_bad_tables, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_stream, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_descriptor, tenv_setup, tenv_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
