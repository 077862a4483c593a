/*
 * state.h - how checkpoint files spell machine state in JSON (jansson):
 * integers as "0x..." hex strings (a u64 does not fit jansson's signed
 * integers, and hex reads better for registers), byte blobs (FPU state,
 * KVM structures) as hex strings of exactly their length.  Readers check
 * every field: a missing or malformed one is an error, never a guess.
 */
#ifndef VDISK_VMM_STATE_H
#define VDISK_VMM_STATE_H

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

#endif
