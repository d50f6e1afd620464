/*
 * warmup - daily caps of new source addresses and the adaptive schedule
 *
 * See warmup.h for the syntax, the contract and how qmgr calls it. The
 * table is read with the maps layer's text reader (map_text_read), as
 * shaping_auto.c reads its rules.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>

#include "argv.h"
#include "htable.h"
#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"
#include "warmup.h"

#define WARMUP_PPM 1000000LL
#define WARMUP_MAX_DAY 2932896LL /* 9999-12-31 */
#define WARMUP_MAX_COUNT 1000000000000LL /* of a state file field: x 2e6 fits */
#define WARMUP_SOURCE_MAX 63 /* bytes of an address as text */

struct WARMUP_RULES {
    WARMUP_RULE *rules;
    size_t count;
    size_t cap;
    HTABLE *by_source; /* source -> index + 1 */
};

typedef struct WARMUP_PROVIDER_SENT {
    char name[WARMUP_PROVIDER_MAX + 1];
    long long sent;
} WARMUP_PROVIDER_SENT;

/* What one source did on its latest day. */
typedef struct WARMUP_SOURCE {
    long long day; /* UTC day of the counts */
    long long held;
    bool paused;
    long long attempts;
    long long hard;
    long long block;
    long long sent;
    WARMUP_PROVIDER_SENT providers[WARMUP_MAX_PROVIDERS];
    size_t provider_count;
} WARMUP_SOURCE;

struct WARMUP {
    WARMUP_RULES *rules; /* NULL: none */
    long long hard_ppm;
    long long block_ppm;
    bool dirty;
    HTABLE *sources; /* source -> WARMUP_SOURCE */
};

/* warmup_days_from_civil - days from 1970-01-01 to y-m-d (proleptic
   Gregorian), by eras of 400 years */
static long long warmup_days_from_civil(long long y, long long m, long long d)
{
    long long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* warmup_date_parse - YYYY-MM-DD as UTC days since the epoch */
bool warmup_date_parse(const char *text, long long *day)
{
    static const int month_days[] = {31, 28, 31, 30, 31, 30,
                                     31, 31, 30, 31, 30, 31};
    long long y, m, d;
    int max_day;

    if (strlen(text) != 10 || text[4] != '-' || text[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char) text[i]))
            return false;
    y = (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 +
        (text[3] - '0');
    m = (text[5] - '0') * 10 + (text[6] - '0');
    d = (text[8] - '0') * 10 + (text[9] - '0');
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return false;
    max_day = month_days[m - 1];
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        max_day = 29;
    if (d > max_day)
        return false;
    *day = warmup_days_from_civil(y, m, d);
    return true;
}

/* warmup_list_done - free a list */
static void warmup_list_done(WARMUP_LIST *list)
{
    if (list->provider)
        myfree(list->provider);
    if (list->caps)
        myfree(list->caps);
    memset(list, 0, sizeof(*list));
}

/* warmup_rule_done - free what a parsed rule holds */
void warmup_rule_done(WARMUP_RULE *rule)
{
    if (rule->source)
        myfree(rule->source);
    warmup_list_done(&rule->all);
    for (size_t i = 0; i < rule->provider_count; i++)
        warmup_list_done(&rule->providers[i]);
    if (rule->providers)
        myfree(rule->providers);
    memset(rule, 0, sizeof(*rule));
}

/* warmup_list_parse - "N,N,..." into list */
static int warmup_list_parse(const char *name, const char *text,
                             WARMUP_LIST *list, VSTR *why)
{
    const char *cp = text;

    list->caps = mymalloc_array(WARMUP_MAX_STEPS, sizeof(*list->caps));
    list->count = 0;
    for (;;) {
        long long value = 0;
        size_t digits = 0;

        while (isdigit((unsigned char) *cp)) {
            value = value * 10 + (*cp++ - '0');
            if (++digits > 10)
                break;
        }
        if (digits == 0 || digits > 10 || value < 1 || value > WARMUP_MAX_CAP) {
            vstr_sprintf(why,
                         "%s=%s: step %zu is not a whole number from 1 to "
                         "%lld",
                         name, text, list->count + 1, WARMUP_MAX_CAP);
            return -1;
        }
        if (list->count == WARMUP_MAX_STEPS) {
            vstr_sprintf(why, "%s: more than %d steps", name, WARMUP_MAX_STEPS);
            return -1;
        }
        list->caps[list->count++] = value;
        if (*cp == 0)
            return 0;
        if (*cp != ',') {
            vstr_sprintf(why, "%s=%s: caps are N,N,... (whole numbers)", name,
                         text);
            return -1;
        }
        cp++;
    }
}

/* warmup_provider_name_ok - [a-z0-9][a-z0-9._-]* of at most 63 bytes */
static bool warmup_provider_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > WARMUP_PROVIDER_MAX ||
        !isalnum((unsigned char) *name))
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!(islower((unsigned char) *cp) || isdigit((unsigned char) *cp) ||
              *cp == '.' || *cp == '_' || *cp == '-'))
            return false;
    return true;
}

