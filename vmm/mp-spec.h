/*
 * mp-spec.h - the MP table's structures (Intel MultiProcessor
 * Specification 1.4, chapter 4), written down once: vmm/mptable.c writes
 * them for a kernel guest, and the fake kernel of tests/kernel/ reads them
 * back.  Freestanding (stdint only), so that a guest can include it.
 */
#ifndef VDISK_VMM_MP_SPEC_H
#define VDISK_VMM_MP_SPEC_H

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the MP table's structures are read and written as the CPU lays them out"
#endif

#define MP_FLOATING_SIGNATURE   "_MP_"
#define MP_CONFIG_SIGNATURE     "PCMP"

/* The floating pointer structure (4.1), on a 16-byte boundary. */
struct mp_floating {
    char signature[4];          /* "_MP_" */
    uint32_t config;            /* the configuration table's address */
    uint8_t length;             /* in 16-byte units: 1 */
    uint8_t spec_rev;           /* 4: version 1.4 */
    uint8_t checksum;           /* all bytes add up to 0 */
    uint8_t feature[5];         /* [0] 0: a table follows; [1] bit 7 IMCR: no */
} __attribute__((packed));
_Static_assert(sizeof(struct mp_floating) == 16, "MP floating pointer");

/* The configuration table header (4.2); entries follow it. */
struct mp_config {
    char signature[4];          /* "PCMP" */
    uint16_t length;            /* of the base table, header included */
    uint8_t spec_rev;
    uint8_t checksum;           /* over length bytes */
    char oem[8];
    char product[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entries;
    uint32_t lapic;             /* every LAPIC's address */
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_config) == 44, "MP configuration table header");

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINTR = 3, MP_LINTR = 4 };

struct mp_processor {
    uint8_t type;
    uint8_t apic_id;
    uint8_t apic_version;
    uint8_t flags;              /* bit 0 enabled, bit 1 bootstrap processor */
    uint32_t signature;         /* CPUID 1 EAX: stepping, model, family */
    uint32_t features;          /* CPUID 1 EDX */
    uint8_t reserved[8];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry");

struct mp_bus {
    uint8_t type;
    uint8_t id;
    char name[6];               /* "ISA   " */
} __attribute__((packed));
_Static_assert(sizeof(struct mp_bus) == 8, "MP bus entry");

struct mp_ioapic {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags;              /* bit 0 enabled */
    uint32_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP I/O APIC entry");

/* An I/O (type 3) or local (type 4) interrupt assignment. */
struct mp_intr {
    uint8_t type;
    uint8_t kind;               /* INT, NMI, SMI, ExtINT */
    uint16_t flags;             /* polarity bits 1:0, trigger bits 3:2 */
    uint8_t bus;
    uint8_t bus_irq;
    uint8_t dest;               /* I/O APIC ID, or local APIC ID (0xff: all) */
    uint8_t pin;                /* INTIN#, or LINTIN# */
} __attribute__((packed));
_Static_assert(sizeof(struct mp_intr) == 8, "MP interrupt entry");

enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

#define MP_FLAGS_TRIGGER_LEVEL  0xcu    /* trigger bits 3:2 = 11 */
#define MP_CPU_ENABLED          0x01u
#define MP_CPU_BSP              0x02u

#endif
