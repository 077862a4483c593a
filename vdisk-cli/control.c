/*
 * control.c - talking to a running vdiskd through its control socket
 * (docs/CONTROL-API.md), for commands on volumes the daemon is serving:
 * the daemon holds such a volume open for writing, so the store refuses the
 * offline operation (-EBUSY) and the CLI asks the daemon instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define CTL_TIMEOUT_S 600   /* a reply may wait for in-flight I/O and a flush */

/* Reads one line (without the '\n') into a malloc'ed string; NULL at EOF
 * or on an error. */
static char *read_line(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n <= 0) {
        free(line);
        return NULL;
    }
    if (line[n - 1] == '\n')
        line[n - 1] = '\0';
    return line;
}

struct cli_ctl {
    FILE *f;
};

int cli_control_open(struct vd_store *st, struct cli_ctl **out, char *err, size_t errlen)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int r;
    *out = NULL;
    err[0] = '\0';
    if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/control.sock",
                         vd_store_path(st)) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    struct cli_ctl *c = calloc(1, sizeof(*c));
    if (!c || !(c->f = fdopen(fd, "r+"))) {
        r = c ? -errno : -ENOMEM;
        free(c);
        close(fd);
        return r;
    }
    char *line = read_line(c->f);   /* the greeting */
    if (!line) {
        snprintf(err, errlen, "the daemon's control socket did not answer");
        cli_control_close(c);
        return -EIO;
    }
    /* A client the daemon refuses (control sockets check who connects)
     * gets one error line instead of the greeting. */
    json_t *g = json_loads(line, 0, NULL);
    free(line);
    const char *desc = json_string_value(json_object_get(json_object_get(g, "error"), "desc"));
    if (desc) {
        snprintf(err, errlen, "%s", desc);
        json_decref(g);
        cli_control_close(c);
        return -EACCES;
    }
    json_decref(g);
    *out = c;
    return 0;
}

void cli_control_close(struct cli_ctl *c)
{
    if (!c)
        return;
    fclose(c->f);
    free(c);
}

/* The next line as JSON: 0, -EINTR (a signal; call again), or -EIO with err. */
static int next_json(struct cli_ctl *c, json_t **out, char *err, size_t errlen)
{
    errno = 0;
    char *line = read_line(c->f);
    if (!line) {
        if (errno == EINTR) {
            clearerr(c->f);
            return -EINTR;
        }
        snprintf(err, errlen, "the daemon closed its control socket");
        return -EIO;
    }
    *out = json_loads(line, 0, NULL);
    free(line);
    if (!*out) {
        snprintf(err, errlen, "the daemon sent something that is not JSON");
        return -EIO;
    }
    return 0;
}

int cli_control_cmd(struct cli_ctl *c, const char *command, json_t *args, json_t **ret,
                    char *err, size_t errlen)
{
    *ret = NULL;
    err[0] = '\0';
    json_t *req = json_pack("{s:s,s:O}", "execute", command, "arguments", args);
    char *s = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    int r = -EIO;
    if (!s || fprintf(c->f, "%s\n", s) < 0 || fflush(c->f) != 0) {
        snprintf(err, errlen, "the daemon's control socket did not answer");
        free(s);
        return -EIO;
    }
    free(s);
    /* The reply, skipping events. */
    for (;;) {
        json_t *j;
        r = next_json(c, &j, err, errlen);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return r;
        if (json_object_get(j, "event")) {
            json_decref(j);
            continue;
        }
        json_t *e = json_object_get(j, "error");
        if (e) {
            const char *d = json_string_value(json_object_get(e, "desc"));
            snprintf(err, errlen, "%s", d ? d : "error");
            json_decref(j);
            return -EIO;
        }
        *ret = json_incref(json_object_get(j, "return"));
        json_decref(j);
        if (!*ret) {
            snprintf(err, errlen, "the daemon's reply has no result");
            return -EIO;
        }
        return 0;
    }
}

int cli_control_event(struct cli_ctl *c, json_t **ev, char *err, size_t errlen)
{
    for (;;) {
        json_t *j;
        int r = next_json(c, &j, err, errlen);
        if (r < 0)
            return r;
        if (json_object_get(j, "event")) {
            *ev = j;
            return 0;
        }
        json_decref(j);   /* a reply nobody waits for */
    }
}

int cli_control_call(struct vd_store *st, const char *command, json_t *args, json_t **ret,
                     char *err, size_t errlen)
{
    struct cli_ctl *c;
    *ret = NULL;
    int r = cli_control_open(st, &c, err, errlen);
    if (r < 0)
        return r;
    r = cli_control_cmd(c, command, args, ret, err, errlen);
    cli_control_close(c);
    return r;
}

int cli_control_ask(struct vd_store *st, const char *command, json_t *args, json_t **ret)
{
    char err[1024];
    int r = cli_control_call(st, command, args, ret, err, sizeof(err));
    if (r == -ENOENT || r == -ECONNREFUSED)
        cli_err("no vdiskd is serving the store %s (no control socket)", vd_store_path(st));
    else if (r < 0)
        cli_err("%s: %s", command, err[0] ? err : strerror(-r));
    return r;
}
