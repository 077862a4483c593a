/*
 * vdiskd.h - what the daemon's files share.
 *
 * One thread runs everything: an epoll loop (loop.c) over the listening
 * sockets (listen.c), the client connections (nbd-server's nbds_conn) and
 * the libvdisk I/O context's eventfd.  Exports (exports.c) map an export
 * name to one open vd_chain, shared by every connection to that name; the
 * nbd-server backend (backend.c) turns NBD requests into vd_aio_* calls
 * whose completions run inside vd_ctx_poll() on the same thread.
 */
#ifndef VDISKD_H
#define VDISKD_H

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>
#include <time.h>

#include "nbd-server.h"
#include "vdisk.h"

#define VDISKD_VERSION "0.1.0"
#define VDISKD_DEFAULT_PORT "10809"
#define VDISKD_HANDSHAKE_TIMEOUT 30     /* seconds a client may take to pick an export */
#define VDISKD_POLL_US 50              /* default --poll-us; see loop.c */
#define VDISKD_POLL_US_MAX 100000u
#define VDISKD_STR_(x) #x
#define VDISKD_STR(x) VDISKD_STR_(x)
#define VDISKD_UNIX_SNDBUF (4 << 20)   /* bytes; see listen.c */

/* ---- main.c: logging ---- */

extern int vdiskd_verbose;              /* -v count */
/* One line to stderr or syslog.  LOG_DEBUG lines only with -v. */
void vlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- loop.c: the event loop ---- */

/* Something the loop watches: cb runs with the epoll events. */
struct watch {
    int fd;
    void (*cb)(struct watch *w, uint32_t events);
};

struct client;
struct listener;
struct export;

struct vdiskd {
    /* configuration */
    bool read_only;
    unsigned open_flags;                /* VD_OPEN_BUFFERED or 0 */
    unsigned poll_us;                   /* --poll-us */

    /* storage */
    struct vd_store *store;
    struct vd_ctx *ctx;
    struct vd_layer_cache *cache;
    struct export *exports;

    /* network */
    struct nbds_server *srv;
    struct listener *listeners;
    struct client *clients;
    struct client *dirty;       /* replies queued by completions, to send */
    unsigned nclients;

    int epfd;
    struct watch ctx_watch;
    struct watch sig_watch;
    bool stopping;
};

int loop_init(struct vdiskd *d);
int loop_add(struct vdiskd *d, struct watch *w, uint32_t events);
int loop_mod(struct vdiskd *d, struct watch *w, uint32_t events);
void loop_del(struct vdiskd *d, struct watch *w);
/* Runs until a signal asked to stop and every connection has ended. */
int loop_run(struct vdiskd *d);
/* Starts serving a connected socket (takes ownership of fd). */
int client_start(struct vdiskd *d, int fd, const char *peer);
/* nbds_config.notify: a completion queued a reply. */
void client_notify(void *opaque, struct nbds_conn *c);

/* ---- listen.c: sockets ---- */

/* Adds a listener for "unix:PATH" or "tcp:HOST[:PORT]". */
int listen_add(struct vdiskd *d, const char *spec);
/* Closes every listening socket (and removes unix socket files). */
void listen_close_all(struct vdiskd *d);

/* ---- exports.c: names to open chains ---- */

struct export {
    char *name;
    struct vd_chain *chain;
    unsigned refs;                      /* connections using it */
    bool writable;
    char description[256];
    struct vdiskd *d;
    struct export *next;
};

/* Finds or opens export `name` and takes a reference.  -ENOENT unknown,
 * -EBUSY locked by another writer, other negative errnos from libvdisk. */
int export_get(struct vdiskd *d, const char *name, struct export **out);
/* Drops a reference; the last one closes the chain (flush, clean). */
void export_put(struct vdiskd *d, struct export *ex);
/* Adds every volume, snapshot and template version to an NBD_OPT_LIST. */
int exports_list(struct vdiskd *d, struct nbds_list *l);
/* Closes every export still open (shutdown). */
void exports_close_all(struct vdiskd *d);
/* "10 GiB" */
void fmt_size(uint64_t n, char *out, size_t outlen);

/* ---- backend.c ---- */

extern const struct nbds_backend vdiskd_backend;

#endif
