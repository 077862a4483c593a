/*
 * virtq.h - guest memory as the devices see it, and split virtqueues
 * (virtio 1.x, section 2.7 "Split Virtqueues"), device side.
 *
 * Everything here reads structures a guest wrote and so trusts none of
 * it: every guest address is checked against guest memory before use,
 * every descriptor index against the queue size, and a chain may not be
 * longer than the queue (the spec's bound, and what stops a loop).  A
 * malformed chain is reported, not followed; the device decides what
 * status to give the guest.
 */
#ifndef VDISK_VMM_VIRTQ_H
#define VDISK_VMM_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest RAM: guest physical addresses [0, size) at host address host. */
struct vmm_mem {
    uint8_t *host;
    uint64_t size;
};

/* The host address of [gpa, gpa + len) if it lies inside guest RAM, else
 * NULL (overflow included).  len 0 is allowed inside or at the end. */
void *vmm_mem_ptr(const struct vmm_mem *m, uint64_t gpa, uint64_t len);

/* Little-endian loads and stores (virtio 1.x structures are LE). */
static inline uint16_t vq_le16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t vq_le32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}
static inline uint64_t vq_le64(const void *p)
{
    return vq_le32(p) | (uint64_t)vq_le32((const uint8_t *)p + 4) << 32;
}
static inline void vq_put16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}
static inline void vq_put32(void *p, uint32_t v)
{
    vq_put16(p, (uint16_t)v);
    vq_put16((uint8_t *)p + 2, (uint16_t)(v >> 16));
}
static inline void vq_put64(void *p, uint64_t v)
{
    vq_put32(p, (uint32_t)v);
    vq_put32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* The split virtqueue layout (2.7.5, 2.7.6, 2.7.8). */
#define VIRTQ_DESC_F_NEXT      1u
#define VIRTQ_DESC_F_WRITE     2u
#define VIRTQ_DESC_F_INDIRECT  4u
#define VIRTQ_DESC_SIZE        16u   /* addr u64, len u32, flags u16, next u16 */
#define VIRTQ_MAX_SIZE         32768u

/* The longest chain a device here takes, in segments: a chain is at most
 * the queue size long anyway; requests need far fewer. */
#define VIRTQ_MAX_SEGS         256u

struct virtq_seg {
    void *host;             /* checked: inside guest RAM */
    uint32_t len;
    bool write;             /* device-writable */
};

/* One chain taken from the available ring. */
struct virtq_chain {
    uint16_t head;          /* the id to return in the used ring */
    unsigned n;             /* segments */
    struct virtq_seg seg[VIRTQ_MAX_SEGS];
    uint64_t in_len, out_len;   /* bytes device-readable, device-writable */
};

struct virtq {
    uint16_t num;           /* queue size, a power of two; 0: not set up */
    uint64_t desc, avail, used;     /* guest addresses of the three parts */
    bool ready;
    uint16_t last_avail;    /* the next available entry to take */
    uint16_t used_idx;      /* the next used entry to fill */
};

/* Why a chain was refused (virtq_pop). */
enum virtq_fault {
    VIRTQ_OK = 0,
    VIRTQ_BAD_RING,         /* the rings are not in guest RAM, or the head
                               index is out of the queue: the queue is
                               unusable (the device needs a reset) */
    VIRTQ_BAD_INDEX,        /* a "next" index past the queue */
    VIRTQ_LOOP,             /* longer than the queue: a loop */
    VIRTQ_BAD_ADDR,         /* a buffer outside guest RAM */
    VIRTQ_INDIRECT,         /* an indirect descriptor (not offered) */
    VIRTQ_ORDER,            /* a device-readable buffer after a writable one */
    VIRTQ_TOO_LONG,         /* more than VIRTQ_MAX_SEGS segments */
};

/* A readable name of a fault, for messages. */
const char *virtq_fault_name(enum virtq_fault f);

/* Checks that the queue's three parts lie in guest RAM and its size is a
 * power of two up to VIRTQ_MAX_SIZE; then it may be used.  Returns true if
 * so. */
bool virtq_setup_ok(const struct virtq *q, const struct vmm_mem *m);

/* Takes the next available chain: 1 and *c filled, 0 when the ring is
 * empty.  A malformed chain still returns 1 with *fault set (and the
 * segments that were good in *c, so that a device may still find where to
 * put an error status); with VIRTQ_BAD_RING nothing can be returned to the
 * guest and c->head is meaningless. */
int virtq_pop(struct virtq *q, const struct vmm_mem *m, struct virtq_chain *c,
              enum virtq_fault *fault);

/* Returns chain head to the guest in the used ring, with written bytes
 * written into its writable buffers.  The used index is published after
 * the entry (a release fence orders them for the guest's CPU). */
void virtq_push(struct virtq *q, const struct vmm_mem *m, uint16_t head,
                uint32_t written);

#endif
