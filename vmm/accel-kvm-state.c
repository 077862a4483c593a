/*
 * accel-kvm-state.c - checkpoints of the KVM accelerator: the state KVM
 * keeps for each vCPU and for the VM, as JSON (state.h's spelling).
 *
 * A vCPU is saved as KVM's own structures, each a blob under its name,
 * and its MSRs as an object { "0xINDEX": "0xVALUE" }.  They are restored
 * in the table's order (cpu_parts): sregs before regs (the mode), the
 * LAPIC after mp_state and before the MSRs (writing the LAPIC stops its
 * timer, which the TSC-deadline MSR then sets again), the events last
 * (what is being delivered).  KVM checks the contents of every structure
 * it is given; we check that each is there and of exactly the right size
 * (a checkpoint from a host whose XSAVE area differs is refused), and that
 * the MSRs are ones this host keeps.  The machine's part holds KVM's
 * interrupt controllers, the PIT and the clock when vm->irqchip.
 *
 * Called while every vCPU is paused: run() never leaves a port or MMIO
 * access half done (accel-kvm.c), so what is read here is whole.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "accel-kvm.h"
#include "state.h"

enum part_kind { PART_BLOB, PART_FPU, PART_MSRS };
enum part_when { ALWAYS, WITH_IRQCHIP, WITH_XCRS };

#define IOC(get, set) get, set, #get, #set
static const struct cpu_part {
    const char *key;
    enum part_kind kind;
    enum part_when when;
    size_t size;
    unsigned long get, set;
    const char *get_name, *set_name;
} cpu_parts[] = {
    { "sregs", PART_BLOB, ALWAYS, sizeof(struct kvm_sregs), IOC(KVM_GET_SREGS, KVM_SET_SREGS) },
    { "regs", PART_BLOB, ALWAYS, sizeof(struct kvm_regs), IOC(KVM_GET_REGS, KVM_SET_REGS) },
    { "fpu", PART_FPU, ALWAYS, 0, 0, 0, NULL, NULL },
    { "xcrs", PART_BLOB, WITH_XCRS, sizeof(struct kvm_xcrs), IOC(KVM_GET_XCRS, KVM_SET_XCRS) },
    { "mp_state", PART_BLOB, ALWAYS, sizeof(struct kvm_mp_state),
      IOC(KVM_GET_MP_STATE, KVM_SET_MP_STATE) },
    { "lapic", PART_BLOB, WITH_IRQCHIP, sizeof(struct kvm_lapic_state),
      IOC(KVM_GET_LAPIC, KVM_SET_LAPIC) },
    { "msrs", PART_MSRS, ALWAYS, 0, 0, 0, NULL, NULL },
    { "events", PART_BLOB, ALWAYS, sizeof(struct kvm_vcpu_events),
      IOC(KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS) },
};

/* Room for any PART_BLOB. */
union part_buf {
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct kvm_xcrs xcrs;
    struct kvm_mp_state mp;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
};

static bool part_applies(const struct cpu_part *p, struct vm *vm)
{
    return p->when == ALWAYS || (p->when == WITH_IRQCHIP && vm->irqchip) ||
           (p->when == WITH_XCRS && kv_vm_of(vm)->xcrs);
}

/* The FPU: the XSAVE area where KVM has one (of this host's size), else
 * the legacy kvm_fpu. */
static size_t fpu_size(struct kv_vm *v)
{
    return v->xsave_size ? v->xsave_size : sizeof(struct kvm_fpu);
}

static int save_fpu(struct vcpu *c, json_t *j, const char *key)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    size_t size = fpu_size(v);
    void *buf = calloc(1, size);
    unsigned long req = v->xsave2 ? KVM_GET_XSAVE2 : v->xsave_size ? KVM_GET_XSAVE : KVM_GET_FPU;
    int err;

    if (!buf)
        return -ENOMEM;
    err = ioctl(kv_cpu_of(c)->fd, req, buf) < 0 ? kv_fail("KVM_GET_XSAVE", (int)c->index)
                                        : js_set_blob(j, key, buf, size);
    free(buf);
    return err;
}

