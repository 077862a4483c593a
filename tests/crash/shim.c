/*
 * shim.c - the power-loss simulation backend (see shim.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

#define SECTOR 512u

/* A file the shim has seen a state-changing call on. */
struct sfile {
    dev_t dev;
    ino_t ino;
    int fd;                   /* the shim's own descriptor (read-write) */
    uint64_t synced_size;     /* size at the last sync or truncate */
    uint64_t fail_size;       /* size when the power failed */
};

enum rec_kind {
    REC_DATA,                 /* old bytes of [off, off+len) */
    REC_SIZE,                 /* a size change after the failure: old size,
                                 and the old bytes cut off by a shrink */
};

struct rec {
    enum rec_kind kind;
    size_t file;              /* index into files */
    uint64_t off, len;
    uint8_t *old;             /* len bytes */
    uint64_t old_size;        /* REC_SIZE */
    bool lost;                /* made after the power failed */
};

static struct {
    struct sfile *files;
    size_t nfiles, capfiles;
    struct rec *recs;
    size_t nrecs, caprecs;
    uint64_t countdown;
    uint64_t calls;
    bool failed;
    bool real_sync;
    struct shim_stats st;
} S = { .countdown = UINT64_MAX };

/* A small generator for shim_crash's choices (splitmix64). */
static uint64_t crash_rng;

static uint64_t rnd(void)
{
    uint64_t z = (crash_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rnd() * n) >> 64);
}

static int file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* The file behind fd, by device and inode: sets *idx (SIZE_MAX when the
 * file is unknown and create is false) and returns 0, or a negative errno.
 * A file seen for the first time counts as synced at its current size. */
static int find_file(int fd, bool create, size_t *idx)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    for (size_t i = 0; i < S.nfiles; i++) {
        if (S.files[i].dev == st.st_dev && S.files[i].ino == st.st_ino) {
            *idx = i;
            return 0;
        }
    }
    *idx = SIZE_MAX;
    if (!create)
        return 0;
    if (S.nfiles == S.capfiles) {
        size_t cap = S.capfiles ? 2 * S.capfiles : 16;
        struct sfile *f = realloc(S.files, cap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        S.files = f;
        S.capfiles = cap;
    }
    /* A descriptor of our own, on a new open file description: it stays
     * valid when the library closes fd, and shares no lock with it. */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int myfd = open(proc, O_RDWR | O_CLOEXEC);
    if (myfd < 0)
        myfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (myfd < 0)
        return -errno;
    struct sfile *f = &S.files[S.nfiles];
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->fd = myfd;
    f->synced_size = (uint64_t)st.st_size;
    f->fail_size = (uint64_t)st.st_size;
    *idx = S.nfiles++;
    return 0;
}

