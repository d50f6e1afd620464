/*
 * reputation - the reputation circuit breaker of source addresses
 *
 * See reputation.h for the states, the contract and how qmgr calls it.
 * Ratios are kept as parts per million and compared in whole numbers, so
 * 10 hard bounces of 100 attempts is exactly 10%.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <errno.h>

#include "argv.h"
#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "reputation.h"
#include "safe_file.h"
#include "shaping_auto.h"
#include "vstr.h"

#define REPUTATION_PPM 1000000LL
#define REPUTATION_USEC 1000000LL

typedef struct REPUTATION_BUCKET {
    long long slot; /* time / width of what it counts, -1: unused */
    long long attempts;
    long long hard;
    long long block;
} REPUTATION_BUCKET;

typedef struct REPUTATION_ENTRY {
    REPUTATION_STATE state;
    long long until; /* PAUSED: end of the pause */
    long long pause_len; /* the last automatic pause, seconds; 0: none */
    long long next_probe; /* PROBING: the probe token is there from */
    long long probe_since; /* PROBING: answers from then count */
    long long probe_attempts;
    long long probe_hard;
    long long probe_block;
    long long held_warned; /* last HELD_LAST verdict; 0: none */
    REPUTATION_BUCKET buckets[REPUTATION_BUCKETS];
} REPUTATION_ENTRY;

struct REPUTATION {
    REPUTATION_CONF conf;
    long long hard_ppm;
    long long block_ppm;
    long long width; /* seconds per bucket */
    long long span; /* buckets the window covers, <= REPUTATION_BUCKETS */
    long long probe_interval; /* seconds between probes */
    long long latest; /* the latest now seen (the clock is clamped) */
    bool dirty;
    HTABLE *keys; /* key -> REPUTATION_ENTRY */
};

/* reputation_ratio_parse - a fraction or a percentage in (0, 1] */
int reputation_ratio_parse(const char *text, double *ratio, VSTR *why)
{
    char *end;
    double value;

    errno = 0;
    if (text == NULL || !isdigit((unsigned char) *text))
        goto bad;
    value = strtod(text, &end);
    if (errno != 0 || end == text)
        goto bad;
    if (*end == '%') {
        value /= 100;
        end++;
    }
    if (*end != 0 || !(value > 0) || value > 1)
        goto bad;
    *ratio = value;
    return 0;
bad:
    vstr_sprintf(why, "\"%s\": not a ratio above 0 and at most 1 (10%%, 0.1)",
                 text ? text : "");
    return -1;
}

/* reputation_conf_parse - the configuration from main.cf values */
int reputation_conf_parse(REPUTATION_CONF *conf, const char *window,
                          long long min_attempts, const char *hard_ratio,
                          const char *block_ratio, const char *pause_time,
                          const char *probe_rate, long long probe_attempts,
                          VSTR *why)
{
    VSTR *inner = vstr_alloc(100);
    bool ok = false;
    int status = -1;

    memset(conf, 0, sizeof(*conf));
    conf->window = mail_conf_parse_time(window, &ok);
    if (!ok || conf->window < 1 || conf->window > 7 * 86400) {
        vstr_sprintf(why, "reputation_window = %s: not a time from 1s to 7d",
                     window);
        goto out;
    }
    if (min_attempts < 1) {
        vstr_sprintf(why, "reputation_min_attempts = %lld: must be at least 1",
                     min_attempts);
        goto out;
    }
    conf->min_attempts = min_attempts;
    if (reputation_ratio_parse(hard_ratio, &conf->hard_ratio, inner) < 0) {
        vstr_sprintf(why, "reputation_hard_bounce_ratio = %s", vstr_str(inner));
        goto out;
    }
    if (reputation_ratio_parse(block_ratio, &conf->block_ratio, inner) < 0) {
        vstr_sprintf(why, "reputation_block_ratio = %s", vstr_str(inner));
        goto out;
    }
    conf->pause_time = mail_conf_parse_time(pause_time, &ok);
    if (!ok || conf->pause_time < 1 || conf->pause_time > 7 * 86400) {
        vstr_sprintf(why,
                     "reputation_pause_time = %s: not a time from 1s to 7d",
                     pause_time);
        goto out;
    }
    conf->max_pause_time = conf->pause_time > REPUTATION_MAX_PAUSE
                               ? conf->pause_time
                               : REPUTATION_MAX_PAUSE;
    if (shaping_rate_parse(probe_rate, &conf->probe_rate, inner) < 0) {
        vstr_sprintf(why, "reputation_probe_rate = %s", vstr_str(inner));
        goto out;
    }
    if (probe_attempts < 1) {
        vstr_sprintf(why,
                     "reputation_probe_attempts = %lld: must be at least 1",
                     probe_attempts);
        goto out;
    }
    conf->probe_attempts = probe_attempts;
    status = 0;
out:
    vstr_free(inner);
    return status;
}

