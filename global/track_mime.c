/*
 * track_mime - click tracking and the open pixel in a MIME message body
 *
 * The body is walked in place; the output is built by copying the spans
 * that do not change and putting the rewritten HTML parts between them.
 * Lines may end in LF (the spool) or CRLF (a part as it came).
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>

#include "track_html.h"
#include "api_mime.h"
#include "track_mime.h"
#include "vstr.h"

#define TRACK_QP_LINE 76

typedef struct TRACK_MIME_STATE {
    TRACK_HTML_OPTS html; /* pixel_url cleared once the pixel is in */
    size_t changes;
} TRACK_MIME_STATE;

static void track_mime_entity(TRACK_MIME_STATE *st, const char *ctype,
                              const char *cte, const char *body, size_t len,
                              VSTR *out, int depth);

/* track_mime_type - type/subtype and boundary of a Content-Type value */
void track_mime_type(const char *value, VSTR *type, VSTR *boundary)
{
    const char *cp = value ? value : "";

    vstr_reset(type);
    vstr_reset(boundary);
    while (*cp == ' ' || *cp == '\t')
        cp++;
    while (*cp && *cp != ';' && *cp != ' ' && *cp != '\t' && *cp != '(')
        vstr_addch(type, tolower((unsigned char) *cp++));
    if (vstr_len(type) == 0 || strchr(vstr_str(type), '/') == NULL)
        vstr_cpy(type, "text/plain");
    while ((cp = strchr(cp, ';')) != NULL) {
        cp++;
        while (*cp == ' ' || *cp == '\t')
            cp++;
        if (strncasecmp(cp, "boundary", 8) != 0)
            continue;
        cp += 8;
        while (*cp == ' ' || *cp == '\t')
            cp++;
        if (*cp != '=')
            continue;
        cp++;
        while (*cp == ' ' || *cp == '\t')
            cp++;
        vstr_reset(boundary);
        if (*cp == '"') {
            for (cp++; *cp && *cp != '"'; cp++) {
                if (*cp == '\\' && cp[1])
                    cp++;
                vstr_addch(boundary, *cp);
            }
        } else {
            while (*cp && *cp != ';' && *cp != ' ' && *cp != '\t')
                vstr_addch(boundary, *cp++);
        }
        break;
    }
}

/* track_hex - a hex digit's value, -1 when it is none */
static int track_hex(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* track_qp_decode - quoted-printable: soft breaks go, =XX become bytes */
void track_qp_decode(const char *data, size_t len, VSTR *out)
{
    for (size_t i = 0; i < len; i++) {
        size_t j;

        if (data[i] != '=') {
            vstr_addch(out, data[i]);
            continue;
        }
        if (i + 2 < len + 0 && track_hex((unsigned char) data[i + 1]) >= 0 &&
            track_hex((unsigned char) data[i + 2]) >= 0) {
            vstr_addch(out, track_hex((unsigned char) data[i + 1]) * 16 +
                                track_hex((unsigned char) data[i + 2]));
            i += 2;
            continue;
        }
        /* A soft line break: '=', maybe transport padding, the line end. */
        for (j = i + 1; j < len && (data[j] == ' ' || data[j] == '\t'); j++)
            ;
        if (j < len && data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
            j++;
        if (j < len && data[j] == '\n') {
            i = j;
            continue;
        }
        if (j >= len) {
            i = len; /* a soft break at the very end */
            continue;
        }
        vstr_addch(out, '='); /* not an escape: kept, as RFC 2045 advises */
    }
}

/* track_qp_put - one encoded unit onto the line, breaking it softly */
static void track_qp_put(VSTR *out, size_t *col, const char *unit, size_t n)
{
    if (*col + n > TRACK_QP_LINE - 1) {
        vstr_cat(out, "=\n");
        *col = 0;
    }
    vstr_ncat(out, unit, n);
    *col += n;
}

/* track_qp_encode - quoted-printable, lines ending in LF */
void track_qp_encode(const char *data, size_t len, VSTR *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) data[i];
        char unit[3];
        bool line_end;

        if (ch == '\n' || (ch == '\r' && i + 1 < len && data[i + 1] == '\n')) {
            if (ch == '\r')
                i++;
            vstr_addch(out, '\n');
            col = 0;
            continue;
        }
        line_end = i + 1 == len || data[i + 1] == '\n' ||
                   (data[i + 1] == '\r' && i + 2 < len && data[i + 2] == '\n');
        if ((ch >= 33 && ch <= 126 && ch != '=') ||
            ((ch == ' ' || ch == '\t') && !line_end)) {
            unit[0] = (char) ch;
            track_qp_put(out, &col, unit, 1);
        } else {
            unit[0] = '=';
            unit[1] = hex[ch >> 4];
            unit[2] = hex[ch & 15];
            track_qp_put(out, &col, unit, 3);
        }
    }
}

