/*
 * stats.c - "vdisk stats": the running daemon's counters per export
 * (query-stats on its control socket, docs/CONTROL-API.md).  --watch
 * redraws every second with the rates since the previous reading.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

static void usage(FILE *f)
{
    fputs("Usage: vdisk stats [--watch] [--output human|json]\n"
          "\n"
          "Shows, for every export the vdiskd serving this store has open: its\n"
          "connections, requests done by kind, bytes read and written, errors,\n"
          "requests in flight, latency percentiles (upper bounds of power-of-two\n"
          "buckets, in microseconds) and, for volumes, the bytes allocated.\n"
          "\n"
          "      --watch       redraw every second, with rates per second\n"
          "      --output FMT  human (default) or json (one object per reading)\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static json_int_t geti(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static json_int_t ops_total(json_t *e)
{
    json_t *ops = json_object_get(e, "ops"), *v;
    const char *k;
    json_int_t n = 0;
    json_object_foreach(ops, k, v)
        n += json_integer_value(v);
    return n;
}

/* The previous reading's entry of the same export, for rates. */
static json_t *find(json_t *prev, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(prev, "exports"), i, e)
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0)
            return e;
    return NULL;
}

static void show(json_t *now, json_t *prev, double dt)
{
    size_t i;
    json_t *e;
    char rb[32], wb[32], al[32];
    printf("%-20s %5s %10s %12s %12s %7s %5s %8s %8s %8s %10s\n", "EXPORT", "CONN",
           prev ? "OPS/s" : "OPS", prev ? "READ/s" : "READ", prev ? "WRITTEN/s" : "WRITTEN",
           "ERRORS", "INFL", "P50us", "P99us", "MAXus", "ALLOCATED");
    json_array_foreach(json_object_get(now, "exports"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        json_t *p = prev ? find(prev, name) : NULL;
        json_int_t ops = ops_total(e), rd = geti(e, "read-bytes"), wr = geti(e, "written-bytes");
        if (prev) {
            ops = p ? ops - ops_total(p) : ops;
            rd = p ? rd - geti(p, "read-bytes") : rd;
            wr = p ? wr - geti(p, "written-bytes") : wr;
            ops = (json_int_t)((double)ops / dt);
            rd = (json_int_t)((double)rd / dt);
            wr = (json_int_t)((double)wr / dt);
        }
        json_t *lat = json_object_get(e, "latency-us"), *a = json_object_get(e, "allocated");
        printf("%-20s %5lld %10lld %12s %12s %7lld %5lld %8lld %8lld %8lld %10s\n", name,
               (long long)geti(e, "connections"), (long long)ops,
               cli_human_size((uint64_t)rd, rb, sizeof(rb)),
               cli_human_size((uint64_t)wr, wb, sizeof(wb)), (long long)geti(e, "errors"),
               (long long)geti(e, "in-flight"), (long long)geti(lat, "p50"),
               (long long)geti(lat, "p99"), (long long)geti(lat, "max"),
               a ? cli_human_size((uint64_t)json_integer_value(a), al, sizeof(al)) : "-");
    }
    if (json_array_size(json_object_get(now, "exports")) == 0)
        printf("(no export is open)\n");
}

int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        { "watch", no_argument, NULL, 'w' },
        { "output", required_argument, NULL, 'o' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    bool watch = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            watch = true;
            break;
        case 'o':
            if (cli_parse_output(optarg, &output) < 0)
                return cli_usage_error("stats", "invalid output format '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint("stats");
        }
    }
    if (optind < argc)
        return cli_usage_error("stats", "unexpected argument '%s'", argv[optind]);
    struct vd_store *st;
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    json_t *prev = NULL;
    struct timespec tprev = { 0, 0 };
    int ret = EXIT_OK;
    for (;;) {
        json_t *args = json_object(), *now = NULL;
        int r = cli_control_ask(st, "query-stats", args, &now);
        json_decref(args);
        if (r < 0) {
            ret = EXIT_ERR;
            break;
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (output == OUTPUT_JSON) {
            char *s = json_dumps(now, JSON_COMPACT);
            if (s)
                printf("%s\n", s);
            free(s);
        } else {
            double dt = (double)(t.tv_sec - tprev.tv_sec) +
                        (double)(t.tv_nsec - tprev.tv_nsec) / 1e9;
            if (watch && prev)
                printf("\n");
            show(now, watch ? prev : NULL, dt > 0 ? dt : 1);
        }
        fflush(stdout);
        json_decref(prev);
        prev = now;
        tprev = t;
        if (!watch)
            break;
        sleep(1);
    }
    json_decref(prev);
    vd_store_close(st);
    return ret;
}
