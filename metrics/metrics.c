/*
 * metrics - the Prometheus endpoint (issue #20, item 1)
 *
 * An unprivileged daemon on global/mail_server (master.cf service
 * "metrics", maxproc 1) that answers GET /metrics on metrics_listen in
 * the text exposition format (version 0.0.4); anything else gets 404 (405
 * for another method on /metrics). Empty metrics_listen (the default):
 * the service idles. Master binds that address and hands the socket over,
 * as for the api (global/own_listen.h): a reload gives the successor the
 * same socket, and no other process of the same user can bind the port
 * beside it and answer a share of the scrapes.
 *
 * A separate process rather than a listener inside the events daemon:
 * the events daemon must keep exporting whatever an HTTP client does,
 * and this daemon only reads what others write (the queue directories,
 * the journal, master's status file), so it needs no state of its own
 * and nothing it does can slow mail down.
 *
 * The HTTP side is a few lines on bufferevents rather than evhttp, for
 * the bounds libevent 2.1's evhttp lacks: a request (line and headers)
 * longer than METRICS_REQUEST_MAX bytes gets 431 and the connection
 * closed; a connection that has not sent a whole request within
 * metrics_timeout is closed; at most metrics_max_connections are open at
 * once, and a new one closes the oldest, so 1,000 idle clients neither
 * exhaust descriptors nor keep Prometheus out. Every answer closes its
 * connection.
 *
 * What it serves, and where each number comes from:
 *   sluice_queue_messages{queue}, sluice_queue_oldest_seconds{queue}
 *       a count of the queue files in incoming/ active/ deferred/ hold/
 *       (readdir only, no stat: the oldest message is the smallest queue
 *       ID, which encodes its arrival time, global/qid.h), cached: a new
 *       count at most every metrics_queue_scan_interval, and never more
 *       often than ten times the last count took, so a million-message
 *       queue costs a scrape about a second at most every so often
 *       (sluice_queue_scan_seconds says how long).
 *   sluice_messages_received_total, sluice_deliveries_total{status,
 *   provider}, sluice_delivery_delay_seconds{provider} (histogram of a
 *       delivered recipient's delay since arrival)
 *       from the event journal, followed from a durable position (see
 *       "The journal's counters" below). provider is the shaping rule's provider
 *       (smtp_shaping_maps, provider:NAME, matched on the relay's host
 *       name) or "other": the label set is bounded by the rules, never by
 *       recipient domains.
 *   sluice_events_backlog_bytes{exporter,kind}
 *       journal bytes each configured exporter has not passed yet (its
 *       position file), as `sluice events status` counts them.
 *   sluice_process_restarts_total{service,type}
 *       processes of each master.cf service that died unasked (and were
 *       restarted), from master's pid/master.status.
 *   sluice_shaping_*{provider}, sluice_shaping_up
 *       qmgr's shaping state of each provider bucket (connections, limit,
 *       tokens, queued, suspension, automation), asked on
 *       private/qmgr-shaping as `sluice shaping` does; only provider
 *       buckets (domain buckets would be unbounded), only with rules.
 *   sluice_source_paused{source}, sluice_source_bounce_ratio{source},
 *   sluice_source_block_ratio{source}, sluice_source_warmup_day{source},
 *   sluice_source_warmup_cap{source}, sluice_source_up
 *       qmgr's state of each source address of smtp_source_pools (paused:
 *       any state but active, so a probe counts; the ratios over the
 *       reputation window; warm-up only for sources with a schedule),
 *       asked on private/qmgr-pool as `sluice pool` does.
 *
 * The journal's delivery metrics also carry pool and source_ip: the
 * event's pool when smtp_source_pools names it, its source IP when that
 * is one of the pools' addresses, else "other" (bounded by the pools).
 *
 * Labels of the journal's metrics are computed by metrics_event_labels[]:
 * adding one (a pool, a source IP) is one line there.
 *
 * The journal's counters. This daemon reads the journal itself, every
 * METRICS_TICK seconds and at each scrape, and is a passive reader of the
 * events framework (global/events_export.h, EVENTS_EXPORT_METRICS): its
 * position file, events_directory/exporters/metrics-HASH.pos, holds back
 * the events daemon's removal of segments like an exporter's, so a
 * stopped or slow metrics daemon misses no event however far the
 * exporters go. The counters are kept with that position in
 * metrics-HASH.state (JSON: the position's text and every series),
 * replaced durably at most every METRICS_TICK seconds while they change,
 * and the .pos file after it, so the position that holds segments is
 * never past the one the counters stand at. A restart (or a kill -9)
 * loads the state and goes on from its position: every event is counted
 * exactly once, and the counters never go back. With no state yet (the
 * first start) the counters start at 0 at the journal's end; with a
 * state that cannot be read (logged) at 0 from the .pos position, else
 * the end.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "argv.h"
#include "attr.h"
#include "conn_stats.h"
#include "events.h"
#include "events_export.h"
#include "events_pos.h"
#include "htable.h"
#include "safe_file.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "own_listen.h"
#include "pool_proto.h"
#include "qid.h"
#include "shaping.h"
#include "shaping_proto.h"
#include "sock.h"
#include "source_pool.h"
#include "vstr.h"

#define METRICS_LISTEN_BACKLOG 128
#define METRICS_REQUEST_MAX 8192 /* bytes of a request line and headers */
#define METRICS_TICK 1 /* seconds between reads of the journal */
#define METRICS_READ_MAX (16 * 1024 * 1024) /* journal bytes per pass */
#define METRICS_SHAPING_WAIT_MS 2000 /* for qmgr's shaping state */
#define METRICS_POOL_WAIT_MS 2000 /* for qmgr's source state */
#define METRICS_OTHER "other" /* no provider of the shaping rules */
/* master/master.h: pid/master.status */
#define METRICS_MASTER_STATUS "master.status"
#define METRICS_MASTER_MAGIC "sluice-master-status 1"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_STATE_MAGIC "sluice-metrics-state 1"
#define METRICS_STATE_SUFFIX ".state"
#define METRICS_STATE_MAX (16 * 1024 * 1024) /* a larger file is not ours */

/* Upper bounds (seconds) of the delay histogram's buckets. */
static const double metrics_delay_buckets[] = {
    0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400,
};
/* ... of a delivery attempt (the agent's request to its result) */
static const double metrics_attempt_buckets[] = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
};
/* ... of a new SMTP connection's setup (DNS, connect, greeting, EHLO,
   TLS) */
static const double metrics_connect_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};
#define METRICS_BUCKETS_MAX 16 /* of any histogram */
#define METRICS_BOUNDS(a) (a), (sizeof(a) / sizeof((a)[0]))

/* The TLS versions a label may name; anything else is METRICS_OTHER. */
static const char *const metrics_tls_versions[] = {
    "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
};

/* The queues whose depth is served. */
static const char *const metrics_queues[] = {
    MAIL_QUEUE_INCOMING,
    MAIL_QUEUE_ACTIVE,
    MAIL_QUEUE_DEFERRED,
    MAIL_QUEUE_HOLD,
};
#define METRICS_QUEUES (sizeof(metrics_queues) / sizeof(metrics_queues[0]))

/* One series: a counter's value, or a histogram's buckets, sum and count. */
typedef struct METRICS_SERIES {
    double value;
    double sum;
    unsigned long long count;
    unsigned long long buckets[METRICS_BUCKETS_MAX];
} METRICS_SERIES;

/* One family of series, keyed by their rendered labels. */
typedef struct METRICS_FAMILY {
    const char *name;
    const char *type; /* "counter", "histogram" */
    const char *help;
    const double *bounds; /* histogram: the buckets' upper bounds */
    size_t nbounds; /* at most METRICS_BUCKETS_MAX */
    HTABLE *series;
} METRICS_FAMILY;

