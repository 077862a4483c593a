/*
 * vm.c - the machine: RAM, the port and MMIO map, interrupt lines, the
 * vCPU threads and their pause, and the completion queue.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm.h"

void vm_wake_loop(struct vm *vm)
{
    uint64_t one = 1;

    if (vm->wake_fd >= 0 && write(vm->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the loop wakes anyway. */
    }
}

static void kick_all(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        if (vm->cpus[i].accel)
            vm->accel->kick(&vm->cpus[i]);
}

void vm_stop(struct vm *vm, enum vm_state reason)
{
    int expected = VM_RUNNING;

    atomic_compare_exchange_strong(&vm->state, &expected, (int)reason);
    pthread_mutex_lock(&vm->run_lock);
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->run_lock);
    kick_all(vm);
    vm_wake_loop(vm);
}

void vm_fault(struct vm *vm, const char *fmt, ...)
{
    va_list ap;

    /* Only the first fault's words are kept. */
    pthread_mutex_lock(&vm->run_lock);
    if (atomic_load(&vm->state) == VM_RUNNING && !vm->fault[0]) {
        va_start(ap, fmt);
        vsnprintf(vm->fault, sizeof(vm->fault), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&vm->run_lock);
    vm_stop(vm, VM_FAULT);
}

/* ---- the console ---- */

static void console_tx(void *opaque, uint8_t byte)
{
    struct vm *vm = opaque;

    vm->console_bytes++;
    /* A console nobody reads any more must not stop the guest. */
    while (write(vm->console_fd, &byte, 1) < 0 && errno == EINTR)
        ;
}

static void uart_irq(void *opaque, bool level)
{
    struct vm *vm = opaque;

    if (vm->irqchip)
        vm->accel->set_irq(vm, UART_COM1_IRQ, level);
}

/* ---- disks ---- */

static void disk_interrupt(void *opaque)
{
    struct vm_disk *d = opaque;

    vmmio_used(&d->mmio);
}

static void disk_irq(void *opaque, bool level)
{
    struct vm_disk *d = opaque;

    if (d->vm->irqchip)
        d->vm->accel->set_irq(d->vm, d->irq, level);
}

struct vm_disk *vm_add_disk(struct vm *vm, uint64_t capacity, bool read_only,
                            const char *id, struct vblk_backend backend)
{
    struct vm_disk *d;

    if (vm->ndisks == VM_MAX_DISKS)
        return NULL;
    d = &vm->disks[vm->ndisks];
    memset(d, 0, sizeof(*d));
    d->vm = vm;
    d->irq = VIRTIO_MMIO_IRQ_BASE + vm->ndisks;
    d->blk.mem = &vm->mem;
    d->blk.capacity = capacity / VIRTIO_BLK_SECTOR * VIRTIO_BLK_SECTOR;
    d->blk.read_only = read_only;
    snprintf(d->blk.id, sizeof(d->blk.id), "%s", id);
    d->blk.backend = backend;
    d->blk.interrupt = disk_interrupt;
    d->blk.irq_opaque = d;
    d->mmio.mem = &vm->mem;
    vblk_virtio_device(&d->blk, &d->mmio.dev);
    d->mmio.irq = disk_irq;
    d->mmio.irq_opaque = d;
    vm->ndisks++;
    return d;
}

unsigned vm_inflight(struct vm *vm)
{
    unsigned n = 0;

    for (unsigned i = 0; i < vm->ndisks; i++)
        n += vm->disks[i].blk.inflight;
    return n;
}

/* ---- completions ---- */

void vm_complete(struct vm *vm, struct vblk_req *r, int result)
{
    r->done_result = result;
    r->done_next = NULL;
    pthread_mutex_lock(&vm->done_lock);
    *vm->done_tail = r;
    vm->done_tail = &r->done_next;
    atomic_store(&vm->done_pending, true);
    pthread_mutex_unlock(&vm->done_lock);
    if (vm->accel->completes_on_vcpu)
        vm->accel->kick(&vm->cpus[0]);
    vm_wake_loop(vm);
}

void vm_run_completions(struct vm *vm, struct vcpu *c)
{
    struct vblk_req *list, *next;

    if (!atomic_load(&vm->done_pending))
        return;
    pthread_mutex_lock(&vm->done_lock);
    list = vm->done_head;
    vm->done_head = NULL;
    vm->done_tail = &vm->done_head;
    atomic_store(&vm->done_pending, false);
    pthread_mutex_unlock(&vm->done_lock);

    pthread_mutex_lock(&vm->lock);
    for (struct vblk_req *r = list; r; r = next) {
        next = r->done_next;
        /* A read put data where the guest may have code: whatever the
         * accelerator translated from there is stale. */
        if (c && vm->accel->invalidate && r->op == VBLK_READ && r->done_result >= 0)
            for (unsigned i = 0; i < r->niov; i++)
                vm->accel->invalidate(c, (uint64_t)((uint8_t *)r->iov[i].iov_base -
                                                    vm->mem.host),
                                      r->iov[i].iov_len);
        vblk_req_done(r, r->done_result);
    }
    pthread_mutex_unlock(&vm->lock);
    /* Someone may wait for the disks to drain (vm_pause's callers). */
    vm_wake_loop(vm);
}

/* ---- port and MMIO dispatch ---- */

uint32_t vm_pio_in(struct vcpu *c, uint16_t port, unsigned size)
{
    struct vm *vm = c->vm;
    uint32_t v = 0;

    if (port >= UART_COM1_PORT && port < UART_COM1_PORT + UART_REGS) {
        pthread_mutex_lock(&vm->lock);
        for (unsigned i = 0; i < size; i++)
            v |= (uint32_t)uart_read(&vm->uart, (port + i - UART_COM1_PORT) % UART_REGS)
                 << (8 * i);
        pthread_mutex_unlock(&vm->lock);
        return v;
    }
    /* Nothing there: the bus floats high, as on a PC. */
    return size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
}

void vm_pio_out(struct vcpu *c, uint16_t port, unsigned size, uint32_t value)
{
    struct vm *vm = c->vm;

    if (port >= UART_COM1_PORT && port < UART_COM1_PORT + UART_REGS) {
        pthread_mutex_lock(&vm->lock);
        for (unsigned i = 0; i < size; i++)
            uart_write(&vm->uart, (port + i - UART_COM1_PORT) % UART_REGS,
                       (uint8_t)(value >> (8 * i)));
        pthread_mutex_unlock(&vm->lock);
    } else if (port == VM_PORT_POWEROFF) {
        vm_stop(vm, VM_POWEROFF);
    } else if (port == VM_PORT_KBD_CMD && (value & 0xff) == 0xfe) {
        vm_stop(vm, VM_RESET);
    }
    /* Other ports: nothing there (Linux pokes 0x80 for delays, probes
     * the CMOS, PCI configuration and more). */
}

static struct vm_disk *disk_at(struct vm *vm, uint64_t gpa, uint64_t *off)
{
    uint64_t i;

    if (gpa < VIRTIO_MMIO_BASE)
        return NULL;
    i = (gpa - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_STRIDE;
    if (i >= vm->ndisks)
        return NULL;
    *off = (gpa - VIRTIO_MMIO_BASE) % VIRTIO_MMIO_STRIDE;
    return &vm->disks[i];
}

bool vm_mmio_read(struct vcpu *c, uint64_t gpa, unsigned size, uint64_t *value)
{
    struct vm *vm = c->vm;
    struct vm_disk *d;
    uint64_t off;

    d = disk_at(vm, gpa, &off);
    if (!d) {
        *value = 0;
        return false;
    }
    pthread_mutex_lock(&vm->lock);
    *value = vmmio_read(&d->mmio, off, size);
    pthread_mutex_unlock(&vm->lock);
    return true;
}

bool vm_mmio_write(struct vcpu *c, uint64_t gpa, unsigned size, uint64_t value)
{
    struct vm *vm = c->vm;
    struct vm_disk *d;
    uint64_t off;

    d = disk_at(vm, gpa, &off);
    if (!d)
        return false;
    pthread_mutex_lock(&vm->lock);
    vmmio_write(&d->mmio, off, size, value);
    pthread_mutex_unlock(&vm->lock);
    return true;
}

/* ---- vCPUs ---- */

/* Parks c while a pause is asked for; false when the machine stopped. */
static bool park(struct vcpu *c)
{
    struct vm *vm = c->vm;
    bool parked = false;

    pthread_mutex_lock(&vm->run_lock);
    while (atomic_load(&vm->pause_req) && atomic_load(&vm->state) == VM_RUNNING) {
        if (!parked) {
            parked = true;
            vm->paused++;
            pthread_cond_broadcast(&vm->run_cond);
        }
        pthread_cond_wait(&vm->run_cond, &vm->run_lock);
    }
    if (parked)
        vm->paused--;
    pthread_mutex_unlock(&vm->run_lock);
    return atomic_load(&vm->state) == VM_RUNNING;
}

/* Every vCPU halted with interrupts off: nothing can wake them. */
static void halted(struct vcpu *c)
{
    struct vm *vm = c->vm;
    bool all = true;

    pthread_mutex_lock(&vm->run_lock);
    c->halted = true;
    for (unsigned i = 0; i < vm->ncpus; i++)
        all &= vm->cpus[i].halted;
    pthread_mutex_unlock(&vm->run_lock);
    if (all)
        vm_stop(vm, VM_POWEROFF);
}

static void *vcpu_main(void *arg)
{
    struct vcpu *c = arg;
    struct vm *vm = c->vm;

    while (park(c)) {
        struct vmm_cpu_state s;
        enum vcpu_exit e;

        if (vm->accel->completes_on_vcpu)
            vm_run_completions(vm, c);
        e = vm->accel->run(c);
        if (e == VCPU_EXIT_FAULT) {
            vm_stop(vm, VM_FAULT);
            break;
        }
        if (e != VCPU_EXIT_HALT)
            continue;
        if (vm->accel->get_state(c, &s) < 0) {
            vm_fault(vm, "vCPU %u: cannot read its state after HLT", c->index);
            break;
        }
        if (!(s.rflags & X86_EFLAGS_IF)) {
            halted(c);
            break;
        }
        /* Nothing could ever wake it: a flat guest's machine has no
         * interrupt controller (and the emulator delivers no interrupts). */
        if (!vm->accel->interrupts || !vm->irqchip) {
            vm_fault(vm, "vCPU %u halted with interrupts enabled, waiting for an "
                     "interrupt that cannot come: this machine has no interrupt "
                     "controller (%s), so its guest must poll",
                     c->index, vm->irqchip ? "the emu accelerator delivers none"
                                           : "a flat guest");
            break;
        }
    }
    pthread_mutex_lock(&vm->run_lock);
    vm->running--;
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->run_lock);
    vm_wake_loop(vm);
    return NULL;
}

int vm_start(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vcpu *c = &vm->cpus[i];
        int err;

        pthread_mutex_lock(&vm->run_lock);
        vm->running++;
        pthread_mutex_unlock(&vm->run_lock);
        err = pthread_create(&c->thread, NULL, vcpu_main, c);
        if (err) {
            pthread_mutex_lock(&vm->run_lock);
            vm->running--;
            pthread_mutex_unlock(&vm->run_lock);
            fprintf(stderr, "vdisk-vmm: cannot start vCPU %u: %s\n", i, strerror(err));
            vm_stop(vm, VM_QUIT);
            return -err;
        }
        c->started = true;
    }
    return 0;
}

