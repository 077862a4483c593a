/*
 * disk.c - the fake kernel drives disk 0 as Linux's virtio_blk over
 * virtio_mmio would: a virtio 1.x driver (virtio-mmio version 2, split
 * virtqueue, 64-bit ring addresses) whose completions come by interrupt.
 * vdisk-vmm raises the disk's line when a request is used (KVM_IRQ_LINE on
 * IRQ 5) and lowers it when the driver acknowledges (InterruptACK); the
 * MP table says the line is level-triggered, so KVM's IOAPIC delivers it
 * again after the EOI for as long as it stays up.
 *
 * The requests, one at a time, each awaited by STI; HLT until the
 * interrupt handler saw it (the LAPIC-timer watchdog fails a lost one):
 *   1. a read of the first 4 KiB, whose FNV-1a 64 checksum is printed;
 *   2. a write of a pattern to 4 KiB at sector 8 (the sector number, then
 *      "fake-kernel" over and over, in each sector), whose checksum is
 *      printed too;
 *   3. its read back, which must bring the pattern.
 * A read-only disk gets a read of sector 8 for 2 and no 3.  After each:
 * one interrupt more with InterruptStatus "used buffer", one used entry
 * with the right length, status 0, the line down (InterruptStatus 0) and
 * the pin armed again (the IOAPIC's Remote IRR clear): the next
 * completion must raise the line again.
 *
 * An interrupt with nothing pending means the line stayed up after the
 * acknowledgement, but for one case: a KVM that ends the interrupt at its
 * delivery.  On a PVM host (kvm_pvm, a software KVM) the handler runs with
 * the vector not in service at the LAPIC (ISR and PPR 0), so the IOAPIC
 * had its EOI before the handler's ACK, saw the line still up and sent
 * the interrupt again, and the handler's own EOI finds nothing to end.
 * So an interrupt that was not in service may be followed by one with
 * nothing pending (whose delivery re-arms the pin); one that was in
 * service by none.  Both are counted and printed.
 */
#include "kernel.h"

/* The device's status bits (virtio 1.x, 2.1) and what is taken of it. */
#define STATUS_ACKNOWLEDGE      1u
#define STATUS_DRIVER           2u
#define STATUS_DRIVER_OK        4u
#define STATUS_FEATURES_OK      8u
#define STATUS_NEEDS_RESET      64u
#define STATUS_FAILED           128u
#define FEATURE_VERSION_1_HIGH  1u      /* bit 32: bit 0 of the high half */
#define FEATURE_BLK_RO          (1u << 5)
#define INT_USED_BUFFER         1u      /* InterruptStatus bit 0 */

/* virtio-blk requests (5.2.6). */
#define BLK_T_IN                0
#define BLK_T_OUT               1
#define BLK_S_OK                0
#define SECTOR                  512u
#define IO_BYTES                4096u
#define WRITE_SECTOR            8u

/* The split virtqueue (2.7): a small one, every request in descriptors 0-2. */
#define QSIZE                   8u
#define DESC_F_NEXT             1u
#define DESC_F_WRITE            2u

/* The IOAPIC's redirection entry (low half). */
#define REDIRECT_ACTIVE_LOW     (1u << 13)
#define REDIRECT_REMOTE_IRR     (1u << 14)
#define REDIRECT_LEVEL          (1u << 15)
#define REDIRECT_MASKED         (1u << 16)
#define LAPIC_ISR(vector)       (0x100 + 0x10 * ((vector) / 32))
/* MP table interrupt flags (MP spec 4.3.4): polarity bits 1:0, trigger
 * bits 3:2; 00 is "conforms to the bus", for ISA active high and edge. */
#define MP_POLARITY(f)          ((f) & 3u)
#define MP_TRIGGER(f)           (((f) >> 2) & 3u)
#define MP_ACTIVE_LOW           3u
#define MP_LEVEL                3u
#define MP_RESERVED             2u

#define DISK                    VIRTIO_MMIO_BASE       /* disk 0 */
#define DISK_IRQ                VIRTIO_MMIO_IRQ        /* on IOAPIC pin 5 */
#define DISK_VECTOR             0x25
/* Interrupts in one request before the pin is masked: a line that stays
 * up would otherwise keep the CPU in the handler for ever. */
