/*
 * checkpoint.c - whole-VM checkpoints (checkpoint.h).
 *
 * The file, STORE/checkpoints/NAME.vmstate:
 *   0     8  magic "VDKVMCK1"
 *   8     4  version (1), little-endian like every field here
 *   12    4  0
 *   16    8  offset of the JSON description (4096)
 *   24    8  its length in bytes
 *   32    8  offset of guest RAM (a multiple of 4096, after the JSON)
 *   40    8  length of guest RAM (= the machine's memory)
 *   48 4048  0
 * then the JSON (machine, devices, vCPUs: docs/VMM.md), then RAM, byte for
 * byte, with its zero pages left as holes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "state.h"
#include "vdiskd-client.h"

#define MAGIC        "VDKVMCK1"
#define VERSION      1u
#define HEADER_SIZE  4096u
#define JSON_MAX     (64u << 20)
#define RAM_CHUNK    (64u << 10)

/* Sets the message and evaluates to code. */
#define FAIL(code, ...) (snprintf(err, errlen, __VA_ARGS__), (code))
#define ERR(...) snprintf(err, errlen, __VA_ARGS__)

bool ckpt_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > CKPT_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int ckpt_dir(const struct ckpt_where *w, char *buf, size_t len)
{
    if (!w->store)
        return -EINVAL;
    return snprintf(buf, len, "%s/checkpoints", w->store) < (int)len ? 0 : -ENAMETOOLONG;
}

/* ---- devices to JSON and back ---- */

/* The UART's registers and receive FIFO; each bounded by what the chip
 * can hold, so that a restored UART is one uart_read can serve. */
static const struct js_field uart_fields[] = {
    JS_FIELD(struct uart, ier, "ier", 0x0f),
    JS_FIELD(struct uart, lcr, "lcr", 0xff),
    JS_FIELD(struct uart, mcr, "mcr", 0x1f),
    JS_FIELD(struct uart, scr, "scr", 0xff),
    JS_FIELD(struct uart, fcr, "fcr", 0xff),
    JS_FIELD(struct uart, dll, "dll", 0xff),
    JS_FIELD(struct uart, dlm, "dlm", 0xff),
    JS_FIELD(struct uart, thri_pending, "thri-pending", 1),
    JS_FIELD(struct uart, rx_head, "rx-head", UART_FIFO - 1),
    JS_FIELD(struct uart, rx_len, "rx-len", UART_FIFO),
};

/* A disk's queue (the device's side of it) and its transport registers. */
static const struct js_field queue_fields[] = {
    JS_FIELD(struct virtq, num, "queue-num", VIRTQ_MAX_SIZE),
    JS_FIELD(struct virtq, desc, "queue-desc", UINT64_MAX),
    JS_FIELD(struct virtq, avail, "queue-avail", UINT64_MAX),
    JS_FIELD(struct virtq, used, "queue-used", UINT64_MAX),
    JS_FIELD(struct virtq, ready, "queue-ready", 1),
    JS_FIELD(struct virtq, last_avail, "queue-last-avail", 0xffff),
    JS_FIELD(struct virtq, used_idx, "queue-used-idx", 0xffff),
};
static const struct js_field blk_fields[] = {
    JS_FIELD(struct vblk, needs_reset, "needs-reset", 1),
};
static const struct js_field mmio_fields[] = {
    JS_FIELD(struct vmmio, status, "status", 0xff),
    JS_FIELD(struct vmmio, dev_features_sel, "device-features-sel", UINT32_MAX),
    JS_FIELD(struct vmmio, drv_features_sel, "driver-features-sel", UINT32_MAX),
    JS_FIELD(struct vmmio, queue_sel, "queue-sel", UINT32_MAX),
    JS_FIELD(struct vmmio, driver_features, "driver-features", UINT64_MAX),
    JS_FIELD(struct vmmio, int_status, "interrupt-status", 3),
    JS_FIELD(struct vmmio, config_generation, "config-generation", UINT32_MAX),
};
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static int save_uart(const struct uart *u, json_t *j)
{
    int err = js_save_fields(j, u, uart_fields, NFIELDS(uart_fields));

    return err ? err : js_set_blob(j, "rx", u->rx, UART_FIFO);
}

