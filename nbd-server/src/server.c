/*
 * server.c - server and connection objects, the input side of a
 * connection (read, split into messages, hand them to the handshake or the
 * transmission code), nbds_conn_io and the one-connection nbds_serve loop.
 *
 * Flow control: a connection stops reading new requests while
 * max_inflight requests are in flight or more than NBDS_OUTQ_HIGH bytes of
 * replies wait to be written; a WRITE payload being received is always
 * read to its end.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

int nbds_server_new(const struct nbds_config *cfg, struct nbds_server **out)
{
    *out = NULL;
    if (!cfg || !cfg->backend || !cfg->backend->open || !cfg->backend->close ||
        !cfg->backend->read || !cfg->backend->write)
        return -EINVAL;
    struct nbds_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.max_payload)
        s->cfg.max_payload = NBDS_DEFAULT_MAX_PAYLOAD;
    if (!s->cfg.max_inflight)
        s->cfg.max_inflight = NBDS_DEFAULT_INFLIGHT;
    *out = s;
    return 0;
}

void nbds_server_free(struct nbds_server *s)
{
    if (!s)
        return;
    nbds_pool_free(s);
    free(s);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int nbds_conn_new(struct nbds_server *s, int in_fd, int out_fd, const char *peer,
                  void *user, struct nbds_conn **out)
{
    *out = NULL;
    int r = set_nonblock(in_fd);
    if (r < 0 || (r = set_nonblock(out_fd)) < 0)
        return r;
    struct nbds_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->srv = s;
    c->cfg = &s->cfg;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->out_is_sock = true;   /* sendmsg, falls back to writev on ENOTSOCK */
    c->user = user;
    c->max_inflight = s->cfg.max_inflight;
    c->max_payload = s->cfg.max_payload;
    c->oq_tail = &c->oq_head;
    c->peer = strdup(peer ? peer : "?");
    c->inbuf = malloc(NBDS_INBUF_SIZE);
    if (!c->peer || !c->inbuf || (r = nbds_hs_start(c)) < 0) {
        free(c->peer);
        free(c->inbuf);
        free(c);
        return r < 0 ? r : -ENOMEM;
    }
    nbds_debug(c, "new connection");
    *out = c;
    return 0;
}

void nbds_conn_free(struct nbds_conn *c)
{
    if (!c)
        return;
    if (c->export)
        c->cfg->backend->close(c->export);
    if (c->cur) {
        nbds_buf_put(c->srv, c->cur->buf, c->cur->len);
        free(c->cur);
    } else if (c->state == IN_OPT_DATA) {
        free(c->sink);
    }
    nbds_tls_free(c);
    nbds_outq_drop(c);
    free(c->meta_export);
    free(c->export_name);
    free(c->inbuf);
    free(c->peer);
    free(c);
}

void *nbds_conn_user(const struct nbds_conn *c) { return c->user; }
const char *nbds_conn_peer(const struct nbds_conn *c) { return c->peer; }
const char *nbds_conn_export(const struct nbds_conn *c) { return c->export_name; }
unsigned nbds_conn_inflight(const struct nbds_conn *c) { return c->inflight; }
bool nbds_conn_in_handshake(const struct nbds_conn *c) { return !c->transmission; }

void nbds_conn_shutdown(struct nbds_conn *c)
{
    c->shut = true;
    if (!c->closing)
        nbds_conn_end(c, -ESHUTDOWN);
}

bool nbds_conn_finished(const struct nbds_conn *c)
{
    return (c->dead || (c->closing && !c->oq_head)) && c->inflight == 0;
}

bool nbds_conn_paused(const struct nbds_conn *c) { return c->paused; }
void *nbds_conn_export_handle(const struct nbds_conn *c) { return c->export; }

void nbds_conn_resume(struct nbds_conn *c)
{
    c->paused = false;
}

int nbds_conn_move(struct nbds_conn *c, struct nbds_server *s)
{
    if (c->inflight || c->cur)
        return -EBUSY;
    for (struct nbds_oent *e = c->oq_head; e; e = e->next)
        if (e->payload)
            return -EBUSY;
    c->srv = s;
    c->cfg = &s->cfg;
    return 0;
}

