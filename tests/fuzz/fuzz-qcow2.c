/*
 * fuzz-qcow2.c - libFuzzer target for the qcow2 reader (formats/qcow2):
 * header, extensions, L1 and L2 tables (standard and extended), zero and
 * compressed clusters, read as a conversion reads.
 *
 * FUZZ_QCOW2_SEEDS=DIR: write a seed corpus into DIR and exit: small
 * images of our own writer (512-byte clusters keep them small) and, when
 * qemu-img is installed, compressed and extended-L2 ones of its making.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fmt-fuzz.h"

static void seeds(const char *dir)
{
    struct fmt_create_opts co = { .size = 1u << 20, .cluster_size = 512 };
    char cmd[8192];

    fmt_fuzz_seed(dir, "own-512", "qcow2", &co);
    co.cluster_size = 4096;
    co.backing_file = "base.img";
    co.backing_format = "raw";
    fmt_fuzz_seed(dir, "own-4k-backing", "qcow2", &co);
    snprintf(cmd, sizeof(cmd),
             "command -v qemu-img >/dev/null 2>&1 && cd '%s' && "
             "qemu-img create -q -f qcow2 -o cluster_size=4096 t.qcow2 1M && "
             "qemu-io -f qcow2 -c 'write -P 7 0 64k' -c 'write -z 128k 8k' t.qcow2 "
             ">/dev/null && "
             "qemu-img convert -c -O qcow2 -o cluster_size=4096 t.qcow2 qemu-compressed && "
             "qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on,compat=1.1 "
             "qemu-extl2 1M && qemu-io -f qcow2 -c 'write -P 9 4k 4k' qemu-extl2 >/dev/null; "
             "rm -f t.qcow2", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz-qcow2: qemu-img seeds not made (no qemu-img?)\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fmt_fuzz_seeds_from_env("FUZZ_QCOW2_SEEDS", seeds);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fmt_fuzz_one("qcow2", data, size);
    return 0;
}
