/*
 * driver.h - what a format driver implements, and the helpers format.c
 * gives the drivers.  Private to formats/.
 *
 * The generic layer (format.c) owns the file descriptor, the path, the
 * backing image, probing and the error message; a driver parses and
 * writes its own metadata and keeps its state in img->priv.
 */
#ifndef VDISK_FORMATS_DRIVER_H
#define VDISK_FORMATS_DRIVER_H

#include <stdarg.h>

#include "formats.h"

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

/* How much of a file fmt_probe reads (a VMDK descriptor file is text that
 * fits well inside). */
#define FMT_PROBE_LEN 4096u

struct fmt_image {
    const struct fmt_driver *drv;
    char *path;
    int fd;                 /* the image's file; -1 for chains */
    uint64_t size;          /* virtual size, set by open/create */
    uint64_t file_size;     /* the file's size when opened */
    bool probed;            /* the format was probed, not named by the user */
    bool writing;           /* made by fmt_create */
    bool created;           /* fmt_create made the file: discard removes it */
    bool sequential;        /* writes must come in order (set by create) */
    uint32_t write_align;   /* writes must cover whole units of this many
                               bytes (set by create; 0: sectors) */
    uint64_t unflushed;     /* bytes written since writeback was last started */
    uint64_t wb_lo, wb_hi;  /* the range they were written in */
    char *backing_name;     /* named inside the image (malloc'd), or NULL */
    char *backing_format;
    struct fmt_image *backing;
    struct vd_ctx *ctx;
    void *priv;             /* the driver's */
};

struct fmt_driver {
    const char *name;
    /* The driver opens and creates its file itself (vdk, through
     * libvdisk): img->fd stays -1 and the generic layer neither syncs nor
     * truncates anything. */
    bool own_file;
    /* True if the first len bytes of a file of file_size bytes look like
     * this format (len = MIN(file_size, FMT_PROBE_LEN)).  NULL: never
     * probed (raw). */
    bool (*probe)(const uint8_t *buf, size_t len, uint64_t file_size);
    /* Parses the image: img->fd is open read-only, img->path, file_size
     * and probed are set.  Sets img->size, img->priv and the backing
     * names.  Every offset and length read from the file is checked
     * before use; memory held is bounded (FMT_MAX_META_MEM). */
    int (*open)(struct fmt_image *img, const struct fmt_open_opts *opts);
    /* The image's own status of [off, off + len) (fmt_status's contract,
     * without the backing). */
    int (*status)(struct fmt_image *img, uint64_t off, uint64_t len,
                  uint64_t *pnum, enum fmt_kind *kind);
    /* Reads [off, off + len), a range that status reported as FMT_DATA
     * (the generic layer fills zero and unallocated runs itself). */
    int (*read)(struct fmt_image *img, void *buf, uint64_t off, size_t len);
    /* Properties for "img info" beyond format, size and backing (those
     * the generic layer reports).  May be NULL. */
    void (*info)(struct fmt_image *img, fmt_info_fn cb, void *opaque);

    /* Starts a new image: img->fd is open read-write on an empty file;
     * img->size is set.  Sets img->priv and img->sequential.  May be NULL
     * (the format cannot be written). */
    int (*create)(struct fmt_image *img, const struct fmt_create_opts *opts);
    /* fmt_write's contract.  Data goes to the file as it comes; metadata
     * may wait for finish. */
    int (*write)(struct fmt_image *img, const void *buf, uint64_t off, size_t len);
    /* fmt_write_zeroes's contract; NULL: nothing to do without a backing
     * file, -ENOTSUP with one. */
    int (*write_zeroes)(struct fmt_image *img, uint64_t off, uint64_t len);
    /* Writes what is left (tables, header, footer).  The generic layer
     * then syncs and closes the file. */
    int (*finish)(struct fmt_image *img);
    /* Frees img->priv (after finish, or instead of it on discard and for
     * read-only images).  The generic layer closes img->fd afterwards. */
    void (*close)(struct fmt_image *img);
};

extern const struct fmt_driver fmt_raw_driver;
extern const struct fmt_driver fmt_vdk_driver;
extern const struct fmt_driver fmt_qcow2_driver;
extern const struct fmt_driver fmt_vmdk_driver;

/* Sets the message fmt_errmsg() returns and returns err (a negative
 * errno), so that "return fmt_err(-EUCLEAN, ...)" reads naturally.  By
 * convention the message begins with the image's path. */
int fmt_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* pread of exactly len bytes at off of fd (the file at path, for the
 * message).  A read that ends past the end of the file is -EUCLEAN
 * ("PATH: WHAT at offset N is past the end of the file"); what names the
 * structure being read. */
int fmt_pread_fd(int fd, const char *path, void *buf, size_t len, uint64_t off,
                 const char *what);
/* Tells the kernel to read ahead of a sequence of reads of fd (this one
 * is [off, off + len)), so that reading a source image keeps the disk
 * busy with more than one request at a time.  fmt_pread_fd calls it;
 * drivers that read with pread themselves call it first. */
void fmt_readahead(int fd, uint64_t off, size_t len);
/* The same on img->fd. */
int fmt_pread(struct fmt_image *img, void *buf, size_t len, uint64_t off,
              const char *what);
/* pwrite of exactly len bytes at off of img->fd.  Every so often it also
 * starts the kernel's writeback of what was written (not waiting for it),
 * so that the disk writes while the conversion goes on rather than all at
 * the final fsync. */
int fmt_pwrite(struct fmt_image *img, const void *buf, size_t len, uint64_t off);

/* A small LRU cache of fixed-size tables read from the image file (qcow2
 * L2 tables, VMDK grain tables), keyed by file offset.  The memory it
 * holds is entries * table_size. */
struct fmt_tcache;
int fmt_tcache_new(unsigned entries, size_t table_size, struct fmt_tcache **out);
void fmt_tcache_free(struct fmt_tcache *c);
/* Sets *table to the table at file offset off, reading it if needed
 * from fd (fmt_pread_fd: -EUCLEAN past the end of the file); path is
 * for messages.  Tables of several files may share one cache only if
 * they never share offsets: the key is the offset alone.  The pointer stays
 * valid until the next call on c. */
int fmt_tcache_get(struct fmt_tcache *c, int fd, const char *path, uint64_t off,
                   const char *what, const void **table);

/* A zeroed image of drv named name with fd -1, or NULL (out of memory,
 * message set); for drivers that wrap something other than a file.
 * Freed by fmt_close or fmt_discard. */
struct fmt_image *fmt_image_alloc(const struct fmt_driver *drv, const char *name);

/* vdk.c: an open chain as an image (fmt_open_chain, fmt_create_chain). */
int fmt_vdk_wrap(struct vd_chain *chain, const char *name, unsigned own_depth,
                 bool writing, struct fmt_image **out);
struct vd_chain *fmt_vdk_chain(const struct fmt_image *img);

/* True if all len bytes of buf are zero. */
bool fmt_is_zero(const void *buf, size_t len);

#endif
