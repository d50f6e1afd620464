/*
 * shaping_auto - response automation: what a remote reply does to the
 * limits of its shaping bucket (smtp_shaping_automation_maps)
 *
 * A rules table is a text file in the maps syntax (texthash:/path, read
 * whole, as smtp_shaping_maps is). The key names the rule; the value is a
 * list of name=value items, separated by white space:
 *
 *   provider=NAME        only buckets of provider:NAME (default: any)
 *   code=NNN             the reply code must be this (default: any)
 *   dsn=X.Y.Z            the reply's enhanced status code must be this
 *   action=suspend       nothing of the bucket starts
 *   action=rate:N/s|N/m|N/h   its message rate is at most this
 *   action=connections:N      its connections are at most N
 *   action=backoff       connections:1 and rate:1/m together
 *   duration=TIME        how long the action lasts (90s, 30m, 2h, 1d)
 *   trigger=N/TIME       act at the Nth match within TIME (default: the
 *                        first match); one reply that answers several
 *                        recipients of one delivery is one match
 *   regex=RE             last item: the rest of the line is a POSIX
 *                        extended regular expression (case-insensitive)
 *                        the reply text must match
 *
 * A rule needs action, duration and at least one of code, dsn, regex.
 * The first rule in the file that matches a reply is the one that counts.
 * While an action a rule set is in force, each new match of that rule
 * extends it to duration from now; actions expire by themselves. Only
 * replies of a remote server are fed here (qmgr: results that carry a
 * diagnostic); deferrals sluice makes itself (a suspension, a connection
 * that failed, a full queue) never reach these functions.
 *
 * Time is microseconds, passed in: nothing here reads a clock or logs.
 */
#ifndef SHAPING_AUTO_H
#define SHAPING_AUTO_H

#include "sys_defs.h"

#include <regex.h>

#include "shaping.h"
#include "vstr.h"

#define SHAPING_AUTO_MAX_TRIGGER 1000 /* largest N of trigger=N/TIME */

typedef enum SHAPING_AUTO_ACTION {
    SHAPING_AUTO_SUSPEND,
    SHAPING_AUTO_RATE,
    SHAPING_AUTO_CONNECTIONS,
    SHAPING_AUTO_BACKOFF,
} SHAPING_AUTO_ACTION;

typedef struct SHAPING_AUTO_RULE {
    char *name;
    int lineno;
    char *provider; /* "provider:NAME", NULL: any bucket */
    int code; /* 0: any */
    char *dsn; /* NULL: any */
    char *regex_text; /* NULL: any text */
    regex_t regex;
    SHAPING_AUTO_ACTION action;
    SHAPING_RATE rate; /* RATE, BACKOFF */
    long long connections; /* CONNECTIONS, BACKOFF */
    long long duration; /* usec */
    long long trigger_count; /* >= 1 */
    long long trigger_window; /* usec, 0 with trigger_count 1 */
} SHAPING_AUTO_RULE;

typedef struct SHAPING_AUTO_RULES SHAPING_AUTO_RULES;

/* shaping_auto_rule_parse - one key and value (rule initialised here;
   free with shaping_auto_rule_done); 0, or -1 with why */
extern int shaping_auto_rule_parse(const char *key, const char *value,
                                   SHAPING_AUTO_RULE *rule, VSTR *why);
extern void shaping_auto_rule_done(SHAPING_AUTO_RULE *rule);

/* shaping_auto_load - the tables param's value names (empty: NULL, why
   empty); NULL with why ("param: FILE, line N: ...") when malformed */
extern SHAPING_AUTO_RULES *shaping_auto_load(const char *param,
                                             const char *value, VSTR *why);
extern SHAPING_AUTO_RULES *shaping_auto_free(SHAPING_AUTO_RULES *rules);
extern size_t shaping_auto_count(const SHAPING_AUTO_RULES *rules);
extern const SHAPING_AUTO_RULE *shaping_auto_at(const SHAPING_AUTO_RULES *rules,
                                                size_t index);

/* A remote reply, taken apart. */
typedef struct SHAPING_AUTO_REPLY {
    int code; /* 0: none */
    char dsn[16]; /* "": none */
    const char *text; /* the whole reply text (borrowed) */
} SHAPING_AUTO_REPLY;

/* shaping_auto_reply_parse - a delivery agent's diagnostic ("smtp; 421
   4.7.28 text") or a bare reply text into reply; false when it is no
   SMTP reply */
extern bool shaping_auto_reply_parse(const char *diagnostic,
                                     SHAPING_AUTO_REPLY *reply);

/* shaping_auto_match - the index of the first rule that matches a reply
   for bucket (its name), or -1 */
extern long shaping_auto_match(const SHAPING_AUTO_RULES *rules,
                               const char *bucket,
                               const SHAPING_AUTO_REPLY *reply);

/* The matches of each rule in one bucket, for triggers of N in a window. */
typedef struct SHAPING_AUTO_HITS SHAPING_AUTO_HITS;

extern SHAPING_AUTO_HITS *shaping_auto_hits_alloc(const SHAPING_AUTO_RULES *);
extern SHAPING_AUTO_HITS *shaping_auto_hits_free(SHAPING_AUTO_HITS *hits);

/* shaping_auto_hit - rule (index) matched at now: does it act? (the
   Nth match within the window, or an action of this rule in force) */
extern bool shaping_auto_hit(const SHAPING_AUTO_RULES *rules, size_t index,
                             SHAPING_AUTO_HITS *hits,
                             const SHAPING_STATE *state, long long now);

/* shaping_auto_hits_recent - does hits remember a match that a trigger
   window still counts at now? (then its bucket must not be forgotten) */
extern bool shaping_auto_hits_recent(const SHAPING_AUTO_RULES *rules,
                                     const SHAPING_AUTO_HITS *hits,
                                     long long now);

typedef enum SHAPING_AUTO_CHANGE {
    SHAPING_AUTO_STARTED, /* newly in force */
    SHAPING_AUTO_EXTENDED, /* was in force (by this rule): lasts longer */
} SHAPING_AUTO_CHANGE;

/* shaping_auto_apply - the rule's action is in force from now for its
   duration */
extern SHAPING_AUTO_CHANGE shaping_auto_apply(const SHAPING_AUTO_RULE *rule,
                                              SHAPING_STATE *state,
                                              long long now);

#define SHAPING_AUTO_EXPIRED_SUSPEND (1 << 0)
#define SHAPING_AUTO_EXPIRED_RATE (1 << 1)
#define SHAPING_AUTO_EXPIRED_CONNECTIONS (1 << 2)

/* shaping_auto_expire - end what is over at now; which ended (a mask of
   SHAPING_AUTO_EXPIRED_*), with the names of the rules that set them in
   by[0..2] (suspend, rate, connections) */
extern int shaping_auto_expire(SHAPING_STATE *state, long long now,
                               const char *by[3]);

/* shaping_auto_describe - what automation has in force at now, as one
   word list ("suspend:RULE rate=1/m:RULE"), "-" when nothing */
extern const char *shaping_auto_describe(const SHAPING_STATE *state,
                                         long long now, VSTR *buf);

#endif
