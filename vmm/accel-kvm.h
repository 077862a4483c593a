/*
 * accel-kvm.h - what the two halves of the KVM accelerator share:
 * accel-kvm.c (the VM, the vCPUs, running them) and accel-kvm-state.c
 * (their checkpoints).  Private to them; the machine sees vmm_accel_kvm
 * (vm.h) only.
 */
#ifndef VDISK_VMM_ACCEL_KVM_H
#define VDISK_VMM_ACCEL_KVM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include "vm.h"

/* The VM (vm->accel_data).  msrs[] is filled when vCPU 0 is created
 * (reading an MSR needs a vCPU) and is the same for every vCPU. */
#define KV_MAX_MSRS 64u
struct kv_vm {
    int kvm_fd, vm_fd;
    size_t run_size;
    struct kvm_cpuid2 *cpuid;   /* KVM_GET_SUPPORTED_CPUID, unchanged */
    bool tsc_deadline;          /* the LAPIC has the TSC-deadline timer */
    size_t xsave_size;          /* 0: no XSAVE, the FPU is saved as kvm_fpu */
    bool xsave2;                /* KVM_GET_XSAVE2 (KVM_CAP_XSAVE2) */
    bool xcrs;
    uint32_t msrs[KV_MAX_MSRS]; /* the MSRs a checkpoint holds */
    unsigned nmsrs;
    bool msrs_probed;
};

/* A vCPU (vcpu->accel). */
struct kv_cpu {
    int fd;
    struct kvm_run *run;        /* mmap'ed, shared with KVM */
    pthread_mutex_t lock;       /* in_run and thread, against kick */
    bool in_run;                /* thread is inside run(): a signal is safe */
    pthread_t thread;
    bool sig_ready;             /* the kick signal unblocked on its thread */
    atomic_bool waiting_sipi;   /* last seen waiting for its start-up IPI */
};

static inline struct kv_vm *kv_vm_of(struct vm *vm)
{
    return vm->accel_data;
}

static inline struct kv_cpu *kv_cpu_of(struct vcpu *c)
{
    return c->accel;
}

/* A failed ioctl (errno): prints the message, returns -errno.  index is
 * the vCPU's, or -1 for the VM's. */
int kv_fail(const char *what, int index);

/* An array of n MSR entries (nmsrs = n), for KVM_GET/SET_MSRS; free(). */
struct kvm_msrs *kv_msrs_alloc(unsigned n);

/* Checkpoints (accel-kvm-state.c), as struct vmm_accel has them. */
int kv_save_cpu(struct vcpu *c, void **json_out);
int kv_restore_cpu(struct vcpu *c, const void *json);
int kv_save_vm(struct vm *vm, void **json_out);
int kv_restore_vm(struct vm *vm, const void *json);

#endif
