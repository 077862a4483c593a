/*
 * main.c - vdisk-vmm: options, the machine's assembly, and the main loop.
 *
 * The main loop owns the NBD sockets (libnbd's handles are driven here),
 * the console's input, the control socket and signals.  The vCPUs run on
 * threads of their own (vm.c).  Exit status: 0 when the guest powered off
 * (or reset, or was told to quit), 1 on an error or a guest fault (with
 * the registers printed), 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "control.h"
#include "loader.h"
#include "nbd-disk.h"
#include "vm.h"

#define VERSION_STRING     "vdisk-vmm 0.1.0"
#define DEFAULT_MEM        (512ull << 20)
#define DEFAULT_RECONNECT  10000u        /* ms */
#define POKE_MS            500
#define DRAIN_MS           30000
#define MAX_POLL           (2 + 1 + VM_MAX_DISKS + 1 + VCTL_MAX_CLIENTS)

struct options {
    const char *accel;
    uint64_t mem;
    unsigned cpus;
    const char *kernel, *initrd, *cmdline;
    const char *guest;
    uint64_t load;
    bool load_set;
    const char *disks[VM_MAX_DISKS];
    unsigned ndisks;
    unsigned reconnect_ms;
    const char *control;
    const char *store;
    const char *vdiskd_control;
    const char *restore;
};

struct vmm {
    struct vm vm;
    struct ndisk *disks[VM_MAX_DISKS];
    struct ckpt_machine machine;
    struct ckpt_where where;
    char store[4096], vdiskd_socket[4200];
    struct vctl *ctl;
    int sig_fd;
    bool stdin_open;
    bool tty;
    struct termios saved_tty;
};

static struct vmm V;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: vdisk-vmm [OPTIONS] --kernel BZIMAGE [--initrd FILE] [--cmdline STR] [--disk URI]...\n"
        "       vdisk-vmm [OPTIONS] --guest FILE --load ADDR [--disk URI]...\n"
        "       vdisk-vmm [OPTIONS] --restore NAME\n"
        "\n"
        "Boots a guest whose disks are NBD exports (vdiskd's volumes), each a virtio-blk\n"
        "device (virtio-mmio); the console is an 8250 serial port on stdin/stdout.\n"
        "\n"
        "  --accel kvm|emu        KVM, or unicorn's emulator (default: kvm when /dev/kvm\n"
        "                         opens, else emu)\n"
        "  --mem SIZE             guest RAM, e.g. 512M, 2G (default 512M, at most 3G)\n"
        "  --cpus N               vCPUs (default 1; more need a kernel under kvm)\n"
        "  --kernel FILE          a Linux bzImage, by the x86 boot protocol (kvm)\n"
        "  --initrd FILE          its initramfs\n"
        "  --cmdline STR          its command line (the disks are added to it)\n"
        "  --guest FILE           a flat binary guest, entered in 32-bit protected mode\n"
        "  --load ADDR            where it is loaded and entered (e.g. 0x100000)\n"
        "  --disk URI             an NBD disk, e.g. nbd+unix:///vm1?socket=/run/vdisk.sock\n"
        "                         or nbd://host/vm1 (up to %u)\n"
        "  --reconnect-timeout S  how long requests wait for a lost NBD connection to come\n"
        "                         back before failing with an I/O error (default %u)\n"
        "  --control PATH         a control socket: 'checkpoint NAME', 'quit'\n"
        "  --store DIR            the vdisk store of the disks, for checkpoints (default\n"
        "                         $VDISK_STORE, else vdisk's default store)\n"
        "  --vdiskd-control PATH  vdiskd's control socket (default STORE/control.sock)\n"
        "  --restore NAME         restore checkpoint NAME: roll the disks back to its\n"
        "                         snapshots and resume the guest where it was\n"
        "  -h, --help             this help;  -V, --version\n",
        VM_MAX_DISKS, DEFAULT_RECONNECT / 1000);
}

