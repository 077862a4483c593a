/*
 * test-store.c - the store (vdisk.h "Stores"): opening and creating a
 * store, names, volumes, opening chains by name, snapshots (create, list,
 * rollback, commit, remove), templates and clones, flatten, space usage
 * and vd_store_check, with their error paths.
 *
 * Every test gets a fresh store in its own temporary directory (senv).
 * Content is checked against in-memory models (helpers.h), so that a
 * snapshot, a template version or a clone is compared byte for byte with
 * what it must hold.  "Nothing changed" after a refused operation is
 * checked on the catalog (lists, infos) and on the files (layer count,
 * content).
 */
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "vd-testing.h"

#define SIZE (4 * MiB)
#define GiB (1024ull * MiB)

/* ------------------------------------------------------------------ */
/* Environment: a store in a temporary directory                       */
/* ------------------------------------------------------------------ */

struct senv {
    struct tenv *t;          /* dir and I/O context */
    char path[4200];         /* the store: t->dir/store */
    struct vd_store *st;
};

static int senv_setup(void **state)
{
    void *ts = NULL;
    if (tenv_setup(&ts) != 0)
        return -1;
    struct senv *s = calloc(1, sizeof(*s));
    if (!s) {
        tenv_teardown(&ts);
        return -1;
    }
    s->t = ts;
    snprintf(s->path, sizeof(s->path), "%s/store", s->t->dir);
    int rc = vd_store_open(s->path, VD_STORE_CREATE, &s->st);
    if (rc != 0) {
        fprintf(stderr, "vd_store_open(%s): %s (%s)\n", s->path, strerror(-rc),
                vd_errmsg());
        tenv_teardown(&ts);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int senv_teardown(void **state)
{
    struct senv *s = *state;
    if (!s)
        return 0;
    vd_store_close(s->st);
    void *ts = s->t;
    tenv_teardown(&ts);
    free(s);
    *state = NULL;
    return 0;
}

/* Closes and opens the store again (what the next process would see). */
static void reopen(struct senv *s)
{
    vd_store_close(s->st);
    s->st = NULL;
    assert_rc(vd_store_open(s->path, 0, &s->st), 0);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void mkvol(struct senv *s, const char *name, uint64_t size)
{
    int rc = vd_volume_create(s->st, name, size, NULL);
    if (rc != 0)
        fail_msg("vd_volume_create(%s, %llu) = %d (%s): %s", name,
                 (unsigned long long)size, rc, strerror(-rc), vd_errmsg());
}

static struct vd_chain *sopen(struct senv *s, const char *name, unsigned flags)
{
    struct vd_chain *c = NULL;
    int rc = vd_store_open_chain(s->st, s->t->ctx, name, flags, &c);
    if (rc != 0)
        fail_msg("vd_store_open_chain(%s, %#x) = %d (%s): %s", name, flags, rc,
                 strerror(-rc), vd_errmsg());
    assert_non_null(c);
    return c;
}

/* Opening must fail with want; nothing is returned. */
static void sopen_fails(struct senv *s, const char *name, unsigned flags, int want)
{
    struct vd_chain *c = NULL;
    int rc = vd_store_open_chain(s->st, s->t->ctx, name, flags, &c);
    if (rc == 0)
        close_chain(c);
    if (rc != want)
        fail_msg("vd_store_open_chain(%s, %#x) = %d (%s), expected %d (%s); "
                 "vd_errmsg: %s", name, flags, rc, strerror(-rc), want,
                 strerror(-want), vd_errmsg());
    assert_errmsg();
}

static struct vd_volume_info vinfo(struct senv *s, const char *name)
{
    struct vd_volume_info i;
    memset(&i, 0, sizeof(i));
    int rc = vd_volume_info(s->st, name, &i);
    if (rc != 0)
        fail_msg("vd_volume_info(%s) = %d (%s): %s", name, rc, strerror(-rc),
                 vd_errmsg());
    return i;
}

static struct vd_template_info tinfo(struct senv *s, const char *name,
                                     struct vd_template_version **vers, size_t *n)
{
    struct vd_template_info i;
    memset(&i, 0, sizeof(i));
    int rc = vd_template_info(s->st, name, &i, vers, n);
    if (rc != 0)
        fail_msg("vd_template_info(%s) = %d (%s): %s", name, rc, strerror(-rc),
                 vd_errmsg());
    return i;
}

/* Writes the pattern through the named volume and into the model. */
static void mwrite(struct senv *s, struct model *m, const char *vol, uint64_t off,
                   size_t len, uint32_t seed)
{
    struct vd_chain *c = sopen(s, vol, VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_write(m, c, off, len, seed);
    close_chain(c);
}

/* Reads the whole of name (volume, VOL@SNAP, template) against a model;
 * the chain must have exactly the model's size. */
static void mcheck(struct senv *s, const struct model *m, const char *name)
{
    struct vd_chain *c = sopen(s, name, 0);
    uint64_t size = vd_chain_size(c);
    if (size != m->size) {
        close_chain(c);
        fail_msg("%s: size %llu, expected %llu", name, (unsigned long long)size,
                 (unsigned long long)m->size);
    }
    model_check(m, c);
    close_chain(c);
}

static void model_dup(struct model *dst, const struct model *src)
{
    model_init(dst, src->size);
    memcpy(dst->data, src->data, src->size);
}

static void vol_expect_pattern(struct senv *s, const char *name, uint64_t off,
                               size_t len, uint32_t seed)
{
    struct vd_chain *c = sopen(s, name, 0);
    expect_pattern(c, off, len, seed);
    close_chain(c);
}

static void vol_expect_zero(struct senv *s, const char *name, uint64_t off, size_t len)
{
    struct vd_chain *c = sopen(s, name, 0);
    expect_zero(c, off, len);
    close_chain(c);
}

/* Number of NAME.vdk files in STORE/layers (and all files in *all). */
static unsigned count_layer_files(struct senv *s, unsigned *all)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s/layers", s->path);
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("opendir %s: %s", dir, strerror(errno));
    unsigned n = 0, a = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        a++;
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".vdk") == 0)
            n++;
    }
    closedir(d);
    if (all)
        *all = a;
    return n;
}

static void layer_file(struct senv *s, const vd_uuid *u, char *out, size_t len)
{
    char us[37];
    vd_uuid_format(u, us);
    snprintf(out, len, "%s/layers/%s.vdk", s->path, us);
}

/* The whole store (name NULL) or one volume must check clean. */
static void expect_clean(struct senv *s, const char *name)
{
    struct vd_check_result r;
    struct msgs ms = { 0 };
    memset(&r, 0xff, sizeof(r));
    int rc = vd_store_check(s->st, name, 0, &r, msgs_report, &ms);
    if (rc != 0) {
        msgs_free(&ms);
        fail_msg("vd_store_check(%s) = %d (%s): %s", name ? name : "(store)", rc,
                 strerror(-rc), vd_errmsg());
    }
    if (r.corruptions || r.leaked_bytes || r.digest_mismatches) {
        for (unsigned i = 0; i < ms.n && i < MSGS_MAX; i++)
            print_message("  check: %s\n", ms.m[i]);
        uint64_t c = r.corruptions, l = r.leaked_bytes, d = r.digest_mismatches;
        msgs_free(&ms);
        fail_msg("store check of %s: %llu corruptions, %llu leaked bytes, %llu digest "
                 "mismatches", name ? name : "the store", (unsigned long long)c,
                 (unsigned long long)l, (unsigned long long)d);
    }
    msgs_free(&ms);
}

static const struct vd_snapshot_info *find_snap(const struct vd_snapshot_info *a, size_t n,
                                                const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].name, name) == 0)
            return &a[i];
    return NULL;
}

static size_t snap_count(struct senv *s, const char *vol)
{
    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_snapshot_list(s->st, vol, &a, &n), 0);
    free(a);
    return n;
}

static size_t volume_count(struct senv *s)
{
    struct vd_volume_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_volume_list(s->st, &a, &n), 0);
    free(a);
    return n;
}

static size_t template_count(struct senv *s)
{
    struct vd_template_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_template_list(s->st, &a, &n), 0);
    free(a);
    return n;
}

/* Asserts that rc is want and that vd_errmsg() says something. */
#define assert_fails(rc, want) \
    do { \
        assert_rc((rc), (want)); \
        assert_errmsg(); \
    } while (0)

#define assert_contains(hay, needle) \
    do { \
        const char *h_ = (hay), *n_ = (needle); \
        if (!h_ || !strstr(h_, n_)) \
            fail_msg("'%s' does not contain '%s'", h_ ? h_ : "(null)", n_); \
    } while (0)

/* ------------------------------------------------------------------ */
/* A writer in another process                                         */
/* ------------------------------------------------------------------ */

/* A child process that opens a volume of the store for writing and holds
 * it until told what to do.  The store handle is not shared across fork
 * (LMDB forbids it): the parent closes its handle around the fork. */
struct writer {
    pid_t pid;
    int cmd_fd;      /* parent -> child */
};

static void writer_start(struct senv *s, const char *vol, struct writer *w)
{
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    vd_store_close(s->st);
    s->st = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        struct vd_ctx *ctx = NULL;
        struct vd_store *st = NULL;
        struct vd_chain *c = NULL;
        if (vd_ctx_new(0, &ctx) != 0 || vd_store_open(s->path, 0, &st) != 0 ||
            vd_store_open_chain(st, ctx, vol, VD_OPEN_RDWR | VD_OPEN_BUFFERED, &c) != 0) {
            fprintf(stderr, "writer: %s\n", vd_errmsg());
            (void)!write(up[1], "E", 1);
            _exit(2);
        }
        (void)!write(up[1], "R", 1);
        /* Command: 'q' close and exit; 'w' + offset + length + seed: write
         * the pattern there first. */
        char cmd = 'q';
        if (read(down[0], &cmd, 1) != 1)
            cmd = 'q';
        int code = 0;
        if (cmd == 'w') {
            uint64_t arg[3];
            if (read(down[0], arg, sizeof(arg)) != (ssize_t)sizeof(arg)) {
                code = 3;
            } else {
                uint8_t *buf = malloc(arg[1]);
                fill_pattern(buf, arg[1], arg[0], (uint32_t)arg[2]);
                if (vd_write(c, buf, arg[0], arg[1], 0) != 0 || vd_flush(c) != 0)
                    code = 4;
                free(buf);
            }
        }
        if (vd_chain_close(c) != 0)
            code = 5;
        vd_store_close(st);
        vd_ctx_free(ctx);
        _exit(code);
    }
    close(up[1]);
    close(down[0]);
    char ready = 0;
    ssize_t n = read(up[0], &ready, 1);
    close(up[0]);
    w->pid = pid;
    w->cmd_fd = down[1];
    assert_rc(vd_store_open(s->path, 0, &s->st), 0);
    if (n != 1 || ready != 'R')
        fail_msg("the writer process could not open '%s' for writing", vol);
}

/* Tells the writer to (optionally write, then) close and exit; asserts
 * that it exited with status 0. */
static void writer_finish(struct writer *w, bool do_write, uint64_t off, uint64_t len,
                          uint32_t seed)
{
    char cmd = do_write ? 'w' : 'q';
    assert_int_equal(write(w->cmd_fd, &cmd, 1), 1);
    if (do_write) {
        uint64_t arg[3] = { off, len, seed };
        assert_int_equal(write(w->cmd_fd, arg, sizeof(arg)), (ssize_t)sizeof(arg));
    }
    close(w->cmd_fd);
    int status = 0;
    assert_int_equal(waitpid(w->pid, &status, 0), w->pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("writer process failed (status %#x)", status);
}

/* ================================================================== */
/* Opening a store                                                     */
/* ================================================================== */

static void test_open_missing(void **state)
{
    struct tenv *e = *state;
    const char *p = tpath(e, "nostore");
    struct vd_store *st = NULL;
    assert_fails(vd_store_open(p, 0, &st), -ENOENT);
    assert_null(st);
    assert_contains(vd_errmsg(), p);
    assert_false(file_exists(p));

    /* An existing directory that is not a store: the same. */
    assert_int_equal(mkdir(p, 0755), 0);
    assert_fails(vd_store_open(p, 0, &st), -ENOENT);
    char cat[4400];
    snprintf(cat, sizeof(cat), "%s/catalog", p);
    assert_false(file_exists(cat));
}

static void test_open_create_reopen(void **state)
{
    struct tenv *e = *state;
    char p[4200], sub[4400];
    snprintf(p, sizeof(p), "%s", tpath(e, "st"));
    struct vd_store *st = NULL;
    assert_rc(vd_store_open(p, VD_STORE_CREATE, &st), 0);
    assert_non_null(st);
    assert_string_equal(vd_store_path(st), p);
    struct stat sb;
    snprintf(sub, sizeof(sub), "%s/catalog", p);
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    snprintf(sub, sizeof(sub), "%s/layers", p);
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_rc(vd_volume_create(st, "v", SIZE, NULL), 0);
    vd_store_close(st);

    /* Reopen without CREATE: the volume is there. */
    st = NULL;
    assert_rc(vd_store_open(p, 0, &st), 0);
    struct vd_volume_info i;
    assert_rc(vd_volume_info(st, "v", &i), 0);
    assert_int_equal(i.size, SIZE);
    vd_store_close(st);

    /* CREATE on an existing store opens it and keeps what it holds. */
    st = NULL;
    assert_rc(vd_store_open(p, VD_STORE_CREATE, &st), 0);
    assert_rc(vd_volume_info(st, "v", &i), 0);
    vd_store_close(st);

    /* Two handles on one store at once (as two processes would). */
    struct vd_store *a = NULL, *b = NULL;
    assert_rc(vd_store_open(p, 0, &a), 0);
    assert_rc(vd_store_open(p, 0, &b), 0);
    assert_rc(vd_volume_create(a, "w", SIZE, NULL), 0);
    assert_rc(vd_volume_info(b, "w", &i), 0);
    vd_store_close(a);
    vd_store_close(b);
}

static void garbage_catalog(struct tenv *e, const char *name, size_t len)
{
    char p[4200], f[4400];
    snprintf(p, sizeof(p), "%s", tpath(e, name));
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(f, sizeof(f), "%s/catalog", p);
    assert_int_equal(mkdir(f, 0755), 0);
    snprintf(f, sizeof(f), "%s/catalog/data.mdb", p);
    uint8_t *g = malloc(len);
    assert_non_null(g);
    uint64_t rng = 42;
    for (size_t i = 0; i < len; i++)
        g[i] = (uint8_t)rng_next(&rng);
    write_file(f, g, len);

    for (int pass = 0; pass < 2; pass++) {
        struct vd_store *st = NULL;
        int rc = vd_store_open(p, pass ? VD_STORE_CREATE : 0, &st);
        if (rc == 0) {
            vd_store_close(st);
            free(g);
            fail_msg("vd_store_open on a garbage catalog (%zu bytes) succeeded", len);
        }
        if (rc != -EUCLEAN)
            print_message("note: garbage catalog (%zu bytes) -> %d (%s)\n", len, rc,
                          strerror(-rc));
        assert_fails(rc, -EUCLEAN);
        assert_null(st);
    }
    /* The failed open did not overwrite the file. */
    size_t n = 0;
    uint8_t *after = read_whole_file(f, &n);
    bool same = n == len && memcmp(after, g, len) == 0;
    free(after);
    free(g);
    assert_true(same);
}

static void test_open_garbage_catalog(void **state)
{
    struct tenv *e = *state;
    garbage_catalog(e, "g1", 64 * KiB);
    garbage_catalog(e, "g2", 100);
}

/* vd_store_default_path in a child process that drops root first, so the
 * non-root rules can be tested when the tests run as root. */
static int default_path_as_user(char *out, size_t len)
{
    if (geteuid() != 0)
        return vd_store_default_path(out, len);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        char buf[4096] = "";
        int rc = -EPERM;
        if (setgid(65534) == 0 && setuid(65534) == 0 && geteuid() == 65534)
            rc = vd_store_default_path(buf, sizeof(buf));
        (void)!write(p[1], &rc, sizeof(rc));
        (void)!write(p[1], buf, sizeof(buf));
        _exit(0);
    }
    close(p[1]);
    int rc = -EIO;
    char buf[4096] = "";
    ssize_t a = read(p[0], &rc, sizeof(rc));
    ssize_t b = 0, r;
    while (b < (ssize_t)sizeof(buf) && (r = read(p[0], buf + b, sizeof(buf) - b)) > 0)
        b += r;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_int_equal(a, sizeof(rc));
    assert_int_equal(b, sizeof(buf));
    if (rc == -EPERM)
        fail_msg("could not drop root to test the user default");
    buf[sizeof(buf) - 1] = '\0';
    snprintf(out, len, "%s", buf);
    return rc;
}

