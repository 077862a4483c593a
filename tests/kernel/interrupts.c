/*
 * interrupts.c - the fake kernel's interrupts, as Linux's would come on
 * this machine: KVM's IOAPIC routes the UART's IRQ 4 to this CPU's LAPIC
 * (the 8259s masked).  First one THR-empty interrupt, with a LAPIC timer
 * as a watchdog so that a lost interrupt fails rather than hangs (disk.c
 * uses it too); then the wait for a key, halted with interrupts on, which
 * is where a test checkpoints the VM.
 */
#include "kernel.h"

/* The UART's interrupt registers. */
#define UART_IER            1
#define UART_IIR            2
#define UART_MCR            4
#define UART_MSR            6
#define IER_RECEIVED        0x01
#define IER_THR_EMPTY       0x02
#define IIR_NONE_PENDING    0x01
#define IIR_ID_MASK         0x0e
#define IIR_THR_EMPTY       0x02
#define IIR_RECEIVED        0x04
#define IIR_TIMEOUT         0x0c        /* received data left in the FIFO */
#define MCR_DTR_RTS_OUT2    0x0b        /* OUT2 gates the IRQ line on a PC */

/* Interrupts: the LAPIC, the IOAPIC and the 8259s. */
#define LAPIC_SVR           0x0f0
#define LAPIC_LVT_TIMER     0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_DIVIDE  0x3e0
#define SVR_ENABLE          0x100
#define TIMER_DIVIDE_128    0x0a
/* KVM's LAPIC timer counts at 1 GHz: about 10 s at 1/128. */
#define WATCHDOG_COUNT      78125000u
#define PIC1_DATA           0x21
#define PIC2_DATA           0xa1
#define UART_VECTOR         0x24
#define WATCHDOG_VECTOR     0x30
#define SPURIOUS_VECTOR     0xff

/* An IDT entry: a 64-bit interrupt gate. */
struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type;                       /* 0x8e: present, DPL 0, interrupt gate */
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate");
#define GATE_INTERRUPT      0x8e

static struct idt_gate idt[256] __attribute__((aligned(16)));
static volatile bool thr_empty_seen, watchdog_went_off;
static volatile int key = -1;

__attribute__((interrupt)) static void uart_interrupt(struct interrupt_frame *frame)
{
    (void)frame;
    /* Every cause the UART has pending (reading IIR clears THR-empty), a
     * few at most: a UART that never says "none" must not keep us here. */
    for (int cause = 0; cause < 4; cause++) {
        uint8_t iir = inb(COM1 + UART_IIR);

        if (iir & IIR_NONE_PENDING)
            break;
        switch (iir & IIR_ID_MASK) {
        case IIR_RECEIVED:
        case IIR_TIMEOUT: {
            uint8_t byte = inb(COM1 + UART_DATA);

            if (key < 0)
                key = byte;
            break;
        }
        case IIR_THR_EMPTY:
            thr_empty_seen = true;
            outb(COM1 + UART_IER, inb(COM1 + UART_IER) & ~IER_THR_EMPTY);
            break;
        default:                        /* line or modem status */
            inb(COM1 + UART_LSR);
            inb(COM1 + UART_MSR);
            break;
        }
    }
    lapic_write(LAPIC_EOI, 0);
}

__attribute__((interrupt)) static void watchdog_interrupt(struct interrupt_frame *frame)
{
    (void)frame;
    watchdog_went_off = true;
    lapic_write(LAPIC_EOI, 0);
}

/* Spurious interrupts take no EOI. */
__attribute__((interrupt)) static void spurious_interrupt(struct interrupt_frame *frame)
{
    (void)frame;
}

void set_gate(unsigned vector, void (*handler)(struct interrupt_frame *))
{
    uint64_t addr = (uintptr_t)handler;
    uint16_t cs;

    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    idt[vector] = (struct idt_gate){
        .offset_low = (uint16_t)addr,
        .selector = cs,
        .type = GATE_INTERRUPT,
        .offset_mid = (uint16_t)(addr >> 16),
        .offset_high = (uint32_t)(addr >> 32),
    };
}

void setup_interrupts(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = { sizeof(idt) - 1, (uintptr_t)idt };
    unsigned our_id = lapic_id();

    set_gate(UART_VECTOR, uart_interrupt);
    set_gate(WATCHDOG_VECTOR, watchdog_interrupt);
    set_gate(SPURIOUS_VECTOR, spurious_interrupt);
    __asm__ volatile("lidt %0" : : "m"(idtr));
    /* The 8259s reach LINT0 in virtual wire mode: keep them quiet. */
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    lapic_write(LAPIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR);
    /* UART pin: fixed delivery, physical destination us, edge, active high. */
    ioapic_write(IOAPIC_REDIRECT(UART_IRQ) + 1, our_id << 24);
    ioapic_write(IOAPIC_REDIRECT(UART_IRQ), UART_VECTOR);
    outb(COM1 + UART_MCR, MCR_DTR_RTS_OUT2);
}

void wait_for_interrupt(void)
{
    /* STI's one-instruction delay: an interrupt already pending wakes the
     * HLT rather than slipping in before it. */
    __asm__ volatile("sti; hlt; cli" : : : "memory");
}

void watchdog_start(void)
{
    watchdog_went_off = false;
    lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_128);
    lapic_write(LAPIC_LVT_TIMER, WATCHDOG_VECTOR);      /* one-shot */
    lapic_write(LAPIC_TIMER_INITIAL, WATCHDOG_COUNT);
}

void watchdog_stop(void)
{
    lapic_write(LAPIC_TIMER_INITIAL, 0);
}

bool watchdog_fired(void)
{
    return watchdog_went_off;
}

void check_uart_interrupt(void)
{
    watchdog_start();
    /* The transmitter is empty: enabling its interrupt raises it. */
    outb(COM1 + UART_IER, IER_THR_EMPTY);
    while (!thr_empty_seen && !watchdog_fired())
        wait_for_interrupt();
    watchdog_stop();
    check(thr_empty_seen, "no interrupt from the UART (IOAPIC pin 4) in 10 seconds");
    put("fake-kernel: interrupt from the UART through IOAPIC pin 4, vector ");
    put_hex(UART_VECTOR);
    put("\n");
}

void wait_for_key(void)
{
    put("fake-kernel: waiting for a key\n");
    outb(COM1 + UART_IER, IER_RECEIVED);
    while (key < 0)
        wait_for_interrupt();
    outb(COM1 + UART_IER, 0);
    put("fake-kernel: got key ");
    if (key >= 0x20 && key < 0x7f) {
        put_char('\'');
        put_char((char)key);
        put_char('\'');
    } else {
        put_hex((unsigned)key);
    }
    put(" by a received-data interrupt\n");
}