static int save_msrs(struct vcpu *c, json_t *j, const char *key)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    struct kvm_msrs *m = kv_msrs_alloc(v->nmsrs);
    json_t *o = json_object();
    char name[16];
    int r, err = 0;

    if (!m || !o || json_object_set_new(j, key, o)) {
        free(m);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < v->nmsrs; i++)
        m->entries[i].index = v->msrs[i];
    r = ioctl(kv_cpu_of(c)->fd, KVM_GET_MSRS, m);
    if (r != (int)v->nmsrs) {
        if (r >= 0)
            errno = EIO;
        err = kv_fail("KVM_GET_MSRS", (int)c->index);
    }
    for (unsigned i = 0; i < v->nmsrs && !err; i++) {
        snprintf(name, sizeof(name), "0x%x", m->entries[i].index);
        err = js_set_u64(o, name, m->entries[i].data);
    }
    free(m);
    return err;
}

int kv_save_cpu(struct vcpu *c, void **out)
{
    json_t *j = json_object();
    int err = 0;

    if (!j)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(cpu_parts) / sizeof(cpu_parts[0]) && !err; i++) {
        const struct cpu_part *p = &cpu_parts[i];
        union part_buf buf;

        if (!part_applies(p, c->vm))
            continue;
        if (p->kind == PART_FPU) {
            err = save_fpu(c, j, p->key);
        } else if (p->kind == PART_MSRS) {
            err = save_msrs(c, j, p->key);
        } else {
            memset(&buf, 0, sizeof(buf));
            err = ioctl(kv_cpu_of(c)->fd, p->get, &buf) < 0 ? kv_fail(p->get_name, (int)c->index)
                                                    : js_set_blob(j, p->key, &buf, p->size);
        }
    }
    if (err) {
        json_decref(j);
        return err;
    }
    *out = j;
    return 0;
}

static int bad_field(unsigned index, const char *key, const char *why)
{
    fprintf(stderr, "vdisk-vmm: checkpoint: vCPU %u: \"%s\" %s\n", index, key, why);
    return -EINVAL;
}

/* Blob key, exactly size bytes, into buf; a message if it is not so. */
static int get_part(const json_t *j, const char *key, void *buf, size_t size, unsigned index)
{
    const json_t *s = json_object_get(j, key);

    if (!json_is_string(s))
        return bad_field(index, key, "is missing");
    if (json_string_length(s) != 2 * size) {
        fprintf(stderr, "vdisk-vmm: checkpoint: vCPU %u: \"%s\" holds %zu bytes where KVM "
                "here has %zu (saved on another kind of host?)\n", index, key,
                json_string_length(s) / 2, size);
        return -EINVAL;
    }
    if (js_get_blob(j, key, buf, size) < 0)
        return bad_field(index, key, "is not a hex blob");
    return 0;
}

static int restore_fpu(struct vcpu *c, const json_t *j, const char *key)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    size_t size = fpu_size(v);
    void *buf = calloc(1, size);
    int err;

    if (!buf)
        return -ENOMEM;
    /* KVM_SET_XSAVE reads as many bytes as KVM_GET_XSAVE2 wrote. */
    err = get_part(j, key, buf, size, c->index);
    if (!err && ioctl(kv_cpu_of(c)->fd, v->xsave_size ? KVM_SET_XSAVE : KVM_SET_FPU, buf) < 0)
        err = kv_fail("KVM_SET_XSAVE", (int)c->index);
    free(buf);
    return err;
}

