/*
 * jobs.c - background jobs of the control API: snapshot-commit of a served
 * volume (libvdisk's vd_commit_*).
 *
 * A job runs on the thread that serves its volume, between that thread's
 * requests: each round of the loop pumps a few block copies, whose
 * completions arrive through the same I/O context as the clients' requests.
 * It holds a reference to the export, so the volume stays open (and locked
 * against other writers) until the job ends, even if every client leaves;
 * committing a volume nobody serves opens it for the job.
 *
 * Throttle: while the volume's clients have requests in flight, one block
 * copy at a time, and at most JOB_SHARE of the bytes per second the clients
 * moved over the last second (but JOB_MIN_RATE at least); when they are
 * idle, JOB_COPIES_IDLE at once.  The 'speed'
 * argument (bytes per second) caps that further.  Once the first pass is
 * over the job switches as soon as little is dirty; a guest that keeps
 * more than that dirty for JOB_CONVERGE_S seconds gets copies at the idle
 * rate, and after JOB_FORCE_S the switch copies whatever is dirty during
 * its pause.
 *
 * Events (to every control client): JOB_PROGRESS about once a second,
 * then JOB_COMPLETED (with "error" when it failed) or JOB_CANCELLED.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "vdiskd.h"

#define JOB_COPIES_IDLE 8
#define JOB_SHARE 0.02         /* while clients are busy: copy at most this share of their bytes/s */
#define JOB_MIN_RATE (16 << 20) /* but at least this many bytes per second */
#define JOB_CONVERGE_S 5
#define JOB_FORCE_S 30
#define JOB_EVENT_NS 1000000000ull

#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static json_t *job_ids(const struct job *j)
{
    return json_pack("{s:i,s:s,s:s,s:s}", "id", (int)j->id, "type", "commit", "volume",
                     j->vol, "snapshot", j->snap);
}

