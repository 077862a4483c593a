/*
 * privs.c - vdiskd --user USER[:GROUP]: root only for what needs it.
 *
 * The order at startup (main.c):
 *   1. the store is opened with USER's effective ids (privs_store_open):
 *      whatever it creates or repairs then (the catalog and its lock
 *      files, an interrupted commit finished) belongs to USER, and a
 *      store USER cannot use fails now rather than at the first snapshot;
 *   2. as root again: TLS credentials only root may read are loaded, TCP
 *      ports below 1024 and unix sockets in root's directories (/run) are
 *      bound;
 *   3. root is dropped for good (privs_drop): supplementary groups, group,
 *      user, each checked, then a check that root cannot be had back;
 *   4. then the control socket (so it is USER's, like the store it sits
 *      in), the pools, the worker threads and the first connection.
 * A failure at any step stops the daemon: it never runs on as root by
 * mistake.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdiskd.h"

/* A decimal id, or -1. */
static long parse_id(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return (errno || end == s || *end || v < 0 || v > INT32_MAX) ? -1 : v;
}

int privs_parse(struct vdiskd *d, const char *arg)
{
    char user[256], *group;
    struct passwd *pw;
    long id;

    if (geteuid() != 0) {
        fprintf(stderr, "vdiskd: --user needs root: this vdiskd runs as uid %u already\n",
                (unsigned)geteuid());
        return -EPERM;
    }
    if (snprintf(user, sizeof(user), "%s", arg) >= (int)sizeof(user) || !user[0]) {
        fprintf(stderr, "vdiskd: --user: expected USER[:GROUP], not '%s'\n", arg);
        return -EINVAL;
    }
    group = strchr(user, ':');
    if (group)
        *group++ = '\0';
    pw = getpwnam(user);
    if (!pw && (id = parse_id(user)) >= 0)
        pw = getpwuid((uid_t)id);
    if (!pw) {
        fprintf(stderr, "vdiskd: --user: no such user '%s'\n", user);
        return -EINVAL;
    }
    if (snprintf(d->run_user, sizeof(d->run_user), "%s", pw->pw_name) >=
        (int)sizeof(d->run_user)) {
        fprintf(stderr, "vdiskd: --user: user name '%s' is too long\n", pw->pw_name);
        return -EINVAL;
    }
    d->run_uid = pw->pw_uid;
    d->run_gid = pw->pw_gid;
    if (group) {
        struct group *gr = getgrnam(group);
        if (!gr && (id = parse_id(group)) >= 0)
            gr = getgrgid((gid_t)id);
        if (!gr) {
            fprintf(stderr, "vdiskd: --user: no such group '%s'\n", group);
            return -EINVAL;
        }
        d->run_gid = gr->gr_gid;
    }
    d->run_as = true;
    return 0;
}

/* USER's groups (as initgroups would set them): how many, in *out. */
static int user_groups(const struct vdiskd *d, gid_t **out)
{
    int n = 32;
    for (;;) {
        gid_t *g = malloc((size_t)n * sizeof(*g));
        if (!g)
            return -ENOMEM;
        int want = n;
        if (getgrouplist(d->run_user, d->run_gid, g, &want) >= 0) {
            *out = g;
            return want;
        }
        free(g);
        if (want <= n)
            return -EINVAL;
        n = want;
    }
}

int privs_store_open(struct vdiskd *d, const char *dir)
{
    gid_t *ug = NULL, *saved = NULL;
    uid_t euid = geteuid();
    gid_t egid = getegid();
    int nug, nsaved, r;

    if (!d->run_as)
        return vd_store_open(dir, VD_STORE_CREATE, &d->store);
    if ((nug = user_groups(d, &ug)) < 0 || (nsaved = getgroups(0, NULL)) < 0 ||
        !(saved = malloc(((size_t)nsaved + 1) * sizeof(*saved))) ||
        (nsaved = getgroups(nsaved, saved)) < 0) {
        r = nug < 0 ? nug : -ENOMEM;
        vlog(LOG_ERR, "--user %s: its groups: %s", d->run_user, strerror(-r));
        goto out;
    }
    /* Group ids first: once the effective uid is not root, they cannot
     * be set any more. */
    if (setgroups((size_t)nug, ug) < 0 || setegid(d->run_gid) < 0 ||
        seteuid(d->run_uid) < 0) {
        r = -errno;
        vlog(LOG_ERR, "--user %s: becoming the user: %s", d->run_user, strerror(-r));
    } else {
        r = vd_store_open(dir, VD_STORE_CREATE, &d->store);
        if (r == -EACCES || r == -EPERM)
            vlog(LOG_ERR, "--user %s: the store must belong to %s (chown -R %s %s)",
                 d->run_user, d->run_user, d->run_user, dir);
    }
    if (seteuid(euid) < 0 || setegid(egid) < 0 || setgroups((size_t)nsaved, saved) < 0) {
        int e = errno;
        vlog(LOG_ERR, "--user %s: back to root after opening the store: %s", d->run_user,
             strerror(e));
        if (r == 0)
            r = -e;
    }
out:
    free(ug);
    free(saved);
    return r;
}

int privs_drop(struct vdiskd *d)
{
    const char *what;
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (!d->run_as)
        return 0;
    what = "setgroups";
    if (initgroups(d->run_user, d->run_gid) < 0)
        goto fail;
    what = "setgid";
    if (setgid(d->run_gid) < 0)
        goto fail;
    what = "setuid";
    if (setuid(d->run_uid) < 0)
        goto fail;
    /* Every id of both kinds must be the user's now, and root must be out
     * of reach (a saved set-user-ID of 0 would let it back). */
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 ||
        ru != d->run_uid || eu != d->run_uid || su != d->run_uid ||
        rg != d->run_gid || eg != d->run_gid || sg != d->run_gid ||
        (d->run_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))) {
        vlog(LOG_ERR, "--user %s: root's privileges were not all dropped", d->run_user);
        return -EPERM;
    }
    vlog(LOG_INFO, "running as user %s (uid %u, gid %u)", d->run_user, (unsigned)d->run_uid,
         (unsigned)d->run_gid);
    return 0;
fail:;
    int e = errno;
    vlog(LOG_ERR, "--user %s: %s: %s", d->run_user, what, strerror(e));
    return -e;
}
