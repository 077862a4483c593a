/*
 * test-nbd.c - the NBD server library against a tiny hand-written client
 * (here only) over a socketpair, with a memory backend.  The test drives
 * nbds_conn_io itself, so every exchange is deterministic, and checks the
 * exact bytes of each reply.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "nbd-server.h"

#define DISK (64u * 1024)

/* ---- memory backend ---- */

struct pending {
    struct nbds_req *r;
    int type;              /* 0 read, 1 write, 2 other */
    void *buf;
    uint64_t off;
    uint32_t len;
};

struct mem {
    uint8_t data[DISK];
    bool defer;            /* queue requests; the test completes them */
    struct pending pend[64];
    int npend;
    int opens;
};

static int mem_list(void *o, struct nbds_conn *c, struct nbds_list *l)
{
    (void)o; (void)c;
    int r = nbds_list_add(l, "mem", "memory disk");
    return r ? r : nbds_list_add(l, "ro", NULL);
}

static int mem_open(void *o, struct nbds_conn *c, const char *name, void **h,
                    struct nbds_export_info *info)
{
    struct mem *m = o;
    (void)c;
    if (strcmp(name, "mem") != 0 && strcmp(name, "ro") != 0)
        return -ENOENT;
    m->opens++;
    *h = m;
    info->size = DISK;
    info->read_only = strcmp(name, "ro") == 0;
    info->can_flush = info->can_fua = info->can_trim = info->can_zero = true;
    info->can_cache = info->can_multi_conn = true;
    info->can_fast_zero = false;
    info->contexts[NBDS_CTX_BASE_ALLOCATION] = true;
    info->contexts[NBDS_CTX_ALLOCATION_DEPTH] = true;
    info->min_block = 512;
    info->pref_block = 4096;
    info->max_block = 1u << 20;
    strcpy(info->description, "memory disk");
    return 0;
}

static void mem_close(void *h)
{
    struct mem *m = h;
    m->opens--;
}

static void complete(struct mem *m, struct pending *p)
{
    if (p->type == 0)
        memcpy(p->buf, m->data + p->off, p->len);
    else if (p->type == 1)
        memcpy(m->data + p->off, p->buf, p->len);
    nbds_req_done(p->r, 0);
}

static void submit(struct mem *m, struct nbds_req *r, int type, void *buf, uint64_t off,
                   uint32_t len)
{
    struct pending p = { r, type, buf, off, len };
    if (m->defer) {
        assert_true(m->npend < 64);
        m->pend[m->npend++] = p;
    } else {
        complete(m, &p);
    }
}

static void mem_read(void *h, struct nbds_req *r, void *buf, uint64_t off, uint32_t len)
{
    submit(h, r, 0, buf, off, len);
}

static void mem_write(void *h, struct nbds_req *r, const void *buf, uint64_t off,
                      uint32_t len, unsigned flags)
{
    (void)flags;
    submit(h, r, 1, (void *)buf, off, len);
}

static void mem_flush(void *h, struct nbds_req *r) { (void)h; nbds_req_done(r, 0); }

static void mem_zero(void *h, struct nbds_req *r, uint64_t off, uint32_t len, unsigned fl)
{
    struct mem *m = h;
    (void)fl;
    memset(m->data + off, 0, len);
    nbds_req_done(r, 0);
}

static void mem_cache(void *h, struct nbds_req *r, uint64_t off, uint32_t len)
{
    (void)h; (void)off; (void)len;
    nbds_req_done(r, 0);
}

static bool block_zero(const struct mem *m, uint64_t b)
{
    for (unsigned i = 0; i < 4096; i++)
        if (m->data[b * 4096 + i])
            return false;
    return true;
}

/* 4 KiB granularity: zero blocks are holes (depth 0), others data (1). */
static int mem_bs(void *h, enum nbds_meta_context ctx, uint64_t off, uint32_t len,
                  struct nbds_extent *ext, size_t max)
{
    struct mem *m = h;
    size_t n = 0;
    uint64_t end = off + len;
    while (off < end && n < max) {
        uint64_t next = (off / 4096 + 1) * 4096;
        if (next > end)
            next = end;
        bool z = block_zero(m, off / 4096);
        uint32_t f = ctx == NBDS_CTX_BASE_ALLOCATION ? (z ? 3u : 0u) : (z ? 0u : 1u);
        if (n && ext[n - 1].flags == f)
            ext[n - 1].length += next - off;
        else
            ext[n++] = (struct nbds_extent){ next - off, f };
        off = next;
    }
    return (int)n;
}

