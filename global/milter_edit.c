/*
 * milter_edit - collect a milter's header and body changes, apply them
 *
 * The changes are kept as a list of (kind, index, "Name: value\n") in the
 * order they came; milter_edit_apply() splits the message's headers into
 * one string each (with their continuation lines), applies the list, and
 * puts the message back together with the old or the new body.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "argv.h"
#include "milter.h"
#include "milter_edit.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

/* One header change. */
typedef struct MILTER_EDIT_HDR {
    int cmd; /* MILTER_REP_ADDHEADER, _INSHEADER, _CHGHEADER */
    uint32_t index;
    char *name;
    char *line; /* "Name: value\n"; NULL: delete */
} MILTER_EDIT_HDR;

struct MILTER_EDIT {
    MILTER_EDIT_HDR *hdrs;
    size_t hdr_count;
    size_t hdr_cap;
    VSTR *body; /* the new body, LF line endings */
    bool body_replaced;
    bool body_cr; /* the last piece ended in CR */
    size_t limit; /* 0: none */
    size_t used; /* bytes of headers, body and reserved taken */
    size_t header_limit; /* of one header change; 0: none */
    const char *exceeded; /* the bound last crossed, or NULL */
};

/* milter_edit_alloc - an empty list of changes */
MILTER_EDIT *milter_edit_alloc(size_t limit)
{
    MILTER_EDIT *edit = mycalloc(1, sizeof(*edit));

    edit->body = vstr_alloc(100);
    edit->limit = limit;
    return edit;
}

/* milter_edit_free - the list; NULL */
MILTER_EDIT *milter_edit_free(MILTER_EDIT *edit)
{
    if (edit == NULL)
        return NULL;
    for (size_t i = 0; i < edit->hdr_count; i++) {
        myfree(edit->hdrs[i].name);
        if (edit->hdrs[i].line != NULL)
            myfree(edit->hdrs[i].line);
    }
    if (edit->hdrs != NULL)
        myfree(edit->hdrs);
    vstr_free(edit->body);
    myfree(edit);
    return NULL;
}

/* milter_edit_header_limit - bound each header change */
void milter_edit_header_limit(MILTER_EDIT *edit, size_t limit)
{
    edit->header_limit = limit;
}

/* milter_edit_take - count len more bytes against the limit */
static int milter_edit_take(MILTER_EDIT *edit, size_t len)
{
    if (edit->limit > 0 &&
        (len > edit->limit || edit->used > edit->limit - len)) {
        edit->exceeded = "message_size_limit";
        return -1;
    }
    edit->used += len;
    return 0;
}

/* milter_edit_reserve - count bytes added outside headers and body */
int milter_edit_reserve(MILTER_EDIT *edit, size_t len)
{
    return milter_edit_take(edit, len);
}

/* milter_edit_exceeded - the bound last crossed, or NULL */
const char *milter_edit_exceeded(const MILTER_EDIT *edit)
{
    return edit->exceeded;
}

/* milter_edit_header - one header change */
int milter_edit_header(MILTER_EDIT *edit, int cmd, uint32_t index,
                       const char *name, const char *value)
{
    MILTER_EDIT_HDR *hdr;
    VSTR *line;
    size_t len = strlen(name) + strlen(value) + 3;

    if (cmd != MILTER_REP_ADDHEADER && cmd != MILTER_REP_INSHEADER &&
        cmd != MILTER_REP_CHGHEADER)
        msg_panic("%s: not a header change: '%c'", __func__, cmd);
    if (edit->header_limit > 0 && len > edit->header_limit) {
        edit->exceeded = "header_size_limit";
        return -1;
    }
    if (milter_edit_take(edit, len) < 0)
        return -1;
    if (edit->hdr_count == edit->hdr_cap) {
        edit->hdr_cap = edit->hdr_cap ? edit->hdr_cap * 2 : 8;
        edit->hdrs =
            myrealloc_array(edit->hdrs, edit->hdr_cap, sizeof(*edit->hdrs));
    }
    hdr = edit->hdrs + edit->hdr_count++;
    hdr->cmd = cmd;
    hdr->index = index;
    hdr->name = mystrdup(name);
    hdr->line = NULL;
    if (cmd == MILTER_REP_CHGHEADER && *value == 0)
        return 0; /* a deletion */
    /* "Name: value\n", CR LF folding as LF. */
    line = vstr_alloc(strlen(name) + strlen(value) + 4);
    vstr_cat(line, name);
    vstr_addch(line, ':');
    if (*value != ' ' && *value != '\t')
        vstr_addch(line, ' ');
    for (const char *cp = value; *cp; cp++)
        if (*cp != '\r')
            vstr_addch(line, *cp);
    vstr_addch(line, '\n');
    hdr->line = vstr_export(line);
    return 0;
}

