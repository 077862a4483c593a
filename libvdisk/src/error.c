/*
 * error.c - the per-thread error message behind vd_errmsg().
 */
#include <stdarg.h>

#include "vd-internal.h"

static __thread char errbuf[512];

const char *vd_errmsg(void)
{
    return errbuf;
}

int vdi_err(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
    va_end(ap);
    return err;
}

void vdi_clear_err(void)
{
    errbuf[0] = '\0';
}
