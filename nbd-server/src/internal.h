/*
 * internal.h - the library's private structures, shared by its files:
 *   server.c        server and connection objects, nbds_conn_io, nbds_serve
 *   bufpool.c       payload buffers, reused
 *   outq.c          the output queue and its writer
 *   handshake.c     fixed newstyle negotiation and the options
 *   transmission.c  requests, their checks, dispatch and replies
 *   tls.c           the TLS session after NBD_OPT_STARTTLS (OpenSSL)
 */
#ifndef NBDS_INTERNAL_H
#define NBDS_INTERNAL_H

#include <stdio.h>

#include "nbd-server.h"
#include "proto.h"

#define NBDS_OPT_MAX        (64u << 10)   /* largest option payload read */
#define NBDS_INBUF_SIZE     (128u << 10)
#define NBDS_OUTQ_HIGH      (8u << 20)    /* stop reading above this backlog */
#define NBDS_MAX_EXTENTS    1024u         /* per block status chunk */
#define NBDS_DEFAULT_INFLIGHT 64u
#define NBDS_POOL_MIN       4096u         /* smallest payload buffer class */
#define NBDS_POOL_CLASSES   14u           /* 4 KiB .. 32 MiB */
#define NBDS_POOL_BYTES     (64u << 20)   /* most kept for reuse per server */
#define NBDS_DIRECT_MIN     (32u << 10)   /* payload tails read in place */

struct nbds_server {
    struct nbds_config cfg;
    void *pool[NBDS_POOL_CLASSES];        /* bufpool.c free lists */
    size_t pool_bytes;
};

/* One message (or part) waiting to be written: `hlen` bytes of inline
 * header, then optionally `dlen` bytes at `data`.  `payload`, a buffer of
 * `payload_len` bytes from nbds_buf_get, goes back to the pool when the
 * entry has been written (or dropped). */
struct nbds_oent {
    struct nbds_oent *next;
    size_t hlen, dlen, done;
    const void *data;
    void *payload;
    size_t payload_len;
    uint8_t hdr[];
};

/* Where a connection is with TLS. */
enum nbds_conn_tls {
    NBDS_CONN_TLS_OFF = 0,
    NBDS_CONN_TLS_ACKED,        /* STARTTLS's ACK queued, in plaintext */
    NBDS_CONN_TLS_HANDSHAKE,    /* the ACK is out: the TLS handshake */
    NBDS_CONN_TLS_UP,           /* every byte goes through the session */
};

struct ssl_st;                  /* OpenSSL's SSL, kept out of this header */

enum nbds_in_state {
    IN_CLIENT_FLAGS,      /* 4 bytes */
    IN_OPT_HDR,           /* 16 bytes */
    IN_OPT_DATA,          /* option payload into the sink */
    IN_REQ_HDR,           /* 28 bytes */
    IN_REQ_PAYLOAD,       /* WRITE payload into the sink (or discarded) */
};

struct nbds_req {
    struct nbds_conn *conn;
    uint64_t cookie, off;
    uint32_t len;
    uint16_t type, flags;
    int refuse;           /* WRITE refused: payload discarded, then this error */
    const char *msg;      /* why it was refused */
    void *buf;
    uint64_t start_ns;    /* dispatched (CLOCK_MONOTONIC) */
};

struct nbds_conn {
    struct nbds_server *srv;
    const struct nbds_config *cfg;
    int in_fd, out_fd;
    bool out_is_sock;
    bool query_open;              /* the backend's open is for a query */
    char *peer;
    void *user;
    struct nbds_identity id;

    /* TLS (tls.c). */
    enum nbds_conn_tls tls;
    struct ssl_st *ssl;
    unsigned tls_want;      /* POLLIN/POLLOUT the session waits for */
    uint8_t *tls_wbuf;      /* replies gathered for SSL_write */
    size_t tls_retry;       /* bytes of a write to retry, 0: none */

