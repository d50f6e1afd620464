/*
 * trace - W3C trace context (traceparent) for OpenTelemetry tracing
 *
 * Each message carries a trace in its queue file as the A record
 * traceparent=00-TRACEID-PARENTID-FLAGS (TRACE_ATTR): TRACEID the
 * message's trace (32 lower-case hex digits), PARENTID the span the
 * submitter gave (16 hex digits; all zeros when the trace was started
 * here: the receive span is then the trace's root), FLAGS 01 when the
 * trace is sampled (exported), 00 when not. cleanup writes it
 * (cleanup/cleanup_trace.c), qmgr copies it into every event of the
 * message, and the events daemon's OTLP exporter (events/otel.c) turns
 * the events of sampled traces into spans. Span ids of the spans made
 * from events are derived from the trace id and a key (trace_span_id),
 * so an event exported again after a crash makes the same span.
 */
#ifndef TRACE_H
#define TRACE_H

#include "sys_defs.h"

#define TRACE_ATTR "traceparent" /* the queue file's A record */
#define TRACE_HEADER "traceparent" /* the SMTP header, the HTTP header */
#define TRACE_ID_HEX 32
#define TRACE_SPAN_HEX 16
#define TRACE_TEXT_LEN 55 /* 00-32-16-2 */

typedef struct TRACE_CTX {
    char trace_id[TRACE_ID_HEX + 1]; /* lower-case hex */
    char parent_id[TRACE_SPAN_HEX + 1]; /* all zeros: none */
    bool sampled;
} TRACE_CTX;

/* trace_parse - a W3C traceparent (version 00, or a later version's
   first four fields) into ctx: true when valid (hex, not all zeros,
   surrounding white space allowed), false otherwise */
extern bool trace_parse(const char *text, TRACE_CTX *ctx);

/* trace_parse_attr - trace_parse, but a parent id of all zeros (the
   queue file's "started here, no parent") is valid */
extern bool trace_parse_attr(const char *text, TRACE_CTX *ctx);

/* trace_new - a fresh trace (random id, no parent), sampled with the
   probability ratio (0: never, 1: always) */
extern void trace_new(TRACE_CTX *ctx, double ratio);

/* trace_format - ctx as traceparent text into buf (TRACE_TEXT_LEN + 1) */
extern void trace_format(const TRACE_CTX *ctx, char *buf, size_t len);

/* trace_span_id - the span id (16 hex digits, never all zeros) that
   trace_id and key name, into buf (TRACE_SPAN_HEX + 1) */
extern void trace_span_id(const char *trace_id, const char *key, char *buf,
                          size_t len);

/* trace_has_parent - does ctx name a parent span? */
extern bool trace_has_parent(const TRACE_CTX *ctx);

#endif
