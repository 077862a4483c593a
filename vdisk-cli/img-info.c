/*
 * img-info.c - "vdisk img info": a layer file and the chain below it, or
 * an image of another format (qcow2, VMDK, raw) as formats/ reads it.
 *
 * The chain is opened read-only.  When a parent cannot be found the top
 * layer's own header is still shown (vd_layer_info) and the broken chain
 * is reported as an error: the user most needs the information exactly
 * when something is missing.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

#define CMD "img info"

static void usage(FILE *f)
{
    fputs("Usage: vdisk img info [-f FMT] [--output human|json] FILE\n"
          "\n"
          "Shows the virtual size, block size, digest, UUID, flags, space used\n"
          "and the parent chain of the layer file FILE; for a qcow2, VMDK or raw\n"
          "FILE, its virtual size, space used, the backing file it names (which\n"
          "is not opened) and its format's details.\n"
          "\n"
          "  -f FMT             format of FILE (default: probed by its magic)\n"
          "      --output FMT   human (default) or json\n"
          "  -h, --help         show this help\n", f);
}

struct info_layer {
    const char *path;
    struct vd_layer_info info;
};

struct info_view {
    const char *file;
    unsigned n;                  /* layers known: the chain, or just the top */
    struct info_layer *layers;   /* [0] is the top */
    const char *chain_error;     /* non-NULL: the parents could not be opened */
};

static const char *yes_no(bool b)
{
    return b ? "yes" : "no";
}

static const char *json_bool(bool b)
{
    return b ? "true" : "false";
}

static void print_bytes(const char *label, uint64_t n)
{
    char hs[32];

    printf("%s: %s (%llu bytes)\n", label, cli_human_size(n, hs, sizeof(hs)),
           (unsigned long long)n);
}

static void print_human(const struct info_view *v)
{
    const struct vd_layer_info *top = &v->layers[0].info;
    char uuid[37], when[64];
    time_t t = (time_t)top->create_time;
    struct tm tm;

    printf("image: %s\n", v->file);
    printf("file format: vdk\n");
    print_bytes("virtual size", top->size);
    printf("block size: %lu\n", (unsigned long)top->block_size);
    printf("digest: %s\n", cli_digest_name(top->digest));
    vd_uuid_format(&top->uuid, uuid);
    printf("uuid: %s\n", uuid);
    if (!vd_uuid_is_null(&top->parent_uuid)) {
        vd_uuid_format(&top->parent_uuid, uuid);
        printf("parent uuid: %s\n", uuid);
        printf("parent hint: %s\n", top->parent_hint);
    }
    printf("frozen: %s\n", yes_no(top->frozen));
    printf("dirty: %s\n", yes_no(top->dirty));
    print_bytes("allocated", top->allocated);
    print_bytes("zeroed", top->zeroed);
    print_bytes("file size", top->file_size);
    if (gmtime_r(&t, &tm) && strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm))
        printf("created: %s\n", when);

    if (v->chain_error) {
        printf("chain: incomplete (%s)\n", v->chain_error);
        return;
    }
    printf("chain depth: %u\n", v->n);
    printf("chain:\n");
    for (unsigned i = 0; i < v->n; i++) {
        const struct info_layer *l = &v->layers[i];
        char hs[32];

        vd_uuid_format(&l->info.uuid, uuid);
        printf("  depth %u: %s\n", i + 1, l->path);
        printf("      uuid: %s, allocated: %s, frozen: %s\n", uuid,
               cli_human_size(l->info.allocated, hs, sizeof(hs)),
               yes_no(l->info.frozen));
    }
}

