/*
 * maps_pcre - pcre: and regexp: tables (PCRE2), Postfix's syntax
 *
 * Each logical line of the file is one rule:
 *
 *   /regex/flags result     the first rule whose regex matches answers
 *   !/regex/flags result    answers when the regex does NOT match
 *   if /regex/flags         the rules up to the matching endif apply only
 *   if !/regex/flags        when the string matches (or does not)
 *   endif
 *
 * The delimiter is the first character after the optional '!' (anything
 * but a letter, digit, white space or backslash); a backslash before it
 * keeps it in the regex. Matching is case-insensitive unless flag i
 * (which toggles it, as in Postfix); m, s, x, U and A pass PCRE2's
 * MULTILINE, DOTALL, EXTENDED, UNGREEDY and ANCHORED. In the result,
 * $1..$99 and ${n} are the matched groups (empty when the group did not
 * take part), $$ is a '$'. A negated rule cannot use $n, and a rule may
 * not name a group its regex does not have: both are errors when the
 * table is opened, with the file and line, like a regex that does not
 * compile. regexp: is the same engine.
 *
 * A match may backtrack MAP_PCRE_MATCH_LIMIT times (PCRE2's default is 100
 * times more): a rule with nested quantifiers such as /^(a+)+$/ or
 * /^(.*)*x/ would otherwise cost some 200 ms per lookup on a key a client
 * wrote (a header), for every header. Ordinary patterns stay far below the
 * limit even on 20 KB keys; a rule that reaches it is skipped, with a
 * warning, as PCRE2's own limit would skip it later.
 */
#include "sys_defs.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>

#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define MAP_PCRE_MATCH_LIMIT 100000 /* pcre2_set_match_limit */
#define MAP_PCRE_LOG_KEY 100 /* bytes of a key in a warning */

typedef enum MAP_PCRE_KIND {
    MAP_PCRE_MATCH, /* /re/ result */
    MAP_PCRE_IF, /* if /re/ */
    MAP_PCRE_ENDIF, /* endif */
} MAP_PCRE_KIND;

typedef struct MAP_PCRE_RULE {
    MAP_PCRE_KIND kind;
    bool negate;
    pcre2_code *code;
    char *result; /* MATCH only */
    int lineno;
    size_t endif; /* IF: index of its ENDIF */
} MAP_PCRE_RULE;

typedef struct MAP_PCRE {
    char *path;
    MAP_PCRE_RULE *rules;
    size_t count;
    size_t cap;
    size_t *open_ifs; /* while parsing: IFs not closed */
    size_t depth;
    pcre2_match_data *match;
    pcre2_match_context *context; /* the match limit */
    uint32_t max_groups;
} MAP_PCRE;

/* map_pcre_keyword - line starts with word (any case) then a non-word */
static bool map_pcre_keyword(const char *line, const char *word)
{
    size_t len = strlen(word);

    return strncasecmp(line, word, len) == 0 &&
           !isalnum((unsigned char) line[len]) && line[len] != '_';
}

/* map_pcre_refs - check the $n of a result; highest n, or -1 with why */
static int map_pcre_refs(const char *result, VSTR *why)
{
    int highest = 0;
    const char *cp;

    for (cp = result; *cp; cp++) {
        long n;
        char *end;

        if (*cp != '$')
            continue;
        if (cp[1] == '$') {
            cp++;
            continue;
        }
        if (cp[1] == '{') {
            n = strtol(cp + 2, &end, 10);
            if (!isdigit((unsigned char) cp[2]) || *end != '}') {
                vstr_sprintf(why, "bad ${n} in result \"%s\"", result);
                return -1;
            }
        } else if (isdigit((unsigned char) cp[1])) {
            n = strtol(cp + 1, &end, 10);
            end--;
        } else {
            continue; /* a lone '$' is itself */
        }
        if (n > 99) {
            vstr_sprintf(why, "$%ld: group number too large", n);
            return -1;
        }
        if (n > highest)
            highest = (int) n;
        cp = end;
    }
    return highest;
}

/* map_pcre_add - append a rule */
static MAP_PCRE_RULE *map_pcre_add(MAP_PCRE *table, MAP_PCRE_KIND kind,
                                   int lineno)
{
    MAP_PCRE_RULE *rule;

    if (table->count == table->cap) {
        table->cap = table->cap ? table->cap * 2 : 16;
        table->rules =
            myrealloc_array(table->rules, table->cap, sizeof(*table->rules));
        table->open_ifs = myrealloc_array(table->open_ifs, table->cap,
                                          sizeof(*table->open_ifs));
    }
    rule = table->rules + table->count++;
    memset(rule, 0, sizeof(*rule));
    rule->kind = kind;
    rule->lineno = lineno;
    return rule;
}

