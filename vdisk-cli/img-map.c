/*
 * img-map.c - "vdisk img map": the extents of a chain, with their type
 * (data, zero, hole) and the depth of the layer that owns them.  The
 * printing (map_chain) is shared with "vdisk map", which opens the chain
 * through the store.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

#define CMD "img map"

/* Extents asked of the library per call. */
#define MAP_BATCH 256

static void usage(FILE *f)
{
    fputs("Usage: vdisk img map [--output human|json] FILE\n"
          "\n"
          "Lists the extents of the chain whose top layer is FILE: offset,\n"
          "length, type (data, zero or hole) and the depth of the layer that\n"
          "holds them (1 = FILE, 0 = no layer).\n"
          "\n"
          "      --output FMT   human (default) or json\n"
          "  -h, --help         show this help\n", f);
}

static const char *type_name(enum vd_extent_type t)
{
    switch (t) {
    case VD_EXTENT_DATA: return "data";
    case VD_EXTENT_ZERO: return "zero";
    default: return "hole";
    }
}

struct map_out {
    enum cli_output output;
    struct vd_chain *chain;
    unsigned long long count;
};

static void emit(struct map_out *m, const struct vd_extent *e)
{
    if (m->output == OUTPUT_JSON) {
        printf("%s{ \"start\": %llu, \"length\": %llu, \"type\": \"%s\", "
               "\"depth\": %u }", m->count ? ",\n" : "",
               (unsigned long long)e->offset, (unsigned long long)e->length,
               type_name(e->type), e->depth);
    } else {
        const char *path = e->depth ? vd_chain_layer_path(m->chain, e->depth) : NULL;

        printf("0x%-16llx0x%-16llx%-6s%-7u%s\n", (unsigned long long)e->offset,
               (unsigned long long)e->length, type_name(e->type), e->depth,
               path ? path : "-");
    }
    m->count++;
}

int map_chain(struct vd_chain *chain, const char *what, enum cli_output output)
{
    struct map_out m = { .output = output, .chain = chain };
    struct vd_extent ext[MAP_BATCH], cur = { 0 };
    uint64_t off, size = vd_chain_size(chain);
    bool have_cur = false;
    int ret;

    if (m.output == OUTPUT_JSON)
        fputs("[", stdout);
    else
        printf("%-18s%-18s%-6s%-7s%s\n", "Offset", "Length", "Type", "Depth", "File");

    for (off = 0; off < size;) {
        ret = vd_block_status(chain, off, size - off, ext, MAP_BATCH);
        if (ret < 0) {
            cli_err_lib(ret, "%s: block status at offset %llu", what,
                        (unsigned long long)off);
            goto fail;
        }
        if (ret == 0) {
            cli_err("%s: block status returned no extent at offset %llu", what,
                    (unsigned long long)off);
            goto fail;
        }
        for (int i = 0; i < ret; i++) {
            const struct vd_extent *e = &ext[i];

            if (e->offset != off || e->length == 0 || e->length > size - off) {
                cli_err("%s: block status returned a bad extent at offset %llu",
                        what, (unsigned long long)off);
                goto fail;
            }
            /* The library merges within one call; merge across calls. */
            if (have_cur && cur.type == e->type && cur.depth == e->depth) {
                cur.length += e->length;
            } else {
                if (have_cur)
                    emit(&m, &cur);
                cur = *e;
                have_cur = true;
            }
            off += e->length;
        }
    }
    if (have_cur)
        emit(&m, &cur);
    if (m.output == OUTPUT_JSON)
        fputs("]\n", stdout);     /* qemu-img map's layout */
    return 0;

fail:
    if (m.output == OUTPUT_JSON)
        fputs("\n", stdout);
    return -EIO;
}

int img_map(int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_open_opts oo = { 0 };
    struct vd_chain *chain;
    struct vd_ctx *ctx;
    const char *file;
    int c, ret, rc = EXIT_ERR;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (cli_parse_output(optarg, &output) < 0)
                return cli_usage_error(CMD, "invalid output format '%s'", optarg);
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
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "too many arguments");
    file = argv[optind];

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    ret = vd_chain_open(ctx, file, &oo, &chain);
    if (ret < 0) {
        cli_err_lib(ret, "%s", file);
        return EXIT_ERR;
    }
    if (map_chain(chain, file, output) == 0)
        rc = EXIT_OK;
    ret = vd_chain_close(chain);
    if (ret < 0) {
        cli_err_lib(ret, "%s: close", file);
        rc = EXIT_ERR;
    }
    return rc;
}
