/*
 * sluice_events - `sluice events [--follow] [--qid Q] [--kind K] [--json]`
 *
 * Reads the event journal (global/events.h) in events_directory: every
 * segment, each line one event, merged by timestamp (segments have one
 * writer each and overlap in time). --json prints each event as it is
 * stored, one object a line; without it one readable line per event.
 * --qid, --kind (a comma-separated list of kinds) and --since (events
 * at or after a time: YYYY-MM-DDTHH:MM:SS[.uuuuuu][Z], UTC, or an age:
 * N followed by s, m, h or d) filter. --follow prints what is appended
 * from now on (new segments included, so across segment rolls), like
 * tail -f, until interrupted; with --since it first prints the events
 * since then.
 *
 * An incomplete last line of a segment is not an event yet (its writer
 * may be at work; a dead writer's is cut by the next writer's start): it
 * is skipped, and with --follow read once it is whole. A line that is not
 * a JSON object with a kind, qid and ts is reported on stderr with its
 * segment and line number, the others are still shown, and the exit
 * status is 1.
 *
 * `sluice events status [--json]`: for each exporter main.cf configures
 * (global/events_export.h), its position (events_pos.h), its backlog (the
 * bytes and whole events of the journal it has not exported, and the
 * time stamp and age of the oldest of them) and how many events it gave
 * up on (the lines of its dead-letter file). First, the journal itself:
 * whether a writer's stall mark (events.h: qmgr could not make a batch
 * durable, and retries) is up and how old it is, the free space of its
 * file system against events_minfree, and so whether mail is accepted
 * (cleanup answers 452 4.3.1 while it is not). --json prints one object a
 * line: the journal's ("kind": "journal") first, then one per exporter.
 * Exit status 1 when an exporter's position file cannot be read (it is
 * shown with its error).
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>

#include "argv.h"
#include "events.h"
#include "events_export.h"
#include "events_pos.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_EVENTS_USAGE                                                    \
    "usage: sluice events [--follow] [--since TIME] [--qid QID] "              \
    "[--kind KIND[,KIND...]] [--json] | sluice events status [--json]"
#define SLUICE_EVENTS_POLL_USEC 200000 /* --follow: between looks */

typedef struct SLUICE_EVENTS_OPTS {
    bool follow;
    bool json;
    const char *qid;
    ARGV *kinds; /* NULL: all */
    char since[32]; /* ts of the first event shown, "": any */
} SLUICE_EVENTS_OPTS;

/* What has been read of one segment. */
typedef struct SLUICE_EVENTS_SEG {
    char *name;
    long long offset; /* up to the end of the last whole line read */
    long long lines; /* whole lines read, for error messages */
} SLUICE_EVENTS_SEG;

typedef struct SLUICE_EVENTS_STATE {
    const char *dir;
    const SLUICE_EVENTS_OPTS *opts;
    SLUICE_EVENTS_SEG *segs;
    size_t seg_count;
    size_t seg_cap;
    json_t **batch; /* events read in one pass, to be sorted */
    size_t batch_count;
    size_t batch_cap;
    int bad; /* lines that were not events */
} SLUICE_EVENTS_STATE;

static volatile sig_atomic_t sluice_events_stop;

/* sluice_events_signal - --follow ends on SIGINT or SIGTERM */
static void sluice_events_signal(int sig)
{
    sluice_events_stop = 1;
}

/* sluice_events_str - obj[name] as a string, or NULL */
static const char *sluice_events_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* sluice_events_match - does the event pass --qid and --kind? */
static bool sluice_events_match(const SLUICE_EVENTS_OPTS *opts,
                                const json_t *event)
{
    const char *kind = sluice_events_str(event, "kind");

    if (opts->qid && strcmp(opts->qid, sluice_events_str(event, "qid")) != 0)
        return false;
    /* Time stamps are fixed-width UTC text: they sort as text. */
    if (*opts->since && strcmp(sluice_events_str(event, "ts"), opts->since) < 0)
        return false;
    if (opts->kinds) {
        for (size_t i = 0; i < opts->kinds->argc; i++)
            if (strcmp(opts->kinds->argv[i], kind) == 0)
                return true;
        return false;
    }
    return true;
}

/* sluice_events_keep - take one line of segment seg: parse, check, add
   to the batch when it matches */
