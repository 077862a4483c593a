/*
 * clone.c - "vdisk clone" and "vdisk flatten": volumes made from
 * templates, and making a linked clone independent of its template.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

enum { OPT_FULL = 256 };

static void clone_usage(FILE *f)
{
    fputs("Usage: vdisk clone [--full] [-p] TPL[@VERSION] VOL\n"
          "\n"
          "Makes the volume VOL from the template TPL (its newest version, or\n"
          "VERSION).  By default a linked clone, in constant time: a new empty\n"
          "layer over the template, which then cannot be removed while VOL\n"
          "exists.  With --full an independent copy (reflinked where the file\n"
          "system can).\n"
          "\n"
          "      --full        an independent copy instead of a linked clone\n"
          "  -p, --progress    show the progress of --full on a terminal\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

int vol_clone(int argc, char **argv)
{
    static const struct option opts[] = {
        { "full", no_argument, NULL, OPT_FULL },
        { "progress", no_argument, NULL, 'p' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct cli_lib_progress lp = { 0 };
    char tpl[VD_NAME_MAX + 2];
    struct vd_volume_info vi;
    struct vd_store *st;
    const char *vol;
    uint32_t version;
    unsigned flags = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, "ph", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FULL:
            flags |= VD_CLONE_FULL;
            break;
        case 'p':
            lp.wanted = true;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            clone_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("clone");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("clone", "missing %s",
                               argc - optind ? "VOL" : "TPL and VOL");
    if (argc - optind > 2)
        return cli_usage_error("clone", "too many arguments");
    if (cli_parse_tpl_version(argv[optind], tpl, sizeof(tpl), &version) < 0)
        return cli_usage_error("clone", "invalid template '%s' (TPL or TPL@VERSION, "
                               "VERSION a number from 1)", argv[optind]);
    vol = argv[optind + 1];

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_clone(st, tpl, version, vol, flags, cli_lib_progress, &lp);
    cli_lib_progress_end(&lp, ret == 0);
    if (ret < 0) {
        cli_err_store(ret, vol, "cannot clone '%s' as '%s'", argv[optind], vol);
    } else if (vd_volume_info(st, vol, &vi) == 0 && vi.template_name[0]) {
        printf("Created volume '%s', a linked clone of template '%s' version %lu\n",
               vol, vi.template_name, (unsigned long)vi.template_version);
    } else {
        printf("Created volume '%s', a full copy of template '%s'\n", vol,
               argv[optind]);
    }
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

static void flatten_usage(FILE *f)
{
    fputs("Usage: vdisk flatten [-p] VOL\n"
          "\n"
          "Makes the volume VOL independent of the layers below its top: a\n"
          "linked clone of its template, any volume of the frozen layers of\n"
          "its snapshots or of templates made from it.  What it reads from\n"
          "them is copied into its top layer; its snapshots stay.\n"
          "\n"
          "  -p, --progress    show progress on a terminal\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

int vol_flatten(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct cli_lib_progress lp = { 0 };
    struct vd_volume_info before, after;
    struct vd_store *st;
    const char *vol;
    int c, ret;

    while ((c = getopt_long(argc, argv, "ph", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            lp.wanted = true;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            flatten_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("flatten");
        }
    }
    if (optind >= argc)
        return cli_usage_error("flatten", "missing VOL");
    if (optind + 1 < argc)
        return cli_usage_error("flatten", "too many arguments");
    vol = argv[optind];

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_volume_info(st, vol, &before);
    if (ret < 0) {
        cli_err_volume(ret, st, vol, NULL, vol);
        goto out;
    }
    ret = vd_volume_flatten(st, vol, cli_lib_progress, &lp);
    cli_lib_progress_end(&lp, ret == 0);
    if (ret < 0)
        cli_err_volume(ret, st, vol, NULL, vol);
    else if (before.depth <= 1)
        printf("Volume '%s' is flat already\n", vol);
    else if (vd_volume_info(st, vol, &after) == 0)
        printf("Flattened volume '%s': chain depth %u -> %u\n", vol, before.depth,
               after.depth);
    else
        printf("Flattened volume '%s'\n", vol);
out:
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}
