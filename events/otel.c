/*
 * otel - the events daemon's OpenTelemetry backend: spans from the
 * journal, exported as OTLP/HTTP JSON (libcurl)
 *
 * Why here: the events daemon already follows the journal durably, in
 * batches, off the mail path, with retries, a back-off and a max age
 * (exporter.c). Spans made from the events inherit all of it: a collector
 * that is down or slow holds only this exporter's position (the journal
 * keeps the events meanwhile), never a delivery; a batch it refuses for
 * longer than otel_exporter_otlp_max_age goes to the exporter's
 * dead-letter file and is dropped from the export. No daemon on the mail
 * path talks to the collector.
 *
 * Each event carries its message's trace (global/trace.h): trace_id and
 * traceparent=00-TRACEID-PARENTID-FLAGS. Events of traces whose flags say
 * "not sampled" make no span. The spans:
 *
 *   receive    (kind received) from arrival (ts - delay: the queue
 *              file's T record to the microsecond) to the moment
 *              qmgr took the committed file (ts): the smtpd/api session,
 *              cleanup and its commit; parent: the submitter's span
 *              (PARENTID), none for a trace started here; span id
 *              trace_span_id(TRACEID, QID "/receive")
 *   commit     (kind received, when it has committed_at) cleanup's work
 *              on the message: from the arrival (ts - delay: when cleanup
 *              began the message, the queue file's T record, which
 *              includes receiving the content through it, the header and
 *              body checks and DKIM signing) to committed_at (the queue
 *              file's ctime in incoming/: cleanup's rename that made it
 *              durable), kept inside the receive span; with the queue id,
 *              size and recipients; INTERNAL; parent: receive; span id
 *              from the event id + "/commit". None for a received event
 *              without committed_at (cleanup's, of a held message; one
 *              qmgr found in active/ at start). The rest of receive,
 *              after commit, is the wait until qmgr took the file.
 *   delivery   one per delivery attempt and recipient (delivered,
 *              deferred, bounced, expired), from ts - attempt_seconds
 *              (the agent's request; without it, a point at ts) to ts,
 *              with the remote host (server.address), the reply, the
 *              enhanced status code and, when the connection had TLS,
 *              tls.protocol.name, tls.protocol.version ("1.3"),
 *              tls.cipher and sluice.tls.level (Verified, Trusted,
 *              Untrusted, Anonymous: the event's "tls" object); status
 *              ERROR unless delivered; parent: receive
 *   queue wait one before each delivery span whose event has queued_at
 *              (delivered, deferred, bounced: global/events.h), from
 *              queued_at (when the recipient last became eligible for
 *              delivery) to the attempt's start, with the recipient and
 *              the attempt's number (sluice.attempt); INTERNAL; parent:
 *              receive; span id from the event id + "/queue_wait"
 *   dsn        (kind returned) the delivery status notification; parent:
 *              receive
 *
 * Span ids come from the trace id and the event's id, so a batch sent
 * again makes the same spans. One POST per batch of
 * events_webhook_batch_size events:
 *
 *   POST {otel_exporter_otlp_endpoint}/v1/traces
 *   Content-Type: application/json
 *
 *   {"resourceSpans":[{"resource":{...service.name "sluice"...},
 *     "scopeSpans":[{"scope":{"name":"sluice"},"spans":[...]}]}]}
 *
 * A 2xx answer is success; anything else is a failure the framework
 * retries. A batch with no sampled span is done without a POST.
 *
 * libcurl runs non-blocking under the daemon's libevent loop through its
 * multi-socket interface (global/curl_event.h), which hands the ended
 * POST to otel_done.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "curl_event.h"
#include "events_stats.h"
#include "exporter.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "trace.h"
#include "vstr.h"

#define OTEL_REPLY_MAX 512 /* of the answer's body, for the log */
#define OTEL_STATUS_OK 1 /* OTLP Status.code */
#define OTEL_STATUS_ERROR 2
#define OTEL_KIND_SERVER 2 /* OTLP Span.kind */
#define OTEL_KIND_CLIENT 3
#define OTEL_KIND_INTERNAL 1

