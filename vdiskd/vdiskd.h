/*
 * vdiskd.h - what the daemon's files share.
 *
 * One event loop per core (loop.c, struct worker): each thread has an
 * epoll set over its client connections (nbd-server's nbds_conn) and the
 * eventfd of its own libvdisk I/O context; worker 0 also watches the
 * listening sockets (listen.c) and signals.  Exports (exports.c) map an
 * export name to one open vd_chain, shared by every connection to that
 * name and served by one worker: a connection whose handshake ran on
 * another worker moves to the export's worker before its first request.
 * The nbd-server backend (backend.c) turns NBD requests into vd_aio_*
 * calls whose completions run inside vd_ctx_poll() on the same thread.
 */
#ifndef VDISKD_H
#define VDISKD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>

#include "nbd-server.h"
#include "vdisk.h"

#define VDISKD_VERSION "0.1.0"
#define VDISKD_DEFAULT_PORT "10809"
#define VDISKD_HANDSHAKE_TIMEOUT 30     /* seconds a client may take to pick an export */
#define VDISKD_POLL_US 50              /* default --poll-us; see loop.c */
#define VDISKD_POLL_US_MAX 100000u
#define VDISKD_MAX_THREADS 64
#define VDISKD_BLOCK_CACHE (256ull << 20)   /* default --block-cache */
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

/* A client's place in its worker's queue for payload memory (limits.c). */
struct budget_waiter {
    struct client *c;
    struct budget_waiter *next;
    bool queued;
};

/* An event-loop thread: its own epoll set, libvdisk context (every export
 * it serves is a chain opened on that context) and nbd-server server
 * (payload buffers).  Worker 0 is the main thread and also watches the
 * listening sockets and the signals. */
struct worker {
    struct vdiskd *d;
    unsigned id;
    pthread_t thread;
    bool started;
    int epfd;
    struct vd_ctx *ctx;
    struct nbds_server *srv;
    struct watch ctx_watch;
    struct watch wake_watch;            /* eventfd: inbox, stop */
    struct client *clients;
    struct client *dirty;               /* replies queued by completions, to send */
    unsigned nclients;
    bool stopped;                       /* has shut its clients down */
    pthread_mutex_t inbox_lock;
    struct client *inbox;               /* handed over by other threads */
    struct export *close_inbox;         /* exports to close here (exports.c) */
    struct task *tasks;                 /* work handed over by other threads */
    struct job *jobs;                   /* background jobs it runs (jobs.c) */
    struct client *graveyard;           /* destroyed this round (loop.c) */
    /* Clients waiting for payload memory (limits.c), oldest first. */
    struct budget_waiter *budget_wait, **budget_tail;
    unsigned budget_nwait;              /* atomic: how many */
    uint64_t reap_ns;                   /* the last scan for timeouts */
    bool reap_due;                      /* a client ended: scan every round */
};

/* Work for a given worker's thread (worker_post_task). */
struct task {
    void (*run)(struct worker *w, struct task *t);
    struct task *next;
};
/* Runs t->run on worker w's thread, soon (any thread may call this). */
void worker_post_task(struct worker *w, struct task *t);

/* The worker of the calling thread (NULL outside the loops: --stdio). */
extern __thread struct worker *current_worker;

/* Free space of the store's filesystem (space.c). */
#define SPACE_MAX_LEVELS 8
struct space {
    double levels[SPACE_MAX_LEVELS];    /* percent free, highest first */
    unsigned nlevels;
    unsigned level;                     /* thresholds the free share is below */
    struct watch timer;                 /* on worker 0 */
    uint64_t total, avail;              /* bytes, relaxed atomics */
};

struct vdiskd {
    /* configuration */
    bool read_only;
    unsigned open_flags;                /* VD_OPEN_BUFFERED or 0 */
    unsigned poll_us;                   /* --poll-us */
    unsigned nworkers;                  /* --threads */