/* warmup_source_canon - the address as inet_ntop writes it; false when
   key is no IPv4 or IPv6 address */
static bool warmup_source_canon(const char *key, VSTR *out)
{
    unsigned char addr[16];
    char text[INET6_ADDRSTRLEN];

    if (inet_pton(AF_INET, key, addr) == 1) {
        if (inet_ntop(AF_INET, addr, text, sizeof(text)) == NULL)
            return false;
    } else if (inet_pton(AF_INET6, key, addr) == 1) {
        if (inet_ntop(AF_INET6, addr, text, sizeof(text)) == NULL)
            return false;
    } else {
        return false;
    }
    vstr_cpy(out, text);
    return true;
}

/* warmup_item - one name=value of a rule */
static int warmup_item(WARMUP_RULE *rule, const char *name, const char *value,
                       ARGV *seen, VSTR *why)
{
    for (size_t i = 0; i < seen->argc; i++) {
        if (strcmp(seen->argv[i], name) == 0) {
            vstr_sprintf(why, "%s given twice", name);
            return -1;
        }
    }
    argv_add(seen, name);
    if (strcmp(name, "start") == 0) {
        if (!warmup_date_parse(value, &rule->start_day)) {
            vstr_sprintf(why, "start=%s: not a date YYYY-MM-DD", value);
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "caps") == 0)
        return warmup_list_parse(name, value, &rule->all, why);
    if (!warmup_provider_name_ok(name)) {
        vstr_sprintf(why,
                     "\"%s\": not start, caps or a provider name (lowercase "
                     "letters, digits, '.', '_', '-')",
                     name);
        return -1;
    }
    if (rule->provider_count == WARMUP_MAX_PROVIDERS) {
        vstr_sprintf(why, "more than %d providers", WARMUP_MAX_PROVIDERS);
        return -1;
    }
    if (rule->providers == NULL)
        rule->providers =
            mycalloc(WARMUP_MAX_PROVIDERS, sizeof(*rule->providers));
    rule->providers[rule->provider_count].provider = mystrdup(name);
    return warmup_list_parse(name, value,
                             &rule->providers[rule->provider_count++], why);
}

/* warmup_rule_parse - one key and value */
int warmup_rule_parse(const char *key, const char *value, WARMUP_RULE *rule,
                      VSTR *why)
{
    VSTR *canon = vstr_alloc(50);
    ARGV *seen = argv_alloc(4);
    ARGV *items = argv_split(value, " \t\r\n");
    int status = -1;

    memset(rule, 0, sizeof(*rule));
    if (!warmup_source_canon(key, canon)) {
        vstr_sprintf(why, "\"%s\": not an IPv4 or IPv6 address", key);
        goto out;
    }
    rule->source = mystrdup(vstr_str(canon));
    for (size_t i = 0; i < items->argc; i++) {
        char *item = items->argv[i];
        char *eq = strchr(item, '=');

        if (eq == NULL || eq == item) {
            vstr_sprintf(why, "\"%s\": not name=value", item);
            goto out;
        }
        *eq = 0;
        if (warmup_item(rule, item, eq + 1, seen, why) < 0)
            goto out;
    }
    if (rule->all.count == 0 || rule->start_day == 0) {
        bool has_start = false;

        for (size_t i = 0; i < seen->argc; i++)
            if (strcmp(seen->argv[i], "start") == 0)
                has_start = true;
        if (!has_start) {
            vstr_sprintf(why, "start=YYYY-MM-DD is required");
            goto out;
        }
        if (rule->all.count == 0) {
            vstr_sprintf(why, "caps=N,N,... is required");
            goto out;
        }
    }
    status = 0;
out:
    if (status < 0)
        warmup_rule_done(rule);
    vstr_free(canon);
    argv_free(seen);
    argv_free(items);
    return status;
}

