/*
 * warmup - daily caps of new source addresses (smtp_source_warmup_maps, #18)
 *
 * A rules table is a text file in the maps syntax (texthash:/path, read
 * whole, as smtp_shaping_maps is). The key is a source address, IPv4 or
 * IPv6, as inet_ntop writes it (qmgr looks sources up in that form); the
 * value a list of name=value items separated by white space:
 *
 *   start=YYYY-MM-DD      the first day of the schedule (UTC), required
 *   caps=N,N,...          messages a day on day 0, 1, ... of the schedule
 *                         (1 to 366 steps, each 1..10^9), required
 *   PROVIDER=N,N,...      the same for the messages of one provider (the
 *                         shaping provider name, lowercase), on top of
 *                         caps
 *
 *   127.0.0.3   start=2026-12-01 caps=50,100,200,500,1000,2000 gmail=20,40,80
 *
 * After the last step of a list, that list caps nothing; before the
 * start date the source sends nothing (cap 0). Anything else (an unknown
 * or repeated name, a bad date or number, a key that is no address, a key
 * given twice) is an error naming the file and line.
 *
 * Days are UTC days (time / 86400): the same for every node and every
 * time zone, without daylight saving jumps; the counts of a day start at
 * 00:00 UTC.
 *
 * Adaptive warm-up: the schedule advances only on clean days. A day is not
 * clean when the source was paused at any time of it (warmup_paused), or
 * when it had at least WARMUP_DAY_MIN_ATTEMPTS attempts and its hard-bounce
 * or block ratio reached half its reputation threshold
 * (reputation_hard_bounce_ratio, reputation_block_ratio). Each such day
 * within the schedule adds one held day, and
 *
 *   effective day = calendar days since start - held days
 *
 * so a source that has trouble on its day 3 is on day 3 again the next day.
 *
 * Counts, outcomes and held days are kept per source in memory and in a
 * state file (compact text, written whole with safe_file_write):
 *
 *   sluice-warmup 1
 *   SOURCE DAY HELD PAUSED ATTEMPTS HARD BLOCK SENT [PROVIDER=SENT ...]
 *
 * DAY the UTC day number the counts are of, HELD the held days, PAUSED 0
 * or 1, then that day's attempts, hard bounces, blocks and messages sent,
 * and the messages sent per provider that has a list of its own.
 *
 * Time is wall-clock seconds, passed in; a clock that goes back is
 * clamped per source to the latest day seen (counts are never reset by
 * it). Nothing here reads a clock or logs, except warmup_load, which
 * warns about each bad line it skips.
 *
 * How qmgr calls it (qmgr/qmgr_source.c):
 *
 *   start    rules = warmup_rules_load("smtp_source_warmup_maps", value,
 *            why) (NULL and empty why: none); w = warmup_alloc(&conf,
 *            rules) with conf.hard_ratio/block_ratio from reputation_conf;
 *            warmup_load(w, $data_directory/sources/warmup, why).
 *   choose   skip a source (try the pool's next) while
 *            warmup_over_cap(w, SRC, P, now); the message is not delayed
 *            when another source of the pool is under its cap.
 *   send     warmup_count(w, SRC, P, now) when a delivery of a message
 *            from SRC to provider P starts (P NULL or "" when none);
 *            warmup_count_provider(w, SRC, Q, now) when the same message
 *            goes from SRC to a second provider Q (qmgr chooses a source
 *            per message, next hop and provider).
 *   result   warmup_record(w, SRC, outcome, async, now) with the same
 *            outcome reputation_record gets for SRC.
 *   tick     for each source that reputation_state() says is not ACTIVE:
 *            warmup_paused(w, SRC, now).
 *   save     every minute or so when warmup_dirty(w), and at exit:
 *            warmup_save(w, path, why) (a crash loses at most the counts
 *            since the last save: a cap may be passed by that much).
 *   show     warmup_day and warmup_cap for sluice pool.
 */
#ifndef WARMUP_H
#define WARMUP_H

#include "sys_defs.h"

#include "reputation.h"
#include "vstr.h"

#define WARMUP_MAX_STEPS 366
#define WARMUP_MAX_CAP 1000000000LL
#define WARMUP_MAX_PROVIDERS 32 /* provider lists of one source */
#define WARMUP_PROVIDER_MAX 63 /* bytes of a provider name */
#define WARMUP_DAY_SECONDS 86400LL
#define WARMUP_DAY_MIN_ATTEMPTS 10 /* fewer: the ratios say nothing */
#define WARMUP_MAGIC "sluice-warmup 1"
#define WARMUP_FILE_MAX (16 * 1024 * 1024)

