/*
 * img-opts.c - the options that say how to read an input image and how to
 * write an output image, shared by convert, import, export and template
 * create --import: -f, --backing, --backing-format on the way in; -O, -o
 * KEY=VALUE,..., --block-size, --digest on the way out.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"

/* cli_usage_error's message, and -1: these helpers are not the command. */
#define USAGE_ERROR(...) (cli_usage_error(__VA_ARGS__), -1)

/* -o KEY=VALUE[,KEY=VALUE...]: qemu-img's names where qemu-img has one.
 * The values point into arg (argv's own storage, which lives as long as
 * the process). */
static int parse_o(const char *cmd, char *arg, struct fmt_create_opts *co)
{
    char *save = NULL;

    for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *v = strchr(kv, '=');
        uint64_t n;

        if (!v || v == kv || !v[1])
            return USAGE_ERROR(cmd, "-o: expected KEY=VALUE, not '%s'", kv);
        *v++ = '\0';
        if (strcmp(kv, "subformat") == 0) {
            co->subformat = v;
        } else if (strcmp(kv, "cluster_size") == 0) {
            if (cli_parse_size(v, &n) < 0 || n == 0 || n > UINT32_MAX)
                return USAGE_ERROR(cmd, "-o: invalid cluster_size '%s'", v);
            co->cluster_size = (uint32_t)n;
        } else if (strcmp(kv, "backing_file") == 0) {
            co->backing_file = v;
        } else if (strcmp(kv, "backing_fmt") == 0) {
            co->backing_format = v;
        } else {
            return USAGE_ERROR(cmd, "-o: unknown option '%s' (subformat, "
                                   "cluster_size, backing_file, backing_fmt)", kv);
        }
    }
    return 0;
}

int img_opt(const char *cmd, int ch, char *arg, struct img_opts *io)
{
    enum vd_digest d;
    uint64_t v;

    switch (ch) {
    case 'f':
        if (img_parse_format(arg, &io->in.format) < 0)
            return USAGE_ERROR(cmd, "invalid format '%s' (raw, vdk, qcow2 or vmdk)",
                                   arg);
        return 1;
    case 'O':
        if (img_parse_format(arg, &io->out_format) < 0)
            return USAGE_ERROR(cmd, "invalid format '%s' (raw, vdk, qcow2 or vmdk)",
                                   arg);
        return 1;
    case 'o':
        return parse_o(cmd, arg, &io->co) < 0 ? -1 : 1;
    case OPT_BACKING:
        io->in.backing = arg;
        return 1;
    case OPT_BACKING_FORMAT:
        if (img_parse_format(arg, &io->in.backing_format) < 0)
            return USAGE_ERROR(cmd, "invalid format '%s' (raw, vdk, qcow2 or vmdk)",
                                   arg);
        return 1;
    case OPT_BLOCK_SIZE:
        if (cli_parse_size(arg, &v) < 0 || v == 0 || v > UINT32_MAX)
            return USAGE_ERROR(cmd, "invalid block size '%s'", arg);
        io->co.block_size = (uint32_t)v;
        io->vdk_opts = true;
        return 1;
    case OPT_DIGEST:
        if (cli_parse_digest(arg, &d) < 0)
            return USAGE_ERROR(cmd, "invalid digest '%s' (none or sha256)", arg);
        io->co.digest = (int)d;
        io->vdk_opts = true;
        return 1;
    default:
        return 0;
    }
}

int img_opts_check(const char *cmd, const struct img_opts *io)
{
    const struct fmt_create_opts *co = &io->co;
    const char *fmt = io->out_format;

    if (io->vdk_opts && fmt && strcmp(fmt, "vdk") != 0)
        return USAGE_ERROR(cmd, "--block-size and --digest are for vdk images");
    if ((co->subformat || co->cluster_size || co->backing_file || co->backing_format) &&
        fmt && strcmp(fmt, "vdk") == 0)
        return USAGE_ERROR(cmd, "-o is for qcow2 and vmdk images");
    if (io->in.backing_format && !io->in.backing)
        return USAGE_ERROR(cmd, "--backing-format needs --backing");
    if (co->backing_format && !co->backing_file)
        return USAGE_ERROR(cmd, "-o backing_fmt needs backing_file");
    return 0;
}
