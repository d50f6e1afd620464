/*
 * qmgr_sched - the queue manager's scheduling decisions, as pure functions
 *
 * Everything here is a function of the state and outcome it is given: no
 * events, no files, no clock (the time comes in as `now`), no logging. The
 * event-loop code (qmgr_dest.c, qmgr_deliver.c, qmgr_message.c) calls them
 * and applies what they return: it logs, moves files and defers
 * recipients. Each decision has a table of cases in qmgr_sched_test.c.
 *
 * A destination's window (DESIGN.md §5): slow start from
 * initial_destination_concurrency (at most the limit), +1 per success up to
 * default_destination_concurrency_limit, -1 per site failure (never below
 * 1). A whole cohort that fails (every delivery in flight reported a site
 * failure and none succeeded since the destination was last idle, or the
 * window was 1 and it failed) makes it dead for destination_dead_time;
 * when that is over it starts again from the initial window.
 *
 * Retry: after the k-th attempt (k >= 1) the next try is retry_schedule
 * step k, the last step repeating (queue_run_delay when the schedule is
 * empty). Expiry: a message older than maximal_queue_lifetime, or
 * bounce_queue_lifetime for the null sender, returns what is still
 * deferred. A delay warning goes out once, when delay_warning_time (0: off)
 * has passed and something is still deferred.
 *
 * Queue wait (the events' queued_at, global/events.h): a recipient's wait
 * for an attempt begins when its message last became eligible for
 * delivery: when its file entered the queue qmgr took it from (incoming/:
 * the commit, a release from hold/ or a requeue; active/ at start: the
 * previous qmgr's last change), for deferred/ not before its next try;
 * never before the arrival, and no later than the moment qmgr took it (a
 * flush or a requeue takes a deferred/ file before its next try).
 */
#ifndef QMGR_SCHED_H
#define QMGR_SCHED_H

#include "sys_defs.h"

#include <time.h>

/* What the decisions read of the configuration. */
typedef struct QMGR_SCHED_CONF {
    long long initial_concurrency; /* initial_destination_concurrency */
    long long concurrency_limit; /* default_destination_concurrency_limit */
    long long dead_time; /* destination_dead_time, seconds */
    long long queue_run_delay; /* seconds */
    long long max_lifetime; /* maximal_queue_lifetime */
    long long bounce_lifetime; /* bounce_queue_lifetime */
    long long delay_warning; /* delay_warning_time, 0: off */
    long long *retry_steps; /* retry_schedule, seconds */
    size_t retry_count;
} QMGR_SCHED_CONF;

/* One destination's scheduling state. */
typedef struct QMGR_SCHED_DEST {
    long long window; /* concurrency allowed now */
    size_t busy; /* deliveries in flight */
    bool cohort_ok; /* a success since busy was last 0 */
    time_t dead_until; /* 0: alive */
    time_t paused_until; /* agent too busy: 0, or wait until */
} QMGR_SCHED_DEST;

/* How one delivery ended, as far as the destination is concerned. */
typedef enum QMGR_SCHED_OUTCOME {
    QMGR_SCHED_NOT_ATTEMPTED, /* the agent never reported on the site */
    QMGR_SCHED_SITE_OK, /* the site answered */
    QMGR_SCHED_SITE_FAILED, /* the site itself failed */
} QMGR_SCHED_OUTCOME;

/* What the caller must do after a state change. */
typedef enum QMGR_SCHED_VERDICT {
    QMGR_SCHED_NONE, /* nothing to apply */
    QMGR_SCHED_KILLED, /* just became dead: log, defer its queue */
    QMGR_SCHED_REVIVED, /* its dead time is over: log, go on */
} QMGR_SCHED_VERDICT;

/* qmgr_sched_initial_window - where slow start begins */
extern long long qmgr_sched_initial_window(const QMGR_SCHED_CONF *conf);
/* qmgr_sched_dest_init - a new destination: alive, idle, initial window */
extern void qmgr_sched_dest_init(QMGR_SCHED_DEST *dest,
                                 const QMGR_SCHED_CONF *conf);
/* qmgr_sched_dest_alive - is it alive at now? A destination whose dead
   time is over comes back (*verdict QMGR_SCHED_REVIVED, window reset) */
