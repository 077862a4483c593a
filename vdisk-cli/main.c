/*
 * main.c - the vdisk command: global options and dispatch to the commands
 * and command groups.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* serve.c: execs vdiskd (its options are vdiskd's: `vdisk serve --help`). */
int cmd_serve(int argc, char **argv);
/* stats.c: the counters of the vdiskd serving the store. */
int cmd_stats(int argc, char **argv);
/* job.c: the background jobs of that daemon. */
int cmd_job(int argc, char **argv);
/* pool.c: desktop pools. */
int cmd_pool(int argc, char **argv);

static const struct cli_cmd commands[] = {
    { "create", vol_create,
      "create NAME SIZE [--block-size N] [--digest none|sha256]" },
    { "list", vol_list, "list [--output human|json]" },
    { "info", vol_info, "info NAME [--output human|json]" },
    { "rm", vol_rm, "rm NAME" },
    { "resize", vol_resize, "resize NAME [+]SIZE" },
    { "check", vol_check,
      "check [NAME] [--repair] [--verify] [--output human|json]" },
    { "map", vol_map, "map NAME[@SNAP] [--output human|json]" },
    { "import", vol_import,
      "import [-f raw|vdk] [-p] [--block-size N] [--digest ALG] FILE NAME" },
    { "export", cmd_export, "export [-O raw|vdk] [-p] NAME[@SNAP] FILE" },
    /* The same command again, for the help: its words allow, deny, rules. */
    { "export", cmd_export,
      "export allow|deny|rules NAME ... (who may open it over NBD)" },
    { "io", vol_io, "io -c COMMAND [-c COMMAND]... NAME[@SNAP]" },
    { "snapshot", cmd_snapshot, "snapshot create|list|rollback|commit|rm ..." },
    { "template", cmd_template, "template create|list|info|update|rm ..." },
    { "clone", vol_clone, "clone [--full] [-p] TPL[@VERSION] VOL" },
    { "flatten", vol_flatten, "flatten [-p] VOL" },
    { "pool", cmd_pool, "pool create|list|status|rm|recompose ... (desktop pools)" },
    { "df", store_df, "df [--output human|json]" },
    { "stats", cmd_stats, "stats [--watch] [--output human|json] (a running vdiskd's counters)" },
    { "job", cmd_job, "job list|cancel ... (a running vdiskd's background jobs)" },
    { "serve", cmd_serve,
      "serve [--listen unix:PATH|tcp:HOST[:PORT]]... [--read-only] [-f] ... (runs vdiskd)" },
    { "img", cmd_img, "img create|info|check|map|convert|compare ..." },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    fputs("Usage: vdisk [--store DIR] [--help] [--version] COMMAND [ARGS...]\n"
          "\n"
          "Volumes, snapshots, templates and clones in a store:\n", f);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, "img") == 0)
            fputs("\nBare layer files, qemu-img style:\n", f);
        fprintf(f, "  vdisk %s\n", commands[i].synopsis);
    }
    fputs("\n"
          "Options:\n"
          "      --store DIR  the store to work on (also accepted after the\n"
          "                   command name); default $VDISK_STORE, else\n"
          "                   /var/lib/vdisk for root, else\n"
          "                   $XDG_DATA_HOME/vdisk (~/.local/share/vdisk)\n"
          "  -h, --help       show this help and exit\n"
          "  -V, --version    show the version and exit\n"
          "\n"
          "SIZE and N take the suffixes K, M, G, T (powers of 1024), optionally\n"
          "followed by B (\"64K\", \"10G\", \"1GiB\").  Every listing takes\n"
          "--output json.  -p shows progress when stderr is a terminal.\n"
          "\n"
          "Exit status: 0 success, 1 error (one line on stderr), 2 usage error;\n"
          "check: 0 clean, 1 error, 2 corruption, 3 leaked space only.\n"
          "\n"
          "Run 'vdisk COMMAND --help' for the details of a command.\n", f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        CLI_STORE_OPTION,
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
        case OPT_STORE:
            cli_set_store(optarg);
            break;
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
    ret = cli_dispatch("", commands, N_COMMANDS, argc - optind, argv + optind);
    cli_ctx_free();
    if ((fflush(stdout) != 0 || ferror(stdout)) && ret == EXIT_OK) {
        cli_err_errno(errno, "write error on standard output");
        ret = EXIT_ERR;
    }
    return ret;
}
