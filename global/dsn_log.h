/*
 * dsn_log - per-message logs of recipient results: defer/ and bounce/
 *
 * queue_directory/defer/H/QID and queue_directory/bounce/H/QID (hashed like
 * deferred/, see mail_queue.h) hold one record per event, appended:
 *
 *   bounce/  what the sender must be told: "failed" recipients (5xx, or
 *            expired) and "delivered" ones that asked NOTIFY=SUCCESS. qmgr
 *            appends and fsyncs a record before it marks the recipient done
 *            in the queue file, so a crash never loses a bounce; bounce
 *            turns the log into a DSN, and qmgr removes the log only after
 *            that DSN is queued.
 *   defer/   history of the message's temporary failures: a "delayed"
 *            record per deferred recipient per attempt (the latest one is
 *            the delay reason `sluice queue` shows), an "attempt" record per
 *            delivery round that ended in deferred/ (their count picks the
 *            next step of retry_schedule), and a "warned" record once the
 *            delay DSN of delay_warning_time is queued. Removed with the
 *            message.
 *
 * Each record is one attribute list (global/attr.h) on disk, checked
 * against dsn_log_spec when read, so a reason may hold any byte.
 */
#ifndef DSN_LOG_H
#define DSN_LOG_H

#include "sys_defs.h"
#include "attr.h"
#include "vstr.h"

#define DSN_LOG_DEFER "defer" /* queue names: see mail_queue.h */
#define DSN_LOG_BOUNCE "bounce"

#define DSN_ACTION_FAILED "failed"
#define DSN_ACTION_DELAYED "delayed"
#define DSN_ACTION_DELIVERED "delivered"
#define DSN_ACTION_ATTEMPT "attempt" /* defer log only: one per round */
#define DSN_ACTION_WARNED "warned" /* defer log only: delay DSN sent */

#define DSN_LOG_REC_MAX 16384 /* largest record */

typedef struct DSN_LOG_REC {
    const char *action; /* DSN_ACTION_* */
    const char *address; /* recipient ("" for attempt/warned) */
    const char *orcpt; /* DSN ORCPT= or "" */
    const char *notify; /* DSN NOTIFY= or "" */
    long long offset; /* R record offset, -1 for none */
    const char *status; /* X.Y.Z, "" for attempt/warned */
    const char *reason; /* text for people and the log */
    const char *diagnostic; /* "smtp; 550 ..." or "" */
    const char *remote_mta; /* "dns; mx.test" or "" */
    long long time; /* seconds since 1970 */
    const char *category; /* failed, delayed: global/bounce_class.h; NULL
                             or "" when none (older logs have none) */
} DSN_LOG_REC;

static const ATTR_SPEC dsn_log_spec[] = {
    {"action", ATTR_TYPE_STR, true, false,
     "failed | delayed | delivered | "
     "attempt | warned"},
    {"address", ATTR_TYPE_STR, true, false, "recipient"},
    {"orcpt", ATTR_TYPE_STR, true, false, "DSN ORCPT="},
    {"notify", ATTR_TYPE_STR, true, false, "DSN NOTIFY="},
    {"offset", ATTR_TYPE_INT, true, false, "R record offset or -1"},
    {"status", ATTR_TYPE_STR, true, false, "enhanced status code"},
    {"reason", ATTR_TYPE_DATA, true, false, "text"},
    {"diagnostic", ATTR_TYPE_DATA, true, false, "DSN Diagnostic-Code"},
    {"remote_mta", ATTR_TYPE_STR, true, false, "DSN Remote-MTA"},
    {"time", ATTR_TYPE_INT, true, false, "seconds since 1970"},
    {"category", ATTR_TYPE_STR, false, false,
     "failed, delayed: the failure's class (global/bounce_class.h)"},
};

/* dsn_log_append - append rec to log (DSN_LOG_DEFER or DSN_LOG_BOUNCE) of
   qid, creating the file and its hash directory; with sync, fsync the file
   (and the directory when the file is new) before returning. 0, or -1 with
   the reason in why. */
extern int dsn_log_append(const char *queue_dir, const char *log,
                          const char *qid, const DSN_LOG_REC *rec, bool sync,
                          VSTR *why);

/* A log read back: the records in file order. The strings belong to it. */
typedef struct DSN_LOG {
    DSN_LOG_REC *recs;
    size_t count;
    bool absent; /* there was no log file at all */
    ATTR_LIST **lists; /* storage behind recs */
} DSN_LOG;

/* dsn_log_read - read the whole log; an absent log is an empty DSN_LOG.
   NULL with the reason in why when it cannot be read or a record is
   malformed (a record cut at the end, from a crash mid-append, is
   ignored with no error). */
extern DSN_LOG *dsn_log_read(const char *queue_dir, const char *log,
                             const char *qid, VSTR *why);
extern DSN_LOG *dsn_log_free(DSN_LOG *dlog);
/* dsn_log_count - records with this action */
extern size_t dsn_log_count(const DSN_LOG *dlog, const char *action);
/* dsn_log_latest - the last record with action for address, or NULL */
extern const DSN_LOG_REC *dsn_log_latest(const DSN_LOG *dlog,
                                         const char *action,
                                         const char *address);

/* dsn_log_remove - unlink the log (absent is fine); 0 or -1 with errno */
extern int dsn_log_remove(const char *queue_dir, const char *log,
                          const char *qid);
/* dsn_log_exists - is there a log? */
extern bool dsn_log_exists(const char *queue_dir, const char *log,
                           const char *qid);

#endif
