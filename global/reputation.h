/*
 * reputation - the reputation circuit breaker of source addresses (#18)
 *
 * A key is a source address ("127.0.0.3") or a source and a provider
 * ("127.0.0.3/gmail", reputation_key()). Each key keeps a sliding window
 * of reputation_window, as REPUTATION_BUCKETS time buckets (memory is
 * bounded whatever the traffic), of attempts, hard bounces and blocks:
 *
 *   attempt   a final answer of a remote server about a recipient: 2xx,
 *             5xx, or a 4xx that names policy or reputation
 *   hard      5xx on a recipient that is not a block (list quality)
 *   block     a reply that names policy or reputation (reputation_classify:
 *             enhanced status X.7.X, "blocked", "blocklist", "spamhaus",
 *             "reputation", "policy", ...), 4xx or 5xx
 *
 * Plain 4xx deferrals, connections that failed, and replies sluice made
 * itself are not counted at all (REPUTATION_NONE). Asynchronous bounces
 * (a DSN that arrives later) and complaints enter with record(async): they
 * add a hard bounce or a block, with the time they happened, to a window
 * whose attempt was counted when the message left.
 *
 * States of a key:
 *
 *   ACTIVE    usable. When the window holds at least min_attempts and
 *             hard/attempts >= hard_ratio or block/attempts >= block_ratio,
 *             it goes PAUSED for pause_time.
 *   PAUSED    not usable until `until`; then (reputation_tick) PROBING.
 *   PROBING   usable at probe_rate (one message per interval, in whole
 *             seconds, at least 1s):
 *             after probe_attempts answers with hard and block ratios both
 *             below half their thresholds it is ACTIVE again (window
 *             cleared); as soon as the probe answers can no longer be that
 *             clean, it is PAUSED again for twice its last pause (at most
 *             max_pause_time).
 *   MANUAL    paused by the operator (reputation_pause): no expiry, only
 *             reputation_resume ends it. A resume also ends an automatic
 *             pause or a probe.
 *
 * The last usable source of a pool is never paused without an operator's
 * word: record() takes `last_usable` from the caller (would pausing this
 * key leave some pool with no usable source for this mail?); when it is
 * true and a pause is due, the key stays usable and the verdict is
 * REPUTATION_HELD_LAST, at most once per window per key, which the caller
 * logs loudly (msg_warn) -- and may slow the source through shaping.
 *
 * Time is wall-clock seconds (time(NULL)), passed in, because pauses are
 * kept across restarts; a clock that goes backwards is clamped to the
 * latest time seen (the window does not forget, a pause does not grow).
 * Nothing here reads a clock or logs, except reputation_load, which warns
 * about each bad line it skips.
 *
 * How qmgr calls it (qmgr/qmgr_source.c):
 *
 *   start    rep = reputation_alloc(&conf) with conf from
 *            reputation_conf_parse(); reputation_load(rep, path, now) with
 *            path = $data_directory/sources/reputation (a missing file is
 *            empty).
 *   choose   before picking a source for a delivery to provider P:
 *            reputation_usable(rep, SRC, now) && reputation_usable(rep,
 *            SRC/P, now), else try the pool's next source; when a probing
 *            key is chosen, reputation_started(rep, key, now) for both
 *            keys (it takes the probe token).
 *   result   after each recipient's result with a remote reply:
 *            o = reputation_classify(code, dsn, text) (or
 *            reputation_classify_diagnostic(diag)); unless o is NONE,
 *            reputation_record() for SRC and for SRC/P, with last_usable
 *            computed from the pool; log every verdict other than
 *            REPUTATION_NOTHING with the text it leaves in why (HELD_LAST
 *            with msg_warn).
 *   async    a DSN or a complaint for a message sent from SRC to P:
 *            reputation_record(..., async = true, when = its time).
 *   tick     once a second or so: reputation_tick(rep, now, fn, ctx)
 *            ends pauses that are over (fn is told of each change, to log).
 *   save     when reputation_dirty(rep): reputation_save(rep, path, why)
 *            (temporary file, fsync, rename, directory fsync).
 *   operator sluice pool pause|resume SRC: reputation_pause/resume, save.
 *
 * The state file (compact text, written whole):
 *
 *   sluice-reputation 1
 *   KEY STATE UNTIL PAUSE MANUAL
 *
 * STATE paused or probing, UNTIL the end of a pause (seconds since the
 * epoch, 0 for a manual pause or a probe), PAUSE the length of the last
 * automatic pause in seconds (0: none yet), MANUAL 0 or 1. Only keys that
 * are not ACTIVE are written; windows are not (they restart empty). A
 * probe restarts from its beginning; a pause read back never lasts longer
 * than max_pause_time from the time it is read.
 */