/* May new messages be parsed now? */
static bool can_parse(const struct nbds_conn *c)
{
    if (c->closing)
        return false;
    /* From STARTTLS's ACK until the handshake is done, nothing is parsed:
     * the bytes that come are the handshake's. */
    if (c->tls == NBDS_CONN_TLS_ACKED || c->tls == NBDS_CONN_TLS_HANDSHAKE)
        return false;
    if (c->state == IN_OPT_DATA || c->state == IN_REQ_PAYLOAD)
        return true;
    if (c->paused)
        return false;
    return c->inflight < c->max_inflight && c->oq_bytes < NBDS_OUTQ_HIGH;
}

static bool want_read(const struct nbds_conn *c)
{
    return can_parse(c) && c->inlen - c->inpos < NBDS_INBUF_SIZE;
}

unsigned nbds_conn_events(const struct nbds_conn *c)
{
    unsigned ev = 0;
    if (c->dead)
        return 0;
    if (c->tls == NBDS_CONN_TLS_HANDSHAKE)
        return c->tls_want ? c->tls_want : POLLIN;
    if (want_read(c))
        ev |= POLLIN;
    if (c->oq_head)
        ev |= POLLOUT;
    if (c->tls == NBDS_CONN_TLS_UP) {
        /* What the session waits for (a read that must write first), and
         * input it decrypted already, which no POLLIN will announce: a
         * socket is nearly always writable, so asking for POLLOUT gets us
         * called to take it. */
        ev |= c->tls_want;
        if (want_read(c) && nbds_tls_pending(c))
            ev |= POLLOUT;
    }
    return ev;
}

/* Parses what the input buffer holds, as far as flow control allows. */
static void parse(struct nbds_conn *c)
{
    while (can_parse(c)) {
        size_t avail = c->inlen - c->inpos;
        const uint8_t *p = c->inbuf + c->inpos;
        size_t need = 0;
        switch (c->state) {
        case IN_CLIENT_FLAGS: need = 4; break;
        case IN_OPT_HDR: need = NBD_OPTION_HDR_SIZE; break;
        case IN_REQ_HDR: need = NBD_REQUEST_SIZE; break;
        case IN_OPT_DATA:
        case IN_REQ_PAYLOAD: {
            size_t n = c->sink_len - c->sink_got;
            if (n > avail)
                n = avail;
            if (c->sink && n)
                memcpy(c->sink + c->sink_got, p, n);
            c->sink_got += n;
            c->inpos += n;
            if (c->sink_got < c->sink_len)
                return;
            if (c->state == IN_OPT_DATA) {
                uint8_t *d = c->sink;
                c->sink = NULL;
                nbds_hs_option(c, d);
                free(d);
            } else {
                nbds_tx_payload_done(c);
            }
            continue;
        }
        }
        if (avail < need)
            return;
        c->inpos += need;
        switch (c->state) {
        case IN_CLIENT_FLAGS: nbds_hs_client_flags(c, get32(p)); break;
        case IN_OPT_HDR: nbds_hs_option_header(c, p); break;
        case IN_REQ_HDR: nbds_tx_request(c, p); break;
        default: break;
        }
    }
}

/* Reads what is there; returns 0, or -EAGAIN when nothing more.  The
 * rest of a large WRITE payload is read straight into its buffer (what
 * follows it, into the input buffer in the same call) rather than copied
 * through the input buffer. */
