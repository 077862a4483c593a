/*
 * vm.h - the machine vdisk-vmm builds: guest RAM, the devices, the vCPU
 * threads, and the accelerator that runs guest code (KVM, or unicorn's
 * emulator where /dev/kvm is absent).
 *
 * The machine's layout is fixed and documented (docs/VMM.md), so that
 * guests can rely on it:
 *   RAM             guest physical [0, mem), mem at most VM_MAX_MEM
 *   COM1            I/O ports 0x3f8-0x3ff, IRQ 4 (an 8250/16550A)
 *   power-off       any write to I/O port 0x604 (VM_PORT_POWEROFF)
 *   reset           0xfe written to I/O port 0x64 (the keyboard
 *                   controller's reset, which Linux tries on reboot)
 *   virtio-blk i    virtio-mmio at 0xd0000000 + 0x1000 * i, IRQ 5 + i
 *   GDT             at VM_GDT_ADDR for guests the VMM enters itself
 * HLT with interrupts disabled on every vCPU powers the machine off too.
 *
 * Threads and locks.  Each vCPU runs on a thread of its own; the main
 * thread runs the event loop (NBD sockets, the console's input, the
 * control socket).  vm.lock, the device lock, is held around every call
 * into a device model (port and MMIO accesses from the vCPUs, completions
 * and console input from the loop).  The NBD backend's completion
 * callbacks run with libnbd's handle lock held, so they take no device
 * lock: they queue the completion (vm_complete), and the queue is drained
 * under the device lock on the loop's thread, or, when the accelerator
 * says so (the emulator, whose translated code must be invalidated where
 * a read landed), on the vCPU's own thread.  Lock order: vm.lock, then a
 * libnbd handle's lock, then vm.done_lock.
 */
#ifndef VDISK_VMM_VM_H
#define VDISK_VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "blk.h"
#include "mmio.h"
#include "serial.h"
#include "virtq.h"

#define VM_MAX_DISKS      8u
#define VM_MAX_CPUS       8u
#define VM_MAX_MEM        (3ull << 30)   /* below the MMIO window */
#define VM_MIN_MEM        (2ull << 20)
#define VM_PORT_POWEROFF  0x604u
#define VM_PORT_KBD_CMD   0x64u
#define VM_GDT_ADDR       0x500u
#define VM_SEL_CODE       0x10u          /* GDT entry 2 */
#define VM_SEL_DATA       0x18u          /* GDT entry 3 */

/* Why the machine stopped (vm.state, once it is not VM_RUNNING). */
enum vm_state {
    VM_RUNNING = 0,
    VM_POWEROFF,        /* port 0x604, or every vCPU halted with IF clear */
    VM_RESET,           /* the guest asked for a reset */
    VM_QUIT,            /* asked to (control socket, signal) */
    VM_FAULT,           /* a triple fault, an unhandled exit, an emulator
                           error: vm.fault says which */
};

/* A segment register with its hidden part, as both accelerators load it. */
struct vmm_segment {
    uint64_t base;
    uint32_t limit;             /* bytes - 1, after granularity */
    uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl, unusable;
};

struct vmm_dtable {
    uint64_t base;
    uint16_t limit;
};

/* The architectural state the VMM sets when it enters a guest, and prints
 * when a guest dies.  gpr[] is in encoding order: rax rcx rdx rbx rsp rbp
 * rsi rdi r8..r15. */
struct vmm_cpu_state {
    uint64_t gpr[16];
    uint64_t rip, rflags;
    struct vmm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct vmm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, efer;
};

enum { R_AX, R_CX, R_DX, R_BX, R_SP, R_BP, R_SI, R_DI };

#define X86_EFLAGS_IF   (1u << 9)
#define X86_CR0_PE      (1u << 0)
#define X86_CR0_ET      (1u << 4)
#define X86_CR0_PG      (1u << 31)

struct vm;
struct vcpu;

/* What accel->run returns. */
enum vcpu_exit {
    VCPU_EXIT_AGAIN,    /* kicked, or an exit the loop should look at
                           (vm.state, a pause, completions): run again */
    VCPU_EXIT_HALT,     /* HLT: rflags tells whether interrupts are on */
    VCPU_EXIT_FAULT,    /* the guest cannot go on: vm_fault() was called */
};

/*
 * An accelerator.  Every call but kick and set_irq is made on the thread
 * that owns the object (the vCPU's, or the main thread for the VM).
 */
struct vmm_accel {
    const char *name;           /* "kvm", "emu" */
    /* Whether completions must reach the guest on the vCPU's thread
     * (vm_run_completions is called there before each run). */
    bool completes_on_vcpu;
    /* Whether a guest can have interrupts delivered (an interrupt
     * controller exists); the emulator delivers none. */
    bool interrupts;
    /* Sets the VM up: RAM mapped, an interrupt controller if vm->irqchip.
     * Returns 0 or a negative errno, the message given with vm_error. */
    int (*init)(struct vm *vm);
    void (*destroy)(struct vm *vm);
    int (*vcpu_init)(struct vcpu *c);
    void (*vcpu_destroy)(struct vcpu *c);
    int (*set_state)(struct vcpu *c, const struct vmm_cpu_state *s);
    int (*get_state)(struct vcpu *c, struct vmm_cpu_state *s);
    /* Runs guest code.  Port and MMIO accesses are dispatched on the way
     * (vm_pio, vm_mmio).  Returns when kicked, when vm.state changed,
     * on HLT, or on a fault. */
    enum vcpu_exit (*run)(struct vcpu *c);
    /* From any thread: makes run() return soon. */
    void (*kick)(struct vcpu *c);
    /* From any thread, under vm.lock: an interrupt line's level. */
    void (*set_irq)(struct vm *vm, unsigned line, bool level);
    /* The guest wrote to [gpa, gpa + len) behind the CPU's back (a disk
     * read); called on the vCPU's thread.  NULL when nothing is cached. */
    void (*invalidate)(struct vcpu *c, uint64_t gpa, uint64_t len);
    /* Checkpoints: the accelerator's own state of a vCPU, and of the VM
     * (an interrupt controller), as JSON objects (jansson, passed as void *
     * so that this header needs none).  Called while every vCPU is paused. */
    int (*save_cpu)(struct vcpu *c, void **json_out);
    int (*restore_cpu)(struct vcpu *c, const void *json);
    int (*save_vm)(struct vm *vm, void **json_out);
    int (*restore_vm)(struct vm *vm, const void *json);
};

