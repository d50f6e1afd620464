/*
 * events_view - one journal line's top-level members, without jansson
 * (events_view.h)
 */
#include "sys_defs.h"

#include <limits.h>
#include <math.h>

#include "events_view.h"
#include "mymalloc.h"
#include "utf8.h"

#define EVENTS_VIEW_MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

typedef struct EVENTS_VIEW_MEMBER {
    size_t key; /* offset in buf: the decoded name, NUL-ended */
    EVENTS_VIEW_TYPE type;
    size_t str; /* EVENTS_VIEW_STRING: offset in buf */
    long long ival; /* EVENTS_VIEW_INTEGER */
    double rval; /* EVENTS_VIEW_REAL, EVENTS_VIEW_INTEGER */
} EVENTS_VIEW_MEMBER;

struct EVENTS_VIEW {
    char *buf; /* decoded names and strings */
    size_t len;
    size_t cap;
    EVENTS_VIEW_MEMBER *members;
    size_t count;
    size_t members_cap;
};

/* The parse in progress. */
typedef struct EVENTS_VIEW_PARSE {
    EVENTS_VIEW *view;
    const unsigned char *cp;
    const unsigned char *end;
    const char *error; /* what is wrong, at cp */
} EVENTS_VIEW_PARSE;

/* events_view_alloc - an empty view */
EVENTS_VIEW *events_view_alloc(void)
{
    EVENTS_VIEW *view = mycalloc(1, sizeof(*view));

    view->cap = 1024;
    view->buf = mymalloc(view->cap);
    view->members_cap = 32;
    view->members = mymalloc_array(view->members_cap, sizeof(*view->members));
    return view;
}

/* events_view_free - free a view */
void events_view_free(EVENTS_VIEW *view)
{
    if (view == NULL)
        return;
    myfree(view->buf);
    myfree(view->members);
    myfree(view);
}

/* events_view_put - len bytes at the end of the buffer */
static void events_view_put(EVENTS_VIEW *view, const void *data, size_t len)
{
    if (len > view->cap - view->len) {
        while (len > view->cap - view->len)
            view->cap *= 2;
        view->buf = myrealloc(view->buf, view->cap);
    }
    memcpy(view->buf + view->len, data, len);
    view->len += len;
}

/* events_view_ws - skip white space */
static void events_view_ws(EVENTS_VIEW_PARSE *p)
{
    while (p->cp < p->end && (*p->cp == ' ' || *p->cp == '\t' ||
                              *p->cp == '\n' || *p->cp == '\r'))
        p->cp++;
}

/* events_view_hex4 - four hex digits at cp into *unit */
static bool events_view_hex4(const unsigned char *cp, const unsigned char *end,
                             unsigned int *unit)
{
    *unit = 0;
    if (end - cp < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        unsigned int c = cp[i];

        *unit <<= 4;
        if (c >= '0' && c <= '9')
            *unit |= c - '0';
        else if (c >= 'a' && c <= 'f')
            *unit |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            *unit |= c - 'A' + 10;
        else
            return false;
    }
    return true;
}

/* events_view_code - code point value as UTF-8 into the buffer */
static void events_view_code(EVENTS_VIEW *view, unsigned int value)
{
    unsigned char out[4];
    size_t n;

    if (value < 0x80) {
        out[0] = (unsigned char) value;
        n = 1;
    } else if (value < 0x800) {
        out[0] = (unsigned char) (0xc0 | (value >> 6));
        out[1] = (unsigned char) (0x80 | (value & 0x3f));
        n = 2;
    } else if (value < 0x10000) {
        out[0] = (unsigned char) (0xe0 | (value >> 12));
        out[1] = (unsigned char) (0x80 | ((value >> 6) & 0x3f));
        out[2] = (unsigned char) (0x80 | (value & 0x3f));
        n = 3;
    } else {
        out[0] = (unsigned char) (0xf0 | (value >> 18));
        out[1] = (unsigned char) (0x80 | ((value >> 12) & 0x3f));
        out[2] = (unsigned char) (0x80 | ((value >> 6) & 0x3f));
        out[3] = (unsigned char) (0x80 | (value & 0x3f));
        n = 4;
    }
    events_view_put(view, out, n);
}

