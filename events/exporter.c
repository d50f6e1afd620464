/*
 * events - follow the event journal and hand its events to the exporters
 *
 * One process (master.cf: events, maxproc 1, unprivileged) for every
 * exporter main.cf configures (global/events_export.h): one per
 * events_webhook_urls entry (webhook.c), and the SQLite store behind
 * `sluice stats` with events_stats_enable (stats.c), one producer to
 * events_kafka_brokers (kafka.c), the OTLP traces endpoint (otel.c), and,
 * on by default, the status index behind `sluice why` (index.c) and the
 * suppression list's feed (suppress.c). Each exporter has its own position
 * (global/events_pos.h: a floor plus per-segment offsets, because several
 * writers append at once), its own batch in flight and its own back-off,
 * so a slow or dead endpoint only grows its own backlog.
 *
 * Delivery is at least once: an exporter's position moves only after the
 * backend has said the batch went, and its file is replaced durably
 * (temporary file, fsync, rename) at the next flush of the positions,
 * which writes every exporter that moved and comes at most once a second
 * (EXPORTER_SAVE_MSEC), so a crash or kill -9 re-sends at most the batch
 * in flight and what went in the last second; consumers deduplicate by
 * event id. A file may lag its exporter, never lead it. Segments are
 * removed by the files' positions, so a restart finds what it resumes at.
 *
 * The exporters that are idle at the same position (the usual case: the
 * index and the suppression feed keep pace) read the journal together:
 * each segment is read and each line checked once for all of them, every
 * one gets the lines its routes pick, and the batch ends when one of them
 * is full. One that is behind (its sink failed) reads on its own. Whole lines only: a partial last line of a
 * segment whose writer is at work waits until it is whole; the torn tail
 * of a finished segment (its writer crashed) is cut at the last whole
 * event, with a warning (events_repair_file), and the reader goes on. A
 * line that is not a JSON object is not sent (it would break a batch):
 * it goes to the dead letters, with a warning.
 *
 * A batch that fails is tried again, the same events, after 1, 2, 4 ...
 * seconds (at most events_webhook_max_backoff), until it has failed for
 * the backend's max age (events_webhook_max_age); then its events are
 * appended to the exporter's dead-letter file (exporters/NAME.dead, one
 * event a line, fsynced) and the position moves past them, with a
 * warning that names the file. Nothing is dropped without a trace.
 *
 * Segment removal: a segment at or before the floor of every configured
 * exporter (so finished and read to its end by all of them) is removed,
 * once one exporter that ships events elsewhere is configured
 * (events_export_removes: a webhook, Kafka, OTLP, the stats store).
 * The status index and the suppression feed, on by default, are fed
 * and hold segments back while they are behind like every exporter,
 * but do not start removal by themselves: with only them, or with no
 * exporter at all, nothing is removed (the journal is then read by
 * `sluice events` and kept whole, as before they were on). A passive reader
 * (events_export_passive: the metrics daemon's counters, which follow
 * the journal themselves) is sent nothing, but its position file, read
 * again at each look, holds segments back like an exporter's: a segment
 * it has not passed stays, however far the exporters are. A passive
 * reader alone removes nothing. Until its daemon has written its first
 * position (a missing file: nothing read), nothing is removed. An exporter whose
 * position file cannot be read stops (logged once) and holds back
 * removal, so its events stay for when the file is mended (looked at
 * again every second) or removed (then everything left is sent again).
 *
 * The journal is looked at every second (and at once after a batch went
 * that was full, when more may be waiting; not after a batch that took
 * all there was, lest a steady flow of events go as a trickle of batches
 * of a few events, each a commit): writers do not wake this daemon, and
 * nothing depends on a wake-up.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>

#include "events.h"
#include "events_export.h"
#include "events_pos.h"
#include "events_view.h"
#include "exporter.h"
#include "mail_conf.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define EXPORTER_POLL_SECONDS 1 /* between looks at the journal */
#define EXPORTER_BATCH_BYTES (1024 * 1024) /* most bytes of one batch */
#define EXPORTER_READ_CHUNK 65536
#define EXPORTER_SAVE_MSEC 1000 /* least time between position flushes */

typedef struct EXPORTER_CTX EXPORTER_CTX;