typedef struct OTEL {
    EXPORTER *exp;
    char *url;
    char *host; /* host.name of the resource */
    long long timeout;
    long long max_age;
    CURL_EVENT *curl; /* libcurl on the daemon's loop */
    CURLM *multi; /* its multi handle */
    CURL *easy; /* the POST in flight, or NULL */
    struct curl_slist *headers;
    struct event *empty_ev; /* a batch without spans: done from the loop */
    char *body;
    VSTR *reply;
    char error[CURL_ERROR_SIZE];
} OTEL;

/* otel_write - libcurl's answer body: keep the start, for the log */
static size_t otel_write(char *data, size_t size, size_t nmemb, void *arg)
{
    OTEL *otel = arg;
    size_t len = size * nmemb;

    if (vstr_len(otel->reply) < OTEL_REPLY_MAX)
        vstr_ncat(otel->reply, data,
                  len < OTEL_REPLY_MAX - vstr_len(otel->reply)
                      ? len
                      : OTEL_REPLY_MAX - vstr_len(otel->reply));
    return len;
}

/* otel_finish - the POST is over: tell the framework */
static void otel_finish(OTEL *otel, CURLcode code)
{
    VSTR *why = vstr_alloc(100);
    bool ok =
        curl_event_post_ok(otel->easy, code, otel->error, otel->reply, why);

    (void) curl_multi_remove_handle(otel->multi, otel->easy);
    curl_easy_cleanup(otel->easy);
    otel->easy = NULL;
    curl_slist_free_all(otel->headers);
    otel->headers = NULL;
    free(otel->body);
    otel->body = NULL;
    exporter_done(otel->exp, ok, vstr_str(why));
    vstr_free(why);
}

/* otel_done - a transfer ended: the POST in flight? */
static void otel_done(CURL *easy, CURLcode result, void *arg)
{
    OTEL *otel = arg;

    if (otel->easy != NULL && easy == otel->easy)
        otel_finish(otel, result);
}

/* otel_empty_event - a batch without spans is done */
static void otel_empty_event(evutil_socket_t fd, short what, void *arg)
{
    OTEL *otel = arg;

    exporter_done(otel->exp, true, "");
}

/* otel_nanos - an event's ts as Unix nanoseconds (decimal text, as OTLP
   JSON wants 64-bit numbers), minus back seconds; false when ts is bad */
static bool otel_nanos(const char *ts, double back, char *buf, size_t len)
{
    long long secs = events_stats_time(ts);
    long long usec = 0;
    long long nanos;

    if (secs < 0)
        return false;
    if (ts[19] == '.')
        for (int i = 0; i < 6; i++)
            usec = usec * 10 +
                   (isdigit((unsigned char) ts[20 + i]) ? ts[20 + i] - '0' : 0);
    nanos = secs * 1000000000LL + usec * 1000LL;
    if (back > 0)
        nanos -= (long long) (back * 1e9 + 0.5);
    (void) snprintf(buf, len, "%lld", nanos);
    return true;
}

/* otel_attr - append {key, value: {stringValue}} when value is set */
static void otel_attr(json_t *attrs, const char *key, const char *value)
{
    if (value == NULL)
        return;
    (void) json_array_append_new(
        attrs,
        json_pack("{s:s,s:{s:s}}", "key", key, "value", "stringValue", value));
}

/* otel_attr_int - append {key, value: {intValue}} (decimal text) */
static void otel_attr_int(json_t *attrs, const char *key, json_t *value)
{
    char text[32];

    if (!json_is_integer(value))
        return;
    (void) snprintf(text, sizeof(text), "%lld",
                    (long long) json_integer_value(value));
    (void) json_array_append_new(attrs, json_pack("{s:s,s:{s:s}}", "key", key,
                                                  "value", "intValue", text));
}

/* otel_attr_tls - the TLS attributes of an event's "tls" object
   {version, cipher, level} (OpenTelemetry's tls.* names) */
