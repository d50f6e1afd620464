/*
 * events - follow the event journal and hand its events to the exporters
 *
 * One process (master.cf: events, maxproc 1, unprivileged) for every
 * exporter main.cf configures (global/events_export.h): one per
 * events_webhook_urls entry (webhook.c), and the SQLite store behind
 * `sluice stats` with events_stats_enable (stats.c), and one producer to
 * events_kafka_brokers (kafka.c). Each exporter has its own position
 * (global/events_pos.h: a floor plus per-segment offsets, because several
 * writers append at once), its own batch in flight and its own back-off,
 * so a slow or dead endpoint only grows its own backlog.
 *
 * Delivery is at least once: the position is replaced durably (temporary
 * file, fsync, rename) only after the backend has said the batch went, so
 * a crash or kill -9 re-sends at most the batch in flight; consumers
 * deduplicate by event id. Whole lines only: a partial last line of a
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
 * exporter (so finished and read to its end by all of them) is removed.
 * With no exporter configured nothing is removed (the journal is then
 * only read by `sluice events`, and kept as before). An exporter whose
 * position file cannot be read stops (logged once) and holds back
 * removal, so its events stay for when the file is mended (looked at
 * again every second) or removed (then everything left is sent again).
 *
 * The journal is looked at every second (and at once after a batch went
 * and more is waiting): writers do not wake this daemon, and nothing
 * depends on a wake-up.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "events.h"
#include "events_export.h"
#include "events_pos.h"
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

typedef struct EXPORTER_CTX EXPORTER_CTX;

struct EXPORTER {
    EXPORTER_CTX *ctx;
    char *name; /* events_export.h */
    char *target;
    char *display; /* target for the log: no userinfo, no query */
    const EXPORTER_BACKEND *backend;
    void *state;
    VSTR *pos_path;
    VSTR *dead_path;
    EVENTS_POS *pos; /* durable: exported up to here */
    EVENTS_POS *next; /* once the batch in hand is exported */
    VSTR *lines; /* the batch in hand: whole event lines */
    int count; /* its events */
    bool in_flight; /* the backend has it */
    bool broken; /* the position file cannot be read: stopped */
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
    struct event *pump_ev;
    bool pumping;
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

/* exporter_backend - the backend of kind, or NULL */
static const EXPORTER_BACKEND *exporter_backend(const char *kind)
{
    static const EXPORTER_BACKEND *const backends[] = {
        &webhook_backend, &stats_backend, &kafka_backend, &index_backend,
        &otel_backend};

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

/* exporter_save - make exp->next the durable position */
static void exporter_save(EXPORTER *exp)
{
    VSTR *why = vstr_alloc(100);

    /* A failed save costs a re-send after a restart, never an event. */
    if (events_pos_save(exp->next, vstr_str(exp->pos_path), why) < 0)
        msg_warn("events: %s: %s", exp->name, vstr_str(why));
    events_pos_copy(exp->pos, exp->next);
    vstr_free(why);
}

/* exporter_take_line - one whole line (with LF) into the batch; a line
   that is not a JSON object goes to the dead letters. -1: it could not
   be put anywhere (stop reading) */
static int exporter_take_line(EXPORTER *exp, const char *seg, long long offset,
                              const char *line, size_t len)
{
    json_error_t error;
    json_t *obj = json_loadb(line, len - 1, 0, &error);
    VSTR *why;
    int ret = 0;

    if (obj != NULL && json_is_object(obj)) {
        json_decref(obj);
        vstr_ncat(exp->lines, line, len);
        exp->count++;
        return 0;
    }
    json_decref(obj);
    why = vstr_alloc(100);
    if (exporter_dead_letter(exp, line, len, why) < 0) {
        msg_warn("events: %s: %s/%s offset %lld is not an event; it stays "
                 "where it is: %s",
                 exp->name, exp->ctx->dir, seg, offset, vstr_str(why));
        ret = -1;
    } else {
        msg_warn("events: %s: %s/%s offset %lld is not an event (%s): put "
                 "in %s",
                 exp->name, exp->ctx->dir, seg, offset,
                 obj ? "not an object" : error.text, vstr_str(exp->dead_path));
    }
    vstr_free(why);
    return ret;
}

/* exporter_fill_seg - add seg's whole lines after offset to the batch;
   returns false when the batch is full (or reading must stop) */
static bool exporter_fill_seg(EXPORTER *exp, const EVENTS_SEG_INFO *seg,
                              long long offset)
{
    EXPORTER_CTX *ctx = exp->ctx;
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

            if (exporter_take_line(exp, seg->name, offset, cp, len) < 0) {
                more = false;
                break;
            }
            offset += (long long) len;
            cp = nl + 1;
            if (exp->count >= ctx->batch_size ||
                vstr_len(exp->lines) >= EXPORTER_BATCH_BYTES)
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
    events_pos_set(exp->next, seg->name, offset);
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
        events_pos_set(exp->next, seg->name, seg->size);
    }
out:
    vstr_free(path);
    vstr_free(data);
    return more;
}

