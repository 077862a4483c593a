/*
 * vol-map.c - "vdisk map": the extents of a volume, a snapshot or a
 * template version, as "img map" prints them (through the store, so the
 * layer files are found by the catalog).
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static void usage(FILE *f)
{
    fputs("Usage: vdisk map [--output human|json] NAME[@SNAP]\n"
          "\n"
          "Lists the extents of the volume NAME (or of its snapshot SNAP, or\n"
          "of the template NAME, or its version NAME@N): offset, length, type\n"
          "(data, zero or hole), the depth of the layer that holds them (1 =\n"
          "the top layer, 0 = no layer) and that layer's file.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

int vol_map(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_chain *chain;
    struct vd_store *st;
    struct vd_ctx *ctx;
    const char *name;
    int ret, rc = EXIT_ERR;

    ret = cli_common_opts(argc, argv, "map", usage, &output);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error("map", "missing NAME");
    if (optind + 1 < argc)
        return cli_usage_error("map", "too many arguments");
    name = argv[optind];

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_store_open_chain(st, ctx, name, 0, &chain);
    if (ret < 0) {
        cli_err_store(ret, name, "%s", name);
        goto out;
    }
    if (map_chain(chain, name, output) == 0)
        rc = EXIT_OK;
    ret = vd_chain_close(chain);
    if (ret < 0) {
        cli_err_lib(ret, "%s: close", name);
        rc = EXIT_ERR;
    }
out:
    vd_store_close(st);
    return rc;
}
