/*
 * accel-emu.c - the emulation accelerator: guest code runs in unicorn's
 * CPU emulator (QEMU's TCG underneath), for hosts without /dev/kvm.
 *
 * What unicorn gives and what it does not (2.0.1):
 * - Guest RAM is our own buffer (uc_mem_map_ptr): devices read and write
 *   it directly, as under KVM.  But TCG caches translations of guest code,
 *   and writes that do not go through the emulated memory (a disk read)
 *   are not seen: they are made visible (emu_invalidate) before the guest
 *   learns the read completed, which is why completions reach the guest on
 *   the vCPU's thread (completes_on_vcpu).
 * - Port I/O is hooked per instruction (UC_HOOK_INSN IN/OUT); the
 *   virtio-mmio window is uc_mmio_map'ed to the device model.
 * - No interrupts can be injected: this accelerator runs guests that poll
 *   (flat guests), one vCPU, no interrupt controller.
 * - HLT cannot be hooked: uc_emu_start returns UC_ERR_OK after it.  A run
 *   that returns OK without a kick and without the machine stopping ended
 *   on a HLT, which the byte before EIP confirms.
 * - A run stopped by uc_emu_stop from another thread leaves EIP stale (it
 *   still says where an earlier run stopped), and resuming there runs the
 *   guest from the wrong place.  So a kick only sets a flag, and a code
 *   hook, before each instruction, stops the run from the vCPU's own
 *   thread, where unicorn keeps the PC exact.  The hook costs speed (about
 *   3x on the test guest); exactness is not negotiable.
 * - The exits mechanism is on with no exits, so a run never stops at an
 *   address; runs have no instruction count (counting hooks every
 *   instruction, and in 2.0.1 a counted run after a stopped one never
 *   stops).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#include "state.h"
#include "vm.h"

struct emu_cpu {
    uc_engine *uc;
    struct vcpu *c;
    uc_hook h_in, h_out, h_intr, h_code;
    atomic_bool kicked;
    int exception;              /* a CPU exception the guest raised, or -1 */
};

static struct emu_cpu *E(struct vcpu *c)
{
    return c->accel;
}

/* ---- hooks (on the vCPU's thread, inside uc_emu_start) ---- */

static uint32_t hook_in(uc_engine *uc, uint32_t port, int size, void *opaque)
{
    (void)uc;
    return vm_pio_in(opaque, (uint16_t)port, (unsigned)size);
}

static void hook_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *opaque)
{
    (void)uc;
    vm_pio_out(opaque, (uint16_t)port, (unsigned)size, value);
}

/* A CPU exception (there is no interrupt controller, so nothing else
 * comes here): with no way to deliver it the guest cannot go on. */
static void hook_intr(uc_engine *uc, uint32_t intno, void *opaque)
{
    struct vcpu *c = opaque;

    E(c)->exception = (int)intno;
    uc_emu_stop(uc);
}

/* Before every instruction: a kick from another thread stops the run
 * here, on the vCPU's own thread, so the PC is exact. */
static void hook_code(uc_engine *uc, uint64_t address, uint32_t size, void *opaque)
{
    struct vcpu *c = opaque;

    (void)address;
    (void)size;
    if (atomic_load_explicit(&E(c)->kicked, memory_order_relaxed))
        uc_emu_stop(uc);
}

static uint64_t mmio_read(uc_engine *uc, uint64_t off, unsigned size, void *opaque)
{
    uint64_t v;

    (void)uc;
    vm_mmio_read(opaque, VIRTIO_MMIO_BASE + off, size, &v);
    return v;
}

static void mmio_write(uc_engine *uc, uint64_t off, unsigned size, uint64_t value, void *opaque)
{
    (void)uc;
    vm_mmio_write(opaque, VIRTIO_MMIO_BASE + off, size, value);
}

/* ---- set-up ---- */

static int emu_init(struct vm *vm)
{
    if (vm->irqchip) {
        fprintf(stderr, "vdisk-vmm: the emu accelerator runs flat guests only (it "
                "delivers no interrupts): a Linux kernel needs --accel kvm\n");
        return -ENOTSUP;
    }
    if (vm->ncpus != 1) {
        fprintf(stderr, "vdisk-vmm: the emu accelerator runs one vCPU (--cpus 1)\n");
        return -ENOTSUP;
    }
    vm->accel_data = vm;        /* nothing VM-wide: a marker for destroy */
    return 0;
}

