/*
 * kernel.c - a fake Linux kernel: a freestanding x86-64 program that
 * vdisk-vmm boots with --kernel (KVM) exactly as it boots Linux, and that
 * checks what the 64-bit boot protocol (Documentation/arch/x86/boot.rst)
 * and the machine (docs/VMM.md; vmm/linux.c, vmm/mptable.c) promise.  A
 * real kernel takes minutes on a software KVM and, when something is
 * wrong, says little about what; this takes seconds and names it.
 *
 * One "fake-kernel: " line on COM1 for each step:
 *   1. long mode as the 64-bit entry promises it (EFER.LME and LMA, PG,
 *      PAE), entered with interrupts off, on the BSP;
 *   2. boot_params: our own setup header copied in ("HdrS", the
 *      protocol), type_of_loader and loadflags set by the loader;
 *   3. the e820 map: sorted, RAM at 0 and from 1 MiB over this kernel;
 *   4. the command line; each virtio_mmio.device= on it is where the
 *      machine puts disk i (4K@0xd0000000 + 0x1000 i, IRQ 5 + i), and a
 *      virtio-mmio block device answers there (its size is printed);
 *      without one, nothing answers at 0xd0000000;
 *   5. the initrd: page-aligned, in RAM, above this kernel; its FNV-1a 64
 *      checksum, which a test compares with the file's;
 *   6. the MP table: both checksums, one enabled CPU per vCPU with the BSP
 *      being us, the IOAPIC, ISA IRQ n on its pin n, the disks' IRQs
 *      level-triggered, the table's area kept out of e820's RAM;
 *   7. the last qword of RAM written and read back (all RAM is mapped);
 *   8. an interrupt through the IOAPIC: the UART's THR-empty interrupt on
 *      pin 4 to our LAPIC (a LAPIC timer fails the step if none comes);
 *   9. with a disk: disk 0 set up as a virtio 1.x driver does, its IRQ 5
 *      routed through the IOAPIC as the MP table says (level, active
 *      high), and requests each completed by an interrupt: a read of the
 *      first 4 KiB (its FNV-1a 64 checksum printed, for a test to compare
 *      with what nbdcopy reads), a write of 4 KiB at sector 8 and its read
 *      back (a read again on a read-only disk); then the interrupts are
 *      counted, one per request;
 *  10. "waiting for a key": the CPU halts with interrupts on until a
 *      received-data interrupt brings a byte.  A test checkpoints the VM
 *      here and, restored, sends the same key: what follows is the same.
 * Then "done", and head.S halts with interrupts off: a power-off.  The
 * first check that fails prints "fake-kernel: FAILED ..." and halts the
 * same way.  Steps 6, 8, 9 and 10 are in mptable.c, interrupts.c and
 * disk.c.
 *
 * There are no exception handlers: a fault becomes a triple fault, which
 * vdisk-vmm reports with the registers.  The other vCPUs are never
 * started; they wait for an INIT-SIPI that never comes, as vdisk-vmm
 * allows.
 */
#include "kernel.h"

/* boot_params ("the zero page", arch/x86/include/uapi/asm/bootparam.h). */
#define BP_E820_ENTRIES     0x1e8       /* u8 */
#define BP_BOOT_FLAG        0x1fe       /* u16 */
#define BP_HEADER           0x202       /* u32 "HdrS" */
#define BP_VERSION          0x206       /* u16 */
#define BP_TYPE_OF_LOADER   0x210       /* u8 */
#define BP_LOADFLAGS        0x211       /* u8 */
#define BP_RAMDISK_IMAGE    0x218       /* u32 */
#define BP_RAMDISK_SIZE     0x21c       /* u32 */
#define BP_CMD_LINE_PTR     0x228       /* u32 */
#define BP_XLOADFLAGS       0x236       /* u16 */
#define BP_E820_TABLE       0x2d0
#define BP_E820_MAX         128
#define HDR_MAGIC           0x53726448u /* "HdrS" */
#define BOOT_FLAG           0xaa55
#define PROTOCOL_64BIT      0x020c
#define LOADED_HIGH         0x01
#define XLF_KERNEL_64       0x0001
#define E820_RAM            1

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));
_Static_assert(sizeof(struct e820_entry) == 20, "e820 entry");

