/*
 * bounce_class - classify a delivery failure: a stable category and hard/soft
 *
 * See bounce_class.h; conf/bounce-classes has the rule syntax. A rule is a
 * category, a hardness and one or more matchers that must all match:
 * dsn=GLOB over the enhanced status code, code=GLOB over the three-digit
 * reply code, text=/REGEX/ (PCRE2, caseless) over the reply text. The rules
 * are tried in file order; the first that matches wins.
 */
#include "sys_defs.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <string.h>

#include "bounce_class.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define BOUNCE_CLASS_FILE_MAX (1024 * 1024) /* largest rules file */
#define BOUNCE_CLASS_GLOB_MAX 16 /* longest dsn= or code= pattern */

/* The closed set of categories: a rule's name points into this table. */
static const char *const bounce_class_names[] = {
    BOUNCE_CLASS_USER_UNKNOWN,      BOUNCE_CLASS_MAILBOX_FULL,
    BOUNCE_CLASS_MAILBOX_DISABLED,  BOUNCE_CLASS_DOMAIN_NOT_FOUND,
    BOUNCE_CLASS_POLICY_BLOCKED,    BOUNCE_CLASS_SPAM_CONTENT,
    BOUNCE_CLASS_RATE_LIMITED,      BOUNCE_CLASS_AUTH_FAILURE,
    BOUNCE_CLASS_MESSAGE_TOO_LARGE, BOUNCE_CLASS_RELAY_DENIED,
    BOUNCE_CLASS_TRANSIENT_NETWORK, BOUNCE_CLASS_OTHER,
};

typedef enum BOUNCE_CLASS_HARD {
    BOUNCE_CLASS_HARD_NO, /* never hard */
    BOUNCE_CLASS_HARD_YES, /* always hard */
    BOUNCE_CLASS_HARD_PERMANENT, /* hard when the failure is permanent */
} BOUNCE_CLASS_HARD;

typedef struct BOUNCE_CLASS_RULE {
    const char *category; /* from bounce_class_names */
    BOUNCE_CLASS_HARD hard;
    char dsn[BOUNCE_CLASS_GLOB_MAX]; /* "" when not given */
    char code[BOUNCE_CLASS_GLOB_MAX]; /* "" when not given */
    pcre2_code *text; /* NULL when not given */
} BOUNCE_CLASS_RULE;

struct BOUNCE_CLASS_RULES {
    BOUNCE_CLASS_RULE *rules;
    size_t count;
    size_t cap;
    pcre2_match_data *match;
};

/* The built-in rules: conf/bounce-classes, made into a C string by the
   build (global/Makefile.in). */
static const char bounce_class_builtin_text[] =
#include "bounce_class_builtin.inc"
    ;

/* bounce_class_builtin - the built-in rules text (conf/bounce-classes) */
const char *bounce_class_builtin(void)
{
    return bounce_class_builtin_text;
}

/* bounce_class_glob_ok - digits, dots and '*' only */
static bool bounce_class_glob_ok(const char *glob)
{
    if (*glob == 0)
        return false;
    for (const char *cp = glob; *cp; cp++)
        if (!isdigit((unsigned char) *cp) && *cp != '.' && *cp != '*' &&
            *cp != 'x' && *cp != 'X')
            return false;
    return true;
}

/* bounce_class_glob_match - "5.1.*", "5.*.*", "55x": '*' any digits
   (within one dot-separated part), 'x' one digit */
static bool bounce_class_glob_match(const char *glob, const char *str)
{
    while (*glob) {
        if (*glob == '*') {
            glob++;
            while (isdigit((unsigned char) *str))
                str++;
        } else if (*glob == 'x' || *glob == 'X') {
            if (!isdigit((unsigned char) *str))
                return false;
            glob++, str++;
        } else {
            if (*glob != *str)
                return false;
            glob++, str++;
        }
    }
    return *str == 0;
}

