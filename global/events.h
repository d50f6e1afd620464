/*
 * events - the journal of every message's life (issue #14 / tracker #19)
 *
 * One JSON object per line, appended to segments in events_directory
 * (default $queue_directory/events: the journal lives in the queue's
 * filesystem, so it fills and fails with the queue, and one fsync barrier
 * covers both). See events.c for who writes, when, and why.
 *
 * Segment names: START-PID-PROGRAM.jsonl, START being the UTC time the
 * segment was opened as YYYYMMDDTHHMMSS.uuuuuuZ, so a listing sorted by
 * name is sorted by start time. Each segment has exactly one writer (the
 * process PID); a segment is finished once that process has opened a later
 * one or is gone. An exporter (events/, events_pos.h) keeps, durably, how far it has read;
 * a finished segment is removed once every configured exporter is past
 * its end. With no exporter configured nothing removes segments: the
 * journal grows by about 300 bytes an event.
 * `sluice init` makes queue_directory/events (mail_owner's, 0700) with the
 * queue; for an instance made before the journal, master makes it when it
 * starts (as `sluice check` would), so the writers find it (qmgr logs the
 * events it cannot write as lost; cleanup answers 4xx to a message it
 * would put on hold/ when it cannot write its received event).
 *
 * Event ids are NODE/QID/KIND/SEQ: NODE is myhostname, QID the queue ID
 * (unique on the node), SEQ what makes the event unique within the
 * message, chosen so that an event repeated after a crash carries the
 * same id: "0" for received (written by qmgr when it first takes the
 * message from incoming/, by cleanup for one it puts on hold/); the
 * recipient's record offset in the queue
 * file for delivered, bounced and expired (each happens once per
 * recipient); OFFSET.ROUND for deferred and ROUND for returned, ROUND being
 * the microsecond the message entered active/ (one delivery round).
 */
#ifndef EVENTS_H
#define EVENTS_H

#include "sys_defs.h"

#include <sys/time.h>

#include "mail_conf.h"
#include "vstr.h"

#define EVENTS_RECEIVED "received"
#define EVENTS_DEFERRED "deferred"
#define EVENTS_DELIVERED "delivered"
#define EVENTS_BOUNCED "bounced"
#define EVENTS_EXPIRED "expired"
#define EVENTS_RETURNED "returned"

#define EVENTS_SUFFIX ".jsonl"
#define EVENTS_MESSAGE_ID_MAX 250 /* longest message_id kept (bytes) */

/* One event. Strings NULL and numbers < 0 are left out, except the
   fields every event carries (recipient, tenant, pool, source_ip,
   provider, trace_id: null when unknown). */
typedef struct EVENT {
    const char *kind; /* EVENTS_RECEIVED ... */
    const char *qid;
    const char *seq; /* see above */
    const char *recipient; /* NULL: not about one recipient */
    const char *orig_recipient; /* ORCPT, or NULL */
    const char *sender; /* received, returned */
    const char *client; /* received: "name[addr]" or "local" */
    const char *message_id; /* received: the Message-ID header, or NULL */
    const char *relay; /* delivered, bounced: the remote MTA */
    const char *dsn; /* enhanced status code */
    const char *reply; /* the reply or reason text */
    long long size; /* received: content bytes */
    long long rcpt_count; /* received, returned */
    double delay; /* seconds since arrival */
    /* Every event carries these (null when unknown): */
    const char *tenant; /* api mail: the API key's tenant */
    const char *pool; /* the message's IP pool (queue file pool=) */
    const char *source_ip; /* delivered: the local address used */
    const char *provider; /* the shaping provider (or domain rule) of the
                             recipient's destination */
    /* Left out when NULL or not valid JSON of their kind: */
    const char *tags; /* JSON array text (api "tags") */
    const char *metadata; /* JSON object text (api "metadata") */
    /* The message's trace (global/trace.h: the queue file's traceparent
       attribute): trace_id (else null) and, when set, traceparent. */
    const char *traceparent;
} EVENT;

/* events_event_init - an EVENT with nothing set (numbers -1) */
extern void events_event_init(EVENT *event, const char *kind, const char *qid,
                              const char *seq);

/* events_format - append event as one JSON line (with its LF) to line;
   -1 (why says) only when jansson cannot allocate */
extern int events_format(VSTR *line, const EVENT *event, const char *node,
                         const struct timeval *now, VSTR *why);

/* events_segment_name - append START-PID-PROGRAM.jsonl to name */
extern void events_segment_name(VSTR *name, const struct timeval *start,
                                long pid, const char *program);

/* events_segment_pid - the writer's pid in a segment name, or -1 when name
   is not a segment's */
extern long events_segment_pid(const char *name);

/* events_need_roll - must a segment of bytes, opened at start, be left
   for a new one before adding add bytes at now? */
extern bool events_need_roll(long long bytes, time_t start, time_t now,
                             long long add, long long max_size,
                             long long max_age);

/* events_whole_length - the length of data up to and with its last LF (0
   when there is none): what remains of a segment once a torn tail is cut */
extern size_t events_whole_length(const char *data, size_t len);

typedef struct EVENTS EVENTS;

/* events_open - the journal writer of program from main.cf's events_*
   parameters; NULL when events_enable = no. Cuts the torn tails that dead
   writers left (one warning each). Never fails: a directory that cannot
   be made fails each events_flush instead. */
extern EVENTS *events_open(const MAIL_CONF *conf, const char *program);

/* events_add - format event into the pending batch (nothing written) */
extern void events_add(EVENTS *events, const EVENT *event);

/* events_flush - write the pending batch and fdatasync it: 0 once it is on
   stable storage (or events is NULL), -1 (why says) when it is not; then
   nothing of the batch stays in the segment and the batch is dropped
   (kept pending after events_retain, with the stall mark up) */
extern int events_flush(EVENTS *events, VSTR *why);

/* events_emit - events_add and events_flush: one event, durable; on
   failure a warning with the queue ID; returns what events_flush did */
extern int events_emit(EVENTS *events, const EVENT *event);

/* events_close - close the segment, free; returns NULL */
extern EVENTS *events_close(EVENTS *events);

/* events_repair - cut the torn last line of every finished segment in
   dir (its writer gone); returns how many were cut, each with a warning */
extern int events_repair(const char *dir);

/* events_repair_file - cut the torn last line of the segment at path
   (its writer must be gone: the caller knows); 1 when cut, with a
   warning, 0 when it was whole or could not be read */
extern int events_repair_file(const char *path);

/* The stall mark: a writer that retains (events_retain) and whose batch
   could not be made durable makes (or touches) events_directory/.stalled
   and removes it once the batch is written; events_check heeds a mark
   younger than EVENTS_STALL_FRESH seconds (a writer that keeps failing
   keeps touching it; one that died with it up no longer counts after
   that). */
#define EVENTS_STALL_MARK ".stalled"
#define EVENTS_STALL_FRESH 30

/* events_retain - from now on a batch that events_flush could not write
   stays pending, to be written by the next events_flush (qmgr: the queue
   changes it describes wait too) instead of being dropped */
extern void events_retain(EVENTS *events);

/* events_check - can the journal take events now? 0 yes (or events is
   NULL), -1 (why says) when a writer found it failing lately (the stall
   mark) or its file system has less than events_minfree free: then
   no mail may be accepted (cleanup answers 4xx) */
extern int events_check(EVENTS *events, VSTR *why);

#endif