    /* storage: the store, the layer cache and the export table are used
     * from every worker, under lock */
    pthread_mutex_t lock;
    struct vd_store *store;
    struct vd_layer_cache *cache;
    struct export *exports;
    struct job *jobs;                   /* every job (jobs.c) */
    struct export_cfg *cfgs;            /* export-add / export-remove */
    struct space space;
    struct watch pools_timer;           /* on worker 0 (pools.c) */
    bool pools_dirty;                   /* atomic: a session began or ended */
    unsigned last_job;                  /* the last job id given */

    struct worker *workers;
    unsigned next_worker;               /* round robin for new connections */
    struct listener *listeners;         /* on worker 0 */
    struct watch sig_watch;             /* on worker 0 */
    struct control *control;            /* on worker 0 (control.c) */
    struct vdiskd_tls *tls;             /* TLS credentials (tls.c), or NULL */
    bool stopping;                      /* atomic */
    unsigned nclients;                  /* atomic: connections alive, all workers */

    /* limits (limits.c, loop.c), set from the options */
    unsigned max_conns;                 /* --max-connections, 0: none */
    unsigned max_conns_client;          /* --max-connections-per-client, 0: none */
    unsigned handshake_timeout;         /* --handshake-timeout, seconds, 0: none */
    unsigned max_inflight;              /* --max-inflight, per connection */
    uint64_t payload_limit;             /* --max-payload-memory, 0: none */
    uint64_t payload_used;              /* atomic: bytes of payload buffers */
    unsigned payload_waiters;           /* atomic: clients waiting, all workers */
    struct peer_table *peers;           /* connections per client address */
    /* --user (privs.c) */
    bool run_as;
    uid_t run_uid;
    gid_t run_gid;
    char run_user[64];
};

/* ---- tls.c: TLS credentials ---- */

/* Loads the credentials for mode (nothing for NBDS_TLS_OFF): x509 from
 * certs_dir, PSKs from psk_file (either may be NULL, not both).  0, or a
 * negative errno with the reason logged. */
int tls_setup(struct vdiskd *d, enum nbds_tls_mode mode, const char *certs_dir,
              const char *psk_file, bool verify_peer);
enum nbds_tls_mode tls_mode(const struct vdiskd *d);
/* nbds_config.tls_context (opaque: the worker). */
void *tls_context(void *opaque);
/* SIGHUP: the same files again; the old context stays if they fail. */
void tls_reload(struct vdiskd *d);
void tls_free(struct vdiskd *d);

int worker_init(struct vdiskd *d, struct worker *w, unsigned id, bool stdio);
/* Wakes worker w's loop (any thread). */
void worker_wake(struct worker *w);
void worker_fini(struct worker *w);
int loop_add(struct worker *w, struct watch *wt, uint32_t events);
int loop_mod(struct worker *w, struct watch *wt, uint32_t events);
void loop_del(struct worker *w, struct watch *wt);
/* Starts workers 1.. as threads, runs worker 0 on the calling thread until
 * a signal asked to stop and every connection has ended, joins the others. */
int loop_run(struct vdiskd *d);
/* Starts serving a connected socket (takes ownership of fd) on the next
 * worker, round robin; slot (limits_admit's, may be NULL) is released
 * when the connection ends. */
struct peer_slot;
int client_start(struct vdiskd *d, int fd, const char *peer, struct peer_slot *slot);
/* nbds_config.notify: a completion queued a reply. */
void client_notify(void *opaque, struct nbds_conn *c);
/* Disconnects every connection of worker w using ex (its owner), waits
 * for their requests in flight and frees them; returns how many.  Runs on
 * w's thread, without d->lock. */
