/*
 * access.c - "vdisk export allow|deny|rules": who may open a volume, a
 * template or a pool over NBD (vdisk.h, "access rules"; vdiskd reads the
 * rules at every connection, so a change applies to the next one).
 *
 * "vdisk export" is also the image export command (import-export.c):
 * `vdisk export VOL FILE`.  The words allow, deny and rules right after
 * "export" select these subcommands; a volume that has one of those names
 * is exported with an option or "--" first (`vdisk export -- rules
 * out.raw`), which the errors below point out when it matters.
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define GROUP "export"

static const char *access_word(enum vd_access a)
{
    return a == VD_ACCESS_READ_ONLY ? "read-only" : "read-write";
}

/* After a failure on object: when the subcommand's own word is a volume's
 * name, the user may have meant to export that volume to a file. */
static void hint_export(struct vd_store *st, const char *word)
{
    struct vd_volume_info vi;
    if (vd_volume_info(st, word, &vi) == 0)
        fprintf(stderr, "vdisk: to export the volume '%s' to a file: vdisk export -- %s FILE\n",
                word, word);
}

static void allow_usage(FILE *f)
{
    fputs("Usage: vdisk export allow [--read-only] NAME IDENTITY\n"
          "\n"
          "Lets IDENTITY open NAME over NBD (vdiskd): a volume (and its snapshots\n"
          "NAME@SNAP), a template (and its versions NAME@N) or a pool (pool/POOL).\n"
          "A name without rules is open to every client that can reach vdiskd;\n"
          "once it has one, only the identities its rules name may see (in a\n"
          "listing) or open it.  A client that several rules name gets the most\n"
          "they give.  A rule for IDENTITY that exists is changed.  New\n"
          "connections follow the rules at once; open ones keep what they got.\n"
          "\n"
          "IDENTITY is one of:\n"
          "  unix:uid=N       a client on a unix socket running as uid N\n"
          "  unix:gid=N       ... whose primary or supplementary groups include N\n"
          "  unix:user=NAME   ... running as user NAME (looked up at each connection)\n"
          "  x509:NAME        a TLS client certificate whose CN, or one of whose\n"
          "                   subjectAltNames, is NAME\n"
          "  psk:NAME         a TLS client using the pre-shared key of NAME\n"
          "  any              every client (with --read-only: everyone may read)\n"
          "\n"
          "      --read-only  IDENTITY may only read (writes get EPERM)\n"
          "      --store DIR  the store (default $VDISK_STORE)\n"
          "  -h, --help       show this help\n", f);
}

