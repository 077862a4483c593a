/*
 * fake-accel.h - a stand-in accelerator for the unit tests of vmm/: it
 * runs nothing, and its vCPU state is FAKE_NREGS numbers that it saves and
 * restores in JSON as the real accelerators spell theirs (vmm/state.h).
 * Enough to build machines (vm_init), load guests into them and checkpoint
 * them without KVM or unicorn.
 */
#ifndef VD_TEST_FAKE_ACCEL_H
#define VD_TEST_FAKE_ACCEL_H

#include <stdbool.h>
#include <stdint.h>

#include "vm.h"

#define FAKE_NREGS 4

struct fake_cpu {
    uint64_t regs[FAKE_NREGS];
    struct vmm_cpu_state entry;     /* what set_state was given */
};

extern const struct vmm_accel fake_accel;

/* A machine of mem bytes and one vCPU on the stand-in, with ndisks disks
 * whose backend fails the test if it is ever given a request; asserts. */
struct vm *fake_vm_new(uint64_t mem, unsigned ndisks, bool irqchip);
void fake_vm_free(struct vm *vm);

#endif
