/*
 * serial.h - an 8250/16550A UART (COM1 at I/O port 0x3f8, IRQ 4), the
 * guest's console: bytes the guest writes go to a callback (stdout in the
 * VMM), bytes pushed in (stdin) wait in the receive FIFO.
 *
 * Enough of the chip for a polling guest (wait for LSR.THRE, write THR)
 * and for Linux's 8250 driver to find a 16550A: divisor latch, scratch
 * register, FIFO control and the IIR FIFO bits, loopback with the modem
 * lines looped as the chip does, and interrupts for received data and an
 * empty transmitter.  Transmission takes no time: the transmitter is
 * always empty again at once.
 */
#ifndef VDISK_VMM_SERIAL_H
#define VDISK_VMM_SERIAL_H

#include <stdbool.h>
#include <stdint.h>

#define UART_COM1_PORT  0x3f8u
#define UART_COM1_IRQ   4u
#define UART_REGS       8u
#define UART_FIFO       16u

/* Register offsets from the base port. */
#define UART_RBR 0   /* read, DLAB 0: received byte */
#define UART_THR 0   /* write, DLAB 0: byte to send */
#define UART_DLL 0   /* DLAB 1: divisor, low */
#define UART_IER 1   /* DLAB 0: interrupt enable */
#define UART_DLM 1   /* DLAB 1: divisor, high */
#define UART_IIR 2   /* read: interrupt identification */
#define UART_FCR 2   /* write: FIFO control */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define UART_LCR_DLAB   0x80
#define UART_IER_RDI    0x01    /* received data available */
#define UART_IER_THRI   0x02    /* transmitter holding register empty */
#define UART_IIR_NONE   0x01
#define UART_IIR_THRI   0x02
#define UART_IIR_RDI    0x04
#define UART_IIR_FIFO   0xc0    /* FIFOs enabled (a 16550A) */
#define UART_FCR_ENABLE 0x01
#define UART_FCR_CLEAR_RX 0x02
#define UART_LSR_DR     0x01
#define UART_LSR_THRE   0x20
#define UART_LSR_TEMT   0x40
#define UART_MCR_LOOP   0x10
#define UART_MCR_OUT2   0x08

struct uart {
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
    bool thri_pending;          /* an empty-transmitter interrupt is due */
    uint8_t rx[UART_FIFO];
    unsigned rx_head, rx_len;
    uint64_t rx_dropped;        /* bytes pushed while the FIFO was full */
    /* The byte the guest sent (not called in loopback). */
    void (*tx)(void *opaque, uint8_t byte);
    void *tx_opaque;
    /* The interrupt line's level. */
    void (*irq)(void *opaque, bool level);
    void *irq_opaque;
};

/* A guest access to register off (0..7) of the UART. */
uint8_t uart_read(struct uart *u, unsigned off);
void uart_write(struct uart *u, unsigned off, uint8_t v);

/* A byte from the host's side (the console's input): false when the
 * receive FIFO is full (the byte is dropped, as a chip would). */
bool uart_receive(struct uart *u, uint8_t byte);

#endif