struct EXPORTER {
    EXPORTER_CTX *ctx;
    char *name; /* events_export.h */
    char *target;
    char *display; /* target for the log: no userinfo, no query */
    char *routes; /* the events it sends (events_export.h); NULL: all */
    const EXPORTER_BACKEND *backend;
    void *state;
    VSTR *pos_path;
    VSTR *dead_path;
    EVENTS_POS *pos; /* exported up to here (the backend said so) */
    EVENTS_POS *saved; /* what the position file says: pos, or behind */
    EVENTS_POS *next; /* once the batch in hand is exported */
    bool dirty; /* pos is ahead of the file: saved at the next flush */
    VSTR *lines; /* the batch in hand: whole event lines */
    int count; /* its events */
    size_t *starts; /* where each line begins in lines */
    int starts_cap; /* allocated slots of starts */
    EVENTS_VIEW *view; /* the line exporter_view parsed last */
    int view_at; /* which (-1: none) */
    bool in_flight; /* the backend has it */
    bool more; /* its read stopped at a full batch: more may be waiting */
    bool broken; /* the position file cannot be read: stopped */
    bool passive; /* a reader of its own: its position only holds */
    time_t first_fail; /* when the batch in hand first failed; 0: never */
    long long backoff; /* seconds of the last wait */
    time_t retry_at; /* no try before */
};

struct EXPORTER_CTX {
    MAIL_SERVER *server;
    struct event_base *base;
    char *dir; /* events_directory */
    long long max_backoff;
    int batch_size;
    EXPORTER **exporters;
    size_t count;
    size_t active; /* exporters that are not passive: pumped */
    size_t removers; /* events_export_removes: segments are removed */
    struct event *pump_ev;
    struct event *save_ev; /* the next flush of the positions */
    struct timespec saved_at; /* the last flush (CLOCK_MONOTONIC) */
    bool pumping;
    EVENTS_VIEW *view; /* each line as read, checked once for all */
};

static void exporter_pump_soon(EXPORTER_CTX *ctx, long long seconds);

/* exporter_target - the URL (or broker list ...) exp exports to */
const char *exporter_target(const EXPORTER *exp)
{
    return exp->target;
}

/* exporter_display - the target as the log may show it */
const char *exporter_display(const EXPORTER *exp)
{
    return exp->display;
}

/* exporter_view - event i of the batch in flight, parsed (valid until
   the next call or exporter_done) */
const EVENTS_VIEW *exporter_view(EXPORTER *exp, int i)
{
    const char *line;
    size_t end;

    if (i < 0 || i >= exp->count)
        msg_panic("%s: %s: event %d of %d", __func__, exp->name, i, exp->count);
    if (exp->view_at == i)
        return exp->view;
    line = vstr_str(exp->lines) + exp->starts[i];
    end = i + 1 < exp->count ? exp->starts[i + 1] : vstr_len(exp->lines);
    /* The line was checked when it was read (exporter_take_line). */
    if (events_view_parse(exp->view, line, end - exp->starts[i] - 1, NULL) < 0)
        msg_panic("%s: %s: event %d is no longer a JSON object", __func__,
                  exp->name, i);
    exp->view_at = i;
    return exp->view;
}

/* exporter_reset - empty the batch in hand */
static void exporter_reset(EXPORTER *exp)
{
    vstr_reset(exp->lines);
    exp->count = 0;
    exp->view_at = -1;
}

/* exporter_add - line (whole, with LF) into the batch */
static void exporter_add(EXPORTER *exp, const char *line, size_t len)
{
    if (exp->count >= exp->starts_cap) {
        exp->starts_cap = exp->starts_cap ? exp->starts_cap * 2 : 64;
        exp->starts = myrealloc_array(exp->starts, (size_t) exp->starts_cap,
                                      sizeof(*exp->starts));
    }
    exp->starts[exp->count++] = vstr_len(exp->lines);
    vstr_ncat(exp->lines, line, len);
    exp->view_at = -1;
}

/* exporter_backend - the backend of kind, or NULL */
static const EXPORTER_BACKEND *exporter_backend(const char *kind)
{
    static const EXPORTER_BACKEND *const backends[] = {
        &webhook_backend, &stats_backend, &kafka_backend,
        &index_backend,   &otel_backend,  &suppress_backend};

    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->kind, kind) == 0)
            return backends[i];
    return NULL;
}

/* exporter_dead_letter - append data (whole lines) to exp's dead-letter
   file durably; -1 with why */