#define STORM_LIMIT             100u

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static struct virtq_desc descs[QSIZE] __attribute__((aligned(16)));
static struct {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QSIZE];
    uint16_t used_event;
} avail __attribute__((aligned(2)));
static volatile struct {
    uint16_t flags;
    uint16_t idx;
    struct {
        uint32_t id;
        uint32_t len;
    } ring[QSIZE];
    uint16_t avail_event;
} used __attribute__((aligned(4)));
static uint16_t last_used;

static struct {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
} header;
static volatile uint8_t status;
static volatile uint8_t rbuf[IO_BYTES] __attribute__((aligned(16)));
static uint8_t wbuf[IO_BYTES] __attribute__((aligned(16)));

/* The interrupt handler's: interrupts with something pending, those of
 * them not in service at the LAPIC, and those with nothing pending. */
static volatile unsigned disk_irqs, unserviced_irqs, empty_irqs;
static volatile unsigned handler_calls, handler_call_limit;
static volatile uint32_t int_status_seen;       /* since the last request */
static uint32_t redirect_low;                   /* pin 5's entry, unmasked */

static inline void barrier(void)
{
    __asm__ volatile("" : : : "memory");
}

static uint32_t disk_read(uint32_t reg)
{
    return mmio_read32(DISK + reg);
}

static void disk_write(uint32_t reg, uint32_t v)
{
    mmio_write32(DISK + reg, v);
}

/* The two halves of a 64-bit address. */
static void disk_write64(uint32_t low_reg, const volatile void *p)
{
    uint64_t addr = (uintptr_t)p;

    disk_write(low_reg, (uint32_t)addr);
    disk_write(low_reg + 4, (uint32_t)(addr >> 32));
}

__attribute__((interrupt)) static void disk_interrupt(struct interrupt_frame *frame)
{
    uint32_t in_service = mmio_read32(LAPIC_BASE + LAPIC_ISR(DISK_VECTOR)) &
                          (1u << (DISK_VECTOR % 32));
    uint32_t pending = mmio_read32(DISK + VIRTIO_INTERRUPT_STATUS);

    (void)frame;
    if (pending) {
        /* The acknowledgement lowers the line before the EOI re-arms the pin. */
        mmio_write32(DISK + VIRTIO_INTERRUPT_ACK, pending);
        int_status_seen |= pending;
        disk_irqs++;
        if (!in_service)
            unserviced_irqs++;
    } else {
        empty_irqs++;
    }
    if (++handler_calls == handler_call_limit)
        ioapic_write(IOAPIC_REDIRECT(DISK_IRQ), redirect_low | REDIRECT_MASKED);
    lapic_write(LAPIC_EOI, 0);
}

/* Returns the device's low feature bits. */
static uint32_t disk_init(void)
{
    uint32_t offered_low, offered_high, st;

    disk_write(VIRTIO_STATUS, 0);                           /* reset */
    check(disk_read(VIRTIO_STATUS) == 0, "disk 0: the status is not 0 after a reset");
    disk_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE);
    disk_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    disk_write(VIRTIO_DEVICE_FEATURES_SEL, 1);
    offered_high = disk_read(VIRTIO_DEVICE_FEATURES);
    disk_write(VIRTIO_DEVICE_FEATURES_SEL, 0);
    offered_low = disk_read(VIRTIO_DEVICE_FEATURES);
    check(offered_high & FEATURE_VERSION_1_HIGH, "disk 0: VERSION_1 (feature bit 32) not offered");
    disk_write(VIRTIO_DRIVER_FEATURES_SEL, 0);
    disk_write(VIRTIO_DRIVER_FEATURES, 0);
    disk_write(VIRTIO_DRIVER_FEATURES_SEL, 1);
    disk_write(VIRTIO_DRIVER_FEATURES, FEATURE_VERSION_1_HIGH);
    disk_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    check(disk_read(VIRTIO_STATUS) & STATUS_FEATURES_OK,
          "disk 0: FEATURES_OK not kept (VERSION_1 alone refused)");

    disk_write(VIRTIO_QUEUE_SEL, 0);
    check(disk_read(VIRTIO_QUEUE_READY) == 0, "disk 0: queue 0 ready after a reset");
    check(disk_read(VIRTIO_QUEUE_NUM_MAX) >= QSIZE, "disk 0: queue 0 smaller than 8 entries");
    disk_write(VIRTIO_QUEUE_NUM, QSIZE);
    disk_write64(VIRTIO_QUEUE_DESC_LOW, descs);
    disk_write64(VIRTIO_QUEUE_DRIVER_LOW, &avail);
    disk_write64(VIRTIO_QUEUE_DEVICE_LOW, &used);
    disk_write(VIRTIO_QUEUE_READY, 1);
    check(disk_read(VIRTIO_QUEUE_READY) == 1, "disk 0: queue 0 refused (QueueReady stays 0)");
    disk_write(VIRTIO_STATUS,
               STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    st = disk_read(VIRTIO_STATUS);
    check(!(st & (STATUS_NEEDS_RESET | STATUS_FAILED)), "disk 0: the device failed at DRIVER_OK");

    put("fake-kernel: disk 0: driver ok: device features ");
    put_hex((uint64_t)offered_high << 32 | offered_low);
    put(", VERSION_1 taken; queue 0 of ");
    put_dec(QSIZE);
    put(" entries at ");
    put_hex((uintptr_t)descs);
    put("\n");
    return offered_low;
}

