/*
 * cli.h - private interface shared by the files of the vdisk command.
 *
 * One file per concern: main.c (top-level dispatch), dispatch.c (command
 * tables), img.c (the "img" group), one img-*.c per subcommand, source.c
 * (reading raw or vdk images as one thing), copy.c (the sparse copy
 * pipeline of convert, import and export), util.c (errors, sizes, the
 * process's vd_ctx) and json.c (string escaping for hand-written JSON
 * output).  The store-level commands: store.c (choosing and opening the
 * store, helpers they share), vol.c (create, rm, resize), vol-info.c (list,
 * info), vol-check.c (check), vol-map.c (map), import-export.c, io.c (the
 * qemu-io lookalike), snapshot.c, template.c, clone.c (clone, flatten),
 * df.c and access.c (export allow|deny|rules: who may open what over NBD).
 */
#ifndef VDISK_CLI_H
#define VDISK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "formats.h"
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
int cmd_snapshot(int argc, char **argv);
int cmd_template(int argc, char **argv);
int vol_create(int argc, char **argv);
int vol_list(int argc, char **argv);
int vol_info(int argc, char **argv);
int vol_rm(int argc, char **argv);
int vol_resize(int argc, char **argv);
int vol_check(int argc, char **argv);
int vol_map(int argc, char **argv);
int vol_import(int argc, char **argv);
int vol_export(int argc, char **argv);
/* access.c: "export allow|deny|rules", else vol_export. */
int cmd_export(int argc, char **argv);
int vol_io(int argc, char **argv);
int vol_clone(int argc, char **argv);
int vol_flatten(int argc, char **argv);
int store_df(int argc, char **argv);
int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_map(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_compare(int argc, char **argv);

/* ---- dispatch.c: command tables ---- */

struct cli_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *synopsis;     /* after "vdisk GROUP " */
};

/* Runs the command of the table named by argv[0] with argv[0] replaced by
 * "vdisk GROUP NAME" (getopt names the program by it) and getopt reset.
 * group is "" at the top level.  An unknown name is a usage error. */
int cli_dispatch(const char *group, const struct cli_cmd *cmds, size_t n,
                 int argc, char **argv);
/* A group command ("vdisk snapshot ..."): takes --store and --help, then
 * runs the subcommand of cmds named by the next argument. */
int cli_group(const char *group, void (*usage)(FILE *), const struct cli_cmd *cmds,
              size_t n, int argc, char **argv);

/* ---- util.c ---- */

