/*
 * pool.c - "vdisk pool": desktop pools of linked clones (vdisk.h, "desktop
 * pools"), handed out by vdiskd under the export names pool/POOL and
 * pool/POOL/USER.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define GROUP "pool"

static void create_usage(FILE *f)
{
    fputs("Usage: vdisk pool create POOL --template TPL[@VERSION] --size N\n"
          "                         [--spares K] [--mode ephemeral|persistent]\n"
          "\n"
          "Creates the pool POOL of linked clones of template TPL (its newest\n"
          "version, or VERSION) and makes its spares.  vdiskd then serves it:\n"
          "  ephemeral (default)  export pool/POOL: every connection gets a fresh\n"
          "                       clone, removed when the connection ends\n"
          "  persistent           export pool/POOL/USER: each user gets a clone of\n"
          "                       their own, kept from one session to the next\n"
          "\n"
          "      --size N      at most N clones (sessions and spares together)\n"
          "      --spares K    clones kept ready for the next sessions (default\n"
          "                    the smaller of 2 and N); vdiskd makes new ones as\n"
          "                    sessions take them\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int pool_create(int argc, char **argv)
{
    static const struct option opts[] = {
        { "template", required_argument, NULL, 't' },
        { "size", required_argument, NULL, 'n' },
        { "spares", required_argument, NULL, 's' },
        { "mode", required_argument, NULL, 'm' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *tpl_arg = NULL;
    char tpl[VD_NAME_MAX + 1];
    uint32_t version = 0;
    unsigned long size = 0, spares = ~0ul;
    enum vd_pool_mode mode = VD_POOL_EPHEMERAL;
    char *end;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            tpl_arg = optarg;
            break;
        case 'n':
            size = strtoul(optarg, &end, 10);
            if (*end || !size || size > 100000)
                return cli_usage_error(GROUP " create", "invalid size '%s'", optarg);
            break;
        case 's':
            spares = strtoul(optarg, &end, 10);
            if (*end || *optarg == '-' || spares > 100000)
                return cli_usage_error(GROUP " create", "invalid spares '%s'", optarg);
            break;
        case 'm':
            if (strcmp(optarg, "ephemeral") == 0)
                mode = VD_POOL_EPHEMERAL;
            else if (strcmp(optarg, "persistent") == 0)
                mode = VD_POOL_PERSISTENT;
            else
                return cli_usage_error(GROUP " create", "invalid mode '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            create_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP " create");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error(GROUP " create", optind < argc ? "too many arguments"
                                                              : "missing POOL");
    if (!tpl_arg || !size)
        return cli_usage_error(GROUP " create", "--template and --size are needed");
    if (cli_parse_tpl_version(tpl_arg, tpl, sizeof(tpl), &version) < 0)
        return cli_usage_error(GROUP " create", "invalid template '%s'", tpl_arg);
    if (spares == ~0ul)
        spares = size < 2 ? size : 2;
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    int r = vd_pool_create(st, argv[optind], tpl, version, (unsigned)size, (unsigned)spares,
                           mode);
    if (r < 0)
        cli_err_store(r, argv[optind], "pool create");
    else
        printf("Created pool '%s' (%s, up to %lu clones of %s, %lu spare(s) ready)\n",
               argv[optind], mode == VD_POOL_EPHEMERAL ? "ephemeral" : "persistent", size,
               tpl, spares);
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static const char *mode_name(enum vd_pool_mode m)
{
    return m == VD_POOL_PERSISTENT ? "persistent" : "ephemeral";
}

static const char *state_name(enum vd_pool_state s)
{
    return s == VD_POOL_SESSION ? "session" : s == VD_POOL_IDLE ? "idle" : "spare";
}

static json_t *info_json(const struct vd_pool_info *p)
{
    return json_pack("{s:s,s:s,s:i,s:i,s:i,s:s,s:i,s:i,s:i,s:I}", "name", p->name, "template",
                     p->template_name, "version", (int)p->version, "size", (int)p->size,
                     "spares", (int)p->spares, "mode", mode_name(p->mode), "clones",
                     (int)p->clones, "sessions", (int)p->sessions, "ready", (int)p->ready,
                     "create-time", (json_int_t)p->create_time);
}

static void put_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s ? s : "null");
    free(s);
    json_decref(j);
}

static void list_usage(FILE *f)
{
    fputs("Usage: vdisk pool list [--output human|json]\n"
          "\n"
          "Lists the pools: template and version, mode, size, spares asked for\n"
          "and ready, clones in a session.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int pool_list(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    int ret = cli_common_opts(argc, argv, GROUP " list", list_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind < argc)
        return cli_usage_error(GROUP " list", "too many arguments");
    struct vd_store *st;
    struct vd_pool_info *p = NULL;
    size_t n = 0;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    int r = vd_pool_list(st, &p, &n);
    if (r < 0) {
        cli_err_lib(r, "cannot list the pools");
    } else if (output == OUTPUT_JSON) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, info_json(&p[i]));
        put_json(a);
    } else if (n == 0) {
        printf("No pools.\n");
    } else {
        printf("%-16s %-20s %-10s %5s %7s %6s %8s\n", "NAME", "TEMPLATE", "MODE", "SIZE",
               "SPARES", "READY", "SESSIONS");
        for (size_t i = 0; i < n; i++) {
            char t[VD_NAME_MAX + 16];
            snprintf(t, sizeof(t), "%s@%u", p[i].template_name, (unsigned)p[i].version);
            printf("%-16s %-20s %-10s %5u %7u %6u %8u\n", p[i].name, t, mode_name(p[i].mode),
                   p[i].size, p[i].spares, p[i].ready, p[i].sessions);
        }
    }
    free(p);
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static void status_usage(FILE *f)
{
    fputs("Usage: vdisk pool status [--output human|json] POOL\n"
          "\n"
          "Shows the pool POOL and each of its clones: its state (spare, in a\n"
          "session, or idle: a persistent user's between sessions), the user it\n"
          "belongs to, the client holding it, since when, and the template\n"
          "version it was made from.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int pool_status(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    int ret = cli_common_opts(argc, argv, GROUP " status", status_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind + 1 != argc)
        return cli_usage_error(GROUP " status", optind < argc ? "too many arguments"
                                                              : "missing POOL");
    struct vd_store *st;
    struct vd_pool_info p;
    struct vd_pool_clone *c = NULL;
    size_t n = 0;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    int r = vd_pool_info(st, argv[optind], &p, &c, &n);
    if (r < 0) {
        cli_err_store(r, argv[optind], "pool status");
    } else if (output == OUTPUT_JSON) {
        json_t *o = info_json(&p), *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_pack("{s:s,s:s,s:i,s:I}", "volume", c[i].volume, "state",
                                  state_name(c[i].state), "version", (int)c[i].version,
                                  "since", (json_int_t)c[i].since);
            if (c[i].user[0])
                json_object_set_new(e, "user", json_string(c[i].user));
            if (c[i].holder[0])
                json_object_set_new(e, "holder", json_string(c[i].holder));
            json_array_append_new(a, e);
        }
        json_object_set_new(o, "clone-list", a);
        put_json(o);
    } else {
        char when[64];
        printf("pool: %s (%s)\ntemplate: %s version %u\nsize: %u clones, %u spare(s) asked, "
               "%u ready, %u in a session\n", p.name, mode_name(p.mode), p.template_name,
               (unsigned)p.version, p.size, p.spares, p.ready, p.sessions);
        if (n)
            printf("\n%-24s %-8s %-4s %-16s %-26s %s\n", "CLONE", "STATE", "VER", "USER",
                   "SINCE", "HELD BY");
        for (size_t i = 0; i < n; i++)
            printf("%-24s %-8s %-4u %-16s %-26s %s\n", c[i].volume, state_name(c[i].state),
                   (unsigned)c[i].version, c[i].user[0] ? c[i].user : "-",
                   cli_iso_time(c[i].since, when, sizeof(when)),
                   c[i].holder[0] ? c[i].holder : "-");
    }
    free(c);
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static void rm_usage(FILE *f)
{
    fputs("Usage: vdisk pool rm POOL\n"
          "\n"
          "Removes the pool POOL and all its clones (persistent users' clones\n"
          "included).  Refused while a clone is in a session.\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int pool_rm(int argc, char **argv)
{
    int ret = cli_common_opts(argc, argv, GROUP " rm", rm_usage, NULL);
    if (ret >= 0)
        return ret;
    if (optind + 1 != argc)
        return cli_usage_error(GROUP " rm", optind < argc ? "too many arguments"
                                                          : "missing POOL");
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    int r = vd_pool_remove(st, argv[optind]);
    if (r < 0)
        cli_err_store(r, argv[optind], "pool rm");
    else
        printf("Removed pool '%s'\n", argv[optind]);
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static void recompose_usage(FILE *f)
{
    fputs("Usage: vdisk pool recompose POOL [--version V]\n"
          "\n"
          "New clones of POOL take version V of its template (default: the\n"
          "newest).  Spares of other versions are replaced; sessions running\n"
          "keep their clone until they end, and persistent users keep theirs.\n"
          "\n"
          "      --version V   the template version\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int pool_recompose(int argc, char **argv)
{
    static const struct option opts[] = {
        { "version", required_argument, NULL, 'V' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    unsigned long version = 0;
    char *end;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'V':
            version = strtoul(optarg + (optarg[0] == 'v'), &end, 10);
            if (*end || !version || version > UINT32_MAX)
                return cli_usage_error(GROUP " recompose", "invalid version '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            recompose_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP " recompose");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error(GROUP " recompose", optind < argc ? "too many arguments"
                                                                 : "missing POOL");
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    const char *name = argv[optind];
    int r = vd_pool_recompose(st, name, (uint32_t)version);
    unsigned made = 0, dropped = 0;
    if (r == 0)
        r = vd_pool_fill(st, name, &made, &dropped);
    struct vd_pool_info p;
    if (r == 0)
        r = vd_pool_info(st, name, &p, NULL, NULL);
    if (r < 0)
        cli_err_store(r, name, "pool recompose");
    else
        printf("Pool '%s' now makes clones of %s version %u (%u spare(s) replaced)\n", name,
               p.template_name, (unsigned)p.version, dropped);
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static const struct cli_cmd subcommands[] = {
    { "create", pool_create,
      "create POOL --template TPL[@V] --size N [--spares K] [--mode ephemeral|persistent]" },
    { "list", pool_list, "list [--output human|json]" },
    { "status", pool_status, "status [--output human|json] POOL" },
    { "rm", pool_rm, "rm POOL" },
    { "recompose", pool_recompose, "recompose POOL [--version V]" },
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
    fputs("Usage: vdisk pool [--help] SUBCOMMAND [ARGS...]\n"
          "\n"
          "Desktop pools: linked clones of a template that vdiskd hands out, one\n"
          "per session (export pool/POOL) or one per user (pool/POOL/USER):\n", f);
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  vdisk pool %s\n", subcommands[i].synopsis);
    fputs("\n"
          "Every subcommand takes --store DIR.  Run 'vdisk pool SUBCOMMAND --help'\n"
          "for details.\n", f);
}

int cmd_pool(int argc, char **argv)
{
    return cli_group(GROUP, usage, subcommands, N_SUBCOMMANDS, argc, argv);
}
