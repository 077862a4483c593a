/*
 * vdisk.h - the public interface of libvdisk.
 *
 * libvdisk stores virtual disks as chains of copy-on-write layer files
 * ("vdk" files, described byte by byte in docs/FORMAT.md).  This header is
 * the manual: every function says what it does, who owns what, what it
 * returns and which errors it reports.
 *
 * Conventions
 *  - Every function that can fail returns 0 (or a non-negative count) on
 *    success and a negative errno on failure.  The message for a person is
 *    set once, where the error is detected, and can be read with
 *    vd_errmsg() until the next failing libvdisk call in the same thread.
 *  - Handles are opaque.  A handle is used by one thread at a time; the
 *    library keeps no global mutable state except the per-thread message.
 *  - Offsets and lengths of I/O are in bytes and must be multiples of
 *    VD_SECTOR_SIZE (512).  Buffers may have any alignment: the library
 *    bounces misaligned buffers when the file uses O_DIRECT.
 *  - Depth: in a chain, the top (writable) layer has depth 1, its parent
 *    depth 2, and so on.  Depth 0 means "no layer holds this range".
 */
#ifndef VDISK_H
#define VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VD_SECTOR_SIZE      512u
#define VD_SUBBLOCK_SIZE    4096u              /* sub-block state granularity */
#define VD_MIN_BLOCK_SIZE   4096u
#define VD_MAX_BLOCK_SIZE   (2u << 20)
#define VD_DEFAULT_BLOCK_SIZE 65536u
#define VD_MAX_SIZE         (64ull << 40)      /* largest virtual size: 64 TiB */
#define VD_PARENT_HINT_MAX  255u               /* longest parent file-name hint */

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* The message of the last failure in this thread ("" if none).  The string
 * is owned by the library and valid until the next libvdisk call in this
 * thread that fails. */
const char *vd_errmsg(void);

/* ------------------------------------------------------------------ */
/* Identifiers                                                         */
/* ------------------------------------------------------------------ */

typedef struct vd_uuid {
    uint8_t b[16];
} vd_uuid;

/* Formats a UUID as 36 characters + NUL into out (at least 37 bytes). */
void vd_uuid_format(const vd_uuid *u, char out[37]);
/* Parses the 36-character form.  Returns 0 or -EINVAL. */
int vd_uuid_parse(const char *s, vd_uuid *u);
bool vd_uuid_is_null(const vd_uuid *u);

/* ------------------------------------------------------------------ */
/* Creating layers                                                     */
/* ------------------------------------------------------------------ */

enum vd_digest {
    VD_DIGEST_NONE = 0,
    VD_DIGEST_SHA256 = 1,
};

struct vd_create_opts {
    uint64_t size;           /* virtual size in bytes, multiple of 512, <= VD_MAX_SIZE.
                                0 with a parent: the parent's size */
    uint32_t block_size;     /* power of two in [4 KiB, 2 MiB]; 0 = default (64 KiB),
                                or the parent's block size when there is a parent */
    enum vd_digest digest;   /* per-block digests kept in the index */
    const char *parent;      /* path of the parent layer, or NULL for a base layer.
                                The parent is frozen (made read-only forever) by this
                                call if it is not frozen yet.  The child records the
                                parent's UUID and its file name as a hint. */
    const vd_uuid *uuid;     /* the new layer's UUID; NULL: a random one */
};

/* Creates a new, empty layer file at path (which must not exist: -EEXIST).
 * With a parent, the new layer is a delta that reads through to it.
 * The file is complete and durable (fsynced) when this returns.
 * On success writes the new layer's UUID to *uuid_out when it is not NULL.
 * Errors: -EINVAL (bad size/block size/digest, block size differing from
 * the parent's), -EEXIST, -ENOSPC, -EIO, errors of opening the parent. */
int vd_layer_create(const char *path, const struct vd_create_opts *opts,
                    vd_uuid *uuid_out);

/* Makes a layer read-only forever (sets the frozen flag in its header).
 * Idempotent.  Fails with -EBUSY if the layer is marked dirty (closed
 * uncleanly: run vd_layer_check first). */
int vd_layer_freeze(const char *path);

/* ------------------------------------------------------------------ */
/* I/O contexts                                                        */
/* ------------------------------------------------------------------ */

/* A context owns one libaio queue and an eventfd.  Any number of chains can
 * be opened on one context; callbacks of their requests run only inside
 * vd_ctx_poll() of that context.  One context per event-loop thread. */
struct vd_ctx;

