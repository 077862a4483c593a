/*
 * mmio.c - the virtio-mmio transport, version 2 (virtio 1.x, 4.2).
 *
 * The driver's sequence (3.1.1): reset (Status 0), ACKNOWLEDGE, DRIVER,
 * read DeviceFeatures (two 32-bit halves through DeviceFeaturesSel), write
 * DriverFeatures, FEATURES_OK (which the device may refuse by not keeping
 * the bit), set up each queue (QueueSel, QueueNum, the three addresses,
 * QueueReady 1), DRIVER_OK.  Then QueueNotify for work, InterruptStatus
 * and InterruptACK for completions.
 */
#include <string.h>

#include "mmio.h"

static struct virtq *selected(struct vmmio *t)
{
    return t->queue_sel < t->dev.nqueues ? t->dev.queues[t->queue_sel] : NULL;
}

static void update_irq(struct vmmio *t)
{
    if (t->irq)
        t->irq(t->irq_opaque, t->int_status != 0);
}

static void reset(struct vmmio *t)
{
    for (unsigned i = 0; i < t->dev.nqueues; i++) {
        struct virtq *q = t->dev.queues[i];

        memset(q, 0, sizeof(*q));
    }
    t->status = 0;
    t->dev_features_sel = t->drv_features_sel = t->queue_sel = 0;
    t->driver_features = 0;
    t->int_status = 0;
    if (t->dev.reset)
        t->dev.reset(t->dev.opaque);
    update_irq(t);
}

static uint64_t config_read(struct vmmio *t, uint64_t off, unsigned size)
{
    uint64_t v = 0;

    if (off > t->dev.config_len || size > t->dev.config_len - off)
        return 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)t->dev.config[off + i] << (8 * i);
    return v;
}

uint64_t vmmio_read(struct vmmio *t, uint64_t off, unsigned size)
{
    struct virtq *q = selected(t);

    if (off >= VIRTIO_MMIO_CONFIG)
        return size == 1 || size == 2 || size == 4 || size == 8
               ? config_read(t, off - VIRTIO_MMIO_CONFIG, size) : 0;
    /* 4.2.2.2: registers are read 32 bits at a time, aligned. */
    if (size != 4 || off % 4)
        return 0;
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return 2;
    case VIRTIO_MMIO_DEVICE_ID:
        return t->dev.device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return t->dev_features_sel < 2
               ? (uint32_t)(t->dev.features >> (32 * t->dev_features_sel)) : 0;
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? t->dev.queue_max : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return q && q->ready;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return t->int_status;
    case VIRTIO_MMIO_STATUS:
        return t->status;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return t->config_generation;
    default:
        return 0;
    }
}

static void set_half(uint64_t *field, bool high, uint32_t v)
{
    *field = high ? (*field & 0xffffffffu) | (uint64_t)v << 32
                  : (*field & ~0xffffffffull) | v;
}

/* FEATURES_OK only when the driver took nothing the device did not offer
 * and speaks virtio 1 (this transport has no legacy mode). */
static bool features_acceptable(const struct vmmio *t)
{
    return (t->driver_features & ~t->dev.features) == 0 &&
           (t->driver_features & (1ull << 32)) != 0;
}

static void write_status(struct vmmio *t, uint32_t v)
{
    if (v == 0) {
        reset(t);
        return;
    }
    if ((v & VIRTIO_STATUS_FEATURES_OK) && !(t->status & VIRTIO_STATUS_FEATURES_OK) &&
        !features_acceptable(t))
        v &= ~VIRTIO_STATUS_FEATURES_OK;
    /* The device's own bit stays as the device set it. */
    t->status = (v & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) |
                (t->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

static void notify(struct vmmio *t, uint32_t qi)
{
    if (qi >= t->dev.nqueues || !t->dev.queues[qi]->ready ||
        !(t->status & VIRTIO_STATUS_DRIVER_OK) ||
        (t->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
        return;
    t->dev.notify(t->dev.opaque, qi);
    /* 2.1.2: a device that cannot go on says so, and tells the driver
     * with a configuration change interrupt. */
    if (t->dev.broken && t->dev.broken(t->dev.opaque)) {
        t->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
        t->int_status |= VIRTIO_MMIO_INT_CONFIG;
        update_irq(t);
    }
}

void vmmio_write(struct vmmio *t, uint64_t off, unsigned size, uint64_t value)
{
    struct virtq *q = selected(t);
    uint32_t v = (uint32_t)value;

    /* The configuration space of a block device is read-only here. */
    if (off >= VIRTIO_MMIO_CONFIG || size != 4 || off % 4)
        return;
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        t->dev_features_sel = v;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        /* Only before FEATURES_OK (3.1.1). */
        if (t->drv_features_sel < 2 && !(t->status & VIRTIO_STATUS_FEATURES_OK))
            set_half(&t->driver_features, t->drv_features_sel == 1, v);
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        t->drv_features_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        t->queue_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (q && !q->ready)
            q->num = v <= t->dev.queue_max ? (uint16_t)v : 0;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (!q)
            break;
        if (v == 0) {
            q->ready = false;
        } else if (!q->ready) {
            /* The addresses and the size are checked once, here. */
            q->ready = virtq_setup_ok(q, t->mem);
            q->last_avail = q->used_idx = 0;
        }
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        notify(t, v);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        t->int_status &= ~v;
        update_irq(t);
        break;
    case VIRTIO_MMIO_STATUS:
        write_status(t, v);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (q && !q->ready)
            set_half(&q->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
        break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        if (q && !q->ready)
            set_half(&q->avail, off == VIRTIO_MMIO_QUEUE_DRIVER_HIGH, v);
        break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        if (q && !q->ready)
            set_half(&q->used, off == VIRTIO_MMIO_QUEUE_DEVICE_HIGH, v);
        break;
    default:
        break;                  /* read-only or unknown: ignored */
    }
}

void vmmio_used(struct vmmio *t)
{
    t->int_status |= VIRTIO_MMIO_INT_VRING;
    update_irq(t);
}

uint64_t vmmio_driver_features(const struct vmmio *t)
{
    return t->status & VIRTIO_STATUS_FEATURES_OK ? t->driver_features : 0;
}
