/*
 * loader.c - the GDT the VMM enters guests with, and flat binary guests.
 * (Linux kernels: linux.c.)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader.h"

/* Descriptors, as the SDM lays them out (vol. 3, 3.4.5): base 0, limit
 * 0xfffff in 4 KiB units, present, DPL 0. */
#define GDT_CODE32  0x00cf9b000000ffffull   /* execute/read, D=1 */
#define GDT_CODE64  0x00af9b000000ffffull   /* execute/read, L=1 */
#define GDT_DATA    0x00cf93000000ffffull   /* read/write, B=1 */
#define GDT_ENTRIES 4u

void vmm_write_gdt(struct vm *vm, bool long_mode)
{
    uint8_t *gdt = vmm_mem_ptr(&vm->mem, VM_GDT_ADDR, 8 * GDT_ENTRIES);

    vq_put64(gdt + 0, 0);
    vq_put64(gdt + 8, 0);
    vq_put64(gdt + VM_SEL_CODE, long_mode ? GDT_CODE64 : GDT_CODE32);
    vq_put64(gdt + VM_SEL_DATA, GDT_DATA);
}

struct vmm_segment vmm_flat_segment(uint16_t selector, bool code, bool long_mode)
{
    struct vmm_segment s = {
        .base = 0,
        .limit = 0xffffffffu,
        .selector = selector,
        .type = code ? 0xb : 0x3,       /* accessed, execute/read or read/write */
        .present = 1,
        .dpl = 0,
        .db = code && long_mode ? 0 : 1,
        .s = 1,
        .l = code && long_mode,
        .g = 1,
    };
    return s;
}

static void flat_state(struct vm *vm, struct vmm_cpu_state *s, uint64_t entry)
{
    struct vmm_segment data = vmm_flat_segment(VM_SEL_DATA, false, false);
    uint64_t top = vm->mem.size < (4ull << 30) ? vm->mem.size : (4ull << 30);

    memset(s, 0, sizeof(*s));
    s->rip = entry;
    s->rflags = 0x2;                    /* bit 1 is always set; IF clear */
    s->gpr[R_SP] = top;
    s->cs = vmm_flat_segment(VM_SEL_CODE, true, false);
    s->ds = s->es = s->fs = s->gs = s->ss = data;
    /* A task register and an LDT that are there but empty, as after reset. */
    s->tr = (struct vmm_segment){ .limit = 0xffff, .type = 0xb, .present = 1 };
    s->ldt = (struct vmm_segment){ .limit = 0xffff, .type = 0x2, .present = 1 };
    s->gdt.base = VM_GDT_ADDR;
    s->gdt.limit = 8 * GDT_ENTRIES - 1;
    s->idt.limit = 0xffff;
    s->cr0 = X86_CR0_PE | X86_CR0_ET;
}

int vmm_load_flat(struct vm *vm, const char *path, uint64_t addr, struct vmm_cpu_state *s)
{
    struct stat st;
    uint8_t *dst;
    size_t done = 0;
    int fd, err = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = -errno;
        fprintf(stderr, "vdisk-vmm: %s: %s\n", path, strerror(errno));
        return err;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "vdisk-vmm: %s: not a regular file\n", path);
        err = -EINVAL;
        goto out;
    }
    /* Above the GDT, and wholly inside RAM. */
    dst = addr >= VM_GDT_ADDR + 8 * GDT_ENTRIES
          ? vmm_mem_ptr(&vm->mem, addr, (uint64_t)st.st_size) : NULL;
    if (!dst || st.st_size == 0) {
        fprintf(stderr, "vdisk-vmm: %s: %lld bytes do not fit in guest RAM at 0x%llx "
                "(RAM is [0x%x, 0x%llx) for a guest)\n", path, (long long)st.st_size,
                (unsigned long long)addr, VM_GDT_ADDR + 8 * GDT_ENTRIES,
                (unsigned long long)vm->mem.size);
        err = -EINVAL;
        goto out;
    }
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, dst + done, (size_t)st.st_size - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : -EIO;
            fprintf(stderr, "vdisk-vmm: %s: read: %s\n", path, n < 0 ? strerror(errno)
                    : "file shrank");
            goto out;
        }
        done += (size_t)n;
    }
    vmm_write_gdt(vm, false);
    flat_state(vm, s, addr);
out:
    close(fd);
    return err;
}
