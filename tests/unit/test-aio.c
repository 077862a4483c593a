/*
 * test-aio.c - the asynchronous API: contexts, many requests in flight,
 * completion callbacks (exactly once, only from vd_ctx_poll), the context
 * fd, and refused submissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define SIZE (64 * MiB)
#define NREQ 64

/* One request's bookkeeping. */
struct req {
    int calls;
    int result;
    bool *in_submit;        /* set while the test is inside a submit call */
    int *submit_violations; /* callbacks run from inside a submit */
    int *total_done;
};

static void req_cb(void *opaque, int result)
{
    struct req *r = opaque;
    r->calls++;
    r->result = result;
    if (r->in_submit && *r->in_submit)
        (*r->submit_violations)++;
    if (r->total_done)
        (*r->total_done)++;
}

/* Polls until *done reaches want; checks that vd_ctx_poll's return values
 * add up (to want minus what was done before) and that vd_ctx_inflight
 * counts down with them.  Bounded so that
 * a lost completion fails the test instead of hanging it. */
static void poll_until(struct vd_ctx *ctx, int *done, int want)
{
    int reaped = 0, before = *done;
    unsigned start_inflight = vd_ctx_inflight(ctx);
    for (int iter = 0; *done < want; iter++) {
        if (iter > 20000)
            fail_msg("only %d of %d requests completed", *done, want);
        int n = vd_ctx_poll(ctx, 1000);
        if (n < 0)
            fail_msg("vd_ctx_poll = %d (%s)", n, strerror(-n));
        reaped += n;
        assert_int_equal(vd_ctx_inflight(ctx), start_inflight - (unsigned)reaped);
    }
    assert_int_equal(reaped, want - before);
}

static struct vd_chain *open_big(struct tenv *e, const char *name,
                                 unsigned flags)
{
    const char *p = tpath(e, name);
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    return open_chain(e->ctx, p, flags);
}

/* ------------------------------------------------------------------ */

static void test_ctx_new_free(void **state)
{
    (void)state;
    static const unsigned depths[] = { 0, 1, 4, 256, 1024 };
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        struct vd_ctx *ctx = NULL;
        assert_rc(vd_ctx_new(depths[i], &ctx), 0);
        assert_non_null(ctx);
        assert_int_equal(vd_ctx_inflight(ctx), 0);
        int fd = vd_ctx_fd(ctx);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) != -1);
        /* Nothing pending: the fd is not readable, and polling with a zero
         * timeout returns at once with no completions. */
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, 0), 0);
        assert_int_equal(vd_ctx_poll(ctx, 0), 0);
        assert_int_equal(vd_ctx_poll(ctx, 10), 0);
        vd_ctx_free(ctx);
    }
    /* Two contexts at once have distinct fds. */
    struct vd_ctx *a = NULL, *b = NULL;
    assert_rc(vd_ctx_new(0, &a), 0);
    assert_rc(vd_ctx_new(0, &b), 0);
    assert_int_not_equal(vd_ctx_fd(a), vd_ctx_fd(b));
    vd_ctx_free(a);
    vd_ctx_free(b);
}

/* The fd alone is enough to know when to poll. */
static void test_ctx_fd_wakeup(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR);
    void *buf = NULL;
    assert_int_equal(posix_memalign(&buf, 4096, 65536), 0);
    fill_pattern(buf, 65536, 1 * MiB, 1);
    int done = 0;
    struct req r = { .total_done = &done };
    assert_rc(vd_aio_write(c, buf, 1 * MiB, 65536, 0, req_cb, &r), 0);
    assert_int_equal(vd_ctx_inflight(e->ctx), 1);

    struct pollfd pfd = { .fd = vd_ctx_fd(e->ctx), .events = POLLIN };
    for (int iter = 0; done == 0; iter++) {
        if (iter > 1000)
            fail_msg("the request never completed");
        int pr = poll(&pfd, 1, 10000);
        if (pr == 0)
            fail_msg("vd_ctx_fd never became readable with a request pending");
        assert_int_equal(pr, 1);
        assert_true(pfd.revents & POLLIN);
        assert_true(vd_ctx_poll(e->ctx, 0) >= 0);
    }
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, 0);
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);

    /* A read of a range nobody wrote completes through the fd as well. */
    struct req r2 = { .total_done = &done };
    assert_rc(vd_aio_read(c, buf, 8 * MiB, 65536, req_cb, &r2), 0);
    assert_int_equal(r2.calls, 0);
    for (int iter = 0; done == 1; iter++) {
        if (iter > 1000)
            fail_msg("the read never completed");
        if (poll(&pfd, 1, 10000) == 0)
            fail_msg("vd_ctx_fd never became readable with a read pending");
        assert_true(vd_ctx_poll(e->ctx, 0) >= 0);
    }
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.result, 0);
    check_zero(buf, 65536, 8 * MiB);
    free(buf);
    close_chain(c);
}