/* SIZE: bytes, or a number with K, M or G (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || end == s || s[0] == '-')
        return -1;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if ((*end == 'i' || *end == 'B') && shift)
        end += *end == 'i' && end[1] == 'B' ? 2 : 1;
    if (*end || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum { O_RECONNECT = 256, O_VDISKD, O_LOAD, O_GUEST, O_RESTORE };
    static const struct option longopts[] = {
        { "accel", required_argument, NULL, 'a' },
        { "mem", required_argument, NULL, 'm' },
        { "cpus", required_argument, NULL, 'c' },
        { "kernel", required_argument, NULL, 'k' },
        { "initrd", required_argument, NULL, 'i' },
        { "cmdline", required_argument, NULL, 'l' },
        { "guest", required_argument, NULL, O_GUEST },
        { "load", required_argument, NULL, O_LOAD },
        { "disk", required_argument, NULL, 'd' },
        { "reconnect-timeout", required_argument, NULL, O_RECONNECT },
        { "control", required_argument, NULL, 's' },
        { "store", required_argument, NULL, 'S' },
        { "vdiskd-control", required_argument, NULL, O_VDISKD },
        { "restore", required_argument, NULL, O_RESTORE },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    memset(o, 0, sizeof(*o));
    o->mem = DEFAULT_MEM;
    o->cpus = 1;
    o->reconnect_ms = DEFAULT_RECONNECT;
    while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        char *end;
        double secs;
        unsigned long n;

        switch (opt) {
        case 'a':
            if (strcmp(optarg, "kvm") != 0 && strcmp(optarg, "emu") != 0) {
                fprintf(stderr, "vdisk-vmm: --accel: kvm or emu, not '%s'\n", optarg);
                return -1;
            }
            o->accel = optarg;
            break;
        case 'm':
            if (parse_size(optarg, &o->mem) < 0 || o->mem < VM_MIN_MEM || o->mem > VM_MAX_MEM ||
                o->mem % 4096) {
                fprintf(stderr, "vdisk-vmm: --mem: '%s' is not a size from 2M to 3G in "
                        "whole 4K pages\n", optarg);
                return -1;
            }
            break;
        case 'c':
            errno = 0;
            n = strtoul(optarg, &end, 10);
            if (errno || *end || n == 0 || n > VM_MAX_CPUS) {
                fprintf(stderr, "vdisk-vmm: --cpus: 1 to %u\n", VM_MAX_CPUS);
                return -1;
            }
            o->cpus = (unsigned)n;
            break;
        case 'k': o->kernel = optarg; break;
        case 'i': o->initrd = optarg; break;
        case 'l': o->cmdline = optarg; break;
        case O_GUEST: o->guest = optarg; break;
        case O_LOAD:
            if (parse_size(optarg, &o->load) < 0) {
                fprintf(stderr, "vdisk-vmm: --load: '%s' is not an address\n", optarg);
                return -1;
            }
            o->load_set = true;
            break;
        case 'd':
            if (o->ndisks == VM_MAX_DISKS) {
                fprintf(stderr, "vdisk-vmm: at most %u disks\n", VM_MAX_DISKS);
                return -1;
            }
            o->disks[o->ndisks++] = optarg;
            break;
        case O_RECONNECT:
            errno = 0;
            secs = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(secs >= 0 && secs <= 86400)) {
                fprintf(stderr, "vdisk-vmm: --reconnect-timeout: seconds, 0 to 86400\n");
                return -1;
            }
            o->reconnect_ms = (unsigned)(secs * 1000);
            break;
        case 's': o->control = optarg; break;
        case 'S': o->store = optarg; break;
        case O_VDISKD: o->vdiskd_control = optarg; break;
        case O_RESTORE: o->restore = optarg; break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            puts(VERSION_STRING);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vdisk-vmm: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->restore) {
        if (o->kernel || o->guest || o->ndisks) {
            fprintf(stderr, "vdisk-vmm: --restore takes the guest and its disks from the "
                    "checkpoint: no --kernel, --guest or --disk\n");
            return -1;
        }
        return 0;
    }
    if (!!o->kernel + !!o->guest != 1) {
        fprintf(stderr, "vdisk-vmm: give a guest: --kernel BZIMAGE or --guest FILE --load ADDR\n");
        return -1;
    }
    if (o->guest && !o->load_set) {
        fprintf(stderr, "vdisk-vmm: --guest needs --load ADDR\n");
        return -1;
    }
    if (!o->kernel && (o->initrd || o->cmdline)) {
        fprintf(stderr, "vdisk-vmm: --initrd and --cmdline go with --kernel\n");
        return -1;
    }
    return 0;
}

/* The store, as vdisk finds it: --store, $VDISK_STORE, /var/lib/vdisk for
 * root, else $XDG_DATA_HOME/vdisk or ~/.local/share/vdisk. */
