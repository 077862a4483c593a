/*
 * io.c - "vdisk io": a small qemu-io for volumes of the store.
 *
 *   vdisk io -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' VOL
 *
 * The commands are qemu-io's, with the same words and output lines:
 *   write [-P PATTERN] OFF LEN   fill with the byte PATTERN (default 0xcd)
 *   write -z OFF LEN             write zeroes (without writing data blocks)
 *   discard OFF LEN              TRIM: the range reads as zeroes afterwards
 *   read [-P PATTERN] OFF LEN    read; with -P, verify every byte
 *   flush
 * All commands are parsed before the volume is opened, so that a typo
 * changes nothing.  The volume is opened for writing only if a command
 * writes.  A failed verification stops with status 1.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMD "io"
#define IO_BUF (1u << 20)
#define MAX_OPS 256
#define MAX_WORDS 8

enum io_kind { IO_READ, IO_WRITE, IO_ZERO, IO_DISCARD, IO_FLUSH };

struct io_op {
    enum io_kind kind;
    int pattern;           /* byte to write or expect; -1: read without checking */
    uint64_t off, len;
};

static void usage(FILE *f)
{
    fputs("Usage: vdisk io -c COMMAND [-c COMMAND]... NAME[@SNAP]\n"
          "\n"
          "Runs qemu-io style commands on the volume NAME (writing) or on a\n"
          "snapshot NAME@SNAP or template (reading only), in order:\n"
          "\n"
          "  write [-P PATTERN] OFF LEN   write LEN bytes of the byte PATTERN\n"
          "                               (default 0xcd) at OFF\n"
          "  write -z OFF LEN             write zeroes\n"
          "  discard OFF LEN              discard (the range reads as zeroes)\n"
          "  read [-P PATTERN] OFF LEN    read; with -P check that every byte\n"
          "                               is PATTERN (status 1 if not)\n"
          "  flush                        make the writes durable\n"
          "\n"
          "OFF and LEN are multiples of 512, in bytes or with the suffixes K, M,\n"
          "G, T (powers of 1024), or in hexadecimal with 0x; PATTERN is a byte,\n"
          "decimal or 0x hexadecimal.\n"
          "\n"
          "  -c, --cmd COMMAND  a command to run (repeatable)\n"
          "      --store DIR    the store (default $VDISK_STORE)\n"
          "  -h, --help         show this help\n", f);
}

static int parse_num(const char *s, uint64_t *out)
{
    char *end;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        if (!s[2])
            return -EINVAL;
        errno = 0;
        *out = strtoull(s + 2, &end, 16);
        return errno || *end ? -EINVAL : 0;
    }
    return cli_parse_size(s, out);
}

/* Parses one command; returns 0 or a usage error's exit status. */
static int parse_op(const char *text, struct io_op *op)
{
    char buf[256], *w[MAX_WORDS], *save = NULL, *tok;
    unsigned n = 0, i;
    uint64_t v;

    if (strlen(text) >= sizeof(buf))
        return cli_usage_error(CMD, "command too long: '%.40s...'", text);
    strcpy(buf, text);
    for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (n == MAX_WORDS)
            return cli_usage_error(CMD, "too many words in '%s'", text);
        w[n++] = tok;
    }
    if (n == 0)
        return cli_usage_error(CMD, "empty command");

    memset(op, 0, sizeof(*op));
    op->pattern = -1;
    if (strcmp(w[0], "flush") == 0) {
        if (n != 1)
            return cli_usage_error(CMD, "'flush' takes no arguments");
        op->kind = IO_FLUSH;
        return 0;
    }
    if (strcmp(w[0], "write") == 0) {
        op->kind = IO_WRITE;
        op->pattern = 0xcd;           /* qemu-io's default */
    } else if (strcmp(w[0], "read") == 0) {
        op->kind = IO_READ;
    } else if (strcmp(w[0], "discard") == 0) {
        op->kind = IO_DISCARD;
    } else {
        return cli_usage_error(CMD, "unknown command '%s' (write, read, discard, "
                               "flush)", w[0]);
    }
    for (i = 1; i < n && w[i][0] == '-'; i++) {
        if (strcmp(w[i], "-z") == 0 && op->kind == IO_WRITE) {
            op->kind = IO_ZERO;
            op->pattern = -1;
        } else if (strcmp(w[i], "-P") == 0 && i + 1 < n &&
                   (op->kind == IO_WRITE || op->kind == IO_READ)) {
            if (parse_num(w[++i], &v) < 0 || v > 255)
                return cli_usage_error(CMD, "invalid pattern '%s' (a byte)", w[i]);
            op->pattern = (int)v;
        } else {
            return cli_usage_error(CMD, "invalid option '%s' in '%s'", w[i], text);
        }
    }
    if (n - i != 2)
        return cli_usage_error(CMD, "'%s' needs OFF and LEN", w[0]);
    if (parse_num(w[i], &op->off) < 0)
        return cli_usage_error(CMD, "invalid offset '%s'", w[i]);
    if (parse_num(w[i + 1], &op->len) < 0)
        return cli_usage_error(CMD, "invalid length '%s'", w[i + 1]);
    if (op->off % VD_SECTOR_SIZE || op->len % VD_SECTOR_SIZE)
        return cli_usage_error(CMD, "'%s': offset and length must be multiples "
                               "of 512", text);
    return 0;
}

