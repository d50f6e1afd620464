/*
 * deliver_log - the one per-recipient delivery log line
 *
 * See deliver_log.h. The numbers are delay_format()'s, so smtp, local and
 * qmgr print a delay the same way (and never a negative one).
 */
#include "sys_defs.h"

#include <strings.h>

#include "delay_format.h"
#include "deliver_log.h"
#include "msg.h"
#include "vstr.h"

/* deliver_log_diff - b - a in seconds, never negative */
static double deliver_log_diff(const struct timeval *a, const struct timeval *b)
{
    double d = (double) (b->tv_sec - a->tv_sec) +
               (double) (b->tv_usec - a->tv_usec) / 1e6;

    return d > 0 ? d : 0;
}

/* deliver_log_usec - a time in microseconds since 1970 as a timeval */
struct timeval deliver_log_usec(long long usec)
{
    struct timeval tv;

    if (usec < 0)
        usec = 0;
    tv.tv_sec = (time_t) (usec / 1000000);
    tv.tv_usec = (suseconds_t) (usec % 1000000);
    return tv;
}

/* deliver_log_later - the later of a and b */
static const struct timeval *deliver_log_later(const struct timeval *a,
                                               const struct timeval *b)
{
    return timercmp(b, a, <) ? a : b;
}

/* deliver_log_format - the line (without "QID: ") into out; returns out */
VSTR *deliver_log_format(VSTR *out, const DELIVER_LOG *entry,
                         const DELIVER_TIMES *times)
{
    const struct timeval *active, *request, *conn, *now;
    char total[32], a[32], b[32], c[32], d[32];

    /* Each moment no earlier than the one before it. */
    active = deliver_log_later(&times->arrival, &times->active);
    request = deliver_log_later(active, &times->request);
    conn = deliver_log_later(request, &times->conn);
    now = deliver_log_later(conn, &times->now);
    delay_format(deliver_log_diff(&times->arrival, now), total, sizeof(total));
    delay_format(deliver_log_diff(&times->arrival, active), a, sizeof(a));
    delay_format(deliver_log_diff(active, request), b, sizeof(b));
    delay_format(deliver_log_diff(request, conn), c, sizeof(c));
    delay_format(deliver_log_diff(conn, now), d, sizeof(d));
    vstr_sprintf(out, "to=<%s>", entry->to);
    if (entry->orig_to != NULL && strcasecmp(entry->orig_to, entry->to) != 0)
        vstr_sprintf_append(out, ", orig_to=<%s>", entry->orig_to);
    vstr_sprintf_append(out,
                        ", relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, "
                        "status=%s (%s)",
                        entry->relay ? entry->relay : "none", total, a, b, c, d,
                        entry->dsn, entry->status, entry->reason);
    /* Last, after the reason: pflogsumm's pattern wants "dsn=X, status=S"
       side by side, takes a deferral's reason up to its first ')' and a
       bounce's up to the last one, so an unparenthesized word after the
       reason leaves every field it reads as it was. */
    if (entry->category != NULL)
        vstr_sprintf_append(out, ", category=%s", entry->category);
    return out;
}

/* deliver_log - msg_info the line */
void deliver_log(const DELIVER_LOG *entry, const DELIVER_TIMES *times)
{
    VSTR *line = vstr_alloc(200);

    msg_info("%s: %s", entry->qid,
             vstr_str(deliver_log_format(line, entry, times)));
    vstr_free(line);
}