static void find_store(struct vmm *v, const struct options *o)
{
    const char *env = getenv("VDISK_STORE"), *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");

    if (o->store)
        snprintf(v->store, sizeof(v->store), "%s", o->store);
    else if (env && *env)
        snprintf(v->store, sizeof(v->store), "%s", env);
    else if (geteuid() == 0)
        snprintf(v->store, sizeof(v->store), "/var/lib/vdisk");
    else if (xdg && *xdg)
        snprintf(v->store, sizeof(v->store), "%s/vdisk", xdg);
    else
        snprintf(v->store, sizeof(v->store), "%s/.local/share/vdisk", home ? home : ".");
    if (o->vdiskd_control)
        snprintf(v->vdiskd_socket, sizeof(v->vdiskd_socket), "%s", o->vdiskd_control);
    else
        snprintf(v->vdiskd_socket, sizeof(v->vdiskd_socket), "%s/control.sock", v->store);
    v->where.store = v->store;
    v->where.vdiskd_socket = v->vdiskd_socket;
}

static const struct vmm_accel *choose_accel(const char *name)
{
    const char *why = NULL;

    if (name && strcmp(name, "emu") == 0)
        return &vmm_accel_emu;
    if (vmm_kvm_usable(&why))
        return &vmm_accel_kvm;
    if (name) {
        fprintf(stderr, "vdisk-vmm: --accel kvm: %s\n", why);
        return NULL;
    }
    fprintf(stderr, "vdisk-vmm: KVM is not usable here (%s): using the emu accelerator\n", why);
    return &vmm_accel_emu;
}

/* ---- the disks ---- */

static void disk_complete(void *opaque, struct vblk_req *r, int result)
{
    vm_complete(opaque, r, result);
}

static void disk_wake(void *opaque)
{
    vm_wake_loop(opaque);
}

static int open_disks(struct vmm *v, const char *const *uris, unsigned n, unsigned reconnect_ms)
{
    static const struct ndisk_ops ops = { disk_complete, disk_wake, &V.vm };

    v->machine.ndisks = n;
    v->machine.reconnect_ms = reconnect_ms;
    for (unsigned i = 0; i < n; i++) {
        struct ndisk_info info;
        struct vblk_backend b;
        char id[VIRTIO_BLK_ID_BYTES + 1];
        int rc = ndisk_open(uris[i], reconnect_ms, &ops, &v->disks[i]);

        if (rc < 0)
            return rc;
        ndisk_get_info(v->disks[i], &info);
        if (info.size < VIRTIO_BLK_SECTOR) {
            fprintf(stderr, "vdisk-vmm: %s: a disk of %" PRIu64 " bytes is too small\n",
                    uris[i], info.size);
            return -EINVAL;
        }
        b.submit = ndisk_submit;
        b.opaque = v->disks[i];
        /* The serial number the guest sees: the volume's name, cut to 20. */
        memset(id, 0, sizeof(id));
        memcpy(id, info.export_name, strnlen(info.export_name, VIRTIO_BLK_ID_BYTES));
        vm_add_disk(&v->vm, info.size, info.read_only, id, b);
        snprintf(v->machine.disks[i].uri, sizeof(v->machine.disks[i].uri), "%s", uris[i]);
        snprintf(v->machine.disks[i].volume, sizeof(v->machine.disks[i].volume), "%s",
                 info.export_name);
    }
    return 0;
}

/* ---- the loop ---- */