static int read_some(struct nbds_conn *c)
{
    if (c->inpos == c->inlen) {
        c->inpos = c->inlen = 0;
    } else if (c->inpos > 0 && c->inlen > NBDS_INBUF_SIZE / 2) {
        memmove(c->inbuf, c->inbuf + c->inpos, c->inlen - c->inpos);
        c->inlen -= c->inpos;
        c->inpos = 0;
    }
    if (c->inlen == NBDS_INBUF_SIZE)
        return -EAGAIN;
    ssize_t n;
    size_t direct = 0;
    if (c->tls == NBDS_CONN_TLS_UP) {
        /* Through the session: a large payload is decrypted straight into
         * its buffer (one record per call), the rest into the input
         * buffer. */
        uint8_t *dst = c->inbuf + c->inlen;
        size_t room = NBDS_INBUF_SIZE - c->inlen;
        if (c->state == IN_REQ_PAYLOAD && c->sink && c->inlen == 0 &&
            c->sink_len - c->sink_got >= NBDS_DIRECT_MIN) {
            dst = c->sink + c->sink_got;
            room = direct = c->sink_len - c->sink_got;
        }
        n = nbds_tls_read(c, dst, room);
        if (n == -EAGAIN)
            return -EAGAIN;
        if (n < 0) {
            nbds_conn_fail(c, (int)n);
            return -EAGAIN;
        }
        goto got;
    }
    struct iovec iov[2];
    int niov = 0;
    if (c->state == IN_REQ_PAYLOAD && c->sink && c->inlen == 0 &&
        c->sink_len - c->sink_got >= NBDS_DIRECT_MIN) {
        direct = c->sink_len - c->sink_got;
        iov[niov++] = (struct iovec){ c->sink + c->sink_got, direct };
    }
    iov[niov++] = (struct iovec){ c->inbuf + c->inlen, NBDS_INBUF_SIZE - c->inlen };
    n = niov == 1 ? read(c->in_fd, iov[0].iov_base, iov[0].iov_len)
                  : readv(c->in_fd, iov, niov);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        nbds_conn_fail(c, -errno);
        return -EAGAIN;
    }
got:
    if (n == 0) {
        /* EOF: between messages of the transmission phase it is the
         * client hanging up; anywhere else the stream was cut short. */
        bool clean = c->transmission && c->state == IN_REQ_HDR && c->inpos == c->inlen;
        nbds_debug(c, "end of input%s", clean ? "" : " inside a message");
        nbds_conn_end(c, clean ? 0 : -ECONNRESET);
        return -EAGAIN;
    }
    if (direct) {
        size_t k = (size_t)n < direct ? (size_t)n : direct;
        c->sink_got += k;
        n -= (ssize_t)k;
    }
    c->inlen += (size_t)n;
    return 0;
}

