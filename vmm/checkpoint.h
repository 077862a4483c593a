/*
 * checkpoint.h - whole-VM checkpoints: every disk snapshotted by vdiskd at
 * one instant, and RAM, vCPU and device state in a file in the store next
 * to them (STORE/checkpoints/NAME.vmstate, format in docs/VMM.md).
 *
 * Taking one (ckpt_save) needs the machine paused and its disks drained:
 * no request in flight, so that what the snapshots hold is exactly what
 * the guest was told it wrote.  The snapshots are taken first, the file
 * written last (to a temporary name, synced, renamed): a checkpoint whose
 * file exists is whole.
 *
 * Restoring one: ckpt_open reads and checks the file (every field of it:
 * a damaged or hostile file is an error, never a crash), ckpt_rollback
 * rolls each disk back to its snapshot through vdiskd (refused while
 * another client uses a disk), then, once the machine is built as the
 * file describes, ckpt_load puts RAM, devices and vCPUs back.
 */
#ifndef VDISK_VMM_CHECKPOINT_H
#define VDISK_VMM_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "vm.h"

#define CKPT_NAME_MAX 64

/* Where checkpoints live: the store, and vdiskd's control socket. */
struct ckpt_where {
    const char *store;
    const char *vdiskd_socket;
};

/* What a disk of the machine is. */
struct ckpt_disk {
    char uri[1024];
    char volume[256];           /* its export name = the volume */
};

/* The machine a checkpoint was taken of. */
struct ckpt_machine {
    char accel[8];
    uint64_t mem;
    unsigned ncpus;
    bool irqchip;
    unsigned reconnect_ms;
    unsigned ndisks;
    struct ckpt_disk disks[VM_MAX_DISKS];
};

struct ckpt {
    char name[CKPT_NAME_MAX + 1];
    char path[4096];
    struct ckpt_machine machine;
    json_t *root;
    int fd;
    uint64_t ram_off;
};

/* Whether name is a valid checkpoint name (the store's rule for names). */
bool ckpt_name_ok(const char *name);

/* Takes checkpoint name of vm, paused with no request in flight.  0, or a
 * negative errno with the reason in err. */
int ckpt_save(struct vm *vm, const struct ckpt_machine *m, const struct ckpt_where *w,
              const char *name, char *err, size_t errlen);

int ckpt_open(const struct ckpt_where *w, const char *name, struct ckpt *ck, char *err,
              size_t errlen);
int ckpt_rollback(const struct ckpt *ck, const struct ckpt_where *w, char *err, size_t errlen);
/* vm built from ck->machine, its disks added, not started. */
int ckpt_load(const struct ckpt *ck, struct vm *vm, char *err, size_t errlen);
void ckpt_close(struct ckpt *ck);

#endif