static void emu_destroy(struct vm *vm)
{
    vm->accel_data = NULL;
}

static int uc_fail(const char *what, uc_err err)
{
    fprintf(stderr, "vdisk-vmm: unicorn: %s: %s\n", what, uc_strerror(err));
    return -EIO;
}

static int emu_vcpu_init(struct vcpu *c)
{
    struct vm *vm = c->vm;
    struct emu_cpu *e = calloc(1, sizeof(*e));
    uc_err err;

    if (!e)
        return -ENOMEM;
    e->c = c;
    e->exception = -1;
    atomic_init(&e->kicked, false);
    c->accel = e;
    err = uc_open(UC_ARCH_X86, UC_MODE_32, &e->uc);
    if (err)
        return uc_fail("open", err);
    err = uc_mem_map_ptr(e->uc, 0, vm->mem.size, UC_PROT_ALL, vm->mem.host);
    if (err)
        return uc_fail("map guest RAM", err);
    /* The whole window: a disk slot nobody uses reads as nothing there. */
    err = uc_mmio_map(e->uc, VIRTIO_MMIO_BASE, VM_MAX_DISKS * VIRTIO_MMIO_STRIDE,
                      mmio_read, c, mmio_write, c);
    if (err)
        return uc_fail("map the virtio-mmio window", err);
    err = uc_hook_add(e->uc, &e->h_in, UC_HOOK_INSN, (void *)hook_in, c, 1, 0, UC_X86_INS_IN);
    if (!err)
        err = uc_hook_add(e->uc, &e->h_out, UC_HOOK_INSN, (void *)hook_out, c, 1, 0,
                          UC_X86_INS_OUT);
    if (!err)
        err = uc_hook_add(e->uc, &e->h_intr, UC_HOOK_INTR, (void *)hook_intr, c, 1, 0);
    if (!err)
        err = uc_hook_add(e->uc, &e->h_code, UC_HOOK_CODE, (void *)hook_code, c, 1, 0);
    if (err)
        return uc_fail("hook port I/O", err);
    err = uc_ctl_exits_enable(e->uc);
    if (err)
        return uc_fail("exits", err);
    return 0;
}

static void emu_vcpu_destroy(struct vcpu *c)
{
    struct emu_cpu *e = E(c);

    if (e && e->uc)
        uc_close(e->uc);
    free(e);
    c->accel = NULL;
}

/* ---- registers ---- */

static const int gpr_ids[8] = {
    UC_X86_REG_EAX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_EBX,
    UC_X86_REG_ESP, UC_X86_REG_EBP, UC_X86_REG_ESI, UC_X86_REG_EDI,
};

static uint64_t rd(struct emu_cpu *e, int id)
{
    uint64_t v = 0;

    uc_reg_read(e->uc, id, &v);
    return v;
}

static uc_err wr(struct emu_cpu *e, int id, uint64_t v)
{
    return uc_reg_write(e->uc, id, &v);
}

static uc_err wr_mmr(struct emu_cpu *e, int id, uint16_t sel, uint64_t base, uint32_t limit,
                     uint32_t flags)
{
    uc_x86_mmr m = { .selector = sel, .base = base, .limit = limit, .flags = flags };

    return uc_reg_write(e->uc, id, &m);
}

static uc_x86_mmr rd_mmr(struct emu_cpu *e, int id)
{
    uc_x86_mmr m;

    memset(&m, 0, sizeof(m));
    uc_reg_read(e->uc, id, &m);
    return m;
}

static int emu_get_state(struct vcpu *c, struct vmm_cpu_state *s)
{
    struct emu_cpu *e = E(c);
    uc_x86_mmr g = rd_mmr(e, UC_X86_REG_GDTR), i = rd_mmr(e, UC_X86_REG_IDTR);

    memset(s, 0, sizeof(*s));
    for (unsigned k = 0; k < 8; k++)
        s->gpr[k] = rd(e, gpr_ids[k]) & 0xffffffffu;
    s->rip = rd(e, UC_X86_REG_EIP) & 0xffffffffu;
    s->rflags = rd(e, UC_X86_REG_EFLAGS) & 0xffffffffu;
    /* unicorn gives selectors only; the hidden parts stay 0 here. */
    s->cs.selector = (uint16_t)rd(e, UC_X86_REG_CS);
    s->ds.selector = (uint16_t)rd(e, UC_X86_REG_DS);
    s->es.selector = (uint16_t)rd(e, UC_X86_REG_ES);
    s->fs.selector = (uint16_t)rd(e, UC_X86_REG_FS);
    s->gs.selector = (uint16_t)rd(e, UC_X86_REG_GS);
    s->ss.selector = (uint16_t)rd(e, UC_X86_REG_SS);
    s->gdt.base = g.base;
    s->gdt.limit = (uint16_t)g.limit;
    s->idt.base = i.base;
    s->idt.limit = (uint16_t)i.limit;
    s->cr0 = rd(e, UC_X86_REG_CR0);
    s->cr2 = rd(e, UC_X86_REG_CR2);
    s->cr3 = rd(e, UC_X86_REG_CR3);
    s->cr4 = rd(e, UC_X86_REG_CR4);
    return 0;
}

