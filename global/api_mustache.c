/*
 * api_mustache - Mustache templates for the HTTP API (issue #21)
 *
 * Compilation cuts the text into tokens; each section's opening token
 * knows the index of its closing one. Standalone-line trimming of the
 * spec is not done: a section tag on its own line leaves its newline.
 */
#include "sys_defs.h"

#include <jansson.h>

#include "api_mustache.h"
#include "mymalloc.h"
#include "vstr.h"

typedef enum API_MUSTACHE_KIND {
    API_MUSTACHE_TEXT,
    API_MUSTACHE_VAR, /* {{name}} */
    API_MUSTACHE_RAW, /* {{{name}}}, {{&name}} */
    API_MUSTACHE_SECTION, /* {{#name}} */
    API_MUSTACHE_INVERTED, /* {{^name}} */
    API_MUSTACHE_CLOSE, /* {{/name}} */
} API_MUSTACHE_KIND;

typedef struct API_MUSTACHE_TOKEN {
    API_MUSTACHE_KIND kind;
    char *text; /* literal text, or the tag's name */
    size_t len;
    size_t close; /* SECTION, INVERTED: index of the CLOSE token */
} API_MUSTACHE_TOKEN;

struct API_MUSTACHE {
    API_MUSTACHE_TOKEN *tokens;
    size_t count;
    size_t cap;
};

/* api_mustache_add - append a token */
static API_MUSTACHE_TOKEN *api_mustache_add(API_MUSTACHE *tmpl,
                                            API_MUSTACHE_KIND kind,
                                            const char *text, size_t len)
{
    API_MUSTACHE_TOKEN *tok;

    if (tmpl->count == tmpl->cap) {
        tmpl->cap = tmpl->cap ? 2 * tmpl->cap : 16;
        tmpl->tokens =
            myrealloc_array(tmpl->tokens, tmpl->cap, sizeof(*tmpl->tokens));
    }
    tok = tmpl->tokens + tmpl->count++;
    tok->kind = kind;
    tok->text = mystrndup(text, len);
    tok->len = len;
    tok->close = 0;
    return tok;
}

/* api_mustache_free - release a template; returns NULL */
API_MUSTACHE *api_mustache_free(API_MUSTACHE *tmpl)
{
    if (tmpl != NULL) {
        for (size_t i = 0; i < tmpl->count; i++)
            myfree(tmpl->tokens[i].text);
        myfree(tmpl->tokens);
        myfree(tmpl);
    }
    return NULL;
}

/* api_mustache_line - the line number of offset pos */
static size_t api_mustache_line(const char *text, size_t pos)
{
    size_t line = 1;

    for (size_t i = 0; i < pos; i++)
        line += text[i] == '\n';
    return line;
}

/* api_mustache_name_ok - a tag name: printable, no white space or braces */
static bool api_mustache_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] <= ' ' || name[i] > '~' || name[i] == '{' || name[i] == '}')
            return false;
    return true;
}

