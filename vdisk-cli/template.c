/*
 * template.c - "vdisk template create|list|info|update|rm".
 *
 * A template is a locked, versioned chain that linked clones are made
 * from.  "create --import FILE" imports FILE into a temporary volume,
 * makes the template from it and removes the volume: the library makes
 * templates only from volumes, and the temporary volume is never left
 * behind, whatever fails.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define GROUP "template"

enum { OPT_FROM = 256, OPT_IMPORT };

/* ------------------------------------------------------------------ */
/* create and update                                                   */
/* ------------------------------------------------------------------ */

static void create_usage(FILE *f)
{
    fputs("Usage: vdisk template create TPL --from VOL\n"
          "       vdisk template create TPL --import FILE [-f FMT] [-p]\n"
          "                             [--backing F [--backing-format FMT]]\n"
          "                             [--block-size N] [--digest none|sha256]\n"
          "\n"
          "Makes the template TPL (version 1) from the present content of the\n"
          "volume VOL, which goes on as before, or from the image FILE.\n"
          "\n"
          "      --from VOL       the volume to make it from\n"
          "      --import FILE    the image to make it from\n"
          "  -f FMT               format of FILE: raw, vdk, qcow2 or vmdk (default:\n"
          "                       probed by its magic)\n"
          "      --backing F      the backing file FILE names (never opened unless\n"
          "                       given here); --backing-format FMT its format\n"
          "  -p, --progress       show the import's progress on a terminal\n"
          "      --block-size N   block size for FILE's data (default 64K)\n"
          "      --digest ALG     per-block digests: none (default) or sha256\n"
          "      --store DIR      the store (default $VDISK_STORE)\n"
          "  -h, --help           show this help\n", f);
}

