/*
 * mail_conf - main.cf: reading, expansion, typed values, editing
 *
 * main.cf holds `name = value` lines. A line whose first non-blank byte is
 * '#' is a comment (a '#' later in a value is part of the value, as in
 * Postfix); a line that starts with white space continues the previous
 * logical line (joined with one space); blank and comment lines are skipped
 * and do not end a logical line. A later setting of a name wins.
 *
 * Values expand $name and ${name} recursively, $$ is a literal '$', and an
 * unknown name expands to "". Everything is expanded and every typed value
 * checked once (its syntax, and a number against the table's bounds), in
 * mail_conf_read(), so a loop or a bad or out-of-range value is reported
 * with its file and line before a program starts work, and the getters
 * never fail (a getter on a name that is not in the table, or of another
 * type, is our bug).
 *
 * myorigin may name a file instead (Debian's `myorigin = /etc/mailname`): a
 * value that starts with '/' after expansion is replaced by the file's
 * first line, or by $myhostname when the file is missing or that line is
 * empty; mail_conf_raw() still gives the file name.
 *
 * A name set in main.cf that is not in the table is kept (it expands like
 * any other) but earns a warning, unless it is used: referred to as $name by
 * another value (Postfix's rule for user-defined parameters), or the
 * per-service form SERVICE_PARAM of a master.cf service and a parameter of
 * the table (relay_destination_concurrency_limit: SERVICE_P where P or
 * default_P is in the table).
 *
 * Editing rewrites main.cf through a temporary file, fsync and rename
 * (safe_file_write), keeping every other byte as it was.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>

#include "argv.h"
#include "mail_conf.h"
#include "master_cf.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define MAIL_CONF_FILE_MAX (4 * 1024 * 1024) /* main.cf larger: an error */
#define MAIL_CONF_VALUE_MAX (1024 * 1024) /* one expanded value */
#define MAIL_CONF_LIST_SEP ", \t\r\n" /* between the words of a list */

typedef enum MAIL_CONF_STATE {
    MAIL_CONF_TODO, /* not expanded yet */
    MAIL_CONF_BUSY, /* being expanded: seen again = loop */
    MAIL_CONF_DONE, /* value is set */
} MAIL_CONF_STATE;

typedef struct MAIL_CONF_ENT {
    char *name;
    const MAIL_PARAM *param; /* NULL: not in the table */
    char *raw; /* as in main.cf; NULL: not set */
    int line; /* of raw */
    size_t seq; /* first setting in the file */
    char *def; /* default (table or run time) */
    char *value; /* expanded */
    bool domain_of; /* default: drop the first label */
    bool file_or_name; /* "/path": the first line of that file */
    bool referenced; /* another value uses $name */
    MAIL_CONF_STATE state;
} MAIL_CONF_ENT;

struct MAIL_CONF {
    char *path; /* config_dir/main.cf */
    MAIL_CONF_ENT *ents; /* sorted by name */
    size_t count;
    ARGV *names; /* set in main.cf, file order */
    ARGV *warnings; /* "PATH line N: unknown parameter NAME" */
};

/* mail_conf_name_char - may this byte be part of a parameter name */
static bool mail_conf_name_char(int ch)
{
    return isalnum((unsigned char) ch) || ch == '_';
}

/* mail_conf_name_ok - a non-empty name of name characters only */
static bool mail_conf_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!mail_conf_name_char(name[i]))
            return false;
    return true;
}

/* mail_conf_blank_or_comment - a line that neither sets nor continues */
static bool mail_conf_blank_or_comment(const char *line, size_t len)
{
    size_t skip = 0;

    while (skip < len && isspace((unsigned char) line[skip]))
        skip++;
    return skip == len || line[skip] == '#';
}

/* mail_conf_parse_unit - number with an optional one-letter unit */
static long long mail_conf_parse_unit(const char *value, const char *units,
                                      const long long *factors, bool *ok)
{
    const char *cp = value;
    long long number = 0;
    long long factor = 1;

    *ok = false;
    if (!isdigit((unsigned char) *cp))
        return 0;
    for (; isdigit((unsigned char) *cp); cp++)
        if (__builtin_mul_overflow(number, 10LL, &number) ||
            __builtin_add_overflow(number, (long long) (*cp - '0'), &number))
            return 0;
    if (*cp != 0) {
        const char *unit = strchr(units, *cp);

        if (unit == NULL || cp[1] != 0)
            return 0;
        factor = factors[unit - units];
    }
    if (__builtin_mul_overflow(number, factor, &number))
        return 0;
    *ok = true;
    return number;
}

/* mail_conf_parse_time - seconds, with an optional unit s m h d w */
long long mail_conf_parse_time(const char *value, bool *ok)
{
    static const long long factors[] = {1, 60, 3600, 86400, 7 * 86400};

    return mail_conf_parse_unit(value, "smhdw", factors, ok);
}

/* mail_conf_parse_size - bytes, with an optional unit k m g (1024) */
long long mail_conf_parse_size(const char *value, bool *ok)
{
    static const long long factors[] = {1024LL, 1024LL * 1024,
                                        1024LL * 1024 * 1024};

    return mail_conf_parse_unit(value, "kmg", factors, ok);
}

