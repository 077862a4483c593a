/*
 * vd-internal.h - structures shared by libvdisk's source files.
 */
#ifndef VD_INTERNAL_H
#define VD_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <libaio.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"
#include "vd-testing.h"
#include "format.h"

#define VDI_UNUSED __attribute__((unused))
#define VDI_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- errors (error.c) ---- */
/* Sets the thread's message and returns err (a negative errno). */
int vdi_err(int err, const char *fmt, ...) VDI_PRINTF(2, 3);
void vdi_clear_err(void);

/* ---- file operations (io.c) ---- */
extern const struct vd_io_backend *vdi_be;   /* never NULL */
extern bool vdi_be_custom;                   /* a test backend is installed */
extern struct vdi_io_stats vdi_stats;

/* pread/pwrite that loop over short transfers; return 0, -errno, or
 * -ENODATA for a read that hit the end of the file (rest zero-filled). */
int vdi_pread_full(int fd, void *buf, size_t len, uint64_t off);
int vdi_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, bool meta);
int vdi_fdatasync(int fd);
void *vdi_alloc_aligned(size_t len);   /* 4 KiB aligned, zeroed, or NULL */

/* One file operation in flight. */
enum vdi_op_kind { VDI_OP_READ, VDI_OP_WRITE, VDI_OP_FSYNC };

struct vdi_op {
    struct iocb iocb;             /* must stay first: libaio hands it back */
    struct vd_ctx *ctx;
    enum vdi_op_kind kind;
    int fd;
    bool meta;                    /* metadata write (statistics) */
    void *buf;
    size_t len;
    uint64_t off;
    long res;
    void (*done)(struct vdi_op *op, int res);
    void *priv;
    struct vdi_op *next;
};

/* Deferred work run from vd_ctx_poll (completions that need no I/O). */
struct vdi_defer {
    void (*fn)(struct vdi_defer *d);
    struct vdi_defer *next;
};

struct vd_ctx {
    io_context_t aio;
    bool use_aio;
    bool aio_fsync_ok;
    int efd;
    bool efd_signaled;            /* efd written since the last poll */
    unsigned depth;
    unsigned ops_in_kernel;
    unsigned reqs_inflight;       /* user requests accepted, not completed */
    unsigned reqs_completed;      /* counter for vd_ctx_poll's return */
    struct vdi_op *wait_head, *wait_tail;   /* ops waiting for a queue slot */
    struct vdi_op *done_head, *done_tail;   /* ops finished synchronously */
    struct vdi_defer *defer_head, *defer_tail;
    struct io_event *events;
    struct vdi_pool *pool;        /* threads for buffered files (io.c) */
    /* Work other threads hand to this context (vdi_ctx_post). */
    pthread_mutex_t remote_lock;
    struct vdi_defer *remote_head, *remote_tail;
    unsigned remote_expected;     /* atomic: block cache waits not yet completed */
};

/* Runs d->fn from vd_ctx_poll of ctx: any thread may call this. */
void vdi_ctx_post(struct vd_ctx *ctx, struct vdi_defer *d);

/* Allocates [off, off+len) of the file without changing its size, so that
 * writing there later cannot fail for want of space (index pages: a flush
 * must not be the first to find the disk full).  0 also where the file
 * system cannot do it; -ENOSPC and other errors otherwise. */
int vdi_reserve(int fd, uint64_t off, uint64_t len);

/* Files opened without O_DIRECT, by descriptor.  io_submit carries out a
 * read or write of such a file synchronously, so their operations run on a
 * few threads of the context instead, to overlap like direct ones. */
void vdi_fd_set_buffered(int fd, bool buffered);

/* Submits op; op->done runs later from vd_ctx_poll. */
void vdi_op_submit(struct vd_ctx *ctx, struct vdi_op *op);
/* Hands queued operations to the kernel (end of every submit and poll). */
void vdi_ctx_kick(struct vd_ctx *ctx);
void vdi_defer(struct vd_ctx *ctx, struct vdi_defer *d);

/* ---- layers (layer.c) ---- */

struct vdi_l2 {
    uint64_t index;               /* page number */
    uint64_t pair_off;            /* file offset of the two slots (0: not on disk yet) */
    uint64_t gen;                 /* generation of the current version */
    uint8_t cur_slot;             /* slot holding gen (next write goes to the other) */
    bool dirty;
    bool on_disk_l1;              /* the durable L1 names pair_off */
    uint8_t *img;                 /* VDF_PAGE bytes, aligned; entries from VDF_P_HDR */
    uint8_t *stale;               /* digest layers: one bit per entry needing a rehash */
    struct vdi_l2 *dirty_next;
};

