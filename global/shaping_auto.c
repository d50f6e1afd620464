/*
 * shaping_auto - response automation rules and their decisions
 *
 * See shaping_auto.h for the syntax and the contract. The table is read
 * with the maps layer's text reader (map_text_read), as shaping.c reads
 * smtp_shaping_maps. Nothing here reads a clock or logs.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "argv.h"
#include "htable.h"
#include "mail_conf.h"
#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "shaping_auto.h"
#include "vstr.h"

#define SHAPING_AUTO_USEC 1000000LL

struct SHAPING_AUTO_RULES {
    SHAPING_AUTO_RULE *rules;
    size_t count;
    size_t cap;
    HTABLE *by_name; /* name -> index + 1 */
};

/* The matches of one rule in one bucket: a ring of the last N times. */
typedef struct SHAPING_AUTO_RING {
    long long *times; /* trigger_count of them, 0: unused */
    size_t next;
} SHAPING_AUTO_RING;

struct SHAPING_AUTO_HITS {
    SHAPING_AUTO_RING *rings; /* one per rule */
    size_t count;
};

/* shaping_auto_rule_done - free what a parsed rule holds */
void shaping_auto_rule_done(SHAPING_AUTO_RULE *rule)
{
    myfree(rule->name);
    if (rule->provider)
        myfree(rule->provider);
    if (rule->dsn)
        myfree(rule->dsn);
    if (rule->regex_text) {
        regfree(&rule->regex);
        myfree(rule->regex_text);
    }
    memset(rule, 0, sizeof(*rule));
}

/* shaping_auto_time - a duration of at least 1s */
static int shaping_auto_time(const char *name, const char *text,
                             long long *usec, VSTR *why)
{
    bool ok = false;
    long long seconds = mail_conf_parse_time(text, &ok);

    if (!ok || seconds < 1 || seconds > 366LL * 86400) {
        vstr_sprintf(why, "%s=%s: not a duration from 1s to 366d", name, text);
        return -1;
    }
    *usec = seconds * SHAPING_AUTO_USEC;
    return 0;
}

/* shaping_auto_number - a whole number in [min, max] */
static int shaping_auto_number(const char *name, const char *text,
                               long long min, long long max, long long *out,
                               VSTR *why)
{
    long long value = 0;

    if (*text == 0)
        goto bad;
    for (const char *cp = text; *cp; cp++) {
        if (!isdigit((unsigned char) *cp))
            goto bad;
        value = value * 10 + (*cp - '0');
        if (value > max)
            goto bad;
    }
    if (value < min)
        goto bad;
    *out = value;
    return 0;
bad:
    vstr_sprintf(why, "%s=%s: not a whole number from %lld to %lld", name, text,
                 min, max);
    return -1;
}

/* shaping_auto_dsn_ok - X.Y.Z with X 2, 4 or 5 */
static bool shaping_auto_dsn_ok(const char *dsn)
{
    int parts = 0;
    const char *cp = dsn;

    if (*cp != '2' && *cp != '4' && *cp != '5')
        return false;
    while (*cp) {
        size_t digits = 0;

        while (isdigit((unsigned char) *cp))
            cp++, digits++;
        if (digits == 0 || digits > 3)
            return false;
        parts++;
        if (*cp == '.')
            cp++;
        else if (*cp)
            return false;
    }
    return parts == 3 && cp[-1] != '.';
}

/* shaping_auto_action - action=... */
static int shaping_auto_action(SHAPING_AUTO_RULE *rule, const char *value,
                               VSTR *why)
{
    if (strcmp(value, "suspend") == 0) {
        rule->action = SHAPING_AUTO_SUSPEND;
    } else if (strcmp(value, "backoff") == 0) {
        rule->action = SHAPING_AUTO_BACKOFF;
        rule->connections = 1;
        rule->rate.count = 1;
        rule->rate.period_usec = 60 * SHAPING_AUTO_USEC;
    } else if (strncmp(value, "rate:", 5) == 0) {
        rule->action = SHAPING_AUTO_RATE;
        if (shaping_rate_parse(value + 5, &rule->rate, why) < 0) {
            VSTR *inner = vstr_alloc(100);

            vstr_cpy(inner, vstr_str(why));
            vstr_sprintf(why, "action=rate: %s", vstr_str(inner));
            vstr_free(inner);
            return -1;
        }
    } else if (strncmp(value, "connections:", 12) == 0) {
        rule->action = SHAPING_AUTO_CONNECTIONS;
        return shaping_auto_number("action=connections", value + 12, 1,
                                   SHAPING_MAX_COUNT, &rule->connections, why);
    } else {
        vstr_sprintf(why,
                     "action=%s: unknown (suspend, backoff, rate:N/s|N/m|N/h, "
                     "connections:N)",
                     value);
        return -1;
    }
    return 0;
}