/* IRQ 5 on pin 5 to this CPU, with the MP table's polarity and trigger. */
static void route_disk_irq(uint16_t mp_flags)
{
    bool active_low = MP_POLARITY(mp_flags) == MP_ACTIVE_LOW;
    bool level = MP_TRIGGER(mp_flags) == MP_LEVEL;

    check(MP_POLARITY(mp_flags) != MP_RESERVED && MP_TRIGGER(mp_flags) != MP_RESERVED,
          "MP table: reserved polarity or trigger for the disk's IRQ");
    set_gate(DISK_VECTOR, disk_interrupt);
    /* Fixed delivery, physical destination us, unmasked. */
    redirect_low = DISK_VECTOR | (level ? REDIRECT_LEVEL : 0) | (active_low ? REDIRECT_ACTIVE_LOW : 0);
    ioapic_write(IOAPIC_REDIRECT(DISK_IRQ) + 1, lapic_id() << 24);
    ioapic_write(IOAPIC_REDIRECT(DISK_IRQ), redirect_low);
    put("fake-kernel: disk 0: IRQ ");
    put_dec(DISK_IRQ);
    put(" through IOAPIC pin ");
    put_dec(DISK_IRQ);
    put(" to vector ");
    put_hex(DISK_VECTOR);
    put(level ? ", level-triggered" : ", edge-triggered");
    put(active_low ? ", active low" : ", active high");
    put(" (MP table flags ");
    put_hex(mp_flags);
    put(")\n");
}

/* One request of IO_BYTES at sector into or from buf, awaited by
 * interrupt; the device must say it wrote `written` bytes. */
static void disk_request(uint32_t type, uint64_t sector, volatile void *buf, uint32_t written)
{
    unsigned irqs_before = disk_irqs, unserviced_before = unserviced_irqs;
    unsigned empty_before = empty_irqs;
    uint16_t entry;

    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status = 0xff;
    int_status_seen = 0;
    handler_call_limit = handler_calls + STORM_LIMIT;
    descs[0] = (struct virtq_desc){ (uintptr_t)&header, sizeof(header), DESC_F_NEXT, 1 };
    descs[1] = (struct virtq_desc){ (uintptr_t)buf, IO_BYTES,
                                    DESC_F_NEXT | (type == BLK_T_IN ? DESC_F_WRITE : 0), 2 };
    descs[2] = (struct virtq_desc){ (uintptr_t)&status, 1, DESC_F_WRITE, 0 };
    avail.ring[avail.idx % QSIZE] = 0;
    barrier();                          /* the entry before the index (x86: stores in order) */
    avail.idx++;
    barrier();

    watchdog_start();
    disk_write(VIRTIO_QUEUE_NOTIFY, 0);
    while (disk_irqs == irqs_before && !watchdog_fired())
        wait_for_interrupt();
    check(disk_irqs != irqs_before,
          "disk 0: no interrupt for a request (IRQ 5, IOAPIC pin 5) in 10 seconds");
    /* Until the pin is armed again.  Interrupts on: an interrupt sent again
     * (not in service, above) is taken here. */
    while ((ioapic_read(IOAPIC_REDIRECT(DISK_IRQ)) & REDIRECT_REMOTE_IRR) &&
           handler_calls != handler_call_limit && !watchdog_fired())
        wait_for_interrupt();
    watchdog_stop();
    check(handler_calls != handler_call_limit,
          "disk 0: an interrupt storm (100 in one request): the line stays up");
    check(empty_irqs - empty_before <= unserviced_irqs - unserviced_before,
          "disk 0: interrupts with InterruptStatus 0: the line stayed up after InterruptACK");
    check(!(ioapic_read(IOAPIC_REDIRECT(DISK_IRQ)) & REDIRECT_REMOTE_IRR),
          "disk 0: the IOAPIC's Remote IRR stays set: the pin is not armed again after the EOI");
    check(disk_irqs == irqs_before + 1, "disk 0: more than one interrupt for one request");
    check(int_status_seen == INT_USED_BUFFER,
          "disk 0: an interrupt whose InterruptStatus is not \"used buffer\" (0x1) alone");
    check(used.idx == (uint16_t)(last_used + 1), "disk 0: an interrupt, but not one used entry");
    entry = last_used % QSIZE;
    last_used++;
    check(used.ring[entry].id == 0 && used.ring[entry].len == written,
          "disk 0: the used entry is not our chain with the bytes written");
    check(status == BLK_S_OK, "disk 0: a request's status is not VIRTIO_BLK_S_OK");
    check(disk_read(VIRTIO_INTERRUPT_STATUS) == 0, "disk 0: InterruptStatus not 0 after the ACK");
}