static int load_uart(struct uart *u, const json_t *j)
{
    struct uart copy = *u;

    if (js_load_fields(j, &copy, uart_fields, NFIELDS(uart_fields)) ||
        js_get_blob(j, "rx", copy.rx, UART_FIFO))
        return -EINVAL;
    *u = copy;
    return 0;
}

static int save_disk(const struct vm_disk *d, json_t *j)
{
    int err = js_save_fields(j, &d->blk.vq, queue_fields, NFIELDS(queue_fields));

    err = err ? err : js_save_fields(j, &d->blk, blk_fields, NFIELDS(blk_fields));
    return err ? err : js_save_fields(j, &d->mmio, mmio_fields, NFIELDS(mmio_fields));
}

static int load_disk(struct vm *vm, struct vm_disk *d, const json_t *j)
{
    struct virtq q = d->blk.vq;
    struct vblk blk_flags = { .needs_reset = false };
    struct vmmio t = d->mmio;

    if (js_load_fields(j, &q, queue_fields, NFIELDS(queue_fields)) ||
        js_load_fields(j, &blk_flags, blk_fields, NFIELDS(blk_fields)) ||
        js_load_fields(j, &t, mmio_fields, NFIELDS(mmio_fields)))
        return -EINVAL;
    /* A ready queue is one whose rings were checked against guest RAM:
     * check them again rather than believe the file. */
    if (q.num > d->mmio.dev.queue_max || (q.ready && !virtq_setup_ok(&q, &vm->mem)))
        return -EINVAL;
    d->blk.vq = q;
    d->blk.needs_reset = blk_flags.needs_reset;
    d->mmio = t;
    return 0;
}

/* ---- the description ---- */

static json_t *describe(struct vm *vm, const struct ckpt_machine *m, const char *name,
                        char *err, size_t errlen)
{
    json_t *root = json_object(), *mj = json_object(), *disks = json_array(),
           *dstate = json_array(), *cpus = json_array(), *uart = json_object();
    void *accel_vm = NULL;
    int rc;

    if (!root || !mj || !disks || !dstate || !cpus || !uart)
        goto nomem;
    json_object_set_new(root, "machine", mj);
    json_object_set_new(mj, "disks", disks);
    json_object_set_new(root, "disks", dstate);
    json_object_set_new(root, "cpus", cpus);
    json_object_set_new(root, "uart", uart);
    mj = json_object_get(root, "machine");
    if (json_object_set_new(root, "format", json_string("vdisk-vmm checkpoint")) ||
        json_object_set_new(root, "name", json_string(name)) ||
        json_object_set_new(root, "created", json_integer((json_int_t)time(NULL))) ||
        json_object_set_new(mj, "accel", json_string(m->accel)) ||
        js_set_u64(mj, "mem", m->mem) || js_set_u64(mj, "cpus", m->ncpus) ||
        js_set_u64(mj, "irqchip", m->irqchip) || js_set_u64(mj, "reconnect-ms", m->reconnect_ms) ||
        js_set_u64(root, "console-bytes", vm->console_bytes))
        goto nomem;
    for (unsigned i = 0; i < m->ndisks; i++) {
        json_t *dj = json_pack("{s:s, s:s}", "uri", m->disks[i].uri, "volume",
                               m->disks[i].volume);
        json_t *sj = json_object();

        if (!dj || !sj || json_array_append_new(disks, dj) ||
            json_array_append_new(dstate, sj) || save_disk(&vm->disks[i], sj))
            goto nomem;
    }
    if (save_uart(&vm->uart, uart))
        goto nomem;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        void *cj = NULL;

        rc = vm->accel->save_cpu(&vm->cpus[i], &cj);
        if (rc < 0 || json_array_append_new(cpus, cj)) {
            ERR("cannot read the state of vCPU %u: %s", i, strerror(rc < 0 ? -rc : ENOMEM));
            json_decref(root);
            return NULL;
        }
    }
    rc = vm->accel->save_vm(vm, &accel_vm);
    if (rc < 0 || json_object_set_new(root, "accel", accel_vm)) {
        ERR("cannot read the accelerator's state: %s", strerror(rc < 0 ? -rc : ENOMEM));
        json_decref(root);
        return NULL;
    }
    return root;
