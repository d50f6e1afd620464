/*
 * api_mime - the MIME encoders and decoders the HTTP API builds messages with
 *
 * Quoted-printable keeps '=' followed by two hex digits as its only escape,
 * so "=_" never appears in its output: api_request's multipart boundaries
 * start with "=_" and cannot collide with a part.
 */
#include "sys_defs.h"

#include "api_mime.h"
#include "vstr.h"

static const char api_mime_hex[] = "0123456789ABCDEF";
static const char api_mime_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* api_mime_printable - is text printable ASCII (and tab, when tab_ok)? */
bool api_mime_printable(const char *text, size_t len, bool tab_ok)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) text[i];

        if (ch == '\t' ? !tab_ok : (ch < 0x20 || ch > 0x7e))
            return false;
    }
    return true;
}

/* api_mime_qp_escape - append =XX for one byte */
static void api_mime_qp_escape(VSTR *out, unsigned char ch)
{
    vstr_addch(out, '=');
    vstr_addch(out, api_mime_hex[ch >> 4]);
    vstr_addch(out, api_mime_hex[ch & 0xf]);
}

/* api_mime_qp_line - append one line (no line end in it) and LF */
static void api_mime_qp_line(VSTR *out, const char *line, size_t len)
{
    size_t col = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) line[i];
        bool last = i + 1 == len;
        bool plain = ((ch >= 33 && ch <= 126 && ch != '=') ||
                      ((ch == ' ' || ch == '\t') && !last));
        size_t width = plain ? 1 : 3;

        /* Room for the token and, unless it ends the line, a soft break. */
        if (col + width > API_MIME_QP_LINE - (last ? 0 : 1)) {
            vstr_cat(out, "=\n");
            col = 0;
        }
        if (plain)
            vstr_addch(out, (char) ch);
        else
            api_mime_qp_escape(out, ch);
        col += width;
    }
    vstr_addch(out, '\n');
}

/* api_mime_qp_append - text quoted-printable, LF line ends */
void api_mime_qp_append(VSTR *out, const char *text, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n' || text[i] == '\r') {
            api_mime_qp_line(out, text + start, i - start);
            if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')
                i++;
            start = i + 1;
        }
    }
    if (start < len)
        api_mime_qp_line(out, text + start, len - start);
}

/* api_mime_b64_group - append the base64 of 1 to 3 bytes */
static void api_mime_b64_group(VSTR *out, const unsigned char *in, size_t n)
{
    unsigned long v = (unsigned long) in[0] << 16;

    if (n > 1)
        v |= (unsigned long) in[1] << 8;
    if (n > 2)
        v |= in[2];
    vstr_addch(out, api_mime_b64[(v >> 18) & 63]);
    vstr_addch(out, api_mime_b64[(v >> 12) & 63]);
    vstr_addch(out, n > 1 ? api_mime_b64[(v >> 6) & 63] : '=');
    vstr_addch(out, n > 2 ? api_mime_b64[v & 63] : '=');
}

/* api_mime_base64_append - data base64 encoded on lines of 76 */
void api_mime_base64_append(VSTR *out, const unsigned char *data, size_t len)
{
    size_t col = 0;

    for (size_t i = 0; i < len; i += 3) {
        api_mime_b64_group(out, data + i, len - i < 3 ? len - i : 3);
        if ((col += 4) >= API_MIME_QP_LINE) {
            vstr_addch(out, '\n');
            col = 0;
        }
    }
    if (col > 0)
        vstr_addch(out, '\n');
}

/* api_mime_utf8_len - the length of the UTF-8 sequence at text (1 for a
   byte that starts none, so bad input still moves on) */
static size_t api_mime_utf8_len(const char *text, size_t len)
{
    unsigned char ch = (unsigned char) text[0];
    size_t want = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 1;

    if (want > len)
        return 1;
    for (size_t i = 1; i < want; i++)
        if (((unsigned char) text[i] & 0xc0) != 0x80)
            return 1;
    return want;
}

/* api_mime_header_text - plain, or RFC 2047 encoded words */
void api_mime_header_text(VSTR *out, const char *text, size_t len)
{
    /* 45 bytes make 60 base64 characters: with "=?UTF-8?B?" and "?=" a
       word stays within RFC 2047's 75. */
    const size_t word_max = 45;
    size_t start = 0;

    if (len <= API_MIME_HEADER_PLAIN_MAX &&
        api_mime_printable(text, len, true) &&
        !(len >= 2 && text[0] == '=' && text[1] == '?')) {
        vstr_ncat(out, text, len);
        return;
    }
    while (start < len) {
        size_t end = start;

        while (end < len) {
            size_t step = api_mime_utf8_len(text + end, len - end);

            if (end + step - start > word_max)
                break;
            end += step;
        }
        if (start > 0)
            vstr_cat(out, "\n ");
        vstr_cat(out, "=?UTF-8?B?");
        for (size_t i = start; i < end; i += 3)
            api_mime_b64_group(out, (const unsigned char *) text + i,
                               end - i < 3 ? end - i : 3);
        vstr_cat(out, "?=");
        start = end;
    }
}

/* api_mime_phrase - a display name as a quoted string or encoded words */
void api_mime_phrase(VSTR *out, const char *name, size_t len)
{
    if (len > API_MIME_HEADER_PLAIN_MAX ||
        !api_mime_printable(name, len, false) ||
        (len >= 2 && name[0] == '=' && name[1] == '?')) {
        api_mime_header_text(out, name, len);
        return;
    }
    vstr_addch(out, '"');
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '"' || name[i] == '\\')
            vstr_addch(out, '\\');
        vstr_addch(out, name[i]);
    }
    vstr_addch(out, '"');
}

/* api_mime_b64_value - the value of a base64 character, or -1 */
int api_mime_b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* api_mime_base64_decode - strict base64 into out */
int api_mime_base64_decode(VSTR *out, const char *text, size_t len, VSTR *why)
{
    unsigned long acc = 0;
    size_t bits = 0;
    size_t digits = 0;
    size_t pad = 0;

    vstr_reset(out);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) text[i];
        int v;

        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        if ((v = api_mime_b64_value(ch)) < 0 || pad > 0) {
            vstr_sprintf(why,
                         pad > 0 ? "data after the padding at offset %zu"
                                 : "bad base64 character at offset %zu",
                         i);
            return -1;
        }
        digits++;
        acc = (acc << 6) | (unsigned long) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            vstr_addch(out, (char) ((acc >> bits) & 0xff));
        }
    }
    if (digits % 4 == 1 || pad > 2 || (pad > 0 && (digits + pad) % 4 != 0)) {
        vstr_cpy(why, "bad base64 length");
        return -1;
    }
    return 0;
}
