/*
 * report_mime - a bounded walk over a MIME message held in a buffer
 *
 * See report_mime.h. Every loop here advances over the buffer and every
 * recursion goes one level deeper, so the work is bounded by max_bytes
 * times max_depth, whatever the input.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "report_mime.h"

typedef struct REPORT_MIME_WALK {
    const REPORT_MIME_LIMITS *limits;
    REPORT_MIME_FN fn;
    void *context;
    VSTR *why;
    int parts;
} REPORT_MIME_WALK;

/* report_mime_line_end - the offset after the line that starts at off */
static size_t report_mime_line_end(const char *buf, size_t len, size_t off)
{
    const char *nl = memchr(buf + off, '\n', len - off);

    return nl ? (size_t) (nl - buf) + 1 : len;
}

/* report_mime_blank - is buf[off..end) an empty line? */
static bool report_mime_blank(const char *buf, size_t off, size_t end)
{
    size_t n = end - off;

    return (n == 1 && buf[off] == '\n') ||
           (n == 2 && buf[off] == '\r' && buf[off + 1] == '\n');
}

/* report_mime_split - header block and body (see report_mime.h) */
void report_mime_split(const char *buf, size_t len, size_t *head_len,
                       size_t *body_off)
{
    size_t off = 0;

    while (off < len) {
        size_t end = report_mime_line_end(buf, len, off);

        if (report_mime_blank(buf, off, end)) {
            *head_len = off;
            *body_off = end;
            return;
        }
        off = end;
    }
    *head_len = len;
    *body_off = len;
}

/* report_mime_trim - value without leading and trailing white space */
static void report_mime_trim(VSTR *value)
{
    size_t skip = 0;
    char *s = vstr_str(value);

    vstr_trim(value);
    while (s[skip] == ' ' || s[skip] == '\t')
        skip++;
    if (skip > 0) {
        memmove(s, s + skip, vstr_len(value) - skip + 1);
        vstr_truncate(value, vstr_len(value) - skip);
    }
}

/* report_mime_header - the first header name: (see report_mime.h) */
bool report_mime_header(const char *head, size_t len, const char *name,
                        VSTR *value)
{
    size_t name_len = strlen(name);
    size_t off = 0;

    while (off < len) {
        size_t end = report_mime_line_end(head, len, off);
        size_t colon = off + name_len;

        if (end - off > name_len &&
            strncasecmp(head + off, name, name_len) == 0) {
            while (colon < end && (head[colon] == ' ' || head[colon] == '\t'))
                colon++;
            if (colon < end && head[colon] == ':') {
                vstr_reset(value);
                for (size_t at = colon + 1;;) {
                    for (; at < end; at++)
                        if (head[at] != '\r' && head[at] != '\n' &&
                            vstr_len(value) < REPORT_MIME_VALUE_MAX)
                            vstr_addch(value,
                                       head[at] == '\t' ? ' ' : head[at]);
                    /* A folded value goes on in lines that start blank. */
                    if (end >= len || (head[end] != ' ' && head[end] != '\t'))
                        break;
                    at = end;
                    end = report_mime_line_end(head, len, end);
                }
                report_mime_trim(value);
                return true;
            }
        }
        off = end;
    }
    return false;
}

/* report_mime_param - a parameter of a header value (see report_mime.h) */
bool report_mime_param(const char *value, const char *name, VSTR *out)
{
    size_t name_len = strlen(name);
    const char *p = value;

    while ((p = strchr(p, ';')) != NULL) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, name, name_len) != 0)
            continue;
        p += name_len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '=')
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        vstr_reset(out);
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                vstr_addch(out, *p);
            }
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++)
                vstr_addch(out, *p);
        }
        return vstr_len(out) > 0;
    }
    return false;
}

/* report_mime_typed - the value of a "type; value" field */
void report_mime_typed(const char *field, VSTR *out)
{
    const char *semi = strchr(field, ';');

    vstr_cpy(out, semi ? semi + 1 : field);
    report_mime_trim(out);
}

/* report_mime_addr_char - may c be part of a bare address? */
static bool report_mime_addr_char(int c)
{
    return c > ' ' && c < 127 && strchr("<>()[]\",;:'", c) == NULL;
}

/* report_mime_addr - the address in text (see report_mime.h) */
bool report_mime_addr(const char *text, size_t len, VSTR *out)
{
    const char *open = memchr(text, '<', len);
    const char *at;

    if (open != NULL) {
        const char *close = memchr(open, '>', len - (size_t) (open - text));

        if (close != NULL && close - open > 3 &&
            memchr(open, '@', (size_t) (close - open)) != NULL &&
            close - open < 320) {
            vstr_ncpy(out, open + 1, (size_t) (close - open - 1));
            report_mime_trim(out);
            return true;
        }
    }
    if ((at = memchr(text, '@', len)) == NULL)
        return false;
    const char *start = at;
    const char *end = at + 1;

    while (start > text && report_mime_addr_char((unsigned char) start[-1]))
        start--;
    while (end < text + len && report_mime_addr_char((unsigned char) *end))
        end++;
    while (end > at + 1 && (end[-1] == '.' || end[-1] == ','))
        end--;
    if (start == at || end == at + 1 || end - start >= 320)
        return false;
    vstr_ncpy(out, start, (size_t) (end - start));
    return true;
}