/* reputation_alloc - an empty breaker */
REPUTATION *reputation_alloc(const REPUTATION_CONF *conf)
{
    REPUTATION *rep = mycalloc(1, sizeof(*rep));
    long long interval;

    if (conf->window < 1 || conf->min_attempts < 1 || conf->pause_time < 1 ||
        conf->max_pause_time < conf->pause_time || conf->probe_rate.count < 1 ||
        conf->probe_attempts < 1 || !(conf->hard_ratio > 0) ||
        !(conf->block_ratio > 0))
        msg_panic("%s: bad configuration", __func__);
    rep->conf = *conf;
    rep->hard_ppm = (long long) (conf->hard_ratio * REPUTATION_PPM + 0.5);
    rep->block_ppm = (long long) (conf->block_ratio * REPUTATION_PPM + 0.5);
    if (rep->hard_ppm < 1)
        rep->hard_ppm = 1;
    if (rep->block_ppm < 1)
        rep->block_ppm = 1;
    rep->width = (conf->window + REPUTATION_BUCKETS - 1) / REPUTATION_BUCKETS;
    rep->span = (conf->window + rep->width - 1) / rep->width;
    interval = conf->probe_rate.period_usec / conf->probe_rate.count;
    rep->probe_interval =
        (interval + REPUTATION_USEC - 1) / REPUTATION_USEC; /* round up */
    if (rep->probe_interval < 1)
        rep->probe_interval = 1;
    rep->keys = htable_alloc(0);
    return rep;
}

/* reputation_entry_free - htable_free's value destructor */
static void reputation_entry_free(void *entry)
{
    myfree(entry);
}

/* reputation_free - free everything */
REPUTATION *reputation_free(REPUTATION *rep)
{
    if (rep) {
        htable_free(rep->keys, reputation_entry_free);
        myfree(rep);
    }
    return NULL;
}

/* reputation_key - SOURCE or SOURCE/PROVIDER */
const char *reputation_key(VSTR *buf, const char *source, const char *provider)
{
    if (provider && *provider)
        vstr_sprintf(buf, "%s/%s", source, provider);
    else
        vstr_cpy(buf, source);
    return vstr_str(buf);
}

/*
 * The classifier: first the replies that say nothing about the source's
 * reputation (greylisting; TLS and authentication, which are about one
 * sender or one configuration), then the words that name policy or
 * reputation, then the enhanced status code, then the reply code.
 */
typedef struct REPUTATION_WORD {
    const char *text; /* lowercase */
    REPUTATION_OUTCOME on_4xx;
    REPUTATION_OUTCOME on_5xx;
} REPUTATION_WORD;

/* clang-format off */
static const REPUTATION_WORD reputation_words[] = {
    {"greylist",       REPUTATION_NONE,  REPUTATION_NONE},
    {"graylist",       REPUTATION_NONE,  REPUTATION_NONE},
    {"grey-list",      REPUTATION_NONE,  REPUTATION_NONE},
    {"gray-list",      REPUTATION_NONE,  REPUTATION_NONE},
    {"tls",            REPUTATION_NONE,  REPUTATION_OK},
    {"authenticat",    REPUTATION_NONE,  REPUTATION_OK},
    {"blocked",        REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"block list",     REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"blocklist",      REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"blacklist",      REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"black list",     REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"denylist",       REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"dnsbl",          REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"reputation",     REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"spamhaus",       REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"spamcop",        REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"barracuda",      REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"unsolicited",    REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"spam",           REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"policy",         REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"policies",       REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"complaint",      REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"[ts0",           REPUTATION_BLOCK, REPUTATION_BLOCK}, /* yahoo */
    {"[tss0",          REPUTATION_BLOCK, REPUTATION_BLOCK},
    {"rl0000",         REPUTATION_BLOCK, REPUTATION_BLOCK}, /* comcast */
    {"bl0000",         REPUTATION_BLOCK, REPUTATION_BLOCK},
};
/* clang-format on */

