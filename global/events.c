/*
 * events - write the journal of message events (JSON lines, segmented)
 *
 * Who writes: the daemons that make the queue changes (qmgr: received,
 * when it first takes a message from incoming/, deferred, delivered,
 * bounced, expired, returned; cleanup: received of a message it puts on
 * hold/ itself) append through
 * this module, each process to its own segment, with write(2) on an
 * O_APPEND descriptor and one fdatasync(2) per batch. Chosen over an
 * "events" daemon because the rule is "an event is on disk no later than
 * the queue change it describes", and the change follows at once: a daemon
 * would put an IPC round trip plus the same fsync in front of every change
 * and add a process whose death stalls the queue, while buying no fewer
 * fsyncs. One writer per segment needs no lock, no roll coordination and
 * cannot interleave lines; a reader merges segments by timestamp.
 *
 * Batching: a caller adds the events of one or more queue changes and
 * flushes once, before it makes any of them durable. qmgr does group
 * commit (qmgr/qmgr_message.c): every outcome that comes in during one
 * pass of its event loop, with the received events of the messages it
 * took, shares one fdatasync, and only then are the done marks, removals
 * and moves to deferred/ made; so neither the client's 250 (cleanup
 * writes no event for mail qmgr will take) nor each recipient pays a
 * journal fdatasync of its own. A batch whose write or fdatasync fails is
 * cut off the segment again (ftruncate to where it began), so a segment
 * only ever holds whole batches that were reported durable, or a torn
 * tail that a crash left. What a caller does on failure is its own rule:
 * cleanup answers 4xx and queues nothing; qmgr keeps the batch pending
 * (events_retain) and makes none of the queue changes it describes until
 * a retry writes it. A failure also puts up the stall mark
 * (EVENTS_STALL_MARK), and cleanup refuses mail (4xx) while it is up or
 * while the journal's file system has less than events_minfree free
 * (events_check): a full disk answers 4xx before events could be lost.
 *
 * Torn tails: a crash (power loss, not kill -9: a write to a regular file
 * is not interrupted half-way by a signal) may leave a segment's last line
 * incomplete. events_open repairs every segment whose writer process is
 * gone: the tail after the last LF is cut, with one warning. Readers skip
 * an incomplete last line in any case (its writer may still be at work).
 *
 * Segments roll when the next batch would make them larger than
 * events_segment_size, or they are older than events_segment_age; a new
 * segment's directory entry is fsynced before its first batch is reported
 * durable.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include <jansson.h>

#include "events.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "trace.h"
#include "utf8.h"

struct EVENTS {
    char *dir;
    char *node; /* myhostname */
    char *program;
    long long max_size; /* events_segment_size */
    long long max_age; /* events_segment_age, seconds */
    int fd; /* current segment, -1: none yet */
    VSTR *path; /* its path */
    long long bytes; /* its size */
    time_t start; /* when it was opened */
    VSTR *batch; /* lines not yet written */
    VSTR *why;
    long long minfree; /* events_minfree */
    bool retain; /* a failed batch stays pending (events_retain) */
    bool stalled; /* this writer's last flush failed: the mark is up */
};

/* events_event_init - an EVENT with nothing set (numbers -1) */
void events_event_init(EVENT *event, const char *kind, const char *qid,
                       const char *seq)
{
    memset(event, 0, sizeof(*event));
    event->kind = kind;
    event->qid = qid;
    event->seq = seq;
    event->size = -1;
    event->rcpt_count = -1;
    event->delay = -1;
    event->arrival_usec = -1;
    event->hard = -1;
    event->async = -1;
    event->verified = -1;
    event->attempt_seconds = -1;
    event->connect_seconds = -1;
    event->queued_usec = -1;
    event->attempt = -1;
    event->committed_usec = -1;
}

/* events_put_digits - value as n decimal digits at cp (zero-padded) */
static void events_put_digits(char *cp, int n, long value)
{
    while (n-- > 0) {
        cp[n] = (char) ('0' + value % 10);
        value /= 10;
    }
}