static int access_allow(int argc, char **argv)
{
    static const struct option opts[] = {
        { "read-only", no_argument, NULL, 'r' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum vd_access a = VD_ACCESS_READ_WRITE;
    char id[VD_IDENTITY_MAX + 1];
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            a = VD_ACCESS_READ_ONLY;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            allow_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP " allow");
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(GROUP " allow", argc - optind > 2 ? "too many arguments"
                               : argc - optind ? "missing IDENTITY" : "missing NAME and IDENTITY");
    const char *obj = argv[optind], *ident = argv[optind + 1];
    /* A bad identity is the user's typo: say so before opening anything. */
    int r = vd_identity_parse(ident, id);
    if (r < 0) {
        cli_err_lib(r, "export allow");
        return EXIT_ERR;
    }
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    r = vd_access_allow(st, obj, id, a);
    if (r < 0) {
        cli_err_store(r, obj, "export allow");
        if (r == -ENOENT || r == -EINVAL)   /* no such name, or a path */
            hint_export(st, "allow");
    } else {
        printf("%s may open '%s' %s\n", id, obj, access_word(a));
        if (strncmp(id, "unix:user=", 10) == 0 && !getpwnam(id + 10))
            fprintf(stderr, "vdisk: warning: there is no user '%s' on this host: the rule "
                    "names nobody here until there is one\n", id + 10);
    }
    vd_store_close(st);
    return r < 0 ? EXIT_ERR : EXIT_OK;
}

static void deny_usage(FILE *f)
{
    fputs("Usage: vdisk export deny NAME IDENTITY\n"
          "\n"
          "Removes IDENTITY's rule from NAME (a volume, a template or pool/POOL);\n"
          "an error if it has none.  New connections follow at once; open ones go\n"
          "on.  Careful: a NAME left without rules is open to every client that\n"
          "can reach vdiskd again (vdisk export allow --help).\n"
          "\n"
          "      --store DIR  the store (default $VDISK_STORE)\n"
          "  -h, --help       show this help\n", f);
}

static int access_deny(int argc, char **argv)
{
    int ret = cli_common_opts(argc, argv, GROUP " deny", deny_usage, NULL);
    if (ret >= 0)
        return ret;
    if (argc - optind != 2)
        return cli_usage_error(GROUP " deny", argc - optind > 2 ? "too many arguments"
                               : argc - optind ? "missing IDENTITY" : "missing NAME and IDENTITY");
    const char *obj = argv[optind], *ident = argv[optind + 1];
    char id[VD_IDENTITY_MAX + 1];
    int r = vd_identity_parse(ident, id);
    if (r < 0) {
        cli_err_lib(r, "export deny");
        return EXIT_ERR;
    }
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    if ((r = vd_access_deny(st, obj, id)) < 0) {
        cli_err_store(r, obj, "export deny");
        struct vd_access_rule *rules = NULL;
        size_t n = 0;
        char from[VD_NAME_MAX + 6];
        if (r == -ENOENT && vd_access_rules(st, obj, &rules, &n, from) == 0 && n &&
            strcmp(from, obj) != 0)
            fprintf(stderr, "vdisk: the rules of '%s' are its template's: vdisk export deny "
                    "%s %s\n", obj, from, id);
        else if (r == -ENOENT || r == -EINVAL)
            hint_export(st, "deny");
        free(rules);
        vd_store_close(st);
        return EXIT_ERR;
    }
    printf("%s may no longer open '%s'\n", id, obj);
    struct vd_access_rule *rules = NULL;
    size_t n = 0;
    char from[VD_NAME_MAX + 6];
    if (vd_access_rules(st, obj, &rules, &n, from) == 0 && n == 0)
        fprintf(stderr, "vdisk: warning: '%s' has no rules left: every client that can "
                "reach vdiskd may open it\n", obj);
    else if (n && strcmp(from, obj) != 0)
        fprintf(stderr, "vdisk: warning: '%s' has no rules of its own left: the rules of "
                "its template '%s' govern it\n", obj, from);
    free(rules);
    vd_store_close(st);
    return EXIT_OK;
}

static void rules_usage(FILE *f)
{
    fputs("Usage: vdisk export rules NAME [--output human|json]\n"
          "\n"
          "Shows who may open NAME (a volume, a template or pool/POOL) over NBD:\n"
          "its rules, oldest first.  No rules: every client that can reach vdiskd\n"
          "may.  A pool without rules of its own follows its template's.\n"
          "\n"
          "      --output FMT  human (default) or json: {\"name\", \"from\" (whose rules\n"
          "                    they are), \"restricted\", \"rules\": [{\"identity\",\n"
          "                    \"access\"}]}\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int access_rules(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    int ret = cli_common_opts(argc, argv, GROUP " rules", rules_usage, &output);
    if (ret >= 0)
        return ret;
    if (argc - optind != 1)
        return cli_usage_error(GROUP " rules", argc > optind ? "too many arguments"
                                                             : "missing NAME");
    const char *obj = argv[optind];
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    struct vd_access_rule *rules = NULL;
    size_t n = 0;
    char from[VD_NAME_MAX + 6];
    int r = vd_access_rules(st, obj, &rules, &n, from);
    if (r < 0) {
        cli_err_store(r, obj, "export rules");
        if (r == -ENOENT || r == -EINVAL)   /* no such name, or a path */
            hint_export(st, "rules");
        vd_store_close(st);
        return EXIT_ERR;
    }
    if (output == OUTPUT_JSON) {
        json_t *a = json_array(), *o;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, json_pack("{s:s,s:s}", "identity", rules[i].identity,
                                               "access", access_word(rules[i].access)));
        o = json_pack("{s:s,s:s,s:b,s:o}", "name", obj, "from", from, "restricted", n > 0,
                      "rules", a);
        char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        printf("%s\n", s ? s : "null");
        free(s);
        json_decref(o);
    } else if (n == 0) {
        printf("No rules: every client that can reach vdiskd may open '%s'.\n", obj);
    } else {
        if (strcmp(from, obj) != 0)
            printf("'%s' has no rules of its own: the rules of its template '%s' apply.\n",
                   obj, from);
        printf("%-40s %s\n", "IDENTITY", "ACCESS");
        for (size_t i = 0; i < n; i++)
            printf("%-40s %s\n", rules[i].identity, access_word(rules[i].access));
    }
    free(rules);
    vd_store_close(st);
    return EXIT_OK;
}

static const struct cli_cmd access_cmds[] = {
    { "allow", access_allow, "allow [--read-only] NAME IDENTITY" },
    { "deny", access_deny, "deny NAME IDENTITY" },
    { "rules", access_rules, "rules NAME [--output human|json]" },
};

int cmd_export(int argc, char **argv)
{
    for (size_t i = 0; argc > 1 && i < sizeof(access_cmds) / sizeof(access_cmds[0]); i++)
        if (strcmp(argv[1], access_cmds[i].name) == 0)
            return cli_dispatch(GROUP, access_cmds, sizeof(access_cmds) / sizeof(access_cmds[0]),
                                argc - 1, argv + 1);
    return vol_export(argc, argv);
}