/* reputation_contains - does text hold word (lowercase), in any case? */
static bool reputation_contains(const char *text, const char *word)
{
    size_t len = strlen(word);

    for (const char *cp = text; *cp; cp++) {
        size_t i = 0;

        while (i < len && cp[i] &&
               tolower((unsigned char) cp[i]) == (unsigned char) word[i])
            i++;
        if (i == len)
            return true;
    }
    return false;
}

/* reputation_classify - what a remote reply counts as */
REPUTATION_OUTCOME reputation_classify(int code, const char *dsn,
                                       const char *text)
{
    int class = code / 100;
    const char *subject = NULL;

    if (class == 2)
        return REPUTATION_OK;
    if (class != 4 && class != 5)
        return REPUTATION_NONE;
    if (dsn && *dsn && (dsn[0] == '4' || dsn[0] == '5') && dsn[1] == '.')
        subject = dsn + 2;
    else
        dsn = NULL;
    if (text) {
        for (size_t i = 0; i < 4; i++) /* the greylisting words */
            if (reputation_contains(text, reputation_words[i].text))
                return REPUTATION_NONE;
    }
    /* Addressing (X.1.X) and a disabled mailbox say it all: list quality. */
    if (class == 5 && subject &&
        (strncmp(subject, "1.", 2) == 0 || strncmp(subject, "2.1", 3) == 0))
        return REPUTATION_HARD;
    if (text) {
        for (size_t i = 4;
             i < sizeof(reputation_words) / sizeof(reputation_words[0]); i++)
            if (reputation_contains(text, reputation_words[i].text))
                return class == 4 ? reputation_words[i].on_4xx
                                  : reputation_words[i].on_5xx;
    }
    if (subject && strncmp(subject, "7.", 2) == 0)
        return REPUTATION_BLOCK;
    if (class == 4)
        return REPUTATION_NONE;
    /* A full mailbox, a message too big, content refused: not the list. */
    if (subject &&
        (strncmp(subject, "2.2", 3) == 0 || strncmp(subject, "2.3", 3) == 0 ||
         strncmp(subject, "3.4", 3) == 0 || strncmp(subject, "6.", 2) == 0))
        return REPUTATION_OK;
    return REPUTATION_HARD;
}

/* reputation_classify_diagnostic - the same for "smtp; 550 5.7.1 text" */
REPUTATION_OUTCOME reputation_classify_diagnostic(const char *diag)
{
    SHAPING_AUTO_REPLY reply;

    if (diag == NULL || !shaping_auto_reply_parse(diag, &reply))
        return REPUTATION_NONE;
    return reputation_classify(reply.code, reply.dsn, reply.text);
}

/* reputation_clamp - now, never before the latest time seen */
static long long reputation_clamp(REPUTATION *rep, long long now)
{
    if (now > rep->latest)
        rep->latest = now;
    return rep->latest;
}

/* reputation_entry - the entry of key, made when create */
static REPUTATION_ENTRY *reputation_entry(REPUTATION *rep, const char *key,
                                          bool create)
{
    REPUTATION_ENTRY *entry = htable_find(rep->keys, key);

    if (entry == NULL && create) {
        entry = mycalloc(1, sizeof(*entry));
        for (size_t i = 0; i < REPUTATION_BUCKETS; i++)
            entry->buckets[i].slot = -1;
        htable_enter(rep->keys, key, entry);
    }
    return entry;
}

/* reputation_clear - forget the window */
static void reputation_clear(REPUTATION_ENTRY *entry)
{
    for (size_t i = 0; i < REPUTATION_BUCKETS; i++) {
        memset(&entry->buckets[i], 0, sizeof(entry->buckets[i]));
        entry->buckets[i].slot = -1;
    }
}