struct saved_env {
    char *v[3];
};
static const char *const env_names[3] = { "VDISK_STORE", "XDG_DATA_HOME", "HOME" };

static void env_save(struct saved_env *s)
{
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(env_names[i]);
        s->v[i] = v ? strdup(v) : NULL;
    }
}

static void env_restore(struct saved_env *s)
{
    for (int i = 0; i < 3; i++) {
        if (s->v[i])
            setenv(env_names[i], s->v[i], 1);
        else
            unsetenv(env_names[i]);
        free(s->v[i]);
        s->v[i] = NULL;
    }
}

static void test_default_path(void **state)
{
    (void)state;
    struct saved_env saved;
    env_save(&saved);
    char out[4096];

    setenv("VDISK_STORE", "/srv/vd-store", 1);
    setenv("XDG_DATA_HOME", "/xdg/data", 1);
    setenv("HOME", "/home/someone", 1);
    int rc = vd_store_default_path(out, sizeof(out));
    if (rc == 0 && strcmp(out, "/srv/vd-store") != 0) {
        env_restore(&saved);
        fail_msg("VDISK_STORE set: got '%s'", out);
    }
    assert_rc(rc, 0);
    /* VDISK_STORE wins for every user. */
    rc = default_path_as_user(out, sizeof(out));
    assert_rc(rc, 0);
    assert_string_equal(out, "/srv/vd-store");
    /* Too small a buffer. */
    char small[8];
    assert_rc(vd_store_default_path(small, sizeof(small)), -ENAMETOOLONG);

    unsetenv("VDISK_STORE");
    if (geteuid() == 0) {
        assert_rc(vd_store_default_path(out, sizeof(out)), 0);
        assert_string_equal(out, "/var/lib/vdisk");
    }
    /* A user: $XDG_DATA_HOME/vdisk, else ~/.local/share/vdisk. */
    assert_rc(default_path_as_user(out, sizeof(out)), 0);
    assert_string_equal(out, "/xdg/data/vdisk");
    unsetenv("XDG_DATA_HOME");
    assert_rc(default_path_as_user(out, sizeof(out)), 0);
    assert_string_equal(out, "/home/someone/.local/share/vdisk");
    setenv("XDG_DATA_HOME", "", 1);
    assert_rc(default_path_as_user(out, sizeof(out)), 0);
    assert_string_equal(out, "/home/someone/.local/share/vdisk");
    /* An empty VDISK_STORE counts as unset. */
    setenv("VDISK_STORE", "", 1);
    assert_rc(default_path_as_user(out, sizeof(out)), 0);
    assert_string_equal(out, "/home/someone/.local/share/vdisk");
    /* No location at all for a user: an error, not garbage. */
    unsetenv("VDISK_STORE");
    unsetenv("XDG_DATA_HOME");
    unsetenv("HOME");
    rc = default_path_as_user(out, sizeof(out));
    env_restore(&saved);
    assert_true(rc < 0);
}

/* ================================================================== */
/* Names                                                               */
/* ================================================================== */

static const char *const bad_names[] = {
    "",
    "x1234567890123456789012345678901234567890123456789012345678901234", /* 65 */
    ".hidden", "-dash", "a/b", "a@b", "a b", " a", "a\tb", "vol\xc3\xa9",
    "\xe2\x82\xac", "a:b", "a*", "..",
};
#define N_BAD (sizeof(bad_names) / sizeof(bad_names[0]))
#define NAME64 "y123456789012345678901234567890123456789012345678901234567890123"

static void test_names_volume(void **state)
{
    struct senv *s = *state;
    _Static_assert(sizeof(NAME64) == 65, "64 characters");
    assert_int_equal(strlen(bad_names[1]), 65);
    const char *good[] = { "a", "Z", "0", "A0._-z", "_x", "v.1", "a-", NAME64 };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        mkvol(s, good[i], SIZE);
        assert_string_equal(vinfo(s, good[i]).name, good[i]);
    }
    unsigned files = count_layer_files(s, NULL);
    for (size_t i = 0; i < N_BAD; i++) {
        int rc = vd_volume_create(s->st, bad_names[i], SIZE, NULL);
        if (rc != -EINVAL)
            fail_msg("vd_volume_create('%s') = %d, expected -EINVAL", bad_names[i], rc);
        assert_errmsg();
        struct vd_volume_info info;
        assert_rc_either(vd_volume_info(s->st, bad_names[i], &info), -EINVAL, -ENOENT);
    }
    assert_int_equal(volume_count(s), sizeof(good) / sizeof(good[0]));
    assert_int_equal(count_layer_files(s, NULL), files);
}

static void test_names_snapshot(void **state)
{
    struct senv *s = *state;
    mkvol(s, "v", SIZE);
    unsigned files = count_layer_files(s, NULL);
    for (size_t i = 0; i < N_BAD; i++) {
        int rc = vd_snapshot_create(s->st, "v", bad_names[i]);
        if (rc != -EINVAL)
            fail_msg("vd_snapshot_create(v, '%s') = %d, expected -EINVAL", bad_names[i], rc);
        assert_errmsg();
    }
    struct vd_volume_info i = vinfo(s, "v");
    assert_int_equal(i.snapshots, 0);
    assert_int_equal(i.depth, 1);
    assert_int_equal(count_layer_files(s, NULL), files);
    /* The snapshot namespace is per volume and 64 characters fit. */
    assert_rc(vd_snapshot_create(s->st, "v", NAME64), 0);
    assert_rc(vd_snapshot_create(s->st, "v", "v"), 0);
    mkvol(s, "w", SIZE);
    assert_rc(vd_snapshot_create(s->st, "w", "v"), 0);
    assert_int_equal(snap_count(s, "v"), 2);
    assert_int_equal(snap_count(s, "w"), 1);
    /* Bad names on the other snapshot operations. */
    assert_fails(vd_snapshot_rollback(s->st, "v", "a@b"), -EINVAL);
    assert_rc_either(vd_snapshot_commit(s->st, "v", "a/b", NULL, NULL), -EINVAL, -ENOENT);
    assert_rc_either(vd_snapshot_remove(s->st, "v", ""), -EINVAL, -ENOENT);
    assert_int_equal(snap_count(s, "v"), 2);
}

static void test_names_template(void **state)
{
    struct senv *s = *state;
    mkvol(s, "src", SIZE);
    for (size_t i = 0; i < N_BAD; i++) {
        int rc = vd_template_create(s->st, bad_names[i], "src");
        if (rc != -EINVAL)
            fail_msg("vd_template_create('%s') = %d, expected -EINVAL", bad_names[i], rc);
        assert_errmsg();
    }
    assert_int_equal(template_count(s), 0);
    assert_int_equal(vinfo(s, "src").depth, 1);
    assert_int_equal(count_layer_files(s, NULL), 1);

    assert_rc(vd_template_create(s->st, NAME64, "src"), 0);
    for (size_t i = 0; i < N_BAD; i++) {
        int rc = vd_clone(s->st, NAME64, 0, bad_names[i], 0, NULL, NULL);
        if (rc != -EINVAL)
            fail_msg("vd_clone(to '%s') = %d, expected -EINVAL", bad_names[i], rc);
        rc = vd_clone(s->st, NAME64, 0, bad_names[i], VD_CLONE_FULL, NULL, NULL);
        if (rc != -EINVAL)
            fail_msg("vd_clone(full, to '%s') = %d, expected -EINVAL", bad_names[i], rc);
    }
    assert_int_equal(volume_count(s), 1);
    assert_int_equal(tinfo(s, NAME64, NULL, NULL).clones, 0);
}

static void test_name_clashes(void **state)
{
    struct senv *s = *state;
    struct model m;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 64 * KiB, 1);
    assert_rc(vd_template_create(s->st, "t", "v"), 0);
    struct vd_volume_info vi = vinfo(s, "v");
    unsigned files = count_layer_files(s, NULL);

    /* volume / volume */
    assert_fails(vd_volume_create(s->st, "v", 2 * SIZE, NULL), -EEXIST);
    assert_int_equal(vinfo(s, "v").size, SIZE);
    /* template name for a volume */
    assert_fails(vd_volume_create(s->st, "t", SIZE, NULL), -EEXIST);
    /* volume name for a template */
    assert_fails(vd_template_create(s->st, "v", "v"), -EEXIST);
    /* an existing template name for a new template */
    assert_fails(vd_template_create(s->st, "t", "v"), -EEXIST);
    /* clones onto existing names */
    assert_fails(vd_clone(s->st, "t", 0, "v", 0, NULL, NULL), -EEXIST);
    assert_fails(vd_clone(s->st, "t", 0, "t", 0, NULL, NULL), -EEXIST);
    assert_fails(vd_clone(s->st, "t", 0, "v", VD_CLONE_FULL, NULL, NULL), -EEXIST);

    assert_int_equal(volume_count(s), 1);
    assert_int_equal(template_count(s), 1);
    struct vd_template_info ti = tinfo(s, "t", NULL, NULL);
    assert_int_equal(ti.versions, 1);
    assert_int_equal(ti.clones, 0);
    struct vd_volume_info vi2 = vinfo(s, "v");
    assert_memory_equal(&vi.top, &vi2.top, sizeof(vi.top));
    assert_int_equal(vi2.depth, vi.depth);
    assert_int_equal(count_layer_files(s, NULL), files);
    mcheck(s, &m, "v");
    mcheck(s, &m, "t");
    expect_clean(s, NULL);
    model_free(&m);
}

static void test_unknown_names(void **state)
{
    struct senv *s = *state;
    mkvol(s, "v", SIZE);
    assert_rc(vd_snapshot_create(s->st, "v", "s"), 0);
    assert_rc(vd_template_create(s->st, "t", "v"), 0);
    unsigned files = count_layer_files(s, NULL);
    struct vd_volume_info vi;
    struct vd_template_info ti;
    struct vd_snapshot_info *sa = NULL;
    size_t n = 0;

    assert_fails(vd_volume_info(s->st, "nope", &vi), -ENOENT);
    assert_contains(vd_errmsg(), "nope");
    assert_fails(vd_volume_remove(s->st, "nope"), -ENOENT);
    assert_fails(vd_volume_resize(s->st, "nope", 2 * SIZE), -ENOENT);
    assert_fails(vd_volume_flatten(s->st, "nope", NULL, NULL), -ENOENT);
    assert_fails(vd_snapshot_create(s->st, "nope", "s"), -ENOENT);
    assert_fails(vd_snapshot_list(s->st, "nope", &sa, &n), -ENOENT);
    assert_fails(vd_snapshot_rollback(s->st, "nope", "s"), -ENOENT);
    assert_fails(vd_snapshot_commit(s->st, "nope", "s", NULL, NULL), -ENOENT);
    assert_fails(vd_snapshot_remove(s->st, "nope", "s"), -ENOENT);
    /* unknown snapshots of a known volume */
    assert_fails(vd_snapshot_rollback(s->st, "v", "nope"), -ENOENT);
    assert_contains(vd_errmsg(), "nope");
    assert_fails(vd_snapshot_commit(s->st, "v", "nope", NULL, NULL), -ENOENT);
    assert_fails(vd_snapshot_remove(s->st, "v", "nope"), -ENOENT);
    /* templates */
    assert_fails(vd_template_info(s->st, "nope", &ti, NULL, NULL), -ENOENT);
    assert_fails(vd_template_update(s->st, "nope", "v"), -ENOENT);
    assert_fails(vd_template_remove(s->st, "nope"), -ENOENT);
    assert_fails(vd_template_create(s->st, "t2", "nope"), -ENOENT);
    assert_fails(vd_template_update(s->st, "t", "nope"), -ENOENT);
    assert_fails(vd_clone(s->st, "nope", 0, "c", 0, NULL, NULL), -ENOENT);
    assert_fails(vd_clone(s->st, "nope", 0, "c", VD_CLONE_FULL, NULL, NULL), -ENOENT);
    assert_fails(vd_clone(s->st, "t", 7, "c", 0, NULL, NULL), -ENOENT);
    assert_fails(vd_clone(s->st, "t", 7, "c", VD_CLONE_FULL, NULL, NULL), -ENOENT);
    /* a volume is not a template */
    assert_fails(vd_clone(s->st, "v", 0, "c", 0, NULL, NULL), -ENOENT);
    assert_fails(vd_template_info(s->st, "v", &ti, NULL, NULL), -ENOENT);
    assert_fails(vd_template_remove(s->st, "v"), -ENOENT);

    assert_int_equal(volume_count(s), 1);
    assert_int_equal(template_count(s), 1);
    assert_int_equal(snap_count(s, "v"), 1);
    assert_int_equal(count_layer_files(s, NULL), files);
    expect_clean(s, NULL);
}

