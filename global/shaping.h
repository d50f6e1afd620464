/*
 * shaping - traffic shaping rules (smtp_shaping_maps) and their limits
 *
 * A rules table is a text file in the maps syntax (global/maps.h: "key
 * value" lines, '#' comments, continuation lines), named by
 * smtp_shaping_maps as texthash:/path (or hash:/path, btree:/path, whose
 * text source /path is read). It is read whole, not key by key: providers
 * are found by the suffixes of a domain's MX hosts, so every provider must
 * be known. Keys:
 *
 *   example.com        a recipient domain (exact, case-insensitive)
 *   provider:NAME      a provider; needs mx_suffix
 *   default            every domain without a rule of its own (each such
 *                      domain gets its own limits of this shape)
 *
 * A value is a list of name=value items, separated by white space or
 * commas:
 *
 *   mx_suffix=.a.test,.b.test    providers only: MX host name suffixes
 *   max_connections=N            SMTP connections open at once: qmgr
 *                                starts at most N deliveries at once, and
 *                                the smtp agent counts its idle cached
 *                                connections of the bucket too (per smtp
 *                                process: smtp/smtp_connect.c)
 *   message_rate=N/s|N/m|N/h     GCRA token bucket on messages
 *   connection_rate=N/s|N/m|N/h  ... on connections
 *   burst=N                      back-to-back tokens (default 1)
 *   messages_per_connection=N    messages over one SMTP connection at
 *                                most: qmgr passes it with each delivery
 *                                (deliver_proto.h conn_messages) and the
 *                                smtp agent closes a connection after N
 *                                instead of caching it again
 *
 * Anything else (an unknown name, a name given twice, a number out of
 * range, mx_suffix outside a provider, a provider without mx_suffix, a key
 * given twice) is an error naming the file and line.
 *
 * Rates are GCRA (the generic cell rate algorithm): the emission interval
 * T = period / N (rounded up to a whole microsecond, so the rate is never
 * exceeded), a theoretical arrival time TAT per bucket; one unit passes
 * at now when now >= TAT - (burst - 1) * T, and then TAT = max(TAT, now) +
 * T. So at most burst units pass at once, and at most burst + W / T
 * within any window of length W. Time is microseconds, passed in: these
 * functions never read a clock.
 */
#ifndef SHAPING_H
#define SHAPING_H

#include "sys_defs.h"

#include "argv.h"
#include "vstr.h"

#define SHAPING_DEFAULT_KEY "default"
#define SHAPING_PROVIDER_PREFIX "provider:"
#define SHAPING_MAX_COUNT 1000000000LL /* largest N anywhere */

typedef enum SHAPING_KIND {
    SHAPING_KIND_DOMAIN,
    SHAPING_KIND_PROVIDER,
    SHAPING_KIND_DEFAULT,
} SHAPING_KIND;

/* N per period; count 0: no limit */
typedef struct SHAPING_RATE {
    long long count;
    long long period_usec;
} SHAPING_RATE;

typedef struct SHAPING_RULE {
    char *key; /* as in the table, lowercase */
    SHAPING_KIND kind;
    ARGV *mx_suffix; /* providers: lowercase suffixes */
    long long max_connections; /* 0: no limit */
    SHAPING_RATE message_rate;
    SHAPING_RATE connection_rate;
    long long burst; /* >= 1 */
    long long messages_per_connection; /* 0: not given */
    int lineno; /* where it was read, 0: not from a file */
} SHAPING_RULE;

typedef struct SHAPING_RULES SHAPING_RULES;

/* shaping_rate_parse - "N/s", "N/m" or "N/h" (N 1..SHAPING_MAX_COUNT); 0,
   or -1 with why */
extern int shaping_rate_parse(const char *text, SHAPING_RATE *rate, VSTR *why);
/* shaping_rate_format - the rate as it would be written ("-" for none) */
extern const char *shaping_rate_format(const SHAPING_RATE *rate, VSTR *buf);

/* shaping_rule_parse - one key and its value into rule (initialised here;
   free with shaping_rule_done); 0, or -1 with why (no file or line: the
   caller adds them) */
extern int shaping_rule_parse(const char *key, const char *value,
                              SHAPING_RULE *rule, VSTR *why);
extern void shaping_rule_done(SHAPING_RULE *rule);

/* shaping_rules_load - the tables that param's value names (an empty
   value: NULL, why empty); NULL with why ("FILE, line N: ...") when one is
   malformed or cannot be read */
