/*
 * df.c - "vdisk df": what the store promises against what it has.
 *
 * Volumes are thin: their virtual sizes add up to more than the disk
 * holds.  The overcommit ratio, virtual size / (allocated + free), says by
 * how much: above 1, the volumes cannot all be filled, and writes will
 * fail with ENOSPC once the file system is full.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static void usage(FILE *f)
{
    fputs("Usage: vdisk df [--output human|json]\n"
          "\n"
          "Shows the space of the store: the virtual size its volumes promise,\n"
          "the bytes its files occupy, the free space of the file system, the\n"
          "overcommit ratio (promised / (allocated + free)) and the numbers of\n"
          "volumes, templates, snapshots and layer files.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

int store_df(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_store_usage u;
    struct vd_store *st;
    char h1[32], h2[32];
    uint64_t room;
    double ratio = 0;
    int ret;

    ret = cli_common_opts(argc, argv, "df", usage, &output);
    if (ret >= 0)
        return ret;
    if (optind < argc)
        return cli_usage_error("df", "too many arguments");
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_store_usage(st, &u);
    if (ret < 0) {
        cli_err_lib(ret, "%s: cannot measure the store", vd_store_path(st));
        vd_store_close(st);
        return EXIT_ERR;
    }
    room = u.allocated + u.fs_free;
    if (room)
        ratio = (double)u.virtual_size / (double)room;

    if (output == OUTPUT_JSON) {
        fputs("{\n    \"store\": ", stdout);
        json_put_string(stdout, vd_store_path(st));
        printf(",\n    \"virtual-size\": %llu,\n    \"allocated-bytes\": %llu,\n"
               "    \"fs-free\": %llu,\n    \"fs-size\": %llu,\n"
               "    \"overcommit\": ", (unsigned long long)u.virtual_size,
               (unsigned long long)u.allocated, (unsigned long long)u.fs_free,
               (unsigned long long)u.fs_size);
        if (room)
            printf("%.4g", ratio);
        else
            fputs("null", stdout);
        printf(",\n    \"volumes\": %u,\n    \"templates\": %u,\n"
               "    \"snapshots\": %u,\n    \"layers\": %u\n}\n",
               u.volumes, u.templates, u.snapshots, u.layers);
    } else {
        printf("store: %s\n", vd_store_path(st));
        printf("volumes: %u, templates: %u, snapshots: %u, layer files: %u\n",
               u.volumes, u.templates, u.snapshots, u.layers);
        printf("virtual size (promised): %s (%llu bytes)\n",
               cli_human_size(u.virtual_size, h1, sizeof(h1)),
               (unsigned long long)u.virtual_size);
        printf("allocated on disk: %s (%llu bytes)\n",
               cli_human_size(u.allocated, h1, sizeof(h1)),
               (unsigned long long)u.allocated);
        printf("file system: %s free of %s\n",
               cli_human_size(u.fs_free, h1, sizeof(h1)),
               cli_human_size(u.fs_size, h2, sizeof(h2)));
        /* "3.2x"; a nearly empty store on a big disk is "0.004x", not
         * "0.0x". */
        if (!room)
            printf("overcommit: n/a\n");
        else if (ratio >= 0.1)
            printf("overcommit %.1fx%s\n", ratio,
                   ratio > 1 ? " (the volumes cannot all be filled)" : "");
        else if (ratio >= 0.001)
            printf("overcommit %.3fx\n", ratio);
        else
            printf("overcommit <0.001x\n");
    }
    vd_store_close(st);
    return EXIT_OK;
}
