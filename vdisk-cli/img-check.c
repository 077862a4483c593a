/*
 * img-check.c - "vdisk img check": the structure (and optionally the
 * digests) of one layer file.
 *
 * Exit status follows qemu-img check: 0 clean, 1 the check could not run,
 * 2 corruption (here also digest mismatches: the data is damaged), 3 leaked
 * space only.  Usage errors give 1 too (not the usual 2, which means
 * corruption here), as in qemu-img.  After a repair the file is checked again and the status
 * describes the repaired file, as qemu-img does.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMD "img check"


enum { OPT_REPAIR = 256, OPT_VERIFY };

static void usage(FILE *f)
{
    fputs("Usage: vdisk img check [--repair] [--verify] [--output human|json] FILE\n"
          "\n"
          "Checks the structure of the layer file FILE (not its parents).\n"
          "\n"
          "  -r, --repair       fix what can be fixed (leaked space, dirty flag)\n"
          "      --verify       re-hash every block that has a digest\n"
          "      --output FMT   human (default) or json\n"
          "  -h, --help         show this help\n"
          "\n"
          "Exit status: 0 no problems, 1 the check could not run (or a usage\n"
          "error), 2 corruption or damaged data, 3 leaked space only.\n", f);
}

/* Findings are kept for JSON output, where they go into an array. */




static void print_summary(const struct vd_check_result *r, bool verify)
{
    char hs[32];

    if (r->corruptions)
        printf("\n%llu errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               (unsigned long long)r->corruptions);
    if (r->digest_mismatches)
        printf("\n%llu blocks do not match their digest: their data is damaged.\n",
               (unsigned long long)r->digest_mismatches);
    if (r->digest_stale)
        printf("\n%llu blocks do not match their digest after an unclean shutdown: they may\n"
               "have been written as the layer went down. --repair re-hashes them.\n",
               (unsigned long long)r->digest_stale);
    if (r->leaked_bytes)
        printf("\n%s (%llu bytes) of leaked space were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               cli_human_size(r->leaked_bytes, hs, sizeof(hs)),
               (unsigned long long)r->leaked_bytes);
    if (check_status(r) == CHECK_CLEAN)
        printf("No errors were found on the image.\n");
    if (r->dirty)
        printf("The image is marked dirty (it was not closed cleanly).\n");
    printf("%llu blocks checked%s.\n", (unsigned long long)r->blocks_checked,
           verify ? ", digests verified" : "");
}

static void print_json(const char *file, const struct vd_check_result *r,
                       const struct vd_check_result *first, bool repaired,
                       const struct findings *fs)
{
    fputs("{\n    \"filename\": ", stdout);
    json_put_string(stdout, file);
    printf(",\n    \"format\": \"vdk\",\n"
           "    \"check-errors\": 0,\n"
           "    \"corruptions\": %llu,\n"
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
        printf("    \"repaired\": %llu,\n"
               "    \"corruptions-fixed\": %llu,\n"
               "    \"leaks-fixed\": %llu,\n",
               (unsigned long long)first->repaired,
               (unsigned long long)(first->corruptions - MIN(first->corruptions,
                                                             r->corruptions)),
               (unsigned long long)(first->leaked_bytes - MIN(first->leaked_bytes,
                                                              r->leaked_bytes)));
    fputs("    \"findings\": [", stdout);
    for (size_t i = 0; i < fs->n; i++) {
        fputs(i ? ",\n        " : "\n        ", stdout);
        json_put_string(stdout, fs->msg[i]);
    }
    fputs(fs->n ? "\n    ]\n}\n" : "]\n}\n", stdout);
}

int img_check(int argc, char **argv)
{
    static const struct option opts[] = {
        { "repair", no_argument, NULL, 'r' },
        { "verify", no_argument, NULL, OPT_VERIFY },
        { "output", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum cli_output output = OUTPUT_HUMAN;
    struct vd_check_result first = { 0 }, res = { 0 };
    struct findings fs = { 0 };
    bool repair = false, verify = false, repaired = false;
    unsigned flags = 0;
    const char *file;
    int c, ret, rc;

    while ((c = getopt_long(argc, argv, "rh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            repair = true;
            break;
        case OPT_VERIFY:
            verify = true;
            break;
        case 'o':
            if (cli_parse_output(optarg, &output) < 0)
                {
                cli_usage_error(CMD, "invalid output format '%s'", optarg);
                return CHECK_ERROR;
            }
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            cli_usage_hint(CMD);
            return CHECK_ERROR;
        }
    }
    if (optind >= argc) {
        cli_usage_error(CMD, "missing FILE");
        return CHECK_ERROR;
    }
    if (optind + 1 < argc) {
        cli_usage_error(CMD, "too many arguments");
        return CHECK_ERROR;
    }
    file = argv[optind];

    fs.print = output == OUTPUT_HUMAN;
    if (verify)
        flags |= VD_CHECK_VERIFY;
    if (repair)
        flags |= VD_CHECK_REPAIR;
    ret = vd_layer_check(file, flags, &first, findings_report, &fs);
    if (ret < 0) {
        cli_err_lib(ret, "%s: cannot check", file);
        rc = CHECK_ERROR;
        goto out;
    }
    res = first;
    if (repair && first.repaired) {
        repaired = true;
        if (fs.print)
            printf("Repaired %llu problems; checking the repaired image again.\n",
                   (unsigned long long)first.repaired);
        /* Findings of the second pass describe the repaired file. */
        findings_free(&fs);
        ret = vd_layer_check(file, flags & ~(unsigned)VD_CHECK_REPAIR, &res,
                             findings_report, &fs);
        if (ret < 0) {
            cli_err_lib(ret, "%s: cannot check after repair", file);
            rc = CHECK_ERROR;
            goto out;
        }
    }
    if (fs.oom) {
        cli_err_errno(ENOMEM, "%s: cannot record the findings", file);
        rc = CHECK_ERROR;
        goto out;
    }
    if (output == OUTPUT_JSON)
        print_json(file, &res, &first, repaired, &fs);
    else
        print_summary(&res, verify);
    rc = check_status(&res);

out:
    findings_free(&fs);
    return rc;
}
