/*
 * fake-accel.c - the stand-in accelerator of vmm/'s unit tests
 * (fake-accel.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "helpers.h"
#include "fake-accel.h"
#include "state.h"


static int fake_init(struct vm *vm)
{
    vm->accel_data = vm;
    return 0;
}

static void fake_destroy(struct vm *vm)
{
    vm->accel_data = NULL;
}

static int fake_vcpu_init(struct vcpu *c)
{
    c->accel = calloc(1, sizeof(struct fake_cpu));
    return c->accel ? 0 : -ENOMEM;
}

static void fake_vcpu_destroy(struct vcpu *c)
{
    free(c->accel);
    c->accel = NULL;
}

static int fake_state(struct vcpu *c, struct vmm_cpu_state *s)
{
    (void)c;
    memset(s, 0, sizeof(*s));
    return 0;
}

static int fake_set_state(struct vcpu *c, const struct vmm_cpu_state *s)
{
    ((struct fake_cpu *)c->accel)->entry = *s;
    return 0;
}

static enum vcpu_exit fake_run(struct vcpu *c)
{
    (void)c;
    return VCPU_EXIT_AGAIN;
}

static void fake_kick(struct vcpu *c)
{
    (void)c;
}

static void fake_irq(struct vm *vm, unsigned line, bool level)
{
    (void)vm;
    (void)line;
    (void)level;
}

static int fake_save_cpu(struct vcpu *c, void **out)
{
    struct fake_cpu *f = c->accel;
    json_t *j = json_object();
    char key[8];

    for (unsigned i = 0; i < FAKE_NREGS; i++) {
        snprintf(key, sizeof(key), "r%u", i);
        js_set_u64(j, key, f->regs[i]);
    }
    *out = j;
    return 0;
}

static int fake_restore_cpu(struct vcpu *c, const void *json)
{
    struct fake_cpu *f = c->accel;
    char key[8];

    for (unsigned i = 0; i < FAKE_NREGS; i++) {
        snprintf(key, sizeof(key), "r%u", i);
        if (js_get_u64(json, key, UINT64_MAX, &f->regs[i]))
            return -EINVAL;
    }
    return 0;
}

static int fake_save_vm(struct vm *vm, void **out)
{
    json_t *j = json_object();

    (void)vm;
    js_set_u64(j, "clock", 0x1234);
    *out = j;
    return 0;
}

static int fake_restore_vm(struct vm *vm, const void *json)
{
    uint64_t v;

    (void)vm;
    return js_get_u64(json, "clock", UINT64_MAX, &v) || v != 0x1234 ? -EINVAL : 0;
}

const struct vmm_accel fake_accel = {
    .name = "test",
    .init = fake_init,
    .destroy = fake_destroy,
    .vcpu_init = fake_vcpu_init,
    .vcpu_destroy = fake_vcpu_destroy,
    .set_state = fake_set_state,
    .get_state = fake_state,
    .run = fake_run,
    .kick = fake_kick,
    .set_irq = fake_irq,
    .save_cpu = fake_save_cpu,
    .restore_cpu = fake_restore_cpu,
    .save_vm = fake_save_vm,
    .restore_vm = fake_restore_vm,
};

static void never_submit(void *opaque, struct vblk_req *r)
{
    (void)opaque;
    (void)r;
    fail_msg("a test machine's disk was given a request");
}

struct vm *fake_vm_new(uint64_t mem, unsigned ndisks, bool irqchip)
{
    struct vm *vm = malloc(sizeof(*vm));
    struct vblk_backend b = { never_submit, NULL };

    assert_non_null(vm);
    assert_int_equal(vm_init(vm, &fake_accel, mem, 1, irqchip), 0);
    vm->console_fd = -1;
    for (unsigned i = 0; i < ndisks; i++)
        assert_non_null(vm_add_disk(vm, 64ull << 20, false, "disk", b));
    return vm;
}

void fake_vm_free(struct vm *vm)
{
    vm_destroy(vm);
    free(vm);
}