nomem:
    json_decref(root);
    json_decref(mj);
    json_decref(disks);
    json_decref(dstate);
    json_decref(cpus);
    json_decref(uart);
    ERR("out of memory");
    return NULL;
}

/* ---- writing ---- */

static int pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
    const uint8_t *b = p;

    while (len > 0) {
        ssize_t n = pwrite(fd, b, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        b += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

static int write_file(struct vm *vm, json_t *root, const char *tmp, char *err, size_t errlen)
{
    uint8_t hdr[HEADER_SIZE] = { 0 };
    char *text = json_dumps(root, JSON_COMPACT);
    uint64_t json_len, ram_off;
    int fd, rc;

    if (!text)
        return FAIL(-ENOMEM, "out of memory");
    json_len = strlen(text);
    ram_off = (HEADER_SIZE + json_len + 4095) / 4096 * 4096;
    memcpy(hdr, MAGIC, 8);
    vq_put32(hdr + 8, VERSION);
    vq_put64(hdr + 16, HEADER_SIZE);
    vq_put64(hdr + 24, json_len);
    vq_put64(hdr + 32, ram_off);
    vq_put64(hdr + 40, vm->mem.size);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        free(text);
        return FAIL(rc, "%s: %s", tmp, strerror(errno));
    }
    rc = pwrite_all(fd, hdr, sizeof(hdr), 0);
    if (!rc)
        rc = pwrite_all(fd, text, json_len, HEADER_SIZE);
    free(text);
    /* RAM: only the chunks with something in them; the rest are holes. */
    for (uint64_t off = 0; !rc && off < vm->mem.size; off += RAM_CHUNK) {
        size_t n = vm->mem.size - off < RAM_CHUNK ? (size_t)(vm->mem.size - off) : RAM_CHUNK;

        if (!all_zero(vm->mem.host + off, n))
            rc = pwrite_all(fd, vm->mem.host + off, n, ram_off + off);
    }
    if (!rc && ftruncate(fd, (off_t)(ram_off + vm->mem.size)) < 0)
        rc = -errno;
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc) {
        unlink(tmp);
        return FAIL(rc, "writing %s: %s", tmp, strerror(-rc));
    }
    return 0;
}

/* Every disk must be a volume this vdiskd serves to us now: a snapshot
 * taken offline, or of another server's disk, would not be the guest's. */
static int check_exports(struct vdc *c, const struct ckpt_machine *m, char *err, size_t errlen)
{
    json_t *exports = NULL;
    int rc = vdc_call(c, "query-exports", NULL, &exports, err, errlen);

    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < m->ndisks; i++) {
        bool found = false;
        size_t k;
        json_t *e;

        json_array_foreach(exports, k, e) {
            const char *n = json_string_value(json_object_get(e, "name"));

            if (n && strcmp(n, m->disks[i].volume) == 0 &&
                json_integer_value(json_object_get(e, "connections")) > 0 &&
                json_is_true(json_object_get(e, "writable")))
                found = true;
        }
        if (!found) {
            json_decref(exports);
            return FAIL(-ENOENT, "disk %u (%s): vdiskd does not serve a writable volume '%s' to this "
                       "VMM: checkpoints need every disk to be a volume of the store's vdiskd",
                       i, m->disks[i].uri, m->disks[i].volume);
        }
    }
    json_decref(exports);
    return 0;
}