static int add_rec(const struct rec *r)
{
    if (S.nrecs == S.caprecs) {
        size_t cap = S.caprecs ? 2 * S.caprecs : 256;
        struct rec *n = realloc(S.recs, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        S.recs = n;
        S.caprecs = cap;
    }
    S.recs[S.nrecs++] = *r;
    return 0;
}

/* Reads the current bytes of [off, off+len) of a file whose size is size;
 * bytes beyond the end read as zeroes (that is what the sector held). */
static int read_old(int fd, uint64_t size, uint64_t off, uint64_t len, uint8_t **out)
{
    uint8_t *b = calloc(1, len ? len : 1);
    if (!b)
        return -ENOMEM;
    uint64_t avail = off < size ? size - off : 0;
    if (avail > len)
        avail = len;
    uint64_t done = 0;
    while (done < avail) {
        ssize_t r = pread(fd, b + done, avail - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            free(b);
            return e;
        }
        if (r == 0)
            break;
        done += (uint64_t)r;
    }
    *out = b;
    return 0;
}

static void fail_now(void)
{
    if (S.failed)
        return;
    S.failed = true;
    for (size_t i = 0; i < S.nfiles; i++) {
        uint64_t sz = 0;
        if (file_size(S.files[i].fd, &sz) == 0)
            S.files[i].fail_size = sz;
    }
}

/* Counts one state-changing call; the power fails when the count runs out. */
static void tick(void)
{
    S.calls++;
    if (S.failed)
        return;
    if (S.countdown == 0) {
        fail_now();
        return;
    }
    if (S.countdown != UINT64_MAX)
        S.countdown--;
}

/* Records the old content of [off, off+len) of the file behind fd. */
static int record_data(int fd, uint64_t off, uint64_t len)
{
    size_t fi;
    int rc = find_file(fd, true, &fi);
    if (rc < 0)
        return rc;
    uint64_t size = 0;
    if ((rc = file_size(fd, &size)) < 0)
        return rc;
    struct rec r = { .kind = REC_DATA, .file = fi, .off = off, .len = len,
                     .lost = S.failed };
    if ((rc = read_old(fd, size, off, len, &r.old)) < 0)
        return rc;
    if ((rc = add_rec(&r)) < 0)
        free(r.old);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The backend. */

static ssize_t shim_pread(int fd, void *buf, size_t len, off_t off)
{
    S.st.preads++;
    return pread(fd, buf, len, off);
}

static ssize_t shim_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    tick();
    S.st.pwrites++;
    int rc = record_data(fd, (uint64_t)off, len);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    ssize_t r = pwrite(fd, buf, len, off);
    if (r > 0)
        S.st.bytes_written += (uint64_t)r;
    return r;
}

static int shim_fdatasync(int fd)
{
    tick();
    S.st.syncs++;
    if (S.failed)
        return 0;               /* the power is gone: nothing reaches the disk */
    size_t fi;
    int rc = find_file(fd, false, &fi);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    if (fi != SIZE_MAX) {
        size_t w = 0;
        for (size_t i = 0; i < S.nrecs; i++) {
            if (S.recs[i].file == fi)
                free(S.recs[i].old);
            else
                S.recs[w++] = S.recs[i];
        }
        S.nrecs = w;
        uint64_t sz = 0;
        if (file_size(fd, &sz) == 0)
            S.files[fi].synced_size = sz;
    }
    if (S.real_sync)
        return fdatasync(fd);
    return 0;
}

static int shim_fallocate(int fd, int mode, off_t off, off_t len)
{
    tick();
    if (mode & FALLOC_FL_PUNCH_HOLE) {
        S.st.punches++;
        uint64_t size = 0;
        int rc = file_size(fd, &size);
        if (rc == 0 && (uint64_t)off < size) {
            uint64_t end = (uint64_t)off + (uint64_t)len;
            if (end > size)
                end = size;
            rc = record_data(fd, (uint64_t)off, end - (uint64_t)off);
        }
        if (rc < 0) {
            errno = -rc;
            return -1;
        }
    }
    /* other modes only allocate: no content changes */
    return fallocate(fd, mode, off, len);
}

static int shim_ftruncate(int fd, off_t len)
{
    tick();
    S.st.truncates++;
    size_t fi;
    int rc = find_file(fd, true, &fi);
    uint64_t size = 0;
    if (rc == 0)
        rc = file_size(fd, &size);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    uint64_t nl = (uint64_t)len;
    if (S.failed) {
        /* after the failure: undone by shim_crash like any write */
        struct rec r = { .kind = REC_SIZE, .file = fi, .old_size = size,
                         .lost = true };
        if (nl < size) {
            r.off = nl;
            r.len = size - nl;
            if ((rc = read_old(fd, size, r.off, r.len, &r.old)) < 0) {
                errno = -rc;
                return -1;
            }
        }
        if ((rc = add_rec(&r)) < 0) {
            free(r.old);
            errno = -rc;
            return -1;
        }
        return ftruncate(fd, len);
    }
    /* a size change is durable at once; what it cut off is gone for good */
    int r = ftruncate(fd, len);
    if (r < 0)
        return r;
    for (size_t i = 0; i < S.nrecs; i++) {
        struct rec *p = &S.recs[i];
        if (p->file != fi || p->kind != REC_DATA)
            continue;
        if (p->off >= nl)
            p->len = 0;
        else if (p->off + p->len > nl)
            p->len = nl - p->off;
    }
    S.files[fi].synced_size = nl;
    return 0;
}

static const struct vd_io_backend shim_be = {
    .pread = shim_pread,
    .pwrite = shim_pwrite,
    .fdatasync = shim_fdatasync,
    .fallocate = shim_fallocate,
    .ftruncate = shim_ftruncate,
};

const struct vd_io_backend *shim_backend(void)
{
    return &shim_be;
}

/* ------------------------------------------------------------------ */
/* Control. */

void shim_reset(void)
{
    for (size_t i = 0; i < S.nrecs; i++)
        free(S.recs[i].old);
    free(S.recs);
    for (size_t i = 0; i < S.nfiles; i++)
        close(S.files[i].fd);
    free(S.files);
    S.recs = NULL;
    S.nrecs = S.caprecs = 0;
    S.files = NULL;
    S.nfiles = S.capfiles = 0;
    S.countdown = UINT64_MAX;
    S.calls = 0;
    S.failed = false;
}

void shim_arm(uint64_t calls)
{
    S.countdown = calls;
}

void shim_fail_now(void)
{
    fail_now();
}

bool shim_failed(void)
{
    return S.failed;
}

void shim_set_real_sync(bool on)
{
    S.real_sync = on;
}

uint64_t shim_calls(void)
{
    return S.calls;
}

uint64_t shim_pending(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < S.nrecs; i++)
        n += !S.recs[i].lost && S.recs[i].len > 0;
    return n;
}