/* 64 writes in flight at random offsets, then 64 reads of them. */
static void many_in_flight(struct tenv *e, const char *name, unsigned flags)
{
    struct vd_chain *c = open_big(e, name, VD_OPEN_RDWR | flags);
    uint64_t s = 4242;
    uint64_t off[NREQ];
    size_t len[NREQ];
    uint8_t *bufs[NREQ];
    bool used[SIZE / (512 * KiB)] = { false };
    /* Each request in its own 512 KiB slot, at a random sector inside it,
     * so that the requests do not overlap. */
    for (int i = 0; i < NREQ; i++) {
        uint64_t slot;
        do
            slot = rng_below(&s, SIZE / (512 * KiB));
        while (used[slot]);
        used[slot] = true;
        len[i] = (size_t)(1 + rng_below(&s, 256)) * 512;   /* <= 128 KiB */
        off[i] = slot * 512 * KiB + rng_below(&s, (384 * KiB) / 512) * 512;
        /* Odd buffers for every third request. */
        bufs[i] = malloc(len[i] + 1);
        assert_non_null(bufs[i]);
        fill_pattern(bufs[i] + (i % 3 == 0), len[i], off[i], 500 + i);
    }

    bool in_submit = false;
    int violations = 0, done = 0;
    struct req reqs[NREQ];
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < NREQ; i++) {
        reqs[i] = (struct req){ .in_submit = &in_submit,
                                .submit_violations = &violations,
                                .total_done = &done };
        in_submit = true;
        int rc = vd_aio_write(c, bufs[i] + (i % 3 == 0), off[i], len[i], 0,
                              req_cb, &reqs[i]);
        in_submit = false;
        assert_rc(rc, 0);
        assert_int_equal(vd_ctx_inflight(e->ctx), (unsigned)(i + 1));
    }
    assert_int_equal(done, 0);        /* nothing completes before a poll */
    poll_until(e->ctx, &done, NREQ);
    assert_int_equal(violations, 0);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(reqs[i].calls, 1);
        assert_int_equal(reqs[i].result, 0);
    }
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);
    /* Extra polls run nothing again. */
    assert_int_equal(vd_ctx_poll(e->ctx, 0), 0);
    for (int i = 0; i < NREQ; i++)
        assert_int_equal(reqs[i].calls, 1);

    /* 64 reads in flight into cleared buffers. */
    for (int i = 0; i < NREQ; i++)
        memset(bufs[i], 0, len[i] + 1);
    done = 0;
    for (int i = 0; i < NREQ; i++) {
        reqs[i] = (struct req){ .in_submit = &in_submit,
                                .submit_violations = &violations,
                                .total_done = &done };
        in_submit = true;
        int rc = vd_aio_read(c, bufs[i] + (i % 3 == 1), off[i], len[i],
                             req_cb, &reqs[i]);
        in_submit = false;
        assert_rc(rc, 0);
    }
    assert_int_equal(vd_ctx_inflight(e->ctx), NREQ);
    poll_until(e->ctx, &done, NREQ);
    assert_int_equal(violations, 0);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(reqs[i].calls, 1);
        assert_int_equal(reqs[i].result, 0);
        check_pattern(bufs[i] + (i % 3 == 1), len[i], off[i], 500 + i);
    }
    close_chain(c);

    /* Everything is in the file. */
    c = open_chain(e->ctx, tpath(e, name), VD_OPEN_BUFFERED);
    for (int i = 0; i < NREQ; i++) {
        expect_pattern(c, off[i], len[i], 500 + i);
        free(bufs[i]);
    }
    close_chain(c);
}

static void test_many_in_flight_direct(void **state)
{
    many_in_flight(*state, "direct.vdk", 0);
}

static void test_many_in_flight_buffered(void **state)
{
    many_in_flight(*state, "buffered.vdk", VD_OPEN_BUFFERED);
}

