/*
 * tls.c - vdiskd's TLS credentials: the OpenSSL context that nbd-server's
 * STARTTLS sessions are made from (nbds_config.tls_context).
 *
 * Credentials, as qemu-nbd and nbdkit take them, so that one set serves
 * all three:
 *   --tls-certs DIR   DIR/server-cert.pem (the chain), DIR/server-key.pem,
 *                     and DIR/ca-cert.pem when clients' certificates are
 *                     to be verified (a client that presents one the CA
 *                     did not sign is refused; --tls-verify-peer refuses
 *                     clients that present none)
 *   --tls-psk FILE    lines "identity:hexkey" (the psktool format)
 * TLS 1.2 is the oldest version accepted (proto.md: MUST support 1.2,
 * SHOULD NOT offer older ones); renegotiation is off (a client could
 * otherwise make the server work at will).
 *
 * SIGHUP builds a new context from the same files and swaps it in under
 * the lock; sessions that are up keep theirs (each holds a reference), new
 * ones get the new one.  A reload that fails keeps the old context and
 * says why.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "vdiskd.h"

#define PSK_MAX_KEY       64u      /* bytes: 512-bit keys are plenty */
#define PSK_MAX_IDENTITY  128u
#define PSK_MAX_LINE      512u

struct psk_entry {
    char identity[PSK_MAX_IDENTITY + 1];
    uint8_t key[PSK_MAX_KEY];
    unsigned key_len;
};

struct psk_table {
    size_t n;
    struct psk_entry *e;
};

struct vdiskd_tls {
    pthread_mutex_t lock;
    SSL_CTX *ctx;                   /* the current one */
    enum nbds_tls_mode mode;
    char *certs_dir, *psk_file;
    bool verify_peer;
};

static int psk_index = -1;         /* the PSK table, as the context's ex_data */

static void tls_error(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
        vlog(LOG_ERR, "TLS: %s: %s", what, buf);
    } else {
        vlog(LOG_ERR, "TLS: %s", what);
    }
    ERR_clear_error();
}

/* ---- PSK ---- */

static void psk_table_free(struct psk_table *t)
{
    if (!t)
        return;
    if (t->e)
        OPENSSL_cleanse(t->e, t->n * sizeof(*t->e));
    free(t->e);
    free(t);
}

/* ex_data's destructor: the table goes with the last reference to its
 * context, which a session may hold long after a reload. */
static void psk_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                        void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    psk_table_free(ptr);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses "identity:hexkey" into e; a message naming the line on error. */
static int psk_parse_line(const char *path, unsigned lineno, char *line, struct psk_entry *e)
{
    char *colon = strrchr(line, ':');
    size_t idlen, hexlen;

    if (!colon) {
        vlog(LOG_ERR, "%s:%u: expected IDENTITY:HEXKEY", path, lineno);
        return -EINVAL;
    }
    idlen = (size_t)(colon - line);
    hexlen = strlen(colon + 1);
    if (idlen == 0 || idlen > PSK_MAX_IDENTITY) {
        vlog(LOG_ERR, "%s:%u: the identity must be 1 to %u bytes", path, lineno,
             PSK_MAX_IDENTITY);
        return -EINVAL;
    }
    if (hexlen == 0 || hexlen % 2 || hexlen / 2 > PSK_MAX_KEY) {
        vlog(LOG_ERR, "%s:%u: the key must be an even number of hex digits, at most %u bytes",
             path, lineno, PSK_MAX_KEY);
        return -EINVAL;
    }
    memcpy(e->identity, line, idlen);
    e->identity[idlen] = 0;
    for (size_t i = 0; i < hexlen / 2; i++) {
        int hi = hexval(colon[1 + 2 * i]), lo = hexval(colon[2 + 2 * i]);

        if (hi < 0 || lo < 0) {
            vlog(LOG_ERR, "%s:%u: the key is not hex", path, lineno);
            return -EINVAL;
        }
        e->key[i] = (uint8_t)(hi << 4 | lo);
    }
    e->key_len = (unsigned)(hexlen / 2);
    return 0;
}

