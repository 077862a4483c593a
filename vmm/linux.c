/*
 * linux.c - loading a Linux bzImage by the x86 boot protocol
 * (Documentation/arch/x86/boot.rst), entered at its 64-bit entry point.
 *
 * A bzImage is a real-mode setup part, (setup_sects + 1) sectors of 512
 * bytes whose sector 0 holds the setup header at 0x1f1, then the
 * protected-mode kernel.  We run no real-mode code: the 64-bit boot
 * protocol (boot.rst, "64-bit Boot Protocol", kernels of protocol 2.12 and
 * later with XLF_KERNEL_64) enters the protected-mode kernel at its load
 * address + 0x200, in long mode, with the setup header copied into a
 * zeroed boot_params ("the zero page") whose address is in RSI.
 *
 * Guest physical layout while the kernel starts (it leaves all of this
 * behind once it has read it):
 *   0x00400   the BIOS data area: where the EBDA is, base memory size
 *   0x00500   the GDT (loader.c: vmm_write_gdt)
 *   0x07000   boot_params, 4 KiB
 *   0x08000   a stack, up to 0x9000
 *   0x09000   page tables: PML4, PDPT, 4 page directories (2 MiB pages)
 *             identity-mapping the first 4 GiB, up to 0xf000
 *   0x20000   the command line, at most 64 KiB
 *   0x9fc00   the EBDA (reserved in e820, empty)
 *   0xf0000   the MP table (mptable.c; reserved in e820)
 *   0x100000  the protected-mode kernel
 *   high      the initrd, page-aligned, as high as RAM and initrd_addr_max
 *             allow, above all that the kernel needs to start
 *
 * The file is not trusted: every size and offset read from it is checked
 * before use, and every write to guest RAM goes through vmm_mem_ptr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader.h"
#include "mptable.h"

/* The setup header's fields we read or write, as offsets into sector 0
 * of the file and into boot_params alike (boot.rst, "The Real-Mode Kernel
 * Header"; arch/x86/include/uapi/asm/bootparam.h). */
#define HDR_START           0x1f1   /* u8  setup_sects */
#define HDR_BOOT_FLAG       0x1fe   /* u16 0xaa55 */
#define HDR_JUMP            0x200   /* u16 jmp short: header end = 0x202 + byte 0x201 */
#define HDR_MAGIC           0x202   /* u32 "HdrS" */
#define HDR_VERSION         0x206   /* u16 protocol version */
#define HDR_TYPE_OF_LOADER  0x210   /* u8 */
#define HDR_LOADFLAGS       0x211   /* u8 */
#define HDR_RAMDISK_IMAGE   0x218   /* u32 */
#define HDR_RAMDISK_SIZE    0x21c   /* u32 */
#define HDR_HEAP_END_PTR    0x224   /* u16 */
#define HDR_CMD_LINE_PTR    0x228   /* u32 (2.02) */
#define HDR_INITRD_ADDR_MAX 0x22c   /* u32 (2.03) */
#define HDR_KERNEL_ALIGN    0x230   /* u32 (2.05) */
#define HDR_RELOCATABLE     0x234   /* u8  (2.05) */
#define HDR_XLOADFLAGS      0x236   /* u16 (2.12) */
#define HDR_CMDLINE_SIZE    0x238   /* u32 (2.06) */
#define HDR_SUBARCH         0x23c   /* u32 (2.07) */
#define HDR_SETUP_DATA      0x250   /* u64 (2.09) */
#define HDR_PREF_ADDRESS    0x258   /* u64 (2.10) */
#define HDR_INIT_SIZE       0x260   /* u32 (2.10) */
#define HDR_END_MIN         0x264   /* the fields above, all there */
#define HDR_END_MAX         0x290   /* where boot_params' next field starts */

#define HDR_MAGIC_VALUE     0x53726448u     /* "HdrS" */
#define BOOT_FLAG_VALUE     0xaa55u
#define PROTOCOL_64BIT      0x020cu         /* 2.12: xloadflags, XLF_KERNEL_64 */
#define LOADED_HIGH         0x01u           /* loadflags: a bzImage */
#define CAN_USE_HEAP        0x80u
#define XLF_KERNEL_64       0x0001u
#define LOADER_UNDEFINED    0xffu