    /* Input: bytes read and not yet parsed are inbuf[inpos, inlen). */
    uint8_t *inbuf;
    size_t inpos, inlen;
    enum nbds_in_state state;
    uint8_t *sink;        /* payload destination, NULL: discard */
    size_t sink_len, sink_got;

    /* Handshake. */
    bool fixed_newstyle, no_zeroes, structured;
    uint32_t opt, opt_len;
    bool opt_too_big;
    bool meta_selected[NBDS_CTX_COUNT];
    char *meta_export;    /* export SET_META_CONTEXT selected for */
    struct nbds_req *cur; /* the WRITE whose payload is being read */

    /* The export, once GO or EXPORT_NAME opened it. */
    void *export;
    char *export_name;
    struct nbds_export_info info;
    uint16_t tflags;

    /* Output queue. */
    struct nbds_oent *oq_head, **oq_tail;
    size_t oq_bytes;

    unsigned inflight, max_inflight;
    uint32_t max_payload;
    int in_io;            /* > 0 while inside nbds_conn_io */
    bool transmission;    /* handshake over */
    bool closing;         /* read no more; finish when replies are out */
    bool dead;            /* output is gone too; finish when nothing in flight */
    bool shut;            /* nbds_conn_shutdown */
    bool paused;          /* pause_at_transmission, until nbds_conn_resume */
    int end_err;          /* 0: clean end (DISC, ABORT, EOF), else -errno */
};

#define nbds_debug(c, ...) do {                                        \
        if ((c)->cfg->verbose) {                                       \
            fprintf(stderr, "nbds: %s: ", (c)->peer);                  \
            fprintf(stderr, __VA_ARGS__);                              \
            fputc('\n', stderr);                                       \
        }                                                              \
    } while (0)

/* bufpool.c */
void *nbds_buf_get(struct nbds_server *s, size_t len);
void nbds_buf_put(struct nbds_server *s, void *buf, size_t len);   /* NULL: no-op */
void nbds_pool_free(struct nbds_server *s);

/* outq.c */
struct nbds_oent *nbds_oent_new(size_t hlen);
void nbds_outq_push(struct nbds_conn *c, struct nbds_oent *e);
void nbds_outq_drop(struct nbds_conn *c);
int nbds_outq_flush(struct nbds_conn *c);   /* 0, -EAGAIN or -errno */
/* The first n bytes of the queue were written: entries done are freed. */
void nbds_outq_consume(struct nbds_conn *c, size_t n);
/* Ends the connection: no more input; what is queued is still written.
 * err: 0 for a clean end, else why.  nbds_conn_fail also drops the output
 * (hard disconnect). */
void nbds_conn_end(struct nbds_conn *c, int err);
void nbds_conn_fail(struct nbds_conn *c, int err);

/* handshake.c */
int nbds_hs_start(struct nbds_conn *c);
void nbds_hs_client_flags(struct nbds_conn *c, uint32_t flags);
void nbds_hs_option_header(struct nbds_conn *c, const uint8_t *hdr);
void nbds_hs_option(struct nbds_conn *c, const uint8_t *data);

/* transmission.c */
void nbds_tx_request(struct nbds_conn *c, const uint8_t *hdr);
void nbds_tx_payload_done(struct nbds_conn *c);

/* tls.c.  begin: the session after STARTTLS's ACK is out (-ENOTSUP when no
 * context is configured); handshake: 1 done (the identity filled), 0 in
 * progress, -errno failed; read: bytes, 0 at the end, -EAGAIN, -errno;
 * flush: the output queue through the session, as nbds_outq_flush;
 * pending: decrypted input waits in the session. */
int nbds_tls_begin(struct nbds_conn *c);
int nbds_tls_handshake(struct nbds_conn *c);
ssize_t nbds_tls_read(struct nbds_conn *c, void *buf, size_t len);
int nbds_tls_flush(struct nbds_conn *c);
bool nbds_tls_pending(const struct nbds_conn *c);
void nbds_tls_free(struct nbds_conn *c);
uint16_t nbds_tx_flags(const struct nbds_conn *c);

#endif