/* events_view_string - the string at cp (at its '"'); decoded and
   NUL-ended into the buffer when keep (*at: where), else only checked */
static bool events_view_string(EVENTS_VIEW_PARSE *p, bool keep, size_t *at)
{
    const unsigned char *run;

    p->cp++;
    if (keep)
        *at = p->view->len;
    for (;;) {
        for (run = p->cp; p->cp < p->end && *p->cp >= 0x20 && *p->cp < 0x80 &&
                          *p->cp != '"' && *p->cp != '\\';
             p->cp++)
            /* void */;
        if (keep && p->cp > run)
            events_view_put(p->view, run, (size_t) (p->cp - run));
        if (p->cp >= p->end) {
            p->error = "premature end of input in a string";
            return false;
        }
        if (*p->cp == '"') {
            p->cp++;
            if (keep)
                events_view_put(p->view, "", 1);
            return true;
        }
        if (*p->cp < 0x20) {
            p->error = "control character in a string";
            return false;
        }
        if (*p->cp >= 0x80) {
            unsigned int code;
            size_t n = utf8_char(p->cp, p->end, &code);

            if (n == 0) {
                p->error = "invalid UTF-8 in a string";
                return false;
            }
            if (keep)
                events_view_put(p->view, p->cp, n);
            p->cp += n;
            continue;
        }
        /* a backslash */
        if (p->end - p->cp < 2) {
            p->error = "premature end of input in a string";
            return false;
        }
        p->cp++;
        switch (*p->cp) {
        case '"':
        case '\\':
        case '/':
            if (keep)
                events_view_put(p->view, p->cp, 1);
            p->cp++;
            continue;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't': {
            static const char from[] = "bfnrt";
            static const char to[] = "\b\f\n\r\t";

            if (keep)
                events_view_put(p->view, to + (strchr(from, *p->cp) - from), 1);
            p->cp++;
            continue;
        }
        case 'u': {
            unsigned int unit;
            unsigned int low;

            if (!events_view_hex4(p->cp + 1, p->end, &unit)) {
                p->error = "invalid \\u escape";
                return false;
            }
            p->cp += 5;
            if (unit >= 0xd800 && unit <= 0xdbff) {
                if (p->end - p->cp < 6 || p->cp[0] != '\\' || p->cp[1] != 'u' ||
                    !events_view_hex4(p->cp + 2, p->end, &low) ||
                    low < 0xdc00 || low > 0xdfff) {
                    p->error = "invalid Unicode surrogate pair";
                    return false;
                }
                p->cp += 6;
                unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
            } else if ((unit >= 0xdc00 && unit <= 0xdfff) || unit == 0) {
                p->error = unit ? "lone Unicode low surrogate"
                                : "\\u0000 is not allowed";
                return false;
            }
            if (keep)
                events_view_code(p->view, unit);
            continue;
        }
        default:
            p->error = "invalid escape";
            return false;
        }
    }
}

/* events_view_digits - skip one or more digits; false when none */
static bool events_view_digits(EVENTS_VIEW_PARSE *p)
{
    const unsigned char *start = p->cp;

    while (p->cp < p->end && *p->cp >= '0' && *p->cp <= '9')
        p->cp++;
    return p->cp > start;
}

