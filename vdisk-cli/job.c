/*
 * job.c - "vdisk job list|cancel": the background jobs of the vdiskd
 * serving the store (query-jobs and job-cancel on its control socket).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define GROUP "job"

static void usage(FILE *f)
{
    fputs("Usage: vdisk job list [--output human|json]\n"
          "       vdisk job cancel ID\n"
          "\n"
          "The background jobs of the vdiskd serving this store (snapshot\n"
          "commits of served volumes: 'vdisk snapshot commit').  cancel stops\n"
          "one; what it was doing is undone (a commit keeps its snapshot).\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static int call(const char *command, json_t *args, json_t **ret)
{
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return -1;
    int r = cli_control_ask(st, command, args, ret);
    vd_store_close(st);
    return r;
}

int cmd_job(int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, 'o' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (cli_parse_output(optarg, &output) < 0)
                return cli_usage_error(GROUP, "invalid output format '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP);
        }
    }
    if (optind >= argc)
        return cli_usage_error(GROUP, "missing list or cancel");
    const char *sub = argv[optind++];
    json_t *ret = NULL;
    if (strcmp(sub, "cancel") == 0) {
        char *end;
        if (optind + 1 != argc)
            return cli_usage_error(GROUP " cancel", "expected one job ID");
        unsigned long id = strtoul(argv[optind], &end, 10);
        if (*end || !id)
            return cli_usage_error(GROUP " cancel", "invalid job ID '%s'", argv[optind]);
        json_t *args = json_pack("{s:I}", "id", (json_int_t)id);
        int r = call("job-cancel", args, &ret);
        json_decref(args);
        json_decref(ret);
        if (r < 0)
            return EXIT_ERR;
        printf("Cancelling job %lu\n", id);
        return EXIT_OK;
    }
    if (strcmp(sub, "list") != 0)
        return cli_usage_error(GROUP, "unknown subcommand '%s'", sub);
    if (optind < argc)
        return cli_usage_error(GROUP " list", "unexpected argument '%s'", argv[optind]);
    json_t *args = json_object();
    int r = call("query-jobs", args, &ret);
    json_decref(args);
    if (r < 0)
        return EXIT_ERR;
    if (output == OUTPUT_JSON) {
        char *s = json_dumps(ret, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else if (json_array_size(ret) == 0) {
        printf("(no job is running)\n");
    } else {
        size_t i;
        json_t *j;
        printf("%-4s %-8s %-24s %-9s %s\n", "ID", "TYPE", "WHAT", "STATUS", "PROGRESS");
        json_array_foreach(ret, i, j) {
            char what[160];
            double done = (double)json_integer_value(json_object_get(j, "done"));
            double total = (double)json_integer_value(json_object_get(j, "total"));
            snprintf(what, sizeof(what), "%s@%s",
                     json_string_value(json_object_get(j, "volume")),
                     json_string_value(json_object_get(j, "snapshot")));
            printf("%-4lld %-8s %-24s %-9s %.1f of %.1f MiB (%.0f%%)\n",
                   (long long)json_integer_value(json_object_get(j, "id")),
                   json_string_value(json_object_get(j, "type")), what,
                   json_string_value(json_object_get(j, "status")), done / 1048576.0,
                   total / 1048576.0, total > 0 ? 100.0 * done / total : 0.0);
        }
    }
    json_decref(ret);
    return EXIT_OK;
}