void shim_get_stats(struct shim_stats *st)
{
    *st = S.st;
}

static int write_all(int fd, const uint8_t *b, uint64_t len, uint64_t off)
{
    while (len) {
        ssize_t r = pwrite(fd, b, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        b += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

static int restore(const struct rec *r)
{
    int fd = S.files[r->file].fd;
    if (r->kind == REC_SIZE && ftruncate(fd, (off_t)r->old_size) < 0)
        return -errno;
    return r->len ? write_all(fd, r->old, r->len, r->off) : 0;
}

/* Restores the old content of a random subset of the record's sectors
 * (sectors of the file: a disk tears writes at its sector boundaries). */
static int tear(const struct rec *r)
{
    int fd = S.files[r->file].fd;
    uint64_t pos = r->off, end = r->off + r->len;
    while (pos < end) {
        uint64_t next = (pos / SECTOR + 1) * SECTOR;
        if (next > end)
            next = end;
        if (rnd() & 1) {
            int rc = write_all(fd, r->old + (pos - r->off), next - pos, pos);
            if (rc < 0)
                return rc;
            S.st.sectors_torn++;
        }
        pos = next;
    }
    return 0;
}

int shim_crash(uint64_t seed, const struct shim_policy *pol)
{
    int rc = 0;
    fail_now();
    crash_rng = seed;
    S.st.crashes++;
    size_t i = S.nrecs;

    /* 1. what happened after the failure never happened */
    while (i > 0 && S.recs[i - 1].lost) {
        i--;
        S.st.after_failure++;
        if (rc == 0)
            rc = restore(&S.recs[i]);
    }
    for (size_t f = 0; f < S.nfiles && rc == 0; f++) {
        uint64_t sz = 0;
        if ((rc = file_size(S.files[f].fd, &sz)) == 0 && sz > S.files[f].fail_size &&
            ftruncate(S.files[f].fd, (off_t)S.files[f].fail_size) < 0)
            rc = -errno;
    }

    /* 2. each write not yet durable: kept, dropped or torn, newest first,
     * so that a sector ends with the value before the oldest write dropped */
    unsigned total = pol->keep + pol->drop + pol->tear;
    while (i > 0) {
        const struct rec *r = &S.recs[--i];
        if (r->lost || r->len == 0)
            continue;           /* (a record emptied by a truncate) */
        S.st.pending++;
        uint64_t x = total ? rnd_below(total) : 0;
        if (x < pol->keep) {
            S.st.kept++;
        } else if (x < pol->keep + pol->drop) {
            S.st.dropped++;
            if (rc == 0)
                rc = restore(r);
        } else {
            S.st.torn++;
            if (rc == 0)
                rc = tear(r);
        }
    }

    /* 3. an append whose size update did not reach the disk */
    for (size_t f = 0; f < S.nfiles && rc == 0; f++) {
        uint64_t sz = 0;
        if ((rc = file_size(S.files[f].fd, &sz)) < 0)
            break;
        if (sz > S.files[f].synced_size && rnd_below(100) < pol->size_revert_pct) {
            if (ftruncate(S.files[f].fd, (off_t)S.files[f].synced_size) < 0)
                rc = -errno;
            S.st.size_reverts++;
        }
    }
    shim_reset();
    return rc;
}
