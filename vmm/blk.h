/*
 * blk.h - the virtio-blk device model (virtio 1.x, 5.2), transport-free:
 * it takes chains from a virtqueue, checks them, hands well-formed
 * requests to a backend (libnbd in the VMM, memory in the unit tests) and
 * completes them with a status the guest reads.  Nothing a guest writes
 * can make it read or write outside guest memory or the disk: a malformed
 * request gets VIRTIO_BLK_S_IOERR (or UNSUPP) when there is a status byte
 * to put it in, and a broken ring marks the device as needing a reset.
 */
#ifndef VDISK_VMM_BLK_H
#define VDISK_VMM_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mmio.h"
#include "virtq.h"

/* Request types and status values (5.2.6). */
#define VIRTIO_BLK_T_IN            0u
#define VIRTIO_BLK_T_OUT           1u
#define VIRTIO_BLK_T_FLUSH         4u
#define VIRTIO_BLK_T_GET_ID        8u
#define VIRTIO_BLK_T_DISCARD       11u
#define VIRTIO_BLK_T_WRITE_ZEROES  13u

#define VIRTIO_BLK_S_OK            0u
#define VIRTIO_BLK_S_IOERR         1u
#define VIRTIO_BLK_S_UNSUPP        2u

#define VIRTIO_BLK_HDR_SIZE        16u  /* type u32, reserved u32, sector u64 */
#define VIRTIO_BLK_DWZ_SIZE        16u  /* sector u64, num_sectors u32, flags u32 */
#define VIRTIO_BLK_DWZ_F_UNMAP     1u
#define VIRTIO_BLK_ID_BYTES        20u
#define VIRTIO_BLK_SECTOR          512u

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SEG_MAX       2
#define VIRTIO_BLK_F_RO            5
#define VIRTIO_BLK_F_BLK_SIZE      6
#define VIRTIO_BLK_F_FLUSH         9
#define VIRTIO_BLK_F_DISCARD       13
#define VIRTIO_BLK_F_WRITE_ZEROES  14
#define VIRTIO_F_VERSION_1         32

/* The configuration space (5.2.4), as far as this device fills it. */
#define VBLK_CONFIG_SIZE           60u

enum vblk_op { VBLK_READ, VBLK_WRITE, VBLK_FLUSH, VBLK_DISCARD, VBLK_ZERO };

struct vblk;

/* A request handed to the backend. */
struct vblk_req {
    struct vblk *dev;
    enum vblk_op op;
    uint64_t offset, len;       /* bytes, inside the disk */
    bool unmap;                 /* VBLK_ZERO: may unmap */
    struct iovec iov[VIRTQ_MAX_SEGS];   /* READ/WRITE: guest buffers */
    unsigned niov;
    void *backend_data;         /* the backend's, free to use */
    /* The machine's, while the request waits for the device lock after
     * its backend finished it (vm_complete). */
    struct vblk_req *done_next;
    int done_result;
    /* The device's. */
    uint32_t generation;        /* the device's when submitted */
    uint16_t head;
    uint8_t *status;
    uint32_t written;           /* bytes the guest gets in the used ring */
};

struct vblk_backend {
    /* Starts r; calls vblk_req_done(r, result) when it ends (from any
     * point of the device's thread, even before returning). */
    void (*submit)(void *opaque, struct vblk_req *r);
    void *opaque;
};

struct vblk {
    const struct vmm_mem *mem;
    struct virtq vq;            /* the one request queue */
    uint64_t capacity;          /* bytes, a multiple of 512 */
    bool read_only;
    char id[VIRTIO_BLK_ID_BYTES];
    struct vblk_backend backend;
    /* Raises the device's interrupt (used buffers are there). */
    void (*interrupt)(void *opaque);
    void *irq_opaque;
    unsigned inflight;
    uint32_t generation;        /* bumped by each reset: completions of
                                   older requests go nowhere */
    bool needs_reset;           /* the ring is broken: no more requests */
    uint8_t config[VBLK_CONFIG_SIZE];
    uint64_t faults;            /* malformed requests seen */
    enum virtq_fault last_fault;
};

/* The features the device offers (VERSION_1, SEG_MAX, BLK_SIZE, FLUSH,
 * DISCARD, WRITE_ZEROES, RO when read-only). */
uint64_t vblk_features(const struct vblk *d);
/* Fills the configuration space. */
void vblk_config(const struct vblk *d, uint8_t out[VBLK_CONFIG_SIZE]);

/* The guest notified the queue: takes every available chain.  Requests
 * that can be answered at once (malformed, unsupported, GET_ID) are; the
 * others go to the backend.  Returns the number of chains taken. */
unsigned vblk_notify(struct vblk *d);

/* The backend finished r: result 0, or a negative errno (the guest sees
 * VIRTIO_BLK_S_IOERR).  Frees r.  A request from before a reset of the
 * device is only freed: its queue and buffers are no longer the guest's
 * to be written. */
void vblk_req_done(struct vblk_req *r, int result);

/* The device as the virtio-mmio transport sees it (features, the
 * configuration space, its queue, notify, reset). */
void vblk_virtio_device(struct vblk *d, struct vmmio_device *out);

#endif