typedef struct WARMUP_LIST {
    char *provider; /* NULL: every message of the source */
    long long *caps;
    size_t count;
} WARMUP_LIST;

typedef struct WARMUP_RULE {
    char *source;
    long long start_day; /* UTC days since 1970-01-01 */
    WARMUP_LIST all;
    WARMUP_LIST *providers;
    size_t provider_count;
    int lineno;
} WARMUP_RULE;

typedef struct WARMUP_RULES WARMUP_RULES;

/* warmup_date_parse - "YYYY-MM-DD" (year 1970..9999, a real date) as UTC
   days since 1970-01-01; false when it is no such date */
extern bool warmup_date_parse(const char *text, long long *day);

/* warmup_rule_parse - one key and value (rule initialised here; free with
   warmup_rule_done); 0, or -1 with why */
extern int warmup_rule_parse(const char *key, const char *value,
                             WARMUP_RULE *rule, VSTR *why);
extern void warmup_rule_done(WARMUP_RULE *rule);

/* warmup_rules_load - the tables param's value names (empty: NULL, why
   empty); NULL with why ("param: FILE, line N: ...") when malformed */
extern WARMUP_RULES *warmup_rules_load(const char *param, const char *value,
                                       VSTR *why);
extern WARMUP_RULES *warmup_rules_free(WARMUP_RULES *rules);
extern size_t warmup_rules_count(const WARMUP_RULES *rules);
extern const WARMUP_RULE *warmup_rules_find(const WARMUP_RULES *rules,
                                            const char *source);

typedef struct WARMUP_CONF {
    double hard_ratio; /* the reputation thresholds; a day at half of */
    double block_ratio; /* either is held */
} WARMUP_CONF;

typedef struct WARMUP WARMUP;

/* warmup_alloc - counts for the rules (taken over; may be NULL) */
extern WARMUP *warmup_alloc(const WARMUP_CONF *conf, WARMUP_RULES *rules);
extern WARMUP *warmup_free(WARMUP *w);
/* warmup_set_rules - new rules (after a reload; taken over), counts and
   held days kept */
extern void warmup_set_rules(WARMUP *w, WARMUP_RULES *rules);

/* warmup_day - the effective day of source at now (0: the first), -1 when
   it has no rule or its start has not come */
extern long long warmup_day(WARMUP *w, const char *source, long long now);
/* warmup_held - days source's schedule was held back */
extern long long warmup_held(WARMUP *w, const char *source, long long now);

/* warmup_cap - messages source may send today (provider NULL or "": all
   of its messages; else that provider's, by its own list), -1: no cap */
extern long long warmup_cap(WARMUP *w, const char *source, const char *provider,
                            long long now);
/* warmup_sent - messages source sent today (in all, or to provider) */
extern long long warmup_sent(WARMUP *w, const char *source,
                             const char *provider, long long now);
/* warmup_over_cap - has source reached its cap of today, in all or for
   provider (may be NULL)? */
extern bool warmup_over_cap(WARMUP *w, const char *source, const char *provider,
                            long long now);
/* warmup_count - one message goes from source to provider (may be NULL) */
extern void warmup_count(WARMUP *w, const char *source, const char *provider,
                         long long now);
/* warmup_count_provider - a message already counted for source (sent to
   another provider too) goes to provider as well: that provider's count
   only, not the source's total */
extern void warmup_count_provider(WARMUP *w, const char *source,
                                  const char *provider, long long now);
/* warmup_record - an outcome of source today (async: a late bounce or
   complaint, no attempt) */
extern void warmup_record(WARMUP *w, const char *source,
                          REPUTATION_OUTCOME outcome, bool async,
                          long long now);
/* warmup_paused - source is paused now: today is not clean */
extern void warmup_paused(WARMUP *w, const char *source, long long now);

/* warmup_dirty - changed since the last save or load? */
extern bool warmup_dirty(const WARMUP *w);
/* warmup_format - the state file's text (sources sorted) */
extern void warmup_format(WARMUP *w, VSTR *out);
/* warmup_parse - the state file's text into w, replacing the sources it
   names; strict: each bad line is warned about (origin, line number) and
   skipped. The number of bad lines. */
extern int warmup_parse(WARMUP *w, const char *text, size_t len,
                        const char *origin);
/* warmup_save - write the state file durably; 0, or -1 with why */
extern int warmup_save(WARMUP *w, const char *path, VSTR *why);
/* warmup_load - read it (missing: nothing to do); 0, or -1 with why */
extern int warmup_load(WARMUP *w, const char *path, VSTR *why);

#endif
