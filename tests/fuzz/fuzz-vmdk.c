/*
 * fuzz-vmdk.c - libFuzzer target for the VMDK reader (formats/vmdk):
 * sparse extent headers, grain directories and tables, streamOptimized
 * markers and footers, compressed grains, and descriptor text.
 *
 * The format is probed, not named: that is how a file the user did not
 * name a format for is opened, and under those rules a descriptor may
 * name only plain files in its own (here empty, private) directory.
 *
 * FUZZ_VMDK_SEEDS=DIR: write a seed corpus into DIR and exit: small
 * monolithicSparse and streamOptimized images of our own writer and, when
 * qemu-img is installed, a monolithicFlat descriptor of its making.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fmt-fuzz.h"

static void seeds(const char *dir)
{
    struct fmt_create_opts co = { .size = 1u << 20, .cluster_size = 4096 };
    char cmd[8192];

    fmt_fuzz_seed(dir, "own-sparse", "vmdk", &co);
    co.subformat = "streamOptimized";
    fmt_fuzz_seed(dir, "own-stream", "vmdk", &co);
    snprintf(cmd, sizeof(cmd),
             "command -v qemu-img >/dev/null 2>&1 && cd '%s' && "
             "qemu-img create -q -f vmdk -o subformat=monolithicFlat t.vmdk 1M && "
             "mv t.vmdk qemu-flat-descriptor && rm -f t-flat.vmdk", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz-vmdk: qemu-img seeds not made (no qemu-img?)\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fmt_fuzz_seeds_from_env("FUZZ_VMDK_SEEDS", seeds);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fmt_fuzz_one(NULL, data, size);
    return 0;
}
