/*
 * exporter - the events daemon's framework, as its backends see it
 *
 * The framework follows the journal for each configured exporter, hands
 * the backend one batch at a time (whole event lines, as the journal holds
 * them, each a JSON object ending in LF) and waits for the backend to say
 * how it went with exporter_done(). A batch that went moves the
 * exporter's durable position past it; one that failed is tried again,
 * the same lines, after a back-off, until it is older than the backend's
 * max_age, when its events go to the exporter's dead-letter file (logged).
 *
 * A backend is a table of three functions. A Kafka backend (librdkafka:
 * one produce per line, done when every delivery report is in) or the
 * SQLite store (one transaction per batch) is one more table: nothing
 * here knows about HTTP.
 */
#ifndef EXPORTER_H
#define EXPORTER_H

#include "sys_defs.h"

#include <jansson.h>

#include "events_view.h"
#include "mail_conf.h"
#include "vstr.h"

struct event_base;

typedef struct EXPORTER EXPORTER;

typedef struct EXPORTER_BACKEND {
    const char *kind; /* events_export.h: EVENTS_EXPORT_WEBHOOK ... */
    /* Set up for exp (its target and main.cf); returns the backend's
       state. msg_fatal for a configuration that cannot work. */
    void *(*open)(EXPORTER *exp, struct event_base *base,
                  const MAIL_CONF *conf);
    /* Start sending count events (lines: whole LF-ended JSON lines); the
       backend calls exporter_done() later, from the event loop, never
       from inside send. */
    void (*send)(void *state, const VSTR *lines, int count);
    /* Free the state (a send in flight is abandoned). */
    void (*close)(void *state);
    /* How long a failing batch is retried before its dead letters. */
    long long (*max_age)(void *state);
    /* Most events of one batch; 0: events_webhook_batch_size. (Either way
       at most EXPORTER_BATCH_BYTES of lines; and exporters at the same
       position read together, so a group's batches end when the first of
       them is full: beside a webhook the index gets the webhook's size.) */
    int batch_size;
} EXPORTER_BACKEND;

/* exporter_done - the backend's answer to the batch in flight: ok, or
   why it failed (for the log) */
extern void exporter_done(EXPORTER *exp, bool ok, const char *why);

/* exporter_view - event i (0 .. count-1) of the batch in flight, its
   line's members (global/events_view.h; no jansson object is built),
   valid until the next call for exp or exporter_done */
extern const EVENTS_VIEW *exporter_view(EXPORTER *exp, int i);

/* exporter_target - the URL (or broker list ...) exp exports to */
extern const char *exporter_target(const EXPORTER *exp);

/* exporter_display - the target as the log may show it (no userinfo, no
   query: events_export_display) */
extern const char *exporter_display(const EXPORTER *exp);

extern const EXPORTER_BACKEND webhook_backend; /* webhook.c */
extern const EXPORTER_BACKEND stats_backend; /* stats.c */
extern const EXPORTER_BACKEND kafka_backend; /* kafka.c */
extern const EXPORTER_BACKEND index_backend; /* index.c */
extern const EXPORTER_BACKEND otel_backend; /* otel.c */
extern const EXPORTER_BACKEND suppress_backend; /* suppress.c */

#endif
