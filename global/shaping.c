/*
 * shaping - traffic shaping rules (smtp_shaping_maps) and their limits
 *
 * See shaping.h for the syntax and the algorithm. The rules are read with
 * the maps layer's own text reader (maps_priv.h: map_text_read), so a
 * shaping file has exactly the syntax of every other table; the whole file
 * is read because providers are matched by MX suffix, which needs every
 * provider at hand. Nothing here reads a clock or logs.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <limits.h>

#include "argv.h"
#include "htable.h"
#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "shaping.h"
#include "vstr.h"

#define SHAPING_USEC 1000000LL

struct SHAPING_RULES {
    SHAPING_RULE *rules;
    size_t count;
    size_t cap;
    HTABLE *by_key; /* key -> index + 1 (as a pointer-sized integer) */
    const SHAPING_RULE *fallback; /* "default", or NULL */
};

/* shaping_count_parse - a whole decimal number in [min, SHAPING_MAX_COUNT] */
static int shaping_count_parse(const char *name, const char *text,
                               long long min, long long *out, VSTR *why)
{
    long long value = 0;
    const char *cp = text;

    if (*cp == 0) {
        vstr_sprintf(why, "%s: empty value", name);
        return -1;
    }
    for (; *cp; cp++) {
        if (!isdigit((unsigned char) *cp)) {
            vstr_sprintf(why, "%s=%s: not a whole number", name, text);
            return -1;
        }
        value = value * 10 + (*cp - '0');
        if (value > SHAPING_MAX_COUNT) {
            vstr_sprintf(why, "%s=%s: larger than %lld", name, text,
                         SHAPING_MAX_COUNT);
            return -1;
        }
    }
    if (value < min) {
        vstr_sprintf(why, "%s=%s: must be at least %lld", name, text, min);
        return -1;
    }
    *out = value;
    return 0;
}

/* shaping_rate_parse - "N/s", "N/m" or "N/h" */
int shaping_rate_parse(const char *text, SHAPING_RATE *rate, VSTR *why)
{
    const char *slash = strchr(text, '/');
    static const struct {
        const char *unit;
        long long seconds;
    } units[] = {
        {"s", 1},
        {"m", 60},
        {"h", 3600},
    };
    VSTR *count = vstr_alloc(20);
    long long n;
    int status = -1;

    if (slash == NULL) {
        vstr_sprintf(why, "\"%s\": a rate is N/s, N/m or N/h", text);
        goto out;
    }
    vstr_ncpy(count, text, (size_t) (slash - text));
    if (shaping_count_parse("rate", vstr_str(count), 1, &n, why) < 0) {
        vstr_sprintf(why,
                     "\"%s\": a rate is N/s, N/m or N/h with N from 1 "
                     "to %lld",
                     text, SHAPING_MAX_COUNT);
        goto out;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(slash + 1, units[i].unit) == 0) {
            rate->count = n;
            rate->period_usec = units[i].seconds * SHAPING_USEC;
            status = 0;
            goto out;
        }
    }
    vstr_sprintf(why, "\"%s\": unknown unit \"%s\" (s, m or h)", text,
                 slash + 1);
out:
    vstr_free(count);
    return status;
}

/* shaping_rate_format - the rate as it would be written */
const char *shaping_rate_format(const SHAPING_RATE *rate, VSTR *buf)
{
    const char *unit = rate->period_usec == 3600 * SHAPING_USEC ? "h"
                       : rate->period_usec == 60 * SHAPING_USEC ? "m"
                                                                : "s";

    if (rate->count == 0)
        return vstr_str(vstr_cpy(buf, "-"));
    vstr_sprintf(buf, "%lld/%s", rate->count, unit);
    return vstr_str(buf);
}

/* shaping_name_ok - a plausible domain or provider name */
static bool shaping_name_ok(const char *name)
{
    if (*name == 0 || *name == '.' || *name == '-')
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '.' && *cp != '-' &&
            *cp != '_')
            return false;
    return true;
}

/* shaping_rule_done - free what a parsed rule holds */
void shaping_rule_done(SHAPING_RULE *rule)
{
    myfree(rule->key);
    rule->key = NULL;
    if (rule->mx_suffix)
        rule->mx_suffix = argv_free(rule->mx_suffix);
}