/* The machine (docs/VMM.md, "The machine"). */
#define KERNEL_ADDR         0x100000u
#define MAX_DISKS           8u

/* Long mode, and the LAPIC's MSR. */
#define MSR_EFER            0xc0000080u
#define MSR_APIC_BASE       0x1bu
#define EFER_LME            (1u << 8)
#define EFER_LMA            (1u << 10)
#define APIC_BASE_BSP       (1u << 8)
#define CR0_PE              (1u << 0)
#define CR0_PG              (1u << 31)
#define CR4_PAE             (1u << 5)
#define RFLAGS_IF           (1u << 9)

/* ---- hardware access ---- */

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

/* boot_params' fields are read at any alignment. */
static inline uint16_t load16(const uint8_t *p)
{
    uint16_t v;

    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;

    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

/* ---- the console, polled ---- */

void put_char(char c)
{
    while (!(inb(COM1 + UART_LSR) & LSR_THR_EMPTY))
        ;
    outb(COM1 + UART_DATA, (uint8_t)c);
}

void put(const char *s)
{
    while (*s)
        put_char(*s++);
}

void put_dec(uint64_t v)
{
    char buf[20];
    int n = 0;

    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        put_char(buf[--n]);
}

void put_hex(uint64_t v)
{
    int shift = 60;

    put("0x");
    while (shift > 0 && !(v >> shift))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        put_char("0123456789abcdef"[(v >> shift) & 0xf]);
}

/* Sixteen digits, no "0x": how tests/integration/vmm.py prints a checksum. */
void put_hex64(uint64_t v)
{
    for (int shift = 60; shift >= 0; shift -= 4)
        put_char("0123456789abcdef"[(v >> shift) & 0xf]);
}

__attribute__((noreturn)) static void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void check(bool ok, const char *what)
{
    if (ok)
        return;
    put("fake-kernel: FAILED ");
    put(what);
    put("\n");
    halt_forever();
}

/* ---- strings ---- */

bool starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return false;
    return true;
}

static const char *find(const char *s, const char *what)
{
    for (; *s; s++)
        if (starts_with(s, what))
            return s;
    return NULL;
}

/* Digits of the base at s, into *v; the first character after them. */
static const char *parse_number(const char *s, unsigned base, uint64_t *v)
{
    *v = 0;
    for (;; s++) {
        unsigned digit;

        if (*s >= '0' && *s <= '9')
            digit = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            digit = (unsigned)(*s - 'a' + 10);
        else
            return s;
        *v = *v * base + digit;
    }
}

/* ---- the steps ---- */

static void check_long_mode(uint64_t entry_rflags)
{
    uint64_t cr0, cr4, efer = rdmsr(MSR_EFER), apic_base = rdmsr(MSR_APIC_BASE);

    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    put("fake-kernel: long mode: efer ");
    put_hex(efer);
    put(" cr0 ");
    put_hex(cr0);
    put(" cr4 ");
    put_hex(cr4);
    put(" entry rflags ");
    put_hex(entry_rflags);
    put("\n");
    check((efer & (EFER_LME | EFER_LMA)) == (EFER_LME | EFER_LMA),
          "EFER: LME and LMA not both set");
    check((cr0 & (CR0_PE | CR0_PG)) == (CR0_PE | CR0_PG), "CR0: not protected mode with paging");
    check(cr4 & CR4_PAE, "CR4: PAE is off");
    check(!(entry_rflags & RFLAGS_IF), "entered with interrupts on");
    check(apic_base & APIC_BASE_BSP, "IA32_APIC_BASE: not the bootstrap processor");
    check((apic_base & ~0xfffull) == LAPIC_BASE,
          "IA32_APIC_BASE: the LAPIC is not at 0xfee00000");
}