/* Writes to fresh blocks, rewrites of written ones, and reads of others,
 * all in flight together. */
static void test_mixed_in_flight(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR);
    write_pattern(c, 0, 4 * MiB, 1);

    enum { N = 48 };
    uint8_t *bufs[N];
    struct req reqs[N];
    int done = 0;
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < N; i++) {
        bufs[i] = malloc(65536);
        assert_non_null(bufs[i]);
        reqs[i].total_done = &done;
        uint64_t off = (uint64_t)i * 65536;
        int rc;
        switch (i % 3) {
        case 0:     /* read of old data */
            memset(bufs[i], 0, 65536);
            rc = vd_aio_read(c, bufs[i], off, 65536, req_cb, &reqs[i]);
            break;
        case 1:     /* overwrite of half a block */
            fill_pattern(bufs[i], 32768, off + 16384, 2);
            rc = vd_aio_write(c, bufs[i], off + 16384, 32768, 0, req_cb,
                              &reqs[i]);
            break;
        default:    /* a fresh block far away, FUA */
            fill_pattern(bufs[i], 65536, 32 * MiB + off, 3);
            rc = vd_aio_write(c, bufs[i], 32 * MiB + off, 65536, VD_IO_FUA,
                              req_cb, &reqs[i]);
            break;
        }
        assert_rc(rc, 0);
    }
    poll_until(e->ctx, &done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].calls, 1);
        assert_int_equal(reqs[i].result, 0);
        if (i % 3 == 0)
            check_pattern(bufs[i], 65536, (uint64_t)i * 65536, 1);
        free(bufs[i]);
    }
    for (int i = 0; i < N; i++) {
        uint64_t off = (uint64_t)i * 65536;
        if (i % 3 == 1) {
            expect_pattern(c, off, 16384, 1);
            expect_pattern(c, off + 16384, 32768, 2);
            expect_pattern(c, off + 49152, 16384, 1);
        } else if (i % 3 == 2) {
            expect_pattern(c, 32 * MiB + off, 65536, 3);
        }
    }
    close_chain(c);
}

static void test_flush_zero_discard_cb(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    uint8_t *buf = malloc(65536);
    assert_non_null(buf);
    fill_pattern(buf, 65536, 0, 1);
    int done = 0;
    struct req w = { .total_done = &done }, f = { .total_done = &done };
    assert_rc(vd_aio_write(c, buf, 0, 65536, 0, req_cb, &w), 0);
    poll_until(e->ctx, &done, 1);
    assert_rc(vd_aio_flush(c, req_cb, &f), 0);
    assert_int_equal(f.calls, 0);
    poll_until(e->ctx, &done, 2);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.result, 0);

    /* A write, a flush and a zero in flight together (the flush covers
     * only what completed before it; it must still complete). */
    struct req w2 = { .total_done = &done }, f2 = { .total_done = &done };
    struct req z = { .total_done = &done }, d = { .total_done = &done };
    done = 0;
    assert_rc(vd_aio_write(c, buf, 1 * MiB, 65536, 0, req_cb, &w2), 0);
    assert_rc(vd_aio_flush(c, req_cb, &f2), 0);
    assert_rc(vd_aio_zero(c, 8192, 8192, 0, req_cb, &z), 0);
    assert_rc(vd_aio_discard(c, 32768, 4096, req_cb, &d), 0);
    assert_int_equal(vd_ctx_inflight(e->ctx), 4);
    poll_until(e->ctx, &done, 4);
    assert_int_equal(w2.calls + f2.calls + z.calls + d.calls, 4);
    assert_int_equal(w2.result, 0);
    assert_int_equal(f2.result, 0);
    assert_int_equal(z.result, 0);
    assert_int_equal(d.result, 0);
    expect_pattern(c, 0, 8192, 1);
    expect_zero(c, 8192, 8192);
    expect_pattern(c, 16384, 16384, 1);
    expect_zero(c, 32768, 4096);
    expect_pattern(c, 36864, 65536 - 36864, 1);

    /* A FUA zero. */
    struct req z2 = { .total_done = &done };
    done = 0;
    assert_rc(vd_aio_zero(c, 1 * MiB, 65536, VD_IO_FUA, req_cb, &z2), 0);
    poll_until(e->ctx, &done, 1);
    assert_int_equal(z2.result, 0);
    expect_zero(c, 1 * MiB, 65536);
    free(buf);
    close_chain(c);
}