struct vdi_l1 {
    uint64_t gen;
    uint8_t cur_slot;
    bool dirty;
};

#define VDI_DIR_SHIFT 9           /* L2 pointers are grouped 512 to a chunk */

struct vdi_flush;

struct vdi_layer {
    int refs;
    uint64_t lid;                 /* unique in the process (block cache keys) */
    struct vd_layer_cache *cache;
    struct vdi_layer *cache_next;
    char *path;
    int fd;
    bool direct;
    bool rdwr;
    bool failed;                  /* a metadata write failed: refuse further writes */

    /* header, decoded */
    uint8_t hdr[VDF_PAGE];        /* current header image */
    uint8_t hdr_slot;
    uint64_t hdr_gen;
    vd_uuid uuid, parent_uuid;
    char hint[VD_PARENT_HINT_MAX + 1];
    uint32_t flags;
    uint64_t size;
    uint64_t ctime;
    enum vd_digest digest;

    /* geometry */
    uint32_t block_shift, block_size, subs, entry_size, epp;
    uint64_t nblocks, n_l2, n_l1;
    uint64_t l1_off;
    uint64_t data_start;          /* first byte after the L1 table */
    uint64_t file_end;            /* next allocation */

    struct vdi_l2 ***dir;         /* [n_l2 >> 9][512] */
    uint64_t ndir;
    struct vdi_l1 *l1;            /* [n_l1] */
    struct vdi_l2 *dirty_head;
    uint64_t n_dirty;

    /* flushing (only the writable top) */
    struct vdi_flush *flush_cur;
    struct vdi_flush *flush_wait;
};

/* Opening and loading.  report (may be NULL) receives each problem found;
 * strict: the first problem fails the load with -EUCLEAN. */
struct vdi_load_report {
    void (*fn)(void *opaque, const char *msg);
    void *opaque;
    uint64_t problems;
};
int vdi_layer_open(const char *path, bool rdwr, bool buffered,
                   struct vdi_layer **out);
/* Opens for writing even if frozen: for merges that keep what every chain
 * through the layer reads. */
int vdi_layer_open_force(const char *path, bool buffered, struct vdi_layer **out);
/* Grows the virtual size in the header; -ENOSPC if the L1 table is too
 * small for the new size. */
int vdi_layer_grow(struct vdi_layer *l, uint64_t size);
int vdi_layer_load(struct vdi_layer *l, struct vdi_load_report *rep);
void vdi_layer_put(struct vdi_layer *l);
int vdi_layer_write_header(struct vdi_layer *l, uint32_t flags);
void vdi_layer_fill_info(const struct vdi_layer *l, struct vd_layer_info *info);
/* vd_layer_info from the header alone (allocated and zeroed are 0). */
int vdi_layer_header_info(const char *path, struct vd_layer_info *info);

static inline struct vdi_l2 *vdi_l2_get(const struct vdi_layer *l, uint64_t page)
{
    struct vdi_l2 **c = l->dir[page >> VDI_DIR_SHIFT];
    return c ? c[page & ((1u << VDI_DIR_SHIFT) - 1)] : NULL;
}
struct vdi_l2 *vdi_l2_get_or_new(struct vdi_layer *l, uint64_t page);
void vdi_l2_mark_dirty(struct vdi_layer *l, struct vdi_l2 *p);

static inline uint8_t *vdi_entry(const struct vdi_layer *l, const struct vdi_l2 *p,
                                 uint64_t idx)
{
    return p->img + VDF_P_HDR + idx * l->entry_size;
}
static inline unsigned vdi_sub_state(const uint8_t *e, unsigned sub)
{
    return (e[VDF_E_BITMAP + sub / 4] >> ((sub % 4) * 2)) & 3u;
}
static inline void vdi_set_sub_state(uint8_t *e, unsigned sub, unsigned st)
{
    uint8_t *b = &e[VDF_E_BITMAP + sub / 4];
    unsigned sh = (sub % 4) * 2;
    *b = (uint8_t)((*b & ~(3u << sh)) | (st << sh));
}

/* State of sub-block sub of block blk in layer l, and the file offset of
 * the sub-block when present (0 otherwise). */
static inline unsigned vdi_lookup(const struct vdi_layer *l, uint64_t blk,
                                  unsigned sub, uint64_t *file_off)
{
    *file_off = 0;
    if (blk >= l->nblocks)
        return VDF_SUB_ABSENT;
    const struct vdi_l2 *p = vdi_l2_get(l, blk / l->epp);
    if (!p)
        return VDF_SUB_ABSENT;
    const uint8_t *e = vdi_entry(l, p, blk % l->epp);
    unsigned st = vdi_sub_state(e, sub);
    if (st == VDF_SUB_PRESENT)
        *file_off = vdf_le64(e + VDF_E_OFFSET) + (uint64_t)sub * VD_SUBBLOCK_SIZE;
    return st;
}

