/*
 * feedback_journal - what the events journal knows of an original message
 *
 * A DSN or complaint names (by its VERP token) a queue ID and the
 * recipient's record offset: the seq of that recipient's delivered event
 * (global/events.h), which carries the recipient, tenant, pool, source
 * address and provider. The journal is read newest segment first, only
 * lines that mention the queue ID are parsed. A journal whose segments
 * were removed (exporters past them) no longer knows: the caller must not
 * believe the report instead (anyone who got one message holds a valid
 * token and can name any address): its event is marked unverified.
 * The same search notices an earlier copy of the event the report makes
 * (the same report sent again), so that the reputation window counts it
 * once. feedback_journal_rcpts lists every recipient the journal names
 * for a message, each with its event's tenant (a short mailto
 * unsubscribe's candidates); as anyone can name any queue ID, it opens
 * only the segments that may hold the message's delivery (see feedback.h).
 * A report holds its message's lock (feedback_journal_lock) from its
 * search until its own event is written, so that of two copies handled
 * at once the later one sees the earlier one's event; reports on other
 * messages go on meanwhile.
 * The events index (events/index.c) is no shortcut: its attempts
 * rows have no tenant, pool or source address, and it lags the journal.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "argv.h"
#include "mail_conf.h"
#include "events.h"
#include "feedback.h"
#include "htable.h"
#include "msg.h"
#include "mymalloc.h"
#include "qid.h"

static time_t feedback_journal_start(const char *name);

/* feedback_orig_alloc - an empty FEEDBACK_ORIG */
FEEDBACK_ORIG *feedback_orig_alloc(void)
{
    FEEDBACK_ORIG *orig = mycalloc(1, sizeof(*orig));

    orig->recipient = vstr_alloc(64);
    orig->orig_recipient = vstr_alloc(64);
    orig->tenant = vstr_alloc(32);
    orig->pool = vstr_alloc(32);
    orig->source_ip = vstr_alloc(48);
    orig->provider = vstr_alloc(32);
    return orig;
}

/* feedback_orig_free - release it */
FEEDBACK_ORIG *feedback_orig_free(FEEDBACK_ORIG *orig)
{
    vstr_free(orig->recipient);
    vstr_free(orig->orig_recipient);
    vstr_free(orig->tenant);
    vstr_free(orig->pool);
    vstr_free(orig->source_ip);
    vstr_free(orig->provider);
    myfree(orig);
    return NULL;
}

/* feedback_journal_str - a string member into out ("" when not one) */
static void feedback_journal_str(json_t *obj, const char *name, VSTR *out)
{
    json_t *value = json_object_get(obj, name);

    vstr_cpy(out, json_is_string(value) ? json_string_value(value) : "");
}

/* feedback_journal_sort - newest segment name first */
static int feedback_journal_sort(const void *a, const void *b)
{
    return strcmp(*(char *const *) b, *(char *const *) a);
}

/* feedback_journal_segments - the segment names of dir into names, newest
   first; false (with a warning) when dir cannot be read */
static bool feedback_journal_segments(const char *dir, ARGV *names)
{
    DIR *dp;
    struct dirent *de;

    if ((dp = opendir(dir)) == NULL) {
        msg_warn("open events directory %s: %m", dir);
        return false;
    }
    while ((de = readdir(dp)) != NULL)
        if (events_segment_pid(de->d_name) >= 0)
            argv_add(names, de->d_name);
    closedir(dp);
    qsort(names->argv, names->argc, sizeof(char *), feedback_journal_sort);
    return true;
}

/* feedback_journal_ends - does id end with "/kind/seq"? */
static bool feedback_journal_ends(const char *id, const char *kind,
                                  const char *seq)
{
    size_t id_len = strlen(id);
    size_t kind_len = strlen(kind);
    size_t seq_len = strlen(seq);

    if (id_len < kind_len + seq_len + 2)
        return false;
    id += id_len - kind_len - seq_len - 2;
    return id[0] == '/' && strncmp(id + 1, kind, kind_len) == 0 &&
           id[1 + kind_len] == '/' && strcmp(id + 2 + kind_len, seq) == 0;
}