/* events_stamp - when as the events' UTC time, YYYY-MM-DDTHH:MM:SS.uuuuuuZ */
static void events_stamp(char *buf, size_t len, const struct timeval *when)
{
    struct tm tm;
    time_t secs = when->tv_sec;
    char stamp[64];

    gmtime_r(&secs, &tm);
    /* The usual case by hand: strftime and snprintf cost more than the
       rest of a line (three stamps an event). */
    if (len >= 28 && tm.tm_year + 1900 >= 1000 && tm.tm_year + 1900 <= 9999 &&
        when->tv_usec >= 0 && when->tv_usec < 1000000) {
        memcpy(buf, "0000-00-00T00:00:00.000000Z", 28);
        events_put_digits(buf, 4, tm.tm_year + 1900L);
        events_put_digits(buf + 5, 2, tm.tm_mon + 1L);
        events_put_digits(buf + 8, 2, tm.tm_mday);
        events_put_digits(buf + 11, 2, tm.tm_hour);
        events_put_digits(buf + 14, 2, tm.tm_min);
        events_put_digits(buf + 17, 2, tm.tm_sec);
        events_put_digits(buf + 20, 6, (long) when->tv_usec);
        return;
    }
    if (strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        msg_panic("%s: strftime", __func__);
    if (snprintf(buf, len, "%s.%06ldZ", stamp, (long) when->tv_usec) >=
        (int) len)
        msg_panic("%s: time stamp too long", __func__);
}

/*
 * The formatter. Lines are written here by hand, not built as a jansson
 * object and dumped: that cost qmgr two dozen allocations and a hash
 * table per event. The text is what json_dumps gave with JSON_COMPACT |
 * JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII (events_test.c holds expected
 * lines, and checks that jansson parses and dumps lines again to the same
 * bytes): keys in the order below, no spaces, strings escaped as jansson
 * escapes them (\" \\ \b \f \n \r \t, other controls and every non-ASCII
 * character as \uXXXX, upper-case hex, surrogate pairs beyond the BMP);
 * reals (delays, seconds) as JSON_REAL_PRECISION(15) has them
 * (events_put_real).
 */

/* events_utf8_ok - is text valid UTF-8 (what json_string accepts)? */
static bool events_utf8_ok(const char *text)
{
    const unsigned char *cp = (const unsigned char *) text;
    const unsigned char *end = cp + strlen(text);
    unsigned int value;
    size_t n;

    for (; cp < end; cp += n)
        if ((n = utf8_char(cp, end, &value)) == 0)
            return false;
    return true;
}

/* events_put_u - one \uXXXX escape */
static void events_put_u(VSTR *line, unsigned int unit)
{
    static const char hex[] = "0123456789ABCDEF";
    char seq[6] = {'\\',
                   'u',
                   hex[(unit >> 12) & 0xf],
                   hex[(unit >> 8) & 0xf],
                   hex[(unit >> 4) & 0xf],
                   hex[unit & 0xf]};

    vstr_ncat(line, seq, sizeof(seq));
}

/* events_put_chars - text escaped, without the quotes; ascii: it is not
   UTF-8, every byte >= 0x80 becomes '?' */
static void events_put_chars(VSTR *line, const char *text, bool ascii)
{
    const unsigned char *cp = (const unsigned char *) text;
    const unsigned char *end = ascii ? NULL : cp + strlen(text);
    const unsigned char *run;

    while (*cp) {
        for (run = cp; *cp >= 0x20 && *cp < 0x80 && *cp != '"' && *cp != '\\';
             cp++)
            /* void */;
        if (cp > run)
            vstr_ncat(line, (const char *) run, (size_t) (cp - run));
        if (*cp == 0)
            break;
        switch (*cp) {
        case '"':
            vstr_ncat(line, "\\\"", 2);
            break;
        case '\\':
            vstr_ncat(line, "\\\\", 2);
            break;
        case '\b':
            vstr_ncat(line, "\\b", 2);
            break;
        case '\f':
            vstr_ncat(line, "\\f", 2);
            break;
        case '\n':
            vstr_ncat(line, "\\n", 2);
            break;
        case '\r':
            vstr_ncat(line, "\\r", 2);
            break;
        case '\t':
            vstr_ncat(line, "\\t", 2);
            break;
        default:
            if (*cp < 0x20) {
                events_put_u(line, *cp);
            } else if (ascii) {
                vstr_addch(line, '?');
            } else {
                /* valid UTF-8 (checked above): one code point */
                unsigned int value;

                cp += utf8_char(cp, end, &value) - 1;
                if (value < 0x10000) {
                    events_put_u(line, value);
                } else {
                    value -= 0x10000;
                    events_put_u(line, 0xd800 | (value >> 10));
                    events_put_u(line, 0xdc00 | (value & 0x3ff));
                }
            }
            break;
        }
        cp++;
    }
}

/* events_put_str - text as a JSON string, or null for NULL; bytes that
   are not UTF-8 (jansson refuses them) become '?' */
static void events_put_str(VSTR *line, const char *text)
{
    if (text == NULL) {
        vstr_ncat(line, "null", 4);
        return;
    }
    vstr_addch(line, '"');
    events_put_chars(line, text, !events_utf8_ok(text));
    vstr_addch(line, '"');
}

/* events_put_key - the separator and "name": of the next member */
static void events_put_key(VSTR *line, const char *name)
{
    size_t len = strlen(name);

    /* line ends in '{' for the first member of an object */
    if (vstr_str(line)[vstr_len(line) - 1] != '{')
        vstr_addch(line, ',');
    vstr_addch(line, '"');
    vstr_ncat(line, name, len);
    vstr_ncat(line, "\":", 2);
}

/* events_put_field - "name":text (a string or null) */
static void events_put_field(VSTR *line, const char *name, const char *text)
{
    events_put_key(line, name);
    events_put_str(line, text);
}

/* events_put_int - "name":value */
static void events_put_int(VSTR *line, const char *name, long long value)
{
    char buf[24];
    char *cp = buf + sizeof(buf);
    unsigned long long mag = value < 0 ? 0ULL - (unsigned long long) value
                                       : (unsigned long long) value;

    /* By hand: printf costs more than the rest of the field. */
    do {
        *--cp = (char) ('0' + mag % 10);
        mag /= 10;
    } while (mag > 0);
    if (value < 0)
        *--cp = '-';
    events_put_key(line, name);
    vstr_ncat(line, cp, (size_t) (buf + sizeof(buf) - cp));
}

/* events_put_bool - "name":true or false */
static void events_put_bool(VSTR *line, const char *name, int value)
{
    events_put_key(line, name);
    if (value)
        vstr_ncat(line, "true", 4);
    else
        vstr_ncat(line, "false", 5);
}

/* events_put_real - "name":seconds rounded to the microsecond, as
   jansson writes a real with JSON_REAL_PRECISION(15) (Debian's libjansson
   formats with snprintf): "%.15g" (which prints such a value exactly and
   as briefly as it was rounded), ".0" added when that has neither point
   nor exponent, the exponent without '+' or leading zeros (1.2e-5) */
static void events_put_real(VSTR *line, const char *name, double seconds)
{
    long long usec = (long long) (seconds * 1000000 + 0.5);
    double value = (double) usec / 1000000;
    char buf[64];
    char *exp;
    int len;

    events_put_key(line, name);
    /* From 100 us to below 10^9 s "%.15g" writes the digits of usec / 10^6
       exactly (at most 15 significant digits: DBL_DIG), in fixed notation,
       trailing zeros dropped: done by hand, as printf of a double costs
       more than the rest of the line. */
    if (usec >= 100 && usec < 1000000000000000LL) {
        long long whole = usec / 1000000;
        long frac = (long) (usec % 1000000);
        int digits = 6;
        char *cp = buf + 24;

        do {
            *--cp = (char) ('0' + whole % 10);
            whole /= 10;
        } while (whole > 0);
        len = (int) (buf + 24 - cp);
        memmove(buf, cp, (size_t) len);
        buf[len++] = '.';
        if (frac == 0) {
            buf[len++] = '0';
        } else {
            while (frac % 10 == 0) {
                frac /= 10;
                digits--;
            }
            events_put_digits(buf + len, digits, frac);
            len += digits;
        }
        vstr_ncat(line, buf, (size_t) len);
        return;
    }
    len = snprintf(buf, sizeof(buf), "%.15g", value);
    if (len <= 0 || len >= (int) sizeof(buf) - 2)
        msg_panic("%s: %g", __func__, value);
    if ((exp = memchr(buf, 'e', (size_t) len)) != NULL) {
        char *from = exp + 1;
        char *to = exp + 1;

        if (*from == '-')
            *to++ = *from++;
        else if (*from == '+')
            from++;
        while (*from == '0' && from[1] != 0)
            from++;
        memmove(to, from, strlen(from) + 1);
        len = (int) strlen(buf);
    } else if (memchr(buf, '.', (size_t) len) == NULL) {
        buf[len++] = '.';
        buf[len++] = '0';
    }
    vstr_ncat(line, buf, (size_t) len);
}

/* events_put_stamp - "name":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
static void events_put_stamp(VSTR *line, const char *name,
                             const struct timeval *when)
{
    char ts[96];

    events_stamp(ts, sizeof(ts), when);
    events_put_key(line, name);
    vstr_addch(line, '"');
    vstr_cat(line, ts);
    vstr_addch(line, '"');
}

/* events_put_json - "name":the JSON value in text, when text is JSON of
   type; else nothing (the queue file's copy was checked when it was
   written: a value that is not is left out, not the event) */
static void events_put_json(VSTR *line, const char *name, const char *text,
                            json_type type)
{
    json_t *value;
    char *dump;

    if (text == NULL ||
        (value = json_loads(text, JSON_REJECT_DUPLICATES, NULL)) == NULL)
        return;
    if (json_typeof(value) == type &&
        (dump = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                      JSON_ENSURE_ASCII |
                                      JSON_REAL_PRECISION(15))) != NULL) {
        events_put_key(line, name);
        vstr_cat(line, dump);
        free(dump);
    }
    json_decref(value);
}

