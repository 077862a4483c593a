/*
 * kernel.h - what the fake kernel's files share (tests/kernel/): port and
 * physical memory access, the console, check(), the interrupt
 * controllers, and the steps that live in files of their own (mptable.c,
 * interrupts.c, disk.c).  kernel.c says what the fake kernel is for.
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
#define LAPIC_EOI           0x0b0
#define IOAPIC_BASE         0xfec00000u
#define IOAPIC_SELECT       0x00
#define IOAPIC_WINDOW       0x10
#define IOAPIC_REDIRECT(pin) (0x10 + 2 * (pin))  /* the low half; the high one follows */
#define ISA_IRQS            16u         /* the IOAPIC pins the MP table gives ISA IRQs */
#define VIRTIO_MMIO_BASE    0xd0000000u /* disk i at VIRTIO_MMIO_BASE + VIRTIO_MMIO_STRIDE i */
#define VIRTIO_MMIO_STRIDE  0x1000u
#define VIRTIO_MMIO_IRQ     5u          /* disk i's IRQ is 5 + i */

/* virtio-mmio registers (virtio 1.x, 4.2.2), offsets in a device's page. */
#define VIRTIO_MAGIC                0x000
#define VIRTIO_VERSION              0x004
#define VIRTIO_DEVICE_ID            0x008
#define VIRTIO_DEVICE_FEATURES      0x010
#define VIRTIO_DEVICE_FEATURES_SEL  0x014
#define VIRTIO_DRIVER_FEATURES      0x020
#define VIRTIO_DRIVER_FEATURES_SEL  0x024
#define VIRTIO_QUEUE_SEL            0x030
#define VIRTIO_QUEUE_NUM_MAX        0x034
#define VIRTIO_QUEUE_NUM            0x038
#define VIRTIO_QUEUE_READY          0x044
#define VIRTIO_QUEUE_NOTIFY         0x050
#define VIRTIO_INTERRUPT_STATUS     0x060
#define VIRTIO_INTERRUPT_ACK        0x064
#define VIRTIO_STATUS               0x070
#define VIRTIO_QUEUE_DESC_LOW       0x080
#define VIRTIO_QUEUE_DESC_HIGH      0x084
#define VIRTIO_QUEUE_DRIVER_LOW     0x090
#define VIRTIO_QUEUE_DRIVER_HIGH    0x094
#define VIRTIO_QUEUE_DEVICE_LOW     0x0a0
#define VIRTIO_QUEUE_DEVICE_HIGH    0x0a4
#define VIRTIO_CONFIG               0x100       /* virtio-blk: capacity, u64, sectors */
#define VIRTIO_MAGIC_VALUE          0x74726976u /* "virt" */
#define VIRTIO_ID_BLOCK             2

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

CALLED_FROM_INTERRUPTS static inline uint32_t mmio_read32(uint64_t addr)
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

CALLED_FROM_INTERRUPTS static inline void lapic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(LAPIC_BASE + reg, v);
}

/* The IOAPIC's registers go through a select and a window: call these with
 * interrupts off, or from a handler (the fake kernel runs with interrupts
 * off but for its STI; HLT). */
CALLED_FROM_INTERRUPTS static inline void ioapic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_SELECT, reg);
    mmio_write32(IOAPIC_BASE + IOAPIC_WINDOW, v);
}

static inline uint32_t ioapic_read(uint32_t reg)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_SELECT, reg);
    return mmio_read32(IOAPIC_BASE + IOAPIC_WINDOW);
}

/* The console, polled (kernel.c).  put_hex prints "0x" and no leading zeros. */
void put_char(char c);
void put(const char *s);
void put_dec(uint64_t v);
void put_hex(uint64_t v);
void put_hex64(uint64_t v);             /* sixteen digits, no "0x" (vmm.py's checksums) */

/* FNV-1a 64, as tests/integration/vmm.py fnv computes it. */
uint64_t fnv1a(const volatile uint8_t *p, uint64_t len);

/* When ok is false: prints "fake-kernel: FAILED what" and halts with
 * interrupts off (vdisk-vmm powers off).  The first failure ends the run:
 * a later step would only fail for the same reason, or hang. */
void check(bool ok, const char *what);

bool starts_with(const char *s, const char *prefix);

/* Whether [start, start + len) lies in one RAM entry of boot_params' e820 map. */
bool in_ram(const uint8_t *boot_params, uint64_t start, uint64_t len);

/* mptable.c: the MP table describes the machine; disks is how many the
 * command line announced (their IRQs must be level-triggered).  Fills
 * irq_flags[n] with the flags (polarity, trigger) of ISA IRQ n's entry. */
void check_mptable(const uint8_t *boot_params, unsigned disks, uint16_t irq_flags[ISA_IRQS]);

/* interrupts.c: the IDT, the LAPIC and IOAPIC pin 4 set up for the UART;
 * then one THR-empty interrupt taken, then a key taken by a received-data
 * interrupt, the CPU halted with interrupts on until it comes. */
struct interrupt_frame;                 /* what the CPU pushed: not read here */
void setup_interrupts(void);
void set_gate(unsigned vector, void (*handler)(struct interrupt_frame *));
void check_uart_interrupt(void);
void wait_for_key(void);

/* interrupts.c: waiting.  watchdog_start arms the LAPIC timer (about 10 s,
 * one-shot), watchdog_stop disarms it; watchdog_fired says it went off.
 * wait_for_interrupt halts with interrupts on until one has been taken
 * (call it with interrupts off, after looking at what it waits for). */
void watchdog_start(void);
void watchdog_stop(void);
bool watchdog_fired(void);
void wait_for_interrupt(void);

/* disk.c: disk 0 driven as a virtio 1.x driver would, its completions
 * taken by interrupt (IRQ 5 through the IOAPIC, with irq_flags from the
 * MP table); nothing without a disk. */
void check_disk_interrupts(unsigned disks, const uint16_t irq_flags[ISA_IRQS]);

#endif