/* One queue's count, as the last scan found it. */
typedef struct METRICS_QUEUE {
    long long messages;
    char oldest[QID_SIZE]; /* "" when empty */
} METRICS_QUEUE;

typedef struct METRICS_CONN METRICS_CONN;

typedef struct METRICS_CTX {
    MAIL_SERVER *server;
    char *queue_dir;
    char *events_dir;
    int timeout;
    int max_conns;
    long long scan_interval;
    SHAPING_RULES *shaping; /* NULL: no provider rules */
    SOURCE_POOLS *pools; /* NULL: no smtp_source_pools */
    EVENTS_EXPORT_LIST *exporters;
    struct evconnlistener *listener;
    METRICS_CONN *conns_head; /* oldest first */
    METRICS_CONN *conns_tail;
    int conns;
    /* the journal, followed from a durable position */
    EVENTS_POS *pos;
    bool pos_started; /* false: start at the journal's end */
    bool dirty; /* counters or position moved since the last save */
    VSTR *pos_path; /* exporters/metrics-HASH.pos */
    VSTR *state_path; /* exporters/metrics-HASH.state */
    METRICS_FAMILY received;
    METRICS_FAMILY deliveries;
    METRICS_FAMILY delay;
    METRICS_FAMILY attempt;
    METRICS_FAMILY connect;
    METRICS_FAMILY tls;
    METRICS_FAMILY *families[8]; /* the journal's, for the state file */
    size_t nfamilies;
    /* the queue counts */
    METRICS_QUEUE queues[METRICS_QUEUES];
    struct timespec scanned; /* CLOCK_MONOTONIC; 0: never */
    double scan_seconds;
} METRICS_CTX;

/* One HTTP connection. */
struct METRICS_CONN {
    METRICS_CTX *ctx;
    struct bufferevent *bev;
    bool answered; /* the reply is queued: close once it is out */
    METRICS_CONN *prev;
    METRICS_CONN *next;
};

/* metrics_label_append - append name="value" (escaped) to out, with a
   comma before it unless out is empty */
static void metrics_label_append(VSTR *out, const char *name, const char *value)
{
    if (vstr_len(out) > 0)
        vstr_addch(out, ',');
    vstr_sprintf_append(out, "%s=\"", name);
    for (const char *cp = value; *cp; cp++) {
        if (*cp == '\\' || *cp == '"')
            vstr_addch(out, '\\');
        if (*cp == '\n')
            vstr_cat(out, "\\n");
        else
            vstr_addch(out, *cp);
    }
    vstr_addch(out, '"');
}

/* metrics_label_provider - the shaping provider of an event: its own
   "provider" field when the journal has one, else the rule whose MX
   suffixes the relay's host name ends in, else METRICS_OTHER */
static const char *metrics_label_provider(const METRICS_CTX *ctx, json_t *event,
                                          VSTR *buf)
{
    const char *given = json_string_value(json_object_get(event, "provider"));
    const char *relay = json_string_value(json_object_get(event, "relay"));
    const SHAPING_RULE *rule;
    const char *host;

    if (given != NULL && *given)
        return given;
    if (relay == NULL || ctx->shaping == NULL)
        return METRICS_OTHER;
    vstr_ncpy(buf, relay, strcspn(relay, "[:"));
    host = vstr_str(buf);
    if ((rule = shaping_rules_provider(ctx->shaping, &host, 1)) == NULL)
        return METRICS_OTHER;
    return rule->key + strlen(SHAPING_PROVIDER_PREFIX);
}

/* metrics_label_pool - the event's pool when smtp_source_pools has it,
   else METRICS_OTHER */
static const char *metrics_label_pool(const METRICS_CTX *ctx, json_t *event,
                                      VSTR *buf)
{
    const char *given = json_string_value(json_object_get(event, "pool"));
    const SOURCE_POOL *pool;

    if (given == NULL || ctx->pools == NULL ||
        (pool = source_pools_find(ctx->pools, given)) == NULL)
        return METRICS_OTHER;
    return pool->name;
}

/* metrics_label_source - the event's source IP when it is a source of
   smtp_source_pools, else METRICS_OTHER */
static const char *metrics_label_source(const METRICS_CTX *ctx, json_t *event,
                                        VSTR *buf)
{
    const char *given = json_string_value(json_object_get(event, "source_ip"));

    if (given == NULL || ctx->pools == NULL)
        return METRICS_OTHER;
    for (size_t i = 0; i < ctx->pools->count; i++) {
        const SOURCE_POOL *pool = &ctx->pools->pools[i];

        for (size_t j = 0; j < pool->count; j++)
            if (strcasecmp(pool->sources[j].address, given) == 0)
                return pool->sources[j].address;
    }
    return METRICS_OTHER;
}

/* The labels every journal metric has beyond its own (status): one line
   each. A label's value must come from a bounded set. */
static const struct {
    const char *name;
    const char *(*value)(const METRICS_CTX *ctx, json_t *event, VSTR *buf);
} metrics_event_labels[] = {
    {"provider", metrics_label_provider},
    {"pool", metrics_label_pool},
    {"source_ip", metrics_label_source},
};

/* metrics_event_label_set - render the labels of an event into out, after
   what out already holds */
static void metrics_event_label_set(const METRICS_CTX *ctx, json_t *event,
                                    VSTR *out)
{
    VSTR *buf = vstr_alloc(64);

    for (size_t i = 0;
         i < sizeof(metrics_event_labels) / sizeof(metrics_event_labels[0]);
         i++)
        metrics_label_append(out, metrics_event_labels[i].name,
                             metrics_event_labels[i].value(ctx, event, buf));
    vstr_free(buf);
}

/* metrics_series - the series of family with labels, made when new */
static METRICS_SERIES *metrics_series(METRICS_FAMILY *family,
                                      const char *labels)
{
    METRICS_SERIES *series = htable_find(family->series, labels);

    if (series == NULL) {
        series = mycalloc(1, sizeof(*series));
        htable_enter(family->series, labels, series);
    }
    return series;
}

/* metrics_observe - one observation into a histogram's series */
static void metrics_observe(const METRICS_FAMILY *family,
                            METRICS_SERIES *series, double value)
{
    series->count++;
    series->sum += value;
    for (size_t i = 0; i < family->nbounds; i++)
        if (value <= family->bounds[i])
            series->buckets[i]++;
}

/* metrics_tls_version - the label of a TLS version: a known one, else
   METRICS_OTHER */
static const char *metrics_tls_version(const char *version)
{
    for (size_t i = 0;
         i < sizeof(metrics_tls_versions) / sizeof(metrics_tls_versions[0]);
         i++)
        if (strcmp(version, metrics_tls_versions[i]) == 0)
            return metrics_tls_versions[i];
    return METRICS_OTHER;
}

/* metrics_event_timing - an agent's result: its attempt's latency, and
   for the first result over a new connection (connect_seconds: once per
   connection) the setup time and, over TLS, one outgoing TLS session */
static void metrics_event_timing(METRICS_CTX *ctx, json_t *event)
{
    json_t *attempt = json_object_get(event, "attempt_seconds");
    json_t *connect = json_object_get(event, "connect_seconds");
    json_t *tls = json_object_get(event, "tls");
    VSTR *labels = vstr_alloc(64);
    VSTR *buf = vstr_alloc(64);

    metrics_label_append(labels, "provider",
                         metrics_label_provider(ctx, event, buf));
    if (json_is_number(attempt) && json_number_value(attempt) >= 0)
        metrics_observe(&ctx->attempt,
                        metrics_series(&ctx->attempt, vstr_str(labels)),
                        json_number_value(attempt));
    if (json_is_number(connect) && json_number_value(connect) >= 0) {
        const char *version =
            json_string_value(json_object_get(tls, "version"));

        metrics_observe(&ctx->connect,
                        metrics_series(&ctx->connect, vstr_str(labels)),
                        json_number_value(connect));
        if (version != NULL) {
            vstr_reset(labels);
            metrics_label_append(labels, "direction", "out");
            metrics_label_append(labels, "version",
                                 metrics_tls_version(version));
            metrics_series(&ctx->tls, vstr_str(labels))->value++;
        }
    }
    vstr_free(buf);
    vstr_free(labels);
}