/* boot_params outside the setup header. */
#define BP_SIZE             4096u
#define BP_E820_ENTRIES     0x1e8   /* u8 */
#define BP_E820_TABLE       0x2d0   /* 20-byte entries: addr u64, size u64, type u32 */
#define BP_E820_MAX         128u
#define E820_RAM            1u
#define E820_RESERVED       2u

/* The guest's layout (above). */
#define BDA_EBDA_SEG        0x40e   /* u16: the EBDA's segment */
#define BDA_BASE_MEM_KB     0x413   /* u16: KiB of memory below the EBDA */
#define BOOT_PARAMS_ADDR    0x7000u
#define BOOT_STACK_TOP      0x9000u
#define PT_ADDR             0x9000u /* PML4; PDPT at +0x1000; PDs at +0x2000.. */
#define PT_PDS              4u      /* 4 x 1 GiB */
#define CMDLINE_ADDR        0x20000u
#define CMDLINE_MAX         0x10000u
#define EBDA_ADDR           0x9fc00u
#define LOW_RAM_END         0xa0000u
#define KERNEL_ADDR         0x100000u
#define ENTRY_64_OFFSET     0x200u
#define SETUP_MAX           (256u * 512u)   /* setup_sects is a u8 */
#define GDT_LIMIT           (4u * 8u - 1u)  /* vmm_write_gdt's four entries */

#define X86_CR4_PAE         (1u << 5)
#define EFER_LME            (1u << 8)
#define EFER_LMA            (1u << 10)
#define PTE_P               0x1u
#define PTE_RW              0x2u
#define PTE_PS              0x80u           /* in a PD: a 2 MiB page */

static int read_at(int fd, const char *path, void *dst, size_t len, off_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)dst + done, len - done, off + (off_t)done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;

            fprintf(stderr, "vdisk-vmm: %s: read: %s\n", path,
                    n < 0 ? strerror(err) : "file shrank");
            return -err;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Opens a regular file and gives its size. */
static int open_file(const char *path, uint64_t *size)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        int err = errno;

        fprintf(stderr, "vdisk-vmm: %s: %s\n", path, strerror(err));
        return -err;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "vdisk-vmm: %s: not a regular file\n", path);
        close(fd);
        return -EINVAL;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

/* What the loader takes from the kernel's setup header, checked. */
struct kernel_info {
    uint64_t setup_size;        /* bytes of real-mode code before the kernel */
    uint64_t kernel_size;       /* the protected-mode kernel's */
    uint64_t hdr_end;           /* the setup header is [0x1f1, hdr_end) */
    uint64_t end;               /* the kernel needs RAM below this to start */
    uint64_t initrd_max;        /* the initrd must end at or below this */
    uint32_t cmdline_size;      /* longest command line, less the NUL */
};

static int bad_kernel(const char *path, const char *why)
{
    fprintf(stderr, "vdisk-vmm: %s: %s\n", path, why);
    return -EINVAL;
}