#ifndef REPUTATION_H
#define REPUTATION_H

#include "sys_defs.h"

#include "shaping.h"
#include "vstr.h"

#define REPUTATION_BUCKETS 60 /* window buckets per key */
#define REPUTATION_MAGIC "sluice-reputation 1"
#define REPUTATION_FILE_MAX (16 * 1024 * 1024) /* larger: not ours */
#define REPUTATION_KEY_MAX 255 /* bytes of a key */
#define REPUTATION_PROBE_ATTEMPTS 20 /* clean probe answers to resume */
#define REPUTATION_MAX_PAUSE (24 * 3600) /* cap of a doubled pause */

typedef struct REPUTATION_CONF {
    long long window; /* seconds, >= 1 */
    long long min_attempts; /* >= 1 */
    double hard_ratio; /* (0, 1] */
    double block_ratio; /* (0, 1] */
    long long pause_time; /* seconds, >= 1 */
    long long max_pause_time; /* seconds, >= pause_time */
    SHAPING_RATE probe_rate; /* count >= 1 */
    long long probe_attempts; /* >= 1 */
} REPUTATION_CONF;

typedef enum REPUTATION_STATE {
    REPUTATION_ACTIVE,
    REPUTATION_PAUSED,
    REPUTATION_PROBING,
    REPUTATION_MANUAL,
} REPUTATION_STATE;

typedef enum REPUTATION_OUTCOME {
    REPUTATION_NONE, /* not counted: a plain deferral, no remote reply */
    REPUTATION_OK, /* an attempt, neither hard nor block */
    REPUTATION_HARD, /* an attempt that bounced hard */
    REPUTATION_BLOCK, /* an attempt refused for policy or reputation */
} REPUTATION_OUTCOME;

typedef enum REPUTATION_VERDICT {
    REPUTATION_NOTHING, /* no change of state */
    REPUTATION_PAUSED_NOW, /* ACTIVE -> PAUSED (why: the ratio) */
    REPUTATION_HELD_LAST, /* a pause was due but the key is the last
                             usable one: still ACTIVE (log loudly) */
    REPUTATION_RESUMED, /* PROBING -> ACTIVE */
    REPUTATION_REPAUSED, /* PROBING -> PAUSED, the pause doubled */
} REPUTATION_VERDICT;

typedef struct REPUTATION REPUTATION;

/* reputation_ratio_parse - "10%", "0.1" or "2.5%" as a fraction in
   (0, 1]; 0, or -1 with why */
extern int reputation_ratio_parse(const char *text, double *ratio, VSTR *why);

/* reputation_conf_parse - conf from the main.cf values (window, pause
   time as "1h" and the like, ratios as for reputation_ratio_parse, probe
   rate "N/s|N/m|N/h"); max_pause_time REPUTATION_MAX_PAUSE (or the pause
   time when longer), probe_attempts as given (>= 1); 0, or -1 with why
   naming the parameter */
extern int reputation_conf_parse(REPUTATION_CONF *conf, const char *window,
                                 long long min_attempts, const char *hard_ratio,
                                 const char *block_ratio,
                                 const char *pause_time, const char *probe_rate,
                                 long long probe_attempts, VSTR *why);

extern REPUTATION *reputation_alloc(const REPUTATION_CONF *conf);
extern REPUTATION *reputation_free(REPUTATION *rep);

/* reputation_key - the key of a source (provider NULL or "") or of a
   source and a provider, in buf */
extern const char *reputation_key(VSTR *buf, const char *source,
                                  const char *provider);

/* reputation_classify - what a remote reply (code 0: none; dsn "X.Y.Z"
   or NULL; its text, may be NULL) counts as */
extern REPUTATION_OUTCOME reputation_classify(int code, const char *dsn,
                                              const char *text);
/* reputation_classify_diagnostic - the same for a delivery agent's
   diagnostic ("smtp; 550 5.7.1 text") */
extern REPUTATION_OUTCOME reputation_classify_diagnostic(const char *diag);