/* feedback_journal_line - is line the event we want? rank 3 delivered,
   2 bounced, 0 none; keeps the best in orig, returns its rank; notes a
   repeat (an event repeat_kind/repeat_seq) */
static int feedback_journal_line(const char *line, const char *want_id_tail,
                                 size_t tail_len, const char *repeat_kind,
                                 const char *repeat_seq, FEEDBACK_ORIG *orig,
                                 int best)
{
    json_t *obj = json_loads(line, 0, NULL);
    json_t *id;
    const char *kind;
    const char *idtext;
    size_t id_len;
    int rank = 0;

    if (obj == NULL)
        return best;
    id = json_object_get(obj, "id");
    kind = json_string_value(json_object_get(obj, "kind"));
    if (json_is_string(id) && kind != NULL) {
        idtext = json_string_value(id);
        id_len = strlen(idtext);
        if (repeat_kind != NULL && strcmp(kind, repeat_kind) == 0 &&
            feedback_journal_ends(idtext, repeat_kind, repeat_seq) &&
            (strcmp(kind, EVENTS_BOUNCED) != 0 ||
             json_is_true(json_object_get(obj, "hard"))))
            orig->repeated = true; /* one the reputation window counted */
        rank = strcmp(kind, EVENTS_DELIVERED) == 0 ? 3
               : strcmp(kind, EVENTS_BOUNCED) == 0 ? 2
                                                   : 0;
        /* NODE/QID/KIND/OFFSET: the recipient's record offset is seq. */
        if (rank > 0 &&
            (id_len < tail_len + strlen(kind) ||
             strcmp(idtext + id_len - tail_len, want_id_tail) != 0 ||
             strncmp(idtext + id_len - tail_len - strlen(kind), kind,
                     strlen(kind)) != 0))
            rank = 0;
    }
    if (rank > best) {
        feedback_journal_str(obj, "recipient", orig->recipient);
        feedback_journal_str(obj, "orig_recipient", orig->orig_recipient);
        feedback_journal_str(obj, "tenant", orig->tenant);
        feedback_journal_str(obj, "pool", orig->pool);
        feedback_journal_str(obj, "source_ip", orig->source_ip);
        feedback_journal_str(obj, "provider", orig->provider);
        orig->found = true;
        best = rank;
    }
    json_decref(obj);
    return best;
}