void vm_join(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        if (vm->cpus[i].started) {
            pthread_join(vm->cpus[i].thread, NULL);
            vm->cpus[i].started = false;
        }
    }
}

void vm_pause(struct vm *vm)
{
    pthread_mutex_lock(&vm->run_lock);
    atomic_store(&vm->pause_req, true);
    pthread_mutex_unlock(&vm->run_lock);
    /* No kick is lost (each accelerator's run looks at pause_req after it
     * clears its kick), so one each is enough. */
    kick_all(vm);
    pthread_mutex_lock(&vm->run_lock);
    /* Threads that ended (a halt, a fault) count as parked. */
    while (vm->paused < vm->running)
        pthread_cond_wait(&vm->run_cond, &vm->run_lock);
    pthread_mutex_unlock(&vm->run_lock);
}

bool vm_all_parked(struct vm *vm)
{
    bool all;

    pthread_mutex_lock(&vm->run_lock);
    all = atomic_load(&vm->pause_req) && vm->paused >= vm->running;
    pthread_mutex_unlock(&vm->run_lock);
    return all;
}

void vm_resume(struct vm *vm)
{
    pthread_mutex_lock(&vm->run_lock);
    atomic_store(&vm->pause_req, false);
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->run_lock);
}

/* ---- set-up ---- */