/* warmup_rules_free - free a table */
WARMUP_RULES *warmup_rules_free(WARMUP_RULES *rules)
{
    if (rules == NULL)
        return NULL;
    for (size_t i = 0; i < rules->count; i++)
        warmup_rule_done(&rules->rules[i]);
    if (rules->rules)
        myfree(rules->rules);
    htable_free(rules->by_source, NULL);
    myfree(rules);
    return NULL;
}

/* warmup_add - one table line */
static int warmup_add(void *context, const char *path, const char *key,
                      const char *value, int lineno, VSTR *why)
{
    WARMUP_RULES *rules = context;
    WARMUP_RULE rule;
    VSTR *reason = vstr_alloc(100);
    void *earlier;

    if (warmup_rule_parse(key, value, &rule, reason) < 0) {
        vstr_sprintf(why, "%s, line %d: %s", path, lineno, vstr_str(reason));
        vstr_free(reason);
        return -1;
    }
    vstr_free(reason);
    rule.lineno = lineno;
    if (htable_locate(rules->by_source, rule.source, &earlier)) {
        vstr_sprintf(why, "%s, line %d: %s given again (first on line %d)",
                     path, lineno, rule.source,
                     rules->rules[(uintptr_t) earlier - 1].lineno);
        warmup_rule_done(&rule);
        return -1;
    }
    if (rules->count == rules->cap) {
        rules->cap = rules->cap ? 2 * rules->cap : 8;
        rules->rules =
            myrealloc_array(rules->rules, rules->cap, sizeof(*rules->rules));
    }
    rules->rules[rules->count++] = rule;
    htable_enter(rules->by_source, rule.source,
                 (void *) (uintptr_t) rules->count);
    return 0;
}

/* warmup_rules_load - the tables param names, read whole */
WARMUP_RULES *warmup_rules_load(const char *param, const char *value, VSTR *why)
{
    ARGV *specs = maps_split(value, why);
    WARMUP_RULES *rules;

    vstr_reset(why);
    if (specs == NULL)
        return NULL;
    if (specs->argc == 0) {
        argv_free(specs);
        return NULL;
    }
    rules = mycalloc(1, sizeof(*rules));
    rules->by_source = htable_alloc(0);
    for (size_t i = 0; i < specs->argc; i++) {
        const char *spec = specs->argv[i];
        const char *colon = strchr(spec, ':');
        struct stat st;
        size_t type_len = colon ? (size_t) (colon - spec) : 0;

        if (colon == NULL ||
            !((type_len == 8 && strncmp(spec, "texthash", 8) == 0) ||
              (type_len == 4 && strncmp(spec, "hash", 4) == 0) ||
              (type_len == 5 && strncmp(spec, "btree", 5) == 0))) {
            vstr_sprintf(why,
                         "%s: \"%s\": warm-up schedules are read whole: use "
                         "texthash:/path (or hash:, btree:)",
                         param, spec);
            goto bad;
        }
        if (map_text_read(colon + 1, MAP_FLAG_NONE, warmup_add, rules, &st,
                          why) < 0) {
            VSTR *inner = vstr_alloc(100);

            vstr_cpy(inner, vstr_str(why));
            vstr_sprintf(why, "%s: %s", param, vstr_str(inner));
            vstr_free(inner);
            goto bad;
        }
    }
    argv_free(specs);
    return rules;
bad:
    argv_free(specs);
    warmup_rules_free(rules);
    return NULL;
}