/* bounce_class_rule_free - what one rule holds */
static void bounce_class_rule_free(BOUNCE_CLASS_RULE *rule)
{
    if (rule->text != NULL)
        pcre2_code_free(rule->text);
}

/* bounce_class_regex - compile "/regex/" (or "/regex/i"): NULL and why */
static pcre2_code *bounce_class_regex(const char *spec, VSTR *why)
{
    size_t len = strlen(spec);
    int err;
    PCRE2_SIZE offset;
    pcre2_code *code;
    PCRE2_UCHAR msg[256];

    if (len < 2 || spec[0] != '/') {
        vstr_cpy(why, "text= wants /regex/");
        return NULL;
    }
    /* Flags after the last '/': only i (always on) is known. */
    while (len > 1 && spec[len - 1] != '/') {
        if (spec[len - 1] != 'i') {
            vstr_sprintf(why, "text=: unknown flag '%c'", spec[len - 1]);
            return NULL;
        }
        len--;
    }
    if (len < 3) {
        vstr_cpy(why, "text= wants /regex/ (empty or unterminated)");
        return NULL;
    }
    code = pcre2_compile((PCRE2_SPTR) spec + 1, len - 2,
                         PCRE2_CASELESS | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                         &err, &offset, NULL);
    if (code == NULL) {
        pcre2_get_error_message(err, msg, sizeof(msg));
        vstr_sprintf(why, "text=: %s at offset %zu", (const char *) msg,
                     (size_t) offset);
    }
    return code;
}

/* bounce_class_rule_parse - one line's fields into rule; -1 and why */
static int bounce_class_rule_parse(char *line, BOUNCE_CLASS_RULE *rule,
                                   VSTR *why)
{
    char *cp = line;
    char *word;
    size_t i;

    memset(rule, 0, sizeof(*rule));
#define NEXT_WORD()                                                            \
    (cp += strspn(cp, " \t"), word = cp, cp += strcspn(cp, " \t"),             \
     (*cp ? (*cp++ = 0) : 0), word)
    word = NEXT_WORD();
    for (i = 0; i < SLUICE_ARRAY_LEN(bounce_class_names); i++)
        if (strcmp(word, bounce_class_names[i]) == 0)
            rule->category = bounce_class_names[i];
    if (rule->category == NULL) {
        vstr_sprintf(why, "unknown category \"%s\"", word);
        return -1;
    }
    word = NEXT_WORD();
    if (strcmp(word, "yes") == 0)
        rule->hard = BOUNCE_CLASS_HARD_YES;
    else if (strcmp(word, "no") == 0)
        rule->hard = BOUNCE_CLASS_HARD_NO;
    else if (strcmp(word, "permanent") == 0)
        rule->hard = BOUNCE_CLASS_HARD_PERMANENT;
    else {
        vstr_sprintf(why, "hard must be yes, no or permanent, not \"%s\"",
                     word);
        return -1;
    }
    for (;;) {
        cp += strspn(cp, " \t");
        if (*cp == 0)
            break;
        if (strncmp(cp, "text=", 5) == 0) {
            /* The regex is the rest of the line (it may hold spaces). */
            VSTR *spec = vstr_alloc(64);

            vstr_cpy(spec, cp + 5);
            vstr_trim(spec);
            if (rule->text != NULL) {
                vstr_free(spec);
                vstr_cpy(why, "text= given twice");
                return -1;
            }
            rule->text = bounce_class_regex(vstr_str(spec), why);
            vstr_free(spec);
            if (rule->text == NULL)
                return -1;
            break;
        }
        word = NEXT_WORD();
        char *dest = strncmp(word, "dsn=", 4) == 0    ? rule->dsn
                     : strncmp(word, "code=", 5) == 0 ? rule->code
                                                      : NULL;
        if (dest == NULL) {
            vstr_sprintf(why, "unknown matcher \"%s\" (dsn=, code=, text=)",
                         word);
            return -1;
        }
        word = strchr(word, '=') + 1;
        if (!bounce_class_glob_ok(word) ||
            strlen(word) >= BOUNCE_CLASS_GLOB_MAX) {
            vstr_sprintf(why, "bad pattern \"%s\" (digits, '.', '*', 'x')",
                         word);
            return -1;
        }
        if (*dest) {
            vstr_sprintf(why, "matcher \"%s\" given twice", word);
            return -1;
        }
        snprintf(dest, BOUNCE_CLASS_GLOB_MAX, "%s", word);
    }
#undef NEXT_WORD
    if (rule->text == NULL && !*rule->dsn && !*rule->code &&
        strcmp(rule->category, BOUNCE_CLASS_OTHER) != 0) {
        vstr_cpy(why, "a rule needs dsn=, code= or text=");
        return -1;
    }
    return 0;
}

