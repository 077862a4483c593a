/*
 * guest.c - the test guest: a freestanding 32-bit x86 program that runs
 * under vdisk-vmm (either accelerator) and checks the machine it finds.
 *
 * It writes to the 8250 console at COM1 (polling LSR), finds the
 * virtio-blk device at 0xd0000000 (virtio-mmio version 2), and then:
 *   1. prints the disk's size;
 *   2. reads the first CHECK_BYTES of the disk (or the whole disk if it is
 *      smaller) and prints their FNV-1a 64 checksum, which a test compares
 *      with the same checksum of what nbdcopy reads;
 *   3. writes PATTERN_BYTES of a pattern at PATTERN_OFFSET (the sector
 *      number and the text "vdisk-guest" in every sector), flushes, reads
 *      it back and checks it;
 *   4. prints "guest: done" and returns (start.S powers off).
 * Any failure prints "guest: FAILED ..." and returns at once.  The driver
 * polls the used ring: no interrupts are needed.
 */
#include <stddef.h>
#include <stdint.h>

#define COM1            0x3f8
#define MMIO            0xd0000000u
#define SECTOR          512u
#define CHECK_BYTES     (1u << 20)
#define PATTERN_OFFSET  (1u << 20)
#define PATTERN_BYTES   (32u << 10)
#define QSIZE           8u
#define CHUNK           (64u << 10)

/* ---- port and MMIO access ---- */

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;

    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t rd(uint32_t off)
{
    return *(volatile uint32_t *)(uintptr_t)(MMIO + off);
}

static inline void wr(uint32_t off, uint32_t v)
{
    *(volatile uint32_t *)(uintptr_t)(MMIO + off) = v;
}

static inline void barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

/* ---- the console ---- */