/* mail_conf_parse_int - a non-negative decimal number */
static long long mail_conf_parse_int(const char *value, bool *ok)
{
    return mail_conf_parse_unit(value, "", NULL, ok);
}

/* mail_conf_parse_bool - yes|no|true|false, any case */
static bool mail_conf_parse_bool(const char *value, bool *ok)
{
    *ok = true;
    if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0)
        return true;
    if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0)
        return false;
    *ok = false;
    return false;
}

/* mail_conf_type_check - is value good for type; the complaint if not
   (a TIME_LIST is checked one time at a time, as a TIME) */
static const char *mail_conf_type_check(MAIL_PARAM_TYPE type, const char *value,
                                        long long *number)
{
    bool ok = true;

    *number = 0;
    switch (type) {
    case MAIL_PARAM_STR:
    case MAIL_PARAM_LIST:
        return NULL;
    case MAIL_PARAM_INT:
        *number = mail_conf_parse_int(value, &ok);
        return ok ? NULL : "bad number";
    case MAIL_PARAM_BOOL:
        (void) mail_conf_parse_bool(value, &ok);
        return ok ? NULL : "bad boolean (use yes or no)";
    case MAIL_PARAM_TIME:
    case MAIL_PARAM_TIME_LIST:
        *number = mail_conf_parse_time(value, &ok);
        return ok ? NULL : "bad time";
    case MAIL_PARAM_SIZE:
        *number = mail_conf_parse_size(value, &ok);
        return ok ? NULL : "bad size";
    }
    msg_panic("%s: unknown type %d", __func__, (int) type);
}

/* mail_conf_bounded - does the type of param carry bounds */
static bool mail_conf_bounded(const MAIL_PARAM *param)
{
    return param->type == MAIL_PARAM_INT || param->type == MAIL_PARAM_TIME ||
           param->type == MAIL_PARAM_SIZE ||
           param->type == MAIL_PARAM_TIME_LIST;
}

/* mail_conf_one_check - is one value (one time of a TIME_LIST) good for
   param; -1 with the complaint appended to why */
static int mail_conf_one_check(const MAIL_PARAM *param, const char *value,
                               VSTR *why)
{
    const char *complaint;
    const char *unit =
        param->type == MAIL_PARAM_TIME || param->type == MAIL_PARAM_TIME_LIST
            ? "s"
            : "";
    long long number;

    if ((complaint = mail_conf_type_check(param->type, value, &number)) !=
        NULL) {
        vstr_sprintf_append(why, "%s \"%s\"", complaint, value);
        return -1;
    }
    if (!mail_conf_bounded(param))
        return 0;
    if (number < param->min) {
        vstr_sprintf_append(why, "%s is below the minimum %lld%s", value,
                            param->min, unit);
        return -1;
    }
    if (number > param->max) {
        vstr_sprintf_append(why, "%s is above the maximum %lld%s", value,
                            param->max, unit);
        return -1;
    }
    return 0;
}

/* mail_conf_value_check - is value good for param (type and bounds); -1
   with the complaint appended to why ("bad size \"x\"", "0 is below the
   minimum 1", times in seconds "1s"; for a TIME_LIST, of the first bad
   time) */
static int mail_conf_value_check(const MAIL_PARAM *param, const char *value,
                                 VSTR *why)
{
    ARGV *words;
    int status = 0;

    if (param->type != MAIL_PARAM_TIME_LIST)
        return mail_conf_one_check(param, value, why);
    words = argv_split(value, MAIL_CONF_LIST_SEP);
    for (size_t i = 0; status == 0 && i < words->argc; i++)
        status = mail_conf_one_check(param, words->argv[i], why);
    argv_free(words);
    return status;
}

/* mail_conf_check_value - check a value before it is written */
int mail_conf_check_value(const char *name, const char *value, VSTR *why)
{
    const MAIL_PARAM *param = mail_param_find(name);

    if (param == NULL || strchr(value, '$') != NULL)
        return 0;
    vstr_sprintf(why, "%s: ", name);
    if (mail_conf_value_check(param, value, why) < 0)
        return -1;
    vstr_reset(why);
    return 0;
}

/* mail_conf_ent_cmp - qsort by name, then by place in the file */
static int mail_conf_ent_cmp(const void *a, const void *b)
{
    const MAIL_CONF_ENT *ea = a;
    const MAIL_CONF_ENT *eb = b;
    int diff = strcmp(ea->name, eb->name);

    if (diff != 0)
        return diff;
    return ea->seq < eb->seq ? -1 : ea->seq > eb->seq;
}

/* mail_conf_find - the entry of name[0..len); NULL when none */
static MAIL_CONF_ENT *mail_conf_find(const MAIL_CONF *conf, const char *name,
                                     size_t len)
{
    size_t low = 0;
    size_t high = conf->count;

    while (low < high) {
        size_t mid = low + (high - low) / 2;
        const char *mid_name = conf->ents[mid].name;
        int diff = strncmp(mid_name, name, len);

        if (diff == 0 && mid_name[len] != 0)
            diff = 1;
        if (diff == 0)
            return conf->ents + mid;
        if (diff < 0)
            low = mid + 1;
        else
            high = mid;
    }
    return NULL;
}