static int exporter_dead_letter(EXPORTER *exp, const char *data, size_t len,
                                VSTR *why)
{
    int fd = open(vstr_str(exp->dead_path),
                  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    bool created;

    if (fd < 0) {
        vstr_sprintf(why, "open %s: %s", vstr_str(exp->dead_path),
                     strerror(errno));
        return -1;
    }
    created = fstat(fd, &st) == 0 && st.st_size == 0;
    if (safe_file_write_all(fd, data, len) < 0 || safe_file_fsync(fd) < 0 ||
        (created && safe_file_fsync_parent(vstr_str(exp->dead_path)) < 0)) {
        vstr_sprintf(why, "write %s: %s", vstr_str(exp->dead_path),
                     strerror(errno));
        (void) close(fd);
        return -1;
    }
    (void) close(fd);
    return 0;
}

/* exporter_write - make exp->pos the position file's */
static void exporter_write(EXPORTER *exp)
{
    VSTR *why = vstr_alloc(100);

    /* A failed save costs a re-send after a restart, never an event; it
       stays dirty, for the next flush to try again. */
    if (events_pos_save(exp->pos, vstr_str(exp->pos_path), why) < 0) {
        msg_warn("events: %s: %s", exp->name, vstr_str(why));
    } else {
        events_pos_copy(exp->saved, exp->pos);
        exp->dirty = false;
    }
    vstr_free(why);
}

/* exporter_flush - write every position that moved since the last flush */
static void exporter_flush(EXPORTER_CTX *ctx)
{
    bool again = false;

    for (size_t i = 0; i < ctx->count; i++) {
        if (ctx->exporters[i]->dirty)
            exporter_write(ctx->exporters[i]);
        again |= ctx->exporters[i]->dirty;
    }
    (void) clock_gettime(CLOCK_MONOTONIC, &ctx->saved_at);
    /* A save that failed is tried again a flush interval later, also
       when nothing moves meanwhile. */
    if (again && ctx->save_ev != NULL && !evtimer_pending(ctx->save_ev, NULL)) {
        struct timeval tv = {EXPORTER_SAVE_MSEC / 1000,
                             (EXPORTER_SAVE_MSEC % 1000) * 1000};

        if (evtimer_add(ctx->save_ev, &tv) < 0)
            msg_fatal("cannot add the events save timer");
    }
}

/* exporter_save_event - the flush timer */
static void exporter_save_event(evutil_socket_t fd, short what, void *arg)
{
    exporter_flush((EXPORTER_CTX *) arg);
}

/* exporter_save - exp->next is exported: it becomes exp->pos now and the
   position file's at the next flush, at most EXPORTER_SAVE_MSEC after
   the last one. The file may lag (a crash re-sends what the lag holds:
   at least once), never lead: only what the backend made durable gets
   into it. One flush writes every exporter that moved. */
static void exporter_save(EXPORTER *exp)
{
    EXPORTER_CTX *ctx = exp->ctx;
    struct timespec now;
    long long msec;

    events_pos_copy(exp->pos, exp->next);
    exp->dirty = true;
    if (evtimer_pending(ctx->save_ev, NULL))
        return;
    (void) clock_gettime(CLOCK_MONOTONIC, &now);
    msec = EXPORTER_SAVE_MSEC -
           ((long long) (now.tv_sec - ctx->saved_at.tv_sec) * 1000 +
            (now.tv_nsec - ctx->saved_at.tv_nsec) / 1000000);
    if (msec < 0)
        msec = 0;
    if (msec > EXPORTER_SAVE_MSEC)
        msec = EXPORTER_SAVE_MSEC;
    {
        struct timeval tv = {(time_t) (msec / 1000),
                             (suseconds_t) (msec % 1000) * 1000};

        if (evtimer_add(ctx->save_ev, &tv) < 0)
            msg_fatal("cannot add the events save timer");
    }
}

/* exporter_save_now - exp->next is exported and the position file's now
   (after dead letters: not written twice) */
static void exporter_save_now(EXPORTER *exp)
{
    events_pos_copy(exp->pos, exp->next);
    exporter_write(exp);
}

/* exporter_take_line - one whole line (with LF) into the batch of each
   of the group's n exporters (all at the same position), checked once
   (events_view: as strict as json_loadb, without building an object); a
   line that is not a JSON object goes to their dead letters. -1: it could
   not be put anywhere (stop reading) */
static int exporter_take_line(EXPORTER **grp, size_t n, const char *seg,
                              long long offset, const char *line, size_t len)
{
    EVENTS_VIEW *view = grp[0]->ctx->view;
    VSTR *error;
    VSTR *why;
    int ret = 0;

    if (events_view_parse(view, line, len - 1, NULL) == 0) {
        const char *kind = events_view_str(view, "kind");
        const char *tenant = events_view_str(view, "tenant");

        for (size_t i = 0; i < n; i++) {
            /* Not one its routes pick: passed over (the position moves). */
            if (events_export_match(grp[i]->routes, kind, tenant))
                exporter_add(grp[i], line, len);
        }
        return 0;
    }
    /* Once more, for what is wrong with it. */
    error = vstr_alloc(100);
    (void) events_view_parse(view, line, len - 1, error);
    why = vstr_alloc(100);
    /* An exporter that wrote it before one failed writes it again when
       the line is read again: dead letters are at least once too. */
    for (size_t i = 0; i < n && ret == 0; i++) {
        EXPORTER *exp = grp[i];

        if (exporter_dead_letter(exp, line, len, why) < 0) {
            msg_warn("events: %s: %s/%s offset %lld is not an event; it "
                     "stays where it is: %s",
                     exp->name, exp->ctx->dir, seg, offset, vstr_str(why));
            ret = -1;
        } else {
            msg_warn("events: %s: %s/%s offset %lld is not an event (%s): "
                     "put in %s",
                     exp->name, exp->ctx->dir, seg, offset, vstr_str(error),
                     vstr_str(exp->dead_path));
        }
    }
    vstr_free(error);
    vstr_free(why);
    return ret;
}

/* exporter_full - whether one of the group's batches is full */
static bool exporter_full(EXPORTER **grp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (grp[i]->count >= (grp[i]->backend->batch_size > 0
                                  ? grp[i]->backend->batch_size
                                  : grp[i]->ctx->batch_size) ||
            vstr_len(grp[i]->lines) >= EXPORTER_BATCH_BYTES)
            return true;
    return false;
}

/* exporter_fill_seg - add seg's whole lines after offset to the batches of
   the group (grp[0]->next is where they all are); returns false when a
   batch is full (or reading must stop) */
static bool exporter_fill_seg(EXPORTER **grp, size_t n,
                              const EVENTS_SEG_INFO *seg, long long offset)
{
    EXPORTER_CTX *ctx = grp[0]->ctx;
    VSTR *path = vstr_alloc(100);
    VSTR *data = vstr_alloc(EXPORTER_READ_CHUNK);
    long long start = offset; /* of data */
    long long end = seg->size;
    bool more = true;
    int fd;

    vstr_sprintf(path, "%s/%s", ctx->dir, seg->name);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)
            msg_warn("events: open %s: %m", vstr_str(path));
        goto out;
    }
    while (start + (long long) vstr_len(data) < end) {
        char buf[EXPORTER_READ_CHUNK];
        long long at = start + (long long) vstr_len(data);
        size_t want = end - at < (long long) sizeof(buf) ? (size_t) (end - at)
                                                         : sizeof(buf);
        ssize_t got = pread(fd, buf, want, (off_t) at);
        const char *cp;
        const char *stop;

        if (got < 0) {
            msg_warn("events: read %s: %m", vstr_str(path));
            break;
        }
        if (got == 0)
            break; /* cut while we read */
        vstr_ncat(data, buf, (size_t) got);
        cp = vstr_str(data);
        stop = cp + events_whole_length(cp, vstr_len(data));
        while (cp < stop && more) {
            const char *nl = memchr(cp, '\n', (size_t) (stop - cp));
            size_t len = (size_t) (nl - cp) + 1;

            if (exporter_take_line(grp, n, seg->name, offset, cp, len) < 0) {
                more = false;
                break;
            }
            offset += (long long) len;
            cp = nl + 1;
            if (exporter_full(grp, n))
                more = false;
        }
        /* Keep only the partial line, if any. */
        start = offset;
        {
            size_t used = (size_t) (cp - vstr_str(data));
            size_t left = vstr_len(data) - used;

            memmove(vstr_str(data), cp, left);
            vstr_truncate(data, left);
        }
        if (!more)
            break;
    }
    (void) close(fd);
    events_pos_set(grp[0]->next, seg->name, offset);
    /* A finished segment never grows again: bytes after its last LF are a
       torn tail its crashed writer left. */
    if (more && seg->finished && offset < seg->size &&
        start + (long long) vstr_len(data) >= seg->size) {
        if (events_repair_file(vstr_str(path)) == 0)
            msg_warn("events: %s: %lld bytes after the last whole event "
                     "could not be cut; they are skipped",
                     vstr_str(path), seg->size - offset);
        else
            msg_info("events: %s: read up to the cut, offset %lld",
                     vstr_str(path), offset);
        events_pos_set(grp[0]->next, seg->name, seg->size);
    }
