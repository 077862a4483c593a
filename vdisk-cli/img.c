/*
 * img.c - the "vdisk img" command group: dispatch to its subcommands.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *synopsis;
} subcommands[] = {
    { "create", img_create,
      "create [-b PARENT] [--block-size N] [--digest none|sha256] FILE [SIZE]" },
    { "info", img_info, "info [--output human|json] FILE" },
    { "check", img_check,
      "check [--repair] [--verify] [--output human|json] FILE" },
    { "map", img_map, "map [--output human|json] FILE" },
    { "convert", img_convert,
      "convert [-f raw|vdk] -O raw|vdk [-p] [--block-size N]\n"
      "                 [--digest none|sha256] IN OUT" },
    { "compare", img_compare, "compare [-f raw|vdk] [-F raw|vdk] [-p] A B" },
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
    fputs("Usage: vdisk img [--help] SUBCOMMAND [ARGS...]\n"
          "\n"
          "Subcommands on bare layer (vdk) and raw image files:\n", f);
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  vdisk img %s\n", subcommands[i].synopsis);
    fputs("\n"
          "SIZE and N take the suffixes K, M, G, T (powers of 1024), optionally\n"
          "followed by B (\"64K\", \"10G\", \"1GiB\").\n"
          "\n"
          "Exit status: 0 success, 1 error, 2 usage error, except:\n"
          "  check    0 clean, 1 error (usage errors too), 2 corruption,\n"
          "           3 leaked space only\n"
          "  compare  0 identical, 1 different, 2 error (usage errors too)\n"
          "\n"
          "Run 'vdisk img SUBCOMMAND --help' for details.\n", f);
}

int cmd_img(int argc, char **argv)
{
    static const struct option opts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 0;      /* glibc: reinitialise getopt for this argv */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            fputs("Try 'vdisk img --help' for more information.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return cli_usage_error("img", "missing subcommand");
    for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
        if (strcmp(argv[optind], subcommands[i].name) == 0) {
            static char prog[64];
            char **sub_argv = argv + optind;
            int sub_argc = argc - optind;

            /* getopt names the program by argv[0] in its messages. */
            snprintf(prog, sizeof(prog), "vdisk img %s", subcommands[i].name);
            sub_argv[0] = prog;
            optind = 0;
            return subcommands[i].fn(sub_argc, sub_argv);
        }
    }
    return cli_usage_error("img", "unknown subcommand '%s'", argv[optind]);
}