static int min_timeout(int a, int b)
{
    return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One pass of the loop: poll for at most max_wait ms, handle what came.
 * control: whether the control socket is served in this pass (not while
 * a checkpoint drains). */
static void loop_once(struct vmm *v, int max_wait, bool control)
{
    struct vm *vm = &v->vm;
    struct pollfd fds[MAX_POLL];
    int disk_at[VM_MAX_DISKS];
    unsigned n = 0, stdin_at = UINT_MAX, ctl_at = 0, nctl = 0, running;
    int timeout = max_wait;

    for (unsigned i = 0; i < vm->ndisks; i++)
        timeout = min_timeout(timeout, ndisk_process(v->disks[i]));
    pthread_mutex_lock(&vm->run_lock);
    running = vm->running;
    pthread_mutex_unlock(&vm->run_lock);
    if (!vm->accel->completes_on_vcpu || running == 0) {
        vm_run_completions(vm, NULL);
    } else if (atomic_load(&vm->pause_req) && vm_all_parked(vm)) {
        /* Parked vCPUs take no completions: deliver them from here, the
         * emulator being idle. */
        vm_run_completions(vm, &vm->cpus[0]);
    }
    /* Otherwise the vCPU takes them: vm_complete kicked it. */

    fds[n++] = (struct pollfd){ .fd = vm->wake_fd, .events = POLLIN };
    fds[n++] = (struct pollfd){ .fd = v->sig_fd, .events = POLLIN };
    if (v->stdin_open) {
        bool room;

        pthread_mutex_lock(&vm->lock);
        room = vm->uart.rx_len < UART_FIFO;
        pthread_mutex_unlock(&vm->lock);
        if (room) {
            stdin_at = n;
            fds[n++] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
        } else {
            timeout = min_timeout(timeout, 10);   /* the guest will read some */
        }
    }
    for (unsigned i = 0; i < vm->ndisks; i++) {
        short ev = 0;
        int fd = ndisk_poll_fd(v->disks[i], &ev);

        disk_at[i] = -1;
        if (fd >= 0) {
            disk_at[i] = (int)n;
            fds[n++] = (struct pollfd){ .fd = fd, .events = ev };
        }
    }
    if (control && v->ctl) {
        ctl_at = n;
        nctl = vctl_pollfds(v->ctl, fds + n, MAX_POLL - n);
        n += nctl;
    }

    if (poll(fds, n, timeout) < 0 && errno != EINTR) {
        fprintf(stderr, "vdisk-vmm: poll: %s\n", strerror(errno));
        vm_stop(vm, VM_QUIT);
        return;
    }
    if (fds[0].revents) {
        uint64_t cnt;

        (void)!read(vm->wake_fd, &cnt, sizeof(cnt));
    }
    if (fds[1].revents) {
        struct signalfd_siginfo si;

        if (read(v->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            fprintf(stderr, "vdisk-vmm: %s: stopping the VM\n", strsignal((int)si.ssi_signo));
            vm_stop(vm, VM_QUIT);
        }
    }
    if (stdin_at != UINT_MAX && fds[stdin_at].revents) {
        uint8_t buf[UART_FIFO];
        ssize_t got;
        unsigned room;

        pthread_mutex_lock(&vm->lock);
        room = UART_FIFO - vm->uart.rx_len;
        pthread_mutex_unlock(&vm->lock);
        got = read(STDIN_FILENO, buf, room);
        if (got <= 0 && !(got < 0 && (errno == EINTR || errno == EAGAIN))) {
            v->stdin_open = false;          /* end of input: the guest gets no more */
        } else if (got > 0) {
            pthread_mutex_lock(&vm->lock);
            for (ssize_t k = 0; k < got; k++)
                uart_receive(&vm->uart, buf[k]);
            pthread_mutex_unlock(&vm->lock);
        }
    }
    for (unsigned i = 0; i < vm->ndisks; i++)
        if (disk_at[i] >= 0 && fds[disk_at[i]].revents)
            ndisk_events(v->disks[i], fds[disk_at[i]].revents);
    if (nctl)
        vctl_ready(v->ctl, fds + ctl_at, nctl);
}

/* Waits until no disk request is in flight (the vCPUs are parked, so no
 * new one comes).  0, or -ETIMEDOUT. */
static int drain(struct vmm *v, int ms)
{
    int64_t end = now_ms() + ms;

    for (;;) {
        unsigned inflight;

        pthread_mutex_lock(&v->vm.lock);
        inflight = vm_inflight(&v->vm);
        pthread_mutex_unlock(&v->vm.lock);
        if (inflight == 0)
            return 0;
        if (now_ms() >= end)
            return -ETIMEDOUT;
        loop_once(v, 10, false);
    }
}

static void checkpoint(struct vmm *v, const char *name, char *reply, size_t len)
{
    struct vm *vm = &v->vm;
    uint64_t bytes;
    char err[1024];
    int rc;

    if (!ckpt_name_ok(name)) {
        snprintf(reply, len, "error: '%s' is not a valid checkpoint name", name);
        return;
    }
    vm_pause(vm);
    rc = drain(v, DRAIN_MS);
    if (rc < 0) {
        vm_resume(vm);
        snprintf(reply, len, "error: the disks did not drain in %d s", DRAIN_MS / 1000);
        return;
    }
    if (atomic_load(&vm->state) != VM_RUNNING) {
        vm_resume(vm);
        snprintf(reply, len, "error: the VM has stopped");
        return;
    }
    rc = ckpt_save(vm, &v->machine, &v->where, name, err, sizeof(err));
    bytes = vm->console_bytes;          /* as the file has it: before resuming */
    vm_resume(vm);
    if (rc < 0) {
        fprintf(stderr, "vdisk-vmm: checkpoint %s: %s\n", name, err);
        snprintf(reply, len, "error: %s", err);
        return;
    }
    fprintf(stderr, "vdisk-vmm: checkpoint %s taken (%s/checkpoints/%s.vmstate)\n", name,
            v->store, name);
    snprintf(reply, len, "ok checkpoint %s console-bytes %" PRIu64, name, bytes);
}

static void on_command(void *opaque, const char *line, char *reply, size_t len)
{
    struct vmm *v = opaque;

    if (strcmp(line, "quit") == 0) {
        vm_stop(&v->vm, VM_QUIT);
        snprintf(reply, len, "ok");
    } else if (strncmp(line, "checkpoint ", 11) == 0) {
        checkpoint(v, line + 11, reply, len);
    } else {
        snprintf(reply, len, "error: unknown command (commands: checkpoint NAME, quit)");
    }
}

/* ---- start and stop ---- */

static int setup_signals(struct vmm *v)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    /* Blocked in every thread (the vCPUs inherit the mask); the loop reads
     * them from a signalfd. */
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    v->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return v->sig_fd < 0 ? -1 : 0;
}

static void setup_console(struct vmm *v)
{
    struct termios t;

    v->stdin_open = true;
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &t) == 0) {
        /* Keys go to the guest as typed; ^C still stops the VM. */
        v->saved_tty = t;
        v->tty = true;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        t.c_iflag &= ~(tcflag_t)ICRNL;
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
}