static int psk_load(const char *path, struct psk_table **out)
{
    struct psk_table *t = calloc(1, sizeof(*t));
    char line[PSK_MAX_LINE + 2];
    unsigned lineno = 0;
    FILE *f;
    int r = 0;

    if (!t)
        return -ENOMEM;
    f = fopen(path, "re");
    if (!f) {
        r = -errno;
        vlog(LOG_ERR, "--tls-psk %s: %s", path, strerror(errno));
        free(t);
        return r;
    }
    while (fgets(line, sizeof(line), f)) {
        size_t len = strlen(line);
        struct psk_entry *grown;

        lineno++;
        if (len > PSK_MAX_LINE) {
            vlog(LOG_ERR, "%s:%u: line too long", path, lineno);
            r = -EINVAL;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0 || line[0] == '#')
            continue;
        grown = realloc(t->e, (t->n + 1) * sizeof(*t->e));
        if (!grown) {
            r = -ENOMEM;
            break;
        }
        t->e = grown;
        r = psk_parse_line(path, lineno, line, &t->e[t->n]);
        if (r < 0)
            break;
        t->n++;
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (r == 0 && t->n == 0) {
        vlog(LOG_ERR, "--tls-psk %s: no identity in the file", path);
        r = -EINVAL;
    }
    if (r < 0) {
        psk_table_free(t);
        return r;
    }
    *out = t;
    return 0;
}

/* OpenSSL's PSK callback for TLS 1.2. */
static unsigned int psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk,
                                  unsigned int max_len)
{
    const struct psk_table *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), psk_index);

    if (!t || !identity)
        return 0;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->e[i].identity, identity) != 0)
            continue;
        if (t->e[i].key_len > max_len)
            return 0;
        memcpy(psk, t->e[i].key, t->e[i].key_len);
        nbds_tls_psk_accepted(ssl, t->e[i].identity);
        return t->e[i].key_len;
    }
    return 0;                       /* unknown identity: the handshake fails */
}

/* TLS 1.3's way: a session made of the key, for a SHA-256 suite (the hash
 * TLS 1.3 external PSKs default to, and what GnuTLS clients such as libnbd
 * and qemu use). */
static int psk_find_session_cb(SSL *ssl, const unsigned char *identity, size_t identity_len,
                               SSL_SESSION **sess)
{
    static const unsigned char aes128gcm_sha256[] = { 0x13, 0x01 };
    const struct psk_table *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), psk_index);
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm_sha256);
    SSL_SESSION *s;

    *sess = NULL;
    if (!t || !cipher)
        return 1;                   /* not found: the handshake goes on without */
    for (size_t i = 0; i < t->n; i++) {
        if (strlen(t->e[i].identity) != identity_len ||
            memcmp(t->e[i].identity, identity, identity_len) != 0)
            continue;
        s = SSL_SESSION_new();
        if (!s || !SSL_SESSION_set1_master_key(s, t->e[i].key, t->e[i].key_len) ||
            !SSL_SESSION_set_cipher(s, cipher) ||
            !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
            SSL_SESSION_free(s);
            return 0;               /* an internal error ends the handshake */
        }
        nbds_tls_psk_accepted(ssl, t->e[i].identity);
        *sess = s;
        return 1;
    }
    return 1;
}

/* ---- the context ---- */

