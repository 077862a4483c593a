/*
 * fmt-fuzz.h - what the image format fuzz targets (fuzz-qcow2, fuzz-vmdk)
 * share: the input as a file in a private directory, opened through
 * formats/ and read the way a conversion reads it.
 */
#ifndef VDISK_FMT_FUZZ_H
#define VDISK_FMT_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "formats.h"

/* Writes data to a file of its own in a fresh private directory (so that
 * a VMDK descriptor's plain extent names find nothing but what the target
 * puts there), opens it as format (NULL: probed, the rules for files the
 * user did not name a format for), then walks the block status and reads
 * the data runs, with bounds on both, and closes it.  Crashes, leaks and
 * hangs are the findings; errors are expected. */
void fmt_fuzz_one(const char *format, const uint8_t *data, size_t size);

/* Writes an image made by fmt_create (format, create options, a pattern
 * of data runs) into dir/name, for seed corpora.  Exits on failure. */
void fmt_fuzz_seed(const char *dir, const char *name, const char *format,
                   const struct fmt_create_opts *co);

/* When the environment variable var names a folder, writes the target's
 * seed corpus there with seeds() and exits (tests/fuzz/run-fuzz.sh does
 * this before fuzzing); else returns.  For LLVMFuzzerInitialize. */
void fmt_fuzz_seeds_from_env(const char *var, void (*seeds)(const char *dir));

#endif