static void sluice_events_keep(SLUICE_EVENTS_STATE *state,
                               SLUICE_EVENTS_SEG *seg, const char *line,
                               size_t len)
{
    json_error_t error;
    json_t *event = json_loadb(line, len, JSON_REJECT_DUPLICATES, &error);

    seg->lines++;
    if (event == NULL || !json_is_object(event) ||
        sluice_events_str(event, "kind") == NULL ||
        sluice_events_str(event, "qid") == NULL ||
        sluice_events_str(event, "ts") == NULL) {
        sluice_fail("events: %s/%s: line %lld: not an event%s%s", state->dir,
                    seg->name, seg->lines, event ? "" : ": ",
                    event ? "" : error.text);
        state->bad++;
        json_decref(event);
        return;
    }
    if (!sluice_events_match(state->opts, event)) {
        json_decref(event);
        return;
    }
    if (state->batch_count == state->batch_cap) {
        state->batch_cap = state->batch_cap ? state->batch_cap * 2 : 64;
        state->batch =
            myrealloc(state->batch, state->batch_cap * sizeof(json_t *));
    }
    state->batch[state->batch_count++] = event;
}

/* sluice_events_read_seg - read seg's whole lines beyond its offset */
static void sluice_events_read_seg(SLUICE_EVENTS_STATE *state,
                                   SLUICE_EVENTS_SEG *seg)
{
    VSTR *path = vstr_alloc(100);
    VSTR *data = vstr_alloc(8192);
    char buf[65536];
    ssize_t got;
    int fd;

    vstr_sprintf(path, "%s/%s", state->dir, seg->name);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT) {
            sluice_fail("events: open %s: %s", vstr_str(path), strerror(errno));
            state->bad++;
        }
        goto out;
    }
    if (lseek(fd, (off_t) seg->offset, SEEK_SET) < 0) {
        sluice_fail("events: seek %s: %s", vstr_str(path), strerror(errno));
        state->bad++;
        (void) close(fd);
        goto out;
    }
    while ((got = read(fd, buf, sizeof(buf))) > 0)
        vstr_ncat(data, buf, (size_t) got);
    if (got < 0) {
        sluice_fail("events: read %s: %s", vstr_str(path), strerror(errno));
        state->bad++;
    }
    (void) close(fd);
    /* Whole lines only: a torn or growing tail waits. */
    {
        size_t whole = events_whole_length(vstr_str(data), vstr_len(data));
        const char *cp = vstr_str(data);
        const char *end = cp + whole;

        while (cp < end) {
            const char *nl = memchr(cp, '\n', (size_t) (end - cp));

            sluice_events_keep(state, seg, cp, (size_t) (nl - cp));
            cp = nl + 1;
        }
        seg->offset += (long long) whole;
    }
out:
    vstr_free(path);
    vstr_free(data);
}

/* sluice_events_seg_cmp - segments by name: by start time */
static int sluice_events_seg_cmp(const void *a, const void *b)
{
    return strcmp(((const SLUICE_EVENTS_SEG *) a)->name,
                  ((const SLUICE_EVENTS_SEG *) b)->name);
}

/* sluice_events_scan - add the segments not known yet; -1 when the
   directory cannot be read (a missing one has no events: 0) */
static int sluice_events_scan(SLUICE_EVENTS_STATE *state)
{
    DIR *dp;
    struct dirent *de;
    size_t known = state->seg_count;

    if ((dp = opendir(state->dir)) == NULL) {
        if (errno == ENOENT)
            return 0;
        sluice_fail("events: open %s: %s", state->dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(dp)) != NULL) {
        bool seen = false;

        if (events_segment_pid(de->d_name) < 0)
            continue;
        for (size_t i = 0; i < known && !seen; i++)
            seen = strcmp(state->segs[i].name, de->d_name) == 0;
        if (seen)
            continue;
        if (state->seg_count == state->seg_cap) {
            state->seg_cap = state->seg_cap ? state->seg_cap * 2 : 16;
            state->segs =
                myrealloc(state->segs, state->seg_cap * sizeof(*state->segs));
        }
        state->segs[state->seg_count].name = mystrdup(de->d_name);
        state->segs[state->seg_count].offset = 0;
        state->segs[state->seg_count].lines = 0;
        state->seg_count++;
    }
    (void) closedir(dp);
    qsort(state->segs, state->seg_count, sizeof(*state->segs),
          sluice_events_seg_cmp);
    return 0;
}

/* sluice_events_skip_seg - start seg at the end of its last whole line:
   --follow from now */