/* shaping_auto_item - one name=value (seen: names given so far) */
static int shaping_auto_item(SHAPING_AUTO_RULE *rule, const char *name,
                             const char *value, ARGV *seen, VSTR *why)
{
    for (size_t i = 0; i < seen->argc; i++) {
        if (strcmp(seen->argv[i], name) == 0) {
            vstr_sprintf(why, "%s given twice", name);
            return -1;
        }
    }
    argv_add(seen, name);
    if (strcmp(name, "provider") == 0) {
        VSTR *full = vstr_alloc(50);

        if (*value == 0) {
            vstr_sprintf(why, "provider: empty value");
            vstr_free(full);
            return -1;
        }
        vstr_lower(vstr_sprintf(full, "%s%s", SHAPING_PROVIDER_PREFIX, value));
        rule->provider = mystrdup(vstr_str(full));
        vstr_free(full);
        return 0;
    }
    if (strcmp(name, "code") == 0) {
        long long code;

        if (shaping_auto_number(name, value, 200, 599, &code, why) < 0)
            return -1;
        rule->code = (int) code;
        return 0;
    }
    if (strcmp(name, "dsn") == 0) {
        if (!shaping_auto_dsn_ok(value)) {
            vstr_sprintf(why, "dsn=%s: not an enhanced status code X.Y.Z",
                         value);
            return -1;
        }
        rule->dsn = mystrdup(value);
        return 0;
    }
    if (strcmp(name, "action") == 0)
        return shaping_auto_action(rule, value, why);
    if (strcmp(name, "duration") == 0)
        return shaping_auto_time(name, value, &rule->duration, why);
    if (strcmp(name, "trigger") == 0) {
        const char *slash = strchr(value, '/');
        VSTR *count = vstr_alloc(10);
        int status;

        if (slash == NULL) {
            vstr_sprintf(why, "trigger=%s: N/TIME (3/5m)", value);
            vstr_free(count);
            return -1;
        }
        vstr_ncpy(count, value, (size_t) (slash - value));
        status = shaping_auto_number("trigger", vstr_str(count), 1,
                                     SHAPING_AUTO_MAX_TRIGGER,
                                     &rule->trigger_count, why);
        vstr_free(count);
        if (status < 0)
            return -1;
        return shaping_auto_time("trigger", slash + 1, &rule->trigger_window,
                                 why);
    }
    vstr_sprintf(why,
                 "unknown setting \"%s\" (provider, code, dsn, action, "
                 "duration, trigger, regex)",
                 name);
    return -1;
}

/* shaping_auto_seen - was name given? */
static bool shaping_auto_seen(const ARGV *seen, const char *name)
{
    for (size_t i = 0; i < seen->argc; i++)
        if (strcmp(seen->argv[i], name) == 0)
            return true;
    return false;
}

/* shaping_auto_rule_parse - one key and its value */
int shaping_auto_rule_parse(const char *key, const char *value,
                            SHAPING_AUTO_RULE *rule, VSTR *why)
{
    const char *regex = NULL;
    VSTR *head = vstr_alloc(100);
    ARGV *words;
    ARGV *seen = argv_alloc(8);
    int status = -1;

    memset(rule, 0, sizeof(*rule));
    rule->name = mystrdup(key);
    rule->trigger_count = 1;
    for (const char *cp = key; *cp; cp++) {
        if (!isalnum((unsigned char) *cp) && !strchr("-_.:", *cp)) {
            vstr_sprintf(
                why, "\"%s\": a rule name is letters, digits, - _ . :", key);
            goto out;
        }
    }
    /* regex= takes the rest of the line, spaces and all */
    if ((regex = strstr(value, "regex=")) != NULL &&
        (regex == value || isspace((unsigned char) regex[-1]))) {
        vstr_ncpy(head, value, (size_t) (regex - value));
        regex += 6;
    } else {
        regex = NULL;
        vstr_cpy(head, value);
    }
    words = argv_split(vstr_str(head), " \t");
    for (size_t i = 0; i < words->argc; i++) {
        char *word = words->argv[i];
        char *eq = strchr(word, '=');

        if (eq == NULL) {
            vstr_sprintf(why, "\"%s\": expected name=value", word);
            argv_free(words);
            goto out;
        }
        *eq = 0;
        if (shaping_auto_item(rule, word, eq + 1, seen, why) < 0) {
            argv_free(words);
            goto out;
        }
    }
    argv_free(words);
    if (regex != NULL) {
        int err;

        if (*regex == 0) {
            vstr_sprintf(why, "regex: empty");
            goto out;
        }
        if ((err = regcomp(&rule->regex, regex,
                           REG_EXTENDED | REG_ICASE | REG_NOSUB)) != 0) {
            char buf[200];

            (void) regerror(err, &rule->regex, buf, sizeof(buf));
            vstr_sprintf(why, "regex=%s: %s", regex, buf);
            goto out;
        }
        rule->regex_text = mystrdup(regex);
    }
    if (rule->code == 0 && rule->dsn == NULL && rule->regex_text == NULL) {
        vstr_sprintf(why, "%s: needs code=, dsn= or regex=", key);
        goto out;
    }
    if (!shaping_auto_seen(seen, "action") || rule->duration == 0) {
        vstr_sprintf(why, "%s: needs action= and duration=%s", key,
                     rule->regex_text ? " (regex= must come last: it takes "
                                        "the rest of the line)"
                                      : "");
        goto out;
    }
    status = 0;
out:
    if (status < 0)
        shaping_auto_rule_done(rule);
    argv_free(seen);
    vstr_free(head);
    return status;
}

