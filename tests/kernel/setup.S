/*
 * setup.S - the real-mode part of the fake kernel's bzImage: the boot
 * sector and the setup header that a boot loader reads (Linux's
 * Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").
 *
 * vdisk-vmm runs none of this code: it reads the header, copies it into
 * boot_params and enters the protected-mode part (head.S) at its 64-bit
 * entry point.  The header is what makes the file a bzImage that the
 * loader takes: "HdrS", protocol 2.12 (the first with xloadflags), loaded
 * high, XLF_KERNEL_64.  kernel.ld links this at 0, so that a label's
 * address is its offset in the file, and puts it first in the image;
 * SETUP_SECTS, SYSSIZE and INIT_SIZE come from there too.
 *
 * The code here is only for a PC that boots the file from a BIOS or as a
 * 16-bit setup entry: it stops the CPU.
 */
#define BOOT_FLAG       0xaa55
#define PROTOCOL        0x020c          /* 2.12 */
#define LOADED_HIGH     0x01            /* loadflags: protected mode at 0x100000 */
#define XLF_KERNEL_64   0x0001          /* xloadflags: a 64-bit entry at +0x200 */
#define KERNEL_ADDR     0x100000
#define KERNEL_ALIGN    0x200000        /* Linux's own, 2 MiB */
#define CMDLINE_SIZE    2047            /* Linux's COMMAND_LINE_SIZE less the NUL */
#define INITRD_MAX      0x7fffffff      /* the initrd may go anywhere below 2 GiB */

    .code16
    .section .setup, "ax"
    .globl boot_sector
boot_sector:
    cli
1:  hlt
    jmp 1b

    .org 0x1f1
setup_sects:        .byte SETUP_SECTS   /* setup sectors after the boot sector */
root_flags:         .word 0
syssize:            .long SYSSIZE       /* the protected-mode part, 16-byte units */
ram_size:           .word 0
vid_mode:           .word 0xffff        /* "normal" */
root_dev:           .word 0
boot_flag:          .word BOOT_FLAG

    /* 0x200: the setup entry, a short jump over the header; its offset
     * byte also tells the loader where the header ends (0x202 + it). */
    .byte 0xeb, setup_entry - header_magic
header_magic:       .ascii "HdrS"
version:            .word PROTOCOL
realmode_swtch:     .long 0
start_sys_seg:      .word 0x1000        /* obsolete */
kernel_version:     .word version_string - 0x200
type_of_loader:     .byte 0             /* the loader's to fill in */
loadflags:          .byte LOADED_HIGH
setup_move_size:    .word 0x8000
code32_start:       .long KERNEL_ADDR
ramdisk_image:      .long 0
ramdisk_size:       .long 0
bootsect_kludge:    .long 0
heap_end_ptr:       .word 0
ext_loader_ver:     .byte 0
ext_loader_type:    .byte 0
cmd_line_ptr:       .long 0
initrd_addr_max:    .long INITRD_MAX
kernel_alignment:   .long KERNEL_ALIGN
relocatable_kernel: .byte 0             /* linked at KERNEL_ADDR, runs there only */
min_alignment:      .byte 21            /* log2 of KERNEL_ALIGN */
xloadflags:         .word XLF_KERNEL_64
cmdline_size:       .long CMDLINE_SIZE
hardware_subarch:   .long 0
hardware_subarch_data: .quad 0
payload_offset:     .long 0             /* not compressed: no payload */
payload_length:     .long 0
setup_data:         .quad 0
pref_address:       .quad KERNEL_ADDR
init_size:          .long INIT_SIZE     /* from KERNEL_ADDR to the end of .bss */
handover_offset:    .long 0             /* no EFI handover */
    .globl setup_header_end
setup_header_end:

setup_entry:
    cli
1:  hlt
    jmp 1b

version_string:
    .asciz "fake-kernel (vdisk tests/kernel)"

    .section .note.GNU-stack, "", @progbits