static void sluice_events_skip_seg(SLUICE_EVENTS_STATE *state,
                                   SLUICE_EVENTS_SEG *seg)
{
    VSTR *path = vstr_alloc(100);
    char buf[4096];
    struct stat st;
    off_t end;
    int fd;

    vstr_sprintf(path, "%s/%s", state->dir, seg->name);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0 ||
        fstat(fd, &st) < 0) {
        if (fd >= 0)
            (void) close(fd);
        vstr_free(path);
        return;
    }
    /* Back to the last LF: a batch being written is read once whole. */
    for (end = st.st_size; end > 0;) {
        size_t want = end > (off_t) sizeof(buf) ? sizeof(buf) : (size_t) end;
        ssize_t got = pread(fd, buf, want, end - (off_t) want);
        size_t whole;

        if (got != (ssize_t) want) {
            end = 0;
            break;
        }
        if ((whole = events_whole_length(buf, want)) > 0) {
            end = end - (off_t) want + (off_t) whole;
            break;
        }
        end -= (off_t) want;
    }
    seg->offset = (long long) end;
    (void) close(fd);
    vstr_free(path);
}

/* sluice_events_since - opts->since from --since's value; -1 when it is
   neither a time nor an age */
static int sluice_events_since(SLUICE_EVENTS_OPTS *opts, const char *value)
{
    struct tm tm;
    struct timeval now;
    time_t when;
    const char *end;
    char *unit;
    long long age;
    long usec = 0;

    memset(&tm, 0, sizeof(tm));
    if ((end = strptime(value, "%Y-%m-%dT%H:%M:%S", &tm)) != NULL) {
        if (*end == '.') {
            int digits = 0;

            for (end++; *end >= '0' && *end <= '9' && digits < 6; end++) {
                usec = usec * 10 + (*end - '0');
                digits++;
            }
            if (digits == 0)
                return -1;
            for (; digits < 6; digits++)
                usec *= 10;
        }
        if (*end == 'Z')
            end++;
        if (*end != 0 || (when = timegm(&tm)) == (time_t) -1)
            return -1;
    } else {
        errno = 0;
        age = strtoll(value, &unit, 10);
        if (errno || unit == value || age < 0 || unit[0] == 0 || unit[1] != 0)
            return -1;
        switch (*unit) {
        case 's':
            break;
        case 'm':
            age *= 60;
            break;
        case 'h':
            age *= 3600;
            break;
        case 'd':
            age *= 86400;
            break;
        default:
            return -1;
        }
        gettimeofday(&now, NULL);
        if (age > (long long) now.tv_sec)
            age = (long long) now.tv_sec;
        when = now.tv_sec - (time_t) age;
        usec = (long) now.tv_usec;
    }
    if (gmtime_r(&when, &tm) == NULL ||
        strftime(opts->since, sizeof(opts->since), "%Y-%m-%dT%H:%M:%S", &tm) ==
            0)
        return -1;
    snprintf(opts->since + strlen(opts->since),
             sizeof(opts->since) - strlen(opts->since), ".%06ldZ", usec);
    return 0;
}

/* sluice_events_ts_cmp - events by timestamp (fixed-width UTC text) */
static int sluice_events_ts_cmp(const void *a, const void *b)
{
    const json_t *ea = *(json_t *const *) a;
    const json_t *eb = *(json_t *const *) b;
    int cmp = strcmp(sluice_events_str(ea, "ts"), sluice_events_str(eb, "ts"));

    return cmp ? cmp
               : strcmp(
                     sluice_events_str(ea, "id") ? sluice_events_str(ea, "id")
                                                 : "",
                     sluice_events_str(eb, "id") ? sluice_events_str(eb, "id")
                                                 : "");
}

/* sluice_events_field - append " name=value" when obj has it */
static void sluice_events_field(VSTR *line, const json_t *obj, const char *key,
                                const char *label, bool angle)
{
    const json_t *value = json_object_get(obj, key);

    if (json_is_string(value))
        vstr_sprintf_append(line, angle ? " %s=<%s>" : " %s=%s", label,
                            json_string_value(value));
    else if (json_is_integer(value))
        vstr_sprintf_append(line, " %s=%lld", label,
                            (long long) json_integer_value(value));
    else if (json_is_real(value))
        vstr_sprintf_append(line, " %s=%.3f", label, json_real_value(value));
}