/* metrics_event - count one journal line */
static void metrics_event(METRICS_CTX *ctx, const char *line, size_t len)
{
    json_error_t err;
    json_t *event = json_loadb(line, len, 0, &err);
    const char *kind;
    VSTR *labels;

    if (event == NULL || !json_is_object(event)) {
        msg_warn("journal line not JSON: %s", err.text);
        json_decref(event);
        return;
    }
    kind = json_string_value(json_object_get(event, "kind"));
    if (kind == NULL) {
        json_decref(event);
        return;
    }
    labels = vstr_alloc(64);
    if (strcmp(kind, EVENTS_RECEIVED) == 0) {
        metrics_series(&ctx->received, "")->value++;
    } else if (strcmp(kind, EVENTS_DELIVERED) == 0 ||
               strcmp(kind, EVENTS_DEFERRED) == 0 ||
               strcmp(kind, EVENTS_BOUNCED) == 0 ||
               strcmp(kind, EVENTS_EXPIRED) == 0) {
        metrics_label_append(labels, "status", kind);
        metrics_event_label_set(ctx, event, labels);
        metrics_series(&ctx->deliveries, vstr_str(labels))->value++;
        if (strcmp(kind, EVENTS_DELIVERED) == 0) {
            json_t *delay = json_object_get(event, "delay");
            METRICS_SERIES *series;
            double seconds;

            vstr_reset(labels);
            metrics_event_label_set(ctx, event, labels);
            series = metrics_series(&ctx->delay, vstr_str(labels));
            seconds = json_is_number(delay) ? json_number_value(delay) : 0;
            metrics_observe(&ctx->delay, series, seconds);
        }
        metrics_event_timing(ctx, event);
    }
    vstr_free(labels);
    json_decref(event);
}

/* metrics_pid_alive - does the journal writer pid still run? */
static bool metrics_pid_alive(long pid)
{
    return kill((pid_t) pid, 0) == 0 || errno == EPERM;
}

/* metrics_segment_read - count the whole lines of segment seg from offset
   on (at most METRICS_READ_MAX bytes); the new offset */
static long long metrics_segment_read(METRICS_CTX *ctx,
                                      const EVENTS_SEG_INFO *seg,
                                      long long offset)
{
    VSTR *path = vstr_alloc(100);
    long long want = seg->size - offset;
    char *data;
    ssize_t got;
    size_t whole;
    int fd;

    if (want > METRICS_READ_MAX)
        want = METRICS_READ_MAX;
    vstr_sprintf(path, "%s/%s", ctx->events_dir, seg->name);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)
            msg_warn("open %s: %m", vstr_str(path));
        vstr_free(path);
        return offset;
    }
    data = mymalloc((size_t) want + 1);
    got = pread(fd, data, (size_t) want, offset);
    (void) close(fd);
    if (got < 0) {
        msg_warn("read %s: %m", vstr_str(path));
        got = 0;
    }
    whole = events_whole_length(data, (size_t) got);
    for (size_t start = 0; start < whole;) {
        const char *nl = memchr(data + start, '\n', whole - start);
        size_t end = (size_t) (nl - data);

        if (end > start)
            metrics_event(ctx, data + start, end - start);
        start = end + 1;
    }
    myfree(data);
    vstr_free(path);
    return offset + (long long) whole;
}

/* metrics_journal_follow - count the events written since the last pass;
   the first pass only notes where the journal ends */
static void metrics_journal_follow(METRICS_CTX *ctx)
{
    VSTR *why = vstr_alloc(100);
    EVENTS_LIST *list = events_list(ctx->events_dir, why);

    if (list == NULL) {
        msg_warn("%s", vstr_str(why));
        vstr_free(why);
        return;
    }
    events_list_mark_finished(list, metrics_pid_alive);
    for (size_t i = 0; i < list->count; i++) {
        const EVENTS_SEG_INFO *seg = &list->segs[i];
        long long offset = events_pos_offset(ctx->pos, seg->name);

        if (offset < 0)
            continue;
        if (!ctx->pos_started || offset > seg->size) {
            /* The start, or a writer's failed batch cut off after we read
               it (events.c): go on from the end. */
            events_pos_set(ctx->pos, seg->name, seg->size);
            ctx->dirty = true;
        } else if (offset < seg->size) {
            long long now = metrics_segment_read(ctx, seg, offset);

            if (now != offset) {
                events_pos_set(ctx->pos, seg->name, now);
                ctx->dirty = true;
            }
        }
    }
    if (!ctx->pos_started)
        ctx->dirty = true;
    ctx->pos_started = true;
    if (events_pos_advance(ctx->pos, list))
        ctx->dirty = true;
    events_list_free(list);
    vstr_free(why);
}

/* metrics_series_free - htable_free's value function */
static void metrics_series_free(void *series)
{
    myfree(series);
}

/* metrics_families_reset - every journal counter back to none */
static void metrics_families_reset(METRICS_CTX *ctx)
{
    for (size_t f = 0; f < ctx->nfamilies; f++) {
        htable_free(ctx->families[f]->series, metrics_series_free);
        ctx->families[f]->series = htable_alloc(16);
    }
}

/* metrics_state_save - replace the state file (counters and position),
   then the position file, durably; a failure is logged and tried again
   at the next tick (the events daemon keeps holding at the old position) */
static void metrics_state_save(METRICS_CTX *ctx)
{
    json_t *root = json_object();
    json_t *list = json_array();
    VSTR *text = vstr_alloc(200);
    VSTR *why = vstr_alloc(100);
    char *data;

    events_pos_format(ctx->pos, text);
    json_object_set_new(root, "format", json_string(METRICS_STATE_MAGIC));
    json_object_set_new(root, "position", json_string(vstr_str(text)));
    for (size_t f = 0; f < ctx->nfamilies; f++) {
        const METRICS_FAMILY *family = ctx->families[f];
        HTABLE_ITER iter;
        const char *key;
        void *value;

        htable_iter_init(&iter, family->series);
        while (htable_iter_next(&iter, &key, &value)) {
            const METRICS_SERIES *series = value;
            json_t *obj = json_object();
            json_t *buckets = json_array();

            for (size_t b = 0; b < family->nbounds; b++)
                json_array_append_new(
                    buckets, json_integer((json_int_t) series->buckets[b]));
            json_object_set_new(obj, "family", json_string(family->name));
            json_object_set_new(obj, "labels", json_string(key));
            json_object_set_new(obj, "value", json_real(series->value));
            json_object_set_new(obj, "sum", json_real(series->sum));
            json_object_set_new(obj, "count",
                                json_integer((json_int_t) series->count));
            json_object_set_new(obj, "buckets", buckets);
            json_array_append_new(list, obj);
        }
    }
    json_object_set_new(root, "series", list);
    data = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(root);
    if (data == NULL) {
        msg_warn("cannot make the text of %s", vstr_str(ctx->state_path));
    } else if (safe_file_write(vstr_str(ctx->state_path), data, strlen(data),
                               0600) < 0) {
        msg_warn("write %s: %m; the counters are saved at the next tick",
                 vstr_str(ctx->state_path));
    } else if (events_pos_save(ctx->pos, vstr_str(ctx->pos_path), why) < 0) {
        msg_warn("%s; saved again at the next tick", vstr_str(why));
    } else {
        ctx->dirty = false;
    }
    free(data);
    vstr_free(text);
    vstr_free(why);
}

/* metrics_state_family - the journal family called name, or NULL */
static METRICS_FAMILY *metrics_state_family(METRICS_CTX *ctx, const char *name)
{
    for (size_t f = 0; f < ctx->nfamilies; f++)
        if (strcmp(ctx->families[f]->name, name) == 0)
            return ctx->families[f];
    return NULL;
}

