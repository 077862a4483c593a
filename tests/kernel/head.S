/*
 * head.S - the fake kernel's entry points, at the start of its
 * protected-mode part (loaded at 0x100000).
 *
 * boot.rst puts the 32-bit entry at the start and the 64-bit one 0x200
 * after it (what XLF_KERNEL_64 in setup.S announces).  vdisk-vmm uses the
 * 64-bit one: long mode, the first 4 GiB identity-mapped, interrupts off,
 * RSI the address of boot_params; nothing promised about the stack or the
 * .bss, so both are set up here before kernel_main runs, which gets
 * boot_params and the flags it was entered with.  When it returns
 * the CPU halts with interrupts off, which vdisk-vmm takes as power-off
 * (as Linux without ACPI powers off).
 */
    .section .head, "ax"

    /* A 32-bit loader is not what this kernel is tested with: stop. */
    .code32
    .globl startup_32
startup_32:
    cli
1:  hlt
    jmp 1b

    .code64
    .org 0x200
    .globl startup_64
startup_64:
    lea boot_stack_top(%rip), %rsp
    pushfq                              /* the flags as the loader left them */
    pop %r12
    cli
    cld
    mov %rsi, %rbx                      /* boot_params, kept across the clearing */
    lea __bss_start(%rip), %rdi
    lea _end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    mov %r12, %rsi
    call kernel_main
halt:
    cli
    hlt
    jmp halt

    .section .bss
    .balign 16
boot_stack:
    .space 16384
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
