/*
 * qid - queue IDs: unique on the machine, sortable by arrival time, safe as
 * file names
 *
 * The layout is in qid.h. Each character carries 5 bits, most significant
 * first, so 7 characters hold 35 bits of seconds (good until the year 3058),
 * 4 hold the microseconds (20 bits) and 5 the process ID (25 bits, above
 * Linux's largest pid_max of 2^22).
 *
 * The one piece of state is the last time this process handed out, so that
 * the next ID is strictly later: when the clock has not moved on we wait for
 * it, and when it was set back by more than a second we count on from the
 * last ID rather than stall (the pid still keeps us apart from everyone
 * else). A fork()ed child inherits that time, and differs by its pid.
 */
#include "sys_defs.h"

#include <sched.h>
#include <time.h>

#include "msg.h"
#include "qid.h"
#include "proc_pid.h"

#define QID_SEC_CHARS 7
#define QID_USEC_CHARS 4
#define QID_PID_CHARS 5
#define QID_USEC_OFFSET QID_SEC_CHARS
#define QID_PID_OFFSET (QID_SEC_CHARS + QID_USEC_CHARS)
#define QID_BITS 5
#define QID_USEC_PER_SEC 1000000LL

static const char qid_alphabet[] = "0123456789ABCDEFGHJKLMNPQRSTVWXY";

/* Microseconds since the epoch of the last ID this process made. */
static long long qid_last_usec = -1;

/* qid_digit - the value of one ID character, or -1 */
static int qid_digit(int ch)
{
    const char *cp;

    if (ch == 0 || (cp = strchr(qid_alphabet, ch)) == NULL)
        return -1;
    return (int) (cp - qid_alphabet);
}

/* qid_put - value as count characters, most significant first */
static void qid_put(char *buf, unsigned long long value, int count)
{
    for (int i = count - 1; i >= 0; i--) {
        buf[i] = qid_alphabet[value & 31];
        value >>= QID_BITS;
    }
}

/* qid_get - the value of count characters (all checked valid) */
static unsigned long long qid_get(const char *buf, int count)
{
    unsigned long long value = 0;

    for (int i = 0; i < count; i++)
        value = (value << QID_BITS) | (unsigned) qid_digit(buf[i]);
    return value;
}

/* qid_clock - the time of day in microseconds since the epoch */
static long long qid_clock(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        msg_fatal("clock_gettime: %m");
    return (long long) ts.tv_sec * QID_USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* qid_new - a fresh queue ID into buf */
void qid_new(char buf[QID_SIZE])
{
    long long now = qid_clock();
    long long pid = (long long) proc_pid();

    while (now <= qid_last_usec) {
        if (qid_last_usec - now > QID_USEC_PER_SEC) {
            now = qid_last_usec + 1; /* the clock went back: count on */
            break;
        }
        (void) sched_yield();
        now = qid_clock();
    }
    if (now < 0 || pid < 0 || pid >= (1LL << (QID_PID_CHARS * QID_BITS)))
        msg_panic("%s: time %lld or pid %lld out of range", __func__, now, pid);
    qid_last_usec = now;
    qid_put(buf, (unsigned long long) (now / QID_USEC_PER_SEC), QID_SEC_CHARS);
    qid_put(buf + QID_USEC_OFFSET,
            (unsigned long long) (now % QID_USEC_PER_SEC), QID_USEC_CHARS);
    qid_put(buf + QID_PID_OFFSET, (unsigned long long) pid, QID_PID_CHARS);
    buf[QID_LEN] = 0;
}

/* qid_mine - the pid part is this process's */
bool qid_mine(const char *qid)
{
    return qid_get(qid + QID_PID_OFFSET, QID_PID_CHARS) ==
           (unsigned long long) proc_pid();
}

/* qid_valid - is name a well-formed queue ID (and nothing else)? */
bool qid_valid(const char *name)
{
    if (name == NULL || strnlen(name, QID_SIZE) != QID_LEN)
        return false;
    for (int i = 0; i < QID_LEN; i++)
        if (qid_digit((unsigned char) name[i]) < 0)
            return false;
    return qid_get(name + QID_USEC_OFFSET, QID_USEC_CHARS) <
           (unsigned long long) QID_USEC_PER_SEC;
}

/* qid_time - arrival time encoded in a valid ID (seconds, microseconds) */
void qid_time(const char *qid, time_t *sec, long *usec)
{
    if (!qid_valid(qid))
        msg_panic("%s: bad queue ID \"%s\"", __func__, qid ? qid : "(null)");
    *sec = (time_t) qid_get(qid, QID_SEC_CHARS);
    *usec = (long) qid_get(qid + QID_USEC_OFFSET, QID_USEC_CHARS);
}

/* qid_hash_char - the first microsecond character of a valid ID */
char qid_hash_char(const char *qid)
{
    if (!qid_valid(qid))
        msg_panic("%s: bad queue ID \"%s\"", __func__, qid ? qid : "(null)");
    return qid[QID_USEC_OFFSET];
}
