/*
 * state.c - machine state fields in JSON (state.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

int js_set_u64(json_t *obj, const char *key, uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
    return json_object_set_new(obj, key, json_string(buf)) ? -ENOMEM : 0;
}

int js_set_blob(json_t *obj, const char *key, const void *p, size_t len)
{
    const uint8_t *b = p;
    char *s = malloc(2 * len + 1);
    int err;

    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < len; i++) {
        s[2 * i] = "0123456789abcdef"[b[i] >> 4];
        s[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
    }
    s[2 * len] = 0;
    err = json_object_set_new(obj, key, json_string(s)) ? -ENOMEM : 0;
    free(s);
    return err;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int js_get_u64(const json_t *obj, const char *key, uint64_t max, uint64_t *v)
{
    const char *s = json_string_value(json_object_get(obj, key));
    uint64_t x = 0;
    size_t n;

    if (!s || strncmp(s, "0x", 2) != 0)
        return -EINVAL;
    n = strlen(s + 2);
    if (n == 0 || n > 16)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int d = hexval(s[2 + i]);

        if (d < 0)
            return -EINVAL;
        x = x << 4 | (uint64_t)d;
    }
    if (x > max)
        return -EINVAL;
    *v = x;
    return 0;
}

int js_get_blob(const json_t *obj, const char *key, void *p, size_t len)
{
    const char *s = json_string_value(json_object_get(obj, key));
    uint8_t *b = p;

    if (!s || strlen(s) != 2 * len)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -EINVAL;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static uint64_t get_member(const void *base, const struct js_field *f)
{
    const uint8_t *p = (const uint8_t *)base + f->offset;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64 = 0;

    switch (f->size) {
    case 1: memcpy(&u8, p, 1); return u8;
    case 2: memcpy(&u16, p, 2); return u16;
    case 4: memcpy(&u32, p, 4); return u32;
    default: memcpy(&u64, p, 8); return u64;
    }
}

static void set_member(void *base, const struct js_field *f, uint64_t v)
{
    uint8_t *p = (uint8_t *)base + f->offset;
    uint8_t u8 = (uint8_t)v;
    uint16_t u16 = (uint16_t)v;
    uint32_t u32 = (uint32_t)v;

    switch (f->size) {
    case 1: memcpy(p, &u8, 1); break;
    case 2: memcpy(p, &u16, 2); break;
    case 4: memcpy(p, &u32, 4); break;
    default: memcpy(p, &v, 8); break;
    }
}

int js_save_fields(json_t *obj, const void *base, const struct js_field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int err = js_set_u64(obj, f[i].key, get_member(base, &f[i]));

        if (err)
            return err;
    }
    return 0;
}

int js_load_fields(const json_t *obj, void *base, const struct js_field *f, size_t n)
{
    uint64_t v[64];

    if (n > sizeof(v) / sizeof(v[0]))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (js_get_u64(obj, f[i].key, f[i].max, &v[i]))
            return -EINVAL;
    for (size_t i = 0; i < n; i++)
        set_member(base, &f[i], v[i]);
    return 0;
}