static const struct nbds_backend mem_backend = {
    .list = mem_list, .open = mem_open, .close = mem_close, .read = mem_read,
    .write = mem_write, .flush = mem_flush, .trim = mem_zero, .zero = mem_zero,
    .cache = mem_cache, .block_status = mem_bs,
};

/* ---- the test client ---- */

struct t {
    struct mem *m;
    struct nbds_server *s;
    struct nbds_conn *c;
    int sfd, cfd;
    int rc;
};

static void pump(struct t *t)
{
    for (int i = 0; i < 8 && t->c && t->rc == 0; i++)
        t->rc = nbds_conn_io(t->c, POLLIN | POLLOUT);
}

static void cwrite(struct t *t, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    for (int tries = 0; n > 0 && tries < 10000; tries++) {
        ssize_t w = send(t->cfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
        pump(t);
    }
    assert_int_equal(n, 0);
}

static void cread(struct t *t, void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;
    for (int tries = 0; got < n && tries < 10000; tries++) {
        pump(t);
        ssize_t r = recv(t->cfd, p + got, n - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
    }
    if (got != n && t->c)
        fprintf(stderr, "cread: rc %d inflight %u events %u finished %d\n", t->rc,
                nbds_conn_inflight(t->c), nbds_conn_events(t->c), nbds_conn_finished(t->c));
    assert_int_equal(got, n);
}

static bool at_eof(struct t *t)
{
    uint8_t b;
    for (int tries = 0; tries < 1000; tries++) {
        pump(t);
        ssize_t r = recv(t->cfd, &b, 1, MSG_DONTWAIT);
        if (r == 0)
            return true;
        if (r > 0)
            return false;
        if (t->rc < 0 && t->c) {
            nbds_conn_free(t->c);
            t->c = NULL;
            close(t->sfd);
            t->sfd = -1;
        }
    }
    return false;
}

static void p16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static void p32(uint8_t *p, uint32_t v) { p16(p, v >> 16); p16(p + 2, (uint16_t)v); }
static void p64(uint8_t *p, uint64_t v) { p32(p, v >> 32); p32(p + 4, (uint32_t)v); }
static uint16_t g16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t g32(const uint8_t *p) { return (uint32_t)g16(p) << 16 | g16(p + 2); }
static uint64_t g64(const uint8_t *p) { return (uint64_t)g32(p) << 32 | g32(p + 4); }

static bool pause_next;   /* start(): pause_at_transmission */

static struct t *start(unsigned max_inflight, uint32_t max_payload, bool no_zeroes)
{
    struct t *t = calloc(1, sizeof(*t));
    t->m = calloc(1, sizeof(*t->m));
    struct nbds_config cfg = { .backend = &mem_backend, .opaque = t->m,
                               .max_inflight = max_inflight, .max_payload = max_payload,
                               .verbose = getenv("NBDS_VERBOSE") != NULL,
                               .pause_at_transmission = pause_next };
    assert_int_equal(nbds_server_new(&cfg, &t->s), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    t->sfd = sv[0];
    t->cfd = sv[1];
    assert_int_equal(nbds_conn_new(t->s, t->sfd, t->sfd, "test", NULL, &t->c), 0);
    uint8_t g[18];
    cread(t, g, 18);
    assert_true(g64(g) == 0x4e42444d41474943ull);
    assert_true(g64(g + 8) == 0x49484156454f5054ull);
    assert_int_equal(g16(g + 16), 3);
    uint8_t f[4];
    p32(f, no_zeroes ? 3 : 1);
    cwrite(t, f, 4);
    return t;
}

static void stop(struct t *t)
{
    if (t->c) {
        assert_int_equal(nbds_conn_inflight(t->c), 0);
        nbds_conn_free(t->c);
    }
    assert_int_equal(t->m->opens, 0);
    if (t->sfd >= 0)
        close(t->sfd);
    close(t->cfd);
    nbds_server_free(t->s);
    free(t->m);
    free(t);
}

static void opt_send(struct t *t, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    p64(h, 0x49484156454f5054ull);
    p32(h + 8, opt);
    p32(h + 12, len);
    cwrite(t, h, 16);
    if (len)
        cwrite(t, data, len);
}

/* Reads one option reply; returns its type, payload in buf (NUL ended). */
static uint32_t opt_recv(struct t *t, uint32_t opt, uint8_t *buf, uint32_t *len)
{
    uint8_t h[20];
    cread(t, h, 20);
    assert_true(g64(h) == 0x3e889045565a9ull);
    assert_int_equal(g32(h + 8), opt);
    *len = g32(h + 16);
    assert_true(*len < 8192);
    cread(t, buf, *len);
    buf[*len] = 0;
    return g32(h + 12);
}

static void expect_ack(struct t *t, uint32_t opt)
{
    uint8_t b[8192];
    uint32_t len;
    assert_int_equal(opt_recv(t, opt, b, &len), 1);
    assert_int_equal(len, 0);
}

/* Option payload: u32 name length, name, then extra. */
static uint32_t name_payload(uint8_t *b, const char *name)
{
    p32(b, (uint32_t)strlen(name));
    memcpy(b + 4, name, strlen(name));
    return 4 + (uint32_t)strlen(name);
}

static void set_meta(struct t *t, const char *name, int nq, const char **q)
{
    uint8_t b[512];
    uint32_t n = name_payload(b, name);
    p32(b + n, (uint32_t)nq);
    n += 4;
    for (int i = 0; i < nq; i++) {
        p32(b + n, (uint32_t)strlen(q[i]));
        memcpy(b + n + 4, q[i], strlen(q[i]));
        n += 4 + (uint32_t)strlen(q[i]);
    }
    opt_send(t, 10, b, n);
}

/* GO on `name`, optionally with structured replies and both contexts. */
static void go(struct t *t, const char *name, bool structured)
{
    uint8_t b[8192];
    uint32_t len, type;
    if (structured) {
        opt_send(t, 8, NULL, 0);
        expect_ack(t, 8);
        const char *q[] = { "base:allocation", "qemu:allocation-depth" };
        set_meta(t, name, 2, q);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(opt_recv(t, 10, b, &len), 4);
            assert_int_equal(g32(b), (uint32_t)i + 1);
            assert_string_equal((char *)b + 4, q[i]);
        }
        expect_ack(t, 10);
    }
    uint32_t n = name_payload(b, name);
    p16(b + n, 0);
    opt_send(t, 7, b, n + 2);
    while ((type = opt_recv(t, 7, b, &len)) == 3)
        ;
    assert_int_equal(type, 1);
    assert_false(nbds_conn_in_handshake(t->c));
}

static void req(struct t *t, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
                uint32_t len, const void *payload)
{
    uint8_t h[28];
    p32(h, 0x25609513);
    p16(h + 4, flags);
    p16(h + 6, type);
    p64(h + 8, cookie);
    p64(h + 16, off);
    p32(h + 24, len);
    cwrite(t, h, 28);
    if (payload)
        cwrite(t, payload, len);
}

static void simple_reply(struct t *t, uint64_t cookie, uint32_t err)
{
    uint8_t h[16];
    cread(t, h, 16);
    assert_int_equal(g32(h), 0x67446698);
    assert_int_equal(g32(h + 4), err);
    assert_true(g64(h + 8) == cookie);
}

struct chunk {
    uint16_t flags, type;
    uint64_t cookie;
    uint32_t len;
    uint8_t data[128 * 1024];
};

static void chunk(struct t *t, struct chunk *c)
{
    uint8_t h[20];
    cread(t, h, 20);
    assert_int_equal(g32(h), 0x668e33ef);
    c->flags = g16(h + 4);
    c->type = g16(h + 6);
    c->cookie = g64(h + 8);
    c->len = g32(h + 16);
    assert_true(c->len <= sizeof(c->data));
    cread(t, c->data, c->len);
}

static void error_chunk(struct t *t, uint64_t cookie, uint32_t err)
{
    static struct chunk c;
    chunk(t, &c);
    assert_int_equal(c.type, 32769);
    assert_int_equal(c.flags, 1);
    assert_true(c.cookie == cookie);
    assert_int_equal(g32(c.data), err);
    assert_int_equal(g16(c.data + 4), c.len - 6);
}

static void disconnect(struct t *t)
{
    req(t, 0, 2, 99, 0, 0, NULL);
    assert_true(at_eof(t));
}

/* ---- tests ---- */

static void test_bad_magic(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    uint8_t h[16] = "IHAVEOPX";
    cwrite(t, h, 16);
    assert_true(at_eof(t));
    assert_int_equal(t->rc, -EPROTO);
    stop(t);
}

static void test_bad_client_flags(void **state)
{
    (void)state;
    /* Unknown client flag bits drop the connection. */
    struct mem m = { 0 };
    struct nbds_config cfg = { .backend = &mem_backend, .opaque = &m };
    struct nbds_server *s;
    struct nbds_conn *c;
    int sv[2];
    assert_int_equal(nbds_server_new(&cfg, &s), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(nbds_conn_new(s, sv[0], sv[0], "x", NULL, &c), 0);
    uint8_t f[4] = { 0, 0, 0, 0x7 };
    assert_int_equal(write(sv[1], f, 4), 4);
    int rc = 0;
    for (int i = 0; i < 10 && rc == 0; i++)
        rc = nbds_conn_io(c, POLLIN | POLLOUT);
    assert_int_equal(rc, -EPROTO);
    assert_true(nbds_conn_finished(c));
    nbds_conn_free(c);
    nbds_server_free(s);
    close(sv[0]);
    close(sv[1]);
}

static void test_unknown_option_list_abort(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    uint8_t b[8192];
    uint32_t len;
    memset(b, 'x', 100);
    opt_send(t, 99, b, 100);
    assert_int_equal(opt_recv(t, 99, b, &len), 0x80000001u);
    opt_send(t, 5, NULL, 0);   /* STARTTLS */
    assert_int_equal(opt_recv(t, 5, b, &len), 0x80000001u);
    /* Too big: discarded and refused, the stream stays in step. */
    uint8_t *big = calloc(1, 70000);
    opt_send(t, 3, big, 70000);
    free(big);
    assert_int_equal(opt_recv(t, 3, b, &len), 0x80000009u);
    opt_send(t, 3, "x", 1);
    assert_int_equal(opt_recv(t, 3, b, &len), 0x80000003u);
    opt_send(t, 3, NULL, 0);
    assert_int_equal(opt_recv(t, 3, b, &len), 2);
    assert_int_equal(len, 4 + 3 + 11);
    assert_int_equal(g32(b), 3);
    assert_memory_equal(b + 4, "memmemory disk", 14);
    assert_int_equal(opt_recv(t, 3, b, &len), 2);
    assert_int_equal(len, 6);
    assert_memory_equal(b + 4, "ro", 2);
    expect_ack(t, 3);
    opt_send(t, 2, NULL, 0);
    expect_ack(t, 2);
    assert_true(at_eof(t));
    assert_true(t->c == NULL);
    stop(t);
}

static void test_info_go(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    uint8_t b[8192];
    uint32_t len;
    uint32_t n = name_payload(b, "nope");
    p16(b + n, 0);
    opt_send(t, 6, b, n + 2);
    assert_int_equal(opt_recv(t, 6, b, &len), 0x80000006u);
    /* Bad lengths inside the option. */
    n = name_payload(b, "mem");
    p16(b + n, 5);
    opt_send(t, 6, b, n + 2);
    assert_int_equal(opt_recv(t, 6, b, &len), 0x80000003u);

    n = name_payload(b, "mem");
    p16(b + n, 3);
    p16(b + n + 2, 1);
    p16(b + n + 4, 2);
    p16(b + n + 6, 3);
    opt_send(t, 6, b, n + 8);
    bool seen[4] = { false };
    uint32_t type;
    while ((type = opt_recv(t, 6, b, &len)) == 3) {
        uint16_t it = g16(b);
        assert_true(it < 4);
        seen[it] = true;
        if (it == 0) {
            assert_int_equal(len, 12);
            assert_true(g64(b + 2) == DISK);
            /* HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|MULTI_CONN|CACHE|FAST_ZERO */
            assert_int_equal(g16(b + 10), 1 | 4 | 8 | 32 | 64 | 256 | 1024 | 2048);
        } else if (it == 1) {
            assert_string_equal((char *)b + 2, "mem");
        } else if (it == 2) {
            assert_string_equal((char *)b + 2, "memory disk");
        } else {
            assert_int_equal(len, 14);
            assert_int_equal(g32(b + 2), 512);
            assert_int_equal(g32(b + 6), 4096);
            assert_int_equal(g32(b + 10), 1u << 20);
        }
    }
    assert_int_equal(type, 1);
    assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
    assert_true(nbds_conn_in_handshake(t->c));
    assert_int_equal(t->m->opens, 0);

    go(t, "mem", false);
    assert_string_equal(nbds_conn_export(t->c), "mem");
    memset(t->m->data + 100, 0xab, 50);
    req(t, 0, 0, 7, 96, 64, NULL);
    simple_reply(t, 7, 0);
    uint8_t d[64];
    cread(t, d, 64);
    assert_memory_equal(d + 4, t->m->data + 100, 50);
    /* Simple replies: errors carry no data. */
    req(t, 0, 0, 8, DISK - 10, 64, NULL);
    simple_reply(t, 8, 22);
    /* DF needs structured replies. */
    req(t, 4, 0, 9, 0, 64, NULL);
    simple_reply(t, 9, 22);
    /* BLOCK_STATUS needs structured replies. */
    req(t, 0, 7, 10, 0, 4096, NULL);
    simple_reply(t, 10, 22);
    disconnect(t);
    assert_int_equal(t->rc, -ECONNRESET);
    stop(t);
}

static void test_export_name(void **state)
{
    (void)state;
    struct t *t = start(0, 0, false);
    opt_send(t, 1, "ro", 2);
    uint8_t b[134];
    cread(t, b, 134);
    assert_true(g64(b) == DISK);
    assert_int_equal(g16(b + 8), 1 | 2 | 4 | 256 | 1024);
    for (int i = 10; i < 134; i++)
        assert_int_equal(b[i], 0);
    /* Read-only: writes, trims and zeroes are EPERM; the payload is read. */
    uint8_t p[512] = { 1 };
    req(t, 0, 1, 1, 0, 512, p);
    simple_reply(t, 1, 1);
    req(t, 0, 4, 2, 0, 512, NULL);
    simple_reply(t, 2, 1);
    req(t, 0, 6, 3, 0, 512, NULL);
    simple_reply(t, 3, 1);
    req(t, 0, 3, 4, 0, 0, NULL);
    simple_reply(t, 4, 0);
    assert_int_equal(t->m->data[0], 0);
    disconnect(t);
    stop(t);

    /* Unknown export: EXPORT_NAME cannot fail politely, it closes. */
    t = start(0, 0, true);
    opt_send(t, 1, "zzz", 3);
    assert_true(at_eof(t));
    stop(t);
}

static void fill(struct mem *m)
{
    memset(m->data, 0, DISK);
    memset(m->data, 0x11, 4096);            /* block 0: data */
    memset(m->data + 3 * 4096, 0x33, 4096); /* blocks 1-2 zero, 3 data */
}

static void test_structured_read(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    fill(t->m);
    go(t, "mem", true);
    static struct chunk c;
    req(t, 0, 0, 5, 0, 16384, NULL);
    chunk(t, &c);
    assert_int_equal(c.type, 1);
    assert_int_equal(c.flags, 0);
    assert_true(c.cookie == 5);
    assert_int_equal(c.len, 8 + 4096);
    assert_true(g64(c.data) == 0);
    assert_memory_equal(c.data + 8, t->m->data, 4096);
    chunk(t, &c);
    assert_int_equal(c.type, 2);
    assert_int_equal(c.flags, 0);
    assert_int_equal(c.len, 12);
    assert_true(g64(c.data) == 4096);
    assert_int_equal(g32(c.data + 8), 8192);
    chunk(t, &c);
    assert_int_equal(c.type, 1);
    assert_int_equal(c.flags, 1);
    assert_true(g64(c.data) == 12288);
    assert_memory_equal(c.data + 8, t->m->data + 12288, 4096);
    /* DF: one data chunk. */
    req(t, 4, 0, 6, 0, 16384, NULL);
    chunk(t, &c);
    assert_int_equal(c.type, 1);
    assert_int_equal(c.flags, 1);
    assert_int_equal(c.len, 8 + 16384);
    assert_memory_equal(c.data + 8, t->m->data, 16384);
    /* A read of only zeroes is one hole. */
    req(t, 0, 0, 7, 4096 + 100, 200, NULL);
    chunk(t, &c);
    assert_int_equal(c.type, 2);
    assert_int_equal(c.flags, 1);
    assert_true(g64(c.data) == 4196);
    assert_int_equal(g32(c.data + 8), 200);
    /* Errors of a structured READ are error chunks. */
    req(t, 0, 0, 8, DISK, 1, NULL);
    error_chunk(t, 8, 22);
    req(t, 0, 0, 9, UINT64_MAX - 10, 100, NULL);
    error_chunk(t, 9, 22);
    disconnect(t);
    stop(t);
}

static void check_extents(struct chunk *c, uint32_t id, const uint32_t *e, int n)
{
    assert_int_equal(c->type, 5);
    assert_int_equal(c->len, 4 + 8 * (uint32_t)n);
    assert_int_equal(g32(c->data), id);
    for (int i = 0; i < 2 * n; i++)
        assert_int_equal(g32(c->data + 4 + 4 * i), e[i]);
}

static void test_block_status(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    fill(t->m);
    uint8_t b[8192];
    uint32_t len;
    /* LIST_META_CONTEXT before structured replies: invalid. */
    set_meta(t, "mem", 0, NULL);
    assert_int_equal(opt_recv(t, 10, b, &len), 0x80000003u);
    opt_send(t, 8, NULL, 0);
    expect_ack(t, 8);
    /* LIST with no query: everything, ids 0. */
    uint32_t n = name_payload(b, "mem");
    p32(b + n, 0);
    opt_send(t, 9, b, n + 4);
    assert_int_equal(opt_recv(t, 9, b, &len), 4);
    assert_int_equal(g32(b), 0);
    assert_string_equal((char *)b + 4, "base:allocation");
    assert_int_equal(opt_recv(t, 9, b, &len), 4);
    assert_string_equal((char *)b + 4, "qemu:allocation-depth");
    expect_ack(t, 9);
    /* LIST with a namespace: that namespace only; unknown ones ignored. */
    n = name_payload(b, "mem");
    p32(b + n, 2);
    p32(b + n + 4, 5);
    memcpy(b + n + 8, "qemu:", 5);
    p32(b + n + 13, 5);
    memcpy(b + n + 17, "nbd:x", 5);
    opt_send(t, 9, b, n + 22);
    assert_int_equal(opt_recv(t, 9, b, &len), 4);
    assert_string_equal((char *)b + 4, "qemu:allocation-depth");
    expect_ack(t, 9);
    /* Unknown export. */
    set_meta(t, "nope", 0, NULL);
    assert_int_equal(opt_recv(t, 10, b, &len), 0x80000006u);
    go(t, "mem", true);

    static struct chunk c;
    req(t, 0, 7, 11, 0, 16384, NULL);
    chunk(t, &c);
    assert_int_equal(c.flags, 0);
    const uint32_t base[] = { 4096, 0, 8192, 3, 4096, 0 };
    check_extents(&c, 1, base, 3);
    chunk(t, &c);
    assert_int_equal(c.flags, 1);
    const uint32_t depth[] = { 4096, 1, 8192, 0, 4096, 1 };
    check_extents(&c, 2, depth, 3);
    /* REQ_ONE: one extent per context, never past the request. */
    req(t, 8, 7, 12, 4096, 100, NULL);
    chunk(t, &c);
    const uint32_t b1[] = { 100, 3 };
    check_extents(&c, 1, b1, 1);
    chunk(t, &c);
    assert_int_equal(c.flags, 1);
    const uint32_t d1[] = { 100, 0 };
    check_extents(&c, 2, d1, 1);
    /* Errors. */
    req(t, 0, 7, 13, DISK - 1, 2, NULL);
    error_chunk(t, 13, 22);
    req(t, 0, 7, 14, 0, 0, NULL);
    error_chunk(t, 14, 22);
    req(t, 4, 7, 15, 0, 512, NULL);   /* DF is a READ flag */
    error_chunk(t, 15, 22);
    disconnect(t);
    stop(t);
}

static void test_errors(void **state)
{
    (void)state;
    struct t *t = start(0, 64 * 1024, true);
    go(t, "mem", true);
    static uint8_t p[128 * 1024];
    memset(p, 0x5a, sizeof(p));
    /* Beyond the end: ENOSPC for writes, the payload consumed. */
    req(t, 0, 1, 1, DISK - 512, 1024, p);
    error_chunk(t, 1, 28);
    req(t, 0, 6, 2, DISK, 1, NULL);
    error_chunk(t, 2, 28);
    req(t, 0, 4, 3, DISK - 1, 2, NULL);
    error_chunk(t, 3, 22);
    req(t, 0, 5, 4, DISK + 1, 2, NULL);
    error_chunk(t, 4, 22);
    /* Larger than the maximum payload: refused, payload consumed. */
    req(t, 0, 1, 5, 0, 128 * 1024, p);
    error_chunk(t, 5, 22);
    req(t, 0, 0, 6, 0, 128 * 1024, NULL);
    error_chunk(t, 6, 22);
    /* Unknown command, unknown flags, flags of other commands. */
    req(t, 0, 42, 7, 0, 0, NULL);
    error_chunk(t, 7, 22);
    req(t, 0x80, 0, 8, 0, 512, NULL);
    error_chunk(t, 8, 22);
    req(t, 8, 0, 9, 0, 512, NULL);      /* REQ_ONE on READ */
    error_chunk(t, 9, 22);
    req(t, 2, 1, 10, 0, 512, p);        /* NO_HOLE on WRITE */
    error_chunk(t, 10, 22);
    /* Zero length. */
    req(t, 0, 1, 11, 0, 0, NULL);
    error_chunk(t, 11, 22);
    /* FAST_ZERO on a backend that cannot: ENOTSUP. */
    req(t, 16, 6, 12, 0, 512, NULL);
    error_chunk(t, 12, 95);
    assert_int_equal(t->m->data[0], 0);
    /* Still in step: a good write, zero and read. */
    req(t, 1, 1, 13, 512, 1024, p);
    simple_reply(t, 13, 0);
    assert_int_equal(t->m->data[512], 0x5a);
    assert_int_equal(t->m->data[511], 0);
    req(t, 2, 6, 14, 1024, 256, NULL);
    simple_reply(t, 14, 0);
    assert_int_equal(t->m->data[1024], 0);
    assert_int_equal(t->m->data[1023], 0x5a);
    req(t, 0, 5, 15, 0, 4096, NULL);
    simple_reply(t, 15, 0);
    req(t, 0, 3, 16, 0, 0, NULL);
    simple_reply(t, 16, 0);
    disconnect(t);
    stop(t);
}

static void test_inflight_reverse(void **state)
{
    (void)state;
    struct t *t = start(8, 0, true);
    fill(t->m);
    go(t, "mem", false);
    t->m->defer = true;
    for (uint64_t i = 1; i <= 10; i++)
        req(t, 0, 0, i, (i - 1) * 512, 512, NULL);
    pump(t);
    /* Only max_inflight are taken; the rest waits in the socket. */
    assert_int_equal(t->m->npend, 8);
    assert_int_equal(nbds_conn_inflight(t->c), 8);
    assert_int_equal(nbds_conn_events(t->c) & POLLIN, 0);
    for (int i = 7; i >= 0; i--) {
        struct pending p = t->m->pend[i];
        t->m->npend--;
        complete(t->m, &p);
    }
    uint8_t d[512];
    for (uint64_t i = 8; i >= 1; i--) {
        simple_reply(t, i, 0);
        cread(t, d, 512);
        assert_memory_equal(d, t->m->data + (i - 1) * 512, 512);
    }
    pump(t);
    assert_int_equal(t->m->npend, 2);
    for (int i = 1; i >= 0; i--) {
        struct pending p = t->m->pend[i];
        t->m->npend--;
        complete(t->m, &p);
    }
    simple_reply(t, 10, 0);
    cread(t, d, 512);
    simple_reply(t, 9, 0);
    cread(t, d, 512);
    /* DISC with a request in flight: the reply still comes, then EOF. */
    req(t, 0, 0, 11, 0, 512, NULL);
    req(t, 0, 2, 12, 0, 0, NULL);
    pump(t);
    assert_int_equal(t->m->npend, 1);
    assert_false(nbds_conn_finished(t->c));
    struct pending p = t->m->pend[0];
    t->m->npend = 0;
    complete(t->m, &p);
    simple_reply(t, 11, 0);
    cread(t, d, 512);
    assert_true(at_eof(t));
    stop(t);
}

/* Large WRITE payloads are read straight into their buffer, together with
 * whatever follows them, and payload buffers are reused: pipelined writes
 * of many sizes (some in one send with the next request), each read back. */
static void test_large_payloads(void **state)
{
    (void)state;
    struct t *t = start(0, 0, true);
    go(t, "mem", false);
    static uint8_t msg[3 * DISK], want[DISK], got[DISK];
    memset(want, 0, sizeof(want));
    uint64_t cookie = 1;
    for (unsigned round = 0; round < 12; round++) {
        /* Two writes that overlap and a read of the whole disk:
         * header, payload, header, payload, header. */
        uint32_t len1 = 32768u + 4096u * (round % 5);
        uint32_t off2 = 512u * (round * 7 % 40);
        uint32_t len2 = DISK - off2 - 512u * (round % 3);
        size_t n = 0, cut[2];
        uint8_t *h;
        for (int w = 0; w < 2; w++) {
            uint32_t off = w ? off2 : 0, len = w ? len2 : len1;
            cut[w] = n + 28 + 1000 + round;
            h = msg + n;
            p32(h, 0x25609513);
            p16(h + 4, 0);
            p16(h + 6, 1);
            p64(h + 8, cookie + (uint64_t)w);
            p64(h + 16, off);
            p32(h + 24, len);
            n += 28;
            for (uint32_t i = 0; i < len; i++)
                msg[n + i] = want[off + i] = (uint8_t)(round * 31 + w * 7 + i / 512);
            n += len;
        }
        h = msg + n;
        p32(h, 0x25609513);
        p16(h + 4, 0);
        p16(h + 6, 0);
        p64(h + 8, cookie + 2);
        p64(h + 16, 0);
        p32(h + 24, DISK);
        n += 28;
        /* Sent in three pieces, each ending inside a payload, so that the
         * server has the rest of that payload still to read. */
        cwrite(t, msg, cut[0]);
        cwrite(t, msg + cut[0], cut[1] - cut[0]);
        cwrite(t, msg + cut[1], n - cut[1]);
        simple_reply(t, cookie, 0);
        simple_reply(t, cookie + 1, 0);
        simple_reply(t, cookie + 2, 0);
        cread(t, got, DISK);
        assert_memory_equal(got, want, DISK);
        assert_memory_equal(t->m->data, want, DISK);
        cookie += 3;
    }
    disconnect(t);
    stop(t);
}

/* pause_at_transmission: nothing is parsed after GO until the caller
 * resumes; the connection can move to another server meanwhile (vdiskd
 * hands it to the thread that serves its export). */
static void test_pause_move(void **state)
{
    (void)state;
    pause_next = true;
    struct t *t = start(0, 0, true);
    pause_next = false;
    fill(t->m);
    go(t, "mem", false);
    assert_true(nbds_conn_paused(t->c));
    assert_non_null(nbds_conn_export_handle(t->c));
    t->m->defer = true;
    req(t, 0, 0, 1, 0, 512, NULL);
    pump(t);
    assert_int_equal(t->m->npend, 0);
    assert_int_equal(nbds_conn_events(t->c) & POLLIN, 0);

    struct nbds_config cfg = { .backend = &mem_backend, .opaque = t->m };
    struct nbds_server *s2;
    assert_int_equal(nbds_server_new(&cfg, &s2), 0);
    assert_int_equal(nbds_conn_move(t->c, s2), 0);
    nbds_conn_resume(t->c);
    assert_false(nbds_conn_paused(t->c));
    pump(t);
    assert_int_equal(t->m->npend, 1);
    /* Not movable with a request in flight. */
    assert_int_equal(nbds_conn_move(t->c, t->s), -EBUSY);
    struct pending p = t->m->pend[0];
    t->m->npend = 0;
    complete(t->m, &p);
    uint8_t d[512];
    simple_reply(t, 1, 0);
    cread(t, d, 512);
    assert_memory_equal(d, t->m->data, 512);
    disconnect(t);
    stop(t);
    nbds_server_free(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_client_flags),
        cmocka_unit_test(test_unknown_option_list_abort),
        cmocka_unit_test(test_info_go),
        cmocka_unit_test(test_export_name),
        cmocka_unit_test(test_structured_read),
        cmocka_unit_test(test_block_status),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_inflight_reverse),
        cmocka_unit_test(test_large_payloads),
        cmocka_unit_test(test_pause_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