static void otel_attr_tls(json_t *attrs, const json_t *tls)
{
    const char *version = json_string_value(json_object_get(tls, "version"));

    if (version == NULL)
        return;
    if (strncmp(version, "TLSv", 4) == 0) {
        otel_attr(attrs, "tls.protocol.name", "tls");
        otel_attr(attrs, "tls.protocol.version", version + 4);
    } else if (strncmp(version, "SSLv", 4) == 0) {
        otel_attr(attrs, "tls.protocol.name", "ssl");
        otel_attr(attrs, "tls.protocol.version", version + 4);
    } else {
        otel_attr(attrs, "tls.protocol.version", version);
    }
    otel_attr(attrs, "tls.cipher",
              json_string_value(json_object_get(tls, "cipher")));
    otel_attr(attrs, "sluice.tls.level",
              json_string_value(json_object_get(tls, "level")));
}

/* otel_str - obj[name] as a string, or NULL */
static const char *otel_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* otel_queue_wait - the queue-wait span of an attempt's event obj (its
   queued_at) ending at the attempt's start, or NULL when the event has no
   queued_at */
static json_t *otel_queue_wait(const json_t *obj, const TRACE_CTX *trace,
                               const char *receive_id, const char *start)
{
    const char *queued = otel_str(obj, "queued_at");
    const char *id = otel_str(obj, "id");
    VSTR *key;
    char span_id[TRACE_SPAN_HEX + 1];
    char wait_start[32];
    json_t *attrs;
    json_t *span;

    if (queued == NULL ||
        !otel_nanos(queued, 0, wait_start, sizeof(wait_start)))
        return NULL;
    /* A clock that went back: a point at the attempt's start. */
    if (strtoll(wait_start, NULL, 10) > strtoll(start, NULL, 10))
        (void) snprintf(wait_start, sizeof(wait_start), "%s", start);
    key = vstr_alloc(64);
    vstr_sprintf(key, "%s/queue_wait", id);
    trace_span_id(trace->trace_id, vstr_str(key), span_id, sizeof(span_id));
    vstr_free(key);
    attrs = json_array();
    otel_attr(attrs, "sluice.queue_id", otel_str(obj, "qid"));
    otel_attr(attrs, "sluice.event_id", id);
    otel_attr(attrs, "sluice.recipient", otel_str(obj, "recipient"));
    otel_attr_int(attrs, "sluice.attempt", json_object_get(obj, "attempt"));
    otel_attr(attrs, "sluice.provider", otel_str(obj, "provider"));
    otel_attr(attrs, "sluice.pool", otel_str(obj, "pool"));
    span =
        json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:o,s:{s:i}}", "traceId",
                  trace->trace_id, "spanId", span_id, "parentSpanId",
                  receive_id, "name", "queue wait", "kind", OTEL_KIND_INTERNAL,
                  "startTimeUnixNano", wait_start, "endTimeUnixNano", start,
                  "attributes", attrs, "status", "code", OTEL_STATUS_OK);
    return span;
}

/* otel_commit - the commit span of a received event obj (its
   committed_at): cleanup's work on the message, from start (its arrival)
   to committed_at, inside [start, end]; NULL when the event has no
   committed_at */
