/*
 * blk.c - the virtio-blk device model (virtio 1.x, 5.2).
 *
 * A request is a chain: device-readable bytes (the 16-byte header, then
 * the data of a write or the ranges of a discard), then device-writable
 * bytes (the data of a read, then one status byte, the chain's last).
 * The driver may cut these into descriptors any way it likes (2.6.4,
 * "message framing"), so the header, the data and the status are found by
 * byte position across the segments, never by descriptor.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blk.h"

uint64_t vblk_features(const struct vblk *d)
{
    uint64_t f = 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_BLK_F_SEG_MAX |
                 1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH;

    if (d->read_only)
        f |= 1ull << VIRTIO_BLK_F_RO;
    else
        f |= 1ull << VIRTIO_BLK_F_DISCARD | 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
    return f;
}

void vblk_config(const struct vblk *d, uint8_t out[VBLK_CONFIG_SIZE])
{
    /* Largest range of one discard or write-zeroes: what a u32 of
     * sectors holds, rounded down to 1 MiB. */
    const uint32_t max_range = 0xfffff800u;

    memset(out, 0, VBLK_CONFIG_SIZE);
    vq_put64(out + 0, d->capacity / VIRTIO_BLK_SECTOR);   /* capacity */
    vq_put32(out + 12, VIRTQ_MAX_SEGS - 2);   /* seg_max: less header, status */
    vq_put32(out + 20, VIRTIO_BLK_SECTOR);    /* blk_size */
    vq_put32(out + 36, max_range);            /* max_discard_sectors */
    vq_put32(out + 40, 1);                    /* max_discard_seg */
    vq_put32(out + 44, 1);                    /* discard_sector_alignment */
    vq_put32(out + 48, max_range);            /* max_write_zeroes_sectors */
    vq_put32(out + 52, 1);                    /* max_write_zeroes_seg */
    out[56] = 1;                              /* write_zeroes_may_unmap */
}

/* Copies len bytes at byte position pos of the chain's readable (or
 * writable) part into iov entries; returns how many, or -1 if the part is
 * shorter or needs more than max entries. */
static int slice(const struct virtq_chain *c, bool writable, uint64_t pos, uint64_t len,
                 struct iovec *iov, unsigned max)
{
    unsigned n = 0;

    for (unsigned i = 0; i < c->n && len > 0; i++) {
        const struct virtq_seg *s = &c->seg[i];
        uint64_t take;

        if (s->write != writable)
            continue;
        if (pos >= s->len) {
            pos -= s->len;
            continue;
        }
        take = s->len - pos < len ? s->len - pos : len;
        if (n == max)
            return -1;
        iov[n].iov_base = (uint8_t *)s->host + pos;
        iov[n].iov_len = (size_t)take;
        n++;
        len -= take;
        pos = 0;
    }
    return len ? -1 : (int)n;
}