/* map_pcre_line - parse one rule */
static int map_pcre_line(void *context, const char *path, char *line,
                         int lineno, VSTR *why)
{
    MAP_PCRE *table = context;
    MAP_PCRE_KIND kind = MAP_PCRE_MATCH;
    MAP_PCRE_RULE *rule;
    VSTR *pattern;
    char *cp = line;
    char delim;
    uint32_t options = PCRE2_CASELESS;
    uint32_t groups;
    int errcode;
    PCRE2_SIZE erroff;
    bool negate = false;
    int refs;

    if (map_pcre_keyword(cp, "endif")) {
        for (cp += 5; isspace((unsigned char) *cp); cp++)
            /* void */;
        if (*cp) {
            vstr_sprintf(why, "%s line %d: text after endif", path, lineno);
            return -1;
        }
        if (table->depth == 0) {
            vstr_sprintf(why, "%s line %d: endif without if", path, lineno);
            return -1;
        }
        table->rules[table->open_ifs[--table->depth]].endif = table->count;
        map_pcre_add(table, MAP_PCRE_ENDIF, lineno);
        return 0;
    }
    if (map_pcre_keyword(cp, "if")) {
        kind = MAP_PCRE_IF;
        for (cp += 2; isspace((unsigned char) *cp); cp++)
            /* void */;
    }
    if (*cp == '!') {
        negate = true;
        cp++;
    }
    delim = *cp;
    if (delim == 0 || isalnum((unsigned char) delim) ||
        isspace((unsigned char) delim) || delim == '\\') {
        vstr_sprintf(why, "%s line %d: expected /regex/ at \"%s\"", path,
                     lineno, cp);
        return -1;
    }
    pattern = vstr_alloc(100);
    for (cp++; *cp && *cp != delim; cp++) {
        if (*cp == '\\' && cp[1] != 0)
            vstr_addch(pattern, *cp++);
        vstr_addch(pattern, *cp);
    }
    if (*cp != delim) {
        vstr_sprintf(why, "%s line %d: missing closing '%c' in \"%s\"", path,
                     lineno, delim, line);
        vstr_free(pattern);
        return -1;
    }
    for (cp++; *cp && !isspace((unsigned char) *cp); cp++) {
        switch (*cp) {
        case 'i':
            options ^= PCRE2_CASELESS;
            break;
        case 'm':
            options |= PCRE2_MULTILINE;
            break;
        case 's':
            options |= PCRE2_DOTALL;
            break;
        case 'x':
            options |= PCRE2_EXTENDED;
            break;
        case 'U':
            options |= PCRE2_UNGREEDY;
            break;
        case 'A':
            options |= PCRE2_ANCHORED;
            break;
        default:
            vstr_sprintf(why, "%s line %d: unknown regex flag '%c'", path,
                         lineno, *cp);
            vstr_free(pattern);
            return -1;
        }
    }
    while (isspace((unsigned char) *cp))
        cp++;
    if (kind == MAP_PCRE_IF && *cp) {
        vstr_sprintf(why, "%s line %d: text after if /regex/: \"%s\"", path,
                     lineno, cp);
        vstr_free(pattern);
        return -1;
    }
    if (kind == MAP_PCRE_MATCH && *cp == 0) {
        vstr_sprintf(why, "%s line %d: no result after the regex", path,
                     lineno);
        vstr_free(pattern);
        return -1;
    }
    rule = map_pcre_add(table, kind, lineno);
    rule->negate = negate;
    rule->code =
        pcre2_compile((PCRE2_SPTR) vstr_str(pattern), vstr_len(pattern),
                      options, &errcode, &erroff, NULL);
    if (rule->code == NULL) {
        PCRE2_UCHAR message[256];

        (void) pcre2_get_error_message(errcode, message, sizeof(message));
        vstr_sprintf(why,
                     "%s line %d: error in regex %c%s%c: %s (at "
                     "offset %lu)",
                     path, lineno, delim, vstr_str(pattern), delim,
                     (char *) message, (unsigned long) erroff);
        vstr_free(pattern);
        return -1;
    }
    vstr_free(pattern);
    (void) pcre2_pattern_info(rule->code, PCRE2_INFO_CAPTURECOUNT, &groups);
    if (groups + 1 > table->max_groups)
        table->max_groups = groups + 1;
    if (kind == MAP_PCRE_IF) {
        table->open_ifs[table->depth++] = table->count - 1;
        return 0;
    }
    rule->result = mystrdup(cp);
    if ((refs = map_pcre_refs(cp, why)) < 0) {
        vstr_sprintf(why, "%s line %d: bad $ in result \"%s\"", path, lineno,
                     cp);
        return -1;
    }
    if (refs > 0 && negate) {
        vstr_sprintf(why,
                     "%s line %d: $%d in the result of a negated "
                     "(!/regex/) rule",
                     path, lineno, refs);
        return -1;
    }
    if ((uint32_t) refs > groups) {
        vstr_sprintf(why, "%s line %d: $%d but the regex has %u group%s", path,
                     lineno, refs, groups, groups == 1 ? "" : "s");
        return -1;
    }
    return 0;
}

