/*
 * test-checkpoint.c - vdisk-vmm's checkpoint files (vmm/checkpoint.c):
 * a machine saved and loaded into a fresh one comes back whole (RAM, the
 * console's UART, a disk's queue and transport, the vCPU and the
 * accelerator's state), with RAM's zero pages left as holes; and a file
 * damaged in any way (every header byte, every field of the description
 * missing or malformed, garbage, truncation) is refused with a message or,
 * where the damage is in a value any number may hold, loaded without
 * harm, never crashing (this test also runs under ASan+UBSan).
 *
 * The accelerator is a stand-in (fake-accel.c): its vCPU state is a few
 * numbers, spelled in JSON as the real ones spell theirs.  The machines have no
 * NBD disks: a disk's device state is added to the description by hand,
 * since saving a real one needs vdiskd for its snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"
#include "fake-accel.h"
#include "checkpoint.h"
#include "state.h"
#include "vm.h"

#define MEM     (4ull << 20)

/* ---- machines ---- */

static struct vm *new_vm(unsigned ndisks)
{
    return fake_vm_new(MEM, ndisks, false);
}

static void free_vm(struct vm *vm)
{
    fake_vm_free(vm);
}

static struct ckpt_machine machine(void)
{
    struct ckpt_machine m;

    memset(&m, 0, sizeof(m));
    strcpy(m.accel, "test");
    m.mem = MEM;
    m.ncpus = 1;
    return m;
}

static struct ckpt_where where(const struct tenv *e)
{
    struct ckpt_where w = { .store = e->dir, .vdiskd_socket = "/nonexistent/control.sock" };

    return w;
}

/* A machine with something in it: RAM in a few places, the UART in the
 * middle of things, registers. */
static struct vm *busy_vm(void)
{
    struct vm *vm = new_vm(0);
    struct fake_cpu *f = vm->cpus[0].accel;

    for (uint64_t off = 0; off < MEM; off += 1 << 20)
        memset(vm->mem.host + off + 4096, (int)(off >> 20) + 1, 8192);
    vm->mem.host[MEM - 1] = 0x7e;
    vm->uart.ier = 0x05;
    vm->uart.lcr = 0x03;
    vm->uart.mcr = 0x0b;
    vm->uart.rx[3] = 'x';
    vm->uart.rx_head = 3;
    vm->uart.rx_len = 1;
    vm->console_bytes = 4242;
    for (unsigned i = 0; i < FAKE_NREGS; i++)
        f->regs[i] = 0x1111111111111111ull * (i + 1);
    return vm;
}

static void save(const struct tenv *e, struct vm *vm, const char *name)
{
    struct ckpt_machine m = machine();
    struct ckpt_where w = where(e);
    char err[1024];

    if (ckpt_save(vm, &m, &w, name, err, sizeof(err)) != 0)
        fail_msg("ckpt_save: %s", err);
}

/* Opens and loads name into a fresh machine of ndisks disks.  Returns 0 or
 * the negative errno, and the machine in *out (or NULL). */
static int load(const struct tenv *e, const char *name, unsigned ndisks, struct vm **out,
                char *err, size_t errlen)
{
    struct ckpt_where w = where(e);
    struct ckpt ck;
    int rc = ckpt_open(&w, name, &ck, err, errlen);

    *out = NULL;
    if (rc < 0)
        return rc;
    *out = new_vm(ndisks);
    rc = ckpt_load(&ck, *out, err, errlen);
    ckpt_close(&ck);
    return rc;
}

/* The file of checkpoint name, in one of 4 rotating buffers (a call may
 * use two at once). */
static const char *file_of(const struct tenv *e, const char *name)
{
    static char paths[4][4200];
    static unsigned next;
    char *p = paths[next++ % 4];

    snprintf(p, sizeof(paths[0]), "%s/checkpoints/%s.vmstate", e->dir, name);
    return p;
}

/* ---- editing files ---- */

