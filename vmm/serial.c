/*
 * serial.c - an 8250/16550A UART, the guest's console.
 */
#include "serial.h"

/* The interrupt the chip would report now, highest priority first
 * (received data before an empty transmitter), or UART_IIR_NONE. */
static uint8_t pending(const struct uart *u)
{
    if ((u->ier & UART_IER_RDI) && u->rx_len)
        return UART_IIR_RDI;
    if ((u->ier & UART_IER_THRI) && u->thri_pending)
        return UART_IIR_THRI;
    return UART_IIR_NONE;
}

static void update_irq(struct uart *u)
{
    /* On a PC the line reaches the interrupt controller only with OUT2;
     * in loopback it does not leave the chip. */
    bool level = pending(u) != UART_IIR_NONE && (u->mcr & UART_MCR_OUT2) &&
                 !(u->mcr & UART_MCR_LOOP);

    if (u->irq)
        u->irq(u->irq_opaque, level);
}

static bool push(struct uart *u, uint8_t byte)
{
    if (u->rx_len == UART_FIFO) {
        u->rx_dropped++;
        return false;
    }
    u->rx[(u->rx_head + u->rx_len) % UART_FIFO] = byte;
    u->rx_len++;
    return true;
}

bool uart_receive(struct uart *u, uint8_t byte)
{
    bool ok;

    if (u->mcr & UART_MCR_LOOP)     /* the line is cut in loopback */
        return false;
    ok = push(u, byte);
    update_irq(u);
    return ok;
}

/* The modem status: in loopback the outputs come back as the inputs
 * (RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD), which is how drivers test
 * the chip; otherwise the lines of a cable that is always ready. */
static uint8_t msr(const struct uart *u)
{
    if (u->mcr & UART_MCR_LOOP)
        return (uint8_t)((u->mcr & 0x0f) << 4);
    return 0xb0;                    /* DCD, DSR, CTS */
}

uint8_t uart_read(struct uart *u, unsigned off)
{
    bool dlab = u->lcr & UART_LCR_DLAB;
    uint8_t v;

    switch (off) {
    case UART_RBR:
        if (dlab)
            return u->dll;
        v = 0;
        if (u->rx_len) {
            v = u->rx[u->rx_head];
            u->rx_head = (u->rx_head + 1) % UART_FIFO;
            u->rx_len--;
        }
        update_irq(u);
        return v;
    case UART_IER:
        return dlab ? u->dlm : u->ier;
    case UART_IIR:
        v = pending(u);
        /* Reading IIR while it reports an empty transmitter clears it. */
        if (v == UART_IIR_THRI) {
            u->thri_pending = false;
            update_irq(u);
        }
        return v | ((u->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO : 0);
    case UART_LCR:
        return u->lcr;
    case UART_MCR:
        return u->mcr;
    case UART_LSR:
        return UART_LSR_THRE | UART_LSR_TEMT | (u->rx_len ? UART_LSR_DR : 0);
    case UART_MSR:
        return msr(u);
    case UART_SCR:
        return u->scr;
    default:
        return 0xff;                /* nothing there */
    }
}

void uart_write(struct uart *u, unsigned off, uint8_t v)
{
    bool dlab = u->lcr & UART_LCR_DLAB;

    switch (off) {
    case UART_THR:
        if (dlab) {
            u->dll = v;
            return;
        }
        if (u->mcr & UART_MCR_LOOP)
            push(u, v);
        else if (u->tx)
            u->tx(u->tx_opaque, v);
        u->thri_pending = true;     /* sent at once: empty again */
        break;
    case UART_IER:
        if (dlab) {
            u->dlm = v;
            return;
        }
        /* Enabling the transmitter interrupt while it is empty raises it
         * (the chip does, and drivers count on it). */
        if ((v & UART_IER_THRI) && !(u->ier & UART_IER_THRI))
            u->thri_pending = true;
        u->ier = v & 0x0f;
        break;
    case UART_FCR:
        u->fcr = v & UART_FCR_ENABLE ? v : 0;
        if (v & UART_FCR_CLEAR_RX)
            u->rx_head = u->rx_len = 0;
        break;
    case UART_LCR:
        u->lcr = v;
        return;
    case UART_MCR:
        u->mcr = v & 0x1f;
        break;
    case UART_SCR:
        u->scr = v;
        return;
    default:
        return;                     /* LSR and MSR are read-only */
    }
    update_irq(u);
}