static int build(const struct vdiskd_tls *t, SSL_CTX **out)
{
    char path[4200];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (!ctx) {
        tls_error("creating a context");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* No session tickets or cache: every connection authenticates anew. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    /* A TLS 1.3 PSK is a session to OpenSSL, which wants it tied to an
     * application when client certificates are verified too. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"vdiskd", 6);

    if (t->certs_dir) {
        snprintf(path, sizeof(path), "%s/server-cert.pem", t->certs_dir);
        if (SSL_CTX_use_certificate_chain_file(ctx, path) != 1) {
            tls_error(path);
            goto fail;
        }
        snprintf(path, sizeof(path), "%s/server-key.pem", t->certs_dir);
        if (SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            tls_error(path);
            goto fail;
        }
        snprintf(path, sizeof(path), "%s/ca-cert.pem", t->certs_dir);
        if (access(path, R_OK) == 0) {
            if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
                tls_error(path);
                goto fail;
            }
            /* A certificate the client presents must verify; whether it
             * must present one is --tls-verify-peer. */
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (t->verify_peer
                               ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
        } else if (t->verify_peer) {
            vlog(LOG_ERR, "--tls-verify-peer: no %s to verify clients with", path);
            goto fail;
        }
    }
    if (t->psk_file) {
        struct psk_table *psk = NULL;

        if (psk_load(t->psk_file, &psk) < 0)
            goto fail;
        if (!SSL_CTX_set_ex_data(ctx, psk_index, psk)) {
            psk_table_free(psk);
            goto fail;
        }
        SSL_CTX_set_psk_server_callback(ctx, psk_server_cb);
        SSL_CTX_set_psk_find_session_callback(ctx, psk_find_session_cb);
        /* TLS 1.2's PSK suites are left out of the defaults by some
         * builds: name them next to the rest.  In TLS 1.3 a PSK is bound
         * to a hash (SHA-256 here): the server's first choice of suite
         * must use it, or the key is set aside for certificates. */
        if (SSL_CTX_set_cipher_list(ctx, "DEFAULT:PSK") != 1 ||
            SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                          "TLS_AES_256_GCM_SHA384") != 1) {
            tls_error("cipher list");
            goto fail;
        }
    }
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -EINVAL;
}

int tls_setup(struct vdiskd *d, enum nbds_tls_mode mode, const char *certs_dir,
              const char *psk_file, bool verify_peer)
{
    struct vdiskd_tls *t;
    int r;

    if (mode == NBDS_TLS_OFF)
        return 0;
    if (psk_index < 0)
        psk_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, psk_free_cb);
    t = calloc(1, sizeof(*t));
    if (!t || psk_index < 0) {
        free(t);
        return -ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->mode = mode;
    t->verify_peer = verify_peer;
    t->certs_dir = certs_dir ? strdup(certs_dir) : NULL;
    t->psk_file = psk_file ? strdup(psk_file) : NULL;
    r = build(t, &t->ctx);
    if (r < 0) {
        d->tls = t;
        tls_free(d);
        return r;
    }
    d->tls = t;
    vlog(LOG_INFO, "TLS %s:%s%s%s", mode == NBDS_TLS_REQUIRE ? "required" : "offered",
         certs_dir ? " x509 certificates from " : "", certs_dir ? certs_dir : "",
         psk_file ? " and PSK identities" : "");
    return 0;
}

enum nbds_tls_mode tls_mode(const struct vdiskd *d)
{
    return d->tls ? d->tls->mode : NBDS_TLS_OFF;
}

void *tls_context(void *opaque)
{
    struct worker *w = opaque;
    struct vdiskd_tls *t = w->d->tls;
    SSL_CTX *ctx = NULL;

    if (!t)
        return NULL;
    pthread_mutex_lock(&t->lock);
    if (t->ctx && SSL_CTX_up_ref(t->ctx))
        ctx = t->ctx;
    pthread_mutex_unlock(&t->lock);
    return ctx;
}

void tls_reload(struct vdiskd *d)
{
    struct vdiskd_tls *t = d->tls;
    SSL_CTX *ctx, *old;

    if (!t) {
        vlog(LOG_INFO, "SIGHUP: no TLS credentials to reload");
        return;
    }
    if (build(t, &ctx) < 0) {
        vlog(LOG_ERR, "SIGHUP: the TLS credentials could not be reloaded (above); the "
             "previous ones stay in use");
        return;
    }
    pthread_mutex_lock(&t->lock);
    old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);
    vlog(LOG_INFO, "SIGHUP: TLS credentials reloaded; new connections use them");
}

void tls_free(struct vdiskd *d)
{
    struct vdiskd_tls *t = d->tls;

    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t->certs_dir);
    free(t->psk_file);
    free(t);
    d->tls = NULL;
}