/* shaping_auto_free - free every rule */
SHAPING_AUTO_RULES *shaping_auto_free(SHAPING_AUTO_RULES *rules)
{
    if (rules == NULL)
        return NULL;
    for (size_t i = 0; i < rules->count; i++)
        shaping_auto_rule_done(&rules->rules[i]);
    myfree(rules->rules);
    htable_free(rules->by_name, NULL);
    myfree(rules);
    return NULL;
}

/* shaping_auto_add - one table line */
static int shaping_auto_add(void *context, const char *path, const char *key,
                            const char *value, int lineno, VSTR *why)
{
    SHAPING_AUTO_RULES *rules = context;
    SHAPING_AUTO_RULE rule;
    VSTR *reason = vstr_alloc(100);
    void *earlier;

    if (shaping_auto_rule_parse(key, value, &rule, reason) < 0) {
        vstr_sprintf(why, "%s, line %d: %s", path, lineno, vstr_str(reason));
        vstr_free(reason);
        return -1;
    }
    vstr_free(reason);
    rule.lineno = lineno;
    if (htable_locate(rules->by_name, rule.name, &earlier)) {
        vstr_sprintf(why, "%s, line %d: %s given again (first on line %d)",
                     path, lineno, rule.name,
                     rules->rules[(uintptr_t) earlier - 1].lineno);
        shaping_auto_rule_done(&rule);
        return -1;
    }
    if (rules->count == rules->cap) {
        rules->cap = rules->cap ? 2 * rules->cap : 8;
        rules->rules =
            myrealloc_array(rules->rules, rules->cap, sizeof(*rules->rules));
    }
    rules->rules[rules->count++] = rule;
    htable_enter(rules->by_name, rules->rules[rules->count - 1].name,
                 (void *) (uintptr_t) rules->count);
    return 0;
}

/* shaping_auto_load - the tables param names, read whole */
SHAPING_AUTO_RULES *shaping_auto_load(const char *param, const char *value,
                                      VSTR *why)
{
    ARGV *specs = maps_split(value, why);
    SHAPING_AUTO_RULES *rules;

    vstr_reset(why);
    if (specs == NULL)
        return NULL;
    if (specs->argc == 0) {
        argv_free(specs);
        return NULL;
    }
    rules = mycalloc(1, sizeof(*rules));
    rules->by_name = htable_alloc(0);
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
                         "%s: \"%s\": automation rules are read whole: "
                         "use texthash:/path (or hash:, btree:)",
                         param, spec);
            goto bad;
        }
        if (map_text_read(colon + 1, MAP_FLAG_NONE, shaping_auto_add, rules,
                          &st, why) < 0) {
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
    shaping_auto_free(rules);
    return NULL;
}

/* shaping_auto_count - how many rules */
size_t shaping_auto_count(const SHAPING_AUTO_RULES *rules)
{
    return rules ? rules->count : 0;
}

/* shaping_auto_at - one rule, in file order */
const SHAPING_AUTO_RULE *shaping_auto_at(const SHAPING_AUTO_RULES *rules,
                                         size_t index)
{
    if (rules == NULL || index >= rules->count)
        msg_panic("%s: index %zu out of range", __func__, index);
    return &rules->rules[index];
}

