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
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include <jansson.h>

#include "events.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "trace.h"

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
}

/* events_json_str - a JSON string of text, or null for NULL; bytes that
   are not UTF-8 (json_string refuses them) become '?' */
static json_t *events_json_str(const char *text)
{
    json_t *str;
    char *copy;

    if (text == NULL)
        return json_null();
    if ((str = json_string(text)) != NULL)
        return str;
    copy = mystrdup(text);
    for (char *cp = copy; *cp; cp++)
        if ((unsigned char) *cp >= 0x80)
            *cp = '?';
    str = json_string(copy);
    myfree(copy);
    return str ? str : json_null();
}

/* events_set - obj[name] = value, counting failures */
static void events_set(json_t *obj, const char *name, json_t *value, int *bad)
{
    if (value == NULL || json_object_set_new(obj, name, value) < 0)
        (*bad)++;
}

/* events_json_text - obj[name] = the JSON value in text, when text is
   JSON of type; else nothing (the queue file's copy was checked when it
   was written: a value that is not is left out, not the event) */
static void events_json_text(json_t *obj, const char *name, const char *text,
                             json_type type, int *bad)
{
    json_t *value;

    if (text == NULL ||
        (value = json_loads(text, JSON_REJECT_DUPLICATES, NULL)) == NULL)
        return;
    if (json_typeof(value) != type) {
        json_decref(value);
        return;
    }
    events_set(obj, name, value, bad);
}

/* events_format - append event as one JSON line (with its LF) to line */
int events_format(VSTR *line, const EVENT *event, const char *node,
                  const struct timeval *now, VSTR *why)
{
    json_t *obj = json_object();
    VSTR *id = vstr_alloc(100);
    struct tm tm;
    time_t secs = now->tv_sec;
    char stamp[64];
    char ts[96];
    char *text;
    int bad = 0;
    TRACE_CTX trace;

    if (obj == NULL) {
        vstr_free(id);
        vstr_cpy(why, "out of memory formatting an event");
        return -1;
    }
    vstr_sprintf(id, "%s/%s/%s/%s", node, event->qid, event->kind,
                 event->seq ? event->seq : "0");
    gmtime_r(&secs, &tm);
    if (strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        msg_panic("%s: strftime", __func__);
    if (snprintf(ts, sizeof(ts), "%s.%06ldZ", stamp, (long) now->tv_usec) >=
        (int) sizeof(ts))
        msg_panic("%s: time stamp too long", __func__);
    events_set(obj, "id", events_json_str(vstr_str(id)), &bad);
    events_set(obj, "ts", json_string(ts), &bad);
    events_set(obj, "kind", events_json_str(event->kind), &bad);
    events_set(obj, "qid", events_json_str(event->qid), &bad);
    events_set(obj, "recipient", events_json_str(event->recipient), &bad);
    if (event->orig_recipient && *event->orig_recipient)
        events_set(obj, "orig_recipient",
                   events_json_str(event->orig_recipient), &bad);
    if (event->sender)
        events_set(obj, "sender", events_json_str(event->sender), &bad);
    if (event->size >= 0)
        events_set(obj, "size", json_integer(event->size), &bad);
    if (event->rcpt_count >= 0)
        events_set(obj, "rcpt_count", json_integer(event->rcpt_count), &bad);
    if (event->client)
        events_set(obj, "client", events_json_str(event->client), &bad);
    if (event->message_id && *event->message_id &&
        strlen(event->message_id) <= EVENTS_MESSAGE_ID_MAX)
        events_set(obj, "message_id", events_json_str(event->message_id), &bad);
    if (event->relay)
        events_set(obj, "relay", events_json_str(event->relay), &bad);
    if (event->dsn)
        events_set(obj, "dsn", events_json_str(event->dsn), &bad);
    if (event->reply)
        events_set(obj, "reply", events_json_str(event->reply), &bad);
    if (event->delay >= 0)
        events_set(
            obj, "delay",
            json_real((double) (long long) (event->delay * 1000 + 0.5) / 1000),
            &bad);
    events_set(obj, "tenant", events_json_str(event->tenant), &bad);
    events_set(obj, "pool", events_json_str(event->pool), &bad);
    events_set(obj, "source_ip", events_json_str(event->source_ip), &bad);
    events_set(obj, "provider", events_json_str(event->provider), &bad);
    if (event->traceparent && trace_parse_attr(event->traceparent, &trace)) {
        char tp[TRACE_TEXT_LEN + 1];

        trace_format(&trace, tp, sizeof(tp));
        events_set(obj, "trace_id", json_string(trace.trace_id), &bad);
        events_set(obj, "traceparent", json_string(tp), &bad);
    } else {
        events_set(obj, "trace_id", json_null(), &bad);
    }
    events_json_text(obj, "tags", event->tags, JSON_ARRAY, &bad);
    events_json_text(obj, "metadata", event->metadata, JSON_OBJECT, &bad);
    text =
        bad ? NULL
            : json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                  JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    json_decref(obj);
    vstr_free(id);
    if (text == NULL) {
        vstr_cpy(why, "out of memory formatting an event");
        return -1;
    }
    vstr_cat(line, text);
    vstr_addch(line, '\n');
    free(text);
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

    if (events == NULL)
        return;
    gettimeofday(&now, NULL);
    if (events_format(events->batch, event, events->node, &now, events->why) <
        0)
        msg_warn("%s: %s event lost: %s", event->qid, event->kind,
                 vstr_str(events->why));
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
        msg_warn("%s: %s event lost: %s", event->qid, event->kind,
                 vstr_str(events->why));
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
    if (events != NULL)
        events->retain = true;
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