/* metrics_state_parse - counters and position from the state file's text;
   -1 with why (the counters and position are then left empty) */
static int metrics_state_parse(METRICS_CTX *ctx, const char *data, size_t len,
                               VSTR *why)
{
    json_error_t err;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    json_t *list;
    json_t *obj;
    const char *pos_text;
    size_t i;
    int skipped = 0;

    if (root == NULL) {
        vstr_sprintf(why, "not JSON: line %d: %s", err.line, err.text);
        return -1;
    }
    if (!json_is_object(root) ||
        json_string_value(json_object_get(root, "format")) == NULL ||
        strcmp(json_string_value(json_object_get(root, "format")),
               METRICS_STATE_MAGIC) != 0) {
        vstr_cpy(why, "has no format \"" METRICS_STATE_MAGIC "\"");
        json_decref(root);
        return -1;
    }
    if ((pos_text = json_string_value(json_object_get(root, "position"))) ==
        NULL) {
        vstr_cpy(why, "has no position");
        json_decref(root);
        return -1;
    }
    if (events_pos_parse(ctx->pos, pos_text, strlen(pos_text), why) < 0) {
        VSTR *what = vstr_alloc(100);

        vstr_sprintf(what, "position: %s", vstr_str(why));
        vstr_cpy(why, vstr_str(what));
        vstr_free(what);
        json_decref(root);
        return -1;
    }
    if (!json_is_array(list = json_object_get(root, "series"))) {
        vstr_cpy(why, "has no series list");
        events_pos_reset(ctx->pos);
        json_decref(root);
        return -1;
    }
    json_array_foreach(list, i, obj)
    {
        const char *name = json_string_value(json_object_get(obj, "family"));
        const char *labels = json_string_value(json_object_get(obj, "labels"));
        json_t *value = json_object_get(obj, "value");
        json_t *sum = json_object_get(obj, "sum");
        json_t *count = json_object_get(obj, "count");
        json_t *buckets = json_object_get(obj, "buckets");
        METRICS_FAMILY *family;
        METRICS_SERIES *series;

        if (name == NULL || labels == NULL || !json_is_number(value) ||
            !json_is_number(sum) || !json_is_integer(count) ||
            json_integer_value(count) < 0 || !json_is_array(buckets)) {
            vstr_sprintf(why, "series %zu is not a series", i);
            metrics_families_reset(ctx);
            events_pos_reset(ctx->pos);
            json_decref(root);
            return -1;
        }
        /* A family this version no longer has, or whose buckets changed:
           its series start again at 0. */
        if ((family = metrics_state_family(ctx, name)) == NULL ||
            json_array_size(buckets) != family->nbounds) {
            skipped++;
            continue;
        }
        series = metrics_series(family, labels);
        series->value = json_number_value(value);
        series->sum = json_number_value(sum);
        series->count = (unsigned long long) json_integer_value(count);
        for (size_t b = 0; b < family->nbounds; b++) {
            json_int_t n = json_integer_value(json_array_get(buckets, b));

            series->buckets[b] = n > 0 ? (unsigned long long) n : 0;
        }
    }
    if (skipped > 0)
        msg_info("%s: %d series of metrics this version does not keep (or "
                 "with other buckets) start again at 0",
                 vstr_str(ctx->state_path), skipped);
    json_decref(root);
    return 0;
}

/* metrics_state_load - the counters and position a predecessor saved */
static void metrics_state_load(METRICS_CTX *ctx)
{
    VSTR *why = vstr_alloc(100);
    size_t len;
    char *data =
        safe_file_read(vstr_str(ctx->state_path), METRICS_STATE_MAX, &len);

    if (data == NULL && errno == ENOENT) {
        ctx->pos_started = false; /* the first start: from the end */
    } else if (data == NULL) {
        msg_warn("read %s: %m", vstr_str(ctx->state_path));
    } else if (metrics_state_parse(ctx, data, len, why) == 0) {
        ctx->pos_started = true;
    } else {
        msg_warn("%s %s", vstr_str(ctx->state_path), vstr_str(why));
    }
    if (data != NULL && !ctx->pos_started) {
        /* Counters lost: count again from where the segments are held. */
        if (events_pos_load(ctx->pos, vstr_str(ctx->pos_path), why) < 0)
            msg_warn("%s; the counters start at 0 at the journal's end",
                     vstr_str(why));
        else
            ctx->pos_started = true;
        if (ctx->pos_started)
            msg_warn("the counters start at 0 at the position of %s",
                     vstr_str(ctx->pos_path));
    }
    myfree(data);
    vstr_free(why);
}

/* metrics_elapsed - seconds from since to now (CLOCK_MONOTONIC) */
static double metrics_elapsed(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double) (now.tv_sec - since->tv_sec) +
           (double) (now.tv_nsec - since->tv_nsec) / 1e9;
}

/* metrics_dir_count - add the queue files of dir to queue */
static void metrics_dir_count(const char *dir, METRICS_QUEUE *queue)
{
    DIR *dp;
    struct dirent *de;

    if ((dp = opendir(dir)) == NULL) {
        if (errno != ENOENT)
            msg_warn("opendir %s: %m", dir);
        return;
    }
    while ((de = readdir(dp)) != NULL) {
        if (!qid_valid(de->d_name))
            continue;
        queue->messages++;
        if (queue->oldest[0] == 0 || strcmp(de->d_name, queue->oldest) < 0)
            memcpy(queue->oldest, de->d_name, QID_SIZE);
    }
    closedir(dp);
}

/* metrics_queue_scan - count the queues again, unless the last count is
   recent (see the head of this file) */
static void metrics_queue_scan(METRICS_CTX *ctx)
{
    VSTR *dir = vstr_alloc(100);
    struct timespec start;
    double wait = (double) ctx->scan_interval;

    if (wait < 10 * ctx->scan_seconds)
        wait = 10 * ctx->scan_seconds;
    if (ctx->scanned.tv_sec != 0 && metrics_elapsed(&ctx->scanned) < wait) {
        vstr_free(dir);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (size_t i = 0; i < METRICS_QUEUES; i++) {
        METRICS_QUEUE *queue = &ctx->queues[i];

        queue->messages = 0;
        queue->oldest[0] = 0;
        if (!mail_queue_hashed(metrics_queues[i])) {
            vstr_sprintf(dir, "%s/%s", ctx->queue_dir, metrics_queues[i]);
            metrics_dir_count(vstr_str(dir), queue);
            continue;
        }
        for (size_t h = 0; h < MAIL_QUEUE_HASH_COUNT; h++) {
            vstr_sprintf(dir, "%s/%s/%c", ctx->queue_dir, metrics_queues[i],
                         mail_queue_hash_chars[h]);
            metrics_dir_count(vstr_str(dir), queue);
        }
    }
    ctx->scan_seconds = metrics_elapsed(&start);
    clock_gettime(CLOCK_MONOTONIC, &ctx->scanned);
    vstr_free(dir);
}

/* metrics_key_cmp - qsort order of label strings */
static int metrics_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* metrics_family_render - append a family's HELP, TYPE and series */
static void metrics_family_render(const METRICS_FAMILY *family, VSTR *out)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    const char **keys = NULL;
    size_t count = 0;
    size_t cap = 0;

    vstr_sprintf_append(out, "# HELP %s %s\n# TYPE %s %s\n", family->name,
                        family->help, family->name, family->type);
    htable_iter_init(&iter, family->series);
    while (htable_iter_next(&iter, &key, &value)) {
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            keys = myrealloc(keys, cap * sizeof(*keys));
        }
        keys[count++] = key;
    }
    if (count > 1)
        qsort(keys, count, sizeof(*keys), metrics_key_cmp);
    for (size_t i = 0; i < count; i++) {
        const METRICS_SERIES *series = htable_find(family->series, keys[i]);
        const char *sep = *keys[i] ? "," : "";

        if (strcmp(family->type, "histogram") != 0) {
            vstr_sprintf_append(out, "%s%s%s%s %.17g\n", family->name,
                                *keys[i] ? "{" : "", keys[i],
                                *keys[i] ? "}" : "", series->value);
            continue;
        }
        for (size_t b = 0; b < family->nbounds; b++)
            vstr_sprintf_append(out, "%s_bucket{%s%sle=\"%g\"} %llu\n",
                                family->name, keys[i], sep, family->bounds[b],
                                series->buckets[b]);
        vstr_sprintf_append(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n",
                            family->name, keys[i], sep, series->count);
        vstr_sprintf_append(out, "%s_sum%s%s%s %.17g\n", family->name,
                            *keys[i] ? "{" : "", keys[i], *keys[i] ? "}" : "",
                            series->sum);
        vstr_sprintf_append(out, "%s_count%s%s%s %llu\n", family->name,
                            *keys[i] ? "{" : "", keys[i], *keys[i] ? "}" : "",
                            series->count);
    }
    myfree(keys);
}

