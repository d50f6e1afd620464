/*
 * qmgr_admin_proto - the protocol between `sluice hold|delete|requeue` and
 * qmgr for messages in active/
 *
 * A message in active/ belongs to qmgr: it may be in delivery right now,
 * and qmgr alone writes its done marks and its defer and bounce logs. So
 * the admin command never renames or removes a file in active/ while qmgr
 * runs; it asks qmgr, which acts at a safe point:
 *
 *   delete   at once: the queue file and its defer and bounce logs are
 *            removed, recipients not yet handed to an agent are dropped,
 *            and the results of deliveries in flight are ignored (nothing
 *            is written for them: the file is never recreated, no DSN).
 *   hold     recipients not yet handed to an agent are withdrawn; when the
 *            deliveries in flight have ended, the file (with the done marks
 *            of what they finished) moves to hold/ instead of deferred/.
 *            When nothing is left to deliver the message completes as
 *            usual (delivered, bounced) and is not held.
 *   requeue  when the deliveries in flight have ended, what is left is due
 *            at once instead of at its next retry_schedule step.
 *
 * Messages in incoming/, deferred/ and hold/ are moved by the admin
 * command itself with rename(2); qmgr may rename the same file at the same
 * moment, and whoever loses gets ENOENT and looks again, so a message is
 * always in exactly one place.
 *
 * Transport: qmgr listens on the UNIX socket
 * queue_directory/private/qmgr-admin (QMGR_ADMIN_SERVICE, mode 0600,
 * made by qmgr itself, not by master). A connection carries any number
 * of requests, each answered before the next is read. Attribute lists
 * (global/attr.h), in order:
 *
 *   qmgr -> admin   HELLO    (qmgr_admin_hello_spec), at once on accept
 *   admin -> qmgr   HELLO    first, before any REQUEST (it need not wait
 *                            for qmgr's, but reads it before a REPLY)
 *   admin -> qmgr   REQUEST  (qmgr_admin_request_spec)
 *   qmgr -> admin   REPLY    (qmgr_admin_reply_spec)
 *
 * HELLO names the protocol and its version (global/proto_hello.h); each
 * side checks the other's before anything else and, on a mismatch, gives
 * up on the connection: qmgr logs both versions and closes without acting
 * on any request; the admin command prints both versions and exits
 * non-zero, having moved nothing in active/. A REQUEST that is not one
 * (unknown request, bad queue ID, a missing or unknown attribute) gets
 * status QMGR_ADMIN_STAT_FAIL and its reason, and the connection stays.
 *
 * status QMGR_ADMIN_STAT_NOTHERE means "not in active/ (any more)": the
 * message has moved on (to deferred/, or it is gone); the admin command
 * looks for it again. When qmgr is not running at all (master is down)
 * nobody owns active/ and the admin command moves the file itself.
 */
#ifndef QMGR_ADMIN_PROTO_H
#define QMGR_ADMIN_PROTO_H

#include "attr.h"
#include "proto_hello.h"
#include "vstr.h"

#define QMGR_ADMIN_SERVICE "qmgr-admin" /* private/qmgr-admin */
#define QMGR_ADMIN_LIST_MAX 4096 /* largest list either side sends */

#define QMGR_ADMIN_PROTO_NAME "qmgr_admin" /* HELLO protocol= */
#define QMGR_ADMIN_PROTO_VERSION 1 /* HELLO version=: bump on any change */

#define QMGR_ADMIN_REQ_HELLO PROTO_HELLO_REQ
#define QMGR_ADMIN_REQ_HOLD "hold"
#define QMGR_ADMIN_REQ_DELETE "delete"
#define QMGR_ADMIN_REQ_REQUEUE "requeue"

#define QMGR_ADMIN_STAT_OK 0 /* done, or will be (hold, requeue) */
#define QMGR_ADMIN_STAT_NOTHERE 1 /* not in active/: look again */
#define QMGR_ADMIN_STAT_FAIL 2 /* could not: see reason */

/* Attribute names: call sites use these, never the strings. */
#define QMGR_ADMIN_ATTR_REQUEST PROTO_HELLO_ATTR_REQUEST
#define QMGR_ADMIN_ATTR_PROTOCOL PROTO_HELLO_ATTR_PROTOCOL
#define QMGR_ADMIN_ATTR_VERSION PROTO_HELLO_ATTR_VERSION
#define QMGR_ADMIN_ATTR_QUEUE_ID "queue_id"
#define QMGR_ADMIN_ATTR_STATUS "status"
#define QMGR_ADMIN_ATTR_REASON "reason"

static const ATTR_SPEC qmgr_admin_hello_spec[] = {
    {QMGR_ADMIN_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {QMGR_ADMIN_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"qmgr_admin\""},
    {QMGR_ADMIN_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "QMGR_ADMIN_PROTO_VERSION of the sender"},
};

static const ATTR_SPEC qmgr_admin_request_spec[] = {
    {QMGR_ADMIN_ATTR_REQUEST, ATTR_TYPE_STR, true, false,
     "hold | delete | requeue"},
    {QMGR_ADMIN_ATTR_QUEUE_ID, ATTR_TYPE_STR, true, false, "the message"},
};

static const ATTR_SPEC qmgr_admin_reply_spec[] = {
    {QMGR_ADMIN_ATTR_STATUS, ATTR_TYPE_INT, true, false,
     "0 ok, 1 not in active/, 2 failed"},
    {QMGR_ADMIN_ATTR_REASON, ATTR_TYPE_STR, false, false, "why it failed"},
};

/*
 * The codec: each list as a C struct, filled from a list by a strict
 * reader (*_take: the list passes attr_list_check against its table, is
 * a request it should be, and its values make sense: a known request, a
 * valid queue ID, a known status) and turned back into a list by *_list.
 * Strings are borrowed from the list taken (or lent by the caller to
 * *_list). Readers return 0, or -1 with the reason in why.
 */
typedef struct QMGR_ADMIN_REQUEST {
    const char *request; /* QMGR_ADMIN_REQ_HOLD, _DELETE, _REQUEUE */
    const char *queue_id; /* qid_valid() */
} QMGR_ADMIN_REQUEST;

typedef struct QMGR_ADMIN_REPLY {
    int status; /* QMGR_ADMIN_STAT_* */
    const char *reason; /* NULL when none */
} QMGR_ADMIN_REPLY;

/* qmgr_admin_hello_take - the peer's HELLO: -1 with a reason naming both
   sides' protocol and version when it is not ours */
extern int qmgr_admin_hello_take(const ATTR_LIST *list, VSTR *why);
/* qmgr_admin_hello_list - our HELLO */
extern ATTR_LIST *qmgr_admin_hello_list(void);

/* qmgr_admin_request_take - a REQUEST list; strings borrowed from list */
extern int qmgr_admin_request_take(const ATTR_LIST *list,
                                   QMGR_ADMIN_REQUEST *req, VSTR *why);
/* qmgr_admin_request_list - the REQUEST list of req */
extern ATTR_LIST *qmgr_admin_request_list(const QMGR_ADMIN_REQUEST *req);

/* qmgr_admin_reply_take - a REPLY list; the reason borrowed from list */
extern int qmgr_admin_reply_take(const ATTR_LIST *list, QMGR_ADMIN_REPLY *reply,
                                 VSTR *why);
/* qmgr_admin_reply_list - the REPLY list of reply */
extern ATTR_LIST *qmgr_admin_reply_list(const QMGR_ADMIN_REPLY *reply);

/* qmgr_admin_request_valid - one of hold, delete, requeue? */
extern bool qmgr_admin_request_valid(const char *request);

#endif
