/*
 * store.h - the store's internals: the LMDB catalog, the journal of
 * multi-step operations, and the helpers the operations share.
 *
 * Catalog databases (values are JSON objects, keys strings):
 *   volumes    NAME          {"top": UUID, "ctime": T, "template": TPL, "tver": N}
 *   layers     UUID          {"parent": UUID|"", "refs": N}
 *   snapshots  VOL/SNAP      {"layer": UUID, "ctime": T}
 *   templates  NAME          {"ctime": T, "next": N,
 *                             "versions": [{"v": N, "layer": UUID, "ctime": T}]}
 *   journal    ID (%016x)    {"op": ..., operation-specific fields}
 *   pools      NAME          {"template": TPL, "version": N, "size": N, "spares": N,
 *                             "mode": "ephemeral"|"persistent", "ctime": T, "next": N,
 *                             "clones": {VOL: {"v": N, "state": S, "since": T,
 *                                              "user": U, "holder": H}}}  (pool.c)
 *   access     NAME|pool/P   {"rules": [{"identity": ID, "access": "read-write"|
 *                                        "read-only"}, ...]}  (access.c; no record: no rules)
 *   meta       "format"      {"version": 1}
 *
 * A layer's refs count its children, the volumes whose top it is, the
 * snapshots and template versions that name it.  A layer whose count
 * drops to zero is removed with its file.  The layer file of UUID U is
 * STORE/layers/U.vdk; the library checks every parent's UUID on open.
 *
 * Operations that touch files record what they are about to do in the
 * journal in one transaction, do the file work, then apply their catalog
 * changes and delete the journal entry in a second transaction.  On open,
 * vd_store_open finishes or undoes each entry left behind (recover.c).
 */
#ifndef VD_STORE_H
#define VD_STORE_H

#include <jansson.h>
#include <lmdb.h>

#include "vd-internal.h"

struct vd_store {
    char *path;
    char *layers_dir;
    MDB_env *env;
    MDB_dbi db_vol, db_lay, db_snap, db_tpl, db_jnl, db_meta, db_pool, db_acc;
    int lock_fd;          /* STORE/lock: serializes changing operations */
    struct vd_ctx *ctx;   /* for the store's own copies; made on first use */
    int lock_depth;
};

/* ---- catalog.c ---- */
int cat_txn(struct vd_store *st, bool write, MDB_txn **txn);
int cat_commit(MDB_txn *txn);
/* Returns 0 with a new reference in *out, -ENOENT, or another error. */
int cat_get(MDB_txn *txn, MDB_dbi db, const char *key, json_t **out);
int cat_put(MDB_txn *txn, MDB_dbi db, const char *key, json_t *val);
int cat_del(MDB_txn *txn, MDB_dbi db, const char *key);
/* Calls fn for each record whose key starts with prefix ("" = all); fn
 * returns 0 to go on, 1 to stop, or a negative errno. */
typedef int (*cat_each_fn)(void *opaque, const char *key, json_t *val);
int cat_each(MDB_txn *txn, MDB_dbi db, const char *prefix, cat_each_fn fn, void *opaque);

/* Makes room for element n of the malloc'ed array *arrayp (capacity *cap,
 * elements of elem bytes), doubling it.  0 or -ENOMEM. */
int st_grow(void *arrayp, size_t *cap, size_t n, size_t elem);

const char *js(json_t *o, const char *key);         /* "" when missing */
uint64_t ju(json_t *o, const char *key);            /* 0 when missing */

/* Layer records. */
int lay_new(MDB_txn *txn, struct vd_store *st, const char *uuid, const char *parent,
            unsigned refs);
int lay_ref(MDB_txn *txn, struct vd_store *st, const char *uuid, int delta,
            json_t *unlink_list);
int lay_parent(MDB_txn *txn, struct vd_store *st, const char *uuid, char out[37]);
/* Children of a layer: count, and the UUID of one of them. */
int lay_children(MDB_txn *txn, struct vd_store *st, const char *uuid, char one[37]);

/* Journal. */
int jnl_add(MDB_txn *txn, struct vd_store *st, json_t *entry, char id[17]);
int jnl_del(MDB_txn *txn, struct vd_store *st, const char *id);

/* ---- access.c ---- */
/* Forgets object's access rules (in the transaction that removes it). */
int acc_drop(MDB_txn *txn, struct vd_store *st, const char *object);

/* ---- volume.c, snapshot.c, template.c ---- */
int st_get_volume(MDB_txn *txn, struct vd_store *st, const char *name, json_t **out);
/* 0 if no volume or template is named name, else -EEXIST (with the message). */
int st_name_free(MDB_txn *txn, struct vd_store *st, const char *name);
int st_template_layer(MDB_txn *txn, struct vd_store *st, const char *tpl, uint32_t ver,
                      char layer[37], uint32_t *ver_out);
