/*
 * qmgr_sched - the queue manager's scheduling decisions, as pure functions
 *
 * See qmgr_sched.h for the rules. Nothing here reads the clock, touches a
 * file or logs: the callers pass the time in and apply the verdicts.
 */
#include "sys_defs.h"

#include "msg.h"
#include "qmgr_sched.h"

/* qmgr_sched_initial_window - where slow start begins */
long long qmgr_sched_initial_window(const QMGR_SCHED_CONF *conf)
{
    if (conf->initial_concurrency > conf->concurrency_limit)
        return conf->concurrency_limit;
    return conf->initial_concurrency;
}

/* qmgr_sched_dest_init - a new destination: alive, idle, initial window */
void qmgr_sched_dest_init(QMGR_SCHED_DEST *dest, const QMGR_SCHED_CONF *conf)
{
    memset(dest, 0, sizeof(*dest));
    dest->window = qmgr_sched_initial_window(conf);
}

/* qmgr_sched_dest_alive - is it alive at now? (a dead time that is over
   brings it back with the initial window) */
bool qmgr_sched_dest_alive(QMGR_SCHED_DEST *dest, const QMGR_SCHED_CONF *conf,
                           time_t now, QMGR_SCHED_VERDICT *verdict)
{
    *verdict = QMGR_SCHED_NONE;
    if (dest->dead_until == 0)
        return true;
    if (now < dest->dead_until)
        return false;
    /* Its dead time is over: try again, from the start. */
    dest->dead_until = 0;
    dest->window = qmgr_sched_initial_window(conf);
    *verdict = QMGR_SCHED_REVIVED;
    return true;
}

/* qmgr_sched_dest_may_start - room in the window, alive, not paused? */
bool qmgr_sched_dest_may_start(QMGR_SCHED_DEST *dest,
                               const QMGR_SCHED_CONF *conf, time_t now,
                               QMGR_SCHED_VERDICT *verdict)
{
    *verdict = QMGR_SCHED_NONE;
    if ((long long) dest->busy >= dest->window)
        return false;
    if (!qmgr_sched_dest_alive(dest, conf, now, verdict))
        return false;
    if (dest->paused_until != 0) {
        if (now < dest->paused_until)
            return false;
        dest->paused_until = 0;
    }
    return true;
}

/* qmgr_sched_dest_result - a delivery ended: move the window, maybe die */
QMGR_SCHED_VERDICT qmgr_sched_dest_result(QMGR_SCHED_DEST *dest,
                                          const QMGR_SCHED_CONF *conf,
                                          QMGR_SCHED_OUTCOME outcome,
                                          time_t now)
{
    long long window_before = dest->window;
    bool whole_cohort = false;

    if (dest->busy == 0)
        msg_panic("%s: a result with nothing in flight", __func__);
    dest->busy--;
    switch (outcome) {
    case QMGR_SCHED_NOT_ATTEMPTED:
        break;
    case QMGR_SCHED_SITE_OK:
        dest->cohort_ok = true;
        if (dest->window < conf->concurrency_limit)
            dest->window++;
        break;
    case QMGR_SCHED_SITE_FAILED:
        if (dest->window > 1)
            dest->window--;
        whole_cohort =
            (dest->busy == 0 && !dest->cohort_ok) || window_before == 1;
        break;
    default:
        msg_panic("%s: unknown outcome %d", __func__, (int) outcome);
    }
    /* A new cohort begins when nothing is in flight. */
    if (dest->busy == 0)
        dest->cohort_ok = false;
    if (whole_cohort && dest->dead_until == 0) {
        dest->dead_until = now + (time_t) conf->dead_time;
        return QMGR_SCHED_KILLED;
    }
    return QMGR_SCHED_NONE;
}

/* qmgr_sched_dest_pause - a start that did not happen; wait a little */
void qmgr_sched_dest_pause(QMGR_SCHED_DEST *dest, time_t now, long long pause)
{
    if (dest->busy == 0)
        msg_panic("%s: a pause with nothing in flight", __func__);
    dest->busy--;
    dest->paused_until = now + (time_t) pause;
}

