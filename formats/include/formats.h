/*
 * formats.h - disk image formats (raw, vdk, qcow2, VMDK) behind one small
 * interface: open or create an image, ask which ranges hold data, read,
 * write, close.  Used by the vdisk command's convert, import and export.
 *
 * Conventions (as in libvdisk):
 * - Functions return 0 (or a count) on success and a negative errno on
 *   failure; the message for a person is then in fmt_errmsg(), set where
 *   the error was found, and begins with the image's path.
 * - Offsets and lengths are bytes, multiples of 512 (FMT_SECTOR), inside
 *   the image's virtual size.
 * - Errors: -EUCLEAN for a corrupt or hostile image (a bad magic, an
 *   offset past the end of the file, a table that overlaps the header,
 *   a compressed cluster that does not inflate to its size), -ENOTSUP for
 *   a valid image that uses something not supported (encryption, zstd, a
 *   VMDK extent type), -EFBIG for sizes past the limits below, -EINVAL for
 *   bad arguments, else the errno of the failed system call.
 * - An image handle is used by one thread at a time.
 *
 * Safety: nothing named inside an image is ever opened on the image's own
 * word.  A qcow2 backing file or a VMDK parent is only reported
 * (fmt_backing_name); the caller opens what the user names and attaches it
 * with fmt_set_backing.  VMDK descriptors name their extent files: when the
 * format was probed, not given, those must be plain file names in the
 * descriptor's own directory (a raw disk a guest wrote may look like a
 * descriptor; it must not reach other files).
 */
#ifndef VDISK_FORMATS_H
#define VDISK_FORMATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vd_chain;
struct vd_ctx;

#define FMT_SECTOR        512u
/* The largest virtual size any driver accepts (libvdisk's VD_MAX_SIZE). */
#define FMT_MAX_SIZE      (64ull << 40)
/* Memory a reader may hold for metadata (tables it caches) per image. */
#define FMT_MAX_META_MEM  (64u << 20)

/* The message of the last failure on this thread ("" if none). */
const char *fmt_errmsg(void);

/* What a range of an image holds, as fmt_status reports it. */
enum fmt_kind {
    FMT_DATA = 0,     /* may hold data: read it */
    FMT_ZERO = 1,     /* marked zero in this image: reads as zeroes */
    FMT_UNALLOC = 2,  /* not in this image: reads from the backing image,
                         or as zeroes when there is none */
};

struct fmt_image;

/* ------------------------------------------------------------------ */
/* Drivers                                                             */
/* ------------------------------------------------------------------ */

/* The names of the drivers, NULL-terminated: "raw", "vdk", "qcow2",
 * "vmdk". */
extern const char *const fmt_names[];

/* True if name is a known format. */
bool fmt_known(const char *name);

/* Probes the file at path by its first bytes: sets *name to the format
 * ("raw" when nothing else matches; raw is never recognised by content).
 * Returns 0 or a negative errno (the file cannot be read). */
int fmt_probe(const char *path, const char **name);

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

struct fmt_open_opts {
    const char *format;   /* a name of fmt_names, or NULL to probe */
    struct vd_ctx *ctx;   /* needed to open vdk images (libvdisk I/O) */
};

/* Opens the image at path read-only.  The driver checks the image's
 * header and tables before it returns; a backing file or parent named
 * inside is not opened (see fmt_backing_name). */
int fmt_open(const char *path, const struct fmt_open_opts *opts,
             struct fmt_image **out);

/* Opens the image img was opened from again, with the same driver and
 * the same rules (as probed, or as named), and its backing image again:
 * a second handle for another thread.  Files opened for reading only;
 * -ENOTSUP for vdk images (their chains do asynchronous I/O instead). */
int fmt_reopen(const struct fmt_image *img, struct fmt_image **out);

/* Makes an open vdk chain an image (reads only); the image owns the chain
 * from then on and closes it.  name is used in messages.  When own_depth
 * is > 0, only the top own_depth layers count as this image's: what the
 * chain's lower layers hold is reported as FMT_UNALLOC (the exported
 * overlay of a linked clone); 0 means every layer. */
int fmt_open_chain(struct vd_chain *chain, const char *name, unsigned own_depth,
                   struct fmt_image **out);

/* The virtual size in bytes (a multiple of 512; a raw file's size is
 * rounded up and the padding reads as zeroes). */
uint64_t fmt_size(const struct fmt_image *img);
/* The driver's name ("qcow2"...), and the path or name given at open. */
const char *fmt_format(const struct fmt_image *img);
const char *fmt_path(const struct fmt_image *img);