/* events_format - append event as one JSON line (with its LF) to line */
int events_format(VSTR *line, const EVENT *event, const char *node,
                  const struct timeval *now, VSTR *why)
{
    const char *id[] = {node, event->qid ? event->qid : "-", event->kind,
                        event->seq ? event->seq : "0"};
    bool ascii = false;
    char ts[96];
    TRACE_CTX trace;

    events_stamp(ts, sizeof(ts), now);
    /* id: NODE/QID/KIND/SEQ, one string: when a part is not UTF-8, the
       whole id is made ASCII, as for any string */
    for (size_t i = 0; i < sizeof(id) / sizeof(id[0]); i++)
        ascii |= !events_utf8_ok(id[i]);
    vstr_ncat(line, "{\"id\":\"", 7);
    for (size_t i = 0; i < sizeof(id) / sizeof(id[0]); i++) {
        if (i > 0)
            vstr_addch(line, '/');
        events_put_chars(line, id[i], ascii);
    }
    vstr_addch(line, '"');
    events_put_field(line, "ts", ts);
    events_put_field(line, "kind", event->kind);
    events_put_field(line, "qid", event->qid);
    events_put_field(line, "recipient", event->recipient);
    if (event->orig_recipient && *event->orig_recipient)
        events_put_field(line, "orig_recipient", event->orig_recipient);
    if (event->sender)
        events_put_field(line, "sender", event->sender);
    if (event->size >= 0)
        events_put_int(line, "size", event->size);
    if (event->rcpt_count >= 0)
        events_put_int(line, "rcpt_count", event->rcpt_count);
    if (event->client)
        events_put_field(line, "client", event->client);
    if (event->message_id && *event->message_id &&
        strlen(event->message_id) <= EVENTS_MESSAGE_ID_MAX)
        events_put_field(line, "message_id", event->message_id);
    if (event->relay)
        events_put_field(line, "relay", event->relay);
    if (event->dsn)
        events_put_field(line, "dsn", event->dsn);
    if (event->reply)
        events_put_field(line, "reply", event->reply);
    if (event->url)
        events_put_field(line, "url", event->url);
    if (event->list && *event->list)
        events_put_field(line, "list", event->list);
    if (event->user_agent)
        events_put_field(line, "user_agent", event->user_agent);
    if (event->reason)
        events_put_field(line, "reason", event->reason);
    if (event->category)
        events_put_field(line, "category", event->category);
    if (event->hard >= 0)
        events_put_bool(line, "hard", event->hard);
    if (event->async >= 0)
        events_put_bool(line, "async", event->async);
    if (event->feedback_type)
        events_put_field(line, "feedback_type", event->feedback_type);
    if (event->verified >= 0)
        events_put_bool(line, "verified", event->verified);
    if (event->reported_recipient)
        events_put_field(line, "reported_recipient", event->reported_recipient);
    if (event->batch)
        events_put_field(line, "batch", event->batch);
    if (event->delay >= 0)
        events_put_real(line, "delay", event->delay);
    events_put_field(line, "tenant", event->tenant);
    events_put_field(line, "pool", event->pool);
    events_put_field(line, "source_ip", event->source_ip);
    events_put_field(line, "provider", event->provider);
    if (event->traceparent && trace_parse_attr(event->traceparent, &trace)) {
        char tp[TRACE_TEXT_LEN + 1];

        trace_format(&trace, tp, sizeof(tp));
        events_put_field(line, "trace_id", trace.trace_id);
        events_put_field(line, "traceparent", tp);
    } else {
        events_put_field(line, "trace_id", NULL);
    }
    if (strcmp(event->kind, EVENTS_DELIVERED) == 0 ||
        (event->tls_version != NULL &&
         (strcmp(event->kind, EVENTS_DEFERRED) == 0 ||
          strcmp(event->kind, EVENTS_BOUNCED) == 0))) {
        /* an object, or null for plain text */
        events_put_key(line, "tls");
        if (event->tls_version == NULL) {
            vstr_ncat(line, "null", 4);
        } else {
            vstr_addch(line, '{');
            events_put_field(line, "version", event->tls_version);
            events_put_field(line, "cipher", event->tls_cipher);
            events_put_field(line, "level", event->tls_level);
            vstr_addch(line, '}');
        }
    }
    if (event->attempt_seconds >= 0)
        events_put_real(line, "attempt_seconds", event->attempt_seconds);
    if (event->connect_seconds >= 0)
        events_put_real(line, "connect_seconds", event->connect_seconds);
    if (event->queued_usec >= 0) {
        struct timeval queued = {
            .tv_sec = (time_t) (event->queued_usec / 1000000),
            .tv_usec = (suseconds_t) (event->queued_usec % 1000000)};

        events_put_stamp(line, "queued_at", &queued);
    }
    if (event->attempt >= 0)
        events_put_int(line, "attempt", event->attempt);
    if (event->committed_usec >= 0) {
        struct timeval committed = {
            .tv_sec = (time_t) (event->committed_usec / 1000000),
            .tv_usec = (suseconds_t) (event->committed_usec % 1000000)};

        events_put_stamp(line, "committed_at", &committed);
    }
    events_put_json(line, "tags", event->tags, JSON_ARRAY);
    events_put_json(line, "metadata", event->metadata, JSON_OBJECT);
    vstr_ncat(line, "}\n", 2);
    return 0;
}

