/*
 * img-convert.c - "vdisk img convert": copy an image between raw and vdk,
 * keeping it sparse (the pipeline is copy.c's).
 */
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "cli.h"

#define CMD "img convert"

enum { OPT_BLOCK_SIZE = 256, OPT_DIGEST };

static void usage(FILE *f)
{
    fputs("Usage: vdisk img convert [-f raw|vdk] -O raw|vdk [-p] [--block-size N]\n"
          "                         [--digest none|sha256] IN OUT\n"
          "\n"
          "Copies the image IN into a new image OUT, sparsely: holes and\n"
          "zeroes are not written.  A vdk OUT must not exist; a raw OUT is\n"
          "created or truncated.  A raw IN whose size is not a multiple of 512\n"
          "is padded with zeroes.\n"
          "\n"
          "  -f FMT             format of IN (default: detected)\n"
          "  -O FMT             format of OUT\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --block-size N block size of a vdk OUT (default 64K)\n"
          "      --digest ALG   per-block digests of a vdk OUT: none or sha256\n"
          "  -h, --help         show this help\n", f);
}

/* Refuses to overwrite the input through a raw OUT of the same file. */
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
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "digest", required_argument, NULL, OPT_DIGEST },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct img_src src = { .fd = -1 };
    struct copy_out out;
    struct vd_create_opts co = { 0 };
    enum img_format in_fmt = FMT_AUTO, out_fmt = FMT_AUTO;
    bool progress = false, vdk_opts = false;
    uint64_t v;
    int ch, ret, rc = EXIT_ERR;

    while ((ch = getopt_long(argc, argv, "f:O:ph", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            if (img_parse_format(optarg, &in_fmt) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw or vdk)", optarg);
            break;
        case 'O':
            if (img_parse_format(optarg, &out_fmt) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw or vdk)", optarg);
            break;
        case 'p':
            progress = true;
            break;
        case OPT_BLOCK_SIZE:
            if (cli_parse_size(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return cli_usage_error(CMD, "invalid block size '%s'", optarg);
            co.block_size = (uint32_t)v;
            vdk_opts = true;
            break;
        case OPT_DIGEST:
            if (cli_parse_digest(optarg, &co.digest) < 0)
                return cli_usage_error(CMD, "invalid digest '%s' (none or sha256)",
                                       optarg);
            vdk_opts = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (out_fmt == FMT_AUTO)
        return cli_usage_error(CMD, "missing -O (output format)");
    if (vdk_opts && out_fmt != FMT_VDK)
        return cli_usage_error(CMD, "--block-size and --digest need -O vdk");
    if (argc - optind < 2)
        return cli_usage_error(CMD, "missing %s", argc - optind ? "OUT" : "IN and OUT");
    if (argc - optind > 2)
        return cli_usage_error(CMD, "too many arguments");
    copy_out_init(&out, out_fmt, argv[optind + 1]);

    if (same_file(argv[optind], out.path)) {
        cli_err("%s: input and output are the same file", out.path);
        return EXIT_ERR;
    }
    if (!cli_ctx())
        return EXIT_ERR;
    if (img_src_open(&src, argv[optind], in_fmt) < 0)
        return EXIT_ERR;

    co.size = src.size;
    ret = out_fmt == FMT_VDK ? copy_out_open_vdk(&out, &co)
                             : copy_out_open_raw(&out, src.size);
    if (ret < 0)
        goto out;
    if (copy_image(&src, &out, progress) < 0 || copy_out_close(&out) < 0)
        goto out;
    rc = EXIT_OK;

out:
    if (rc != EXIT_OK)
        copy_out_discard(&out);
    /* The source closes after OUT: its chain shares the context. */
    img_src_close(&src);
    return rc;
}
