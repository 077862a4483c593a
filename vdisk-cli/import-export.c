/*
 * import-export.c - "vdisk import" and "vdisk export": images in and out
 * of the store, through copy.c's sparse pipeline.
 *
 * import makes a new volume the size of the file (rounded up to 512) and
 * writes only what is not zero: a new volume reads as zeroes everywhere.
 * Whatever fails, the half-made volume is removed again, so that a failed
 * import leaves the store as it was.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

enum { OPT_BLOCK_SIZE = 256, OPT_DIGEST };

int import_volume(struct vd_store *st, const char *file, enum img_format fmt,
                  const char *name, const struct vd_create_opts *co,
                  bool progress)
{
    struct img_src src;
    struct copy_out out;
    struct vd_chain *chain = NULL;
    struct vd_ctx *ctx = cli_ctx();
    bool made = false;
    int ret;

    if (!ctx)
        return -ENOMEM;
    ret = img_src_open(&src, file, fmt);
    if (ret < 0)
        return ret;
    ret = vd_volume_create(st, name, src.size, co);
    if (ret < 0) {
        cli_err_store(ret, name, "cannot create volume '%s'", name);
        goto out;
    }
    made = true;
    ret = vd_store_open_chain(st, ctx, name, VD_OPEN_RDWR, &chain);
    if (ret < 0) {
        cli_err_store(ret, name, "%s: cannot open it", name);
        goto out;
    }
    copy_out_init(&out, FMT_VDK, name);
    out.chain = chain;           /* closed by copy_out_close/_discard */
    ret = copy_image(&src, &out, progress);
    if (ret == 0)
        ret = copy_out_close(&out);
    else
        copy_out_discard(&out);

out:
    img_src_close(&src);
    if (ret < 0 && made) {
        int r2 = vd_volume_remove(st, name);

        if (r2 < 0)
            cli_err_store(r2, name, "%s: cannot remove the incomplete volume",
                          name);
    }
    return ret;
}

static void import_usage(FILE *f)
{
    fputs("Usage: vdisk import [-f raw|vdk] [-p] [--block-size N]\n"
          "                    [--digest none|sha256] FILE NAME\n"
          "\n"
          "Creates the volume NAME from the image FILE: its size is FILE's\n"
          "virtual size (a raw file's size rounded up to 512 bytes), and only\n"
          "the data is copied (holes and zeroes are skipped).  The store is\n"
          "created if needed.  If the import fails, NAME is removed again.\n"
          "\n"
          "  -f FMT             format of FILE (default: detected)\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --block-size N block size of the volume (default 64K)\n"
          "      --digest ALG   per-block digests: none (default) or sha256\n"
          "      --store DIR    the store (default $VDISK_STORE)\n"
          "  -h, --help         show this help\n", f);
}

int vol_import(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "digest", required_argument, NULL, OPT_DIGEST },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vd_create_opts co = { 0 };
    enum img_format fmt = FMT_AUTO;
    struct vd_store *st;
    bool progress = false;
    uint64_t v;
    int c, ret;

    while ((c = getopt_long(argc, argv, "f:ph", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (img_parse_format(optarg, &fmt) < 0)
                return cli_usage_error("import", "invalid format '%s' (raw or vdk)",
                                       optarg);
            break;
        case 'p':
            progress = true;
            break;
        case OPT_BLOCK_SIZE:
            if (cli_parse_size(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return cli_usage_error("import", "invalid block size '%s'", optarg);
            co.block_size = (uint32_t)v;
            break;
        case OPT_DIGEST:
            if (cli_parse_digest(optarg, &co.digest) < 0)
                return cli_usage_error("import",
                                       "invalid digest '%s' (none or sha256)", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            import_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("import");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("import", "missing %s",
                               argc - optind ? "NAME" : "FILE and NAME");
    if (argc - optind > 2)
        return cli_usage_error("import", "too many arguments");

    if (cli_store_open(VD_STORE_CREATE, &st) < 0)
        return EXIT_ERR;
    ret = import_volume(st, argv[optind], fmt, argv[optind + 1], &co, progress);
    if (ret == 0) {
        struct vd_volume_info vi;
        char hs[32], ha[32];

        if (vd_volume_info(st, argv[optind + 1], &vi) == 0)
            printf("Imported '%s' as volume '%s': size %s (%llu bytes), "
                   "%s allocated\n", argv[optind], vi.name,
                   cli_human_size(vi.size, hs, sizeof(hs)),
                   (unsigned long long)vi.size,
                   cli_human_size(vi.allocated, ha, sizeof(ha)));
    }
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

static void export_usage(FILE *f)
{
    fputs("Usage: vdisk export [-O raw|vdk] [-p] NAME[@SNAP] FILE\n"
          "\n"
          "Copies the content of the volume NAME (or of its snapshot SNAP, or\n"
          "of a template NAME or NAME@VERSION) into FILE, sparsely.  A raw FILE\n"
          "is created or truncated; a vdk FILE (a standalone layer with the\n"
          "volume's block size and digest) must not exist.\n"
          "\n"
          "  -O FMT             format of FILE: raw (default) or vdk\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --store DIR    the store (default $VDISK_STORE)\n"
          "  -h, --help         show this help\n", f);
}

int vol_export(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum img_format fmt = FMT_RAW;
    struct vd_create_opts co = { 0 };
    struct vd_layer_info li;
    struct img_src src = { .fd = -1 };
    struct copy_out out;
    struct vd_chain *chain;
    struct vd_store *st;
    struct vd_ctx *ctx;
    const char *name;
    bool progress = false;
    int c, ret, rc = EXIT_ERR;

    while ((c = getopt_long(argc, argv, "O:ph", opts, NULL)) != -1) {
        switch (c) {
        case 'O':
            if (img_parse_format(optarg, &fmt) < 0)
                return cli_usage_error("export", "invalid format '%s' (raw or vdk)",
                                       optarg);
            break;
        case 'p':
            progress = true;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            export_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("export");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("export", "missing %s",
                               argc - optind ? "FILE" : "NAME and FILE");
    if (argc - optind > 2)
        return cli_usage_error("export", "too many arguments");
    name = argv[optind];
    copy_out_init(&out, fmt, argv[optind + 1]);

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_store_open_chain(st, ctx, name, 0, &chain);
    if (ret < 0) {
        cli_err_store(ret, name, "%s", name);
        vd_store_close(st);
        return EXIT_ERR;
    }
    img_src_use_chain(&src, chain, name);

    if (fmt == FMT_VDK) {
        co.size = src.size;
        co.block_size = vd_chain_block_size(chain);
        if (vd_chain_layer_info(chain, 1, &li) == 0)
            co.digest = li.digest;
        ret = copy_out_open_vdk(&out, &co);
    } else {
        ret = copy_out_open_raw(&out, src.size);
    }
    if (ret < 0)
        goto out;
    if (copy_image(&src, &out, progress) < 0 || copy_out_close(&out) < 0)
        goto out;
    rc = EXIT_OK;

out:
    if (rc != EXIT_OK)
        copy_out_discard(&out);
    img_src_close(&src);
    vd_store_close(st);
    return rc;
}
