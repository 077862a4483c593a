/*
 * test-bzimage.c - vdisk-vmm's Linux loader (vmm/linux.c) against bzImages
 * the test lays out by hand from the boot protocol (boot.rst):
 *  - a good one lands where the protocol says: the kernel at 1 MiB, the
 *    entry at +0x200 in long mode with RSI at boot_params, which holds the
 *    setup header, the loader's fields, the command line with the disks'
 *    virtio_mmio.device= entries, the initrd and an e820 map;
 *  - each thing a kernel can get wrong (no "HdrS", an old protocol, 32-bit
 *    only, a zImage, a header length out of range, no kernel after the
 *    setup, more RAM than the machine has, a bad alignment, a command line
 *    or initrd that does not fit) is refused, with a message;
 *  - thousands of random corruptions of the header and cuts of the file
 *    load or are refused, never touching memory outside the guest's (this
 *    test also runs under ASan+UBSan).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "helpers.h"
#include "fake-accel.h"
#include "loader.h"

#define MEM         (64ull << 20)
#define SETUP       1024u               /* setup_sects 1: two sectors */
#define KERNEL      8192u
#define IMAGE       (SETUP + KERNEL)
#define INITRD      50000u

static void put16(uint8_t *p, uint16_t v)
{
    vq_put16(p, v);
}

static void put32(uint8_t *p, uint32_t v)
{
    vq_put32(p, v);
}

/* A bzImage by the 64-bit boot protocol: setup header in sector 0, then
 * KERNEL bytes of "kernel" (a pattern). */
static void good_image(uint8_t *img)
{
    memset(img, 0, IMAGE);
    img[0x1f1] = 1;                         /* setup_sects */
    put16(img + 0x1fe, 0xaa55);
    img[0x200] = 0xeb;                      /* jmp short past the header */
    img[0x201] = 0x268 - 0x202;
    memcpy(img + 0x202, "HdrS", 4);
    put16(img + 0x206, 0x020f);             /* protocol 2.15 */
    img[0x211] = 0x01;                      /* LOADED_HIGH */
    put32(img + 0x22c, 0x7fffffff);         /* initrd_addr_max */
    put32(img + 0x230, 0x200000);           /* kernel_alignment */
    put16(img + 0x236, 0x0001);             /* XLF_KERNEL_64 */
    put32(img + 0x238, 2047);               /* cmdline_size */
    vq_put64(img + 0x258, 0x100000);        /* pref_address */
    put32(img + 0x260, 0x40000);            /* init_size */
    for (unsigned i = 0; i < KERNEL; i++)
        img[SETUP + i] = (uint8_t)(i * 7 + 3);
}

static const char *put_file(const struct tenv *e, const char *name, const void *p, size_t len)
{
    const char *path = tpath(e, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, len), (ssize_t)len);
    close(fd);
    return path;
}

static int load(const struct tenv *e, const uint8_t *img, size_t len, const char *initrd,
                const char *cmdline, struct vm **out)
{
    const char *kernel = put_file(e, "bzImage", img, len);
    struct vm *vm = fake_vm_new(MEM, 2, true);
    struct vmm_cpu_state s;
    int rc = vmm_load_linux(vm, kernel, initrd, cmdline, &s);

    if (rc == 0)
        ((struct fake_cpu *)vm->cpus[0].accel)->entry = s;
    if (out)
        *out = vm;
    else
        fake_vm_free(vm);
    return rc;
}

static void test_good(void **state)
{
    struct tenv *e = *state;
    static uint8_t img[IMAGE], rd[INITRD];
    const struct vmm_cpu_state *s;
    const uint8_t *bp;
    char *initrd;
    const char *cmdline;
    uint32_t rd_addr;
    struct vm *vm;

    good_image(img);
    for (unsigned i = 0; i < INITRD; i++)
        rd[i] = (uint8_t)(i * 31 + 1);
    initrd = strdup(put_file(e, "initrd", rd, INITRD));
    assert_int_equal(load(e, img, IMAGE, initrd, "console=ttyS0 quiet", &vm), 0);
    s = &((struct fake_cpu *)vm->cpus[0].accel)->entry;

    /* The 64-bit entry (boot.rst, "64-bit Boot Protocol"). */
    assert_int_equal(s->rip, 0x100200);
    assert_int_equal(s->gpr[R_SI], 0x7000);
    assert_true(s->efer & (1u << 10));      /* LMA */
    assert_true(s->cr0 & X86_CR0_PG);
    assert_true(s->cs.l);
    assert_int_equal(s->cs.selector, VM_SEL_CODE);
    assert_int_equal(s->ds.selector, VM_SEL_DATA);
    assert_false(s->rflags & X86_EFLAGS_IF);
    assert_memory_equal(vm->mem.host + 0x100000, img + SETUP, KERNEL);

    /* boot_params: the header, and what the loader fills in. */
    bp = vm->mem.host + 0x7000;
    assert_memory_equal(bp + 0x202, "HdrS", 4);
    assert_int_equal(bp[0x210], 0xff);      /* type_of_loader */
    assert_true(bp[0x211] & 0x01);
    cmdline = (const char *)vm->mem.host + vq_le32(bp + 0x228);
    assert_string_equal(cmdline, "console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5 "
                                 "virtio_mmio.device=4K@0xd0001000:6");
    rd_addr = vq_le32(bp + 0x218);
    assert_int_equal(vq_le32(bp + 0x21c), INITRD);
    assert_int_equal(rd_addr % 4096, 0);
    assert_true(rd_addr >= 0x100000 + 0x40000 && rd_addr + INITRD <= MEM);
    assert_memory_equal(vm->mem.host + rd_addr, rd, INITRD);
    /* e820: low RAM, the reserved holes, RAM from 1 MiB to the top. */
    assert_true(bp[0x1e8] >= 3);
    {
        const uint8_t *last = bp + 0x2d0 + 20 * (bp[0x1e8] - 1);

        assert_int_equal(vq_le64(last) + vq_le64(last + 8), MEM);
        assert_int_equal(vq_le32(last + 16), 1);
    }
    fake_vm_free(vm);

    /* No initrd, no command line of the user's. */
    assert_int_equal(load(e, img, IMAGE, NULL, "", &vm), 0);
    bp = vm->mem.host + 0x7000;
    assert_int_equal(vq_le32(bp + 0x21c), 0);
    fake_vm_free(vm);
    free(initrd);
}