int ckpt_save(struct vm *vm, const struct ckpt_machine *m, const struct ckpt_where *w,
              const char *name, char *err, size_t errlen)
{
    char dir[4096], path[4200], tmp[4200];
    struct vdc *c = NULL;
    json_t *root = NULL;
    unsigned done = 0;
    int rc, dfd;

    if (!ckpt_name_ok(name))
        return FAIL(-EINVAL, "'%s' is not a valid checkpoint name (1 to %d of A-Z a-z 0-9 . _ -, "
                   "not starting with . or -)", name, CKPT_NAME_MAX);
    if (ckpt_dir(w, dir, sizeof(dir)) < 0)
        return FAIL(-EINVAL, "no store: give --store DIR (or set VDISK_STORE)");
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return FAIL(-errno, "%s: %s", dir, strerror(errno));
    snprintf(path, sizeof(path), "%s/%s.vmstate", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.vmstate.tmp", dir, name);
    if (access(path, F_OK) == 0)
        return FAIL(-EEXIST, "checkpoint '%s' exists already (%s)", name, path);

    if (m->ndisks > 0) {
        rc = vdc_open(w->vdiskd_socket, &c, err, errlen);
        if (rc < 0)
            return rc;
        rc = check_exports(c, m, err, errlen);
        if (rc < 0)
            goto out;
        for (; done < m->ndisks; done++) {
            json_t *args = json_pack("{s:s, s:s}", "volume", m->disks[done].volume,
                                     "name", name);
            char why[512];

            rc = vdc_call(c, "snapshot-create", args, NULL, why, sizeof(why));
            if (rc < 0) {
                ERR("snapshot of disk %u (volume %s): %s%s", done, m->disks[done].volume, why,
                    done ? " (the disks before it have a snapshot of that name now: "
                           "remove them with vdisk snapshot rm)" : "");
                goto out;
            }
        }
    }
    root = describe(vm, m, name, err, errlen);
    if (!root) {
        rc = -EIO;
        goto out;
    }
    rc = write_file(vm, root, tmp, err, errlen);
    if (rc < 0)
        goto out;
    /* The file appears whole or not at all, and never over another. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
        rc = -errno;
        ERR("%s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
out:
    json_decref(root);
    vdc_close(c);
    return rc;
}

/* ---- reading ---- */

static int read_machine(const json_t *root, struct ckpt_machine *m, char *err, size_t errlen)
{
    const json_t *mj = json_object_get(root, "machine"), *disks, *d;
    const char *accel = json_string_value(json_object_get(mj, "accel"));
    uint64_t v;
    size_t i;

    memset(m, 0, sizeof(*m));
    if (!accel || strlen(accel) >= sizeof(m->accel))
        return FAIL(-EINVAL, "no accelerator named");
    strcpy(m->accel, accel);
    if (js_get_u64(mj, "mem", VM_MAX_MEM, &m->mem) || m->mem < VM_MIN_MEM || m->mem % 4096)
        return FAIL(-EINVAL, "bad memory size");
    if (js_get_u64(mj, "cpus", VM_MAX_CPUS, &v) || v == 0)
        return FAIL(-EINVAL, "bad vCPU count");
    m->ncpus = (unsigned)v;
    if (js_get_u64(mj, "irqchip", 1, &v))
        return FAIL(-EINVAL, "bad irqchip field");
    m->irqchip = v;
    if (js_get_u64(mj, "reconnect-ms", UINT32_MAX, &v))
        return FAIL(-EINVAL, "bad reconnect-ms field");
    m->reconnect_ms = (unsigned)v;
    disks = json_object_get(mj, "disks");
    if (!json_is_array(disks) || json_array_size(disks) > VM_MAX_DISKS)
        return FAIL(-EINVAL, "bad disk list");
    json_array_foreach(disks, i, d) {
        const char *uri = json_string_value(json_object_get(d, "uri"));
        const char *vol = json_string_value(json_object_get(d, "volume"));

        if (!uri || !vol || strlen(uri) >= sizeof(m->disks[i].uri) ||
            strlen(vol) >= sizeof(m->disks[i].volume))
            return FAIL(-EINVAL, "bad disk %zu", i);
        strcpy(m->disks[i].uri, uri);
        strcpy(m->disks[i].volume, vol);
    }
    m->ndisks = (unsigned)json_array_size(disks);
    return 0;
}

int ckpt_open(const struct ckpt_where *w, const char *name, struct ckpt *ck, char *err,
              size_t errlen)
{
    uint8_t hdr[HEADER_SIZE];
    char dir[3900], *text = NULL;
    uint64_t json_off, json_len, ram_off, ram_len;
    struct stat st;
    json_error_t jerr;
    ssize_t n;
    int rc;

    memset(ck, 0, sizeof(*ck));
    ck->fd = -1;
    if (!ckpt_name_ok(name))
        return FAIL(-EINVAL, "'%s' is not a valid checkpoint name", name);
    if (ckpt_dir(w, dir, sizeof(dir)) < 0)
        return FAIL(-EINVAL, "no store: give --store DIR (or set VDISK_STORE)");
    snprintf(ck->name, sizeof(ck->name), "%s", name);
    if (snprintf(ck->path, sizeof(ck->path), "%s/%s.vmstate", dir, name) >=
        (int)sizeof(ck->path))
        return FAIL(-ENAMETOOLONG, "%s: path too long", dir);
    ck->fd = open(ck->path, O_RDONLY | O_CLOEXEC);
    if (ck->fd < 0)
        return FAIL(-errno, "no checkpoint '%s': %s: %s", name, ck->path, strerror(errno));
    n = pread(ck->fd, hdr, sizeof(hdr), 0);
    if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, MAGIC, 8) != 0) {
        rc = FAIL(-EINVAL, "%s: not a vdisk-vmm checkpoint", ck->path);
        goto fail;
    }
    /* Reserved bytes are zero: a later version that uses them bumps the
     * version, and garbage there means the header is not ours. */
    if (vq_le32(hdr + 12) != 0 || !all_zero(hdr + 48, HEADER_SIZE - 48)) {
        rc = FAIL(-EINVAL, "%s: damaged (its header's reserved bytes are not zero)", ck->path);
        goto fail;
    }
    if (vq_le32(hdr + 8) != VERSION) {
        rc = FAIL(-EINVAL, "%s: checkpoint version %u, this vdisk-vmm reads %u", ck->path,
                 vq_le32(hdr + 8), VERSION);
        goto fail;
    }
    json_off = vq_le64(hdr + 16);
    json_len = vq_le64(hdr + 24);
    ram_off = vq_le64(hdr + 32);
    ram_len = vq_le64(hdr + 40);
    if (fstat(ck->fd, &st) < 0 || json_off != HEADER_SIZE || json_len == 0 ||
        json_len > JSON_MAX || ram_off % 4096 || ram_off < json_off + json_len ||
        ram_len > VM_MAX_MEM || ram_off + ram_len != (uint64_t)st.st_size) {
        rc = FAIL(-EINVAL, "%s: damaged (its header does not fit the file)", ck->path);
        goto fail;
    }
    text = malloc(json_len + 1);
    if (!text) {
        rc = -ENOMEM;
        goto fail;
    }
    n = pread(ck->fd, text, json_len, (off_t)json_off);
    if (n != (ssize_t)json_len) {
        rc = FAIL(-EINVAL, "%s: damaged (short)", ck->path);
        goto fail;
    }
    text[json_len] = 0;
    ck->root = json_loadb(text, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(ck->root)) {
        rc = FAIL(-EINVAL, "%s: damaged (its description: %s)", ck->path, jerr.text);
        goto fail;
    }
    rc = read_machine(ck->root, &ck->machine, err, errlen);
    if (rc < 0 || ck->machine.mem != ram_len) {
        char why[256];

        snprintf(why, sizeof(why), "%s", rc < 0 ? err : "memory size");
        rc = FAIL(-EINVAL, "%s: damaged (%s)", ck->path, why);
        goto fail;
    }
    ck->ram_off = ram_off;
    free(text);
    return 0;
fail:
    free(text);
    ckpt_close(ck);
    return rc;
}

