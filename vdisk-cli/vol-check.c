/*
 * vol-check.c - "vdisk check": the catalog against the files, and every
 * layer of a volume's chain (or of the whole store).
 *
 * Exit status as "img check" and qemu-img check: 0 clean, 1 the check could
 * not run (usage errors too), 2 corruption or damaged data, 3 leaked space
 * or stale digests only (repairable, no damage).  After a repair the store
 * is checked again and the status describes the repaired store.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMD "check"


enum { OPT_VERIFY = 256 };

static void usage(FILE *f)
{
    fputs("Usage: vdisk check [--repair] [--verify] [--output human|json] [NAME]\n"
          "\n"
          "Checks the store's catalog against its files (every layer file\n"
          "present, no stray files, reference counts right) and the structure\n"
          "of every layer of the volume NAME, or of the whole store.\n"
          "\n"
          "  -r, --repair       fix what can be fixed: leaked space, stray files,\n"
          "                     reference counts, stale digests, dirty flags\n"
          "      --verify       re-hash every block that has a digest\n"
          "      --output FMT   human (default) or json\n"
          "      --store DIR    the store (default $VDISK_STORE)\n"
          "  -h, --help         show this help\n"
          "\n"
          "Exit status: 0 no problems, 1 the check could not run (or a usage\n"
          "error), 2 corruption or damaged data, 3 leaked space or stale\n"
          "digests only.\n", f);
}

/* Findings are kept for JSON output, where they go into an array. */




static void print_summary(const char *what, const struct vd_check_result *r,
                          bool verify)
{
    char hs[32];

    if (r->corruptions)
        printf("\n%llu errors were found in %s.\n"
               "Data may be corrupted, or further writes may corrupt it.\n",
               (unsigned long long)r->corruptions, what);
    if (r->digest_mismatches)
        printf("\n%llu blocks do not match their digest: their data is damaged.\n",
               (unsigned long long)r->digest_mismatches);
    if (r->digest_stale)
        printf("\n%llu blocks do not match their digest after an unclean shutdown: they may\n"
               "have been written as the layer went down. --repair re-hashes them.\n",
               (unsigned long long)r->digest_stale);
    if (r->leaked_bytes)
        printf("\n%s (%llu bytes) of leaked space were found in %s.\n"
               "This means waste of disk space, but no harm to data.\n",
               cli_human_size(r->leaked_bytes, hs, sizeof(hs)),
               (unsigned long long)r->leaked_bytes, what);
    if (check_status(r) == CHECK_CLEAN)
        printf("No errors were found in %s.\n", what);
    if (r->dirty)
        printf("A layer is marked dirty (it was not closed cleanly).\n");
    printf("%llu blocks checked%s.\n", (unsigned long long)r->blocks_checked,
           verify ? ", digests verified" : "");
}

static void print_json(const char *store, const char *name,
                       const struct vd_check_result *r,
                       const struct vd_check_result *first, bool repaired,
                       const struct findings *fs)
{
    fputs("{\n    \"store\": ", stdout);
    json_put_string(stdout, store);
    fputs(",\n    \"volume\": ", stdout);
    if (name)
        json_put_string(stdout, name);
    else
        fputs("null", stdout);
    printf(",\n    \"corruptions\": %llu,\n"
           "    \"leaked-bytes\": %llu,\n"
           "    \"digest-mismatches\": %llu,\n"
           "    \"digest-stale\": %llu,\n"
           "    \"blocks-checked\": %llu,\n"
           "    \"dirty\": %s,\n",
           (unsigned long long)r->corruptions,
           (unsigned long long)r->leaked_bytes,
           (unsigned long long)r->digest_mismatches,
           (unsigned long long)r->digest_stale,
           (unsigned long long)r->blocks_checked, r->dirty ? "true" : "false");
    if (repaired)
        printf("    \"repaired\": %llu,\n", (unsigned long long)first->repaired);
    fputs("    \"findings\": [", stdout);
    for (size_t i = 0; i < fs->n; i++) {
        fputs(i ? ",\n        " : "\n        ", stdout);
        json_put_string(stdout, fs->msg[i]);
    }
    fputs(fs->n ? "\n    ]\n}\n" : "]\n}\n", stdout);
}

int vol_check(int argc, char **argv)
{
    static const struct option opts[] = {
        { "repair", no_argument, NULL, 'r' },
        { "verify", no_argument, NULL, OPT_VERIFY },
        { "output", required_argument, NULL, 'o' },
        CLI_STORE_OPTION,
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_check_result first = { 0 }, res = { 0 };
    struct findings fs = { 0 };
    bool verify = false, repaired = false;
    unsigned flags = 0;
    struct vd_store *st;
    const char *name = NULL;
    char what[VD_NAME_MAX + 32];
    int c, ret, rc;

    while ((c = getopt_long(argc, argv, "rh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            flags |= VD_CHECK_REPAIR;
            break;
        case OPT_VERIFY:
            flags |= VD_CHECK_VERIFY;
            verify = true;
            break;
        case 'o':
            if (cli_parse_output(optarg, &output) < 0) {
                cli_usage_error(CMD, "invalid output format '%s'", optarg);
                return CHECK_ERROR;
            }
            break;
        case OPT_STORE:
            cli_set_store(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            cli_usage_hint(CMD);
            return CHECK_ERROR;
        }
    }
    if (optind + 1 < argc) {
        cli_usage_error(CMD, "too many arguments");
        return CHECK_ERROR;
    }
    if (optind < argc)
        name = argv[optind];
    if (name)
        snprintf(what, sizeof(what), "volume '%.*s'", VD_NAME_MAX, name);
    else
        snprintf(what, sizeof(what), "the store");

    if (cli_store_open(0, &st) < 0)
        return CHECK_ERROR;
    fs.print = output == OUTPUT_HUMAN;
    ret = vd_store_check(st, name, flags, &first, findings_report, &fs);
    if (ret < 0) {
        cli_err_store(ret, name, "cannot check %s", what);
        rc = CHECK_ERROR;
        goto out;
    }
    res = first;
    if ((flags & VD_CHECK_REPAIR) && first.repaired) {
        repaired = true;
        if (fs.print)
            printf("Repaired %llu problems; checking %s again.\n",
                   (unsigned long long)first.repaired, what);
        /* Findings of the second pass describe the repaired store. */
        findings_free(&fs);
        memset(&res, 0, sizeof(res));
        ret = vd_store_check(st, name, flags & ~(unsigned)VD_CHECK_REPAIR, &res,
                             findings_report, &fs);
        if (ret < 0) {
            cli_err_store(ret, name, "cannot check %s after the repair", what);
            rc = CHECK_ERROR;
            goto out;
        }
    }
    if (fs.oom) {
        cli_err_errno(ENOMEM, "cannot record the findings");
        rc = CHECK_ERROR;
        goto out;
    }
    if (output == OUTPUT_JSON)
        print_json(vd_store_path(st), name, &res, &first, repaired, &fs);
    else
        print_summary(what, &res, verify);
    rc = check_status(&res);

out:
    findings_free(&fs);
    vd_store_close(st);
    return rc;
}