static void check_boot_params(const uint8_t *bp)
{
    check(bp != NULL, "no boot_params (RSI is 0)");
    put("fake-kernel: boot_params at ");
    put_hex((uintptr_t)bp);
    put(": protocol ");
    put_hex(load16(bp + BP_VERSION));
    put(" loader ");
    put_hex(bp[BP_TYPE_OF_LOADER]);
    put(" loadflags ");
    put_hex(bp[BP_LOADFLAGS]);
    put("\n");
    check(load32(bp + BP_HEADER) == HDR_MAGIC && load16(bp + BP_BOOT_FLAG) == BOOT_FLAG,
          "boot_params: no \"HdrS\" setup header");
    check(load16(bp + BP_VERSION) >= PROTOCOL_64BIT &&
          (load16(bp + BP_XLOADFLAGS) & XLF_KERNEL_64),
          "boot_params: not our setup header (protocol, xloadflags)");
    check(bp[BP_TYPE_OF_LOADER] != 0, "boot_params: type_of_loader not set");
    check(bp[BP_LOADFLAGS] & LOADED_HIGH, "boot_params: loadflags without LOADED_HIGH");
    check(load32(bp + BP_CMD_LINE_PTR) != 0, "boot_params: no command line");
}

bool in_ram(const uint8_t *bp, uint64_t start, uint64_t len)
{
    const struct e820_entry *map = (const struct e820_entry *)(bp + BP_E820_TABLE);

    for (unsigned i = 0; i < bp[BP_E820_ENTRIES]; i++)
        if (map[i].type == E820_RAM && start >= map[i].addr &&
            start + len <= map[i].addr + map[i].size)
            return true;
    return false;
}

/* Returns the top of RAM. */
static uint64_t check_e820(const uint8_t *bp, uint64_t kernel_end)
{
    const struct e820_entry *map = (const struct e820_entry *)(bp + BP_E820_TABLE);
    unsigned n = bp[BP_E820_ENTRIES];
    uint64_t top = 0, end = 0;

    check(n > 0 && n <= BP_E820_MAX, "e820: no entries, or too many");
    for (unsigned i = 0; i < n; i++) {
        put("fake-kernel: e820 ");
        put_hex(map[i].addr);
        put("-");
        put_hex(map[i].addr + map[i].size);
        put(map[i].type == E820_RAM ? " ram\n" : " reserved\n");
        check(map[i].size != 0 && map[i].addr >= end,
              "e820: entries empty, unsorted or overlapping");
        end = map[i].addr + map[i].size;
        if (map[i].type == E820_RAM)
            top = end;
    }
    check(in_ram(bp, 0, 0x1000), "e820: no RAM at 0");
    check(in_ram(bp, KERNEL_ADDR, kernel_end - KERNEL_ADDR), "e820: this kernel is not in RAM");
    put("fake-kernel: RAM top ");
    put_hex(top);
    put("\n");
    return top;
}

/* Each virtio_mmio.device= on the command line must be disk i of the
 * machine, answering.  Returns the number of disks. */
