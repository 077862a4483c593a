/*
 * cli.h - private interface shared by the files of the vdisk command.
 *
 * One file per concern: main.c (top-level dispatch), img.c (the "img"
 * group), one img-*.c per subcommand, source.c (reading raw or vdk images
 * as one thing), util.c (errors, sizes, the process's vd_ctx) and json.c
 * (string escaping for hand-written JSON output).
 */
#ifndef VDISK_CLI_H
#define VDISK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vdisk.h"

#ifndef VDISK_VERSION
#define VDISK_VERSION "0.1.0"
#endif

/* Exit codes of the command.  check and compare have their own conventions
 * (qemu-img's), defined next to them. */
enum {
    EXIT_OK = 0,
    EXIT_ERR = 1,
    EXIT_USAGE = 2,
};

#define ALIGN_DOWN(x, a) ((x) / (a) * (a))
#define ALIGN_UP(x, a)   (((x) + (a) - 1) / (a) * (a))
#define MIN(a, b)        ((a) < (b) ? (a) : (b))
#define MAX(a, b)        ((a) > (b) ? (a) : (b))

/* Buffers handed to the library are aligned for O_DIRECT so that it does
 * not have to bounce them. */
#define CLI_BUF_ALIGN 4096u

/* ---- subcommands (argv[0] is the subcommand's name) ---- */
int cmd_img(int argc, char **argv);
int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_map(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_compare(int argc, char **argv);

/* ---- util.c ---- */

/* "vdisk: <what>: <message>" on stderr.  cli_err_lib uses vd_errmsg() when
 * the library set one, else strerror(-err); call it right after the
 * failing library call. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_err_errno(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_err_lib(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The library's message for err, or strerror(-err) when there is none.
 * Valid until the next libvdisk call. */
const char *cli_lib_msg(int err);

/* msg without a leading "<first component of what>: ", so that a path
 * that both our prefix and the library's message carry is said once. */
const char *cli_msg_after(const char *what, const char *msg);

/* Prints "vdisk: <message>" and a hint to run "vdisk <cmd> --help" on
 * stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints only the hint (getopt already said what was wrong); returns
 * EXIT_USAGE. */
int cli_usage_hint(const char *cmd);

/* Parses a size: digits, then an optional suffix K, M, G, T (powers of
 * 1024, either case) and an optional B ("64K", "1GB", "512", "512B").
 * Returns 0 or -EINVAL (bad syntax) / -ERANGE (overflow). */
int cli_parse_size(const char *s, uint64_t *out);

/* Formats a byte count the way qemu-img does ("1 GiB", "1.5 MiB",
 * "512 B") into buf. */
const char *cli_human_size(uint64_t n, char *buf, size_t len);

/* The process's libvdisk context, created on first use (one per
 * process).  NULL after printing an error if it cannot be created. */
struct vd_ctx *cli_ctx(void);
void cli_ctx_free(void);

/* Output formats of info/check/map. */
enum cli_output { OUTPUT_HUMAN, OUTPUT_JSON };
/* Parses "human" or "json"; returns 0 or -EINVAL. */
int cli_parse_output(const char *s, enum cli_output *out);

/* Digest names: "none", "sha256".  Parsing returns 0 or -EINVAL. */
int cli_parse_digest(const char *s, enum vd_digest *out);
const char *cli_digest_name(enum vd_digest d);

/* posix_memalign wrapper: NULL (after an error message) on failure. */
void *cli_alloc_buf(size_t len);

/* True if len bytes at p are all zero. */
bool cli_is_zero(const void *p, size_t len);

/* Progress reporting on stderr, like qemu-img -p: does nothing unless
 * enabled and stderr is a terminal. */
struct cli_progress {
    bool on;
    uint64_t total;
    int last_permille;
};
void cli_progress_init(struct cli_progress *p, bool wanted, uint64_t total);
void cli_progress_update(struct cli_progress *p, uint64_t done);
void cli_progress_end(struct cli_progress *p);

/* ---- json.c ---- */

/* Writes s as a JSON string literal (quotes included): escapes quotes,
 * backslashes and control characters, and replaces bytes that are not
 * valid UTF-8 with U+FFFD so that the output is always valid JSON. */
void json_put_string(FILE *f, const char *s);
/* Writes "key": with the key escaped. */
void json_put_key(FILE *f, const char *key);

/* ---- source.c: reading an image, raw or vdk, through one interface ---- */

enum img_format { FMT_AUTO, FMT_RAW, FMT_VDK };

/* The first 8 bytes of every vdk layer file. */
#define VDK_MAGIC "VDISKLYR"
#define VDK_MAGIC_LEN 8

/* Parses "raw" or "vdk"; returns 0 or -EINVAL. */
int img_parse_format(const char *s, enum img_format *out);
const char *img_format_name(enum img_format fmt);
/* Detects the format of the file at path by its magic: 0 and *out set,
 * or a negative errno (an error message has been printed). */
int img_detect_format(const char *path, enum img_format *out);

struct img_src {
    enum img_format fmt;
    const char *path;
    uint64_t size;          /* virtual size, a multiple of 512 */
    /* raw */
    int fd;
    uint64_t file_size;     /* bytes in the file; size may be rounded up */
    bool seek_data;         /* SEEK_DATA/SEEK_HOLE work on this file */
    /* vdk */
    struct vd_chain *chain;
};

/* Opens path read-only as fmt (FMT_AUTO: detect).  Returns 0, or a
 * negative errno after printing an error. */
int img_src_open(struct img_src *src, const char *path, enum img_format fmt);
/* Closes what img_src_open opened.  Safe on a zeroed or closed source. */
void img_src_close(struct img_src *src);

/* Describes [off, off + len): sets *pnum to the length (> 0, <= len, a
 * multiple of 512) of the run at off that either surely reads as zeroes
 * (*zero = true) or may hold data (*zero = false).  off and len must be
 * multiples of 512 and inside the image.  Returns 0 or a negative errno
 * after printing an error. */
int img_src_status(struct img_src *src, uint64_t off, uint64_t len,
                   uint64_t *pnum, bool *zero);

/* Reads len bytes at off (multiples of 512, inside the image); the part of
 * a raw image past the end of its file reads as zeroes.  Returns 0 or a
 * negative errno after printing an error. */
int img_src_read(struct img_src *src, void *buf, uint64_t off, size_t len);

#endif /* VDISK_CLI_H */