/* Loads the segment registers from the GDT in guest RAM (unicorn loads a
 * selector as the CPU would, descriptor and all): GDTR and CR0 first. */
static int load_segments(struct emu_cpu *e, const uint16_t sel[6])
{
    static const int ids[6] = { UC_X86_REG_SS, UC_X86_REG_DS, UC_X86_REG_ES,
                                UC_X86_REG_FS, UC_X86_REG_GS, UC_X86_REG_CS };

    for (unsigned k = 0; k < 6; k++) {
        uc_err err = wr(e, ids[k], sel[k]);

        if (err)
            return uc_fail("load a segment register", err);
    }
    return 0;
}

static int emu_set_state(struct vcpu *c, const struct vmm_cpu_state *s)
{
    struct emu_cpu *e = E(c);
    uint16_t sel[6] = { s->ss.selector, s->ds.selector, s->es.selector,
                        s->fs.selector, s->gs.selector, s->cs.selector };
    uc_err err;

    if (s->efer || (s->cr0 & X86_CR0_PG) || s->cs.l) {
        fprintf(stderr, "vdisk-vmm: the emu accelerator enters 32-bit protected mode "
                "without paging only\n");
        return -ENOTSUP;
    }
    err = wr_mmr(e, UC_X86_REG_GDTR, 0, s->gdt.base, s->gdt.limit, 0);
    if (!err)
        err = wr_mmr(e, UC_X86_REG_IDTR, 0, s->idt.base, s->idt.limit, 0);
    if (!err)
        err = wr(e, UC_X86_REG_CR4, s->cr4);
    if (!err)
        err = wr(e, UC_X86_REG_CR3, s->cr3);
    if (!err)
        err = wr(e, UC_X86_REG_CR0, s->cr0);
    if (err)
        return uc_fail("set control registers", err);
    if (load_segments(e, sel) < 0)
        return -EIO;
    for (unsigned k = 0; k < 8 && !err; k++)
        err = wr(e, gpr_ids[k], s->gpr[k]);
    if (!err)
        err = wr(e, UC_X86_REG_EFLAGS, s->rflags);
    if (!err)
        err = wr(e, UC_X86_REG_EIP, s->rip);
    if (err)
        return uc_fail("set registers", err);
    return 0;
}

/* ---- running ---- */

static void emu_kick(struct vcpu *c)
{
    struct emu_cpu *e = E(c);

    atomic_store(&e->kicked, true);
}

static enum vcpu_exit emu_run(struct vcpu *c)
{
    struct emu_cpu *e = E(c);
    struct vm *vm = c->vm;
    uint64_t eip;
    uint8_t *insn;
    uc_err err;

    atomic_store(&e->kicked, false);
    /* Whatever was kicked for just before the flag was cleared. */
    if (atomic_load(&vm->state) != VM_RUNNING || atomic_load(&vm->pause_req) ||
        atomic_load(&vm->done_pending))
        return VCPU_EXIT_AGAIN;
    eip = rd(e, UC_X86_REG_EIP);
    e->exception = -1;
    err = uc_emu_start(e->uc, eip, 0, 0, 0);
    if (err) {
        vm_fault(vm, "the emulator stopped: %s (eip 0x%llx)", uc_strerror(err),
                 (unsigned long long)rd(e, UC_X86_REG_EIP));
        return VCPU_EXIT_FAULT;
    }
    if (e->exception >= 0) {
        vm_fault(vm, "the guest raised CPU exception %d at eip 0x%llx and has no way "
                 "to take it (no interrupt delivery under emu)", e->exception,
                 (unsigned long long)rd(e, UC_X86_REG_EIP));
        return VCPU_EXIT_FAULT;
    }
    if (atomic_load(&e->kicked) || atomic_load(&vm->state) != VM_RUNNING)
        return VCPU_EXIT_AGAIN;
    eip = rd(e, UC_X86_REG_EIP);
    insn = eip > 0 ? vmm_mem_ptr(&vm->mem, eip - 1, 1) : NULL;
    return insn && *insn == 0xf4 ? VCPU_EXIT_HALT : VCPU_EXIT_AGAIN;
}