/* Submissions that are refused return an error and never call back. */
static void test_refused_submit(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    uint8_t buf[8192];
    memset(buf, 0x33, sizeof(buf));
    struct req r = { 0 };

    assert_rc(vd_aio_read(c, buf, 100, 512, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_read(c, buf, 0, 100, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_write(c, buf, 1, 512, 0, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_write(c, buf, 0, 1000, 0, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_zero(c, 0, 100, 0, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_discard(c, 7, 512, req_cb, &r), -EINVAL);
    assert_rc(vd_aio_read(c, buf, SIZE, 512, req_cb, &r), -ENOSPC);
    assert_rc(vd_aio_write(c, buf, SIZE - 512, 1024, 0, req_cb, &r), -ENOSPC);
    assert_rc(vd_aio_zero(c, SIZE, 4096, 0, req_cb, &r), -ENOSPC);
    assert_rc(vd_aio_discard(c, SIZE - 4096, 8192, req_cb, &r), -ENOSPC);
    assert_rc_either(vd_aio_write(c, buf, UINT64_MAX - 511, 512, 0, req_cb, &r),
                     -ENOSPC, -EINVAL);
    assert_rc_either(vd_aio_zero(c, 4096, UINT64_MAX - 511, 0, req_cb, &r),
                     -ENOSPC, -EINVAL);
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(vd_ctx_poll(e->ctx, 0), 0);
    assert_int_equal(r.calls, 0);
    close_chain(c);

    /* A read-only chain refuses writes, zeroes and discards. */
    c = open_chain(e->ctx, tpath(e, "a.vdk"), VD_OPEN_BUFFERED);
    assert_rc(vd_aio_write(c, buf, 0, 512, 0, req_cb, &r), -EROFS);
    assert_rc(vd_aio_zero(c, 0, 512, 0, req_cb, &r), -EROFS);
    assert_rc(vd_aio_discard(c, 0, 512, req_cb, &r), -EROFS);
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);
    assert_int_equal(vd_ctx_poll(e->ctx, 10), 0);
    assert_int_equal(r.calls, 0);
    /* ...but reads are accepted and complete. */
    int done = 0;
    struct req rd = { .total_done = &done };
    assert_rc(vd_aio_read(c, buf, 0, 8192, req_cb, &rd), 0);
    poll_until(e->ctx, &done, 1);
    assert_int_equal(rd.result, 0);
    check_zero(buf, 8192, 0);
    assert_int_equal(r.calls, 0);
    close_chain(c);
}

/* Callbacks may submit new requests: a chain of write -> read -> check. */
struct relay {
    struct vd_chain *chain;
    uint8_t *wbuf, *rbuf;
    uint64_t off;
    size_t len;
    int stage;
    int result;
    int remaining;
};

static void relay_cb(void *opaque, int result)
{
    struct relay *r = opaque;
    r->stage++;
    if (result < 0 && r->result == 0)
        r->result = result;
    if (r->remaining > 0) {
        r->remaining--;
        int rc;
        if (r->stage % 2 == 1) {
            rc = vd_aio_read(r->chain, r->rbuf, r->off, r->len, relay_cb, r);
        } else {
            r->off += r->len;
            rc = vd_aio_write(r->chain, r->wbuf, r->off, r->len, 0, relay_cb, r);
        }
        if (rc < 0 && r->result == 0)
            r->result = rc;
    }
}

static void test_submit_from_callback(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR);
    struct relay r = { .chain = c, .off = 0, .len = 8192, .remaining = 9 };
    r.wbuf = malloc(8192);
    r.rbuf = malloc(8192);
    assert_non_null(r.wbuf);
    assert_non_null(r.rbuf);
    memset(r.wbuf, 0x5c, 8192);
    assert_rc(vd_aio_write(c, r.wbuf, 0, 8192, 0, relay_cb, &r), 0);
    for (int iter = 0; r.stage < 10; iter++) {
        if (iter > 20000)
            fail_msg("stuck at stage %d", r.stage);
        assert_true(vd_ctx_poll(e->ctx, 1000) >= 0);
    }
    assert_int_equal(r.stage, 10);
    assert_int_equal(r.result, 0);
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);
    /* The last read (stage 9 -> 10) read what stage 8's write wrote. */
    for (int i = 0; i < 8192; i++)
        assert_int_equal(r.rbuf[i], 0x5c);
    /* Five writes of 8 KiB, back to back. */
    uint8_t *all = malloc(5 * 8192);
    assert_non_null(all);
    assert_rc(vd_read(c, all, 0, 5 * 8192), 0);
    for (int i = 0; i < 5 * 8192; i++)
        assert_int_equal(all[i], 0x5c);
    expect_zero(c, 5 * 8192, 8192);
    free(all);
    free(r.wbuf);
    free(r.rbuf);
    close_chain(c);
}

/* Two writes of the same range in flight: the result is one of them,
 * whole, not a mix. */
static void test_overlapping_writes(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR);
    const size_t len = 128 * KiB;
    uint8_t *a = malloc(len), *b = malloc(len), *got = malloc(len);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(got);
    for (int round = 0; round < 8; round++) {
        uint64_t off = 1 * MiB + (uint64_t)round * 256 * KiB + 4096 * round;
        fill_pattern(a, len, off, 10 + round);
        fill_pattern(b, len, off, 20 + round);
        int done = 0;
        struct req ra = { .total_done = &done }, rb = { .total_done = &done };
        assert_rc(vd_aio_write(c, a, off, len, 0, req_cb, &ra), 0);
        assert_rc(vd_aio_write(c, b, off, len, 0, req_cb, &rb), 0);
        poll_until(e->ctx, &done, 2);
        assert_int_equal(ra.result, 0);
        assert_int_equal(rb.result, 0);
        assert_rc(vd_read(c, got, off, len), 0);
        if (memcmp(got, a, len) != 0 && memcmp(got, b, len) != 0)
            fail_msg("round %d: overlapping writes left a mix of both", round);
    }
    free(a);
    free(b);
    free(got);
    close_chain(c);
}

/* Several chains on one context. */
static void test_two_chains_one_ctx(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c1 = open_big(e, "one.vdk", VD_OPEN_RDWR);
    struct vd_chain *c2 = open_big(e, "two.vdk", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    enum { N = 16 };
    uint8_t *bufs[2][N];
    struct req reqs[2][N];
    int done = 0;
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 2; k++) {
            bufs[k][i] = malloc(16384);
            assert_non_null(bufs[k][i]);
            uint64_t off = (uint64_t)i * 1 * MiB;
            fill_pattern(bufs[k][i], 16384, off, 70 + k);
            reqs[k][i].total_done = &done;
            assert_rc(vd_aio_write(k ? c2 : c1, bufs[k][i], off, 16384, 0,
                                   req_cb, &reqs[k][i]), 0);
        }
    }
    assert_int_equal(vd_ctx_inflight(e->ctx), 2 * N);
    poll_until(e->ctx, &done, 2 * N);
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 2; k++) {
            assert_int_equal(reqs[k][i].calls, 1);
            assert_int_equal(reqs[k][i].result, 0);
            free(bufs[k][i]);
            expect_pattern(k ? c2 : c1, (uint64_t)i * MiB, 16384, 70 + k);
        }
    }
    close_chain(c1);
    close_chain(c2);
}