/* Flushing the index (flush.c). cb runs from vd_ctx_poll. */
void vdi_layer_flush(struct vd_ctx *ctx, struct vdi_layer *l,
                     void (*cb)(void *opaque, int res), void *opaque);
/* Synchronous flush for close/push (no libaio: plain system calls). */
int vdi_layer_flush_sync(struct vdi_layer *l);

/* Digests (digest.c). */
int vdi_block_digest(struct vdi_layer *l, const uint8_t *entry, uint8_t out[32]);
int vdi_rehash_stale(struct vdi_layer *l);

/* ---- chains (chain.c) ---- */

/* Owner of each sub-block among the frozen layers below the top, built
 * lazily 1024 blocks at a time: reads do not walk the chain per request. */
#define VDI_BM_SHIFT 10
struct vdi_bmchunk {
    uint32_t v[1u << VDI_BM_SHIFT];   /* owner depth, or VDI_BM_MIXED | index */
    uint16_t *mixed;                  /* [nmixed][subs] owner depths */
    uint32_t nmixed, cap;
};
#define VDI_BM_MIXED 0x80000000u

struct vdi_req;

struct vd_chain {
    struct vd_ctx *ctx;
    struct vd_layer_cache *cache;
    struct vdi_layer **layers;        /* [0] top ... [n-1] base */
    unsigned n;
    bool rdwr;
    bool buffered;
    uint64_t size;
    uint32_t block_size, block_shift, subs;
    struct vdi_bmchunk **bm;          /* below map, [nbm] */
    uint64_t nbm;
    struct vdi_req *writes;           /* write-like requests in flight */
    struct vdi_req *blocked_head, *blocked_tail;  /* waiting for an overlap */
    unsigned inflight;
    bool unblocking, unblock_again;
    uint32_t pushed_flags;            /* old top's flags before the last push */
    /* Called as each write-like request completes (commit.c tracks what
     * changed while it copies). */
    void (*write_hook)(void *opaque, uint64_t off, uint64_t len);
    void *write_hook_opaque;
    /* relaxed atomics, for vd_chain_read_stats */
    uint64_t frozen_read_bytes, cache_hit_bytes;
    /* Held until the chain closes (commit.c, a switch cut short). */
    struct vdi_layer *pinned;
    int pinned_fd;
};

/* Waits for every request in flight on the chain and the top's flush. */
void vdi_chain_drain(struct vd_chain *c);

/* vd_chain_push with the new layer's UUID (NULL: a random one). */
int vdi_chain_push(struct vd_chain *c, const char *new_top_path, const vd_uuid *uuid);
/* Undoes the last vdi_chain_push: the new top is closed and removed, the
 * old one is writable again.  Only before anything was written. */
int vdi_chain_unpush(struct vd_chain *c);

/* A chain of the single layer at path, without its parents: read-only, or
 * writable even if frozen (rdwr). */
int vdi_chain_open_single(struct vd_ctx *ctx, const char *path, bool rdwr,
                          struct vd_chain **out);

/* Owner depth (>= 2) of a sub-block below the top, 0 if none. */
unsigned vdi_below_owner(struct vd_chain *c, uint64_t blk, unsigned sub);
void vdi_below_reset(struct vd_chain *c);

struct vd_layer_cache {
    struct vdi_layer *head;
    unsigned users;
    struct vdi_bcache *blocks;    /* NULL: frozen layers are read directly */
    uint64_t frozen_read_bytes;   /* atomic: bytes read from frozen layers' files */
};

/* ---- the block cache of frozen layers (bcache.c) ---- */
struct vdi_bcache;
int vdi_bcache_new(uint64_t bytes, struct vdi_bcache **out);
void vdi_bcache_free(struct vdi_bcache *bc);
/* Reads len bytes at offset off of the frozen layer lid (file fd) into
 * dst, within one chunk: 0 when done now, 1 when done(opaque, err) will
 * run later from vd_ctx_poll(ctx), < 0 on error.  *phys grows by the
 * bytes read from the file. */
int vdi_bcache_read(struct vdi_bcache *bc, struct vd_ctx *ctx, uint64_t lid, int fd,
                    uint8_t *dst, uint64_t off, uint32_t len,
                    void (*done)(void *opaque, int err), void *opaque, uint64_t *phys);
void vdi_bcache_stats(struct vdi_bcache *bc, struct vd_layer_cache_stats *s);
#define VDI_BC_CHUNK (1u << 16)

#endif