out:
    vstr_free(path);
    vstr_free(data);
    return more;
}

/* exporter_same_pos - whether a and b are the same position */
static bool exporter_same_pos(const EVENTS_POS *a, const EVENTS_POS *b)
{
    VSTR *fa = vstr_alloc(200);
    VSTR *fb = vstr_alloc(200);
    bool same;

    events_pos_format(a, fa);
    events_pos_format(b, fb);
    same = strcmp(vstr_str(fa), vstr_str(fb)) == 0;
    vstr_free(fa);
    vstr_free(fb);
    return same;
}

/* exporter_fill - the next batch of each of the group's n exporters (idle,
   all at the same position) from the journal as list shows it, the
   journal read and each line parsed once for all; then each one whose
   position (without its batch) changed and that has nothing to send is
   saved */
static void exporter_fill(EXPORTER **grp, size_t n, const EVENTS_LIST *list)
{
    EXPORTER *lead = grp[0];
    bool stopped = false; /* at a full batch */

    events_pos_copy(lead->next, lead->pos);
    (void) events_pos_advance(lead->next, list);
    for (size_t i = 0; i < n; i++)
        exporter_reset(grp[i]);
    for (size_t i = 0; i < list->count; i++) {
        const EVENTS_SEG_INFO *seg = &list->segs[i];
        long long offset = events_pos_offset(lead->next, seg->name);

        if (offset < 0)
            continue;
        if (offset > seg->size) {
            /* Only a writer's failed batch is cut off a segment (events.c);
               if we read it in between, it is behind us: go on from the
               end. */
            msg_warn("events: %s: %s/%s is shorter (%lld) than the offset "
                     "read (%lld)",
                     lead->name, lead->ctx->dir, seg->name, seg->size, offset);
            events_pos_set(lead->next, seg->name, seg->size);
            continue;
        }
        if (offset == seg->size)
            continue;
        if (!exporter_fill_seg(grp, n, seg, offset)) {
            stopped = true;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        EXPORTER *exp = grp[i];

        exp->more = stopped;
        if (i > 0)
            events_pos_copy(exp->next, lead->next);
        if (exp->count == 0) {
            /* Nothing picked, invalid lines dead-lettered or a torn tail
               cut: the position still moves; then perhaps the floor. */
            (void) events_pos_advance(exp->next, list);
            if (!exporter_same_pos(exp->pos, exp->next))
                exporter_save(exp);
        }
    }
}

/* exporter_send - hand the batch in hand to the backend */
static void exporter_send(EXPORTER *exp)
{
    exp->in_flight = true;
    exp->backend->send(exp->state, exp->lines, exp->count);
}

/* exporter_done - the backend's answer to the batch in flight */
void exporter_done(EXPORTER *exp, bool ok, const char *why)
{
    time_t now = time(NULL);
    long long max_age = exp->backend->max_age(exp->state);
    VSTR *err;

    if (!exp->in_flight)
        msg_panic("%s: %s: no batch in flight", __func__, exp->name);
    exp->in_flight = false;
    if (ok) {
        if (exp->first_fail)
            msg_info("events: %s: %s: delivered again after %lld s of "
                     "failures",
                     exp->name, exp->display,
                     (long long) (now - exp->first_fail));
        exporter_save(exp);
        exporter_reset(exp);
        exp->first_fail = 0;
        exp->backoff = 0;
        exp->retry_at = 0;
        /* A backlog is read on at once; otherwise what the writers add
           meanwhile waits for the next look (at most a second), so that
           it goes as one batch, not as a trickle of small ones: each
           batch costs the index a commit (a WAL write and fdatasync)
           whatever its size. */
        exporter_pump_soon(exp->ctx, exp->more ? 0 : EXPORTER_POLL_SECONDS);
        return;
    }
    if (exp->first_fail == 0)
        exp->first_fail = now;
    if ((long long) (now - exp->first_fail) >= max_age) {
        err = vstr_alloc(100);
        if (exporter_dead_letter(exp, vstr_str(exp->lines),
                                 vstr_len(exp->lines), err) < 0) {
            msg_warn("events: %s: %s: %d events failed for %lld s (%s) and "
                     "cannot go to the dead letters (%s): kept, retried",
                     exp->name, exp->display, exp->count,
                     (long long) (now - exp->first_fail), why, vstr_str(err));
            vstr_free(err);
        } else {
            vstr_free(err);
            msg_warn("events: %s: %s: gave up on %d events after %lld s (%s): "
                     "written to %s",
                     exp->name, exp->display, exp->count,
                     (long long) (now - exp->first_fail), why,
                     vstr_str(exp->dead_path));
            exporter_save_now(exp);
            exporter_reset(exp);
            exp->first_fail = 0;
            exp->backoff = 0;
            exp->retry_at = 0;
            exporter_pump_soon(exp->ctx, 0);
            return;
        }
    }
    exp->backoff = exp->backoff ? exp->backoff * 2 : 1;
    if (exp->backoff > exp->ctx->max_backoff)
        exp->backoff = exp->ctx->max_backoff;
    /* Not past the last try the max age allows. */
    if (exp->backoff > max_age - (long long) (now - exp->first_fail) &&
        max_age > (long long) (now - exp->first_fail))
        exp->backoff = max_age - (long long) (now - exp->first_fail);
    exp->retry_at = now + exp->backoff;
    msg_warn("events: %s: %s: %d events not delivered: %s; retry in %lld s",
             exp->name, exp->display, exp->count, why, exp->backoff);
    exporter_pump_soon(exp->ctx, exp->backoff);
}

/* exporter_load - read exp's position file: pos and saved */
static int exporter_load(EXPORTER *exp, VSTR *why)
{
    int ret = events_pos_load(exp->pos, vstr_str(exp->pos_path), why);

    events_pos_copy(exp->saved, exp->pos);
    exp->dirty = false;
    return ret;
}

/* exporter_remove - remove the segments every exporter's position file is
   past (a crash resumes there, so they must still be there) */
static void exporter_remove(EXPORTER_CTX *ctx, const EVENTS_LIST *list)
{
    VSTR *path;
    int removed = 0;

    if (ctx->removers == 0)
        return;
    for (size_t i = 0; i < ctx->count; i++)
        if (ctx->exporters[i]->broken ||
            ctx->exporters[i]->saved->floor == NULL)
            return;
    path = vstr_alloc(100);
    for (size_t i = 0; i < list->count; i++) {
        bool past = true;

        for (size_t j = 0; j < ctx->count && past; j++)
            past = events_pos_offset(ctx->exporters[j]->saved,
                                     list->segs[i].name) < 0;
        if (!past)
            break;
        vstr_sprintf(path, "%s/%s", ctx->dir, list->segs[i].name);
        if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
            msg_warn("events: remove %s: %m", vstr_str(path));
        else
            removed++;
    }
    if (removed > 0 && msg_verbose_get())
        msg_info("events: removed %d exported segments", removed);
    vstr_free(path);
}

/* exporter_passive_load - read a passive reader's position again (its
   daemon moves it); one that cannot be read holds every segment back,
   logged when it starts and when it ends */
static void exporter_passive_load(EXPORTER *exp, VSTR *why)
{
    if (exporter_load(exp, why) < 0) {
        if (!exp->broken)
            msg_warn("events: %s (%s): %s; no segment is removed until its "
                     "daemon writes it again",
                     exp->name, exp->display, vstr_str(why));
        exp->broken = true;
    } else if (exp->broken) {
        exp->broken = false;
        msg_info("events: %s: %s can be read again", exp->name,
                 vstr_str(exp->pos_path));
    }
}

/* exporter_pump - give each idle exporter its next batch */
static void exporter_pump(EXPORTER_CTX *ctx)
{
    VSTR *why = vstr_alloc(100);
    EVENTS_LIST *list = events_list(ctx->dir, why);
    time_t now = time(NULL);
    long long next = EXPORTER_POLL_SECONDS;
    EXPORTER **ready; /* idle: a batch to read */
    EXPORTER **grp;
    size_t nready = 0;

    if (list == NULL) {
        msg_warn("events: %s", vstr_str(why));
        vstr_free(why);
        exporter_pump_soon(ctx, next);
        return;
    }
    ready = mycalloc(ctx->count ? ctx->count : 1, sizeof(*ready));
    grp = mycalloc(ctx->count ? ctx->count : 1, sizeof(*grp));
    for (size_t i = 0; i < ctx->count; i++) {
        EXPORTER *exp = ctx->exporters[i];

        if (exp->passive) {
            exporter_passive_load(exp, why);
            continue;
        }
        if (exp->broken) {
            /* Mended or removed by the administrator? */
            if (exporter_load(exp, why) < 0)
                continue;
            exp->broken = false;
            msg_info("events: %s: %s can be read again; the exporter goes on",
                     exp->name, vstr_str(exp->pos_path));
        }
        if (exp->in_flight)
            continue;
        if (exp->count > 0) {
            /* A failed batch waits for its retry. */
            if (now >= exp->retry_at)
                exporter_send(exp);
            else if (exp->retry_at - now < next)
                next = exp->retry_at - now;
            continue;
        }
        ready[nready++] = exp;
    }
    /* Exporters at the same position read the journal together. */
    for (size_t i = 0; i < nready; i++) {
        size_t n = 0;

        if (ready[i] == NULL)
            continue;
        grp[n++] = ready[i];
        for (size_t j = i + 1; j < nready; j++) {
            if (ready[j] != NULL &&
                exporter_same_pos(ready[i]->pos, ready[j]->pos)) {
                grp[n++] = ready[j];
                ready[j] = NULL;
            }
        }
        exporter_fill(grp, n, list);
        for (size_t j = 0; j < n; j++)
            if (grp[j]->count > 0)
                exporter_send(grp[j]);
    }
    myfree(ready);
    myfree(grp);
    exporter_remove(ctx, list);
    events_list_free(list);
    vstr_free(why);
    exporter_pump_soon(ctx, next);
}

/* exporter_pump_event - the pump's timer */
static void exporter_pump_event(evutil_socket_t fd, short what, void *arg)
{
    EXPORTER_CTX *ctx = arg;

    ctx->pumping = true;
    exporter_pump(ctx);
    ctx->pumping = false;
}

/* exporter_pump_soon - pump in seconds (0: at the next loop pass); an
   earlier pump already due stays */
static void exporter_pump_soon(EXPORTER_CTX *ctx, long long seconds)
{
    struct timeval tv = {(time_t) seconds, 0};
    struct timeval left;

    if (evtimer_pending(ctx->pump_ev, &left)) {
        struct timeval now;

        event_base_gettimeofday_cached(ctx->base, &now);
        /* left is absolute (libevent's clock); compare the waits. */
        if (timercmp(&left, &now, <) ||
            (long long) (left.tv_sec - now.tv_sec) <= seconds)
            return;
    }
    if (evtimer_add(ctx->pump_ev, &tv) < 0)
        msg_fatal("cannot add the events pump timer");
}

/* exporter_open - one exporter of the configuration */
static EXPORTER *exporter_open(EXPORTER_CTX *ctx, const EVENTS_EXPORT *conf_exp,
                               const MAIL_CONF *conf)
{
    EXPORTER *exp = mycalloc(1, sizeof(*exp));
    VSTR *why = vstr_alloc(100);

    exp->ctx = ctx;
    exp->name = mystrdup(conf_exp->name);
    exp->target = mystrdup(conf_exp->target);
    exp->display = mystrdup(conf_exp->display);
    exp->routes = conf_exp->routes ? mystrdup(conf_exp->routes) : NULL;
    exp->passive = events_export_passive(conf_exp);
    if (!exp->passive &&
        (exp->backend = exporter_backend(conf_exp->kind)) == NULL)
        msg_panic("%s: no backend for %s", __func__, conf_exp->kind);
    exp->pos_path = vstr_alloc(100);
    exp->dead_path = vstr_alloc(100);
    events_export_path(exp->pos_path, ctx->dir, exp->name,
                       EVENTS_EXPORT_POS_SUFFIX);
    events_export_path(exp->dead_path, ctx->dir, exp->name,
                       EVENTS_EXPORT_DEAD_SUFFIX);
    exp->pos = events_pos_alloc();
    exp->saved = events_pos_alloc();
    exp->next = events_pos_alloc();
    exp->lines = vstr_alloc(4096);
    exp->view = events_view_alloc();
    exp->view_at = -1;
    if (exp->passive) {
        exporter_passive_load(exp, why);
        msg_info("events: reader %s: %s (its position holds segments)",
                 exp->name, exp->display);
        vstr_free(why);
        return exp;
    }
    if (exporter_load(exp, why) < 0) {
        msg_warn("events: %s (%s): %s; this exporter is stopped until the "
                 "file is mended or removed (removed: everything left in the "
                 "journal is sent again), and no segment is removed meanwhile",
                 exp->name, exp->display, vstr_str(why));
        exp->broken = true;
    }
    exp->state = exp->backend->open(exp, ctx->base, conf);
    msg_info("events: exporter %s: %s %s%s%s", exp->name, conf_exp->kind,
             exp->display, exp->routes ? ", only " : "",
             exp->routes ? exp->routes : "");
    vstr_free(why);
    return exp;
}

/* exporter_free - one exporter */
static void exporter_free(EXPORTER *exp)
{
    if (!exp->passive)
        exp->backend->close(exp->state);
    myfree(exp->name);
    myfree(exp->target);
    myfree(exp->display);
    myfree(exp->routes);
    vstr_free(exp->pos_path);
    vstr_free(exp->dead_path);
    events_pos_free(exp->pos);
    events_pos_free(exp->saved);
    events_pos_free(exp->next);
    exporter_reset(exp);
    vstr_free(exp->lines);
    myfree(exp->starts);
    events_view_free(exp->view);
    myfree(exp);
}

/* exporter_pre_loop - read the configuration, open the exporters */
static void exporter_pre_loop(MAIL_SERVER *server, void *arg)
{
    EXPORTER_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    EVENTS_EXPORT_LIST *list = events_export_list(conf);
    VSTR *sub = vstr_alloc(100);

    ctx->server = server;
    ctx->base = mail_server_base(server);
    ctx->dir = mystrdup(mail_conf_str(conf, "events_directory"));
    ctx->max_backoff = mail_conf_time(conf, "events_webhook_max_backoff");
    ctx->batch_size = (int) mail_conf_int(conf, "events_webhook_batch_size");
    if (list->error != NULL)
        msg_fatal("%s", list->error);
    ctx->view = events_view_alloc();
    ctx->pump_ev = evtimer_new(ctx->base, exporter_pump_event, ctx);
    ctx->save_ev = evtimer_new(ctx->base, exporter_save_event, ctx);
    if (ctx->save_ev == NULL)
        msg_fatal("cannot create the events save timer");
    if (ctx->pump_ev == NULL)
        msg_fatal("cannot create the events pump timer");
    if (list->count > 0) {
        vstr_sprintf(sub, "%s/%s", ctx->dir, EVENTS_POS_DIR);
        if (mkdir(ctx->dir, 0700) < 0 && errno != EEXIST)
            msg_fatal("events: create %s: %m", ctx->dir);
        if (mkdir(vstr_str(sub), 0700) < 0 && errno != EEXIST)
            msg_fatal("events: create %s: %m", vstr_str(sub));
    }
    ctx->exporters =
        mycalloc(list->count ? list->count : 1, sizeof(*ctx->exporters));
    for (size_t i = 0; i < list->count; i++) {
        ctx->exporters[ctx->count++] =
            exporter_open(ctx, &list->exports[i], conf);
        if (!ctx->exporters[ctx->count - 1]->passive)
            ctx->active++;
        if (events_export_removes(&list->exports[i]))
            ctx->removers++;
    }
    if (ctx->active == 0)
        msg_info("events: no exporter configured (events_webhook_urls, "
                 "events_stats_enable, events_index_enable, "
                 "suppression_feedback_enable, events_kafka_brokers, "
                 "otel_exporter_otlp_endpoint); the journal is kept whole");
    else
        exporter_pump_soon(ctx, 0);
    if (ctx->active > 0 && ctx->removers == 0)
        msg_info("events: no exporter ships events elsewhere "
                 "(events_webhook_urls, events_stats_enable, "
                 "events_kafka_brokers, otel_exporter_otlp_endpoint); "
                 "the journal is kept whole");
    events_export_list_free(list);
    vstr_free(sub);
}

/* exporter_trigger - a wake-up: look at the journal now */
static void exporter_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    EXPORTER_CTX *ctx = arg;

    if (ctx->active > 0)
        exporter_pump_soon(ctx, 0);
}

/* exporter_post_loop - free what lives on the event base */
static void exporter_post_loop(MAIL_SERVER *server, void *arg)
{
    EXPORTER_CTX *ctx = arg;

    /* Positions that moved since the last flush: written now. */
    exporter_flush(ctx);
    for (size_t i = 0; i < ctx->count; i++)
        exporter_free(ctx->exporters[i]);
    myfree(ctx->exporters);
    ctx->exporters = NULL;
    ctx->count = 0;
    ctx->active = 0;
    ctx->removers = 0;
    if (ctx->pump_ev)
        event_free(ctx->pump_ev);
    ctx->pump_ev = NULL;
    if (ctx->save_ev)
        event_free(ctx->save_ev);
    ctx->save_ev = NULL;
    events_view_free(ctx->view);
    ctx->view = NULL;
}

/* main - the events daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = exporter_pre_loop,
        .on_trigger = exporter_trigger,
        .post_loop = exporter_post_loop,
    };
    EXPORTER_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "events", &ops, &ctx);
    myfree(ctx.dir);
    return status;
}