/* exporter_fill - the next batch of exp from the journal as list shows
   it; returns whether the position (without the batch) changed */
static bool exporter_fill(EXPORTER *exp, const EVENTS_LIST *list)
{
    events_pos_copy(exp->next, exp->pos);
    (void) events_pos_advance(exp->next, list);
    vstr_reset(exp->lines);
    exp->count = 0;
    for (size_t i = 0; i < list->count; i++) {
        const EVENTS_SEG_INFO *seg = &list->segs[i];
        long long offset = events_pos_offset(exp->next, seg->name);

        if (offset < 0)
            continue;
        if (offset > seg->size) {
            /* Only a writer's failed batch is cut off a segment (events.c);
               if we read it in between, it is behind us: go on from the
               end. */
            msg_warn("events: %s: %s/%s is shorter (%lld) than the offset "
                     "read (%lld)",
                     exp->name, exp->ctx->dir, seg->name, seg->size, offset);
            events_pos_set(exp->next, seg->name, seg->size);
            continue;
        }
        if (offset == seg->size)
            continue;
        if (!exporter_fill_seg(exp, seg, offset))
            break;
    }
    if (exp->count == 0) {
        /* Invalid lines dead-lettered or a torn tail cut: the position
           still moves; then perhaps the floor. */
        (void) events_pos_advance(exp->next, list);
    }
    {
        VSTR *a = vstr_alloc(200);
        VSTR *b = vstr_alloc(200);
        bool changed;

        events_pos_format(exp->pos, a);
        events_pos_format(exp->next, b);
        changed = strcmp(vstr_str(a), vstr_str(b)) != 0;
        vstr_free(a);
        vstr_free(b);
        return changed;
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
        vstr_reset(exp->lines);
        exp->count = 0;
        exp->first_fail = 0;
        exp->backoff = 0;
        exp->retry_at = 0;
        exporter_pump_soon(exp->ctx, 0);
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
            exporter_save(exp);
            vstr_reset(exp->lines);
            exp->count = 0;
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

/* exporter_remove - remove the segments every exporter is past */
static void exporter_remove(EXPORTER_CTX *ctx, const EVENTS_LIST *list)
{
    VSTR *path;
    int removed = 0;

    if (ctx->count == 0)
        return;
    for (size_t i = 0; i < ctx->count; i++)
        if (ctx->exporters[i]->broken || ctx->exporters[i]->pos->floor == NULL)
            return;
    path = vstr_alloc(100);
    for (size_t i = 0; i < list->count; i++) {
        bool past = true;

        for (size_t j = 0; j < ctx->count && past; j++)
            past = events_pos_offset(ctx->exporters[j]->pos,
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

/* exporter_pump - give each idle exporter its next batch */
static void exporter_pump(EXPORTER_CTX *ctx)
{
    VSTR *why = vstr_alloc(100);
    EVENTS_LIST *list = events_list(ctx->dir, why);
    time_t now = time(NULL);
    long long next = EXPORTER_POLL_SECONDS;

    if (list == NULL) {
        msg_warn("events: %s", vstr_str(why));
        vstr_free(why);
        exporter_pump_soon(ctx, next);
        return;
    }
    for (size_t i = 0; i < ctx->count; i++) {
        EXPORTER *exp = ctx->exporters[i];

        if (exp->broken) {
            /* Mended or removed by the administrator? */
            if (events_pos_load(exp->pos, vstr_str(exp->pos_path), why) < 0)
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
        if (exporter_fill(exp, list) && exp->count == 0)
            exporter_save(exp);
        if (exp->count > 0)
            exporter_send(exp);
    }
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
    if ((exp->backend = exporter_backend(conf_exp->kind)) == NULL)
        msg_panic("%s: no backend for %s", __func__, conf_exp->kind);
    exp->pos_path = vstr_alloc(100);
    exp->dead_path = vstr_alloc(100);
    events_export_path(exp->pos_path, ctx->dir, exp->name,
                       EVENTS_EXPORT_POS_SUFFIX);
    events_export_path(exp->dead_path, ctx->dir, exp->name,
                       EVENTS_EXPORT_DEAD_SUFFIX);
    exp->pos = events_pos_alloc();
    exp->next = events_pos_alloc();
    exp->lines = vstr_alloc(4096);
    if (events_pos_load(exp->pos, vstr_str(exp->pos_path), why) < 0) {
        msg_warn("events: %s (%s): %s; this exporter is stopped until the "
                 "file is mended or removed (removed: everything left in the "
                 "journal is sent again), and no segment is removed meanwhile",
                 exp->name, exp->display, vstr_str(why));
        exp->broken = true;
    }
    exp->state = exp->backend->open(exp, ctx->base, conf);
    msg_info("events: exporter %s: %s %s", exp->name, conf_exp->kind,
             exp->display);
    vstr_free(why);
    return exp;
}

/* exporter_free - one exporter */
static void exporter_free(EXPORTER *exp)
{
    exp->backend->close(exp->state);
    myfree(exp->name);
    myfree(exp->target);
    myfree(exp->display);
    vstr_free(exp->pos_path);
    vstr_free(exp->dead_path);
    events_pos_free(exp->pos);
    events_pos_free(exp->next);
    vstr_free(exp->lines);
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
    ctx->pump_ev = evtimer_new(ctx->base, exporter_pump_event, ctx);
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
    for (size_t i = 0; i < list->count; i++)
        ctx->exporters[ctx->count++] =
            exporter_open(ctx, &list->exports[i], conf);
    if (ctx->count == 0)
        msg_info("events: no exporter configured (events_webhook_urls, "
                 "events_stats_enable, events_index_enable, "
                 "events_kafka_brokers); "
                 "the journal is kept whole");
    else
        exporter_pump_soon(ctx, 0);
    events_export_list_free(list);
    vstr_free(sub);
}

/* exporter_trigger - a wake-up: look at the journal now */
static void exporter_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    EXPORTER_CTX *ctx = arg;

    if (ctx->count > 0)
        exporter_pump_soon(ctx, 0);
}

/* exporter_post_loop - free what lives on the event base */
static void exporter_post_loop(MAIL_SERVER *server, void *arg)
{
    EXPORTER_CTX *ctx = arg;

    for (size_t i = 0; i < ctx->count; i++)
        exporter_free(ctx->exporters[i]);
    myfree(ctx->exporters);
    ctx->exporters = NULL;
    ctx->count = 0;
    if (ctx->pump_ev)
        event_free(ctx->pump_ev);
    ctx->pump_ev = NULL;
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