/* shaping_auto_reply_parse - "smtp; 421 4.7.28 text" taken apart */
bool shaping_auto_reply_parse(const char *diagnostic, SHAPING_AUTO_REPLY *reply)
{
    const char *cp = diagnostic;
    const char *dsn;
    size_t len = 0;

    memset(reply, 0, sizeof(*reply));
    if (diagnostic == NULL)
        return false;
    if (strncasecmp(cp, "smtp;", 5) == 0)
        cp += 5;
    while (*cp == ' ')
        cp++;
    reply->text = cp;
    if (!(isdigit((unsigned char) cp[0]) && isdigit((unsigned char) cp[1]) &&
          isdigit((unsigned char) cp[2]) &&
          (cp[3] == ' ' || cp[3] == '-' || cp[3] == 0)))
        return false;
    reply->code = (cp[0] - '0') * 100 + (cp[1] - '0') * 10 + (cp[2] - '0');
    dsn = cp + 3;
    while (*dsn == ' ' || *dsn == '-')
        dsn++;
    while (dsn[len] && (isdigit((unsigned char) dsn[len]) || dsn[len] == '.'))
        len++;
    if (len > 0 && len < sizeof(reply->dsn)) {
        char candidate[sizeof(reply->dsn)];

        memcpy(candidate, dsn, len);
        candidate[len] = 0;
        if (shaping_auto_dsn_ok(candidate) && candidate[0] == cp[0])
            memcpy(reply->dsn, candidate, len + 1);
    }
    return true;
}

/* shaping_auto_match - the first rule that matches */
long shaping_auto_match(const SHAPING_AUTO_RULES *rules, const char *bucket,
                        const SHAPING_AUTO_REPLY *reply)
{
    for (size_t i = 0; rules && i < rules->count; i++) {
        const SHAPING_AUTO_RULE *rule = &rules->rules[i];

        if (rule->provider && strcmp(rule->provider, bucket) != 0)
            continue;
        if (rule->code && rule->code != reply->code)
            continue;
        if (rule->dsn && strcmp(rule->dsn, reply->dsn) != 0)
            continue;
        if (rule->regex_text &&
            regexec(&rule->regex, reply->text ? reply->text : "", 0, NULL, 0) !=
                0)
            continue;
        return (long) i;
    }
    return -1;
}

/* shaping_auto_hits_alloc - no matches yet, for each rule */
SHAPING_AUTO_HITS *shaping_auto_hits_alloc(const SHAPING_AUTO_RULES *rules)
{
    SHAPING_AUTO_HITS *hits = mycalloc(1, sizeof(*hits));

    hits->count = shaping_auto_count(rules);
    hits->rings = mycalloc(hits->count ? hits->count : 1, sizeof(*hits->rings));
    for (size_t i = 0; i < hits->count; i++)
        hits->rings[i].times =
            mycalloc((size_t) rules->rules[i].trigger_count, sizeof(long long));
    return hits;
}

/* shaping_auto_hits_free - forget them */
SHAPING_AUTO_HITS *shaping_auto_hits_free(SHAPING_AUTO_HITS *hits)
{
    if (hits == NULL)
        return NULL;
    for (size_t i = 0; i < hits->count; i++)
        myfree(hits->rings[i].times);
    myfree(hits->rings);
    myfree(hits);
    return NULL;
}

/* shaping_auto_in_force - is an action of rule in force at now? */
static bool shaping_auto_in_force(const SHAPING_AUTO_RULE *rule,
                                  const SHAPING_STATE *state, long long now)
{
    const char *name = rule->name;

    return (state->suspended_until > now && state->suspended_by == name) ||
           (state->auto_rate_until > now && state->auto_rate_by == name) ||
           (state->auto_connections_until > now &&
            state->auto_connections_by == name);
}

/* shaping_auto_hit - one more match: does the rule act? */
bool shaping_auto_hit(const SHAPING_AUTO_RULES *rules, size_t index,
                      SHAPING_AUTO_HITS *hits, const SHAPING_STATE *state,
                      long long now)
{
    const SHAPING_AUTO_RULE *rule = shaping_auto_at(rules, index);
    SHAPING_AUTO_RING *ring;
    size_t n = (size_t) rule->trigger_count;
    long long oldest;

    if (hits == NULL || index >= hits->count)
        msg_panic("%s: no hits for rule %zu", __func__, index);
    if (shaping_auto_in_force(rule, state, now))
        return true; /* a renewed match extends it */
    ring = &hits->rings[index];
    ring->times[ring->next] = now;
    ring->next = (ring->next + 1) % n;
    /* The slot to be written next holds the oldest of the last n. */
    oldest = ring->times[ring->next];
    if (oldest == 0 && n > 1)
        return false;
    if (n > 1 && now - oldest > rule->trigger_window)
        return false;
    /* Triggered: the count starts again after this action. */
    memset(ring->times, 0, n * sizeof(long long));
    ring->next = 0;
    return true;
}