static void update_usage(FILE *f)
{
    fputs("Usage: vdisk template update TPL --from VOL\n"
          "\n"
          "Adds a new version to the template TPL from the present content of\n"
          "the volume VOL.  New clones take the newest version; existing clones\n"
          "keep theirs.\n"
          "\n"
          "      --from VOL    the volume to make it from\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

/* What holds name: 0 nothing, 1 a volume, 2 a template (volumes and
 * templates share one namespace). */
static int name_taken(struct vd_store *st, const char *name)
{
    struct vd_volume_info vi;
    struct vd_template_info ti;
    struct vd_template_version *vers = NULL;
    size_t n = 0;

    if (vd_template_info(st, name, &ti, &vers, &n) == 0) {
        free(vers);
        return 2;
    }
    /* Any answer but "no such volume" keeps the name off limits. */
    if (vd_volume_info(st, name, &vi) != -ENOENT)
        return 1;
    return 0;
}

/* template create TPL --import FILE: through a temporary volume. */
static int create_imported(struct vd_store *st, const char *tpl, const char *file,
                           const struct img_in *in, const struct vd_create_opts *co,
                           bool progress)
{
    char tmp[VD_NAME_MAX + 1];
    int ret;

    /* Refuse early what would be refused after a long import. */
    if (!cli_name_valid(tpl)) {
        cli_err("invalid template name '%s': 1 to %d characters of "
                "[A-Za-z0-9._-], not starting with '.' or '-'", tpl, VD_NAME_MAX);
        return -EINVAL;
    }
    switch (name_taken(st, tpl)) {
    case 1:
        cli_err("a volume named '%s' already exists", tpl);
        return -EEXIST;
    case 2:
        cli_err("a template named '%s' already exists", tpl);
        return -EEXIST;
    default:
        break;
    }
    /* TPL-import-PID, shortened to fit, and not clashing with anything. */
    for (unsigned i = 0;; i++) {
        char suffix[40];
        int len;

        len = i ? snprintf(suffix, sizeof(suffix), "-import-%ld-%u", (long)getpid(), i)
                : snprintf(suffix, sizeof(suffix), "-import-%ld", (long)getpid());
        snprintf(tmp, sizeof(tmp), "%.*s%s", VD_NAME_MAX - len, tpl, suffix);
        if (!name_taken(st, tmp))
            break;
        if (i == 100) {
            cli_err("cannot find a free name for the temporary volume");
            return -EEXIST;
        }
    }

    ret = import_volume(st, file, in, tmp, co, progress);
    if (ret < 0)
        return ret;
    ret = vd_template_create(st, tpl, tmp);
    if (ret < 0)
        cli_err_store(ret, tpl, "cannot create template '%s'", tpl);
    {
        int r2 = vd_volume_remove(st, tmp);

        if (r2 < 0) {
            cli_err_store(r2, tmp, "cannot remove the temporary volume '%s'", tmp);
            if (ret == 0)
                ret = r2;
        }
    }
    return ret;
}

/* create and update share their options. */
static int create_or_update(int argc, char **argv, bool update)
{
    static const struct option opts[] = {
        { "from", required_argument, NULL, OPT_FROM },
        { "import", required_argument, NULL, OPT_IMPORT },
        { "progress", no_argument, NULL, 'p' },
        IMG_IN_OPTIONS,
        IMG_VDK_OPTIONS,
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *cmd = update ? GROUP " update" : GROUP " create";
    struct vd_create_opts co = { 0 };
    struct img_opts io = { 0 };
    const char *from = NULL, *file = NULL, *tpl;
    bool progress = false, import_opts = false;
    struct vd_store *st;
    int c, r, ret;

    while ((c = getopt_long(argc, argv, update ? "h" : "f:ph", opts, NULL)) != -1) {
        if (c != 'p' && c != 'h' && c != OPT_STORE && c != OPT_FROM &&
            c != OPT_IMPORT && c != '?') {
            if (update)
                return cli_usage_error(cmd, "update takes --from VOL only");
            r = img_opt(cmd, c, optarg, &io);
            if (r < 0)
                return EXIT_USAGE;
            if (r > 0) {
                import_opts = true;
                continue;
            }
        }
        switch (c) {
        case OPT_FROM:
            from = optarg;
            break;
        case OPT_IMPORT:
            if (update)
                return cli_usage_error(cmd, "--import: update takes --from VOL");
            file = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            (update ? update_usage : create_usage)(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(cmd);
        }
    }
    if (optind >= argc)
        return cli_usage_error(cmd, "missing TPL");
    if (optind + 1 < argc)
        return cli_usage_error(cmd, "too many arguments");
    if (!from && !file)
        return cli_usage_error(cmd, update ? "missing --from VOL"
                                           : "missing --from VOL or --import FILE");
    if (from && file)
        return cli_usage_error(cmd, "--from and --import exclude each other");
    if (import_opts && !file)
        return cli_usage_error(cmd, "-f, --backing, --block-size and --digest need "
                               "--import");
    if (img_opts_check(cmd, &io) < 0)
        return EXIT_USAGE;
    co.block_size = io.co.block_size;
    co.digest = (enum vd_digest)io.co.digest;
    tpl = argv[optind];

    if (cli_store_open(file ? VD_STORE_CREATE : 0, &st) < 0)
        return EXIT_ERR;
    if (file) {
        ret = create_imported(st, tpl, file, &io.in, &co, progress);
    } else {
        ret = update ? vd_template_update(st, tpl, from)
                     : vd_template_create(st, tpl, from);
        if (ret < 0)
            cli_err_store(ret, tpl, "cannot %s template '%s'",
                          update ? "update" : "create", tpl);
    }
    if (ret == 0) {
        struct vd_template_info ti;
        struct vd_template_version *vers = NULL;
        size_t n = 0;

        if (vd_template_info(st, tpl, &ti, &vers, &n) == 0)
            printf("%s template '%s', version %lu\n", update ? "Updated" : "Created",
                   tpl, (unsigned long)ti.latest);
        else
            printf("%s template '%s'\n", update ? "Updated" : "Created", tpl);
        free(vers);
    }
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

static int tpl_create(int argc, char **argv)
{
    return create_or_update(argc, argv, false);
}

static int tpl_update(int argc, char **argv)
{
    return create_or_update(argc, argv, true);
}

/* ------------------------------------------------------------------ */
/* rm                                                                  */
/* ------------------------------------------------------------------ */

static void rm_usage(FILE *f)
{
    fputs("Usage: vdisk template rm TPL\n"
          "\n"
          "Removes the template TPL with all its versions.  Refused while\n"
          "linked clones depend on it: remove or flatten them first.\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int tpl_rm(int argc, char **argv)
{
    struct vd_store *st;
    const char *tpl;
    int ret;

    ret = cli_common_opts(argc, argv, GROUP " rm", rm_usage, NULL);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error(GROUP " rm", "missing TPL");
    if (optind + 1 < argc)
        return cli_usage_error(GROUP " rm", "too many arguments");
    tpl = argv[optind];
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_template_remove(st, tpl);
    if (ret < 0)
        cli_err_store(ret, tpl, "cannot remove template '%s'", tpl);
    else
        printf("Removed template '%s'\n", tpl);
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* list and info                                                       */
/* ------------------------------------------------------------------ */

static void list_usage(FILE *f)
{
    fputs("Usage: vdisk template list [--output human|json]\n"
          "\n"
          "Lists the templates of the store: size of the newest version,\n"
          "number of versions kept, newest version, linked clones.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int tpl_list(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_template_info *tpls = NULL;
    struct vd_store *st;
    size_t n = 0, w = 4;
    char hs[32], when[64];
    int ret;

    ret = cli_common_opts(argc, argv, GROUP " list", list_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind < argc)
        return cli_usage_error(GROUP " list", "too many arguments");
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_template_list(st, &tpls, &n);
    if (ret < 0) {
        cli_err_lib(ret, "cannot list the templates");
        vd_store_close(st);
        return EXIT_ERR;
    }
    if (output == OUTPUT_JSON) {
        fputs("[", stdout);
        for (size_t i = 0; i < n; i++) {
            const struct vd_template_info *t = &tpls[i];

            fputs(i ? ",\n    { \"name\": " : "\n    { \"name\": ", stdout);
            json_put_string(stdout, t->name);
            printf(", \"virtual-size\": %llu, \"versions\": %lu, "
                   "\"latest-version\": %lu, \"clone-count\": %u, ",
                   (unsigned long long)t->size, (unsigned long)t->versions,
                   (unsigned long)t->latest, t->clones);
            json_put_times(stdout, t->create_time, " ");
            fputs(" }", stdout);
        }
        fputs(n ? "\n]\n" : "]\n", stdout);
    } else {
        for (size_t i = 0; i < n; i++)
            w = MAX(w, strlen(tpls[i].name));
        printf("%-*s  %12s  %8s  %6s  %6s  %s\n", (int)w, "NAME", "VIRTUAL SIZE",
               "VERSIONS", "LATEST", "CLONES", "CREATED");
        for (size_t i = 0; i < n; i++) {
            const struct vd_template_info *t = &tpls[i];

            printf("%-*s  %12s  %8lu  %6lu  %6u  %s\n", (int)w, t->name,
                   cli_human_size(t->size, hs, sizeof(hs)), (unsigned long)t->versions,
                   (unsigned long)t->latest, t->clones,
                   cli_iso_time(t->create_time, when, sizeof(when)));
        }
    }
    free(tpls);
    vd_store_close(st);
    return EXIT_OK;
}

static void info_usage(FILE *f)
{
    fputs("Usage: vdisk template info [--output human|json] TPL\n"
          "\n"
          "Shows the template TPL and each version it keeps: when it was made,\n"
          "its size, and the linked clones made from it.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

/* Prints the clones of version ver (names from the volume list). */
static void put_clones(const struct vd_volume_info *vols, size_t nv, const char *tpl,
                       uint32_t ver, bool json)
{
    size_t k = 0;

    for (size_t i = 0; i < nv; i++) {
        if (strcmp(vols[i].template_name, tpl) != 0 ||
            vols[i].template_version != ver)
            continue;
        if (json) {
            fputs(k ? ", " : "", stdout);
            json_put_string(stdout, vols[i].name);
        } else {
            printf("%s%s", k ? ", " : "", vols[i].name);
        }
        k++;
    }
}

static int tpl_info(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_template_info ti;
    struct vd_template_version *vers = NULL;
    struct vd_volume_info *vols = NULL;
    struct vd_store *st;
    const char *tpl;
    size_t n = 0, nv = 0;
    char hs[32], when[64], uuid[37];
    int ret, rc = EXIT_ERR;

    ret = cli_common_opts(argc, argv, GROUP " info", info_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error(GROUP " info", "missing TPL");
    if (optind + 1 < argc)
        return cli_usage_error(GROUP " info", "too many arguments");
    tpl = argv[optind];
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_template_info(st, tpl, &ti, &vers, &n);
    if (ret < 0) {
        cli_err_store(ret, tpl, "%s", tpl);
        goto out;
    }
    ret = vd_volume_list(st, &vols, &nv);
    if (ret < 0) {
        cli_err_lib(ret, "cannot list the volumes");
        goto out;
    }
    if (output == OUTPUT_JSON) {
        fputs("{\n    \"name\": ", stdout);
        json_put_string(stdout, ti.name);
        printf(",\n    \"virtual-size\": %llu,\n    \"latest-version\": %lu,\n"
               "    \"clone-count\": %u,\n    ", (unsigned long long)ti.size,
               (unsigned long)ti.latest, ti.clones);
        json_put_times(stdout, ti.create_time, "\n    ");
        fputs(",\n    \"versions\": [", stdout);
        for (size_t i = 0; i < n; i++) {
            vd_uuid_format(&vers[i].layer, uuid);
            printf("%s\n        { \"version\": %lu, ", i ? "," : "",
                   (unsigned long)vers[i].version);
            json_put_times(stdout, vers[i].create_time, " ");
            printf(", \"virtual-size\": %llu, \"clone-count\": %u, \"layer\": \"%s\", "
                   "\"clones\": [", (unsigned long long)vers[i].size, vers[i].clones,
                   uuid);
            put_clones(vols, nv, tpl, vers[i].version, true);
            fputs("] }", stdout);
        }
        fputs(n ? "\n    ]\n}\n" : "]\n}\n", stdout);
    } else {
        printf("template: %s\n", ti.name);
        printf("virtual size: %s (%llu bytes)\n", cli_human_size(ti.size, hs, sizeof(hs)),
               (unsigned long long)ti.size);
        printf("created: %s\n", cli_iso_time(ti.create_time, when, sizeof(when)));
        printf("latest version: %lu\n", (unsigned long)ti.latest);
        printf("linked clones: %u\n", ti.clones);
        printf("versions:\n");
        printf("  %7s  %-25s  %12s  %6s  %s\n", "VERSION", "CREATED", "VIRTUAL SIZE",
               "CLONES", "CLONE NAMES");
        for (size_t i = 0; i < n; i++) {
            printf("  %7lu  %-25s  %12s  %6u  ", (unsigned long)vers[i].version,
                   cli_iso_time(vers[i].create_time, when, sizeof(when)),
                   cli_human_size(vers[i].size, hs, sizeof(hs)), vers[i].clones);
            put_clones(vols, nv, tpl, vers[i].version, false);
            putchar('\n');
        }
    }
    rc = EXIT_OK;
out:
    free(vols);
    free(vers);
    vd_store_close(st);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the group                                                           */
/* ------------------------------------------------------------------ */

static const struct cli_cmd subcommands[] = {
    { "create", tpl_create, "create TPL --from VOL\n"
      "  vdisk template create TPL --import FILE [-f raw|vdk] [-p]" },
    { "list", tpl_list, "list [--output human|json]" },
    { "info", tpl_info, "info [--output human|json] TPL" },
    { "update", tpl_update, "update TPL --from VOL" },
    { "rm", tpl_rm, "rm TPL" },
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
    fputs("Usage: vdisk template [--help] SUBCOMMAND [ARGS...]\n"
          "\n"
          "Templates: locked, versioned images that linked clones are made from\n"
          "('vdisk clone TPL VOL'):\n", f);
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  vdisk template %s\n", subcommands[i].synopsis);
    fputs("\n"
          "Every subcommand takes --store DIR.  Run 'vdisk template SUBCOMMAND\n"
          "--help' for details.\n", f);
}

int cmd_template(int argc, char **argv)
{
    return cli_group(GROUP, usage, subcommands, N_SUBCOMMANDS, argc, argv);
}