/* api_mustache_compile - a template, or NULL with why */
API_MUSTACHE *api_mustache_compile(const char *text, size_t len, VSTR *why)
{
    API_MUSTACHE *tmpl = mycalloc(1, sizeof(*tmpl));
    size_t open[API_MUSTACHE_DEPTH];
    size_t open_pos[API_MUSTACHE_DEPTH];
    size_t depth = 0;
    size_t pos = 0;

    while (pos < len) {
        const char *tag = memmem(text + pos, len - pos, "{{", 2);
        size_t start;
        size_t end;
        const char *close;
        API_MUSTACHE_KIND kind = API_MUSTACHE_VAR;
        bool triple = false;
        const char *name;
        size_t name_len;

        if (tag == NULL) {
            api_mustache_add(tmpl, API_MUSTACHE_TEXT, text + pos, len - pos);
            break;
        }
        start = (size_t) (tag - text);
        if (start > pos)
            api_mustache_add(tmpl, API_MUSTACHE_TEXT, text + pos, start - pos);
        triple = start + 2 < len && text[start + 2] == '{';
        close = memmem(text + start + 2, len - start - 2, triple ? "}}}" : "}}",
                       triple ? 3 : 2);
        if (close == NULL) {
            vstr_sprintf(why, "line %zu: a tag is not closed with %s",
                         api_mustache_line(text, start), triple ? "}}}" : "}}");
            return api_mustache_free(tmpl);
        }
        end = (size_t) (close - text) + (triple ? 3 : 2);
        name = text + start + (triple ? 3 : 2);
        name_len = (size_t) (close - name);
        if (triple) {
            kind = API_MUSTACHE_RAW;
        } else if (name_len > 0) {
            switch (*name) {
            case '&':
                kind = API_MUSTACHE_RAW;
                break;
            case '#':
                kind = API_MUSTACHE_SECTION;
                break;
            case '^':
                kind = API_MUSTACHE_INVERTED;
                break;
            case '/':
                kind = API_MUSTACHE_CLOSE;
                break;
            case '!':
                pos = end; /* a comment */
                continue;
            case '>':
            case '=':
                vstr_sprintf(why, "line %zu: %s tags are not supported",
                             api_mustache_line(text, start),
                             *name == '>' ? "partial" : "set-delimiter");
                return api_mustache_free(tmpl);
            default:
                break;
            }
            if (kind != API_MUSTACHE_VAR)
                name++, name_len--;
        }
        while (name_len > 0 && (*name == ' ' || *name == '\t'))
            name++, name_len--;
        while (name_len > 0 &&
               (name[name_len - 1] == ' ' || name[name_len - 1] == '\t'))
            name_len--;
        if (!api_mustache_name_ok(name, name_len)) {
            vstr_sprintf(why, "line %zu: an empty or malformed tag",
                         api_mustache_line(text, start));
            return api_mustache_free(tmpl);
        }
        if (kind == API_MUSTACHE_CLOSE) {
            API_MUSTACHE_TOKEN *opener;

            if (depth == 0) {
                vstr_sprintf(why, "line %zu: {{/%.*s}} closes no section",
                             api_mustache_line(text, start), (int) name_len,
                             name);
                return api_mustache_free(tmpl);
            }
            opener = tmpl->tokens + open[depth - 1];
            if (opener->len != name_len ||
                memcmp(opener->text, name, name_len) != 0) {
                vstr_sprintf(why,
                             "line %zu: {{/%.*s}} closes section \"%s\" of "
                             "line %zu",
                             api_mustache_line(text, start), (int) name_len,
                             name, opener->text,
                             api_mustache_line(text, open_pos[depth - 1]));
                return api_mustache_free(tmpl);
            }
            depth--;
            tmpl->tokens[open[depth]].close = tmpl->count;
        } else if (kind == API_MUSTACHE_SECTION ||
                   kind == API_MUSTACHE_INVERTED) {
            if (depth == API_MUSTACHE_DEPTH) {
                vstr_sprintf(why, "line %zu: sections nest more than %d deep",
                             api_mustache_line(text, start),
                             API_MUSTACHE_DEPTH);
                return api_mustache_free(tmpl);
            }
            open[depth] = tmpl->count;
            open_pos[depth++] = start;
        }
        api_mustache_add(tmpl, kind, name, name_len);
        pos = end;
    }
    if (depth > 0) {
        vstr_sprintf(why, "line %zu: section \"%s\" is not closed",
                     api_mustache_line(text, open_pos[depth - 1]),
                     tmpl->tokens[open[depth - 1]].text);
        return api_mustache_free(tmpl);
    }
    return tmpl;
}

/* API_MUSTACHE_STATE - one rendering */
typedef struct API_MUSTACHE_STATE {
    json_t *stack[API_MUSTACHE_DEPTH + 1];
    size_t depth;
    bool escape_html;
    size_t max_out;
    VSTR *out;
    bool full; /* out of room */
    size_t steps; /* tokens visited: sections over lists multiply them */
    size_t max_steps;
    bool busy; /* more than API_MUSTACHE_STEPS */
} API_MUSTACHE_STATE;

/* api_mustache_lookup - a name in the context stack (NULL: missing) */
static json_t *api_mustache_lookup(API_MUSTACHE_STATE *st, const char *name)
{
    const char *dot = strchr(name, '.');
    size_t first_len = dot ? (size_t) (dot - name) : strlen(name);
    json_t *value = NULL;

    if (strcmp(name, ".") == 0)
        return st->stack[st->depth - 1];
    for (size_t i = st->depth; i-- > 0 && value == NULL;)
        if (json_is_object(st->stack[i]))
            value = json_object_getn(st->stack[i], name, first_len);
    while (value != NULL && dot != NULL) {
        const char *part = dot + 1;

        dot = strchr(part, '.');
        value =
            json_is_object(value)
                ? json_object_getn(value, part,
                                   dot ? (size_t) (dot - part) : strlen(part))
                : NULL;
    }
    return value;
}

