/*
 * vdiskd-client.c - a small client of vdiskd's control API.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vdiskd-client.h"

#define LINE_MAX_BYTES  (1u << 20)      /* vdiskd's own limit on a line */
#define REPLY_TIMEOUT_MS 120000         /* a snapshot waits for a flush */

struct vdc {
    int fd;
    char *buf;
    size_t len, cap;
    unsigned next_id;
};

/* Reads one line (without its newline) into a fresh string. */
static int read_line(struct vdc *c, char **line, char *err, size_t errlen)
{
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        ssize_t n;

        if (nl) {
            size_t l = (size_t)(nl - c->buf);

            *line = strndup(c->buf, l);
            memmove(c->buf, nl + 1, c->len - l - 1);
            c->len -= l + 1;
            return *line ? 0 : -ENOMEM;
        }
        if (c->len == LINE_MAX_BYTES) {
            snprintf(err, errlen, "vdiskd sent a line over %u bytes", LINE_MAX_BYTES);
            return -EPROTO;
        }
        if (c->cap - c->len < 4096) {
            size_t cap = c->cap ? c->cap * 2 : 8192;
            char *b;

            if (cap > LINE_MAX_BYTES)
                cap = LINE_MAX_BYTES;
            b = realloc(c->buf, cap);
            if (!b)
                return -ENOMEM;
            c->buf = b;
            c->cap = cap;
        }
        n = poll(&p, 1, REPLY_TIMEOUT_MS);
        if (n == 0) {
            snprintf(err, errlen, "vdiskd did not answer in %u s", REPLY_TIMEOUT_MS / 1000);
            return -ETIMEDOUT;
        }
        n = n < 0 ? -1 : read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "vdiskd closed the control connection%s%s",
                     n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            return -EPIPE;
        }
        c->len += (size_t)n;
    }
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int vdc_open(const char *path, struct vdc **out, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct vdc *c;
    json_t *greeting;
    char *line = NULL;
    int rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "%s: path too long for a unix socket", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot reach vdiskd's control socket %s: %s (is vdiskd "
                 "serving this store?)", path, strerror(errno));
        goto fail;
    }
    rc = read_line(c, &line, err, errlen);
    if (rc < 0)
        goto fail;
    greeting = json_loads(line, 0, NULL);
    free(line);
    if (!json_is_object(json_object_get(greeting, "vdiskd"))) {
        json_decref(greeting);
        snprintf(err, errlen, "%s: not vdiskd's control socket (no greeting)", path);
        rc = -EPROTO;
        goto fail;
    }
    json_decref(greeting);
    *out = c;
    return 0;
fail:
    vdc_close(c);
    return rc;
}

int vdc_call(struct vdc *c, const char *command, json_t *arguments, json_t **ret,
             char *err, size_t errlen)
{
    json_t *msg = json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)++c->next_id);
    char *text;
    int rc;

    if (!msg) {
        json_decref(arguments);
        return -ENOMEM;
    }
    if (arguments)
        json_object_set_new(msg, "arguments", arguments);
    text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return -ENOMEM;
    rc = write_all(c->fd, text, strlen(text));
    if (!rc)
        rc = write_all(c->fd, "\n", 1);
    free(text);
    if (rc < 0) {
        snprintf(err, errlen, "writing to vdiskd: %s", strerror(-rc));
        return rc;
    }
    /* Events may come first; the reply carries our id. */
    for (;;) {
        char *line;
        json_t *reply, *id, *e;

        rc = read_line(c, &line, err, errlen);
        if (rc < 0)
            return rc;
        reply = json_loads(line, 0, NULL);
        free(line);
        if (!json_is_object(reply)) {
            json_decref(reply);
            snprintf(err, errlen, "vdiskd sent a line that is not a JSON object");
            return -EPROTO;
        }
        id = json_object_get(reply, "id");
        if (json_object_get(reply, "event") || !json_is_integer(id) ||
            json_integer_value(id) != (json_int_t)c->next_id) {
            json_decref(reply);
            continue;
        }
        e = json_object_get(reply, "error");
        if (e) {
            const char *desc = json_string_value(json_object_get(e, "desc"));

            snprintf(err, errlen, "%s", desc ? desc : "vdiskd gave an error");
            json_decref(reply);
            return -EIO;
        }
        if (ret) {
            *ret = json_object_get(reply, "return");
            json_incref(*ret);
        }
        json_decref(reply);
        return 0;
    }
}

void vdc_close(struct vdc *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
}