/* shaping_auto_hits_recent - a match a window still counts? */
bool shaping_auto_hits_recent(const SHAPING_AUTO_RULES *rules,
                              const SHAPING_AUTO_HITS *hits, long long now)
{
    for (size_t i = 0; hits && i < hits->count; i++) {
        const SHAPING_AUTO_RULE *rule = shaping_auto_at(rules, i);

        for (long long n = 0; n < rule->trigger_count; n++) {
            long long t = hits->rings[i].times[n];

            if (t != 0 && now - t <= rule->trigger_window)
                return true;
        }
    }
    return false;
}

/* shaping_auto_later - the later of two times */
static long long shaping_auto_later(long long a, long long b)
{
    return a > b ? a : b;
}

/* shaping_auto_apply - the rule's action is in force for its duration */
SHAPING_AUTO_CHANGE shaping_auto_apply(const SHAPING_AUTO_RULE *rule,
                                       SHAPING_STATE *state, long long now)
{
    long long until = now + rule->duration;
    bool extended = shaping_auto_in_force(rule, state, now);

    switch (rule->action) {
    case SHAPING_AUTO_SUSPEND:
        state->suspended_until =
            shaping_auto_later(state->suspended_until, until);
        state->suspended_by = rule->name;
        break;
    case SHAPING_AUTO_BACKOFF:
    case SHAPING_AUTO_RATE:
        state->auto_rate = rule->rate;
        state->auto_rate_until =
            state->auto_rate_until > now && state->auto_rate_by == rule->name
                ? shaping_auto_later(state->auto_rate_until, until)
                : until;
        state->auto_rate_by = rule->name;
        if (rule->action == SHAPING_AUTO_RATE)
            break;
        /* FALLTHROUGH */
    case SHAPING_AUTO_CONNECTIONS:
        state->auto_connections = rule->connections;
        state->auto_connections_until =
            state->auto_connections_until > now &&
                    state->auto_connections_by == rule->name
                ? shaping_auto_later(state->auto_connections_until, until)
                : until;
        state->auto_connections_by = rule->name;
        break;
    }
    return extended ? SHAPING_AUTO_EXTENDED : SHAPING_AUTO_STARTED;
}

/* shaping_auto_expire - end what is over */
int shaping_auto_expire(SHAPING_STATE *state, long long now, const char *by[3])
{
    int mask = 0;

    by[0] = by[1] = by[2] = NULL;
    if (state->suspended_by && state->suspended_until <= now) {
        mask |= SHAPING_AUTO_EXPIRED_SUSPEND;
        by[0] = state->suspended_by;
        state->suspended_by = NULL;
        state->suspended_until = 0;
    }
    if (state->auto_rate_by && state->auto_rate_until <= now) {
        mask |= SHAPING_AUTO_EXPIRED_RATE;
        by[1] = state->auto_rate_by;
        state->auto_rate_by = NULL;
        state->auto_rate_until = 0;
        memset(&state->auto_rate, 0, sizeof(state->auto_rate));
    }
    if (state->auto_connections_by && state->auto_connections_until <= now) {
        mask |= SHAPING_AUTO_EXPIRED_CONNECTIONS;
        by[2] = state->auto_connections_by;
        state->auto_connections_by = NULL;
        state->auto_connections_until = 0;
        state->auto_connections = 0;
    }
    return mask;
}

/* shaping_auto_describe - what automation has in force, one word each */
const char *shaping_auto_describe(const SHAPING_STATE *state, long long now,
                                  VSTR *buf)
{
    VSTR *rate = vstr_alloc(20);

    vstr_reset(buf);
    if (state->suspended_by && state->suspended_until > now)
        vstr_sprintf_append(buf, "suspend:%s ", state->suspended_by);
    if (state->auto_rate_by && state->auto_rate_until > now)
        vstr_sprintf_append(buf, "rate=%s:%s ",
                            shaping_rate_format(&state->auto_rate, rate),
                            state->auto_rate_by);
    if (state->auto_connections_by && state->auto_connections_until > now)
        vstr_sprintf_append(buf, "connections=%lld:%s ",
                            state->auto_connections,
                            state->auto_connections_by);
    vstr_free(rate);
    if (vstr_len(buf) == 0)
        return vstr_str(vstr_cpy(buf, "-"));
    vstr_truncate(buf, vstr_len(buf) - 1);
    return vstr_str(buf);
}
