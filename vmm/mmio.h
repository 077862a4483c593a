/*
 * mmio.h - the virtio-mmio transport, version 2 ("modern"; virtio 1.x,
 * 4.2): the register window a guest driver programs to find a device,
 * negotiate features, set up its queues and notify them.  The machine
 * places device i at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE with IRQ
 * VIRTIO_MMIO_IRQ_BASE + i, and tells Linux so on its command line
 * ("virtio_mmio.device=4K@0xd0000000:5").
 *
 * The transport knows nothing of block devices: a device gives its ID,
 * features, configuration space, queues and a notify callback
 * (struct vmmio_device).  Accesses the guest makes are trusted in no way:
 * unknown offsets read 0 and writes to them are ignored, queue addresses
 * are checked against guest memory before a queue may become ready, and
 * features the device did not offer make FEATURES_OK fail.
 */
#ifndef VDISK_VMM_MMIO_H
#define VDISK_VMM_MMIO_H

#include <stdbool.h>
#include <stdint.h>

#include "virtq.h"

#define VIRTIO_MMIO_BASE      0xd0000000ull
#define VIRTIO_MMIO_STRIDE    0x1000ull
#define VIRTIO_MMIO_IRQ_BASE  5u

/* Register offsets (4.2.2). */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000   /* "virt" */
#define VIRTIO_MMIO_VERSION             0x004
#define VIRTIO_MMIO_DEVICE_ID           0x008
#define VIRTIO_MMIO_VENDOR_ID           0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL           0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034
#define VIRTIO_MMIO_QUEUE_NUM           0x038
#define VIRTIO_MMIO_QUEUE_READY         0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064
#define VIRTIO_MMIO_STATUS              0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW    0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH   0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW    0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH   0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc
#define VIRTIO_MMIO_CONFIG              0x100

#define VIRTIO_MMIO_MAGIC     0x74726976u
#define VIRTIO_MMIO_VENDOR    0x4b445256u   /* "VRDK": ours */

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE        1u
#define VIRTIO_STATUS_DRIVER             2u
#define VIRTIO_STATUS_DRIVER_OK          4u
#define VIRTIO_STATUS_FEATURES_OK        8u
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED             128u

/* InterruptStatus bits. */
#define VIRTIO_MMIO_INT_VRING   1u      /* a used buffer */
#define VIRTIO_MMIO_INT_CONFIG  2u      /* configuration (or status) change */

#define VMMIO_MAX_QUEUES 8u

struct vmmio_device {
    uint32_t device_id;             /* 2: block */
    uint64_t features;              /* offered */
    const uint8_t *config;          /* configuration space */
    uint32_t config_len;
    unsigned nqueues;
    struct virtq *queues[VMMIO_MAX_QUEUES];
    uint16_t queue_max;             /* QueueNumMax */
    /* The driver notified queue q (ready, DRIVER_OK). */
    void (*notify)(void *opaque, unsigned q);
    /* The driver reset the device: forget everything in flight. */
    void (*reset)(void *opaque);
    /* True when the device found its rings broken (it needs a reset). */
    bool (*broken)(void *opaque);
    void *opaque;
};

struct vmmio {
    const struct vmm_mem *mem;
    struct vmmio_device dev;
    /* Raises (level true) or lowers the device's interrupt line. */
    void (*irq)(void *opaque, bool level);
    void *irq_opaque;
    /* Register state. */
    uint32_t status;
    uint32_t dev_features_sel, drv_features_sel, queue_sel;
    uint64_t driver_features;
    uint32_t int_status;
    uint32_t config_generation;
};

/* A guest read of size bytes (1, 2 or 4; 8 only in the config space) at
 * offset off of the window. */
uint64_t vmmio_read(struct vmmio *t, uint64_t off, unsigned size);
/* A guest write. */
void vmmio_write(struct vmmio *t, uint64_t off, unsigned size, uint64_t value);

/* The device put buffers in a used ring: InterruptStatus bit 0, and the
 * line raised. */
void vmmio_used(struct vmmio *t);

/* The device's features as the driver accepted them (after FEATURES_OK). */
uint64_t vmmio_driver_features(const struct vmmio *t);

#endif