/* Operations that would change a template are refused, nothing changed. */
static void test_template_immutable(void **state)
{
    struct senv *s = *state;
    struct model m;
    model_init(&m, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &m, "src", 0, 256 * KiB, 1);
    assert_rc(vd_template_create(s->st, "t", "src"), 0);
    struct vd_template_version *v0 = NULL;
    size_t n0 = 0;
    struct vd_template_info t0 = tinfo(s, "t", &v0, &n0);
    assert_int_equal(n0, 1);
    unsigned files = count_layer_files(s, NULL);

    assert_rc_either(vd_volume_remove(s->st, "t"), -EPERM, -EROFS);
    assert_errmsg();
    assert_rc_either(vd_volume_resize(s->st, "t", 2 * SIZE), -EPERM, -EROFS);
    assert_errmsg();
    assert_rc_either(vd_snapshot_create(s->st, "t", "s"), -EPERM, -EROFS);
    assert_errmsg();
    assert_rc_either(vd_volume_flatten(s->st, "t", NULL, NULL), -EPERM, -EROFS);
    assert_errmsg();
    assert_rc_either(vd_snapshot_rollback(s->st, "t", "s"), -EPERM, -EROFS);
    assert_rc_either(vd_snapshot_commit(s->st, "t", "s", NULL, NULL), -EPERM, -EROFS);
    assert_rc_either(vd_snapshot_remove(s->st, "t", "s"), -EPERM, -EROFS);
    assert_rc_either(vd_template_update(s->st, "t", "t"), -EPERM, -EROFS);
    sopen_fails(s, "t", VD_OPEN_RDWR, -EROFS);
    sopen_fails(s, "t@1", VD_OPEN_RDWR, -EROFS);
    sopen_fails(s, "t@v1", VD_OPEN_RDWR | VD_OPEN_BUFFERED, -EROFS);
    /* A template is not a volume for vd_volume_info. */
    struct vd_volume_info vi;
    assert_true(vd_volume_info(s->st, "t", &vi) < 0);

    struct vd_template_version *v1 = NULL;
    size_t n1 = 0;
    struct vd_template_info t1 = tinfo(s, "t", &v1, &n1);
    assert_int_equal(n1, 1);
    assert_int_equal(t1.versions, t0.versions);
    assert_int_equal(t1.latest, t0.latest);
    assert_int_equal(t1.size, t0.size);
    assert_memory_equal(&v0[0].layer, &v1[0].layer, sizeof(vd_uuid));
    char lp[4400];
    layer_file(s, &v1[0].layer, lp, sizeof(lp));
    free(v0);
    free(v1);
    assert_true(layer_info(lp).frozen);
    assert_int_equal(count_layer_files(s, NULL), files);
    mcheck(s, &m, "t");
    mcheck(s, &m, "src");
    model_free(&m);
    expect_clean(s, NULL);
}

/* ================================================================== */
/* Volumes                                                             */
/* ================================================================== */

static void test_volume_sizes(void **state)
{
    struct senv *s = *state;
    const uint64_t bad[] = { 0, 1, 511, 1000, SIZE + 1, VD_MAX_SIZE + 512,
                             VD_MAX_SIZE + 1, UINT64_MAX, UINT64_MAX - 511 };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = vd_volume_create(s->st, "v", bad[i], NULL);
        if (rc != -EINVAL)
            fail_msg("vd_volume_create(size %llu) = %d, expected -EINVAL",
                     (unsigned long long)bad[i], rc);
        assert_errmsg();
    }
    assert_int_equal(volume_count(s), 0);
    assert_int_equal(count_layer_files(s, NULL), 0);
    mkvol(s, "small", 512);
    assert_int_equal(vinfo(s, "small").size, 512);
    vol_expect_zero(s, "small", 0, 512);
    /* Bad block size options are refused too, nothing left behind. */
    struct vd_create_opts o = { .block_size = 3000 };
    assert_fails(vd_volume_create(s->st, "bs", SIZE, &o), -EINVAL);
    assert_int_equal(volume_count(s), 1);
    assert_int_equal(count_layer_files(s, NULL), 1);
}

static void test_volume_info(void **state)
{
    struct senv *s = *state;
    uint64_t t0 = (uint64_t)time(NULL);
    struct vd_create_opts o = { .block_size = 16 * KiB, .digest = VD_DIGEST_SHA256,
                                .size = 12345, .parent = "/nonexistent" };
    assert_rc(vd_volume_create(s->st, "v", 8 * MiB, &o), 0);
    mkvol(s, "d", SIZE);
    uint64_t t1 = (uint64_t)time(NULL);

    struct vd_volume_info i = vinfo(s, "v");
    assert_string_equal(i.name, "v");
    assert_int_equal(i.size, 8 * MiB);          /* opts->size ignored */
    assert_int_equal(i.block_size, 16 * KiB);
    assert_int_equal(i.digest, VD_DIGEST_SHA256);
    assert_int_equal(i.depth, 1);               /* opts->parent ignored */
    assert_int_equal(i.snapshots, 0);
    assert_string_equal(i.template_name, "");
    assert_int_equal(i.template_version, 0);
    assert_int_equal(i.allocated, 0);
    assert_int_equal(i.writer_pid, 0);
    assert_false(vd_uuid_is_null(&i.top));
    assert_true(i.create_time >= t0 && i.create_time <= t1);
    char lp[4400];
    layer_file(s, &i.top, lp, sizeof(lp));
    assert_true(file_exists(lp));

    struct vd_volume_info d = vinfo(s, "d");
    assert_int_equal(d.block_size, VD_DEFAULT_BLOCK_SIZE);
    assert_int_equal(d.digest, VD_DIGEST_NONE);
    assert_memory_not_equal(&d.top, &i.top, sizeof(vd_uuid));

    /* allocated grows with writes */
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    assert_true(vd_chain_writable(c));
    assert_int_equal(vd_chain_size(c), 8 * MiB);
    assert_int_equal(vd_chain_block_size(c), 16 * KiB);
    write_pattern(c, 0, 1 * MiB, 1);
    close_chain(c);
    struct vd_volume_info i2 = vinfo(s, "v");
    assert_int_equal(i2.allocated, 1 * MiB);
    c = sopen(s, "v", VD_OPEN_RDWR);
    write_pattern(c, 4 * MiB, 64 * KiB, 2);
    close_chain(c);
    assert_int_equal(vinfo(s, "v").allocated, 1 * MiB + 64 * KiB);

    /* a snapshot: depth, count, new top */
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    struct vd_volume_info i3 = vinfo(s, "v");
    assert_int_equal(i3.depth, 2);
    assert_int_equal(i3.snapshots, 1);
    assert_int_equal(i3.size, 8 * MiB);
    assert_int_equal(i3.block_size, 16 * KiB);
    assert_int_equal(i3.digest, VD_DIGEST_SHA256);
    assert_memory_not_equal(&i3.top, &i.top, sizeof(vd_uuid));
    assert_int_equal(i3.create_time, i.create_time);
    vol_expect_pattern(s, "v", 0, 1 * MiB, 1);
    expect_clean(s, NULL);
}

static void test_volume_list(void **state)
{
    struct senv *s = *state;
    struct vd_volume_info *a = NULL;
    size_t n = 99;
    assert_rc(vd_volume_list(s->st, &a, &n), 0);
    assert_int_equal(n, 0);
    free(a);

    const char *names[] = { "b", "a", "C", "a1", "_z", "a.0", "Zz", "9" };
    const size_t nn = sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < nn; i++)
        mkvol(s, names[i], (i + 1) * MiB);
    assert_rc(vd_template_create(s->st, "tpl", "a"), 0);
    assert_rc(vd_clone(s->st, "tpl", 0, "clone", 0, NULL, NULL), 0);

    a = NULL;
    assert_rc(vd_volume_list(s->st, &a, &n), 0);
    assert_int_equal(n, nn + 1);       /* the clone, not the template */
    for (size_t i = 0; i + 1 < n; i++)
        if (strcmp(a[i].name, a[i + 1].name) >= 0) {
            char x[80], y[80];
            snprintf(x, sizeof(x), "%s", a[i].name);
            snprintf(y, sizeof(y), "%s", a[i + 1].name);
            free(a);
            fail_msg("volume list not sorted: '%s' before '%s'", x, y);
        }
    for (size_t i = 0; i < n; i++) {
        assert_true(strcmp(a[i].name, "tpl") != 0);
        /* each entry is the same as vd_volume_info */
        struct vd_volume_info one = vinfo(s, a[i].name);
        assert_int_equal(one.size, a[i].size);
        assert_int_equal(one.depth, a[i].depth);
        assert_memory_equal(&one.top, &a[i].top, sizeof(vd_uuid));
        assert_string_equal(one.template_name, a[i].template_name);
        for (size_t k = 0; k < nn; k++)
            if (strcmp(a[i].name, names[k]) == 0)
                assert_int_equal(a[i].size, (k + 1) * MiB);
        if (strcmp(a[i].name, "clone") == 0) {
            assert_string_equal(a[i].template_name, "tpl");
            assert_int_equal(a[i].template_version, 1);
        }
    }
    free(a);
}

static void test_volume_resize(void **state)
{
    struct senv *s = *state;
    mkvol(s, "v", 1 * GiB);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 128 * KiB, 1);
    write_pattern(c, 1 * GiB - 64 * KiB, 64 * KiB, 2);
    close_chain(c);
    assert_rc(vd_snapshot_create(s->st, "v", "small"), 0);
    unsigned depth0 = vinfo(s, "v").depth;

    /* Within the top's index: the header grows, no new layer. */
    unsigned files = count_layer_files(s, NULL);
    assert_rc(vd_volume_resize(s->st, "v", 2 * GiB), 0);
    struct vd_volume_info i = vinfo(s, "v");
    assert_int_equal(i.size, 2 * GiB);
    assert_int_equal(i.depth, depth0);
    assert_int_equal(count_layer_files(s, NULL), files);
    c = sopen(s, "v", 0);
    assert_int_equal(vd_chain_size(c), 2 * GiB);
    expect_pattern(c, 0, 128 * KiB, 1);
    expect_pattern(c, 1 * GiB - 64 * KiB, 64 * KiB, 2);
    expect_zero(c, 1 * GiB, 128 * KiB);
    expect_zero(c, 2 * GiB - 64 * KiB, 64 * KiB);
    close_chain(c);
    c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 2 * GiB - 4096, 4096, 3);
    close_chain(c);
    /* Same size: nothing to do. */
    assert_rc(vd_volume_resize(s->st, "v", 2 * GiB), 0);
    assert_int_equal(vinfo(s, "v").depth, depth0);

    /* Beyond what one L1 page covers (~7.9 GiB at 64 KiB blocks): a larger
     * delta is stacked. */
    assert_rc(vd_volume_resize(s->st, "v", 9 * GiB), 0);
    i = vinfo(s, "v");
    assert_int_equal(i.size, 9 * GiB);
    assert_int_equal(i.depth, depth0 + 1);
    assert_int_equal(i.snapshots, 1);
    c = sopen(s, "v", 0);
    assert_int_equal(vd_chain_size(c), 9 * GiB);
    expect_pattern(c, 0, 128 * KiB, 1);
    expect_pattern(c, 1 * GiB - 64 * KiB, 64 * KiB, 2);
    expect_pattern(c, 2 * GiB - 4096, 4096, 3);
    expect_zero(c, 2 * GiB, 64 * KiB);
    expect_zero(c, 8 * GiB + 512 * MiB, 64 * KiB);
    expect_zero(c, 9 * GiB - 64 * KiB, 64 * KiB);
    close_chain(c);
    c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 9 * GiB - 64 * KiB, 64 * KiB, 4);
    expect_pattern(c, 9 * GiB - 64 * KiB, 64 * KiB, 4);
    close_chain(c);

    /* The snapshot keeps its size and content. */
    c = sopen(s, "v@small", 0);
    assert_int_equal(vd_chain_size(c), 1 * GiB);
    expect_pattern(c, 1 * GiB - 64 * KiB, 64 * KiB, 2);
    close_chain(c);

    /* Shrinking and bad sizes are refused, nothing changed. */
    assert_fails(vd_volume_resize(s->st, "v", 8 * GiB), -EINVAL);
    assert_fails(vd_volume_resize(s->st, "v", 9 * GiB + 1), -EINVAL);
    assert_fails(vd_volume_resize(s->st, "v", 0), -EINVAL);
    assert_fails(vd_volume_resize(s->st, "v", VD_MAX_SIZE + 512), -EINVAL);
    i = vinfo(s, "v");
    assert_int_equal(i.size, 9 * GiB);
    assert_int_equal(i.depth, depth0 + 1);
    vol_expect_pattern(s, "v", 9 * GiB - 64 * KiB, 64 * KiB, 4);

    /* Survives a reopen, and the snapshot still rolls back. */
    reopen(s);
    assert_int_equal(vinfo(s, "v").size, 9 * GiB);
    expect_clean(s, NULL);
    assert_rc(vd_snapshot_rollback(s->st, "v", "small"), 0);
    assert_int_equal(vinfo(s, "v").size, 1 * GiB);
    vol_expect_pattern(s, "v", 1 * GiB - 64 * KiB, 64 * KiB, 2);
    expect_clean(s, NULL);
}

static void test_volume_remove(void **state)
{
    struct senv *s = *state;
    struct model m, mt, mc;
    model_init(&m, SIZE);
    mkvol(s, "a", SIZE);
    mwrite(s, &m, "a", 0, 256 * KiB, 1);
    assert_rc(vd_snapshot_create(s->st, "a", "s1"), 0);
    mwrite(s, &m, "a", 128 * KiB, 256 * KiB, 2);
    assert_rc(vd_snapshot_create(s->st, "a", "s2"), 0);
    mwrite(s, &m, "a", 1 * MiB, 64 * KiB, 3);
    assert_rc(vd_template_create(s->st, "t", "a"), 0);
    model_dup(&mt, &m);
    mwrite(s, &m, "a", 2 * MiB, 64 * KiB, 4);
    assert_rc(vd_clone(s->st, "t", 0, "lc", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "t", 0, "fc", VD_CLONE_FULL, NULL, NULL), 0);
    model_dup(&mc, &mt);
    mwrite(s, &mc, "lc", 3 * MiB, 64 * KiB, 5);
    mkvol(s, "other", SIZE);
    assert_true(count_layer_files(s, NULL) > 4);

    /* Removing the source volume keeps the template and its clones. */
    assert_rc(vd_volume_remove(s->st, "a"), 0);
    struct vd_volume_info vi;
    assert_fails(vd_volume_info(s->st, "a", &vi), -ENOENT);
    struct vd_snapshot_info *sa = NULL;
    size_t n = 0;
    assert_fails(vd_snapshot_list(s->st, "a", &sa, &n), -ENOENT);
    struct vd_chain *gone = NULL;
    int rc = vd_store_open_chain(s->st, s->t->ctx, "a@s1", 0, &gone);
    if (rc == 0)
        close_chain(gone);
    assert_true(rc < 0);       /* the exact code: test_open_chain_unknown_at */
    mcheck(s, &mt, "t");
    mcheck(s, &mc, "lc");
    mcheck(s, &mt, "fc");
    expect_clean(s, NULL);
    /* The name is free again, with no snapshot left behind. */
    mkvol(s, "a", SIZE);
    assert_int_equal(snap_count(s, "a"), 0);
    assert_fails(vd_snapshot_rollback(s->st, "a", "s1"), -ENOENT);

    assert_rc(vd_volume_remove(s->st, "lc"), 0);
    assert_rc(vd_volume_remove(s->st, "fc"), 0);
    assert_rc(vd_volume_remove(s->st, "a"), 0);
    assert_rc(vd_template_remove(s->st, "t"), 0);
    assert_int_equal(count_layer_files(s, NULL), 1);    /* "other" */
    assert_rc(vd_volume_remove(s->st, "other"), 0);
    unsigned all = 0;
    assert_int_equal(count_layer_files(s, &all), 0);
    assert_int_equal(all, 0);
    struct vd_store_usage u;
    assert_rc(vd_store_usage(s->st, &u), 0);
    assert_int_equal(u.layers, 0);
    assert_int_equal(u.volumes, 0);
    assert_int_equal(u.templates, 0);
    assert_int_equal(u.snapshots, 0);
    expect_clean(s, NULL);
    assert_fails(vd_volume_remove(s->st, "other"), -ENOENT);
    model_free(&m);
    model_free(&mt);
    model_free(&mc);
}