static json_t *otel_commit(const json_t *obj, const TRACE_CTX *trace,
                           const char *receive_id, const char *start,
                           const char *end)
{
    const char *committed = otel_str(obj, "committed_at");
    const char *id = otel_str(obj, "id");
    VSTR *key;
    char span_id[TRACE_SPAN_HEX + 1];
    char commit_end[32];
    json_t *attrs;

    if (committed == NULL ||
        !otel_nanos(committed, 0, commit_end, sizeof(commit_end)))
        return NULL;
    /* Inside the receive span, whatever the clocks said. */
    if (strtoll(commit_end, NULL, 10) > strtoll(end, NULL, 10))
        (void) snprintf(commit_end, sizeof(commit_end), "%s", end);
    if (strtoll(commit_end, NULL, 10) < strtoll(start, NULL, 10))
        (void) snprintf(commit_end, sizeof(commit_end), "%s", start);
    key = vstr_alloc(64);
    vstr_sprintf(key, "%s/commit", id);
    trace_span_id(trace->trace_id, vstr_str(key), span_id, sizeof(span_id));
    vstr_free(key);
    attrs = json_array();
    otel_attr(attrs, "sluice.queue_id", otel_str(obj, "qid"));
    otel_attr(attrs, "sluice.event_id", id);
    otel_attr_int(attrs, "sluice.size", json_object_get(obj, "size"));
    otel_attr_int(attrs, "sluice.recipients",
                  json_object_get(obj, "rcpt_count"));
    return json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:o,s:{s:i}}", "traceId",
                     trace->trace_id, "spanId", span_id, "parentSpanId",
                     receive_id, "name", "commit", "kind", OTEL_KIND_INTERNAL,
                     "startTimeUnixNano", start, "endTimeUnixNano", commit_end,
                     "attributes", attrs, "status", "code", OTEL_STATUS_OK);
}

/* otel_span - append to spans those of one event line (none: no sampled
   trace, or not an event that makes one) */
static void otel_span(json_t *spans, const char *line, size_t len)
{
    json_t *obj = json_loadb(line, len, 0, NULL);
    const char *kind = otel_str(obj, "kind");
    const char *qid = otel_str(obj, "qid");
    const char *id = otel_str(obj, "id");
    const char *ts = otel_str(obj, "ts");
    const char *tp = otel_str(obj, "traceparent");
    double delay = json_number_value(json_object_get(obj, "delay"));
    TRACE_CTX trace;
    VSTR *key = vstr_alloc(64);
    char receive_id[TRACE_SPAN_HEX + 1];
    char span_id[TRACE_SPAN_HEX + 1];
    char start[32];
    char end[32];
    json_t *span = NULL;
    json_t *wait;
    json_t *commit;
    json_t *attrs;
    const char *relay;
    bool failed;

    if (kind == NULL || qid == NULL || id == NULL || tp == NULL ||
        !trace_parse_attr(tp, &trace) || !trace.sampled ||
        !otel_nanos(ts, 0, end, sizeof(end)))
        goto done;
    vstr_sprintf(key, "%s/receive", qid);
    trace_span_id(trace.trace_id, vstr_str(key), receive_id,
                  sizeof(receive_id));
    attrs = json_array();
    otel_attr(attrs, "sluice.queue_id", qid);
    otel_attr(attrs, "sluice.event_id", id);
    if (strcmp(kind, "received") == 0) {
        (void) otel_nanos(ts, delay, start, sizeof(start));
        otel_attr(attrs, "sluice.client", otel_str(obj, "client"));
        otel_attr(attrs, "sluice.sender", otel_str(obj, "sender"));
        otel_attr(attrs, "sluice.message_id", otel_str(obj, "message_id"));
        otel_attr_int(attrs, "sluice.size", json_object_get(obj, "size"));
        otel_attr_int(attrs, "sluice.recipients",
                      json_object_get(obj, "rcpt_count"));
        span = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:o,s:{s:i}}", "traceId",
                         trace.trace_id, "spanId", receive_id, "name",
                         "receive", "kind", OTEL_KIND_SERVER,
                         "startTimeUnixNano", start, "endTimeUnixNano", end,
                         "attributes", attrs, "status", "code", OTEL_STATUS_OK);
        if (span != NULL && trace_has_parent(&trace))
            (void) json_object_set_new(span, "parentSpanId",
                                       json_string(trace.parent_id));
        /* cleanup's part of it, its child */
        if ((commit = otel_commit(obj, &trace, receive_id, start, end)) != NULL)
            (void) json_array_append_new(spans, commit);
        goto done;
    }
    if (strcmp(kind, "returned") != 0 && strcmp(kind, "delivered") != 0 &&
        strcmp(kind, "deferred") != 0 && strcmp(kind, "bounced") != 0 &&
        strcmp(kind, "expired") != 0) {
        json_decref(attrs);
        goto done;
    }
    trace_span_id(trace.trace_id, id, span_id, sizeof(span_id));
    failed = strcmp(kind, "deferred") == 0 || strcmp(kind, "bounced") == 0 ||
             strcmp(kind, "expired") == 0;
    otel_attr(attrs, "sluice.status", kind);
    otel_attr(attrs, "sluice.recipient", otel_str(obj, "recipient"));
    /* The event's relay is the DSN Remote-MTA, "dns; HOST": the host. */
    relay = otel_str(obj, "relay");
    if (relay != NULL && strncasecmp(relay, "dns; ", 5) == 0)
        relay += 5;
    otel_attr(attrs, "server.address", relay);
    otel_attr(attrs, "sluice.reply", otel_str(obj, "reply"));
    otel_attr(attrs, "sluice.dsn", otel_str(obj, "dsn"));
    otel_attr(attrs, "sluice.provider", otel_str(obj, "provider"));
    otel_attr(attrs, "sluice.source_ip", otel_str(obj, "source_ip"));
    otel_attr(attrs, "sluice.pool", otel_str(obj, "pool"));
    otel_attr_tls(attrs, json_object_get(obj, "tls"));
    /* The attempt's latency, as the agent measured it. */
    if (!json_is_number(json_object_get(obj, "attempt_seconds")) ||
        !otel_nanos(ts,
                    json_number_value(json_object_get(obj, "attempt_seconds")),
                    start, sizeof(start)))
        (void) snprintf(start, sizeof(start), "%s", end);
    /* The wait before the attempt, its sibling. */
    if ((wait = otel_queue_wait(obj, &trace, receive_id, start)) != NULL)
        (void) json_array_append_new(spans, wait);
    span = json_pack(
        "{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:o,s:{s:i}}", "traceId", trace.trace_id,
        "spanId", span_id, "parentSpanId", receive_id, "name",
        strcmp(kind, "returned") == 0 ? "dsn" : "delivery", "kind",
        strcmp(kind, "returned") == 0 ? OTEL_KIND_INTERNAL : OTEL_KIND_CLIENT,
        "startTimeUnixNano", start, "endTimeUnixNano", end, "attributes", attrs,
        "status", "code", failed ? OTEL_STATUS_ERROR : OTEL_STATUS_OK);
    if (span != NULL && failed && otel_str(obj, "reply") != NULL)
        (void) json_object_set_new(json_object_get(span, "status"), "message",
                                   json_string(otel_str(obj, "reply")));