unsigned worker_disconnect_export(struct worker *w, struct export *ex, const char *why);
/* An export's users (d->lock held): the peer of each, and the next. */
const char *client_peer(const struct client *c);
/* The supplementary groups of a unix socket client (access.c): how many. */
size_t client_groups(const struct client *c, const uint32_t **out);
struct client *client_user_next(const struct client *c);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t vdiskd_now_ns(void);
/* Stops the daemon as SIGTERM does (worker 0 only); why goes to the log
 * and the SHUTDOWN event. */
void vdiskd_stop(struct vdiskd *d, const char *why);

/* ---- control.c: the JSON control API (worker 0) ---- */

struct json_t;
/* Listens on the control socket at path: mode 0600, or 0660 with the
 * group when group is not NULL.  Whatever the socket's mode, only the
 * daemon's user, root and members of that group may talk to it. */
int control_start(struct vdiskd *d, const char *path, const char *group);
/* The read-only control socket (--control-ro): queries only, mode 0666,
 * or 0660 with the group when group is not NULL (then only the daemon's
 * user, root and members of either control group may connect). */
int control_start_ro(struct vdiskd *d, const char *path, const char *group);
/* Closes both sockets and every control client. */
void control_stop(struct vdiskd *d);
/* Sends an event to every control client; takes the reference of data
 * (NULL: an empty object).  On worker 0; control_event_post from any
 * thread. */
void control_event(struct vdiskd *d, const char *name, struct json_t *data);
void control_event_post(struct vdiskd *d, const char *name, struct json_t *data);
/* Sends reply (taken) with id (taken) to the control client of that serial,
 * if it is still connected; from any thread. */
void control_reply_post(struct vdiskd *d, uint64_t serial, struct json_t *id,
                        struct json_t *reply);

/* ---- jobs.c: background jobs (snapshot-commit) ---- */

enum { JOB_STARTING, JOB_RUNNING };

struct vd_commit;
struct job {
    struct task t;                      /* the start, on the export's thread */
    struct vdiskd *d;
    unsigned id;
    struct export *ex;                  /* a reference */
    struct vd_commit *cm;               /* its thread only */
    char vol[VD_NAME_MAX + 1], snap[VD_NAME_MAX + 1];
    uint64_t speed;                     /* bytes per second, 0: no cap */
    uint64_t t0, t_event, t_scanned;    /* vdiskd_now_ns() */
    uint64_t win_start, win_guest, win_done;  /* the throttle's window (jobs.c) */
    double guest_rate;                  /* the clients' bytes/s in the last window */
    uint64_t last_reqs, t_active;       /* the clients' last activity */
    uint64_t done, total;               /* relaxed atomics: for query-jobs */
    int state;                          /* relaxed atomic */
    bool cancel;                        /* relaxed atomic: asked for */
    uint64_t serial;                    /* the control client that started it */
    struct json_t *idj;                 /* and its command id */
    struct job *next;                   /* d->jobs, under d->lock */
    struct job *wnext;                  /* its worker's jobs */
};

/* Starts committing snapshot snap of volume vol in the background (opening
 * the volume if nobody serves it); the reply (job id or error) goes to
 * control client serial later.  <0 with err set when it cannot start. */
int job_commit_start(struct vdiskd *d, const char *vol, const char *snap, uint64_t speed,
                     uint64_t serial, struct json_t *id, char *err, size_t errlen);
/* Asks job id to stop: -ENOENT if there is none. */
int job_cancel(struct vdiskd *d, unsigned id);
/* The jobs for query-jobs. */
struct json_t *jobs_query(struct vdiskd *d);
/* A loop round's work for the jobs of w (its thread). */
void jobs_run(struct worker *w);
/* Cancels the jobs of ex (on its thread) / every job of w. */
void jobs_cancel_export(struct worker *w, struct export *ex, const char *why);
void jobs_cancel_all(struct worker *w, const char *why);
/* True when name is "VOL@SNAP" of a snapshot being committed (d->lock). */
bool jobs_busy_locked(struct vdiskd *d, const char *name);

/* ---- pools.c: the broker of desktop pools ---- */