/* warmup_rules_count - how many sources have a schedule */
size_t warmup_rules_count(const WARMUP_RULES *rules)
{
    return rules ? rules->count : 0;
}

/* warmup_rules_find - the rule of source, or NULL */
const WARMUP_RULE *warmup_rules_find(const WARMUP_RULES *rules,
                                     const char *source)
{
    void *index;

    if (rules == NULL || source == NULL ||
        !htable_locate(rules->by_source, source, &index))
        return NULL;
    return &rules->rules[(uintptr_t) index - 1];
}

/* warmup_source_free - htable_free's value destructor */
static void warmup_source_free(void *source)
{
    myfree(source);
}

/* warmup_alloc - counts for rules */
WARMUP *warmup_alloc(const WARMUP_CONF *conf, WARMUP_RULES *rules)
{
    WARMUP *w = mycalloc(1, sizeof(*w));

    if (!(conf->hard_ratio > 0) || !(conf->block_ratio > 0))
        msg_panic("%s: bad configuration", __func__);
    w->rules = rules;
    w->hard_ppm = (long long) (conf->hard_ratio * WARMUP_PPM + 0.5);
    w->block_ppm = (long long) (conf->block_ratio * WARMUP_PPM + 0.5);
    w->sources = htable_alloc(0);
    return w;
}

/* warmup_free - free everything, the rules too */
WARMUP *warmup_free(WARMUP *w)
{
    if (w) {
        warmup_rules_free(w->rules);
        htable_free(w->sources, warmup_source_free);
        myfree(w);
    }
    return NULL;
}

/* warmup_set_rules - new rules, the counts kept */
void warmup_set_rules(WARMUP *w, WARMUP_RULES *rules)
{
    warmup_rules_free(w->rules);
    w->rules = rules;
}

/* warmup_list_steps - the longest list of a rule */
static size_t warmup_rule_steps(const WARMUP_RULE *rule)
{
    size_t steps = rule->all.count;

    for (size_t i = 0; i < rule->provider_count; i++)
        if (rule->providers[i].count > steps)
            steps = rule->providers[i].count;
    return steps;
}

/* warmup_day_dirty - was the day of s not clean? */
static bool warmup_day_dirty(const WARMUP *w, const WARMUP_SOURCE *s)
{
    if (s->paused)
        return true;
    if (s->attempts < WARMUP_DAY_MIN_ATTEMPTS)
        return false;
    return s->hard * 2 * WARMUP_PPM >= w->hard_ppm * s->attempts ||
           s->block * 2 * WARMUP_PPM >= w->block_ppm * s->attempts;
}

/* warmup_source - the counts of source, on its day at now (a new day
   closes the last one: held when it was not clean) */
static WARMUP_SOURCE *warmup_source(WARMUP *w, const char *source,
                                    long long now)
{
    WARMUP_SOURCE *s = htable_find(w->sources, source);
    long long today = now >= 0 ? now / WARMUP_DAY_SECONDS : 0;

    if (s == NULL) {
        s = mycalloc(1, sizeof(*s));
        s->day = today;
        htable_enter(w->sources, source, s);
        return s;
    }
    if (today > s->day) {
        const WARMUP_RULE *rule = warmup_rules_find(w->rules, source);

        if (rule && s->day >= rule->start_day &&
            s->day - rule->start_day - s->held <
                (long long) warmup_rule_steps(rule) &&
            warmup_day_dirty(w, s))
            s->held++;
        s->day = today;
        s->paused = false;
        s->attempts = s->hard = s->block = s->sent = 0;
        s->provider_count = 0;
        w->dirty = true;
    }
    return s;
}

