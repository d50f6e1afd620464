/*
 * track_html - click tracking and the open pixel in one HTML document
 *
 * A scanner, not a parser: it looks for '<', reads a tag name, and only
 * for <a> and <area> reads the attributes (quoted with " or ', or bare)
 * to find href. That is enough for mail HTML, and what it does not
 * understand it copies unchanged.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>

#include "track_html.h"
#include "vstr.h"

/* track_html_find_ci - the first occurrence of needle (ASCII, any case) in
   text[from..len), or len */
static size_t track_html_find_ci(const char *text, size_t len, size_t from,
                                 const char *needle)
{
    size_t nlen = strlen(needle);

    for (size_t i = from; i + nlen <= len; i++)
        if (strncasecmp(text + i, needle, nlen) == 0)
            return i;
    return len;
}

/* track_html_unescape - decode the ASCII character references */
void track_html_unescape(const char *text, size_t len, VSTR *out)
{
    static const struct {
        const char *name;
        int ch;
    } named[] = {{"amp;", '&'},
                 {"lt;", '<'},
                 {"gt;", '>'},
                 {"quot;", '"'},
                 {"apos;", '\''}};

    for (size_t i = 0; i < len; i++) {
        const char *rest = text + i + 1;
        size_t left = len - i - 1;
        bool done = false;

        if (text[i] != '&') {
            vstr_addch(out, text[i]);
            continue;
        }
        for (size_t n = 0; n < sizeof(named) / sizeof(named[0]); n++) {
            size_t nlen = strlen(named[n].name);

            if (left >= nlen && strncasecmp(rest, named[n].name, nlen) == 0) {
                vstr_addch(out, named[n].ch);
                i += nlen;
                done = true;
                break;
            }
        }
        if (!done && left >= 2 && rest[0] == '#') {
            bool hex = rest[1] == 'x' || rest[1] == 'X';
            size_t j = hex ? 2 : 1;
            long value = 0;
            size_t digits = 0;

            for (; j < left && digits < 7; j++, digits++) {
                int ch = (unsigned char) rest[j];

                if (hex && isxdigit(ch))
                    value = value * 16 +
                            (isdigit(ch) ? ch - '0' : (tolower(ch) - 'a' + 10));
                else if (!hex && isdigit(ch))
                    value = value * 10 + (ch - '0');
                else
                    break;
            }
            if (digits > 0 && j < left && rest[j] == ';' && value > 0 &&
                value < 128) {
                vstr_addch(out, (int) value);
                i += j + 1;
                done = true;
            }
        }
        if (!done)
            vstr_addch(out, '&');
    }
}

/* track_html_column - bytes since the last line break in out */
static size_t track_html_column(const VSTR *out)
{
    const char *start = vstr_str(out);
    size_t len = vstr_len(out);
    size_t i = len;

    while (i > 0 && start[i - 1] != '\n')
        i--;
    return len - i;
}

/* track_html_emit_attr - href="URL" (escaped), after a line break when
   the line would grow too long */
static void track_html_emit_attr(VSTR *out, const char *name, size_t name_len,
                                 const char *url)
{
    size_t need = name_len + strlen(url) + 3;

    if (track_html_column(out) + need > TRACK_HTML_LINE_MAX)
        vstr_addch(out, '\n');
    vstr_ncat(out, name, name_len);
    vstr_cat(out, "=\"");
    for (const char *cp = url; *cp; cp++) {
        if (*cp == '&')
            vstr_cat(out, "&amp;");
        else if (*cp == '"')
            vstr_cat(out, "&quot;");
        else
            vstr_addch(out, *cp);
    }
    vstr_addch(out, '"');
}

/* track_html_is_space - HTML white space */
static bool track_html_is_space(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f';
}

/* track_html_link - the tag <a ...> or <area ...> whose attributes start
   at pos: hrefs rewritten into out (text up to *copied already out);
   returns the index past the tag's '>', or 0 when the tag does not end */
