/*
 * outq.c - the output queue of a connection: messages in order, written
 * with as few system calls as possible (sendmsg/writev of many entries).
 * Replies of different requests never interleave inside a message, since
 * each message is queued whole.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

#define OUTQ_IOV 64
/* What an entry costs beyond its bytes, counted in oq_bytes too: a client
 * that never reads its replies must not queue millions of small ones
 * under the high-water mark. */
#define OENT_OVERHEAD (sizeof(struct nbds_oent) + 16)

struct nbds_oent *nbds_oent_new(size_t hlen)
{
    struct nbds_oent *e = calloc(1, sizeof(*e) + hlen);
    if (e)
        e->hlen = hlen;
    return e;
}

static void oent_free(struct nbds_conn *c, struct nbds_oent *e)
{
    nbds_buf_put(c->srv, e->payload, e->payload_len);
    free(e);
}

void nbds_outq_push(struct nbds_conn *c, struct nbds_oent *e)
{
    if (c->dead) {
        oent_free(c, e);
        return;
    }
    e->next = NULL;
    *c->oq_tail = e;
    c->oq_tail = &e->next;
    c->oq_bytes += e->hlen + e->dlen + OENT_OVERHEAD;
}

void nbds_outq_drop(struct nbds_conn *c)
{
    struct nbds_oent *e = c->oq_head;
    while (e) {
        struct nbds_oent *next = e->next;
        oent_free(c, e);
        e = next;
    }
    c->oq_head = NULL;
    c->oq_tail = &c->oq_head;
    c->oq_bytes = 0;
}

int nbds_outq_flush(struct nbds_conn *c)
{
    if (c->tls == NBDS_CONN_TLS_UP)
        return nbds_tls_flush(c);
    while (c->oq_head && !c->dead) {
        struct iovec iov[OUTQ_IOV];
        int n = 0;
        for (struct nbds_oent *e = c->oq_head; e && n < OUTQ_IOV - 1; e = e->next) {
            size_t done = e->done;
            if (done < e->hlen) {
                iov[n].iov_base = e->hdr + done;
                iov[n++].iov_len = e->hlen - done;
                done = 0;
            } else {
                done -= e->hlen;
            }
            if (e->dlen > done) {
                iov[n].iov_base = (uint8_t *)e->data + done;
                iov[n++].iov_len = e->dlen - done;
            }
        }
        ssize_t w;
        if (c->out_is_sock) {
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
            w = sendmsg(c->out_fd, &mh, MSG_NOSIGNAL);
            if (w < 0 && errno == ENOTSOCK) {
                c->out_is_sock = false;
                continue;
            }
        } else {
            w = writev(c->out_fd, iov, n);
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -EAGAIN;
            return -errno;
        }
        nbds_outq_consume(c, (size_t)w);
    }
    return 0;
}

void nbds_outq_consume(struct nbds_conn *c, size_t left)
{
    c->oq_bytes -= left;
    while (left > 0) {
        struct nbds_oent *e = c->oq_head;
        size_t rest = e->hlen + e->dlen - e->done;
        if (left < rest) {
            e->done += left;
            break;
        }
        left -= rest;
        c->oq_head = e->next;
        if (!c->oq_head)
            c->oq_tail = &c->oq_head;
        c->oq_bytes -= OENT_OVERHEAD;
        oent_free(c, e);
    }
}

void nbds_conn_end(struct nbds_conn *c, int err)
{
    if (!c->closing) {
        c->closing = true;
        c->end_err = err;
        nbds_debug(c, "connection ending (errno %d)", -err);
    }
}

void nbds_conn_fail(struct nbds_conn *c, int err)
{
    if (c->dead)
        return;
    nbds_debug(c, "connection failed: errno %d", -err);
    c->closing = true;
    c->dead = true;
    if (!c->end_err)
        c->end_err = err;
    nbds_outq_drop(c);
}