/* A context with a small queue: whatever it accepts completes exactly
 * once; whatever it refuses never calls back. */
static void test_small_queue(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "a.vdk");
    make_layer(p, SIZE, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_ctx *ctx = NULL;
    assert_rc(vd_ctx_new(4, &ctx), 0);
    struct vd_chain *c = open_chain(ctx, p, VD_OPEN_RDWR);
    enum { N = 64 };
    uint8_t *buf = malloc(N * 4096);
    assert_non_null(buf);
    fill_pattern(buf, N * 4096, 0, 9);
    struct req reqs[N];
    memset(reqs, 0, sizeof(reqs));
    bool accepted[N];
    int done = 0, nacc = 0;
    for (int i = 0; i < N; i++) {
        reqs[i].total_done = &done;
        int rc = vd_aio_write(c, buf + i * 4096, (uint64_t)i * 4096, 4096, 0,
                              req_cb, &reqs[i]);
        accepted[i] = rc == 0;
        if (rc != 0 && rc != -EAGAIN && rc != -ENOMEM && rc != -EBUSY)
            fail_msg("submit %d refused with unexpected %d (%s)", i, rc,
                     strerror(-rc));
        nacc += accepted[i];
    }
    assert_true(nacc >= 4);
    assert_int_equal(vd_ctx_inflight(ctx), (unsigned)nacc);
    for (int iter = 0; done < nacc; iter++) {
        if (iter > 20000)
            fail_msg("%d of %d requests completed", done, nacc);
        assert_true(vd_ctx_poll(ctx, 1000) >= 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].calls, accepted[i] ? 1 : 0);
        if (accepted[i]) {
            assert_int_equal(reqs[i].result, 0);
            expect_pattern(c, (uint64_t)i * 4096, 4096, 9);
        }
    }
    free(buf);
    close_chain(c);
    vd_ctx_free(ctx);
}