/* bounce_class_rules_parse - rules from text (name for the errors) */
BOUNCE_CLASS_RULES *bounce_class_rules_parse(const char *name, const char *text,
                                             VSTR *why)
{
    BOUNCE_CLASS_RULES *rules = mymalloc(sizeof(*rules));
    VSTR *line = vstr_alloc(256);
    VSTR *reason = vstr_alloc(100);
    const char *cp = text;
    size_t lineno = 0;

    memset(rules, 0, sizeof(*rules));
    while (*cp) {
        size_t len = strcspn(cp, "\n");
        BOUNCE_CLASS_RULE rule;
        char *start;

        lineno++;
        vstr_ncpy(line, cp, len);
        cp += len + (cp[len] == '\n');
        vstr_trim(line);
        start = vstr_str(line) + strspn(vstr_str(line), " \t");
        if (*start == 0 || *start == '#')
            continue;
        if (bounce_class_rule_parse(start, &rule, reason) < 0) {
            vstr_sprintf(why, "%s:%zu: %s", name, lineno, vstr_str(reason));
            bounce_class_rule_free(&rule);
            goto fail;
        }
        if (rules->count == rules->cap) {
            rules->cap = rules->cap ? 2 * rules->cap : 64;
            rules->rules =
                myrealloc(rules->rules, rules->cap * sizeof(*rules->rules));
        }
        rules->rules[rules->count++] = rule;
    }
    if (rules->count == 0) {
        vstr_sprintf(why, "%s: no rules", name);
        goto fail;
    }
    rules->match = pcre2_match_data_create(1, NULL);
    vstr_free(line);
    vstr_free(reason);
    return rules;

fail:
    vstr_free(line);
    vstr_free(reason);
    bounce_class_rules_free(rules);
    return NULL;
}

/* bounce_class_rules_load - the rules of path, or the built-in ones */
BOUNCE_CLASS_RULES *bounce_class_rules_load(const char *path, VSTR *why)
{
    BOUNCE_CLASS_RULES *rules;
    size_t len;
    char *text;

    if (path == NULL || *path == 0)
        return bounce_class_rules_parse("built-in bounce classes",
                                        bounce_class_builtin_text, why);
    if ((text = safe_file_read(path, BOUNCE_CLASS_FILE_MAX, &len)) == NULL) {
        vstr_sprintf(why, "%s: %s", path,
                     errno == EFBIG ? "larger than 1 MB" : strerror(errno));
        return NULL;
    }
    if (strlen(text) != len) {
        size_t lineno = 1;

        for (const char *cp = text; *cp; cp++)
            lineno += *cp == '\n';
        vstr_sprintf(why, "%s:%zu: NUL byte in line", path, lineno);
        myfree(text);
        return NULL;
    }
    rules = bounce_class_rules_parse(path, text, why);
    myfree(text);
    return rules;
}

/* bounce_class_rules_conf - a daemon's rules; never NULL */
BOUNCE_CLASS_RULES *bounce_class_rules_conf(const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_CLASS_RULES *rules;
    const char *path = mail_conf_str(conf, "bounce_classes_file");

    if ((rules = bounce_class_rules_load(path, why)) == NULL) {
        msg_warn("bounce_classes_file: %s; using the built-in rules",
                 vstr_str(why));
        if ((rules = bounce_class_rules_load(NULL, why)) == NULL)
            msg_panic("%s: built-in rules: %s", __func__, vstr_str(why));
    }
    vstr_free(why);
    return rules;
}