extern const struct vmm_accel vmm_accel_emu;
extern const struct vmm_accel vmm_accel_kvm;

/* Whether /dev/kvm can be opened for use; *why says why not. */
bool vmm_kvm_usable(const char **why);

struct vcpu {
    struct vm *vm;
    unsigned index;
    pthread_t thread;
    bool started;
    void *accel;                /* the accelerator's */
    bool halted;                /* halted with IF clear: waits for nothing */
};

/* A disk of the machine: the virtio-blk model behind its transport. */
struct vm_disk {
    struct vblk blk;
    struct vmmio mmio;
    unsigned irq;
    struct vm *vm;
};

struct vm {
    const struct vmm_accel *accel;
    void *accel_data;
    struct vmm_mem mem;
    bool irqchip;               /* interrupts (a kernel guest under KVM) */
    unsigned ncpus;
    struct vcpu cpus[VM_MAX_CPUS];

    pthread_mutex_t lock;       /* the device lock */
    struct uart uart;
    unsigned ndisks;
    struct vm_disk disks[VM_MAX_DISKS];
    uint64_t console_bytes;     /* bytes the guest wrote to its console */
    int console_fd;             /* where they go (stdout) */

    /* Completions queued by the backends (vm_complete). */
    pthread_mutex_t done_lock;
    struct vblk_req *done_head, **done_tail;
    atomic_bool done_pending;

    /* The state, and the pause the loop asks of the vCPUs. */
    _Atomic int state;          /* enum vm_state */
    char fault[512];            /* why, for VM_FAULT */
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond;
    atomic_bool pause_req;
    unsigned paused;            /* vCPUs parked by pause_req */
    unsigned running;           /* vCPU threads not yet returned */
    int wake_fd;                /* eventfd: the loop has something to see */
};

/* Sets the machine up: RAM of mem bytes (a multiple of 4 KiB), ncpus
 * vCPUs, the accelerator, the console.  The disks come next (vm_add_disk),
 * then the guest (loader.h), then vm_start.  0 or a negative errno with a
 * message printed. */
int vm_init(struct vm *vm, const struct vmm_accel *accel, uint64_t mem, unsigned ncpus,
            bool irqchip);
void vm_destroy(struct vm *vm);

/* Adds virtio-blk device vm->ndisks: capacity in bytes, the backend that
 * serves its requests.  Returns the disk. */
struct vm_disk *vm_add_disk(struct vm *vm, uint64_t capacity, bool read_only,
                            const char *id, struct vblk_backend backend);

/* Starts the vCPU threads (state already set). */
int vm_start(struct vm *vm);
/* Waits for the vCPU threads to end (after vm_stop). */
void vm_join(struct vm *vm);

/* Stops the machine for reason (the first reason wins) and wakes the
 * loop and the vCPUs. */
void vm_stop(struct vm *vm, enum vm_state reason);
/* A fault: the message (printf-style) is kept in vm->fault. */
void vm_fault(struct vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parks every vCPU outside guest code and waits until they are; then
 * nothing runs guest code until vm_resume.  From the loop's thread. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Whether every vCPU thread is parked or gone (after vm_pause). */
bool vm_all_parked(struct vm *vm);

/* A guest's port access: in (size 1, 2 or 4 bytes) returns the value. */
uint32_t vm_pio_in(struct vcpu *c, uint16_t port, unsigned size);
void vm_pio_out(struct vcpu *c, uint16_t port, unsigned size, uint32_t value);
/* A guest's MMIO access at gpa.  Returns false when nothing is there. */
bool vm_mmio_read(struct vcpu *c, uint64_t gpa, unsigned size, uint64_t *value);
bool vm_mmio_write(struct vcpu *c, uint64_t gpa, unsigned size, uint64_t value);

/* A backend finished r (any thread, no lock needed): queued for the
 * device, and the right thread woken. */
void vm_complete(struct vm *vm, struct vblk_req *r, int result);
/* Delivers the queued completions to the devices (takes vm.lock).  c is
 * the vCPU calling, or NULL on the loop's thread. */
void vm_run_completions(struct vm *vm, struct vcpu *c);

/* Requests in flight on every disk (under vm.lock). */
unsigned vm_inflight(struct vm *vm);

/* Prints the state of vCPU c to stderr (after a fault). */
void vm_dump_cpu(struct vcpu *c);

/* Wakes the loop's poll (vm->wake_fd). */
void vm_wake_loop(struct vm *vm);

#endif
