/*
 * fuzz-nbd.c - libFuzzer target for the NBD server library: the input is
 * everything a client sends (handshake, options, requests, payloads),
 * written into one end of a socketpair while nbds_conn_io serves the other
 * end over a 1 MiB memory backend.  What the server answers is read and
 * dropped.  Half of the backend's requests (chosen by the input's first
 * byte) are held back and completed later in reverse order, so that
 * out-of-order completion and flow control are exercised too.
 *
 * TLS: the first byte's bit 1 picks --tls require (FORCEDTLS) over --tls
 * on, so that STARTTLS and the options around it are fuzzed in both modes
 * (a handshake the input starts fails on its garbage).  Bit 2 makes the
 * harness a real TLS client first (OpenSSL, on the other end of the
 * socketpair: client flags, STARTTLS, the handshake); the rest of the
 * input then goes through the TLS session, so the server's TLS reads and
 * writes carry fuzzed NBD traffic.  The server's certificate is made at
 * start-up, self-signed.
 *
 * FUZZ_NBD_SEEDS=DIR: write a few seed inputs (a full handshake followed by
 * one of each command) into DIR and exit (tests/fuzz/run-fuzz.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "nbd-server.h"

#define DISK (1u << 20)

struct pend {
    struct nbds_req *r;
    void *buf;
    uint64_t off;
    uint32_t len;
    int type;
};

static uint8_t g_disk[DISK];
static struct pend g_pend[64];
static int g_npend;
static bool g_defer;

static int m_list(void *o, struct nbds_conn *c, struct nbds_list *l)
{
    (void)o; (void)c;
    int r = nbds_list_add(l, "", "default");
    return r ? r : nbds_list_add(l, "ro", NULL);
}

static int m_open(void *o, struct nbds_conn *c, const char *name, void **h,
                  struct nbds_export_info *i)
{
    (void)o; (void)c;
    if (name[0] && strcmp(name, "ro") != 0)
        return -ENOENT;
    *h = g_disk;
    i->size = DISK - 512;   /* not a multiple of 4 KiB on purpose */
    i->read_only = name[0] != 0;
    i->can_flush = i->can_fua = i->can_trim = i->can_zero = i->can_cache = true;
    i->can_fast_zero = true;
    i->contexts[0] = i->contexts[1] = true;
    i->min_block = 1;
    strcpy(i->description, "fuzz");
    return 0;
}

static void m_close(void *h) { (void)h; }

static void finish(struct pend *p)
{
    if (p->type == 0)
        memcpy(p->buf, g_disk + p->off, p->len);
    else if (p->type == 1)
        memcpy(g_disk + p->off, p->buf, p->len);
    else if (p->type == 2)
        memset(g_disk + p->off, 0, p->len);
    nbds_req_done(p->r, p->type == 4 ? -EIO : 0);
}

static void submit(struct nbds_req *r, void *buf, uint64_t off, uint32_t len, int type)
{
    if (off > DISK || len > DISK - off)
        abort();   /* the library promised checked ranges */
    struct pend p = { r, buf, off, len, type };
    if (g_defer && g_npend < 64)
        g_pend[g_npend++] = p;
    else
        finish(&p);
}

static void m_read(void *h, struct nbds_req *r, void *b, uint64_t o, uint32_t l)
{
    (void)h;
    submit(r, b, o, l, 0);
}
static void m_write(void *h, struct nbds_req *r, const void *b, uint64_t o, uint32_t l,
                    unsigned f)
{
    (void)h; (void)f;
    submit(r, (void *)b, o, l, 1);
}
static void m_flush(void *h, struct nbds_req *r) { (void)h; submit(r, NULL, 0, 0, 3); }
static void m_trim(void *h, struct nbds_req *r, uint64_t o, uint32_t l, unsigned f)
{
    (void)h; (void)f;
    submit(r, NULL, o, l, 2);
}
static void m_zero(void *h, struct nbds_req *r, uint64_t o, uint32_t l, unsigned f)
{
    (void)h;
    submit(r, NULL, o, l, (f & NBDS_FLAG_FAST_ZERO) && (o & 1) ? 4 : 2);
}
static void m_cache(void *h, struct nbds_req *r, uint64_t o, uint32_t l)
{
    (void)h;
    submit(r, NULL, o, l, 3);
}

