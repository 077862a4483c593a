/*
 * mptable.c - the fake kernel's check of the MP table (Intel
 * MultiProcessor Specification 1.4, chapter 4) that vdisk-vmm writes
 * (vmm/mptable.c), read as Linux reads it when there is no ACPI: how many
 * CPUs and which one boots, where the IOAPIC is, which pin each ISA IRQ
 * comes on and which IRQs are level-triggered.
 */
#include "kernel.h"
#include "mp-spec.h"            /* the structures, as vmm/mptable.c writes them */

/* Where the floating pointer is looked for. */
#define MP_SEARCH_START     0xf0000u    /* the BIOS area, where vdisk-vmm puts it */
#define MP_SEARCH_END       0x100000u

static bool same_bytes(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

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

        if (same_bytes(fp->signature, MP_FLOATING_SIGNATURE, 4))
            return fp;
    }
    return NULL;
}

void check_mptable(const uint8_t *bp, unsigned disks, uint16_t irq_flags[ISA_IRQS])
{
    const struct mp_floating *fp = find_mp_floating();
    const struct mp_config *config;
    const uint8_t *entry, *end;
    uint64_t apic_ids[4] = { 0 };       /* a bitmap of the CPUs' APIC ids */
    uint32_t isa_irqs = 0, level_irqs = 0;
    unsigned cpus = 0, ioapics = 0, ioapic_id = 0, isa_bus = 0x100;
    unsigned our_id = lapic_id();
    bool bsp_is_us = false;

    for (unsigned i = 0; i < ISA_IRQS; i++)
        irq_flags[i] = 0;
    check(fp != NULL, "MP table: no floating pointer (\"_MP_\") in 0xf0000-0xfffff");
    check(fp->length == 1 && sum_bytes((const uint8_t *)fp, 16) == 0,
          "MP table: the floating pointer's checksum or length is wrong");
    check(fp->feature[0] == 0 && fp->config != 0, "MP table: no configuration table");
    check(!in_ram(bp, (uintptr_t)fp, 16), "MP table: in what e820 calls RAM");
    config = phys(fp->config);
    check(same_bytes(config->signature, MP_CONFIG_SIGNATURE, 4), "MP table: no \"PCMP\" configuration table");
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
            if (intr->kind == MP_INT && intr->bus == isa_bus && intr->dest == ioapic_id &&
                intr->bus_irq == intr->pin && intr->pin < ISA_IRQS) {
                isa_irqs |= 1u << intr->pin;
                irq_flags[intr->pin] = intr->flags;
                if ((intr->flags & MP_FLAGS_TRIGGER_LEVEL) == MP_FLAGS_TRIGGER_LEVEL)
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
    check(isa_irqs == (1u << ISA_IRQS) - 1,
          "MP table: not every ISA IRQ on the IOAPIC pin of its number");
    check(level_irqs == ((1u << disks) - 1) << VIRTIO_MMIO_IRQ,
          "MP table: the disks' IRQs, and only they, should be level-triggered");
}

