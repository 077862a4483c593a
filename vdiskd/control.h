/*
 * control.h - what the control API's two files share: control.c (the
 * commands, reading lines, writing replies and events) and control-sock.c
 * (the sockets: listening, who may connect, the read-only socket).
 */
#ifndef VDISKD_CONTROL_H
#define VDISKD_CONTROL_H

#include <jansson.h>

#include "vdiskd.h"

#define CTL_MAX_LINE (1u << 20)   /* longest command accepted */
#define CTL_MAX_OUT (16u << 20)   /* replies and events waiting: beyond, the client is dropped */

struct ctl_client {
    struct watch w;
    struct vdiskd *d;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outpos, outlen, outcap;
    uint32_t armed;
    bool closing;                 /* close once the output is written */
    bool quit;                    /* "quit": stop the daemon after the reply */
    uint64_t serial;              /* names it for replies that come later */
    bool dead;
    bool read_only;               /* came through --control-ro: queries only */
    struct ctl_client *next;
};

struct control {
    struct watch w;               /* the listening socket (fd -1: none) */
    struct vdiskd *d;
    char *path;
    struct ctl_client *clients;
    uint64_t next_serial;
    gid_t gid;                    /* --control-group, or -1 */
    struct watch ro_w;            /* --control-ro's socket (fd -1: none) */
    char *ro_path;
    gid_t ro_gid;                 /* --control-ro-group, or -1: anyone */
};

static inline json_t *error_obj(const char *cls, const char *desc)
{
    return json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
}

/* ---- control.c ---- */
/* Queues one JSON line for c (takes the reference of j) and tries to send. */
void ctl_send(struct ctl_client *c, json_t *j);
/* Sends what is queued, as far as the socket takes it. */
void ctl_flush(struct ctl_client *c);
/* Watches c for what it needs now (input, room for output). */
void ctl_rearm(struct ctl_client *c);
/* Unlinks and frees c, closing its socket. */
void ctl_free(struct control *ctl, struct ctl_client *c);
/* A client socket's events: reads and runs its commands, sends. */
void ctl_client_io(struct watch *w, uint32_t events);

/* ---- control-sock.c ---- */
/* True when command may run on the read-only socket (--control-ro). */
bool control_ro_allows(const char *command);

#endif