/* 64 KiB granularity; all-zero first byte of a block counts as a hole. */
static int m_bs(void *h, enum nbds_meta_context ctx, uint64_t off, uint32_t len,
                struct nbds_extent *e, size_t max)
{
    (void)h;
    if (off >= DISK || len > DISK - off)
        abort();
    size_t n = 0;
    uint64_t end = off + len;
    while (off < end && n < max) {
        uint64_t next = (off / 65536 + 1) * 65536;
        if (next > end)
            next = end;
        bool z = g_disk[off] == 0;
        uint32_t f = ctx == NBDS_CTX_BASE_ALLOCATION ? (z ? 3u : 0u) : (z ? 0u : 1u);
        e[n++] = (struct nbds_extent){ next - off, f };
        off = next;
    }
    return (int)n;
}

static const struct nbds_backend backend = {
    .list = m_list, .open = m_open, .close = m_close, .read = m_read, .write = m_write,
    .flush = m_flush, .trim = m_trim, .zero = m_zero, .cache = m_cache, .block_status = m_bs,
};

/* ---- TLS ---- */

static SSL_CTX *g_server_ctx, *g_client_ctx;

static void *fuzz_tls_context(void *opaque)
{
    (void)opaque;
    return SSL_CTX_up_ref(g_server_ctx) ? g_server_ctx : NULL;
}

/* A self-signed P-256 certificate for the server, and a client that
 * trusts anything (what is fuzzed is the server, not verification). */
static void tls_init(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;

    g_server_ctx = SSL_CTX_new(TLS_server_method());
    g_client_ctx = SSL_CTX_new(TLS_client_method());
    if (!key || !x || !g_server_ctx || !g_client_ctx)
        abort();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, key, EVP_sha256()) || SSL_CTX_use_certificate(g_server_ctx, x) != 1 ||
        SSL_CTX_use_PrivateKey(g_server_ctx, key) != 1)
        abort();
    SSL_CTX_set_min_proto_version(g_server_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(g_client_ctx, SSL_VERIFY_NONE, NULL);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* The harness as a TLS client on fd: client flags and STARTTLS in plain,
 * the server's greeting and ACK read, then the handshake, with the server
 * served in between.  Returns the client's session, or NULL if the server
 * did not take it (it then has nothing more to do). */
static SSL *tls_client(int fd, struct nbds_conn *c)
{
    static const uint8_t hello[] = {
        0, 0, 0, 3,                                     /* fixed newstyle, no zeroes */
        'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, 5, 0, 0, 0, 0, /* STARTTLS */
    };
    uint8_t in[18 + 20];
    size_t got = 0;
    SSL *cl;

    if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello))
        return NULL;
    for (int round = 0; round < 100 && got < sizeof(in); round++) {
        ssize_t n;

        if (nbds_conn_io(c, POLLIN | POLLOUT) < 0)
            return NULL;
        n = recv(fd, in + got, sizeof(in) - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
    }
    /* The greeting (18 bytes), then an ACK (type 1) to option 5. */
    if (got < sizeof(in) || in[18 + 15] != 1)
        return NULL;
    cl = SSL_new(g_client_ctx);
    if (!cl || SSL_set_fd(cl, fd) != 1)
        abort();
    SSL_set_connect_state(cl);
    for (int round = 0; round < 100; round++) {
        int r = SSL_do_handshake(cl);

        if (r == 1)
            return cl;
        if (SSL_get_error(cl, r) != SSL_ERROR_WANT_READ &&
            SSL_get_error(cl, r) != SSL_ERROR_WANT_WRITE)
            break;
        if (nbds_conn_io(c, POLLIN | POLLOUT) < 0)
            break;
    }
    SSL_free(cl);
    return NULL;
}

