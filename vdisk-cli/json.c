/*
 * json.c - the one piece of JSON the command writes by hand: string
 * literals.  Everything else (numbers, booleans, brackets) is trivially
 * correct; strings carry file names, which may hold any byte but NUL.
 */
#include <stdio.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if the bytes at s
 * are not one (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = 0x80, hi = 0xbf;

        if (c == 0xe0)
            lo = 0xa0;              /* overlong */
        else if (c == 0xed)
            hi = 0x9f;              /* surrogates */
        if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = 0x80, hi = 0xbf;

        if (c == 0xf0)
            lo = 0x90;              /* overlong */
        else if (c == 0xf4)
            hi = 0x8f;              /* above U+10FFFF */
        if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80 ||
            (s[3] & 0xc0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

void json_put_string(FILE *f, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    fputc('"', f);
    while (*s) {
        size_t n;

        switch (*s) {
        case '"':  fputs("\\\"", f); s++; continue;
        case '\\': fputs("\\\\", f); s++; continue;
        case '\b': fputs("\\b", f); s++; continue;
        case '\f': fputs("\\f", f); s++; continue;
        case '\n': fputs("\\n", f); s++; continue;
        case '\r': fputs("\\r", f); s++; continue;
        case '\t': fputs("\\t", f); s++; continue;
        default: break;
        }
        if (*s < 0x20 || *s == 0x7f) {
            fprintf(f, "\\u%04x", *s);
            s++;
            continue;
        }
        /* A NUL inside a sequence makes utf8_seq_len fail at that byte,
         * so it never reads past the terminator. */
        n = utf8_seq_len(s);
        if (n == 0) {
            fputs("\\ufffd", f);
            s++;
            continue;
        }
        fwrite(s, 1, n, f);
        s += n;
    }
    fputc('"', f);
}

void json_put_key(FILE *f, const char *key)
{
    json_put_string(f, key);
    fputs(": ", f);
}
