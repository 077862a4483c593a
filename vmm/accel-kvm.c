/*
 * accel-kvm.c - the KVM accelerator: guest code runs on the host CPU
 * through /dev/kvm (Documentation/virt/kvm/api.rst in Linux).
 *
 * What the machine asks of KVM, and how:
 * - Guest RAM is one memory slot at guest physical 0.  Everything else
 *   (the virtio-mmio window, every port but those of KVM's own devices)
 *   exits to us and goes to vm.c.
 * - A Linux kernel (vm->irqchip) gets KVM's interrupt controllers: two
 *   8259s, an IOAPIC, a LAPIC per vCPU, and the 8254 PIT.  HLT then stays
 *   in the kernel, so a vCPU halted for good with interrupts off (how
 *   Linux powers off without ACPI) is only seen when a kick brings it out
 *   of KVM_RUN: after_kick() looks for it.  A flat guest gets no
 *   controller, and its HLT exits to us.
 * - Kicks: kvm_run.immediate_exit, plus a signal (KICK_SIGNAL, whose
 *   handler does nothing, installed without SA_RESTART) to a thread that
 *   is inside run().  run() clears immediate_exit only on entry, before it
 *   looks at vm.state and vm.pause_req; every kick follows a change of one
 *   of those, so a kick is either seen there or makes KVM_RUN return at
 *   once.  None is lost.
 * - An IN or an MMIO read is completed by the next KVM_RUN (the value goes
 *   from kvm_run into the guest's register then).  run() never returns
 *   with one pending: when it must stop after such an exit, it sets
 *   immediate_exit and enters KVM_RUN once more, which completes the
 *   access and returns EINTR.  So what get_state and the checkpoints read
 *   is always whole, whichever thread reads it.
 * Checkpoints of what KVM keeps are in accel-kvm-state.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "accel-kvm.h"

#define KVM_API_VERSION_OK  12
#define KICK_SIGNAL         SIGUSR1

/* Pages KVM needs for itself on Intel (a real-mode TSS, three pages, and
 * an identity-map page table, one page) to run real mode without
 * unrestricted guest support.  Just below 4 GiB: outside RAM (at most
 * VM_MAX_MEM), the virtio-mmio window, the IOAPIC (0xfec00000) and the
 * LAPIC (0xfee00000). */
#define KVM_IDMAP_ADDR      0xfffbc000ull
#define KVM_TSS_ADDR        0xfffbd000ull

int kv_fail(const char *what, int index)
{
    int err = errno ? errno : EIO;

    if (index >= 0)
        fprintf(stderr, "vdisk-vmm: kvm: vCPU %d: %s: %s\n", index, what, strerror(err));
    else
        fprintf(stderr, "vdisk-vmm: kvm: %s: %s\n", what, strerror(err));
    return -err;
}

/* ---- is KVM there ---- */

#define CAP(c) { c, #c }
static const struct {
    int cap;
    const char *name;
} needed_caps[] = {
    CAP(KVM_CAP_USER_MEMORY), CAP(KVM_CAP_SET_TSS_ADDR), CAP(KVM_CAP_SET_IDENTITY_MAP_ADDR),
    CAP(KVM_CAP_EXT_CPUID), CAP(KVM_CAP_IMMEDIATE_EXIT), CAP(KVM_CAP_MP_STATE),
    CAP(KVM_CAP_VCPU_EVENTS), CAP(KVM_CAP_IRQCHIP), CAP(KVM_CAP_PIT2),
    CAP(KVM_CAP_ADJUST_CLOCK),
};

/* Opens /dev/kvm and checks the API version and the capabilities used
 * here.  Returns the fd, or -errno with *why set (a static string). */