/* shaping_suffix_add - one more MX suffix, lowercase */
static int shaping_suffix_add(SHAPING_RULE *rule, const char *suffix, VSTR *why)
{
    VSTR *lower = vstr_alloc(50);
    int status = 0;

    vstr_lower(vstr_cpy(lower, suffix));
    if (!shaping_name_ok(vstr_str(lower)[0] == '.' ? vstr_str(lower) + 1
                                                   : vstr_str(lower))) {
        vstr_sprintf(why, "mx_suffix: \"%s\" is not a host name suffix",
                     suffix);
        status = -1;
    } else {
        argv_add(rule->mx_suffix, vstr_str(lower));
    }
    vstr_free(lower);
    return status;
}

/* shaping_rule_item - one name=value (seen: names given so far) */
static int shaping_rule_item(SHAPING_RULE *rule, const char *name,
                             const char *value, ARGV *seen, VSTR *why)
{
    for (size_t i = 0; i < seen->argc; i++) {
        if (strcmp(seen->argv[i], name) == 0) {
            vstr_sprintf(why, "%s given twice", name);
            return -1;
        }
    }
    argv_add(seen, name);
    if (strcmp(name, "mx_suffix") == 0) {
        if (rule->kind != SHAPING_KIND_PROVIDER) {
            vstr_sprintf(why, "mx_suffix is for provider:NAME entries only");
            return -1;
        }
        rule->mx_suffix = argv_alloc(2);
        if (*value == 0) {
            vstr_sprintf(why, "mx_suffix: empty value");
            return -1;
        }
        return shaping_suffix_add(rule, value, why);
    }
    if (strcmp(name, "max_connections") == 0)
        return shaping_count_parse(name, value, 1, &rule->max_connections, why);
    if (strcmp(name, "burst") == 0)
        return shaping_count_parse(name, value, 1, &rule->burst, why);
    if (strcmp(name, "messages_per_connection") == 0)
        return shaping_count_parse(name, value, 1,
                                   &rule->messages_per_connection, why);
    if (strcmp(name, "message_rate") == 0 ||
        strcmp(name, "connection_rate") == 0) {
        SHAPING_RATE *rate =
            name[0] == 'm' ? &rule->message_rate : &rule->connection_rate;

        if (shaping_rate_parse(value, rate, why) < 0) {
            VSTR *inner = vstr_alloc(100);

            vstr_cpy(inner, vstr_str(why));
            vstr_sprintf(why, "%s: %s", name, vstr_str(inner));
            vstr_free(inner);
            return -1;
        }
        return 0;
    }
    vstr_sprintf(why,
                 "unknown setting \"%s\" (mx_suffix, max_connections, "
                 "message_rate, connection_rate, burst, "
                 "messages_per_connection)",
                 name);
    return -1;
}

/* shaping_rule_parse - one key and its value */
int shaping_rule_parse(const char *key, const char *value, SHAPING_RULE *rule,
                       VSTR *why)
{
    size_t prefix_len = strlen(SHAPING_PROVIDER_PREFIX);
    ARGV *words = argv_split(value, " \t,");
    ARGV *seen = argv_alloc(8);
    VSTR *lower = vstr_alloc(50);
    const char *last_name = NULL;
    int status = -1;

    memset(rule, 0, sizeof(*rule));
    rule->burst = 1;
    vstr_lower(vstr_cpy(lower, key));
    rule->key = mystrdup(vstr_str(lower));
    if (strcmp(rule->key, SHAPING_DEFAULT_KEY) == 0) {
        rule->kind = SHAPING_KIND_DEFAULT;
    } else if (strncmp(rule->key, SHAPING_PROVIDER_PREFIX, prefix_len) == 0) {
        rule->kind = SHAPING_KIND_PROVIDER;
        if (!shaping_name_ok(rule->key + prefix_len)) {
            vstr_sprintf(why, "\"%s\": a provider is provider:NAME", key);
            goto out;
        }
    } else if (!shaping_name_ok(rule->key)) {
        vstr_sprintf(why, "\"%s\": not a domain, provider:NAME or default",
                     key);
        goto out;
    } else {
        rule->kind = SHAPING_KIND_DOMAIN;
    }
    if (words->argc == 0) {
        vstr_sprintf(why, "%s: no settings", key);
        goto out;
    }
    for (size_t i = 0; i < words->argc; i++) {
        char *word = words->argv[i];
        char *eq = strchr(word, '=');

        if (eq == NULL) {
            /* mx_suffix=.a.test,.b.test: the list goes on */
            if (last_name && strcmp(last_name, "mx_suffix") == 0) {
                if (shaping_suffix_add(rule, word, why) < 0)
                    goto out;
                continue;
            }
            vstr_sprintf(why, "\"%s\": expected name=value", word);
            goto out;
        }
        *eq = 0;
        if (shaping_rule_item(rule, word, eq + 1, seen, why) < 0)
            goto out;
        last_name = seen->argv[seen->argc - 1];
    }
    if (rule->kind == SHAPING_KIND_PROVIDER && rule->mx_suffix == NULL) {
        vstr_sprintf(why, "%s: a provider needs mx_suffix=...", key);
        goto out;
    }
    status = 0;
out:
    if (status < 0)
        shaping_rule_done(rule);
    argv_free(words);
    argv_free(seen);
    vstr_free(lower);
    return status;
}