/* warmup_effective - the effective day of s under rule, -1 before start */
static long long warmup_effective(const WARMUP_RULE *rule,
                                  const WARMUP_SOURCE *s)
{
    long long day;

    if (s->day < rule->start_day)
        return -1;
    day = s->day - rule->start_day - s->held;
    return day < 0 ? 0 : day;
}

/* warmup_day - the effective day of source */
long long warmup_day(WARMUP *w, const char *source, long long now)
{
    const WARMUP_RULE *rule = warmup_rules_find(w->rules, source);

    if (rule == NULL)
        return -1;
    return warmup_effective(rule, warmup_source(w, source, now));
}

/* warmup_held - the held days of source */
long long warmup_held(WARMUP *w, const char *source, long long now)
{
    return warmup_source(w, source, now)->held;
}

/* warmup_list_of - the list of provider in rule, or NULL */
static const WARMUP_LIST *warmup_list_of(const WARMUP_RULE *rule,
                                         const char *provider)
{
    if (provider == NULL || *provider == 0)
        return &rule->all;
    for (size_t i = 0; i < rule->provider_count; i++)
        if (strcmp(rule->providers[i].provider, provider) == 0)
            return &rule->providers[i];
    return NULL;
}

/* warmup_cap - today's cap */
long long warmup_cap(WARMUP *w, const char *source, const char *provider,
                     long long now)
{
    const WARMUP_RULE *rule = warmup_rules_find(w->rules, source);
    const WARMUP_LIST *list;
    long long day;

    if (rule == NULL || (list = warmup_list_of(rule, provider)) == NULL)
        return -1;
    day = warmup_effective(rule, warmup_source(w, source, now));
    if (day < 0)
        return 0;
    return day < (long long) list->count ? list->caps[day] : -1;
}

/* warmup_provider_slot - the count of provider in s, NULL when none */
static WARMUP_PROVIDER_SENT *warmup_provider_slot(WARMUP_SOURCE *s,
                                                  const char *provider,
                                                  bool create)
{
    for (size_t i = 0; i < s->provider_count; i++)
        if (strcmp(s->providers[i].name, provider) == 0)
            return &s->providers[i];
    if (!create || s->provider_count == WARMUP_MAX_PROVIDERS ||
        strlen(provider) > WARMUP_PROVIDER_MAX)
        return NULL;
    snprintf(s->providers[s->provider_count].name, sizeof(s->providers[0].name),
             "%s", provider);
    s->providers[s->provider_count].sent = 0;
    return &s->providers[s->provider_count++];
}

/* warmup_sent - today's count */
long long warmup_sent(WARMUP *w, const char *source, const char *provider,
                      long long now)
{
    WARMUP_SOURCE *s = warmup_source(w, source, now);
    WARMUP_PROVIDER_SENT *slot;

    if (provider == NULL || *provider == 0)
        return s->sent;
    slot = warmup_provider_slot(s, provider, false);
    return slot ? slot->sent : 0;
}

/* warmup_over_cap - has source reached a cap of today? */
bool warmup_over_cap(WARMUP *w, const char *source, const char *provider,
                     long long now)
{
    long long cap = warmup_cap(w, source, NULL, now);

    if (cap >= 0 && warmup_sent(w, source, NULL, now) >= cap)
        return true;
    if (provider && *provider) {
        cap = warmup_cap(w, source, provider, now);
        if (cap >= 0 && warmup_sent(w, source, provider, now) >= cap)
            return true;
    }
    return false;
}

/* warmup_count - one message goes */
void warmup_count(WARMUP *w, const char *source, const char *provider,
                  long long now)
{
    WARMUP_SOURCE *s = warmup_source(w, source, now);
    const WARMUP_RULE *rule = warmup_rules_find(w->rules, source);

    s->sent++;
    w->dirty = true;
    if (provider && *provider && rule && warmup_list_of(rule, provider)) {
        WARMUP_PROVIDER_SENT *slot = warmup_provider_slot(s, provider, true);

        if (slot)
            slot->sent++;
    }
}

