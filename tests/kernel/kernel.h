/*
 * kernel.h - what the fake kernel's files share (tests/kernel/): port and
 * physical memory access, the console, check(), and the steps that live
 * in files of their own (mptable.c, interrupts.c).  kernel.c says what the
 * fake kernel is for.
 */
#ifndef FAKE_KERNEL_H
#define FAKE_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The console: an 8250/16550A at COM1, on IRQ 4. */
#define COM1                0x3f8
#define UART_DATA           0           /* RBR (read), THR (write) */
#define UART_LSR            5
#define LSR_THR_EMPTY       0x20
#define UART_IRQ            4

/* The machine (docs/VMM.md, "The machine"). */
#define LAPIC_BASE          0xfee00000u
#define LAPIC_ID            0x020
#define IOAPIC_BASE         0xfec00000u
#define VIRTIO_MMIO_IRQ     5u          /* disk i's IRQ is 5 + i */

/* What interrupt handlers call saves what it uses (clang insists on it;
 * inlined, it costs nothing). */
#define CALLED_FROM_INTERRUPTS __attribute__((no_caller_saved_registers))

CALLED_FROM_INTERRUPTS static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

CALLED_FROM_INTERRUPTS static inline uint8_t inb(uint16_t port)
{
    uint8_t v;

    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t mmio_read32(uint64_t addr)
{
    return *(volatile uint32_t *)(uintptr_t)addr;
}

CALLED_FROM_INTERRUPTS static inline void mmio_write32(uint64_t addr, uint32_t v)
{
    *(volatile uint32_t *)(uintptr_t)addr = v;
}

/* The loader identity-maps the first 4 GiB: a physical address is a pointer. */
static inline void *phys(uint64_t addr)
{
    return (void *)(uintptr_t)addr;
}

/* This CPU's APIC id. */
static inline unsigned lapic_id(void)
{
    return mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
}

/* The console, polled (kernel.c).  put_hex prints "0x" and no leading zeros. */
void put_char(char c);
void put(const char *s);
void put_dec(uint64_t v);
void put_hex(uint64_t v);

/* When ok is false: prints "fake-kernel: FAILED what" and halts with
 * interrupts off (vdisk-vmm powers off).  The first failure ends the run:
 * a later step would only fail for the same reason, or hang. */
void check(bool ok, const char *what);

bool starts_with(const char *s, const char *prefix);

/* Whether [start, start + len) lies in one RAM entry of boot_params' e820 map. */
bool in_ram(const uint8_t *boot_params, uint64_t start, uint64_t len);

/* mptable.c: the MP table describes the machine; disks is how many the
 * command line announced (their IRQs must be level-triggered). */
void check_mptable(const uint8_t *boot_params, unsigned disks);

/* interrupts.c: the IDT, the LAPIC and IOAPIC pin 4 set up for the UART;
 * then one THR-empty interrupt taken, then a key taken by a received-data
 * interrupt, the CPU halted with interrupts on until it comes. */
void setup_interrupts(void);
void check_uart_interrupt(void);
void wait_for_key(void);

#endif