/* The pattern: each sector starts with its number (8 bytes, little-endian),
 * then "fake-kernel" over and over. */
static void make_pattern(uint64_t first_sector)
{
    static const char text[] = "fake-kernel";

    for (uint32_t i = 0; i < IO_BYTES; i++) {
        uint32_t o = i % SECTOR;
        uint64_t sector = first_sector + i / SECTOR;

        wbuf[i] = o < 8 ? (uint8_t)(sector >> (8 * o)) : (uint8_t)text[o % (sizeof(text) - 1)];
    }
}

void check_disk_interrupts(unsigned disks, const uint16_t irq_flags[ISA_IRQS])
{
    uint64_t capacity;
    unsigned requests = 0;
    uint32_t features;

    if (disks == 0)
        return;
    features = disk_init();
    capacity = disk_read(VIRTIO_CONFIG) | (uint64_t)disk_read(VIRTIO_CONFIG + 4) << 32;
    check(capacity >= WRITE_SECTOR + IO_BYTES / SECTOR,
          "disk 0: smaller than the 8 KiB the fake kernel reads and writes");
    route_disk_irq(irq_flags[DISK_IRQ]);

    disk_request(BLK_T_IN, 0, rbuf, IO_BYTES + 1);
    requests++;
    put("fake-kernel: disk 0: read 4096 bytes by interrupt, fnv ");
    put_hex64(fnv1a(rbuf, IO_BYTES));
    put("\n");

    if (features & FEATURE_BLK_RO) {
        disk_request(BLK_T_IN, WRITE_SECTOR, rbuf, IO_BYTES + 1);
        requests++;
        put("fake-kernel: disk 0: read-only; read 4096 bytes at sector 8 by interrupt, fnv ");
        put_hex64(fnv1a(rbuf, IO_BYTES));
        put("\n");
    } else {
        make_pattern(WRITE_SECTOR);
        disk_request(BLK_T_OUT, WRITE_SECTOR, wbuf, 1);
        disk_request(BLK_T_IN, WRITE_SECTOR, rbuf, IO_BYTES + 1);
        requests += 2;
        for (uint32_t i = 0; i < IO_BYTES; i++)
            check(rbuf[i] == wbuf[i], "disk 0: sector 8 read back is not what was written");
        put("fake-kernel: disk 0: wrote 4096 bytes at sector 8 and read them back by interrupt, fnv ");
        put_hex64(fnv1a(wbuf, IO_BYTES));
        put("\n");
    }
    put("fake-kernel: disk 0: ");
    put_dec(disk_irqs);
    put(" interrupts for ");
    put_dec(requests);
    put(" requests, the line down after each InterruptACK and the pin armed again\n");
    check(disk_irqs == requests, "disk 0: not one interrupt per request");
    if (unserviced_irqs) {
        put("fake-kernel: disk 0: ");
        put_dec(unserviced_irqs);
        put(" of them not in service at the LAPIC in the handler (this KVM ends an"
            " interrupt at its delivery), and ");
        put_dec(empty_irqs);
        put(" sent again with nothing pending\n");
    }
}
