/*
 * virtq.c - split virtqueues, device side (virtio 1.x, 2.7).
 *
 * The driver (the guest) owns the descriptor table and the available ring;
 * the device only reads them, and only through vmm_mem_ptr.  The used ring
 * is the device's to write.  Layout, for a queue of size N:
 *   descriptor table  N x 16 bytes, 16-aligned
 *   available ring    flags u16, idx u16, ring[N] u16, used_event u16
 *   used ring         flags u16, idx u16, ring[N] {id u32, len u32},
 *                     avail_event u16
 * Indexes run freely modulo 2^16; an entry is ring[idx % N].
 */
#include <stdatomic.h>

#include "virtq.h"

void *vmm_mem_ptr(const struct vmm_mem *m, uint64_t gpa, uint64_t len)
{
    if (gpa > m->size || len > m->size - gpa)
        return NULL;
    return m->host + gpa;
}

const char *virtq_fault_name(enum virtq_fault f)
{
    switch (f) {
    case VIRTQ_OK: return "no fault";
    case VIRTQ_BAD_RING: return "the queue's rings are not usable";
    case VIRTQ_BAD_INDEX: return "a descriptor index past the queue";
    case VIRTQ_LOOP: return "a descriptor chain longer than the queue (a loop)";
    case VIRTQ_BAD_ADDR: return "a buffer outside guest memory";
    case VIRTQ_INDIRECT: return "an indirect descriptor (not offered)";
    case VIRTQ_ORDER: return "a device-readable buffer after a writable one";
    case VIRTQ_TOO_LONG: return "a descriptor chain with too many buffers";
    }
    return "unknown fault";
}

static uint64_t avail_bytes(uint16_t num)
{
    return 6 + 2ull * num;
}

static uint64_t used_bytes(uint16_t num)
{
    return 6 + 8ull * num;
}

bool virtq_setup_ok(const struct virtq *q, const struct vmm_mem *m)
{
    if (q->num == 0 || q->num > VIRTQ_MAX_SIZE || (q->num & (q->num - 1)))
        return false;
    return vmm_mem_ptr(m, q->desc, (uint64_t)VIRTQ_DESC_SIZE * q->num) &&
           vmm_mem_ptr(m, q->avail, avail_bytes(q->num)) &&
           vmm_mem_ptr(m, q->used, used_bytes(q->num));
}

int virtq_pop(struct virtq *q, const struct vmm_mem *m, struct virtq_chain *c,
              enum virtq_fault *fault)
{
    const uint8_t *avail = vmm_mem_ptr(m, q->avail, avail_bytes(q->num));
    const uint8_t *table = vmm_mem_ptr(m, q->desc, (uint64_t)VIRTQ_DESC_SIZE * q->num);
    uint16_t avail_idx, idx;
    bool seen_write = false;

    c->n = 0;
    c->in_len = c->out_len = 0;
    *fault = VIRTQ_OK;
    if (!q->ready || !avail || !table || !vmm_mem_ptr(m, q->used, used_bytes(q->num))) {
        *fault = VIRTQ_BAD_RING;
        return 1;
    }
    /* The guest's idx, read once; the entries before it are then valid
     * to read (the acquire pairs with the guest's write barrier). */
    avail_idx = vq_le16(avail + 2);
    atomic_thread_fence(memory_order_acquire);
    if (avail_idx == q->last_avail)
        return 0;
    /* More entries than the queue holds is nonsense: the ring is broken. */
    if ((uint16_t)(avail_idx - q->last_avail) > q->num) {
        *fault = VIRTQ_BAD_RING;
        return 1;
    }
    idx = vq_le16(avail + 4 + 2 * (q->last_avail % q->num));
    q->last_avail++;
    if (idx >= q->num) {
        *fault = VIRTQ_BAD_RING;
        return 1;
    }
    c->head = idx;

    /* Follow the chain: at most num descriptors, or it loops. */
    for (unsigned steps = 0;; steps++) {
        const uint8_t *d = table + (size_t)VIRTQ_DESC_SIZE * idx;
        uint64_t addr = vq_le64(d);
        uint32_t len = vq_le32(d + 8);
        uint16_t flags = vq_le16(d + 12), next = vq_le16(d + 14);
        struct virtq_seg *s;

        if (steps >= q->num) {
            *fault = VIRTQ_LOOP;
            return 1;
        }
        if (flags & VIRTQ_DESC_F_INDIRECT) {
            *fault = VIRTQ_INDIRECT;
            return 1;
        }
        if (c->n == VIRTQ_MAX_SEGS) {
            *fault = VIRTQ_TOO_LONG;
            return 1;
        }
        /* 2.7.4.2: readable buffers come before writable ones. */
        if ((flags & VIRTQ_DESC_F_WRITE) == 0 && seen_write) {
            *fault = VIRTQ_ORDER;
            return 1;
        }
        s = &c->seg[c->n];
        s->host = vmm_mem_ptr(m, addr, len);
        if (!s->host) {
            *fault = VIRTQ_BAD_ADDR;
            return 1;
        }
        s->len = len;
        s->write = flags & VIRTQ_DESC_F_WRITE;
        seen_write |= s->write;
        if (s->write)
            c->in_len += len;
        else
            c->out_len += len;
        c->n++;
        if (!(flags & VIRTQ_DESC_F_NEXT))
            return 1;
        if (next >= q->num) {
            *fault = VIRTQ_BAD_INDEX;
            return 1;
        }
        idx = next;
    }
}

void virtq_push(struct virtq *q, const struct vmm_mem *m, uint16_t head,
                uint32_t written)
{
    uint8_t *used = vmm_mem_ptr(m, q->used, used_bytes(q->num));
    uint8_t *e;

    if (!used)
        return;
    e = used + 4 + 8 * (q->used_idx % q->num);
    vq_put32(e, head);
    vq_put32(e + 4, written);
    q->used_idx++;
    /* The entry before the index: the guest reads the index first. */
    atomic_thread_fence(memory_order_release);
    vq_put16(used + 2, q->used_idx);
}