/* queue_depth: maximum I/O operations in flight (0 = 256). */
int vd_ctx_new(unsigned queue_depth, struct vd_ctx **out);
/* Frees the context.  All chains opened on it must be closed first. */
void vd_ctx_free(struct vd_ctx *ctx);
/* A file descriptor that becomes readable when completions are pending
 * (poll/epoll it for POLLIN and then call vd_ctx_poll with timeout 0). */
int vd_ctx_fd(const struct vd_ctx *ctx);
/* Reaps completed I/O and runs the callbacks of finished requests.
 * Waits up to timeout_ms (-1 = forever, 0 = not at all) for at least one
 * event if none is ready.  Returns the number of requests completed, or a
 * negative errno.  Callbacks may submit new requests. */
int vd_ctx_poll(struct vd_ctx *ctx, int timeout_ms);
/* Number of requests submitted on this context and not yet completed. */
unsigned vd_ctx_inflight(const struct vd_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Chains (an open virtual disk)                                       */
/* ------------------------------------------------------------------ */

struct vd_chain;

/* Maps a parent UUID to the path of its file.  hint is the parent file name
 * recorded in the child, child_path the path of the child.  Writes a NUL-
 * terminated path into out (size outlen) and returns 0, or returns a
 * negative errno.  The library always checks that the file found has the
 * expected UUID, so a resolver cannot make a chain read a wrong file. */
typedef int (*vd_resolve_fn)(void *opaque, const vd_uuid *parent,
                             const char *hint, const char *child_path,
                             char *out, size_t outlen);

/* A set of open frozen layers shared by chains (linked clones of one
 * template share their template's layers, and the memory of their index).
 * A cache must outlive the chains that use it and belongs to one context. */
struct vd_layer_cache;
int vd_layer_cache_new(struct vd_layer_cache **out);
/* Frees the cache; fails with -EBUSY while a chain still uses it. */
int vd_layer_cache_free(struct vd_layer_cache *cache);
/* Gives the cache a block cache of `bytes` bytes (0: none; before any chain
 * uses it): reads from its frozen layers then go through memory shared by
 * every chain of the cache, on whatever context, in 64 KiB chunks of the
 * layer files; concurrent readers of a chunk being loaded wait for it, so
 * linked clones reading the same template blocks at once read them from
 * disk once.  Chains of such a cache may be used on several threads (each
 * with its own context); opening and closing chains still needs one lock. */
int vd_layer_cache_set_block_cache(struct vd_layer_cache *cache, uint64_t bytes);
struct vd_layer_cache_stats {
    uint64_t frozen_read_bytes;   /* read from the files of frozen layers */
    uint64_t block_cache_size, block_cache_used;
    uint64_t block_cache_hits, block_cache_hit_bytes;
    uint64_t block_cache_loads;   /* chunks read from disk */
    uint64_t block_cache_waits;   /* reads that waited for a chunk being loaded */
};
void vd_layer_cache_stats(struct vd_layer_cache *cache, struct vd_layer_cache_stats *st);

enum {
    VD_OPEN_RDWR      = 1u << 0,   /* open the top layer for writing */
    VD_OPEN_BUFFERED  = 1u << 1,   /* use the page cache instead of O_DIRECT */
};

struct vd_open_opts {
    unsigned flags;             /* VD_OPEN_* */
    vd_resolve_fn resolve;      /* NULL: the parent hint, in the child's directory */
    void *resolve_opaque;
    struct vd_layer_cache *cache; /* NULL: layers are not shared */
};

/* Opens the layer at path and, through parent UUIDs, the whole chain below
 * it.  With VD_OPEN_RDWR the top layer must not be frozen (-EROFS) and it is
 * marked dirty until vd_chain_close; an already-dirty layer opens fine (it
 * was closed uncleanly; its index is consistent by design) and stays dirty
 * in vd_layer_info until closed cleanly.  A layer is opened with O_DIRECT
 * unless VD_OPEN_BUFFERED is given or the filesystem refuses O_DIRECT.
 * opts may be NULL (read-only, defaults).
 * Errors: -ENOENT, -EACCES, -EROFS, -EINVAL or -EUCLEAN (not a layer file,
 * or a corrupt one: vd_errmsg says what), -ELOOP (parent cycle or chain
 * deeper than 4096), -ENOMEM, -EIO. */
int vd_chain_open(struct vd_ctx *ctx, const char *path,
                  const struct vd_open_opts *opts, struct vd_chain **out);

/* Waits for the chain's requests, flushes a writable top layer, clears its
 * dirty flag and frees everything.  Returns 0 or the first error met while
 * flushing (the chain is freed in every case). */
int vd_chain_close(struct vd_chain *chain);

/* Waits (polling the chain's context) until no request of the chain is in
 * flight. */
void vd_chain_wait(struct vd_chain *chain);
/* Number of layers (>= 1). */
unsigned vd_chain_depth(const struct vd_chain *chain);
/* Bytes this chain read from the files of shared frozen layers (a layer
 * cache's), and bytes its reads found in the block cache; any thread may
 * ask (each figure is exact, the two are not one instant). */
void vd_chain_read_stats(const struct vd_chain *chain, uint64_t *frozen_read_bytes,
                         uint64_t *cache_hit_bytes);
/* Virtual size of the chain (the top layer's size). */
uint64_t vd_chain_size(const struct vd_chain *chain);
uint32_t vd_chain_block_size(const struct vd_chain *chain);
bool vd_chain_writable(const struct vd_chain *chain);
/* Path of the layer at depth (1 = top), or NULL if depth is out of range.
 * Owned by the chain. */
const char *vd_chain_layer_path(const struct vd_chain *chain, unsigned depth);

/* Freezes the top layer and stacks a new empty delta layer created at
 * new_top_path on it, which becomes the writable top: a snapshot, in
 * constant time.  The chain must be writable.  Waits for in-flight writes
 * and flushes first.  On error the chain is unchanged. */
int vd_chain_push(struct vd_chain *chain, const char *new_top_path);

/* ------------------------------------------------------------------ */
/* Layer information                                                   */
/* ------------------------------------------------------------------ */

struct vd_layer_info {
    vd_uuid uuid;
    vd_uuid parent_uuid;        /* null UUID: a base layer */
    char parent_hint[VD_PARENT_HINT_MAX + 1];
    uint64_t size;              /* virtual size */
    uint32_t block_size;
    enum vd_digest digest;
    bool frozen;
    bool dirty;                 /* not closed cleanly since last opened for writing */
    uint64_t allocated;         /* bytes of virtual disk this layer holds data for
                                   (present sub-blocks x 4 KiB) */
    uint64_t zeroed;            /* bytes this layer marks as zero */
    uint64_t file_size;         /* size of the file on disk */
    uint64_t create_time;       /* seconds since the epoch */
};

/* Information about the layer at depth (1 = top) of an open chain. */
int vd_chain_layer_info(const struct vd_chain *chain, unsigned depth,
                        struct vd_layer_info *info);

/* Information about one layer file, opened read-only on its own (its
 * parent is not opened). */
int vd_layer_info(const char *path, struct vd_layer_info *info);

/* ------------------------------------------------------------------ */
/* Asynchronous I/O                                                    */
/* ------------------------------------------------------------------ */

/* Completion callback: result is 0 or a negative errno. */
typedef void (*vd_io_cb)(void *opaque, int result);

enum {
    VD_IO_FUA = 1u << 0,   /* write/zero: durable when the callback runs */
};

/* Each submit function returns 0 when the request was accepted (the
 * callback will run exactly once, from vd_ctx_poll, never from inside the
 * submit call) or a negative errno when it was refused (the callback will
 * not run): -EINVAL misaligned, -ENOSPC beyond the end of the disk (offset +
 * length > size, checked without overflow), -EROFS on a read-only chain,
 * -ENOMEM.  Buffers must stay valid until the callback.  Requests may
 * complete in any order; overlapping requests in flight at the same time
 * complete as if executed in some order. */
int vd_aio_read(struct vd_chain *chain, void *buf, uint64_t offset,
                size_t length, vd_io_cb cb, void *opaque);
int vd_aio_write(struct vd_chain *chain, const void *buf, uint64_t offset,
                 size_t length, unsigned flags, vd_io_cb cb, void *opaque);
/* Makes every write that completed before this call durable. */
int vd_aio_flush(struct vd_chain *chain, vd_io_cb cb, void *opaque);
/* The range reads as zeroes afterwards.  In a delta this hides the parent's
 * data without writing data blocks. */
int vd_aio_zero(struct vd_chain *chain, uint64_t offset, uint64_t length,
                unsigned flags, vd_io_cb cb, void *opaque);
/* TRIM: the range's space may be released.  It reads as zeroes afterwards
 * (so a discard in a delta hides the parent's data, as zero does). */
int vd_aio_discard(struct vd_chain *chain, uint64_t offset, uint64_t length,
                   vd_io_cb cb, void *opaque);

/* Synchronous wrappers: submit, then poll the chain's context until the
 * request completes.  Must not be called from inside a callback. */
int vd_read(struct vd_chain *chain, void *buf, uint64_t offset, size_t length);
int vd_write(struct vd_chain *chain, const void *buf, uint64_t offset,
             size_t length, unsigned flags);
int vd_flush(struct vd_chain *chain);
int vd_zero(struct vd_chain *chain, uint64_t offset, uint64_t length,
            unsigned flags);
int vd_discard(struct vd_chain *chain, uint64_t offset, uint64_t length);

/* ------------------------------------------------------------------ */
/* Block status                                                        */
/* ------------------------------------------------------------------ */

enum vd_extent_type {
    VD_EXTENT_HOLE = 0,   /* no layer holds it: reads as zeroes */
    VD_EXTENT_ZERO = 1,   /* a layer marks it zero: reads as zeroes */
    VD_EXTENT_DATA = 2,   /* a layer holds data for it */
};

struct vd_extent {
    uint64_t offset;
    uint64_t length;
    enum vd_extent_type type;
    unsigned depth;       /* depth of the owning layer; 0 for holes */
};

/* Describes [offset, offset+length) as consecutive extents, merging
 * neighbours of equal type and depth.  Fills at most max extents and
 * returns how many were filled (>= 1 when length > 0); the caller asks
 * again from the end of the last one for more.  Reflects completed writes.
 * Runs in memory, no I/O.  Errors: -EINVAL, -ENOSPC (beyond the end). */
int vd_block_status(struct vd_chain *chain, uint64_t offset, uint64_t length,
                    struct vd_extent *ext, size_t max);

/* ------------------------------------------------------------------ */
/* Checking and repair                                                 */
/* ------------------------------------------------------------------ */

enum {
    VD_CHECK_REPAIR = 1u << 0,   /* fix what can be fixed: leaks, stale digests of a
                                    layer closed uncleanly, the dirty flag */
    VD_CHECK_VERIFY = 1u << 1,   /* re-hash every block that has a digest */
};

struct vd_check_result {
    uint64_t corruptions;        /* structural errors found (unrepairable) */
    uint64_t leaked_bytes;       /* file space no index entry refers to */
    uint64_t digest_mismatches;  /* blocks whose data no longer matches: damage */
    uint64_t digest_stale;       /* in a layer closed uncleanly: blocks whose digest
                                    does not match, which may have been rewritten in
                                    place just before the crash (not damage; repair
                                    re-hashes them) */
    uint64_t blocks_checked;
    uint64_t repaired;           /* problems fixed by VD_CHECK_REPAIR */
    bool dirty;                  /* the layer was marked dirty */
};

/* Called once per finding with a one-line message (no newline). */
typedef void (*vd_report_fn)(void *opaque, const char *msg);

/* Checks the structure of one layer file (not its parents): headers, index
 * pages, that every offset lies inside the file and no two users share
 * space, and (with VD_CHECK_VERIFY) each block's digest.  The layer must not
 * be open for writing elsewhere.  Returns 0 when the check ran (look at
 * *res), or a negative errno when it could not run at all (-EUCLEAN: not
 * even the header could be read). */
int vd_layer_check(const char *path, unsigned flags,
                   struct vd_check_result *res, vd_report_fn report,
                   void *opaque);

/* ================================================================== */
/* Stores: named volumes, snapshots, templates and clones              */
/* ================================================================== */

/* A store is a directory holding an LMDB catalog (catalog/) and layer files
 * (layers/UUID.vdk).  Several processes may use one store at once:
 * operations that change the store are serialized by a lock in the store,
 * and a multi-step operation is recorded in the catalog's journal first, so
 * that a crash or kill in the middle is finished or undone by the next
 * vd_store_open.  Names of volumes and templates share one namespace:
 * 1 to 64 characters of [A-Za-z0-9._-], not starting with '.' or '-'.
 * Snapshot names follow the same rule, per volume. */

#define VD_NAME_MAX 64

struct vd_store;

enum {
    VD_STORE_CREATE = 1u << 0,   /* create the store if it does not exist */
};

/* Opens (and with VD_STORE_CREATE creates) the store in dir, then finishes
 * or undoes any operation a crash interrupted.  Errors: -ENOENT (no store
 * there), -EUCLEAN (not a store / damaged catalog), -EACCES, -ENOMEM. */
int vd_store_open(const char *dir, unsigned flags, struct vd_store **out);
void vd_store_close(struct vd_store *st);
const char *vd_store_path(const struct vd_store *st);

/* The default store location: $VDISK_STORE if set, else /var/lib/vdisk for
 * root, else $XDG_DATA_HOME/vdisk (~/.local/share/vdisk).  Returns 0,
 * -ENAMETOOLONG, or -ENOENT when neither XDG_DATA_HOME nor HOME is set. */
int vd_store_default_path(char *out, size_t outlen);

/* Called by long operations (commit, full clone, flatten): done of total
 * bytes.  May be NULL. */
typedef void (*vd_progress_fn)(void *opaque, uint64_t done, uint64_t total);

/* ---- volumes ---- */

struct vd_volume_info {
    char name[VD_NAME_MAX + 1];
    uint64_t size;               /* virtual size */
    uint32_t block_size;
    enum vd_digest digest;
    uint64_t allocated;          /* bytes of data in the layers only this volume uses */
    unsigned depth;              /* layers in its chain */
    unsigned snapshots;
    char template_name[VD_NAME_MAX + 1];   /* "" unless a linked clone */
    uint32_t template_version;
    uint64_t create_time;
    vd_uuid top;                 /* UUID of the writable top layer */
    int writer_pid;              /* process with it open for writing, or 0 */
};

/* Creates an empty volume.  opts may be NULL (defaults); opts->size and
 * opts->parent are ignored.  Errors: -EINVAL (bad name or size), -EEXIST. */
int vd_volume_create(struct vd_store *st, const char *name, uint64_t size,
                     const struct vd_create_opts *opts);
/* Removes a volume and its snapshots (-EBUSY while open for writing). */
int vd_volume_remove(struct vd_store *st, const char *name);
/* Grows a volume (shrinking: -EINVAL), in constant time. */
int vd_volume_resize(struct vd_store *st, const char *name, uint64_t new_size);
int vd_volume_info(struct vd_store *st, const char *name, struct vd_volume_info *info);
/* All volumes, sorted by name, in a malloc'ed array the caller frees. */
int vd_volume_list(struct vd_store *st, struct vd_volume_info **out, size_t *n);

/* Opens for I/O: "VOL" (read-write with VD_OPEN_RDWR), "VOL@SNAP" or a
 * template "TPL" / "TPL@N" (version N; read-only).  A volume open for
 * writing is locked against other writers (-EBUSY, naming the holder). */
int vd_store_open_chain(struct vd_store *st, struct vd_ctx *ctx, const char *name,
                        unsigned flags, struct vd_chain **out);

/* Checks the catalog against the files (every layer file present, no
 * stray files, reference counts right) and every layer of the volume's
 * chain (name NULL: the whole store).  VD_CHECK_REPAIR also removes stray
 * files and fixes reference counts.  Results are summed into *res. */
int vd_store_check(struct vd_store *st, const char *name, unsigned flags,
                   struct vd_check_result *res, vd_report_fn report, void *opaque);

/* ---- snapshots ---- */

struct vd_snapshot_info {
    char name[VD_NAME_MAX + 1];
    char parent[VD_NAME_MAX + 1];   /* the snapshot it was taken after, "" for none */
    uint64_t create_time;
    uint64_t size;                  /* virtual size at that point */
    uint64_t allocated;             /* bytes of data its own layer holds */
    bool current;                   /* the volume's present content descends from it */
    vd_uuid layer;
};

/* Freezes the volume's content as SNAP, in constant time. */
int vd_snapshot_create(struct vd_store *st, const char *vol, const char *snap);
/* The same for a volume the caller has open for writing (chain, from
 * vd_store_open_chain or vd_chain_open on its top layer), as a server does
 * while clients use it: requests in flight on the chain are waited for and
 * the top flushed, then the snapshot is taken and the chain goes on with
 * the new top.  Writes completed before the call are in the snapshot,
 * writes submitted after it returns are not.  On error nothing changed.
 * -EINVAL when chain is not the volume's writable top. */
int vd_snapshot_create_open(struct vd_store *st, const char *vol, const char *snap,
                            struct vd_chain *chain);
/* Snapshots of a volume, oldest first, in a malloc'ed array. */
int vd_snapshot_list(struct vd_store *st, const char *vol,
                     struct vd_snapshot_info **out, size_t *n);
/* The volume's content becomes SNAP's; changes since are discarded; SNAP
 * stays.  Constant time. */
int vd_snapshot_rollback(struct vd_store *st, const char *vol, const char *snap);
/* Removes SNAP and merges the data written after it into its layer: the
 * volume keeps its content, its chain gets shorter, and the time taken is
 * proportional to the data written since SNAP. */
int vd_snapshot_commit(struct vd_store *st, const char *vol, const char *snap,
                       vd_progress_fn progress, void *opaque);
/* Removes SNAP wherever it is in the tree; every other snapshot and the
 * volume keep their content; space only SNAP used is released. */
int vd_snapshot_remove(struct vd_store *st, const char *vol, const char *snap);

/* ---- committing a snapshot of a volume in use ---- */

/* vd_snapshot_commit needs the volume closed.  A server commits SNAP of a
 * volume it has open for writing (chain, its writable top) as a job: the
 * data written since SNAP is copied in the background, a few blocks at a
 * time, into new space of SNAP's layer that nothing reads yet, while the
 * chain is read and written as usual; blocks written meanwhile are copied
 * again.  vd_commit_finish then pauses the chain's I/O for the little
 * still to copy and switches: SNAP is gone, the chain is one layer
 * shorter, the volume's content is unchanged.  Until the switch, a cancel
 * or a kill leaves everything as it was, SNAP included (the next store
 * open gives the space back).  Every call runs on the thread that polls
 * the chain's context; completions of the copies run in vd_ctx_poll. */
struct vd_commit;

struct vd_commit_status {
    uint64_t done;                /* bytes copied (again for blocks rewritten) */
    uint64_t total;               /* estimate of the bytes to copy, >= done */
    uint64_t dirty;               /* bytes written since their copy */
    unsigned inflight;            /* blocks being copied */
    bool scanned;                 /* the first pass over the data is over */
    bool ready;                   /* the first pass is over and little is dirty */
};

/* Starts the job.  Errors: -ENOENT (no such snapshot), -EINVAL (SNAP not in
 * the volume's current history, or chain is not its writable top), -EBUSY
 * (SNAP's data is shared with another branch, a template or a clone; or a
 * commit of this chain is already running). */
int vd_commit_start(struct vd_store *st, const char *vol, const char *snap,
                    struct vd_chain *chain, struct vd_commit **out);
/* Starts copies until max_inflight are in flight or nothing is left to
 * start; returns how many it started, or the job's error. */
int vd_commit_pump(struct vd_commit *j, unsigned max_inflight);
void vd_commit_status(const struct vd_commit *j, struct vd_commit_status *st);
/* Waits for the copies in flight, drains the chain's requests and copies
 * what is left: from here until vd_commit_finish no request of the chain
 * may start (the caller's thread stays here).  Needs no lock of the
 * caller's: a server calls it before taking the one it holds around store
 * operations.  On error, cancel the job. */
int vd_commit_settle(struct vd_commit *j);
/* Switches (after vd_commit_settle, which it runs itself if needed): the
 * snapshot goes and the chain goes on one layer shorter.  *pause_ns (may be
 * NULL) gets the time the chain was held.  Frees j; on an error before the
 * switch the job is cancelled and nothing changed. */
int vd_commit_finish(struct vd_commit *j, uint64_t *pause_ns);
/* Stops the job and frees it; nothing changed. */
void vd_commit_cancel(struct vd_commit *j);

/* ---- templates and clones ---- */

struct vd_template_info {
    char name[VD_NAME_MAX + 1];
    uint64_t size;                  /* of the newest version */
    uint32_t versions;              /* number of versions kept */
    uint32_t latest;                /* newest version number */
    unsigned clones;                /* linked clones of all versions */
    uint64_t create_time;
};

struct vd_template_version {
    uint32_t version;
    uint64_t create_time;
    uint64_t size;
    unsigned clones;
    vd_uuid layer;
};

/* Freezes the current content of volume `from` as a new template (version
 * 1); the volume goes on as before (its later writes do not touch the
 * template). */
int vd_template_create(struct vd_store *st, const char *tpl, const char *from);
/* A new version from `from`'s current content; clones keep their version. */
int vd_template_update(struct vd_store *st, const char *tpl, const char *from);
/* Removes a template; -EBUSY while linked clones depend on it (vd_errmsg
 * names them). */
int vd_template_remove(struct vd_store *st, const char *tpl);
int vd_template_list(struct vd_store *st, struct vd_template_info **out, size_t *n);
/* Information on one template; with versions non-NULL, also its versions
 * (oldest first) in a malloc'ed array the caller frees (NULL when n is 0). */
int vd_template_info(struct vd_store *st, const char *tpl, struct vd_template_info *info,
                     struct vd_template_version **versions, size_t *n);

enum {
    VD_CLONE_FULL = 1u << 0,   /* an independent copy instead of a linked clone */
};

/* Makes volume vol from version `version` (0: the newest) of template tpl:
 * a linked clone in constant time, or with VD_CLONE_FULL an independent
 * copy (reflinked where the file system can). */
int vd_clone(struct vd_store *st, const char *tpl, uint32_t version, const char *vol,
             unsigned flags, vd_progress_fn progress, void *opaque);
/* Makes a linked clone independent of its template: the clone's first
 * layer gets a copy of what it read from the template, so its snapshots
 * stay as they are.  A volume that is not a linked clone is left alone. */
int vd_volume_flatten(struct vd_store *st, const char *vol, vd_progress_fn progress,
                      void *opaque);

/* ---- desktop pools ---- */

/* A pool hands out linked clones of one template version to sessions
 * (vdiskd's export names pool/POOL and pool/POOL/USER).  It keeps up to
 * `spares` clones ready, at most `size` clones in all.  Ephemeral: each
 * session gets a fresh clone, removed when the session ends.  Persistent:
 * each user gets a clone of their own, kept between sessions.  Clones are
 * volumes named POOL.NNNN; the catalog records which is which. */
#define VD_POOL_NAME_MAX 48

enum vd_pool_mode { VD_POOL_EPHEMERAL, VD_POOL_PERSISTENT };
enum vd_pool_state {
    VD_POOL_SPARE,                /* ready for the next session or user */
    VD_POOL_SESSION,              /* in a session */
    VD_POOL_IDLE,                 /* persistent: its user's, no session now */
};

struct vd_pool_info {
    char name[VD_NAME_MAX + 1];
    char template_name[VD_NAME_MAX + 1];
    uint32_t version;             /* the template version new clones take */
    unsigned size, spares;
    enum vd_pool_mode mode;
    uint64_t create_time;
    unsigned clones;              /* all its clones */
    unsigned sessions;            /* clones in a session */
    unsigned ready;               /* spares of the current version */
};

struct vd_pool_clone {
    char volume[VD_NAME_MAX + 1];
    char user[VD_NAME_MAX + 1];   /* persistent pools: its owner, else "" */
    uint32_t version;             /* the template version it was made from */
    enum vd_pool_state state;
    uint64_t since;               /* when it entered that state (Unix time) */
    char holder[128];             /* the session's client, as the server named it */
};

/* Creates a pool of template tpl, version `version` (0: the newest), and
 * makes its spares.  Errors: -EINVAL (bad name or numbers: 1 <= size,
 * spares <= size), -ENOENT (no such template), -EEXIST. */
int vd_pool_create(struct vd_store *st, const char *name, const char *tpl, uint32_t version,
                   unsigned size, unsigned spares, enum vd_pool_mode mode);
/* Removes the pool and its clones; -EBUSY (naming them) while some are in a
 * session. */
int vd_pool_remove(struct vd_store *st, const char *name);
int vd_pool_list(struct vd_store *st, struct vd_pool_info **out, size_t *n);
/* One pool, and (clones non-NULL) its clones in a malloc'ed array. */
int vd_pool_info(struct vd_store *st, const char *name, struct vd_pool_info *info,
                 struct vd_pool_clone **clones, size_t *n);
/* New clones take version `version` (0: the newest) of the template from
 * now on; spares of other versions are replaced by vd_pool_fill.  Clones in
 * a session keep their version; so do persistent users' clones. */
int vd_pool_recompose(struct vd_store *st, const char *name, uint32_t version);

/* The broker's side (vdiskd). */
/* Brings the spares to their count: removes spares of an old version, makes
 * new ones within the size.  *made and *dropped (may be NULL) count them. */
int vd_pool_fill(struct vd_store *st, const char *name, unsigned *made, unsigned *dropped);
/* The clone for a new session (user NULL: ephemeral pools) or for user
 * (persistent pools: theirs, or a spare that becomes theirs): its volume
 * name in vol, now in state SESSION, held by holder.  Errors: -ENOENT,
 * -EINVAL (user given to an ephemeral pool or missing for a persistent
 * one), -ENOSPC (every clone is in use and the pool is at its size). */
int vd_pool_take(struct vd_store *st, const char *name, const char *user, const char *holder,
                 char vol[VD_NAME_MAX + 1]);
/* The session of clone vol ended: an ephemeral clone is removed, a
 * persistent one goes back to IDLE.  The volume must be closed. */
int vd_pool_release(struct vd_store *st, const char *name, const char *vol);
/* Every session ended (a server starting): as vd_pool_release for each
 * clone in a session; records of clones whose volume is gone are dropped. */
int vd_pool_reset(struct vd_store *st);
/* The pool vol is a clone of: 0 with its name in pool, or -ENOENT. */
int vd_pool_of_volume(struct vd_store *st, const char *vol, char pool[VD_NAME_MAX + 1]);

/* ---- access rules: who may open an export ---- */

/* An object (a volume "VOL", a template "TPL" or a pool "pool/POOL") may
 * carry rules IDENTITY -> read-write or read-only, kept in the catalog.
 * An object without rules is open to every client that can reach the
 * server; one with rules only to the identities they match, and a client
 * several rules match gets the most they give (read-write over
 * read-only).  A volume's rules also govern its snapshots VOL@SNAP, a
 * template's its versions TPL@N; a pool without rules of its own is
 * governed by its template's (vd_access_rules says which).  Rules go with
 * their object when it is removed; linked clones, templates and pools
 * made from an object do not inherit its rules.
 *
 * Identities, as a user types them:
 *   unix:uid=N      a unix socket peer with that uid
 *   unix:gid=N      a unix socket peer whose primary or supplementary
 *                   groups include N
 *   unix:user=NAME  a unix socket peer whose uid is NAME's (looked up
 *                   when a client is checked, not when the rule is added)
 *   x509:NAME       a TLS client certificate whose subject CN, or one of
 *                   whose subjectAltNames, is NAME (exactly)
 *   psk:NAME        a TLS client that used the pre-shared key of NAME
 *   any             every client */
#define VD_IDENTITY_MAX 255
#define VD_ACCESS_RULES_MAX 1024         /* rules per object */

enum vd_access {
    VD_ACCESS_NONE = 0,
    VD_ACCESS_READ_ONLY = 1,
    VD_ACCESS_READ_WRITE = 2,
};

struct vd_access_rule {
    char identity[VD_IDENTITY_MAX + 1];  /* in its canonical form */
    enum vd_access access;               /* READ_ONLY or READ_WRITE */
};

/* Checks an identity a user typed and writes its canonical form to out
 * (numbers without leading zeros): 0, or -EINVAL with a message saying
 * which forms there are. */
int vd_identity_parse(const char *identity, char out[VD_IDENTITY_MAX + 1]);

/* Gives identity access to object (read-only or read-write); an existing
 * rule for the same identity is changed.  One catalog transaction; a
 * server reads the rules at every open, so new connections see it at
 * once.  Errors: -EINVAL (bad identity, or a snapshot or template
 * version named: their volume's or template's rules govern them),
 * -ENOENT (no such volume, template or pool), -ENOSPC (too many rules). */
int vd_access_allow(struct vd_store *st, const char *object, const char *identity,
                    enum vd_access access);
/* Removes identity's rule from object.  The last rule gone, the object is
 * open to every client again.  Errors: -EINVAL, -ENOENT (no such object,
 * or it has no rule for that identity). */
int vd_access_deny(struct vd_store *st, const char *object, const char *identity);
/* The rules that govern object, oldest first, in a malloc'ed array the
 * caller frees (NULL when *n is 0: open to everyone).  They are object's
 * own, except for a pool without rules of its own: its template's.  from
 * (may be NULL) gets the name of the object they belong to.  Errors:
 * -EINVAL, -ENOENT (no such volume, template or pool). */
int vd_access_rules(struct vd_store *st, const char *object, struct vd_access_rule **rules,
                    size_t *n, char from[VD_NAME_MAX + 6]);

/* A client, as a server knows it, for matching identities. */
enum vd_peer_auth {
    VD_PEER_AUTH_NONE = 0,        /* no TLS, or TLS without a client identity */
    VD_PEER_AUTH_X509,            /* a client certificate the CA verified */
    VD_PEER_AUTH_PSK,             /* a pre-shared key */
};
struct vd_peer {
    bool has_cred;                /* a unix socket peer: uid, gid and groups hold */
    uint32_t uid, gid;
    const uint32_t *groups;       /* its supplementary groups (may be NULL) */
    size_t ngroups;
    enum vd_peer_auth auth;
    const char *name;             /* X509: the subject's CN; PSK: the identity */
    const char *const *alt_names; /* X509: the subjectAltNames */
    size_t nalt;
};

/* True when identity (canonical, as vd_identity_parse writes it) names
 * peer.  unix:user=NAME looks NAME up (getpwnam_r); an identity that does
 * not parse names nobody.  Thread-safe. */
bool vd_identity_match(const char *identity, const struct vd_peer *peer);
/* What rules give peer: VD_ACCESS_READ_WRITE when n is 0 (no rules),
 * else the most any matching rule gives, or VD_ACCESS_NONE. */
enum vd_access vd_access_decide(const struct vd_access_rule *rules, size_t n,
                                const struct vd_peer *peer);
/* True when peer is user: its TLS name (CN or PSK identity) is user, or
 * it is a unix socket peer whose uid's user name is user (getpwuid_r).
 * What a persistent pool's pool/POOL/USER asks of its clients. */
bool vd_peer_is_user(const struct vd_peer *peer, const char *user);

/* ---- space ---- */

struct vd_store_usage {
    uint64_t virtual_size;     /* sum of the volumes' sizes: what is promised */
    uint64_t allocated;        /* bytes the store's files occupy on disk */
    uint64_t fs_free;          /* free bytes on the file system */
    uint64_t fs_size;
    unsigned volumes, templates, snapshots, layers;
};
int vd_store_usage(struct vd_store *st, struct vd_store_usage *u);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_H */
