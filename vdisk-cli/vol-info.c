/*
 * vol-info.c - "vdisk list" and "vdisk info": the volumes of the store,
 * and one volume (or template) in detail.
 *
 * "info" takes a template's name too, since volumes and templates share
 * one namespace: a user who sees a name in a clone's "template:" line can
 * ask about it with the same command.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void print_bytes(const char *label, uint64_t n)
{
    char hs[32];

    printf("%s: %s (%llu bytes)\n", label, cli_human_size(n, hs, sizeof(hs)),
           (unsigned long long)n);
}

/* ------------------------------------------------------------------ */
/* list                                                                */
/* ------------------------------------------------------------------ */

static void list_usage(FILE *f)
{
    fputs("Usage: vdisk list [--output human|json]\n"
          "\n"
          "Lists the volumes of the store: virtual size, space allocated by\n"
          "the layers only the volume uses, chain depth, snapshots and the\n"
          "template of a linked clone.  'vdisk template list' lists templates.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

/* The fields of one volume in a JSON object, without braces. */
static void json_volume_fields(const struct vd_volume_info *v, const char *sep)
{
    char uuid[37];

    fputs("\"name\": ", stdout);
    json_put_string(stdout, v->name);
    printf(",%s\"virtual-size\": %llu,%s\"allocated-bytes\": %llu,"
           "%s\"block-size\": %lu,%s\"digest\": \"%s\",%s\"chain-depth\": %u,"
           "%s\"snapshot-count\": %u,%s\"template\": ", sep,
           (unsigned long long)v->size, sep, (unsigned long long)v->allocated, sep,
           (unsigned long)v->block_size, sep, cli_digest_name(v->digest), sep,
           v->depth, sep, v->snapshots, sep);
    if (v->template_name[0]) {
        json_put_string(stdout, v->template_name);
        printf(",%s\"template-version\": %lu", sep,
               (unsigned long)v->template_version);
    } else {
        printf("null,%s\"template-version\": null", sep);
    }
    vd_uuid_format(&v->top, uuid);
    printf(",%s\"top-layer\": \"%s\",%s", sep, uuid, sep);
    json_put_times(stdout, v->create_time, sep);
    if (v->writer_pid)
        printf(",%s\"writer-pid\": %d", sep, v->writer_pid);
    else
        printf(",%s\"writer-pid\": null", sep);
}

int vol_list(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_volume_info *vols = NULL;
    struct vd_store *st;
    size_t n = 0, w = 4;
    int ret;

    ret = cli_common_opts(argc, argv, "list", list_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind < argc)
        return cli_usage_error("list", "too many arguments");

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_volume_list(st, &vols, &n);
    if (ret < 0) {
        cli_err_lib(ret, "cannot list the volumes");
        vd_store_close(st);
        return EXIT_ERR;
    }

    if (output == OUTPUT_JSON) {
        fputs("[", stdout);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n    { " : "\n    { ", stdout);
            json_volume_fields(&vols[i], " ");
            fputs(" }", stdout);
        }
        fputs(n ? "\n]\n" : "]\n", stdout);
    } else {
        for (size_t i = 0; i < n; i++)
            w = MAX(w, strlen(vols[i].name));
        printf("%-*s  %12s  %12s  %5s  %9s  %s\n", (int)w, "NAME", "VIRTUAL SIZE",
               "ALLOCATED", "DEPTH", "SNAPSHOTS", "TEMPLATE");
        for (size_t i = 0; i < n; i++) {
            const struct vd_volume_info *v = &vols[i];
            char hs[32], ha[32];

            printf("%-*s  %12s  %12s  %5u  %9u  ", (int)w, v->name,
                   cli_human_size(v->size, hs, sizeof(hs)),
                   cli_human_size(v->allocated, ha, sizeof(ha)), v->depth,
                   v->snapshots);
            if (v->template_name[0])
                printf("%s@%lu\n", v->template_name,
                       (unsigned long)v->template_version);
            else
                puts("-");
        }
    }
    free(vols);
    vd_store_close(st);
    return EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* info                                                                */
/* ------------------------------------------------------------------ */

static void info_usage(FILE *f)
{
    fputs("Usage: vdisk info [--output human|json] NAME\n"
          "\n"
          "Shows the volume NAME: virtual size, allocated space, block size,\n"
          "digest, depth of its layer chain, its snapshots, the template and\n"
          "version of a linked clone, and the process writing to it if any.\n"
          "For a template: its versions and its linked clones.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

/* One layer of a volume's chain, for info. */
struct chain_layer {
    unsigned depth;
    char uuid[37];
    uint64_t allocated;
    const char *snapshot;      /* the snapshot naming it, or NULL */
};

/* The volume's chain from the top down; *out is malloc'ed. */
static int read_chain(struct vd_store *st, const char *name,
                      const struct vd_snapshot_info *snaps, size_t ns,
                      struct chain_layer **out, unsigned *n)
{
    struct vd_ctx *ctx = cli_ctx();
    struct vd_chain *c = NULL;
    *out = NULL;
    *n = 0;
    if (!ctx)
        return -ENOMEM;
    int ret = vd_store_open_chain(st, ctx, name, VD_OPEN_BUFFERED, &c);
    if (ret < 0)
        return ret;
    unsigned d = vd_chain_depth(c);
    struct chain_layer *a = calloc(d, sizeof(*a));
    if (!a) {
        vd_chain_close(c);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < d; i++) {
        struct vd_layer_info li;
        a[i].depth = i + 1;
        if (vd_chain_layer_info(c, i + 1, &li) == 0) {
            vd_uuid_format(&li.uuid, a[i].uuid);
            a[i].allocated = li.allocated;
            for (size_t k = 0; k < ns; k++)
                if (memcmp(snaps[k].layer.b, li.uuid.b, 16) == 0)
                    a[i].snapshot = snaps[k].name;
        }
    }
    vd_chain_close(c);
    *out = a;
    *n = d;
    return 0;
}

static void print_volume(const struct vd_volume_info *v,
                         const struct vd_snapshot_info *snaps, size_t ns)
{
    char uuid[37], when[64];

    printf("volume: %s\n", v->name);
    print_bytes("virtual size", v->size);
    print_bytes("allocated", v->allocated);
    printf("block size: %lu\n", (unsigned long)v->block_size);
    printf("digest: %s\n", cli_digest_name(v->digest));
    printf("chain depth: %u\n", v->depth);
    printf("snapshots: %u", v->snapshots);
    for (size_t i = 0; i < ns; i++)
        printf("%s%s", i ? ", " : " (", snaps[i].name);
    puts(ns ? ")" : "");
    if (v->template_name[0])
        printf("template: %s, version %lu\n", v->template_name,
               (unsigned long)v->template_version);
    printf("created: %s\n", cli_iso_time(v->create_time, when, sizeof(when)));
    vd_uuid_format(&v->top, uuid);
    printf("top layer: %s\n", uuid);
    if (v->writer_pid)
        printf("open for writing by: pid %d\n", v->writer_pid);
}

static void json_volume(const struct vd_volume_info *v,
                        const struct vd_snapshot_info *snaps, size_t ns,
                        const struct chain_layer *chain, unsigned nc)
{
    fputs("{\n    \"type\": \"volume\",\n    ", stdout);
    json_volume_fields(v, "\n    ");
    fputs(",\n    \"snapshots\": [", stdout);
    for (size_t i = 0; i < ns; i++) {
        if (i)
            fputs(", ", stdout);
        json_put_string(stdout, snaps[i].name);
    }
    fputs("],\n    \"chain\": [", stdout);
    for (unsigned i = 0; i < nc; i++) {
        printf("%s\n        {\"depth\": %u, \"layer\": \"%s\", \"allocated\": %llu, "
               "\"snapshot\": ", i ? "," : "", chain[i].depth, chain[i].uuid,
               (unsigned long long)chain[i].allocated);
        if (chain[i].snapshot)
            json_put_string(stdout, chain[i].snapshot);
        else
            fputs("null", stdout);
        fputs("}", stdout);
    }
    fputs(nc ? "\n    ]\n}\n" : "]\n}\n", stdout);
}

static int info_volume(struct vd_store *st, const struct vd_volume_info *v,
                       enum cli_output output)
{
    struct vd_snapshot_info *snaps = NULL;
    size_t ns = 0;
    int ret;

    ret = vd_snapshot_list(st, v->name, &snaps, &ns);
    if (ret < 0) {
        cli_err_store(ret, v->name, "%s: cannot list the snapshots", v->name);
        return EXIT_ERR;
    }
    struct chain_layer *chain = NULL;
    unsigned nc = 0;
    ret = read_chain(st, v->name, snaps, ns, &chain, &nc);
    if (ret < 0) {
        cli_err_store(ret, v->name, "%s: cannot open its chain", v->name);
        free(snaps);
        return EXIT_ERR;
    }
    if (output == OUTPUT_JSON) {
        json_volume(v, snaps, ns, chain, nc);
    } else {
        print_volume(v, snaps, ns);
        puts("chain (depth, layer, data it holds, snapshot):");
        for (unsigned i = 0; i < nc; i++) {
            char hs[32];
            printf("  %2u  %s  %10s%s%s\n", chain[i].depth, chain[i].uuid,
                   cli_human_size(chain[i].allocated, hs, sizeof(hs)),
                   chain[i].snapshot ? "  " : "", chain[i].snapshot ? chain[i].snapshot : "");
        }
    }
    free(chain);
    free(snaps);
    return EXIT_OK;
}

/* The linked clones of template tpl (of every version), from the list of
 * volumes. */
static int clones_of(struct vd_store *st, const char *tpl,
                     struct vd_volume_info **out, size_t *n)
{
    struct vd_volume_info *vols = NULL;
    size_t nv = 0, k = 0;
    int ret;

    ret = vd_volume_list(st, &vols, &nv);
    if (ret < 0) {
        cli_err_lib(ret, "cannot list the volumes");
        return ret;
    }
    for (size_t i = 0; i < nv; i++)
        if (strcmp(vols[i].template_name, tpl) == 0) {
            if (k != i)
                vols[k] = vols[i];
            k++;
        }
    *out = vols;
    *n = k;
    return 0;
}

static int info_template(struct vd_store *st, const char *name,
                         enum cli_output output)
{
    struct vd_template_info ti;
    struct vd_template_version *vers = NULL;
    struct vd_volume_info *clones = NULL;
    size_t nv = 0, nc = 0;
    char when[64];
    int ret;

    ret = vd_template_info(st, name, &ti, &vers, &nv);
    if (ret < 0) {
        cli_err_store(ret, name, "%s", name);
        return EXIT_ERR;
    }
    if (clones_of(st, name, &clones, &nc) < 0) {
        free(vers);
        return EXIT_ERR;
    }
    if (output == OUTPUT_JSON) {
        fputs("{\n    \"type\": \"template\",\n    \"name\": ", stdout);
        json_put_string(stdout, ti.name);
        printf(",\n    \"virtual-size\": %llu,\n    \"versions\": %lu,\n"
               "    \"latest-version\": %lu,\n    ",
               (unsigned long long)ti.size, (unsigned long)ti.versions,
               (unsigned long)ti.latest);
        json_put_times(stdout, ti.create_time, "\n    ");
        fputs(",\n    \"clones\": [", stdout);
        for (size_t i = 0; i < nc; i++) {
            fputs(i ? ", " : "", stdout);
            json_put_string(stdout, clones[i].name);
        }
        fputs("]\n}\n", stdout);
    } else {
        printf("template: %s\n", ti.name);
        print_bytes("virtual size", ti.size);
        printf("versions: %lu (latest %lu)\n", (unsigned long)ti.versions,
               (unsigned long)ti.latest);
        printf("created: %s\n", cli_iso_time(ti.create_time, when, sizeof(when)));
        printf("clones: %zu", nc);
        for (size_t i = 0; i < nc; i++)
            printf("%s%s@%lu", i ? ", " : " (", clones[i].name,
                   (unsigned long)clones[i].template_version);
        puts(nc ? ")" : "");
        printf("(see 'vdisk template info %s' for the versions)\n", ti.name);
    }
    free(clones);
    free(vers);
    return EXIT_OK;
}

int vol_info(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_volume_info vi;
    struct vd_template_info ti;
    struct vd_template_version *vers = NULL;
    struct vd_store *st;
    const char *name;
    char *msg;
    size_t nv;
    int ret, rc;

    ret = cli_common_opts(argc, argv, "info", info_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error("info", "missing NAME");
    if (optind + 1 < argc)
        return cli_usage_error("info", "too many arguments");
    name = argv[optind];

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_volume_info(st, name, &vi);
    if (ret == 0) {
        rc = info_volume(st, &vi, output);
    } else if (ret == -ENOENT) {
        /* Not a volume: a template?  Else the volume's message. */
        msg = cli_lib_msg_dup(ret);
        if (vd_template_info(st, name, &ti, &vers, &nv) == 0) {
            free(vers);
            rc = info_template(st, name, output);
        } else {
            if (msg && strstr(msg, name))
                cli_err("%s", msg);
            else
                cli_err("%s: %s", name, msg ? msg : "no such volume or template");
            rc = EXIT_ERR;
        }
        free(msg);
    } else {
        cli_err_store(ret, name, "%s", name);
        rc = EXIT_ERR;
    }
    vd_store_close(st);
    return rc;
}