extern SHAPING_RULES *shaping_rules_load(const char *param, const char *value,
                                         VSTR *why);
extern SHAPING_RULES *shaping_rules_free(SHAPING_RULES *rules);
extern size_t shaping_rules_count(const SHAPING_RULES *rules);
extern const SHAPING_RULE *shaping_rules_at(const SHAPING_RULES *rules,
                                            size_t index);
/* shaping_rules_domain - the rule of a recipient domain (any case), else
   the default, else NULL */
extern const SHAPING_RULE *shaping_rules_domain(const SHAPING_RULES *rules,
                                                const char *domain);
/* shaping_rules_exact - the domain's own rule (any case), or NULL */
extern const SHAPING_RULE *shaping_rules_exact(const SHAPING_RULES *rules,
                                               const char *domain);
/* shaping_rules_fallback - the default rule, or NULL */
extern const SHAPING_RULE *shaping_rules_fallback(const SHAPING_RULES *rules);
/* shaping_rules_providers - how many provider rules */
extern size_t shaping_rules_providers(const SHAPING_RULES *rules);
/* shaping_rules_provider - the provider every one of the MX hosts belongs
   to (each host ends in one of its suffixes, any case, a trailing dot
   ignored), NULL when none: a domain whose MX hosts mix providers is no
   provider's. The first provider in the file wins. */
extern const SHAPING_RULE *shaping_rules_provider(const SHAPING_RULES *rules,
                                                  const char *const *hosts,
                                                  size_t count);

/*
 * GCRA and the connection count of one bucket (a destination or a
 * provider with one rule). tat 0: nothing has passed yet.
 */
typedef struct SHAPING_GCRA {
    long long tat; /* theoretical arrival time, microseconds */
} SHAPING_GCRA;

/* shaping_gcra_interval - T of a rate, microseconds (0: no limit) */
extern long long shaping_gcra_interval(const SHAPING_RATE *rate);
/* shaping_gcra_wait - microseconds until one unit may pass (0: now) */
extern long long shaping_gcra_wait(const SHAPING_GCRA *gcra,
                                   const SHAPING_RATE *rate, long long burst,
                                   long long now);
/* shaping_gcra_take - one unit passes at now (the caller checked wait) */
extern void shaping_gcra_take(SHAPING_GCRA *gcra, const SHAPING_RATE *rate,
                              long long now);
/* shaping_gcra_tokens - units that could pass at once at now */
extern long long shaping_gcra_tokens(const SHAPING_GCRA *gcra,
                                     const SHAPING_RATE *rate, long long burst,
                                     long long now);

typedef struct SHAPING_STATE {
    long long connections; /* deliveries in flight */
    SHAPING_GCRA messages;
    SHAPING_GCRA connects;
    long long suspended_until; /* microseconds, 0: not suspended */
    const char *suspended_by; /* automation rule (shaping_auto.h) that
                                 suspended it, NULL: the administrator */
    /* Lower limits set by response automation, in force until then. */
    SHAPING_RATE auto_rate; /* message rate at most */
    long long auto_rate_until;
    const char *auto_rate_by;
    long long auto_connections; /* connections at most */
    long long auto_connections_until;
    const char *auto_connections_by;
} SHAPING_STATE;

typedef enum SHAPING_VERDICT {
    SHAPING_GO, /* may start now */
    SHAPING_FULL, /* max_connections in flight: wait for one to end */
    SHAPING_WAIT, /* a token (or the end of a suspension) is due later */
} SHAPING_VERDICT;

/* shaping_may_start - may one more delivery (one message, at most one
   new connection) start at now? SHAPING_WAIT sets *wait (microseconds) */
extern SHAPING_VERDICT shaping_may_start(const SHAPING_RULE *rule,
                                         const SHAPING_STATE *state,
                                         long long now, long long *wait);
/* shaping_start - it starts: a token of each rate, one connection more */
extern void shaping_start(const SHAPING_RULE *rule, SHAPING_STATE *state,
                          long long now);
/* shaping_end - a delivery ended (or never began after shaping_start) */
extern void shaping_end(SHAPING_STATE *state);
/* shaping_idle - nothing in flight and no rate remembers anything at now:
   the bucket may be forgotten without loosening any limit */
extern bool shaping_idle(const SHAPING_STATE *state, long long now);

#endif