/* mail_conf_where - "PATH line N: name: " or "PATH: name: " into why */
static void mail_conf_where(const MAIL_CONF *conf, const MAIL_CONF_ENT *ent,
                            VSTR *why)
{
    if (ent->raw != NULL && ent->line < 0)
        vstr_sprintf(why, "-o %s: ", ent->name); /* a master.cf override */
    else if (ent->raw != NULL)
        vstr_sprintf(why, "%s line %d: %s: ", conf->path, ent->line, ent->name);
    else
        vstr_sprintf(why, "%s: %s: ", conf->path, ent->name);
}

#define MAIL_CONF_NAME_FILE_MAX 4096 /* myorigin = /etc/mailname */

static int mail_conf_expand(MAIL_CONF *, MAIL_CONF_ENT *, MAIL_CONF_ENT **,
                            size_t, VSTR *);

/* mail_conf_name_file - myorigin = /etc/mailname (Debian's main.cf): a
   value that starts with '/' names a file whose first line is the value; a
   missing file, or one whose first line is empty, means $myhostname. The
   expanded file name is in out, and the result replaces it. */
static int mail_conf_name_file(MAIL_CONF *conf, MAIL_CONF_ENT *ent,
                               MAIL_CONF_ENT **stack, size_t depth, VSTR *out,
                               VSTR *why)
{
    char *text;
    size_t len;
    size_t start;
    MAIL_CONF_ENT *host;

    if ((text = safe_file_read(vstr_str(out), MAIL_CONF_NAME_FILE_MAX, &len)) ==
            NULL &&
        errno != ENOENT) {
        mail_conf_where(conf, ent, why);
        vstr_sprintf_append(why, "read %s: %s", vstr_str(out), strerror(errno));
        return -1;
    }
    if (text != NULL) {
        len = strcspn(text, "\n");
        while (len > 0 && isspace((unsigned char) text[len - 1]))
            len--;
        start = strspn(text, " \t");
        len = len > start ? len - start : 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char ch = (unsigned char) text[start + i];

            if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_') {
                mail_conf_where(conf, ent, why);
                vstr_sprintf_append(
                    why, "%s: bad domain name \"%.*s\"", vstr_str(out),
                    (int) (len < 100 ? len : 100), text + start);
                myfree(text);
                return -1;
            }
        }
        if (len > 0) {
            vstr_ncpy(out, text + start, len);
            myfree(text);
            return 0;
        }
        myfree(text);
    }
    if ((host = mail_conf_find(conf, "myhostname", 10)) == NULL)
        msg_panic("%s: no myhostname", __func__);
    host->referenced = true;
    if (mail_conf_expand(conf, host, stack, depth, why) < 0)
        return -1;
    vstr_cpy(out, host->value);
    return 0;
}

/* mail_conf_expand - expand one entry (and what it refers to) */
static int mail_conf_expand(MAIL_CONF *conf, MAIL_CONF_ENT *ent,
                            MAIL_CONF_ENT **stack, size_t depth, VSTR *why)
{
    const char *src;
    const char *cp;
    VSTR *out;

    if (ent->state == MAIL_CONF_DONE)
        return 0;
    if (ent->state == MAIL_CONF_BUSY) {
        size_t start = 0;

        while (start < depth && stack[start] != ent)
            start++;
        mail_conf_where(conf, ent, why);
        vstr_cat(why, "parameter expansion loop: ");
        for (size_t i = start; i < depth; i++)
            vstr_sprintf_append(why, "$%s -> ", stack[i]->name);
        vstr_sprintf_append(why, "$%s", ent->name);
        return -1;
    }
    if (depth >= conf->count)
        msg_panic("%s: stack overflow", __func__);
    ent->state = MAIL_CONF_BUSY;
    stack[depth++] = ent;
    src = ent->raw ? ent->raw : ent->def ? ent->def : "";
    out = vstr_alloc(strlen(src));
    for (cp = src; *cp; cp++) {
        const char *ref;
        size_t ref_len;
        MAIL_CONF_ENT *ref_ent;

        if (cp[0] != '$') {
            vstr_addch(out, *cp);
            continue;
        }
        if (cp[1] == '$') {
            vstr_addch(out, '$');
            cp++;
            continue;
        }
        if (cp[1] == '{') {
            const char *close = strchr(cp + 2, '}');

            ref = cp + 2;
            ref_len = close ? (size_t) (close - ref) : 0;
            if (close == NULL || !mail_conf_name_ok(ref, ref_len)) {
                mail_conf_where(conf, ent, why);
                vstr_sprintf_append(
                    why, "bad parameter reference \"%.*s\"",
                    close ? (int) (close - cp + 1) : (int) strlen(cp), cp);
                vstr_free(out);
                return -1;
            }
            cp = close;
        } else if (mail_conf_name_char(cp[1])) {
            ref = cp + 1;
            for (ref_len = 0; mail_conf_name_char(ref[ref_len]); ref_len++)
                /* void */;
            cp = ref + ref_len - 1;
        } else {
            /* A lone '$' stays as it is. */
            vstr_addch(out, '$');
            continue;
        }
        if ((ref_ent = mail_conf_find(conf, ref, ref_len)) == NULL)
            continue; /* unknown: expands to "" */
        ref_ent->referenced = true;
        if (mail_conf_expand(conf, ref_ent, stack, depth, why) < 0) {
            vstr_free(out);
            return -1;
        }
        vstr_cat(out, ref_ent->value);
        if (vstr_len(out) > MAIL_CONF_VALUE_MAX) {
            mail_conf_where(conf, ent, why);
            vstr_sprintf_append(why,
                                "value longer than %d bytes after "
                                "expansion",
                                MAIL_CONF_VALUE_MAX);
            vstr_free(out);
            return -1;
        }
    }
    if (ent->domain_of && ent->raw == NULL) {
        /* mydomain: the (configured) myhostname minus its first label. */
        const char *dot = strchr(vstr_str(out), '.');
        char *domain = mystrdup(dot && dot[1] ? dot + 1 : "localdomain");

        vstr_cpy(out, domain);
        myfree(domain);
    }
    if (ent->file_or_name && vstr_str(out)[0] == '/' &&
        mail_conf_name_file(conf, ent, stack, depth, out, why) < 0) {
        vstr_free(out);
        return -1;
    }
    ent->value = vstr_export(out);
    ent->state = MAIL_CONF_DONE;
    return 0;
}

