/*
 * shaping_redis - shaping limits shared by several nodes through Redis:
 * the pure part (what qmgr/qmgr_redis.c sends, and what it makes of the
 * answers)
 *
 * With shaping_redis_server set, every node asks one Redis before a
 * delivery of a shaped bucket starts. One Lua script (SHAPING_REDIS_TAKE)
 * does the whole step atomically: the bucket's suspension and the lower
 * limits response automation set (keys every node reads), the connection
 * leases, and the GCRA step of the message and the connection rate, and
 * when everything allows it, takes the tokens and adds a lease.
 *
 * Time: the script reads Redis's own clock (TIME: seconds and
 * microseconds), not a time the node passes in. Every node then measures
 * the shared theoretical arrival times against one clock: the nodes'
 * clocks may differ by more than an emission interval (60/s is 16 ms),
 * and qmgr's clock is CLOCK_MONOTONIC, which means nothing on another
 * machine. Whole seconds would be wrong (a burst below the per-second
 * rate collapses to about burst per second): the script uses both fields
 * of TIME. Redis 5 and later replicate a script's effects, not the script,
 * so reading TIME before writing is allowed.
 *
 * Keys of bucket B (the bucket's name in braces, a Redis Cluster hash tag:
 * all keys of one bucket are in one slot):
 *
 *   sluice:shaping:{B}:msg       message rate: the TAT (microseconds, Redis
 *                                time), expiring when it is in the past
 *   sluice:shaping:{B}:conn      connection rate: ditto
 *   sluice:shaping:{B}:leases    sorted set of connection leases: member a
 *                                lease id, score its expiry; a node renews
 *                                its leases, the leases of a node that died
 *                                expire (shaping_redis_lease_time)
 *   sluice:shaping:{B}:suspend   "BY": suspended by BY (an automation rule,
 *                                or "-" for the administrator), PX the rest
 *   sluice:shaping:{B}:rate      "T BY": message interval T at least
 *   sluice:shaping:{B}:connmax   "N BY": N connections at most
 *
 * While Redis cannot be reached or does not answer in time, each node
 * keeps its share of every limit locally (shaping_redis_share): the
 * nodes together stay within the limit without Redis.
 */
#ifndef SHAPING_REDIS_H
#define SHAPING_REDIS_H

#include "sys_defs.h"

#include "shaping.h"
#include "vstr.h"

#define SHAPING_REDIS_KEY_PREFIX "sluice:shaping:"

/* The keys of one bucket, in the order the script takes them. */
typedef enum SHAPING_REDIS_KEY {
    SHAPING_REDIS_KEY_MSG,
    SHAPING_REDIS_KEY_CONN,
    SHAPING_REDIS_KEY_LEASES,
    SHAPING_REDIS_KEY_SUSPEND,
    SHAPING_REDIS_KEY_RATE,
    SHAPING_REDIS_KEY_CONNMAX,
    SHAPING_REDIS_KEY_COUNT,
} SHAPING_REDIS_KEY;

/*
 * SHAPING_REDIS_TAKE: KEYS as above; ARGV message interval (usec, 0: none),
 * connection interval, burst, max_connections (0: none), lease id, lease
 * time (usec). Answer {allowed, wait_usec, reason, by, leased}: reason
 * "ok", "suspended", "full" or "rate"; by the automation rule behind it
 * ("" none); leased 1 when a lease was added (the node releases it).
 */
extern const char shaping_redis_take_lua[];
/* SHAPING_REDIS_RENEW: KEYS[1] leases; ARGV lease time, then lease ids:
   each one still there expires lease time from now */
extern const char shaping_redis_renew_lua[];

/* SHAPING_REDIS_RELEASE: KEYS[1] leases; ARGV grace (usec), lease id: the
   lease, if still there, expires grace from now (the connection of the
   delivery is still closing: the smtp agent says QUIT after it reported) */
extern const char shaping_redis_release_lua[];

#define SHAPING_REDIS_RELEASE_GRACE 500000LL /* usec */

/* shaping_redis_key - the key what of bucket into buf (returned) */
extern const char *shaping_redis_key(VSTR *buf, const char *bucket,
                                     SHAPING_REDIS_KEY what);

/*
 * Source pauses shared by the nodes (#18; qmgr/qmgr_source.c): a paused
 * reputation key K (a source "192.0.2.10" or a source and a provider
 * "192.0.2.10/gmail") is the string
 *
 *   sluice:source:{K}:pause   "paused UNTIL PAUSE MANUAL" (the line of
 *                             global/reputation.h's state file without
 *                             its key), PX the rest of an automatic
 *                             pause; no expiry for the operator's
 *
 * and a member of the sorted set sluice:sources (score: UNTIL, 0 for the
 * operator's), so a node finds them without SCAN. A pause is SET with
 * ZADD, a resume DEL with ZREM (SHAPING_REDIS_SOURCE_SET / _DEL). Every
 * node polls about once a second (SHAPING_REDIS_SOURCE_POLL: every key
 * still there with its value; members whose key expired are removed).
 */