/* events_view_number - the number at cp into m (when not NULL) */
static bool events_view_number(EVENTS_VIEW_PARSE *p, EVENTS_VIEW_MEMBER *m)
{
    const unsigned char *start = p->cp;
    bool real = false;
    char small[64];
    char *text;
    char *stop;
    size_t len;
    bool ok = true;

    if (*p->cp == '-')
        p->cp++;
    if (p->cp < p->end && *p->cp == '0') {
        p->cp++;
    } else if (!events_view_digits(p)) {
        p->error = "invalid number";
        return false;
    }
    if (p->cp < p->end && *p->cp == '.') {
        p->cp++;
        real = true;
        if (!events_view_digits(p)) {
            p->error = "invalid number";
            return false;
        }
    }
    if (p->cp < p->end && (*p->cp == 'e' || *p->cp == 'E')) {
        p->cp++;
        real = true;
        if (p->cp < p->end && (*p->cp == '+' || *p->cp == '-'))
            p->cp++;
        if (!events_view_digits(p)) {
            p->error = "invalid number";
            return false;
        }
    }
    /* strtoll and strtod want a NUL after the number */
    len = (size_t) (p->cp - start);
    text = len < sizeof(small) ? small : mymalloc(len + 1);
    memcpy(text, start, len);
    text[len] = 0;
    errno = 0;
    if (!real) {
        long long value = strtoll(text, &stop, 10);

        if (errno == ERANGE) {
            p->error = "too big integer";
            ok = false;
        } else if (m) {
            m->type = EVENTS_VIEW_INTEGER;
            m->ival = value;
            m->rval = (double) value;
        }
    } else {
        double value = strtod(text, &stop);

        if (errno == ERANGE && (value == HUGE_VAL || value == -HUGE_VAL)) {
            p->error = "real number overflow";
            ok = false;
        } else if (m) {
            m->type = EVENTS_VIEW_REAL;
            m->rval = value;
        }
    }
    if (text != small)
        myfree(text);
    return ok;
}

/* events_view_literal - word at cp */
static bool events_view_literal(EVENTS_VIEW_PARSE *p, const char *word)
{
    size_t len = strlen(word);

    if ((size_t) (p->end - p->cp) < len || memcmp(p->cp, word, len) != 0) {
        p->error = "invalid token";
        return false;
    }
    p->cp += len;
    return true;
}

static bool events_view_value(EVENTS_VIEW_PARSE *p, int depth,
                              EVENTS_VIEW_MEMBER *m);

/* events_view_members - the object at cp (at its '{'); the top-level
   one's members go into the view (top) */
static bool events_view_object(EVENTS_VIEW_PARSE *p, int depth, bool top)
{
    EVENTS_VIEW *view = p->view;

    p->cp++;
    events_view_ws(p);
    if (p->cp < p->end && *p->cp == '}') {
        p->cp++;
        return true;
    }
    for (;;) {
        EVENTS_VIEW_MEMBER *m = NULL;
        size_t key = 0;

        if (p->cp >= p->end || *p->cp != '"') {
            p->error = "string or '}' expected";
            return false;
        }
        if (!events_view_string(p, top, &key))
            return false;
        events_view_ws(p);
        if (p->cp >= p->end || *p->cp != ':') {
            p->error = "':' expected";
            return false;
        }
        p->cp++;
        events_view_ws(p);
        if (top) {
            if (view->count == view->members_cap) {
                view->members_cap *= 2;
                view->members = myrealloc_array(
                    view->members, view->members_cap, sizeof(*view->members));
            }
            m = &view->members[view->count++];
            memset(m, 0, sizeof(*m));
            m->key = key;
        }
        if (!events_view_value(p, depth + 1, m))
            return false;
        events_view_ws(p);
        if (p->cp < p->end && *p->cp == ',') {
            p->cp++;
            events_view_ws(p);
            continue;
        }
        if (p->cp < p->end && *p->cp == '}') {
            p->cp++;
            return true;
        }
        p->error = "',' or '}' expected";
        return false;
    }
}

/* events_view_array - the array at cp (at its '['), checked */
static bool events_view_array(EVENTS_VIEW_PARSE *p, int depth)
{
    p->cp++;
    events_view_ws(p);
    if (p->cp < p->end && *p->cp == ']') {
        p->cp++;
        return true;
    }
    for (;;) {
        if (!events_view_value(p, depth + 1, NULL))
            return false;
        events_view_ws(p);
        if (p->cp < p->end && *p->cp == ',') {
            p->cp++;
            events_view_ws(p);
            continue;
        }
        if (p->cp < p->end && *p->cp == ']') {
            p->cp++;
            return true;
        }
        p->error = "',' or ']' expected";
        return false;
    }
}

/* events_view_value - the value at cp; its type (and value) into m when
   it is a top-level member */