/* reputation_sum - the window at now */
static void reputation_sum(const REPUTATION *rep, const REPUTATION_ENTRY *entry,
                           long long now, long long *attempts, long long *hard,
                           long long *block)
{
    long long current = now / rep->width;

    *attempts = *hard = *block = 0;
    for (size_t i = 0; i < REPUTATION_BUCKETS; i++) {
        const REPUTATION_BUCKET *bucket = &entry->buckets[i];

        if (bucket->slot >= 0 && bucket->slot <= current &&
            bucket->slot > current - rep->span) {
            *attempts += bucket->attempts;
            *hard += bucket->hard;
            *block += bucket->block;
        }
    }
}

/* reputation_ratio_text - "12.4% (62/500)" */
static void reputation_ratio_text(VSTR *why, const char *what, long long count,
                                  long long attempts, long long ppm)
{
    vstr_sprintf_append(why, "%s %.1f%% (%lld/%lld) >= %.1f%%", what,
                        attempts ? 100.0 * (double) count / (double) attempts
                                 : 100.0,
                        count, attempts, (double) ppm / 10000.0);
}

/* reputation_pause_now - key goes PAUSED for len at now */
static void reputation_pause_now(REPUTATION *rep, REPUTATION_ENTRY *entry,
                                 long long len, long long now)
{
    entry->state = REPUTATION_PAUSED;
    entry->pause_len = len;
    entry->until = now + len;
    entry->held_warned = 0;
    rep->dirty = true;
}

/* reputation_judge_active - an ACTIVE key after a new outcome */
static REPUTATION_VERDICT reputation_judge_active(REPUTATION *rep,
                                                  const char *key,
                                                  REPUTATION_ENTRY *entry,
                                                  long long now,
                                                  bool last_usable, VSTR *why)
{
    long long attempts, hard, block;
    bool hard_over, block_over;

    reputation_sum(rep, entry, now, &attempts, &hard, &block);
    if (attempts < rep->conf.min_attempts)
        return REPUTATION_NOTHING;
    hard_over = hard * REPUTATION_PPM >= rep->hard_ppm * attempts;
    block_over = block * REPUTATION_PPM >= rep->block_ppm * attempts;
    if (!hard_over && !block_over)
        return REPUTATION_NOTHING;
    if (last_usable) {
        if (entry->held_warned > 0 &&
            now - entry->held_warned < rep->conf.window)
            return REPUTATION_NOTHING;
        entry->held_warned = now;
        vstr_sprintf(why,
                     "source %s NOT paused: it is the last usable source "
                     "of its pool (pause it by hand to stop it): ",
                     key);
    } else {
        reputation_pause_now(rep, entry, rep->conf.pause_time, now);
        vstr_sprintf(why, "source %s paused for %llds: ", key,
                     entry->pause_len);
    }
    if (hard_over)
        reputation_ratio_text(why, "hard-bounce", hard, attempts,
                              rep->hard_ppm);
    else
        reputation_ratio_text(why, "block", block, attempts, rep->block_ppm);
    return last_usable ? REPUTATION_HELD_LAST : REPUTATION_PAUSED_NOW;
}

/* reputation_judge_probe - a PROBING key after a new outcome */
static REPUTATION_VERDICT reputation_judge_probe(REPUTATION *rep,
                                                 const char *key,
                                                 REPUTATION_ENTRY *entry,
                                                 long long now, VSTR *why)
{
    long long needed = rep->conf.probe_attempts;

    /* Clean: both ratios over `needed` answers below half the threshold.
       Once the failures alone reach half, no later answer can clean it. */
    bool hard_bad =
        entry->probe_hard * 2 * REPUTATION_PPM >= rep->hard_ppm * needed;
    bool block_bad =
        entry->probe_block * 2 * REPUTATION_PPM >= rep->block_ppm * needed;

    if (hard_bad || block_bad) {
        long long len = 2 * (entry->pause_len > 0 ? entry->pause_len
                                                  : rep->conf.pause_time);

        if (len > rep->conf.max_pause_time)
            len = rep->conf.max_pause_time;
        vstr_sprintf(why,
                     "source %s paused again for %llds: probe %s %lld of %lld "
                     "answers (%lld needed)",
                     key, len, hard_bad ? "hard bounces" : "blocks",
                     hard_bad ? entry->probe_hard : entry->probe_block,
                     entry->probe_attempts, needed);
        reputation_pause_now(rep, entry, len, now);
        return REPUTATION_REPAUSED;
    }
    if (entry->probe_attempts >= needed) {
        entry->state = REPUTATION_ACTIVE;
        entry->until = 0;
        reputation_clear(entry);
        rep->dirty = true;
        vstr_sprintf(why,
                     "source %s resumed: %lld probe answers, %lld hard "
                     "bounces, %lld blocks",
                     key, entry->probe_attempts, entry->probe_hard,
                     entry->probe_block);
        return REPUTATION_RESUMED;
    }
    return REPUTATION_NOTHING;
}