/* STARTTLS's ACK is out: the socket is the TLS session's from here. */
static void tls_start(struct nbds_conn *c)
{
    int r;

    if (c->inpos != c->inlen) {
        /* The client cannot have seen the ACK before sending these: they
         * are plaintext meant to be taken as if under TLS. */
        nbds_debug(c, "plaintext after STARTTLS, before the TLS handshake");
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    r = nbds_tls_begin(c);
    if (r < 0) {
        nbds_conn_fail(c, r);
        return;
    }
    c->tls = NBDS_CONN_TLS_HANDSHAKE;
}

/* Drives the TLS handshake; false while it is not done (or failed). */
static bool tls_handshake(struct nbds_conn *c)
{
    int r = nbds_tls_handshake(c);

    if (r < 0)
        nbds_conn_fail(c, r);
    return r > 0;
}

int nbds_conn_io(struct nbds_conn *c, unsigned revents)
{
    c->in_io++;
    if (c->tls == NBDS_CONN_TLS_HANDSHAKE && !c->dead && !tls_handshake(c))
        goto out;
    parse(c);
    /* Under TLS any readiness may let the session read: it may hold
     * decrypted input, or have waited to write before it could. */
    if (c->tls == NBDS_CONN_TLS_UP && revents)
        revents |= POLLIN;
    if (!c->closing && (revents & (POLLIN | POLLHUP | POLLERR))) {
        if (want_read(c)) {
            /* A bounded number of reads, so that one busy client does not
             * starve the others of the caller's loop. */
            /* (A TLS read takes one record, 16 KiB at most.) */
            int reads = c->tls == NBDS_CONN_TLS_UP ? 64 : 16;
            for (int i = 0; i < reads && want_read(c); i++) {
                if (read_some(c) < 0)
                    break;
                parse(c);
            }
        } else if (revents & (POLLHUP | POLLERR)) {
            /* Hang-up while we do not read: the peer is gone both ways
             * (a half-close shows as POLLIN alone), so no reply can reach
             * it and level-triggered pollers would spin on the event. */
            nbds_conn_end(c, (revents & POLLERR) ? -ECONNRESET : 0);
        }
    }
    if (!c->dead && c->oq_head) {
        int r = nbds_outq_flush(c);
        if (r < 0 && r != -EAGAIN)
            nbds_conn_fail(c, r);
        else if (r == 0)
            parse(c);   /* the backlog may have held reading back */
    }
    if (c->tls == NBDS_CONN_TLS_ACKED && !c->oq_head && !c->dead) {
        tls_start(c);
        /* The client may have sent its hello already. */
        if (c->tls == NBDS_CONN_TLS_HANDSHAKE && !c->dead && tls_handshake(c))
            parse(c);
    }
out:
    c->in_io--;
    if (nbds_conn_finished(c))
        return c->end_err ? c->end_err : -ECONNRESET;
    return 0;
}

int nbds_serve(struct nbds_server *s, int in_fd, int out_fd, int extra_fd,
               void (*extra)(void *opaque), void *extra_opaque)
{
    struct nbds_conn *c;
    char peer[32];
    snprintf(peer, sizeof(peer), "fd:%d,%d", in_fd, out_fd);
    int r = nbds_conn_new(s, in_fd, out_fd, peer, NULL, &c);
    if (r < 0)
        return r;
    for (;;) {
        struct pollfd pfd[3];
        int n = 0, iin, iout, iextra = -1;
        unsigned ev = nbds_conn_events(c);
        if (in_fd == out_fd) {
            pfd[n] = (struct pollfd){ .fd = in_fd, .events = (short)ev };
            iin = iout = n++;
        } else {
            pfd[n] = (struct pollfd){ .fd = in_fd, .events = (short)(ev & POLLIN) };
            iin = n++;
            pfd[n] = (struct pollfd){ .fd = out_fd, .events = (short)(ev & POLLOUT) };
            iout = n++;
        }
        if (extra_fd >= 0) {
            pfd[n] = (struct pollfd){ .fd = extra_fd, .events = POLLIN };
            iextra = n++;
        }
        /* Nothing to wait for (dead with requests in flight and no
         * completion descriptor) cannot make progress: give up waiting. */
        int timeout = (ev == 0 && extra_fd < 0) ? 0 : -1;
        int pr = poll(pfd, (nfds_t)n, timeout);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        if (iextra >= 0 && (pfd[iextra].revents & POLLIN) && extra)
            extra(extra_opaque);
        unsigned rev = (unsigned)(pfd[iin].revents & (POLLIN | POLLHUP | POLLERR));
        rev |= (unsigned)(pfd[iout].revents & (POLLOUT | POLLERR));
        r = nbds_conn_io(c, rev);
        if (r < 0) {
            /* A client that ended the connection is a clean end. */
            r = (c->end_err == -ECONNRESET || c->end_err == 0) ? 0 : c->end_err;
            break;
        }
        if (timeout == 0 && pr == 0 && nbds_conn_events(c) == 0 && !nbds_conn_finished(c)) {
            r = -EIO;
            break;
        }
    }
    if (nbds_conn_inflight(c) == 0)
        nbds_conn_free(c);
    return r;
}

bool nbds_conn_query_open(const struct nbds_conn *c)
{
    return c->query_open;
}

void nbds_conn_set_cred(struct nbds_conn *c, uint32_t uid, uint32_t gid, int32_t pid)
{
    c->id.has_cred = true;
    c->id.uid = uid;
    c->id.gid = gid;
    c->id.pid = pid;
}

const struct nbds_identity *nbds_conn_identity(const struct nbds_conn *c)
{
    return &c->id;
}
