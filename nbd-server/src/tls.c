/*
 * tls.c - a connection's TLS session (NBD_OPT_STARTTLS) on OpenSSL.
 *
 * The option's ACK goes out in plaintext; once it is written the socket
 * belongs to the TLS session (the handshake, then every byte both ways).
 * Nothing may follow STARTTLS in plaintext: a client must wait for the
 * ACK before its handshake, so input already buffered then is an attempt
 * to slip plaintext into the session (the STARTTLS injection attacks of
 * other protocols) and ends the connection.
 *
 * Everything is non-blocking: SSL_ERROR_WANT_READ / WANT_WRITE say which
 * readiness the session waits for, whatever it is doing (a read may need
 * to write during a key update, a write to read).  Two things differ from
 * plain sockets:
 *   - OpenSSL may hold input that the socket no longer signals (read
 *     ahead, or decrypted and not yet taken: SSL_has_pending): the
 *     connection then asks for POLLOUT too, which a socket almost always
 *     is, so that it gets called and reads it;
 *   - SSL_write has no scatter-gather: replies are gathered into one
 *     buffer, and a write that must be retried is retried with the same
 *     bytes, as OpenSSL requires (the queue's head does not change while
 *     it waits).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define TLS_WBUF (64u << 10)

/* The OpenSSL errors queued on this thread, as one line, and cleared. */
static void ssl_errors(char *out, size_t len)
{
    unsigned long e;
    size_t used = 0;

    out[0] = 0;
    while ((e = ERR_get_error()) != 0) {
        char one[256];

        ERR_error_string_n(e, one, sizeof(one));
        if (used < len)
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? "; " : "", one);
    }
    if (!out[0])
        snprintf(out, len, "%s", strerror(errno ? errno : EPROTO));
}

int nbds_tls_begin(struct nbds_conn *c)
{
    SSL_CTX *ctx = c->cfg->tls_context ? c->cfg->tls_context(c->cfg->opaque) : NULL;

    if (!ctx)
        return -ENOTSUP;
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);              /* the session holds its own reference */
    if (!c->ssl)
        return -ENOMEM;
    c->tls_wbuf = malloc(TLS_WBUF);
    if (!c->tls_wbuf || SSL_set_fd(c->ssl, c->in_fd) != 1) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        return -ENOMEM;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read what the socket has, not one record header and body at a time,
     * and up to 64 KiB of it per system call: a 1 MiB write is 64 records,
     * a run of 4 KiB writes one record each. */
    SSL_set_read_ahead(c->ssl, 1);
    SSL_set_default_read_buffer_len(c->ssl, 64 << 10);
    SSL_set_accept_state(c->ssl);
    return 0;
}

void nbds_tls_free(struct nbds_conn *c)
{
    if (c->ssl) {
        /* A close_notify if the socket takes it now; no waiting for the
         * peer's. */
        if (c->tls == NBDS_CONN_TLS_UP && !c->dead)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    free(c->tls_wbuf);
    c->tls_wbuf = NULL;
    ERR_clear_error();
}

/* What an OpenSSL call's result means for us: the bytes (>= 0 with n > 0),
 * -EAGAIN with tls_want set, or a hard error (with the errors logged). */
static int result(struct nbds_conn *c, int n, const char *what)
{
    char why[512];
    int e = SSL_get_error(c->ssl, n);

    switch (e) {
    case SSL_ERROR_NONE:
        return n;
    case SSL_ERROR_WANT_READ:
        c->tls_want = POLLIN;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want = POLLOUT;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;                   /* close_notify: the end of input */
    case SSL_ERROR_SYSCALL:
        if (errno == EINTR) {
            c->tls_want = POLLIN | POLLOUT;
            return -EAGAIN;
        }
        /* EOF without close_notify, or a socket error. */
        nbds_debug(c, "TLS %s: %s", what, errno ? strerror(errno) : "unexpected end of input");
        ERR_clear_error();
        return errno ? -errno : -ECONNRESET;
    default:
        ssl_errors(why, sizeof(why));
        nbds_debug(c, "TLS %s: %s", what, why);
        if (c->tls == NBDS_CONN_TLS_HANDSHAKE)
            fprintf(stderr, "nbds: %s: TLS handshake failed: %s\n", c->peer, why);
        return -EPROTO;
    }
}

/* The PSK identity the caller's callback accepted, kept with the SSL. */
static int psk_index = -1;
static pthread_once_t psk_once = PTHREAD_ONCE_INIT;

static void psk_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                        void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void psk_index_new(void)
{
    psk_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, psk_free_cb);
}

void nbds_tls_psk_accepted(void *ssl, const char *identity)
{
    char *copy;

    pthread_once(&psk_once, psk_index_new);
    if (psk_index < 0 || !(copy = strdup(identity)))
        return;
    free(SSL_get_ex_data(ssl, psk_index));
    if (!SSL_set_ex_data(ssl, psk_index, copy))
        free(copy);
}

