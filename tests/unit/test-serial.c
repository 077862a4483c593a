/*
 * test-serial.c - the VMM's 8250/16550A console UART (vmm/serial.c),
 * driven the way a polling guest and Linux's 8250 driver drive it: the
 * probe (scratch register, divisor latch, FIFO bits, loopback with the
 * modem lines), sending, receiving, and the interrupt line.
 */
#include <stdlib.h>

#include "helpers.h"
#include "serial.h"

struct console {
    struct uart u;
    char out[256];
    unsigned n_out;
    bool line;
    unsigned raised;
};

static void tx(void *opaque, uint8_t byte)
{
    struct console *c = opaque;

    if (c->n_out < sizeof(c->out))
        c->out[c->n_out++] = (char)byte;
}

static void irq(void *opaque, bool level)
{
    struct console *c = opaque;

    c->raised += level && !c->line;
    c->line = level;
}

static int setup(void **state)
{
    struct console *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    c->u.tx = tx;
    c->u.tx_opaque = c;
    c->u.irq = irq;
    c->u.irq_opaque = c;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* What a polling guest does: wait for THRE, write. */
static void test_polled_output(void **state)
{
    struct console *c = *state;
    const char *msg = "hello, vmm\n";

    for (const char *p = msg; *p; p++) {
        assert_true(uart_read(&c->u, UART_LSR) & UART_LSR_THRE);
        uart_write(&c->u, UART_THR, (uint8_t)*p);
    }
    assert_int_equal(c->n_out, strlen(msg));
    assert_memory_equal(c->out, msg, strlen(msg));
    assert_int_equal(c->raised, 0);          /* interrupts are off */
}

/* Linux's 8250 autoconfig, in essence. */
static void test_probe(void **state)
{
    struct console *c = *state;

    /* The scratch register holds what is written. */
    uart_write(&c->u, UART_SCR, 0xa5);
    assert_int_equal(uart_read(&c->u, UART_SCR), 0xa5);
    /* IER keeps its low nibble. */
    uart_write(&c->u, UART_IER, 0xff);
    assert_int_equal(uart_read(&c->u, UART_IER), 0x0f);
    uart_write(&c->u, UART_IER, 0);
    /* The divisor latch, behind DLAB: 115200 baud is divisor 1. */
    uart_write(&c->u, UART_LCR, UART_LCR_DLAB);
    uart_write(&c->u, UART_DLL, 1);
    uart_write(&c->u, UART_DLM, 0);
    assert_int_equal(uart_read(&c->u, UART_DLL), 1);
    assert_int_equal(uart_read(&c->u, UART_DLM), 0);
    uart_write(&c->u, UART_LCR, 0x03);        /* 8N1, DLAB off */
    assert_int_equal(uart_read(&c->u, UART_LCR), 0x03);
    assert_int_equal(c->n_out, 0);            /* DLL writes send nothing */
    /* FIFOs on: IIR shows the 16550A bits. */
    uart_write(&c->u, UART_FCR, UART_FCR_ENABLE);
    assert_int_equal(uart_read(&c->u, UART_IIR) & UART_IIR_FIFO, UART_IIR_FIFO);
    /* Loopback: MSR reflects MCR's outputs, and bytes come back. */
    uart_write(&c->u, UART_MCR, UART_MCR_LOOP | 0x0a);
    assert_int_equal(uart_read(&c->u, UART_MSR) & 0xf0, 0xa0);
    uart_write(&c->u, UART_THR, 'x');
    assert_true(uart_read(&c->u, UART_LSR) & UART_LSR_DR);
    assert_int_equal(uart_read(&c->u, UART_RBR), 'x');
    assert_false(uart_read(&c->u, UART_LSR) & UART_LSR_DR);
    assert_int_equal(c->n_out, 0);
    uart_write(&c->u, UART_MCR, 0);
    assert_int_equal(uart_read(&c->u, UART_MSR), 0xb0);
}

static void test_input_and_interrupts(void **state)
{
    struct console *c = *state;

    /* Interrupts reach the line only with OUT2. */
    uart_write(&c->u, UART_MCR, UART_MCR_OUT2);
    uart_write(&c->u, UART_IER, UART_IER_RDI);
    assert_false(c->line);
    assert_true(uart_receive(&c->u, 'a'));
    assert_true(c->line);
    assert_int_equal(uart_read(&c->u, UART_IIR) & 0x0f, UART_IIR_RDI);
    assert_int_equal(uart_read(&c->u, UART_RBR), 'a');
    assert_false(c->line);
    assert_int_equal(uart_read(&c->u, UART_IIR) & 0x0f, UART_IIR_NONE);

    /* The transmitter interrupt: raised when enabled (empty), cleared by
     * reading IIR, raised again after a byte is sent. */
    uart_write(&c->u, UART_IER, UART_IER_RDI | UART_IER_THRI);
    assert_true(c->line);
    assert_int_equal(uart_read(&c->u, UART_IIR) & 0x0f, UART_IIR_THRI);
    assert_false(c->line);
    uart_write(&c->u, UART_THR, 'z');
    assert_true(c->line);
    assert_int_equal(c->out[c->n_out - 1], 'z');

    /* A full FIFO drops what comes next, and says so. */
    uart_write(&c->u, UART_IER, 0);
    for (unsigned i = 0; i < UART_FIFO; i++)
        assert_true(uart_receive(&c->u, (uint8_t)('0' + i)));
    assert_false(uart_receive(&c->u, '!'));
    assert_int_equal(c->u.rx_dropped, 1);
    assert_int_equal(uart_read(&c->u, UART_RBR), '0');
    /* FCR clears the receive FIFO. */
    uart_write(&c->u, UART_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX);
    assert_false(uart_read(&c->u, UART_LSR) & UART_LSR_DR);
    assert_int_equal(uart_read(&c->u, UART_RBR), 0);
    /* Registers past the chip's eight read as nothing. */
    assert_int_equal(uart_read(&c->u, 9), 0xff);
    uart_write(&c->u, 9, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_polled_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_input_and_interrupts, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