/* sluice_events_print - one event, as stored or readable */
static void sluice_events_print(const SLUICE_EVENTS_OPTS *opts,
                                const json_t *event)
{
    VSTR *line;
    char *text;

    if (opts->json) {
        /* As the writer made it (global/events.c). */
        text =
            json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                  JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
        if (text) {
            printf("%s\n", text);
            free(text);
        }
        return;
    }
    line = vstr_alloc(200);
    vstr_sprintf(line, "%s %s %s", sluice_events_str(event, "ts"),
                 sluice_events_str(event, "qid"),
                 sluice_events_str(event, "kind"));
    sluice_events_field(line, event, "recipient", "to", true);
    sluice_events_field(line, event, "sender", "from", true);
    sluice_events_field(line, event, "size", "size", false);
    sluice_events_field(line, event, "rcpt_count", "nrcpt", false);
    sluice_events_field(line, event, "client", "client", false);
    sluice_events_field(line, event, "relay", "relay", false);
    sluice_events_field(line, event, "delay", "delay", false);
    sluice_events_field(line, event, "dsn", "dsn", false);
    if (json_is_string(json_object_get(event, "reply")))
        vstr_sprintf_append(line, " (%s)", sluice_events_str(event, "reply"));
    /* One line on the terminal, whatever the reply held. */
    for (char *cp = vstr_str(line); *cp; cp++)
        if ((unsigned char) *cp < 0x20)
            *cp = ' ';
    printf("%s\n", vstr_str(line));
    vstr_free(line);
}

/* sluice_events_pass - read what is new everywhere, print it sorted */
static int sluice_events_pass(SLUICE_EVENTS_STATE *state)
{
    if (sluice_events_scan(state) < 0)
        return -1;
    for (size_t i = 0; i < state->seg_count; i++)
        sluice_events_read_seg(state, &state->segs[i]);
    qsort(state->batch, state->batch_count, sizeof(json_t *),
          sluice_events_ts_cmp);
    for (size_t i = 0; i < state->batch_count; i++) {
        sluice_events_print(state->opts, state->batch[i]);
        json_decref(state->batch[i]);
    }
    state->batch_count = 0;
    (void) fflush(stdout);
    return 0;
}

/* What an exporter has not exported yet. */
typedef struct SLUICE_EVENTS_BACKLOG {
    long long bytes;
    long long events;
    char oldest[64]; /* ts of the oldest, "": none */
} SLUICE_EVENTS_BACKLOG;

/* sluice_events_backlog_seg - add the whole events of seg after offset
   (up to its size) to backlog, and the ts of the first; -1 with why when
   it cannot be read (bytes: the caller's) */
static int sluice_events_backlog_seg(const char *dir,
                                     const EVENTS_SEG_INFO *seg,
                                     long long offset,
                                     SLUICE_EVENTS_BACKLOG *backlog, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    char buf[65536];
    bool first = true;
    VSTR *line = vstr_alloc(512);
    int fd;
    int ret = 0;

    vstr_sprintf(path, "%s/%s", dir, seg->name);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT) {
            vstr_sprintf(why, "open %s: %s", vstr_str(path), strerror(errno));
            ret = -1;
        }
        goto out;
    }
    for (long long at = offset; at < seg->size;) {
        size_t want = seg->size - at < (long long) sizeof(buf)
                          ? (size_t) (seg->size - at)
                          : sizeof(buf);
        ssize_t got = pread(fd, buf, want, (off_t) at);

        if (got < 0) {
            vstr_sprintf(why, "read %s: %s", vstr_str(path), strerror(errno));
            ret = -1;
            break;
        }
        if (got == 0)
            break;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n') {
                if (first)
                    vstr_addch(line, buf[i]);
                continue;
            }
            backlog->events++;
            if (first) {
                json_t *event =
                    json_loadb(vstr_str(line), vstr_len(line), 0, NULL);
                const char *ts = sluice_events_str(event, "ts");

                if (ts && (backlog->oldest[0] == 0 ||
                           strcmp(ts, backlog->oldest) < 0))
                    snprintf(backlog->oldest, sizeof(backlog->oldest), "%s",
                             ts);
                json_decref(event);
                first = false;
            }
        }
        at += got;
    }
    (void) close(fd);
out:
    vstr_free(path);
    vstr_free(line);
    return ret;
}