static int open_kvm(const char **why)
{
    static char msg[160];
    int fd, v;

    fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;

        snprintf(msg, sizeof(msg), "/dev/kvm: %s", strerror(err));
        *why = msg;
        return -err;
    }
    v = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (v < 0) {
        snprintf(msg, sizeof(msg), "/dev/kvm: not KVM (KVM_GET_API_VERSION: %s)",
                 strerror(errno));
        *why = msg;
        close(fd);
        return -ENOTSUP;
    }
    if (v != KVM_API_VERSION_OK) {
        snprintf(msg, sizeof(msg), "/dev/kvm: KVM API version %d, not %d", v,
                 KVM_API_VERSION_OK);
        *why = msg;
        close(fd);
        return -ENOTSUP;
    }
    for (size_t i = 0; i < sizeof(needed_caps) / sizeof(needed_caps[0]); i++) {
        if (ioctl(fd, KVM_CHECK_EXTENSION, needed_caps[i].cap) <= 0) {
            snprintf(msg, sizeof(msg), "/dev/kvm: KVM lacks %s (Linux 4.11 or later has it)",
                     needed_caps[i].name);
            *why = msg;
            close(fd);
            return -ENOTSUP;
        }
    }
    return fd;
}

bool vmm_kvm_usable(const char **why)
{
    int fd = open_kvm(why);

    if (fd < 0)
        return false;
    close(fd);
    *why = NULL;
    return true;
}

/* ---- the VM ---- */