/* ================================================================== */
/* Opening chains by name                                              */
/* ================================================================== */

static void test_open_chain_names(void **state)
{
    struct senv *s = *state;
    struct model mv, ms, m1, m2;
    model_init(&mv, SIZE);
    mkvol(s, "vol", SIZE);
    mwrite(s, &mv, "vol", 0, 128 * KiB, 1);
    assert_rc(vd_snapshot_create(s->st, "vol", "snap"), 0);
    model_dup(&ms, &mv);
    mwrite(s, &mv, "vol", 64 * KiB, 128 * KiB, 2);

    model_init(&m1, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &m1, "src", 1 * MiB, 64 * KiB, 3);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    model_dup(&m2, &m1);
    mwrite(s, &m2, "src", 1 * MiB + 32 * KiB, 64 * KiB, 4);
    assert_rc(vd_template_update(s->st, "tpl", "src"), 0);

    struct vd_chain *c = sopen(s, "vol", VD_OPEN_RDWR);
    assert_true(vd_chain_writable(c));
    assert_int_equal(vd_chain_depth(c), 2);
    close_chain(c);
    c = sopen(s, "vol", 0);
    assert_false(vd_chain_writable(c));
    close_chain(c);
    mcheck(s, &mv, "vol");
    c = sopen(s, "vol@snap", 0);
    assert_false(vd_chain_writable(c));
    assert_int_equal(vd_chain_depth(c), 1);
    close_chain(c);
    mcheck(s, &ms, "vol@snap");
    mcheck(s, &m2, "tpl");
    mcheck(s, &m1, "tpl@1");
    mcheck(s, &m1, "tpl@v1");
    mcheck(s, &m2, "tpl@2");
    mcheck(s, &m2, "tpl@v2");
    c = sopen(s, "tpl", VD_OPEN_BUFFERED);
    assert_false(vd_chain_writable(c));
    close_chain(c);

    /* Errors. */
    sopen_fails(s, "tpl@3", 0, -ENOENT);
    sopen_fails(s, "tpl@v3", 0, -ENOENT);
    const char *badver[] = { "tpl@0", "tpl@v0", "tpl@", "tpl@v", "tpl@x", "tpl@1x",
                             "tpl@-1", "tpl@99999999999", "tpl@vv1", "tpl@1@1" };
    for (size_t i = 0; i < sizeof(badver) / sizeof(badver[0]); i++)
        sopen_fails(s, badver[i], 0, -EINVAL);
    sopen_fails(s, "vol@nope", 0, -ENOENT);
    assert_contains(vd_errmsg(), "nope");
    sopen_fails(s, "nope", 0, -ENOENT);
    sopen_fails(s, "nope", VD_OPEN_RDWR, -ENOENT);
    sopen_fails(s, "nope@1", 0, -ENOENT);
    sopen_fails(s, "vol@snap", VD_OPEN_RDWR, -EROFS);
    sopen_fails(s, "tpl", VD_OPEN_RDWR, -EROFS);
    sopen_fails(s, "tpl@1", VD_OPEN_RDWR, -EROFS);
    sopen_fails(s, "tpl@v2", VD_OPEN_RDWR, -EROFS);
    char longname[100];
    memset(longname, 'x', 70);
    longname[70] = '\0';
    sopen_fails(s, longname, 0, -EINVAL);
    /* The refused opens left everything as it was. */
    mcheck(s, &mv, "vol");
    mcheck(s, &ms, "vol@snap");
    mcheck(s, &m1, "tpl@1");
    assert_int_equal(vinfo(s, "vol").writer_pid, 0);
    expect_clean(s, NULL);
    model_free(&mv);
    model_free(&ms);
    model_free(&m1);
    model_free(&m2);
}

/* A version is a number: N or vN, nothing else (no sign, no blanks). */
static void test_open_chain_version_syntax(void **state)
{
    struct senv *s = *state;
    mkvol(s, "src", SIZE);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    const char *bad[] = { "tpl@ 1", "tpl@+1", "tpl@v+1", "tpl@v 1", "tpl@\t1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        sopen_fails(s, bad[i], 0, -EINVAL);
}

/* NAME@X where NAME is neither a volume nor a template: -ENOENT naming
 * NAME (not a complaint about X), like NAME alone. */
static void test_open_chain_unknown_at(void **state)
{
    struct senv *s = *state;
    mkvol(s, "a", SIZE);
    assert_rc(vd_snapshot_create(s->st, "a", "s1"), 0);
    sopen_fails(s, "nope@snap", 0, -ENOENT);
    assert_contains(vd_errmsg(), "nope");
    sopen_fails(s, "nope@s1", VD_OPEN_RDWR, -ENOENT);
    /* a removed volume's snapshot */
    assert_rc(vd_volume_remove(s->st, "a"), 0);
    sopen_fails(s, "a@s1", 0, -ENOENT);
}

/* A second writer and every operation that would change the volume are
 * refused while another process has it open for writing, naming it;
 * read-only opens work; after the writer exits everything works. */
static void test_two_writers(void **state)
{
    struct senv *s = *state;
    struct model mt, mv, ms;
    model_init(&mt, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &mt, "src", 0, 512 * KiB, 1);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    assert_rc(vd_clone(s->st, "tpl", 0, "vol", 0, NULL, NULL), 0);
    model_dup(&mv, &mt);
    mwrite(s, &mv, "vol", 256 * KiB, 64 * KiB, 2);
    assert_rc(vd_snapshot_create(s->st, "vol", "s1"), 0);
    model_dup(&ms, &mv);
    mwrite(s, &mv, "vol", 1 * MiB, 64 * KiB, 3);
    struct vd_volume_info before = vinfo(s, "vol");
    unsigned files = count_layer_files(s, NULL);

    struct writer w;
    writer_start(s, "vol", &w);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)w.pid);

    struct vd_chain *c = NULL;
    int rc = vd_store_open_chain(s->st, s->t->ctx, "vol", VD_OPEN_RDWR, &c);
    if (rc == 0)
        close_chain(c);
    assert_fails(rc, -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_snapshot_create(s->st, "vol", "s2"), -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_snapshot_rollback(s->st, "vol", "s1"), -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_snapshot_commit(s->st, "vol", "s1", NULL, NULL), -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_volume_remove(s->st, "vol"), -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_volume_resize(s->st, "vol", 2 * SIZE), -EBUSY);
    assert_contains(vd_errmsg(), pid);
    assert_fails(vd_volume_flatten(s->st, "vol", NULL, NULL), -EBUSY);
    assert_contains(vd_errmsg(), pid);

    /* Who holds it, and read-only opens. */
    struct vd_volume_info held = vinfo(s, "vol");
    assert_int_equal(held.writer_pid, (int)w.pid);
    mcheck(s, &mv, "vol");
    mcheck(s, &ms, "vol@s1");
    mcheck(s, &mt, "tpl");
    /* Nothing changed. */
    assert_memory_equal(&held.top, &before.top, sizeof(vd_uuid));
    assert_int_equal(held.depth, before.depth);
    assert_int_equal(held.size, SIZE);
    assert_int_equal(held.snapshots, 1);
    assert_string_equal(held.template_name, "tpl");
    assert_int_equal(count_layer_files(s, NULL), files);

    writer_finish(&w, false, 0, 0, 0);
    assert_int_equal(vinfo(s, "vol").writer_pid, 0);

    c = sopen(s, "vol", VD_OPEN_RDWR);
    close_chain(c);
    assert_rc(vd_volume_resize(s->st, "vol", 2 * SIZE), 0);
    assert_rc(vd_snapshot_create(s->st, "vol", "s2"), 0);
    assert_rc(vd_snapshot_commit(s->st, "vol", "s2", NULL, NULL), 0);
    assert_rc(vd_snapshot_rollback(s->st, "vol", "s1"), 0);
    mcheck(s, &ms, "vol");
    assert_rc(vd_snapshot_commit(s->st, "vol", "s1", NULL, NULL), 0);
    mcheck(s, &ms, "vol");
    assert_rc(vd_volume_flatten(s->st, "vol", NULL, NULL), 0);
    assert_string_equal(vinfo(s, "vol").template_name, "");
    mcheck(s, &ms, "vol");
    expect_clean(s, NULL);
    assert_rc(vd_volume_remove(s->st, "vol"), 0);
    expect_clean(s, NULL);
    model_free(&mt);
    model_free(&mv);
    model_free(&ms);
}

/* Removing a snapshot whose layer has the volume's top as only child,
 * while another process writes to the volume.  drop_snapshot merges the
 * two layers: "down" (into the snapshot's layer, renamed over the top's
 * file) when the top holds less data, "up" (into the top) otherwise.
 * Whatever the library does (refuse, merge later, merge), the writer's
 * data must not be lost, and the result must say what happened: 0 = the
 * snapshot is gone, -EBUSY = nothing changed. */
static void remove_while_writing(struct senv *s, bool big_snapshot)
{
    struct model m;
    model_init(&m, SIZE);
    mkvol(s, "vol", SIZE);
    if (big_snapshot) {
        mwrite(s, &m, "vol", 0, 2 * MiB, 1);
        assert_rc(vd_snapshot_create(s->st, "vol", "s1"), 0);
        mwrite(s, &m, "vol", 0, 4096, 2);
    } else {
        mwrite(s, &m, "vol", 0, 4096, 1);
        assert_rc(vd_snapshot_create(s->st, "vol", "s1"), 0);
        mwrite(s, &m, "vol", 0, 2 * MiB, 2);
    }

    char top[4400];
    struct vd_volume_info vi = vinfo(s, "vol");
    layer_file(s, &vi.top, top, sizeof(top));
    struct stat before, after;
    assert_int_equal(stat(top, &before), 0);

    struct writer w;
    writer_start(s, "vol", &w);
    int rc = vd_snapshot_remove(s->st, "vol", "s1");
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vd_errmsg());
    bool replaced = stat(top, &after) != 0 || after.st_ino != before.st_ino;
    size_t snaps = snap_count(s, "vol");
    /* The writer writes after the removal, then closes. */
    writer_finish(&w, true, 1 * MiB, 64 * KiB, 3);
    fill_pattern(m.data + 1 * MiB, 64 * KiB, 1 * MiB, 3);
    char why[6000] = "";
    if (rc != 0 && rc != -EBUSY)
        snprintf(why, sizeof(why), "vd_snapshot_remove while writing = %d (%s): %s", rc,
                 strerror(-rc), msg);
    else if (replaced)
        snprintf(why, sizeof(why), "vd_snapshot_remove returned %d and replaced the file of "
                 "the volume's top (%s) while another process had it open for writing: the "
                 "writer's later writes went to an unlinked file", rc, top);
    else if (rc == -EBUSY && snaps != 1)
        snprintf(why, sizeof(why), "vd_snapshot_remove returned -EBUSY (%s) but the snapshot "
                 "is gone", msg);
    else if (rc == 0 && snaps != 0)
        snprintf(why, sizeof(why), "vd_snapshot_remove returned 0 but the snapshot is still "
                 "listed");
    if (why[0]) {
        model_free(&m);
        fail_msg("%s", why);
    }

    mcheck(s, &m, "vol");
    reopen(s);
    mcheck(s, &m, "vol");
    expect_clean(s, NULL);
    model_free(&m);
}

static void test_snapshot_remove_while_writing_down(void **state)
{
    remove_while_writing(*state, true);
}

static void test_snapshot_remove_while_writing_up(void **state)
{
    remove_while_writing(*state, false);
}

/* Removing a template made from a volume leaves the template's layer with
 * one child, the volume's top, which the library merges (mg_simplify).
 * While the volume is open for writing, by another process or by this
 * one (a daemon serving it), that merge must not replace the top's file
 * under the writer. */
static void template_remove_while_writing(struct senv *s, bool same_process)
{
    struct model m;
    model_init(&m, SIZE);
    mkvol(s, "vol", SIZE);
    mwrite(s, &m, "vol", 0, 2 * MiB, 1);
    assert_rc(vd_template_create(s->st, "t", "vol"), 0);
    mwrite(s, &m, "vol", 0, 4096, 2);

    char top[4400];
    struct vd_volume_info vi = vinfo(s, "vol");
    layer_file(s, &vi.top, top, sizeof(top));
    struct stat before, after;
    assert_int_equal(stat(top, &before), 0);

    struct writer w;
    struct vd_chain *c = NULL;
    if (same_process)
        c = sopen(s, "vol", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    else
        writer_start(s, "vol", &w);
    int rc = vd_template_remove(s->st, "t");
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vd_errmsg());
    bool replaced = stat(top, &after) != 0 || after.st_ino != before.st_ino;
    if (same_process) {
        model_write(&m, c, 1 * MiB, 64 * KiB, 3);
        close_chain(c);
    } else {
        writer_finish(&w, true, 1 * MiB, 64 * KiB, 3);
        fill_pattern(m.data + 1 * MiB, 64 * KiB, 1 * MiB, 3);
    }
    char why[6000] = "";
    if (rc != 0)
        snprintf(why, sizeof(why), "vd_template_remove = %d (%s): %s", rc, strerror(-rc), msg);
    else if (replaced)
        snprintf(why, sizeof(why), "vd_template_remove replaced the file of the volume's top "
                 "(%s) while %s had it open for writing: later writes went to an unlinked "
                 "file", top, same_process ? "this process" : "another process");
    if (why[0]) {
        model_free(&m);
        fail_msg("%s", why);
    }
    assert_int_equal(template_count(s), 0);
    mcheck(s, &m, "vol");
    reopen(s);
    mcheck(s, &m, "vol");
    expect_clean(s, NULL);
    model_free(&m);
}

static void test_template_remove_while_writing(void **state)
{
    template_remove_while_writing(*state, false);
}

static void test_template_remove_while_writing_here(void **state)
{
    template_remove_while_writing(*state, true);
}

/* ================================================================== */
/* Snapshots                                                           */
/* ================================================================== */