static void copy_file(const char *from, const char *to)
{
    char cmd[9000];

    snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* The description of a checkpoint file, parsed. */
static json_t *read_json(const char *path)
{
    uint8_t hdr[4096];
    int fd = open(path, O_RDONLY);
    char *text;
    json_t *j;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    text = calloc(1, vq_le64(hdr + 24) + 1);
    assert_int_equal(pread(fd, text, vq_le64(hdr + 24), 4096), (ssize_t)vq_le64(hdr + 24));
    close(fd);
    j = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(j);
    return j;
}

/* Writes to path a checkpoint with the header and RAM of src and the
 * description j. */
static void write_with_json(const char *src, const char *path, const json_t *j)
{
    uint8_t hdr[4096];
    char *text = json_dumps(j, JSON_COMPACT);
    uint64_t len = strlen(text), ram_off = (4096 + len + 4095) / 4096 * 4096;
    uint64_t old_off, ram_len;
    int in = open(src, O_RDONLY), out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    static uint8_t buf[1 << 16];

    assert_true(in >= 0 && out >= 0);
    assert_int_equal(pread(in, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    old_off = vq_le64(hdr + 32);
    ram_len = vq_le64(hdr + 40);
    vq_put64(hdr + 24, len);
    vq_put64(hdr + 32, ram_off);
    assert_int_equal(pwrite(out, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    assert_int_equal(pwrite(out, text, len, 4096), (ssize_t)len);
    for (uint64_t o = 0; o < ram_len; o += sizeof(buf)) {
        assert_int_equal(pread(in, buf, sizeof(buf), (off_t)(old_off + o)), (ssize_t)sizeof(buf));
        assert_int_equal(pwrite(out, buf, sizeof(buf), (off_t)(ram_off + o)), (ssize_t)sizeof(buf));
    }
    close(in);
    close(out);
    free(text);
}

/* The state of one disk, as a real checkpoint holds it, with the queue's
 * rings at the given addresses. */
static void add_disk(json_t *j, uint64_t num, uint64_t ring)
{
    json_t *d = json_object(), *m = json_pack("{s:s, s:s}", "uri", "nbd+unix:///v?socket=/x",
                                              "volume", "v");

    js_set_u64(d, "queue-num", num);
    js_set_u64(d, "queue-desc", ring);
    js_set_u64(d, "queue-avail", ring + 0x1000);
    js_set_u64(d, "queue-used", ring + 0x2000);
    js_set_u64(d, "queue-ready", 1);
    js_set_u64(d, "queue-last-avail", 5);
    js_set_u64(d, "queue-used-idx", 5);
    js_set_u64(d, "needs-reset", 0);
    js_set_u64(d, "status", 0x0f);
    js_set_u64(d, "device-features-sel", 1);
    js_set_u64(d, "driver-features-sel", 1);
    js_set_u64(d, "queue-sel", 0);
    js_set_u64(d, "driver-features", 1ull << 32 | 1u << 9);
    js_set_u64(d, "interrupt-status", 0);
    js_set_u64(d, "config-generation", 0);
    json_array_append_new(json_object_get(j, "disks"), d);
    json_array_append_new(json_object_get(json_object_get(j, "machine"), "disks"), m);
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
    struct tenv *e = *state;
    struct vm *a = busy_vm(), *b;
    struct fake_cpu *fa = a->cpus[0].accel, *fb;
    char err[1024];
    struct stat st;

    save(e, a, "one");
    assert_int_equal(load(e, "one", 0, &b, err, sizeof(err)), 0);
    assert_memory_equal(a->mem.host, b->mem.host, MEM);
    assert_int_equal(b->console_bytes, 4242);
    assert_int_equal(b->uart.ier, 0x05);
    assert_int_equal(b->uart.lcr, 0x03);
    assert_int_equal(b->uart.mcr, 0x0b);
    assert_int_equal(b->uart.rx_head, 3);
    assert_int_equal(b->uart.rx_len, 1);
    assert_int_equal(b->uart.rx[3], 'x');
    fb = b->cpus[0].accel;
    assert_memory_equal(fa->regs, fb->regs, sizeof(fa->regs));
    /* Zero pages are holes: 4 x 8 KiB and a page of data, in 4 MiB. */
    assert_int_equal(stat(file_of(e, "one"), &st), 0);
    assert_true(st.st_size > (off_t)MEM);
    assert_true((uint64_t)st.st_blocks * 512 < 1 << 20);
    /* Names: taken, or not names at all. */
    assert_int_equal(ckpt_save(a, &(struct ckpt_machine){ .accel = "test", .mem = MEM, .ncpus = 1 },
                               &(struct ckpt_where){ .store = e->dir }, "one", err, sizeof(err)),
                     -EEXIST);
    assert_non_null(strstr(err, "exists already"));
    assert_false(ckpt_name_ok(""));
    assert_false(ckpt_name_ok("../x"));
    assert_false(ckpt_name_ok("-x"));
    assert_false(ckpt_name_ok(".x"));
    assert_false(ckpt_name_ok("a/b"));
    assert_true(ckpt_name_ok("before-upgrade_1.0"));
    free_vm(a);
    free_vm(b);
}

static void test_disk_state(void **state)
{
    struct tenv *e = *state;
    struct vm *a = busy_vm(), *b;
    char err[1024];
    json_t *j;

    save(e, a, "base");
    /* A disk whose queue lies in RAM comes back as it was. */
    j = read_json(file_of(e, "base"));
    add_disk(j, 8, 0x10000);
    write_with_json(file_of(e, "base"), file_of(e, "disk"), j);
    json_decref(j);
    assert_int_equal(load(e, "disk", 1, &b, err, sizeof(err)), 0);
    assert_int_equal(b->disks[0].blk.vq.num, 8);
    assert_int_equal(b->disks[0].blk.vq.used, 0x12000);
    assert_true(b->disks[0].blk.vq.ready);
    assert_int_equal(b->disks[0].blk.vq.last_avail, 5);
    assert_int_equal(b->disks[0].mmio.status, 0x0f);
    assert_int_equal(vmmio_driver_features(&b->disks[0].mmio), 1ull << 32 | 1u << 9);
    free_vm(b);

    /* Rings outside RAM, or a queue size that is no power of two, or larger
     * than the device's: refused, not believed. */
    static const struct { uint64_t num, ring; } bad[] = {
        { 8, MEM - 0x1000 }, { 8, UINT64_MAX - 0x1000 }, { 6, 0x10000 }, { 1024, 0x10000 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = read_json(file_of(e, "base"));
        add_disk(j, bad[i].num, bad[i].ring);
        write_with_json(file_of(e, "base"), file_of(e, "disk"), j);
        json_decref(j);
        assert_int_equal(load(e, "disk", 1, &b, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "disk 0"));
        free_vm(b);
    }
    /* A machine that does not match the file's. */
    assert_int_not_equal(load(e, "base", 1, &b, err, sizeof(err)), 0);
    free_vm(b);
    free_vm(a);
}

/* Every field of the description, recursively: removed, made a string
 * that is no number, made the largest number, made another JSON type. */
static unsigned mutate_all(const struct tenv *e, json_t *root, json_t *obj, unsigned *refused)
{
    const char *key;
    json_t *val, *keys = json_array();
    unsigned tried = 0;
    char err[1024];
    size_t n;

    /* The keys first: putting a removed key back moves it to the end. */
    json_object_foreach(obj, key, val)
        json_array_append_new(keys, json_string(key));
    for (n = 0; n < json_array_size(keys); n++) {
        json_t *kept;

        key = json_string_value(json_array_get(keys, n));
        kept = json_incref(json_object_get(obj, key));
        for (int kind = 0; kind < 4; kind++) {
            struct vm *b;
            int rc;

            switch (kind) {
            case 0: json_object_del(obj, key); break;
            case 1: json_object_set_new(obj, key, json_string("0xZZ")); break;
            case 2: json_object_set_new(obj, key, json_string("0xffffffffffffffff")); break;
            case 3: json_object_set_new(obj, key, json_integer(5)); break;
            }
            write_with_json(file_of(e, "base"), file_of(e, "mut"), root);
            rc = load(e, "mut", 0, &b, err, sizeof(err));
            if (rc < 0) {
                assert_true(err[0] != 0);       /* a message, always */
                (*refused)++;
            }
            if (b)
                free_vm(b);
            tried++;
        }
        json_object_set(obj, key, kept);
        if (json_is_object(kept))
            tried += mutate_all(e, root, kept, refused);
        if (json_is_array(kept)) {
            size_t i;
            json_t *el;

            json_array_foreach(kept, i, el)
                if (json_is_object(el))
                    tried += mutate_all(e, root, el, refused);
        }
        json_decref(kept);
    }
    json_decref(keys);
    return tried;
}

static void test_damaged_description(void **state)
{
    struct tenv *e = *state;
    struct vm *a = busy_vm();
    unsigned refused = 0, tried;
    json_t *j;

    save(e, a, "base");
    j = read_json(file_of(e, "base"));
    tried = mutate_all(e, j, j, &refused);
    json_decref(j);
    /* Most fields admit no such value (register values may be anything). */
    assert_true(tried > 100);
    assert_true(refused > tried / 2);
    free_vm(a);
}

static void test_damaged_bytes(void **state)
{
    struct tenv *e = *state;
    struct vm *a = busy_vm(), *b;
    char err[1024];
    struct stat st;
    uint32_t seed = 12345;

    save(e, a, "base");
    assert_int_equal(stat(file_of(e, "base"), &st), 0);
    /* Each byte of the header's fields and reserved bytes, changed. */
    for (unsigned off = 0; off < 4096; off += off < 64 ? 1 : 97) {
        int fd;
        uint8_t byte;

        copy_file(file_of(e, "base"), file_of(e, "bad"));
        fd = open(file_of(e, "bad"), O_RDWR);
        assert_int_equal(pread(fd, &byte, 1, off), 1);
        byte ^= 0x41;
        assert_int_equal(pwrite(fd, &byte, 1, off), 1);
        close(fd);
        assert_int_equal(load(e, "bad", 0, &b, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, file_of(e, "bad")));
        assert_null(b);
    }
    /* Garbage in the description. */
    for (unsigned round = 0; round < 200; round++) {
        int fd;

        copy_file(file_of(e, "base"), file_of(e, "bad"));
        fd = open(file_of(e, "bad"), O_RDWR);
        for (unsigned k = 0; k < 1 + round % 4; k++) {
            uint8_t byte;
            off_t off;

            seed = seed * 1103515245 + 12345;
            off = 4096 + (seed >> 8) % 600;
            byte = (uint8_t)(seed >> 3);
            assert_int_equal(pwrite(fd, &byte, 1, off), 1);
        }
        close(fd);
        if (load(e, "bad", 0, &b, err, sizeof(err)) < 0)
            assert_true(err[0] != 0);
        if (b)
            free_vm(b);
    }
    /* Cut anywhere. */
    for (off_t len = 0; len < st.st_size; len = len < 8192 ? len + 511 : len * 3) {
        copy_file(file_of(e, "base"), file_of(e, "bad"));
        assert_int_equal(truncate(file_of(e, "bad"), len), 0);
        assert_int_equal(load(e, "bad", 0, &b, err, sizeof(err)), -EINVAL);
        assert_null(b);
    }
    /* Not there at all. */
    assert_int_equal(load(e, "nosuch", 0, &b, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "no checkpoint 'nosuch'"));
    free_vm(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_disk_state, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_description, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_bytes, tenv_setup, tenv_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