/* Takes j out of the lists and frees it (its thread, d->lock not held). */
static void job_end(struct worker *w, struct job *j)
{
    struct vdiskd *d = j->d;
    for (struct job **pp = &w->jobs; *pp; pp = &(*pp)->wnext) {
        if (*pp == j) {
            *pp = j->wnext;
            break;
        }
    }
    pthread_mutex_lock(&d->lock);
    for (struct job **pp = &d->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    export_put(d, j->ex);
    json_decref(j->idj);
    free(j);
}

/* Never wait for I/O holding d->lock: a read of this thread may wait for a
 * block cache load another thread started, and that thread may be waiting
 * for d->lock.  The copies in flight end first, then the store work. */
static void wait_copies(struct worker *w, struct job *j)
{
    struct vd_commit_status s;
    for (vd_commit_status(j->cm, &s); s.inflight; vd_commit_status(j->cm, &s))
        if (vd_ctx_poll(w->ctx, -1) < 0)
            break;
}

static void job_cancel_now(struct worker *w, struct job *j, const char *why)
{
    struct vdiskd *d = j->d;
    wait_copies(w, j);
    pthread_mutex_lock(&d->lock);
    vd_commit_cancel(j->cm);
    pthread_mutex_unlock(&d->lock);
    vlog(LOG_INFO, "commit of %s@%s (job %u) cancelled: %s; the snapshot is kept", j->vol,
         j->snap, j->id, why);
    json_t *e = job_ids(j);
    json_object_set_new(e, "reason", json_string(why));
    control_event_post(d, "JOB_CANCELLED", e);
    job_end(w, j);
}

/* ---- starting ---- */

static void start_run(struct worker *w, struct task *t)
{
    struct job *j = (struct job *)t;
    struct vdiskd *d = j->d;
    pthread_mutex_lock(&d->lock);
    int r = vd_commit_start(d->store, j->vol, j->snap, j->ex->chain, &j->cm);
    pthread_mutex_unlock(&d->lock);
    if (r < 0) {
        const char *msg = *vd_errmsg() ? vd_errmsg() : strerror(-r);
        vlog(LOG_ERR, "commit of %s@%s: %s", j->vol, j->snap, msg);
        control_reply_post(d, j->serial, j->idj,
                           json_pack("{s:{s:s,s:s}}", "error", "class", "GenericError",
                                     "desc", msg));
        j->idj = NULL;
        job_end(w, j);
        return;
    }
    j->t0 = j->t_event = j->win_start = vdiskd_now_ns();
    SET(j->state, JOB_RUNNING);
    j->wnext = w->jobs;
    w->jobs = j;
    vlog(LOG_INFO, "commit of %s@%s started on thread %u (job %u)", j->vol, j->snap, w->id,
         j->id);
    control_reply_post(d, j->serial, j->idj, json_pack("{s:{s:i}}", "return", "job",
                                                       (int)j->id));
    j->idj = NULL;
}

int job_commit_start(struct vdiskd *d, const char *vol, const char *snap, uint64_t speed,
                     uint64_t serial, json_t *id, char *err, size_t errlen)
{
    struct export *ex;
    int r;
    pthread_mutex_lock(&d->lock);
    for (struct job *o = d->jobs; o; o = o->next) {
        if (strcmp(o->vol, vol) == 0) {
            pthread_mutex_unlock(&d->lock);
            snprintf(err, errlen, "a commit of volume '%s' is already running (job %u)", vol,
                     o->id);
            return -EBUSY;
        }
    }
    ex = export_find_locked(d, vol);
    if (ex)
        ex->refs++;
    pthread_mutex_unlock(&d->lock);
    if (!ex && (r = export_get(d, &d->workers[0], vol, &ex)) < 0) {
        snprintf(err, errlen, "%s", r == -ENOENT ? "no such volume"
                                    : *vd_errmsg() ? vd_errmsg() : strerror(-r));
        return r;
    }
    if (!ex->writable) {
        export_put(d, ex);
        snprintf(err, errlen, "volume '%s' is not served for writing (--read-only, or not "
                 "a volume)", vol);
        return -EROFS;
    }
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        export_put(d, ex);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    j->t.run = start_run;
    j->d = d;
    j->ex = ex;
    j->speed = speed;
    j->serial = serial;
    j->idj = json_incref(id);
    snprintf(j->vol, sizeof(j->vol), "%s", vol);
    snprintf(j->snap, sizeof(j->snap), "%s", snap);
    pthread_mutex_lock(&d->lock);
    j->id = ++d->last_job;
    j->next = d->jobs;
    d->jobs = j;
    pthread_mutex_unlock(&d->lock);
    worker_post_task(ex->owner, &j->t);
    return 0;
}

/* ---- running ---- */

static void job_finish(struct worker *w, struct job *j, const struct vd_commit_status *s)
{
    struct vdiskd *d = j->d;
    uint64_t pause = 0;
    int r = vd_commit_settle(j->cm);   /* the waiting part, without d->lock */
    pthread_mutex_lock(&d->lock);
    if (r < 0)
        vd_commit_cancel(j->cm);   /* keeps the message */
    else
        r = vd_commit_finish(j->cm, &pause);
    j->cm = NULL;
    j->ex->depth = vd_chain_depth(j->ex->chain);
    pthread_mutex_unlock(&d->lock);
    double secs = (double)(vdiskd_now_ns() - j->t0) / 1e9;
    json_t *e = job_ids(j);
    json_object_set_new(e, "bytes", json_integer((json_int_t)s->done));
    json_object_set_new(e, "seconds", json_real(secs));
    if (r < 0) {
        const char *msg = *vd_errmsg() ? vd_errmsg() : strerror(-r);
        vlog(LOG_ERR, "commit of %s@%s (job %u) failed: %s", j->vol, j->snap, j->id, msg);
        json_object_set_new(e, "error", json_string(msg));
    } else {
        vlog(LOG_INFO, "committed snapshot %s of volume %s online (job %u): %.1f MiB "
             "copied in %.1f s, I/O paused %.1f ms", j->snap, j->vol, j->id,
             (double)s->done / 1048576.0, secs, (double)pause / 1e6);
        json_object_set_new(e, "pause-us", json_integer((json_int_t)(pause / 1000)));
    }
    control_event_post(d, "JOB_COMPLETED", e);
    job_end(w, j);
}

/* One job's share of a loop round. */
static void job_step(struct worker *w, struct job *j, uint64_t now)
{
    struct vd_commit_status s;
    if (GET(j->cancel)) {
        job_cancel_now(w, j, "cancelled by request");
        return;
    }
    vd_commit_status(j->cm, &s);
    SET(j->done, s.done);
    SET(j->total, s.total);
    if (s.scanned && !j->t_scanned)
        j->t_scanned = now;
    uint64_t since = j->t_scanned ? (now - j->t_scanned) / 1000000000ull : 0;
    if ((s.ready || since >= JOB_FORCE_S) && s.inflight == 0) {
        job_finish(w, j, &s);
        return;
    }
    /* The clients' bytes per second over the last window of a second. */
    const struct export_stats *es = &j->ex->st;
    uint64_t gb = GET(es->bytes_read) + GET(es->bytes_written);
    if (now - j->win_start >= 1000000000ull) {
        j->guest_rate = (double)(gb - j->win_guest) * 1e9 / (double)(now - j->win_start);
        j->win_start = now;
        j->win_guest = gb;
        j->win_done = s.done;
    }
    /* Busy: requests in flight, or some completed in the last 100 ms. */
    uint64_t done_reqs = GET(es->completed);
    if (done_reqs != j->last_reqs || GET(es->started) != done_reqs) {
        j->last_reqs = done_reqs;
        j->t_active = now;
    }
    bool busy = now - j->t_active < 100000000ull;
    unsigned limit = busy && since < JOB_CONVERGE_S ? 1 : JOB_COPIES_IDLE;
    if (busy && since < JOB_CONVERGE_S && !j->speed) {
        /* The clients' I/O first: copy at most a share of their rate. */
        double cap = JOB_SHARE * j->guest_rate;
        if (cap < JOB_MIN_RATE)
            cap = JOB_MIN_RATE;
        if ((double)(s.done - j->win_done) > cap * (double)(now - j->win_start) / 1e9 + 262144.0)
            limit = 0;
    }
    if (j->speed && s.done > j->speed * ((now - j->t0) / 1000000ull) / 1000ull)
        limit = 0;   /* ahead of the speed asked for */
    if (limit && s.inflight < limit) {
        int r = vd_commit_pump(j->cm, limit);
        if (r < 0) {
            char why[512];
            snprintf(why, sizeof(why), "%s", *vd_errmsg() ? vd_errmsg() : strerror(-r));
            job_cancel_now(w, j, why);
            return;
        }
    }
    if (now - j->t_event >= JOB_EVENT_NS) {
        j->t_event = now;
        json_t *e = job_ids(j);
        json_object_set_new(e, "done", json_integer((json_int_t)s.done));
        json_object_set_new(e, "total", json_integer((json_int_t)s.total));
        control_event_post(j->d, "JOB_PROGRESS", e);
    }
}

void jobs_run(struct worker *w)
{
    if (!w->jobs)
        return;
    uint64_t now = vdiskd_now_ns();
    for (struct job *j = w->jobs, *next; j; j = next) {
        next = j->wnext;
        job_step(w, j, now);
    }
}

void jobs_cancel_export(struct worker *w, struct export *ex, const char *why)
{
    for (struct job *j = w->jobs, *next; j; j = next) {
        next = j->wnext;
        if (j->ex == ex)
            job_cancel_now(w, j, why);
    }
}

void jobs_cancel_all(struct worker *w, const char *why)
{
    while (w->jobs)
        job_cancel_now(w, w->jobs, why);
}

/* ---- the control API's side ---- */

int job_cancel(struct vdiskd *d, unsigned id)
{
    int r = -ENOENT;
    pthread_mutex_lock(&d->lock);
    for (struct job *j = d->jobs; j; j = j->next) {
        if (j->id == id) {
            SET(j->cancel, true);
            worker_wake(j->ex->owner);
            r = 0;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

json_t *jobs_query(struct vdiskd *d)
{
    json_t *list = json_array();
    pthread_mutex_lock(&d->lock);
    for (struct job *j = d->jobs; j; j = j->next) {
        json_t *o = job_ids(j);
        json_object_set_new(o, "status", json_string(GET(j->state) == JOB_RUNNING ? "running"
                                                                                  : "starting"));
        json_object_set_new(o, "done", json_integer((json_int_t)GET(j->done)));
        json_object_set_new(o, "total", json_integer((json_int_t)GET(j->total)));
        json_object_set_new(o, "speed", json_integer((json_int_t)j->speed));
        json_object_set_new(o, "thread", json_integer((json_int_t)j->ex->owner->id));
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&d->lock);
    return list;
}

bool jobs_busy_locked(struct vdiskd *d, const char *name)
{
    for (struct job *j = d->jobs; j; j = j->next) {
        size_t n = strlen(j->vol);
        if (strncmp(name, j->vol, n) == 0 && name[n] == '@' && strcmp(name + n + 1, j->snap) == 0)
            return true;
    }
    return false;
}