/* metrics_render_queues - the queue gauges */
static void metrics_render_queues(METRICS_CTX *ctx, VSTR *out)
{
    time_t now = time(NULL);

    metrics_queue_scan(ctx);
    vstr_cat(out, "# HELP sluice_queue_messages Queue files in each queue.\n"
                  "# TYPE sluice_queue_messages gauge\n");
    for (size_t i = 0; i < METRICS_QUEUES; i++)
        vstr_sprintf_append(out, "sluice_queue_messages{queue=\"%s\"} %lld\n",
                            metrics_queues[i], ctx->queues[i].messages);
    vstr_cat(out, "# HELP sluice_queue_oldest_seconds Age of the oldest "
                  "message in each queue (0: empty).\n"
                  "# TYPE sluice_queue_oldest_seconds gauge\n");
    for (size_t i = 0; i < METRICS_QUEUES; i++) {
        long long age = 0;

        if (ctx->queues[i].oldest[0]) {
            time_t sec;
            long usec;

            qid_time(ctx->queues[i].oldest, &sec, &usec);
            age = now > sec ? (long long) (now - sec) : 0;
        }
        vstr_sprintf_append(out,
                            "sluice_queue_oldest_seconds{queue=\"%s\"} %lld\n",
                            metrics_queues[i], age);
    }
    vstr_sprintf_append(out,
                        "# HELP sluice_queue_scan_seconds How long the last "
                        "count of the queue directories took.\n"
                        "# TYPE sluice_queue_scan_seconds gauge\n"
                        "sluice_queue_scan_seconds %.6f\n",
                        ctx->scan_seconds);
}

/* metrics_render_backlog - journal bytes each exporter has not passed */
static void metrics_render_backlog(METRICS_CTX *ctx, VSTR *out)
{
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    VSTR *labels = vstr_alloc(100);
    EVENTS_LIST *list = events_list(ctx->events_dir, why);
    EVENTS_POS *pos = events_pos_alloc();
    long long total = 0;

    vstr_cat(out, "# HELP sluice_events_backlog_bytes Journal bytes an "
                  "exporter has not passed yet.\n"
                  "# TYPE sluice_events_backlog_bytes gauge\n");
    if (list == NULL)
        msg_warn("%s", vstr_str(why));
    for (size_t i = 0; list != NULL && i < list->count; i++)
        total += list->segs[i].size;
    for (size_t e = 0; list != NULL && e < ctx->exporters->count; e++) {
        const EVENTS_EXPORT *exp = &ctx->exporters->exports[e];
        long long backlog = 0;

        events_export_path(path, ctx->events_dir, exp->name,
                           EVENTS_EXPORT_POS_SUFFIX);
        events_pos_reset(pos);
        if (events_pos_load(pos, vstr_str(path), why) < 0) {
            msg_warn("%s", vstr_str(why));
            continue;
        }
        for (size_t i = 0; i < list->count; i++) {
            long long offset = events_pos_offset(pos, list->segs[i].name);

            if (offset >= 0 && offset < list->segs[i].size)
                backlog += list->segs[i].size - offset;
        }
        vstr_reset(labels);
        metrics_label_append(labels, "exporter", exp->name);
        metrics_label_append(labels, "kind", exp->kind);
        vstr_sprintf_append(out, "sluice_events_backlog_bytes{%s} %lld\n",
                            vstr_str(labels), backlog);
    }
    vstr_sprintf_append(out,
                        "# HELP sluice_events_journal_bytes Bytes the event "
                        "journal's segments hold.\n"
                        "# TYPE sluice_events_journal_bytes gauge\n"
                        "sluice_events_journal_bytes %lld\n",
                        total);
    events_pos_free(pos);
    events_list_free(list);
    vstr_free(labels);
    vstr_free(path);
    vstr_free(why);
}

/* metrics_render_restarts - master's counts of unasked deaths */
static void metrics_render_restarts(METRICS_CTX *ctx, VSTR *out)
{
    VSTR *path = vstr_alloc(100);
    VSTR *labels = vstr_alloc(100);
    char line[512];
    FILE *fp;

    vstr_cat(out, "# HELP sluice_process_restarts_total Processes of a "
                  "service that died unasked and were restarted.\n"
                  "# TYPE sluice_process_restarts_total counter\n");
    vstr_sprintf(path, "%s/%s/%s", ctx->queue_dir, MAIL_QUEUE_PID,
                 METRICS_MASTER_STATUS);
    if ((fp = fopen(vstr_str(path), "re")) == NULL) {
        if (errno != ENOENT)
            msg_warn("open %s: %m", vstr_str(path));
    } else if (fgets(line, sizeof(line), fp) == NULL ||
               strcmp(line, METRICS_MASTER_MAGIC "\n") != 0) {
        msg_warn("%s: not a master status file", vstr_str(path));
    } else {
        while (fgets(line, sizeof(line), fp) != NULL) {
            char name[128];
            char type[16];
            long long deaths;

            if (sscanf(line, "service %127s %15s %lld", name, type, &deaths) !=
                3)
                continue;
            vstr_reset(labels);
            metrics_label_append(labels, "service", name);
            metrics_label_append(labels, "type", type);
            vstr_sprintf_append(out, "sluice_process_restarts_total{%s} %lld\n",
                                vstr_str(labels), deaths);
        }
    }
    if (fp != NULL)
        fclose(fp);
    vstr_free(labels);
    vstr_free(path);
}

/* The per-provider gauges of qmgr's shaping state, in BUCKET order. */
static const char *const metrics_shaping_names[][2] = {
    {"sluice_shaping_connections", "Deliveries in flight to the provider."},
    {"sluice_shaping_max_connections",
     "The provider's connection limit (0: none)."},
    {"sluice_shaping_message_tokens",
     "Messages that could start at once under the provider's rate."},
    {"sluice_shaping_queued", "Deliveries waiting for the provider."},
    {"sluice_shaping_suspended_seconds",
     "Seconds the provider stays suspended (0: not suspended)."},
    {"sluice_shaping_automation_active",
     "1 while response automation holds the provider back."},
};
#define METRICS_SHAPING_GAUGES                                                 \
    (sizeof(metrics_shaping_names) / sizeof(metrics_shaping_names[0]))

/* metrics_shaping_ask - send "list" to qmgr on stream and keep each
   provider bucket's gauges (labels, then METRICS_SHAPING_GAUGES values)
   in rows; -1 with why */