static void test_snapshot_create(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 1 * MiB, 1);
    uint64_t t0 = (uint64_t)time(NULL);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 512 * KiB, 1 * MiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "s2"), 0);
    model_dup(&m2, &m);
    mwrite(s, &m, "v", 0, 64 * KiB, 3);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&m, c, 768 * KiB, 64 * KiB);
    model_discard(&m, c, 1 * MiB, 64 * KiB);
    close_chain(c);

    mcheck(s, &m1, "v@s1");
    mcheck(s, &m2, "v@s2");
    mcheck(s, &m, "v");
    struct vd_volume_info i = vinfo(s, "v");
    assert_int_equal(i.snapshots, 2);
    assert_int_equal(i.depth, 3);

    /* Duplicates and unknown volumes. */
    unsigned files = count_layer_files(s, NULL);
    assert_fails(vd_snapshot_create(s->st, "v", "s1"), -EEXIST);
    assert_fails(vd_snapshot_create(s->st, "nope", "s3"), -ENOENT);
    assert_int_equal(count_layer_files(s, NULL), files);
    assert_int_equal(vinfo(s, "v").depth, 3);

    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(a[0].name, "s1");
    assert_string_equal(a[1].name, "s2");
    assert_true(a[0].create_time >= t0 && a[0].create_time <= (uint64_t)time(NULL));
    assert_int_equal(a[0].size, SIZE);
    assert_int_equal(a[0].allocated, 1 * MiB);
    assert_int_equal(a[1].allocated, 1 * MiB);
    free(a);
    /* Survives a reopen. */
    reopen(s);
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m2, "v@s2");
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
}

/* A snapshot of a volume kept open for writing (what vdiskd does while
 * clients use it): the chain goes on with the new top, writes before are in
 * the snapshot, writes after are not; refusals leave the chain as it was. */
static void test_snapshot_create_open(void **state)
{
    struct senv *s = *state;
    struct model m, m1;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mkvol(s, "w", SIZE);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    model_write(&m, c, 0, 1 * MiB, 1);
    /* The CLI's offline path is refused while the volume is open here. */
    assert_fails(vd_snapshot_create(s->st, "v", "s0"), -EBUSY);
    assert_rc(vd_snapshot_create_open(s->st, "v", "s1", c), 0);
    model_dup(&m1, &m);
    assert_int_equal(vd_chain_depth(c), 2);
    assert_true(vd_chain_writable(c));
    model_write(&m, c, 512 * KiB, 1 * MiB, 2);
    model_check(&m, c);
    mcheck(s, &m1, "v@s1");

    /* Refused: a name in use, another volume's chain, a read-only chain. */
    unsigned files = count_layer_files(s, NULL);
    assert_fails(vd_snapshot_create_open(s->st, "v", "s1", c), -EEXIST);
    assert_fails(vd_snapshot_create_open(s->st, "w", "x", c), -EINVAL);
    struct vd_chain *ro = sopen(s, "v@s1", 0);
    assert_fails(vd_snapshot_create_open(s->st, "v", "x", ro), -EINVAL);
    close_chain(ro);
    assert_int_equal(count_layer_files(s, NULL), files);
    assert_int_equal(vd_chain_depth(c), 2);
    model_write(&m, c, 3 * MiB, 64 * KiB, 3);
    model_check(&m, c);
    close_chain(c);

    reopen(s);
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m, "v");
    assert_int_equal(vinfo(s, "v").snapshots, 1);
    assert_int_equal(vinfo(s, "v").depth, 2);
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
}

/* a -> b, rollback a, write, c: a tree with c and b both children of a. */
static void test_snapshot_list_tree(void **state)
{
    struct senv *s = *state;
    struct model m, ma, mb, mc;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mkvol(s, "other", SIZE);
    assert_rc(vd_snapshot_create(s->st, "other", "zz"), 0);
    struct vd_snapshot_info *a = NULL;
    size_t n = 9;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 0);
    free(a);

    mwrite(s, &m, "v", 0, 1 * MiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "a"), 0);
    model_dup(&ma, &m);
    mwrite(s, &m, "v", 512 * KiB, 1 * MiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "b"), 0);
    model_dup(&mb, &m);
    mwrite(s, &m, "v", 3 * MiB, 64 * KiB, 3);
    assert_rc(vd_snapshot_rollback(s->st, "v", "a"), 0);
    mcheck(s, &ma, "v");
    model_free(&m);
    model_dup(&m, &ma);
    mwrite(s, &m, "v", 2 * MiB, 128 * KiB, 4);
    assert_rc(vd_snapshot_create(s->st, "v", "c"), 0);
    model_dup(&mc, &m);
    mwrite(s, &m, "v", 2 * MiB, 4096, 5);

    a = NULL;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 3);
    /* oldest first (names chosen in creation order, times may tie) */
    assert_string_equal(a[0].name, "a");
    assert_string_equal(a[1].name, "b");
    assert_string_equal(a[2].name, "c");
    assert_true(a[0].create_time <= a[1].create_time);
    assert_true(a[1].create_time <= a[2].create_time);
    assert_string_equal(a[0].parent, "");
    assert_string_equal(a[1].parent, "a");
    assert_string_equal(a[2].parent, "a");
    assert_true(a[0].current);
    assert_false(a[1].current);
    assert_true(a[2].current);
    assert_int_equal(a[0].allocated, 1 * MiB);
    assert_int_equal(a[1].allocated, 1 * MiB);
    assert_int_equal(a[2].allocated, 128 * KiB);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].size, SIZE);
        assert_false(vd_uuid_is_null(&a[i].layer));
        for (size_t k = 0; k < i; k++)
            assert_memory_not_equal(&a[i].layer, &a[k].layer, sizeof(vd_uuid));
        char lp[4400];
        layer_file(s, &a[i].layer, lp, sizeof(lp));
        assert_true(file_exists(lp));
        assert_true(layer_info(lp).frozen);
    }
    free(a);
    /* other volumes' snapshots are not listed */
    assert_int_equal(snap_count(s, "other"), 1);

    /* Roll back to b: now b is current, c and a's relation stays. */
    assert_rc(vd_snapshot_rollback(s->st, "v", "b"), 0);
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 3);
    const struct vd_snapshot_info *sa = find_snap(a, n, "a"), *sb = find_snap(a, n, "b"),
                                  *sc = find_snap(a, n, "c");
    assert_non_null(sa);
    assert_non_null(sb);
    assert_non_null(sc);
    assert_true(sa->current);
    assert_true(sb->current);
    assert_false(sc->current);
    assert_string_equal(sc->parent, "a");
    free(a);
    mcheck(s, &ma, "v@a");
    mcheck(s, &mb, "v@b");
    mcheck(s, &mc, "v@c");
    mcheck(s, &mb, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&ma);
    model_free(&mb);
    model_free(&mc);
}

static void test_snapshot_rollback(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 512 * KiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 256 * KiB, 512 * KiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "s2"), 0);
    model_dup(&m2, &m);
    mwrite(s, &m, "v", 0, 4 * MiB, 3);               /* everything changes */
    unsigned depth = vinfo(s, "v").depth;

    assert_rc(vd_snapshot_rollback(s->st, "v", "s1"), 0);
    mcheck(s, &m1, "v");
    assert_int_equal(snap_count(s, "v"), 2);
    assert_int_equal(vinfo(s, "v").depth, 2);
    unsigned files = count_layer_files(s, NULL);
    /* write, roll back again */
    struct model tmp;
    model_dup(&tmp, &m1);
    mwrite(s, &tmp, "v", 1 * MiB, 1 * MiB, 4);
    mcheck(s, &tmp, "v");
    model_free(&tmp);
    assert_rc(vd_snapshot_rollback(s->st, "v", "s1"), 0);
    mcheck(s, &m1, "v");
    /* twice in a row */
    assert_rc(vd_snapshot_rollback(s->st, "v", "s1"), 0);
    mcheck(s, &m1, "v");
    assert_int_equal(count_layer_files(s, NULL), files);   /* old tops released */
    /* forward to s2, which is not an ancestor of the present */
    assert_rc(vd_snapshot_rollback(s->st, "v", "s2"), 0);
    mcheck(s, &m2, "v");
    assert_int_equal(vinfo(s, "v").depth, depth);
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m2, "v@s2");

    /* Another volume's snapshot, unknown names: -ENOENT, nothing changed. */
    mkvol(s, "w", SIZE);
    struct model mw;
    model_init(&mw, SIZE);
    mwrite(s, &mw, "w", 0, 64 * KiB, 9);
    assert_rc(vd_snapshot_create(s->st, "w", "ws"), 0);
    struct vd_volume_info before = vinfo(s, "v");
    assert_fails(vd_snapshot_rollback(s->st, "v", "ws"), -ENOENT);
    assert_fails(vd_snapshot_rollback(s->st, "w", "s1"), -ENOENT);
    assert_fails(vd_snapshot_rollback(s->st, "v", "nope"), -ENOENT);
    struct vd_volume_info after = vinfo(s, "v");
    assert_memory_equal(&before.top, &after.top, sizeof(vd_uuid));
    mcheck(s, &m2, "v");
    mcheck(s, &mw, "w");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
    model_free(&mw);
}

struct progress {
    unsigned calls;
    bool bad;          /* done > total seen */
    uint64_t last_done, last_total;
};

static void progress_cb(void *opaque, uint64_t done, uint64_t total)
{
    struct progress *p = opaque;
    p->calls++;
    if (done > total)
        p->bad = true;
    p->last_done = done;
    p->last_total = total;
}

static void test_snapshot_commit(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m3;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 1 * MiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 256 * KiB, 512 * KiB, 2);
    mwrite(s, &m, "v", 2 * MiB, 64 * KiB, 3);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&m, c, 64 * KiB, 64 * KiB);           /* hides s1's data */
    close_chain(c);
    assert_int_equal(vinfo(s, "v").depth, 2);

    /* commit the only snapshot: content kept, snapshot gone, one layer */
    struct progress p = { 0 };
    assert_rc(vd_snapshot_commit(s->st, "v", "s1", progress_cb, &p), 0);
    mcheck(s, &m, "v");
    assert_int_equal(snap_count(s, "v"), 0);
    struct vd_volume_info i = vinfo(s, "v");
    assert_int_equal(i.depth, 1);
    assert_int_equal(i.snapshots, 0);
    assert_int_equal(count_layer_files(s, NULL), 1);
    assert_false(p.bad);
    if (p.calls)
        assert_true(p.last_done == p.last_total);
    sopen_fails(s, "v@s1", 0, -ENOENT);
    expect_clean(s, NULL);
    c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);   /* still writable */
    model_write(&m, c, 3 * MiB, 4096, 4);
    close_chain(c);

    /* s1 -> s2 -> s3: commit the middle one */
    model_free(&m1);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 1 * MiB, 256 * KiB, 5);
    assert_rc(vd_snapshot_create(s->st, "v", "s2"), 0);
    mwrite(s, &m, "v", 1 * MiB + 128 * KiB, 256 * KiB, 6);
    assert_rc(vd_snapshot_create(s->st, "v", "s3"), 0);
    model_dup(&m3, &m);
    mwrite(s, &m, "v", 0, 4096, 7);
    unsigned depth = vinfo(s, "v").depth;
    assert_int_equal(depth, 4);
    assert_rc(vd_snapshot_commit(s->st, "v", "s2", NULL, NULL), 0);
    assert_int_equal(vinfo(s, "v").depth, depth - 1);
    mcheck(s, &m, "v");
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m3, "v@s3");
    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 2);
    assert_null(find_snap(a, n, "s2"));
    assert_non_null(find_snap(a, n, "s3"));
    assert_string_equal(find_snap(a, n, "s3")->parent, "s1");
    free(a);
    expect_clean(s, NULL);

    /* commit the newest: the top's data goes down into s3's layer */
    assert_rc(vd_snapshot_commit(s->st, "v", "s3", NULL, NULL), 0);
    assert_int_equal(vinfo(s, "v").depth, depth - 2);
    mcheck(s, &m, "v");
    mcheck(s, &m1, "v@s1");
    expect_clean(s, NULL);
    reopen(s);
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m3);
}

/* Commit refusals: a snapshot off the current history (-EINVAL), a
 * snapshot whose layer another branch shares (-EBUSY); nothing changed. */
static void test_snapshot_commit_refused(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 512 * KiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 128 * KiB, 512 * KiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "s2"), 0);
    model_dup(&m2, &m);
    assert_rc(vd_snapshot_rollback(s->st, "v", "s1"), 0);
    model_free(&m);
    model_dup(&m, &m1);
    mwrite(s, &m, "v", 2 * MiB, 64 * KiB, 3);

    mkvol(s, "w", SIZE);
    assert_rc(vd_snapshot_create(s->st, "w", "ws"), 0);
    struct vd_volume_info before = vinfo(s, "v");
    unsigned files = count_layer_files(s, NULL);
    assert_fails(vd_snapshot_commit(s->st, "v", "s2", NULL, NULL), -EINVAL);
    assert_contains(vd_errmsg(), "s2");
    assert_fails(vd_snapshot_commit(s->st, "v", "s1", NULL, NULL), -EBUSY);
    assert_fails(vd_snapshot_commit(s->st, "v", "nope", NULL, NULL), -ENOENT);
    assert_fails(vd_snapshot_commit(s->st, "v", "ws", NULL, NULL), -ENOENT);

    struct vd_volume_info after = vinfo(s, "v");
    assert_memory_equal(&before.top, &after.top, sizeof(vd_uuid));
    assert_int_equal(after.depth, before.depth);
    assert_int_equal(after.snapshots, 2);
    assert_int_equal(count_layer_files(s, NULL), files);
    mcheck(s, &m, "v");
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m2, "v@s2");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
}

/* A template made from the volume after a snapshot: its layer is the
 * snapshot layer's only child.  drop_snapshot (snapshot.c) does not see a
 * shared layer here (the snapshot's layer has one reference left and one
 * child) and merges downward: the template layer's data goes into the
 * snapshot's layer, which takes the template layer's UUID and replaces its
 * file -- today it returns 0.  Refusing with -EBUSY (nothing changed)
 * would be as correct.  Either way every volume, snapshot, template and
 * clone must read exactly as before, and the template keep its UUID. */
static void test_snapshot_commit_under_template(void **state)
{
    struct senv *s = *state;
    struct model m, m1, mt, mc;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 1 * MiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "v", 512 * KiB, 128 * KiB, 2);
    assert_rc(vd_template_create(s->st, "t", "v"), 0);
    model_dup(&mt, &m);
    mwrite(s, &m, "v", 1 * MiB, 64 * KiB, 3);
    assert_rc(vd_clone(s->st, "t", 0, "c", 0, NULL, NULL), 0);
    model_dup(&mc, &mt);
    mwrite(s, &mc, "c", 3 * MiB, 64 * KiB, 4);
    struct vd_template_version *v0 = NULL;
    size_t n0 = 0;
    tinfo(s, "t", &v0, &n0);
    assert_int_equal(n0, 1);
    unsigned depth = vinfo(s, "v").depth;
    assert_int_equal(depth, 3);

    int rc = vd_snapshot_commit(s->st, "v", "s1", NULL, NULL);
    assert_rc_either(rc, 0, -EBUSY);
    struct vd_template_version *v1 = NULL;
    size_t n1 = 0;
    tinfo(s, "t", &v1, &n1);
    assert_int_equal(n1, 1);
    /* The template still names the same layer UUID. */
    assert_memory_equal(&v0[0].layer, &v1[0].layer, sizeof(vd_uuid));
    free(v0);
    free(v1);
    if (rc == 0) {
        assert_int_equal(snap_count(s, "v"), 0);
        assert_int_equal(vinfo(s, "v").depth, depth - 1);
    } else {
        assert_errmsg();
        assert_int_equal(snap_count(s, "v"), 1);
        assert_int_equal(vinfo(s, "v").depth, depth);
        mcheck(s, &m1, "v@s1");
    }
    mcheck(s, &m, "v");
    mcheck(s, &mt, "t");
    mcheck(s, &mt, "t@1");
    mcheck(s, &mc, "c");
    expect_clean(s, NULL);
    /* New clones of the template still get its content. */
    assert_rc(vd_clone(s->st, "t", 1, "c2", 0, NULL, NULL), 0);
    mcheck(s, &mt, "c2");
    model_free(&m);
    model_free(&m1);
    model_free(&mt);
    model_free(&mc);
}