static void emu_set_irq(struct vm *vm, unsigned line, bool level)
{
    (void)vm;
    (void)line;
    (void)level;                /* no interrupt controller */
}

static void emu_invalidate(struct vcpu *c, uint64_t gpa, uint64_t len)
{
    uc_ctl_remove_cache(E(c)->uc, gpa, gpa + len);
}

/* ---- checkpoints ---- */

#define NFPR 8
struct reg_name {
    const char *name;
    int id;
};

static const struct reg_name plain_regs[] = {
    { "eax", UC_X86_REG_EAX }, { "ecx", UC_X86_REG_ECX }, { "edx", UC_X86_REG_EDX },
    { "ebx", UC_X86_REG_EBX }, { "esp", UC_X86_REG_ESP }, { "ebp", UC_X86_REG_EBP },
    { "esi", UC_X86_REG_ESI }, { "edi", UC_X86_REG_EDI }, { "eip", UC_X86_REG_EIP },
    { "eflags", UC_X86_REG_EFLAGS }, { "cr0", UC_X86_REG_CR0 }, { "cr2", UC_X86_REG_CR2 },
    { "cr3", UC_X86_REG_CR3 }, { "cr4", UC_X86_REG_CR4 }, { "fpcw", UC_X86_REG_FPCW },
    { "fpsw", UC_X86_REG_FPSW }, { "fptag", UC_X86_REG_FPTAG }, { "mxcsr", UC_X86_REG_MXCSR },
};
static const struct reg_name seg_regs[6] = {
    { "ss", UC_X86_REG_SS }, { "ds", UC_X86_REG_DS }, { "es", UC_X86_REG_ES },
    { "fs", UC_X86_REG_FS }, { "gs", UC_X86_REG_GS }, { "cs", UC_X86_REG_CS },
};
static const struct reg_name table_regs[] = {
    { "gdtr", UC_X86_REG_GDTR }, { "idtr", UC_X86_REG_IDTR },
    { "ldtr", UC_X86_REG_LDTR }, { "tr", UC_X86_REG_TR },
};

static int emu_save_cpu(struct vcpu *c, void **out)
{
    struct emu_cpu *e = E(c);
    json_t *j = json_object();
    char key[16];
    int err = 0;

    if (!j)
        return -ENOMEM;
    for (size_t k = 0; k < sizeof(plain_regs) / sizeof(plain_regs[0]) && !err; k++)
        err = js_set_u64(j, plain_regs[k].name, rd(e, plain_regs[k].id) & 0xffffffffu);
    for (size_t k = 0; k < 6 && !err; k++)
        err = js_set_u64(j, seg_regs[k].name, rd(e, seg_regs[k].id) & 0xffff);
    for (size_t k = 0; k < sizeof(table_regs) / sizeof(table_regs[0]) && !err; k++) {
        uc_x86_mmr m = rd_mmr(e, table_regs[k].id);
        json_t *t = json_object();

        if (!t || json_object_set_new(j, table_regs[k].name, t)) {
            err = -ENOMEM;
            break;
        }
        err = js_set_u64(t, "selector", m.selector);
        if (!err)
            err = js_set_u64(t, "base", m.base);
        if (!err)
            err = js_set_u64(t, "limit", m.limit);
        if (!err)
            err = js_set_u64(t, "flags", m.flags);
    }
    /* x87 registers are 80 bits, XMM registers 128. */
    for (unsigned k = 0; k < NFPR && !err; k++) {
        uint8_t buf[16] = { 0 };

        uc_reg_read(e->uc, UC_X86_REG_ST0 + (int)k, buf);
        snprintf(key, sizeof(key), "st%u", k);
        err = js_set_blob(j, key, buf, 10);
        memset(buf, 0, sizeof(buf));
        uc_reg_read(e->uc, UC_X86_REG_XMM0 + (int)k, buf);
        snprintf(key, sizeof(key), "xmm%u", k);
        if (!err)
            err = js_set_blob(j, key, buf, 16);
    }
    if (err) {
        json_decref(j);
        return err;
    }
    *out = j;
    return 0;
}

