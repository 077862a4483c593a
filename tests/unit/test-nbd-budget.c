/*
 * test-nbd-budget.c - nbd-server's payload budget (nbds_config.
 * payload_budget, nbds_conn_payload_retry) with a hand-written client over
 * a socketpair and a memory backend whose requests the test completes:
 * a request that does not fit waits with its connection unread and is
 * never failed; every buffer gives its bytes back, wherever it is freed
 * (a WRITE's at completion, a READ's once its reply is written, any with
 * its connection).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "nbd-server.h"

#define DISK (256u * 1024)

struct pending {
    struct nbds_req *r;
    bool write;
    void *buf;
    uint64_t off;
    uint32_t len;
};

/* The server's opaque: the disk, its deferred requests, and the budget. */
struct ctx {
    uint8_t data[DISK];
    struct pending pend[16];
    int npend;
    size_t limit, used;
    unsigned refused;
    struct nbds_conn *waiting;
};

static int mem_open(void *o, struct nbds_conn *c, const char *name, void **h,
                    struct nbds_export_info *info)
{
    (void)c;
    (void)name;
    *h = o;
    info->size = DISK;
    info->can_flush = true;
    return 0;
}

static void mem_close(void *h) { (void)h; }

static void defer(struct ctx *x, struct nbds_req *r, bool write, void *buf, uint64_t off,
                  uint32_t len)
{
    assert_true(x->npend < 16);
    x->pend[x->npend++] = (struct pending){ r, write, buf, off, len };
}

static void mem_read(void *h, struct nbds_req *r, void *buf, uint64_t off, uint32_t len)
{
    defer(h, r, false, buf, off, len);
}

static void mem_write(void *h, struct nbds_req *r, const void *buf, uint64_t off,
                      uint32_t len, unsigned flags)
{
    (void)flags;
    defer(h, r, true, (void *)buf, off, len);
}

/* Completes the oldest deferred request. */
static void complete(struct ctx *x)
{
    assert_true(x->npend > 0);
    struct pending p = x->pend[0];
    memmove(x->pend, x->pend + 1, (size_t)--x->npend * sizeof(p));
    if (p.write)
        memcpy(x->data + p.off, p.buf, p.len);
    else
        memcpy(p.buf, x->data + p.off, p.len);
    nbds_req_done(p.r, 0);
}

static const struct nbds_backend mem_backend = {
    .open = mem_open, .close = mem_close, .read = mem_read, .write = mem_write,
};

static bool take(void *o, struct nbds_conn *c, size_t n)
{
    struct ctx *x = o;
    if (x->used + n > x->limit) {
        x->refused++;
        x->waiting = c;
        return false;
    }
    x->used += n;
    return true;
}

static void give(void *o, size_t n)
{
    struct ctx *x = o;
    assert_true(n <= x->used);
    x->used -= n;
}

static const struct nbds_payload_budget budget = { take, give };

/* ---- the client ---- */

struct t {
    struct ctx *x;
    struct nbds_server *s;
    struct nbds_conn *c;
    int cfd;
};

static void pump(struct t *t)
{
    for (int i = 0; i < 8; i++)
        assert_int_equal(nbds_conn_io(t->c, POLLIN | POLLOUT), 0);
}