/* Closing a chain waits for its requests: their data is written. */
static void test_close_waits(void **state)
{
    struct tenv *e = *state;
    struct vd_chain *c = open_big(e, "a.vdk", VD_OPEN_RDWR);
    enum { N = 8 };
    uint8_t *bufs[N];
    struct req reqs[N];
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < N; i++) {
        bufs[i] = malloc(65536);
        assert_non_null(bufs[i]);
        fill_pattern(bufs[i], 65536, (uint64_t)i * MiB, 33);
        assert_rc(vd_aio_write(c, bufs[i], (uint64_t)i * MiB, 65536, 0,
                               req_cb, &reqs[i]), 0);
    }
    close_chain(c);
    for (int i = 0; i < 3; i++)
        assert_true(vd_ctx_poll(e->ctx, 0) >= 0);
    assert_int_equal(vd_ctx_inflight(e->ctx), 0);
    for (int i = 0; i < N; i++) {
        assert_true(reqs[i].calls <= 1);
        if (reqs[i].calls)
            assert_int_equal(reqs[i].result, 0);
        free(bufs[i]);
    }
    c = open_chain(e->ctx, tpath(e, "a.vdk"), VD_OPEN_BUFFERED);
    for (int i = 0; i < N; i++)
        expect_pattern(c, (uint64_t)i * MiB, 65536, 33);
    close_chain(c);
    assert_false(layer_info(tpath(e, "a.vdk")).dirty);
}

/* Through a delta (copy-on-write of partial sub-blocks) with many
 * requests in flight in the same blocks. */
static void test_cow_in_flight(void **state)
{
    struct tenv *e = *state;
    const char *base = tpath(e, "base.vdk");
    const char *child = tpath(e, "child.vdk");
    make_layer(base, 4 * MiB, 65536, VD_DIGEST_NONE, NULL, NULL);
    struct vd_chain *c = open_chain(e->ctx, base, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 4 * MiB, 1);
    close_chain(c);
    make_layer(child, 0, 0, VD_DIGEST_NONE, base, NULL);
    c = open_chain(e->ctx, child, VD_OPEN_RDWR);

    struct model m;
    model_init(&m, 4 * MiB);
    fill_pattern(m.data, 4 * MiB, 0, 1);
    /* 64 sector writes, 8 in each of 8 blocks, none overlapping: several
     * per 4 KiB sub-block, so COW of the same sub-block is in flight many
     * times at once. */
    enum { N = 64 };
    uint8_t bufs[N][512];
    struct req reqs[N];
    int done = 0;
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < N; i++) {
        uint64_t off = (uint64_t)(i / 8) * 65536 * 3 + (uint64_t)(i % 8) * 1024;
        fill_pattern(bufs[i], 512, off, 200 + i);
        fill_pattern(m.data + off, 512, off, 200 + i);
        reqs[i].total_done = &done;
        assert_rc(vd_aio_write(c, bufs[i], off, 512, 0, req_cb, &reqs[i]), 0);
    }
    poll_until(e->ctx, &done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].calls, 1);
        assert_int_equal(reqs[i].result, 0);
    }
    model_check(&m, c);
    close_chain(c);
    c = open_chain(e->ctx, child, VD_OPEN_BUFFERED);
    model_check(&m, c);
    close_chain(c);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_new_free),
        cmocka_unit_test_setup_teardown(test_ctx_fd_wakeup, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_many_in_flight_direct, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_many_in_flight_buffered, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_mixed_in_flight, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_flush_zero_discard_cb, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_refused_submit, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_submit_from_callback, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_writes, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_two_chains_one_ctx, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_small_queue, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_close_waits, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_cow_in_flight, tenv_setup, tenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