/* warmup_count_provider - the message counted already: provider only */
void warmup_count_provider(WARMUP *w, const char *source, const char *provider,
                           long long now)
{
    const WARMUP_RULE *rule = warmup_rules_find(w->rules, source);
    WARMUP_PROVIDER_SENT *slot;

    if (provider == NULL || *provider == 0 || rule == NULL ||
        warmup_list_of(rule, provider) == NULL)
        return;
    if ((slot = warmup_provider_slot(warmup_source(w, source, now), provider,
                                     true)) != NULL) {
        slot->sent++;
        w->dirty = true;
    }
}

/* warmup_record - an outcome of today */
void warmup_record(WARMUP *w, const char *source, REPUTATION_OUTCOME outcome,
                   bool async, long long now)
{
    WARMUP_SOURCE *s;

    if (outcome == REPUTATION_NONE || (async && outcome == REPUTATION_OK))
        return;
    s = warmup_source(w, source, now);
    if (!async)
        s->attempts++;
    if (outcome == REPUTATION_HARD)
        s->hard++;
    else if (outcome == REPUTATION_BLOCK)
        s->block++;
    w->dirty = true;
}

/* warmup_paused - today is not clean */
void warmup_paused(WARMUP *w, const char *source, long long now)
{
    WARMUP_SOURCE *s = warmup_source(w, source, now);

    if (!s->paused)
        w->dirty = true;
    s->paused = true;
}

/* warmup_dirty - changed since the last save or load? */
bool warmup_dirty(const WARMUP *w)
{
    return w->dirty;
}

/* warmup_key_cmp - qsort by key */
static int warmup_key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* warmup_format - the state file's text */
void warmup_format(WARMUP *w, VSTR *out)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    ARGV *keys = argv_alloc(8);

    vstr_sprintf(out, "%s\n", WARMUP_MAGIC);
    htable_iter_init(&iter, w->sources);
    while (htable_iter_next(&iter, &key, &value))
        argv_add(keys, key);
    if (keys->argc > 1)
        qsort(keys->argv, keys->argc, sizeof(keys->argv[0]), warmup_key_cmp);
    for (size_t i = 0; i < keys->argc; i++) {
        const WARMUP_SOURCE *s = htable_find(w->sources, keys->argv[i]);

        vstr_sprintf_append(out, "%s %lld %lld %d %lld %lld %lld %lld",
                            keys->argv[i], s->day, s->held, s->paused ? 1 : 0,
                            s->attempts, s->hard, s->block, s->sent);
        for (size_t j = 0; j < s->provider_count; j++)
            vstr_sprintf_append(out, " %s=%lld", s->providers[j].name,
                                s->providers[j].sent);
        vstr_addch(out, '\n');
    }
    argv_free(keys);
}

/* warmup_number - 1 to 16 digits, at most max */
static bool warmup_number(const char *text, long long max, long long *out)
{
    long long value = 0;
    size_t digits = 0;

    for (const char *cp = text; *cp; cp++, digits++) {
        if (!isdigit((unsigned char) *cp) || digits >= 16)
            return false;
        value = value * 10 + (*cp - '0');
    }
    if (digits == 0 || value > max)
        return false;
    *out = value;
    return true;
}