static void putc_(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

static void puts_(const char *s)
{
    while (*s)
        putc_(*s++);
}

static void puthex(uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        putc_("0123456789abcdef"[(v >> (4 * i)) & 15]);
}

static void putdec(uint64_t v)
{
    char buf[24];
    int n = 0;

    do
        buf[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        putc_(buf[--n]);
}

/* ---- virtio-blk over virtio-mmio ---- */

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct {
    uint16_t flags, idx, ring[QSIZE], used_event;
} avail __attribute__((aligned(2)));
static struct {
    uint16_t flags, idx;
    struct { uint32_t id, len; } ring[QSIZE];
    uint16_t avail_event;
} used __attribute__((aligned(4)));

static struct {
    uint32_t type, reserved;
    uint64_t sector;
} hdr;
static volatile uint8_t status;
static uint8_t buf[CHUNK] __attribute__((aligned(4096)));
static uint16_t last_used;

static int fail(const char *what)
{
    puts_("guest: FAILED ");
    puts_(what);
    puts_("\n");
    return -1;
}

static int blk_init(uint64_t *capacity)
{
    uint32_t st;

    if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 2)
        return fail("no virtio-blk (version 2) at 0xd0000000");
    wr(0x070, 0);                                   /* reset */
    wr(0x070, 1);                                   /* ACKNOWLEDGE */
    wr(0x070, 1 | 2);                               /* DRIVER */
    wr(0x014, 1);
    if (!(rd(0x010) & 1))                           /* VERSION_1 (bit 32) */
        return fail("the device does not offer VERSION_1");
    wr(0x024, 0);
    wr(0x020, 1u << 9);                             /* FLUSH */
    wr(0x024, 1);
    wr(0x020, 1);                                   /* VERSION_1 */
    wr(0x070, 1 | 2 | 8);                           /* FEATURES_OK */
    if (!(rd(0x070) & 8))
        return fail("features refused");
    wr(0x030, 0);
    if (rd(0x034) < QSIZE)
        return fail("queue too small");
    wr(0x038, QSIZE);
    wr(0x080, (uint32_t)(uintptr_t)descs);
    wr(0x084, 0);
    wr(0x090, (uint32_t)(uintptr_t)&avail);
    wr(0x094, 0);
    wr(0x0a0, (uint32_t)(uintptr_t)&used);
    wr(0x0a4, 0);
    wr(0x044, 1);
    if (rd(0x044) != 1)
        return fail("queue not ready");
    wr(0x070, 1 | 2 | 8 | 4);                       /* DRIVER_OK */
    st = rd(0x070);
    if (st & 0xc0)
        return fail("device failed");
    *capacity = (uint64_t)rd(0x100) | (uint64_t)rd(0x104) << 32;
    return 0;
}

/* One request: header, optional data, status; waits for it. */
static int blk_request(uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    unsigned n = 0;

    hdr.type = type;
    hdr.reserved = 0;
    hdr.sector = sector;
    status = 0xff;
    descs[n] = (struct desc){ (uint32_t)(uintptr_t)&hdr, sizeof(hdr), 1, 1 };
    n++;
    if (len) {
        descs[n] = (struct desc){ (uint32_t)(uintptr_t)data, len,
                                  (uint16_t)(1 | (type == 0 ? 2 : 0)), 2 };
        n++;
    }
    descs[n] = (struct desc){ (uint32_t)(uintptr_t)&status, 1, 2, 0 };
    descs[n - 1].next = (uint16_t)n;
    avail.ring[avail.idx % QSIZE] = 0;
    barrier();
    avail.idx++;
    barrier();
    wr(0x050, 0);                                   /* QueueNotify */
    while (*(volatile uint16_t *)&used.idx == last_used)
        ;
    last_used++;
    barrier();
    wr(0x064, rd(0x060));                           /* ack the interrupt */
    return status == 0 ? 0 : -1;
}

/* ---- the test ---- */

static uint64_t fnv1a(uint64_t h, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Byte o of sector's pattern: the sector number (8 bytes, little-endian),
 * then "vdisk-guest" over and over. */
static uint8_t pattern_at(uint64_t sector, uint32_t o)
{
    static const char text[] = "vdisk-guest";

    return o < 8 ? (uint8_t)(sector >> (8 * o)) : (uint8_t)text[o % (sizeof(text) - 1)];
}

static void fill(uint8_t *p, uint32_t len, uint64_t first_sector)
{
    for (uint32_t i = 0; i < len; i++)
        p[i] = pattern_at(first_sector + i / SECTOR, i % SECTOR);
}

int main(void)
{
    uint64_t capacity = 0, bytes, h = 0xcbf29ce484222325ull;

    puts_("guest: hello\n");
    if (blk_init(&capacity) < 0)
        return 1;
    puts_("guest: disk ");
    putdec(capacity * SECTOR);
    puts_(" bytes\n");

    bytes = capacity * SECTOR < CHECK_BYTES ? capacity * SECTOR : CHECK_BYTES;
    for (uint64_t off = 0; off < bytes; off += CHUNK) {
        uint32_t n = bytes - off < CHUNK ? (uint32_t)(bytes - off) : CHUNK;

        if (blk_request(0, off / SECTOR, buf, n) < 0)
            return fail("read");
        h = fnv1a(h, buf, n);
    }
    puts_("guest: checksum 0+");
    putdec(bytes);
    puts_(" ");
    puthex(h, 16);
    puts_("\n");

    if (capacity * SECTOR < PATTERN_OFFSET + PATTERN_BYTES)
        return fail("disk too small for the pattern");
    fill(buf, PATTERN_BYTES, PATTERN_OFFSET / SECTOR);
    if (blk_request(1, PATTERN_OFFSET / SECTOR, buf, PATTERN_BYTES) < 0)
        return fail("write");
    if (blk_request(4, 0, NULL, 0) < 0)
        return fail("flush");
    for (uint32_t i = 0; i < PATTERN_BYTES; i++)
        buf[i] = 0;
    if (blk_request(0, PATTERN_OFFSET / SECTOR, buf, PATTERN_BYTES) < 0)
        return fail("read back");
    for (uint32_t i = 0; i < PATTERN_BYTES; i++)
        if (buf[i] != pattern_at(PATTERN_OFFSET / SECTOR + i / SECTOR, i % SECTOR))
            return fail("pattern read back differs");
    puts_("guest: wrote ");
    putdec(PATTERN_BYTES);
    puts_(" bytes at ");
    putdec(PATTERN_OFFSET);
    puts_(", flushed, read back\n");
    puts_("guest: done\n");
    return 0;
}
