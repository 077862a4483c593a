/*
 * vol.c - "vdisk create", "vdisk rm" and "vdisk resize": making, removing
 * and growing volumes of the store.
 *
 * The library checks names, sizes and clashes; these commands parse the
 * arguments, call it once and report its one message.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* OPT_BLOCK_SIZE and OPT_DIGEST: cli.h */

static void create_usage(FILE *f)
{
    fputs("Usage: vdisk create [--block-size N] [--digest none|sha256] NAME SIZE\n"
          "\n"
          "Creates the empty volume NAME of SIZE bytes (thin: no space is\n"
          "used until data is written).  The store is created if needed.\n"
          "\n"
          "      --block-size N    allocation block size, a power of two from 4K\n"
          "                        to 2M (default 64K)\n"
          "      --digest ALG      per-block digests: none (default) or sha256\n"
          "      --store DIR       the store (default $VDISK_STORE)\n"
          "  -h, --help            show this help\n"
          "\n"
          "SIZE and N take the suffixes K, M, G, T (powers of 1024).\n", f);
}

int vol_create(int argc, char **argv)
{
    static const struct option opts[] = {
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "digest", required_argument, NULL, OPT_DIGEST },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vd_create_opts co = { 0 };
    struct vd_volume_info vi;
    struct vd_store *st;
    const char *name;
    char hs[32];
    uint64_t size, v;
    int c, ret;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_BLOCK_SIZE:
            if (cli_parse_size(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return cli_usage_error("create", "invalid block size '%s'", optarg);
            co.block_size = (uint32_t)v;
            break;
        case OPT_DIGEST:
            if (cli_parse_digest(optarg, &co.digest) < 0)
                return cli_usage_error("create",
                                       "invalid digest '%s' (none or sha256)", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            create_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("create");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("create", "missing %s",
                               argc - optind ? "SIZE" : "NAME and SIZE");
    if (argc - optind > 2)
        return cli_usage_error("create", "too many arguments");
    name = argv[optind];
    if (cli_parse_size(argv[optind + 1], &size) < 0)
        return cli_usage_error("create", "invalid size '%s'", argv[optind + 1]);

    if (cli_store_open(VD_STORE_CREATE, &st) < 0)
        return EXIT_ERR;
    ret = vd_volume_create(st, name, size, &co);
    if (ret < 0) {
        cli_err_store(ret, name, "cannot create volume '%s'", name);
        vd_store_close(st);
        return EXIT_ERR;
    }
    /* Say what was made, with the defaults the library chose. */
    if (vd_volume_info(st, name, &vi) == 0)
        printf("Created volume '%s': size %s (%llu bytes), block size %lu, "
               "digest %s\n", name, cli_human_size(vi.size, hs, sizeof(hs)),
               (unsigned long long)vi.size, (unsigned long)vi.block_size,
               cli_digest_name(vi.digest));
    else
        printf("Created volume '%s'\n", name);
    vd_store_close(st);
    return EXIT_OK;
}

static void rm_usage(FILE *f)
{
    fputs("Usage: vdisk rm NAME\n"
          "\n"
          "Removes the volume NAME with all its snapshots.  A volume open for\n"
          "writing is not removed.  Templates are removed by 'vdisk template rm'.\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

int vol_rm(int argc, char **argv)
{
    struct vd_store *st;
    const char *name;
    char hint[VD_NAME_MAX + 64];
    int ret;

    ret = cli_common_opts(argc, argv, "rm", rm_usage, NULL);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error("rm", "missing NAME");
    if (optind + 1 < argc)
        return cli_usage_error("rm", "too many arguments");
    name = argv[optind];

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_volume_remove(st, name);
    if (ret < 0) {
        snprintf(hint, sizeof(hint), "use 'vdisk template rm %.*s'",
                 VD_NAME_MAX, name);
        cli_err_volume(ret, st, name, hint, name);
        vd_store_close(st);
        return EXIT_ERR;
    }
    printf("Removed volume '%s'\n", name);
    vd_store_close(st);
    return EXIT_OK;
}

static void resize_usage(FILE *f)
{
    fputs("Usage: vdisk resize NAME [+]SIZE\n"
          "\n"
          "Grows the volume NAME to SIZE bytes, or by SIZE bytes with '+'.\n"
          "The new space reads as zeroes.  Volumes do not shrink.\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n"
          "\n"
          "SIZE takes the suffixes K, M, G, T (powers of 1024).\n", f);
}

int vol_resize(int argc, char **argv)
{
    struct vd_volume_info vi;
    struct vd_store *st;
    const char *name, *arg;
    bool grow_by;
    uint64_t size;
    char hs[32];
    int ret, rc = EXIT_ERR;

    ret = cli_common_opts(argc, argv, "resize", resize_usage, NULL);
    if (ret >= 0)
        return ret;
    if (argc - optind < 2)
        return cli_usage_error("resize", "missing %s",
                               argc - optind ? "SIZE" : "NAME and SIZE");
    if (argc - optind > 2)
        return cli_usage_error("resize", "too many arguments");
    name = argv[optind];
    arg = argv[optind + 1];
    grow_by = arg[0] == '+';
    if (cli_parse_size(arg + grow_by, &size) < 0)
        return cli_usage_error("resize", "invalid size '%s'", arg);

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    if (grow_by) {
        ret = vd_volume_info(st, name, &vi);
        if (ret < 0) {
            cli_err_volume(ret, st, name, NULL, name);
            goto out;
        }
        if (size > UINT64_MAX - vi.size) {
            cli_err("%s: cannot grow by %s: the size would overflow", name, arg);
            goto out;
        }
        size += vi.size;
    }
    ret = vd_volume_resize(st, name, size);
    if (ret < 0) {
        cli_err_volume(ret, st, name, NULL, name);
        goto out;
    }
    printf("Resized volume '%s' to %s (%llu bytes)\n", name,
           cli_human_size(size, hs, sizeof(hs)), (unsigned long long)size);
    rc = EXIT_OK;
out:
    vd_store_close(st);
    return rc;
}
