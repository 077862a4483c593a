/*
 * util.c - error messages, size parsing and printing, the process's
 * libvdisk context, aligned buffers and progress output.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void verr(const char *detail, const char *fmt, va_list ap)
{
    fputs("vdisk: ", stderr);
    vfprintf(stderr, fmt, ap);
    if (detail)
        fprintf(stderr, ": %s", detail);
    fputc('\n', stderr);
}

void cli_err(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(NULL, fmt, ap);
    va_end(ap);
}

void cli_err_errno(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(strerror(err < 0 ? -err : err), fmt, ap);
    va_end(ap);
}

const char *cli_lib_msg(int err)
{
    const char *msg = vd_errmsg();

    if (msg && *msg)
        return msg;
    return strerror(err < 0 ? -err : err);
}

const char *cli_msg_after(const char *what, const char *msg)
{
    /* The library's messages often begin with the file's path, and so do
     * ours: say it once ("vdisk: a.vdk: cannot check: <why>"). */
    size_t first = strcspn(what, ":");

    if (first > 0 && strncmp(msg, what, first) == 0 &&
        strncmp(msg + first, ": ", 2) == 0)
        return msg + first + 2;
    return msg;
}

static void err_with(const char *msg, const char *fmt, va_list ap)
{
    char what[1024];

    vsnprintf(what, sizeof(what), fmt, ap);
    fprintf(stderr, "vdisk: %s: %s\n", what, cli_msg_after(what, msg));
}

void cli_err_lib(int err, const char *fmt, ...)
{
    /* Read the message before anything else can touch it. */
    const char *msg = cli_lib_msg(err);
    va_list ap;

    va_start(ap, fmt);
    err_with(msg, fmt, ap);
    va_end(ap);
}

void cli_err_fmt(int err, const char *fmt, ...)
{
    const char *msg = fmt_errmsg();
    va_list ap;

    if (!msg || !*msg)
        msg = strerror(err < 0 ? -err : err);
    va_start(ap, fmt);
    err_with(msg, fmt, ap);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(NULL, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'vdisk %s --help' for more information.\n", cmd);
    return EXIT_USAGE;
}

int cli_usage_hint(const char *cmd)
{
    fprintf(stderr, "Try 'vdisk %s --help' for more information.\n", cmd);
    return EXIT_USAGE;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');

        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case 't': case 'T': shift = 40; p++; break;
    default: break;
    }
    /* "64K", "64KB" and "64KiB" all mean 65536; a bare "B" means bytes. */
    if (shift && *p == 'i')
        p++;
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p != '\0')
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = v << shift;
    return 0;
}

const char *cli_human_size(uint64_t n, char *buf, size_t len)
{
    static const char *const suffix[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    unsigned i = 0;

    /* Switch to the next unit once the integer part reaches 1000, as
     * qemu-img does, so that at most three digits are printed. */
    while (i < 6 && n >= (1000ull << (10 * i)))
        i++;
    if (i == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%0.3g %sB",
                 (double)n / (double)(1ull << (10 * i)), suffix[i]);
    return buf;
}

static struct vd_ctx *the_ctx;

struct vd_ctx *cli_ctx(void)
{
    int ret;

    if (the_ctx)
        return the_ctx;
    ret = vd_ctx_new(0, &the_ctx);
    if (ret < 0) {
        cli_err_lib(ret, "cannot create an I/O context");
        the_ctx = NULL;
    }
    return the_ctx;
}

void cli_ctx_free(void)
{
    if (the_ctx)
        vd_ctx_free(the_ctx);
    the_ctx = NULL;
}

int cli_parse_output(const char *s, enum cli_output *out)
{
    if (strcmp(s, "human") == 0)
        *out = OUTPUT_HUMAN;
    else if (strcmp(s, "json") == 0)
        *out = OUTPUT_JSON;
    else
        return -EINVAL;
    return 0;
}

int cli_parse_digest(const char *s, enum vd_digest *out)
{
    if (strcmp(s, "none") == 0)
        *out = VD_DIGEST_NONE;
    else if (strcmp(s, "sha256") == 0)
        *out = VD_DIGEST_SHA256;
    else
        return -EINVAL;
    return 0;
}

const char *cli_digest_name(enum vd_digest d)
{
    switch (d) {
    case VD_DIGEST_NONE: return "none";
    case VD_DIGEST_SHA256: return "sha256";
    default: return "unknown";
    }
}

void *cli_alloc_buf(size_t len)
{
    void *p = NULL;
    int ret = posix_memalign(&p, CLI_BUF_ALIGN, len);

    if (ret != 0) {
        cli_err_errno(ret, "cannot allocate %zu bytes", len);
        return NULL;
    }
    return p;
}

bool cli_is_zero(const void *p, size_t len)
{
    const unsigned char *b = p;

    /* The first byte is zero and every byte equals its successor. */
    if (len == 0)
        return true;
    return b[0] == 0 && memcmp(b, b + 1, len - 1) == 0;
}

void cli_progress_init(struct cli_progress *p, bool wanted, uint64_t total)
{
    p->on = wanted && isatty(STDERR_FILENO);
    p->total = total;
    p->last_permille = -1;
    cli_progress_update(p, 0);
}

void cli_progress_update(struct cli_progress *p, uint64_t done)
{
    int permille;

    if (!p->on)
        return;
    if (p->total == 0 || done >= p->total)
        permille = 1000;
    else
        permille = (int)((long double)done * 1000 / p->total);
    if (permille == p->last_permille)
        return;
    p->last_permille = permille;
    fprintf(stderr, "    (%d.%d/100%%)\r", permille / 10, permille % 10);
    fflush(stderr);
}

void cli_progress_end(struct cli_progress *p)
{
    if (!p->on)
        return;
    cli_progress_update(p, p->total);
    fputc('\n', stderr);
    p->on = false;
}