/* Reads len bytes at position pos of the readable part into buf. */
static bool read_part(const struct virtq_chain *c, uint64_t pos, void *buf, size_t len)
{
    struct iovec iov[VIRTIO_BLK_HDR_SIZE];
    uint8_t *p = buf;
    int n = slice(c, false, pos, len, iov, VIRTIO_BLK_HDR_SIZE);

    if (n < 0)
        return false;
    for (int i = 0; i < n; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    return true;
}

/* The status byte: the last byte of the writable part, or NULL. */
static uint8_t *status_byte(const struct virtq_chain *c)
{
    for (unsigned i = c->n; i-- > 0;)
        if (c->seg[i].write && c->seg[i].len > 0)
            return (uint8_t *)c->seg[i].host + c->seg[i].len - 1;
    return NULL;
}

static void complete(struct vblk *d, uint16_t head, uint8_t *status, uint8_t value,
                     uint32_t written)
{
    if (status)
        *status = value;
    virtq_push(&d->vq, d->mem, head, status ? written : 0);
    if (d->interrupt)
        d->interrupt(d->irq_opaque);
}

/* A chain the device cannot take: the guest gets IOERR if it gave a
 * place for a status, else the chain back with nothing written. */
static void refuse(struct vblk *d, const struct virtq_chain *c, enum virtq_fault f)
{
    d->faults++;
    d->last_fault = f;
    complete(d, c->head, status_byte(c), VIRTIO_BLK_S_IOERR, 1);
}

/* Is [sector, sector + bytes) inside the disk?  Sets *off. */
static bool in_disk(const struct vblk *d, uint64_t sector, uint64_t bytes, uint64_t *off)
{
    if (sector > d->capacity / VIRTIO_BLK_SECTOR)
        return false;
    *off = sector * VIRTIO_BLK_SECTOR;
    return bytes <= d->capacity - *off;
}

/* Builds the request of a well-formed chain, or answers it at once.
 * Returns the request to submit, or NULL when answered. */
static struct vblk_req *parse(struct vblk *d, const struct virtq_chain *c)
{
    uint8_t hdr[VIRTIO_BLK_HDR_SIZE], dwz[VIRTIO_BLK_DWZ_SIZE];
    uint8_t *status = status_byte(c);
    struct vblk_req *r;
    uint64_t data_out, data_in, off, sector;
    uint32_t type, flags, nsect;
    int n;

    if (!status || !read_part(c, 0, hdr, sizeof(hdr))) {
        refuse(d, c, VIRTQ_OK);
        return NULL;
    }
    type = vq_le32(hdr);
    sector = vq_le64(hdr + 8);
    data_out = c->out_len - VIRTIO_BLK_HDR_SIZE;
    data_in = c->in_len - 1;

    r = calloc(1, sizeof(*r));
    if (!r) {
        complete(d, c->head, status, VIRTIO_BLK_S_IOERR, 1);
        return NULL;
    }
    r->dev = d;
    r->generation = d->generation;
    r->head = c->head;
    r->status = status;
    r->written = 1;

    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool in = type == VIRTIO_BLK_T_IN;
        uint64_t len = in ? data_in : data_out;

        if ((!in && d->read_only) || len % VIRTIO_BLK_SECTOR ||
            !in_disk(d, sector, len, &off))
            goto ioerr;
        n = slice(c, in, in ? 0 : VIRTIO_BLK_HDR_SIZE, len, r->iov, VIRTQ_MAX_SEGS);
        if (n < 0)
            goto ioerr;
        r->op = in ? VBLK_READ : VBLK_WRITE;
        r->offset = off;
        r->len = len;
        r->niov = (unsigned)n;
        if (in)
            r->written = (uint32_t)len + 1;
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        r->op = VBLK_FLUSH;
        break;
    case VIRTIO_BLK_T_GET_ID: {
        uint64_t len = data_in < VIRTIO_BLK_ID_BYTES ? data_in : VIRTIO_BLK_ID_BYTES;
        struct iovec iov[VIRTQ_MAX_SEGS];
        const char *src = d->id;

        n = slice(c, true, 0, len, iov, VIRTQ_MAX_SEGS);
        if (n < 0)
            goto ioerr;
        for (int i = 0; i < n; i++) {
            memcpy(iov[i].iov_base, src, iov[i].iov_len);
            src += iov[i].iov_len;
        }
        complete(d, c->head, status, VIRTIO_BLK_S_OK, (uint32_t)len + 1);
        free(r);
        return NULL;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        /* One range per request: max_discard_seg and max_write_zeroes_seg
         * are 1. */
        if (d->read_only || data_out != VIRTIO_BLK_DWZ_SIZE ||
            !read_part(c, VIRTIO_BLK_HDR_SIZE, dwz, sizeof(dwz)))
            goto ioerr;
        nsect = vq_le32(dwz + 8);
        flags = vq_le32(dwz + 12);
        /* 5.2.6.2: unmap is for write-zeroes only; other bits reserved. */
        if (flags & ~VIRTIO_BLK_DWZ_F_UNMAP ||
            (type == VIRTIO_BLK_T_DISCARD && flags)) {
            complete(d, c->head, status, VIRTIO_BLK_S_UNSUPP, 1);
            free(r);
            return NULL;
        }
        if (!in_disk(d, vq_le64(dwz), (uint64_t)nsect * VIRTIO_BLK_SECTOR, &off))
            goto ioerr;
        r->op = type == VIRTIO_BLK_T_DISCARD ? VBLK_DISCARD : VBLK_ZERO;
        r->offset = off;
        r->len = (uint64_t)nsect * VIRTIO_BLK_SECTOR;
        r->unmap = flags & VIRTIO_BLK_DWZ_F_UNMAP;
        break;
    default:
        complete(d, c->head, status, VIRTIO_BLK_S_UNSUPP, 1);
        free(r);
        return NULL;
    }
    return r;

ioerr:
    d->faults++;
    complete(d, c->head, status, VIRTIO_BLK_S_IOERR, 1);
    free(r);
    return NULL;
}

unsigned vblk_notify(struct vblk *d)
{
    static __thread struct virtq_chain chain;   /* 6 KiB: not on the stack */
    unsigned taken = 0;

    while (!d->needs_reset) {
        enum virtq_fault f;
        struct vblk_req *r;

        if (virtq_pop(&d->vq, d->mem, &chain, &f) == 0)
            break;
        taken++;
        if (f == VIRTQ_BAD_RING) {
            d->faults++;
            d->last_fault = f;
            d->needs_reset = true;
            break;
        }
        if (f != VIRTQ_OK) {
            refuse(d, &chain, f);
            continue;
        }
        r = parse(d, &chain);
        if (!r)
            continue;
        d->inflight++;
        if (r->len == 0 && r->op != VBLK_FLUSH)
            vblk_req_done(r, 0);            /* nothing to move */
        else
            d->backend.submit(d->backend.opaque, r);
    }
    return taken;
}

void vblk_req_done(struct vblk_req *r, int result)
{
    struct vblk *d = r->dev;

    d->inflight--;
    if (r->generation == d->generation)
        complete(d, r->head, r->status,
                 result < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK,
                 result < 0 ? 1 : r->written);
    free(r);
}

static void on_notify(void *opaque, unsigned q)
{
    (void)q;
    vblk_notify(opaque);
}

static void on_reset(void *opaque)
{
    struct vblk *d = opaque;

    d->generation++;
    d->needs_reset = false;
}

static bool on_broken(void *opaque)
{
    return ((struct vblk *)opaque)->needs_reset;
}

void vblk_virtio_device(struct vblk *d, struct vmmio_device *out)
{
    vblk_config(d, d->config);
    memset(out, 0, sizeof(*out));
    out->device_id = 2;
    out->features = vblk_features(d);
    out->config = d->config;
    out->config_len = VBLK_CONFIG_SIZE;
    out->nqueues = 1;
    out->queues[0] = &d->vq;
    out->queue_max = 256;
    out->notify = on_notify;
    out->reset = on_reset;
    out->broken = on_broken;
    out->opaque = d;
}