/* events_segment_name - append START-PID-PROGRAM.jsonl to name */
void events_segment_name(VSTR *name, const struct timeval *start, long pid,
                         const char *program)
{
    struct tm tm;
    time_t secs = start->tv_sec;
    char stamp[32];

    gmtime_r(&secs, &tm);
    if (strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm) == 0)
        msg_panic("%s: strftime", __func__);
    vstr_sprintf_append(name, "%s.%06ldZ-%ld-%s%s", stamp,
                        (long) start->tv_usec, pid, program, EVENTS_SUFFIX);
}

/* events_segment_pid - the writer's pid in a segment name, or -1 */
long events_segment_pid(const char *name)
{
    size_t len = strlen(name);
    size_t suffix = sizeof(EVENTS_SUFFIX) - 1;
    const char *cp;
    long pid = 0;

    /* YYYYMMDDTHHMMSS.uuuuuuZ- is 24 characters. */
    if (len < 24 + suffix + 3 || strcmp(name + len - suffix, EVENTS_SUFFIX) ||
        name[8] != 'T' || name[15] != '.' || name[22] != 'Z' || name[23] != '-')
        return -1;
    for (cp = name + 24; *cp >= '0' && *cp <= '9'; cp++) {
        if (pid > 100000000)
            return -1;
        pid = pid * 10 + (*cp - '0');
    }
    if (cp == name + 24 || *cp != '-' || pid == 0)
        return -1;
    return pid;
}

