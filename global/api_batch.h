/*
 * api_batch - the durable batch spool of the HTTP API and the rendering
 * of one batch recipient (issue #21; render/render.c says how the spool
 * is worked through without losing or repeating a recipient)
 *
 * A batch is one JSON file DIR/ID (ID: a queue ID, qid.h), written by the
 * api daemon as DIR/tmp.ID, fsynced, renamed and DIR fsynced before its
 * 202: {"id", "tenant", "key", "created", "base": the request less
 * "recipients" and "data", "data": the request's data or null,
 * "template": the stored template object (read once) or null,
 * "recipients": [{"to", "data"}...]}. Its progress is DIR/ID.log, lines
 * the render service appends ("c INDEX QID", "f INDEX CODE").
 */
#ifndef API_BATCH_H
#define API_BATCH_H

#include "sys_defs.h"

#include <jansson.h>

#include "api_request.h"
#include "vstr.h"

#define API_BATCH_DIR "batches" /* under api_idempotency_directory */
#define API_OWNERS "owners" /* under api_idempotency_directory: QID -> tenant */
#define API_BATCH_RENDERED_DIR "rendered" /* batches that left the spool */
#define API_BATCH_RENDERED_TTL (7 * 86400) /* seconds they are kept */
#define API_RENDER_SERVICE "render" /* private/render: its wake-up */

/* api_batch_dir - DIR of the spool: IDEM_DIR/batches */
extern void api_batch_dir(const char *idem_dir, VSTR *out);

/* api_batch_owner_record - note in IDEM_DIR/owners/QID which tenant
   queued qid, for GET /v1/messages/QID (the api's and render's messages
   alike). Not fsynced: a record lost in a crash makes a lookup say 404,
   it loses no mail. */
extern void api_batch_owner_record(const char *idem_dir, const char *qid,
                                   const char *tenant);

/* api_batch_rendered_dir - IDEM_DIR/rendered: what the render service
   keeps of a batch it has finished, for GET /v1/messages/BATCH: ID
   ({"id", "tenant", "finished", "recipients": [{"to"}...]}) and ID.log
   (a link to its log of marks), kept API_BATCH_RENDERED_TTL seconds
   (the api's sweep removes them) */
extern void api_batch_rendered_dir(const char *idem_dir, VSTR *out);

/* api_batch_spool - write batch (its "id" set here) durably into dir;
   0 with the ID in id, or -1 with why (nothing is left behind) */
extern int api_batch_spool(const char *dir, json_t *batch, VSTR *id, VSTR *why);

/* A batch sent with an Idempotency-Key also has "idem": {"key", "request":
   the request body, "answer": the 202's fields but "id" and "batch"}: a
   crash between the spool and the idempotency record (global/api_idem.h)
   is mended from it (the api at start for each spooled batch, render
   before it removes a finished one), so a retry gets the first 202, never
   a second batch. */

/* api_batch_answer - the 202 body of a spooled batch (its "id" set):
   {"id", "batch", then the fields of idem.answer}; NULL when the batch
   has no idem or JSON cannot be made (free() the text) */
extern char *api_batch_answer(json_t *batch);

/* api_batch_idem_mend - when batch has an "idem" whose record in idem_dir
   is missing, write it (the 202 of api_batch_answer); 1 written, 0
   nothing to do, -1 (why says) it could not be */
extern int api_batch_idem_mend(const char *idem_dir, long long ttl,
                               json_t *batch, VSTR *why);

/* api_batch_render_parts - render tmpl's subject, text and html with
   data into req (an object), each bounded by max_size bytes; 0, or -1
   with err */
extern int api_batch_render_parts(json_t *req, json_t *tmpl, json_t *data,
                                  size_t max_size, API_ERROR *err);

/* api_batch_recipient - recipient i's message: base with entry's "to"
   and, when base names a template, tmpl (the stored template: NULL when
   it could not be read) rendered with data overlaid by entry's "data";
   NULL with err (its field named for the client: recipients[i].to) */
extern API_MESSAGE *api_batch_recipient(json_t *base, json_t *data,
                                        json_t *entry, json_t *tmpl,
                                        const API_LIMITS *limits, size_t i,
                                        API_ERROR *err);

/* api_batch_traceparent - a W3C traceparent (value: the request's header,
   or a batch's "traceparent"; NULL or invalid: nothing, as W3C says) as
   msg's first header line, where cleanup takes it as the message's trace
   (cleanup/cleanup_trace.c: the API is trusted), so the message's spans
   are children of the caller's span */
extern void api_batch_traceparent(API_MESSAGE *msg, const char *value);

#endif
