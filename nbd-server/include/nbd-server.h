/*
 * nbd-server.h - the NBD protocol, server side, as a library.
 *
 * It speaks the fixed newstyle protocol (doc/proto.md of the NBD project)
 * on a pair of file descriptors and knows nothing about storage: exports
 * are opened, read and written through the small backend vtable below.
 * It has no event loop of its own either: the caller polls the
 * connection's descriptors and calls nbds_conn_io(), or uses the blocking
 * nbds_serve() for one connection (stdin/stdout mode, tests, fuzzing).
 *
 * Conventions: functions return 0 or a negative errno; handles are opaque
 * and used by one thread at a time (a server per thread; a connection can
 * move between them, nbds_conn_move); every buffer the library hands to the backend
 * stays valid until the backend completes the request.
 */
#ifndef NBD_SERVER_H
#define NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NBDS_MAX_NAME        4096u          /* export names (proto.md: at most 4096) */
#define NBDS_DEFAULT_MAX_PAYLOAD (32u << 20) /* largest READ/WRITE accepted */

struct nbds_server;
struct nbds_conn;
struct nbds_req;

/* Metadata contexts a backend can answer (NBD_CMD_BLOCK_STATUS). */
enum nbds_meta_context {
    NBDS_CTX_BASE_ALLOCATION = 0,    /* "base:allocation" */
    NBDS_CTX_ALLOCATION_DEPTH = 1,   /* "qemu:allocation-depth" */
    NBDS_CTX_COUNT
};

/* base:allocation flags (proto.md) */
#define NBDS_STATE_HOLE 1u
#define NBDS_STATE_ZERO 2u

/* One extent of a block status reply.  flags: for base:allocation the
 * NBDS_STATE_* bits; for qemu:allocation-depth the depth (0 unallocated,
 * 1 the top layer, ...). */
struct nbds_extent {
    uint64_t length;
    uint32_t flags;
};

/* What an export offers; filled by the backend's open(). */
struct nbds_export_info {
    uint64_t size;
    bool read_only;
    bool can_flush, can_fua, can_trim, can_zero, can_fast_zero, can_cache;
    bool can_multi_conn;          /* FLUSH on one connection covers all */
    bool contexts[NBDS_CTX_COUNT];   /* metadata contexts offered */
    uint32_t min_block, pref_block, max_block;   /* NBD_INFO_BLOCK_SIZE; 0: not sent */
    char description[256];
};

/* Request flags passed to the backend. */
enum {
    NBDS_FLAG_FUA = 1u << 0,
    NBDS_FLAG_NO_HOLE = 1u << 1,     /* zero: must allocate */
    NBDS_FLAG_FAST_ZERO = 1u << 2,   /* zero: fail with -ENOTSUP unless fast */
};

/* Adds one export to an NBD_OPT_LIST reply. */
struct nbds_list;
int nbds_list_add(struct nbds_list *l, const char *name, const char *description);

/* The storage side.  Every transmission call must complete its request
 * exactly once with nbds_req_done(), from inside the call or later (for
 * example from the caller's event loop when asynchronous I/O finishes).
 * Ranges are already checked against the export's size and limits. */
struct nbds_backend {
    /* Exports visible to this connection (NBD_OPT_LIST); nbds_conn_peer(c)
     * describes the client for access decisions. */
    int (*list)(void *server_opaque, struct nbds_conn *c, struct nbds_list *l);
    /* Opens export `name` for this connection.  -ENOENT: unknown
     * (NBD_REP_ERR_UNKNOWN), -EACCES: refused (NBD_REP_ERR_POLICY), other:
     * a generic error (NBD_REP_ERR_UNKNOWN with a message). */
    int (*open)(void *server_opaque, struct nbds_conn *c, const char *name,
                void **export_handle, struct nbds_export_info *info);
    /* Closes an export handle (connection end).  No request is in flight. */
    void (*close)(void *export_handle);

    void (*read)(void *h, struct nbds_req *r, void *buf, uint64_t off, uint32_t len);
    void (*write)(void *h, struct nbds_req *r, const void *buf, uint64_t off,
                  uint32_t len, unsigned flags);
    void (*flush)(void *h, struct nbds_req *r);
    void (*trim)(void *h, struct nbds_req *r, uint64_t off, uint32_t len, unsigned flags);
    void (*zero)(void *h, struct nbds_req *r, uint64_t off, uint32_t len, unsigned flags);
    void (*cache)(void *h, struct nbds_req *r, uint64_t off, uint32_t len);   /* may be NULL */
    /* Synchronous: describes [off, off+len) from the start, up to max
     * extents; returns how many (>= 1) or a negative errno. */
    int (*block_status)(void *h, enum nbds_meta_context ctx, uint64_t off, uint32_t len,
                        struct nbds_extent *ext, size_t max);
};

/* What a request is, for a backend's statistics.  type is the NBD command
 * number (proto.md: 0 READ, 1 WRITE, 3 FLUSH, 4 TRIM, 5 CACHE, 6
 * WRITE_ZEROES); start_ns is CLOCK_MONOTONIC when it was dispatched. */