static void kick_handler(int sig)
{
    (void)sig;      /* interrupting KVM_RUN is all it is for */
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;
static int kick_installed = -1;

static void install_kick_handler(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;            /* no SA_RESTART: KVM_RUN must return */
    kick_installed = sigaction(KICK_SIGNAL, &sa, NULL) == 0 ? 0 : -errno;
}

static int get_supported_cpuid(struct kv_vm *v)
{
    for (unsigned n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
        int err;

        if (!c)
            return -ENOMEM;
        c->nent = n;
        if (ioctl(v->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            v->cpuid = c;
            return 0;
        }
        err = errno;
        free(c);
        if (err != E2BIG) {
            errno = err;
            return kv_fail("KVM_GET_SUPPORTED_CPUID", -1);
        }
    }
    errno = E2BIG;
    return kv_fail("KVM_GET_SUPPORTED_CPUID", -1);
}

static int kvm_init(struct vm *vm)
{
    struct kvm_userspace_memory_region ram = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = vm->mem.size,
        .userspace_addr = (uint64_t)(uintptr_t)vm->mem.host,
    };
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    uint64_t idmap = KVM_IDMAP_ADDR;
    struct kv_vm *v;
    const char *why;
    int r;

    pthread_once(&kick_once, install_kick_handler);
    if (kick_installed < 0) {
        fprintf(stderr, "vdisk-vmm: kvm: cannot install the kick signal handler: %s\n",
                strerror(-kick_installed));
        return kick_installed;
    }
    v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->kvm_fd = v->vm_fd = -1;
    vm->accel_data = v;             /* from here on, destroy cleans up */

    r = open_kvm(&why);
    if (r < 0) {
        fprintf(stderr, "vdisk-vmm: %s\n", why);
        return r;
    }
    v->kvm_fd = r;
    r = ioctl(v->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (r < 0)
        return kv_fail("KVM_GET_VCPU_MMAP_SIZE", -1);
    if ((size_t)r < sizeof(struct kvm_run)) {
        fprintf(stderr, "vdisk-vmm: kvm: kvm_run is %d bytes, too small\n", r);
        return -EIO;
    }
    v->run_size = (size_t)r;
    v->vm_fd = ioctl(v->kvm_fd, KVM_CREATE_VM, 0);
    if (v->vm_fd < 0)
        return kv_fail("KVM_CREATE_VM", -1);
    if (ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &ram) < 0)
        return kv_fail("KVM_SET_USER_MEMORY_REGION (guest RAM)", -1);
    /* Both before the first vCPU is created (api.rst). */
    if (ioctl(v->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return kv_fail("KVM_SET_IDENTITY_MAP_ADDR", -1);
    if (ioctl(v->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
        return kv_fail("KVM_SET_TSS_ADDR", -1);
    if (vm->irqchip) {
        if (ioctl(v->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
            return kv_fail("KVM_CREATE_IRQCHIP", -1);
        /* The dummy speaker port (0x61) lets Linux read PIT channel 2's
         * output, which its timer calibration polls. */
        if (ioctl(v->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
            return kv_fail("KVM_CREATE_PIT2", -1);
        v->tsc_deadline = ioctl(v->kvm_fd, KVM_CHECK_EXTENSION,
                                KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    }
    r = get_supported_cpuid(v);
    if (r < 0)
        return r;

    /* How the FPU is saved: XSAVE2 gives the size (more than 4 KiB with
     * AMX), asked of the VM fd. */
    r = ioctl(v->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    if (r > 0) {
        v->xsave2 = true;
        v->xsave_size = (size_t)r < sizeof(struct kvm_xsave) ? sizeof(struct kvm_xsave)
                                                             : (size_t)r;
    } else if (ioctl(v->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
        v->xsave_size = sizeof(struct kvm_xsave);
    }
    v->xcrs = v->xsave_size && ioctl(v->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    return 0;
}

static void kvm_destroy(struct vm *vm)
{
    struct kv_vm *v = kv_vm_of(vm);

    if (!v)
        return;
    if (v->vm_fd >= 0)
        close(v->vm_fd);
    if (v->kvm_fd >= 0)
        close(v->kvm_fd);
    free(v->cpuid);
    free(v);
    vm->accel_data = NULL;
}

/* ---- vCPUs ---- */

/* The MSRs a checkpoint keeps: those a guest sets and expects back (the
 * syscall entry points, the segment bases, the TSC, the caching set-up,
 * KVM's paravirtual clock and async page faults).  Which of them this host
 * handles is found by trying each (probe_msrs): KVM_GET_MSR_INDEX_LIST
 * does not name every architectural MSR KVM keeps, and some it names
 * cannot be written back. */
static const uint32_t wanted_msrs[] = {
    0x00000010, /* TSC */
    0x0000001b, /* APIC_BASE */
    0x0000003b, /* TSC_ADJUST */
    0x00000048, /* SPEC_CTRL */
    0x00000174, 0x00000175, 0x00000176, /* SYSENTER_CS, _ESP, _EIP */
    0x000001a0, /* MISC_ENABLE */
    0x00000200, 0x00000201, 0x00000202, 0x00000203, /* MTRR variable ranges */
    0x00000204, 0x00000205, 0x00000206, 0x00000207,
    0x00000208, 0x00000209, 0x0000020a, 0x0000020b,
    0x0000020c, 0x0000020d, 0x0000020e, 0x0000020f,
    0x00000250, 0x00000258, 0x00000259, /* MTRR fixed ranges */
    0x00000268, 0x00000269, 0x0000026a, 0x0000026b,
    0x0000026c, 0x0000026d, 0x0000026e, 0x0000026f,
    0x00000277, /* PAT */
    0x000002ff, /* MTRR_DEF_TYPE */
    0x000006e0, /* TSC_DEADLINE */
    0x00000da0, /* XSS */
    0xc0000080, /* EFER */
    0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, /* STAR LSTAR CSTAR SFMASK */
    0xc0000100, 0xc0000101, 0xc0000102, /* FS_BASE GS_BASE KERNEL_GS_BASE */
    0xc0000103, /* TSC_AUX */
    0x00000011, 0x00000012, /* KVM_WALL_CLOCK, KVM_SYSTEM_TIME (old) */
    0x4b564d00, 0x4b564d01, /* KVM_WALL_CLOCK_NEW, KVM_SYSTEM_TIME_NEW */
    0x4b564d02, 0x4b564d03, /* KVM_ASYNC_PF_EN, KVM_STEAL_TIME */
    0x4b564d04, 0x4b564d06, /* KVM_PV_EOI_EN, KVM_ASYNC_PF_INT */
};
_Static_assert(sizeof(wanted_msrs) / sizeof(wanted_msrs[0]) <= KV_MAX_MSRS, "KV_MAX_MSRS");

struct kvm_msrs *kv_msrs_alloc(unsigned n)
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));

    if (m)
        m->nmsrs = n;
    return m;
}

static int probe_msrs(struct kv_vm *v, int vcpu_fd)
{
    struct kvm_msrs *m = kv_msrs_alloc(1);

    if (!m)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(wanted_msrs) / sizeof(wanted_msrs[0]); i++) {
        m->nmsrs = 1;
        m->entries[0].index = wanted_msrs[i];
        /* Kept if it reads, and takes back what it read (a restore
         * writes it): some KVMs read more than they let us write. */
        if (ioctl(vcpu_fd, KVM_GET_MSRS, m) == 1 && ioctl(vcpu_fd, KVM_SET_MSRS, m) == 1)
            v->msrs[v->nmsrs++] = wanted_msrs[i];
    }
    free(m);
    v->msrs_probed = true;
    return 0;
}

/* The CPUID a vCPU gets: what KVM supports, with its own APIC ID and the
 * hypervisor bit (which sends Linux to KVM's paravirtual leaves at
 * 0x40000000, its clock among them). */
static int set_cpuid(struct vcpu *c)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    size_t size = sizeof(*v->cpuid) + v->cpuid->nent * sizeof(v->cpuid->entries[0]);
    struct kvm_cpuid2 *id = malloc(size);
    int err = 0;

    if (!id)
        return -ENOMEM;
    memcpy(id, v->cpuid, size);
    for (unsigned i = 0; i < id->nent; i++) {
        struct kvm_cpuid_entry2 *e = &id->entries[i];

        switch (e->function) {
        case 1:
            e->ebx = (e->ebx & 0x00ffffffu) | c->index << 24;   /* initial APIC ID */
            e->ecx |= 1u << 31;                                 /* hypervisor */
            if (v->tsc_deadline)
                e->ecx |= 1u << 24;                             /* TSC-deadline */
            break;
        case 0xb:
        case 0x1f:
            e->edx = c->index;                                  /* x2APIC ID */
            break;
        }
    }
    if (ioctl(kv_cpu_of(c)->fd, KVM_SET_CPUID2, id) < 0)
        err = kv_fail("KVM_SET_CPUID2", (int)c->index);
    free(id);
    return err;
}

static int kvm_vcpu_init(struct vcpu *c)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    struct kv_cpu *k = calloc(1, sizeof(*k));
    void *run;
    int err;

    if (!k)
        return -ENOMEM;
    k->fd = -1;
    pthread_mutex_init(&k->lock, NULL);
    c->accel = k;
    k->fd = ioctl(v->vm_fd, KVM_CREATE_VCPU, (unsigned long)c->index);
    if (k->fd < 0)
        return kv_fail("KVM_CREATE_VCPU", (int)c->index);
    run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->fd, 0);
    if (run == MAP_FAILED)
        return kv_fail("mmap of kvm_run", (int)c->index);
    k->run = run;
    err = set_cpuid(c);
    if (err < 0)
        return err;
    if (!v->msrs_probed)
        return probe_msrs(v, k->fd);
    return 0;
}

static void kvm_vcpu_destroy(struct vcpu *c)
{
    struct kv_cpu *k = kv_cpu_of(c);

    if (!k)
        return;
    if (k->run)
        munmap(k->run, kv_vm_of(c->vm)->run_size);
    if (k->fd >= 0)
        close(k->fd);
    pthread_mutex_destroy(&k->lock);
    free(k);
    c->accel = NULL;
}

/* ---- registers ---- */

static void gpr_slots(struct kvm_regs *r, __u64 *p[16])
{
    __u64 *order[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
                            &r->rsi, &r->rdi, &r->r8, &r->r9, &r->r10, &r->r11,
                            &r->r12, &r->r13, &r->r14, &r->r15 };

    memcpy(p, order, sizeof(order));
}

static void seg_from_kvm(struct vmm_segment *d, const struct kvm_segment *s)
{
    *d = (struct vmm_segment){
        .base = s->base, .limit = s->limit, .selector = s->selector, .type = s->type,
        .present = s->present, .dpl = s->dpl, .db = s->db, .s = s->s, .l = s->l, .g = s->g,
        .avl = s->avl, .unusable = s->unusable,
    };
}

static void seg_to_kvm(struct kvm_segment *d, const struct vmm_segment *s)
{
    *d = (struct kvm_segment){
        .base = s->base, .limit = s->limit, .selector = s->selector, .type = s->type,
        .present = s->present, .dpl = s->dpl, .db = s->db, .s = s->s, .l = s->l, .g = s->g,
        .avl = s->avl, .unusable = s->unusable,
    };
}

static int kvm_get_state(struct vcpu *c, struct vmm_cpu_state *s)
{
    struct kv_cpu *k = kv_cpu_of(c);
    struct kvm_regs regs;
    struct kvm_sregs sr;
    __u64 *gpr[16];

    if (ioctl(k->fd, KVM_GET_REGS, &regs) < 0)
        return kv_fail("KVM_GET_REGS", (int)c->index);
    if (ioctl(k->fd, KVM_GET_SREGS, &sr) < 0)
        return kv_fail("KVM_GET_SREGS", (int)c->index);
    memset(s, 0, sizeof(*s));
    gpr_slots(&regs, gpr);
    for (unsigned i = 0; i < 16; i++)
        s->gpr[i] = *gpr[i];
    s->rip = regs.rip;
    s->rflags = regs.rflags;
    seg_from_kvm(&s->cs, &sr.cs);
    seg_from_kvm(&s->ds, &sr.ds);
    seg_from_kvm(&s->es, &sr.es);
    seg_from_kvm(&s->fs, &sr.fs);
    seg_from_kvm(&s->gs, &sr.gs);
    seg_from_kvm(&s->ss, &sr.ss);
    seg_from_kvm(&s->tr, &sr.tr);
    seg_from_kvm(&s->ldt, &sr.ldt);
    s->gdt = (struct vmm_dtable){ .base = sr.gdt.base, .limit = sr.gdt.limit };
    s->idt = (struct vmm_dtable){ .base = sr.idt.base, .limit = sr.idt.limit };
    s->cr0 = sr.cr0;
    s->cr2 = sr.cr2;
    s->cr3 = sr.cr3;
    s->cr4 = sr.cr4;
    s->efer = sr.efer;
    return 0;
}

static int kvm_set_state(struct vcpu *c, const struct vmm_cpu_state *s)
{
    struct kv_cpu *k = kv_cpu_of(c);
    struct kvm_regs regs;
    struct kvm_sregs sr;
    __u64 *gpr[16];

    /* What vmm_cpu_state does not hold (the APIC base, CR8, pending
     * interrupts) stays as KVM has it. */
    if (ioctl(k->fd, KVM_GET_SREGS, &sr) < 0)
        return kv_fail("KVM_GET_SREGS", (int)c->index);
    seg_to_kvm(&sr.cs, &s->cs);
    seg_to_kvm(&sr.ds, &s->ds);
    seg_to_kvm(&sr.es, &s->es);
    seg_to_kvm(&sr.fs, &s->fs);
    seg_to_kvm(&sr.gs, &s->gs);
    seg_to_kvm(&sr.ss, &s->ss);
    seg_to_kvm(&sr.tr, &s->tr);
    seg_to_kvm(&sr.ldt, &s->ldt);
    sr.gdt = (struct kvm_dtable){ .base = s->gdt.base, .limit = s->gdt.limit };
    sr.idt = (struct kvm_dtable){ .base = s->idt.base, .limit = s->idt.limit };
    sr.cr0 = s->cr0;
    sr.cr2 = s->cr2;
    sr.cr3 = s->cr3;
    sr.cr4 = s->cr4;
    sr.efer = s->efer;
    if (ioctl(k->fd, KVM_SET_SREGS, &sr) < 0)
        return kv_fail("KVM_SET_SREGS (an entry state KVM refuses)", (int)c->index);
    memset(&regs, 0, sizeof(regs));
    gpr_slots(&regs, gpr);
    for (unsigned i = 0; i < 16; i++)
        *gpr[i] = s->gpr[i];
    regs.rip = s->rip;
    regs.rflags = s->rflags;
    if (ioctl(k->fd, KVM_SET_REGS, &regs) < 0)
        return kv_fail("KVM_SET_REGS", (int)c->index);
    return 0;
}

/* ---- running ---- */

static bool must_stop(struct vm *vm)
{
    return atomic_load(&vm->state) != VM_RUNNING ||
           atomic_load(&vm->pause_req);
}

static void kvm_kick(struct vcpu *c)
{
    struct kv_cpu *k = kv_cpu_of(c);

    if (!k || !k->run)
        return;
    pthread_mutex_lock(&k->lock);
    /* What the kicker changed before (vm.state, pause_req) is visible
     * before immediate_exit is (run() reads them in the other order). */
    atomic_thread_fence(memory_order_seq_cst);
    /* The kernel reads it too: atomic byte stores, so that the vCPU's own
     * store and ours never tear or race. */
    __atomic_store_n(&k->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (k->in_run)
        pthread_kill(k->thread, KICK_SIGNAL);
    pthread_mutex_unlock(&k->lock);
}

/* Whether every vCPU but c halted for good (vm.c's halted()) or, when
 * last seen, waited for its start-up IPI. */
static bool others_stuck(struct vcpu *c)
{
    struct vm *vm = c->vm;
    bool all = true;

    pthread_mutex_lock(&vm->run_lock);
    for (unsigned i = 0; i < vm->ncpus; i++)
        all &= i == c->index || vm->cpus[i].halted ||
               atomic_load(&kv_cpu_of(&vm->cpus[i])->waiting_sipi);
    pthread_mutex_unlock(&vm->run_lock);
    return all;
}

/* KVM_RUN was interrupted.  Under an irqchip, a vCPU halted with
 * interrupts off waits for nothing an ordinary interrupt brings: report it
 * as a HLT, so that vm.c counts it halted for good (Linux's power-off
 * halts every CPU so when it finds no ACPI).  So is a vCPU still waiting
 * for its start-up IPI (a CPU Linux never brought up) once every other
 * vCPU is stuck too: nobody is left to send one.  (Its registers are the
 * reset state's, interrupts off.) */
static enum vcpu_exit after_kick(struct vcpu *c)
{
    struct kv_cpu *k = kv_cpu_of(c);
    struct kvm_mp_state mp;
    struct kvm_regs regs;
    bool waiting;

    if (!c->vm->irqchip || ioctl(k->fd, KVM_GET_MP_STATE, &mp) < 0)
        return VCPU_EXIT_AGAIN;
    waiting = mp.mp_state == KVM_MP_STATE_UNINITIALIZED ||
              mp.mp_state == KVM_MP_STATE_INIT_RECEIVED;
    atomic_store(&k->waiting_sipi, waiting);
    if (mp.mp_state == KVM_MP_STATE_HALTED && ioctl(k->fd, KVM_GET_REGS, &regs) == 0 &&
        !(regs.rflags & X86_EFLAGS_IF))
        return VCPU_EXIT_HALT;
    return waiting && others_stuck(c) ? VCPU_EXIT_HALT : VCPU_EXIT_AGAIN;
}

/* A port access: count > 1 for string instructions (INS/OUTS with REP),
 * the data count * size bytes at data_offset in kvm_run. */
static int handle_io(struct vcpu *c)
{
    struct kvm_run *r = kv_cpu_of(c)->run;
    size_t run_size = kv_vm_of(c->vm)->run_size;
    unsigned size = r->io.size, count = r->io.count;
    uint64_t off = r->io.data_offset;
    uint8_t *p;

    if ((size != 1 && size != 2 && size != 4) || off > run_size ||
        (uint64_t)size * count > run_size - off) {
        vm_fault(c->vm, "vCPU %u: KVM gave a malformed port exit (size %u, count %u, "
                 "offset %llu)", c->index, size, count, (unsigned long long)off);
        return -EIO;
    }
    p = (uint8_t *)r + off;
    for (unsigned i = 0; i < count; i++, p += size) {
        uint32_t v = 0;

        if (r->io.direction == KVM_EXIT_IO_OUT) {
            for (unsigned b = 0; b < size; b++)
                v |= (uint32_t)p[b] << (8 * b);
            vm_pio_out(c, r->io.port, size, v);
        } else {
            v = vm_pio_in(c, r->io.port, size);
            for (unsigned b = 0; b < size; b++)
                p[b] = (uint8_t)(v >> (8 * b));
        }
    }
    return 0;
}

/* An access outside RAM.  Where nothing is, writes are dropped and reads
 * give what vm_mmio_read says (0). */
static int handle_mmio(struct vcpu *c)
{
    struct kvm_run *r = kv_cpu_of(c)->run;
    unsigned len = r->mmio.len;
    uint64_t v = 0;

    if (len == 0 || len > sizeof(r->mmio.data)) {
        vm_fault(c->vm, "vCPU %u: KVM gave a malformed MMIO exit (length %u)", c->index, len);
        return -EIO;
    }
    if (r->mmio.is_write) {
        for (unsigned b = 0; b < len; b++)
            v |= (uint64_t)r->mmio.data[b] << (8 * b);
        vm_mmio_write(c, r->mmio.phys_addr, len, v);
    } else {
        vm_mmio_read(c, r->mmio.phys_addr, len, &v);
        for (unsigned b = 0; b < len; b++)
            r->mmio.data[b] = (uint8_t)(v >> (8 * b));
    }
    return 0;
}

static const char *exit_name(uint32_t reason)
{
    static const char *names[] = {
        [KVM_EXIT_UNKNOWN] = "UNKNOWN", [KVM_EXIT_EXCEPTION] = "EXCEPTION",
        [KVM_EXIT_IO] = "IO", [KVM_EXIT_HYPERCALL] = "HYPERCALL", [KVM_EXIT_DEBUG] = "DEBUG",
        [KVM_EXIT_HLT] = "HLT", [KVM_EXIT_MMIO] = "MMIO",
        [KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN", [KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
        [KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY", [KVM_EXIT_INTR] = "INTR",
        [KVM_EXIT_SET_TPR] = "SET_TPR", [KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
        [KVM_EXIT_NMI] = "NMI", [KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
        [KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT", [KVM_EXIT_IOAPIC_EOI] = "IOAPIC_EOI",
        [KVM_EXIT_X86_RDMSR] = "X86_RDMSR", [KVM_EXIT_X86_WRMSR] = "X86_WRMSR",
        [KVM_EXIT_X86_BUS_LOCK] = "X86_BUS_LOCK", [KVM_EXIT_NOTIFY] = "NOTIFY",
    };

    return reason < sizeof(names) / sizeof(names[0]) && names[reason] ? names[reason] : "?";
}

/* An exit the guest cannot go on from: the reason, into vm.fault. */
static enum vcpu_exit exit_fault(struct vcpu *c)
{
    static const char *suberrors[] = {
        [KVM_INTERNAL_ERROR_EMULATION] = "an instruction KVM cannot emulate",
        [KVM_INTERNAL_ERROR_SIMUL_EX] = "an exception while delivering one",
        [KVM_INTERNAL_ERROR_DELIVERY_EV] = "an exit while delivering an event",
        [KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON] = "an unexpected hardware exit",
    };
    struct kvm_run *r = kv_cpu_of(c)->run;
    struct vm *vm = c->vm;
    char data[80] = "";
    size_t n = 0;
    uint32_t sub;

    switch (r->exit_reason) {
    case KVM_EXIT_SHUTDOWN:
        vm_fault(vm, "vCPU %u: triple fault (KVM_EXIT_SHUTDOWN): the guest took an "
                 "exception it could not handle", c->index);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        vm_fault(vm, "vCPU %u: KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, "
                 "hardware reason 0x%llx): its state is invalid", c->index,
                 (unsigned long long)r->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        sub = r->internal.suberror;
        for (uint32_t i = 0; i < r->internal.ndata && i < 4 && n < sizeof(data); i++)
            n += (size_t)snprintf(data + n, sizeof(data) - n, " %llx",
                                  (unsigned long long)r->internal.data[i]);
        vm_fault(vm, "vCPU %u: KVM internal error %u (%s)%s%s", c->index, sub,
                 sub < sizeof(suberrors) / sizeof(suberrors[0]) && suberrors[sub]
                 ? suberrors[sub] : "unknown", n ? ", data" : "", data);
        break;
    default:
        vm_fault(vm, "vCPU %u: unexpected KVM exit %u (KVM_EXIT_%s)", c->index,
                 r->exit_reason, exit_name(r->exit_reason));
        break;
    }
    return VCPU_EXIT_FAULT;
}

static enum vcpu_exit run_loop(struct vcpu *c)
{
    struct kv_cpu *k = kv_cpu_of(c);
    struct kvm_run *r = k->run;
    struct vm *vm = c->vm;

    for (;;) {
        if (ioctl(k->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                return after_kick(c);
            vm_fault(vm, "vCPU %u: KVM_RUN: %s", c->index, strerror(errno));
            return VCPU_EXIT_FAULT;
        }
        atomic_store(&k->waiting_sipi, false);  /* it runs */
        switch (r->exit_reason) {
        case KVM_EXIT_IO:
            if (handle_io(c) < 0)
                return VCPU_EXIT_FAULT;
            break;
        case KVM_EXIT_MMIO:
            if (handle_mmio(c) < 0)
                return VCPU_EXIT_FAULT;
            break;
        case KVM_EXIT_HLT:
            return VCPU_EXIT_HALT;
        case KVM_EXIT_INTR:
            return after_kick(c);
        case KVM_EXIT_SYSTEM_EVENT:
            if (r->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
                vm_stop(vm, VM_POWEROFF);
                return VCPU_EXIT_AGAIN;
            }
            if (r->system_event.type == KVM_SYSTEM_EVENT_RESET) {
                vm_stop(vm, VM_RESET);
                return VCPU_EXIT_AGAIN;
            }
            return exit_fault(c);
        default:
            return exit_fault(c);
        }
        /* The access is completed by the next KVM_RUN, which then, with
         * immediate_exit, returns at once. */
        if (must_stop(vm))
            __atomic_store_n(&r->immediate_exit, 1, __ATOMIC_SEQ_CST);
    }
}

static enum vcpu_exit kvm_run_vcpu(struct vcpu *c)
{
    struct kv_cpu *k = kv_cpu_of(c);
    enum vcpu_exit e;

    /* The thread may have been created with the kick signal blocked. */
    if (!k->sig_ready) {
        sigset_t set;

        sigemptyset(&set);
        sigaddset(&set, KICK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        k->sig_ready = true;
    }
    pthread_mutex_lock(&k->lock);
    k->thread = pthread_self();
    k->in_run = true;
    pthread_mutex_unlock(&k->lock);

    __atomic_store_n(&k->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    atomic_thread_fence(memory_order_seq_cst);
    e = must_stop(c->vm) ? VCPU_EXIT_AGAIN : run_loop(c);

    pthread_mutex_lock(&k->lock);
    k->in_run = false;
    pthread_mutex_unlock(&k->lock);
    return e;
}

static void kvm_set_irq(struct vm *vm, unsigned line, bool level)
{
    static atomic_bool reported;
    struct kvm_irq_level l = { .irq = line, .level = level };

    if (!vm->irqchip)
        return;
    if (ioctl(kv_vm_of(vm)->vm_fd, KVM_IRQ_LINE, &l) < 0 && !atomic_exchange(&reported, true))
        fprintf(stderr, "vdisk-vmm: kvm: KVM_IRQ_LINE %u: %s\n", line, strerror(errno));
}

const struct vmm_accel vmm_accel_kvm = {
    .name = "kvm",
    .completes_on_vcpu = false,
    .interrupts = true,
    .init = kvm_init,
    .destroy = kvm_destroy,
    .vcpu_init = kvm_vcpu_init,
    .vcpu_destroy = kvm_vcpu_destroy,
    .set_state = kvm_set_state,
    .get_state = kvm_get_state,
    .run = kvm_run_vcpu,
    .kick = kvm_kick,
    .set_irq = kvm_set_irq,
    .invalidate = NULL,
    .save_cpu = kv_save_cpu,
    .restore_cpu = kv_restore_cpu,
    .save_vm = kv_save_vm,
    .restore_vm = kv_restore_vm,
};