/* Whether name spells ("0x" and hex digits) one of the MSRs v keeps. */
static bool msr_name(const struct kv_vm *v, const char *name, uint32_t *idx)
{
    unsigned long x;
    char *end;

    if (strncmp(name, "0x", 2) != 0 || !name[2] || strlen(name) > 10)
        return false;
    errno = 0;
    x = strtoul(name + 2, &end, 16);
    if (errno || *end)
        return false;
    for (unsigned i = 0; i < v->nmsrs; i++) {
        if (v->msrs[i] == x) {
            *idx = (uint32_t)x;
            return true;
        }
    }
    return false;
}

static int restore_msrs(struct vcpu *c, const json_t *j, const char *key)
{
    struct kv_vm *v = kv_vm_of(c->vm);
    const json_t *o = json_object_get(j, key);
    struct kvm_msrs *m;
    const char *name;
    json_t *val;
    unsigned n = 0;
    int r, err = 0;

    if (!json_is_object(o))
        return bad_field(c->index, key, "is missing or not an object");
    if (json_object_size(o) > v->nmsrs)
        return bad_field(c->index, key, "names MSRs this host does not keep");
    m = kv_msrs_alloc(v->nmsrs);
    if (!m)
        return -ENOMEM;
    json_object_foreach((json_t *)o, name, val) {
        uint32_t idx;
        uint64_t data;

        if (!msr_name(v, name, &idx)) {
            err = bad_field(c->index, name, "is not an MSR this host keeps");
            break;
        }
        if (js_get_u64(o, name, UINT64_MAX, &data) < 0) {
            err = bad_field(c->index, name, "is not a hex number");
            break;
        }
        m->entries[n].index = idx;
        m->entries[n].data = data;
        n++;
    }
    m->nmsrs = n;
    if (!err) {
        r = ioctl(kv_cpu_of(c)->fd, KVM_SET_MSRS, m);
        if (r < 0) {
            err = kv_fail("KVM_SET_MSRS", (int)c->index);
        } else if (r != (int)n) {
            fprintf(stderr, "vdisk-vmm: checkpoint: vCPU %u: KVM refuses MSR 0x%x = 0x%llx\n",
                    c->index, m->entries[r].index, (unsigned long long)m->entries[r].data);
            err = -EINVAL;
        }
    }
    free(m);
    return err;
}

int kv_restore_cpu(struct vcpu *c, const void *json)
{
    const json_t *j = json;

    if (!json_is_object(j))
        return bad_field(c->index, "state", "is not an object");
    for (size_t i = 0; i < sizeof(cpu_parts) / sizeof(cpu_parts[0]); i++) {
        const struct cpu_part *p = &cpu_parts[i];
        union part_buf buf;
        int err;

        if (!part_applies(p, c->vm)) {
            if (json_object_get(j, p->key))
                return bad_field(c->index, p->key, "is there, but this machine has no "
                                 "place for it");
            continue;
        }
        if (p->kind == PART_FPU) {
            err = restore_fpu(c, j, p->key);
        } else if (p->kind == PART_MSRS) {
            err = restore_msrs(c, j, p->key);
        } else {
            err = get_part(j, p->key, &buf, p->size, c->index);
            /* The pending NMI and the SIPI vector are only set when asked. */
            if (!err && p->set == KVM_SET_VCPU_EVENTS)
                buf.events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING |
                                    KVM_VCPUEVENT_VALID_SIPI_VECTOR;
            if (!err && ioctl(kv_cpu_of(c)->fd, p->set, &buf) < 0)
                err = kv_fail(p->set_name, (int)c->index);
        }
        if (err)
            return err;
    }
    return 0;
}

/* The VM: KVM's interrupt controllers, the PIT and the clock, when the
 * machine has them. */
static const struct {
    const char *key;
    uint32_t chip;
} irqchips[] = {
    { "pic_master", KVM_IRQCHIP_PIC_MASTER },
    { "pic_slave", KVM_IRQCHIP_PIC_SLAVE },
    { "ioapic", KVM_IRQCHIP_IOAPIC },
};

