/*
 * control.h - vdisk-vmm's control socket (--control PATH): a unix socket,
 * mode 0600, that takes one command per line and answers each with one
 * line, "ok ..." or "error: ...":
 *   checkpoint NAME   a whole-VM checkpoint (checkpoint.h)
 *   quit              stops the VM (the disks are flushed) and exits
 * Text rather than JSON: the commands are two, and a person types them
 * with socat.  Clients are served one line at a time on the main loop.
 */
#ifndef VDISK_VMM_CONTROL_H
#define VDISK_VMM_CONTROL_H

#include <poll.h>
#include <stddef.h>

#define VCTL_MAX_CLIENTS 8u

struct vctl;

/* Runs one command line; writes the reply (without newline) into reply. */
typedef void (*vctl_handler)(void *opaque, const char *line, char *reply, size_t len);

/* Listens on path (an existing socket file there is replaced).  0 and
 * *out, or a negative errno with a message printed. */
int vctl_open(const char *path, vctl_handler h, void *opaque, struct vctl **out);

/* The fds to poll: fills at most max entries, returns how many. */
unsigned vctl_pollfds(struct vctl *c, struct pollfd *fds, unsigned max);
/* After poll: handles what is ready among the n entries filled. */
void vctl_ready(struct vctl *c, const struct pollfd *fds, unsigned n);

/* Closes every connection and removes the socket file. */
void vctl_close(struct vctl *c);

#endif