static unsigned check_cmdline(const uint8_t *bp)
{
    static const char option[] = "virtio_mmio.device=";
    const char *cmdline = phys(load32(bp + BP_CMD_LINE_PTR));
    const char *s = cmdline;
    unsigned disks = 0;

    put("fake-kernel: cmdline '");
    put(cmdline);
    put("'\n");
    while ((s = find(s, option)) != NULL) {
        uint64_t want_addr = VIRTIO_MMIO_BASE + VIRTIO_MMIO_STRIDE * disks, addr, irq, capacity;

        check(disks < MAX_DISKS, "cmdline: more virtio_mmio.device= than the machine has disks");
        s += sizeof(option) - 1;
        check(starts_with(s, "4K@0x"), "cmdline: a virtio_mmio.device= not of 4K@0x...");
        s = parse_number(s + 5, 16, &addr);
        check(*s == ':', "cmdline: a virtio_mmio.device= without its IRQ");
        s = parse_number(s + 1, 10, &irq);
        check(addr == want_addr && irq == VIRTIO_MMIO_IRQ + disks,
              "cmdline: a virtio_mmio.device= not at the machine's place for that disk");
        check(mmio_read32(addr + VIRTIO_MAGIC) == VIRTIO_MAGIC_VALUE,
              "virtio-mmio: no magic \"virt\" (0x74726976) where the cmdline says");
        check(mmio_read32(addr + VIRTIO_VERSION) == 2, "virtio-mmio: not version 2");
        check(mmio_read32(addr + VIRTIO_DEVICE_ID) == VIRTIO_ID_BLOCK,
              "virtio-mmio: not a block device");
        capacity = mmio_read32(addr + VIRTIO_CONFIG) |
                   (uint64_t)mmio_read32(addr + VIRTIO_CONFIG + 4) << 32;
        put("fake-kernel: disk ");
        put_dec(disks);
        put(": virtio-mmio at ");
        put_hex(addr);
        put(" irq ");
        put_dec(irq);
        put(", magic ");
        put_hex(mmio_read32(addr + VIRTIO_MAGIC));
        put(", block device of ");
        put_dec(capacity * 512);
        put(" bytes\n");
        disks++;
    }
    if (disks == 0) {
        check(mmio_read32(VIRTIO_MMIO_BASE + VIRTIO_MAGIC) == 0,
              "virtio-mmio: a device at 0xd0000000 that the cmdline does not announce");
        put("fake-kernel: no disks\n");
    }
    return disks;
}

uint64_t fnv1a(const volatile uint8_t *p, uint64_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint64_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void check_initrd(const uint8_t *bp, uint64_t kernel_end)
{
    uint64_t addr = load32(bp + BP_RAMDISK_IMAGE), size = load32(bp + BP_RAMDISK_SIZE);

    if (size == 0) {
        put("fake-kernel: no initrd\n");
        return;
    }
    put("fake-kernel: initrd ");
    put_dec(size);
    put(" bytes at ");
    put_hex(addr);
    put(" fnv ");
    put_hex64(fnv1a(phys(addr), size));
    put("\n");
    check(!(addr & 0xfff), "initrd: not page-aligned");
    check(addr >= kernel_end, "initrd: overlaps this kernel");
    check(in_ram(bp, addr, size), "initrd: not in RAM");
}

/* After the initrd's checksum: it may end at the top of RAM. */
static void check_ram_top(uint64_t top)
{
    volatile uint64_t *last = phys(top - 8);
    uint64_t saved = *last;

    *last = 0x1122334455667788ull;
    check(*last == 0x1122334455667788ull, "the last qword of RAM does not keep what is written");
    *last = saved;
    put("fake-kernel: last RAM qword at ");
    put_hex(top - 8);
    put(" written and read back\n");
}

extern char _end[];                     /* kernel.ld: the end of the .bss */

/* head.S's call, with RSI as the loader left it and the flags before CLI. */
void kernel_main(const uint8_t *boot_params, uint64_t entry_rflags);

void kernel_main(const uint8_t *boot_params, uint64_t entry_rflags)
{
    uint64_t kernel_end = (uintptr_t)_end, ram_top;
    uint16_t irq_flags[ISA_IRQS];
    unsigned disks;

    check_long_mode(entry_rflags);
    check_boot_params(boot_params);
    ram_top = check_e820(boot_params, kernel_end);
    disks = check_cmdline(boot_params);
    check_initrd(boot_params, kernel_end);
    check_mptable(boot_params, disks, irq_flags);
    check_ram_top(ram_top);
    setup_interrupts();
    check_uart_interrupt();
    check_disk_interrupts(disks, irq_flags);
    wait_for_key();
    put("fake-kernel: done, halting with interrupts off\n");
}