int vm_init(struct vm *vm, const struct vmm_accel *accel, uint64_t mem, unsigned ncpus,
            bool irqchip)
{
    int err;

    memset(vm, 0, sizeof(*vm));
    vm->wake_fd = -1;
    vm->console_fd = STDOUT_FILENO;
    vm->accel = accel;
    vm->irqchip = irqchip;
    vm->ncpus = ncpus;
    vm->done_tail = &vm->done_head;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->done_lock, NULL);
    pthread_mutex_init(&vm->run_lock, NULL);
    pthread_cond_init(&vm->run_cond, NULL);
    atomic_init(&vm->state, VM_RUNNING);
    atomic_init(&vm->done_pending, false);
    atomic_init(&vm->pause_req, false);
    for (unsigned i = 0; i < VM_MAX_CPUS; i++) {
        vm->cpus[i].vm = vm;
        vm->cpus[i].index = i;
    }

    vm->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (vm->wake_fd < 0) {
        err = -errno;
        fprintf(stderr, "vdisk-vmm: eventfd: %s\n", strerror(errno));
        return err;
    }
    /* Guest RAM: anonymous, zero-filled, committed only as it is touched. */
    vm->mem.size = mem;
    vm->mem.host = mmap(NULL, mem, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (vm->mem.host == MAP_FAILED) {
        err = -errno;
        vm->mem.host = NULL;
        fprintf(stderr, "vdisk-vmm: cannot map %llu MiB of guest memory: %s\n",
                (unsigned long long)(mem >> 20), strerror(errno));
        return err;
    }

    vm->uart.tx = console_tx;
    vm->uart.tx_opaque = vm;
    vm->uart.irq = uart_irq;
    vm->uart.irq_opaque = vm;

    err = accel->init(vm);
    if (err < 0)
        return err;
    for (unsigned i = 0; i < ncpus; i++) {
        err = accel->vcpu_init(&vm->cpus[i]);
        if (err < 0)
            return err;
    }
    return 0;
}