/* Opens "pool/POOL[/USER]" for a client (peer names it): the session's
 * clone, taken from the pool; d->lock held.  -ENOENT (no such pool, bad
 * name), -EAGAIN (every clone in use), other errors. */
int pools_open_locked(struct vdiskd *d, struct worker *w, const char *name, const char *peer,
                      bool query, struct export **out);
/* A pool clone's export closed: its session is over (d->lock held). */
void pools_closed_locked(struct vdiskd *d, const char *pool, const char *vol);
/* True when name is a pool clone (or a snapshot of one): not served by
 * its own name (d->lock held). */
bool pools_hidden_locked(struct vdiskd *d, const char *name);
/* Adds the pool/POOL entries who may open to an NBD_OPT_LIST (d->lock
 * held). */
int pools_list_locked(struct vdiskd *d, const struct vd_peer *who, struct nbds_list *l);
/* Ends the sessions of an earlier run, then keeps spares on worker 0. */
int pools_start(struct vdiskd *d);
void pools_stop(struct vdiskd *d);
/* Fills the pools now if a session began or ended (worker 0). */
void pools_kick(struct vdiskd *d);

/* ---- space.c: free space of the store ---- */

/* --space-warn "10,5,1": thresholds in percent free; -EINVAL if bad. */
int space_parse(struct vdiskd *d, const char *arg);
/* Checks now and every few seconds on worker 0 (events, log lines). */
int space_start(struct vdiskd *d);
void space_check(struct vdiskd *d);
void space_stop(struct vdiskd *d);

/* ---- limits.c: what one client may take ---- */

#define VDISKD_MAX_CONNS 1024           /* default --max-connections */
#define VDISKD_MAX_CONNS_CLIENT 256     /* default --max-connections-per-client */
#define VDISKD_MAX_INFLIGHT 64          /* default --max-inflight */
#define VDISKD_MAX_INFLIGHT_MAX 4096u
#define VDISKD_PAYLOAD_MEMORY (1ull << 30)  /* default --max-payload-memory */
#define VDISKD_PEER_KEY 64              /* "uid:1000", an IP address */

/* Sets the defaults above (before the options). */
void limits_defaults(struct vdiskd *d);
/* The table of clients and the open-files limit (raised to its hard
 * limit; a warning when --max-connections does not fit). */
int limits_start(struct vdiskd *d);
void limits_stop(struct vdiskd *d);
/* A connection just accepted from client key (peer: for the log): 0 and
 * *slot (for client_start), or -EUSERS when it is over a limit (logged,
 * at most once a second per limit: the caller closes it).  Worker 0. */
int limits_admit(struct vdiskd *d, const char *key, const char *peer, struct peer_slot **slot);
/* A connection accepted on the spare descriptor and closed (listen.c):
 * logged as refusals are. */
void limits_out_of_fds(struct vdiskd *d, const char *spec);
/* Logs the refusals not logged yet (worker 0, now and then). */
void limits_tick(struct vdiskd *d);
/* The connection of slot ended (any thread; NULL: nothing). */
void limits_release(struct vdiskd *d, struct peer_slot *slot);
/* The payload budget: takes n bytes, false when that would pass
 * --max-payload-memory while something is held (a request larger than
 * the whole budget still runs, alone); gives them back, waking the
 * workers whose clients wait.  Any thread. */
bool payload_take(struct vdiskd *d, uint64_t n);
void payload_give(struct vdiskd *d, uint64_t n);
/* nbds_config.payload_budget (opaque: the worker): a client refused
 * waits in its worker's queue until budget_retry lets it go on. */
extern const struct nbds_payload_budget payload_budget_hooks;
/* Retries w's waiting clients, oldest first, until one is refused again
 * (so that a large request is not passed forever by small ones). */
void budget_retry(struct worker *w);
/* Takes a client out of the queue (it is going away). */
void budget_unwait(struct worker *w, struct budget_waiter *bw);
/* loop.c, for the above: the client's waiter; asks nbd-server again
 * (true: it waits no more, or has ended); parses what waited. */