/* events_need_roll - must the segment be left for a new one? */
bool events_need_roll(long long bytes, time_t start, time_t now, long long add,
                      long long max_size, long long max_age)
{
    /* An empty segment takes any batch, however large. */
    if (bytes == 0)
        return false;
    if (add > max_size - bytes)
        return true;
    return max_age > 0 && (long long) now - (long long) start >= max_age;
}

/* events_whole_length - length up to and with the last LF, 0: none */
size_t events_whole_length(const char *data, size_t len)
{
    while (len > 0 && data[len - 1] != '\n')
        len--;
    return len;
}

/* events_repair_file - cut path's torn tail; 1 when cut, 0 when whole */
int events_repair_file(const char *path)
{
    char buf[4096];
    struct stat st;
    off_t end;
    off_t keep = 0;
    int fd;
    int ret = 0;

    if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)
            msg_warn("events: open %s: %m", path);
        return 0;
    }
    /* Writers starting together (qmgr, feedback, ...) repair the same
       segments: one at a time, so the later one finds the tail cut and
       says nothing. */
    if (flock(fd, LOCK_EX) < 0)
        msg_warn("events: lock %s: %m", path);
    if (fstat(fd, &st) < 0 || st.st_size == 0) {
        (void) close(fd);
        return 0;
    }
    /* Backwards, a block at a time, to the last LF. */
    for (end = st.st_size; end > 0;) {
        size_t want = end > (off_t) sizeof(buf) ? sizeof(buf) : (size_t) end;
        ssize_t got = pread(fd, buf, want, end - (off_t) want);
        size_t whole;

        if (got != (ssize_t) want) {
            msg_warn("events: read %s: %m", path);
            (void) close(fd);
            return 0;
        }
        if ((whole = events_whole_length(buf, want)) > 0) {
            keep = end - (off_t) want + (off_t) whole;
            break;
        }
        end -= (off_t) want;
    }
    if (keep < st.st_size) {
        if (ftruncate(fd, keep) < 0 || safe_file_fsync(fd) < 0) {
            msg_warn("events: cut the torn tail of %s: %m", path);
        } else {
            msg_warn("events: %s: torn last event (%lld bytes) cut at offset "
                     "%lld",
                     path, (long long) (st.st_size - keep), (long long) keep);
            ret = 1;
        }
    }
    (void) close(fd);
    return ret;
}

