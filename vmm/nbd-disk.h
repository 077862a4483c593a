/*
 * nbd-disk.h - a guest disk reached over NBD with libnbd: the backend of
 * a virtio-blk device (struct vblk_backend).
 *
 * Requests are asynchronous: several NBD commands are in flight at once,
 * straight from and into guest memory (no bounce buffers: a request is
 * cut at its guest segments and at the largest command the server
 * takes).  The main loop drives the socket (ndisk_poll_fd, ndisk_events)
 * and collects completions (ndisk_process), which go to the device
 * through the complete callback.
 *
 * A lost connection is not an error the guest sees at once: commands that
 * failed because the connection died, and new ones, wait while the disk
 * reconnects (backing off up to a second between tries); those still
 * waiting after the reconnect timeout fail with EIO.  Errors the server
 * gives (EIO, ENOSPC, EPERM...) reach the guest as they are, as
 * VIRTIO_BLK_S_IOERR.
 *
 * Threads: ndisk_submit runs on a vCPU thread (under the device lock);
 * everything else on the main loop's thread.  libnbd runs completion
 * callbacks with its handle locked, so they only queue.
 */
#ifndef VDISK_VMM_NBD_DISK_H
#define VDISK_VMM_NBD_DISK_H

#include <stdbool.h>
#include <stdint.h>

#include "blk.h"

struct ndisk;

struct ndisk_info {
    uint64_t size;
    bool read_only;
    char export_name[256];      /* as the URI names it ("" for the default) */
};

/* Where finished requests go (result 0 or a negative errno), and how a
 * vCPU thread wakes the main loop after submitting. */
struct ndisk_ops {
    void (*complete)(void *opaque, struct vblk_req *r, int result);
    void (*wake)(void *opaque);
    void *opaque;
};

/* Connects to uri (nbd://, nbd+unix://, nbds://...; libnbd's URI rules)
 * synchronously.  reconnect_ms: how long requests wait for a lost
 * connection to come back.  0 and *out, or a negative errno with a message
 * printed. */
int ndisk_open(const char *uri, unsigned reconnect_ms, const struct ndisk_ops *ops,
               struct ndisk **out);

void ndisk_get_info(const struct ndisk *d, struct ndisk_info *info);

/* The vblk backend's submit (opaque: the struct ndisk). */
void ndisk_submit(void *opaque, struct vblk_req *r);

/* The main loop's part.  ndisk_poll_fd: the fd to poll and its events, or
 * -1 when there is none now (waiting to reconnect).  ndisk_events: what
 * poll said.  ndisk_process: completions handed on, reconnects tried,
 * expired requests failed; returns the milliseconds until it needs to run
 * again (-1: only when the fd is ready). */
int ndisk_poll_fd(struct ndisk *d, short *events);
void ndisk_events(struct ndisk *d, short revents);
int ndisk_process(struct ndisk *d);

/* Commands not yet finished (in flight or waiting for a connection). */
unsigned ndisk_pending(struct ndisk *d);

/* Flushes (if the server can) and disconnects politely, then frees d.
 * Requests still pending are failed first. */
void ndisk_close(struct ndisk *d);

#endif