/* bounce_class_result - classify a delivery result */
void bounce_class_result(const BOUNCE_CLASS_RULES *rules, const char *dsn,
                         const char *diagnostic, const char *reason,
                         BOUNCE_CLASS *out)
{
    int code = bounce_class_reply_code(diagnostic);

    /* The reason holds the reply ("host ... said: 550 ...") or, with no
       reply, our own words; it is what people read, so it is what the
       rules look at. */
    bounce_class_classify(rules, dsn, code,
                          reason && *reason ? reason : diagnostic, out);
}

/* bounce_class_rules_count - how many rules */
size_t bounce_class_rules_count(const BOUNCE_CLASS_RULES *rules)
{
    return rules->count;
}

/* bounce_class_rules_free - release; returns NULL */
BOUNCE_CLASS_RULES *bounce_class_rules_free(BOUNCE_CLASS_RULES *rules)
{
    if (rules == NULL)
        return NULL;
    for (size_t i = 0; i < rules->count; i++)
        bounce_class_rule_free(&rules->rules[i]);
    myfree(rules->rules);
    if (rules->match != NULL)
        pcre2_match_data_free(rules->match);
    myfree(rules);
    return NULL;
}

/* bounce_class_reply_code - the SMTP reply code in text, else 0 */
int bounce_class_reply_code(const char *text)
{
    const char *cp;

    if (text == NULL)
        return 0;
    /* "... said: 550 ..." (our reason), "smtp; 550 ..." (Diagnostic-Code),
       or the reply itself. */
    if ((cp = strstr(text, " said: ")) != NULL)
        cp += 7;
    else if (strncasecmp(text, "smtp;", 5) == 0)
        cp = text + 5 + strspn(text + 5, " \t");
    else
        cp = text;
    if ((cp[0] == '2' || cp[0] == '4' || cp[0] == '5') &&
        isdigit((unsigned char) cp[1]) && isdigit((unsigned char) cp[2]) &&
        (cp[3] == ' ' || cp[3] == '-' || cp[3] == 0))
        return (cp[0] - '0') * 100 + (cp[1] - '0') * 10 + (cp[2] - '0');
    return 0;
}

/* bounce_class_classify - fill out; the index of the rule that matched */
int bounce_class_classify(const BOUNCE_CLASS_RULES *rules, const char *dsn,
                          int reply_code, const char *text, BOUNCE_CLASS *out)
{
    char code[8] = "";
    size_t text_len;
    bool permanent;

    if (dsn == NULL)
        dsn = "";
    if (text == NULL)
        text = "";
    if (reply_code <= 0)
        reply_code = bounce_class_reply_code(text);
    if (reply_code >= 200 && reply_code <= 599)
        snprintf(code, sizeof(code), "%d", reply_code);
    permanent = *code ? *code == '5' : dsn[0] == '5';
    text_len = strnlen(text, BOUNCE_CLASS_TEXT_MAX);
    for (size_t i = 0; i < rules->count; i++) {
        const BOUNCE_CLASS_RULE *rule = &rules->rules[i];

        if (*rule->dsn && !bounce_class_glob_match(rule->dsn, dsn))
            continue;
        if (*rule->code && !bounce_class_glob_match(rule->code, code))
            continue;
        if (rule->text != NULL &&
            pcre2_match(rule->text, (PCRE2_SPTR) text, text_len, 0, 0,
                        rules->match, NULL) < 0)
            continue;
        out->category = rule->category;
        out->hard = rule->hard == BOUNCE_CLASS_HARD_YES ||
                    (rule->hard == BOUNCE_CLASS_HARD_PERMANENT && permanent);
        return (int) i;
    }
    out->category = BOUNCE_CLASS_OTHER;
    out->hard = permanent;
    return -1;
}