/* Remove snapshots anywhere in a tree; the others keep their content. */
static void test_snapshot_remove(void **state)
{
    struct senv *s = *state;
    struct model m, ma, mb, mc, md;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 1 * MiB, 1);
    assert_rc(vd_snapshot_create(s->st, "v", "a"), 0);
    model_dup(&ma, &m);
    mwrite(s, &m, "v", 512 * KiB, 1 * MiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "b"), 0);
    model_dup(&mb, &m);
    mwrite(s, &m, "v", 1 * MiB, 1 * MiB, 3);
    assert_rc(vd_snapshot_create(s->st, "v", "c"), 0);
    model_dup(&mc, &m);
    mwrite(s, &m, "v", 3 * MiB, 64 * KiB, 4);          /* discarded by the rollback */
    assert_rc(vd_snapshot_rollback(s->st, "v", "b"), 0);
    model_free(&m);
    model_dup(&m, &mb);
    mwrite(s, &m, "v", 2 * MiB + 512 * KiB, 256 * KiB, 5);
    assert_rc(vd_snapshot_create(s->st, "v", "d"), 0);
    model_dup(&md, &m);
    mwrite(s, &m, "v", 0, 8192, 6);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&m, c, 512 * KiB, 4096);
    close_chain(c);
    /* Tree: a <- b <- {c, d <- v} */

    assert_fails(vd_snapshot_remove(s->st, "v", "nope"), -ENOENT);
    assert_int_equal(snap_count(s, "v"), 4);

    /* b has two children: its name goes, its data stays for c and d */
    assert_rc(vd_snapshot_remove(s->st, "v", "b"), 0);
    sopen_fails(s, "v@b", 0, -ENOENT);
    mcheck(s, &ma, "v@a");
    mcheck(s, &mc, "v@c");
    mcheck(s, &md, "v@d");
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(find_snap(a, n, "c")->parent, "a");
    assert_string_equal(find_snap(a, n, "d")->parent, "a");
    free(a);

    /* the root */
    assert_rc(vd_snapshot_remove(s->st, "v", "a"), 0);
    mcheck(s, &mc, "v@c");
    mcheck(s, &md, "v@d");
    mcheck(s, &m, "v");
    expect_clean(s, NULL);

    /* a leaf of another branch: its space goes */
    unsigned files = count_layer_files(s, NULL);
    assert_rc(vd_snapshot_remove(s->st, "v", "c"), 0);
    assert_true(count_layer_files(s, NULL) < files);
    mcheck(s, &md, "v@d");
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(a[0].name, "d");
    assert_string_equal(a[0].parent, "");
    assert_true(a[0].current);
    free(a);

    /* the volume's own parent */
    assert_rc(vd_snapshot_remove(s->st, "v", "d"), 0);
    mcheck(s, &m, "v");
    assert_int_equal(snap_count(s, "v"), 0);
    expect_clean(s, NULL);
    /* With no snapshot left, nothing needs more than one layer. */
    struct vd_volume_info i = vinfo(s, "v");
    assert_int_equal(i.snapshots, 0);
    assert_int_equal(i.depth, 1);
    assert_int_equal(count_layer_files(s, NULL), 1);
    reopen(s);
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&ma);
    model_free(&mb);
    model_free(&mc);
    model_free(&md);
}

/* ================================================================== */
/* Templates and clones                                                */
/* ================================================================== */

static void test_template_versions(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2;
    model_init(&m, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &m, "src", 0, 1 * MiB, 1);
    uint64_t t0 = (uint64_t)time(NULL);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    model_dup(&m1, &m);

    struct vd_template_version *v = NULL;
    size_t nv = 0;
    struct vd_template_info ti = tinfo(s, "tpl", &v, &nv);
    assert_string_equal(ti.name, "tpl");
    assert_int_equal(ti.versions, 1);
    assert_int_equal(ti.latest, 1);
    assert_int_equal(ti.clones, 0);
    assert_int_equal(ti.size, SIZE);
    assert_true(ti.create_time >= t0 && ti.create_time <= (uint64_t)time(NULL));
    assert_int_equal(nv, 1);
    assert_int_equal(v[0].version, 1);
    assert_int_equal(v[0].size, SIZE);
    assert_int_equal(v[0].clones, 0);
    assert_false(vd_uuid_is_null(&v[0].layer));
    free(v);
    /* the source volume goes on, the template does not move */
    mwrite(s, &m, "src", 512 * KiB, 1 * MiB, 2);
    mcheck(s, &m1, "tpl");
    mcheck(s, &m, "src");
    assert_string_equal(vinfo(s, "src").template_name, "");

    /* version 2, larger */
    assert_rc(vd_volume_resize(s->st, "src", 2 * SIZE), 0);
    model_init(&m2, 2 * SIZE);
    memcpy(m2.data, m.data, SIZE);
    model_free(&m);
    model_dup(&m, &m2);
    mwrite(s, &m, "src", SIZE + 64 * KiB, 64 * KiB, 3);
    model_free(&m2);
    model_dup(&m2, &m);
    assert_rc(vd_template_update(s->st, "tpl", "src"), 0);
    mwrite(s, &m, "src", 0, 4096, 4);

    /* clones: linked of the latest and of v1, full of both */
    assert_rc(vd_clone(s->st, "tpl", 0, "l2", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "tpl", 1, "l1", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "tpl", 1, "l1b", 0, NULL, NULL), 0);
    struct progress p1 = { 0 }, p2 = { 0 };
    assert_rc(vd_clone(s->st, "tpl", 1, "f1", VD_CLONE_FULL, progress_cb, &p1), 0);
    assert_rc(vd_clone(s->st, "tpl", 2, "f2", VD_CLONE_FULL, progress_cb, &p2), 0);
    assert_false(p1.bad);
    assert_false(p2.bad);

    struct vd_volume_info i = vinfo(s, "l2");
    assert_string_equal(i.template_name, "tpl");
    assert_int_equal(i.template_version, 2);
    assert_int_equal(i.size, 2 * SIZE);
    assert_int_equal(i.allocated, 0);
    i = vinfo(s, "l1");
    assert_string_equal(i.template_name, "tpl");
    assert_int_equal(i.template_version, 1);
    assert_int_equal(i.size, SIZE);
    i = vinfo(s, "f1");
    assert_string_equal(i.template_name, "");
    assert_int_equal(i.template_version, 0);
    assert_int_equal(i.depth, 1);
    assert_int_equal(i.size, SIZE);
    i = vinfo(s, "f2");
    assert_string_equal(i.template_name, "");
    assert_int_equal(i.depth, 1);
    assert_int_equal(i.size, 2 * SIZE);
    mcheck(s, &m2, "l2");
    mcheck(s, &m1, "l1");
    mcheck(s, &m1, "l1b");
    mcheck(s, &m1, "f1");
    mcheck(s, &m2, "f2");
    mcheck(s, &m2, "tpl");
    mcheck(s, &m1, "tpl@1");
    mcheck(s, &m2, "tpl@2");
    mcheck(s, &m, "src");

    /* info and list: versions, clones per version, sizes */
    v = NULL;
    ti = tinfo(s, "tpl", &v, &nv);
    assert_int_equal(ti.versions, 2);
    assert_int_equal(ti.latest, 2);
    assert_int_equal(ti.clones, 3);
    assert_int_equal(ti.size, 2 * SIZE);
    assert_int_equal(nv, 2);
    for (size_t k = 0; k < nv; k++) {
        if (v[k].version == 1) {
            assert_int_equal(v[k].clones, 2);
            assert_int_equal(v[k].size, SIZE);
        } else {
            assert_int_equal(v[k].version, 2);
            assert_int_equal(v[k].clones, 1);
            assert_int_equal(v[k].size, 2 * SIZE);
        }
        assert_true(v[k].create_time >= t0);
    }
    assert_memory_not_equal(&v[0].layer, &v[1].layer, sizeof(vd_uuid));
    free(v);
    /* without the versions array */
    ti = tinfo(s, "tpl", NULL, NULL);
    assert_int_equal(ti.versions, 2);
    struct vd_template_info *tl = NULL;
    size_t nt = 0;
    assert_rc(vd_template_create(s->st, "another", "f1"), 0);
    assert_rc(vd_template_list(s->st, &tl, &nt), 0);
    assert_int_equal(nt, 2);
    const struct vd_template_info *lt = NULL;
    for (size_t k = 0; k < nt; k++)
        if (strcmp(tl[k].name, "tpl") == 0)
            lt = &tl[k];
    assert_non_null(lt);
    assert_int_equal(lt->versions, 2);
    assert_int_equal(lt->latest, 2);
    assert_int_equal(lt->clones, 3);
    assert_int_equal(lt->size, 2 * SIZE);
    free(tl);

    /* Clones are independent of each other and of the template. */
    struct model mx;
    model_dup(&mx, &m1);
    mwrite(s, &mx, "l1", 0, 64 * KiB, 7);
    mwrite(s, &mx, "l1", 3 * MiB, 64 * KiB, 7);
    mcheck(s, &mx, "l1");
    mcheck(s, &m1, "l1b");
    mcheck(s, &m1, "tpl@1");
    struct model mf;
    model_dup(&mf, &m1);
    mwrite(s, &mf, "f1", 0, 64 * KiB, 8);
    mcheck(s, &mf, "f1");
    mcheck(s, &m1, "tpl@1");
    /* A full clone is a volume like any other. */
    assert_rc(vd_snapshot_create(s->st, "f2", "x"), 0);
    assert_rc(vd_snapshot_rollback(s->st, "f2", "x"), 0);
    mcheck(s, &m2, "f2");
    expect_clean(s, NULL);
    model_free(&mx);
    model_free(&mf);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
}

static void test_template_remove(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2, mc;
    model_init(&m, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &m, "src", 0, 1 * MiB, 1);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    model_dup(&m1, &m);
    mwrite(s, &m, "src", 256 * KiB, 256 * KiB, 2);
    assert_rc(vd_template_update(s->st, "tpl", "src"), 0);
    model_dup(&m2, &m);
    mwrite(s, &m, "src", 2 * MiB, 64 * KiB, 3);
    assert_rc(vd_clone(s->st, "tpl", 1, "c1", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "tpl", 2, "c2", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "tpl", 0, "full", VD_CLONE_FULL, NULL, NULL), 0);
    model_dup(&mc, &m2);
    mwrite(s, &mc, "c2", 3 * MiB, 128 * KiB, 4);
    unsigned files = count_layer_files(s, NULL);

    assert_fails(vd_template_remove(s->st, "tpl"), -EBUSY);
    assert_contains(vd_errmsg(), "c1");
    assert_contains(vd_errmsg(), "c2");
    if (strstr(vd_errmsg(), "full"))
        fail_msg("a full clone is named as depending on the template: %s", vd_errmsg());
    assert_int_equal(template_count(s), 1);
    assert_int_equal(tinfo(s, "tpl", NULL, NULL).versions, 2);
    assert_int_equal(count_layer_files(s, NULL), files);
    mcheck(s, &m1, "tpl@1");
    mcheck(s, &m2, "tpl@2");

    assert_rc(vd_volume_remove(s->st, "c1"), 0);
    assert_fails(vd_template_remove(s->st, "tpl"), -EBUSY);
    assert_contains(vd_errmsg(), "c2");
    if (strstr(vd_errmsg(), "c1"))
        fail_msg("a removed clone is still named: %s", vd_errmsg());
    assert_int_equal(tinfo(s, "tpl", NULL, NULL).clones, 1);

    /* flatten makes c2 independent, with its content */
    struct progress p = { 0 };
    assert_rc(vd_volume_flatten(s->st, "c2", progress_cb, &p), 0);
    assert_false(p.bad);
    struct vd_volume_info i = vinfo(s, "c2");
    assert_string_equal(i.template_name, "");
    assert_int_equal(i.template_version, 0);
    assert_int_equal(i.depth, 1);
    mcheck(s, &mc, "c2");
    assert_int_equal(tinfo(s, "tpl", NULL, NULL).clones, 0);

    assert_rc(vd_template_remove(s->st, "tpl"), 0);
    assert_int_equal(template_count(s), 0);
    sopen_fails(s, "tpl", 0, -ENOENT);
    sopen_fails(s, "tpl@1", 0, -ENOENT);
    struct vd_template_info ti;
    assert_fails(vd_template_info(s->st, "tpl", &ti, NULL, NULL), -ENOENT);
    assert_fails(vd_clone(s->st, "tpl", 0, "c3", 0, NULL, NULL), -ENOENT);
    mcheck(s, &mc, "c2");
    mcheck(s, &m2, "full");
    mcheck(s, &m, "src");
    expect_clean(s, NULL);
    /* the name can be reused, for a volume too */
    mkvol(s, "tpl", SIZE);
    assert_rc(vd_volume_remove(s->st, "tpl"), 0);
    assert_rc(vd_template_create(s->st, "tpl", "c2"), 0);
    mcheck(s, &mc, "tpl");
    assert_int_equal(tinfo(s, "tpl", NULL, NULL).versions, 1);
    expect_clean(s, NULL);

    /* everything removed: no layer file left */
    assert_rc(vd_volume_remove(s->st, "c2"), 0);
    assert_rc(vd_template_remove(s->st, "tpl"), 0);
    assert_rc(vd_volume_remove(s->st, "full"), 0);
    assert_rc(vd_volume_remove(s->st, "src"), 0);
    assert_int_equal(count_layer_files(s, NULL), 0);
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
    model_free(&mc);
}