/* The client's identity, from what the handshake verified. */
static void identity(struct nbds_conn *c)
{
    struct nbds_identity *id = &c->id;
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    const char *psk = NULL;

    pthread_once(&psk_once, psk_index_new);
    if (psk_index >= 0)
        psk = SSL_get_ex_data(c->ssl, psk_index);
    if (!psk)
        psk = SSL_get_psk_identity(c->ssl);

    id->tls = true;
    if (cert && SSL_get_verify_result(c->ssl) == X509_V_OK) {
        X509_NAME *subj = X509_get_subject_name(cert);
        GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        BIO *b = BIO_new(BIO_s_mem());

        id->auth = NBDS_TLS_X509;
        if (X509_NAME_get_text_by_NID(subj, NID_commonName, id->name, sizeof(id->name)) < 0)
            id->name[0] = 0;
        if (b && X509_NAME_print_ex(b, subj, 0, XN_FLAG_RFC2253) >= 0) {
            int n = BIO_read(b, id->subject, (int)sizeof(id->subject) - 1);

            id->subject[n > 0 ? n : 0] = 0;
        }
        BIO_free(b);
        for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && id->nsan < NBDS_MAX_SAN; i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            const ASN1_STRING *s = NULL;

            if (g->type == GEN_DNS)
                s = g->d.dNSName;
            else if (g->type == GEN_EMAIL)
                s = g->d.rfc822Name;
            else if (g->type == GEN_URI)
                s = g->d.uniformResourceIdentifier;
            /* A name with a NUL inside could pass for a shorter one. */
            if (!s || ASN1_STRING_length(s) <= 0 ||
                (size_t)ASN1_STRING_length(s) >= sizeof(id->san[0]) ||
                memchr(ASN1_STRING_get0_data(s), 0, (size_t)ASN1_STRING_length(s)))
                continue;
            memcpy(id->san[id->nsan], ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
            id->san[id->nsan][ASN1_STRING_length(s)] = 0;
            id->nsan++;
        }
        GENERAL_NAMES_free(sans);
    } else if (psk && strlen(psk) < sizeof(id->name)) {
        id->auth = NBDS_TLS_PSK;
        strcpy(id->name, psk);
    }
    X509_free(cert);
}

int nbds_tls_handshake(struct nbds_conn *c)
{
    int r;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls = NBDS_CONN_TLS_UP;
        c->tls_want = 0;
        identity(c);
        nbds_debug(c, "TLS up: %s, %s, client %s%s", SSL_get_version(c->ssl),
                   SSL_get_cipher_name(c->ssl),
                   c->id.auth == NBDS_TLS_X509 ? "certificate " :
                   c->id.auth == NBDS_TLS_PSK ? "PSK " : "anonymous",
                   c->id.name);
        return 1;
    }
    r = result(c, r, "handshake");
    return r == -EAGAIN ? 0 : (r < 0 ? r : -ECONNRESET);
}

ssize_t nbds_tls_read(struct nbds_conn *c, void *buf, size_t len)
{
    int n;

    ERR_clear_error();
    c->tls_want = 0;
    n = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : result(c, n, "read");
}

bool nbds_tls_pending(const struct nbds_conn *c)
{
    /* SSL_has_pending, not SSL_pending: read-ahead bytes not yet
     * decrypted count too. */
    return c->ssl && c->tls == NBDS_CONN_TLS_UP && SSL_has_pending(c->ssl);
}

int nbds_tls_flush(struct nbds_conn *c)
{
    while (c->oq_head && !c->dead) {
        size_t n = 0;
        int w;

        /* The queue's first bytes, gathered; after a retry exactly those
         * of the write being retried. */
        size_t limit = c->tls_retry ? c->tls_retry : TLS_WBUF;
        for (struct nbds_oent *e = c->oq_head; e && n < limit; e = e->next) {
            size_t done = e->done;
            const uint8_t *parts[2] = { e->hdr, e->data };
            size_t lens[2] = { e->hlen, e->dlen };

            for (int k = 0; k < 2 && n < limit; k++) {
                size_t take;

                if (done >= lens[k]) {
                    done -= lens[k];
                    continue;
                }
                take = lens[k] - done < limit - n ? lens[k] - done : limit - n;
                memcpy(c->tls_wbuf + n, parts[k] + done, take);
                n += take;
                done = 0;
            }
        }
        ERR_clear_error();
        c->tls_want = 0;
        w = SSL_write(c->ssl, c->tls_wbuf, (int)n);
        if (w <= 0) {
            int r = result(c, w, "write");

            if (r == -EAGAIN)
                c->tls_retry = n;
            return r == 0 ? -EPIPE : r;
        }
        c->tls_retry = 0;
        nbds_outq_consume(c, (size_t)w);
    }
    return 0;
}
