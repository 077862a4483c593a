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

int cli_control_call(struct vd_store *st, const char *command, json_t *args, json_t **ret,
                     char *err, size_t errlen)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int r;
    *ret = NULL;
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
    FILE *f = fdopen(fd, "r+");
    if (!f) {
        r = -errno;
        close(fd);
        return r;
    }
    char *line = read_line(f);   /* the greeting */
    json_t *req = json_pack("{s:s,s:O}", "execute", command, "arguments", args);
    char *s = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    r = -EIO;
    if (!line || !s || fprintf(f, "%s\n", s) < 0 || fflush(f) != 0) {
        snprintf(err, errlen, "the daemon's control socket did not answer");
        goto out;
    }
    /* The reply, skipping events. */
    for (;;) {
        free(line);
        line = read_line(f);
        if (!line) {
            snprintf(err, errlen, "the daemon closed its control socket without a reply");
            goto out;
        }
        json_t *j = json_loads(line, 0, NULL);
        if (!j) {
            snprintf(err, errlen, "the daemon sent something that is not JSON");
            goto out;
        }
        if (json_object_get(j, "event")) {
            json_decref(j);
            continue;
        }
        json_t *e = json_object_get(j, "error");
        if (e) {
            snprintf(err, errlen, "%s", json_string_value(json_object_get(e, "desc"))
                                            ? json_string_value(json_object_get(e, "desc"))
                                            : "error");
            json_decref(j);
            goto out;
        }
        *ret = json_incref(json_object_get(j, "return"));
        json_decref(j);
        r = *ret ? 0 : -EIO;
        if (r < 0)
            snprintf(err, errlen, "the daemon's reply has no result");
        break;
    }
out:
    free(line);
    free(s);
    fclose(f);
    return r;
}