struct budget_waiter *client_waiter(struct client *c);
bool client_payload_retry(struct client *c);
void client_payload_resume(struct client *c);

/* ---- privs.c: --user ---- */

/* Parses --user USER[:GROUP] into d (names or numbers): 0, -EINVAL (no
 * such user or group: a usage error) or -EPERM (not root), said on
 * stderr. */
int privs_parse(struct vdiskd *d, const char *arg);
/* Opens the store as the --user user when there is one (its effective
 * ids only, root's again afterwards): whatever the store creates then
 * belongs to that user.  As vd_store_open. */
int privs_store_open(struct vdiskd *d, const char *dir);
/* Drops root for good (supplementary groups, group, user), and checks it
 * cannot be regained: 0, or a negative errno (logged); the daemon must
 * not go on after a failure. */
int privs_drop(struct vdiskd *d);

/* ---- listen.c: sockets ---- */

/* Adds a listener for "unix:PATH" or "tcp:HOST[:PORT]". */
int listen_add(struct vdiskd *d, const char *spec);
/* Closes every listening socket (and removes unix socket files). */
void listen_close_all(struct vdiskd *d);
/* A listening unix socket at path (a stale socket file is replaced, a live
 * one refused with -EADDRINUSE); mode (0: as the umask gives) and gid
 * ((gid_t)-1: unchanged) are set before it listens. */
int unix_listen(const char *path, mode_t mode, gid_t gid, int *out);

/* ---- exports.c: names to open chains ---- */

/* Counters of an export's requests, written by its thread and read by the
 * control API's (relaxed atomics: each counter is exact, a reading of
 * several is not one instant). */
#define STAT_LAT_BUCKETS 32             /* log2 of microseconds */
enum stat_kind { ST_READ, ST_WRITE, ST_FLUSH, ST_TRIM, ST_ZERO, ST_CACHE, ST_KINDS };
struct export_stats {
    uint64_t ops[ST_KINDS];             /* completed */
    uint64_t started;
    uint64_t completed;
    uint64_t errors;
    uint64_t bytes_read, bytes_written;
    uint64_t lat[STAT_LAT_BUCKETS];     /* [k]: latency < 2^(k+1) us */
};

/* What export-add and export-remove set (d->lock): a name that is not
 * served (removed), or an alias that serves target under another name;
 * either may make its connections read-only.  Not kept across restarts. */
#define EXPORT_NAME_MAX 255
struct export_cfg {
    char name[EXPORT_NAME_MAX + 1];
    char target[EXPORT_NAME_MAX + 1];   /* "" unless an alias */
    bool read_only;
    bool removed;
    struct export_cfg *next;
};

struct export {
    char *name;
    struct vd_chain *chain;             /* opened on owner->ctx */
    struct worker *owner;               /* the thread that serves it */
    unsigned refs;                      /* connections using it */
    bool writable;
    uint64_t size;                      /* at open, for other threads */
    unsigned depth;
    char description[256];
    struct vdiskd *d;
    struct export *next;
    bool close_posted;                  /* on owner->close_inbox */
    struct client *users;               /* its connections (loop.c) */
    struct export_stats st;
    char *pool;                         /* a pool's clone: that pool (pools.c) */
    time_t opened;
    struct export *close_next;
};

/* Finds or opens export `name` and takes a reference; a new export is
 * served by worker w (its chain opened on w->ctx).  -ENOENT unknown,
 * -EBUSY locked by another writer, other negative errnos from libvdisk.
 * Takes d->lock. */
int export_get(struct vdiskd *d, struct worker *w, const char *name, struct export **out);
int export_get_locked(struct vdiskd *d, struct worker *w, const char *name, struct export **out);
/* The same for a client's export name: an alias opens its target, a name
 * export-remove took away is -ENOENT, a pool name opens the session's
 * clone (for a query, query: the template version it would be a clone
 * of, *pool set); *read_only says whether this connection may only read.
 * The access rules of the target decide first (access_check_locked):
 * who is the client, peer its name for the log. */