done:
    if (span != NULL)
        (void) json_array_append_new(spans, span);
    vstr_free(key);
    json_decref(obj);
}

/* otel_body - the OTLP JSON of the batch's spans; NULL when none */
static char *otel_body(const OTEL *otel, const VSTR *lines)
{
    const char *cp = vstr_str((VSTR *) lines);
    const char *end = cp + vstr_len((VSTR *) lines);
    json_t *spans = json_array();
    json_t *doc;
    char *text;

    while (cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        otel_span(spans, cp, (size_t) (nl - cp));
        cp = nl + 1;
    }
    if (json_array_size(spans) == 0) {
        json_decref(spans);
        return NULL;
    }
    doc = json_pack(
        "{s:[{s:{s:[{s:s,s:{s:s}},{s:s,s:{s:s}}]},s:[{s:{s:s},s:o}]}]}",
        "resourceSpans", "resource", "attributes", "key", "service.name",
        "value", "stringValue", "sluice", "key", "host.name", "value",
        "stringValue", otel->host, "scopeSpans", "scope", "name", "sluice",
        "spans", spans);
    if (doc == NULL)
        msg_fatal("out of memory building OTLP JSON");
    text = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(doc);
    if (text == NULL)
        msg_fatal("out of memory building OTLP JSON");
    return text;
}