/* shaping_rules_free - free every rule */
SHAPING_RULES *shaping_rules_free(SHAPING_RULES *rules)
{
    if (rules == NULL)
        return NULL;
    for (size_t i = 0; i < rules->count; i++)
        shaping_rule_done(&rules->rules[i]);
    myfree(rules->rules);
    htable_free(rules->by_key, NULL);
    myfree(rules);
    return NULL;
}

/* shaping_rules_add - one table line */
static int shaping_rules_add(void *context, const char *path, const char *key,
                             const char *value, int lineno, VSTR *why)
{
    SHAPING_RULES *rules = context;
    SHAPING_RULE rule;
    VSTR *reason = vstr_alloc(100);
    void *earlier;

    if (shaping_rule_parse(key, value, &rule, reason) < 0) {
        vstr_sprintf(why, "%s, line %d: %s", path, lineno, vstr_str(reason));
        vstr_free(reason);
        return -1;
    }
    vstr_free(reason);
    rule.lineno = lineno;
    if (htable_locate(rules->by_key, rule.key, &earlier)) {
        vstr_sprintf(why, "%s, line %d: %s given again (first on line %d)",
                     path, lineno, rule.key,
                     rules->rules[(uintptr_t) earlier - 1].lineno);
        shaping_rule_done(&rule);
        return -1;
    }
    if (rules->count == rules->cap) {
        rules->cap = rules->cap ? 2 * rules->cap : 8;
        rules->rules =
            myrealloc_array(rules->rules, rules->cap, sizeof(*rules->rules));
    }
    rules->rules[rules->count++] = rule;
    htable_enter(rules->by_key, rule.key, (void *) (uintptr_t) rules->count);
    return 0;
}

/* shaping_rules_load - the tables param names, read whole */
SHAPING_RULES *shaping_rules_load(const char *param, const char *value,
                                  VSTR *why)
{
    ARGV *specs = maps_split(value, why);
    SHAPING_RULES *rules;

    vstr_reset(why);
    if (specs == NULL)
        return NULL;
    if (specs->argc == 0) {
        argv_free(specs);
        return NULL;
    }
    rules = mycalloc(1, sizeof(*rules));
    rules->by_key = htable_alloc(0);
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
                         "%s: \"%s\": shaping rules are read whole: "
                         "use texthash:/path (or hash:, btree:)",
                         param, spec);
            goto bad;
        }
        if (map_text_read(colon + 1, MAP_FLAG_NONE, shaping_rules_add, rules,
                          &st, why) < 0) {
            VSTR *inner = vstr_alloc(100);

            vstr_cpy(inner, vstr_str(why));
            vstr_sprintf(why, "%s: %s", param, vstr_str(inner));
            vstr_free(inner);
            goto bad;
        }
    }
    for (size_t i = 0; i < rules->count; i++)
        if (rules->rules[i].kind == SHAPING_KIND_DEFAULT)
            rules->fallback = &rules->rules[i];
    argv_free(specs);
    return rules;
bad:
    argv_free(specs);
    shaping_rules_free(rules);
    return NULL;
}