int export_open_name(struct vdiskd *d, struct worker *w, const char *name,
                     const struct vd_peer *who, const char *peer, bool query,
                     struct export **out, bool *read_only, bool *pool);
/* export_get for a pool's clone (d->lock held): marks it with its pool. */
int export_get_clone_locked(struct vdiskd *d, struct worker *w, const char *vol,
                            const char *pool, struct export **out);
/* export-add: serve name again (target NULL), or serve target as name. */
int export_cfg_add(struct vdiskd *d, const char *name, const char *target, bool read_only,
                   char *err, size_t errlen);
/* export-remove's bookkeeping (d->lock held): stop serving name to new
 * clients; *alias says whether it was an alias (then nothing else to do). */
int export_cfg_remove_locked(struct vdiskd *d, const char *name, bool *alias, char *err,
                             size_t errlen);
void export_cfg_free(struct vdiskd *d);
struct json_t *export_cfg_query(struct vdiskd *d);
/* Drops a reference; the last one closes the chain (flush, clean), on the
 * export's own worker: from another thread the close is posted to it.
 * Takes d->lock. */
void export_put(struct vdiskd *d, struct export *ex);
/* The open export of that name, or NULL (d->lock held; refs may be 0 while
 * its close is posted: take a reference to keep it). */
struct export *export_find_locked(struct vdiskd *d, const char *name);
/* True when an export of that name is open (d->lock held). */
bool export_served_locked(struct vdiskd *d, const char *name);
/* Takes ex out of the table and closes its chain (d->lock held, on its
 * owner's thread, nothing in flight). */
void export_close_locked(struct vdiskd *d, struct export *ex);
/* Closes the exports posted to worker w (its loop calls this). */
void exports_close_posted(struct worker *w);
/* Adds every volume, snapshot, template version, pool and alias that
 * client who may open to an NBD_OPT_LIST.  Takes d->lock. */
int exports_list(struct vdiskd *d, const struct vd_peer *who, struct nbds_list *l);
/* Closes every export still open (shutdown). */
void exports_close_all(struct vdiskd *d);
/* "10 GiB" */
void fmt_size(uint64_t n, char *out, size_t outlen);

/* ---- access.c: who may open which export ---- */

/* A connection's client as the access rules see it (libvdisk's vd_peer):
 * p points into the connection's identity and into this struct, so both
 * must outlive its use. */
struct access_peer {
    struct vd_peer p;
    const char *alt[NBDS_MAX_SAN];
};
/* Fills ap for connection c (the --stdio one included: its peer is the
 * unix socket on stdin, or the user who started the daemon). */
void access_peer(struct nbds_conn *c, struct access_peer *ap);
/* May peer p open export name (a store name, after aliases: VOL, VOL@SNAP,
 * TPL, TPL@N, pool/POOL, pool/POOL/USER)?  0 (*read_only: only for
 * reading), -ENOENT when its rules refuse it (as for an unknown name),
 * -EACCES for pool/POOL/USER of another user, or a catalog error.  peer
 * names the client in the log line of a refusal (NULL: no log).  d->lock
 * held. */
int access_check_locked(struct vdiskd *d, const char *name, const struct vd_peer *p,
                        const char *peer, bool *read_only);
/* True when LIST shows name to p (access_check_locked says 0). */
bool access_listed_locked(struct vdiskd *d, const char *name, const struct vd_peer *p);
/* The supplementary groups of a unix socket's peer (SO_PEERGROUPS): how
 * many, in a malloc'ed array (*out, NULL when 0). */
size_t peer_groups(int fd, uint32_t **out);

/* ---- backend.c ---- */

extern const struct nbds_backend vdiskd_backend;

#endif