/* reputation_record - one outcome of key */
REPUTATION_VERDICT reputation_record(REPUTATION *rep, const char *key,
                                     REPUTATION_OUTCOME outcome, bool async,
                                     long long when, long long now,
                                     bool last_usable, VSTR *why)
{
    REPUTATION_ENTRY *entry;
    REPUTATION_BUCKET *bucket;
    long long slot;

    vstr_reset(why);
    if (outcome == REPUTATION_NONE || (async && outcome == REPUTATION_OK))
        return REPUTATION_NOTHING;
    now = reputation_clamp(rep, now);
    if (when > now)
        when = now;
    if (when < 0)
        return REPUTATION_NOTHING;
    slot = when / rep->width;
    if (slot <= now / rep->width - rep->span)
        return REPUTATION_NOTHING; /* older than the window */
    entry = reputation_entry(rep, key, true);
    bucket = &entry->buckets[slot % REPUTATION_BUCKETS];
    if (bucket->slot != slot) {
        memset(bucket, 0, sizeof(*bucket));
        bucket->slot = slot;
    }
    if (!async)
        bucket->attempts++;
    if (outcome == REPUTATION_HARD)
        bucket->hard++;
    else if (outcome == REPUTATION_BLOCK)
        bucket->block++;

    switch (entry->state) {
    case REPUTATION_ACTIVE:
        return reputation_judge_active(rep, key, entry, now, last_usable, why);
    case REPUTATION_PROBING:
        if (when < entry->probe_since)
            return REPUTATION_NOTHING;
        if (!async)
            entry->probe_attempts++;
        if (outcome == REPUTATION_HARD)
            entry->probe_hard++;
        else if (outcome == REPUTATION_BLOCK)
            entry->probe_block++;
        return reputation_judge_probe(rep, key, entry, now, why);
    default:
        return REPUTATION_NOTHING; /* paused: counted, nothing to decide */
    }
}

/* reputation_usable - may a message go from key at now? */
bool reputation_usable(REPUTATION *rep, const char *key, long long now,
                       long long *wait)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);
    long long dummy;

    if (wait == NULL)
        wait = &dummy;
    *wait = 0;
    now = reputation_clamp(rep, now);
    if (entry == NULL)
        return true;
    switch (entry->state) {
    case REPUTATION_ACTIVE:
        return true;
    case REPUTATION_PAUSED:
        *wait = entry->until > now ? entry->until - now : 0;
        return false;
    case REPUTATION_PROBING:
        if (now >= entry->next_probe)
            return true;
        *wait = entry->next_probe - now;
        return false;
    case REPUTATION_MANUAL:
        *wait = -1;
        return false;
    }
    msg_panic("%s: state %d", __func__, (int) entry->state);
}

/* reputation_started - a message goes from key: the probe token */
void reputation_started(REPUTATION *rep, const char *key, long long now)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);

    now = reputation_clamp(rep, now);
    if (entry && entry->state == REPUTATION_PROBING)
        entry->next_probe =
            (entry->next_probe > now ? entry->next_probe : now) +
            rep->probe_interval;
}

/* reputation_state - the state of key */
REPUTATION_STATE reputation_state(REPUTATION *rep, const char *key,
                                  long long *until)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);

    if (until)
        *until = entry && entry->state == REPUTATION_PAUSED ? entry->until : 0;
    return entry ? entry->state : REPUTATION_ACTIVE;
}

/* reputation_state_name - the word of a state */
const char *reputation_state_name(REPUTATION_STATE state)
{
    switch (state) {
    case REPUTATION_ACTIVE:
        return "active";
    case REPUTATION_PAUSED:
        return "paused";
    case REPUTATION_PROBING:
        return "probing";
    case REPUTATION_MANUAL:
        return "manual";
    }
    return "?";
}