/* The backing file (qcow2) or parent (VMDK) the image names, exactly as
 * written inside it, or NULL.  Never opened by this library. */
const char *fmt_backing_name(const struct fmt_image *img);
/* The format the image names for its backing file, or NULL. */
const char *fmt_backing_format(const struct fmt_image *img);

/* Attaches backing as img's backing image: FMT_UNALLOC ranges of img then
 * read from it.  img owns backing from then on.  backing may be smaller
 * than img (the rest reads as zeroes), not larger than FMT_MAX_SIZE. */
void fmt_set_backing(struct fmt_image *img, struct fmt_image *backing);

/* Describes [off, off + len): sets *pnum (> 0, <= len, a multiple of 512)
 * to the length of the run at off of one kind, and *kind.  With deep, an
 * FMT_UNALLOC run is looked up in the backing image, so that FMT_UNALLOC
 * is only reported where no image in the chain holds anything.  No data
 * is read (metadata may be). */
int fmt_status(struct fmt_image *img, uint64_t off, uint64_t len, bool deep,
               uint64_t *pnum, enum fmt_kind *kind);

/* Reads [off, off + len) as a guest would see it (backing included). */
int fmt_read(struct fmt_image *img, void *buf, uint64_t off, size_t len);

/* For vdk images: the open chain (for libvdisk's asynchronous I/O), else
 * NULL.  The image still owns it. */
struct vd_chain *fmt_chain(const struct fmt_image *img);

/* Details for "img info": calls cb once per property with a short key
 * ("cluster-size", "subformat", "compat", "backing-file"...) and a value
 * already formatted as text.  numeric is true when the value is a number
 * (for JSON output). */
typedef void (*fmt_info_fn)(void *opaque, const char *key, const char *value,
                            bool numeric);
void fmt_info(struct fmt_image *img, fmt_info_fn cb, void *opaque);

/* Closes the image (and its backing).  For an image made by fmt_create:
 * writes the metadata, makes the file durable and returns the first error
 * of that (a file fmt_create made is then removed).  NULL is allowed. */
int fmt_close(struct fmt_image *img);

/* ------------------------------------------------------------------ */
/* Writing                                                             */
/* ------------------------------------------------------------------ */

struct fmt_create_opts {
    uint64_t size;            /* virtual size, a multiple of 512, > 0 */
    /* qcow2: cluster size (default 64K; 512..2M, a power of two).
     * vmdk: grain size (default 64K; 4K..1M, a power of two). */
    uint32_t cluster_size;
    /* vmdk: "monolithicSparse" (default) or "streamOptimized". */
    const char *subformat;
    /* qcow2: a backing file to name in the header (not opened); what is
     * not written then reads from it.  backing_format names its format. */
    const char *backing_file;
    const char *backing_format;
    /* vdk: block size (0: default) and digest (enum vd_digest); ctx is
     * needed for the writes. */
    uint32_t block_size;
    int digest;
    struct vd_ctx *ctx;
};

/* Creates a new image at path in format (a name of fmt_names) and opens it
 * for writing; it reads as zeroes (or as its backing file) everywhere
 * until written.  raw, qcow2 and vmdk files are created or truncated (a
 * file that exists keeps its inode); a vdk file must not exist.  Options a
 * format does not use are refused with -EINVAL and a message. */
int fmt_create(const char *path, const char *format,
               const struct fmt_create_opts *opts, struct fmt_image **out);

/* Makes an open vdk chain the destination of writes (a store volume); the
 * image owns the chain from then on. */
int fmt_create_chain(struct vd_chain *chain, const char *name,
                     struct fmt_image **out);

/* True if writes must come in increasing order of offset, not
 * overlapping (VMDK streamOptimized: grains are compressed as a stream). */
bool fmt_sequential(const struct fmt_image *img);

/* The unit writes must cover whole (offset and length multiples of it):
 * 512, or a qcow2 image's cluster size when it names a backing file (the
 * rest of a cluster would have to be copied from a file we never read). */
uint32_t fmt_write_align(const struct fmt_image *img);

/* Writes [off, off + len) of an image made by fmt_create.  Data already
 * written may be written again except on a sequential image. */
int fmt_write(struct fmt_image *img, const void *buf, uint64_t off, size_t len);

/* Marks [off, off + len) as reading zeroes, for images with a backing
 * file (qcow2 zero clusters); on others it does nothing since unwritten
 * ranges read as zeroes.  -ENOTSUP where a format cannot express it. */
int fmt_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len);

/* Closes an image made by fmt_create after a failure: nothing more is
 * written, and the file is removed if fmt_create made it. */
void fmt_discard(struct fmt_image *img);

#endif