/* sluice_events_ts_age - seconds since an event time stamp, -1: unknown */
static long long sluice_events_ts_age(const char *ts)
{
    struct tm tm;
    const char *end;

    memset(&tm, 0, sizeof(tm));
    if ((end = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
        return -1;
    return (long long) time(NULL) - (long long) timegm(&tm);
}

/* sluice_events_dead_count - lines of a dead-letter file (0: none) */
static long long sluice_events_dead_count(const char *path)
{
    char buf[65536];
    long long lines = 0;
    ssize_t got;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return errno == ENOENT ? 0 : -1;
    while ((got = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < got; i++)
            lines += buf[i] == '\n';
    (void) close(fd);
    return got < 0 ? -1 : lines;
}

/* sluice_events_status_one - one exporter: print it; -1 when its position
   cannot be read */
static int sluice_events_status_one(const char *dir, const EVENTS_EXPORT *exp,
                                    const EVENTS_LIST *list, bool json)
{
    EVENTS_POS *pos = events_pos_alloc();
    SLUICE_EVENTS_BACKLOG backlog = {0, 0, ""};
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    long long dead;
    long long age;
    int ret = 0;

    events_export_path(path, dir, exp->name, EVENTS_EXPORT_POS_SUFFIX);
    if (events_pos_load(pos, vstr_str(path), why) < 0) {
        ret = -1;
    } else {
        for (size_t i = 0; i < list->count && ret == 0; i++) {
            const EVENTS_SEG_INFO *seg = &list->segs[i];
            long long offset = events_pos_offset(pos, seg->name);
            SLUICE_EVENTS_BACKLOG one = {0, 0, ""};

            if (offset < 0 || offset >= seg->size)
                continue;
            if (sluice_events_backlog_seg(dir, seg, offset, &one, why) < 0) {
                ret = -1;
                break;
            }
            backlog.events += one.events;
            backlog.bytes += seg->size - offset;
            if (one.oldest[0] && (backlog.oldest[0] == 0 ||
                                  strcmp(one.oldest, backlog.oldest) < 0))
                memcpy(backlog.oldest, one.oldest, sizeof(one.oldest));
        }
    }
    events_export_path(path, dir, exp->name, EVENTS_EXPORT_DEAD_SUFFIX);
    dead = sluice_events_dead_count(vstr_str(path));
    age = backlog.oldest[0] ? sluice_events_ts_age(backlog.oldest) : -1;
    if (json) {
        json_t *obj = json_object();
        json_t *segs = json_array();
        char *text;

        json_object_set_new(obj, "name", json_string(exp->name));
        json_object_set_new(obj, "kind", json_string(exp->kind));
        json_object_set_new(obj, "target", json_string(exp->display));
        json_object_set_new(obj, "routes",
                            exp->routes ? json_string(exp->routes)
                                        : json_null());
        json_object_set_new(obj, "floor",
                            pos->floor ? json_string(pos->floor) : json_null());
        for (size_t i = 0; i < pos->count; i++) {
            json_t *seg = json_object();

            json_object_set_new(seg, "name", json_string(pos->segs[i].name));
            json_object_set_new(seg, "offset",
                                json_integer(pos->segs[i].offset));
            json_array_append_new(segs, seg);
        }
        json_object_set_new(obj, "segments", segs);
        json_object_set_new(obj, "backlog_events",
                            json_integer(backlog.events));
        json_object_set_new(obj, "backlog_bytes", json_integer(backlog.bytes));
        json_object_set_new(obj, "oldest_unexported",
                            backlog.oldest[0] ? json_string(backlog.oldest)
                                              : json_null());
        json_object_set_new(obj, "oldest_age_seconds",
                            age >= 0 ? json_integer(age) : json_null());
        json_object_set_new(obj, "dead_letters",
                            dead >= 0 ? json_integer(dead) : json_null());
        json_object_set_new(obj, "error",
                            ret < 0 ? json_string(vstr_str(why)) : json_null());
        text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                   JSON_ENSURE_ASCII);
        if (text) {
            printf("%s\n", text);
            free(text);
        }
        json_decref(obj);
    } else {
        printf("%s: %s %s\n", exp->name, exp->kind, exp->display);
        if (exp->routes)
            printf("  only: %s\n", exp->routes);
        if (ret < 0) {
            printf("  error: %s\n", vstr_str(why));
        } else {
            printf("  position: floor %s", pos->floor ? pos->floor : "-");
            for (size_t i = 0; i < pos->count; i++)
                printf(", %s at %lld", pos->segs[i].name, pos->segs[i].offset);
            printf("\n  backlog: %lld events, %lld bytes", backlog.events,
                   backlog.bytes);
            if (backlog.oldest[0])
                printf(", oldest %s (%lld s ago)", backlog.oldest, age);
            printf("\n");
        }
        if (dead < 0)
            printf("  dead letters: cannot read %s\n", vstr_str(path));
        else
            printf("  dead letters: %lld\n", dead);
    }
    events_pos_free(pos);
    vstr_free(path);
    vstr_free(why);
    return ret;
}

/* sluice_events_journal_status - the journal's line: the stall mark, the
   free space, and whether cleanup takes mail (as events_check decides) */
static void sluice_events_journal_status(const char *dir, long long minfree,
                                         bool json)
{
    VSTR *mark = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    struct stat st;
    struct statvfs fs;
    long long mark_age = -1;
    long long avail = -1;
    bool stalled;
    bool low;
    char stamp[32] = "";
    struct tm tm;

    vstr_sprintf(mark, "%s/%s", dir, EVENTS_STALL_MARK);
    if (stat(vstr_str(mark), &st) == 0) {
        mark_age = (long long) time(NULL) - (long long) st.st_mtime;
        if (mark_age < 0)
            mark_age = 0;
        if (gmtime_r(&st.st_mtime, &tm) == NULL ||
            strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
            stamp[0] = 0;
    }
    if (statvfs(dir, &fs) == 0 &&
        (unsigned long long) fs.f_bavail <=
            (unsigned long long) LLONG_MAX / (fs.f_frsize ? fs.f_frsize : 1))
        avail = (long long) fs.f_bavail * (long long) fs.f_frsize;
    stalled = mark_age >= 0 && mark_age < EVENTS_STALL_FRESH;
    low = minfree > 0 && avail >= 0 && avail < minfree;
    if (stalled)
        vstr_sprintf(why,
                     "the stall mark is up: a writer (qmgr) could not make "
                     "a batch durable and retries; queue changes and new "
                     "messages wait");
    else if (low)
        vstr_sprintf(why, "%lld bytes free, less than events_minfree (%lld)",
                     avail, minfree);
    if (json) {
        json_t *obj = json_object();
        char *text;

        json_object_set_new(obj, "kind", json_string("journal"));
        json_object_set_new(obj, "directory", json_string(dir));
        json_object_set_new(obj, "stalled", json_boolean(stalled));
        json_object_set_new(obj, "stall_mark",
                            stamp[0] ? json_string(stamp) : json_null());
        json_object_set_new(obj, "stall_mark_age_seconds",
                            mark_age >= 0 ? json_integer(mark_age)
                                          : json_null());
        json_object_set_new(obj, "free_bytes",
                            avail >= 0 ? json_integer(avail) : json_null());
        json_object_set_new(obj, "minfree", json_integer(minfree));
        json_object_set_new(obj, "accepting", json_boolean(!stalled && !low));
        json_object_set_new(obj, "reason",
                            stalled || low ? json_string(vstr_str(why))
                                           : json_null());
        text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                   JSON_ENSURE_ASCII);
        if (text) {
            printf("%s\n", text);
            free(text);
        }
        json_decref(obj);
    } else {
        printf("journal: %s\n", dir);
        if (stalled || low)
            printf("  STALLED: mail is refused (452 4.3.1): %s\n",
                   vstr_str(why));
        else
            printf("  accepting mail\n");
        if (mark_age >= 0)
            printf("  stall mark: %s (%lld s ago)%s\n", stamp, mark_age,
                   stalled ? "" : ", stale: ignored");
        if (avail >= 0)
            printf("  free: %lld bytes (events_minfree %lld)\n", avail,
                   minfree);
    }
    vstr_free(mark);
    vstr_free(why);
}

/* sluice_events_status - `sluice events status [--json]` */
static int sluice_events_status(const char *config_dir, int argc, char **argv)
{
    EVENTS_EXPORT_LIST *exports;
    EVENTS_LIST *list;
    VSTR *why;
    MAIL_CONF *conf;
    bool json = false;
    int status = 0;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            json = true;
        else
            return sluice_fail("events status: unknown argument \"%s\" (%s)",
                               argv[i], SLUICE_EVENTS_USAGE);
    }
    why = vstr_alloc(100);
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return status;
    }
    exports = events_export_list(conf);
    if ((list = events_list(mail_conf_str(conf, "events_directory"), why)) ==
        NULL) {
        status = sluice_fail("events status: %s", vstr_str(why));
    } else {
        if (exports->error != NULL)
            status = sluice_fail("events status: %s", exports->error);
        sluice_events_journal_status(mail_conf_str(conf, "events_directory"),
                                     mail_conf_size(conf, "events_minfree"),
                                     json);
        if (exports->count == 0 && !json)
            printf("no exporter configured (events_webhook_urls)\n");
        for (size_t i = 0; i < exports->count; i++)
            if (sluice_events_status_one(
                    mail_conf_str(conf, "events_directory"),
                    &exports->exports[i], list, json) < 0)
                status = 1;
        (void) fflush(stdout);
    }
    events_list_free(list);
    events_export_list_free(exports);
    mail_conf_free(conf);
    vstr_free(why);
    return status;
}