/* reputation_counts - the window of key at now */
void reputation_counts(REPUTATION *rep, const char *key, long long now,
                       long long *attempts, long long *hard, long long *block)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);

    now = reputation_clamp(rep, now);
    if (entry == NULL) {
        *attempts = *hard = *block = 0;
        return;
    }
    reputation_sum(rep, entry, now, attempts, hard, block);
}

/* reputation_count - keys remembered */
size_t reputation_count(const REPUTATION *rep)
{
    return htable_count(rep->keys);
}

/* reputation_each - fn for every key */
void reputation_each(REPUTATION *rep, long long now, REPUTATION_EACH_FN fn,
                     void *ctx)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;

    now = reputation_clamp(rep, now);
    htable_iter_init(&iter, rep->keys);
    while (htable_iter_next(&iter, &key, &value)) {
        const REPUTATION_ENTRY *entry = value;
        long long attempts, hard, block;

        reputation_sum(rep, entry, now, &attempts, &hard, &block);
        fn(ctx, key, entry->state,
           entry->state == REPUTATION_PAUSED ? entry->until : 0, attempts, hard,
           block);
    }
}

/* reputation_pause - the operator pauses key */
void reputation_pause(REPUTATION *rep, const char *key, long long now)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, true);

    (void) reputation_clamp(rep, now);
    entry->state = REPUTATION_MANUAL;
    entry->until = 0;
    rep->dirty = true;
}

/* reputation_resume - the operator resumes key */
void reputation_resume(REPUTATION *rep, const char *key, long long now)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);

    (void) reputation_clamp(rep, now);
    if (entry == NULL)
        return;
    if (entry->state != REPUTATION_ACTIVE)
        rep->dirty = true;
    entry->state = REPUTATION_ACTIVE;
    entry->until = 0;
    entry->pause_len = 0;
    entry->held_warned = 0;
    reputation_clear(entry);
}

/* reputation_start_probe - PAUSED -> PROBING at now */
static void reputation_start_probe(REPUTATION_ENTRY *entry, long long now)
{
    entry->state = REPUTATION_PROBING;
    entry->until = 0;
    entry->next_probe = now;
    entry->probe_since = now;
    entry->probe_attempts = entry->probe_hard = entry->probe_block = 0;
}

/* reputation_tick - end the pauses that are over; forget idle keys */
int reputation_tick(REPUTATION *rep, long long now, REPUTATION_TICK_FN fn,
                    void *ctx)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    ARGV *idle = argv_alloc(4);
    ARGV *changed = argv_alloc(4);
    int changes = 0;

    now = reputation_clamp(rep, now);
    htable_iter_init(&iter, rep->keys);
    while (htable_iter_next(&iter, &key, &value)) {
        REPUTATION_ENTRY *entry = value;

        if (entry->state == REPUTATION_PAUSED && now >= entry->until) {
            reputation_start_probe(entry, now);
            argv_add(changed, key);
        } else if (entry->state == REPUTATION_ACTIVE) {
            long long attempts, hard, block;

            reputation_sum(rep, entry, now, &attempts, &hard, &block);
            if (attempts == 0 && hard == 0 && block == 0)
                argv_add(idle, key);
        }
    }
    for (size_t i = 0; i < idle->argc; i++)
        myfree(htable_delete(rep->keys, idle->argv[i]));
    for (size_t i = 0; i < changed->argc; i++) {
        changes++;
        rep->dirty = true;
        if (fn)
            fn(ctx, changed->argv[i], REPUTATION_PAUSED, REPUTATION_PROBING);
    }
    argv_free(idle);
    argv_free(changed);
    return changes;
}

/* reputation_dirty - changed since the last save or load? */
bool reputation_dirty(const REPUTATION *rep)
{
    return rep->dirty;
}