struct nbds_req_info {
    unsigned type;
    uint32_t len;
    uint64_t start_ns;
};
void nbds_req_get_info(const struct nbds_req *r, struct nbds_req_info *out);
/* The export handle the request is for (the backend's open() gave it). */
void *nbds_req_export(const struct nbds_req *r);

/* Completes a request: err is 0 or a negative errno (mapped to the NBD
 * error codes: EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP,
 * ESHUTDOWN; others become EIO). */
void nbds_req_done(struct nbds_req *r, int err);

/* TLS modes (proto.md, "TLS support"): NOTLS, SELECTIVETLS (STARTTLS
 * offered, every option works without it too; the backend decides which
 * exports need a TLS identity), FORCEDTLS (every option but STARTTLS and
 * ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up, and EXPORT_NAME before
 * it ends the session). */
enum nbds_tls_mode {
    NBDS_TLS_OFF = 0,
    NBDS_TLS_ON,
    NBDS_TLS_REQUIRE,
};

/* A budget for the memory that request payloads hold, kept by the caller
 * (nbds_config.payload_budget).  Every READ and WRITE payload buffer is
 * reserved with take() before the library allocates it, and given back
 * with give() when it is freed: a WRITE's when the backend completed it
 * (or it was refused), a READ's when its reply is written or dropped, any
 * when its connection is freed.  bytes is the request's length (the
 * buffer itself may be rounded up to the next power of two).  take() runs
 * on the connection's thread; give() runs on whatever thread frees the
 * buffer (a connection's thread), so a budget shared by servers must be
 * thread safe.  opaque is the cfg.opaque of the server involved.
 *
 * take() returning false makes the connection wait: that request (parsed
 * and checked, not started) is held, and nothing more of the connection's
 * input is parsed (nbds_conn_events() asks for no POLLIN; replies still go
 * out) until nbds_conn_payload_retry() gets the memory.  A request is
 * never failed for want of budget. */
struct nbds_payload_budget {
    bool (*take)(void *opaque, struct nbds_conn *c, size_t bytes);
    void (*give)(void *opaque, size_t bytes);
};

struct nbds_config {
    const struct nbds_backend *backend;
    void *opaque;                     /* passed to list() and open() */
    uint32_t max_payload;             /* 0: NBDS_DEFAULT_MAX_PAYLOAD */
    unsigned max_inflight;            /* requests in flight per connection; 0: 64 */
    /* Called when a connection's wanted poll events change outside of
     * nbds_conn_io() (a request completed and a reply waits to be sent). */
    void (*notify)(void *opaque, struct nbds_conn *c);
    bool verbose;                     /* debug lines on stderr */
    /* Stop parsing when the handshake is over (an export is open), until
     * nbds_conn_resume: lets the caller hand the connection to the thread
     * that serves its export (nbds_conn_move) before any request runs. */
    bool pause_at_transmission;
    /* TLS.  tls_context (called on the connection's thread when a client
     * sends NBD_OPT_STARTTLS) returns a new reference to the OpenSSL
     * SSL_CTX that session is to use, or NULL when none is configured (the
     * option is then refused); the library creates its SSL from it and
     * drops that reference (SSL_CTX_free).  So the caller may swap in a
     * new context at any time (a certificate reload): sessions already up
     * keep theirs.  The context decides versions, certificates, client
     * verification and PSK; the library only drives the handshake, the
     * records and the identity (nbds_conn_identity).  TLS needs in_fd ==
     * out_fd (a socket). */
    enum nbds_tls_mode tls;
    void *(*tls_context)(void *opaque);
    /* A budget for payload memory (struct nbds_payload_budget), or NULL
     * for none; it may be shared by the servers of several threads. */
    const struct nbds_payload_budget *payload_budget;
};

int nbds_server_new(const struct nbds_config *cfg, struct nbds_server **out);
void nbds_server_free(struct nbds_server *s);

/* A connection on descriptors (may be the same for sockets); they are
 * made non-blocking and are not closed by the library.  peer is a short
 * description for logs and the backend ("unix:uid=1000", "tcp:1.2.3.4:5"). */
int nbds_conn_new(struct nbds_server *s, int in_fd, int out_fd, const char *peer,
                  void *user, struct nbds_conn **out);
/* Handles readiness: revents are POLLIN/POLLOUT/POLLHUP/POLLERR bits for
 * in_fd (reads) and out_fd (writes).  Returns 0, or -ECONNRESET etc. when
 * the connection is over (the caller then calls nbds_conn_free).  A
 * negative return comes only once no request is in flight: until then it
 * returns 0 and cfg.notify fires when the last one completes.  Clean ends
 * (NBD_CMD_DISC, NBD_OPT_ABORT, EOF between requests) give -ECONNRESET;
 * -EPROTO is a protocol violation (hard disconnect), -ESHUTDOWN follows
 * nbds_conn_shutdown.  Writes use MSG_NOSIGNAL on sockets; with a pipe as
 * out_fd the caller should ignore SIGPIPE. */
