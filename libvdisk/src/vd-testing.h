/*
 * vd-testing.h - hooks for libvdisk's own tests (crash simulation, I/O
 * accounting).  Not part of the public interface: only tests that link the
 * static library include it.
 */
#ifndef VD_TESTING_H
#define VD_TESTING_H

#include <sys/types.h>
#include "vdisk.h"

/* The file operations libvdisk performs on layer files.  Every byte libvdisk
 * reads or writes goes through one of these when a backend is installed. */
struct vd_io_backend {
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
    int (*fdatasync)(int fd);
    /* fallocate(2): libvdisk uses FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE */
    int (*fallocate)(int fd, int mode, off_t off, off_t len);
    int (*ftruncate)(int fd, off_t len);
};

/* Installs be for every file opened and every context created afterwards
 * (NULL restores the real system calls).  While a backend is installed,
 * contexts do not use libaio: each request is carried out synchronously
 * through the backend at submit time and its callback runs from
 * vd_ctx_poll as usual.  Files are opened without O_DIRECT.  Not thread
 * safe: call it before opening anything. */
void vdi_set_backend(const struct vd_io_backend *be);

/* Frees a chain and closes its files without writing or syncing anything,
 * as if the process had been killed.  Requests still in flight are
 * abandoned (their callbacks never run). */
void vdi_chain_abandon(struct vd_chain *chain);

/* Bytes written to layer files through this process (data and metadata),
 * for write-amplification measurements. */
struct vdi_io_stats {
    uint64_t data_bytes_written;
    uint64_t meta_bytes_written;
    uint64_t bytes_read;
    uint64_t syncs;
};
void vdi_get_io_stats(struct vdi_io_stats *st);
void vdi_reset_io_stats(void);

/* Crash points for store operations.  Every multi-step store operation
 * calls vdi_step() between its steps (after each durable change).  With
 * vdi_set_kill_step(n), the n-th step (counting from 1 after the call)
 * kills the process with SIGKILL, as a crash would.  0 disables.
 * vdi_steps_taken() tells how many steps ran since the last call of
 * vdi_set_kill_step (to learn how many points an operation has). */
void vdi_set_kill_step(unsigned n);
unsigned vdi_steps_taken(void);
void vdi_step(const char *what);

#endif
