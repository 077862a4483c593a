/*
 * test-virtio.c - the virtqueue and virtio-blk device model of vmm/
 * against guest memory the test lays out by hand, as a guest driver would:
 * well-formed requests cut into descriptors every which way, and
 * malformed ones (loops, indexes and addresses out of range, oversize
 * lengths, indirect descriptors, buffers out of order, broken rings).
 * The device must answer each with the right status, never touch memory
 * outside the guest's or the disk outside its range, and go on serving.
 * The disk is memory; the backend completes at once.  Then the same
 * device behind the virtio-mmio transport, driven through its registers
 * the way Linux's virtio_mmio driver does, and with the accesses a
 * hostile guest could make.
 */
#include <errno.h>
#include <stdlib.h>

#include "helpers.h"
#include "blk.h"
#include "mmio.h"

#define GUEST_MEM  (1u << 20)
#define QSIZE      16u
#define DESC_GPA   0x1000u
#define AVAIL_GPA  0x2000u
#define USED_GPA   0x3000u
#define HDR_GPA    0x4000u      /* request headers */
#define DATA_GPA   0x10000u     /* data buffers */
#define STATUS_GPA 0x8000u
#define DISK       (256u * 1024)

struct guest {
    struct vmm_mem mem;
    struct vblk dev;
    uint8_t *disk;
    uint16_t avail_idx;
    unsigned irqs;
    int fail_backend;           /* the backend's result for the next requests */
};

static void irq(void *opaque)
{
    ((struct guest *)opaque)->irqs++;
}

/* The memory backend: does the request on the spot. */
static void submit(void *opaque, struct vblk_req *r)
{
    struct guest *g = opaque;
    uint64_t off = r->offset;

    assert_true(r->offset + r->len <= DISK);
    switch (r->op) {
    case VBLK_READ:
    case VBLK_WRITE:
        for (unsigned i = 0; i < r->niov; i++) {
            /* Every buffer the device hands over is inside guest RAM. */
            assert_true((uint8_t *)r->iov[i].iov_base >= g->mem.host);
            assert_true((uint8_t *)r->iov[i].iov_base + r->iov[i].iov_len <=
                        g->mem.host + g->mem.size);
            if (r->op == VBLK_READ)
                memcpy(r->iov[i].iov_base, g->disk + off, r->iov[i].iov_len);
            else
                memcpy(g->disk + off, r->iov[i].iov_base, r->iov[i].iov_len);
            off += r->iov[i].iov_len;
        }
        assert_int_equal(off, r->offset + r->len);
        break;
    case VBLK_DISCARD:
    case VBLK_ZERO:
        memset(g->disk + r->offset, 0, r->len);
        break;
    case VBLK_FLUSH:
        break;
    }
    vblk_req_done(r, g->fail_backend);
}

static int setup(void **state)
{
    struct guest *g = calloc(1, sizeof(*g));

    assert_non_null(g);
    g->mem.size = GUEST_MEM;
    g->mem.host = calloc(1, GUEST_MEM);
    g->disk = calloc(1, DISK);
    assert_non_null(g->mem.host);
    assert_non_null(g->disk);
    for (unsigned i = 0; i < DISK; i++)
        g->disk[i] = (uint8_t)(i * 13 + 5);
    g->dev.mem = &g->mem;
    g->dev.capacity = DISK;
    memcpy(g->dev.id, "vdisk-test-disk-0001", VIRTIO_BLK_ID_BYTES);
    g->dev.backend.submit = submit;
    g->dev.backend.opaque = g;
    g->dev.interrupt = irq;
    g->dev.irq_opaque = g;
    g->dev.vq.num = QSIZE;
    g->dev.vq.desc = DESC_GPA;
    g->dev.vq.avail = AVAIL_GPA;
    g->dev.vq.used = USED_GPA;
    assert_true(virtq_setup_ok(&g->dev.vq, &g->mem));
    g->dev.vq.ready = true;
    *state = g;
    return 0;
}

static int teardown(void **state)
{
    struct guest *g = *state;

    free(g->mem.host);
    free(g->disk);
    free(g);
    return 0;
}

