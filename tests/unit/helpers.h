/*
 * helpers.h - shared helpers of libvdisk's cmocka unit tests.
 *
 * Every tests/unit/test-*.c is linked with helpers.c.  The helpers assert
 * with cmocka (a failing helper fails the test that called it), so tests
 * read as a list of expectations.
 *
 * Data written by the tests is a pattern that depends on the virtual
 * offset of each byte and on a seed: the same (offset, seed) always gives
 * the same byte, so a read can be checked without keeping the buffer that
 * was written, and a misplaced block (right data, wrong offset) is caught.
 */
#ifndef VD_TEST_HELPERS_H
#define VD_TEST_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "vdisk.h"

#define KiB (1024ull)
#define MiB (1024ull * KiB)

/* A test's environment: a fresh temporary directory and an I/O context. */
struct tenv {
    char dir[4096];
    struct vd_ctx *ctx;
};

/* cmocka setup/teardown: *state becomes a struct tenv *.  The teardown
 * frees the context and removes the directory with everything in it. */
int tenv_setup(void **state);
int tenv_teardown(void **state);

/* "dir/name" in one of 16 rotating static buffers (enough for the few
 * paths a test holds at once). */
const char *tpath(const struct tenv *e, const char *name);

/* Removes a file or a directory tree; missing is fine. */
void rm_rf(const char *path);

/* ------------------------------------------------------------------ */
/* Layers and chains                                                   */

/* Creates a layer and asserts success.  parent may be NULL. */
void make_layer(const char *path, uint64_t size, uint32_t block_size,
                enum vd_digest digest, const char *parent, vd_uuid *uuid);
/* Opens a chain with flags (VD_OPEN_*) and asserts success. */
struct vd_chain *open_chain(struct vd_ctx *ctx, const char *path,
                            unsigned flags);
/* Closes a chain and asserts that close returned 0. */
void close_chain(struct vd_chain *chain);
/* vd_layer_info, asserting success. */
struct vd_layer_info layer_info(const char *path);
/* vd_chain_layer_info, asserting success. */
struct vd_layer_info chain_info(const struct vd_chain *chain, unsigned depth);

/* ------------------------------------------------------------------ */
/* Data patterns                                                       */

uint8_t pattern_byte(uint64_t offset, uint32_t seed);
void fill_pattern(void *buf, size_t len, uint64_t offset, uint32_t seed);
/* Fail the test naming the first differing byte. */
void check_pattern(const void *buf, size_t len, uint64_t offset, uint32_t seed);
void check_zero(const void *buf, size_t len, uint64_t offset);

/* Synchronous I/O through the chain, asserting success. */
void write_pattern(struct vd_chain *chain, uint64_t offset, size_t len,
                   uint32_t seed);
void expect_pattern(struct vd_chain *chain, uint64_t offset, size_t len,
                    uint32_t seed);
void expect_zero(struct vd_chain *chain, uint64_t offset, size_t len);

/* ------------------------------------------------------------------ */
/* An in-memory model of a virtual disk                                */

struct model {
    uint8_t *data;
    uint64_t size;
};

void model_init(struct model *m, uint64_t size);
void model_free(struct model *m);
/* Writes the pattern (offset, seed) to the chain and the model. */
void model_write(struct model *m, struct vd_chain *chain, uint64_t offset,
                 size_t len, uint32_t seed);
/* vd_zero / vd_discard on the chain; the model range becomes zero. */
void model_zero(struct model *m, struct vd_chain *chain, uint64_t offset,
                uint64_t len);
void model_discard(struct model *m, struct vd_chain *chain, uint64_t offset,
                   uint64_t len);
/* Reads the whole chain (which must have the model's size or more; the
 * bytes beyond the model must read zero) and compares. */
void model_check(const struct model *m, struct vd_chain *chain);

/* ------------------------------------------------------------------ */
/* Misc                                                                */

uint64_t rng_next(uint64_t *state);     /* splitmix64 */
/* Uniform in [0, n). */
uint64_t rng_below(uint64_t *state, uint64_t n);

void write_file(const char *path, const void *data, size_t len);
/* The whole file; *len gets its size.  free() the result. */
uint8_t *read_whole_file(const char *path, size_t *len);
/* Writes len bytes at off into an existing file. */
void patch_file(const char *path, uint64_t off, const void *data, size_t len);
bool file_exists(const char *path);
/* st_blocks * 512: bytes really allocated to the file. */
uint64_t file_allocated_bytes(const char *path);
/* True when both paths name the same file (same device and inode). */
bool same_file(const char *a, const char *b);

/* Collects the messages of a vd_report_fn. */
#define MSGS_MAX 64
struct msgs {
    unsigned n;         /* calls, including messages not kept */
    char *m[MSGS_MAX];
};
void msgs_report(void *opaque, const char *msg);
void msgs_free(struct msgs *ms);

/* Asserts vd_errmsg() is a non-empty string (after a failing call). */
#define assert_errmsg() \
    do { \
        const char *m_ = vd_errmsg(); \
        assert_non_null(m_); \
        if (m_[0] == '\0') \
            fail_msg("vd_errmsg() is empty after a failure"); \
    } while (0)

/* Asserts that rc is one of two negative errnos. */
#define assert_rc_either(rc, a, b) \
    do { \
        int r_ = (rc); \
        if (r_ != (a) && r_ != (b)) \
            fail_msg("%s returned %d (%s), expected %s or %s", #rc, r_, \
                     r_ < 0 ? strerror(-r_) : "not an error", #a, #b); \
    } while (0)

/* Asserts an exact return value and prints the error message if not. */
#define assert_rc(rc, want) \
    do { \
        int r_ = (rc); \
        if (r_ != (want)) \
            fail_msg("%s returned %d (%s), expected %d; vd_errmsg: %s", #rc, \
                     r_, r_ < 0 ? strerror(-r_) : "", (want), vd_errmsg()); \
    } while (0)

#endif