/* qmgr_sched_dest_revive - a flush: a dead destination is alive again */
void qmgr_sched_dest_revive(QMGR_SCHED_DEST *dest, const QMGR_SCHED_CONF *conf)
{
    if (dest->dead_until) {
        dest->dead_until = 0;
        dest->window = qmgr_sched_initial_window(conf);
    }
}

/* qmgr_sched_dest_idle - nothing in flight, not dead, not paused at now */
bool qmgr_sched_dest_idle(const QMGR_SCHED_DEST *dest, time_t now)
{
    return dest->busy == 0 && dest->dead_until <= now &&
           dest->paused_until <= now;
}

/* qmgr_sched_outcome - only an agent that reported counts as an attempt on
   the site; a site failure counts whatever the status */
QMGR_SCHED_OUTCOME qmgr_sched_outcome(bool done, long long status,
                                      bool site_failed)
{
    if (done && site_failed)
        return QMGR_SCHED_SITE_FAILED;
    if (done && status == 0)
        return QMGR_SCHED_SITE_OK;
    return QMGR_SCHED_NOT_ATTEMPTED;
}

/* qmgr_sched_agent_retry - queue again at once after an agent died? */
bool qmgr_sched_agent_retry(bool agent_died, bool done, bool withdrawn,
                            int deaths, int limit)
{
    return agent_died && !done && !withdrawn && deaths < limit;
}

/* qmgr_sched_retry_delay - the wait after the attempts-th attempt */
long long qmgr_sched_retry_delay(const QMGR_SCHED_CONF *conf, size_t attempts)
{
    if (conf->retry_count == 0)
        return conf->queue_run_delay;
    if (attempts < 1)
        attempts = 1;
    if (attempts > conf->retry_count)
        attempts = conf->retry_count;
    return conf->retry_steps[attempts - 1];
}

/* qmgr_sched_retry_next - when the message is tried next */
time_t qmgr_sched_retry_next(const QMGR_SCHED_CONF *conf, size_t attempts,
                             time_t now, bool requeue)
{
    if (requeue)
        return now;
    return now + (time_t) qmgr_sched_retry_delay(conf, attempts);
}

/* qmgr_sched_retry_max - the longest step of retry_schedule */
long long qmgr_sched_retry_max(const QMGR_SCHED_CONF *conf)
{
    long long max = 0;

    for (size_t i = 0; i < conf->retry_count; i++)
        if (conf->retry_steps[i] > max)
            max = conf->retry_steps[i];
    return max;
}

/* qmgr_sched_wait_start - when the queue wait of a message's recipients
   began (qmgr_sched.h) */
long long qmgr_sched_wait_start(long long entered, long long due,
                                long long arrival, long long taken)
{
    long long start;

    if (entered <= 0)
        return taken;
    start = entered > due ? entered : due;
    if (start < arrival)
        start = arrival;
    return start < taken ? start : taken;
}

/* qmgr_sched_lifetime - how long a message may stay queued */
long long qmgr_sched_lifetime(const QMGR_SCHED_CONF *conf, bool null_sender)
{
    return null_sender ? conf->bounce_lifetime : conf->max_lifetime;
}

/* qmgr_sched_expired - older than its lifetime at now? */
bool qmgr_sched_expired(const QMGR_SCHED_CONF *conf, time_t arrival, time_t now,
                        bool null_sender)
{
    long long age = (long long) now - (long long) arrival;

    return age > qmgr_sched_lifetime(conf, null_sender);
}

/* qmgr_sched_warn_due - is the one delay warning due at now? */
bool qmgr_sched_warn_due(const QMGR_SCHED_CONF *conf, time_t arrival,
                         time_t now, size_t deferred, bool warned, bool held)
{
    long long age = (long long) now - (long long) arrival;

    return conf->delay_warning > 0 && age > conf->delay_warning &&
           deferred > 0 && !warned && !held;
}
