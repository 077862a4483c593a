/*
 * mptable.h - the MP table (Intel MultiProcessor Specification 1.4) that
 * tells a kernel without ACPI where the vCPUs and the IOAPIC are.
 */
#ifndef VDISK_VMM_MPTABLE_H
#define VDISK_VMM_MPTABLE_H

#include "vm.h"

/* Where it goes: the BIOS area [0xf0000, 0x100000), which Linux scans for
 * the floating pointer and which the e820 map must mark reserved. */
#define MPTABLE_START   0xf0000u
#define MPTABLE_END     0x100000u

/* Writes the floating pointer and the configuration table there for
 * vm->ncpus vCPUs (APIC IDs 0..ncpus-1, vCPU 0 the bootstrap processor),
 * KVM's IOAPIC (ID ncpus, at 0xfec00000) and the ISA interrupts 0-15,
 * those of vm->ndisks disks level-triggered.  0, or -EINVAL (with a
 * message) when RAM does not reach there. */
int vmm_write_mptable(struct vm *vm);

#endif