/* Runs inside the transaction that makes an operation's catalog changes,
 * so that a caller's own records change with them (pool.c). */
typedef int (*st_txn_hook)(MDB_txn *txn, void *opaque);
/* vd_volume_remove and vd_clone, with a hook (NULL: none). */
int st_volume_remove(struct vd_store *st, const char *name, st_txn_hook hook, void *opaque);
int st_clone(struct vd_store *st, const char *tpl, uint32_t version, const char *vol,
             unsigned flags, vd_progress_fn progress, void *opaque, st_txn_hook hook,
             void *hook_opaque);
/* The snapshot record of vol/snap, with the volume's record; key gets
 * "VOL/SNAP". */
int st_get_snap(MDB_txn *txn, struct vd_store *st, const char *vol, const char *snap,
                json_t **v, json_t **s, char key[2 * VD_NAME_MAX + 2]);
/* The child of layer on the path from top down (child "" when layer is
 * not on it). */
int st_path_child(MDB_txn *txn, struct vd_store *st, const char *top, const char *layer,
                  char child[37]);

/* ---- store.c ---- */
int st_lock(struct vd_store *st);
/* The store's I/O context (NULL on failure, with the message set). */
struct vd_ctx *st_ctx(struct vd_store *st);
/* 0, or -EBUSY while another process runs an operation. */
int st_trylock(struct vd_store *st);
void st_unlock(struct vd_store *st);
int st_check_name(const char *what, const char *name);
void st_layer_path(const struct vd_store *st, const char *uuid, char *out, size_t len);
int st_new_uuid(char out[37]);
/* Takes the write lock of a layer file (the volume's top) for the time
 * of an operation: -EBUSY naming the process that has it open. */
int st_hold_layer(struct vd_store *st, const char *uuid, const char *vol,
                  struct vdi_layer **out);
/* Unlinks the files named in list (UUIDs), ignoring missing ones. */
void st_unlink_layers(struct vd_store *st, json_t *list);
/* Finishes an operation that collected layer files to unlink: records them
 * in the journal in txn, commits, unlinks, then drops the entry. */
int st_commit_and_unlink(struct vd_store *st, MDB_txn *txn, json_t *unlink_list);
int st_resolve(void *opaque, const vd_uuid *parent, const char *hint,
               const char *child_path, char *out, size_t outlen);

/* ---- merge.c ---- */
/* Copies the sub-block states and data of layer src into layer dst (by
 * path; dst is written even if frozen: callers only do this where the
 * content seen through the chain does not change).  only_where_absent:
 * skip sub-blocks dst already holds. */
int mg_copy_layer(struct vd_ctx *ctx, const char *src, const char *dst,
                  bool only_where_absent, vd_progress_fn progress, void *opaque);
/* Copies into the top of the chain at path everything it reads from below. */
int mg_pull_all(struct vd_store *st, const char *path, vd_progress_fn progress,
                void *opaque);
/* Rewrites a layer's header: new UUID (NULL: keep), parent (NULL: keep; a
 * null UUID: none), frozen (-1 keep), size (0 keep). */
int mg_rewrite_header(const char *path, const vd_uuid *uuid, const vd_uuid *parent,
                      const char *hint, int frozen, uint64_t size);
/* Merges the unnamed layer uuid with its only child if it has one and no
 * other reference; repeats up the chain. */
int mg_simplify(struct vd_store *st, const char *uuid);
/* Continues a merge recorded in the journal. */
int mg_resume(struct vd_store *st, const char *id, json_t *j, bool c_held);
/* Records a merge of l with its only child c in the journal, in txn. */
int mg_plan(struct vd_store *st, MDB_txn *txn, const char *l, const char *c,
            bool prefer_down, char id[17]);
/* The catalog side of a merge whose file work is done: c's parent becomes
 * parent, l's record and journal entry id go. */
int mg_finish(struct vd_store *st, const char *id, const char *l, const char *c,
              const char *parent);
/* True when some open file description holds the layer's write lock (in
 * this process too). */
bool mg_layer_busy(struct vd_store *st, const char *uuid);

/* ---- commit.c ---- */
/* Recovery of an online commit left behind: 0 (undone), -EBUSY while the
 * process running it is alive. */
int cm_recover(struct vd_store *st, json_t *j);

/* After a failed file step of an operation whose journal entry is
 * committed: undo it now (the recovery of that entry), keeping err's
 * message. */
void st_undo(struct vd_store *st, int err);

/* ---- recover.c ---- */
int st_recover(struct vd_store *st);

#endif