/* mail_conf_runtime_defaults - values of the parameters with NULL default */
static void mail_conf_runtime_defaults(MAIL_CONF *conf)
{
    char host[256 + 16];
    struct passwd *pw;
    MAIL_CONF_ENT *ent;

    if (gethostname(host, sizeof(host) - 16) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 16] = 0;
    if (host[0] == 0)
        snprintf(host, sizeof(host), "localhost");
    if (strchr(host, '.') == NULL) {
        size_t len = strlen(host);

        /* Room was kept above: this cannot truncate. */
        snprintf(host + len, sizeof(host) - len, ".localdomain");
    }
    if ((ent = mail_conf_find(conf, "myhostname", 10)) != NULL)
        ent->def = mystrdup(host);
    if ((ent = mail_conf_find(conf, "mydomain", 8)) != NULL) {
        ent->def = mystrdup("$myhostname");
        ent->domain_of = true;
    }
    if ((ent = mail_conf_find(conf, "myorigin", 8)) != NULL)
        ent->file_or_name = true;
    if ((ent = mail_conf_find(conf, "mail_owner", 10)) != NULL) {
        errno = 0;
        if (geteuid() == 0) {
            /* A system instance: its daemons never run as root. */
            ent->def = mystrdup(MAIL_OWNER_SYSTEM);
        } else if ((pw = getpwuid(geteuid())) != NULL) {
            ent->def = mystrdup(pw->pw_name);
        } else {
            char uid[32];

            snprintf(uid, sizeof(uid), "%ld", (long) geteuid());
            ent->def = mystrdup(uid);
        }
    }
}

/* mail_conf_add - append an entry to the unsorted array */
static MAIL_CONF_ENT *mail_conf_add(MAIL_CONF *conf, size_t *cap,
                                    const char *name, size_t name_len)
{
    MAIL_CONF_ENT *ent;

    if (conf->count >= *cap) {
        *cap = *cap ? *cap * 2 : 128;
        conf->ents = myrealloc_array(conf->ents, *cap, sizeof(*conf->ents));
    }
    ent = conf->ents + conf->count++;
    memset(ent, 0, sizeof(*ent));
    ent->name = mystrndup(name, name_len);
    ent->seq = SIZE_MAX;
    return ent;
}

/* mail_conf_setting - one logical line "name = value"; -1 when bad */
static int mail_conf_setting(MAIL_CONF *conf, size_t *cap, VSTR *logical,
                             int line, VSTR *why)
{
    char *text = vstr_str(vstr_trim(logical));
    char *eq = strchr(text, '=');
    size_t name_len;
    const char *value;
    MAIL_CONF_ENT *ent;

    if (eq == NULL) {
        vstr_sprintf(why, "%s line %d: missing '=' in \"%.100s\"", conf->path,
                     line, text);
        return -1;
    }
    name_len = (size_t) (eq - text);
    while (name_len > 0 && isspace((unsigned char) text[name_len - 1]))
        name_len--;
    if (!mail_conf_name_ok(text, name_len)) {
        vstr_sprintf(why, "%s line %d: bad parameter name \"%.*s\"", conf->path,
                     line, (int) name_len, text);
        return -1;
    }
    value = eq + 1 + strspn(eq + 1, " \t\r\n\v\f");
    ent = mail_conf_add(conf, cap, text, name_len);
    ent->raw = mystrdup(value);
    ent->line = line;
    ent->seq = (size_t) line;
    return 0;
}

