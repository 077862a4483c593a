/*
 * store.c - which store the commands work on, and what the store commands
 * share: error lines for library calls, names, times, progress.
 *
 * The store is --store DIR (given before or after the command name), else
 * $VDISK_STORE, else the library's default (vd_store_default_path).
 * Commands that only look at a store never create one: a mistyped
 * --store should say "no store there", not leave an empty store behind.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *store_opt;

void cli_set_store(const char *dir)
{
    store_opt = dir;
}

const char *cli_get_store(void)
{
    return store_opt;
}

int cli_store_open(unsigned flags, struct vd_store **out)
{
    char def[4096];
    const char *dir = store_opt;
    int ret;

    *out = NULL;
    if (!dir || !*dir) {
        dir = getenv("VDISK_STORE");
        if (!dir || !*dir) {
            ret = vd_store_default_path(def, sizeof(def));
            if (ret < 0) {
                cli_err_lib(ret, "cannot find the default store");
                return ret;
            }
            dir = def;
        }
    }
    ret = vd_store_open(dir, flags, out);
    if (ret < 0) {
        *out = NULL;
        if (ret == -ENOENT && !(flags & VD_STORE_CREATE))
            cli_err("no store at %s; create a volume first or pass --store", dir);
        else
            cli_err_lib(ret, "%s", dir);
    }
    return ret;
}

void cli_err_store(int err, const char *name, const char *fmt, ...)
{
    /* Read the message before anything else can touch it. */
    const char *msg = cli_lib_msg(err);
    char what[512];
    va_list ap;

    if (name && *name && strstr(msg, name)) {
        fprintf(stderr, "vdisk: %s\n", msg);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    fprintf(stderr, "vdisk: %s: %s\n", what, msg);
}

char *cli_lib_msg_dup(int err)
{
    return strdup(cli_lib_msg(err));
}

bool cli_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > VD_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789._-") == n;
}

const char *cli_iso_time(uint64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char off[8];
    size_t n;

    if (!localtime_r(&tt, &tm) ||
        (n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm)) == 0 ||
        strftime(off, sizeof(off), "%z", &tm) != 5) {
        snprintf(buf, len, "@%llu", (unsigned long long)t);
        return buf;
    }
    /* strftime's %z is "+0200"; ISO 8601's extended form wants "+02:00". */
    snprintf(buf + n, len - n, "%.3s:%.2s", off, off + 3);
    return buf;
}

void json_put_times(FILE *f, uint64_t t, const char *sep)
{
    char when[64];

    fprintf(f, "\"create-time\": %llu,%s\"created\": ", (unsigned long long)t, sep);
    json_put_string(f, cli_iso_time(t, when, sizeof(when)));
}

void cli_lib_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct cli_lib_progress *lp = opaque;

    if (!lp->started) {
        cli_progress_init(&lp->p, lp->wanted, total);
        lp->started = true;
    }
    lp->p.total = total;
    cli_progress_update(&lp->p, done);
}

void cli_lib_progress_end(struct cli_lib_progress *lp, bool ok)
{
    if (!lp->started)
        return;
    if (ok) {
        cli_progress_end(&lp->p);
    } else if (lp->p.on) {
        fputc('\n', stderr);
        lp->p.on = false;
    }
}

int cli_parse_tpl_version(const char *s, char *tpl, size_t tpl_len,
                          uint32_t *version)
{
    const char *at = strchr(s, '@');
    size_t n = at ? (size_t)(at - s) : strlen(s);
    unsigned long long v = 0;

    *version = 0;
    if (n == 0)
        return -EINVAL;
    if (at) {
        const char *p = at + 1;

        if (*p < '1' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            v = v * 10 + (unsigned)(*p - '0');
            if (v > UINT32_MAX)
                return -EINVAL;
        }
        if (*p)
            return -EINVAL;
        *version = (uint32_t)v;
    }
    snprintf(tpl, tpl_len, "%.*s", (int)MIN(n, (size_t)VD_NAME_MAX + 1), s);
    return 0;
}

void cli_err_volume(int err, struct vd_store *st, const char *name,
                    const char *hint, const char *what)
{
    char *msg = cli_lib_msg_dup(err);
    struct vd_template_info ti;
    struct vd_template_version *vers = NULL;
    size_t n = 0;
    bool is_tpl = false;

    if (vd_template_info(st, name, &ti, &vers, &n) == 0) {
        free(vers);
        is_tpl = true;
    }
    if (!msg) {
        cli_err_errno(err, "%s", what);
    } else if (is_tpl && !strstr(msg, "template")) {
        /* The library's own words do not say why: say it. */
        cli_err("%s: '%s' is a template, which cannot be changed%s%s", what,
                name, hint ? "; " : "", hint ? hint : "");
    } else {
        if (strstr(msg, name))
            fprintf(stderr, "vdisk: %s", msg);
        else
            fprintf(stderr, "vdisk: %s: %s", what, msg);
        if (is_tpl && hint)
            fprintf(stderr, "; %s", hint);
        fputc('\n', stderr);
    }
    free(msg);
}

int cli_common_opts(int argc, char **argv, const char *cmd,
                    void (*usage)(FILE *f), enum cli_output *output)
{
    static const struct option with_output[] = {
        { "output", required_argument, NULL, 'o' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const struct option *opts = with_output + (output ? 0 : 1);
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (cli_parse_output(optarg, output) < 0)
                return cli_usage_error(cmd, "invalid output format '%s'", optarg);
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(cmd);
        }
    }
    return -1;
}
