/*
 * access.c - who may open which export: the catalog's access rules
 * (libvdisk's vd_access_*, docs/VDISKD.md "Who may connect") applied to a
 * connection's identity (nbd-server's nbds_conn_identity: the unix peer's
 * credentials, and what TLS verified).
 *
 * The rules are read from the catalog at every open and every LIST, so a
 * rule added or removed with `vdisk export allow|deny` applies to the
 * next connection; connections already open keep what they got.
 *
 * Which rules govern a name: VOL and VOL@SNAP its volume's, TPL and TPL@N
 * its template's, pool/POOL and pool/POOL/USER the pool's (or its
 * template's when the pool has none: vd_access_rules).  An alias is
 * checked as its target (exports.c resolves it first).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vdiskd.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59   /* Linux 4.13; older headers lack the name */
#endif

_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is the kernel's 32-bit gid");

size_t peer_groups(int fd, uint32_t **out)
{
    socklen_t len = 32 * sizeof(gid_t);
    *out = NULL;
    /* The first try tells the size when 32 groups are not enough. */
    for (int tries = 0; tries < 2; tries++) {
        gid_t *g = malloc(len ? len : sizeof(gid_t));
        if (!g)
            return 0;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
            *out = (uint32_t *)g;
            return len / sizeof(gid_t);
        }
        free(g);
        if (errno != ERANGE)
            return 0;
    }
    return 0;
}

/* --stdio: the client is whoever gave us stdin.  A unix socket tells
 * (libnbd's connect_command makes a socketpair); a pipe or terminal means
 * the process that started us, so our own credentials (it could open the
 * store's files as we do anyway); a TCP socket (inetd) tells nothing: such
 * a client is matched by "any" and TLS identities only. */
static struct {
    bool done, has;
    uint32_t uid, gid;
    uint32_t *groups;
    size_t ngroups;
} stdio_cred;

static void stdio_peer(void)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    if (stdio_cred.done)
        return;
    stdio_cred.done = true;   /* --stdio has one thread: no race */
    if (getsockname(0, (struct sockaddr *)&ss, &l) == 0) {
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        if (ss.ss_family != AF_UNIX || getsockopt(0, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0)
            return;
        stdio_cred.uid = cr.uid;
        stdio_cred.gid = cr.gid;
        stdio_cred.ngroups = peer_groups(0, &stdio_cred.groups);
        stdio_cred.has = true;
        return;
    }
    if (errno != ENOTSOCK)
        return;
    stdio_cred.uid = (uint32_t)getuid();
    stdio_cred.gid = (uint32_t)getgid();
    int n = getgroups(0, NULL);
    if (n > 0 && (stdio_cred.groups = calloc((size_t)n, sizeof(gid_t))) != NULL) {
        n = getgroups(n, (gid_t *)stdio_cred.groups);
        stdio_cred.ngroups = n > 0 ? (size_t)n : 0;
    }
    stdio_cred.has = true;
}

void access_peer(struct nbds_conn *c, struct access_peer *ap)
{
    const struct nbds_identity *id = nbds_conn_identity(c);
    struct vd_peer *p = &ap->p;
    memset(ap, 0, sizeof(*ap));
    struct client *cl = nbds_conn_user(c);
    if (id->has_cred) {
        p->has_cred = true;
        p->uid = id->uid;
        p->gid = id->gid;
        if (cl)
            p->ngroups = client_groups(cl, &p->groups);
    } else if (!cl) {
        /* Only the --stdio connection has no client of the loop. */
        stdio_peer();
        if (stdio_cred.has) {
            p->has_cred = true;
            p->uid = stdio_cred.uid;
            p->gid = stdio_cred.gid;
            p->groups = stdio_cred.groups;
            p->ngroups = stdio_cred.ngroups;
        }
    }
    if (id->tls && (id->auth == NBDS_TLS_X509 || id->auth == NBDS_TLS_PSK)) {
        p->auth = id->auth == NBDS_TLS_X509 ? VD_PEER_AUTH_X509 : VD_PEER_AUTH_PSK;
        p->name = id->name;
        for (unsigned i = 0; i < id->nsan && i < NBDS_MAX_SAN; i++)
            ap->alt[i] = id->san[i];
        p->alt_names = ap->alt;
        p->nalt = id->nsan < NBDS_MAX_SAN ? id->nsan : NBDS_MAX_SAN;
    }
}

/* The object whose rules govern export name (into obj), and for
 * pool/POOL/USER the user (else ""). */
static void object_of(const char *name, char obj[VD_NAME_MAX + 6], char user[VD_NAME_MAX + 1])
{
    user[0] = '\0';
    if (strncmp(name, "pool/", 5) == 0) {
        const char *slash = strchr(name + 5, '/');
        size_t n = slash ? (size_t)(slash - name) : strlen(name);
        snprintf(obj, VD_NAME_MAX + 6, "%.*s", (int)n, name);
        if (slash)
            snprintf(user, VD_NAME_MAX + 1, "%s", slash + 1);
        return;
    }
    const char *at = strchr(name, '@');
    snprintf(obj, VD_NAME_MAX + 6, "%.*s", (int)(at ? (size_t)(at - name) : strlen(name)), name);
}

int access_check_locked(struct vdiskd *d, const char *name, const struct vd_peer *p,
                        const char *peer, bool *read_only)
{
    char obj[VD_NAME_MAX + 6], user[VD_NAME_MAX + 1], from[VD_NAME_MAX + 6];
    struct vd_access_rule *rules = NULL;
    size_t n = 0;
    *read_only = false;
    object_of(name, obj, user);
    int r = vd_access_rules(d->store, obj, &rules, &n, from);
    if (r == -ENOENT || r == -EINVAL)
        return 0;   /* no such object: opening it says so, as for any name */
    if (r < 0) {
        /* Fail closed: a catalog that cannot be read grants nothing. */
        if (peer)
            vlog(LOG_ERR, "%s: export '%s': reading its access rules: %s", peer, name,
                 *vd_errmsg() ? vd_errmsg() : strerror(-r));
        return r;
    }
    enum vd_access a = vd_access_decide(rules, n, p);
    free(rules);
    /* A name refused by its rules gets the answer of a name that does not
     * exist (NBD_REP_ERR_UNKNOWN), not NBD_REP_ERR_POLICY: LIST hides it
     * from this client, and POLICY would tell anyone probing names which
     * of them exist. */
    if (a == VD_ACCESS_NONE) {
        if (peer)
            vlog(LOG_INFO, "%s: export '%s' refused: no access rule of '%s' matches", peer,
                 name, from);
        return -ENOENT;
    }
    /* A persistent pool's session is its user's.  Root and the daemon's
     * own user may open any: they can read the store's files anyway, and
     * an administrator looks into a user's disk this way.  This refusal
     * may say what it is (NBD_REP_ERR_POLICY): the client may use the
     * pool, which LIST shows it, and any USER is a valid name there, so it
     * learns nothing about who has a clone. */
    if (user[0] && !vd_peer_is_user(p, user) &&
        !(p->has_cred && (p->uid == 0 || p->uid == (uint32_t)geteuid()))) {
        if (peer)
            vlog(LOG_INFO, "%s: export '%s' refused: the session is %s's", peer, name, user);
        return -EACCES;
    }
    *read_only = a == VD_ACCESS_READ_ONLY;
    return 0;
}

bool access_listed_locked(struct vdiskd *d, const char *name, const struct vd_peer *p)
{
    bool ro;
    return access_check_locked(d, name, p, NULL, &ro) == 0;
}