/* reputation_key_cmp - qsort by key */
static int reputation_key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* reputation_format - the state file's text, keys sorted */
void reputation_format(REPUTATION *rep, VSTR *out)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    ARGV *keys = argv_alloc(8);

    vstr_sprintf(out, "%s\n", REPUTATION_MAGIC);
    htable_iter_init(&iter, rep->keys);
    while (htable_iter_next(&iter, &key, &value))
        if (((REPUTATION_ENTRY *) value)->state != REPUTATION_ACTIVE)
            argv_add(keys, key);
    if (keys->argc > 1)
        qsort(keys->argv, keys->argc, sizeof(keys->argv[0]),
              reputation_key_cmp);
    for (size_t i = 0; i < keys->argc; i++) {
        const REPUTATION_ENTRY *entry = htable_find(rep->keys, keys->argv[i]);

        switch (entry->state) {
        case REPUTATION_PAUSED:
            vstr_sprintf_append(out, "%s paused %lld %lld 0\n", keys->argv[i],
                                entry->until, entry->pause_len);
            break;
        case REPUTATION_MANUAL:
            vstr_sprintf_append(out, "%s paused 0 %lld 1\n", keys->argv[i],
                                entry->pause_len);
            break;
        case REPUTATION_PROBING:
            vstr_sprintf_append(out, "%s probing 0 %lld 0\n", keys->argv[i],
                                entry->pause_len);
            break;
        case REPUTATION_ACTIVE:
            break;
        }
    }
    argv_free(keys);
}

/* reputation_number - a whole number of 1 to 18 digits in [0, max] */
static bool reputation_number(const char *text, long long max, long long *out)
{
    long long value = 0;
    size_t digits = 0;

    for (const char *cp = text; *cp; cp++, digits++) {
        if (!isdigit((unsigned char) *cp) || digits >= 18)
            return false;
        value = value * 10 + (*cp - '0');
    }
    if (digits == 0 || value > max)
        return false;
    *out = value;
    return true;
}

/* reputation_key_ok - 1..REPUTATION_KEY_MAX visible ASCII bytes */
static bool reputation_key_ok(const char *key)
{
    size_t len = strlen(key);

    if (len == 0 || len > REPUTATION_KEY_MAX)
        return false;
    for (const char *cp = key; *cp; cp++)
        if ((unsigned char) *cp <= ' ' || (unsigned char) *cp >= 0x7f)
            return false;
    return true;
}

/* reputation_line - one line of the state file into rep; NULL, or why */
static const char *reputation_line(REPUTATION *rep, char *line, long long now)
{
    char *fields[6];
    size_t count = 0;
    long long until, pause_len, manual;
    REPUTATION_ENTRY *entry;
    REPUTATION_STATE state;

    for (char *cp = line; *cp;) {
        if (*cp == ' ') {
            return "fields must be separated by one space";
        }
        if (count == 6)
            return "more than 5 fields";
        fields[count++] = cp;
        while (*cp && *cp != ' ')
            cp++;
        if (*cp == ' ') {
            *cp++ = 0;
            if (*cp == 0)
                return "trailing space";
        }
    }
    if (count != 5)
        return "not KEY STATE UNTIL PAUSE MANUAL";
    if (!reputation_key_ok(fields[0]))
        return "bad key";
    if (!reputation_number(fields[2], 253402300799LL, &until))
        return "bad UNTIL";
    if (!reputation_number(fields[3], 366LL * 86400, &pause_len))
        return "bad PAUSE";
    if (!reputation_number(fields[4], 1, &manual))
        return "bad MANUAL (0 or 1)";
    if (strcmp(fields[1], "paused") == 0) {
        if (manual) {
            if (until != 0)
                return "a manual pause has no UNTIL";
            state = REPUTATION_MANUAL;
        } else {
            if (until == 0)
                return "an automatic pause needs UNTIL";
            if (pause_len == 0)
                return "an automatic pause needs PAUSE";
            state = REPUTATION_PAUSED;
        }
    } else if (strcmp(fields[1], "probing") == 0) {
        if (manual || until != 0)
            return "a probe has no UNTIL and is not manual";
        state = REPUTATION_PROBING;
    } else {
        return "bad STATE (paused or probing)";
    }
    /* A clock set far ahead when it was written must not pause a source
       for years: no automatic pause is longer than max_pause_time. */
    if (state == REPUTATION_PAUSED && until > now + rep->conf.max_pause_time)
        until = now + rep->conf.max_pause_time;
    entry = reputation_entry(rep, fields[0], true);
    entry->state = state;
    entry->until = until;
    entry->pause_len = pause_len;
    entry->held_warned = 0;
    if (state == REPUTATION_PROBING)
        reputation_start_probe(entry, now);
    return NULL;
}

