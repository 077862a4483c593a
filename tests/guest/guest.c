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
 *      then reads its first NSLOTS chunks again with every request in
 *      flight at once, and checks they brought the same bytes;
 *   3. writes PATTERN_BYTES of a pattern at PATTERN_OFFSET (the sector
 *      number and the text "vdisk-guest" in every sector), flushes, reads
 *      it back and checks it;
 *   4. loads code from the disk and runs it, twice at the same address with
 *      different code: what the second call runs must be what the second
 *      read brought (an emulator that cached the first translation fails);
 *      then, if the device offers them, WRITE_ZEROES over the first half of
 *      64 KiB of pattern at ZERO_OFFSET and DISCARD over the second, and
 *      reads the zeroes back;
 *   5. if the sector at SCRIPT_OFFSET starts with "VDGUEST1" and a step
 *      count N (u32, little-endian): prints "guest: waiting for a key",
 *      reads one byte from the console, then N times writes a 4 KiB block
 *      at STEPS_OFFSET (made of the step, the key and the blocks before),
 *      flushes and prints the step; then prints the checksum of the blocks
 *      read back.  A test checkpoints the VM while it waits or steps;
 *   6. prints "guest: done" and returns (start.S powers off).
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
#define CODE_OFFSET     (2u << 20)
#define ZERO_OFFSET     ((2u << 20) + (64u << 10))
#define ZERO_BYTES      (64u << 10)
#define SCRIPT_OFFSET   (3u << 20)
#define STEPS_OFFSET    (4u << 20)
#define STEP_BYTES      4096u
#define MAX_STEPS       4096u
#define QSIZE           16u
#define NSLOTS          4u      /* requests in flight at once: 3 descriptors each */
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
} hdrs[NSLOTS];
static volatile uint8_t statuses[NSLOTS];
static uint8_t buf[CHUNK] __attribute__((aligned(4096)));
static uint8_t pbuf[NSLOTS][CHUNK] __attribute__((aligned(4096)));
static uint8_t code[SECTOR] __attribute__((aligned(4096)));
static uint16_t last_used;
static uint32_t features;       /* the low 32 feature bits both sides took */

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
    wr(0x014, 0);
    /* FLUSH, and DISCARD and WRITE_ZEROES when offered (not read-only). */
    features = (1u << 9) | (rd(0x010) & ((1u << 13) | (1u << 14)));
    wr(0x024, 0);
    wr(0x020, features);
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

/* Puts a request in slot (descriptors 3*slot..3*slot+2): header, optional
 * data, status.  The device hears of it at the next blk_kick. */
static void blk_submit(unsigned slot, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    unsigned first = 3 * slot, n = first;

    hdrs[slot].type = type;
    hdrs[slot].reserved = 0;
    hdrs[slot].sector = sector;
    statuses[slot] = 0xff;
    descs[n] = (struct desc){ (uint32_t)(uintptr_t)&hdrs[slot], sizeof(hdrs[0]), 1,
                              (uint16_t)(n + 1) };
    n++;
    if (len) {
        descs[n] = (struct desc){ (uint32_t)(uintptr_t)data, len,
                                  (uint16_t)(1 | (type == 0 ? 2 : 0)), (uint16_t)(n + 1) };
        n++;
    }
    descs[n] = (struct desc){ (uint32_t)(uintptr_t)&statuses[slot], 1, 2, 0 };
    avail.ring[avail.idx % QSIZE] = (uint16_t)first;
    barrier();
    avail.idx++;
    barrier();
}

static void blk_kick(void)
{
    wr(0x050, 0);                                   /* QueueNotify */
}

/* Waits until the device used n more requests (in whatever order), then
 * checks the statuses of slots 0..n-1. */
static int blk_wait(unsigned n)
{
    while ((uint16_t)(*(volatile uint16_t *)&used.idx - last_used) < n)
        ;
    last_used = (uint16_t)(last_used + n);
    barrier();
    wr(0x064, rd(0x060));                           /* ack the interrupt */
    for (unsigned i = 0; i < n; i++)
        if (statuses[i] != 0)
            return -1;
    return 0;
}