static void test_flatten(void **state)
{
    struct senv *s = *state;
    struct model mt, mc;
    model_init(&mt, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &mt, "src", 0, 2 * MiB, 1);
    struct vd_chain *c = sopen(s, "src", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&mt, c, 1 * MiB, 64 * KiB);
    close_chain(c);
    assert_rc(vd_template_create(s->st, "tpl", "src"), 0);
    assert_rc(vd_clone(s->st, "tpl", 0, "c", 0, NULL, NULL), 0);
    model_dup(&mc, &mt);
    mwrite(s, &mc, "c", 512 * KiB, 64 * KiB, 2);
    c = sopen(s, "c", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    model_zero(&mc, c, 0, 64 * KiB);            /* hides template data */
    model_discard(&mc, c, 128 * KiB, 4096);
    close_chain(c);
    assert_int_equal(vinfo(s, "c").depth, 2);

    assert_rc(vd_volume_flatten(s->st, "c", NULL, NULL), 0);
    struct vd_volume_info i = vinfo(s, "c");
    assert_int_equal(i.depth, 1);
    assert_string_equal(i.template_name, "");
    mcheck(s, &mc, "c");
    /* again: nothing to do */
    assert_rc(vd_volume_flatten(s->st, "c", NULL, NULL), 0);
    mcheck(s, &mc, "c");
    assert_int_equal(tinfo(s, "tpl", NULL, NULL).clones, 0);
    /* independent: the template can go, the clone keeps its content */
    assert_rc(vd_template_remove(s->st, "tpl"), 0);
    mcheck(s, &mc, "c");
    mcheck(s, &mt, "src");
    expect_clean(s, NULL);

    /* a volume that is not a linked clone: flatten leaves it alone, its
     * snapshot stays in its history and can still be rolled back to */
    struct model m, ms;
    model_init(&m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, &m, "v", 0, 1 * MiB, 3);
    assert_rc(vd_snapshot_create(s->st, "v", "s"), 0);
    model_dup(&ms, &m);
    mwrite(s, &m, "v", 512 * KiB, 64 * KiB, 4);
    assert_rc(vd_volume_flatten(s->st, "v", NULL, NULL), 0);
    assert_int_equal(vinfo(s, "v").depth, 2);
    mcheck(s, &m, "v");
    mcheck(s, &ms, "v@s");
    expect_clean(s, NULL);
    assert_rc(vd_snapshot_rollback(s->st, "v", "s"), 0);
    mcheck(s, &ms, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&ms);
    model_free(&mt);
    model_free(&mc);
}

/* ================================================================== */
/* Space                                                               */
/* ================================================================== */

static void test_usage(void **state)
{
    struct senv *s = *state;
    struct vd_store_usage u;
    memset(&u, 0xff, sizeof(u));
    assert_rc(vd_store_usage(s->st, &u), 0);
    assert_int_equal(u.volumes, 0);
    assert_int_equal(u.templates, 0);
    assert_int_equal(u.snapshots, 0);
    assert_int_equal(u.layers, 0);
    assert_int_equal(u.virtual_size, 0);
    assert_true(u.fs_size > 0);
    assert_true(u.fs_free <= u.fs_size);

    mkvol(s, "a", 1 * MiB);
    mkvol(s, "b", 3 * MiB);
    struct vd_store_usage u1;
    assert_rc(vd_store_usage(s->st, &u1), 0);
    assert_int_equal(u1.volumes, 2);
    assert_int_equal(u1.virtual_size, 4 * MiB);
    assert_int_equal(u1.layers, 2);

    struct vd_chain *c = sopen(s, "b", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 2 * MiB, 1);
    close_chain(c);
    struct vd_store_usage u2;
    assert_rc(vd_store_usage(s->st, &u2), 0);
    assert_true(u2.allocated >= u1.allocated + 2 * MiB);
    assert_true(u2.allocated > 0);

    assert_rc(vd_snapshot_create(s->st, "b", "s"), 0);
    assert_rc(vd_template_create(s->st, "t", "a"), 0);
    assert_rc(vd_clone(s->st, "t", 0, "c", 0, NULL, NULL), 0);
    assert_rc(vd_volume_resize(s->st, "c", 5 * MiB), 0);
    struct vd_store_usage u3;
    assert_rc(vd_store_usage(s->st, &u3), 0);
    assert_int_equal(u3.volumes, 3);
    assert_int_equal(u3.templates, 1);
    assert_int_equal(u3.snapshots, 1);
    assert_int_equal(u3.virtual_size, 1 * MiB + 3 * MiB + 5 * MiB);
    assert_int_equal(u3.layers, count_layer_files(s, NULL));
    /* a: its first layer (now t's) and a top; b: s and a top; c: a delta
     * over t's layer, grown in place */
    assert_int_equal(u3.layers, 5);
    assert_true(u3.fs_size > 0);
    assert_true(u3.fs_free <= u3.fs_size);
}

/* ================================================================== */
/* Checking                                                            */
/* ================================================================== */

/* A store with a bit of everything. */
static void populate(struct senv *s)
{
    struct vd_create_opts o = { .digest = VD_DIGEST_SHA256 };
    assert_rc(vd_volume_create(s->st, "v", SIZE, &o), 0);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 0, 1 * MiB, 1);
    close_chain(c);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    c = sopen(s, "v", VD_OPEN_RDWR | VD_OPEN_BUFFERED);
    write_pattern(c, 512 * KiB, 256 * KiB, 2);
    close_chain(c);
    assert_rc(vd_template_create(s->st, "t", "v"), 0);
    assert_rc(vd_clone(s->st, "t", 0, "lc", 0, NULL, NULL), 0);
    assert_rc(vd_clone(s->st, "t", 0, "fc", VD_CLONE_FULL, NULL, NULL), 0);
    mkvol(s, "w", SIZE);
}

static void test_check_clean(void **state)
{
    struct senv *s = *state;
    expect_clean(s, NULL);
    populate(s);
    expect_clean(s, NULL);
    struct vd_check_result r;
    struct msgs ms = { 0 };
    assert_rc(vd_store_check(s->st, NULL, VD_CHECK_VERIFY, &r, msgs_report, &ms), 0);
    msgs_free(&ms);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaked_bytes, 0);
    assert_int_equal(r.digest_mismatches, 0);
    assert_true(r.blocks_checked > 0);
    /* report may be NULL */
    assert_rc(vd_store_check(s->st, NULL, VD_CHECK_REPAIR, &r, NULL, NULL), 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.repaired, 0);
    expect_clean(s, "v");
    expect_clean(s, "lc");
    expect_clean(s, "t");
}

static void test_check_stray_file(void **state)
{
    struct senv *s = *state;
    populate(s);
    struct vd_volume_info i = vinfo(s, "fc");
    char lp[4400], stray[4400];
    layer_file(s, &i.top, lp, sizeof(lp));
    snprintf(stray, sizeof(stray), "%s/layers/01234567-89ab-4def-8123-456789abcdef.vdk",
             s->path);
    size_t n = 0;
    uint8_t *data = read_whole_file(lp, &n);
    write_file(stray, data, n);
    free(data);
    assert_true(file_allocated_bytes(stray) > 0);

    struct vd_check_result r;
    struct msgs ms = { 0 };
    assert_rc(vd_store_check(s->st, NULL, 0, &r, msgs_report, &ms), 0);
    bool named = false;
    for (unsigned k = 0; k < ms.n && k < MSGS_MAX; k++)
        if (strstr(ms.m[k], "01234567-89ab-4def-8123-456789abcdef"))
            named = true;
    msgs_free(&ms);
    assert_int_equal(r.corruptions, 0);
    assert_true(r.leaked_bytes > 0);
    assert_true(r.leaked_bytes >= file_allocated_bytes(stray));
    assert_true(named);
    assert_true(file_exists(stray));          /* not removed without REPAIR */

    assert_rc(vd_store_check(s->st, NULL, VD_CHECK_REPAIR, &r, NULL, NULL), 0);
    assert_true(r.repaired >= 1);
    assert_false(file_exists(stray));
    expect_clean(s, NULL);
    vol_expect_pattern(s, "fc", 0, 512 * KiB, 1);
    vol_expect_pattern(s, "fc", 512 * KiB, 256 * KiB, 2);
}

static void test_check_missing_layer(void **state)
{
    struct senv *s = *state;
    populate(s);
    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    assert_rc(vd_snapshot_list(s->st, "v", &a, &n), 0);
    assert_int_equal(n, 1);
    char lp[4400], us[37];
    layer_file(s, &a[0].layer, lp, sizeof(lp));
    vd_uuid_format(&a[0].layer, us);
    free(a);
    assert_int_equal(unlink(lp), 0);

    struct vd_check_result r;
    struct msgs ms = { 0 };
    assert_rc(vd_store_check(s->st, NULL, 0, &r, msgs_report, &ms), 0);
    bool named = false;
    for (unsigned k = 0; k < ms.n && k < MSGS_MAX; k++)
        if (strstr(ms.m[k], us) && strlen(ms.m[k]) > strlen(us))
            named = true;
    msgs_free(&ms);
    assert_true(r.corruptions > 0);
    assert_true(named);
    /* The volume through it reports it too; one that does not use it
     * still opens and reads. */
    memset(&ms, 0, sizeof(ms));
    assert_rc(vd_store_check(s->st, "v", 0, &r, msgs_report, &ms), 0);
    msgs_free(&ms);
    assert_true(r.corruptions > 0);
    struct vd_chain *c = NULL;
    int rc = vd_store_open_chain(s->st, s->t->ctx, "v", 0, &c);
    if (rc == 0)
        close_chain(c);
    assert_true(rc < 0);
    assert_errmsg();
    vol_expect_pattern(s, "fc", 0, 512 * KiB, 1);
    /* REPAIR cannot bring a file back: still corrupt, no crash. */
    assert_rc(vd_store_check(s->st, NULL, VD_CHECK_REPAIR, &r, NULL, NULL), 0);
    assert_true(r.corruptions > 0);
}

static void test_check_by_name(void **state)
{
    struct senv *s = *state;
    populate(s);
    struct vd_check_result r;
    assert_rc(vd_store_check(s->st, "v", VD_CHECK_VERIFY, &r, NULL, NULL), 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.digest_mismatches, 0);
    assert_true(r.blocks_checked > 0);
    assert_fails(vd_store_check(s->st, "nope", 0, &r, NULL, NULL), -ENOENT);
    assert_contains(vd_errmsg(), "nope");
    /* Damage in w's only layer: the check of w sees it. */
    struct vd_volume_info i = vinfo(s, "w");
    char lp[4400];
    layer_file(s, &i.top, lp, sizeof(lp));
    uint8_t junk[4096];
    memset(junk, 0x5a, sizeof(junk));
    patch_file(lp, 8192, junk, sizeof(junk));      /* the L1 table */
    patch_file(lp, 8192 + 4096, junk, sizeof(junk));
    struct msgs ms = { 0 };
    assert_rc(vd_store_check(s->st, "w", 0, &r, msgs_report, &ms), 0);
    msgs_free(&ms);
    assert_true(r.corruptions > 0);
    /* Checking another volume still runs (and looks at its own chain). */
    assert_rc(vd_store_check(s->st, "lc", 0, &r, NULL, NULL), 0);
    assert_true(r.blocks_checked > 0);
}

/* ------------------------------------------------------------------ */
/* Online commit (commit.c)                                            */
/* ------------------------------------------------------------------ */

/* Pumps j until it is ready, with nwrites random writes and zeroes
 * through c in between (recorded in m). */
static void commit_run(struct senv *s, struct vd_commit *j, struct vd_chain *c,
                       struct model *m, unsigned nwrites, uint64_t *rng)
{
    struct vd_commit_status cs;
    unsigned w = 0;
    for (unsigned guard = 0; guard < 100000; guard++) {
        assert_true(vd_commit_pump(j, 2) >= 0);
        if (w < nwrites) {
            uint64_t len = (1 + rng_below(rng, 24)) * 4 * KiB;
            uint64_t off = rng_below(rng, (SIZE - len) / 512) * 512;
            if (w % 5 == 4)
                model_zero(m, c, off & ~(4 * KiB - 1), 4 * KiB);
            else
                model_write(m, c, off, (size_t)len, 100 + w);
            w++;
        }
        vd_commit_status(j, &cs);
        assert_true(cs.done <= cs.total);
        if (w >= nwrites && cs.ready && cs.inflight == 0)
            return;
        if (cs.inflight)
            vd_ctx_poll(s->t->ctx, -1);
    }
    fail_msg("the commit never got ready");
}

/* A volume with snapshot s1 over 1 MiB of data and writes after it. */
static void commit_setup(struct senv *s, struct model *m, struct model *m1)
{
    model_init(m, SIZE);
    mkvol(s, "v", SIZE);
    mwrite(s, m, "v", 0, 1 * MiB, 1);
    mwrite(s, m, "v", 2 * MiB, 512 * KiB, 2);
    assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
    model_dup(m1, m);
    mwrite(s, m, "v", 256 * KiB, 300 * KiB, 3);
    mwrite(s, m, "v", 3 * MiB + 512, 8 * KiB, 4);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    model_zero(m, c, 2 * MiB + 64 * KiB, 64 * KiB);   /* hides s1's data */
    close_chain(c);
}

static uint64_t snap_layer_size(struct senv *s, const char *vol, const char *snap)
{
    struct vd_snapshot_info *a = NULL;
    size_t n = 0;
    char lp[4400];
    struct stat sb;
    assert_rc(vd_snapshot_list(s->st, vol, &a, &n), 0);
    const struct vd_snapshot_info *i = find_snap(a, n, snap);
    assert_non_null(i);
    layer_file(s, &i->layer, lp, sizeof(lp));
    free(a);
    assert_int_equal(stat(lp, &sb), 0);
    return (uint64_t)sb.st_size;
}

/* The snapshot is committed while the volume is open and written: the
 * open chain reads the same before and after, goes on writing, and the
 * store ends with one layer and no snapshot. */
static void test_commit_online(void **state)
{
    struct senv *s = *state;
    struct model m, m1;
    uint64_t rng = 42, pause = 0;
    commit_setup(s, &m, &m1);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    struct vd_commit *j = NULL;
    assert_rc(vd_commit_start(s->st, "v", "s1", c, &j), 0);
    struct vd_commit *j2 = NULL;
    assert_fails(vd_commit_start(s->st, "v", "s1", c, &j2), -EBUSY);
    /* Other processes may not drop the snapshot meanwhile. */
    assert_fails(vd_snapshot_remove(s->st, "v", "s1"), -EBUSY);
    assert_contains(vd_errmsg(), "being committed");
    commit_run(s, j, c, &m, 60, &rng);
    model_write(&m, c, 64 * KiB, 8 * KiB, 200);     /* dirty at the switch */
    assert_rc(vd_commit_finish(j, &pause), 0);
    assert_true(pause > 0);
    assert_int_equal(vd_chain_depth(c), 1);

    model_check(&m, c);
    model_write(&m, c, 1 * MiB, 64 * KiB, 201);
    model_check(&m, c);
    close_chain(c);
    mcheck(s, &m, "v");
    assert_int_equal(snap_count(s, "v"), 0);
    assert_int_equal(vinfo(s, "v").depth, 1);
    assert_int_equal(count_layer_files(s, NULL), 1);
    expect_clean(s, NULL);
    reopen(s);
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
}

/* A sub-block zeroed in the top over the snapshot's data, in a block the
 * top holds no data in: the merged block keeps the snapshot layer's slot,
 * and that sub-block's old bytes are given back at the switch, before the
 * chain writes again (a write there goes to the same place). */
