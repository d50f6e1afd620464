/*
 * xtext - the RFC 3461 xtext encoding of DSN ENVID= and ORCPT= values
 *
 * Decoding is strict (a bad "+XX" or a byte outside xtext is an error), so
 * a value that reaches the queue file is known to be clean.
 */
#include "sys_defs.h"

#include "vstr.h"
#include "xtext.h"

/* xtext_hex - value of an upper-case hex digit, or -1 */
static int xtext_hex(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* xtext_decode - decode text into out */
int xtext_decode(VSTR *out, const char *text)
{
    vstr_reset(out);
    for (const char *p = text; *p; p++) {
        int ch = (unsigned char) *p;

        if (ch == '+') {
            int hi = xtext_hex((unsigned char) p[1]);
            int lo = hi < 0 ? -1 : xtext_hex((unsigned char) p[2]);

            if (hi < 0 || lo < 0)
                return -1;
            vstr_addch(out, hi * 16 + lo);
            p += 2;
        } else if (ch < 33 || ch > 126 || ch == '=') {
            return -1;
        } else {
            vstr_addch(out, ch);
        }
    }
    return 0;
}

/* xtext_valid - text is well-formed xtext */
bool xtext_valid(const char *text)
{
    VSTR *tmp = vstr_alloc(strlen(text));
    int ret = xtext_decode(tmp, text);

    vstr_free(tmp);
    return ret == 0;
}

/* xtext_encode - append the xtext form of data[0..len) to out */
void xtext_encode(VSTR *out, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char) data[i];

        if (ch < 33 || ch > 126 || ch == '+' || ch == '=')
            vstr_sprintf_append(out, "+%02X", (unsigned) ch);
        else
            vstr_addch(out, ch);
    }
}