static int metrics_shaping_ask(ATTR_STREAM *stream, ARGV *rows, VSTR *why)
{
    SHAPING_PROTO_REQUEST req = {.request = SHAPING_PROTO_REQ_LIST};
    ATTR_LIST *list = shaping_proto_hello_list();
    VSTR *row = vstr_alloc(100);
    int ret;

    ret = attr_stream_write(stream, list, why);
    list = attr_list_free(list);
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0)
        ret = shaping_proto_hello_take(list, why);
    list = attr_list_free(list);
    if (ret == 0) {
        list = shaping_proto_request_list(&req);
        ret = attr_stream_write(stream, list, why);
        list = attr_list_free(list);
    }
    while (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0) {
        SHAPING_PROTO_BUCKET b;
        SHAPING_PROTO_REPLY reply;

        if (!shaping_proto_is_bucket(list)) {
            ret = shaping_proto_reply_take(list, &reply, why);
            break;
        }
        if ((ret = shaping_proto_bucket_take(list, &b, why)) < 0)
            break;
        /* Domain buckets would make the label set unbounded. */
        if (strncmp(b.bucket, SHAPING_PROVIDER_PREFIX,
                    strlen(SHAPING_PROVIDER_PREFIX)) == 0) {
            vstr_reset(row);
            metrics_label_append(row, "provider",
                                 b.bucket + strlen(SHAPING_PROVIDER_PREFIX));
            argv_add(rows, vstr_str(row));
            vstr_sprintf(row, "%lld %lld %lld %lld %lld %d", b.connections,
                         b.max_connections, b.message_tokens, b.queued,
                         b.suspended, strcmp(b.automation, "-") != 0);
            argv_add(rows, vstr_str(row));
        }
        list = attr_list_free(list);
    }
    attr_list_free(list);
    vstr_free(row);
    return ret;
}

/* metrics_render_shaping - qmgr's shaping state per provider, asked on
   private/qmgr-shaping (answered from qmgr's memory; a scrape waits at
   most METRICS_SHAPING_WAIT_MS for it) */
static void metrics_render_shaping(METRICS_CTX *ctx, VSTR *out)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    ARGV *rows = argv_alloc(16);
    ATTR_STREAM *stream;
    bool up = false;
    int fd;

    mail_queue_service(path, ctx->queue_dir, MAIL_QUEUE_PRIVATE,
                       SHAPING_PROTO_SERVICE);
    if (ctx->shaping != NULL && (fd = sock_unix_connect(vstr_str(path))) >= 0) {
        stream = attr_stream_open(fd, SHAPING_PROTO_LIST_MAX,
                                  METRICS_SHAPING_WAIT_MS);
        if (metrics_shaping_ask(stream, rows, why) < 0)
            msg_warn("shaping state from qmgr: %s", vstr_str(why));
        else
            up = true;
        attr_stream_close(stream);
    }
    vstr_sprintf_append(out,
                        "# HELP sluice_shaping_up 1 when qmgr answered for "
                        "its shaping state (0: no rules, or no answer).\n"
                        "# TYPE sluice_shaping_up gauge\n"
                        "sluice_shaping_up %d\n",
                        up);
    for (size_t g = 0; up && g < METRICS_SHAPING_GAUGES; g++) {
        vstr_sprintf_append(
            out, "# HELP %s %s\n# TYPE %s gauge\n", metrics_shaping_names[g][0],
            metrics_shaping_names[g][1], metrics_shaping_names[g][0]);
        for (size_t r = 0; r + 1 < (size_t) rows->argc; r += 2) {
            const char *cp = rows->argv[r + 1];
            long long gauge = 0;

            for (size_t skip = 0; skip <= g; skip++)
                gauge = strtoll(cp, (char **) &cp, 10);
            vstr_sprintf_append(out, "%s{%s} %lld\n",
                                metrics_shaping_names[g][0], rows->argv[r],
                                gauge);
        }
    }
    argv_free(rows);
    vstr_free(why);
    vstr_free(path);
}

/* metrics_pool_ask - send "list" to qmgr's pool listener on stream; the
   state text into state; 0, or -1 with why */
static int metrics_pool_ask(ATTR_STREAM *stream, VSTR *state, VSTR *why)
{
    POOL_PROTO_REQUEST req = {.request = POOL_PROTO_REQ_LIST};
    POOL_PROTO_REPLY reply;
    ATTR_LIST *list = pool_proto_hello_list();
    int ret;

    ret = attr_stream_write(stream, list, why);
    list = attr_list_free(list);
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0)
        ret = pool_proto_hello_take(list, why);
    list = attr_list_free(list);
    if (ret == 0) {
        list = pool_proto_request_list(&req);
        ret = attr_stream_write(stream, list, why);
        list = attr_list_free(list);
    }
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0 &&
        (ret = pool_proto_reply_take(list, &reply, why)) == 0) {
        if (reply.status != POOL_PROTO_STAT_OK) {
            vstr_cpy(why, reply.reason ? reply.reason : "failed");
            ret = -1;
        } else {
            vstr_cpy(state, reply.state ? reply.state : "");
        }
    }
    attr_list_free(list);
    return ret;
}

/* The per-source gauges of qmgr's pool state. */
enum {
    METRICS_SOURCE_PAUSED,
    METRICS_SOURCE_BOUNCE,
    METRICS_SOURCE_BLOCK,
    METRICS_SOURCE_DAY,
    METRICS_SOURCE_CAP,
    METRICS_SOURCE_GAUGES
};
static const char *const metrics_source_names[][2] = {
    {"sluice_source_paused",
     "1 while the source is paused (circuit breaker, probe or operator)."},
    {"sluice_source_bounce_ratio",
     "Hard bounces per attempt in the source's reputation window."},
    {"sluice_source_block_ratio",
     "Block replies per attempt in the source's reputation window."},
    {"sluice_source_warmup_day",
     "The source's day of its warm-up schedule (sources with one)."},
    {"sluice_source_warmup_cap",
     "Messages the source may send today under its warm-up (sources with "
     "a cap)."},
};

/* metrics_source_gauge - gauge g of a state line; false: none */
static bool metrics_source_gauge(const POOL_STATE_LINE *line, int g,
                                 double *value)
{
    switch (g) {
    case METRICS_SOURCE_PAUSED:
        *value = strcmp(line->state, "active") != 0;
        return true;
    case METRICS_SOURCE_BOUNCE:
        *value = line->attempts > 0 ? (double) line->hard / line->attempts : 0;
        return true;
    case METRICS_SOURCE_BLOCK:
        *value = line->attempts > 0 ? (double) line->block / line->attempts : 0;
        return true;
    case METRICS_SOURCE_DAY:
        *value = (double) line->day;
        return line->day >= 0;
    default:
        *value = (double) line->cap;
        return line->cap >= 0;
    }
}

/* metrics_render_sources - qmgr's state of each source of
   smtp_source_pools, asked on private/qmgr-pool as `sluice pool` does (a
   scrape waits at most METRICS_POOL_WAIT_MS for it); only the configured
   sources, so the label set is bounded by the pools */
static void metrics_render_sources(METRICS_CTX *ctx, VSTR *out)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    VSTR *state = vstr_alloc(256);
    VSTR *label = vstr_alloc(64);
    ATTR_STREAM *stream;
    bool up = false;
    int fd;

    mail_queue_service(path, ctx->queue_dir, MAIL_QUEUE_PRIVATE,
                       POOL_PROTO_SERVICE);
    if (ctx->pools != NULL && (fd = sock_unix_connect(vstr_str(path))) >= 0) {
        stream =
            attr_stream_open(fd, POOL_PROTO_LIST_MAX, METRICS_POOL_WAIT_MS);
        if (metrics_pool_ask(stream, state, why) < 0)
            msg_warn("source state from qmgr: %s", vstr_str(why));
        else
            up = true;
        attr_stream_close(stream);
    }
    vstr_sprintf_append(out,
                        "# HELP sluice_source_up 1 when qmgr answered for "
                        "the state of its sources (0: no pools, or no "
                        "answer).\n"
                        "# TYPE sluice_source_up gauge\n"
                        "sluice_source_up %d\n",
                        up);
    for (int g = 0; up && g < METRICS_SOURCE_GAUGES; g++) {
        HTABLE *seen = htable_alloc(16);

        vstr_sprintf_append(
            out, "# HELP %s %s\n# TYPE %s gauge\n", metrics_source_names[g][0],
            metrics_source_names[g][1], metrics_source_names[g][0]);
        for (size_t i = 0; i < ctx->pools->count; i++) {
            const SOURCE_POOL *pool = &ctx->pools->pools[i];

            for (size_t j = 0; j < pool->count; j++) {
                const char *addr = pool->sources[j].address;
                POOL_STATE_LINE line;
                double value;

                /* A source in two pools is one source. */
                if (htable_find(seen, addr) != NULL)
                    continue;
                htable_enter(seen, addr, (void *) addr);
                (void) pool_state_find(vstr_str(state), addr, &line);
                if (!metrics_source_gauge(&line, g, &value))
                    continue;
                vstr_reset(label);
                metrics_label_append(label, "source", addr);
                vstr_sprintf_append(out, "%s{%s} %.17g\n",
                                    metrics_source_names[g][0], vstr_str(label),
                                    value);
            }
        }
        htable_free(seen, NULL);
    }
    vstr_free(label);
    vstr_free(state);
    vstr_free(why);
    vstr_free(path);
}

