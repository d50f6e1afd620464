/*
 * deliver_log - the one per-recipient delivery log line
 *
 * smtp, local and qmgr (for what it defers or bounces itself) all log
 *   QID: to=<rcpt>, orig_to=<orig>, relay=R, delay=D, delays=a/b/c/d,
 *   dsn=X.Y.Z, status=S (reason)[, category=C]
 * through here, so the line and its numbers (global/delay_format.h) read
 * the same whoever writes them. category (global/bounce_class.h) comes
 * after the reason, for deferred and bounced only: where pflogsumm-like
 * parsers do not look. orig_to appears only when it differs from
 * to (case aside). The delays are a = arrival to active, b = active to the
 * request, c = connection setup, d = transmission; none is negative.
 */
#ifndef DELIVER_LOG_H
#define DELIVER_LOG_H

#include "sys_defs.h"

#include <sys/time.h>

#include "vstr.h"

/* The moments a delivery passed; each no earlier than the one before it
   (a later one that is not is taken as equal). */
typedef struct DELIVER_TIMES {
    struct timeval arrival; /* the message arrived */
    struct timeval active; /* qmgr took it into active/ */
    struct timeval request; /* the agent got the request */
    struct timeval conn; /* the connection was set up */
    struct timeval now; /* the outcome is known */
} DELIVER_TIMES;

typedef struct DELIVER_LOG {
    const char *qid;
    const char *to;
    const char *orig_to; /* NULL or same as to: not logged */
    const char *relay; /* NULL: "none" */
    const char *dsn;
    const char *category; /* deferred, bounced: global/bounce_class.h;
                             NULL: not logged */
    const char *status; /* sent, deferred, bounced */
    const char *reason;
} DELIVER_LOG;

/* deliver_log_usec - a time in microseconds since 1970 as a timeval */
extern struct timeval deliver_log_usec(long long usec);
/* deliver_log_format - the line (without "QID: ") into out; returns out */
extern VSTR *deliver_log_format(VSTR *out, const DELIVER_LOG *entry,
                                const DELIVER_TIMES *times);
/* deliver_log - msg_info the line */
extern void deliver_log(const DELIVER_LOG *entry, const DELIVER_TIMES *times);

#endif