/* mail_conf_parse - split main.cf text into settings (unsorted) */
static int mail_conf_parse(MAIL_CONF *conf, size_t *cap, const char *text,
                           size_t len, VSTR *why)
{
    VSTR *logical = vstr_alloc(100);
    const char *cp = text;
    const char *end = text + len;
    int line = 0;
    int logical_line = 0; /* 0: none pending */
    int status = 0;

    while (cp < end && status == 0) {
        const char *eol = memchr(cp, '\n', (size_t) (end - cp));
        size_t line_len = eol ? (size_t) (eol - cp) : (size_t) (end - cp);

        line++;
        if (memchr(cp, 0, line_len) != NULL) {
            vstr_sprintf(why, "%s line %d: NUL byte in line", conf->path, line);
            status = -1;
        } else if (mail_conf_blank_or_comment(cp, line_len)) {
            /* Skipped; a logical line may continue after it. */
        } else if (isspace((unsigned char) *cp)) {
            if (logical_line == 0) {
                vstr_sprintf(why,
                             "%s line %d: continuation line without "
                             "a setting before it",
                             conf->path, line);
                status = -1;
            } else {
                vstr_trim(logical);
                vstr_addch(logical, ' ');
                vstr_ncat(logical, cp + strspn(cp, " \t\r\v\f"),
                          line_len - strspn(cp, " \t\r\v\f"));
            }
        } else {
            if (logical_line != 0)
                status =
                    mail_conf_setting(conf, cap, logical, logical_line, why);
            vstr_ncpy(logical, cp, line_len);
            logical_line = line;
        }
        cp = eol ? eol + 1 : end;
    }
    if (status == 0 && logical_line != 0)
        status = mail_conf_setting(conf, cap, logical, logical_line, why);
    vstr_free(logical);
    return status;
}

/* mail_conf_merge - sort entries and fold each name into one entry */
static void mail_conf_merge(MAIL_CONF *conf)
{
    size_t out = 0;
    ARGV *order;
    MAIL_CONF_ENT **by_seq;
    size_t set = 0;

    qsort(conf->ents, conf->count, sizeof(*conf->ents), mail_conf_ent_cmp);
    for (size_t in = 0; in < conf->count; in++) {
        MAIL_CONF_ENT *ent = conf->ents + in;
        MAIL_CONF_ENT *prev = out > 0 ? conf->ents + out - 1 : NULL;

        if (prev != NULL && strcmp(prev->name, ent->name) == 0) {
            /* Table row first (seq SIZE_MAX sorts last): keep first seq. */
            if (ent->param != NULL) {
                prev->param = ent->param;
                myfree(prev->def);
                prev->def = ent->def;
                ent->def = NULL;
            }
            if (ent->raw != NULL) {
                myfree(prev->raw);
                prev->raw = ent->raw;
                prev->line = ent->line;
                if (prev->seq == SIZE_MAX)
                    prev->seq = ent->seq;
            } else {
                myfree(ent->raw);
            }
            myfree(ent->name);
            continue;
        }
        conf->ents[out++] = *ent;
    }
    conf->count = out;

    /* Names set in main.cf, in the order of their first setting. */
    by_seq = mymalloc_array(conf->count + 1, sizeof(*by_seq));
    for (size_t i = 0; i < conf->count; i++)
        if (conf->ents[i].raw != NULL)
            by_seq[set++] = conf->ents + i;
    for (size_t i = 1; i < set; i++) {
        MAIL_CONF_ENT *key = by_seq[i];
        size_t j = i;

        /* Insertion sort: main.cf files are short and mostly sorted. */
        while (j > 0 && by_seq[j - 1]->seq > key->seq) {
            by_seq[j] = by_seq[j - 1];
            j--;
        }
        by_seq[j] = key;
    }
    order = argv_alloc(set);
    for (size_t i = 0; i < set; i++)
        argv_add(order, by_seq[i]->name);
    myfree(by_seq);
    conf->names = order;
}

/* mail_conf_check_ent - expand an entry and check its type and bounds */
static int mail_conf_check_ent(MAIL_CONF *conf, MAIL_CONF_ENT *ent,
                               MAIL_CONF_ENT **stack, VSTR *why)
{
    if (mail_conf_expand(conf, ent, stack, 0, why) < 0)
        return -1;
    if (ent->param == NULL)
        return 0;
    mail_conf_where(conf, ent, why);
    if (mail_conf_value_check(ent->param, ent->value, why) < 0)
        return -1;
    vstr_reset(why);
    return 0;
}

/* mail_conf_service_param - is name SERVICE_P for a master.cf service,
   with P or default_P a parameter of the table? */
static bool mail_conf_service_param(const MASTER_CF *services, const char *name)
{
    VSTR *def_name;
    bool found = false;

    if (services == NULL)
        return false;
    def_name = vstr_alloc(100);
    for (size_t i = 0; i < services->count && !found; i++) {
        const char *service = services->ents[i].name;
        size_t len = strlen(service);
        const char *rest = name + len + 1;

        if (strncmp(name, service, len) != 0 || name[len] != '_' || !*rest)
            continue;
        vstr_sprintf(def_name, "default_%s", rest);
        found = mail_param_find(rest) != NULL ||
                mail_param_find(vstr_str(def_name)) != NULL;
    }
    vstr_free(def_name);
    return found;
}

/* mail_conf_find_unknown - a warning for each name set in main.cf that no
   one uses; master.cf, when it can be read, names the services */