static void cwrite(struct t *t, const void *buf, size_t n)
{
    assert_int_equal(send(t->cfd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void cread(struct t *t, void *buf, size_t n)
{
    size_t got = 0;
    for (int tries = 0; got < n && tries < 1000; tries++) {
        pump(t);
        ssize_t r = recv(t->cfd, (uint8_t *)buf + got, n - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
    }
    assert_int_equal(got, n);
}

static void p32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void p64(uint8_t *p, uint64_t v) { p32(p, (uint32_t)(v >> 32)); p32(p + 4, (uint32_t)v); }
static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A connection through NBD_OPT_EXPORT_NAME (simple replies), budget limit. */
static struct t *start(size_t limit)
{
    struct t *t = calloc(1, sizeof(*t));
    t->x = calloc(1, sizeof(*t->x));
    t->x->limit = limit;
    struct nbds_config cfg = { .backend = &mem_backend, .opaque = t->x,
                               .payload_budget = &budget };
    assert_int_equal(nbds_server_new(&cfg, &t->s), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    t->cfd = sv[1];
    assert_int_equal(nbds_conn_new(t->s, sv[0], sv[0], "test", NULL, &t->c), 0);
    uint8_t g[18], m[4 + 16 + 3], e[10];
    cread(t, g, 18);
    p32(m, 3);                                   /* fixed newstyle, no zeroes */
    p64(m + 4, 0x49484156454f5054ull);
    p32(m + 12, 1);                              /* NBD_OPT_EXPORT_NAME */
    p32(m + 16, 3);
    memcpy(m + 20, "mem", 3);
    cwrite(t, m, sizeof(m));
    cread(t, e, 10);
    assert_false(nbds_conn_in_handshake(t->c));
    return t;
}

static void stop(struct t *t)
{
    if (t->c) {
        assert_int_equal(nbds_conn_inflight(t->c), 0);
        nbds_conn_free(t->c);
    }
    assert_int_equal(t->x->used, 0);             /* every byte given back */
    close(t->cfd);
    nbds_server_free(t->s);
    free(t->x);
    free(t);
}

static void req(struct t *t, uint16_t type, uint64_t cookie, uint64_t off, uint32_t len,
                const void *payload)
{
    uint8_t h[28] = { 0 };
    p32(h, 0x25609513);
    h[7] = (uint8_t)type;
    p64(h + 8, cookie);
    p64(h + 16, off);
    p32(h + 24, len);
    cwrite(t, h, 28);
    if (payload)
        cwrite(t, payload, len);
}

static void reply(struct t *t, uint64_t cookie, void *data, uint32_t len)
{
    uint8_t h[16];
    cread(t, h, 16);
    assert_int_equal(g32(h), 0x67446698);
    assert_int_equal(g32(h + 4), 0);
    assert_int_equal(g32(h + 12), (uint32_t)cookie);
    if (len)
        cread(t, data, len);
}

/* ---- tests ---- */

/* A second WRITE that does not fit waits, its payload unread, until the
 * first completes; then it goes on, and both land. */
static void test_write_waits(void **state)
{
    (void)state;
    struct t *t = start(8192);
    static uint8_t a[8192], b[8192];
    memset(a, 0xaa, sizeof(a));
    memset(b, 0xbb, sizeof(b));
    req(t, 1, 1, 0, 8192, a);
    req(t, 1, 2, 8192, 8192, b);
    pump(t);
    assert_int_equal(t->x->npend, 1);
    assert_int_equal(t->x->used, 8192);
    assert_int_equal(t->x->refused, 1);
    assert_ptr_equal(t->x->waiting, t->c);
    assert_int_equal(nbds_conn_events(t->c) & POLLIN, 0);
    assert_false(nbds_conn_payload_retry(t->c));  /* still no room */
    assert_int_equal(t->x->refused, 2);
    complete(t->x);                              /* gives its 8 KiB back */
    assert_int_equal(t->x->used, 0);
    assert_true(nbds_conn_payload_retry(t->c));
    assert_int_equal(t->x->used, 8192);
    pump(t);                                     /* the payload that waited */
    assert_int_equal(t->x->npend, 1);
    complete(t->x);
    reply(t, 1, NULL, 0);
    reply(t, 2, NULL, 0);
    assert_memory_equal(t->x->data, a, 8192);
    assert_memory_equal(t->x->data + 8192, b, 8192);
    assert_true(nbds_conn_payload_retry(t->c));  /* not waiting: true */
    stop(t);
}

/* A READ's buffer is held until its reply is written, not only until the
 * backend completes it. */
static void test_read_held_until_sent(void **state)
{
    (void)state;
    struct t *t = start(4096);
    static uint8_t d[4096];
    for (unsigned i = 0; i < DISK; i++)
        t->x->data[i] = (uint8_t)(i / 4096 + 1);
    req(t, 0, 1, 0, 4096, NULL);
    req(t, 0, 2, 4096, 4096, NULL);
    pump(t);
    assert_int_equal(t->x->npend, 1);
    assert_int_equal(t->x->refused, 1);
    complete(t->x);                              /* the reply is queued, not sent */
    assert_int_equal(t->x->used, 4096);
    assert_false(nbds_conn_payload_retry(t->c));
    reply(t, 1, d, 4096);                        /* written: given back */
    assert_int_equal(d[0], 1);
    assert_int_equal(t->x->used, 0);
    assert_true(nbds_conn_payload_retry(t->c));
    assert_int_equal(t->x->npend, 1);
    complete(t->x);
    reply(t, 2, d, 4096);
    assert_int_equal(d[4095], 2);
    stop(t);
}

/* Freed with a WRITE's payload half received, and with a request waiting:
 * nothing is left taken, nothing leaks. */
static void test_freed_while_held(void **state)
{
    (void)state;
    struct t *t = start(65536);
    static uint8_t a[32768];
    req(t, 1, 1, 0, 32768, NULL);
    cwrite(t, a, 1000);
    pump(t);
    assert_int_equal(t->x->used, 32768);
    stop(t);

    t = start(4096);
    req(t, 1, 1, 0, 4096, a);
    req(t, 0, 2, 0, 4096, NULL);
    pump(t);
    assert_int_equal(t->x->refused, 1);
    complete(t->x);
    pump(t);                                     /* the WRITE's reply is out */
    assert_int_equal(t->x->used, 0);
    stop(t);                                     /* the READ still waits */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_waits),
        cmocka_unit_test(test_read_held_until_sent),
        cmocka_unit_test(test_freed_while_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
