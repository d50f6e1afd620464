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
 * the microsecond the message entered active/ (one delivery round);
 * N for suppressed, the recipient's place (1, 2 ...) among those cleanup
 * dropped from the message as suppressed (global/suppress.h), written by
 * cleanup, durably, before the message is committed.
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
/* Tracking and unsubscribe (api/api_track.c): written by the api. */
#define EVENTS_OPENED "opened"
#define EVENTS_CLICKED "clicked"
#define EVENTS_UNSUBSCRIBED "unsubscribed"
#define EVENTS_SUPPRESSED "suppressed" /* cleanup: a recipient dropped */
#define EVENTS_COMPLAINED "complained" /* an ARF report (feedback/) */
/* an ARF report whose Feedback-Type is no complaint (not-spam,
   auth-failure ...): recorded, never suppresses or counts (feedback/) */
#define EVENTS_FEEDBACK_REPORT "feedback_report"
/* render: a spooled batch's recipient that was never queued (its message
   could not be rendered, or cleanup refused it): qid is the batch's ID
   (a queue ID no message has), id NODE/BATCH/rejected/I (I: the
   recipient's index in the batch), with batch, recipient, tenant, reply */
#define EVENTS_REJECTED "rejected"
#define EVENTS_FEEDBACK_UNPARSED                                               \
    "feedback_unparsed" /* a DSN or ARF report feedback/ could not use */

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
    const char *url; /* clicked: the original URL */
    const char *list; /* unsubscribed: the list, when known */
    const char *user_agent; /* opened, clicked, unsubscribed */
    const char *reason; /* suppressed: the suppression entry's reason */
    /* deferred, bounced (and expired): global/bounce_class.h */
    const char *category; /* the failure's category, NULL: left out */
    int hard; /* 1 true, 0 false, -1 left out */
    int async; /* bounced: 0 our own delivery attempt, 1 a DSN that came
                  back later; -1 left out */
    long long size; /* received: content bytes */
    long long rcpt_count; /* received, returned */
    double delay; /* seconds since arrival (kept to the microsecond) */
    /* When set (>= 0, Unix microseconds): the message's arrival; delay is
       then taken from the same clock reading as the event's ts, so ts -
       delay is the arrival exactly (the receive span's start,
       events/otel.c). -1: delay as given. */
    long long arrival_usec;
    const char *feedback_type; /* complained: the ARF Feedback-Type */
    /* bounced async, complained: 0 when the journal no longer tied the
       report to the original's delivered event ("verified": false; the
       recipient is then null and the report's claim is in
       reported_recipient: nothing may suppress or count it); -1 left out */
    int verified;
    const char *reported_recipient;
    const char *batch; /* rejected: the spooled batch's ID */
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
    /* delivered: the connection's TLS (tls_version NULL: plain text, the
       event then has "tls": null), as deliver_proto.h's RESULT says:
       "tls": {"version", "cipher", "level"}, level being Verified,
       Trusted, Untrusted or Anonymous */
    const char *tls_version;
    const char *tls_cipher;
    const char *tls_level;
    /* delivered, deferred, bounced by an agent: the attempt's latency
       (the agent's request to this result) and, when the attempt set up
       a new connection, how long that took ("attempt_seconds",
       "connect_seconds"; -1: not known, left out). deferred and bounced
       carry "tls" too, but only when the connection had it. */
    double attempt_seconds;
    double connect_seconds;
    /* delivered, deferred, bounced (qmgr's): "queued_at", when the
       recipient's wait for this attempt began, a UTC time as "ts": the
       moment its message last became eligible for delivery, that is when
       its queue file entered the queue qmgr took it from (incoming/: the
       commit, or a release from hold/ or a requeue, which go through
       incoming/; active/, found there at start: the previous qmgr's last
       change of it), for deferred/ not before its next try (the file's
       mtime); never before the arrival, nor after qmgr moved it into
       active/ (a flush or requeue takes a deferred/ file before its next
       try: then that moment). Everything from it to the attempt's start
       (ts - attempt_seconds) is the wait in our queue: the scan that
       finds the message, its destination's queue (concurrency, rate
       limits, a dead destination), an agent that died on it. One value
       for all recipients of one round (qmgr/qmgr_sched.h). Unix
       microseconds, -1: left out. */
    long long queued_usec;
    /* ... and "attempt", the delivery round's number (1: the first),
       counted as the defer log's attempt records (rounds that ended in
       deferred/: a round cut short by a hold counts none); -1: left out
       (a round that only waits for send_at makes no attempt) */
    long long attempt;
    /* received (qmgr's, for a message it took from incoming/):
       "committed_at", a UTC time as "ts": the queue file's ctime in
       incoming/, i.e. when cleanup's rename made the message durable (for
       a message released from hold/ or requeued: when it entered
       incoming/ again), never before the arrival nor after qmgr took it
       (ts). From the arrival (when cleanup began the message: the T
       record) to it is cleanup's work and commit: the commit span of the
       trace (events/otel.c). Left out of cleanup's received event of a
       held message (durable before its commit) and of one qmgr found in
       active/ at start. Unix microseconds, -1: left out. */
    long long committed_usec;
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
   changes it describes wait too) instead of being dropped; removes the
   stall mark a dead retainer left */
extern void events_retain(EVENTS *events);

/* events_check - can the journal take events now? 0 yes (or events is
   NULL), -1 (why says) when a writer found it failing lately (the stall
   mark) or its file system has less than events_minfree free: then
   no mail may be accepted (cleanup answers 4xx) */
extern int events_check(EVENTS *events, VSTR *why);

#endif