/* shaping_rules_count - how many rules */
size_t shaping_rules_count(const SHAPING_RULES *rules)
{
    return rules ? rules->count : 0;
}

/* shaping_rules_at - one rule, in file order */
const SHAPING_RULE *shaping_rules_at(const SHAPING_RULES *rules, size_t index)
{
    if (rules == NULL || index >= rules->count)
        msg_panic("%s: index %zu out of range", __func__, index);
    return &rules->rules[index];
}

/* shaping_rules_exact - the domain's own rule, or NULL */
const SHAPING_RULE *shaping_rules_exact(const SHAPING_RULES *rules,
                                        const char *domain)
{
    VSTR *lower;
    void *found;
    const SHAPING_RULE *rule = NULL;

    if (rules == NULL)
        return NULL;
    lower = vstr_lower(vstr_cpy(vstr_alloc(50), domain));
    if (strncmp(vstr_str(lower), SHAPING_PROVIDER_PREFIX,
                strlen(SHAPING_PROVIDER_PREFIX)) != 0 &&
        strcmp(vstr_str(lower), SHAPING_DEFAULT_KEY) != 0 &&
        htable_locate(rules->by_key, vstr_str(lower), &found))
        rule = &rules->rules[(uintptr_t) found - 1];
    vstr_free(lower);
    return rule;
}

/* shaping_rules_fallback - the default rule, or NULL */
const SHAPING_RULE *shaping_rules_fallback(const SHAPING_RULES *rules)
{
    return rules ? rules->fallback : NULL;
}

/* shaping_rules_providers - how many provider rules */
size_t shaping_rules_providers(const SHAPING_RULES *rules)
{
    size_t count = 0;

    for (size_t i = 0; rules && i < rules->count; i++)
        if (rules->rules[i].kind == SHAPING_KIND_PROVIDER)
            count++;
    return count;
}

/* shaping_rules_domain - the rule of a domain, else the default */
const SHAPING_RULE *shaping_rules_domain(const SHAPING_RULES *rules,
                                         const char *domain)
{
    const SHAPING_RULE *rule = shaping_rules_exact(rules, domain);

    return rule ? rule : shaping_rules_fallback(rules);
}

/* shaping_host_matches - does host (any case, maybe a trailing dot) end in
   one of the suffixes? */
static bool shaping_host_matches(const char *host, const ARGV *suffixes)
{
    size_t len = strlen(host);

    if (len > 0 && host[len - 1] == '.')
        len--;
    for (size_t i = 0; i < suffixes->argc; i++) {
        const char *suffix = suffixes->argv[i];
        size_t slen = strlen(suffix);

        if (slen <= len && strncasecmp(host + len - slen, suffix, slen) == 0 &&
            (suffix[0] == '.' || slen == len || host[len - slen - 1] == '.'))
            return true;
    }
    return false;
}

/* shaping_rules_provider - the provider all of hosts belong to */
const SHAPING_RULE *shaping_rules_provider(const SHAPING_RULES *rules,
                                           const char *const *hosts,
                                           size_t count)
{
    if (rules == NULL || count == 0)
        return NULL;
    for (size_t i = 0; i < rules->count; i++) {
        const SHAPING_RULE *rule = &rules->rules[i];
        size_t n;

        if (rule->kind != SHAPING_KIND_PROVIDER)
            continue;
        for (n = 0; n < count; n++)
            if (!shaping_host_matches(hosts[n], rule->mx_suffix))
                break;
        if (n == count)
            return rule;
    }
    return NULL;
}

/* shaping_gcra_interval - T, rounded up: the rate is never exceeded */
long long shaping_gcra_interval(const SHAPING_RATE *rate)
{
    if (rate->count <= 0)
        return 0;
    return (rate->period_usec + rate->count - 1) / rate->count;
}

/* shaping_gcra_wait - microseconds until one unit may pass */
long long shaping_gcra_wait(const SHAPING_GCRA *gcra, const SHAPING_RATE *rate,
                            long long burst, long long now)
{
    long long interval = shaping_gcra_interval(rate);
    long long allowed_at;

    if (interval == 0)
        return 0;
    if (burst < 1)
        burst = 1;
    allowed_at = gcra->tat - (burst - 1) * interval;
    return allowed_at > now ? allowed_at - now : 0;
}

