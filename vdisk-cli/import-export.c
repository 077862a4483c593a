/*
 * import-export.c - "vdisk import" and "vdisk export": images of any
 * format in and out of the store, through copy.c's sparse pipeline.
 *
 * import makes a new volume the size of the image (a raw file's size
 * rounded up to 512) and writes only what is not zero: a new volume reads
 * as zeroes everywhere.  Whatever fails, the half-made volume is removed
 * again, so that a failed import leaves the store as it was.
 *
 * export of a linked clone with -o backing_file=F writes a qcow2 overlay:
 * only the clone's own layers (those above its template's) are copied,
 * and F, named in the header, stands for the template.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int import_volume(struct vd_store *st, const char *file, const struct img_in *in,
                  const char *name, const struct vd_create_opts *co,
                  bool progress)
{
    struct img_src src;
    struct fmt_image *out = NULL;
    struct vd_chain *chain = NULL;
    struct vd_ctx *ctx = cli_ctx();
    bool made = false;
    int ret;

    if (!ctx)
        return -ENOMEM;
    ret = img_src_open(&src, file, in);
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
    ret = copy_out_chain(chain, name, &out);     /* owns the chain */
    if (ret < 0)
        goto out;
    ret = copy_image(&src, out, progress);
    if (ret == 0)
        ret = copy_out_close(out);
    else
        fmt_discard(out);

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
    fputs("Usage: vdisk import [-f FMT] [--backing F [--backing-format FMT]] [-p]\n"
          "                    [--block-size N] [--digest none|sha256] FILE NAME\n"
          "\n"
          "Creates the volume NAME from the image FILE (raw, vdk, qcow2 or\n"
          "vmdk): its size is FILE's virtual size (a raw file's size rounded\n"
          "up to 512 bytes), and only the data is copied (holes and zeroes are\n"
          "skipped).  The store is created if needed.  If the import fails,\n"
          "NAME is removed again.\n"
          "\n"
          "  -f FMT             format of FILE (default: probed by its magic)\n"
          "      --backing F    the backing file FILE names (never opened unless\n"
          "                     given here); --backing-format FMT its format\n"
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
        IMG_IN_OPTIONS,
        IMG_VDK_OPTIONS,
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vd_create_opts co = { 0 };
    struct img_opts io = { 0 };
    struct vd_store *st;
    bool progress = false;
    int c, r, ret;

    while ((c = getopt_long(argc, argv, "f:ph", opts, NULL)) != -1) {
        r = img_opt("import", c, optarg, &io);
        if (r < 0)
            return EXIT_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'p':
            progress = true;
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
    if (img_opts_check("import", &io) < 0)
        return EXIT_USAGE;
    if (argc - optind < 2)
        return cli_usage_error("import", "missing %s",
                               argc - optind ? "NAME" : "FILE and NAME");
    if (argc - optind > 2)
        return cli_usage_error("import", "too many arguments");
    co.block_size = io.co.block_size;
    co.digest = (enum vd_digest)io.co.digest;

    if (cli_store_open(VD_STORE_CREATE, &st) < 0)
        return EXIT_ERR;
    ret = import_volume(st, argv[optind], &io.in, argv[optind + 1], &co, progress);
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
    fputs("Usage: vdisk export [-O FMT] [-o OPTIONS] [-p] NAME[@SNAP] FILE\n"
          "\n"
          "Copies the content of the volume NAME (or of its snapshot SNAP, or\n"
          "of a template NAME or NAME@VERSION) into FILE, sparsely.  A vdk FILE\n"
          "(a standalone layer with the volume's block size and digest) must\n"
          "not exist; other formats are created or truncated.\n"
          "\n"
          "  -O FMT             format of FILE: raw (default), vdk, qcow2, vmdk\n"
          "  -o KEY=VAL,...     options of a qcow2 or vmdk FILE:\n"
          "                       cluster_size=N (qcow2 cluster, vmdk grain; 64K)\n"
          "                       subformat=monolithicSparse|streamOptimized (vmdk)\n"
          "                       backing_file=F, backing_fmt=FMT (qcow2, a linked\n"
          "                       clone only: FILE gets only the clone's own data,\n"
          "                       and names F, an export of its template)\n"
          "  -p, --progress     show progress on a terminal\n"
          "      --store DIR    the store (default $VDISK_STORE)\n"
          "  -h, --help         show this help\n"
          "\n"
          "vdisk export allow|deny|rules NAME ... say who may open NAME over NBD\n"
          "(vdisk export allow --help).  To export a volume named allow, deny or\n"
          "rules, put an option or -- first: vdisk export -- rules FILE.\n", f);
}

/* The number of layers of chain (opened for NAME[@SNAP]) above its
 * template's: what a qcow2 overlay of the clone holds.  0 and a message
 * if NAME is not a linked clone. */
static unsigned own_layers(struct vd_store *st, struct vd_chain *chain, const char *name)
{
    char vol[VD_NAME_MAX + 1];
    struct vd_volume_info vi;
    struct vd_template_version *vers = NULL;
    struct vd_template_info ti;
    struct vd_layer_info li;
    size_t n = 0;
    unsigned depth = 0;
    vd_uuid layer;
    bool found = false;

    snprintf(vol, sizeof(vol), "%.*s", (int)strcspn(name, "@"), name);
    if (vd_volume_info(st, vol, &vi) < 0 || !vi.template_name[0]) {
        cli_err("%s: backing_file is for exporting a linked clone, and '%s' is not one",
                name, vol);
        return 0;
    }
    if (vd_template_info(st, vi.template_name, &ti, &vers, &n) < 0) {
        cli_err("%s: cannot read its template '%s'", name, vi.template_name);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (vers[i].version == vi.template_version) {
            layer = vers[i].layer;
            found = true;
        }
    }
    free(vers);
    for (unsigned d = 1; found && d <= vd_chain_depth(chain); d++) {
        if (vd_chain_layer_info(chain, d, &li) == 0 &&
            memcmp(&li.uuid, &layer, sizeof(layer)) == 0) {
            depth = d - 1;
            break;
        }
    }
    if (depth == 0)
        cli_err("%s: cannot find its template's layer in its chain", name);
    return depth;
}

int vol_export(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct img_opts io = { .out_format = "raw" };
    struct vd_layer_info li;
    struct img_src src = { 0 };
    struct fmt_image *out = NULL;
    struct vd_chain *chain;
    struct vd_store *st;
    struct vd_ctx *ctx;
    const char *name;
    unsigned own = 0;
    bool progress = false;
    int c, r, rc = EXIT_ERR;

    while ((c = getopt_long(argc, argv, "O:o:ph", opts, NULL)) != -1) {
        r = img_opt("export", c, optarg, &io);
        if (r < 0)
            return EXIT_USAGE;
        if (r > 0)
            continue;
        switch (c) {
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
    if (img_opts_check("export", &io) < 0)
        return EXIT_USAGE;
    if (argc - optind < 2)
        return cli_usage_error("export", "missing %s",
                               argc - optind ? "FILE" : "NAME and FILE");
    if (argc - optind > 2)
        return cli_usage_error("export", "too many arguments");
    name = argv[optind];

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    r = vd_store_open_chain(st, ctx, name, 0, &chain);
    if (r < 0) {
        cli_err_store(r, name, "%s", name);
        vd_store_close(st);
        return EXIT_ERR;
    }
    if (io.co.backing_file && (own = own_layers(st, chain, name)) == 0) {
        vd_chain_close(chain);
        goto out;
    }
    if (strcmp(io.out_format, "vdk") == 0) {
        io.co.block_size = vd_chain_block_size(chain);
        if (vd_chain_layer_info(chain, 1, &li) == 0)
            io.co.digest = (int)li.digest;
    }
    if (img_src_use_chain(&src, chain, name, own) < 0)
        goto out;
    io.co.size = src.size;
    io.co.ctx = ctx;
    if (copy_out_create(argv[optind + 1], io.out_format, &io.co, &out) < 0)
        goto out;
    if (copy_image(&src, out, progress) < 0) {
        fmt_discard(out);
        goto out;
    }
    if (copy_out_close(out) < 0)
        goto out;
    rc = EXIT_OK;

out:
    img_src_close(&src);
    vd_store_close(st);
    return rc;
}
