/*
 * mptable.c - the fake kernel's check of the MP table (Intel
 * MultiProcessor Specification 1.4, chapter 4) that vdisk-vmm writes
 * (vmm/mptable.c), read as Linux reads it when there is no ACPI: how many
 * CPUs and which one boots, where the IOAPIC is, which pin each ISA IRQ
 * comes on and which IRQs are level-triggered.
 */
#include "kernel.h"

/* Where the floating pointer is looked for, and the entry types (4.3). */
#define MP_SEARCH_START     0xf0000u    /* the BIOS area, where vdisk-vmm puts it */
#define MP_SEARCH_END       0x100000u
#define MP_FLOATING_MAGIC   0x5f504d5fu /* "_MP_" */
#define MP_CONFIG_MAGIC     0x504d4350u /* "PCMP" */
#define MP_PROCESSOR        0
#define MP_BUS              1
#define MP_IOAPIC           2
#define MP_IOINTR           3
#define MP_LINTR            4
#define MP_ISA_IRQS         16
#define MP_TRIGGER_LEVEL    0xc         /* flags bits 3:2 = 11 */

struct mp_floating {
    uint32_t signature;
    uint32_t config;
    uint8_t length;                     /* 16-byte units */
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t feature[5];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_floating) == 16, "MP floating pointer");

struct mp_config {
    uint32_t signature;
    uint16_t length;
    uint8_t spec_rev;
    uint8_t checksum;
    char oem[8];
    char product[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entries;
    uint32_t lapic;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_config) == 44, "MP configuration table header");

struct mp_processor {
    uint8_t type;
    uint8_t apic_id;
    uint8_t apic_version;
    uint8_t flags;
    uint32_t signature;
    uint32_t features;
    uint8_t reserved[8];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry");
#define MP_CPU_ENABLED      0x01
#define MP_CPU_BSP          0x02

struct mp_bus {
    uint8_t type;
    uint8_t id;
    char name[6];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_bus) == 8, "MP bus entry");

struct mp_ioapic {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags;
    uint32_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP IOAPIC entry");

struct mp_intr {
    uint8_t type;
    uint8_t kind;                       /* 0: an ordinary interrupt */
    uint16_t flags;                     /* polarity bits 1:0, trigger bits 3:2 */
    uint8_t bus;
    uint8_t bus_irq;
    uint8_t ioapic;
    uint8_t pin;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_intr) == 8, "MP interrupt entry");
#define MP_INT              0

static uint8_t sum_bytes(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;

    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

static const struct mp_floating *find_mp_floating(void)
{
    for (uint64_t addr = MP_SEARCH_START; addr < MP_SEARCH_END; addr += 16) {
        const struct mp_floating *fp = phys(addr);

        if (fp->signature == MP_FLOATING_MAGIC)
            return fp;
    }
    return NULL;
}

void check_mptable(const uint8_t *bp, unsigned disks)
{
    const struct mp_floating *fp = find_mp_floating();
    const struct mp_config *config;
    const uint8_t *entry, *end;
    uint64_t apic_ids[4] = { 0 };       /* a bitmap of the CPUs' APIC ids */
    uint32_t isa_irqs = 0, level_irqs = 0;
    unsigned cpus = 0, ioapics = 0, ioapic_id = 0, isa_bus = 0x100;
    unsigned our_id = lapic_id();
    bool bsp_is_us = false;

    check(fp != NULL, "MP table: no floating pointer (\"_MP_\") in 0xf0000-0xfffff");
    check(fp->length == 1 && sum_bytes((const uint8_t *)fp, 16) == 0,
          "MP table: the floating pointer's checksum or length is wrong");
    check(fp->feature[0] == 0 && fp->config != 0, "MP table: no configuration table");
    check(!in_ram(bp, (uintptr_t)fp, 16), "MP table: in what e820 calls RAM");
    config = phys(fp->config);
    check(config->signature == MP_CONFIG_MAGIC, "MP table: no \"PCMP\" configuration table");
    check(sum_bytes((const uint8_t *)config, config->length) == 0,
          "MP table: the configuration table's checksum is wrong");
    check(config->lapic == LAPIC_BASE, "MP table: the LAPIC is not at 0xfee00000");

    /* The entries come sorted by type (MP spec 4.3): the ISA bus and the
     * IOAPIC are known before the interrupts that name them. */
    entry = (const uint8_t *)(config + 1);
    end = (const uint8_t *)config + config->length;
    for (unsigned i = 0; i < config->entries; i++) {
        /* Processors take 20 bytes, every other entry 8. */
        size_t size = entry[0] == MP_PROCESSOR ? sizeof(struct mp_processor)
                                               : sizeof(struct mp_bus);

        check(entry + size <= end && entry[0] <= MP_LINTR, "MP table: a malformed entry");
        if (entry[0] == MP_PROCESSOR) {
            const struct mp_processor *cpu = (const void *)entry;

            if (cpu->flags & MP_CPU_ENABLED) {
                cpus++;
                apic_ids[cpu->apic_id / 64] |= 1ull << (cpu->apic_id % 64);
                if (cpu->flags & MP_CPU_BSP)
                    bsp_is_us = cpu->apic_id == our_id;
            }
        } else if (entry[0] == MP_BUS) {
            const struct mp_bus *bus = (const void *)entry;

            if (starts_with(bus->name, "ISA"))
                isa_bus = bus->id;
        } else if (entry[0] == MP_IOAPIC) {
            const struct mp_ioapic *ioapic = (const void *)entry;

            ioapics++;
            ioapic_id = ioapic->id;
            check(ioapic->address == IOAPIC_BASE, "MP table: the IOAPIC is not at 0xfec00000");
        } else if (entry[0] == MP_IOINTR) {
            const struct mp_intr *intr = (const void *)entry;

            /* What Linux reads as ISA IRQ n on IOAPIC pin n. */
            if (intr->kind == MP_INT && intr->bus == isa_bus && intr->ioapic == ioapic_id &&
                intr->bus_irq == intr->pin && intr->pin < MP_ISA_IRQS) {
                isa_irqs |= 1u << intr->pin;
                if ((intr->flags & MP_TRIGGER_LEVEL) == MP_TRIGGER_LEVEL)
                    level_irqs |= 1u << intr->pin;
            }
        }
        entry += size;
    }
    put("fake-kernel: MP table at ");
    put_hex((uintptr_t)fp);
    put(": ");
    put_dec(cpus);
    put(" cpus, we are apic ");
    put_dec(our_id);
    put(", ioapic id ");
    put_dec(ioapic_id);
    put(", isa irqs ");
    put_hex(isa_irqs);
    put(" (level ");
    put_hex(level_irqs);
    put("), checksums ok\n");
    check(cpus > 0 && bsp_is_us, "MP table: the bootstrap processor is not this CPU");
    check(ioapics == 1 && !(apic_ids[ioapic_id / 64] & (1ull << (ioapic_id % 64))),
          "MP table: not one IOAPIC with an APIC id of its own");
    check(isa_irqs == (1u << MP_ISA_IRQS) - 1,
          "MP table: not every ISA IRQ on the IOAPIC pin of its number");
    check(level_irqs == ((1u << disks) - 1) << VIRTIO_MMIO_IRQ,
          "MP table: the disks' IRQs, and only they, should be level-triggered");
}