/* reputation_shared_value - "paused UNTIL PAUSE MANUAL" of a paused key */
bool reputation_shared_value(REPUTATION *rep, const char *key, VSTR *out)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);

    if (entry == NULL)
        return false;
    if (entry->state == REPUTATION_PAUSED)
        vstr_sprintf(out, "paused %lld %lld 0", entry->until, entry->pause_len);
    else if (entry->state == REPUTATION_MANUAL)
        vstr_sprintf(out, "paused 0 %lld 1", entry->pause_len);
    else
        return false;
    return true;
}

/* reputation_apply_shared - another node's pause of key */
int reputation_apply_shared(REPUTATION *rep, const char *key, const char *value,
                            long long now, VSTR *why)
{
    REPUTATION_ENTRY *entry = reputation_entry(rep, key, false);
    REPUTATION_STATE before = entry ? entry->state : REPUTATION_ACTIVE;
    long long until = entry ? entry->until : 0;
    VSTR *line;
    const char *err;

    if (strncmp(value, "paused ", 7) != 0) {
        vstr_sprintf(why, "%s: \"%s\": not a pause", key, value);
        return -1;
    }
    now = reputation_clamp(rep, now);
    line = vstr_alloc(100);
    vstr_sprintf(line, "%s %s", key, value);
    /* Parse into a scratch table first: a bad value changes nothing. */
    {
        REPUTATION *scratch = reputation_alloc(&rep->conf);
        REPUTATION_ENTRY *got;

        if ((err = reputation_line(scratch, vstr_str(line), now)) != NULL) {
            vstr_sprintf(why, "%s: \"%s\": %s", key, value, err);
            reputation_free(scratch);
            vstr_free(line);
            return -1;
        }
        got = reputation_entry(scratch, key, false);
        /* Already over (a clock a little behind Redis's expiry): taking it
           would only restart this node's probe. */
        if ((got->state == REPUTATION_PAUSED && got->until <= now) ||
            (got->state == before &&
             (got->state == REPUTATION_MANUAL || got->until == until))) {
            reputation_free(scratch);
            vstr_free(line);
            return 0;
        }
        reputation_free(scratch);
    }
    vstr_sprintf(line, "%s %s", key, value);
    (void) reputation_line(rep, vstr_str(line), now);
    rep->dirty = true;
    vstr_free(line);
    return 1;
}

/* reputation_parse - the state file's text into rep */
int reputation_parse(REPUTATION *rep, const char *text, size_t len,
                     const char *origin, long long now)
{
    const char *end = text + len;
    const char *cp = text;
    VSTR *line = vstr_alloc(100);
    int lineno = 0;
    int bad = 0;

    now = reputation_clamp(rep, now);
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
            if (strcmp(vstr_str(line), REPUTATION_MAGIC) != 0) {
                msg_warn("%s, line 1: not \"%s\": the file is ignored", origin,
                         REPUTATION_MAGIC);
                bad++;
                break;
            }
            continue;
        } else {
            why = reputation_line(rep, vstr_str(line), now);
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
    rep->dirty = false;
    vstr_free(line);
    return bad;
}

/* reputation_save - the state file, durably */
int reputation_save(REPUTATION *rep, const char *path, VSTR *why)
{
    VSTR *text = vstr_alloc(200);
    int status = 0;

    reputation_format(rep, text);
    if (safe_file_write(path, vstr_str(text), vstr_len(text), 0600) < 0) {
        vstr_sprintf(why, "write %s: %s", path, strerror(errno));
        status = -1;
    } else {
        rep->dirty = false;
    }
    vstr_free(text);
    return status;
}

/* reputation_load - the state file, when there is one */
int reputation_load(REPUTATION *rep, const char *path, long long now, VSTR *why)
{
    size_t len = 0;
    char *data = safe_file_read(path, REPUTATION_FILE_MAX, &len);

    if (data == NULL) {
        if (errno == ENOENT)
            return 0;
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        return -1;
    }
    (void) reputation_parse(rep, data, len, path, now);
    myfree(data);
    return 0;
}
