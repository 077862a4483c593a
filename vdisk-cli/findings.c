/*
 * findings.c - what `vdisk img check` and `vdisk check` share: collecting
 * the library's findings, and the exit status of a check result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void findings_report(void *opaque, const char *msg)
{
    struct findings *fs = opaque;
    char *copy;

    if (fs->print) {
        printf("%s\n", msg ? msg : "");
        return;
    }
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 16;
        char **m = realloc(fs->msg, cap * sizeof(*m));

        if (!m) {
            fs->oom = true;
            return;
        }
        fs->msg = m;
        fs->cap = cap;
    }
    copy = strdup(msg ? msg : "");
    if (!copy) {
        fs->oom = true;
        return;
    }
    fs->msg[fs->n++] = copy;
}

void findings_free(struct findings *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        free(fs->msg[i]);
    free(fs->msg);
    fs->msg = NULL;
    fs->n = fs->cap = 0;
}

int check_status(const struct vd_check_result *r)
{
    if (r->corruptions || r->digest_mismatches)
        return CHECK_CORRUPT;
    if (r->leaked_bytes || r->digest_stale)
        return CHECK_LEAKS;   /* repairable, no damage */
    return CHECK_CLEAN;
}
