/*
 * start.S - the test guest's entry.  vdisk-vmm enters a flat guest at its
 * load address in 32-bit protected mode: flat 4 GiB code and data
 * segments, paging off, interrupts off, ESP at the top of RAM below 4 GiB.
 * main() runs on that stack; when it returns the guest powers off (a write
 * to I/O port 0x604), and if that did nothing, halts with interrupts off,
 * which the VMM also takes as power-off.
 */
    .code32
    .section .text.start, "ax"
    .globl _start
_start:
    cli
    cld
    call main
    movw $0x604, %dx
    movw $0x2000, %ax
    outw %ax, %dx
1:  hlt
    jmp 1b

    .section .note.GNU-stack, "", @progbits