static int emu_restore_cpu(struct vcpu *c, const void *json)
{
    const json_t *j = json;
    struct emu_cpu *e = E(c);
    uint64_t v, sel[6];
    uint16_t sel16[6];
    char key[16];
    uc_err uerr = UC_ERR_OK;
    int err = 0;

    /* The descriptor tables first: the segments are loaded from the GDT. */
    for (size_t k = 0; k < sizeof(table_regs) / sizeof(table_regs[0]); k++) {
        const json_t *t = json_object_get(j, table_regs[k].name);
        uint64_t s, b, l, f;

        if (js_get_u64(t, "selector", 0xffff, &s) || js_get_u64(t, "base", UINT32_MAX, &b) ||
            js_get_u64(t, "limit", UINT32_MAX, &l) || js_get_u64(t, "flags", UINT32_MAX, &f))
            return -EINVAL;
        /* LDTR and TR of a flat guest are the reset values: only loaded
         * when the guest set its own. */
        if (k >= 2 && s == 0)
            continue;
        uerr = wr_mmr(e, table_regs[k].id, (uint16_t)s, b, (uint32_t)l, (uint32_t)f);
        if (uerr)
            return uc_fail("restore a descriptor table register", uerr);
    }
    for (size_t k = 0; k < sizeof(plain_regs) / sizeof(plain_regs[0]); k++) {
        int id = plain_regs[k].id;

        if (js_get_u64(j, plain_regs[k].name, UINT32_MAX, &v))
            return -EINVAL;
        /* Control registers before the segments; EIP and EFLAGS last. */
        if (id == UC_X86_REG_EIP || id == UC_X86_REG_EFLAGS)
            continue;
        uerr = wr(e, id, v);
        if (uerr)
            return uc_fail(plain_regs[k].name, uerr);
    }
    for (size_t k = 0; k < 6; k++) {
        if (js_get_u64(j, seg_regs[k].name, 0xffff, &sel[k]))
            return -EINVAL;
        sel16[k] = (uint16_t)sel[k];
    }
    err = load_segments(e, sel16);
    if (err)
        return err;
    for (unsigned k = 0; k < NFPR; k++) {
        uint8_t buf[16] = { 0 };

        snprintf(key, sizeof(key), "st%u", k);
        if (js_get_blob(j, key, buf, 10))
            return -EINVAL;
        uerr = uc_reg_write(e->uc, UC_X86_REG_ST0 + (int)k, buf);
        snprintf(key, sizeof(key), "xmm%u", k);
        if (!uerr && js_get_blob(j, key, buf, 16))
            return -EINVAL;
        if (!uerr)
            uerr = uc_reg_write(e->uc, UC_X86_REG_XMM0 + (int)k, buf);
        if (uerr)
            return uc_fail("restore the FPU", uerr);
    }
    if (js_get_u64(j, "eflags", UINT32_MAX, &v) || (uerr = wr(e, UC_X86_REG_EFLAGS, v)) ||
        js_get_u64(j, "eip", UINT32_MAX, &v) || (uerr = wr(e, UC_X86_REG_EIP, v)))
        return uerr ? uc_fail("restore eip", uerr) : -EINVAL;
    return 0;
}

static int emu_save_vm(struct vm *vm, void **out)
{
    (void)vm;
    *out = json_object();
    return *out ? 0 : -ENOMEM;
}

static int emu_restore_vm(struct vm *vm, const void *json)
{
    (void)vm;
    (void)json;
    return 0;
}

const struct vmm_accel vmm_accel_emu = {
    .name = "emu",
    .completes_on_vcpu = true,
    .interrupts = false,
    .init = emu_init,
    .destroy = emu_destroy,
    .vcpu_init = emu_vcpu_init,
    .vcpu_destroy = emu_vcpu_destroy,
    .set_state = emu_set_state,
    .get_state = emu_get_state,
    .run = emu_run,
    .kick = emu_kick,
    .set_irq = emu_set_irq,
    .invalidate = emu_invalidate,
    .save_cpu = emu_save_cpu,
    .restore_cpu = emu_restore_cpu,
    .save_vm = emu_save_vm,
    .restore_vm = emu_restore_vm,
};
