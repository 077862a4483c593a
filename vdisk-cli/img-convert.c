/*
 * img-convert.c - "vdisk img convert": copy an image into a new image of
 * any format, keeping it sparse (the pipeline is copy.c's, the formats
 * formats/').
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

#define CMD "img convert"

static void usage(FILE *f)
{
    fputs("Usage: vdisk img convert [-f FMT] -O FMT [-o OPTIONS] [-p] IN OUT\n"
          "\n"
          "Copies the image IN into a new image OUT, sparsely: holes and\n"
          "zeroes are not written.  Formats: raw, vdk, qcow2, vmdk.  A vdk OUT\n"
          "must not exist; other formats are created or truncated.  A raw IN\n"
          "whose size is not a multiple of 512 is padded with zeroes.\n"
          "\n"
          "  -f FMT             format of IN (default: probed by its magic)\n"
          "  -O FMT             format of OUT\n"
          "  -o KEY=VAL,...     options of a qcow2 or vmdk OUT:\n"
          "                       cluster_size=N (qcow2 cluster, vmdk grain; 64K)\n"
          "                       subformat=monolithicSparse|streamOptimized (vmdk)\n"
          "                       backing_file=F, backing_fmt=FMT (a qcow2 overlay:\n"
          "                       only what IN holds itself is copied; F is named,\n"
          "                       not read)\n"
          "      --backing F    the backing file IN names (never opened unless\n"
          "                     given here); --backing-format FMT its format\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --block-size N block size of a vdk OUT (default 64K)\n"
          "      --digest ALG   per-block digests of a vdk OUT: none or sha256\n"
          "  -h, --help         show this help\n", f);
}

/* Refuses to overwrite the input through an OUT of the same file. */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int img_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        IMG_IN_OPTIONS,
        IMG_VDK_OPTIONS,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct img_opts io = { 0 };
    struct img_src src = { 0 };
    struct fmt_image *out = NULL;
    const char *in_path, *out_path;
    bool progress = false;
    int ch, r, rc = EXIT_ERR;

    while ((ch = getopt_long(argc, argv, "f:O:o:ph", opts, NULL)) != -1) {
        r = img_opt(CMD, ch, optarg, &io);
        if (r < 0)
            return EXIT_USAGE;
        if (r > 0)
            continue;
        switch (ch) {
        case 'p':
            progress = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (!io.out_format)
        return cli_usage_error(CMD, "missing -O (output format)");
    if (img_opts_check(CMD, &io) < 0)
        return EXIT_USAGE;
    if (argc - optind < 2)
        return cli_usage_error(CMD, "missing %s", argc - optind ? "OUT" : "IN and OUT");
    if (argc - optind > 2)
        return cli_usage_error(CMD, "too many arguments");
    in_path = argv[optind];
    out_path = argv[optind + 1];

    if (same_file(in_path, out_path)) {
        cli_err("%s: input and output are the same file", out_path);
        return EXIT_ERR;
    }
    if (!cli_ctx())
        return EXIT_ERR;
    if (img_src_open(&src, in_path, &io.in) < 0)
        return EXIT_ERR;

    io.co.size = src.size;
    io.co.ctx = cli_ctx();
    if (copy_out_create(out_path, io.out_format, &io.co, &out) < 0)
        goto out;
    if (copy_image(&src, out, progress) < 0) {
        fmt_discard(out);
        goto out;
    }
    if (copy_out_close(out) < 0)
        goto out;
    rc = EXIT_OK;

out:
    /* The source closes after OUT: a vdk chain shares the context. */
    img_src_close(&src);
    return rc;
}