static void stop_everything(struct vmm *v)
{
    struct vm *vm = &v->vm;
    int64_t end;

    vm_stop(vm, VM_QUIT);               /* keeps the first reason; kicks every vCPU */
    vm_join(vm);
    /* Let requests in flight finish, then flush and disconnect. */
    end = now_ms() + 5000;
    for (;;) {
        unsigned pending = 0;

        for (unsigned i = 0; i < vm->ndisks; i++)
            pending += ndisk_pending(v->disks[i]);
        if (pending == 0 || now_ms() >= end)
            break;
        loop_once(v, 10, false);
    }
    for (unsigned i = 0; i < vm->ndisks; i++) {
        ndisk_close(v->disks[i]);
        v->disks[i] = NULL;
    }
    vm_run_completions(vm, NULL);
}

static int report(struct vmm *v)
{
    struct vm *vm = &v->vm;

    switch (atomic_load(&vm->state)) {
    case VM_POWEROFF:
        fprintf(stderr, "vdisk-vmm: the guest powered off\n");
        return 0;
    case VM_RESET:
        fprintf(stderr, "vdisk-vmm: the guest asked for a reset; vdisk-vmm does not reboot, "
                "it stops\n");
        return 0;
    case VM_QUIT:
        return 0;
    case VM_FAULT:
    default:
        fprintf(stderr, "vdisk-vmm: the guest stopped: %s\n", vm->fault);
        for (unsigned i = 0; i < vm->ncpus; i++)
            vm_dump_cpu(&vm->cpus[i]);
        return 1;
    }
}