/* otel_send - POST the batch's spans */
static void otel_send(void *state, const VSTR *lines, int count)
{
    OTEL *otel = state;
    struct timeval now = {0, 0};

    if (otel->easy != NULL)
        msg_panic("%s: a POST is in flight", __func__);
    if ((otel->body = otel_body(otel, lines)) == NULL) {
        if (event_add(otel->empty_ev, &now) < 0)
            msg_fatal("cannot add the OTLP timer");
        return;
    }
    otel->headers =
        curl_slist_append(otel->headers, "Content-Type: application/json");
    otel->headers = curl_slist_append(otel->headers, "Expect:");
    if (otel->headers == NULL)
        msg_fatal("out of memory");
    if ((otel->easy = curl_easy_init()) == NULL)
        msg_fatal("curl_easy_init failed");
    *otel->error = 0;
    vstr_reset(otel->reply);
    (void) curl_easy_setopt(otel->easy, CURLOPT_URL, otel->url);
    (void) curl_easy_setopt(otel->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    (void) curl_easy_setopt(otel->easy, CURLOPT_NOSIGNAL, 1L);
    (void) curl_easy_setopt(otel->easy, CURLOPT_TIMEOUT, (long) otel->timeout);
    (void) curl_easy_setopt(otel->easy, CURLOPT_FOLLOWLOCATION, 0L);
    (void) curl_easy_setopt(otel->easy, CURLOPT_HTTPHEADER, otel->headers);
    (void) curl_easy_setopt(otel->easy, CURLOPT_POST, 1L);
    (void) curl_easy_setopt(otel->easy, CURLOPT_POSTFIELDS, otel->body);
    (void) curl_easy_setopt(otel->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) strlen(otel->body));
    (void) curl_easy_setopt(otel->easy, CURLOPT_WRITEFUNCTION, otel_write);
    (void) curl_easy_setopt(otel->easy, CURLOPT_WRITEDATA, otel);
    (void) curl_easy_setopt(otel->easy, CURLOPT_ERRORBUFFER, otel->error);
    (void) curl_easy_setopt(otel->easy, CURLOPT_USERAGENT, "sluice-events");
    /* The POST starts from the loop (libcurl's timeout of 0), never from
       inside send. */
    if (curl_multi_add_handle(otel->multi, otel->easy) != CURLM_OK)
        msg_fatal("curl_multi_add_handle failed");
}

/* otel_max_age - otel_exporter_otlp_max_age */
static long long otel_max_age(void *state)
{
    return ((OTEL *) state)->max_age;
}

/* otel_open - the OTLP endpoint */
static void *otel_open(EXPORTER *exp, struct event_base *base,
                       const MAIL_CONF *conf)
{
    OTEL *otel = mycalloc(1, sizeof(*otel));

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        msg_fatal("curl_global_init failed");
    otel->exp = exp;
    otel->url = mystrdup(exporter_target(exp));
    otel->host = mystrdup(mail_conf_str(conf, "myhostname"));
    otel->timeout = mail_conf_time(conf, "events_webhook_timeout");
    otel->max_age = mail_conf_time(conf, "otel_exporter_otlp_max_age");
    if ((otel->curl = curl_event_create(base, otel_done, otel)) == NULL)
        msg_fatal("cannot set up libcurl's multi interface");
    otel->multi = curl_event_multi(otel->curl);
    if ((otel->empty_ev = evtimer_new(base, otel_empty_event, otel)) == NULL)
        msg_fatal("cannot create the OTLP timer");
    otel->reply = vstr_alloc(OTEL_REPLY_MAX + 1);
    return otel;
}

/* otel_close - free (a POST in flight is abandoned) */
static void otel_close(void *state)
{
    OTEL *otel = state;

    if (otel->easy) {
        (void) curl_multi_remove_handle(otel->multi, otel->easy);
        curl_easy_cleanup(otel->easy);
    }
    curl_slist_free_all(otel->headers);
    curl_event_free(otel->curl);
    event_free(otel->empty_ev);
    free(otel->body);
    vstr_free(otel->reply);
    myfree(otel->url);
    myfree(otel->host);
    myfree(otel);
    curl_global_cleanup();
}

const EXPORTER_BACKEND otel_backend = {
    .kind = "otel",
    .open = otel_open,
    .send = otel_send,
    .close = otel_close,
    .max_age = otel_max_age,
};