/* map_pcre_close - free the rules */
static void map_pcre_close(void *context)
{
    MAP_PCRE *table = context;

    for (size_t i = 0; i < table->count; i++) {
        pcre2_code_free(table->rules[i].code);
        myfree(table->rules[i].result);
    }
    myfree(table->rules);
    myfree(table->open_ifs);
    pcre2_match_data_free(table->match);
    pcre2_match_context_free(table->context);
    myfree(table->path);
    myfree(table);
}

/* map_pcre_open - compile the file */
static void *map_pcre_open(const char *name, int flags, VSTR *why, char **watch,
                           struct stat *st)
{
    MAP_PCRE *table = mycalloc(1, sizeof(*table));

    table->path = mystrdup(name);
    if (map_lines_read(name, map_pcre_line, table, st, why) < 0) {
        map_pcre_close(table);
        return NULL;
    }
    if (table->depth > 0) {
        vstr_sprintf(why, "%s line %d: if without endif", name,
                     table->rules[table->open_ifs[table->depth - 1]].lineno);
        map_pcre_close(table);
        return NULL;
    }
    table->match = pcre2_match_data_create(table->max_groups + 1, NULL);
    table->context = pcre2_match_context_create(NULL);
    if (table->match == NULL || table->context == NULL)
        msg_fatal("%s: out of memory", __func__);
    (void) pcre2_set_match_limit(table->context, MAP_PCRE_MATCH_LIMIT);
    *watch = mystrdup(name);
    return table;
}

/* map_pcre_matches - rule's regex matches key (errors: no, with a warning) */
static bool map_pcre_matches(MAP_PCRE *table, const MAP_PCRE_RULE *rule,
                             const char *key, int *groups)
{
    int rc = pcre2_match(rule->code, (PCRE2_SPTR) key, strlen(key), 0, 0,
                         table->match, table->context);

    *groups = rc;
    if (rc >= 0)
        return true;
    if (rc != PCRE2_ERROR_NOMATCH) {
        PCRE2_UCHAR message[256];

        (void) pcre2_get_error_message(rc, message, sizeof(message));
        msg_warn("%s line %d: matching \"%.*s%s\": %s: rule skipped",
                 table->path, rule->lineno, MAP_PCRE_LOG_KEY, key,
                 strlen(key) > MAP_PCRE_LOG_KEY ? "..." : "", (char *) message);
    }
    return false;
}

/* map_pcre_expand - the result with $n replaced */
static void map_pcre_expand(MAP_PCRE *table, const char *result,
                            const char *key, int groups, VSTR *out)
{
    PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(table->match);
    const char *cp;

    vstr_reset(out);
    for (cp = result; *cp; cp++) {
        char *end;
        long n;

        if (*cp != '$') {
            vstr_addch(out, *cp);
            continue;
        }
        if (cp[1] == '$') {
            vstr_addch(out, '$');
            cp++;
            continue;
        }
        if (cp[1] == '{') {
            n = strtol(cp + 2, &end, 10);
        } else if (isdigit((unsigned char) cp[1])) {
            n = strtol(cp + 1, &end, 10);
            end--;
        } else {
            vstr_addch(out, '$');
            continue;
        }
        if (n < groups && ovector[2 * n] != PCRE2_UNSET)
            vstr_ncat(out, key + ovector[2 * n],
                      ovector[2 * n + 1] - ovector[2 * n]);
        cp = end;
    }
}

/* map_pcre_get - the first rule that applies */
static const char *map_pcre_get(void *context, const char *key, VSTR *result,
                                int *error)
{
    MAP_PCRE *table = context;
    int groups;

    for (size_t i = 0; i < table->count; i++) {
        MAP_PCRE_RULE *rule = table->rules + i;

        switch (rule->kind) {
        case MAP_PCRE_ENDIF:
            break;
        case MAP_PCRE_IF:
            if (map_pcre_matches(table, rule, key, &groups) == rule->negate)
                i = rule->endif;
            break;
        case MAP_PCRE_MATCH:
            if (map_pcre_matches(table, rule, key, &groups) != rule->negate) {
                map_pcre_expand(table, rule->result, key,
                                rule->negate ? 0 : groups, result);
                *error = MAP_OK;
                return vstr_str(result);
            }
            break;
        }
    }
    *error = MAP_NOTFOUND;
    return NULL;
}

const MAP_TYPE map_type_pcre = {
    "pcre",         MAP_TYPE_PATTERN | MAP_TYPE_NOFOLD,
    map_pcre_open,  map_pcre_get,
    map_pcre_close, NULL,
};

const MAP_TYPE map_type_regexp = {
    "regexp",       MAP_TYPE_PATTERN | MAP_TYPE_NOFOLD,
    map_pcre_open,  map_pcre_get,
    map_pcre_close, NULL,
};
