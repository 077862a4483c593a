/*
 * mptable.c - the MP table of a Linux guest (Intel MultiProcessor
 * Specification 1.4, chapter 4).
 *
 * Without ACPI tables this is how Linux learns how many CPUs there are,
 * which one it is running on, where the IOAPIC is and which of its pins
 * each ISA interrupt arrives on.  The wiring described is KVM's own
 * (KVM_CREATE_IRQCHIP's default routing): ISA IRQ n reaches the 8259s'
 * line n and the IOAPIC's pin n, so every ISA IRQ maps to the pin of the
 * same number, the PIT's IRQ 0 included.  The 8259 reaches each LAPIC's
 * LINT0 as ExtINT (virtual wire mode), NMI comes on LINT1.
 *
 * Interrupt polarity and trigger are "conforming" (the ISA default: edge,
 * active high) except for the disks: a virtio-mmio device holds its line
 * up until the driver acknowledges (virtio 1.x, 4.2.2), which is a level
 * interrupt.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mp-spec.h"
#include "mptable.h"

#define MP_FLAGS_CONFORMING     0x0u
#define MP_FLAGS_LEVEL_HIGH     0xdu    /* active high (01), level (11) */

#define MP_LAPIC_ADDR           0xfee00000u
#define MP_LAPIC_VERSION        0x14u   /* an integrated xAPIC, as KVM's */
#define MP_IOAPIC_ADDR          0xfec00000u
#define MP_IOAPIC_VERSION       0x11u   /* KVM's IOAPIC */
#define MP_ISA_BUS              0u
#define MP_ISA_IRQS             16u
#define MP_CPU_SIGNATURE        0x600u  /* family 6: only shown, never used */
#define MP_CPU_FEATURES         0x201u  /* FPU, APIC */

#define MP_MAX_SIZE (sizeof(struct mp_config) + VM_MAX_CPUS * sizeof(struct mp_processor) + \
                     sizeof(struct mp_bus) + sizeof(struct mp_ioapic) + \
                     (MP_ISA_IRQS + 2) * sizeof(struct mp_intr))

static uint8_t checksum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;

    for (size_t i = 0; i < len; i++)
        sum += b[i];
    return (uint8_t)-sum;
}

static bool disk_irq(const struct vm *vm, unsigned irq)
{
    return irq >= VIRTIO_MMIO_IRQ_BASE && irq < VIRTIO_MMIO_IRQ_BASE + vm->ndisks;
}

int vmm_write_mptable(struct vm *vm)
{
    uint8_t table[MP_MAX_SIZE];
    struct mp_floating fp;
    struct mp_config hdr;
    struct mp_bus bus = { .type = MP_BUS, .id = MP_ISA_BUS };
    struct mp_ioapic ioapic = {
        .type = MP_IOAPIC, .id = (uint8_t)vm->ncpus, .version = MP_IOAPIC_VERSION,
        .flags = 1, .address = MP_IOAPIC_ADDR,
    };
    uint32_t config_addr = MPTABLE_START + sizeof(fp);
    size_t len = sizeof(hdr);
    uint16_t n = 0;
    uint8_t *dst;

    _Static_assert(MPTABLE_START + sizeof(struct mp_floating) + MP_MAX_SIZE <= MPTABLE_END,
                   "the MP table fits the BIOS area");
    if (vm->ncpus == 0 || vm->ncpus > VM_MAX_CPUS) {
        fprintf(stderr, "vdisk-vmm: the MP table takes 1 to %u vCPUs\n", VM_MAX_CPUS);
        return -EINVAL;
    }
    memset(table, 0, sizeof(table));
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct mp_processor p = {
            .type = MP_PROCESSOR, .apic_id = (uint8_t)i, .apic_version = MP_LAPIC_VERSION,
            .flags = 1 | (i == 0 ? 2 : 0), .signature = MP_CPU_SIGNATURE,
            .features = MP_CPU_FEATURES,
        };

        memcpy(table + len, &p, sizeof(p));
        len += sizeof(p);
        n++;
    }
    memcpy(bus.name, "ISA   ", sizeof(bus.name));
    memcpy(table + len, &bus, sizeof(bus));
    len += sizeof(bus);
    memcpy(table + len, &ioapic, sizeof(ioapic));
    len += sizeof(ioapic);
    n += 2;
    for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++) {
        struct mp_intr e = {
            .type = MP_IOINTR, .kind = MP_INT,
            .flags = disk_irq(vm, irq) ? MP_FLAGS_LEVEL_HIGH : MP_FLAGS_CONFORMING,
            .bus = MP_ISA_BUS, .bus_irq = (uint8_t)irq, .dest = ioapic.id, .pin = (uint8_t)irq,
        };

        memcpy(table + len, &e, sizeof(e));
        len += sizeof(e);
        n++;
    }
    for (unsigned lint = 0; lint < 2; lint++) {
        struct mp_intr e = {
            .type = MP_LINTR, .kind = lint == 0 ? MP_EXTINT : MP_NMI,
            .flags = MP_FLAGS_CONFORMING, .bus = MP_ISA_BUS, .bus_irq = 0, .dest = 0xff,
            .pin = (uint8_t)lint,
        };

        memcpy(table + len, &e, sizeof(e));
        len += sizeof(e);
        n++;
    }

    memset(&hdr, 0, sizeof(hdr));
    memcpy(hdr.signature, "PCMP", 4);
    hdr.length = (uint16_t)len;
    hdr.spec_rev = 4;
    memcpy(hdr.oem, "VDISK   ", sizeof(hdr.oem));
    memcpy(hdr.product, "VDISK-VMM   ", sizeof(hdr.product));
    hdr.entries = n;
    hdr.lapic = MP_LAPIC_ADDR;
    memcpy(table, &hdr, sizeof(hdr));
    ((struct mp_config *)table)->checksum = checksum(table, len);

    memset(&fp, 0, sizeof(fp));
    memcpy(fp.signature, "_MP_", 4);
    fp.config = config_addr;
    fp.length = 1;
    fp.spec_rev = 4;
    fp.checksum = checksum(&fp, sizeof(fp));

    dst = vmm_mem_ptr(&vm->mem, MPTABLE_START, sizeof(fp) + len);
    if (!dst) {
        fprintf(stderr, "vdisk-vmm: guest RAM does not reach the MP table's place (0x%x)\n",
                MPTABLE_START);
        return -EINVAL;
    }
    memcpy(dst, &fp, sizeof(fp));
    memcpy(dst + sizeof(fp), table, len);
    return 0;
}