int main(int argc, char **argv)
{
    struct vmm *v = &V;
    struct vm *vm = &v->vm;
    struct options o;
    struct ckpt ck = { .fd = -1 };
    const struct vmm_accel *accel;
    const char *uris[VM_MAX_DISKS];
    struct vmm_cpu_state entry;
    char err[1024];
    int rc = 1;

    if (parse_options(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    find_store(v, &o);
    v->sig_fd = -1;
    vm->wake_fd = -1;

    if (o.restore) {
        if (ckpt_open(&v->where, o.restore, &ck, err, sizeof(err)) < 0) {
            fprintf(stderr, "vdisk-vmm: %s\n", err);
            return 1;
        }
        if (o.accel && strcmp(o.accel, ck.machine.accel) != 0) {
            fprintf(stderr, "vdisk-vmm: checkpoint %s was taken under --accel %s; it "
                    "restores under that accelerator only\n", o.restore, ck.machine.accel);
            goto out_ckpt;
        }
        o.accel = ck.machine.accel;
        o.mem = ck.machine.mem;
        o.cpus = ck.machine.ncpus;
        o.reconnect_ms = ck.machine.reconnect_ms;
        o.ndisks = ck.machine.ndisks;
        for (unsigned i = 0; i < o.ndisks; i++)
            o.disks[i] = ck.machine.disks[i].uri;
        if (ckpt_rollback(&ck, &v->where, err, sizeof(err)) < 0) {
            fprintf(stderr, "vdisk-vmm: %s\n", err);
            goto out_ckpt;
        }
    }

    accel = choose_accel(o.accel);
    if (!accel)
        goto out_ckpt;
    if (setup_signals(v) < 0) {
        fprintf(stderr, "vdisk-vmm: signals: %s\n", strerror(errno));
        goto out_ckpt;
    }
    snprintf(v->machine.accel, sizeof(v->machine.accel), "%s", accel->name);
    v->machine.mem = o.mem;
    v->machine.ncpus = o.cpus;
    v->machine.irqchip = o.restore ? ck.machine.irqchip : o.kernel != NULL;
    if (vm_init(vm, accel, o.mem, o.cpus, v->machine.irqchip) < 0)
        goto out;
    for (unsigned i = 0; i < o.ndisks; i++)
        uris[i] = o.disks[i];
    if (open_disks(v, uris, o.ndisks, o.reconnect_ms) < 0)
        goto out;

    if (o.restore) {
        if (ckpt_load(&ck, vm, err, sizeof(err)) < 0) {
            fprintf(stderr, "vdisk-vmm: %s\n", err);
            goto out;
        }
        fprintf(stderr, "vdisk-vmm: restored checkpoint %s\n", o.restore);
    } else {
        int lr;

        if (o.kernel)
            lr = vmm_load_linux(vm, o.kernel, o.initrd, o.cmdline ? o.cmdline : "", &entry);
        else
            lr = vmm_load_flat(vm, o.guest, o.load, &entry);
        if (lr < 0 || accel->set_state(&vm->cpus[0], &entry) < 0)
            goto out;
    }
    if (o.control && vctl_open(o.control, on_command, v, &v->ctl) < 0)
        goto out;

    setup_console(v);
    if (vm_start(vm) < 0)
        goto out;
    {
        int64_t next_poke = now_ms() + POKE_MS;

        while (atomic_load(&vm->state) == VM_RUNNING) {
            int wait = -1;

            /* With an irqchip a HLT stays in the kernel: look at the vCPUs
             * now and then to see whether they all halted for good. */
            if (vm->irqchip) {
                int64_t now = now_ms();

                if (now >= next_poke) {
                    for (unsigned i = 0; i < vm->ncpus; i++)
                        accel->kick(&vm->cpus[i]);
                    next_poke = now + POKE_MS;
                }
                wait = (int)(next_poke - now);
            }
            loop_once(v, wait, true);
        }
    }
    stop_everything(v);
    rc = report(v);
out:
    if (v->tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &v->saved_tty);
    vctl_close(v->ctl);
    for (unsigned i = 0; i < VM_MAX_DISKS; i++)
        if (v->disks[i]) {
            ndisk_close(v->disks[i]);
            v->disks[i] = NULL;
        }
    if (vm->accel) {
        vm_run_completions(vm, NULL);
        vm_destroy(vm);
    }
    if (v->sig_fd >= 0)
        close(v->sig_fd);
out_ckpt:
    ckpt_close(&ck);
    return rc;
}