static void test_refused(void **state)
{
    struct tenv *e = *state;
    static uint8_t img[IMAGE], rd[INITRD];
    char *long_cmdline = malloc(4096);
    /* A copy: tpath's buffers are reused. */
    char *initrd = strdup(put_file(e, "initrd", rd, INITRD));

    assert_non_null(long_cmdline);
    memset(long_cmdline, 'x', 4095);
    long_cmdline[4095] = 0;

#define REFUSED(edit, initrd_, cmdline_, len_) do {                       \
        good_image(img);                                                \
        edit;                                                           \
        assert_true(load(e, img, (len_), (initrd_), (cmdline_), NULL) < 0); \
    } while (0)

    REFUSED(memcpy(img + 0x202, "HdrZ", 4), NULL, "", IMAGE);
    REFUSED(put16(img + 0x1fe, 0), NULL, "", IMAGE);
    REFUSED(put16(img + 0x206, 0x020b), NULL, "", IMAGE);     /* before 2.12 */
    REFUSED(put16(img + 0x236, 0), NULL, "", IMAGE);          /* 32-bit only */
    REFUSED(img[0x211] = 0, NULL, "", IMAGE);                 /* a zImage */
    REFUSED(img[0x201] = 0x10, NULL, "", IMAGE);              /* header too short */
    REFUSED(img[0x201] = 0xf0, NULL, "", IMAGE);              /* header too long */
    REFUSED((void)0, NULL, "", SETUP);                        /* no kernel */
    REFUSED((void)0, NULL, "", 600);                          /* cut in the setup */
    REFUSED(put32(img + 0x260, 0x7fffffff), NULL, "", IMAGE); /* init_size > RAM */
    REFUSED(put32(img + 0x260, 0), NULL, "", IMAGE);
    REFUSED(vq_put64(img + 0x258, 1ull << 40), NULL, "", IMAGE);
    REFUSED((img[0x234] = 1, put32(img + 0x230, 3)), NULL, "", IMAGE);   /* alignment */
    REFUSED(put32(img + 0x238, 16), NULL, "console=ttyS0 and more", IMAGE);
    REFUSED((void)0, NULL, long_cmdline, IMAGE);
    REFUSED(put32(img + 0x22c, 0x1000), initrd, "", IMAGE);   /* initrd_addr_max */
#undef REFUSED
    /* An initrd larger than RAM, and one that is not a file. */
    good_image(img);
    assert_int_equal(truncate(initrd, MEM), 0);
    assert_int_not_equal(load(e, img, IMAGE, initrd, "", NULL), 0);
    assert_int_not_equal(load(e, img, IMAGE, e->dir, "", NULL), 0);
    assert_int_not_equal(load(e, img, IMAGE, "/nonexistent/initrd", "", NULL), 0);
    free(long_cmdline);
    free(initrd);
}

static void test_random(void **state)
{
    struct tenv *e = *state;
    static uint8_t img[IMAGE + 4096];
    uint32_t seed = 2024;
    unsigned loaded = 0, refused = 0;
    int null_fd = open("/dev/null", O_WRONLY), saved = dup(2);

    /* The loader says why it refuses each one: not thousands of times here. */
    dup2(null_fd, 2);
    for (unsigned round = 0; round < 3000; round++) {
        size_t len = IMAGE;
        int rc;

        good_image(img);
        for (unsigned k = 0; k < 1 + round % 6; k++) {
            seed = seed * 1103515245 + 12345;
            img[0x1f1 + (seed >> 8) % (0x290 - 0x1f1)] = (uint8_t)(seed >> 20);
        }
        if (round % 7 == 0) {
            seed = seed * 1103515245 + 12345;
            len = (seed >> 4) % (IMAGE + 4096);
        }
        rc = load(e, img, len, NULL, "console=ttyS0", NULL);
        assert_true(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
        if (rc == 0)
            loaded++;
        else
            refused++;
    }
    dup2(saved, 2);
    close(saved);
    close(null_fd);
    print_message("random headers: %u loaded, %u refused\n", loaded, refused);
    assert_true(loaded > 0 && refused > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_refused, tenv_setup, tenv_teardown),
        cmocka_unit_test_setup_teardown(test_random, tenv_setup, tenv_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
