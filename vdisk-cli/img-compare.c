/*
 * img-compare.c - "vdisk img compare": do two images (of any formats) read
 * the same?
 *
 * As qemu-img compare: the images are compared over the larger size, the
 * part of the larger image past the end of the smaller one must read as
 * zeroes.  Exit status 0 identical, 1 different, 2 error (usage included).
 * Runs that read as zero in both images are skipped without reading.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMD "img compare"

enum {
    CMP_SAME = 0,
    CMP_DIFFERENT = 1,
    CMP_ERROR = 2,
};

#define CMP_BUF (1u << 20)

static void usage(FILE *f)
{
    fputs("Usage: vdisk img compare [-f FMT] [-F FMT] [-p] A B\n"
          "\n"
          "Compares the contents of the images A and B.  Images of different\n"
          "sizes are identical when the extra part of the larger reads as\n"
          "zeroes.\n"
          "\n"
          "  -f FMT          format of A: raw, vdk, qcow2, vmdk (default: probed)\n"
          "  -F FMT          format of B (default: probed)\n"
          "  -p, --progress  show progress on a terminal\n"
          "  -h, --help      show this help\n"
          "\n"
          "Exit status: 0 identical, 1 different, 2 error.\n", f);
}

/* Offset of the first byte where a and b differ, or len if none. */
static size_t first_difference(const unsigned char *a, const unsigned char *b,
                               size_t len)
{
    size_t i = 0;

    /* Large steps while equal, then bytes. */
    while (i + 4096 <= len && memcmp(a + i, b + i, 4096) == 0)
        i += 4096;
    while (i < len && a[i] == b[i])
        i++;
    return i;
}

static size_t first_nonzero(const unsigned char *a, size_t len)
{
    size_t i = 0;

    while (i + 4096 <= len && cli_is_zero(a + i, 4096))
        i += 4096;
    while (i < len && a[i] == 0)
        i++;
    return i;
}

/* img_src_status, with "reads as zeroes" for every kind but data. */
static int zero_status(struct img_src *src, uint64_t off, uint64_t len,
                       uint64_t *pnum, bool *zero)
{
    enum fmt_kind kind;
    int ret = img_src_status(src, off, len, true, pnum, &kind);

    *zero = kind != FMT_DATA;
    return ret;
}

struct cmp {
    struct img_src a, b;
    unsigned char *buf_a, *buf_b;
    struct cli_progress prog;
    uint64_t mismatch;       /* valid when compare() returns CMP_DIFFERENT */
};

/* Compares [off, end) where a and b both exist.  Returns a CMP_* status. */
static int compare_common(struct cmp *c, uint64_t end)
{
    uint64_t off = 0;

    while (off < end) {
        uint64_t na, nb, n;
        bool za, zb;

        if (zero_status(&c->a, off, end - off, &na, &za) < 0 ||
            zero_status(&c->b, off, end - off, &nb, &zb) < 0)
            return CMP_ERROR;
        n = MIN(na, nb);
        if (za && zb) {
            off += n;
            cli_progress_update(&c->prog, off);
            continue;
        }
        for (uint64_t stop = off + n; off < stop;) {
            size_t len = (size_t)MIN(stop - off, (uint64_t)CMP_BUF), d;

            if (za)
                memset(c->buf_a, 0, len);
            else if (img_src_read(&c->a, c->buf_a, off, len) < 0)
                return CMP_ERROR;
            if (zb)
                memset(c->buf_b, 0, len);
            else if (img_src_read(&c->b, c->buf_b, off, len) < 0)
                return CMP_ERROR;
            d = first_difference(c->buf_a, c->buf_b, len);
            if (d < len) {
                c->mismatch = off + d;
                return CMP_DIFFERENT;
            }
            off += len;
            cli_progress_update(&c->prog, off);
        }
    }
    return CMP_SAME;
}

/* Checks that [off, big->size) reads as zeroes. */
static int compare_tail(struct cmp *c, struct img_src *big, uint64_t off)
{
    while (off < big->size) {
        uint64_t n;
        bool zero;

        if (zero_status(big, off, big->size - off, &n, &zero) < 0)
            return CMP_ERROR;
        if (zero) {
            off += n;
            cli_progress_update(&c->prog, off);
            continue;
        }
        for (uint64_t stop = off + n; off < stop;) {
            size_t len = (size_t)MIN(stop - off, (uint64_t)CMP_BUF), d;

            if (img_src_read(big, c->buf_a, off, len) < 0)
                return CMP_ERROR;
            d = first_nonzero(c->buf_a, len);
            if (d < len) {
                c->mismatch = off + d;
                return CMP_DIFFERENT;
            }
            off += len;
            cli_progress_update(&c->prog, off);
        }
    }
    return CMP_SAME;
}

int img_compare(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct cmp c = { 0 };
    struct img_in in_a = { 0 }, in_b = { 0 };
    bool progress = false;
    uint64_t common;
    int ch, rc = CMP_ERROR;

    while ((ch = getopt_long(argc, argv, "f:F:ph", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            if (img_parse_format(optarg, &in_a.format) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw, vdk, qcow2 or "
                                       "vmdk)", optarg);
            break;
        case 'F':
            if (img_parse_format(optarg, &in_b.format) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw, vdk, qcow2 or "
                                       "vmdk)", optarg);
            break;
        case 'p':
            progress = true;
            break;
        case 'h':
            usage(stdout);
            return CMP_SAME;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (argc - optind < 2)
        return cli_usage_error(CMD, "missing %s", argc - optind ? "B" : "A and B");
    if (argc - optind > 2)
        return cli_usage_error(CMD, "too many arguments");

    if (img_src_open(&c.a, argv[optind], &in_a) < 0)
        return CMP_ERROR;
    if (img_src_open(&c.b, argv[optind + 1], &in_b) < 0)
        goto out;
    c.buf_a = cli_alloc_buf(CMP_BUF);
    c.buf_b = cli_alloc_buf(CMP_BUF);
    if (!c.buf_a || !c.buf_b)
        goto out;

    common = MIN(c.a.size, c.b.size);
    if (c.a.size != c.b.size)
        printf("Warning: Image size mismatch!\n");
    cli_progress_init(&c.prog, progress, MAX(c.a.size, c.b.size));
    rc = compare_common(&c, common);
    if (rc == CMP_SAME && c.a.size != c.b.size)
        rc = compare_tail(&c, c.a.size > c.b.size ? &c.a : &c.b, common);
    cli_progress_end(&c.prog);
    if (rc == CMP_SAME)
        printf("Images are identical.\n");
    else if (rc == CMP_DIFFERENT)
        printf("Content mismatch at offset %llu!\n", (unsigned long long)c.mismatch);

out:
    free(c.buf_a);
    free(c.buf_b);
    img_src_close(&c.b);
    img_src_close(&c.a);
    return rc;
}
