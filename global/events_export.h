/*
 * events_export - the exporters main.cf configures, named the same way by
 * the events daemon (events/) and `sluice events status`
 *
 * Each exporter has a kind (a backend of the events daemon: "webhook",
 * one per events_webhook_urls entry, and "stats", the SQLite store behind
 * `sluice stats` when events_stats_enable is set, "index", the SQLite
 * status index behind `sluice why` when events_index_enable is set, and
 * "kafka", one
 * producer when events_kafka_brokers is set), a target (the webhook's
 * URL, the database's path, events_kafka_brokers "/" events_kafka_topic)
 * and a name that stays the same while its target does:
 * KIND-HASH, HASH the first 12 hex digits of SHA-256 of the target, so
 * reordering events_webhook_urls keeps every position. Its files live in
 * events_directory/exporters/: NAME.pos (events_pos.h) and NAME.dead, the
 * events it gave up on, one JSON object a line as the journal holds them.
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
#define EVENTS_EXPORT_POS_SUFFIX ".pos"
#define EVENTS_EXPORT_DEAD_SUFFIX ".dead"

typedef struct EVENTS_EXPORT {
    char *kind; /* EVENTS_EXPORT_WEBHOOK ... */
    char *target; /* the URL */
    char *display; /* target for logs and status: no secrets */
    char *name; /* KIND-HASH */
} EVENTS_EXPORT;

typedef struct EVENTS_EXPORT_LIST {
    EVENTS_EXPORT *exports;
    size_t count;
} EVENTS_EXPORT_LIST;

/* events_export_name - KIND-HASH of kind and target into name */
extern void events_export_name(VSTR *name, const char *kind,
                               const char *target);

/* events_export_display - target as logs and status may show it: a URL
   without its userinfo (user:password@) and its query (tokens often
   ride there), "?..." in its place; anything else as it is */
extern void events_export_display(VSTR *out, const char *target);

/* events_export_list - the exporters conf configures (duplicates of one
   target once); empty when events_enable = no */
extern EVENTS_EXPORT_LIST *events_export_list(const MAIL_CONF *conf);
extern EVENTS_EXPORT_LIST *events_export_list_free(EVENTS_EXPORT_LIST *list);

/* events_export_path - DIR/exporters/NAME SUFFIX into path */
extern void events_export_path(VSTR *path, const char *dir, const char *name,
                               const char *suffix);

#endif
