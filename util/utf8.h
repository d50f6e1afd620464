/*
 * utf8 - one UTF-8 character decoded and checked (RFC 3629)
 */
#ifndef UTF8_H
#define UTF8_H

#include "sys_defs.h"

/* utf8_char - the character at cp (cp < end): its length in bytes (1-4)
   with its code point in *value, or 0 when the bytes there are not one
   (a stray continuation byte, C0/C1/F5-FF, an overlong form, a
   surrogate, past U+10FFFF, cut short by end or a byte that does not
   continue it, such as a NUL) */
extern size_t utf8_char(const unsigned char *cp, const unsigned char *end,
                        unsigned int *value);

#endif