int nbds_conn_io(struct nbds_conn *c, unsigned revents);
/* Poll events wanted now: POLLIN on in_fd, POLLOUT on out_fd. */
unsigned nbds_conn_events(const struct nbds_conn *c);
/* True once the client disconnected or the protocol ended, and no
 * request is in flight: it can be freed. */
bool nbds_conn_finished(const struct nbds_conn *c);
/* Stops reading new requests (shutdown); replies still go out. */
void nbds_conn_shutdown(struct nbds_conn *c);
/* Frees the connection and closes its export.  Must not be called while
 * requests are in flight (wait for nbds_conn_finished). */
void nbds_conn_free(struct nbds_conn *c);
void *nbds_conn_user(const struct nbds_conn *c);
const char *nbds_conn_peer(const struct nbds_conn *c);
/* The export name, once the handshake opened one (else NULL). */
const char *nbds_conn_export(const struct nbds_conn *c);
/* Requests accepted and not yet replied to. */
unsigned nbds_conn_inflight(const struct nbds_conn *c);
/* True inside the backend's open when it is for a query (NBD_OPT_INFO,
 * NBD_OPT_SET/LIST_META_CONTEXT): the handle is closed again at once and
 * serves no request. */
bool nbds_conn_query_open(const struct nbds_conn *c);
/* True while still in the handshake (for the caller's time limit). */
bool nbds_conn_in_handshake(const struct nbds_conn *c);
/* For a connection whose payload_budget take() said no: asks take()
 * again and, when it agrees, starts the request that waited.  Returns
 * true when the connection waits no longer (also when it never did, or
 * is ending: the request is then freed with it), false while take() still
 * refuses.  On the connection's thread, outside nbds_conn_io; the caller
 * then calls nbds_conn_io() to parse the input that waited behind it. */
bool nbds_conn_payload_retry(struct nbds_conn *c);

/* Who is at the other end of a connection, for the backend's access
 * decisions in list() and open().  The caller sets what the socket tells
 * (nbds_conn_set_cred for a unix socket's SO_PEERCRED); the library fills
 * the TLS part when a TLS handshake (NBD_OPT_STARTTLS) has verified the
 * client: the subject of the certificate it presented, or the PSK
 * identity it used. */
enum nbds_tls_auth {
    NBDS_TLS_NONE = 0,          /* no TLS, or TLS without a client identity */
    NBDS_TLS_X509,              /* a client certificate the CA verified */
    NBDS_TLS_PSK,               /* a pre-shared key */
};
#define NBDS_MAX_SAN 8
struct nbds_identity {
    bool has_cred;              /* a unix socket peer: uid, gid, pid below */
    uint32_t uid, gid;
    int32_t pid;
    bool tls;                   /* the session is under TLS */
    enum nbds_tls_auth auth;
    char name[256];             /* X509: the subject's CN; PSK: the identity */
    char subject[512];          /* X509: the whole subject, RFC 2253 ("CN=a,O=b") */
    char san[NBDS_MAX_SAN][256];/* X509: subjectAltName DNS, email and URI names */
    unsigned nsan;
};
void nbds_conn_set_cred(struct nbds_conn *c, uint32_t uid, uint32_t gid, int32_t pid);
/* Valid for the connection's life; its TLS part changes once, when the
 * TLS handshake completes. */
const struct nbds_identity *nbds_conn_identity(const struct nbds_conn *c);
/* For the PSK callbacks of the caller's TLS context: records that ssl
 * (the callback's SSL *) was given the key of identity, which then becomes
 * the connection's identity (OpenSSL keeps no PSK identity in TLS 1.3). */
void nbds_tls_psk_accepted(void *ssl, const char *identity);

/* True while paused by pause_at_transmission (no request parsed yet). */
bool nbds_conn_paused(const struct nbds_conn *c);
void nbds_conn_resume(struct nbds_conn *c);
/* The open export's handle (from the backend's open), else NULL. */
void *nbds_conn_export_handle(const struct nbds_conn *c);
/* Moves the connection to server s (another thread's, with the same
 * backend and limits): from then on it uses s's buffers and s's
 * configuration (opaque, notify).  -EBUSY unless nothing is in flight and
 * no request payload is being read: at the pause after the handshake it
 * always succeeds. */
int nbds_conn_move(struct nbds_conn *c, struct nbds_server *s);

/* Serves one connection on in_fd/out_fd until it ends, polling them and,
 * when extra_fd >= 0, extra_fd (calling extra(extra_opaque) when it is
 * readable: the backend's completions).  Returns 0 at a clean end. */
int nbds_serve(struct nbds_server *s, int in_fd, int out_fd, int extra_fd,
               void (*extra)(void *opaque), void *extra_opaque);

#ifdef __cplusplus
}
#endif

#endif
