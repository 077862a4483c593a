/*
 * main.c - the vdisk command: global options and dispatch to command
 * groups.  Only "img" (qemu-img style commands on bare layer files) exists
 * so far; store-level commands come with the catalog.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fputs("Usage: vdisk [--help] [--version] COMMAND [ARGS...]\n"
          "\n"
          "Commands:\n"
          "  img      work on bare layer files, qemu-img style\n"
          "           (create, info, check, map, convert, compare)\n"
          "\n"
          "Options:\n"
          "  -h, --help      show this help and exit\n"
          "  -V, --version   show the version and exit\n"
          "\n"
          "Run 'vdisk img --help' for the img commands.\n", f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c, ret;

    /* "+": stop at the command name, whose options are its own. */
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("vdisk %s\n", VDISK_VERSION);
            return EXIT_OK;
        default:
            fputs("Try 'vdisk --help' for more information.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        cli_err("missing command");
        fputs("Try 'vdisk --help' for more information.\n", stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[optind], "img") == 0) {
        ret = cmd_img(argc - optind, argv + optind);
    } else {
        cli_err("unknown command '%s'", argv[optind]);
        fputs("Try 'vdisk --help' for more information.\n", stderr);
        ret = EXIT_USAGE;
    }
    cli_ctx_free();
    if ((fflush(stdout) != 0 || ferror(stdout)) && ret == EXIT_OK) {
        cli_err_errno(errno, "write error on standard output");
        ret = EXIT_ERR;
    }
    return ret;
}
