/*
 * bounce_proto - the protocol between qmgr and the bounce daemon
 *
 * qmgr asks bounce to turn a message's logs (global/dsn_log.h) into a DSN
 * (RFC 3461/3464) by connecting to queue_directory/private/bounce; one
 * request per connection. Attribute lists (global/attr.h), in order:
 *
 *   bounce -> qmgr   HELLO   (bounce_hello_spec), at once on accept
 *   qmgr -> bounce   HELLO   first, before NOTIFY (it need not wait for
 *                            bounce's)
 *   qmgr -> bounce   NOTIFY  (bounce_request_spec)
 *   bounce -> qmgr   STATUS  (bounce_status_spec), sent only after the DSN
 *                            is committed by cleanup (or when there was
 *                            nothing to send)
 *
 * kind "bounce": the records of bounce/QID. Recipients "failed" are
 * reported when their NOTIFY is empty or holds FAILURE, "delivered" ones
 * when it holds SUCCESS; one DSN carries them all, its Action field per
 * recipient. kind "delay": the latest "delayed" record of each recipient in
 * defer/QID whose NOTIFY is empty or holds DELAY (a delay warning).
 *
 * The DSN goes to the message's sender with the null sender <>. A message
 * whose sender is <> gets no DSN; its failures go as a "double bounce"
 * notice to 2bounce_notice_recipient (when set) with sender
 * double-bounce@$myorigin, and a failure of a message from that sender is
 * only logged. RET=HDRS returns the headers, RET=FULL or none the whole
 * message (headers only when it is larger than bounce_size_limit).
 *
 * HELLO names the protocol and its version (global/proto_hello.h); each
 * side checks the other's before anything else and, on a mismatch, logs
 * both and closes the connection without a STATUS. For qmgr that is a
 * failed request like any other: it keeps the log and asks again later.
 *
 * qmgr removes bounce/QID only after status 0: a failed request leaves the
 * log for the next try, so no notice is lost or sent twice.
 */
#ifndef BOUNCE_PROTO_H
#define BOUNCE_PROTO_H

#include "attr.h"
#include "proto_hello.h"
#include "vstr.h"

#define BOUNCE_SERVICE "bounce" /* private/bounce */
#define BOUNCE_LIST_MAX 8192

#define BOUNCE_PROTO_NAME "bounce" /* HELLO protocol= */
#define BOUNCE_PROTO_VERSION 1 /* HELLO version=: bump on any change */

#define BOUNCE_REQ_HELLO PROTO_HELLO_REQ
#define BOUNCE_REQ_NOTIFY "notify"

#define BOUNCE_KIND_BOUNCE "bounce"
#define BOUNCE_KIND_DELAY "delay"

/* Attribute names: call sites use these, never the strings. */
#define BOUNCE_ATTR_REQUEST PROTO_HELLO_ATTR_REQUEST
#define BOUNCE_ATTR_PROTOCOL PROTO_HELLO_ATTR_PROTOCOL
#define BOUNCE_ATTR_VERSION PROTO_HELLO_ATTR_VERSION
#define BOUNCE_ATTR_KIND "kind"
#define BOUNCE_ATTR_QUEUE_NAME "queue_name"
#define BOUNCE_ATTR_QUEUE_ID "queue_id"
#define BOUNCE_ATTR_STATUS "status"
#define BOUNCE_ATTR_REASON "reason"
#define BOUNCE_ATTR_DSN_QUEUE_ID "dsn_queue_id"

static const ATTR_SPEC bounce_hello_spec[] = {
    {BOUNCE_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {BOUNCE_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"bounce\""},
    {BOUNCE_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "BOUNCE_PROTO_VERSION of the sender"},
};

static const ATTR_SPEC bounce_request_spec[] = {
    {BOUNCE_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"notify\""},
    {BOUNCE_ATTR_KIND, ATTR_TYPE_STR, true, false, "bounce | delay"},
    {BOUNCE_ATTR_QUEUE_NAME, ATTR_TYPE_STR, true, false,
     "where the message is: a queue of messages"},
    {BOUNCE_ATTR_QUEUE_ID, ATTR_TYPE_STR, true, false,
     "the message's queue ID"},
};

static const ATTR_SPEC bounce_status_spec[] = {
    {BOUNCE_ATTR_STATUS, ATTR_TYPE_INT, true, false,
     "0: the DSN is queued, or there was nothing to send; else failed"},
    {BOUNCE_ATTR_REASON, ATTR_TYPE_STR, false, false, "why, when it failed"},
    {BOUNCE_ATTR_DSN_QUEUE_ID, ATTR_TYPE_STR, false, false,
     "queue ID of the DSN, when one was sent"},
};

/*
 * The codec: each list as a C struct, filled from a list by a strict
 * reader (*_take: the list passes attr_list_check against its table, is
 * the request it should be, and its values make sense: a known kind, a
 * queue of messages, a valid queue ID) and turned back into a list by
 * *_list. Strings are borrowed from the list taken (or lent by the caller
 * to *_list). Readers return 0, or -1 with the reason in why.
 */
typedef struct BOUNCE_REQ {
    const char *kind; /* BOUNCE_KIND_* */
    const char *queue_name; /* mail_queue_of_messages() */
    const char *queue_id; /* qid_valid() */
} BOUNCE_REQ;

typedef struct BOUNCE_STATUS {
    int status; /* 0: done; else failed */
    const char *reason; /* NULL when none */
    const char *dsn_queue_id; /* NULL when no notice was queued */
} BOUNCE_STATUS;

/* bounce_hello_take - the peer's HELLO: -1 with a reason naming both
   sides' protocol and version when it is not ours */
extern int bounce_hello_take(const ATTR_LIST *list, VSTR *why);
/* bounce_hello_list - our HELLO */
extern ATTR_LIST *bounce_hello_list(void);

/* bounce_req_take - a NOTIFY list; strings borrowed from list */
extern int bounce_req_take(const ATTR_LIST *list, BOUNCE_REQ *req, VSTR *why);
/* bounce_req_list - the NOTIFY list of req */
extern ATTR_LIST *bounce_req_list(const BOUNCE_REQ *req);

/* bounce_status_take - a STATUS list; strings borrowed from list */
extern int bounce_status_take(const ATTR_LIST *list, BOUNCE_STATUS *status,
                              VSTR *why);
/* bounce_status_list - the STATUS list of status */
extern ATTR_LIST *bounce_status_list(const BOUNCE_STATUS *status);

/* bounce_kind_valid - one of the BOUNCE_KIND_* words? */
extern bool bounce_kind_valid(const char *kind);

#endif
