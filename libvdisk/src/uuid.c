/*
 * uuid.c - layer identifiers: random (version 4) UUIDs from OpenSSL's RNG.
 */
#include <ctype.h>
#include <openssl/rand.h>

#include "vd-internal.h"

int vdi_uuid_generate(vd_uuid *u);

int vdi_uuid_generate(vd_uuid *u)
{
    if (RAND_bytes(u->b, sizeof(u->b)) != 1)
        return vdi_err(-EIO, "cannot generate a UUID: no randomness");
    u->b[6] = (uint8_t)((u->b[6] & 0x0f) | 0x40);
    u->b[8] = (uint8_t)((u->b[8] & 0x3f) | 0x80);
    return 0;
}

void vd_uuid_format(const vd_uuid *u, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[u->b[i] >> 4];
        *o++ = hex[u->b[i] & 15];
    }
    *o = '\0';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int vd_uuid_parse(const char *s, vd_uuid *u)
{
    if (!s || strlen(s) != 36)
        return vdi_err(-EINVAL, "not a UUID: '%s'", s ? s : "(null)");
    int j = 0;
    for (int i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return vdi_err(-EINVAL, "not a UUID: '%s'", s);
            i++;
            continue;
        }
        int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return vdi_err(-EINVAL, "not a UUID: '%s'", s);
        u->b[j++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

bool vd_uuid_is_null(const vd_uuid *u)
{
    for (int i = 0; i < 16; i++)
        if (u->b[i])
            return false;
    return true;
}