static int check_kernel(const char *path, const uint8_t *s, uint64_t file_size,
                        uint64_t mem_size, struct kernel_info *k)
{
    uint16_t version = vq_le16(s + HDR_VERSION);
    uint64_t align, run_addr, init_size, pref;
    unsigned sects;

    if (file_size < 1024 || vq_le32(s + HDR_MAGIC) != HDR_MAGIC_VALUE ||
        vq_le16(s + HDR_BOOT_FLAG) != BOOT_FLAG_VALUE)
        return bad_kernel(path, "not a Linux kernel (bzImage): no \"HdrS\" setup header");
    if (version < PROTOCOL_64BIT) {
        fprintf(stderr, "vdisk-vmm: %s: boot protocol %u.%02u, older than 2.12: no 64-bit "
                "entry point (Linux 3.8 or later has it)\n", path, version >> 8,
                version & 0xff);
        return -EINVAL;
    }
    if (!(vq_le16(s + HDR_XLOADFLAGS) & XLF_KERNEL_64))
        return bad_kernel(path, "not a 64-bit kernel (no XLF_KERNEL_64): vdisk-vmm boots "
                          "x86-64 kernels only");
    if (!(s[HDR_LOADFLAGS] & LOADED_HIGH))
        return bad_kernel(path, "a zImage (loaded low): vdisk-vmm boots bzImages only");

    /* boot.rst: "If this field is 0, the real value is 4." */
    sects = s[HDR_START] ? s[HDR_START] : 4;
    k->setup_size = (uint64_t)(sects + 1) * 512;
    k->hdr_end = 0x202 + (uint64_t)s[HDR_JUMP + 1];
    if (k->hdr_end < HDR_END_MIN || k->hdr_end > HDR_END_MAX)
        return bad_kernel(path, "malformed setup header (its length is out of range)");
    if (k->setup_size >= file_size)
        return bad_kernel(path, "truncated: no protected-mode kernel after the setup code");
    k->kernel_size = file_size - k->setup_size;

    /* Where the kernel decompresses itself: at pref_address, or, when
     * relocatable, at the load address rounded up to kernel_alignment if
     * that is higher (arch/x86/boot/compressed/head_64.S); it needs
     * init_size bytes there (boot.rst, init_size). */
    pref = vq_le64(s + HDR_PREF_ADDRESS);
    init_size = vq_le32(s + HDR_INIT_SIZE);
    align = vq_le32(s + HDR_KERNEL_ALIGN);
    run_addr = pref;
    if (s[HDR_RELOCATABLE]) {
        if (align == 0 || (align & (align - 1)) || align > (1ull << 30))
            return bad_kernel(path, "malformed setup header (kernel_alignment)");
        if (((KERNEL_ADDR + align - 1) & ~(align - 1)) > run_addr)
            run_addr = (KERNEL_ADDR + align - 1) & ~(align - 1);
    }
    if (pref > VM_MAX_MEM || init_size == 0)
        return bad_kernel(path, "malformed setup header (pref_address, init_size)");
    k->end = run_addr + init_size;
    if (k->end < KERNEL_ADDR + k->kernel_size)
        k->end = KERNEL_ADDR + k->kernel_size;
    if (k->end > mem_size) {
        fprintf(stderr, "vdisk-vmm: %s: the kernel needs %llu MiB of RAM to start, the "
                "machine has %llu MiB (--mem)\n", path,
                (unsigned long long)((k->end + (1 << 20) - 1) >> 20),
                (unsigned long long)(mem_size >> 20));
        return -EINVAL;
    }
    k->initrd_max = (uint64_t)vq_le32(s + HDR_INITRD_ADDR_MAX) + 1;
    k->cmdline_size = vq_le32(s + HDR_CMDLINE_SIZE);
    return 0;
}

/* The command line: the user's, then one virtio_mmio.device= per disk
 * (drivers/virtio/virtio_mmio.c, "[<size>@]<base>:<irq>[:<id>]").
 * Written at CMDLINE_ADDR; low is guest RAM below the kernel. */
static int write_cmdline(struct vm *vm, uint8_t *low, const char *user,
                         const struct kernel_info *k)
{
    uint64_t max = k->cmdline_size < CMDLINE_MAX - 1 ? k->cmdline_size : CMDLINE_MAX - 1;
    size_t len = strlen(user ? user : "");
    char *dst;
    int n;

    if (len > max)
        goto too_long;
    dst = (char *)low + CMDLINE_ADDR;
    memcpy(dst, user ? user : "", len);
    for (unsigned i = 0; i < vm->ndisks; i++) {
        n = snprintf(dst + len, max + 1 - len, "%svirtio_mmio.device=4K@0x%llx:%u",
                     len ? " " : "",
                     (unsigned long long)(VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE),
                     vm->disks[i].irq);
        if (n < 0 || (uint64_t)n > max - len)
            goto too_long;
        len += (size_t)n;
    }
    dst[len] = 0;
    return 0;
too_long:
    if (vm->ndisks)
        fprintf(stderr, "vdisk-vmm: the kernel command line, with a virtio_mmio.device= for "
                "each of %u disks, is longer than the %llu bytes the kernel takes\n",
                vm->ndisks, (unsigned long long)max);
    else
        fprintf(stderr, "vdisk-vmm: the kernel command line is longer than the %llu bytes "
                "the kernel takes\n", (unsigned long long)max);
    return -E2BIG;
}