static uint8_t *gp(struct guest *g, uint64_t gpa)
{
    return g->mem.host + gpa;
}

static void desc(struct guest *g, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    uint8_t *d = gp(g, DESC_GPA + 16 * i);

    vq_put64(d, addr);
    vq_put32(d + 8, len);
    vq_put16(d + 12, flags);
    vq_put16(d + 14, next);
}

static void header(struct guest *g, uint64_t gpa, uint32_t type, uint64_t sector)
{
    memset(gp(g, gpa), 0, VIRTIO_BLK_HDR_SIZE);
    vq_put32(gp(g, gpa), type);
    vq_put64(gp(g, gpa + 8), sector);
}

/* Offers chain head and notifies; returns the used entry's length and
 * checks its id. */
static uint32_t run(struct guest *g, uint16_t head)
{
    uint16_t used_before = vq_le16(gp(g, USED_GPA + 2));
    uint8_t *e;

    vq_put16(gp(g, AVAIL_GPA + 4 + 2 * (g->avail_idx % QSIZE)), head);
    g->avail_idx++;
    vq_put16(gp(g, AVAIL_GPA + 2), g->avail_idx);
    assert_int_equal(vblk_notify(&g->dev), 1);
    assert_int_equal(vq_le16(gp(g, USED_GPA + 2)), (uint16_t)(used_before + 1));
    e = gp(g, USED_GPA + 4 + 8 * (used_before % QSIZE));
    assert_int_equal(vq_le32(e), head);
    assert_int_equal(g->dev.inflight, 0);
    return vq_le32(e + 4);
}

#define R 0
#define W VIRTQ_DESC_F_WRITE
#define N VIRTQ_DESC_F_NEXT

/* hdr | data | status, three descriptors. */
static uint32_t simple(struct guest *g, uint32_t type, uint64_t sector, uint32_t len,
                       uint16_t data_flags)
{
    header(g, HDR_GPA, type, sector);
    gp(g, STATUS_GPA)[0] = 0xee;
    desc(g, 0, HDR_GPA, VIRTIO_BLK_HDR_SIZE, R | N, 1);
    desc(g, 1, DATA_GPA, len, data_flags | N, 2);
    desc(g, 2, STATUS_GPA, 1, W, 0);
    return run(g, 0);
}

static uint8_t status(struct guest *g)
{
    return gp(g, STATUS_GPA)[0];
}