/* One request, waited for. */
static int blk_request(uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    blk_submit(0, type, sector, data, len);
    blk_kick();
    return blk_wait(1);
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

/* Writes a routine that returns value (mov $value, %eax; ret) to the
 * disk, reads it into code[] and calls it. */
static int run_code_from_disk(uint32_t value, uint32_t *got)
{
    for (uint32_t i = 0; i < SECTOR; i++)
        buf[i] = 0xcc;                              /* int3 */
    buf[0] = 0xb8;
    buf[1] = (uint8_t)value;
    buf[2] = (uint8_t)(value >> 8);
    buf[3] = (uint8_t)(value >> 16);
    buf[4] = (uint8_t)(value >> 24);
    buf[5] = 0xc3;
    if (blk_request(1, CODE_OFFSET / SECTOR, buf, SECTOR) < 0 ||
        blk_request(0, CODE_OFFSET / SECTOR, code, SECTOR) < 0)
        return -1;
    *got = ((uint32_t (*)(void))(uintptr_t)code)();
    return 0;
}

static uint8_t getc_(void)
{
    while (!(inb(COM1 + 5) & 0x01))
        ;
    return inb(COM1);
}

/* WRITE_ZEROES (with unmap) over the first half of a pattern, DISCARD over
 * the second; the first half must read back as zeroes. */
static int zeroes(void)
{
    static struct {
        uint64_t sector;
        uint32_t num_sectors, flags;
    } range __attribute__((aligned(16)));

    if ((features & ((1u << 13) | (1u << 14))) != ((1u << 13) | (1u << 14))) {
        puts_("guest: no WRITE_ZEROES or DISCARD offered\n");
        return 0;
    }
    fill(buf, ZERO_BYTES, ZERO_OFFSET / SECTOR);
    if (blk_request(1, ZERO_OFFSET / SECTOR, buf, ZERO_BYTES) < 0)
        return fail("write before write-zeroes");
    range.sector = ZERO_OFFSET / SECTOR;
    range.num_sectors = ZERO_BYTES / 2 / SECTOR;
    range.flags = 1;                                /* may unmap */
    if (blk_request(13, 0, &range, sizeof(range)) < 0)
        return fail("write-zeroes");
    range.sector = (ZERO_OFFSET + ZERO_BYTES / 2) / SECTOR;
    range.flags = 0;
    if (blk_request(11, 0, &range, sizeof(range)) < 0)
        return fail("discard");
    if (blk_request(0, ZERO_OFFSET / SECTOR, buf, ZERO_BYTES / 2) < 0)
        return fail("read after write-zeroes");
    for (uint32_t i = 0; i < ZERO_BYTES / 2; i++)
        if (buf[i] != 0)
            return fail("write-zeroes left data");
    puts_("guest: wrote zeroes and discarded, read the zeroes back\n");
    return 0;
}

/* Step 5: the scripted writes, if the disk asks for them. */
static int steps(uint64_t capacity)
{
    uint64_t h = 0xcbf29ce484222325ull;
    uint32_t n;
    uint8_t key;

    if (blk_request(0, SCRIPT_OFFSET / SECTOR, buf, SECTOR) < 0)
        return fail("read the script sector");
    if (buf[0] != 'V' || buf[1] != 'D' || buf[2] != 'G' || buf[3] != 'U' || buf[4] != 'E' ||
        buf[5] != 'S' || buf[6] != 'T' || buf[7] != '1')
        return 0;
    n = (uint32_t)buf[8] | (uint32_t)buf[9] << 8 | (uint32_t)buf[10] << 16 |
        (uint32_t)buf[11] << 24;
    if (n > MAX_STEPS || capacity * SECTOR < STEPS_OFFSET + (uint64_t)n * STEP_BYTES)
        return fail("bad step count");
    puts_("guest: waiting for a key\n");
    key = getc_();
    puts_("guest: key ");
    puthex(key, 2);
    puts_("\n");
    for (uint32_t i = 0; i < n; i++) {
        /* Each block depends on the ones before: replaying from the middle
         * gives the same blocks only if the state came back whole. */
        for (uint32_t k = 0; k < STEP_BYTES; k++)
            buf[k] = (uint8_t)((h >> (8 * (k % 8))) ^ key ^ k ^ i);
        h = fnv1a(h, buf, STEP_BYTES);
        if (blk_request(1, (STEPS_OFFSET + i * STEP_BYTES) / SECTOR, buf, STEP_BYTES) < 0)
            return fail("write");
        if (blk_request(4, 0, NULL, 0) < 0)
            return fail("flush");
        puts_("guest: step ");
        putdec(i);
        puts_(" ");
        puthex(h, 16);
        puts_("\n");
    }
    h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < n; i++) {
        if (blk_request(0, (STEPS_OFFSET + i * STEP_BYTES) / SECTOR, buf, STEP_BYTES) < 0)
            return fail("read the steps back");
        h = fnv1a(h, buf, STEP_BYTES);
    }
    puts_("guest: steps checksum ");
    puthex(h, 16);
    puts_("\n");
    return 0;
}

int main(void)
{
    uint32_t got;
    uint64_t capacity = 0, bytes, h = 0xcbf29ce484222325ull, h_first = 0;

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
        if (off + n == NSLOTS * CHUNK)
            h_first = h;
    }
    puts_("guest: checksum 0+");
    putdec(bytes);
    puts_(" ");
    puthex(h, 16);
    puts_("\n");

    /* The same first chunks again, all in flight at once: whatever order
     * they complete in, each lands where it should. */
    if (bytes >= NSLOTS * CHUNK) {
        uint64_t hp = 0xcbf29ce484222325ull;

        for (unsigned i = 0; i < NSLOTS; i++)
            blk_submit(i, 0, i * (CHUNK / SECTOR), pbuf[i], CHUNK);
        blk_kick();
        if (blk_wait(NSLOTS) < 0)
            return fail("reads in flight together");
        for (unsigned i = 0; i < NSLOTS; i++)
            hp = fnv1a(hp, pbuf[i], CHUNK);
        if (hp != h_first)
            return fail("reads in flight together brought other bytes");
        puts_("guest: ");
        putdec(NSLOTS);
        puts_(" reads in flight at once read the same bytes\n");
    }

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

    if (run_code_from_disk(0x11111111, &got) < 0 || got != 0x11111111)
        return fail("code from the disk (first load)");
    if (run_code_from_disk(0x22222222, &got) < 0 || got != 0x22222222)
        return fail("code from the disk (second load ran the first's code)");
    puts_("guest: ran code loaded from the disk, twice\n");
    if (zeroes() < 0)
        return 1;

    if (steps(capacity) < 0)
        return 1;
    puts_("guest: done\n");
    return 0;
}