/* Puts the initrd as high as it may go; fills ramdisk_image/size in bp. */
static int load_initrd(struct vm *vm, const char *path, const struct kernel_info *k,
                       uint8_t *bp)
{
    uint64_t size, top, addr;
    uint8_t *dst;
    int fd, err;

    fd = open_file(path, &size);
    if (fd < 0)
        return fd;
    top = k->initrd_max < vm->mem.size ? k->initrd_max : vm->mem.size;
    addr = size <= top ? (top - size) & ~0xfffull : 0;
    if (size == 0 || size > top || addr < ((k->end + 0xfff) & ~0xfffull)) {
        fprintf(stderr, "vdisk-vmm: %s: %s (%llu bytes; below 0x%llx, above the kernel's "
                "0x%llx)\n", path, size ? "does not fit in guest RAM" : "is empty",
                (unsigned long long)size, (unsigned long long)top,
                (unsigned long long)k->end);
        close(fd);
        return size ? -ENOMEM : -EINVAL;
    }
    dst = vmm_mem_ptr(&vm->mem, addr, size);
    err = dst ? read_at(fd, path, dst, size, 0) : -EINVAL;
    close(fd);
    if (err)
        return err;
    vq_put32(bp + HDR_RAMDISK_IMAGE, (uint32_t)addr);
    vq_put32(bp + HDR_RAMDISK_SIZE, (uint32_t)size);
    return 0;
}

static void e820_add(uint8_t *bp, uint64_t start, uint64_t end, uint32_t type)
{
    uint8_t n = bp[BP_E820_ENTRIES];
    uint8_t *e = bp + BP_E820_TABLE + 20 * n;

    vq_put64(e, start);
    vq_put64(e + 8, end - start);
    vq_put32(e + 16, type);
    bp[BP_E820_ENTRIES] = (uint8_t)(n + 1);
}

/* At PT_ADDR in low (guest RAM below the kernel): an identity map of
 * [0, 4 GiB) in 2 MiB pages, which the 64-bit entry asks for the kernel,
 * boot_params and the command line.  The kernel builds its own tables
 * before it goes anywhere else. */
_Static_assert(PT_ADDR >= BOOT_STACK_TOP && PT_ADDR + (2 + PT_PDS) * 0x1000 <= CMDLINE_ADDR,
               "the page tables overlap the stack or the command line");
static void write_page_tables(uint8_t *low)
{
    uint8_t *pt = low + PT_ADDR;

    memset(pt, 0, (2 + PT_PDS) * 0x1000);
    vq_put64(pt, (PT_ADDR + 0x1000) | PTE_P | PTE_RW);                 /* PML4[0] */
    for (unsigned i = 0; i < PT_PDS; i++) {
        uint64_t pd = PT_ADDR + 0x2000 + 0x1000ull * i;

        vq_put64(pt + 0x1000 + 8 * i, pd | PTE_P | PTE_RW);            /* PDPT[i] */
        for (unsigned j = 0; j < 512; j++)
            vq_put64(pt + (pd - PT_ADDR) + 8 * j,
                     ((uint64_t)i << 30 | (uint64_t)j << 21) | PTE_P | PTE_RW | PTE_PS);
    }
}