/* Whether vdiskd still counts NBD clients of volume (as an export). */
static bool has_clients(struct vdc *c, const char *volume)
{
    json_t *exports = NULL, *e;
    char why[256];
    bool busy = false;
    size_t k;

    if (vdc_call(c, "query-exports", NULL, &exports, why, sizeof(why)) < 0)
        return false;
    json_array_foreach(exports, k, e) {
        const char *n = json_string_value(json_object_get(e, "name"));

        if (n && strcmp(n, volume) == 0 && json_integer_value(json_object_get(e, "connections")) > 0)
            busy = true;
    }
    json_decref(exports);
    return busy;
}

int ckpt_rollback(const struct ckpt *ck, const struct ckpt_where *w, char *err, size_t errlen)
{
    const struct ckpt_machine *m = &ck->machine;
    struct vdc *c = NULL;
    int rc;

    if (m->ndisks == 0)
        return 0;
    rc = vdc_open(w->vdiskd_socket, &c, err, errlen);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < m->ndisks && rc == 0; i++) {
        char why[512];

        /* A client that has just gone (the VMM that took the checkpoint,
         * stopped a moment ago) may still be counted until vdiskd's loop
         * sees its socket close: a few tries, then vdiskd's refusal. */
        for (unsigned tries = 0;; tries++) {
            json_t *args = json_pack("{s:s, s:s, s:b}", "volume", m->disks[i].volume,
                                     "name", ck->name, "force", 0);

            rc = vdc_call(c, "snapshot-rollback", args, NULL, why, sizeof(why));
            if (rc == 0 || tries == 30 || !has_clients(c, m->disks[i].volume))
                break;
            usleep(100 * 1000);
        }
        if (rc < 0)
            ERR("rolling volume %s back to snapshot %s: %s", m->disks[i].volume, ck->name, why);
    }
    vdc_close(c);
    return rc;
}