static size_t track_html_link(const char *html, size_t len, size_t pos,
                              size_t *copied, VSTR *out,
                              const TRACK_HTML_OPTS *opts, size_t *changes)
{
    VSTR *url = vstr_alloc(128);
    VSTR *newurl = vstr_alloc(128);
    size_t end = 0;

    while (pos < len) {
        size_t name_start;
        size_t name_len;
        size_t value_start;
        size_t value_end;
        size_t after;

        while (pos < len && (track_html_is_space((unsigned char) html[pos]) ||
                             html[pos] == '/'))
            pos++;
        if (pos >= len)
            break;
        if (html[pos] == '>') {
            end = pos + 1;
            break;
        }
        name_start = pos;
        while (pos < len && !track_html_is_space((unsigned char) html[pos]) &&
               html[pos] != '=' && html[pos] != '>' && html[pos] != '/' &&
               html[pos] != '"' && html[pos] != '\'')
            pos++;
        name_len = pos - name_start;
        if (name_len == 0) {
            pos++; /* a stray quote: skip it */
            continue;
        }
        after = pos;
        while (after < len && track_html_is_space((unsigned char) html[after]))
            after++;
        if (after >= len || html[after] != '=')
            continue; /* an attribute without a value */
        after++;
        while (after < len && track_html_is_space((unsigned char) html[after]))
            after++;
        if (after >= len)
            break;
        if (html[after] == '"' || html[after] == '\'') {
            const char *close =
                memchr(html + after + 1, html[after], len - after - 1);

            if (close == NULL)
                break; /* unclosed quote: the tag does not end */
            value_start = after + 1;
            value_end = (size_t) (close - html);
            pos = value_end + 1;
        } else {
            value_start = after;
            while (after < len &&
                   !track_html_is_space((unsigned char) html[after]) &&
                   html[after] != '>')
                after++;
            value_end = after;
            pos = after;
        }
        if (name_len != 4 || strncasecmp(html + name_start, "href", 4) != 0 ||
            opts->link == NULL)
            continue;
        vstr_reset(url);
        track_html_unescape(html + value_start, value_end - value_start, url);
        /* Trim: browsers ignore white space around a URL. */
        {
            const char *s = vstr_str(url);
            size_t n = vstr_len(url);
            size_t lead = 0;

            while (lead < n && track_html_is_space((unsigned char) s[lead]))
                lead++;
            while (n > lead && track_html_is_space((unsigned char) s[n - 1]))
                n--;
            memmove(vstr_str(url), s + lead, n - lead);
            vstr_truncate(url, n - lead);
        }
        if (strncasecmp(vstr_str(url), "http://", 7) != 0 &&
            strncasecmp(vstr_str(url), "https://", 8) != 0)
            continue;
        vstr_reset(newurl);
        if (!opts->link(opts->ctx, vstr_str(url), newurl))
            continue;
        vstr_ncat(out, html + *copied, name_start - *copied);
        track_html_emit_attr(out, html + name_start, name_len,
                             vstr_str(newurl));
        *copied = pos;
        (*changes)++;
    }
    vstr_free(url);
    vstr_free(newurl);
    return end;
}

/* track_html_pixel - the image tag of the open pixel */
static void track_html_pixel(VSTR *tag, const char *url)
{
    vstr_cat(tag, "<img src=\"");
    for (const char *cp = url; *cp; cp++) {
        if (*cp == '&')
            vstr_cat(tag, "&amp;");
        else if (*cp == '"')
            vstr_cat(tag, "&quot;");
        else
            vstr_addch(tag, *cp);
    }
    vstr_cat(tag, "\" width=\"1\" height=\"1\" alt=\"\" "
                  "style=\"border:0;width:1px;height:1px\">");
}

/* track_html_rewrite - links and pixel; the number of changes */
size_t track_html_rewrite(const char *html, size_t len, VSTR *out,
                          const TRACK_HTML_OPTS *opts)
{
    size_t base = vstr_len(out);
    size_t copied = 0;
    size_t pos = 0;
    size_t changes = 0;
    size_t body_end = (size_t) -1; /* offset in out of the last </body */

    while (pos < len) {
        const char *lt = memchr(html + pos, '<', len - pos);
        size_t name_start;
        size_t name_len;

        if (lt == NULL)
            break;
        pos = (size_t) (lt - html) + 1;
        if (len - pos >= 3 && memcmp(html + pos, "!--", 3) == 0) {
            size_t close = track_html_find_ci(html, len, pos + 3, "-->");

            pos = close < len ? close + 3 : len;
            continue;
        }
        name_start = pos;
        if (pos < len && html[pos] == '/')
            pos++;
        while (pos < len && isalnum((unsigned char) html[pos]))
            pos++;
        name_len = pos - name_start;
        if (name_len == 5 && strncasecmp(html + name_start, "/body", 5) == 0) {
            vstr_ncat(out, html + copied, name_start - 1 - copied);
            copied = name_start - 1;
            body_end = vstr_len(out) - base;
        } else if ((name_len == 1 && (html[name_start] | 0x20) == 'a') ||
                   (name_len == 4 &&
                    strncasecmp(html + name_start, "area", 4) == 0)) {
            if (pos < len && !track_html_is_space((unsigned char) html[pos]))
                continue; /* <a> without attributes, or <abbr ...> */
            pos = track_html_link(html, len, pos, &copied, out, opts, &changes);
            if (pos == 0)
                break; /* the tag does not end: copy the rest */
        } else if ((name_len == 6 &&
                    strncasecmp(html + name_start, "script", 6) == 0) ||
                   (name_len == 5 &&
                    strncasecmp(html + name_start, "style", 5) == 0)) {
            char close[16];

            if (snprintf(close, sizeof(close), "</%.*s", (int) name_len,
                         html + name_start) >= (int) sizeof(close))
                break;
            pos = track_html_find_ci(html, len, pos, close);
        }
    }
    vstr_ncat(out, html + copied, len - copied);
    if (opts->pixel_url != NULL) {
        VSTR *tag = vstr_alloc(128);
        VSTR *tail = vstr_alloc(64);
        size_t at = body_end == (size_t) -1 ? vstr_len(out) : base + body_end;

        vstr_ncpy(tail, vstr_str(out) + at, vstr_len(out) - at);
        vstr_truncate(out, at);
        track_html_pixel(tag, opts->pixel_url);
        if (track_html_column(out) + vstr_len(tag) > TRACK_HTML_LINE_MAX)
            vstr_addch(out, '\n');
        vstr_ncat(out, vstr_str(tag), vstr_len(tag));
        if (vstr_len(tail) > 0 &&
            track_html_column(out) + (size_t) strcspn(vstr_str(tail), "\n") >
                TRACK_HTML_LINE_MAX)
            vstr_addch(out, '\n');
        vstr_ncat(out, vstr_str(tail), vstr_len(tail));
        vstr_free(tag);
        vstr_free(tail);
        changes++;
    }
    return changes;
}