/* metrics_render_connections - smtpd sessions and smtp connections open
   now and opened so far, from the counts every smtpd and smtp process
   keeps in queue_directory/stats (conn_stats.h); the incoming TLS sessions go
   into the TLS family (set, not added: the file holds the totals) */
static void metrics_render_connections(METRICS_CTX *ctx, VSTR *out)
{
    static const char *const dirs[CONN_STATS_DIRS] = {"in", "out"};
    CONN_STATS_SUM sum;
    VSTR *why = vstr_alloc(100);
    VSTR *labels = vstr_alloc(64);

    if (conn_stats_read(ctx->queue_dir, &sum, metrics_pid_alive, why) < 0)
        msg_warn("%s", vstr_str(why));
    vstr_cat(out, "# HELP sluice_connections_active SMTP connections open "
                  "now: in, smtpd sessions; out, smtp connections (cached "
                  "idle ones too).\n"
                  "# TYPE sluice_connections_active gauge\n");
    for (int d = 0; d < CONN_STATS_DIRS; d++)
        vstr_sprintf_append(out,
                            "sluice_connections_active{direction=\"%s\"} "
                            "%lld\n",
                            dirs[d], sum.active[d]);
    vstr_cat(out, "# HELP sluice_connections_total SMTP connections "
                  "opened: in, smtpd sessions; out, smtp connections.\n"
                  "# TYPE sluice_connections_total counter\n");
    for (int d = 0; d < CONN_STATS_DIRS; d++)
        vstr_sprintf_append(out,
                            "sluice_connections_total{direction=\"%s\"} "
                            "%llu\n",
                            dirs[d], sum.sessions[d]);
    for (int v = 0; v < CONN_STATS_TLS_VERSIONS; v++) {
        if (sum.tls[CONN_STATS_IN][v] == 0)
            continue;
        vstr_reset(labels);
        metrics_label_append(labels, "direction", "in");
        metrics_label_append(labels, "version", conn_stats_tls_names[v]);
        metrics_series(&ctx->tls, vstr_str(labels))->value =
            (double) sum.tls[CONN_STATS_IN][v];
    }
    vstr_free(labels);
    vstr_free(why);
}

/* metrics_render - the whole exposition */
static void metrics_render(METRICS_CTX *ctx, VSTR *out)
{
    metrics_journal_follow(ctx);
    metrics_render_queues(ctx, out);
    metrics_family_render(&ctx->received, out);
    metrics_family_render(&ctx->deliveries, out);
    metrics_family_render(&ctx->delay, out);
    metrics_family_render(&ctx->attempt, out);
    metrics_family_render(&ctx->connect, out);
    metrics_render_connections(ctx, out);
    metrics_family_render(&ctx->tls, out);
    metrics_render_backlog(ctx, out);
    metrics_render_restarts(ctx, out);
    metrics_render_shaping(ctx, out);
    metrics_render_sources(ctx, out);
}

/* metrics_conn_free - close a connection and forget it */
static void metrics_conn_free(METRICS_CONN *conn)
{
    METRICS_CTX *ctx = conn->ctx;

    if (conn->prev)
        conn->prev->next = conn->next;
    else
        ctx->conns_head = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        ctx->conns_tail = conn->prev;
    ctx->conns--;
    bufferevent_free(conn->bev);
    myfree(conn);
}

/* metrics_reply - queue a whole reply; the connection closes once it is
   out */
static void metrics_reply(METRICS_CONN *conn, int status, const char *reason,
                          const char *type, const char *body, size_t len)
{
    struct evbuffer *output = bufferevent_get_output(conn->bev);

    evbuffer_add_printf(output,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        status, reason, type, len);
    evbuffer_add(output, body, len);
    conn->answered = true;
    bufferevent_disable(conn->bev, EV_READ);
}

/* metrics_request - answer a whole request whose first line is line */
static void metrics_request(METRICS_CONN *conn, const char *line)
{
    static const char not_found[] = "not found: try GET /metrics\n";
    ARGV *words = argv_split(line, " ");
    const char *path;

    if (words->argc != 3 || strncmp(words->argv[2], "HTTP/1.", 7) != 0) {
        metrics_reply(conn, 400, "Bad Request", "text/plain", "bad request\n",
                      12);
    } else if (path = words->argv[1], strcmp(path, "/metrics") != 0 &&
                                          strncmp(path, "/metrics?", 9) != 0) {
        metrics_reply(conn, 404, "Not Found", "text/plain", not_found,
                      sizeof(not_found) - 1);
    } else if (strcmp(words->argv[0], "GET") != 0) {
        metrics_reply(conn, 405, "Method Not Allowed", "text/plain",
                      "GET only\n", 9);
    } else {
        VSTR *body = vstr_alloc(4096);

        metrics_render(conn->ctx, body);
        metrics_reply(conn, 200, "OK", METRICS_CONTENT_TYPE, vstr_str(body),
                      vstr_len(body));
        vstr_free(body);
    }
    argv_free(words);
}