/* "vdisk: <what>: <message>" on stderr.  cli_err_lib uses vd_errmsg() when
 * the library set one, else strerror(-err); call it right after the
 * failing library call.  cli_err_fmt is the same for formats/
 * (fmt_errmsg()). */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_err_errno(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_err_fmt(int err, const char *fmt, ...)
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

/* ---- source.c: reading an image of any format through formats/ ---- */

/* The first 8 bytes of every vdk layer file. */
#define VDK_MAGIC "VDISKLYR"
#define VDK_MAGIC_LEN 8

/* Checks a format name the user gave ("raw", "vdk", "qcow2", "vmdk"):
 * 0 and *out set to formats/'s own string, or -EINVAL. */
int img_parse_format(const char *s, const char **out);

/* How to open an input image: its format (NULL: probe), and the backing
 * file the user names for it (an image that names one is refused
 * without). */
struct img_in {
    const char *format;
    const char *backing;
    const char *backing_format;
};

struct img_src {
    struct fmt_image *img;
    const char *path;       /* for messages */
    uint64_t size;          /* virtual size, a multiple of 512 */
    struct vd_chain *chain; /* vdk: read with libvdisk's asynchronous I/O */
};

/* Opens path read-only (in may be NULL: probe, no backing).  Returns 0,
 * or a negative errno after printing an error. */
int img_src_open(struct img_src *src, const char *path, const struct img_in *in);
/* Closes what img_src_open opened.  Safe on a zeroed or closed source. */
void img_src_close(struct img_src *src);

/* Describes [off, off + len) as fmt_status does: with deep, through the
 * backing file (FMT_DATA may hold data, the other kinds read as zeroes);
 * without, the source's own (FMT_UNALLOC: it holds nothing there, what
 * reads there comes from its backing file).  Returns 0 or a negative
 * errno after printing an error. */
int img_src_status(struct img_src *src, uint64_t off, uint64_t len, bool deep,
                   uint64_t *pnum, enum fmt_kind *kind);

/* Reads len bytes at off (multiples of 512, inside the image).  Returns 0
 * or a negative errno after printing an error. */
int img_src_read(struct img_src *src, void *buf, uint64_t off, size_t len);

/* Makes src read the open chain, which it then owns (img_src_close closes
 * it; on failure it is closed already); name is used in messages.
 * own_depth as in fmt_open_chain. */
int img_src_use_chain(struct img_src *src, struct vd_chain *chain,
                      const char *name, unsigned own_depth);

/* ---- img-opts.c: options of the commands that read and write images ---- */

/* getopt codes of the long options img_opt handles. */
enum {
    OPT_BLOCK_SIZE = 0x6900,
    OPT_DIGEST,
    OPT_BACKING,
    OPT_BACKING_FORMAT,
};
#define IMG_IN_OPTIONS \
    { "backing", required_argument, NULL, OPT_BACKING }, \
    { "backing-format", required_argument, NULL, OPT_BACKING_FORMAT }
#define IMG_VDK_OPTIONS \
    { "block-size", required_argument, NULL, OPT_BLOCK_SIZE }, \
    { "digest", required_argument, NULL, OPT_DIGEST }

struct img_opts {
    struct img_in in;           /* -f, --backing, --backing-format */
    const char *out_format;     /* -O */
    struct fmt_create_opts co;  /* -o, --block-size, --digest */
    bool vdk_opts;              /* --block-size or --digest given */
};

/* Handles option ch of cmd if it is one of these (-f, -O, -o and the long
 * options above): 1 if handled, 0 if not one of them, -1 after a usage
 * error was printed (return EXIT_USAGE then). */
int img_opt(const char *cmd, int ch, char *arg, struct img_opts *io);
/* Checks the options fit together and the output format: 0, or -1 after
 * a usage error. */
int img_opts_check(const char *cmd, const struct img_opts *io);

/* ---- copy.c: the sparse copy pipeline ---- */

/* fmt_create, fmt_create_chain and fmt_close, with the error printed. */
int copy_out_create(const char *path, const char *format,
                    const struct fmt_create_opts *o, struct fmt_image **out);
int copy_out_chain(struct vd_chain *chain, const char *name, struct fmt_image **out);
int copy_out_close(struct fmt_image *out);

/* Copies src into out, a new image at least as large: only data is read
 * and only granules that are not zero are written (an overlay gets the
 * source's own runs whole).  -p style progress when progress is set.
 * Returns 0 or a negative errno after printing an error; out is still
 * open either way (copy_out_close or fmt_discard it). */
int copy_image(struct img_src *src, struct fmt_image *out, bool progress);

/* ---- img-map.c ---- */

/* Prints the extents of chain as "img map" does (what names it in
 * messages).  Returns 0 or a negative errno after printing an error. */
int map_chain(struct vd_chain *chain, const char *what, enum cli_output output);

/* ---- store.c: the store the commands work on ---- */

/* The value of getopt's "--store DIR" option, in every store command. */
#define OPT_STORE 0x7300
#define CLI_STORE_OPTION { "store", required_argument, NULL, OPT_STORE }

/* Records --store DIR (the last one given wins). */
void cli_set_store(const char *dir);
/* The --store given before the command name, or NULL. */
const char *cli_get_store(void);

/* Parses the options of a command that takes only --store, --help and,
 * when output is not NULL, --output human|json.  Returns -1 to go on
 * (optind is at the first operand), else the exit status to return (help
 * shown, or a usage error reported). */
int cli_common_opts(int argc, char **argv, const char *cmd,
                    void (*usage)(FILE *f), enum cli_output *output);

/* Opens the store chosen by --store, else $VDISK_STORE, else
 * vd_store_default_path().  flags: VD_STORE_CREATE for commands that
 * create things; without it a missing store is an error that says so.
 * Returns 0 or a negative errno after printing an error. */
int cli_store_open(unsigned flags, struct vd_store **out);

/* "vdisk: <message>" for a failed store call.  The library's messages name
 * the volume, snapshot or template they are about; when the message does
 * not contain name, "<what>: " (printf-formatted) goes first. */
void cli_err_store(int err, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* control.c: runs command on the daemon serving the store (its control
 * socket); 0 with its result in *ret (a reference), or a negative errno
 * with the daemon's message in err (-ENOENT/-ECONNREFUSED: no daemon). */
struct json_t;
int cli_control_call(struct vd_store *st, const char *command, struct json_t *args,
                     struct json_t **ret, char *err, size_t errlen);
/* cli_control_call for commands that need the daemon: its errors, and the
 * lack of a daemon, are said on stderr. */
int cli_control_ask(struct vd_store *st, const char *command, struct json_t *args,
                    struct json_t **ret);
/* The same over one connection, which also receives the daemon's events. */
struct cli_ctl;
int cli_control_open(struct vd_store *st, struct cli_ctl **out, char *err, size_t errlen);
int cli_control_cmd(struct cli_ctl *c, const char *command, struct json_t *args,
                    struct json_t **ret, char *err, size_t errlen);
/* The next event ({"event": NAME, "data": {...}}, a reference): 0, -EINTR
 * when a signal interrupted the wait, -EIO when the connection ended. */
int cli_control_event(struct cli_ctl *c, struct json_t **ev, char *err, size_t errlen);
void cli_control_close(struct cli_ctl *c);

/* As cli_err_store for a failed call on the volume name, but when name is
 * a template and the library's message does not say so, says that,
 * followed by hint when not NULL ("use 'vdisk template rm'"). */
void cli_err_volume(int err, struct vd_store *st, const char *name,
                    const char *hint, const char *what);

/* A copy of the library's message for err (cli_lib_msg), to keep it across
 * other library calls; NULL when out of memory.  The caller frees it. */
char *cli_lib_msg_dup(int err);

/* True if name follows the rule of vdisk.h for volume, template and
 * snapshot names (used to refuse early, before work that would be lost). */
bool cli_name_valid(const char *name);

/* Local time as ISO 8601 with the UTC offset: "2024-05-01T13:02:03+02:00". */
const char *cli_iso_time(uint64_t t, char *buf, size_t len);

/* Writes "create-time": SECONDS,<sep>"created": "ISO 8601 local time"
 * (no comma after it); sep is " " or a newline and indentation. */
void json_put_times(FILE *f, uint64_t t, const char *sep);

/* Adapts the library's progress callback (vd_progress_fn) to -p output. */
struct cli_lib_progress {
    bool wanted;
    bool started;
    struct cli_progress p;
};
void cli_lib_progress(void *opaque, uint64_t done, uint64_t total);
/* Ends the line after success; after a failure leaves the line so that
 * the message follows on a new one. */
void cli_lib_progress_end(struct cli_lib_progress *lp, bool ok);

/* Parses "TPL" or "TPL@N" (N >= 1) into tpl (give VD_NAME_MAX + 2 bytes: a
 * longer name is cut to one the library refuses as too long) and *version
 * (0 when absent).
 * Returns 0 or -EINVAL. */
int cli_parse_tpl_version(const char *s, char *tpl, size_t tpl_len,
                          uint32_t *version);

/* ---- import-export.c ---- */

/* Creates volume name in st with file's size (rounded up to 512) and
 * copies file's data into it; on failure removes the volume.  co gives the
 * block size and digest (may be NULL).  Returns 0 or a negative errno
 * after printing an error. */
int import_volume(struct vd_store *st, const char *file, const struct img_in *in,
                  const char *name, const struct vd_create_opts *co,
                  bool progress);

/* ---- findings.c: what both check commands share ---- */

/* Exit status of check commands (qemu-img's convention). */
enum {
    CHECK_CLEAN = 0,
    CHECK_ERROR = 1,
    CHECK_CORRUPT = 2,
    CHECK_LEAKS = 3,
};

/* The findings of a check: printed as they come (human output) or kept
 * for JSON. */
struct findings {
    bool print;
    char **msg;
    size_t n, cap;
    bool oom;
};
/* A vd_report_fn: opaque is a struct findings. */
void findings_report(void *opaque, const char *msg);
void findings_free(struct findings *fs);
/* CHECK_CLEAN, CHECK_CORRUPT or CHECK_LEAKS for a result. */
int check_status(const struct vd_check_result *r);

#endif /* VDISK_CLI_H */