static const char *verb(enum io_kind k)
{
    switch (k) {
    case IO_READ: return "read";
    case IO_DISCARD: return "discard";
    default: return "wrote";
    }
}

/* Runs one command; returns 0 or a negative errno after printing why. */
static int run_op(struct vd_chain *chain, const char *name, const struct io_op *op,
                  unsigned char *buf)
{
    uint64_t done = 0;
    int ret = 0;

    switch (op->kind) {
    case IO_FLUSH:
        ret = vd_flush(chain);
        if (ret < 0)
            cli_err_lib(ret, "%s: flush", name);
        return ret;
    case IO_ZERO:
        if (op->len)
            ret = vd_zero(chain, op->off, op->len, 0);
        break;
    case IO_DISCARD:
        if (op->len)
            ret = vd_discard(chain, op->off, op->len);
        break;
    case IO_WRITE:
        memset(buf, op->pattern, IO_BUF);
        for (; done < op->len && ret == 0; done += MIN(op->len - done, IO_BUF))
            ret = vd_write(chain, buf, op->off + done,
                           (size_t)MIN(op->len - done, IO_BUF), 0);
        break;
    case IO_READ:
        for (; done < op->len; done += MIN(op->len - done, IO_BUF)) {
            size_t len = (size_t)MIN(op->len - done, IO_BUF);

            ret = vd_read(chain, buf, op->off + done, len);
            if (ret < 0)
                break;
            if (op->pattern < 0)
                continue;
            for (size_t i = 0; i < len; i++) {
                if (buf[i] != op->pattern) {
                    cli_err("%s: pattern verification failed at offset %llu "
                            "(found 0x%02x, expected 0x%02x)", name,
                            (unsigned long long)(op->off + done + i), buf[i],
                            op->pattern);
                    return -EIO;
                }
            }
        }
        break;
    }
    if (ret < 0) {
        cli_err_lib(ret, "%s: %s at offset %llu, %llu bytes", name,
                    op->kind == IO_READ ? "read" :
                    op->kind == IO_DISCARD ? "discard" : "write",
                    (unsigned long long)op->off, (unsigned long long)op->len);
        return ret;
    }
    printf("%s %llu/%llu bytes at offset %llu\n", verb(op->kind),
           (unsigned long long)op->len, (unsigned long long)op->len,
           (unsigned long long)op->off);
    return 0;
}

int vol_io(int argc, char **argv)
{
    static const struct option opts[] = {
        { "cmd", required_argument, NULL, 'c' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct io_op ops[MAX_OPS];
    unsigned nops = 0, flags = 0;
    unsigned char *buf = NULL;
    struct vd_chain *chain = NULL;
    struct vd_store *st;
    struct vd_ctx *ctx;
    const char *name;
    int c, ret, rc = EXIT_ERR;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (nops == MAX_OPS)
                return cli_usage_error(CMD, "more than %d commands", MAX_OPS);
            ret = parse_op(optarg, &ops[nops]);
            if (ret)
                return ret;
            if (ops[nops].kind != IO_READ)
                flags = VD_OPEN_RDWR;
            nops++;
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_usage_hint(CMD);
        }
    }
    if (optind >= argc)
        return cli_usage_error(CMD, "missing NAME");
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "too many arguments");
    if (nops == 0)
        return cli_usage_error(CMD, "no command given (-c)");
    name = argv[optind];

    ctx = cli_ctx();
    if (!ctx)
        return EXIT_ERR;
    buf = cli_alloc_buf(IO_BUF);
    if (!buf)
        return EXIT_ERR;
    if (cli_store_open(0, &st) < 0)
        goto out_buf;
    ret = vd_store_open_chain(st, ctx, name, flags, &chain);
    if (ret < 0) {
        cli_err_volume(ret, st, name, NULL, name);
        goto out;
    }
    rc = EXIT_OK;
    for (unsigned i = 0; i < nops; i++) {
        if (run_op(chain, name, &ops[i], buf) < 0) {
            rc = EXIT_ERR;
            break;
        }
    }
    ret = vd_chain_close(chain);
    if (ret < 0 && rc == EXIT_OK) {
        cli_err_lib(ret, "%s: close", name);
        rc = EXIT_ERR;
    }
out:
    vd_store_close(st);
out_buf:
    free(buf);
    return rc;
}