#define SHAPING_REDIS_SOURCE_PREFIX "sluice:source:"
#define SHAPING_REDIS_SOURCE_INDEX "sluice:sources"

/* shaping_redis_source_key - the key of reputation key into buf */
extern const char *shaping_redis_source_key(VSTR *buf, const char *key);

/* SHAPING_REDIS_SOURCE_SET: KEYS index, key; ARGV member, value, PX in ms
   (0: no expiry), score */
extern const char shaping_redis_source_set_lua[];
/* SHAPING_REDIS_SOURCE_DEL: KEYS index, key; ARGV member */
extern const char shaping_redis_source_del_lua[];
/* SHAPING_REDIS_SOURCE_POLL: KEYS index; ARGV prefix: {member, value,
   ...} of every member whose key is there */
extern const char shaping_redis_source_poll_lua[];

/* Where the Redis server is. */
typedef struct SHAPING_REDIS_ADDR {
    char *host; /* NULL: a UNIX-domain socket */
    int port;
    char *path; /* UNIX-domain socket, NULL: host and port */
} SHAPING_REDIS_ADDR;

/* shaping_redis_addr_parse - "host:port", "[v6addr]:port" or "/path"; 0,
   or -1 with why */
extern int shaping_redis_addr_parse(const char *value, SHAPING_REDIS_ADDR *addr,
                                    VSTR *why);
extern void shaping_redis_addr_done(SHAPING_REDIS_ADDR *addr);

/* shaping_redis_share - the rule one of nodes keeps alone: each rate
   slowed nodes times (count per nodes * period: exact, never above the
   limit together), burst and max_connections divided (at least 1: a
   limit below the node count cannot be shared without Redis) */
extern void shaping_redis_share(const SHAPING_RULE *rule, long long nodes,
                                SHAPING_RULE *share);

/* shaping_redis_fallback - a node that was shaped by Redis goes on alone
   with its share at now: its rates start empty (the first unit passes
   one share interval from now), since the other nodes may have used the
   whole shared burst just before; the nodes together then stay within
   the limit across the change */
extern void shaping_redis_fallback(const SHAPING_RULE *share,
                                   SHAPING_STATE *state, long long now);

/* What the take script answered. */
typedef enum SHAPING_REDIS_VERDICT {
    SHAPING_REDIS_GO, /* tokens taken: the delivery may start */
    SHAPING_REDIS_WAIT, /* ask again after wait */
    SHAPING_REDIS_BAD, /* not an answer of the script */
} SHAPING_REDIS_VERDICT;

#define SHAPING_REDIS_POLL 200000LL /* usec: asking again while full */
#define SHAPING_REDIS_MAX_WAIT 5000000LL /* ... at the latest */
#define SHAPING_REDIS_MIN_WAIT 1000LL /* ... at the earliest */

/* shaping_redis_verdict - what the answer {allowed, wait, reason} means;
   WAIT sets *wait: the script's wait, but at most MAX_WAIT (what another
   node changed is seen again), "full" at most POLL (other nodes' ends
   are not announced), at least MIN_WAIT */
extern SHAPING_REDIS_VERDICT shaping_redis_verdict(long long allowed,
                                                   long long wait,
                                                   const char *reason,
                                                   long long *wait_out);

/* Whether Redis is being used. */
typedef enum SHAPING_REDIS_STATE {
    SHAPING_REDIS_UNKNOWN, /* not reached yet: local share meanwhile */
    SHAPING_REDIS_UP, /* limits shared */
    SHAPING_REDIS_DOWN, /* unavailable: local share */
} SHAPING_REDIS_STATE;

typedef struct SHAPING_REDIS_LINK {
    SHAPING_REDIS_STATE state;
    long long since; /* when it entered state (caller's clock) */
    int failures; /* in a row */
} SHAPING_REDIS_LINK;

#define SHAPING_REDIS_RETRY_MIN 250000LL /* usec before the first reconnect */
#define SHAPING_REDIS_RETRY_MAX 2000000LL /* ... the longest */

/* shaping_redis_link_up - a call succeeded; true: a change to log (the
   first success, or back after being down) */
extern bool shaping_redis_link_up(SHAPING_REDIS_LINK *link, long long now);
/* shaping_redis_link_down - a call failed or timed out; true: a change to
   log (once, however often it fails until it is up again) */
extern bool shaping_redis_link_down(SHAPING_REDIS_LINK *link, long long now);
/* shaping_redis_link_retry - microseconds before the next reconnect */
extern long long shaping_redis_link_retry(const SHAPING_REDIS_LINK *link);
/* shaping_redis_state_name - "up", "down" or "connecting" */
extern const char *shaping_redis_state_name(SHAPING_REDIS_STATE state);

#endif
