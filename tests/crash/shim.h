/*
 * shim.h - an I/O backend for libvdisk that simulates power loss.
 *
 * Installed with vdi_set_backend(shim_backend()), it carries out every
 * file operation for real and remembers how to undo each write that is not
 * durable yet:
 *   pwrite     done, plus an undo record: the old bytes (read first; bytes
 *              beyond the end of the file were zeroes)
 *   fallocate  (punch hole) the same: old bytes recorded, then punched
 *   fdatasync  the file's records are durable: they are forgotten
 *              (the real fdatasync is skipped unless shim_set_real_sync)
 *   ftruncate  a metadata change, durable at once
 * Records belong to files, not descriptors: a file is known by device and
 * inode and the shim keeps its own descriptor to it, so records survive
 * the library closing (and the kernel reusing) its descriptors.
 *
 * Power can fail at a chosen instant (shim_arm): from then on every write
 * is still performed, so that the operation in progress finishes normally,
 * but its record is marked lost, and fdatasync does nothing.
 *
 * shim_crash() then turns the files into what the disk could hold after
 * the power failure: records are visited newest first and each pending one
 * is kept (new data stays), dropped (old content restored) or torn (old
 * content restored in a random subset of its 512-byte sectors); records
 * made after the failure are always dropped.  Each 512-byte sector ends up
 * holding either its content at its file's last sync or one of the values
 * written to it since.  Files may also shrink back to their size at the
 * last sync (unsynced appends lost with the size update).
 */
#ifndef VD_TEST_SHIM_H
#define VD_TEST_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#include "vd-testing.h"

/* How shim_crash treats pending (pre-failure) records: relative weights of
 * keeping, dropping and tearing each one, and the chance (percent) that a
 * file grown since its last sync shrinks back to its synced size. */
struct shim_policy {
    unsigned keep, drop, tear;
    unsigned size_revert_pct;
};

struct shim_stats {
    /* operations seen */
    uint64_t pwrites, punches, truncates, syncs, preads;
    uint64_t bytes_written;
    /* shim_crash outcomes (summed over all crashes) */
    uint64_t crashes;
    uint64_t pending;        /* records not durable when the power failed */
    uint64_t kept, dropped, torn;
    uint64_t sectors_torn;   /* sectors restored inside torn records */
    uint64_t after_failure;  /* records made after the failure (always dropped) */
    uint64_t size_reverts;   /* files shrunk back to their synced size */
};

/* The backend to install with vdi_set_backend. */
const struct vd_io_backend *shim_backend(void);

/* Forgets every file and record (start of a new scenario) and disarms. */
void shim_reset(void);

/* The power fails after `calls` more state-changing calls (pwrite,
 * fallocate, ftruncate, fdatasync); 0: before the next one.
 * UINT64_MAX: never (disarmed). */
void shim_arm(uint64_t calls);
/* The power fails now, if it has not yet. */
void shim_fail_now(void);
/* Whether the power has failed. */
bool shim_failed(void);

/* Call the real fdatasync too (slower; the simulation does not need it). */
void shim_set_real_sync(bool on);

/* State-changing calls seen since shim_reset. */
uint64_t shim_calls(void);

/* Number of records not yet durable. */
uint64_t shim_pending(void);

/* Applies the power failure to the files as described above, choosing with
 * a generator seeded by seed, then forgets every file and record.  Call
 * after the library has let go of the files (vdi_chain_abandon).  The
 * power must have failed (shim_fail_now is implied).  Returns 0 or a
 * negative errno (a real I/O error of the simulation itself). */
int shim_crash(uint64_t seed, const struct shim_policy *policy);

void shim_get_stats(struct shim_stats *st);

#endif