static bool events_view_value(EVENTS_VIEW_PARSE *p, int depth,
                              EVENTS_VIEW_MEMBER *m)
{
    EVENTS_VIEW_TYPE type;

    if (depth > EVENTS_VIEW_MAX_DEPTH) {
        p->error = "maximum parsing depth reached";
        return false;
    }
    if (p->cp >= p->end) {
        p->error = "premature end of input";
        return false;
    }
    switch (*p->cp) {
    case '"':
        if (m == NULL)
            return events_view_string(p, false, NULL);
        m->type = EVENTS_VIEW_STRING;
        return events_view_string(p, true, &m->str);
    case '{':
        type = EVENTS_VIEW_OBJECT;
        if (!events_view_object(p, depth, false))
            return false;
        break;
    case '[':
        type = EVENTS_VIEW_ARRAY;
        if (!events_view_array(p, depth))
            return false;
        break;
    case 't':
        type = EVENTS_VIEW_TRUE;
        if (!events_view_literal(p, "true"))
            return false;
        break;
    case 'f':
        type = EVENTS_VIEW_FALSE;
        if (!events_view_literal(p, "false"))
            return false;
        break;
    case 'n':
        type = EVENTS_VIEW_NULL;
        if (!events_view_literal(p, "null"))
            return false;
        break;
    default:
        if (*p->cp == '-' || (*p->cp >= '0' && *p->cp <= '9'))
            return events_view_number(p, m);
        p->error = "invalid token";
        return false;
    }
    if (m)
        m->type = type;
    return true;
}

/* events_view_parse - line into view; -1 with why when it is not one JSON
   object */
int events_view_parse(EVENTS_VIEW *view, const char *line, size_t len,
                      VSTR *why)
{
    EVENTS_VIEW_PARSE p = {.view = view,
                           .cp = (const unsigned char *) line,
                           .end = (const unsigned char *) line + len};

    view->len = 0;
    view->count = 0;
    events_view_ws(&p);
    if (p.cp >= p.end || *p.cp != '{') {
        p.error =
            p.cp < p.end && *p.cp == '[' ? "not an object" : "'{' expected";
    } else if (events_view_object(&p, 1, true)) {
        events_view_ws(&p);
        if (p.cp < p.end)
            p.error = "end of file expected";
    }
    if (p.error != NULL) {
        if (why)
            vstr_sprintf(why, "%s near offset %ld", p.error,
                         (long) (p.cp - (const unsigned char *) line));
        view->len = 0;
        view->count = 0;
        return -1;
    }
    return 0;
}

/* events_view_find - the member called name (the last one), or NULL */
static const EVENTS_VIEW_MEMBER *events_view_find(const EVENTS_VIEW *view,
                                                  const char *name)
{
    for (size_t i = view->count; i > 0; i--) {
        const EVENTS_VIEW_MEMBER *m = &view->members[i - 1];

        if (strcmp(view->buf + m->key, name) == 0)
            return m;
    }
    return NULL;
}

/* events_view_type - the type of member name */
EVENTS_VIEW_TYPE events_view_type(const EVENTS_VIEW *view, const char *name)
{
    const EVENTS_VIEW_MEMBER *m = events_view_find(view, name);

    return m ? m->type : EVENTS_VIEW_NONE;
}

/* events_view_str - member name's string, or NULL */
const char *events_view_str(const EVENTS_VIEW *view, const char *name)
{
    const EVENTS_VIEW_MEMBER *m = events_view_find(view, name);

    return m && m->type == EVENTS_VIEW_STRING ? view->buf + m->str : NULL;
}

/* events_view_int - member name's integer */
bool events_view_int(const EVENTS_VIEW *view, const char *name,
                     long long *value)
{
    const EVENTS_VIEW_MEMBER *m = events_view_find(view, name);

    if (m == NULL || m->type != EVENTS_VIEW_INTEGER)
        return false;
    *value = m->ival;
    return true;
}

/* events_view_num - member name's number */
bool events_view_num(const EVENTS_VIEW *view, const char *name, double *value)
{
    const EVENTS_VIEW_MEMBER *m = events_view_find(view, name);

    if (m == NULL ||
        (m->type != EVENTS_VIEW_INTEGER && m->type != EVENTS_VIEW_REAL))
        return false;
    *value = m->rval;
    return true;
}