/* metrics_conn_read - wait for a whole request (line and headers) */
static void metrics_conn_read(struct bufferevent *bev, void *arg)
{
    METRICS_CONN *conn = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    struct evbuffer_ptr end;
    size_t line_len;
    char *line;

    if (conn->answered)
        return;
    end = evbuffer_search(input, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        end = evbuffer_search(input, "\n\n", 2, NULL);
    if (end.pos < 0 || end.pos > METRICS_REQUEST_MAX) {
        if (evbuffer_get_length(input) > METRICS_REQUEST_MAX)
            metrics_reply(conn, 431, "Request Header Fields Too Large",
                          "text/plain", "request too large\n", 18);
        return;
    }
    line = evbuffer_readln(input, &line_len, EVBUFFER_EOL_CRLF);
    metrics_request(conn, line ? line : "");
    free(line);
}

/* metrics_conn_write - the reply is out: close */
static void metrics_conn_write(struct bufferevent *bev, void *arg)
{
    METRICS_CONN *conn = arg;

    if (conn->answered)
        metrics_conn_free(conn);
}

/* metrics_conn_event - EOF, an error or the idle time: close */
static void metrics_conn_event(struct bufferevent *bev, short what, void *arg)
{
    metrics_conn_free(arg);
}

/* metrics_accept - a new connection; at the cap the oldest makes room */
static void metrics_accept(struct evconnlistener *listener, evutil_socket_t fd,
                           struct sockaddr *addr, int addrlen, void *arg)
{
    METRICS_CTX *ctx = arg;
    METRICS_CONN *conn;
    struct timeval tv = {ctx->timeout, 0};

    if (ctx->conns >= ctx->max_conns)
        metrics_conn_free(ctx->conns_head);
    conn = mycalloc(1, sizeof(*conn));
    conn->ctx = ctx;
    if ((conn->bev = bufferevent_socket_new(mail_server_base(ctx->server), fd,
                                            BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        msg_warn("cannot make a bufferevent");
        (void) close(fd);
        myfree(conn);
        return;
    }
    conn->prev = ctx->conns_tail;
    if (ctx->conns_tail)
        ctx->conns_tail->next = conn;
    else
        ctx->conns_head = conn;
    ctx->conns_tail = conn;
    ctx->conns++;
    bufferevent_setcb(conn->bev, metrics_conn_read, metrics_conn_write,
                      metrics_conn_event, conn);
    bufferevent_set_timeouts(conn->bev, &tv, &tv);
    /* Stop reading past the bound: the read callback answers 431. */
    bufferevent_setwatermark(conn->bev, EV_READ, 0, METRICS_REQUEST_MAX + 1);
    bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
}

/* metrics_pre_loop - read the configuration, start serving */
static void metrics_pre_loop(MAIL_SERVER *server, void *arg)
{
    METRICS_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    const char *listen_addr = mail_conf_str(conf, "metrics_listen");
    VSTR *why = vstr_alloc(100);
    int fd;

    ctx->server = server;
    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    ctx->events_dir = mystrdup(mail_conf_str(conf, "events_directory"));
    ctx->timeout = (int) mail_conf_time(conf, "metrics_timeout");
    ctx->max_conns = (int) mail_conf_int(conf, "metrics_max_connections");
    ctx->scan_interval = mail_conf_time(conf, "metrics_queue_scan_interval");
    ctx->shaping = shaping_rules_load(
        "smtp_shaping_maps", mail_conf_str(conf, "smtp_shaping_maps"), why);
    if (ctx->shaping == NULL && vstr_len(why) > 0)
        msg_warn("%s; every provider label is \"%s\"", vstr_str(why),
                 METRICS_OTHER);
    vstr_reset(why);
    ctx->pools = source_pools_load(
        "smtp_source_pools", mail_conf_str(conf, "smtp_source_pools"), why);
    if (ctx->pools == NULL && vstr_len(why) > 0)
        msg_warn("%s; every pool and source_ip label is \"%s\"", vstr_str(why),
                 METRICS_OTHER);
    ctx->exporters = events_export_list(conf);
    ctx->pos = events_pos_alloc();
    ctx->received = (METRICS_FAMILY){
        "sluice_messages_received_total",
        "counter",
        "Messages the queue manager took in (journal: received).",
        NULL,
        0,
        htable_alloc(1)};
    ctx->deliveries = (METRICS_FAMILY){
        "sluice_deliveries_total",
        "counter",
        "Recipients delivered, deferred, bounced or expired (journal).",
        NULL,
        0,
        htable_alloc(64)};
    ctx->delay = (METRICS_FAMILY){
        "sluice_delivery_delay_seconds",
        "histogram",
        "Time from arrival to delivery of each delivered recipient.",
        metrics_delay_buckets,
        sizeof(metrics_delay_buckets) / sizeof(metrics_delay_buckets[0]),
        htable_alloc(16)};
    ctx->attempt = (METRICS_FAMILY){
        "sluice_delivery_attempt_seconds", "histogram",
        "Latency of each delivery attempt of an SMTP agent (its request to "
        "the recipient's result), by provider.",
        METRICS_BOUNDS(metrics_attempt_buckets), htable_alloc(16)};
    ctx->connect = (METRICS_FAMILY){
        "sluice_smtp_connect_seconds", "histogram",
        "Setup time of each new outgoing SMTP connection (DNS, connect, "
        "greeting, EHLO, TLS), by provider.",
        METRICS_BOUNDS(metrics_connect_buckets), htable_alloc(16)};
    ctx->tls = (METRICS_FAMILY){
        "sluice_tls_sessions_total",
        "counter",
        "TLS sessions by direction (in: smtpd, out: smtp) and protocol "
        "version.",
        NULL,
        0,
        htable_alloc(16)};
    ctx->families[ctx->nfamilies++] = &ctx->received;
    ctx->families[ctx->nfamilies++] = &ctx->deliveries;
    ctx->families[ctx->nfamilies++] = &ctx->delay;
    ctx->families[ctx->nfamilies++] = &ctx->attempt;
    ctx->families[ctx->nfamilies++] = &ctx->connect;
    ctx->families[ctx->nfamilies++] = &ctx->tls;
    vstr_free(why);
    if (*listen_addr == 0) {
        msg_info("metrics_listen is empty: the metrics endpoint is off");
        return;
    }
    {
        VSTR *name = vstr_alloc(40);
        VSTR *sub = vstr_alloc(100);

        events_export_name(name, EVENTS_EXPORT_METRICS,
                           EVENTS_EXPORT_METRICS_TARGET);
        ctx->pos_path = vstr_alloc(100);
        ctx->state_path = vstr_alloc(100);
        events_export_path(ctx->pos_path, ctx->events_dir, vstr_str(name),
                           EVENTS_EXPORT_POS_SUFFIX);
        events_export_path(ctx->state_path, ctx->events_dir, vstr_str(name),
                           METRICS_STATE_SUFFIX);
        vstr_sprintf(sub, "%s/%s", ctx->events_dir, EVENTS_POS_DIR);
        if (mkdir(ctx->events_dir, 0700) < 0 && errno != EEXIST)
            msg_fatal("create %s: %m", ctx->events_dir);
        if (mkdir(vstr_str(sub), 0700) < 0 && errno != EEXIST)
            msg_fatal("create %s: %m", vstr_str(sub));
        vstr_free(sub);
        vstr_free(name);
    }
    metrics_state_load(ctx);
    metrics_journal_follow(ctx);
    metrics_state_save(ctx);
    fd = own_listen("metrics_listen", listen_addr, METRICS_LISTEN_BACKLOG);
    if ((ctx->listener = evconnlistener_new(
             mail_server_base(server), metrics_accept, ctx,
             LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd)) == NULL)
        msg_fatal("metrics_listen = %s: cannot listen", listen_addr);
    msg_info("metrics on %s", listen_addr);
}

/* metrics_tick - keep up with the journal between scrapes */
static void metrics_tick(MAIL_SERVER *server, void *arg)
{
    METRICS_CTX *ctx = arg;

    if (ctx->listener != NULL) {
        metrics_journal_follow(ctx);
        if (ctx->dirty)
            metrics_state_save(ctx);
    }
}

/* metrics_post_loop - free what lives on the event base */
static void metrics_post_loop(MAIL_SERVER *server, void *arg)
{
    METRICS_CTX *ctx = arg;

    while (ctx->conns_head != NULL)
        metrics_conn_free(ctx->conns_head);
    if (ctx->listener != NULL && ctx->dirty)
        metrics_state_save(ctx);
    if (ctx->listener != NULL)
        evconnlistener_free(ctx->listener);
    ctx->listener = NULL;
}

/* main - the metrics daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = metrics_pre_loop,
        .on_trigger = NULL,
        .on_tick = metrics_tick,
        .tick_seconds = METRICS_TICK,
        .on_retire = NULL,
        .post_loop = metrics_post_loop,
    };
    METRICS_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "metrics", &ops, &ctx);
    myfree(ctx.queue_dir);
    myfree(ctx.events_dir);
    if (ctx.shaping != NULL)
        shaping_rules_free(ctx.shaping);
    if (ctx.pools != NULL)
        source_pools_free(ctx.pools);
    if (ctx.exporters != NULL)
        events_export_list_free(ctx.exporters);
    if (ctx.pos != NULL)
        events_pos_free(ctx.pos);
    if (ctx.pos_path != NULL) {
        vstr_free(ctx.pos_path);
        vstr_free(ctx.state_path);
    }
    for (size_t f = 0; f < ctx.nfamilies; f++)
        htable_free(ctx.families[f]->series, metrics_series_free);
    return status;
}