static void print_json_layer_fields(const struct vd_layer_info *in,
                                    const char *indent)
{
    char uuid[37];

    printf("%s\"virtual-size\": %llu,\n", indent, (unsigned long long)in->size);
    printf("%s\"block-size\": %lu,\n", indent, (unsigned long)in->block_size);
    printf("%s\"digest\": ", indent);
    json_put_string(stdout, cli_digest_name(in->digest));
    vd_uuid_format(&in->uuid, uuid);
    printf(",\n%s\"uuid\": \"%s\",\n", indent, uuid);
    if (!vd_uuid_is_null(&in->parent_uuid)) {
        vd_uuid_format(&in->parent_uuid, uuid);
        printf("%s\"parent-uuid\": \"%s\",\n", indent, uuid);
        printf("%s\"parent-hint\": ", indent);
        json_put_string(stdout, in->parent_hint);
        fputs(",\n", stdout);
    }
    printf("%s\"frozen\": %s,\n", indent, json_bool(in->frozen));
    printf("%s\"dirty\": %s,\n", indent, json_bool(in->dirty));
    printf("%s\"allocated-bytes\": %llu,\n", indent,
           (unsigned long long)in->allocated);
    printf("%s\"zeroed-bytes\": %llu,\n", indent, (unsigned long long)in->zeroed);
    printf("%s\"file-size\": %llu,\n", indent, (unsigned long long)in->file_size);
    printf("%s\"create-time\": %llu", indent,
           (unsigned long long)in->create_time);
}

static void print_json(const struct info_view *v)
{
    fputs("{\n    \"filename\": ", stdout);
    json_put_string(stdout, v->file);
    fputs(",\n    \"format\": \"vdk\",\n", stdout);
    print_json_layer_fields(&v->layers[0].info, "    ");
    printf(",\n    \"chain-complete\": %s,\n", json_bool(!v->chain_error));
    if (v->chain_error) {
        fputs("    \"error\": ", stdout);
        json_put_string(stdout, v->chain_error);
        fputs(",\n", stdout);
    }
    printf("    \"chain-depth\": %u,\n", v->n);
    fputs("    \"chain\": [", stdout);
    for (unsigned i = 0; i < v->n; i++) {
        printf("%s\n        {\n            \"depth\": %u,\n"
               "            \"filename\": ", i ? "," : "", i + 1);
        json_put_string(stdout, v->layers[i].path);
        fputs(",\n", stdout);
        print_json_layer_fields(&v->layers[i].info, "            ");
        fputs("\n        }", stdout);
    }
    fputs(v->n ? "\n    ]\n}\n" : "]\n}\n", stdout);
}

struct prop_printer {
    enum cli_output output;
};

static void print_prop(void *opaque, const char *key, const char *value, bool numeric)
{
    struct prop_printer *p = opaque;

    if (p->output != OUTPUT_JSON) {
        printf("%s: %s\n", key, value);
        return;
    }
    fputs(",\n    ", stdout);
    json_put_key(stdout, key);
    if (numeric || strcmp(value, "true") == 0 || strcmp(value, "false") == 0)
        fputs(value, stdout);
    else
        json_put_string(stdout, value);
}

/* img info of an image that is not a vdk layer. */
static int info_other(const char *file, const char *format, enum cli_output output)
{
    struct fmt_open_opts oo = { .format = format, .ctx = cli_ctx() };
    struct prop_printer pp = { output };
    struct fmt_image *img;
    struct stat st;
    uint64_t disk = 0;
    const char *b;
    int ret;

    ret = fmt_open(file, &oo, &img);
    if (ret < 0) {
        cli_err_fmt(ret, "%s", file);
        return EXIT_ERR;
    }
    if (stat(file, &st) == 0)
        disk = (uint64_t)st.st_blocks * 512;
    b = fmt_backing_name(img);
    if (output == OUTPUT_JSON) {
        fputs("{\n    \"filename\": ", stdout);
        json_put_string(stdout, file);
        fputs(",\n    \"format\": ", stdout);
        json_put_string(stdout, fmt_format(img));
        printf(",\n    \"virtual-size\": %llu,\n    \"actual-size\": %llu",
               (unsigned long long)fmt_size(img), (unsigned long long)disk);
        if (b) {
            fputs(",\n    \"backing-filename\": ", stdout);
            json_put_string(stdout, b);
        }
        if (fmt_backing_format(img)) {
            fputs(",\n    \"backing-filename-format\": ", stdout);
            json_put_string(stdout, fmt_backing_format(img));
        }
        fmt_info(img, print_prop, &pp);
        fputs("\n}\n", stdout);
    } else {
        printf("image: %s\n", file);
        printf("file format: %s\n", fmt_format(img));
        print_bytes("virtual size", fmt_size(img));
        print_bytes("disk size", disk);
        if (b)
            printf("backing file: %s (named in the image; vdisk opens it only "
                   "when given --backing)\n", b);
        if (fmt_backing_format(img))
            printf("backing file format: %s\n", fmt_backing_format(img));
        fmt_info(img, print_prop, &pp);
    }
    fmt_close(img);
    return EXIT_OK;
}