extern bool qmgr_sched_dest_alive(QMGR_SCHED_DEST *dest,
                                  const QMGR_SCHED_CONF *conf, time_t now,
                                  QMGR_SCHED_VERDICT *verdict);
/* qmgr_sched_dest_may_start - may one more delivery start at now (room in
   the window, alive, not paused)? Updates the state as dest_alive does
   and forgets a pause that is over. The caller counts the start (busy++).
   */
extern bool qmgr_sched_dest_may_start(QMGR_SCHED_DEST *dest,
                                      const QMGR_SCHED_CONF *conf, time_t now,
                                      QMGR_SCHED_VERDICT *verdict);
/* qmgr_sched_dest_result - a delivery in flight ended with outcome at now:
   the window moves; QMGR_SCHED_KILLED when the whole cohort failed */
extern QMGR_SCHED_VERDICT qmgr_sched_dest_result(QMGR_SCHED_DEST *dest,
                                                 const QMGR_SCHED_CONF *conf,
                                                 QMGR_SCHED_OUTCOME outcome,
                                                 time_t now);
/* qmgr_sched_dest_pause - a delivery could not start (the agent is at its
   limit): it no longer counts as in flight; nothing starts before
   now + pause */
extern void qmgr_sched_dest_pause(QMGR_SCHED_DEST *dest, time_t now,
                                  long long pause);
/* qmgr_sched_dest_revive - a flush: a dead destination is alive again */
extern void qmgr_sched_dest_revive(QMGR_SCHED_DEST *dest,
                                   const QMGR_SCHED_CONF *conf);
/* qmgr_sched_dest_idle - nothing in flight, not dead, not paused at now:
   with an empty queue the destination may be forgotten */
extern bool qmgr_sched_dest_idle(const QMGR_SCHED_DEST *dest, time_t now);

/* qmgr_sched_outcome - the outcome of a delivery: done (the agent sent
   DONE) with its status and site_failed flag */
extern QMGR_SCHED_OUTCOME qmgr_sched_outcome(bool done, long long status,
                                             bool site_failed);
/* qmgr_sched_agent_retry - the agent died (the connection was lost before
   DONE): queue what has no result again at once, rather than defer it?
   deaths: agent deaths of this message so far; limit: how many are
   forgiven; withdrawn: held or deleted meanwhile */
extern bool qmgr_sched_agent_retry(bool agent_died, bool done, bool withdrawn,
                                   int deaths, int limit);

/* qmgr_sched_retry_delay - the wait after the attempts-th attempt */
extern long long qmgr_sched_retry_delay(const QMGR_SCHED_CONF *conf,
                                        size_t attempts);
/* qmgr_sched_retry_next - when a message that has had attempts attempts
   (this one included) is tried next; requeue: at once */
extern time_t qmgr_sched_retry_next(const QMGR_SCHED_CONF *conf,
                                    size_t attempts, time_t now, bool requeue);
/* qmgr_sched_retry_max - the longest step of retry_schedule */
extern long long qmgr_sched_retry_max(const QMGR_SCHED_CONF *conf);

/* qmgr_sched_wait_start - when the queue wait of a message's recipients
   began, in Unix microseconds as all the arguments: entered, when its file
   entered the queue it was taken from (0: not known); due, its next try
   (deferred/; 0: none); arrival, the message's arrival; taken, when qmgr
   moved it into active/ */
extern long long qmgr_sched_wait_start(long long entered, long long due,
                                       long long arrival, long long taken);

/* qmgr_sched_lifetime - how long a message may stay queued */
extern long long qmgr_sched_lifetime(const QMGR_SCHED_CONF *conf,
                                     bool null_sender);
/* qmgr_sched_expired - is a message that arrived at arrival too old at
   now? */
extern bool qmgr_sched_expired(const QMGR_SCHED_CONF *conf, time_t arrival,
                               time_t now, bool null_sender);
/* qmgr_sched_warn_due - is the delay warning of a message due at now?
   deferred: recipients still deferred; warned: the warning went out
   before; held: it is going to hold/ */
extern bool qmgr_sched_warn_due(const QMGR_SCHED_CONF *conf, time_t arrival,
                                time_t now, size_t deferred, bool warned,
                                bool held);

#endif
