/*
 * dispatch.c - running one command of a table (the top level, or a group
 * such as "snapshot"): getopt is reset and argv[0] becomes the command's
 * full name, which getopt puts in front of its messages.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_dispatch(const char *group, const struct cli_cmd *cmds, size_t n,
                 int argc, char **argv)
{
    /* One command runs per process: a static name is enough. */
    static char prog[96];

    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[0], cmds[i].name) != 0)
            continue;
        snprintf(prog, sizeof(prog), "vdisk %s%s%s", group, *group ? " " : "",
                 cmds[i].name);
        argv[0] = prog;
        optind = 0;          /* glibc: reinitialise getopt for this argv */
        return cmds[i].fn(argc, argv);
    }
    if (*group)
        return cli_usage_error(group, "unknown subcommand '%s'", argv[0]);
    cli_err("unknown command '%s'", argv[0]);
    fputs("Try 'vdisk --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

int cli_group(const char *group, void (*usage)(FILE *), const struct cli_cmd *cmds,
              size_t n, int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(group);
        }
    }
    if (optind >= argc)
        return cli_usage_error(group, "missing subcommand");
    return cli_dispatch(group, cmds, n, argc - optind, argv + optind);
}
