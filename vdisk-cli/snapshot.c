/*
 * snapshot.c - "vdisk snapshot create|list|rollback|commit|rm".
 *
 * A volume's snapshots form a tree: rolling back to an older snapshot and
 * snapshotting again starts a branch.  "list" draws that tree with
 * indentation and marks with '*' the snapshot the volume's present content
 * was started from (the deepest snapshot the library calls current).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define GROUP "snapshot"

/* ------------------------------------------------------------------ */
/* create, rollback, rm: VOL SNAP                                      */
/* ------------------------------------------------------------------ */

static void create_usage(FILE *f)
{
    fputs("Usage: vdisk snapshot create VOL SNAP\n"
          "\n"
          "Freezes the present content of the volume VOL as the snapshot\n"
          "SNAP, in constant time whatever the size of the volume.  When a\n"
          "vdiskd serving this store has VOL open, the daemon takes the\n"
          "snapshot while it serves the volume (its control socket).\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static void rollback_usage(FILE *f)
{
    fputs("Usage: vdisk snapshot rollback [--force] VOL SNAP\n"
          "\n"
          "Gives the volume VOL the content of its snapshot SNAP: the changes\n"
          "made since are discarded.  SNAP stays, so one can roll back to it\n"
          "again.  Constant time.\n"
          "\n"
          "When a vdiskd serving this store has VOL open, the daemon does it;\n"
          "if clients are connected to VOL it refuses and names them, since\n"
          "their disk would change under them, unless --force is given: then\n"
          "it disconnects them first.\n"
          "\n"
          "      --force       disconnect VOL's clients and roll back\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static void rm_usage(FILE *f)
{
    fputs("Usage: vdisk snapshot rm VOL SNAP\n"
          "\n"
          "Removes the snapshot SNAP of the volume VOL, wherever it is in the\n"
          "tree; the volume and every other snapshot keep their content.\n"
          "\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

/* Parses VOL SNAP after the common options; -1 to go on, else an exit
 * status. */
static int vol_snap_args(int argc, char **argv, const char *cmd,
                         void (*usage)(FILE *f))
{
    int ret = cli_common_opts(argc, argv, cmd, usage, NULL);

    if (ret >= 0)
        return ret;
    if (argc - optind < 2)
        return cli_usage_error(cmd, "missing %s", argc - optind ? "SNAP" : "VOL and SNAP");
    if (argc - optind > 2)
        return cli_usage_error(cmd, "too many arguments");
    return -1;
}

/* create, rollback and rm: VOL SNAP, one library call, one line said.
 * done is printed with the volume as %1$s and the snapshot as %2$s. */
/* The volume is open for writing elsewhere: if a vdiskd serving this store
 * holds it, the daemon does the operation online (control command
 * `online`).  Closes st. */
static bool rollback_force;   /* vdisk snapshot rollback --force */

static int online_op(struct vd_store *st, const char *online, const char *vol,
                     const char *snap, const char *done)
{
    char err[1024];
    json_t *args = json_pack("{s:s,s:s}", "volume", vol, "name", snap), *ret = NULL;
    if (rollback_force)
        json_object_set_new(args, "force", json_true());
    int r = cli_control_call(st, online, args, &ret, err, sizeof(err));
    json_decref(args);
    if (r == 0) {
        printf(done, vol, snap);
        json_t *p = json_object_get(ret, "pause-us");
        json_t *dc = json_object_get(ret, "disconnected");
        if (json_is_true(json_object_get(ret, "online")) && p)
            printf("  (taken by vdiskd while serving it; I/O paused %.1f ms)\n",
                   (double)json_integer_value(p) / 1000.0);
        if (json_is_true(json_object_get(ret, "online")) && dc)
            printf("  (done by vdiskd; %lld client(s) disconnected)\n",
                   (long long)json_integer_value(dc));
    } else if (r == -ENOENT || r == -ECONNREFUSED) {
        /* No daemon answers: whoever holds the volume, say so. */
        cli_err_volume(-EBUSY, st, vol, NULL, vol);
    } else {
        cli_err("%s %s@%s: %s", online, vol, snap, err[0] ? err : strerror(-r));
    }
    json_decref(ret);
    vd_store_close(st);
    return r == 0 ? EXIT_OK : EXIT_ERR;
}

static int vol_snap_op(int argc, char **argv, const char *cmd, void (*usage)(FILE *),
                       int (*op)(struct vd_store *, const char *, const char *),
                       const char *online, const char *done)
{
    struct vd_store *st;
    const char *vol, *snap;
    int ret;

    ret = vol_snap_args(argc, argv, cmd, usage);
    if (ret >= 0)
        return ret;
    vol = argv[optind];
    snap = argv[optind + 1];
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = op(st, vol, snap);
    if (ret == -EBUSY && online)
        return online_op(st, online, vol, snap, done);
    if (ret < 0)
        cli_err_volume(ret, st, vol, NULL, vol);
    else
        printf(done, vol, snap);
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

static int snap_create(int argc, char **argv)
{
    return vol_snap_op(argc, argv, GROUP " create", create_usage, vd_snapshot_create,
                       "snapshot-create", "Created snapshot '%2$s' of volume '%1$s'\n");
}

static int snap_rollback(int argc, char **argv)
{
    /* --force is rollback's own option: take it out before the common
     * parser sees the rest. */
    static const struct option opts[] = {
        { "force", no_argument, NULL, 'f' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            rollback_force = true;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            rollback_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP " rollback");
        }
    }
    /* The operands stay; the common parser starts again after the
     * options taken above. */
    argv[optind - 1] = argv[0];
    argc -= optind - 1;
    argv += optind - 1;
    optind = 0;   /* glibc: reinitialise getopt for this argv */
    return vol_snap_op(argc, argv, GROUP " rollback", rollback_usage, vd_snapshot_rollback,
                       "snapshot-rollback", "Rolled volume '%1$s' back to snapshot '%2$s'\n");
}

static int snap_rm(int argc, char **argv)
{
    return vol_snap_op(argc, argv, GROUP " rm", rm_usage, vd_snapshot_remove, NULL,
                       "Removed snapshot '%2$s' of volume '%1$s'\n");
}

/* ------------------------------------------------------------------ */
/* commit                                                              */
/* ------------------------------------------------------------------ */

static void commit_usage(FILE *f)
{
    fputs("Usage: vdisk snapshot commit [-p] [--background] [--speed N] VOL SNAP\n"
          "\n"
          "Removes the snapshot SNAP of the volume VOL by merging what was\n"
          "written after it into it: the volume keeps its present content and\n"
          "its chain gets shorter.  Takes time in proportion to the data\n"
          "written since SNAP.  Safe against crashes.\n"
          "\n"
          "When a vdiskd serves VOL, the daemon commits it while its clients go\n"
          "on reading and writing (a job: 'vdisk job list'); the clients pause\n"
          "only for the switch at the end.  Until then, an interrupt (Ctrl-C),\n"
          "'vdisk job cancel' or a crash leaves the snapshot as it was.\n"
          "\n"
          "  -p, --progress    show progress on a terminal\n"
          "      --background  served volumes: start the job and return\n"
          "      --speed N     served volumes: copy N bytes per second (K, M, G\n"
          "                    suffixes; default: a small share of the clients'\n"
          "                    own I/O while they are busy, full speed when idle)\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* The commit of a volume a vdiskd serves: a job of the daemon, followed
 * through its events until it ends.  Closes st. */
static int online_commit(struct vd_store *st, const char *vol, const char *snap,
                         struct cli_lib_progress *lp, bool background, uint64_t speed)
{
    char err[1024];
    struct cli_ctl *c = NULL;
    json_t *ret = NULL, *ev = NULL;
    int r = cli_control_open(st, &c, err, sizeof(err)), ok = 0;
    json_int_t id = 0;
    if (r == -ENOENT || r == -ECONNREFUSED) {
        cli_err_volume(-EBUSY, st, vol, NULL, vol);
        goto out;
    }
    json_t *args = json_pack("{s:s,s:s,s:I}", "volume", vol, "name", snap, "speed",
                             (json_int_t)speed);
    if (r == 0)
        r = cli_control_cmd(c, "snapshot-commit", args, &ret, err, sizeof(err));
    json_decref(args);
    if (r < 0) {
        cli_err("snapshot commit %s@%s: %s", vol, snap, err[0] ? err : strerror(-r));
        goto out;
    }
    id = json_integer_value(json_object_get(ret, "job"));
    if (background) {
        printf("Committing snapshot '%s' of volume '%s' in vdiskd (job %lld; see "
               "'vdisk job list')\n", snap, vol, (long long)id);
        ok = 1;
        goto out;
    }
    struct sigaction sa = { .sa_handler = on_interrupt }, old;
    sigaction(SIGINT, &sa, &old);   /* no SA_RESTART: the read returns */
    bool asked = false;
    for (;;) {
        if (interrupted && !asked) {
            json_t *ca = json_pack("{s:I}", "id", id), *cr = NULL;
            fprintf(stderr, "vdisk: interrupted: cancelling job %lld\n", (long long)id);
            cli_control_cmd(c, "job-cancel", ca, &cr, err, sizeof(err));
            json_decref(ca);
            json_decref(cr);
            asked = true;
        }
        json_decref(ev);
        ev = NULL;
        r = cli_control_event(c, &ev, err, sizeof(err));
        if (r == -EINTR)
            continue;
        if (r < 0) {
            cli_err("snapshot commit %s@%s: %s", vol, snap, err);
            break;
        }
        const char *name = json_string_value(json_object_get(ev, "event"));
        json_t *d = json_object_get(ev, "data");
        if (json_integer_value(json_object_get(d, "id")) != id ||
            !json_is_integer(json_object_get(d, "id")))
            continue;
        if (strcmp(name, "JOB_PROGRESS") == 0) {
            cli_lib_progress(lp, (uint64_t)json_integer_value(json_object_get(d, "done")),
                             (uint64_t)json_integer_value(json_object_get(d, "total")));
            continue;
        }
        const char *e = json_string_value(json_object_get(d, "error"));
        if (strcmp(name, "JOB_CANCELLED") == 0) {
            cli_lib_progress_end(lp, false);
            cli_err("snapshot commit %s@%s: cancelled (%s); the snapshot is kept", vol, snap,
                    json_string_value(json_object_get(d, "reason")));
        } else if (strcmp(name, "JOB_COMPLETED") == 0 && e) {
            cli_lib_progress_end(lp, false);
            cli_err("snapshot commit %s@%s: %s", vol, snap, e);
        } else if (strcmp(name, "JOB_COMPLETED") == 0) {
            cli_lib_progress_end(lp, true);
            printf("Committed snapshot '%s' of volume '%s'\n", snap, vol);
            printf("  (by vdiskd while serving it: %.1f MiB copied in %.1f s; I/O paused "
                   "%.1f ms)\n",
                   (double)json_integer_value(json_object_get(d, "bytes")) / 1048576.0,
                   json_number_value(json_object_get(d, "seconds")),
                   (double)json_integer_value(json_object_get(d, "pause-us")) / 1000.0);
            ok = 1;
        } else {
            continue;
        }
        break;
    }
    sigaction(SIGINT, &old, NULL);
out:
    json_decref(ev);
    json_decref(ret);
    cli_control_close(c);
    vd_store_close(st);
    return ok ? EXIT_OK : EXIT_ERR;
}

static int snap_commit(int argc, char **argv)
{
    static const struct option opts[] = {
        { "progress", no_argument, NULL, 'p' },
        { "background", no_argument, NULL, 'b' },
        { "speed", required_argument, NULL, 's' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct cli_lib_progress lp = { 0 };
    struct vd_store *st;
    const char *vol, *snap;
    bool background = false;
    uint64_t speed = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, "ph", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            lp.wanted = true;
            break;
        case 'b':
            background = true;
            break;
        case 's':
            if (cli_parse_size(optarg, &speed) < 0)
                return cli_usage_error(GROUP " commit", "invalid speed '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            commit_usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(GROUP " commit");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error(GROUP " commit", "missing %s",
                               argc - optind ? "SNAP" : "VOL and SNAP");
    if (argc - optind > 2)
        return cli_usage_error(GROUP " commit", "too many arguments");
    vol = argv[optind];
    snap = argv[optind + 1];
    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_snapshot_commit(st, vol, snap, cli_lib_progress, &lp);
    struct vd_volume_info vi;
    if (ret == -EBUSY && vd_volume_info(st, vol, &vi) == 0 && vi.writer_pid)
        return online_commit(st, vol, snap, &lp, background, speed);
    cli_lib_progress_end(&lp, ret == 0);
    if (ret < 0)
        cli_err_volume(ret, st, vol, NULL, vol);
    else
        printf("Committed snapshot '%s' of volume '%s'\n", snap, vol);
    vd_store_close(st);
    return ret < 0 ? EXIT_ERR : EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* list                                                                */
/* ------------------------------------------------------------------ */

static void list_usage(FILE *f)
{
    fputs("Usage: vdisk snapshot list [--output human|json] VOL\n"
          "\n"
          "Lists the snapshots of the volume VOL as a tree (a snapshot below\n"
          "another and indented was taken after it), with the time each was\n"
          "taken, the volume's size then and the space its own layer holds.\n"
          "'*' marks the snapshot the volume's present content descends from.\n"
          "\n"
          "      --output FMT  human (default) or json\n"
          "      --store DIR   the store (default $VDISK_STORE)\n"
          "  -h, --help        show this help\n", f);
}

struct tree {
    const struct vd_snapshot_info *s;
    size_t n;
    size_t *parent;          /* index of the parent, or n for a root */
    unsigned *level;         /* 0 for roots */
    size_t *order;           /* depth-first order */
    bool *head;              /* the '*' */
    size_t done;
};

static void visit(struct tree *t, size_t i, unsigned level, bool *seen)
{
    seen[i] = true;
    t->level[i] = level;
    t->order[t->done++] = i;
    /* Children in the order they were taken (the list is oldest first). */
    for (size_t k = 0; k < t->n; k++)
        if (!seen[k] && t->parent[k] == i)
            visit(t, k, level + 1, seen);
}

/* Builds the tree; returns 0 or -ENOMEM. */
static int tree_build(struct tree *t, const struct vd_snapshot_info *s, size_t n)
{
    bool *seen;

    t->s = s;
    t->n = n;
    t->done = 0;
    t->parent = calloc(n + 1, sizeof(*t->parent));
    t->level = calloc(n + 1, sizeof(*t->level));
    t->order = calloc(n + 1, sizeof(*t->order));
    t->head = calloc(n + 1, sizeof(*t->head));
    seen = calloc(n + 1, sizeof(*seen));
    if (!t->parent || !t->level || !t->order || !t->head || !seen) {
        free(seen);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        t->parent[i] = n;
        for (size_t k = 0; k < n; k++)
            if (k != i && s[i].parent[0] && strcmp(s[k].name, s[i].parent) == 0)
                t->parent[i] = k;
    }
    /* The head: current, and no child of it is current. */
    for (size_t i = 0; i < n; i++)
        t->head[i] = s[i].current;
    for (size_t i = 0; i < n; i++)
        if (s[i].current && t->parent[i] < n)
            t->head[t->parent[i]] = false;
    for (size_t i = 0; i < n; i++)
        if (t->parent[i] == n)
            visit(t, i, 0, seen);
    /* A parent the list does not hold (or a cycle): shown as roots. */
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            visit(t, i, 0, seen);
    free(seen);
    return 0;
}

static void tree_free(struct tree *t)
{
    free(t->parent);
    free(t->level);
    free(t->order);
    free(t->head);
}

static void print_tree(const struct tree *t, const char *vol)
{
    size_t w = 4;
    char when[64], hs[32], ha[32];

    if (t->n == 0) {
        printf("No snapshots of volume '%s'.\n", vol);
        return;
    }
    for (size_t i = 0; i < t->n; i++)
        w = MAX(w, 2 * t->level[i] + strlen(t->s[i].name));
    printf("  %-*s  %-25s  %12s  %12s\n", (int)w, "NAME", "CREATED",
           "VIRTUAL SIZE", "ALLOCATED");
    for (size_t k = 0; k < t->done; k++) {
        size_t i = t->order[k];
        const struct vd_snapshot_info *s = &t->s[i];
        int indent = (int)(2 * t->level[i]);

        printf("%c %*s%-*s  %-25s  %12s  %12s\n", t->head[i] ? '*' : ' ',
               indent, "", (int)w - indent, s->name,
               cli_iso_time(s->create_time, when, sizeof(when)),
               cli_human_size(s->size, hs, sizeof(hs)),
               cli_human_size(s->allocated, ha, sizeof(ha)));
    }
}

static void json_tree(const struct tree *t)
{
    char uuid[37];

    fputs("[", stdout);
    for (size_t k = 0; k < t->done; k++) {
        size_t i = t->order[k];
        const struct vd_snapshot_info *s = &t->s[i];

        fputs(k ? ",\n    { \"name\": " : "\n    { \"name\": ", stdout);
        json_put_string(stdout, s->name);
        fputs(", \"parent\": ", stdout);
        if (s->parent[0])
            json_put_string(stdout, s->parent);
        else
            fputs("null", stdout);
        fputs(", ", stdout);
        json_put_times(stdout, s->create_time, " ");
        vd_uuid_format(&s->layer, uuid);
        printf(", \"virtual-size\": %llu, \"allocated-bytes\": %llu, "
               "\"current\": %s, \"head\": %s, \"layer\": \"%s\" }",
               (unsigned long long)s->size, (unsigned long long)s->allocated,
               s->current ? "true" : "false", t->head[i] ? "true" : "false", uuid);
    }
    fputs(t->done ? "\n]\n" : "]\n", stdout);
}

static int snap_list(int argc, char **argv)
{
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_snapshot_info *snaps = NULL;
    struct tree t = { 0 };
    struct vd_store *st;
    const char *vol;
    size_t n = 0;
    int ret, rc = EXIT_ERR;

    ret = cli_common_opts(argc, argv, GROUP " list", list_usage, &output);
    if (ret >= 0)
        return ret;
    if (optind >= argc)
        return cli_usage_error(GROUP " list", "missing VOL");
    if (optind + 1 < argc)
        return cli_usage_error(GROUP " list", "too many arguments");
    vol = argv[optind];

    if (cli_store_open(0, &st) < 0)
        return EXIT_ERR;
    ret = vd_snapshot_list(st, vol, &snaps, &n);
    if (ret < 0) {
        cli_err_volume(ret, st, vol, NULL, vol);
        goto out;
    }
    if (tree_build(&t, snaps, n) < 0) {
        cli_err("cannot list the snapshots: out of memory");
        goto out;
    }
    if (output == OUTPUT_JSON)
        json_tree(&t);
    else
        print_tree(&t, vol);
    rc = EXIT_OK;
out:
    tree_free(&t);
    free(snaps);
    vd_store_close(st);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the group                                                           */
/* ------------------------------------------------------------------ */

static const struct cli_cmd subcommands[] = {
    { "create", snap_create, "create VOL SNAP" },
    { "list", snap_list, "list [--output human|json] VOL" },
    { "rollback", snap_rollback, "rollback VOL SNAP" },
    { "commit", snap_commit, "commit [-p] VOL SNAP" },
    { "rm", snap_rm, "rm VOL SNAP" },
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
    fputs("Usage: vdisk snapshot [--help] SUBCOMMAND [ARGS...]\n"
          "\n"
          "Snapshots of a volume:\n", f);
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  vdisk snapshot %s\n", subcommands[i].synopsis);
    fputs("\n"
          "Every subcommand takes --store DIR.  Run 'vdisk snapshot SUBCOMMAND\n"
          "--help' for details.\n", f);
}

int cmd_snapshot(int argc, char **argv)
{
    return cli_group(GROUP, usage, subcommands, N_SUBCOMMANDS, argc, argv);
}