static void complete_all(void)
{
    while (g_npend > 0) {
        struct pend p = g_pend[--g_npend];
        finish(&p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    g_defer = data[0] & 1;
    bool require = data[0] & 2, tls = data[0] & 4;
    data++;
    size--;
    struct nbds_config cfg = { .backend = &backend, .max_payload = 256 * 1024,
                               .max_inflight = 8,
                               .tls = require ? NBDS_TLS_REQUIRE : NBDS_TLS_ON,
                               .tls_context = fuzz_tls_context };
    SSL *cl = NULL;
    struct nbds_server *s;
    struct nbds_conn *c;
    int sv[2];
    if (nbds_server_new(&cfg, &s) < 0)
        abort();
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        abort();
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (nbds_conn_new(s, sv[0], sv[0], "fuzz", NULL, &c) < 0)
        abort();
    if (tls && !(cl = tls_client(sv[1], c)))
        size = 0;           /* no session: nothing of the input can go in */
    size_t pos = 0;
    bool shut = false;
    static uint8_t sink[65536];
    /* Bounded: every round either moves bytes or completes requests. */
    for (int round = 0; round < 20000; round++) {
        if (pos < size) {
            ssize_t w = cl ? SSL_write(cl, data + pos, (int)(size - pos > 16384 ? 16384
                                                             : size - pos))
                           : send(sv[1], data + pos, size - pos, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                pos += (size_t)w;
        } else if (!shut) {
            if (cl)
                SSL_shutdown(cl);
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        if (cl)
            while (SSL_read(cl, sink, sizeof(sink)) > 0)
                ;
        else
            while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
                ;
        int r = nbds_conn_io(c, POLLIN | POLLOUT);
        if (round % 3 == 2 || nbds_conn_inflight(c) >= 8 || r < 0)
            complete_all();
        if (r < 0 || nbds_conn_finished(c))
            break;
        if (shut && nbds_conn_events(c) == 0 && nbds_conn_inflight(c) == 0)
            break;
    }
    complete_all();
    nbds_conn_free(c);
    nbds_server_free(s);
    SSL_free(cl);
    close(sv[0]);
    close(sv[1]);
    return 0;
}

/* ---- seeds ---- */

static size_t put(uint8_t *b, size_t n, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        b[n++] = (uint8_t)(v >> (8 * i));
    return n;
}

static size_t opt(uint8_t *b, size_t n, uint32_t o, const void *d, uint32_t len)
{
    n = put(b, n, 0x49484156454f5054ull, 8);
    n = put(b, n, o, 4);
    n = put(b, n, len, 4);
    if (len)
        memcpy(b + n, d, len);
    return n + len;
}

static size_t req(uint8_t *b, size_t n, uint16_t flags, uint16_t type, uint64_t off,
                  uint32_t len)
{
    n = put(b, n, 0x25609513, 4);
    n = put(b, n, flags, 2);
    n = put(b, n, type, 2);
    n = put(b, n, 0x1234, 8);
    n = put(b, n, off, 8);
    return put(b, n, len, 4);
}

static void write_seeds(const char *dir)
{
    static uint8_t b[16384];
    for (int v = 0; v < 8; v++) {
        size_t n = 0;
        /* control byte: bit 0 deferred completions, bit 1 TLS required,
         * bit 2 the harness does STARTTLS and what follows goes under TLS */
        static const uint8_t control[8] = { 0, 1, 0, 1, 4, 7, 2, 0 };
        b[n++] = control[v];
        if (v < 4)
            n = put(b, n, 3, 4);   /* client flags */
        if (v == 6 || v == 7) {
            /* STARTTLS then garbage for a handshake: it fails. */
            n = put(b, n, 3, 4);
            n = opt(b, n, 5, NULL, 0);
            if (v == 7)
                n = opt(b, n, 3, NULL, 0);      /* plaintext after STARTTLS */
            memset(b + n, 0x16, 64);
            n += 64;
        } else if (v == 3) {
            n = opt(b, n, 1, "", 0);   /* EXPORT_NAME */
        } else {
            uint8_t d[128];
            n = opt(b, n, 3, NULL, 0);
            n = opt(b, n, 8, NULL, 0);
            size_t m = put(d, 0, 0, 4);
            m = put(d, m, 2, 4);
            m = put(d, m, 15, 4);
            memcpy(d + m, "base:allocation", 15);
            m += 15;
            m = put(d, m, 21, 4);
            memcpy(d + m, "qemu:allocation-depth", 21);
            m += 21;
            n = opt(b, n, 9, d, (uint32_t)m);
            n = opt(b, n, 10, d, (uint32_t)m);
            m = put(d, 0, 0, 4);
            m = put(d, m, 3, 2);
            m = put(d, m, 1, 2);
            m = put(d, m, 2, 2);
            m = put(d, m, 3, 2);
            n = opt(b, n, 6, d, (uint32_t)m);
            n = opt(b, n, 7, d, (uint32_t)m);
        }
        n = req(b, n, 1, 1, 4096, 512);
        memset(b + n, 0xab, 512);
        n += 512;
        n = req(b, n, 0, 0, 0, 8192);
        n = req(b, n, 4, 0, 0, 4096);
        n = req(b, n, 8, 7, 0, 200000);
        n = req(b, n, 0, 7, 0, 200000);
        n = req(b, n, 2, 6, 8192, 4096);
        n = req(b, n, 16, 6, 8193, 4096);
        n = req(b, n, 0, 4, 0, 4096);
        n = req(b, n, 0, 5, 0, 4096);
        n = req(b, n, 0, 3, 0, 0);
        n = req(b, n, 0, 2, 0, 0);
        char path[4200];
        snprintf(path, sizeof(path), "%s/seed-%d", dir, v);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
            perror(path);
            exit(1);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    signal(SIGPIPE, SIG_IGN);
    tls_init();
    const char *seeds = getenv("FUZZ_NBD_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}
