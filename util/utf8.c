/*
 * utf8 - one UTF-8 character decoded and checked
 *
 * Strict as RFC 3629 (and jansson, whose strings the event journal
 * mirrors) are: shortest form only, no surrogates, nothing past U+10FFFF.
 */
#include "sys_defs.h"

#include "utf8.h"

/* utf8_char - see utf8.h */
size_t utf8_char(const unsigned char *cp, const unsigned char *end,
                 unsigned int *value)
{
    unsigned int c = *cp;
    unsigned int code;
    size_t n;

    if (c < 0x80) {
        *value = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        code = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t) (end - cp) <= n)
        return 0;
    for (size_t i = 1; i <= n; i++) {
        if ((cp[i] & 0xc0) != 0x80)
            return 0;
        code = (code << 6) | (cp[i] & 0x3f);
    }
    /* overlong, a surrogate, past the last code point */
    if ((n == 2 && code < 0x800) || (n == 3 && code < 0x10000) ||
        (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff)
        return 0;
    *value = code;
    return n + 1;
}