int kv_save_vm(struct vm *vm, void **out)
{
    struct kv_vm *v = kv_vm_of(vm);
    json_t *j = json_object();
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    int err;

    if (!j)
        return -ENOMEM;
    err = js_set_u64(j, "irqchip", vm->irqchip);
    for (size_t i = 0; i < 3 && vm->irqchip && !err; i++) {
        struct kvm_irqchip chip;

        memset(&chip, 0, sizeof(chip));
        chip.chip_id = irqchips[i].chip;
        err = ioctl(v->vm_fd, KVM_GET_IRQCHIP, &chip) < 0
              ? kv_fail("KVM_GET_IRQCHIP", -1)
              : js_set_blob(j, irqchips[i].key, &chip, sizeof(chip));
    }
    if (vm->irqchip && !err) {
        memset(&pit, 0, sizeof(pit));
        err = ioctl(v->vm_fd, KVM_GET_PIT2, &pit) < 0 ? kv_fail("KVM_GET_PIT2", -1)
                                                      : js_set_blob(j, "pit2", &pit, sizeof(pit));
    }
    if (vm->irqchip && !err) {
        memset(&clock, 0, sizeof(clock));
        err = ioctl(v->vm_fd, KVM_GET_CLOCK, &clock) < 0
              ? kv_fail("KVM_GET_CLOCK", -1) : js_set_blob(j, "clock", &clock, sizeof(clock));
    }
    if (err) {
        json_decref(j);
        return err;
    }
    *out = j;
    return 0;
}

static int vm_blob(const json_t *j, const char *key, void *buf, size_t size)
{
    if (js_get_blob(j, key, buf, size) < 0) {
        fprintf(stderr, "vdisk-vmm: checkpoint: machine: \"%s\" is missing or not a blob of "
                "%zu bytes\n", key, size);
        return -EINVAL;
    }
    return 0;
}

int kv_restore_vm(struct vm *vm, const void *json)
{
    const json_t *j = json;
    struct kv_vm *v = kv_vm_of(vm);
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    uint64_t irqchip;

    if (!json_is_object(j) || js_get_u64(j, "irqchip", 1, &irqchip) < 0) {
        fprintf(stderr, "vdisk-vmm: checkpoint: the machine's KVM state is malformed\n");
        return -EINVAL;
    }
    if (irqchip != vm->irqchip) {
        fprintf(stderr, "vdisk-vmm: checkpoint: saved %s interrupt controllers, but this "
                "machine has %s\n", irqchip ? "with" : "without",
                vm->irqchip ? "them" : "none");
        return -EINVAL;
    }
    if (!vm->irqchip)
        return 0;
    for (size_t i = 0; i < 3; i++) {
        struct kvm_irqchip chip;

        if (vm_blob(j, irqchips[i].key, &chip, sizeof(chip)) < 0)
            return -EINVAL;
        if (chip.chip_id != irqchips[i].chip) {
            fprintf(stderr, "vdisk-vmm: checkpoint: \"%s\" holds chip %u\n", irqchips[i].key,
                    chip.chip_id);
            return -EINVAL;
        }
        if (ioctl(v->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
            return kv_fail("KVM_SET_IRQCHIP", -1);
    }
    if (vm_blob(j, "pit2", &pit, sizeof(pit)) < 0)
        return -EINVAL;
    if (ioctl(v->vm_fd, KVM_SET_PIT2, &pit) < 0)
        return kv_fail("KVM_SET_PIT2", -1);
    if (vm_blob(j, "clock", &clock, sizeof(clock)) < 0)
        return -EINVAL;
    /* The clock as it was when saved: for the guest, no time passed
     * while it was not running. */
    clock.flags = 0;
    if (ioctl(v->vm_fd, KVM_SET_CLOCK, &clock) < 0)
        return kv_fail("KVM_SET_CLOCK", -1);
    return 0;
}