/* warmup_line - one line of the state file into w; NULL, or why */
static const char *warmup_line(WARMUP *w, char *line)
{
    char *fields[8 + WARMUP_MAX_PROVIDERS];
    size_t count = 0;
    WARMUP_SOURCE s;
    WARMUP_SOURCE *entry;
    long long paused;

    memset(&s, 0, sizeof(s));
    for (char *cp = line; *cp;) {
        if (*cp == ' ')
            return "fields must be separated by one space";
        if (count == sizeof(fields) / sizeof(fields[0]))
            return "too many fields";
        fields[count++] = cp;
        while (*cp && *cp != ' ')
            cp++;
        if (*cp == ' ') {
            *cp++ = 0;
            if (*cp == 0)
                return "trailing space";
        }
    }
    if (count < 8)
        return "not SOURCE DAY HELD PAUSED ATTEMPTS HARD BLOCK SENT";
    if (strlen(fields[0]) > WARMUP_SOURCE_MAX)
        return "source too long";
    for (const char *cp = fields[0]; *cp; cp++)
        if ((unsigned char) *cp <= ' ' || (unsigned char) *cp >= 0x7f)
            return "bad source";
    if (!warmup_number(fields[1], WARMUP_MAX_DAY, &s.day))
        return "bad DAY";
    if (!warmup_number(fields[2], WARMUP_MAX_DAY, &s.held))
        return "bad HELD";
    if (!warmup_number(fields[3], 1, &paused))
        return "bad PAUSED (0 or 1)";
    s.paused = paused != 0;
    if (!warmup_number(fields[4], WARMUP_MAX_COUNT, &s.attempts) ||
        !warmup_number(fields[5], WARMUP_MAX_COUNT, &s.hard) ||
        !warmup_number(fields[6], WARMUP_MAX_COUNT, &s.block) ||
        !warmup_number(fields[7], WARMUP_MAX_COUNT, &s.sent))
        return "bad count";
    for (size_t i = 8; i < count; i++) {
        char *eq = strchr(fields[i], '=');
        long long sent;

        if (eq == NULL)
            return "not PROVIDER=SENT";
        *eq = 0;
        if (!warmup_provider_name_ok(fields[i]))
            return "bad provider name";
        if (!warmup_number(eq + 1, WARMUP_MAX_COUNT, &sent))
            return "bad provider count";
        if (warmup_provider_slot(&s, fields[i], false))
            return "provider given twice";
        warmup_provider_slot(&s, fields[i], true)->sent = sent;
    }
    if ((entry = htable_find(w->sources, fields[0])) == NULL) {
        entry = mymalloc(sizeof(*entry));
        htable_enter(w->sources, fields[0], entry);
    }
    *entry = s;
    return NULL;
}

/* warmup_parse - the state file's text into w */
int warmup_parse(WARMUP *w, const char *text, size_t len, const char *origin)
{
    const char *end = text + len;
    const char *cp = text;
    VSTR *line = vstr_alloc(100);
    int lineno = 0;
    int bad = 0;

    while (cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));
        size_t line_len = nl ? (size_t) (nl - cp) : (size_t) (end - cp);
        const char *why = NULL;

        lineno++;
        vstr_ncpy(line, cp, line_len);
        cp = nl ? nl + 1 : end;
        if (nl == NULL)
            why = "no newline at the end (truncated file)";
        else if (memchr(vstr_str(line), 0, line_len))
            why = "NUL byte";
        else if (lineno == 1) {
            if (strcmp(vstr_str(line), WARMUP_MAGIC) != 0) {
                msg_warn("%s, line 1: not \"%s\": the file is ignored", origin,
                         WARMUP_MAGIC);
                bad++;
                break;
            }
            continue;
        } else {
            why = warmup_line(w, vstr_str(line));
        }
        if (why) {
            msg_warn("%s, line %d: %s: line skipped", origin, lineno, why);
            bad++;
        }
    }
    if (lineno == 0) {
        msg_warn("%s: empty: the file is ignored", origin);
        bad++;
    }
    w->dirty = false;
    vstr_free(line);
    return bad;
}

/* warmup_save - the state file, durably */
int warmup_save(WARMUP *w, const char *path, VSTR *why)
{
    VSTR *text = vstr_alloc(200);
    int status = 0;

    warmup_format(w, text);
    if (safe_file_write(path, vstr_str(text), vstr_len(text), 0600) < 0) {
        vstr_sprintf(why, "write %s: %s", path, strerror(errno));
        status = -1;
    } else {
        w->dirty = false;
    }
    vstr_free(text);
    return status;
}

/* warmup_load - the state file, when there is one */
int warmup_load(WARMUP *w, const char *path, VSTR *why)
{
    size_t len = 0;
    char *data = safe_file_read(path, WARMUP_FILE_MAX, &len);

    if (data == NULL) {
        if (errno == ENOENT)
            return 0;
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        return -1;
    }
    (void) warmup_parse(w, data, len, path);
    myfree(data);
    return 0;
}