/* sluice_events - `sluice events [--follow] [--qid Q] [--kind K] [--json]` */
int sluice_events(const char *config_dir, int argc, char **argv)
{
    SLUICE_EVENTS_OPTS opts = {false, false, NULL, NULL, ""};
    SLUICE_EVENTS_STATE state;
    VSTR *why;
    MAIL_CONF *conf;
    char *dir;
    int status = 0;

    if (argc > 1 && strcmp(argv[1], "status") == 0)
        return sluice_events_status(config_dir, argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
            opts.json = true;
        } else if (strcmp(argv[i], "--follow") == 0 ||
                   strcmp(argv[i], "-f") == 0) {
            opts.follow = true;
        } else if ((strcmp(argv[i], "--qid") == 0 ||
                    strcmp(argv[i], "--kind") == 0 ||
                    strcmp(argv[i], "--since") == 0) &&
                   i + 1 < argc) {
            if (strcmp(argv[i], "--since") == 0) {
                if (sluice_events_since(&opts, argv[++i]) < 0) {
                    opts.kinds = opts.kinds ? argv_free(opts.kinds) : NULL;
                    return sluice_fail(
                        "events: bad --since \"%s\": a UTC time"
                        " YYYY-MM-DDTHH:MM:SS[.uuuuuu][Z] or an age N[smhd]"
                        " (%s)",
                        argv[i], SLUICE_EVENTS_USAGE);
                }
            } else if (strcmp(argv[i], "--qid") == 0) {
                opts.qid = argv[++i];
            } else {
                opts.kinds = opts.kinds ? argv_free(opts.kinds) : NULL;
                opts.kinds = argv_split(argv[++i], ",");
            }
        } else {
            opts.kinds = opts.kinds ? argv_free(opts.kinds) : NULL;
            bool wants_value = strcmp(argv[i], "--qid") == 0 ||
                               strcmp(argv[i], "--kind") == 0 ||
                               strcmp(argv[i], "--since") == 0;

            return sluice_fail("events: %s \"%s\" (%s)",
                               wants_value ? "missing value after"
                                           : "unknown argument",
                               argv[i], SLUICE_EVENTS_USAGE);
        }
    }
    why = vstr_alloc(100);
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        opts.kinds = opts.kinds ? argv_free(opts.kinds) : NULL;
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return status;
    }
    vstr_free(why);
    dir = mystrdup(mail_conf_str(conf, "events_directory"));
    mail_conf_free(conf);

    memset(&state, 0, sizeof(state));
    state.dir = dir;
    state.opts = &opts;
    if (opts.follow && *opts.since == 0) {
        /* From now: what the journal holds already is not shown. */
        if (sluice_events_scan(&state) < 0)
            status = 1;
        for (size_t i = 0; i < state.seg_count; i++)
            sluice_events_skip_seg(&state, &state.segs[i]);
    } else if (sluice_events_pass(&state) < 0) {
        status = 1;
    }
    if (opts.follow && status == 0) {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = sluice_events_signal;
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);
        while (!sluice_events_stop) {
            struct timespec pause = {0, SLUICE_EVENTS_POLL_USEC * 1000L};

            (void) nanosleep(&pause, NULL);
            if (sluice_events_pass(&state) < 0) {
                status = 1;
                break;
            }
        }
    }
    if (state.bad > 0)
        status = 1;
    for (size_t i = 0; i < state.seg_count; i++)
        myfree(state.segs[i].name);
    myfree(state.segs);
    myfree(state.batch);
    myfree(dir);
    if (opts.kinds)
        argv_free(opts.kinds);
    return status;
}
