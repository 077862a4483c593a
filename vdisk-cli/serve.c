/*
 * serve.c - `vdisk serve ARGS...`: runs the daemon, vdiskd, with ARGS.
 *
 * The vdiskd binary next to this vdisk binary wins (a build tree or an
 * install keep them together); else vdiskd is looked up in PATH.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cmd_serve(int argc, char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 16];
    char **args = calloc((size_t)argc + 3, sizeof(*args));
    ssize_t n;
    int k = 1;

    if (!args) {
        cli_err_errno(ENOMEM, "serve");
        return EXIT_ERR;
    }
    args[0] = "vdiskd";
    /* `vdisk --store DIR serve` means the same as `vdisk serve --store DIR` */
    if (cli_get_store()) {
        args[k++] = "--store";
        args[k++] = (char *)cli_get_store();
    }
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(path, sizeof(path), "%s/vdiskd", self);
            if (access(path, X_OK) == 0) {
                args[0] = path;
                execv(path, args);
                cli_err_errno(errno, "serve: %s", path);
                free(args);
                return EXIT_ERR;
            }
        }
    }
    execvp("vdiskd", args);
    cli_err_errno(errno, "serve: vdiskd (not next to vdisk nor in PATH)");
    free(args);
    return EXIT_ERR;
}