/* shaping_gcra_take - one unit passes at now */
void shaping_gcra_take(SHAPING_GCRA *gcra, const SHAPING_RATE *rate,
                       long long now)
{
    long long interval = shaping_gcra_interval(rate);

    if (interval == 0)
        return;
    gcra->tat = (gcra->tat > now ? gcra->tat : now) + interval;
}

/* shaping_gcra_tokens - units that could pass at once at now */
long long shaping_gcra_tokens(const SHAPING_GCRA *gcra,
                              const SHAPING_RATE *rate, long long burst,
                              long long now)
{
    long long interval = shaping_gcra_interval(rate);
    long long owed;

    if (burst < 1)
        burst = 1;
    if (interval == 0)
        return burst;
    owed = gcra->tat > now ? gcra->tat - now : 0;
    /* each unit in flight of the window takes T; a part-used one counts */
    owed = (owed + interval - 1) / interval;
    return owed >= burst ? 0 : burst - owed;
}

/* shaping_effective - the rule with the lower limits response automation
   has in force at now (NULL: no limit at all) */
static const SHAPING_RULE *shaping_effective(const SHAPING_RULE *rule,
                                             const SHAPING_STATE *state,
                                             long long now, SHAPING_RULE *eff)
{
    bool rate = state->auto_rate_until > now && state->auto_rate.count > 0;
    bool conns =
        state->auto_connections_until > now && state->auto_connections > 0;

    if (!rate && !conns)
        return rule;
    if (rule) {
        *eff = *rule;
    } else {
        memset(eff, 0, sizeof(*eff));
        eff->burst = 1;
    }
    if (conns && (eff->max_connections == 0 ||
                  state->auto_connections < eff->max_connections))
        eff->max_connections = state->auto_connections;
    if (rate && (eff->message_rate.count == 0 ||
                 shaping_gcra_interval(&state->auto_rate) >
                     shaping_gcra_interval(&eff->message_rate))) {
        eff->message_rate = state->auto_rate;
        eff->burst = 1;
    }
    return eff;
}

/* shaping_may_start - may one more delivery start at now? */
SHAPING_VERDICT shaping_may_start(const SHAPING_RULE *rule_in,
                                  const SHAPING_STATE *state, long long now,
                                  long long *wait)
{
    long long msg_wait, conn_wait;
    SHAPING_RULE eff;
    const SHAPING_RULE *rule = shaping_effective(rule_in, state, now, &eff);

    *wait = 0;
    if (state->suspended_until > now) {
        *wait = state->suspended_until - now;
        return SHAPING_WAIT;
    }
    if (rule == NULL)
        return SHAPING_GO;
    if (rule->max_connections > 0 &&
        state->connections >= rule->max_connections)
        return SHAPING_FULL;
    msg_wait = shaping_gcra_wait(&state->messages, &rule->message_rate,
                                 rule->burst, now);
    conn_wait = shaping_gcra_wait(&state->connects, &rule->connection_rate,
                                  rule->burst, now);
    *wait = msg_wait > conn_wait ? msg_wait : conn_wait;
    return *wait > 0 ? SHAPING_WAIT : SHAPING_GO;
}

/* shaping_start - a delivery starts */
void shaping_start(const SHAPING_RULE *rule_in, SHAPING_STATE *state,
                   long long now)
{
    SHAPING_RULE eff;
    const SHAPING_RULE *rule = shaping_effective(rule_in, state, now, &eff);

    state->connections++;
    if (rule == NULL)
        return;
    shaping_gcra_take(&state->messages, &rule->message_rate, now);
    shaping_gcra_take(&state->connects, &rule->connection_rate, now);
}

/* shaping_end - a delivery ended */
void shaping_end(SHAPING_STATE *state)
{
    if (state->connections <= 0)
        msg_panic("%s: no delivery in flight", __func__);
    state->connections--;
}

/* shaping_idle - may the bucket be forgotten at now? */
bool shaping_idle(const SHAPING_STATE *state, long long now)
{
    return state->connections == 0 && state->messages.tat <= now &&
           state->connects.tat <= now && state->suspended_until <= now &&
           state->auto_rate_until <= now &&
           state->auto_connections_until <= now;
}