/* Reads RAM: only where the file has data (holes are zeroes, and fresh
 * guest RAM is zero already). */
static int load_ram(const struct ckpt *ck, struct vm *vm, char *err, size_t errlen)
{
    uint64_t end = ck->ram_off + vm->mem.size, pos = ck->ram_off;

    while (pos < end) {
        off_t data = lseek(ck->fd, (off_t)pos, SEEK_DATA), hole;

        if (data < 0 && errno == ENXIO)
            break;                      /* zeroes to the end */
        if (data < 0)
            return FAIL(-errno, "%s: %s", ck->path, strerror(errno));
        if ((uint64_t)data >= end)
            break;
        hole = lseek(ck->fd, data, SEEK_HOLE);
        if (hole < 0)
            return FAIL(-errno, "%s: %s", ck->path, strerror(errno));
        if ((uint64_t)hole > end)
            hole = (off_t)end;
        for (uint64_t p = (uint64_t)data; p < (uint64_t)hole;) {
            ssize_t n = pread(ck->fd, vm->mem.host + (p - ck->ram_off),
                              (size_t)((uint64_t)hole - p), (off_t)p);

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return FAIL(-EIO, "%s: reading RAM: %s", ck->path, n < 0 ? strerror(errno)
                           : "short file");
            p += (uint64_t)n;
        }
        pos = (uint64_t)hole;
    }
    return 0;
}

int ckpt_load(const struct ckpt *ck, struct vm *vm, char *err, size_t errlen)
{
    const json_t *disks = json_object_get(ck->root, "disks");
    const json_t *cpus = json_object_get(ck->root, "cpus");
    uint64_t console;
    int rc;

    if (vm->mem.size != ck->machine.mem || vm->ndisks != ck->machine.ndisks ||
        vm->ncpus != ck->machine.ncpus || strcmp(vm->accel->name, ck->machine.accel) != 0)
        return FAIL(-EINVAL, "the machine does not match the checkpoint's");
    rc = load_ram(ck, vm, err, errlen);
    if (rc < 0)
        return rc;
    if (!json_is_array(disks) || json_array_size(disks) != vm->ndisks ||
        !json_is_array(cpus) || json_array_size(cpus) != vm->ncpus)
        return FAIL(-EINVAL, "%s: damaged (device lists)", ck->path);
    for (unsigned i = 0; i < vm->ndisks; i++)
        if (load_disk(vm, &vm->disks[i], json_array_get(disks, i)) < 0)
            return FAIL(-EINVAL, "%s: damaged (the state of disk %u)", ck->path, i);
    if (load_uart(&vm->uart, json_object_get(ck->root, "uart")) < 0)
        return FAIL(-EINVAL, "%s: damaged (the console's state)", ck->path);
    if (js_get_u64(ck->root, "console-bytes", UINT64_MAX, &console))
        return FAIL(-EINVAL, "%s: damaged (console-bytes)", ck->path);
    vm->console_bytes = console;
    rc = vm->accel->restore_vm(vm, json_object_get(ck->root, "accel"));
    if (rc < 0)
        return FAIL(rc, "%s: the accelerator's state cannot be restored: %s", ck->path,
                   strerror(-rc));
    for (unsigned i = 0; i < vm->ncpus; i++) {
        rc = vm->accel->restore_cpu(&vm->cpus[i], json_array_get(cpus, i));
        if (rc < 0)
            return FAIL(rc, "%s: the state of vCPU %u cannot be restored: %s", ck->path, i,
                       strerror(-rc));
    }
    return 0;
}

void ckpt_close(struct ckpt *ck)
{
    json_decref(ck->root);
    ck->root = NULL;
    if (ck->fd >= 0)
        close(ck->fd);
    ck->fd = -1;
}