int img_info(int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    const char *format = NULL;
    struct info_view view = { 0 };
    struct info_layer top_only;
    struct vd_open_opts oo = { 0 };
    struct vd_chain *chain = NULL;
    struct vd_ctx *ctx;
    char chain_err[512];
    int c, ret, rc = EXIT_ERR;

    while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (img_parse_format(optarg, &format) < 0)
                return cli_usage_error(CMD, "invalid format '%s' (raw, vdk, qcow2 or "
                                       "vmdk)", optarg);
            break;
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
    view.file = argv[optind];

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    if (!format) {
        const char *probed;

        ret = fmt_probe(view.file, &probed);
        if (ret < 0) {
            cli_err_fmt(ret, "%s", view.file);
            return EXIT_ERR;
        }
        /* Opened again as probed, not as named: a probed image keeps to
         * the stricter rules (a VMDK descriptor names only files of its
         * own folder). */
        if (strcmp(probed, "vdk") != 0)
            return info_other(view.file, NULL, output);
    } else if (strcmp(format, "vdk") != 0) {
        return info_other(view.file, format, output);
    }
    ret = vd_chain_open(ctx, view.file, &oo, &chain);
    if (ret < 0) {
        int ret2;

        chain = NULL;
        snprintf(chain_err, sizeof(chain_err), "%s",
                 cli_msg_after(view.file, cli_lib_msg(ret)));
        /* Is it the top layer itself, or something below it? */
        ret2 = vd_layer_info(view.file, &top_only.info);
        if (ret2 < 0 || vd_uuid_is_null(&top_only.info.parent_uuid)) {
            cli_err("%s: %s", view.file, chain_err);
            return EXIT_ERR;
        }
        top_only.path = view.file;
        view.n = 1;
        view.layers = &top_only;
        view.chain_error = chain_err;
    } else {
        view.n = vd_chain_depth(chain);
        view.layers = calloc(view.n, sizeof(*view.layers));
        if (!view.layers) {
            cli_err_errno(ENOMEM, "%s", view.file);
            goto out;
        }
        for (unsigned d = 1; d <= view.n; d++) {
            struct info_layer *l = &view.layers[d - 1];

            l->path = vd_chain_layer_path(chain, d);
            ret = vd_chain_layer_info(chain, d, &l->info);
            if (ret < 0 || !l->path) {
                cli_err_lib(ret < 0 ? ret : -EINVAL, "%s: layer at depth %u",
                            view.file, d);
                goto out;
            }
        }
    }

    if (output == OUTPUT_JSON)
        print_json(&view);
    else
        print_human(&view);

    if (view.chain_error) {
        fflush(stdout);
        cli_err("%s: cannot open the parent chain: %s", view.file,
                view.chain_error);
        rc = EXIT_ERR;
    } else {
        rc = EXIT_OK;
    }

out:
    if (view.layers != &top_only)
        free(view.layers);
    if (chain) {
        ret = vd_chain_close(chain);
        if (ret < 0) {
            cli_err_lib(ret, "%s: close", view.file);
            rc = EXIT_ERR;
        }
    }
    return rc;
}
