/*
 * bench-wamp.c - write amplification of 4 KiB random writes into a fresh
 * delta over a full base.
 *
 * A base layer (--size, 64 KiB blocks) is written in full, a delta is
 * stacked on it with vd_chain_push, the library's I/O counters are reset,
 * then --writes aligned 4 KiB writes at random offsets go into the delta
 * with a flush every --flush-every writes.  The figures:
 *   data ratio   data bytes written to the file / bytes written by the user
 *                (the goal: <= 1.1; copy-up of whole blocks would give 16)
 *   total ratio  (data + index) bytes / user bytes
 * are printed, never asserted.  The counters come from vd-testing.h, so
 * this program links the static library.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "vd-testing.h"

#define MiB (1024ull * 1024)
#define IO_SIZE 4096u

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-wamp: %s: %s (%s)\n", what, strerror(rc < 0 ? -rc : rc),
            vd_errmsg());
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-wamp [--size MIB] [--writes N] [--flush-every N]\n"
                    "                  [--block-size BYTES] [--seed N]\n"
                    "Defaults: 256 MiB, 20000 writes, a flush every 1000, 64 KiB blocks.\n"
                    "Files go to a temporary folder in $TMPDIR (removed at the end).\n");
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t size = 256 * MiB, writes = 20000, flush_every = 1000, seed = 42;
    uint32_t bs = 65536;
    static const struct option lo[] = {
        { "size", required_argument, NULL, 's' },
        { "writes", required_argument, NULL, 'n' },
        { "flush-every", required_argument, NULL, 'f' },
        { "block-size", required_argument, NULL, 'b' },
        { "seed", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's': size = strtoull(optarg, NULL, 0) * MiB; break;
        case 'n': writes = strtoull(optarg, NULL, 0); break;
        case 'f': flush_every = strtoull(optarg, NULL, 0); break;
        case 'b': bs = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'r': seed = strtoull(optarg, NULL, 0); break;
        default: usage();
        }
    }
    if (optind != argc || size < 1 * MiB || writes == 0)
        usage();

    const char *t = getenv("TMPDIR");
    char dir[4096], base[4200], delta[4200];
    snprintf(dir, sizeof(dir), "%s/bench-wamp.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp", -errno);
    snprintf(base, sizeof(base), "%s/base.vdk", dir);
    snprintf(delta, sizeof(delta), "%s/delta.vdk", dir);

    struct vd_ctx *ctx;
    int rc = vd_ctx_new(64, &ctx);
    if (rc < 0)
        die("vd_ctx_new", rc);
    struct vd_create_opts co = { .size = size, .block_size = bs };
    if ((rc = vd_layer_create(base, &co, NULL)) < 0)
        die(base, rc);
    struct vd_open_opts oo = { .flags = VD_OPEN_RDWR };
    struct vd_chain *c;
    if ((rc = vd_chain_open(ctx, base, &oo, &c)) < 0)
        die(base, rc);

    uint8_t *buf;
    if (posix_memalign((void **)&buf, 4096, 1 * MiB))
        die("memory", -ENOMEM);
    uint64_t fill_seed = 7;
    double t0 = now();
    for (uint64_t off = 0; off < size; off += 1 * MiB) {
        for (size_t i = 0; i < 1 * MiB; i += 8) {
            uint64_t v = splitmix(&fill_seed);
            memcpy(buf + i, &v, 8);
        }
        uint64_t len = size - off < 1 * MiB ? size - off : 1 * MiB;
        if ((rc = vd_write(c, buf, off, (size_t)len, 0)) < 0)
            die("write base", rc);
    }
    if ((rc = vd_chain_push(c, delta)) < 0)
        die(delta, rc);
    printf("base: %llu MiB of %u KiB blocks written in %.1f s; delta pushed\n",
           (unsigned long long)(size / MiB), bs / 1024, now() - t0);

    vdi_reset_io_stats();
    t0 = now();
    uint64_t rng = seed, user = 0;
    for (uint64_t i = 0; i < writes; i++) {
        uint64_t off = splitmix(&rng) % (size / IO_SIZE) * IO_SIZE;
        memset(buf, (int)(i & 0xff), IO_SIZE);
        if ((rc = vd_write(c, buf, off, IO_SIZE, 0)) < 0)
            die("write delta", rc);
        user += IO_SIZE;
        if ((i + 1) % flush_every == 0 && (rc = vd_flush(c)) < 0)
            die("flush", rc);
    }
    if ((rc = vd_flush(c)) < 0)
        die("flush", rc);
    double secs = now() - t0;
    struct vdi_io_stats st;
    vdi_get_io_stats(&st);
    struct vd_layer_info info;
    if ((rc = vd_chain_layer_info(c, 1, &info)) < 0)
        die("info", rc);
    if ((rc = vd_chain_close(c)) < 0)
        die("close", rc);

    double data_ratio = (double)st.data_bytes_written / (double)user;
    double total_ratio = (double)(st.data_bytes_written + st.meta_bytes_written) / (double)user;
    printf("%llu random 4 KiB writes into the delta (seed %llu), a flush every %llu: %.1f s, %.0f IOPS\n",
           (unsigned long long)writes, (unsigned long long)seed,
           (unsigned long long)flush_every, secs, (double)writes / secs);
    printf("  user bytes        %12llu\n", (unsigned long long)user);
    printf("  data bytes        %12llu\n", (unsigned long long)st.data_bytes_written);
    printf("  index bytes       %12llu\n", (unsigned long long)st.meta_bytes_written);
    printf("  bytes read        %12llu (copy-up reads)\n", (unsigned long long)st.bytes_read);
    printf("  syncs             %12llu\n", (unsigned long long)st.syncs);
    printf("  delta holds       %12llu bytes of the disk (file size %llu, sparse)\n",
           (unsigned long long)info.allocated, (unsigned long long)info.file_size);
    printf("result data_ratio=%.3f total_ratio=%.3f\n", data_ratio, total_ratio);
    printf("write amplification: data %.3f (goal <= 1.1), data + index %.3f\n", data_ratio,
           total_ratio);

    free(buf);
    vd_ctx_free(ctx);
    unlink(delta);
    unlink(base);
    rmdir(dir);
    return 0;
}