/* report_mime_delim - is buf[off..end) the delimiter line of boundary?
   1 a part delimiter, 2 the closing one, 0 neither */
static int report_mime_delim(const char *buf, size_t off, size_t end,
                             const VSTR *boundary)
{
    size_t blen = vstr_len(boundary);
    size_t at = off + 2 + blen;
    int kind = 1;

    if (end - off < 2 + blen || buf[off] != '-' || buf[off + 1] != '-' ||
        memcmp(buf + off + 2, vstr_str(boundary), blen) != 0)
        return 0;
    if (end - at >= 2 && buf[at] == '-' && buf[at + 1] == '-') {
        at += 2;
        kind = 2;
    }
    for (; at < end; at++)
        if (!isspace((unsigned char) buf[at]))
            return 0;
    return kind;
}

static int report_mime_part(REPORT_MIME_WALK *walk, const char *buf, size_t len,
                            int depth, int index, const char *report_type);

/* report_mime_multi - the parts of a multipart body; 0 go on, 1 stop, -1
   error */
static int report_mime_multi(REPORT_MIME_WALK *walk, const char *body,
                             size_t len, const VSTR *boundary, int depth,
                             const char *report_type)
{
    size_t off = 0;
    size_t start = 0;
    bool in_part = false;
    int index = 0;
    int ret;

    while (off < len) {
        size_t end = report_mime_line_end(body, len, off);
        int kind = report_mime_delim(body, off, end, boundary);

        if (kind != 0) {
            if (in_part) {
                /* The CRLF before the delimiter belongs to it. */
                size_t part_end = off;

                if (part_end > start && body[part_end - 1] == '\n')
                    part_end--;
                if (part_end > start && body[part_end - 1] == '\r')
                    part_end--;
                if ((ret = report_mime_part(walk, body + start,
                                            part_end - start, depth + 1,
                                            ++index, report_type)) != 0)
                    return ret;
            }
            if (kind == 2)
                return 0;
            in_part = true;
            start = end;
        }
        off = end;
    }
    /* No closing delimiter (a truncated message): the last part ends
       with the buffer. */
    if (in_part && start < len)
        return report_mime_part(walk, body + start, len - start, depth + 1,
                                ++index, report_type);
    return 0;
}

/* report_mime_part - one part (or the message); 0 go on, 1 stop, -1 error */
static int report_mime_part(REPORT_MIME_WALK *walk, const char *buf, size_t len,
                            int depth, int index, const char *report_type)
{
    VSTR *value = vstr_alloc(100);
    VSTR *type = vstr_alloc(40);
    VSTR *param = vstr_alloc(40);
    size_t head_len;
    size_t body_off;
    int ret = 0;

    if (++walk->parts > walk->limits->max_parts) {
        vstr_sprintf(walk->why, "more than %d MIME parts",
                     walk->limits->max_parts);
        ret = -1;
        goto out;
    }
    report_mime_split(buf, len, &head_len, &body_off);
    if (report_mime_header(buf, head_len, "Content-Type", value)) {
        const char *v = vstr_str(value);

        vstr_ncpy(type, v, strcspn(v, ";"));
        vstr_trim(type);
        vstr_lower(type);
    }
    if (vstr_len(type) == 0)
        vstr_cpy(type, "text/plain");
    if (strncmp(vstr_str(type), "multipart/", 10) == 0) {
        if (depth >= walk->limits->max_depth) {
            vstr_sprintf(walk->why, "MIME parts nested more than %d deep",
                         walk->limits->max_depth);
            ret = -1;
            goto out;
        }
        if (!report_mime_param(vstr_str(value), "boundary", param)) {
            vstr_sprintf(walk->why, "%s without a boundary", vstr_str(type));
            ret = -1;
            goto out;
        }
        VSTR *rtype = vstr_alloc(40);

        /* Its parts know they are a report's, even of no stated type. */
        if (strcmp(vstr_str(type), "multipart/report") == 0) {
            if (report_mime_param(vstr_str(value), "report-type", rtype))
                vstr_lower(rtype);
            else
                vstr_cpy(rtype, REPORT_MIME_UNTYPED);
        }
        ret = report_mime_multi(walk, buf + body_off, len - body_off, param,
                                depth, vstr_str(rtype));
        vstr_free(rtype);
    } else {
        REPORT_MIME_PART part = {.type = vstr_str(type),
                                 .head = buf,
                                 .head_len = head_len,
                                 .body = buf + body_off,
                                 .body_len = len - body_off,
                                 .depth = depth,
                                 .index = index,
                                 .report_type = report_type};

        ret = walk->fn(walk->context, &part) != 0 ? 1 : 0;
    }
out:
    vstr_free(value);
    vstr_free(type);
    vstr_free(param);
    return ret;
}

/* report_mime_walk - call fn for each part (see report_mime.h) */
int report_mime_walk(const char *buf, size_t len,
                     const REPORT_MIME_LIMITS *limits, REPORT_MIME_FN fn,
                     void *context, VSTR *why)
{
    REPORT_MIME_WALK walk = {
        .limits = limits, .fn = fn, .context = context, .why = why};

    if (len > limits->max_bytes)
        len = limits->max_bytes;
    return report_mime_part(&walk, buf, len, 0, 0, "") < 0 ? -1 : 0;
}