static void entry_state(struct vmm_cpu_state *s)
{
    struct vmm_segment data = vmm_flat_segment(VM_SEL_DATA, false, true);

    memset(s, 0, sizeof(*s));
    s->rip = KERNEL_ADDR + ENTRY_64_OFFSET;
    s->rflags = 0x2;                    /* interrupts off (boot.rst) */
    s->gpr[R_SI] = BOOT_PARAMS_ADDR;
    s->gpr[R_SP] = BOOT_STACK_TOP;
    s->cs = vmm_flat_segment(VM_SEL_CODE, true, true);
    s->ds = s->es = s->fs = s->gs = s->ss = data;
    /* A 64-bit busy TSS and an LDT that are there but empty. */
    s->tr = (struct vmm_segment){ .limit = 0xffff, .type = 0xb, .present = 1 };
    s->ldt = (struct vmm_segment){ .limit = 0xffff, .type = 0x2, .present = 1 };
    s->gdt.base = VM_GDT_ADDR;
    s->gdt.limit = GDT_LIMIT;
    s->cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    s->cr3 = PT_ADDR;
    s->cr4 = X86_CR4_PAE;
    s->efer = EFER_LME | EFER_LMA;
}

int vmm_load_linux(struct vm *vm, const char *kernel, const char *initrd, const char *cmdline,
                   struct vmm_cpu_state *s)
{
    uint8_t *setup = NULL, *bp = NULL, *low, *dst;
    struct kernel_info k = { 0 };
    uint64_t file_size;
    int fd, err;

    /* Everything below the kernel is written here. */
    low = vmm_mem_ptr(&vm->mem, 0, KERNEL_ADDR);
    if (!low) {
        fprintf(stderr, "vdisk-vmm: a Linux kernel needs more than 1 MiB of RAM\n");
        return -EINVAL;
    }
    fd = open_file(kernel, &file_size);
    if (fd < 0)
        return fd;
    setup = calloc(1, SETUP_MAX);
    bp = calloc(1, BP_SIZE);
    if (!setup || !bp) {
        err = -ENOMEM;
        goto out;
    }
    err = read_at(fd, kernel, setup, file_size < SETUP_MAX ? file_size : SETUP_MAX, 0);
    if (!err)
        err = check_kernel(kernel, setup, file_size, vm->mem.size, &k);
    if (err)
        goto out;

    dst = vmm_mem_ptr(&vm->mem, KERNEL_ADDR, k.kernel_size);
    err = dst ? read_at(fd, kernel, dst, k.kernel_size, (off_t)k.setup_size) : -EINVAL;
    if (err)
        goto out;

    /* boot.rst: the setup header into a zeroed boot_params, then what a
     * boot loader fills in.  setup_data is cleared: we pass none, and a
     * pointer from the file would send the kernel where we wrote nothing. */
    memcpy(bp + HDR_START, setup + HDR_START, k.hdr_end - HDR_START);
    bp[HDR_TYPE_OF_LOADER] = LOADER_UNDEFINED;
    bp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
    vq_put16(bp + HDR_HEAP_END_PTR, 0xe000 - 0x200);
    vq_put32(bp + HDR_CMD_LINE_PTR, CMDLINE_ADDR);
    vq_put32(bp + HDR_RAMDISK_IMAGE, 0);
    vq_put32(bp + HDR_RAMDISK_SIZE, 0);
    vq_put32(bp + HDR_SUBARCH, 0);              /* a PC */
    vq_put64(bp + HDR_SETUP_DATA, 0);
    e820_add(bp, 0, EBDA_ADDR, E820_RAM);
    e820_add(bp, EBDA_ADDR, LOW_RAM_END, E820_RESERVED);
    e820_add(bp, MPTABLE_START, MPTABLE_END, E820_RESERVED);
    e820_add(bp, KERNEL_ADDR, vm->mem.size, E820_RAM);

    err = write_cmdline(vm, low, cmdline, &k);
    if (!err && initrd)
        err = load_initrd(vm, initrd, &k, bp);
    if (!err)
        err = vmm_write_mptable(vm);
    if (err)
        goto out;
    write_page_tables(low);
    memcpy(low + BOOT_PARAMS_ADDR, bp, BP_SIZE);
    /* Where a BIOS would say the EBDA starts, for Linux's reservation of
     * the BIOS regions. */
    vq_put16(low + BDA_EBDA_SEG, EBDA_ADDR >> 4);
    vq_put16(low + BDA_BASE_MEM_KB, EBDA_ADDR >> 10);
    vmm_write_gdt(vm, true);
    entry_state(s);
out:
    free(setup);
    free(bp);
    close(fd);
    return err;
}
