/*
 * events_export - the exporters main.cf configures, named the same way by
 * the events daemon (events/) and `sluice events status`
 *
 * Each exporter has a kind (a backend of the events daemon: "webhook",
 * one per events_webhook_urls entry, and "stats", the SQLite store behind
 * `sluice stats` when events_stats_enable is set, "index", the SQLite
 * status index behind `sluice why` when events_index_enable is set,
 * "suppress", the suppression list's feed (events/suppress.c) when
 * suppression_feedback_enable is set (both on by default; neither makes
 * the daemon remove journal segments: events_export_removes), "kafka", one producer when
 * events_kafka_brokers is set, and "metrics", the metrics daemon's
 * journal counters when metrics_listen is set: a passive reader that
 * follows the journal itself), a target (the webhook's
 * URL, the database's path, events_kafka_brokers "/" events_kafka_topic)
 * and a name that stays the same while its target does:
 * KIND-HASH, HASH the first 12 hex digits of SHA-256 of the target, so
 * reordering events_webhook_urls keeps every position. Its files live in
 * events_directory/exporters/: NAME.pos (events_pos.h) and NAME.dead, the
 * events it gave up on, one JSON object a line as the journal holds them.
 *
 * Webhook routing: events_webhook_routes lists SELECTOR=URL entries; a
 * URL named there (and not in events_webhook_urls, which get every event)
 * is a webhook exporter that sends only the events one of its selectors
 * picks. A selector is kind:KIND or tenant:TENANT, or several joined by
 * "+", all of which must hold ("tenant:acme+kind:bounced"); several
 * entries of one URL add up. The events it does not pick are passed over
 * (its position moves past them). The exporter's name is still that of
 * the URL alone: changing its selectors keeps its position.
 */
#ifndef EVENTS_EXPORT_H
#define EVENTS_EXPORT_H

#include "sys_defs.h"

#include "mail_conf.h"
#include "vstr.h"

#define EVENTS_EXPORT_WEBHOOK "webhook"
#define EVENTS_EXPORT_STATS "stats" /* events_stats.h */
#define EVENTS_EXPORT_KAFKA "kafka" /* target: BROKERS/TOPIC */
#define EVENTS_EXPORT_INDEX "index" /* events_index.h: sluice why */
#define EVENTS_EXPORT_OTEL "otel" /* target: the OTLP traces URL */
#define EVENTS_EXPORT_SUPPRESS "suppress" /* suppress.h: the list's feed */
/* Not exported to by the events daemon: the metrics daemon's counters
   follow the journal themselves (metrics/), and their position holds
   segments back from removal like an exporter's (events_export_passive) */
#define EVENTS_EXPORT_METRICS "metrics"
#define EVENTS_EXPORT_METRICS_TARGET "counters of the metrics daemon"
#define EVENTS_EXPORT_POS_SUFFIX ".pos"
#define EVENTS_EXPORT_DEAD_SUFFIX ".dead"

typedef struct EVENTS_EXPORT {
    char *kind; /* EVENTS_EXPORT_WEBHOOK ... */
    char *target; /* the URL */
    char *display; /* target for logs and status: no secrets */
    char *name; /* KIND-HASH */
    char *routes; /* webhook: its selectors, space-separated; NULL: every
                     event */
} EVENTS_EXPORT;

typedef struct EVENTS_EXPORT_LIST {
    EVENTS_EXPORT *exports;
    size_t count;
    char *error; /* a malformed events_webhook_routes entry, named; NULL:
                    none (the list then lacks that route: do not run) */
} EVENTS_EXPORT_LIST;

/* events_export_name - KIND-HASH of kind and target into name */
extern void events_export_name(VSTR *name, const char *kind,
                               const char *target);

/* events_export_display - target as logs and status may show it: a URL
   without its userinfo (user:password@) and its query (tokens often
   ride there), "?..." in its place; anything else as it is */
extern void events_export_display(VSTR *out, const char *target);

/* events_export_passive - is exp a reader that follows the journal by
   itself (EVENTS_EXPORT_METRICS, with metrics_listen set), whose position
   file only holds segments back? */
extern bool events_export_passive(const EVENTS_EXPORT *exp);

/* events_export_removes - does exp ship events elsewhere (webhook, kafka,
   otel, and stats, which counts every event in a store of its own), so
   that, configured, the events daemon removes the journal segments every
   exporter and reader is past? The index and the suppression feed are
   fed and hold segments back like the others, but do not start removal
   by themselves: an instance with only them (the defaults) keeps its
   journal whole, as one with no exporter does; so does a passive reader */
extern bool events_export_removes(const EVENTS_EXPORT *exp);

/* events_export_list - the exporters conf configures (duplicates of one
   target once), the passive readers among them; empty when events_enable
   = no */
extern EVENTS_EXPORT_LIST *events_export_list(const MAIL_CONF *conf);
extern EVENTS_EXPORT_LIST *events_export_list_free(EVENTS_EXPORT_LIST *list);

/* events_export_route_parse - split one events_webhook_routes entry
   SELECTOR=URL: the selector into selector, the URL into url; -1 (why
   says) when it is not one */
extern int events_export_route_parse(const char *entry, VSTR *selector,
                                     VSTR *url, VSTR *why);

/* events_export_match - does routes (EVENTS_EXPORT's; NULL: every event)
   pick an event of kind and tenant (NULL: none)? */
extern bool events_export_match(const char *routes, const char *kind,
                                const char *tenant);

/* events_export_path - DIR/exporters/NAME SUFFIX into path */
extern void events_export_path(VSTR *path, const char *dir, const char *name,
                               const char *suffix);

#endif