static void mail_conf_find_unknown(MAIL_CONF *conf, const char *config_dir)
{
    MASTER_CF *services = NULL;
    VSTR *text = vstr_alloc(100);

    for (size_t i = 0; i < conf->names->argc; i++) {
        const char *name = conf->names->argv[i];
        const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

        if (ent->param != NULL || ent->referenced)
            continue;
        if (services == NULL) {
            /* Read only when needed; a broken master.cf names nothing. */
            vstr_sprintf(text, "%s/master.cf", config_dir);
            services = master_cf_read(vstr_str(text), 1, text);
            if (services == NULL)
                services = master_cf_parse("", "master.cf", 1, text);
        }
        if (mail_conf_service_param(services, name))
            continue;
        vstr_sprintf(text, "%s line %d: unknown parameter %s", conf->path,
                     ent->line, name);
        argv_add(conf->warnings, vstr_str(text));
    }
    master_cf_free(services);
    vstr_free(text);
}

/* mail_conf_warnings - one line per name set in main.cf that no one uses,
   "PATH line N: unknown parameter NAME", in file order; programs log them
   once at start, `sluice conf` and `sluice check` print them */
const ARGV *mail_conf_warnings(const MAIL_CONF *conf)
{
    return conf->warnings;
}

/* mail_conf_overrides - "name=value" settings (a daemon's -o options
   from master.cf) that win over main.cf; -1 with why when one is bad */
static int mail_conf_overrides(MAIL_CONF *conf, size_t *cap,
                               const ARGV *overrides, size_t after, VSTR *why)
{
    VSTR *logical = vstr_alloc(100);
    int status = 0;

    for (size_t i = 0; status == 0 && overrides && i < overrides->argc; i++) {
        MAIL_CONF_ENT *ent;

        vstr_cpy(logical, overrides->argv[i]);
        if (strchr(overrides->argv[i], '=') == NULL) {
            vstr_sprintf(why, "-o %s: missing '=' (use -o name=value)",
                         overrides->argv[i]);
            status = -1;
        } else if ((status = mail_conf_setting(conf, cap, logical, 0, why)) ==
                   0) {
            ent = conf->ents + conf->count - 1;
            ent->line = -1;
            ent->seq = after + 1 + i; /* after every main.cf line */
        }
    }
    vstr_free(logical);
    return status;
}

/* mail_conf_read - read, expand and check config_dir/main.cf */
MAIL_CONF *mail_conf_read(const char *config_dir, VSTR *why)
{
    return mail_conf_read_overrides(config_dir, NULL, why);
}

/* mail_conf_read_overrides - main.cf, then name=value overrides */
MAIL_CONF *mail_conf_read_overrides(const char *config_dir,
                                    const ARGV *overrides, VSTR *why)
{
    MAIL_CONF *conf = mymalloc(sizeof(*conf));
    VSTR *path = vstr_alloc(100);
    size_t cap = 0;
    size_t table_count;
    const MAIL_PARAM *table = mail_param_table(&table_count);
    char *text;
    size_t text_len;
    MAIL_CONF_ENT **stack;
    MAIL_CONF_ENT *ent;
    int status = 0;

    vstr_sprintf(path, "%s/main.cf", config_dir);
    conf->path = vstr_export(path);
    conf->ents = NULL;
    conf->count = 0;
    conf->names = NULL;
    conf->warnings = argv_alloc(1);
    for (size_t i = 0; i < table_count; i++) {
        ent = mail_conf_add(conf, &cap, table[i].name, strlen(table[i].name));
        ent->param = table + i;
        ent->def = table[i].def ? mystrdup(table[i].def) : NULL;
    }
    if ((text = safe_file_read(conf->path, MAIL_CONF_FILE_MAX, &text_len)) ==
        NULL) {
        vstr_sprintf(why, "open %s: %s", conf->path, strerror(errno));
        mail_conf_merge(conf);
        return mail_conf_free(conf);
    }
    status = mail_conf_parse(conf, &cap, text, text_len, why);
    if (status == 0)
        status = mail_conf_overrides(conf, &cap, overrides, text_len + 1, why);
    myfree(text);
    mail_conf_merge(conf);
    if (status < 0)
        return mail_conf_free(conf);
    mail_conf_runtime_defaults(conf);

    /* config_directory is always the directory that was read. */
    if ((ent = mail_conf_find(conf, "config_directory", 16)) != NULL) {
        myfree(ent->def);
        ent->def = mystrdup(config_dir);
        ent->value = mystrdup(config_dir);
        ent->state = MAIL_CONF_DONE;
    }

    /* main.cf settings in file order first, so errors follow the file. */
    stack = mymalloc_array(conf->count + 1, sizeof(*stack));
    for (size_t i = 0; status == 0 && i < conf->names->argc; i++) {
        ent = mail_conf_find(conf, conf->names->argv[i],
                             strlen(conf->names->argv[i]));
        status = mail_conf_check_ent(conf, ent, stack, why);
    }
    for (size_t i = 0; status == 0 && i < conf->count; i++)
        status = mail_conf_check_ent(conf, conf->ents + i, stack, why);
    myfree(stack);
    if (status < 0)
        return mail_conf_free(conf);
    mail_conf_find_unknown(conf, config_dir);
    return conf;
}

