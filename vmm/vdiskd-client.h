/*
 * vdiskd-client.h - the VMM's side of vdiskd's control API
 * (docs/CONTROL-API.md): one JSON command per line, one reply per line,
 * events skipped.  Used for checkpoints: snapshots of the disks when one
 * is taken, rollbacks when one is restored.  Synchronous: the VMM is
 * paused while it talks to vdiskd.
 */
#ifndef VDISK_VMM_VDISKD_CLIENT_H
#define VDISK_VMM_VDISKD_CLIENT_H

#include <jansson.h>

struct vdc;

/* Connects to the control socket at path and reads the greeting.  0 and
 * *out, or a negative errno with the reason in err (size errlen). */
int vdc_open(const char *path, struct vdc **out, char *err, size_t errlen);

/* Runs command with arguments (may be NULL; the reference is stolen).
 * 0 and *ret (a new reference to the "return" value, may be NULL when ret
 * is NULL), or a negative errno with vdiskd's "desc" (or the failure) in
 * err. */
int vdc_call(struct vdc *c, const char *command, json_t *arguments, json_t **ret,
             char *err, size_t errlen);

void vdc_close(struct vdc *c);

#endif