/* events_repair - cut the torn tails of finished segments in dir */
int events_repair(const char *dir)
{
    DIR *dp;
    struct dirent *de;
    VSTR *path = vstr_alloc(100);
    int cut = 0;

    if ((dp = opendir(dir)) == NULL) {
        if (errno != ENOENT)
            msg_warn("events: open %s: %m", dir);
        vstr_free(path);
        return 0;
    }
    while ((de = readdir(dp)) != NULL) {
        long pid = events_segment_pid(de->d_name);

        /* Only a segment whose writer is gone: a live one may be at work. */
        if (pid <= 0 || (pid_t) pid == getpid())
            continue;
        if (kill((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        vstr_sprintf(path, "%s/%s", dir, de->d_name);
        cut += events_repair_file(vstr_str(path));
    }
    (void) closedir(dp);
    vstr_free(path);
    return cut;
}

/* events_open - the journal writer of program, or NULL when disabled */
EVENTS *events_open(const MAIL_CONF *conf, const char *program)
{
    EVENTS *events;
    const char *node = mail_conf_str(conf, "myhostname");
    char host[256];

    if (!mail_conf_bool(conf, "events_enable"))
        return NULL;
    events = mycalloc(1, sizeof(*events));
    events->dir = mystrdup(mail_conf_str(conf, "events_directory"));
    if (node == NULL || *node == 0) {
        if (gethostname(host, sizeof(host)) < 0)
            msg_fatal("gethostname: %m");
        host[sizeof(host) - 1] = 0;
        node = host;
    }
    events->node = mystrdup(node);
    events->program = mystrdup(program);
    events->max_size = mail_conf_size(conf, "events_segment_size");
    events->max_age = mail_conf_time(conf, "events_segment_age");
    events->minfree = mail_conf_size(conf, "events_minfree");
    events->fd = -1;
    events->path = vstr_alloc(100);
    events->batch = vstr_alloc(1024);
    events->why = vstr_alloc(100);
    (void) events_repair(events->dir);
    return events;
}

/* events_add - format event into the pending batch */
void events_add(EVENTS *events, const EVENT *event)
{
    struct timeval now;
    EVENT timed;

    if (events == NULL)
        return;
    gettimeofday(&now, NULL);
    if (event->arrival_usec >= 0) {
        long long since = (long long) now.tv_sec * 1000000 + now.tv_usec -
                          event->arrival_usec;

        timed = *event;
        timed.delay = since > 0 ? (double) since / 1e6 : 0;
        event = &timed;
    }
    if (events_format(events->batch, event, events->node, &now, events->why) <
        0)
        msg_warn("%s: %s event lost: %s", event->qid ? event->qid : "-",
                 event->kind, vstr_str(events->why));
}

/* events_new_segment - close the current segment, create the next */
static int events_new_segment(EVENTS *events, VSTR *why)
{
    struct timeval now;

    if (events->fd >= 0) {
        (void) close(events->fd);
        events->fd = -1;
    }
    if (mkdir(events->dir, 0700) < 0 && errno != EEXIST) {
        vstr_sprintf(why, "create %s: %m", events->dir);
        return -1;
    }
    gettimeofday(&now, NULL);
    vstr_sprintf(events->path, "%s/", events->dir);
    events_segment_name(events->path, &now, (long) getpid(), events->program);
    events->fd = open(vstr_str(events->path),
                      O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (events->fd < 0) {
        vstr_sprintf(why, "create %s: %m", vstr_str(events->path));
        return -1;
    }
    /* The name must survive a crash as surely as what is written in it. */
    if (safe_file_fsync_dir(events->dir) < 0) {
        vstr_sprintf(why, "fsync %s: %m", events->dir);
        (void) unlink(vstr_str(events->path));
        (void) close(events->fd);
        events->fd = -1;
        return -1;
    }
    events->bytes = 0;
    events->start = now.tv_sec;
    return 0;
}

/* events_stall_path - path = dir's stall mark (events_stalled) */
static VSTR *events_stall_path(VSTR *path, const char *dir)
{
    vstr_sprintf(path, "%s/%s", dir, EVENTS_STALL_MARK);
    return path;
}

/* events_failed - a batch could not be made durable: drop it, or keep
   it pending (events_retain) and put up (or refresh) the stall mark that
   tells the other processes (events_check) until a retry writes it. Only
   a writer that retries puts it up: one that drops its batch (cleanup:
   that message got 4xx) might never write again to take it down. Making
   an empty file, or setting its time, needs no data block, so it works on
   a full disk; when it does not, events_check still has the free space to
   go by. */
static void events_failed(EVENTS *events)
{
    VSTR *mark;
    int fd;

    if (!events->retain) {
        vstr_reset(events->batch);
        return;
    }
    mark = events_stall_path(vstr_alloc(100), events->dir);
    if ((fd = open(vstr_str(mark), O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        msg_warn("events: create %s: %m", vstr_str(mark));
    } else {
        if (futimens(fd, NULL) < 0)
            msg_warn("events: set the time of %s: %m", vstr_str(mark));
        (void) close(fd);
        events->stalled = true;
    }
    vstr_free(mark);
}

/* events_flush - write the pending batch and fdatasync it */
int events_flush(EVENTS *events, VSTR *why)
{
    size_t len;

    if (events == NULL || (len = vstr_len(events->batch)) == 0)
        return 0;
    if ((events->fd < 0 ||
         events_need_roll(events->bytes, events->start, time(NULL),
                          (long long) len, events->max_size,
                          events->max_age)) &&
        events_new_segment(events, why) < 0) {
        events_failed(events);
        return -1;
    }
    if (safe_file_write_all(events->fd, vstr_str(events->batch), len) < 0 ||
        safe_file_fsync(events->fd) < 0) {
        vstr_sprintf(why, "write %s: %m", vstr_str(events->path));
        /* Nothing of a failed batch may stay: cut it, start afresh. */
        if (ftruncate(events->fd, (off_t) events->bytes) < 0)
            msg_warn("events: truncate %s: %m", vstr_str(events->path));
        (void) close(events->fd);
        events->fd = -1;
        events_failed(events);
        return -1;
    }
    events->bytes += (long long) len;
    vstr_reset(events->batch);
    if (events->stalled) {
        VSTR *mark = events_stall_path(vstr_alloc(100), events->dir);

        events->stalled = false;
        if (unlink(vstr_str(mark)) < 0 && errno != ENOENT)
            msg_warn("events: remove %s: %m", vstr_str(mark));
        vstr_free(mark);
    }
    return 0;
}

/* events_emit - one event, durable; a warning on failure */
int events_emit(EVENTS *events, const EVENT *event)
{
    if (events == NULL)
        return 0;
    events_add(events, event);
    if (events_flush(events, events->why) < 0) {
        msg_warn("%s: %s event lost: %s", event->qid ? event->qid : "-",
                 event->kind, vstr_str(events->why));
        return -1;
    }
    return 0;
}

/* events_close - close the segment, free; returns NULL */
EVENTS *events_close(EVENTS *events)
{
    if (events == NULL)
        return NULL;
    if (events->fd >= 0)
        (void) close(events->fd);
    myfree(events->dir);
    myfree(events->node);
    myfree(events->program);
    vstr_free(events->path);
    vstr_free(events->batch);
    vstr_free(events->why);
    myfree(events);
    return NULL;
}

/* events_retain - a batch that events_flush could not write stays pending */
void events_retain(EVENTS *events)
{
    VSTR *mark;

    if (events == NULL)
        return;
    events->retain = true;
    /* A mark up now is a dead retainer's (there is one, qmgr): down with
       it, or cleanup (and the bounce daemon's DSNs) go on being refused
       until it ages; this writer's first failure puts it up again. */
    mark = events_stall_path(vstr_alloc(100), events->dir);
    if (unlink(vstr_str(mark)) < 0 && errno != ENOENT)
        msg_warn("events: remove %s: %m", vstr_str(mark));
    vstr_free(mark);
}

/* events_check - can the journal take events now? */
int events_check(EVENTS *events, VSTR *why)
{
    VSTR *mark;
    struct stat st;
    struct statvfs fs;
    unsigned long long avail;
    int ret = 0;

    if (events == NULL)
        return 0;
    mark = events_stall_path(vstr_alloc(100), events->dir);
    if (stat(vstr_str(mark), &st) == 0 &&
        (long long) time(NULL) - (long long) st.st_mtime < EVENTS_STALL_FRESH) {
        vstr_sprintf(why, "the event journal in %s could not be written",
                     events->dir);
        ret = -1;
    } else if (events->minfree > 0 && statvfs(events->dir, &fs) == 0 &&
               !__builtin_mul_overflow((unsigned long long) fs.f_bavail,
                                       (unsigned long long) fs.f_frsize,
                                       &avail) &&
               avail < (unsigned long long) events->minfree) {
        vstr_sprintf(why,
                     "not enough free space for the event journal in %s:"
                     " %llu bytes, events_minfree is %lld",
                     events->dir, avail, events->minfree);
        ret = -1;
    }
    vstr_free(mark);
    return ret;
}