/* feedback_journal_lock - see feedback.h */
int feedback_journal_lock(const char *dir, const char *qid)
{
    /* Every feedback process must pick the same byte: a fixed key. */
    static const unsigned char key[16];
    uint64_t hash = htable_siphash(key, qid, strlen(qid));
    struct flock lk;
    VSTR *path = vstr_alloc(100);
    int fd;

    vstr_sprintf(path, "%s/%s", dir, FEEDBACK_JOURNAL_LOCK_FILE);
    if ((fd = open(vstr_str(path), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        if (errno != ENOENT)
            msg_warn("feedback: open %s: %m", vstr_str(path));
        vstr_free(path);
        return -1;
    }
    memset(&lk, 0, sizeof(lk));
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = (off_t) (hash % FEEDBACK_JOURNAL_LOCK_SLOTS);
    lk.l_len = 1;
    while (fcntl(fd, F_OFD_SETLKW, &lk) < 0) {
        if (errno != EINTR) {
            msg_warn("feedback: lock %s: %m", vstr_str(path));
            (void) close(fd);
            fd = -1;
            break;
        }
    }
    vstr_free(path);
    return fd;
}

/* feedback_journal_unlock - let it go (-1: nothing held); closing the
   descriptor ends its lock */
void feedback_journal_unlock(int fd)
{
    if (fd >= 0)
        (void) close(fd);
}

/* feedback_journal_find - the recipient's event (see feedback.h) */
void feedback_journal_find(const char *dir, const char *qid, long long offset,
                           const char *repeat_kind, const char *repeat_seq,
                           FEEDBACK_ORIG *orig)
{
    ARGV *names = argv_alloc(16);
    VSTR *path = vstr_alloc(100);
    VSTR *needle = vstr_alloc(40);
    VSTR *tail = vstr_alloc(40);
    long long read_bytes = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    time_t delivered_start = -1;
    struct stat st;
    int best = 0;

    if (!feedback_journal_segments(dir, names))
        goto out;
    vstr_sprintf(needle, "\"qid\":\"%s\"", qid);
    vstr_sprintf(tail, "/%lld", offset);
    for (size_t i = 0;
         i < names->argc && read_bytes < FEEDBACK_JOURNAL_MAX_BYTES; i++) {
        FILE *fp;

        vstr_sprintf(path, "%s/%s", dir, names->argv[i]);
        if (best == 3) {
            /* Past the delivered event's segment only for a repeat: in a
               segment begun earlier (its writer, a long-lived feedback
               process, opened it before) but written to since. */
            if (orig->repeated || repeat_kind == NULL)
                break;
            if (stat(vstr_str(path), &st) < 0 ||
                (long long) st.st_mtime <
                    (long long) delivered_start - FEEDBACK_JOURNAL_SLACK)
                continue;
        }
        if ((fp = fopen(vstr_str(path), "r")) == NULL)
            continue; /* removed meanwhile */
        /* The whole segment with the delivered event: a repeat made
           after it may be further down. */
        while (!(best == 3 && orig->repeated) &&
               read_bytes < FEEDBACK_JOURNAL_MAX_BYTES &&
               (got = getline(&line, &cap, fp)) > 0) {
            read_bytes += got;
            if (strstr(line, vstr_str(needle)) != NULL)
                best =
                    feedback_journal_line(line, vstr_str(tail), vstr_len(tail),
                                          repeat_kind, repeat_seq, orig, best);
        }
        fclose(fp);
        if (best == 3 && delivered_start < 0 &&
            (delivered_start = feedback_journal_start(names->argv[i])) < 0)
            delivered_start = 0; /* not known: any segment may hold it */
    }
out:
    free(line);
    argv_free(names);
    vstr_free(path);
    vstr_free(needle);
    vstr_free(tail);
}

/* feedback_journal_pair - recipient member name of obj with its tenant
   into rcpts and tenants (parallel: the same index), once */
static void feedback_journal_pair(json_t *obj, const char *name, ARGV *rcpts,
                                  ARGV *tenants)
{
    const char *value = json_string_value(json_object_get(obj, name));
    const char *tenant = json_string_value(json_object_get(obj, "tenant"));

    if (tenant == NULL)
        tenant = "";
    if (value == NULL || *value == 0 ||
        rcpts->argc >= FEEDBACK_JOURNAL_MAX_NAMES)
        return;
    for (size_t i = 0; i < rcpts->argc; i++)
        if (strcmp(rcpts->argv[i], value) == 0 &&
            strcmp(tenants->argv[i], tenant) == 0)
            return;
    argv_add(rcpts, value);
    argv_add(tenants, tenant);
}

/* feedback_journal_start - the start time in a segment name
   (YYYYMMDDTHHMMSS.uuuuuuZ-...), seconds; -1 when it is none */
static time_t feedback_journal_start(const char *name)
{
    static const int widths[] = {4, 2, 2, 0, 2, 2, 2};
    int values[SLUICE_ARRAY_LEN(widths)];
    const char *cp = name;
    struct tm tm;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(widths); i++) {
        values[i] = 0;
        if (widths[i] == 0 && *cp++ != 'T')
            return -1;
        for (int j = 0; j < widths[i]; j++, cp++) {
            if (*cp < '0' || *cp > '9')
                return -1;
            values[i] = values[i] * 10 + (*cp - '0');
        }
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = values[0] - 1900;
    tm.tm_mon = values[1] - 1;
    tm.tm_mday = values[2];
    tm.tm_hour = values[4];
    tm.tm_min = values[5];
    tm.tm_sec = values[6];
    return timegm(&tm);
}

/* feedback_journal_rcpts - the recipients and tenants of qid (feedback.h) */
bool feedback_journal_rcpts(const char *dir, const char *qid, long long window,
                            ARGV *rcpts, ARGV *tenants)
{
    ARGV *names = argv_alloc(16);
    struct stat st;
    VSTR *path = vstr_alloc(100);
    VSTR *needle = vstr_alloc(40);
    long long read_bytes = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    time_t arrival;
    time_t start;
    long usec;
    bool found = false;
    bool delivered = false;

    if (!qid_valid(qid))
        goto out;
    qid_time(qid, &arrival, &usec);
    /* No message of ours arrives in the future: a forged queue ID (no
       journal read for it). */
    if ((long long) arrival > (long long) time(NULL) + FEEDBACK_JOURNAL_SLACK)
        goto out;
    if (!feedback_journal_segments(dir, names))
        goto out;
    vstr_sprintf(needle, "\"qid\":\"%s\"", qid);
    /* The delivered event (qmgr's) names the recipient and tenant; qmgr
       writes later events of the message in the same or a newer segment
       of its own. Only segments that may hold it are opened: begun no
       later than window after the arrival, last written no earlier than
       the arrival (slack for clock steps both ways). */
    for (size_t i = 0; i < names->argc && !delivered &&
                       read_bytes < FEEDBACK_JOURNAL_MAX_BYTES;
         i++) {
        FILE *fp;

        if ((start = feedback_journal_start(names->argv[i])) < 0 ||
            (long long) start >
                (long long) arrival + window + FEEDBACK_JOURNAL_SLACK)
            continue;
        vstr_sprintf(path, "%s/%s", dir, names->argv[i]);
        if (stat(vstr_str(path), &st) < 0 || !S_ISREG(st.st_mode) ||
            st.st_mtime < arrival - FEEDBACK_JOURNAL_SLACK)
            continue; /* removed meanwhile, or over before the message */
        if ((fp = fopen(vstr_str(path), "r")) == NULL)
            continue; /* removed meanwhile */
        while (read_bytes < FEEDBACK_JOURNAL_MAX_BYTES &&
               (got = getline(&line, &cap, fp)) > 0) {
            json_t *obj;
            const char *kind;
            const char *value;

            read_bytes += got;
            if (strstr(line, vstr_str(needle)) == NULL ||
                (obj = json_loads(line, 0, NULL)) == NULL)
                continue;
            value = json_string_value(json_object_get(obj, "qid"));
            if (value != NULL && strcmp(value, qid) == 0) {
                found = true;
                kind = json_string_value(json_object_get(obj, "kind"));
                if (kind != NULL && strcmp(kind, EVENTS_DELIVERED) == 0)
                    delivered = true;
                feedback_journal_pair(obj, "recipient", rcpts, tenants);
                feedback_journal_pair(obj, "orig_recipient", rcpts, tenants);
            }
            json_decref(obj);
        }
        fclose(fp);
    }
out:
    free(line);
    argv_free(names);
    vstr_free(path);
    vstr_free(needle);
    return found;
}

/* feedback_journal_longest_step - the longest step of retry_schedule */
static long long feedback_journal_longest_step(const MAIL_CONF *conf)
{
    size_t count = 0;
    long long *steps = mail_conf_time_list(conf, "retry_schedule", &count);
    long long longest = 0;

    for (size_t i = 0; i < count; i++)
        if (steps[i] > longest)
            longest = steps[i];
    myfree(steps);
    return longest;
}

/* feedback_journal_window - how long after its arrival a message's
   delivered event may be written (feedback.h) */
long long feedback_journal_window(const MAIL_CONF *conf)
{
    long long window = mail_conf_time(conf, "maximal_queue_lifetime");

    /* A delivered event comes within the queue lifetime of the message's
       send_at (the null sender's lifetime is the bounce one). */
    if (mail_conf_time(conf, "bounce_queue_lifetime") > window)
        window = mail_conf_time(conf, "bounce_queue_lifetime");
    window += FEEDBACK_JOURNAL_SEND_AHEAD;
    /* An attempt that ends past the lifetime still delivers: one more
       retry step and a queue scan later than that. */
    return window + feedback_journal_longest_step(conf) +
           mail_conf_time(conf, "queue_run_delay");
}