/* mail_conf_free - release everything; returns NULL */
MAIL_CONF *mail_conf_free(MAIL_CONF *conf)
{
    if (conf == NULL)
        return NULL;
    for (size_t i = 0; i < conf->count; i++) {
        myfree(conf->ents[i].name);
        myfree(conf->ents[i].raw);
        myfree(conf->ents[i].def);
        myfree(conf->ents[i].value);
    }
    myfree(conf->ents);
    argv_free(conf->names);
    argv_free(conf->warnings);
    myfree(conf->path);
    myfree(conf);
    return NULL;
}

/* mail_conf_raw - the value as written in main.cf; NULL when not set */
const char *mail_conf_raw(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

    return ent ? ent->raw : NULL;
}

/* mail_conf_origin - where name's value comes from, for a message:
   "PATH line N: name" when main.cf sets it, else "PATH: name" */
void mail_conf_origin(const MAIL_CONF *conf, const char *name, VSTR *out)
{
    const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

    if (ent != NULL && ent->raw != NULL)
        vstr_sprintf(out, "%s line %d: %s", conf->path, ent->line, name);
    else
        vstr_sprintf(out, "%s: %s", conf->path, name);
}

/* mail_conf_owner - mail_owner's passwd entry; NULL and why when there
   is no such user or it is root */
const struct passwd *mail_conf_owner(const MAIL_CONF *conf, VSTR *why)
{
    const char *name = mail_conf_str(conf, "mail_owner");
    struct passwd *pw;
    char *end;
    long uid;

    errno = 0;
    if ((pw = getpwnam(name)) == NULL) {
        uid = strtol(name, &end, 10);
        if (*name && *end == 0 && uid >= 0 && uid < INT_MAX)
            pw = getpwuid((uid_t) uid);
    }
    if (pw == NULL) {
        vstr_sprintf(
            why,
            "mail_owner %s: no such user; create it with: " MAIL_OWNER_USERADD
            " %s (or set mail_owner to an "
            "unprivileged user that exists)",
            name, name);
        return NULL;
    }
    if (pw->pw_uid == 0) {
        vstr_sprintf(why,
                     "mail_owner %s is root (uid 0): no sluice daemon "
                     "runs as root; set mail_owner to an unprivileged user "
                     "(INSTALL: " MAIL_OWNER_USERADD " " MAIL_OWNER_SYSTEM ")",
                     name);
        return NULL;
    }
    return pw;
}

/* mail_conf_default - the default as written ($name unexpanded): the
   table's, or the one computed at run time (myhostname, mail_owner ...);
   NULL for an unknown name */
const char *mail_conf_default(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

    return ent ? ent->def : NULL;
}

/* mail_conf_names - names set in main.cf, in file order */
const ARGV *mail_conf_names(const MAIL_CONF *conf)
{
    return conf->names;
}

/* mail_conf_str - the expanded value; "" for an unknown name */
const char *mail_conf_str(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

    return ent && ent->value ? ent->value : "";
}

/* mail_conf_typed - the entry of a table parameter of the given type */
static const MAIL_CONF_ENT *mail_conf_typed(const MAIL_CONF *conf,
                                            const char *name,
                                            MAIL_PARAM_TYPE type,
                                            const char *caller)
{
    const MAIL_CONF_ENT *ent = mail_conf_find(conf, name, strlen(name));

    if (ent == NULL || ent->param == NULL)
        msg_panic("%s: unknown parameter \"%s\"", caller, name);
    if (ent->param->type != type)
        msg_panic("%s: parameter \"%s\" has another type", caller, name);
    if (ent->value == NULL)
        msg_panic("%s: parameter \"%s\" not expanded", caller, name);
    return ent;
}

/* mail_conf_int - a checked INT parameter */
long long mail_conf_int(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_INT, __func__);
    bool ok;
    long long value = mail_conf_parse_int(ent->value, &ok);

    if (!ok)
        msg_panic("%s: %s: unchecked value \"%s\"", __func__, name, ent->value);
    return value;
}

/* mail_conf_bool - a checked BOOL parameter */
bool mail_conf_bool(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_BOOL, __func__);
    bool ok;
    bool value = mail_conf_parse_bool(ent->value, &ok);

    if (!ok)
        msg_panic("%s: %s: unchecked value \"%s\"", __func__, name, ent->value);
    return value;
}

/* mail_conf_time - a checked TIME parameter, in seconds */
long long mail_conf_time(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_TIME, __func__);
    bool ok;
    long long value = mail_conf_parse_time(ent->value, &ok);

    if (!ok)
        msg_panic("%s: %s: unchecked value \"%s\"", __func__, name, ent->value);
    return value;
}

/* mail_conf_size - a checked SIZE parameter, in bytes */
long long mail_conf_size(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_SIZE, __func__);
    bool ok;
    long long value = mail_conf_parse_size(ent->value, &ok);

    if (!ok)
        msg_panic("%s: %s: unchecked value \"%s\"", __func__, name, ent->value);
    return value;
}

/* mail_conf_list - a LIST parameter split at commas and white space */
ARGV *mail_conf_list(const MAIL_CONF *conf, const char *name)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_LIST, __func__);

    return argv_split(ent->value, MAIL_CONF_LIST_SEP);
}