/* track_b64_decode - base64, white space ignored; -1 on another byte */
int track_b64_decode(const char *data, size_t len, VSTR *out)
{
    unsigned long acc = 0;
    int bits = 0;
    bool pad = false;

    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char) data[i];
        int v;

        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
            continue;
        if (ch == '=') {
            pad = true;
            continue;
        }
        if (pad || (v = api_mime_b64_value((unsigned char) ch)) < 0)
            return -1;
        acc = ((acc << 6) | (unsigned long) v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            vstr_addch(out, (int) ((acc >> bits) & 0xff));
        }
    }
    return 0;
}

/* track_b64_encode - base64 in lines of 76, each ending in LF */
void track_b64_encode(const char *data, size_t len, VSTR *out)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = (const unsigned char *) data;
    size_t col = 0;

    for (size_t i = 0; i < len; i += 3) {
        unsigned long v = (unsigned long) in[i] << 16;
        size_t n = len - i < 3 ? len - i : 3;

        if (n > 1)
            v |= (unsigned long) in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        vstr_addch(out, digits[(v >> 18) & 63]);
        vstr_addch(out, digits[(v >> 12) & 63]);
        vstr_addch(out, n > 1 ? digits[(v >> 6) & 63] : '=');
        vstr_addch(out, n > 2 ? digits[v & 63] : '=');
        col += 4;
        if (col >= TRACK_QP_LINE) {
            vstr_addch(out, '\n');
            col = 0;
        }
    }
    if (col > 0)
        vstr_addch(out, '\n');
}

/* track_mime_html - one text/html part's body */
static void track_mime_html(TRACK_MIME_STATE *st, const char *cte,
                            const char *body, size_t len, VSTR *out)
{
    VSTR *plain = vstr_alloc(len + 1);
    VSTR *html = vstr_alloc(len + 256);
    VSTR *coded = vstr_alloc(len + 256);
    enum { IDENTITY, QP, B64 } how = IDENTITY;
    size_t changes;

    if (cte && strcasecmp(cte, "quoted-printable") == 0) {
        how = QP;
        track_qp_decode(body, len, plain);
    } else if (cte && strcasecmp(cte, "base64") == 0) {
        how = B64;
        if (track_b64_decode(body, len, plain) < 0) {
            vstr_ncat(out, body, len); /* cannot be decoded: left alone */
            goto done;
        }
    } else {
        vstr_ncpy(plain, body, len);
    }
    changes =
        track_html_rewrite(vstr_str(plain), vstr_len(plain), html, &st->html);
    if (changes == 0) {
        vstr_ncat(out, body, len);
        goto done;
    }
    st->changes += changes;
    st->html.pixel_url = NULL; /* one pixel a message */
    if (how == QP)
        track_qp_encode(vstr_str(html), vstr_len(html), coded);
    else if (how == B64)
        track_b64_encode(vstr_str(html), vstr_len(html), coded);
    else
        vstr_ncpy(coded, vstr_str(html), vstr_len(html));
    /* End as the part ended: with a line break or without. */
    if (len > 0 && body[len - 1] == '\n') {
        if (vstr_len(coded) == 0 ||
            vstr_str(coded)[vstr_len(coded) - 1] != '\n')
            vstr_addch(coded, '\n');
    } else {
        while (vstr_len(coded) > 0 &&
               vstr_str(coded)[vstr_len(coded) - 1] == '\n')
            vstr_truncate(coded, vstr_len(coded) - 1);
    }
    vstr_ncat(out, vstr_str(coded), vstr_len(coded));
done:
    vstr_free(plain);
    vstr_free(html);
    vstr_free(coded);
}

/* track_mime_line_end - the index past the line at pos (past its LF) */
static size_t track_mime_line_end(const char *body, size_t len, size_t pos)
{
    const char *nl = memchr(body + pos, '\n', len - pos);

    return nl ? (size_t) (nl - body) + 1 : len;
}

/* track_mime_delimiter - is the line [pos, end) "--boundary" (1) or
   "--boundary--" (2), with only white space after; 0: neither */
static int track_mime_delimiter(const char *body, size_t pos, size_t end,
                                const VSTR *boundary)
{
    size_t blen = vstr_len(boundary);
    int kind = 1;

    if (end - pos < 2 + blen || body[pos] != '-' || body[pos + 1] != '-' ||
        memcmp(body + pos + 2, vstr_str(boundary), blen) != 0)
        return 0;
    pos += 2 + blen;
    if (end - pos >= 2 && body[pos] == '-' && body[pos + 1] == '-') {
        kind = 2;
        pos += 2;
    }
    for (; pos < end; pos++)
        if (!isspace((unsigned char) body[pos]))
            return 0;
    return kind;
}

/* track_mime_header_value - the value of header name in the part's header
   block [0, len), unfolded, into value; false when absent */
