/*
 * fuzz-nbd.c - libFuzzer target for the NBD server library: the input is
 * everything a client sends (handshake, options, requests, payloads),
 * written into one end of a socketpair while nbds_conn_io serves the other
 * end over a 1 MiB memory backend.  What the server answers is read and
 * dropped.  Half of the backend's requests (chosen by the input's first
 * byte) are held back and completed later in reverse order, so that
 * out-of-order completion and flow control are exercised too.
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
    data++;
    size--;
    struct nbds_config cfg = { .backend = &backend, .max_payload = 256 * 1024,
                               .max_inflight = 8 };
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
    size_t pos = 0;
    bool shut = false;
    static uint8_t sink[65536];
    /* Bounded: every round either moves bytes or completes requests. */
    for (int round = 0; round < 20000; round++) {
        if (pos < size) {
            ssize_t w = send(sv[1], data + pos, size - pos, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                pos += (size_t)w;
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
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
    for (int v = 0; v < 4; v++) {
        size_t n = 0;
        b[n++] = (uint8_t)v;   /* control byte: bit 0 = deferred completions */
        n = put(b, n, 3, 4);   /* client flags */
        if (v == 3) {
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
    const char *seeds = getenv("FUZZ_NBD_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}