/* mail_conf_time_list - a checked TIME_LIST parameter, in seconds */
long long *mail_conf_time_list(const MAIL_CONF *conf, const char *name,
                               size_t *count)
{
    const MAIL_CONF_ENT *ent =
        mail_conf_typed(conf, name, MAIL_PARAM_TIME_LIST, __func__);
    ARGV *words = argv_split(ent->value, MAIL_CONF_LIST_SEP);
    long long *times =
        mymalloc_array(words->argc ? words->argc : 1, sizeof(*times));
    bool ok;

    for (size_t i = 0; i < words->argc; i++) {
        times[i] = mail_conf_parse_time(words->argv[i], &ok);
        if (!ok)
            msg_panic("%s: %s: unchecked value \"%s\"", __func__, name,
                      ent->value);
    }
    *count = words->argc;
    argv_free(words);
    return times;
}

/* mail_conf_edit_name - the name a physical line sets; NULL when none */
static const char *mail_conf_edit_name(const char *line, size_t line_len,
                                       size_t *name_len)
{
    size_t len = 0;

    if (line_len == 0 || isspace((unsigned char) line[0]) ||
        mail_conf_blank_or_comment(line, line_len))
        return NULL;
    while (len < line_len && mail_conf_name_char(line[len]))
        len++;
    *name_len = len;
    return line;
}

/* mail_conf_rewrite - set name = value in main.cf, or with value NULL
   remove every setting of name (and its continuation lines), keeping
   everything else; removing a name that is not set writes nothing */
static int mail_conf_rewrite(const char *config_dir, const char *name,
                             const char *value, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    VSTR *out = NULL;
    struct stat st;
    char *text = NULL;
    size_t text_len;
    size_t name_len = strlen(name);
    bool replacing = false;
    bool found = false;
    int status = -1;

    if (!mail_conf_name_ok(name, name_len)) {
        vstr_sprintf(why, "bad parameter name \"%s\"", name);
        goto out;
    }
    if (value != NULL && strpbrk(value, "\r\n") != NULL) {
        vstr_sprintf(why, "%s: a value may not contain a line break", name);
        goto out;
    }
    vstr_sprintf(path, "%s/main.cf", config_dir);
    if (stat(vstr_str(path), &st) < 0 ||
        (text = safe_file_read(vstr_str(path), MAIL_CONF_FILE_MAX,
                               &text_len)) == NULL) {
        vstr_sprintf(why, "open %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    out = vstr_alloc(text_len + name_len + (value ? strlen(value) : 0) + 8);
    for (const char *cp = text, *end = text + text_len; cp < end;) {
        const char *eol = memchr(cp, '\n', (size_t) (end - cp));
        size_t line_len = eol ? (size_t) (eol - cp) : (size_t) (end - cp);
        size_t full_len = eol ? line_len + 1 : line_len;
        const char *line_name;
        size_t line_name_len;

        if (mail_conf_blank_or_comment(cp, line_len)) {
            /* Comments and blank lines stay, even inside a setting. */
            vstr_ncat(out, cp, full_len);
        } else if (isspace((unsigned char) *cp)) {
            /* A continuation line goes with the setting it continues. */
            if (!replacing)
                vstr_ncat(out, cp, full_len);
        } else if ((line_name = mail_conf_edit_name(cp, line_len,
                                                    &line_name_len)) != NULL &&
                   line_name_len == name_len &&
                   memcmp(line_name, name, name_len) == 0 &&
                   (line_name_len == line_len ||
                    line_name[line_name_len] == '=' ||
                    isspace((unsigned char) line_name[line_name_len]))) {
            /* Every setting of name gets the new value (later ones win),
               or goes. */
            if (value != NULL)
                vstr_sprintf_append(out, "%s =%s%s\n", name, *value ? " " : "",
                                    value);
            replacing = true;
            found = true;
        } else {
            replacing = false;
            vstr_ncat(out, cp, full_len);
        }
        cp += full_len;
    }
    if (!found && value == NULL) {
        status = 0; /* not set: nothing to remove */
        goto out;
    }
    if (!found) {
        if (vstr_len(out) > 0 && vstr_str(out)[vstr_len(out) - 1] != '\n')
            vstr_addch(out, '\n');
        vstr_sprintf_append(out, "%s =%s%s\n", name, *value ? " " : "", value);
    }
    if (safe_file_write(vstr_str(path), vstr_str(out), vstr_len(out),
                        st.st_mode & 07777) < 0) {
        vstr_sprintf(why, "write %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    status = 0;
out:
    myfree(text);
    vstr_free(out);
    vstr_free(path);
    return status;
}

/* mail_conf_edit - set name = value in main.cf, keeping everything else */
int mail_conf_edit(const char *config_dir, const char *name, const char *value,
                   VSTR *why)
{
    return mail_conf_rewrite(config_dir, name, value, why);
}

/* mail_conf_remove - remove name's settings from main.cf */
int mail_conf_remove(const char *config_dir, const char *name, VSTR *why)
{
    return mail_conf_rewrite(config_dir, name, NULL, why);
}