static bool track_mime_header_value(const char *head, size_t len,
                                    const char *name, VSTR *value)
{
    size_t nlen = strlen(name);

    for (size_t pos = 0; pos < len;) {
        size_t end = track_mime_line_end(head, len, pos);

        if (end - pos > nlen && head[pos + nlen] == ':' &&
            strncasecmp(head + pos, name, nlen) == 0) {
            vstr_reset(value);
            vstr_ncat(value, head + pos + nlen + 1, end - pos - nlen - 1);
            while (end < len && (head[end] == ' ' || head[end] == '\t')) {
                size_t next = track_mime_line_end(head, len, end);

                vstr_ncat(value, head + end, next - end);
                end = next;
            }
            /* Unfold and trim. */
            {
                char *s = vstr_str(value);
                size_t o = 0;

                for (size_t i = 0; i < vstr_len(value); i++)
                    if (s[i] != '\r' && s[i] != '\n')
                        s[o++] = s[i];
                vstr_truncate(value, o);
                while (vstr_len(value) > 0 && isspace((unsigned char) s[0])) {
                    memmove(s, s + 1, vstr_len(value) - 1);
                    vstr_truncate(value, vstr_len(value) - 1);
                }
                vstr_trim(value);
            }
            return true;
        }
        pos = end;
    }
    return false;
}

/* track_mime_part - one body part [0, len): headers, then its entity */
static void track_mime_part(TRACK_MIME_STATE *st, const char *part, size_t len,
                            VSTR *out, int depth)
{
    size_t pos = 0;
    VSTR *ctype = vstr_alloc(64);
    VSTR *cte = vstr_alloc(32);
    bool has_ctype;
    bool has_cte;

    /* The header block ends at the first empty line. */
    while (pos < len) {
        size_t end = track_mime_line_end(part, len, pos);

        if (part[pos] == '\n' ||
            (part[pos] == '\r' && end - pos == 2 && part[end - 1] == '\n')) {
            pos = end;
            break;
        }
        pos = end;
    }
    has_ctype = track_mime_header_value(part, pos, "content-type", ctype);
    has_cte =
        track_mime_header_value(part, pos, "content-transfer-encoding", cte);
    vstr_ncat(out, part, pos);
    track_mime_entity(st, has_ctype ? vstr_str(ctype) : NULL,
                      has_cte ? vstr_str(cte) : NULL, part + pos, len - pos,
                      out, depth);
    vstr_free(ctype);
    vstr_free(cte);
}

/* track_mime_multipart - the parts between the delimiters of boundary */
static void track_mime_multipart(TRACK_MIME_STATE *st, const VSTR *boundary,
                                 const char *body, size_t len, VSTR *out,
                                 int depth)
{
    size_t pos = 0;
    size_t part_start = 0;
    bool in_part = false;

    while (pos < len) {
        size_t end = track_mime_line_end(body, len, pos);
        int kind = track_mime_delimiter(body, pos, end, boundary);

        if (kind == 0) {
            pos = end;
            continue;
        }
        if (!in_part) {
            /* The preamble and the first delimiter, unchanged. */
            vstr_ncat(out, body + part_start, end - part_start);
        } else {
            /* The line break before a delimiter belongs to it. */
            size_t part_end = pos;

            if (part_end > part_start && body[part_end - 1] == '\n')
                part_end--;
            if (part_end > part_start && body[part_end - 1] == '\r')
                part_end--;
            track_mime_part(st, body + part_start, part_end - part_start, out,
                            depth + 1);
            vstr_ncat(out, body + part_end, end - part_end);
        }
        part_start = end;
        pos = end;
        in_part = true;
        if (kind == 2) {
            vstr_ncat(out, body + end, len - end); /* the epilogue */
            return;
        }
    }
    if (in_part)
        track_mime_part(st, body + part_start, len - part_start, out,
                        depth + 1); /* no closing delimiter */
    else
        vstr_ncat(out, body, len);
}

/* track_mime_entity - an entity's body by its type */
static void track_mime_entity(TRACK_MIME_STATE *st, const char *ctype,
                              const char *cte, const char *body, size_t len,
                              VSTR *out, int depth)
{
    VSTR *type = vstr_alloc(32);
    VSTR *boundary = vstr_alloc(32);

    track_mime_type(ctype, type, boundary);
    if (strncmp(vstr_str(type), "multipart/", 10) == 0 &&
        vstr_len(boundary) > 0 && depth < TRACK_MIME_DEPTH)
        track_mime_multipart(st, boundary, body, len, out, depth);
    else if (strcmp(vstr_str(type), "text/html") == 0)
        track_mime_html(st, cte, body, len, out);
    else
        vstr_ncat(out, body, len);
    vstr_free(type);
    vstr_free(boundary);
}

/* track_mime_rewrite - the body with its HTML parts rewritten */
size_t track_mime_rewrite(const char *content_type, const char *cte,
                          const char *body, size_t len, VSTR *out,
                          const TRACK_HTML_OPTS *opts)
{
    TRACK_MIME_STATE st;

    st.html = *opts;
    st.changes = 0;
    track_mime_entity(&st, content_type, cte, body, len, out, 0);
    return st.changes;
}