static void test_commit_online_punch(void **state)
{
    struct senv *s = *state;
    struct model m, m1;
    uint64_t rng = 3;
    commit_setup(s, &m, &m1);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    model_zero(&m, c, 704 * KiB + 12 * KiB, 4 * KiB);
    struct vd_commit *j = NULL;
    assert_rc(vd_commit_start(s->st, "v", "s1", c, &j), 0);
    commit_run(s, j, c, &m, 0, &rng);
    assert_rc(vd_commit_finish(j, NULL), 0);
    model_write(&m, c, 704 * KiB + 12 * KiB, 4 * KiB, 203);
    usleep(200000);
    model_check(&m, c);
    close_chain(c);
    mcheck(s, &m, "v");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
}

/* Committing an older snapshot: the layer above it is another snapshot's
 * (frozen), and a snapshot taken during the job freezes the top. */
static void test_commit_online_middle(void **state)
{
    struct senv *s = *state;
    struct model m, m1, m2, m3;
    uint64_t rng = 7;
    commit_setup(s, &m, &m1);
    assert_rc(vd_snapshot_create(s->st, "v", "s2"), 0);
    model_dup(&m2, &m);
    mwrite(s, &m, "v", 512 * KiB, 64 * KiB, 5);
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    struct vd_commit *j = NULL;
    /* s2: its layer's child is the top */
    assert_rc(vd_commit_start(s->st, "v", "s2", c, &j), 0);
    commit_run(s, j, c, &m, 10, &rng);
    assert_rc(vd_snapshot_create_open(s->st, "v", "s3", c), 0);
    model_dup(&m3, &m);
    model_write(&m, c, 0, 16 * KiB, 300);
    commit_run(s, j, c, &m, 10, &rng);
    assert_rc(vd_commit_finish(j, NULL), 0);
    model_check(&m, c);
    close_chain(c);
    mcheck(s, &m, "v");
    mcheck(s, &m1, "v@s1");
    mcheck(s, &m3, "v@s3");
    sopen_fails(s, "v@s2", 0, -ENOENT);
    expect_clean(s, NULL);
    /* s1 under s3: its child is frozen, the top is two layers up */
    c = sopen(s, "v", VD_OPEN_RDWR);
    assert_rc(vd_commit_start(s->st, "v", "s1", c, &j), 0);
    commit_run(s, j, c, &m, 10, &rng);
    assert_rc(vd_commit_finish(j, NULL), 0);
    model_check(&m, c);
    close_chain(c);
    mcheck(s, &m, "v");
    mcheck(s, &m3, "v@s3");
    assert_int_equal(snap_count(s, "v"), 1);
    expect_clean(s, NULL);
    reopen(s);
    mcheck(s, &m, "v");
    mcheck(s, &m3, "v@s3");
    expect_clean(s, NULL);
    model_free(&m);
    model_free(&m1);
    model_free(&m2);
    model_free(&m3);
}

/* Cancelled, or refused: nothing changed, the snapshot's layer is back to
 * its size. */
static void test_commit_online_cancel(void **state)
{
    struct senv *s = *state;
    struct model m, m1;
    uint64_t rng = 9;
    commit_setup(s, &m, &m1);
    uint64_t size0 = snap_layer_size(s, "v", "s1");
    struct vd_chain *c = sopen(s, "v", VD_OPEN_RDWR);
    struct vd_commit *j = NULL;
    assert_fails(vd_commit_start(s->st, "v", "nope", c, &j), -ENOENT);
    assert_rc(vd_commit_start(s->st, "v", "s1", c, &j), 0);
    commit_run(s, j, c, &m, 20, &rng);
    vd_commit_cancel(j);
    model_check(&m, c);
    close_chain(c);
    mcheck(s, &m, "v");
    mcheck(s, &m1, "v@s1");
    assert_int_equal(snap_layer_size(s, "v", "s1"), size0);
    expect_clean(s, NULL);
    /* a read-only chain is not the volume open for writing */
    c = sopen(s, "v", 0);
    assert_fails(vd_commit_start(s->st, "v", "s1", c, &j), -EINVAL);
    close_chain(c);
    model_free(&m);
    model_free(&m1);
}

/* Killed at every point: before the switch the snapshot is intact and its
 * layer cut back; after it, the merge completes.  The volume always reads
 * what was written. */
static void test_commit_online_crash(void **state)
{
    struct senv *s = *state;
    struct model m, m1;
    commit_setup(s, &m, &m1);
    uint64_t size0 = snap_layer_size(s, "v", "s1");
    unsigned points = 0;
    for (unsigned n = 0; n < 20; n++) {
        /* n == 0: killed in the middle of the copy. */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct vd_store *st = NULL;
            struct vd_ctx *ctx = NULL;
            struct vd_chain *c = NULL;
            struct vd_commit *j = NULL;
            struct vd_commit_status cs;
            if (vd_store_open(s->path, 0, &st) || vd_ctx_new(64, &ctx) ||
                vd_store_open_chain(st, ctx, "v", VD_OPEN_RDWR, &c) ||
                vd_commit_start(st, "v", "s1", c, &j))
                _exit(2);
            do {
                vd_commit_pump(j, 2);
                vd_ctx_poll(ctx, -1);
                vd_commit_status(j, &cs);
            } while (!cs.ready || cs.inflight);
            if (n == 0)
                raise(SIGKILL);
            vdi_set_kill_step(n);
            int r = vd_commit_finish(j, NULL);
            _exit(r == 0 ? 0 : 3);
        }
        int ws;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        bool killed = WIFSIGNALED(ws);
        if (!killed)
            assert_int_equal(WEXITSTATUS(ws), 0);
        reopen(s);
        mcheck(s, &m, "v");
        expect_clean(s, NULL);
        if (snap_count(s, "v") == 1) {
            mcheck(s, &m1, "v@s1");
            assert_int_equal(snap_layer_size(s, "v", "s1"), size0);
        }
        if (!killed)
            break;   /* the last point passed: committed */
        points++;
        /* Taken again for the next point. */
        if (snap_count(s, "v") == 0) {
            assert_rc(vd_snapshot_create(s->st, "v", "s1"), 0);
            model_free(&m1);
            model_dup(&m1, &m);
            mwrite(s, &m, "v", 128 * KiB, 40 * KiB, 50 + n);
            size0 = snap_layer_size(s, "v", "s1");
        }
    }
    assert_true(points >= 3);
    assert_int_equal(snap_count(s, "v"), 0);
    model_free(&m);
    model_free(&m1);
}

/* ------------------------------------------------------------------ */
/* Desktop pools (pool.c)                                              */
/* ------------------------------------------------------------------ */

static unsigned pool_count(struct senv *s, const char *pool, enum vd_pool_state st)
{
    struct vd_pool_info i;
    struct vd_pool_clone *c = NULL;
    size_t n = 0;
    unsigned k = 0;
    assert_rc(vd_pool_info(s->st, pool, &i, &c, &n), 0);
    for (size_t x = 0; x < n; x++)
        k += c[x].state == st;
    free(c);
    return k;
}

/* Ephemeral: spares made at create, one distinct clone per session, the
 * clone gone after it, spares refilled, the size a hard limit; clones read
 * the template and keep their writes. */
static void test_pool_ephemeral(void **state)
{
    struct senv *s = *state;
    struct model m;
    char vols[6][VD_NAME_MAX + 1], pool[VD_NAME_MAX + 1];
    model_init(&m, SIZE);
    mkvol(s, "src", SIZE);
    mwrite(s, &m, "src", 0, 1 * MiB, 1);
    assert_rc(vd_template_create(s->st, "gold", "src"), 0);
    assert_fails(vd_pool_create(s->st, "p", "nosuch", 0, 4, 2, VD_POOL_EPHEMERAL), -ENOENT);
    assert_fails(vd_pool_create(s->st, "p", "gold", 0, 2, 3, VD_POOL_EPHEMERAL), -EINVAL);
    assert_fails(vd_pool_create(s->st, "p/x", "gold", 0, 2, 1, VD_POOL_EPHEMERAL), -EINVAL);
    assert_rc(vd_pool_create(s->st, "p", "gold", 0, 5, 2, VD_POOL_EPHEMERAL), 0);
    assert_fails(vd_pool_create(s->st, "p", "gold", 0, 5, 2, VD_POOL_EPHEMERAL), -EEXIST);
    struct vd_pool_info i;
    assert_rc(vd_pool_info(s->st, "p", &i, NULL, NULL), 0);
    assert_int_equal(i.clones, 2);
    assert_int_equal(i.ready, 2);
    assert_int_equal(i.version, 1);
    assert_fails(vd_pool_take(s->st, "p", "alice", "x", vols[0]), -EINVAL);
    for (int k = 0; k < 5; k++) {
        char h[32];
        snprintf(h, sizeof(h), "client %d", k);
        assert_rc(vd_pool_take(s->st, "p", NULL, h, vols[k]), 0);
        for (int j = 0; j < k; j++)
            assert_string_not_equal(vols[j], vols[k]);
        assert_rc(vd_pool_of_volume(s->st, vols[k], pool), 0);
        assert_string_equal(pool, "p");
    }
    assert_fails(vd_pool_take(s->st, "p", NULL, "one too many", vols[5]), -ENOSPC);
    assert_int_equal(pool_count(s, "p", VD_POOL_SESSION), 5);
    /* Each clone reads the template and keeps its own writes. */
    struct vd_chain *c = sopen(s, vols[0], VD_OPEN_RDWR);
    model_check(&m, c);
    write_pattern(c, 0, 64 * KiB, 99);
    close_chain(c);
    mcheck(s, &m, vols[1]);
    assert_fails(vd_pool_remove(s->st, "p"), -EBUSY);
    assert_contains(vd_errmsg(), "client");
    for (int k = 0; k < 5; k++)
        assert_rc(vd_pool_release(s->st, "p", vols[k]), 0);
    sopen_fails(s, vols[0], 0, -ENOENT);
    assert_rc(vd_pool_info(s->st, "p", &i, NULL, NULL), 0);
    assert_int_equal(i.clones, 0);
    unsigned made, dropped;
    assert_rc(vd_pool_fill(s->st, "p", &made, &dropped), 0);
    assert_int_equal(made, 2);
    assert_int_equal(dropped, 0);
    /* recompose: spares of the old version go, new ones come */
    mwrite(s, &m, "src", 2 * MiB, 64 * KiB, 2);
    assert_rc(vd_template_update(s->st, "gold", "src"), 0);
    assert_rc(vd_pool_take(s->st, "p", NULL, "old session", vols[0]), 0);
    assert_rc(vd_pool_recompose(s->st, "p", 0), 0);
    assert_rc(vd_pool_fill(s->st, "p", &made, &dropped), 0);
    assert_int_equal(dropped, 1);
    assert_int_equal(made, 2);
    assert_rc(vd_pool_take(s->st, "p", NULL, "new session", vols[1]), 0);
    mcheck(s, &m, vols[1]);
    struct vd_volume_info vi = vinfo(s, vols[0]);
    assert_int_equal(vi.template_version, 1);          /* kept its version */
    /* A server restart ends every session. */
    assert_rc(vd_pool_reset(s->st), 0);
    assert_int_equal(pool_count(s, "p", VD_POOL_SESSION), 0);
    sopen_fails(s, vols[0], 0, -ENOENT);
    assert_rc(vd_pool_remove(s->st, "p"), 0);
    assert_fails(vd_pool_info(s->st, "p", &i, NULL, NULL), -ENOENT);
    assert_int_equal(volume_count(s), 1);              /* src */
    expect_clean(s, NULL);
    model_free(&m);
}

/* Persistent: each user keeps a clone across sessions. */
static void test_pool_persistent(void **state)
{
    struct senv *s = *state;
    char a[VD_NAME_MAX + 1], b[VD_NAME_MAX + 1], a2[VD_NAME_MAX + 1];
    mkvol(s, "src", SIZE);
    assert_rc(vd_template_create(s->st, "gold", "src"), 0);
    assert_rc(vd_pool_create(s->st, "home", "gold", 0, 2, 1, VD_POOL_PERSISTENT), 0);
    assert_fails(vd_pool_take(s->st, "home", NULL, "x", a), -EINVAL);
    assert_fails(vd_pool_take(s->st, "home", "bad/user", "x", a), -EINVAL);
    assert_rc(vd_pool_take(s->st, "home", "alice", "h1", a), 0);
    struct vd_chain *c = sopen(s, a, VD_OPEN_RDWR);
    write_pattern(c, 0, 64 * KiB, 5);
    close_chain(c);
    assert_rc(vd_pool_release(s->st, "home", a), 0);
    assert_int_equal(pool_count(s, "home", VD_POOL_IDLE), 1);
    assert_rc(vd_pool_take(s->st, "home", "bob", "h2", b), 0);
    assert_string_not_equal(a, b);
    assert_fails(vd_pool_take(s->st, "home", "carol", "h3", b), -ENOSPC);
    assert_rc(vd_pool_take(s->st, "home", "alice", "h4", a2), 0);
    assert_string_equal(a, a2);
    vol_expect_pattern(s, a, 0, 64 * KiB, 5);
    assert_rc(vd_pool_reset(s->st), 0);
    assert_int_equal(pool_count(s, "home", VD_POOL_IDLE), 2);
    vol_expect_pattern(s, a, 0, 64 * KiB, 5);
    assert_rc(vd_pool_remove(s->st, "home"), 0);
    assert_int_equal(volume_count(s), 1);
    expect_clean(s, NULL);
}

/* ================================================================== */

#define T(fn) cmocka_unit_test_setup_teardown(fn, senv_setup, senv_teardown)
#define TE(fn) cmocka_unit_test_setup_teardown(fn, tenv_setup, tenv_teardown)

/* An argument runs only the tests whose names match it (a cmocka filter
 * pattern, '*' and '?' as wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        TE(test_open_missing),
        TE(test_open_create_reopen),
        TE(test_open_garbage_catalog),
        cmocka_unit_test(test_default_path),
        T(test_names_volume),
        T(test_names_snapshot),
        T(test_names_template),
        T(test_name_clashes),
        T(test_unknown_names),
        T(test_template_immutable),
        T(test_volume_sizes),
        T(test_volume_info),
        T(test_volume_list),
        T(test_volume_resize),
        T(test_volume_remove),
        T(test_open_chain_names),
        T(test_open_chain_version_syntax),
        T(test_open_chain_unknown_at),
        T(test_two_writers),
        T(test_snapshot_remove_while_writing_down),
        T(test_snapshot_remove_while_writing_up),
        T(test_template_remove_while_writing),
        T(test_template_remove_while_writing_here),
        T(test_snapshot_create),
        T(test_snapshot_create_open),
        T(test_snapshot_list_tree),
        T(test_snapshot_rollback),
        T(test_snapshot_commit),
        T(test_snapshot_commit_refused),
        T(test_snapshot_commit_under_template),
        T(test_commit_online),
        T(test_commit_online_punch),
        T(test_commit_online_middle),
        T(test_commit_online_cancel),
        T(test_commit_online_crash),
        T(test_pool_ephemeral),
        T(test_pool_persistent),
        T(test_snapshot_remove),
        T(test_template_versions),
        T(test_template_remove),
        T(test_flatten),
        T(test_usage),
        T(test_check_clean),
        T(test_check_stray_file),
        T(test_check_missing_layer),
        T(test_check_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
