/*
 * loader.h - putting a guest into RAM and choosing where its first vCPU
 * starts.
 *
 * A flat guest (--guest FILE --load ADDR) is copied to ADDR and entered
 * there in 32-bit protected mode: flat 4 GiB code (selector 0x10) and data
 * (0x18) segments from a GDT at VM_GDT_ADDR, paging off, interrupts off,
 * ESP at the top of RAM below 4 GiB.  Both accelerators run it.
 *
 * A Linux kernel (--kernel bzImage) is loaded by the x86 boot protocol
 * (Documentation/arch/x86/boot.rst): the protected-mode kernel at 1 MiB,
 * boot_params ("the zero page") with the e820 map, the command line and
 * the initrd, and entered at its 64-bit entry point with identity-mapped
 * page tables (KVM only: the emulator delivers no interrupts).
 */
#ifndef VDISK_VMM_LOADER_H
#define VDISK_VMM_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "vm.h"

/* The GDT the VMM gives the guests it enters: null, null, code at 0x10
 * (64-bit when long_mode, else 32-bit), data at 0x18, all flat. */
void vmm_write_gdt(struct vm *vm, bool long_mode);
/* A flat segment as that GDT describes it, for the entry state. */
struct vmm_segment vmm_flat_segment(uint16_t selector, bool code, bool long_mode);

/* Loads a flat binary guest at addr and fills *s with its entry state.
 * 0 or a negative errno, with a message printed. */
int vmm_load_flat(struct vm *vm, const char *path, uint64_t addr, struct vmm_cpu_state *s);

/* Loads a bzImage kernel (and initrd, may be NULL) with cmdline, and fills
 * *s for its 64-bit entry.  The virtio-mmio devices are added to the
 * command line here ("virtio_mmio.device=4K@0xd0000000:5" for each disk),
 * so vm->ndisks must be final.  Writes the MP table for vm->ncpus vCPUs.
 * 0 or a negative errno, with a message printed. */
int vmm_load_linux(struct vm *vm, const char *kernel, const char *initrd, const char *cmdline,
                   struct vmm_cpu_state *s);

#endif