/* milter_edit_body - a piece of the new body, CR LF made LF */
int milter_edit_body(MILTER_EDIT *edit, const char *data, size_t len)
{
    if (milter_edit_take(edit, len) < 0)
        return -1;
    edit->body_replaced = true;
    for (size_t i = 0; i < len; i++) {
        /* A CR LF may be split between two pieces. */
        if (edit->body_cr && data[i] != '\n')
            vstr_addch(edit->body, '\r');
        edit->body_cr = data[i] == '\r';
        if (!edit->body_cr)
            vstr_addch(edit->body, data[i]);
    }
    return 0;
}

/* milter_edit_count - the changes collected */
size_t milter_edit_count(const MILTER_EDIT *edit)
{
    return edit->hdr_count + (edit->body_replaced ? 1 : 0);
}

/* milter_edit_insert - a copy of line at position at */
static void milter_edit_insert(ARGV *hdrs, size_t at, const char *line)
{
    char *added;

    argv_add(hdrs, line);
    added = hdrs->argv[hdrs->argc - 1];
    memmove(hdrs->argv + at + 1, hdrs->argv + at,
            (hdrs->argc - 1 - at) * sizeof(*hdrs->argv));
    hdrs->argv[at] = added;
}

/* milter_edit_delete - drop the header at position at */
static void milter_edit_delete(ARGV *hdrs, size_t at)
{
    myfree(hdrs->argv[at]);
    memmove(hdrs->argv + at, hdrs->argv + at + 1,
            (hdrs->argc - at) * sizeof(*hdrs->argv)); /* with the NULL */
    hdrs->argc--;
}

/* milter_edit_find - the position of the index-th header called name
   (1: the first; 0 counts as 1), or hdrs->argc */
static size_t milter_edit_find(const ARGV *hdrs, const char *name,
                               uint32_t index)
{
    size_t nlen = strlen(name);
    uint32_t seen = 0;

    for (size_t at = 0; at < hdrs->argc; at++) {
        const char *h = hdrs->argv[at];

        if (strncasecmp(h, name, nlen) == 0 &&
            (h[nlen] == ':' || h[nlen] == ' ' || h[nlen] == '\t') &&
            ++seen == (index ? index : 1))
            return at;
    }
    return hdrs->argc;
}

/* milter_edit_apply - the changes, applied to content */
size_t milter_edit_apply(const MILTER_EDIT *edit, VSTR *content)
{
    ARGV *hdrs;
    const char *cp = vstr_str(content);
    const char *end = cp + vstr_len(content);
    VSTR *out;

    if (milter_edit_count(edit) == 0)
        return 0;
    /* The headers, each with its continuation lines. */
    hdrs = argv_alloc(16);
    while (cp < end && *cp != '\n') {
        const char *start = cp;

        do {
            const char *nl = memchr(cp, '\n', (size_t) (end - cp));

            cp = nl ? nl + 1 : end;
        } while (cp < end && (*cp == ' ' || *cp == '\t'));
        argv_addn(hdrs, start, (size_t) (cp - start));
    }
    for (size_t i = 0; i < edit->hdr_count; i++) {
        const MILTER_EDIT_HDR *hdr = edit->hdrs + i;
        size_t at;

        switch (hdr->cmd) {
        case MILTER_REP_ADDHEADER:
            argv_add(hdrs, hdr->line);
            break;
        case MILTER_REP_INSHEADER:
            milter_edit_insert(
                hdrs, hdr->index > hdrs->argc ? hdrs->argc : hdr->index,
                hdr->line);
            break;
        default:
            at = milter_edit_find(hdrs, hdr->name, hdr->index);
            if (at < hdrs->argc && hdr->line == NULL) {
                milter_edit_delete(hdrs, at);
            } else if (at < hdrs->argc) {
                myfree(hdrs->argv[at]);
                hdrs->argv[at] = mystrdup(hdr->line);
            } else if (hdr->line != NULL) {
                argv_add(hdrs, hdr->line);
            }
            break;
        }
    }
    out = vstr_alloc(vstr_len(content) + 256);
    for (size_t i = 0; i < hdrs->argc; i++)
        vstr_cat(out, hdrs->argv[i]);
    if (edit->body_replaced) {
        vstr_addch(out, '\n');
        vstr_ncat(out, vstr_str(edit->body), vstr_len(edit->body));
        if (edit->body_cr)
            vstr_addch(out, '\r');
    } else {
        vstr_ncat(out, cp, (size_t) (end - cp));
    }
    vstr_ncpy(content, vstr_str(out), vstr_len(out));
    vstr_free(out);
    argv_free(hdrs);
    return milter_edit_count(edit);
}
