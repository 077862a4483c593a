/*
 * limits.c - what one client may take of the daemon: connections (in all
 * and per client address) and the memory that request payloads hold.
 *
 * A client is its address: the IP address of a TCP peer (any port), the
 * uid of a unix socket peer.  A connection over a limit is accepted and
 * closed at once, before anything is read from it or allocated for it
 * (listen.c), so a flood costs the others an accept and a close per
 * connection.  Refusals are logged at most once a second per limit, with
 * the count of those not logged since, so that a flood cannot fill the
 * log either.
 *
 * The payload budget (--max-payload-memory) is shared by every worker:
 * nbd-server asks for a request's bytes before it allocates its buffer
 * (payload_take, through loop.c's hooks) and gives them back when the
 * buffer is freed (payload_give).  A request refused waits, its
 * connection unread, until memory is given back: payload_give wakes the
 * workers that have such connections (w->budget_nwait), and loop.c
 * retries them.  The counts use sequentially consistent atomics so that a
 * waiter that registers and checks again, and a giver that gives back and
 * looks for waiters, cannot both miss each other.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "vdiskd.h"

#define PEER_BUCKETS 1024u
#define FD_RESERVE 256u         /* descriptors besides connections: layers, sockets */

/* Connections from one client address.  Freed when the count reaches 0. */
struct peer_slot {
    char key[VDISKD_PEER_KEY];
    unsigned n;
    struct peer_slot *next;
};

struct peer_table {
    pthread_mutex_t lock;       /* admit on worker 0, release on any worker */
    struct peer_slot *b[PEER_BUCKETS];
};

/* One line per second per limit, at most (worker 0 only). */
struct refusal_log {
    time_t last;
    unsigned quiet;             /* refused since the last line, not logged */
};
static struct refusal_log log_total, log_client, log_fds;

void limits_defaults(struct vdiskd *d)
{
    d->max_conns = VDISKD_MAX_CONNS;
    d->max_conns_client = VDISKD_MAX_CONNS_CLIENT;
    d->handshake_timeout = VDISKD_HANDSHAKE_TIMEOUT;
    d->max_inflight = VDISKD_MAX_INFLIGHT;
    d->payload_limit = VDISKD_PAYLOAD_MEMORY;
}

int limits_start(struct vdiskd *d)
{
    struct rlimit rl;
    d->peers = calloc(1, sizeof(*d->peers));
    if (!d->peers)
        return -ENOMEM;
    pthread_mutex_init(&d->peers->lock, NULL);
    /* Every connection is a descriptor: take what the hard limit allows
     * rather than fail accept() at the soft one (often 1024). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && d->max_conns &&
            (rlim_t)d->max_conns + FD_RESERVE > rl.rlim_cur)
            vlog(LOG_WARNING, "open files are limited to %llu: fewer than --max-connections "
                 "%u needs (plus %u); raise the limit (ulimit -n, LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, d->max_conns, FD_RESERVE);
    }
    return 0;
}

void limits_stop(struct vdiskd *d)
{
    if (!d->peers)
        return;
    for (unsigned i = 0; i < PEER_BUCKETS; i++) {
        while (d->peers->b[i]) {
            struct peer_slot *s = d->peers->b[i];
            d->peers->b[i] = s->next;
            free(s);
        }
    }
    pthread_mutex_destroy(&d->peers->lock);
    free(d->peers);
    d->peers = NULL;
}

static unsigned key_hash(const char *key)
{
    unsigned h = 2166136261u;           /* FNV-1a */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h % PEER_BUCKETS;
}

static void refused(struct refusal_log *rl, const char *peer, const char *why)
{
    time_t now = time(NULL);
    if (now == rl->last) {
        rl->quiet++;
        return;
    }
    if (rl->quiet)
        vlog(LOG_WARNING, "%s: refused: %s (and %u more refused in the last seconds)",
             peer, why, rl->quiet);
    else
        vlog(LOG_WARNING, "%s: refused: %s", peer, why);
    rl->last = now;
    rl->quiet = 0;
}

/* Logs what refused() kept quiet, once its second is over. */
static void refusals_flush(struct refusal_log *rl, const char *opt)
{
    time_t now = time(NULL);
    if (!rl->quiet || now == rl->last)
        return;
    vlog(LOG_WARNING, "refused %u more connection(s) over %s", rl->quiet, opt);
    rl->quiet = 0;
    rl->last = now;
}

void limits_tick(struct vdiskd *d)
{
    (void)d;
    refusals_flush(&log_total, "--max-connections");
    refusals_flush(&log_client, "--max-connections-per-client");
    refusals_flush(&log_fds, "the open-files limit");
}

void limits_out_of_fds(struct vdiskd *d, const char *spec)
{
    (void)d;
    refused(&log_fds, spec, "out of file descriptors (ulimit -n, LimitNOFILE=)");
}