void vm_destroy(struct vm *vm)
{
    struct vblk_req *r, *next;

    if (vm->accel) {
        for (unsigned i = 0; i < vm->ncpus; i++)
            if (vm->cpus[i].accel)
                vm->accel->vcpu_destroy(&vm->cpus[i]);
        if (vm->accel_data)
            vm->accel->destroy(vm);
    }
    for (r = vm->done_head; r; r = next) {
        next = r->done_next;
        free(r);
    }
    if (vm->mem.host)
        munmap(vm->mem.host, vm->mem.size);
    if (vm->wake_fd >= 0)
        close(vm->wake_fd);
    pthread_mutex_destroy(&vm->lock);
    pthread_mutex_destroy(&vm->done_lock);
    pthread_mutex_destroy(&vm->run_lock);
    pthread_cond_destroy(&vm->run_cond);
}

static void dump_seg(const char *name, const struct vmm_segment *s)
{
    fprintf(stderr, "  %-3s %04x base %016llx limit %08x type %x%s%s\n", name, s->selector,
            (unsigned long long)s->base, s->limit, s->type, s->db ? " 32-bit" : "",
            s->l ? " 64-bit" : "");
}

void vm_dump_cpu(struct vcpu *c)
{
    static const char *names[16] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                      "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15" };
    struct vmm_cpu_state s;

    if (c->vm->accel->get_state(c, &s) < 0) {
        fprintf(stderr, "vdisk-vmm: vCPU %u: its registers cannot be read\n", c->index);
        return;
    }
    fprintf(stderr, "vdisk-vmm: vCPU %u registers:\n", c->index);
    for (unsigned i = 0; i < 16; i += 4)
        fprintf(stderr, "  %-3s %016llx  %-3s %016llx  %-3s %016llx  %-3s %016llx\n",
                names[i], (unsigned long long)s.gpr[i], names[i + 1],
                (unsigned long long)s.gpr[i + 1], names[i + 2], (unsigned long long)s.gpr[i + 2],
                names[i + 3], (unsigned long long)s.gpr[i + 3]);
    fprintf(stderr, "  rip %016llx  rflags %08llx\n", (unsigned long long)s.rip,
            (unsigned long long)s.rflags);
    fprintf(stderr, "  cr0 %08llx  cr2 %016llx  cr3 %016llx  cr4 %08llx  efer %llx\n",
            (unsigned long long)s.cr0, (unsigned long long)s.cr2, (unsigned long long)s.cr3,
            (unsigned long long)s.cr4, (unsigned long long)s.efer);
    dump_seg("cs", &s.cs);
    dump_seg("ss", &s.ss);
    dump_seg("ds", &s.ds);
    fprintf(stderr, "  gdt %016llx/%04x  idt %016llx/%04x\n", (unsigned long long)s.gdt.base,
            s.gdt.limit, (unsigned long long)s.idt.base, s.idt.limit);
}
