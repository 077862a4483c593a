/*
 * img-create.c - "vdisk img create": a new base or delta layer file.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define CMD "img create"

/* OPT_BLOCK_SIZE and OPT_DIGEST: cli.h */

static void usage(FILE *f)
{
    fputs("Usage: vdisk img create [-b PARENT] [--block-size N]\n"
          "                        [--digest none|sha256] FILE [SIZE]\n"
          "\n"
          "Creates the layer file FILE, which must not exist.  With -b it is a\n"
          "delta over PARENT (which is frozen if it is not yet) and SIZE may be\n"
          "omitted to take the parent's size.\n"
          "\n"
          "  -b, --parent PARENT   parent layer file\n"
          "      --block-size N    allocation block size, a power of two from 4K\n"
          "                        to 2M (default 64K, or the parent's)\n"
          "      --digest ALG      per-block digests: none (default) or sha256\n"
          "  -h, --help            show this help\n"
          "\n"
          "SIZE and N take the suffixes K, M, G, T (powers of 1024), optionally\n"
          "followed by B.\n", f);
}

int img_create(int argc, char **argv)
{
    static const struct option opts[] = {
        { "parent", required_argument, NULL, 'b' },
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "digest", required_argument, NULL, OPT_DIGEST },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vd_create_opts co = { 0 };
    struct vd_layer_info info;
    char uuid[37];
    const char *file;
    uint64_t v;
    int c, ret;

    while ((c = getopt_long(argc, argv, "b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            co.parent = optarg;
            break;
        case OPT_BLOCK_SIZE:
            if (cli_parse_size(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return cli_usage_error(CMD, "invalid block size '%s'", optarg);
            co.block_size = (uint32_t)v;
            break;
        case OPT_DIGEST:
            if (cli_parse_digest(optarg, &co.digest) < 0)
                return cli_usage_error(CMD, "invalid digest '%s' (none or sha256)",
                                       optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (optind >= argc)
        return cli_usage_error(CMD, "missing FILE");
    file = argv[optind++];
    if (optind < argc) {
        if (cli_parse_size(argv[optind], &co.size) < 0)
            return cli_usage_error(CMD, "invalid size '%s'", argv[optind]);
        if (co.size == 0)
            return cli_usage_error(CMD, "size must be greater than 0");
        optind++;
    } else if (!co.parent) {
        return cli_usage_error(CMD, "missing SIZE (needed without -b)");
    }
    if (optind < argc)
        return cli_usage_error(CMD, "too many arguments");

    ret = vd_layer_create(file, &co, NULL);
    if (ret < 0) {
        cli_err_lib(ret, "%s", file);
        return EXIT_ERR;
    }
    /* The sizes actually used: with a parent they may come from it. */
    ret = vd_layer_info(file, &info);
    if (ret < 0) {
        cli_err_lib(ret, "%s: created, but cannot read it back", file);
        return EXIT_ERR;
    }
    vd_uuid_format(&info.uuid, uuid);
    printf("Formatting '%s', fmt=vdk size=%llu block_size=%lu digest=%s",
           file, (unsigned long long)info.size,
           (unsigned long)info.block_size, cli_digest_name(info.digest));
    if (co.parent)
        printf(" backing_file=%s", co.parent);
    printf(" uuid=%s\n", uuid);
    return EXIT_OK;
}