int limits_admit(struct vdiskd *d, const char *key, const char *peer, struct peer_slot **slot)
{
    char why[160];
    *slot = NULL;
    /* Only worker 0 adds connections, so this count cannot be passed. */
    unsigned n = __atomic_load_n(&d->nclients, __ATOMIC_ACQUIRE);
    if (d->max_conns && n >= d->max_conns) {
        snprintf(why, sizeof(why), "%u connections already (--max-connections)", n);
        refused(&log_total, peer, why);
        return -EUSERS;
    }
    if (!d->peers)
        return 0;
    struct peer_table *t = d->peers;
    unsigned h = key_hash(key);
    struct peer_slot *s;
    pthread_mutex_lock(&t->lock);
    for (s = t->b[h]; s && strcmp(s->key, key) != 0; s = s->next)
        ;
    if (s && d->max_conns_client && s->n >= d->max_conns_client) {
        n = s->n;
        pthread_mutex_unlock(&t->lock);
        snprintf(why, sizeof(why), "%u connections from %s already "
                 "(--max-connections-per-client)", n, key);
        refused(&log_client, peer, why);
        return -EUSERS;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            pthread_mutex_unlock(&t->lock);
            return -ENOMEM;
        }
        snprintf(s->key, sizeof(s->key), "%s", key);
        s->next = t->b[h];
        t->b[h] = s;
    }
    s->n++;
    pthread_mutex_unlock(&t->lock);
    *slot = s;
    return 0;
}

void limits_release(struct vdiskd *d, struct peer_slot *slot)
{
    if (!slot)
        return;
    struct peer_table *t = d->peers;
    pthread_mutex_lock(&t->lock);
    if (--slot->n == 0) {
        struct peer_slot **pp = &t->b[key_hash(slot->key)];
        while (*pp != slot)
            pp = &(*pp)->next;
        *pp = slot->next;
        free(slot);
    }
    pthread_mutex_unlock(&t->lock);
}

bool payload_take(struct vdiskd *d, uint64_t n)
{
    uint64_t used = __atomic_load_n(&d->payload_used, __ATOMIC_SEQ_CST);
    do {
        /* With nothing held, any request fits: one larger than the
         * whole budget must not wait forever. */
        if (used && used + n > d->payload_limit)
            return false;
    } while (!__atomic_compare_exchange_n(&d->payload_used, &used, used + n, true,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return true;
}

void payload_give(struct vdiskd *d, uint64_t n)
{
    __atomic_sub_fetch(&d->payload_used, n, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&d->payload_waiters, __ATOMIC_SEQ_CST) == 0)
        return;
    for (unsigned i = 0; i < d->nworkers; i++)
        if (__atomic_load_n(&d->workers[i].budget_nwait, __ATOMIC_SEQ_CST))
            worker_wake(&d->workers[i]);
}

void budget_unwait(struct worker *w, struct budget_waiter *bw)
{
    if (!bw->queued)
        return;
    struct budget_waiter **pp = &w->budget_wait;
    while (*pp != bw)
        pp = &(*pp)->next;
    *pp = bw->next;
    if (!*pp)
        w->budget_tail = pp;
    bw->queued = false;
    __atomic_sub_fetch(&w->budget_nwait, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&w->d->payload_waiters, 1, __ATOMIC_SEQ_CST);
}

/* A client refused joins the queue and is counted before it asks a
 * second time: a payload_give between the two either sees the count and
 * wakes this worker, or leaves enough for the second try. */
static bool budget_take(void *opaque, struct nbds_conn *conn, size_t n)
{
    struct worker *w = opaque;
    struct budget_waiter *bw = client_waiter(nbds_conn_user(conn));
    if (payload_take(w->d, n))
        return true;
    if (bw->queued)
        return false;               /* budget_retry asking again */
    bw->queued = true;
    bw->next = NULL;
    *w->budget_tail = bw;
    w->budget_tail = &bw->next;
    __atomic_add_fetch(&w->budget_nwait, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&w->d->payload_waiters, 1, __ATOMIC_SEQ_CST);
    if (!payload_take(w->d, n))
        return false;
    budget_unwait(w, bw);
    return true;
}

static void budget_give(void *opaque, size_t n)
{
    struct worker *w = opaque;
    payload_give(w->d, n);
}

const struct nbds_payload_budget payload_budget_hooks = { budget_take, budget_give };

void budget_retry(struct worker *w)
{
    while (w->budget_wait) {
        struct budget_waiter *bw = w->budget_wait;
        if (!client_payload_retry(bw->c))
            break;
        /* Out of the queue before its input is parsed: a next request
         * refused there must queue it again. */
        budget_unwait(w, bw);
        client_payload_resume(bw->c);
    }
}