static void test_read_write(void **state)
{
    struct guest *g = *state;

    assert_int_equal(simple(g, VIRTIO_BLK_T_IN, 2, 4096, W), 4097);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    assert_memory_equal(gp(g, DATA_GPA), g->disk + 1024, 4096);

    memset(gp(g, DATA_GPA), 0x5a, 1024);
    assert_int_equal(simple(g, VIRTIO_BLK_T_OUT, 8, 1024, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    for (unsigned i = 0; i < 1024; i++)
        assert_int_equal(g->disk[4096 + i], 0x5a);
    assert_int_equal(g->irqs, 2);

    /* The backend fails: IOERR, and the device goes on. */
    g->fail_backend = -EIO;
    assert_int_equal(simple(g, VIRTIO_BLK_T_IN, 0, 512, W), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    g->fail_backend = 0;
    assert_int_equal(simple(g, VIRTIO_BLK_T_FLUSH, 0, 0, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
}

/* The same read cut differently: the header over two descriptors, the
 * data over three, the last data bytes and the status in one buffer. */
static void test_framing(void **state)
{
    struct guest *g = *state;
    uint8_t *buf = gp(g, DATA_GPA);

    header(g, HDR_GPA, VIRTIO_BLK_T_IN, 4);
    desc(g, 3, HDR_GPA, 5, R | N, 9);
    desc(g, 9, HDR_GPA + 5, 11, R | N, 0);
    desc(g, 0, DATA_GPA, 100, W | N, 7);
    desc(g, 7, DATA_GPA + 100, 400, W | N, 15);
    desc(g, 15, DATA_GPA + 500, 13, W, 0);   /* 12 data bytes + status */
    buf[512] = 0xee;
    assert_int_equal(run(g, 3), 513);
    assert_int_equal(buf[512], VIRTIO_BLK_S_OK);
    assert_memory_equal(buf, g->disk + 2048, 512);
}

static void test_other_requests(void **state)
{
    struct guest *g = *state;
    uint8_t *dwz = gp(g, DATA_GPA);

    /* GET_ID: 20 bytes, no NUL needed. */
    assert_int_equal(simple(g, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, W), 21);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    assert_memory_equal(gp(g, DATA_GPA), "vdisk-test-disk-0001", VIRTIO_BLK_ID_BYTES);

    /* Write zeroes over sectors 10..13, with unmap allowed. */
    vq_put64(dwz, 10);
    vq_put32(dwz + 8, 4);
    vq_put32(dwz + 12, VIRTIO_BLK_DWZ_F_UNMAP);
    assert_int_equal(simple(g, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    for (unsigned i = 0; i < 2048; i++)
        assert_int_equal(g->disk[5120 + i], 0);
    assert_int_not_equal(g->disk[5120 + 2048], 0);

    /* Discard: flags must be 0. */
    vq_put32(dwz + 12, VIRTIO_BLK_DWZ_F_UNMAP);
    assert_int_equal(simple(g, VIRTIO_BLK_T_DISCARD, 0, 16, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_UNSUPP);
    vq_put32(dwz + 12, 0);
    assert_int_equal(simple(g, VIRTIO_BLK_T_DISCARD, 0, 16, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    /* Two ranges in one request (max_discard_seg is 1). */
    assert_int_equal(simple(g, VIRTIO_BLK_T_DISCARD, 0, 32, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);

    /* An unknown type. */
    assert_int_equal(simple(g, 99, 0, 512, W), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_UNSUPP);
}

static void test_out_of_disk(void **state)
{
    struct guest *g = *state;
    uint8_t *copy = malloc(DISK);
    uint8_t *dwz = gp(g, DATA_GPA);

    assert_non_null(copy);
    memcpy(copy, g->disk, DISK);
    /* Past the end, straddling the end, sector numbers that overflow, a
     * length that is not whole sectors. */
    assert_int_equal(simple(g, VIRTIO_BLK_T_OUT, DISK / 512, 512, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_int_equal(simple(g, VIRTIO_BLK_T_OUT, DISK / 512 - 1, 1024, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_int_equal(simple(g, VIRTIO_BLK_T_IN, UINT64_MAX / 512, 512, W), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_int_equal(simple(g, VIRTIO_BLK_T_OUT, 0, 100, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    vq_put64(dwz, UINT64_MAX);
    vq_put32(dwz + 8, 8);
    vq_put32(dwz + 12, 0);
    assert_int_equal(simple(g, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_memory_equal(copy, g->disk, DISK);
    /* A read-only disk refuses writes. */
    g->dev.read_only = true;
    assert_int_equal(simple(g, VIRTIO_BLK_T_OUT, 0, 512, R), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_memory_equal(copy, g->disk, DISK);
    free(copy);
}

/* Malformed chains: an error status where there is a byte for it, the
 * chain returned, the device still serving afterwards. */
static void test_malformed(void **state)
{
    struct guest *g = *state;
    uint64_t faults = g->dev.faults;

    /* A loop: 0 -> 1 -> 2 -> 1. */
    header(g, HDR_GPA, VIRTIO_BLK_T_IN, 0);
    desc(g, 0, HDR_GPA, 16, R | N, 1);
    desc(g, 1, DATA_GPA, 512, W | N, 2);
    desc(g, 2, DATA_GPA + 512, 512, W | N, 1);
    gp(g, DATA_GPA)[511] = 0xee;
    assert_int_equal(run(g, 0), 1);
    /* 16 buffers taken, the last one desc 1: the status is its last byte. */
    assert_int_equal(gp(g, DATA_GPA)[511], VIRTIO_BLK_S_IOERR);
    assert_int_equal(g->dev.last_fault, VIRTQ_LOOP);

    /* A next index past the queue, before any writable buffer: nothing
     * to put a status in. */
    desc(g, 0, HDR_GPA, 16, R | N, 99);
    assert_int_equal(run(g, 0), 0);
    assert_int_equal(g->dev.last_fault, VIRTQ_BAD_INDEX);

    /* Buffers outside guest memory, and lengths that overflow. */
    desc(g, 0, HDR_GPA, 16, R | N, 1);
    desc(g, 1, GUEST_MEM - 256, 512, W | N, 2);
    desc(g, 2, STATUS_GPA, 1, W, 0);
    assert_int_equal(run(g, 0), 0);
    assert_int_equal(g->dev.last_fault, VIRTQ_BAD_ADDR);
    desc(g, 1, 0xfffffffffffff000ull, 0x2000, W | N, 2);
    assert_int_equal(run(g, 0), 0);
    desc(g, 1, DATA_GPA, 0xffffffffu, W | N, 2);
    assert_int_equal(run(g, 0), 0);
    assert_int_equal(g->dev.last_fault, VIRTQ_BAD_ADDR);

    /* An indirect descriptor (not offered). */
    desc(g, 1, DATA_GPA, 512, W | N | VIRTQ_DESC_F_INDIRECT, 2);
    assert_int_equal(run(g, 0), 0);
    assert_int_equal(g->dev.last_fault, VIRTQ_INDIRECT);

    /* A readable buffer after a writable one. */
    desc(g, 1, DATA_GPA, 512, W | N, 2);
    desc(g, 2, STATUS_GPA, 16, R, 0);
    assert_int_equal(run(g, 0), 1);
    assert_int_equal(g->dev.last_fault, VIRTQ_ORDER);

    /* No writable buffer at all, and a header cut short. */
    desc(g, 0, HDR_GPA, 16, R, 0);
    assert_int_equal(run(g, 0), 0);
    desc(g, 0, HDR_GPA, 8, R | N, 2);
    desc(g, 2, STATUS_GPA, 1, W, 0);
    assert_int_equal(run(g, 0), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_IOERR);
    assert_true(g->dev.faults >= faults + 8);

    /* The device still serves well-formed requests. */
    assert_false(g->dev.needs_reset);
    assert_int_equal(simple(g, VIRTIO_BLK_T_IN, 0, 512, W), 513);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
}

/* A broken ring: nothing can be returned, the device stops taking
 * requests (it needs a reset) instead of reading garbage. */
static void test_broken_ring(void **state)
{
    struct guest *g = *state;

    /* A head index past the queue. */
    vq_put16(gp(g, AVAIL_GPA + 4), 40);
    vq_put16(gp(g, AVAIL_GPA + 2), 1);
    assert_int_equal(vblk_notify(&g->dev), 1);
    assert_true(g->dev.needs_reset);
    assert_int_equal(vq_le16(gp(g, USED_GPA + 2)), 0);
    assert_int_equal(vblk_notify(&g->dev), 0);

    /* An available index far ahead of the last one taken. */
    g->dev.needs_reset = false;
    g->dev.vq.last_avail = 0;
    vq_put16(gp(g, AVAIL_GPA + 2), 1000);
    assert_int_equal(vblk_notify(&g->dev), 1);
    assert_true(g->dev.needs_reset);

    /* Rings outside guest memory are refused at setup. */
    g->dev.vq.used = GUEST_MEM - 8;
    assert_false(virtq_setup_ok(&g->dev.vq, &g->mem));
    g->dev.vq.used = USED_GPA;
    g->dev.vq.num = 12;                     /* not a power of two */
    assert_false(virtq_setup_ok(&g->dev.vq, &g->mem));
}

static void test_config(void **state)
{
    struct guest *g = *state;
    uint8_t cfg[VBLK_CONFIG_SIZE];
    uint64_t f = vblk_features(&g->dev);

    vblk_config(&g->dev, cfg);
    assert_int_equal(vq_le64(cfg), DISK / 512);
    assert_int_equal(vq_le32(cfg + 20), 512);
    assert_int_equal(vq_le32(cfg + 40), 1);
    assert_true(f & 1ull << VIRTIO_F_VERSION_1);
    assert_true(f & 1ull << VIRTIO_BLK_F_FLUSH);
    assert_true(f & 1ull << VIRTIO_BLK_F_DISCARD);
    assert_false(f & 1ull << VIRTIO_BLK_F_RO);
    g->dev.read_only = true;
    f = vblk_features(&g->dev);
    assert_true(f & 1ull << VIRTIO_BLK_F_RO);
    assert_false(f & 1ull << VIRTIO_BLK_F_WRITE_ZEROES);
}

/* ------------------------------------------------------------------ */
/* The virtio-mmio transport                                           */

struct wired {
    struct guest *g;
    struct vmmio t;
    bool line;
    unsigned raised;
};

static void line(void *opaque, bool level)
{
    struct wired *w = opaque;

    w->raised += level && !w->line;
    w->line = level;
}

static void used_irq(void *opaque)
{
    vmmio_used(&((struct wired *)opaque)->t);
}

static void wire(struct guest *g, struct wired *w)
{
    memset(w, 0, sizeof(*w));
    w->g = g;
    w->t.mem = &g->mem;
    w->t.irq = line;
    w->t.irq_opaque = w;
    vblk_virtio_device(&g->dev, &w->t.dev);
    g->dev.interrupt = used_irq;
    g->dev.irq_opaque = w;
    memset(&g->dev.vq, 0, sizeof(g->dev.vq));   /* the driver sets it up */
}

static uint32_t rd(struct wired *w, uint64_t off)
{
    return (uint32_t)vmmio_read(&w->t, off, 4);
}

static void wr(struct wired *w, uint64_t off, uint32_t v)
{
    vmmio_write(&w->t, off, 4, v);
}

/* The driver's start-up (virtio 1.x, 3.1.1); returns the status read
 * back after FEATURES_OK. */
static uint32_t bring_up(struct wired *w, uint64_t accept, uint32_t qnum)
{
    uint64_t offered;

    wr(w, VIRTIO_MMIO_STATUS, 0);
    wr(w, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    wr(w, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(w, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    offered = rd(w, VIRTIO_MMIO_DEVICE_FEATURES);
    wr(w, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rd(w, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    assert_int_equal(offered, vblk_features(&w->g->dev));
    wr(w, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(w, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)accept);
    wr(w, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(w, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(accept >> 32));
    wr(w, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                              VIRTIO_STATUS_FEATURES_OK);
    if (!(rd(w, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
        return rd(w, VIRTIO_MMIO_STATUS);
    wr(w, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(rd(w, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(rd(w, VIRTIO_MMIO_QUEUE_NUM_MAX) >= QSIZE);
    wr(w, VIRTIO_MMIO_QUEUE_NUM, qnum);
    wr(w, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC_GPA);
    wr(w, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    wr(w, VIRTIO_MMIO_QUEUE_DRIVER_LOW, AVAIL_GPA);
    wr(w, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
    wr(w, VIRTIO_MMIO_QUEUE_DEVICE_LOW, USED_GPA);
    wr(w, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
    wr(w, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(w, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                              VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    return rd(w, VIRTIO_MMIO_STATUS);
}

static void test_mmio(void **state)
{
    struct guest *g = *state;
    uint64_t accept = 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_BLK_F_FLUSH;
    struct wired w;

    wire(g, &w);
    assert_int_equal(rd(&w, VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert_int_equal(rd(&w, VIRTIO_MMIO_VERSION), 2);
    assert_int_equal(rd(&w, VIRTIO_MMIO_DEVICE_ID), 2);
    assert_true(bring_up(&w, accept, QSIZE) & VIRTIO_STATUS_DRIVER_OK);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_int_equal(vmmio_driver_features(&w.t), accept);

    /* The capacity, as Linux reads it: 32 bits at a time, and whole. */
    assert_int_equal(vmmio_read(&w.t, VIRTIO_MMIO_CONFIG, 4), DISK / 512);
    assert_int_equal(vmmio_read(&w.t, VIRTIO_MMIO_CONFIG + 4, 4), 0);
    assert_int_equal(vmmio_read(&w.t, VIRTIO_MMIO_CONFIG, 8), DISK / 512);
    assert_int_equal(vmmio_read(&w.t, VIRTIO_MMIO_CONFIG + VBLK_CONFIG_SIZE - 2, 4), 0);
    assert_int_equal(vmmio_read(&w.t, 0xfff, 4), 0);

    /* A read through the queue, a notify, the interrupt and its ack. */
    header(g, HDR_GPA, VIRTIO_BLK_T_IN, 1);
    desc(g, 0, HDR_GPA, 16, R | N, 1);
    desc(g, 1, DATA_GPA, 512, W | N, 2);
    desc(g, 2, STATUS_GPA, 1, W, 0);
    vq_put16(gp(g, AVAIL_GPA + 4), 0);
    vq_put16(gp(g, AVAIL_GPA + 2), 1);
    wr(&w, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_int_equal(vq_le16(gp(g, USED_GPA + 2)), 1);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    assert_memory_equal(gp(g, DATA_GPA), g->disk + 512, 512);
    assert_true(w.line);
    assert_int_equal(rd(&w, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    wr(&w, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_false(w.line);

    /* Queue addresses cannot change under a ready queue; notifying a
     * queue that does not exist does nothing. */
    wr(&w, VIRTIO_MMIO_QUEUE_DESC_LOW, 0xdead000);
    assert_int_equal(g->dev.vq.desc, DESC_GPA);
    wr(&w, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
    vmmio_write(&w.t, VIRTIO_MMIO_STATUS, 2, 0);        /* not 32 bits: ignored */
    assert_true(rd(&w, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DRIVER_OK);

    /* A broken ring: the device needs a reset, says so with a config
     * interrupt, and ignores notifies until the driver resets it. */
    vq_put16(gp(g, AVAIL_GPA + 6), 99);
    vq_put16(gp(g, AVAIL_GPA + 2), 2);
    wr(&w, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_true(rd(&w, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_true(rd(&w, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
    wr(&w, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(rd(&w, VIRTIO_MMIO_STATUS), 0);
    assert_false(g->dev.needs_reset);
    assert_false(w.line);
    assert_true(bring_up(&w, accept, QSIZE) & VIRTIO_STATUS_DRIVER_OK);
}

static void test_mmio_refusals(void **state)
{
    struct guest *g = *state;
    struct wired w;

    wire(g, &w);
    /* Without VERSION_1, or with a feature not offered: FEATURES_OK does
     * not stick. */
    assert_false(bring_up(&w, 1ull << VIRTIO_BLK_F_FLUSH, QSIZE) &
                 VIRTIO_STATUS_FEATURES_OK);
    assert_false(bring_up(&w, 1ull << VIRTIO_F_VERSION_1 | 1ull << 40, QSIZE) &
                 VIRTIO_STATUS_FEATURES_OK);
    /* A queue size that is not a power of two, or above the maximum: the
     * queue does not become ready. */
    bring_up(&w, 1ull << VIRTIO_F_VERSION_1, 12);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_READY), 0);
    bring_up(&w, 1ull << VIRTIO_F_VERSION_1, 4096);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_READY), 0);
    /* Rings outside guest memory. */
    bring_up(&w, 1ull << VIRTIO_F_VERSION_1, QSIZE);
    wr(&w, VIRTIO_MMIO_QUEUE_READY, 0);
    wr(&w, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 1);            /* used at 4 GiB + ... */
    wr(&w, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_READY), 0);
    /* Notify of a queue that is not ready: nothing happens. */
    vq_put16(gp(g, AVAIL_GPA + 2), 1);
    wr(&w, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_int_equal(vq_le16(gp(g, USED_GPA + 2)), 0);
    /* Another queue than 0 does not exist. */
    wr(&w, VIRTIO_MMIO_QUEUE_SEL, 3);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    wr(&w, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_int_equal(rd(&w, VIRTIO_MMIO_QUEUE_READY), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio_refusals, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
