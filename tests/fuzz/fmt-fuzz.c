/*
 * fmt-fuzz.c - the shared body of the image format fuzz targets.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fmt-fuzz.h"

#define MAX_RUNS   512              /* status runs walked per input */
#define MAX_READ   (1u << 20)       /* bytes read per input */
#define CHUNK      (64u << 10)

static char g_dir[4096];
static char g_path[4200];

static void die(const char *what)
{
    fprintf(stderr, "fmt-fuzz: %s: %s (%s)\n", what, strerror(errno), fmt_errmsg());
    exit(1);
}

static void cleanup(void)
{
    unlink(g_path);
    rmdir(g_dir);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");

    if (g_dir[0])
        return;
    snprintf(g_dir, sizeof(g_dir), "%s/fmt-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        die("mkdtemp");
    snprintf(g_path, sizeof(g_path), "%s/image", g_dir);
    atexit(cleanup);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;

    if (fd < 0)
        die(path);
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);

        if (n <= 0)
            die("write");
        done += (size_t)n;
    }
    close(fd);
}

void fmt_fuzz_one(const char *format, const uint8_t *data, size_t size)
{
    static char *buf;
    struct fmt_open_opts oo = { .format = format };
    struct fmt_image *img;
    uint64_t off = 0, read_left = MAX_READ, img_size;

    setup();
    if (!buf && !(buf = malloc(CHUNK)))
        die("malloc");
    write_file(g_path, data, size);
    if (fmt_open(g_path, &oo, &img) < 0)
        return;
    img_size = fmt_size(img);
    for (unsigned runs = 0; runs < MAX_RUNS && off < img_size; runs++) {
        enum fmt_kind kind;
        uint64_t n;

        if (fmt_status(img, off, img_size - off, true, &n, &kind) < 0)
            break;
        if (kind == FMT_DATA) {
            uint64_t len = n < CHUNK ? n : CHUNK;

            if (len > read_left)
                break;
            if (fmt_read(img, buf, off, (size_t)len) < 0)
                break;
            read_left -= len;
        }
        off += n;
    }
    fmt_close(img);
}

void fmt_fuzz_seed(const char *dir, const char *name, const char *format,
                   const struct fmt_create_opts *co)
{
    char path[4200];
    struct fmt_image *img;
    uint8_t data[8192];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (fmt_create(path, format, co, &img) < 0)
        die(path);
    /* A few runs of 4 KiB (whole clusters of a qcow2 overlay, whose
     * clusters here are at most that): the first, one in the middle, the
     * last one. */
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    if (fmt_write(img, data, 0, 4096) < 0 ||
        fmt_write(img, data, co->size / 2 / 4096 * 4096, 4096) < 0 ||
        fmt_write(img, data + 512, co->size - 4096, 4096) < 0)
        die("fmt_write");
    if (fmt_close(img) < 0)
        die("fmt_close");
}

void fmt_fuzz_seeds_from_env(const char *var, void (*seeds)(const char *dir))
{
    const char *dir = getenv(var);

    if (!dir)
        return;
    seeds(dir);
    exit(0);
}