/* api_mustache_emit - append bytes, escaped when asked, within the limit */
static void api_mustache_emit(API_MUSTACHE_STATE *st, const char *text,
                              size_t len, bool escape)
{
    for (size_t i = 0; i < len && !st->full; i++) {
        const char *rep = NULL;

        if (escape) {
            switch (text[i]) {
            case '&':
                rep = "&amp;";
                break;
            case '<':
                rep = "&lt;";
                break;
            case '>':
                rep = "&gt;";
                break;
            case '"':
                rep = "&quot;";
                break;
            case '\'':
                rep = "&#39;";
                break;
            default:
                break;
            }
        }
        if (rep != NULL)
            vstr_cat(st->out, rep);
        else
            vstr_addch(st->out, text[i]);
        st->full = vstr_len(st->out) > st->max_out;
    }
}

/* api_mustache_value - append a value as text */
static void api_mustache_value(API_MUSTACHE_STATE *st, json_t *value,
                               bool escape)
{
    char num[64];

    if (json_is_string(value)) {
        api_mustache_emit(st, json_string_value(value),
                          json_string_length(value), escape);
    } else if (json_is_integer(value)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(value));
        api_mustache_emit(st, num, strlen(num), escape);
    } else if (json_is_real(value)) {
        snprintf(num, sizeof(num), "%.17g", json_real_value(value));
        api_mustache_emit(st, num, strlen(num), escape);
    } else if (json_is_boolean(value)) {
        api_mustache_emit(st, json_is_true(value) ? "true" : "false",
                          json_is_true(value) ? 4 : 5, escape);
    }
    /* null, missing, objects and arrays render as nothing */
}

/* api_mustache_falsy - does value skip a section? */
static bool api_mustache_falsy(json_t *value)
{
    return value == NULL || json_is_null(value) || json_is_false(value) ||
           (json_is_array(value) && json_array_size(value) == 0);
}

static void api_mustache_run(const API_MUSTACHE *tmpl, size_t from, size_t to,
                             API_MUSTACHE_STATE *st);

/* api_mustache_push - render tokens from..to with value on the stack */
static void api_mustache_push(const API_MUSTACHE *tmpl, size_t from, size_t to,
                              API_MUSTACHE_STATE *st, json_t *value)
{
    st->stack[st->depth++] = value;
    api_mustache_run(tmpl, from, to, st);
    st->depth--;
}

/* api_mustache_run - render tokens [from, to) */
static void api_mustache_run(const API_MUSTACHE *tmpl, size_t from, size_t to,
                             API_MUSTACHE_STATE *st)
{
    for (size_t i = from; i < to && !st->full; i++) {
        const API_MUSTACHE_TOKEN *tok = tmpl->tokens + i;
        json_t *value;

        if (++st->steps > st->max_steps) {
            st->busy = st->full = true;
            break;
        }
        switch (tok->kind) {
        case API_MUSTACHE_TEXT:
            api_mustache_emit(st, tok->text, tok->len, false);
            break;
        case API_MUSTACHE_VAR:
        case API_MUSTACHE_RAW:
            api_mustache_value(st, api_mustache_lookup(st, tok->text),
                               tok->kind == API_MUSTACHE_VAR &&
                                   st->escape_html);
            break;
        case API_MUSTACHE_SECTION:
            value = api_mustache_lookup(st, tok->text);
            if (!api_mustache_falsy(value)) {
                if (json_is_array(value)) {
                    for (size_t k = 0; k < json_array_size(value) && !st->full;
                         k++)
                        api_mustache_push(tmpl, i + 1, tok->close, st,
                                          json_array_get(value, k));
                } else {
                    api_mustache_push(tmpl, i + 1, tok->close, st, value);
                }
            }
            i = tok->close;
            break;
        case API_MUSTACHE_INVERTED:
            if (api_mustache_falsy(api_mustache_lookup(st, tok->text)))
                api_mustache_run(tmpl, i + 1, tok->close, st);
            i = tok->close;
            break;
        case API_MUSTACHE_CLOSE:
            break;
        }
    }
}

/* api_mustache_render - the template rendered with data */
int api_mustache_render(const API_MUSTACHE *tmpl, json_t *data,
                        bool escape_html, size_t max_out, size_t max_steps,
                        VSTR *out, VSTR *why)
{
    API_MUSTACHE_STATE st = {0};

    st.max_steps = max_steps ? max_steps : API_MUSTACHE_STEPS;
    st.stack[0] = data;
    st.depth = 1;
    st.escape_html = escape_html;
    st.max_out = vstr_len(out) + max_out;
    st.out = out;
    api_mustache_run(tmpl, 0, tmpl->count, &st);
    if (st.busy) {
        vstr_sprintf(why, "the template takes more than %zu steps to render",
                     st.max_steps);
        return -2;
    }
    if (st.full) {
        vstr_sprintf(why, "the rendered text exceeds %zu bytes", max_out);
        return -1;
    }
    return 0;
}