/* reputation_record - one outcome of key at when (async: a late bounce
   or complaint, which adds no attempt), judged at now; a pause that is
   due is not taken when last_usable (see above). why gets a line for the
   log when the verdict is not REPUTATION_NOTHING */
extern REPUTATION_VERDICT reputation_record(REPUTATION *rep, const char *key,
                                            REPUTATION_OUTCOME outcome,
                                            bool async, long long when,
                                            long long now, bool last_usable,
                                            VSTR *why);

/* reputation_usable - may a message go from key at now? (unknown keys
   are ACTIVE; PROBING: when its probe token is there); *wait (may be
   NULL) gets the seconds until it may, -1 for never by itself (manual) */
extern bool reputation_usable(REPUTATION *rep, const char *key, long long now,
                              long long *wait);
/* reputation_started - a message goes from key at now (takes the probe
   token of a PROBING key; nothing otherwise) */
extern void reputation_started(REPUTATION *rep, const char *key, long long now);

/* reputation_state - the state of key, and (may be NULL) until when a
   PAUSED key is paused */
extern REPUTATION_STATE reputation_state(REPUTATION *rep, const char *key,
                                         long long *until);
extern const char *reputation_state_name(REPUTATION_STATE state);

/* reputation_counts - the window of key at now */
extern void reputation_counts(REPUTATION *rep, const char *key, long long now,
                              long long *attempts, long long *hard,
                              long long *block);

/* reputation_count - keys remembered (for tests and sluice pool) */
extern size_t reputation_count(const REPUTATION *rep);

/* reputation_each - fn for every key remembered (sluice pool: state,
   until, the window at now), keys in no particular order */
typedef void (*REPUTATION_EACH_FN)(void *ctx, const char *key,
                                   REPUTATION_STATE state, long long until,
                                   long long attempts, long long hard,
                                   long long block);
extern void reputation_each(REPUTATION *rep, long long now,
                            REPUTATION_EACH_FN fn, void *ctx);

/* reputation_pause, reputation_resume - the operator's word: MANUAL with
   no expiry; ACTIVE (window cleared, pause length forgotten) */
extern void reputation_pause(REPUTATION *rep, const char *key, long long now);
extern void reputation_resume(REPUTATION *rep, const char *key, long long now);

/* reputation_tick - PAUSED keys whose pause is over at now go PROBING
   (fn, may be NULL, is told of each); ACTIVE keys with an empty window
   are forgotten. The number of changes of state. */
typedef void (*REPUTATION_TICK_FN)(void *ctx, const char *key,
                                   REPUTATION_STATE from, REPUTATION_STATE to);
extern int reputation_tick(REPUTATION *rep, long long now,
                           REPUTATION_TICK_FN fn, void *ctx);

/*
 * Sharing pauses between nodes (qmgr/qmgr_source.c, through Redis): the
 * value of a paused key is the state file's line without its key,
 * "paused UNTIL PAUSE MANUAL".
 */
/* reputation_shared_value - the shared value of key into out; false when
   key is not paused (ACTIVE or PROBING: nothing to share) */
extern bool reputation_shared_value(REPUTATION *rep, const char *key,
                                    VSTR *out);
/* reputation_apply_shared - another node's value of key, at now: key
   takes that pause unless it already has it (same state and end) or it
   is over at now. 1: it
   changed (a pause to act on), 0: nothing to do, -1: not a value (why) */
extern int reputation_apply_shared(REPUTATION *rep, const char *key,
                                   const char *value, long long now, VSTR *why);

/* reputation_dirty - has a state changed since the last save or load? */
extern bool reputation_dirty(const REPUTATION *rep);

/* reputation_format - the state file's text */
extern void reputation_format(REPUTATION *rep, VSTR *out);
/* reputation_parse - read the state file's text (origin names it in
   warnings) into rep, replacing the state of the keys it names; strict:
   each bad line is warned about (msg_warn, with its number) and skipped,
   a missing or wrong first line skips all. The number of bad lines. */
extern int reputation_parse(REPUTATION *rep, const char *text, size_t len,
                            const char *origin, long long now);
/* reputation_save - write the state file durably; 0, or -1 with why */
extern int reputation_save(REPUTATION *rep, const char *path, VSTR *why);
/* reputation_load - read the state file (missing: nothing to do); 0, or
   -1 with why when it cannot be read (then nothing is loaded) */
extern int reputation_load(REPUTATION *rep, const char *path, long long now,
                           VSTR *why);

#endif
