/*
 * state.h - how checkpoint files spell machine state in JSON (jansson):
 * integers as "0x..." hex strings (a u64 does not fit jansson's signed
 * integers, and hex reads better for registers), byte blobs (FPU state,
 * KVM structures) as hex strings of exactly their length.  Readers check
 * every field: a missing or malformed one is an error, never a guess.
 */
#ifndef VDISK_VMM_STATE_H
#define VDISK_VMM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* obj[key] = v.  0, or -ENOMEM. */
int js_set_u64(json_t *obj, const char *key, uint64_t v);
int js_set_blob(json_t *obj, const char *key, const void *p, size_t len);

/* *v = obj[key]: 0, or -EINVAL when missing or not a hex number that
 * fits max (the field's own range). */
int js_get_u64(const json_t *obj, const char *key, uint64_t max, uint64_t *v);
/* Exactly len bytes into p: 0, or -EINVAL. */
int js_get_blob(const json_t *obj, const char *key, void *p, size_t len);

/* A struct's integer (or bool) member as a field of a JSON object, with
 * the largest value a file may give it. */
struct js_field {
    const char *key;
    size_t offset;
    unsigned size;              /* 1, 2, 4 or 8 */
    uint64_t max;
};
#define JS_FIELD(type, member, key, max) \
    { key, offsetof(type, member), sizeof(((type *)0)->member), max }

/* Every field of base into obj: 0 or -ENOMEM. */
int js_save_fields(json_t *obj, const void *base, const struct js_field *f, size_t n);
/* Every field from obj into base, all checked before any is written:
 * 0, or -EINVAL with base untouched. */
int js_load_fields(const json_t *obj, void *base, const struct js_field *f, size_t n);

#endif
